//! The store's file I/O below redb and the journal:
//! - [`IoFaults`]: an injection point that makes the Nth write, sync or
//!   length change (and every one after it, as a full disk would) fail, for
//!   tests; a failing write writes half its bytes first. The journal and the
//!   redb backend both consult it.
//! - `Db`: the redb database behind a handle that can be reopened. After one
//!   failed write redb refuses everything ("previous I/O error") until it is
//!   opened again; the materializer does that when space returns, without a
//!   restart of the engine.
//! - `free_bytes`: what the file system holding a file has left.
//!
//! The database is opened through our own [`redb::StorageBackend`] (plain
//! positional reads and writes, like redb's `FileBackend`) so that a new
//! instance can be opened while read transactions of the failed one still
//! hold its file: the failed instance can never write again (redb checks its
//! failure flag before every write), so the two never both write. One
//! process at a time is still enforced, by an exclusive `flock` that `Db`
//! holds on the file for as long as the store is open.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use redb::Database;

use crate::{Result, StorageError, db_error};

/// Makes I/O fail on purpose (tests): after [`IoFaults::fail_after`]`(n)`,
/// `n` more operations succeed and every one after them fails with "no space
/// left on device" until [`IoFaults::heal`]. Counted operations: journal
/// writes, syncs and truncations, and redb's writes, syncs and length
/// changes (reads never fail).
#[derive(Debug)]
pub struct IoFaults {
    /// Operations left before failing; `u64::MAX` means never.
    remaining: AtomicU64,
    seen: AtomicU64,
}

impl Default for IoFaults {
    fn default() -> Self {
        IoFaults { remaining: AtomicU64::new(u64::MAX), seen: AtomicU64::new(0) }
    }
}

impl IoFaults {
    pub fn new() -> Arc<IoFaults> {
        Arc::new(IoFaults::default())
    }

    /// Lets `operations` more succeed, then fails every one until healed.
    pub fn fail_after(&self, operations: u64) {
        self.remaining.store(operations, Ordering::Release);
    }

    /// Lets every operation succeed again ("space returned").
    pub fn heal(&self) {
        self.remaining.store(u64::MAX, Ordering::Release);
    }

    /// Operations counted so far (to pick failure points in a test).
    pub fn operations(&self) -> u64 {
        self.seen.load(Ordering::Acquire)
    }

    pub(crate) fn check(&self) -> std::io::Result<()> {
        self.seen.fetch_add(1, Ordering::AcqRel);
        let passed = self.remaining.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| match left {
            u64::MAX => Some(u64::MAX),
            0 => None,
            left => Some(left - 1),
        });
        match passed {
            Ok(_) => Ok(()),
            Err(_) => {
                Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "injected fault: no space left on device"))
            }
        }
    }
}

/// Checks the optional fault injection point before an operation.
pub(crate) fn check(faults: &Option<Arc<IoFaults>>) -> std::io::Result<()> {
    faults.as_ref().map_or(Ok(()), |faults| faults.check())
}

/// `write_all_at` through the fault injection point. An injected failure
/// writes the first half of `data` before it fails, as a disk that fills
/// during a write does.
pub(crate) fn write_all_at(
    file: &File,
    data: &[u8],
    offset: u64,
    faults: &Option<Arc<IoFaults>>,
) -> std::io::Result<()> {
    if let Err(error) = check(faults) {
        let _ = file.write_all_at(&data[..data.len() / 2], offset);
        return Err(error);
    }
    file.write_all_at(data, offset)
}

/// redb's file backend without its lock (see the module comment), with the
/// fault injection point.
#[derive(Debug)]
struct Backend {
    file: File,
    faults: Option<Arc<IoFaults>>,
}

impl redb::StorageBackend for Backend {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut buffer = vec![0; len];
        self.file.read_exact_at(&mut buffer, offset)?;
        Ok(buffer)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        check(&self.faults)?;
        self.file.set_len(len)
    }

    fn sync_data(&self, _eventual: bool) -> std::io::Result<()> {
        check(&self.faults)?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        write_all_at(&self.file, data, offset, &self.faults)
    }
}

/// The redb database, reopened in place after an I/O error.
pub(crate) struct Db {
    current: RwLock<Arc<Database>>,
    path: PathBuf,
    cache_bytes: usize,
    faults: Option<Arc<IoFaults>>,
    /// Bumped at each reopen: a snapshot of an older instance is stale.
    generation: AtomicU64,
    /// Held for the store's lifetime: one process at a time.
    _lock: File,
}

impl Db {
    pub(crate) fn open(path: &Path, cache_bytes: usize, faults: Option<Arc<IoFaults>>) -> Result<Db> {
        let lock = open_read_write(path)?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|error| {
            StorageError::Invalid(format!("{} is in use by another process ({error})", path.display()))
        })?;
        let database = build(path, cache_bytes, &faults)?;
        Ok(Db {
            current: RwLock::new(Arc::new(database)),
            path: path.to_owned(),
            cache_bytes,
            faults,
            generation: AtomicU64::new(0),
            _lock: lock,
        })
    }

    /// The database as it is now (a reopen replaces it; hold it for one
    /// operation, not longer).
    pub(crate) fn get(&self) -> Arc<Database> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Opens the file again and puts the new instance in place of the one
    /// that failed, once `catch_up` has succeeded on it. redb opens at its
    /// last durable commit (quick repair), which may be behind what the
    /// failed instance showed: `catch_up` brings it back, so no reader ever
    /// sees the tables go back in time.
    pub(crate) fn reopen_with(&self, catch_up: impl FnOnce(&Database) -> Result<()>) -> Result<()> {
        let database = build(&self.path, self.cache_bytes, &self.faults)?;
        catch_up(&database)?;
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()),
            Arc::new(database),
        );
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(old);
        Ok(())
    }
}

/// The database file, opened for reading and writing (created if missing).
fn open_read_write(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|error| StorageError::Invalid(format!("cannot open {}: {error}", path.display())))
}

fn build(path: &Path, cache_bytes: usize, faults: &Option<Arc<IoFaults>>) -> Result<Database> {
    let file = open_read_write(path)?;
    redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create_with_backend(Backend { file, faults: faults.clone() })
        .map_err(db_error)
}

/// Whether an error means the disk refused a write: redb then needs to be
/// reopened, and the caller should answer "unavailable".
pub(crate) fn is_io_failure(error: &StorageError) -> bool {
    match error {
        StorageError::Db(error) => matches!(**error, redb::Error::Io(_) | redb::Error::PreviousIo),
        StorageError::Unavailable(_) => true,
        _ => false,
    }
}

/// Bytes an unprivileged writer may still use on the file system holding `file`.
pub(crate) fn free_bytes(file: &File) -> std::io::Result<u64> {
    let stats = rustix::fs::fstatvfs(file)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}
