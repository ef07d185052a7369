//! An attacker with write access to storage but without the signing key:
//! every change to a stored log is caught by verification against the signed
//! checkpoints, and the error names the first bad entry or the checkpoint
//! that no longer matches.

mod support;

use proptest::prelude::*;
use support::{GeneratedLog, attacker_key, checkpoint_at, content_of, generate, rebuild_after, signing_key};
use switchboard_audit::checkpoint::CheckpointError;
use switchboard_audit::entry::{ChainError, ChainFault};
use switchboard_audit::verify::LogError;
use switchboard_audit::{Checkpoint, Hash, verify_log, verify_stored};

const LOG_LENGTH: u64 = 40;
const CHECKPOINT_SIZES: [u64; 3] = [10, 25, 40];

fn log_and_checkpoints() -> (GeneratedLog, Vec<Checkpoint>) {
    let log = generate(LOG_LENGTH);
    let key = signing_key();
    let checkpoints = CHECKPOINT_SIZES.iter().map(|size| checkpoint_at(&log, &key, *size)).collect();
    (log, checkpoints)
}

fn verify(stored: &[(Vec<u8>, Hash)], checkpoints: &[Checkpoint]) -> Result<Vec<u64>, LogError> {
    verify_log(stored.iter().map(|(bytes, hash)| (bytes, hash)), checkpoints, &signing_key().public_key())
        .map(|summary| summary.matched_checkpoints)
}

fn chain_error_at(error: LogError) -> (u64, ChainFault) {
    match error {
        LogError::Chain(ChainError { n, fault }) => (n, fault),
        other => panic!("expected a chain error, got {other}"),
    }
}

#[test]
fn the_untouched_log_verifies_against_every_checkpoint() {
    let (log, checkpoints) = log_and_checkpoints();
    assert_eq!(verify(&log.stored, &checkpoints).unwrap(), CHECKPOINT_SIZES.to_vec());
    // Checkpoints may come in any order.
    let reversed: Vec<Checkpoint> = checkpoints.iter().rev().cloned().collect();
    assert_eq!(verify(&log.stored, &reversed).unwrap(), CHECKPOINT_SIZES.to_vec());
}

#[test]
fn one_flipped_byte_anywhere_in_a_stored_entry_names_that_entry() {
    let (log, checkpoints) = log_and_checkpoints();
    let target = 16; // entry n = 17
    for position in 0..log.stored[target].0.len() {
        let mut stored = log.stored.clone();
        stored[target].0[position] ^= 0x01;
        let (n, fault) = chain_error_at(verify(&stored, &checkpoints).unwrap_err());
        assert_eq!(n, 17, "byte {position}");
        assert!(matches!(fault, ChainFault::WrongHash { .. }), "byte {position}: {fault}");
    }
    for position in 0..32 {
        let mut stored = log.stored.clone();
        stored[target].1[position] ^= 0x80;
        let (n, fault) = chain_error_at(verify(&stored, &checkpoints).unwrap_err());
        assert_eq!((n, matches!(fault, ChainFault::WrongHash { .. })), (17, true));
    }
}

#[test]
fn a_changed_entry_with_its_hash_recomputed_breaks_the_next_link() {
    let (log, checkpoints) = log_and_checkpoints();
    let mut stored = log.stored.clone();
    let changed_bytes = String::from_utf8(stored[16].0.clone()).unwrap().replacen("c_", "c_9", 1).into_bytes();
    stored[16].1 = switchboard_audit::entry::sha256(&changed_bytes);
    stored[16].0 = changed_bytes;
    let (n, fault) = chain_error_at(verify(&stored, &checkpoints).unwrap_err());
    assert_eq!(n, 18);
    assert!(matches!(fault, ChainFault::WrongPrev { .. }), "{fault}");
}

#[test]
fn a_deleted_entry_is_named_by_its_position() {
    let (log, checkpoints) = log_and_checkpoints();
    for deleted in [0usize, 16, 39] {
        let mut stored = log.stored.clone();
        stored.remove(deleted);
        let error = verify(&stored, &checkpoints).unwrap_err();
        if deleted == 39 {
            // The last entry gone looks like a truncated tail.
            assert_eq!(error, LogError::LogShorterThanCheckpoint { tree_size: 40, entries: 39 });
        } else {
            let n = deleted as u64 + 1;
            assert_eq!(chain_error_at(error), (n, ChainFault::NotConsecutive { found: n + 1 }));
        }
    }
}

#[test]
fn two_reordered_entries_are_named_at_the_first() {
    let (log, checkpoints) = log_and_checkpoints();
    for (first, second) in [(16usize, 17usize), (16, 30), (0, 39)] {
        let mut stored = log.stored.clone();
        stored.swap(first, second);
        let error = verify(&stored, &checkpoints).unwrap_err();
        assert_eq!(
            chain_error_at(error),
            (first as u64 + 1, ChainFault::NotConsecutive { found: second as u64 + 1 }),
            "swap {first} {second}"
        );
    }
}

