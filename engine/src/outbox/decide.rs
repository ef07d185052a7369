//! The outbox's decisions, pure: which events of the log become which
//! deliveries, what a delivery's body is, which deliveries are due (in order
//! per conversation, within each target's bound), and what an attempt's
//! outcome makes of a delivery. The task in `super` loads, decides,
//! commits and acts; these functions are unit-tested without a runtime.
//!
//! A delivery is a target (a `[[connectors]]` id), a key for ordering (the
//! conversation), the event's seq (order within the key), a payload and its
//! attempt state. Nothing here knows a target's kind: a webhook or a named
//! CRM receives the same records.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use protocol::events::{Event, EventBody};
use protocol::model::Conversation;
use protocol::time::{UnixMs, format_rfc3339};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::backoff::Schedule;

pub const CONVERSATION_CLOSED: &str = "conversation.closed";
pub const CONVERSATION_FIELDS_CHANGED: &str = "conversation.fields_changed";
pub const CONVERSATION_ASSIGNED: &str = "conversation.assigned";
/// Every event type a connector may subscribe to (PROTOCOL §10).
pub const EVENT_TYPES: [&str; 3] = [CONVERSATION_CLOSED, CONVERSATION_FIELDS_CHANGED, CONVERSATION_ASSIGNED];

/// The connector event type an event of the log is, if any.
pub fn event_type(body: &EventBody) -> Option<&'static str> {
    match body {
        EventBody::Closed { .. } => Some(CONVERSATION_CLOSED),
        EventBody::FieldsChanged { .. } => Some(CONVERSATION_FIELDS_CHANGED),
        EventBody::Assigned { .. } => Some(CONVERSATION_ASSIGNED),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its turn or its next attempt, or being attempted.
    Pending,
    /// Given up after `max_attempts`; kept until retried.
    Dead,
}

/// One delivery of one event to one target, as stored (MessagePack, named
/// fields: fields are added with a default) and listed by the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// `{target}-{seq}`: the `webhook-id`, the same on every attempt.
    pub id: String,
    /// The connector's id.
    pub target: String,
    /// Deliveries of one key go out in `seq` order, one at a time.
    pub key: String,
    /// The event's seq in the log.
    pub seq: u64,
    pub event_type: String,
    pub conversation_id: Option<String>,
    pub contact: Option<String>,
    pub phone_number_id: Option<String>,
    /// When the outbox made it (the engine's clock).
    pub created_at: UnixMs,
    /// The body, JSON, made once: every attempt sends the same bytes.
    pub payload: String,
    pub state: DeliveryState,
    /// Attempts made (since the last retry by hand).
    pub attempts: u32,
    /// Not attempted before this time.
    pub next_attempt_at: UnixMs,
    #[serde(default)]
    pub last_attempt_at: Option<UnixMs>,
    /// What the last failed attempt got (`HTTP 500`, `timed out`…).
    #[serde(default)]
    pub last_error: Option<String>,
}

pub fn delivery_id(target: &str, seq: u64) -> String {
    format!("{target}-{seq}")
}

/// A target and the event types it takes.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub target: String,
    pub events: Vec<String>,
}

