//! The command line: `switchboard-bench smoke|throughput|soak|recovery|agents|conversations|outbox|merge`.
//!
//! Without `--target`, the harness starts the engine itself (`switchboard
//! serve` next to this executable, or `--engine-bin`) with a configuration it
//! writes into a fresh directory, and reads the engine's CPU time and memory
//! from `/proc`. With `--target URL` it drives a server already running, which
//! must accept the harness's app secret and agent tokens
//! (`{prefix}{i}-token` for agents `bench-agent-{i}`, i = 1..=N) and send to
//! the harness's Graph API sink (`--sink-listen` fixes its address).
//! `--reference NAME=URL` drives other servers the same way after the engine
//! and prints them as ratios to the engine's figures; `--ingest-reference`
//! does so with webhooks only (for servers that deliver nothing).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::engine_process::{EngineConfigOptions, EngineProcess, default_engine_binary, render_engine_config_with};
use crate::report::{MachineInfo, Report, RunResult, render_markdown};
use crate::scenarios::{self, LoadRun, RunOptions, Target};
use crate::workload::WorkloadShape;
use sim::sink::{GraphSink, StatusCallbacks};

#[derive(Parser)]
#[command(
    name = "switchboard-bench",
    version,
    about = "Open-loop load harness for Switchboard: signed webhooks in, WebSocket agents, a Graph API sink"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// A few seconds at a low rate (default 200 msg/s for 3 s, 5 agents);
    /// exits non-zero if any correctness counter is not 0 or nothing was delivered.
    Smoke(#[command(flatten)] CommonOptions),
    /// Rising rates, each for --duration seconds (default 10); reports the
    /// highest whose p99 end-to-end latency stays under the SLO with nothing lost.
    Throughput {
        #[command(flatten)]
        common: CommonOptions,
        /// Rates to step through, in messages/s (default 1000,2000,5000,10000,20000,50000,100000, capped by --rate).
        #[arg(long, value_delimiter = ',')]
        steps: Vec<f64>,
        /// Keep stepping after a step misses the SLO.
        #[arg(long)]
        keep_going: bool,
        /// The p99 latency a step must stay under, in ms.
        #[arg(long, default_value_t = 50)]
        slo_p99_ms: u64,
    },
    /// A fixed rate (default 2000 msg/s) for a set time (default 60 s) with the
    /// engine's RSS sampled every second; reports the slope.
    Soak(#[command(flatten)] CommonOptions),
    /// Load (default 1000 msg/s for 10 s) during which the engine is killed with
    /// SIGKILL and restarted on the same data; counts what was lost.
    Recovery {
        #[command(flatten)]
        common: CommonOptions,
        /// Seconds into the load when the engine is killed (default 40 % of --duration).
        #[arg(long)]
        kill_after: Option<f64>,
    },
    /// Many agents connected (default 10,000; `--agents`), opened
    /// `--connect-batch` handshakes at a time: the engine's memory per
    /// connection, then a modest load (default 1000 msg/s for 20 s) pushed to
    /// them with the usual counters and latencies.
    Agents {
        #[command(flatten)]
        common: CommonOptions,
        /// WebSocket handshakes in progress at once.
        #[arg(long, default_value_t = 500)]
        connect_batch: usize,
        /// Seconds idle after every agent is online, before memory is read.
        #[arg(long, default_value_t = 5.0)]
        idle_settle: f64,
    },
    /// Many stored conversations (default 1,000,000, all left OPEN) of which
    /// some are active (default 100,000): the engine's memory, then SIGTERM and
    /// restart on the same data: spawn → ready time and memory after.
    Conversations {
        #[command(flatten)]
        common: CommonOptions,
        /// Conversations to store (one first message per customer).
        #[arg(long, default_value_t = 1_000_000)]
        stored: u64,
        /// Of those, conversations messaged again just before memory is read.
        #[arg(long, default_value_t = 100_000)]
        active: u64,
        /// Customers' messages per webhook (several `messages` in one `value`).
        #[arg(long, default_value_t = 50)]
        per_payload: usize,
        /// Webhooks in flight while populating.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// `engine.passivate_after_s` for this run, so the populate's actors retire before the active step.
        #[arg(long, default_value_t = 30)]
        passivate_after_s: u64,
        /// At most this long (s) waiting for those actors to retire.
        #[arg(long, default_value_t = 90.0)]
        passivation_wait: f64,
        /// Stop with SIGKILL instead of SIGTERM before the restart.
        #[arg(long)]
        hard_kill: bool,
        /// Seconds the restarted engine has to become ready.
        #[arg(long, default_value_t = 900.0)]
        ready_timeout: f64,
    },
    /// The outbox (issue #14): one `webhook` connector taking every event
    /// type to a local receiver. Load (default 500 msg/s for 10 s) with the
    /// receiver holding every request, then the backlog's drain timed
    /// (deliveries/s, engine CPU per delivery); then the same load with
    /// the receiver open: event → arrival latency.
    Outbox {
        #[command(flatten)]
        common: CommonOptions,
        /// The connector's `max_in_flight`.
        #[arg(long, default_value_t = 4)]
        connector_in_flight: usize,
    },
    /// Combines reports run separately: the engine's from one file, references from others.
    Merge {
        /// The report whose `engine` result is the engine.
        #[arg(long)]
        engine: PathBuf,
        /// NAME=FILE: a report whose `engine` result becomes the reference NAME.
        #[arg(long = "reference", value_parser = parse_named)]
        references: Vec<(String, String)>,
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
}

#[derive(Args, Clone, Debug)]
pub struct CommonOptions {
    /// The engine binary to start (default: `switchboard` next to this executable).
    #[arg(long)]
    pub engine_bin: Option<PathBuf>,
    /// TOML appended to the engine's configuration (e.g. `[[routing.rules]]`
    /// routing every conversation to team `bench`, for the compare run with
    /// rules configured: bench/scripts/routing-rules.toml).
    #[arg(long)]
    pub engine_config_append: Option<PathBuf>,
    /// Drive a server already running at this URL instead of starting one.
    #[arg(long)]
    pub target: Option<String>,
    /// The app secret webhooks are signed with (with --target or references).
    #[arg(long, default_value = crate::BENCH_APP_SECRET)]
    pub app_secret: String,
    /// Agent i (1..=N) authenticates with `{prefix}{i}-token`.
    #[arg(long, default_value = crate::BENCH_AGENT_TOKEN_PREFIX)]
    pub agent_token_prefix: String,
    /// WebSocket agents (default 50; 5 for smoke). 0 = webhooks only.
    #[arg(long)]
    pub agents: Option<usize>,
    /// Open conversations per agent (default: enough for the highest rate).
    #[arg(long)]
    pub capacity: Option<u32>,
    /// Messages per second (throughput: the highest step).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of load (throughput: per step).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the Markdown report here (it is always printed to stdout).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// No progress bar (it is also off when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// An agent's think time before replying, in ms.
    #[arg(long, default_value_t = 200)]
    pub think_time_ms: u64,
    /// Agents close a conversation whose customer has been quiet this long, in ms.
    #[arg(long, default_value_t = 5000)]
    pub idle_close_ms: u64,
    /// Mean time between two messages of one customer's session, in ms.
    #[arg(long, default_value_t = 1000)]
    pub customer_gap_ms: u64,
    /// After the load, how long to wait for every acknowledged message to be delivered.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Webhook requests in flight at most; beyond, a due message is counted as failed.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The engine's data directory (kept); default a fresh temporary one (removed).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where the Graph API sink listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub sink_listen: String,
    /// The sink posts signed `sent` and `delivered` status webhooks for each send.
    #[arg(long)]
    pub status_webhooks: bool,
    /// NAME=URL: also drive this server (after the engine) and compare.
    #[arg(long = "reference", value_parser = parse_named)]
    pub references: Vec<(String, String)>,
    /// NAME=URL: as --reference, webhooks only (a server that delivers nothing).
    #[arg(long = "ingest-reference", value_parser = parse_named)]
    pub ingest_references: Vec<(String, String)>,
}

fn parse_named(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() && !value.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

const DEFAULT_STEPS: &[f64] = &[1_000.0, 2_000.0, 5_000.0, 10_000.0, 20_000.0, 50_000.0, 100_000.0];

/// What a scenario runs, resolved from the options and its defaults.
#[derive(Clone, Debug)]
enum Plan {
    Smoke { rate: f64, duration: Duration },
    Throughput { rates: Vec<f64>, duration: Duration, keep_going: bool },
    Soak { rate: f64, duration: Duration },
    Recovery { rate: f64, duration: Duration, kill_after: Duration },
    Agents { rate: f64, duration: Duration, connect_batch: usize, idle_settle: Duration },
}

impl Plan {
    fn name(&self) -> &'static str {
        match self {
            Plan::Smoke { .. } => "smoke",
            Plan::Throughput { .. } => "throughput",
            Plan::Soak { .. } => "soak",
            Plan::Recovery { .. } => "recovery",
            Plan::Agents { .. } => "agents",
        }
    }

    fn max_rate(&self) -> f64 {
        match self {
            Plan::Throughput { rates, .. } => rates.iter().copied().fold(1.0, f64::max),
            Plan::Smoke { rate, .. }
            | Plan::Soak { rate, .. }
            | Plan::Recovery { rate, .. }
            | Plan::Agents { rate, .. } => *rate,
        }
    }
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let outcome = match cli.command {
        Command::Merge { engine, references, json, markdown } => merge(&engine, &references, json, markdown),
        Command::Smoke(common) => {
            let plan = Plan::Smoke {
                rate: common.rate.unwrap_or(200.0),
                duration: Duration::from_secs_f64(common.duration.unwrap_or(3.0)),
            };
            run_scenario(common, plan, 5, Duration::from_millis(50)).await
        }
        Command::Throughput { common, steps, keep_going, slo_p99_ms } => {
            let ceiling = common.rate.unwrap_or(f64::INFINITY);
            let mut rates: Vec<f64> = if steps.is_empty() { DEFAULT_STEPS.to_vec() } else { steps };
            rates.retain(|rate| *rate > 0.0 && *rate <= ceiling);
            if rates.is_empty() {
                rates.push(common.rate.unwrap_or(1_000.0));
            }
            let plan = Plan::Throughput {
                rates,
                duration: Duration::from_secs_f64(common.duration.unwrap_or(10.0)),
                keep_going,
            };
            run_scenario(common, plan, 50, Duration::from_millis(slo_p99_ms)).await
        }
        Command::Soak(common) => {
            let plan = Plan::Soak {
                rate: common.rate.unwrap_or(2_000.0),
                duration: Duration::from_secs_f64(common.duration.unwrap_or(60.0)),
            };
            run_scenario(common, plan, 50, Duration::from_millis(50)).await
        }
        Command::Recovery { common, kill_after } => {
            let duration = common.duration.unwrap_or(10.0);
            let plan = Plan::Recovery {
                rate: common.rate.unwrap_or(1_000.0),
                duration: Duration::from_secs_f64(duration),
                kill_after: Duration::from_secs_f64(kill_after.unwrap_or(duration * 0.4)),
            };
            run_scenario(common, plan, 50, Duration::from_millis(50)).await
        }
        Command::Agents { common, connect_batch, idle_settle } => {
            let plan = Plan::Agents {
                rate: common.rate.unwrap_or(1_000.0),
                duration: Duration::from_secs_f64(common.duration.unwrap_or(20.0)),
                connect_batch,
                idle_settle: Duration::from_secs_f64(idle_settle),
            };
            run_scenario(common, plan, 10_000, Duration::from_millis(50)).await
        }
        Command::Outbox { common, connector_in_flight } => run_outbox(common, connector_in_flight).await,
        Command::Conversations {
            common,
            stored,
            active,
            per_payload,
            concurrency,
            passivate_after_s,
            passivation_wait,
            hard_kill,
            ready_timeout,
        } => {
            let settings = ConversationsSettings {
                stored,
                active,
                per_payload,
                concurrency,
                passivate_after_s,
                passivation_wait: Duration::from_secs_f64(passivation_wait),
                hard_kill,
                ready_timeout: Duration::from_secs_f64(ready_timeout),
            };
            run_conversations(common, settings).await
        }
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("switchboard-bench: {error:#}");
            2
        }
    }
}

/// A server the harness did not start (`--target`, a reference): its URL and
/// the secrets given on the command line; no process to read figures from.
fn remote_target(url: &str, common: &CommonOptions) -> Target {
    Target {
        description: url.to_owned(),
        base_url: url.trim_end_matches('/').to_owned(),
        app_secret: common.app_secret.clone(),
        token_prefix: common.agent_token_prefix.clone(),
        pid: None,
    }
}

fn run_options(common: &CommonOptions, agents: usize, capacity: Option<u32>, slo_p99: Duration) -> RunOptions {
    use std::io::IsTerminal;
    RunOptions {
        agents,
        capacity,
        think_time: Duration::from_millis(common.think_time_ms),
        idle_close: Duration::from_millis(common.idle_close_ms),
        shape: WorkloadShape {
            customer_gap: Duration::from_millis(common.customer_gap_ms),
            ..WorkloadShape::default()
        },
        drain_timeout: Duration::from_secs_f64(common.drain_timeout),
        max_in_flight: common.max_in_flight,
        progress: !common.no_progress && std::io::stderr().is_terminal(),
        seed: common.seed,
        slo_p99,
        ..RunOptions::default()
    }
}

/// Capacity per agent for the highest rate: twice the open conversations
/// expected, spread over the agents.
fn automatic_capacity(shape: &WorkloadShape, max_rate: f64, think_time: Duration, agents: usize) -> u32 {
    let open = shape.open_conversations_for(max_rate, think_time) as f64;
    ((2.0 * open / agents.max(1) as f64).ceil() as u32).saturating_add(5)
}

async fn run_scenario(
    common: CommonOptions,
    plan: Plan,
    default_agents: usize,
    slo_p99: Duration,
) -> anyhow::Result<i32> {
    let machine = MachineInfo::detect();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let started_at_unix_s = crate::load::unix_seconds();
    let agents = common.agents.unwrap_or(default_agents);
    let sink = GraphSink::start(&common.sink_listen, common.status_webhooks)
        .await
        .with_context(|| format!("cannot start the Graph API sink on {}", common.sink_listen))?;
    let mut notes = vec![format!("Graph API sink at {}.", sink.graph_base_url())];

    let mut harness_fd_limit = None;
    let mut engine_startup = None;
    if matches!(plan, Plan::Agents { .. }) {
        // One socket per agent here, and as many in the engine (it inherits the limit).
        harness_fd_limit = Some(crate::engine_process::ensure_open_files(agents as u64 + 1024)?);
    }
    let mut spawned: Option<(EngineProcess, Option<tempfile::TempDir>)> = None;
    let (target, capacity) = match &common.target {
        Some(url) => (remote_target(url, &common), common.capacity),
        None => {
            let options = run_options(&common, agents, None, slo_p99);
            let capacity = common
                .capacity
                .unwrap_or_else(|| automatic_capacity(&options.shape, plan.max_rate(), options.think_time, agents));
            let spawning = std::time::Instant::now();
            let (process, temporary) =
                spawn_engine(&common, agents.max(1), capacity, &sink.graph_base_url(), None).await?;
            engine_startup = Some(spawning.elapsed());
            if temporary.is_none() {
                notes.push(format!("Engine log: {}.", process.log_path().display()));
            }
            let target = Target {
                description: "switchboard (started by the harness)".to_owned(),
                base_url: process.base_url(),
                app_secret: crate::BENCH_APP_SECRET.to_owned(),
                token_prefix: crate::BENCH_AGENT_TOKEN_PREFIX.to_owned(),
                pid: Some(process.pid),
            };
            spawned = Some((process, temporary));
            (target, Some(capacity))
        }
    };
    sink.set_callbacks(StatusCallbacks {
        webhook_url: format!("{}/webhooks/whatsapp", target.base_url),
        app_secret: target.app_secret.clone(),
    });

    let mut options = run_options(&common, agents, capacity, slo_p99);
    if let Plan::Agents { connect_batch, .. } = &plan {
        options.connect_concurrency = Some(*connect_batch);
        options.online_timeout = Duration::from_secs(60).max(Duration::from_millis(agents as u64 * 20));
    }
    let engine_result = match &plan {
        Plan::Agents { rate, duration, idle_settle, .. } => {
            let agents_plan = scenarios::AgentsScalePlan {
                rate: *rate,
                duration: *duration,
                idle_settle: *idle_settle,
                engine_startup,
                harness_fd_limit,
            };
            scenarios::agents_scale(target, options.clone(), sink.counters.clone(), agents_plan).await?
        }
        Plan::Recovery { rate, duration, kill_after } => {
            let Some((process, _)) = spawned.as_mut() else {
                anyhow::bail!("recovery kills and restarts the engine, so it cannot run against --target");
            };
            let run = LoadRun::start(target, options.clone(), sink.counters.clone(), *rate).await?;
            scenarios::recovery(run, process, *rate, *duration, *kill_after, Duration::from_secs(120)).await?
        }
        other => {
            let run = LoadRun::start(target, options.clone(), sink.counters.clone(), plan.max_rate()).await?;
            drive(run, other).await
        }
    };
    if let Some((process, temporary)) = spawned.take() {
        let log_path = process.log_path().to_owned();
        process.terminate(Duration::from_secs(20)).await;
        // A failed run keeps its data and log for a look.
        if let Some(temporary) = temporary
            && !engine_result.passed
        {
            let kept = temporary.keep();
            notes.push(format!("Engine data kept in {}; its log is {}.", kept.display(), log_path.display()));
        }
    }

    let mut references = Vec::new();
    let named = common
        .references
        .iter()
        .map(|(name, url)| (name, url, false))
        .chain(common.ingest_references.iter().map(|(name, url)| (name, url, true)));
    for (name, url, ingest_only) in named {
        if matches!(plan, Plan::Recovery { .. }) {
            notes.push(format!("Reference {name} skipped: recovery needs a process the harness started."));
            continue;
        }
        let target = remote_target(url, &common);
        sink.set_callbacks(StatusCallbacks {
            webhook_url: format!("{}/webhooks/whatsapp", target.base_url),
            app_secret: target.app_secret.clone(),
        });
        let reference_options =
            RunOptions { agents: if ingest_only { 0 } else { agents }, capacity: common.capacity, ..options.clone() };
        let sends_before = sink.sends();
        match LoadRun::start(target, reference_options, sink.counters.clone(), plan.max_rate()).await {
            Ok(run) => {
                let mut result = drive(run, &plan).await;
                if sink.sends() == sends_before && !ingest_only {
                    result.problems.push("the reference sent nothing to the Graph API sink".to_owned());
                }
                references.push((name.clone(), result));
            }
            Err(error) => notes.push(format!("Reference {name} could not be driven: {error:#}")),
        }
    }

    let report = Report {
        scenario: plan.name().to_owned(),
        machine,
        command,
        started_at_unix_s,
        engine: engine_result,
        references,
        notes,
    };
    write_outputs(&report, common.json.as_deref(), common.markdown.as_deref())?;
    Ok(if report.engine.passed { 0 } else { 1 })
}

async fn drive(run: LoadRun, plan: &Plan) -> RunResult {
    match plan {
        Plan::Smoke { rate, duration } => scenarios::smoke(run, *rate, *duration).await,
        Plan::Throughput { rates, duration, keep_going } => {
            scenarios::throughput(run, rates, *duration, *keep_going).await
        }
        Plan::Soak { rate, duration } => scenarios::soak(run, *rate, *duration).await,
        Plan::Recovery { rate, duration, .. } | Plan::Agents { rate, duration, .. } => {
            // Without a process to kill this is plain load (references only);
            // references of `agents` get the same agents and load.
            scenarios::smoke(run, *rate, *duration).await
        }
    }
}

/// The `outbox` scenario (`crate::outbox`).
async fn run_outbox(mut common: CommonOptions, connector_in_flight: usize) -> anyhow::Result<i32> {
    if common.target.is_some() {
        anyhow::bail!("outbox configures the engine's connector, so it cannot run against --target");
    }
    let machine = MachineInfo::detect();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let started_at_unix_s = crate::load::unix_seconds();
    let rate = common.rate.unwrap_or(500.0);
    let duration = Duration::from_secs_f64(common.duration.unwrap_or(10.0));
    let agents = common.agents.unwrap_or(50).max(1);
    let slo_p99 = Duration::from_millis(50);
    let receiver = crate::outbox::HookReceiver::start().await.context("cannot start the connector's receiver")?;
    let sink = GraphSink::start(&common.sink_listen, common.status_webhooks)
        .await
        .with_context(|| format!("cannot start the Graph API sink on {}", common.sink_listen))?;
    let mut extra = match &common.engine_config_append {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|error| anyhow::anyhow!("cannot read --engine-config-append {}: {error}", path.display()))?,
        None => String::new(),
    };
    extra.push('\n');
    extra.push_str(&crate::outbox::connector_toml(&receiver.url(), connector_in_flight));
    let append = tempfile::NamedTempFile::new()?;
    std::fs::write(append.path(), extra)?;
    common.engine_config_append = Some(append.path().to_owned());

    let options = run_options(&common, agents, None, slo_p99);
    let capacity =
        common.capacity.unwrap_or_else(|| automatic_capacity(&options.shape, rate, options.think_time, agents));
    let (process, temporary) = spawn_engine(&common, agents, capacity, &sink.graph_base_url(), None).await?;
    let base_url = process.base_url();
    let target = Target {
        description: "switchboard (started by the harness)".to_owned(),
        base_url: base_url.clone(),
        app_secret: crate::BENCH_APP_SECRET.to_owned(),
        token_prefix: crate::BENCH_AGENT_TOKEN_PREFIX.to_owned(),
        pid: Some(process.pid),
    };
    sink.set_callbacks(StatusCallbacks {
        webhook_url: format!("{base_url}/webhooks/whatsapp"),
        app_secret: target.app_secret.clone(),
    });
    let mut notes = vec![format!("Connector receiver at {}.", receiver.url())];
    let mut run =
        LoadRun::start(target, run_options(&common, agents, Some(capacity), slo_p99), sink.counters.clone(), rate)
            .await?;
    let measured =
        crate::outbox::run(&mut run, &receiver, &base_url, Some(process.pid), rate, duration, connector_in_flight)
            .await;
    let mut engine = run.finish(None).await;
    let outbox_problems = match measured {
        Ok(outbox) => {
            let problems = crate::outbox::problems(&outbox);
            engine.outbox = Some(outbox);
            problems
        }
        Err(error) => vec![format!("{error:#}")],
    };
    engine.passed = engine.passed && outbox_problems.is_empty();
    engine.problems.extend(outbox_problems);
    let log_path = process.log_path().to_owned();
    process.terminate(Duration::from_secs(20)).await;
    if let Some(temporary) = temporary
        && !engine.passed
    {
        let kept = temporary.keep();
        notes.push(format!("Engine data kept in {}; its log is {}.", kept.display(), log_path.display()));
    }
    let report = Report {
        scenario: "outbox".to_owned(),
        machine,
        command,
        started_at_unix_s,
        engine,
        references: Vec::new(),
        notes,
    };
    write_outputs(&report, common.json.as_deref(), common.markdown.as_deref())?;
    Ok(if report.engine.passed { 0 } else { 1 })
}

