//! The messages the actors send one another, in one module below them all,
//! so that no actor module has to import another to name what it sends
//! (they used to import each other in a cycle: agent ↔ conversation ↔
//! router ↔ team ↔ manager ↔ shared). One enum per actor; a request
//! carries its reply port, and business refusals go back through it.

use std::sync::Arc;

use protocol::ApiError;
use protocol::graph::SendMessageResponse;
use protocol::model::{AgentStatus, Role, Route};
use protocol::time::UnixMs;
use protocol::ws::{AgentWorkload, ServerFrame, TemplateRequest, UnassignReason};
use ractor::RpcReplyPort;
use serde_json::{Map, Value};
use storage::{InboxEntry, IngestMessage, IngestOutcome, SendIntent};
use tokio::sync::mpsc;

use crate::routing::Routing;
use crate::timers::{Deadline, DeadlineKind};

// ---- the conversation actor ----

/// Who is asking: an authenticated agent, manager or admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub agent_id: String,
    pub role: Role,
}

pub type Reply = RpcReplyPort<Result<Map<String, Value>, ApiError>>;

/// What a client asks of a conversation.
#[derive(Debug)]
pub enum RequestKind {
    Send { text: String },
    SendTemplate { template: TemplateRequest },
    SetFields { fields: Map<String, Value> },
    Close { fields: Option<Map<String, Value>> },
    Transfer { team: Option<String>, agent: Option<String>, note: Option<String> },
}

pub enum ConversationMsg {
    /// An inbound message or status, durably in the inbox.
    Inbound(Box<InboxEntry>),
    /// An inbound message straight from a webhook, not yet stored: the actor
    /// claims its wamid and applies it in one commit, then answers (accepted
    /// or duplicate). If the actor fails first, the answer is dropped and the
    /// webhook stores the message in the inbox instead.
    Direct {
        ingest: Box<IngestMessage>,
        reply: tokio::sync::oneshot::Sender<IngestOutcome>,
    },
    /// The router or a team reserved a slot with `agent_id` for this
    /// conversation; `route` says why it got it.
    Assign {
        conversation_id: String,
        agent_id: String,
        route: Route,
    },
    /// Its team passed its overflow bound: the conversation, still waiting
    /// there, goes to partner team `to_team`.
    Overflow {
        conversation_id: String,
        from_team: String,
        to_team: String,
    },
    /// The agent went offline (after its grace period): route the conversation again.
    Unassign {
        conversation_id: String,
        agent_id: String,
        reason: UnassignReason,
    },
    Request {
        principal: Principal,
        conversation_id: String,
        kind: RequestKind,
        reply: Reply,
    },
    /// The Graph API answered a send started by `Request`.
    SendCompleted(Box<PendingSend>, Result<SendMessageResponse, ApiError>),
    /// The co-pilot's model hook read the pending answer `message_id`
    /// (`CopilotState::pending`) beside the actor: its checked reading
    /// (`None`: the built-in one stands) and the tokens the call used.
    CopilotReading {
        message_id: String,
        reading: Option<crate::copilot::ModelInput>,
        tokens: u64,
    },
    /// A deadline armed for this conversation came due.
    Deadline {
        conversation_id: String,
        kind: DeadlineKind,
        due: UnixMs,
    },
    /// A promise-to-pay follow-up of this conversation came due (the
    /// follow-ups consumer asks): tell who should hear of it and send the
    /// reminder template, in one commit with the `followup_due` event.
    Followup {
        row: Box<crate::followups::FollowupRow>,
        reply: tokio::sync::oneshot::Sender<Result<FollowupOutcome, ApiError>>,
    },
    /// Test hook: makes the actor fail, as a bug would, to exercise supervision.
    #[doc(hidden)]
    FailForTest,
}

/// What became of a follow-up the consumer asked to fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FollowupOutcome {
    /// Committed with its `followup_due` event.
    Fired,
    /// The conversation no longer holds that promise unpaid (a change on
    /// its way to the consumer will say how): nothing was done.
    Stale,
}

pub struct PendingSend {
    pub(crate) conversation_id: String,
    pub(crate) reply: Reply,
    /// The intent committed before Meta was called.
    pub(crate) intent: SendIntent,
}

// ---- the conversation manager ----

pub enum ManagerMsg {
    Deliver {
        thread_key: String,
        message: ConversationMsg,
    },
    /// Housekeeping tick: passivate idle actors.
    Sweep,
    /// A deadline came due; it goes to its conversation's actor.
    Deadline(Deadline),
    /// How many conversation actors are in memory.
    LiveCount(RpcReplyPort<usize>),
}

