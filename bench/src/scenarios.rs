//! Steps and scenarios.
//!
//! A `LoadRun` is one target under load: its agents, its sender, its
//! workload planner and its ledger. A *step* sends `rate × duration` messages
//! on schedule, waits for the answers, then drains (waits until every
//! acknowledged message has reached an agent, or the drain timeout), and turns
//! what happened into a `StepResult`. Scenarios are sequences of steps:
//! - `smoke`: one short, slow step; passes when every correctness counter is 0
//!   and something was delivered.
//! - `throughput`: steps of rising rate until one misses the SLO (p99
//!   end-to-end under 50 ms, nothing lost or failed); reports the best.
//! - `soak`: one long step at a fixed rate with the engine's RSS sampled every
//!   second; reports its slope.
//! - `recovery`: one step during which the engine is killed with SIGKILL and
//!   restarted on the same data; every message acknowledged (before or after)
//!   must still be delivered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::agents::{AgentFleet, DOUBLE_ASSIGNMENT_GRACE, FleetSettings, FleetSnapshot};
use crate::engine_process::{EngineProcess, ProcessSample, sample_process};
use crate::ledger::{Ledger, PhaseLedger};
use crate::load::WebhookSender;
use crate::metrics::{Fairness, LatencySummary, slope};
use crate::report::{
    AgentsScaleResult, Correctness, ProcessFigures, RecoveryResult, RunResult, SoakResult, StepResult, mib,
};
use crate::workload::{CustomerPlanner, WebhookBuilder, WorkloadShape};
use sim::sink::SinkCounters;

/// A server to drive.
#[derive(Clone, Debug)]
pub struct Target {
    pub description: String,
    pub base_url: String,
    pub app_secret: String,
    pub token_prefix: String,
    /// The server's process, when the harness may read its `/proc` figures.
    pub pid: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// 0 = webhooks only (a target that delivers nothing, e.g. the ceiling).
    pub agents: usize,
    /// Per-agent capacity, when known: enables the capacity check.
    pub capacity: Option<u32>,
    pub think_time: Duration,
    /// Agents close a conversation whose customer has been quiet this long.
    pub idle_close: Duration,
    pub shape: WorkloadShape,
    pub drain_timeout: Duration,
    pub max_in_flight: usize,
    pub progress: bool,
    pub seed: u64,
    /// A step meets the SLO when its p99 end-to-end latency is under this
    /// (p99 acknowledgement latency for ingest-only targets).
    pub slo_p99: Duration,
    pub pause_between_steps: Duration,
    /// At most this many agent handshakes at once (`None`: all at once).
    pub connect_concurrency: Option<usize>,
    /// How long every agent has to come online.
    pub online_timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            agents: 50,
            capacity: None,
            think_time: Duration::from_millis(200),
            idle_close: Duration::from_secs(5),
            shape: WorkloadShape::default(),
            drain_timeout: Duration::from_secs(30),
            max_in_flight: 10_000,
            progress: false,
            seed: 1,
            slo_p99: Duration::from_millis(50),
            pause_between_steps: Duration::from_secs(1),
            connect_concurrency: None,
            online_timeout: Duration::from_secs(30),
        }
    }
}

impl RunOptions {
    pub fn ingest_only(&self) -> bool {
        self.agents == 0
    }

    pub fn slo_description(&self) -> String {
        let latency = if self.ingest_only() { "acknowledgement" } else { "end-to-end" };
        format!("p99 {latency} < {} ms, nothing lost or failed", self.slo_p99.as_millis())
    }
}

