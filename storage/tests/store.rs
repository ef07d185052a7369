//! Integration tests of the store against its public API: idempotent ingest,
//! group commit, durability, pending statuses, conversation indexes, the agent
//! event log, and a model-based property test.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use protocol::model::{AgentStatus, Contact, Conversation, ConversationStatus, Direction, Message, Source};
use protocol::webhook::{InboundMessage, Status};
use protocol::ws::{ServerFrame, UnassignReason};
use protocol::{ApiError, ErrorCode};
use switchboard_storage::{
    Batch, ContactRecord, ConversationFilter, ConversationRecord, EventSink, InboxEntry, InboxItem, IngestMessage,
    IngestOutcome, IngestStatus, Op, Published, Reader, StorageError, Store, StoreOptions, StoredMessage,
    conversation_id, thread_key,
};

const PHONE: &str = "PN1";
const CONTACT: &str = "9198";

/// Records everything the store publishes. Given a reader, it also checks that
/// each published inbox entry is already visible in the database.
#[derive(Default)]
struct Recorder {
    published: Mutex<Vec<Published>>,
    reader: Mutex<Option<Reader>>,
    announced_before_visible: Mutex<Vec<u64>>,
}

impl EventSink for Recorder {
    fn committed(&self, published: Published) {
        if let Some(reader) = self.reader.lock().unwrap().as_ref() {
            let stored = reader.inbox().unwrap();
            let mut early = self.announced_before_visible.lock().unwrap();
            early.extend(published.inbox.iter().filter(|entry| !stored.contains(entry)).map(|entry| entry.seq));
        }
        self.published.lock().unwrap().push(published);
    }
}

impl Recorder {
    fn inbox(&self) -> Vec<InboxEntry> {
        self.published.lock().unwrap().iter().flat_map(|p| p.inbox.clone()).collect()
    }

    fn events(&self) -> Vec<(String, ServerFrame)> {
        self.published.lock().unwrap().iter().flat_map(|p| p.events.clone()).collect()
    }
}

fn open(dir: &Path, options: StoreOptions) -> (Store, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let store = Store::open(dir, options, recorder.clone()).unwrap();
    (store, recorder)
}

fn inbound(wamid: &str) -> InboundMessage {
    serde_json::from_value(serde_json::json!({
        "id": wamid, "from": CONTACT, "timestamp": "1795514400", "type": "text", "text": {"body": "hi"},
        "field_meta_added_later": {"nested": [1, -2.5, null, "x"]}
    }))
    .unwrap()
}

fn ingest(wamid: &str) -> Op {
    Op::IngestMessage(IngestMessage {
        phone_number_id: PHONE.to_owned(),
        contact_key: CONTACT.to_owned(),
        contact: None,
        message: Box::new(inbound(wamid)),
    })
}

fn status(wamid: &str, state: &str) -> Op {
    let status: Status = serde_json::from_value(serde_json::json!({
        "id": wamid, "status": state, "timestamp": "1795514401", "recipient_id": CONTACT
    }))
    .unwrap();
    Op::IngestStatus(IngestStatus { phone_number_id: PHONE.to_owned(), status })
}

fn conversation(id: &str, status: ConversationStatus, agent: Option<&str>) -> Op {
    Op::PutConversation(Box::new(ConversationRecord {
        conversation: Conversation {
            id: id.to_owned(),
            contact: Contact { wa_id: CONTACT.to_owned(), name: None },
            phone_number_id: PHONE.to_owned(),
            status,
            team: None,
            agent: agent.map(str::to_owned),
            source: Source::organic(),
            service_until: None,
            free_entry_until: None,
            fields: Default::default(),
            opened_at: 1_795_514_400_000,
            closed_at: None,
            messages: None,
        },
        thread_key: thread_key(PHONE, CONTACT),
        message_count: 0,
        last_customer_at: None,
        queued_at: None,
        assigned_at: None,
        first_response_at: None,
        clocks: Default::default(),
        route: None,
        copilot: None,
        handoff: None,
    }))
}

fn put_message(conversation_id: &str, index: u32, id: &str, direction: Direction) -> Op {
    let message = Message {
        id: id.to_owned(),
        direction,
        kind: "text".to_owned(),
        text: Some(format!("text of {id}")),
        media: None,
        at: 1_795_514_400_000 + i64::from(index),
        status: None,
        free: None,
        error: None,
        author: None,
    };
    Op::PutMessage {
        conversation_id: conversation_id.to_owned(),
        thread_key: thread_key(PHONE, CONTACT),
        index,
        message: Box::new(StoredMessage { message, raw: None }),
    }
}

fn event(agent: &str, conversation_id: &str) -> Op {
    Op::AgentEvent {
        agent_id: agent.to_owned(),
        frame: Box::new(ServerFrame::Unassigned {
            seq: 0,
            conversation_id: conversation_id.to_owned(),
            reason: UnassignReason::Transferred,
        }),
    }
}

fn wamid(entry: &InboxEntry) -> &str {
    match &entry.item {
        InboxItem::Message { message, .. } => &message.id,
        InboxItem::Status { status, .. } => &status.id,
    }
}

fn seqs(entries: &[InboxEntry]) -> Vec<u64> {
    entries.iter().map(|entry| entry.seq).collect()
}

fn frame_seqs(frames: &[ServerFrame]) -> Vec<u64> {
    frames.iter().map(|frame| frame.seq().unwrap()).collect()
}

fn ids(records: &[ConversationRecord]) -> Vec<&str> {
    records.iter().map(|record| record.conversation.id.as_str()).collect()
}

#[test]
fn the_same_wamid_is_accepted_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, recorder) = open(dir.path(), StoreOptions::default());

    let first = store.commit_blocking(vec![ingest("wamid.1"), ingest("wamid.1")]).unwrap();
    assert_eq!(first.ingested, vec![IngestOutcome::Accepted { seq: 1 }, IngestOutcome::Duplicate]);
    let second = store.commit_blocking(vec![ingest("wamid.1")]).unwrap();
    assert_eq!(second.ingested, vec![IngestOutcome::Duplicate]);

    // The same wamid from three callers at once, possibly folded into one group.
    let outcomes: Vec<IngestOutcome> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..3).map(|_| scope.spawn(|| store.commit_blocking(vec![ingest("wamid.2")]).unwrap().ingested)).collect();
        handles.into_iter().flat_map(|handle| handle.join().unwrap()).collect()
    });
    assert_eq!(outcomes.iter().filter(|o| **o == IngestOutcome::Accepted { seq: 2 }).count(), 1);
    assert_eq!(outcomes.iter().filter(|o| **o == IngestOutcome::Duplicate).count(), 2);

    let inbox = store.reader().inbox().unwrap();
    assert_eq!(seqs(&inbox), vec![1, 2]);
    assert_eq!(inbox.iter().map(wamid).collect::<Vec<_>>(), vec!["wamid.1", "wamid.2"]);
    assert_eq!(inbox[0].thread_key, thread_key(PHONE, CONTACT));
    assert_eq!(recorder.inbox(), inbox, "each accepted message is published exactly once");
}

