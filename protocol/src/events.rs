//! The conversation event log's records: what happened, to which
//! conversation and contact, caused by whom, typed.
//!
//! Every state change that matters is described by one of these, committed
//! in the same journal entry as the change (storage gives each its place in
//! one global, gap-free sequence). The audit log, reports, connectors and
//! follow-ups read the log from cursors of their own and can be rebuilt from
//! it. Events are facts about the past: they are never updated or deleted,
//! and a new field is added as an `Option` (or with a default) so that every
//! stored event stays readable.
//!
//! Partitioning later (by phone number and contact, for a replicated
//! streaming log) needs nothing more than the `phone_number_id` and
//! `contact` every conversation event carries.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::{Role, Route, Source};
use crate::time::UnixMs;
use crate::ws::{SlaKind, UnassignReason};

/// One event, as the log stores it (its sequence number is the log's key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: UnixMs,
    /// `None` for events about no conversation (a login, a configuration change).
    pub conversation_id: Option<String>,
    /// The customer's WhatsApp id.
    pub contact: Option<String>,
    /// The business number the conversation is on.
    pub phone_number_id: Option<String>,
    pub actor: Actor,
    pub body: EventBody,
}

/// Who caused an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// The customer, writing on WhatsApp.
    Customer,
    /// A person signed in: an agent, a manager or an admin.
    User { id: String },
    /// The co-pilot, speaking for the team.
    Copilot,
    /// A broadcast, by its id.
    Broadcast { id: String },
    /// Meta, reporting a status.
    Meta,
    /// Switchboard itself: routing, timers, recovery.
    System,
}

impl Actor {
    pub fn user(id: impl Into<String>) -> Actor {
        Actor::User { id: id.into() }
    }

    /// The short form the audit log shows: `customer`, `user:asha`,
    /// `copilot`, `broadcast:b1`, `meta`, `system`.
    pub fn label(&self) -> String {
        match self {
            Actor::Customer => "customer".to_owned(),
            Actor::User { id } => format!("user:{id}"),
            Actor::Copilot => "copilot".to_owned(),
            Actor::Broadcast { id } => format!("broadcast:{id}"),
            Actor::Meta => "meta".to_owned(),
            Actor::System => "system".to_owned(),
        }
    }
}

/// Which of WhatsApp's windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// 24 hours from the customer's last message: free-form replies allowed.
    Service,
    /// 72 hours from a click-to-WhatsApp ad's first reply: free of charge.
    FreeEntry,
}

/// One field's change, as `fields_changed` records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub key: String,
    /// `null` when the field was unset.
    pub old: Value,
    /// `null` when the field is cleared.
    pub new: Value,
}

