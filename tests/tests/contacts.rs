//! Contacts (PROTOCOL §8) from outside, as a CRM integration, a manager, an
//! agent and a customer meet them: a customer writes, a manager sets the
//! contact's city, dealer, owner and attributes, who may read and change it,
//! the refusals' shapes, the opt-out word (and that replies still go out),
//! the audit trail's `contact_updated` entries, and a restart.

use engine::server::StartOptions;
use serde_json::{Value, json};
use switchboard_tests::*;

type TestResult = anyhow::Result<()>;

const CUSTOMER: &str = "919811112222";

async fn patch(harness: &Harness, wa_id: &str, token: &str, body: &str) -> anyhow::Result<(u16, Value)> {
    let response = harness
        .http
        .patch(format!("{}/api/v1/contacts/{wa_id}", harness.base_url()))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn contact(harness: &Harness, wa_id: &str, token: &str) -> anyhow::Result<(u16, Value)> {
    harness.get(&format!("/api/v1/contacts/{wa_id}"), token).await
}

/// Asserts the contract's error shape: `{code, message}`, the code, and
/// the field an `invalid_field` names.
fn assert_error(answer: &(u16, Value), status: u16, code: &str, field: Option<&str>) {
    let (got_status, body) = answer;
    assert_eq!((*got_status, body["code"].as_str()), (status, Some(code)), "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "a sentence a person can act on: {body}");
    if let Some(field) = field {
        assert_eq!(body["detail"]["field"], json!(field), "{body}");
    }
}

/// The customer's conversation once it is assigned.
async fn assigned_conversation(harness: &Harness) -> anyhow::Result<Value> {
    eventually(|| async {
        let (_, body) = harness.get(&format!("/api/v1/conversations?contact={CUSTOMER}"), MANAGER_TOKEN).await.ok()?;
        let conversation = body["conversations"].as_array()?.first()?.clone();
        (conversation["status"] == "assigned").then_some(conversation)
    })
    .await
}

async fn audit_actions(harness: &Harness) -> anyhow::Result<Vec<Value>> {
    let response = harness
        .http
        .get(format!("{}/api/v1/audit?contact={CUSTOMER}", harness.base_url()))
        .bearer_auth(MANAGER_TOKEN)
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["action"] == "contact_updated")
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_is_set_read_opted_out_and_audited_and_survives_a_restart() -> TestResult {
    let mut harness = Harness::start().await?;
    let mut agent = harness.online_agent("a1").await?;
    let (status, _) =
        harness.post_webhook(&inbound_text(CUSTOMER, "wamid.contact.1", "Is the red one in stock?")).await?;
    assert_eq!(status, 200);
    let conversation = assigned_conversation(&harness).await?;
    let id = conversation["id"].as_str().unwrap().to_owned();
    assert_eq!(conversation["agent"], "a1", "the only agent online");

    // Nothing set yet: the profile name, defaults, the conversation.
    let answer = contact(&harness, CUSTOMER, MANAGER_TOKEN).await?;
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(
        answer.1,
        json!({"wa_id": CUSTOMER, "name": "Customer", "attributes": {}, "opted_out": false, "conversations": [id]})
    );
    assert_error(&contact(&harness, "910000000000", MANAGER_TOKEN).await?, 404, "not_found", None);
    assert_error(&contact(&harness, CUSTOMER, "not-a-token").await?, 401, "unauthorized", None);

    // Refusals: who, which field, what shape.
    let body = r#"{"city": "Pune"}"#;
    assert_error(&patch(&harness, CUSTOMER, &agent_token("a1"), body).await?, 403, "forbidden", None);
    let unknown_owner = patch(&harness, CUSTOMER, MANAGER_TOKEN, r#"{"owner": "nobody"}"#).await?;
    assert_error(&unknown_owner, 422, "invalid_field", Some("owner"));
    assert!(unknown_owner.1["message"].as_str().unwrap().contains("nobody"), "{}", unknown_owner.1);
    let unknown_key = patch(&harness, CUSTOMER, MANAGER_TOKEN, r#"{"colour": "red"}"#).await?;
    assert_error(&unknown_key, 422, "invalid_field", Some("colour"));
    assert!(unknown_key.1["message"].as_str().unwrap().contains("city"), "lists what may be set: {}", unknown_key.1);
    let nested = r#"{"attributes": {"tags": ["a", "b"]}}"#;
    assert_error(
        &patch(&harness, CUSTOMER, MANAGER_TOKEN, nested).await?,
        422,
        "invalid_field",
        Some("attributes.tags"),
    );
    assert_error(&patch(&harness, CUSTOMER, MANAGER_TOKEN, "{not json").await?, 400, "bad_request", None);
    assert_error(&patch(&harness, CUSTOMER, MANAGER_TOKEN, "{}").await?, 400, "bad_request", None);
    assert_eq!(contact(&harness, CUSTOMER, MANAGER_TOKEN).await?.1["attributes"], json!({}), "refusals change nothing");

    // A manager sets city, dealer, owner and attributes.
    let body =
        r#"{"city": "Pune", "dealer": "D042", "owner": "a1", "attributes": {"tier": "gold", "score": 3, "vip": true}}"#;
    let (status, patched) = patch(&harness, CUSTOMER, MANAGER_TOKEN, body).await?;
    assert_eq!(status, 200, "{patched}");
    let expected = json!({
        "wa_id": CUSTOMER, "name": "Customer", "city": "Pune", "dealer": "D042", "owner": "a1",
        "attributes": {"tier": "gold", "score": 3, "vip": true}, "opted_out": false, "conversations": [id],
    });
    assert_eq!(patched, expected, "the answer is the contact as GET shows it");
    assert_eq!(contact(&harness, CUSTOMER, MANAGER_TOKEN).await?, (200, expected.clone()));

    // The agent holding its conversation reads it; another agent does not.
    assert_eq!(contact(&harness, CUSTOMER, &agent_token("a1")).await?, (200, expected));
    assert_error(&contact(&harness, CUSTOMER, &agent_token("a2")).await?, 403, "forbidden", None);

    // The conversation shows the contact's record on its contact.
    let (status, shown) = harness.get(&format!("/api/v1/conversations/{id}"), MANAGER_TOKEN).await?;
    assert_eq!(status, 200);
    assert_eq!(shown["contact"]["city"], "Pune");
    assert_eq!(shown["contact"]["owner"], "a1");
    assert_eq!(shown["contact"]["attributes"]["tier"], "gold");
    assert_eq!(shown["contact"]["opted_out"], false);
    assert_eq!(shown["contact"]["name"], "Customer");

    // null clears; attributes merge key by key.
    let body = r#"{"owner": null, "region": "West", "attributes": {"score": null, "visits": 2}}"#;
    let (status, patched) = patch(&harness, CUSTOMER, MANAGER_TOKEN, body).await?;
    assert_eq!(status, 200, "{patched}");
    assert!(patched.get("owner").is_none(), "owner cleared: {patched}");
    assert_eq!(patched["region"], "West");
    assert_eq!(patched["attributes"], json!({"tier": "gold", "vip": true, "visits": 2}));

    // The customer opts out; a reply inside the window still goes out.
    let (status, _) = harness.post_webhook(&inbound_text(CUSTOMER, "wamid.contact.2", " stop ")).await?;
    assert_eq!(status, 200);
    eventually(|| async {
        let (_, body) = contact(&harness, CUSTOMER, MANAGER_TOKEN).await.ok()?;
        (body["opted_out"] == true).then_some(())
    })
    .await?;
    let reply = "Understood, no more offers. Your order ships today.";
    let answer = agent.request(json!({"type": "send", "conversation_id": id, "text": reply})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    let sent = harness
        .emulator
        .requests()
        .into_iter()
        .any(|request| request.body["to"] == CUSTOMER && request.body["text"]["body"] == reply);
    assert!(sent, "the emulator recorded the reply to the opted-out customer");
    let (_, after_stop) = contact(&harness, CUSTOMER, MANAGER_TOKEN).await?;
    assert_eq!(after_stop["city"], "Pune", "an opt-out keeps the rest of the record");

    let (status, _) = harness.post_webhook(&inbound_text(CUSTOMER, "wamid.contact.3", "START")).await?;
    assert_eq!(status, 200);
    eventually(|| async {
        let (_, body) = contact(&harness, CUSTOMER, MANAGER_TOKEN).await.ok()?;
        (body["opted_out"] == false).then_some(())
    })
    .await?;

    // Every change is in the audit trail under the contact.
    let entries = audit_actions(&harness).await?;
    let actors: Vec<&str> = entries.iter().filter_map(|entry| entry["actor"].as_str()).collect();
    assert_eq!(actors, ["user:boss", "user:boss", "customer", "customer"], "{entries:?}");
    assert_eq!(entries[0]["conversation_id"], Value::Null, "a PATCH is in no conversation");
    assert!(
        entries[0]["data"]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|change| change == &json!({"key": "city", "old": null, "new": "Pune"})),
        "{}",
        entries[0]
    );
    assert_eq!(
        entries[1]["data"]["changes"],
        json!([
            {"key": "region", "old": null, "new": "West"},
            {"key": "owner", "old": "a1", "new": null},
            {"key": "attributes.score", "old": 3, "new": null},
            {"key": "attributes.visits", "old": null, "new": 2},
        ]),
        "fields in a fixed order, then attributes by key"
    );
    assert_eq!(entries[2]["conversation_id"], json!(id), "the opt-out happened in the conversation");
    assert_eq!(entries[2]["data"]["changes"], json!([{"key": "opted_out", "old": false, "new": true}]));
    assert_eq!(entries[3]["data"]["changes"], json!([{"key": "opted_out", "old": true, "new": false}]));

    // A restart keeps it all.
    drop(agent);
    let before_restart = contact(&harness, CUSTOMER, MANAGER_TOKEN).await?;
    harness.restart(StartOptions::default()).await?;
    assert_eq!(contact(&harness, CUSTOMER, MANAGER_TOKEN).await?, before_restart);
    assert_eq!(before_restart.1["region"], "West");
    harness.shutdown().await;
    Ok(())
}

/// Concurrent PATCHes of one contact are applied one after the other: none
/// is lost. A contact nobody has heard from yet can be set up ahead (a CRM
/// seeding owners): it exists from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_of_one_contact_lose_nothing() -> TestResult {
    let harness = Harness::start().await?;
    let patches = (0..20).map(|index| {
        let body = json!({ "attributes": { format!("k{index}"): index } }).to_string();
        let harness = &harness;
        async move { patch(harness, CUSTOMER, MANAGER_TOKEN, &body).await }
    });
    for answer in futures_util::future::join_all(patches).await {
        let (status, body) = answer?;
        assert_eq!(status, 200, "{body}");
    }
    let (status, shown) = contact(&harness, CUSTOMER, MANAGER_TOKEN).await?;
    assert_eq!(status, 200, "{shown}");
    let attributes = shown["attributes"].as_object().unwrap();
    assert_eq!(attributes.len(), 20, "{shown}");
    assert!((0..20).all(|index| attributes[&format!("k{index}")] == json!(index)));
    assert_eq!(shown["conversations"], json!([]), "no conversation yet");
    assert_eq!(shown["name"], Value::Null);
    assert_eq!(audit_actions(&harness).await?.len(), 20, "one entry per change");
    harness.shutdown().await;
    Ok(())
}
