//! What is stored. Records are MessagePack maps (named fields), so adding an
//! optional field later is backward compatible.

use protocol::model::{AgentStatus, Contact, Conversation, ConversationStatus, Message, Route};
use protocol::time::UnixMs;
use protocol::webhook::{ContactProfile, InboundMessage, Status};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Result, StorageError};

/// Identifies the conversation actor: one per business number and customer.
pub fn thread_key(phone_number_id: &str, contact_key: &str) -> String {
    format!("{phone_number_id}:{contact_key}")
}

/// An inbound item durably accepted but not yet applied to its conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InboxEntry {
    pub seq: u64,
    pub thread_key: String,
    pub item: InboxItem,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InboxItem {
    Message {
        phone_number_id: String,
        contact_key: String,
        #[serde(default)]
        contact: Option<ContactProfile>,
        message: Box<InboundMessage>,
    },
    Status {
        conversation_id: String,
        status: Status,
    },
}

/// A message as written by a webhook before it is known which conversation
/// takes it. Produced by the engine from Meta's payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngestMessage {
    pub phone_number_id: String,
    pub contact_key: String,
    pub contact: Option<ContactProfile>,
    pub message: Box<InboundMessage>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngestStatus {
    pub phone_number_id: String,
    pub status: Status,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConversationRecord {
    /// The client-visible conversation, without `messages`.
    pub conversation: Conversation,
    pub thread_key: String,
    pub message_count: u32,
    #[serde(default)]
    pub last_customer_at: Option<UnixMs>,
    #[serde(default)]
    pub queued_at: Option<UnixMs>,
    #[serde(default)]
    pub assigned_at: Option<UnixMs>,
    #[serde(default)]
    pub first_response_at: Option<UnixMs>,
    /// Windows, SLA clocks, idle reassignment and assignment history.
    #[serde(default)]
    pub clocks: ConversationClocks,
    /// Why it waits in its team or went to its agent: the latest routing
    /// decision (contract §7), for the `assigned` frame and a start's re-queueing.
    #[serde(default)]
    pub route: Option<Route>,
    /// The co-pilot's progress through its flow (PROTOCOL §11): set when
    /// the conversation started with it, kept after the hand-over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copilot: Option<CopilotState>,
    /// The co-pilot's hand-over, which every `assigned` frame of the
    /// conversation carries (a reassignment, a start's re-queueing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<protocol::ws::Handoff>,
}

/// Where the co-pilot is in a conversation's flow; what the actors' pure
/// machine (`actors::copilot`) reads and writes, stored with the record so
/// a start resumes it at the same question.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CopilotState {
    /// The flow's id and the team whose `[teams.copilot]` it is.
    #[serde(default)]
    pub flow: String,
    #[serde(default)]
    pub team: String,
    /// The index of the question asked last (the one an answer is for);
    /// the number of questions once all were answered.
    #[serde(default)]
    pub question: u32,
    /// (question id, value) of every valid answer, in order.
    #[serde(default)]
    pub answers: Vec<(String, serde_json::Value)>,
    #[serde(default)]
    pub score: i64,
    /// Invalid answers to the current question so far.
    #[serde(default)]
    pub unanswered: u32,
    #[serde(default)]
    pub started_at: UnixMs,
    /// Tokens a language model used for this conversation (its budget).
    #[serde(default)]
    pub tokens: u64,
    /// The score reached `qualify_score` (`copilot_qualified` was logged).
    #[serde(default)]
    pub qualified: bool,
    /// A hand-over decided while the team was closed, waiting for it to
    /// open (`office_hours = "wait"`): its reason.
    #[serde(default)]
    pub waiting: Option<String>,
    /// Set when the co-pilot is done: `handoff` or `closed`.
    #[serde(default)]
    pub ended: Option<String>,
    /// A customer's answer whose step waits for the model hook: the
    /// message is committed (and its webhook acknowledged) first, the step
    /// after the hook answers. Should a restart come between, the step is
    /// taken with the built-in reading at `clocks.copilot_at`.
    #[serde(default)]
    pub pending: Option<PendingAnswer>,
}

/// The customer's message a co-pilot step waits for (`CopilotState::pending`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingAnswer {
    /// Its wamid.
    pub message_id: String,
    /// Its text (a reply's title included) and, for a reply button or list
    /// row, the reply's id.
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub reply_id: Option<String>,
}

