//! Raw HTTP over a TcpStream, for what a well-behaved client cannot do: send
//! half a request, announce a body it never sends, read what the server
//! answers before the body.

// Shared by several test binaries, each using part of it.
#![allow(dead_code)]

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use switchboard_tests::WAIT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a connection and writes `head` (and `body`) as given.
pub async fn send(addr: SocketAddr, head: &str, body: &[u8]) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    Ok(stream)
}

/// The `Content-Length` an HTTP head announces (0 when it has none).
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0)
}

/// Reads one response: its status and its body as JSON (a string when it is
/// not JSON). Fails if none arrives within the wait.
pub async fn read_response(stream: &mut TcpStream) -> Result<(u16, Value)> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(end) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_string();
            let status: u16 =
                head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).context("no status line")?;
            let length = content_length(&head);
            while received.len() < end + 4 + length {
                let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await.context("body")??;
                if read == 0 {
                    break;
                }
                received.extend_from_slice(&chunk[..read]);
            }
            let body = &received[end + 4..];
            let text = String::from_utf8_lossy(body).to_string();
            return Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))));
        }
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .context("no response within the wait")??;
        if read == 0 {
            bail!("connection closed before a response: {:?}", String::from_utf8_lossy(&received));
        }
        received.extend_from_slice(&chunk[..read]);
    }
}

/// Waits until the server closes the connection (EOF or a reset), reading
/// and discarding whatever it sends first. Fails if it is still open after
/// the wait.
pub async fn expect_closed(stream: &mut TcpStream) -> Result<()> {
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => bail!("the server kept the connection open for {WAIT:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => continue,
        }
    }
}
