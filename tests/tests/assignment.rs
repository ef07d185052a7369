//! Who gets a conversation inside a team (contract §7), through the real
//! server on a manual clock: an agent outside its shift gets nothing new, a
//! team's conversations wait outside its hours, and round robin goes on
//! after a restart from the agent who got the last conversation instead of
//! starting over.

use std::sync::Arc;

use actors::clock::ManualClock;
use actors::hours::HoursSpec;
use anyhow::{Result, anyhow};
use engine::server::StartOptions;
use serde_json::Value;
use switchboard_tests::*;

const HOUR: i64 = 3_600_000;
/// Tuesday 2026-12-01 08:00:00 UTC.
const TUESDAY_8AM: i64 = 1_796_112_000_000;

fn nine_to_six() -> HoursSpec {
    HoursSpec {
        timezone: "UTC".into(),
        week: [("tue".to_owned(), vec!["09:00-18:00".to_owned()])].into_iter().collect(),
        holidays: Vec::new(),
    }
}

async fn at_tuesday_8am(adjust: impl FnOnce(&mut engine::config::Config)) -> Result<(Harness, Arc<ManualClock>)> {
    let clock = ManualClock::new(TUESDAY_8AM);
    let harness =
        Harness::start_with(StartOptions { clock: clock.clone(), outbound: None, copilot: None }, adjust).await?;
    Ok((harness, clock))
}