#[test]
fn a_claimed_wamid_applies_its_batch_once_and_blocks_the_inbox_path() {
    let dir = tempfile::tempdir().unwrap();
    let (store, recorder) = open(dir.path(), StoreOptions::default());
    let reader = store.reader();
    let cv = store.next_conversation_id();
    let direct = |wamid: &str, index: u32| {
        vec![Op::ClaimInbound(wamid.to_owned()), put_message(&cv, index, wamid, Direction::In), event("a", &cv)]
    };

    let first = store.commit_blocking(direct("wamid.d1", 0)).unwrap();
    assert_eq!(first.ingested, vec![IngestOutcome::Accepted { seq: 0 }]);
    assert_eq!(first.events.len(), 1);
    // A redelivery, applied directly again (say at another index): nothing of it is kept.
    let again = store.commit_blocking(direct("wamid.d1", 1)).unwrap();
    assert_eq!(again.ingested, vec![IngestOutcome::Duplicate]);
    assert!(again.events.is_empty(), "the ops after a refused claim are skipped");
    assert_eq!(reader.messages(&cv).unwrap().len(), 1);
    // ...or through the inbox: refused as well, and the inbox path's claims block direct ones.
    assert_eq!(store.commit_blocking(vec![ingest("wamid.d1")]).unwrap().ingested, vec![IngestOutcome::Duplicate]);
    assert_eq!(
        store.commit_blocking(vec![ingest("wamid.i1")]).unwrap().ingested[0],
        IngestOutcome::Accepted { seq: 1 }
    );
    assert_eq!(store.commit_blocking(direct("wamid.i1", 1)).unwrap().ingested, vec![IngestOutcome::Duplicate]);
    assert_eq!(reader.messages(&cv).unwrap().len(), 1);
    assert_eq!(recorder.events().len(), 1, "only the accepted batch's event is published");
    assert!(reader.has_inbound("wamid.d1").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_commits_get_unique_ordered_seqs() {
    concurrent_commits(StoreOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_commits_without_grouping() {
    concurrent_commits(StoreOptions { max_group: 1, ..Default::default() }).await;
}

/// Every commit finds the tables behind by more than the bound and waits for
/// the materializer: nothing is lost, duplicated or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_commits_over_the_lag_bound() {
    concurrent_commits(StoreOptions { max_unapplied_writes: 1, ..Default::default() }).await;
}

async fn concurrent_commits(options: StoreOptions) {
    const N: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let (store, recorder) = open(dir.path(), options.clone());
    *recorder.reader.lock().unwrap() = Some(store.reader());
    let store = Arc::new(store);

    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let wamid = format!("wamid.{i}");
                let outcome = store.commit(vec![ingest(&wamid)]).await.unwrap();
                match outcome.ingested.as_slice() {
                    [IngestOutcome::Accepted { seq }] => (wamid, *seq),
                    other => panic!("{wamid}: {other:?}"),
                }
            })
        })
        .collect();
    let mut accepted = BTreeMap::new();
    for task in tasks {
        let (wamid, seq) = task.await.unwrap();
        assert!(accepted.insert(seq, wamid).is_none(), "seq {seq} given twice");
    }
    assert_eq!(accepted.keys().copied().collect::<Vec<_>>(), (1..=N as u64).collect::<Vec<_>>());

    let published = recorder.inbox();
    assert_eq!(published.len(), N);
    assert!(published.windows(2).all(|pair| pair[0].seq < pair[1].seq), "published out of seq order");
    for entry in &published {
        assert_eq!(accepted[&entry.seq], wamid(entry), "published seq differs from the caller's");
    }

    assert_eq!(*recorder.announced_before_visible.lock().unwrap(), Vec::<u64>::new());

    store.shutdown();
    drop(store);
    recorder.reader.lock().unwrap().take();
    let (store, _) = open(dir.path(), options);
    let inbox = store.reader().inbox().unwrap();
    assert_eq!(inbox, published);
}

#[test]
fn accepted_items_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let wamids: Vec<String> = (0..5).map(|i| format!("wamid.{i}")).collect();
    let before = {
        let (store, _) = open(dir.path(), StoreOptions::default());
        store.commit_blocking(wamids.iter().map(|w| ingest(w)).collect()).unwrap();
        store.commit_blocking(vec![Op::DeleteInbox(2)]).unwrap();
        let inbox = store.reader().inbox().unwrap();
        store.shutdown();
        assert!(matches!(store.commit_blocking(vec![ingest("wamid.late")]), Err(StorageError::Closed)));
        inbox
    };
    assert_eq!(seqs(&before), vec![1, 3, 4, 5]);

    let (store, recorder) = open(dir.path(), StoreOptions::default());
    let reader = store.reader();
    assert_eq!(reader.inbox().unwrap(), before);
    for wamid in &wamids {
        assert!(reader.has_inbound(wamid).unwrap(), "{wamid} forgotten");
    }
    assert!(!reader.has_inbound("wamid.late").unwrap());
    assert!(!reader.has_inbound("wamid.unknown").unwrap());

    // Redelivery after a restart, including of an entry already applied.
    let again = store.commit_blocking(wamids.iter().map(|w| ingest(w)).collect()).unwrap();
    assert_eq!(again.ingested, vec![IngestOutcome::Duplicate; 5]);
    assert!(recorder.inbox().is_empty());
    // The inbox seq continues after the last one committed.
    let next = store.commit_blocking(vec![ingest("wamid.new")]).unwrap();
    assert_eq!(next.ingested, vec![IngestOutcome::Accepted { seq: 6 }]);
}

#[test]
fn statuses_are_deduplicated_and_wait_for_their_message() {
    let dir = tempfile::tempdir().unwrap();
    let cv = conversation_id(1);
    {
        let (store, recorder) = open(dir.path(), StoreOptions::default());
        let outcome =
            store.commit_blocking(vec![status("wamid.out", "sent"), status("wamid.out", "delivered")]).unwrap();
        assert_eq!(outcome.ingested, vec![IngestOutcome::Pending, IngestOutcome::Pending]);
        let again = store.commit_blocking(vec![status("wamid.out", "sent")]).unwrap();
        assert_eq!(again.ingested, vec![IngestOutcome::Duplicate]);
        assert!(recorder.inbox().is_empty(), "a pending status was published");
        assert!(store.reader().inbox().unwrap().is_empty());
        // An inbound message with that id does not release them: statuses are for outbound.
        store.commit_blocking(vec![put_message(&cv, 0, "wamid.out", Direction::In)]).unwrap();
        assert!(recorder.inbox().is_empty());
    }

    // Pending statuses are durable too.
    let (store, recorder) = open(dir.path(), StoreOptions::default());
    store.commit_blocking(vec![conversation(&cv, ConversationStatus::Assigned, Some("a"))]).unwrap();
    store.commit_blocking(vec![put_message(&cv, 1, "wamid.out", Direction::Out)]).unwrap();
    let released = recorder.inbox();
    let states: Vec<(u64, &str, &str)> = released
        .iter()
        .map(|entry| match &entry.item {
            InboxItem::Status { conversation_id, status } => {
                (entry.seq, conversation_id.as_str(), status.status.as_str())
            }
            other => panic!("not a status: {other:?}"),
        })
        .collect();
    assert_eq!(states, vec![(1, cv.as_str(), "sent"), (2, cv.as_str(), "delivered")]);
    assert!(released.iter().all(|entry| entry.thread_key == thread_key(PHONE, CONTACT) && wamid(entry) == "wamid.out"));
    assert_eq!(store.reader().inbox().unwrap(), released);

    // Storing the message again does not release them a second time.
    store.commit_blocking(vec![put_message(&cv, 1, "wamid.out", Direction::Out)]).unwrap();
    assert_eq!(recorder.inbox().len(), 2);

    // A status of a known message is published at once; its repeat is not.
    let read = store.commit_blocking(vec![status("wamid.out", "read"), status("wamid.out", "read")]).unwrap();
    assert_eq!(read.ingested, vec![IngestOutcome::Accepted { seq: 3 }, IngestOutcome::Duplicate]);
    let published = recorder.inbox();
    assert_eq!(published.len(), 3);
    match &published[2].item {
        InboxItem::Status { conversation_id, status } => {
            assert_eq!((conversation_id.as_str(), status.status.as_str()), (cv.as_str(), "read"));
        }
        other => panic!("not a status: {other:?}"),
    }
    let late = store.commit_blocking(vec![status("wamid.out", "delivered")]).unwrap();
    assert_eq!(late.ingested, vec![IngestOutcome::Duplicate], "dedup of a status released from pending");
}

