//! The co-pilot's agent assist (PROTOCOL §11, docs/copilot.md "Agent
//! assist"): a consumer of the conversation event log with its own cursor
//! (`suggestions`) that drafts replies for agents who turned the co-pilot on.
//!
//! For each `message_in` it takes in, it reads the conversation as it is
//! now and decides ([`consider`], pure): a conversation held (status
//! `assigned`) by an agent whose co-pilot is on, a text message, not older
//! than `assist.max_age_s` on the engine's clock, gets a draft from the
//! [`Drafter`] (the configured replies by default). Each draft is
//! committed as the holder's `suggestion` event (`Op::AgentEvent`: a seq
//! like every agent event, replayed with `resume_from`) in the batch that
//! moves the cursor, so a suggestion is made once: a restart neither loses
//! one taken in nor makes it again. Conversations in status `bot` (the
//! co-pilot talks there itself), queued or closed get none.
//!
//! A first start (a store that never had this consumer) begins at the
//! log's head: nothing before it is drafted.
//!
//! A model drafter's tokens count against the conversation's budget with
//! the co-pilot's (`CopilotState::tokens`): the drafts' own total is kept
//! in the settings table under `assist.tokens.{conversation_id}`, written
//! in the batch that moves the cursor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actors::System;
use protocol::events::{Event, EventBody};
use protocol::model::ConversationStatus;
use protocol::time::UnixMs;
use protocol::ws::ServerFrame;
use storage::{ConversationRecord, Op, Reader, Store};
use tokio::sync::{mpsc, oneshot, watch};

use crate::suggestions_draft::{DraftInput, Drafter};

/// The consumer's name in the store's cursors.
pub const CONSUMER: &str = "suggestions";
/// Events read and committed at a time.
const PAGE: usize = 512;
/// After a failure (the store cannot write), wait this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub use crate::consumer::ConsumerError as SuggestionsError;

/// What a customer's message gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Consideration {
    /// Not for the assist: no holder, status other than `assigned`, no
    /// text, or the holder's co-pilot is off. Not counted.
    Ignore,
    /// Older than the configured age when taken in.
    Stale,
    /// Draft a reply for `agent_id`.
    Draft { agent_id: String },
}

/// Whether the `message_in` of `at` (its text `text`) in `record` (as it
/// is now) gets a draft, at `now`; `copilot_on` says whether an agent's
/// co-pilot is on.
pub fn consider(
    record: &ConversationRecord,
    text: Option<&str>,
    at: UnixMs,
    now: UnixMs,
    max_age_ms: i64,
    copilot_on: impl FnOnce(&str) -> bool,
) -> Consideration {
    let conversation = &record.conversation;
    let Some(agent_id) = conversation.agent.as_deref() else { return Consideration::Ignore };
    if conversation.status != ConversationStatus::Assigned || text.is_none_or(|text| text.trim().is_empty()) {
        return Consideration::Ignore;
    }
    if !copilot_on(agent_id) {
        return Consideration::Ignore;
    }
    if now - at > max_age_ms {
        return Consideration::Stale;
    }
    Consideration::Draft { agent_id: agent_id.to_owned() }
}

/// The settings key of a conversation's drafts' token total.
pub fn tokens_key(conversation_id: &str) -> String {
    format!("assist.tokens.{conversation_id}")
}

/// The tokens a model's drafts used for a conversation so far.
pub fn drafts_tokens(reader: &Reader, conversation_id: &str) -> Result<u64, SuggestionsError> {
    let stored = reader.setting(&tokens_key(conversation_id))?;
    Ok(stored.and_then(|bytes| String::from_utf8(bytes).ok()?.parse().ok()).unwrap_or(0))
}

struct Consumer {
    store: Arc<Store>,
    system: Arc<System>,
    drafter: Arc<dyn Drafter>,
    max_age_ms: i64,
    cursor: u64,
}

impl Consumer {
    /// The stored cursor, or the log's head the first time.
    async fn open(
        store: Arc<Store>,
        system: Arc<System>,
        drafter: Arc<dyn Drafter>,
        max_age_ms: i64,
    ) -> Result<Consumer, SuggestionsError> {
        let reader = store.reader().caught_up().await?;
        let cursor = match reader.stored_cursor(CONSUMER)? {
            Some(cursor) => cursor,
            None => {
                let head = *system.log_head().borrow();
                store.commit(vec![Op::SetCursor { consumer: CONSUMER.to_owned(), seq: head }]).await?;
                head
            }
        };
        Ok(Consumer { store, system, drafter, max_age_ms, cursor })
    }

