//! HTTP surface (contract §2, §5, §6): the webhook, health, metrics, the REST
//! API, the WebSocket upgrade and the web console.

use std::sync::Arc;

use actors::System;
use actors::conversation::RequestKind;
use actors::shared::Principal;
use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use protocol::model::ConversationStatus;
use protocol::webhook::{ContactProfile, WebhookPayload};
use protocol::ws::TemplateRequest;
use protocol::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use storage::{ConversationFilter, IngestMessage, IngestOutcome, IngestStatus, Op};

use crate::server::AppState;
use crate::signature;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/webhooks/whatsapp", get(verify_subscription).post(receive_webhook))
        .route("/ws", get(crate::ws::upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/conversations", get(list_conversations))
        .route("/api/v1/conversations/{id}", get(get_conversation))
        .route("/api/v1/conversations/{id}/{action}", post(conversation_action))
        .merge(crate::contacts_http::routes())
        .merge(crate::admin_http::routes())
        .merge(crate::reports_http::routes())
        .route("/api/v1/workload", get(workload))
        .merge(crate::audit_http::routes())
        .merge(crate::dispositions_http::routes())
        .merge(crate::outbox_http::routes())
        .merge(crate::broadcasts_http::routes())
        .merge(crate::assist_http::routes())
        .route("/", get(|State(state): State<Arc<AppState>>| console_page(state, "dashboard.html")))
        .route("/agent", get(|State(state): State<Arc<AppState>>| console_page(state, "agent.html")))
        .fallback(|| async { error_response(ApiError::not_found("no such endpoint; see docs/API.md")) })
        .layer(axum::middleware::map_response(contract_errors))
        .with_state(state)
}

/// A console page: the copy compiled in, or, with `server.console_dir` set
/// (for working on the pages without a rebuild), the file of that name there.
async fn console_page(state: Arc<AppState>, name: &'static str) -> Response {
    let compiled = match name {
        "dashboard.html" => include_str!("../assets/dashboard.html"),
        _ => include_str!("../assets/agent.html"),
    };
    let Some(dir) = &state.config.server.console_dir else {
        return Html(compiled).into_response();
    };
    match tokio::fs::read_to_string(dir.join(name)).await {
        Ok(page) => Html(page).into_response(),
        Err(error) => {
            tracing::warn!(%error, dir = %dir.display(), name, "server.console_dir: the page cannot be read");
            error_response(ApiError::unavailable(format!(
                "{name} cannot be read from server.console_dir ({error}); unset it to serve the built-in page"
            )))
        }
    }
}

/// Refusals made by the framework rather than a handler (a method a path
/// does not take, an extractor that cannot read the request) come as plain
/// text or an empty body: they become the contract's JSON here, with a §4
/// status (docs/API.md "Errors"). Handlers' own errors are JSON already.
async fn contract_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let allow: Option<Vec<String>> =
        response.headers().get(header::ALLOW).and_then(|value| value.to_str().ok()).map(|value| {
            value.split(',').map(|method| method.trim().to_owned()).filter(|method| !method.is_empty()).collect()
        });
    let text = axum::body::to_bytes(response.into_body(), 16 * 1024)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let mut answer = error_response(framework_error(status, allow.as_deref(), &text));
    if let Some(allow) = allow
        && let Ok(value) = HeaderValue::from_str(&allow.join(", "))
    {
        answer.headers_mut().insert(header::ALLOW, value);
    }
    answer
}

/// The contract's error for a framework refusal with `status`. The contract
/// has no 405 or 413: an unsupported method is `not_found` (no endpoint
/// answers that method on that path), a body too large is `bad_request`.
fn framework_error(status: StatusCode, allow: Option<&[String]>, text: &str) -> ApiError {
    let said = if text.is_empty() { String::new() } else { format!(" ({text})") };
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = allow.unwrap_or_default();
            ApiError::not_found(format!("this path does not take that method; it takes {}", allow.join(", ")))
                .with_detail(json!({ "allow": allow }))
        }
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::bad_request(format!(
            "the body is larger than this endpoint takes{said}; see docs/CONFIGURATION.md"
        )),
        StatusCode::UNAUTHORIZED => ApiError::new(ErrorCode::Unauthorized, format!("authentication failed{said}")),
        StatusCode::FORBIDDEN => ApiError::forbidden(format!("not allowed{said}")),
        StatusCode::NOT_FOUND => ApiError::not_found(format!("no such endpoint{said}; see docs/API.md")),
        StatusCode::TOO_MANY_REQUESTS => {
            ApiError::new(ErrorCode::RateLimited, format!("too many requests{said}; retry later"))
        }
        StatusCode::BAD_GATEWAY => ApiError::new(ErrorCode::UpstreamError, format!("upstream failure{said}")),
        status if status.is_server_error() => {
            tracing::error!(%status, text, "framework error");
            ApiError::unavailable("the server could not handle this request; retry shortly")
        }
        _ => ApiError::bad_request(format!("the request cannot be read{said}; see docs/API.md")),
    }
}

