//! Broadcasts (PROTOCOL §10, docs/broadcasts.md): one task owns every
//! broadcast and its recipients, stored in the `broadcasts` table (format
//! v12), and sends their template through the Graph API.
//!
//! - Created: the broadcast and every recipient (opted-out ones already
//!   `skipped`) are committed with a `broadcast_created` event before its id
//!   is answered.
//! - Sending, paced by the shared [`SendBudget`] (at most
//!   `whatsapp.max_sends_per_s` in any second, on the engine's clock,
//!   agents' sends counted first): the recipients whose turn came are
//!   checked for an opt-out again (a STOP may arrive mid-broadcast) and
//!   committed `sending` (or `skipped`) **before** their request goes to
//!   Meta — the send-intent idea of the conversations: a recipient found
//!   `sending` at the next start may have been sent, so it becomes
//!   `unknown` and is never sent again. Meta's answer is committed with a
//!   `broadcast_recipient` event: `sent` with its wamid, `failed` with a
//!   stable error, or `unknown` when no answer came.
//! - Meta's limits ([`decide::classify`]): throttling puts the recipient
//!   back and waits (1 s doubling, at most a minute); the number's
//!   messaging or spam limit pauses the broadcast (`paused_limit`, pending
//!   recipients stay pending) until `POST /api/v1/broadcasts/{id}/resume`;
//!   a refused template stops it.
//!   Memory follows the store: a change is applied after its commit.

pub mod decide;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::clock::SharedClock;
use actors::shared::{BoxFuture, Outbound};
use protocol::ApiError;
use protocol::events::{Actor, Event, EventBody};
use protocol::graph::{SendMessageRequest, SendMessageResponse};
use protocol::time::UnixMs;
use serde_json::json;
use storage::{Op, Store};
use tokio::sync::{mpsc, oneshot};

use crate::consumer::ConsumerError;
use decide::{
    BroadcastRecord, BroadcastState, MAX_IN_FLIGHT, Pacer, RecipientRecord, RecipientState, SendOutcome, broadcast_key,
    recipient_key,
};

/// How often the task looks for sends to start while a broadcast is sending.
const TICK: Duration = Duration::from_millis(10);
/// After a failed commit (the store cannot write), wait this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// At a stop, how long sends in flight are waited for (their outcome is
/// then stored; one still out becomes `unknown` at the next start).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The send budget every send to the Graph API shares (see [`Pacer`]).
pub struct SendBudget {
    pacer: Mutex<Pacer>,
    clock: SharedClock,
}

impl SendBudget {
    pub fn new(max_sends_per_s: u32, clock: SharedClock) -> Arc<SendBudget> {
        Arc::new(SendBudget { pacer: Mutex::new(Pacer::new(max_sends_per_s)), clock })
    }

    fn pacer(&self) -> std::sync::MutexGuard<'_, Pacer> {
        self.pacer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An agent's send: it goes at once and counts.
    pub fn record(&self) {
        let now = self.clock.now_ms();
        self.pacer().record(now);
    }

    /// Takes up to `wanted` sends of the budget now; how many it got.
    pub fn take(&self, wanted: usize) -> usize {
        let now = self.clock.now_ms();
        let mut pacer = self.pacer();
        (0..wanted).take_while(|_| pacer.try_take(now)).count()
    }
}

/// The Graph API as the actors use it (agents' sends), each send counted in
/// the [`SendBudget`] before it goes, never waiting: agents come first.
pub struct PacedOutbound {
    pub inner: Arc<dyn Outbound>,
    pub budget: Arc<SendBudget>,
}

impl Outbound for PacedOutbound {
    fn send(
        &self,
        phone_number_id: String,
        request: SendMessageRequest,
    ) -> BoxFuture<Result<SendMessageResponse, ApiError>> {
        self.budget.record();
        self.inner.send(phone_number_id, request)
    }
}

/// A broadcast and its recipients, as the API shows them.
#[derive(Clone, Debug)]
pub struct BroadcastView {
    pub record: BroadcastRecord,
    /// Recipients by state.
    pub counts: BTreeMap<String, u64>,
    /// `None` in lists.
    pub recipients: Option<Vec<RecipientRecord>>,
}

