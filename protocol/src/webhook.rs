//! Meta's WhatsApp Cloud API webhook payloads.
//!
//! Typed where Switchboard acts on a field, and lossless everywhere else: every
//! struct keeps the fields it does not name in `extra`, so nothing Meta sends is
//! dropped (contract §2: "unknown fields are kept, not rejected").

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::json::StrictJsonError;

/// The body of `POST /webhooks/whatsapp`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookPayload {
    pub object: String,
    pub entry: Vec<Entry>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(default)]
    pub id: Option<String>,
    pub changes: Vec<Change>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One change; `value` stays raw until [`Change::messages_value`] types it, so
/// that changes of other fields are kept exactly as sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub field: String,
    pub value: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why a payload is not Meta's.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    #[error("the body is not a WhatsApp webhook: {0}")]
    Shape(String),
    /// A key twice in one object: a lenient parser would keep only the last.
    #[error("{0}")]
    DuplicateKey(String),
}

pub const WHATSAPP_OBJECT: &str = "whatsapp_business_account";

impl WebhookPayload {
    /// Parses and checks the envelope: `object` is `whatsapp_business_account`,
    /// `entry` an array of objects whose `changes` is an array of `{field, value}`,
    /// and every `messages` change has a well-formed value.
    pub fn parse(body: &[u8]) -> Result<WebhookPayload, PayloadError> {
        crate::json::reject_duplicate_keys(body).map_err(|error| match error {
            StrictJsonError::Json(message) => PayloadError::Json(message),
            duplicate @ StrictJsonError::DuplicateKey { .. } => PayloadError::DuplicateKey(duplicate.to_string()),
        })?;
        let raw: Value = serde_json::from_slice(body).map_err(|error| PayloadError::Json(error.to_string()))?;
        let payload: WebhookPayload =
            serde_json::from_value(raw).map_err(|error| PayloadError::Shape(error.to_string()))?;
        if payload.object != WHATSAPP_OBJECT {
            return Err(PayloadError::Shape(format!("`object` is {:?}, expected {WHATSAPP_OBJECT:?}", payload.object)));
        }
        for (entry_index, entry) in payload.entry.iter().enumerate() {
            for (change_index, change) in entry.changes.iter().enumerate() {
                if change.field == "messages" {
                    let value = change.messages_value().map_err(|error| {
                        PayloadError::Shape(format!("entry[{entry_index}].changes[{change_index}].value: {error}"))
                    })?;
                    let id = &value.metadata.phone_number_id;
                    if !is_phone_number_id(id) {
                        return Err(PayloadError::Shape(format!(
                            "entry[{entry_index}].changes[{change_index}].value.metadata.phone_number_id is {id:?}; \
                             Meta's phone number ids are 1 to {MAX_PHONE_NUMBER_ID_DIGITS} digits"
                        )));
                    }
                }
            }
        }
        Ok(payload)
    }
}

/// Meta's ids are numeric strings; 32 digits leaves room for growth.
pub const MAX_PHONE_NUMBER_ID_DIGITS: usize = 32;

/// Whether `id` has the form of Meta's phone number ids: 1 to 32 ASCII
/// digits. The id becomes a segment of the Graph API URL the access token is
/// sent to, so nothing else is accepted.
pub fn is_phone_number_id(id: &str) -> bool {
    (1..=MAX_PHONE_NUMBER_ID_DIGITS).contains(&id.len()) && id.bytes().all(|byte| byte.is_ascii_digit())
}

impl Change {
    /// The typed value of a `messages` change.
    pub fn messages_value(&self) -> Result<MessagesValue, serde_json::Error> {
        MessagesValue::deserialize(&self.value)
    }
}

