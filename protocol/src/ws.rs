//! WebSocket frames (contract §3). Each frame is one object with a `type`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ApiError;
use crate::model::{AgentStatus, Conversation, DeliveryStatus, Message, Role, Route};
use crate::time::{UnixMs, rfc3339};

pub const SUBPROTOCOL_JSON: &str = "switchboard.v1.json";
pub const SUBPROTOCOL_MSGPACK: &str = "switchboard.v1.msgpack";

/// Requests a client sends. `id` is echoed on the `ok`/`error` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    SetStatus {
        #[serde(default)]
        id: Option<Value>,
        status: AgentStatus,
    },
    Send {
        #[serde(default)]
        id: Option<Value>,
        conversation_id: String,
        text: String,
    },
    SendTemplate {
        #[serde(default)]
        id: Option<Value>,
        conversation_id: String,
        template: TemplateRequest,
    },
    SetFields {
        #[serde(default)]
        id: Option<Value>,
        conversation_id: String,
        fields: Map<String, Value>,
    },
    Close {
        #[serde(default)]
        id: Option<Value>,
        conversation_id: String,
        #[serde(default)]
        fields: Option<Map<String, Value>>,
    },
    Transfer {
        #[serde(default)]
        id: Option<Value>,
        conversation_id: String,
        #[serde(default)]
        team: Option<String>,
        #[serde(default)]
        agent: Option<String>,
        /// Why, for whoever takes it over (kept in the event log).
        #[serde(default)]
        note: Option<String>,
    },
    Subscribe {
        #[serde(default)]
        id: Option<Value>,
        topic: String,
    },
    /// Turns the co-pilot's agent assist on or off (PROTOCOL §11,
    /// docs/copilot.md "Agent assist"): for the agent itself, or, by a
    /// manager or admin, for `agent_id` in its scope.
    SetCopilot {
        #[serde(default)]
        id: Option<Value>,
        enabled: bool,
        #[serde(default)]
        agent_id: Option<String>,
    },
}

impl ClientFrame {
    pub fn id(&self) -> Option<&Value> {
        match self {
            ClientFrame::SetStatus { id, .. }
            | ClientFrame::Send { id, .. }
            | ClientFrame::SendTemplate { id, .. }
            | ClientFrame::SetFields { id, .. }
            | ClientFrame::Close { id, .. }
            | ClientFrame::Transfer { id, .. }
            | ClientFrame::Subscribe { id, .. }
            | ClientFrame::SetCopilot { id, .. } => id.as_ref(),
        }
    }
}

/// The co-pilot's hand-over of a conversation, on the `assigned` frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// What the agent should know first, in a sentence or three.
    pub summary: String,
    /// The disposition fields the co-pilot filled.
    pub fields: Map<String, Value>,
    /// Why it handed over: `qualified`, `asked_for_person`, `timeout`,
    /// `unanswered` (docs/copilot.md "Handoff").
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRequest {
    pub name: String,
    pub language: String,
    #[serde(default)]
    pub params: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnassignReason {
    Transferred,
    ReassignedIdle,
    AgentOffline,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaKind {
    FirstResponse,
    NextResponse,
    Resolution,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaState {
    Warning,
    Breached,
}

/// Frames the server sends. The event variants carry `seq`; the others do not
/// and are never replayed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        agent_id: String,
        role: Role,
        session_id: String,
        #[serde(with = "rfc3339")]
        server_time: UnixMs,
        status: AgentStatus,
    },
    Snapshot {
        seq: u64,
        conversations: Vec<Conversation>,
    },
    Ok {
        #[serde(default)]
        id: Option<Value>,
        #[serde(flatten)]
        body: Map<String, Value>,
    },
    Error {
        #[serde(default)]
        id: Option<Value>,
        #[serde(flatten)]
        error: ApiError,
        /// Copy of `detail.missing` for `disposition_required`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        missing: Option<Vec<String>>,
    },
    Workload(Workload),
    Assigned {
        seq: u64,
        /// Boxed: the frame's other variants are a fraction of its size.
        conversation: Box<Conversation>,
        /// Why this agent got it (§7). Events stored before routes were
        /// recorded read as `default`.
        #[serde(default)]
        route: Route,
        /// The co-pilot's hand-over (PROTOCOL §11): absent for a
        /// conversation the co-pilot never had.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        handoff: Option<Handoff>,
    },
    Message {
        seq: u64,
        conversation_id: String,
        message: Message,
    },
    Status {
        seq: u64,
        conversation_id: String,
        message_id: String,
        status: DeliveryStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ApiError>,
    },
    Unassigned {
        seq: u64,
        conversation_id: String,
        reason: UnassignReason,
    },
    Sla {
        seq: u64,
        conversation_id: String,
        kind: SlaKind,
        state: SlaState,
    },
    Window {
        seq: u64,
        conversation_id: String,
        #[serde(with = "rfc3339::option")]
        service_until: Option<UnixMs>,
        #[serde(with = "rfc3339::option")]
        free_entry_until: Option<UnixMs>,
    },
    /// A promise to pay came due (PROTOCOL §10, docs/followups.md): to the
    /// holder, or when nobody holds the conversation to the agent who
    /// closed it, else to the team's agents and managers.
    Followup {
        seq: u64,
        conversation_id: String,
        contact: crate::model::Contact,
        /// The promise's field key (a `promise` disposition).
        field: String,
        promise: Promise,
        #[serde(with = "rfc3339")]
        due_at: UnixMs,
    },
    /// A draft reply for the agent holding a conversation, whose co-pilot
    /// is on (PROTOCOL §11, docs/copilot.md "Agent assist"): it may send
    /// it as is with `send`.
    Suggestion {
        seq: u64,
        conversation_id: String,
        text: String,
    },
}

/// A promise to pay, as the `followup` event shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Promise {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub amount: f64,
}

