//! A manager limited to teams (`manages`, issue #13 item 6) through the real
//! server: the conversations it lists, reads and acts on, the workload it
//! sees (REST and WebSocket) and its reports cover its teams only; an
//! unlimited manager sees everything.

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use switchboard_tests::{Harness, MANAGER_TOKEN, message_webhook, text_message};

const LINE: &str = "111000000000001";
const LEAD_TOKEN: &str = "lead-token-xyz";

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

[[agents]]
id = "s1"
token = "s1-token-xyz"
teams = ["sales"]

[[agents]]
id = "p1"
token = "p1-token-xyz"
teams = ["support"]

[[agents]]
id = "boss"
role = "manager"
token = "{MANAGER_TOKEN}"

[[agents]]
id = "lead"
role = "manager"
token = "{LEAD_TOKEN}"
manages = ["support"]

[[routing.rules]]
id = "refunds"
text_any = ["refund"]
to_team = "support"
"#
    )
}

fn ids(list: &Value, key: &str, field: &str) -> Vec<String> {
    let mut ids: Vec<String> =
        list[key].as_array().into_iter().flatten().filter_map(|item| item[field].as_str().map(str::to_owned)).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_limited_to_teams_sees_and_acts_on_their_conversations_only() -> Result<()> {
    let harness = Harness::start_on("scoped managers test", &config()).await?;
    let mut s1 = harness.online_agent("s1").await?;
    let mut p1 = harness.online_agent("p1").await?;
    for (from, body) in [("919400000001", "price?"), ("919400000002", "refund please")] {
        let (status, _) =
            harness.post_webhook(&message_webhook(LINE, from, &format!("wamid.{from}"), text_message(body))).await?;
        ensure!(status == 200);
    }
    let sales = s1.expect_type("assigned").await?["conversation"]["id"].as_str().unwrap().to_owned();
    let support = p1.expect_type("assigned").await?["conversation"]["id"].as_str().unwrap().to_owned();

    // Lists and reads.
    let (_, all) = harness.get("/api/v1/conversations", MANAGER_TOKEN).await?;
    assert_eq!(ids(&all, "conversations", "id").len(), 2, "an unlimited manager sees both: {all}");
    let (status, mine) = harness.get("/api/v1/conversations", LEAD_TOKEN).await?;
    assert_eq!((status, ids(&mine, "conversations", "id")), (200, vec![support.clone()]), "{mine}");
    let (status, _) = harness.get(&format!("/api/v1/conversations/{support}"), LEAD_TOKEN).await?;
    assert_eq!(status, 200);
    let (status, refusal) = harness.get(&format!("/api/v1/conversations/{sales}"), LEAD_TOKEN).await?;
    assert_eq!((status, refusal["code"].as_str()), (403, Some("forbidden")), "{refusal}");

    // Acts: a message in its team's conversation, not in another's.
    let (status, refusal) =
        harness.post(&format!("/api/v1/conversations/{sales}/messages"), LEAD_TOKEN, &json!({"text": "hello"})).await?;
    assert_eq!((status, refusal["code"].as_str()), (403, Some("forbidden")), "{refusal}");
    let (status, sent) = harness
        .post(&format!("/api/v1/conversations/{support}/messages"), LEAD_TOKEN, &json!({"text": "on it"}))
        .await?;
    assert_eq!(status, 200, "{sent}");

    // The workload, by REST and over the WebSocket.
    let (_, workload) = harness.get("/api/v1/workload", LEAD_TOKEN).await?;
    assert_eq!(
        (ids(&workload, "teams", "id"), ids(&workload, "agents", "id")),
        (vec!["support".to_owned()], vec!["p1".to_owned()])
    );
    let (_, workload) = harness.get("/api/v1/workload", MANAGER_TOKEN).await?;
    assert_eq!(ids(&workload, "agents", "id"), ["p1", "s1"]);
    let mut lead = harness.connect(LEAD_TOKEN).await?;
    lead.expect_type("welcome").await?;
    let answer = lead.request(json!({"type": "subscribe", "topic": "workload"})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    let frame = lead.expect_type("workload").await?;
    assert_eq!(
        (ids(&frame, "teams", "id"), ids(&frame, "agents", "id")),
        (vec!["support".to_owned()], vec!["p1".to_owned()])
    );
    harness.shutdown().await;
    Ok(())
}
