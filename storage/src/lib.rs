//! Switchboard's embedded store: one redb file, one writer thread, group commit.
//!
//! Layout:
//! - [`records`]: what is stored (conversation, message, thread, agent records and
//!   the inbox items that wait to be processed).
//! - [`tables`]: the redb tables and their key shapes.
//! - [`writer`]: the single writer thread. Callers hand it a [`Batch`] of [`Op`]s;
//!   it drains every batch waiting, applies them all in one write transaction
//!   committed with `Durability::Immediate` (fsync), answers each caller, then
//!   hands what was committed to an [`EventSink`] in commit order.
//! - [`read`]: snapshot reads (redb MVCC), safe from any thread at any time.
//!
//! Invariants: nothing is announced before it is durable (the sink runs after the
//! commit returns); agent event `seq`s are allocated inside the transaction that
//! stores the event, so they are gap-free and ordered by commit.
//!
//! Deliberately absent: business rules (which conversation a message opens, who
//! is assigned) live in `actors`; this crate stores what it is told and keeps the
//! indexes consistent. No network, no async runtime requirement beyond channels.

pub mod read;
pub mod records;
pub mod tables;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use read::ConversationFilter;
pub use read::Reader;
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
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { agent_event_retention: 1_000, max_group: 4_096, cache_bytes: 256 * 1024 * 1024 }
    }
}

/// The store: a redb database, its writer thread and a reader.
pub struct Store {
    db: Arc<redb::Database>,
    writer: writer::WriterHandle,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) `DIR/switchboard.redb`, creates missing tables and
    /// starts the writer thread. `sink` receives everything committed.
    pub fn open(dir: &Path, options: StoreOptions, sink: Arc<dyn EventSink>) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|error| StorageError::Invalid(format!("cannot create data dir {}: {error}", dir.display())))?;
        let path = dir.join("switchboard.redb");
        let db = redb::Builder::new().set_cache_size(options.cache_bytes).create(&path).map_err(db_error)?;
        tables::create_all(&db)?;
        let db = Arc::new(db);
        let writer = writer::WriterHandle::start(db.clone(), options, sink)?;
        Ok(Store { db, writer, path })
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
        Reader::new(self.db.clone())
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
