//! Meta's Conversions API for business messaging (PROTOCOL §10,
//! docs/integrations.md "Meta Conversions API"), a built-in target of the
//! outbox (`capi`, made when `[capi]` is configured).
//!
//! Only conversations that carry a `ctwa_clid` (they came from a
//! click-to-WhatsApp ad) send events, each at most once per conversation
//! and event name:
//! - `on_qualified` (QualifiedLead) when the conversation is qualified —
//!   PROTOCOL §5: "reached an agent, or the co-pilot marked it qualified":
//!   its first `Assigned` or `CopilotQualified` event, whichever comes
//!   first ([`qualifies`]);
//! - `on_won` (Purchase) when it closes with a value of a field's
//!   `won_values`, with `custom_data {currency, value}` (the first `money`
//!   field, 0 when it is empty).
//!
//! "Once" has two halves. The outbox remembers what it made: a memory row
//! (`~capi/{conversation}/{event name}`) in the outbox table, committed
//! with the delivery and the cursor, read back at start, so a second
//! assignment — before or after a restart — makes nothing. And every
//! attempt of the delivery sends the same `event_id`
//! (`{conversation}.{event name}`), by which Meta deduplicates an attempt
//! whose answer was lost.

use std::fmt;
use std::time::Duration;

use protocol::events::{Event, EventBody};
use protocol::model::Source;
use serde_json::{Value, json};

use super::crm::Dispositions;
use super::decide::{AttemptOutcome, Delivery};
use super::{AttemptFuture, Connector};
use protocol::time::UnixMs;

/// The key prefix of the memory rows in the outbox table (never a
/// delivery's id: those start with a target id, letters or digits).
pub const MEMORY_PREFIX: &str = "~capi/";

/// What decides the events, from `[capi]` and the dispositions.
#[derive(Clone, Debug, PartialEq)]
pub struct CapiPlan {
    pub waba_id: String,
    pub on_qualified: String,
    pub on_won: String,
    pub currency: Option<String>,
    /// Which closes are won and what they are worth, per team.
    pub dispositions: Dispositions,
}

/// The memory row's key of an event sent for a conversation.
pub fn memory_key(conversation_id: &str, event_name: &str) -> String {
    format!("{MEMORY_PREFIX}{conversation_id}/{event_name}")
}

/// The stable `event_id` of a conversation's event (Meta's deduplication key).
pub fn event_id(conversation_id: &str, event_name: &str) -> String {
    format!("{conversation_id}.{event_name}")
}

/// Whether an event of the log qualifies its conversation (PROTOCOL §5):
/// the co-pilot marked it qualified (`copilot_qualified`), or it reached an
/// agent. A co-pilot's qualified lead is then assigned too; the memory row
/// makes the second one nothing.
pub fn qualifies(body: &EventBody) -> bool {
    matches!(body, EventBody::Assigned { .. } | EventBody::CopilotQualified { .. })
}

impl CapiPlan {
    /// The event `event` makes for a conversation from `source` held by
    /// `team` (whose disposition schema says what is won), if any: its
    /// name and the body to post. `already_sent(name)`: the outbox
    /// made that event for this conversation before.
    pub fn conversion(
        &self,
        event: &Event,
        source: Option<&Source>,
        team: Option<&str>,
        already_sent: impl Fn(&str) -> bool,
    ) -> Option<(String, Value)> {
        let conversation_id = event.conversation_id.as_deref()?;
        let ctwa_clid = source?.ctwa_clid.as_deref().filter(|clid| !clid.is_empty())?;
        let (name, custom_data) = match &event.body {
            body if qualifies(body) => (&self.on_qualified, None),
            EventBody::Closed { fields, .. } if self.dispositions.of(team).is_won(fields) => {
                let value = self.dispositions.of(team).amount(fields).unwrap_or(0.0);
                let custom = self.currency.as_ref().map(|currency| json!({"currency": currency, "value": value}));
                (&self.on_won, custom)
            }
            _ => return None,
        };
        if already_sent(name) {
            return None;
        }
        let mut data = json!({
            "event_name": name,
            "event_time": event.at.div_euclid(1000),
            "event_id": event_id(conversation_id, name),
            "action_source": "business_messaging",
            "messaging_channel": "whatsapp",
            "user_data": {
                "whatsapp_business_account_id": self.waba_id,
                "ctwa_clid": ctwa_clid,
            },
        });
        if let Some(custom_data) = custom_data {
            data["custom_data"] = custom_data;
        }
        Some((name.clone(), json!({ "data": [data] })))
    }
}

/// The `capi` target: `POST {graph_base_url}/{dataset_id}/events` with the
/// WhatsApp access token.
pub struct CapiConnector {
    http: reqwest::Client,
    url: reqwest::Url,
    access_token: String,
}

impl fmt::Debug for CapiConnector {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("CapiConnector").field("url", &self.url.as_str()).finish_non_exhaustive()
    }
}

impl CapiConnector {
    pub fn new(
        graph_base_url: &str,
        dataset_id: &str,
        access_token: &str,
        timeout: Duration,
    ) -> Result<CapiConnector, String> {
        let url = format!("{}/{dataset_id}/events", graph_base_url.trim_end_matches('/'));
        let url = reqwest::Url::parse(&url).map_err(|error| format!("{url:?} is not a URL: {error}"))?;
        Ok(CapiConnector { http: super::attempt::client(timeout)?, url, access_token: access_token.to_owned() })
    }
}

