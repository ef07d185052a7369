//! The co-pilot (PROTOCOL §11, docs/copilot.md), black-box: the real
//! server with a `[teams.copilot]` flow for paid leads, the emulator as
//! Meta (it keeps every send), signed webhooks and an agent's WebSocket, on
//! a manual clock.
//!
//! - A scripted click-to-WhatsApp lead answers three questions (a reply
//!   button, a number, free text) and reaches an online agent, `assigned`,
//!   qualified, with the summary and fields, without the clock moving; the
//!   emulator got the co-pilot's questions as interactive buttons and text,
//!   each message `author: "copilot"`, logged `message_out` by `copilot`;
//!   the Conversions API got one QualifiedLead.
//! - "Talk to a human" at the first question hands over at once.
//! - `handoff_after_s` hands over on the manual clock.
//! - An unqualified lead is closed with the flow's outcome.
//! - A restart mid-flow resumes at the same question, sending nothing again.

use std::sync::Arc;

use actors::clock::ManualClock;
use engine::server::StartOptions;
use serde_json::{Value, json};
use switchboard_tests::copilot::{FLOW, NUMBER, ad_click, say, sends, sent_to, tap};
use switchboard_tests::{Harness, MANAGER_TOKEN, config_head, eventually, message_webhook, now_s};

type TestResult = anyhow::Result<()>;

async fn start(clock: Arc<ManualClock>) -> anyhow::Result<Harness> {
    Harness::start_on_with(StartOptions { clock, ..StartOptions::default() }, "copilot test", FLOW).await
}

/// The conversation of `customer` as the API shows it, once `check` holds.
async fn conversation_where(
    harness: &Harness,
    customer: &str,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    eventually(|| async {
        let (_, list) = harness.get("/api/v1/conversations", MANAGER_TOKEN).await.ok()?;
        let id = list["conversations"].as_array()?.iter().find_map(|conversation| {
            (conversation["contact"]["wa_id"] == customer).then(|| conversation["id"].as_str().unwrap_or("").to_owned())
        })?;
        let (_, detail) = harness.get(&format!("/api/v1/conversations/{id}"), MANAGER_TOKEN).await.ok()?;
        check(&detail).then_some(detail)
    })
    .await
}

