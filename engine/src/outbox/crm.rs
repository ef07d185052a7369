//! The named CRM connectors (PROTOCOL §10, docs/integrations.md "Named
//! CRMs"): `hubspot`, `zoho`, `freshsales`, `leadsquared`. Each maps the
//! outbox's delivery body (the webhook's `{type, timestamp, data}`) onto
//! its CRM's documented API — [`plan`], a pure function from the body to
//! the HTTP requests, in order — and the connector sends them one after
//! the other with the CRM's auth, classifying each answer as every
//! connector does (`super::attempt`).
//!
//! Idempotency (delivery is at least once): every request is an upsert
//! keyed by the customer's phone (or a unique property holding the wa_id
//! or the conversation id), or an idempotent `PUT`, so a delivery retried
//! from its first request after a partial success — or delivered twice —
//! updates the same records and makes none twice. A delivery is one unit:
//! it is delivered when its last request got a 2xx.
//!
//! A 4xx other than 408/429 is retried like any failure until
//! `max_attempts`, then the delivery is dead with the CRM's error body in
//! `last_error` (a missing custom property is fixed in the CRM, then the
//! dead delivery is retried by hand).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use protocol::time::UnixMs;
use serde_json::{Map, Value, json};

use super::decide::{AttemptOutcome, Delivery};
use super::{AttemptFuture, Connector};

/// A named CRM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hubspot,
    Zoho,
    Freshsales,
    Leadsquared,
}

impl Kind {
    pub const NAMES: [&'static str; 4] = ["hubspot", "zoho", "freshsales", "leadsquared"];

    pub fn parse(kind: &str) -> Option<Kind> {
        match kind {
            "hubspot" => Some(Kind::Hubspot),
            "zoho" => Some(Kind::Zoho),
            "freshsales" => Some(Kind::Freshsales),
            "leadsquared" => Some(Kind::Leadsquared),
            _ => None,
        }
    }
}

pub use actors::rules::{Disposition, Dispositions};

/// One HTTP request of a delivery: method, path (and query) under the
/// connector's `url`, JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct CrmRequest {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Value>,
}

fn post(path: impl Into<String>, body: Value) -> CrmRequest {
    CrmRequest { method: "POST", path: path.into(), body: Some(body) }
}

/// What a delivery body says, read once for every CRM.
struct Facts {
    event_type: String,
    timestamp: String,
    wa_id: String,
    first_name: Option<String>,
    last_name: Option<String>,
    conversation_id: Option<String>,
    agent: Option<String>,
    team: Option<String>,
    outcome: Option<String>,
    fields: Map<String, Value>,
    source_kind: Option<String>,
    source_id: Option<String>,
    ctwa_clid: Option<String>,
    /// The ad's headline, else the referral code.
    campaign: Option<String>,
    closed: bool,
}

fn text(value: &Value) -> Option<String> {
    value.as_str().filter(|text| !text.trim().is_empty()).map(str::to_owned)
}

fn facts(payload: &Value) -> Result<Facts, String> {
    let data = &payload["data"];
    let event_type = text(&payload["type"]).ok_or("the delivery has no type")?;
    let wa_id = text(&data["contact"]["wa_id"])
        .or_else(|| text(&data["conversation"]["contact"]["wa_id"]))
        .ok_or("the delivery names no customer (contact.wa_id)")?;
    let name = text(&data["contact"]["name"]).or_else(|| text(&data["conversation"]["contact"]["name"]));
    let (first_name, last_name) = match name.as_deref().map(str::trim) {
        Some(name) => match name.split_once(' ') {
            Some((first, rest)) => (Some(first.to_owned()), Some(rest.trim().to_owned())),
            None => (None, Some(name.to_owned())),
        },
        None => (None, None),
    };
    let fields = data["fields"].as_object().cloned().unwrap_or_default();
    let source = &data["source"];
    Ok(Facts {
        closed: event_type == super::decide::CONVERSATION_CLOSED,
        event_type,
        timestamp: text(&payload["timestamp"]).unwrap_or_default(),
        wa_id,
        first_name,
        last_name,
        conversation_id: text(&data["conversation"]["id"]),
        agent: text(&data["agent"]),
        team: text(&data["team"]),
        outcome: text(&data["outcome"]).or_else(|| text(&fields.get("outcome").cloned().unwrap_or_default())),
        source_kind: text(&source["kind"]),
        source_id: text(&source["source_id"]),
        ctwa_clid: text(&source["ctwa_clid"]),
        campaign: text(&source["headline"]).or_else(|| text(&source["code"])),
        fields,
    })
}

