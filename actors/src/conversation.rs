//! The conversation actor: one per (business number, customer), keyed by the
//! thread key. It owns that customer's open conversation: appends messages,
//! applies statuses, takes assignments, sends, sets fields, closes, transfers.
//!
//! Owns: the thread record and the open conversation record (loaded lazily
//! from the store on the first message, so spawning is cheap).
//! Restarted by: the conversation manager (`manager.rs`), from the store.
//!
//! Every change is committed through the store's writer before anyone hears of
//! it; agent events ride in the same commit and reach agents from the writer.

use std::sync::Arc;

use protocol::graph::SendMessageResponse;
use protocol::model::{ConversationStatus, DeliveryStatus, Direction, Message, Route};
use protocol::time::UnixMs;
use protocol::ws::{ServerFrame, UnassignReason};
use protocol::{ApiError, ErrorCode};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use storage::{
    Batch, ConversationRecord, InboxEntry, InboxItem, IngestMessage, IngestOutcome, Op, SendIntent, StoredMessage,
    ThreadRecord,
};

use crate::deadlines;
use crate::decide::{Current, Decision, Effect, Input, Policy, decide};
use crate::followups::{self, FollowupRow};
use crate::messages::{AgentMsg, FollowupOutcome, ManagerMsg, PendingSend, Reply, RouteRequest, RouterMsg, TeamMsg};
pub use crate::messages::{ConversationMsg, RequestKind};
use crate::requests::{self, Outgoing, PlannedSend, TransferTarget};
use crate::routing::{Routing, RoutingTable, Trigger};
use crate::shared::{Principal, Shared};
use crate::timers::{Deadline, DeadlineKind};
use protocol::events::EventBody;

pub struct ConversationActor;

pub struct ConversationArgs {
    pub thread_key: String,
    pub shared: Arc<Shared>,
}

pub struct ConversationState {
    thread_key: String,
    shared: Arc<Shared>,
    loaded: bool,
    thread: Option<ThreadRecord>,
    open: Option<ConversationRecord>,
}

impl Actor for ConversationActor {
    type Msg = ConversationMsg;
    type State = ConversationState;
    type Arguments = ConversationArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ConversationArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ConversationState {
            thread_key: args.thread_key,
            shared: args.shared,
            loaded: false,
            thread: None,
            open: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Boxed: ractor keeps the handler's future inside every actor's task,
        // sized for the largest state it can reach, even while the actor
        // waits for its next message. Boxing it makes that cost per message
        // handled instead of per live conversation.
        Box::pin(state.handle(message)).await
    }
}

impl ConversationState {
    async fn handle(&mut self, message: ConversationMsg) -> Result<(), ActorProcessingErr> {
        self.load()?;
        match message {
            ConversationMsg::Inbound(entry) => self.on_inbound(*entry).await?,
            ConversationMsg::Direct { ingest, reply } => {
                let (outcome, pending) = self.on_direct(*ingest).await?;
                // Acknowledged once committed; the co-pilot's model comes after.
                let _ = reply.send(outcome);
                self.take_copilot_step(pending).await?;
            }
            ConversationMsg::Assign { conversation_id, agent_id, route } => {
                self.on_assign(conversation_id, agent_id, route).await?
            }
            ConversationMsg::Unassign { conversation_id, agent_id, reason } => {
                self.on_unassign(conversation_id, agent_id, reason).await?
            }
            ConversationMsg::Overflow { conversation_id, from_team, to_team } => {
                let decision = self.decide(Input::Overflow { conversation_id, from_team, to_team })?;
                if decision.record.is_none() {
                    // No longer waiting there: only the stale queue entry goes.
                    for effect in decision.effects {
                        self.perform(effect);
                    }
                } else {
                    self.commit_decision(decision).await?;
                }
            }
            ConversationMsg::Request { principal, conversation_id, kind, reply } => {
                self.on_request(principal, conversation_id, kind, reply).await?
            }
            ConversationMsg::SendCompleted(pending, result) => self.on_send_completed(*pending, result).await?,
            // The co-pilot's deadline takes the step at the next start.
            ConversationMsg::CopilotReading { .. } if self.shared.stopping() => {}
            ConversationMsg::CopilotReading { message_id, reading, tokens } => {
                self.on_copilot_reading(message_id, reading, tokens).await?
            }
            // Armed again from the store at the next start.
            ConversationMsg::Deadline { .. } if self.shared.stopping() => {}
            ConversationMsg::Deadline { conversation_id, kind, due } => {
                self.on_deadline(conversation_id, kind, due).await?
            }
            ConversationMsg::Followup { row, reply } => {
                let outcome = self.on_followup(*row).await?;
                let _ = reply.send(Ok(outcome));
            }
            ConversationMsg::FailForTest => return Err("failure injected by a test".into()),
        }
        Ok(())
    }

    fn load(&mut self) -> Result<(), ActorProcessingErr> {
        if self.loaded {
            return Ok(());
        }
        let reader = &self.shared.reader;
        self.thread = reader.thread(&self.thread_key)?;
        self.open = match self.thread.as_ref().and_then(|thread| thread.open_conversation.clone()) {
            Some(id) => reader.conversation(&id)?,
            None => None,
        };
        self.loaded = true;
        Ok(())
    }

    fn manager(&self) -> &ActorRef<ManagerMsg> {
        &self.shared.directory().manager
    }

    fn now(&self) -> UnixMs {
        self.shared.now()
    }

    async fn commit(&self, batch: Batch) -> Result<(), ActorProcessingErr> {
        self.shared.store.commit(batch).await?;
        Ok(())
    }

    /// The conversation's messages so far, read from the store (an
    /// `assigned` frame carries them).
    fn messages_of(&self, record: &ConversationRecord) -> Result<Vec<Message>, ActorProcessingErr> {
        let messages = self.shared.reader.messages_counted(&record.conversation.id, record.message_count)?;
        Ok(messages.into_iter().map(|stored| stored.message).collect())
    }

    async fn on_inbound(&mut self, entry: InboxEntry) -> Result<(), ActorProcessingErr> {
        if self.thread.as_ref().is_some_and(|thread| entry.seq <= thread.last_inbox_seq) {
            return Ok(()); // already applied (redelivered after a restart)
        }
        match entry.item {
            InboxItem::Message { phone_number_id, contact_key, contact, message } => {
                let ingest = IngestMessage { phone_number_id, contact_key, contact, message };
                let (_, pending) = self.apply_message(ingest, Some(entry.seq)).await?;
                self.take_copilot_step(pending).await?;
            }
            InboxItem::Status { conversation_id, status } => {
                let location = self.shared.reader.message_location(&status.id)?;
                let stored = match location {
                    Some(location) => self
                        .shared
                        .reader
                        .message(&location.conversation_id, location.index)?
                        .map(|stored| (location.index, Box::new(stored))),
                    None => None,
                };
                let input = Input::StatusIn { inbox_seq: entry.seq, conversation_id, status: Box::new(status), stored };
                let decision = self.decide(input)?;
                self.commit_decision(decision).await?;
            }
        }
        Ok(())
    }

