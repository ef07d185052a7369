//! The actors' metrics: every name in one place, each described with its
//! unit and a help text (`describe` is called once, where the engine installs
//! its recorder; `/metrics` then carries `# HELP` for each).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub const MESSAGES_TOTAL: &str = "switchboard_messages_total";
pub const CONVERSATIONS_OPENED_TOTAL: &str = "switchboard_conversations_opened_total";
pub const CONVERSATIONS_CLOSED_TOTAL: &str = "switchboard_conversations_closed_total";
pub const ASSIGNMENTS_TOTAL: &str = "switchboard_assignments_total";
pub const ASSIGNMENT_SECONDS: &str = "switchboard_assignment_seconds";
pub const IDLE_REASSIGNMENTS_TOTAL: &str = "switchboard_idle_reassignments_total";
pub const SLA_EVENTS_TOTAL: &str = "switchboard_sla_events_total";
pub const SEND_FAILURES_TOTAL: &str = "switchboard_send_failures_total";
pub const QUEUE_DEPTH: &str = "switchboard_queue_depth";
pub const AGENTS_ONLINE: &str = "switchboard_agents_online";
pub const CONVERSATION_ACTORS: &str = "switchboard_conversation_actors";
pub const CONVERSATION_PASSIVATIONS_TOTAL: &str = "switchboard_conversation_passivations_total";
pub const CONVERSATION_ACTOR_FAILURES_TOTAL: &str = "switchboard_conversation_actor_failures_total";
pub const ACTOR_RESTARTS_TOTAL: &str = "switchboard_actor_restarts_total";
pub const DIRECT_INGEST_FALLBACKS_TOTAL: &str = "switchboard_direct_ingest_fallbacks_total";
pub const WS_SESSIONS: &str = "switchboard_ws_sessions";
pub const WS_SLOW_DISCONNECTS_TOTAL: &str = "switchboard_ws_slow_disconnects_total";

/// Every name above (docs/metrics.md describes each; a test holds both).
pub const NAMES: &[&str] = &[
    MESSAGES_TOTAL,
    CONVERSATIONS_OPENED_TOTAL,
    CONVERSATIONS_CLOSED_TOTAL,
    ASSIGNMENTS_TOTAL,
    ASSIGNMENT_SECONDS,
    IDLE_REASSIGNMENTS_TOTAL,
    SLA_EVENTS_TOTAL,
    SEND_FAILURES_TOTAL,
    QUEUE_DEPTH,
    AGENTS_ONLINE,
    CONVERSATION_ACTORS,
    CONVERSATION_PASSIVATIONS_TOTAL,
    CONVERSATION_ACTOR_FAILURES_TOTAL,
    ACTOR_RESTARTS_TOTAL,
    DIRECT_INGEST_FALLBACKS_TOTAL,
    WS_SESSIONS,
    WS_SLOW_DISCONNECTS_TOTAL,
];

/// Describes every metric above to the installed recorder.
pub fn describe() {
    describe_counter!(MESSAGES_TOTAL, Unit::Count, "messages stored, by direction (in: from customers, out: sent)");
    describe_counter!(CONVERSATIONS_OPENED_TOTAL, Unit::Count, "conversations opened");
    describe_counter!(CONVERSATIONS_CLOSED_TOTAL, Unit::Count, "conversations closed");
    describe_counter!(ASSIGNMENTS_TOTAL, Unit::Count, "conversations assigned to an agent");
    describe_histogram!(
        ASSIGNMENT_SECONDS,
        Unit::Seconds,
        "time from a conversation being queued to its assignment's commit, by team"
    );
    describe_counter!(
        IDLE_REASSIGNMENTS_TOTAL,
        Unit::Count,
        "conversations moved on because their agent did not answer in time"
    );
    describe_counter!(SLA_EVENTS_TOTAL, Unit::Count, "SLA warnings and breaches, by kind and state");
    describe_counter!(SEND_FAILURES_TOTAL, Unit::Count, "agents' sends refused, by error code");
    describe_gauge!(QUEUE_DEPTH, Unit::Count, "conversations waiting for an agent, by team");
    describe_gauge!(AGENTS_ONLINE, Unit::Count, "agents with status online and a session open, by team");
    describe_gauge!(CONVERSATION_ACTORS, Unit::Count, "conversation actors in memory");
    describe_counter!(CONVERSATION_PASSIVATIONS_TOTAL, Unit::Count, "idle conversation actors let go from memory");
    describe_counter!(
        CONVERSATION_ACTOR_FAILURES_TOTAL,
        Unit::Count,
        "conversation actors that failed and were restarted from the store"
    );
    describe_counter!(ACTOR_RESTARTS_TOTAL, Unit::Count, "agent, team and router actors restarted by their supervisor");
    describe_counter!(
        DIRECT_INGEST_FALLBACKS_TOTAL,
        Unit::Count,
        "webhook messages stored through the inbox because their conversation actor failed"
    );
    describe_gauge!(WS_SESSIONS, Unit::Count, "WebSocket sessions attached");
    describe_counter!(WS_SLOW_DISCONNECTS_TOTAL, Unit::Count, "WebSocket sessions dropped because they fell behind");
}
