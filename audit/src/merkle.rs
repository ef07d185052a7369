//! The Merkle tree over the entries (contract §9, RFC 9162 §2.1).
//!
//! Leaf `i` (0-based) is entry `n = i + 1`; its hash is
//! SHA-256(0x00 ‖ the entry's 32 hash bytes); a node is
//! SHA-256(0x01 ‖ left ‖ right); the root of the first `size` leaves is
//! RFC 9162's MTH, and SHA-256 of nothing for an empty tree.
//!
//! Generation never rehashes the log. Every subtree that RFC 9162's
//! definitions split a tree into is a run of *complete* subtrees (a perfect
//! binary tree of 2^level leaves starting at a multiple of 2^level), so a
//! [`NodeStore`] that hands out complete subtrees by (level, index) is enough
//! to compute the root of any size and any proof in O(log² n) reads (at most
//! log n subtrees of at most log n complete pieces each; in practice far fewer).
//! A [`Frontier`] keeps the right edge of the tree (one hash per set bit of
//! the size) and, for each appended leaf, says which complete subtrees it
//! finished: those are what a store persists.
//!
//! Verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2
//! (consistency) step by step.

use crate::encoding::Hash;
use sha2::{Digest, Sha256};
use std::fmt;
use thiserror::Error;

/// SHA-256 of nothing: the root of the empty tree.
pub fn empty_tree_root() -> Hash {
    Sha256::digest([]).into()
}

/// The leaf hash of an entry: SHA-256(0x00 ‖ the entry's hash bytes).
pub fn leaf_hash(entry_hash: &Hash) -> Hash {
    leaf_hash_of_data(entry_hash)
}

/// RFC 9162's leaf hash of arbitrary leaf data. Our leaves are always 32-byte
/// entry hashes ([`leaf_hash`]); this general form exists for the RFC's test
/// vectors, whose leaves have other lengths.
pub fn leaf_hash_of_data(leaf_data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(leaf_data);
    hasher.finalize().into()
}

/// SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// A complete subtree: the 2^level leaves from `index · 2^level`.
/// Level 0 is the leaf hashes themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodePosition {
    pub level: u32,
    pub index: u64,
}

impl fmt::Display for NodePosition {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "level {} index {}", self.level, self.index)
    }
}

/// A complete subtree's hash, as the frontier hands it over to be persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedNode {
    pub position: NodePosition,
    pub hash: Hash,
}

/// Where complete subtree hashes are kept (storage's table, or memory).
pub trait NodeStore {
    type Error: std::error::Error + Send + Sync + 'static;

    /// How many leaves the store holds: every complete subtree within them can be read.
    fn leaf_count(&self) -> Result<u64, Self::Error>;

    /// The hash of the complete subtree at `position`.
    fn complete_subtree(&self, position: NodePosition) -> Result<Hash, Self::Error>;
}

/// Why a root or proof could not be produced.
#[derive(Debug, Error)]
pub enum MerkleError<StoreError: std::error::Error + 'static> {
    #[error("node store: {0}")]
    Store(#[source] StoreError),
    #[error("tree size {tree_size} is beyond the {leaf_count} entries in the log")]
    TreeSizeBeyondLog { tree_size: u64, leaf_count: u64 },
    #[error("leaf index {leaf_index} is not in a tree of {tree_size} leaves")]
    LeafIndexOutOfRange { leaf_index: u64, tree_size: u64 },
    #[error("the old tree size {old_size} is larger than the new tree size {new_size}")]
    OldSizeAfterNewSize { old_size: u64, new_size: u64 },
}

/// The largest power of two strictly below `size` (RFC 9162's `k`); `size` ≥ 2.
fn split_point(size: u64) -> u64 {
    debug_assert!(size >= 2);
    1 << (63 - (size - 1).leading_zeros())
}

/// Reads nodes for one proof or root from a store whose size was checked.
struct SubtreeReader<'store, Store: NodeStore> {
    store: &'store Store,
}

