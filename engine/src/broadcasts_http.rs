//! The broadcasts' API (PROTOCOL §10, docs/broadcasts.md):
//! `POST /api/v1/broadcasts` creates one (the audience resolved and
//! checked for opt-outs here, then stored by the task before its id is
//! answered), `GET /api/v1/broadcasts` lists them without recipients,
//! `GET /api/v1/broadcasts/{id}` shows one with every recipient, and
//! `POST /api/v1/broadcasts/{id}/resume` sends on after Meta's messaging
//! limit paused it. Managers and admins; a manager limited to teams
//! (`manages`) broadcasts to, and sees, audiences filtered by its teams.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use protocol::ApiError;
use serde_json::{Value, json};

use crate::broadcasts::decide::{self, BroadcastRecord, BroadcastState, RecipientRecord, RecipientState};
use crate::broadcasts::{BroadcastView, Broadcasts, NewBroadcast, view_json};
use crate::http::{error_response, principal, read_body};
use crate::server::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/broadcasts", post(create).get(list))
        .route("/api/v1/broadcasts/{id}", get(show))
        .route("/api/v1/broadcasts/{id}/resume", post(resume))
}

/// The caller (a manager or an admin), its teams when it is limited to
/// some, and the running broadcasts.
type Caller = (actors::shared::Principal, Option<Vec<String>>, Arc<Broadcasts>);

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let principal = principal(state, headers)?;
    if !principal.role.sees_everything() {
        return Err(ApiError::forbidden("broadcasts are for managers and admins"));
    }
    let system = state.system().ok_or_else(|| ApiError::unavailable("the engine is starting; try again"))?;
    let scope = system.scope(&principal);
    let broadcasts =
        state.broadcasts.get().ok_or_else(|| ApiError::unavailable("the engine is starting; try again"))?;
    Ok((principal, scope, broadcasts.clone()))
}

/// A team-scoped manager sees the broadcasts to one of its teams.
fn visible(view: &BroadcastView, scope: &Option<Vec<String>>) -> bool {
    scope.as_ref().is_none_or(|teams| view.record.audience.team.as_ref().is_some_and(|team| teams.contains(team)))
}

async fn create(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let created = async {
        let (principal, scope, broadcasts) = authorize(&state, &headers)?;
        let limit = state.config.server.max_body_bytes;
        let bytes = read_body(&state, &headers, body, limit, "server.max_body_bytes").await?;
        let invalid = |error: String| ApiError::bad_request(format!("the JSON body is not valid: {error}"));
        protocol::json::reject_duplicate_keys(&bytes).map_err(|error| invalid(error.to_string()))?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|error| invalid(error.to_string()))?;
        let (request, filters) = decide::parse_request(&value)?;
        let system = state.system().ok_or_else(|| ApiError::unavailable("the engine is starting; try again"))?;
        let store = system.shared().store.clone();
        let default_number = state.config.numbers.first().map(|number| number.phone_number_id.clone());
        let number = request.phone_number_id.clone();
        let needs_conversations = filters.outcome.is_some()
            || filters.team.is_some()
            || filters.closed_from.is_some()
            || filters.closed_to.is_some()
            || number.is_none();
        let reader = store
            .reader()
            .caught_up()
            .await
            .map_err(|_| ApiError::unavailable("the store cannot be read; try again"))?;
        // The audience and each recipient's opt-out, read off the async
        // threads (a scan of the conversations).
        let resolved = tokio::task::spawn_blocking(move || -> Result<Vec<RecipientRecord>, ApiError> {
            let unreadable = |_| ApiError::unavailable("the store cannot be read; try again");
            let conversations =
                if needs_conversations { reader.audience_conversations().map_err(unreadable)? } else { Vec::new() };
            let audience = decide::resolve_audience(
                &filters,
                &conversations,
                scope.as_deref(),
                number.as_deref(),
                default_number.as_deref(),
            )?;
            audience
                .into_iter()
                .map(|(wa_id, phone_number_id)| {
                    let opted_out =
                        reader.contact(&wa_id).map_err(unreadable)?.is_some_and(|contact| contact.opted_out);
                    Ok(RecipientRecord {
                        wa_id,
                        phone_number_id,
                        state: if opted_out { RecipientState::Skipped } else { RecipientState::Pending },
                        message_id: None,
                        error: opted_out.then(|| "opted_out".to_owned()),
                        at: None,
                    })
                })
                .collect()
        })
        .await
        .map_err(|_| ApiError::unavailable("the audience could not be read; try again"))??;
        let record = BroadcastRecord {
            id: String::new(),
            name: request.name.trim().to_owned(),
            template: request.template,
            audience: request.audience,
            created_by: principal.agent_id.clone(),
            created_at: system.shared().clock.now_ms(),
            state: BroadcastState::Sending,
            reason: None,
            total: 0,
            final_counts: None,
        };
        let total = resolved.len();
        let skipped = resolved.iter().filter(|recipient| recipient.state == RecipientState::Skipped).count();
        let id = broadcasts.create(NewBroadcast { record, recipients: resolved }).await?;
        Ok((StatusCode::CREATED, Json(json!({ "id": id, "total": total, "skipped": skipped }))).into_response())
    }
    .await;
    created.unwrap_or_else(error_response)
}

async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let listed = async {
        let (_, scope, broadcasts) = authorize(&state, &headers)?;
        let views = broadcasts.list().await?;
        let shown: Vec<Value> =
            views.iter().rev().filter(|view| visible(view, &scope)).map(|view| view_json(view, false)).collect();
        Ok::<_, ApiError>(Json(json!({ "broadcasts": shown })).into_response())
    }
    .await;
    listed.unwrap_or_else(error_response)
}

async fn show(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let shown = async {
        let (_, scope, broadcasts) = authorize(&state, &headers)?;
        let view = broadcasts.get(&id).await?.ok_or_else(|| ApiError::not_found(format!("no broadcast {id:?}")))?;
        if !visible(&view, &scope) {
            return Err(ApiError::forbidden("this broadcast's audience is not one of your teams'"));
        }
        Ok(Json(view_json(&view, true)).into_response())
    }
    .await;
    shown.unwrap_or_else(error_response)
}

async fn resume(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let resumed = async {
        let (principal, scope, broadcasts) = authorize(&state, &headers)?;
        let view = broadcasts.get(&id).await?.ok_or_else(|| ApiError::not_found(format!("no broadcast {id:?}")))?;
        if !visible(&view, &scope) {
            return Err(ApiError::forbidden("this broadcast's audience is not one of your teams'"));
        }
        let view = broadcasts.resume(&id, &principal.agent_id).await?;
        Ok(Json(view_json(&view, false)).into_response())
    }
    .await;
    resumed.unwrap_or_else(error_response)
}