/// Writes the engine's configuration into the data directory and starts it.
async fn spawn_engine(
    common: &CommonOptions,
    agents: usize,
    capacity: u32,
    graph_base_url: &str,
    passivate_after_s: Option<u64>,
) -> anyhow::Result<(EngineProcess, Option<tempfile::TempDir>)> {
    let binary = match &common.engine_bin {
        Some(binary) => binary.clone(),
        None => default_engine_binary()?,
    };
    let (work_dir, temporary) = match &common.data_dir {
        Some(directory) => {
            std::fs::create_dir_all(directory)?;
            (directory.clone(), None)
        }
        None => {
            let temporary = tempfile::Builder::new().prefix("switchboard-bench-").tempdir()?;
            (temporary.path().to_owned(), Some(temporary))
        }
    };
    let config_path = work_dir.join("switchboard-bench.toml");
    let mut config = render_engine_config_with(
        &EngineConfigOptions {
            listen: "127.0.0.1:0".to_owned(),
            data_dir: work_dir.join("data"),
            graph_base_url: graph_base_url.to_owned(),
            agents,
            capacity,
            token_prefix: crate::BENCH_AGENT_TOKEN_PREFIX.to_owned(),
            tick_ms: 1000,
        },
        passivate_after_s,
    );
    if let Some(extra) = &common.engine_config_append {
        let text = std::fs::read_to_string(extra)
            .map_err(|error| anyhow::anyhow!("cannot read --engine-config-append {}: {error}", extra.display()))?;
        config.push('\n');
        config.push_str(&text);
    }
    std::fs::write(&config_path, config)?;
    let log_path = work_dir.join("engine.log");
    let process = EngineProcess::spawn(&binary, &config_path, None, &log_path, Duration::from_secs(120)).await?;
    Ok((process, temporary))
}

