//! Reads. The redb tables lag a little behind the journal (see `writer.rs`):
//! - a point read (one key) looks at the overlay of journaled changes first,
//!   then opens its own read transaction (redb MVCC), so it never waits and
//!   sees every acknowledged commit;
//! - a read of a range (a conversation's messages, an agent's events, lists)
//!   first waits until the tables hold everything journaled when it was
//!   called (usually they already do), then reads one snapshot.

use std::sync::Arc;

use protocol::events::Event;
use protocol::ws::ServerFrame;
use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};

use bytes::Bytes;

use crate::changes::{Key, Overlay, Progress, TableId};
use crate::io::Db;
use crate::records::{decode, decode_json};
use crate::tables::*;
use crate::{
    AgentRecord, ContactRecord, ConversationRecord, InboxEntry, MessageLocation, OpenEntry, Result, SendIntents,
    StoredMessage, ThreadRecord, db_error,
};

/// An open conversation an agent holds, with its messages.
pub type HeldConversation = (ConversationRecord, Vec<StoredMessage>);

#[derive(Clone)]
pub struct Reader {
    db: Arc<Db>,
    overlay: Arc<Overlay>,
    progress: Arc<Progress>,
    /// Set on the reader [`Reader::caught_up`] returns: its range reads do
    /// not wait again.
    caught_up: bool,
}

/// Filters of `GET /api/v1/conversations`.
#[derive(Clone, Debug, Default)]
pub struct ConversationFilter {
    pub status: Option<protocol::model::ConversationStatus>,
    pub team: Option<String>,
    /// Only conversations of one of these teams (a manager limited to
    /// teams); `None`: any.
    pub teams: Option<Vec<String>>,
    pub agent: Option<String>,
    pub contact: Option<String>,
    pub before: Option<String>,
    pub limit: usize,
}

/// One conversation of a contact ([`Reader::contact_conversations`]).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct ContactConversation {
    pub id: String,
    /// The contact as this conversation shows it (its WhatsApp profile name).
    pub contact: protocol::model::Contact,
    pub phone_number_id: String,
    pub status: protocol::model::ConversationStatus,
    #[serde(default)]
    pub agent: Option<String>,
}

/// One conversation as a broadcast's audience reads it
/// ([`Reader::audience_conversations`]).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct AudienceConversation {
    pub id: String,
    pub contact: protocol::model::Contact,
    pub phone_number_id: String,
    pub status: protocol::model::ConversationStatus,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    #[serde(with = "protocol::time::rfc3339")]
    pub opened_at: protocol::time::UnixMs,
    #[serde(default, with = "protocol::time::rfc3339::option")]
    pub closed_at: Option<protocol::time::UnixMs>,
}

/// A [`ConversationRecord`] decoded only as far as [`AudienceConversation`].
#[derive(serde::Deserialize)]
struct AudienceRecord {
    conversation: AudienceConversation,
}

/// A [`ConversationRecord`] decoded only as far as [`ContactConversation`].
#[derive(serde::Deserialize)]
struct LightRecord {
    conversation: ContactConversation,
}

impl Reader {
    pub(crate) fn new(db: Arc<Db>, overlay: Arc<Overlay>, progress: Arc<Progress>) -> Self {
        Reader { db, overlay, progress, caught_up: false }
    }

    /// For async callers: waits, without blocking a thread, until the tables
    /// hold everything journaled so far, and returns a reader whose range
    /// reads then see all of it without waiting again (use it for one
    /// request, not kept: later commits are not waited for).
    /// [`crate::StorageError::Unavailable`] at once while the tables cannot
    /// be written (a full disk), rather than a wait of unknown length.
    pub async fn caught_up(&self) -> Result<Reader> {
        self.progress.caught_up().await?;
        Ok(Reader { caught_up: true, ..self.clone() })
    }

    /// Waits, without blocking a thread and without hurrying the
    /// materializer, until the tables hold everything journaled so far (a
    /// log consumer reading behind the writers: it reads in the
    /// materializer's own rhythm instead of forcing small transactions).
    pub async fn settled(&self) -> Result<Reader> {
        self.progress.settled().await?;
        Ok(Reader { caught_up: true, ..self.clone() })
    }

