//! The audit log (PROTOCOL §5, §9) as a consumer of the conversation event
//! log: each event becomes one entry `{n, at, actor, action, contact,
//! conversation_id, data, prev, hash}`, hash-chained and a leaf of the
//! Merkle tree, and checkpoints of the tree are signed with the key in
//! `audit.signing_key_file`.
//!
//! One task owns the chain's head, the tree's frontier and the consumer's
//! cursor. It wakes when the log grows, reads the new events once the
//! store's tables hold them (in the materializer's rhythm, never hurrying
//! it), and commits their entries, their Merkle nodes, their index rows and
//! its cursor in one batch: after a crash it goes on from the last batch
//! committed, so every event becomes exactly one entry. A request that must
//! see everything committed so far (`GET /api/v1/audit…`) asks the task to
//! catch up first.
//!
//! What the entries look like, how they hash and how a third party checks
//! them: docs/audit.md. The hashing, tree, signatures and export format are
//! the `switchboard-audit` crate; storage keeps the bytes
//! (`storage::audit`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actors::clock::SharedClock;
use audit::Hash;
use audit::checkpoint::{AuditPublicKey, AuditSigningKey, Checkpoint};
use audit::entry::{ChainHead, Entry, EntryContent};
use audit::merkle::{CompletedNode, Frontier, NodePosition, NodeStore, leaf_hash};
use audit::verify::{LogError, LogSummary, LogVerifier};
use protocol::events::Event;
use protocol::time::{UnixMs, format_rfc3339};
use serde_json::{Map, Value};
use storage::audit::{AuditAppend, AuditNode, AuditRow, AuditSnapshot};
use storage::{Op, StorageError, Store};
use tokio::sync::{mpsc, oneshot, watch};

/// The audit log's cursor in the event log.
pub const CONSUMER: &str = "audit";
/// Events read and committed at once.
const PAGE: usize = 4096;
/// After a failed catch-up (a full disk), the next try waits this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The lowest level of the Merkle tree whose nodes are stored: the levels
/// below (subtrees of at most 8 entries) are recomputed from the entries'
/// hashes when a proof needs them, which saves about one stored node per
/// entry for at most 15 extra hashes per level read.
pub const STORED_NODE_LEVEL: u32 = 4;
/// The latest time RFC 3339 with a four-digit year can spell.
const LATEST_SPELLABLE_MS: UnixMs = 253_402_300_799_999;

/// Anything that keeps the audit log from being read or extended.
#[derive(Debug)]
pub struct AuditError(pub String);

impl fmt::Display for AuditError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for AuditError {}

impl From<StorageError> for AuditError {
    fn from(error: StorageError) -> Self {
        AuditError(format!("the store: {error}"))
    }
}

fn fail(context: &str, error: impl fmt::Display) -> AuditError {
    AuditError(format!("{context}: {error}"))
}

/// An audit time: RFC 3339 UTC with milliseconds (clamped to what four
/// digits of year can spell, so every event has an entry).
pub fn audit_time(at: UnixMs) -> String {
    format_rfc3339(at.clamp(0, LATEST_SPELLABLE_MS))
}

/// The entry an event becomes. `data` is the event's body without its
/// `type` (that is the `action`), times as RFC 3339, and the business number
/// the conversation is on.
pub fn entry_content(event: &Event) -> EntryContent {
    let mut data = match serde_json::to_value(&event.body) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    data.remove("type");
    for key in ["due", "until"] {
        if let Some(ms) = data.get(key).and_then(Value::as_i64) {
            data.insert(key.to_owned(), Value::String(audit_time(ms)));
        }
    }
    if let Some(phone_number_id) = &event.phone_number_id {
        data.insert("phone_number_id".to_owned(), Value::String(phone_number_id.clone()));
    }
    EntryContent {
        at: audit_time(event.at),
        actor: event.actor.label(),
        action: event.body.action().to_owned(),
        contact: event.contact.clone(),
        conversation_id: event.conversation_id.clone(),
        data: Value::Object(data),
    }
}

/// The agents an entry concerns: the user who acted, and any agent its
/// data names (assigned, unassigned, transferred from or to).
pub fn agents_named<'a>(actor: &'a str, data: &'a Value) -> Vec<&'a str> {
    let mut agents: Vec<&str> = actor.strip_prefix("user:").into_iter().collect();
    for key in ["agent_id", "from_agent", "to_agent"] {
        if let Some(agent) = data.get(key).and_then(Value::as_str)
            && !agents.contains(&agent)
        {
            agents.push(agent);
        }
    }
    agents
}

