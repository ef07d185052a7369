//! Switchboard's business logic as supervised ractor actors.
//!
//! Layout (one line each: what it owns, who restarts it):
//! - [`manager::ConversationManager`]: the live conversation actors; supervises,
//!   passivates and restarts them. Not restarted (its handlers do not fail).
//! - [`conversation::ConversationActor`]: one customer thread's open
//!   conversation; restarted by the manager from the store.
//! - [`agent::AgentActor`]: an agent's presence, capacity and sessions;
//!   restarted by the root supervisor from the store.
//! - [`team::TeamActor`]: a team's queue and assignment strategy; restarted by
//!   the root supervisor, its queue rebuilt from the store.
//! - [`router::RouterActor`]: where a conversation goes; restarted by the root
//!   supervisor (stateless).
//! - [`rules`]: pure decisions (source, window, fields) that unit tests call directly.
//! - [`decide`]: the conversation's decisions (what an input does to the
//!   records, the log, the store and the actors); [`requests`]: who may act
//!   on a conversation, what a send becomes, where a transfer goes. Pure.
//!
//! [`System`] starts it all, recovers from the store, and is what the engine
//! calls. Deliberately absent: sockets, HTTP, the configuration file and the
//! wall clock (time comes from a [`clock::Clock`] the engine passes in).

pub mod agent;
pub mod assist;
pub mod clock;
pub mod configuration;
pub mod contacts;
pub mod conversation;
pub mod copilot;
pub mod deadlines;
pub mod decide;
pub mod directory;
pub mod followups;
pub mod hours;
pub mod manager;
pub mod messages;
pub mod metrics;
pub mod pool;
pub mod requests;
pub mod roster;
pub mod router;
pub mod routing;
pub mod rules;
pub mod settings;
pub mod shared;
pub mod team;
pub mod timers;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use protocol::ApiError;
use protocol::model::{AgentStatus, ConversationStatus};
use protocol::ws::{TeamWorkload, Workload};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use storage::{Batch, CommitOutcome, EventSink, Op, OpenEntry, Published, Reader, Store, StoreOptions};
use tokio::task::JoinHandle;

use crate::agent::{AgentActor, AgentArgs, AgentMsg, SessionHandle};
use crate::clock::SharedClock;
use crate::conversation::{ConversationMsg, RequestKind};
use crate::manager::{ConversationManager, ManagerMsg};
use crate::router::{RouterActor, RouterMsg};
use crate::settings::{AgentSpec, Settings, TeamSpec};
use crate::shared::{Directory, Outbound, Principal, Shared};
use crate::team::{QueuedConversation, TeamActor, TeamArgs, TeamMsg};

pub use pool::token_digest;
pub use storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StorageError),
    #[error("cannot start an actor: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    #[error("invalid settings: {0}")]
    Settings(String),
}

/// Hands what the store committed to the actors: inbox entries to their
/// conversation (through the manager), events to their agent; and the event
/// log's head to whoever reads the log (its consumers wake on it).
struct ActorSink {
    shared: OnceLock<Arc<Shared>>,
    log_head: tokio::sync::watch::Sender<u64>,
}

impl EventSink for ActorSink {
    fn committed(&self, published: Published) {
        if let Some(head) = published.log_head {
            self.log_head.send_replace(head);
        }
        let Some(shared) = self.shared.get() else {
            tracing::error!("committed before the actors were ready; entries stay in the inbox until restart");
            return;
        };
        let directory = shared.directory();
        for entry in published.inbox {
            let _ = directory.manager.cast(ManagerMsg::inbound(entry));
        }
        for (agent_id, frame) in published.events {
            if let Some(agent) = directory.agent(&agent_id) {
                let _ = agent.cast(AgentMsg::Event(Arc::new(frame)));
            }
        }
    }
}

/// Sends whose intent was recorded but whose outcome was not: the last run
/// stopped while Meta had them. They are never sent again (that could send
/// a message twice): each goes into its conversation's history as
/// `unknown`, oldest first, before any conversation actor runs, and waits
/// for a status from Meta to tell its wamid (`storage::SendIntents::claim`).
async fn recover_send_intents(shared: &Shared) -> Result<usize, StartError> {
    let mut recovered = 0;
    for (thread_key, intents) in shared.reader.send_intents()? {
        let mut in_flight: Vec<_> = intents.intents.into_iter().filter(|intent| intent.unknown_at.is_none()).collect();
        in_flight.sort_by_key(|intent| intent.created_at);
        for intent in in_flight {
            let batch = match shared.reader.conversation(&intent.conversation_id)? {
                Some(mut record) => {
                    recovered += 1;
                    tracing::warn!(
                        conversation_id = %intent.conversation_id,
                        local_id = %intent.local_id,
                        "a send's outcome is unknown (the engine stopped while Meta had it)"
                    );
                    conversation::unknown_send_batch(
                        &mut record,
                        &intent,
                        protocol::events::Actor::System,
                        shared.now(),
                    )
                }
                // Its conversation was never stored: nothing to show it in.
                None => vec![Op::ResolveSendIntent {
                    thread_key: thread_key.clone(),
                    local_id: intent.local_id,
                    wamid: None,
                }],
            };
            shared.store.commit(batch).await?;
        }
    }
    Ok(recovered)
}