/// The time-driven state of a conversation. Every deadline is an absolute
/// unix millisecond, so it survives restarts; what fires is re-armed from here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationClocks {
    /// Meta's timestamp of the customer message that came from an ad (a
    /// `referral`): the free entry point window needs a reply within 24 h of it.
    #[serde(default)]
    pub entry_at: Option<UnixMs>,
    /// When the business's first outbound message was accepted by Meta.
    #[serde(default)]
    pub first_outbound_at: Option<UnixMs>,
    #[serde(default)]
    pub last_agent_reply_at: Option<UnixMs>,
    #[serde(default)]
    pub frt: Option<SlaClock>,
    #[serde(default)]
    pub nrt: Option<SlaClock>,
    #[serde(default)]
    pub trt: Option<SlaClock>,
    /// Durations of finished next-response waits, for reports.
    #[serde(default)]
    pub nrt_done_ms: Vec<i64>,
    /// Reassign to another agent at this time unless the agent replied.
    #[serde(default)]
    pub reassign_at: Option<UnixMs>,
    /// The co-pilot's next deadline while it has the conversation:
    /// `handoff_after_s` after it started, or the team's opening when a
    /// hand-over waits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copilot_at: Option<UnixMs>,
    /// First-response breaches on this conversation: (the agent who held
    /// it, when). Kept by the conversation's decisions for the open index
    /// (a start's fallback for the agents' daily counts); written only when
    /// there is one. Until format v6 records also held `history` (the
    /// assignment changes) and `sla_events` (warnings and breaches),
    /// re-encoded on every message; the event log describes both now
    /// (`assigned`, `unassigned`, `transferred`, `closed`, `sla_warning`,
    /// `sla_breach`), and an older record's are ignored when it is read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frt_breaches: Vec<(String, UnixMs)>,
}

/// One running (or finished) SLA clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlaClock {
    pub started_at: UnixMs,
    pub warn_at: UnixMs,
    pub breach_at: UnixMs,
    #[serde(default)]
    pub warned: bool,
    #[serde(default)]
    pub breached: bool,
    #[serde(default)]
    pub stopped_at: Option<UnixMs>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub message: Message,
    /// Meta's inbound message as received, unknown fields included.
    #[serde(default)]
    pub raw: Option<String>,
}

/// What Switchboard remembers of a customer on one business number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadRecord {
    pub contact: Contact,
    pub phone_number_id: String,
    #[serde(default)]
    pub open_conversation: Option<String>,
    #[serde(default)]
    pub last_closed_by: Option<String>,
    /// The latest inbox entry applied to this thread: an entry delivered again
    /// (after a restart) with a seq at or below it is skipped.
    #[serde(default)]
    pub last_inbox_seq: u64,
}

/// What PROTOCOL §8 sets on a contact (one customer, every business
/// number), kept in [`crate::tables::CONTACTS`] under its `wa_id`. A contact
/// without a record has every field unset and is not opted out; its name
/// then is the profile name of its latest conversation (the caller
/// composes that). Written only by a `PATCH`, an opt-out or opt-in word
/// and routing (never by an ordinary message), always with a
/// `contact_updated` event in the same batch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactRecord {
    pub wa_id: String,
    /// Set by a user; `None`: the customer's WhatsApp profile name shows.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub dealer: Option<String>,
    /// The agent (by id) who owns the contact (PROTOCOL §7 "Dedicated owner").
    #[serde(default)]
    pub owner: Option<String>,
    /// Free-form string, number or bool values, by key.
    #[serde(default)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// The customer wrote an opt-out word (broadcasts skip them).
    #[serde(default)]
    pub opted_out: bool,
    /// When the record was last written.
    #[serde(default)]
    pub updated_at: UnixMs,
}

impl ContactRecord {
    /// A contact with nothing set.
    pub fn new(wa_id: impl Into<String>) -> Self {
        ContactRecord { wa_id: wa_id.into(), ..ContactRecord::default() }
    }
}

/// An agent's record. Its latest event `seq` is not kept here (it was until
/// format v6, rewritten with every event): it is the last key of its
/// events ([`crate::Reader::agent_last_seq`]); the writer keeps it in memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub status: AgentStatus,
    /// The day (days since the epoch, UTC) of `frt_breaches`.
    #[serde(default)]
    pub frt_breaches_day: i64,
    /// First-response breaches on the agent's conversations that day,
    /// closed ones included (a start reads them here). Counted by the agent
    /// actor and stored as it says (`Op::PutFirstResponseBreaches`).
    #[serde(default)]
    pub frt_breaches: u32,
    /// The co-pilot's agent assist as the agent (or a manager) last set it
    /// (`Op::PutAgentCopilot`); `None`: never set, the configuration's
    /// `copilot` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copilot: Option<bool>,
}

impl Default for AgentRecord {
    fn default() -> Self {
        AgentRecord { status: AgentStatus::Offline, frt_breaches_day: 0, frt_breaches: 0, copilot: None }
    }
}