    /// A snapshot of the audit tables holding every commit journaled when
    /// it was taken (waits for the tables like a range read; call it on a
    /// [`Reader::caught_up`] or [`Reader::settled`] reader from async code).
    pub fn audit(&self) -> Result<crate::audit::AuditSnapshot> {
        Ok(crate::audit::AuditSnapshot::new(self.txn()?))
    }

    /// A snapshot holding everything journaled so far (for range reads).
    fn txn(&self) -> Result<ReadTransaction> {
        if !self.caught_up {
            self.progress.wait_applied()?;
        }
        self.db.get().begin_read().map_err(db_error)
    }

    /// One key: the overlay first, then the tables. The overlay is read
    /// before the transaction begins, so a change pruned from it meanwhile
    /// is already in the tables the transaction sees.
    fn point(&self, table: TableId, key: Key) -> Result<Option<Bytes>> {
        debug_assert!(table.point_read(), "{table:?} is not read by key");
        if let Some(value) = self.overlay.get_ref(&(table, key.clone())) {
            return Ok(value);
        }
        let txn = self.db.get().begin_read().map_err(db_error)?;
        Ok(crate::changes::read_point(&txn, table, &key)?.map(Bytes::from))
    }

    fn point_decoded<T: serde::de::DeserializeOwned>(&self, table: TableId, key: Key) -> Result<Option<T>> {
        self.point(table, key)?.map(|bytes| decode(&bytes)).transpose()
    }

    pub fn conversation(&self, id: &str) -> Result<Option<ConversationRecord>> {
        self.point_decoded(TableId::Conversations, Key::Str(id.to_owned()))
    }

    pub fn messages(&self, conversation_id: &str) -> Result<Vec<StoredMessage>> {
        let txn = self.txn()?;
        read_messages(&txn, conversation_id)
    }

    /// The first `count` messages of a conversation (its record's
    /// `message_count`), without waiting for the tables: each index is looked
    /// up in the overlay first, then the rest in one snapshot begun after.
    pub fn messages_counted(&self, conversation_id: &str, count: u32) -> Result<Vec<StoredMessage>> {
        let mut found: Vec<Option<Option<Bytes>>> = (0..count)
            .map(|index| self.overlay.get_ref(&(TableId::Messages, Key::StrU32(conversation_id.to_owned(), index))))
            .collect();
        if found.iter().any(Option::is_none) {
            let txn = self.db.get().begin_read().map_err(db_error)?;
            let table = txn.open_table(MESSAGES).map_err(db_error)?;
            for (index, slot) in (0u32..).zip(found.iter_mut()) {
                if slot.is_none() {
                    *slot = Some(
                        table
                            .get((conversation_id, index))
                            .map_err(db_error)?
                            .map(|bytes| Bytes::copy_from_slice(bytes.value())),
                    );
                }
            }
        }
        found.into_iter().flatten().flatten().map(|bytes| decode(&bytes)).collect()
    }

    pub fn message_location(&self, wamid: &str) -> Result<Option<MessageLocation>> {
        self.point_decoded(TableId::MessageIndex, Key::Str(wamid.to_owned()))
    }

    pub fn message(&self, conversation_id: &str, index: u32) -> Result<Option<StoredMessage>> {
        self.point_decoded(TableId::Messages, Key::StrU32(conversation_id.to_owned(), index))
    }

    pub fn thread(&self, key: &str) -> Result<Option<ThreadRecord>> {
        self.point_decoded(TableId::Threads, Key::Str(key.to_owned()))
    }

    /// A contact's record (PROTOCOL §8), `None` when nothing was ever set
    /// on it. A point read: it sees an acknowledged `PATCH` at once.
    pub fn contact(&self, wa_id: &str) -> Result<Option<ContactRecord>> {
        self.point_decoded(TableId::Contacts, Key::Str(wa_id.to_owned()))
    }