/// The routing configuration a start uses: the one an admin last set
/// through the API (`PUT /api/v1/admin/routing`, kept in the store) while it
/// still validates against the configured teams, agents and numbers; else
/// the configuration file's (`file`, already checked), with a warning that
/// names the problem (a team the stored rules name was removed from the
/// file, say). The stored copy is kept either way: a `PUT` replaces it.
fn routing_in_force(
    settings: &Settings,
    agents: &[AgentSpec],
    reader: &Reader,
    file: routing::RoutingTable,
) -> Result<routing::RoutingTable, StartError> {
    // The file's rules were checked against the file's agents; a pool the
    // admin API changed is checked again. It may lack an agent a rule names
    // (deactivated while other rules were in force): routing then offers
    // that agent nothing.
    let file = if agents == settings.agents.as_slice() {
        file
    } else {
        match routing::RoutingTable::new(settings.routing.clone(), &settings.teams, agents, &settings.numbers) {
            Ok(table) => table,
            Err(problem) => {
                tracing::warn!(%problem, "the file's [routing] names an agent no longer in the pool");
                file
            }
        }
    };
    let Some(stored) = reader.setting(configuration::ROUTING)? else { return Ok(file) };
    match configuration::stored_routing_table(&stored, settings, agents) {
        Ok(table) => {
            tracing::info!(
                rules = table.spec().rules.len(),
                "routing rules set through the admin API are in force (they win over the file's [routing])"
            );
            Ok(table)
        }
        Err(problem) => {
            tracing::warn!(
                %problem,
                "the routing rules set through the admin API no longer fit the configuration; \
                 starting with the file's [routing] until they are set again"
            );
            Ok(file)
        }
    }
}

/// Why a change of the runtime configuration did not happen: refused as
/// asked (the client's to fix), or not stored (try again).
enum Refusal {
    Refused(ApiError),
    Unstored(String),
}

fn contact_store_error(error: StorageError) -> ApiError {
    tracing::warn!(%error, "a contact update could not be stored");
    ApiError::unavailable("the contact cannot be changed right now; try again")
}

/// The running actor system.
pub struct System {
    shared: Arc<Shared>,
    root: ActorRef<RootMsg>,
    ticker: JoinHandle<()>,
    timer_tasks: Vec<JoinHandle<()>>,
    log_head: tokio::sync::watch::Receiver<u64>,
}

/// The co-pilot's model hook as the system is started with it.
#[derive(Clone)]
pub struct CopilotHook {
    pub model: Arc<dyn copilot::CopilotModel>,
    /// How long a conversation waits for it before the built-in result stands.
    pub timeout_ms: u64,
}

/// The model hook's default timeout.
pub const DEFAULT_COPILOT_MODEL_TIMEOUT_MS: u64 = 3_000;

/// Timer shards: one task each, conversations spread over them.
const TIMER_SHARDS: usize = 2;

impl System {
    /// Opens the store under `data_dir`, spawns every actor, recovers open
    /// conversations, queues and unapplied inbox entries, and starts the
    /// housekeeping tick. Returns once the system can take traffic.
    pub async fn start(
        settings: Settings,
        data_dir: &Path,
        store_options: StoreOptions,
        outbound: Arc<dyn Outbound>,
        clock: SharedClock,
    ) -> Result<System, StartError> {
        let copilot = CopilotHook { model: Arc::new(copilot::NoModel), timeout_ms: DEFAULT_COPILOT_MODEL_TIMEOUT_MS };
        Self::start_with_copilot(settings, data_dir, store_options, outbound, copilot, clock).await
    }

