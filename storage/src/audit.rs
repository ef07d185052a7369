//! What the audit log's consumer stores, and how it is read back. The audit
//! log itself (entries, hashing, the Merkle tree, signatures) is the
//! `switchboard-audit` crate and the engine's consumer; this module keeps
//! bytes it is given, append-only:
//!
//! - [`AUDIT_ENTRIES`]: entry `n` → its hash, its time and its canonical
//!   bytes (RFC 8785, without `hash`), exactly as hashed;
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

/// Bytes before an entry's canonical bytes in [`AUDIT_ENTRIES`]: the hash
/// (32) and the time (8, little-endian unix ms).
pub const ENTRY_HEADER_LEN: usize = 40;

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

/// The value of an entry in [`AUDIT_ENTRIES`].
pub fn entry_value(row: &AuditRow) -> Vec<u8> {
    let mut value = Vec::with_capacity(ENTRY_HEADER_LEN + row.canonical.len());
    value.extend_from_slice(&row.hash);
    value.extend_from_slice(&row.at.to_le_bytes());
    value.extend_from_slice(&row.canonical);
    value
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

/// Splits a stored entry value into (hash, at, canonical bytes).
pub fn split_entry_value(n: u64, value: &[u8]) -> Result<([u8; 32], UnixMs, &[u8])> {
    if value.len() < ENTRY_HEADER_LEN {
        return Err(StorageError::Invalid(format!("audit entry {n} is shorter than its header")));
    }
    let hash: [u8; 32] = value[..32].try_into().expect("32 bytes");
    let at = i64::from_le_bytes(value[32..40].try_into().expect("8 bytes"));
    Ok((hash, at, &value[ENTRY_HEADER_LEN..]))
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
        Ok(table.last().map_err(db_error)?.map(|(n, _)| n.value()).unwrap_or(0))
    }

    pub fn entry(&self, n: u64) -> Result<Option<StoredAuditEntry>> {
        let table = self.txn.open_table(AUDIT_ENTRIES).map_err(db_error)?;
        let Some(value) = table.get(n).map_err(db_error)? else {
            return Ok(None);
        };
        let (hash, at, canonical) = split_entry_value(n, value.value())?;
        Ok(Some(StoredAuditEntry { n, hash, at, canonical: canonical.to_vec() }))
    }

    /// The hash of entry `n`, when there is one.
    pub fn entry_hash(&self, n: u64) -> Result<Option<[u8; 32]>> {
        let table = self.txn.open_table(AUDIT_ENTRIES).map_err(db_error)?;
        let Some(value) = table.get(n).map_err(db_error)? else {
            return Ok(None);
        };
        Ok(Some(split_entry_value(n, value.value())?.0))
    }

    /// The hashes of `count` entries from `first` on (fewer at the end of the log).
    pub fn entry_hashes(&self, first: u64, count: u64) -> Result<Vec<[u8; 32]>> {
        let table = self.txn.open_table(AUDIT_ENTRIES).map_err(db_error)?;
        let mut hashes = Vec::with_capacity(count.min(1 << 16) as usize);
        for row in table.range(first..first.saturating_add(count)).map_err(db_error)? {
            let (n, value) = row.map_err(db_error)?;
            hashes.push(split_entry_value(n.value(), value.value())?.0);
        }
        Ok(hashes)
    }

    /// Calls `visit(n, hash, at, canonical)` for each entry from `from` on,
    /// in order, until it returns false. Nothing is copied.
    pub fn scan(&self, from: u64, mut visit: impl FnMut(u64, &[u8; 32], UnixMs, &[u8]) -> Result<bool>) -> Result<()> {
        let table = self.txn.open_table(AUDIT_ENTRIES).map_err(db_error)?;
        for row in table.range(from..).map_err(db_error)? {
            let (n, value) = row.map_err(db_error)?;
            let n = n.value();
            let (hash, at, canonical) = split_entry_value(n, value.value())?;
            if !visit(n, &hash, at, canonical)? {
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

    #[test]
    fn an_entry_value_splits_back_into_what_was_stored() {
        let row = AuditRow { n: 7, hash: [9; 32], at: -5, canonical: b"{\"a\":1}".to_vec(), index: vec![] };
        let value = entry_value(&row);
        let (hash, at, canonical) = split_entry_value(7, &value).unwrap();
        assert_eq!((hash, at, canonical), (row.hash, row.at, row.canonical.as_slice()));
        assert!(split_entry_value(7, &value[..39]).is_err());
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
