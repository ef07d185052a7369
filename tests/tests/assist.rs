//! The co-pilot's agent assist (PROTOCOL §11, docs/copilot.md "Agent
//! assist") through the real server: the per-agent toggle over the
//! WebSocket and REST (who may set it, stored across a restart, in the
//! audit log, in the workload frame), and `suggestion` events: a customer
//! message matching a configured reply gives the holder, whose co-pilot is
//! on, one draft with its placeholders filled; none when it is off, none to
//! anyone else; the agent sends it as is and the customer gets it; a
//! reconnection with `resume_from` replays it; a restart drafts what the
//! consumer had not taken in, unless it has grown older than
//! `assist.max_age_s` meanwhile.

use std::sync::Arc;

use actors::clock::ManualClock;
use anyhow::{Context, Result, ensure};
use engine::server::StartOptions;
use serde_json::{Value, json};
use switchboard_tests::{
    Harness, MANAGER_TOKEN, PHONE_NUMBER_ID, Protocol, WsClient, agent_token, eventually, inbound_text, now_s,
};

const LEAD_TOKEN: &str = "lead-token-xyz";
const PRICE_REPLY: &str = "Hi Customer, I'm Asha: the Aero 5 starts at 49,999. Shall I book a test ride?";

fn config() -> String {
    format!(
        r#"
[[numbers]]
phone_number_id = "{PHONE_NUMBER_ID}"
default_team = "sales"

[[teams]]
id = "sales"

[[teams]]
id = "support"

[[agents]]
id = "a1"
name = "Asha"
token = "a1-token-xyz"
teams = ["sales"]

[[agents]]
id = "a2"
name = "Ravi"
token = "a2-token-xyz"
teams = ["support"]

[[agents]]
id = "a3"
token = "a3-token-xyz"
teams = ["support"]
copilot = true

[[agents]]
id = "boss"
role = "manager"
token = "{MANAGER_TOKEN}"

[[agents]]
id = "lead"
role = "manager"
token = "{LEAD_TOKEN}"
manages = ["support"]

[assist]
max_age_s = 120

[[assist.replies]]
match = ["price", "how much"]
text = "Hi {{contact.name}}, I'm {{agent.name}}: the Aero 5 starts at 49,999. Shall I book a test ride?"

[[assist.replies]]
match = ["refund"]
text = "Refunds take five working days."
teams = ["support"]
"#
    )
}

/// `agent_id`'s `copilot` in the workload, as the manager reads it.
async fn workload_copilot(harness: &Harness, agent_id: &str) -> Result<Value> {
    let (status, workload) = harness.get("/api/v1/workload", MANAGER_TOKEN).await?;
    ensure!(status == 200, "{workload}");
    let agent = workload["agents"].as_array().into_iter().flatten().find(|agent| agent["id"] == agent_id);
    Ok(agent.context("agent in the workload")?["copilot"].clone())
}

async fn put_copilot(harness: &Harness, agent_id: &str, token: &str, enabled: Value) -> Result<(u16, Value)> {
    let path = format!("/api/v1/agents/{agent_id}/copilot");
    harness.call(reqwest::Method::PUT, &path, token, Some(&json!({ "enabled": enabled }))).await
}