    /// A section of the runtime configuration (its JSON, as
    /// [`crate::Op::PutSetting`] stored it), `None` when none was ever set.
    /// A point read: it sees an acknowledged change at once.
    pub fn setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.point(TableId::Settings, Key::Str(name.to_owned()))?.map(|bytes| bytes.to_vec()))
    }

    /// The contact's conversations on every number, newest first, with
    /// what `GET /api/v1/contacts/{wa_id}` needs of each. A range read.
    /// Cost: a scan of the whole `conversations` table (each record decoded
    /// only as far as its id, contact, status and agent), as
    /// `GET /api/v1/conversations?contact=` does: no index of conversations
    /// by contact exists (a thread knows only its open conversation), and
    /// keeping one would add a write to every conversation's opening.
    pub fn contact_conversations(&self, wa_id: &str) -> Result<Vec<ContactConversation>> {
        let txn = self.txn()?;
        let table = txn.open_table(CONVERSATIONS).map_err(db_error)?;
        let mut found = Vec::new();
        for row in table.iter().map_err(db_error)?.rev() {
            let (_, bytes) = row.map_err(db_error)?;
            let light: LightRecord = decode(bytes.value())?;
            if light.conversation.contact.wa_id == wa_id {
                found.push(light.conversation);
            }
        }
        Ok(found)
    }

    /// The contacts whose `owner` is `agent_id` (a deactivated agent's,
    /// handed to its successor). A range read: a scan of the whole
    /// `contacts` table, for a rare admin action, rather than an index by
    /// owner kept up on every contact change.
    pub fn contacts_owned_by(&self, agent_id: &str) -> Result<Vec<ContactRecord>> {
        let txn = self.txn()?;
        let table = txn.open_table(CONTACTS).map_err(db_error)?;
        let mut owned = Vec::new();
        for row in table.iter().map_err(db_error)? {
            let (_, bytes) = row.map_err(db_error)?;
            let contact: ContactRecord = decode(bytes.value())?;
            if contact.owner.as_deref() == Some(agent_id) {
                owned.push(contact);
            }
        }
        Ok(owned)
    }

    /// Every row of the reports' projection, in key order (a range read,
    /// at the reports consumer's start).
    pub fn report_rows(&self, mut visit: impl FnMut(&str, &[u8]) -> Result<()>) -> Result<()> {
        let txn = self.txn()?;
        let table = txn.open_table(REPORTS).map_err(db_error)?;
        for row in table.iter().map_err(db_error)? {
            let (key, value) = row.map_err(db_error)?;
            visit(key.value(), value.value())?;
        }
        Ok(())
    }

    /// Every row of the outbox, in key order (a range read, at the
    /// outbox's start).
    pub fn outbox_rows(&self, mut visit: impl FnMut(&str, &[u8]) -> Result<()>) -> Result<()> {
        let txn = self.txn()?;
        let table = txn.open_table(OUTBOX).map_err(db_error)?;
        for row in table.iter().map_err(db_error)? {
            let (key, value) = row.map_err(db_error)?;
            visit(key.value(), value.value())?;
        }
        Ok(())
    }

    /// The rows of the broadcasts whose key starts with `prefix` (`b/`:
    /// every broadcast; `r/{id}/`: one's recipients), in key order. A range
    /// read.
    pub fn broadcast_rows_under(&self, prefix: &str, mut visit: impl FnMut(&str, &[u8]) -> Result<()>) -> Result<()> {
        let txn = self.txn()?;
        let table = txn.open_table(BROADCASTS).map_err(db_error)?;
        for row in table.range(prefix..).map_err(db_error)? {
            let (key, value) = row.map_err(db_error)?;
            if !key.value().starts_with(prefix) {
                break;
            }
            visit(key.value(), value.value())?;
        }
        Ok(())
    }

    /// Every row of the follow-ups' schedule, in key order (a range read,
    /// at the follow-ups' start).
    pub fn followup_rows(&self, mut visit: impl FnMut(&str, &[u8]) -> Result<()>) -> Result<()> {
        let txn = self.txn()?;
        let table = txn.open_table(FOLLOWUPS).map_err(db_error)?;
        for row in table.iter().map_err(db_error)? {
            let (key, value) = row.map_err(db_error)?;
            visit(key.value(), value.value())?;
        }
        Ok(())
    }

    /// Every conversation as a broadcast's audience needs it (contact,
    /// number, team, status, outcome field, closing time), oldest first. A
    /// range read: a scan of the whole `conversations` table, each record
    /// decoded only as far as those fields, for a rare action (a broadcast's
    /// creation) rather than an index by outcome or closing time kept up on
    /// every close.
    pub fn audience_conversations(&self) -> Result<Vec<AudienceConversation>> {
        let txn = self.txn()?;
        let table = txn.open_table(CONVERSATIONS).map_err(db_error)?;
        let mut found = Vec::new();
        for row in table.iter().map_err(db_error)? {
            let (_, bytes) = row.map_err(db_error)?;
            let light: AudienceRecord = decode(bytes.value())?;
            found.push(light.conversation);
        }
        Ok(found)
    }

    pub fn agent(&self, agent_id: &str) -> Result<AgentRecord> {
        Ok(self.point_decoded(TableId::Agents, Key::Str(agent_id.to_owned()))?.unwrap_or_default())
    }

    /// The `seq` of the agent's latest event (0 before any): the last key
    /// of its events, which pruning never removes.
    pub fn agent_last_seq(&self, agent_id: &str) -> Result<u64> {
        let txn = self.txn()?;
        read_last_seq(&txn, agent_id)
    }

    /// The conversation event log's last seq (0 while it is empty).
    pub fn log_head(&self) -> Result<u64> {
        let bytes = self.point(TableId::Counters, Key::Str(crate::writer::EVENT_SEQ.to_owned()))?;
        bytes.map(|bytes| crate::changes::u64_value(&bytes)).transpose().map(Option::unwrap_or_default)
    }

    /// Up to `limit` events of the log after `after`, in seq order. A
    /// consumer reads from its cursor with this, then moves its cursor
    /// ([`crate::Op::SetCursor`]) in the same batch as what it made of them.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Event)>> {
        let txn = self.txn()?;
        read_events_after(&txn, after, limit)
    }

    /// Calls `visit(seq, event)` for the log's events from the newest back,
    /// until it returns false or `limit` events were visited (a start
    /// recovering what it keeps no record of, such as who was assigned last).
    pub fn events_newest_first(&self, limit: usize, mut visit: impl FnMut(u64, &Event) -> bool) -> Result<()> {
        let txn = self.txn()?;
        let table = txn.open_table(EVENTS).map_err(db_error)?;
        let mut visited = 0usize;
        for row in table.iter().map_err(db_error)?.rev() {
            let (first, bytes) = row.map_err(db_error)?;
            let group: Vec<Event> = match decode(bytes.value()) {
                Ok(group) => group,
                Err(_) => vec![decode(bytes.value())?], // v5: one event
            };
            for (seq, event) in (first.value()..).zip(&group).collect::<Vec<_>>().into_iter().rev() {
                if visited >= limit || !visit(seq, event) {
                    return Ok(());
                }
                visited += 1;
            }
        }
        Ok(())
    }

    /// A log consumer's cursor: the last event seq it has taken in (0: none).
    /// A consumer's cursor, `None` when it never stored one (a consumer
    /// new to an older store).
    pub fn stored_cursor(&self, consumer: &str) -> Result<Option<u64>> {
        let bytes = self.point(TableId::Cursors, Key::Str(consumer.to_owned()))?;
        bytes.map(|bytes| crate::changes::u64_value(&bytes)).transpose()
    }

    pub fn cursor(&self, consumer: &str) -> Result<u64> {
        let bytes = self.point(TableId::Cursors, Key::Str(consumer.to_owned()))?;
        bytes.map(|bytes| crate::changes::u64_value(&bytes)).transpose().map(Option::unwrap_or_default)
    }

    /// Every inbox entry not yet applied, in seq order (recovery).
    pub fn inbox(&self) -> Result<Vec<InboxEntry>> {
        let txn = self.txn()?;
        let table = txn.open_table(INBOX).map_err(db_error)?;
        let mut entries = Vec::new();
        for row in table.iter().map_err(db_error)? {
            let (_, bytes) = row.map_err(db_error)?;
            entries.push(decode_json(bytes.value())?);
        }
        Ok(entries)
    }

    /// Every conversation not closed, by id (oldest first), with what a start
    /// needs of it (recovery reads this one table, not the records).
    pub fn open_conversations(&self) -> Result<Vec<(String, OpenEntry)>> {
        let txn = self.txn()?;
        let open = txn.open_table(OPEN_CONVERSATIONS).map_err(db_error)?;
        let mut entries = Vec::with_capacity(open.len().map_err(db_error)? as usize);
        for row in open.iter().map_err(db_error)? {
            let (id, bytes) = row.map_err(db_error)?;
            entries.push((id.value().to_owned(), decode(bytes.value())?));
        }
        Ok(entries)
    }

    /// Every thread's unresolved sends, by thread key (recovery: at a start
    /// those in flight are left over from the last run).
    pub fn send_intents(&self) -> Result<Vec<(String, SendIntents)>> {
        let txn = self.txn()?;
        let table = txn.open_table(SEND_INTENTS).map_err(db_error)?;
        let mut entries = Vec::new();
        for row in table.iter().map_err(db_error)? {
            let (key, bytes) = row.map_err(db_error)?;
            entries.push((key.value().to_owned(), decode(bytes.value())?));
        }
        Ok(entries)
    }

    pub fn count_conversations(&self) -> Result<u64> {
        let txn = self.txn()?;
        let table = txn.open_table(CONVERSATIONS).map_err(db_error)?;
        table.len().map_err(db_error)
    }

    /// What an agent's new session starts from, read in one snapshot: its
    /// last `seq` and its open conversations with their messages.
    pub fn agent_snapshot(&self, agent_id: &str) -> Result<(u64, Vec<HeldConversation>)> {
        let txn = self.txn()?;
        let seq = read_last_seq(&txn, agent_id)?;
        let agent_open = txn.open_table(AGENT_OPEN).map_err(db_error)?;
        let conversations = txn.open_table(CONVERSATIONS).map_err(db_error)?;
        let mut result = Vec::new();
        for row in agent_open.range((agent_id, "")..).map_err(db_error)? {
            let (key, _) = row.map_err(db_error)?;
            let (owner, conversation_id) = key.value();
            if owner != agent_id {
                break;
            }
            if let Some(bytes) = conversations.get(conversation_id).map_err(db_error)? {
                let record: ConversationRecord = decode(bytes.value())?;
                let messages = read_messages(&txn, conversation_id)?;
                result.push((record, messages));
            }
        }
        Ok((seq, result))
    }

    /// The agent's events after `after_seq`, when every one of them is still
    /// held; `None` when some were pruned (the caller sends a snapshot).
    pub fn agent_events_after(&self, agent_id: &str, after_seq: u64) -> Result<Option<(u64, Vec<ServerFrame>)>> {
        let txn = self.txn()?;
        let last_seq = read_last_seq(&txn, agent_id)?;
        if after_seq > last_seq {
            return Ok(None);
        }
        let table = txn.open_table(AGENT_EVENTS).map_err(db_error)?;
        let mut frames = Vec::new();
        let mut expected = after_seq + 1;
        for row in table.range((agent_id, after_seq + 1)..=(agent_id, last_seq)).map_err(db_error)? {
            let (key, bytes) = row.map_err(db_error)?;
            if key.value().1 != expected {
                return Ok(None);
            }
            frames.push(decode(bytes.value())?);
            expected += 1;
        }
        if expected != last_seq + 1 {
            return Ok(None);
        }
        Ok(Some((last_seq, frames)))
    }

    /// Conversations newest first, filtered, at most `filter.limit`.
    pub fn list_conversations(&self, filter: &ConversationFilter) -> Result<Vec<ConversationRecord>> {
        let txn = self.txn()?;
        let table = txn.open_table(CONVERSATIONS).map_err(db_error)?;
        let mut result = Vec::new();
        let rows = match &filter.before {
            Some(before) => table.range(..before.as_str()).map_err(db_error)?,
            None => table.range::<&str>(..).map_err(db_error)?,
        };
        for row in rows.rev() {
            if result.len() >= filter.limit {
                break;
            }
            let (_, bytes) = row.map_err(db_error)?;
            let record: ConversationRecord = decode(bytes.value())?;
            let conversation = &record.conversation;
            if filter.status.is_some_and(|status| status != conversation.status)
                || filter.team.as_ref().is_some_and(|team| conversation.team.as_ref() != Some(team))
                || filter
                    .teams
                    .as_ref()
                    .is_some_and(|teams| conversation.team.as_ref().is_none_or(|team| !teams.contains(team)))
                || filter.agent.as_ref().is_some_and(|agent| conversation.agent.as_ref() != Some(agent))
                || filter.contact.as_ref().is_some_and(|contact| &conversation.contact.wa_id != contact)
            {
                continue;
            }
            result.push(record);
        }
        Ok(result)
    }

    /// Whether an inbound wamid was accepted (tests, tools).
    pub fn has_inbound(&self, wamid: &str) -> Result<bool> {
        Ok(self.point(TableId::InboundIds, Key::Str(wamid.to_owned()))?.is_some())
    }
}

