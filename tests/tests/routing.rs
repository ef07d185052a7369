//! Routing rules (contract §7) through the real server: each rule kind
//! routes a customer's first message to its team or agent, the `assigned`
//! frame carries the `Route` that explains it, the event log and the audit
//! trail record it, a second number has its own default team and replies go
//! out from the conversation's own number, and a returning customer goes back
//! to the agent who closed their last conversation.

use anyhow::{Result, anyhow};
use engine::config::Config;
use serde_json::{Value, json};
use switchboard_tests::{Harness, MANAGER_TOKEN, WsClient, assigned_after, config_head, message_webhook, text_message};

const SALES_LINE: &str = "111000000000001";
const SUPPORT_LINE: &str = "222000000000002";

/// Teams, agents, numbers and rules after the harness's `config_head`.
fn routing_config() -> String {
    format!(
        r#"
[[numbers]]
phone_number_id = "{SALES_LINE}"
name = "Sales line"
default_team = "sales"

[[numbers]]
phone_number_id = "{SUPPORT_LINE}"
name = "Support line"
default_team = "support"

[[teams]]
id = "sales"

[[teams]]
id = "support"

[[teams]]
id = "pune"
cities = ["Pune", "Pimpri Chinchwad"]

[[teams]]
id = "mumbai"
cities = ["Mumbai"]
dealer = "D042"

[[agents]]
id = "s1"
token = "s1-token-xyz"
teams = ["sales"]

[[agents]]
id = "vip"
token = "vip-token-xyz"
teams = ["sales"]

[[agents]]
id = "p1"
token = "p1-token-xyz"
teams = ["support"]

[[agents]]
id = "pu1"
token = "pu1-token-xyz"
teams = ["pune"]

[[agents]]
id = "mu1"
token = "mu1-token-xyz"
teams = ["mumbai"]

[[agents]]
id = "boss"
role = "manager"
token = "{MANAGER_TOKEN}"

[[dispositions]]
key = "outcome"
kind = "enum"
options = ["closed_won", "follow_up"]
required_on_close = true
won_values = ["closed_won"]

[[routing.rules]]
id = "menu_support"
interactive_ids = ["menu_support"]
to_team = "support"

[[routing.rules]]
id = "refunds"
text_any = ["refund", "money back"]
to_team = "support"

[[routing.rules]]
id = "orders"
text_regex = "(?i)order\\s*#?\\d{{5}}"
to_team = "support"

[[routing.rules]]
id = "diwali"
referral_codes = ["DIWALI"]
to_agent = "vip"

[[routing.rules]]
id = "pune_ad"
source = "paid"
source_ids = ["120000000000001"]
to_team = "pune"

[[routing.rules]]
id = "by_city"
number = "{SALES_LINE}"
city_in_text = true
to_city_team = true

[[routing.rules]]
id = "dealers"
to_dealer_team = true

[[routing.rules]]
id = "gold"
contact = {{ tier = "gold" }}
to_team = "pune"
owner_first = false
"#
    )
}

async fn start() -> Result<Harness> {
    Harness::start_on("routing test", &routing_config()).await
}

async fn online(harness: &Harness, agent: &str) -> Result<WsClient> {
    harness.online_agent(agent).await
}

fn text(body: &str) -> Value {
    text_message(body)
}

/// Posts the message and waits for the `assigned` frame on `agent`'s session;
/// returns its conversation and route.
async fn routed_to(harness: &Harness, agent: &mut WsClient, webhook: Value) -> Result<(Value, Value)> {
    assigned_after(harness, agent, &webhook).await
}