    /// A webhook's message applied directly (see [`ConversationMsg::Direct`]).
    async fn on_direct(
        &mut self,
        ingest: IngestMessage,
    ) -> Result<(IngestOutcome, Option<String>), ActorProcessingErr> {
        if self.shared.reader.has_inbound(&ingest.message.id)? {
            return Ok((IngestOutcome::Duplicate, None)); // a redelivery: nothing to do
        }
        self.apply_message(ingest, None).await
    }

    /// Appends an inbound message to the open conversation (opening one if
    /// needed) in one commit. `inbox_seq` is the inbox entry it comes from;
    /// `None` for a direct message, whose wamid the commit claims instead (a
    /// duplicate then changes nothing). With the outcome: the message's
    /// wamid when its co-pilot step waits for the model hook
    /// ([`Self::take_copilot_step`], after the webhook is answered).
    async fn apply_message(
        &mut self,
        ingest: IngestMessage,
        inbox_seq: Option<u64>,
    ) -> Result<(IngestOutcome, Option<String>), ActorProcessingErr> {
        let new_conversation_id = self.open.is_none().then(|| self.shared.store.next_conversation_id());
        // The contact's record is read when a conversation opens (routing
        // looks at its owner, city, dealer and attributes, and a city named
        // in the text may set its city) and for an opt-out or opt-in word;
        // a later ordinary message reads and writes no contact. When the
        // decision may change the record, contact updates are held until
        // the commit, so a concurrent PATCH is not lost (see
        // `Shared::contact_updates`).
        let shared = self.shared.clone();
        let opens = new_conversation_id.is_some();
        // One table for the lock's decision and the routing decision: a
        // change of the rules in between cannot make the decision write the
        // contact without the lock.
        let routing = shared.routing();
        let _contact_guard = match crate::decide::opt_word_of(&ingest, &shared.settings.contact_words) {
            Some(_) => Some(shared.contact_updates.lock().await),
            None if opens && routing.may_set_contact_city() => Some(shared.contact_updates.lock().await),
            None => None,
        };
        let contact = match (opens, &_contact_guard) {
            (false, None) => None,
            _ => self.shared.reader.contact(&ingest.contact_key)?.map(Box::new),
        };
        let message_id = ingest.message.id.clone();
        let copilot_model_wait_ms = self.shared.copilot_model.enabled().then(|| self.model_wait_ms());
        let input = Input::MessageIn { ingest, inbox_seq, new_conversation_id, contact, copilot_model_wait_ms };
        let decision = self.decide_with(input, &routing)?;
        let opened = decision.opened;
        let pending = decision
            .record
            .as_ref()
            .and_then(|record| record.copilot.as_ref()?.pending.as_ref())
            .filter(|answer| answer.message_id == message_id)
            .map(|_| message_id);
        let Some(outcome) = self.commit_decision(decision).await? else {
            return Ok((IngestOutcome::Duplicate, None)); // claimed meanwhile by the inbox path
        };
        debug_assert!(outcome.ingested.first() != Some(&IngestOutcome::Duplicate));
        metrics::counter!(crate::metrics::MESSAGES_TOTAL, "direction" => "in").increment(1);
        if opened {
            metrics::counter!(crate::metrics::CONVERSATIONS_OPENED_TOTAL).increment(1);
        }
        Ok((IngestOutcome::Accepted { seq: inbox_seq.unwrap_or(0) }, pending))
    }

    /// How long a pending co-pilot step may wait for the model hook (its
    /// reading and its summary, each bounded by the timeout) before the
    /// co-pilot's deadline takes it with the built-in reading: the guard
    /// for a restart in between.
    fn model_wait_ms(&self) -> i64 {
        let timeout = i64::try_from(self.shared.copilot_model_timeout_ms).unwrap_or(i64::MAX / 4);
        timeout.saturating_mul(2).saturating_add(1_000)
    }

    /// The co-pilot's step for the committed message `pending` (a wamid),
    /// once its webhook was answered. When the built-in rules find no
    /// answer in its text, the model hook reads it beside the actor (a
    /// task, bounded by the timeout), so the conversation's next messages
    /// are not held up: the reading comes back as
    /// [`ConversationMsg::CopilotReading`]; a message that comes first
    /// takes the pending answer with the built-in reading, and the late
    /// reading is then ignored. Otherwise (the step hands over, and the
    /// hook writes the summary) the step is taken now.
    async fn take_copilot_step(&mut self, pending: Option<String>) -> Result<(), ActorProcessingErr> {
        let Some(message_id) = pending else { return Ok(()) };
        let Some(request) = self.model_request(&message_id) else {
            return self.on_copilot_reading(message_id, None, 0).await;
        };
        let (request, question) = request;
        let model = self.shared.copilot_model.clone();
        let timeout = std::time::Duration::from_millis(self.shared.copilot_model_timeout_ms);
        let manager = self.manager().clone();
        let thread_key = self.thread_key.clone();
        tokio::spawn(async move {
            let conversation_id = request.conversation_id.clone();
            let (reading, tokens) = match tokio::time::timeout(timeout, model.interpret(request)).await {
                Ok(Ok(interpretation)) => {
                    let checked = crate::copilot::check_interpretation(&question, &interpretation);
                    if checked.is_none() {
                        tracing::info!(%conversation_id, "the co-pilot's model answered outside the flow; the built-in result stands");
                    }
                    (checked, interpretation.tokens)
                }
                Ok(Err(error)) => {
                    tracing::info!(%conversation_id, %error, "the co-pilot's model failed; the built-in result stands");
                    (None, error.tokens)
                }
                Err(_) => {
                    tracing::info!(%conversation_id, "the co-pilot's model timed out; the built-in result stands");
                    (None, 0)
                }
            };
            let message = ConversationMsg::CopilotReading { message_id, reading, tokens };
            let _ = manager.cast(ManagerMsg::Deliver { thread_key, message });
        });
        Ok(())
    }

