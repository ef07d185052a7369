//! The report: JSON for tools, Markdown for people.
//!
//! One `Report` per scenario run: the machine, the command, the engine's
//! `RunResult`, and any number of references (the common design, the ceiling)
//! measured the same way, each printed as a ratio to the engine's figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::metrics::{Fairness, LatencySummary};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub machine: MachineInfo,
    pub command: String,
    /// Unix seconds when the run began.
    pub started_at_unix_s: u64,
    pub engine: RunResult,
    /// `(name, result)`: references driven the same way as the engine.
    #[serde(default)]
    pub references: Vec<(String, RunResult)>,
    #[serde(default)]
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MachineInfo {
    pub cores: usize,
    pub cpu_model: String,
    pub mem_bytes: u64,
    pub mem: String,
    pub kernel: String,
    /// `/proc/loadavg` when the run began: other work on a shared machine
    /// shows here.
    #[serde(default)]
    pub load_average: String,
}

impl MachineInfo {
    pub fn detect() -> MachineInfo {
        let cores = std::thread::available_parallelism().map(|cores| cores.get()).unwrap_or(1);
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let mem_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("MemTotal:"))
                    .and_then(|value| value.split_whitespace().next())
                    .and_then(|kib| kib.parse::<u64>().ok())
            })
            .map_or(0, |kib| kib * 1024);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|text| text.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let load_average = std::fs::read_to_string("/proc/loadavg")
            .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        MachineInfo {
            cores,
            cpu_model,
            mem_bytes,
            mem: format!("{:.1} GiB", mem_bytes as f64 / GIB),
            kernel,
            load_average,
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

/// The counters that must all be 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Correctness {
    /// Acknowledged with 200, never delivered by the end of the drain.
    /// `None` when nothing is delivered by design (ingest-only targets).
    pub lost: Option<u64>,
    pub duplicated: u64,
    pub double_assigned: u64,
    pub out_of_order: u64,
    pub capacity_exceeded: u64,
}

impl Correctness {
    pub fn violations(&self) -> u64 {
        self.lost.unwrap_or(0) + self.duplicated + self.double_assigned + self.out_of_order + self.capacity_exceeded
    }

    pub fn add(&mut self, other: &Correctness) {
        self.lost = match (self.lost, other.lost) {
            (None, None) => None,
            (mine, theirs) => Some(mine.unwrap_or(0) + theirs.unwrap_or(0)),
        };
        self.duplicated += other.duplicated;
        self.double_assigned += other.double_assigned;
        self.out_of_order += other.out_of_order;
        self.capacity_exceeded += other.capacity_exceeded;
    }
}

