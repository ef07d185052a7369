//! The file `switchboard audit export --contact WA_ID` writes and
//! `switchboard audit check FILE [--key PUBKEY]` verifies with nothing else.
//!
//! JSON lines, UTF-8, each line the RFC 8785 canonical JSON of one object and
//! ended by one `\n` (the last line too):
//!
//! ```text
//! {"checkpoint":{…},"contact":"WA_ID","entries":K,"format":"switchboard-audit-export","public_key":"<64 hex>","version":1}
//! {"entry":{…entry n₁ with its hash…},"proof":{"leaf_hash":"…","n":n₁,"path":["…",…],"tree_size":S}}
//! … K entry lines, n ascending …
//! ```
//!
//! The first line holds the latest signed checkpoint (tree size S, root),
//! the contact and the public key; each entry carries its inclusion proof in
//! the tree of the checkpoint's size, in the shape of `GET /api/v1/audit/proof`.
//!
//! Every byte counts. JSON lets whitespace, key order and escapes vary
//! without changing a value; here each line must be exactly the canonical
//! form of what it parses to, so there is one accepted spelling of each file.
//! Every value is then bound: an entry by its hash, its hash by its proof,
//! the proof by the signed root, the checkpoint by its signature; the
//! redundant fields (`proof.n`, `proof.tree_size`, `proof.leaf_hash`,
//! `entries`, `contact`, `public_key` when `--key` is given) must equal what
//! they repeat. So a file with any one byte changed fails `check`.
//!
//! What it proves: each entry in the file is, unchanged, entry n of the log
//! whose root the key signed. What it cannot prove: that the file holds all of
//! the contact's entries (an inclusion proof shows presence, not absence).

use crate::checkpoint::{AuditPublicKey, Checkpoint, CheckpointError, PublicKeyError};
use crate::encoding::{self, Hash, HexError};
use crate::entry::{ChainFault, Entry, check_field_forms, recompute_hash};
use crate::merkle::{self, MerkleError, NodeStore, ProofError, leaf_hash};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// The `format` of the first line.
pub const EXPORT_FORMAT: &str = "switchboard-audit-export";
/// The `version` this build writes and reads.
pub const EXPORT_VERSION: u64 = 1;

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportHeader {
    checkpoint: Checkpoint,
    contact: String,
    entries: u64,
    format: String,
    public_key: String,
    version: u64,
}

/// An inclusion proof as `GET /api/v1/audit/proof` serves it and an export
/// carries it: entry `n` (leaf index n − 1) in the tree of the first
/// `tree_size` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProofRecord {
    pub n: u64,
    pub tree_size: u64,
    /// SHA-256(0x00 ‖ entry hash bytes), lowercase hex.
    pub leaf_hash: String,
    /// From the leaf's sibling up, lowercase hex.
    pub path: Vec<String>,
}

impl InclusionProofRecord {
    /// The proof of entry `n`, whose hash is `entry_hash`, in the tree of `tree_size`.
    pub fn generate<Store: NodeStore>(
        store: &Store,
        n: u64,
        entry_hash: &Hash,
        tree_size: u64,
    ) -> Result<Self, MerkleError<Store::Error>> {
        let leaf_index =
            n.checked_sub(1).ok_or(MerkleError::LeafIndexOutOfRange { leaf_index: u64::MAX, tree_size })?;
        let path = merkle::inclusion_proof(store, leaf_index, tree_size)?;
        Ok(InclusionProofRecord {
            n,
            tree_size,
            leaf_hash: encoding::encode_hex(&leaf_hash(entry_hash)),
            path: path.iter().map(|hash| encoding::encode_hex(hash)).collect(),
        })
    }
}

/// One entry line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportedEntry {
    entry: Entry,
    proof: InclusionProofRecord,
}