    /// The pending answer's step with the model hook's `reading` (and the
    /// tokens it used), committed with the model's summary when it hands
    /// over. Nothing when `message_id` is no longer pending.
    async fn on_copilot_reading(
        &mut self,
        message_id: String,
        reading: Option<crate::copilot::ModelInput>,
        tokens: u64,
    ) -> Result<(), ActorProcessingErr> {
        let Some(record) = self.open.as_ref() else { return Ok(()) };
        let conversation_id = record.conversation.id.clone();
        let input = Input::CopilotReading { conversation_id, message_id, reading, tokens };
        let mut decision = self.decide(input)?;
        if decision.writes.is_empty() && decision.events.is_empty() && decision.record.is_none() {
            return Ok(()); // stale: taken meanwhile
        }
        self.summarize_handoff(&mut decision).await;
        self.commit_decision(decision).await?;
        Ok(())
    }

    /// The model hook's request for the pending answer `message_id`, with
    /// the question it is checked against: `None` when the built-in rules
    /// understand the text (or it is no longer pending).
    fn model_request(
        &self,
        message_id: &str,
    ) -> Option<(crate::copilot::InterpretRequest, crate::copilot::QuestionSpec)> {
        let record = self.open.as_ref().filter(|open| open.conversation.status == ConversationStatus::Bot)?;
        let routing = self.shared.routing();
        let (_, flow) = crate::decide::running_flow_of(self.policy(&routing), record)?;
        let state = record.copilot.as_ref()?;
        let answer = state.pending.as_ref().filter(|answer| answer.message_id == message_id)?;
        let question = crate::decide::model_question(flow, state, answer)?;
        let text = answer.text.as_deref().unwrap_or_default().trim();
        let request = crate::copilot::interpret_request(&record.conversation.id, flow, question, text, state.tokens);
        Some((request, question.clone()))
    }

    /// When `decision` hands a conversation over and the model hook is on:
    /// the hook's summary replaces the built-in one. On any error, a
    /// timeout, or an empty or overlong answer the built-in one stays. The
    /// tokens the call used count against the conversation's budget.
    async fn summarize_handoff(&self, decision: &mut Decision) {
        let model = &self.shared.copilot_model;
        if !model.enabled() {
            return;
        }
        let Some(handoff) = crate::decide::handoff_of(decision) else { return };
        let Some(record) = decision.record.as_ref() else { return };
        let tokens_used = record.copilot.as_ref().map_or(0, |state| state.tokens);
        // The stored messages, then the one this decision stores (the
        // customer's last, not committed yet).
        let committed = self.open.as_ref().map_or(0, |open| open.message_count);
        let mut messages: Vec<Message> = self
            .shared
            .reader
            .messages_counted(&record.conversation.id, committed)
            .unwrap_or_default()
            .into_iter()
            .map(|stored| stored.message)
            .collect();
        messages.extend(decision.writes.iter().filter_map(|op| match op {
            Op::PutMessage { message, .. } => Some(message.message.clone()),
            _ => None,
        }));
        let transcript = messages
            .into_iter()
            .filter_map(|message| {
                let who = if message.direction == Direction::In { "customer" } else { "copilot" };
                Some(format!("{who}: {}", message.text?))
            })
            .collect();
        let request = crate::copilot::SummaryRequest {
            conversation_id: record.conversation.id.clone(),
            reason: handoff.reason.clone(),
            built_in: handoff.summary.clone(),
            fields: handoff.fields.clone(),
            transcript,
            tokens_used,
        };
        let timeout = std::time::Duration::from_millis(self.shared.copilot_model_timeout_ms);
        match tokio::time::timeout(timeout, model.summarize(request)).await {
            Ok(Ok(summary)) => {
                crate::decide::add_copilot_tokens(decision, summary.tokens);
                let text = summary.text.trim();
                if !text.is_empty() && text.chars().count() <= MAX_SUMMARY_CHARS {
                    crate::decide::replace_handoff_summary(decision, text.to_owned());
                } else {
                    tracing::info!("the co-pilot's model wrote an empty or overlong summary; the built-in one stays")
                }
            }
            Ok(Err(error)) => {
                crate::decide::add_copilot_tokens(decision, error.tokens);
                tracing::info!(%error, "the co-pilot's model wrote no summary; the built-in one stays")
            }
            Err(_) => tracing::info!("the co-pilot's model timed out on the summary; the built-in one stays"),
        }
    }

    /// Decides `input` against the actor's thread and open conversation.
    fn decide(&self, input: Input) -> Result<Decision, ApiError> {
        self.decide_with(input, &self.shared.routing())
    }

    /// The decisions' policy: the engine's settings with `routing`.
    fn policy<'a>(&'a self, routing: &'a RoutingTable) -> Policy<'a> {
        Policy {
            policies: &self.shared.policies,
            schemas: self.shared.settings.schemas(),
            routing,
            contact_words: &self.shared.settings.contact_words,
        }
    }

    /// [`Self::decide`] with the routing table the caller already holds.
    fn decide_with(&self, input: Input, routing: &RoutingTable) -> Result<Decision, ApiError> {
        let current = Current { thread_key: &self.thread_key, thread: self.thread.as_ref(), open: self.open.as_ref() };
        decide(current, input, self.now(), self.policy(routing))
    }

    /// Commits a decision's writes and events in one batch, then takes its
    /// records as the actor's own, arms the deadlines it added and performs
    /// its effects. `None` when the batch's claim was refused (a duplicate):
    /// then nothing changed.
    async fn commit_decision(
        &mut self,
        mut decision: Decision,
    ) -> Result<Option<storage::CommitOutcome>, ActorProcessingErr> {
        let batch = decision.into_batch();
        let outcome = self.shared.store.commit(batch).await?;
        if outcome.ingested.first() == Some(&IngestOutcome::Duplicate) {
            return Ok(None);
        }
        if let Some(thread) = decision.thread.take() {
            self.thread = Some(thread);
        }
        if let Some(record) = decision.record.take() {
            let is_this_open = self.open.as_ref().is_none_or(|open| open.conversation.id == record.conversation.id);
            if is_this_open {
                let before = self.open.as_ref().map(deadlines::deadlines_of).unwrap_or_default();
                if decision.record_is_open {
                    self.arm_new(&before, &record);
                    self.open = Some(record);
                } else {
                    self.open = None;
                }
            }
        }
        for effect in decision.effects {
            match effect {
                Effect::SendTemplate(template) => self.send_as_system(template).await?,
                Effect::CopilotSay { record, say } => self.copilot_say(*record, say).await?,
                effect => self.perform(effect),
            }
        }
        Ok(Some(outcome))
    }