#[test]
fn records_and_events_round_trip_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), StoreOptions::default());
    let cv = conversation_id(7);
    let Op::PutConversation(mut record) = conversation(&cv, ConversationStatus::Assigned, Some("a")) else {
        unreachable!()
    };
    let conversation = &mut record.conversation;
    conversation.team = Some("sales".to_owned());
    conversation.service_until = Some(1_795_600_800_123);
    conversation.closed_at = Some(1_795_600_900_000);
    conversation.fields =
        serde_json::from_value(serde_json::json!({"score": 3, "neg": -1, "ratio": 0.5, "tags": ["x"], "nil": null}))
            .unwrap();
    record.last_customer_at = Some(1_795_514_400_000);
    let Op::PutMessage { message: mut stored, .. } = put_message(&cv, 0, "wamid.out", Direction::Out) else {
        unreachable!()
    };
    stored.message.media = Some(serde_json::json!({"id": "m1", "mime_type": "image/jpeg"}));
    stored.message.error = Some(ApiError {
        code: ErrorCode::WindowClosed,
        message: "closed".to_owned(),
        detail: Some(serde_json::json!({"meta_code": 131047})),
    });
    stored.raw = Some(r#"{"id":"wamid.out"}"#.to_owned());
    let frame = ServerFrame::Message { seq: 0, conversation_id: cv.clone(), message: stored.message.clone() };

    let mut with_messages = record.clone();
    with_messages.conversation.messages = Some(vec![stored.message.clone()]);
    store
        .commit_blocking(vec![
            Op::PutConversation(with_messages),
            Op::PutMessage {
                conversation_id: cv.clone(),
                thread_key: record.thread_key.clone(),
                index: 0,
                message: stored.clone(),
            },
            Op::AgentEvent { agent_id: "a".to_owned(), frame: Box::new(frame.clone()) },
        ])
        .unwrap();

    let reader = store.reader();
    assert_eq!(reader.conversation(&cv).unwrap().as_ref(), Some(record.as_ref()), "stored without its messages");
    assert_eq!(reader.messages(&cv).unwrap(), vec![*stored]);
    let mut expected = frame;
    expected.set_seq(1);
    assert_eq!(reader.agent_events_after("a", 0).unwrap(), Some((1, vec![expected])));
}

#[test]
fn conversation_indexes_follow_status_and_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), StoreOptions::default());
    let reader = store.reader();
    let cv = store.next_conversation_id();
    assert_eq!(cv, conversation_id(1));

    store
        .commit_blocking(vec![
            conversation(&cv, ConversationStatus::Assigned, Some("a")),
            put_message(&cv, 1, "wamid.out", Direction::Out),
            put_message(&cv, 0, "wamid.in", Direction::In),
        ])
        .unwrap();
    let (_, snapshot) = reader.agent_snapshot("a").unwrap();
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].0.conversation.id, cv);
    let message_ids: Vec<&str> = snapshot[0].1.iter().map(|m| m.message.id.as_str()).collect();
    assert_eq!(message_ids, vec!["wamid.in", "wamid.out"], "messages in index order");
    let open = reader.open_conversations().unwrap();
    assert_eq!(open.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), vec![cv.as_str()]);
    assert_eq!((open[0].1.status, open[0].1.agent.as_deref()), (ConversationStatus::Assigned, Some("a")));
    assert_eq!(open[0].1.thread_key, thread_key(PHONE, CONTACT));
    assert!(reader.agent_snapshot("b").unwrap().1.is_empty());

    store.commit_blocking(vec![conversation(&cv, ConversationStatus::Assigned, Some("a"))]).unwrap();
    assert_eq!(reader.agent_snapshot("a").unwrap().1.len(), 1, "an update that keeps the holder keeps the index");

    store.commit_blocking(vec![conversation(&cv, ConversationStatus::Assigned, Some("b"))]).unwrap();
    assert!(reader.agent_snapshot("a").unwrap().1.is_empty(), "still in the previous agent's snapshot");
    let (_, snapshot) = reader.agent_snapshot("b").unwrap();
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].1.len(), 2);
    assert_eq!(reader.open_conversations().unwrap()[0].1.agent.as_deref(), Some("b"));

    store.commit_blocking(vec![conversation(&cv, ConversationStatus::Closed, Some("b"))]).unwrap();
    assert!(reader.open_conversations().unwrap().is_empty());
    assert!(reader.agent_snapshot("b").unwrap().1.is_empty());
    assert_eq!(reader.conversation(&cv).unwrap().unwrap().conversation.status, ConversationStatus::Closed);
    assert_eq!(reader.messages(&cv).unwrap().len(), 2);
}

#[test]
fn agent_snapshot_does_not_leak_between_agents_sharing_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), StoreOptions::default());
    let (one, two) = (conversation_id(1), conversation_id(2));
    store
        .commit_blocking(vec![
            conversation(&one, ConversationStatus::Assigned, Some("a")),
            conversation(&two, ConversationStatus::Assigned, Some("ab")),
        ])
        .unwrap();
    assert_eq!(
        ids(&store.reader().agent_snapshot("a").unwrap().1.into_iter().map(|(r, _)| r).collect::<Vec<_>>()),
        vec![one.as_str()]
    );
    assert_eq!(
        ids(&store.reader().agent_snapshot("ab").unwrap().1.into_iter().map(|(r, _)| r).collect::<Vec<_>>()),
        vec![two.as_str()]
    );
}

#[test]
fn a_v2_open_index_is_migrated_to_entries_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), StoreOptions::default());
    let cv = store.next_conversation_id();
    store.commit_blocking(vec![conversation(&cv, ConversationStatus::Assigned, Some("a"))]).unwrap();
    drop(store);
    // Put the store back as v2 wrote it: id → holder, no v3 table.
    let path = dir.path().join("switchboard.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(redb::TableDefinition::<&str, &[u8]>::new("open_conversations_v3")).unwrap();
        let v2 = redb::TableDefinition::<&str, &str>::new("open_conversations_v2");
        txn.open_table(v2).unwrap().insert(cv.as_str(), "a").unwrap();
        txn.commit().unwrap();
    }
    let (store, _) = open(dir.path(), StoreOptions::default());
    let open = store.reader().open_conversations().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].0.as_str(), open[0].1.agent.as_deref()), (cv.as_str(), Some("a")));
    // The holder is known again: closing takes it out of the agent's index.
    store.commit_blocking(vec![conversation(&cv, ConversationStatus::Closed, Some("a"))]).unwrap();
    assert!(store.reader().open_conversations().unwrap().is_empty());
    assert!(store.reader().agent_snapshot("a").unwrap().1.is_empty());
}

