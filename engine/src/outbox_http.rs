//! The outbox's API (PROTOCOL §10, docs/API.md "Outbox"): `GET
//! /api/v1/outbox?state=pending|dead&connector=&limit=` lists deliveries
//! (oldest event first); `POST /api/v1/outbox/{id}/retry` sends a dead one
//! back to its queue. Managers of every team and admins only: a delivery's
//! body carries any team's conversation, so an agent or a manager limited
//! to teams gets `forbidden`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use protocol::ApiError;
use protocol::time::format_rfc3339;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{error_response, parse_query, principal};
use crate::outbox::decide::{Delivery, DeliveryState};
use crate::outbox::{Listed, Outbox, RetryRefusal};
use crate::server::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/outbox", get(list)).route("/api/v1/outbox/{id}/retry", post(retry))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    connector: Option<String>,
    limit: Option<usize>,
}

/// A delivery as the API shows it.
pub fn delivery_json(delivery: &Delivery) -> Value {
    let pending = delivery.state == DeliveryState::Pending;
    json!({
        "id": delivery.id,
        "connector": delivery.target,
        "event_type": delivery.event_type,
        "conversation_id": delivery.conversation_id,
        "contact": delivery.contact,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "created_at": format_rfc3339(delivery.created_at),
        "next_attempt_at": pending.then(|| format_rfc3339(delivery.next_attempt_at)),
        "last_attempt_at": delivery.last_attempt_at.map(format_rfc3339),
        "last_error": delivery.last_error,
        "body": serde_json::from_str::<Value>(&delivery.payload).unwrap_or(Value::Null),
    })
}

/// The caller may use the outbox: a manager of every team or an admin.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(String, Arc<Outbox>), ApiError> {
    let principal = principal(state, headers)?;
    if !principal.role.sees_everything() {
        return Err(ApiError::forbidden("the outbox is for managers and admins"));
    }
    let system = state.system().ok_or_else(|| ApiError::unavailable("the engine is starting; try again"))?;
    if system.scope(&principal).is_some() {
        return Err(ApiError::forbidden(
            "the outbox carries every team's conversations: it is for managers of every team and admins",
        ));
    }
    let outbox = state.outbox.get().ok_or_else(|| ApiError::unavailable("the engine is starting; try again"))?;
    Ok((principal.agent_id, outbox.clone()))
}

fn stopped(error: crate::outbox::OutboxError) -> ApiError {
    tracing::warn!(%error, "the outbox did not answer");
    ApiError::unavailable("the outbox is not running; try again")
}

async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    let asked = (|| {
        let (_, outbox) = authorize(&state, &headers)?;
        let query: ListQuery = parse_query(&uri)?;
        let which = match query.state.as_deref() {
            None | Some("") => Listed::All,
            Some("pending") => Listed::Pending,
            Some("dead") => Listed::Dead,
            Some(other) => {
                return Err(ApiError::bad_request(format!("`state` must be pending or dead, not {other:?}")));
            }
        };
        let limit = query.limit.unwrap_or(1000);
        if limit == 0 || limit > 1000 {
            return Err(ApiError::bad_request("`limit` must be between 1 and 1000"));
        }
        Ok((outbox, which, query.connector, limit))
    })();
    let (outbox, which, connector, limit) = match asked {
        Ok(asked) => asked,
        Err(error) => return error_response(error),
    };
    match outbox.list(which).await {
        Ok(deliveries) => {
            let shown: Vec<Value> = deliveries
                .iter()
                .filter(|delivery| connector.as_ref().is_none_or(|connector| &delivery.target == connector))
                .take(limit)
                .map(delivery_json)
                .collect();
            Json(json!({ "deliveries": shown })).into_response()
        }
        Err(error) => error_response(stopped(error)),
    }
}

async fn retry(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let (user, outbox) = match authorize(&state, &headers) {
        Ok(allowed) => allowed,
        Err(error) => return error_response(error),
    };
    match outbox.retry(&id, &user).await {
        Ok(Ok(delivery)) => Json(delivery_json(&delivery)).into_response(),
        Ok(Err(RetryRefusal::NotFound)) => {
            error_response(ApiError::not_found(format!("no delivery {id} in the outbox (delivered ones are not kept)")))
        }
        Ok(Err(RetryRefusal::NotDead)) => error_response(ApiError::bad_request(format!(
            "delivery {id} is pending, not dead: it is retried by itself; only a dead delivery can be retried"
        ))),
        Ok(Err(RetryRefusal::Unavailable(problem))) => {
            tracing::warn!(%problem, "a retry could not be stored");
            error_response(ApiError::unavailable("the retry could not be stored; try again"))
        }
        Err(error) => error_response(stopped(error)),
    }
}