    /// Sends a template to the customer as the system, through the same
    /// path as an agent's (intent committed first, then the Graph API, then
    /// the outcome); a refusal is logged, no one waits for it.
    async fn send_as_system(&self, template: protocol::ws::TemplateRequest) -> Result<(), ActorProcessingErr> {
        let Some(record) = self.open.clone() else { return Ok(()) };
        let principal =
            Principal { agent_id: crate::decide::SYSTEM_SENDER.to_owned(), role: protocol::model::Role::Admin };
        let (port, answer) = ractor::concurrency::oneshot();
        self.start_send(&principal, &record, Outgoing::Template(template), port.into()).await?;
        let conversation_id = record.conversation.id.clone();
        tokio::spawn(async move {
            if let Ok(Err(refusal)) = answer.await {
                tracing::warn!(%conversation_id, code = ?refusal.code, message = %refusal.message, "the closed-hours template was not sent");
            }
        });
        Ok(())
    }

    /// Sends what the co-pilot says, in order, as the co-pilot
    /// (`author: "copilot"`): every intent committed first in one batch,
    /// then one task sends them one after the other, so the customer reads
    /// them in order; each outcome comes back as any send's. A refusal (a
    /// closed window, Meta's error) is logged; no one waits for it.
    async fn copilot_say(
        &self,
        record: ConversationRecord,
        say: Vec<crate::copilot::Say>,
    ) -> Result<(), ActorProcessingErr> {
        let principal =
            Principal { agent_id: crate::decide::COPILOT_SENDER.to_owned(), role: protocol::model::Role::Admin };
        let now = self.now();
        let mut planned = Vec::new();
        for said in say {
            let outgoing = match said {
                crate::copilot::Say::Text(text) => Outgoing::Text(text),
                crate::copilot::Say::Choices { body, choices, list_button } => {
                    Outgoing::Interactive { body, choices, list_button }
                }
                crate::copilot::Say::Template(template) => Outgoing::Template(template),
            };
            let local_id = local_message_id(&record.conversation.id, now);
            match requests::plan_send(&record, &principal, outgoing, local_id, now) {
                Ok(send) => planned.push(send),
                Err(refusal) => {
                    tracing::warn!(conversation_id = %record.conversation.id, code = ?refusal.code, message = %refusal.message, "a co-pilot message was not sent");
                }
            }
        }
        if planned.is_empty() {
            return Ok(());
        }
        let batch = planned
            .iter()
            .map(|send| Op::PutSendIntent {
                thread_key: self.thread_key.clone(),
                intent: Box::new(send.intent.clone()),
            })
            .collect();
        self.commit(batch).await?;
        let outbound = self.shared.outbound.clone();
        let manager = self.manager().clone();
        let thread_key = self.thread_key.clone();
        let phone_number_id = record.conversation.phone_number_id.clone();
        tokio::spawn(async move {
            for PlannedSend { request, intent } in planned {
                let (port, answer) = ractor::concurrency::oneshot();
                let pending =
                    PendingSend { conversation_id: intent.conversation_id.clone(), reply: port.into(), intent };
                let result = outbound.send(phone_number_id.clone(), request).await;
                let _ = manager.cast(ManagerMsg::Deliver {
                    thread_key: thread_key.clone(),
                    message: ConversationMsg::SendCompleted(Box::new(pending), result),
                });
                // The next one only once this one's outcome is recorded (its
                // message takes its place in the conversation first).
                if let Ok(Err(refusal)) = answer.await {
                    tracing::warn!(code = ?refusal.code, message = %refusal.message, "a co-pilot message was refused");
                }
            }
        });
        Ok(())
    }

    fn perform(&self, effect: Effect) {
        match effect {
            Effect::Route(routing) => {
                if let Some(record) = &self.open {
                    self.route(record, *routing);
                }
            }
            Effect::ReleaseAgent { agent_id, conversation_id } => {
                if let Some(agent) = self.shared.agent(&agent_id) {
                    let _ = agent.cast(AgentMsg::Release { conversation_id });
                }
            }
            Effect::LeaveTeamQueue { team_id, conversation_id } => {
                if let Some(team) = self.shared.directory().team(&team_id) {
                    let _ = team.cast(TeamMsg::Remove { conversation_id });
                }
            }
            Effect::CancelReservation { agent_id, conversation_id } => {
                if let Some(agent) = self.shared.agent(&agent_id) {
                    let _ = agent.cast(AgentMsg::Cancel { conversation_id });
                }
            }
            // Sent by `commit_decision`, which awaits the intent's commit.
            Effect::SendTemplate(template) => {
                tracing::error!(name = %template.name, "a template send reached `perform`; not sent");
            }
            Effect::CopilotSay { .. } => {
                tracing::error!("the co-pilot's messages reached `perform`; not sent");
            }
            Effect::ConfirmReservation { agent_id, conversation_id } => {
                if let Some(agent) = self.shared.agent(&agent_id) {
                    let _ = agent.cast(AgentMsg::Confirm { conversation_id, thread_key: self.thread_key.clone() });
                }
            }
        }
    }

    /// Hands the conversation to the router with what routing decided.
    fn route(&self, record: &ConversationRecord, routing: Routing) {
        let request = RouteRequest {
            conversation_id: record.conversation.id.clone(),
            thread_key: self.thread_key.clone(),
            queued_at: record.queued_at.unwrap_or(record.conversation.opened_at),
            routing,
        };
        let _ = self.shared.directory().router().cast(RouterMsg::Route(request));
    }

    async fn on_assign(
        &mut self,
        conversation_id: String,
        agent_id: String,
        route: Route,
    ) -> Result<(), ActorProcessingErr> {
        // The messages are read only when the assignment can happen.
        let assignable = self.open.as_ref().filter(|open| {
            open.conversation.id == conversation_id && open.conversation.status == ConversationStatus::Queued
        });
        let messages = match assignable {
            Some(open) => self.messages_of(open)?,
            None => Vec::new(),
        };
        // Since when it waited, and in which team: the assignment latency's
        // start and label (the record after the decision no longer says).
        let waited = assignable.map(|open| {
            (open.queued_at.unwrap_or(open.conversation.opened_at), open.conversation.team.clone().unwrap_or_default())
        });
        let input =
            Input::Assign { conversation_id: conversation_id.clone(), agent_id: agent_id.clone(), messages, route };
        let decision = self.decide(input)?;
        let assigned = decision.record.is_some();
        if let Err(error) = self.commit_decision(decision).await {
            // The slot was reserved for nothing; the conversation still waits.
            if let Some(agent) = self.shared.agent(&agent_id) {
                let _ = agent.cast(AgentMsg::Cancel { conversation_id });
            }
            if let Some(open) = &self.open {
                let trigger = Trigger::Restart {
                    team: open.conversation.team.clone(),
                    route: open.route.clone().unwrap_or_default(),
                };
                self.route(open, self.shared.routing().again(trigger, &open.conversation.phone_number_id));
            }
            return Err(error);
        }
        if assigned {
            metrics::counter!(crate::metrics::ASSIGNMENTS_TOTAL).increment(1);
            if let Some((queued_at, team)) = waited {
                let waited_ms = (self.now() - queued_at).max(0);
                metrics::histogram!(crate::metrics::ASSIGNMENT_SECONDS, "team" => team)
                    .record(waited_ms as f64 / 1000.0);
            }
        }
        Ok(())
    }

