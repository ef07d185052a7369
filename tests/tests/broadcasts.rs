//! Broadcasts (PROTOCOL §10, docs/broadcasts.md), black-box: the real
//! server with the Cloud API emulator as Meta. Pacing is checked on the
//! engine's manual clock, which the emulator stamps each send with (no
//! wall time); the messaging limit is Meta's 131048 injected by the
//! emulator after N sends; the kill -9 test runs the real binary.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actors::clock::{Clock, ManualClock};
use engine::server::StartOptions;
use serde_json::{Value, json};
use sim::emulator::Failure;
use switchboard_tests::{Harness, MANAGER_TOKEN, PHONE_NUMBER_ID, agent_token, eventually, inbound_text, now_s};

type TestResult = anyhow::Result<()>;

/// The default `whatsapp.max_sends_per_s`.
const PER_SECOND: usize = 80;

fn wa_id(n: usize) -> String {
    format!("9198{n:08}")
}

/// A harness on a manual clock whose time the emulator stamps sends with,
/// and no status webhooks (a broadcast's statuses are not what is tested).
async fn start_on_clock(
    adjust: impl FnOnce(&mut engine::config::Config),
) -> anyhow::Result<(Harness, Arc<ManualClock>)> {
    let clock = ManualClock::new(now_s() * 1000);
    let options = StartOptions { clock: clock.clone(), ..StartOptions::default() };
    let harness = Harness::start_with(options, adjust).await?;
    harness.emulator.set_webhook_url(None);
    let stamps = clock.clone();
    harness.emulator.set_time_source(Arc::new(move || stamps.now_ms()));
    Ok((harness, clock))
}

fn broadcast_body(contacts: &[String]) -> Value {
    json!({
        "name": "November offer",
        "template": {"name": "november_offer", "language": "en_US", "params": ["10%"]},
        "audience": {"contacts": contacts},
        "phone_number_id": PHONE_NUMBER_ID,
    })
}

async fn create(harness: &Harness, body: &Value) -> anyhow::Result<String> {
    let (status, answer) = harness.post("/api/v1/broadcasts", MANAGER_TOKEN, body).await?;
    anyhow::ensure!(status == 201, "create answered {status}: {answer}");
    Ok(answer["id"].as_str().unwrap_or_default().to_owned())
}

async fn show(harness: &Harness, id: &str) -> anyhow::Result<Value> {
    let (status, answer) = harness.get(&format!("/api/v1/broadcasts/{id}"), MANAGER_TOKEN).await?;
    anyhow::ensure!(status == 200, "GET answered {status}: {answer}");
    Ok(answer)
}

async fn opt_out(harness: &Harness, wa_id: &str) -> TestResult {
    let path = format!("/api/v1/contacts/{wa_id}");
    let (status, answer) =
        harness.call(reqwest::Method::PATCH, &path, MANAGER_TOKEN, Some(&json!({"opted_out": true}))).await?;
    anyhow::ensure!(status == 200, "PATCH answered {status}: {answer}");
    Ok(())
}

/// The `to` of every send the emulator received, with its time.
fn sends(harness: &Harness) -> Vec<(String, i64)> {
    harness
        .emulator
        .requests()
        .into_iter()
        .map(|request| (request.body["to"].as_str().unwrap_or_default().to_owned(), request.at_ms))
        .collect()
}