/// The conversation's audit trail, once it holds an entry `check` likes.
async fn audit_where(harness: &Harness, id: &str, check: impl Fn(&[Value]) -> bool) -> anyhow::Result<Vec<Value>> {
    eventually(|| async {
        let text = harness
            .http
            .get(format!("{}/api/v1/audit?conversation={id}", harness.base_url()))
            .bearer_auth(MANAGER_TOKEN)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let entries: Vec<Value> = text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
        check(&entries).then_some(entries)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_ad_lead_answers_three_questions_and_reaches_an_agent_qualified_with_a_summary() -> TestResult {
    let clock = ManualClock::new(now_s() * 1000);
    let harness = start(clock.clone()).await?;
    let mut a1 = harness.online_agent("a1").await?;
    let customer = "919700000001";
    let started_at = clock.now_ms_for_test();

    ad_click(&harness, customer).await?;
    let sent = sends(&harness, customer, 1).await?;
    assert_eq!(
        sent[0],
        json!({
            "messaging_product": "whatsapp", "recipient_type": "individual", "to": customer, "type": "interactive",
            "interactive": {"type": "button", "body": {"text": "Hi! Thanks for your interest.\n\nWhat is your budget?"},
                "action": {"buttons": [
                    {"type": "reply", "reply": {"id": "cp:budget:low", "title": "Under 10 lakh"}},
                    {"type": "reply", "reply": {"id": "cp:budget:mid", "title": "10–20 lakh"}},
                    {"type": "reply", "reply": {"id": "cp:budget:high", "title": "Over 20 lakh"}},
                ]}},
        })
    );
    let with_bot = conversation_where(&harness, customer, |detail| detail["status"] == "bot").await?;
    let id = with_bot["id"].as_str().unwrap_or_default().to_owned();

    tap(&harness, customer, "2", "cp:budget:high", "Over 20 lakh").await?;
    let sent = sends(&harness, customer, 2).await?;
    assert_eq!(sent[1]["type"], "text");
    assert_eq!(sent[1]["text"]["body"], "How many units?");
    say(&harness, customer, "3", "maybe 2 units").await?;
    let sent = sends(&harness, customer, 3).await?;
    assert_eq!(sent[2]["text"]["body"], "Which city?");
    say(&harness, customer, "4", "Pune").await?;

    let assigned = a1.expect_type("assigned").await?;
    assert_eq!(assigned["conversation"]["id"], id.as_str());
    assert_eq!(assigned["conversation"]["status"], "assigned");
    let fields = json!({"budget": "over_20l", "units": 2, "city": "Pune"});
    assert_eq!(
        assigned["handoff"],
        json!({
            "reason": "qualified",
            "fields": fields,
            "summary": "Paid lead from ad 'Spring offer'. Budget: Over 20 lakh; Units: 2; City: Pune. Qualified (score 5/5).",
        })
    );
    assert_eq!(assigned["conversation"]["fields"], fields);
    // The agent sees the bot's part of the conversation, the co-pilot's
    // messages marked as its own.
    let messages = assigned["conversation"]["messages"].as_array().cloned().unwrap_or_default();
    let outbound: Vec<&Value> = messages.iter().filter(|message| message["direction"] == "out").collect();
    assert_eq!(outbound.len(), 3, "{messages:#?}");
    assert!(outbound.iter().all(|message| message["author"] == "copilot"), "{outbound:#?}");
    assert_eq!(outbound[0]["type"], "interactive");
    assert_eq!(outbound[0]["media"]["interactive"]["action"]["buttons"][2]["reply"]["id"], "cp:budget:high");
    assert_eq!(messages.iter().filter(|message| message["direction"] == "in").count(), 4);
    assert!(clock.now_ms_for_test() - started_at < 60_000, "within its first minute: the clock never moved");

    // In the audit log: the co-pilot's messages and its decisions, by `copilot`.
    let trail = audit_where(&harness, &id, |entries| entries.iter().any(|entry| entry["action"] == "assigned")).await?;
    let by_copilot: Vec<&str> = trail
        .iter()
        .filter(|entry| entry["actor"] == "copilot")
        .map(|entry| entry["action"].as_str().unwrap_or(""))
        .collect();
    for action in ["copilot_started", "copilot_answered", "copilot_qualified", "copilot_handoff", "message_out"] {
        assert!(by_copilot.contains(&action), "{action} by copilot: {by_copilot:?}");
    }
    assert_eq!(by_copilot.iter().filter(|action| **action == "message_out").count(), 3);
    assert_eq!(by_copilot.iter().filter(|action| **action == "copilot_answered").count(), 3);

    // One QualifiedLead for the paid lead (the co-pilot's mark; the
    // assignment after it adds nothing).
    let qualified = eventually(|| async {
        let conversions = harness.emulator.conversions();
        (!conversions.is_empty()).then_some(conversions)
    })
    .await?;
    assert_eq!(qualified.len(), 1);
    assert_eq!(qualified[0].event["event_name"], "QualifiedLead");
    assert_eq!(qualified[0].event["event_id"], format!("{id}.QualifiedLead"));
    assert_eq!(qualified[0].event["user_data"]["ctwa_clid"], format!("clid-{customer}"));
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talk_to_a_human_at_the_first_question_hands_over_at_once() -> TestResult {
    let clock = ManualClock::new(now_s() * 1000);
    let harness = start(clock.clone()).await?;
    let mut a1 = harness.online_agent("a1").await?;
    let customer = "919700000002";
    ad_click(&harness, customer).await?;
    sends(&harness, customer, 1).await?;
    say(&harness, customer, "2", "Can I talk to a HUMAN please?").await?;
    let assigned = a1.expect_type("assigned").await?;
    assert_eq!(assigned["handoff"]["reason"], "asked_for_person");
    assert_eq!(assigned["handoff"]["fields"], json!({}));
    let summary = assigned["handoff"]["summary"].as_str().unwrap_or_default();
    assert_eq!(summary, "Paid lead from ad 'Spring offer'. Not qualified (score 0/5). Asked for a person.");
    assert_eq!(sent_to(&harness, customer).len(), 1, "nothing more was asked");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_after_s_hands_over_on_the_clock() -> TestResult {
    let clock = ManualClock::new(now_s() * 1000);
    let harness = start(clock.clone()).await?;
    let mut a1 = harness.online_agent("a1").await?;
    let customer = "919700000003";
    ad_click(&harness, customer).await?;
    sends(&harness, customer, 1).await?;
    tap(&harness, customer, "2", "cp:budget:mid", "10–20 lakh").await?;
    sends(&harness, customer, 2).await?;
    clock.advance_ms(599_000);
    harness.system().settle_clock().await;
    conversation_where(&harness, customer, |detail| detail["status"] == "bot").await?;
    clock.advance_ms(1_000);
    harness.system().settle_clock().await;
    let assigned = a1.expect_type("assigned").await?;
    assert_eq!(assigned["handoff"]["reason"], "timeout");
    assert_eq!(assigned["handoff"]["fields"], json!({"budget": "10_20l"}));
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unqualified_lead_is_closed_with_the_flows_outcome() -> TestResult {
    let clock = ManualClock::new(now_s() * 1000);
    let harness = start(clock.clone()).await?;
    let customer = "919700000004";
    ad_click(&harness, customer).await?;
    sends(&harness, customer, 1).await?;
    tap(&harness, customer, "2", "cp:budget:low", "Under 10 lakh").await?;
    sends(&harness, customer, 2).await?;
    say(&harness, customer, "3", "1").await?;
    sends(&harness, customer, 3).await?;
    say(&harness, customer, "4", "Nashik").await?;
    let closed = conversation_where(&harness, customer, |detail| detail["status"] == "closed").await?;
    assert_eq!(
        closed["fields"],
        json!({"budget": "under_10l", "units": 1, "city": "Nashik", "outcome": "not_qualified"})
    );
    assert!(harness.emulator.conversions().is_empty(), "not qualified: no QualifiedLead");
    let id = closed["id"].as_str().unwrap_or_default();
    let trail = audit_where(&harness, id, |entries| entries.iter().any(|entry| entry["action"] == "closed")).await?;
    let closed_entry = trail.iter().find(|entry| entry["action"] == "closed").unwrap();
    assert_eq!(closed_entry["actor"], "copilot");
    assert!(
        trail.iter().any(|entry| entry["action"] == "copilot_closed" && entry["data"]["reason"] == "not_qualified")
    );
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_flow_resumes_at_the_same_question_without_asking_it_again() -> TestResult {
    let clock = ManualClock::new(now_s() * 1000);
    let mut harness = start(clock.clone()).await?;
    let customer = "919700000005";
    ad_click(&harness, customer).await?;
    sends(&harness, customer, 1).await?;
    tap(&harness, customer, "2", "cp:budget:high", "Over 20 lakh").await?;
    sends(&harness, customer, 2).await?;
    harness.restart(StartOptions { clock: clock.clone(), ..StartOptions::default() }).await?;
    // Nothing is sent again at the start.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sent_to(&harness, customer).len(), 2, "the question was not asked again");
    let mut a1 = harness.online_agent("a1").await?;
    // The answer to the question asked before the restart is taken as such.
    say(&harness, customer, "3", "3").await?;
    let sent = sends(&harness, customer, 3).await?;
    assert_eq!(sent[2]["text"]["body"], "Which city?");
    say(&harness, customer, "4", "Pune").await?;
    let assigned = a1.expect_type("assigned").await?;
    assert_eq!(assigned["handoff"]["fields"], json!({"budget": "over_20l", "units": 3, "city": "Pune"}));
    assert_eq!(assigned["handoff"]["reason"], "qualified");
    harness.shutdown().await;
    Ok(())
}

/// A fake model hook: what it answers to every interpretation.
#[derive(Clone)]
enum Fake {
    /// Fields outside the question (another field, a value not offered).
    Garbage,
    Failing,
    /// Answers after the caller's timeout.
    Slow,
    /// Reads "a lot" as the highest budget.
    Good,
    /// Answers like `Good` once the test lets it (a permit of the gate).
    Held(Arc<tokio::sync::Semaphore>),
}

impl actors::copilot::CopilotModel for Fake {
    fn interpret(
        &self,
        request: actors::copilot::InterpretRequest,
    ) -> actors::copilot::BoxFuture<Result<actors::copilot::Interpretation, actors::copilot::ModelError>> {
        use actors::copilot::{Action, Interpretation, ModelError};
        let fake = self.clone();
        Box::pin(async move {
            let fields = |value: Value| value.as_object().cloned().unwrap_or_default();
            match fake {
                Fake::Garbage => Ok(Interpretation {
                    action: Action::Answer,
                    fields: fields(json!({"outcome": "booked", "budget": "a billion"})),
                    tokens: 50,
                }),
                Fake::Failing => Err(ModelError::new("HTTP 500")),
                Fake::Slow => {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    Err(ModelError::new("too late"))
                }
                Fake::Held(gate) => {
                    let _permit = gate.acquire().await;
                    Ok(Interpretation {
                        action: Action::Answer,
                        fields: fields(json!({request.field.clone(): "over_20l"})),
                        tokens: 40,
                    })
                }
                Fake::Good if request.text.contains("a lot") => Ok(Interpretation {
                    action: Action::Answer,
                    fields: fields(json!({request.field.clone(): "over_20l"})),
                    tokens: 40,
                }),
                Fake::Good => Ok(Interpretation { action: Action::AskAgain, fields: Default::default(), tokens: 10 }),
            }
        })
    }

    fn summarize(
        &self,
        request: actors::copilot::SummaryRequest,
    ) -> actors::copilot::BoxFuture<Result<actors::copilot::Summary, actors::copilot::ModelError>> {
        use actors::copilot::{ModelError, Summary};
        let fake = self.clone();
        Box::pin(async move {
            match fake {
                Fake::Good => Ok(Summary {
                    text: format!("Keen buyer ({} lines read). {}", request.transcript.len(), request.built_in),
                    tokens: 25,
                }),
                Fake::Garbage => Ok(Summary { text: "   ".into(), tokens: 5 }),
                _ => Err(ModelError::new("no summary")),
            }
        })
    }
}

async fn start_with_model(clock: Arc<ManualClock>, model: Fake) -> anyhow::Result<Harness> {
    start_with_model_timeout(clock, model, 300).await
}

async fn start_with_model_timeout(clock: Arc<ManualClock>, model: Fake, timeout_ms: u64) -> anyhow::Result<Harness> {
    let copilot = actors::CopilotHook { model: Arc::new(model), timeout_ms };
    let options = StartOptions { clock, copilot: Some(copilot), ..StartOptions::default() };
    Harness::start_on_with(options, "copilot test", FLOW).await
}

/// While the model reads one message, the customer's next message is not
/// held up: it is acknowledged at once and takes the pending answer first,
/// with the built-in reading (the question asked again), then its own (an
/// answer); the model's reading, when it comes, changes nothing. (Before,
/// the model was asked inside the conversation's actor, and the second
/// webhook waited for it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_message_is_not_held_up_by_the_model_reading_the_one_before() -> TestResult {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let clock = ManualClock::new(now_s() * 1000);
    let harness = start_with_model_timeout(clock, Fake::Held(gate.clone()), 600_000).await?;
    let customer = "919700000017";
    ad_click(&harness, customer).await?;
    sends(&harness, customer, 1).await?;
    let bound = std::time::Duration::from_secs(20);
    tokio::time::timeout(bound, say(&harness, customer, "2", "we can spend a lot"))
        .await
        .map_err(|_| anyhow::anyhow!("the webhook waited for the model"))??;
    tokio::time::timeout(bound, tap(&harness, customer, "3", "cp:budget:high", "Over 20 lakh"))
        .await
        .map_err(|_| anyhow::anyhow!("the next webhook waited for the model"))??;
    let sent = sends(&harness, customer, 3).await?;
    assert_eq!(sent[1]["interactive"]["body"]["text"], "Sorry, I did not get that.\n\nWhat is your budget?");
    assert_eq!(sent[2]["text"]["body"], "How many units?");
    // The model answers late; the flow goes on from where the tap left it.
    // Its permit is back once the call returned; the reading is handed to
    // the conversation in the same step, ahead of the next webhook.
    gate.add_permits(1);
    tokio::time::timeout(bound, async {
        while gate.available_permits() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the model never answered"))?;
    say(&harness, customer, "4", "2").await?;
    let sent = sends(&harness, customer, 4).await?;
    assert_eq!(sent[3]["text"]["body"], "Which city?", "the late reading changed nothing");
    let detail = conversation_where(&harness, customer, |detail| detail["fields"]["units"] == 2).await?;
    assert_eq!(detail["fields"], json!({"budget": "over_20l", "units": 2}));
    harness.shutdown().await;
    Ok(())
}

/// A person who writes to a lead the co-pilot has takes it from the
/// co-pilot: the person's message goes out, the conversation goes to its
/// team's queue (an agent gets it with everything said so far), and the
/// co-pilot says nothing more, its deadline gone. Before, the co-pilot went
/// on asking its questions beside the person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_who_writes_takes_the_lead_from_the_copilot() -> TestResult {
    let clock = ManualClock::new(now_s() * 1000);
    let harness = start(clock.clone()).await?;
    let customer = "919700000051";
    ad_click(&harness, customer).await?;
    sends(&harness, customer, 1).await?;
    let detail = conversation_where(&harness, customer, |detail| detail["status"] == "bot").await?;
    let id = detail["id"].as_str().unwrap_or_default().to_owned();
    // A send that would be refused takes nothing.
    let path = format!("/api/v1/conversations/{id}/messages");
    let (status, refusal) = harness.post(&path, MANAGER_TOKEN, &json!({"text": "  "})).await?;
    assert_eq!(status, 400, "{refusal}");
    assert_eq!(conversation_where(&harness, customer, |_| true).await?["status"], "bot");
    let (status, answer) =
        harness.post(&path, MANAGER_TOKEN, &json!({"text": "Hi, Priya from the showroom here."})).await?;
    assert_eq!(status, 200, "{answer}");
    let sent = sends(&harness, customer, 2).await?;
    assert_eq!(sent[1]["text"]["body"], "Hi, Priya from the showroom here.");
    conversation_where(&harness, customer, |detail| detail["status"] == "queued").await?;
    let mut a1 = harness.online_agent("a1").await?;
    let assigned = a1.expect_type("assigned").await?;
    assert_eq!(assigned["conversation"]["id"], json!(id));
    let messages = assigned["conversation"]["messages"].as_array().cloned().unwrap_or_default();
    assert!(
        messages.iter().any(|message| message["author"] == "copilot"),
        "the agent sees the co-pilot's part: {messages:?}"
    );
    conversation_where(&harness, customer, |detail| {
        detail["messages"].as_array().is_some_and(|messages| {
            messages.iter().any(|message| message["text"] == "Hi, Priya from the showroom here.")
        })
    })
    .await?;
    // The customer answers the question the co-pilot had asked: the agent
    // gets it; the co-pilot says nothing, now or at its old deadline.
    tap(&harness, customer, "2", "cp:budget:high", "Over 20 lakh").await?;
    a1.expect_where(|frame| frame["type"] == "message" && frame["message"]["text"] == "Over 20 lakh").await?;
    clock.advance_ms(600_000);
    harness.system().settle_clock().await;
    let detail = conversation_where(&harness, customer, |detail| detail["status"] == "assigned").await?;
    assert_eq!(detail["agent"], "a1");
    assert_eq!(sent_to(&harness, customer).len(), 2, "the co-pilot said nothing more");
    harness.shutdown().await;
    Ok(())
}

/// The webhook of a message the model is asked to read is answered once
/// the message is committed, not after the model: while the model has not
/// answered, the message is in the conversation and the co-pilot has not
/// said anything more; its answer then moves the flow on. (Before, the
/// acknowledgement waited for the model, up to its timeout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_is_answered_before_the_model_and_the_step_follows_its_reading() -> TestResult {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let clock = ManualClock::new(now_s() * 1000);
    // A timeout far longer than the test: only the gate lets the model answer.
    let harness = start_with_model_timeout(clock, Fake::Held(gate.clone()), 600_000).await?;
    let customer = "919700000016";
    ad_click(&harness, customer).await?;
    sends(&harness, customer, 1).await?;
    let webhook = say(&harness, customer, "2", "we can spend a lot");
    tokio::time::timeout(std::time::Duration::from_secs(20), webhook)
        .await
        .map_err(|_| anyhow::anyhow!("the webhook waited for the model"))??;
    let detail = conversation_where(&harness, customer, |detail| {
        detail["messages"]
            .as_array()
            .is_some_and(|messages| messages.iter().any(|message| message["text"] == "we can spend a lot"))
    })
    .await?;
    assert_eq!(detail["status"], "bot");
    assert_eq!(detail["fields"], json!({}), "not read yet");
    assert_eq!(sent_to(&harness, customer).len(), 1, "the co-pilot's step waits for the model");
    gate.add_permits(1);
    let sent = sends(&harness, customer, 2).await?;
    assert_eq!(sent[1]["text"]["body"], "How many units?", "the model's reading was taken");
    let detail = conversation_where(&harness, customer, |detail| detail["fields"] != json!({})).await?;
    assert_eq!(detail["fields"], json!({"budget": "over_20l"}));
    harness.shutdown().await;
    Ok(())
}

/// A model hook that fails, is slow, or answers outside the flow changes
/// nothing the customer sees: the built-in engine asks again, as it does
/// with no model. One that reads the text within the flow moves it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_slow_or_lying_model_falls_back_to_the_built_in_engine() -> TestResult {
    for (model, customer) in [
        (Fake::Garbage, "919700000011"),
        (Fake::Failing, "919700000012"),
        (Fake::Slow, "919700000013"),
        (Fake::Good, "919700000014"),
    ] {
        let clock = ManualClock::new(now_s() * 1000);
        let harness = start_with_model(clock, model.clone()).await?;
        ad_click(&harness, customer).await?;
        sends(&harness, customer, 1).await?;
        let asked = std::time::Instant::now();
        say(&harness, customer, "2", "we can spend a lot").await?;
        let sent = sends(&harness, customer, 2).await?;
        // A slow model is cut off at its timeout (300 ms here), not waited for.
        assert!(asked.elapsed() < std::time::Duration::from_secs(3), "{:?}", asked.elapsed());
        let detail = conversation_where(&harness, customer, |detail| detail["status"] == "bot").await?;
        if matches!(model, Fake::Good) {
            assert_eq!(sent[1]["text"]["body"], "How many units?");
            assert_eq!(detail["fields"], json!({"budget": "over_20l"}));
            // The hook's summary replaces the built-in one at the hand-over.
            let mut a1 = harness.online_agent("a1").await?;
            say(&harness, customer, "3", "2").await?;
            sends(&harness, customer, 3).await?;
            say(&harness, customer, "4", "Pune").await?;
            let assigned = a1.expect_type("assigned").await?;
            assert_eq!(
                assigned["handoff"]["summary"],
                "Keen buyer (7 lines read). Paid lead from ad 'Spring offer'. Budget: Over 20 lakh; Units: 2; City: Pune. Qualified (score 5/5)."
            );
        } else {
            assert_eq!(sent[1]["type"], "interactive", "the budget buttons again");
            assert_eq!(sent[1]["interactive"]["body"]["text"], "Sorry, I did not get that.\n\nWhat is your budget?");
            assert_eq!(detail["fields"], json!({}), "nothing the model said was taken");
        }
        harness.shutdown().await;
    }
    Ok(())
}

/// The real binary killed with SIGKILL after the second question was sent:
/// the next start asks nothing again, and the customer's answer is taken
/// as the answer to that question.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_dash_nine_mid_flow_the_flow_resumes_at_the_same_question() -> TestResult {
    let lead = RealBinary::new("919700000021", "").await?;
    let (mut child, base_url) = lead.spawn()?;
    lead.ad_click(&base_url).await?;
    let tap = json!({"type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": {"id": "cp:budget:high", "title": "Over 20 lakh"}}});
    lead.post(&base_url, "2", tap).await?;
    eventually(|| async { (lead.sent().len() == 2).then_some(()) }).await?;
    assert_eq!(lead.sent()[1]["text"]["body"], "How many units?");
    child.kill()?; // SIGKILL
    child.wait()?;

    let (mut restarted, base_url) = lead.spawn()?;
    switchboard_tests::until_ready(&lead.http, &base_url).await?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(lead.sent().len(), 2, "nothing was asked again at the start");
    lead.post(&base_url, "3", json!({"type": "text", "text": {"body": "3"}})).await?;
    eventually(|| async { (lead.sent().len() == 3).then_some(()) }).await?;
    let sent = lead.sent();
    assert_eq!(sent[2]["text"]["body"], "Which city?", "the answer was taken for the question asked before the kill");
    let conversation = lead.conversation(&base_url).await?;
    assert_eq!(conversation["status"], "bot");
    assert_eq!(conversation["fields"], json!({"budget": "over_20l", "units": 3}));
    restarted.kill()?;
    restarted.wait()?;
    Ok(())
}

/// The real binary (`switchboard-under-test`) on a configuration of its
/// own ([`FLOW`] and `extra`), the emulator it sends to, and one customer
/// (the kill -9 tests).
struct RealBinary {
    emulator: sim::emulator::Emulator,
    _dir: tempfile::TempDir,
    config_path: std::path::PathBuf,
    http: reqwest::Client,
    customer: &'static str,
}

impl RealBinary {
    async fn new(customer: &'static str, extra: &str) -> anyhow::Result<RealBinary> {
        let emulator = switchboard_tests::start_emulator(false).await?;
        let dir = tempfile::tempdir()?;
        let config_path = dir.path().join("switchboard.toml");
        let head = config_head(&dir.path().join("data").display().to_string(), &emulator.base_url());
        std::fs::write(&config_path, format!("{head}\n{FLOW}{extra}"))?;
        Ok(RealBinary { emulator, _dir: dir, config_path, http: reqwest::Client::new(), customer })
    }

    /// Starts the binary: the child and its base URL.
    fn spawn(&self) -> anyhow::Result<(std::process::Child, String)> {
        switchboard_tests::spawn_binary(env!("CARGO_BIN_EXE_switchboard-under-test"), &self.config_path)
    }

    /// What was sent to the customer so far.
    fn sent(&self) -> Vec<Value> {
        let requests = self.emulator.requests().into_iter().map(|request| request.body);
        requests.filter(|body| body["to"] == self.customer).collect()
    }

    /// The customer's `n`th message, signed; answered 200.
    async fn post(&self, base_url: &str, n: &str, message: Value) -> anyhow::Result<()> {
        let customer = self.customer;
        let webhook = message_webhook(NUMBER, customer, &format!("wamid.{customer}.{n}"), message);
        let body = serde_json::to_vec(&webhook)?;
        let (status, answer) =
            switchboard_tests::post_signed(&self.http, base_url, switchboard_tests::APP_SECRET, &body).await?;
        anyhow::ensure!(status == 200, "webhook: {status} {answer}");
        Ok(())
    }

    /// The customer clicks the ad; the co-pilot greets and asks.
    async fn ad_click(&self, base_url: &str) -> anyhow::Result<()> {
        let ad = json!({"type": "text", "text": {"body": "Is this still available?"},
            "referral": {"source_url": "https://fb.me/x", "source_type": "ad", "source_id": "1", "ctwa_clid": "clid"}});
        self.post(base_url, "1", ad).await?;
        eventually(|| async { (self.sent().len() == 1).then_some(()) }).await
    }

    /// The customer's conversation in full, as a manager reads it.
    async fn conversation(&self, base_url: &str) -> anyhow::Result<Value> {
        let get = |path: String| async move {
            let response = self.http.get(format!("{base_url}{path}")).bearer_auth(MANAGER_TOKEN).send().await?;
            anyhow::ensure!(response.status() == 200, "{path}: {}", response.status());
            Ok(response.json::<Value>().await?)
        };
        let list = get("/api/v1/conversations".to_owned()).await?;
        let id = list["conversations"][0]["id"].as_str().unwrap_or_default().to_owned();
        get(format!("/api/v1/conversations/{id}")).await
    }
}

/// The language model behind the hook for real: `[copilot.model]` points
/// the engine's own client at a local fake of the chat-completions API.
/// A failing (500), malformed or injected answer (a field outside the flow)
/// changes nothing the customer sees: the built-in engine asks again. A
/// good answer moves the flow on. The customer's words reach the model only
/// inside the delimited user content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_model_server_is_used_and_any_failure_falls_back() -> TestResult {
    use sim::llm::{FakeAnswer, FakeModel};
    let answer = |fields: Value| json!({"fields": fields, "action": "ask_next", "reply": null});
    for (fake_answer, customer, good) in [
        (FakeAnswer::status(500), "919700000021", false),
        (FakeAnswer::Raw { status: 200, body: "{not json".into() }, "919700000022", false),
        (FakeAnswer::json(answer(json!({"budget": "over_20l", "team": "vip"})), 30), "919700000023", false),
        (FakeAnswer::json(answer(json!({"budget": "over_20l"})), 30), "919700000024", true),
    ] {
        let fake = FakeModel::start().await?;
        fake.set_default(fake_answer);
        let model = format!(
            "\n[copilot.model]\nbase_url = \"{}\"\nmodel = \"fake-1\"\napi_key = \"sk-test-secret\"\ntimeout_ms = 2000\n",
            fake.base_url()
        );
        let clock = ManualClock::new(now_s() * 1000);
        let options = StartOptions { clock, ..StartOptions::default() };
        let harness = Harness::start_on_with(options, "copilot model test", &format!("{FLOW}{model}")).await?;
        ad_click(&harness, customer).await?;
        sends(&harness, customer, 1).await?;
        say(&harness, customer, "2", "we can spend a lot").await?;
        let sent = sends(&harness, customer, 2).await?;
        let asked = fake.requests();
        assert_eq!(asked.len(), 1, "one model call for the free text");
        assert_eq!(asked[0].header("authorization"), Some("Bearer sk-test-secret"));
        let user = asked[0].message("user").unwrap_or_default();
        assert!(user.contains("we can spend a lot"), "{user}");
        assert!(!asked[0].message("system").unwrap_or_default().contains("we can spend a lot"));
        let detail = conversation_where(&harness, customer, |detail| detail["status"] == "bot").await?;
        if good {
            assert_eq!(sent[1]["text"]["body"], "How many units?");
            assert_eq!(detail["fields"], json!({"budget": "over_20l"}));
        } else {
            assert_eq!(sent[1]["type"], "interactive", "the budget buttons again");
            assert_eq!(sent[1]["interactive"]["body"]["text"], "Sorry, I did not get that.\n\nWhat is your budget?");
            assert_eq!(detail["fields"], json!({}), "nothing the model said was taken");
        }
        harness.shutdown().await;
    }
    Ok(())
}

/// Every call of the model counts against the conversation's budget
/// (`max_tokens_per_conversation`): the co-pilot's reading, its hand-over
/// summary and the agent assist's drafts. With 150 tokens and 60 a call,
/// the reading (0 → 60), the summary (60 → 120) and one draft (120 → 180)
/// are asked; no later draft is (the budget is spent), however many
/// messages the holder gets. With the drafts' requests counting nothing
/// (checked: the build before), a draft went out for every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_call_counts_against_the_conversations_budget_summaries_and_drafts_included() -> TestResult {
    use sim::llm::{FakeAnswer, FakeModel};
    let fake = FakeModel::start().await?;
    fake.set_responder(|body| match body["response_format"]["json_schema"]["name"].as_str() {
        Some("copilot_turn") => {
            FakeAnswer::json(json!({"fields": {"budget": "over_20l"}, "action": "ask_next", "reply": null}), 60)
        }
        Some("copilot_summary") => FakeAnswer::json(json!({"text": "The model's summary."}), 60),
        Some("copilot_draft") => FakeAnswer::json(json!({"text": "The model's draft."}), 60),
        _ => FakeAnswer::status(400),
    });
    let model = format!(
        "\n[copilot.model]\nbase_url = \"{}\"\nmodel = \"fake-1\"\napi_key = \"sk-test-secret\"\ntimeout_ms = 5000\nmax_tokens_per_conversation = 150\n",
        fake.base_url()
    );
    let clock = ManualClock::new(now_s() * 1000);
    let options = StartOptions { clock, ..StartOptions::default() };
    let harness = Harness::start_on_with(options, "copilot budget test", &format!("{FLOW}{model}")).await?;
    let mut a1 = harness.online_agent("a1").await?;
    assert_eq!(a1.request(json!({"type": "set_copilot", "enabled": true})).await?["copilot"], true);
    let customer = "919700000031";
    ad_click(&harness, customer).await?;
    sends(&harness, customer, 1).await?;
    say(&harness, customer, "2", "we can spend a lot").await?;
    sends(&harness, customer, 2).await?;
    say(&harness, customer, "3", "2").await?;
    sends(&harness, customer, 3).await?;
    say(&harness, customer, "4", "Pune").await?;
    let assigned = a1.expect_type("assigned").await?;
    assert_eq!(assigned["handoff"]["summary"], "The model's summary.");
    say(&harness, customer, "5", "hello there").await?;
    let suggestion = a1.expect_type("suggestion").await?;
    assert_eq!(suggestion["text"], "The model's draft.");
    say(&harness, customer, "6", "anything else?").await?;
    a1.expect_where(|frame| frame["type"] == "message" && frame["message"]["text"] == "anything else?").await?;
    harness.settle_suggestions().await;
    let asked: Vec<String> = fake
        .requests()
        .iter()
        .map(|request| request.body["response_format"]["json_schema"]["name"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert_eq!(asked, ["copilot_turn", "copilot_summary", "copilot_draft"], "the last draft is past the budget");
    harness.shutdown().await;
    Ok(())
}

/// The real binary killed with SIGKILL after a message was committed and
/// acknowledged but before its co-pilot step (the model, a server that
/// never answers, was still being asked): the next start takes the step
/// with the built-in reading at the co-pilot's guard (2 × `timeout_ms` +
/// 1 s after the message), once. Without the guard the customer would hear
/// nothing until the flow's `handoff_after_s` (10 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_dash_nine_between_a_message_and_its_model_step_the_step_is_taken_once() -> TestResult {
    // A model server that takes connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let silent_addr = silent.local_addr()?;
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let model = format!(
        "\n[copilot.model]\nbase_url = \"http://{silent_addr}/v1\"\nmodel = \"fake-1\"\napi_key = \"sk-test\"\ntimeout_ms = 1000\n"
    );
    let lead = RealBinary::new("919700000041", &model).await?;
    let (mut child, base_url) = lead.spawn()?;
    lead.ad_click(&base_url).await?;
    lead.post(&base_url, "2", json!({"type": "text", "text": {"body": "we can spend a lot"}})).await?;
    // Acknowledged; the model is being asked (for up to a second).
    child.kill()?; // SIGKILL
    child.wait()?;
    assert_eq!(lead.sent().len(), 1, "killed before the step");

    let (mut restarted, base_url) = lead.spawn()?;
    eventually(|| async { (lead.sent().len() >= 2).then_some(()) }).await?;
    let sent = lead.sent();
    assert_eq!(sent[1]["type"], "interactive", "the budget buttons again");
    assert_eq!(sent[1]["interactive"]["body"]["text"], "Sorry, I did not get that.\n\nWhat is your budget?");
    let detail = lead.conversation(&base_url).await?;
    let texts: Vec<&Value> = detail["messages"].as_array().into_iter().flatten().map(|m| &m["text"]).collect();
    assert!(texts.contains(&&json!("we can spend a lot")), "the acknowledged message survived: {texts:?}");
    // Once: a tap answers the question asked again, and nothing else came.
    let tap = json!({"type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": {"id": "cp:budget:high", "title": "Over 20 lakh"}}});
    lead.post(&base_url, "3", tap).await?;
    eventually(|| async { (lead.sent().len() == 3).then_some(()) }).await?;
    assert_eq!(lead.sent()[2]["text"]["body"], "How many units?");
    restarted.kill()?;
    restarted.wait()?;
    Ok(())
}

/// `unqualified = "nurture"`: a lead that answers every question below the
/// threshold, inside the free entry window, is sent the flow's nurture
/// template and closed with the flow's outcome (`copilot_closed` reason
/// `nurtured`), no agent's time taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unqualified_lead_is_nurtured_with_the_template_and_closed() -> TestResult {
    let flow = FLOW.replace(
        "unqualified = \"close\"",
        "unqualified = \"nurture\"\nnurture_templates = [{ name = \"spring_offer_followup\", language = \"en\" }]",
    );
    let clock = ManualClock::new(now_s() * 1000);
    let options = StartOptions { clock, ..StartOptions::default() };
    let harness = Harness::start_on_with(options, "copilot nurture test", &flow).await?;
    let customer = "919700000061";
    ad_click(&harness, customer).await?;
    sends(&harness, customer, 1).await?;
    tap(&harness, customer, "2", "cp:budget:low", "Under 10 lakh").await?;
    sends(&harness, customer, 2).await?;
    say(&harness, customer, "3", "1").await?;
    sends(&harness, customer, 3).await?;
    say(&harness, customer, "4", "Nashik").await?;
    let sent = sends(&harness, customer, 4).await?;
    assert_eq!(sent[3]["type"], "template", "{:#}", sent[3]);
    assert_eq!(sent[3]["template"]["name"], "spring_offer_followup");
    assert_eq!(sent[3]["template"]["language"]["code"], "en");
    let closed = conversation_where(&harness, customer, |detail| detail["status"] == "closed").await?;
    assert_eq!(closed["fields"]["outcome"], "not_qualified");
    let id = closed["id"].as_str().unwrap_or_default();
    let trail = audit_where(&harness, id, |entries| {
        entries.iter().any(|entry| entry["action"] == "copilot_closed" && entry["data"]["reason"] == "nurtured")
    })
    .await?;
    assert!(trail.iter().any(|entry| entry["action"] == "closed" && entry["actor"] == "copilot"));
    harness.shutdown().await;
    Ok(())
}