    /// [`System::start`] with the co-pilot's model hook.
    pub async fn start_with_copilot(
        settings: Settings,
        data_dir: &Path,
        store_options: StoreOptions,
        outbound: Arc<dyn Outbound>,
        copilot: CopilotHook,
        clock: SharedClock,
    ) -> Result<System, StartError> {
        let started = std::time::Instant::now();
        let file_routing = settings.routing_table().map_err(|error| StartError::Settings(error.to_string()))?;
        let sink = Arc::new(ActorSink { shared: OnceLock::new(), log_head: tokio::sync::watch::Sender::new(0) });
        let store = Arc::new(Store::open(data_dir, store_options, sink.clone())?);
        sink.log_head.send_replace(store.reader().log_head()?);
        let store_opened_ms = started.elapsed().as_millis();
        let reader = store.reader();
        let (roster, warnings) =
            roster::Roster::new(&settings.agents, reader.setting(roster::AGENTS)?.as_deref(), &settings.teams);
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        if roster.stored_form().is_some() {
            tracing::info!(
                agents = roster.agents().len(),
                "the agent pool as changed through the admin API is in force (it wins over the file's [[agents]])"
            );
        }
        let routing = routing_in_force(&settings, roster.agents(), &reader, file_routing)?;
        let open = reader.open_conversations()?;
        let inbox = reader.inbox()?;
        let open_read_ms = started.elapsed().as_millis();
        let policies = deadlines::Policies::from_settings(&settings).map_err(StartError::Settings)?;
        let settings = Arc::new(settings);
        // Fired deadlines go to the manager, which is spawned just below.
        let manager_slot: Arc<OnceLock<ActorRef<ManagerMsg>>> = Arc::new(OnceLock::new());
        let fire_target = manager_slot.clone();
        let (timers, timer_tasks) = timers::Timers::start(
            TIMER_SHARDS,
            clock.clone(),
            Arc::new(move |deadline, _fired_at| {
                if let Some(manager) = fire_target.get() {
                    let _ = manager.cast(ManagerMsg::Deadline(deadline));
                }
            }),
        );
        let shared = Arc::new(Shared {
            store,
            reader: reader.clone(),
            clock,
            settings: settings.clone(),
            outbound,
            copilot_model: copilot.model,
            copilot_model_timeout_ms: copilot.timeout_ms,
            timers,
            policies,
            routing: RwLock::new(Arc::new(routing)),
            roster: RwLock::new(Arc::new(roster)),
            directory: OnceLock::new(),
            stopping: Default::default(),
            contact_updates: tokio::sync::Mutex::new(()),
            configuration_updates: tokio::sync::Mutex::new(()),
        });

        let (manager, _) = Actor::spawn(None, ConversationManager, shared.clone()).await?;
        let _ = manager_slot.set(manager.clone());
        let (root, _) = Actor::spawn(None, RootSupervisor, shared.clone()).await?;
        let mut held = AgentRecovery::group(&open, deadlines::utc_day_of(shared.now()));
        let history = AssignmentHistory::scan(&shared)?;
        let router = spawn_child(&root, Child::Router, &shared, &mut held, &history).await?;
        let Spawned::Router(router) = router else { unreachable!("asked for a router") };
        let directory = Directory {
            manager: manager.clone(),
            router: RwLock::new(router),
            agents: DashMap::new(),
            teams: DashMap::new(),
        };
        for spec in &settings.teams {
            if let Spawned::Team(team) =
                spawn_child(&root, Child::Team(spec.clone()), &shared, &mut held, &history).await?
            {
                directory.teams.insert(spec.id.clone(), team);
            }
        }
        for spec in shared.roster().agents() {
            if let Spawned::Agent(agent) =
                spawn_child(&root, Child::Agent(spec.clone()), &shared, &mut held, &history).await?
            {
                directory.agents.insert(spec.id.clone(), agent);
            }
        }
        if shared.directory.set(directory).is_err() {
            unreachable!("the directory is set once");
        }
        let _ = sink.shared.set(shared.clone());
        let spawned_ms = started.elapsed().as_millis();
        let unknown_sends = recover_send_intents(&shared).await?;

        // Deadlines are stored, not scheduled: arm every open conversation's
        // again (overdue ones fire at once; their owners ignore stale ones).
        shared.timers.arm_many(
            open.iter().filter_map(|(id, entry)| Some((storage::conversation_number(id)?, entry))).flat_map(
                |(conversation, entry)| {
                    deadlines::deadlines_of_entry(entry).into_iter().map(move |(kind, due)| timers::Deadline {
                        due,
                        conversation,
                        kind,
                    })
                },
            ),
        );
        let armed_ms = started.elapsed().as_millis();
        let open_count = open.len();
        requeue(&shared, open, None);
        // What agents no longer in the pool still hold (one removed from
        // the file, or a stop between a deactivation's commit and its
        // release) is routed again, as their going offline would.
        let stranded: usize = held.values().map(|recovery| recovery.held_threads.len()).sum();
        for (agent_id, recovery) in held {
            for (conversation_id, thread_key) in recovery.held_threads {
                let message = ConversationMsg::Unassign {
                    conversation_id,
                    agent_id: agent_id.clone(),
                    reason: protocol::ws::UnassignReason::AgentOffline,
                };
                let _ = manager.cast(ManagerMsg::Deliver { thread_key, message });
            }
        }
        if stranded > 0 {
            tracing::warn!(
                conversations = stranded,
                "conversations held by agents no longer in the pool are routed again"
            );
        }
        let requeued_ms = started.elapsed().as_millis();
        for entry in inbox {
            let _ = manager.cast(ManagerMsg::inbound(entry));
        }
        // Ready means the queues are rebuilt: each team has taken its queue in.
        for entry in shared.directory().teams.iter() {
            let _ = ractor::call!(entry.value(), TeamMsg::Stats);
        }
        tracing::info!(
            open_conversations = open_count,
            unknown_sends,
            store_opened_ms,
            open_read_ms,
            spawned_ms,
            armed_ms,
            requeued_ms,
            ready_ms = started.elapsed().as_millis(),
            "actors started"
        );

        let ticker = {
            let shared = shared.clone();
            let period = Duration::from_millis(settings.tick_ms.max(1));
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(period);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    let directory = shared.directory();
                    let _ = directory.manager.cast(ManagerMsg::Sweep);
                    for entry in directory.agents.iter() {
                        let _ = entry.value().cast(AgentMsg::Tick);
                    }
                    for entry in directory.teams.iter() {
                        let _ = entry.value().cast(TeamMsg::Tick);
                    }
                }
            })
        };
        Ok(System { shared, root, ticker, timer_tasks, log_head: sink.log_head.subscribe() })
    }

    /// The event log's last seq, updated as commits append to it: a log
    /// consumer waits on this, then reads from its cursor.
    pub fn log_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.log_head.clone()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn reader(&self) -> &Reader {
        &self.shared.reader
    }

    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    pub fn now(&self) -> protocol::time::UnixMs {
        self.shared.now()
    }

    /// Lets what the clock's reading now causes begin, without waiting for
    /// the housekeeping tick: fires every deadline due and ends the presence
    /// grace periods that ran out, and returns once each was handed to its
    /// actor. For a manual clock (tests): a message sent to a conversation
    /// after this returns (a webhook) reaches its actor after the deadlines,
    /// so its effects are a marker: whatever the deadlines caused comes
    /// before it on the agent's session.
    pub async fn settle_clock(&self) {
        self.shared.timers.settle().await;
        let agents: Vec<_> = self.shared.directory().agents.iter().map(|entry| entry.value().clone()).collect();
        for agent in &agents {
            let _ = agent.cast(AgentMsg::Tick);
        }
        // An agent answers in mailbox order: once it answers, its tick is done.
        for agent in agents {
            let _ = ractor::call!(agent, AgentMsg::Workload);
        }
        // Then the teams (holds that ran out), answered in mailbox order too.
        let teams: Vec<_> = self.shared.directory().teams.iter().map(|entry| entry.value().clone()).collect();
        for team in &teams {
            let _ = team.cast(TeamMsg::Tick);
        }
        for team in teams {
            let _ = ractor::call!(team, TeamMsg::Stats);
        }
    }

    /// Stores webhook items durably; answers once every item is committed.
    ///
    /// Inbound messages go straight to their conversation actor, which claims
    /// the wamid and applies the message in one commit (no inbox round trip).
    /// Should an actor fail before answering, its message is stored in the
    /// inbox instead and applied when the actor is back; the wamid claim makes
    /// both paths exactly-once. Statuses and other changes go to the inbox in
    /// one commit. `ingested` holds one outcome per item: the stored items
    /// first, then the messages in payload order.
    pub async fn ingest(&self, batch: Batch) -> Result<CommitOutcome, StorageError> {
        let mut stored = Vec::new();
        let mut answers = Vec::new();
        let manager = &self.shared.directory().manager;
        for op in batch {
            let Op::IngestMessage(ingest) = op else {
                stored.push(op);
                continue;
            };
            let thread_key = storage::thread_key(&ingest.phone_number_id, &ingest.contact_key);
            let (reply, answer) = tokio::sync::oneshot::channel();
            let message = ConversationMsg::Direct { ingest: Box::new(ingest.clone()), reply };
            // A failed cast drops `reply`, which sends the message down the inbox path below.
            let _ = manager.cast(ManagerMsg::Deliver { thread_key, message });
            answers.push((ingest, answer));
        }
        let mut outcome =
            if stored.is_empty() { CommitOutcome::default() } else { self.shared.store.commit(stored).await? };
        for (ingest, answer) in answers {
            match answer.await {
                Ok(result) => outcome.ingested.push(result),
                Err(_) => {
                    ::metrics::counter!(crate::metrics::DIRECT_INGEST_FALLBACKS_TOTAL).increment(1);
                    let fallback = self.shared.store.commit(vec![Op::IngestMessage(ingest)]).await?;
                    outcome.ingested.extend(fallback.ingested);
                }
            }
        }
        Ok(outcome)
    }

    /// The stored conversation `principal` may act on: its holder, or a
    /// manager or admin (of its team, when limited to teams).
    fn record_for(
        &self,
        principal: &Principal,
        conversation_id: &str,
    ) -> Result<storage::ConversationRecord, ApiError> {
        let record = self
            .shared
            .reader
            .conversation(conversation_id)
            .map_err(|error| ApiError::unavailable(format!("could not read the conversation: {error}")))?
            .ok_or_else(|| ApiError::not_found(format!("no conversation {conversation_id}")))?;
        if !principal.role.sees_everything()
            && record.conversation.agent.as_deref() != Some(principal.agent_id.as_str())
        {
            return Err(ApiError::forbidden(format!("conversation {conversation_id} is not assigned to you")));
        }
        // A manager limited to teams acts on their conversations only.
        if let Some(teams) = self.scope(principal)
            && record.conversation.team.as_ref().is_none_or(|team| !teams.contains(team))
        {
            return Err(ApiError::forbidden(format!("conversation {conversation_id} is not in a team you manage")));
        }
        Ok(record)
    }

    /// Runs a client request on a conversation; refusals come back as `ApiError`.
    pub async fn request(
        &self,
        principal: Principal,
        conversation_id: &str,
        kind: RequestKind,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
        let record = self.record_for(&principal, conversation_id)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let port = ractor::RpcReplyPort::from(reply);
        let message =
            ConversationMsg::Request { principal, conversation_id: conversation_id.to_owned(), kind, reply: port };
        self.shared
            .directory()
            .manager
            .cast(ManagerMsg::Deliver { thread_key: record.thread_key, message })
            .map_err(|_| ApiError::unavailable("the engine is shutting down"))?;
        answer.await.map_err(|_| ApiError::unavailable("the conversation restarted while handling this; try again"))?
    }

    /// Asks conversation `row.conversation_id`'s actor to fire a follow-up
    /// that came due (the follow-ups consumer calls this).
    pub async fn fire_followup(&self, row: followups::FollowupRow) -> Result<messages::FollowupOutcome, ApiError> {
        let record = self
            .shared
            .reader
            .conversation(&row.conversation_id)
            .map_err(|error| ApiError::unavailable(format!("could not read the conversation: {error}")))?;
        let Some(record) = record else { return Ok(messages::FollowupOutcome::Stale) };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let message = ConversationMsg::Followup { row: Box::new(row), reply };
        self.shared
            .directory()
            .manager
            .cast(ManagerMsg::Deliver { thread_key: record.thread_key, message })
            .map_err(|_| ApiError::unavailable("the engine is shutting down"))?;
        answer.await.map_err(|_| ApiError::unavailable("the conversation restarted while handling this"))?
    }

    /// Records a payment on a conversation, open or closed
    /// (`POST /api/v1/conversations/{id}/payments`): a `payment_recorded`
    /// event, which cancels its follow-ups. Managers and admins (of its
    /// team, when limited), or the agent holding (or who last held) it.
    pub async fn record_payment(
        &self,
        principal: &Principal,
        conversation_id: &str,
        payment: followups::Payment,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
        let record = self.record_for(principal, conversation_id)?;
        let body = protocol::events::EventBody::PaymentRecorded { amount: payment.amount, paid_at: payment.at.clone() };
        let event =
            decide::event_of(&record, self.shared.now(), protocol::events::Actor::user(&principal.agent_id), body);
        self.shared
            .store
            .commit(vec![Op::Event(Box::new(event))])
            .await
            .map_err(|error| ApiError::unavailable(format!("the payment could not be recorded: {error}")))?;
        Ok(decide::object(serde_json::json!({
            "payment": {"conversation_id": conversation_id, "amount": payment.amount, "at": payment.at}
        })))
    }

    /// Attaches a WebSocket session to its agent; returns the agent's status.
    /// The session's `login` goes into the event log first: a session the
    /// log cannot record (the store cannot write) is refused as unavailable.
    pub async fn attach(&self, agent_id: &str, session: SessionHandle) -> Result<AgentStatus, ApiError> {
        let role = self.shared.roster().get(agent_id).map(|spec| spec.role);
        let role = role.ok_or_else(|| ApiError::not_found(format!("no active agent {agent_id}")))?;
        let agent = self.agent(agent_id)?;
        let login = protocol::events::Event {
            at: self.shared.now(),
            conversation_id: None,
            contact: None,
            phone_number_id: None,
            actor: protocol::events::Actor::user(agent_id),
            body: protocol::events::EventBody::Login { role },
        };
        self.shared
            .store
            .commit(vec![Op::Event(Box::new(login))])
            .await
            .map_err(|error| ApiError::unavailable(format!("cannot record the login now: {error}")))?;
        ractor::call!(agent, |reply| AgentMsg::Attach { session, reply })
            .map_err(|_| ApiError::unavailable("the agent is restarting; reconnect"))
    }

    /// `PATCH /api/v1/contacts/{wa_id}` (PROTOCOL §8): a manager or admin
    /// sets fields of a contact's record (creating it when nothing was set
    /// yet). The body is validated whole first (`contacts::parse_patch`);
    /// the new record and its `contact_updated` event are committed as one
    /// batch, under `Shared::contact_updates` so that concurrent updates of
    /// a contact are applied one after the other. Returns the record as it
    /// is now (unchanged, and nothing written, when the body changes nothing).
    pub async fn update_contact(
        &self,
        principal: &Principal,
        wa_id: &str,
        body: &serde_json::Value,
    ) -> Result<storage::ContactRecord, ApiError> {
        if !principal.role.sees_everything() {
            return Err(ApiError::forbidden("only managers and admins change contacts"));
        }
        contacts::check_wa_id(wa_id)?;
        let patch = contacts::parse_patch(body, self.shared.roster().agents())?;
        let _serialized = self.shared.contact_updates.lock().await;
        let before = self.shared.reader.contact(wa_id).map_err(contact_store_error)?;
        let now = self.shared.now();
        let (after, changes) = contacts::apply_patch(before.as_ref(), wa_id, &patch, now)?;
        if changes.is_empty() {
            return Ok(after);
        }
        let actor = protocol::events::Actor::user(principal.agent_id.clone());
        let event = contacts::contact_event(wa_id, None, now, actor, changes);
        self.shared
            .store
            .commit(vec![Op::PutContact(Box::new(after.clone())), Op::Event(Box::new(event))])
            .await
            .map_err(contact_store_error)?;
        Ok(after)
    }

    /// `GET /api/v1/admin/routing`: the routing configuration in force.
    pub fn routing_spec(&self) -> routing::RoutingSpec {
        self.shared.routing().spec().clone()
    }

    /// `PUT /api/v1/admin/routing` (PROTOCOL §7): an admin replaces the
    /// routing configuration. Under `Shared::configuration_updates` it is
    /// checked whole against the teams, numbers and agent pool in force
    /// (`invalid_field` naming the rule and the field; nothing changes);
    /// then the stored copy and a
    /// `configuration_changed` event (`{before, after}`, by the admin) are
    /// committed as one batch, and only once that commit is durable does
    /// the new table replace the one in force: conversations routed from
    /// then on use it, those routed before keep their route. A
    /// configuration equal to the file's `[routing]` is not stored (the
    /// stored copy is forgotten): the file is followed again. Every
    /// accepted `PUT` is recorded, one that changes nothing too.
    pub async fn set_routing(
        &self,
        principal: &Principal,
        spec: routing::RoutingSpec,
    ) -> Result<routing::RoutingSpec, ApiError> {
        if principal.role != protocol::model::Role::Admin {
            return Err(ApiError::forbidden("only admins change the routing rules"));
        }
        let stored = configuration::stored_form(&spec, &self.shared.settings)?;
        // In a task of its own: a client that goes away while the commit is
        // under way drops this future, but the commit it made must still be
        // followed by the swap (else the store and the table in force differ).
        let shared = self.shared.clone();
        let admin = principal.agent_id.clone();
        let after = spec.clone();
        let applied = tokio::spawn(async move {
            let _serialized = shared.configuration_updates.lock().await;
            // Checked against the pool in force, which cannot change meanwhile.
            let settings = &shared.settings;
            let agents = shared.roster();
            let table = routing::RoutingTable::new(after.clone(), &settings.teams, agents.agents(), &settings.numbers)
                .map_err(|error| Refusal::Refused(configuration::routing_refusal(&error, &after)))?;
            let before = shared.routing().spec().clone();
            let event = configuration::routing_changed(&before, &after, &admin, shared.now());
            shared
                .store
                .commit(vec![
                    Op::PutSetting { name: configuration::ROUTING.to_owned(), value: stored },
                    Op::Event(Box::new(event)),
                ])
                .await
                .map_err(|error| Refusal::Unstored(error.to_string()))?;
            *shared.routing.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(table);
            tracing::info!(%admin, rules = after.rules.len(), "routing rules changed");
            Ok::<(), Refusal>(())
        });
        let unstored = |problem: String| {
            tracing::warn!(%problem, "a routing change could not be stored");
            ApiError::unavailable("the routing rules cannot be changed right now; try again")
        };
        match applied.await.map_err(|error| unstored(error.to_string()))? {
            Ok(()) => Ok(spec),
            Err(Refusal::Refused(refusal)) => Err(refusal),
            Err(Refusal::Unstored(problem)) => Err(unstored(problem)),
        }
    }

    pub fn detach(&self, agent_id: &str, session_id: &str) {
        if let Ok(agent) = self.agent(agent_id) {
            let _ = agent.cast(AgentMsg::Detach { session_id: session_id.to_owned() });
        }
    }

    pub async fn set_status(&self, agent_id: &str, status: AgentStatus) -> Result<AgentStatus, ApiError> {
        let agent = self.agent(agent_id)?;
        ractor::call!(agent, |reply| AgentMsg::SetStatus { status, reply })
            .map_err(|_| ApiError::unavailable("the agent is restarting; try again"))?
    }

    fn agent(&self, agent_id: &str) -> Result<ActorRef<AgentMsg>, ApiError> {
        self.shared.agent(agent_id).ok_or_else(|| ApiError::not_found(format!("no agent {agent_id}")))
    }

    /// The manager's workload view, now.
    pub async fn workload(&self) -> Workload {
        let directory = self.shared.directory();
        let mut agents = Vec::new();
        for spec in self.shared.roster().agents().iter().filter(|spec| spec.role == protocol::model::Role::Agent) {
            if let Some(agent) = directory.agent(&spec.id)
                && let Ok(view) = ractor::call!(agent, AgentMsg::Workload)
            {
                agents.push(view);
            }
        }
        let now = self.now();
        let mut teams = Vec::new();
        for spec in &self.shared.settings.teams {
            let stats = match directory.team(&spec.id) {
                Some(team) => ractor::call!(team, TeamMsg::Stats).unwrap_or_default(),
                None => Default::default(),
            };
            let members: Vec<_> = agents.iter().filter(|agent| agent.teams.contains(&spec.id)).collect();
            teams.push(TeamWorkload {
                id: spec.id.clone(),
                queued: stats.queued,
                assigned: members.iter().map(|agent| agent.assigned).sum(),
                online_agents: members.iter().filter(|agent| agent.status == AgentStatus::Online).count() as u32,
                longest_wait_s: stats.oldest_queued_at.map_or(0, |at| ((now - at).max(0) / 1000) as u64),
            });
        }
        Workload { at: now, agents, teams }
    }

    /// How many conversation actors are in memory.
    pub async fn live_conversation_actors(&self) -> usize {
        ractor::call!(self.shared.directory().manager, ManagerMsg::LiveCount).unwrap_or(0)
    }

    /// Test hook: makes the conversation actor of `thread_key` fail.
    #[doc(hidden)]
    pub fn fail_conversation_for_test(&self, thread_key: &str) {
        let _ = self
            .shared
            .directory()
            .manager
            .cast(ManagerMsg::Deliver { thread_key: thread_key.to_owned(), message: ConversationMsg::FailForTest });
    }

    /// Stops the actors (each finishes the message in hand), then the store
    /// writer after it has committed everything handed to it.
    pub async fn shutdown(&self) {
        self.stop_actors().await;
        self.close_store();
    }

    /// The first half of [`System::shutdown`]: the actors finish what they
    /// hold and stop; the store stays open (log consumers catch up, then
    /// [`System::close_store`]).
    pub async fn stop_actors(&self) {
        self.shared.stopping.store(true, std::sync::atomic::Ordering::Release);
        self.ticker.abort();
        for task in &self.timer_tasks {
            task.abort();
        }
        let directory = self.shared.directory();
        let _ = directory.manager.drain_and_wait(Some(Duration::from_secs(5))).await;
        self.root.stop_children_and_wait(None, Some(Duration::from_secs(5))).await;
        self.root.stop(None);
    }

    /// Flushes and closes the store (after [`System::stop_actors`]).
    pub fn close_store(&self) {
        self.shared.store.shutdown();
    }
}

