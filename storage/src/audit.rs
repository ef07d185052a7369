//! What the audit log's consumer stores, and how it is read back. The audit
//! log itself (entries, hashing, the Merkle tree, signatures) is the
//! `switchboard-audit` crate and the engine's consumer; this module keeps
//! bytes it is given, append-only:
//!
//! - [`AUDIT_ENTRIES`]: chunks of consecutive entries, each entry's hash,
//!   time and canonical bytes (RFC 8785, without `hash`), exactly as hashed;
//! - [`AUDIT_NODES`]: the Merkle tree's complete subtrees the consumer
//!   chooses to keep (the lowest levels are cheaper to recompute from the
//!   entries' hashes than to store);
//! - [`AUDIT_INDEX`]: which entries concern which contact and agent;
//! - [`AUDIT_CHECKPOINTS`]: every signed checkpoint, by tree size.
//!
//! The consumer commits a batch of entries, their nodes and its cursor in
//! one [`crate::Op::AuditAppend`] plus [`crate::Op::SetCursor`], so what it
//! made of the event log and how far it read are never apart.

use protocol::time::UnixMs;
use redb::{ReadTransaction, ReadableTable};

use crate::tables::{AUDIT_CHECKPOINTS, AUDIT_ENTRIES, AUDIT_INDEX, AUDIT_NODES};
use crate::{Result, StorageError, db_error};

/// Most entries one value of [`AUDIT_ENTRIES`] holds.
pub const CHUNK_ENTRIES: usize = 64;
/// Bytes of one entry's part of a chunk's header: hash, time, length.
const CHUNK_HEADER_ENTRY: usize = 32 + 8 + 4;

/// One new audit entry, as the consumer built it.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRow {
    pub n: u64,
    /// SHA-256 of `canonical`.
    pub hash: [u8; 32],
    pub at: UnixMs,
    /// The entry without `hash`, RFC 8785 canonical JSON.
    pub canonical: Vec<u8>,
    /// [`AUDIT_INDEX`] keys this entry is found under (`c:…`, `a:…`).
    pub index: Vec<String>,
}

/// A complete Merkle subtree (`level` ≥ 1) to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditNode {
    pub level: u32,
    pub index: u64,
    pub hash: [u8; 32],
}

/// What one consumer commit appends.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditAppend {
    pub entries: Vec<AuditRow>,
    pub nodes: Vec<AuditNode>,
}

/// An entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAuditEntry {
    pub n: u64,
    pub hash: [u8; 32],
    pub at: UnixMs,
    pub canonical: Vec<u8>,
}

/// The key of a node in [`AUDIT_NODES`].
pub fn node_key(level: u32, index: u64) -> u64 {
    (u64::from(level) << 56) | (index & ((1 << 56) - 1))
}

/// A chunk of consecutive entries, as [`AUDIT_ENTRIES`] keeps them under
/// the first one's `n`: their count (u32), then for each its hash (32),
/// time (i64) and length (u32), all little-endian, then their canonical
/// bytes one after the other. One value per up to [`CHUNK_ENTRIES`]
/// entries of one commit: fewer B-tree writes, and a walk of the log reads
/// large values in order.
pub fn encode_chunk<'a>(entries: impl ExactSizeIterator<Item = (&'a [u8; 32], UnixMs, &'a [u8])> + Clone) -> Vec<u8> {
    let count = entries.len();
    let body: usize = entries.clone().map(|(_, _, canonical)| canonical.len()).sum();
    let mut value = Vec::with_capacity(4 + count * CHUNK_HEADER_ENTRY + body);
    value.extend_from_slice(&(count as u32).to_le_bytes());
    for (hash, at, canonical) in entries.clone() {
        value.extend_from_slice(hash);
        value.extend_from_slice(&at.to_le_bytes());
        value.extend_from_slice(&(canonical.len() as u32).to_le_bytes());
    }
    for (_, _, canonical) in entries {
        value.extend_from_slice(canonical);
    }
    value
}

