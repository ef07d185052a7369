//! A generated audit log as storage would hold it, shared by the black-box tests.

#![allow(dead_code)] // each test file uses its own part

use serde_json::json;
use switchboard_audit::merkle::leaf_hash;
use switchboard_audit::{AuditSigningKey, ChainHead, Checkpoint, Entry, EntryContent, Hash, MemoryNodeStore};

pub const CONTACTS: [&str; 3] = ["447700900001", "447700900002", "447700900003"];

/// A log: the typed entries, what storage keeps of each, the Merkle nodes.
pub struct GeneratedLog {
    pub entries: Vec<Entry>,
    pub stored: Vec<(Vec<u8>, Hash)>,
    pub store: MemoryNodeStore,
}

pub fn signing_key() -> AuditSigningKey {
    AuditSigningKey::from_secret_bytes(&[0x42; 32])
}

pub fn attacker_key() -> AuditSigningKey {
    AuditSigningKey::from_secret_bytes(&[0x66; 32])
}

/// The time of entry `n`: one entry a second from 2026-11-24T10:00:00.000Z.
pub fn time_of(n: u64) -> String {
    let seconds = n % 60;
    let minutes = (n / 60) % 60;
    let hours = 10 + n / 3600;
    format!("2026-11-24T{hours:02}:{minutes:02}:{seconds:02}.{:03}Z", (n * 7) % 1000)
}

/// The content of entry `n`, varied by `variant` (a message, a status, an
/// assignment or a configuration change without contact).
pub fn content_of(n: u64, variant: u64, text: &str) -> EntryContent {
    let contact = CONTACTS[(n % 3) as usize].to_owned();
    let conversation_id = format!("c_{}", n % 3);
    match variant % 4 {
        0 => EntryContent {
            at: time_of(n),
            actor: format!("customer:{contact}"),
            action: "message.inbound".to_owned(),
            contact: Some(contact),
            conversation_id: Some(conversation_id),
            data: json!({"text": text, "wamid": format!("wamid.{n}")}),
        },
        1 => EntryContent {
            at: time_of(n),
            actor: "meta".to_owned(),
            action: "message.status".to_owned(),
            contact: Some(contact),
            conversation_id: Some(conversation_id),
            data: json!({"status": "delivered", "wamid": format!("wamid.{}", n - 1)}),
        },
        2 => EntryContent {
            at: time_of(n),
            actor: "router".to_owned(),
            action: "conversation.assigned".to_owned(),
            contact: Some(contact),
            conversation_id: Some(conversation_id),
            data: json!({"agent": "a_7", "route": {"rule": "last_closer", "team": "sales"}}),
        },
        _ => EntryContent {
            at: time_of(n),
            actor: "admin:ana".to_owned(),
            action: "config.changed".to_owned(),
            contact: None,
            conversation_id: None,
            data: json!({"path": "teams.sales.sla_minutes", "from": 5, "to": 4.5}),
        },
    }
}

/// Appends one entry to every representation of the log.
pub fn append(log: &mut GeneratedLog, head: &mut ChainHead, content: EntryContent) {
    let built = head.append(content).expect("generated content is well formed");
    log.store.append(leaf_hash(&built.hash));
    log.stored.push((built.canonical_bytes, built.hash));
    log.entries.push(built.entry);
}

pub fn generate(length: u64) -> GeneratedLog {
    let mut log = GeneratedLog { entries: Vec::new(), stored: Vec::new(), store: MemoryNodeStore::new() };
    let mut head = ChainHead::empty();
    for n in 1..=length {
        let text = format!("Hola, ¿tienen el modelo {n} en azul? Lo necesito para el viernes \"urgente\"");
        append(&mut log, &mut head, content_of(n, n * 7 % 5, &text));
    }
    log
}

pub fn checkpoint_at(log: &GeneratedLog, key: &AuditSigningKey, tree_size: u64) -> Checkpoint {
    let root = switchboard_audit::merkle::root(&log.store, tree_size).expect("size within the log");
    key.sign_checkpoint(tree_size, &root, &time_of(tree_size + 1)).expect("well-formed time")
}

/// Rebuilds stored entries from typed ones (what an attacker with write
/// access to storage, but not the key, can do).
pub fn rebuild_after(entries_before: &[(Vec<u8>, Hash)], contents: Vec<EntryContent>) -> Vec<(Vec<u8>, Hash)> {
    let mut head = match entries_before.last() {
        Some((_, hash)) => ChainHead { entries: entries_before.len() as u64, head: *hash },
        None => ChainHead::empty(),
    };
    let mut rebuilt = entries_before.to_vec();
    for content in contents {
        let built = head.append(content).expect("well formed");
        rebuilt.push((built.canonical_bytes, built.hash));
    }
    rebuilt
}
