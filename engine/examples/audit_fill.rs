//! Fills a data directory's audit log with N synthetic entries (as the
//! engine's consumer stores them: entries, Merkle nodes, index rows, a
//! signed checkpoint every 100,000 and at the end), to time
//! `switchboard audit verify`, proofs and exports on a large stored log
//! (docs/BENCHMARKS.md, "Audit log").
//!
//!   cargo run --release -p switchboard-engine --example audit_fill -- DIR N

use std::path::PathBuf;
use std::sync::Arc;

use audit::entry::{ChainHead, EntryContent};
use audit::merkle::Frontier;
use serde_json::json;
use storage::audit::AuditAppend;
use storage::{NullSink, Op, Store, StoreOptions};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!("usage: audit_fill DIR N"))?);
    let total: u64 = args.next().ok_or_else(|| anyhow::anyhow!("usage: audit_fill DIR N"))?.parse()?;
    std::fs::create_dir_all(&dir)?;
    let key = audit::load_or_generate(&dir.join("audit-signing.key"))?;
    let store = Arc::new(Store::open(&dir, StoreOptions::default(), Arc::new(NullSink))?);
    let started = std::time::Instant::now();
    let mut chain = ChainHead::empty();
    let mut frontier = Frontier::new();
    let mut completed = Vec::new();
    let base_ms: i64 = 1_796_000_000_000;
    let mut n = 0u64;
    while n < total {
        let mut append = AuditAppend::default();
        let batch_end = (n + 4096).min(total);
        while n < batch_end {
            let at = base_ms + n as i64 * 10;
            let conversation = format!("cv{:012}", n / 16);
            let contact = format!("9198{:08}", (n / 16) % 100_000_000);
            let content = EntryContent {
                at: switchboard_engine::audit::audit_time(at),
                actor: "customer".to_owned(),
                action: "message_in".to_owned(),
                contact: Some(contact.clone()),
                conversation_id: Some(conversation.clone()),
                data: json!({
                    "wamid": format!("wamid.HBgLOTE5ODAwMDAwMDAxFQIAEhgg{n:016}"),
                    "message_type": "text",
                    "text": "Hi, is the blue one still available in size M?",
                    "phone_number_id": "100000000000001",
                }),
            };
            let index = vec![format!("c:{contact}")];
            switchboard_engine::audit::push_entry(
                &mut append,
                &mut chain,
                &mut frontier,
                &mut completed,
                content,
                at,
                index,
            )?;
            n += 1;
        }
        let mut batch = vec![Op::AuditAppend(Box::new(append))];
        if n % 100_000 < 4096 || n == total {
            let checkpoint = key.sign_checkpoint(
                n,
                &frontier.root(),
                &switchboard_engine::audit::audit_time(base_ms + n as i64 * 10),
            )?;
            batch.push(Op::AuditCheckpoint { tree_size: n, checkpoint: serde_json::to_vec(&checkpoint)? });
        }
        store.commit_blocking(batch)?;
    }
    store.shutdown();
    drop(store);
    println!("{total} entries in {:.1} s; public key {}", started.elapsed().as_secs_f64(), key.public_key().to_hex());
    Ok(())
}