    /// Arms the record's deadlines that `before` did not have.
    fn arm_new(&self, before: &[(DeadlineKind, UnixMs)], record: &ConversationRecord) {
        let Some(number) = storage::conversation_number(&record.conversation.id) else { return };
        for (kind, due) in deadlines::deadlines_of(record) {
            if !before.contains(&(kind, due)) {
                self.shared.timers.arm(Deadline { due, conversation: number, kind });
            }
        }
    }

    async fn on_deadline(
        &mut self,
        conversation_id: String,
        kind: DeadlineKind,
        due: UnixMs,
    ) -> Result<(), ActorProcessingErr> {
        let mut decision = self.decide(Input::Deadline { conversation_id, kind, due })?;
        self.summarize_handoff(&mut decision).await;
        let counted: Vec<(&'static str, &'static str)> = decision
            .events
            .iter()
            .filter_map(|event| match &event.body {
                EventBody::SlaWarning { clock, .. } => Some((sla_kind_label(*clock), "warning")),
                EventBody::SlaBreach { clock, .. } => Some((sla_kind_label(*clock), "breached")),
                _ => None,
            })
            .collect();
        let reassigned = decision
            .events
            .iter()
            .any(|event| matches!(event.body, EventBody::Unassigned { reason: UnassignReason::ReassignedIdle, .. }));
        if decision.writes.is_empty() && decision.events.is_empty() {
            return Ok(()); // stale: the state moved on since it was armed
        }
        self.commit_decision(decision).await?;
        for (kind_label, state_label) in counted {
            metrics::counter!(crate::metrics::SLA_EVENTS_TOTAL, "kind" => kind_label, "state" => state_label)
                .increment(1);
        }
        if reassigned {
            metrics::counter!(crate::metrics::IDLE_REASSIGNMENTS_TOTAL).increment(1);
        }
        Ok(())
    }

    async fn on_unassign(
        &mut self,
        conversation_id: String,
        agent_id: String,
        reason: UnassignReason,
    ) -> Result<(), ActorProcessingErr> {
        let decision = self.decide(Input::Unassign { conversation_id, agent_id, reason })?;
        if decision.record.is_none() {
            return Ok(()); // not this agent's (any more)
        }
        self.commit_decision(decision).await?;
        Ok(())
    }

    /// The open conversation `conversation_id` if `principal` may act on it.
    fn authorize(&self, principal: &Principal, conversation_id: &str) -> Result<ConversationRecord, ApiError> {
        let open = self.open.as_ref().filter(|open| open.conversation.id == conversation_id);
        let closed = match open {
            Some(_) => None,
            None => self.shared.reader.conversation(conversation_id).ok().flatten(),
        };
        requests::authorize(open, closed.as_ref(), principal, conversation_id)
    }

    /// Decides a client's request and answers it: a refusal goes back
    /// through the reply port and changes nothing; otherwise the decision is
    /// committed first. Returns whether it was committed.
    async fn answer_with_decision(&mut self, input: Input, reply: Reply) -> Result<bool, ActorProcessingErr> {
        let mut decision = match self.decide(input) {
            Ok(decision) => decision,
            Err(refusal) => {
                let _ = reply.send(Err(refusal));
                return Ok(false);
            }
        };
        let answer = decision.answer.take().unwrap_or_default();
        self.commit_decision(decision).await?;
        let _ = reply.send(Ok(answer));
        Ok(true)
    }

    async fn on_request(
        &mut self,
        principal: Principal,
        conversation_id: String,
        kind: RequestKind,
        reply: Reply,
    ) -> Result<(), ActorProcessingErr> {
        let record = match self.authorize(&principal, &conversation_id) {
            Ok(record) => record,
            Err(error) => {
                let _ = reply.send(Err(error));
                return Ok(());
            }
        };
        match kind {
            RequestKind::Send { text } => {
                let outgoing = Outgoing::Text(text);
                match self.take_from_copilot(&principal, record, &outgoing).await? {
                    Ok(record) => self.start_send(&principal, &record, outgoing, reply).await?,
                    Err(refusal) => drop(reply.send(Err(refusal))),
                }
            }
            RequestKind::SendTemplate { template } => {
                let outgoing = Outgoing::Template(template);
                match self.take_from_copilot(&principal, record, &outgoing).await? {
                    Ok(record) => self.start_send(&principal, &record, outgoing, reply).await?,
                    Err(refusal) => drop(reply.send(Err(refusal))),
                }
            }
            RequestKind::SetFields { fields } => {
                let input = Input::SetFields { by: principal.agent_id.clone(), fields };
                self.answer_with_decision(input, reply).await?;
            }
            RequestKind::Close { fields } => {
                let input = Input::Close { by: principal.agent_id.clone(), fields: fields.unwrap_or_default() };
                let closed = self.answer_with_decision(input, reply).await?;
                if closed {
                    metrics::counter!(crate::metrics::CONVERSATIONS_CLOSED_TOTAL).increment(1);
                }
            }
            RequestKind::Transfer { team, agent, note } => {
                self.transfer(&principal, record, (team, agent), note, reply).await?
            }
        }
        Ok(())
    }

