//! The engine as a child process: its configuration file, `switchboard serve`,
//! readiness, `kill -9` and restart, and what `/proc` says about its CPU time
//! and memory.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::{
    BENCH_ACCESS_TOKEN, BENCH_APP_SECRET, BENCH_MANAGER_ID, BENCH_MANAGER_TOKEN, BENCH_TEAM, BENCH_VERIFY_TOKEN,
};

/// The engine's log filter (`RUST_LOG` syntax) for the engines the bench
/// starts; their log is `engine.log` in the run's data directory. Default
/// `warn`.
pub const ENGINE_LOG_VAR: &str = "SWITCHBOARD_BENCH_ENGINE_LOG";

/// What the harness's engine configuration depends on.
#[derive(Clone, Debug)]
pub struct EngineConfigOptions {
    pub listen: String,
    pub data_dir: PathBuf,
    pub graph_base_url: String,
    pub agents: usize,
    pub capacity: u32,
    pub token_prefix: String,
    pub tick_ms: u64,
}

/// A TOML basic string.
fn toml_string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for character in value.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            control if control.is_control() => {
                let _ = write!(quoted, "\\u{:04X}", control as u32);
            }
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

/// The configuration the harness runs the engine with: team `bench`, agents
/// `bench-agent-1..=N` (round robin), a manager, a required `outcome` field,
/// SLA reassignment off (so no reassignment muddies the counters), and the
/// harness's Graph API sink as Meta.
pub fn render_engine_config(options: &EngineConfigOptions) -> String {
    render_engine_config_with(options, None)
}

/// As `render_engine_config`, with `engine.passivate_after_s` set when given
/// (`None`: the engine's default).
pub fn render_engine_config_with(options: &EngineConfigOptions, passivate_after_s: Option<u64>) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# Written by switchboard-bench for one run.");
    let _ = writeln!(text, "[server]");
    let _ = writeln!(text, "listen = {}", toml_string(&options.listen));
    let _ = writeln!(text, "data_dir = {}", toml_string(&options.data_dir.display().to_string()));
    let _ = writeln!(text, "metrics_public = true\n");
    let _ = writeln!(text, "[whatsapp]");
    let _ = writeln!(text, "app_secret = {}", toml_string(BENCH_APP_SECRET));
    let _ = writeln!(text, "verify_token = {}", toml_string(BENCH_VERIFY_TOKEN));
    let _ = writeln!(text, "access_token = {}", toml_string(BENCH_ACCESS_TOKEN));
    let _ = writeln!(text, "graph_base_url = {}\n", toml_string(&options.graph_base_url));
    let _ = writeln!(text, "[presence]\ngrace_s = 60\n");
    let _ = writeln!(text, "[engine]\ntick_ms = {}", options.tick_ms);
    if let Some(seconds) = passivate_after_s {
        let _ = writeln!(text, "passivate_after_s = {seconds}");
    }
    text.push('\n');
    let _ =
        writeln!(text, "[[teams]]\nid = {}\nname = \"Bench\"\nassignment = \"round_robin\"\n", toml_string(BENCH_TEAM));
    for index in 1..=options.agents {
        let _ = writeln!(text, "[[agents]]");
        let _ = writeln!(text, "id = {}", toml_string(&crate::agent_id(index)));
        let _ = writeln!(text, "name = \"Bench agent {index}\"");
        let _ = writeln!(text, "role = \"agent\"");
        let _ = writeln!(text, "token = {}", toml_string(&crate::agent_token(&options.token_prefix, index)));
        let _ = writeln!(text, "teams = [{}]", toml_string(BENCH_TEAM));
        let _ = writeln!(text, "capacity = {}\n", options.capacity);
    }
    let _ = writeln!(text, "[[agents]]");
    let _ = writeln!(text, "id = {}", toml_string(BENCH_MANAGER_ID));
    let _ = writeln!(text, "name = \"Bench manager\"\nrole = \"manager\"");
    let _ = writeln!(text, "token = {}", toml_string(BENCH_MANAGER_TOKEN));
    let _ = writeln!(text, "teams = [{}]\n", toml_string(BENCH_TEAM));
    let _ = writeln!(
        text,
        "[sla]\nfirst_response_s = 300\nnext_response_s = 600\nresolution_s = 86400\nreassign_after_s = 0\n"
    );
    let _ = writeln!(text, "[[dispositions]]");
    let _ = writeln!(text, "key = \"outcome\"\nlabel = \"Outcome\"\nkind = \"enum\"");
    let _ = writeln!(
        text,
        "options = [\"demo_booked\", \"closed_won\", \"follow_up\", \"promise_to_pay\", \"not_qualified\"]"
    );
    let _ = writeln!(text, "required_on_close = true\nwon_values = [\"closed_won\"]");
    text
}

/// The default engine binary: `switchboard` next to this executable.
pub fn default_engine_binary() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name("switchboard"))
}

