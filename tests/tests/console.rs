//! The web console in a real browser: `tests/browser/console.mjs` drives
//! headless Chromium (Playwright) against the real server. An agent opens the
//! inbox, goes online, receives a customer's message, opens it and replies; a
//! manager's dashboard shows the agent holding it; no page logs an error.
//!
//! Needs Node.js, Chromium (`/usr/bin/chromium`, or `CHROMIUM`) and
//! `npm ci --prefix tests/browser`, which a fresh machine lacks: so the test
//! is `#[ignore]`d (a plain `cargo test` says "ignored", never a false "ok"),
//! and `.ci/run` installs them and runs it with `--include-ignored`. Run
//! there, missing tools are a failure that names them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchboard_tests::*;

type TestResult = anyhow::Result<()>;

/// The script's folder, or what is missing to run it.
fn browser_tools() -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !Path::new(&chromium).exists() {
        return Err(format!("no Chromium at {chromium} (apt-get install chromium, or set CHROMIUM)"));
    }
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|output| output.status.success()) {
        return Err("no Node.js on PATH".to_owned());
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Err("playwright-core is not installed (npm ci --prefix tests/browser)".to_owned());
    }
    Ok(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node.js and `npm ci --prefix tests/browser`; .ci/run installs them and runs it"]
async fn an_agent_answers_in_the_inbox_and_the_dashboard_shows_it_in_a_real_browser() -> TestResult {
    let dir = browser_tools().map_err(|missing| anyhow::anyhow!("the browser test cannot run: {missing}"))?;
    let harness = Harness::start().await?;
    let webhook = inbound_text("919812340000", "wamid.browser.1", "Is the festive offer still on?");
    let reply = "Yes, until Sunday.";
    let run = tokio::process::Command::new("node")
        .arg(dir.join("console.mjs"))
        .args([&harness.base_url(), APP_SECRET, &webhook.to_string(), &agent_token("a1"), MANAGER_TOKEN, reply])
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run).await??;
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser run failed:\n{printed}");
    assert!(printed.contains("all steps passed"), "{printed}");

    // What the agent typed in the browser went out through the Graph API.
    let sent = eventually(|| async {
        harness.emulator.requests().into_iter().find(|request| request.body["text"]["body"] == reply)
    })
    .await?;
    assert_eq!(sent.body["to"], "919812340000");
    harness.shutdown().await;
    Ok(())
}
