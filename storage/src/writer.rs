//! The single writer thread and its group commit.
//!
//! Many callers (webhook requests, conversation actors) each send a [`Batch`].
//! The thread takes the first batch waiting, drains every other batch already
//! queued (up to `max_group`), applies them all in one redb write transaction
//! with `Durability::Immediate`, and only after `commit` returns:
//! 1. hands the newly accepted inbox entries and the agent events to the
//!    [`EventSink`], in commit order (this is the only place anything is
//!    announced, so nothing is announced before it is durable);
//! 2. answers each caller with its own [`CommitOutcome`].
//!
//! No caller holds a lock across the commit: callers only wait on their own
//! oneshot reply.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use protocol::model::{AgentStatus, ConversationStatus, Direction};
use protocol::ws::ServerFrame;
use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use crate::records::{decode, decode_json, encode, encode_json};
use crate::tables::*;
use crate::{
    AgentRecord, ConversationRecord, InboxEntry, InboxItem, IngestMessage, IngestStatus, MessageLocation, OpenEntry,
    Result, StorageError, StoreOptions, StoredMessage, ThreadRecord, db_error,
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

pub(crate) struct WriterHandle {
    sender: mpsc::Sender<Request>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    pub(crate) conversation_seq: Arc<AtomicU64>,
}

impl WriterHandle {
    pub(crate) fn start(db: Arc<Database>, options: StoreOptions, sink: Arc<dyn EventSink>) -> Result<WriterHandle> {
        let conversation_seq = {
            let txn = db.begin_read().map_err(db_error)?;
            let counters = txn.open_table(COUNTERS).map_err(db_error)?;
            counters.get("conversation_seq").map_err(db_error)?.map(|value| value.value()).unwrap_or(0)
        };
        let conversation_seq = Arc::new(AtomicU64::new(conversation_seq));
        let (sender, receiver) = mpsc::channel(65_536);
        let thread = std::thread::Builder::new()
            .name("switchboard-writer".to_owned())
            .spawn(move || writer_loop(db, options, sink, receiver))
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

fn writer_loop(
    db: Arc<Database>,
    options: StoreOptions,
    sink: Arc<dyn EventSink>,
    mut receiver: mpsc::Receiver<Request>,
) {
    let mut stopping = false;
    while !stopping {
        let Some(first) = receiver.blocking_recv() else { break };
        let mut group = Vec::new();
        match first {
            Request::Commit { batch, reply } => group.push((batch, reply)),
            Request::Shutdown => stopping = true,
        }
        while group.len() < options.max_group {
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
        let batches: Vec<&Batch> = group.iter().map(|(batch, _)| batch).collect();
        match apply_group(&db, &options, &batches) {
            Ok((outcomes, published)) => {
                metrics::histogram!("switchboard_store_commit_seconds").record(started.elapsed().as_secs_f64());
                metrics::histogram!("switchboard_store_group_batches").record(group.len() as f64);
                metrics::counter!("switchboard_store_commits_total").increment(1);
                if !published.inbox.is_empty() || !published.events.is_empty() {
                    sink.committed(published);
                }
                for ((_, reply), outcome) in group.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                metrics::counter!("switchboard_store_commit_failures_total").increment(1);
                tracing::error!(%error, batches = group.len(), "group commit failed");
                let message = error.to_string();
                for (_, reply) in group {
                    let _ = reply.send(Err(StorageError::Invalid(format!("commit failed: {message}"))));
                }
            }
        }
    }
    // A last, empty commit in quick-repair mode saves redb's allocator state,
    // so the next open needs no full repair (a walk of the whole file: 3 s for
    // a 4 GiB store) even though readers elsewhere may still hold the database
    // when the process exits. After kill -9 the full repair still runs.
    let closing = db.begin_write().map_err(|error| error.to_string()).and_then(|mut txn| {
        txn.set_quick_repair(true);
        txn.commit().map_err(|error| error.to_string())
    });
    if let Err(error) = closing {
        tracing::warn!(%error, "could not save the allocator state; the next start will repair the store");
    }
    tracing::debug!("writer stopped");
}

fn apply_group(db: &Database, options: &StoreOptions, batches: &[&Batch]) -> Result<(Vec<CommitOutcome>, Published)> {
    let mut txn = db.begin_write().map_err(db_error)?;
    txn.set_durability(Durability::Immediate);
    let mut published = Published::default();
    let mut outcomes = Vec::with_capacity(batches.len());
    {
        let mut state = GroupState::open(&txn, options)?;
        for batch in batches {
            let mut outcome = CommitOutcome::default();
            for op in batch.iter() {
                if !state.apply(op, &mut outcome, &mut published)? {
                    break; // a refused claim: the rest of this batch is not applied
                }
            }
            outcomes.push(outcome);
        }
        state.finish()?;
    }
    txn.commit().map_err(db_error)?;
    Ok((outcomes, published))
}

/// The tables of one write transaction plus the counters it advances.
struct GroupState<'txn> {
    options: StoreOptions,
    counters: redb::Table<'txn, &'static str, u64>,
    inbox: redb::Table<'txn, u64, &'static [u8]>,
    inbound_ids: redb::Table<'txn, &'static str, u64>,
    status_ids: redb::Table<'txn, &'static str, u64>,
    pending_statuses: redb::Table<'txn, &'static str, &'static [u8]>,
    other_changes: redb::Table<'txn, u64, &'static [u8]>,
    conversations: redb::Table<'txn, &'static str, &'static [u8]>,
    open_conversations: redb::Table<'txn, &'static str, &'static [u8]>,
    messages: redb::Table<'txn, (&'static str, u32), &'static [u8]>,
    message_index: redb::Table<'txn, &'static str, &'static [u8]>,
    threads: redb::Table<'txn, &'static str, &'static [u8]>,
    agents: redb::Table<'txn, &'static str, &'static [u8]>,
    agent_events: redb::Table<'txn, (&'static str, u64), &'static [u8]>,
    agent_open: redb::Table<'txn, (&'static str, &'static str), ()>,
    inbox_seq: u64,
    other_seq: u64,
    conversation_seq: u64,
    agent_records: HashMap<String, AgentRecord>,
}

impl<'txn> GroupState<'txn> {
    fn open(txn: &'txn WriteTransaction, options: &StoreOptions) -> Result<Self> {
        let counters = txn.open_table(COUNTERS).map_err(db_error)?;
        let read_counter = |name: &str| -> Result<u64> {
            Ok(counters.get(name).map_err(db_error)?.map(|value| value.value()).unwrap_or(0))
        };
        let inbox_seq = read_counter("inbox_seq")?;
        let other_seq = read_counter("other_seq")?;
        let conversation_seq = read_counter("conversation_seq")?;
        Ok(GroupState {
            options: options.clone(),
            inbox: txn.open_table(INBOX).map_err(db_error)?,
            inbound_ids: txn.open_table(INBOUND_IDS).map_err(db_error)?,
            status_ids: txn.open_table(STATUS_IDS).map_err(db_error)?,
            pending_statuses: txn.open_table(PENDING_STATUSES).map_err(db_error)?,
            other_changes: txn.open_table(OTHER_CHANGES).map_err(db_error)?,
            conversations: txn.open_table(CONVERSATIONS).map_err(db_error)?,
            open_conversations: txn.open_table(OPEN_CONVERSATIONS).map_err(db_error)?,
            messages: txn.open_table(MESSAGES).map_err(db_error)?,
            message_index: txn.open_table(MESSAGE_INDEX).map_err(db_error)?,
            threads: txn.open_table(THREADS).map_err(db_error)?,
            agents: txn.open_table(AGENTS).map_err(db_error)?,
            agent_events: txn.open_table(AGENT_EVENTS).map_err(db_error)?,
            agent_open: txn.open_table(AGENT_OPEN).map_err(db_error)?,
            counters,
            inbox_seq,
            other_seq,
            conversation_seq,
            agent_records: HashMap::new(),
        })
    }

    fn finish(mut self) -> Result<()> {
        self.counters.insert("inbox_seq", self.inbox_seq).map_err(db_error)?;
        self.counters.insert("other_seq", self.other_seq).map_err(db_error)?;
        self.counters.insert("conversation_seq", self.conversation_seq).map_err(db_error)?;
        for (agent_id, record) in std::mem::take(&mut self.agent_records) {
            self.agents.insert(agent_id.as_str(), encode(&record)?.as_slice()).map_err(db_error)?;
        }
        Ok(())
    }

    fn push_inbox(&mut self, thread_key: String, item: InboxItem, published: &mut Published) -> Result<u64> {
        self.inbox_seq += 1;
        let entry = InboxEntry { seq: self.inbox_seq, thread_key, item };
        self.inbox.insert(entry.seq, encode_json(&entry)?.as_slice()).map_err(db_error)?;
        published.inbox.push(entry);
        Ok(self.inbox_seq)
    }

    fn agent_record(&mut self, agent_id: &str) -> Result<&mut AgentRecord> {
        if !self.agent_records.contains_key(agent_id) {
            let stored = match self.agents.get(agent_id).map_err(db_error)? {
                Some(bytes) => decode(bytes.value())?,
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
                if self.inbound_ids.get(wamid).map_err(db_error)?.is_some() {
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
                self.inbound_ids.insert(wamid, seq).map_err(db_error)?;
                outcome.ingested.push(IngestOutcome::Accepted { seq });
            }
            Op::IngestStatus(ingest) => {
                let dedup_key = format!("{}\u{1f}{}", ingest.status.id, ingest.status.status);
                if self.status_ids.get(dedup_key.as_str()).map_err(db_error)?.is_some() {
                    outcome.ingested.push(IngestOutcome::Duplicate);
                    return Ok(true);
                }
                self.status_ids.insert(dedup_key.as_str(), self.inbox_seq + 1).map_err(db_error)?;
                let location = self
                    .message_index
                    .get(ingest.status.id.as_str())
                    .map_err(db_error)?
                    .map(|bytes| decode::<MessageLocation>(bytes.value()))
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
                    None => {
                        let mut waiting: Vec<IngestStatus> =
                            match self.pending_statuses.get(ingest.status.id.as_str()).map_err(db_error)? {
                                Some(bytes) => decode_json(bytes.value())?,
                                None => Vec::new(),
                            };
                        waiting.push(ingest.clone());
                        self.pending_statuses
                            .insert(ingest.status.id.as_str(), encode_json(&waiting)?.as_slice())
                            .map_err(db_error)?;
                        outcome.ingested.push(IngestOutcome::Pending);
                    }
                }
            }
            Op::ClaimInbound(wamid) => {
                if self.inbound_ids.get(wamid.as_str()).map_err(db_error)?.is_some() {
                    outcome.ingested.push(IngestOutcome::Duplicate);
                    return Ok(false);
                }
                self.inbound_ids.insert(wamid.as_str(), 0).map_err(db_error)?;
                outcome.ingested.push(IngestOutcome::Accepted { seq: 0 });
            }
            Op::IngestOtherChange(change) => {
                self.other_seq += 1;
                self.other_changes.insert(self.other_seq, encode_json(change)?.as_slice()).map_err(db_error)?;
                outcome.ingested.push(IngestOutcome::Kept);
            }
            Op::PutConversation(record) => self.put_conversation(record)?,
            Op::PutMessage { conversation_id, thread_key, index, message } => {
                self.messages
                    .insert((conversation_id.as_str(), *index), encode(message.as_ref())?.as_slice())
                    .map_err(db_error)?;
                if message.message.direction == Direction::Out {
                    let wamid = message.message.id.as_str();
                    let location = MessageLocation {
                        conversation_id: conversation_id.clone(),
                        thread_key: thread_key.clone(),
                        index: *index,
                    };
                    self.message_index.insert(wamid, encode(&location)?.as_slice()).map_err(db_error)?;
                    let waiting =
                        self.pending_statuses.remove(wamid).map_err(db_error)?.map(|bytes| bytes.value().to_vec());
                    if let Some(bytes) = waiting {
                        let waiting: Vec<IngestStatus> = decode_json(&bytes)?;
                        for ingest in waiting {
                            let item =
                                InboxItem::Status { conversation_id: conversation_id.clone(), status: ingest.status };
                            self.push_inbox(thread_key.clone(), item, published)?;
                        }
                    }
                }
            }
            Op::PutThread { key, record } => {
                self.threads.insert(key.as_str(), encode(record)?.as_slice()).map_err(db_error)?;
            }
            Op::DeleteInbox(seq) => {
                self.inbox.remove(*seq).map_err(db_error)?;
            }
            Op::AgentEvent { agent_id, frame } => {
                let retention = self.options.agent_event_retention.max(1);
                let record = self.agent_record(agent_id)?;
                record.last_seq += 1;
                let seq = record.last_seq;
                let mut frame = frame.as_ref().clone();
                frame.set_seq(seq);
                self.agent_events.insert((agent_id.as_str(), seq), encode(&frame)?.as_slice()).map_err(db_error)?;
                if seq > retention {
                    self.agent_events.remove((agent_id.as_str(), seq - retention)).map_err(db_error)?;
                }
                outcome.events.push((agent_id.clone(), frame.clone()));
                published.events.push((agent_id.clone(), frame));
            }
            Op::PutAgentStatus { agent_id, status } => {
                self.agent_record(agent_id)?.status = *status;
            }
        }
        Ok(true)
    }

    fn put_conversation(&mut self, record: &ConversationRecord) -> Result<()> {
        let id = record.conversation.id.as_str();
        let previous = self.open_conversations.get(id).map_err(db_error)?.map(|bytes| bytes.value().to_vec());
        let closed = record.conversation.status == ConversationStatus::Closed;
        let entry = (!closed).then(|| OpenEntry::of(record));
        let entry_bytes = entry.as_ref().map(encode).transpose()?;
        // Most updates leave the entry as it was (a reply out, say): nothing to rewrite.
        if previous != entry_bytes {
            let previous_holder = match &previous {
                Some(bytes) => decode::<OpenEntry>(bytes)?.agent,
                None => None,
            };
            let holder = entry.as_ref().and_then(|entry| entry.agent.clone());
            if previous_holder != holder {
                if let Some(previous_holder) = &previous_holder {
                    self.agent_open.remove((previous_holder.as_str(), id)).map_err(db_error)?;
                }
                if let Some(holder) = &holder {
                    self.agent_open.insert((holder.as_str(), id), ()).map_err(db_error)?;
                }
            }
            match &entry_bytes {
                Some(bytes) => {
                    self.open_conversations.insert(id, bytes.as_slice()).map_err(db_error)?;
                }
                None => {
                    self.open_conversations.remove(id).map_err(db_error)?;
                }
            }
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
        self.conversations.insert(id, bytes.as_slice()).map_err(db_error)?;
        Ok(())
    }
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
