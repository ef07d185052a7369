//! The export file: what `audit export` writes passes `audit check`, and a
//! file with any one byte changed, removed or added does not.

mod support;

use proptest::prelude::*;
use std::sync::OnceLock;
use support::{CONTACTS, attacker_key, checkpoint_at, generate, signing_key};
use switchboard_audit::export::{CheckError, EntryFault, ExportError, KeyTrust};
use switchboard_audit::{Entry, check, write_export};

const LOG_LENGTH: u64 = 30;
const CHECKPOINT_SIZE: u64 = 26;

fn entries_of(entries: &[Entry], contact: &str, up_to: u64) -> Vec<Entry> {
    entries.iter().filter(|entry| entry.contact.as_deref() == Some(contact) && entry.n <= up_to).cloned().collect()
}

/// The export of the first contact (6 entries; built once, shared by the tests).
fn exported_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let log = generate(LOG_LENGTH);
        let key = signing_key();
        let checkpoint = checkpoint_at(&log, &key, CHECKPOINT_SIZE);
        let mut entries = entries_of(&log.entries, CONTACTS[0], CHECKPOINT_SIZE);
        entries.truncate(6);
        write_export(CONTACTS[0], &entries, &log.store, &checkpoint, &key.public_key()).unwrap()
    })
}

#[test]
fn an_export_checks_with_the_key_and_says_self_signed_without_it() {
    let file = exported_file();
    let public_key = signing_key().public_key();
    let summary = check(file, Some(&public_key)).unwrap();
    assert_eq!(summary.contact, CONTACTS[0]);
    assert_eq!(summary.entries, 6);
    assert_eq!(summary.tree_size, CHECKPOINT_SIZE);
    assert_eq!(summary.trust, KeyTrust::GivenKey);
    assert_eq!(summary.key_id, public_key.key_id());
    assert!(summary.entry_numbers.windows(2).all(|pair| pair[0] < pair[1]));
    assert!(!summary.to_string().contains("self-signed"));

    let self_signed = check(file, None).unwrap();
    assert_eq!(self_signed.trust, KeyTrust::SelfSigned);
    assert!(self_signed.to_string().contains("self-signed"), "{self_signed}");

    let other_key = attacker_key().public_key();
    assert!(matches!(check(file, Some(&other_key)), Err(CheckError::KeyMismatch { .. })));
}

#[test]
fn the_file_is_json_lines_each_canonical_and_newline_terminated() {
    let file = exported_file();
    let text = std::str::from_utf8(file).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7);
    let header: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(header["format"], "switchboard-audit-export");
    assert_eq!(header["version"], 1);
    assert_eq!(header["entries"], 6);
    assert_eq!(header["checkpoint"]["tree_size"], CHECKPOINT_SIZE);
    for line in &lines[1..] {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["proof"]["n"], record["entry"]["n"]);
        assert!(record["proof"]["path"].as_array().unwrap().len() >= 4);
        assert!(!line.contains(' ') || line.contains("Hola"), "no whitespace outside strings");
    }
}

fn fails_with_the_key(file: &[u8]) -> bool {
    check(file, Some(&signing_key().public_key())).is_err()
}

fn fails_with_and_without_the_key(file: &[u8]) -> bool {
    fails_with_the_key(file) && check(file, None).is_err()
}

/// Every byte position, several replacements each: a bit flip, a case flip,
/// a space, a newline, a byte that is never UTF-8. (With the key only, to
/// keep the run short; the property below covers the self-signed check.)
#[test]
fn any_changed_byte_fails_the_check() {
    let file = exported_file();
    let mut tried = 0;
    for position in 0..file.len() {
        let original = file[position];
        for replacement in [original ^ 0x01, original ^ 0x20, b' ', b'\n', 0xff] {
            if replacement == original {
                continue;
            }
            let mut changed = file.to_vec();
            changed[position] = replacement;
            assert!(
                fails_with_the_key(&changed),
                "byte {position} ({:?} → {:?}) went unnoticed",
                original as char,
                replacement as char
            );
            tried += 1;
        }
    }
    assert!(tried > 4 * file.len());
}

#[test]
fn any_removed_or_added_byte_fails_the_check() {
    let file = exported_file();
    for position in 0..file.len() {
        let mut removed = file.to_vec();
        removed.remove(position);
        assert!(fails_with_the_key(&removed), "removing byte {position} went unnoticed");
        let mut added = file.to_vec();
        added.insert(position, b' ');
        assert!(fails_with_the_key(&added), "a space before byte {position} went unnoticed");
    }
    let mut appended = file.to_vec();
    appended.push(b'\n');
    assert!(fails_with_and_without_the_key(&appended));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn any_byte_set_to_any_other_value_fails(position_seed in any::<usize>(), value in any::<u8>()) {
        let file = exported_file();
        let position = position_seed % file.len();
        prop_assume!(file[position] != value);
        let mut changed = file.to_vec();
        changed[position] = value;
        prop_assert!(fails_with_and_without_the_key(&changed));
    }
}