/// The contact's latest conversation, as the REST API shows it.
async fn conversation_of(harness: &Harness, contact: &str) -> Result<Value> {
    let (status, list) = harness.get(&format!("/api/v1/conversations?contact={contact}"), MANAGER_TOKEN).await?;
    anyhow::ensure!(status == 200, "{list}");
    list["conversations"][0]
        .as_object()
        .map(|object| Value::Object(object.clone()))
        .ok_or_else(|| anyhow!("none in {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_gets_nothing_new_outside_its_shift() -> Result<()> {
    let (harness, clock) = at_tuesday_8am(|config| {
        for agent in config.agents.iter_mut().filter(|agent| agent.id == "a1") {
            agent.shift = Some(nine_to_six());
        }
    })
    .await?;
    let mut a1 = harness.online_agent("a1").await?;
    let (status, _) = harness.post_webhook(&inbound_text("919700000001", "wamid.shift.1", "hello")).await?;
    assert_eq!(status, 200);
    harness.system().settle_clock().await;
    let waiting = conversation_of(&harness, "919700000001").await?;
    assert_eq!(
        (waiting["status"].as_str(), waiting["agent"].as_str()),
        (Some("queued"), None),
        "08:00: before a1's shift"
    );
    clock.advance_ms(HOUR);
    harness.system().settle_clock().await;
    let assigned = a1.expect_type("assigned").await?;
    assert_eq!(assigned["conversation"]["id"], waiting["id"], "09:00: a1's shift began and the queue drained");
    a1.close().await;
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_conversations_wait_outside_its_hours() -> Result<()> {
    let (harness, clock) = at_tuesday_8am(|config| {
        config.teams[0].hours = Some(nine_to_six());
        config.teams[0].closed_template = Some(protocol::ws::TemplateRequest {
            name: "after_hours".into(),
            language: "en".into(),
            params: Vec::new(),
        });
    })
    .await?;
    let mut a1 = harness.online_agent("a1").await?;
    for wamid in ["wamid.hours.1", "wamid.hours.2"] {
        let (status, _) = harness.post_webhook(&inbound_text("919700000002", wamid, "hello?")).await?;
        assert_eq!(status, 200);
    }
    harness.system().settle_clock().await;
    let waiting = conversation_of(&harness, "919700000002").await?;
    assert_eq!(waiting["status"], "queued", "08:00: the team is closed, its online agent gets nothing");
    // The customer heard, once, that the team is closed.
    let sent = eventually(|| async {
        let sends: Vec<_> =
            harness.emulator.requests().into_iter().filter(|request| request.body["to"] == "919700000002").collect();
        (!sends.is_empty()).then_some(sends)
    })
    .await?;
    harness.system().settle_clock().await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (sent[0].body["type"].as_str(), sent[0].body["template"]["name"].as_str()),
        (Some("template"), Some("after_hours"))
    );
    let (_, detail) =
        harness.get(&format!("/api/v1/conversations/{}", waiting["id"].as_str().unwrap_or("")), MANAGER_TOKEN).await?;
    let outbound: Vec<_> =
        detail["messages"].as_array().into_iter().flatten().filter(|message| message["direction"] == "out").collect();
    assert_eq!(outbound.len(), 1, "one template in the conversation: {detail}");
    let trail = harness
        .http
        .get(format!("{}/api/v1/audit?contact=919700000002", harness.base_url()))
        .bearer_auth(MANAGER_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    let by_system = trail.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()).any(|entry| {
        entry["action"] == "message_out" && entry["actor"] == "system" && entry["data"]["template"] == "after_hours"
    });
    assert!(by_system, "the template is the system's in the audit trail: {trail}");
    clock.advance_ms(HOUR);
    harness.system().settle_clock().await;
    let assigned = a1.expect_type("assigned").await?;
    assert_eq!(assigned["conversation"]["id"], waiting["id"], "09:00: the team opened");
    a1.close().await;
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_goes_on_after_a_restart_from_the_last_agent_given_one() -> Result<()> {
    let mut harness = Harness::start().await?;
    let mut a1 = harness.online_agent("a1").await?;
    let a2 = harness.online_agent("a2").await?;
    let (status, _) = harness.post_webhook(&inbound_text("919700000003", "wamid.rr.1", "hello")).await?;
    assert_eq!(status, 200);
    a1.expect_type("assigned").await?;
    a1.close().await;
    a2.close().await;
    harness.restart(StartOptions::default()).await?;
    let a1 = harness.online_agent("a1").await?;
    let mut a2 = harness.online_agent("a2").await?;
    let (status, _) = harness.post_webhook(&inbound_text("919700000004", "wamid.rr.2", "hello")).await?;
    assert_eq!(status, 200);
    let assigned = a2.expect_type("assigned").await?;
    assert_eq!(assigned["conversation"]["contact"]["wa_id"], "919700000004", "a2's turn, after a1 before the restart");
    let conversation = conversation_of(&harness, "919700000004").await?;
    assert_eq!(conversation["agent"], "a2");
    a1.close().await;
    a2.close().await;
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_past_its_bounds_spills_its_oldest_to_a_partner_with_room() -> Result<()> {
    let (harness, clock) = at_tuesday_8am(|config| {
        // Support first (the default team), overflowing into sales.
        config.teams.insert(
            0,
            actors::settings::TeamSpec {
                id: "support".into(),
                overflow_to: vec!["sales".into()],
                overflow_queue: Some(2),
                overflow_wait_s: Some(120),
                ..Default::default()
            },
        );
        for agent in config.agents.iter_mut().filter(|agent| agent.id == "a3") {
            agent.teams = vec!["support".into()];
            agent.capacity = Some(1);
        }
    })
    .await?;
    let mut a3 = harness.online_agent("a3").await?;
    let mut a1 = harness.online_agent("a1").await?;
    let post = |from: &'static str, wamid: &'static str| {
        let body = inbound_text(from, wamid, "hello");
        let harness = &harness;
        async move {
            let (status, _) = harness.post_webhook(&body).await?;
            anyhow::ensure!(status == 200);
            anyhow::Ok(())
        }
    };
    post("919700000011", "wamid.of.1").await?;
    let first = a3.expect_type("assigned").await?;
    assert_eq!(first["conversation"]["team"], "support");
    post("919700000012", "wamid.of.2").await?;
    harness.system().settle_clock().await;
    assert_eq!(conversation_of(&harness, "919700000012").await?["status"], "queued", "one waiting: under the bound");
    // A second one waiting passes `overflow_queue = 2`: the oldest goes to sales.
    post("919700000013", "wamid.of.3").await?;
    let spilled = a1.expect_type("assigned").await?;
    assert_eq!(spilled["conversation"]["contact"]["wa_id"], "919700000012", "the oldest first");
    assert_eq!(spilled["conversation"]["team"], "sales");
    assert_eq!(spilled["route"], serde_json::json!({"reason": "overflow", "from_team": "support"}));
    harness.system().settle_clock().await;
    let still = conversation_of(&harness, "919700000013").await?;
    assert_eq!(
        (still["status"].as_str(), still["team"].as_str()),
        (Some("queued"), Some("support")),
        "back under the bound"
    );
    // Waiting past `overflow_wait_s = 120` spills it too.
    clock.advance_ms(121_000);
    harness.system().settle_clock().await;
    let late = a1.expect_type("assigned").await?;
    assert_eq!(late["conversation"]["contact"]["wa_id"], "919700000013");
    assert_eq!(late["route"]["reason"], "overflow");
    a1.close().await;
    a3.close().await;
    harness.shutdown().await;
    Ok(())
}