/// What the engine process cost during a step (only when the harness started it).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProcessFigures {
    pub cpu_seconds: f64,
    pub cpu_seconds_per_1000_messages: Option<f64>,
    pub rss_start_mib: f64,
    pub rss_end_mib: f64,
    pub rss_peak_mib: f64,
    /// RSS growth over the step divided by the conversations assigned in it.
    pub bytes_per_conversation: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StepResult {
    pub label: String,
    pub target_rate: f64,
    pub duration_s: f64,
    pub planned: u64,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    /// Acknowledged messages per second over the step.
    pub acked_per_s: f64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    /// Delivered although the webhook was not acknowledged (e.g. the answer
    /// was cut by a crash after the commit): not an error.
    pub delivered_not_acked: u64,
    pub ack_latency: LatencySummary,
    pub end_to_end_latency: LatencySummary,
    /// How far the harness itself fell behind its schedule.
    pub max_sender_lag_ms: f64,
    pub conversations_assigned: u64,
    pub fairness: Fairness,
    pub graph_sends: u64,
    pub replies_ok: u64,
    pub closes_ok: u64,
    pub correctness: Correctness,
    /// Events the agents never saw (gaps in their `seq`).
    pub seq_gaps: u64,
    pub reconnects: u64,
    pub agent_errors: BTreeMap<String, u64>,
    /// Everything acknowledged was delivered before the drain timed out.
    pub drained: bool,
    pub drain_s: f64,
    pub engine_process: Option<ProcessFigures>,
    pub harness_cpu_seconds: f64,
    pub meets_slo: bool,
    /// A few lost wamids, to look them up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_examples: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SoakResult {
    pub rate: f64,
    pub duration_s: f64,
    /// (seconds since the soak began, RSS MiB), one a second.
    pub rss_samples: Vec<(f64, f64)>,
    pub rss_first_mib: f64,
    pub rss_last_mib: f64,
    pub rss_peak_mib: f64,
    /// Least-squares slope of RSS over the soak.
    pub rss_slope_mib_per_min: Option<f64>,
    /// The same over its second half (after caches have warmed up).
    pub rss_slope_second_half_mib_per_min: Option<f64>,
    /// (seconds, live conversation actors) from the target's `/metrics`, when public.
    #[serde(default)]
    pub conversation_actors_samples: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RecoveryResult {
    pub killed_after_s: f64,
    pub restart_to_ready_ms: f64,
    /// Webhooks acknowledged before the kill.
    pub acked_before_kill: u64,
    /// Of those, delivered only after the restart.
    pub delivered_after_restart: u64,
    /// Webhooks refused or cut while the engine was down (Meta would retry).
    pub failed_while_down: u64,
    pub lost: u64,
    pub reconnects: u64,
}

/// The `agents` scenario: many connected agents, memory per connection.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AgentsScaleResult {
    pub agents: usize,
    /// Spawn → `/readyz` 200 with this many agents configured (harness-started engine).
    pub engine_startup_ms: Option<f64>,
    /// From the first connection attempt until every agent was online.
    pub connect_s: f64,
    pub connect_concurrency: Option<usize>,
    /// The harness's open-files limit (soft) during the run.
    pub harness_fd_limit: Option<u64>,
    pub engine_rss_before_mib: Option<f64>,
    /// All connected and online, then idle for `idle_settle_s`.
    pub engine_rss_connected_mib: Option<f64>,
    pub engine_bytes_per_connection: Option<f64>,
    pub harness_rss_before_mib: Option<f64>,
    pub harness_rss_connected_mib: Option<f64>,
    pub harness_bytes_per_connection: Option<f64>,
    pub idle_settle_s: f64,
    /// The engine's `switchboard_ws_sessions` gauge once connected, when public.
    pub ws_sessions_gauge: Option<f64>,
    /// Agents that were assigned at least one conversation during the load.
    pub agents_reached: usize,
    pub engine_rss_after_load_mib: Option<f64>,
    /// After every agent disconnected and `idle_settle_s` passed.
    #[serde(default)]
    pub engine_rss_disconnected_mib: Option<f64>,
}

/// The `conversations` scenario: many stored conversations, some active,
/// memory and restart-to-ready.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConversationsResult {
    pub stored_target: u64,
    /// Conversations opened in the store (the engine's `conversations_opened_total`).
    pub stored_opened: u64,
    pub active_target: u64,
    /// Active conversations whose second message the engine applied.
    pub active_applied: u64,
    /// All stored conversations stay OPEN (nobody closes them; no agent is connected, so they wait in the team queue).
    pub all_open: bool,
    pub messages_per_payload: usize,
    pub concurrency: usize,
    pub populate_s: f64,
    pub populate_conversations_per_s: f64,
    pub populate_ack_latency: LatencySummary,
    pub webhook_retries: u64,
    pub webhook_failures: u64,
    pub rss_after_populate_mib: Option<f64>,
    pub actors_after_populate: Option<f64>,
    pub passivation_wait_s: f64,
    pub rss_before_active_mib: Option<f64>,
    pub actors_before_active: Option<f64>,
    pub active_s: f64,
    pub rss_active_mib: Option<f64>,
    pub actors_active: Option<f64>,
    pub store_file_mib: Option<f64>,
    /// `SIGTERM` (clean) or `SIGKILL`.
    pub stop_signal: String,
    pub stop_ms: f64,
    pub restart_to_ready_ms: Option<f64>,
    pub rss_after_ready_mib: Option<f64>,
    pub actors_after_ready: Option<f64>,
    pub queue_depth_after_ready: Option<f64>,
    /// `/readyz` 200 → the team queue gauge shows every open conversation
    /// again (`None`: not within the wait).
    #[serde(default)]
    pub queue_rebuilt_after_ready_ms: Option<f64>,
    #[serde(default)]
    pub queue_depth_last_seen: Option<f64>,
    pub engine_cpu_s_startup: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunResult {
    /// What was measured, e.g. `switchboard (spawned)` or a URL.
    pub target: String,
    /// Webhooks only: no agents, nothing delivered by design.
    pub ingest_only: bool,
    pub agents: usize,
    pub capacity: Option<u32>,
    pub steps: Vec<StepResult>,
    /// The highest step rate that met the SLO (throughput).
    pub best_rate_under_slo: Option<f64>,
    pub slo: Option<String>,
    pub fairness: Fairness,
    pub correctness: Correctness,
    pub soak: Option<SoakResult>,
    pub recovery: Option<RecoveryResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents_scale: Option<AgentsScaleResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations: Option<ConversationsResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<crate::outbox::OutboxResult>,
    pub engine_peak_rss_mib: Option<f64>,
    pub engine_final_rss_mib: Option<f64>,
    pub status_webhooks_acked: u64,
    pub status_webhooks_failed: u64,
    /// Correctness counters all 0, and something was delivered (unless ingest-only).
    pub passed: bool,
    #[serde(default)]
    pub problems: Vec<String>,
}

