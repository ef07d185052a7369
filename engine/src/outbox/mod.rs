//! The outbox (PROTOCOL §10, docs/integrations.md): deliveries of the
//! conversation event log to connectors, durable, at least once, in order
//! per conversation.
//!
//! One task owns the deliveries in memory (`decide::Book`), the `outbox`
//! cursor in the event log, and the attempts in flight:
//! - an intake task beside it reads the log behind the writers (`Page`s,
//!   once the tables hold them, without hurrying the materializer), so the
//!   wait for the tables never stops attempts starting or ending; the task
//!   turns each event a connector subscribed to into a delivery
//!   (`decide::deliveries_of`, its body made once, `decide::body`) and
//!   commits the new deliveries with its cursor in one batch: a kill -9
//!   loses or doubles nothing at that step;
//! - it starts the due attempts (`Book::take_due`: a conversation's next
//!   delivery waits until the one before is delivered or dead; at most
//!   `max_in_flight` per connector), each in a task of its own;
//! - it commits what each attempt made of its delivery
//!   (`decide::after_attempt`): delivered → the row deleted and an
//!   `outbox_delivered` event; failed → the attempts, the next attempt's time
//!   and the error stored; the last allowed attempt failed → dead, with an
//!   `outbox_dead` event. The events are the audit log's entries for each
//!   final outcome. The commit runs beside the task, so the connector's
//!   next attempts start meanwhile (`Book::ended`); the conversation's next
//!   delivery waits until it succeeded, and memory follows only then
//!   (`Book::finished`).
//!
//! With `[capi]`, events of paid conversations also become deliveries to
//! the target `capi` (`capi::CapiPlan::conversion`), each remembered by a
//! memory row committed with it, so it is made once per conversation and
//! event name, restarts included.
//!
//! After a restart the stored deliveries are loaded and go on where they
//! were; an attempt in flight at the crash is made again (its receiver
//! dedupes by `webhook-id`). Time is the engine's clock; backoff is
//! `crate::backoff`.

pub mod attempt;
pub mod capi;
pub mod crm;
pub mod decide;
pub mod webhook;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actors::clock::SharedClock;
use protocol::events::{Actor, Event, EventBody};
use protocol::time::UnixMs;
use storage::{Op, Store};
use tokio::sync::{mpsc, oneshot, watch};

use self::decide::{AttemptOutcome, Book, Delivery, DeliveryState, Subscription, Transition};
use crate::backoff::Schedule;
use crate::config::{ConnectorSpec, OutboxConfig};

/// The outbox's cursor in the event log.
pub const CONSUMER: &str = "outbox";
/// Events read and committed at a time.
const PAGE: usize = 1024;
/// After a failed commit (the store cannot write), wait this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// With no connector, how often the cursor (following the head unread) is stored.
const IDLE_CURSOR_EVERY: Duration = Duration::from_secs(10);

pub type AttemptFuture = Pin<Box<dyn Future<Output = AttemptOutcome> + Send + 'static>>;

/// A target kind: makes one attempt of a delivery (`webhook::WebhookConnector`,
/// `crm::CrmConnector` for the named CRMs, `capi::CapiConnector`).
pub trait Connector: Send + Sync + 'static {
    fn attempt(&self, delivery: &Delivery, now: UnixMs) -> AttemptFuture;
}

/// A failure of this consumer, as a sentence.
pub use crate::consumer::ConsumerError as OutboxError;

/// A configured target.
struct Target {
    connector: Arc<dyn Connector>,
    max_attempts: u32,
    max_in_flight: usize,
}

fn encode(delivery: &Delivery) -> Result<Vec<u8>, OutboxError> {
    rmp_serde::to_vec_named(delivery).map_err(|error| OutboxError(format!("cannot encode a delivery: {error}")))
}

/// Which deliveries `GET /api/v1/outbox` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listed {
    Pending,
    Dead,
    All,
}

/// Why a retry by hand was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum RetryRefusal {
    NotFound,
    NotDead,
    Unavailable(String),
}

/// A `GET /api/v1/outbox` waiting for the log's head of its time (the
/// first) to be taken in; the reply is taken when it is answered.
type Listing = (u64, Listed, Option<oneshot::Sender<Vec<Delivery>>>);

