//! Per-team dispositions and promise-to-pay follow-ups (PROTOCOL §10,
//! docs/followups.md) through the real server on a manual clock: a
//! Collections team (Asia/Kolkata) whose close takes a PTP status and a
//! promise, a Sales team with its own schema. Time moves when the test says
//! so; the follow-ups are settled (`Harness::settle_followups`) after each
//! move, so "nothing fired" is observed, not hoped.

use std::sync::Arc;

use actors::clock::ManualClock;
use anyhow::{Result, ensure};
use engine::server::StartOptions;
use serde_json::{Value, json};
use switchboard_tests::*;

const COLLECTIONS_NUMBER: &str = PHONE_NUMBER_ID;
const SALES_NUMBER: &str = "100000000000002";
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// Asia/Kolkata is UTC+05:30 all year.
const KOLKATA: i64 = 5 * HOUR + 30 * MINUTE;

fn body() -> String {
    format!(
        r#"
[presence]
grace_s = 600

[sla]
reassign_after_s = 0

[[numbers]]
phone_number_id = "{COLLECTIONS_NUMBER}"
default_team = "collections"

[[numbers]]
phone_number_id = "{SALES_NUMBER}"
default_team = "sales"

[[teams]]
id = "collections"

[teams.hours]
timezone = "Asia/Kolkata"

[teams.hours.week]
mon = ["00:00-24:00"]
tue = ["00:00-24:00"]
wed = ["00:00-24:00"]
thu = ["00:00-24:00"]
fri = ["00:00-24:00"]
sat = ["00:00-24:00"]
sun = ["00:00-24:00"]

[[teams.dispositions]]
key = "ptp_status"
kind = "enum"
options = ["promised", "paid", "refused"]
required_on_close = true

[[teams.dispositions]]
key = "promise"
kind = "promise"
followup_at = "10:00"
followup_template = {{ name = "payment_reminder", language = "en", params = ["{{contact.name}}", "{{amount}}", "{{date}}", "https://pay.example.com/{{attributes.account}}"] }}
paid_field = "ptp_status"
paid_values = ["paid"]

[[teams]]
id = "sales"

[[teams.dispositions]]
key = "lead_quality"
kind = "enum"
options = ["hot", "warm", "cold"]
required_on_close = true

[[teams.dispositions]]
key = "outcome"
kind = "enum"
options = ["won", "lost"]
required_on_close = true
won_values = ["won"]

[[teams.dispositions]]
key = "deal_value"
kind = "money"

[[agents]]
id = "c1"
token = "c1-token-xyz"
teams = ["collections"]

[[agents]]
id = "s1"
token = "s1-token-xyz"
teams = ["sales"]

[[agents]]
id = "boss"
role = "manager"
token = "{MANAGER_TOKEN}"

[[dispositions]]
key = "outcome"
kind = "enum"
options = ["closed_won", "follow_up"]
required_on_close = true
"#
    )
}

async fn start(clock: Arc<ManualClock>) -> Result<Harness> {
    Harness::start_on_with(options(&clock), "followups", &body()).await
}

fn options(clock: &Arc<ManualClock>) -> StartOptions {
    StartOptions { clock: clock.clone(), outbound: None, copilot: None }
}

/// Kolkata's calendar day `days` after the clock's, as `YYYY-MM-DD`, and
/// the instant of 10:00 that day (unix ms).
fn kolkata_day(clock: &ManualClock, days: i64) -> (String, i64) {
    let local_midnight = (clock.now_ms_for_test() + KOLKATA).div_euclid(DAY) * DAY + days * DAY;
    let date = civil_date(local_midnight / DAY);
    (date, local_midnight - KOLKATA + 10 * HOUR)
}

/// Days since 1970-01-01 → `YYYY-MM-DD` (Howard Hinnant's civil_from_days).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// A customer writes to `number`; `agent` is given the conversation.
async fn open_with(harness: &Harness, agent: &mut WsClient, number: &str, customer: &str) -> Result<String> {
    let webhook = message_webhook(number, customer, &format!("wamid.{customer}.1"), text_message("hello"));
    let (conversation, _) = assigned_after(harness, agent, &webhook).await?;
    Ok(conversation["id"].as_str().unwrap().to_owned())
}

