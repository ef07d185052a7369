//! The agent pool's admin API (contract §7 `/api/v1/admin/agents`) through
//! the real server: onboarding is one call and a token that works at once;
//! a change of teams moves what the agent is given at once; a rotated
//! token stops at once (its sessions end too); a deactivated agent's
//! sessions end, its token stops, its open conversations go to others
//! (`offline`), its contacts pass to the successor, its history stays;
//! who may do what; refusals name the field; every change is audited and
//! survives a restart; conversations held by an agent no longer in the
//! pool at start are routed again.

use anyhow::{Result, ensure};
use engine::server::StartOptions;
use reqwest::Method;
use serde_json::{Value, json};
use switchboard_tests::{Harness, MANAGER_TOKEN, WsClient, eventually, message_webhook, text_message};

const LINE: &str = "111000000000001";
const ADMIN_TOKEN: &str = "root-token-xyz";
const S1_TOKEN: &str = "s1-token-xyz";
const AGENTS: &str = "/api/v1/admin/agents";

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
token = "{S1_TOKEN}"
teams = ["sales"]
capacity = 10

[[agents]]
id = "s2"
token = "s2-token-xyz"
teams = ["sales"]
capacity = 10

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

async fn start() -> Result<Harness> {
    Harness::start_on("admin agents test", &config()).await
}

/// Asserts the contract's error shape, its code and the field it names.
fn refused(answer: &(u16, Value), status: u16, code: &str, field: Option<&str>) {
    let (got, body) = answer;
    assert_eq!((*got, body["code"].as_str()), (status, Some(code)), "{body}");
    assert!(!body["message"].as_str().unwrap_or_default().is_empty(), "a sentence: {body}");
    if let Some(field) = field {
        assert_eq!(body["detail"]["field"], json!(field), "{body}");
    }
}

/// Connects with `token` and sets the agent online.
async fn online(harness: &Harness, token: &str) -> Result<WsClient> {
    let mut client = harness.connect(token).await?;
    client.expect_type("welcome").await?;
    client.expect_type("snapshot").await?;
    let answer = client.request(json!({"type": "set_status", "status": "online"})).await?;
    ensure!(answer["type"] == "ok", "set_status: {answer}");
    Ok(client)
}

async fn customer_writes(harness: &Harness, from: &str, wamid: &str, body: &str) -> Result<()> {
    let (status, answer) = harness.post_webhook(&message_webhook(LINE, from, wamid, text_message(body))).await?;
    ensure!(status == 200, "webhook answered {status}: {answer}");
    Ok(())
}

async fn agents(harness: &Harness) -> Result<Vec<Value>> {
    let (status, body) = harness.get(AGENTS, ADMIN_TOKEN).await?;
    ensure!(status == 200, "GET answered {status}: {body}");
    Ok(body["agents"].as_array().cloned().unwrap_or_default())
}

async fn agent(harness: &Harness, id: &str) -> Result<Value> {
    let found = agents(harness).await?.into_iter().find(|agent| agent["id"] == id);
    found.ok_or_else(|| anyhow::anyhow!("no agent {id} in the list"))
}

/// The session was ended by the server because its token was revoked.
async fn ended_for_revoked_token(client: &mut WsClient) {
    let error = client.expect_type("never-sent").await.expect_err("the session ends");
    assert!(error.to_string().contains("token revoked"), "{error:#}");
}

