//! The writer thread, its group commit, and the materializer thread.
//!
//! Many callers (webhook requests, conversation actors) each send a [`Batch`].
//! The writer takes the first batch waiting, drains every other batch already
//! queued (up to `max_group`), and applies them all against a `View` of the
//! tables, which yields the group's writes. It appends those to the journal as
//! one entry and syncs it (`fdatasync`), and only then:
//! 1. records them in the overlay (point reads see them from here on) and hands
//!    them to the materializer;
//! 2. hands the newly accepted inbox entries and the agent events to the
//!    [`EventSink`], in commit order (this is the only place anything is
//!    announced, so nothing is announced before it is durable);
//! 3. answers each caller with its own [`CommitOutcome`].
//!
//! The materializer applies journaled entries to the redb tables in large
//! transactions, so a B-tree page is rewritten once for many updates; at open,
//! whatever it had not applied is applied from the journal.
//!
//! No caller holds a lock across the commit: callers only wait on their own
//! oneshot reply.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use protocol::events::Event;
use protocol::model::{AgentStatus, ConversationStatus, Direction};
use protocol::ws::ServerFrame;
use redb::{Database, Durability};
use tokio::sync::{mpsc, oneshot};

use bytes::Bytes;

use crate::changes::{Key, Overlay, Progress, Snapshot, TableId, Write, last_writes_of, materialize, u64_value};
use crate::io::{Db, is_io_failure};
use crate::journal::Journal;
use crate::records::{decode, decode_json, encode, encode_json};
use crate::tables::*;
use crate::{
    AgentRecord, ConversationRecord, InboxEntry, InboxItem, IngestMessage, IngestStatus, MessageLocation, OpenEntry,
    Result, SendIntent, SendIntents, StorageError, StoreOptions, StoredMessage, ThreadRecord, db_error,
};

/// One change to the store. A [`Batch`]'s ops are applied in order, atomically.
#[derive(Clone, Debug)]
pub enum Op {
    /// Accepts an inbound message into the inbox unless its wamid was seen.
    IngestMessage(IngestMessage),
    /// Claims an inbound message's wamid for the ops that follow in the same
    /// batch (a conversation actor applying a webhook's message directly).
    /// When the wamid was seen already the claim yields
    /// [`IngestOutcome::Duplicate`] and the rest of the batch is skipped;
    /// otherwise it yields `Accepted { seq: 0 }`.
    ClaimInbound(String),
    /// Accepts a status unless (wamid, status) was seen. A status whose message
    /// is unknown waits until that message is stored.
    IngestStatus(IngestStatus),
    /// Keeps a change of another webhook field, as received.
    IngestOtherChange(serde_json::Value),
    /// Upserts a conversation; the open and per-agent indexes follow it.
    PutConversation(Box<ConversationRecord>),
    PutMessage {
        conversation_id: String,
        thread_key: String,
        index: u32,
        message: Box<StoredMessage>,
    },
    PutThread {
        key: String,
        record: ThreadRecord,
    },
    /// Marks an inbox entry applied.
    DeleteInbox(u64),
    /// Appends an event to the agent's log; its `seq` is allocated here.
    AgentEvent {
        agent_id: String,
        frame: Box<ServerFrame>,
    },
    PutAgentStatus {
        agent_id: String,
        status: AgentStatus,
    },
    /// Stores whether the agent's co-pilot assist is on (the agent actor
    /// commits it with its `copilot_toggled` event).
    PutAgentCopilot {
        agent_id: String,
        enabled: bool,
    },
    /// Stores the agent's first-response breaches on `day` (days since the
    /// epoch, UTC) as the agent actor counted them. Storage keeps the number
    /// it is given: what counts, and when a day starts again, is the agent
    /// actor's decision (`actors::agent::DailyBreaches`). The agent actor
    /// is the one owner of that count and commits it one breach at a time,
    /// so writes of it never race.
    PutFirstResponseBreaches {
        agent_id: String,
        day: i64,
        count: u32,
    },
    /// Records a send before Meta is called (see [`crate::SendIntent`]).
    PutSendIntent {
        thread_key: String,
        intent: Box<SendIntent>,
    },
    /// Meta answered the send: accepted with `wamid` (its message is stored
    /// in the same batch) or refused (`None`).
    ResolveSendIntent {
        thread_key: String,
        local_id: String,
        wamid: Option<String>,
    },
    /// The send's outcome is unknown; its message is stored at `index` of
    /// its conversation (same batch) with status `unknown`, until a status
    /// from Meta tells its wamid.
    SendIntentUnknown {
        thread_key: String,
        local_id: String,
        index: u32,
    },
    /// Appends an event to the conversation event log; its seq (the next of
    /// one global, gap-free sequence) is allocated here, so the event is
    /// journaled in the same entry as the changes it describes. A group
    /// commit's events are stored together, as one value (a MessagePack
    /// array) under the first one's seq: one write per group, not per
    /// event. Format v5 stored one event per seq; both are read.
    Event(Box<Event>),
    /// Moves a log consumer's cursor: it has taken in every event up to `seq`.
    SetCursor {
        consumer: String,
        seq: u64,
    },
    /// Appends audit entries, their index rows and Merkle nodes, as the
    /// audit consumer built them (see [`crate::audit`]).
    AuditAppend(Box<crate::audit::AuditAppend>),
    /// Keeps a signed checkpoint (JSON) of the audit tree of `tree_size` entries.
    AuditCheckpoint {
        tree_size: u64,
        checkpoint: Vec<u8>,
    },
    /// Replaces a contact's record (key: its `wa_id`). Callers commit its
    /// `contact_updated` event ([`Op::Event`]) in the same batch, and
    /// serialize their read-modify-writes of one contact (the store keeps
    /// the last record it is given).
    PutContact(Box<crate::ContactRecord>),
    /// Replaces a section of the runtime configuration (key: its name,
    /// `routing`; value: its JSON, which the store does not read), or
    /// forgets it (`None`: the configuration file's is followed again).
    /// Callers commit its `configuration_changed` event in the same batch.
    PutSetting {
        name: String,
        value: Option<Vec<u8>>,
    },
    /// Replaces rows of the reports' projection (`None` deletes one).
    /// The reports consumer commits them with its cursor ([`Op::SetCursor`]).
    PutReportRows(Vec<(String, Option<Vec<u8>>)>),
    /// Replaces rows of the outbox (a delivery's id → its record; `None`
    /// deletes one). The outbox commits new records with its cursor
    /// ([`Op::SetCursor`]) and an attempt's outcome with its event.
    PutOutboxRows(Vec<(String, Option<Vec<u8>>)>),
    /// Replaces rows of the broadcasts (format v12; `None` deletes one). The
    /// broadcast task commits them with the events describing the change.
    PutBroadcastRows(Vec<(String, Option<Vec<u8>>)>),
    /// Replaces rows of the follow-ups' schedule (`None` deletes one). The
    /// follow-ups consumer commits them with its cursor ([`Op::SetCursor`]).
    PutFollowupRows(Vec<(String, Option<Vec<u8>>)>),
}