/// The index rows an entry is filed under: `c:` its contact, `a:` each
/// agent it concerns. (A conversation's entries are its contact's with that
/// `conversation_id`: one row per entry fewer.)
pub fn index_keys(content: &EntryContent) -> Vec<String> {
    let mut keys = Vec::with_capacity(2);
    if let Some(contact) = &content.contact {
        keys.push(format!("c:{contact}"));
    }
    keys.extend(agents_named(&content.actor, &content.data).into_iter().map(|agent| format!("a:{agent}")));
    keys
}

/// The entry as `GET /api/v1/audit` shows it: its canonical bytes with
/// `"hash"` put in its sorted place (after `data`, before `n`), which is
/// again canonical JSON.
pub fn entry_line(hash: &Hash, canonical: &[u8]) -> Vec<u8> {
    const TAIL: &[u8] = b",\"n\":";
    let at = canonical.windows(TAIL.len()).rposition(|window| window == TAIL).unwrap_or(canonical.len());
    let mut line = Vec::with_capacity(canonical.len() + 76);
    line.extend_from_slice(&canonical[..at]);
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(audit::encoding::encode_hex(hash).as_bytes());
    line.push(b'"');
    line.extend_from_slice(&canonical[at..]);
    line
}

/// A stored entry, parsed.
pub fn parse_entry(hash: &Hash, canonical: &[u8]) -> Result<Entry, AuditError> {
    serde_json::from_slice(&entry_line(hash, canonical)).map_err(|error| fail("a stored audit entry", error))
}

/// The Merkle tree of the first `size` stored entries, for proofs: leaves
/// and the levels below [`STORED_NODE_LEVEL`] from the entries' hashes, the
/// nodes above from `audit_nodes`.
pub struct StoredTree<'a> {
    pub snapshot: &'a AuditSnapshot,
    pub size: u64,
}

/// A node the stored tree lacks or cannot read.
#[derive(Debug)]
pub struct TreeReadError(String);

impl fmt::Display for TreeReadError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for TreeReadError {}

impl NodeStore for StoredTree<'_> {
    type Error = TreeReadError;

    fn leaf_count(&self) -> Result<u64, TreeReadError> {
        Ok(self.size)
    }

    fn complete_subtree(&self, position: NodePosition) -> Result<Hash, TreeReadError> {
        let missing = || TreeReadError(format!("the audit tree has no node at {position}"));
        if position.level >= STORED_NODE_LEVEL {
            return self
                .snapshot
                .node(position.level, position.index)
                .map_err(|error| TreeReadError(error.to_string()))?
                .ok_or_else(missing);
        }
        let width = 1u64 << position.level;
        let first = position.index.checked_mul(width).and_then(|leaf| leaf.checked_add(1)).ok_or_else(missing)?;
        let hashes = self.snapshot.entry_hashes(first, width).map_err(|error| TreeReadError(error.to_string()))?;
        if hashes.len() as u64 != width {
            return Err(missing());
        }
        // A complete subtree's root is the root of a tree of just its leaves.
        let mut subtree = Frontier::new();
        let mut completed = Vec::with_capacity(position.level as usize + 1);
        for hash in &hashes {
            subtree.append_into(leaf_hash(hash), &mut completed);
        }
        Ok(subtree.root())
    }
}

fn parse_checkpoint(tree_size: u64, json: &[u8]) -> Result<Checkpoint, String> {
    serde_json::from_slice(json)
        .map_err(|error| format!("the checkpoint of tree size {tree_size} cannot be read: {error}"))
}

/// The latest signed checkpoint in a snapshot.
pub fn latest_checkpoint(snapshot: &AuditSnapshot) -> Result<Option<Checkpoint>, AuditError> {
    match snapshot.latest_checkpoint()? {
        Some((size, json)) => parse_checkpoint(size, &json).map(Some).map_err(AuditError),
        None => Ok(None),
    }
}

/// What `audit verify` found.
#[derive(Debug)]
pub enum Verified {
    Intact(LogSummary),
    /// The first thing wrong, in log order.
    Broken(LogError),
    /// A stored checkpoint is not even readable JSON.
    Unreadable(String),
}