/// The deliveries the event at `seq` makes: one per target subscribed to
/// its type, each with `body` (made once for all of them).
pub fn deliveries_of(
    seq: u64,
    event: &Event,
    subscriptions: &[Subscription],
    now: UnixMs,
    body: impl FnOnce(&'static str) -> String,
) -> Vec<Delivery> {
    let Some(kind) = event_type(&event.body) else { return Vec::new() };
    let targets: Vec<&Subscription> =
        subscriptions.iter().filter(|subscription| subscription.events.iter().any(|wanted| wanted == kind)).collect();
    if targets.is_empty() {
        return Vec::new();
    }
    let payload = body(kind);
    targets
        .into_iter()
        .map(|subscription| new_delivery(&subscription.target, seq, event, kind, payload.clone(), now))
        .collect()
}

/// A new pending delivery of the event at `seq` to `target`, keyed by its
/// conversation (else its contact).
pub fn new_delivery(target: &str, seq: u64, event: &Event, event_type: &str, payload: String, now: UnixMs) -> Delivery {
    Delivery {
        id: delivery_id(target, seq),
        target: target.to_owned(),
        key: event.conversation_id.clone().or_else(|| event.contact.clone()).unwrap_or_default(),
        seq,
        event_type: event_type.to_owned(),
        conversation_id: event.conversation_id.clone(),
        contact: event.contact.clone(),
        phone_number_id: event.phone_number_id.clone(),
        created_at: now,
        payload,
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_at: now,
        last_attempt_at: None,
        last_error: None,
    }
}

/// The body of PROTOCOL §10: `{type, timestamp, data: {conversation,
/// contact, fields, agent, team, source}}`. `conversation` is the
/// conversation as the outbox read it when it took the event in (without
/// messages); `agent` and `team` of an assignment are the event's;
/// `fields` of a close are those it closed with. A fields change adds
/// `changes`, a close `outcome`.
pub fn body(kind: &str, event: &Event, conversation: Option<&Conversation>, contact: Option<Value>) -> Value {
    let conversation_value = conversation.map(|conversation| {
        let mut conversation = conversation.clone();
        conversation.messages = None;
        serde_json::to_value(conversation).unwrap_or(Value::Null)
    });
    let mut fields = conversation.map(|conversation| conversation.fields.clone()).unwrap_or_default();
    let mut agent = conversation.and_then(|conversation| conversation.agent.clone());
    let mut team = conversation.and_then(|conversation| conversation.team.clone());
    let source = conversation.map(|conversation| json!(conversation.source)).unwrap_or(Value::Null);
    let contact = contact.unwrap_or_else(|| match &event.contact {
        Some(wa_id) => json!({ "wa_id": wa_id }),
        None => Value::Null,
    });
    let mut data = Map::new();
    match &event.body {
        EventBody::Assigned { agent_id, team_id, .. } => {
            agent = Some(agent_id.clone());
            if team_id.is_some() {
                team = team_id.clone();
            }
        }
        EventBody::FieldsChanged { changes } => {
            data.insert("changes".to_owned(), json!(changes));
        }
        EventBody::Closed { fields: closed_with, outcome } => {
            fields = closed_with.clone();
            data.insert("outcome".to_owned(), json!(outcome));
        }
        _ => {}
    }
    data.insert("conversation".to_owned(), conversation_value.unwrap_or(Value::Null));
    data.insert("contact".to_owned(), contact);
    data.insert("fields".to_owned(), Value::Object(fields));
    data.insert("agent".to_owned(), json!(agent));
    data.insert("team".to_owned(), json!(team));
    data.insert("source".to_owned(), source);
    json!({ "type": kind, "timestamp": format_rfc3339(event.at), "data": data })
}

/// What one attempt got.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptOutcome {
    /// A 2xx.
    Delivered { status: u16 },
    /// Anything else: a status, a timeout, a connection closed. A
    /// `Retry-After` the target gave is honoured.
    Failed { error: String, retry_after: Option<Duration> },
}

/// What becomes of a delivery after an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    Delivered,
    Retry { next_attempt_at: UnixMs },
    Dead,
}

/// The longest `Retry-After` honoured (a day): a receiver cannot park a
/// delivery for longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// When to try again after `attempts` failed attempts: a full jitter under
/// the schedule's ceiling (`fraction` in `[0, 1)`), never at once (1 ms at
/// least, so a clock that does not move retries nothing), and not before
/// the target's `Retry-After`.
pub fn next_attempt_at(
    attempts: u32,
    retry_after: Option<Duration>,
    now: UnixMs,
    schedule: &Schedule,
    fraction: f64,
) -> UnixMs {
    let mut wait = schedule.full_jitter(attempts, fraction).max(Duration::from_millis(1));
    if let Some(after) = retry_after {
        wait = wait.max(after.min(MAX_RETRY_AFTER));
    }
    now.saturating_add(wait.as_millis().min(i64::MAX as u128) as i64)
}

