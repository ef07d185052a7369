//! Verifying a whole stored log against its signed checkpoints.
//!
//! The chain alone catches a changed, deleted or reordered entry, but not a
//! log cut short or rewritten from some entry on with every hash recomputed:
//! such a log is a perfectly good chain. What pins it is a checkpoint, signed
//! with a key the rewriter does not have. [`LogVerifier`] walks the stored
//! entries once, checking the chain ([`ChainVerifier::check_stored`]) and
//! growing the Merkle tree's [`Frontier`]; each time the tree reaches a
//! checkpoint's size its root must be the signed one. Errors come in log
//! order: the first bad entry, or the first checkpoint that no longer matches
//! (then every entry after the previous matching checkpoint is suspect).
//! Entries after the latest checkpoint are protected by the chain only, until
//! the next checkpoint is signed.

use crate::checkpoint::{AuditPublicKey, Checkpoint, CheckpointError};
use crate::encoding::{self, Hash};
use crate::entry::{ChainError, ChainSummary, ChainVerifier};
use crate::merkle::{CompletedNode, Frontier, empty_tree_root, leaf_hash};
use std::borrow::Borrow;
use thiserror::Error;

/// A log that matched its chain and every checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSummary {
    pub chain: ChainSummary,
    /// The tree sizes of the checkpoints that matched, in order.
    pub matched_checkpoints: Vec<u64>,
}

/// The first thing wrong with a log, in log order.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LogError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("checkpoint at tree size {tree_size} does not verify: {fault}")]
    Checkpoint { tree_size: u64, fault: CheckpointError },
    #[error(
        "checkpoint at tree size {tree_size} no longer matches: an entry after n={last_matching_tree_size} \
         and at or before n={tree_size} is not what was signed (root now {computed_root}, signed {signed_root})"
    )]
    RootMismatch { tree_size: u64, last_matching_tree_size: u64, computed_root: String, signed_root: String },
    #[error("the log has {entries} entries, but a checkpoint signed {tree_size}: entries were removed from its end")]
    LogShorterThanCheckpoint { tree_size: u64, entries: u64 },
}

/// Walks stored entries once against checkpoints whose signatures are checked first.
#[derive(Debug)]
pub struct LogVerifier {
    chain: ChainVerifier,
    frontier: Frontier,
    /// Reused by every append: the walk needs no allocation per entry.
    completed_nodes: Vec<CompletedNode>,
    /// (tree size, signed root), sorted by size.
    pending_checkpoints: Vec<(u64, Hash)>,
    next_pending: usize,
    matched_checkpoints: Vec<u64>,
}

impl LogVerifier {
    /// Checks every checkpoint's signature with `public_key`, then waits for entries from n = 1.
    pub fn new(checkpoints: &[Checkpoint], public_key: &AuditPublicKey) -> Result<Self, LogError> {
        let mut pending_checkpoints = Vec::with_capacity(checkpoints.len());
        for checkpoint in checkpoints {
            let root = public_key
                .verify(checkpoint)
                .map_err(|fault| LogError::Checkpoint { tree_size: checkpoint.tree_size, fault })?;
            pending_checkpoints.push((checkpoint.tree_size, root));
        }
        pending_checkpoints.sort_by_key(|(tree_size, _)| *tree_size);
        let mut verifier = LogVerifier {
            chain: ChainVerifier::new(),
            frontier: Frontier::new(),
            completed_nodes: Vec::with_capacity(64),
            pending_checkpoints,
            next_pending: 0,
            matched_checkpoints: Vec::new(),
        };
        verifier.match_checkpoints_at_current_size()?;
        Ok(verifier)
    }

    fn match_checkpoints_at_current_size(&mut self) -> Result<(), LogError> {
        while let Some(&(tree_size, signed_root)) = self.pending_checkpoints.get(self.next_pending) {
            if tree_size != self.frontier.size() {
                break;
            }
            let computed_root = if tree_size == 0 { empty_tree_root() } else { self.frontier.root() };
            if computed_root != signed_root {
                return Err(LogError::RootMismatch {
                    tree_size,
                    last_matching_tree_size: self.matched_checkpoints.last().copied().unwrap_or(0),
                    computed_root: encoding::encode_hex(&computed_root),
                    signed_root: encoding::encode_hex(&signed_root),
                });
            }
            self.matched_checkpoints.push(tree_size);
            self.next_pending += 1;
        }
        Ok(())
    }

    /// The next stored entry: canonical bytes (without `hash`) and its hash.
    pub fn check_stored(&mut self, canonical: &[u8], hash: &Hash) -> Result<(), LogError> {
        self.chain.check_stored(canonical, hash)?;
        self.frontier.append_into(leaf_hash(hash), &mut self.completed_nodes);
        self.match_checkpoints_at_current_size()
    }

    /// Ends the walk: a checkpoint beyond the last entry means entries were cut off.
    pub fn finish(self) -> Result<LogSummary, LogError> {
        if let Some(&(tree_size, _)) = self.pending_checkpoints.get(self.next_pending) {
            return Err(LogError::LogShorterThanCheckpoint { tree_size, entries: self.frontier.size() });
        }
        Ok(LogSummary { chain: self.chain.summary(), matched_checkpoints: self.matched_checkpoints })
    }
}

/// Verifies a stored log from n = 1 against signed checkpoints.
pub fn verify_log<Bytes: AsRef<[u8]>, StoredHash: Borrow<Hash>>(
    stored: impl IntoIterator<Item = (Bytes, StoredHash)>,
    checkpoints: &[Checkpoint],
    public_key: &AuditPublicKey,
) -> Result<LogSummary, LogError> {
    let mut verifier = LogVerifier::new(checkpoints, public_key)?;
    for (canonical, hash) in stored {
        verifier.check_stored(canonical.as_ref(), hash.borrow())?;
    }
    verifier.finish()
}