impl<Store: NodeStore> SubtreeReader<'_, Store> {
    fn complete(&self, level: u32, index: u64) -> Result<Hash, MerkleError<Store::Error>> {
        self.store.complete_subtree(NodePosition { level, index }).map_err(MerkleError::Store)
    }

    /// MTH of leaves `[start, end)`, where `start` is a multiple of the largest
    /// power of two ≤ `end − start` (true of every subtree RFC 9162 splits a
    /// tree into). The range is a run of complete subtrees, largest first, one
    /// per set bit of its length, folded from the right.
    fn range_root(&self, start: u64, end: u64) -> Result<Hash, MerkleError<Store::Error>> {
        debug_assert!(end > start);
        let length = end - start;
        let mut piece_end = end;
        let mut folded: Option<Hash> = None;
        for level in 0..u64::BITS {
            let piece_length = 1u64 << level;
            if length & piece_length == 0 {
                continue;
            }
            let piece_start = piece_end - piece_length;
            debug_assert_eq!(piece_start % piece_length, 0, "range [{start}, {end}) is not aligned");
            let piece = self.complete(level, piece_start >> level)?;
            folded = Some(match folded {
                None => piece,
                Some(right) => node_hash(&piece, &right),
            });
            piece_end = piece_start;
        }
        // length ≥ 1 has a set bit, so the loop set `folded`.
        Ok(folded.unwrap_or_else(empty_tree_root))
    }
}

fn reader_for<Store: NodeStore>(
    store: &Store,
    tree_size: u64,
) -> Result<SubtreeReader<'_, Store>, MerkleError<Store::Error>> {
    let leaf_count = store.leaf_count().map_err(MerkleError::Store)?;
    if tree_size > leaf_count {
        return Err(MerkleError::TreeSizeBeyondLog { tree_size, leaf_count });
    }
    Ok(SubtreeReader { store })
}

/// The root of the first `tree_size` leaves (MTH), from at most log n reads.
pub fn root<Store: NodeStore>(store: &Store, tree_size: u64) -> Result<Hash, MerkleError<Store::Error>> {
    let reader = reader_for(store, tree_size)?;
    if tree_size == 0 {
        return Ok(empty_tree_root());
    }
    reader.range_root(0, tree_size)
}

/// The inclusion proof (RFC 9162 PATH) of leaf `leaf_index` in the tree of
/// the first `tree_size` leaves, from the leaf's sibling up to the root's child.
pub fn inclusion_proof<Store: NodeStore>(
    store: &Store,
    leaf_index: u64,
    tree_size: u64,
) -> Result<Vec<Hash>, MerkleError<Store::Error>> {
    let reader = reader_for(store, tree_size)?;
    if leaf_index >= tree_size {
        return Err(MerkleError::LeafIndexOutOfRange { leaf_index, tree_size });
    }
    // PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) or PATH(m−k, D[k:n]) : MTH(D[0:k]):
    // walked from the root down, so the hashes come out top first and are reversed.
    let mut siblings_from_top = Vec::with_capacity(64);
    let mut offset = 0u64;
    let mut index_in_subtree = leaf_index;
    let mut subtree_size = tree_size;
    while subtree_size > 1 {
        let split = split_point(subtree_size);
        if index_in_subtree < split {
            siblings_from_top.push(reader.range_root(offset + split, offset + subtree_size)?);
            subtree_size = split;
        } else {
            siblings_from_top.push(reader.complete(split.trailing_zeros(), offset >> split.trailing_zeros())?);
            offset += split;
            index_in_subtree -= split;
            subtree_size -= split;
        }
    }
    siblings_from_top.reverse();
    Ok(siblings_from_top)
}

