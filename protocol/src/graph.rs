//! Graph API: `POST /{phone_number_id}/messages` bodies, answers and errors.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Meta's send body. Only the part matching `kind` is present.
///
/// Always written in full; read leniently, as Meta does: `recipient_type`
/// defaults to `individual` and `type` to `text` (Meta's own examples omit them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendMessageRequest {
    pub messaging_product: String,
    #[serde(default = "default_recipient_type")]
    pub recipient_type: String,
    pub to: String,
    #[serde(rename = "type", default = "default_kind")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ReplyContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<OutboundText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
}

impl SendMessageRequest {
    pub fn text(to: &str, body: &str) -> Self {
        SendMessageRequest {
            messaging_product: "whatsapp".to_owned(),
            recipient_type: "individual".to_owned(),
            to: to.to_owned(),
            kind: "text".to_owned(),
            context: None,
            text: Some(OutboundText { body: body.to_owned(), preview_url: false }),
            template: None,
        }
    }

    /// A template message with body parameters as plain text.
    pub fn template(to: &str, name: &str, language: &str, body_params: &[String]) -> Self {
        let components = if body_params.is_empty() {
            Vec::new()
        } else {
            vec![TemplateComponent {
                kind: "body".to_owned(),
                parameters: body_params
                    .iter()
                    .map(|text| TemplateParameter { kind: "text".to_owned(), text: Some(text.clone()) })
                    .collect(),
            }]
        };
        SendMessageRequest {
            messaging_product: "whatsapp".to_owned(),
            recipient_type: "individual".to_owned(),
            to: to.to_owned(),
            kind: "template".to_owned(),
            context: None,
            text: None,
            template: Some(Template {
                name: name.to_owned(),
                language: Language { code: language.to_owned(), policy: "deterministic".to_owned() },
                components,
            }),
        }
    }
}

fn default_recipient_type() -> String {
    "individual".to_owned()
}

fn default_kind() -> String {
    "text".to_owned()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplyContext {
    pub message_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboundText {
    pub body: String,
    #[serde(default)]
    pub preview_url: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub name: String,
    pub language: Language,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<TemplateComponent>,
}

/// Meta's schema requires `policy` (its only value is `deterministic`): always
/// written, but read as `deterministic` when absent, as in Meta's own examples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Language {
    pub code: String,
    #[serde(default = "default_policy")]
    pub policy: String,
}

fn default_policy() -> String {
    "deterministic".to_owned()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TemplateComponent {
    #[serde(rename = "type")]
    pub kind: String,
    pub parameters: Vec<TemplateParameter>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TemplateParameter {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Meta's success answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendMessageResponse {
    pub messaging_product: String,
    #[serde(default)]
    pub contacts: Vec<SentContact>,
    pub messages: Vec<SentMessage>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SentContact {
    pub input: String,
    pub wa_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SentMessage {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_status: Option<String>,
}

/// `{"error": {...}}`, Meta's error envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphErrorEnvelope {
    pub error: GraphError,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphError {
    pub message: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub code: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_subcode: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<GraphErrorData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbtrace_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphErrorData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// Meta's error codes Switchboard treats specially.
pub mod codes {
    /// More than 24 hours since the customer's last message.
    pub const RE_ENGAGEMENT: i64 = 131047;
    /// Throughput limit reached.
    pub const THROUGHPUT: i64 = 130429;
    /// Pair rate limit: too many messages to one user.
    pub const PAIR_RATE: i64 = 131056;
    /// Rate limit of the application (HTTP 429 / code 4 / 80007).
    pub const APP_RATE: i64 = 4;
    pub const ACCOUNT_RATE: i64 = 80007;

    /// Throttling: retried with backoff, then `rate_limited`.
    pub fn is_throttling(code: i64) -> bool {
        matches!(code, THROUGHPUT | PAIR_RATE | APP_RATE | ACCOUNT_RATE)
    }
}