/// The `conversations` scenario's settings from the command line.
struct ConversationsSettings {
    stored: u64,
    active: u64,
    per_payload: usize,
    concurrency: usize,
    passivate_after_s: u64,
    passivation_wait: Duration,
    hard_kill: bool,
    ready_timeout: Duration,
}

/// Starts the engine (it must be the harness's: it is restarted), runs
/// `conversations::run`, reports.
async fn run_conversations(common: CommonOptions, settings: ConversationsSettings) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    if common.target.is_some() {
        anyhow::bail!("conversations restarts the engine, so it cannot run against --target");
    }
    let machine = MachineInfo::detect();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let started_at_unix_s = crate::load::unix_seconds();
    let sink = GraphSink::start(&common.sink_listen, false)
        .await
        .with_context(|| format!("cannot start the Graph API sink on {}", common.sink_listen))?;
    let (mut process, temporary) =
        spawn_engine(&common, 1, 5, &sink.graph_base_url(), Some(settings.passivate_after_s)).await?;
    let work_dir = process.log_path().parent().map(Path::to_owned).unwrap_or_default();
    let plan = crate::conversations::ConversationsPlan {
        stored: settings.stored,
        active: settings.active,
        per_payload: settings.per_payload,
        concurrency: settings.concurrency,
        apply_timeout: Duration::from_secs(600),
        passivation_wait: settings.passivation_wait,
        hard_kill: settings.hard_kill,
        ready_timeout: settings.ready_timeout,
        queue_rebuild_wait: Duration::from_secs(60),
        progress: !common.no_progress && std::io::stderr().is_terminal(),
        store_file: work_dir.join("data").join("switchboard.redb"),
        app_secret: crate::BENCH_APP_SECRET.to_owned(),
        seed: common.seed,
    };
    let mut notes = vec![
        format!(
            "Conversations: no agent is connected, so all {} stored conversations stay OPEN in the team queue \
             (harsher than stored-and-closed); engine.passivate_after_s = {}.",
            settings.stored, settings.passivate_after_s
        ),
        format!("Engine data and log in {}.", work_dir.display()),
    ];
    let outcome = crate::conversations::run(&mut process, &plan).await;
    let log_path = process.log_path().to_owned();
    process.terminate(Duration::from_secs(60)).await;
    let measured = outcome?;
    let mut problems = Vec::new();
    if measured.webhook_failures > 0 {
        problems.push(format!("{} webhooks failed after every retry", measured.webhook_failures));
    }
    if measured.stored_opened < measured.stored_target {
        problems.push(format!(
            "only {} of {} conversations were opened (per the engine's /metrics)",
            measured.stored_opened, measured.stored_target
        ));
    }
    if measured.active_applied < measured.active_target {
        problems.push(format!(
            "only {} of {} active messages were applied",
            measured.active_applied, measured.active_target
        ));
    }
    let passed = problems.is_empty() && measured.restart_to_ready_ms.is_some();
    if let Some(temporary) = temporary {
        if passed {
            drop(temporary);
            notes.pop();
        } else {
            let kept = temporary.keep();
            notes.push(format!("Engine data kept in {}; its log is {}.", kept.display(), log_path.display()));
        }
    }
    let engine = RunResult {
        target: "switchboard (started by the harness)".to_owned(),
        ingest_only: true,
        agents: 0,
        conversations: Some(measured),
        passed,
        problems,
        ..RunResult::default()
    };
    let report = Report {
        scenario: "conversations".to_owned(),
        machine,
        command,
        started_at_unix_s,
        engine,
        references: Vec::new(),
        notes,
    };
    write_outputs(&report, common.json.as_deref(), common.markdown.as_deref())?;
    Ok(if report.engine.passed { 0 } else { 1 })
}

fn write_outputs(report: &Report, json: Option<&Path>, markdown: Option<&Path>) -> anyhow::Result<()> {
    let rendered = render_markdown(report);
    println!("{rendered}");
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = markdown {
        std::fs::write(path, &rendered).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn merge(
    engine: &Path,
    references: &[(String, String)],
    json: Option<PathBuf>,
    markdown: Option<PathBuf>,
) -> anyhow::Result<i32> {
    let read = |path: &Path| -> anyhow::Result<Report> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a switchboard-bench report", path.display()))
    };
    let mut report = read(engine)?;
    for (name, file) in references {
        let reference = read(Path::new(file))?;
        report.references.retain(|(existing, _)| existing != name);
        report.references.push((name.clone(), reference.engine));
    }
    write_outputs(&report, json.as_deref(), markdown.as_deref())?;
    Ok(0)
}
