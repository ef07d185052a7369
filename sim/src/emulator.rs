//! A built-in WhatsApp Cloud API emulator.
//!
//! It answers `POST /{version}/{phone_number_id}/messages` the way Meta's Graph API
//! does (same success body, same error envelopes), records every send so tests can
//! check what the engine emitted, and, after each accepted send, posts Meta-shaped
//! status webhooks (`sent`, `delivered`, `read`, or `sent` then `failed`) to a
//! webhook URL, signed with `X-Hub-Signature-256` like Meta's.
//!
//! `switchboard demo` runs it so a newcomer sees messages flow with no Meta account,
//! and the black-box tests use it as Meta. (The bench uses [`crate::sink`], which
//! keeps nothing per request.)
//!
//! It also answers `POST /{version}/{dataset_id}/events`, Meta's Conversions
//! API for business messaging: Bearer token, then the body's shape (each
//! event's name, time, id, `action_source: "business_messaging"`,
//! `messaging_channel: "whatsapp"`, `user_data` with the WhatsApp Business
//! Account id and a `ctwa_clid`, and `custom_data` with both `currency` and
//! `value` when present), answered `{events_received, fbtrace_id}` like
//! Meta; the accepted events are kept ([`Emulator::conversions`]) and
//! listed by `GET /emulator/conversions` (same Bearer token), which
//! `switchboard demo` points at.
//!
//! Order of checks on a send, as Meta does it: path (`vNN.0`, else 404), access
//! token (else 401, code 190), body (else 400, code 100), then any failure injected
//! with [`Emulator::fail_next`] (it replaces an answer that would have been a
//! success), then success.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use protocol::graph::{GraphError, GraphErrorData, GraphErrorEnvelope, SendMessageResponse, SentContact, SentMessage};
use rand::Rng;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

/// The WhatsApp Business Account id the emulator puts in `entry[].id`.
pub const WABA_ID: &str = "100000000000001";
/// The display phone number the emulator puts in `metadata`.
pub const DISPLAY_PHONE_NUMBER: &str = "15550000000";

/// Message types Meta accepts on a send; the object named by `type` must be present.
const KNOWN_TYPES: &[&str] = &[
    "text",
    "template",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "reaction",
];

/// Meta's limit on a text message's body, in characters.
const MAX_TEXT_BODY: usize = 4096;

/// Retries of one webhook post after the first attempt (connection error or 5xx).
const WEBHOOK_RETRIES: u32 = 3;

#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Sends must carry `Authorization: Bearer {access_token}`.
    pub access_token: String,
    /// Key of the `X-Hub-Signature-256` on the status webhooks.
    pub app_secret: String,
    /// Where status webhooks go; none are sent while it is `None`.
    pub webhook_url: Option<String>,
    /// Delay before each status webhook of a message.
    pub status_delay_ms: u64,
    /// Whether accepted sends get status webhooks at all.
    pub send_statuses: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            access_token: "emulator-access-token".to_owned(),
            app_secret: "emulator-app-secret".to_owned(),
            webhook_url: None,
            status_delay_ms: 300,
            send_statuses: true,
        }
    }
}

/// One send the emulator received, whatever its answer.
#[derive(Clone, Debug, PartialEq)]
pub struct CapturedRequest {
    pub phone_number_id: String,
    /// The version segment of the path, e.g. `v23.0`.
    pub version: String,
    /// The raw `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The JSON body; a body that is not JSON is kept as a JSON string of its text.
    pub body: Value,
    /// When it arrived, in unix ms of the emulator's time source (the wall
    /// clock unless a test gave one with [`Emulator::set_time_source`]).
    pub at_ms: i64,
}

/// A time source for [`CapturedRequest::at_ms`] (a test's manual clock).
pub type TimeSource = Arc<dyn Fn() -> i64 + Send + Sync>;

/// An error answer to inject with [`Emulator::fail_next`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub http_status: u16,
    /// Meta's error code, e.g. 130429 (throughput) or 131047 (re-engagement).
    pub code: i64,
    pub message: String,
}

pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
}

struct Shared {
    access_token: String,
    app_secret: String,
    status_delay_ms: u64,
    send_statuses: bool,
    state: Mutex<EmulatorState>,
    next_id: AtomicU64,
    stopped: AtomicBool,
    client: reqwest::Client,
}

#[derive(Default)]
struct EmulatorState {
    webhook_url: Option<String>,
    requests: Vec<CapturedRequest>,
    accepted: usize,
    failures: VecDeque<Failure>,
    failing_recipients: HashMap<String, i64>,
    conversions: Vec<Conversion>,
    /// After this many accepted sends, every send gets the failure (a
    /// number's messaging or spam limit reached), until cleared.
    limit: Option<(usize, Failure)>,
    /// Each answer is held this long (in-flight sends for kill tests).
    answer_delay_ms: u64,
    time_source: Option<TimeSource>,
}