impl Facts {
    fn phone(&self) -> String {
        format!("+{}", self.wa_id)
    }

    /// The disposition fields as one JSON text (every CRM has a text field
    /// for it; their own fields cannot be known in advance).
    fn fields_text(&self) -> Option<String> {
        (!self.fields.is_empty()).then(|| Value::Object(self.fields.clone()).to_string())
    }

    /// Switchboard's values under `names` (the CRM's custom field names in
    /// the order: conversation, event, event time, outcome, agent, team,
    /// source, source id, ctwa_clid, campaign, fields), the empty ones left
    /// out so an update never clears what an earlier event set.
    fn custom(&self, names: [&str; 11]) -> Vec<(String, Value)> {
        let values = [
            self.conversation_id.clone(),
            Some(self.event_type.clone()),
            Some(self.timestamp.clone()).filter(|at| !at.is_empty()),
            self.outcome.clone(),
            self.agent.clone(),
            self.team.clone(),
            self.source_kind.clone(),
            self.source_id.clone(),
            self.ctwa_clid.clone(),
            self.campaign.clone(),
            self.fields_text(),
        ];
        names
            .into_iter()
            .zip(values)
            .filter_map(|(name, value)| value.map(|value| (name.to_owned(), Value::String(value))))
            .collect()
    }
}

