//! The outbox and its webhook connector (PROTOCOL §10), black-box: the
//! real server, conversations made through webhooks, the WebSocket and
//! REST, and receivers written here (`sim::receiver`) that answer 500,
//! close the connection, time out, answer 429 with `Retry-After` and
//! succeed late. Backoff is waited for on a manual clock (no sleeps);
//! signatures are checked with the Standard Webhooks reference library for
//! Python (the ignored test, which CI runs).

use std::sync::Arc;
use std::time::Duration;

use actors::clock::ManualClock;
use engine::server::StartOptions;
use serde_json::{Value, json};
use sim::receiver::{Behavior, Receiver};
use switchboard_tests::{Harness, MANAGER_TOKEN, WsClient, agent_token, eventually, inbound_text, now_s};

type TestResult = anyhow::Result<()>;

const SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX";
const LEAD_TOKEN: &str = "lead-token-xyz";
/// The backoff's cap in these tests: advancing the clock by it makes any
/// retry due (full jitter stays under it).
const CAP_MS: i64 = 4_000;

fn config_body(receiver_url: &str, connector: &str) -> String {
    format!(
        r#"
[[teams]]
id = "sales"

[[agents]]
id = "a1"
token = "a1-token-xyz"
teams = ["sales"]
capacity = 50

[[agents]]
id = "boss"
role = "manager"
token = "{MANAGER_TOKEN}"

[[agents]]
id = "lead"
role = "manager"
token = "{LEAD_TOKEN}"
manages = ["sales"]

[[dispositions]]
key = "outcome"
kind = "enum"
options = ["closed_won", "follow_up"]
required_on_close = true
won_values = ["closed_won"]

[[connectors]]
id = "crm"
kind = "webhook"
url = "{receiver_url}"
secret = "{SECRET}"
events = ["conversation.closed", "conversation.fields_changed", "conversation.assigned"]
{connector}

[outbox]
backoff_base_ms = 1000
backoff_max_ms = {CAP_MS}
tick_ms = 20
"#
    )
}

async fn start(clock: Option<Arc<ManualClock>>, receiver: &Receiver, connector: &str) -> anyhow::Result<Harness> {
    let mut options = StartOptions::default();
    if let Some(clock) = clock {
        options.clock = clock;
    }
    let body = config_body(&receiver.url(), connector);
    Harness::start_on_with(options, "outbox test", &body).await
}

/// A customer writes; `agent` gets the conversation. Returns its id.
async fn assigned(harness: &Harness, agent: &mut WsClient, customer: &str) -> anyhow::Result<String> {
    let (status, _) = harness.post_webhook(&inbound_text(customer, &format!("wamid.{customer}"), "hello")).await?;
    anyhow::ensure!(status == 200);
    let frame = agent.expect_type("assigned").await?;
    Ok(frame["conversation"]["id"].as_str().unwrap_or_default().to_owned())
}

/// Sets the outcome, then closes: a `fields_changed` and a `closed` event.
async fn fill_and_close(harness: &Harness, conversation: &str) -> TestResult {
    let path = |action: &str| format!("/api/v1/conversations/{conversation}/{action}");
    let (status, answer) =
        harness.post(&path("fields"), &agent_token("a1"), &json!({"fields": {"outcome": "follow_up"}})).await?;
    anyhow::ensure!(status == 200, "{answer}");
    let (status, answer) = harness.post(&path("close"), &agent_token("a1"), &json!({})).await?;
    anyhow::ensure!(status == 200, "{answer}");
    Ok(())
}

/// The outbox's deliveries in `state` (`pending`, `dead` or all).
async fn listed(harness: &Harness, state: &str) -> anyhow::Result<Vec<Value>> {
    let (status, answer) = harness.get(&format!("/api/v1/outbox?state={state}"), MANAGER_TOKEN).await?;
    anyhow::ensure!(status == 200, "{answer}");
    Ok(answer["deliveries"].as_array().cloned().unwrap_or_default())
}

/// Waits until the delivery `id` is listed with `attempts` made.
async fn attempts_made(harness: &Harness, id: &str, attempts: u64) -> anyhow::Result<Value> {
    eventually(|| async {
        let all = listed(harness, "").await.ok()?;
        all.into_iter().find(|delivery| delivery["id"] == id && delivery["attempts"] == attempts)
    })
    .await
}