/// One Conversions API event the emulator accepted.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Conversion {
    pub dataset_id: String,
    /// The event as posted (one element of `data`).
    pub event: Value,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, EmulatorState> {
        // A panic elsewhere never makes the emulator unusable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Emulator {
    /// Binds `127.0.0.1:0` and serves the Graph API in a spawned task.
    pub async fn start(config: EmulatorConfig) -> std::io::Result<Emulator> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent("facebookexternalua")
            .build()
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            access_token: config.access_token,
            app_secret: config.app_secret,
            status_delay_ms: config.status_delay_ms,
            send_statuses: config.send_statuses,
            state: Mutex::new(EmulatorState { webhook_url: config.webhook_url, ..EmulatorState::default() }),
            next_id: AtomicU64::new(1),
            stopped: AtomicBool::new(false),
            client,
        });
        let router = Router::new()
            .route("/{version}/{phone_number_id}/messages", post(send_message))
            .route("/{version}/{phone_number_id}/events", post(conversion_events))
            .route("/emulator/conversions", axum::routing::get(list_conversions))
            .fallback(unknown_path)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let server = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = shutdown_rx.await;
            });
            if let Err(error) = server.await {
                tracing::warn!(%error, "WhatsApp emulator stopped with an error");
            }
        });
        tracing::debug!(%addr, "WhatsApp Cloud API emulator listening");
        Ok(Emulator { addr, shared, shutdown: Mutex::new(Some(shutdown_tx)) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What to configure as `whatsapp.graph_base_url`: `http://127.0.0.1:PORT/v23.0`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v23.0", self.addr)
    }

    pub fn set_webhook_url(&self, url: Option<String>) {
        self.shared.state().webhook_url = url;
    }

    /// Every send received, in order, including refused ones.
    pub fn requests(&self) -> Vec<CapturedRequest> {
        self.shared.state().requests.clone()
    }

    /// The sends received after the first `start` (in order), and how
    /// many were received in all: a reader that keeps the count as its
    /// cursor sees each send once without copying the whole history (the
    /// demo's simulated customers read what was sent to them this way).
    pub fn requests_since(&self, start: usize) -> (Vec<CapturedRequest>, usize) {
        let state = self.shared.state();
        let total = state.requests.len();
        (state.requests.get(start.min(total)..).unwrap_or_default().to_vec(), total)
    }

    /// How many sends were answered 200.
    pub fn accepted_count(&self) -> usize {
        self.shared.state().accepted
    }

    /// Every Conversions API event accepted, in arrival order.
    pub fn conversions(&self) -> Vec<Conversion> {
        self.shared.state().conversions.clone()
    }

    /// Where the accepted Conversions API events are listed (`GET`, the
    /// access token as Bearer).
    pub fn conversions_url(&self) -> String {
        format!("http://{}/emulator/conversions", self.addr)
    }

    /// The next `times` sends that would have succeeded get this error answer
    /// instead. Calls queue up: their failures are used in order.
    pub fn fail_next(&self, failure: Failure, times: usize) {
        let mut state = self.shared.state();
        state.failures.extend(std::iter::repeat_n(failure, times));
    }

    /// Once `accepted` sends in all were answered 200, every later send
    /// that would have succeeded gets `failure` instead (Meta's 131048 spam
    /// rate limit, say), until [`Emulator::clear_limit`].
    pub fn limit_after(&self, accepted: usize, failure: Failure) {
        self.shared.state().limit = Some((accepted, failure));
    }

    pub fn clear_limit(&self) {
        self.shared.state().limit = None;
    }

    /// Holds every answer `ms` before giving it (sends stay in flight).
    pub fn set_answer_delay_ms(&self, ms: u64) {
        self.shared.state().answer_delay_ms = ms;
    }

    /// Where [`CapturedRequest::at_ms`] comes from (a test's manual clock).
    pub fn set_time_source(&self, source: TimeSource) {
        self.shared.state().time_source = Some(source);
    }

    /// Sends to `to` are accepted (200) but then get a `sent` status followed by a
    /// `failed` status carrying Meta's `errors[]` with `code`.
    pub fn fail_status_for(&self, to: &str, code: i64) {
        self.shared.state().failing_recipients.insert(to.to_owned(), code);
    }

    /// Stops the server (gracefully: in-flight requests finish) and any status
    /// webhooks not yet posted. Idempotent.
    pub fn shutdown(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let sender = self.shutdown.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(sender) = sender {
            let _ = sender.send(());
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Meta's webhook for one inbound text message from a customer.
pub fn inbound_text_payload(
    phone_number_id: &str,
    from: &str,
    name: &str,
    wamid: &str,
    text: &str,
    timestamp_s: i64,
    referral: Option<Value>,
) -> Value {
    let mut message = json!({ "type": "text", "text": { "body": text } });
    if let (Some(referral), Some(object)) = (referral, message.as_object_mut()) {
        object.insert("referral".to_owned(), referral);
    }
    inbound_message_payload(phone_number_id, from, name, wamid, timestamp_s, message)
}

/// Meta's webhook for one inbound message of any type: `message` is its
/// type and content (`{"type": "interactive", "interactive": {...}}`, a
/// button or list reply); `from`, `id` and `timestamp` are added.
pub fn inbound_message_payload(
    phone_number_id: &str,
    from: &str,
    name: &str,
    wamid: &str,
    timestamp_s: i64,
    message: Value,
) -> Value {
    let mut message = message;
    if let Some(object) = message.as_object_mut() {
        object.insert("from".to_owned(), json!(from));
        object.insert("id".to_owned(), json!(wamid));
        object.insert("timestamp".to_owned(), json!(timestamp_s.to_string()));
    }
    messages_webhook(json!({
        "messaging_product": "whatsapp",
        "metadata": { "display_phone_number": DISPLAY_PHONE_NUMBER, "phone_number_id": phone_number_id },
        "contacts": [{ "profile": { "name": name }, "wa_id": from }],
        "messages": [message],
    }))
}

fn messages_webhook(value: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": WABA_ID, "changes": [{ "field": "messages", "value": value }] }],
    })
}

fn status_payload(phone_number_id: &str, wamid: &str, to: &str, status: &str, errors: Option<Value>) -> Value {
    let mut object = Map::new();
    object.insert("id".to_owned(), json!(wamid));
    object.insert("status".to_owned(), json!(status));
    object.insert("timestamp".to_owned(), json!(unix_seconds().to_string()));
    object.insert("recipient_id".to_owned(), json!(to));
    match errors {
        Some(errors) => {
            object.insert("errors".to_owned(), errors);
        }
        None => {
            object.insert(
                "pricing".to_owned(),
                json!({
                    "billable": false,
                    "pricing_model": "PMP",
                    "category": "service",
                    "type": "free_customer_service",
                }),
            );
        }
    }
    messages_webhook(json!({
        "messaging_product": "whatsapp",
        "metadata": { "display_phone_number": DISPLAY_PHONE_NUMBER, "phone_number_id": phone_number_id },
        "statuses": [Value::Object(object)],
    }))
}

/// Meta's `errors[]` of a failed status with this code.
fn status_errors(code: i64) -> Value {
    let (title, details) = match code {
        131047 => (
            "Re-engagement message",
            "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
        ),
        131026 => ("Message undeliverable", "Message failed to send because the recipient could not be reached."),
        131049 => (
            "This message was not delivered to maintain healthy ecosystem engagement.",
            "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
        ),
        _ => ("Message failed to send", "The emulator was told to fail messages to this recipient."),
    };
    json!([{
        "code": code,
        "title": title,
        "message": title,
        "error_data": { "details": details },
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
    }])
}

async fn send_message(
    State(shared): State<Arc<Shared>>,
    Path((version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let parsed = serde_json::from_slice::<Value>(&body);
    let captured_body = match &parsed {
        Ok(value) => value.clone(),
        Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
    };
    let answer_delay_ms = {
        let mut state = shared.state();
        let at_ms = match &state.time_source {
            Some(source) => source(),
            None => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64),
        };
        state.requests.push(CapturedRequest {
            phone_number_id: phone_number_id.clone(),
            version: version.clone(),
            authorization: authorization.clone(),
            body: captured_body,
            at_ms,
        });
        state.answer_delay_ms
    };
    if answer_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(answer_delay_ms)).await;
    }

    if !is_api_version(&version) {
        return unknown_path_response(&format!("/{version}/{phone_number_id}/messages"));
    }
    if !bearer_matches(authorization.as_deref(), &shared.access_token) {
        return meta_error(
            StatusCode::UNAUTHORIZED,
            "Invalid OAuth access token - Cannot parse access token",
            190,
            None,
        );
    }
    let request = match parsed {
        Ok(value) => value,
        Err(error) => return invalid_parameter(&format!("The request body is not valid JSON: {error}")),
    };
    let (to, kind) = match validate(&request) {
        Ok(valid) => valid,
        Err(details) => return invalid_parameter(&details),
    };

    let (failure, status_failure, statuses_wanted) = {
        let mut state = shared.state();
        let limited =
            state.limit.as_ref().filter(|(after, _)| state.accepted >= *after).map(|(_, failure)| failure.clone());
        let failure = state.failures.pop_front().or(limited);
        if failure.is_none() {
            state.accepted += 1;
        }
        let statuses_wanted = shared.send_statuses && state.webhook_url.is_some();
        (failure, state.failing_recipients.get(&to).copied(), statuses_wanted)
    };
    if let Some(failure) = failure {
        let status = StatusCode::from_u16(failure.http_status).unwrap_or(StatusCode::BAD_REQUEST);
        return meta_error(status, &failure.message, failure.code, Some(&failure.message));
    }

    let wamid = new_wamid(&shared, &to);
    tracing::debug!(%phone_number_id, %to, %kind, %wamid, "emulator accepted a send");
    if statuses_wanted {
        let shared = shared.clone();
        let (phone_number_id, wamid, to) = (phone_number_id.clone(), wamid.clone(), to.clone());
        tokio::spawn(async move { post_statuses(shared, phone_number_id, wamid, to, status_failure).await });
    }
    let answer = SendMessageResponse {
        messaging_product: "whatsapp".to_owned(),
        contacts: vec![SentContact { input: to.clone(), wa_id: to }],
        messages: vec![SentMessage { id: wamid, message_status: None }],
    };
    (StatusCode::OK, axum::Json(answer)).into_response()
}

