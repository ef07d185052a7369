//! Windows, SLA timers, idle reassignment and presence through the real
//! server, on a manual clock: time moves when the test says so, never by
//! sleeping. (The test only waits for the engine to react.)

use std::sync::Arc;

use actors::clock::ManualClock;
use engine::server::StartOptions;
use serde_json::{Value, json};
use switchboard_tests::*;

type TestResult = anyhow::Result<()>;

const SECOND: i64 = 1000;
const HOUR: i64 = 3600 * SECOND;

async fn harness_with_clock(
    adjust: impl FnOnce(&mut engine::config::Config),
) -> anyhow::Result<(Harness, Arc<ManualClock>)> {
    let clock = ManualClock::new(now_s() * 1000);
    let options = StartOptions { clock: clock.clone(), outbound: None, copilot: None };
    let harness = Harness::start_with(options, adjust).await?;
    Ok((harness, clock))
}

/// An agent's row of `GET /api/v1/workload`.
fn agent_row<'a>(workload: &'a Value, id: &str) -> &'a Value {
    workload["agents"].as_array().unwrap().iter().find(|agent| agent["id"] == id).unwrap()
}

/// Lets what the clock's last move caused reach the actors, then sends a
/// marker message from `customer` and returns every frame `client` got before
/// the marker (in order). A deadline due by now is handled before the marker
/// (`System::settle_clock`), so "nothing happened" is observed, not hoped.
async fn frames_before_marker(
    harness: &Harness,
    client: &mut WsClient,
    customer: &str,
    marker_wamid: &str,
) -> anyhow::Result<Vec<Value>> {
    harness.system().settle_clock().await;
    let (status, answer) = harness.post_webhook(&inbound_text(customer, marker_wamid, "(marker)")).await?;
    anyhow::ensure!(status == 200, "the marker was not taken: {answer}");
    let mut before = Vec::new();
    loop {
        let frame = client.next().await?;
        if frame["type"] == "message" && frame["message"]["id"] == marker_wamid {
            return Ok(before);
        }
        before.push(frame);
    }
}