/// A broadcast to create, its recipients resolved and checked for opt-outs.
pub struct NewBroadcast {
    pub record: BroadcastRecord,
    pub recipients: Vec<RecipientRecord>,
}

enum Request {
    Create { new: Box<NewBroadcast>, reply: oneshot::Sender<Result<String, ApiError>> },
    Get { id: String, reply: oneshot::Sender<Option<BroadcastView>> },
    List { reply: oneshot::Sender<Vec<BroadcastView>> },
    Resume { id: String, user: String, reply: oneshot::Sender<Result<BroadcastView, ApiError>> },
    Stop { reply: oneshot::Sender<()> },
}

/// One send's answer: (broadcast number, recipient index, Meta's answer).
type Answer = (u64, usize, Result<SendMessageResponse, ApiError>);

struct Running {
    record: BroadcastRecord,
    /// Empty once it completed (`archived`): they are read from the store.
    recipients: Vec<RecipientRecord>,
    archived: bool,
    /// Recipients before this index are not pending (a hint, kept low).
    next_pending: usize,
    in_flight: usize,
}

impl Running {
    fn new(record: BroadcastRecord, recipients: Vec<RecipientRecord>) -> Running {
        Running { record, recipients, archived: false, next_pending: 0, in_flight: 0 }
    }

    fn counts(&self) -> BTreeMap<String, u64> {
        match (&self.record.final_counts, self.archived) {
            (Some(counts), true) => counts.clone(),
            _ => decide::counts(self.recipients.iter().map(|recipient| &recipient.state)),
        }
    }

    /// With its recipients, unless it is archived or `listed`.
    fn view(&self, listed: bool) -> BroadcastView {
        let recipients = (!listed && !self.archived).then(|| self.recipients.clone());
        BroadcastView { record: self.record.clone(), counts: self.counts(), recipients }
    }

    /// Completed: its counts go into its record; its recipients leave
    /// memory once that is stored ([`Running::archive`]).
    fn complete(record: &mut BroadcastRecord, counts: &BTreeMap<String, u64>) {
        record.state = BroadcastState::Completed;
        record.final_counts = Some(counts.clone());
    }

    fn archive(&mut self) {
        if self.record.state == BroadcastState::Completed && self.record.final_counts.is_some() {
            self.archived = true;
            self.recipients = Vec::new();
        }
    }

    fn has_pending(&self) -> bool {
        self.recipients[self.next_pending.min(self.recipients.len())..]
            .iter()
            .any(|recipient| recipient.state == RecipientState::Pending)
    }
}

/// The `broadcast_state` event of `record` with these counts.
fn state_event(record: &BroadcastRecord, counts: &BTreeMap<String, u64>, at: UnixMs, actor: Actor) -> Event {
    let count = |state: &str| decide::count(counts, state);
    Event {
        at,
        conversation_id: None,
        contact: None,
        phone_number_id: None,
        actor,
        body: EventBody::BroadcastState {
            broadcast_id: record.id.clone(),
            state: record.state.label().to_owned(),
            reason: record.reason.clone(),
            sent: count("sent"),
            failed: count("failed"),
            skipped: count("skipped"),
            unknown: count("unknown"),
            pending: count("pending") + count("sending"),
        },
    }
}

fn recipient_event(id: &str, recipient: &RecipientRecord, at: UnixMs) -> Event {
    Event {
        at,
        conversation_id: None,
        contact: Some(recipient.wa_id.clone()),
        phone_number_id: Some(recipient.phone_number_id.clone()),
        actor: Actor::Broadcast { id: id.to_owned() },
        body: EventBody::BroadcastRecipient {
            broadcast_id: id.to_owned(),
            state: recipient.state.label().to_owned(),
            message_id: recipient.message_id.clone(),
            error: recipient.error.clone(),
        },
    }
}

