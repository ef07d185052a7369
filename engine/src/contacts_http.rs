//! The contact endpoints (PROTOCOL §8; docs/API.md "Contacts"):
//! `GET /api/v1/contacts/{wa_id}` (agents: only contacts of conversations
//! they hold; managers and admins: any) and `PATCH` (managers and admins).
//! A contact is its record (`storage::ContactRecord`, set by `PATCH` and the
//! opt-out words) composed with its conversations: a contact nobody set
//! anything on is still shown, with its WhatsApp profile name, once it has
//! written. What a `PATCH` may set and the commit are `actors`'
//! (`actors::contacts`, `System::update_contact`).

use std::sync::Arc;

use actors::System;
use actors::shared::Principal;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use protocol::ApiError;
use protocol::model::ConversationStatus;
use serde_json::{Map, Value};
use storage::{ContactConversation, ContactRecord};

use crate::http::{error_response, principal, read_body};
use crate::server::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/contacts/{wa_id}", get(get_contact).patch(patch_contact))
}

fn system(state: &AppState) -> Result<&Arc<System>, ApiError> {
    state.system().ok_or_else(|| ApiError::unavailable("the engine is still starting; retry shortly"))
}

fn store_error(error: storage::StorageError) -> ApiError {
    tracing::error!(%error, "contact read failed");
    ApiError::unavailable("the store could not be read; try again")
}

/// The record (if any) and the conversations (newest first) of a contact,
/// read once the tables hold every acknowledged commit.
async fn read_contact(
    system: &System,
    wa_id: &str,
) -> Result<(Option<ContactRecord>, Vec<ContactConversation>), ApiError> {
    let reader = system.reader().caught_up().await.map_err(store_error)?;
    let record = reader.contact(wa_id).map_err(store_error)?;
    let conversations = reader.contact_conversations(wa_id).map_err(store_error)?;
    Ok((record, conversations))
}

/// The contact as the API shows it: `{wa_id, name, city?, region?,
/// dealer?, owner?, attributes, opted_out, conversations}`. `name` is the
/// record's when a user set one, else the WhatsApp profile name of the
/// latest conversation (`null` when neither).
pub fn contact_view(wa_id: &str, record: Option<&ContactRecord>, conversations: &[ContactConversation]) -> Value {
    let mut view = Map::new();
    view.insert("wa_id".to_owned(), Value::String(wa_id.to_owned()));
    let name = record
        .and_then(|record| record.name.clone())
        .or_else(|| conversations.iter().find_map(|conversation| conversation.contact.name.clone()));
    view.insert("name".to_owned(), name.map_or(Value::Null, Value::String));
    insert_record_fields(&mut view, record);
    let ids = conversations.iter().map(|conversation| Value::String(conversation.id.clone())).collect();
    view.insert("conversations".to_owned(), Value::Array(ids));
    Value::Object(view)
}

/// `city?, region?, dealer?, owner?, attributes, opted_out` of a record
/// (absent fields for a contact nobody set anything on), into `object`.
fn insert_record_fields(object: &mut Map<String, Value>, record: Option<&ContactRecord>) {
    if let Some(record) = record {
        for (key, value) in
            [("city", &record.city), ("region", &record.region), ("dealer", &record.dealer), ("owner", &record.owner)]
        {
            if let Some(value) = value {
                object.insert(key.to_owned(), Value::String(value.clone()));
            }
        }
    }
    let attributes = record.map(|record| record.attributes.clone()).unwrap_or_default();
    object.insert("attributes".to_owned(), Value::Object(attributes));
    object.insert("opted_out".to_owned(), Value::Bool(record.is_some_and(|record| record.opted_out)));
}

/// `GET /api/v1/conversations/{id}` shows the contact's record on its
/// `contact` object (additive): only when the contact has one, so a
/// conversation whose contact nobody set anything on is read as before.
pub fn add_to_conversation(conversation: &mut Value, record: &ContactRecord) {
    if let Some(Value::Object(contact)) = conversation.get_mut("contact") {
        insert_record_fields(contact, Some(record));
    }
}

/// An agent sees a contact only while it holds one of its conversations.
fn may_see(principal: &Principal, conversations: &[ContactConversation]) -> bool {
    principal.role.sees_everything()
        || conversations.iter().any(|conversation| {
            conversation.status != ConversationStatus::Closed
                && conversation.agent.as_deref() == Some(principal.agent_id.as_str())
        })
}