/// Walks every stored entry once against every stored checkpoint, checked
/// with `key`: the chain, the Merkle roots the checkpoints signed, and that
/// no checkpoint covers more entries than there are.
pub fn verify(snapshot: &AuditSnapshot, key: &AuditPublicKey) -> Result<Verified, AuditError> {
    let mut checkpoints = Vec::new();
    for (size, json) in snapshot.checkpoints()? {
        match parse_checkpoint(size, &json) {
            Ok(checkpoint) => checkpoints.push(checkpoint),
            Err(problem) => return Ok(Verified::Unreadable(problem)),
        }
    }
    let mut verifier = match LogVerifier::new(&checkpoints, key) {
        Ok(verifier) => verifier,
        Err(error) => return Ok(Verified::Broken(error)),
    };
    // Two threads: one reads the chunks out of the store (redb's page reads
    // cost about what the hashing does), the other checks them, so the walk
    // takes the longer of the two rather than their sum (docs/BENCHMARKS.md,
    // "The stored audit log").
    let (chunks, read_chunks) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(CHUNKS_IN_FLIGHT);
    let (read, broken) = std::thread::scope(|scope| {
        let reading = scope
            .spawn(move || snapshot.scan_chunks(1, |first, value| Ok(chunks.send((first, value.to_vec())).is_ok())));
        let broken = check_chunks(&read_chunks, &mut verifier);
        // Stops the reader at its next chunk when the walk ended early.
        drop(read_chunks);
        (reading.join(), broken)
    });
    let read = read.map_err(|_| AuditError("the thread reading the audit log failed".to_owned()))?;
    if let Some(error) = broken? {
        return Ok(Verified::Broken(error));
    }
    read?;
    Ok(match verifier.finish() {
        Ok(summary) => Verified::Intact(summary),
        Err(error) => Verified::Broken(error),
    })
}

/// Chunks read ahead of the check: enough to keep both threads busy, at
/// about 25 KB each.
const CHUNKS_IN_FLIGHT: usize = 32;

/// Checks chunks in order until they run out or one entry fails (`Some`).
fn check_chunks(
    chunks: &std::sync::mpsc::Receiver<(u64, Vec<u8>)>,
    verifier: &mut LogVerifier,
) -> Result<Option<LogError>, AuditError> {
    for (first, value) in chunks {
        for entry in storage::audit::decode_chunk(first, &value)? {
            if let Err(error) = verifier.check_stored(entry.canonical, &entry.hash) {
                return Ok(Some(error));
            }
        }
    }
    Ok(None)
}

impl Verified {
    /// `{ok, entries, head}` (and, when broken, `error` and the first bad
    /// entry or checkpoint).
    pub fn to_json(&self, stored_entries: u64) -> Value {
        match self {
            Verified::Intact(summary) => serde_json::json!({
                "ok": true,
                "entries": summary.chain.entries,
                "head": summary.chain.head,
                "checkpoints": summary.matched_checkpoints.len(),
            }),
            Verified::Broken(error) => {
                let mut answer =
                    serde_json::json!({ "ok": false, "entries": stored_entries, "error": error.to_string() });
                match error {
                    LogError::Chain(chain) => answer["first_bad_entry"] = chain.n.into(),
                    LogError::LogShorterThanCheckpoint { entries, tree_size } => {
                        answer["first_bad_entry"] = (entries + 1).into();
                        answer["bad_checkpoint"] = (*tree_size).into();
                    }
                    LogError::RootMismatch { tree_size, .. } | LogError::Checkpoint { tree_size, .. } => {
                        answer["bad_checkpoint"] = (*tree_size).into();
                    }
                }
                answer
            }
            Verified::Unreadable(problem) => {
                serde_json::json!({ "ok": false, "entries": stored_entries, "error": problem })
            }
        }
    }
}

/// The export of one contact's entries (docs/audit.md "The export file"),
/// those of `from..=to` when given, proven against `checkpoint`.
pub fn export_contact(
    snapshot: &AuditSnapshot,
    contact: &str,
    range: (Option<UnixMs>, Option<UnixMs>),
    checkpoint: &Checkpoint,
    key: &AuditPublicKey,
) -> Result<Vec<u8>, AuditError> {
    let mut numbers = snapshot.indexed(&format!("c:{contact}"), 1, usize::MAX)?;
    numbers.retain(|&n| n <= checkpoint.tree_size);
    let mut entries = Vec::new();
    let mut unreadable = None;
    snapshot.visit_entries(&numbers, |_, hash, at, canonical| {
        if range.0.is_some_and(|from| at < from) || range.1.is_some_and(|to| at > to) {
            return Ok(true);
        }
        match parse_entry(hash, canonical) {
            Ok(entry) => entries.push(entry),
            Err(error) => unreadable = Some(error),
        }
        Ok(unreadable.is_none())
    })?;
    if let Some(error) = unreadable {
        return Err(error);
    }
    let tree = StoredTree { snapshot, size: checkpoint.tree_size.min(snapshot.size()?) };
    audit::export::write_export(contact, &entries, &tree, checkpoint, key).map_err(|error| fail("export", error))
}

