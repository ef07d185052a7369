//! Table changes as values, so they can be journaled, kept in memory until
//! the tables have them, and applied to redb later in large transactions.
//!
//! - [`Write`]: one put or delete of one key of one table.
//! - [`Overlay`]: the latest journaled value of every key whose change is not
//!   yet in the redb tables. Point reads look here first.
//! - [`Snapshot`]: the writer's view of the tables (one redb read transaction),
//!   under the overlay.
//! - [`Progress`]: how far the journal and the tables are, and the wait for
//!   the tables to catch up (range reads).
//! - [`materialize`]: applies journaled writes to the redb tables.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use bytes::Bytes;
use dashmap::DashMap;
use redb::{ReadTransaction, WriteTransaction};

use crate::tables::*;
use crate::{Result, StorageError, db_error};

/// The tables, as they are named in the journal (stable numbers: do not
/// reorder).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableId {
    Counters = 0,
    Inbox = 1,
    InboundIds = 2,
    StatusIds = 3,
    PendingStatuses = 4,
    OtherChanges = 5,
    Conversations = 6,
    OpenConversations = 7,
    Messages = 8,
    MessageIndex = 9,
    Threads = 10,
    Agents = 11,
    AgentEvents = 12,
    AgentOpen = 13,
    SendIntents = 14,
    Events = 15,
    Cursors = 16,
    AuditEntries = 17,
    AuditNodes = 18,
    AuditIndex = 19,
    AuditCheckpoints = 20,
    Contacts = 21,
    Settings = 22,
    Reports = 23,
    Outbox = 24,
    Broadcasts = 25,
    Followups = 26,
}

const TABLES: [TableId; 27] = [
    TableId::Counters,
    TableId::Inbox,
    TableId::InboundIds,
    TableId::StatusIds,
    TableId::PendingStatuses,
    TableId::OtherChanges,
    TableId::Conversations,
    TableId::OpenConversations,
    TableId::Messages,
    TableId::MessageIndex,
    TableId::Threads,
    TableId::Agents,
    TableId::AgentEvents,
    TableId::AgentOpen,
    TableId::SendIntents,
    TableId::Events,
    TableId::Cursors,
    TableId::AuditEntries,
    TableId::AuditNodes,
    TableId::AuditIndex,
    TableId::AuditCheckpoints,
    TableId::Contacts,
    TableId::Settings,
    TableId::Reports,
    TableId::Outbox,
    TableId::Broadcasts,
    TableId::Followups,
];

impl TableId {
    /// Whether `key` of this table is allocated from a counter that only
    /// goes up (an inbox or log seq, an agent's event seq), so it is never
    /// written again once deleted.
    pub(crate) fn fresh_keys(self, key: &Key) -> bool {
        match self {
            TableId::Inbox | TableId::OtherChanges | TableId::Events => true,
            TableId::AgentEvents => matches!(key, Key::StrU64(..)),
            _ => false,
        }
    }

    /// Whether anything reads this table one key at a time (and so needs
    /// journaled changes in the [`Overlay`] until the table has them).
    pub(crate) fn point_read(self) -> bool {
        !matches!(
            self,
            TableId::AgentEvents
                | TableId::AgentOpen
                | TableId::Inbox
                | TableId::OtherChanges
                | TableId::Events
                | TableId::AuditEntries
                | TableId::AuditNodes
                | TableId::AuditIndex
                | TableId::AuditCheckpoints
                | TableId::Reports
                | TableId::Outbox
                | TableId::Followups
        )
    }
}

/// Counts writes (and their values' bytes) by table for the metrics, and
/// reports them with one counter increment per table written.
pub(crate) fn count_by_table<'a>(writes: impl IntoIterator<Item = &'a Write>, count: &str, bytes: Option<&str>) {
    let mut by_table = [(0u64, 0u64); TABLES.len()];
    for write in writes {
        let slot = &mut by_table[write.table as usize];
        slot.0 += 1;
        slot.1 += write.value.as_ref().map_or(0, |value| value.len() as u64);
    }
    for (table, (writes, value_bytes)) in TABLES.iter().zip(by_table) {
        if writes == 0 {
            continue;
        }
        metrics::counter!(count.to_owned(), "table" => table.label()).increment(writes);
        if let Some(bytes) = bytes {
            metrics::counter!(bytes.to_owned(), "table" => table.label()).increment(value_bytes);
        }
    }
}

