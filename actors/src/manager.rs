//! The conversation manager: supervisor and directory of conversation actors.
//!
//! Owns: the map thread key → live conversation actor. Every message for a
//! conversation goes through it, so it alone decides when an actor exists:
//! - spawns an actor on the first message for a thread (cheap: state loads
//!   lazily inside the actor);
//! - passivates actors idle for `passivate_after_ms` on the housekeeping tick
//!   (one sweep for all, no timer per conversation): the actor drains its
//!   mailbox and stops; messages arriving meanwhile are held and handed to a
//!   fresh actor once the old one has stopped, so two actors never share a thread;
//! - restarts an actor that failed, from the store, and hands it again the
//!   inbox entries it had not applied. Other conversations are not touched.
//!   When it failed because the store could not write (a full disk), or the
//!   inbox cannot be read, the thread waits in `stranded` and its entries
//!   are handed over on a later tick, once the store reads again.
//!
//! Restarted by: nobody; its handlers do not fail.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use protocol::time::UnixMs;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::conversation::{ConversationActor, ConversationArgs};
use crate::messages::ConversationMsg;
pub use crate::messages::ManagerMsg;
use crate::shared::Shared;

pub struct ConversationManager;

struct Slot {
    actor: ActorRef<ConversationMsg>,
    last_used: UnixMs,
}

pub struct ManagerState {
    shared: Arc<Shared>,
    live: HashMap<String, Slot>,
    by_id: HashMap<ActorId, String>,
    /// Threads whose actor is stopping, with the messages that arrived meanwhile.
    draining: HashMap<String, Vec<ConversationMsg>>,
    /// Recent failures per thread: (count, first failure time), to stop a
    /// message that always crashes its actor from looping forever.
    failures: HashMap<String, (u32, UnixMs)>,
    /// Threads whose inbox entries wait for the store to read again (see
    /// the module comment); retried on the housekeeping tick.
    stranded: HashSet<String>,
}

const MAX_RESTARTS_PER_MINUTE: u32 = 5;