/// 1,000 recipients, 50 opted out before and one while it runs: every
/// recipient is reported, the opted-out ones skipped and never sent, the
/// others sent exactly once, never more than `max_sends_per_s` in any
/// second of the engine's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_recipients_are_paced_reported_one_by_one_and_opt_outs_skipped() -> TestResult {
    const RECIPIENTS: usize = 1000;
    let (harness, clock) = start_on_clock(|_| {}).await?;
    let contacts: Vec<String> = (0..RECIPIENTS).map(wa_id).collect();
    for n in (0..RECIPIENTS).step_by(20) {
        opt_out(&harness, &contacts[n]).await?;
    }
    let id = create(&harness, &broadcast_body(&contacts)).await?;
    let late_stop = contacts[RECIPIENTS - 1].clone();
    let mut expected = 0usize;
    let mut stopped_late = false;
    loop {
        // At most one second's budget goes per second of the clock.
        expected = (expected + PER_SECOND).min(RECIPIENTS - RECIPIENTS / 20 - 1);
        eventually(|| async { (harness.emulator.accepted_count() >= expected).then_some(()) }).await?;
        tokio::time::sleep(Duration::from_millis(30)).await; // nothing more goes this second
        assert_eq!(harness.emulator.accepted_count(), expected, "sends beyond the second's budget");
        if !stopped_late {
            opt_out(&harness, &late_stop).await?; // a STOP mid-broadcast
            stopped_late = true;
        }
        if expected == RECIPIENTS - RECIPIENTS / 20 - 1 {
            break;
        }
        clock.advance_ms(1000);
    }
    let shown = eventually(|| async {
        let shown = show(&harness, &id).await.ok()?;
        (shown["state"] == "completed").then_some(shown)
    })
    .await?;
    assert_eq!(
        (shown["total"].as_u64(), shown["sent"].as_u64(), shown["skipped"].as_u64(), shown["failed"].as_u64()),
        (Some(1000), Some(949), Some(51), Some(0)),
        "{}",
        json!({"state": shown["state"], "sent": shown["sent"], "skipped": shown["skipped"]})
    );
    let recipients = shown["recipients"].as_array().cloned().unwrap_or_default();
    assert_eq!(recipients.len(), RECIPIENTS);
    let sends = sends(&harness);
    let mut per_recipient: HashMap<&str, usize> = HashMap::new();
    for (to, _) in &sends {
        *per_recipient.entry(to.as_str()).or_default() += 1;
    }
    for (n, recipient) in recipients.iter().enumerate() {
        assert_eq!(recipient["wa_id"], json!(contacts[n]), "recipients in the order given");
        let skipped = n % 20 == 0 || n == RECIPIENTS - 1;
        let times = per_recipient.get(contacts[n].as_str()).copied().unwrap_or(0);
        if skipped {
            assert_eq!(recipient["state"], "skipped", "{recipient}");
            assert_eq!(recipient["error"], "opted_out");
            assert_eq!(times, 0, "{} opted out and was sent", contacts[n]);
        } else {
            assert_eq!(recipient["state"], "sent", "{recipient}");
            assert!(recipient["message_id"].as_str().is_some_and(|wamid| wamid.starts_with("wamid.")));
            assert_eq!(times, 1, "{} got {times} sends", contacts[n]);
        }
    }
    // Pacing on the engine's clock: any 81 sends span at least a second.
    let mut times: Vec<i64> = sends.iter().map(|(_, at)| *at).collect();
    times.sort_unstable();
    assert!(
        times.windows(PER_SECOND + 1).all(|window| window[PER_SECOND] - window[0] >= 1000),
        "more than {PER_SECOND} sends within one second"
    );
    // Each template as Meta received it.
    let first = &harness.emulator.requests()[0].body;
    assert_eq!(first["type"], "template");
    assert_eq!(first["template"]["name"], "november_offer");
    assert_eq!(first["template"]["language"], json!({"code": "en_US", "policy": "deterministic"}));
    // Each outcome is an audit entry filed under the contact.
    let sent_to = &contacts[1];
    let response = harness
        .http
        .get(format!("{}/api/v1/audit?contact={sent_to}", harness.base_url()))
        .bearer_auth(MANAGER_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    let entries: Vec<Value> = response.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let outcome = entries.iter().find(|entry| entry["action"] == "broadcast_recipient");
    let outcome = outcome.unwrap_or_else(|| panic!("no broadcast entry for {sent_to}: {entries:?}"));
    assert_eq!(outcome["actor"], json!(format!("broadcast:{id}")));
    assert_eq!(outcome["data"]["state"], "sent");
    harness.shutdown().await;
    Ok(())
}

