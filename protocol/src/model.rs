//! The Conversation and Message shapes clients see (contract §3 "Shapes").
//!
//! Times are unix milliseconds in memory and RFC 3339 strings on the wire.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::{UnixMs, rfc3339};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    Bot,
    Queued,
    Assigned,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Paid,
    Organic,
    Referral,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub kind: SourceKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctwa_clid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl Source {
    pub fn organic() -> Self {
        Source {
            kind: SourceKind::Organic,
            source_type: None,
            source_id: None,
            ctwa_clid: None,
            headline: None,
            code: None,
        }
    }
}

/// Why a conversation went where it did (contract §7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteReason {
    /// A routing rule matched (`Route::rule` names it).
    Rule,
    /// The contact's dedicated owner.
    Owner,
    /// The agent who closed the contact's latest conversation.
    Returning,
    /// The team's queue passed its overflow bound (`Route::from_team`).
    Overflow,
    /// No rule matched: the number's default team, else the first team.
    #[default]
    Default,
    /// A user transferred the conversation.
    Transfer,
    /// A manager assigned it by hand.
    Manual,
    /// Reassigned: its agent did not answer in time.
    Idle,
    /// Routed again: its agent went offline or left.
    Offline,
}

/// `Route` of contract §7: why a conversation went where it did, on the
/// `assigned` frame and in the event log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub reason: RouteReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_team: Option<String>,
}

impl Route {
    pub fn because(reason: RouteReason) -> Route {
        Route { reason, rule: None, from_team: None }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// The customer's key: a wa_id, or a business-scoped user id.
    pub wa_id: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub contact: Contact,
    pub phone_number_id: String,
    pub status: ConversationStatus,
    pub team: Option<String>,
    pub agent: Option<String>,
    pub source: Source,
    #[serde(with = "rfc3339::option")]
    pub service_until: Option<UnixMs>,
    #[serde(with = "rfc3339::option")]
    pub free_entry_until: Option<UnixMs>,
    #[serde(default)]
    pub fields: Map<String, Value>,
    #[serde(with = "rfc3339")]
    pub opened_at: UnixMs,
    #[serde(default, with = "rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<UnixMs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Switchboard's own: an outbound message whose send was started but
    /// whose answer from Meta was never recorded (the engine stopped, or the
    /// connection failed, while Meta had it). Meta never sends it; a status
    /// from Meta for the message replaces it. First, so every Meta status
    /// advances from it.
    Unknown,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl DeliveryStatus {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "sent" => Some(DeliveryStatus::Sent),
            "delivered" => Some(DeliveryStatus::Delivered),
            "read" => Some(DeliveryStatus::Read),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub direction: Direction,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Media kept by Meta's id: `{id, mime_type, caption?, filename?}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Value>,
    #[serde(with = "rfc3339")]
    pub at: UnixMs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeliveryStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free: Option<bool>,
    /// Why a message failed, as a protocol error (`window_closed` for Meta's 131047).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::ApiError>,
    /// Who wrote an outbound message, as the audit log names actors:
    /// `"copilot"` (the co-pilot, PROTOCOL §11), `"system"` (a team's
    /// closed-hours template, a follow-up's reminder) or `"user:{agent id}"`
    /// (a person). Absent on inbound messages and on messages stored
    /// before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Online,
    Away,
    Offline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Agent,
    Manager,
    Admin,
}

impl Role {
    /// Managers and admins may act on any conversation.
    pub fn sees_everything(self) -> bool {
        matches!(self, Role::Manager | Role::Admin)
    }
}