    /// A person's send on a conversation the co-pilot has takes it from the
    /// co-pilot first: the co-pilot's part ends and the conversation goes to
    /// its team's queue, as a transfer to that team by that person would
    /// (docs/copilot.md "A person writes"). The record to send on, or the
    /// send's refusal, checked first: a send that would be refused takes
    /// nothing.
    async fn take_from_copilot(
        &mut self,
        principal: &Principal,
        record: ConversationRecord,
        outgoing: &Outgoing,
    ) -> Result<Result<ConversationRecord, ApiError>, ActorProcessingErr> {
        if record.conversation.status != ConversationStatus::Bot {
            return Ok(Ok(record));
        }
        let now = self.now();
        let local_id = local_message_id(&record.conversation.id, now);
        if let Err(refusal) = requests::plan_send(&record, principal, outgoing.clone(), local_id, now) {
            return Ok(Err(refusal));
        }
        let team = record.conversation.team.clone().unwrap_or_default();
        let note = Some("took the conversation from the co-pilot by writing to the customer".to_owned());
        let decision = match self.decide(Input::TransferToTeam { by: principal.agent_id.clone(), team, note }) {
            Ok(decision) => decision,
            Err(refusal) => return Ok(Err(refusal)),
        };
        self.commit_decision(decision).await?;
        Ok(Ok(self.open.clone().unwrap_or(record)))
    }

    /// Records the send's intent durably (one commit), then calls Meta.
    /// Whatever happens to the process meanwhile, the send is then either
    /// answered and recorded, or shown as `unknown` (see [`SendIntent`]).
    async fn start_send(
        &self,
        principal: &Principal,
        record: &ConversationRecord,
        outgoing: Outgoing,
        reply: Reply,
    ) -> Result<(), ActorProcessingErr> {
        self.start_send_with(principal, record, outgoing, reply, Vec::new()).await
    }

    /// [`Self::start_send`], committing `with` in the intent's batch (a
    /// follow-up's frames and event: fired if and only if its send is).
    async fn start_send_with(
        &self,
        principal: &Principal,
        record: &ConversationRecord,
        outgoing: Outgoing,
        reply: Reply,
        with: Vec<Op>,
    ) -> Result<(), ActorProcessingErr> {
        let now = self.now();
        let local_id = local_message_id(&record.conversation.id, now);
        let PlannedSend { request, intent } = match requests::plan_send(record, principal, outgoing, local_id, now) {
            Ok(planned) => planned,
            Err(refusal) => {
                let _ = reply.send(Err(refusal));
                return Ok(());
            }
        };
        let pending = PendingSend { conversation_id: intent.conversation_id.clone(), reply, intent: intent.clone() };
        let mut batch = vec![Op::PutSendIntent { thread_key: self.thread_key.clone(), intent: Box::new(intent) }];
        batch.extend(with);
        self.commit(batch).await?;
        let outbound = self.shared.outbound.clone();
        let manager = self.manager().clone();
        let thread_key = self.thread_key.clone();
        let phone_number_id = record.conversation.phone_number_id.clone();
        // The HTTP call runs beside the actor so other events of this
        // conversation are not held up by Meta's latency or throttling; the
        // answer comes back through the manager, which revives this actor if
        // it was passivated meanwhile.
        tokio::spawn(async move {
            let result = outbound.send(phone_number_id, request).await;
            let _ = manager.cast(ManagerMsg::Deliver {
                thread_key,
                message: ConversationMsg::SendCompleted(Box::new(pending), result),
            });
        });
        Ok(())
    }

    async fn on_send_completed(
        &mut self,
        pending: PendingSend,
        result: Result<SendMessageResponse, ApiError>,
    ) -> Result<(), ActorProcessingErr> {
        let intent = pending.intent.clone();
        let wamid = match send_outcome(result) {
            SendOutcome::Accepted(wamid) => wamid,
            SendOutcome::Refused(error) => {
                metrics::counter!(crate::metrics::SEND_FAILURES_TOTAL, "code" => error.code.as_str()).increment(1);
                self.commit(vec![Op::ResolveSendIntent {
                    thread_key: self.thread_key.clone(),
                    local_id: intent.local_id,
                    wamid: None,
                }])
                .await?;
                let _ = pending.reply.send(Err(error));
                return Ok(());
            }
            SendOutcome::Unknown(error) => {
                metrics::counter!(crate::metrics::SEND_FAILURES_TOTAL, "code" => error.code.as_str()).increment(1);
                self.record_unknown_send(&intent).await?;
                let _ = pending.reply.send(Err(error));
                return Ok(());
            }
        };
        let is_open = self.open.as_ref().is_some_and(|open| open.conversation.id == pending.conversation_id);
        let record = if is_open {
            self.open.clone().expect("checked above")
        } else {
            match self.shared.reader.conversation(&pending.conversation_id)? {
                Some(record) => record,
                None => {
                    let resolve = Op::ResolveSendIntent {
                        thread_key: self.thread_key.clone(),
                        local_id: intent.local_id,
                        wamid: Some(wamid),
                    };
                    self.commit(vec![resolve]).await?;
                    return Ok(());
                }
            }
        };
        let mut decision =
            self.decide(Input::SendAccepted { record: Box::new(record), intent: Box::new(intent), wamid })?;
        let answer = decision.answer.take().unwrap_or_default();
        self.commit_decision(decision).await?;
        metrics::counter!(crate::metrics::MESSAGES_TOTAL, "direction" => "out").increment(1);
        let _ = pending.reply.send(Ok(answer));
        Ok(())
    }