enum Request {
    List { which: Listed, reply: oneshot::Sender<Vec<Delivery>> },
    Retry { id: String, user: String, reply: oneshot::Sender<Result<Delivery, RetryRefusal>> },
    Stop { reply: oneshot::Sender<()> },
}

/// An outcome batch's commit ended: per delivery what it became (`None`:
/// delivered), and whether it is stored.
struct Settled {
    now: UnixMs,
    after: Vec<(Delivery, Option<Delivery>)>,
    result: Result<(), String>,
}

/// Events of the log read by the intake, with the reader (a snapshot
/// holding them) that read them, for the delivery bodies.
struct Page {
    reader: storage::Reader,
    events: Vec<(u64, Event)>,
}

/// Reads the log beside the task: when the head moves past `from`, waits
/// until the tables hold the new events (`Reader::settled`: the
/// materializer is not hurried), reads them a page at a time and hands
/// them over; at most two pages wait, so a task behind slows the intake.
/// Ends when the task drops `pages`.
fn spawn_intake(
    store: Arc<Store>,
    mut log_head: watch::Receiver<u64>,
    mut from: u64,
    pages: mpsc::Sender<Page>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if *log_head.borrow_and_update() <= from {
                tokio::select! {
                    changed = log_head.changed() => if changed.is_err() { return },
                    _ = pages.closed() => return,
                }
                continue;
            }
            let page = match store.reader().settled().await {
                Ok(reader) => reader.events_after(from, PAGE).map(|events| Page { reader, events }),
                Err(error) => Err(error),
            };
            let page = match page {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "the outbox could not read the event log; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                    continue;
                }
            };
            let Some(&(last, _)) = page.events.last() else {
                // The head counts events the tables do not show yet: wait for more.
                tokio::select! {
                    changed = log_head.changed() => if changed.is_err() { return },
                    _ = pages.closed() => return,
                }
                continue;
            };
            from = last;
            if pages.send(page).await.is_err() {
                return;
            }
        }
    })
}

struct Task {
    store: Arc<Store>,
    clock: SharedClock,
    schedule: Schedule,
    targets: HashMap<String, Target>,
    subscriptions: Vec<Subscription>,
    book: Book,
    cursor: u64,
    results: mpsc::UnboundedSender<(Delivery, AttemptOutcome)>,
    /// Outcome batches once their commit ended.
    committed: mpsc::UnboundedSender<Settled>,
    /// When the cursor was last stored while no connector is subscribed.
    idle_cursor_stored: Option<std::time::Instant>,
    /// A page whose commit failed: taken in again on the next tick, before
    /// any later page.
    stalled: Option<Page>,
    /// `[capi]`'s decisions, when it is configured.
    capi: Option<capi::CapiPlan>,
    /// The Conversions API events made so far (memory rows, `capi::memory_key`).
    capi_sent: HashSet<String>,
}

impl Task {
    /// Loads the stored deliveries and the cursor. A store that never had an
    /// outbox starts at the log's head: connectors get what happens from
    /// their first start on, not the past.
    async fn open(
        store: Arc<Store>,
        clock: SharedClock,
        schedule: Schedule,
        targets: HashMap<String, Target>,
        subscriptions: Vec<Subscription>,
        log_head: u64,
        results: mpsc::UnboundedSender<(Delivery, AttemptOutcome)>,
    ) -> Result<(Task, mpsc::UnboundedReceiver<Settled>), OutboxError> {
        let reader = store.reader().caught_up().await?;
        let mut book = Book::default();
        let mut capi_sent = HashSet::new();
        let mut unreadable = 0usize;
        reader.outbox_rows(|key, value| {
            if key.starts_with(capi::MEMORY_PREFIX) {
                capi_sent.insert(key.to_owned());
                return Ok(());
            }
            match rmp_serde::from_slice::<Delivery>(value) {
                Ok(delivery) => book.insert(delivery),
                Err(_) => unreadable += 1,
            }
            Ok(())
        })?;
        if unreadable > 0 {
            tracing::error!(rows = unreadable, "outbox rows cannot be read; they are left in place");
        }
        let cursor = match reader.stored_cursor(CONSUMER)? {
            Some(cursor) => cursor,
            None => {
                store.commit(vec![Op::SetCursor { consumer: CONSUMER.to_owned(), seq: log_head }]).await?;
                log_head
            }
        };
        let (committed, settled) = mpsc::unbounded_channel();
        let task = Task {
            store,
            clock,
            schedule,
            targets,
            subscriptions,
            book,
            cursor,
            results,
            committed,
            idle_cursor_stored: None,
            stalled: None,
            capi: None,
            capi_sent,
        };
        Ok((task, settled))
    }