impl ManagerMsg {
    /// Hands an accepted inbox entry to its conversation.
    pub fn inbound(entry: InboxEntry) -> ManagerMsg {
        ManagerMsg::Deliver { thread_key: entry.thread_key.clone(), message: ConversationMsg::Inbound(Box::new(entry)) }
    }
}

// ---- the agent actor ----

/// The sending half of a WebSocket session's bounded outgoing queue.
#[derive(Clone, Debug)]
pub struct SessionHandle {
    pub session_id: String,
    pub sender: mpsc::Sender<Arc<ServerFrame>>,
}

pub enum AgentMsg {
    Attach {
        session: SessionHandle,
        reply: RpcReplyPort<AgentStatus>,
    },
    Detach {
        session_id: String,
    },
    SetStatus {
        status: AgentStatus,
        reply: RpcReplyPort<Result<AgentStatus, ApiError>>,
    },
    /// Turns its co-pilot assist on or off for `by` (the agent itself, a
    /// manager or an admin; checked before): the choice and its
    /// `copilot_toggled` event are committed, then in force. Answers the
    /// state now.
    SetCopilot {
        enabled: bool,
        by: String,
        reply: RpcReplyPort<Result<bool, ApiError>>,
    },
    /// A committed event for this agent, in `seq` order.
    Event(Arc<ServerFrame>),
    /// Holds a slot for `conversation_id` if the agent may take a new one now.
    TryReserve {
        conversation_id: String,
        reply: RpcReplyPort<bool>,
    },
    /// The reserved assignment was committed.
    Confirm {
        conversation_id: String,
        thread_key: String,
    },
    /// The reserved assignment did not happen.
    Cancel {
        conversation_id: String,
    },
    /// The conversation left this agent (closed, transferred).
    Release {
        conversation_id: String,
    },
    /// Housekeeping: ends grace periods that ran out.
    Tick,
    Workload(RpcReplyPort<AgentWorkload>),
    /// Tell the teams the free slots again (a team actor was restarted).
    Reannounce,
    /// Its record changed through the admin API (teams, capacity, city,
    /// shift, role, name), or it is back in the pool after a
    /// deactivation: in force from the next assignment.
    Update(Box<crate::settings::AgentSpec>),
    /// Its token was rotated: every session (opened with the old token) ends.
    CloseSessions,
    /// It left the pool: its sessions end, it takes nothing new, and every
    /// conversation it holds is routed again (`agent_offline`); answers, with
    /// how many, once each was handed to its conversation actor.
    Deactivate(RpcReplyPort<usize>),
}

// ---- the team actor ----

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedConversation {
    pub conversation_id: String,
    pub thread_key: String,
    pub queued_at: UnixMs,
    /// An agent this conversation must not go to.
    pub exclude_agent: Option<String>,
    /// Why it is in this team (the route of its assignment here).
    pub route: Route,
    /// Offered only to this agent until then (a busy or offline owner's
    /// `owner_wait_s`), then to the team.
    pub hold: Option<Hold>,
}

/// A queued conversation kept for one agent for a while.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub agent_id: String,
    pub until: UnixMs,
    /// The route of an assignment to that agent.
    pub route: Route,
}

pub enum TeamMsg {
    Enqueue(QueuedConversation),
    /// Many at once: the queue rebuilt at start or after a team restart.
    EnqueueMany(Vec<QueuedConversation>),
    /// An agent's free slots, load or last assignment changed.
    Availability {
        agent_id: String,
        free: u32,
        load: u32,
        /// When it was last given a conversation, by any team (0: never).
        last_assigned_at: UnixMs,
        /// Status online and a session open (whatever its free slots): the
        /// team's `switchboard_agents_online`.
        online: bool,
    },
    /// A queued conversation was closed or moved elsewhere.
    Remove {
        conversation_id: String,
    },
    Stats(RpcReplyPort<TeamStats>),
    /// How many conversations the team could assign now: its members' free
    /// slots as it believes them (0 outside its hours). An overflowing
    /// partner asks before it sends any.
    FreeSlots(RpcReplyPort<u32>),
    /// Housekeeping: offers held conversations again, releases those whose hold ran out.
    Tick,
    /// Its members changed (the agent pool changed): these, in pool order.
    SetMembers(Vec<String>),
    /// The agent left the pool: what is held for it waits for everyone now.
    ReleaseHolds {
        agent_id: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TeamStats {
    pub queued: u32,
    pub oldest_queued_at: Option<UnixMs>,
}

// ---- the router ----

#[derive(Clone, Debug)]
pub struct RouteRequest {
    pub conversation_id: String,
    pub thread_key: String,
    pub queued_at: UnixMs,
    /// What routing decided (`crate::routing::route`).
    pub routing: Routing,
}

pub enum RouterMsg {
    Route(RouteRequest),
}