/// Meta's spam rate limit (131048) after 30 sends pauses the broadcast
/// with every other recipient still pending (none failed); a resume once
/// the limit lifted sends the rest, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_messaging_limit_pauses_with_the_rest_pending_and_resume_finishes() -> TestResult {
    let (harness, clock) = start_on_clock(|_| {}).await?;
    let limit = Failure {
        http_status: 400,
        code: 131048,
        message: "Spam rate limit hit: message failed to send because there are restrictions on how many messages can be sent from this phone number".into(),
    };
    harness.emulator.limit_after(30, limit);
    let contacts: Vec<String> = (0..100).map(wa_id).collect();
    let id = create(&harness, &broadcast_body(&contacts)).await?;
    let paused = eventually(|| async {
        let shown = show(&harness, &id).await.ok()?;
        let in_flight = shown["recipients"].as_array()?.iter().any(|recipient| recipient["state"] == "sending");
        (shown["state"] == "paused_limit" && shown["pending"] == 70 && !in_flight).then_some(shown)
    })
    .await?;
    assert_eq!((paused["sent"].as_u64(), paused["failed"].as_u64()), (Some(30), Some(0)), "{}", paused["reason"]);
    assert_eq!(paused["reason"], "spam_rate_limit");
    // Paused: the clock moving sends nothing more.
    let asked = harness.emulator.requests().len();
    clock.advance_ms(5_000);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(harness.emulator.requests().len(), asked, "a paused broadcast sent");

    // A restart keeps it paused, its recipients as they were.
    let mut harness = harness;
    harness.restart(StartOptions { clock: clock.clone(), ..StartOptions::default() }).await?;
    harness.emulator.set_webhook_url(None);
    let after = show(&harness, &id).await?;
    assert_eq!(
        (after["state"].as_str(), after["sent"].as_u64(), after["pending"].as_u64()),
        (Some("paused_limit"), Some(30), Some(70))
    );
    assert!(after["recipients"] == paused["recipients"], "the recipients changed across the restart");

    harness.emulator.clear_limit();
    let (status, resumed) = harness.post(&format!("/api/v1/broadcasts/{id}/resume"), MANAGER_TOKEN, &json!({})).await?;
    assert_eq!(status, 200, "{resumed}");
    let done = eventually(|| async {
        clock.advance_ms(1000);
        let shown = show(&harness, &id).await.ok()?;
        (shown["state"] == "completed").then_some(shown)
    })
    .await?;
    assert_eq!(done["sent"], 100);
    assert_eq!(harness.emulator.accepted_count(), 100, "each recipient accepted once");
    let (status, again) = harness.post(&format!("/api/v1/broadcasts/{id}/resume"), MANAGER_TOKEN, &json!({})).await?;
    assert_eq!((status, again["code"].as_str()), (400, Some("bad_request")), "{again}");
    harness.shutdown().await;
    Ok(())
}

/// Throttling (130429) puts the recipient back and waits on the clock;
/// the pair rate limit (131056) fails that recipient only; a refused
/// template (132001) stops the broadcast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_waits_a_pair_limit_fails_one_and_a_refused_template_stops() -> TestResult {
    let (harness, clock) = start_on_clock(|_| {}).await?;
    let failure = |code: i64| Failure { http_status: 400, code, message: format!("error {code}") };
    harness.emulator.fail_next(failure(131056), 1);
    harness.emulator.fail_next(failure(130429), 1);
    let contacts: Vec<String> = (0..3).map(wa_id).collect();
    let id = create(&harness, &broadcast_body(&contacts)).await?;
    let done = eventually(|| async {
        clock.advance_ms(500);
        let shown = show(&harness, &id).await.ok()?;
        (shown["state"] == "completed").then_some(shown)
    })
    .await?;
    let states: Vec<(&str, &str)> = done["recipients"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|recipient| (recipient["state"].as_str().unwrap_or(""), recipient["error"].as_str().unwrap_or("")))
        .collect();
    let failed: Vec<_> = states.iter().filter(|(state, _)| *state == "failed").collect();
    assert_eq!(failed, vec![&("failed", "pair_rate_limit")], "{states:?}");
    assert_eq!(done["sent"], 2, "the throttled one was sent later");

    harness.emulator.fail_next(failure(132001), 1);
    let id = create(&harness, &broadcast_body(&[wa_id(7), wa_id(8)])).await?;
    let stopped = eventually(|| async {
        let shown = show(&harness, &id).await.ok()?;
        (shown["state"] == "stopped").then_some(shown)
    })
    .await?;
    assert_eq!(stopped["reason"], "template_rejected_132001");
    harness.shutdown().await;
    Ok(())
}