/// Why an export could not be written.
#[derive(Debug, Error)]
pub enum ExportError<StoreError: std::error::Error + 'static> {
    #[error("no audit entries to export for contact {contact}")]
    NoEntries { contact: String },
    #[error("entry n={n} belongs to contact {found:?}, not {contact}")]
    OtherContact { n: u64, contact: String, found: Option<String> },
    #[error("entry n={n} comes after entry n={previous}: entries must be in ascending order, each once")]
    NotAscending { n: u64, previous: u64 },
    #[error("entry n={n} is after the checkpoint's tree size {tree_size}: it cannot be proven yet")]
    AfterCheckpoint { n: u64, tree_size: u64 },
    #[error("entry n={n}: {fault}")]
    BadEntry { n: u64, fault: ChainFault },
    #[error("checkpoint: {0}")]
    Checkpoint(CheckpointError),
    #[error("the checkpoint's root is not the store's root at tree size {tree_size}")]
    CheckpointNotOfThisLog { tree_size: u64 },
    #[error(transparent)]
    Merkle(#[from] MerkleError<StoreError>),
    #[error("cannot write a line as canonical JSON: {detail}")]
    Serialize { detail: String },
    #[error("the written export does not check: {0}")]
    SelfCheck(CheckError),
}

/// Writes the export of `entries` (all of `contact`, ascending `n`, each at
/// most the checkpoint's tree size) with proofs from `store`. The result is
/// checked with `public_key` before it is returned: an export that would not
/// check is never handed out.
pub fn write_export<Store: NodeStore>(
    contact: &str,
    entries: &[Entry],
    store: &Store,
    checkpoint: &Checkpoint,
    public_key: &AuditPublicKey,
) -> Result<Vec<u8>, ExportError<Store::Error>> {
    if entries.is_empty() {
        return Err(ExportError::NoEntries { contact: contact.to_owned() });
    }
    let signed_root = public_key.verify(checkpoint).map_err(ExportError::Checkpoint)?;
    let tree_size = checkpoint.tree_size;
    if merkle::root(store, tree_size)? != signed_root {
        return Err(ExportError::CheckpointNotOfThisLog { tree_size });
    }
    let header = ExportHeader {
        checkpoint: checkpoint.clone(),
        contact: contact.to_owned(),
        entries: entries.len() as u64,
        format: EXPORT_FORMAT.to_owned(),
        public_key: public_key.to_hex(),
        version: EXPORT_VERSION,
    };
    let mut file = canonical_line(&header)?;
    let mut previous_n = 0;
    for entry in entries {
        let n = entry.n;
        if entry.contact.as_deref() != Some(contact) {
            return Err(ExportError::OtherContact { n, contact: contact.to_owned(), found: entry.contact.clone() });
        }
        if n <= previous_n {
            return Err(ExportError::NotAscending { n, previous: previous_n });
        }
        if n > tree_size {
            return Err(ExportError::AfterCheckpoint { n, tree_size });
        }
        let entry_hash = recompute_hash(entry).map_err(|fault| ExportError::BadEntry { n, fault })?;
        check_field_forms(entry).map_err(|fault| ExportError::BadEntry { n, fault })?;
        let proof = InclusionProofRecord::generate(store, n, &entry_hash, tree_size)?;
        file.extend_from_slice(&canonical_line(&ExportedEntry { entry: entry.clone(), proof })?);
        previous_n = n;
    }
    check(&file, Some(public_key)).map_err(ExportError::SelfCheck)?;
    Ok(file)
}

fn canonical_line<StoreError: std::error::Error + 'static>(
    value: &impl Serialize,
) -> Result<Vec<u8>, ExportError<StoreError>> {
    let mut line = serde_json_canonicalizer::to_vec(value)
        .map_err(|error| ExportError::Serialize { detail: error.to_string() })?;
    line.push(b'\n');
    Ok(line)
}

/// Whose key the signature was checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTrust {
    /// The key the inspector gave (`--key`), which the file's key must equal.
    GivenKey,
    /// The key inside the file: proves the file is internally consistent and
    /// unchanged since signing, not who signed it.
    SelfSigned,
}

/// An export that checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSummary {
    pub contact: String,
    pub entries: u64,
    /// The `n` of each entry in the file, ascending.
    pub entry_numbers: Vec<u64>,
    pub tree_size: u64,
    pub root: String,
    pub checkpoint_at: String,
    pub key_id: String,
    pub trust: KeyTrust,
}

