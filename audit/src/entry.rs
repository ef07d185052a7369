//! Audit entries and the hash chain (contract §5 and §9).
//!
//! An entry's `hash` is the lowercase hex SHA-256 of the RFC 8785 canonical
//! JSON of the entry without its `hash` key. Canonical JSON sorts keys, so the
//! hashed bytes always read
//!
//! ```text
//! {"action":…,"actor":…,"at":…,"contact":…,"conversation_id":…,"data":…,"n":…,"prev":"<64 hex>"}
//! ```
//!
//! `contact` and `conversation_id` are always present: an entry without one
//! (a configuration change, a login) carries the key with `null`. Keeping the
//! key gives every entry the same set of keys, so the `"n":…,"prev":"…"}` tail
//! is always where the fast verifier looks for it.
//!
//! `n` counts from 1 and is at most 2^53 − 1 ([`MAX_ENTRY_NUMBER`]): RFC 8785
//! writes every number as an IEEE 754 double, and above that an integer no
//! longer has one exact spelling. Numbers inside `data` follow RFC 8785 as
//! well (they are hashed in their double form).
//!
//! Two verifiers, one order of checks (so they name the same fault):
//! the entry's bytes must match its hash, its `n` must be the next number, its
//! `prev` the previous entry's hash, and (typed path only) every field well
//! formed. [`verify_chain`] recomputes everything from typed entries;
//! [`verify_stored`] takes what storage keeps, each entry's canonical bytes and
//! its 32-byte hash, hashes the bytes and reads only the `n` and `prev` at
//! their end, so it never parses or re-serializes JSON.

use crate::encoding::{self, HASH_HEX_LEN, Hash, HexError, TimestampError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::borrow::Borrow;
use std::fmt;
use thiserror::Error;

/// The `prev` of entry 1: 64 zeros.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The largest `n` an entry may have (2^53 − 1, the largest integer an
/// RFC 8785 number spells exactly).
pub const MAX_ENTRY_NUMBER: u64 = (1 << 53) - 1;

/// One audit entry as the contract shows it (`GET /api/v1/audit`, one per line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub n: u64,
    /// RFC 3339 UTC with milliseconds: `2026-11-24T10:00:00.000Z`.
    pub at: String,
    pub actor: String,
    pub action: String,
    /// Serialized as `null` when absent, never omitted (see the module docs).
    pub contact: Option<String>,
    /// Serialized as `null` when absent, never omitted.
    pub conversation_id: Option<String>,
    pub data: Value,
    /// The previous entry's `hash`; 64 zeros for entry 1.
    pub prev: String,
    pub hash: String,
}

/// What an entry says, before it has a place in the chain (`n`, `prev`) and a hash.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryContent {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub contact: Option<String>,
    pub conversation_id: Option<String>,
    pub data: Value,
}

/// An entry without its `hash`, borrowed: the exact object that is hashed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnhashedEntry<'entry> {
    pub n: u64,
    pub at: &'entry str,
    pub actor: &'entry str,
    pub action: &'entry str,
    pub contact: Option<&'entry str>,
    pub conversation_id: Option<&'entry str>,
    pub data: &'entry Value,
    pub prev: &'entry str,
}

impl Entry {
    /// The entry without its `hash`: what [`canonical_bytes`] serializes.
    pub fn unhashed(&self) -> UnhashedEntry<'_> {
        UnhashedEntry {
            n: self.n,
            at: &self.at,
            actor: &self.actor,
            action: &self.action,
            contact: self.contact.as_deref(),
            conversation_id: self.conversation_id.as_deref(),
            data: &self.data,
            prev: &self.prev,
        }
    }
}

/// A new entry with what storage keeps of it: the canonical bytes (without
/// `hash`) and the raw hash, so nothing is serialized or hashed twice.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltEntry {
    pub entry: Entry,
    pub canonical_bytes: Vec<u8>,
    pub hash: Hash,
}