/// The audience as its event records it: the filters, and how many
/// contacts were named rather than each (the recipients' own events name
/// them), so one audit entry stays small for 10,000 recipients.
fn audience_shown(audience: &decide::AudienceSpec) -> serde_json::Value {
    let mut shown = serde_json::to_value(audience).unwrap_or_default();
    if let Some(contacts) = &audience.contacts {
        shown["contacts"] = json!(contacts.len());
    }
    shown
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    rmp_serde::to_vec_named(value).map_err(|error| ApiError::unavailable(format!("cannot encode a broadcast: {error}")))
}

fn number_of(id: &str) -> Option<u64> {
    id.strip_prefix("bc")?.parse().ok()
}

struct Task {
    store: Arc<Store>,
    clock: SharedClock,
    outbound: Arc<dyn Outbound>,
    budget: Arc<SendBudget>,
    broadcasts: BTreeMap<u64, Running>,
    next_number: u64,
    answers: mpsc::UnboundedSender<Answer>,
    /// Answers whose outcome could not be stored yet (a full disk).
    unsettled: Vec<Answer>,
    /// Meta throttled: no send starts before this time.
    throttled_until: UnixMs,
    throttled_streak: u32,
}

impl Task {
    /// Loads every broadcast; recipients found `sending` (the engine stopped
    /// while Meta may have had them) become `unknown`, committed with their
    /// events before anything is sent.
    async fn open(
        store: Arc<Store>,
        clock: SharedClock,
        outbound: Arc<dyn Outbound>,
        budget: Arc<SendBudget>,
        answers: mpsc::UnboundedSender<Answer>,
    ) -> Result<Task, ConsumerError> {
        let reader = store.reader().caught_up().await?;
        let mut records: BTreeMap<String, BroadcastRecord> = BTreeMap::new();
        let mut unreadable = 0usize;
        reader.broadcast_rows_under("b/", |key, value| {
            match rmp_serde::from_slice::<BroadcastRecord>(value) {
                Ok(record) => {
                    records.insert(key["b/".len()..].to_owned(), record);
                }
                Err(_) => unreadable += 1,
            }
            Ok(())
        })?;
        if unreadable > 0 {
            tracing::error!(rows = unreadable, "broadcast rows cannot be read; they are left in place");
        }
        let now = clock.now_ms();
        let mut batch = Vec::new();
        let mut broadcasts = BTreeMap::new();
        for (id, record) in records {
            let Some(number) = number_of(&id) else { continue };
            let archived = record.state == BroadcastState::Completed && record.final_counts.is_some();
            let listed = if archived { Vec::new() } else { read_recipients(&reader, &id)? };
            let mut running = Running::new(record, listed);
            running.archived = archived;
            let mut rows = Vec::new();
            for (index, recipient) in running.recipients.iter_mut().enumerate() {
                if recipient.state == RecipientState::Sending {
                    recipient.state = RecipientState::Unknown;
                    recipient.at = Some(now);
                    rows.push((recipient_key(&id, index), Some(encode(recipient).map_err(api)?)));
                    batch.push(Op::Event(Box::new(recipient_event(&id, recipient, now))));
                    metrics::counter!(crate::metrics::BROADCAST_SENDS_TOTAL, "outcome" => "unknown").increment(1);
                }
            }
            if running.record.state == BroadcastState::Sending && !running.has_pending() {
                let counts = running.counts();
                Running::complete(&mut running.record, &counts);
                rows.push((broadcast_key(&id), Some(encode(&running.record).map_err(api)?)));
                let event = state_event(&running.record, &counts, now, Actor::Broadcast { id: id.clone() });
                batch.push(Op::Event(Box::new(event)));
            }
            if !rows.is_empty() {
                batch.insert(0, Op::PutBroadcastRows(rows));
            }
            broadcasts.insert(number, running);
        }
        if !batch.is_empty() {
            store.commit(batch).await?;
        }
        for running in broadcasts.values_mut() {
            running.archive();
        }
        let next_number = broadcasts.keys().next_back().map_or(1, |last| last + 1);
        let task = Task {
            store,
            clock,
            outbound,
            budget,
            broadcasts,
            next_number,
            answers,
            unsettled: Vec::new(),
            throttled_until: 0,
            throttled_streak: 0,
        };
        task.publish_gauge();
        Ok(task)
    }