/// HubSpot's custom contact properties (created in HubSpot, docs/integrations.md).
const HUBSPOT_CONTACT: [&str; 11] = [
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
/// The unique contact property holding the wa_id (HubSpot upserts by it).
pub const HUBSPOT_WA_ID: &str = "switchboard_wa_id";
/// The unique deal property holding the conversation id.
pub const HUBSPOT_DEAL_ID: &str = "switchboard_conversation_id";

const ZOHO_FIELDS: [&str; 11] = [
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

const FRESHSALES_FIELDS: [&str; 11] = [
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

const LEADSQUARED_FIELDS: [&str; 11] = [
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

/// The Zoho CRM API version used (`/crm/v8/...`).
pub const ZOHO_VERSION: &str = "v8";

/// The requests a delivery body makes on `kind`, in order. Every one is
/// idempotent (see the module's comment). HubSpot's closed conversation
/// adds one more request made from the answers ([`follow_up`]).
pub fn plan(kind: Kind, payload: &Value, dispositions: &Dispositions) -> Result<Vec<CrmRequest>, String> {
    let facts = facts(payload)?;
    let disposition = dispositions.of(facts.team.as_deref());
    let lead_source = if facts.source_kind.as_deref() == Some("paid") { "WhatsApp ad" } else { "WhatsApp" };
    Ok(match kind {
        Kind::Hubspot => {
            let mut properties = Map::new();
            properties.insert("phone".into(), json!(facts.phone()));
            properties.insert("mobilephone".into(), json!(facts.phone()));
            if let Some(first) = &facts.first_name {
                properties.insert("firstname".into(), json!(first));
            }
            if let Some(last) = &facts.last_name {
                properties.insert("lastname".into(), json!(last));
            }
            properties.extend(facts.custom(HUBSPOT_CONTACT));
            let contact = post(
                "/crm/v3/objects/contacts/batch/upsert",
                json!({"inputs": [{"idProperty": HUBSPOT_WA_ID, "id": facts.wa_id, "properties": properties}]}),
            );
            let mut requests = vec![contact];
            if facts.closed
                && let Some(conversation) = &facts.conversation_id
            {
                let won = disposition.is_won(&facts.fields);
                let mut deal = Map::new();
                let who = facts.last_name.clone().map_or_else(
                    || facts.phone(),
                    |_| {
                        [facts.first_name.clone(), facts.last_name.clone()]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join(" ")
                    },
                );
                deal.insert("dealname".into(), json!(format!("WhatsApp: {who} ({conversation})")));
                deal.insert("pipeline".into(), json!("default"));
                deal.insert("dealstage".into(), json!(if won { "closedwon" } else { "closedlost" }));
                if let Some(amount) = disposition.amount(&facts.fields) {
                    deal.insert("amount".into(), json!(amount.to_string()));
                }
                deal.insert("closedate".into(), json!(facts.timestamp));
                deal.extend(facts.custom(HUBSPOT_CONTACT).into_iter().filter(|(key, _)| key != HUBSPOT_DEAL_ID));
                requests.push(post(
                    "/crm/v3/objects/deals/batch/upsert",
                    json!({"inputs": [{"idProperty": HUBSPOT_DEAL_ID, "id": conversation, "properties": deal}]}),
                ));
            }
            requests
        }
        Kind::Zoho => {
            let mut lead = Map::new();
            lead.insert("Last_Name".into(), json!(facts.last_name.clone().unwrap_or_else(|| facts.phone())));
            if let Some(first) = &facts.first_name {
                lead.insert("First_Name".into(), json!(first));
            }
            lead.insert("Phone".into(), json!(facts.phone()));
            lead.insert("Mobile".into(), json!(facts.phone()));
            lead.insert("Lead_Source".into(), json!(lead_source));
            lead.extend(facts.custom(ZOHO_FIELDS));
            vec![post(
                format!("/crm/{ZOHO_VERSION}/Leads/upsert"),
                json!({"data": [lead], "duplicate_check_fields": ["Phone"]}),
            )]
        }
        Kind::Freshsales => {
            let mut contact = Map::new();
            if let Some(first) = &facts.first_name {
                contact.insert("first_name".into(), json!(first));
            }
            contact.insert("last_name".into(), json!(facts.last_name.clone().unwrap_or_else(|| facts.phone())));
            contact.insert("mobile_number".into(), json!(facts.phone()));
            contact.insert("custom_field".into(), Value::Object(facts.custom(FRESHSALES_FIELDS).into_iter().collect()));
            vec![post(
                "/api/contacts/upsert",
                json!({"unique_identifier": {"mobile_number": facts.phone()}, "contact": contact}),
            )]
        }
        Kind::Leadsquared => {
            let mut attributes = vec![json!({"Attribute": "Phone", "Value": facts.phone()})];
            if let Some(first) = &facts.first_name {
                attributes.push(json!({"Attribute": "FirstName", "Value": first}));
            }
            if let Some(last) = &facts.last_name {
                attributes.push(json!({"Attribute": "LastName", "Value": last}));
            }
            attributes.push(json!({"Attribute": "Source", "Value": lead_source}));
            for (attribute, value) in facts.custom(LEADSQUARED_FIELDS) {
                attributes.push(json!({"Attribute": attribute, "Value": value}));
            }
            attributes.push(json!({"Attribute": "SearchBy", "Value": "Phone"}));
            vec![post("/v2/LeadManagement.svc/Lead.Capture", Value::Array(attributes))]
        }
    })
}

/// A request made from the answers to [`plan`]'s: HubSpot associates a
/// closed conversation's deal with its contact (`PUT` of the default
/// association, idempotent) once both upserts answered with their ids.
pub fn follow_up(kind: Kind, answers: &[Value]) -> Result<Option<CrmRequest>, String> {
    if kind != Kind::Hubspot || answers.len() < 2 {
        return Ok(None);
    }
    let id = |answer: &Value, what: &str| {
        text(&answer["results"][0]["id"]).ok_or_else(|| format!("HubSpot's {what} upsert answered no results[0].id"))
    };
    let contact = id(&answers[0], "contact")?;
    let deal = id(&answers[1], "deal")?;
    Ok(Some(CrmRequest {
        method: "PUT",
        path: format!("/crm/v4/objects/deals/{deal}/associations/default/contacts/{contact}"),
        body: None,
    }))
}

/// How a CRM's token is sent.
#[derive(Clone)]
enum Auth {
    Header(&'static str, String),
    /// LeadSquared: `accessKey:secretKey` as `x-LSQ-AccessKey` and `x-LSQ-SecretKey`.
    LeadsquaredKeys {
        access: String,
        secret: String,
    },
}

/// The token's shape for `kind`, or what is wrong with it (never repeating it).
pub fn check_token(kind: Kind, token: &str) -> Result<(), String> {
    if token.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if kind == Kind::Leadsquared {
        let Some((access, secret)) = token.split_once(':') else {
            return Err(
                "a LeadSquared token is `accessKey:secretKey` (My Account > Settings > API and Webhooks)".to_owned()
            );
        };
        if access.trim().is_empty() || secret.trim().is_empty() {
            return Err("both parts of `accessKey:secretKey` are needed".to_owned());
        }
    }
    Ok(())
}

fn auth(kind: Kind, token: &str) -> Auth {
    match kind {
        Kind::Hubspot => Auth::Header("authorization", format!("Bearer {token}")),
        Kind::Zoho => Auth::Header("authorization", format!("Zoho-oauthtoken {token}")),
        Kind::Freshsales => Auth::Header("authorization", format!("Token token={token}")),
        Kind::Leadsquared => {
            let (access, secret) = token.split_once(':').unwrap_or((token, ""));
            Auth::LeadsquaredKeys { access: access.trim().to_owned(), secret: secret.trim().to_owned() }
        }
    }
}

/// Sends a CRM's requests with its auth under its base URL.
struct Sender {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

impl Sender {
    fn request(&self, request: &CrmRequest) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let builder = self.http.request(method, format!("{}{}", self.base, request.path));
        let builder = match &self.auth {
            Auth::Header(name, value) => builder.header(*name, value),
            Auth::LeadsquaredKeys { access, secret } => {
                builder.header("x-LSQ-AccessKey", access).header("x-LSQ-SecretKey", secret)
            }
        };
        match &request.body {
            Some(body) => builder.header("content-type", "application/json").body(body.to_string()),
            None => builder,
        }
    }

    /// Sends `request`, the `step`-th of its delivery: its answer's JSON,
    /// or the failure (named by its step when it is not the first).
    async fn step(&self, request: &CrmRequest, step: usize, now: UnixMs) -> Result<(u16, Value), AttemptOutcome> {
        match super::attempt::send(self.request(request), now, true).await {
            Ok(answer) => Ok((answer.status, answer.json())),
            Err(failure) => Err(step_failed(failure, step, &format!("{} {}", request.method, request.path))),
        }
    }
}

/// One `[[connectors]]` of a named CRM kind.
pub struct CrmConnector {
    kind: Kind,
    sender: Arc<Sender>,
    dispositions: Dispositions,
}

impl fmt::Debug for CrmConnector {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CrmConnector")
            .field("kind", &self.kind)
            .field("url", &self.sender.base)
            .finish_non_exhaustive()
    }
}

impl CrmConnector {
    pub fn new(
        kind: Kind,
        url: &str,
        token: &str,
        dispositions: Dispositions,
        timeout: Duration,
    ) -> Result<CrmConnector, String> {
        reqwest::Url::parse(url).map_err(|error| format!("url {url:?} is not a URL: {error}"))?;
        check_token(kind, token)?;
        let sender = Sender {
            http: super::attempt::client(timeout)?,
            base: url.trim_end_matches('/').to_owned(),
            auth: auth(kind, token),
        };
        Ok(CrmConnector { kind, sender: Arc::new(sender), dispositions })
    }
}

impl Connector for CrmConnector {
    fn attempt(&self, delivery: &Delivery, now: UnixMs) -> AttemptFuture {
        let kind = self.kind;
        let planned = serde_json::from_str::<Value>(&delivery.payload)
            .map_err(|error| format!("the delivery's body is not JSON: {error}"))
            .and_then(|payload| plan(kind, &payload, &self.dispositions));
        let sender = self.sender.clone();
        Box::pin(async move {
            let requests = match planned {
                Ok(requests) => requests,
                Err(error) => return AttemptOutcome::Failed { error, retry_after: None },
            };
            let mut answers = Vec::with_capacity(requests.len());
            let mut status = 200;
            for (step, request) in requests.iter().enumerate() {
                match sender.step(request, step, now).await {
                    Ok((answered, answer)) => {
                        status = answered;
                        answers.push(answer);
                    }
                    Err(failure) => return failure,
                }
            }
            match follow_up(kind, &answers) {
                Ok(Some(request)) => match sender.step(&request, requests.len(), now).await {
                    Ok((answered, _)) => status = answered,
                    Err(failure) => return failure,
                },
                Ok(None) => {}
                Err(error) => return AttemptOutcome::Failed { error, retry_after: None },
            }
            AttemptOutcome::Delivered { status }
        })
    }
}

/// A failed step, named (`step 2 (POST /crm/v3/objects/deals/batch/upsert): HTTP 400: …`)
/// when the delivery has several; its `Retry-After` kept.
fn step_failed(failure: AttemptOutcome, step: usize, what: &str) -> AttemptOutcome {
    match failure {
        AttemptOutcome::Failed { error, retry_after } if step > 0 => AttemptOutcome::Failed {
            error: format!("{error} (step {} of the delivery: {what})", step + 1),
            retry_after,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The global schema wins with `outcome = closed_won` and counts
    /// `amount`; the collections team's own wins with `ptp_status = paid`
    /// and counts `collected`.
    fn disposition() -> Dispositions {
        Dispositions {
            global: Disposition {
                won: vec![("outcome".into(), vec!["closed_won".into()])],
                money: Some("amount".into()),
            },
            teams: BTreeMap::from([(
                "collections".to_owned(),
                Disposition { won: vec![("ptp_status".into(), vec!["paid".into()])], money: Some("collected".into()) },
            )]),
        }
    }

    fn closed() -> Value {
        json!({
            "type": "conversation.closed",
            "timestamp": "2026-11-30T10:00:00.000Z",
            "data": {
                "conversation": {"id": "cv_42", "contact": {"wa_id": "919800000001", "name": "Ravi Kumar"}},
                "contact": {"wa_id": "919800000001", "name": "Ravi Kumar", "city": "Pune"},
                "fields": {"outcome": "closed_won", "amount": 2500},
                "outcome": "closed_won",
                "agent": "a1",
                "team": "sales",
                "source": {"kind": "paid", "source_type": "ad", "source_id": "120200000001",
                           "ctwa_clid": "ARAk", "headline": "Test drive"},
            }
        })
    }

    fn assigned_organic() -> Value {
        json!({
            "type": "conversation.assigned",
            "timestamp": "2026-11-30T09:00:00.000Z",
            "data": {
                "conversation": {"id": "cv_43"},
                "contact": {"wa_id": "919800000002"},
                "fields": {},
                "agent": "a2",
                "team": "support",
                "source": {"kind": "referral", "code": "DIWALI25"},
            }
        })
    }

    const CUSTOM_VALUES: [&str; 11] = [
        "cv_42",
        "conversation.closed",
        "2026-11-30T10:00:00.000Z",
        "closed_won",
        "a1",
        "sales",
        "paid",
        "120200000001",
        "ARAk",
        "Test drive",
        r#"{"amount":2500,"outcome":"closed_won"}"#,
    ];

    fn custom(names: [&str; 11]) -> Map<String, Value> {
        names.into_iter().zip(CUSTOM_VALUES).map(|(name, value)| (name.to_owned(), json!(value))).collect()
    }

    #[test]
    fn hubspot_upserts_the_contact_and_the_deal_then_associates_them() {
        let requests = plan(Kind::Hubspot, &closed(), &disposition()).unwrap();
        let mut contact = Map::from_iter([
            ("phone".to_owned(), json!("+919800000001")),
            ("mobilephone".to_owned(), json!("+919800000001")),
            ("firstname".to_owned(), json!("Ravi")),
            ("lastname".to_owned(), json!("Kumar")),
        ]);
        contact.extend(custom(HUBSPOT_CONTACT));
        assert_eq!(
            requests[0],
            post(
                "/crm/v3/objects/contacts/batch/upsert",
                json!({"inputs": [{"idProperty": "switchboard_wa_id", "id": "919800000001", "properties": contact}]})
            )
        );
        let mut deal = Map::from_iter([
            ("dealname".to_owned(), json!("WhatsApp: Ravi Kumar (cv_42)")),
            ("pipeline".to_owned(), json!("default")),
            ("dealstage".to_owned(), json!("closedwon")),
            ("amount".to_owned(), json!("2500")),
            ("closedate".to_owned(), json!("2026-11-30T10:00:00.000Z")),
        ]);
        deal.extend(custom(HUBSPOT_CONTACT).into_iter().filter(|(key, _)| key != "switchboard_conversation_id"));
        assert_eq!(
            requests[1],
            post(
                "/crm/v3/objects/deals/batch/upsert",
                json!({"inputs": [{"idProperty": "switchboard_conversation_id", "id": "cv_42", "properties": deal}]})
            )
        );
        assert_eq!(requests.len(), 2);
        let answers = [json!({"results": [{"id": "501"}]}), json!({"results": [{"id": "901"}]})];
        assert_eq!(
            follow_up(Kind::Hubspot, &answers).unwrap(),
            Some(CrmRequest {
                method: "PUT",
                path: "/crm/v4/objects/deals/901/associations/default/contacts/501".into(),
                body: None
            })
        );
        assert!(follow_up(Kind::Hubspot, &answers[..1]).unwrap().is_none(), "no deal: nothing to associate");
        assert!(follow_up(Kind::Hubspot, &[json!({}), json!({})]).is_err());
        assert!(follow_up(Kind::Zoho, &answers).unwrap().is_none());

        let lost = {
            let mut body = closed();
            body["data"]["fields"] = json!({"outcome": "lost"});
            body
        };
        let requests = plan(Kind::Hubspot, &lost, &disposition()).unwrap();
        let deal = &requests[1].body.as_ref().unwrap()["inputs"][0]["properties"];
        assert_eq!(deal["dealstage"], "closedlost");
        assert!(deal.get("amount").is_none());

        let requests = plan(Kind::Hubspot, &assigned_organic(), &disposition()).unwrap();
        assert_eq!(requests.len(), 1, "no deal before the close");
        let properties = &requests[0].body.as_ref().unwrap()["inputs"][0]["properties"];
        assert_eq!(properties["switchboard_agent"], "a2");
        assert_eq!(properties["switchboard_campaign"], "DIWALI25", "a referral's code is its campaign");
        assert!(
            properties.get("firstname").is_none() && properties.get("switchboard_outcome").is_none(),
            "{properties}"
        );
    }

    /// A conversation is read with its own team's schema: what is won (and
    /// the money field) in one team's is not in another's.
    #[test]
    fn a_close_is_read_with_its_teams_own_schema() {
        let mut body = closed();
        body["data"]["fields"] =
            json!({"outcome": "closed_won", "amount": 2500, "ptp_status": "paid", "collected": 900});
        let deal = |team: &str| {
            let mut body = body.clone();
            body["data"]["team"] = json!(team);
            let requests = plan(Kind::Hubspot, &body, &disposition()).unwrap();
            requests[1].body.as_ref().unwrap()["inputs"][0]["properties"].clone()
        };
        let collections = deal("collections");
        assert_eq!(
            (collections["dealstage"].as_str(), collections["amount"].as_str()),
            (Some("closedwon"), Some("900"))
        );
        let sales = deal("sales");
        assert_eq!((sales["dealstage"].as_str(), sales["amount"].as_str()), (Some("closedwon"), Some("2500")));

        body["data"]["fields"] = json!({"outcome": "closed_won", "ptp_status": "broken", "collected": 900});
        body["data"]["team"] = json!("collections");
        let requests = plan(Kind::Hubspot, &body, &disposition()).unwrap();
        let deal = &requests[1].body.as_ref().unwrap()["inputs"][0]["properties"];
        assert_eq!(deal["dealstage"], "closedlost", "the global won value does not count in collections: {deal}");
    }

    #[test]
    fn zoho_upserts_a_lead_by_phone() {
        let requests = plan(Kind::Zoho, &closed(), &disposition()).unwrap();
        let mut lead = Map::from_iter([
            ("Last_Name".to_owned(), json!("Kumar")),
            ("First_Name".to_owned(), json!("Ravi")),
            ("Phone".to_owned(), json!("+919800000001")),
            ("Mobile".to_owned(), json!("+919800000001")),
            ("Lead_Source".to_owned(), json!("WhatsApp ad")),
        ]);
        lead.extend(custom(ZOHO_FIELDS));
        assert_eq!(
            requests,
            [post("/crm/v8/Leads/upsert", json!({"data": [lead], "duplicate_check_fields": ["Phone"]}))]
        );
        let requests = plan(Kind::Zoho, &assigned_organic(), &disposition()).unwrap();
        let lead = &requests[0].body.as_ref().unwrap()["data"][0];
        assert_eq!(lead["Last_Name"], "+919800000002", "Zoho needs a last name: the phone when there is no name");
        assert_eq!(lead["Lead_Source"], "WhatsApp");
    }

    #[test]
    fn freshsales_upserts_a_contact_by_mobile_number() {
        let requests = plan(Kind::Freshsales, &closed(), &disposition()).unwrap();
        let contact = json!({
            "first_name": "Ravi",
            "last_name": "Kumar",
            "mobile_number": "+919800000001",
            "custom_field": custom(FRESHSALES_FIELDS),
        });
        assert_eq!(
            requests,
            [post(
                "/api/contacts/upsert",
                json!({"unique_identifier": {"mobile_number": "+919800000001"}, "contact": contact})
            )]
        );
    }

    #[test]
    fn leadsquared_captures_a_lead_searched_by_phone() {
        let requests = plan(Kind::Leadsquared, &closed(), &disposition()).unwrap();
        let mut attributes = vec![
            json!({"Attribute": "Phone", "Value": "+919800000001"}),
            json!({"Attribute": "FirstName", "Value": "Ravi"}),
            json!({"Attribute": "LastName", "Value": "Kumar"}),
            json!({"Attribute": "Source", "Value": "WhatsApp ad"}),
        ];
        for (name, value) in LEADSQUARED_FIELDS.into_iter().zip(CUSTOM_VALUES) {
            attributes.push(json!({"Attribute": name, "Value": value}));
        }
        attributes.push(json!({"Attribute": "SearchBy", "Value": "Phone"}));
        assert_eq!(requests, [post("/v2/LeadManagement.svc/Lead.Capture", Value::Array(attributes))]);
    }

    #[test]
    fn a_body_without_a_customer_is_refused_and_tokens_are_checked() {
        let mut body = closed();
        body["data"]["contact"] = Value::Null;
        body["data"]["conversation"] = Value::Null;
        assert!(plan(Kind::Zoho, &body, &disposition()).unwrap_err().contains("wa_id"));
        assert!(check_token(Kind::Leadsquared, "u$r1:s3cr3t").is_ok());
        for bad in ["nocolon-secret", ":s3cr3t-x", "ak-1234:", " "] {
            let problem = check_token(Kind::Leadsquared, bad).unwrap_err();
            assert!(bad.trim().is_empty() || !problem.contains(bad), "{problem}");
        }
        assert!(check_token(Kind::Hubspot, "pat-na1-x").is_ok());
        assert!(check_token(Kind::Hubspot, "").is_err());
    }
}