pub type Batch = Vec<Op>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestOutcome {
    Accepted {
        seq: u64,
    },
    Duplicate,
    /// A status for a message not stored (yet); kept until it is.
    Pending,
    Kept,
}

/// What one batch produced.
#[derive(Clone, Debug, Default)]
pub struct CommitOutcome {
    /// One per ingest op, in order.
    pub ingested: Vec<IngestOutcome>,
    /// The agent events of this batch, with their `seq`.
    pub events: Vec<(String, ServerFrame)>,
}

/// Everything a group commit made durable that someone must act on.
#[derive(Clone, Debug, Default)]
pub struct Published {
    /// Newly accepted inbox entries, in seq order.
    pub inbox: Vec<InboxEntry>,
    /// Agent events with their `seq`, in commit order.
    pub events: Vec<(String, ServerFrame)>,
    /// The event log's last seq when this commit appended events to it
    /// (consumers wake on it and read the log from their cursors).
    pub log_head: Option<u64>,
}

/// Receives what was committed, on the writer thread, in commit order. It must
/// not block: hand things on (an actor `cast`) and return.
pub trait EventSink: Send + Sync + 'static {
    fn committed(&self, published: Published);
}

/// A sink that drops everything (tools and tests of storage alone).
pub struct NullSink;

impl EventSink for NullSink {
    fn committed(&self, _published: Published) {}
}

enum Request {
    Commit { batch: Batch, reply: oneshot::Sender<Result<CommitOutcome>> },
    Shutdown,
}

/// What the writer hands the materializer thread.
enum Applied {
    Entry(u64, Vec<Write>),
    Stop,
}

/// The shortest time between the starts of two journal syncs.
const MIN_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);
/// Most writes folded into one materializing transaction.
const MAX_MATERIALIZE_WRITES: usize = 200_000;
/// How long the materializer gathers entries before it applies them: the
/// larger the transaction, the fewer times each B-tree page is rewritten.
const MATERIALIZE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// How long the materializer waits before it tries a failed transaction again.
const MATERIALIZE_RETRY_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// How long the materializer's transactions may go without a durable one.
const DURABLE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Failed attempts after a stop was asked for before the materializer gives
/// up (the journal keeps the entries; the next start applies them).
const ATTEMPTS_WHEN_STOPPING: u32 = 3;

pub(crate) struct WriterHandle {
    sender: mpsc::Sender<Request>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    pub(crate) conversation_seq: Arc<AtomicU64>,
}

/// What the writer thread starts with (see `Store::open`).
pub(crate) struct WriterParts {
    pub(crate) db: Arc<Db>,
    pub(crate) options: StoreOptions,
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) journal: Journal,
    pub(crate) overlay: Arc<Overlay>,
    pub(crate) progress: Arc<Progress>,
}

impl WriterHandle {
    pub(crate) fn start(parts: WriterParts) -> Result<WriterHandle> {
        let conversation_seq = Arc::new(AtomicU64::new(read_counter(&parts.db.get(), "conversation_seq")?));
        let (sender, receiver) = mpsc::channel(65_536);
        let (applied_sender, applied_receiver) = std::sync::mpsc::channel();
        let materializer = {
            let db = parts.db.clone();
            let progress = parts.progress.clone();
            std::thread::Builder::new()
                .name("switchboard-materializer".to_owned())
                .spawn(move || materializer_loop(db, progress, applied_receiver))
                .map_err(|error| StorageError::Invalid(format!("cannot start the materializer thread: {error}")))?
        };
        let thread = std::thread::Builder::new()
            .name("switchboard-writer".to_owned())
            .spawn(move || {
                let mut writer = Writer::new(parts, applied_sender);
                writer.run(receiver);
                writer.stop(materializer);
            })
            .map_err(|error| StorageError::Invalid(format!("cannot start the writer thread: {error}")))?;
        Ok(WriterHandle { sender, thread: std::sync::Mutex::new(Some(thread)), conversation_seq })
    }

