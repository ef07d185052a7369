//! A full disk is an error, not a hang: the real binary with its data
//! directory on a 32 MiB tmpfs, filled up while it runs.
//!
//! Needs root (it mounts a tmpfs), so it is `#[ignore]`d: a plain `cargo
//! test` reports it "ignored", and CI, which runs as root, runs it with
//! `--include-ignored` (`.ci/run`). Run that way where mounting fails, it
//! fails and says why; it never passes without having tested anything.

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use switchboard_tests::*;

type TestResult = anyhow::Result<()>;

/// A request that has not answered by then is hanging (today's failure was a
/// 40 s hang per webhook and reads that never answered).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// The bound for SIGTERM, in every state.
const EXIT_WITHIN: Duration = Duration::from_secs(15);
const CUSTOMER: &str = "919700000001";

/// A size-limited tmpfs, unmounted on drop.
struct Tmpfs {
    mount_point: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> anyhow::Result<Tmpfs> {
        let parent = tempfile::tempdir()?;
        let mount_point = parent.path().join("volume");
        std::fs::create_dir(&mount_point)?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "switchboard-test"])
            .arg(&mount_point)
            .output()
            .context("cannot run mount")?;
        ensure!(
            output.status.success(),
            "cannot mount a {size} tmpfs at {} (this test needs root): {}",
            mount_point.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(Tmpfs { mount_point, _parent: parent })
    }

    fn path(&self) -> &Path {
        &self.mount_point
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.mount_point).status().is_ok_and(|status| status.success());
        if !unmounted {
            // Something still holds a file there: detach it now, gone when released.
            let _ = Command::new("umount").arg("-l").arg(&self.mount_point).status();
        }
    }
}

/// The server process, killed on drop if the test ends early.
struct Server {
    child: Option<Child>,
    base_url: String,
}