/// Appends one entry to `append`: builds it after `chain`'s head, grows the
/// tree, and keeps the nodes that are stored (from [`STORED_NODE_LEVEL`] up).
pub fn push_entry(
    append: &mut AuditAppend,
    chain: &mut ChainHead,
    frontier: &mut Frontier,
    completed: &mut Vec<CompletedNode>,
    content: EntryContent,
    at: UnixMs,
    index: Vec<String>,
) -> Result<(), AuditError> {
    let built = chain.append(content).map_err(|error| fail("an audit entry", error))?;
    frontier.append_into(leaf_hash(&built.hash), completed);
    let kept = completed.iter().filter(|node| node.position.level >= STORED_NODE_LEVEL);
    append.nodes.extend(kept.map(|node| AuditNode {
        level: node.position.level,
        index: node.position.index,
        hash: node.hash,
    }));
    append.entries.push(AuditRow { n: built.entry.n, hash: built.hash, at, canonical: built.canonical_bytes, index });
    Ok(())
}

/// The consumer's state: the chain's end, the tree's right edge, how far
/// it has read the event log, the latest checkpoint.
struct Consumer {
    store: Arc<Store>,
    key: AuditSigningKey,
    clock: SharedClock,
    chain: ChainHead,
    frontier: Frontier,
    cursor: u64,
    latest: Option<Checkpoint>,
}

impl Consumer {
    async fn open(store: Arc<Store>, key: AuditSigningKey, clock: SharedClock) -> Result<Consumer, AuditError> {
        let reader = store.reader().caught_up().await?;
        let snapshot = reader.audit()?;
        let size = snapshot.size()?;
        let head = match size {
            0 => [0; 32],
            _ => snapshot.entry_hash(size)?.ok_or_else(|| AuditError(format!("audit entry {size} is missing")))?,
        };
        let tree = StoredTree { snapshot: &snapshot, size };
        let frontier = Frontier::resume(&tree, size).map_err(|error| fail("the audit tree", error))?;
        let latest = latest_checkpoint(&snapshot)?;
        if let Some(latest) = &latest {
            let signed = audit::encoding::decode_hash(&latest.root).ok();
            let now = (latest.tree_size <= size).then(|| audit::merkle::root(&tree, latest.tree_size).ok()).flatten();
            if signed.is_none() || now != signed {
                tracing::error!(
                    tree_size = latest.tree_size,
                    entries = size,
                    "the stored audit log no longer matches its latest signed checkpoint; run `switchboard audit verify`"
                );
            }
        }
        Ok(Consumer {
            cursor: reader.cursor(CONSUMER)?,
            chain: ChainHead { entries: size, head },
            frontier,
            latest,
            store,
            key,
            clock,
        })
    }

    /// Turns every event after the cursor into entries and commits them
    /// with the cursor. `hurry`: read as soon as the tables can (a request
    /// waits); otherwise in the materializer's own time.
    async fn catch_up(&mut self, hurry: bool) -> Result<usize, AuditError> {
        let mut added = 0;
        loop {
            let base = self.store.reader();
            let reader = if hurry { base.caught_up().await? } else { base.settled().await? };
            let events = reader.events_after(self.cursor, PAGE)?;
            let Some(&(last, _)) = events.last() else { break };
            let mut chain = self.chain;
            let mut frontier = self.frontier.clone();
            let mut append = AuditAppend::default();
            let mut completed: Vec<CompletedNode> = Vec::with_capacity(8);
            for (_, event) in &events {
                let content = entry_content(event);
                let index = index_keys(&content);
                push_entry(&mut append, &mut chain, &mut frontier, &mut completed, content, event.at, index)?;
            }
            let count = events.len();
            self.store
                .commit(vec![
                    Op::AuditAppend(Box::new(append)),
                    Op::SetCursor { consumer: CONSUMER.to_owned(), seq: last },
                ])
                .await?;
            self.chain = chain;
            self.frontier = frontier;
            self.cursor = last;
            added += count;
            metrics::counter!(crate::metrics::AUDIT_ENTRIES_TOTAL).increment(count as u64);
            if count < PAGE {
                break;
            }
        }
        Ok(added)
    }

