//! Switchboard's embedded store: one redb file, a journal, one writer thread
//! with group commit, one materializer thread.
//!
//! Layout:
//! - [`records`]: what is stored (conversation, message, thread, agent records and
//!   the inbox items that wait to be processed).
//! - [`tables`]: the redb tables and their key shapes.
//! - [`writer`]: the writer thread. Callers hand it a [`Batch`] of [`Op`]s; it
//!   drains every batch waiting, turns them into table writes, appends those
//!   to the journal as one entry and syncs it, answers each caller, then hands
//!   what was committed to an [`EventSink`] in commit order. The materializer
//!   thread brings the redb tables up to date with the journal in large
//!   transactions.
//! - `changes`: writes as values, the overlay of writes the tables lack, the
//!   progress of the tables behind the journal.
//! - `journal`: the append-only segment files.
//! - `io`: redb's file backend, the reopenable database handle, free space,
//!   and [`IoFaults`], the fault injection point tests use.
//! - [`audit`]: the audit log's entries, Merkle nodes, index and checkpoints
//!   as its consumer commits them, and a snapshot to read them.
//! - [`read`]: reads from any thread at any time: keys through the overlay,
//!   ranges once the tables have caught up.
//!
//! Invariants: nothing is announced before it is durable (the sink runs after
//! the journal sync returns); agent event `seq`s are allocated by the writer
//! thread in commit order, so they are gap-free and ordered by commit.
//!
//! Deliberately absent: business rules (which conversation a message opens, who
//! is assigned) live in `actors`; this crate stores what it is told and keeps the
//! indexes consistent. No network, no async runtime requirement beyond channels.

pub mod audit;
mod changes;
mod io;
mod journal;
pub mod metrics;
pub mod read;
pub mod records;
pub mod tables;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use io::IoFaults;
pub use read::Reader;

/// The `broadcasts` row (format v12) that marks `wamid` as a broadcast's
/// message: its statuses are logged, not kept waiting for a conversation.
pub fn broadcast_wamid_key(wamid: &str) -> String {
    format!("w/{wamid}")
}
pub use read::{AudienceConversation, ContactConversation, ConversationFilter};
pub use records::*;
pub use writer::{
    Batch, CommitOutcome, EventSink, IngestOutcome, NullSink, Op, Published, conversation_id, conversation_number,
};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Boxed: redb's error is large and this type travels through every call.
    #[error("database error: {0}")]
    Db(Box<redb::Error>),
    #[error("cannot encode or decode a record: {0}")]
    Codec(String),
    #[error("the store is shut down")]
    Closed,
    /// The disk refuses writes (full, or failing): the store answers again
    /// by itself once it accepts them.
    #[error("the store cannot write: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn db_error<E: Into<redb::Error>>(error: E) -> StorageError {
    StorageError::Db(Box::new(error.into()))
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Options for opening the store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How many recent events per agent stay replayable for `resume_from`.
    pub agent_event_retention: u64,
    /// Most batches folded into one transaction.
    pub max_group: usize,
    /// redb's page cache. Bounded so memory stays flat as the file grows.
    pub cache_bytes: usize,
    /// A journal segment is closed (and deleted once the tables hold it)
    /// past this size.
    pub journal_segment_bytes: u64,
    /// Journaled writes the tables may lag behind by before commits wait.
    pub max_unapplied_writes: u64,
    /// Fails I/O on purpose (tests); `None` in production.
    pub faults: Option<Arc<IoFaults>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            agent_event_retention: 1_000,
            max_group: 4_096,
            cache_bytes: 256 * 1024 * 1024,
            journal_segment_bytes: 64 * 1024 * 1024,
            max_unapplied_writes: 100_000,
            faults: None,
        }
    }
}

/// The store: a redb database, its journal, its writer thread and a reader.
pub struct Store {
    db: Arc<io::Db>,
    writer: writer::WriterHandle,
    overlay: Arc<changes::Overlay>,
    progress: Arc<changes::Progress>,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) `DIR/switchboard.redb`, creates missing tables and
    /// starts the writer thread. `sink` receives everything committed.
    pub fn open(dir: &Path, options: StoreOptions, sink: Arc<dyn EventSink>) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|error| StorageError::Invalid(format!("cannot create data dir {}: {error}", dir.display())))?;
        let path = dir.join("switchboard.redb");
        let db = io::Db::open(&path, options.cache_bytes, options.faults.clone())?;
        tables::create_all(&db.get())?;
        // The tables hold the journal up to `applied`; apply what follows.
        let mut applied = writer::read_counter(&db.get(), writer::JOURNAL_APPLIED)?;
        let (mut journal, replay) = journal::Journal::open(
            &dir.join("journal"),
            applied,
            options.journal_segment_bytes,
            options.faults.clone(),
        )?;
        if let Some(last) = replay.last().map(|(seq, _)| *seq) {
            // The tables are as of `applied`: they hold none of `replay`.
            writer::apply_entries(&db.get(), &replay, last, true, true)?;
            tracing::info!(entries = replay.len(), through = last, "applied the journal to the tables");
            applied = last;
        }
        journal.release(applied);
        let db = Arc::new(db);
        let overlay = Arc::new(changes::Overlay::default());
        let progress = Arc::new(changes::Progress::starting_at(applied));
        let writer = writer::WriterHandle::start(writer::WriterParts {
            db: db.clone(),
            options,
            sink,
            journal,
            overlay: overlay.clone(),
            progress: progress.clone(),
        })?;
        Ok(Store { db, writer, overlay, progress, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies `batch` durably (group commit) and returns what it produced.
    pub async fn commit(&self, batch: Batch) -> Result<CommitOutcome> {
        self.writer.commit(batch).await
    }

    /// The same from a thread that is not in an async context.
    pub fn commit_blocking(&self, batch: Batch) -> Result<CommitOutcome> {
        self.writer.commit_blocking(batch)
    }

    pub fn reader(&self) -> Reader {
        Reader::new(self.db.clone(), self.overlay.clone(), self.progress.clone())
    }

    /// Stops the writer after it has committed everything already handed to it.
    pub fn shutdown(&self) {
        self.writer.shutdown();
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.writer.shutdown();
    }
}
