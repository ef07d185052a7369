//! The audit log at scale (issue #11): builds an N-entry log in memory (10,000,000
//! by default) as storage would keep it, each entry's canonical bytes and hash
//! plus every complete Merkle subtree, then measures
//!
//! - chain verification, entries/s: the fast path over stored bytes
//!   (`verify_stored`), the same with the Merkle frontier and a checkpoint
//!   (`verify_log`), and the typed path (`ChainVerifier::check_entry`), both
//!   from stored bytes (parse + canonicalize + hash) and over entries already
//!   parsed;
//! - inclusion and consistency proofs: size (hashes, bytes, the JSON of
//!   `GET /api/v1/audit/proof`) and generation and verification time, p50 and
//!   p99 over random proofs;
//! - peak resident memory.
//!
//! Usage: `switchboard-bench-audit [ENTRIES] [--proofs K] [--typed-preparsed M]`.
//! Results and the command are recorded in docs/BENCHMARKS.md.

use anyhow::{Context, Result, bail};
use audit::entry::{ChainVerifier, EntryContent};
use audit::export::InclusionProofRecord;
use audit::merkle::{self, leaf_hash};
use audit::{AuditSigningKey, ChainHead, Entry, Hash, MemoryNodeStore, verify_log, verify_stored};
use serde_json::json;
use std::time::{Duration, Instant};

struct Options {
    entries: u64,
    proofs: usize,
    typed_preparsed: u64,
}

fn parse_options() -> Result<Options> {
    let mut options = Options { entries: 10_000_000, proofs: 10_000, typed_preparsed: 1_000_000 };
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        let mut value_of = |name: &str| -> Result<u64> {
            let text = arguments.next().with_context(|| format!("{name} needs a value"))?;
            text.replace('_', "").parse().with_context(|| format!("{name} {text}"))
        };
        match argument.as_str() {
            "--proofs" => options.proofs = usize::try_from(value_of("--proofs")?)?,
            "--typed-preparsed" => options.typed_preparsed = value_of("--typed-preparsed")?,
            "-h" | "--help" => {
                println!("switchboard-bench-audit [ENTRIES] [--proofs K] [--typed-preparsed M]");
                std::process::exit(0);
            }
            number => options.entries = number.replace('_', "").parse().with_context(|| format!("ENTRIES {number}"))?,
        }
    }
    if options.entries == 0 {
        bail!("ENTRIES must be at least 1");
    }
    Ok(options)
}

/// xorshift64*: a reproducible stream without a dependency.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// RFC 3339 UTC with milliseconds from unix milliseconds (days to civil date
/// by Howard Hinnant's algorithm), so the bench needs no date crate.
fn rfc3339_millis(unix_millis: u64) -> String {
    let days = (unix_millis / 86_400_000) as i64;
    let millis_of_day = unix_millis % 86_400_000;
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        millis_of_day / 3_600_000,
        millis_of_day / 60_000 % 60,
        millis_of_day / 1000 % 60,
        millis_of_day % 1000
    )
}

const MESSAGE_TEMPLATES: [&str; 6] = [
    "Hola, ¿tienen el modelo {} en azul? Lo necesito para el viernes",
    "Buenas tardes, quisiera saber el precio del plan {} con envío",
    "Perfecto, le confirmo la reserva número {} para mañana a las 10",
    "Gracias por escribirnos. Un agente le atenderá en breve ({})",
    "¿Me pueden enviar la factura {} al correo que les di ayer, por favor?",
    "Sí, el pago de la cuota {} ya está hecho desde la app del banco",
];

/// Entry n's content: 60 % messages (a ~60-character text), 25 % statuses,
/// 10 % assignments with their route, 5 % configuration changes and logins
/// (no contact), over 200,000 contacts.
fn content_for(n: u64, random: &mut Random) -> EntryContent {
    let contact_number = 447_700_000_000 + random.below(200_000);
    let contact = contact_number.to_string();
    let conversation_id = format!("c_{:016x}", contact_number.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let at = rfc3339_millis(1_795_000_000_000 + n * 37);
    let kind = random.below(100);
    let (actor, action, contact, conversation_id, data) = if kind < 60 {
        let template = MESSAGE_TEMPLATES[random.below(MESSAGE_TEMPLATES.len() as u64) as usize];
        let text = template.replacen("{}", &random.below(100_000).to_string(), 1);
        let inbound = kind < 40;
        let actor = if inbound { format!("customer:{contact}") } else { format!("agent:a_{}", random.below(500)) };
        let action = if inbound { "message.inbound" } else { "message.outbound" };
        let data = json!({"text": text, "wamid": format!("wamid.HBgM{:020}", random.next() >> 4), "type": "text"});
        (actor, action, Some(contact), Some(conversation_id), data)
    } else if kind < 85 {
        let status = ["sent", "delivered", "read"][random.below(3) as usize];
        let data = json!({"status": status, "wamid": format!("wamid.HBgM{:020}", random.next() >> 4)});
        ("meta".to_owned(), "message.status", Some(contact), Some(conversation_id), data)
    } else if kind < 95 {
        let data = json!({
            "agent": format!("a_{}", random.below(500)),
            "route": {"rule": "last_closer", "team": "sales", "queued_ms": random.below(60_000)}
        });
        ("router".to_owned(), "conversation.assigned", Some(contact), Some(conversation_id), data)
    } else {
        let data = json!({"path": "teams.sales.sla_minutes", "from": 5, "to": 4});
        ("admin:ana".to_owned(), "config.changed", None, None, data)
    };
    EntryContent { at, actor, action: action.to_owned(), contact, conversation_id, data }
}

/// The log as storage keeps it: all canonical bytes in one buffer.
struct StoredLog {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    hashes: Vec<Hash>,
    nodes: MemoryNodeStore,
}

impl StoredLog {
    fn entry(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.bytes[start..self.ends[index]]
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], &Hash)> {
        (0..self.hashes.len()).map(|index| (self.entry(index), &self.hashes[index]))
    }
}