    /// A follow-up came due: checks the conversation (open, or closed and
    /// read from the store) still holds the promise unpaid, then commits
    /// the `followup` frames to whoever should hear of it, the
    /// `followup_due` event and, when the field has a `followup_template`,
    /// the reminder's send intent, as one batch; then calls Meta as any
    /// send does. A restart after that commit never fires it again (the
    /// consumer reads the event); the send itself is then `unknown` at
    /// worst, never sent twice.
    async fn on_followup(&mut self, row: FollowupRow) -> Result<FollowupOutcome, ActorProcessingErr> {
        let is_open = self.open.as_ref().is_some_and(|open| open.conversation.id == row.conversation_id);
        let record = match &self.open {
            Some(open) if is_open => open.clone(),
            _ => match self.shared.reader.conversation(&row.conversation_id)? {
                Some(record) => record,
                None => return Ok(FollowupOutcome::Stale),
            },
        };
        let conversation = &record.conversation;
        let team = conversation.team.as_deref();
        let spec = self.shared.settings.schemas().of(team).iter().find(|spec| spec.key == row.field);
        if !followups::still_due(&row, spec, &conversation.fields) {
            return Ok(FollowupOutcome::Stale);
        }
        let spec = spec.expect("still_due checked it").clone();
        let holder =
            conversation.agent.as_deref().filter(|_| is_open && conversation.status == ConversationStatus::Assigned);
        let notified = followups::recipients(holder, row.closer.as_deref(), team, self.shared.roster().agents());
        let promise = row.promise();
        let mut ops: Vec<Op> = notified
            .iter()
            .map(|agent_id| Op::AgentEvent {
                agent_id: agent_id.clone(),
                frame: Box::new(ServerFrame::Followup {
                    seq: 0,
                    conversation_id: conversation.id.clone(),
                    contact: conversation.contact.clone(),
                    field: row.field.clone(),
                    promise: protocol::ws::Promise { date: promise.date.clone(), amount: promise.amount },
                    due_at: row.due,
                }),
            })
            .collect();
        let template = spec.followup_template.as_ref().map(|template| {
            let contact = self.shared.reader.contact(&conversation.contact.wa_id).ok().flatten();
            let values = followups::ParamValues {
                promise: Some(&promise),
                conversation_id: &conversation.id,
                contact_wa_id: &conversation.contact.wa_id,
                contact_name: contact
                    .as_ref()
                    .and_then(|contact| contact.name.as_deref())
                    .or(conversation.contact.name.as_deref()),
                attributes: contact.as_ref().map(|contact| &contact.attributes),
            };
            protocol::ws::TemplateRequest {
                name: template.name.clone(),
                language: template.language.clone(),
                params: followups::render_params(&template.params, &values),
            }
        });
        let event = crate::decide::event_of(
            &record,
            self.now(),
            protocol::events::Actor::System,
            EventBody::FollowupDue {
                field: row.field.clone(),
                date: promise.date.clone(),
                amount: promise.amount,
                due: row.due,
                notified: notified.clone(),
                template: template.as_ref().map(|template| template.name.clone()),
            },
        );
        ops.push(Op::Event(Box::new(event)));
        let Some(template) = template else {
            self.commit(ops).await?;
            return Ok(FollowupOutcome::Fired);
        };
        let principal =
            Principal { agent_id: crate::decide::SYSTEM_SENDER.to_owned(), role: protocol::model::Role::Admin };
        let (port, answer) = ractor::concurrency::oneshot();
        self.start_send_with(&principal, &record, Outgoing::Template(template), port.into(), ops).await?;
        let conversation_id = record.conversation.id.clone();
        tokio::spawn(async move {
            if let Ok(Err(refusal)) = answer.await {
                tracing::warn!(%conversation_id, code = ?refusal.code, message = %refusal.message, "the follow-up's template was not sent");
            }
        });
        Ok(FollowupOutcome::Fired)
    }

    /// Meta's answer to a send is lost (the connection failed after the
    /// request went out): the message goes into history as `unknown`.
    async fn record_unknown_send(&mut self, intent: &SendIntent) -> Result<(), ActorProcessingErr> {
        let is_open = self.open.as_ref().is_some_and(|open| open.conversation.id == intent.conversation_id);
        let mut record = match &self.open {
            Some(open) if is_open => open.clone(),
            _ => match self.shared.reader.conversation(&intent.conversation_id)? {
                Some(record) => record,
                None => return Ok(()),
            },
        };
        let actor = crate::decide::sender_actor(&intent.sent_by);
        let batch = unknown_send_batch(&mut record, intent, actor, self.now());
        self.commit(batch).await?;
        if is_open {
            self.open = Some(record);
        }
        Ok(())
    }

    async fn transfer(
        &mut self,
        principal: &Principal,
        record: ConversationRecord,
        (team, agent): (Option<String>, Option<String>),
        note: Option<String>,
        reply: Reply,
    ) -> Result<(), ActorProcessingErr> {
        let directory = self.shared.directory();
        let conversation_id = record.conversation.id.clone();
        let by = principal.agent_id.clone();
        let target = requests::transfer_target(
            &record,
            (team, agent),
            note.as_deref(),
            |agent| self.shared.roster().is_active(agent),
            |team| directory.team(team).is_some(),
        );
        match target {
            Err(refusal) => {
                let _ = reply.send(Err(refusal));
            }
            Ok(TransferTarget::Agent(target)) => {
                let Some(target_ref) = directory.agent(&target) else {
                    let _ = reply.send(Err(ApiError::not_found(format!("no agent {target}"))));
                    return Ok(());
                };
                let reserved = ractor::call!(target_ref, |port| AgentMsg::TryReserve {
                    conversation_id: conversation_id.clone(),
                    reply: port
                })
                .unwrap_or(false);
                if !reserved {
                    let _ = reply.send(Err(ApiError::new(
                        ErrorCode::CapacityExhausted,
                        format!("agent {target} cannot take it now (offline, away or at capacity)"),
                    )));
                    return Ok(());
                }
                let messages = self.messages_of(&record)?;
                let decided = self.decide(Input::TransferToAgent { by, target, note, messages });
                let mut decision = match decided {
                    Ok(decision) => decision,
                    Err(refusal) => {
                        let _ = target_ref.cast(AgentMsg::Cancel { conversation_id });
                        let _ = reply.send(Err(refusal));
                        return Ok(());
                    }
                };
                let answer = decision.answer.take().unwrap_or_default();
                if let Err(error) = self.commit_decision(decision).await {
                    let _ = target_ref.cast(AgentMsg::Cancel { conversation_id });
                    return Err(error);
                }
                let _ = reply.send(Ok(answer));
            }
            Ok(TransferTarget::Team(team)) => {
                self.answer_with_decision(Input::TransferToTeam { by, team, note }, reply).await?;
            }
        }
        Ok(())
    }
}

/// The longest summary a model hook may write, in characters.
const MAX_SUMMARY_CHARS: usize = 2_000;

fn sla_kind_label(kind: protocol::ws::SlaKind) -> &'static str {
    match kind {
        protocol::ws::SlaKind::FirstResponse => "first_response",
        protocol::ws::SlaKind::NextResponse => "next_response",
        protocol::ws::SlaKind::Resolution => "resolution",
    }
}

/// What Meta's answer to a send means for its intent.
#[derive(Debug, PartialEq)]
pub(crate) enum SendOutcome {
    /// Accepted, with the message's wamid.
    Accepted(String),
    /// Meta answered with an error (or kept throttling): nothing was sent.
    Refused(ApiError),
    /// No usable answer (the connection failed or timed out, Meta answered
    /// 200 without a readable message id, or an error without Meta's error
    /// body): Meta may have sent it, so it is recorded as `unknown`.
    Unknown(ApiError),
}