    fn active(&self) -> bool {
        !self.unsettled.is_empty()
            || self.broadcasts.values().any(|running| running.record.state == BroadcastState::Sending)
    }

    fn publish_gauge(&self) {
        let sending =
            self.broadcasts.values().filter(|running| running.record.state == BroadcastState::Sending).count();
        metrics::gauge!(crate::metrics::BROADCASTS_IN_PROGRESS).set(sending as f64);
    }

    async fn create(&mut self, new: NewBroadcast) -> Result<String, ApiError> {
        let NewBroadcast { mut record, recipients } = new;
        let number = self.next_number;
        let id = format!("bc{number}");
        record.id = id.clone();
        record.total = recipients.len() as u32;
        let mut running = Running::new(record, recipients);
        let counts = running.counts();
        if !running.has_pending() {
            Running::complete(&mut running.record, &counts);
        }
        let now = self.clock.now_ms();
        let mut rows = vec![(broadcast_key(&id), Some(encode(&running.record)?))];
        let mut events = Vec::new();
        let skipped = running.recipients.iter().filter(|recipient| recipient.state == RecipientState::Skipped).count();
        events.push(Op::Event(Box::new(Event {
            at: now,
            conversation_id: None,
            contact: None,
            phone_number_id: None,
            actor: Actor::user(running.record.created_by.clone()),
            body: EventBody::BroadcastCreated {
                broadcast_id: id.clone(),
                name: running.record.name.clone(),
                template: serde_json::to_value(&running.record.template).unwrap_or_default(),
                audience: audience_shown(&running.record.audience),
                total: running.recipients.len() as u64,
                skipped: skipped as u64,
            },
        })));
        for (index, recipient) in running.recipients.iter().enumerate() {
            rows.push((recipient_key(&id, index), Some(encode(recipient)?)));
            if recipient.state == RecipientState::Skipped {
                events.push(Op::Event(Box::new(recipient_event(&id, recipient, now))));
            }
        }
        if running.record.state == BroadcastState::Completed {
            events.push(Op::Event(Box::new(state_event(
                &running.record,
                &counts,
                now,
                Actor::Broadcast { id: id.clone() },
            ))));
        }
        let mut batch = vec![Op::PutBroadcastRows(rows)];
        batch.extend(events);
        self.store.commit(batch).await.map_err(|error| {
            tracing::warn!(%error, "a broadcast could not be stored");
            ApiError::unavailable("the broadcast could not be stored; try again")
        })?;
        metrics::counter!(crate::metrics::BROADCAST_SENDS_TOTAL, "outcome" => "skipped").increment(skipped as u64);
        self.next_number += 1;
        running.archive();
        self.broadcasts.insert(number, running);
        self.publish_gauge();
        Ok(id)
    }

    async fn resume(&mut self, id: &str, user: &str) -> Result<BroadcastView, ApiError> {
        let number = number_of(id).filter(|number| self.broadcasts.contains_key(number));
        let Some(number) = number else {
            return Err(ApiError::not_found(format!("no broadcast {id:?}")));
        };
        let running = self.broadcasts.get(&number).expect("checked");
        match running.record.state {
            BroadcastState::Sending => return Ok(running.view(true)),
            BroadcastState::Completed => {
                return Err(ApiError::bad_request("the broadcast is completed: every recipient has its outcome"));
            }
            BroadcastState::PausedLimit | BroadcastState::Stopped => {}
        }
        let mut record = running.record.clone();
        record.state = BroadcastState::Sending;
        record.reason = None;
        let now = self.clock.now_ms();
        let event = state_event(&record, &running.counts(), now, Actor::user(user));
        self.store
            .commit(vec![
                Op::PutBroadcastRows(vec![(broadcast_key(id), Some(encode(&record)?))]),
                Op::Event(Box::new(event)),
            ])
            .await
            .map_err(|_| ApiError::unavailable("the broadcast could not be resumed; try again"))?;
        let running = self.broadcasts.get_mut(&number).expect("checked");
        running.record = record;
        running.next_pending = 0;
        let view = running.view(true);
        self.throttled_until = 0;
        self.publish_gauge();
        Ok(view)
    }

