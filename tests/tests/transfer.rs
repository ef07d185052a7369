//! `transfer` exactly as contract §7 says, over WebSocket and REST: to a
//! team, to an agent, to an agent that cannot take it (offline, at
//! capacity: `capacity_exhausted`, its capacity never exceeded), both or
//! neither given (`bad_request`), unknown targets (`not_found`), and who may
//! transfer what (an agent only its own conversations, a manager any).

use actors::settings::TeamSpec;
use anyhow::{Result, anyhow};
use engine::server::StartOptions;
use serde_json::{Value, json};
use switchboard_tests::{Harness, MANAGER_TOKEN, WsClient, agent_token, inbound_text};

/// Team `sales` (a1, a2) and team `support` (a3, capacity 1), a manager.
async fn start() -> Result<Harness> {
    Harness::start_with(StartOptions::default(), |config| {
        config.teams.push(TeamSpec { id: "support".into(), ..Default::default() });
        let a3 = config.agents.iter_mut().find(|agent| agent.id == "a3").expect("a3 is configured");
        a3.teams = vec!["support".into()];
        a3.capacity = Some(1);
    })
    .await
}

/// A customer writes; `agent` (the only one online in sales) gets it.
async fn assigned_to(harness: &Harness, agent: &mut WsClient, customer: &str) -> Result<String> {
    let (status, _) = harness.post_webhook(&inbound_text(customer, &format!("wamid.t.{customer}"), "hello")).await?;
    anyhow::ensure!(status == 200, "webhook answered {status}");
    let frame = agent.expect_type("assigned").await?;
    frame["conversation"]["id"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no id in {frame}"))
}

async fn rest_transfer(harness: &Harness, token: &str, id: &str, body: Value) -> Result<(u16, Value)> {
    harness.post(&format!("/api/v1/conversations/{id}/transfer"), token, &body).await
}

fn code(answer: &Value) -> &str {
    answer["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn transfers_go_to_exactly_one_eligible_target_and_say_why() -> Result<()> {
    let harness = start().await?;
    let mut a1 = harness.online_agent("a1").await?;
    let first = assigned_to(&harness, &mut a1, "919800000301").await?;
    let mut a2 = harness.online_agent("a2").await?;

    // Both or neither: refused, over WebSocket and REST alike.
    let both =
        a1.request(json!({"type": "transfer", "conversation_id": first, "team": "support", "agent": "a2"})).await?;
    assert_eq!((both["type"].as_str(), code(&both)), (Some("error"), "bad_request"), "{both}");
    let neither = a1.request(json!({"type": "transfer", "conversation_id": first})).await?;
    assert_eq!(code(&neither), "bad_request", "{neither}");
    let (status, answer) =
        rest_transfer(&harness, MANAGER_TOKEN, &first, json!({"team": "support", "agent": "a2"})).await?;
    assert_eq!((status, code(&answer)), (400, "bad_request"), "{answer}");
    let (status, answer) = rest_transfer(&harness, MANAGER_TOKEN, &first, json!({})).await?;
    assert_eq!((status, code(&answer)), (400, "bad_request"), "{answer}");
    // Unknown targets.
    let nobody = a1.request(json!({"type": "transfer", "conversation_id": first, "agent": "zz"})).await?;
    assert_eq!(code(&nobody), "not_found", "{nobody}");
    let nowhere = a1.request(json!({"type": "transfer", "conversation_id": first, "team": "zz"})).await?;
    assert_eq!(code(&nowhere), "not_found", "{nowhere}");
    // An agent that is not online cannot take it: a3 has never connected.
    let offline = a1.request(json!({"type": "transfer", "conversation_id": first, "agent": "a3"})).await?;
    assert_eq!(code(&offline), "capacity_exhausted", "{offline}");
    // Only the holder (or a manager) may transfer it.
    let stranger = a2.request(json!({"type": "transfer", "conversation_id": first, "agent": "a2"})).await?;
    assert_eq!(code(&stranger), "forbidden", "{stranger}");
    let (status, answer) = rest_transfer(&harness, &agent_token("a2"), &first, json!({"team": "support"})).await?;
    assert_eq!((status, code(&answer)), (403, "forbidden"), "{answer}");

    // The holder hands it to a2 over WebSocket, with a note.
    let answer = a1
        .request(json!({"type": "transfer", "conversation_id": first, "agent": "a2", "note": "wants a callback at 5"}))
        .await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    let gone = a1.expect_type("unassigned").await?;
    assert_eq!(
        (gone["conversation_id"].as_str(), gone["reason"].as_str()),
        (Some(first.as_str()), Some("transferred"))
    );
    let taken = a2.expect_type("assigned").await?;
    assert_eq!(
        (taken["conversation"]["id"].as_str(), taken["route"].clone()),
        (Some(first.as_str()), json!({"reason": "transfer"}))
    );
    assert!(
        taken["conversation"]["messages"].as_array().is_some_and(|messages| !messages.is_empty()),
        "with its messages"
    );
    // The old holder may no longer act on it.
    let late = a1.request(json!({"type": "send", "conversation_id": first, "text": "hi"})).await?;
    assert_eq!(code(&late), "forbidden", "{late}");

    // A manager sends it to the support team over REST; a3 comes online and gets it.
    let (status, answer) = rest_transfer(&harness, MANAGER_TOKEN, &first, json!({"team": "support"})).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["conversation"]["team"].as_str(), answer["conversation"]["status"].as_str()),
        (Some("support"), Some("queued"))
    );
    let gone = a2.expect_type("unassigned").await?;
    assert_eq!(gone["reason"], "transferred");
    let mut a3 = harness.online_agent("a3").await?;
    let taken = a3.expect_type("assigned").await?;
    assert_eq!(
        (taken["conversation"]["id"].as_str(), taken["route"].clone()),
        (Some(first.as_str()), json!({"reason": "transfer", "from_team": "sales"})),
        "the new team's agent sees where it came from"
    );

    // a3 is now at its capacity (1): it cannot be given a second one.
    let away = a2.request(json!({"type": "set_status", "status": "away"})).await?;
    assert_eq!(away["type"], "ok", "{away}");
    let second = assigned_to(&harness, &mut a1, "919800000302").await?;
    let (status, answer) = rest_transfer(&harness, MANAGER_TOKEN, &second, json!({"agent": "a3"})).await?;
    assert_eq!((status, code(&answer)), (409, "capacity_exhausted"), "{answer}");
    let (_, workload) = harness.get("/api/v1/workload", MANAGER_TOKEN).await?;
    let a3_load =
        workload["agents"].as_array().and_then(|agents| agents.iter().find(|agent| agent["id"] == "a3")).cloned();
    assert_eq!(
        a3_load.map(|agent| agent["assigned"].clone()),
        Some(json!(1)),
        "capacity is never exceeded: {workload}"
    );

    // The audit trail keeps who moved it, where, and the note.
    let trail = harness
        .http
        .get(format!("{}/api/v1/audit?contact=919800000301", harness.base_url()))
        .bearer_auth(MANAGER_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    let transfers: Vec<Value> = trail
        .lines()
        .map(serde_json::from_str::<Value>)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|entry| entry["action"] == "transferred")
        .collect();
    assert_eq!(transfers.len(), 2, "{trail}");
    assert_eq!(
        (transfers[0]["actor"].as_str(), transfers[0]["data"]["note"].as_str()),
        (Some("user:a1"), Some("wants a callback at 5"))
    );
    assert_eq!(
        (transfers[1]["actor"].as_str(), transfers[1]["data"]["to_team"].as_str()),
        (Some("user:boss"), Some("support"))
    );

    for client in [a1, a2, a3] {
        client.close().await;
    }
    harness.shutdown().await;
    Ok(())
}
