//! What every actor can reach: the store, the clock, the settings, the Graph
//! API port and the directory of long-lived actors.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use protocol::ApiError;
use protocol::graph::{SendMessageRequest, SendMessageResponse};
use storage::{Reader, Store};

use ractor::ActorRef;

use crate::clock::SharedClock;
pub use crate::directory::Directory;
pub use crate::messages::Principal;
use crate::messages::{AgentMsg, ConversationMsg, ManagerMsg};
use crate::settings::Settings;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The Graph API, as the actors see it. The engine implements it with HTTP
/// (retries, backoff and Meta's error mapping included); tests with a fake.
pub trait Outbound: Send + Sync + 'static {
    fn send(
        &self,
        phone_number_id: String,
        request: SendMessageRequest,
    ) -> BoxFuture<Result<SendMessageResponse, ApiError>>;

    /// One attempt, throttling not retried: for a sender that paces and
    /// backs off itself (the engine's broadcasts). The refusal keeps Meta's
    /// code in `detail.meta_code`. By default the same as [`Outbound::send`].
    fn send_once(
        &self,
        phone_number_id: String,
        request: SendMessageRequest,
    ) -> BoxFuture<Result<SendMessageResponse, ApiError>> {
        self.send(phone_number_id, request)
    }
}

pub struct Shared {
    pub store: Arc<Store>,
    pub reader: Reader,
    pub clock: SharedClock,
    pub settings: Arc<Settings>,
    pub outbound: Arc<dyn Outbound>,
    /// The co-pilot's model hook (`copilot::NoModel`: the built-in engine alone).
    pub copilot_model: Arc<dyn crate::copilot::CopilotModel>,
    /// How long the conversation actor waits for the model hook before the
    /// built-in result stands.
    pub copilot_model_timeout_ms: u64,
    pub timers: crate::timers::Timers,
    pub policies: crate::deadlines::Policies,
    /// The routing configuration in force; replaced whole when an admin
    /// changes it, read per decision (a conversation routed meanwhile keeps
    /// the table it was routed with).
    pub(crate) routing: std::sync::RwLock<Arc<crate::routing::RoutingTable>>,
    pub(crate) directory: OnceLock<Directory>,
    /// Set when shutdown begins: deadlines still queued are dropped (a start
    /// arms every open conversation's deadlines again from the store).
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    /// Held by whoever reads a contact's record to write it again (a
    /// `PATCH`, an opt-out word in a conversation actor) from the read
    /// until the commit returns, so two updates of one contact cannot both
    /// start from the same record and lose one. One mutex for every
    /// contact: updates are rare (people and opt-out words), and a commit
    /// takes a few milliseconds. The one lock held across a commit: the
    /// writer never takes it, so it cannot wait on itself.
    pub contact_updates: tokio::sync::Mutex<()>,
    /// The agent pool in force (the file's agents as the admin API changed
    /// them): who is active, with which token, in which teams. Replaced
    /// whole on every change; read wherever "the agents" are meant.
    pub(crate) roster: std::sync::RwLock<Arc<crate::roster::Roster>>,
    /// Held by a change of the runtime configuration (`System::set_routing`,
    /// the agent pool's changes) from reading what is in force until the
    /// change is committed and swapped in, so two changes cannot commit in
    /// one order and swap in the other (what is in force is always the
    /// last committed), and a routing table is never built from a pool
    /// about to change. Held across a commit, like `contact_updates`; the
    /// writer never takes it. Taken before `contact_updates`, never after.
    pub(crate) configuration_updates: tokio::sync::Mutex<()>,
}

impl Shared {
    /// The directory; set once every long-lived actor is spawned, before any
    /// message flows.
    pub fn directory(&self) -> &Directory {
        self.directory.get().expect("the directory is set before any message is handled")
    }

    pub fn now(&self) -> protocol::time::UnixMs {
        self.clock.now_ms()
    }

    pub fn agent(&self, agent_id: &str) -> Option<ActorRef<AgentMsg>> {
        self.directory().agent(agent_id)
    }

    /// Asks the agent for a slot for `conversation_id`: false when it
    /// refuses, is restarting, or there is no such agent.
    pub async fn try_reserve(&self, agent_id: &str, conversation_id: &str) -> bool {
        let Some(agent) = self.agent(agent_id) else { return false };
        ractor::call!(agent, |reply| AgentMsg::TryReserve { conversation_id: conversation_id.to_owned(), reply })
            .unwrap_or(false)
    }

    /// Hands a conversation whose slot `agent_id` has reserved to its actor,
    /// to be assigned with `route`.
    pub fn assign(&self, thread_key: String, conversation_id: String, agent_id: String, route: protocol::model::Route) {
        let message = ConversationMsg::Assign { conversation_id, agent_id, route };
        let _ = self.directory().manager.cast(ManagerMsg::Deliver { thread_key, message });
    }

    /// The agent pool in force.
    pub fn roster(&self) -> Arc<crate::roster::Roster> {
        self.roster.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The routing table in force.
    pub fn routing(&self) -> Arc<crate::routing::RoutingTable> {
        self.routing.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }
}