    /// Starts the sends the budget allows now: each recipient whose turn
    /// came is checked for an opt-out and committed `sending` (or
    /// `skipped`) before its request goes.
    async fn dispatch(&mut self) {
        if !self.unsettled.is_empty() {
            let unsettled = std::mem::take(&mut self.unsettled);
            self.settle(unsettled).await;
            if !self.unsettled.is_empty() {
                return;
            }
        }
        let now = self.clock.now_ms();
        if now < self.throttled_until {
            return;
        }
        let reader = self.store.reader();
        for (&number, running) in self.broadcasts.iter_mut() {
            if running.record.state != BroadcastState::Sending {
                continue;
            }
            let room = MAX_IN_FLIGHT.saturating_sub(running.in_flight);
            if room == 0 {
                continue;
            }
            // The next pending recipients, up to the room in flight.
            let mut chosen = Vec::new();
            let mut index = running.next_pending;
            while index < running.recipients.len() && chosen.len() < room {
                if running.recipients[index].state == RecipientState::Pending {
                    chosen.push(index);
                }
                index += 1;
            }
            if chosen.is_empty() {
                continue;
            }
            // Opted out since the broadcast was created: skipped, no budget.
            let mut skipped = Vec::new();
            let mut to_send = Vec::new();
            for index in chosen {
                let wa_id = &running.recipients[index].wa_id;
                match reader.contact(wa_id) {
                    Ok(Some(contact)) if contact.opted_out => skipped.push(index),
                    Ok(_) => to_send.push(index),
                    Err(error) => {
                        tracing::warn!(%error, "a broadcast cannot read a contact; it waits");
                        return;
                    }
                }
            }
            let wanted = to_send.len();
            let granted = self.budget.take(wanted);
            to_send.truncate(granted);
            if to_send.is_empty() && skipped.is_empty() {
                return; // the budget is spent: nothing more this tick
            }
            let id = running.record.id.clone();
            let mut rows = Vec::new();
            let mut events = Vec::new();
            let mut changed = Vec::new();
            for &index in &skipped {
                let mut recipient = running.recipients[index].clone();
                recipient.state = RecipientState::Skipped;
                recipient.error = Some("opted_out".to_owned());
                recipient.at = Some(now);
                events.push(Op::Event(Box::new(recipient_event(&id, &recipient, now))));
                rows.push((recipient_key(&id, index), encode(&recipient).ok()));
                changed.push((index, recipient));
            }
            for &index in &to_send {
                let mut recipient = running.recipients[index].clone();
                recipient.state = RecipientState::Sending;
                recipient.at = Some(now);
                rows.push((recipient_key(&id, index), encode(&recipient).ok()));
                changed.push((index, recipient));
            }
            let mut batch = vec![Op::PutBroadcastRows(rows)];
            batch.extend(events);
            if let Err(error) = self.store.commit(batch).await {
                tracing::warn!(%error, broadcast = %id, "a broadcast could not record its next sends; it waits");
                self.throttled_until = now + RETRY_AFTER.as_millis() as i64;
                return;
            }
            metrics::counter!(crate::metrics::BROADCAST_SENDS_TOTAL, "outcome" => "skipped")
                .increment(skipped.len() as u64);
            for (index, recipient) in changed {
                running.recipients[index] = recipient;
            }
            while running.next_pending < running.recipients.len()
                && running.recipients[running.next_pending].state != RecipientState::Pending
            {
                running.next_pending += 1;
            }
            for index in to_send {
                let recipient = &running.recipients[index];
                let request = SendMessageRequest::template(
                    &recipient.wa_id,
                    &running.record.template.name,
                    &running.record.template.language,
                    &running.record.template.params,
                );
                let sending = self.outbound.send_once(recipient.phone_number_id.clone(), request);
                let answers = self.answers.clone();
                running.in_flight += 1;
                tokio::spawn(async move {
                    let _ = answers.send((number, index, sending.await));
                });
            }
            if granted < wanted {
                return; // the budget is spent for now
            }
        }
    }