/// The audit trail's entries of `action` for a conversation.
async fn audit_entries(harness: &Harness, conversation: &str, action: &str) -> anyhow::Result<Vec<Value>> {
    let response = harness
        .http
        .get(format!("{}/api/v1/audit?conversation={conversation}", harness.base_url()))
        .bearer_auth(MANAGER_TOKEN)
        .send()
        .await?;
    let text = response.text().await?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["action"] == action)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_arrives_in_order_through_500_close_timeout_429_and_a_late_answer() -> TestResult {
    let receiver = Receiver::start().await?;
    receiver.script([
        Behavior::Status(500),
        Behavior::Close,
        Behavior::Hang(Duration::from_secs(5)),
        Behavior::RetryAfter(429, 30),
        Behavior::Late(Duration::from_millis(300)),
    ]);
    let clock = ManualClock::new(now_s() * 1000);
    let harness = start(Some(clock.clone()), &receiver, "timeout_ms = 500").await?;
    let mut agent = harness.online_agent("a1").await?;
    let conversation = assigned(&harness, &mut agent, "919811110001").await?;

    // The assignment's first attempt fails; the fields change and the close
    // that follow wait behind it.
    let first = eventually(|| async { receiver.received().first().cloned() }).await?;
    let id = first.webhook_id.clone().expect("webhook-id");
    assert_eq!(first.json()["type"], "conversation.assigned");
    fill_and_close(&harness, &conversation).await?;

    let errors = ["HTTP 500", "connection closed before an answer", "timed out", "HTTP 429"];
    for (made, error) in errors.iter().enumerate() {
        let attempts = made as u64 + 1;
        let delivery = attempts_made(&harness, &id, attempts).await?;
        assert_eq!(delivery["state"], "pending");
        assert_eq!(delivery["last_error"], *error, "{delivery}");
        assert_eq!(receiver.received().len(), attempts as usize, "nothing else went out meanwhile");
        if attempts < 4 {
            clock.advance_ms(CAP_MS);
        }
    }
    // 429 with Retry-After: 30 puts the next attempt 30 s away, past the cap.
    let throttled = attempts_made(&harness, &id, 4).await?;
    let next = protocol::time::parse_rfc3339(throttled["next_attempt_at"].as_str().unwrap()).unwrap();
    assert!(next >= clock.now_ms_for_test() + 30_000, "{throttled}");
    clock.advance_ms(30_000);

    // The late answer is a success; then the other two go, in order.
    eventually(|| async { (receiver.received().len() == 7).then_some(()) }).await?;
    eventually(|| async { listed(&harness, "").await.ok().filter(Vec::is_empty) }).await?;
    let received = receiver.received();
    let types: Vec<Value> = received.iter().map(|request| request.json()["type"].clone()).collect();
    assert_eq!(
        types,
        [
            "conversation.assigned",
            "conversation.assigned",
            "conversation.assigned",
            "conversation.assigned",
            "conversation.assigned",
            "conversation.fields_changed",
            "conversation.closed"
        ]
    );
    assert!(received[..5].iter().all(|request| request.webhook_id.as_deref() == Some(id.as_str())));
    assert!(received[..5].iter().all(|request| request.body == first.body), "every attempt sends the same body");
    let ids: std::collections::HashSet<_> = received.iter().filter_map(|request| request.webhook_id.clone()).collect();
    assert_eq!(ids.len(), 3, "one webhook-id per delivery");
    let body = received[6].json();
    assert_eq!(body["data"]["conversation"]["id"], conversation.as_str());
    assert_eq!(body["data"]["fields"]["outcome"], "follow_up");
    assert_eq!(body["data"]["agent"], "a1");
    assert_eq!(body["data"]["team"], "sales");
    assert_eq!(body["data"]["contact"]["wa_id"], "919811110001");
    assert_eq!(body["data"]["source"]["kind"], "organic");

    // Each final outcome is an audit entry.
    let delivered = eventually(|| async {
        audit_entries(&harness, &conversation, "outbox_delivered").await.ok().filter(|entries| entries.len() == 3)
    })
    .await?;
    let attempts: Vec<Value> = delivered.iter().map(|entry| entry["data"]["attempts"].clone()).collect();
    assert_eq!(attempts, [json!(5), json!(1), json!(1)], "{delivered:?}");
    assert_eq!(delivered[0]["data"]["delivery_id"], id.as_str());
    assert_eq!(delivered[0]["actor"], "system");

    let scrape = harness
        .http
        .get(format!("{}/metrics", harness.base_url()))
        .bearer_auth(MANAGER_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    for line in [
        r#"switchboard_outbox_attempts_total{connector="crm",outcome="timeout"}"#,
        r#"switchboard_outbox_attempts_total{connector="crm",outcome="connection_error"}"#,
        r#"switchboard_outbox_backlog{connector="crm"}"#,
    ] {
        assert!(scrape.contains(line), "{line} missing");
    }
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_dead_after_max_attempts_is_listed_and_retried_by_a_manager() -> TestResult {
    let receiver = Receiver::start().await?;
    receiver.script([Behavior::Status(500), Behavior::Status(503)]);
    let clock = ManualClock::new(now_s() * 1000);
    let harness = start(Some(clock.clone()), &receiver, "max_attempts = 2").await?;
    let mut agent = harness.online_agent("a1").await?;
    let conversation = assigned(&harness, &mut agent, "919811110002").await?;
    let first = eventually(|| async { receiver.received().first().cloned() }).await?;
    let id = first.webhook_id.clone().expect("webhook-id");
    attempts_made(&harness, &id, 1).await?;
    clock.advance_ms(CAP_MS);
    let dead = eventually(|| async {
        listed(&harness, "dead").await.ok()?.into_iter().find(|delivery| delivery["id"] == id.as_str())
    })
    .await?;
    assert_eq!((dead["state"].clone(), dead["attempts"].clone()), (json!("dead"), json!(2)), "{dead}");
    assert_eq!(dead["last_error"], "HTTP 503");
    assert_eq!(dead["connector"], "crm");
    assert_eq!(dead["body"]["type"], "conversation.assigned");
    assert!(listed(&harness, "pending").await?.is_empty());
    clock.advance_ms(10 * CAP_MS);
    assert_eq!(receiver.received().len(), 2, "a dead delivery is not attempted again by itself");

    // Who may see and retry it.
    for token in [agent_token("a1"), LEAD_TOKEN.to_owned()] {
        let (status, error) = harness.get("/api/v1/outbox", &token).await?;
        assert_eq!((status, error["code"].clone()), (403, json!("forbidden")), "{error}");
        let (status, _) = harness.post(&format!("/api/v1/outbox/{id}/retry"), &token, &json!({})).await?;
        assert_eq!(status, 403);
    }
    let (status, _) = harness.get("/api/v1/outbox", "not-a-token").await?;
    assert_eq!(status, 401);
    let (status, error) = harness.get("/api/v1/outbox?state=lost", MANAGER_TOKEN).await?;
    assert_eq!((status, error["code"].clone()), (400, json!("bad_request")), "{error}");
    let (status, error) = harness.post("/api/v1/outbox/crm-999999/retry", MANAGER_TOKEN, &json!({})).await?;
    assert_eq!((status, error["code"].clone()), (404, json!("not_found")), "{error}");

    let (status, retried) = harness.post(&format!("/api/v1/outbox/{id}/retry"), MANAGER_TOKEN, &json!({})).await?;
    assert_eq!(status, 200, "{retried}");
    assert_eq!((retried["state"].clone(), retried["attempts"].clone()), (json!("pending"), json!(0)));
    eventually(|| async { listed(&harness, "").await.ok().filter(Vec::is_empty) }).await?;
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    assert!(received[2].accepted() && received[2].webhook_id.as_deref() == Some(id.as_str()));
    let (status, _) = harness.post(&format!("/api/v1/outbox/{id}/retry"), MANAGER_TOKEN, &json!({})).await?;
    assert_eq!(status, 404, "a delivered delivery is not kept");

    // Dead, retried by the manager, delivered: three audit entries.
    let dead_entries = audit_entries(&harness, &conversation, "outbox_dead").await?;
    assert_eq!(dead_entries.len(), 1);
    assert_eq!(dead_entries[0]["data"]["error"], "HTTP 503");
    let retried_entries = audit_entries(&harness, &conversation, "outbox_retried").await?;
    assert_eq!(retried_entries.len(), 1);
    assert_eq!(retried_entries[0]["actor"], "user:boss");
    let delivered = eventually(|| async {
        audit_entries(&harness, &conversation, "outbox_delivered").await.ok().filter(|entries| !entries.is_empty())
    })
    .await?;
    assert_eq!(delivered[0]["data"]["attempts"], 1);
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_max_in_flight_attempts_go_to_one_connector() -> TestResult {
    let receiver = Receiver::start().await?;
    receiver.set_default(Behavior::Status(503));
    let clock = ManualClock::new(now_s() * 1000);
    let harness = start(Some(clock.clone()), &receiver, "max_in_flight = 2").await?;
    let mut agent = harness.online_agent("a1").await?;
    for customer in 0..6 {
        assigned(&harness, &mut agent, &format!("91981111100{customer}")).await?;
    }
    // Every first attempt failed; all six are due again at once.
    eventually(|| async {
        let pending = listed(&harness, "pending").await.ok()?;
        (pending.len() == 6 && pending.iter().all(|delivery| delivery["attempts"] == 1)).then_some(())
    })
    .await?;
    receiver.set_default(Behavior::Late(Duration::from_millis(300)));
    clock.advance_ms(CAP_MS);
    eventually(|| async { listed(&harness, "").await.ok().filter(Vec::is_empty) }).await?;
    assert_eq!(receiver.received().iter().filter(|request| request.accepted()).count(), 6);
    assert_eq!(receiver.most_in_flight(), 2, "two at once, never more");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with the standardwebhooks package (pip install -r tests/webhooks/requirements.txt)"]
async fn signatures_verify_with_the_standard_webhooks_reference_library() -> TestResult {
    let receiver = Receiver::start().await?;
    receiver.script([Behavior::Status(500)]);
    // The real clock: the library checks the timestamp against its own.
    let harness = start(None, &receiver, "").await?;
    let mut agent = harness.online_agent("a1").await?;
    let conversation = assigned(&harness, &mut agent, "919811110003").await?;
    fill_and_close(&harness, &conversation).await?;
    // The first attempt failed: four requests, two of one delivery.
    eventually(|| async {
        (receiver.received().iter().filter(|request| request.accepted()).count() == 3).then_some(())
    })
    .await?;
    let records: Vec<Value> = receiver
        .received()
        .iter()
        .map(|request| {
            json!({
                "id": request.webhook_id,
                "timestamp": request.webhook_timestamp,
                "signature": request.webhook_signature,
                "body": String::from_utf8_lossy(&request.body),
            })
        })
        .collect();
    assert_eq!(records.len(), 4);
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), serde_json::to_vec(&records)?)?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("webhooks/verify_standard_webhooks.py");
    let output = std::process::Command::new("python3").arg(&script).arg(SECRET).arg(file.path()).output()?;
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("verified 4"), "{printed}");
    harness.shutdown().await;
    Ok(())
}

/// kill -9 while deliveries are in flight and waiting: after the restart
/// every delivery of every acknowledged change arrives, and a
/// conversation's close never arrives before its fields change was taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_dash_nine_every_delivery_arrives_in_order_per_conversation() -> TestResult {
    const CONVERSATIONS: usize = 30;
    let receiver = Receiver::start().await?;
    receiver.set_default(Behavior::Late(Duration::from_millis(300)));
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("switchboard.toml");
    let config = format!(
        r#"{}
[[connectors]]
id = "crm"
kind = "webhook"
url = "{}"
secret = "{SECRET}"
events = ["conversation.fields_changed", "conversation.closed"]
max_in_flight = 4
timeout_ms = 5000

[outbox]
backoff_base_ms = 100
backoff_max_ms = 500
tick_ms = 50
"#,
        switchboard_tests::test_config_toml(&dir.path().join("data"), "http://127.0.0.1:9/v23.0"),
        receiver.url()
    );
    std::fs::write(&config_path, config)?;
    let binary = env!("CARGO_BIN_EXE_switchboard-under-test");
    let (mut child, base_url) = switchboard_tests::spawn_binary(binary, &config_path)?;
    let http = reqwest::Client::new();
    switchboard_tests::until_ready(&http, &base_url).await?;

    // Conversations a manager fills and closes: two deliveries each.
    let mut conversations = Vec::new();
    for n in 0..CONVERSATIONS {
        let customer = format!("9197100{n:05}");
        let body = serde_json::to_vec(&inbound_text(&customer, &format!("wamid.outbox.{n}"), "hello"))?;
        let (status, _) =
            switchboard_tests::post_signed(&http, &base_url, switchboard_tests::APP_SECRET, &body).await?;
        anyhow::ensure!(status == 200);
    }
    let list: Value =
        http.get(format!("{base_url}/api/v1/conversations")).bearer_auth(MANAGER_TOKEN).send().await?.json().await?;
    for conversation in list["conversations"].as_array().cloned().unwrap_or_default() {
        conversations.push(conversation["id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(conversations.len(), CONVERSATIONS);
    for id in &conversations {
        let path = |action: &str| format!("{base_url}/api/v1/conversations/{id}/{action}");
        let fields = json!({"fields": {"outcome": "follow_up"}});
        let response = http.post(path("fields")).bearer_auth(MANAGER_TOKEN).json(&fields).send().await?;
        anyhow::ensure!(response.status() == 200, "fields: {}", response.text().await?);
        let response = http.post(path("close")).bearer_auth(MANAGER_TOKEN).json(&json!({})).send().await?;
        anyhow::ensure!(response.status() == 200, "close: {}", response.text().await?);
    }
    eventually(|| async { (receiver.received().len() >= 6).then_some(()) }).await?;
    child.kill()?; // SIGKILL: attempts in flight lose their answers
    child.wait()?;
    let accepted_at_kill = receiver.received().iter().filter(|request| request.accepted()).count();
    assert!(accepted_at_kill < 2 * CONVERSATIONS, "the kill came after everything was delivered: nothing tested");

    let (mut restarted, _base_url) = switchboard_tests::spawn_binary(binary, &config_path)?;
    let delivered = |received: &[sim::receiver::Received]| {
        let mut ids: Vec<String> = received
            .iter()
            .filter(|request| request.accepted())
            .filter_map(|request| request.webhook_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    eventually(|| async { (delivered(&receiver.received()).len() == 2 * CONVERSATIONS).then_some(()) }).await?;
    let received = receiver.received();
    for id in &conversations {
        let of_conversation = |kind: &str, request: &sim::receiver::Received| {
            let body = request.json();
            body["type"] == kind && body["data"]["conversation"]["id"] == id.as_str()
        };
        let fields_taken = received
            .iter()
            .position(|request| request.accepted() && of_conversation("conversation.fields_changed", request))
            .unwrap_or_else(|| panic!("{id}: its fields change never arrived"));
        let close_sent = received
            .iter()
            .position(|request| of_conversation("conversation.closed", request))
            .unwrap_or_else(|| panic!("{id}: its close never arrived"));
        assert!(fields_taken < close_sent, "{id}: the close went out before the fields change was taken");
    }
    restarted.kill()?;
    restarted.wait()?;
    Ok(())
}

/// `Retry-After` as an HTTP date (RFC 9110) is read against the engine's
/// clock: the next attempt waits until that date, past the backoff's cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_date_is_waited_for_on_the_engines_clock() -> TestResult {
    let start_ms = now_s() * 1000;
    let date_ms = start_ms + 60_000;
    let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(date_ms as u64));
    let receiver = Receiver::start().await?;
    receiver.script([Behavior::RetryAfterValue(503, date)]);
    let clock = ManualClock::new(start_ms);
    let harness = start(Some(clock.clone()), &receiver, "").await?;
    let mut agent = harness.online_agent("a1").await?;
    assigned(&harness, &mut agent, "919811110009").await?;
    let first = eventually(|| async { receiver.received().first().cloned() }).await?;
    let id = first.webhook_id.clone().expect("webhook-id");
    let throttled = attempts_made(&harness, &id, 1).await?;
    assert_eq!(throttled["last_error"], "HTTP 503");
    let next = protocol::time::parse_rfc3339(throttled["next_attempt_at"].as_str().unwrap()).unwrap();
    assert_eq!(next, date_ms, "the date, not the backoff: {throttled}");
    clock.advance_ms(3 * CAP_MS);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received().len(), 1, "nothing before the date");
    clock.advance_ms(date_ms - clock.now_ms_for_test());
    eventually(|| async { (receiver.received().len() == 2).then_some(()) }).await?;
    eventually(|| async { listed(&harness, "").await.ok().filter(Vec::is_empty) }).await?;
    harness.shutdown().await;
    Ok(())
}