    /// Signs the tree as it is now, unless the latest checkpoint is of
    /// this very size.
    async fn checkpoint(&mut self) -> Result<Checkpoint, AuditError> {
        let size = self.frontier.size();
        if let Some(latest) = self.latest.as_ref().filter(|latest| latest.tree_size == size) {
            return Ok(latest.clone());
        }
        let at = audit_time(self.clock.now_ms());
        let checkpoint =
            self.key.sign_checkpoint(size, &self.frontier.root(), &at).map_err(|error| fail("a checkpoint", error))?;
        let json = serde_json::to_vec(&checkpoint).map_err(|error| fail("a checkpoint", error))?;
        self.store.commit(vec![Op::AuditCheckpoint { tree_size: size, checkpoint: json }]).await?;
        metrics::counter!(crate::metrics::AUDIT_CHECKPOINTS_TOTAL).increment(1);
        self.latest = Some(checkpoint.clone());
        Ok(checkpoint)
    }

    fn grown_since_checkpoint(&self) -> bool {
        self.latest.as_ref().is_none_or(|latest| latest.tree_size != self.frontier.size())
    }
}

enum Request {
    /// Catch up with everything committed so far; sign when `checkpoint`.
    Sync {
        checkpoint: bool,
        reply: oneshot::Sender<Result<Option<Checkpoint>, String>>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
}

/// The running audit log: its task and the public half of its key.
pub struct AuditLog {
    public_key: AuditPublicKey,
    task: crate::consumer::TaskHandle<Request>,
}

impl AuditLog {
    /// Opens the consumer where it left off and starts its task: it follows
    /// `log_head`, and signs a checkpoint every `checkpoint_every` while the
    /// log grows.
    pub async fn start(
        store: Arc<Store>,
        key: AuditSigningKey,
        clock: SharedClock,
        mut log_head: watch::Receiver<u64>,
        checkpoint_every: Duration,
    ) -> Result<AuditLog, AuditError> {
        let public_key = key.public_key();
        let mut consumer = Consumer::open(store, key, clock).await?;
        let (requests, mut incoming) = mpsc::channel::<Request>(64);
        let task = tokio::spawn(async move {
            let mut signing = tokio::time::interval(checkpoint_every);
            signing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            signing.tick().await;
            log_head.mark_changed();
            let mut following = true;
            loop {
                tokio::select! {
                    biased;
                    request = incoming.recv() => match request {
                        Some(Request::Sync { checkpoint, reply }) => {
                            let mut answer = consumer.catch_up(true).await.map(|_| None);
                            if checkpoint && answer.is_ok() {
                                answer = consumer.checkpoint().await.map(Some);
                            }
                            let _ = reply.send(answer.map_err(|error| error.to_string()));
                        }
                        Some(Request::Stop { reply }) => {
                            if let Err(error) = consumer.catch_up(true).await {
                                tracing::warn!(%error, "the audit log could not catch up before stopping; it will at the next start");
                            } else if consumer.grown_since_checkpoint()
                                && let Err(error) = consumer.checkpoint().await
                            {
                                tracing::warn!(%error, "no checkpoint at stop");
                            }
                            let _ = reply.send(());
                            break;
                        }
                        None => break,
                    },
                    changed = log_head.changed(), if following => {
                        if changed.is_err() {
                            following = false;
                            continue;
                        }
                        if let Err(error) = consumer.catch_up(false).await {
                            tracing::warn!(%error, "the audit log could not read the event log; retrying");
                            tokio::time::sleep(RETRY_AFTER).await;
                            log_head.mark_changed();
                        }
                    }
                    _ = signing.tick() => {
                        if consumer.grown_since_checkpoint()
                            && let Err(error) = consumer.checkpoint().await
                        {
                            tracing::warn!(%error, "could not sign an audit checkpoint; retrying at the next");
                        }
                    }
                }
            }
        });
        Ok(AuditLog { public_key, task: crate::consumer::TaskHandle::new(requests, task) })
    }

    pub fn public_key(&self) -> &AuditPublicKey {
        &self.public_key
    }

