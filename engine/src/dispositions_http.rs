//! `GET /api/v1/dispositions` (docs/API.md "Dispositions"): the disposition
//! schema a client renders its close form from, so no client hard-codes it.
//! Any signed-in principal may read it (agents fill the form). A team with
//! `[[teams.dispositions]]` has its own schema; the others share the global
//! `[[dispositions]]` (the answer's top-level `fields`).

use std::sync::Arc;

use actors::settings::{DispositionSpec, FieldKind, Schemas};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use protocol::ApiError;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http::{error_response, parse_query, principal};
use crate::server::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/dispositions", get(dispositions))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DispositionQuery {
    team: Option<String>,
}

/// One field as clients see it: `label` defaults to the key; `options` for
/// an enum, `won_values` where set.
pub fn field_json(spec: &DispositionSpec) -> Value {
    let kind = spec.kind.name();
    let mut field = Map::new();
    field.insert("key".into(), json!(spec.key));
    field.insert("label".into(), json!(spec.label.as_deref().unwrap_or(&spec.key)));
    field.insert("kind".into(), json!(kind));
    if matches!(spec.kind, FieldKind::Enum) {
        field.insert("options".into(), json!(spec.options));
    }
    field.insert("required_on_close".into(), json!(spec.required_on_close));
    if !spec.won_values.is_empty() {
        field.insert("won_values".into(), json!(spec.won_values));
    }
    if spec.kind == FieldKind::Promise {
        // The follow-up it schedules (docs/followups.md); the template's
        // params stay server-side.
        field.insert("followup_at".into(), json!(spec.followup_at));
        if let Some(paid_field) = &spec.paid_field {
            field.insert("paid_field".into(), json!(paid_field));
            field.insert("paid_values".into(), json!(spec.paid_values));
        }
    }
    Value::Object(field)
}

async fn dispositions(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    let answer = (|| {
        principal(&state, &headers)?;
        let query: DispositionQuery = parse_query(&uri)?;
        let schemas = Schemas { global: &state.config.dispositions, teams: &state.config.teams };
        let schema_of = |team: Option<&str>| -> Vec<Value> { schemas.of(team).iter().map(field_json).collect() };
        match query.team {
            Some(team) => {
                if !state.config.teams.iter().any(|spec| spec.id == team) {
                    return Err(ApiError::not_found(format!("there is no team {team:?}")));
                }
                Ok(json!({ "team": team, "fields": schema_of(Some(&team)) }))
            }
            None => {
                let teams: Map<String, Value> =
                    state.config.teams.iter().map(|spec| (spec.id.clone(), json!(schema_of(Some(&spec.id))))).collect();
                Ok(json!({ "fields": schema_of(None), "teams": teams }))
            }
        }
    })();
    match answer {
        Ok(body) => Json(body).into_response(),
        Err(error) => error_response(error),
    }
}