    /// Whether anything in the log can become a delivery.
    fn takes_events(&self) -> bool {
        !self.subscriptions.is_empty() || self.capi.is_some()
    }

    /// With no connector subscribed nothing in the log becomes a delivery:
    /// the cursor follows the log's head without reading it, stored at most
    /// every `IDLE_CURSOR_EVERY` (a connector added later starts about
    /// there, not at the log's beginning).
    async fn skip_to(&mut self, head: u64) -> Result<(), OutboxError> {
        if self.idle_cursor_stored.is_some_and(|stored| stored.elapsed() < IDLE_CURSOR_EVERY) {
            return Ok(());
        }
        self.store.commit(vec![Op::SetCursor { consumer: CONSUMER.to_owned(), seq: head }]).await?;
        self.cursor = head;
        self.idle_cursor_stored = Some(std::time::Instant::now());
        Ok(())
    }

    /// Turns a page of events after the cursor into deliveries, committed
    /// with the cursor. When the commit fails the page is kept
    /// (`stalled`) and taken in again on the next tick.
    async fn take_page(&mut self, page: Page) -> Result<(), OutboxError> {
        let Page { reader, events } = &page;
        let events: Vec<&(u64, Event)> = events.iter().filter(|(seq, _)| *seq > self.cursor).collect();
        let Some(&&(last, _)) = events.last() else { return Ok(()) };
        let now = self.clock.now_ms();
        let mut made = Vec::new();
        let mut remembered = Vec::new();
        for (seq, event) in events {
            made.extend(decide::deliveries_of(*seq, event, &self.subscriptions, now, |kind| {
                body_of(reader, kind, event)
            }));
            if let Some((delivery, memory)) = self.capi_delivery(reader, *seq, event, &remembered, now) {
                made.push(delivery);
                remembered.push(memory);
            }
        }
        let mut rows = Vec::with_capacity(made.len() + remembered.len());
        for delivery in &made {
            rows.push((delivery.id.clone(), Some(encode(delivery)?)));
        }
        for memory in &remembered {
            rows.push((memory.clone(), Some(b"sent".to_vec())));
        }
        let committed = self
            .store
            .commit(vec![Op::PutOutboxRows(rows), Op::SetCursor { consumer: CONSUMER.to_owned(), seq: last }])
            .await;
        if let Err(error) = committed {
            self.stalled = Some(page);
            return Err(error.into());
        }
        self.cursor = last;
        self.capi_sent.extend(remembered);
        for delivery in made {
            self.book.insert(delivery);
        }
        Ok(())
    }

    /// The Conversions API event `event` makes, if any, with its memory
    /// row's key (`remembered`: the keys made earlier in this batch, not
    /// committed yet).
    fn capi_delivery(
        &self,
        reader: &storage::Reader,
        seq: u64,
        event: &Event,
        remembered: &[String],
        now: UnixMs,
    ) -> Option<(Delivery, String)> {
        let plan = self.capi.as_ref()?;
        let conversation_id = event.conversation_id.as_deref()?;
        if !capi::qualifies(&event.body) && !matches!(event.body, EventBody::Closed { .. }) {
            return None;
        }
        let record = reader.conversation(conversation_id).ok().flatten()?;
        let sent = |name: &str| {
            let key = capi::memory_key(conversation_id, name);
            self.capi_sent.contains(&key) || remembered.contains(&key)
        };
        let (name, body) =
            plan.conversion(event, Some(&record.conversation.source), record.conversation.team.as_deref(), sent)?;
        let delivery = decide::new_delivery(crate::config::CAPI_TARGET, seq, event, &name, body.to_string(), now);
        Some((delivery, capi::memory_key(conversation_id, &name)))
    }

