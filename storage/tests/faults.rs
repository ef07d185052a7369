//! I/O fault injection (`IoFaults`): the Nth write, sync or length change of
//! the journal or the redb file fails, and every one after it, as on a full
//! disk. For any failure point, whatever was acknowledged survives a reopen,
//! exactly once; and once writes succeed again the same store takes commits
//! and brings its tables up to date without being reopened.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use protocol::webhook::InboundMessage;
use switchboard_storage::{IngestMessage, IoFaults, NullSink, Op, StorageError, Store, StoreOptions};

/// Recovery is waited for, never timed: this is only the give-up bound.
const RECOVERY_BOUND: Duration = Duration::from_secs(20);

fn ingest(wamid: &str) -> Op {
    let message: InboundMessage = serde_json::from_value(serde_json::json!({
        "id": wamid, "from": "9198", "timestamp": "1795514400", "type": "text", "text": {"body": "hi"}
    }))
    .unwrap();
    Op::IngestMessage(IngestMessage {
        phone_number_id: "PN1".to_owned(),
        contact_key: "9198".to_owned(),
        contact: None,
        message: Box::new(message),
    })
}

/// A scratch directory in memory where there is one: the faults here are
/// injected, so real syncs would only make the test slow.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { tempfile::tempdir_in(shm).unwrap() } else { tempfile::tempdir().unwrap() }
}

fn options(faults: Option<Arc<IoFaults>>) -> StoreOptions {
    // Small segments: rotations (and their file creations) are among the
    // failure points too.
    StoreOptions { journal_segment_bytes: 2048, cache_bytes: 1 << 20, faults, ..StoreOptions::default() }
}

/// The wamids in the inbox, in seq order, read once the tables are up to date.
fn stored_wamids(store: &Store) -> Result<Vec<String>, StorageError> {
    Ok(store.reader().inbox()?.into_iter().map(|entry| entry_wamid(&entry)).collect())
}

fn entry_wamid(entry: &switchboard_storage::InboxEntry) -> String {
    match &entry.item {
        switchboard_storage::InboxItem::Message { message, .. } => message.id.clone(),
        other => panic!("only messages are ingested here: {other:?}"),
    }
}

fn eventually<T>(mut attempt: impl FnMut() -> Option<T>, what: &str) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = attempt() {
            return value;
        }
        assert!(started.elapsed() < RECOVERY_BOUND, "{what}: not within {RECOVERY_BOUND:?}");
        // Waiting for the store's own retry (every 0.25 s), not for business time.
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn check_all_there(dir: &Path, acknowledged: &[String]) {
    let store = Store::open(dir, options(None), Arc::new(NullSink)).unwrap();
    let stored = stored_wamids(&store).unwrap();
    let mut unique = stored.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), stored.len(), "no message stored twice: {stored:?}");
    for wamid in acknowledged {
        assert!(stored.contains(wamid), "{wamid} was acknowledged and is lost; stored {stored:?}");
        assert!(store.reader().has_inbound(wamid).unwrap());
    }
}

/// Commits `count` messages named `prefix.n`, one batch each; a range read
/// every third one makes the materializer write the tables now (so its
/// writes are failure points too). Returns the acknowledged wamids.
fn commit_some(store: &Store, prefix: &str, count: usize) -> Vec<String> {
    let mut acknowledged = Vec::new();
    for n in 0..count {
        let wamid = format!("{prefix}.{n}");
        match store.commit_blocking(vec![ingest(&wamid)]) {
            Ok(_) => acknowledged.push(wamid),
            Err(error) => assert!(
                matches!(error, StorageError::Unavailable(_)),
                "a failed write is reported as unavailable, not {error:?}"
            ),
        }
        if n % 3 == 2 {
            // Refused at once while the tables cannot be written; never a hang.
            let _ = store.reader().inbox();
        }
    }
    acknowledged
}