/// The `value` of a `messages` change: inbound messages, statuses, or both.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessagesValue {
    #[serde(default)]
    pub messaging_product: Option<String>,
    pub metadata: Metadata,
    #[serde(default)]
    pub contacts: Vec<ContactProfile>,
    #[serde(default)]
    pub messages: Vec<InboundMessage>,
    #[serde(default)]
    pub statuses: Vec<Status>,
    #[serde(default)]
    pub errors: Vec<MetaError>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub display_phone_number: Option<String>,
    pub phone_number_id: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactProfile {
    #[serde(default)]
    pub profile: Option<Profile>,
    #[serde(default)]
    pub wa_id: Option<String>,
    /// Business-scoped user id (2026): present when the phone number is not shared.
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One inbound message of any type. `kind` is Meta's `type`; the matching
/// sub-object is typed for the types Switchboard reads and kept as-is otherwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Business-scoped user id of the sender, when `from` is withheld.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_user_id: Option<String>,
    #[serde(deserialize_with = "string_or_number")]
    pub timestamp: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticker: Option<Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<InteractiveReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button: Option<ButtonReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction: Option<Reaction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral: Option<Referral>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Context>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<MetaError>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl InboundMessage {
    /// The customer's key: `from` (a phone number's wa_id), else the
    /// business-scoped `from_user_id`.
    pub fn sender_key(&self) -> Option<&str> {
        self.from.as_deref().or(self.from_user_id.as_deref()).filter(|key| !key.is_empty())
    }

    /// Meta's `timestamp` (unix seconds) in unix milliseconds.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp.trim().parse::<i64>().ok().map(|seconds| seconds.saturating_mul(1000))
    }

    /// The text a person would read: the body, a caption, a button's title.
    pub fn display_text(&self) -> Option<String> {
        if let Some(text) = &self.text {
            return Some(text.body.clone());
        }
        for media in [&self.image, &self.video, &self.document, &self.audio, &self.sticker].into_iter().flatten() {
            if let Some(caption) = &media.caption {
                return Some(caption.clone());
            }
        }
        if let Some(button) = &self.button {
            return button.text.clone();
        }
        let reply = self
            .interactive
            .as_ref()
            .and_then(|interactive| interactive.button_reply.as_ref().or(interactive.list_reply.as_ref()));
        if let Some(reply) = reply {
            return reply.title.clone();
        }
        if let Some(reaction) = &self.reaction {
            return reaction.emoji.clone();
        }
        if let Some(location) = &self.location {
            return location.name.clone().or_else(|| location.address.clone());
        }
        None
    }

    /// The media object of a media message, if any.
    pub fn media(&self) -> Option<&Media> {
        [&self.image, &self.video, &self.document, &self.audio, &self.sticker].into_iter().flatten().next()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextBody {
    pub body: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// image, audio, video, document, sticker: kept by id, never downloaded inline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Media {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Location {
    #[serde(default)]
    pub latitude: Option<f64>,
    #[serde(default)]
    pub longitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InteractiveReply {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button_reply: Option<ReplyChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_reply: Option<ReplyChoice>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplyChoice {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ButtonReply {
    #[serde(default)]
    pub payload: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reaction {
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub emoji: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Click-to-WhatsApp ad or post that started the conversation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Referral {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctwa_clid: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The message this one replies to or was forwarded from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A delivery status of a message the business sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub id: String,
    pub status: String,
    #[serde(deserialize_with = "string_or_number")]
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<MetaError>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Status {
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp.trim().parse::<i64>().ok().map(|seconds| seconds.saturating_mul(1000))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pricing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// `regular`, `free_customer_service` or `free_entry_point`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An error object inside a status, a message or a value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetaError {
    pub code: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Meta sends timestamps as strings; accept numbers too rather than refuse a payload.
fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(text) => Ok(text),
        Value::Number(number) => Ok(number.to_string()),
        other => Err(serde::de::Error::custom(format!("expected a timestamp string, got {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_payload(extra_message_fields: &str) -> String {
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{
            "messaging_product":"whatsapp","metadata":{{"display_phone_number":"1555","phone_number_id":"106540352242922"}},
            "contacts":[{{"profile":{{"name":"Ravi"}},"wa_id":"919800000001"}}],
            "messages":[{{"from":"919800000001","id":"wamid.A","timestamp":"1795514400","type":"text",
            "text":{{"body":"hi ref:SUMMER_24"}}{extra_message_fields}}}]}}}}]}}]}}"#
        )
    }

    #[test]
    fn only_metas_numeric_phone_number_ids_are_taken() {
        for (id, accepted) in [
            ("106540352242922", true),
            ("1", true),
            ("", false),
            ("../../admin/x?y=", false),
            ("10654%2F", false),
            ("１２３", false),
            (&"9".repeat(33), false),
        ] {
            assert_eq!(is_phone_number_id(id), accepted, "{id:?}");
            let body = text_payload("").replace("106540352242922", id);
            assert_eq!(WebhookPayload::parse(body.as_bytes()).is_ok(), accepted, "{id:?}");
        }
    }

    #[test]
    fn parses_a_text_message_and_keeps_unknown_fields() {
        let payload = WebhookPayload::parse(text_payload(r#","brand_new_field":{"x":1}"#).as_bytes()).unwrap();
        let value = payload.entry[0].changes[0].messages_value().unwrap();
        let message = &value.messages[0];
        assert_eq!(message.sender_key(), Some("919800000001"));
        assert_eq!(message.timestamp_ms(), Some(1_795_514_400_000));
        assert_eq!(message.display_text().as_deref(), Some("hi ref:SUMMER_24"));
        assert_eq!(message.extra["brand_new_field"]["x"], 1);
        let round_trip = serde_json::to_value(message).unwrap();
        assert_eq!(round_trip["brand_new_field"]["x"], 1);
    }

    #[test]
    fn business_scoped_sender_without_from() {
        let body = text_payload("").replace(r#""from":"919800000001","#, r#""from_user_id":"US.123","#);
        let payload = WebhookPayload::parse(body.as_bytes()).unwrap();
        let value = payload.entry[0].changes[0].messages_value().unwrap();
        assert_eq!(value.messages[0].sender_key(), Some("US.123"));
    }

    #[test]
    fn refuses_other_shapes() {
        for body in [
            "not json",
            "[]",
            r#"{"object":"page","entry":[]}"#,
            r#"{"object":"whatsapp_business_account"}"#,
            r#"{"object":"whatsapp_business_account","entry":[{"changes":{}}]}"#,
            r#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages"}]}]}"#,
            r#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"messages":[]}}]}]}"#,
        ] {
            assert!(WebhookPayload::parse(body.as_bytes()).is_err(), "accepted {body}");
        }
    }

    #[test]
    fn duplicate_keys_are_refused_naming_the_key() {
        let body = text_payload("").replace(r#""messages":["#, r#""messages":[],"messages":["#);
        let error = WebhookPayload::parse(body.as_bytes()).unwrap_err();
        assert!(matches!(error, PayloadError::DuplicateKey(_)), "{error}");
        let message = error.to_string();
        assert!(message.contains("\"messages\"") && message.contains("entry[0].changes[0].value"), "{message}");
    }

    #[test]
    fn other_fields_are_kept_untyped() {
        let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"account_update","value":{"anything":[1,2]}}]}]}"#;
        let payload = WebhookPayload::parse(body.as_bytes()).unwrap();
        assert_eq!(payload.entry[0].changes[0].value["anything"][1], 2);
    }
}