    /// The draft input for a message of `record` held by `agent_id`;
    /// `drafts_tokens`: what earlier drafts of the conversation used.
    fn input(
        &self,
        reader: &Reader,
        record: &ConversationRecord,
        agent_id: &str,
        text: &str,
        drafts_tokens: u64,
    ) -> DraftInput {
        let conversation = &record.conversation;
        // A name a user set on the contact comes before the profile's.
        let set_name = match reader.contact(&conversation.contact.wa_id) {
            Ok(contact) => contact.and_then(|contact| contact.name),
            Err(_) => None,
        };
        let agent_name = self
            .system
            .shared()
            .roster()
            .get(agent_id)
            .map_or_else(|| agent_id.to_owned(), |spec| spec.display_name().to_owned());
        // Context for a drafter that reads it; none when it cannot be read.
        let mut history: Vec<protocol::model::Message> = match reader.messages(&conversation.id) {
            Ok(messages) => messages.into_iter().map(|stored| stored.message).collect(),
            Err(error) => {
                tracing::debug!(conversation_id = %conversation.id, %error, "no history for the draft");
                Vec::new()
            }
        };
        history.drain(..history.len().saturating_sub(crate::suggestions_draft::HISTORY));
        DraftInput {
            conversation_id: conversation.id.clone(),
            text: text.to_owned(),
            team: conversation.team.clone(),
            contact_name: set_name.or_else(|| conversation.contact.name.clone()),
            agent_name,
            fields: conversation.fields.clone(),
            history,
            tokens_used: record.copilot.as_ref().map_or(0, |state| state.tokens).saturating_add(drafts_tokens),
        }
    }

    /// The `suggestion` an event makes, if any. `tokens`: the drafts'
    /// token totals of the conversations this page changed so far.
    async fn take_in(
        &self,
        reader: &Reader,
        event: &Event,
        tokens: &mut HashMap<String, u64>,
    ) -> Result<Option<Op>, SuggestionsError> {
        let EventBody::MessageIn { text, .. } = &event.body else { return Ok(None) };
        let Some(conversation_id) = event.conversation_id.as_deref() else { return Ok(None) };
        let Some(record) = reader.conversation(conversation_id)? else { return Ok(None) };
        let now = self.system.now();
        let copilot_on = |agent_id: &str| self.system.copilot_of(agent_id);
        let agent_id = match consider(&record, text.as_deref(), event.at, now, self.max_age_ms, copilot_on) {
            Consideration::Ignore => return Ok(None),
            Consideration::Stale => {
                metrics::counter!(crate::metrics::SUGGESTIONS_TOTAL, "outcome" => "stale").increment(1);
                return Ok(None);
            }
            Consideration::Draft { agent_id } => agent_id,
        };
        let drafts_tokens = match tokens.get(conversation_id) {
            Some(total) => *total,
            None => drafts_tokens(reader, conversation_id)?,
        };
        let input = self.input(reader, &record, &agent_id, text.as_deref().unwrap_or_default(), drafts_tokens);
        let drafted = self.drafter.draft(input).await;
        if drafted.tokens > 0 {
            tokens.insert(conversation_id.to_owned(), drafts_tokens.saturating_add(drafted.tokens));
        }
        let Some(draft) = drafted.text else {
            metrics::counter!(crate::metrics::SUGGESTIONS_TOTAL, "outcome" => "no_match").increment(1);
            return Ok(None);
        };
        metrics::counter!(crate::metrics::SUGGESTIONS_TOTAL, "outcome" => "suggested").increment(1);
        let frame = ServerFrame::Suggestion { seq: 0, conversation_id: conversation_id.to_owned(), text: draft };
        Ok(Some(Op::AgentEvent { agent_id, frame: Box::new(frame) }))
    }

    /// Takes in every event after the cursor; commits the suggestions with
    /// the cursor's move.
    async fn catch_up(&mut self) -> Result<(), SuggestionsError> {
        loop {
            let reader = self.store.reader().settled().await?;
            let events = reader.events_after(self.cursor, PAGE)?;
            let Some(&(last, _)) = events.last() else { break };
            let mut batch = Vec::new();
            let mut tokens = HashMap::new();
            for (_, event) in &events {
                if let Some(op) = self.take_in(&reader, event, &mut tokens).await? {
                    batch.push(op);
                }
            }
            for (conversation_id, total) in tokens {
                let value = Some(total.to_string().into_bytes());
                batch.push(Op::PutSetting { name: tokens_key(&conversation_id), value });
            }
            batch.push(Op::SetCursor { consumer: CONSUMER.to_owned(), seq: last });
            self.store.commit(batch).await?;
            self.cursor = last;
            if events.len() < PAGE {
                break;
            }
        }
        Ok(())
    }
}

