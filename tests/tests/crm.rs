//! The named CRM connectors (PROTOCOL §10, docs/integrations.md "Named
//! CRMs"), black-box: the real server with a `[[connectors]]` of each kind
//! pointed at a local receiver (`sim::receiver`) standing in for the CRM.
//! For each CRM: the exact requests a closed conversation makes (method,
//! path, auth, body), and a fault run (500, closed connections, timeouts,
//! 429 with Retry-After as seconds and as an HTTP date) after which every
//! conversation's events arrived, in order, and the CRM — modelled by
//! applying the accepted upserts by their keys — holds one record per
//! customer (and, for HubSpot, one deal per conversation), none twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use actors::clock::ManualClock;
use engine::server::StartOptions;
use protocol::time::format_rfc3339;
use serde_json::{Value, json};
use sim::receiver::{Behavior, Received, Receiver};
use switchboard_tests::{Harness, MANAGER_TOKEN, PHONE_NUMBER_ID, WsClient, eventually, now_s};

type TestResult = anyhow::Result<()>;

const CAP_MS: i64 = 4_000;

fn config_body(kind: &str, url: &str, token: &str, extra: &str) -> String {
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

[[dispositions]]
key = "outcome"
kind = "enum"
options = ["closed_won", "lost"]
won_values = ["closed_won"]

[[dispositions]]
key = "amount"
kind = "money"

[[connectors]]
id = "crm"
kind = "{kind}"
url = "{url}"
token = "{token}"
events = ["conversation.assigned", "conversation.fields_changed", "conversation.closed"]
{extra}

[outbox]
backoff_base_ms = 1000
backoff_max_ms = {CAP_MS}
tick_ms = 20
"#
    )
}

fn token_of(kind: &str) -> &'static str {
    match kind {
        "leadsquared" => "lsq-access:lsq-secret",
        _ => "crm-token-123",
    }
}

async fn start(clock: Arc<ManualClock>, kind: &str, receiver: &Receiver, extra: &str) -> anyhow::Result<Harness> {
    let options = StartOptions { clock, ..StartOptions::default() };
    let url = format!("http://{}", receiver.addr);
    let body = config_body(kind, &url, token_of(kind), extra);
    Harness::start_on_with(options, "crm test", &body).await
}

/// A customer, Ravi Kumar, writes from an ad; `agent` gets the conversation.
async fn arrives(harness: &Harness, agent: &mut WsClient, customer: &str) -> anyhow::Result<String> {
    let referral = json!({"source_url": "https://fb.me/x", "source_type": "ad", "source_id": "120200000001",
        "headline": "Test drive", "ctwa_clid": format!("clid-{customer}")});
    let webhook = sim::emulator::inbound_text_payload(
        PHONE_NUMBER_ID,
        customer,
        "Ravi Kumar",
        &format!("wamid.{customer}"),
        "is it available?",
        now_s(),
        Some(referral),
    );
    let (status, _) = harness.post_webhook(&webhook).await?;
    anyhow::ensure!(status == 200);
    let frame = agent.expect_type("assigned").await?;
    Ok(frame["conversation"]["id"].as_str().unwrap_or_default().to_owned())
}

/// Sets the outcome (won, 2500), then closes.
async fn win(harness: &Harness, id: &str) -> TestResult {
    let path = |action: &str| format!("/api/v1/conversations/{id}/{action}");
    let fields = json!({"fields": {"outcome": "closed_won", "amount": 2500}});
    let (status, answer) = harness.post(&path("fields"), MANAGER_TOKEN, &fields).await?;
    anyhow::ensure!(status == 200, "{answer}");
    let (status, answer) = harness.post(&path("close"), MANAGER_TOKEN, &json!({})).await?;
    anyhow::ensure!(status == 200, "{answer}");
    Ok(())
}

async fn outbox_empty(harness: &Harness) -> TestResult {
    eventually(|| async {
        let (status, answer) = harness.get("/api/v1/outbox", MANAGER_TOKEN).await.ok()?;
        (status == 200 && answer["deliveries"].as_array().is_some_and(Vec::is_empty)).then_some(())
    })
    .await
}

fn hubspot_answers(receiver: &Receiver) {
    receiver.answer_with(
        "/crm/v3/objects/contacts/batch/upsert",
        json!({"status": "COMPLETE", "results": [{"id": "501"}]}),
    );
    receiver
        .answer_with("/crm/v3/objects/deals/batch/upsert", json!({"status": "COMPLETE", "results": [{"id": "901"}]}));
}

/// The values every CRM gets for the closed conversation of `exact_requests`.
struct Closed {
    conversation: String,
    at: String,
}