/// A running `switchboard serve` child.
pub struct EngineProcess {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    binary: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
}

const LISTENING_PREFIX: &str = "switchboard listening on ";

impl EngineProcess {
    /// Spawns `binary serve --config config_path [--listen listen]`, waits for
    /// its "listening" line, then for `/readyz` 200. Output goes to `log_path`.
    pub async fn spawn(
        binary: &Path,
        config_path: &Path,
        listen: Option<SocketAddr>,
        log_path: &Path,
        ready_timeout: Duration,
    ) -> anyhow::Result<EngineProcess> {
        if !binary.exists() {
            bail!(
                "no engine binary at {} (build it: cargo build --release -p switchboard-engine, or pass --engine-bin)",
                binary.display()
            );
        }
        let mut command = Command::new(binary);
        command.arg("serve").arg("--config").arg(config_path);
        if let Some(listen) = listen {
            command.arg("--listen").arg(listen.to_string());
        }
        let log_filter = std::env::var(ENGINE_LOG_VAR).unwrap_or_else(|_| "warn".to_owned());
        command
            .env("RUST_LOG", log_filter)
            // The engine reads every SWITCHBOARD_* variable as a configuration
            // key and would refuse this one.
            .env_remove(ENGINE_LOG_VAR)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child.id().context("the engine exited at once")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let log = tokio::fs::OpenOptions::new().create(true).append(true).open(log_path).await?;
        let stderr_log = log.try_clone().await?;
        tokio::spawn(copy_lines(BufReader::new(stderr), stderr_log));

        let mut stdout_lines = BufReader::new(stdout).lines();
        let mut stdout_log = log;
        let started = Instant::now();
        let base_url = loop {
            let remaining = ready_timeout.saturating_sub(started.elapsed());
            let line = match tokio::time::timeout(remaining, stdout_lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) | Ok(Err(_)) => {
                    let status = child.wait().await.ok();
                    bail!("the engine stopped before listening (exit {status:?}); see {}", log_path.display());
                }
                Err(_) => bail!("the engine did not say it was listening within {ready_timeout:?}"),
            };
            let _ = stdout_log.write_all(format!("{line}\n").as_bytes()).await;
            if let Some(url) = line.strip_prefix(LISTENING_PREFIX) {
                break url.trim().to_owned();
            }
        };
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout_lines.next_line().await {
                let _ = stdout_log.write_all(format!("{line}\n").as_bytes()).await;
            }
        });
        let addr: SocketAddr = base_url
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("cannot read the engine's address from {base_url:?}"))?;
        let process = EngineProcess {
            child,
            pid,
            addr,
            binary: binary.to_owned(),
            config_path: config_path.to_owned(),
            log_path: log_path.to_owned(),
        };
        wait_ready(&process.base_url(), ready_timeout.saturating_sub(started.elapsed())).await?;
        Ok(process)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// `kill -9`: no flush, no goodbye.
    pub async fn kill_hard(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        let _ = self.child.wait().await;
        Ok(())
    }

    /// Starts the same binary and configuration again on the same address
    /// (same data directory); returns the time from spawn to `/readyz` 200.
    pub async fn restart(&mut self, ready_timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let replacement =
            EngineProcess::spawn(&self.binary, &self.config_path, Some(self.addr), &self.log_path, ready_timeout)
                .await?;
        *self = replacement;
        Ok(started.elapsed())
    }

    /// Stops the process and keeps the handle for `restart`: SIGTERM (then
    /// SIGKILL after `timeout`), or SIGKILL at once when `hard`. Returns how
    /// long the process took to exit.
    pub async fn stop(&mut self, hard: bool, timeout: Duration) -> Duration {
        let started = Instant::now();
        if hard {
            let _ = self.kill_hard().await;
            return started.elapsed();
        }
        let signalled = Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status().await;
        if !(signalled.is_ok_and(|status| status.success())
            && tokio::time::timeout(timeout, self.child.wait()).await.is_ok())
        {
            let _ = self.kill_hard().await;
        }
        started.elapsed()
    }

    /// SIGTERM (a clean shutdown), then SIGKILL if it takes over `timeout`.
    pub async fn terminate(mut self, timeout: Duration) {
        let signalled = Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status().await;
        if signalled.is_ok_and(|status| status.success())
            && tokio::time::timeout(timeout, self.child.wait()).await.is_ok()
        {
            return;
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Polls `GET /readyz` until 200.
pub async fn wait_ready(base_url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + timeout;
    let url = format!("{}/readyz", base_url.trim_end_matches('/'));
    loop {
        if let Ok(response) = client.get(&url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{url} did not answer 200 within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn copy_lines(reader: BufReader<tokio::process::ChildStderr>, mut log: tokio::fs::File) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let _ = log.write_all(format!("{line}\n").as_bytes()).await;
    }
}

/// The open-files limit (soft, hard) of this process, from `/proc/self/limits`.
pub fn open_files_limit() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..].split_whitespace();
    let parse = |value: Option<&str>| match value? {
        "unlimited" => Some(u64::MAX),
        number => number.parse().ok(),
    };
    Some((parse(numbers.next())?, parse(numbers.next())?))
}

/// Makes sure this process (and the engine it starts, which inherits it) may
/// open `needed` files: raises the soft limit up to the hard one with
/// `prlimit` (util-linux; the workspace forbids the `unsafe` of `setrlimit`).
/// Returns the soft limit now in force, or an error saying how to raise it.
pub fn ensure_open_files(needed: u64) -> anyhow::Result<u64> {
    let (soft, hard) = open_files_limit().context("cannot read /proc/self/limits")?;
    if soft >= needed {
        return Ok(soft);
    }
    if hard >= needed {
        let value = if hard == u64::MAX { needed.to_string() } else { hard.to_string() };
        let raised = std::process::Command::new("prlimit")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg(format!("--nofile={value}:{}", if hard == u64::MAX { "unlimited".to_owned() } else { value.clone() }))
            .status();
        if let Some((soft, _)) = open_files_limit()
            && soft >= needed
        {
            return Ok(soft);
        }
        tracing::warn!(?raised, "prlimit could not raise the open-files limit");
    }
    bail!(
        "{needed} open files are needed but the limit is {soft} (hard {hard}); raise it before running, e.g. \
         `ulimit -n {needed}` in this shell (up to the hard limit), or raise the hard limit in \
         /etc/security/limits.conf (`* hard nofile 65536`) or with `prlimit --pid $$ --nofile={needed}:{needed}` as root"
    )
}

/// CPU time and resident memory of a process, from `/proc`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// Clock ticks per second for `/proc/PID/stat` (`getconf CLK_TCK`; 100 if
/// that cannot be asked: the workspace forbids `unsafe`, so no `sysconf`).
pub fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

/// `pid` = `None` samples this process.
pub fn sample_process(pid: Option<u32>) -> Option<ProcessSample> {
    let directory = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{directory}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user_ticks: f64 = fields.get(11)?.parse().ok()?;
    let system_ticks: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("{directory}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())?;
    Some(ProcessSample {
        cpu_seconds: (user_ticks + system_ticks) / clock_ticks_per_second(),
        rss_bytes: rss_kib * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rendered_configuration_is_one_the_engine_accepts() {
        let options = EngineConfigOptions {
            listen: "127.0.0.1:0".to_owned(),
            data_dir: PathBuf::from("/tmp/bench \"data\""),
            graph_base_url: "http://127.0.0.1:9/v23.0".to_owned(),
            agents: 3,
            capacity: 7,
            token_prefix: crate::BENCH_AGENT_TOKEN_PREFIX.to_owned(),
            tick_ms: 1000,
        };
        let text = render_engine_config_with(&options, Some(42));
        let config = engine::config::Config::from_toml("bench", &text, std::iter::empty()).expect("valid");
        assert_eq!(config.agents.len(), 4);
        assert_eq!(config.agents[2].id, "bench-agent-3");
        assert_eq!(config.agents[0].token.as_deref(), Some("bench-agent-1-token"));
        assert_eq!(config.agents[0].capacity, Some(7));
        assert_eq!(config.server.data_dir, PathBuf::from("/tmp/bench \"data\""));
        assert_eq!(config.engine.tick_ms, 1000);
        assert_eq!(config.engine.passivate_after_s, 42);
    }

    #[test]
    fn the_open_files_limit_is_readable_and_enough_for_a_few() {
        let (soft, hard) = open_files_limit().expect("/proc/self/limits");
        assert!(soft <= hard);
        assert_eq!(ensure_open_files(16).expect("16 files are always allowed"), soft);
    }

    #[test]
    fn this_process_can_be_sampled_and_the_sample_follows_its_work() {
        let before = sample_process(None).expect("/proc/self is readable");
        // Touch 64 MiB: resident memory grows by about that much.
        let block = vec![1u8; 64 << 20];
        let grown = sample_process(None).expect("/proc/self is readable");
        assert!(
            grown.rss_bytes >= before.rss_bytes + (48 << 20),
            "rss {} → {} after touching 64 MiB",
            before.rss_bytes,
            grown.rss_bytes
        );
        // Work until the CPU time read moves (it counts in clock ticks); the
        // bound is on work done, not on time.
        let mut checksum = u64::from(block[block.len() - 1]);
        let mut after = grown;
        for _ in 0..10_000 {
            for value in 0..1_000_000u64 {
                checksum = checksum.wrapping_mul(6364136223846793005).wrapping_add(value);
            }
            after = sample_process(None).expect("/proc/self is readable");
            if after.cpu_seconds > before.cpu_seconds {
                break;
            }
        }
        assert!(
            after.cpu_seconds > before.cpu_seconds,
            "cpu {} → {} (checksum {checksum})",
            before.cpu_seconds,
            after.cpu_seconds
        );
        drop(block);
    }
}