impl TableId {
    /// The table's name in metrics: `agent_events` for `AgentEvents`.
    fn label(self) -> String {
        let mut label = String::new();
        for (index, character) in format!("{self:?}").chars().enumerate() {
            if character.is_ascii_uppercase() && index > 0 {
                label.push('_');
            }
            label.push(character.to_ascii_lowercase());
        }
        label
    }
}

impl TryFrom<u8> for TableId {
    type Error = String;
    fn try_from(value: u8) -> std::result::Result<Self, String> {
        TABLES.get(usize::from(value)).copied().ok_or_else(|| format!("unknown table {value} in the journal"))
    }
}

/// A key of any table. Which shape a table takes is fixed in `tables.rs`.
/// Keys of one table order as redb orders them (strings by bytes, tuples
/// field by field).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Str(String),
    U64(u64),
    StrU32(String, u32),
    StrU64(String, u64),
    StrStr(String, String),
    /// Every `StrU64(text, n)` key with `n` at or below the number: only
    /// deleted, in one write (an agent's events pruned in bulk). It orders
    /// after every `StrU64` key, so [`last_writes_of`] applies it after the
    /// puts it may cover (a range only ever covers keys written before it).
    StrU64UpTo(String, u64),
}

/// One change: `value` None deletes the key. Tables whose values are `u64`
/// carry them as 8 little-endian bytes; `()` values as no bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    pub table: TableId,
    pub key: Key,
    pub value: Option<Bytes>,
}

#[cfg(test)]
impl Write {
    pub(crate) fn put(table: TableId, key: Key, value: Vec<u8>) -> Write {
        Write { table, key, value: Some(value.into()) }
    }

    pub(crate) fn delete(table: TableId, key: Key) -> Write {
        Write { table, key, value: None }
    }
}

/// Encodes one journal entry: `seq`, then each write as table, key, value.
/// Integers little-endian; strings and values as a u32 length and bytes.
pub(crate) fn encode_entry(seq: u64, writes: &[Write], out: &mut Vec<u8>) {
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(writes.len() as u32).to_le_bytes());
    let put_str = |out: &mut Vec<u8>, text: &str| {
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    };
    for write in writes {
        out.push(write.table as u8);
        match &write.key {
            Key::Str(text) => {
                out.push(0);
                put_str(out, text);
            }
            Key::U64(number) => {
                out.push(1);
                out.extend_from_slice(&number.to_le_bytes());
            }
            Key::StrU32(text, number) => {
                out.push(2);
                put_str(out, text);
                out.extend_from_slice(&number.to_le_bytes());
            }
            Key::StrU64(text, number) => {
                out.push(3);
                put_str(out, text);
                out.extend_from_slice(&number.to_le_bytes());
            }
            Key::StrStr(first, second) => {
                out.push(4);
                put_str(out, first);
                put_str(out, second);
            }
            Key::StrU64UpTo(text, number) => {
                out.push(5);
                put_str(out, text);
                out.extend_from_slice(&number.to_le_bytes());
            }
        }
        match &write.value {
            Some(bytes) => {
                out.push(1);
                out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                out.extend_from_slice(bytes);
            }
            None => out.push(0),
        }
    }
}

/// Decodes what [`encode_entry`] wrote.
pub(crate) fn decode_entry(bytes: &[u8]) -> Result<(u64, Vec<Write>)> {
    let mut cursor = Cursor { bytes, at: 0 };
    let seq = cursor.u64()?;
    let count = cursor.u32()? as usize;
    let mut writes = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let table = TableId::try_from(cursor.u8()?).map_err(StorageError::Invalid)?;
        let key = match cursor.u8()? {
            0 => Key::Str(cursor.string()?),
            1 => Key::U64(cursor.u64()?),
            2 => Key::StrU32(cursor.string()?, cursor.u32()?),
            3 => Key::StrU64(cursor.string()?, cursor.u64()?),
            4 => Key::StrStr(cursor.string()?, cursor.string()?),
            5 => Key::StrU64UpTo(cursor.string()?, cursor.u64()?),
            other => return Err(StorageError::Invalid(format!("unknown key shape {other} in the journal"))),
        };
        let value = match cursor.u8()? {
            0 => None,
            _ => {
                let len = cursor.u32()? as usize;
                Some(Bytes::copy_from_slice(cursor.take(len)?))
            }
        };
        writes.push(Write { table, key, value });
    }
    Ok((seq, writes))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(len).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| StorageError::Invalid("a journal entry ends early".to_owned()))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn string(&mut self) -> Result<String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| StorageError::Invalid("a journal key is not UTF-8".to_owned()))
    }
}

