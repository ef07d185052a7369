//! A fake OpenAI-compatible chat-completions server, for the co-pilot's
//! language-model tests (and the demo or bench, which may point
//! `[copilot.model]` at it): an axum server on 127.0.0.1:0 that records
//! every request whole (path, headers, JSON body) and answers from a
//! script, then from a default answer or a responder function. It can be
//! good, slow, failing or malformed, or play a model that obeys an
//! injected instruction: the answer is whatever the test scripts.
//!
//! It checks nothing of what it is sent; the tests read [`FakeModel::requests`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// What the fake answers to one request.
#[derive(Clone, Debug, PartialEq)]
pub enum FakeAnswer {
    /// 200 with a chat completion whose `choices[0].message.content` is
    /// `content` and whose `usage.total_tokens` is `total_tokens` (no
    /// `usage` when `None`).
    Content { content: String, total_tokens: Option<u32> },
    /// 200 with a completion whose message is a refusal (structured outputs).
    Refusal(String),
    /// This status and raw body (`application/json`).
    Raw { status: u16, body: String },
    /// Waits this long, then answers.
    Delay(Duration, Box<FakeAnswer>),
}

impl FakeAnswer {
    /// A completion whose content is `answer` serialized.
    pub fn json(answer: Value, total_tokens: u32) -> FakeAnswer {
        FakeAnswer::Content { content: answer.to_string(), total_tokens: Some(total_tokens) }
    }

    /// An error status with an OpenAI-style error body.
    pub fn status(status: u16) -> FakeAnswer {
        FakeAnswer::Raw {
            status,
            body: json!({"error": {"message": "fake failure", "type": "server_error"}}).to_string(),
        }
    }

    /// The completion's body as the server sends it.
    fn body(content: Option<&str>, refusal: Option<&str>, total_tokens: Option<u32>) -> Value {
        let mut body = json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": "fake",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": "stop",
            }],
        });
        if let Some(total) = total_tokens {
            body["usage"] =
                json!({"prompt_tokens": total / 2, "completion_tokens": total - total / 2, "total_tokens": total});
        }
        body
    }
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct ModelRequest {
    pub method: String,
    pub path: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Null` when it is not).
    pub body: Value,
}

impl ModelRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// The content of the message with this role (`system`, `user`).
    pub fn message(&self, role: &str) -> Option<&str> {
        self.body["messages"].as_array()?.iter().find(|message| message["role"] == role)?["content"].as_str()
    }
}

type Responder = Arc<dyn Fn(&Value) -> FakeAnswer + Send + Sync>;

struct Shared {
    script: Mutex<VecDeque<FakeAnswer>>,
    default: Mutex<Responder>,
    requests: Mutex<Vec<ModelRequest>>,
}

/// A running fake; it stops when dropped.
pub struct FakeModel {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeModel {
    /// Starts on 127.0.0.1:0; unscripted requests get 500 until
    /// [`FakeModel::set_default`] or [`FakeModel::set_responder`].
    pub async fn start() -> std::io::Result<FakeModel> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Arc::new(|_: &Value| FakeAnswer::status(500))),
            requests: Mutex::new(Vec::new()),
        });
        let serving = shared.clone();
        let router = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let shared = serving.clone();
            async move { answer(&shared, method, uri, headers, body).await }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(FakeModel { addr, shared, task })
    }

    /// What `[copilot.model] base_url` should be.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The next requests get these, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = FakeAnswer>) {
        self.shared.script.lock().expect("not poisoned").extend(answers);
    }

    /// Requests past the script get this.
    pub fn set_default(&self, answer: FakeAnswer) {
        *self.shared.default.lock().expect("not poisoned") = Arc::new(move |_: &Value| answer.clone());
    }

    /// Requests past the script get what `responder` makes of their body.
    pub fn set_responder(&self, responder: impl Fn(&Value) -> FakeAnswer + Send + Sync + 'static) {
        *self.shared.default.lock().expect("not poisoned") = Arc::new(responder);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<ModelRequest> {
        self.shared.requests.lock().expect("not poisoned").clone()
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(shared: &Shared, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let request = ModelRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body: body.clone(),
    };
    shared.requests.lock().expect("not poisoned").push(request);
    let scripted = shared.script.lock().expect("not poisoned").pop_front();
    let mut next = match scripted {
        Some(answer) => answer,
        None => {
            let responder = shared.default.lock().expect("not poisoned").clone();
            responder(&body)
        }
    };
    loop {
        match next {
            FakeAnswer::Delay(wait, then) => {
                tokio::time::sleep(wait).await;
                next = *then;
            }
            FakeAnswer::Content { content, total_tokens } => {
                return axum::Json(FakeAnswer::body(Some(&content), None, total_tokens)).into_response();
            }
            FakeAnswer::Refusal(refusal) => {
                return axum::Json(FakeAnswer::body(None, Some(&refusal), Some(10))).into_response();
            }
            FakeAnswer::Raw { status, body } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return (status, [("content-type", "application/json")], body).into_response();
            }
        }
    }
}