impl RunResult {
    pub fn peak_acked_per_s(&self) -> Option<f64> {
        self.steps
            .iter()
            .map(|step| step.acked_per_s)
            .fold(None, |best, rate| Some(best.map_or(rate, |b: f64| b.max(rate))))
    }

    pub fn delivered(&self) -> u64 {
        self.steps.iter().map(|step| step.delivered).sum()
    }
}

fn format_rate(rate: f64) -> String {
    if rate >= 1000.0 && (rate / 1000.0).fract() == 0.0 { format!("{}k", rate / 1000.0) } else { format!("{rate:.0}") }
}

fn format_ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn format_latency(summary: &LatencySummary) -> String {
    if summary.count == 0 {
        return "–".to_owned();
    }
    format!(
        "{} / {} / {} / {}",
        format_ms(summary.p50_ms),
        format_ms(summary.p99_ms),
        format_ms(summary.p999_ms),
        format_ms(summary.max_ms)
    )
}

fn format_optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |value| format!("{value:.decimals$}"))
}

fn format_counts(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "0".to_owned();
    }
    counts.iter().map(|(name, count)| format!("{name}: {count}")).collect::<Vec<_>>().join(", ")
}

/// The steps of one run as a Markdown table.
pub fn steps_table(result: &RunResult) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "| step | rate/s | acked/s | ack ms p50/p99/p999/max | end-to-end ms p50/p99/p999/max | lost | dup | double | order | cap | failed | CPU s/1k msgs | RSS MiB end (peak) | B/conv | SLO |"
    );
    let _ = writeln!(text, "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|:-:|");
    for step in &result.steps {
        let process = step.engine_process.as_ref();
        let correctness = &step.correctness;
        let failed = if step.failed == 0 { "0".to_owned() } else { format_counts(&step.failures) };
        let _ = writeln!(
            text,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            step.label,
            format_rate(step.target_rate),
            step.acked_per_s,
            format_latency(&step.ack_latency),
            format_latency(&step.end_to_end_latency),
            correctness.lost.map_or_else(|| "–".to_owned(), |lost| lost.to_string()),
            correctness.duplicated,
            correctness.double_assigned,
            correctness.out_of_order,
            correctness.capacity_exceeded,
            failed,
            format_optional(process.and_then(|process| process.cpu_seconds_per_1000_messages), 3),
            process.map_or_else(
                || "–".to_owned(),
                |process| format!("{:.0} ({:.0})", process.rss_end_mib, process.rss_peak_mib)
            ),
            format_optional(process.and_then(|process| process.bytes_per_conversation), 0),
            if step.meets_slo { "✓" } else { "✗" },
        );
    }
    text
}

