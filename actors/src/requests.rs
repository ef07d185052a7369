//! What a client may ask of a conversation, decided without a runtime: who
//! may act on it, what a send becomes (the request to Meta and the intent
//! recorded before it), where a transfer may go. The conversation actor
//! reads what these need, calls them, and acts on the answer; unit tests
//! call them directly.

use protocol::graph::SendMessageRequest;
use protocol::model::ConversationStatus;
use protocol::time::UnixMs;
use protocol::ws::TemplateRequest;
use protocol::{ApiError, ErrorCode};
use serde_json::{Value, json};
use storage::{ConversationRecord, SendIntent};

use crate::shared::Principal;

/// Whether `principal` may act on conversation `conversation_id`. `open` is
/// the thread's open conversation when it is this one; `closed` the stored
/// record otherwise (the actor reads it only then). Managers and admins may
/// act on any open conversation, an agent only on one assigned to it.
pub fn authorize(
    open: Option<&ConversationRecord>,
    closed: Option<&ConversationRecord>,
    principal: &Principal,
    conversation_id: &str,
) -> Result<ConversationRecord, ApiError> {
    let Some(record) = open.filter(|open| open.conversation.id == conversation_id) else {
        return Err(match closed {
            Some(record)
                if principal.role.sees_everything()
                    || record.conversation.agent.as_deref() == Some(&principal.agent_id) =>
            {
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "conversation {conversation_id} is closed; a new message from the customer opens a new one"
                    ),
                )
            }
            Some(_) => ApiError::forbidden(format!("conversation {conversation_id} is not assigned to you")),
            None => ApiError::not_found(format!("no conversation {conversation_id}")),
        });
    };
    let holds = record.conversation.status == ConversationStatus::Assigned
        && record.conversation.agent.as_deref() == Some(principal.agent_id.as_str());
    if !principal.role.sees_everything() && !holds {
        return Err(ApiError::forbidden(format!("conversation {conversation_id} is not assigned to you")));
    }
    Ok(record.clone())
}

/// What an agent asks to send.
#[derive(Clone, Debug)]
pub enum Outgoing {
    Text(String),
    Template(TemplateRequest),
    /// Reply buttons or a list (the co-pilot's questions): a free-form
    /// message, so only inside the service window.
    Interactive {
        body: String,
        choices: Vec<protocol::graph::Choice>,
        list_button: String,
    },
}

/// A send, decided: the request to Meta and the intent committed before it.
#[derive(Clone, Debug)]
pub struct PlannedSend {
    pub request: SendMessageRequest,
    pub intent: SendIntent,
}

/// Decides a send on `record` at `now`: refuses an empty text or template,
/// and a text outside the 24-hour service window (only a template may
/// reopen it). `local_id` names the message until Meta gives its wamid.
pub fn plan_send(
    record: &ConversationRecord,
    principal: &Principal,
    outgoing: Outgoing,
    local_id: String,
    now: UnixMs,
) -> Result<PlannedSend, ApiError> {
    let to = &record.conversation.contact.wa_id;
    let (request, kind, text, template): (_, _, Option<String>, Option<Value>) = match outgoing {
        Outgoing::Text(text) => {
            if text.trim().is_empty() {
                return Err(ApiError::bad_request("`text` is empty; write something to send"));
            }
            if !protocol::rules::service_window_open(record.conversation.service_until, now) {
                return Err(ApiError::new(
                    ErrorCode::WindowClosed,
                    "the 24-hour service window is closed; only a template can be sent until the customer writes again",
                ));
            }
            (SendMessageRequest::text(to, &text), "text", Some(text), None)
        }
        Outgoing::Interactive { body, choices, list_button } => {
            if body.trim().is_empty() || choices.is_empty() {
                return Err(ApiError::bad_request("an interactive message needs a body and at least one choice"));
            }
            if !protocol::rules::service_window_open(record.conversation.service_until, now) {
                return Err(ApiError::new(
                    ErrorCode::WindowClosed,
                    "the 24-hour service window is closed; only a template can be sent until the customer writes again",
                ));
            }
            let request = SendMessageRequest::interactive(to, &body, &choices, &list_button);
            (request, "interactive", Some(body), None)
        }
        Outgoing::Template(template) => {
            if template.name.trim().is_empty() || template.language.trim().is_empty() {
                return Err(ApiError::bad_request("a template needs a `name` and a `language`"));
            }
            let request = SendMessageRequest::template(to, &template.name, &template.language, &template.params);
            let shown = json!({"name": template.name, "language": template.language, "params": template.params});
            (request, "template", None, Some(shown))
        }
    };
    let intent = SendIntent {
        local_id,
        conversation_id: record.conversation.id.clone(),
        kind: kind.to_owned(),
        text,
        template,
        request: serde_json::to_string(&request).unwrap_or_default(),
        sent_by: principal.agent_id.clone(),
        created_at: now,
        unknown_at: None,
    };
    Ok(PlannedSend { request, intent })
}