/// Puts the open, queued conversations back in their teams' queues (after a
/// start, or after a team restarted: `only_team`), one message per team.
/// Routing says where ([`routing::Trigger::Restart`]: its team, or the
/// number's default team when its team is no longer configured); the router
/// is not asked, since with no agent to offer first it would enqueue each in
/// its team all the same, one message at a time.
fn requeue(shared: &Shared, open: Vec<(String, OpenEntry)>, only_team: Option<&str>) {
    let mut by_team: HashMap<String, Vec<QueuedConversation>> = HashMap::new();
    let mut teamless = 0usize;
    let table = shared.routing();
    for (id, entry) in open.into_iter().filter(|(_, entry)| entry.status == ConversationStatus::Queued) {
        let phone_number_id = entry.thread_key.split_once(':').map_or("", |(number, _)| number);
        let trigger = routing::Trigger::Restart { team: entry.team.clone(), route: entry.route.unwrap_or_default() };
        let routing = table.again(trigger, phone_number_id);
        let Some(team) = routing.team else {
            teamless += 1;
            continue;
        };
        if only_team.is_some_and(|only| only != team) {
            continue;
        }
        let queued = QueuedConversation {
            conversation_id: id,
            thread_key: entry.thread_key,
            queued_at: entry.queued_at,
            exclude_agent: None,
            route: routing.route,
            hold: None,
        };
        by_team.entry(team).or_default().push(queued);
    }
    let directory = shared.directory();
    for (team, queued) in by_team {
        match directory.team(&team) {
            Some(actor) => {
                let _ = actor.cast(TeamMsg::EnqueueMany(queued));
            }
            None => teamless += queued.len(),
        }
    }
    if teamless > 0 && only_team.is_none() {
        tracing::warn!(conversations = teamless, "queued conversations without a configured team stay queued");
    }
}

