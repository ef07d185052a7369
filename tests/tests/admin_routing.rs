//! The routing rules' admin API (contract §7) through the real server:
//! `GET /api/v1/admin/routing` for managers and admins, `PUT` for admins;
//! a refused configuration names the rule and the field and changes
//! nothing; an accepted one routes the next new conversation without a
//! restart, is in the audit trail as the admin's `configuration_changed`,
//! and is still in force after a restart; the file's rules set again are
//! the file's; stored rules that no longer fit the file give way to it.

use anyhow::{Result, anyhow};
use engine::server::StartOptions;
use serde_json::{Value, json};
use switchboard_tests::{Harness, MANAGER_TOKEN, WsClient, assigned_after, message_webhook, text_message};

const LINE: &str = "111000000000001";
const ADMIN_TOKEN: &str = "root-token-xyz";
const AGENT_TOKEN: &str = "s1-token-xyz";
const PATH: &str = "/api/v1/admin/routing";

/// Teams, agents and the file's rule after the harness's `config_head`.
fn config() -> String {
    format!(
        r#"
[[numbers]]
phone_number_id = "{LINE}"
default_team = "sales"

[[teams]]
id = "sales"

[[teams]]
id = "support"

[[teams]]
id = "vip_desk"

[[agents]]
id = "s1"
token = "{AGENT_TOKEN}"
teams = ["sales"]

[[agents]]
id = "p1"
token = "p1-token-xyz"
teams = ["support"]

[[agents]]
id = "v1"
token = "v1-token-xyz"
teams = ["vip_desk"]

[[agents]]
id = "boss"
role = "manager"
token = "{MANAGER_TOKEN}"

[[agents]]
id = "root"
role = "admin"
token = "{ADMIN_TOKEN}"

[[routing.rules]]
id = "refunds"
text_any = ["refund"]
to_team = "support"
"#
    )
}

/// The configuration file's `[routing]`, as the API shows it.
fn file_rules() -> Value {
    json!({"owner_policy": "last_closer", "owner_wait_s": 0,
           "rules": [{"id": "refunds", "text_any": ["refund"], "to_team": "support"}]})
}

/// An `urgent` rule first, then the file's.
fn urgent_rules(team: &str) -> Value {
    json!({"owner_policy": "last_closer", "owner_wait_s": 0, "rules": [
        {"id": "urgent", "text_any": ["urgent"], "to_team": team},
        {"id": "refunds", "text_any": ["refund"], "to_team": "support"},
    ]})
}

async fn start() -> Result<Harness> {
    Harness::start_on("admin routing test", &config()).await
}

