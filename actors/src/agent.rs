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
    /// When it was last given a conversation (from the event log; 0: never).
    pub last_assigned_at: UnixMs,
    /// Its co-pilot assist as last set (the stored record); `None`: the
    /// configuration's default (`spec.copilot`).
    pub copilot: Option<bool>,
}

pub struct AgentState {
    spec: AgentSpec,
    /// Its working hours (`shift`): outside them it is given nothing new.
    shift: crate::hours::Schedule,
    shared: Arc<Shared>,
    status: AgentStatus,
    sessions: Vec<SessionHandle>,
    open: HashMap<String, String>,
    reserved: HashSet<String>,
    /// When the grace period after the last session closed runs out.
    grace_until: Option<UnixMs>,
    last_announced: Option<(u32, u32, UnixMs, bool)>,
    /// When it was last given a conversation: `least_loaded`'s tie-break
    /// ("longest since last assignment") across all its teams.
    last_assigned_at: UnixMs,
    /// Service windows of held conversations, kept current from the agent's events.
    windows: HashMap<String, Option<UnixMs>>,
    /// First-response breaches of the latest day one was counted.
    frt_breaches: DailyBreaches,
    /// Deactivated through the admin API: it takes nothing new, and a
    /// conversation assigned to it all the same (reserved just before) is
    /// routed again at once. Until the next start, when it is not spawned.
    deactivated: bool,
    /// Its co-pilot assist as set (stored); `None`: the spec's default.
    copilot: Option<bool>,
}

fn schedule_of(spec: &AgentSpec) -> crate::hours::Schedule {
    // Checked before it got here (configuration, admin API); an unreadable
    // shift (never, then) would only keep the agent available.
    spec.shift
        .as_ref()
        .and_then(|shift| crate::hours::Schedule::parse(shift).ok())
        .unwrap_or_else(crate::hours::Schedule::always)
}

/// An agent's first-response breaches on one UTC day (days since the epoch).
///
/// The agent actor owns this count: several conversation actors can breach
/// for one agent at once, and each breach reaches the agent actor as its
/// `sla` frame, one at a time and in commit order. The actor counts it
/// ([`DailyBreaches::count`]) and stores the result
/// (`Op::PutFirstResponseBreaches`) before it passes the frame on, so the
/// stored count never goes back and needs no rule in storage. A crash
/// between the breach's commit and the count's loses that one from the
/// stored count; a start takes the larger of the stored count and the
/// breaches the open index still holds for the day (`AgentRecovery`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DailyBreaches {
    pub day: i64,
    pub count: u32,
}

impl DailyBreaches {
    /// The count after one more breach on `day`: one more on the same day,
    /// 1 on a later day; a breach dated before the day counted (the clock
    /// went back) changes nothing (`None`).
    pub fn count(self, day: i64) -> Option<DailyBreaches> {
        if day == self.day {
            Some(DailyBreaches { day, count: self.count + 1 })
        } else if day > self.day {
            Some(DailyBreaches { day, count: 1 })
        } else {
            None
        }
    }

    /// The breaches counted on `day` (none when the count is of another day).
    pub fn on(self, day: i64) -> u32 {
        if day == self.day { self.count } else { 0 }
    }
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
        let shift = schedule_of(&args.spec);
        Ok(AgentState {
            shift,
            spec: args.spec,
            shared: args.shared,
            status: args.status,
            sessions: Vec::new(),
            open: args.open,
            reserved: HashSet::new(),
            grace_until,
            last_announced: None,
            last_assigned_at: args.last_assigned_at,
            frt_breaches: DailyBreaches { day: today, count: args.frt_breaches_today },
            windows: args.windows,
            deactivated: false,
            copilot: args.copilot,
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
            AgentMsg::SetCopilot { enabled, by, reply } => {
                let _ = reply.send(state.set_copilot(enabled, by).await);
            }
            AgentMsg::Event(frame) => {
                if let Some(breaches) = state.observe(&frame) {
                    state.store_breaches(breaches).await;
                }
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
                state.last_assigned_at = state.shared.now();
                if state.deactivated {
                    state.release_all(UnassignReason::AgentOffline);
                }
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
            AgentMsg::Update(spec) => {
                // Teams it left forget it (`SetMembers`); those it joined hear
                // its free slots from the announcement below.
                state.shift = schedule_of(&spec);
                state.spec = *spec;
                state.deactivated = false;
                state.last_announced = None;
            }
            AgentMsg::CloseSessions => {
                state.close_sessions();
            }
            AgentMsg::Deactivate(reply) => {
                state.deactivated = true;
                state.status = AgentStatus::Offline;
                state.close_sessions();
                state.grace_until = None;
                let held = state.open.len();
                state.release_all(UnassignReason::AgentOffline);
                let _ = reply.send(held);
            }
            AgentMsg::Workload(reply) => {
                let _ = reply.send(AgentWorkload {
                    id: state.spec.id.clone(),
                    name: state.spec.display_name().to_owned(),
                    status: state.status,
                    teams: state.spec.teams.clone(),
                    assigned: state.open.len() as u32,
                    capacity: state.spec.effective_capacity(),
                    open_windows: state.open_windows(),
                    copilot: state.copilot(),
                    frt_breaches: state.frt_breaches_today(),
                });
            }
        }
        state.announce();
        Ok(())
    }
}

impl AgentState {
    /// Whether its co-pilot assist is on: as last set, else as configured.
    fn copilot(&self) -> bool {
        crate::assist::copilot_in_force(self.copilot, &self.spec)
    }