    /// Starts every due attempt.
    fn dispatch(&mut self) {
        let now = self.clock.now_ms();
        let targets = &self.targets;
        let due = self.book.take_due(now, |target| targets.get(target).map(|target| target.max_in_flight));
        for delivery in due {
            let Some(target) = self.targets.get(&delivery.target) else { continue };
            let attempt = target.connector.attempt(&delivery, now);
            let results = self.results.clone();
            tokio::spawn(async move {
                let outcome = attempt.await;
                let _ = results.send((delivery, outcome));
            });
        }
    }

    /// Commits what the attempts that ended made of their deliveries, in one
    /// batch; memory follows in [`Task::settled`] once it is committed.
    fn settle(&mut self, ended: Vec<(Delivery, AttemptOutcome)>) {
        let now = self.clock.now_ms();
        let mut batch = Vec::new();
        let mut after = Vec::with_capacity(ended.len());
        for (delivery, outcome) in &ended {
            let max_attempts = self.targets.get(&delivery.target).map_or(1, |target| target.max_attempts);
            let attempts = delivery.attempts.saturating_add(1);
            let transition =
                decide::after_attempt(attempts, outcome, max_attempts, now, &self.schedule, rand::random::<f64>());
            let label = match outcome {
                AttemptOutcome::Delivered { .. } => "delivered",
                AttemptOutcome::Failed { error, .. } if error.starts_with("timed out") => "timeout",
                AttemptOutcome::Failed { error, .. } if error.starts_with("HTTP ") => "http_error",
                AttemptOutcome::Failed { .. } => "connection_error",
            };
            metrics::counter!(crate::metrics::OUTBOX_ATTEMPTS_TOTAL, "connector" => delivery.target.clone(), "outcome" => label)
                .increment(1);
            let mut changed = delivery.clone();
            changed.attempts = attempts;
            changed.last_attempt_at = Some(now);
            if let AttemptOutcome::Failed { error, .. } = outcome {
                tracing::info!(delivery = %delivery.id, connector = %delivery.target, attempts, %error, "connector delivery failed");
                changed.last_error = Some(error.clone());
            }
            let event = |body: EventBody| Event {
                at: now,
                conversation_id: delivery.conversation_id.clone(),
                contact: delivery.contact.clone(),
                phone_number_id: delivery.phone_number_id.clone(),
                actor: Actor::System,
                body,
            };
            match transition {
                Transition::Delivered => {
                    batch.push(Op::PutOutboxRows(vec![(delivery.id.clone(), None)]));
                    batch.push(Op::Event(Box::new(event(EventBody::OutboxDelivered {
                        delivery_id: delivery.id.clone(),
                        connector: delivery.target.clone(),
                        event_type: delivery.event_type.clone(),
                        attempts,
                    }))));
                    after.push((delivery.clone(), None));
                }
                Transition::Retry { next_attempt_at } => {
                    changed.next_attempt_at = next_attempt_at;
                    match encode(&changed) {
                        Ok(row) => batch.push(Op::PutOutboxRows(vec![(delivery.id.clone(), Some(row))])),
                        Err(error) => tracing::error!(%error, "a delivery could not be stored"),
                    }
                    after.push((delivery.clone(), Some(changed)));
                }
                Transition::Dead => {
                    changed.state = DeliveryState::Dead;
                    tracing::warn!(delivery = %delivery.id, connector = %delivery.target, attempts, "connector delivery dead-lettered");
                    let error = changed.last_error.clone().unwrap_or_default();
                    match encode(&changed) {
                        Ok(row) => batch.push(Op::PutOutboxRows(vec![(delivery.id.clone(), Some(row))])),
                        Err(error) => tracing::error!(%error, "a delivery could not be stored"),
                    }
                    batch.push(Op::Event(Box::new(event(EventBody::OutboxDead {
                        delivery_id: delivery.id.clone(),
                        connector: delivery.target.clone(),
                        event_type: delivery.event_type.clone(),
                        attempts,
                        error,
                    }))));
                    after.push((delivery.clone(), Some(changed)));
                }
            }
        }
        // The outcome is committed beside the loop: the connectors' next
        // attempts start meanwhile; these keys stay held until it is done.
        for (delivery, _) in &after {
            self.book.ended(delivery);
        }
        let store = self.store.clone();
        let committed = self.committed.clone();
        tokio::spawn(async move {
            let result = store.commit(batch).await.map(|_| ()).map_err(|error| error.to_string());
            let _ = committed.send(Settled { now, after, result });
        });
    }