impl Closed {
    /// The custom fields, in the order of `names`.
    fn custom(&self, names: [&str; 11]) -> Vec<(String, Value)> {
        let values = [
            self.conversation.as_str(),
            "conversation.closed",
            self.at.as_str(),
            "closed_won",
            "a1",
            "sales",
            "paid",
            "120200000001",
            "clid-919811112222",
            "Test drive",
            r#"{"amount":2500,"outcome":"closed_won"}"#,
        ];
        names.into_iter().zip(values).map(|(name, value)| (name.to_owned(), json!(value))).collect()
    }
}

/// Assigned, fields changed, closed: the requests of the close, checked whole.
async fn exact_requests(kind: &str) -> TestResult {
    let receiver = Receiver::start().await?;
    if kind == "hubspot" {
        hubspot_answers(&receiver);
    }
    let clock = ManualClock::new(now_s() * 1000);
    let harness = start(clock.clone(), kind, &receiver, "").await?;
    let mut agent = harness.online_agent("a1").await?;
    let conversation = arrives(&harness, &mut agent, "919811112222").await?;
    win(&harness, &conversation).await?;
    outbox_empty(&harness).await?;
    let closed = Closed { conversation: conversation.clone(), at: format_rfc3339(clock.now_ms_for_test()) };
    let received = receiver.received();
    assert!(received.iter().all(Received::accepted));
    let auth = |request: &Received| match kind {
        "hubspot" => assert_eq!(request.header("authorization"), Some("Bearer crm-token-123")),
        "zoho" => assert_eq!(request.header("authorization"), Some("Zoho-oauthtoken crm-token-123")),
        "freshsales" => assert_eq!(request.header("authorization"), Some("Token token=crm-token-123")),
        _ => {
            assert_eq!(request.header("x-lsq-accesskey"), Some("lsq-access"));
            assert_eq!(request.header("x-lsq-secretkey"), Some("lsq-secret"));
            assert_eq!(request.header("authorization"), None);
        }
    };
    received.iter().for_each(auth);
    // Every event upserts the customer; the close's requests are the last.
    let phone = "+919811112222";
    match kind {
        "hubspot" => {
            assert_eq!(received.len(), 3 + 2, "contact ×3 (assigned, fields, closed), deal, association");
            let close = &received[2..];
            let mut contact = serde_json::Map::from_iter([
                ("phone".to_owned(), json!(phone)),
                ("mobilephone".to_owned(), json!(phone)),
                ("firstname".to_owned(), json!("Ravi")),
                ("lastname".to_owned(), json!("Kumar")),
            ]);
            contact.extend(closed.custom(HUBSPOT));
            assert_eq!(
                (close[0].method.as_str(), close[0].path.as_str()),
                ("POST", "/crm/v3/objects/contacts/batch/upsert")
            );
            assert_eq!(
                close[0].json(),
                json!({"inputs": [{"idProperty": "switchboard_wa_id", "id": "919811112222", "properties": contact}]})
            );
            let mut deal = serde_json::Map::from_iter([
                ("dealname".to_owned(), json!(format!("WhatsApp: Ravi Kumar ({conversation})"))),
                ("pipeline".to_owned(), json!("default")),
                ("dealstage".to_owned(), json!("closedwon")),
                ("amount".to_owned(), json!("2500")),
                ("closedate".to_owned(), json!(closed.at)),
            ]);
            deal.extend(closed.custom(HUBSPOT).into_iter().filter(|(key, _)| key != "switchboard_conversation_id"));
            assert_eq!(
                (close[1].method.as_str(), close[1].path.as_str()),
                ("POST", "/crm/v3/objects/deals/batch/upsert")
            );
            assert_eq!(
                close[1].json(),
                json!({"inputs": [{"idProperty": "switchboard_conversation_id", "id": conversation, "properties": deal}]})
            );
            assert_eq!(
                (close[2].method.as_str(), close[2].path.as_str()),
                ("PUT", "/crm/v4/objects/deals/901/associations/default/contacts/501")
            );
            assert!(close[2].body.is_empty());
        }
        "zoho" => {
            assert_eq!(received.len(), 3);
            let mut lead = serde_json::Map::from_iter([
                ("Last_Name".to_owned(), json!("Kumar")),
                ("First_Name".to_owned(), json!("Ravi")),
                ("Phone".to_owned(), json!(phone)),
                ("Mobile".to_owned(), json!(phone)),
                ("Lead_Source".to_owned(), json!("WhatsApp ad")),
            ]);
            lead.extend(closed.custom(ZOHO));
            assert_eq!((received[2].method.as_str(), received[2].path.as_str()), ("POST", "/crm/v8/Leads/upsert"));
            assert_eq!(received[2].json(), json!({"data": [lead], "duplicate_check_fields": ["Phone"]}));
        }
        "freshsales" => {
            assert_eq!(received.len(), 3);
            let contact = json!({"first_name": "Ravi", "last_name": "Kumar", "mobile_number": phone,
                "custom_field": serde_json::Map::from_iter(closed.custom(FRESHSALES))});
            assert_eq!((received[2].method.as_str(), received[2].path.as_str()), ("POST", "/api/contacts/upsert"));
            assert_eq!(received[2].json(), json!({"unique_identifier": {"mobile_number": phone}, "contact": contact}));
        }
        _ => {
            assert_eq!(received.len(), 3);
            let mut attributes = vec![
                json!({"Attribute": "Phone", "Value": phone}),
                json!({"Attribute": "FirstName", "Value": "Ravi"}),
                json!({"Attribute": "LastName", "Value": "Kumar"}),
                json!({"Attribute": "Source", "Value": "WhatsApp ad"}),
            ];
            for (attribute, value) in closed.custom(LEADSQUARED) {
                attributes.push(json!({"Attribute": attribute, "Value": value}));
            }
            attributes.push(json!({"Attribute": "SearchBy", "Value": "Phone"}));
            assert_eq!(
                (received[2].method.as_str(), received[2].path.as_str()),
                ("POST", "/v2/LeadManagement.svc/Lead.Capture")
            );
            assert_eq!(received[2].json(), Value::Array(attributes));
        }
    }
    assert!(
        received
            .iter()
            .all(|request| request.method != "POST" || request.header("content-type") == Some("application/json"))
    );
    harness.shutdown().await;
    Ok(())
}