/// Where an outbound message lives, for routing its statuses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageLocation {
    pub conversation_id: String,
    pub thread_key: String,
    pub index: u32,
}

/// An outbound send recorded before Meta is called (contract: a message
/// Meta accepted is never missing from history). Removed when Meta's answer
/// is recorded; one left behind by a crash (or a send whose answer was lost)
/// is shown in history with status `unknown` and waits for a status webhook
/// of Meta's to tell its wamid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendIntent {
    /// The message's id until Meta's wamid is known (`local.…`).
    pub local_id: String,
    pub conversation_id: String,
    /// `text` or `template`.
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    /// The template as shown to clients (`{name, language, params}`).
    #[serde(default)]
    pub template: Option<serde_json::Value>,
    /// The body sent to Meta, as JSON (for operators; never re-sent).
    #[serde(default)]
    pub request: String,
    /// The agent (or integration) that asked for the send.
    #[serde(default)]
    pub sent_by: String,
    pub created_at: UnixMs,
    /// Its index in the conversation once it is shown there as `unknown`;
    /// `None` while the send is in flight.
    #[serde(default)]
    pub unknown_at: Option<u32>,
}

/// The unresolved sends to one customer (a thread), oldest first, and the
/// wamids of statuses that arrived for no known message while one of them
/// was still in flight (they may be its wamid; see [`SendIntents::settle`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SendIntents {
    #[serde(default)]
    pub intents: Vec<SendIntent>,
    #[serde(default)]
    pub unmatched_wamids: Vec<String>,
}

impl SendIntents {
    pub fn is_empty(&self) -> bool {
        self.intents.is_empty()
    }

    /// Whether a send to this customer is waiting for Meta's answer.
    pub fn in_flight(&self) -> bool {
        self.intents.iter().any(|intent| intent.unknown_at.is_none())
    }

    /// Meta answered: the intent is resolved (its message, if accepted, is
    /// stored with `wamid`, which is then no longer a candidate).
    pub fn resolve(&mut self, local_id: &str, wamid: Option<&str>) {
        self.intents.retain(|intent| intent.local_id != local_id);
        if let Some(wamid) = wamid {
            self.unmatched_wamids.retain(|unmatched| unmatched != wamid);
        }
    }

    /// The intent is now in its conversation's history at `index`, `unknown`.
    pub fn mark_unknown(&mut self, local_id: &str, index: u32) {
        if let Some(intent) = self.intents.iter_mut().find(|intent| intent.local_id == local_id) {
            intent.unknown_at = Some(index);
        }
    }

    /// A status arrived for `wamid`, which no stored message has. When no
    /// send to this customer is in flight, it can only be one of the unknown
    /// ones: the oldest unknown intent takes it (removed here; its location
    /// returned). When one is in flight the wamid may be that send's, whose
    /// answer is on its way: it is noted and matched by [`Self::settle`] once
    /// nothing is in flight. Otherwise (no intents) it is no one's here.
    pub fn claim(&mut self, wamid: &str, thread_key: &str) -> Option<MessageLocation> {
        if self.in_flight() {
            if !self.unmatched_wamids.iter().any(|unmatched| unmatched == wamid) {
                self.unmatched_wamids.push(wamid.to_owned());
            }
            return None;
        }
        self.take_oldest_unknown(thread_key)
    }

    /// Once nothing is in flight, pairs the noted wamids with the unknown
    /// intents, oldest with oldest; forgets noted wamids nothing can take.
    pub fn settle(&mut self, thread_key: &str) -> Vec<(String, MessageLocation)> {
        if self.in_flight() {
            return Vec::new();
        }
        let mut matched = Vec::new();
        while !self.unmatched_wamids.is_empty() {
            let Some(location) = self.take_oldest_unknown(thread_key) else { break };
            matched.push((self.unmatched_wamids.remove(0), location));
        }
        if self.intents.is_empty() {
            self.unmatched_wamids.clear();
        }
        matched
    }

    fn take_oldest_unknown(&mut self, thread_key: &str) -> Option<MessageLocation> {
        let position = self
            .intents
            .iter()
            .enumerate()
            .filter(|(_, intent)| intent.unknown_at.is_some())
            .min_by_key(|(position, intent)| (intent.created_at, *position))
            .map(|(position, _)| position)?;
        let intent = self.intents.remove(position);
        Some(MessageLocation {
            conversation_id: intent.conversation_id,
            thread_key: thread_key.to_owned(),
            index: intent.unknown_at.expect("filtered above"),
        })
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|error| StorageError::Codec(error.to_string()))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|error| StorageError::Codec(error.to_string()))
}