/// Closed conversations as the audience: the contacts whose conversation
/// closed with that outcome, sent from the number they wrote to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audience_is_read_from_closed_conversations() -> TestResult {
    let (harness, _clock) = start_on_clock(|_| {}).await?;
    let customers = ["919700000001", "919700000002", "919700000003"];
    for (n, customer) in customers.iter().enumerate() {
        let (status, _) = harness.post_webhook(&inbound_text(customer, &format!("wamid.aud.{n}"), "hi")).await?;
        anyhow::ensure!(status == 200);
    }
    let (_, list) = harness.get("/api/v1/conversations", MANAGER_TOKEN).await?;
    for conversation in list["conversations"].as_array().cloned().unwrap_or_default() {
        let id = conversation["id"].as_str().unwrap_or_default();
        let outcome = if conversation["contact"]["wa_id"] == customers[1] { "follow_up" } else { "closed_won" };
        let path = |action: &str| format!("/api/v1/conversations/{id}/{action}");
        let (status, answer) =
            harness.post(&path("fields"), MANAGER_TOKEN, &json!({"fields": {"outcome": outcome}})).await?;
        anyhow::ensure!(status == 200, "{answer}");
        let (status, answer) = harness.post(&path("close"), MANAGER_TOKEN, &json!({})).await?;
        anyhow::ensure!(status == 200, "{answer}");
    }
    let body = json!({
        "name": "won customers",
        "template": {"name": "thank_you", "language": "en"},
        "audience": {"outcome": "closed_won", "team": "sales", "closed_from": "2000-01-01"},
    });
    let id = create(&harness, &body).await?;
    let shown = eventually(|| async {
        let shown = show(&harness, &id).await.ok()?;
        (shown["state"] == "completed").then_some(shown)
    })
    .await?;
    let reached: Vec<&str> = shown["recipients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|recipient| recipient["wa_id"].as_str())
        .collect();
    assert_eq!(reached, vec![customers[0], customers[2]]);
    assert!(harness.emulator.requests().iter().all(|request| request.phone_number_id == PHONE_NUMBER_ID));
    harness.shutdown().await;
    Ok(())
}

