//! The agent actor: one per configured agent, manager or admin.
//!
//! Owns: presence (status, sessions, grace period), capacity accounting (open
//! conversations and in-flight reservations) and the fan-out of the agent's
//! events to its WebSocket sessions.
//! Restarted by: the system supervisor, from the store (status, open conversations).
//!
//! It is the single authority on its own capacity: teams and the router must
//! `TryReserve` a slot before a conversation is assigned, so capacity is never
//! exceeded even when several teams assign at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use protocol::ApiError;
use protocol::model::AgentStatus;
use protocol::time::UnixMs;
use protocol::ws::{AgentWorkload, ServerFrame, SlaKind, SlaState, UnassignReason};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use storage::Op;
use tokio::sync::mpsc;

pub use crate::messages::{AgentMsg, SessionHandle};
use crate::messages::{ConversationMsg, ManagerMsg, TeamMsg};
use crate::settings::AgentSpec;
use crate::shared::Shared;

pub struct AgentActor;

pub struct AgentArgs {
    pub spec: AgentSpec,
    pub shared: Arc<Shared>,
    pub status: AgentStatus,
    /// Open assigned conversations (id → thread key), from the store.
    pub open: HashMap<String, String>,
    /// Their service windows (id → service_until), from the store.
    pub windows: HashMap<String, Option<UnixMs>>,
    /// First-response breaches today (UTC) found in the store at start.
    pub frt_breaches_today: u32,
}

pub struct AgentState {
    spec: AgentSpec,
    shared: Arc<Shared>,
    status: AgentStatus,
    sessions: Vec<SessionHandle>,
    open: HashMap<String, String>,
    reserved: HashSet<String>,
    /// When the grace period after the last session closed runs out.
    grace_until: Option<UnixMs>,
    last_announced: Option<(u32, u32)>,
    /// Service windows of held conversations, kept current from the agent's events.
    windows: HashMap<String, Option<UnixMs>>,
    /// (UTC day number, first-response breaches that day).
    frt_breaches: (i64, u32),
}

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: AgentArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // With no session at start, an agent that was online gets the grace
        // period to reconnect before its conversations are routed elsewhere.
        let grace_until = (!args.open.is_empty() || args.status != AgentStatus::Offline)
            .then(|| args.shared.now() + args.shared.settings.presence_grace_ms);
        let today = crate::deadlines::utc_day_of(args.shared.now());
        Ok(AgentState {
            spec: args.spec,
            shared: args.shared,
            status: args.status,
            sessions: Vec::new(),
            open: args.open,
            reserved: HashSet::new(),
            grace_until,
            last_announced: None,
            frt_breaches: (today, args.frt_breaches_today),
            windows: args.windows,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMsg::Attach { session, reply } => {
                state.sessions.push(session);
                state.grace_until = None;
                metrics::gauge!(crate::metrics::WS_SESSIONS).increment(1.0);
                let _ = reply.send(state.status);
            }
            AgentMsg::Detach { session_id } => {
                let before = state.sessions.len();
                state.sessions.retain(|session| session.session_id != session_id);
                if state.sessions.len() < before {
                    metrics::gauge!(crate::metrics::WS_SESSIONS).decrement(1.0);
                }
                if state.sessions.is_empty() {
                    state.grace_until = Some(state.shared.now() + state.shared.settings.presence_grace_ms);
                }
            }
            AgentMsg::SetStatus { status, reply } => {
                let persisted = state
                    .shared
                    .store
                    .commit(vec![Op::PutAgentStatus { agent_id: state.spec.id.clone(), status }])
                    .await;
                match persisted {
                    Ok(_) => {
                        state.status = status;
                        if status == AgentStatus::Offline {
                            state.release_all(UnassignReason::AgentOffline);
                        }
                        let _ = reply.send(Ok(status));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(ApiError::unavailable(format!("could not save the status: {error}"))));
                    }
                }
            }
            AgentMsg::Event(frame) => {
                state.observe(&frame);
                state.push(frame);
            }
            AgentMsg::TryReserve { conversation_id, reply } => {
                let granted = state.free_slots() > 0 && !state.open.contains_key(&conversation_id);
                if granted {
                    state.reserved.insert(conversation_id);
                }
                let _ = reply.send(granted);
            }
            AgentMsg::Confirm { conversation_id, thread_key } => {
                state.reserved.remove(&conversation_id);
                state.open.insert(conversation_id, thread_key);
            }
            AgentMsg::Cancel { conversation_id } => {
                state.reserved.remove(&conversation_id);
            }
            AgentMsg::Release { conversation_id } => {
                state.open.remove(&conversation_id);
            }
            AgentMsg::Tick => {
                if state.grace_until.is_some_and(|until| state.shared.now() >= until) {
                    state.grace_until = None;
                    if state.status != AgentStatus::Offline {
                        state.status = AgentStatus::Offline;
                        state
                            .shared
                            .store
                            .commit(vec![Op::PutAgentStatus {
                                agent_id: state.spec.id.clone(),
                                status: AgentStatus::Offline,
                            }])
                            .await?;
                    }
                    state.release_all(UnassignReason::AgentOffline);
                }
            }
            AgentMsg::Reannounce => state.last_announced = None,
            AgentMsg::Workload(reply) => {
                let _ = reply.send(AgentWorkload {
                    id: state.spec.id.clone(),
                    name: state.spec.display_name().to_owned(),
                    status: state.status,
                    teams: state.spec.teams.clone(),
                    assigned: state.open.len() as u32,
                    capacity: state.spec.effective_capacity(),
                    open_windows: state.open_windows(),
                    copilot: false,
                    frt_breaches: state.frt_breaches_today(),
                });
            }
        }
        state.announce();
        Ok(())
    }
}

