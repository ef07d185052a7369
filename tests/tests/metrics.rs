//! `/metrics` as Prometheus reads it: every family has `# HELP` and `# TYPE`,
//! counters count what happened, and `promtool check metrics` accepts a live
//! scrape.
//!
//! The recorder is process-wide, so this file is its own test binary: the
//! values checked here are caused by these tests alone. Only one test causes
//! SLA events.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use actors::clock::ManualClock;
use engine::server::StartOptions;
use serde_json::json;
use switchboard_tests::*;

type TestResult = anyhow::Result<()>;

async fn scrape(harness: &Harness) -> anyhow::Result<String> {
    let response =
        harness.http.get(format!("{}/metrics", harness.base_url())).bearer_auth(MANAGER_TOKEN).send().await?;
    anyhow::ensure!(response.status() == 200, "scrape answered {}", response.status());
    Ok(response.text().await?)
}

/// Families named in `# HELP` and in `# TYPE` lines.
fn described_and_typed(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let names = |prefix: &str| {
        text.lines()
            .filter_map(|line| line.strip_prefix(prefix))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .collect::<BTreeSet<_>>()
    };
    (names("# HELP "), names("# TYPE "))
}

/// The value of the sample `series` (name with its labels, as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_is_described_and_sla_events_are_counted_once_each() -> TestResult {
    let clock = ManualClock::new(now_s() * 1000);
    let harness = Harness::start_with(StartOptions { clock: clock.clone(), outbound: None, copilot: None }, |config| {
        config.sla.first_response_s = 10;
        config.sla.reassign_after_s = 0;
    })
    .await?;
    let mut agent = harness.online_agent("a1").await?;
    harness.post_webhook(&inbound_text("919500000001", "wamid.metrics.1", "hello")).await?;
    let conversation_id = agent.expect_type("assigned").await?["conversation"]["id"].clone();
    clock.advance_ms(10_000);
    harness.system().settle_clock().await;
    agent.expect_where(|frame| frame["type"] == "sla" && frame["state"] == "breached").await?;
    let answer = agent.request(json!({"type": "send", "conversation_id": conversation_id, "text": "sorry!"})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");

    let text = scrape(&harness).await?;
    let (described, typed) = described_and_typed(&text);
    assert!(typed.len() >= 10, "the scrape has the engine's families: {typed:?}");
    let undescribed: Vec<_> = typed.difference(&described).collect();
    assert!(undescribed.is_empty(), "families without # HELP: {undescribed:?}\n{text}");
    for family in &typed {
        assert!(family.starts_with("switchboard_"), "{family} is not prefixed switchboard_");
    }
    // docs/metrics.md and the Grafana dashboard are checked against this list
    // (engine/tests/grafana.rs): nothing is exported outside it.
    let listed: BTreeSet<&str> = engine::metrics::all_names().into_iter().collect();
    let unlisted: Vec<_> = typed.iter().filter(|family| !listed.contains(family.as_str())).collect();
    assert!(unlisted.is_empty(), "families missing from engine::metrics::all_names: {unlisted:?}");
    // The assignment was timed, as a histogram with buckets; the team
    // reports its agents online (the value is the last server's to set it:
    // the other test of this file may run a `sales` team at the same time).
    let timed = sample(&text, "switchboard_assignment_seconds_count{team=\"sales\"}");
    assert!(timed.is_some_and(|count| count >= 1.0), "no timed assignment in\n{text}");
    assert!(text.contains("switchboard_assignment_seconds_bucket{team=\"sales\",le=\"0.1\"}"), "{text}");
    assert!(sample(&text, "switchboard_agents_online{team=\"sales\"}").is_some(), "no agents_online in\n{text}");
    for state in ["warning", "breached"] {
        let series = format!("switchboard_sla_events_total{{kind=\"first_response\",state=\"{state}\"}}");
        assert_eq!(sample(&text, &series), Some(1.0), "{series} in\n{text}");
    }
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs promtool (Debian's prometheus package); .ci/run installs it and runs this"]
async fn promtool_accepts_a_live_scrape() -> TestResult {
    let harness = Harness::start().await?;
    let mut agent = harness.online_agent("a2").await?;
    harness.post_webhook(&inbound_text("919500000002", "wamid.metrics.2", "hi")).await?;
    let conversation_id = agent.expect_type("assigned").await?["conversation"]["id"].clone();
    let answer = agent.request(json!({"type": "send", "conversation_id": conversation_id, "text": "hello"})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    let text = scrape(&harness).await?;
    harness.shutdown().await;

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| anyhow::anyhow!("cannot run promtool (apt-get install prometheus): {error}"))?;
    promtool.stdin.take().expect("piped").write_all(text.as_bytes())?;
    let output = promtool.wait_with_output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool check metrics failed:\n{said}\n--- scrape ---\n{text}");
    Ok(())
}

/// `switchboard_agents_online{team}` counts the members with status online
/// and a session open, whatever their free capacity: a team of its own, so
/// the other tests of this file do not set its series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_online_counts_members_online_with_a_session() -> TestResult {
    let config = format!(
        r#"
[[numbers]]
phone_number_id = "{PHONE_NUMBER_ID}"
default_team = "gauge"

[[teams]]
id = "gauge"

[[agents]]
id = "g1"
token = "g1-token-xyz"
teams = ["gauge"]
capacity = 1

[[agents]]
id = "g2"
token = "g2-token-xyz"
teams = ["gauge"]
capacity = 1

[[agents]]
id = "boss"
role = "manager"
token = "{MANAGER_TOKEN}"
"#
    );
    let harness = Harness::start_on("agents online test", &config).await?;
    let online = |wanted: f64| {
        let harness = &harness;
        eventually(move || async move {
            let text = scrape(harness).await.ok()?;
            (sample(&text, "switchboard_agents_online{team=\"gauge\"}") == Some(wanted)).then_some(())
        })
    };
    online(0.0).await?;
    let mut g1 = harness.online_agent("g1").await?;
    online(1.0).await?;
    // g1 takes a conversation: its one slot is taken.
    harness.post_webhook(&inbound_text("919500000003", "wamid.metrics.3", "hi")).await?;
    g1.expect_type("assigned").await?;
    // A session without status online does not count; then it does, and
    // g1, full, still counts.
    let mut g2 = harness.connect(&agent_token("g2")).await?;
    g2.expect_type("welcome").await?;
    online(1.0).await?;
    let answer = g2.request(json!({"type": "set_status", "status": "online"})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    online(2.0).await?;
    let answer = g1.request(json!({"type": "set_status", "status": "away"})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    online(1.0).await?;
    // Its status stays online through the grace period, but no session is open.
    g2.close().await;
    online(0.0).await?;
    harness.shutdown().await;
    Ok(())
}