/// A body larger than `limit` bytes, refused before it is read (or as soon
/// as it passes the limit).
fn body_too_large(limit: usize, key: &str) -> ApiError {
    ApiError::bad_request(format!("the body is larger than {limit} bytes, the most this endpoint takes ({key})"))
        .with_detail(json!({ "limit_bytes": limit }))
}

/// The announced `Content-Length`, when there is one.
fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Reads a whole body of at most `limit` bytes within the body read timeout.
/// A `Content-Length` above the limit is refused before anything is read.
pub(crate) async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    key: &str,
) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let announced = content_length(headers);
    if announced.is_some_and(|length| length > limit) {
        return Err(body_too_large(limit, key));
    }
    let timeout_ms = state.config.server.body_read_timeout_ms;
    let read = async {
        let mut collected = Vec::with_capacity(announced.unwrap_or(0));
        let mut chunks = body.into_data_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|error| ApiError::bad_request(format!("the body could not be read: {error}")))?;
            if collected.len() + chunk.len() > limit {
                return Err(body_too_large(limit, key));
            }
            collected.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(collected))
    };
    tokio::time::timeout(std::time::Duration::from_millis(timeout_ms), read).await.unwrap_or_else(|_| {
        Err(ApiError::bad_request(format!(
            "the body did not arrive in full within {timeout_ms} ms (server.body_read_timeout_ms)"
        )))
    })
}

/// Parses the query string into `T` once the caller is authenticated, or a
/// `bad_request` naming the parameter.
pub fn parse_query<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri).map(|Query(query)| query).map_err(|rejection| {
        ApiError::bad_request(format!("the query string cannot be read: {}", rejection.body_text()))
    })
}

/// An error as the contract's JSON body with its HTTP status.
pub fn error_response(error: ApiError) -> Response {
    let status = StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(error)).into_response()
}

fn not_ready() -> ApiError {
    ApiError::unavailable("the engine is still starting (recovering its store); retry shortly")
}

fn system(state: &AppState) -> Result<&Arc<System>, ApiError> {
    state.system().ok_or_else(not_ready)
}

#[derive(Deserialize)]
struct Subscription {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

async fn verify_subscription(State(state): State<Arc<AppState>>, Query(query): Query<Subscription>) -> Response {
    let token_ok = query
        .verify_token
        .as_deref()
        .is_some_and(|token| crate::auth::same_secret(&state.config.whatsapp.verify_token, token));
    match (query.mode.as_deref(), token_ok, query.challenge) {
        (Some("subscribe"), true, Some(challenge)) => {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], challenge).into_response()
        }
        _ => error_response(ApiError::forbidden(
            "verification failed: hub.mode must be subscribe and hub.verify_token must equal whatsapp.verify_token",
        )),
    }
}