#[test]
fn a_truncated_tail_is_named_by_the_first_checkpoint_past_the_end() {
    let (log, checkpoints) = log_and_checkpoints();
    assert_eq!(
        verify(&log.stored[..33], &checkpoints).unwrap_err(),
        LogError::LogShorterThanCheckpoint { tree_size: 40, entries: 33 }
    );
    assert_eq!(
        verify(&log.stored[..20], &checkpoints).unwrap_err(),
        LogError::LogShorterThanCheckpoint { tree_size: 25, entries: 20 }
    );
    assert_eq!(
        verify(&[], &checkpoints).unwrap_err(),
        LogError::LogShorterThanCheckpoint { tree_size: 10, entries: 0 }
    );
    // The chain alone cannot see it: that is what checkpoints are for.
    verify_stored(log.stored[..20].iter().map(|(bytes, hash)| (bytes, hash))).unwrap();
}

#[test]
fn a_chain_rewritten_after_entry_k_with_every_hash_recomputed_fails_the_checkpoint() {
    let (log, checkpoints) = log_and_checkpoints();
    for (keep, expected_checkpoint, last_matching) in [(17u64, 25u64, 10u64), (0, 10, 0), (30, 40, 25)] {
        // Entries after `keep` are rewritten: the first one says something else.
        let contents = ((keep + 1)..=LOG_LENGTH)
            .map(|n| {
                let text = if n == keep + 1 { "nothing was promised".to_owned() } else { format!("message {n}") };
                content_of(n, 0, &text)
            })
            .collect();
        let rewritten = rebuild_after(&log.stored[..keep as usize], contents);
        // A perfect chain …
        let chain = verify_stored(rewritten.iter().map(|(bytes, hash)| (bytes, hash))).unwrap();
        assert_eq!(chain.entries, LOG_LENGTH);
        // … that the signed roots expose.
        match verify(&rewritten, &checkpoints).unwrap_err() {
            LogError::RootMismatch { tree_size, last_matching_tree_size, .. } => {
                assert_eq!((tree_size, last_matching_tree_size), (expected_checkpoint, last_matching), "keep {keep}");
            }
            other => panic!("keep {keep}: expected a root mismatch, got {other}"),
        }
    }
}

#[test]
fn rewritten_checkpoints_without_the_key_do_not_verify() {
    let (log, checkpoints) = log_and_checkpoints();
    let contents = (18..=LOG_LENGTH).map(|n| content_of(n, 0, "rewritten")).collect();
    let rewritten = rebuild_after(&log.stored[..17], contents);
    let mut rewritten_log = generate(0);
    for (_, hash) in &rewritten {
        rewritten_log.store.append(switchboard_audit::merkle::leaf_hash(hash));
    }
    // Signed with the attacker's own key: the key id gives it away …
    let forged = checkpoint_at(&rewritten_log, &attacker_key(), 40);
    let mut forged_set = checkpoints[..2].to_vec();
    forged_set.push(forged.clone());
    assert!(matches!(
        verify(&rewritten, &forged_set).unwrap_err(),
        LogError::Checkpoint { tree_size: 40, fault: CheckpointError::KeyIdMismatch { .. } }
    ));
    // … and claiming the real key id, the signature does.
    let mut claimed = forged;
    claimed.key_id = checkpoints[2].key_id.clone();
    forged_set[2] = claimed;
    assert!(matches!(
        verify(&rewritten, &forged_set).unwrap_err(),
        LogError::Checkpoint { tree_size: 40, fault: CheckpointError::BadSignature { .. } }
    ));
    // Dropping the checkpoints that no longer match is not enough while one remains.
    assert!(matches!(
        verify(&rewritten, &checkpoints[1..2]).unwrap_err(),
        LogError::RootMismatch { tree_size: 25, .. }
    ));
}

/// One change an attacker could make to stored entries.
#[derive(Debug, Clone)]
enum Mutation {
    FlipByte { entry: usize, position: usize, bit: u8 },
    FlipHashBit { entry: usize, bit: usize },
    Delete { entry: usize },
    Swap { first: usize, second: usize },
    Duplicate { entry: usize },
    Truncate { keep: usize },
    RewriteAfter { keep: usize },
}

fn mutation(length: usize) -> impl Strategy<Value = Mutation> {
    let entry = 0..length;
    prop_oneof![
        (entry.clone(), any::<usize>(), 0u8..8).prop_map(|(entry, position, bit)| Mutation::FlipByte {
            entry,
            position,
            bit
        }),
        (entry.clone(), 0usize..256).prop_map(|(entry, bit)| Mutation::FlipHashBit { entry, bit }),
        entry.clone().prop_map(|entry| Mutation::Delete { entry }),
        // Two different entries, when the log has two.
        (entry.clone(), any::<usize>()).prop_map(move |(first, offset)| {
            let second = if length < 2 { first } else { (first + 1 + offset % (length - 1)) % length };
            Mutation::Swap { first: first.min(second), second: first.max(second) }
        }),
        entry.clone().prop_map(|entry| Mutation::Duplicate { entry }),
        (0..length).prop_map(|keep| Mutation::Truncate { keep }),
        (0..length).prop_map(|keep| Mutation::RewriteAfter { keep }),
    ]
}