/// Why an entry could not be built or serialized.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EntryError {
    #[error("n must be between 1 and {MAX_ENTRY_NUMBER}, found {n}")]
    NumberOutOfRange { n: u64 },
    #[error("at: {0}")]
    Timestamp(#[from] TimestampError),
    #[error("prev: {0}")]
    Prev(HexError),
    #[error("data cannot be written as canonical JSON: {detail}")]
    Data { detail: String },
}

/// The RFC 8785 canonical JSON of an entry without its `hash`.
///
/// The envelope's keys are fixed and written in their sorted order by hand;
/// only `data` goes through the general canonicalizer. Strings are escaped by
/// serde_json, whose escapes are RFC 8785's (`\"`, `\\`, `\b \f \n \r \t`,
/// other control characters as `\u00xx` in lower case, everything else
/// literal UTF-8); a property test holds this equal to the canonicalizer's
/// output for the whole object.
pub fn canonical_bytes(entry: &UnhashedEntry<'_>) -> Result<Vec<u8>, EntryError> {
    if entry.n == 0 || entry.n > MAX_ENTRY_NUMBER {
        return Err(EntryError::NumberOutOfRange { n: entry.n });
    }
    let mut out = Vec::with_capacity(256 + entry.actor.len() + entry.action.len());
    out.extend_from_slice(b"{\"action\":");
    write_json_string(&mut out, entry.action);
    out.extend_from_slice(b",\"actor\":");
    write_json_string(&mut out, entry.actor);
    out.extend_from_slice(b",\"at\":");
    write_json_string(&mut out, entry.at);
    out.extend_from_slice(b",\"contact\":");
    write_optional_json_string(&mut out, entry.contact);
    out.extend_from_slice(b",\"conversation_id\":");
    write_optional_json_string(&mut out, entry.conversation_id);
    out.extend_from_slice(b",\"data\":");
    write_canonical_data(&mut out, entry.data)?;
    out.extend_from_slice(b",\"n\":");
    out.extend_from_slice(entry.n.to_string().as_bytes());
    out.extend_from_slice(b",\"prev\":");
    write_json_string(&mut out, entry.prev);
    out.push(b'}');
    Ok(out)
}

/// Writes `data` canonically. Most audit data is objects with ASCII keys,
/// strings, small integers, booleans and nulls; for those the canonical form
/// is what serde_json writes without whitespace, with keys in byte order
/// (which for ASCII is RFC 8785's UTF-16 order), and writing it directly is
/// several times faster than the general canonicalizer. Anything else (a
/// float, an integer beyond 2^53, a key that is not ASCII, keys not in order)
/// goes to the general canonicalizer; a property test holds the two equal.
fn write_canonical_data(out: &mut Vec<u8>, data: &Value) -> Result<(), EntryError> {
    let start = out.len();
    if write_simple_canonical(out, data).is_ok() {
        return Ok(());
    }
    out.truncate(start);
    serde_json_canonicalizer::to_writer(data, out).map_err(|error| EntryError::Data { detail: error.to_string() })
}

/// `data` is outside the subset [`write_simple_canonical`] writes.
struct NeedsGeneralCanonicalizer;