async fn receive_webhook(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let limit = state.config.server.webhook_max_body_bytes;
    if content_length(&headers).is_some_and(|length| length > limit) {
        metrics::counter!(crate::metrics::WEBHOOKS_TOTAL, "outcome" => "too_large").increment(1);
        return error_response(body_too_large(limit, "server.webhook_max_body_bytes"));
    }
    // Bodies held at once are bounded: the announced size (or the limit,
    // for a body of unknown size) is reserved before the body is read and
    // kept until the answer. Past the bound Meta gets 503 at once, and retries.
    let reserved_kib = content_length(&headers).unwrap_or(limit).div_ceil(1024);
    let Ok(_reservation) = state.webhook_kib_in_flight.clone().try_acquire_many_owned(reserved_kib as u32) else {
        metrics::counter!(crate::metrics::WEBHOOKS_TOTAL, "outcome" => "busy").increment(1);
        return error_response(ApiError::unavailable(
            "too many webhook bytes are being received at once (server.webhook_bytes_in_flight); retry shortly",
        ));
    };
    let body = match read_body(&state, &headers, body, limit, "server.webhook_max_body_bytes").await {
        Ok(body) => body,
        Err(error) => {
            metrics::counter!(crate::metrics::WEBHOOKS_TOTAL, "outcome" => "bad_body").increment(1);
            return error_response(error);
        }
    };
    let signature_header = headers.get("x-hub-signature-256").and_then(|value| value.to_str().ok());
    if !signature::verify(state.config.whatsapp.app_secret.as_bytes(), signature_header, &body) {
        metrics::counter!(crate::metrics::WEBHOOKS_TOTAL, "outcome" => "bad_signature").increment(1);
        return error_response(ApiError::new(
            ErrorCode::Unauthorized,
            "X-Hub-Signature-256 is missing or does not match the body; check whatsapp.app_secret",
        ));
    }
    let ops = match webhook_ops(&body) {
        Ok(ops) => ops,
        Err(error) => {
            metrics::counter!(crate::metrics::WEBHOOKS_TOTAL, "outcome" => "bad_request").increment(1);
            return error_response(error);
        }
    };
    let Some(system) = state.system() else {
        return error_response(not_ready());
    };
    let started = std::time::Instant::now();
    match system.ingest(ops).await {
        Ok(outcome) => {
            metrics::histogram!(crate::metrics::WEBHOOK_INGEST_SECONDS).record(started.elapsed().as_secs_f64());
            metrics::counter!(crate::metrics::WEBHOOKS_TOTAL, "outcome" => "ok").increment(1);
            let count =
                |wanted: fn(&IngestOutcome) -> bool| outcome.ingested.iter().filter(|item| wanted(item)).count();
            Json(json!({
                "accepted": count(|item| matches!(item, IngestOutcome::Accepted { .. } | IngestOutcome::Pending | IngestOutcome::Kept)),
                "duplicates": count(|item| matches!(item, IngestOutcome::Duplicate)),
            }))
            .into_response()
        }
        Err(error) => {
            metrics::counter!(crate::metrics::WEBHOOKS_TOTAL, "outcome" => "store_error").increment(1);
            tracing::error!(%error, "webhook not stored");
            error_response(ApiError::unavailable("the payload could not be stored; Meta will retry"))
        }
    }
}

