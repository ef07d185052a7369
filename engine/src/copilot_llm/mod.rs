//! The co-pilot's optional language-model backend (issue #15 item 3,
//! docs/copilot.md "Language model"): an OpenAI-compatible chat-completions
//! client that understands a customer's free text within a flow, writes the
//! handoff summary and drafts agents' replies.
//!
//! - [`config`]: `[copilot.model]` ([`ModelConfig`]; the key is an
//!   [`ApiKey`], never in logs or `Debug`).
//! - [`types`]: this module's own request and result types; the co-pilot's
//!   model hook adapts its flow and conversation to them.
//! - [`schema`]: the `response_format` JSON schema built from the flow (only
//!   its fields, options as enums, only the allowed actions).
//! - [`prompt`]: the messages; the customer's words only as delimited data.
//! - [`check`]: every answer checked by pure functions before it is used.
//! - [`LlmClient`]: the requests, the timeout, the per-conversation token
//!   budget (checked before any request), metrics.
//!
//! Every [`LlmError`] means the same to the caller: fall back to the
//! built-in engine for this message. Deliberately absent: any state. The
//! tokens a conversation spent come in with each request and go back out
//! with its result or failure ([`LlmFailure::tokens_used`]), for the caller
//! to keep with the conversation; nothing here retries (the built-in engine
//! answers at once instead).

pub mod check;
pub mod config;
pub mod prompt;
pub mod schema;
pub mod types;

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use check::Guard;
pub use config::{ApiKey, CopilotSection, ModelConfig};
pub use types::{
    Action, AnswerKind, AnswerOption, Author, DraftRequest, FieldValue, Generated, Line, Question, SummaryRequest,
    TurnRequest, TurnResult,
};

/// The largest response body read from the server.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Why the model's answer is not used; every one means "fall back".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// The conversation's token budget is spent: no request was made.
    #[error("the conversation's model token budget is spent ({used} of {budget})")]
    BudgetExhausted { used: u32, budget: u32 },
    #[error("the model did not answer within copilot.model.timeout_ms")]
    Timeout,
    #[error("the model server answered HTTP {0}")]
    Status(u16),
    #[error("the model server could not be reached: {0}")]
    Transport(String),
    /// Not a chat completion, or its content is not JSON.
    #[error("the model's answer is malformed: {0}")]
    Malformed(String),
    /// JSON outside the schema: an unknown field, a value not valid for its
    /// question, an action not allowed, a text too long.
    #[error("the model's answer breaks the schema: {0}")]
    SchemaViolation(String),
    /// The model refused, or its text carries configuration (the prompt, a
    /// key, a link outside the allow-list).
    #[error("the model's answer is refused: {0}")]
    Refused(&'static str),
}

impl LlmError {
    /// The `outcome` label of `switchboard_copilot_model_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            LlmError::BudgetExhausted { .. } => "budget_exhausted",
            LlmError::Timeout => "timeout",
            LlmError::Status(_) => "http_error",
            LlmError::Transport(_) => "connection_error",
            LlmError::Malformed(_) => "malformed",
            LlmError::SchemaViolation(_) => "schema_violation",
            LlmError::Refused(_) => "refused",
        }
    }
}

/// A failed request and the conversation's tokens spent, this request
/// included (a request the server answered costs tokens even when its
/// answer is refused).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error}")]
pub struct LlmFailure {
    pub error: LlmError,
    pub tokens_used: u32,
}

/// Why a client could not be made (at start-up).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("invalid copilot.model.{0}: {1}")]
    Config(String, String),
    #[error("{0}")]
    MissingKey(String),
    #[error("cannot build the model's HTTP client: {0}")]
    Http(String),
}

/// The client. Cheap to share behind an `Arc`; holds no per-conversation state.
pub struct LlmClient {
    http: reqwest::Client,
    url: String,
    model: String,
    key: Option<ApiKey>,
    budget: u32,
    max_output_tokens: u32,
    temperature: f32,
    max_reply_chars: usize,
    max_summary_chars: usize,
    /// In every system prompt; an answer holding it leaked the prompt.
    canary: String,
    guard: Guard,
}

/// Never prints the key.
impl std::fmt::Debug for LlmClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LlmClient")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

fn random_tag() -> String {
    format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>())
}