    async fn ask(&self, checkpoint: bool) -> Result<Option<Checkpoint>, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.task
            .requests
            .send(Request::Sync { checkpoint, reply })
            .await
            .map_err(|_| AuditError("the audit log has stopped".to_owned()))?;
        answer.await.map_err(|_| AuditError("the audit log has stopped".to_owned()))?.map_err(AuditError)
    }

    /// Returns once every event committed before the call has its entry.
    pub async fn sync(&self) -> Result<(), AuditError> {
        self.ask(false).await.map(drop)
    }

    /// A checkpoint covering every event committed before the call (signed
    /// now unless the latest one already does).
    pub async fn checkpoint(&self) -> Result<Checkpoint, AuditError> {
        self.ask(true).await?.ok_or_else(|| AuditError("no checkpoint was made".to_owned()))
    }

    /// Catches up, signs the tree if it grew, and stops the task.
    pub async fn stop(&self) {
        self.task.stop(|reply| Request::Stop { reply }).await;
    }
}

/// For the command line, with the engine stopped: brings the audit log up
/// to date with the event log and makes sure a checkpoint covers it.
pub async fn bring_up_to_date(
    store: Arc<Store>,
    key: AuditSigningKey,
    clock: SharedClock,
) -> Result<Checkpoint, AuditError> {
    let mut consumer = Consumer::open(store, key, clock).await?;
    consumer.catch_up(true).await?;
    consumer.checkpoint().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::events::{Actor, EventBody, Window};
    use protocol::ws::UnassignReason;
    use serde_json::json;

    fn event(actor: Actor, body: EventBody) -> Event {
        Event {
            at: 1_796_000_000_123,
            conversation_id: Some("cv_1".into()),
            contact: Some("919800000001".into()),
            phone_number_id: Some("PN1".into()),
            actor,
            body,
        }
    }

    #[test]
    fn an_event_becomes_an_entry_with_its_body_as_data() {
        let content = entry_content(&event(
            Actor::user("asha"),
            EventBody::MessageOut {
                id: "wamid.1".into(),
                message_type: "text".into(),
                text: Some("hi".into()),
                template: None,
            },
        ));
        assert_eq!(content.at, "2026-11-30T00:53:20.123Z");
        assert_eq!(content.actor, "user:asha");
        assert_eq!(content.action, "message_out");
        assert_eq!(content.contact.as_deref(), Some("919800000001"));
        assert_eq!(
            content.data,
            json!({ "id": "wamid.1", "message_type": "text", "text": "hi", "template": null, "phone_number_id": "PN1" })
        );
    }

    #[test]
    fn times_in_data_are_rfc3339() {
        let content =
            entry_content(&event(Actor::System, EventBody::WindowOpened { window: Window::Service, until: 0 }));
        assert_eq!(content.data["until"], json!("1970-01-01T00:00:00.000Z"));
        assert_eq!(content.data["window"], json!("service"));
        assert_eq!(audit_time(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(audit_time(-1), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn an_entry_is_filed_under_its_contact_and_agents() {
        let content = entry_content(&event(
            Actor::user("lead"),
            EventBody::Unassigned { agent_id: "asha".into(), reason: UnassignReason::Transferred },
        ));
        assert_eq!(index_keys(&content), vec!["c:919800000001", "a:lead", "a:asha"]);
        let mut login =
            entry_content(&event(Actor::user("asha"), EventBody::Login { role: protocol::model::Role::Agent }));
        login.contact = None;
        login.conversation_id = None;
        assert_eq!(index_keys(&login), vec!["a:asha"]);
    }

    #[test]
    fn a_contact_update_is_filed_under_its_contact_and_the_user() {
        let changes = vec![
            protocol::events::FieldChange { key: "city".into(), old: Value::Null, new: json!("Pune") },
            protocol::events::FieldChange { key: "attributes.score".into(), old: json!(3), new: json!(4.5) },
        ];
        let mut patched = entry_content(&event(Actor::user("boss"), EventBody::ContactUpdated { changes }));
        // A PATCH is about the contact, in no conversation.
        patched.conversation_id = None;
        assert_eq!(patched.action, "contact_updated");
        assert_eq!(index_keys(&patched), vec!["c:919800000001", "a:boss"]);
        assert_eq!(patched.data["changes"][1], json!({"key": "attributes.score", "old": 3, "new": 4.5}));
        let built = ChainHead::empty().append(patched).unwrap();
        assert_eq!(built.entry.action, "contact_updated", "the entry hashes and chains");
        let opted = entry_content(&event(
            Actor::Customer,
            EventBody::ContactUpdated {
                changes: vec![protocol::events::FieldChange {
                    key: "opted_out".into(),
                    old: json!(false),
                    new: json!(true),
                }],
            },
        ));
        assert_eq!(index_keys(&opted), vec!["c:919800000001"], "the customer is no agent");
    }

    #[test]
    fn the_line_is_the_canonical_entry_with_its_hash() {
        let mut fields = Map::new();
        fields.insert("amount".into(), json!(4.50));
        fields.insert("note".into(), json!("\u{e9}t\u{e9} \"ok\"\n"));
        let content =
            entry_content(&event(Actor::user("asha"), EventBody::Closed { fields, outcome: Some("won".into()) }));
        let built = ChainHead::empty().append(content).unwrap();
        let line = entry_line(&built.hash, &built.canonical_bytes);
        let parsed: Entry = serde_json::from_slice(&line).unwrap();
        assert_eq!(parsed, built.entry);
        assert_eq!(serde_json_canonicalizer::to_vec(&parsed).unwrap(), line, "the line is canonical JSON");
    }

    /// The stored tree (nodes kept from [`STORED_NODE_LEVEL`] up, the rest
    /// recomputed) gives the same roots and proofs as a tree kept whole in
    /// memory, for every size; and a consumer reopened on the store goes on
    /// with the same chain head and root.
    #[tokio::test]
    async fn the_stored_tree_proves_what_a_whole_tree_does_across_a_reopen() {
        use audit::merkle::{MemoryNodeStore, consistency_proof, inclusion_proof, root};
        let dir = tempfile::tempdir().unwrap();
        let options = storage::StoreOptions::default;
        let store = Arc::new(Store::open(dir.path(), options(), Arc::new(storage::NullSink)).unwrap());
        let clock: SharedClock = actors::clock::ManualClock::new(1_796_000_000_000);
        let key = AuditSigningKey::from_secret_bytes(&[7; 32]);
        let mut consumer =
            Consumer::open(store.clone(), AuditSigningKey::from_secret_bytes(&[7; 32]), clock.clone()).await.unwrap();
        const EVENTS: u64 = 75;
        for round in 0..3 {
            let batch = (0..EVENTS / 3)
                .map(|i| {
                    let text = format!("message {round}.{i}");
                    let body = EventBody::MessageIn {
                        wamid: format!("w{round}.{i}"),
                        message_type: "text".into(),
                        text: Some(text),
                    };
                    Op::Event(Box::new(event(Actor::Customer, body)))
                })
                .collect();
            store.commit(batch).await.unwrap();
            consumer.catch_up(round % 2 == 0).await.unwrap();
        }
        let checkpoint = consumer.checkpoint().await.unwrap();
        assert_eq!(checkpoint.tree_size, EVENTS);
        let reader = store.reader().caught_up().await.unwrap();
        let snapshot = reader.audit().unwrap();
        let mut whole = MemoryNodeStore::new();
        snapshot
            .scan(1, |_, hash, _, _| {
                whole.append(leaf_hash(hash));
                Ok(true)
            })
            .unwrap();
        let stored = StoredTree { snapshot: &snapshot, size: EVENTS };
        for size in 1..=EVENTS {
            assert_eq!(root(&stored, size).unwrap(), root(&whole, size).unwrap(), "root of {size}");
            for leaf in [0, size / 2, size - 1] {
                assert_eq!(inclusion_proof(&stored, leaf, size).unwrap(), inclusion_proof(&whole, leaf, size).unwrap());
            }
            assert_eq!(
                consistency_proof(&stored, size, EVENTS).unwrap(),
                consistency_proof(&whole, size, EVENTS).unwrap()
            );
        }
        assert_eq!(audit::encoding::encode_hex(&root(&whole, EVENTS).unwrap()), checkpoint.root);
        let head = consumer.chain;
        drop(snapshot);
        drop(consumer);
        let reopened = Consumer::open(store.clone(), key, clock).await.unwrap();
        assert_eq!(reopened.chain, head);
        assert_eq!(reopened.frontier.root(), root(&whole, EVENTS).unwrap());
        assert_eq!((reopened.cursor, reopened.latest.as_ref()), (EVENTS, Some(&checkpoint)));
        store.shutdown();
    }
}