/// Up to `limit` events after `after`. The `events` table holds each group
/// commit's events as one MessagePack array keyed by the first one's seq
/// (format v6), or one event per seq (v5): the value holding `after + 1`
/// is the last whose key is at or before it.
pub(crate) fn read_events_after(txn: &ReadTransaction, after: u64, limit: usize) -> Result<Vec<(u64, Event)>> {
    let table = txn.open_table(EVENTS).map_err(db_error)?;
    let start = after.saturating_add(1);
    let holding = table.range(..=start).map_err(db_error)?.next_back().transpose().map_err(db_error)?;
    let from = holding.map_or(start, |(first, _)| first.value());
    let mut events = Vec::new();
    for row in table.range(from..).map_err(db_error)? {
        let (first, bytes) = row.map_err(db_error)?;
        let stored: Vec<Event> = match decode(bytes.value()) {
            Ok(group) => group,
            Err(_) => vec![decode(bytes.value())?], // v5: one event
        };
        for (seq, event) in (first.value()..).zip(stored) {
            if events.len() >= limit {
                return Ok(events);
            }
            if seq >= start {
                events.push((seq, event));
            }
        }
    }
    Ok(events)
}

/// The last seq of the agent's events in `txn` (0: none).
pub(crate) fn read_last_seq(txn: &ReadTransaction, agent_id: &str) -> Result<u64> {
    let table = txn.open_table(AGENT_EVENTS).map_err(db_error)?;
    let last = table.range((agent_id, 0)..=(agent_id, u64::MAX)).map_err(db_error)?.next_back();
    Ok(last.transpose().map_err(db_error)?.map_or(0, |(key, _)| key.value().1))
}