/// Turns a webhook body into store operations, checking everything before
/// anything is stored: a payload is taken whole or refused whole.
fn webhook_ops(body: &[u8]) -> Result<Vec<Op>, ApiError> {
    let payload = WebhookPayload::parse(body).map_err(|error| ApiError::bad_request(error.to_string()))?;
    let mut ops = Vec::new();
    for entry in &payload.entry {
        for change in &entry.changes {
            if change.field != "messages" {
                ops.push(Op::IngestOtherChange(serde_json::to_value(change).unwrap_or(Value::Null)));
                continue;
            }
            let value = change.messages_value().map_err(|error| ApiError::bad_request(error.to_string()))?;
            let phone_number_id = value.metadata.phone_number_id.clone();
            for message in &value.messages {
                let contact_key = message.sender_key().ok_or_else(|| {
                    ApiError::bad_request(format!("message {} has neither `from` nor `from_user_id`", message.id))
                })?;
                if message.id.is_empty() {
                    return Err(ApiError::bad_request("a message has an empty `id`"));
                }
                let contact = value
                    .contacts
                    .iter()
                    .find(|contact| {
                        contact.wa_id.as_deref() == Some(contact_key) || contact.user_id.as_deref() == Some(contact_key)
                    })
                    .or(value.contacts.first())
                    .cloned()
                    .map(|contact: ContactProfile| contact);
                ops.push(Op::IngestMessage(IngestMessage {
                    phone_number_id: phone_number_id.clone(),
                    contact_key: contact_key.to_owned(),
                    contact,
                    message: Box::new(message.clone()),
                }));
            }
            for status in &value.statuses {
                ops.push(Op::IngestStatus(IngestStatus {
                    phone_number_id: phone_number_id.clone(),
                    status: status.clone(),
                }));
            }
            if value.messages.is_empty() && value.statuses.is_empty() {
                ops.push(Op::IngestOtherChange(serde_json::to_value(change).unwrap_or(Value::Null)));
            }
        }
    }
    Ok(ops)
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.system() {
        Some(_) => "ready".into_response(),
        None => error_response(not_ready()),
    }
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let server = &state.config.server;
    let presented = crate::auth::bearer(&headers);
    let allowed = server.metrics_public
        || presented.is_some_and(|token| {
            server.metrics_token.as_deref().is_some_and(|expected| crate::auth::same_secret(expected, token))
                || crate::auth::principal(&state, token)
                    .is_ok_and(|principal| principal.is_some_and(|principal| principal.role.sees_everything()))
        });
    if !allowed {
        return error_response(ApiError::new(
            ErrorCode::Unauthorized,
            "/metrics needs a manager's or admin's Bearer token, or server.metrics_token",
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// The authenticated caller of a REST request.
pub(crate) fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    crate::auth::authenticate(state, headers, None)
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    team: Option<String>,
    agent: Option<String>,
    contact: Option<String>,
    limit: Option<usize>,
    before: Option<String>,
}

async fn list_conversations(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    let request = (|| {
        let principal = principal(&state, &headers)?;
        let query: ListQuery = parse_query(&uri)?;
        let system = system(&state)?.clone();
        let status = match query.status.as_deref() {
            None | Some("") => None,
            Some(text) => {
                Some(serde_json::from_value::<ConversationStatus>(Value::String(text.to_owned())).map_err(|_| {
                    ApiError::bad_request(format!("`status` must be bot, queued, assigned or closed, not {text:?}"))
                })?)
            }
        };
        let limit = query.limit.unwrap_or(1000);
        if limit == 0 || limit > 1000 {
            return Err(ApiError::bad_request("`limit` must be between 1 and 1000"));
        }
        let agent =
            if principal.role.sees_everything() { query.agent.clone() } else { Some(principal.agent_id.clone()) };
        let filter = ConversationFilter {
            status,
            team: query.team.clone(),
            teams: system.scope(&principal),
            agent,
            contact: query.contact.clone(),
            before: query.before.clone(),
            limit,
        };
        Ok((system, filter))
    })();
    let (system, filter) = match request {
        Ok(request) => request,
        Err(error) => return error_response(error),
    };
    // A list reads a range: first let the store's tables catch up with its
    // journal (usually they have), without blocking a runtime thread.
    // While the store cannot write (a full disk) that refuses at once.
    let listed = match system.reader().caught_up().await {
        Ok(reader) => reader.list_conversations(&filter),
        Err(error) => Err(error),
    };
    match listed {
        Ok(records) => {
            let conversations: Vec<_> = records.into_iter().map(|record| record.conversation).collect();
            Json(json!({ "conversations": conversations })).into_response()
        }
        Err(error) => error_response(store_error(error)),
    }
}

/// The workload a manager limited to `teams` sees: those teams, and the
/// agents in any of them.
pub(crate) fn scoped_workload(
    mut workload: protocol::ws::Workload,
    teams: Option<&[String]>,
) -> protocol::ws::Workload {
    if let Some(teams) = teams {
        workload.teams.retain(|team| teams.contains(&team.id));
        workload.agents.retain(|agent| agent.teams.iter().any(|team| teams.contains(team)));
    }
    workload
}

fn store_error(error: storage::StorageError) -> ApiError {
    tracing::error!(%error, "store read failed");
    ApiError::unavailable("the store could not be read; try again")
}

async fn get_conversation(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let result = (|| {
        let principal = principal(&state, &headers)?;
        let system = system(&state)?;
        let record = system
            .reader()
            .conversation(&id)
            .map_err(store_error)?
            .ok_or_else(|| ApiError::not_found(format!("no conversation {id}")))?;
        if !principal.role.sees_everything()
            && record.conversation.agent.as_deref() != Some(principal.agent_id.as_str())
        {
            return Err(ApiError::forbidden(format!("conversation {id} is not assigned to you")));
        }
        if let Some(teams) = system.scope(&principal)
            && record.conversation.team.as_ref().is_none_or(|team| !teams.contains(team))
        {
            return Err(ApiError::forbidden(format!("conversation {id} is not in a team you manage")));
        }
        let messages = system.reader().messages_counted(&id, record.message_count).map_err(store_error)?;
        let contact = system.reader().contact(&record.conversation.contact.wa_id).map_err(store_error)?;
        let mut conversation = record.conversation;
        conversation.messages = Some(messages.into_iter().map(|stored| stored.message).collect());
        let Some(contact) = contact else { return Ok(Json(conversation).into_response()) };
        // The contact's record (PROTOCOL §8) on its `contact` object.
        let mut conversation = serde_json::to_value(conversation).map_err(|error| {
            tracing::error!(%error, "a conversation could not be encoded");
            ApiError::unavailable("the conversation could not be shown; try again")
        })?;
        crate::contacts_http::add_to_conversation(&mut conversation, &contact);
        Ok(Json(conversation).into_response())
    })();
    result.unwrap_or_else(error_response)
}

/// Parses a JSON request body into `T`, or a `bad_request` naming the problem.
fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| ApiError::bad_request(format!("the JSON body is not valid: {error}")))
}

async fn conversation_request(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    kind: impl FnOnce() -> Result<RequestKind, ApiError>,
) -> Response {
    let outcome = async {
        let principal = principal(state, headers)?;
        let system = system(state)?;
        let kind = kind()?;
        system.request(principal, id, kind).await
    }
    .await;
    match outcome {
        Ok(body) => Json(Value::Object(body)).into_response(),
        Err(error) => error_response(error),
    }
}

#[derive(Deserialize)]
struct TextBody {
    text: String,
}

#[derive(Deserialize)]
struct TemplateBody {
    template: TemplateRequest,
}

#[derive(Deserialize)]
struct FieldsBody {
    #[serde(default)]
    fields: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct TransferBody {
    team: Option<String>,
    agent: Option<String>,
    note: Option<String>,
}

/// `POST /api/v1/conversations/{id}/{action}`: the WebSocket requests, for integrations.
async fn conversation_action(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Body,
) -> Response {
    // Who asks comes before what they send.
    if let Err(error) = principal(&state, &headers) {
        return error_response(error);
    }
    let limit = state.config.server.max_body_bytes;
    let body = match read_body(&state, &headers, body, limit, "server.max_body_bytes").await {
        Ok(body) => body,
        Err(error) => return error_response(error),
    };
    if action == "payments" {
        return record_payment(&state, &headers, &id, &body).await;
    }
    conversation_request(&state, &headers, &id, || request_kind(&action, &body)).await
}

/// `POST /api/v1/conversations/{id}/payments` `{amount, at?}`: a payment
/// recorded for integrations (docs/followups.md); it cancels the
/// conversation's promise-to-pay follow-ups.
async fn record_payment(state: &AppState, headers: &HeaderMap, id: &str, body: &Bytes) -> Response {
    let outcome = async {
        let principal = principal(state, headers)?;
        let system = system(state)?;
        let body: Value = parse_body(body)?;
        let payment = actors::followups::parse_payment(&body)?;
        system.record_payment(&principal, id, payment).await
    }
    .await;
    match outcome {
        Ok(body) => Json(Value::Object(body)).into_response(),
        Err(error) => error_response(error),
    }
}

fn request_kind(action: &str, body: &Bytes) -> Result<RequestKind, ApiError> {
    match action {
        "messages" => Ok(RequestKind::Send { text: parse_body::<TextBody>(body)?.text }),
        "templates" => Ok(RequestKind::SendTemplate { template: parse_body::<TemplateBody>(body)?.template }),
        "fields" => {
            let fields =
                parse_body::<FieldsBody>(body)?.fields.ok_or_else(|| ApiError::bad_request("`fields` is required"))?;
            Ok(RequestKind::SetFields { fields })
        }
        "close" => {
            let fields = if body.is_empty() { None } else { parse_body::<FieldsBody>(body)?.fields };
            Ok(RequestKind::Close { fields })
        }
        "transfer" => {
            let transfer = parse_body::<TransferBody>(body)?;
            Ok(RequestKind::Transfer { team: transfer.team, agent: transfer.agent, note: transfer.note })
        }
        _ => Err(ApiError::not_found(format!(
            "no action {action:?} on a conversation; use messages, templates, fields, close, transfer or payments"
        ))),
    }
}

async fn workload(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let outcome = async {
        let principal = principal(&state, &headers)?;
        if !principal.role.sees_everything() {
            return Err(ApiError::forbidden("the workload view is for managers and admins"));
        }
        let system = system(&state)?;
        let workload = scoped_workload(system.workload().await, system.scope(&principal).as_deref());
        let mut frame = serde_json::to_value(workload).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut frame {
            map.insert("type".to_owned(), Value::String("workload".to_owned()));
        }
        Ok(Json(frame).into_response())
    }
    .await;
    outcome.unwrap_or_else(error_response)
}
