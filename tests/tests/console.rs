//! The web console in a real browser: the scripts in `tests/browser/` drive
//! headless Chromium (Playwright) against the real server (docs/console.md).
//! An agent answers in the inbox and the dashboard shows it (`console.mjs`);
//! the manager's console shows the heatmap move and every report figure as
//! the API gives it, the co-pilot's leads scripted here first
//! (`dashboard.mjs`); the inbox works on a phone, its close
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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use actors::clock::Clock;
use engine::server::StartOptions;
use serde_json::json;
use switchboard_tests::copilot::{AD, ad_click, say, sends, tap};
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

/// The wall clock, which a test may stop and move by hand for a while
/// (so a time in a report is exact), then let run on from where it left it.
#[derive(Default)]
struct StoppableClock {
    stopped: AtomicBool,
    /// The reading while stopped.
    at: AtomicI64,
    /// Added to the wall clock while running.
    offset: AtomicI64,
}

impl StoppableClock {
    fn wall() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as i64)
            .unwrap_or_default()
    }
    fn stop(&self) {
        self.at.store(self.now_ms(), Ordering::SeqCst);
        self.stopped.store(true, Ordering::SeqCst);
    }
    fn advance_ms(&self, delta: i64) {
        self.at.fetch_add(delta, Ordering::SeqCst);
    }
    fn run(&self) {
        self.offset.store(self.at.load(Ordering::SeqCst) - Self::wall(), Ordering::SeqCst);
        self.stopped.store(false, Ordering::SeqCst);
    }
}

impl Clock for StoppableClock {
    fn now_ms(&self) -> i64 {
        if self.stopped.load(Ordering::SeqCst) {
            self.at.load(Ordering::SeqCst)
        } else {
            Self::wall() + self.offset.load(Ordering::SeqCst)
        }
    }
}

/// Waits until `customer`'s conversation has `status`.
async fn status_of(harness: &Harness, customer: &str, status: &str) -> TestResult {
    eventually(|| async {
        let path = format!("/api/v1/conversations?contact={customer}");
        let (_, list) = harness.get(&path, CONSOLE_MANAGER).await.ok()?;
        list["conversations"].as_array()?.iter().any(|conversation| conversation["status"] == status).then_some(())
    })
    .await
}

/// Three leads of the Spring offer ad (console-config.toml routes it to the
/// `leads` team, whose co-pilot qualifies paid leads; nobody works there):
/// one answers the three questions in 45 s (stopped clock) and is
/// qualified, one asks for a person at once, one answers below the
/// threshold and is closed as not qualified. dashboard.mjs then expects
/// the Co-pilot tab to show exactly this.
async fn copilot_leads(harness: &Harness, clock: &StoppableClock) -> TestResult {
    let (qualifies, asks, declines) = ("919700000021", "919700000022", "919700000023");
    clock.stop();
    ad_click(harness, qualifies).await?;
    sends(harness, qualifies, 1).await?;
    clock.advance_ms(20_000);
    tap(harness, qualifies, "2", "cp:budget:high", "Over 20 lakh").await?;
    sends(harness, qualifies, 2).await?;
    clock.advance_ms(15_000);
    say(harness, qualifies, "3", "2 units").await?;
    sends(harness, qualifies, 3).await?;
    clock.advance_ms(10_000);
    say(harness, qualifies, "4", "Pune").await?;
    status_of(harness, qualifies, "queued").await?;
    ad_click(harness, asks).await?;
    sends(harness, asks, 1).await?;
    say(harness, asks, "2", "talk to a human").await?;
    status_of(harness, asks, "queued").await?;
    ad_click(harness, declines).await?;
    sends(harness, declines, 1).await?;
    tap(harness, declines, "2", "cp:budget:low", "Under 10 lakh").await?;
    sends(harness, declines, 2).await?;
    say(harness, declines, "3", "1").await?;
    sends(harness, declines, 3).await?;
    say(harness, declines, "4", "Mumbai").await?;
    status_of(harness, declines, "closed").await?;
    clock.run();

    // What the API says, which the page must show (dashboard.mjs).
    let (status, report) = harness.get("/api/v1/reports/copilot", CONSOLE_MANAGER).await?;
    anyhow::ensure!(status == 200, "{report}");
    let expected = json!([{
        "source": "paid",
        "source_id": AD,
        "campaign": "Spring offer",
        "conversations": 3,
        "qualified": 1,
        "qualified_rate": 0.3333,
        "time_to_qualification": {"count": 1, "p50_s": 45.0, "p90_s": 45.0, "mean_s": 45.0},
        "handoffs": {"qualified": 1, "asked_for_person": 1, "timeout": 0, "unanswered": 0, "completed": 0},
        "closed_unqualified": {"not_qualified": 1, "nurtured": 0},
    }]);
    anyhow::ensure!(report["rows"] == expected, "the co-pilot report: {report}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node.js and `npm ci --prefix tests/browser`; .ci/run installs them and runs it"]
async fn the_manager_console_shows_the_heatmap_move_and_every_report_as_the_api_does() -> TestResult {
    let clock = Arc::new(StoppableClock::default());
    let options = StartOptions { clock: clock.clone(), ..StartOptions::default() };
    let harness = Harness::start_on_with(options, "console", CONSOLE_CONFIG).await?;
    copilot_leads(&harness, &clock).await?;
    let shots = screenshot_dir("dashboard");
    let printed = run_browser_script(
        "dashboard.mjs",
        &[&harness.base_url(), APP_SECRET, CONSOLE_MANAGER, "a1-token-xyz", &shots.display().to_string()],
    )
    .await?;
    assert!(printed.contains("step: the SLA"), "{printed}");
    assert!(printed.contains("step: the Co-pilot tab"), "{printed}");
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