const HUBSPOT: [&str; 11] = [
    "switchboard_conversation_id",
    "switchboard_last_event",
    "switchboard_last_event_at",
    "switchboard_outcome",
    "switchboard_agent",
    "switchboard_team",
    "switchboard_source",
    "switchboard_source_id",
    "switchboard_ctwa_clid",
    "switchboard_campaign",
    "switchboard_fields",
];
const ZOHO: [&str; 11] = [
    "Switchboard_Conversation_ID",
    "Switchboard_Last_Event",
    "Switchboard_Last_Event_At",
    "Switchboard_Outcome",
    "Switchboard_Agent",
    "Switchboard_Team",
    "Switchboard_Source",
    "Switchboard_Source_ID",
    "Switchboard_CTWA_CLID",
    "Switchboard_Campaign",
    "Switchboard_Fields",
];
const FRESHSALES: [&str; 11] = [
    "cf_switchboard_conversation_id",
    "cf_switchboard_last_event",
    "cf_switchboard_last_event_at",
    "cf_switchboard_outcome",
    "cf_switchboard_agent",
    "cf_switchboard_team",
    "cf_switchboard_source",
    "cf_switchboard_source_id",
    "cf_switchboard_ctwa_clid",
    "cf_switchboard_campaign",
    "cf_switchboard_fields",
];
const LEADSQUARED: [&str; 11] = [
    "mx_Switchboard_Conversation_ID",
    "mx_Switchboard_Last_Event",
    "mx_Switchboard_Last_Event_At",
    "mx_Switchboard_Outcome",
    "mx_Switchboard_Agent",
    "mx_Switchboard_Team",
    "mx_Switchboard_Source",
    "mx_Switchboard_Source_ID",
    "mx_Switchboard_CTWA_CLID",
    "mx_Switchboard_Campaign",
    "mx_Switchboard_Fields",
];

/// A record upsert the CRM accepted: (the record's key, the conversation,
/// the event) — what the CRM would hold after applying it.
fn upserts(kind: &str, request: &Received) -> Option<(String, String, String)> {
    let body = request.json();
    let (key, fields) = match kind {
        "hubspot" if request.path.starts_with("/crm/v3/objects/contacts") => {
            let input = &body["inputs"][0];
            (input["id"].as_str()?.to_owned(), input["properties"].clone())
        }
        "zoho" => (body["data"][0]["Phone"].as_str()?.to_owned(), body["data"][0].clone()),
        "freshsales" => {
            (body["unique_identifier"]["mobile_number"].as_str()?.to_owned(), body["contact"]["custom_field"].clone())
        }
        "leadsquared" => {
            let attributes: BTreeMap<String, Value> = body
                .as_array()?
                .iter()
                .filter_map(|pair| Some((pair["Attribute"].as_str()?.to_owned(), pair["Value"].clone())))
                .collect();
            (attributes.get("Phone")?.as_str()?.to_owned(), json!(attributes))
        }
        _ => return None,
    };
    let find = |suffix: &str| {
        fields
            .as_object()?
            .iter()
            .find(|(name, _)| name.to_ascii_lowercase().ends_with(suffix))
            .and_then(|(_, value)| value.as_str().map(str::to_owned))
    };
    Some((key, find("conversation_id")?, find("last_event")?))
}