impl AgentState {
    /// Keeps the workload figures current from the agent's own events.
    fn observe(&mut self, frame: &ServerFrame) {
        match frame {
            ServerFrame::Assigned { conversation, .. } => {
                self.windows.insert(conversation.id.clone(), conversation.service_until);
            }
            ServerFrame::Window { conversation_id, service_until, .. } => {
                if let Some(window) = self.windows.get_mut(conversation_id) {
                    *window = *service_until;
                }
            }
            ServerFrame::Unassigned { conversation_id, .. } => {
                self.windows.remove(conversation_id);
            }
            ServerFrame::Sla { kind: SlaKind::FirstResponse, state: SlaState::Breached, .. } => {
                let today = crate::deadlines::utc_day_of(self.shared.now());
                if self.frt_breaches.0 != today {
                    self.frt_breaches = (today, 0);
                }
                self.frt_breaches.1 += 1;
            }
            _ => {}
        }
    }

    fn open_windows(&self) -> u32 {
        let now = self.shared.now();
        self.windows
            .iter()
            .filter(|(id, until)| self.open.contains_key(*id) && until.is_some_and(|until| now < until))
            .count() as u32
    }

    fn frt_breaches_today(&self) -> u32 {
        if self.frt_breaches.0 == crate::deadlines::utc_day_of(self.shared.now()) { self.frt_breaches.1 } else { 0 }
    }

    fn eligible(&self) -> bool {
        self.status == AgentStatus::Online && !self.sessions.is_empty() && self.spec.effective_capacity() > 0
    }

    fn load(&self) -> u32 {
        (self.open.len() + self.reserved.len()) as u32
    }

    fn free_slots(&self) -> u32 {
        if !self.eligible() {
            return 0;
        }
        self.spec.effective_capacity().saturating_sub(self.load())
    }

    /// Tells the agent's teams how many slots it has free, when that changed.
    fn announce(&mut self) {
        let now = (self.free_slots(), self.load());
        if self.last_announced == Some(now) {
            return;
        }
        self.last_announced = Some(now);
        let directory = self.shared.directory();
        for team in &self.spec.teams {
            if let Some(team) = directory.team(team) {
                let _ = team.cast(TeamMsg::Availability { agent_id: self.spec.id.clone(), free: now.0, load: now.1 });
            }
        }
    }

    /// Sends an event to every session; a session whose queue is full is
    /// dropped (it reconnects with `resume_from`), so one slow client never
    /// holds up the agent or the engine.
    fn push(&mut self, frame: Arc<ServerFrame>) {
        if self.sessions.is_empty() {
            return;
        }
        let agent_id = &self.spec.id;
        self.sessions.retain(|session| match session.sender.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(agent_id = %agent_id, session_id = %session.session_id, "session too slow, disconnecting");
                metrics::counter!(crate::metrics::WS_SLOW_DISCONNECTS_TOTAL).increment(1);
                metrics::gauge!(crate::metrics::WS_SESSIONS).decrement(1.0);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::gauge!(crate::metrics::WS_SESSIONS).decrement(1.0);
                false
            }
        });
        if self.sessions.is_empty() && self.grace_until.is_none() {
            self.grace_until = Some(self.shared.now() + self.shared.settings.presence_grace_ms);
        }
    }

    /// Gives up every open conversation: each is unassigned and routed again.
    fn release_all(&mut self, reason: UnassignReason) {
        let manager = &self.shared.directory().manager;
        for (conversation_id, thread_key) in self.open.drain() {
            let _ = manager.cast(ManagerMsg::Deliver {
                thread_key,
                message: ConversationMsg::Unassign { conversation_id, agent_id: self.spec.id.clone(), reason },
            });
        }
    }
}