/// Figures compared between the engine and a reference: (name, value, higher is better).
fn comparable_figures(result: &RunResult) -> Vec<(String, Option<f64>, bool)> {
    let mut figures = vec![
        ("best rate meeting the SLO (msg/s)".to_owned(), result.best_rate_under_slo, true),
        ("peak acknowledged msg/s".to_owned(), result.peak_acked_per_s(), true),
    ];
    for step in &result.steps {
        let rate = format_rate(step.target_rate);
        figures.push((format!("acked/s at {rate}/s"), Some(step.acked_per_s), true));
        if step.end_to_end_latency.count > 0 {
            figures.push((format!("p99 end-to-end ms at {rate}/s"), Some(step.end_to_end_latency.p99_ms), false));
        }
        figures.push((format!("p99 ack ms at {rate}/s"), Some(step.ack_latency.p99_ms), false));
        if let Some(cpu) = step.engine_process.as_ref().and_then(|process| process.cpu_seconds_per_1000_messages) {
            figures.push((format!("CPU s per 1k msgs at {rate}/s"), Some(cpu), false));
        }
    }
    figures
}

/// A reference beside the engine: each figure both have, with the ratios.
pub fn reference_table(engine: &RunResult, name: &str, reference: &RunResult) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "| figure | engine | {name} | {name} ÷ engine | engine ÷ {name} |");
    let _ = writeln!(text, "|---|---:|---:|---:|---:|");
    let reference_figures: BTreeMap<String, Option<f64>> =
        comparable_figures(reference).into_iter().map(|(figure, value, _)| (figure, value)).collect();
    for (figure, engine_value, _) in comparable_figures(engine) {
        let Some(reference_value) = reference_figures.get(&figure) else { continue };
        let ratio = |numerator: Option<f64>, denominator: Option<f64>| match (numerator, denominator) {
            (Some(numerator), Some(denominator)) if denominator > 0.0 => format!("{:.2}×", numerator / denominator),
            _ => "–".to_owned(),
        };
        let _ = writeln!(
            text,
            "| {figure} | {} | {} | {} | {} |",
            format_optional(engine_value, 2),
            format_optional(*reference_value, 2),
            ratio(*reference_value, engine_value),
            ratio(engine_value, *reference_value),
        );
    }
    text
}

