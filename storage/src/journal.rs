//! The journal: an append-only log of table changes, in segment files under
//! `DIR/journal/`. The writer appends one entry per group commit and syncs it
//! (`fdatasync`) before anyone is answered; the redb tables catch up later
//! (see `writer.rs`), and at open every entry the tables do not hold yet is
//! applied again.
//!
//! A segment is named by the seq of its first entry (`{seq:020}.wal`) and
//! holds frames: payload length (u32 LE), CRC-32 of the payload (u32 LE),
//! payload ([`crate::changes::encode_entry`]). A frame cut short or failing
//! its CRC can only be the last one written, never synced, so never
//! acknowledged: the tail from there is dropped. Such a frame anywhere but at
//! the end of the last segment is corruption, and opening fails.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::changes::{Write, decode_entry, encode_entry};
use crate::io::{IoFaults, check, free_bytes, write_all_at};
use crate::{Result, StorageError};

const FRAME_HEADER: usize = 8;
/// Bytes written to a segment that was not preallocated before the next one is.
const PREALLOCATE_AFTER: u64 = 1 << 20;
/// A preallocated segment has room for the frame that crosses its nominal size.
const SPARE_SLACK: u64 = 1 << 20;
/// A spare segment is made only while the file system has at least this many
/// times its size free: it must never take the last free space, which the
/// tables and the journal itself need (docs/OPERATIONS.md, "A full disk").
const SPARE_FREE_FACTOR: u64 = 4;

pub(crate) struct Journal {
    dir: PathBuf,
    /// Closed segments, oldest first: (seq of the first entry, path).
    closed: Vec<(u64, PathBuf)>,
    current: File,
    current_first: u64,
    current_path: PathBuf,
    current_len: u64,
    segment_bytes: u64,
    frame: Vec<u8>,
    /// The next segment, being zero-filled and synced by a helper thread:
    /// overwriting blocks that exist makes each `fdatasync` cheaper (no
    /// size or extent change to commit) than appending to a growing file.
    spare: Option<JoinHandle<std::io::Result<PathBuf>>>,
    /// Whether the current segment was preallocated.
    preallocated: bool,
    /// Set when a write or sync failed: the bytes after `current_len` may
    /// hold part of an entry that was never acknowledged. The next append
    /// first cuts them off and syncs that (after a failed fsync only what a
    /// later sync confirms can be trusted), then goes on.
    damaged: Option<String>,
    faults: Option<Arc<IoFaults>>,
}

/// The entries a reopened journal holds after `applied`, in order.
pub(crate) type Replay = Vec<(u64, Vec<Write>)>;

fn io_error(what: &str, path: &Path, error: std::io::Error) -> StorageError {
    StorageError::Invalid(format!("journal: cannot {what} {}: {error}", path.display()))
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|handle| handle.sync_all()).map_err(|error| io_error("sync the directory", dir, error))
}