/// `office_hours = "wait"`: a lead qualified while its team is closed is
/// told when the team opens (`closed_message`) and stays with the co-pilot;
/// at the opening it is handed over (reason `qualified`) to the agent who
/// was online all along, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_qualified_while_the_team_is_closed_waits_for_the_opening() -> TestResult {
    // The team opens for half an hour every day, two hours from now (UTC).
    let now_ms = now_s() * 1000;
    let hour = (now_ms / 3_600_000 + 2) % 24;
    let window = format!("[\"{hour:02}:00-{hour:02}:30\"]");
    let week: String =
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].iter().map(|day| format!("{day} = {window}\n")).collect();
    let hours =
        format!("[[teams]]\nid = \"sales\"\n\n[teams.hours]\ntimezone = \"UTC\"\n\n[teams.hours.week]\n{week}\n");
    let flow = FLOW.replacen("[[teams]]\nid = \"sales\"\n", &hours, 1).replacen(
        "[teams.copilot]\n",
        "[teams.copilot]\noffice_hours = \"wait\"\nclosed_message = \"Our advisers are away; one will write to you at {opens}.\"\n",
        1,
    );
    let opens_at = (now_ms / 3_600_000 + 2) * 3_600_000;
    let clock = ManualClock::new(now_ms);
    let options = StartOptions { clock: clock.clone(), ..StartOptions::default() };
    let harness = Harness::start_on_with(options, "copilot office hours test", &flow).await?;
    let mut a1 = harness.online_agent("a1").await?;
    let customer = "919700000062";
    ad_click(&harness, customer).await?;
    sends(&harness, customer, 1).await?;
    tap(&harness, customer, "2", "cp:budget:high", "Over 20 lakh").await?;
    sends(&harness, customer, 2).await?;
    say(&harness, customer, "3", "2").await?;
    sends(&harness, customer, 3).await?;
    say(&harness, customer, "4", "Pune").await?;
    let sent = sends(&harness, customer, 4).await?;
    let told = sent[3]["text"]["body"].as_str().unwrap_or_default().to_owned();
    assert!(told.starts_with("Our advisers are away; one will write to you at "), "{told}");
    assert!(told.contains(&format!("{hour:02}:00")), "the opening in the team's time zone: {told}");
    let waiting = conversation_where(&harness, customer, |detail| detail["fields"]["city"] == "Pune").await?;
    assert_eq!(waiting["status"], "bot", "waits with the co-pilot while the team is closed");
    // Just before the opening: still waiting.
    clock.advance_ms(opens_at - now_ms - 1_000);
    harness.system().settle_clock().await;
    assert_eq!(conversation_where(&harness, customer, |_| true).await?["status"], "bot");
    // At the opening: handed over, qualified, to the agent online all along.
    clock.advance_ms(1_000);
    harness.system().settle_clock().await;
    let assigned = a1.expect_type("assigned").await?;
    assert_eq!(assigned["handoff"]["reason"], "qualified");
    assert_eq!(assigned["handoff"]["fields"], json!({"budget": "over_20l", "units": 2, "city": "Pune"}));
    harness.shutdown().await;
    Ok(())
}