fn run_section(text: &mut String, title: &str, result: &RunResult) {
    let _ = writeln!(text, "## {title}: {}\n", result.target);
    let capacity = result.capacity.map_or_else(|| "unknown".to_owned(), |capacity| capacity.to_string());
    let _ = writeln!(
        text,
        "{} agents, capacity {capacity}{}.\n",
        result.agents,
        if result.ingest_only { ", webhooks only (nothing is delivered by design)" } else { "" }
    );
    if !result.steps.is_empty() {
        text.push_str(&steps_table(result));
        text.push('\n');
    }
    if let Some(slo) = &result.slo {
        let best = result.best_rate_under_slo.map_or_else(|| "none".to_owned(), |rate| format!("{rate:.0} msg/s"));
        let _ = writeln!(text, "Highest rate meeting the SLO ({slo}): **{best}**.\n");
    }
    let fairness = &result.fairness;
    if fairness.total > 0 {
        let _ = writeln!(
            text,
            "Assignments per agent: min {}, max {}, mean {:.1}, stddev {:.1} (CV {:.2}).\n",
            fairness.min, fairness.max, fairness.mean, fairness.stddev, fairness.coefficient_of_variation
        );
    }
    if let Some(soak) = &result.soak {
        let _ = writeln!(
            text,
            "Soak at {:.0} msg/s for {:.0} s: RSS {:.0} → {:.0} MiB (peak {:.0}); slope {} MiB/min overall, {} MiB/min over the second half.\n",
            soak.rate,
            soak.duration_s,
            soak.rss_first_mib,
            soak.rss_last_mib,
            soak.rss_peak_mib,
            format_optional(soak.rss_slope_mib_per_min, 2),
            format_optional(soak.rss_slope_second_half_mib_per_min, 2),
        );
        if let (Some((_, first)), Some((_, last))) =
            (soak.conversation_actors_samples.first(), soak.conversation_actors_samples.last())
        {
            let peak = soak.conversation_actors_samples.iter().map(|(_, actors)| *actors).fold(0.0, f64::max);
            let _ = writeln!(
                text,
                "Live conversation actors (the engine's `/metrics`): {first:.0} → {last:.0} (peak {peak:.0}).\n"
            );
        }
    }
    if let Some(recovery) = &result.recovery {
        let _ = writeln!(
            text,
            "Recovery: killed with SIGKILL after {:.1} s; ready again {:.0} ms after restart; {} acknowledged before the kill ({} of them delivered only after the restart); {} webhooks failed while it was down; agents reconnected {} times; **lost {}**.\n",
            recovery.killed_after_s,
            recovery.restart_to_ready_ms,
            recovery.acked_before_kill,
            recovery.delivered_after_restart,
            recovery.failed_while_down,
            recovery.reconnects,
            recovery.lost,
        );
    }
    if let Some(scale) = &result.agents_scale {
        agents_scale_section(text, scale);
    }
    if let Some(conversations) = &result.conversations {
        conversations_section(text, conversations);
    }
    if let Some(outbox) = &result.outbox {
        outbox_section(text, outbox);
    }
    if result.status_webhooks_acked + result.status_webhooks_failed > 0 {
        let _ = writeln!(
            text,
            "Status webhooks from the sink: {} acknowledged, {} failed.\n",
            result.status_webhooks_acked, result.status_webhooks_failed
        );
    }
    let correctness = &result.correctness;
    let _ = writeln!(
        text,
        "Correctness: lost {}, duplicated {}, double-assigned {}, out of order {}, capacity exceeded {} — **{}**.\n",
        correctness.lost.map_or_else(|| "n/a".to_owned(), |lost| lost.to_string()),
        correctness.duplicated,
        correctness.double_assigned,
        correctness.out_of_order,
        correctness.capacity_exceeded,
        if result.passed { "pass" } else { "FAIL" },
    );
    for problem in &result.problems {
        let _ = writeln!(text, "- {problem}");
    }
    if !result.problems.is_empty() {
        text.push('\n');
    }
}

fn format_mib(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |value| format!("{value:.1}"))
}

fn outbox_section(text: &mut String, outbox: &crate::outbox::OutboxResult) {
    let _ = writeln!(
        text,
        "Outbox: one `webhook` connector (`max_in_flight` {}) taking every event type, to a local receiver that checks each signature; load {:.0} msg/s for {:.0} s per phase.\n",
        outbox.connector_in_flight, outbox.load_rate, outbox.load_duration_s
    );
    let _ = writeln!(text, "| outbox figure | value |\n|---|---:|");
    let latency = &outbox.live_latency;
    let rows = [
        ("backlog when the receiver opened (deliveries)", outbox.backlog.to_string()),
        ("drain time (s)", format!("{:.2}", outbox.drain_s)),
        ("**drain: deliveries/s**", format!("**{:.0}**", outbox.drain_deliveries_per_s)),
        ("engine CPU per delivery during the drain (ms)", format_optional(outbox.drain_cpu_ms_per_delivery, 3)),
        ("live: deliveries", outbox.live_deliveries.to_string()),
        (
            "live: event → receiver p50 / p99 / p99.9 / max (ms)",
            format!("{:.0} / {:.0} / {:.0} / {:.0}", latency.p50_ms, latency.p99_ms, latency.p999_ms, latency.max_ms),
        ),
        ("dead deliveries", format_optional(outbox.dead, 0)),
        (
            "bad signatures / duplicates / out of order / malformed",
            format!(
                "{} / {} / {} / {}",
                outbox.faults.bad_signatures,
                outbox.faults.duplicates,
                outbox.faults.out_of_order,
                outbox.faults.malformed
            ),
        ),
    ];
    for (name, value) in rows {
        let _ = writeln!(text, "| {name} | {value} |");
    }
    text.push('\n');
}

