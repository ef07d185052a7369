//! The worked example of docs/audit.md: a five-entry log, a checkpoint, and
//! the export of one contact, made with a published test key. The file is
//! kept in `tests/fixtures/example-export.jsonl`; this test rebuilds it and
//! fails if the bytes differ, so the example in the docs stays true. Run with
//! `UPDATE_AUDIT_EXAMPLE=1` to rewrite the fixture after a deliberate change.

use serde_json::json;
use switchboard_audit::merkle::{self, leaf_hash};
use switchboard_audit::{
    AuditPublicKey, AuditSigningKey, ChainHead, Entry, EntryContent, MemoryNodeStore, check, write_export,
};

/// The example's key: 32 bytes of 0x2a. Published, so never for real use.
const EXAMPLE_SEED: [u8; 32] = [0x2a; 32];
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/example-export.jsonl");

fn content(
    at: &str,
    actor: &str,
    action: &str,
    contact: Option<&str>,
    conversation_id: Option<&str>,
    data: serde_json::Value,
) -> EntryContent {
    EntryContent {
        at: at.to_owned(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        contact: contact.map(str::to_owned),
        conversation_id: conversation_id.map(str::to_owned),
        data,
    }
}

fn example_export() -> Vec<u8> {
    let contents = [
        content(
            "2026-11-24T10:00:00.000Z",
            "customer:447700900123",
            "message.inbound",
            Some("447700900123"),
            Some("c_1"),
            json!({"text": "Hola, ¿tienen el modelo 12 en azul?", "wamid": "wamid.A1"}),
        ),
        content(
            "2026-11-24T10:00:00.150Z",
            "router",
            "conversation.assigned",
            Some("447700900123"),
            Some("c_1"),
            json!({"agent": "a_7", "route": {"rule": "team_queue", "team": "sales"}}),
        ),
        content(
            "2026-11-24T10:00:02.000Z",
            "admin:ana",
            "config.changed",
            None,
            None,
            json!({"path": "teams.sales.sla_minutes", "from": 5, "to": 4}),
        ),
        content(
            "2026-11-24T10:00:09.500Z",
            "agent:a_7",
            "message.outbound",
            Some("447700900123"),
            Some("c_1"),
            json!({"text": "¡Sí! Se lo reservo hasta el viernes.", "wamid": "wamid.B2"}),
        ),
        content(
            "2026-11-24T10:00:11.000Z",
            "meta",
            "message.status",
            Some("447700900456"),
            Some("c_2"),
            json!({"status": "read", "wamid": "wamid.C3"}),
        ),
    ];
    let mut head = ChainHead::empty();
    let mut store = MemoryNodeStore::new();
    let mut entries: Vec<Entry> = Vec::new();
    for entry_content in contents {
        let built = head.append(entry_content).unwrap();
        store.append(leaf_hash(&built.hash));
        entries.push(built.entry);
    }
    let key = AuditSigningKey::from_secret_bytes(&EXAMPLE_SEED);
    let root = merkle::root(&store, 5).unwrap();
    let checkpoint = key.sign_checkpoint(5, &root, "2026-11-24T10:01:00.000Z").unwrap();
    let of_contact: Vec<Entry> =
        entries.into_iter().filter(|entry| entry.contact.as_deref() == Some("447700900123")).collect();
    write_export("447700900123", &of_contact, &store, &checkpoint, &key.public_key()).unwrap()
}

#[test]
fn the_documented_example_is_what_the_code_writes_and_it_checks() {
    let file = example_export();
    if std::env::var_os("UPDATE_AUDIT_EXAMPLE").is_some() {
        std::fs::write(FIXTURE, &file).unwrap();
    }
    let fixture = std::fs::read(FIXTURE).expect("the fixture exists (UPDATE_AUDIT_EXAMPLE=1 writes it)");
    assert!(fixture == file, "tests/fixtures/example-export.jsonl is stale: rerun with UPDATE_AUDIT_EXAMPLE=1");
    let public_key_hex = AuditSigningKey::from_secret_bytes(&EXAMPLE_SEED).public_key().to_hex();
    let public_key = AuditPublicKey::from_hex(&public_key_hex).unwrap();
    let summary = check(&fixture, Some(&public_key)).unwrap();
    assert_eq!(summary.entry_numbers, vec![1, 2, 4]);
    println!("{public_key_hex}\n{summary}");
}