    /// Stores what Meta answered to sends, with their events, then applies
    /// it to memory.
    async fn settle(&mut self, answers: Vec<Answer>) {
        let now = self.clock.now_ms();
        let mut rows = Vec::new();
        let mut events = Vec::new();
        // (number, index, recipient after)
        let mut changed: Vec<(u64, usize, RecipientRecord)> = Vec::new();
        // (number, record after)
        let mut records: BTreeMap<u64, BroadcastRecord> = BTreeMap::new();
        let mut throttled = false;
        let mut sent_any = false;
        let mut outcomes: Vec<&'static str> = Vec::new();
        for (number, index, answer) in &answers {
            let Some(running) = self.broadcasts.get(number) else { continue };
            let id = running.record.id.clone();
            let mut recipient = running.recipients[*index].clone();
            let record = records.entry(*number).or_insert_with(|| running.record.clone());
            recipient.at = Some(now);
            let outcome = decide::classify(answer);
            match outcome {
                SendOutcome::Sent { message_id } => {
                    // Meta's statuses for it are logged, not kept waiting.
                    rows.push((storage::broadcast_wamid_key(&message_id), Some(id.as_bytes().to_vec())));
                    recipient.state = RecipientState::Sent;
                    recipient.message_id = Some(message_id);
                    sent_any = true;
                    outcomes.push("sent");
                }
                SendOutcome::Failed { error } => {
                    recipient.state = RecipientState::Failed;
                    recipient.error = Some(error);
                    outcomes.push("failed");
                }
                SendOutcome::Unknown => {
                    recipient.state = RecipientState::Unknown;
                    recipient.error = Some("no_answer".to_owned());
                    outcomes.push("unknown");
                }
                SendOutcome::Throttled => {
                    recipient.state = RecipientState::Pending;
                    throttled = true;
                    outcomes.push("throttled");
                }
                SendOutcome::Limit { reason } => {
                    recipient.state = RecipientState::Pending;
                    if record.state == BroadcastState::Sending {
                        record.state = BroadcastState::PausedLimit;
                        record.reason = Some(reason);
                    }
                    outcomes.push("limited");
                }
                SendOutcome::TemplateRefused { error } => {
                    recipient.state = RecipientState::Failed;
                    recipient.error = Some(error.clone());
                    if record.state == BroadcastState::Sending {
                        record.state = BroadcastState::Stopped;
                        record.reason = Some(error);
                    }
                    outcomes.push("failed");
                }
            }
            if recipient.state != RecipientState::Pending {
                events.push(Op::Event(Box::new(recipient_event(&id, &recipient, now))));
            }
            rows.push((recipient_key(&id, *index), encode(&recipient).ok()));
            changed.push((*number, *index, recipient));
        }
        // Broadcasts that are finished once these answers are in.
        let mut finished = Vec::new();
        for (number, record) in records.iter_mut() {
            let running = &self.broadcasts[number];
            // The counts once these answers are in.
            let mut counts = running.counts();
            let mut answered = 0;
            for (changed_number, index, recipient) in &changed {
                if changed_number == number {
                    answered += 1;
                    let before = running.recipients[*index].state.label();
                    counts.entry(before.to_owned()).and_modify(|count| *count = count.saturating_sub(1));
                    *counts.entry(recipient.state.label().to_owned()).or_default() += 1;
                }
            }
            let in_flight = running.in_flight.saturating_sub(answered);
            let open = decide::count(&counts, "pending") + decide::count(&counts, "sending") > 0;
            if record.state == BroadcastState::Sending && !open && in_flight == 0 {
                Running::complete(record, &counts);
            }
            if record.state != running.record.state {
                rows.push((broadcast_key(&record.id), encode(&*record).ok()));
                let event = state_event(record, &counts, now, Actor::Broadcast { id: record.id.clone() });
                events.push(Op::Event(Box::new(event)));
                finished.push(*number);
            }
        }
        let mut batch = vec![Op::PutBroadcastRows(rows)];
        batch.extend(events);
        if let Err(error) = self.store.commit(batch).await {
            tracing::warn!(%error, "a broadcast could not store Meta's answers; trying again");
            self.unsettled = answers;
            self.throttled_until = now + RETRY_AFTER.as_millis() as i64;
            return;
        }
        for outcome in outcomes {
            metrics::counter!(crate::metrics::BROADCAST_SENDS_TOTAL, "outcome" => outcome).increment(1);
        }
        for (number, index, recipient) in changed {
            if let Some(running) = self.broadcasts.get_mut(&number) {
                running.in_flight = running.in_flight.saturating_sub(1);
                if recipient.state == RecipientState::Pending {
                    running.next_pending = running.next_pending.min(index);
                }
                running.recipients[index] = recipient;
            }
        }
        for (number, record) in records {
            if let Some(running) = self.broadcasts.get_mut(&number) {
                if record.state != running.record.state {
                    tracing::info!(broadcast = %record.id, state = record.state.label(), reason = ?record.reason, "broadcast state changed");
                }
                running.record = record;
                running.archive();
            }
        }
        if throttled {
            self.throttled_streak += 1;
            self.throttled_until = now + decide::throttle_wait_ms(self.throttled_streak);
        } else if sent_any {
            self.throttled_streak = 0;
        }
        if !finished.is_empty() {
            self.publish_gauge();
        }
    }