/// What an agent actor takes back at its start: the conversations it holds
/// (id → thread key), their service windows, and today's first-response
/// breaches. Grouped in one pass over the open index for all agents.
#[derive(Default)]
struct AgentRecovery {
    held_threads: HashMap<String, String>,
    windows: HashMap<String, Option<protocol::time::UnixMs>>,
    frt_breaches_today: u32,
}

impl AgentRecovery {
    fn group(open: &[(String, OpenEntry)], today: i64) -> HashMap<String, AgentRecovery> {
        let mut by_agent: HashMap<String, AgentRecovery> = HashMap::new();
        for (id, entry) in open {
            if let (ConversationStatus::Assigned, Some(agent)) = (entry.status, &entry.agent) {
                let recovery = by_agent.entry(agent.clone()).or_default();
                recovery.held_threads.insert(id.clone(), entry.thread_key.clone());
                recovery.windows.insert(id.clone(), entry.service_until);
            }
            for (agent, at) in &entry.frt_breaches {
                if deadlines::utc_day_of(*at) == today {
                    by_agent.entry(agent.clone()).or_default().frt_breaches_today += 1;
                }
            }
        }
        by_agent
    }
}

/// The long-lived actors the root supervisor restarts.
/// Who was given a conversation last, which the store keeps no record of:
/// each team's last agent (`round_robin` goes on after it) and each agent's
/// last assignment time (`least_loaded`'s tie-break), read from the event
/// log's `assigned` events, newest first, until every configured team and
/// agent is found or [`AssignmentHistory::SCAN_LIMIT`] events were read.
#[derive(Debug, Default)]
struct AssignmentHistory {
    team_last: HashMap<String, String>,
    agent_last: HashMap<String, protocol::time::UnixMs>,
}