/// The consistency proof (RFC 9162 PROOF) that the tree of `old_size` leaves
/// is a prefix of the tree of `new_size` leaves. Empty when `old_size` is 0 or
/// equals `new_size` (nothing to prove).
pub fn consistency_proof<Store: NodeStore>(
    store: &Store,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, MerkleError<Store::Error>> {
    let reader = reader_for(store, new_size)?;
    if old_size > new_size {
        return Err(MerkleError::OldSizeAfterNewSize { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[n], b), walked from the root down, reversed at the end.
    let mut hashes_from_top = Vec::with_capacity(64);
    let mut offset = 0u64;
    let mut old_in_subtree = old_size;
    let mut subtree_size = new_size;
    let mut old_tree_is_whole_subtree = true;
    loop {
        if old_in_subtree == subtree_size {
            if !old_tree_is_whole_subtree {
                hashes_from_top.push(reader.range_root(offset, offset + subtree_size)?);
            }
            break;
        }
        let split = split_point(subtree_size);
        if old_in_subtree <= split {
            hashes_from_top.push(reader.range_root(offset + split, offset + subtree_size)?);
            subtree_size = split;
        } else {
            hashes_from_top.push(reader.complete(split.trailing_zeros(), offset >> split.trailing_zeros())?);
            offset += split;
            old_in_subtree -= split;
            subtree_size -= split;
            old_tree_is_whole_subtree = false;
        }
    }
    hashes_from_top.reverse();
    Ok(hashes_from_top)
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProofError {
    #[error("leaf index {leaf_index} is not in a tree of {tree_size} leaves")]
    LeafIndexOutOfRange { leaf_index: u64, tree_size: u64 },
    #[error("the proof has more hashes than a tree of this size needs")]
    PathTooLong,
    #[error("the proof has fewer hashes than a tree of this size needs")]
    PathTooShort,
    #[error("the proof leads to a different root")]
    RootMismatch,
    #[error("the old tree size {old_size} is larger than the new tree size {new_size}")]
    OldSizeAfterNewSize { old_size: u64, new_size: u64 },
    #[error("a consistency proof between these sizes must be empty")]
    ProofShouldBeEmpty,
    #[error("a consistency proof between different non-empty sizes cannot be empty")]
    EmptyProof,
    #[error("the proof leads to a different old root")]
    OldRootMismatch,
    #[error("the proof leads to a different new root")]
    NewRootMismatch,
}

/// The root an inclusion proof leads to (RFC 9162 §2.1.3.2, steps 1–4 and the
/// `sn` check of step 5).
pub fn root_from_inclusion_proof(
    leaf_index: u64,
    tree_size: u64,
    leaf_hash: &Hash,
    path: &[Hash],
) -> Result<Hash, ProofError> {
    if leaf_index >= tree_size {
        return Err(ProofError::LeafIndexOutOfRange { leaf_index, tree_size });
    }
    let mut first_node = leaf_index;
    let mut last_node = tree_size - 1;
    let mut running = *leaf_hash;
    for sibling in path {
        if last_node == 0 {
            return Err(ProofError::PathTooLong);
        }
        if first_node & 1 == 1 || first_node == last_node {
            running = node_hash(sibling, &running);
            if first_node & 1 == 0 {
                // The node is a right-edge node whose sibling was missing at
                // these levels: climb until it is a right child or the root.
                while first_node & 1 == 0 && first_node != 0 {
                    first_node >>= 1;
                    last_node >>= 1;
                }
            }
        } else {
            running = node_hash(&running, sibling);
        }
        first_node >>= 1;
        last_node >>= 1;
    }
    if last_node != 0 {
        return Err(ProofError::PathTooShort);
    }
    Ok(running)
}

/// Verifies an inclusion proof against a root (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_index: u64,
    tree_size: u64,
    leaf_hash: &Hash,
    path: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion_proof(leaf_index, tree_size, leaf_hash, path)?;
    if computed != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2) between two roots.
///
/// The RFC's algorithm covers 0 < old < new. Around it: equal sizes need an
/// empty proof and equal roots; an old size of 0 needs an empty proof and the
/// empty tree's root (every tree extends the empty one); an old size above
/// the new one is refused.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    path: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OldSizeAfterNewSize { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        if !path.is_empty() {
            return Err(ProofError::ProofShouldBeEmpty);
        }
        let expected_old_root = if old_size == 0 { empty_tree_root() } else { *new_root };
        if *old_root != expected_old_root {
            return Err(ProofError::OldRootMismatch);
        }
        return Ok(());
    }
    // Step 1.
    if path.is_empty() {
        return Err(ProofError::EmptyProof);
    }
    // Step 2: a power-of-two old tree is a complete subtree the proof leaves out.
    let prepended = old_size.is_power_of_two().then_some(*old_root);
    let mut hashes = prepended.iter().chain(path.iter());
    // Step 3.
    let mut first_node = old_size - 1;
    let mut last_node = new_size - 1;
    // Step 4.
    while first_node & 1 == 1 {
        first_node >>= 1;
        last_node >>= 1;
    }
    // Step 5 (the chain is non-empty: `path` is).
    let Some(first_hash) = hashes.next() else {
        return Err(ProofError::EmptyProof);
    };
    let mut old_running = *first_hash;
    let mut new_running = *first_hash;
    // Step 6.
    for hash in hashes {
        if last_node == 0 {
            return Err(ProofError::PathTooLong);
        }
        if first_node & 1 == 1 || first_node == last_node {
            old_running = node_hash(hash, &old_running);
            new_running = node_hash(hash, &new_running);
            if first_node & 1 == 0 {
                while first_node & 1 == 0 && first_node != 0 {
                    first_node >>= 1;
                    last_node >>= 1;
                }
            }
        } else {
            new_running = node_hash(&new_running, hash);
        }
        first_node >>= 1;
        last_node >>= 1;
    }
    // Step 7.
    if last_node != 0 {
        return Err(ProofError::PathTooShort);
    }
    if old_running != *old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if new_running != *new_root {
        return Err(ProofError::NewRootMismatch);
    }
    Ok(())
}

/// The right edge of the tree: the roots of the complete subtrees that make
/// up the first `size` leaves (one per set bit of `size`, largest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    peaks: Vec<Hash>,
}

