use super::*;
use proptest::prelude::*;
use std::cell::Cell;

// --- RFC 9162's definitions, written directly over all the leaves -------------
// The implementation reads complete subtrees from a store; these recurse over
// the leaf hashes exactly as the RFC's text does, so they share no code with it.

fn naive_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_tree_root(),
        1 => leaves[0],
        size => {
            let split = split_point(size as u64) as usize;
            node_hash(&naive_root(&leaves[..split]), &naive_root(&leaves[split..]))
        }
    }
}

fn naive_path(index: usize, leaves: &[Hash]) -> Vec<Hash> {
    if leaves.len() <= 1 {
        return Vec::new();
    }
    let split = split_point(leaves.len() as u64) as usize;
    if index < split {
        let mut path = naive_path(index, &leaves[..split]);
        path.push(naive_root(&leaves[split..]));
        path
    } else {
        let mut path = naive_path(index - split, &leaves[split..]);
        path.push(naive_root(&leaves[..split]));
        path
    }
}

fn naive_subproof(old_size: usize, leaves: &[Hash], old_is_whole_subtree: bool) -> Vec<Hash> {
    let size = leaves.len();
    if old_size == size {
        return if old_is_whole_subtree { Vec::new() } else { vec![naive_root(leaves)] };
    }
    let split = split_point(size as u64) as usize;
    if old_size <= split {
        let mut proof = naive_subproof(old_size, &leaves[..split], old_is_whole_subtree);
        proof.push(naive_root(&leaves[split..]));
        proof
    } else {
        let mut proof = naive_subproof(old_size - split, &leaves[split..], false);
        proof.push(naive_root(&leaves[..split]));
        proof
    }
}

fn leaves_for(count: usize, seed: u64) -> Vec<Hash> {
    (0..count as u64)
        .map(|index| leaf_hash(&crate::entry::sha256(&[seed.to_le_bytes(), index.to_le_bytes()].concat())))
        .collect()
}

fn store_of(leaves: &[Hash]) -> MemoryNodeStore {
    let mut store = MemoryNodeStore::new();
    for leaf in leaves {
        store.append(*leaf);
    }
    store
}

fn hex_hash(text: &str) -> Hash {
    crate::encoding::decode_hash(text).unwrap()
}

// --- Known answers ------------------------------------------------------------
// The RFC 6962 test vectors (eight leaves of 0 to 16 bytes; roots of each
// prefix; inclusion and consistency proofs) as published with the
// certificate-transparency and transparency-dev/merkle Go code. RFC 9162 kept
// the hashing of RFC 6962, so they hold for both.

fn rfc6962_leaves() -> Vec<Hash> {
    ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
        .iter()
        .map(|data| leaf_hash_of_data(&hex::decode(data).unwrap()))
        .collect()
}

fn rfc6962_roots() -> Vec<Hash> {
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
    .iter()
    .map(|root| hex_hash(root))
    .collect()
}

