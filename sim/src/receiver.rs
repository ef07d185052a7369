//! A connector's webhook receiver (PROTOCOL §10), for tests and the bench:
//! an HTTP/1.1 server on 127.0.0.1 written on a bare TCP socket, so it can
//! misbehave as real receivers do — answer 500, answer 429 with
//! `Retry-After`, never answer (the sender times out), close the connection
//! without an answer, answer late. Each request is recorded whole (the
//! Standard Webhooks headers and the raw body) before it is answered; what
//! to do with the next request is taken from a script, then the default.
//! Every answer closes its connection (`Connection: close`).
//!
//! It verifies nothing: tests check the signatures with an implementation
//! of their own.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the receiver does with a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Behavior {
    /// Answers this status (2xx: accepted).
    Status(u16),
    /// Answers this status with `Retry-After: seconds`.
    RetryAfter(u16, u64),
    /// Answers this status with this `Retry-After` value (an HTTP date).
    RetryAfterValue(u16, String),
    /// Answers 200 after this long.
    Late(Duration),
    /// Holds the connection without answering, for this long.
    Hang(Duration),
    /// Closes the connection without answering.
    Close,
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    /// `POST`, `PUT`…
    pub method: String,
    /// The request target: path and query.
    pub path: String,
    /// Every header, names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub webhook_id: Option<String>,
    pub webhook_timestamp: Option<String>,
    pub webhook_signature: Option<String>,
    pub body: Vec<u8>,
    /// What the receiver did with it.
    pub behavior: Behavior,
}

impl Received {
    /// A header's value (the name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// Whether the receiver accepted it (answered 2xx).
    pub fn accepted(&self) -> bool {
        match self.behavior {
            Behavior::Status(status) => (200..300).contains(&status),
            Behavior::Late(_) => true,
            _ => false,
        }
    }
}

struct Shared {
    script: Mutex<VecDeque<Behavior>>,
    default: Mutex<Behavior>,
    received: Mutex<Vec<Received>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    /// (path prefix, JSON body): what a 2xx answer to a request whose path
    /// starts with the prefix carries (a CRM's ids); the first match wins.
    answers: Mutex<Vec<(String, String)>>,
}

/// A running receiver; it stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts on 127.0.0.1:0, answering 200 to everything not scripted.
    pub async fn start() -> std::io::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Behavior::Status(200)),
            received: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            answers: Mutex::new(Vec::new()),
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = serving.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, &shared).await;
                });
            }
        });
        Ok(Receiver { addr, shared, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// The next requests get these, in order; then the default.
    pub fn script(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.shared.script.lock().expect("not poisoned").extend(behaviors);
    }

    /// A 2xx answer to a request whose path starts with `path_prefix`
    /// carries `json` (as a CRM's answer carries the ids it made).
    pub fn answer_with(&self, path_prefix: &str, json: serde_json::Value) {
        self.shared.answers.lock().expect("not poisoned").push((path_prefix.to_owned(), json.to_string()));
    }

    /// What requests get once the script is used up.
    pub fn set_default(&self, behavior: Behavior) {
        *self.shared.default.lock().expect("not poisoned") = behavior;
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("not poisoned").clone()
    }

    /// The most requests it held at once.
    pub fn most_in_flight(&self) -> usize {
        self.shared.most_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

async fn serve(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let length: usize = header(&head, "content-length").and_then(|value| value.parse().ok()).unwrap_or(0);
    while buffer.len() < head_end + length {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let behavior = {
        let next = shared.script.lock().expect("not poisoned").pop_front();
        next.unwrap_or_else(|| shared.default.lock().expect("not poisoned").clone())
    };
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let answer_body = shared
        .answers
        .lock()
        .expect("not poisoned")
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix.as_str()))
        .map(|(_, body)| body.clone())
        .unwrap_or_default();
    shared.received.lock().expect("not poisoned").push(Received {
        method,
        path,
        headers,
        webhook_id: header(&head, "webhook-id").map(str::to_owned),
        webhook_timestamp: header(&head, "webhook-timestamp").map(str::to_owned),
        webhook_signature: header(&head, "webhook-signature").map(str::to_owned),
        body: buffer[head_end..head_end + length].to_vec(),
        behavior: behavior.clone(),
    });
    let answered = answer(&mut stream, &behavior, &answer_body).await;
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    answered
}

async fn answer(stream: &mut TcpStream, behavior: &Behavior, body: &str) -> std::io::Result<()> {
    let (status, extra) = match behavior {
        Behavior::Status(status) => (*status, String::new()),
        Behavior::RetryAfter(status, seconds) => (*status, format!("retry-after: {seconds}\r\n")),
        Behavior::RetryAfterValue(status, value) => (*status, format!("retry-after: {value}\r\n")),
        Behavior::Late(after) => {
            tokio::time::sleep(*after).await;
            (200, String::new())
        }
        Behavior::Hang(duration) => {
            tokio::time::sleep(*duration).await;
            return Ok(());
        }
        Behavior::Close => return stream.shutdown().await,
    };
    let body = if (200..300).contains(&status) { body } else { "" };
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