    /// Applies to memory what a committed (or refused) outcome batch says.
    fn settled(&mut self, settled: Settled) {
        let Settled { now, after, result } = settled;
        for (delivery, changed) in after {
            self.book.finished(&delivery);
            match (&result, changed) {
                (Ok(()), None) => {
                    self.book.forget(&delivery.id);
                }
                (Ok(()), Some(changed)) => self.book.insert(changed),
                (Err(_), _) => {
                    // Nothing of it is stored: try the delivery again a
                    // little later (at least once, never lost).
                    let mut again = delivery.clone();
                    again.next_attempt_at = now + RETRY_AFTER.as_millis() as i64;
                    self.book.insert(again);
                }
            }
        }
        if let Err(error) = result {
            tracing::warn!(%error, "the outbox could not store the outcome of its attempts; they will be made again");
        }
    }

    /// Sends a dead delivery back to its queue, its attempts counted anew.
    async fn retry(&mut self, id: &str, user: &str) -> Result<Delivery, RetryRefusal> {
        let Some(delivery) = self.book.get(id) else { return Err(RetryRefusal::NotFound) };
        if delivery.state != DeliveryState::Dead {
            return Err(RetryRefusal::NotDead);
        }
        let now = self.clock.now_ms();
        let mut revived = delivery.clone();
        revived.state = DeliveryState::Pending;
        revived.attempts = 0;
        revived.next_attempt_at = now;
        let row = encode(&revived).map_err(|error| RetryRefusal::Unavailable(error.0))?;
        let event = Event {
            at: now,
            conversation_id: revived.conversation_id.clone(),
            contact: revived.contact.clone(),
            phone_number_id: revived.phone_number_id.clone(),
            actor: Actor::user(user),
            body: EventBody::OutboxRetried {
                delivery_id: revived.id.clone(),
                connector: revived.target.clone(),
                event_type: revived.event_type.clone(),
            },
        };
        self.store
            .commit(vec![Op::PutOutboxRows(vec![(revived.id.clone(), Some(row))]), Op::Event(Box::new(event))])
            .await
            .map_err(|error| RetryRefusal::Unavailable(error.to_string()))?;
        self.book.insert(revived.clone());
        Ok(revived)
    }

    fn list(&self, which: Listed) -> Vec<Delivery> {
        let pending = matches!(which, Listed::Pending | Listed::All).then(|| self.book.pending()).into_iter().flatten();
        let dead = matches!(which, Listed::Dead | Listed::All).then(|| self.book.dead()).into_iter().flatten();
        let mut listed: Vec<Delivery> = pending.chain(dead).cloned().collect();
        listed.sort_by_key(|delivery| delivery.seq);
        listed
    }

    fn publish_gauges(&self, targets: &[String]) {
        let now = self.clock.now_ms();
        let gauges = self.book.gauges();
        let names = targets.iter().chain(gauges.keys().filter(|name| !targets.contains(name)));
        for name in names {
            let gauge = gauges.get(name).cloned().unwrap_or_default();
            let labels = [("connector", name.clone())];
            metrics::gauge!(crate::metrics::OUTBOX_BACKLOG, &labels).set(gauge.backlog as f64);
            metrics::gauge!(crate::metrics::OUTBOX_DEAD, &labels).set(gauge.dead as f64);
            let age = gauge.oldest_created_at.map_or(0.0, |oldest| (now - oldest).max(0) as f64 / 1000.0);
            metrics::gauge!(crate::metrics::OUTBOX_OLDEST_PENDING_SECONDS, &labels).set(age);
        }
    }
}