#[test]
fn list_conversations_filters_and_pages_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), StoreOptions::default());
    let cv: Vec<String> = (0..6).map(|_| store.next_conversation_id()).collect();
    use ConversationStatus::*;
    store
        .commit_blocking(vec![
            conversation(&cv[0], Closed, Some("a")),
            conversation(&cv[1], Assigned, Some("a")),
            conversation(&cv[2], Queued, None),
            conversation(&cv[3], Assigned, Some("b")),
            conversation(&cv[4], Assigned, Some("a")),
            conversation(&cv[5], Bot, None),
        ])
        .unwrap();
    let reader = store.reader();
    let list = |filter: ConversationFilter| -> Vec<String> {
        reader.list_conversations(&filter).unwrap().into_iter().map(|r| r.conversation.id).collect()
    };
    let all = ConversationFilter { limit: 100, ..Default::default() };

    assert_eq!(list(all.clone()), cv.iter().rev().cloned().collect::<Vec<_>>());
    assert_eq!(list(ConversationFilter { limit: 2, ..all.clone() }), vec![cv[5].clone(), cv[4].clone()]);
    assert_eq!(
        list(ConversationFilter { limit: 2, before: Some(cv[4].clone()), ..all.clone() }),
        vec![cv[3].clone(), cv[2].clone()]
    );
    assert_eq!(
        list(ConversationFilter { status: Some(Assigned), ..all.clone() }),
        vec![cv[4].clone(), cv[3].clone(), cv[1].clone()]
    );
    // The limit counts matches, not rows scanned.
    assert_eq!(list(ConversationFilter { status: Some(Assigned), limit: 1, ..all.clone() }), vec![cv[4].clone()]);
    assert_eq!(
        list(ConversationFilter { agent: Some("a".to_owned()), ..all.clone() }),
        vec![cv[4].clone(), cv[1].clone(), cv[0].clone()]
    );
    assert_eq!(
        list(ConversationFilter {
            agent: Some("a".to_owned()),
            status: Some(Assigned),
            before: Some(cv[4].clone()),
            ..all
        }),
        vec![cv[1].clone()]
    );
}

#[test]
fn conversation_ids_are_not_reused_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut committed = HashSet::new();
    {
        let (store, _) = open(dir.path(), StoreOptions::default());
        for _ in 0..3 {
            let id = store.next_conversation_id();
            store.commit_blocking(vec![conversation(&id, ConversationStatus::Queued, None)]).unwrap();
            committed.insert(id);
        }
        let _never_committed = store.next_conversation_id();
    }
    {
        let (store, _) = open(dir.path(), StoreOptions::default());
        let id = store.next_conversation_id();
        assert!(!committed.contains(&id), "{id} reused");
        assert_eq!(id, conversation_id(4));
        // An id committed out of order (higher than the counter) also moves it.
        store.commit_blocking(vec![conversation(&conversation_id(10), ConversationStatus::Queued, None)]).unwrap();
        committed.insert(conversation_id(10));
    }
    let (store, _) = open(dir.path(), StoreOptions::default());
    let id = store.next_conversation_id();
    assert!(!committed.contains(&id), "{id} reused");
    assert_eq!(id, conversation_id(11));
}