/// Where a transfer goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferTarget {
    /// To this agent (who must then take it: online, with room).
    Agent(String),
    /// Back to this team's queue.
    Team(String),
}

/// Longest transfer note, in characters.
pub const MAX_NOTE_CHARS: usize = 1_000;

/// Decides where a transfer of `record` may go: exactly one of an agent that
/// exists and does not hold it already, or a team that exists (contract §7).
pub fn transfer_target(
    record: &ConversationRecord,
    (team, agent): (Option<String>, Option<String>),
    note: Option<&str>,
    agent_exists: impl Fn(&str) -> bool,
    team_exists: impl Fn(&str) -> bool,
) -> Result<TransferTarget, ApiError> {
    let conversation_id = &record.conversation.id;
    if note.is_some_and(|note| note.chars().count() > MAX_NOTE_CHARS) {
        return Err(ApiError::bad_request(format!("`note` is longer than {MAX_NOTE_CHARS} characters")));
    }
    match (team, agent) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("give either `team` or `agent`, not both")),
        (None, Some(target)) => {
            if !agent_exists(&target) {
                return Err(ApiError::not_found(format!("no agent {target}")));
            }
            if record.conversation.agent.as_deref() == Some(target.as_str()) {
                return Err(ApiError::bad_request(format!("conversation {conversation_id} is already with {target}")));
            }
            Ok(TransferTarget::Agent(target))
        }
        (Some(team), None) => {
            if !team_exists(&team) {
                return Err(ApiError::not_found(format!("no team {team}")));
            }
            Ok(TransferTarget::Team(team))
        }
        (None, None) => Err(ApiError::bad_request("say where to transfer: `team` or `agent`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::model::Role;

    fn record(status: ConversationStatus, agent: Option<&str>, service_until: Option<UnixMs>) -> ConversationRecord {
        let thread = storage::ThreadRecord {
            contact: protocol::model::Contact { wa_id: "919800000001".into(), name: None },
            phone_number_id: "100".into(),
            open_conversation: Some("cv1".into()),
            last_closed_by: None,
            last_inbox_seq: 0,
        };
        let source = protocol::model::Source::organic();
        let mut record = crate::decide::new_conversation("cv1".into(), &thread, "100:919800000001", source, None, 5);
        record.conversation.status = status;
        record.conversation.agent = agent.map(str::to_owned);
        record.conversation.service_until = service_until;
        record
    }

    fn principal(id: &str, role: Role) -> Principal {
        Principal { agent_id: id.into(), role }
    }

    #[test]
    fn an_agent_acts_only_on_what_it_holds_a_manager_on_anything_open() {
        let held = record(ConversationStatus::Assigned, Some("a1"), None);
        assert!(authorize(Some(&held), None, &principal("a1", Role::Agent), "cv1").is_ok());
        let refused = authorize(Some(&held), None, &principal("a2", Role::Agent), "cv1").unwrap_err();
        assert_eq!(refused.code, ErrorCode::Forbidden);
        assert!(authorize(Some(&held), None, &principal("boss", Role::Manager), "cv1").is_ok());
        let queued = record(ConversationStatus::Queued, None, None);
        assert_eq!(
            authorize(Some(&queued), None, &principal("a1", Role::Agent), "cv1").unwrap_err().code,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn a_closed_conversation_is_named_closed_only_to_who_may_see_it() {
        let closed = record(ConversationStatus::Closed, Some("a1"), None);
        let to_holder = authorize(None, Some(&closed), &principal("a1", Role::Agent), "cv1").unwrap_err();
        assert_eq!(to_holder.code, ErrorCode::BadRequest);
        assert!(to_holder.message.contains("closed"));
        let to_other = authorize(None, Some(&closed), &principal("a2", Role::Agent), "cv1").unwrap_err();
        assert_eq!(to_other.code, ErrorCode::Forbidden);
        assert_eq!(
            authorize(None, None, &principal("boss", Role::Admin), "cv9").unwrap_err().code,
            ErrorCode::NotFound
        );
    }

    #[test]
    fn a_text_needs_the_service_window_a_template_does_not() {
        let now = 1_000_000;
        let agent = principal("a1", Role::Agent);
        let open = record(ConversationStatus::Assigned, Some("a1"), Some(now + 1));
        let planned = plan_send(&open, &agent, Outgoing::Text("hello".into()), "local.1".into(), now).unwrap();
        assert_eq!((planned.intent.kind.as_str(), planned.intent.text.as_deref()), ("text", Some("hello")));
        assert_eq!((planned.intent.sent_by.as_str(), planned.intent.created_at), ("a1", now));
        assert!(planned.intent.request.contains("919800000001"));
        let shut = record(ConversationStatus::Assigned, Some("a1"), Some(now));
        let refused = plan_send(&shut, &agent, Outgoing::Text("hello".into()), "local.2".into(), now).unwrap_err();
        assert_eq!(refused.code, ErrorCode::WindowClosed);
        let template = TemplateRequest { name: "reminder".into(), language: "en".into(), params: vec!["x".into()] };
        let planned = plan_send(&shut, &agent, Outgoing::Template(template), "local.3".into(), now).unwrap();
        assert_eq!(planned.intent.template, Some(json!({"name": "reminder", "language": "en", "params": ["x"]})));
        let empty = plan_send(&open, &agent, Outgoing::Text("  ".into()), "local.4".into(), now).unwrap_err();
        assert_eq!(empty.code, ErrorCode::BadRequest);
        let nameless = TemplateRequest { name: String::new(), language: "en".into(), params: vec![] };
        assert!(plan_send(&open, &agent, Outgoing::Template(nameless), "local.5".into(), now).is_err());
    }

    #[test]
    fn a_transfer_goes_to_exactly_one_agent_or_team() {
        let held = record(ConversationStatus::Assigned, Some("a1"), None);
        let yes = |_: &str| true;
        let no = |_: &str| false;
        let to = |team: Option<&str>, agent: Option<&str>| (team.map(str::to_owned), agent.map(str::to_owned));
        assert_eq!(
            transfer_target(&held, to(None, Some("a2")), None, yes, yes),
            Ok(TransferTarget::Agent("a2".into()))
        );
        assert_eq!(
            transfer_target(&held, to(Some("sales"), None), Some("VIP"), yes, yes),
            Ok(TransferTarget::Team("sales".into()))
        );
        let both = transfer_target(&held, to(Some("sales"), Some("a2")), None, yes, yes).unwrap_err();
        assert_eq!(
            (both.code, both.message.as_str()),
            (ErrorCode::BadRequest, "give either `team` or `agent`, not both")
        );
        assert_eq!(transfer_target(&held, to(None, None), None, yes, yes).unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(
            transfer_target(&held, to(None, Some("a1")), None, yes, yes).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(transfer_target(&held, to(None, Some("zz")), None, no, yes).unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(transfer_target(&held, to(Some("zz"), None), None, yes, no).unwrap_err().code, ErrorCode::NotFound);
        let long = "x".repeat(MAX_NOTE_CHARS + 1);
        let refused = transfer_target(&held, to(Some("sales"), None), Some(&long), yes, yes).unwrap_err();
        assert_eq!(refused.code, ErrorCode::BadRequest);
    }
}