impl Frontier {
    pub fn new() -> Self {
        Self::default()
    }

    /// The frontier of the first `size` leaves of a store, from at most log n
    /// reads (after a restart, instead of replaying every leaf).
    pub fn resume<Store: NodeStore>(store: &Store, size: u64) -> Result<Self, MerkleError<Store::Error>> {
        let reader = reader_for(store, size)?;
        let mut peaks = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..u64::BITS).rev() {
            let piece_length = 1u64 << level;
            if size & piece_length != 0 {
                peaks.push(reader.complete(level, start >> level)?);
                start += piece_length;
            }
        }
        Ok(Frontier { size, peaks })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the tree so far, from the peaks alone (no reads).
    pub fn root(&self) -> Hash {
        let mut peaks_from_right = self.peaks.iter().rev();
        let Some(rightmost) = peaks_from_right.next() else {
            return empty_tree_root();
        };
        peaks_from_right.fold(*rightmost, |right, left| node_hash(left, &right))
    }

    /// Appends a leaf hash and writes into `completed` (cleared first) every
    /// complete subtree the leaf finished: the leaf itself at level 0, then
    /// one node per level it closed. A caller appending millions of leaves
    /// reuses one buffer.
    pub fn append_into(&mut self, leaf_hash: Hash, completed: &mut Vec<CompletedNode>) {
        completed.clear();
        let mut position = NodePosition { level: 0, index: self.size };
        let mut hash = leaf_hash;
        completed.push(CompletedNode { position, hash });
        // Each trailing one bit of the old size is a peak of the same level
        // as the subtree being built: merge them.
        while position.index & 1 == 1 {
            let Some(left) = self.peaks.pop() else {
                debug_assert!(false, "a frontier has a peak for each set bit of its size");
                break;
            };
            hash = node_hash(&left, &hash);
            position = NodePosition { level: position.level + 1, index: position.index >> 1 };
            completed.push(CompletedNode { position, hash });
        }
        self.peaks.push(hash);
        self.size += 1;
        debug_assert_eq!(self.peaks.len(), self.size.count_ones() as usize);
    }

    /// [`Frontier::append_into`] with a new buffer.
    pub fn append(&mut self, leaf_hash: Hash) -> Vec<CompletedNode> {
        let mut completed = Vec::with_capacity(2);
        self.append_into(leaf_hash, &mut completed);
        completed
    }
}

/// A node the in-memory store was asked for and does not have.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("no complete subtree at {position}")]
pub struct MissingNode {
    pub position: NodePosition,
}

/// Every complete subtree in memory: `levels[level][index]`. About 64 bytes
/// per leaf (the leaf hash and, on average, one node above it). For tests,
/// the bench, and as the model a persistent store follows.
#[derive(Debug, Clone, Default)]
pub struct MemoryNodeStore {
    levels: Vec<Vec<Hash>>,
    frontier: Frontier,
    completed: Vec<CompletedNode>,
}

impl MemoryNodeStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store with room for `leaves` leaves and the nodes above them, so a
    /// large tree is not copied as its levels grow.
    pub fn with_capacity(leaves: u64) -> Self {
        let mut store = Self::default();
        let mut level_size = usize::try_from(leaves).unwrap_or(usize::MAX);
        while level_size > 0 {
            store.levels.push(Vec::with_capacity(level_size));
            level_size /= 2;
        }
        store
    }

    /// Appends a leaf hash (see [`leaf_hash`]) and keeps the nodes it completed.
    pub fn append(&mut self, leaf_hash: Hash) {
        self.frontier.append_into(leaf_hash, &mut self.completed);
        for node in &self.completed {
            let level = node.position.level as usize;
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            debug_assert_eq!(self.levels[level].len() as u64, node.position.index, "nodes complete in order");
            self.levels[level].push(node.hash);
        }
    }

    pub fn len(&self) -> u64 {
        self.frontier.size()
    }

    pub fn is_empty(&self) -> bool {
        self.frontier.size() == 0
    }

    /// The root of everything appended (from the frontier, no reads).
    pub fn current_root(&self) -> Hash {
        self.frontier.root()
    }
}

impl NodeStore for MemoryNodeStore {
    type Error = MissingNode;

    fn leaf_count(&self) -> Result<u64, MissingNode> {
        Ok(self.frontier.size())
    }

    fn complete_subtree(&self, position: NodePosition) -> Result<Hash, MissingNode> {
        usize::try_from(position.index)
            .ok()
            .and_then(|index| self.levels.get(position.level as usize)?.get(index))
            .copied()
            .ok_or(MissingNode { position })
    }
}

#[cfg(test)]
mod tests;
