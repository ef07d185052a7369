//! `switchboard-bench`: the load harness of issue #3 and docs/BENCHMARKS.md.
//!
//! It measures a server only through its public interfaces: signed Meta-shaped
//! webhooks in, agents over WebSocket, and a Graph API sink for what the server
//! sends out (`sim::sink`; the signing and the agents' connection are `sim`'s
//! too). The load is **open-loop**: message `i` of a step is scheduled at
//! `start + i / rate` and every latency is measured from that scheduled time, so
//! a server that slows down cannot hide it by slowing the load generator.
//!
//! Layout:
//! - `cli` — the command line (`smoke`, `throughput`, `soak`, `recovery`, `merge`).
//! - `workload` — who writes and what: Zipf customers, conversation sessions,
//!   the message mix, webhook bodies and the wamids that identify them.
//! - `ledger` — every scheduled message's fate (acknowledged, delivered), the
//!   latency histograms, and the correctness counters that come from it.
//! - `load` — the open-loop webhook sender.
//! - `agents` — the WebSocket agents: take, reply, close; check assignments.
//! - `engine_process` — the configuration file, the `switchboard serve` child,
//!   and its CPU and memory from `/proc`.
//! - `metrics` — latency summaries, fairness, slopes.
//! - `report` — the JSON report and its Markdown rendering, references as ratios.
//! - `scenarios` — steps, drains, and the scenarios (smoke, throughput, soak,
//!   recovery, agents).
//! - `conversations` — the `conversations` scenario: many stored, some active, restart.
//!
//! What it deliberately does not do: look inside the server (no metrics
//! scraping, no store reads), assert on timing (a report states figures; only
//! correctness counters fail a run), or retry webhooks the way Meta would (a
//! failed webhook is counted as failed and is never expected to be delivered).

pub mod agents;
pub mod cli;
pub mod conversations;
pub mod engine_process;
pub mod ledger;
pub mod load;
pub mod metrics;
pub mod outbox;
pub mod report;
pub mod scenarios;
pub mod workload;

/// The app secret the harness writes into the engine's configuration, and the
/// default for `--app-secret` (references should use it too).
pub const BENCH_APP_SECRET: &str = "bench-app-secret";
pub const BENCH_VERIFY_TOKEN: &str = "bench-verify-token";
pub const BENCH_ACCESS_TOKEN: &str = "bench-access-token";
/// Agent `i` (1-based) is `bench-agent-{i}` with token `{prefix}{i}-token`.
pub const BENCH_AGENT_TOKEN_PREFIX: &str = "bench-agent-";
pub const BENCH_TEAM: &str = "bench";
pub const BENCH_MANAGER_ID: &str = "bench-manager";
pub const BENCH_MANAGER_TOKEN: &str = "bench-manager-token";

/// The id of agent `index` (1-based), as the harness configures it.
pub fn agent_id(index: usize) -> String {
    format!("bench-agent-{index}")
}

/// The token of agent `index` (1-based) for a token prefix.
pub fn agent_token(prefix: &str, index: usize) -> String {
    format!("{prefix}{index}-token")
}