#[test]
fn agent_event_seqs_are_per_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (store, recorder) = open(dir.path(), StoreOptions::default());
    let outcome = store
        .commit_blocking(vec![
            Op::PutAgentStatus { agent_id: "a".to_owned(), status: AgentStatus::Online },
            event("a", "c1"),
            event("b", "c2"),
            event("a", "c3"),
            event("a", "c4"),
            event("b", "c5"),
        ])
        .unwrap();
    let got: Vec<(&str, u64)> =
        outcome.events.iter().map(|(agent, frame)| (agent.as_str(), frame.seq().unwrap())).collect();
    assert_eq!(got, vec![("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)]);
    assert_eq!(recorder.events(), outcome.events);

    store.commit_blocking(vec![event("b", "c6")]).unwrap();
    let reader = store.reader();
    assert_eq!(reader.agent_last_seq("a").unwrap(), 3);
    assert_eq!(reader.agent("a").unwrap().status, AgentStatus::Online, "status kept beside the events");
    assert_eq!(reader.agent_last_seq("b").unwrap(), 3);
    let (last, frames) = reader.agent_events_after("a", 0).unwrap().unwrap();
    assert_eq!((last, frame_seqs(&frames)), (3, vec![1, 2, 3]));
    match &frames[2] {
        ServerFrame::Unassigned { conversation_id, .. } => assert_eq!(conversation_id, "c4"),
        other => panic!("{other:?}"),
    }
    assert_eq!(reader.agent_events_after("nobody", 0).unwrap(), Some((0, vec![])));
}

#[test]
fn agent_events_beyond_retention_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { agent_event_retention: 5, ..Default::default() };
    let (store, _) = open(dir.path(), options.clone());
    // 12 events in batches of 1, 4 and 7, so pruning also happens inside a batch.
    for range in [1..=1, 2..=5, 6..=12] {
        let batch: Batch = range.map(|n| event("a", &format!("c{n}"))).collect();
        store.commit_blocking(batch).unwrap();
    }
    store.commit_blocking(vec![event("b", "other")]).unwrap();
    let reader = store.reader();

    let (last, frames) = reader.agent_events_after("a", 7).unwrap().unwrap();
    assert_eq!((last, frame_seqs(&frames)), (12, (8..=12).collect()));
    let conversations: Vec<String> = frames
        .iter()
        .map(|frame| match frame {
            ServerFrame::Unassigned { conversation_id, .. } => conversation_id.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(conversations, (8..=12).map(|n| format!("c{n}")).collect::<Vec<_>>());
    assert_eq!(reader.agent_events_after("a", 6).unwrap(), None, "event 7 was pruned");
    assert_eq!(reader.agent_events_after("a", 2).unwrap(), None);
    assert_eq!(reader.agent_events_after("a", 12).unwrap(), Some((12, vec![])));
    assert_eq!(reader.agent_events_after("a", 13).unwrap(), None, "a seq from the future");
    assert_eq!(reader.agent_snapshot("a").unwrap().0, 12);
    assert_eq!(reader.agent_events_after("b", 0).unwrap().map(|(last, f)| (last, frame_seqs(&f))), Some((1, vec![1])));

    // The counter and the window survive a restart. (A live `Reader` keeps the
    // database open, so it goes first.)
    drop(reader);
    drop(store);
    let (store, _) = open(dir.path(), options);
    let outcome = store.commit_blocking(vec![event("a", "c13")]).unwrap();
    assert_eq!(outcome.events[0].1.seq(), Some(13));
    let (last, frames) = store.reader().agent_events_after("a", 8).unwrap().unwrap();
    assert_eq!((last, frame_seqs(&frames)), (13, (9..=13).collect()));
    assert_eq!(store.reader().agent_events_after("a", 7).unwrap(), None);
}

#[derive(Clone, Debug)]
enum ModelOp {
    Ingest(usize),
    Event(usize),
    Delete(u64),
}

const AGENTS: [&str; 3] = ["agent-0", "agent-1", "agent-2"];

#[derive(Default)]
struct Model {
    seen: HashSet<String>,
    inbox: BTreeMap<u64, String>,
    inbox_seq: u64,
    agent_seq: [u64; 3],
}

impl Model {
    /// Applies one op; returns the ingest outcome or the event seq it expects.
    fn apply(&mut self, op: &ModelOp) -> (Option<IngestOutcome>, Option<u64>) {
        match op {
            ModelOp::Ingest(n) => {
                let wamid = format!("wamid.{n}");
                if !self.seen.insert(wamid.clone()) {
                    return (Some(IngestOutcome::Duplicate), None);
                }
                self.inbox_seq += 1;
                self.inbox.insert(self.inbox_seq, wamid);
                (Some(IngestOutcome::Accepted { seq: self.inbox_seq }), None)
            }
            ModelOp::Event(agent) => {
                self.agent_seq[*agent] += 1;
                (None, Some(self.agent_seq[*agent]))
            }
            ModelOp::Delete(seq) => {
                self.inbox.remove(seq);
                (None, None)
            }
        }
    }
}

fn to_op(op: &ModelOp) -> Op {
    match op {
        ModelOp::Ingest(n) => ingest(&format!("wamid.{n}")),
        ModelOp::Event(agent) => event(AGENTS[*agent], "c"),
        ModelOp::Delete(seq) => Op::DeleteInbox(*seq),
    }
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        3 => (0..8usize).prop_map(ModelOp::Ingest),
        2 => (0..AGENTS.len()).prop_map(ModelOp::Event),
        1 => (1..10u64).prop_map(ModelOp::Delete),
    ]
}

fn check_against_model(store: &Store, model: &Model) {
    let reader = store.reader();
    let inbox = reader.inbox().unwrap();
    let got: Vec<(u64, &str)> = inbox.iter().map(|entry| (entry.seq, wamid(entry))).collect();
    let want: Vec<(u64, &str)> = model.inbox.iter().map(|(seq, wamid)| (*seq, wamid.as_str())).collect();
    assert_eq!(got, want);
    for (agent, last) in AGENTS.iter().zip(model.agent_seq) {
        assert_eq!(reader.agent_last_seq(agent).unwrap(), last, "{agent}");
        let (held_last, frames) = reader.agent_events_after(agent, 0).unwrap().unwrap();
        assert_eq!((held_last, frame_seqs(&frames)), (last, (1..=last).collect()));
    }
    for n in 0..8 {
        let wamid = format!("wamid.{n}");
        assert_eq!(reader.has_inbound(&wamid).unwrap(), model.seen.contains(&wamid), "{wamid}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// `(op, ends_batch)`: the flag cuts the op sequence into batches.
    #[test]
    fn store_matches_a_simple_model(ops in prop::collection::vec((model_op(), any::<bool>()), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let (store, recorder) = open(dir.path(), StoreOptions::default());
        let mut model = Model::default();
        let mut batches: Vec<Vec<ModelOp>> = vec![vec![]];
        for (op, ends_batch) in ops {
            batches.last_mut().unwrap().push(op);
            if ends_batch {
                batches.push(vec![]);
            }
        }
        for batch in batches.into_iter().filter(|batch| !batch.is_empty()) {
            let mut want_ingested = Vec::new();
            let mut want_events = Vec::new();
            for op in &batch {
                let (ingested, event_seq) = model.apply(op);
                want_ingested.extend(ingested);
                if let (ModelOp::Event(agent), Some(seq)) = (op, event_seq) {
                    want_events.push((AGENTS[*agent].to_owned(), seq));
                }
            }
            let outcome = store.commit_blocking(batch.iter().map(to_op).collect()).unwrap();
            prop_assert_eq!(outcome.ingested, want_ingested);
            let got_events: Vec<(String, u64)> =
                outcome.events.into_iter().map(|(agent, frame)| (agent, frame.seq().unwrap())).collect();
            prop_assert_eq!(got_events, want_events);
        }
        check_against_model(&store, &model);
        // Everything accepted was published once, in seq order, deletions notwithstanding.
        prop_assert_eq!(seqs(&recorder.inbox()), (1..=model.inbox_seq).collect::<Vec<_>>());

        drop(store);
        let (store, _) = open(dir.path(), StoreOptions::default());
        check_against_model(&store, &model);
    }
}

/// What a crash between the journal's sync and the tables' catching up
/// leaves: entries in the journal the tables lack. Simulated by emptying the
/// tables and the journal position after a run; the next open must rebuild
/// everything from the journal.
#[test]
fn journal_entries_the_tables_lack_are_applied_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let cv = conversation_id(1);
    let (inbox, record, messages) = {
        let (store, _) = open(dir.path(), StoreOptions::default());
        store.commit_blocking((0..5).map(|i| ingest(&format!("wamid.{i}"))).collect()).unwrap();
        store.commit_blocking(vec![Op::DeleteInbox(2), conversation(&cv, ConversationStatus::Queued, None)]).unwrap();
        store
            .commit_blocking(vec![
                put_message(&cv, 0, "wamid.in", Direction::In),
                put_message(&cv, 1, "wamid.out", Direction::Out),
                conversation(&cv, ConversationStatus::Assigned, Some("a1")),
            ])
            .unwrap();
        let reader = store.reader();
        let state = (reader.inbox().unwrap(), reader.conversation(&cv).unwrap(), reader.messages(&cv).unwrap());
        store.shutdown();
        state
    };
    assert_eq!(seqs(&inbox), vec![1, 3, 4, 5]);
    assert_eq!(messages.len(), 2);
    {
        let db = redb::Database::create(dir.path().join("switchboard.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        for table in ["inbox", "conversations", "messages", "open_conversations_v3", "agent_open", "message_index"] {
            txn.delete_table(redb::TableDefinition::<&str, &[u8]>::new(table)).unwrap();
        }
        txn.delete_table(redb::TableDefinition::<&str, u64>::new("inbound_ids")).unwrap();
        txn.delete_table(redb::TableDefinition::<&str, u64>::new("counters")).unwrap();
        txn.commit().unwrap();
    }
    for _ in 0..2 {
        let (store, _) = open(dir.path(), StoreOptions::default());
        let reader = store.reader();
        assert_eq!(reader.inbox().unwrap(), inbox);
        assert_eq!(reader.conversation(&cv).unwrap(), record);
        assert_eq!(reader.messages(&cv).unwrap(), messages);
        assert_eq!(reader.message_location("wamid.out").unwrap().map(|location| location.index), Some(1));
        assert!(reader.has_inbound("wamid.4").unwrap());
        let (_, held) = reader.agent_snapshot("a1").unwrap();
        assert_eq!(held.len(), 1, "the agent's open conversation is indexed again");
        let outcome = store.commit_blocking(vec![ingest("wamid.4")]).unwrap();
        assert_eq!(outcome.ingested, vec![IngestOutcome::Duplicate]);
        store.shutdown();
    }
    let (store, _) = open(dir.path(), StoreOptions::default());
    let next = store.commit_blocking(vec![ingest("wamid.new")]).unwrap();
    assert_eq!(next.ingested, vec![IngestOutcome::Accepted { seq: 6 }], "the inbox seq continues");
}

/// Async callers await the tables instead of blocking a thread; the reader
/// they get back sees every commit acknowledged before they asked.
#[tokio::test]
async fn a_caught_up_reader_sees_every_acknowledged_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), StoreOptions::default());
    let cv = conversation_id(1);
    for index in 0..20 {
        let id = format!("wamid.{index}");
        store.commit(vec![put_message(&cv, index, &id, Direction::In)]).await.unwrap();
    }
    store.commit(vec![conversation(&cv, ConversationStatus::Assigned, Some("a1"))]).await.unwrap();
    let reader = store.reader().caught_up().await.unwrap();
    assert_eq!(reader.messages(&cv).unwrap().len(), 20);
    assert_eq!(reader.agent_snapshot("a1").unwrap().1.len(), 1);
    assert_eq!(reader.list_conversations(&ConversationFilter { limit: 10, ..Default::default() }).unwrap().len(), 1);
}

#[test]
fn first_response_breaches_are_stored_as_the_agent_counted_them() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), StoreOptions::default());
    let put = |day, count| Op::PutFirstResponseBreaches { agent_id: "a1".to_owned(), day, count };
    store.commit_blocking(vec![put(5, 1), put(5, 2)]).unwrap();
    let stored = |store: &Store| {
        let record = store.reader().agent("a1").unwrap();
        (record.frt_breaches_day, record.frt_breaches)
    };
    assert_eq!(stored(&store), (5, 2), "the last count of a batch");
    store.commit_blocking(vec![put(6, 1)]).unwrap();
    assert_eq!(stored(&store), (6, 1), "storage keeps what it is told, with no rule of its own");
    let other = store.reader().agent("a2").unwrap();
    assert_eq!((other.frt_breaches_day, other.frt_breaches), (0, 0));
    drop(store);
    let (store, _) = open(dir.path(), StoreOptions::default());
    assert_eq!(stored(&store), (6, 1), "and after a restart");
}