/// `POST /{version}/{dataset_id}/events`: Meta's Conversions API.
async fn conversion_events(
    State(shared): State<Arc<Shared>>,
    Path((version, dataset_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_api_version(&version) || dataset_id.is_empty() || !dataset_id.bytes().all(|byte| byte.is_ascii_digit()) {
        return unknown_path_response(&format!("/{version}/{dataset_id}/events"));
    }
    let authorization = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    if !bearer_matches(authorization, &shared.access_token) {
        return meta_error(
            StatusCode::UNAUTHORIZED,
            "Invalid OAuth access token - Cannot parse access token",
            190,
            None,
        );
    }
    let request = match serde_json::from_slice::<Value>(&body) {
        Ok(value) => value,
        Err(error) => return invalid_parameter(&format!("The request body is not valid JSON: {error}")),
    };
    let events = match validate_conversions(&request) {
        Ok(events) => events,
        Err(details) => return invalid_parameter(&details),
    };
    let received = events.len();
    {
        let mut state = shared.state();
        if let Some(failure) = state.failures.pop_front() {
            let status = StatusCode::from_u16(failure.http_status).unwrap_or(StatusCode::BAD_REQUEST);
            return meta_error(status, &failure.message, failure.code, Some(&failure.message));
        }
        state.conversions.extend(events.into_iter().map(|event| Conversion { dataset_id: dataset_id.clone(), event }));
    }
    (StatusCode::OK, axum::Json(json!({"events_received": received, "messages": [], "fbtrace_id": fbtrace_id()})))
        .into_response()
}

/// `GET /emulator/conversions`: `{conversions: [{dataset_id, event}]}`.
async fn list_conversions(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    if !bearer_matches(authorization, &shared.access_token) {
        return meta_error(StatusCode::UNAUTHORIZED, "Invalid OAuth access token", 190, None);
    }
    let conversions = shared.state().conversions.clone();
    axum::Json(json!({ "conversions": conversions })).into_response()
}

/// The body Meta documents for business messaging events; the events, or
/// what is wrong.
fn validate_conversions(request: &Value) -> Result<Vec<Value>, String> {
    let Some(data) = request.get("data").and_then(Value::as_array) else {
        return Err("The parameter data is required and must be an array.".to_owned());
    };
    if data.is_empty() || data.len() > 1000 {
        return Err("Param data must hold 1 to 1000 events.".to_owned());
    }
    for (index, event) in data.iter().enumerate() {
        let text = |key: &str| event.get(key).and_then(Value::as_str).filter(|value| !value.trim().is_empty());
        if text("event_name").is_none() {
            return Err(format!("data[{index}]: event_name is required."));
        }
        if event.get("event_time").and_then(Value::as_i64).is_none_or(|time| time <= 0 || time > 99_999_999_999) {
            return Err(format!("data[{index}]: event_time must be a unix timestamp in seconds."));
        }
        if text("event_id").is_none() {
            return Err(format!("data[{index}]: event_id is required for deduplication."));
        }
        if text("action_source") != Some("business_messaging") {
            return Err(format!("data[{index}]: action_source must be business_messaging."));
        }
        if text("messaging_channel") != Some("whatsapp") {
            return Err(format!("data[{index}]: messaging_channel must be whatsapp."));
        }
        let user = |key: &str| {
            event.get("user_data").and_then(|user| user.get(key)).and_then(Value::as_str).filter(|v| !v.is_empty())
        };
        if user("whatsapp_business_account_id").is_none() || user("ctwa_clid").is_none() {
            return Err(format!("data[{index}]: user_data needs whatsapp_business_account_id and ctwa_clid."));
        }
        if let Some(custom) = event.get("custom_data") {
            let currency = custom.get("currency").and_then(Value::as_str);
            if currency.is_none_or(|code| code.len() != 3) || !custom.get("value").is_some_and(Value::is_number) {
                return Err(format!("data[{index}]: custom_data needs a currency (ISO 4217) and a numeric value."));
            }
        }
    }
    Ok(data.clone())
}

async fn unknown_path(uri: Uri) -> Response {
    unknown_path_response(uri.path())
}

fn unknown_path_response(path: &str) -> Response {
    meta_error(StatusCode::NOT_FOUND, &format!("Unknown path components: {path}"), 2500, None)
}

/// `vNN.0`, any number of digits.
fn is_api_version(version: &str) -> bool {
    version
        .strip_prefix('v')
        .and_then(|rest| rest.strip_suffix(".0"))
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()))
}