impl ServerFrame {
    /// The event's `seq`, or `None` for frames that are not events.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ServerFrame::Assigned { seq, .. }
            | ServerFrame::Message { seq, .. }
            | ServerFrame::Status { seq, .. }
            | ServerFrame::Unassigned { seq, .. }
            | ServerFrame::Sla { seq, .. }
            | ServerFrame::Window { seq, .. }
            | ServerFrame::Followup { seq, .. }
            | ServerFrame::Suggestion { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// Sets the `seq` of an event; frames that are not events are unchanged.
    pub fn set_seq(&mut self, new_seq: u64) {
        match self {
            ServerFrame::Assigned { seq, .. }
            | ServerFrame::Message { seq, .. }
            | ServerFrame::Status { seq, .. }
            | ServerFrame::Unassigned { seq, .. }
            | ServerFrame::Sla { seq, .. }
            | ServerFrame::Window { seq, .. }
            | ServerFrame::Followup { seq, .. }
            | ServerFrame::Suggestion { seq, .. } => *seq = new_seq,
            _ => {}
        }
    }

    pub fn ok(id: Option<Value>, body: Map<String, Value>) -> Self {
        ServerFrame::Ok { id, body }
    }

    pub fn error(id: Option<Value>, error: ApiError) -> Self {
        let missing = error
            .detail
            .as_ref()
            .and_then(|detail| detail.get("missing"))
            .and_then(|missing| serde_json::from_value(missing.clone()).ok());
        ServerFrame::Error { id, error, missing }
    }
}

/// The manager's live workload view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    #[serde(with = "rfc3339")]
    pub at: UnixMs,
    pub agents: Vec<AgentWorkload>,
    pub teams: Vec<TeamWorkload>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentWorkload {
    pub id: String,
    pub name: String,
    pub status: AgentStatus,
    pub teams: Vec<String>,
    pub assigned: u32,
    pub capacity: u32,
    pub open_windows: u32,
    pub copilot: bool,
    pub frt_breaches: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeamWorkload {
    pub id: String,
    pub queued: u32,
    pub assigned: u32,
    pub online_agents: u32,
    pub longest_wait_s: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_suggestion_is_an_event_with_a_seq() {
        let mut frame = ServerFrame::Suggestion { seq: 0, conversation_id: "c1".into(), text: "Hi".into() };
        frame.set_seq(42);
        assert_eq!(frame.seq(), Some(42));
        assert_eq!(
            serde_json::to_value(&frame).unwrap(),
            json!({"type": "suggestion", "seq": 42, "conversation_id": "c1", "text": "Hi"})
        );
    }

    #[test]
    fn set_copilot_names_an_agent_or_not() {
        let own: ClientFrame =
            serde_json::from_value(json!({"type": "set_copilot", "id": 1, "enabled": true})).unwrap();
        assert_eq!(own, ClientFrame::SetCopilot { id: Some(json!(1)), enabled: true, agent_id: None });
        assert_eq!(own.id(), Some(&json!(1)));
        let other: ClientFrame =
            serde_json::from_value(json!({"type": "set_copilot", "enabled": false, "agent_id": "asha"})).unwrap();
        assert_eq!(other, ClientFrame::SetCopilot { id: None, enabled: false, agent_id: Some("asha".into()) });
        assert!(serde_json::from_value::<ClientFrame>(json!({"type": "set_copilot", "enabled": "yes"})).is_err());
    }
}
