//! Promise-to-pay follow-ups (PROTOCOL §10, docs/followups.md): a consumer
//! of the conversation event log with its own cursor (`followups`).
//!
//! One task owns the schedule (`conversation id/field` →
//! `actors::followups::FollowupRow`, stored in the `followups` table) and
//! the cursor:
//! - it takes in the log behind the writers: a `fields_changed` that
//!   touches a followed-up promise field or its paid field (the
//!   conversation's team, read from its record, says which schema and time
//!   zone apply) schedules, reschedules or cancels
//!   (`actors::followups::on_fields_changed`); `closed` notes who closed it;
//!   `payment_recorded` cancels; `followup_due` (the firing, committed by
//!   the conversation actor) ends the row. It commits the rows it changed,
//!   its `followup_scheduled`/`followup_cancelled` events and the cursor in
//!   one batch, so the schedule stored is always the log's up to the cursor;
//! - on every tick it looks at the engine's clock (a manual clock in tests)
//!   and asks the conversation actor to fire each row due
//!   (`System::fire_followup`), which commits the `followup` frames, the
//!   reminder's send intent and the `followup_due` event in one batch. A row
//!   fired is not asked again while its `followup_due` is on its way; at a
//!   start the log is taken in before anything fires, so a restart after a
//!   firing never fires it twice, and one before it fires it on time (or at
//!   once, if its time passed while the engine was down).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actors::System;
use actors::clock::SharedClock;
use actors::followups::{self, FollowupRow, Step};
use actors::messages::FollowupOutcome;
use actors::settings::Settings;
use protocol::events::{Actor, Event, EventBody};
use protocol::time::UnixMs;
use storage::{Op, Reader, Store};
use tokio::sync::{mpsc, oneshot, watch};

/// The consumer's name in the store's cursors.
pub const CONSUMER: &str = "followups";
/// Events read and committed at a time.
const PAGE: usize = 1024;
/// How often the log's head and the clock are looked at.
const TICK: Duration = Duration::from_millis(100);
/// After a failure (the store cannot write), wait this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub use crate::consumer::ConsumerError as FollowupsError;

fn encode(row: &FollowupRow) -> Option<Vec<u8>> {
    rmp_serde::to_vec_named(row).ok()
}

struct Consumer {
    store: Arc<Store>,
    system: Arc<System>,
    settings: Settings,
    cursor: u64,
    rows: BTreeMap<String, FollowupRow>,
    /// (due, key) of every row, earliest first.
    by_due: BTreeSet<(UnixMs, String)>,
    /// Rows asked to fire whose `followup_due` the log has not brought yet.
    fired: HashSet<String>,
    /// Memory went past what is stored (a commit failed): read it back.
    stale: bool,
}

/// What one page of events changes.
#[derive(Default)]
struct Pending {
    rows: BTreeMap<String, Option<FollowupRow>>,
    events: Vec<Event>,
}

impl Consumer {
    async fn open(store: Arc<Store>, system: Arc<System>, settings: Settings) -> Result<Consumer, FollowupsError> {
        let mut consumer = Consumer {
            store,
            system,
            settings,
            cursor: 0,
            rows: BTreeMap::new(),
            by_due: BTreeSet::new(),
            fired: HashSet::new(),
            stale: false,
        };
        consumer.load().await?;
        Ok(consumer)
    }

    /// The stored schedule and cursor. A store that never had this
    /// consumer (older than format v12) starts at the log's head: no event
    /// before it can hold a promise.
    async fn load(&mut self) -> Result<(), FollowupsError> {
        let reader = self.store.reader().caught_up().await?;
        let mut rows = BTreeMap::new();
        let mut unreadable = 0usize;
        reader.followup_rows(|key, value| {
            match rmp_serde::from_slice::<FollowupRow>(value) {
                Ok(row) => {
                    rows.insert(key.to_owned(), row);
                }
                Err(_) => unreadable += 1,
            }
            Ok(())
        })?;
        if unreadable > 0 {
            tracing::error!(rows = unreadable, "follow-up rows cannot be read; they will not fire");
        }
        self.cursor = match reader.stored_cursor(CONSUMER)? {
            Some(cursor) => cursor,
            None => {
                let head = *self.system.log_head().borrow();
                self.store.commit(vec![Op::SetCursor { consumer: CONSUMER.to_owned(), seq: head }]).await?;
                head
            }
        };
        self.by_due = rows.iter().map(|(key, row)| (row.due, key.clone())).collect();
        self.rows = rows;
        self.fired.clear();
        self.stale = false;
        metrics::gauge!(crate::metrics::FOLLOWUPS_SCHEDULED).set(self.rows.len() as f64);
        Ok(())
    }

    fn put(&mut self, pending: &mut Pending, key: String, row: Option<FollowupRow>) {
        if let Some(old) = self.rows.remove(&key) {
            self.by_due.remove(&(old.due, key.clone()));
        }
        self.fired.remove(&key);
        if let Some(row) = &row {
            self.by_due.insert((row.due, key.clone()));
            self.rows.insert(key.clone(), row.clone());
        }
        pending.rows.insert(key, row);
    }