impl AssignmentHistory {
    /// Bounds a start's look back: an agent last assigned further back
    /// counts as never assigned, which only orders it first among ties.
    const SCAN_LIMIT: usize = 50_000;

    fn scan(shared: &Shared) -> Result<AssignmentHistory, StorageError> {
        let mut history = AssignmentHistory::default();
        let teams = shared.settings.teams.len();
        let agents = shared.roster().agents().iter().filter(|agent| agent.effective_capacity() > 0).count();
        shared.reader.events_newest_first(Self::SCAN_LIMIT, |_, event| {
            if let protocol::events::EventBody::Assigned { agent_id, team_id, .. } = &event.body {
                history.agent_last.entry(agent_id.clone()).or_insert(event.at);
                if let Some(team) = team_id {
                    history.team_last.entry(team.clone()).or_insert_with(|| agent_id.clone());
                }
            }
            history.team_last.len() < teams || history.agent_last.len() < agents
        })?;
        Ok(history)
    }
}

#[derive(Clone, Debug)]
enum Child {
    Router,
    Team(TeamSpec),
    Agent(AgentSpec),
}

enum Spawned {
    Router(ActorRef<RouterMsg>),
    Team(ActorRef<TeamMsg>),
    Agent(ActorRef<AgentMsg>),
}