pub(crate) fn send_outcome(result: Result<SendMessageResponse, ApiError>) -> SendOutcome {
    match result {
        Ok(response) => match response.messages.into_iter().next() {
            Some(message) => SendOutcome::Accepted(message.id),
            None => SendOutcome::Unknown(ApiError::new(
                ErrorCode::UpstreamError,
                "WhatsApp accepted the message but returned no message id",
            )),
        },
        Err(error) => {
            let metas_answer = error.detail.as_ref().is_some_and(|detail| detail.get("meta_code").is_some());
            if error.code == ErrorCode::UpstreamError && !metas_answer {
                SendOutcome::Unknown(error)
            } else {
                SendOutcome::Refused(error)
            }
        }
    }
}

/// The message an intent without an outcome shows in history: its local
/// id, status `unknown`, at the time the send started.
pub(crate) fn unknown_message(intent: &SendIntent) -> Message {
    Message {
        id: intent.local_id.clone(),
        direction: Direction::Out,
        kind: intent.kind.clone(),
        text: intent.text.clone(),
        media: crate::decide::outbound_media(intent),
        at: intent.created_at,
        status: Some(DeliveryStatus::Unknown),
        free: None,
        error: None,
        author: Some(crate::decide::author_of(&intent.sent_by)),
    }
}

/// Appends an intent's `unknown` message to `record` (its conversation) and
/// returns the batch that stores it, marks the intent unknown, tells the
/// holder and logs a `message_out` by `actor` (the sender when the answer is
/// lost live; `System` when recovery finds it at a start). The
/// conversation's clocks are left alone: whether the customer got a reply
/// is not known.
pub(crate) fn unknown_send_batch(
    record: &mut ConversationRecord,
    intent: &SendIntent,
    actor: protocol::events::Actor,
    now: UnixMs,
) -> Batch {
    let message = unknown_message(intent);
    let index = record.message_count;
    record.message_count += 1;
    let mut batch = vec![
        Op::PutMessage {
            conversation_id: record.conversation.id.clone(),
            thread_key: record.thread_key.clone(),
            index,
            message: Box::new(StoredMessage { message: message.clone(), raw: None }),
        },
        Op::PutConversation(Box::new(record.clone())),
        Op::SendIntentUnknown { thread_key: record.thread_key.clone(), local_id: intent.local_id.clone(), index },
    ];
    if let (ConversationStatus::Assigned, Some(agent)) = (record.conversation.status, &record.conversation.agent) {
        batch.push(Op::AgentEvent {
            agent_id: agent.clone(),
            frame: Box::new(ServerFrame::Message {
                seq: 0,
                conversation_id: record.conversation.id.clone(),
                message: message.clone(),
            }),
        });
    }
    let body = protocol::events::EventBody::MessageOut {
        id: message.id.clone(),
        message_type: message.kind.clone(),
        text: message.text.clone(),
        template: intent.template.as_ref().and_then(|template| template["name"].as_str()).map(str::to_owned),
    };
    batch.push(Op::Event(Box::new(crate::decide::event_of(record, now, actor, body))));
    batch
}

/// An outbound message's id until Meta's wamid is known: unique in this
/// process (a counter) and across restarts (the time).
fn local_message_id(conversation_id: &str, now: UnixMs) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("local.{conversation_id}.{now}.{n}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::new_conversation;
    use protocol::model::Contact;
    use serde_json::json;

    #[test]
    fn a_send_is_unknown_only_when_metas_answer_is_missing() {
        use protocol::graph::SentMessage;
        let accepted = SendMessageResponse {
            messaging_product: "whatsapp".into(),
            contacts: Vec::new(),
            messages: vec![SentMessage { id: "wamid.1".into(), message_status: None }],
        };
        assert_eq!(send_outcome(Ok(accepted.clone())), SendOutcome::Accepted("wamid.1".into()));
        let no_id = SendMessageResponse { messages: Vec::new(), ..accepted };
        assert!(matches!(send_outcome(Ok(no_id)), SendOutcome::Unknown(_)));
        let transport = ApiError::new(ErrorCode::UpstreamError, "could not reach the WhatsApp Cloud API: timed out");
        assert!(matches!(send_outcome(Err(transport)), SendOutcome::Unknown(_)));
        let metas = ApiError::new(ErrorCode::UpstreamError, "undeliverable").with_detail(json!({"meta_code": 131026}));
        assert!(matches!(send_outcome(Err(metas)), SendOutcome::Refused(_)));
        let throttled = ApiError::new(ErrorCode::RateLimited, "slow down");
        assert!(matches!(send_outcome(Err(throttled)), SendOutcome::Refused(_)));
        let window = ApiError::new(ErrorCode::WindowClosed, "closed");
        assert!(matches!(send_outcome(Err(window)), SendOutcome::Refused(_)));
    }

    #[test]
    fn an_unknown_send_is_appended_and_told_to_the_holder() {
        let thread = ThreadRecord {
            contact: Contact { wa_id: "15550001".into(), name: None },
            phone_number_id: "100".into(),
            open_conversation: Some("cv000000000001".into()),
            last_closed_by: None,
            last_inbox_seq: 0,
        };
        let mut record = new_conversation(
            "cv000000000001".into(),
            &thread,
            "100:15550001",
            protocol::model::Source::organic(),
            None,
            5,
        );
        record.message_count = 2;
        record.conversation.status = ConversationStatus::Assigned;
        record.conversation.agent = Some("a1".into());
        let intent = SendIntent {
            local_id: "local.x".into(),
            conversation_id: "cv000000000001".into(),
            kind: "text".into(),
            text: Some("hi".into()),
            template: None,
            request: String::new(),
            sent_by: "a1".into(),
            created_at: 42,
            unknown_at: None,
        };
        let batch = unknown_send_batch(&mut record, &intent, protocol::events::Actor::User { id: "a1".into() }, 50);
        assert_eq!(record.message_count, 3);
        let Op::PutMessage { index: 2, message, .. } = &batch[0] else { panic!("{batch:?}") };
        assert_eq!(message.message.status, Some(DeliveryStatus::Unknown));
        assert_eq!((message.message.id.as_str(), message.message.at), ("local.x", 42));
        assert!(matches!(&batch[2], Op::SendIntentUnknown { index: 2, .. }));
        assert!(matches!(&batch[3], Op::AgentEvent { agent_id, .. } if agent_id == "a1"));
        let Op::Event(event) = &batch[4] else { panic!("the unknown send is logged: {batch:?}") };
        assert_eq!(event.actor, protocol::events::Actor::user("a1"));
        assert_eq!((event.at, event.conversation_id.as_deref()), (50, Some("cv000000000001")));
        assert!(matches!(&event.body, protocol::events::EventBody::MessageOut { id, .. } if id == "local.x"));
    }
}
