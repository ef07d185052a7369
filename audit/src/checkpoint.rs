//! Signed checkpoints and the signing key file (contract §9).
//!
//! A checkpoint says "the log had `tree_size` entries and this Merkle root at
//! `at`", signed with Ed25519 (RFC 8032) over exactly
//! `switchboard-checkpoint\n{tree_size}\n{root}\n{at}\n` (decimal size, lowercase
//! hex root). `signature` is the 64-byte signature in lowercase hex (128
//! characters), like every other hash and key in the log.
//!
//! `key_id` names the key: the first 16 lowercase hex characters of SHA-256 of
//! the 32-byte public key. It lets a reader see at once which key a checkpoint
//! claims; it proves nothing, the signature does.
//!
//! The key file holds the 32-byte Ed25519 secret seed, raw, nothing else. It
//! is made at first start when absent: written to a temporary file created
//! with `create_new` and mode 0600, synced, then hard-linked to its name (which
//! fails if another process made one first, and never shows a half-written
//! key), and the directory synced. A key file that group or others may read or
//! write, or that is not exactly 32 bytes, is refused with an error that says
//! what to do. The secret never appears in `Debug` output or in an error.

use crate::encoding::{self, Hash, HexError, TimestampError};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroizing;

/// The first line of every signed checkpoint message.
pub const CHECKPOINT_CONTEXT: &str = "switchboard-checkpoint";

/// Length of the raw secret in the key file.
pub const SECRET_KEY_FILE_LEN: usize = 32;

/// A signed statement of the log's size and Merkle root
/// (`GET /api/v1/audit/checkpoint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub tree_size: u64,
    /// The Merkle root of the first `tree_size` entries, lowercase hex.
    pub root: String,
    /// RFC 3339 UTC with milliseconds.
    pub at: String,
    /// First 16 hex characters of SHA-256 of the signing public key.
    pub key_id: String,
    /// Ed25519 signature of [`signed_message`], lowercase hex (128 characters).
    pub signature: String,
}

/// The exact bytes a checkpoint signs.
pub fn signed_message(tree_size: u64, root_hex: &str, at: &str) -> String {
    format!("{CHECKPOINT_CONTEXT}\n{tree_size}\n{root_hex}\n{at}\n")
}

/// Names a public key: first 16 lowercase hex characters of SHA-256 of its 32 bytes.
pub fn key_id_of(public_key_bytes: &[u8; 32]) -> String {
    let digest: Hash = Sha256::digest(public_key_bytes).into();
    encoding::encode_hex(&digest[..8])
}

/// Why a checkpoint could not be made or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    #[error("root: {0}")]
    Root(HexError),
    #[error("at: {0}")]
    Timestamp(#[from] TimestampError),
    #[error("signed by key {found}, not by key {expected}")]
    KeyIdMismatch { expected: String, found: String },
    #[error("signature: {0}")]
    SignatureEncoding(HexError),
    #[error("the signature does not verify with key {key_id}")]
    BadSignature { key_id: String },
}

/// Why a public key is not usable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PublicKeyError {
    #[error("public key: {0}")]
    Encoding(HexError),
    #[error("public key is not a valid Ed25519 point")]
    NotAPoint,
    #[error("public key is a weak (small-order) Ed25519 key")]
    Weak,
}

/// The checkpoint signing key. Its `Debug` shows only the key id.
pub struct AuditSigningKey {
    signing_key: SigningKey,
}

impl fmt::Debug for AuditSigningKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("AuditSigningKey").field("key_id", &self.public_key().key_id()).finish_non_exhaustive()
    }
}

impl AuditSigningKey {
    /// A new key from 32 bytes of operating-system randomness.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut seed = Zeroizing::new([0u8; SECRET_KEY_FILE_LEN]);
        getrandom::fill(seed.as_mut())?;
        Ok(Self::from_secret_bytes(&seed))
    }

    /// The key whose 32-byte secret seed (RFC 8032) is `seed`.
    pub fn from_secret_bytes(seed: &[u8; SECRET_KEY_FILE_LEN]) -> Self {
        AuditSigningKey { signing_key: SigningKey::from_bytes(seed) }
    }

    pub fn public_key(&self) -> AuditPublicKey {
        AuditPublicKey { verifying_key: self.signing_key.verifying_key() }
    }

    /// Signs the root of the first `tree_size` entries as of `at`.
    pub fn sign_checkpoint(&self, tree_size: u64, root: &Hash, at: &str) -> Result<Checkpoint, CheckpointError> {
        encoding::check_timestamp(at)?;
        let root_hex = encoding::encode_hex(root);
        let signature = self.signing_key.sign(signed_message(tree_size, &root_hex, at).as_bytes());
        Ok(Checkpoint {
            tree_size,
            root: root_hex,
            at: at.to_owned(),
            key_id: self.public_key().key_id(),
            signature: encoding::encode_hex(&signature.to_bytes()),
        })
    }

    /// The raw seed, for the key file only.
    fn secret_bytes(&self) -> Zeroizing<[u8; SECRET_KEY_FILE_LEN]> {
        Zeroizing::new(self.signing_key.to_bytes())
    }
}