/// Journaled values not yet in the tables: (table, key) → (journal seq of
/// the latest write, value; None = deleted). Written by the writer thread
/// after the journal is synced; pruned by it once the tables hold that seq.
/// Only tables read one key at a time are kept here; the others (an agent's
/// events, its open conversations, the inbox, other changes) are only read
/// as ranges, which wait for the tables instead.
#[derive(Default)]
pub(crate) struct Overlay {
    map: DashMap<(TableId, Key), (u64, Option<Bytes>)>,
}

impl Overlay {
    /// `Some(value)` when the key has a journaled change the tables may not
    /// have yet (`Some(None)`: deleted); `None`: read the tables.
    pub(crate) fn get_ref(&self, key: &(TableId, Key)) -> Option<Option<Bytes>> {
        self.map.get(key).map(|entry| entry.1.clone())
    }

    pub(crate) fn record(&self, seq: u64, writes: &[Write]) {
        for write in writes.iter().filter(|write| write.table.point_read()) {
            self.map.insert((write.table, write.key.clone()), (seq, write.value.clone()));
        }
    }

    /// Forgets the given keys where their latest change is at or before
    /// `applied` (the tables have it now).
    pub(crate) fn prune(&self, applied: u64, keys: impl IntoIterator<Item = (TableId, Key)>) {
        for key in keys {
            self.map.remove_if(&key, |_, (seq, _)| *seq <= applied);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// How far the journal and the tables are. Range reads wait until the tables
/// hold everything journaled when they were called.
#[derive(Default)]
pub(crate) struct Progress {
    journaled: AtomicU64,
    applied: AtomicU64,
    /// The journal seq the tables hold durably (a crash goes back to it):
    /// the journal keeps every entry after it.
    durable: AtomicU64,
    /// Only for `changed`: the values are the atomics.
    lock: Mutex<()>,
    changed: Condvar,
    /// Writes journaled and not yet applied (back-pressure on the writer).
    pub(crate) unapplied_writes: AtomicU64,
    /// A reader is waiting: the materializer applies what it has now.
    hurry: std::sync::atomic::AtomicBool,
    /// The materializer's last transaction failed (a full disk): waits for
    /// the tables end at once with [`StorageError::Unavailable`].
    failing: std::sync::atomic::AtomicBool,
    /// Wakes async waiters when the tables move on.
    moved: tokio::sync::Notify,
}

/// How long a read waits for the tables before it reports an error.
const CATCH_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Progress {
    pub(crate) fn starting_at(seq: u64) -> Progress {
        let progress = Progress::default();
        progress.journaled.store(seq, Ordering::Release);
        progress.applied.store(seq, Ordering::Release);
        progress.durable.store(seq, Ordering::Release);
        progress
    }

    pub(crate) fn journaled(&self) -> u64 {
        self.journaled.load(Ordering::Acquire)
    }

    pub(crate) fn set_journaled(&self, seq: u64) {
        self.journaled.store(seq, Ordering::Release);
    }

    pub(crate) fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    pub(crate) fn set_durable(&self, seq: u64) {
        self.durable.store(seq, Ordering::Release);
    }

    /// Whether a reader waits (and clears the request).
    pub(crate) fn hurried(&self) -> bool {
        self.hurry.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Set by the materializer when a transaction fails, cleared when one
    /// succeeds; wakes every waiter either way.
    pub(crate) fn set_failing(&self, failing: bool) {
        if self.failing.load(Ordering::Acquire) == failing {
            return;
        }
        metrics::gauge!(crate::metrics::TABLES_FAILING).set(if failing { 1.0 } else { 0.0 });
        let guard = self.lock();
        self.failing.store(failing, Ordering::Release);
        drop(guard);
        self.changed.notify_all();
        self.moved.notify_waiters();
    }

    fn behind(&self, applied: u64, target: u64) -> StorageError {
        StorageError::Unavailable(format!(
            "the tables cannot be brought up to date (at journal entry {applied} of {target}); see the log for why"
        ))
    }

    pub(crate) fn set_applied(&self, seq: u64) {
        // Stored under the lock, so a waiter between its check and its wait
        // cannot miss the notification.
        let guard = self.lock();
        self.applied.store(seq, Ordering::Release);
        drop(guard);
        self.changed.notify_all();
        self.moved.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits, without blocking a thread, until the tables hold everything
    /// journaled so far; refuses at once while they cannot be written.
    pub(crate) async fn caught_up(&self) -> Result<()> {
        self.wait_until_applied(true).await
    }

    /// [`Progress::caught_up`] without hurrying the materializer.
    pub(crate) async fn settled(&self) -> Result<()> {
        self.wait_until_applied(false).await
    }

    async fn wait_until_applied(&self, hurry: bool) -> Result<()> {
        let target = self.journaled();
        let mut counted = false;
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let applied = self.applied();
            if applied >= target {
                return Ok(());
            }
            if self.failing() {
                return Err(self.behind(applied, target));
            }
            if hurry {
                self.hurry.store(true, Ordering::Release);
                if !counted {
                    metrics::counter!(crate::metrics::READ_WAITS_TOTAL).increment(1);
                    counted = true;
                }
            }
            moved.await;
        }
    }

    /// Waits until the tables hold everything journaled so far.
    pub(crate) fn wait_applied(&self) -> Result<()> {
        let target = self.journaled();
        if self.applied() >= target {
            return Ok(());
        }
        self.hurry.store(true, Ordering::Release);
        metrics::counter!(crate::metrics::READ_WAITS_TOTAL).increment(1);
        let _ = self
            .changed
            .wait_timeout_while(self.lock(), CATCH_UP_TIMEOUT, |_| self.applied() < target && !self.failing())
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let applied = self.applied();
        if applied < target && self.failing() {
            return Err(self.behind(applied, target));
        }
        if applied < target {
            return Err(StorageError::Invalid(format!(
                "the tables are behind the journal (at {applied} of {target}) after {} s; see the log for why",
                CATCH_UP_TIMEOUT.as_secs()
            )));
        }
        Ok(())
    }

    /// Waits (up to the timeout) while more than `limit` writes are waiting.
    pub(crate) fn wait_below(&self, limit: u64) {
        if self.unapplied_writes.load(Ordering::Acquire) <= limit {
            return;
        }
        // The materializer applies what it has gathered now instead of
        // gathering on: nothing more arrives while the writer waits.
        self.hurry.store(true, Ordering::Release);
        metrics::counter!(crate::metrics::LAG_WAITS_TOTAL).increment(1);
        // Not while the tables cannot be written: the writer then refuses
        // commits past the bound instead (see `Writer::run`).
        let _ = self.changed.wait_timeout_while(self.lock(), CATCH_UP_TIMEOUT, |_| {
            self.unapplied_writes.load(Ordering::Acquire) > limit && !self.failing()
        });
    }
}

fn str_key(key: &Key) -> Result<&str> {
    match key {
        Key::Str(text) => Ok(text),
        other => Err(StorageError::Invalid(format!("expected a text key, got {other:?}"))),
    }
}

fn u64_key(key: &Key) -> Result<u64> {
    match key {
        Key::U64(number) => Ok(*number),
        other => Err(StorageError::Invalid(format!("expected a number key, got {other:?}"))),
    }
}

pub(crate) fn u64_value(bytes: &[u8]) -> Result<u64> {
    Ok(u64::from_le_bytes(
        bytes.try_into().map_err(|_| StorageError::Invalid("a counter value is not 8 bytes".to_owned()))?,
    ))
}

/// The writer's view of the tables: one read transaction, with the tables it
/// reads on the hot path opened once.
pub(crate) struct Snapshot {
    txn: ReadTransaction,
    counters: redb::ReadOnlyTable<&'static str, u64>,
    inbound_ids: redb::ReadOnlyTable<&'static str, u64>,
    status_ids: redb::ReadOnlyTable<&'static str, u64>,
    pending_statuses: redb::ReadOnlyTable<&'static str, &'static [u8]>,
    message_index: redb::ReadOnlyTable<&'static str, &'static [u8]>,
    open_conversations: redb::ReadOnlyTable<&'static str, &'static [u8]>,
    agents: redb::ReadOnlyTable<&'static str, &'static [u8]>,
}

impl Snapshot {
    pub(crate) fn new(txn: ReadTransaction) -> Result<Snapshot> {
        Ok(Snapshot {
            counters: txn.open_table(COUNTERS).map_err(db_error)?,
            inbound_ids: txn.open_table(INBOUND_IDS).map_err(db_error)?,
            status_ids: txn.open_table(STATUS_IDS).map_err(db_error)?,
            pending_statuses: txn.open_table(PENDING_STATUSES).map_err(db_error)?,
            message_index: txn.open_table(MESSAGE_INDEX).map_err(db_error)?,
            open_conversations: txn.open_table(OPEN_CONVERSATIONS).map_err(db_error)?,
            agents: txn.open_table(AGENTS).map_err(db_error)?,
            txn,
        })
    }

    /// The last seq of the agent's events the tables hold (0: none).
    pub(crate) fn agent_last_seq(&self, agent_id: &str) -> Result<u64> {
        crate::read::read_last_seq(&self.txn, agent_id)
    }

    pub(crate) fn get(&self, table: TableId, key: &Key) -> Result<Option<Vec<u8>>> {
        let number =
            |value: Option<redb::AccessGuard<'_, u64>>| value.map(|value| value.value().to_le_bytes().to_vec());
        let bytes = |value: Option<redb::AccessGuard<'_, &'static [u8]>>| value.map(|value| value.value().to_vec());
        match table {
            TableId::Counters => Ok(number(self.counters.get(str_key(key)?).map_err(db_error)?)),
            TableId::InboundIds => Ok(number(self.inbound_ids.get(str_key(key)?).map_err(db_error)?)),
            TableId::StatusIds => Ok(number(self.status_ids.get(str_key(key)?).map_err(db_error)?)),
            TableId::PendingStatuses => Ok(bytes(self.pending_statuses.get(str_key(key)?).map_err(db_error)?)),
            TableId::MessageIndex => Ok(bytes(self.message_index.get(str_key(key)?).map_err(db_error)?)),
            TableId::OpenConversations => Ok(bytes(self.open_conversations.get(str_key(key)?).map_err(db_error)?)),
            TableId::Agents => Ok(bytes(self.agents.get(str_key(key)?).map_err(db_error)?)),
            other => read_point(&self.txn, other, key),
        }
    }
}

/// One key of any table, in a read transaction.
pub(crate) fn read_point(txn: &ReadTransaction, table: TableId, key: &Key) -> Result<Option<Vec<u8>>> {
    fn str_table(txn: &ReadTransaction, def: redb::TableDefinition<&str, &[u8]>, key: &Key) -> Result<Option<Vec<u8>>> {
        let table = txn.open_table(def).map_err(db_error)?;
        Ok(table.get(str_key(key)?).map_err(db_error)?.map(|value| value.value().to_vec()))
    }
    fn counter_table(
        txn: &ReadTransaction,
        def: redb::TableDefinition<&str, u64>,
        key: &Key,
    ) -> Result<Option<Vec<u8>>> {
        let table = txn.open_table(def).map_err(db_error)?;
        Ok(table.get(str_key(key)?).map_err(db_error)?.map(|value| value.value().to_le_bytes().to_vec()))
    }
    fn seq_table(txn: &ReadTransaction, def: redb::TableDefinition<u64, &[u8]>, key: &Key) -> Result<Option<Vec<u8>>> {
        let table = txn.open_table(def).map_err(db_error)?;
        Ok(table.get(u64_key(key)?).map_err(db_error)?.map(|value| value.value().to_vec()))
    }
    match (table, key) {
        (TableId::Counters, _) => counter_table(txn, COUNTERS, key),
        (TableId::InboundIds, _) => counter_table(txn, INBOUND_IDS, key),
        (TableId::StatusIds, _) => counter_table(txn, STATUS_IDS, key),
        (TableId::Inbox, _) => seq_table(txn, INBOX, key),
        (TableId::OtherChanges, _) => seq_table(txn, OTHER_CHANGES, key),
        (TableId::PendingStatuses, _) => str_table(txn, PENDING_STATUSES, key),
        (TableId::Conversations, _) => str_table(txn, CONVERSATIONS, key),
        (TableId::OpenConversations, _) => str_table(txn, OPEN_CONVERSATIONS, key),
        (TableId::MessageIndex, _) => str_table(txn, MESSAGE_INDEX, key),
        (TableId::Threads, _) => str_table(txn, THREADS, key),
        (TableId::Agents, _) => str_table(txn, AGENTS, key),
        (TableId::SendIntents, _) => str_table(txn, SEND_INTENTS, key),
        (TableId::Contacts, _) => str_table(txn, CONTACTS, key),
        (TableId::Settings, _) => str_table(txn, SETTINGS, key),
        (TableId::Reports, _) => str_table(txn, REPORTS, key),
        (TableId::Outbox, _) => str_table(txn, OUTBOX, key),
        (TableId::Broadcasts, _) => str_table(txn, BROADCASTS, key),
        (TableId::Followups, _) => str_table(txn, FOLLOWUPS, key),
        (TableId::Cursors, _) => counter_table(txn, CURSORS, key),
        (TableId::Events, _) => seq_table(txn, EVENTS, key),
        (TableId::AuditEntries, _) => seq_table(txn, AUDIT_ENTRIES, key),
        (TableId::AuditNodes, _) => seq_table(txn, AUDIT_NODES, key),
        (TableId::AuditCheckpoints, _) => seq_table(txn, AUDIT_CHECKPOINTS, key),
        (TableId::Messages, Key::StrU32(id, index)) => {
            let table = txn.open_table(MESSAGES).map_err(db_error)?;
            Ok(table.get((id.as_str(), *index)).map_err(db_error)?.map(|value| value.value().to_vec()))
        }
        (TableId::AgentEvents, Key::StrU64(agent, seq)) => {
            let table = txn.open_table(AGENT_EVENTS).map_err(db_error)?;
            Ok(table.get((agent.as_str(), *seq)).map_err(db_error)?.map(|value| value.value().to_vec()))
        }
        (TableId::AgentOpen, Key::StrStr(agent, id)) => {
            let table = txn.open_table(AGENT_OPEN).map_err(db_error)?;
            Ok(table.get((agent.as_str(), id.as_str())).map_err(db_error)?.map(|_| Vec::new()))
        }
        (table, key) => Err(StorageError::Invalid(format!("key {key:?} does not fit table {table:?}"))),
    }
}

fn bytes(value: &[u8]) -> Result<&[u8]> {
    Ok(value)
}

fn unit(_: &[u8]) -> Result<()> {
    Ok(())
}

/// The writes that decide the tables' contents: the last write of each key
/// (an earlier one is overwritten within the same transaction anyway),
/// ordered by table and key so the B-tree pages are visited in order; with
/// `fold_created` also without the keys created
/// and deleted again within `writes` in tables whose keys are never reused
/// ([`TableId::fresh_keys`]): such a key is not in the tables before
/// `writes` (its first write ever is among them) nor after, so neither
/// write changes anything. An inbox entry (a status, put when Meta's
/// webhook is acknowledged and deleted when its actor applies it a few
/// milliseconds later) is the common case. (The remove alone would leave
/// the B-tree as it is, redb only looking the key up: this spares the
/// lookup and keeps a no-op out of the distinct-writes metric.) Only for
/// entries the tables do not hold yet: never for entries applied again
/// after a failure, which a not-durable transaction may already have put
/// in the tables.
pub(crate) fn last_writes_of<'a>(writes: impl IntoIterator<Item = &'a Write>, fold_created: bool) -> Vec<&'a Write> {
    // (key) → (its first write here is a put, its last write here).
    let mut last: std::collections::HashMap<(TableId, &Key), (bool, &Write)> = std::collections::HashMap::new();
    for write in writes {
        last.entry((write.table, &write.key))
            .and_modify(|(_, latest)| *latest = write)
            .or_insert((write.value.is_some(), write));
    }
    let mut writes: Vec<&Write> = last
        .into_values()
        .filter(|(created, latest)| {
            !(fold_created && *created && latest.value.is_none() && latest.table.fresh_keys(&latest.key))
        })
        .map(|(_, latest)| latest)
        .collect();
    writes.sort_unstable_by(|a, b| (a.table, &a.key).cmp(&(b.table, &b.key)));
    writes
}

/// Applies journaled writes to the redb tables of `txn`. Writes to one key
/// are applied in the order given.
pub(crate) fn materialize<'a>(txn: &WriteTransaction, writes: impl IntoIterator<Item = &'a Write>) -> Result<()> {
    let mut counters = txn.open_table(COUNTERS).map_err(db_error)?;
    let mut inbox = txn.open_table(INBOX).map_err(db_error)?;
    let mut inbound_ids = txn.open_table(INBOUND_IDS).map_err(db_error)?;
    let mut status_ids = txn.open_table(STATUS_IDS).map_err(db_error)?;
    let mut pending_statuses = txn.open_table(PENDING_STATUSES).map_err(db_error)?;
    let mut other_changes = txn.open_table(OTHER_CHANGES).map_err(db_error)?;
    let mut conversations = txn.open_table(CONVERSATIONS).map_err(db_error)?;
    let mut open_conversations = txn.open_table(OPEN_CONVERSATIONS).map_err(db_error)?;
    let mut messages = txn.open_table(MESSAGES).map_err(db_error)?;
    let mut message_index = txn.open_table(MESSAGE_INDEX).map_err(db_error)?;
    let mut threads = txn.open_table(THREADS).map_err(db_error)?;
    let mut agents = txn.open_table(AGENTS).map_err(db_error)?;
    let mut agent_events = txn.open_table(AGENT_EVENTS).map_err(db_error)?;
    let mut agent_open = txn.open_table(AGENT_OPEN).map_err(db_error)?;
    let mut send_intents = txn.open_table(SEND_INTENTS).map_err(db_error)?;
    let mut events = txn.open_table(EVENTS).map_err(db_error)?;
    let mut cursors = txn.open_table(CURSORS).map_err(db_error)?;
    let mut audit_entries = txn.open_table(AUDIT_ENTRIES).map_err(db_error)?;
    let mut audit_nodes = txn.open_table(AUDIT_NODES).map_err(db_error)?;
    let mut audit_index = txn.open_table(AUDIT_INDEX).map_err(db_error)?;
    let mut audit_checkpoints = txn.open_table(AUDIT_CHECKPOINTS).map_err(db_error)?;
    let mut contacts = txn.open_table(CONTACTS).map_err(db_error)?;
    let mut settings = txn.open_table(SETTINGS).map_err(db_error)?;
    let mut reports = txn.open_table(REPORTS).map_err(db_error)?;
    let mut outbox = txn.open_table(OUTBOX).map_err(db_error)?;
    let mut broadcasts = txn.open_table(BROADCASTS).map_err(db_error)?;
    let mut followups = txn.open_table(FOLLOWUPS).map_err(db_error)?;
    for write in writes {
        let key = &write.key;
        let value = write.value.as_deref();
        macro_rules! apply {
            ($table:expr, $key:expr, $value:expr) => {
                match value {
                    Some(value) => {
                        $table.insert($key, $value(value)?).map_err(db_error)?;
                    }
                    None => {
                        $table.remove($key).map_err(db_error)?;
                    }
                }
            };
        }
        match (write.table, key) {
            (TableId::Counters, _) => apply!(counters, str_key(key)?, u64_value),
            (TableId::InboundIds, _) => apply!(inbound_ids, str_key(key)?, u64_value),
            (TableId::StatusIds, _) => apply!(status_ids, str_key(key)?, u64_value),
            (TableId::Inbox, _) => apply!(inbox, u64_key(key)?, bytes),
            (TableId::OtherChanges, _) => apply!(other_changes, u64_key(key)?, bytes),
            (TableId::PendingStatuses, _) => apply!(pending_statuses, str_key(key)?, bytes),
            (TableId::Conversations, _) => apply!(conversations, str_key(key)?, bytes),
            (TableId::OpenConversations, _) => apply!(open_conversations, str_key(key)?, bytes),
            (TableId::MessageIndex, _) => apply!(message_index, str_key(key)?, bytes),
            (TableId::Threads, _) => apply!(threads, str_key(key)?, bytes),
            (TableId::Agents, _) => apply!(agents, str_key(key)?, bytes),
            (TableId::SendIntents, _) => apply!(send_intents, str_key(key)?, bytes),
            (TableId::Contacts, _) => apply!(contacts, str_key(key)?, bytes),
            (TableId::Settings, _) => apply!(settings, str_key(key)?, bytes),
            (TableId::Reports, _) => apply!(reports, str_key(key)?, bytes),
            (TableId::Outbox, _) => apply!(outbox, str_key(key)?, bytes),
            (TableId::Broadcasts, _) => apply!(broadcasts, str_key(key)?, bytes),
            (TableId::Followups, _) => apply!(followups, str_key(key)?, bytes),
            (TableId::Events, _) => apply!(events, u64_key(key)?, bytes),
            (TableId::Cursors, _) => apply!(cursors, str_key(key)?, u64_value),
            (TableId::AuditEntries, _) => apply!(audit_entries, u64_key(key)?, bytes),
            (TableId::AuditNodes, _) => apply!(audit_nodes, u64_key(key)?, bytes),
            (TableId::AuditCheckpoints, _) => apply!(audit_checkpoints, u64_key(key)?, bytes),
            (TableId::AuditIndex, Key::StrU64(who, n)) => apply!(audit_index, (who.as_str(), *n), bytes),
            (TableId::Messages, Key::StrU32(id, index)) => apply!(messages, (id.as_str(), *index), bytes),
            (TableId::AgentEvents, Key::StrU64(agent, seq)) => apply!(agent_events, (agent.as_str(), *seq), bytes),
            (TableId::AgentEvents, Key::StrU64UpTo(agent, last)) if value.is_none() => {
                agent_events
                    .retain_in((agent.as_str(), 0)..=(agent.as_str(), *last), |_, _| false)
                    .map_err(db_error)?;
            }
            (TableId::AgentOpen, Key::StrStr(agent, id)) => {
                apply!(agent_open, (agent.as_str(), id.as_str()), unit)
            }
            (table, key) => {
                return Err(StorageError::Invalid(format!("key {key:?} does not fit table {table:?}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let writes = vec![
            Write::put(TableId::Counters, Key::Str("inbox_seq".into()), 7u64.to_le_bytes().to_vec()),
            Write::delete(TableId::Inbox, Key::U64(3)),
            Write::put(TableId::Messages, Key::StrU32("cv1".into(), 4), vec![1, 2, 255]),
            Write::put(TableId::AgentEvents, Key::StrU64("a1".into(), u64::MAX), Vec::new()),
            Write::delete(TableId::AgentOpen, Key::StrStr("a1".into(), "cv1".into())),
            Write::delete(TableId::AgentEvents, Key::StrU64UpTo("a1".into(), 250)),
        ];
        let mut bytes = Vec::new();
        encode_entry(42, &writes, &mut bytes);
        assert_eq!(decode_entry(&bytes).unwrap(), (42, writes));
        assert!(decode_entry(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_fresh_key_created_and_deleted_in_one_transaction_is_not_written() {
        let writes = vec![
            Write::put(TableId::Inbox, Key::U64(7), vec![1]),
            Write::put(TableId::SendIntents, Key::Str("t".into()), vec![1]),
            Write::delete(TableId::Inbox, Key::U64(6)),
            Write::put(TableId::Inbox, Key::U64(8), vec![1]),
            Write::delete(TableId::Inbox, Key::U64(7)),
            Write::delete(TableId::SendIntents, Key::Str("t".into())),
        ];
        let folded: Vec<Write> = last_writes_of(&writes, true).into_iter().cloned().collect();
        assert_eq!(
            folded,
            vec![
                Write::delete(TableId::Inbox, Key::U64(6)), // put before these writes: deleted
                Write::put(TableId::Inbox, Key::U64(8), vec![1]),
                // A key that may be reused may have been in the table: its delete stays.
                Write::delete(TableId::SendIntents, Key::Str("t".into())),
            ]
        );
        assert_eq!(last_writes_of(&writes, false).len(), 4, "applied again after a failure: nothing folded");
    }

    #[test]
    fn only_the_last_write_of_a_key_is_applied_in_key_order() {
        let key = |id: &str| Key::Str(id.into());
        let writes = vec![
            Write::put(TableId::Conversations, key("cv2"), vec![1]),
            Write::put(TableId::Agents, key("a1"), vec![1]),
            Write::put(TableId::Conversations, key("cv1"), vec![1]),
            Write::put(TableId::Conversations, key("cv2"), vec![2]),
            Write::delete(TableId::Conversations, key("cv1")),
            Write::put(TableId::Agents, key("a1"), vec![3]),
        ];
        let last: Vec<Write> = last_writes_of(&writes, false).into_iter().cloned().collect();
        assert_eq!(
            last,
            vec![
                Write::delete(TableId::Conversations, key("cv1")),
                Write::put(TableId::Conversations, key("cv2"), vec![2]),
                Write::put(TableId::Agents, key("a1"), vec![3]),
            ]
        );
    }
}