impl Connector for CapiConnector {
    fn attempt(&self, delivery: &Delivery, now: UnixMs) -> AttemptFuture {
        let request = self
            .http
            .post(self.url.clone())
            .bearer_auth(&self.access_token)
            .header("content-type", "application/json")
            .body(delivery.payload.clone());
        Box::pin(async move {
            match super::attempt::send(request, now, true).await {
                Ok(answer) => AttemptOutcome::Delivered { status: answer.status },
                Err(failure) => failure,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use protocol::model::SourceKind;
    use serde_json::Map;

    use super::super::crm::Disposition;

    use super::*;

    fn plan() -> CapiPlan {
        CapiPlan {
            waba_id: "102290129340398".into(),
            on_qualified: "QualifiedLead".into(),
            on_won: "Purchase".into(),
            currency: Some("INR".into()),
            dispositions: Dispositions {
                global: Disposition {
                    won: vec![("outcome".into(), vec!["closed_won".into()])],
                    money: Some("amount".into()),
                },
                teams: [(
                    "collections".to_owned(),
                    Disposition { won: vec![("ptp".into(), vec!["paid".into()])], money: None },
                )]
                .into(),
            },
        }
    }

    fn paid() -> Source {
        Source {
            kind: SourceKind::Paid,
            source_type: Some("ad".into()),
            source_id: Some("120200000001".into()),
            ctwa_clid: Some("ARAkLkA8rmlFeiCktEJQ".into()),
            headline: Some("Free test drive".into()),
            code: None,
        }
    }

    fn event(body: EventBody) -> Event {
        Event {
            at: 1_700_000_000_123,
            conversation_id: Some("cv7".into()),
            contact: Some("919800000001".into()),
            phone_number_id: Some("100".into()),
            actor: protocol::events::Actor::System,
            body,
        }
    }

    fn assigned() -> Event {
        event(EventBody::Assigned { agent_id: "a1".into(), team_id: None, route: None })
    }

    fn closed(outcome: &str, amount: Value) -> Event {
        let fields = Map::from_iter([("outcome".to_owned(), json!(outcome)), ("amount".to_owned(), amount)]);
        event(EventBody::Closed { fields, outcome: Some(outcome.into()) })
    }

    #[test]
    fn a_paid_conversation_is_qualified_at_its_first_assignment() {
        let (name, body) = plan().conversion(&assigned(), Some(&paid()), None, |_| false).unwrap();
        assert_eq!(name, "QualifiedLead");
        assert_eq!(
            body,
            json!({"data": [{
                "event_name": "QualifiedLead",
                "event_time": 1_700_000_000,
                "event_id": "cv7.QualifiedLead",
                "action_source": "business_messaging",
                "messaging_channel": "whatsapp",
                "user_data": {"whatsapp_business_account_id": "102290129340398", "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ"},
            }]})
        );
        assert_eq!(plan().conversion(&assigned(), Some(&paid()), None, |name| name == "QualifiedLead"), None, "once");
    }

    #[test]
    fn the_copilots_qualified_mark_sends_qualified_lead_once() {
        let qualified = event(EventBody::CopilotQualified { score: 7 });
        let (name, body) = plan().conversion(&qualified, Some(&paid()), None, |_| false).unwrap();
        assert_eq!(name, "QualifiedLead");
        assert_eq!(body["data"][0]["event_id"], "cv7.QualifiedLead");
        // The hand-over's assignment after it makes nothing more.
        assert_eq!(plan().conversion(&assigned(), Some(&paid()), None, |name| name == "QualifiedLead"), None);
        // Nor for an organic conversation.
        assert_eq!(plan().conversion(&qualified, Some(&Source::organic()), None, |_| false), None);
    }

    #[test]
    fn a_won_close_carries_the_money_field_and_the_currency() {
        let (name, body) =
            plan().conversion(&closed("closed_won", json!("2500.50")), Some(&paid()), None, |_| false).unwrap();
        assert_eq!(name, "Purchase");
        assert_eq!(body["data"][0]["event_id"], "cv7.Purchase");
        assert_eq!(body["data"][0]["custom_data"], json!({"currency": "INR", "value": 2500.5}));
        let (_, body) = plan().conversion(&closed("closed_won", json!(900)), Some(&paid()), None, |_| false).unwrap();
        assert_eq!(body["data"][0]["custom_data"]["value"], 900.0);
        let (_, body) = plan().conversion(&closed("closed_won", Value::Null), Some(&paid()), None, |_| false).unwrap();
        assert_eq!(body["data"][0]["custom_data"]["value"], 0.0, "an empty amount is 0");
        let no_currency = CapiPlan { currency: None, ..plan() };
        let (_, body) =
            no_currency.conversion(&closed("closed_won", json!(1)), Some(&paid()), None, |_| false).unwrap();
        assert!(body["data"][0].get("custom_data").is_none());
        let (_, body) = plan()
            .conversion(&closed("closed_won", json!(5)), Some(&paid()), Some("sales"), |_| false)
            .expect("a team without its own schema reads the global one");
        assert_eq!(body["data"][0]["custom_data"]["value"], 5.0);
        assert_eq!(
            plan().conversion(&closed("closed_won", json!(5)), Some(&paid()), Some("collections"), |_| false),
            None,
            "collections' own schema does not count the global won value"
        );
    }

    #[test]
    fn nothing_for_organic_lost_or_other_events() {
        let organic = Source::organic();
        assert_eq!(plan().conversion(&assigned(), Some(&organic), None, |_| false), None);
        assert_eq!(plan().conversion(&assigned(), None, None, |_| false), None, "a conversation that cannot be read");
        let no_clid = Source { ctwa_clid: None, ..paid() };
        assert_eq!(plan().conversion(&assigned(), Some(&no_clid), None, |_| false), None, "an ad without a click id");
        assert_eq!(plan().conversion(&closed("follow_up", json!(10)), Some(&paid()), None, |_| false), None);
        let other = event(EventBody::FieldsChanged { changes: vec![] });
        assert_eq!(plan().conversion(&other, Some(&paid()), None, |_| false), None);
    }
}