/// Samples a process's RSS every second, keeping the samples and the peak.
struct RssMonitor {
    samples: Arc<std::sync::Mutex<Vec<(Instant, u64)>>>,
    peak_since_reset: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssMonitor {
    fn start(pid: u32) -> RssMonitor {
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let peak_since_reset = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (task_samples, task_peak, task_stop) = (samples.clone(), peak_since_reset.clone(), stop.clone());
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !task_stop.load(Ordering::Relaxed) {
                interval.tick().await;
                let Some(sample) = sample_process(Some(pid)) else { break };
                task_peak.fetch_max(sample.rss_bytes, Ordering::Relaxed);
                task_samples
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push((Instant::now(), sample.rss_bytes));
            }
        });
        RssMonitor { samples, peak_since_reset, stop }
    }

    fn reset_peak(&self, current: u64) {
        self.peak_since_reset.store(current, Ordering::Relaxed);
    }

    fn peak(&self) -> u64 {
        self.peak_since_reset.load(Ordering::Relaxed)
    }

    fn samples_between(&self, from: Instant, to: Instant) -> Vec<(Instant, u64)> {
        let samples = self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        samples.iter().copied().filter(|(at, _)| *at >= from && *at <= to).collect()
    }

    fn all_samples(&self) -> Vec<(Instant, u64)> {
        self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl Drop for RssMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One target under load.
pub struct LoadRun {
    target: Target,
    options: RunOptions,
    ledger: Arc<Ledger>,
    fleet: Option<AgentFleet>,
    sender: WebhookSender,
    planner: CustomerPlanner,
    monitor: Option<RssMonitor>,
    sink: Arc<SinkCounters>,
    fleet_at_start: FleetSnapshot,
    steps: Vec<StepResult>,
    problems: Vec<String>,
}

impl LoadRun {
    /// Connects the agents (and waits until all are online) and prepares the
    /// workload for rates up to `max_rate`.
    pub async fn start(
        target: Target,
        options: RunOptions,
        sink: Arc<SinkCounters>,
        max_rate: f64,
    ) -> anyhow::Result<LoadRun> {
        let run_tag = format!("{:08x}", rand::random::<u32>());
        let builder = WebhookBuilder::new(&run_tag);
        let ledger = Arc::new(Ledger::new(builder.clone()));
        let sender = WebhookSender::new(&target.base_url, &target.app_secret, builder, options.max_in_flight)?;
        let planner = CustomerPlanner::new(options.shape.clone(), max_rate, options.seed);
        let fleet = if options.ingest_only() {
            None
        } else {
            let fleet = AgentFleet::start(
                FleetSettings {
                    base_url: target.base_url.clone(),
                    token_prefix: target.token_prefix.clone(),
                    agents: options.agents,
                    capacity: options.capacity,
                    think_time: options.think_time,
                    idle_close: options.idle_close,
                    connect_concurrency: options.connect_concurrency,
                },
                ledger.clone(),
            );
            fleet.wait_until_online(options.online_timeout).await?;
            Some(fleet)
        };
        let fleet_at_start = fleet.as_ref().map(AgentFleet::snapshot).unwrap_or_default();
        let monitor = target.pid.map(RssMonitor::start);
        Ok(LoadRun {
            target,
            options,
            ledger,
            fleet,
            sender,
            planner,
            monitor,
            sink,
            fleet_at_start,
            steps: Vec::new(),
            problems: Vec::new(),
        })
    }

    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    pub fn steps(&self) -> &[StepResult] {
        &self.steps
    }

    /// Stops reading the target's `/proc` (its pid changes on a restart).
    pub fn forget_process(&mut self) {
        self.target.pid = None;
        self.monitor = None;
    }

    fn fleet_snapshot(&self) -> FleetSnapshot {
        self.fleet.as_ref().map(AgentFleet::snapshot).unwrap_or_default()
    }

    /// The phase about to run (for scenarios that watch it from beside).
    fn new_phase(&self, label: &str, rate: f64, duration: Duration) -> Arc<PhaseLedger> {
        let planned = ((rate * duration.as_secs_f64()).round() as u64).max(1);
        self.ledger.new_phase(label, rate, planned)
    }

    /// Sends one step on schedule, drains, and measures it.
    pub async fn step(&mut self, label: &str, rate: f64, duration: Duration) -> StepResult {
        let phase = self.new_phase(label, rate, duration);
        self.run_phase(phase, duration).await
    }

    async fn run_phase(&mut self, phase: Arc<PhaseLedger>, duration: Duration) -> StepResult {
        let fleet_before = self.fleet_snapshot();
        let sends_before = self.sink.sends.load(Ordering::Relaxed);
        let process_before = self.target.pid.and_then(|pid| sample_process(Some(pid)));
        let harness_before = sample_process(None);
        if let (Some(monitor), Some(before)) = (&self.monitor, process_before) {
            monitor.reset_peak(before.rss_bytes);
        }
        let progress = StepProgress::start(&phase, self.options.progress, self.fleet.is_some());

        self.sender.run_phase(&phase, &mut self.planner).await;
        let answers_in = self.sender.wait_idle(Duration::from_secs(60)).await;
        if !answers_in {
            self.problems.push(format!("{}: some webhooks were still unanswered after 60 s", phase.label));
        }
        let drain_started = Instant::now();
        let drained = match &self.fleet {
            None => true,
            Some(_) => {
                progress.draining();
                loop {
                    if phase.fully_delivered() {
                        break true;
                    }
                    if drain_started.elapsed() >= self.options.drain_timeout {
                        break false;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let drain_s = drain_started.elapsed().as_secs_f64();
        progress.finish();
        if let Some(fleet) = &self.fleet {
            fleet.settle();
        }
        let fleet_delta = self.fleet_snapshot().since(&fleet_before);
        let process_after = self.target.pid.and_then(|pid| sample_process(Some(pid)));
        let harness_after = sample_process(None);

        let counters = &phase.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let acked = load(&counters.acked);
        let delivered = load(&counters.delivered);
        let seconds = duration.as_secs_f64();
        let acked_window = seconds.max(load(&counters.last_ack_us) as f64 / 1e6);
        let delivered_window = seconds.max(load(&counters.last_delivery_us) as f64 / 1e6);
        let (lost, delivered_not_acked) = phase.scan();
        let ingest_only = self.fleet.is_none();
        let correctness = Correctness {
            lost: (!ingest_only).then_some(lost),
            duplicated: load(&counters.duplicated),
            double_assigned: fleet_delta.double_assigned,
            out_of_order: load(&counters.out_of_order),
            capacity_exceeded: fleet_delta.capacity_exceeded,
        };
        let ack_latency = LatencySummary::from_micros(&phase.ack_latency());
        let end_to_end_latency = LatencySummary::from_micros(&phase.end_to_end_latency());
        let conversations_assigned = fleet_delta.total_assignments();
        let engine_process = match (process_before, process_after) {
            (Some(before), Some(after)) => Some(process_figures(
                before,
                after,
                self.monitor.as_ref().map_or(after.rss_bytes, RssMonitor::peak).max(after.rss_bytes),
                acked,
                conversations_assigned,
            )),
            _ => None,
        };
        let failed = load(&counters.failed);
        let slo_latency = if ingest_only { &ack_latency } else { &end_to_end_latency };
        let slo_ms = self.options.slo_p99.as_secs_f64() * 1000.0;
        let meets_slo = correctness.violations() == 0
            && failed == 0
            && drained
            && acked == phase.planned
            && slo_latency.count > 0
            && slo_latency.p99_ms < slo_ms;
        let lost_examples =
            phase.lost_examples(5).into_iter().map(|index| format!("phase {} message {index}", phase.id)).collect();
        if !drained {
            self.problems.push(format!(
                "{}: the drain timed out after {:.0} s with acknowledged messages still undelivered",
                phase.label, drain_s
            ));
        }
        let result = StepResult {
            label: phase.label.clone(),
            target_rate: phase.rate,
            duration_s: seconds,
            planned: phase.planned,
            sent: load(&counters.sent),
            acked,
            failed,
            failures: phase.failures(),
            acked_per_s: acked as f64 / acked_window,
            delivered,
            delivered_per_s: delivered as f64 / delivered_window,
            delivered_not_acked,
            ack_latency,
            end_to_end_latency,
            max_sender_lag_ms: load(&counters.max_sender_lag_us) as f64 / 1000.0,
            conversations_assigned,
            fairness: Fairness::of(&fleet_delta.assignments),
            graph_sends: self.sink.sends.load(Ordering::Relaxed) - sends_before,
            replies_ok: fleet_delta.replies_ok,
            closes_ok: fleet_delta.closes_ok,
            correctness,
            seq_gaps: fleet_delta.seq_gaps,
            reconnects: fleet_delta.reconnects,
            agent_errors: fleet_delta.errors_by_code,
            drained,
            drain_s,
            engine_process,
            harness_cpu_seconds: match (harness_before, harness_after) {
                (Some(before), Some(after)) => after.cpu_seconds - before.cpu_seconds,
                _ => 0.0,
            },
            meets_slo,
            lost_examples,
        };
        self.steps.push(result.clone());
        result
    }

    /// Stops the agents and sums up.
    pub async fn finish(mut self, scenario_slo: Option<String>) -> RunResult {
        let mut final_snapshot = self.fleet_at_start.clone();
        let mut extra_double_assigned = 0;
        if let Some(fleet) = self.fleet.take() {
            let before = fleet.snapshot();
            // Give crossing assigned/unassigned events their grace, then count.
            tokio::time::sleep(DOUBLE_ASSIGNMENT_GRACE).await;
            fleet.settle();
            final_snapshot = fleet.stop().await;
            extra_double_assigned = final_snapshot.double_assigned - before.double_assigned;
        }
        let whole_run = final_snapshot.since(&self.fleet_at_start);
        let mut correctness = Correctness { lost: (!self.options.ingest_only()).then_some(0), ..Default::default() };
        for step in &self.steps {
            correctness.add(&step.correctness);
        }
        correctness.double_assigned += extra_double_assigned;
        let delivered: u64 = self.steps.iter().map(|step| step.delivered).sum();
        let mut problems = std::mem::take(&mut self.problems);
        if !self.options.ingest_only() && delivered == 0 {
            problems.push("nothing was delivered to any agent".to_owned());
        }
        for step in &self.steps {
            if step.failed > 0 {
                problems.push(format!("{}: {} webhooks failed ({:?})", step.label, step.failed, step.failures));
            }
            if step.seq_gaps > 0 {
                problems.push(format!("{}: agents saw {} gaps in their event seq", step.label, step.seq_gaps));
            }
            if step.max_sender_lag_ms > 20.0 {
                problems.push(format!(
                    "{}: the harness fell {:.0} ms behind its schedule (it shares the machine; latencies include that)",
                    step.label, step.max_sender_lag_ms
                ));
            }
        }
        if whole_run.undecodable_frames > 0 {
            problems.push(format!("{} frames the harness could not read", whole_run.undecodable_frames));
        }
        if whole_run.foreign_messages > 0 {
            problems.push(format!("{} delivered messages were not this run's", whole_run.foreign_messages));
        }
        let (engine_peak_rss_mib, engine_final_rss_mib) = match &self.monitor {
            Some(monitor) => {
                let samples = monitor.all_samples();
                let peak = samples.iter().map(|(_, rss)| *rss).max();
                let last = self.target.pid.and_then(|pid| sample_process(Some(pid))).map(|sample| sample.rss_bytes);
                (peak.map(mib), last.or(samples.last().map(|(_, rss)| *rss)).map(mib))
            }
            None => (None, None),
        };
        let passed = correctness.violations() == 0 && (self.options.ingest_only() || delivered > 0);
        RunResult {
            target: self.target.description.clone(),
            ingest_only: self.options.ingest_only(),
            agents: self.options.agents,
            capacity: self.options.capacity,
            steps: std::mem::take(&mut self.steps),
            best_rate_under_slo: None,
            slo: scenario_slo,
            fairness: Fairness::of(&whole_run.assignments),
            correctness,
            soak: None,
            agents_scale: None,
            conversations: None,
            outbox: None,
            recovery: None,
            engine_peak_rss_mib,
            engine_final_rss_mib,
            status_webhooks_acked: self.sink.status_webhooks_acked.load(Ordering::Relaxed),
            status_webhooks_failed: self.sink.status_webhooks_failed.load(Ordering::Relaxed),
            passed,
            problems,
        }
    }
}

fn process_figures(
    before: ProcessSample,
    after: ProcessSample,
    peak_rss: u64,
    acked: u64,
    conversations: u64,
) -> ProcessFigures {
    let cpu_seconds = after.cpu_seconds - before.cpu_seconds;
    let rss_growth = after.rss_bytes as f64 - before.rss_bytes as f64;
    ProcessFigures {
        cpu_seconds,
        cpu_seconds_per_1000_messages: (acked > 0).then(|| cpu_seconds / acked as f64 * 1000.0),
        rss_start_mib: mib(before.rss_bytes),
        rss_end_mib: mib(after.rss_bytes),
        rss_peak_mib: mib(peak_rss),
        bytes_per_conversation: (conversations > 0).then(|| rss_growth / conversations as f64),
    }
}

/// The progress bar of one step (stderr; hidden unless asked for and a TTY).
struct StepProgress {
    bar: ProgressBar,
    draining: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl StepProgress {
    fn start(phase: &Arc<PhaseLedger>, visible: bool, delivers: bool) -> StepProgress {
        let bar = if visible {
            ProgressBar::with_draw_target(Some(phase.planned), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {elapsed} {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(format!("{} @{:.0}/s", phase.label, phase.rate));
        let draining = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        if visible {
            let (task_bar, task_phase, task_draining, task_stop) =
                (bar.clone(), phase.clone(), draining.clone(), stop.clone());
            tokio::spawn(async move {
                while !task_stop.load(Ordering::Relaxed) {
                    let counters = &task_phase.counters;
                    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
                    task_bar.set_position(load(&counters.sent));
                    let delivered = if delivers {
                        format!(" delivered {}", load(&counters.acked_and_delivered))
                    } else {
                        String::new()
                    };
                    let state = if task_draining.load(Ordering::Relaxed) { "draining: " } else { "" };
                    task_bar.set_message(format!(
                        "{state}acked {}{delivered} failed {}",
                        load(&counters.acked),
                        load(&counters.failed)
                    ));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
        StepProgress { bar, draining, stop }
    }

    fn draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.bar.finish_and_clear();
    }
}

// ---------------------------------------------------------------------------
// Scenarios

/// A few seconds at a low rate; passes on zero correctness violations and at
/// least one delivery. No timing is judged.
pub async fn smoke(mut run: LoadRun, rate: f64, duration: Duration) -> RunResult {
    run.step("smoke", rate, duration).await;
    run.finish(None).await
}

/// Steps of rising rate (`rates`, ascending); stops after the first step that
/// misses the SLO unless `keep_going`.
pub async fn throughput(mut run: LoadRun, rates: &[f64], duration: Duration, keep_going: bool) -> RunResult {
    let slo = run.options().slo_description();
    let pause = run.options().pause_between_steps;
    let mut best: Option<f64> = None;
    for (position, &rate) in rates.iter().enumerate() {
        if position > 0 {
            tokio::time::sleep(pause).await;
        }
        let step = run.step(&format!("step {}", position + 1), rate, duration).await;
        if step.meets_slo {
            best = Some(best.map_or(rate, |best: f64| best.max(rate)));
        } else if !keep_going {
            break;
        }
    }
    let mut result = run.finish(Some(slo)).await;
    result.best_rate_under_slo = best;
    result
}

/// A fixed rate for a long time with RSS sampled every second.
pub async fn soak(mut run: LoadRun, rate: f64, duration: Duration) -> RunResult {
    let started = Instant::now();
    let gauges = GaugeSampler::start(&run.target.base_url, CONVERSATION_ACTORS_GAUGE);
    run.step("soak", rate, duration).await;
    let ended = Instant::now();
    let conversation_actors = gauges.finish(started);
    let samples = run.monitor.as_ref().map(|monitor| monitor.samples_between(started, ended)).unwrap_or_default();
    let points: Vec<(f64, f64)> =
        samples.iter().map(|(at, rss)| (at.duration_since(started).as_secs_f64(), mib(*rss))).collect();
    let second_half: Vec<(f64, f64)> =
        points.iter().copied().filter(|(seconds, _)| *seconds >= duration.as_secs_f64() / 2.0).collect();
    let soak = SoakResult {
        rate,
        duration_s: duration.as_secs_f64(),
        rss_first_mib: points.first().map_or(0.0, |(_, rss)| *rss),
        rss_last_mib: points.last().map_or(0.0, |(_, rss)| *rss),
        rss_peak_mib: points.iter().map(|(_, rss)| *rss).fold(0.0, f64::max),
        rss_slope_mib_per_min: slope(&points).map(|per_second| per_second * 60.0),
        rss_slope_second_half_mib_per_min: slope(&second_half).map(|per_second| per_second * 60.0),
        rss_samples: points,
        conversation_actors_samples: conversation_actors,
    };
    let mut result = run.finish(None).await;
    result.soak = Some(soak);
    result
}

/// The engine's own count of live conversation actors (passivation at work).
const CONVERSATION_ACTORS_GAUGE: &str = "switchboard_conversation_actors";

/// Reads one gauge from the target's public `/metrics` every second, when it
/// has one (a reference may not: then nothing is recorded).
struct GaugeSampler {
    samples: Arc<std::sync::Mutex<Vec<(Instant, f64)>>>,
    stop: Arc<AtomicBool>,
}

impl GaugeSampler {
    fn start(base_url: &str, gauge: &'static str) -> GaugeSampler {
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let url = format!("{}/metrics", base_url.trim_end_matches('/'));
        let (task_samples, task_stop) = (samples.clone(), stop.clone());
        tokio::spawn(async move {
            let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(2)).build() else { return };
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !task_stop.load(Ordering::Relaxed) {
                interval.tick().await;
                let Ok(response) = client.get(&url).send().await else { continue };
                if !response.status().is_success() {
                    return;
                }
                let Ok(text) = response.text().await else { continue };
                if let Some(value) = gauge_value(&text, gauge) {
                    task_samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((Instant::now(), value));
                }
            }
        });
        GaugeSampler { samples, stop }
    }

    fn finish(self, since: Instant) -> Vec<(f64, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        samples.iter().map(|(at, value)| (at.saturating_duration_since(since).as_secs_f64(), *value)).collect()
    }
}

/// The value of an unlabelled gauge in a Prometheus text exposition.
fn gauge_value(exposition: &str, gauge: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(gauge)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Reads one metric line (`name` or `name{labels}` exactly as exposed) from
/// the target's public `/metrics`; `None` when it is not public or absent.
pub async fn read_metric(base_url: &str, metric: &str) -> Option<f64> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().ok()?;
    let url = format!("{}/metrics", base_url.trim_end_matches('/'));
    let response = client.get(&url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    gauge_value(&response.text().await.ok()?, metric)
}

/// RSS growth spread over `connections`, in bytes.
pub fn bytes_per_connection(before: Option<u64>, after: Option<u64>, connections: usize) -> Option<f64> {
    match (before, after) {
        (Some(before), Some(after)) if connections > 0 => Some((after as f64 - before as f64) / connections as f64),
        _ => None,
    }
}

/// Agents whose assignment count grew between two snapshots.
pub fn agents_reached(before: &[u64], after: &[u64]) -> usize {
    after.iter().enumerate().filter(|(index, now)| **now > before.get(*index).copied().unwrap_or(0)).count()
}

/// What the `agents` scenario needs besides the run options.
#[derive(Clone, Debug)]
pub struct AgentsScalePlan {
    pub rate: f64,
    pub duration: Duration,
    /// Idle time after every agent is online, before memory is read.
    pub idle_settle: Duration,
    /// Spawn → ready of the engine with these agents configured, if the harness started it.
    pub engine_startup: Option<Duration>,
    pub harness_fd_limit: Option<u64>,
}

/// Many agents (`options.agents`, connected `options.connect_concurrency` at
/// a time): the engine's RSS before connecting and once all are online and
/// idle gives its bytes per connection; then a modest load pushes to them and
/// the usual counters and latencies are measured.
pub async fn agents_scale(
    target: Target,
    options: RunOptions,
    sink: Arc<SinkCounters>,
    plan: AgentsScalePlan,
) -> anyhow::Result<RunResult> {
    let rss = |pid: Option<u32>| sample_process(pid).map(|sample| sample.rss_bytes);
    let engine_pid = target.pid;
    let base_url = target.base_url.clone();
    let agents = options.agents;
    let connect_concurrency = options.connect_concurrency;
    let engine_before = engine_pid.and_then(|pid| rss(Some(pid)));
    let harness_before = rss(None);
    let connecting = Instant::now();
    let mut run = LoadRun::start(target, options, sink, plan.rate).await?;
    let connect_s = connecting.elapsed().as_secs_f64();
    tokio::time::sleep(plan.idle_settle).await;
    let engine_connected = engine_pid.and_then(|pid| rss(Some(pid)));
    let harness_connected = rss(None);
    let ws_sessions_gauge = read_metric(&base_url, "switchboard_ws_sessions").await;
    let before_load = run.fleet_snapshot();
    run.step("agents", plan.rate, plan.duration).await;
    let after_load = run.fleet_snapshot();
    let engine_after_load = engine_pid.and_then(|pid| rss(Some(pid)));
    let mut scale = AgentsScaleResult {
        agents,
        engine_startup_ms: plan.engine_startup.map(|startup| startup.as_secs_f64() * 1000.0),
        connect_s,
        connect_concurrency,
        harness_fd_limit: plan.harness_fd_limit,
        engine_rss_before_mib: engine_before.map(mib),
        engine_rss_connected_mib: engine_connected.map(mib),
        engine_bytes_per_connection: bytes_per_connection(engine_before, engine_connected, agents),
        harness_rss_before_mib: harness_before.map(mib),
        harness_rss_connected_mib: harness_connected.map(mib),
        harness_bytes_per_connection: bytes_per_connection(harness_before, harness_connected, agents),
        idle_settle_s: plan.idle_settle.as_secs_f64(),
        ws_sessions_gauge,
        agents_reached: agents_reached(&before_load.assignments, &after_load.assignments),
        engine_rss_after_load_mib: engine_after_load.map(mib),
        engine_rss_disconnected_mib: None,
    };
    let mut result = run.finish(None).await;
    // Every session is closed now: what stays is not per connection (the
    // store's cache, the allocator's retained pages, agent actors).
    tokio::time::sleep(plan.idle_settle).await;
    scale.engine_rss_disconnected_mib = engine_pid.and_then(|pid| rss(Some(pid))).map(mib);
    result.agents_scale = Some(scale);
    Ok(result)
}

/// Load at `rate` for `duration`; after `kill_after` the engine is killed
/// with SIGKILL and restarted on the same data directory and address.
pub async fn recovery(
    mut run: LoadRun,
    engine: &mut EngineProcess,
    rate: f64,
    duration: Duration,
    kill_after: Duration,
    ready_timeout: Duration,
) -> anyhow::Result<RunResult> {
    run.forget_process();
    let phase = run.new_phase("recovery", rate, duration);
    let watched = phase.clone();
    let killer = async move {
        tokio::time::sleep(kill_after).await;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let killed_at = Instant::now();
        engine.kill_hard().await?;
        let acked_before_kill = load(&watched.counters.acked);
        let undelivered_at_kill = acked_before_kill.saturating_sub(load(&watched.counters.acked_and_delivered));
        let failed_at_kill = load(&watched.counters.failed);
        let restart_to_ready = engine.restart(ready_timeout).await?;
        let failed_while_down = load(&watched.counters.failed) - failed_at_kill;
        let killed_after_s = watched.start().map_or(0.0, |start| killed_at.duration_since(start).as_secs_f64());
        anyhow::Ok((killed_after_s, restart_to_ready, acked_before_kill, undelivered_at_kill, failed_while_down))
    };
    let (step, killed) = tokio::join!(run.run_phase(phase, duration), killer);
    let (killed_after_s, restart_to_ready, acked_before_kill, undelivered_at_kill, failed_while_down) = killed?;
    let recovery = RecoveryResult {
        killed_after_s,
        restart_to_ready_ms: restart_to_ready.as_secs_f64() * 1000.0,
        acked_before_kill,
        delivered_after_restart: undelivered_at_kill.saturating_sub(step.correctness.lost.unwrap_or(0)),
        failed_while_down,
        lost: step.correctness.lost.unwrap_or(0),
        reconnects: step.reconnects,
    };
    let mut result = run.finish(None).await;
    result.recovery = Some(recovery);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_unlabelled_gauge() {
        let exposition = "# TYPE switchboard_conversation_actors gauge\nswitchboard_conversation_actors_total 9\nswitchboard_conversation_actors 42\n";
        assert_eq!(gauge_value(exposition, "switchboard_conversation_actors"), Some(42.0));
        assert_eq!(gauge_value(exposition, "switchboard_ws_sessions"), None);
        let labelled =
            "switchboard_messages_total{direction=\"in\"} 7\nswitchboard_messages_total{direction=\"out\"} 3\n";
        assert_eq!(gauge_value(labelled, "switchboard_messages_total{direction=\"out\"}"), Some(3.0));
    }

    #[test]
    fn agents_scenario_bookkeeping() {
        assert_eq!(bytes_per_connection(Some(1_000), Some(101_000), 10), Some(10_000.0));
        assert_eq!(bytes_per_connection(Some(1_000), None, 10), None);
        assert_eq!(bytes_per_connection(Some(1_000), Some(2_000), 0), None);
        assert_eq!(agents_reached(&[0, 1, 2], &[1, 1, 5]), 2);
        assert_eq!(agents_reached(&[], &[0, 3]), 1);
    }
}
