//! The admin endpoints of PROTOCOL §7 (docs/API.md "Admin: routing"):
//! `GET /api/v1/admin/routing` (managers and admins) answers the routing
//! configuration in force, with the fields of the configuration file's
//! `[routing]`; `PUT` (admins) replaces it whole. What the body must look
//! like is `actors::routing::RoutingSpec` (its unknown fields are refused);
//! what is checked, stored, audited and applied is
//! `actors::System::set_routing`.
//!
//! `/api/v1/admin/agents` (docs/API.md "Admin: agents"): the agent pool.
//! `GET` (managers and admins; a manager limited to teams sees their
//! members), `POST` a new agent → `201 {agent, token}` (the token, made
//! here from 32 random bytes, is shown once), `PATCH` fields → `{agent}` or
//! `{rotate_token: true}` → `{token}`, `DELETE` `{successor?}` →
//! `{agent, rerouted, contacts}`. What a body may say is
//! `actors::roster`; what is committed and applied, `actors::pool`.

use std::sync::Arc;

use actors::System;
use actors::routing::RoutingSpec;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use protocol::model::Role;
use protocol::{ApiError, ErrorCode};
use serde_json::{Value, json};

use crate::http::{error_response, principal, read_body};
use crate::server::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/admin/routing", get(get_routing).put(put_routing))
        .route("/api/v1/admin/agents", get(list_agents).post(add_agent))
        .route("/api/v1/admin/agents/{id}", get(get_agent).patch(patch_agent).delete(delete_agent))
}

fn system(state: &AppState) -> Result<&Arc<System>, ApiError> {
    state.system().ok_or_else(|| ApiError::unavailable("the engine is still starting; retry shortly"))
}

async fn get_routing(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let answer = (|| {
        let principal = principal(&state, &headers)?;
        if !principal.role.sees_everything() {
            return Err(ApiError::forbidden("the routing rules are for managers and admins"));
        }
        Ok(Json(system(&state)?.routing_spec()).into_response())
    })();
    answer.unwrap_or_else(error_response)
}

async fn put_routing(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let answer = async {
        // Who asks comes before what they send.
        let principal = principal(&state, &headers)?;
        if principal.role != Role::Admin {
            return Err(ApiError::forbidden("only admins change the routing rules"));
        }
        let limit = state.config.server.max_body_bytes;
        let body = read_body(&state, &headers, body, limit, "server.max_body_bytes").await?;
        let spec = parse_routing(&body)?;
        let spec = system(&state)?.set_routing(&principal, spec).await?;
        Ok(Json(spec).into_response())
    }
    .await;
    answer.unwrap_or_else(error_response)
}