fn agents_scale_section(text: &mut String, scale: &AgentsScaleResult) {
    let _ = writeln!(text, "| agents figure | value |\n|---|---:|");
    let rows: Vec<(String, String)> = vec![
        ("agents connected and online".to_owned(), scale.agents.to_string()),
        (
            "engine spawn → ready with these agents configured (ms)".to_owned(),
            format_optional(scale.engine_startup_ms, 0),
        ),
        (
            "connect + set online, all agents (s)".to_owned(),
            format!(
                "{:.1} ({} handshakes at a time)",
                scale.connect_s,
                scale.connect_concurrency.map_or_else(|| "all".to_owned(), |n| n.to_string())
            ),
        ),
        ("engine RSS before connecting (MiB)".to_owned(), format_mib(scale.engine_rss_before_mib)),
        (
            format!("engine RSS connected, idle {:.0} s (MiB)", scale.idle_settle_s),
            format_mib(scale.engine_rss_connected_mib),
        ),
        (
            "**engine bytes per connection**".to_owned(),
            format!("**{}**", format_optional(scale.engine_bytes_per_connection, 0)),
        ),
        ("engine `ws_sessions` gauge".to_owned(), format_optional(scale.ws_sessions_gauge, 0)),
        ("engine RSS after the load (MiB)".to_owned(), format_mib(scale.engine_rss_after_load_mib)),
        (
            format!("engine RSS after all disconnected, idle {:.0} s (MiB)", scale.idle_settle_s),
            format_mib(scale.engine_rss_disconnected_mib),
        ),
        ("harness bytes per connection".to_owned(), format_optional(scale.harness_bytes_per_connection, 0)),
        (
            "harness open-files limit".to_owned(),
            scale.harness_fd_limit.map_or_else(|| "–".to_owned(), |n| n.to_string()),
        ),
        ("agents assigned ≥ 1 conversation during the load".to_owned(), scale.agents_reached.to_string()),
    ];
    for (name, value) in rows {
        let _ = writeln!(text, "| {name} | {value} |");
    }
    text.push('\n');
}

fn conversations_section(text: &mut String, result: &ConversationsResult) {
    let _ = writeln!(text, "| conversations figure | value |\n|---|---:|");
    let rows: Vec<(String, String)> = vec![
        (
            "stored conversations (opened / target)".to_owned(),
            format!(
                "{} / {}{}",
                result.stored_opened,
                result.stored_target,
                if result.all_open { ", all OPEN" } else { "" }
            ),
        ),
        (
            "populate: time, conversations/s".to_owned(),
            format!("{:.1} s, {:.0}/s", result.populate_s, result.populate_conversations_per_s),
        ),
        (
            format!(
                "populate: {} first messages per webhook, {} in flight; ack ms p50/p99/p999/max",
                result.messages_per_payload, result.concurrency
            ),
            format_latency(&result.populate_ack_latency),
        ),
        ("webhook retries / failures".to_owned(), format!("{} / {}", result.webhook_retries, result.webhook_failures)),
        (
            "RSS after populate (MiB), live conversation actors".to_owned(),
            format!(
                "{}, {}",
                format_mib(result.rss_after_populate_mib),
                format_optional(result.actors_after_populate, 0)
            ),
        ),
        (
            format!("after {:.0} s waiting for passivation: RSS (MiB), actors", result.passivation_wait_s),
            format!(
                "{}, {}",
                format_mib(result.rss_before_active_mib),
                format_optional(result.actors_before_active, 0)
            ),
        ),
        (
            format!(
                "**active: {} of them messaged again** ({} applied, {:.1} s): RSS (MiB), actors",
                result.active_target, result.active_applied, result.active_s
            ),
            format!("**{}**, {}", format_mib(result.rss_active_mib), format_optional(result.actors_active, 0)),
        ),
        ("store file (MiB)".to_owned(), format_mib(result.store_file_mib)),
        (format!("stop ({})", result.stop_signal), format!("{:.0} ms", result.stop_ms)),
        (
            "**restart: spawn → /readyz 200 (ms)**".to_owned(),
            format!("**{}**", format_optional(result.restart_to_ready_ms, 0)),
        ),
        (
            "after ready: RSS (MiB), actors, team queue depth".to_owned(),
            format!(
                "{}, {}, {}",
                format_mib(result.rss_after_ready_mib),
                format_optional(result.actors_after_ready, 0),
                format_optional(result.queue_depth_after_ready, 0)
            ),
        ),
        (
            "after ready: until the team queue holds every open conversation again (ms)".to_owned(),
            match result.queue_rebuilt_after_ready_ms {
                Some(ms) => format!("{ms:.0}"),
                None => format!("not within the wait (last seen {})", format_optional(result.queue_depth_last_seen, 0)),
            },
        ),
        ("engine CPU s spent starting".to_owned(), format_optional(result.engine_cpu_s_startup, 1)),
    ];
    for (name, value) in rows {
        let _ = writeln!(text, "| {name} | {value} |");
    }
    text.push('\n');
}

