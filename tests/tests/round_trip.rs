//! The webhook → conversation → agent → Graph API round trip, through the
//! real server: signed webhooks over HTTP, agents over WebSocket.

use std::collections::HashMap;

use serde_json::{Value, json};
use switchboard_tests::*;

type TestResult = anyhow::Result<()>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_handshake_answers_the_challenge_only_for_our_token() -> TestResult {
    let harness = Harness::start().await?;
    let url = |token: &str| {
        format!(
            "{}/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444",
            harness.base_url()
        )
    };
    let good = harness.http.get(url(VERIFY_TOKEN)).send().await?;
    assert_eq!(good.status(), 200);
    assert_eq!(good.text().await?, "1158201444");
    let bad = harness.http.get(url("wrong")).send().await?;
    assert_eq!(bad.status(), 403);
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_assigns_fairly_among_online_agents() -> TestResult {
    let harness = Harness::start().await?;
    let mut agents = HashMap::new();
    for agent in ["a1", "a2", "a3"] {
        agents.insert(agent, harness.online_agent(agent).await?);
    }
    for customer in 0..30 {
        let body = inbound_text(&format!("91980000{customer:04}"), &format!("wamid.rr.{customer}"), "hello, price?");
        let (status, _) = harness.post_webhook(&body).await?;
        assert_eq!(status, 200);
    }
    let mut counts = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let assigned_total = eventually(|| async {
        let (_, body) = harness.get("/api/v1/conversations?status=assigned", MANAGER_TOKEN).await.ok()?;
        let count = body["conversations"].as_array()?.len();
        (count == 30).then_some(count)
    })
    .await?;
    assert_eq!(assigned_total, 30);
    for (name, client) in agents.iter_mut() {
        let (_, body) = harness.get("/api/v1/conversations", &agent_token(name)).await?;
        let held = body["conversations"].as_array().unwrap().len();
        for _ in 0..held {
            let frame = client.expect_type("assigned").await?;
            assert_eq!(frame["conversation"]["agent"], *name);
            assert!(seen.insert(frame["conversation"]["id"].as_str().unwrap().to_owned()), "assigned twice: {frame}");
            assert_eq!(frame["conversation"]["messages"].as_array().unwrap().len(), 1);
        }
        counts.insert(*name, held);
    }
    assert_eq!(seen.len(), 30, "every conversation assigned exactly once");
    let (min, max) = (counts.values().min().unwrap(), counts.values().max().unwrap());
    assert!(max - min <= 1, "round robin is fair within one: {counts:?}");
    harness.shutdown().await;
    Ok(())
}

/// Starts a harness with agent a1 online holding one conversation from `customer`.
async fn one_assigned(customer: &str) -> anyhow::Result<(Harness, WsClient, String)> {
    let harness = Harness::start().await?;
    let mut agent = harness.online_agent("a1").await?;
    let (status, _) =
        harness.post_webhook(&inbound_text(customer, &format!("wamid.first.{customer}"), "I saw your ad")).await?;
    assert_eq!(status, 200);
    let assigned = agent.expect_type("assigned").await?;
    let conversation_id = assigned["conversation"]["id"].as_str().unwrap().to_owned();
    Ok((harness, agent, conversation_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_reaches_the_graph_api_with_metas_body_and_statuses_come_back() -> TestResult {
    let (harness, mut agent, conversation_id) = one_assigned("919811110000").await?;
    let answer =
        agent.request(json!({"type": "send", "conversation_id": conversation_id, "text": "Hello from Asha"})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    let message = &answer["message"];
    let wamid = message["id"].as_str().unwrap().to_owned();
    assert!(wamid.starts_with("wamid."), "the message id is Meta's wamid: {wamid}");
    assert_eq!(message["direction"], "out");
    assert_eq!(message["free"], true);

    let requests = harness.emulator.requests();
    let sent = requests.last().expect("one send");
    assert_eq!(sent.phone_number_id, PHONE_NUMBER_ID);
    assert_eq!(sent.authorization.as_deref(), Some(format!("Bearer {ACCESS_TOKEN}").as_str()));
    assert_eq!(
        sent.body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "919811110000",
               "type": "text", "text": {"body": "Hello from Asha", "preview_url": false}})
    );

    let echoed = agent.expect_type("message").await?;
    assert_eq!(echoed["message"]["id"], wamid, "the sending session sees its own message");
    for expected in ["sent", "delivered", "read"] {
        let status = agent.expect_where(|frame| frame["type"] == "status").await?;
        assert_eq!(status["message_id"], wamid);
        assert_eq!(status["status"], expected);
        assert_eq!(status["conversation_id"], conversation_id);
    }
    let (_, conversation) =
        harness.get(&format!("/api/v1/conversations/{conversation_id}"), &agent_token("a1")).await?;
    let messages = conversation["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["status"], "read");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_frame_many_times_the_read_buffer_arrives_whole() -> TestResult {
    // Sessions read with a 1 KiB buffer (memory per idle connection); a bigger
    // frame must still arrive intact: 500 × "नमस्ते " is 3,500 characters, 9.5 KB.
    let (harness, mut agent, conversation_id) = one_assigned("919811110001").await?;
    let text = "नमस्ते ".repeat(500);
    let answer = agent.request(json!({"type": "send", "conversation_id": conversation_id, "text": text})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    assert_eq!(answer["message"]["text"], text.as_str());
    let sent = harness.emulator.requests().last().expect("one send").body.clone();
    assert_eq!(sent["text"]["body"], text.as_str());
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_makes_one_message_one_assignment_one_event() -> TestResult {
    let harness = Harness::start().await?;
    let mut agent = harness.online_agent("a1").await?;
    let body = inbound_text("919822220000", "wamid.dup.1", "first");
    for attempt in 0..3 {
        let (status, answer) = harness.post_webhook(&body).await?;
        assert_eq!(status, 200, "attempt {attempt}");
        if attempt > 0 {
            assert_eq!(answer["duplicates"], 1);
        }
    }
    let assigned = agent.expect_type("assigned").await?;
    let conversation_id = assigned["conversation"]["id"].as_str().unwrap().to_owned();
    // A later message from the same customer marks the end of anything the
    // redeliveries could have caused.
    harness.post_webhook(&inbound_text("919822220000", "wamid.dup.2", "second")).await?;
    let marker = agent.expect_type("message").await?;
    assert_eq!(marker["message"]["id"], "wamid.dup.2");
    let extra: Vec<&Value> = agent.buffered().iter().filter(|frame| frame.get("seq").is_some()).collect();
    assert!(extra.is_empty(), "no duplicate events: {extra:?}");
    assert_eq!(assigned["seq"].as_u64().unwrap() + 1, marker["seq"].as_u64().unwrap(), "nothing in between");
    let (_, conversation) = harness.get(&format!("/api/v1/conversations/{conversation_id}"), MANAGER_TOKEN).await?;
    let ids: Vec<&str> =
        conversation["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["wamid.dup.1", "wamid.dup.2"]);
    let (_, all) = harness.get("/api/v1/conversations", MANAGER_TOKEN).await?;
    assert_eq!(all["conversations"].as_array().unwrap().len(), 1);
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_refused_and_nothing_is_stored() -> TestResult {
    let harness = Harness::start().await?;
    let body = serde_json::to_vec(&inbound_text("919833330000", "wamid.sig.1", "hi"))?;
    let wrong = engine::signature::sign(b"not-the-secret", &body);
    for signature in [None, Some(wrong.as_str()), Some("sha256=zz"), Some("md5=abc")] {
        let (status, error) = harness.post_raw(&body, signature).await?;
        assert_eq!(status, 401, "{signature:?}");
        assert_eq!(error["code"], "unauthorized");
    }
    assert!(!harness.system().reader().has_inbound("wamid.sig.1")?);
    let (_, all) = harness.get("/api/v1/conversations", MANAGER_TOKEN).await?;
    assert!(all["conversations"].as_array().unwrap().is_empty());
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_400_and_the_engine_keeps_serving() -> TestResult {
    let harness = Harness::start().await?;
    for body in [
        &b"{not json"[..],
        br#"{"object":"page","entry":[]}"#,
        br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},"messages":[{"id":"w","timestamp":"1","type":"text"}]}}]}]}"#,
    ] {
        let signature = engine::signature::sign(APP_SECRET.as_bytes(), body);
        let (status, error) = harness.post_raw(body, Some(&signature)).await?;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(body));
        assert_eq!(error["code"], "bad_request");
        assert!(error["message"].as_str().unwrap().len() > 10);
    }
    let mut agent = harness.online_agent("a1").await?;
    let (status, _) = harness.post_webhook(&inbound_text("919844440000", "wamid.ok.1", "still there?")).await?;
    assert_eq!(status, 200);
    agent.expect_type("assigned").await?;
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_is_forbidden_on_another_agents_conversation() -> TestResult {
    let (harness, _owner, conversation_id) = one_assigned("919855550000").await?;
    let mut intruder = harness.online_agent("a2").await?;
    let answer =
        intruder.request(json!({"type": "send", "conversation_id": conversation_id, "text": "mine now"})).await?;
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["code"], "forbidden");
    let (status, error) = harness.get(&format!("/api/v1/conversations/{conversation_id}"), &agent_token("a2")).await?;
    assert_eq!(status, 403);
    assert_eq!(error["code"], "forbidden");
    let (_, listed) = harness.get("/api/v1/conversations", &agent_token("a2")).await?;
    assert!(listed["conversations"].as_array().unwrap().is_empty(), "agents list only their own");
    let (status, _) = harness.get(&format!("/api/v1/conversations/{conversation_id}"), MANAGER_TOKEN).await?;
    assert_eq!(status, 200, "managers see everything");
    assert!(harness.emulator.requests().is_empty(), "nothing reached Meta");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_enforces_required_dispositions() -> TestResult {
    let (harness, mut agent, conversation_id) = one_assigned("919866660000").await?;
    let missing = agent.request(json!({"type": "close", "conversation_id": conversation_id})).await?;
    assert_eq!(missing["code"], "disposition_required");
    assert_eq!(missing["missing"], json!(["outcome"]));
    assert_eq!(missing["detail"]["missing"], json!(["outcome"]));
    let invalid = agent
        .request(json!({"type": "close", "conversation_id": conversation_id, "fields": {"outcome": "maybe"}}))
        .await?;
    assert_eq!(invalid["code"], "invalid_field");
    assert_eq!(invalid["detail"]["field"], "outcome");
    let closed = agent
        .request(json!({"type": "close", "conversation_id": conversation_id, "fields": {"outcome": "closed_won"}}))
        .await?;
    assert_eq!(closed["type"], "ok", "{closed}");
    let unassigned = agent.expect_type("unassigned").await?;
    assert_eq!(unassigned["reason"], "closed");
    let (_, conversation) = harness.get(&format!("/api/v1/conversations/{conversation_id}"), MANAGER_TOKEN).await?;
    assert_eq!(conversation["status"], "closed");
    assert_eq!(conversation["fields"]["outcome"], "closed_won");
    // A new message from the customer opens a new conversation, back to the same agent.
    harness.post_webhook(&inbound_text("919866660000", "wamid.again.1", "one more thing")).await?;
    let again = agent.expect_type("assigned").await?;
    assert_ne!(again["conversation"]["id"], conversation_id);
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagepack_sessions_use_binary_frames_with_the_same_fields() -> TestResult {
    let harness = Harness::start().await?;
    let mut client = WsClient::connect(&harness.base_url(), &agent_token("a1"), Protocol::MsgPack, None).await?;
    assert_eq!(client.negotiated.as_deref(), Some("switchboard.v1.msgpack"));
    let welcome = client.expect_type("welcome").await?;
    assert_eq!(welcome["agent_id"], "a1");
    assert_eq!(welcome["status"], "offline");
    client.expect_type("snapshot").await?;
    let answer = client.request(json!({"type": "set_status", "status": "online"})).await?;
    assert_eq!(answer["type"], "ok");
    harness.post_webhook(&inbound_text("919877770000", "wamid.mp.1", "binary please")).await?;
    let assigned = client.expect_type("assigned").await?;
    assert_eq!(assigned["conversation"]["messages"][0]["text"], "binary please");

    let mut plain = WsClient::connect(&harness.base_url(), &agent_token("a2"), Protocol::None, None).await?;
    assert_eq!(plain.negotiated, None, "JSON when no subprotocol is asked for");
    plain.expect_type("welcome").await?;
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_refused_at_the_upgrade() -> TestResult {
    let harness = Harness::start().await?;
    let refused = WsClient::connect(&harness.base_url(), "not-a-token", Protocol::Json, None).await;
    let error = refused.err().expect("refused").to_string();
    assert!(error.contains("401"), "{error}");
    let (status, _) = harness.get("/api/v1/conversations", "not-a-token").await?;
    assert_eq!(status, 401);
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_resume_from_replays_what_was_missed() -> TestResult {
    let (harness, agent, conversation_id) = one_assigned("919888880000").await?;
    agent.close().await;
    // While the agent is away (within its grace period) the customer writes twice.
    harness.post_webhook(&inbound_text("919888880000", "wamid.resume.2", "are you there?")).await?;
    harness.post_webhook(&inbound_text("919888880000", "wamid.resume.3", "hello??")).await?;
    eventually(|| async {
        let (_, body) = harness.get(&format!("/api/v1/conversations/{conversation_id}"), MANAGER_TOKEN).await.ok()?;
        (body["messages"].as_array()?.len() == 3).then_some(())
    })
    .await?;
    let mut back = WsClient::connect(&harness.base_url(), &agent_token("a1"), Protocol::Json, Some(1)).await?;
    let welcome = back.next().await?;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["status"], "online", "a new session starts with the last status");
    let replay_one = back.next().await?;
    let replay_two = back.next().await?;
    assert_eq!(replay_one["type"], "message", "replayed instead of a snapshot: {replay_one}");
    assert_eq!((replay_one["seq"].as_u64(), replay_two["seq"].as_u64()), (Some(2), Some(3)));
    assert_eq!(replay_one["message"]["id"], "wamid.resume.2");
    assert_eq!(replay_two["message"]["id"], "wamid.resume.3");

    // A resume point the server cannot serve (here: a seq it never issued) falls back to a snapshot.
    let mut future = WsClient::connect(&harness.base_url(), &agent_token("a1"), Protocol::Json, Some(999)).await?;
    future.expect_type("welcome").await?;
    let snapshot = future.next().await?;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["seq"], 3);
    assert_eq!(snapshot["conversations"][0]["messages"].as_array().unwrap().len(), 3);
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_131047_failure_reaches_the_agent_as_window_closed() -> TestResult {
    let (harness, mut agent, conversation_id) = one_assigned("919899990000").await?;
    harness.emulator.fail_status_for("919899990000", 131047);
    let answer = agent.request(json!({"type": "send", "conversation_id": conversation_id, "text": "hello?"})).await?;
    assert_eq!(answer["type"], "ok", "Meta accepted the send itself: {answer}");
    let wamid = answer["message"]["id"].clone();
    let failed = agent.expect_where(|frame| frame["type"] == "status" && frame["status"] == "failed").await?;
    assert_eq!(failed["message_id"], wamid);
    assert_eq!(failed["error"]["code"], "window_closed");
    assert_eq!(failed["error"]["detail"]["meta_code"], 131047);
    let (_, conversation) = harness.get(&format!("/api/v1/conversations/{conversation_id}"), MANAGER_TOKEN).await?;
    assert_eq!(conversation["messages"][1]["status"], "failed");
    assert_eq!(conversation["messages"][1]["error"]["code"], "window_closed");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_with_backoff_and_errors_keep_metas_code() -> TestResult {
    let (harness, mut agent, conversation_id) = one_assigned("919800001111").await?;
    let throttled = engine::emulator::Failure { http_status: 429, code: 130429, message: "Rate limit hit".into() };
    harness.emulator.fail_next(throttled, 2);
    let answer =
        agent.request(json!({"type": "send", "conversation_id": conversation_id, "text": "after a wait"})).await?;
    assert_eq!(answer["type"], "ok", "retried past two throttling answers: {answer}");
    assert_eq!(harness.emulator.requests().len(), 3);

    let refused = engine::emulator::Failure { http_status: 400, code: 131026, message: "Message undeliverable".into() };
    harness.emulator.fail_next(refused, 1);
    let answer = agent.request(json!({"type": "send", "conversation_id": conversation_id, "text": "again"})).await?;
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["code"], "upstream_error");
    assert_eq!(answer["detail"]["meta_code"], 131026);
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_131047_is_window_closed_with_metas_code() -> TestResult {
    let (harness, mut agent, conversation_id) = one_assigned("919800002222").await?;
    let refused = engine::emulator::Failure { http_status: 400, code: 131047, message: "Re-engagement message".into() };
    harness.emulator.fail_next(refused, 1);
    let answer = agent.request(json!({"type": "send", "conversation_id": conversation_id, "text": "late"})).await?;
    assert_eq!(answer["code"], "window_closed", "{answer}");
    assert_eq!(answer["detail"]["meta_code"], 131047);
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrations_use_the_same_requests_over_rest() -> TestResult {
    let (harness, _agent, conversation_id) = one_assigned("919800003333").await?;
    let path = |action: &str| format!("/api/v1/conversations/{conversation_id}/{action}");
    let token = agent_token("a1");
    let (status, sent) = harness.post(&path("messages"), &token, &json!({"text": "from the CRM"})).await?;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["message"]["text"], "from the CRM");
    let (status, fields) = harness.post(&path("fields"), &token, &json!({"fields": {"outcome": "follow_up"}})).await?;
    assert_eq!((status, fields["fields"]["outcome"].clone()), (200, json!("follow_up")));
    let (status, error) = harness.post(&path("fields"), &token, &json!({"fields": {"outcome": 7}})).await?;
    assert_eq!((status, error["code"].clone()), (422, json!("invalid_field")));
    let (status, error) = harness.post(&path("dance"), &token, &json!({})).await?;
    assert_eq!((status, error["code"].clone()), (404, json!("not_found")));
    let (status, error) = harness.post(&path("messages"), &agent_token("a2"), &json!({"text": "not mine"})).await?;
    assert_eq!((status, error["code"].clone()), (403, json!("forbidden")));
    let (status, closed) = harness.post(&path("close"), &token, &json!({})).await?;
    assert_eq!(status, 200, "outcome was set earlier: {closed}");
    assert_eq!(closed["conversation"]["status"], "closed");
    harness.shutdown().await;
    Ok(())
}