#[test]
fn errors_name_the_first_bad_entry_or_the_checkpoint() {
    let file = std::str::from_utf8(exported_file()).unwrap();
    let public_key = signing_key().public_key();
    let lines: Vec<&str> = file.lines().collect();
    // A word changed inside the first message text (still canonical JSON).
    let (message_index, message_line) =
        lines.iter().enumerate().find(|(_, line)| line.contains("modelo")).expect("a message entry");
    let message: serde_json::Value = serde_json::from_str(message_line).unwrap();
    let message_n = message["entry"]["n"].as_u64().unwrap();
    let changed = file.replacen(&format!("modelo {message_n} "), &format!("modelo {message_n}0"), 1);
    assert_ne!(changed, file);
    match check(changed.as_bytes(), Some(&public_key)) {
        Err(CheckError::Entry { n, line, fault: EntryFault::Entry(_) }) => {
            assert_eq!((n, line), (message_n, message_index + 1));
        }
        other => panic!("expected entry {message_n} to be named, got {other:?}"),
    }

    // The signed tree size changed: the checkpoint is named.
    let size_text = format!("\"tree_size\":{CHECKPOINT_SIZE}}},\"contact\"");
    let changed = file.replacen(&size_text, &format!("\"tree_size\":{}}},\"contact\"", CHECKPOINT_SIZE + 1), 1);
    assert_ne!(changed, file);
    assert!(matches!(check(changed.as_bytes(), Some(&public_key)), Err(CheckError::Checkpoint { .. })));

    // Whitespace that JSON would ignore is refused, naming the entry.
    let spaced = file.replacen("{\"entry\":{", "{\"entry\": {", 1);
    assert!(matches!(
        check(spaced.as_bytes(), Some(&public_key)),
        Err(CheckError::Entry { line: 2, fault: EntryFault::NotCanonical { .. }, .. })
    ));

    // An entry line removed: the header's count no longer matches.
    let mut without_one: Vec<&str> = lines.clone();
    without_one.remove(2);
    let shorter = without_one.join("\n") + "\n";
    assert!(matches!(check(shorter.as_bytes(), Some(&public_key)), Err(CheckError::Format { line: 1, .. })));

    // Two entry lines swapped: the order is checked.
    let mut swapped: Vec<&str> = lines.clone();
    swapped.swap(2, 3);
    let swapped = swapped.join("\n") + "\n";
    assert!(matches!(
        check(swapped.as_bytes(), Some(&public_key)),
        Err(CheckError::Entry { line: 4, fault: EntryFault::NotAscending { .. }, .. })
    ));

    for garbage in [&b""[..], b"\n", b"{}\n", b"not json\n", &[0xff, 0xfe, b'\n']] {
        assert!(matches!(check(garbage, None), Err(CheckError::Format { line: 1, .. })), "{garbage:?}");
    }
}

#[test]
fn the_writer_refuses_what_it_could_not_prove() {
    let log = generate(LOG_LENGTH);
    let key = signing_key();
    let public_key = key.public_key();
    let checkpoint = checkpoint_at(&log, &key, CHECKPOINT_SIZE);
    let contact = CONTACTS[1];
    let entries = entries_of(&log.entries, contact, LOG_LENGTH);

    assert!(matches!(
        write_export(contact, &[], &log.store, &checkpoint, &public_key),
        Err(ExportError::NoEntries { .. })
    ));
    assert!(matches!(
        write_export(CONTACTS[2], &entries, &log.store, &checkpoint, &public_key),
        Err(ExportError::OtherContact { .. })
    ));
    let after_checkpoint = write_export(contact, &entries, &log.store, &checkpoint, &public_key);
    assert!(matches!(after_checkpoint, Err(ExportError::AfterCheckpoint { tree_size: CHECKPOINT_SIZE, .. })));
    let mut proven = entries_of(&log.entries, contact, CHECKPOINT_SIZE);
    proven.reverse();
    assert!(matches!(
        write_export(contact, &proven, &log.store, &checkpoint, &public_key),
        Err(ExportError::NotAscending { .. })
    ));
    proven.reverse();
    let mut altered = proven.clone();
    altered[1].actor = "someone else".to_owned();
    assert!(matches!(
        write_export(contact, &altered, &log.store, &checkpoint, &public_key),
        Err(ExportError::BadEntry { .. })
    ));
    let other_checkpoint = key.sign_checkpoint(CHECKPOINT_SIZE, &[1; 32], "2026-11-24T12:00:00.000Z").unwrap();
    assert!(matches!(
        write_export(contact, &proven, &log.store, &other_checkpoint, &public_key),
        Err(ExportError::CheckpointNotOfThisLog { .. })
    ));
    assert!(matches!(
        write_export(contact, &proven, &log.store, &checkpoint, &attacker_key().public_key()),
        Err(ExportError::Checkpoint(_))
    ));
    let file = write_export(contact, &proven, &log.store, &checkpoint, &public_key).unwrap();
    assert_eq!(check(&file, Some(&public_key)).unwrap().entries, proven.len() as u64);
}