    fn in_flight(&self) -> usize {
        self.broadcasts.values().map(|running| running.in_flight).sum()
    }
}

/// A broadcast's recipients from the store, in order (a range read).
fn read_recipients(reader: &storage::Reader, id: &str) -> Result<Vec<RecipientRecord>, ConsumerError> {
    let mut recipients = Vec::new();
    let mut unreadable = 0usize;
    reader.broadcast_rows_under(&format!("r/{id}/"), |_, value| {
        match rmp_serde::from_slice::<RecipientRecord>(value) {
            Ok(recipient) => recipients.push(recipient),
            Err(_) => unreadable += 1,
        }
        Ok(())
    })?;
    if unreadable > 0 {
        return Err(ConsumerError(format!("{unreadable} recipients of broadcast {id} cannot be read")));
    }
    Ok(recipients)
}

fn api(error: ApiError) -> ConsumerError {
    ConsumerError(error.message)
}

/// The running broadcasts' task.
pub struct Broadcasts {
    task: crate::consumer::TaskHandle<Request>,
    store: Arc<Store>,
}

impl Broadcasts {
    /// Loads the stored broadcasts (recipients left `sending` become
    /// `unknown`) and starts sending those that are `sending`.
    pub async fn start(
        store: Arc<Store>,
        clock: SharedClock,
        outbound: Arc<dyn Outbound>,
        budget: Arc<SendBudget>,
    ) -> Result<Broadcasts, ConsumerError> {
        let (answers, mut answered) = mpsc::unbounded_channel();
        let mut task = Task::open(store.clone(), clock, outbound, budget, answers).await?;
        let (requests, mut incoming) = mpsc::channel::<Request>(64);
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut stop_reply = None;
            loop {
                let active = task.active();
                tokio::select! {
                    biased;
                    request = incoming.recv(), if stop_reply.is_none() => match request {
                        Some(Request::Create { new, reply }) => {
                            let _ = reply.send(task.create(*new).await);
                        }
                        Some(Request::Get { id, reply }) => {
                            let found = number_of(&id).and_then(|number| task.broadcasts.get(&number));
                            let _ = reply.send(found.map(|running| running.view(false)));
                        }
                        Some(Request::List { reply }) => {
                            let _ = reply.send(task.broadcasts.values().map(|running| running.view(true)).collect());
                        }
                        Some(Request::Resume { id, user, reply }) => {
                            let _ = reply.send(task.resume(&id, &user).await);
                        }
                        Some(Request::Stop { reply }) => {
                            stop_reply = Some((reply, tokio::time::Instant::now() + STOP_GRACE));
                        }
                        None => break,
                    },
                    first = answered.recv() => {
                        let Some(first) = first else { break };
                        let mut batch = vec![first];
                        while let Ok(more) = answered.try_recv() {
                            batch.push(more);
                        }
                        task.settle(batch).await;
                    }
                    _ = tick.tick(), if active || stop_reply.is_some() => {}
                }
                if let Some((_, deadline)) = &stop_reply {
                    if task.in_flight() == 0 || tokio::time::Instant::now() >= *deadline {
                        let (reply, _) = stop_reply.take().expect("set");
                        let _ = reply.send(());
                        break;
                    }
                    continue;
                }
                task.dispatch().await;
            }
        });
        Ok(Broadcasts { task: crate::consumer::TaskHandle::new(requests, handle), store })
    }

    fn stopped() -> ApiError {
        ApiError::unavailable("the broadcasts are not running; try again")
    }

    pub async fn create(&self, new: NewBroadcast) -> Result<String, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.task.requests.send(Request::Create { new: Box::new(new), reply }).await.map_err(|_| Self::stopped())?;
        answer.await.map_err(|_| Self::stopped())?
    }

    /// The broadcast with every recipient (a completed one's read from
    /// the store).
    pub async fn get(&self, id: &str) -> Result<Option<BroadcastView>, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.task.requests.send(Request::Get { id: id.to_owned(), reply }).await.map_err(|_| Self::stopped())?;
        let Some(mut view) = answer.await.map_err(|_| Self::stopped())? else { return Ok(None) };
        if view.recipients.is_none() {
            let unreadable = |_| ApiError::unavailable("the broadcast's recipients cannot be read; try again");
            let reader = self.store.reader().caught_up().await.map_err(unreadable)?;
            let id = id.to_owned();
            let recipients = tokio::task::spawn_blocking(move || read_recipients(&reader, &id))
                .await
                .map_err(|_| ApiError::unavailable("the broadcast's recipients cannot be read; try again"))?
                .map_err(|error| ApiError::unavailable(error.0))?;
            view.recipients = Some(recipients);
        }
        Ok(Some(view))
    }

    pub async fn list(&self) -> Result<Vec<BroadcastView>, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.task.requests.send(Request::List { reply }).await.map_err(|_| Self::stopped())?;
        answer.await.map_err(|_| Self::stopped())
    }

    pub async fn resume(&self, id: &str, user: &str) -> Result<BroadcastView, ApiError> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Resume { id: id.to_owned(), user: user.to_owned(), reply };
        self.task.requests.send(request).await.map_err(|_| Self::stopped())?;
        answer.await.map_err(|_| Self::stopped())?
    }

    /// Stops sending; waits a little for the sends in flight so their
    /// outcome is stored (one still out becomes `unknown` at the next start).
    pub async fn stop(&self) {
        self.task.stop(|reply| Request::Stop { reply }).await;
    }
}