pub fn render_markdown(report: &Report) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# switchboard-bench: {}\n", report.scenario);
    let machine = &report.machine;
    let _ = writeln!(
        text,
        "Machine: {} cores, {}, {} RAM, Linux {}; load average {} at the start. Load generator on the same machine.\n",
        machine.cores, machine.cpu_model, machine.mem, machine.kernel, machine.load_average
    );
    let _ = writeln!(text, "Command: `{}`\n", report.command);
    let _ = writeln!(
        text,
        "Latencies are measured from each message's scheduled time (open loop); end-to-end = scheduled send → the agent receives it.\n"
    );
    run_section(&mut text, "Engine", &report.engine);
    for (name, reference) in &report.references {
        run_section(&mut text, &format!("Reference `{name}`"), reference);
        let _ = writeln!(text, "### `{name}` beside the engine\n");
        text.push_str(&reference_table(&report.engine, name, reference));
        text.push('\n');
    }
    for note in &report.notes {
        let _ = writeln!(text, "> {note}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: f64, acked_per_s: f64, p99: f64) -> StepResult {
        StepResult {
            label: format!("{rate}"),
            target_rate: rate,
            acked_per_s,
            end_to_end_latency: LatencySummary { count: 10, p99_ms: p99, ..Default::default() },
            correctness: Correctness { lost: Some(0), ..Default::default() },
            meets_slo: true,
            ..Default::default()
        }
    }

    #[test]
    fn references_print_as_ratios_to_the_engine() {
        let engine = RunResult {
            target: "engine".to_owned(),
            steps: vec![step(1000.0, 1000.0, 4.0), step(2000.0, 2000.0, 8.0)],
            best_rate_under_slo: Some(2000.0),
            passed: true,
            ..Default::default()
        };
        let baseline = RunResult {
            target: "baseline".to_owned(),
            steps: vec![step(1000.0, 500.0, 40.0)],
            best_rate_under_slo: Some(1000.0),
            ..Default::default()
        };
        let table = reference_table(&engine, "baseline", &baseline);
        assert!(table.contains("| best rate meeting the SLO (msg/s) | 2000.00 | 1000.00 | 0.50× | 2.00× |"), "{table}");
        assert!(table.contains("| p99 end-to-end ms at 1k/s | 4.00 | 40.00 | 10.00× | 0.10× |"), "{table}");
        assert!(!table.contains("at 2k/s"), "figures only the engine has are left out: {table}");

        let report = Report {
            scenario: "throughput".to_owned(),
            machine: MachineInfo::default(),
            command: "switchboard-bench throughput".to_owned(),
            started_at_unix_s: 0,
            engine,
            references: vec![("baseline".to_owned(), baseline)],
            notes: vec![],
        };
        let markdown = render_markdown(&report);
        assert!(markdown.contains("### `baseline` beside the engine"));
        let json = serde_json::to_string(&report).expect("serialises");
        let back: Report = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back.references[0].0, "baseline");
    }

    #[test]
    fn correctness_adds_up_and_counts_violations() {
        let mut total = Correctness::default();
        assert_eq!(total.lost, None);
        total.add(&Correctness { lost: Some(2), duplicated: 1, ..Default::default() });
        total.add(&Correctness { lost: None, out_of_order: 3, ..Default::default() });
        assert_eq!(total.lost, Some(2));
        assert_eq!(total.violations(), 6);
    }
}