fn write_simple_canonical(out: &mut Vec<u8>, value: &Value) -> Result<(), NeedsGeneralCanonicalizer> {
    /// Integers up to 2^53 are doubles that RFC 8785 spells as plain digits.
    const EXACT_INTEGER_LIMIT: u64 = 1 << 53;
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => {
            if let Some(unsigned) = number.as_u64().filter(|unsigned| *unsigned <= EXACT_INTEGER_LIMIT) {
                out.extend_from_slice(unsigned.to_string().as_bytes());
            } else if let Some(signed) = number.as_i64().filter(|signed| signed.unsigned_abs() <= EXACT_INTEGER_LIMIT) {
                out.extend_from_slice(signed.to_string().as_bytes());
            } else {
                return Err(NeedsGeneralCanonicalizer);
            }
        }
        Value::String(text) => write_json_string(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(b',');
                }
                write_simple_canonical(out, item)?;
            }
            out.push(b']');
        }
        Value::Object(members) => {
            out.push(b'{');
            let mut previous_key: Option<&str> = None;
            for (key, member) in members {
                // Always true while serde_json's maps are BTreeMaps; should a
                // crate turn on its `preserve_order` feature, maps iterate in
                // insertion order and this sends them to the general path.
                let in_order = previous_key.is_none_or(|previous| previous < key.as_str());
                if !key.is_ascii() || !in_order {
                    return Err(NeedsGeneralCanonicalizer);
                }
                if previous_key.is_some() {
                    out.push(b',');
                }
                write_json_string(out, key);
                out.push(b':');
                write_simple_canonical(out, member)?;
                previous_key = Some(key);
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_json_string(out: &mut Vec<u8>, text: &str) {
    // Serializing a &str into a Vec cannot fail: serde_json's only errors here
    // would come from the writer, and a Vec never refuses bytes.
    if serde_json::to_writer(&mut *out, text).is_err() {
        debug_assert!(false, "writing a string into a Vec failed");
    }
}

fn write_optional_json_string(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => write_json_string(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// Builds entry `n` after the entry whose hash is `previous_hash`
/// (`[0; 32]` before entry 1): fills `prev`, serializes canonically, hashes.
pub fn build_entry(previous_hash: &Hash, n: u64, content: EntryContent) -> Result<BuiltEntry, EntryError> {
    encoding::check_timestamp(&content.at)?;
    let prev = encoding::encode_hex(previous_hash);
    let EntryContent { at, actor, action, contact, conversation_id, data } = content;
    let mut entry = Entry { n, at, actor, action, contact, conversation_id, data, prev, hash: String::new() };
    let canonical = canonical_bytes(&entry.unhashed())?;
    let hash = sha256(&canonical);
    entry.hash = encoding::encode_hex(&hash);
    Ok(BuiltEntry { entry, canonical_bytes: canonical, hash })
}

/// The end of a chain: how many entries it has and the last one's hash.
/// Appending through it fills `n` and `prev` so a writer cannot get them wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub entries: u64,
    /// The last entry's hash; `[0; 32]` for an empty chain.
    pub head: Hash,
}

impl ChainHead {
    /// The head of an empty chain.
    pub fn empty() -> Self {
        ChainHead { entries: 0, head: [0; 32] }
    }

    /// Builds the next entry and moves the head to it.
    pub fn append(&mut self, content: EntryContent) -> Result<BuiltEntry, EntryError> {
        let next_n = self.entries + 1;
        let built = build_entry(&self.head, next_n, content)?;
        self.entries = next_n;
        self.head = built.hash;
        Ok(built)
    }
}

/// A chain that verified: `{entries, head}` of `GET /api/v1/audit/verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub entries: u64,
    /// The last entry's hash (lowercase hex); 64 zeros for an empty chain.
    pub head: String,
}

/// The first entry that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("audit entry {n}: {fault}")]
pub struct ChainError {
    /// The position of the bad entry: the `n` it should have (entries are
    /// checked in order, so every entry before it verified).
    pub n: u64,
    pub fault: ChainFault,
}

/// What is wrong with an entry, in the order the checks are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainFault {
    /// The entry's bytes do not hash to its recorded hash: it was changed.
    WrongHash { recorded: String, computed: String },
    /// The entry is well hashed but is not the next one (deleted, reordered or duplicated entries).
    NotConsecutive { found: u64 },
    /// `prev` is not the previous entry's hash.
    WrongPrev { recorded: String, expected: String },
    /// A field does not have its required form, or the stored bytes are not an entry.
    Malformed { problem: String },
}

impl fmt::Display for ChainFault {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainFault::WrongHash { recorded, computed } => {
                write!(formatter, "content does not match its hash (recorded {recorded}, computed {computed})")
            }
            ChainFault::NotConsecutive { found } => write!(formatter, "found entry n={found} in its place"),
            ChainFault::WrongPrev { recorded, expected } => {
                write!(formatter, "prev {recorded} is not the previous entry's hash {expected}")
            }
            ChainFault::Malformed { problem } => write!(formatter, "malformed: {problem}"),
        }
    }
}