/// A delivery's body: the event with the conversation and contact as they
/// are now (read through the store's overlay).
fn body_of(reader: &storage::Reader, kind: &'static str, event: &Event) -> String {
    let record = event.conversation_id.as_deref().and_then(|id| reader.conversation(id).ok().flatten());
    let conversation = record.map(|record| record.conversation);
    let contact = conversation.as_ref().map(|conversation| {
        let mut value = serde_json::json!({ "contact": conversation.contact });
        if let Ok(Some(record)) = reader.contact(&conversation.contact.wa_id) {
            crate::contacts_http::add_to_conversation(&mut value, &record);
        }
        value["contact"].take()
    });
    decide::body(kind, event, conversation.as_ref(), contact).to_string()
}

/// The running outbox.
pub struct Outbox {
    task: crate::consumer::TaskHandle<Request>,
}

/// What the outbox is built from.
pub struct OutboxParts {
    pub store: Arc<Store>,
    pub clock: SharedClock,
    pub log_head: watch::Receiver<u64>,
    pub connectors: Vec<ConnectorSpec>,
    pub settings: OutboxConfig,
    /// `[capi]` with what it needs: the Graph API's base URL, the access
    /// token and which closes are won and their worth, per team.
    pub capi: Option<CapiParts>,
    /// Which closes are won and their worth, per team (the named CRMs' deals).
    pub dispositions: crm::Dispositions,
}

/// The Conversions API target's parts.
pub struct CapiParts {
    pub config: crate::config::CapiConfig,
    pub graph_base_url: String,
    pub access_token: String,
    pub plan: capi::CapiPlan,
}

