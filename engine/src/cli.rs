//! The command line (contract §1).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Parser)]
#[command(name = "switchboard", version, about = "Real-time conversation engine for WhatsApp Business teams")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the engine (embedded default configuration unless --config).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        listen: Option<String>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Engine + WhatsApp Cloud API emulator + simulated customers and agents.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, default_value_t = 4)]
        agents: usize,
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
        /// Where the demo keeps its data (a fresh folder each run by default).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Past days of simulated work played into a new data directory
        /// before the demo goes live, so the reports are not empty (0: none).
        #[arg(long, default_value_t = 3)]
        history_days: u32,
    },
    /// The audit log: verify a stopped engine's, export a contact's, check an export.
    Audit {
        #[command(subcommand)]
        command: crate::audit_cli::AuditCommand,
    },
    /// The reports' projection of the event log.
    Reports {
        #[command(subcommand)]
        command: ReportsCommand,
    },
}

#[derive(Subcommand)]
pub enum ReportsCommand {
    /// Delete a stopped engine's stored reports and project its whole event
    /// log again (after a change of the reports' definitions, or rows that
    /// cannot be read). Prints {"events", "rows"}.
    Rebuild {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// The log filter when `RUST_LOG` is not set. `ractor=warn`: ractor opens an
/// INFO span per actor (a million conversations, a million spans) and enters
/// it for every message it handles.
pub const DEFAULT_LOG_FILTER: &str = "info,hyper=warn,reqwest=warn,ractor=warn";

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init();
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Serve { config, listen, data_dir } => {
            let loaded = Config::load(config.as_deref(), std::env::vars());
            let mut config = match loaded {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("switchboard: {error}");
                    return 2;
                }
            };
            if let Some(listen) = listen {
                if listen.parse::<std::net::SocketAddr>().is_err() {
                    eprintln!("switchboard: --listen {listen:?} is not an address like 127.0.0.1:8080");
                    return 2;
                }
                config.server.listen = listen;
            }
            if let Some(data_dir) = data_dir {
                config.server.data_dir = data_dir;
            }
            serve(config).await
        }
        Command::Demo { listen, agents, rate, data_dir, history_days } => {
            crate::demo::run(&listen, agents, rate, data_dir, history_days).await
        }
        Command::Audit { command } => crate::audit_cli::run(command).await,
        Command::Reports { command: ReportsCommand::Rebuild { config, data_dir } } => {
            rebuild_reports(config, data_dir).await
        }
    }
}

async fn rebuild_reports(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> i32 {
    let outcome = async {
        let config = crate::audit_cli::load_config(config, data_dir)?;
        let settings = reports::ReportSettings::from_settings(&config.settings())
            .map_err(|problem| crate::audit_cli::Refusal(2, problem))?;
        let store = crate::audit_cli::open_store(&config)?;
        let rebuilt = crate::reports::rebuild(store.clone(), settings).await;
        store.shutdown();
        rebuilt.map_err(|error| crate::audit_cli::Refusal(1, format!("the reports could not be rebuilt: {error}")))
    }
    .await;
    match outcome {
        Ok((events, rows)) => {
            println!("{}", serde_json::json!({"events": events, "rows": rows}));
            0
        }
        Err(crate::audit_cli::Refusal(code, message)) => {
            eprintln!("switchboard reports: {message}");
            code
        }
    }
}

async fn serve(config: Config) -> i32 {
    let placeholders = config.placeholder_secrets();
    if !placeholders.is_empty() {
        tracing::warn!(keys = ?placeholders, "running with placeholder secrets from the default configuration; set your own before connecting Meta");
    }
    let stop = shutdown_signal();
    let server = match crate::server::start(config, Default::default()).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("switchboard: {error:#}");
            return 1;
        }
    };
    println!("switchboard listening on {}", server.base_url());
    stop.await;
    tracing::info!("shutting down");
    server.shutdown().await;
    tracing::info!("stopped cleanly");
    0
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn wait_for_signal() {
    shutdown_signal().await
}

/// Registers for SIGTERM at once and returns the wait for it (or Ctrl-C):
/// a SIGTERM that arrives before the wait is awaited (during the start) is
/// kept, not fatal, and stops the server cleanly as soon as it is up.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        #[cfg(unix)]
        if let Some(mut terminate) = terminate {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