    /// Stores the choice with its `copilot_toggled` event (actor `by`),
    /// then holds it. Setting it to what it is is recorded too: the audit
    /// log shows every request that was granted.
    async fn set_copilot(&mut self, enabled: bool, by: String) -> Result<bool, ApiError> {
        let event = protocol::events::Event {
            at: self.shared.now(),
            conversation_id: None,
            contact: None,
            phone_number_id: None,
            actor: protocol::events::Actor::user(by),
            body: protocol::events::EventBody::CopilotToggled { agent_id: self.spec.id.clone(), enabled },
        };
        let batch = vec![Op::PutAgentCopilot { agent_id: self.spec.id.clone(), enabled }, Op::Event(Box::new(event))];
        self.shared
            .store
            .commit(batch)
            .await
            .map_err(|error| ApiError::unavailable(format!("could not save the co-pilot setting: {error}")))?;
        self.copilot = Some(enabled);
        Ok(enabled)
    }

    /// Keeps the workload figures current from the agent's own events; a
    /// first-response breach returns the day's new count, to be stored.
    fn observe(&mut self, frame: &ServerFrame) -> Option<DailyBreaches> {
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
                let counted = self.frt_breaches.count(today)?;
                self.frt_breaches = counted;
                return Some(counted);
            }
            _ => {}
        }
        None
    }

    /// Stores the day's count. A refused commit is logged and not retried:
    /// the count in memory stays right, and the next breach stores it whole.
    async fn store_breaches(&self, breaches: DailyBreaches) {
        let op =
            Op::PutFirstResponseBreaches { agent_id: self.spec.id.clone(), day: breaches.day, count: breaches.count };
        if let Err(error) = self.shared.store.commit(vec![op]).await {
            tracing::warn!(agent_id = %self.spec.id, %error, "could not store the first-response breach count");
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
        self.frt_breaches.on(crate::deadlines::utc_day_of(self.shared.now()))
    }

    /// Online, a session open, inside its shift, some capacity (contract §7):
    /// a shift's start or end is announced by the next housekeeping tick.
    fn eligible(&self) -> bool {
        !self.deactivated
            && self.status == AgentStatus::Online
            && !self.sessions.is_empty()
            && self.spec.effective_capacity() > 0
            && (self.spec.shift.is_none() || self.shift.is_open(self.shared.now()))
    }

    fn load(&self) -> u32 {
        (self.open.len() + self.reserved.len()) as u32
    }

    /// Online for the operators' `agents_online`: status online and a
    /// session open, whatever its capacity or shift.
    fn online(&self) -> bool {
        !self.deactivated && self.status == AgentStatus::Online && !self.sessions.is_empty()
    }

    fn free_slots(&self) -> u32 {
        if !self.eligible() {
            return 0;
        }
        self.spec.effective_capacity().saturating_sub(self.load())
    }

    /// Tells the agent's teams how many slots it has free (and whether it is
    /// online), when that changed.
    fn announce(&mut self) {
        let now = (self.free_slots(), self.load(), self.last_assigned_at, self.online());
        if self.last_announced == Some(now) {
            return;
        }
        self.last_announced = Some(now);
        let directory = self.shared.directory();
        for team in &self.spec.teams {
            if let Some(team) = directory.team(team) {
                let _ = team.cast(TeamMsg::Availability {
                    agent_id: self.spec.id.clone(),
                    free: now.0,
                    load: now.1,
                    last_assigned_at: now.2,
                    online: now.3,
                });
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

    /// Ends every session (dropping its queue's sender ends the WebSocket
    /// session, which tells its client why); the grace period begins, as
    /// when the last session closes.
    fn close_sessions(&mut self) {
        if self.sessions.is_empty() {
            return;
        }
        metrics::gauge!(crate::metrics::WS_SESSIONS).decrement(self.sessions.len() as f64);
        self.sessions.clear();
        self.grace_until = Some(self.shared.now() + self.shared.settings.presence_grace_ms);
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

#[cfg(test)]
mod tests {
    use super::DailyBreaches;

    #[test]
    fn breaches_are_counted_per_day() {
        let start = DailyBreaches::default();
        let first = start.count(20_000).unwrap();
        assert_eq!(first, DailyBreaches { day: 20_000, count: 1 }, "a later day starts at 1");
        let second = first.count(20_000).unwrap();
        assert_eq!(second, DailyBreaches { day: 20_000, count: 2 }, "the same day adds one");
        let next_day = second.count(20_001).unwrap();
        assert_eq!(next_day, DailyBreaches { day: 20_001, count: 1 });
        assert_eq!(next_day.count(20_000), None, "a breach dated before the counted day changes nothing");
        assert_eq!((second.on(20_000), second.on(20_001), second.on(19_999)), (2, 0, 0));
    }
}