    pub(crate) async fn commit(&self, batch: Batch) -> Result<CommitOutcome> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(Request::Commit { batch, reply }).await.map_err(|_| StorageError::Closed)?;
        answer.await.map_err(|_| StorageError::Closed)?
    }

    pub(crate) fn commit_blocking(&self, batch: Batch) -> Result<CommitOutcome> {
        let (reply, answer) = oneshot::channel();
        self.sender.blocking_send(Request::Commit { batch, reply }).map_err(|_| StorageError::Closed)?;
        answer.blocking_recv().map_err(|_| StorageError::Closed)?
    }

    /// Asks the writer to finish what it has and stop, and waits for it
    /// (unless called from the writer thread itself).
    pub(crate) fn shutdown(&self) {
        // Queued behind every batch already sent, so those commit first. Sent
        // from a helper thread: the queue may be full, and this may be called
        // from async code, where a blocking send is not allowed.
        let sender = self.sender.clone();
        let _ = std::thread::spawn(move || sender.blocking_send(Request::Shutdown)).join();
        let thread = self.thread.lock().ok().and_then(|mut slot| slot.take());
        if let Some(thread) = thread
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

/// The writer thread's state.
struct Writer {
    db: Arc<Db>,
    options: StoreOptions,
    sink: Arc<dyn EventSink>,
    journal: Journal,
    overlay: Arc<Overlay>,
    progress: Arc<Progress>,
    materializer: std::sync::mpsc::Sender<Applied>,
    /// Journaled entries the tables may not hold yet, with the keys they
    /// wrote (pruned from the overlay once the tables have them).
    unapplied: VecDeque<(u64, Vec<(TableId, Key)>)>,
    /// The tables as of (journal seq applied, database generation).
    snapshot: Option<((u64, u64), Snapshot)>,
    /// Each agent's latest event seq, once it had an event since the start
    /// (before that, the last key of its events in the tables, which then
    /// hold all of them). Kept here rather than in the agent's record, which
    /// would be rewritten in every group that gives the agent an event.
    agent_seqs: HashMap<String, u64>,
}

impl Writer {
    fn new(parts: WriterParts, materializer: std::sync::mpsc::Sender<Applied>) -> Writer {
        Writer {
            db: parts.db,
            options: parts.options,
            sink: parts.sink,
            journal: parts.journal,
            overlay: parts.overlay,
            progress: parts.progress,
            materializer,
            unapplied: VecDeque::new(),
            snapshot: None,
            agent_seqs: HashMap::new(),
        }
    }

    fn run(&mut self, mut receiver: mpsc::Receiver<Request>) {
        let mut stopping = false;
        let mut last_sync = Instant::now();
        while !stopping {
            let Some(first) = receiver.blocking_recv() else { break };
            // At most one sync per MIN_SYNC_INTERVAL: under load, batches
            // arriving meanwhile share the next one.
            let since = last_sync.elapsed();
            if since < MIN_SYNC_INTERVAL {
                std::thread::sleep(MIN_SYNC_INTERVAL - since);
            }
            let mut group = Vec::new();
            match first {
                Request::Commit { batch, reply } => group.push((batch, reply)),
                Request::Shutdown => stopping = true,
            }
            while group.len() < self.options.max_group {
                match receiver.try_recv() {
                    Ok(Request::Commit { batch, reply }) => group.push((batch, reply)),
                    Ok(Request::Shutdown) => stopping = true,
                    Err(_) => break,
                }
            }
            if group.is_empty() {
                continue;
            }
            let started = Instant::now();
            last_sync = started;
            let batches: Vec<&Batch> = group.iter().map(|(batch, _)| batch).collect();
            // While the tables cannot be written, the journal takes entries
            // up to the lag bound; past it, refuse at once rather than wait.
            let refused = (self.progress.failing()
                && self.progress.unapplied_writes.load(Ordering::Acquire) > self.options.max_unapplied_writes)
                .then(|| StorageError::Unavailable("the tables cannot be written and the journal is full".to_owned()));
            let result = match refused {
                Some(refusal) => Err(refusal),
                None => self.commit_group(&batches),
            };
            match result {
                Ok((outcomes, published)) => {
                    metrics::histogram!(crate::metrics::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
                    metrics::histogram!(crate::metrics::GROUP_BATCHES).record(group.len() as f64);
                    metrics::counter!(crate::metrics::COMMITS_TOTAL).increment(1);
                    if !published.inbox.is_empty() || !published.events.is_empty() || published.log_head.is_some() {
                        self.sink.committed(published);
                    }
                    for ((_, reply), outcome) in group.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(error) => {
                    metrics::counter!(crate::metrics::COMMIT_FAILURES_TOTAL).increment(1);
                    tracing::error!(%error, batches = group.len(), "group commit failed");
                    let message = format!("commit failed: {error}");
                    let unavailable = is_io_failure(&error);
                    for (_, reply) in group {
                        let error = if unavailable {
                            StorageError::Unavailable(message.clone())
                        } else {
                            StorageError::Invalid(message.clone())
                        };
                        let _ = reply.send(Err(error));
                    }
                    // A snapshot of a failed database holds its file: let it go.
                    self.snapshot = None;
                }
            }
            // Back-pressure: the tables must not fall ever further behind.
            self.progress.wait_below(self.options.max_unapplied_writes);
        }
    }

    /// Lets the materializer finish everything journaled, then stops it.
    fn stop(self, materializer: JoinHandle<()>) {
        let _ = self.materializer.send(Applied::Stop);
        let _ = materializer.join();
        let mut journal = self.journal;
        journal.release(self.progress.durable());
        journal.close();
        tracing::debug!("writer stopped");
    }

    /// The tables as of the latest materialized entry, and the overlay
    /// pruned of what they now hold. Pruning happens here, on the only
    /// thread that reads through the overlay and a long-lived snapshot, and
    /// before the new snapshot is taken, so no read can miss a change.
    fn refresh(&mut self) -> Result<()> {
        let applied = self.progress.applied();
        let generation = self.db.generation();
        if self.snapshot.as_ref().is_some_and(|(at, _)| *at == (applied, generation)) {
            return Ok(());
        }
        while self.unapplied.front().is_some_and(|(seq, _)| *seq <= applied) {
            let (_, keys) = self.unapplied.pop_front().expect("checked above");
            self.overlay.prune(applied, keys);
        }
        self.journal.release(self.progress.durable());
        self.snapshot = None;
        let txn = self.db.get().begin_read().map_err(db_error)?;
        self.snapshot = Some(((applied, generation), Snapshot::new(txn)?));
        metrics::gauge!(crate::metrics::OVERLAY_KEYS).set(self.overlay.len() as f64);
        Ok(())
    }

    fn commit_group(&mut self, batches: &[&Batch]) -> Result<(Vec<CommitOutcome>, Published)> {
        self.refresh()?;
        let (_, snapshot) = self.snapshot.as_ref().expect("refreshed above");
        let mut published = Published::default();
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut state = GroupState::open(View::new(snapshot, &self.overlay), &self.options, &self.agent_seqs)?;
        for batch in batches {
            let mut outcome = CommitOutcome::default();
            for op in batch.iter() {
                if !state.apply(op, &mut outcome, &mut published)? {
                    break; // a refused claim: the rest of this batch is not applied
                }
            }
            outcomes.push(outcome);
        }
        let (writes, agent_seqs) = state.finish()?;
        if writes.is_empty() {
            return Ok((outcomes, published)); // only duplicates: nothing to keep
        }
        // The writer alone advances the journal's seq.
        let seq = self.progress.journaled() + 1;
        self.journal.append(seq, &writes)?;
        // Journaled: the agents' seqs move on (a refused group takes none).
        self.agent_seqs.extend(agent_seqs);
        crate::changes::count_by_table(
            &writes,
            crate::metrics::JOURNALED_WRITES_TOTAL,
            Some(crate::metrics::JOURNALED_VALUE_BYTES_TOTAL),
        );
        // Durable from here: visible to readers, then handed on.
        self.overlay.record(seq, &writes);
        self.progress.set_journaled(seq);
        self.progress.unapplied_writes.fetch_add(writes.len() as u64, Ordering::AcqRel);
        // Only what the overlay holds needs pruning later.
        let kept = writes.iter().filter(|write| write.table.point_read());
        self.unapplied.push_back((seq, kept.map(|write| (write.table, write.key.clone())).collect()));
        if self.materializer.send(Applied::Entry(seq, writes)).is_err() {
            tracing::error!("the materializer has stopped; the tables will catch up at the next start");
        }
        Ok((outcomes, published))
    }
}

/// Applies journaled entries to the redb tables, as many as are waiting in
/// one transaction, and records how far it got. A transaction is made
/// durable (with redb's allocator state saved, so that a start after a crash
/// needs no full repair) at most every [`DURABLE_EVERY`], when idle, and at
/// a stop; the ones between are visible to readers but not synced (the
/// journal holds them until a durable one covers them, and a start after a
/// crash applies them from it). Saving the allocator state rewrites a bitmap
/// of the whole file, so this spares most of the materializer's work.
///
/// When a transaction fails (a full disk) it says so (`Progress::failing`:
/// range reads then refuse at once instead of waiting), reopens redb after
/// an I/O error (redb refuses everything after one until it is opened
/// again) and tries again, gathering the entries that arrive meanwhile;
/// asked to stop, it gives up after a few attempts. The reopened instance
/// starts at the last durable transaction: it is put in place only after
/// the entries applied since then have been applied to it again.
fn materializer_loop(db: Arc<Db>, progress: Arc<Progress>, receiver: std::sync::mpsc::Receiver<Applied>) {
    let mut stopping = false;
    // Entries applied by transactions that were not durable, in order.
    let mut since_durable: Vec<(u64, Vec<Write>)> = Vec::new();
    let mut last_durable = Instant::now();
    while !stopping {
        let first = if since_durable.is_empty() {
            receiver.recv().map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected)
        } else {
            receiver.recv_timeout(DURABLE_EVERY.saturating_sub(last_durable.elapsed()))
        };
        let mut entries = Vec::new();
        let mut writes = 0;
        match first {
            Ok(Applied::Entry(seq, entry)) => {
                writes += entry.len();
                entries.push((seq, entry));
            }
            Ok(Applied::Stop) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => stopping = true,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        let deadline = Instant::now() + MATERIALIZE_EVERY;
        // A reader waiting for the tables cuts the gathering short.
        while !entries.is_empty() && writes < MAX_MATERIALIZE_WRITES && !stopping && !progress.hurried() {
            let wait = deadline.saturating_duration_since(Instant::now()).min(std::time::Duration::from_millis(5));
            if wait.is_zero() {
                break;
            }
            match receiver.recv_timeout(wait) {
                Ok(Applied::Entry(seq, entry)) => {
                    writes += entry.len();
                    entries.push((seq, entry));
                }
                Ok(Applied::Stop) => stopping = true,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        // Idle (or stopping) with transactions not yet durable: one with
        // nothing new makes them durable.
        if entries.is_empty() && since_durable.is_empty() {
            continue;
        }
        let mut durable = stopping || entries.is_empty() || last_durable.elapsed() >= DURABLE_EVERY;
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut attempts_since_stop = 0u32;
        let mut last = entries.last().or(since_durable.last()).map(|(seq, _)| *seq).unwrap_or_default();
        loop {
            // The first attempt applies entries the tables do not hold yet.
            let fold_created = attempt == 0;
            let error = match apply_entries(&db.get(), &entries, last, durable, fold_created) {
                Ok(()) => break,
                Err(error) => error,
            };
            attempt += 1;
            metrics::counter!(crate::metrics::MATERIALIZE_FAILURES_TOTAL).increment(1);
            progress.set_failing(true);
            if attempt == 1 {
                // What the failed instance held without a sync may be gone
                // from the file: apply it again with the rest, durably.
                since_durable.append(&mut entries);
                entries = std::mem::take(&mut since_durable);
                durable = true;
            }
            // Once, then every few seconds: a full disk may last.
            if attempt == 1 || attempt.is_multiple_of(20) {
                tracing::error!(%error, attempt, "could not bring the tables up to date with the journal; retrying");
            }
            if is_io_failure(&error) {
                match db.reopen_with(|database| apply_entries(database, &entries, last, true, false)) {
                    Ok(()) => {
                        metrics::counter!(crate::metrics::REOPENS_TOTAL).increment(1);
                        tracing::info!("reopened the database after an I/O error");
                        break;
                    }
                    Err(error) => tracing::debug!(%error, "cannot reopen the database yet"),
                }
            }
            if stopping {
                attempts_since_stop += 1;
                if attempts_since_stop >= ATTEMPTS_WHEN_STOPPING {
                    tracing::error!(%error, "stopping with the tables behind the journal; the next start applies it");
                    return;
                }
            }
            // Wait before the next attempt, taking what arrives (a stop too).
            let until = Instant::now() + MATERIALIZE_RETRY_EVERY;
            while !stopping {
                let wait = until.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    break;
                }
                match receiver.recv_timeout(wait) {
                    Ok(Applied::Entry(seq, entry)) => {
                        writes += entry.len();
                        last = seq;
                        entries.push((seq, entry));
                    }
                    Ok(Applied::Stop) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => stopping = true,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                }
            }
        }
        if attempt > 0 {
            tracing::info!(attempts = attempt + 1, through = last, "the tables are up to date again");
        }
        progress.set_failing(false);
        if durable {
            since_durable.clear();
            last_durable = Instant::now();
            progress.set_durable(last);
        } else {
            since_durable.append(&mut entries);
        }
        metrics::histogram!(crate::metrics::MATERIALIZE_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::metrics::MATERIALIZE_WRITES).record(writes as f64);
        progress.unapplied_writes.fetch_sub(writes as u64, Ordering::AcqRel);
        progress.set_applied(last);
    }
}

/// Applies `entries` and records `last` as the journal seq the tables hold,
/// in one transaction: durable (synced, with redb's allocator state saved)
/// or only visible to readers. `fold_created`: the tables hold none of
/// `entries` yet, so keys they create and delete again are left out
/// ([`last_writes_of`]).
pub(crate) fn apply_entries(
    db: &Database,
    entries: &[(u64, Vec<Write>)],
    last: u64,
    durable: bool,
    fold_created: bool,
) -> Result<()> {
    let mut txn = db.begin_write().map_err(db_error)?;
    if durable {
        txn.set_durability(Durability::Immediate);
        txn.set_quick_repair(true);
    } else {
        txn.set_durability(Durability::None);
    }
    let writes = last_writes_of(entries.iter().flat_map(|(_, writes)| writes.iter()), fold_created);
    metrics::histogram!(crate::metrics::MATERIALIZE_DISTINCT_WRITES).record(writes.len() as f64);
    crate::changes::count_by_table(writes.iter().copied(), crate::metrics::MATERIALIZED_WRITES_TOTAL, None);
    materialize(&txn, writes)?;
    txn.open_table(COUNTERS).map_err(db_error)?.insert(JOURNAL_APPLIED, last).map_err(db_error)?;
    txn.commit().map_err(db_error)
}

/// The counter holding the conversation event log's last seq.
pub(crate) const EVENT_SEQ: &str = "event_seq";

/// The counter holding the journal seq the tables are up to date with.
pub(crate) const JOURNAL_APPLIED: &str = "journal_applied";

/// A counter as the tables hold it (0 when never written).
pub(crate) fn read_counter(db: &Database, name: &str) -> Result<u64> {
    let txn = db.begin_read().map_err(db_error)?;
    let counters = txn.open_table(COUNTERS).map_err(db_error)?;
    Ok(counters.get(name).map_err(db_error)?.map(|value| value.value()).unwrap_or(0))
}

/// A group's reads and writes: reads see this group's own writes first, then
/// the overlay (journaled, maybe not yet in the tables), then the snapshot.
/// A key written twice in a group is journaled once, with its last value.
struct View<'a> {
    snapshot: &'a Snapshot,
    overlay: &'a Overlay,
    local: HashMap<(TableId, Key), usize>,
    writes: Vec<Write>,
}

impl<'a> View<'a> {
    fn new(snapshot: &'a Snapshot, overlay: &'a Overlay) -> Self {
        View { snapshot, overlay, local: HashMap::new(), writes: Vec::new() }
    }

    /// Only for tables read one key at a time ([`TableId::point_read`]):
    /// the others are not kept in the overlay.
    fn get(&self, table: TableId, key: Key) -> Result<Option<Bytes>> {
        debug_assert!(table.point_read(), "{table:?} is not read by key");
        let key = (table, key);
        if let Some(&index) = self.local.get(&key) {
            return Ok(self.writes[index].value.clone());
        }
        if let Some(value) = self.overlay.get_ref(&key) {
            return Ok(value);
        }
        Ok(self.snapshot.get(table, &key.1)?.map(Bytes::from))
    }

    fn get_u64(&self, table: TableId, key: Key) -> Result<Option<u64>> {
        self.get(table, key)?.map(|bytes| u64_value(&bytes)).transpose()
    }

    fn contains(&self, table: TableId, key: Key) -> Result<bool> {
        Ok(self.get(table, key)?.is_some())
    }

    fn set(&mut self, table: TableId, key: Key, value: Option<Vec<u8>>) {
        let value = value.map(Bytes::from);
        match self.local.entry((table, key)) {
            std::collections::hash_map::Entry::Occupied(slot) => self.writes[*slot.get()].value = value,
            std::collections::hash_map::Entry::Vacant(slot) => {
                let key = slot.key().1.clone();
                slot.insert(self.writes.len());
                self.writes.push(Write { table, key, value });
            }
        }
    }

    fn put(&mut self, table: TableId, key: Key, value: Vec<u8>) {
        self.set(table, key, Some(value));
    }

    fn put_u64(&mut self, table: TableId, key: Key, value: u64) {
        self.set(table, key, Some(value.to_le_bytes().to_vec()));
    }

    fn delete(&mut self, table: TableId, key: Key) {
        self.set(table, key, None);
    }
}

fn text(key: &str) -> Key {
    Key::Str(key.to_owned())
}

/// The state one group commit works on, and the counters it advances.
struct GroupState<'a> {
    options: StoreOptions,
    view: View<'a>,
    inbox_seq: u64,
    other_seq: u64,
    conversation_seq: u64,
    /// The conversation event log's last seq.
    event_seq: u64,
    counters_at_start: (u64, u64, u64, u64),
    agent_records: HashMap<String, AgentRecord>,
    /// The agents' latest event seqs as of the group's start ...
    agent_seqs_at_start: &'a HashMap<String, u64>,
    /// ... and as this group moved them.
    agent_seqs: HashMap<String, u64>,
    /// The group's events, in seq order from `event_seq` at the start + 1.
    group_events: Vec<Event>,
}

impl<'a> GroupState<'a> {
    fn open(view: View<'a>, options: &StoreOptions, agent_seqs_at_start: &'a HashMap<String, u64>) -> Result<Self> {
        let read_counter =
            |name: &str| -> Result<u64> { Ok(view.get_u64(TableId::Counters, text(name))?.unwrap_or(0)) };
        let inbox_seq = read_counter("inbox_seq")?;
        let other_seq = read_counter("other_seq")?;
        let conversation_seq = read_counter("conversation_seq")?;
        let event_seq = read_counter(EVENT_SEQ)?;
        Ok(GroupState {
            options: options.clone(),
            view,
            inbox_seq,
            other_seq,
            conversation_seq,
            event_seq,
            counters_at_start: (inbox_seq, other_seq, conversation_seq, event_seq),
            agent_records: HashMap::new(),
            agent_seqs_at_start,
            agent_seqs: HashMap::new(),
            group_events: Vec::new(),
        })
    }

    /// The group's writes, to be journaled as one entry, and the agents'
    /// event seqs it moved. The group's events are stored as one value,
    /// keyed by the first one's seq (see [`Op::Event`]).
    fn finish(mut self) -> Result<(Vec<Write>, HashMap<String, u64>)> {
        let (inbox_seq, other_seq, conversation_seq, event_seq) = self.counters_at_start;
        if !self.group_events.is_empty() {
            debug_assert_eq!(self.event_seq, event_seq + self.group_events.len() as u64);
            self.view.put(TableId::Events, Key::U64(event_seq + 1), encode(&self.group_events)?);
        }
        if self.inbox_seq != inbox_seq {
            self.view.put_u64(TableId::Counters, text("inbox_seq"), self.inbox_seq);
        }
        if self.other_seq != other_seq {
            self.view.put_u64(TableId::Counters, text("other_seq"), self.other_seq);
        }
        if self.conversation_seq != conversation_seq {
            self.view.put_u64(TableId::Counters, text("conversation_seq"), self.conversation_seq);
        }
        if self.event_seq != event_seq {
            self.view.put_u64(TableId::Counters, text(EVENT_SEQ), self.event_seq);
        }
        for (agent_id, record) in std::mem::take(&mut self.agent_records) {
            self.view.put(TableId::Agents, Key::Str(agent_id), encode(&record)?);
        }
        Ok((self.view.writes, self.agent_seqs))
    }

    /// The agent's next event seq, taken.
    fn next_agent_seq(&mut self, agent_id: &str) -> Result<u64> {
        let last = match self.agent_seqs.get(agent_id).or_else(|| self.agent_seqs_at_start.get(agent_id)) {
            Some(last) => *last,
            None => self.view.snapshot.agent_last_seq(agent_id)?,
        };
        self.agent_seqs.insert(agent_id.to_owned(), last + 1);
        Ok(last + 1)
    }

    fn push_inbox(&mut self, thread_key: String, item: InboxItem, published: &mut Published) -> Result<u64> {
        self.inbox_seq += 1;
        let entry = InboxEntry { seq: self.inbox_seq, thread_key, item };
        self.view.put(TableId::Inbox, Key::U64(entry.seq), encode_json(&entry)?);
        published.inbox.push(entry);
        Ok(self.inbox_seq)
    }

    fn agent_record(&mut self, agent_id: &str) -> Result<&mut AgentRecord> {
        if !self.agent_records.contains_key(agent_id) {
            let stored = match self.view.get(TableId::Agents, text(agent_id))? {
                Some(bytes) => decode(&bytes)?,
                None => AgentRecord::default(),
            };
            self.agent_records.insert(agent_id.to_owned(), stored);
        }
        Ok(self.agent_records.get_mut(agent_id).expect("inserted above"))
    }

    /// Applies one op; false when it was a refused claim and the rest of its
    /// batch must be skipped.
    fn apply(&mut self, op: &Op, outcome: &mut CommitOutcome, published: &mut Published) -> Result<bool> {
        match op {
            Op::IngestMessage(ingest) => {
                let wamid = ingest.message.id.as_str();
                if self.view.contains(TableId::InboundIds, text(wamid))? {
                    outcome.ingested.push(IngestOutcome::Duplicate);
                    return Ok(true);
                }
                let thread_key = crate::thread_key(&ingest.phone_number_id, &ingest.contact_key);
                let item = InboxItem::Message {
                    phone_number_id: ingest.phone_number_id.clone(),
                    contact_key: ingest.contact_key.clone(),
                    contact: ingest.contact.clone(),
                    message: ingest.message.clone(),
                };
                let seq = self.push_inbox(thread_key, item, published)?;
                self.view.put_u64(TableId::InboundIds, text(wamid), seq);
                outcome.ingested.push(IngestOutcome::Accepted { seq });
            }
            Op::IngestStatus(ingest) => {
                let dedup_key = format!("{}\u{1f}{}", ingest.status.id, ingest.status.status);
                if self.view.contains(TableId::StatusIds, Key::Str(dedup_key.clone()))? {
                    outcome.ingested.push(IngestOutcome::Duplicate);
                    return Ok(true);
                }
                self.view.put_u64(TableId::StatusIds, Key::Str(dedup_key), self.inbox_seq + 1);
                let location = self
                    .view
                    .get(TableId::MessageIndex, text(&ingest.status.id))?
                    .map(|bytes| decode::<MessageLocation>(&bytes))
                    .transpose()?;
                match location {
                    Some(location) => {
                        let item = InboxItem::Status {
                            conversation_id: location.conversation_id,
                            status: ingest.status.clone(),
                        };
                        let seq = self.push_inbox(location.thread_key, item, published)?;
                        outcome.ingested.push(IngestOutcome::Accepted { seq });
                    }
                    None if self
                        .view
                        .contains(TableId::Broadcasts, text(&crate::broadcast_wamid_key(&ingest.status.id)))? =>
                    {
                        self.log_broadcast_status(ingest, published);
                        outcome.ingested.push(IngestOutcome::Kept);
                    }
                    None => {
                        if self.claim_for_unknown_send(ingest, published)? {
                            outcome.ingested.push(IngestOutcome::Accepted { seq: self.inbox_seq });
                            return Ok(true);
                        }
                        let mut waiting: Vec<IngestStatus> =
                            match self.view.get(TableId::PendingStatuses, text(&ingest.status.id))? {
                                Some(bytes) => decode_json(&bytes)?,
                                None => Vec::new(),
                            };
                        waiting.push(ingest.clone());
                        self.view.put(TableId::PendingStatuses, text(&ingest.status.id), encode_json(&waiting)?);
                        outcome.ingested.push(IngestOutcome::Pending);
                    }
                }
            }
            Op::ClaimInbound(wamid) => {
                if self.view.contains(TableId::InboundIds, text(wamid))? {
                    outcome.ingested.push(IngestOutcome::Duplicate);
                    return Ok(false);
                }
                self.view.put_u64(TableId::InboundIds, text(wamid), 0);
                outcome.ingested.push(IngestOutcome::Accepted { seq: 0 });
            }
            Op::IngestOtherChange(change) => {
                self.other_seq += 1;
                self.view.put(TableId::OtherChanges, Key::U64(self.other_seq), encode_json(change)?);
                outcome.ingested.push(IngestOutcome::Kept);
            }
            Op::PutConversation(record) => self.put_conversation(record)?,
            Op::PutMessage { conversation_id, thread_key, index, message } => {
                self.view.put(
                    TableId::Messages,
                    Key::StrU32(conversation_id.clone(), *index),
                    encode(message.as_ref())?,
                );
                if message.message.direction == Direction::Out {
                    let wamid = message.message.id.as_str();
                    let location = MessageLocation {
                        conversation_id: conversation_id.clone(),
                        thread_key: thread_key.clone(),
                        index: *index,
                    };
                    self.view.put(TableId::MessageIndex, text(wamid), encode(&location)?);
                    self.release_pending_statuses(wamid, &location, published)?;
                }
            }
            Op::PutThread { key, record } => {
                self.view.put(TableId::Threads, text(key), encode(record)?);
            }
            Op::DeleteInbox(seq) => {
                self.view.delete(TableId::Inbox, Key::U64(*seq));
            }
            Op::AgentEvent { agent_id, frame } => {
                let retention = self.options.agent_event_retention.max(1);
                let seq = self.next_agent_seq(agent_id)?;
                let mut frame = frame.as_ref().clone();
                frame.set_seq(seq);
                self.view.put(TableId::AgentEvents, Key::StrU64(agent_id.clone(), seq), encode(&frame)?);
                if let Some(last_pruned) = prune_through(seq, retention) {
                    self.view.delete(TableId::AgentEvents, Key::StrU64UpTo(agent_id.clone(), last_pruned));
                }
                outcome.events.push((agent_id.clone(), frame.clone()));
                published.events.push((agent_id.clone(), frame));
            }
            Op::Event(event) => {
                // Written with the group's other events when it is finished.
                self.event_seq += 1;
                published.log_head = Some(self.event_seq);
                self.group_events.push(event.as_ref().clone());
            }
            Op::SetCursor { consumer, seq } => {
                self.view.put_u64(TableId::Cursors, text(consumer), *seq);
            }
            Op::AuditAppend(append) => {
                for (first, chunk) in crate::audit::chunks_of(&append.entries) {
                    self.view.put(TableId::AuditEntries, Key::U64(first), chunk);
                }
                for (key, numbers) in crate::audit::index_rows(&append.entries) {
                    self.view.put(
                        TableId::AuditIndex,
                        Key::StrU64(key.to_owned(), numbers[0]),
                        crate::audit::pack(&numbers),
                    );
                }
                for node in &append.nodes {
                    let key = Key::U64(crate::audit::node_key(node.level, node.index));
                    self.view.put(TableId::AuditNodes, key, node.hash.to_vec());
                }
            }
            Op::PutContact(record) => {
                self.view.put(TableId::Contacts, text(&record.wa_id), encode(record.as_ref())?);
            }
            Op::PutSetting { name, value: Some(value) } => {
                self.view.put(TableId::Settings, text(name), value.clone());
            }
            Op::PutSetting { name, value: None } => {
                self.view.delete(TableId::Settings, text(name));
            }
            Op::PutReportRows(rows) => {
                for (key, value) in rows {
                    match value {
                        Some(value) => self.view.put(TableId::Reports, text(key), value.clone()),
                        None => self.view.delete(TableId::Reports, text(key)),
                    }
                }
            }
            Op::PutOutboxRows(rows) => {
                for (key, value) in rows {
                    match value {
                        Some(value) => self.view.put(TableId::Outbox, text(key), value.clone()),
                        None => self.view.delete(TableId::Outbox, text(key)),
                    }
                }
            }
            Op::PutBroadcastRows(rows) => {
                for (key, value) in rows {
                    match value {
                        Some(value) => self.view.put(TableId::Broadcasts, text(key), value.clone()),
                        None => self.view.delete(TableId::Broadcasts, text(key)),
                    }
                    // Statuses that came before Meta's answer was stored.
                    if let (Some(wamid), Some(_)) = (key.strip_prefix("w/"), value)
                        && let Some(bytes) = self.view.get(TableId::PendingStatuses, text(wamid))?
                    {
                        self.view.delete(TableId::PendingStatuses, text(wamid));
                        let waiting: Vec<IngestStatus> = decode_json(&bytes)?;
                        for ingest in &waiting {
                            self.log_broadcast_status(ingest, published);
                        }
                    }
                }
            }
            Op::PutFollowupRows(rows) => {
                for (key, value) in rows {
                    match value {
                        Some(value) => self.view.put(TableId::Followups, text(key), value.clone()),
                        None => self.view.delete(TableId::Followups, text(key)),
                    }
                }
            }
            Op::AuditCheckpoint { tree_size, checkpoint } => {
                self.view.put(TableId::AuditCheckpoints, Key::U64(*tree_size), checkpoint.clone());
            }
            Op::PutAgentStatus { agent_id, status } => {
                self.agent_record(agent_id)?.status = *status;
            }
            Op::PutAgentCopilot { agent_id, enabled } => {
                self.agent_record(agent_id)?.copilot = Some(*enabled);
            }
            Op::PutFirstResponseBreaches { agent_id, day, count } => {
                let record = self.agent_record(agent_id)?;
                record.frt_breaches_day = *day;
                record.frt_breaches = *count;
            }
            Op::PutSendIntent { thread_key, intent } => {
                let mut intents = self.send_intents(thread_key)?;
                intents.intents.push(intent.as_ref().clone());
                self.put_send_intents(thread_key, &intents, published)?;
            }
            Op::ResolveSendIntent { thread_key, local_id, wamid } => {
                let mut intents = self.send_intents(thread_key)?;
                intents.resolve(local_id, wamid.as_deref());
                self.put_send_intents(thread_key, &intents, published)?;
            }
            Op::SendIntentUnknown { thread_key, local_id, index } => {
                let mut intents = self.send_intents(thread_key)?;
                intents.mark_unknown(local_id, *index);
                self.put_send_intents(thread_key, &intents, published)?;
            }
        }
        Ok(true)
    }

    /// Statuses that waited for `wamid` go to its conversation's inbox.
    ///
    /// This is the inbox's mechanics, not a business rule, so it stays here:
    /// a status is acknowledged to Meta once it is durable, possibly before
    /// the send it is about has its wamid stored (Meta's webhook can beat
    /// the Graph API's answer). Until then no one can say which
    /// conversation's inbox it belongs to, so it waits under its wamid and
    /// is queued, unchanged and in arrival order, in the same group that
    /// makes the wamid's location known. Nothing here decides what a status
    /// means: whether it advances the message, what a failure shows, who is
    /// told, is `actors::decide` applying the inbox entry.
    fn release_pending_statuses(
        &mut self,
        wamid: &str,
        location: &MessageLocation,
        published: &mut Published,
    ) -> Result<()> {
        if let Some(bytes) = self.view.get(TableId::PendingStatuses, text(wamid))? {
            self.view.delete(TableId::PendingStatuses, text(wamid));
            let waiting: Vec<IngestStatus> = decode_json(&bytes)?;
            for ingest in waiting {
                let item =
                    InboxItem::Status { conversation_id: location.conversation_id.clone(), status: ingest.status };
                self.push_inbox(location.thread_key.clone(), item, published)?;
            }
        }
        Ok(())
    }

    /// A broadcast message's status (format v12): no conversation will
    /// ever hold its message, so it does not wait in `pending_statuses`; it
    /// is logged, filed under the contact (the audit log shows it).
    fn log_broadcast_status(&mut self, ingest: &IngestStatus, published: &mut Published) {
        let status = &ingest.status;
        self.event_seq += 1;
        published.log_head = Some(self.event_seq);
        self.group_events.push(Event {
            at: status.timestamp_ms().unwrap_or_default(),
            conversation_id: None,
            contact: status.recipient_id.clone().or_else(|| status.recipient_user_id.clone()),
            phone_number_id: Some(ingest.phone_number_id.clone()),
            actor: protocol::events::Actor::Meta,
            body: protocol::events::EventBody::Status {
                wamid: status.id.clone(),
                status: status.status.clone(),
                error_code: status.errors.first().map(|error| error.code),
            },
        });
    }

    fn send_intents(&self, thread_key: &str) -> Result<SendIntents> {
        Ok(match self.view.get(TableId::SendIntents, text(thread_key))? {
            Some(bytes) => decode(&bytes)?,
            None => SendIntents::default(),
        })
    }

    /// Stores the thread's intents after matching noted wamids with unknown
    /// intents where nothing is in flight any more ([`SendIntents::settle`]).
    fn put_send_intents(&mut self, thread_key: &str, intents: &SendIntents, published: &mut Published) -> Result<()> {
        let mut intents = intents.clone();
        for (wamid, location) in intents.settle(thread_key) {
            self.view.put(TableId::MessageIndex, text(&wamid), encode(&location)?);
            self.release_pending_statuses(&wamid, &location, published)?;
        }
        let value =
            (!intents.is_empty() || !intents.unmatched_wamids.is_empty()).then(|| encode(&intents)).transpose()?;
        self.view.set(TableId::SendIntents, text(thread_key), value);
        Ok(())
    }

    /// A status for a wamid no stored message has: if it is the wamid of a
    /// send to that customer whose outcome is `unknown`, the message takes
    /// it (indexed under it; the status, and any that waited for it, go to
    /// its conversation, whose actor puts the wamid on the message). True
    /// when the status was routed so.
    fn claim_for_unknown_send(&mut self, ingest: &IngestStatus, published: &mut Published) -> Result<bool> {
        let status = &ingest.status;
        let Some(recipient) = status.recipient_id.as_deref().or(status.recipient_user_id.as_deref()) else {
            return Ok(false);
        };
        let thread_key = crate::thread_key(&ingest.phone_number_id, recipient);
        let Some(bytes) = self.view.get(TableId::SendIntents, text(&thread_key))? else { return Ok(false) };
        let mut intents: SendIntents = decode(&bytes)?;
        let claimed = intents.claim(&status.id, &thread_key);
        self.put_send_intents(&thread_key, &intents, published)?;
        let Some(location) = claimed else { return Ok(false) };
        self.view.put(TableId::MessageIndex, text(&status.id), encode(&location)?);
        self.release_pending_statuses(&status.id, &location, published)?;
        let item = InboxItem::Status { conversation_id: location.conversation_id.clone(), status: status.clone() };
        self.push_inbox(thread_key, item, published)?;
        Ok(true)
    }

    fn put_conversation(&mut self, record: &ConversationRecord) -> Result<()> {
        let id = record.conversation.id.as_str();
        let previous = self.view.get(TableId::OpenConversations, text(id))?;
        let closed = record.conversation.status == ConversationStatus::Closed;
        let entry = (!closed).then(|| OpenEntry::of(record));
        let entry_bytes = entry.as_ref().map(encode).transpose()?;
        // Most updates leave the entry as it was (a reply out, say): nothing to rewrite.
        if previous.as_deref() != entry_bytes.as_deref() {
            let previous_holder = match &previous {
                Some(bytes) => decode::<OpenEntry>(bytes)?.agent,
                None => None,
            };
            let holder = entry.as_ref().and_then(|entry| entry.agent.clone());
            if previous_holder != holder {
                if let Some(previous_holder) = previous_holder {
                    self.view.delete(TableId::AgentOpen, Key::StrStr(previous_holder, id.to_owned()));
                }
                if let Some(holder) = holder {
                    self.view.put(TableId::AgentOpen, Key::StrStr(holder, id.to_owned()), Vec::new());
                }
            }
            self.view.set(TableId::OpenConversations, text(id), entry_bytes);
        }
        if let Some(number) = conversation_number(id) {
            self.conversation_seq = self.conversation_seq.max(number);
        }
        let bytes = if record.conversation.messages.is_some() {
            let mut stored = record.clone();
            stored.conversation.messages = None;
            encode(&stored)?
        } else {
            encode(record)?
        };
        self.view.put(TableId::Conversations, text(id), bytes);
        Ok(())
    }
}

/// When an agent's event `seq` is written, the seq through which its
/// events are deleted, if any. Pruning goes in bulk, one range delete per
/// `retention / 4` events (at least 1), instead of one delete per event: an
/// agent holds between `retention` and `retention + retention / 4` events,
/// so `resume_from` is served for at least the last `retention` (PROTOCOL:
/// "at least the last 1,000"), and an older seq gets a snapshot. Every
/// range starts at the agent's first seq, so events left by an older
/// store's one-by-one pruning, or by a larger retention, go too.
pub(crate) fn prune_through(seq: u64, retention: u64) -> Option<u64> {
    let every = (retention / 4).max(1);
    (seq > retention && (seq - retention).is_multiple_of(every)).then(|| seq - retention)
}

/// Conversation ids are `cv` + 12 digits: opaque to clients, sortable here.
pub fn conversation_id(number: u64) -> String {
    format!("cv{number:012}")
}

/// The number inside a conversation id (`cv000000000042` → 42).
pub fn conversation_number(id: &str) -> Option<u64> {
    id.strip_prefix("cv")?.parse().ok()
}

impl crate::Store {
    /// A new conversation id, never reused (the counter is persisted with the
    /// conversation that takes it).
    pub fn next_conversation_id(&self) -> String {
        conversation_id(self.writer.conversation_seq.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::prune_through;

    #[test]
    fn agent_events_are_pruned_in_bulk_and_never_below_retention() {
        let pruned: Vec<(u64, u64)> =
            (1..=3_000).filter_map(|seq| prune_through(seq, 1_000).map(|last| (seq, last))).collect();
        assert_eq!(pruned.first(), Some(&(1_250, 250)), "nothing until a quarter more than retention is held");
        assert!(pruned.windows(2).all(|pair| pair[1].0 - pair[0].0 == 250), "one range per 250 events");
        for seq in 1..=3_000u64 {
            let last_pruned = pruned.iter().filter(|(at, _)| *at <= seq).map(|(_, last)| *last).max().unwrap_or(0);
            let held = seq - last_pruned;
            assert!(held >= seq.min(1_000) && held < 1_250, "after seq {seq}: {held} held");
        }
        assert_eq!(prune_through(7, 5), Some(2), "a retention under 4 prunes at every event");
    }
}
