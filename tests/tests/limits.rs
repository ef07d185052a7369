//! Bounded resources per client (docs/CONFIGURATION.md "Limits"): half-sent
//! requests time out, an oversized WebSocket frame is refused from its
//! header, a session that stops reading is dropped and its connection reset,
//! and webhooks as large as Meta's batches fit while the bytes held at once
//! stay bounded. Each test sets small limits so the server's own timeouts
//! fire within seconds.

mod raw;

use std::time::Duration;

use engine::server::StartOptions;
use futures_util::SinkExt;
use serde_json::{Value, json};
use switchboard_tests::*;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type TestResult = anyhow::Result<()>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_request_headers_are_timed_out() -> TestResult {
    let harness =
        Harness::start_with(StartOptions::default(), |config| config.server.header_read_timeout_ms = 300).await?;
    let addr = harness.server().addr;
    let mut whole = raw::send(addr, "GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n", b"").await?;
    let (status, _) = raw::read_response(&mut whole).await?;
    assert_eq!(status, 200, "a whole request is served");

    let mut half = raw::send(addr, "GET /healthz HTTP/1.1\r\nhost: localhost\r\n", b"").await?;
    raw::expect_closed(&mut half).await?;
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_frame_past_the_message_limit_is_refused_from_its_header() -> TestResult {
    let harness = Harness::start().await?;
    let addr = harness.server().addr;
    let head = format!(
        "GET /ws HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\
         authorization: Bearer {}\r\n\r\n",
        agent_token("a1")
    );
    let mut stream = raw::send(addr, &head, b"").await?;
    let (status, _) = raw::read_response(&mut stream).await?;
    assert_eq!(status, 101);
    // A masked binary frame announcing 8 MiB (above the 1 MiB message limit,
    // below the old 16 MiB frame limit), of which only 64 KiB is sent: the
    // server must refuse it from the header, not wait to buffer it all.
    let announced: u64 = 8 << 20;
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&announced.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&vec![b'x'; 64 * 1024]);
    stream.write_all(&frame).await?;
    raw::expect_closed(&mut stream).await?;
    harness.shutdown().await;
    Ok(())
}

