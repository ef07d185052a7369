//! The verifiable core of Switchboard's audit log (contract §5 and §9): what
//! an entry is and how it is hashed and chained, the RFC 9162 Merkle tree
//! over the entries with its proofs, signed checkpoints and the signing key
//! file, and the export file an inspector checks offline.
//!
//! Storage persists what this crate computes (each entry's canonical bytes and
//! hash, the Merkle nodes a [`merkle::Frontier`] reports complete); the engine
//! serves it (`/api/v1/audit…`) and runs `switchboard audit export|check`. This
//! crate is pure so that both, and an inspector's machine, run the same code.
//!
//! Layout:
//! - [`entry`]: `Entry`, RFC 8785 canonical bytes, building the next entry,
//!   and two chain verifiers that agree: typed ([`entry::verify_chain`]) and
//!   over stored bytes without parsing ([`entry::verify_stored`]).
//! - [`merkle`]: leaf and node hashes, the [`merkle::NodeStore`] trait (complete
//!   subtrees by level and index), the frontier that appends, roots and
//!   inclusion/consistency proofs in O(log² n) reads, RFC 9162 verification,
//!   and an in-memory store.
//! - [`checkpoint`]: `Checkpoint`, signing and verifying, the key id, the
//!   0600 key file.
//! - [`verify`]: a stored log against its checkpoints (truncation and
//!   rewrites the chain alone cannot see).
//! - [`export`]: the export file, written and checked.
//! - [`encoding`]: the strict lowercase hex and timestamp forms.
//!
//! Deliberately absent: no IO besides the key file (storage persists, the
//! engine serves), no clock (callers pass `at`), no async, no dependency on
//! another Switchboard crate. Nothing here decides *what* is audited; the
//! actors do. Docs: `docs/audit.md`.

pub mod checkpoint;
pub mod encoding;
pub mod entry;
pub mod export;
pub mod merkle;
pub mod verify;

pub use checkpoint::{AuditPublicKey, AuditSigningKey, Checkpoint, load_or_generate};
pub use encoding::Hash;
pub use entry::{BuiltEntry, ChainHead, ChainSummary, Entry, EntryContent, verify_chain, verify_stored};
pub use export::{CheckSummary, check, write_export};
pub use merkle::{Frontier, MemoryNodeStore, NodeStore};
pub use verify::verify_log;