impl fmt::Debug for CapiParts {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("CapiParts").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Outbox {
    /// Opens the stored deliveries and starts the task.
    pub async fn start(parts: OutboxParts) -> Result<Outbox, OutboxError> {
        let OutboxParts { store, clock, mut log_head, connectors, settings, capi, dispositions } = parts;
        let mut targets = HashMap::new();
        let mut subscriptions = Vec::new();
        for spec in &connectors {
            let connector: Arc<dyn Connector> = match spec.kind.as_str() {
                "webhook" => Arc::new(
                    webhook::WebhookConnector::new(
                        spec.url.as_deref().unwrap_or_default(),
                        spec.secret.as_deref().unwrap_or_default(),
                        Duration::from_millis(spec.timeout_ms),
                    )
                    .map_err(|problem| OutboxError(format!("connectors {:?}: {problem}", spec.id)))?,
                ),
                other => match crm::Kind::parse(other) {
                    Some(kind) => Arc::new(
                        crm::CrmConnector::new(
                            kind,
                            spec.url.as_deref().unwrap_or_default(),
                            spec.token.as_deref().unwrap_or_default(),
                            dispositions.clone(),
                            Duration::from_millis(spec.timeout_ms),
                        )
                        .map_err(|problem| OutboxError(format!("connectors {:?}: {problem}", spec.id)))?,
                    ),
                    None => return Err(OutboxError(format!("connector kind {other:?} is not a connector kind"))),
                },
            };
            targets.insert(
                spec.id.clone(),
                Target { connector, max_attempts: spec.max_attempts, max_in_flight: spec.max_in_flight },
            );
            subscriptions.push(Subscription { target: spec.id.clone(), events: spec.events.clone() });
        }
        let mut target_names: Vec<String> = connectors.iter().map(|spec| spec.id.clone()).collect();
        let mut capi_plan = None;
        if let Some(CapiParts { config, graph_base_url, access_token, plan }) = capi {
            let connector = capi::CapiConnector::new(
                &graph_base_url,
                &config.dataset_id,
                &access_token,
                Duration::from_millis(config.timeout_ms),
            )
            .map_err(|problem| OutboxError(format!("[capi]: {problem}")))?;
            let target = crate::config::CAPI_TARGET.to_owned();
            targets.insert(
                target.clone(),
                Target {
                    connector: Arc::new(connector),
                    max_attempts: config.max_attempts,
                    max_in_flight: config.max_in_flight,
                },
            );
            target_names.push(target);
            capi_plan = Some(plan);
        }
        let schedule = Schedule::new(
            Duration::from_millis(settings.backoff_base_ms),
            Duration::from_millis(settings.backoff_max_ms),
        );
        let (results, mut ended) = mpsc::unbounded_channel();
        let head = *log_head.borrow();
        let (mut task, mut settled) = Task::open(store, clock, schedule, targets, subscriptions, head, results).await?;
        task.capi = capi_plan;
        let (requests, mut incoming) = mpsc::channel::<Request>(64);
        let tick_every = Duration::from_millis(settings.tick_ms.max(1));
        let (page_sender, mut pages) = mpsc::channel::<Page>(2);
        let intake =
            task.takes_events().then(|| spawn_intake(task.store.clone(), log_head.clone(), task.cursor, page_sender));
        let handle = tokio::spawn(async move {
            // `GET /api/v1/outbox` requests waiting for the log's head of
            // their time to be taken in.
            let mut listings: Vec<Listing> = Vec::new();
            let mut tick = tokio::time::interval(tick_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    request = incoming.recv() => match request {
                        Some(Request::List { which, reply }) => {
                            // What was committed before the request is listed: wait
                            // until it is taken in (not while the store fails).
                            let head = *log_head.borrow();
                            if !task.takes_events() || task.cursor >= head || task.stalled.is_some() {
                                let _ = reply.send(task.list(which));
                            } else {
                                listings.push((head, which, Some(reply)));
                            }
                        }
                        Some(Request::Retry { id, user, reply }) => {
                            let _ = reply.send(task.retry(&id, &user).await);
                        }
                        Some(Request::Stop { reply }) => {
                            let _ = reply.send(());
                            break;
                        }
                        None => break,
                    },
                    first = ended.recv() => {
                        let Some(first) = first else { break };
                        let mut batch = vec![first];
                        while let Ok(more) = ended.try_recv() {
                            batch.push(more);
                        }
                        task.settle(batch);
                    }
                    Some(done) = settled.recv() => task.settled(done),
                    Some(page) = pages.recv(), if task.stalled.is_none() => {
                        if let Err(error) = task.take_page(page).await {
                            tracing::warn!(%error, "the outbox could not commit what it took in; retrying");
                        }
                        listings.retain_mut(|(head, which, reply)| {
                            if task.cursor < *head && task.stalled.is_none() {
                                return true;
                            }
                            if let Some(reply) = reply.take() {
                                let _ = reply.send(task.list(*which));
                            }
                            false
                        });
                    }
                    _ = tick.tick() => {
                        let taken = match task.stalled.take() {
                            Some(page) => task.take_page(page).await,
                            None if !task.takes_events() => {
                                let head = *log_head.borrow_and_update();
                                if head > task.cursor { task.skip_to(head).await } else { Ok(()) }
                            }
                            None => Ok(()),
                        };
                        if let Err(error) = taken {
                            tracing::warn!(%error, "the outbox could not take in the event log; retrying");
                            tokio::time::sleep(RETRY_AFTER).await;
                        }
                        task.publish_gauges(&target_names);
                    }
                }
                task.dispatch();
            }
            if let Some(intake) = intake {
                intake.abort();
            }
        });
        Ok(Outbox { task: crate::consumer::TaskHandle::new(requests, handle) })
    }

    fn stopped() -> OutboxError {
        OutboxError("the outbox has stopped".to_owned())
    }

    pub async fn list(&self, which: Listed) -> Result<Vec<Delivery>, OutboxError> {
        let (reply, answer) = oneshot::channel();
        self.task.requests.send(Request::List { which, reply }).await.map_err(|_| Self::stopped())?;
        answer.await.map_err(|_| Self::stopped())
    }

    pub async fn retry(&self, id: &str, user: &str) -> Result<Result<Delivery, RetryRefusal>, OutboxError> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Retry { id: id.to_owned(), user: user.to_owned(), reply };
        self.task.requests.send(request).await.map_err(|_| Self::stopped())?;
        answer.await.map_err(|_| Self::stopped())
    }

    /// Stops the task; attempts in flight are dropped (made again at the
    /// next start: at least once).
    pub async fn stop(&self) {
        self.task.stop(|reply| Request::Stop { reply }).await;
    }
}
