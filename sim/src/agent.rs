//! The WebSocket agent client: how a simulated agent reaches the engine's `/ws`
//! (Bearer token, a subprotocol, `resume_from`), and [`WsClient`], which reads
//! frames one at a time for tests.
//!
//! Every connection uses [`client_config`]: a 4 KiB read buffer and no write
//! buffer. tungstenite's default read buffer is 128 KiB, which cost 134 KiB of
//! memory per agent and zero-filled 128 KiB on every read (measured by the
//! bench at 3,000 msg/s: 16 % of the agents' CPU went to that memset). A larger
//! frame still arrives whole: the buffer is what one read takes, not a limit.
//!
//! The demo's agents and the bench's fleet drive their own sessions over the
//! [`Socket`] [`connect`] returns (their policies differ); tests use
//! [`WsClient`].

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use tokio_tungstenite::tungstenite::Message;

/// An open agent session.
pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long [`WsClient`] waits for a frame.
pub const WAIT: Duration = Duration::from_secs(15);

/// The subprotocol a client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `switchboard.v1.json`: text frames.
    Json,
    /// `switchboard.v1.msgpack`: binary frames.
    MsgPack,
    /// No `Sec-WebSocket-Protocol` header (the server picks JSON).
    None,
}

/// 4 KiB read buffer, frames written straight through (no write buffer).
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(0)
}

/// `ws://HOST/ws` for `http://HOST` (`wss` for `https`).
pub fn ws_url(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/').replacen("http://", "ws://", 1).replacen("https://", "wss://", 1);
    format!("{base}/ws")
}

/// Opens an agent session on `{base_url}/ws` with `token` and `protocol`,
/// resuming after event `resume_from` when given; returns the socket and the
/// subprotocol the server chose. No timeout: callers bound it as they need.
pub async fn connect(
    base_url: &str,
    token: &str,
    protocol: Protocol,
    resume_from: Option<u64>,
) -> Result<(Socket, Option<String>), tungstenite::Error> {
    let mut url = ws_url(base_url);
    if let Some(seq) = resume_from {
        url.push_str(&format!("?resume_from={seq}"));
    }
    let mut request = url.into_client_request()?;
    let authorization = HeaderValue::from_str(&format!("Bearer {token}")).map_err(tungstenite::http::Error::from)?;
    request.headers_mut().insert(AUTHORIZATION, authorization);
    let subprotocol = match protocol {
        Protocol::Json => Some(protocol::ws::SUBPROTOCOL_JSON),
        Protocol::MsgPack => Some(protocol::ws::SUBPROTOCOL_MSGPACK),
        Protocol::None => None,
    };
    if let Some(subprotocol) = subprotocol {
        request.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(subprotocol));
    }
    let (socket, response) = tokio_tungstenite::connect_async_with_config(request, Some(client_config()), true).await?;
    let negotiated =
        response.headers().get(SEC_WEBSOCKET_PROTOCOL).and_then(|value| value.to_str().ok()).map(str::to_owned);
    Ok((socket, negotiated))
}

/// A WebSocket client that reads frames as JSON values whatever the encoding,
/// keeps frames it skipped in order, and numbers its requests.
pub struct WsClient {
    socket: Socket,
    pub protocol: Protocol,
    pub negotiated: Option<String>,
    buffered: VecDeque<Value>,
    next_id: u64,
}

impl WsClient {
    pub async fn connect(
        base_url: &str,
        token: &str,
        protocol: Protocol,
        resume_from: Option<u64>,
    ) -> Result<WsClient> {
        let (socket, negotiated) = connect(base_url, token, protocol, resume_from).await?;
        Ok(WsClient { socket, protocol, negotiated, buffered: VecDeque::new(), next_id: 1 })
    }

    async fn read_frame(&mut self) -> Result<Value> {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .context("no frame within the wait")?
                .ok_or_else(|| anyhow!("socket closed"))??;
            match message {
                Message::Text(text) => {
                    if self.protocol == Protocol::MsgPack {
                        bail!("text frame on a MessagePack session: {text}");
                    }
                    return Ok(serde_json::from_str(&text)?);
                }
                Message::Binary(bytes) => {
                    if self.protocol != Protocol::MsgPack {
                        bail!("binary frame on a JSON session");
                    }
                    return Ok(rmp_serde::from_slice(&bytes)?);
                }
                Message::Close(frame) => bail!("closed by server: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next frame (buffered ones first).
    pub async fn next(&mut self) -> Result<Value> {
        if let Some(frame) = self.buffered.pop_front() {
            return Ok(frame);
        }
        self.read_frame().await
    }

    /// The next frame of `kind`, keeping others buffered in order.
    pub async fn expect_type(&mut self, kind: &str) -> Result<Value> {
        self.expect_where(|frame| frame["type"] == kind).await
    }

    /// The next frame matching `predicate`, skipping (and buffering) others.
    pub async fn expect_where(&mut self, predicate: impl Fn(&Value) -> bool) -> Result<Value> {
        if let Some(position) = self.buffered.iter().position(&predicate) {
            return Ok(self.buffered.remove(position).expect("position exists"));
        }
        loop {
            let frame = self.read_frame().await?;
            if predicate(&frame) {
                return Ok(frame);
            }
            self.buffered.push_back(frame);
        }
    }

    pub async fn send(&mut self, frame: &Value) -> Result<()> {
        let message = match self.protocol {
            Protocol::MsgPack => Message::Binary(rmp_serde::to_vec_named(frame)?.into()),
            _ => Message::Text(serde_json::to_string(frame)?.into()),
        };
        self.socket.send(message).await?;
        Ok(())
    }

    /// Sends a request with a fresh `id`; returns its `ok` or `error` answer.
    pub async fn request(&mut self, mut frame: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        frame["id"] = json!(id);
        self.send(&frame).await?;
        self.expect_where(|candidate| {
            (candidate["type"] == "ok" || candidate["type"] == "error") && candidate["id"] == json!(id)
        })
        .await
    }

    /// Frames already received and not yet taken.
    pub fn buffered(&self) -> &VecDeque<Value> {
        &self.buffered
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_url_follows_the_scheme() {
        assert_eq!(ws_url("http://127.0.0.1:8080"), "ws://127.0.0.1:8080/ws");
        assert_eq!(ws_url("https://example.com/"), "wss://example.com/ws");
    }

    #[test]
    fn client_config_keeps_reads_small_and_writes_unbuffered() {
        let config = client_config();
        assert_eq!(config.read_buffer_size, 4 * 1024);
        assert_eq!(config.write_buffer_size, 0);
    }
}
