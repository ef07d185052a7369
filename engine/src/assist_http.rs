//! The co-pilot's agent assist toggle over HTTP (docs/API.md "Co-pilot
//! assist"): `GET /api/v1/agents/{id}/copilot` → `{agent_id, copilot}`,
//! `PUT` with `{"enabled": bool}` → the same, once stored and audited
//! (`copilot_toggled`). The agent itself, or a manager or admin (a manager
//! limited to teams, for their agents); everyone else `forbidden`. The
//! rules are `actors::assist`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use protocol::ApiError;
use serde::Deserialize;
use serde_json::json;

use crate::http::{error_response, principal, read_body};
use crate::server::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/agents/{id}/copilot", get(get_copilot).put(put_copilot))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CopilotBody {
    enabled: bool,
}

fn system(state: &AppState) -> Result<&Arc<actors::System>, ApiError> {
    state.system().ok_or_else(|| ApiError::unavailable("the engine is still starting; retry shortly"))
}

async fn get_copilot(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let answer = (|| {
        let principal = principal(&state, &headers)?;
        let copilot = system(&state)?.copilot_for(&principal, &id)?;
        Ok(Json(json!({ "agent_id": id, "copilot": copilot })).into_response())
    })();
    answer.unwrap_or_else(error_response)
}

async fn put_copilot(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let answer = async {
        // Who asks comes before what they send.
        let principal = principal(&state, &headers)?;
        let limit = state.config.server.max_body_bytes;
        let body = read_body(&state, &headers, body, limit, "server.max_body_bytes").await?;
        protocol::json::reject_duplicate_keys(&body)
            .map_err(|error| ApiError::bad_request(format!("the JSON body is not valid: {error}")))?;
        let body: CopilotBody = serde_json::from_slice(&body).map_err(|error| {
            ApiError::bad_request(format!("the body must be {{\"enabled\": true}} or {{\"enabled\": false}}: {error}"))
        })?;
        let copilot = system(&state)?.set_copilot(&principal, &id, body.enabled).await?;
        Ok::<_, ApiError>(Json(json!({ "agent_id": id, "copilot": copilot })).into_response())
    }
    .await;
    answer.unwrap_or_else(error_response)
}
