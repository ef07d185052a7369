//! Meta's Conversions API for business messaging (PROTOCOL §10,
//! docs/integrations.md), black-box: the real server with `[capi]`, the
//! built-in emulator as Meta (it checks the token and the body's shape and
//! keeps the events it accepted). Paid conversations qualified (assigned)
//! and won send exactly one event of each, organic ones none, and a second
//! assignment, a failed attempt, or a restart sends nothing twice.

use std::sync::Arc;

use actors::clock::ManualClock;
use engine::server::StartOptions;
use serde_json::{Value, json};
use sim::emulator::Failure;
use switchboard_tests::{Harness, MANAGER_TOKEN, WsClient, eventually, message_webhook, now_s};

type TestResult = anyhow::Result<()>;

const DATASET: &str = "1234567890";
const WABA: &str = "102290129340398";
const NUMBER: &str = "100000000000001";

const CONFIG: &str = r#"
[[teams]]
id = "sales"

[[agents]]
id = "a1"
token = "a1-token-xyz"
teams = ["sales"]
capacity = 50

[[agents]]
id = "a2"
token = "a2-token-xyz"
teams = ["sales"]
capacity = 50

[[agents]]
id = "boss"
role = "manager"
token = "manager-token-1"

[[dispositions]]
key = "outcome"
kind = "enum"
options = ["closed_won", "lost"]
won_values = ["closed_won"]

[[dispositions]]
key = "amount"
kind = "money"

[capi]
dataset_id = "1234567890"
waba_id = "102290129340398"
currency = "INR"

[outbox]
backoff_base_ms = 1000
backoff_max_ms = 4000
tick_ms = 20
"#;

async fn start(clock: Arc<ManualClock>) -> anyhow::Result<Harness> {
    let options = StartOptions { clock, ..StartOptions::default() };
    Harness::start_on_with(options, "capi test", CONFIG).await
}

/// A customer writes (from an ad when `clid` is given); `agent` gets the
/// conversation. Returns its id.
async fn arrives(
    harness: &Harness,
    agent: &mut WsClient,
    customer: &str,
    clid: Option<&str>,
) -> anyhow::Result<String> {
    let mut message = json!({"type": "text", "text": {"body": "is it available?"}});
    if let Some(clid) = clid {
        message["referral"] = json!({"source_url": "https://fb.me/x", "source_type": "ad",
            "source_id": "120200000000001", "headline": "Test drive", "ctwa_clid": clid});
    }
    let (status, _) =
        harness.post_webhook(&message_webhook(NUMBER, customer, &format!("wamid.{customer}"), message)).await?;
    anyhow::ensure!(status == 200);
    let frame = agent.expect_type("assigned").await?;
    Ok(frame["conversation"]["id"].as_str().unwrap_or_default().to_owned())
}

/// As [`arrives`], when any agent may get it: its id, once it is assigned.
async fn arrives_anywhere(harness: &Harness, customer: &str, clid: Option<&str>) -> anyhow::Result<String> {
    let mut message = json!({"type": "text", "text": {"body": "is it available?"}});
    if let Some(clid) = clid {
        message["referral"] = json!({"source_url": "https://fb.me/x", "source_type": "ad",
            "source_id": "120200000000001", "headline": "Test drive", "ctwa_clid": clid});
    }
    let (status, _) =
        harness.post_webhook(&message_webhook(NUMBER, customer, &format!("wamid.{customer}"), message)).await?;
    anyhow::ensure!(status == 200);
    eventually(|| async {
        let (_, list) = harness.get("/api/v1/conversations", MANAGER_TOKEN).await.ok()?;
        list["conversations"].as_array()?.iter().find_map(|conversation| {
            (conversation["contact"]["wa_id"] == customer && conversation["status"] == "assigned")
                .then(|| conversation["id"].as_str().unwrap_or_default().to_owned())
        })
    })
    .await
}

async fn close(harness: &Harness, id: &str, fields: Value) -> TestResult {
    let (status, answer) =
        harness.post(&format!("/api/v1/conversations/{id}/close"), MANAGER_TOKEN, &json!({"fields": fields})).await?;
    anyhow::ensure!(status == 200, "close: {answer}");
    Ok(())
}

async fn transfer(harness: &Harness, id: &str, agent: &str) -> TestResult {
    let (status, answer) =
        harness.post(&format!("/api/v1/conversations/{id}/transfer"), MANAGER_TOKEN, &json!({"agent": agent})).await?;
    anyhow::ensure!(status == 200, "transfer: {answer}");
    Ok(())
}

async fn outbox_empty(harness: &Harness) -> TestResult {
    eventually(|| async {
        let (status, answer) = harness.get("/api/v1/outbox", MANAGER_TOKEN).await.ok()?;
        (status == 200 && answer["deliveries"].as_array().is_some_and(Vec::is_empty)).then_some(())
    })
    .await
}