/// Inbox items are JSON: they carry Meta's objects, whose unknown fields are
/// arbitrary JSON and must come back exactly.
pub(crate) fn encode_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|error| StorageError::Codec(error.to_string()))
}

pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|error| StorageError::Codec(error.to_string()))
}

/// What a start needs of one open conversation, kept as the value of the open
/// index so that a start reads one small table in key order instead of every
/// open conversation's whole record. Short field names: a million of these
/// are read at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenEntry {
    #[serde(rename = "k")]
    pub thread_key: String,
    #[serde(rename = "s")]
    pub status: ConversationStatus,
    /// The holding agent; only when assigned.
    #[serde(rename = "a", default)]
    pub agent: Option<String>,
    #[serde(rename = "t", default)]
    pub team: Option<String>,
    /// When it (last) started waiting for an agent: `queued_at`, else `opened_at`.
    #[serde(rename = "q")]
    pub queued_at: UnixMs,
    #[serde(rename = "w", default)]
    pub service_until: Option<UnixMs>,
    #[serde(rename = "f", default)]
    pub free_entry_until: Option<UnixMs>,
    #[serde(rename = "c1", default)]
    pub frt: Option<SlaClock>,
    #[serde(rename = "c2", default)]
    pub nrt: Option<SlaClock>,
    #[serde(rename = "c3", default)]
    pub trt: Option<SlaClock>,
    #[serde(rename = "r", default)]
    pub reassign_at: Option<UnixMs>,
    /// First-response breaches: (agent, when), for the agents' daily counts;
    /// the record's `clocks.frt_breaches`, as its decisions kept them.
    #[serde(rename = "b", default)]
    pub frt_breaches: Vec<(String, UnixMs)>,
    /// Why it waits in its team's queue; only while queued.
    #[serde(rename = "rt", default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
    /// The co-pilot's deadline (`clocks.copilot_at`).
    #[serde(rename = "ca", default, skip_serializing_if = "Option::is_none")]
    pub copilot_at: Option<UnixMs>,
}