fn log_event(conversation_id: &str, text: &str) -> Op {
    Op::Event(Box::new(protocol::events::Event {
        at: 1_795_514_400_000,
        conversation_id: Some(conversation_id.to_owned()),
        contact: Some(CONTACT.to_owned()),
        phone_number_id: Some(PHONE.to_owned()),
        actor: protocol::events::Actor::Customer,
        body: protocol::events::EventBody::MessageIn {
            wamid: format!("wamid.{text}"),
            message_type: "text".to_owned(),
            text: Some(text.to_owned()),
        },
    }))
}

fn log_text(event: &protocol::events::Event) -> String {
    match &event.body {
        protocol::events::EventBody::MessageIn { text, .. } => text.clone().unwrap_or_default(),
        other => panic!("only messages are logged here: {other:?}"),
    }
}

/// Many writers at once, grouped or not: the log's seqs are 1..=N with no
/// gap, each event is published with the seq it is stored under, in order,
/// and all of it survives a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn the_event_log_is_one_gap_free_sequence() {
    const N: usize = 300;
    for options in [StoreOptions::default(), StoreOptions { max_group: 1, ..Default::default() }] {
        let dir = tempfile::tempdir().unwrap();
        let (store, recorder) = open(dir.path(), options.clone());
        let store = Arc::new(store);
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let store = store.clone();
                // Two events per batch, with the change they describe.
                tokio::spawn(async move {
                    let cv = format!("cv_{i}");
                    store
                        .commit(vec![
                            conversation(&cv, ConversationStatus::Queued, None),
                            log_event(&cv, &format!("{i}a")),
                            log_event(&cv, &format!("{i}b")),
                        ])
                        .await
                        .unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let heads: Vec<u64> = recorder.published.lock().unwrap().iter().filter_map(|p| p.log_head).collect();
        assert!(heads.windows(2).all(|pair| pair[0] < pair[1]), "log heads published in commit order: {heads:?}");
        assert_eq!(heads.last(), Some(&(2 * N as u64)));
        assert_eq!(store.reader().log_head().unwrap(), 2 * N as u64);
        store.shutdown();
        drop(store);

        let (store, _) = open(dir.path(), options);
        let reader = store.reader();
        assert_eq!(reader.log_head().unwrap(), 2 * N as u64);
        // Read back in pages, as a consumer does.
        let mut stored = Vec::new();
        let mut after = 0;
        loop {
            let page = reader.events_after(after, 97).unwrap();
            let Some((last, _)) = page.last() else { break };
            after = *last;
            stored.extend(page);
        }
        let seqs: Vec<u64> = stored.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=2 * N as u64).collect::<Vec<_>>(), "one gap-free sequence");
        for pair in stored.chunks(2) {
            // A batch's events are consecutive, in the order the batch has them.
            let (first, second) = (log_text(&pair[0].1), log_text(&pair[1].1));
            assert_eq!(first.trim_end_matches('a'), second.trim_end_matches('b'), "{first} then {second}");
        }
        assert!(reader.events_after(2 * N as u64, 10).unwrap().is_empty());
        // The log goes on from where it was.
        store.commit(vec![log_event("cv_x", "after")]).await.unwrap();
        assert_eq!(reader.log_head().unwrap(), 2 * N as u64 + 1);
    }
}

/// An event is kept exactly when the change it describes is: a batch cut
/// short by a refused claim (a redelivered message) appends nothing.
#[test]
fn an_event_is_kept_with_its_change_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let (store, recorder) = open(dir.path(), StoreOptions::default());
    let cv = store.next_conversation_id();
    let batch = |index| {
        vec![
            Op::ClaimInbound("wamid.once".to_owned()),
            put_message(&cv, index, "wamid.once", Direction::In),
            log_event(&cv, "once"),
        ]
    };
    store.commit_blocking(batch(0)).unwrap();
    assert_eq!(store.commit_blocking(batch(1)).unwrap().ingested, vec![IngestOutcome::Duplicate]);
    let reader = store.reader();
    assert_eq!(reader.log_head().unwrap(), 1);
    assert_eq!(reader.events_after(0, 10).unwrap().len(), 1);
    assert_eq!(reader.messages(&cv).unwrap().len(), 1);
    assert_eq!(recorder.published.lock().unwrap().iter().filter_map(|p| p.log_head).collect::<Vec<_>>(), vec![1]);
}

/// A consumer's cursor is durable and moves in the same batch as what the
/// consumer made of the events.
#[test]
fn consumer_cursors_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path(), StoreOptions::default());
        store.commit_blocking((0..5).map(|i| log_event("cv_1", &i.to_string())).collect()).unwrap();
        let reader = store.reader();
        assert_eq!(reader.cursor("audit").unwrap(), 0);
        let taken = reader.events_after(reader.cursor("audit").unwrap(), 3).unwrap();
        store
            .commit_blocking(vec![Op::SetCursor { consumer: "audit".to_owned(), seq: taken.last().unwrap().0 }])
            .unwrap();
        assert_eq!(reader.cursor("audit").unwrap(), 3, "seen at once, before the tables have it");
        assert_eq!(reader.cursor("reports").unwrap(), 0, "each consumer has its own");
    }
    let (store, _) = open(dir.path(), StoreOptions::default());
    let reader = store.reader();
    assert_eq!(reader.cursor("audit").unwrap(), 3);
    let rest: Vec<String> = reader.events_after(3, 10).unwrap().iter().map(|(_, event)| log_text(event)).collect();
    assert_eq!(rest, vec!["3", "4"]);
}