/// A new token: `sb_` and 32 random bytes in hex (256 bits; only its
/// SHA-256 is kept).
fn new_token() -> String {
    format!("sb_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// A JSON body of an admin request (an empty one, for `DELETE`, is `{}`).
async fn json_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    empty_is_object: bool,
) -> Result<Value, ApiError> {
    let limit = state.config.server.max_body_bytes;
    let body = read_body(state, headers, body, limit, "server.max_body_bytes").await?;
    if empty_is_object && body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    json_value(&body)
}

/// A body as JSON: one key twice, or no JSON at all, is a `bad_request`.
fn json_value(body: &[u8]) -> Result<Value, ApiError> {
    let invalid = |error: String| ApiError::bad_request(format!("the JSON body is not valid: {error}"));
    protocol::json::reject_duplicate_keys(body).map_err(|error| invalid(error.to_string()))?;
    serde_json::from_slice(body).map_err(|error| invalid(error.to_string()))
}

fn admin(state: &AppState, headers: &HeaderMap) -> Result<actors::shared::Principal, ApiError> {
    let principal = principal(state, headers)?;
    if principal.role != Role::Admin {
        return Err(ApiError::forbidden("only admins change the agent pool"));
    }
    Ok(principal)
}

/// The agents a manager or admin may see: all, or for a manager limited
/// to teams (`manages`), those in any of them.
fn visible_agents(state: &AppState, headers: &HeaderMap) -> Result<Vec<actors::roster::AgentView>, ApiError> {
    let principal = principal(state, headers)?;
    if !principal.role.sees_everything() {
        return Err(ApiError::forbidden("the agent pool is for managers and admins"));
    }
    let system = system(state)?;
    let mut agents = system.agent_views();
    if let Some(teams) = system.scope(&principal) {
        agents.retain(|agent| agent.id == principal.agent_id || agent.teams.iter().any(|team| teams.contains(team)));
    }
    Ok(agents)
}

async fn list_agents(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    visible_agents(&state, &headers)
        .map(|agents| Json(json!({ "agents": agents })).into_response())
        .unwrap_or_else(error_response)
}

async fn get_agent(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let answer = visible_agents(&state, &headers).and_then(|agents| {
        let agent = agents.into_iter().find(|agent| agent.id == id);
        agent.ok_or_else(|| ApiError::not_found(format!("no agent {id}")))
    });
    answer.map(|agent| Json(agent).into_response()).unwrap_or_else(error_response)
}

async fn add_agent(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let answer = async {
        let principal = admin(&state, &headers)?;
        let body = json_body(&state, &headers, body, false).await?;
        let fields = actors::roster::parse_fields(&body, true)?;
        let token = new_token();
        let outcome = system(&state)?.add_agent(&principal, fields, &token).await?;
        Ok((StatusCode::CREATED, Json(json!({ "agent": outcome.agent, "token": token }))).into_response())
    }
    .await;
    answer.unwrap_or_else(error_response)
}

async fn patch_agent(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let answer = async {
        let principal = admin(&state, &headers)?;
        let body = json_body(&state, &headers, body, false).await?;
        let system = system(&state)?;
        match actors::roster::parse_patch(&body)? {
            actors::roster::AgentPatch::RotateToken => {
                let token = new_token();
                system.rotate_token(&principal, &id, &token).await?;
                Ok(Json(json!({ "token": token })).into_response())
            }
            actors::roster::AgentPatch::Fields(fields) => {
                let outcome = system.change_agent(&principal, &id, *fields).await?;
                Ok(Json(json!({ "agent": outcome.agent })).into_response())
            }
        }
    }
    .await;
    answer.unwrap_or_else(error_response)
}

async fn delete_agent(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let answer = async {
        let principal = admin(&state, &headers)?;
        let body = json_body(&state, &headers, body, true).await?;
        let successor = actors::roster::parse_successor(&body)?;
        let outcome = system(&state)?.deactivate_agent(&principal, &id, successor).await?;
        let answer = json!({ "agent": outcome.agent, "rerouted": outcome.rerouted, "contacts": outcome.contacts });
        Ok(Json(answer).into_response())
    }
    .await;
    answer.unwrap_or_else(error_response)
}

/// The body of a `PUT`: JSON (else `bad_request`) of `RoutingSpec`'s shape
/// (else `invalid_field`, `detail.field` the path of what does not fit, such
/// as `rules[0].to_tem`, and `detail.rule` the id of the rule it is in).
pub fn parse_routing(body: &[u8]) -> Result<RoutingSpec, ApiError> {
    let value = json_value(body)?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object: {owner_policy?, owner_wait_s?, rules}"));
    }
    serde_path_to_error::deserialize::<_, RoutingSpec>(&value).map_err(|error| {
        let field = error.path().to_string();
        let mut detail = json!({ "field": field });
        if let Some(rule) = rule_of(&value, error.path()) {
            detail["rule"] = json!(rule);
        }
        ApiError::new(
            ErrorCode::InvalidField,
            format!("the routing configuration is refused: {field}: {}", error.inner()),
        )
        .with_detail(detail)
    })
}

/// The id of the rule a path points into (`rules[3]…`), when it has one.
fn rule_of<'a>(value: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a str> {
    let mut segments = path.iter();
    match (segments.next(), segments.next()) {
        (Some(serde_path_to_error::Segment::Map { key }), Some(serde_path_to_error::Segment::Seq { index }))
            if key == "rules" =>
        {
            value.get("rules")?.get(*index)?.get("id")?.as_str()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> ApiError {
        parse_routing(body.as_bytes()).expect_err(body)
    }

    #[test]
    fn a_body_of_the_configured_shape_is_read() {
        let spec = parse_routing(br#"{"rules": [{"id": "urgent", "text_any": ["urgent"], "to_team": "support"}]}"#)
            .expect("accepted");
        assert_eq!(spec.rules.len(), 1);
        assert_eq!(spec.rules[0].to_team.as_deref(), Some("support"));
        assert!(spec.rules[0].owner_first, "defaults as in the file");
        let empty = parse_routing(b"{}").expect("no rules at all");
        assert_eq!(empty, RoutingSpec::default());
    }

    #[test]
    fn what_does_not_fit_is_named_by_its_path_and_rule() {
        let error = refused(r#"{"rules": [{"id": "a", "to_team": "x"}, {"id": "urgent", "to_tem": "support"}]}"#);
        assert_eq!(error.code, ErrorCode::InvalidField);
        assert!(error.message.contains("to_tem"), "{}", error.message);
        let detail = error.detail.expect("detail");
        assert_eq!(detail["rule"], "urgent", "{detail}");
        assert_eq!(detail["field"], "rules[1].to_tem", "{detail}");
        let error = refused(r#"{"owner_wait_s": "soon"}"#);
        assert_eq!((error.code, error.detail), (ErrorCode::InvalidField, Some(json!({"field": "owner_wait_s"}))));
        let error = refused(r#"{"routing": {"rules": []}}"#);
        assert_eq!(error.code, ErrorCode::InvalidField, "an unknown top-level field");
        assert!(error.message.contains("routing"), "{}", error.message);
        let error = refused(r#"{"rules": [{"to_team": "x"}]}"#);
        assert!(error.message.contains("id"), "a rule without an id: {}", error.message);
    }

    #[test]
    fn a_body_that_is_not_a_json_object_is_a_bad_request() {
        for body in ["", "not json", "[]", "3", r#"{"rules": [], "rules": []}"#] {
            assert_eq!(refused(body).code, ErrorCode::BadRequest, "{body:?}");
        }
    }
}