/// The transition after an attempt (the `attempts`-th, counting it).
pub fn after_attempt(
    attempts: u32,
    outcome: &AttemptOutcome,
    max_attempts: u32,
    now: UnixMs,
    schedule: &Schedule,
    fraction: f64,
) -> Transition {
    match outcome {
        AttemptOutcome::Delivered { .. } => Transition::Delivered,
        AttemptOutcome::Failed { .. } if attempts >= max_attempts => Transition::Dead,
        AttemptOutcome::Failed { retry_after, .. } => {
            Transition::Retry { next_attempt_at: next_attempt_at(attempts, *retry_after, now, schedule, fraction) }
        }
    }
}

/// The deliveries held in memory: the pending ones by target and key in
/// seq order, the dead ones by id, the keys held by an attempt, and per
/// target the ready keys in the order they fall due.
///
/// A key is held from the start of an attempt until its outcome is
/// committed ([`Book::finished`]); the attempt counts against its target's
/// `max_in_flight` only until it has its answer ([`Book::ended`]), so the
/// next attempts start while the outcome is being committed. Starting
/// the due attempts reads only the ready index, never the whole backlog.
#[derive(Debug, Default)]
pub struct Book {
    pending: BTreeMap<(String, String), BTreeMap<u64, Delivery>>,
    /// Pending delivery id → its target, key and seq.
    index: HashMap<String, (String, String, u64)>,
    dead: BTreeMap<String, Delivery>,
    /// Held keys (target, key): `true` while the attempt waits for its answer.
    held: HashMap<(String, String), bool>,
    /// Attempts waiting for their answer, per target.
    on_wire: HashMap<String, usize>,
    /// Per target, each pending key that is not held, by its first
    /// delivery's (next attempt, seq).
    ready: HashMap<String, BTreeSet<(UnixMs, u64, String)>>,
    /// Each key's entry in `ready`.
    ready_entry: HashMap<(String, String), (UnixMs, u64)>,
}

impl Book {
    /// Puts a key's entry in `ready` right after its queue or hold changed.
    fn refresh(&mut self, queue_key: &(String, String)) {
        if let Some((at, seq)) = self.ready_entry.remove(queue_key)
            && let Some(ready) = self.ready.get_mut(&queue_key.0)
        {
            ready.remove(&(at, seq, queue_key.1.clone()));
            if ready.is_empty() {
                self.ready.remove(&queue_key.0);
            }
        }
        if self.held.contains_key(queue_key) {
            return;
        }
        let Some(first) = self.pending.get(queue_key).and_then(|queue| queue.values().next()) else { return };
        let entry = (first.next_attempt_at, first.seq);
        self.ready.entry(queue_key.0.clone()).or_default().insert((entry.0, entry.1, queue_key.1.clone()));
        self.ready_entry.insert(queue_key.clone(), entry);
    }

    /// Adds (or replaces) a stored or new delivery.
    pub fn insert(&mut self, delivery: Delivery) {
        self.forget(&delivery.id);
        match delivery.state {
            DeliveryState::Dead => {
                self.dead.insert(delivery.id.clone(), delivery);
            }
            DeliveryState::Pending => {
                let queue_key = (delivery.target.clone(), delivery.key.clone());
                self.index.insert(delivery.id.clone(), (queue_key.0.clone(), queue_key.1.clone(), delivery.seq));
                self.pending.entry(queue_key.clone()).or_default().insert(delivery.seq, delivery);
                self.refresh(&queue_key);
            }
        }
    }

    /// Takes a delivery out (delivered), wherever it is.
    pub fn forget(&mut self, id: &str) -> Option<Delivery> {
        if let Some(dead) = self.dead.remove(id) {
            return Some(dead);
        }
        let (target, key, seq) = self.index.remove(id)?;
        let queue_key = (target, key);
        let queue = self.pending.get_mut(&queue_key)?;
        let removed = queue.remove(&seq);
        if queue.is_empty() {
            self.pending.remove(&queue_key);
        }
        self.refresh(&queue_key);
        removed
    }