/// A checkpoint verifying key (`GET /api/v1/audit/key`, `audit check --key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPublicKey {
    verifying_key: VerifyingKey,
}

impl AuditPublicKey {
    /// Parses 64 lowercase hex characters; refuses invalid and weak keys.
    pub fn from_hex(text: &str) -> Result<Self, PublicKeyError> {
        let bytes = encoding::decode_lower_hex::<32>(text).map_err(PublicKeyError::Encoding)?;
        let verifying_key = VerifyingKey::from_bytes(&bytes).map_err(|_| PublicKeyError::NotAPoint)?;
        if verifying_key.is_weak() {
            return Err(PublicKeyError::Weak);
        }
        Ok(AuditPublicKey { verifying_key })
    }

    /// The 32-byte public key in lowercase hex.
    pub fn to_hex(&self) -> String {
        encoding::encode_hex(self.verifying_key.as_bytes())
    }

    pub fn key_id(&self) -> String {
        key_id_of(self.verifying_key.as_bytes())
    }

    /// Checks a checkpoint's form, its key id and its signature. Uses
    /// Ed25519's strict verification (no malleable signatures, no weak keys).
    pub fn verify(&self, checkpoint: &Checkpoint) -> Result<Hash, CheckpointError> {
        let root = encoding::decode_hash(&checkpoint.root).map_err(CheckpointError::Root)?;
        encoding::check_timestamp(&checkpoint.at)?;
        let key_id = self.key_id();
        if checkpoint.key_id != key_id {
            return Err(CheckpointError::KeyIdMismatch { expected: key_id, found: checkpoint.key_id.clone() });
        }
        let signature_bytes =
            encoding::decode_lower_hex::<64>(&checkpoint.signature).map_err(CheckpointError::SignatureEncoding)?;
        let signature = Signature::from_bytes(&signature_bytes);
        let message = signed_message(checkpoint.tree_size, &checkpoint.root, &checkpoint.at);
        self.verifying_key
            .verify_strict(message.as_bytes(), &signature)
            .map_err(|_| CheckpointError::BadSignature { key_id })?;
        Ok(root)
    }
}

/// Why the key file could not be loaded or made. No variant holds key bytes.
#[derive(Debug, Error)]
pub enum KeyFileError {
    #[error("audit signing key file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot read audit signing key file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("audit signing key file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "audit signing key file {path} has mode {mode:o}: group or others may use it; \
         run `chmod 600 {path}` (and consider the key exposed)"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error(
        "audit signing key file {path} holds {found} bytes, not the {SECRET_KEY_FILE_LEN}-byte Ed25519 secret; \
         restore it from a backup (a new key cannot sign for the checkpoints already published)"
    )]
    WrongLength { path: PathBuf, found: u64 },
    #[error("cannot create audit signing key file {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("no operating-system randomness for a new audit signing key: {0}")]
    Randomness(getrandom::Error),
}

/// Loads the key file, refusing one with group/other permission bits or the wrong length.
pub fn load_key_file(path: &Path) -> Result<AuditSigningKey, KeyFileError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(KeyFileError::Missing { path: path.to_owned() });
        }
        Err(source) => return Err(KeyFileError::Read { path: path.to_owned(), source }),
    };
    // Checked on the opened file, so a file swapped after the check is not read.
    let metadata = file.metadata().map_err(|source| KeyFileError::Read { path: path.to_owned(), source })?;
    if !metadata.is_file() {
        return Err(KeyFileError::NotAFile { path: path.to_owned() });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen { path: path.to_owned(), mode });
    }
    if metadata.len() != SECRET_KEY_FILE_LEN as u64 {
        return Err(KeyFileError::WrongLength { path: path.to_owned(), found: metadata.len() });
    }
    let mut seed = Zeroizing::new([0u8; SECRET_KEY_FILE_LEN]);
    file.read_exact(seed.as_mut()).map_err(|source| KeyFileError::Read { path: path.to_owned(), source })?;
    // A file that grew between the length check and the read is not a key file either.
    let mut one_more = [0u8; 1];
    match file.read(&mut one_more) {
        Ok(0) => {}
        Ok(_) => return Err(KeyFileError::WrongLength { path: path.to_owned(), found: metadata.len() + 1 }),
        Err(source) => return Err(KeyFileError::Read { path: path.to_owned(), source }),
    }
    Ok(AuditSigningKey::from_secret_bytes(&seed))
}

