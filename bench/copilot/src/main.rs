//! `switchboard-bench-copilot`: the co-pilot's built-in engine per customer
//! message (see the library's documentation and docs/BENCHMARKS.md).
//!
//! `cargo run --release -p switchboard-bench-copilot -- [--conversations N] [--messages N] [--seed S] [--config FILE] [--json]`

use clap::Parser;
use switchboard_bench_copilot::{
    EXAMPLE, Team, World, measure, report_json, report_markdown, simulate, timer_overhead_ns,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Nanoseconds per customer message in the co-pilot's built-in engine.
#[derive(Parser, Debug)]
#[command(name = "switchboard-bench-copilot")]
struct Arguments {
    /// Simulated paid leads (their messages are the workload).
    #[arg(long, default_value_t = 20_000)]
    conversations: usize,
    /// Timed messages (the simulated ones cycled; after a warm-up of a tenth as many).
    #[arg(long, default_value_t = 1_000_000)]
    messages: usize,
    /// Seed of the conversations.
    #[arg(long, default_value_t = 15)]
    seed: u64,
    /// A configuration file whose first team with a `[teams.copilot]` is
    /// used (default: config/examples/copilot.toml, built in).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Print the results as JSON as well.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let text = match &arguments.config {
        Some(path) => std::fs::read_to_string(path)?,
        None => EXAMPLE.to_owned(),
    };
    let team = Team::from_toml(&text)?;
    let world = World::default();
    let simulated = simulate(&team, &world, arguments.conversations, arguments.seed);
    let overhead = timer_overhead_ns()?;
    let measured = measure(&team, &world, &simulated.samples, arguments.messages)?;
    let flow = &team.spec.flows[0];
    print!("{}", report_markdown(&simulated, &measured, &overhead, flow));
    if arguments.json {
        println!("{}", serde_json::to_string_pretty(&report_json(&simulated, &measured, &overhead, flow))?);
    }
    Ok(())
}