    fn rows_of(&self, conversation_id: &str) -> Vec<FollowupRow> {
        let prefix = format!("{conversation_id}/");
        self.rows
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(_, row)| row.clone())
            .collect()
    }

    /// An event about `source`'s conversation, by the system.
    fn event_like(source: &Event, at: UnixMs, body: EventBody) -> Event {
        Event {
            at,
            conversation_id: source.conversation_id.clone(),
            contact: source.contact.clone(),
            phone_number_id: source.phone_number_id.clone(),
            actor: Actor::System,
            body,
        }
    }

    fn apply_steps(&mut self, pending: &mut Pending, source: &Event, steps: Vec<Step>) {
        let now = self.system.now();
        for step in steps {
            match step {
                Step::Schedule(row) => {
                    metrics::counter!(crate::metrics::FOLLOWUPS_TOTAL, "outcome" => "scheduled").increment(1);
                    let body = EventBody::FollowupScheduled {
                        field: row.field.clone(),
                        date: row.date.clone(),
                        amount: row.amount,
                        due: row.due,
                    };
                    pending.events.push(Self::event_like(source, now, body));
                    self.put(pending, row.key(), Some(row));
                }
                Step::Cancel { key, field, reason } => {
                    metrics::counter!(crate::metrics::FOLLOWUPS_TOTAL, "outcome" => "cancelled").increment(1);
                    let body = EventBody::FollowupCancelled { field, reason: reason.as_str().to_owned() };
                    pending.events.push(Self::event_like(source, now, body));
                    self.put(pending, key, None);
                }
            }
        }
    }

    /// What one event of the log does to the schedule.
    fn take_in(&mut self, reader: &Reader, pending: &mut Pending, event: &Event) -> Result<(), FollowupsError> {
        let Some(conversation_id) = event.conversation_id.as_deref() else { return Ok(()) };
        match &event.body {
            EventBody::FieldsChanged { changes } => {
                let schemas = self.settings.schemas();
                let every_schema = std::iter::once(schemas.global)
                    .chain(schemas.teams.iter().filter_map(|team| team.dispositions.as_deref()));
                if !followups::concerns_followups(every_schema, changes) {
                    return Ok(());
                }
                let team = reader.conversation(conversation_id)?.and_then(|record| record.conversation.team);
                let schema = schemas.of(team.as_deref());
                let zone = followups::zone_of(self.settings.teams.iter().find(|spec| Some(&spec.id) == team.as_ref()));
                let rows = self.rows_of(conversation_id);
                let rows: Vec<&FollowupRow> = rows.iter().collect();
                let steps = followups::on_fields_changed(conversation_id, schema, zone, changes, &rows);
                self.apply_steps(pending, event, steps);
            }
            EventBody::Closed { .. } => {
                let Actor::User { id } = &event.actor else { return Ok(()) };
                // Only who to tell changes: a row already fired stays fired.
                for mut row in self.rows_of(conversation_id) {
                    row.closer = Some(id.clone());
                    let key = row.key();
                    self.rows.insert(key.clone(), row.clone());
                    pending.rows.insert(key, Some(row));
                }
            }
            EventBody::PaymentRecorded { .. } => {
                let rows = self.rows_of(conversation_id);
                let rows: Vec<&FollowupRow> = rows.iter().collect();
                let steps = followups::on_payment(&rows);
                self.apply_steps(pending, event, steps);
            }
            EventBody::FollowupDue { field, date, amount, due, .. } => {
                let key = followups::row_key(conversation_id, field);
                // Only the promise that fired: one changed since is kept.
                let fired = self
                    .rows
                    .get(&key)
                    .is_some_and(|row| &row.date == date && row.amount == *amount && row.due == *due);
                if fired {
                    metrics::counter!(crate::metrics::FOLLOWUPS_TOTAL, "outcome" => "fired").increment(1);
                    self.put(pending, key, None);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Takes in every event after the cursor and commits what changed with
    /// the cursor.
    async fn catch_up(&mut self) -> Result<(), FollowupsError> {
        if self.stale {
            self.load().await?;
        }
        loop {
            let reader = self.store.reader().settled().await?;
            let events = reader.events_after(self.cursor, PAGE)?;
            let Some(&(last, _)) = events.last() else { break };
            let mut pending = Pending::default();
            for (_, event) in &events {
                if let Err(error) = self.take_in(&reader, &mut pending, event) {
                    self.stale = true;
                    return Err(error);
                }
            }
            let mut batch = Vec::new();
            if !pending.rows.is_empty() {
                let rows = pending.rows.into_iter().map(|(key, row)| (key, row.as_ref().and_then(encode))).collect();
                batch.push(Op::PutFollowupRows(rows));
            }
            batch.extend(pending.events.into_iter().map(|event| Op::Event(Box::new(event))));
            batch.push(Op::SetCursor { consumer: CONSUMER.to_owned(), seq: last });
            if let Err(error) = self.store.commit(batch).await {
                self.stale = true;
                return Err(error.into());
            }
            self.cursor = last;
            metrics::gauge!(crate::metrics::FOLLOWUPS_SCHEDULED).set(self.rows.len() as f64);
            if events.len() < PAGE {
                break;
            }
        }
        Ok(())
    }

    /// Asks for every row due at `now` not yet asked. One the conversation
    /// no longer holds unpaid is cancelled as `stale`.
    async fn fire_due(&mut self, now: UnixMs) -> Result<(), FollowupsError> {
        let due: Vec<String> = self
            .by_due
            .iter()
            .take_while(|(due, _)| *due <= now)
            .filter(|(_, key)| !self.fired.contains(key))
            .map(|(_, key)| key.clone())
            .collect();
        for key in due {
            let Some(row) = self.rows.get(&key).cloned() else { continue };
            match self.system.fire_followup(row.clone()).await {
                Ok(FollowupOutcome::Fired) => {
                    self.fired.insert(key);
                }
                Ok(FollowupOutcome::Stale) => {
                    metrics::counter!(crate::metrics::FOLLOWUPS_TOTAL, "outcome" => "stale").increment(1);
                    self.fired.insert(key.clone());
                    let source = Event {
                        at: now,
                        conversation_id: Some(row.conversation_id.clone()),
                        contact: None,
                        phone_number_id: None,
                        actor: Actor::System,
                        body: EventBody::FollowupCancelled { field: row.field.clone(), reason: "stale".to_owned() },
                    };
                    let source = self.with_contact(source);
                    let batch = vec![Op::PutFollowupRows(vec![(key.clone(), None)]), Op::Event(Box::new(source))];
                    self.store.commit(batch).await?;
                    let mut ignored = Pending::default();
                    self.put(&mut ignored, key, None);
                }
                Err(error) => {
                    return Err(FollowupsError(format!("{}: {}", error.code.as_str(), error.message)));
                }
            }
        }
        Ok(())
    }

    /// Takes in what the log gained, then fires what is due.
    async fn round(&mut self, log_head: &mut watch::Receiver<u64>, clock: &SharedClock) -> Result<(), FollowupsError> {
        if *log_head.borrow_and_update() > self.cursor || self.stale {
            self.catch_up().await?;
        }
        let now = clock.now_ms();
        if self.by_due.first().is_some_and(|(due, _)| *due <= now) {
            self.fire_due(now).await?;
        }
        Ok(())
    }

    /// `event` with its conversation's contact and number, as every
    /// conversation event carries them (the audit log files it under them).
    fn with_contact(&self, mut event: Event) -> Event {
        let record =
            event.conversation_id.as_deref().and_then(|id| self.store.reader().conversation(id).ok().flatten());
        if let Some(record) = record {
            event.contact = Some(record.conversation.contact.wa_id.clone());
            event.phone_number_id = Some(record.conversation.phone_number_id.clone());
        }
        event
    }
}

enum Request {
    /// Take in the log and fire what is due now (tests: after moving the clock).
    Settle {
        reply: oneshot::Sender<()>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
}

/// The running follow-ups consumer.
pub struct Followups {
    task: crate::consumer::TaskHandle<Request>,
}

impl Followups {
    /// Loads the schedule and follows the log and the clock.
    pub async fn start(
        store: Arc<Store>,
        system: Arc<System>,
        clock: SharedClock,
        mut log_head: watch::Receiver<u64>,
    ) -> Result<Followups, FollowupsError> {
        let settings = system.settings().clone();
        let mut consumer = Consumer::open(store, system, settings).await?;
        let (requests, mut incoming) = mpsc::channel::<Request>(16);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    request = incoming.recv() => match request {
                        Some(Request::Settle { reply }) => {
                            if let Err(error) = consumer.round(&mut log_head, &clock).await {
                                tracing::warn!(%error, "the follow-ups could not catch up");
                            }
                            let _ = reply.send(());
                        }
                        Some(Request::Stop { reply }) => {
                            if let Err(error) = consumer.catch_up().await {
                                tracing::warn!(%error, "the follow-ups could not catch up before stopping; they will at the next start");
                            }
                            let _ = reply.send(());
                            break;
                        }
                        None => break,
                    },
                    _ = tick.tick() => {
                        if let Err(error) = consumer.round(&mut log_head, &clock).await {
                            tracing::warn!(%error, "the follow-ups could not take in the event log or fire; retrying");
                            tokio::time::sleep(RETRY_AFTER).await;
                        }
                    }
                }
            }
        });
        Ok(Followups { task: crate::consumer::TaskHandle::new(requests, task) })
    }

    /// Takes in the log and fires what is due at the clock's reading now,
    /// then returns (tests, after moving a manual clock).
    pub async fn settle(&self) {
        let (reply, done) = oneshot::channel();
        if self.task.requests.send(Request::Settle { reply }).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Catches up and stops the task.
    pub async fn stop(&self) {
        self.task.stop(|reply| Request::Stop { reply }).await;
    }
}