impl fmt::Display for CheckSummary {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "ok: {} entries of contact {} are in the audit log of {} entries whose root {} key {} signed at {}",
            self.entries, self.contact, self.tree_size, self.root, self.key_id, self.checkpoint_at
        )?;
        if self.trust == KeyTrust::SelfSigned {
            write!(
                formatter,
                "\nself-signed: checked with the public key inside the file, which proves the file is unchanged \
                 since it was signed but not who signed it; pass --key with the operator's published key"
            )?;
        }
        Ok(())
    }
}

/// Why an export does not check: the first problem, naming the line, the
/// entry or the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckError {
    #[error("line {line}: {problem}")]
    Format { line: usize, problem: String },
    #[error("the file's public key {in_file} is not the key given {given}")]
    KeyMismatch { in_file: String, given: String },
    #[error("line 1: {0}")]
    PublicKey(PublicKeyError),
    #[error("checkpoint (tree size {tree_size}): {fault}")]
    Checkpoint { tree_size: u64, fault: CheckpointError },
    #[error("entry n={n} (line {line}): {fault}")]
    Entry { n: u64, line: usize, fault: EntryFault },
}

/// What is wrong with one entry of an export.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EntryFault {
    #[error("the line is not in canonical form (RFC 8785) or not of the expected shape: {problem}")]
    NotCanonical { problem: String },
    #[error("it belongs to contact {found:?}, not the file's contact")]
    OtherContact { found: Option<String> },
    #[error("it follows entry n={previous}: entries must be in ascending order, each once")]
    NotAscending { previous: u64 },
    #[error("it is after the checkpoint's tree size {tree_size}")]
    AfterCheckpoint { tree_size: u64 },
    #[error("{0}")]
    Entry(ChainFault),
    #[error("its proof is for {field} {found}, not {expected}")]
    ProofOfSomethingElse { field: &'static str, found: String, expected: String },
    #[error("proof hash {position}: {error}")]
    ProofEncoding { position: usize, error: HexError },
    #[error("its inclusion proof does not lead to the signed root: {0}")]
    Proof(ProofError),
}

/// Checks an export with the given key, or the key in the file (`SelfSigned`)
/// when none is given: the checkpoint's signature, then every entry's hash
/// and inclusion proof, in order. The first failure is returned.
pub fn check(file: &[u8], given_key: Option<&AuditPublicKey>) -> Result<CheckSummary, CheckError> {
    let Some(body) = file.strip_suffix(b"\n") else {
        let line = file.split(|byte| *byte == b'\n').count();
        return Err(CheckError::Format { line, problem: "the file must end with a newline".to_owned() });
    };
    let mut lines = body.split(|byte| *byte == b'\n');
    let header_line = lines.next().unwrap_or_default();
    let header: ExportHeader = parse_canonical_line(header_line)
        .map_err(|problem| CheckError::Format { line: 1, problem: format!("not an export header: {problem}") })?;
    if header.format != EXPORT_FORMAT {
        return Err(CheckError::Format {
            line: 1,
            problem: format!("format {:?} is not {EXPORT_FORMAT:?}", header.format),
        });
    }
    if header.version != EXPORT_VERSION {
        return Err(CheckError::Format {
            line: 1,
            problem: format!("version {} is not supported (this build reads {EXPORT_VERSION})", header.version),
        });
    }
    let file_key = AuditPublicKey::from_hex(&header.public_key).map_err(CheckError::PublicKey)?;
    let trust = match given_key {
        Some(given) if *given != file_key => {
            return Err(CheckError::KeyMismatch { in_file: header.public_key.clone(), given: given.to_hex() });
        }
        Some(_) => KeyTrust::GivenKey,
        None => KeyTrust::SelfSigned,
    };
    let checkpoint = &header.checkpoint;
    let tree_size = checkpoint.tree_size;
    let signed_root = file_key.verify(checkpoint).map_err(|fault| CheckError::Checkpoint { tree_size, fault })?;

    let entry_lines: Vec<&[u8]> = lines.collect();
    if header.entries != entry_lines.len() as u64 {
        return Err(CheckError::Format {
            line: 1,
            problem: format!("the header announces {} entries, the file holds {}", header.entries, entry_lines.len()),
        });
    }
    if entry_lines.is_empty() {
        return Err(CheckError::Format { line: 1, problem: "the file holds no entry".to_owned() });
    }
    let mut entry_numbers = Vec::with_capacity(entry_lines.len());
    let mut previous_n = 0;
    for (position, line_bytes) in entry_lines.iter().enumerate() {
        let line = position + 2;
        let exported = parse_entry_line(line_bytes, line)?;
        let n = exported.entry.n;
        let fault = |fault: EntryFault| CheckError::Entry { n, line, fault };
        check_exported_entry(&exported, &header.contact, previous_n, tree_size, &signed_root).map_err(fault)?;
        entry_numbers.push(n);
        previous_n = n;
    }
    Ok(CheckSummary {
        contact: header.contact,
        entries: entry_numbers.len() as u64,
        entry_numbers,
        tree_size,
        root: checkpoint.root.clone(),
        checkpoint_at: checkpoint.at.clone(),
        key_id: checkpoint.key_id.clone(),
        trust,
    })
}

