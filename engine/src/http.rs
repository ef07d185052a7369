//! HTTP surface (contract §2, §5, §6): the webhook, health, metrics, the REST
//! API, the WebSocket upgrade and the web console.

use std::sync::Arc;

use actors::System;
use actors::conversation::RequestKind;
use actors::shared::Principal;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
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
        .route("/api/v1/workload", get(workload))
        .route("/", get(|| async { Html(include_str!("../assets/dashboard.html")) }))
        .route("/agent", get(|| async { Html(include_str!("../assets/agent.html")) }))
        .fallback(|| async { error_response(ApiError::not_found("no such endpoint; see docs/API.md")) })
        .with_state(state)
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
    let token_ok = query.verify_token.as_deref().is_some_and(|token| {
        use subtle::ConstantTimeEq;
        bool::from(token.as_bytes().ct_eq(state.config.whatsapp.verify_token.as_bytes()))
    });
    match (query.mode.as_deref(), token_ok, query.challenge) {
        (Some("subscribe"), true, Some(challenge)) => {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], challenge).into_response()
        }
        _ => (StatusCode::FORBIDDEN, "verification failed").into_response(),
    }
}

async fn receive_webhook(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let signature_header = headers.get("x-hub-signature-256").and_then(|value| value.to_str().ok());
    if !signature::verify(state.config.whatsapp.app_secret.as_bytes(), signature_header, &body) {
        metrics::counter!("switchboard_webhooks_total", "outcome" => "bad_signature").increment(1);
        return error_response(ApiError::new(
            ErrorCode::Unauthorized,
            "X-Hub-Signature-256 is missing or does not match the body; check whatsapp.app_secret",
        ));
    }
    let ops = match webhook_ops(&body) {
        Ok(ops) => ops,
        Err(error) => {
            metrics::counter!("switchboard_webhooks_total", "outcome" => "bad_request").increment(1);
            return error_response(error);
        }
    };
    let Some(system) = state.system() else {
        return error_response(not_ready());
    };
    let started = std::time::Instant::now();
    match system.ingest(ops).await {
        Ok(outcome) => {
            metrics::histogram!("switchboard_webhook_ingest_seconds").record(started.elapsed().as_secs_f64());
            metrics::counter!("switchboard_webhooks_total", "outcome" => "ok").increment(1);
            let count =
                |wanted: fn(&IngestOutcome) -> bool| outcome.ingested.iter().filter(|item| wanted(item)).count();
            Json(json!({
                "accepted": count(|item| matches!(item, IngestOutcome::Accepted { .. } | IngestOutcome::Pending | IngestOutcome::Kept)),
                "duplicates": count(|item| matches!(item, IngestOutcome::Duplicate)),
            }))
            .into_response()
        }
        Err(error) => {
            metrics::counter!("switchboard_webhooks_total", "outcome" => "store_error").increment(1);
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
            server.metrics_token.as_deref() == Some(token)
                || state.tokens.principal(token).is_some_and(|principal| principal.role.sees_everything())
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
fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    state.tokens.authenticate(headers, None)
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

async fn list_conversations(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let request = (|| {
        let principal = principal(&state, &headers)?;
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
        let messages = system.reader().messages_counted(&id, record.message_count).map_err(store_error)?;
        let mut conversation = record.conversation;
        conversation.messages = Some(messages.into_iter().map(|stored| stored.message).collect());
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
}

/// `POST /api/v1/conversations/{id}/{action}`: the WebSocket requests, for integrations.
async fn conversation_action(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    conversation_request(&state, &headers, &id, || request_kind(&action, &body)).await
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
            Ok(RequestKind::Transfer { team: transfer.team, agent: transfer.agent })
        }
        _ => Err(ApiError::not_found(format!(
            "no action {action:?} on a conversation; use messages, templates, fields, close or transfer"
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
        let mut frame = serde_json::to_value(system.workload().await).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut frame {
            map.insert("type".to_owned(), Value::String("workload".to_owned()));
        }
        Ok(Json(frame).into_response())
    }
    .await;
    outcome.unwrap_or_else(error_response)
}