/// The audit trail's actions of a contact, in order.
async fn actions(harness: &Harness, contact: &str) -> Result<Vec<(String, Value)>> {
    let response = harness
        .http
        .get(format!("{}/api/v1/audit?contact={contact}", harness.base_url()))
        .bearer_auth(MANAGER_TOKEN)
        .send()
        .await?;
    ensure!(response.status() == 200, "audit answered {}", response.status());
    let entries: Vec<Value> = response.text().await?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    Ok(entries
        .into_iter()
        .map(|entry| (entry["action"].as_str().unwrap_or("").to_owned(), entry["data"].clone()))
        .collect())
}

async fn count_action(harness: &Harness, contact: &str, action: &str) -> Result<usize> {
    Ok(actions(harness, contact).await?.iter().filter(|(name, _)| name == action).count())
}

/// The template sends the emulator (Meta) received for `customer`.
fn reminders(harness: &Harness, customer: &str) -> Vec<Value> {
    harness
        .emulator
        .requests()
        .into_iter()
        .map(|request| request.body)
        .filter(|body| body["to"] == customer && body["type"] == "template")
        .collect()
}

/// Sets a contact's `account` attribute (the payment link's parameter).
async fn set_account(harness: &Harness, customer: &str, account: &str) -> Result<()> {
    let (status, answer) = harness
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/contacts/{customer}"),
            MANAGER_TOKEN,
            Some(&json!({"name": "Ravi Kumar", "attributes": {"account": account}})),
        )
        .await?;
    ensure!(status == 200, "contact patch answered {status}: {answer}");
    Ok(())
}

/// Closes `conversation` with a PTP status and a promise for `date`.
async fn close_with_promise(agent: &mut WsClient, conversation: &str, date: &str) -> Result<()> {
    let answer = agent
        .request(json!({"type": "close", "conversation_id": conversation, "fields": {
            "ptp_status": "promised", "promise": {"date": date, "amount": 2500}
        }}))
        .await?;
    ensure!(answer["type"] == "ok", "close refused: {answer}");
    Ok(())
}

/// Checks nothing fired at the clock's reading now.
async fn nothing_fired(harness: &Harness, customer: &str) -> Result<()> {
    harness.settle_followups().await;
    ensure!(count_action(harness, customer, "followup_due").await? == 0, "fired early");
    ensure!(reminders(harness, customer).is_empty(), "a reminder went early: {:?}", reminders(harness, customer));
    Ok(())
}

/// The promise's follow-up fires at 10:00 Kolkata on its day: to the agent
/// who closed the conversation (nobody holds it) as a `followup` event, and
/// to the customer as the configured template with its params filled; once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promise_is_followed_up_on_its_day_once() -> Result<()> {
    let clock = ManualClock::new(now_s() * 1000);
    let harness = start(clock.clone()).await?;
    let customer = "919811100001";
    let mut agent = harness.online_agent("c1").await?;
    let conversation = open_with(&harness, &mut agent, COLLECTIONS_NUMBER, customer).await?;
    set_account(&harness, customer, "AC-1001").await?;
    let (date, due) = kolkata_day(&clock, 2);
    close_with_promise(&mut agent, &conversation, &date).await?;
    harness.settle_followups().await;
    let scheduled = actions(&harness, customer).await?;
    let scheduled = scheduled.iter().find(|(name, _)| name == "followup_scheduled").expect("scheduled");
    assert_eq!(scheduled.1["date"], date.as_str());
    assert_eq!(scheduled.1["amount"], 2500.0);

    clock.set(due - MINUTE);
    nothing_fired(&harness, customer).await?;

    clock.set(due);
    harness.settle_followups().await;
    let followup = agent.expect_type("followup").await?;
    assert_eq!(followup["conversation_id"], conversation.as_str());
    assert_eq!(followup["contact"]["wa_id"], customer);
    assert_eq!(followup["field"], "promise");
    assert_eq!(followup["promise"], json!({"date": date, "amount": 2500.0}));
    assert!(followup["seq"].as_u64().is_some(), "an event with a seq: {followup}");
    let sent = eventually(|| async { Some(reminders(&harness, customer)).filter(|sent| !sent.is_empty()) }).await?;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["template"]["name"], "payment_reminder");
    let params: Vec<&str> = sent[0]["template"]["components"][0]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|parameter| parameter["text"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["Ravi Kumar", "2500", date.as_str(), "https://pay.example.com/AC-1001"]);

    // In the conversation's messages (closed as it is) and the audit trail.
    let path = format!("/api/v1/conversations/{conversation}");
    let messages = eventually(|| async {
        let (_, conversation) = harness.get(&path, MANAGER_TOKEN).await.ok()?;
        let messages = conversation["messages"].as_array()?.clone();
        messages.iter().any(|message| message["type"] == "template").then_some(messages)
    })
    .await?;
    assert_eq!(messages.iter().filter(|message| message["type"] == "template").count(), 1);
    let trail = actions(&harness, customer).await?;
    let due_entry = trail.iter().find(|(name, _)| name == "followup_due").expect("followup_due audited");
    assert_eq!(due_entry.1["notified"], json!(["c1"]));
    assert_eq!(due_entry.1["template"], "payment_reminder");
    assert!(trail.iter().any(|(name, data)| name == "message_out" && data["template"] == "payment_reminder"));

    // Later: nothing more.
    clock.advance_ms(2 * DAY);
    harness.settle_followups().await;
    assert_eq!(count_action(&harness, customer, "followup_due").await?, 1);
    assert_eq!(reminders(&harness, customer).len(), 1);
    harness.shutdown().await;
    Ok(())
}