/// Who may broadcast, and requests that cannot be sent, each refused
/// with its code and a sentence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_other_teams_managers_are_refused_and_bad_requests_named() -> TestResult {
    const SUPPORT_LEAD: &str = "support-lead-token";
    let harness = Harness::start_with(Default::default(), |config| {
        let mut support = config.teams[0].clone();
        support.id = "support".into();
        config.teams.push(support);
        let mut lead = config.agents.iter().find(|agent| agent.id == "boss").unwrap().clone();
        lead.id = "support-lead".into();
        lead.token = Some(SUPPORT_LEAD.into());
        lead.manages = vec!["support".into()];
        config.agents.push(lead);
    })
    .await?;
    let body = broadcast_body(&[wa_id(1)]);
    let (status, answer) = harness.post("/api/v1/broadcasts", &agent_token("a1"), &body).await?;
    assert_eq!((status, answer["code"].as_str()), (403, Some("forbidden")), "{answer}");
    let (status, answer) = harness.post("/api/v1/broadcasts", SUPPORT_LEAD, &body).await?;
    assert_eq!((status, answer["code"].as_str()), (403, Some("forbidden")), "explicit contacts: {answer}");
    let mut sales = body.clone();
    sales["audience"] = json!({"team": "sales"});
    let (status, answer) = harness.post("/api/v1/broadcasts", SUPPORT_LEAD, &sales).await?;
    assert_eq!((status, answer["code"].as_str()), (403, Some("forbidden")), "another team: {answer}");
    let mut own = body.clone();
    own["audience"] = json!({"team": "support"});
    let (status, answer) = harness.post("/api/v1/broadcasts", SUPPORT_LEAD, &own).await?;
    assert_eq!((status, answer["code"].as_str()), (422, Some("invalid_field")), "its own team, nobody yet: {answer}");
    let (status, _) = harness.get("/api/v1/broadcasts/bc1", "no-such-token").await?;
    assert_eq!(status, 401);

    let too_many: Vec<String> = (0..10_001).map(wa_id).collect();
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"name": "x", "template": {"name": "t", "language": "en"}, "audience": {"contacts": [wa_id(1)]}, "when": "now"}),
            422,
            "when",
        ),
        (json!({"name": "x", "template": {"name": "t", "language": "en"}, "audience": {}}), 422, "audience"),
        (
            json!({"name": "x", "template": {"name": "Big Offer", "language": "en"}, "audience": {"contacts": [wa_id(1)]}}),
            422,
            "template.name",
        ),
        (
            json!({"name": "x", "template": {"name": "t", "language": "en", "params": [""]}, "audience": {"contacts": [wa_id(1)]}}),
            422,
            "template.params[0]",
        ),
        (broadcast_body(&too_many), 422, "audience.contacts"),
        (json!("just text"), 400, ""),
    ];
    for (body, status_wanted, field) in cases {
        let (status, answer) = harness.post("/api/v1/broadcasts", MANAGER_TOKEN, &body).await?;
        assert_eq!(status, status_wanted, "{answer}");
        assert!(answer["message"].as_str().is_some_and(|message| !message.is_empty()), "{answer}");
        if !field.is_empty() {
            assert_eq!(answer["detail"]["field"], field, "{answer}");
        }
    }
    let (status, answer) = harness.get("/api/v1/broadcasts/bc404", MANAGER_TOKEN).await?;
    assert_eq!((status, answer["code"].as_str()), (404, Some("not_found")));
    assert!(harness.emulator.requests().is_empty(), "nothing refused was sent");
    harness.shutdown().await;
    Ok(())
}