enum Request {
    /// Take in the log now (tests).
    Settle {
        reply: oneshot::Sender<()>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
}

/// The running suggestions consumer.
pub struct Suggestions {
    task: crate::consumer::TaskHandle<Request>,
}

impl Suggestions {
    /// Opens the cursor and follows the log.
    pub async fn start(
        store: Arc<Store>,
        system: Arc<System>,
        drafter: Arc<dyn Drafter>,
        max_age: Duration,
        mut log_head: watch::Receiver<u64>,
    ) -> Result<Suggestions, SuggestionsError> {
        let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let mut consumer = Consumer::open(store, system, drafter, max_age_ms).await?;
        let (requests, mut incoming) = mpsc::channel::<Request>(16);
        let task = tokio::spawn(async move {
            loop {
                let head = *log_head.borrow_and_update();
                if head > consumer.cursor
                    && let Err(error) = consumer.catch_up().await
                {
                    tracing::warn!(%error, "the suggestions could not take in the event log; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                    continue;
                }
                tokio::select! {
                    biased;
                    request = incoming.recv() => match request {
                        Some(Request::Settle { reply }) => {
                            if let Err(error) = consumer.catch_up().await {
                                tracing::warn!(%error, "the suggestions could not catch up");
                            }
                            let _ = reply.send(());
                        }
                        // Nothing is owed at a stop: what is not taken in
                        // now is taken in at the next start (or skipped
                        // there as stale).
                        Some(Request::Stop { reply }) => {
                            let _ = reply.send(());
                            break;
                        }
                        None => break,
                    },
                    changed = log_head.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Suggestions { task: crate::consumer::TaskHandle::new(requests, task) })
    }

    /// Takes in the log up to its head now, then returns (tests).
    pub async fn settle(&self) {
        let (reply, done) = oneshot::channel();
        if self.task.requests.send(Request::Settle { reply }).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Stops the task.
    pub async fn stop(&self) {
        self.task.stop(|reply| Request::Stop { reply }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::model::{Contact, Conversation, Source};

    fn record(status: ConversationStatus, agent: Option<&str>) -> ConversationRecord {
        let conversation = Conversation {
            id: "c1".into(),
            contact: Contact { wa_id: "919800000001".into(), name: None },
            phone_number_id: "100".into(),
            status,
            team: Some("sales".into()),
            agent: agent.map(str::to_owned),
            source: Source::organic(),
            service_until: None,
            free_entry_until: None,
            fields: Default::default(),
            opened_at: 0,
            closed_at: None,
            messages: None,
        };
        ConversationRecord {
            conversation,
            thread_key: "100:919800000001".into(),
            message_count: 1,
            last_customer_at: None,
            queued_at: None,
            assigned_at: None,
            first_response_at: None,
            clocks: Default::default(),
            route: None,
            copilot: None,
            handoff: None,
        }
    }

    const MINUTE: i64 = 60_000;

    #[test]
    fn only_held_conversations_of_agents_with_the_copilot_on_get_drafts() {
        let on = |_: &str| true;
        let off = |_: &str| false;
        let held = record(ConversationStatus::Assigned, Some("asha"));
        let draft = Consideration::Draft { agent_id: "asha".into() };
        assert_eq!(consider(&held, Some("price?"), 0, MINUTE, 5 * MINUTE, on), draft);
        assert_eq!(consider(&held, Some("price?"), 0, MINUTE, 5 * MINUTE, off), Consideration::Ignore);
        assert_eq!(consider(&held, None, 0, MINUTE, 5 * MINUTE, on), Consideration::Ignore, "no text");
        assert_eq!(consider(&held, Some("  "), 0, MINUTE, 5 * MINUTE, on), Consideration::Ignore);
        for status in [ConversationStatus::Bot, ConversationStatus::Queued, ConversationStatus::Closed] {
            let record = record(status, Some("asha"));
            assert_eq!(consider(&record, Some("price?"), 0, MINUTE, 5 * MINUTE, on), Consideration::Ignore);
        }
        let unheld = record(ConversationStatus::Assigned, None);
        assert_eq!(consider(&unheld, Some("price?"), 0, MINUTE, 5 * MINUTE, on), Consideration::Ignore);
    }

    #[test]
    fn old_messages_are_stale() {
        let held = record(ConversationStatus::Assigned, Some("asha"));
        let at = 10 * MINUTE;
        let on = |_: &str| true;
        let fresh = consider(&held, Some("hi"), at, at + 5 * MINUTE, 5 * MINUTE, on);
        assert_eq!(fresh, Consideration::Draft { agent_id: "asha".into() }, "at the limit it is still fresh");
        assert_eq!(consider(&held, Some("hi"), at, at + 5 * MINUTE + 1, 5 * MINUTE, on), Consideration::Stale);
    }
}
