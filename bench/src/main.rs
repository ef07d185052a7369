//! `switchboard-bench`: see the library's documentation (`lib.rs`) and
//! docs/BENCHMARKS.md.

use clap::Parser;
use switchboard_bench::cli::{Cli, run};

/// The engine's allocator: the harness shares the engine's two cores, so it
/// should spend as little of them as it can.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
    let cli = Cli::parse();
    let code = run(cli).await;
    std::process::exit(code);
}