impl Journal {
    /// Opens the journal in `dir`, returns every entry after `applied`, and
    /// starts a new segment for the entries that follow the last one.
    pub(crate) fn open(
        dir: &Path,
        applied: u64,
        segment_bytes: u64,
        faults: Option<Arc<IoFaults>>,
    ) -> Result<(Journal, Replay)> {
        std::fs::create_dir_all(dir).map_err(|error| io_error("create", dir, error))?;
        let mut segments: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|error| io_error("list", dir, error))? {
            let path = entry.map_err(|error| io_error("list", dir, error))?.path();
            let first = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.strip_suffix(".wal"))
                .and_then(|seq| seq.parse::<u64>().ok());
            if let Some(first) = first {
                segments.push((first, path));
            } else if path.extension().is_some_and(|extension| extension == "spare") {
                let _ = std::fs::remove_file(&path); // a preallocation cut short by a stop
            }
        }
        segments.sort();
        let mut replay = Vec::new();
        let mut last = applied;
        let count = segments.len();
        for (position, (_, path)) in segments.iter().enumerate() {
            let bytes = std::fs::read(path).map_err(|error| io_error("read", path, error))?;
            let mut at = 0;
            while at < bytes.len() {
                let Some((payload, next)) = frame_at(&bytes, at) else {
                    if bytes[at..].iter().all(|byte| *byte == 0) {
                        break; // the unused, zero-filled end of a preallocated segment
                    }
                    if position + 1 == count {
                        // Cut it off, so that this segment reads clean once it is no longer the last.
                        let file = OpenOptions::new().write(true).open(path);
                        file.and_then(|file| file.set_len(at as u64).and_then(|()| file.sync_all()))
                            .map_err(|error| io_error("truncate", path, error))?;
                        tracing::warn!(
                            segment = %path.display(),
                            dropped_bytes = bytes.len() - at,
                            "the journal ends in an unsynced, unacknowledged entry; dropping it"
                        );
                        break;
                    }
                    return Err(StorageError::Invalid(format!(
                        "journal: segment {} is damaged at byte {at}, before the end of the journal",
                        path.display()
                    )));
                };
                let (seq, writes) = decode_entry(payload)?;
                if seq > applied {
                    if seq != last + 1 {
                        return Err(StorageError::Invalid(format!(
                            "journal: entry {seq} follows {last} in {}; entries are missing",
                            path.display()
                        )));
                    }
                    replay.push((seq, writes));
                }
                last = last.max(seq);
                at = next;
            }
        }
        let next = last + 1;
        let current_path = segment_path(dir, next);
        let current = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&current_path)
            .map_err(|error| io_error("create", &current_path, error))?;
        sync_dir(dir)?;
        let journal = Journal {
            spare: None,
            preallocated: false,
            dir: dir.to_owned(),
            closed: segments.into_iter().filter(|(first, _)| *first != next).collect(),
            current,
            current_first: next,
            current_path,
            current_len: 0,
            segment_bytes,
            frame: Vec::new(),
            damaged: None,
            faults,
        };
        Ok((journal, replay))
    }

    /// Appends one entry and syncs it. After this returns Ok the entry
    /// survives a crash of the process or the machine.
    pub(crate) fn append(&mut self, seq: u64, writes: &[Write]) -> Result<()> {
        if let Some(problem) = self.damaged.clone() {
            self.cut_damaged_tail().map_err(|error| {
                StorageError::Unavailable(format!(
                    "journal: cannot recover from an earlier failure ({problem}): {error}"
                ))
            })?;
            tracing::info!(segment = %self.current_path.display(), "the journal accepts writes again");
        }
        // A journal in use gets a preallocated next segment (an idle one, a
        // test's, never writes 64 MiB of zeros); then it rotates when the
        // segment is full, or early, to leave a segment that was not
        // preallocated as soon as a preallocated one is ready.
        if self.spare.is_none() && !self.preallocated && self.current_len >= PREALLOCATE_AFTER {
            self.prepare_spare();
        }
        let spare_ready = self.spare.as_ref().is_some_and(|helper| helper.is_finished());
        if self.current_len >= self.segment_bytes || (!self.preallocated && spare_ready) {
            self.rotate(seq)?;
        }
        self.frame.clear();
        self.frame.extend_from_slice(&[0; FRAME_HEADER]);
        encode_entry(seq, writes, &mut self.frame);
        let payload_len = (self.frame.len() - FRAME_HEADER) as u32;
        let crc = crc32fast::hash(&self.frame[FRAME_HEADER..]);
        self.frame[0..4].copy_from_slice(&payload_len.to_le_bytes());
        self.frame[4..8].copy_from_slice(&crc.to_le_bytes());
        // Positional: after a failure the file offset says nothing.
        let result = write_all_at(&self.current, &self.frame, self.current_len, &self.faults)
            .and_then(|()| check(&self.faults))
            .and_then(|()| self.current.sync_data());
        if let Err(error) = result {
            let problem = format!("writing {}: {error}", self.current_path.display());
            self.damaged = Some(problem.clone());
            // Its space is better used by the tables and the next entries.
            self.drop_spare();
            return Err(StorageError::Unavailable(format!("journal: {problem}")));
        }
        self.current_len += self.frame.len() as u64;
        Ok(())
    }

    /// Cuts the current segment back to its last good entry and syncs that.
    /// The unused, zero-filled rest of a preallocated segment goes with it.
    fn cut_damaged_tail(&mut self) -> std::io::Result<()> {
        check(&self.faults)?;
        self.current.set_len(self.current_len)?;
        check(&self.faults)?;
        self.current.sync_all()?;
        self.preallocated = false;
        self.damaged = None;
        Ok(())
    }

    /// Removes the spare segment, waiting for its helper if it is busy.
    fn drop_spare(&mut self) {
        if let Some(Ok(Ok(spare))) = self.spare.take().map(|helper| helper.join()) {
            let _ = std::fs::remove_file(spare);
        }
    }

    fn rotate(&mut self, next_seq: u64) -> Result<()> {
        let path = segment_path(&self.dir, next_seq);
        let (file, preallocated) = match self.spare.take().map(|helper| helper.join()) {
            Some(Ok(Ok(spare))) => {
                let taken = std::fs::rename(&spare, &path).and_then(|()| OpenOptions::new().write(true).open(&path));
                match taken {
                    Ok(file) => (file, true),
                    Err(error) => {
                        let _ = std::fs::remove_file(&spare);
                        return Err(io_error("take the preallocated segment as", &path, error));
                    }
                }
            }
            other => {
                if let Some(Ok(Err(error))) = other {
                    tracing::warn!(%error, "could not preallocate a journal segment; appending instead");
                }
                let file = OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(&path)
                    .map_err(|error| io_error("create", &path, error))?;
                (file, false)
            }
        };
        sync_dir(&self.dir)?;
        self.preallocated = preallocated;
        let old_path = std::mem::replace(&mut self.current_path, path);
        self.closed.push((self.current_first, old_path));
        self.current = file;
        self.current_first = next_seq;
        self.current_len = 0;
        self.prepare_spare();
        Ok(())
    }

    /// Starts preallocating the next segment on a helper thread, unless the
    /// file system is short of space (then the next segment is appended to
    /// as it grows). `fallocate` reserves the whole segment at once or fails
    /// without taking anything; zero-filling it then makes its blocks
    /// written ones, whose overwrite needs no extent change at each sync.
    fn prepare_spare(&mut self) {
        let path = self.dir.join(format!("{:020}.spare", self.current_first));
        let bytes = self.segment_bytes + SPARE_SLACK;
        match free_bytes(&self.current) {
            Ok(free) if free >= bytes.saturating_mul(SPARE_FREE_FACTOR) => {}
            Ok(free) => {
                tracing::debug!(free, spare = bytes, "little free space: the next journal segment is not preallocated");
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "cannot read the free space: the next journal segment is not preallocated");
                return;
            }
        }
        let faults = self.faults.clone();
        let helper = std::thread::Builder::new().name("switchboard-journal-prealloc".to_owned()).spawn(move || {
            let filled = (|| {
                check(&faults)?;
                let mut file = OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
                match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, bytes) {
                    // A file system without it: zero-filling alone still works.
                    Ok(()) | Err(rustix::io::Errno::OPNOTSUPP) => {}
                    Err(error) => return Err(error.into()),
                }
                let zeros = vec![0u8; 1 << 20];
                let mut written = 0;
                while written < bytes {
                    let chunk = zeros.len().min((bytes - written) as usize);
                    file.write_all(&zeros[..chunk])?;
                    written += chunk as u64;
                }
                check(&faults)?;
                file.sync_all()
            })();
            match filled {
                Ok(()) => Ok(path),
                Err(error) => {
                    let _ = std::fs::remove_file(&path);
                    Err(error)
                }
            }
        });
        self.spare = helper.ok();
    }

    /// Stops preallocating and removes the spare segment (a clean stop).
    pub(crate) fn close(mut self) {
        self.drop_spare();
    }

    /// Deletes the closed segments whose entries the tables all hold.
    pub(crate) fn release(&mut self, applied: u64) {
        while !self.closed.is_empty() {
            let next_first = self.closed.get(1).map(|(first, _)| *first).unwrap_or(self.current_first);
            if next_first - 1 > applied {
                break;
            }
            let (_, path) = self.closed.remove(0);
            if let Err(error) = std::fs::remove_file(&path)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(segment = %path.display(), %error, "could not delete an applied journal segment");
            }
        }
    }
}