fn sla_frame(kind: &'static str, state: &'static str) -> impl Fn(&Value) -> bool {
    move |frame| frame["type"] == "sla" && frame["kind"] == kind && frame["state"] == state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_response_warns_at_80_percent_breaches_at_100_and_idle_conversations_move_on() -> TestResult {
    let (harness, clock) = harness_with_clock(|config| {
        config.sla.first_response_s = 10;
        config.sla.reassign_after_s = 30;
    })
    .await?;
    let mut first = harness.online_agent("a1").await?;
    harness.post_webhook(&inbound_text("919600000001", "wamid.sla.1", "anyone?")).await?;
    let assigned = first.expect_type("assigned").await?;
    let conversation_id = assigned["conversation"]["id"].clone();
    let mut second = harness.online_agent("a2").await?;

    clock.advance_ms(7 * SECOND + 999);
    let at_7_999 = frames_before_marker(&harness, &mut first, "919600000001", "wamid.sla.marker.1").await?;
    assert!(!at_7_999.iter().any(|frame| frame["type"] == "sla"), "no warning before 80 % (8 s): {at_7_999:?}");
    clock.advance_ms(1);
    harness.system().settle_clock().await;
    let warning = first.expect_where(sla_frame("first_response", "warning")).await?;
    assert_eq!(warning["conversation_id"], conversation_id);
    clock.advance_ms(2 * SECOND);
    first.expect_where(sla_frame("first_response", "breached")).await?;

    clock.advance_ms(20 * SECOND);
    let unassigned = first.expect_type("unassigned").await?;
    assert_eq!(unassigned["reason"], "reassigned_idle");
    let moved = second.expect_type("assigned").await?;
    assert_eq!(moved["conversation"]["id"], conversation_id, "the next eligible agent takes it");

    // The new holder answers: no more first-response or reassignment events.
    let answer =
        second.request(json!({"type": "send", "conversation_id": conversation_id, "text": "Sorry, here now"})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    clock.advance_ms(60 * SECOND);
    let after = frames_before_marker(&harness, &mut second, "919600000001", "wamid.sla.marker.2").await?;
    assert!(
        !after.iter().any(|frame| frame["type"] == "unassigned" || frame["type"] == "sla"),
        "nothing more for a2 in the 60 s after its answer: {after:?}"
    );
    let path = format!("/api/v1/conversations/{}", conversation_id.as_str().unwrap());
    let (status, conversation) = harness.get(&path, MANAGER_TOKEN).await?;
    assert_eq!(status, 200);
    assert_eq!(conversation["agent"], "a2");

    let (_, workload) = harness.get("/api/v1/workload", MANAGER_TOKEN).await?;
    assert_eq!(agent_row(&workload, "a1")["frt_breaches"], 1, "today's first-response breaches: {workload}");
    assert_eq!(agent_row(&workload, "a2")["open_windows"], 1, "{workload}");
    assert_eq!(agent_row(&workload, "a1")["open_windows"], 0, "{workload}");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_response_runs_while_the_customer_waits_again() -> TestResult {
    let (harness, clock) = harness_with_clock(|config| {
        config.sla.next_response_s = 20;
        config.sla.reassign_after_s = 0;
    })
    .await?;
    let mut agent = harness.online_agent("a1").await?;
    harness.post_webhook(&inbound_text("919600000002", "wamid.nrt.1", "hi")).await?;
    let conversation_id = agent.expect_type("assigned").await?["conversation"]["id"].clone();
    let hello = agent.request(json!({"type": "send", "conversation_id": conversation_id, "text": "hello!"})).await?;
    assert_eq!(hello["type"], "ok", "{hello}");
    harness.post_webhook(&inbound_text("919600000002", "wamid.nrt.2", "so, the price?")).await?;
    agent.expect_where(|frame| frame["type"] == "message" && frame["message"]["id"] == "wamid.nrt.2").await?;
    clock.advance_ms(16 * SECOND);
    harness.system().settle_clock().await;
    agent.expect_where(sla_frame("next_response", "warning")).await?;
    // Answering stops the clock: no breach follows, though its time (20 s) passes.
    let price =
        agent.request(json!({"type": "send", "conversation_id": conversation_id, "text": "499 per month"})).await?;
    assert_eq!(price["type"], "ok", "{price}");
    clock.advance_ms(10 * SECOND);
    let after = frames_before_marker(&harness, &mut agent, "919600000002", "wamid.nrt.3").await?;
    assert!(!after.iter().any(|frame| frame["type"] == "sla"), "no breach after the reply: {after:?}");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_window_closes_after_24_hours_and_only_templates_go_out() -> TestResult {
    let (harness, clock) = harness_with_clock(|config| config.sla.reassign_after_s = 0).await?;
    let mut agent = harness.online_agent("a1").await?;
    let sent_at = now_s();
    let body = engine::emulator::inbound_text_payload(
        PHONE_NUMBER_ID,
        "919600000003",
        "Ravi",
        "wamid.win.1",
        "hi",
        sent_at,
        None,
    );
    harness.post_webhook(&body).await?;
    let assigned = agent.expect_type("assigned").await?;
    let conversation_id = assigned["conversation"]["id"].clone();
    let service_until =
        protocol::time::parse_rfc3339(assigned["conversation"]["service_until"].as_str().unwrap()).unwrap();
    assert_eq!(service_until, sent_at * 1000 + 24 * HOUR, "24 h from Meta's timestamp of the message");

    clock.set(service_until - 1);
    let open =
        agent.request(json!({"type": "send", "conversation_id": conversation_id, "text": "just in time"})).await?;
    assert_eq!(open["type"], "ok", "23:59:59.999 is inside the window: {open}");
    clock.set(service_until);
    let closed = agent.expect_type("window").await?;
    assert_eq!(closed["conversation_id"], conversation_id);
    let refused =
        agent.request(json!({"type": "send", "conversation_id": conversation_id, "text": "too late"})).await?;
    assert_eq!(refused["code"], "window_closed", "24:00:00.000 is outside: {refused}");
    let sends_before = harness.emulator.requests().len();
    let template = agent
        .request(json!({"type": "send_template", "conversation_id": conversation_id,
                        "template": {"name": "payment_reminder", "language": "en", "params": ["Ravi", "₹4,500"]}}))
        .await?;
    assert_eq!(template["type"], "ok", "{template}");
    assert_eq!(template["message"]["free"], false, "a template outside every free window is paid");
    let requests = harness.emulator.requests();
    assert_eq!(requests.len(), sends_before + 1, "the refused text never reached Meta");
    let body = &requests.last().unwrap().body;
    assert_eq!(body["type"], "template");
    assert_eq!(body["template"]["language"], json!({"code": "en", "policy": "deterministic"}));
    assert_eq!(body["template"]["components"][0]["parameters"][1]["text"], "₹4,500");

    // The REST route does the same.
    let (status, _) = harness
        .post(
            &format!("/api/v1/conversations/{}/templates", conversation_id.as_str().unwrap()),
            &agent_token("a1"),
            &json!({"template": {"name": "payment_reminder", "language": "en"}}),
        )
        .await?;
    assert_eq!(status, 200);
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_reply_to_an_ad_opens_72_free_hours() -> TestResult {
    let (harness, clock) = harness_with_clock(|config| config.sla.reassign_after_s = 0).await?;
    let mut agent = harness.online_agent("a1").await?;
    let referral = json!({"source_url": "https://fb.me/x", "source_id": "ad-7", "source_type": "ad",
                          "headline": "Festive offer", "ctwa_clid": "clid-1"});
    let body = engine::emulator::inbound_text_payload(
        PHONE_NUMBER_ID,
        "919600000004",
        "Asha",
        "wamid.ad.1",
        "I saw the ad",
        now_s(),
        Some(referral),
    );
    harness.post_webhook(&body).await?;
    let assigned = agent.expect_type("assigned").await?;
    assert_eq!(assigned["conversation"]["source"]["kind"], "paid");
    assert_eq!(assigned["conversation"]["free_entry_until"], Value::Null);
    let conversation_id = assigned["conversation"]["id"].clone();
    clock.advance_ms(2 * HOUR);
    let reply = agent.request(json!({"type": "send", "conversation_id": conversation_id, "text": "Welcome!"})).await?;
    assert_eq!(reply["message"]["free"], true);
    let window = agent.expect_type("window").await?;
    let until = protocol::time::parse_rfc3339(window["free_entry_until"].as_str().unwrap()).unwrap();
    let accepted = protocol::time::parse_rfc3339(reply["message"]["at"].as_str().unwrap()).unwrap();
    assert_eq!(until, accepted + 72 * HOUR);
    // Outside the 24 h service window but inside the 72 h: templates are free.
    clock.advance_ms(30 * HOUR);
    agent.expect_where(|frame| frame["type"] == "window" && frame["free_entry_until"].is_string()).await?;
    let template = agent
        .request(json!({"type": "send_template", "conversation_id": conversation_id,
                        "template": {"name": "offer_followup", "language": "en"}}))
        .await?;
    assert_eq!(template["message"]["free"], true, "{template}");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_gone_past_the_grace_period_loses_its_conversations_to_others() -> TestResult {
    let (harness, clock) = harness_with_clock(|config| {
        config.presence.grace_s = 60;
        config.sla.reassign_after_s = 0;
    })
    .await?;
    let first = harness.online_agent("a1").await?;
    harness.post_webhook(&inbound_text("919600000005", "wamid.grace.1", "hello")).await?;
    let (_, list) = eventually(|| async {
        let (status, body) = harness.get("/api/v1/conversations?status=assigned", MANAGER_TOKEN).await.ok()?;
        (body["conversations"].as_array()?.len() == 1).then_some((status, body))
    })
    .await?;
    let conversation_id = list["conversations"][0]["id"].clone();
    first.close().await;
    let mut second = harness.online_agent("a2").await?;
    clock.advance_ms(59 * SECOND);
    harness.system().settle_clock().await;
    // Within the grace period a reconnect would keep everything; a2 gets nothing yet.
    harness.post_webhook(&inbound_text("919600000005", "wamid.grace.2", "still there?")).await?;
    eventually(|| async {
        let (_, body) =
            harness.get(&format!("/api/v1/conversations/{}", conversation_id.as_str()?), MANAGER_TOKEN).await.ok()?;
        (body["messages"].as_array()?.len() == 2 && body["agent"] == "a1").then_some(())
    })
    .await?;
    clock.advance_ms(2 * SECOND);
    harness.system().settle_clock().await;
    let moved = second.expect_type("assigned").await?;
    assert_eq!(moved["conversation"]["id"], conversation_id);
    assert_eq!(moved["conversation"]["messages"].as_array().unwrap().len(), 2);
    let (_, workload) = harness.get("/api/v1/workload", MANAGER_TOKEN).await?;
    let a1 = workload["agents"].as_array().unwrap().iter().find(|agent| agent["id"] == "a1").unwrap().clone();
    assert_eq!(a1["status"], "offline");
    // a1 comes back and sees its last status, offline, with nothing held.
    let mut back = harness.connect(&agent_token("a1")).await?;
    assert_eq!(back.expect_type("welcome").await?["status"], "offline");
    let snapshot = back.expect_type("snapshot").await?;
    assert!(snapshot["conversations"].as_array().unwrap().is_empty());
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_due_while_the_engine_was_down_fires_at_start() -> TestResult {
    let (mut harness, clock) = harness_with_clock(|config| {
        config.sla.first_response_s = 60;
        config.sla.reassign_after_s = 0;
    })
    .await?;
    let agent = harness.online_agent("a1").await?;
    harness.post_webhook(&inbound_text("919600000006", "wamid.restart.1", "hello")).await?;
    let conversation_id = eventually(|| async {
        let (_, body) = harness.get("/api/v1/conversations?status=assigned", MANAGER_TOKEN).await.ok()?;
        body["conversations"].as_array()?.first().map(|conversation| conversation["id"].clone())
    })
    .await?;
    agent.close().await;
    let restarted_clock = ManualClock::new(clock.now_ms_for_test() + 5 * 60 * SECOND);
    harness.restart(StartOptions { clock: restarted_clock, outbound: None, copilot: None }).await?;
    let mut back = WsClient::connect(&harness.base_url(), &agent_token("a1"), Protocol::Json, Some(1)).await?;
    let breach = back.expect_where(sla_frame("first_response", "breached")).await?;
    assert_eq!(breach["conversation_id"], conversation_id);
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn away_agents_keep_what_they_hold_and_get_nothing_new() -> TestResult {
    let harness = Harness::start().await?;
    let mut away = harness.online_agent("a1").await?;
    harness.post_webhook(&inbound_text("919600000007", "wamid.away.1", "first")).await?;
    let held = away.expect_type("assigned").await?["conversation"]["id"].clone();
    let answer = away.request(json!({"type": "set_status", "status": "away"})).await?;
    assert_eq!(answer["status"], "away");
    harness.post_webhook(&inbound_text("919600000008", "wamid.away.2", "new customer")).await?;
    let queued = eventually(|| async {
        let (_, body) = harness.get("/api/v1/conversations?status=queued", MANAGER_TOKEN).await.ok()?;
        body["conversations"].as_array()?.first().map(|conversation| conversation["id"].clone())
    })
    .await?;
    // The held conversation still flows to the away agent.
    harness.post_webhook(&inbound_text("919600000007", "wamid.away.3", "still me")).await?;
    let message = away.expect_type("message").await?;
    assert_eq!(message["conversation_id"], held);
    assert!(!away.buffered().iter().any(|frame| frame["type"] == "assigned"), "nothing new while away");
    // Another agent coming online takes the waiting one.
    let mut other = harness.online_agent("a2").await?;
    assert_eq!(other.expect_type("assigned").await?["conversation"]["id"], queued);
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todays_first_response_breaches_survive_a_restart_after_the_conversation_closed() -> TestResult {
    let (mut harness, clock) = harness_with_clock(|config| {
        config.sla.first_response_s = 10;
        config.sla.reassign_after_s = 0;
    })
    .await?;
    let mut agent = harness.online_agent("a1").await?;
    harness.post_webhook(&inbound_text("919600000009", "wamid.frt.closed.1", "hello?")).await?;
    let conversation_id = agent.expect_type("assigned").await?["conversation"]["id"].clone();
    clock.advance_ms(10 * SECOND);
    agent.expect_where(sla_frame("first_response", "breached")).await?;
    let closed = agent
        .request(json!({"type": "close", "conversation_id": conversation_id, "fields": {"outcome": "closed_won"}}))
        .await?;
    assert_eq!(closed["type"], "ok", "{closed}");
    agent.close().await;

    let restarted_clock = ManualClock::new(clock.now_ms_for_test());
    harness.restart(StartOptions { clock: restarted_clock, outbound: None, copilot: None }).await?;
    let (_, workload) = harness.get("/api/v1/workload", MANAGER_TOKEN).await?;
    let breaches = &agent_row(&workload, "a1")["frt_breaches"];
    assert_eq!(breaches, 1, "the closed conversation's breach still counts today: {workload}");
    harness.shutdown().await;
    Ok(())
}
