//! The web console in a real browser: the scripts in `tests/browser/` drive
//! headless Chromium (Playwright) against the real server (docs/console.md).
//! An agent answers in the inbox and the dashboard shows it (`console.mjs`);
//! the manager's console shows the heatmap move and every report figure as
//! the API gives it (`dashboard.mjs`); the inbox works on a phone, its close
//! form drawn from the disposition schema (`inbox.mjs`); the co-pilot's
//! toggle, on the dashboard too, and a suggestion sent as is or edited
//! (`assist.mjs`). No page may log an
//! error. Screenshots: `target/browser-screenshots/`.
//!
//! Needs Node.js, Chromium (`/usr/bin/chromium`, or `CHROMIUM`) and
//! `npm ci --prefix tests/browser`, which a fresh machine lacks: so the test
//! is `#[ignore]`d (a plain `cargo test` says "ignored", never a false "ok"),
//! and `.ci/run` installs them and runs it with `--include-ignored`. Run
//! there, missing tools are a failure that names them.

use switchboard_tests::*;

type TestResult = anyhow::Result<()>;

/// The browser tests' teams, agents and dispositions.
const CONSOLE_CONFIG: &str = include_str!("../browser/console-config.toml");
const CONSOLE_MANAGER: &str = "manager-token-xyz";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node.js and `npm ci --prefix tests/browser`; .ci/run installs them and runs it"]
async fn an_agent_answers_in_the_inbox_and_the_dashboard_shows_it_in_a_real_browser() -> TestResult {
    let harness = Harness::start().await?;
    let webhook = inbound_text("919812340000", "wamid.browser.1", "Is the festive offer still on?");
    let reply = "Yes, until Sunday.";
    run_browser_script(
        "console.mjs",
        &[&harness.base_url(), APP_SECRET, &webhook.to_string(), &agent_token("a1"), MANAGER_TOKEN, reply],
    )
    .await?;

    // What the agent typed in the browser went out through the Graph API.
    let sent = eventually(|| async {
        harness.emulator.requests().into_iter().find(|request| request.body["text"]["body"] == reply)
    })
    .await?;
    assert_eq!(sent.body["to"], "919812340000");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node.js and `npm ci --prefix tests/browser`; .ci/run installs them and runs it"]
async fn the_manager_console_shows_the_heatmap_move_and_every_report_as_the_api_does() -> TestResult {
    let harness = Harness::start_on("console", CONSOLE_CONFIG).await?;
    let shots = screenshot_dir("dashboard");
    let printed = run_browser_script(
        "dashboard.mjs",
        &[&harness.base_url(), APP_SECRET, CONSOLE_MANAGER, "a1-token-xyz", &shots.display().to_string()],
    )
    .await?;
    assert!(printed.contains("step: the SLA"), "{printed}");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node.js and `npm ci --prefix tests/browser`; .ci/run installs them and runs it"]
async fn an_agent_on_a_phone_closes_through_the_disposition_form_with_a_number_and_an_amount() -> TestResult {
    let harness = Harness::start_on("console", CONSOLE_CONFIG).await?;
    let shots = screenshot_dir("inbox");
    let printed = run_browser_script(
        "inbox.mjs",
        &[&harness.base_url(), APP_SECRET, "a1-token-xyz", CONSOLE_MANAGER, &shots.display().to_string()],
    )
    .await?;
    assert!(printed.contains("step: desktop: transferred to support"), "{printed}");

    // What the form sent is what the store holds: numbers as numbers.
    let (status, listed) =
        harness.call(reqwest::Method::GET, "/api/v1/conversations?status=closed", CONSOLE_MANAGER, None).await?;
    assert_eq!(status, 200, "{listed}");
    let closed = listed["conversations"].as_array().cloned().unwrap_or_default();
    assert!(
        closed.iter().any(|conversation| conversation["fields"]["units"] == 3
            && conversation["fields"]["deal_value"] == 2499.5
            && conversation["fields"]["outcome"] == "closed_won"),
        "{listed}"
    );
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node.js and `npm ci --prefix tests/browser`; .ci/run installs them and runs it"]
async fn an_agent_turns_the_copilot_on_and_sends_a_suggestion_as_is_in_a_real_browser() -> TestResult {
    let harness = Harness::start_on("console", CONSOLE_CONFIG).await?;
    let shots = screenshot_dir("assist");
    let printed = run_browser_script(
        "assist.mjs",
        &[&harness.base_url(), APP_SECRET, "a1-token-xyz", CONSOLE_MANAGER, &shots.display().to_string()],
    )
    .await?;
    assert!(printed.contains("step: turned off, the dashboard drops the mark"), "{printed}");

    // What the browser sent is what reached Meta.
    let draft = "Hi Priya, the red scooter is 49,999 with free delivery. Shall I book a test ride?";
    let sent = eventually(|| async {
        harness.emulator.requests().into_iter().find(|request| request.body["text"]["body"] == draft)
    })
    .await?;
    assert!(sent.body["to"].as_str().is_some_and(|to| to.starts_with("9198400")), "{}", sent.body);
    harness.shutdown().await;
    Ok(())
}