async fn get_contact(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(wa_id): Path<String>) -> Response {
    let answer = async {
        let principal = principal(&state, &headers)?;
        actors::contacts::check_wa_id(&wa_id)?;
        let system = system(&state)?;
        let (record, conversations) = read_contact(system, &wa_id).await?;
        if record.is_none() && conversations.is_empty() {
            return Err(ApiError::not_found(format!("no contact {wa_id}: it never wrote and nothing was set on it")));
        }
        if !may_see(&principal, &conversations) {
            return Err(ApiError::forbidden(format!("you hold no conversation of contact {wa_id}")));
        }
        Ok(Json(contact_view(&wa_id, record.as_ref(), &conversations)).into_response())
    }
    .await;
    answer.unwrap_or_else(error_response)
}

async fn patch_contact(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(wa_id): Path<String>,
    body: Body,
) -> Response {
    let answer = async {
        // Who asks comes before what they send.
        let principal = principal(&state, &headers)?;
        if !principal.role.sees_everything() {
            return Err(ApiError::forbidden("only managers and admins change contacts"));
        }
        actors::contacts::check_wa_id(&wa_id)?;
        let limit = state.config.server.max_body_bytes;
        let body = read_body(&state, &headers, body, limit, "server.max_body_bytes").await?;
        let body: Value = serde_json::from_slice(&body)
            .map_err(|error| ApiError::bad_request(format!("the JSON body is not valid: {error}")))?;
        let system = system(&state)?;
        let record = system.update_contact(&principal, &wa_id, &body).await?;
        let (_, conversations) = read_contact(system, &wa_id).await?;
        Ok(Json(contact_view(&wa_id, Some(&record), &conversations)).into_response())
    }
    .await;
    answer.unwrap_or_else(error_response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::model::{Contact, Role};
    use serde_json::json;

    fn conversation(
        id: &str,
        name: Option<&str>,
        status: ConversationStatus,
        agent: Option<&str>,
    ) -> ContactConversation {
        ContactConversation {
            id: id.to_owned(),
            contact: Contact { wa_id: "9198".to_owned(), name: name.map(str::to_owned) },
            phone_number_id: "100".to_owned(),
            status,
            agent: agent.map(str::to_owned),
        }
    }

    #[test]
    fn a_contact_shows_its_record_and_else_its_profile_name_and_defaults() {
        let conversations = [
            conversation("cv2", Some("Ravi K"), ConversationStatus::Assigned, Some("a1")),
            conversation("cv1", Some("Ravi"), ConversationStatus::Closed, None),
        ];
        assert_eq!(
            contact_view("9198", None, &conversations),
            json!({"wa_id": "9198", "name": "Ravi K", "attributes": {}, "opted_out": false,
                   "conversations": ["cv2", "cv1"]})
        );
        let mut record = ContactRecord::new("9198");
        record.city = Some("Pune".into());
        record.owner = Some("a1".into());
        record.opted_out = true;
        record.attributes.insert("tier".into(), json!("gold"));
        assert_eq!(
            contact_view("9198", Some(&record), &conversations),
            json!({"wa_id": "9198", "name": "Ravi K", "city": "Pune", "owner": "a1", "attributes": {"tier": "gold"},
                   "opted_out": true, "conversations": ["cv2", "cv1"]})
        );
        record.name = Some("Ravi Kumar".into());
        assert_eq!(contact_view("9198", Some(&record), &[])["name"], "Ravi Kumar", "a name set wins");
        assert_eq!(contact_view("9198", None, &[])["name"], Value::Null);
    }

    #[test]
    fn an_agent_sees_a_contact_only_while_holding_one_of_its_conversations() {
        let agent = |id: &str| Principal { agent_id: id.to_owned(), role: Role::Agent };
        let manager = Principal { agent_id: "boss".to_owned(), role: Role::Manager };
        let held = [conversation("cv2", None, ConversationStatus::Assigned, Some("a1"))];
        let closed = [conversation("cv1", None, ConversationStatus::Closed, Some("a1"))];
        assert!(may_see(&agent("a1"), &held));
        assert!(!may_see(&agent("a2"), &held));
        assert!(!may_see(&agent("a1"), &closed), "a closed conversation is not held");
        assert!(may_see(&manager, &closed));
        assert!(may_see(&manager, &[]));
    }

    #[test]
    fn a_conversation_shows_its_contacts_record() {
        let mut conversation = json!({"id": "cv1", "contact": {"wa_id": "9198", "name": "Ravi"}});
        let mut record = ContactRecord::new("9198");
        record.dealer = Some("D042".into());
        add_to_conversation(&mut conversation, &record);
        assert_eq!(
            conversation["contact"],
            json!({"wa_id": "9198", "name": "Ravi", "dealer": "D042", "attributes": {}, "opted_out": false})
        );
    }
}