impl Server {
    /// Starts the binary; its log goes to `switchboard.log` beside the configuration.
    fn spawn(config_path: &Path) -> anyhow::Result<Server> {
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(config_path.with_extension("log"))?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard-under-test"))
            .args(["serve", "--config"])
            .arg(config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log.try_clone()?)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let base_url = loop {
            let line = lines.next().ok_or_else(|| anyhow::anyhow!("the server exited before listening"))??;
            if let Some(url) = line.strip_prefix("switchboard listening on ") {
                break url.trim().to_owned();
            }
        };
        // The log is on stdout: keep it, and never let the child block on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
            }
        });
        Ok(Server { child: Some(child), base_url })
    }

    /// Sends SIGTERM and waits for the exit, at most `EXIT_WITHIN` (on
    /// any error, drop kills the process).
    async fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.as_ref().expect("running").id();
        let sent = Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        ensure!(sent.success(), "kill -TERM failed");
        let deadline = tokio::time::Instant::now() + EXIT_WITHIN;
        loop {
            if let Some(status) = self.child.as_mut().expect("running").try_wait()? {
                self.child = None;
                return Ok(status);
            }
            ensure!(
                tokio::time::Instant::now() <= deadline,
                "the server did not exit within {EXIT_WITHIN:?} of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Fills the file system holding `path` to the last byte, in a file at `path`.
fn fill(path: &Path) -> anyhow::Result<()> {
    let mut file = std::fs::File::create(path)?;
    for chunk in [1 << 20, 4096, 512] {
        let bytes = vec![0xa5u8; chunk];
        while file.write_all(&bytes).is_ok() {}
    }
    let _ = file.sync_all();
    Ok(())
}

async fn webhook(http: &reqwest::Client, base_url: &str, wamid: &str) -> anyhow::Result<(u16, Value)> {
    let body = serde_json::to_vec(&inbound_text(CUSTOMER, wamid, wamid))?;
    post_signed(http, base_url, APP_SECRET, &body)
        .await
        .with_context(|| format!("the webhook for {wamid} did not answer within {ANSWER_WITHIN:?}"))
}

async fn get(http: &reqwest::Client, url: String) -> anyhow::Result<(u16, Value)> {
    let response = http
        .get(&url)
        .bearer_auth(MANAGER_TOKEN)
        .send()
        .await
        .with_context(|| format!("GET {url} did not answer within {ANSWER_WITHIN:?}"))?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// A refusal of the contract's shape: 503 `unavailable`.
fn is_unavailable(status: u16, body: &Value) -> bool {
    status == 503 && body["code"] == "unavailable"
}

/// The stored message ids once every acknowledged one is among them, or,
/// past the wait, the ids as they are (for `check_stored` to name what is
/// missing).
async fn ids_once_all_stored(
    http: &reqwest::Client,
    base_url: &str,
    acknowledged: &[String],
) -> anyhow::Result<Vec<String>> {
    let all_there = eventually(|| async {
        let ids = message_ids(http, base_url).await.ok()?;
        acknowledged.iter().all(|wamid| ids.contains(wamid)).then_some(ids)
    })
    .await;
    match all_there {
        Ok(ids) => Ok(ids),
        Err(_) => message_ids(http, base_url).await,
    }
}

/// Every acknowledged wamid is stored, and none twice. (A refused webhook
/// may still have been stored, e.g. by the conversation actor before a
/// later step failed; Meta's retry is then a duplicate.)
fn check_stored(ids: &[String], acknowledged: &[String], when: &str) -> TestResult {
    let mut unique = ids.to_vec();
    unique.dedup();
    ensure!(unique.len() == ids.len(), "{when}: a message is stored twice: {ids:?}");
    let missing: Vec<_> = acknowledged.iter().filter(|wamid| !ids.contains(wamid)).collect();
    ensure!(missing.is_empty(), "{when}: acknowledged but lost: {missing:?} (stored {ids:?})");
    Ok(())
}

/// Every message id in every conversation, read through the API.
async fn message_ids(http: &reqwest::Client, base_url: &str) -> anyhow::Result<Vec<String>> {
    let (status, list) = get(http, format!("{base_url}/api/v1/conversations")).await?;
    ensure!(status == 200, "list answered {status}: {list}");
    let mut ids = Vec::new();
    for conversation in list["conversations"].as_array().cloned().unwrap_or_default() {
        let id = conversation["id"].as_str().unwrap_or_default();
        let (status, full) = get(http, format!("{base_url}/api/v1/conversations/{id}")).await?;
        ensure!(status == 200, "conversation {id} answered {status}: {full}");
        for message in full["messages"].as_array().cloned().unwrap_or_default() {
            ids.push(message["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    ids.sort();
    Ok(ids)
}

/// Posts webhooks until one is refused; every answer must come, and be
/// 200 or 503 `unavailable`. Returns the acknowledged wamids.
async fn post_until_refused(
    http: &reqwest::Client,
    base_url: &str,
    prefix: &str,
    acknowledged: &mut Vec<String>,
) -> TestResult {
    for n in 0..200 {
        let wamid = format!("wamid.{prefix}.{n}");
        let (status, body) = webhook(http, base_url, &wamid).await?;
        if status == 200 {
            acknowledged.push(wamid);
            continue;
        }
        ensure!(is_unavailable(status, &body), "a full disk answered {status} {body}, not 503 unavailable");
        return Ok(());
    }
    bail!("200 webhooks were all stored on a full disk: the volume did not fill")
}

#[ignore = "needs root: mounts a size-limited tmpfs (CI runs it with --include-ignored)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_refused_promptly_recovered_from_and_loses_nothing() -> TestResult {
    let volume = Tmpfs::mount("32m")?;
    let config_dir = tempfile::tempdir()?;
    let config_path = config_dir.path().join("switchboard.toml");
    let result = full_disk_scenario(&volume, &config_path).await;
    if result.is_err() {
        let log = std::fs::read_to_string(config_path.with_extension("log")).unwrap_or_default();
        eprintln!("the server's log:\n{log}");
    }
    result
}

/// The journal's spare segment (64 MiB + 1 MiB, made once 1 MiB has been
/// written to the current one) is made only while four times its size is
/// free: on a 160 MiB volume it would fit, and would leave too little.
#[tokio::test]
#[ignore = "needs root: mounts a tmpfs (CI runs it with --include-ignored)"]
async fn no_spare_journal_segment_where_space_is_short() -> TestResult {
    let volume = Tmpfs::mount("160m")?;
    let config_dir = tempfile::tempdir()?;
    let config_path = config_dir.path().join("switchboard.toml");
    std::fs::write(&config_path, test_config_toml(&volume.path().join("data"), "http://127.0.0.1:9/v23.0"))?;
    let http = reqwest::Client::builder().timeout(ANSWER_WITHIN).build()?;
    let server = Server::spawn(&config_path)?;
    let base_url = server.base_url.clone();
    switchboard_tests::until_ready(&http, &base_url).await?;
    let journal = volume.path().join("data/journal");
    let files = |extension: &str| -> anyhow::Result<Vec<PathBuf>> {
        Ok(std::fs::read_dir(&journal)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|found| found == extension))
            .collect())
    };
    // Past 1 MiB in the current segment, where the spare would be asked for.
    let mut n = 0;
    while files("wal")?.iter().map(|path| path.metadata().map(|meta| meta.len()).unwrap_or(0)).sum::<u64>() < 3 << 19 {
        for _ in 0..50 {
            let (status, body) = webhook(&http, &base_url, &format!("wamid.fill.{n}")).await?;
            ensure!(status == 200, "webhook {n}: {status} {body}");
            n += 1;
        }
    }
    // The spare is made by a helper thread: give it the time it takes on
    // this machine (a few ms for fallocate), and more, then look.
    let written = webhook(&http, &base_url, "wamid.fill.last").await?;
    ensure!(written.0 == 200, "{written:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spares = files("spare")?;
    ensure!(spares.is_empty(), "a spare journal segment with less than 4 × its size free: {spares:?}");
    let status = server.terminate().await?;
    ensure!(status.success(), "SIGTERM: the server exited with {status}");
    Ok(())
}

async fn full_disk_scenario(volume: &Tmpfs, config_path: &Path) -> TestResult {
    std::fs::write(config_path, test_config_toml(&volume.path().join("data"), "http://127.0.0.1:9/v23.0"))?;
    let filler = volume.path().join("filler");
    let http = reqwest::Client::builder().timeout(ANSWER_WITHIN).build()?;
    let mut acknowledged = Vec::new();

    let server = Server::spawn(config_path)?;
    let base_url = server.base_url.clone();
    switchboard_tests::until_ready(&http, &base_url).await?;
    // An agent online before the disk fills: the conversation is assigned to it.
    let mut agent = WsClient::connect(&base_url, "a1-token-xyz", Protocol::Json, None).await?;
    agent.expect_type("welcome").await?;
    let online = agent.request(serde_json::json!({"type": "set_status", "status": "online"})).await?;
    ensure!(online["type"] == "ok", "set_status: {online}");
    eventually(|| async { (webhook(&http, &base_url, "wamid.before.0").await.ok()?.0 == 200).then_some(()) }).await?;
    acknowledged.push("wamid.before.0".to_owned());
    for n in 1..5 {
        let wamid = format!("wamid.before.{n}");
        let (status, body) = webhook(&http, &base_url, &wamid).await?;
        ensure!(status == 200, "before the disk filled: {status} {body}");
        acknowledged.push(wamid);
    }
    let (_, list) = get(&http, format!("{base_url}/api/v1/conversations")).await?;
    let conversation_id = list["conversations"][0]["id"].as_str().context("one conversation")?.to_owned();
    agent.expect_where(|frame| frame["type"] == "assigned").await.context("a1 was not assigned the conversation")?;

    // The disk fills: writes are refused with 503, and keep being refused
    // (not hung) while it stays full.
    fill(&filler)?;
    post_until_refused(&http, &base_url, "full", &mut acknowledged).await?;
    for n in 0..5 {
        let wamid = format!("wamid.still-full.{n}");
        let (status, body) = webhook(&http, &base_url, &wamid).await?;
        if status == 200 {
            acknowledged.push(wamid);
        } else {
            ensure!(is_unavailable(status, &body), "a full disk answered {status} {body}, not 503 unavailable");
        }
    }
    // Reads answer: served, or refused with 503 when they need the tables.
    let (status, body) = get(&http, format!("{base_url}/api/v1/conversations")).await?;
    ensure!(status == 200 || is_unavailable(status, &body), "the list answered {status} {body}");
    let (status, body) = get(&http, format!("{base_url}/api/v1/conversations/{conversation_id}")).await?;
    ensure!(status == 200 || is_unavailable(status, &body), "a conversation answered {status} {body}");
    // A new WebSocket session gets its welcome, or `unavailable`, not silence.
    let mut session = WsClient::connect(&base_url, "a1-token-xyz", Protocol::Json, None).await?;
    let first = session.next().await.context("a new session heard nothing while the disk was full")?;
    ensure!(
        first["type"] == "welcome" || (first["type"] == "error" && first.to_string().contains("unavailable")),
        "a new session's first frame: {first}"
    );
    drop(session);
    // An agent's request that must write answers at once: done, or refused
    // as `unavailable`; never silence, and the session stays usable.
    let fields = serde_json::json!({"type": "set_fields", "conversation_id": conversation_id, "fields": {"outcome": "follow_up"}});
    let answer = tokio::time::timeout(ANSWER_WITHIN, agent.request(fields.clone()))
        .await
        .context("an agent's set_fields on a full disk was not answered")??;
    ensure!(
        answer["type"] == "ok" || (answer["type"] == "error" && answer["code"] == "unavailable"),
        "an agent's set_fields on a full disk answered {answer}"
    );

    // Space returns: the engine takes writes again by itself, no restart.
    std::fs::remove_file(&filler)?;
    eventually(|| async { (webhook(&http, &base_url, "wamid.after.0").await.ok()?.0 == 200).then_some(()) })
        .await
        .context("the engine did not recover by itself once space returned")?;
    acknowledged.push("wamid.after.0".to_owned());
    // The same session's next request succeeds once space is back.
    let answer = tokio::time::timeout(ANSWER_WITHIN, agent.request(fields))
        .await
        .context("an agent's set_fields after recovery was not answered")??;
    ensure!(answer["type"] == "ok", "an agent's set_fields after recovery answered {answer}");
    drop(agent);
    // Messages acknowledged through the inbox while their conversation could
    // not be written are applied on a housekeeping tick after recovery.
    let ids = ids_once_all_stored(&http, &base_url, &acknowledged).await?;
    check_stored(&ids, &acknowledged, "after recovery")?;

    // SIGTERM while the disk is full: the process still exits.
    fill(&filler)?;
    post_until_refused(&http, &base_url, "full-again", &mut acknowledged).await?;
    let status = server.terminate().await?;
    ensure!(status.success(), "SIGTERM on a full disk: the server exited with {status}");

    // Nothing acknowledged was lost: start again with space.
    std::fs::remove_file(&filler)?;
    let restarted = Server::spawn(config_path)?;
    let base_url = restarted.base_url.clone();
    let ids = ids_once_all_stored(&http, &base_url, &acknowledged).await?;
    check_stored(&ids, &acknowledged, "after a restart")?;
    let status = restarted.terminate().await?;
    ensure!(status.success(), "SIGTERM after the restart: the server exited with {status}");
    Ok(())
}