#[test]
fn rfc6962_vectors_roots() {
    assert_eq!(empty_tree_root(), hex_hash("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    let leaves = rfc6962_leaves();
    let roots = rfc6962_roots();
    let store = store_of(&leaves);
    let mut frontier = Frontier::new();
    for size in 1..=8u64 {
        frontier.append(leaves[size as usize - 1]);
        assert_eq!(root(&store, size).unwrap(), roots[size as usize - 1], "size {size}");
        assert_eq!(frontier.root(), roots[size as usize - 1], "frontier at size {size}");
    }
}

#[test]
fn rfc6962_vectors_inclusion() {
    let leaves = rfc6962_leaves();
    let roots = rfc6962_roots();
    let store = store_of(&leaves);
    // (leaf index, tree size, path)
    let vectors: [(u64, u64, &[&str]); 5] = [
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (leaf_index, tree_size, expected_path) in vectors {
        let expected: Vec<Hash> = expected_path.iter().map(|hash| hex_hash(hash)).collect();
        let path = inclusion_proof(&store, leaf_index, tree_size).unwrap();
        assert_eq!(path, expected, "leaf {leaf_index} in {tree_size}");
        let tree_root = roots[tree_size as usize - 1];
        verify_inclusion(leaf_index, tree_size, &leaves[leaf_index as usize], &path, &tree_root).unwrap();
    }
}

#[test]
fn rfc6962_vectors_consistency() {
    let leaves = rfc6962_leaves();
    let roots = rfc6962_roots();
    let store = store_of(&leaves);
    let vectors: [(u64, u64, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (old_size, new_size, expected_path) in vectors {
        let expected: Vec<Hash> = expected_path.iter().map(|hash| hex_hash(hash)).collect();
        let path = consistency_proof(&store, old_size, new_size).unwrap();
        assert_eq!(path, expected, "{old_size} → {new_size}");
        let old_root = roots[old_size as usize - 1];
        let new_root = roots[new_size as usize - 1];
        verify_consistency(old_size, new_size, &old_root, &new_root, &path).unwrap();
        if !path.is_empty() {
            assert!(verify_consistency(old_size, new_size, &new_root, &old_root, &path).is_err(), "swapped roots");
        }
    }
}

// --- Edges --------------------------------------------------------------------

#[test]
fn sizes_and_indices_outside_the_log_are_errors_not_panics() {
    let store = store_of(&leaves_for(5, 1));
    assert!(matches!(root(&store, 6), Err(MerkleError::TreeSizeBeyondLog { tree_size: 6, leaf_count: 5 })));
    assert!(matches!(inclusion_proof(&store, 5, 5), Err(MerkleError::LeafIndexOutOfRange { .. })));
    assert!(matches!(inclusion_proof(&store, 0, 0), Err(MerkleError::LeafIndexOutOfRange { .. })));
    assert!(matches!(inclusion_proof(&store, 0, u64::MAX), Err(MerkleError::TreeSizeBeyondLog { .. })));
    assert!(matches!(consistency_proof(&store, 4, 3), Err(MerkleError::OldSizeAfterNewSize { .. })));
    assert!(matches!(consistency_proof(&store, 4, u64::MAX), Err(MerkleError::TreeSizeBeyondLog { .. })));
    assert_eq!(root(&store, 0).unwrap(), empty_tree_root());
    assert_eq!(consistency_proof(&store, 0, 5).unwrap(), Vec::<Hash>::new());
    assert_eq!(consistency_proof(&store, 5, 5).unwrap(), Vec::<Hash>::new());
    assert!(matches!(store.complete_subtree(NodePosition { level: 40, index: u64::MAX }), Err(MissingNode { .. })));

    let leaf = [1; 32];
    for (index, size) in [(0, 0), (1, 0), (2, 1), (u64::MAX, u64::MAX)] {
        assert!(matches!(
            verify_inclusion(index, size, &leaf, &[], &leaf),
            Err(ProofError::LeafIndexOutOfRange { .. })
        ));
    }
    // Huge sizes run the RFC's loop without overflow and fail on length.
    assert_eq!(verify_inclusion(0, u64::MAX, &leaf, &[leaf], &leaf), Err(ProofError::PathTooShort));
    assert_eq!(verify_consistency(3, u64::MAX, &leaf, &leaf, &[leaf]), Err(ProofError::PathTooShort));
}

#[test]
fn consistency_edges_follow_the_contract() {
    let some_root = [9; 32];
    let empty = empty_tree_root();
    assert_eq!(verify_consistency(0, 0, &empty, &empty, &[]), Ok(()));
    assert_eq!(verify_consistency(0, 7, &empty, &some_root, &[]), Ok(()));
    assert_eq!(verify_consistency(0, 7, &some_root, &some_root, &[]), Err(ProofError::OldRootMismatch));
    assert_eq!(verify_consistency(0, 7, &empty, &some_root, &[empty]), Err(ProofError::ProofShouldBeEmpty));
    assert_eq!(verify_consistency(7, 7, &some_root, &some_root, &[]), Ok(()));
    assert_eq!(verify_consistency(7, 7, &some_root, &empty, &[]), Err(ProofError::OldRootMismatch));
    assert_eq!(verify_consistency(7, 7, &some_root, &some_root, &[empty]), Err(ProofError::ProofShouldBeEmpty));
    assert_eq!(
        verify_consistency(8, 7, &some_root, &some_root, &[]),
        Err(ProofError::OldSizeAfterNewSize { old_size: 8, new_size: 7 })
    );
    assert_eq!(verify_consistency(1, 2, &some_root, &some_root, &[]), Err(ProofError::EmptyProof));
}

#[test]
fn the_frontier_reports_each_completed_subtree_once() {
    let mut frontier = Frontier::new();
    let leaves = leaves_for(8, 2);
    let positions: Vec<Vec<(u32, u64)>> = leaves
        .iter()
        .map(|leaf| frontier.append(*leaf).iter().map(|node| (node.position.level, node.position.index)).collect())
        .collect();
    assert_eq!(
        positions,
        vec![
            vec![(0, 0)],
            vec![(0, 1), (1, 0)],
            vec![(0, 2)],
            vec![(0, 3), (1, 1), (2, 0)],
            vec![(0, 4)],
            vec![(0, 5), (1, 2)],
            vec![(0, 6)],
            vec![(0, 7), (1, 3), (2, 1), (3, 0)],
        ]
    );
    assert_eq!(frontier.root(), naive_root(&leaves));
}

#[test]
fn a_store_made_with_capacity_grows_past_it() {
    let leaves = leaves_for(37, 4);
    let mut store = MemoryNodeStore::with_capacity(5);
    for leaf in &leaves {
        store.append(*leaf);
    }
    assert_eq!(store.len(), 37);
    assert_eq!(root(&store, 37).unwrap(), naive_root(&leaves));
    assert_eq!(root(&store, 6).unwrap(), naive_root(&leaves[..6]));
    assert!(MemoryNodeStore::with_capacity(0).is_empty());
}

/// Counts reads, to hold generation to its O(log² n) bound.
struct CountingStore<'inner> {
    inner: &'inner MemoryNodeStore,
    reads: Cell<u64>,
}

impl NodeStore for CountingStore<'_> {
    type Error = MissingNode;

    fn leaf_count(&self) -> Result<u64, MissingNode> {
        self.inner.leaf_count()
    }

    fn complete_subtree(&self, position: NodePosition) -> Result<Hash, MissingNode> {
        self.reads.set(self.reads.get() + 1);
        self.inner.complete_subtree(position)
    }
}

#[test]
fn roots_and_proofs_read_at_most_log_squared_nodes() {
    let leaf_count = (1u64 << 16) + 12_345;
    let leaves = leaves_for(leaf_count as usize, 3);
    let store = store_of(&leaves);
    let counting = CountingStore { inner: &store, reads: Cell::new(0) };
    let levels = u64::from(u64::BITS - leaf_count.leading_zeros());
    let bound = levels * levels;
    let mut worst = 0;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..2_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let tree_size = 1 + seed % leaf_count;
        let other = (seed >> 20) % tree_size;
        for operation in 0..3 {
            counting.reads.set(0);
            match operation {
                0 => drop(root(&counting, tree_size).unwrap()),
                1 => drop(inclusion_proof(&counting, other, tree_size).unwrap()),
                _ => drop(consistency_proof(&counting, other, tree_size).unwrap()),
            }
            worst = worst.max(counting.reads.get());
        }
    }
    assert!(worst <= bound, "{worst} reads, bound {bound}");
    // And it reads nothing like the whole tree.
    assert!(worst < 4 * levels, "{worst} reads for {levels} levels");
}

// --- Properties ---------------------------------------------------------------

fn flip_one_bit(hash: &mut Hash, bit: usize) {
    hash[(bit / 8) % 32] ^= 1 << (bit % 8);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Roots, paths and proofs from the store equal the RFC's definitions over
    /// all leaves, for every prefix size.
    #[test]
    fn store_matches_the_definitions(leaf_count in 1usize..200, seed in any::<u64>(), picks in any::<(u64, u64)>()) {
        let leaves = leaves_for(leaf_count, seed);
        let store = store_of(&leaves);
        let tree_size = 1 + (picks.0 % leaf_count as u64) as usize;
        let index = (picks.1 % tree_size as u64) as usize;
        let old_size = (picks.1 % (tree_size as u64 + 1)) as usize;
        prop_assert_eq!(root(&store, tree_size as u64).unwrap(), naive_root(&leaves[..tree_size]));
        prop_assert_eq!(
            inclusion_proof(&store, index as u64, tree_size as u64).unwrap(),
            naive_path(index, &leaves[..tree_size])
        );
        let expected_consistency =
            if old_size == 0 { Vec::new() } else { naive_subproof(old_size, &leaves[..tree_size], true) };
        prop_assert_eq!(consistency_proof(&store, old_size as u64, tree_size as u64).unwrap(), expected_consistency);
        let resumed = Frontier::resume(&store, tree_size as u64).unwrap();
        prop_assert_eq!(resumed.root(), naive_root(&leaves[..tree_size]));
    }

    /// An inclusion proof verifies against the naive root, and not with any
    /// one of its hashes, the leaf, the root or the index changed.
    #[test]
    fn inclusion_proofs_verify_and_any_change_fails(
        leaf_count in 1usize..300,
        seed in any::<u64>(),
        picks in any::<(u64, u64, u64)>(),
        bit in 0usize..256,
    ) {
        let leaves = leaves_for(leaf_count, seed);
        let store = store_of(&leaves);
        let tree_size = 1 + picks.0 % leaf_count as u64;
        let index = picks.1 % tree_size;
        let tree_root = naive_root(&leaves[..tree_size as usize]);
        let leaf = leaves[index as usize];
        let path = inclusion_proof(&store, index, tree_size).unwrap();
        prop_assert_eq!(verify_inclusion(index, tree_size, &leaf, &path, &tree_root), Ok(()));

        for position in 0..path.len() {
            let mut changed = path.clone();
            flip_one_bit(&mut changed[position], bit);
            prop_assert!(verify_inclusion(index, tree_size, &leaf, &changed, &tree_root).is_err());
        }
        let mut changed_leaf = leaf;
        flip_one_bit(&mut changed_leaf, bit);
        prop_assert!(verify_inclusion(index, tree_size, &changed_leaf, &path, &tree_root).is_err());
        let mut changed_root = tree_root;
        flip_one_bit(&mut changed_root, bit);
        prop_assert!(verify_inclusion(index, tree_size, &leaf, &path, &changed_root).is_err());
        if tree_size > 1 {
            let other_index = (index + 1 + picks.2 % (tree_size - 1)) % tree_size;
            prop_assert_ne!(other_index, index);
            prop_assert!(verify_inclusion(other_index, tree_size, &leaf, &path, &tree_root).is_err());
        }
        let mut longer = path.clone();
        longer.push(tree_root);
        prop_assert!(verify_inclusion(index, tree_size, &leaf, &longer, &tree_root).is_err());
        if !path.is_empty() {
            prop_assert!(verify_inclusion(index, tree_size, &leaf, &path[..path.len() - 1], &tree_root).is_err());
        }
    }

    /// A consistency proof between random sizes verifies against the naive
    /// roots, and not with any one hash changed, a hash removed or added.
    #[test]
    fn consistency_proofs_verify_and_any_change_fails(
        leaf_count in 1usize..300,
        seed in any::<u64>(),
        picks in any::<(u64, u64)>(),
        bit in 0usize..256,
    ) {
        let leaves = leaves_for(leaf_count, seed);
        let store = store_of(&leaves);
        let new_size = 1 + picks.0 % leaf_count as u64;
        let old_size = picks.1 % (new_size + 1);
        let old_root = naive_root(&leaves[..old_size as usize]);
        let new_root = naive_root(&leaves[..new_size as usize]);
        let path = consistency_proof(&store, old_size, new_size).unwrap();
        prop_assert_eq!(verify_consistency(old_size, new_size, &old_root, &new_root, &path), Ok(()));

        for position in 0..path.len() {
            let mut changed = path.clone();
            flip_one_bit(&mut changed[position], bit);
            prop_assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &changed).is_err());
        }
        let mut changed_old_root = old_root;
        flip_one_bit(&mut changed_old_root, bit);
        prop_assert!(verify_consistency(old_size, new_size, &changed_old_root, &new_root, &path).is_err());
        let mut changed_new_root = new_root;
        flip_one_bit(&mut changed_new_root, bit);
        // Every tree extends the empty one: then the new root is not part of the proof.
        if old_size != 0 {
            prop_assert!(verify_consistency(old_size, new_size, &old_root, &changed_new_root, &path).is_err());
        }
        let mut longer = path.clone();
        longer.push(new_root);
        prop_assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &longer).is_err());
        if !path.is_empty() {
            prop_assert!(
                verify_consistency(old_size, new_size, &old_root, &new_root, &path[..path.len() - 1]).is_err()
            );
            let mut with_old_root_first = vec![old_root];
            with_old_root_first.extend_from_slice(&path);
            prop_assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &with_old_root_first).is_err());
        }
    }
}