/// Three customers, each assigned, filled and closed, through a receiver
/// that fails in every way first; then everything arrived, in order per
/// conversation, and the CRM holds one record per customer.
async fn fault_run(kind: &str) -> TestResult {
    let receiver = Receiver::start().await?;
    if kind == "hubspot" {
        hubspot_answers(&receiver);
    }
    // Every other request fails, in every way, for the first 48: a fault
    // lands on every step of a delivery (HubSpot's deal and association
    // too), then the CRM answers 2xx.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(6));
    let faults = [
        Behavior::Status(500),
        Behavior::Close,
        Behavior::RetryAfter(429, 1),
        Behavior::Status(400),
        Behavior::RetryAfterValue(503, date),
        Behavior::Hang(Duration::from_secs(5)),
    ];
    receiver.script(faults.iter().cycle().take(24).flat_map(|fault| [fault.clone(), Behavior::Status(200)]));
    let clock = ManualClock::new(now_s() * 1000);
    let harness = start(clock.clone(), kind, &receiver, "timeout_ms = 500\nmax_in_flight = 2").await?;
    let mut agent = harness.online_agent("a1").await?;
    let customers = ["919822220001", "919822220002", "919822220003"];
    let mut conversations = Vec::new();
    for customer in customers {
        conversations.push(arrives(&harness, &mut agent, customer).await?);
    }
    for conversation in &conversations {
        win(&harness, conversation).await?;
    }
    // Move the clock until every delivery is through (each step past any backoff).
    eventually(|| async {
        clock.advance_ms(CAP_MS);
        let (_, answer) = harness.get("/api/v1/outbox", MANAGER_TOKEN).await.ok()?;
        answer["deliveries"].as_array().is_some_and(Vec::is_empty).then_some(())
    })
    .await?;
    let received = receiver.received();
    assert!(received.iter().any(|request| !request.accepted()), "the faults happened");
    let mut records: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut events: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for request in received.iter().filter(|request| request.accepted()) {
        let Some((key, conversation, event)) = upserts(kind, request) else { continue };
        records.entry(key).or_default().insert(conversation.clone());
        let seen = events.entry(conversation).or_default();
        if seen.last() != Some(&event) {
            seen.push(event);
        }
    }
    let keys: Vec<&String> = records.keys().collect();
    let expected_keys: Vec<String> = customers
        .iter()
        .map(|customer| if kind == "hubspot" { customer.to_string() } else { format!("+{customer}") })
        .collect();
    assert_eq!(keys, expected_keys.iter().collect::<Vec<_>>(), "one record per customer, none twice");
    for conversation in &conversations {
        assert_eq!(
            events.get(conversation).map(Vec::as_slice),
            Some(
                &[
                    "conversation.assigned".to_owned(),
                    "conversation.fields_changed".to_owned(),
                    "conversation.closed".to_owned()
                ][..]
            ),
            "{conversation}: every event, in order"
        );
    }
    if kind == "hubspot" {
        let deals: BTreeSet<String> = received
            .iter()
            .filter(|request| request.accepted() && request.path.starts_with("/crm/v3/objects/deals"))
            .filter_map(|request| request.json()["inputs"][0]["id"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(deals, conversations.iter().cloned().collect(), "one deal per conversation");
        let associated = received.iter().filter(|request| request.accepted() && request.method == "PUT").count();
        assert!(associated >= conversations.len(), "each deal associated (a PUT again is harmless)");
    }
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_gets_the_contact_the_deal_and_their_association() -> TestResult {
    exact_requests("hubspot").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zoho_gets_a_lead_upserted_by_phone() -> TestResult {
    exact_requests("zoho").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshsales_gets_a_contact_upserted_by_mobile_number() -> TestResult {
    exact_requests("freshsales").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadsquared_gets_a_lead_captured_by_phone() -> TestResult {
    exact_requests("leadsquared").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_through_faults_loses_nothing_and_duplicates_nothing() -> TestResult {
    fault_run("hubspot").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zoho_through_faults_loses_nothing_and_duplicates_nothing() -> TestResult {
    fault_run("zoho").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshsales_through_faults_loses_nothing_and_duplicates_nothing() -> TestResult {
    fault_run("freshsales").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadsquared_through_faults_loses_nothing_and_duplicates_nothing() -> TestResult {
    fault_run("leadsquared").await
}