async fn spawn_child(
    root: &ActorRef<RootMsg>,
    child: Child,
    shared: &Arc<Shared>,
    held: &mut HashMap<String, AgentRecovery>,
    history: &AssignmentHistory,
) -> Result<Spawned, StartError> {
    let supervisor: ActorCell = root.get_cell();
    let (cell, spawned) = match &child {
        Child::Router => {
            let (actor, _) = Actor::spawn_linked(None, RouterActor, shared.clone(), supervisor).await?;
            (actor.get_cell(), Spawned::Router(actor))
        }
        Child::Team(spec) => {
            let members = shared.roster().members_of(&spec.id);
            let last_agent = history.team_last.get(&spec.id).cloned();
            let args = TeamArgs { spec: spec.clone(), members, shared: shared.clone(), last_agent };
            let (actor, _) = Actor::spawn_linked(None, TeamActor, args, supervisor).await?;
            (actor.get_cell(), Spawned::Team(actor))
        }
        Child::Agent(spec) => {
            let record = shared.reader.agent(&spec.id)?;
            let recovery = held.remove(&spec.id).unwrap_or_default();
            // The record counts every breach of the day, closed conversations'
            // too; a store written before it counted them has only the open
            // conversations' (the open index).
            let today = deadlines::utc_day_of(shared.now());
            let stored = agent::DailyBreaches { day: record.frt_breaches_day, count: record.frt_breaches };
            let frt_breaches_today = stored.on(today).max(recovery.frt_breaches_today);
            let args = AgentArgs {
                spec: spec.clone(),
                shared: shared.clone(),
                status: record.status,
                open: recovery.held_threads,
                windows: recovery.windows,
                frt_breaches_today,
                last_assigned_at: history.agent_last.get(&spec.id).copied().unwrap_or(0),
                copilot: record.copilot,
            };
            let (actor, _) = Actor::spawn_linked(None, AgentActor, args, supervisor).await?;
            (actor.get_cell(), Spawned::Agent(actor))
        }
    };
    let _ = root.cast(RootMsg::Adopt(cell.get_id(), child));
    Ok(spawned)
}