/// Verifies a chain entry by entry, from the start or from a known head.
/// Storage can resume it at the last verified entry instead of rereading the log.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    verified_entries: u64,
    head: Hash,
    head_hex: [u8; HASH_HEX_LEN],
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

/// `,"prev":"` + 64 hex + `"}`: how every canonical entry ends.
const PREV_TAIL_OPENING: &[u8] = b",\"prev\":\"";
const PREV_TAIL_LEN: usize = PREV_TAIL_OPENING.len() + HASH_HEX_LEN + 2;
const N_KEY: &[u8] = b",\"n\":";
const CANONICAL_OPENING: &[u8] = b"{\"action\":\"";

impl ChainVerifier {
    /// A verifier expecting entry 1.
    pub fn new() -> Self {
        Self::resume(0, [0; 32])
    }

    /// A verifier expecting entry `verified_entries + 1`, whose `prev` must be `head`.
    pub fn resume(verified_entries: u64, head: Hash) -> Self {
        let mut head_hex = [0u8; HASH_HEX_LEN];
        encoding::encode_hash_into(&head, &mut head_hex);
        ChainVerifier { verified_entries, head, head_hex }
    }

    pub fn verified_entries(&self) -> u64 {
        self.verified_entries
    }

    pub fn head(&self) -> Hash {
        self.head
    }

    pub fn summary(&self) -> ChainSummary {
        ChainSummary { entries: self.verified_entries, head: encoding::encode_hex(&self.head) }
    }

    fn fail(&self, fault: ChainFault) -> ChainError {
        ChainError { n: self.verified_entries + 1, fault }
    }

    fn malformed(&self, problem: impl Into<String>) -> ChainError {
        self.fail(ChainFault::Malformed { problem: problem.into() })
    }

    fn advance(&mut self, hash: Hash) {
        self.verified_entries += 1;
        self.head = hash;
        encoding::encode_hash_into(&hash, &mut self.head_hex);
    }

    /// Checks the next typed entry; returns its hash.
    pub fn check_entry(&mut self, entry: &Entry) -> Result<Hash, ChainError> {
        let computed_hash = recompute_hash(entry).map_err(|fault| self.fail(fault))?;
        if entry.n != self.verified_entries + 1 {
            return Err(self.fail(ChainFault::NotConsecutive { found: entry.n }));
        }
        if entry.prev.as_bytes() != self.head_hex.as_slice() {
            return Err(self.fail(ChainFault::WrongPrev {
                recorded: entry.prev.clone(),
                expected: encoding::encode_hex(&self.head),
            }));
        }
        check_field_forms(entry).map_err(|fault| self.fail(fault))?;
        self.advance(computed_hash);
        Ok(computed_hash)
    }