/// kill -9 while sends are in flight: after the restart the broadcast
/// completes, no one got the template twice, and everyone not `unknown`
/// (in flight at the kill: Meta may or may not have had it) got it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_dash_nine_the_broadcast_completes_and_no_one_gets_it_twice() -> TestResult {
    const RECIPIENTS: usize = 300;
    let emulator = switchboard_tests::start_emulator(false).await?;
    // Answers held a while: sends are in flight when the kill comes.
    emulator.set_answer_delay_ms(150);
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("switchboard.toml");
    let config = switchboard_tests::test_config_toml(&dir.path().join("data"), &emulator.base_url())
        .replace("access_token = \"test-access-token\"", "access_token = \"test-access-token\"\nmax_sends_per_s = 100");
    std::fs::write(&config_path, config)?;
    let binary = env!("CARGO_BIN_EXE_switchboard-under-test");
    let (mut child, base_url) = switchboard_tests::spawn_binary(binary, &config_path)?;
    let http = reqwest::Client::new();
    switchboard_tests::until_ready(&http, &base_url).await?;
    let contacts: Vec<String> = (0..RECIPIENTS).map(wa_id).collect();
    let response = http
        .post(format!("{base_url}/api/v1/broadcasts"))
        .bearer_auth(MANAGER_TOKEN)
        .json(&broadcast_body(&contacts))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 201, "create: {}", response.text().await?);
    let id = response.json::<Value>().await?["id"].as_str().unwrap_or_default().to_owned();
    // Kill once some were sent and others are with the emulator unanswered.
    eventually(|| async {
        let accepted = emulator.accepted_count();
        (accepted >= 50 && emulator.requests().len() >= accepted + 5).then_some(())
    })
    .await?;
    child.kill()?; // SIGKILL: sends in flight lose their answers
    child.wait()?;
    let asked_at_kill = emulator.requests().len();
    assert!(asked_at_kill < RECIPIENTS, "the kill came after every send: nothing tested");

    let (mut restarted, base_url) = switchboard_tests::spawn_binary(binary, &config_path)?;
    let shown = eventually(|| async {
        let response =
            http.get(format!("{base_url}/api/v1/broadcasts/{id}")).bearer_auth(MANAGER_TOKEN).send().await.ok()?;
        let shown: Value = response.json().await.ok()?;
        (shown["state"] == "completed").then_some(shown)
    })
    .await?;
    restarted.kill()?;
    restarted.wait()?;
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for request in emulator.requests() {
        *per_recipient.entry(request.body["to"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
    }
    let mut unknown = 0;
    for recipient in shown["recipients"].as_array().cloned().unwrap_or_default() {
        let wa_id = recipient["wa_id"].as_str().unwrap_or_default();
        let times = per_recipient.get(wa_id).copied().unwrap_or(0);
        assert!(times <= 1, "{wa_id} got the template {times} times");
        match recipient["state"].as_str() {
            Some("sent") => assert_eq!(times, 1, "{wa_id} is sent but Meta never had it"),
            Some("unknown") => unknown += 1,
            other => panic!("{wa_id} ended {other:?}"),
        }
    }
    assert!(unknown > 0, "no send was in flight at the kill: the test proved nothing about them");
    assert_eq!(shown["unknown"], unknown);
    assert_eq!(shown["sent"].as_u64(), Some((RECIPIENTS - unknown) as u64));
    Ok(())
}

/// Meta's statuses for a broadcast message (sent, delivered, read, from
/// the emulator's webhooks) are logged under the contact, where the audit
/// trail shows them, rather than kept waiting for a conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_of_broadcast_messages_are_in_the_contacts_audit_trail() -> TestResult {
    let harness = Harness::start().await?;
    let id = create(&harness, &broadcast_body(&[wa_id(5)])).await?;
    let shown = eventually(|| async {
        let shown = show(&harness, &id).await.ok()?;
        (shown["state"] == "completed").then_some(shown)
    })
    .await?;
    let wamid = shown["recipients"][0]["message_id"].as_str().unwrap_or_default().to_owned();
    let path = format!("{}/api/v1/audit?contact={}", harness.base_url(), wa_id(5));
    let statuses = eventually(|| async {
        let text = harness.http.get(&path).bearer_auth(MANAGER_TOKEN).send().await.ok()?.text().await.ok()?;
        let statuses: Vec<String> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["action"] == "status" && entry["data"]["wamid"] == wamid.as_str())
            .filter_map(|entry| entry["data"]["status"].as_str().map(str::to_owned))
            .collect();
        (statuses.len() == 3).then_some(statuses)
    })
    .await?;
    assert_eq!(statuses, ["sent", "delivered", "read"]);
    harness.shutdown().await;
    Ok(())
}

/// Agents come first: an agent's reply while a broadcast has spent the
/// second's budget goes at once, and counts, so the broadcast sends one
/// fewer in the next second (the two together stay within the rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_reply_is_not_queued_behind_a_broadcast_and_counts_in_its_budget() -> TestResult {
    let (harness, clock) = start_on_clock(|_| {}).await?;
    let mut agent = harness.online_agent("a1").await?;
    let (conversation, _) =
        switchboard_tests::assigned_after(&harness, &mut agent, &inbound_text("919711111111", "wamid.first", "hi"))
            .await?;
    let conversation_id = conversation["id"].as_str().unwrap_or_default().to_owned();
    let contacts: Vec<String> = (0..200).map(wa_id).collect();
    create(&harness, &broadcast_body(&contacts)).await?;
    eventually(|| async { (harness.emulator.accepted_count() >= PER_SECOND).then_some(()) }).await?;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(harness.emulator.accepted_count(), PER_SECOND, "the second's budget is spent");

    clock.advance_ms(500);
    let answer =
        agent.request(json!({"type": "send", "conversation_id": conversation_id, "text": "one moment"})).await?;
    assert_eq!(answer["type"], "ok", "the reply went without waiting for the budget: {answer}");
    assert_eq!(harness.emulator.accepted_count(), PER_SECOND + 1);

    clock.advance_ms(500); // the broadcast's first second has passed; the reply's has not
    let expected = 2 * PER_SECOND;
    eventually(|| async { (harness.emulator.accepted_count() >= expected).then_some(()) }).await?;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(harness.emulator.accepted_count(), expected, "79 broadcast sends: the reply took one");
    harness.shutdown().await;
    Ok(())
}