async fn audit(harness: &Harness, query: &str) -> Result<Vec<Value>> {
    let response = harness
        .http
        .get(format!("{}/api/v1/audit?{query}", harness.base_url()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    ensure!(response.status() == 200, "audit answered {}", response.status());
    Ok(response.text().await?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?)
}

/// The agent pool's `configuration_changed` entries: (action, agent).
async fn pool_changes(harness: &Harness) -> Result<Vec<(String, String)>> {
    Ok(audit(harness, "agent=root")
        .await?
        .into_iter()
        .filter(|entry| entry["action"] == "configuration_changed" && entry["data"]["section"] == "agents")
        .map(|entry| {
            let detail = &entry["data"]["detail"];
            assert_eq!(entry["actor"], "user:root", "{entry}");
            (
                detail["action"].as_str().unwrap_or_default().to_owned(),
                detail["agent"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_is_onboarded_moved_and_given_a_new_token_at_run_time_audited_and_kept() -> Result<()> {
    let mut harness = start().await?;

    // Who may read and change the pool.
    let (status, listed) = harness.get(AGENTS, MANAGER_TOKEN).await?;
    assert_eq!(status, 200, "a manager reads it: {listed}");
    let ids: Vec<&str> = listed["agents"].as_array().unwrap().iter().filter_map(|agent| agent["id"].as_str()).collect();
    assert_eq!(ids, ["s1", "s2", "boss", "root"], "the file's agents, in order");
    assert_eq!(listed["agents"][0]["active"], true);
    assert!(!listed.to_string().contains("token"), "no token or digest is ever shown: {listed}");
    refused(&harness.get(AGENTS, S1_TOKEN).await?, 403, "forbidden", None);
    refused(&harness.get(AGENTS, "nobody's-token").await?, 401, "unauthorized", None);
    let meena = json!({"id": "meena", "name": "Meena", "teams": ["sales"], "capacity": 2, "city": "Pune"});
    refused(&harness.post(AGENTS, MANAGER_TOKEN, &meena).await?, 403, "forbidden", None);
    refused(&harness.post(AGENTS, S1_TOKEN, &meena).await?, 403, "forbidden", None);

    // What a new agent may not be, each named by its field; nothing changes.
    for (body, field) in [
        (json!({"id": "s1", "teams": ["sales"]}), "id"),
        (json!({"id": "x y"}), "id"),
        (json!({"id": "x", "teams": ["nowhere"]}), "teams"),
        (json!({"id": "x", "colour": "red"}), "colour"),
        (json!({"id": "x", "capacity": -1}), "capacity"),
        (json!({"id": "x", "shift": {"timezone": "Mars/Olympus", "week": {}}}), "shift"),
    ] {
        refused(&harness.post(AGENTS, ADMIN_TOKEN, &body).await?, 422, "invalid_field", Some(field));
    }
    refused(&harness.call(Method::POST, AGENTS, ADMIN_TOKEN, None).await?, 400, "bad_request", None);
    assert_eq!(agents(&harness).await?.len(), 4, "nothing was added");

    // Onboarding: one call, a token that works at once.
    let (status, created) = harness.post(AGENTS, ADMIN_TOKEN, &meena).await?;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().expect("the token, shown once").to_owned();
    assert!(token.starts_with("sb_") && token.len() == 67, "{token}");
    assert_eq!(
        created["agent"],
        json!({"id": "meena", "name": "Meena", "role": "agent", "teams": ["sales"], "capacity": 2,
               "city": "Pune", "manages": [], "active": true, "copilot": false})
    );
    assert!(!agent(&harness, "meena").await?.to_string().contains(&token), "the list never shows it");
    let mut meena_ws = online(&harness, &token).await?;

    // A refund waits in support, where nobody is; a sales lead goes to her at once.
    customer_writes(&harness, "919800000001", "wamid.refund", "I want a refund").await?;
    customer_writes(&harness, "919800000002", "wamid.lead", "hello, price?").await?;
    let lead = meena_ws.expect_type("assigned").await?;
    assert_eq!(
        (lead["conversation"]["team"].as_str(), lead["conversation"]["contact"]["wa_id"].as_str()),
        (Some("sales"), Some("919800000002"))
    );

    // She joins support: the waiting refund is hers at once.
    let moved = json!({"teams": ["sales", "support"]});
    refused(
        &harness.call(Method::PATCH, &format!("{AGENTS}/nobody"), ADMIN_TOKEN, Some(&moved)).await?,
        404,
        "not_found",
        None,
    );
    refused(
        &harness.call(Method::PATCH, &format!("{AGENTS}/meena"), MANAGER_TOKEN, Some(&moved)).await?,
        403,
        "forbidden",
        None,
    );
    let bad = json!({"teams": ["nowhere"]});
    refused(
        &harness.call(Method::PATCH, &format!("{AGENTS}/meena"), ADMIN_TOKEN, Some(&bad)).await?,
        422,
        "invalid_field",
        Some("teams"),
    );
    let (status, changed) = harness.call(Method::PATCH, &format!("{AGENTS}/meena"), ADMIN_TOKEN, Some(&moved)).await?;
    assert_eq!((status, &changed["agent"]["teams"]), (200, &json!(["sales", "support"])), "{changed}");
    let refund = meena_ws.expect_type("assigned").await?;
    assert_eq!(
        (refund["conversation"]["team"].as_str(), refund["conversation"]["contact"]["wa_id"].as_str()),
        (Some("support"), Some("919800000001"))
    );

    // A new token: the old one stops at once, and so does the session opened with it.
    let rotate = json!({"rotate_token": true});
    let (status, rotated) = harness.call(Method::PATCH, &format!("{AGENTS}/meena"), ADMIN_TOKEN, Some(&rotate)).await?;
    assert_eq!(status, 200, "{rotated}");
    let new_token = rotated["token"].as_str().expect("the new token").to_owned();
    assert_ne!(new_token, token);
    ended_for_revoked_token(&mut meena_ws).await;
    refused(&harness.get("/api/v1/conversations", &token).await?, 401, "unauthorized", None);
    assert!(harness.connect(&token).await.is_err(), "no session with the old token");
    let (status, mine) = harness.get("/api/v1/conversations", &new_token).await?;
    assert_eq!((status, mine["conversations"].as_array().map(Vec::len)), (200, Some(2)), "{mine}");

    // Audited as the admin's, without a token in sight.
    let changes = pool_changes(&harness).await?;
    let expected = [("added", "meena"), ("changed", "meena"), ("token_rotated", "meena")];
    assert_eq!(changes, expected.map(|(action, agent)| (action.to_owned(), agent.to_owned())));
    let trail = audit(&harness, "agent=root").await?;
    let trail = serde_json::to_string(&trail)?;
    assert!(!trail.contains(&token) && !trail.contains(&new_token), "no token in the audit trail");

    // A new role: REST at once, and the session opened with the old one ends.
    let mut s2 = harness.online_agent("s2").await?;
    refused(&harness.get(AGENTS, "s2-token-xyz").await?, 403, "forbidden", None);
    let promote = json!({"role": "manager"});
    let (status, _) = harness.call(Method::PATCH, &format!("{AGENTS}/s2"), ADMIN_TOKEN, Some(&promote)).await?;
    assert_eq!(status, 200);
    let error = s2.expect_type("never-sent").await.expect_err("the session ends");
    assert!(error.to_string().contains("role changed"), "{error:#}");
    assert_eq!(harness.get(AGENTS, "s2-token-xyz").await?.0, 200, "a manager now");
    assert_eq!(agent(&harness, "s2").await?["capacity"], 10, "its capacity setting is kept");

    // A restart keeps all of it: the file's agents are only the initial set.
    harness.restart(StartOptions::default()).await?;
    let meena = agent(&harness, "meena").await?;
    assert_eq!(
        (&meena["teams"], &meena["city"], &meena["active"]),
        (&json!(["sales", "support"]), &json!("Pune"), &json!(true))
    );
    refused(&harness.get("/api/v1/conversations", &token).await?, 401, "unauthorized", None);
    let mut meena_ws = harness.connect(&new_token).await?;
    meena_ws.expect_type("welcome").await?;
    let snapshot = meena_ws.expect_type("snapshot").await?;
    assert_eq!(snapshot["conversations"].as_array().map(Vec::len), Some(2), "she still holds both");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_agent_loses_access_at_once_and_its_conversations_and_contacts_go_on_without_it() -> Result<()> {
    let mut harness = start().await?;
    let mut s1 = harness.online_agent("s1").await?;
    let mut held = Vec::new();
    for (index, customer) in ["919700000001", "919700000002"].into_iter().enumerate() {
        customer_writes(&harness, customer, &format!("wamid.s1.{index}"), "hi").await?;
        let frame = s1.expect_type("assigned").await?;
        held.push(frame["conversation"]["id"].as_str().unwrap().to_owned());
    }
    // Contacts s1 owns (one without a conversation), and one s2 owns.
    for (customer, owner) in [("919700000001", "s1"), ("919700000009", "s1"), ("919700000008", "s2")] {
        let path = format!("/api/v1/contacts/{customer}");
        let (status, body) = harness.call(Method::PATCH, &path, MANAGER_TOKEN, Some(&json!({"owner": owner}))).await?;
        ensure!(status == 200, "PATCH contact: {status} {body}");
    }
    let mut s2 = harness.online_agent("s2").await?;

    // Refusals first; each changes nothing.
    let s1_path = format!("{AGENTS}/s1");
    let heir = json!({"successor": "s2"});
    refused(&harness.call(Method::DELETE, &s1_path, MANAGER_TOKEN, Some(&heir)).await?, 403, "forbidden", None);
    let nobody = json!({"successor": "nobody"});
    refused(
        &harness.call(Method::DELETE, &s1_path, ADMIN_TOKEN, Some(&nobody)).await?,
        422,
        "invalid_field",
        Some("successor"),
    );
    refused(
        &harness.call(Method::DELETE, &format!("{AGENTS}/root"), ADMIN_TOKEN, None).await?,
        400,
        "bad_request",
        None,
    );
    refused(
        &harness.call(Method::DELETE, &format!("{AGENTS}/nobody"), ADMIN_TOKEN, None).await?,
        404,
        "not_found",
        None,
    );
    assert_eq!(agent(&harness, "s1").await?["active"], true);

    // Deactivated: at once, everything.
    let (status, gone) = harness.call(Method::DELETE, &s1_path, ADMIN_TOKEN, Some(&heir)).await?;
    assert_eq!(status, 200, "{gone}");
    assert_eq!(
        (&gone["agent"]["active"], &gone["rerouted"], &gone["contacts"]),
        (&json!(false), &json!(2), &json!(2)),
        "{gone}"
    );
    ended_for_revoked_token(&mut s1).await;
    refused(&harness.get("/api/v1/conversations", S1_TOKEN).await?, 401, "unauthorized", None);
    assert!(harness.connect(S1_TOKEN).await.is_err(), "no new session");
    let mut rerouted = Vec::new();
    for _ in 0..2 {
        let frame = s2.expect_type("assigned").await?;
        assert_eq!(frame["route"]["reason"], "offline", "{frame}");
        rerouted.push(frame["conversation"]["id"].as_str().unwrap().to_owned());
    }
    rerouted.sort();
    held.sort();
    assert_eq!(rerouted, held, "its open conversations went to the one agent left");
    for (customer, owner) in [("919700000001", "s2"), ("919700000009", "s2"), ("919700000008", "s2")] {
        let (_, contact) = harness.get(&format!("/api/v1/contacts/{customer}"), MANAGER_TOKEN).await?;
        assert_eq!(contact["owner"], owner, "{contact}");
    }
    let listed = agent(&harness, "s1").await?;
    assert_eq!(
        (&listed["active"], &listed["deactivated"]["by"], &listed["deactivated"]["successor"]),
        (&json!(false), &json!("root"), &json!("s2"))
    );
    refused(&harness.call(Method::DELETE, &s1_path, ADMIN_TOKEN, None).await?, 404, "not_found", None);
    refused(
        &harness.call(Method::PATCH, &s1_path, ADMIN_TOKEN, Some(&json!({"capacity": 3}))).await?,
        404,
        "not_found",
        None,
    );
    let owner_s1 = json!({"owner": "s1"});
    let patch = harness.call(Method::PATCH, "/api/v1/contacts/919700000001", MANAGER_TOKEN, Some(&owner_s1)).await?;
    refused(&patch, 422, "invalid_field", Some("owner"));

    // History stays: the audit trail still answers for s1, and records who did what.
    let history = audit(&harness, "agent=s1").await?;
    assert!(history.iter().any(|entry| entry["action"] == "assigned"), "s1's assignments are kept");
    assert!(history.iter().any(|entry| entry["action"] == "unassigned" && entry["data"]["reason"] == "agent_offline"));
    assert_eq!(pool_changes(&harness).await?, [("deactivated".to_owned(), "s1".to_owned())]);
    let handed: Vec<Value> = audit(&harness, "contact=919700000009")
        .await?
        .into_iter()
        .filter(|entry| entry["action"] == "contact_updated" && entry["actor"] == "user:root")
        .collect();
    assert_eq!(handed.len(), 1, "the hand-over is the admin's: {handed:?}");

    // Still gone after a restart, though the file has it.
    s2.close().await;
    harness.restart(StartOptions::default()).await?;
    assert_eq!(agent(&harness, "s1").await?["active"], false);
    refused(&harness.get("/api/v1/conversations", S1_TOKEN).await?, 401, "unauthorized", None);

    // Back, with a new token: it is given work again.
    let (status, back) =
        harness.post(AGENTS, ADMIN_TOKEN, &json!({"id": "s1", "teams": ["sales"], "capacity": 5})).await?;
    assert_eq!((status, &back["agent"]["active"]), (201, &json!(true)), "{back}");
    let mut s1 = online(&harness, back["token"].as_str().unwrap()).await?;
    customer_writes(&harness, "919700000003", "wamid.back", "hi again").await?;
    let frame = s1.expect_type("assigned").await?;
    assert_eq!(frame["conversation"]["contact"]["wa_id"], "919700000003", "the only agent online");
    let (_, verified) = harness.get("/api/v1/audit/verify", ADMIN_TOKEN).await?;
    assert_eq!(verified["ok"], true, "{verified}");
    harness.shutdown().await;
    Ok(())
}

/// An agent removed from the configuration file while it held
/// conversations: at the next start they are routed again, not stranded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_of_an_agent_gone_from_the_pool_at_start_are_routed_again() -> Result<()> {
    let mut harness = start().await?;
    let mut s1 = harness.online_agent("s1").await?;
    customer_writes(&harness, "919600000001", "wamid.stranded", "hi").await?;
    let id = s1.expect_type("assigned").await?["conversation"]["id"].as_str().unwrap().to_owned();
    s1.close().await;

    let server = harness.server.take().expect("running");
    let mut config = server.state.config.clone();
    server.shutdown().await;
    config.server.listen = "127.0.0.1:0".to_owned();
    config.agents.retain(|agent| agent.id != "s1");
    let server = engine::server::start(config, StartOptions::default()).await?;
    harness.emulator.set_webhook_url(Some(sim::webhook::webhook_url(&server.base_url())));
    harness.server = Some(server);

    let mut s2 = harness.online_agent("s2").await?;
    let frame = s2.expect_type("assigned").await?;
    assert_eq!(
        (frame["conversation"]["id"].as_str(), frame["route"]["reason"].as_str()),
        (Some(id.as_str()), Some("offline"))
    );
    let conversation = eventually(|| async {
        let (_, body) = harness.get(&format!("/api/v1/conversations/{id}"), MANAGER_TOKEN).await.ok()?;
        (body["agent"] == "s2").then_some(body)
    })
    .await?;
    assert_eq!(conversation["status"], "assigned");
    harness.shutdown().await;
    Ok(())
}