fn bearer_matches(authorization: Option<&str>, access_token: &str) -> bool {
    let Some(value) = authorization else {
        return false;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() && token.trim() == access_token
}

/// Meta's minimal checks on a send body; `Ok((to, type))`, or what is wrong.
fn validate(request: &Value) -> Result<(String, String), String> {
    let Some(object) = request.as_object() else {
        return Err("The request body must be a JSON object.".to_owned());
    };
    match object.get("messaging_product") {
        Some(Value::String(product)) if product == "whatsapp" => {}
        Some(_) => return Err("Param messaging_product must be \"whatsapp\".".to_owned()),
        None => return Err("The parameter messaging_product is required.".to_owned()),
    }
    let to = match object.get("to") {
        Some(Value::String(to)) if !to.trim().is_empty() => to.clone(),
        Some(_) => return Err("Param to must be a non-empty string.".to_owned()),
        None => return Err("The parameter to is required.".to_owned()),
    };
    let kind = match object.get("type") {
        None => "text".to_owned(),
        Some(Value::String(kind)) if KNOWN_TYPES.contains(&kind.as_str()) => kind.clone(),
        Some(other) => {
            return Err(format!("Param type must be one of {{{}}}, got {other}.", KNOWN_TYPES.join(", ")));
        }
    };
    let Some(content) = object.get(&kind).and_then(Value::as_object) else {
        return Err(format!("The parameter {kind} is required for a message of type {kind}."));
    };
    match kind.as_str() {
        "text" => match content.get("body") {
            Some(Value::String(body)) if body.trim().is_empty() => {
                return Err("Param text['body'] must not be empty.".to_owned());
            }
            Some(Value::String(body)) if body.chars().count() > MAX_TEXT_BODY => {
                return Err(format!("Param text['body'] must be at most {MAX_TEXT_BODY} characters long."));
            }
            Some(Value::String(_)) => {}
            _ => return Err("The parameter text['body'] is required and must be a string.".to_owned()),
        },
        "template" => {
            if content.get("name").and_then(Value::as_str).is_none_or(|name| name.trim().is_empty()) {
                return Err("The parameter template['name'] is required.".to_owned());
            }
            let code = content.get("language").and_then(|language| language.get("code")).and_then(Value::as_str);
            if code.is_none_or(|code| code.trim().is_empty()) {
                return Err("The parameter template['language']['code'] is required.".to_owned());
            }
        }
        _ => {}
    }
    Ok((to, kind))
}

fn invalid_parameter(details: &str) -> Response {
    meta_error(StatusCode::BAD_REQUEST, "(#100) Invalid parameter", 100, Some(details))
}

/// Meta's error envelope: `{"error":{"message","type","code","error_data"?,"fbtrace_id"}}`.
fn meta_error(status: StatusCode, message: &str, code: i64, details: Option<&str>) -> Response {
    let envelope = GraphErrorEnvelope {
        error: GraphError {
            message: message.to_owned(),
            kind: Some("OAuthException".to_owned()),
            code,
            error_subcode: None,
            error_data: details.map(|details| GraphErrorData {
                messaging_product: Some("whatsapp".to_owned()),
                details: Some(details.to_owned()),
            }),
            fbtrace_id: Some(fbtrace_id()),
            extra: Map::new(),
        },
    };
    (status, axum::Json(envelope)).into_response()
}

fn fbtrace_id() -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(27).map(char::from).collect()
}