fn log_with_mutation() -> impl Strategy<Value = (u64, Vec<u64>, Mutation)> {
    (1u64..60).prop_flat_map(|length| {
        // Checkpoints at random sizes, and always one at the end of the log:
        // entries after the latest checkpoint are protected by the chain only.
        let sizes = proptest::collection::vec(0..=length, 0..4);
        (Just(length), sizes, mutation(length as usize))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Any sequence of appends verifies against checkpoints taken along the way.
    #[test]
    fn any_sequence_of_appends_verifies(length in 0u64..80, sizes in proptest::collection::vec(any::<u64>(), 0..5)) {
        let log = generate(length);
        let key = signing_key();
        let checkpoints: Vec<Checkpoint> =
            sizes.iter().map(|size| checkpoint_at(&log, &key, size % (length + 1))).collect();
        let matched = verify(&log.stored, &checkpoints).unwrap();
        prop_assert_eq!(matched.len(), checkpoints.len());
        prop_assert_eq!(switchboard_audit::verify_chain(&log.entries).unwrap().entries, length);
    }

    /// Any single mutation fails, and names the entry or checkpoint it should.
    #[test]
    fn any_single_mutation_is_detected((length, mut sizes, change) in log_with_mutation()) {
        let log = generate(length);
        let key = signing_key();
        sizes.push(length);
        let checkpoints: Vec<Checkpoint> = sizes.iter().map(|size| checkpoint_at(&log, &key, *size)).collect();
        if let Mutation::Swap { first, second } = change {
            prop_assume!(first != second, "a log of one entry has nothing to swap");
        }
        let mut stored = log.stored.clone();
        match &change {
            Mutation::FlipByte { entry, position, bit } => {
                let bytes = &mut stored[*entry].0;
                let position = position % bytes.len();
                bytes[position] ^= 1 << bit;
            }
            Mutation::FlipHashBit { entry, bit } => stored[*entry].1[bit / 8] ^= 1 << (bit % 8),
            Mutation::Delete { entry } => { stored.remove(*entry); }
            Mutation::Swap { first, second } => stored.swap(*first, *second),
            Mutation::Duplicate { entry } => { let copy = stored[*entry].clone(); stored.insert(*entry, copy); }
            Mutation::Truncate { keep } => stored.truncate(*keep),
            Mutation::RewriteAfter { keep } => {
                let contents = ((*keep as u64 + 1)..=length).map(|n| content_of(n, 0, "rewritten")).collect();
                stored = rebuild_after(&log.stored[..*keep], contents);
            }
        }
        let error = verify(&stored, &checkpoints).unwrap_err();
        match (&change, &error) {
            (Mutation::FlipByte { entry, .. } | Mutation::FlipHashBit { entry, .. }, LogError::Chain(chain)) => {
                prop_assert_eq!(chain.n, *entry as u64 + 1);
                let is_wrong_hash = matches!(chain.fault, ChainFault::WrongHash { .. });
                prop_assert!(is_wrong_hash, "{}", chain);
            }
            (Mutation::Delete { entry }, LogError::Chain(chain)) => prop_assert_eq!(chain.n, *entry as u64 + 1),
            (Mutation::Delete { entry }, LogError::LogShorterThanCheckpoint { .. }) => {
                prop_assert_eq!(*entry as u64 + 1, length);
            }
            (Mutation::Swap { first, .. }, LogError::Chain(chain)) => prop_assert_eq!(chain.n, *first as u64 + 1),
            (Mutation::Duplicate { entry }, LogError::Chain(chain)) => prop_assert_eq!(chain.n, *entry as u64 + 2),
            (Mutation::Truncate { keep }, LogError::LogShorterThanCheckpoint { entries, tree_size }) => {
                prop_assert_eq!(*entries, *keep as u64);
                prop_assert!(*tree_size > *entries);
            }
            (Mutation::RewriteAfter { keep }, LogError::RootMismatch { tree_size, last_matching_tree_size, .. }) => {
                // Named: the first checkpoint covering the rewritten entry.
                let first_covering = sizes.iter().copied().filter(|size| *size > *keep as u64).min();
                prop_assert_eq!(Some(*tree_size), first_covering);
                prop_assert!(*last_matching_tree_size <= *keep as u64);
            }
            (change, error) => prop_assert!(false, "{:?} gave an unexpected error: {}", change, error),
        }
    }
}
