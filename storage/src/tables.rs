//! The redb tables. Keys that grow (inbox, agent events) are append-ordered,
//! which is what makes group commit fast in a B-tree.

use redb::{Database, TableDefinition};

use crate::{Result, db_error};

/// Counters: `inbox_seq`, `conversation_seq`.
pub const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// seq → JSON [`crate::InboxEntry`]: accepted, not yet applied.
pub const INBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("inbox");
/// Inbound wamid → inbox seq at acceptance: redelivery is ignored.
pub const INBOUND_IDS: TableDefinition<&str, u64> = TableDefinition::new("inbound_ids");
/// "wamid\x1fstatus" → unix ms received: a status is kept once.
pub const STATUS_IDS: TableDefinition<&str, u64> = TableDefinition::new("status_ids");
/// Statuses whose message is not (yet) known: wamid → JSON list of statuses.
pub const PENDING_STATUSES: TableDefinition<&str, &[u8]> = TableDefinition::new("pending_statuses");
/// Changes of fields other than `messages`: kept, not acted on.
pub const OTHER_CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("other_changes");
/// conversation id → [`crate::ConversationRecord`].
pub const CONVERSATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("conversations");
/// Open conversations (status not closed): id → MessagePack
/// [`crate::OpenEntry`], what a start needs (holder, queue, deadlines). The
/// writer also reads the previous holder here to keep `agent_open` true.
pub const OPEN_CONVERSATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("open_conversations_v3");
/// The v2 open index (id → holder), replaced by v3; migrated at open.
const OPEN_CONVERSATIONS_V2: TableDefinition<&str, &str> = TableDefinition::new("open_conversations_v2");
/// (conversation id, index) → [`crate::StoredMessage`].
pub const MESSAGES: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("messages");
/// wamid → [`crate::MessageLocation`].
pub const MESSAGE_INDEX: TableDefinition<&str, &[u8]> = TableDefinition::new("message_index");
/// thread key → [`crate::ThreadRecord`].
pub const THREADS: TableDefinition<&str, &[u8]> = TableDefinition::new("threads");
/// agent id → [`crate::AgentRecord`].
pub const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
/// (agent id, seq) → MessagePack `ServerFrame` event.
pub const AGENT_EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("agent_events");
/// (agent id, conversation id) → (): the agent's open assigned conversations.
pub const AGENT_OPEN: TableDefinition<(&str, &str), ()> = TableDefinition::new("agent_open");
/// thread key → [`crate::SendIntents`]: sends whose outcome is not recorded
/// (in flight, or `unknown` after a crash until a status tells the wamid).
pub const SEND_INTENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("send_intents");
/// event seq (one global, gap-free sequence from 1) → MessagePack
/// [`protocol::events::Event`]: the conversation event log, append-only.
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// consumer name → the last event seq it has taken in (its durable cursor).
pub const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
/// first audit entry n (from 1) → a chunk of up to 64 consecutive entries of
/// one consumer commit: hashes, times and RFC 8785 bytes without `hash`
/// (see [`crate::audit::encode_chunk`]). Append-only.
pub const AUDIT_ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_entries");
/// The audit Merkle tree's complete subtrees the consumer keeps (levels ≥ 4
/// today; lower ones are recomputed from the entries): key
/// `level << 56 | index` → 32-byte hash.
pub const AUDIT_NODES: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_nodes");
/// ("c:" contact | "a:" agent, first n) → the `n`s (u64 little-endian,
/// ascending, the first being the key's) one consumer commit filed under
/// that key: which entries concern whom, for the filters of
/// `GET /api/v1/audit` (a conversation's entries are found through its
/// contact's). One row per key and commit, not per entry.
pub const AUDIT_INDEX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("audit_index");
/// tree size → JSON signed checkpoint, one per size ever signed.
pub const AUDIT_CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_checkpoints");
/// wa_id → MessagePack [`crate::ContactRecord`] (format v8): what
/// PROTOCOL §8 sets on a contact. Written only by a `PATCH`, an opt-out or
/// opt-in word and routing, never by an ordinary message; read by key.
pub const CONTACTS: TableDefinition<&str, &[u8]> = TableDefinition::new("contacts");
/// Runtime configuration (format v9): a section's name (`routing`) → its
/// JSON, as an admin last set it through the API. Written only by
/// [`crate::Op::PutSetting`]; read by key. A section absent here is the
/// configuration file's.
pub const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
/// The reports' projection of the event log (format v10): a row's key
/// (`b…` a rollup bucket, `c…` a conversation being followed) → its value,
/// which the store does not read. Written only by
/// [`crate::Op::PutReportRows`] with the reports' cursor; read whole at start.
pub const REPORTS: TableDefinition<&str, &[u8]> = TableDefinition::new("reports");
/// The outbox of deliveries to connectors (format v11): a delivery's id →
/// its record (target, ordering key, payload, attempt state; MessagePack the
/// store does not read). Written only by [`crate::Op::PutOutboxRows`]: with
/// the outbox's cursor when records are made from the event log, with the
/// outcome's event when an attempt ends. Read whole at the outbox's start.
pub const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");
/// Broadcasts (format v12, additive): `b/{id}` → a broadcast's record,
/// `r/{id}/{index}` (index zero-padded) → one recipient's state
/// (MessagePack the store does not read), `w/{wamid}` → the broadcast id
/// of a message Meta accepted (the writer looks it up, by key, for a status
/// no conversation's message has). Written only by
/// [`crate::Op::PutBroadcastRows`], by the engine's broadcast task (with the
/// events that describe each change); read whole at its start.
pub const BROADCASTS: TableDefinition<&str, &[u8]> = TableDefinition::new("broadcasts");
/// The promise-to-pay follow-ups (format v12, additive): `conversation id/field` →
/// the scheduled follow-up (MessagePack the store does not read). Written
/// only by [`crate::Op::PutFollowupRows`], by the follow-ups consumer with
/// its cursor. Read whole at its start.
pub const FOLLOWUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("followups");