enum RootMsg {
    Adopt(ActorId, Child),
}

/// Supervises the router, the teams and the agents: a failed one is restarted
/// from the store and put back in the directory.
struct RootSupervisor;

struct RootState {
    shared: Arc<Shared>,
    children: HashMap<ActorId, Child>,
}

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<RootMsg>,
        shared: Arc<Shared>,
    ) -> Result<RootState, ActorProcessingErr> {
        Ok(RootState { shared, children: HashMap::new() })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RootMsg>,
        message: RootMsg,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let RootMsg::Adopt(id, child) = message;
        state.children.insert(id, child);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, error) = event else {
            if let SupervisionEvent::ActorTerminated(cell, _, _) = event {
                state.children.remove(&cell.get_id());
            }
            return Ok(());
        };
        let Some(child) = state.children.remove(&cell.get_id()) else { return Ok(()) };
        // An agent comes back as the pool has it now (the admin API may have
        // changed it since it was spawned); one no longer in the pool does not.
        let child = match child {
            Child::Agent(spec) => match state.shared.roster().get(&spec.id) {
                Some(current) => Child::Agent(current.clone()),
                None => {
                    tracing::warn!(agent_id = %spec.id, %error, "a deactivated agent's actor failed; not restarted");
                    state.shared.directory().agents.remove(&spec.id);
                    return Ok(());
                }
            },
            other => other,
        };
        ::metrics::counter!(crate::metrics::ACTOR_RESTARTS_TOTAL).increment(1);
        tracing::error!(child = ?child, %error, "actor failed; restarting from the store");
        let open = state.shared.reader.open_conversations()?;
        // Only a restarted agent needs its held conversations (a team gets its queue from requeue).
        let mut held = match &child {
            Child::Agent(_) => AgentRecovery::group(&open, deadlines::utc_day_of(state.shared.now())),
            _ => HashMap::new(),
        };
        let directory = state.shared.directory();
        let history = match &child {
            Child::Router => AssignmentHistory::default(),
            _ => AssignmentHistory::scan(&state.shared)?,
        };
        match spawn_child(&myself, child.clone(), &state.shared, &mut held, &history).await? {
            Spawned::Router(router) => {
                *directory.router.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = router;
            }
            Spawned::Team(team) => {
                let Child::Team(spec) = &child else { unreachable!() };
                directory.teams.insert(spec.id.clone(), team);
                requeue(&state.shared, open, Some(&spec.id));
                for entry in directory.agents.iter() {
                    let _ = entry.value().cast(AgentMsg::Reannounce);
                }
            }
            Spawned::Agent(agent) => {
                let Child::Agent(spec) = &child else { unreachable!() };
                directory.agents.insert(spec.id.clone(), agent);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod module_dependency_tests {
    //! The actors' modules import each other in one direction: message types
    //! (`messages`) and the directory of long-lived actors (`directory`) sit
    //! below every actor, so no actor module needs another to name what it
    //! sends. Every actor reaches the store and the directory through
    //! `shared`, which names no actor module. Only the manager, the
    //! conversation actors' supervisor, names the conversation actor it
    //! spawns; `lib.rs` (the system) may name them all.

    /// Each actor module's source, and the actor modules it may import.
    const MODULES: &[(&str, &str, &[&str])] = &[
        ("agent", include_str!("agent.rs"), &["shared"]),
        ("conversation", include_str!("conversation.rs"), &["shared"]),
        ("manager", include_str!("manager.rs"), &["conversation", "shared"]),
        ("router", include_str!("router.rs"), &["shared"]),
        ("team", include_str!("team.rs"), &["shared"]),
        // What every actor reaches (store, clock, directory): it names none of them.
        ("shared", include_str!("shared.rs"), &[]),
        ("messages", include_str!("messages.rs"), &[]),
        ("directory", include_str!("directory.rs"), &[]),
    ];

    const ACTOR_MODULES: &[&str] = &["agent", "conversation", "manager", "router", "team", "shared"];

    fn imported_actor_modules(source: &str) -> Vec<&'static str> {
        ACTOR_MODULES
            .iter()
            .copied()
            .filter(|module| {
                source.contains(&format!("crate::{module}::")) || source.contains(&format!("crate::{module};"))
            })
            .collect()
    }

    #[test]
    fn actor_modules_import_no_other_actor_module() {
        let mut violations = Vec::new();
        for (module, source, allowed) in MODULES {
            for imported in imported_actor_modules(source) {
                if imported != *module && !allowed.contains(&imported) {
                    violations.push(format!("{module} imports {imported}"));
                }
            }
        }
        assert!(violations.is_empty(), "import cycle among the actors: {violations:?}");
    }
}