#[tokio::test]
async fn each_rule_kind_routes_through_the_real_server_with_its_route() -> Result<()> {
    let harness = start().await?;
    let mut s1 = online(&harness, "s1").await?;
    let mut vip = online(&harness, "vip").await?;
    let mut p1 = online(&harness, "p1").await?;
    let mut pu1 = online(&harness, "pu1").await?;
    let mut mu1 = online(&harness, "mu1").await?;
    let rule = |id: &str| json!({"reason": "rule", "rule": id});

    // No rule matches: the number's default team.
    let (conversation, route) =
        routed_to(&harness, &mut s1, message_webhook(SALES_LINE, "919800000001", "wamid.r1", text("hello"))).await?;
    assert_eq!((conversation["team"].as_str(), route), (Some("sales"), json!({"reason": "default"})));
    // Words, whole and case-insensitive; a phrase.
    let (conversation, route) = routed_to(
        &harness,
        &mut p1,
        message_webhook(SALES_LINE, "919800000002", "wamid.r2", text("I want a REFUND now")),
    )
    .await?;
    assert_eq!((conversation["team"].as_str(), route), (Some("support"), rule("refunds")));
    let (_, route) = routed_to(
        &harness,
        &mut p1,
        message_webhook(SALES_LINE, "919800000003", "wamid.r3", text("my money back please")),
    )
    .await?;
    assert_eq!(route, rule("refunds"));
    // A regular expression.
    let (_, route) = routed_to(
        &harness,
        &mut p1,
        message_webhook(SALES_LINE, "919800000004", "wamid.r4", text("where is order #12345?")),
    )
    .await?;
    assert_eq!(route, rule("orders"));
    // An interactive reply id.
    let menu = json!({"type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": "menu_support", "title": "Support"}}});
    let (_, route) =
        routed_to(&harness, &mut p1, message_webhook(SALES_LINE, "919800000005", "wamid.r5", menu)).await?;
    assert_eq!(route, rule("menu_support"));
    // A referral code, to an agent.
    let (conversation, route) =
        routed_to(&harness, &mut vip, message_webhook(SALES_LINE, "919800000006", "wamid.r6", text("hi ref:DIWALI")))
            .await?;
    assert_eq!(
        (conversation["agent"].as_str(), conversation["source"]["kind"].as_str(), route),
        (Some("vip"), Some("referral"), rule("diwali"))
    );
    // A click-to-WhatsApp ad, by its id.
    let mut ad = text("Is this still available?");
    ad["referral"] = json!({"source_url": "https://fb.me/x", "source_type": "ad", "source_id": "120000000000001", "headline": "Pune sale", "ctwa_clid": "clid-1"});
    let (conversation, route) =
        routed_to(&harness, &mut pu1, message_webhook(SALES_LINE, "919800000007", "wamid.r7", ad)).await?;
    assert_eq!((conversation["team"].as_str(), route), (Some("pune"), rule("pune_ad")));
    // A city named in the text, on this number only.
    let (conversation, route) = routed_to(
        &harness,
        &mut mu1,
        message_webhook(SALES_LINE, "919800000008", "wamid.r8", text("Do you have a showroom in mumbai?")),
    )
    .await?;
    assert_eq!((conversation["team"].as_str(), route), (Some("mumbai"), rule("by_city")));
    // The second number: its own default team, and the reply goes out from it.
    let (conversation, route) = routed_to(
        &harness,
        &mut p1,
        message_webhook(SUPPORT_LINE, "919800000009", "wamid.r9", text("Do you have a showroom in Mumbai?")),
    )
    .await?;
    assert_eq!(
        (conversation["team"].as_str(), conversation["phone_number_id"].as_str(), route),
        (Some("support"), Some(SUPPORT_LINE), json!({"reason": "default"}))
    );
    let id = conversation["id"].as_str().ok_or_else(|| anyhow!("no id"))?;
    let answer = p1.request(json!({"type": "send", "conversation_id": id, "text": "Yes, in Bandra"})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    let sent = harness.emulator.requests();
    let reply = sent
        .iter()
        .find(|request| request.body["text"]["body"] == "Yes, in Bandra")
        .ok_or_else(|| anyhow!("no send"))?;
    assert_eq!(reply.phone_number_id, SUPPORT_LINE, "the reply leaves from the conversation's number");

    // The event log and the audit trail say which rule routed what.
    let (status, _) = harness.get("/api/v1/audit/verify", MANAGER_TOKEN).await?;
    assert_eq!(status, 200);
    let response = harness
        .http
        .get(format!("{}/api/v1/audit?contact=919800000002", harness.base_url()))
        .bearer_auth(MANAGER_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    let entries: Vec<Value> = response.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let routed = entries.iter().find(|entry| entry["action"] == "routed").ok_or_else(|| anyhow!("no routed entry"))?;
    assert_eq!(
        (routed["data"]["route"].clone(), routed["data"]["team_id"].as_str()),
        (rule("refunds"), Some("support"))
    );
    let assigned =
        entries.iter().find(|entry| entry["action"] == "assigned").ok_or_else(|| anyhow!("no assigned entry"))?;
    assert_eq!(
        (assigned["data"]["agent_id"].as_str(), assigned["data"]["route"].clone()),
        (Some("p1"), rule("refunds"))
    );

    for client in [s1, vip, p1, pu1, mu1] {
        client.close().await;
    }
    harness.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_returning_customer_goes_back_to_the_agent_who_closed_their_last_conversation() -> Result<()> {
    let harness = start().await?;
    let mut s1 = online(&harness, "s1").await?;
    let mut vip = online(&harness, "vip").await?;
    let customer = "919800000101";
    let (conversation, _) =
        routed_to(&harness, &mut s1, message_webhook(SALES_LINE, customer, "wamid.b1", text("hello"))).await?;
    let id = conversation["id"].as_str().ok_or_else(|| anyhow!("no id"))?.to_owned();
    let answer =
        s1.request(json!({"type": "close", "conversation_id": id, "fields": {"outcome": "follow_up"}})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    // Round robin would now offer the next conversation to vip; the
    // customer's own agent gets it instead.
    let (conversation, route) =
        routed_to(&harness, &mut s1, message_webhook(SALES_LINE, customer, "wamid.b2", text("me again"))).await?;
    assert_eq!((conversation["agent"].as_str(), route), (Some("s1"), json!({"reason": "returning"})));
    // A rule that matches still gives the owner first (owner_first defaults to true).
    let other = "919800000102";
    let (conversation, _) =
        routed_to(&harness, &mut vip, message_webhook(SALES_LINE, other, "wamid.b3", text("hello"))).await?;
    let id = conversation["id"].as_str().ok_or_else(|| anyhow!("no id"))?.to_owned();
    let answer =
        vip.request(json!({"type": "close", "conversation_id": id, "fields": {"outcome": "closed_won"}})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    let (conversation, route) =
        routed_to(&harness, &mut vip, message_webhook(SALES_LINE, other, "wamid.b4", text("I need a refund"))).await?;
    assert_eq!(
        (conversation["agent"].as_str(), conversation["team"].as_str(), route),
        (Some("vip"), Some("support"), json!({"reason": "returning", "rule": "refunds"}))
    );
    s1.close().await;
    vip.close().await;
    harness.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_rule_that_names_an_unknown_team_stops_the_start_with_its_rule_and_field() -> Result<()> {
    let data_dir = tempfile::tempdir()?;
    let head = config_head(&data_dir.path().display().to_string(), "http://127.0.0.1:9");
    let text = format!("{head}{}", routing_config()).replace("to_team = \"pune\"", "to_team = \"nowhere\"");
    let error =
        Config::from_toml("routing.toml", &text, std::iter::empty()).err().ok_or_else(|| anyhow!("accepted"))?;
    let message = error.to_string();
    assert!(message.contains("routing.rules[4] (pune_ad).to_team") && message.contains("\"nowhere\""), "{message}");
    Ok(())
}

async fn patch_contact(harness: &Harness, wa_id: &str, body: Value) -> Result<Value> {
    let response = harness
        .http
        .patch(format!("{}/api/v1/contacts/{wa_id}", harness.base_url()))
        .bearer_auth(MANAGER_TOKEN)
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "PATCH answered {}", response.status());
    Ok(response.json().await?)
}

#[tokio::test]
async fn contacts_route_by_owner_dealer_and_attributes_and_a_named_city_is_kept() -> Result<()> {
    let harness = start().await?;
    let s1 = online(&harness, "s1").await?;
    let mut vip = online(&harness, "vip").await?;
    let mut pu1 = online(&harness, "pu1").await?;
    let mut mu1 = online(&harness, "mu1").await?;

    // A dedicated owner set through the contacts API gets the contact's conversations.
    patch_contact(&harness, "919800000201", json!({"owner": "vip"})).await?;
    let (conversation, route) =
        routed_to(&harness, &mut vip, message_webhook(SALES_LINE, "919800000201", "wamid.c1", text("hello"))).await?;
    assert_eq!((conversation["agent"].as_str(), route), (Some("vip"), json!({"reason": "owner"})));
    // A dealer's customer goes to the dealer's team.
    patch_contact(&harness, "919800000202", json!({"dealer": "d042"})).await?;
    let (conversation, route) =
        routed_to(&harness, &mut mu1, message_webhook(SALES_LINE, "919800000202", "wamid.c2", text("hello"))).await?;
    assert_eq!((conversation["team"].as_str(), route), (Some("mumbai"), json!({"reason": "rule", "rule": "dealers"})));
    // A free-form attribute; `owner_first = false` passes the owner by.
    patch_contact(&harness, "919800000203", json!({"owner": "s1", "attributes": {"tier": "Gold"}})).await?;
    let (conversation, route) =
        routed_to(&harness, &mut pu1, message_webhook(SALES_LINE, "919800000203", "wamid.c3", text("hello"))).await?;
    assert_eq!((conversation["team"].as_str(), route), (Some("pune"), json!({"reason": "rule", "rule": "gold"})));
    // A city named in the first message becomes the contact's city, audited.
    let (_, route) = routed_to(
        &harness,
        &mut pu1,
        message_webhook(SALES_LINE, "919800000204", "wamid.c4", text("any offers in pimpri chinchwad?")),
    )
    .await?;
    assert_eq!(route, json!({"reason": "rule", "rule": "by_city"}));
    let (status, contact) = harness.get("/api/v1/contacts/919800000204", MANAGER_TOKEN).await?;
    assert_eq!((status, contact["city"].as_str()), (200, Some("Pimpri Chinchwad")), "{contact}");
    let trail = harness
        .http
        .get(format!("{}/api/v1/audit?contact=919800000204", harness.base_url()))
        .bearer_auth(MANAGER_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    let updated = trail
        .lines()
        .map(serde_json::from_str::<Value>)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .find(|entry| entry["action"] == "contact_updated")
        .ok_or_else(|| anyhow!("no contact_updated entry in {trail}"))?;
    assert_eq!(updated["actor"], "system");
    assert_eq!(updated["data"]["changes"][0], json!({"key": "city", "old": null, "new": "Pimpri Chinchwad"}));
    // The next conversation of that contact goes by the stored city, with no city in the text.
    let first = harness.get("/api/v1/conversations?contact=919800000204", MANAGER_TOKEN).await?.1;
    let id = first["conversations"][0]["id"].as_str().or_else(|| first[0]["id"].as_str()).map(str::to_owned);
    let id = id.ok_or_else(|| anyhow!("no conversation in {first}"))?;
    let answer =
        pu1.request(json!({"type": "close", "conversation_id": id, "fields": {"outcome": "follow_up"}})).await?;
    assert_eq!(answer["type"], "ok", "{answer}");
    let (_, route) =
        routed_to(&harness, &mut pu1, message_webhook(SALES_LINE, "919800000204", "wamid.c5", text("hello again")))
            .await?;
    assert_eq!(route, json!({"reason": "returning", "rule": "by_city"}));

    for client in [s1, vip, pu1, mu1] {
        client.close().await;
    }
    harness.shutdown().await;
    Ok(())
}