/// A broadcast as `GET /api/v1/broadcasts/{id}` shows it.
pub fn view_json(view: &BroadcastView, with_recipients: bool) -> serde_json::Value {
    use protocol::time::format_rfc3339;
    let count = |state: &str| decide::count(&view.counts, state);
    let record = &view.record;
    let mut shown = json!({
        "id": record.id,
        "name": record.name,
        "state": record.state.label(),
        "reason": record.reason,
        "template": record.template,
        "audience": record.audience,
        "created_by": record.created_by,
        "created_at": format_rfc3339(record.created_at),
        "total": record.total,
        "sent": count("sent"),
        "failed": count("failed"),
        "skipped": count("skipped"),
        "unknown": count("unknown"),
        "pending": count("pending") + count("sending"),
    });
    if with_recipients {
        shown["recipients"] = view
            .recipients
            .iter()
            .flatten()
            .map(|recipient| {
                let mut item = json!({"wa_id": recipient.wa_id, "state": recipient.state.label()});
                if let Some(message_id) = &recipient.message_id {
                    item["message_id"] = json!(message_id);
                }
                if let Some(error) = &recipient.error {
                    item["error"] = json!(error);
                }
                if let Some(at) = recipient.at {
                    item["at"] = json!(format_rfc3339(at));
                }
                item
            })
            .collect();
    }
    shown
}