/// One entry of a decoded chunk, borrowing the stored bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEntry<'a> {
    /// Its place in the log: the chunk's key plus its position in it.
    pub n: u64,
    pub hash: [u8; 32],
    pub at: UnixMs,
    pub canonical: &'a [u8],
}

/// Reads what [`encode_chunk`] wrote under key `first`.
pub fn decode_chunk(first: u64, value: &[u8]) -> Result<Vec<ChunkEntry<'_>>> {
    let bad = || StorageError::Invalid(format!("the audit chunk at entry {first} is cut short or malformed"));
    let count = u32::from_le_bytes(value.get(..4).ok_or_else(bad)?.try_into().expect("4 bytes")) as usize;
    let header_end = count.checked_mul(CHUNK_HEADER_ENTRY).and_then(|len| len.checked_add(4)).ok_or_else(bad)?;
    let header = value.get(4..header_end).ok_or_else(bad)?;
    let mut offset = header_end;
    let mut entries = Vec::with_capacity(count);
    for (position, part) in (0u64..).zip(header.chunks_exact(CHUNK_HEADER_ENTRY)) {
        let hash: [u8; 32] = part[..32].try_into().expect("32 bytes");
        let at = i64::from_le_bytes(part[32..40].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(part[40..44].try_into().expect("4 bytes")) as usize;
        let end = offset.checked_add(len).ok_or_else(bad)?;
        let canonical = value.get(offset..end).ok_or_else(bad)?;
        entries.push(ChunkEntry { n: first + position, hash, at, canonical });
        offset = end;
    }
    if offset != value.len() {
        return Err(bad());
    }
    Ok(entries)
}

/// The chunks of one append: consecutive runs of at most [`CHUNK_ENTRIES`],
/// each with its key (its first entry's `n`).
pub fn chunks_of(entries: &[AuditRow]) -> impl Iterator<Item = (u64, Vec<u8>)> + '_ {
    entries.chunks(CHUNK_ENTRIES).map(|chunk| {
        let parts = chunk.iter().map(|row| (&row.hash, row.at, row.canonical.as_slice()));
        (chunk[0].n, encode_chunk(parts))
    })
}

/// The index rows of one append: each key with the `n`s filed under it,
/// ascending (one row per key, keyed by its first `n`).
pub fn index_rows(entries: &[AuditRow]) -> Vec<(&str, Vec<u64>)> {
    let mut rows: std::collections::BTreeMap<&str, Vec<u64>> = std::collections::BTreeMap::new();
    for row in entries {
        for key in &row.index {
            rows.entry(key.as_str()).or_default().push(row.n);
        }
    }
    rows.into_iter().collect()
}

/// `n`s as an index row's value: u64 little-endian each.
pub fn pack(numbers: &[u64]) -> Vec<u8> {
    numbers.iter().flat_map(|n| n.to_le_bytes()).collect()
}

fn unpack(value: &[u8]) -> impl Iterator<Item = u64> + '_ {
    value.chunks_exact(8).map(|bytes| u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
}

/// One read snapshot of the audit tables (taken once the tables hold every
/// commit journaled before it was asked for).
pub struct AuditSnapshot {
    txn: ReadTransaction,
}

impl AuditSnapshot {
    pub(crate) fn new(txn: ReadTransaction) -> Self {
        AuditSnapshot { txn }
    }

    /// How many entries there are (the last `n`; entries are numbered from 1
    /// without gaps).
    pub fn size(&self) -> Result<u64> {
        let table = self.txn.open_table(AUDIT_ENTRIES).map_err(db_error)?;
        let Some((first, value)) = table.last().map_err(db_error)? else {
            return Ok(0);
        };
        let first = first.value();
        Ok(decode_chunk(first, value.value())?.len() as u64 + first - 1)
    }

    pub fn entry(&self, n: u64) -> Result<Option<StoredAuditEntry>> {
        let mut found = None;
        self.scan(n, |at_n, hash, at, canonical| {
            if at_n == n {
                found = Some(StoredAuditEntry { n, hash: *hash, at, canonical: canonical.to_vec() });
            }
            Ok(false)
        })?;
        Ok(found)
    }