/// The audit index keeps one row per key and commit; `indexed` finds the
/// `n`s of a key from any `n` on, across rows, in order, up to a limit.
#[test]
fn audit_index_rows_are_read_from_any_entry_on() {
    use switchboard_storage::audit::{AuditAppend, AuditRow};
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), StoreOptions::default());
    let row = |n: u64, keys: &[&str]| AuditRow {
        n,
        hash: [n as u8; 32],
        at: n as i64,
        canonical: format!("{{\"n\":{n}}}").into_bytes(),
        index: keys.iter().map(|key| (*key).to_owned()).collect(),
    };
    let append = |rows: Vec<AuditRow>| Op::AuditAppend(Box::new(AuditAppend { entries: rows, nodes: Vec::new() }));
    store.commit_blocking(vec![append(vec![row(1, &["c:a"]), row(2, &["c:b"]), row(3, &["c:a", "a:x"])])]).unwrap();
    store.commit_blocking(vec![append(vec![row(4, &["c:a"]), row(5, &["c:a"]), row(6, &["c:b"])])]).unwrap();
    let snapshot = store.reader().audit().unwrap();
    assert_eq!(snapshot.size().unwrap(), 6);
    assert_eq!(snapshot.indexed("c:a", 1, 100).unwrap(), vec![1, 3, 4, 5]);
    assert_eq!(snapshot.indexed("c:a", 2, 100).unwrap(), vec![3, 4, 5]);
    assert_eq!(snapshot.indexed("c:a", 4, 100).unwrap(), vec![4, 5]);
    assert_eq!(snapshot.indexed("c:a", 1, 3).unwrap(), vec![1, 3, 4]);
    assert_eq!(snapshot.indexed("c:a", 6, 100).unwrap(), Vec::<u64>::new());
    assert_eq!(snapshot.indexed("c:b", 3, 100).unwrap(), vec![6]);
    assert_eq!(snapshot.indexed("a:x", 1, 100).unwrap(), vec![3]);
    assert_eq!(snapshot.indexed("c:", 1, 100).unwrap(), Vec::<u64>::new(), "a key is not a prefix match");
    assert_eq!(snapshot.entry_hashes(2, 3).unwrap(), vec![[2; 32], [3; 32], [4; 32]]);
    assert_eq!(snapshot.entry(5).unwrap().unwrap().canonical, b"{\"n\":5}".to_vec());
}

/// `visit_entries` reads the numbers it is given across chunks and commits,
/// in order, stops when told, and names a number that has no entry.
#[test]
fn audit_entries_are_visited_by_number_across_chunks() {
    use switchboard_storage::audit::{AuditAppend, AuditRow, CHUNK_ENTRIES};
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), StoreOptions::default());
    let row = |n: u64| AuditRow {
        n,
        hash: [n as u8; 32],
        at: n as i64,
        canonical: format!("{{\"n\":{n}}}").into_bytes(),
        index: Vec::new(),
    };
    let first_commit = CHUNK_ENTRIES as u64 + 6; // two chunks
    let append = |range: std::ops::RangeInclusive<u64>| {
        Op::AuditAppend(Box::new(AuditAppend { entries: range.map(row).collect(), nodes: Vec::new() }))
    };
    store.commit_blocking(vec![append(1..=first_commit)]).unwrap();
    store.commit_blocking(vec![append(first_commit + 1..=first_commit + 3)]).unwrap();
    let snapshot = store.reader().audit().unwrap();
    let visit_all = |numbers: &[u64], stop_after: usize| {
        let mut seen = Vec::new();
        snapshot
            .visit_entries(numbers, |n, hash, at, canonical| {
                assert_eq!((hash[0], at, canonical), (n as u8, n as i64, format!("{{\"n\":{n}}}").as_bytes()));
                seen.push(n);
                Ok(seen.len() < stop_after)
            })
            .map(|()| seen)
    };
    let wanted = [1, 2, 64, 65, 70, 71, 73];
    assert_eq!(visit_all(&wanted, usize::MAX).unwrap(), wanted.to_vec());
    assert_eq!(visit_all(&wanted, 3).unwrap(), vec![1, 2, 64]);
    assert_eq!(visit_all(&[], usize::MAX).unwrap(), Vec::<u64>::new());
    let missing = visit_all(&[5, 74], usize::MAX).unwrap_err().to_string();
    assert!(missing.contains("audit entry 74"), "{missing}");
}

/// A contact's record is read by key through the overlay (an acknowledged
/// `PutContact` shows at once, before the tables have it), comes back
/// exactly (attributes of every JSON scalar kind), is committed with its
/// event, and survives a reopen. Its conversations are found on every number.
#[test]
fn contacts_are_read_through_the_overlay_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut record = ContactRecord::new(CONTACT);
    record.city = Some("Pune".to_owned());
    record.owner = Some("asha".to_owned());
    record.opted_out = true;
    record.updated_at = 1_795_514_400_123;
    record.attributes =
        serde_json::from_value(serde_json::json!({"score": 3, "neg": -1, "ratio": 0.5, "vip": true, "tier": "gold"}))
            .unwrap();
    let event = protocol::events::Event {
        at: record.updated_at,
        conversation_id: None,
        contact: Some(CONTACT.to_owned()),
        phone_number_id: None,
        actor: protocol::events::Actor::user("boss"),
        body: protocol::events::EventBody::ContactUpdated {
            changes: vec![protocol::events::FieldChange {
                key: "city".to_owned(),
                old: serde_json::Value::Null,
                new: serde_json::json!("Pune"),
            }],
        },
    };
    {
        let (store, _) = open(dir.path(), StoreOptions::default());
        let reader = store.reader();
        assert_eq!(reader.contact(CONTACT).unwrap(), None, "nothing set yet");
        store
            .commit_blocking(vec![
                conversation(&conversation_id(1), ConversationStatus::Closed, None),
                conversation(&conversation_id(2), ConversationStatus::Assigned, Some("a1")),
                Op::PutContact(Box::new(record.clone())),
                Op::Event(Box::new(event.clone())),
            ])
            .unwrap();
        // A point read right after the acknowledgement: the materializer
        // gathers for up to 250 ms, so this is the overlay answering.
        assert_eq!(reader.contact(CONTACT).unwrap().as_ref(), Some(&record));
        assert_eq!(reader.contact("someone-else").unwrap(), None);
        let mut changed = record.clone();
        changed.city = None;
        changed.attributes.remove("vip");
        store.commit_blocking(vec![Op::PutContact(Box::new(changed.clone()))]).unwrap();
        assert_eq!(reader.contact(CONTACT).unwrap().as_ref(), Some(&changed), "the last write wins");
        record = changed;
        assert_eq!(reader.events_after(0, 10).unwrap(), vec![(1, event)], "committed with its event");
        let found = reader.contact_conversations(CONTACT).unwrap();
        let ids: Vec<&str> = found.iter().map(|conversation| conversation.id.as_str()).collect();
        assert_eq!(ids, vec![conversation_id(2), conversation_id(1)], "newest first");
        assert_eq!(found[0].agent.as_deref(), Some("a1"));
        assert_eq!(found[0].status, ConversationStatus::Assigned);
        assert!(reader.contact_conversations("someone-else").unwrap().is_empty());
        store.shutdown();
    }
    let (store, _) = open(dir.path(), StoreOptions::default());
    assert_eq!(store.reader().contact(CONTACT).unwrap().as_ref(), Some(&record), "after a reopen");
}