pub(crate) fn create_all(db: &Database) -> Result<()> {
    let mut txn = db.begin_write().map_err(db_error)?;
    // Every commit saves redb's allocator state: a start after a crash then
    // needs no full repair (a walk of the whole file).
    txn.set_quick_repair(true);
    txn.open_table(COUNTERS).map_err(db_error)?;
    txn.open_table(INBOX).map_err(db_error)?;
    txn.open_table(INBOUND_IDS).map_err(db_error)?;
    txn.open_table(STATUS_IDS).map_err(db_error)?;
    txn.open_table(PENDING_STATUSES).map_err(db_error)?;
    txn.open_table(OTHER_CHANGES).map_err(db_error)?;
    txn.open_table(CONVERSATIONS).map_err(db_error)?;
    txn.open_table(OPEN_CONVERSATIONS).map_err(db_error)?;
    txn.open_table(MESSAGES).map_err(db_error)?;
    txn.open_table(MESSAGE_INDEX).map_err(db_error)?;
    txn.open_table(THREADS).map_err(db_error)?;
    txn.open_table(AGENTS).map_err(db_error)?;
    txn.open_table(AGENT_EVENTS).map_err(db_error)?;
    txn.open_table(AGENT_OPEN).map_err(db_error)?;
    txn.open_table(SEND_INTENTS).map_err(db_error)?;
    txn.open_table(EVENTS).map_err(db_error)?;
    txn.open_table(CURSORS).map_err(db_error)?;
    txn.open_table(AUDIT_ENTRIES).map_err(db_error)?;
    txn.open_table(AUDIT_NODES).map_err(db_error)?;
    txn.open_table(AUDIT_INDEX).map_err(db_error)?;
    txn.open_table(AUDIT_CHECKPOINTS).map_err(db_error)?;
    txn.open_table(CONTACTS).map_err(db_error)?;
    txn.open_table(SETTINGS).map_err(db_error)?;
    txn.open_table(REPORTS).map_err(db_error)?;
    txn.open_table(OUTBOX).map_err(db_error)?;
    txn.open_table(BROADCASTS).map_err(db_error)?;
    txn.open_table(FOLLOWUPS).map_err(db_error)?;
    migrate_open_index_v2(&txn)?;
    txn.commit().map_err(db_error)?;
    Ok(())
}

/// A store written before v3 has its open index as id → holder: rebuild it
/// as id → [`crate::OpenEntry`] from the records, then drop the old table.
fn migrate_open_index_v2(txn: &redb::WriteTransaction) -> Result<()> {
    use redb::ReadableTable;
    let ids: Vec<String> = txn
        .open_table(OPEN_CONVERSATIONS_V2)
        .map_err(db_error)?
        .iter()
        .map_err(db_error)?
        .map(|row| row.map(|(id, _)| id.value().to_owned()))
        .collect::<std::result::Result<_, _>>()
        .map_err(db_error)?;
    {
        let conversations = txn.open_table(CONVERSATIONS).map_err(db_error)?;
        let mut open = txn.open_table(OPEN_CONVERSATIONS).map_err(db_error)?;
        for id in &ids {
            if let Some(bytes) = conversations.get(id.as_str()).map_err(db_error)? {
                let record: crate::ConversationRecord = crate::records::decode(bytes.value())?;
                let entry = crate::records::encode(&crate::OpenEntry::of(&record))?;
                open.insert(id.as_str(), entry.as_slice()).map_err(db_error)?;
            }
        }
    }
    txn.delete_table(OPEN_CONVERSATIONS_V2).map_err(db_error)?;
    if !ids.is_empty() {
        tracing::info!(open = ids.len(), "migrated the open index to v3");
    }
    Ok(())
}