/// Loads the key file, or makes it with a new key if it does not exist.
pub fn load_or_generate(path: &Path) -> Result<AuditSigningKey, KeyFileError> {
    match load_key_file(path) {
        Err(KeyFileError::Missing { .. }) => {}
        loaded => return loaded,
    }
    let key = AuditSigningKey::generate().map_err(KeyFileError::Randomness)?;
    match create_key_file(path, &key) {
        Ok(()) => Ok(key),
        // Another process made it first: use that one, as it will.
        Err(KeyFileError::Create { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
            load_key_file(path)
        }
        Err(error) => Err(error),
    }
}

fn create_key_file(path: &Path, key: &AuditSigningKey) -> Result<(), KeyFileError> {
    let create_error = |source: io::Error| KeyFileError::Create { path: path.to_owned(), source };
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| create_error(io::Error::other("the path names no file")))?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(KeyFileError::Randomness)?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(file_name);
    temporary_name.push(format!(".{}.tmp", encoding::encode_hex(&suffix)));
    let temporary_path = directory.join(temporary_name);

    let written = (|| -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary_path)?;
        file.write_all(key.secret_bytes().as_ref())?;
        file.sync_all()?;
        fs::hard_link(&temporary_path, path)
    })();
    // The temporary name goes whether or not the link was made.
    let removed = fs::remove_file(&temporary_path);
    written.map_err(create_error)?;
    if let Err(source) = removed
        && source.kind() != io::ErrorKind::NotFound
    {
        return Err(create_error(source));
    }
    File::open(&directory).and_then(|directory_handle| directory_handle.sync_all()).map_err(create_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const ROOT: Hash = [0xab; 32];
    const AT: &str = "2026-11-24T10:00:00.000Z";

    fn test_key() -> AuditSigningKey {
        AuditSigningKey::from_secret_bytes(&[7; 32])
    }

    #[test]
    fn a_checkpoint_signs_exactly_the_documented_message() {
        let key = test_key();
        let checkpoint = key.sign_checkpoint(42, &ROOT, AT).unwrap();
        let public_key = key.public_key();
        assert_eq!(public_key.verify(&checkpoint), Ok(ROOT));
        assert_eq!(checkpoint.root, "ab".repeat(32));
        assert_eq!(checkpoint.signature.len(), 128);
        assert_eq!(checkpoint.key_id, public_key.key_id());
        assert_eq!(checkpoint.key_id.len(), 16);
        let message = format!("switchboard-checkpoint\n42\n{}\n{AT}\n", "ab".repeat(32));
        let signature = Signature::from_bytes(&encoding::decode_lower_hex::<64>(&checkpoint.signature).unwrap());
        public_key.verifying_key.verify_strict(message.as_bytes(), &signature).unwrap();
    }

    #[test]
    fn key_id_is_the_start_of_the_public_key_digest() {
        let public_key = test_key().public_key();
        let digest = hex::encode(Sha256::digest(public_key.verifying_key.as_bytes()));
        assert_eq!(public_key.key_id(), digest[..16]);
        assert_eq!(AuditPublicKey::from_hex(&public_key.to_hex()), Ok(public_key));
    }

    #[test]
    fn any_changed_field_fails_verification() {
        let key = test_key();
        let public_key = key.public_key();
        let checkpoint = key.sign_checkpoint(42, &ROOT, AT).unwrap();
        let mut changed = checkpoint.clone();
        changed.tree_size = 43;
        assert!(matches!(public_key.verify(&changed), Err(CheckpointError::BadSignature { .. })));
        let mut changed = checkpoint.clone();
        changed.root = "ac".repeat(32);
        assert!(matches!(public_key.verify(&changed), Err(CheckpointError::BadSignature { .. })));
        let mut changed = checkpoint.clone();
        changed.at = "2026-11-24T10:00:00.001Z".to_owned();
        assert!(matches!(public_key.verify(&changed), Err(CheckpointError::BadSignature { .. })));
        let mut changed = checkpoint.clone();
        changed.root = changed.root.to_uppercase();
        assert!(matches!(public_key.verify(&changed), Err(CheckpointError::Root(_))));
        let mut changed = checkpoint.clone();
        changed.signature = changed.signature.to_uppercase();
        assert!(matches!(public_key.verify(&changed), Err(CheckpointError::SignatureEncoding(_))));
        let mut changed = checkpoint.clone();
        changed.key_id = "0000000000000000".to_owned();
        assert!(matches!(public_key.verify(&changed), Err(CheckpointError::KeyIdMismatch { .. })));

        let other_key = AuditSigningKey::from_secret_bytes(&[8; 32]);
        let mut forged = other_key.sign_checkpoint(42, &ROOT, AT).unwrap();
        assert!(matches!(public_key.verify(&forged), Err(CheckpointError::KeyIdMismatch { .. })));
        forged.key_id = checkpoint.key_id.clone();
        assert!(matches!(public_key.verify(&forged), Err(CheckpointError::BadSignature { .. })));
    }

    #[test]
    fn public_keys_in_other_spellings_or_weak_are_refused() {
        let public_hex = test_key().public_key().to_hex();
        assert!(matches!(AuditPublicKey::from_hex(&public_hex.to_uppercase()), Err(PublicKeyError::Encoding(_))));
        assert!(matches!(AuditPublicKey::from_hex(&public_hex[..62]), Err(PublicKeyError::Encoding(_))));
        // The identity point (small order).
        let identity = format!("01{}", "00".repeat(31));
        assert_eq!(AuditPublicKey::from_hex(&identity), Err(PublicKeyError::Weak));
    }

    #[test]
    fn the_secret_never_shows_in_debug_or_errors() {
        let seed = [0x5a; 32];
        let key = AuditSigningKey::from_secret_bytes(&seed);
        let debug = format!("{key:?} {key:#?}");
        assert!(debug.contains(&key.public_key().key_id()), "{debug}");
        for secret_form in [hex::encode(seed), hex::encode_upper(seed), format!("{seed:?}"), "90, 90, 90".to_owned()] {
            assert!(!debug.contains(&secret_form), "{debug} shows the secret");
        }
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("audit.key");
        fs::write(&path, [0x5a; 33]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let error = load_key_file(&path).unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("5a5a") && !shown.contains("90, 90"), "{shown}");
    }

    #[test]
    fn first_start_creates_a_0600_key_and_later_starts_load_it() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("audit.key");
        let created = load_or_generate(&path).unwrap();
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        assert_eq!(metadata.len(), 32);
        assert_eq!(fs::read(&path).unwrap(), created.secret_bytes().to_vec());
        let loaded = load_or_generate(&path).unwrap();
        assert_eq!(loaded.public_key(), created.public_key());
        // No temporary file is left beside it.
        let names: Vec<_> = fs::read_dir(directory.path()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("audit.key")]);
        // Two keys made apart differ (the randomness is real).
        let other_path = directory.path().join("other.key");
        assert_ne!(load_or_generate(&other_path).unwrap().public_key(), created.public_key());
    }

    #[test]
    fn key_files_with_open_permissions_or_wrong_length_are_refused() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("audit.key");
        fs::write(&path, [1u8; 32]).unwrap();
        for mode in [0o640, 0o604, 0o660, 0o644, 0o602, 0o620] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let error = load_or_generate(&path).unwrap_err();
            assert!(matches!(error, KeyFileError::TooOpen { mode: found, .. } if found == mode), "{error}");
            assert!(error.to_string().contains("chmod 600"), "{error}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        load_or_generate(&path).unwrap();
        for length in [0usize, 31, 33, 64, 65] {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            fs::write(&path, vec![1u8; length]).unwrap();
            let error = load_or_generate(&path).unwrap_err();
            assert!(matches!(error, KeyFileError::WrongLength { found, .. } if found == length as u64), "{error}");
            // Refused, never replaced.
            assert_eq!(fs::read(&path).unwrap().len(), length);
        }
        let error = load_or_generate(directory.path()).unwrap_err();
        assert!(matches!(error, KeyFileError::NotAFile { .. } | KeyFileError::TooOpen { .. }), "{error}");
        let missing_directory = directory.path().join("absent").join("audit.key");
        assert!(matches!(load_or_generate(&missing_directory), Err(KeyFileError::Create { .. })));
    }

    #[test]
    fn a_symlinked_key_file_is_judged_by_its_target() {
        let directory = tempfile::tempdir().unwrap();
        let target = directory.path().join("secret");
        fs::write(&target, [3u8; 32]).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
        let link = directory.path().join("audit.key");
        symlink(&target, &link).unwrap();
        assert!(matches!(load_or_generate(&link), Err(KeyFileError::TooOpen { .. })));
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            load_or_generate(&link).unwrap().public_key(),
            AuditSigningKey::from_secret_bytes(&[3; 32]).public_key()
        );
    }
}