/// Across restarts: one before the due time still fires on time; one
/// after the firing does not fire again; a promise whose time passed while
/// the engine was down fires once at the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_survive_restarts_and_fire_once() -> Result<()> {
    let clock = ManualClock::new(now_s() * 1000);
    let mut harness = start(clock.clone()).await?;
    let (first, second) = ("919811100002", "919811100003");
    let mut agent = harness.online_agent("c1").await?;
    let on_time = open_with(&harness, &mut agent, COLLECTIONS_NUMBER, first).await?;
    let (date, due) = kolkata_day(&clock, 2);
    close_with_promise(&mut agent, &on_time, &date).await?;
    let late = open_with(&harness, &mut agent, COLLECTIONS_NUMBER, second).await?;
    let (late_date, late_due) = kolkata_day(&clock, 3);
    close_with_promise(&mut agent, &late, &late_date).await?;
    drop(agent);

    harness.restart(options(&clock)).await?;
    let mut agent = harness.online_agent("c1").await?;
    clock.set(due - MINUTE);
    nothing_fired(&harness, first).await?;
    clock.set(due);
    harness.settle_followups().await;
    let followup = agent.expect_type("followup").await?;
    assert_eq!(followup["conversation_id"], on_time.as_str());
    eventually(|| async { (reminders(&harness, first).len() == 1).then_some(()) }).await?;

    // Restarted after the firing: not again.
    drop(agent);
    harness.restart(options(&clock)).await?;
    harness.settle_followups().await;
    assert_eq!(count_action(&harness, first, "followup_due").await?, 1);
    assert_eq!(reminders(&harness, first).len(), 1, "the reminder went once");
    nothing_fired(&harness, second).await?;

    // Down through the second promise's time: it fires once, at the start.
    harness.restart_after(options(&clock), || clock.set(late_due + 6 * HOUR)).await?;
    harness.settle_followups().await;
    eventually(|| async { (reminders(&harness, second).len() == 1).then_some(()) }).await?;
    let (_, conversation) = harness.get(&format!("/api/v1/conversations/{late}"), MANAGER_TOKEN).await?;
    assert_eq!(conversation["status"], "closed");
    clock.advance_ms(HOUR);
    harness.settle_followups().await;
    assert_eq!(count_action(&harness, second, "followup_due").await?, 1);
    assert_eq!(reminders(&harness, second).len(), 1);
    assert_eq!(reminders(&harness, first).len(), 1);
    harness.shutdown().await;
    Ok(())
}