/// What one kind of request is called in metrics and logs.
#[derive(Clone, Copy)]
enum Kind {
    Turn,
    Summary,
    Draft,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Turn => "turn",
            Kind::Summary => "summary",
            Kind::Draft => "draft",
        }
    }
}

impl LlmClient {
    /// A client for `config`; `lookup` reads environment variables
    /// (`std::env::var(name).ok()`) for `api_key_env`.
    pub fn new(config: &ModelConfig, lookup: impl Fn(&str) -> Option<String>) -> Result<LlmClient, SetupError> {
        config.validate().map_err(|(key, problem)| SetupError::Config(key, problem))?;
        let key = config.resolve_api_key(lookup).map_err(SetupError::MissingKey)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.timeout_ms))
            .timeout(Duration::from_millis(config.timeout_ms))
            // A redirect could take the key elsewhere; a model server has no reason to.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| SetupError::Http(error.to_string()))?;
        let canary = random_tag();
        let mut secrets = vec![canary.clone(), config.model.clone()];
        if let Some(key) = &key {
            secrets.push(key.expose().to_owned());
        }
        let guard = Guard::new(
            config.max_reply_chars,
            config.max_summary_chars,
            secrets,
            config.allowed_link_hosts.clone(),
            &prompt::fixed_texts(),
        );
        Ok(LlmClient {
            http,
            url: config.completions_url(),
            model: config.model.clone(),
            key,
            budget: config.max_tokens_per_conversation,
            max_output_tokens: config.max_output_tokens,
            temperature: config.temperature,
            max_reply_chars: config.max_reply_chars,
            max_summary_chars: config.max_summary_chars,
            canary,
            guard,
        })
    }

    /// Tokens one conversation may spend.
    pub fn budget(&self) -> u32 {
        self.budget
    }

    /// Whether a conversation that spent `tokens_used` may still ask the model.
    pub fn has_budget(&self, tokens_used: u32) -> bool {
        tokens_used < self.budget
    }

    /// Understands the transcript's last customer message within the flow.
    pub async fn turn(&self, request: &TurnRequest) -> Result<TurnResult, LlmFailure> {
        let nonce = random_tag();
        let (system, user) = prompt::turn(request, &self.canary, &nonce);
        let schema = schema::turn_schema(&request.questions, &request.allowed_actions, self.max_reply_chars);
        let started = Instant::now();
        let (answer, tokens_used) = self.complete(request.tokens_used, system, user, "copilot_turn", schema).await;
        let checked = answer.and_then(|answer| check::check_turn(request, &answer, &self.guard, &nonce));
        let result = checked
            .map(|turn| TurnResult { fields: turn.fields, action: turn.action, reply: turn.reply, tokens_used })
            .map_err(|error| LlmFailure { error, tokens_used });
        self.record(Kind::Turn, &request.conversation_id, started, result.as_ref().err());
        result
    }

    /// The handoff summary for the agent who takes the conversation.
    pub async fn summary(&self, request: &SummaryRequest) -> Result<Generated, LlmFailure> {
        let nonce = random_tag();
        let (system, user) = prompt::summary(request, &self.canary, &nonce);
        let schema = schema::text_schema(self.max_summary_chars);
        let started = Instant::now();
        let (answer, tokens_used) = self.complete(request.tokens_used, system, user, "copilot_summary", schema).await;
        let result = answer
            .and_then(|answer| check::check_text_answer(&answer, self.max_summary_chars, &self.guard, &nonce))
            .map(|text| Generated { text, tokens_used })
            .map_err(|error| LlmFailure { error, tokens_used });
        self.record(Kind::Summary, &request.conversation_id, started, result.as_ref().err());
        result
    }

    /// A draft reply for an agent (agent assist).
    pub async fn draft(&self, request: &DraftRequest) -> Result<Generated, LlmFailure> {
        let nonce = random_tag();
        let (system, user) = prompt::draft(request, &self.canary, &nonce);
        let schema = schema::text_schema(self.max_reply_chars);
        let started = Instant::now();
        let (answer, tokens_used) = self.complete(request.tokens_used, system, user, "copilot_draft", schema).await;
        let result = answer
            .and_then(|answer| check::check_text_answer(&answer, self.max_reply_chars, &self.guard, &nonce))
            .map(|text| Generated { text, tokens_used })
            .map_err(|error| LlmFailure { error, tokens_used });
        self.record(Kind::Draft, &request.conversation_id, started, result.as_ref().err());
        result
    }

    fn record(&self, kind: Kind, conversation_id: &str, started: Instant, error: Option<&LlmFailure>) {
        let outcome = error.map_or("ok", |failure| failure.error.outcome());
        metrics::counter!(crate::metrics::COPILOT_MODEL_REQUESTS_TOTAL, "kind" => kind.as_str(), "outcome" => outcome)
            .increment(1);
        if let Some(failure) = error {
            if !matches!(failure.error, LlmError::BudgetExhausted { .. }) {
                metrics::histogram!(crate::metrics::COPILOT_MODEL_SECONDS).record(started.elapsed().as_secs_f64());
            }
            tracing::warn!(
                conversation_id,
                kind = kind.as_str(),
                outcome,
                error = %failure.error,
                "copilot model answer not used, the built-in engine answers"
            );
        } else {
            metrics::histogram!(crate::metrics::COPILOT_MODEL_SECONDS).record(started.elapsed().as_secs_f64());
        }
    }

    /// One chat completion: `(content parsed as JSON, tokens spent after it)`.
    async fn complete(
        &self,
        tokens_used: u32,
        system: String,
        user: String,
        schema_name: &str,
        schema: Value,
    ) -> (Result<Value, LlmError>, u32) {
        if !self.has_budget(tokens_used) {
            return (Err(LlmError::BudgetExhausted { used: tokens_used, budget: self.budget }), tokens_used);
        }
        let body = json!({
            "model": self.model,
            "messages": prompt::messages(system, user),
            "temperature": self.temperature,
            "max_tokens": self.max_output_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "strict": true, "schema": schema},
            },
        });
        let body = body.to_string();
        let request_bytes = body.len();
        let mut builder =
            self.http.post(&self.url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        if let Some(key) = &self.key {
            builder = builder.bearer_auth(key.expose());
        }
        let response = match builder.send().await {
            Ok(response) => response,
            Err(error) => return (Err(transport_error(error)), tokens_used),
        };
        let status = response.status();
        let bytes = match read_bounded(response).await {
            Ok(bytes) => bytes,
            Err(error) => return (Err(error), tokens_used),
        };
        if !status.is_success() {
            return (Err(LlmError::Status(status.as_u16())), tokens_used);
        }
        let completion: Value = match serde_json::from_slice(&bytes) {
            Ok(value) => value,
            // Unparsable: nothing says what it cost; count what was sent.
            Err(_) => {
                let spent = estimate_tokens(request_bytes + bytes.len());
                return (
                    Err(LlmError::Malformed("the body is not JSON".to_owned())),
                    tokens_used.saturating_add(spent),
                );
            }
        };
        let spent = completion["usage"]["total_tokens"]
            .as_u64()
            .map(|total| u32::try_from(total).unwrap_or(u32::MAX))
            .unwrap_or_else(|| estimate_tokens(request_bytes + bytes.len()));
        let total = tokens_used.saturating_add(spent);
        let message = &completion["choices"][0]["message"];
        if message["refusal"].as_str().is_some_and(|refusal| !refusal.is_empty()) {
            return (Err(LlmError::Refused("the model refused")), total);
        }
        let Some(content) = message["content"].as_str() else {
            return (Err(LlmError::Malformed("no choices[0].message.content".to_owned())), total);
        };
        match serde_json::from_str::<Value>(content) {
            Ok(answer) => (Ok(answer), total),
            Err(error) => (Err(LlmError::Malformed(format!("the content is not JSON: {error}"))), total),
        }
    }
}

/// About four bytes a token: what a request costs when the server does not say.
fn estimate_tokens(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(4)).unwrap_or(u32::MAX)
}

fn transport_error(error: reqwest::Error) -> LlmError {
    if error.is_timeout() {
        LlmError::Timeout
    } else {
        // Without the URL: it is in the configuration, not news in a log line.
        LlmError::Transport(error.without_url().to_string())
    }
}

/// The body, at most [`MAX_RESPONSE_BYTES`].
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, LlmError> {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(LlmError::Malformed(format!("the body is over {MAX_RESPONSE_BYTES} bytes")));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(bytes),
            Err(error) => return Err(transport_error(error)),
        }
    }
}
