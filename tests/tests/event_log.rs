//! The conversation event log, through the real server: one conversation
//! driven by signed webhooks (the customer, Meta's statuses) and WebSocket
//! agents (log in, reply, fields, transfer, close), then the log read back
//! from the store in seq order, event by event.

use protocol::events::{Actor, Event, EventBody, FieldChange, Window};
use protocol::model::{Route, RouteReason};
use protocol::ws::UnassignReason;
use serde_json::{Value, json};
use switchboard_tests::*;

type TestResult = anyhow::Result<()>;

const CUSTOMER: &str = "919811112222";

/// Every event in the log, in seq order, checking that the seqs have no gap.
async fn the_log(harness: &Harness) -> anyhow::Result<Vec<Event>> {
    let reader = harness.system().reader().caught_up().await?;
    let events = reader.events_after(0, 10_000)?;
    let seqs: Vec<u64> = events.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>(), "one gap-free sequence");
    Ok(events.into_iter().map(|(_, event)| event).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_conversation_leaves_its_whole_story_in_the_event_log() -> TestResult {
    let harness = Harness::start().await?;
    let mut first_agent = harness.online_agent("a1").await?;

    // The customer writes; a1 is the only one online and gets it.
    let (status, _) = harness.post_webhook(&inbound_text(CUSTOMER, "wamid.log.1", "do you deliver?")).await?;
    assert_eq!(status, 200);
    let assigned = first_agent.expect_type("assigned").await?;
    let conversation_id = assigned["conversation"]["id"].as_str().unwrap().to_owned();
    let service_until = assigned["conversation"]["service_until"].as_str().and_then(protocol::time::parse_rfc3339);
    let service_until = service_until.expect("the customer's message opened the service window");

    // a1 replies; the emulator reports sent, delivered, read.
    let answer =
        first_agent.request(json!({"type": "send", "conversation_id": conversation_id, "text": "We do"})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    let wamid = answer["message"]["id"].as_str().unwrap().to_owned();
    first_agent.expect_where(|frame| frame["type"] == "status" && frame["status"] == "read").await?;

    // a1 sets a field, then hands the conversation to a2.
    let answer = first_agent
        .request(json!({"type": "set_fields", "conversation_id": conversation_id, "fields": {"outcome": "follow_up"}}))
        .await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    let mut second_agent = harness.online_agent("a2").await?;
    let answer =
        first_agent.request(json!({"type": "transfer", "conversation_id": conversation_id, "agent": "a2"})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    second_agent.expect_type("assigned").await?;

    // a2 closes it as won.
    let answer = second_agent
        .request(json!({"type": "close", "conversation_id": conversation_id, "fields": {"outcome": "closed_won"}}))
        .await?;
    assert_eq!(answer["type"], "ok", "{answer}");

    let log = the_log(&harness).await?;
    let story: Vec<(String, Value)> = log
        .iter()
        .map(|event| {
            if event.body.action() == "login" {
                // About a session, not a conversation.
                assert_eq!((&event.conversation_id, &event.contact, &event.phone_number_id), (&None, &None, &None));
            } else {
                assert_eq!(event.conversation_id.as_deref(), Some(conversation_id.as_str()), "{event:?}");
                assert_eq!(event.contact.as_deref(), Some(CUSTOMER), "{event:?}");
                assert_eq!(event.phone_number_id.as_deref(), Some(PHONE_NUMBER_ID), "{event:?}");
            }
            (event.actor.label(), serde_json::to_value(&event.body).unwrap())
        })
        .collect();
    let body = |body: EventBody| serde_json::to_value(body).unwrap();
    let user = |id: &str| Actor::user(id).label();
    let customer = Actor::Customer.label();
    let (system, meta) = (Actor::System.label(), Actor::Meta.label());
    let login = |id: &str| (user(id), body(EventBody::Login { role: protocol::model::Role::Agent }));
    let expected = vec![
        login("a1"),
        (customer.clone(), body(EventBody::Opened { source: protocol::model::Source::organic() })),
        (
            customer.clone(),
            body(EventBody::MessageIn {
                wamid: "wamid.log.1".into(),
                message_type: "text".into(),
                text: Some("do you deliver?".into()),
            }),
        ),
        (customer, body(EventBody::WindowOpened { window: Window::Service, until: service_until })),
        (
            system.clone(),
            body(EventBody::Routed { route: json!({"reason": "default"}), team_id: Some("sales".into()) }),
        ),
        (
            system,
            body(EventBody::Assigned {
                agent_id: "a1".into(),
                team_id: Some("sales".into()),
                route: Some(Route::because(RouteReason::Default)),
            }),
        ),
        (
            user("a1"),
            body(EventBody::MessageOut {
                id: wamid.clone(),
                message_type: "text".into(),
                text: Some("We do".into()),
                template: None,
            }),
        ),
        (meta.clone(), body(EventBody::Status { wamid: wamid.clone(), status: "sent".into(), error_code: None })),
        (meta.clone(), body(EventBody::Status { wamid: wamid.clone(), status: "delivered".into(), error_code: None })),
        (meta, body(EventBody::Status { wamid, status: "read".into(), error_code: None })),
        (
            user("a1"),
            body(EventBody::FieldsChanged {
                changes: vec![FieldChange { key: "outcome".into(), old: Value::Null, new: json!("follow_up") }],
            }),
        ),
        login("a2"),
        (
            user("a1"),
            body(EventBody::Transferred {
                from_agent: Some("a1".into()),
                to_team: None,
                to_agent: Some("a2".into()),
                note: None,
            }),
        ),
        (user("a1"), body(EventBody::Unassigned { agent_id: "a1".into(), reason: UnassignReason::Transferred })),
        (
            user("a1"),
            body(EventBody::Assigned {
                agent_id: "a2".into(),
                team_id: Some("sales".into()),
                route: Some(Route::because(RouteReason::Transfer)),
            }),
        ),
        (
            user("a2"),
            body(EventBody::FieldsChanged {
                changes: vec![FieldChange { key: "outcome".into(), old: json!("follow_up"), new: json!("closed_won") }],
            }),
        ),
        (
            user("a2"),
            body(EventBody::Closed {
                fields: json!({"outcome": "closed_won"}).as_object().cloned().unwrap(),
                outcome: Some("closed_won".into()),
            }),
        ),
        (user("a2"), body(EventBody::Unassigned { agent_id: "a2".into(), reason: UnassignReason::Closed })),
    ];
    let actions = |story: &[(String, Value)]| -> Vec<String> {
        story.iter().map(|(actor, body)| format!("{actor} {}", body["type"].as_str().unwrap_or("?"))).collect()
    };
    assert_eq!(actions(&story), actions(&expected), "the order of the story");
    for (index, (got, want)) in story.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "event {} of the log", index + 1);
    }
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_message_adds_nothing_to_the_log() -> TestResult {
    let harness = Harness::start().await?;
    let body = inbound_text(CUSTOMER, "wamid.log.dup", "hello?");
    for _ in 0..3 {
        let (status, _) = harness.post_webhook(&body).await?;
        assert_eq!(status, 200);
    }
    let log = the_log(&harness).await?;
    let messages_in = log.iter().filter(|event| event.body.action() == "message_in").count();
    assert_eq!(messages_in, 1, "{log:?}");
    assert_eq!(log.iter().filter(|event| event.body.action() == "opened").count(), 1);
    harness.shutdown().await;
    Ok(())
}