/// What storage would hand the typed verifier: the entry parsed from its bytes.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UnhashedOwned {
    n: u64,
    at: String,
    actor: String,
    action: String,
    contact: Option<String>,
    conversation_id: Option<String>,
    data: serde_json::Value,
    prev: String,
}

fn parse_stored(bytes: &[u8], hash: &Hash) -> Result<Entry> {
    let parsed: UnhashedOwned = serde_json::from_slice(bytes).context("stored entry parses")?;
    Ok(Entry {
        n: parsed.n,
        at: parsed.at,
        actor: parsed.actor,
        action: parsed.action,
        contact: parsed.contact,
        conversation_id: parsed.conversation_id,
        data: parsed.data,
        prev: parsed.prev,
        hash: audit::encoding::encode_hex(hash),
    })
}

fn memory_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn rate(count: u64, elapsed: Duration) -> String {
    format!("{:.0}", count as f64 / elapsed.as_secs_f64())
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn micros(duration: Duration) -> String {
    format!("{:.1} µs", duration.as_secs_f64() * 1e6)
}

struct Timings {
    generation: Vec<Duration>,
    verification: Vec<Duration>,
    hashes: Vec<usize>,
    json_bytes: Vec<usize>,
}

impl Timings {
    fn new(capacity: usize) -> Self {
        Timings {
            generation: Vec::with_capacity(capacity),
            verification: Vec::with_capacity(capacity),
            hashes: Vec::with_capacity(capacity),
            json_bytes: Vec::with_capacity(capacity),
        }
    }

    fn report(mut self, name: &str) {
        self.generation.sort();
        self.verification.sort();
        self.hashes.sort();
        self.json_bytes.sort();
        let count = self.hashes.len();
        let mean_hashes = self.hashes.iter().sum::<usize>() as f64 / count as f64;
        println!(
            "{name}: {count} proofs; hashes min {} / mean {mean_hashes:.1} / max {} ({} to {} bytes raw); \
             JSON p50 {} bytes, max {} bytes",
            self.hashes[0],
            self.hashes[count - 1],
            32 * self.hashes[0],
            32 * self.hashes[count - 1],
            self.json_bytes[count / 2],
            self.json_bytes[count - 1],
        );
        println!(
            "{name}: generation p50 {} p99 {}; verification p50 {} p99 {}",
            micros(percentile(&self.generation, 0.50)),
            micros(percentile(&self.generation, 0.99)),
            micros(percentile(&self.verification, 0.50)),
            micros(percentile(&self.verification, 0.99)),
        );
    }
}

fn main() -> Result<()> {
    let options = parse_options()?;
    let entries = options.entries;
    println!("audit bench: {entries} entries, {} proofs of each kind", options.proofs);

    // Build.
    let started = Instant::now();
    let mut random = Random(0x5eed_1234_abcd_ef01);
    let expected_bytes_per_entry = 300;
    let mut log = StoredLog {
        bytes: Vec::with_capacity(entries as usize * expected_bytes_per_entry),
        ends: Vec::with_capacity(entries as usize),
        hashes: Vec::with_capacity(entries as usize),
        nodes: MemoryNodeStore::with_capacity(entries),
    };
    let mut head = ChainHead::empty();
    for n in 1..=entries {
        let built = head.append(content_for(n, &mut random)).context("building an entry")?;
        log.bytes.extend_from_slice(&built.canonical_bytes);
        log.ends.push(log.bytes.len());
        log.hashes.push(built.hash);
        log.nodes.append(leaf_hash(&built.hash));
    }
    let build_time = started.elapsed();
    println!(
        "build: {:.1} s ({} entries/s: build, canonicalize, hash, Merkle append); canonical bytes {:.1} per entry \
         (min {}, max {}); RSS {}",
        build_time.as_secs_f64(),
        rate(entries, build_time),
        log.bytes.len() as f64 / entries as f64,
        (0..log.hashes.len()).map(|index| log.entry(index).len()).min().unwrap_or(0),
        (0..log.hashes.len()).map(|index| log.entry(index).len()).max().unwrap_or(0),
        mib(memory_kib("VmRSS:")),
    );
    let sample_index = (entries / 2) as usize;
    println!("sample entry: {}", String::from_utf8_lossy(log.entry(sample_index)));

    // Chain verification, fast path (three runs).
    for run in 1..=3 {
        let started = Instant::now();
        let summary = verify_stored(log.iter()).context("fast verification")?;
        let elapsed = started.elapsed();
        anyhow::ensure!(summary.entries == entries, "verified {} of {entries}", summary.entries);
        println!(
            "verify_stored (fast) run {run}: {:.2} s, {} entries/s",
            elapsed.as_secs_f64(),
            rate(entries, elapsed)
        );
    }

    // Chain + Merkle frontier + a checkpoint at the end.
    let key = AuditSigningKey::from_secret_bytes(&[0x42; 32]);
    let root = merkle::root(&log.nodes, entries)?;
    let checkpoint = key.sign_checkpoint(entries, &root, &rfc3339_millis(1_800_000_000_000))?;
    let started = Instant::now();
    let summary = verify_log(log.iter(), std::slice::from_ref(&checkpoint), &key.public_key())?;
    let elapsed = started.elapsed();
    anyhow::ensure!(summary.matched_checkpoints == vec![entries], "checkpoint not matched");
    println!(
        "verify_log (fast chain + Merkle root vs signed checkpoint): {:.2} s, {} entries/s",
        elapsed.as_secs_f64(),
        rate(entries, elapsed)
    );

    // Typed path from stored bytes: parse, canonicalize, hash.
    let started = Instant::now();
    let mut verifier = ChainVerifier::new();
    for (bytes, hash) in log.iter() {
        let entry = parse_stored(bytes, hash)?;
        verifier.check_entry(&entry).context("typed verification")?;
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(verifier.verified_entries() == entries, "typed verification stopped early");
    println!(
        "typed from stored bytes (parse + canonicalize + hash): {:.2} s, {} entries/s",
        elapsed.as_secs_f64(),
        rate(entries, elapsed)
    );

    // Typed path over entries already parsed (a prefix, to bound memory).
    let preparsed_count = options.typed_preparsed.min(entries) as usize;
    let preparsed: Vec<Entry> =
        log.iter().take(preparsed_count).map(|(bytes, hash)| parse_stored(bytes, hash)).collect::<Result<_>>()?;
    let started = Instant::now();
    let summary = audit::verify_chain(&preparsed).context("typed verification")?;
    let elapsed = started.elapsed();
    anyhow::ensure!(summary.entries == preparsed_count as u64, "typed verification stopped early");
    println!(
        "typed over {preparsed_count} parsed entries (canonicalize + hash): {:.2} s, {} entries/s",
        elapsed.as_secs_f64(),
        rate(preparsed_count as u64, elapsed)
    );
    drop(preparsed);

    // Inclusion proofs: random entries in the tree of all entries.
    let mut inclusion = Timings::new(options.proofs);
    for _ in 0..options.proofs {
        let leaf_index = random.below(entries);
        let started = Instant::now();
        let path = merkle::inclusion_proof(&log.nodes, leaf_index, entries)?;
        inclusion.generation.push(started.elapsed());
        let leaf = leaf_hash(&log.hashes[leaf_index as usize]);
        let started = Instant::now();
        merkle::verify_inclusion(leaf_index, entries, &leaf, &path, &root)?;
        inclusion.verification.push(started.elapsed());
        inclusion.hashes.push(path.len());
        let record =
            InclusionProofRecord::generate(&log.nodes, leaf_index + 1, &log.hashes[leaf_index as usize], entries)?;
        inclusion.json_bytes.push(serde_json::to_vec(&record)?.len());
    }
    inclusion.report("inclusion");

    // Consistency proofs: random old size below a random new size.
    let mut consistency = Timings::new(options.proofs);
    for _ in 0..options.proofs {
        let new_size = 2 + random.below(entries.max(2) - 1).min(entries - 2);
        let old_size = 1 + random.below(new_size - 1);
        let started = Instant::now();
        let path = merkle::consistency_proof(&log.nodes, old_size, new_size)?;
        consistency.generation.push(started.elapsed());
        let old_root = merkle::root(&log.nodes, old_size)?;
        let new_root = merkle::root(&log.nodes, new_size)?;
        let started = Instant::now();
        merkle::verify_consistency(old_size, new_size, &old_root, &new_root, &path)?;
        consistency.verification.push(started.elapsed());
        consistency.hashes.push(path.len());
        let hex_path: Vec<String> = path.iter().map(|hash| audit::encoding::encode_hex(hash)).collect();
        consistency.json_bytes.push(serde_json::to_vec(&json!({"path": hex_path}))?.len());
    }
    consistency.report("consistency");

    // Checkpoint signing and verification.
    let started = Instant::now();
    let repetitions = 1_000u32;
    for _ in 0..repetitions {
        key.public_key().verify(&checkpoint)?;
    }
    println!("checkpoint verification: {} each", micros(started.elapsed() / repetitions));

    println!("peak RSS (VmHWM): {}", mib(memory_kib("VmHWM:")));
    Ok(())
}