proptest! {
    // Each case opens a store (≈ 0.3 s for redb in a debug build) and goes
    // through several failure points on it, then reopens it once.
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn acknowledged_commits_survive_any_io_failure_point(
        rounds in prop::collection::vec((0u64..120, 0usize..6, 1usize..8), 1..3),
        fail_at_close in 0u64..60,
    ) {
        let dir = scratch_dir();
        let faults = IoFaults::new();
        let store = Store::open(dir.path(), options(Some(faults.clone())), Arc::new(NullSink)).unwrap();
        let mut acknowledged = Vec::new();
        for (round, (fail_after, before, during)) in rounds.into_iter().enumerate() {
            acknowledged.extend(commit_some(&store, &format!("r{round}.before"), before));
            faults.fail_after(fail_after);
            acknowledged.extend(commit_some(&store, &format!("r{round}.during"), during));
            // Space returns: the same store takes commits again and its
            // tables catch up (redb reopened after its I/O error).
            faults.heal();
            let wamid = format!("r{round}.after");
            eventually(|| store.commit_blocking(vec![ingest(&wamid)]).ok(), "a commit after healing");
            acknowledged.push(wamid);
            let stored = eventually(|| stored_wamids(&store).ok(), "the tables after healing");
            for wamid in &acknowledged {
                prop_assert!(stored.contains(wamid), "{} missing in place; stored {:?}", wamid, stored);
            }
        }
        // More commits, then the disk fills again and the store is closed
        // while full: what the tables lack must come back from the journal,
        // written after the failures above.
        acknowledged.extend(commit_some(&store, "closing", 4));
        faults.fail_after(fail_at_close);
        acknowledged.extend(commit_some(&store, "closing-full", 3));
        drop(store);
        check_all_there(dir.path(), &acknowledged);
    }
}

#[test]
fn a_failed_journal_write_is_cut_off_and_the_journal_goes_on() {
    let dir = scratch_dir();
    let faults = IoFaults::new();
    let store = Store::open(dir.path(), options(Some(faults.clone())), Arc::new(NullSink)).unwrap();
    store.commit_blocking(vec![ingest("one")]).unwrap();
    // The next journal write fails; its sync never happens.
    faults.fail_after(0);
    let refused = store.commit_blocking(vec![ingest("two")]);
    assert!(matches!(refused, Err(StorageError::Unavailable(_))), "{refused:?}");
    faults.heal();
    store.commit_blocking(vec![ingest("three")]).unwrap();
    assert_eq!(eventually(|| stored_wamids(&store).ok(), "the tables"), ["one", "three"]);
    drop(store);
    check_all_there(dir.path(), &["one".to_owned(), "three".to_owned()]);
    let store = Store::open(dir.path(), options(None), Arc::new(NullSink)).unwrap();
    assert!(!store.reader().has_inbound("two").unwrap(), "a refused entry does not come back");
}

/// A group refused because its journal entry could not be written takes no
/// seq of the conversation event log: the log stays gap-free.
#[test]
fn a_refused_commit_leaves_no_gap_in_the_event_log() {
    let dir = scratch_dir();
    let faults = IoFaults::new();
    let store = Store::open(dir.path(), options(Some(faults.clone())), Arc::new(NullSink)).unwrap();
    let logged = |text: &str| {
        Op::Event(Box::new(protocol::events::Event {
            at: 0,
            conversation_id: None,
            contact: None,
            phone_number_id: None,
            actor: protocol::events::Actor::System,
            body: protocol::events::EventBody::ConfigurationChanged {
                section: text.to_owned(),
                detail: serde_json::Value::Null,
            },
        }))
    };
    store.commit_blocking(vec![logged("first")]).unwrap();
    faults.fail_after(0);
    let refused = store.commit_blocking(vec![logged("refused")]);
    assert!(matches!(refused, Err(StorageError::Unavailable(_))), "{refused:?}");
    faults.heal();
    eventually(|| store.commit_blocking(vec![logged("second")]).ok(), "a commit after healing");
    let events = eventually(|| store.reader().events_after(0, 10).ok(), "the log after healing");
    let sections: Vec<(u64, String)> = events
        .into_iter()
        .map(|(seq, event)| match event.body {
            protocol::events::EventBody::ConfigurationChanged { section, .. } => (seq, section),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sections, vec![(1, "first".to_owned()), (2, "second".to_owned())]);
}