/// The events the emulator accepted for a conversation, by name.
fn events_of(harness: &Harness, conversation: &str) -> Vec<(String, Value)> {
    harness
        .emulator
        .conversions()
        .into_iter()
        .filter(|conversion| {
            conversion.event["event_id"].as_str().is_some_and(|id| id.starts_with(&format!("{conversation}.")))
        })
        .map(|conversion| {
            assert_eq!(conversion.dataset_id, DATASET);
            (conversion.event["event_name"].as_str().unwrap_or_default().to_owned(), conversion.event)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_conversations_send_one_qualified_lead_and_one_purchase_each_and_organic_none() -> TestResult {
    let clock = ManualClock::new(now_s() * 1000);
    let mut harness = start(clock.clone()).await?;
    let mut a1 = harness.online_agent("a1").await?;

    // Meta's first answer is a 500: the QualifiedLead of `won` is retried.
    harness.emulator.fail_next(Failure { http_status: 500, code: 1, message: "An unknown error occurred".into() }, 1);
    let won = arrives(&harness, &mut a1, "919700000001", Some("clid-won")).await?;
    let dead_end = eventually(|| async {
        let (_, answer) = harness.get("/api/v1/outbox", MANAGER_TOKEN).await.ok()?;
        answer["deliveries"].as_array()?.iter().find(|delivery| delivery["attempts"] == 1).cloned()
    })
    .await?;
    assert_eq!(dead_end["connector"], "capi");
    assert_eq!(dead_end["event_type"], "QualifiedLead");
    assert!(dead_end["last_error"].as_str().unwrap_or_default().starts_with("HTTP 500: {"), "{dead_end}");
    clock.advance_ms(4_000);
    let lost = arrives(&harness, &mut a1, "919700000002", Some("clid-lost")).await?;
    let organic = arrives(&harness, &mut a1, "919700000003", None).await?;

    // A second assignment (a transfer) qualifies nothing again.
    let _a2 = harness.online_agent("a2").await?;
    transfer(&harness, &won, "a2").await?;
    close(&harness, &won, json!({"outcome": "closed_won", "amount": 2500})).await?;
    close(&harness, &lost, json!({"outcome": "lost", "amount": 100})).await?;
    close(&harness, &organic, json!({"outcome": "closed_won", "amount": 700})).await?;
    outbox_empty(&harness).await?;

    // `later`'s QualifiedLead fails and is still pending at a restart: it is
    // delivered after it, once; the memory holds, so a transfer then
    // qualifies nothing again; then it is won.
    harness
        .emulator
        .fail_next(Failure { http_status: 503, code: 2, message: "Service temporarily unavailable".into() }, 1);
    let later = arrives_anywhere(&harness, "919700000004", Some("clid-later")).await?;
    eventually(|| async {
        let (_, answer) = harness.get("/api/v1/outbox", MANAGER_TOKEN).await.ok()?;
        let deliveries = answer["deliveries"].as_array()?.clone();
        (deliveries.len() == 1 && deliveries[0]["attempts"] == 1).then_some(())
    })
    .await?;
    assert!(events_of(&harness, &later).is_empty());
    harness.restart(StartOptions { clock: clock.clone(), ..StartOptions::default() }).await?;
    clock.advance_ms(4_000);
    eventually(|| async { (events_of(&harness, &later).len() == 1).then_some(()) }).await?;
    let _a1 = harness.online_agent("a1").await?;
    let _a2 = harness.online_agent("a2").await?;
    let (_, held) = harness.get(&format!("/api/v1/conversations/{later}"), MANAGER_TOKEN).await?;
    let other = if held["agent"] == "a1" { "a2" } else { "a1" };
    transfer(&harness, &later, other).await?;
    close(&harness, &later, json!({"outcome": "closed_won", "amount": "1200.50"})).await?;
    eventually(|| async { (events_of(&harness, &later).len() == 2).then_some(()) }).await?;
    outbox_empty(&harness).await?;

    let names = |events: &[(String, Value)]| events.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>();
    let won_events = events_of(&harness, &won);
    assert_eq!(names(&won_events), ["QualifiedLead", "Purchase"], "{won_events:?}");
    let qualified = &won_events[0].1;
    assert_eq!(qualified["event_id"], format!("{won}.QualifiedLead"));
    assert_eq!(qualified["action_source"], "business_messaging");
    assert_eq!(qualified["messaging_channel"], "whatsapp");
    assert_eq!(qualified["user_data"], json!({"whatsapp_business_account_id": WABA, "ctwa_clid": "clid-won"}));
    assert!(qualified.get("custom_data").is_none());
    assert!((qualified["event_time"].as_i64().unwrap() - now_s()).abs() < 3600, "unix seconds: {qualified}");
    assert_eq!(won_events[1].1["custom_data"], json!({"currency": "INR", "value": 2500.0}));
    assert_eq!(names(&events_of(&harness, &lost)), ["QualifiedLead"]);
    assert!(events_of(&harness, &organic).is_empty(), "an organic conversation sends nothing");
    let later_events = events_of(&harness, &later);
    assert_eq!(names(&later_events), ["QualifiedLead", "Purchase"], "{later_events:?}");
    assert_eq!(later_events[1].1["custom_data"], json!({"currency": "INR", "value": 1200.5}));
    assert_eq!(harness.emulator.conversions().len(), 5, "nothing else, nothing twice");

    // The emulator's list, as the demo shows it.
    let listed: Value = harness
        .http
        .get(harness.emulator.conversions_url())
        .bearer_auth(switchboard_tests::ACCESS_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["conversions"].as_array().map(Vec::len), Some(5));
    harness.shutdown().await;
    Ok(())
}