/// A customer's text message of `size` bytes.
fn big_text(from: &str, wamid: &str, size: usize) -> Value {
    inbound_text(from, wamid, &"x".repeat(size))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_stops_reading_is_dropped_and_its_connection_reset() -> TestResult {
    let harness =
        Harness::start_with(StartOptions::default(), |config| config.server.ws_write_timeout_ms = 300).await?;
    let addr = harness.server().addr;
    // A small receive buffer, so the server's writes block soon.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let tcp = socket.connect(addr).await?;
    let mut request = format!("ws://{addr}/ws").into_client_request()?;
    request.headers_mut().insert("authorization", format!("Bearer {}", agent_token("a1")).parse()?);
    let (mut agent, _) = tokio_tungstenite::client_async(request, tcp).await?;
    let mut frames = Vec::new();
    use futures_util::StreamExt;
    agent.send(Message::Text(json!({"type": "set_status", "status": "online", "id": 1}).to_string().into())).await?;
    while !frames.iter().any(|frame: &Value| frame["type"] == "ok") {
        let Some(Ok(Message::Text(text))) = tokio::time::timeout(WAIT, agent.next()).await? else {
            anyhow::bail!("the session ended before set_status was answered");
        };
        frames.push(serde_json::from_str(&text)?);
    }
    // From here on the agent reads nothing, while a customer writes 8 MB.
    for index in 0..20 {
        let (status, _) =
            harness.post_webhook(&big_text("919811111111", &format!("wamid.slow.{index}"), 400_000)).await?;
        assert_eq!(status, 200);
    }
    // The server must give up on this session and reset the connection: the
    // client's socket reports the reset without reading.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(error) = agent.get_ref().take_error()? {
            assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
            break;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the connection of a session that reads nothing is still open after {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The agent can come back and resume.
    let mut again = harness.connect(&agent_token("a1")).await?;
    again.expect_type("welcome").await?;
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_megabyte_signed_webhook_is_accepted() -> TestResult {
    let harness = Harness::start().await?;
    // One payload carrying 30 messages of 100 KB: a batch the size Meta sends.
    let mut payload = big_text("919822222222", "wamid.batch.0", 100_000);
    let template = payload["entry"][0]["changes"][0]["value"]["messages"][0].clone();
    let messages = payload["entry"][0]["changes"][0]["value"]["messages"].as_array_mut().unwrap();
    for index in 1..30 {
        let mut message = template.clone();
        message["id"] = json!(format!("wamid.batch.{index}"));
        messages.push(message);
    }
    let body = serde_json::to_vec(&payload)?;
    assert!(body.len() > 3_000_000, "{} bytes", body.len());
    let (status, answer) = post_signed(&harness.http, &harness.base_url(), APP_SECRET, &body).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 30);
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_bytes_held_at_once_are_bounded() -> TestResult {
    let harness = Harness::start_with(StartOptions::default(), |config| {
        config.server.webhook_max_body_bytes = 4 << 20;
        config.server.webhook_bytes_in_flight = 4 << 20;
        config.server.body_read_timeout_ms = 3000;
    })
    .await?;
    let addr = harness.server().addr;
    // Prepared before the clock of the slow request starts (signing 3 MB
    // takes a while in a debug build).
    let body = serde_json::to_vec(&big_text("919833333333", "wamid.held", 3_000_000))?;
    let signature = engine::signature::sign(APP_SECRET.as_bytes(), &body);
    let post = || {
        harness
            .http
            .post(format!("{}/webhooks/whatsapp", harness.base_url()))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", &signature)
            .body(body.clone())
            .send()
    };
    // A client announces 3 MB and sends 1 KB of it: those 3 MB are reserved.
    let head = "POST /webhooks/whatsapp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
                x-hub-signature-256: sha256=00\r\ncontent-length: 3000000\r\n\r\n";
    let mut slow = raw::send(addr, head, &[b' '; 1024]).await?;
    // Another 3 MB webhook does not fit beside it: 503 at once, Meta retries.
    // (Until the server has read the slow request's head, it may still fit.)
    let refused = eventually(|| async {
        let response = post().await.ok()?;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.ok()?;
        assert!(status == 200 || status == 503, "{status} {answer}");
        (status == 503).then_some(answer)
    })
    .await?;
    assert_eq!(refused["code"], "unavailable", "{refused}");
    // The slow body times out, which frees its share.
    let (status, answer) = raw::read_response(&mut slow).await?;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "bad_request");
    let response = post().await?;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_again_keeps_one_workload_feed() -> TestResult {
    let harness = Harness::start().await?;
    let mut manager = harness.connect(MANAGER_TOKEN).await?;
    manager.expect_type("welcome").await?;
    manager.expect_type("snapshot").await?;
    for _ in 0..30 {
        let answer = manager.request(json!({"type": "subscribe", "topic": "workload"})).await?;
        assert_eq!(answer["type"], "ok", "{answer}");
    }
    // Each subscription sent one frame at once; count what the feed sends
    // in the next 2.5 s (its period is 1 s): one feed sends 2 or 3, thirty
    // feeds would send 60 or more.
    let mut immediate = 0;
    while manager.buffered().iter().any(|frame| frame["type"] == "workload") {
        manager.expect_type("workload").await?;
        immediate += 1;
    }
    let window = tokio::time::Instant::now() + Duration::from_millis(2500);
    let mut fed = 0;
    while let Ok(frame) = tokio::time::timeout_at(window, manager.next()).await {
        if frame?["type"] == "workload" {
            fed += 1;
        }
    }
    assert!(immediate <= 30, "{immediate}");
    assert!(fed <= 4, "{fed} workload frames in 2.5 s: one feed per subscription");
    harness.shutdown().await;
    Ok(())
}