/// A runtime configuration section is read by key through the overlay (an
/// acknowledged `PutSetting` shows at once), exactly as given, committed
/// with its event; the last write wins, and it survives a reopen.
#[test]
fn settings_are_read_through_the_overlay_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let first = br#"{"owner_policy":"manual","owner_wait_s":0,"rules":[]}"#.to_vec();
    let second = br#"{"owner_policy":"last_closer","owner_wait_s":30,"rules":[{"id":"r1","to_team":"t"}]}"#.to_vec();
    let event = protocol::events::Event {
        at: 1_795_514_400_123,
        conversation_id: None,
        contact: None,
        phone_number_id: None,
        actor: protocol::events::Actor::user("root"),
        body: protocol::events::EventBody::ConfigurationChanged {
            section: "routing".to_owned(),
            detail: serde_json::json!({"before": null, "after": {"owner_wait_s": 0}}),
        },
    };
    {
        let (store, _) = open(dir.path(), StoreOptions::default());
        let reader = store.reader();
        assert_eq!(reader.setting("routing").unwrap(), None, "nothing set yet");
        store
            .commit_blocking(vec![
                Op::PutSetting { name: "routing".to_owned(), value: Some(first.clone()) },
                Op::Event(Box::new(event.clone())),
            ])
            .unwrap();
        // Right after the acknowledgement: the overlay answers.
        assert_eq!(reader.setting("routing").unwrap(), Some(first));
        assert_eq!(reader.setting("agents").unwrap(), None, "another section");
        store
            .commit_blocking(vec![Op::PutSetting { name: "routing".to_owned(), value: Some(second.clone()) }])
            .unwrap();
        assert_eq!(reader.setting("routing").unwrap().as_ref(), Some(&second), "the last write wins");
        assert_eq!(reader.events_after(0, 10).unwrap(), vec![(1, event)], "committed with its event");
        store.shutdown();
    }
    {
        let (store, _) = open(dir.path(), StoreOptions::default());
        assert_eq!(store.reader().setting("routing").unwrap(), Some(second), "after a reopen");
        assert_eq!(store.reader().setting("agents").unwrap(), None);
        // Forgotten (back to the configuration file's): at once, and after a reopen.
        store.commit_blocking(vec![Op::PutSetting { name: "routing".to_owned(), value: None }]).unwrap();
        assert_eq!(store.reader().setting("routing").unwrap(), None, "forgotten");
        store.shutdown();
    }
    let (store, _) = open(dir.path(), StoreOptions::default());
    assert_eq!(store.reader().setting("routing").unwrap(), None, "forgotten after a reopen");
}

/// The outbox's rows (format v11): put, replaced, deleted, committed with
/// the outbox's cursor; what a reopened store holds is what was committed,
/// and a store that never had the cursor says so.
#[test]
fn outbox_rows_and_cursor_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let rows = |pairs: &[(&str, Option<&[u8]>)]| {
        Op::PutOutboxRows(pairs.iter().map(|(key, value)| (key.to_string(), value.map(<[u8]>::to_vec))).collect())
    };
    let read = |store: &Store| {
        let mut seen = Vec::new();
        store
            .reader()
            .outbox_rows(|key, value| {
                seen.push((key.to_owned(), value.to_vec()));
                Ok(())
            })
            .unwrap();
        seen
    };
    {
        let (store, _) = open(dir.path(), StoreOptions::default());
        assert_eq!(store.reader().stored_cursor("outbox").unwrap(), None);
        store
            .commit_blocking(vec![
                rows(&[("crm-1", Some(b"one")), ("crm-2", Some(b"two")), ("crm-3", Some(b"three"))]),
                Op::SetCursor { consumer: "outbox".into(), seq: 3 },
            ])
            .unwrap();
        store.commit_blocking(vec![rows(&[("crm-1", None), ("crm-2", Some(b"two, tried"))])]).unwrap();
        store.shutdown();
    }
    let (store, _) = open(dir.path(), StoreOptions::default());
    assert_eq!(read(&store), [("crm-2".to_owned(), b"two, tried".to_vec()), ("crm-3".to_owned(), b"three".to_vec())]);
    assert_eq!(store.reader().stored_cursor("outbox").unwrap(), Some(3));
    assert_eq!(store.reader().stored_cursor("reports").unwrap(), None);
}

/// A status for a broadcast's message (format v12: its wamid marked by a
/// `w/` row of `broadcasts`) is logged under the contact, not kept waiting
/// for a message no conversation will hold; one that came before the mark
/// is released into the log when the mark is written.
#[test]
fn statuses_of_broadcast_messages_are_logged_not_kept_waiting() {
    use protocol::events::EventBody;
    let dir = tempfile::tempdir().unwrap();
    let (store, _recorder) = open(dir.path(), StoreOptions::default());
    let mark = |wamid: &str| {
        Op::PutBroadcastRows(vec![(switchboard_storage::broadcast_wamid_key(wamid), Some(b"bc1".to_vec()))])
    };
    store.commit_blocking(vec![mark("wamid.b1")]).unwrap();
    let kept = store.commit_blocking(vec![status("wamid.b1", "delivered")]).unwrap();
    assert_eq!(kept.ingested, vec![IngestOutcome::Kept]);
    let early = store.commit_blocking(vec![status("wamid.b2", "sent")]).unwrap();
    assert_eq!(early.ingested, vec![IngestOutcome::Pending], "not marked yet: it waits");
    store.commit_blocking(vec![mark("wamid.b2")]).unwrap();
    let logged: Vec<(String, String, Option<String>)> = store
        .reader()
        .events_after(0, 10)
        .unwrap()
        .into_iter()
        .filter_map(|(_, event)| match event.body {
            EventBody::Status { wamid, status, .. } => Some((wamid, status, event.contact)),
            _ => None,
        })
        .collect();
    let contact = Some(CONTACT.to_owned());
    assert_eq!(
        logged,
        vec![
            ("wamid.b1".to_owned(), "delivered".to_owned(), contact.clone()),
            ("wamid.b2".to_owned(), "sent".to_owned(), contact)
        ]
    );
    // Released: the same status again is a duplicate, and nothing waits.
    let again = store.commit_blocking(vec![status("wamid.b2", "sent")]).unwrap();
    assert_eq!(again.ingested, vec![IngestOutcome::Duplicate]);
    let mut rows = Vec::new();
    store
        .reader()
        .broadcast_rows_under("w/", |key, _| {
            rows.push(key.to_owned());
            Ok(())
        })
        .unwrap();
    assert_eq!(rows, ["w/wamid.b1", "w/wamid.b2"]);
}

/// The follow-ups' rows (format v12): put, replaced, deleted, committed
/// with the follow-ups' cursor; a reopened store holds what was committed.
#[test]
fn followup_rows_and_cursor_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let rows = |pairs: &[(&str, Option<&[u8]>)]| {
        Op::PutFollowupRows(pairs.iter().map(|(key, value)| (key.to_string(), value.map(<[u8]>::to_vec))).collect())
    };
    let read = |store: &Store| {
        let mut seen = Vec::new();
        store
            .reader()
            .followup_rows(|key, value| {
                seen.push((key.to_owned(), value.to_vec()));
                Ok(())
            })
            .unwrap();
        seen
    };
    {
        let (store, _) = open(dir.path(), StoreOptions::default());
        store
            .commit_blocking(vec![
                rows(&[("cv1/promise", Some(b"one")), ("cv2/promise", Some(b"two"))]),
                Op::SetCursor { consumer: "followups".into(), seq: 5 },
            ])
            .unwrap();
        store.commit_blocking(vec![rows(&[("cv1/promise", None), ("cv2/promise", Some(b"two, moved"))])]).unwrap();
        store.shutdown();
    }
    let (store, _) = open(dir.path(), StoreOptions::default());
    assert_eq!(read(&store), [("cv2/promise".to_owned(), b"two, moved".to_vec())]);
    assert_eq!(store.reader().stored_cursor("followups").unwrap(), Some(5));
    assert!(store.reader().outbox_rows(|_, _| panic!("no outbox row")).is_ok());
}