/// A payment recorded before the date cancels the follow-up: by the paid
/// field taking a paid value, or by `POST …/payments`. A changed promise
/// moves it; the holder of an open conversation is who is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_cancel_and_a_new_date_reschedules() -> Result<()> {
    let clock = ManualClock::new(now_s() * 1000);
    let harness = start(clock.clone()).await?;
    let (by_field, by_api, moved) = ("919811100004", "919811100005", "919811100006");
    let mut agent = harness.online_agent("c1").await?;
    let (date, due) = kolkata_day(&clock, 2);
    let (later_date, later_due) = kolkata_day(&clock, 3);

    // The paid field: set on the open conversation, then closed.
    let first = open_with(&harness, &mut agent, COLLECTIONS_NUMBER, by_field).await?;
    let promise = json!({"ptp_status": "promised", "promise": {"date": date, "amount": 2500}});
    let answer = agent.request(json!({"type": "set_fields", "conversation_id": first, "fields": promise})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    let paid = json!({"ptp_status": "paid"});
    let answer = agent.request(json!({"type": "close", "conversation_id": first, "fields": paid})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");

    // The API: a bad body is refused with the field named; then recorded.
    let second = open_with(&harness, &mut agent, COLLECTIONS_NUMBER, by_api).await?;
    close_with_promise(&mut agent, &second, &date).await?;
    let payments = format!("/api/v1/conversations/{second}/payments");
    let (status, refused) = harness.post(&payments, MANAGER_TOKEN, &json!({"amount": -3})).await?;
    assert_eq!(
        (status, refused["code"].as_str(), refused["detail"]["field"].as_str()),
        (422, Some("invalid_field"), Some("amount"))
    );
    let (status, refused) = harness.post(&payments, "s1-token-xyz", &json!({"amount": 2500})).await?;
    assert_eq!((status, refused["code"].as_str()), (403, Some("forbidden")), "not s1's conversation");
    let (status, recorded) =
        harness.post(&payments, MANAGER_TOKEN, &json!({"amount": 2500, "at": "2026-12-01T09:00:00Z"})).await?;
    assert_eq!(status, 200, "{recorded}");

    // Moved: the promise changes on an open conversation the agent holds.
    let third = open_with(&harness, &mut agent, COLLECTIONS_NUMBER, moved).await?;
    for day in [&date, &later_date] {
        let fields = json!({"promise": {"date": day, "amount": 1200}});
        let answer = agent.request(json!({"type": "set_fields", "conversation_id": third, "fields": fields})).await?;
        assert_eq!(answer["type"], "ok", "{answer}");
    }

    clock.set(due + HOUR);
    for customer in [by_field, by_api, moved] {
        nothing_fired(&harness, customer).await?;
    }
    let cancelled = |trail: Vec<(String, Value)>| {
        trail
            .into_iter()
            .filter(|(name, _)| name == "followup_cancelled")
            .map(|(_, data)| data["reason"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(cancelled(actions(&harness, by_field).await?), [json!("paid")]);
    assert_eq!(cancelled(actions(&harness, by_api).await?), [json!("payment")]);
    let trail = actions(&harness, by_api).await?;
    let payment = trail.iter().find(|(name, _)| name == "payment_recorded").expect("payment audited");
    assert_eq!(payment.1["amount"], 2500.0);

    clock.set(later_due);
    harness.settle_followups().await;
    let followup = agent.expect_type("followup").await?;
    assert_eq!(followup["conversation_id"], third.as_str(), "the holder is told");
    assert_eq!(followup["promise"], json!({"date": later_date, "amount": 1200.0}));
    eventually(|| async { (reminders(&harness, moved).len() == 1).then_some(()) }).await?;
    for customer in [by_field, by_api] {
        assert!(reminders(&harness, customer).is_empty());
    }
    harness.shutdown().await;
    Ok(())
}

/// Each team's Force-Action: its own required fields, on the WebSocket and
/// on HTTP; `GET /api/v1/dispositions` answers each team's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_team_requires_its_own_dispositions() -> Result<()> {
    let clock = ManualClock::new(now_s() * 1000);
    let harness = start(clock.clone()).await?;
    let mut collector = harness.online_agent("c1").await?;
    let mut seller = harness.online_agent("s1").await?;
    let debt = open_with(&harness, &mut collector, COLLECTIONS_NUMBER, "919811100007").await?;
    let lead = open_with(&harness, &mut seller, SALES_NUMBER, "919811100008").await?;

    let refused = seller.request(json!({"type": "close", "conversation_id": lead})).await?;
    assert_eq!(refused["code"], "disposition_required", "{refused}");
    assert_eq!(refused["detail"]["missing"], json!(["lead_quality", "outcome"]));
    let refused = collector.request(json!({"type": "close", "conversation_id": debt})).await?;
    assert_eq!(refused["code"], "disposition_required", "{refused}");
    assert_eq!(refused["detail"]["missing"], json!(["ptp_status"]));
    let (status, refused) =
        harness.post(&format!("/api/v1/conversations/{debt}/close"), MANAGER_TOKEN, &json!({})).await?;
    assert_eq!((status, refused["detail"]["missing"].clone()), (422, json!(["ptp_status"])));
    // Another team's field is not this team's; a bad promise is named.
    let wrong = collector
        .request(json!({"type": "set_fields", "conversation_id": debt, "fields": {"lead_quality": "hot"}}))
        .await?;
    assert_eq!(
        (wrong["code"].as_str(), wrong["detail"]["field"].as_str()),
        (Some("invalid_field"), Some("lead_quality"))
    );
    let bad = collector
        .request(json!({"type": "set_fields", "conversation_id": debt,
            "fields": {"promise": {"date": "2026-02-30", "amount": 10}}}))
        .await?;
    assert_eq!((bad["code"].as_str(), bad["detail"]["field"].as_str()), (Some("invalid_field"), Some("promise")));
    assert!(bad["message"].as_str().unwrap().contains("`date` must be a day as YYYY-MM-DD"), "{bad}");

    let closed = seller
        .request(json!({"type": "close", "conversation_id": lead,
            "fields": {"lead_quality": "hot", "outcome": "won", "deal_value": 900}}))
        .await?;
    assert_eq!(closed["type"], "ok", "{closed}");

    let (_, schema) = harness.get("/api/v1/dispositions?team=collections", "c1-token-xyz").await?;
    let kinds: Vec<(&str, &str)> = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|field| (field["key"].as_str().unwrap(), field["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("ptp_status", "enum"), ("promise", "promise")]);
    assert_eq!(schema["fields"][1]["followup_at"], "10:00");
    let (_, all) = harness.get("/api/v1/dispositions", "s1-token-xyz").await?;
    assert_eq!(all["teams"]["sales"][0]["key"], "lead_quality");
    assert_eq!(all["teams"]["collections"][0]["key"], "ptp_status");
    assert_eq!(all["fields"][0]["key"], "outcome", "the global schema");
    assert_eq!(all["fields"][0]["options"], json!(["closed_won", "follow_up"]));

    // The funnel counts the sales close as won by sales' own schema.
    let day_ms = clock.now_ms_for_test().div_euclid(DAY) * DAY;
    let range = format!(
        "from={}&to={}",
        protocol::time::format_rfc3339(day_ms - DAY),
        protocol::time::format_rfc3339(day_ms + 2 * DAY)
    );
    let funnel = eventually(|| async {
        let (_, report) =
            harness.get(&format!("/api/v1/reports/funnel?{range}&group_by=team"), MANAGER_TOKEN).await.ok()?;
        report["rows"].as_array()?.iter().find(|row| row["team"] == "sales").cloned()
    })
    .await?;
    assert_eq!(funnel["closed"], 1, "{funnel}");
    harness.shutdown().await;
    Ok(())
}

/// kill -9 of the real binary right after promises are closed, with
/// Meta's answers held so reminders are in flight: after the restart every
/// promise due has fired exactly once (one `followup_due`), no customer got
/// the reminder twice, every reminder not in flight at the kill arrived, and
/// a promise for a later day is scheduled once and has not fired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_dash_nine_each_promise_fires_once() -> Result<()> {
    const CUSTOMERS: usize = 40;
    let emulator = switchboard_tests::start_emulator(false).await?;
    emulator.set_answer_delay_ms(100);
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("switchboard.toml");
    let head = config_head(&dir.path().join("data").display().to_string(), &emulator.base_url());
    // Due at 00:00 Kolkata on the promised day: today's are due at once.
    let body = body()
        .replace("followup_at = \"10:00\"", "followup_at = \"00:00\"")
        .replace("token = \"c1-token-xyz\"\n", &format!("token = \"c1-token-xyz\"\ncapacity = {CUSTOMERS}\n"));
    std::fs::write(&config_path, format!("{head}\n{body}"))?;
    let binary = env!("CARGO_BIN_EXE_switchboard-under-test");
    let http = reqwest::Client::new();
    let (mut child, base_url) = spawn_binary(binary, &config_path)?;
    switchboard_tests::until_ready(&http, &base_url).await?;
    let mut agent = WsClient::connect(&base_url, &agent_token("c1"), Protocol::Json, None).await?;
    agent.expect_type("welcome").await?;
    agent.expect_type("snapshot").await?;
    ensure!(agent.request(json!({"type": "set_status", "status": "online"})).await?["type"] == "ok");

    let customers: Vec<String> = (0..CUSTOMERS).map(|n| format!("9198222{n:05}")).collect();
    let mut conversations = Vec::new();
    for customer in &customers {
        let webhook = message_webhook(COLLECTIONS_NUMBER, customer, &format!("wamid.{customer}.1"), text_message("hi"));
        let (status, _) = post_signed(&http, &base_url, APP_SECRET, webhook.to_string().as_bytes()).await?;
        ensure!(status == 200, "webhook answered {status}");
        let assigned = agent.expect_type("assigned").await?;
        conversations.push(assigned["conversation"]["id"].as_str().unwrap_or_default().to_owned());
    }
    let today = (now_s() * 1000 + KOLKATA).div_euclid(DAY);
    // The first customer promises for the day after tomorrow; the others today.
    for (n, conversation) in conversations.iter().enumerate() {
        let date = civil_date(if n == 0 { today + 2 } else { today });
        close_with_promise(&mut agent, conversation, &date).await?;
    }
    child.kill()?; // SIGKILL, right after the last close was acknowledged
    child.wait()?;
    let in_flight_at_kill = emulator.requests().len().saturating_sub(emulator.accepted_count());
    ensure!(
        emulator.accepted_count() < CUSTOMERS - 1,
        "every reminder was sent before the kill: the restart was not tested"
    );

    let (mut restarted, base_url) = spawn_binary(binary, &config_path)?;
    switchboard_tests::until_ready(&http, &base_url).await?;
    let count = |customer: String, action: &'static str| {
        let (http, base_url) = (http.clone(), base_url.clone());
        async move {
            let response = http
                .get(format!("{base_url}/api/v1/audit?contact={customer}"))
                .bearer_auth(MANAGER_TOKEN)
                .send()
                .await
                .ok()?;
            let text = response.text().await.ok()?;
            Some(text.lines().filter(|line| line.contains(&format!("\"action\":\"{action}\""))).count())
        }
    };
    eventually(|| async {
        for customer in &customers[1..] {
            (count(customer.clone(), "followup_due").await? >= 1).then_some(())?;
        }
        Some(())
    })
    .await?;
    // Settled: whatever a duplicate would be has had time to appear.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for customer in &customers[1..] {
        let due = count(customer.clone(), "followup_due").await;
        let scheduled = count(customer.clone(), "followup_scheduled").await;
        ensure!(due == Some(1) && scheduled == Some(1), "{customer}: due {due:?}, scheduled {scheduled:?}");
    }
    let later = customers[0].clone();
    ensure!(count(later.clone(), "followup_scheduled").await == Some(1), "the later promise is scheduled once");
    ensure!(count(later.clone(), "followup_due").await == Some(0), "the later promise fired early");
    restarted.kill()?;
    restarted.wait()?;

    let mut reminded = 0;
    for customer in &customers {
        let times = emulator
            .requests()
            .into_iter()
            .filter(|request| request.body["to"] == customer.as_str() && request.body["type"] == "template")
            .count();
        ensure!(times <= 1, "{customer} got the reminder {times} times");
        reminded += times;
    }
    ensure!(
        reminded + in_flight_at_kill >= CUSTOMERS - 1,
        "{reminded} reminders arrived and {in_flight_at_kill} were in flight at the kill, of {} due",
        CUSTOMERS - 1
    );
    Ok(())
}