/// The payload of the frame at `at` and where the next frame starts, or None
/// when the frame is cut short or fails its CRC.
fn frame_at(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(at..at + FRAME_HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    if len == 0 {
        return None; // no entry is empty: this is the zero-filled end
    }
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let payload = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, at + FRAME_HEADER + len))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt as _;

    use super::*;
    use crate::changes::{Key, TableId};

    fn entry(n: u64) -> Vec<Write> {
        vec![Write::put(TableId::Inbox, Key::U64(n), vec![n as u8; 40])]
    }

    #[test]
    fn entries_come_back_after_the_applied_seq_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, replay) = Journal::open(dir.path(), 0, 200, None).unwrap();
        assert!(replay.is_empty());
        for seq in 1..=10 {
            journal.append(seq, &entry(seq)).unwrap();
        }
        assert!(journal.closed.len() >= 2, "small segments rotate");
        // A torn last frame: half of an eleventh entry.
        let mut frame = Vec::new();
        encode_entry(11, &entry(11), &mut frame);
        journal.current.write_all_at(&[60, 0, 0, 0, 1, 2, 3, 4], journal.current_len).unwrap();
        journal.current.write_all_at(&frame[..10], journal.current_len + 8).unwrap();
        drop(journal);

        let (journal, replay) = Journal::open(dir.path(), 4, 200, None).unwrap();
        let seqs: Vec<u64> = replay.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (5..=10).collect::<Vec<_>>());
        assert_eq!(replay[0].1, entry(5));
        assert_eq!(journal.current_first, 11);

        // Once the tables hold everything, the old segments go.
        let mut journal = journal;
        journal.release(10);
        assert!(journal.closed.is_empty());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "wal"))
            .collect();
        assert_eq!(left.len(), 1, "only the current segment is left");
        drop(journal);
        // The segment cut at its torn tail reads clean now that it is not the last.
        let (_, replay) = Journal::open(dir.path(), 10, 200, None).unwrap();
        assert!(replay.is_empty());
    }

    #[test]
    fn an_entry_whose_write_or_sync_failed_is_cut_off_and_its_seq_reused() {
        // Fail at the write (half of it lands), then at the sync (all of it lands).
        for fail_after in [0, 1] {
            let dir = tempfile::tempdir().unwrap();
            let faults = IoFaults::new();
            let (mut journal, _) = Journal::open(dir.path(), 0, 1 << 20, Some(faults.clone())).unwrap();
            journal.append(1, &entry(1)).unwrap();
            faults.fail_after(fail_after);
            assert!(matches!(journal.append(2, &entry(99)), Err(StorageError::Unavailable(_))));
            // Still full: the cut itself fails, and so does the append.
            assert!(journal.append(2, &entry(98)).is_err());
            faults.heal();
            journal.append(2, &entry(2)).unwrap();
            journal.append(3, &entry(3)).unwrap();
            drop(journal);
            let (_, replay) = Journal::open(dir.path(), 0, 1 << 20, None).unwrap();
            let entries: Vec<_> = replay.iter().map(|(seq, writes)| (*seq, writes.clone())).collect();
            assert_eq!(entries, vec![(1, entry(1)), (2, entry(2)), (3, entry(3))], "failing at op {fail_after}");
        }
    }

    #[test]
    fn damage_before_the_end_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path(), 0, 100, None).unwrap();
        for seq in 1..=6 {
            journal.append(seq, &entry(seq)).unwrap();
        }
        let first = journal.closed[0].1.clone();
        drop(journal);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[12] ^= 0xff;
        std::fs::write(&first, bytes).unwrap();
        assert!(Journal::open(dir.path(), 0, 100, None).is_err());
    }
}