    pub fn get(&self, id: &str) -> Option<&Delivery> {
        if let Some(dead) = self.dead.get(id) {
            return Some(dead);
        }
        let (target, key, seq) = self.index.get(id)?;
        self.pending.get(&(target.clone(), key.clone()))?.get(seq)
    }

    /// The deliveries due at `now`: of each key not held, its first pending
    /// delivery when its time has come, earliest due first, no more per
    /// target than `limit(target)` waiting for an answer (`None`: the
    /// target is not configured, nothing goes to it). Each holds its key
    /// until [`Book::finished`].
    pub fn take_due(&mut self, now: UnixMs, limit: impl Fn(&str) -> Option<usize>) -> Vec<Delivery> {
        let mut taken_keys = Vec::new();
        for (target, ready) in &self.ready {
            let Some(bound) = limit(target) else { continue };
            let room = bound.saturating_sub(self.on_wire.get(target).copied().unwrap_or(0));
            for (at, _, key) in ready.iter().take(room) {
                if *at > now {
                    break;
                }
                taken_keys.push((target.clone(), key.clone()));
            }
        }
        let mut taken = Vec::with_capacity(taken_keys.len());
        for queue_key in taken_keys {
            let Some(first) = self.pending.get(&queue_key).and_then(|queue| queue.values().next()) else { continue };
            taken.push(first.clone());
            *self.on_wire.entry(queue_key.0.clone()).or_default() += 1;
            self.held.insert(queue_key.clone(), true);
            self.refresh(&queue_key);
        }
        taken.sort_by_key(|delivery| delivery.seq);
        taken
    }

    /// The attempt of `delivery` has its answer: its target may start
    /// another while the outcome is committed. The key stays held.
    pub fn ended(&mut self, delivery: &Delivery) {
        if let Some(on_wire) = self.held.get_mut(&(delivery.target.clone(), delivery.key.clone()))
            && std::mem::replace(on_wire, false)
            && let Some(count) = self.on_wire.get_mut(&delivery.target)
        {
            *count = count.saturating_sub(1);
        }
    }

    /// The outcome of `delivery`'s attempt is committed (or given up): its
    /// key's next delivery may go.
    pub fn finished(&mut self, delivery: &Delivery) {
        self.ended(delivery);
        let queue_key = (delivery.target.clone(), delivery.key.clone());
        if self.held.remove(&queue_key).is_some() {
            self.refresh(&queue_key);
        }
    }

    /// Attempts waiting for their answer.
    pub fn in_flight(&self) -> usize {
        self.on_wire.values().sum()
    }

    /// The earliest time a delivery not blocked by one in flight is due.
    pub fn next_due(&self) -> Option<UnixMs> {
        self.ready.values().filter_map(|ready| ready.first().map(|(at, _, _)| *at)).min()
    }

    pub fn pending(&self) -> impl Iterator<Item = &Delivery> {
        self.pending.values().flat_map(|queue| queue.values())
    }

    pub fn dead(&self) -> impl Iterator<Item = &Delivery> {
        self.dead.values()
    }