    /// Checks the next stored entry: its canonical bytes (without `hash`) and
    /// its recorded hash. Reads `n` and `prev` from the bytes' fixed tail
    /// (`,"n":<digits>,"prev":"<hex>"}`) without parsing JSON; it does not check
    /// the other fields' forms, which [`ChainVerifier::check_entry`] does.
    /// Sound because canonical JSON has one spelling per value and `prev` and
    /// `n` sort last, and because the bytes must hash to the recorded hash,
    /// which the next entry's `prev` (or a signed Merkle root) pins.
    pub fn check_stored(&mut self, canonical: &[u8], recorded_hash: &Hash) -> Result<(), ChainError> {
        let computed_hash = sha256(canonical);
        if computed_hash != *recorded_hash {
            return Err(self.fail(ChainFault::WrongHash {
                recorded: encoding::encode_hex(recorded_hash),
                computed: encoding::encode_hex(&computed_hash),
            }));
        }
        let Some(before_prev_length) = canonical.len().checked_sub(PREV_TAIL_LEN) else {
            return Err(self.malformed("stored entry is too short to end with \"prev\""));
        };
        let (before_prev, prev_tail) = canonical.split_at(before_prev_length);
        let prev_hex = &prev_tail[PREV_TAIL_OPENING.len()..PREV_TAIL_OPENING.len() + HASH_HEX_LEN];
        if !prev_tail.starts_with(PREV_TAIL_OPENING) || !prev_tail.ends_with(b"\"}") {
            return Err(self.malformed("stored entry does not end with ,\"prev\":\"<64 hex>\"}"));
        }
        let found_n = parse_trailing_n(before_prev)
            .ok_or_else(|| self.malformed("stored entry has no ,\"n\":<number> before \"prev\""))?;
        if found_n != self.verified_entries + 1 {
            return Err(self.fail(ChainFault::NotConsecutive { found: found_n }));
        }
        if prev_hex != self.head_hex.as_slice() {
            return Err(self.fail(ChainFault::WrongPrev {
                recorded: String::from_utf8_lossy(prev_hex).into_owned(),
                expected: encoding::encode_hex(&self.head),
            }));
        }
        if !canonical.starts_with(CANONICAL_OPENING) {
            return Err(self.malformed("stored entry does not start with {\"action\":\""));
        }
        self.advance(computed_hash);
        Ok(())
    }
}

/// Recomputes an entry's hash and checks it is the recorded one (the first
/// check of both verifiers, and all an entry standing alone can be checked for
/// besides [`check_field_forms`]).
pub fn recompute_hash(entry: &Entry) -> Result<Hash, ChainFault> {
    let malformed = |problem: String| ChainFault::Malformed { problem };
    let recorded_hash = encoding::decode_hash(&entry.hash).map_err(|error| malformed(format!("hash: {error}")))?;
    let canonical = canonical_bytes(&entry.unhashed()).map_err(|error| malformed(error.to_string()))?;
    let computed_hash = sha256(&canonical);
    if computed_hash != recorded_hash {
        return Err(ChainFault::WrongHash {
            recorded: entry.hash.clone(),
            computed: encoding::encode_hex(&computed_hash),
        });
    }
    Ok(computed_hash)
}

/// Checks the forms the hash does not imply: `at` is RFC 3339 UTC with
/// milliseconds and `prev` is 64 lowercase hex.
pub fn check_field_forms(entry: &Entry) -> Result<(), ChainFault> {
    encoding::check_timestamp(&entry.at).map_err(|error| ChainFault::Malformed { problem: format!("at: {error}") })?;
    encoding::decode_hash(&entry.prev).map_err(|error| ChainFault::Malformed { problem: format!("prev: {error}") })?;
    Ok(())
}

/// Reads `<digits>` from bytes ending in `,"n":<digits>`, as canonical JSON
/// writes an integer: no sign, no leading zero, at most 16 digits.
fn parse_trailing_n(bytes: &[u8]) -> Option<u64> {
    let digit_count = bytes.iter().rev().take_while(|byte| byte.is_ascii_digit()).count();
    if digit_count == 0 || digit_count > 16 {
        return None;
    }
    let (before_digits, digits) = bytes.split_at(bytes.len() - digit_count);
    if !before_digits.ends_with(N_KEY) || (digits[0] == b'0' && digit_count > 1) {
        return None;
    }
    let value = digits.iter().fold(0u64, |value, digit| value * 10 + u64::from(digit - b'0'));
    (value <= MAX_ENTRY_NUMBER).then_some(value)
}

/// Verifies a whole chain of typed entries from entry 1.
pub fn verify_chain<E: Borrow<Entry>>(entries: impl IntoIterator<Item = E>) -> Result<ChainSummary, ChainError> {
    let mut verifier = ChainVerifier::new();
    for entry in entries {
        verifier.check_entry(entry.borrow())?;
    }
    Ok(verifier.summary())
}