/// What happened. The `type` names are the audit log's `action`s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// The customer wrote (`wamid` is Meta's id).
    MessageIn {
        wamid: String,
        message_type: String,
        text: Option<String>,
    },
    /// Sent to the customer; the actor is who sent it. `id` is the message's
    /// id in the conversation (Meta's wamid once known); `template` names a
    /// template send.
    MessageOut {
        id: String,
        message_type: String,
        text: Option<String>,
        template: Option<String>,
    },
    /// Meta reported a delivery status for an outbound message.
    Status {
        wamid: String,
        status: String,
        error_code: Option<i64>,
    },
    /// A conversation opened, with where it came from.
    Opened {
        source: Source,
    },
    /// Routing decided where the conversation goes (`Route` of PROTOCOL §7).
    Routed {
        route: Value,
        team_id: Option<String>,
    },
    Assigned {
        agent_id: String,
        team_id: Option<String>,
        /// Why this agent got it (absent in events logged before routes were).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        route: Option<Route>,
    },
    Unassigned {
        agent_id: String,
        reason: UnassignReason,
    },
    Transferred {
        from_agent: Option<String>,
        to_team: Option<String>,
        to_agent: Option<String>,
        note: Option<String>,
    },
    FieldsChanged {
        changes: Vec<FieldChange>,
    },
    Closed {
        fields: Map<String, Value>,
        outcome: Option<String>,
    },
    SlaWarning {
        clock: SlaKind,
        due: UnixMs,
    },
    SlaBreach {
        clock: SlaKind,
        due: UnixMs,
    },
    WindowOpened {
        window: Window,
        until: UnixMs,
    },
    WindowRefreshed {
        window: Window,
        until: UnixMs,
    },
    WindowClosed {
        window: Window,
    },
    /// A part of the configuration changed (`section`: `routing`, `agents`…),
    /// with what is needed to see how.
    ConfigurationChanged {
        section: String,
        detail: Value,
    },
    Login {
        role: Role,
    },
    /// A contact's record changed (PROTOCOL §8): by a user's `PATCH`, or by
    /// the customer writing an opt-out or opt-in word. Keys are the
    /// record's fields (`name`, `city`, `region`, `dealer`, `owner`,
    /// `opted_out`) and `attributes.<key>`; `old`/`new` are `null` when
    /// unset or cleared. The event's `contact` names the contact.
    ContactUpdated {
        changes: Vec<FieldChange>,
    },
    /// A delivery of the outbox (PROTOCOL §10) reached its connector:
    /// `attempts` made in all, the last answered 2xx. `delivery_id` is the
    /// `webhook-id` the receiver saw; `connector` the `[[connectors]]` id;
    /// `event_type` what was delivered (`conversation.closed`…).
    OutboxDelivered {
        delivery_id: String,
        connector: String,
        event_type: String,
        attempts: u32,
    },
    /// A delivery was given up after `attempts` (its connector's
    /// `max_attempts`): dead-lettered until someone retries it. `error` is
    /// the last attempt's failure (an HTTP status or a transport error).
    OutboxDead {
        delivery_id: String,
        connector: String,
        event_type: String,
        attempts: u32,
        error: String,
    },
    /// A user sent a dead delivery back to the outbox
    /// (`POST /api/v1/outbox/{id}/retry`), its attempts counted anew.
    OutboxRetried {
        delivery_id: String,
        connector: String,
        event_type: String,
    },
    /// A broadcast (PROTOCOL §10) was created by the event's actor: its
    /// recipients (`total`, of whom `skipped` opted out) are stored with it.
    /// `template` is `{name, language, params}`; `audience` the filters
    /// asked, `contacts` as how many were named.
    BroadcastCreated {
        broadcast_id: String,
        name: String,
        template: Value,
        audience: Value,
        total: u64,
        skipped: u64,
    },
    /// One recipient's outcome (the event's `contact`): `sent` (Meta
    /// accepted it, `message_id` its wamid), `failed` (`error`, a stable
    /// string), `skipped` (opted out) or `unknown` (the engine stopped
    /// while Meta had the request: never sent again).
    BroadcastRecipient {
        broadcast_id: String,
        state: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A broadcast's state changed: `completed`, `paused_limit` (Meta's
    /// messaging or spam limit: `reason`), `sending` again (resumed) or
    /// `stopped` (the template was refused), with its counts then.
    BroadcastState {
        broadcast_id: String,
        state: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        sent: u64,
        failed: u64,
        skipped: u64,
        unknown: u64,
        pending: u64,
    },
    /// A promise to pay (`field`, a `promise` disposition) scheduled its
    /// follow-up for `due` (docs/followups.md); a changed promise is
    /// scheduled again.
    FollowupScheduled {
        field: String,
        date: String,
        amount: f64,
        due: UnixMs,
    },
    /// The follow-up came due: `notified` got the `followup` WebSocket
    /// event and `template` (when configured) was sent to the customer, in
    /// the same commit as this event.
    FollowupDue {
        field: String,
        date: String,
        amount: f64,
        due: UnixMs,
        notified: Vec<String>,
        template: Option<String>,
    },
    /// A scheduled follow-up will not fire: `reason` is `paid` (the paid
    /// field took a paid value), `payment` (a payment was recorded) or
    /// `cleared` (the promise was removed) or `stale` (when due, the
    /// conversation no longer held it unpaid).
    FollowupCancelled {
        field: String,
        reason: String,
    },
    /// A payment was recorded on the conversation
    /// (`POST /api/v1/conversations/{id}/payments`); `paid_at` is when the
    /// customer paid, as the caller said (RFC 3339), when it said.
    PaymentRecorded {
        amount: f64,
        paid_at: Option<String>,
    },
    /// An agent's co-pilot assist was turned on or off (PROTOCOL §11,
    /// docs/copilot.md "Agent assist"); the actor is who did it: the agent
    /// itself, or a manager or admin.
    CopilotToggled {
        agent_id: String,
        enabled: bool,
    },
    /// The co-pilot (PROTOCOL §11, docs/copilot.md) took a new
    /// conversation: `flow` is the flow's id, `team_id` the team whose
    /// `[teams.copilot]` it is. The conversation's status is `bot`.
    CopilotStarted {
        flow: String,
        team_id: String,
    },
    /// The customer answered a question (`question`, its id) with a valid
    /// answer: `field` (a disposition field) took `value`; `score` is the
    /// lead's score after this answer.
    CopilotAnswered {
        question: String,
        field: String,
        value: Value,
        score: i64,
    },
    /// The lead's score reached the flow's `qualify_score` (once per
    /// conversation). A paid lead's Conversions API `QualifiedLead` is
    /// sent from this event.
    CopilotQualified {
        score: i64,
    },
    /// The co-pilot handed the conversation to people (status `queued`,
    /// routed as §7): `reason` is `qualified`, `asked_for_person`,
    /// `timeout` (`handoff_after_s`) or `unanswered` (`max_unanswered`);
    /// `summary` and `fields` are what the agent's `assigned` frame carries.
    CopilotHandoff {
        reason: String,
        summary: String,
        fields: Map<String, Value>,
        score: i64,
        qualified: bool,
    },
    /// The co-pilot closed an unqualified lead: `reason` is `not_qualified`
    /// (`unqualified = "close"`) or `nurtured` (`unqualified = "nurture"`:
    /// its templates were sent first).
    CopilotClosed {
        reason: String,
    },
}