    /// Per target: pending deliveries, the oldest one's creation, dead ones.
    pub fn gauges(&self) -> BTreeMap<String, Gauges> {
        let mut gauges: BTreeMap<String, Gauges> = BTreeMap::new();
        for delivery in self.pending() {
            let entry = gauges.entry(delivery.target.clone()).or_default();
            entry.backlog += 1;
            entry.oldest_created_at =
                Some(entry.oldest_created_at.map_or(delivery.created_at, |oldest| oldest.min(delivery.created_at)));
        }
        for delivery in self.dead() {
            gauges.entry(delivery.target.clone()).or_default().dead += 1;
        }
        gauges
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gauges {
    pub backlog: u64,
    pub oldest_created_at: Option<UnixMs>,
    pub dead: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::events::{Actor, FieldChange};
    use protocol::model::{Contact, ConversationStatus, Source};

    fn event(conversation: &str, body: EventBody) -> Event {
        Event {
            at: 1_700_000_000_000,
            conversation_id: Some(conversation.to_owned()),
            contact: Some("919800000001".to_owned()),
            phone_number_id: Some("100".to_owned()),
            actor: Actor::System,
            body,
        }
    }

    fn assigned(conversation: &str) -> Event {
        event(conversation, EventBody::Assigned { agent_id: "a1".into(), team_id: Some("sales".into()), route: None })
    }

    fn subscriptions() -> Vec<Subscription> {
        vec![
            Subscription {
                target: "crm".into(),
                events: vec![CONVERSATION_CLOSED.into(), CONVERSATION_ASSIGNED.into()],
            },
            Subscription { target: "sheet".into(), events: vec![CONVERSATION_CLOSED.into()] },
        ]
    }

    fn delivery(target: &str, key: &str, seq: u64, next_attempt_at: UnixMs) -> Delivery {
        let mut made = deliveries_of(
            seq,
            &assigned(key),
            &[Subscription { target: target.into(), events: vec![CONVERSATION_ASSIGNED.into()] }],
            0,
            |_| "{}".into(),
        );
        let mut delivery = made.remove(0);
        delivery.next_attempt_at = next_attempt_at;
        delivery
    }

    #[test]
    fn events_become_deliveries_for_the_targets_subscribed_to_their_type() {
        let closed = event("cv1", EventBody::Closed { fields: Map::new(), outcome: None });
        let made = deliveries_of(7, &closed, &subscriptions(), 5, |kind| kind.to_owned());
        let ids: Vec<&str> = made.iter().map(|delivery| delivery.id.as_str()).collect();
        assert_eq!(ids, ["crm-7", "sheet-7"]);
        assert!(made.iter().all(|delivery| delivery.key == "cv1" && delivery.payload == CONVERSATION_CLOSED));
        assert!(made.iter().all(|delivery| delivery.state == DeliveryState::Pending && delivery.next_attempt_at == 5));

        let only_crm = deliveries_of(8, &assigned("cv1"), &subscriptions(), 5, |_| String::new());
        assert_eq!(only_crm.len(), 1);
        assert_eq!(only_crm[0].target, "crm");

        let fields = event("cv1", EventBody::FieldsChanged { changes: vec![] });
        assert!(deliveries_of(9, &fields, &subscriptions(), 5, |_| unreachable!("no body for no target")).is_empty());
        let message = event("cv1", EventBody::MessageIn { wamid: "w".into(), message_type: "text".into(), text: None });
        assert!(deliveries_of(10, &message, &subscriptions(), 5, |_| String::new()).is_empty());
        let outcome = event(
            "cv1",
            EventBody::OutboxDelivered {
                delivery_id: "crm-7".into(),
                connector: "crm".into(),
                event_type: CONVERSATION_CLOSED.into(),
                attempts: 1,
            },
        );
        assert!(deliveries_of(11, &outcome, &subscriptions(), 5, |_| String::new()).is_empty(), "no loop");
    }

    fn conversation() -> Conversation {
        Conversation {
            id: "cv1".into(),
            contact: Contact { wa_id: "919800000001".into(), name: Some("Ravi".into()) },
            phone_number_id: "100".into(),
            status: ConversationStatus::Assigned,
            team: Some("support".into()),
            agent: Some("a2".into()),
            source: Source::organic(),
            service_until: None,
            free_entry_until: None,
            fields: Map::from_iter([("outcome".to_owned(), json!("follow_up"))]),
            opened_at: 1_700_000_000_000,
            closed_at: None,
            messages: Some(vec![]),
        }
    }

    #[test]
    fn the_body_has_the_contracts_shape() {
        let body = body(CONVERSATION_ASSIGNED, &assigned("cv1"), Some(&conversation()), None);
        assert_eq!(body["type"], CONVERSATION_ASSIGNED);
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20.000Z");
        let data = &body["data"];
        assert_eq!(data["conversation"]["id"], "cv1");
        assert!(data["conversation"].get("messages").is_none(), "no messages: {data}");
        assert_eq!(data["agent"], "a1", "the assignment's agent, not the record's");
        assert_eq!(data["team"], "sales");
        assert_eq!(data["contact"], json!({"wa_id": "919800000001"}));
        assert_eq!(data["fields"], json!({"outcome": "follow_up"}));
        assert_eq!(data["source"], json!({"kind": "organic"}));

        let closed_with = Map::from_iter([("outcome".to_owned(), json!("closed_won"))]);
        let closed = event("cv1", EventBody::Closed { fields: closed_with, outcome: Some("closed_won".into()) });
        let contact = json!({"wa_id": "919800000001", "city": "Pune"});
        let body = super::body(CONVERSATION_CLOSED, &closed, Some(&conversation()), Some(contact.clone()));
        assert_eq!(body["data"]["fields"], json!({"outcome": "closed_won"}), "the fields it closed with");
        assert_eq!(body["data"]["outcome"], "closed_won");
        assert_eq!(body["data"]["agent"], "a2");
        assert_eq!(body["data"]["contact"], contact);

        let change = FieldChange { key: "outcome".into(), old: Value::Null, new: json!("follow_up") };
        let changed = event("cv1", EventBody::FieldsChanged { changes: vec![change] });
        let body = super::body(CONVERSATION_FIELDS_CHANGED, &changed, None, None);
        assert_eq!(body["data"]["changes"][0]["key"], "outcome");
        assert_eq!(body["data"]["conversation"], Value::Null, "a conversation that cannot be read is null");
    }

    fn schedule() -> Schedule {
        Schedule::new(Duration::from_millis(1000), Duration::from_millis(60_000))
    }

    #[test]
    fn failures_are_retried_with_jittered_exponential_backoff_until_dead() {
        let failed = AttemptOutcome::Failed { error: "HTTP 500".into(), retry_after: None };
        let at = |attempts, fraction| after_attempt(attempts, &failed, 5, 10_000, &schedule(), fraction);
        assert_eq!(at(1, 0.0), Transition::Retry { next_attempt_at: 10_001 }, "never at once");
        assert_eq!(at(1, 0.5), Transition::Retry { next_attempt_at: 10_500 });
        assert_eq!(at(3, 0.5), Transition::Retry { next_attempt_at: 12_000 });
        assert_eq!(at(4, 0.75), Transition::Retry { next_attempt_at: 16_000 });
        assert_eq!(at(5, 0.5), Transition::Dead, "the fifth of five is the last");
        assert_eq!(at(9, 0.5), Transition::Dead);
        let delivered = AttemptOutcome::Delivered { status: 204 };
        assert_eq!(after_attempt(5, &delivered, 5, 0, &schedule(), 0.5), Transition::Delivered);
    }

    #[test]
    fn retry_after_is_a_floor_and_is_bounded() {
        let throttled = |seconds| AttemptOutcome::Failed {
            error: "HTTP 429".into(),
            retry_after: Some(Duration::from_secs(seconds)),
        };
        let next = |seconds, fraction| after_attempt(1, &throttled(seconds), 12, 0, &schedule(), fraction);
        assert_eq!(next(30, 0.5), Transition::Retry { next_attempt_at: 30_000 }, "later than the backoff");
        assert_eq!(next(0, 0.5), Transition::Retry { next_attempt_at: 500 }, "the backoff when it is later");
        assert_eq!(
            next(10 * 24 * 3600, 0.5),
            Transition::Retry { next_attempt_at: MAX_RETRY_AFTER.as_millis() as i64 },
            "a day at most"
        );
    }

    #[test]
    fn one_conversation_goes_in_order_one_at_a_time() {
        let mut book = Book::default();
        for (seq, at) in [(3, 0), (1, 50), (2, 0)] {
            book.insert(delivery("crm", "cv1", seq, at));
        }
        book.insert(delivery("crm", "cv2", 4, 0));
        let limit = |_: &str| Some(10);
        assert!(book.take_due(10, limit).iter().map(|d| d.seq).eq([4]), "cv1's first (seq 1) is not due yet");
        let due = book.take_due(50, limit);
        assert_eq!(due.iter().map(|d| d.seq).collect::<Vec<_>>(), [1]);
        assert!(book.take_due(1_000, limit).is_empty(), "both keys have an attempt in flight");
        assert_eq!(book.next_due(), None);

        // seq 1 delivered: seq 2 is next, then 3.
        book.finished(&due[0]);
        book.forget(&due[0].id);
        let due = book.take_due(1_000, limit);
        assert_eq!(due.iter().map(|d| d.seq).collect::<Vec<_>>(), [2]);
        // seq 2 dead: it no longer holds seq 3 back.
        book.finished(&due[0]);
        let mut dead = due[0].clone();
        dead.state = DeliveryState::Dead;
        book.insert(dead);
        assert_eq!(book.take_due(1_000, limit).iter().map(|d| d.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(book.dead().count(), 1);
        assert_eq!(book.get("crm-2").map(|d| d.state), Some(DeliveryState::Dead));
    }

    #[test]
    fn an_answered_attempt_frees_its_slot_but_holds_its_key_until_committed() {
        let mut book = Book::default();
        book.insert(delivery("crm", "cv1", 1, 0));
        book.insert(delivery("crm", "cv1", 2, 0));
        book.insert(delivery("crm", "cv2", 3, 0));
        let limit = |_: &str| Some(1);
        let first = book.take_due(0, limit);
        assert_eq!(first.iter().map(|d| d.seq).collect::<Vec<_>>(), [1]);
        assert!(book.take_due(0, limit).is_empty(), "the bound is full");
        assert_eq!(book.in_flight(), 1);
        book.ended(&first[0]);
        book.ended(&first[0]);
        assert_eq!(book.in_flight(), 0, "ended twice counts once");
        // cv1's seq 2 waits for seq 1's outcome to be committed; cv2 goes.
        let second = book.take_due(0, limit);
        assert_eq!(second.iter().map(|d| d.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(book.next_due(), None, "cv1 is held, cv2 in flight");
        book.finished(&first[0]);
        book.forget(&first[0].id);
        assert_eq!(book.next_due(), Some(0));
        assert!(book.take_due(0, limit).is_empty(), "cv2's attempt still has no answer");
        book.finished(&second[0]);
        book.forget(&second[0].id);
        assert_eq!(book.take_due(0, limit).iter().map(|d| d.seq).collect::<Vec<_>>(), [2]);
        // A retry later than another key's first delivery falls due after it.
        let mut book = Book::default();
        book.insert(delivery("crm", "cv1", 1, 500));
        book.insert(delivery("crm", "cv2", 2, 100));
        assert_eq!(book.next_due(), Some(100));
        assert_eq!(book.take_due(100, |_| Some(5)).iter().map(|d| d.seq).collect::<Vec<_>>(), [2]);
        assert_eq!(book.take_due(499, |_| Some(5)).len(), 0);
        assert_eq!(book.take_due(500, |_| Some(5)).iter().map(|d| d.seq).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn each_target_has_its_own_bound() {
        let mut book = Book::default();
        for seq in 1..=5 {
            book.insert(delivery("crm", &format!("cv{seq}"), seq, 0));
            book.insert(delivery("sheet", &format!("cv{seq}"), seq + 10, 0));
        }
        book.insert(delivery("gone", "cv1", 99, 0));
        let limit = |target: &str| match target {
            "crm" => Some(2),
            "sheet" => Some(3),
            _ => None,
        };
        let due = book.take_due(0, limit);
        let by_target = |target: &str| due.iter().filter(|d| d.target == target).map(|d| d.seq).collect::<Vec<_>>();
        assert_eq!(by_target("crm"), [1, 2], "oldest first, two at most");
        assert_eq!(by_target("sheet"), [11, 12, 13]);
        assert!(by_target("gone").is_empty(), "a target no longer configured gets nothing");
        assert!(book.take_due(0, limit).is_empty(), "every bound is full");
        book.finished(&due[0]);
        book.forget(&due[0].id);
        assert_eq!(book.take_due(0, limit).iter().map(|d| d.seq).collect::<Vec<_>>(), [3]);
        let gauges = book.gauges();
        assert_eq!(gauges["crm"].backlog, 4);
        assert_eq!(gauges["gone"].backlog, 1);
    }
}