/// Verifies a whole chain as storage keeps it, (canonical bytes, hash) per
/// entry, from entry 1. The fast path: no JSON is parsed.
pub fn verify_stored<Bytes: AsRef<[u8]>, StoredHash: Borrow<Hash>>(
    stored: impl IntoIterator<Item = (Bytes, StoredHash)>,
) -> Result<ChainSummary, ChainError> {
    let mut verifier = ChainVerifier::new();
    for (canonical, hash) in stored {
        verifier.check_stored(canonical.as_ref(), hash.borrow())?;
    }
    Ok(verifier.summary())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn content(text: &str) -> EntryContent {
        EntryContent {
            at: "2026-11-24T10:00:00.000Z".to_owned(),
            actor: "customer:447700900123".to_owned(),
            action: "message.inbound".to_owned(),
            contact: Some("447700900123".to_owned()),
            conversation_id: Some("c_1".to_owned()),
            data: json!({"text": text, "wamid": "wamid.1"}),
        }
    }

    fn chain(length: usize) -> Vec<BuiltEntry> {
        let mut head = ChainHead::empty();
        (0..length).map(|index| head.append(content(&format!("message {index}"))).unwrap()).collect()
    }

    #[test]
    fn canonical_bytes_sort_keys_keep_nulls_and_put_prev_last() {
        let mut chain_head = ChainHead::empty();
        let mut entry_content = content("hello");
        entry_content.contact = None;
        entry_content.conversation_id = None;
        entry_content.data = json!({"z": 1, "a": [true, null, 1.5e300, "é\u{1}"]});
        let built = chain_head.append(entry_content).unwrap();
        let expected = concat!(
            r#"{"action":"message.inbound","actor":"customer:447700900123","at":"2026-11-24T10:00:00.000Z","#,
            r#""contact":null,"conversation_id":null,"data":{"a":[true,null,1.5e+300,"é\u0001"],"z":1},"#,
            r#""n":1,"prev":"0000000000000000000000000000000000000000000000000000000000000000"}"#
        );
        assert_eq!(String::from_utf8(built.canonical_bytes.clone()).unwrap(), expected);
        assert_eq!(built.hash, sha256(expected.as_bytes()));
        assert_eq!(built.entry.hash, hex::encode(sha256(expected.as_bytes())));
    }

    #[test]
    fn the_first_entry_links_to_64_zeros_and_the_next_to_it() {
        let entries = chain(2);
        assert_eq!(entries[0].entry.prev, GENESIS_PREV);
        assert_eq!(entries[0].entry.n, 1);
        assert_eq!(entries[1].entry.prev, entries[0].entry.hash);
        assert_eq!(entries[1].entry.n, 2);
    }

    #[test]
    fn an_empty_chain_verifies_with_a_zero_head() {
        let summary = verify_chain(Vec::<Entry>::new()).unwrap();
        assert_eq!(summary, ChainSummary { entries: 0, head: GENESIS_PREV.to_owned() });
        assert_eq!(verify_stored(Vec::<(Vec<u8>, Hash)>::new()).unwrap(), summary);
    }

    #[test]
    fn building_refuses_bad_numbers_and_timestamps() {
        assert_eq!(build_entry(&[0; 32], 0, content("x")), Err(EntryError::NumberOutOfRange { n: 0 }));
        assert_eq!(
            build_entry(&[0; 32], MAX_ENTRY_NUMBER + 1, content("x")),
            Err(EntryError::NumberOutOfRange { n: MAX_ENTRY_NUMBER + 1 })
        );
        build_entry(&[0; 32], MAX_ENTRY_NUMBER, content("x")).unwrap();
        let mut late = content("x");
        late.at = "2026-11-24T10:00:00Z".to_owned();
        assert!(matches!(build_entry(&[0; 32], 1, late), Err(EntryError::Timestamp(_))));
    }

    #[test]
    fn each_fault_is_named_at_the_first_bad_entry() {
        let built = chain(5);
        let entries: Vec<Entry> = built.iter().map(|entry| entry.entry.clone()).collect();
        let summary = verify_chain(&entries).unwrap();
        assert_eq!(summary.entries, 5);
        assert_eq!(summary.head, entries[4].hash);

        let mut changed_text = entries.clone();
        changed_text[2].data = json!({"text": "changed", "wamid": "wamid.1"});
        let error = verify_chain(&changed_text).unwrap_err();
        assert_eq!(error.n, 3);
        assert!(matches!(error.fault, ChainFault::WrongHash { .. }), "{error}");

        let mut deleted = entries.clone();
        deleted.remove(1);
        assert_eq!(
            verify_chain(&deleted).unwrap_err(),
            ChainError { n: 2, fault: ChainFault::NotConsecutive { found: 3 } }
        );

        let mut relinked = entries.clone();
        let rebuilt = build_entry(&[7; 32], 4, content("message 3")).unwrap();
        relinked[3] = rebuilt.entry;
        let error = verify_chain(&relinked).unwrap_err();
        assert_eq!(error.n, 4);
        assert!(matches!(error.fault, ChainFault::WrongPrev { .. }), "{error}");

        let mut uppercase_hash = entries.clone();
        uppercase_hash[0].hash = uppercase_hash[0].hash.to_uppercase();
        let error = verify_chain(&uppercase_hash).unwrap_err();
        assert_eq!(error.n, 1);
        assert!(matches!(error.fault, ChainFault::Malformed { .. }), "{error}");

        let mut too_large = entries.clone();
        too_large[0].n = u64::MAX;
        assert!(matches!(verify_chain(&too_large).unwrap_err().fault, ChainFault::Malformed { .. }));

        // A timestamp in another spelling, rehashed so only its form is wrong.
        let mut other_time_form = entries[..1].to_vec();
        other_time_form[0].at = "2026-11-24T10:00:00Z".to_owned();
        other_time_form[0].hash = hex::encode(sha256(&canonical_bytes(&other_time_form[0].unhashed()).unwrap()));
        let error = verify_chain(&other_time_form).unwrap_err();
        assert_eq!(error.n, 1);
        assert!(matches!(error.fault, ChainFault::Malformed { .. }), "{error}");
    }

    #[test]
    fn stored_bytes_that_are_not_an_entry_are_malformed_not_a_panic() {
        for bytes in [&b""[..], b"{}", b"{\"n\":1,\"prev\":\"00\"}", &[0xff; 100]] {
            let hash = sha256(bytes);
            let error = verify_stored([(bytes, hash)]).unwrap_err();
            assert_eq!(error.n, 1);
            assert!(matches!(error.fault, ChainFault::Malformed { .. }), "{error}");
        }
        // The right tail with a leading zero in n, or without the "n" key.
        let tail = format!(",\"prev\":\"{GENESIS_PREV}\"}}");
        for head in ["{\"action\":\"a\",\"n\":01", "{\"action\":\"a\",\"m\":1", "{\"action\":\"a\",\"n\":"] {
            let bytes = format!("{head}{tail}").into_bytes();
            let hash = sha256(&bytes);
            assert!(matches!(verify_stored([(&bytes, hash)]).unwrap_err().fault, ChainFault::Malformed { .. }));
        }
    }

    /// Strings with every kind of character RFC 8785 treats specially.
    fn json_text() -> impl Strategy<Value = String> + Clone {
        prop_oneof![
            "[a-z ]{0,12}",
            "\\PC{0,12}",
            proptest::collection::vec(any::<char>(), 0..12).prop_map(|chars| chars.into_iter().collect()),
            Just("\u{0}\u{1f}\u{7f}\"\\/\u{2028}\u{feff}😀\u{e000}".to_owned()),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            // Around ±2^53, where integers stop being spelled as plain digits.
            (-(1i64 << 53) - 3..=-(1i64 << 53) + 3).prop_map(Value::from),
            ((1u64 << 53) - 3..=(1u64 << 53) + 3).prop_map(Value::from),
            (-1000i64..1000).prop_map(Value::from),
            any::<f64>().prop_filter("finite", |number| number.is_finite()).prop_map(Value::from),
            (-1000i32..1000).prop_map(|whole| Value::from(f64::from(whole))),
            json_text().prop_map(Value::String),
        ];
        // Keys mostly ASCII (quotes, backslashes and control characters
        // included), so objects take the direct writer as well as the general one.
        let key = prop_oneof![3 => "[ -~]{0,8}", 2 => "[\\x00-\\x7f]{0,6}", 1 => json_text()];
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone(), inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn typical_data_takes_the_direct_writer_and_the_rest_the_general_one() {
        let mut out = Vec::new();
        let typical = json!({"text": "Hola \"ya\"\n", "wamid": "wamid.1", "route": {"team": "sales", "queued_ms": 42},
                             "fields": [1, -2, null, true, 9007199254740992u64]});
        assert!(write_simple_canonical(&mut out, &typical).is_ok());
        assert_eq!(out, serde_json_canonicalizer::to_vec(&typical).unwrap());
        for general in [json!({"amount": 1.5}), json!({"é": 1}), json!([9007199254740993u64]), json!(1.0)] {
            assert!(write_simple_canonical(&mut Vec::new(), &general).is_err(), "{general}");
        }
    }

    #[derive(Serialize)]
    struct WholeUnhashedEntry<'entry> {
        n: u64,
        at: &'entry str,
        actor: &'entry str,
        action: &'entry str,
        contact: Option<&'entry str>,
        conversation_id: Option<&'entry str>,
        data: &'entry Value,
        prev: &'entry str,
    }

    proptest! {
        /// The hand-written envelope is exactly what the RFC 8785 canonicalizer
        /// makes of the whole object.
        #[test]
        fn envelope_matches_the_canonicalizer(
            n in 1..=MAX_ENTRY_NUMBER,
            actor in json_text(),
            action in json_text(),
            contact in proptest::option::of(json_text()),
            conversation_id in proptest::option::of(json_text()),
            data in json_value(),
        ) {
            let prev = GENESIS_PREV;
            let at = "2026-11-24T10:00:00.000Z";
            let unhashed = UnhashedEntry {
                n, at, actor: &actor, action: &action, contact: contact.as_deref(),
                conversation_id: conversation_id.as_deref(), data: &data, prev,
            };
            let whole = WholeUnhashedEntry {
                n, at, actor: &actor, action: &action, contact: contact.as_deref(),
                conversation_id: conversation_id.as_deref(), data: &data, prev,
            };
            prop_assert_eq!(canonical_bytes(&unhashed).unwrap(), serde_json_canonicalizer::to_vec(&whole).unwrap());
        }

        /// The typed and the stored verifier agree on good chains and name the
        /// same first bad entry, for the same reason, on changed ones.
        #[test]
        fn typed_and_stored_verifiers_agree(
            length in 1usize..24,
            mutation in 0usize..6,
            position_seed in any::<usize>(),
            other_seed in any::<usize>(),
        ) {
            let built = chain(length);
            let mut entries: Vec<Entry> = built.iter().map(|entry| entry.entry.clone()).collect();
            let position = position_seed % length;
            let other = other_seed % length;
            match mutation {
                0 => {}
                1 => entries[position].data = json!({"text": "rewritten"}),
                2 => { entries.remove(position); }
                3 => entries.swap(position, other),
                4 => entries[position].actor.push('!'),
                _ => {
                    // Rewritten and rehashed without fixing the next entry's link.
                    entries[position].data = json!({"text": "rewritten"});
                    entries[position].hash =
                        hex::encode(sha256(&canonical_bytes(&entries[position].unhashed()).unwrap()));
                }
            }
            let stored: Vec<(Vec<u8>, Hash)> = entries
                .iter()
                .map(|entry| {
                    let bytes = canonical_bytes(&entry.unhashed()).unwrap();
                    (bytes, encoding::decode_hash(&entry.hash).unwrap())
                })
                .collect();
            prop_assert_eq!(verify_chain(&entries), verify_stored(stored));
        }
    }
}
