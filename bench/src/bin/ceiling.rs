//! `switchboard-ceiling`: what this machine can do at best, measured beside
//! the engine by `switchboard-bench` (issue #3, "the ceiling").
//!
//! - `server`: the engine's HTTP stack (axum 0.8 on tokio, multi-threaded)
//!   doing only what no webhook handler can skip: read the body, check
//!   `X-Hub-Signature-256` with the engine's own `protocol::signature::verify`,
//!   answer. No parsing, no storage: the most requests/s a signed webhook
//!   endpoint gets here.
//! - `redb`: a raw redb group-commit loop, `--records` inserts, `--batch` per
//!   write transaction committed with `Durability::Immediate` (an fsync each):
//!   the most durable records/s the engine's store could reach for a given
//!   group size and key order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The engine's allocator, so the ceiling is the one the engine could reach.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use clap::{Parser, Subcommand, ValueEnum};
use rand::Rng;
use redb::{Database, Durability, TableDefinition};

#[derive(Parser, Debug)]
#[command(name = "switchboard-ceiling", about = "The machine's ceiling: a signature-only server and a raw redb loop")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve `POST /webhooks/whatsapp` that only checks the signature.
    Server {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long)]
        app_secret: String,
    },
    /// Insert `--records` records, `--batch` per durable write transaction; print one JSON line.
    Redb {
        /// Directory for the database file (`ceiling.redb`, replaced if present).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        #[arg(long, default_value_t = 100)]
        batch: u64,
        #[arg(long, value_enum, default_value_t = KeyOrder::Sequential)]
        key_order: KeyOrder,
        #[arg(long, default_value_t = 256)]
        value_bytes: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KeyOrder {
    /// Append order (what the engine's sequence-numbered tables see).
    Sequential,
    /// Uniformly random u64 keys (what a table keyed by ids or hashes sees).
    Random,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Server { listen, app_secret } => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve(listen, app_secret))
        }
        Command::Redb { dir, records, batch, key_order, value_bytes } => {
            let report = redb_loop(&dir, records, batch, key_order, value_bytes)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}

async fn serve(listen: SocketAddr, app_secret: String) -> anyhow::Result<()> {
    let secret: Arc<[u8]> = app_secret.into_bytes().into();
    let router = Router::new()
        .route("/webhooks/whatsapp", post(receive_webhook))
        .route("/readyz", get(|| async { "ready" }))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(secret);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot bind {listen}"))?;
    // The same line as the engine prints, so the harness treats both alike.
    println!("switchboard listening on http://{}", listener.local_addr()?);
    // No graceful shutdown: SIGTERM/SIGINT end the process (nothing to flush).
    axum::serve(listener.tap_io(|tcp| drop(tcp.set_nodelay(true))), router).await?;
    Ok(())
}

async fn receive_webhook(State(secret): State<Arc<[u8]>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers.get("x-hub-signature-256").and_then(|value| value.to_str().ok());
    if protocol::signature::verify(&secret, signature, &body) { StatusCode::OK } else { StatusCode::UNAUTHORIZED }
}

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");

#[derive(serde::Serialize)]
struct RedbReport {
    records: u64,
    batch: u64,
    key_order: &'static str,
    value_bytes: usize,
    commits: u64,
    seconds: f64,
    records_per_s: f64,
    commits_per_s: f64,
    /// One write transaction, begin to durable commit.
    p50_commit_us: u64,
    p99_commit_us: u64,
    max_commit_us: u64,
}

fn redb_loop(
    dir: &std::path::Path,
    records: u64,
    batch: u64,
    key_order: KeyOrder,
    value_bytes: usize,
) -> anyhow::Result<RedbReport> {
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("ceiling.redb");
    if path.exists() {
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    let database = Database::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut random = rand::rng();
    // Keys are drawn before the clock starts: only the store is timed.
    let keys: Vec<u64> = match key_order {
        KeyOrder::Sequential => (0..records).collect(),
        KeyOrder::Random => (0..records).map(|_| random.random()).collect(),
    };
    let value: Vec<u8> = (0..value_bytes).map(|index| (index % 251) as u8).collect();
    let mut commit_times: Vec<Duration> = Vec::with_capacity(keys.len().div_ceil(batch as usize));
    let started = Instant::now();
    for group in keys.chunks(batch as usize) {
        let commit_started = Instant::now();
        let mut transaction = database.begin_write()?;
        transaction.set_durability(Durability::Immediate);
        {
            let mut table = transaction.open_table(RECORDS)?;
            for key in group {
                table.insert(*key, value.as_slice())?;
            }
        }
        transaction.commit()?;
        commit_times.push(commit_started.elapsed());
    }
    let seconds = started.elapsed().as_secs_f64();
    commit_times.sort_unstable();
    let percentile = |fraction: f64| -> u64 {
        if commit_times.is_empty() {
            return 0;
        }
        let index = ((commit_times.len() as f64 - 1.0) * fraction).round() as usize;
        commit_times[index].as_micros() as u64
    };
    let commits = commit_times.len() as u64;
    Ok(RedbReport {
        records,
        batch,
        key_order: match key_order {
            KeyOrder::Sequential => "sequential",
            KeyOrder::Random => "random",
        },
        value_bytes,
        commits,
        seconds,
        records_per_s: records as f64 / seconds,
        commits_per_s: commits as f64 / seconds,
        p50_commit_us: percentile(0.50),
        p99_commit_us: percentile(0.99),
        max_commit_us: percentile(1.0),
    })
}