fn check_exported_entry(
    exported: &ExportedEntry,
    contact: &str,
    previous_n: u64,
    tree_size: u64,
    signed_root: &Hash,
) -> Result<(), EntryFault> {
    let ExportedEntry { entry, proof } = exported;
    if entry.contact.as_deref() != Some(contact) {
        return Err(EntryFault::OtherContact { found: entry.contact.clone() });
    }
    if entry.n <= previous_n {
        return Err(EntryFault::NotAscending { previous: previous_n });
    }
    if entry.n > tree_size {
        return Err(EntryFault::AfterCheckpoint { tree_size });
    }
    let entry_hash = recompute_hash(entry).map_err(EntryFault::Entry)?;
    check_field_forms(entry).map_err(EntryFault::Entry)?;
    if proof.n != entry.n {
        return Err(EntryFault::ProofOfSomethingElse {
            field: "n",
            found: proof.n.to_string(),
            expected: entry.n.to_string(),
        });
    }
    if proof.tree_size != tree_size {
        return Err(EntryFault::ProofOfSomethingElse {
            field: "tree_size",
            found: proof.tree_size.to_string(),
            expected: tree_size.to_string(),
        });
    }
    let leaf = leaf_hash(&entry_hash);
    let leaf_hex = encoding::encode_hex(&leaf);
    if proof.leaf_hash != leaf_hex {
        return Err(EntryFault::ProofOfSomethingElse {
            field: "leaf_hash",
            found: proof.leaf_hash.clone(),
            expected: leaf_hex,
        });
    }
    let path = proof
        .path
        .iter()
        .enumerate()
        .map(|(position, hash)| {
            encoding::decode_hash(hash).map_err(|error| EntryFault::ProofEncoding { position, error })
        })
        .collect::<Result<Vec<Hash>, EntryFault>>()?;
    merkle::verify_inclusion(entry.n - 1, tree_size, &leaf, &path, signed_root).map_err(EntryFault::Proof)
}

/// Parses a line and requires it to be the canonical form of what it parsed to.
fn parse_canonical_line<Line: DeserializeOwned + Serialize>(line: &[u8]) -> Result<Line, String> {
    let value: Line = serde_json::from_slice(line).map_err(|error| error.to_string())?;
    let canonical = serde_json_canonicalizer::to_vec(&value).map_err(|error| error.to_string())?;
    if canonical != line {
        return Err("the line is not in canonical form (RFC 8785): it was changed after it was written".to_owned());
    }
    Ok(value)
}

/// An entry line; when it is not canonical, names the entry if its `n` can still be read.
fn parse_entry_line(line_bytes: &[u8], line: usize) -> Result<ExportedEntry, CheckError> {
    parse_canonical_line::<ExportedEntry>(line_bytes).map_err(|problem| {
        let readable_n = serde_json::from_slice::<serde_json::Value>(line_bytes)
            .ok()
            .and_then(|value| value.get("entry")?.get("n")?.as_u64());
        match readable_n {
            Some(n) => CheckError::Entry { n, line, fault: EntryFault::NotCanonical { problem } },
            None => CheckError::Format { line, problem: format!("not an entry line: {problem}") },
        }
    })
}