impl EventBody {
    /// The event's `type`, as the audit log's `action`.
    pub fn action(&self) -> &'static str {
        match self {
            EventBody::MessageIn { .. } => "message_in",
            EventBody::MessageOut { .. } => "message_out",
            EventBody::Status { .. } => "status",
            EventBody::Opened { .. } => "opened",
            EventBody::Routed { .. } => "routed",
            EventBody::Assigned { .. } => "assigned",
            EventBody::Unassigned { .. } => "unassigned",
            EventBody::Transferred { .. } => "transferred",
            EventBody::FieldsChanged { .. } => "fields_changed",
            EventBody::Closed { .. } => "closed",
            EventBody::SlaWarning { .. } => "sla_warning",
            EventBody::SlaBreach { .. } => "sla_breach",
            EventBody::WindowOpened { .. } => "window_opened",
            EventBody::WindowRefreshed { .. } => "window_refreshed",
            EventBody::WindowClosed { .. } => "window_closed",
            EventBody::ConfigurationChanged { .. } => "configuration_changed",
            EventBody::Login { .. } => "login",
            EventBody::ContactUpdated { .. } => "contact_updated",
            EventBody::OutboxDelivered { .. } => "outbox_delivered",
            EventBody::OutboxDead { .. } => "outbox_dead",
            EventBody::OutboxRetried { .. } => "outbox_retried",
            EventBody::BroadcastCreated { .. } => "broadcast_created",
            EventBody::BroadcastRecipient { .. } => "broadcast_recipient",
            EventBody::BroadcastState { .. } => "broadcast_state",
            EventBody::FollowupScheduled { .. } => "followup_scheduled",
            EventBody::FollowupDue { .. } => "followup_due",
            EventBody::FollowupCancelled { .. } => "followup_cancelled",
            EventBody::PaymentRecorded { .. } => "payment_recorded",
            EventBody::CopilotToggled { .. } => "copilot_toggled",
            EventBody::CopilotStarted { .. } => "copilot_started",
            EventBody::CopilotAnswered { .. } => "copilot_answered",
            EventBody::CopilotQualified { .. } => "copilot_qualified",
            EventBody::CopilotHandoff { .. } => "copilot_handoff",
            EventBody::CopilotClosed { .. } => "copilot_closed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_action_is_the_serialized_type() {
        let bodies = [
            EventBody::MessageIn { wamid: "w".into(), message_type: "text".into(), text: Some("hi".into()) },
            EventBody::Status { wamid: "w".into(), status: "read".into(), error_code: None },
            EventBody::Unassigned { agent_id: "a".into(), reason: UnassignReason::Transferred },
            EventBody::FieldsChanged {
                changes: vec![FieldChange { key: "outcome".into(), old: Value::Null, new: json!("won") }],
            },
            EventBody::SlaBreach { clock: SlaKind::FirstResponse, due: 5 },
            EventBody::WindowClosed { window: Window::FreeEntry },
            EventBody::Login { role: Role::Manager },
            EventBody::OutboxDelivered {
                delivery_id: "crm-7".into(),
                connector: "crm".into(),
                event_type: "conversation.closed".into(),
                attempts: 3,
            },
            EventBody::OutboxDead {
                delivery_id: "crm-8".into(),
                connector: "crm".into(),
                event_type: "conversation.assigned".into(),
                attempts: 12,
                error: "HTTP 500".into(),
            },
            EventBody::OutboxRetried {
                delivery_id: "crm-8".into(),
                connector: "crm".into(),
                event_type: "conversation.assigned".into(),
            },
            EventBody::BroadcastCreated {
                broadcast_id: "bc1".into(),
                name: "diwali".into(),
                template: json!({"name": "offer", "language": "en", "params": []}),
                audience: json!({"outcome": "closed_won"}),
                total: 3,
                skipped: 1,
            },
            EventBody::BroadcastRecipient {
                broadcast_id: "bc1".into(),
                state: "sent".into(),
                message_id: Some("wamid.X".into()),
                error: None,
            },
            EventBody::BroadcastState {
                broadcast_id: "bc1".into(),
                state: "paused_limit".into(),
                reason: Some("spam_rate_limit".into()),
                sent: 1,
                failed: 0,
                skipped: 1,
                unknown: 0,
                pending: 1,
            },
            EventBody::FollowupScheduled { field: "promise".into(), date: "2026-12-02".into(), amount: 2500.0, due: 7 },
            EventBody::FollowupDue {
                field: "promise".into(),
                date: "2026-12-02".into(),
                amount: 2500.5,
                due: 7,
                notified: vec!["asha".into()],
                template: Some("payment_reminder".into()),
            },
            EventBody::FollowupCancelled { field: "promise".into(), reason: "paid".into() },
            EventBody::PaymentRecorded { amount: 2500.0, paid_at: None },
            EventBody::CopilotToggled { agent_id: "asha".into(), enabled: true },
            EventBody::CopilotStarted { flow: "ads".into(), team_id: "sales".into() },
            EventBody::CopilotAnswered {
                question: "budget".into(),
                field: "budget".into(),
                value: json!("10-20L"),
                score: 3,
            },
            EventBody::CopilotQualified { score: 6 },
            EventBody::CopilotHandoff {
                reason: "qualified".into(),
                summary: "Paid lead.".into(),
                fields: Map::new(),
                score: 6,
                qualified: true,
            },
            EventBody::CopilotClosed { reason: "not_qualified".into() },
            EventBody::ContactUpdated {
                changes: vec![
                    FieldChange { key: "city".into(), old: Value::Null, new: json!("Pune") },
                    FieldChange { key: "attributes.score".into(), old: json!(3), new: json!(4.5) },
                    FieldChange { key: "opted_out".into(), old: json!(false), new: json!(true) },
                ],
            },
        ];
        for body in bodies {
            let value = serde_json::to_value(&body).unwrap();
            assert_eq!(value["type"], body.action(), "{value}");
            assert_eq!(serde_json::from_value::<EventBody>(value).unwrap(), body);
        }
    }

    #[test]
    fn actors_have_short_labels() {
        assert_eq!(Actor::user("asha").label(), "user:asha");
        assert_eq!(Actor::Broadcast { id: "b1".into() }.label(), "broadcast:b1");
        assert_eq!(Actor::System.label(), "system");
    }
}