async fn put(harness: &Harness, token: &str, body: &Value) -> Result<(u16, Value)> {
    let response =
        harness.http.put(format!("{}{PATH}", harness.base_url())).bearer_auth(token).json(body).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// Posts a new customer's message and waits for the `assigned` frame on
/// `agent`'s session; returns the conversation's team and the route.
async fn routed_to(harness: &Harness, agent: &mut WsClient, from: &str, body: &str) -> Result<(Value, Value)> {
    let webhook = message_webhook(LINE, from, &format!("wamid.{from}"), text_message(body));
    let (conversation, route) = assigned_after(harness, agent, &webhook).await?;
    Ok((conversation["team"].clone(), route))
}

async fn routing_now(harness: &Harness) -> Result<Value> {
    let (status, rules) = harness.get(PATH, ADMIN_TOKEN).await?;
    anyhow::ensure!(status == 200, "GET answered {status}: {rules}");
    Ok(rules)
}

async fn audit_entries(harness: &Harness, query: &str) -> Result<Vec<Value>> {
    let response = harness
        .http
        .get(format!("{}/api/v1/audit?{query}", harness.base_url()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "audit answered {}", response.status());
    Ok(response.text().await?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?)
}

#[tokio::test]
async fn admins_change_the_routing_rules_at_run_time_audited_and_kept_across_a_restart() -> Result<()> {
    let mut harness = start().await?;

    // Who may read and change them.
    assert_eq!(routing_now(&harness).await?, file_rules());
    assert_eq!(harness.get(PATH, MANAGER_TOKEN).await?, (200, file_rules()), "a manager reads them");
    let (status, refusal) = harness.get(PATH, AGENT_TOKEN).await?;
    assert_eq!((status, refusal["code"].as_str()), (403, Some("forbidden")), "an agent does not: {refusal}");
    let (status, refusal) = harness.get(PATH, "no-such-token").await?;
    assert_eq!((status, refusal["code"].as_str()), (401, Some("unauthorized")), "{refusal}");
    for token in [MANAGER_TOKEN, AGENT_TOKEN] {
        let (status, refusal) = put(&harness, token, &urgent_rules("support")).await?;
        assert_eq!((status, refusal["code"].as_str()), (403, Some("forbidden")), "only admins change them: {refusal}");
    }

    let mut s1 = harness.online_agent("s1").await?;
    let mut p1 = harness.online_agent("p1").await?;
    // Before any change: "urgent" matches no rule.
    let (team, route) = routed_to(&harness, &mut s1, "919800000001", "urgent: my scooter").await?;
    assert_eq!((team, route), (json!("sales"), json!({"reason": "default"})));

    // A rule naming an unknown team: refused whole, with the rule and the field; nothing changes.
    let (status, refusal) = put(&harness, ADMIN_TOKEN, &urgent_rules("nowhere")).await?;
    assert_eq!((status, refusal["code"].as_str()), (422, Some("invalid_field")), "{refusal}");
    let message = refusal["message"].as_str().unwrap_or_default();
    assert!(message.contains("urgent") && message.contains("to_team") && message.contains("nowhere"), "{refusal}");
    assert_eq!(
        (refusal["detail"]["rule"].as_str(), refusal["detail"]["field"].as_str()),
        (Some("urgent"), Some("to_team"))
    );
    // A field no rule has: refused, named by its path.
    let mut misspelt = urgent_rules("support");
    misspelt["rules"][0]["to_tem"] = json!("support");
    let (status, refusal) = put(&harness, ADMIN_TOKEN, &misspelt).await?;
    assert_eq!((status, refusal["detail"]["rule"].as_str()), (422, Some("urgent")), "{refusal}");
    assert!(refusal["message"].as_str().unwrap_or_default().contains("to_tem"), "{refusal}");
    assert_eq!(routing_now(&harness).await?, file_rules(), "a refused PUT changes nothing");
    let (team, route) = routed_to(&harness, &mut s1, "919800000002", "urgent again").await?;
    assert_eq!((team, route), (json!("sales"), json!({"reason": "default"})), "routing is unchanged");

    // Accepted: answered, shown, and the next new conversation routes by it, without a restart.
    let (status, answer) = put(&harness, ADMIN_TOKEN, &urgent_rules("support")).await?;
    assert_eq!((status, answer), (200, urgent_rules("support")));
    assert_eq!(routing_now(&harness).await?, urgent_rules("support"));
    let (team, route) = routed_to(&harness, &mut p1, "919800000003", "URGENT: my bike won't start").await?;
    assert_eq!((team, route), (json!("support"), json!({"reason": "rule", "rule": "urgent"})));

    // Audited once (the refused PUTs wrote nothing), as the admin's.
    let changes: Vec<Value> = audit_entries(&harness, "agent=root")
        .await?
        .into_iter()
        .filter(|entry| entry["action"] == "configuration_changed")
        .collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let change = &changes[0];
    assert_eq!((change["actor"].as_str(), change["data"]["section"].as_str()), (Some("user:root"), Some("routing")));
    assert_eq!(change["data"]["detail"], json!({"before": file_rules(), "after": urgent_rules("support")}));
    assert_eq!((change["contact"].clone(), change["conversation_id"].clone()), (Value::Null, Value::Null));
    let (status, verified) = harness.get("/api/v1/audit/verify", ADMIN_TOKEN).await?;
    assert_eq!((status, verified["ok"].as_bool()), (200, Some(true)), "{verified}");

    // A restart keeps them in force.
    s1.close().await;
    p1.close().await;
    harness.restart(StartOptions::default()).await?;
    assert_eq!(routing_now(&harness).await?, urgent_rules("support"), "after a restart");
    let mut p1 = harness.online_agent("p1").await?;
    let mut s1 = harness.online_agent("s1").await?;
    let (team, route) = routed_to(&harness, &mut p1, "919800000004", "urgent after the restart").await?;
    assert_eq!((team, route), (json!("support"), json!({"reason": "rule", "rule": "urgent"})));

    // The file's rules set again are the file's: followed again.
    let (status, answer) = put(&harness, ADMIN_TOKEN, &file_rules()).await?;
    assert_eq!((status, answer), (200, file_rules()));
    let (team, route) = routed_to(&harness, &mut s1, "919800000005", "urgent once more").await?;
    assert_eq!((team, route), (json!("sales"), json!({"reason": "default"})));

    s1.close().await;
    p1.close().await;
    harness.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn stored_rules_that_no_longer_fit_the_file_give_way_to_the_files() -> Result<()> {
    let mut harness = start().await?;
    let (status, answer) = put(&harness, ADMIN_TOKEN, &urgent_rules("vip_desk")).await?;
    assert_eq!((status, answer), (200, urgent_rules("vip_desk")));
    // The team the stored rule names is taken out of the file: the engine
    // still starts, with the file's rules.
    let server = harness.server.take().ok_or_else(|| anyhow!("not running"))?;
    let mut config = server.state.config.clone();
    server.shutdown().await;
    config.server.listen = "127.0.0.1:0".to_owned();
    config.teams.retain(|team| team.id != "vip_desk");
    config.agents.retain(|agent| agent.id != "v1");
    harness.server = Some(engine::server::start(config, StartOptions::default()).await?);
    harness.emulator.set_webhook_url(Some(sim::webhook::webhook_url(&harness.base_url())));
    assert_eq!(routing_now(&harness).await?, file_rules());
    let mut s1 = harness.online_agent("s1").await?;
    let (team, route) = routed_to(&harness, &mut s1, "919800000011", "urgent").await?;
    assert_eq!((team, route), (json!("sales"), json!({"reason": "default"})));
    s1.close().await;
    harness.shutdown().await;
    Ok(())
}

/// Concurrent `PUT`s are applied one after the other: each audited change
/// starts from the one before it, and the last one audited is in force.
#[tokio::test]
async fn concurrent_puts_apply_one_after_the_other() -> Result<()> {
    let harness = start().await?;
    let bodies: Vec<Value> = (0..6)
        .map(|index| json!({"rules": [{"id": format!("rule_{index}"), "text_any": ["urgent"], "to_team": "support"}]}))
        .collect();
    let answers = futures_util::future::join_all(bodies.iter().map(|body| put(&harness, ADMIN_TOKEN, body))).await;
    for answer in answers {
        assert_eq!(answer?.0, 200);
    }
    let changes: Vec<Value> = audit_entries(&harness, "agent=root")
        .await?
        .into_iter()
        .filter(|entry| entry["action"] == "configuration_changed")
        .collect();
    assert_eq!(changes.len(), bodies.len());
    assert_eq!(changes[0]["data"]["detail"]["before"], file_rules());
    for pair in changes.windows(2) {
        assert_eq!(pair[1]["data"]["detail"]["before"], pair[0]["data"]["detail"]["after"], "{pair:?}");
    }
    let last = &changes[changes.len() - 1]["data"]["detail"]["after"];
    assert_eq!(&routing_now(&harness).await?, last, "the last change audited is in force");
    harness.shutdown().await;
    Ok(())
}