/// A Meta-looking, unique message id: `wamid.` + base64 of a protobuf-like blob
/// holding the recipient, a counter (unique in this emulator) and random bits
/// (unique across emulators).
fn new_wamid(shared: &Shared, to: &str) -> String {
    let counter = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let random: u64 = rand::rng().random::<u64>() & 0xFF_FFFF_FFFF;
    let recipient = &to.as_bytes()[..to.len().min(32)];
    let mut raw = vec![0x1c, 0x18, recipient.len() as u8];
    raw.extend_from_slice(recipient);
    raw.extend_from_slice(&[0x15, 0x02, 0x00, 0x11, 0x18, 0x12]);
    raw.extend_from_slice(format!("{counter:08X}{random:010X}").as_bytes());
    raw.push(0x00);
    format!("wamid.{}", base64(&raw))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unix_seconds() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs() as i64).unwrap_or(0)
}

/// Posts the statuses of one accepted message, `status_delay_ms` apart, in order.
///
/// Only messages accepted while a webhook URL is set get statuses; each post goes
/// to the URL set at that moment, and the rest are dropped if it was cleared.
async fn post_statuses(
    shared: Arc<Shared>,
    phone_number_id: String,
    wamid: String,
    to: String,
    status_failure: Option<i64>,
) {
    let sequence: Vec<(&str, Option<Value>)> = match status_failure {
        Some(code) => vec![("sent", None), ("failed", Some(status_errors(code)))],
        None => vec![("sent", None), ("delivered", None), ("read", None)],
    };
    for (status, errors) in sequence {
        tokio::time::sleep(Duration::from_millis(shared.status_delay_ms)).await;
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Some(url) = shared.state().webhook_url.clone() else {
            return;
        };
        let payload = status_payload(&phone_number_id, &wamid, &to, status, errors);
        post_webhook(&shared, &url, &payload, &wamid, status).await;
    }
}