impl Actor for ConversationManager {
    type Msg = ManagerMsg;
    type State = ManagerState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ManagerState {
            shared,
            live: HashMap::new(),
            by_id: HashMap::new(),
            draining: HashMap::new(),
            failures: HashMap::new(),
            stranded: HashSet::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ManagerMsg::Deliver { thread_key, message } => state.deliver(&myself, thread_key, message).await,
            ManagerMsg::Sweep => {
                state.sweep();
                state.shared.timers.poll();
                state.redeliver_stranded(&myself).await;
            }
            ManagerMsg::Deadline(_) if state.shared.stopping() => {} // armed again at the next start
            ManagerMsg::Deadline(deadline) => {
                let conversation_id = storage::conversation_id(deadline.conversation);
                // The thread key is in the conversation record; a closed or
                // unknown conversation has nothing left to time.
                match state.shared.reader.conversation(&conversation_id) {
                    Ok(Some(record)) if record.conversation.status != protocol::model::ConversationStatus::Closed => {
                        let message =
                            ConversationMsg::Deadline { conversation_id, kind: deadline.kind, due: deadline.due };
                        state.deliver(&myself, record.thread_key, message).await;
                    }
                    Ok(_) => {}
                    Err(error) => tracing::error!(%error, "cannot read a conversation for its deadline"),
                }
            }
            ManagerMsg::LiveCount(reply) => {
                let _ = reply.send(state.live.len());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(thread_key) = state.forget(cell.get_id()) {
                    state.flush_held(&myself, thread_key).await;
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(thread_key) = state.forget(cell.get_id()) else { return Ok(()) };
                metrics::counter!(crate::metrics::CONVERSATION_ACTOR_FAILURES_TOTAL).increment(1);
                tracing::error!(thread_key = %thread_key, error = %error, "conversation actor failed; restarting from the store");
                // Inbox entries first, in seq order (they include any inbound
                // entry held meanwhile), then the other held messages.
                let held = state.draining.remove(&thread_key).unwrap_or_default();
                // The store refusing writes is not this conversation's fault:
                // not counted, and its entries wait until the store is back.
                let store_unavailable = error
                    .downcast_ref::<storage::StorageError>()
                    .is_some_and(|error| matches!(error, storage::StorageError::Unavailable(_)));
                if store_unavailable {
                    state.stranded.insert(thread_key.clone());
                } else if state.note_failure(&thread_key) {
                    if !state.redeliver_inbox(&myself, &thread_key).await {
                        state.stranded.insert(thread_key.clone());
                    }
                } else {
                    tracing::error!(thread_key = %thread_key, "conversation actor keeps failing; its pending inbox entries wait for the next start");
                }
                for message in held.into_iter().filter(|message| !matches!(message, ConversationMsg::Inbound(_))) {
                    state.deliver(&myself, thread_key.clone(), message).await;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl ManagerState {
    async fn deliver(&mut self, myself: &ActorRef<ManagerMsg>, thread_key: String, message: ConversationMsg) {
        if let Some(held) = self.draining.get_mut(&thread_key) {
            held.push(message);
            return;
        }
        let now = self.shared.now();
        let actor = match self.live.get_mut(&thread_key) {
            Some(slot) => {
                slot.last_used = now;
                slot.actor.clone()
            }
            None => match self.spawn(myself, &thread_key).await {
                Some(actor) => actor,
                None => return,
            },
        };
        if let Err(ractor::MessagingErr::SendErr(message)) = actor.cast(message) {
            // The actor stopped under us (its failure is still in our mailbox):
            // hold the message until that event arrives and a fresh actor exists.
            self.live.remove(&thread_key);
            self.draining.entry(thread_key).or_default().push(message);
        }
    }

    async fn spawn(&mut self, myself: &ActorRef<ManagerMsg>, thread_key: &str) -> Option<ActorRef<ConversationMsg>> {
        let args = ConversationArgs { thread_key: thread_key.to_owned(), shared: self.shared.clone() };
        match Actor::spawn_linked(None, ConversationActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.by_id.insert(actor.get_id(), thread_key.to_owned());
                self.live.insert(thread_key.to_owned(), Slot { actor: actor.clone(), last_used: self.shared.now() });
                metrics::gauge!(crate::metrics::CONVERSATION_ACTORS).set(self.live.len() as f64);
                Some(actor)
            }
            Err(error) => {
                tracing::error!(thread_key = %thread_key, %error, "cannot spawn a conversation actor");
                None
            }
        }
    }

    /// Removes a stopped actor; returns its thread key.
    fn forget(&mut self, id: ActorId) -> Option<String> {
        let thread_key = self.by_id.remove(&id)?;
        if self.live.get(&thread_key).is_some_and(|slot| slot.actor.get_id() == id) {
            self.live.remove(&thread_key);
        }
        metrics::gauge!(crate::metrics::CONVERSATION_ACTORS).set(self.live.len() as f64);
        Some(thread_key)
    }

    /// Hands the messages held while an actor stopped to a fresh actor.
    async fn flush_held(&mut self, myself: &ActorRef<ManagerMsg>, thread_key: String) {
        let Some(held) = self.draining.remove(&thread_key) else { return };
        for message in held {
            Box::pin(self.deliver(myself, thread_key.clone(), message)).await;
        }
    }

    fn sweep(&mut self) {
        let now = self.shared.now();
        let idle_after = self.shared.settings.passivate_after_ms;
        let idle: Vec<String> = self
            .live
            .iter()
            .filter(|(_, slot)| now - slot.last_used >= idle_after)
            .map(|(key, _)| key.clone())
            .collect();
        for thread_key in idle {
            if let Some(slot) = self.live.remove(&thread_key) {
                self.draining.insert(thread_key, Vec::new());
                let _ = slot.actor.drain();
                metrics::counter!(crate::metrics::CONVERSATION_PASSIVATIONS_TOTAL).increment(1);
            }
        }
        let cutoff = now - 60_000;
        self.failures.retain(|_, (_, since)| *since >= cutoff);
    }

    /// Records a failure; false when the thread failed too often lately.
    fn note_failure(&mut self, thread_key: &str) -> bool {
        let now = self.shared.now();
        let entry = self.failures.entry(thread_key.to_owned()).or_insert((0, now));
        if now - entry.1 > 60_000 {
            *entry = (0, now);
        }
        entry.0 += 1;
        entry.0 <= MAX_RESTARTS_PER_MINUTE
    }

    /// Hands a thread's inbox entries to its actor; false when the inbox
    /// cannot be read.
    async fn redeliver_inbox(&mut self, myself: &ActorRef<ManagerMsg>, thread_key: &str) -> bool {
        let entries = match self.shared.reader.inbox() {
            Ok(entries) => entries,
            Err(error) => {
                tracing::error!(%error, thread_key = %thread_key, "cannot read the inbox to restart a conversation");
                return false;
            }
        };
        for entry in entries.into_iter().filter(|entry| entry.thread_key == thread_key) {
            self.deliver(myself, thread_key.to_owned(), ConversationMsg::Inbound(Box::new(entry))).await;
        }
        true
    }

    /// Hands the stranded threads their inbox entries once it can be read
    /// (an entry already applied is skipped by its actor).
    async fn redeliver_stranded(&mut self, myself: &ActorRef<ManagerMsg>) {
        if self.stranded.is_empty() || self.shared.stopping() {
            return;
        }
        let Ok(entries) = self.shared.reader.inbox() else { return };
        let stranded = std::mem::take(&mut self.stranded);
        tracing::info!(threads = stranded.len(), "the store reads again; handing waiting inbox entries over");
        for entry in entries.into_iter().filter(|entry| stranded.contains(&entry.thread_key)) {
            self.deliver(myself, entry.thread_key.clone(), ConversationMsg::Inbound(Box::new(entry))).await;
        }
    }
}