impl OpenEntry {
    /// The record's fields a start needs, copied: what they mean (which
    /// breaches count, who holds the conversation) is decided in `actors`.
    pub fn of(record: &ConversationRecord) -> OpenEntry {
        let conversation = &record.conversation;
        let clocks = &record.clocks;
        OpenEntry {
            thread_key: record.thread_key.clone(),
            status: conversation.status,
            agent: match conversation.status {
                ConversationStatus::Assigned => conversation.agent.clone(),
                _ => None,
            },
            team: conversation.team.clone(),
            queued_at: record.queued_at.unwrap_or(conversation.opened_at),
            service_until: conversation.service_until,
            free_entry_until: conversation.free_entry_until,
            frt: clocks.frt.clone(),
            nrt: clocks.nrt.clone(),
            trt: clocks.trt.clone(),
            reassign_at: clocks.reassign_at,
            frt_breaches: clocks.frt_breaches.clone(),
            route: match conversation.status {
                ConversationStatus::Queued => record.route.clone(),
                _ => None,
            },
            copilot_at: clocks.copilot_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(local_id: &str, created_at: UnixMs, unknown_at: Option<u32>) -> SendIntent {
        SendIntent {
            local_id: local_id.into(),
            conversation_id: "cv1".into(),
            kind: "text".into(),
            text: Some(local_id.into()),
            template: None,
            request: String::new(),
            sent_by: "a1".into(),
            created_at,
            unknown_at,
        }
    }

    fn at(index: u32) -> Option<MessageLocation> {
        Some(MessageLocation { conversation_id: "cv1".into(), thread_key: "t".into(), index })
    }

    #[test]
    fn the_oldest_unknown_intent_takes_an_unknown_wamid() {
        let mut intents =
            SendIntents { intents: vec![intent("b", 20, Some(5)), intent("a", 10, Some(7))], ..Default::default() };
        assert_eq!(intents.claim("w1", "t"), at(7));
        assert_eq!(intents.claim("w2", "t"), at(5));
        assert_eq!(intents.claim("w3", "t"), None);
        assert!(intents.is_empty());
    }

    #[test]
    fn a_wamid_waits_while_a_send_is_in_flight() {
        let mut intents =
            SendIntents { intents: vec![intent("a", 10, Some(3)), intent("b", 20, None)], ..Default::default() };
        assert_eq!(intents.claim("w1", "t"), None, "it may be b's wamid");
        assert_eq!(intents.claim("w1", "t"), None);
        assert_eq!(intents.unmatched_wamids, vec!["w1".to_owned()]);
        assert!(intents.settle("t").is_empty(), "b is still in flight");
        // b's answer was w1 after all: a stays unknown.
        intents.resolve("b", Some("w1"));
        assert!(intents.settle("t").is_empty());
        assert_eq!(intents.intents.len(), 1);
        // Another wamid while b2 is in flight, then b2 fails at Meta: the wamid was a's.
        intents.intents.push(intent("b2", 30, None));
        assert_eq!(intents.claim("w2", "t"), None);
        intents.resolve("b2", None);
        assert_eq!(intents.settle("t"), vec![("w2".to_owned(), at(3).unwrap())]);
        assert!(intents.is_empty() && intents.unmatched_wamids.is_empty());
    }

    #[test]
    fn a_crash_makes_noted_wamids_match_oldest_first() {
        let mut intents =
            SendIntents { intents: vec![intent("a", 10, None), intent("b", 20, None)], ..Default::default() };
        assert_eq!(intents.claim("w1", "t"), None);
        assert_eq!(intents.claim("w2", "t"), None);
        intents.mark_unknown("a", 4);
        assert!(intents.settle("t").is_empty(), "b is still in flight");
        intents.mark_unknown("b", 6);
        assert_eq!(intents.settle("t"), vec![("w1".to_owned(), at(4).unwrap()), ("w2".to_owned(), at(6).unwrap())]);
        assert!(intents.is_empty());
    }

    fn record() -> ConversationRecord {
        use protocol::model::Source;
        ConversationRecord {
            conversation: Conversation {
                id: "cv000000000001".into(),
                contact: Contact { wa_id: "15550001".into(), name: None },
                phone_number_id: "100".into(),
                status: ConversationStatus::Assigned,
                team: Some("sales".into()),
                agent: Some("a1".into()),
                source: Source::organic(),
                service_until: Some(2_000),
                free_entry_until: None,
                fields: Default::default(),
                opened_at: 1_000,
                closed_at: None,
                messages: None,
            },
            thread_key: "100:15550001".into(),
            message_count: 3,
            last_customer_at: Some(1_000),
            queued_at: None,
            assigned_at: Some(1_500),
            first_response_at: None,
            clocks: ConversationClocks { reassign_at: Some(9_000), ..Default::default() },
            route: None,
            copilot: None,
            handoff: None,
        }
    }

    #[test]
    fn a_v5_record_with_history_and_sla_events_still_reads() {
        let mut old = serde_json::to_value(record()).unwrap();
        old["clocks"]["history"] = serde_json::json!([{"at": 1_500, "agent": "a1", "reason": "assigned"}]);
        old["clocks"]["sla_events"] = serde_json::json!([
            {"kind": "first_response", "state": "breached", "at": 1_800, "agent": "a1", "team": "sales"}
        ]);
        let read: ConversationRecord = decode(&encode(&old).unwrap()).unwrap();
        assert_eq!(read, record(), "the fields the event log now describes are ignored");
    }

    #[test]
    fn a_v5_agent_record_with_last_seq_still_reads() {
        let old = serde_json::json!({"status": "online", "last_seq": 42, "frt_breaches_day": 7, "frt_breaches": 2});
        let read: AgentRecord = decode(&encode(&old).unwrap()).unwrap();
        assert_eq!(
            read,
            AgentRecord { status: AgentStatus::Online, frt_breaches_day: 7, frt_breaches: 2, copilot: None }
        );
    }

    #[test]
    fn a_record_without_breaches_writes_no_breach_field() {
        let without = encode(&record()).unwrap();
        let mut with = record();
        with.clocks.frt_breaches.push(("a1".into(), 1_800));
        let bytes = encode(&with).unwrap();
        assert!(bytes.len() > without.len());
        assert_eq!(decode::<ConversationRecord>(&bytes).unwrap(), with);
        let needle = b"frt_breaches";
        assert!(!without.windows(needle.len()).any(|window| window == needle));
        assert_eq!(OpenEntry::of(&with).frt_breaches, with.clocks.frt_breaches, "the open index copies them");
    }

    #[test]
    fn old_records_read_without_the_new_fields() {
        #[derive(Serialize)]
        struct Old {
            local_id: &'static str,
            conversation_id: &'static str,
            kind: &'static str,
            created_at: UnixMs,
        }
        let bytes = encode(&Old { local_id: "l", conversation_id: "cv1", kind: "text", created_at: 1 }).unwrap();
        let read: SendIntent = decode(&bytes).unwrap();
        assert_eq!(read.unknown_at, None);
        let read: SendIntents = decode(&encode(&serde_json::json!({})).unwrap()).unwrap();
        assert!(read.is_empty());
    }
}