/// One signed webhook post, retried on connection errors and 5xx.
async fn post_webhook(shared: &Shared, url: &str, payload: &Value, wamid: &str, status: &str) {
    let body = match serde_json::to_vec(payload) {
        Ok(body) => Bytes::from(body),
        Err(error) => {
            tracing::warn!(%error, "emulator could not serialise a status webhook");
            return;
        }
    };
    let mut attempt = 0;
    loop {
        let result =
            crate::webhook::signed_post(&shared.client, url, shared.app_secret.as_bytes(), body.clone()).send().await;
        let problem = match result {
            Ok(response) if response.status().is_success() => return,
            Ok(response) if response.status().is_server_error() => format!("HTTP {}", response.status()),
            Ok(response) => {
                tracing::warn!(%url, %wamid, %status, http_status = %response.status(), "webhook receiver refused an emulator status");
                return;
            }
            Err(error) => error.to_string(),
        };
        if attempt >= WEBHOOK_RETRIES || shared.stopped.load(Ordering::SeqCst) {
            tracing::warn!(%url, %wamid, %status, %problem, attempts = attempt + 1, "emulator gave up posting a status webhook");
            return;
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::webhook::WebhookPayload;
    use tokio::sync::mpsc;

    const TOKEN: &str = "test-token";
    const SECRET: &str = "test-secret";
    const PNID: &str = "106540352242922";

    fn config(webhook_url: Option<String>) -> EmulatorConfig {
        EmulatorConfig {
            access_token: TOKEN.to_owned(),
            app_secret: SECRET.to_owned(),
            webhook_url,
            status_delay_ms: 1,
            send_statuses: true,
        }
    }

    async fn send(emulator: &Emulator, token: &str, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/{PNID}/messages", emulator.base_url()))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("emulator answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    fn text(to: &str, body: &str) -> Value {
        serde_json::to_value(protocol::graph::SendMessageRequest::text(to, body)).unwrap()
    }

    /// A webhook receiver on 127.0.0.1:0 forwarding (signature header, raw body).
    async fn receiver() -> (String, mpsc::UnboundedReceiver<(Option<String>, Bytes)>) {
        flaky_receiver(0).await
    }

    /// A receiver that answers 503 to its first `failures` posts (not forwarded).
    async fn flaky_receiver(failures: usize) -> (String, mpsc::UnboundedReceiver<(Option<String>, Bytes)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let refused = Arc::new(AtomicU64::new(0));
        let router = Router::new().route(
            "/webhooks/whatsapp",
            post(move |headers: HeaderMap, body: Bytes| {
                let (tx, refused) = (tx.clone(), refused.clone());
                async move {
                    if refused.fetch_add(1, Ordering::SeqCst) < failures as u64 {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let signature =
                        headers.get("x-hub-signature-256").and_then(|value| value.to_str().ok()).map(str::to_owned);
                    let _ = tx.send((signature, body));
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (format!("http://{addr}/webhooks/whatsapp"), rx)
    }

    /// The next webhook, signature checked, as (status, the status object).
    async fn next_status(rx: &mut mpsc::UnboundedReceiver<(Option<String>, Bytes)>) -> (String, Value) {
        let (signature, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a status webhook within 5 s")
            .expect("the receiver is alive");
        assert!(protocol::signature::verify(SECRET.as_bytes(), signature.as_deref(), &body), "bad signature");
        let payload = WebhookPayload::parse(&body).expect("Meta's shape");
        let value = payload.entry[0].changes[0].messages_value().unwrap();
        assert_eq!(value.metadata.phone_number_id, PNID);
        assert_eq!(value.statuses.len(), 1);
        let raw: Value = serde_json::from_slice(&body).unwrap();
        let status = raw["entry"][0]["changes"][0]["value"]["statuses"][0].clone();
        (value.statuses[0].status.clone(), status)
    }

    #[tokio::test]
    async fn good_text_send_is_accepted_and_captured() {
        let emulator = Emulator::start(EmulatorConfig { send_statuses: false, ..config(None) }).await.unwrap();
        assert!(emulator.base_url().starts_with("http://127.0.0.1:"));
        assert!(emulator.base_url().ends_with("/v23.0"));
        let (status, answer) = send(&emulator, TOKEN, text("919800000001", "hello")).await;
        assert_eq!(status, 200, "{answer}");
        let answer: SendMessageResponse = serde_json::from_value(answer).unwrap();
        assert_eq!(answer.messaging_product, "whatsapp");
        assert_eq!(answer.contacts, vec![SentContact { input: "919800000001".into(), wa_id: "919800000001".into() }]);
        let wamid = &answer.messages[0].id;
        assert!(wamid.starts_with("wamid.") && wamid.len() > 20, "{wamid}");
        assert!(wamid["wamid.".len()..].bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));

        let (_, second) = send(&emulator, TOKEN, text("919800000001", "again")).await;
        assert_ne!(second["messages"][0]["id"].as_str().unwrap(), wamid);

        let requests = emulator.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].phone_number_id, PNID);
        assert_eq!(requests[0].version, "v23.0");
        assert_eq!(requests[0].authorization.as_deref(), Some("Bearer test-token"));
        assert_eq!(requests[0].body["text"]["body"], "hello");
        assert_eq!(emulator.accepted_count(), 2);
    }

    #[tokio::test]
    async fn conversion_events_are_checked_recorded_and_listed() {
        let emulator = Emulator::start(config(None)).await.unwrap();
        let client = reqwest::Client::new();
        let url = format!("{}/1234567890/events", emulator.base_url());
        let event = json!({
            "event_name": "Purchase", "event_time": 1_700_000_000, "event_id": "cv1.Purchase",
            "action_source": "business_messaging", "messaging_channel": "whatsapp",
            "user_data": {"whatsapp_business_account_id": "102290129340398", "ctwa_clid": "ARAk"},
            "custom_data": {"currency": "INR", "value": 2500.0},
        });
        let post = |token: &str, body: Value| client.post(&url).bearer_auth(token).json(&body).send();
        let answer = post("wrong", json!({"data": [event.clone()]})).await.unwrap();
        assert_eq!(answer.status(), 401);
        let mut bad = event.clone();
        bad["action_source"] = json!("website");
        let answer = post(TOKEN, json!({"data": [bad]})).await.unwrap();
        assert_eq!(answer.status(), 400);
        let mut no_value = event.clone();
        no_value["custom_data"] = json!({"currency": "INR"});
        assert_eq!(post(TOKEN, json!({"data": [no_value]})).await.unwrap().status(), 400);
        let answer = post(TOKEN, json!({"data": [event.clone()]})).await.unwrap();
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["events_received"], 1);
        assert!(body["fbtrace_id"].is_string());
        assert_eq!(emulator.conversions(), [Conversion { dataset_id: "1234567890".into(), event: event.clone() }]);
        let listed: Value =
            client.get(emulator.conversions_url()).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
        assert_eq!(listed["conversions"][0]["event"], event);
        let status = client.get(emulator.conversions_url()).send().await.unwrap().status();
        assert_eq!(status, 401);
    }

    #[tokio::test]
    async fn wrong_token_is_401_code_190() {
        let emulator = Emulator::start(config(None)).await.unwrap();
        let (status, answer) = send(&emulator, "nope", text("919800000001", "hello")).await;
        assert_eq!(status, 401);
        let envelope: GraphErrorEnvelope = serde_json::from_value(answer).unwrap();
        assert_eq!(envelope.error.code, 190);
        assert_eq!(envelope.error.kind.as_deref(), Some("OAuthException"));
        assert_eq!(envelope.error.message, "Invalid OAuth access token - Cannot parse access token");
        assert!(envelope.error.fbtrace_id.is_some());
        // No header at all.
        let response = reqwest::Client::new()
            .post(format!("{}/{PNID}/messages", emulator.base_url()))
            .json(&text("919800000001", "hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);
        assert_eq!(emulator.requests().len(), 2, "refused sends are captured too");
        assert_eq!(emulator.requests()[1].authorization, None);
        assert_eq!(emulator.accepted_count(), 0);
    }

    #[tokio::test]
    async fn invalid_bodies_are_400_code_100() {
        let emulator = Emulator::start(config(None)).await.unwrap();
        let mut missing_to = text("919800000001", "hello");
        missing_to.as_object_mut().unwrap().remove("to");
        let (status, answer) = send(&emulator, TOKEN, missing_to).await;
        assert_eq!(status, 400);
        assert_eq!(answer["error"]["code"], 100);
        assert_eq!(answer["error"]["message"], "(#100) Invalid parameter");
        assert_eq!(answer["error"]["type"], "OAuthException");
        assert_eq!(answer["error"]["error_data"]["messaging_product"], "whatsapp");
        assert!(answer["error"]["error_data"]["details"].as_str().unwrap().contains("to"));

        for bad in [
            json!([1, 2]),
            json!({"messaging_product": "sms", "to": "1", "text": {"body": "x"}}),
            json!({"messaging_product": "whatsapp", "to": "", "text": {"body": "x"}}),
            json!({"messaging_product": "whatsapp", "to": "1", "text": {"body": ""}}),
            json!({"messaging_product": "whatsapp", "to": "1", "type": "image"}),
            json!({"messaging_product": "whatsapp", "to": "1", "type": "carrier_pigeon", "carrier_pigeon": {}}),
            json!({"messaging_product": "whatsapp", "to": "1", "type": "template", "template": {"name": "x"}}),
            json!({"messaging_product": "whatsapp", "to": "1", "type": "template",
                   "template": {"language": {"code": "en"}}}),
        ] {
            let (status, answer) = send(&emulator, TOKEN, bad.clone()).await;
            assert_eq!((status, answer["error"]["code"].as_i64()), (400, Some(100)), "{bad} -> {answer}");
        }

        // Not JSON at all.
        let response = reqwest::Client::new()
            .post(format!("{}/{PNID}/messages", emulator.base_url()))
            .bearer_auth(TOKEN)
            .body("not json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        assert_eq!(emulator.requests().last().unwrap().body, json!("not json"));

        // Type defaults to text; a template with name and language is fine.
        let defaulted = json!({"messaging_product": "whatsapp", "to": "1", "text": {"body": "x"}});
        assert_eq!(send(&emulator, TOKEN, defaulted).await.0, 200);
        let template = serde_json::to_value(protocol::graph::SendMessageRequest::template(
            "1",
            "order_update",
            "en_US",
            &["42".to_owned()],
        ))
        .unwrap();
        assert_eq!(send(&emulator, TOKEN, template).await.0, 200);
        assert_eq!(emulator.accepted_count(), 2);
    }

    #[tokio::test]
    async fn versions_and_unknown_paths() {
        let emulator = Emulator::start(config(None)).await.unwrap();
        let client = reqwest::Client::new();
        let base = format!("http://{}", emulator.addr());
        for version in ["v26.0", "v9.0", "v100.0"] {
            let response = client
                .post(format!("{base}/{version}/{PNID}/messages"))
                .bearer_auth(TOKEN)
                .json(&text("1", "x"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200, "{version}");
        }
        for path in [format!("/v23/{PNID}/messages"), format!("/23.0/{PNID}/messages"), "/v23.0/x/other".to_owned()] {
            let response =
                client.post(format!("{base}{path}")).bearer_auth(TOKEN).json(&text("1", "x")).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 404, "{path}");
            let answer: GraphErrorEnvelope = response.json().await.unwrap();
            assert_eq!(answer.error.kind.as_deref(), Some("OAuthException"));
        }
    }

    #[tokio::test]
    async fn injected_failures_then_success() {
        let emulator = Emulator::start(config(None)).await.unwrap();
        let throttled = Failure { http_status: 429, code: 130429, message: "(#130429) Rate limit hit".into() };
        emulator.fail_next(throttled, 2);
        for _ in 0..2 {
            let (status, answer) = send(&emulator, TOKEN, text("919800000001", "hello")).await;
            assert_eq!(status, 429);
            let envelope: GraphErrorEnvelope = serde_json::from_value(answer).unwrap();
            assert_eq!(envelope.error.code, 130429);
            assert_eq!(envelope.error.message, "(#130429) Rate limit hit");
        }
        let (status, answer) = send(&emulator, TOKEN, text("919800000001", "hello")).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(emulator.accepted_count(), 1);
        assert_eq!(emulator.requests().len(), 3);

        emulator.fail_next(Failure { http_status: 400, code: 131047, message: "Re-engagement message".into() }, 1);
        let (status, answer) = send(&emulator, TOKEN, text("919800000001", "hello")).await;
        assert_eq!((status, answer["error"]["code"].as_i64()), (400, Some(131047)));
        assert_eq!(send(&emulator, TOKEN, text("919800000001", "hello")).await.0, 200);
    }

    #[tokio::test]
    async fn a_limit_after_n_sends_refuses_every_later_one_until_cleared() {
        let emulator = Emulator::start(config(None)).await.unwrap();
        emulator.set_time_source(Arc::new(|| 42));
        let spam = Failure { http_status: 400, code: 131048, message: "Spam rate limit hit".into() };
        emulator.limit_after(2, spam);
        let statuses: Vec<u16> = statuses_of_sends(&emulator, 4).await;
        assert_eq!(statuses, [200, 200, 400, 400]);
        emulator.clear_limit();
        assert_eq!(send(&emulator, TOKEN, text("919800000001", "hello")).await.0, 200);
        assert!(emulator.requests().iter().all(|request| request.at_ms == 42), "stamped by the time source");
    }

    async fn statuses_of_sends(emulator: &Emulator, sends: usize) -> Vec<u16> {
        let mut statuses = Vec::new();
        for _ in 0..sends {
            statuses.push(send(emulator, TOKEN, text("919800000001", "hello")).await.0);
        }
        statuses
    }

    #[tokio::test]
    async fn statuses_arrive_signed_and_in_order() {
        let (url, mut rx) = receiver().await;
        let emulator = Emulator::start(config(Some(url))).await.unwrap();
        let (status, answer) = send(&emulator, TOKEN, text("919800000001", "hello")).await;
        assert_eq!(status, 200);
        let wamid = answer["messages"][0]["id"].as_str().unwrap().to_owned();
        for expected in ["sent", "delivered", "read"] {
            let (status, object) = next_status(&mut rx).await;
            assert_eq!(status, expected);
            assert_eq!(object["id"], wamid.as_str());
            assert_eq!(object["recipient_id"], "919800000001");
            assert!(object["timestamp"].as_str().unwrap().parse::<i64>().unwrap() > 1_700_000_000);
            assert_eq!(
                object["pricing"],
                json!({"billable": false, "pricing_model": "PMP", "category": "service", "type": "free_customer_service"})
            );
        }
    }

    #[tokio::test]
    async fn fail_status_for_gives_sent_then_failed() {
        let (url, mut rx) = receiver().await;
        let emulator = Emulator::start(config(Some(url))).await.unwrap();
        emulator.fail_status_for("919800000002", 131047);
        let (status, answer) = send(&emulator, TOKEN, text("919800000002", "hello")).await;
        assert_eq!(status, 200, "accepted first, failed later");
        let wamid = answer["messages"][0]["id"].as_str().unwrap().to_owned();
        let (first, _) = next_status(&mut rx).await;
        assert_eq!(first, "sent");
        let (second, object) = next_status(&mut rx).await;
        assert_eq!(second, "failed");
        assert_eq!(object["id"], wamid.as_str());
        assert_eq!(object["errors"][0]["code"], 131047);
        assert!(object["errors"][0]["title"].is_string());
        assert!(object["errors"][0]["message"].is_string());
        assert!(object["errors"][0]["error_data"]["details"].is_string());
    }

    #[tokio::test]
    async fn no_statuses_without_a_webhook_url_until_one_is_set() {
        let (url, mut rx) = receiver().await;
        let emulator = Emulator::start(config(None)).await.unwrap();
        assert_eq!(send(&emulator, TOKEN, text("1", "first")).await.0, 200);
        emulator.set_webhook_url(Some(url));
        let (_, answer) = send(&emulator, TOKEN, text("1", "second")).await;
        let (status, object) = next_status(&mut rx).await;
        assert_eq!(status, "sent");
        assert_eq!(object["id"], answer["messages"][0]["id"], "the first message got no statuses");
    }

    #[tokio::test]
    async fn status_posts_are_retried_on_5xx() {
        let (url, mut rx) = flaky_receiver(2).await;
        let emulator = Emulator::start(config(Some(url))).await.unwrap();
        let (_, answer) = send(&emulator, TOKEN, text("1", "hello")).await;
        let (status, object) = next_status(&mut rx).await;
        assert_eq!(status, "sent", "the first status survives two 503s");
        assert_eq!(object["id"], answer["messages"][0]["id"]);
        assert_eq!(next_status(&mut rx).await.0, "delivered");
        assert_eq!(next_status(&mut rx).await.0, "read");
    }

    #[test]
    fn inbound_text_payload_is_meta_shaped() {
        let referral = json!({"source_type": "ad", "source_id": "120", "ctwa_clid": "abc", "headline": "Sale"});
        let payload =
            inbound_text_payload(PNID, "919800000001", "Ravi", "wamid.IN1", "hi ref:X", 1_795_514_400, Some(referral));
        let parsed = WebhookPayload::parse(&serde_json::to_vec(&payload).unwrap()).unwrap();
        let value = parsed.entry[0].changes[0].messages_value().unwrap();
        assert_eq!(value.metadata.phone_number_id, PNID);
        assert_eq!(value.contacts[0].wa_id.as_deref(), Some("919800000001"));
        assert_eq!(value.contacts[0].profile.as_ref().unwrap().name.as_deref(), Some("Ravi"));
        let message = &value.messages[0];
        assert_eq!((message.id.as_str(), message.kind.as_str()), ("wamid.IN1", "text"));
        assert_eq!(message.sender_key(), Some("919800000001"));
        assert_eq!(message.timestamp, "1795514400");
        assert_eq!(message.display_text().as_deref(), Some("hi ref:X"));
        assert_eq!(message.referral.as_ref().unwrap().ctwa_clid.as_deref(), Some("abc"));

        let plain = inbound_text_payload(PNID, "1", "A", "wamid.IN2", "hello", 1, None);
        assert!(plain["entry"][0]["changes"][0]["value"]["messages"][0].get("referral").is_none());
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let emulator = Emulator::start(config(None)).await.unwrap();
        let url = format!("{}/{PNID}/messages", emulator.base_url());
        emulator.shutdown();
        emulator.shutdown();
        // Fresh connections only: wait (bounded) until the port refuses.
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
                if client.post(&url).bearer_auth(TOKEN).json(&text("1", "x")).send().await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the emulator stops within 5 s");
    }
}