    /// The hash of entry `n`, when there is one.
    pub fn entry_hash(&self, n: u64) -> Result<Option<[u8; 32]>> {
        Ok(self.entry_hashes(n, 1)?.first().copied())
    }

    /// The hashes of `count` entries from `first` on (fewer at the end of the log).
    pub fn entry_hashes(&self, first: u64, count: u64) -> Result<Vec<[u8; 32]>> {
        let mut hashes = Vec::with_capacity(count.min(1 << 16) as usize);
        let end = first.saturating_add(count);
        self.scan(first, |n, hash, _, _| {
            if n < end {
                hashes.push(*hash);
            }
            Ok(n + 1 < end)
        })?;
        Ok(hashes)
    }

    /// Calls `visit(n, hash, at, canonical)` for each entry from `from` on,
    /// in order, until it returns false. Nothing is copied.
    pub fn scan(&self, from: u64, mut visit: impl FnMut(u64, &[u8; 32], UnixMs, &[u8]) -> Result<bool>) -> Result<()> {
        self.scan_chunks(from, |first, value| {
            for entry in decode_chunk(first, value)? {
                if entry.n >= from && !visit(entry.n, &entry.hash, entry.at, entry.canonical)? {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    /// Calls `visit(n, hash, at, canonical)` for each of `numbers`
    /// (ascending, as [`Self::indexed`] gives them) until it returns false,
    /// looking each chunk up once however many of them it holds. A number
    /// with no entry is an error.
    pub fn visit_entries(
        &self,
        numbers: &[u64],
        mut visit: impl FnMut(u64, &[u8; 32], UnixMs, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let missing = |n: u64| StorageError::Invalid(format!("audit entry {n} is indexed but missing"));
        let table = self.txn.open_table(AUDIT_ENTRIES).map_err(db_error)?;
        let mut rest = numbers;
        while let Some(&n) = rest.first() {
            let (first, value) = table
                .range(..=n)
                .map_err(db_error)?
                .next_back()
                .transpose()
                .map_err(db_error)?
                .ok_or_else(|| missing(n))?;
            let first = first.value();
            let entries = decode_chunk(first, value.value())?;
            let end = first + entries.len() as u64;
            let held = rest.iter().take_while(|&&m| (first..end).contains(&m)).count();
            if held == 0 {
                return Err(missing(n));
            }
            for entry in rest[..held].iter().map(|&m| &entries[(m - first) as usize]) {
                if !visit(entry.n, &entry.hash, entry.at, entry.canonical)? {
                    return Ok(());
                }
            }
            rest = &rest[held..];
        }
        Ok(())
    }

    /// Calls `visit(first, chunk)` with each stored chunk (as [`encode_chunk`]
    /// wrote it, keyed by its first entry's `n`) from the one holding entry
    /// `from` on, in order, until it returns false: for walks that decode the
    /// chunks elsewhere, such as `audit verify`'s on another thread.
    pub fn scan_chunks(&self, from: u64, mut visit: impl FnMut(u64, &[u8]) -> Result<bool>) -> Result<()> {
        let table = self.txn.open_table(AUDIT_ENTRIES).map_err(db_error)?;
        // The chunk holding `from` is the last one keyed at or before it.
        let holding = table.range(..=from).map_err(db_error)?.next_back().transpose().map_err(db_error)?;
        let start = holding.map_or(from, |(first, _)| first.value());
        for row in table.range(start..).map_err(db_error)? {
            let (first, value) = row.map_err(db_error)?;
            if !visit(first.value(), value.value())? {
                break;
            }
        }
        Ok(())
    }

    /// The `n`s filed under `key` (`c:WA_ID`, `a:AGENT`)
    /// from `from` on, ascending, at most `limit`.
    pub fn indexed(&self, key: &str, from: u64, limit: usize) -> Result<Vec<u64>> {
        let table = self.txn.open_table(AUDIT_INDEX).map_err(db_error)?;
        // The row holding `from` is the last one keyed at or before it.
        let holding =
            table.range((key, 0)..=(key, from)).map_err(db_error)?.next_back().transpose().map_err(db_error)?;
        let start = holding.map_or(from, |(stored, _)| stored.value().1);
        let mut found = Vec::new();
        for row in table.range((key, start)..=(key, u64::MAX)).map_err(db_error)? {
            let (_, value) = row.map_err(db_error)?;
            for n in unpack(value.value()).filter(|n| *n >= from) {
                if found.len() >= limit {
                    return Ok(found);
                }
                found.push(n);
            }
        }
        Ok(found)
    }

    /// A kept complete subtree's hash (`level` ≥ 1).
    pub fn node(&self, level: u32, index: u64) -> Result<Option<[u8; 32]>> {
        let table = self.txn.open_table(AUDIT_NODES).map_err(db_error)?;
        let Some(value) = table.get(node_key(level, index)).map_err(db_error)? else {
            return Ok(None);
        };
        let hash: [u8; 32] = value
            .value()
            .try_into()
            .map_err(|_| StorageError::Invalid(format!("audit node ({level}, {index}) is not 32 bytes")))?;
        Ok(Some(hash))
    }

    /// Every signed checkpoint, by tree size ascending (JSON as stored).
    pub fn checkpoints(&self) -> Result<Vec<(u64, Vec<u8>)>> {
        let table = self.txn.open_table(AUDIT_CHECKPOINTS).map_err(db_error)?;
        let mut found = Vec::new();
        for row in table.iter().map_err(db_error)? {
            let (size, value) = row.map_err(db_error)?;
            found.push((size.value(), value.value().to_vec()));
        }
        Ok(found)
    }

    /// The checkpoint of the largest tree signed.
    pub fn latest_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>> {
        let table = self.txn.open_table(AUDIT_CHECKPOINTS).map_err(db_error)?;
        Ok(table.last().map_err(db_error)?.map(|(size, value)| (size.value(), value.value().to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: u64, text: &str) -> AuditRow {
        AuditRow { n, hash: [n as u8; 32], at: -(n as i64), canonical: text.as_bytes().to_vec(), index: vec![] }
    }

    #[test]
    fn a_chunk_decodes_into_what_was_stored_and_refuses_any_cut() {
        let rows: Vec<AuditRow> = (7..7 + 70).map(|n| row(n, &"x".repeat(n as usize % 5))).collect();
        let chunks: Vec<(u64, Vec<u8>)> = chunks_of(&rows).collect();
        assert_eq!(chunks.iter().map(|(first, _)| *first).collect::<Vec<_>>(), vec![7, 7 + 64]);
        let mut decoded = Vec::new();
        for (first, value) in &chunks {
            decoded.extend(
                decode_chunk(*first, value)
                    .unwrap()
                    .into_iter()
                    .map(|entry| (entry.n, entry.hash, entry.at, entry.canonical.to_vec())),
            );
        }
        let expected: Vec<_> = rows.iter().map(|row| (row.n, row.hash, row.at, row.canonical.clone())).collect();
        assert_eq!(decoded, expected);
        let (first, value) = &chunks[1];
        for cut in 0..value.len() {
            assert!(decode_chunk(*first, &value[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = value.clone();
        longer.push(b'!');
        assert!(decode_chunk(*first, &longer).is_err());
    }

    #[test]
    fn one_index_row_per_key_and_append() {
        let row = |n: u64, index: &[&str]| AuditRow {
            n,
            hash: [0; 32],
            at: 0,
            canonical: Vec::new(),
            index: index.iter().map(|key| (*key).to_owned()).collect(),
        };
        let entries = [row(4, &["c:1", "a:x"]), row(5, &["c:2"]), row(6, &["c:1"])];
        assert_eq!(index_rows(&entries), vec![("a:x", vec![4]), ("c:1", vec![4, 6]), ("c:2", vec![5])]);
        assert_eq!(unpack(&pack(&[4, 6, u64::MAX])).collect::<Vec<_>>(), vec![4, 6, u64::MAX]);
    }

    #[test]
    fn node_keys_order_by_level_then_index() {
        assert!(node_key(1, u64::from(u32::MAX)) < node_key(2, 0));
        assert!(node_key(3, 4) < node_key(3, 5));
        assert_ne!(node_key(1, 0), node_key(0, 1 << 56));
    }
}