/// The audit trail's lines filed under `agent_id`.
async fn audit_of(harness: &Harness, agent_id: &str) -> Result<Vec<Value>> {
    let response = harness
        .http
        .get(format!("{}/api/v1/audit?agent={agent_id}", harness.base_url()))
        .bearer_auth(MANAGER_TOKEN)
        .send()
        .await?;
    let text = response.text().await?;
    Ok(text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_toggle_is_per_agent_checked_stored_audited_and_in_the_workload() -> Result<()> {
    let mut harness = Harness::start_on("assist test", &config()).await?;
    assert_eq!(workload_copilot(&harness, "a1").await?, json!(false), "off unless configured");
    assert_eq!(workload_copilot(&harness, "a3").await?, json!(true), "the configuration's default");

    // Over the WebSocket: an agent sets its own, not another's.
    let mut a1 = harness.online_agent("a1").await?;
    let answer = a1.request(json!({"type": "set_copilot", "enabled": true})).await?;
    assert_eq!((answer["type"].as_str(), answer["copilot"].as_bool()), (Some("ok"), Some(true)), "{answer}");
    assert_eq!(answer["agent_id"], "a1");
    let refusal = a1.request(json!({"type": "set_copilot", "enabled": true, "agent_id": "a2"})).await?;
    assert_eq!((refusal["type"].as_str(), refusal["code"].as_str()), (Some("error"), Some("forbidden")), "{refusal}");
    let refusal = a1.request(json!({"type": "set_copilot", "enabled": "yes"})).await?;
    assert_eq!(refusal["code"], "bad_request", "{refusal}");
    assert_eq!(workload_copilot(&harness, "a1").await?, json!(true));

    // Over REST: the agent itself; a manager within its scope only.
    let (status, refusal) = put_copilot(&harness, "a2", &agent_token("a1"), json!(true)).await?;
    assert_eq!((status, refusal["code"].as_str()), (403, Some("forbidden")), "{refusal}");
    let (status, refusal) = put_copilot(&harness, "a1", LEAD_TOKEN, json!(false)).await?;
    assert_eq!((status, refusal["code"].as_str()), (403, Some("forbidden")), "outside its teams: {refusal}");
    let (status, answer) = put_copilot(&harness, "a2", LEAD_TOKEN, json!(true)).await?;
    assert_eq!((status, answer), (200, json!({"agent_id": "a2", "copilot": true})));
    let (status, answer) = put_copilot(&harness, "a3", MANAGER_TOKEN, json!(false)).await?;
    assert_eq!((status, answer["copilot"].as_bool()), (200, Some(false)), "{answer}");
    let (status, refusal) = put_copilot(&harness, "a1", &agent_token("a1"), json!("on")).await?;
    assert_eq!((status, refusal["code"].as_str()), (400, Some("bad_request")), "{refusal}");
    let (status, refusal) = put_copilot(&harness, "nobody", MANAGER_TOKEN, json!(true)).await?;
    assert_eq!((status, refusal["code"].as_str()), (404, Some("not_found")), "{refusal}");
    let (status, answer) = harness.get("/api/v1/agents/a1/copilot", &agent_token("a1")).await?;
    assert_eq!((status, answer), (200, json!({"agent_id": "a1", "copilot": true})));
    let (status, _) = harness.get("/api/v1/agents/a1/copilot", &agent_token("a2")).await?;
    assert_eq!(status, 403);
    let (status, agent) = harness.get("/api/v1/admin/agents/a2", MANAGER_TOKEN).await?;
    assert_eq!((status, agent["copilot"].as_bool()), (200, Some(true)), "{agent}");
    for (agent, expected) in [("a1", true), ("a2", true), ("a3", false)] {
        assert_eq!(workload_copilot(&harness, agent).await?, json!(expected), "{agent}");
    }
    let mut lead = harness.connect(LEAD_TOKEN).await?;
    lead.expect_type("welcome").await?;
    let refusal = lead.request(json!({"type": "set_copilot", "enabled": false, "agent_id": "a1"})).await?;
    assert_eq!(refusal["code"], "forbidden", "a scoped manager, outside its teams: {refusal}");
    let refusal = a1.request(json!({"type": "set_copilot", "enabled": true, "agent_id": "nobody"})).await?;
    assert_eq!(refusal["code"], "forbidden", "an agent learns nothing of other agents: {refusal}");
    lead.close().await;
    let mut boss = harness.connect(MANAGER_TOKEN).await?;
    boss.expect_type("welcome").await?;
    let answer = boss.request(json!({"type": "set_copilot", "enabled": false, "agent_id": "a1"})).await?;
    assert_eq!(answer["copilot"], false, "{answer}");
    assert_eq!(boss.request(json!({"type": "subscribe", "topic": "workload"})).await?["type"], "ok");
    let frame = boss.expect_type("workload").await?;
    let copilot_of = |id: &str| frame["agents"].as_array().into_iter().flatten().find(|a| a["id"] == id).cloned();
    assert_eq!(copilot_of("a1").context("a1")?["copilot"], false, "{frame}");
    assert_eq!(copilot_of("a2").context("a2")?["copilot"], true, "{frame}");

    // Audited: who turned whose co-pilot on or off.
    let toggles = eventually(|| async {
        let lines = audit_of(&harness, "a1").await.ok()?;
        let toggles: Vec<Value> = lines.into_iter().filter(|line| line["action"] == "copilot_toggled").collect();
        (toggles.len() == 2).then_some(toggles)
    })
    .await?;
    assert_eq!(
        (toggles[0]["actor"].as_str(), &toggles[0]["data"]),
        (Some("user:a1"), &json!({"agent_id": "a1", "enabled": true}))
    );
    assert_eq!(
        (toggles[1]["actor"].as_str(), &toggles[1]["data"]),
        (Some("user:boss"), &json!({"agent_id": "a1", "enabled": false}))
    );
    let lead = audit_of(&harness, "a2").await?;
    assert!(lead.iter().any(|line| line["action"] == "copilot_toggled" && line["actor"] == "user:lead"), "{lead:?}");

    // Stored: a restart keeps each choice (a3's off over its configured on).
    a1.close().await;
    boss.close().await;
    harness.restart(Default::default()).await?;
    for (agent, expected) in [("a1", false), ("a2", true), ("a3", false)] {
        assert_eq!(workload_copilot(&harness, agent).await?, json!(expected), "{agent} after a restart");
    }
    harness.shutdown().await;
    Ok(())
}

/// Every frame a fresh session of `agent` is replayed after `seq`.
async fn replayed_after(harness: &Harness, agent: &str, seq: u64) -> Result<Vec<Value>> {
    let mut client = WsClient::connect(&harness.base_url(), &agent_token(agent), Protocol::Json, Some(seq)).await?;
    client.expect_type("welcome").await?;
    // A marker: its answer comes after every replayed event.
    client.request(json!({"type": "set_copilot", "enabled": true, "agent_id": "nobody"})).await?;
    let frames = client.buffered().iter().cloned().collect();
    client.close().await;
    Ok(frames)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_with_the_copilot_on_gets_a_draft_it_can_send_as_is() -> Result<()> {
    let harness = Harness::start_on("assist test", &config()).await?;
    let mut a1 = harness.online_agent("a1").await?;
    // a2, on and online, holds nothing of this: it must get nothing.
    let mut a2 = harness.online_agent("a2").await?;
    assert_eq!(a2.request(json!({"type": "set_copilot", "enabled": true})).await?["copilot"], true);
    assert_eq!(a1.request(json!({"type": "set_copilot", "enabled": true})).await?["copilot"], true);

    let customer = "919700000001";
    let (status, _) = harness.post_webhook(&inbound_text(customer, "wamid.assist.1", "hello")).await?;
    ensure!(status == 200);
    let conversation = a1.expect_type("assigned").await?["conversation"]["id"].as_str().context("id")?.to_owned();

    // A question a reply matches: one draft, to the holder, filled in.
    let (status, _) = harness.post_webhook(&inbound_text(customer, "wamid.assist.2", "What's the PRICE?")).await?;
    ensure!(status == 200);
    let message =
        a1.expect_where(|frame| frame["type"] == "message" && frame["message"]["text"] == "What's the PRICE?");
    let message = message.await?;
    let suggestion = a1.expect_type("suggestion").await?;
    assert_eq!(suggestion["conversation_id"], json!(conversation), "{suggestion}");
    assert_eq!(suggestion["text"], PRICE_REPLY);
    let seq = suggestion["seq"].as_u64().context("a suggestion is an event with a seq")?;
    assert!(seq > message["seq"].as_u64().context("seq")?, "after the message it answers");

    // Sent as is with the ordinary `send`: the customer gets it.
    let sent = a1.request(json!({"type": "send", "conversation_id": conversation, "text": PRICE_REPLY})).await?;
    assert_eq!(sent["type"], "ok", "{sent}");
    let delivered = eventually(|| async {
        harness.emulator.requests().into_iter().find(|request| request.body["text"]["body"] == PRICE_REPLY)
    })
    .await?;
    assert_eq!(delivered.body["to"], customer);

    // Replayed with resume_from, as every event.
    let replay = replayed_after(&harness, "a1", seq - 1).await?;
    let replayed: Vec<&Value> = replay.iter().filter(|frame| frame["type"] == "suggestion").collect();
    assert_eq!(replayed.len(), 1, "{replay:?}");
    assert_eq!((replayed[0]["seq"].as_u64(), &replayed[0]["text"]), (Some(seq), &json!(PRICE_REPLY)));

    // Off: the same question gets nothing; nor does a message no reply matches.
    assert_eq!(a1.request(json!({"type": "set_copilot", "enabled": false})).await?["copilot"], false);
    let last = a1.expect_where(|frame| frame["type"] == "message" && frame["message"]["text"] == PRICE_REPLY).await?;
    let (status, _) = harness.post_webhook(&inbound_text(customer, "wamid.assist.3", "how much again?")).await?;
    ensure!(status == 200);
    a1.expect_where(|frame| frame["type"] == "message" && frame["message"]["text"] == "how much again?").await?;
    // Taken in while it is off (a draft is decided when the consumer gets to it).
    harness.settle_suggestions().await;
    assert_eq!(a1.request(json!({"type": "set_copilot", "enabled": true})).await?["copilot"], true);
    let (status, _) = harness.post_webhook(&inbound_text(customer, "wamid.assist.4", "ok thanks")).await?;
    ensure!(status == 200);
    a1.expect_where(|frame| frame["type"] == "message" && frame["message"]["text"] == "ok thanks").await?;
    harness.settle_suggestions().await;
    let after = replayed_after(&harness, "a1", last["seq"].as_u64().context("seq")?).await?;
    let kinds: Vec<&str> = after.iter().filter_map(|frame| frame["type"].as_str()).collect();
    assert!(after.iter().any(|frame| frame["message"]["text"] == "ok thanks"), "{kinds:?}");
    assert!(!kinds.contains(&"suggestion"), "none while off, none without a match: {after:?}");
    let others = replayed_after(&harness, "a2", 0).await?;
    assert!(others.iter().all(|frame| frame["type"] != "suggestion"), "nobody else gets one: {others:?}");
    a2.close().await;
    a1.close().await;
    harness.shutdown().await;
    Ok(())
}

fn options(clock: &Arc<ManualClock>) -> StartOptions {
    StartOptions { clock: clock.clone(), ..StartOptions::default() }
}

/// The drafting consumer stops here, as a crash before it took in the
/// log's last events would leave it.
async fn stop_drafting(harness: &Harness) {
    if let Some(suggestions) = harness.server().state.suggestions.get() {
        suggestions.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_drafts_what_was_not_taken_in_unless_it_grew_stale() -> Result<()> {
    let clock = ManualClock::new(now_s() * 1000);
    let mut harness = Harness::start_on_with(options(&clock), "assist test", &self::config()).await?;
    let mut a1 = harness.online_agent("a1").await?;
    assert_eq!(a1.request(json!({"type": "set_copilot", "enabled": true})).await?["copilot"], true);
    let customer = "919700000002";
    let (status, _) = harness.post_webhook(&inbound_text(customer, "wamid.restart.1", "hello")).await?;
    ensure!(status == 200);
    a1.expect_type("assigned").await?;
    harness.settle_suggestions().await;

    // Asked while nothing drafts: after a restart (at once) the draft comes.
    stop_drafting(&harness).await;
    let (status, _) = harness.post_webhook(&inbound_text(customer, "wamid.restart.2", "price please")).await?;
    ensure!(status == 200);
    let asked = a1.expect_where(|frame| frame["type"] == "message" && frame["message"]["text"] == "price please");
    let asked = asked.await?["seq"].as_u64().context("seq")?;
    a1.close().await;
    harness.restart(options(&clock)).await?;
    harness.settle_suggestions().await;
    let replay = replayed_after(&harness, "a1", asked).await?;
    let drafts: Vec<&Value> = replay.iter().filter(|frame| frame["type"] == "suggestion").collect();
    assert_eq!(drafts.len(), 1, "one draft, made after the restart: {replay:?}");
    assert_eq!(drafts[0]["text"], PRICE_REPLY);
    let drafted = drafts[0]["seq"].as_u64().context("seq")?;

    // Asked, then the engine is down for ten minutes: no draft for it.
    stop_drafting(&harness).await;
    let (status, _) = harness.post_webhook(&inbound_text(customer, "wamid.restart.3", "how much?")).await?;
    ensure!(status == 200);
    harness.restart_after(options(&clock), || clock.advance_ms(10 * 60_000)).await?;
    harness.settle_suggestions().await;
    let replay = replayed_after(&harness, "a1", drafted).await?;
    assert!(replay.iter().any(|frame| frame["message"]["text"] == "how much?"), "{replay:?}");
    assert!(replay.iter().all(|frame| frame["type"] != "suggestion"), "a stale message got a draft: {replay:?}");
    harness.shutdown().await;
    Ok(())
}