fn read_messages(txn: &ReadTransaction, conversation_id: &str) -> Result<Vec<StoredMessage>> {
    let table = txn.open_table(MESSAGES).map_err(db_error)?;
    let mut messages = Vec::new();
    for row in table.range((conversation_id, 0)..=(conversation_id, u32::MAX)).map_err(db_error)? {
        let (_, bytes) = row.map_err(db_error)?;
        messages.push(decode(bytes.value())?);
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::encode;
    use protocol::events::{Actor, EventBody};

    fn event(n: u64) -> Event {
        Event {
            at: n as i64,
            conversation_id: Some(format!("cv{n}")),
            contact: None,
            phone_number_id: None,
            actor: Actor::System,
            body: EventBody::WindowClosed { window: protocol::events::Window::Service },
        }
    }

    #[test]
    fn events_read_from_v5_single_values_and_v6_group_values() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(EVENTS).unwrap();
            // v5: one event per seq; then v6: one value per group commit.
            table.insert(1, encode(&event(1)).unwrap().as_slice()).unwrap();
            table.insert(2, encode(&event(2)).unwrap().as_slice()).unwrap();
            table.insert(3, encode(&vec![event(3), event(4), event(5)]).unwrap().as_slice()).unwrap();
            table.insert(6, encode(&vec![event(6), event(7)]).unwrap().as_slice()).unwrap();
        }
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        let seqs = |after, limit| -> Vec<(u64, String)> {
            read_events_after(&txn, after, limit)
                .unwrap()
                .into_iter()
                .map(|(seq, event)| (seq, event.conversation_id.unwrap()))
                .collect()
        };
        let expected = |range: std::ops::RangeInclusive<u64>| -> Vec<(u64, String)> {
            range.map(|n| (n, format!("cv{n}"))).collect()
        };
        assert_eq!(seqs(0, 100), expected(1..=7));
        assert_eq!(seqs(3, 100), expected(4..=7), "from inside a group");
        assert_eq!(seqs(1, 3), expected(2..=4), "across formats, up to the limit");
        assert_eq!(seqs(4, 2), expected(5..=6), "the limit cuts across groups");
        assert_eq!(seqs(5, 100), expected(6..=7), "from a group's first seq");
        assert!(seqs(7, 100).is_empty(), "nothing after the last");
        assert!(seqs(0, 0).is_empty(), "a limit of 0");
    }
}
