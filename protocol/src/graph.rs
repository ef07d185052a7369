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
    /// An interactive message (the co-pilot's reply buttons and lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<Interactive>,
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
            interactive: None,
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
            interactive: None,
        }
    }

    /// An interactive message: reply buttons (at most [`MAX_BUTTONS`]) or
    /// a list (one section, at most [`MAX_LIST_ROWS`] rows), `body` above
    /// them. Titles longer than Meta allows are cut with `…` (the ids are
    /// what a reply carries back, never cut).
    pub fn interactive(to: &str, body: &str, choices: &[Choice], list_button: &str) -> Self {
        let action = if choices.len() <= MAX_BUTTONS {
            InteractiveAction {
                buttons: Some(
                    choices
                        .iter()
                        .map(|choice| ReplyButton {
                            kind: "reply".to_owned(),
                            reply: ReplyButtonContent {
                                id: choice.id.clone(),
                                title: clip(&choice.title, MAX_BUTTON_TITLE),
                            },
                        })
                        .collect(),
                ),
                button: None,
                sections: None,
            }
        } else {
            InteractiveAction {
                buttons: None,
                button: Some(clip(list_button, MAX_LIST_BUTTON)),
                sections: Some(vec![ListSection {
                    title: None,
                    rows: choices
                        .iter()
                        .take(MAX_LIST_ROWS)
                        .map(|choice| ListRow {
                            id: choice.id.clone(),
                            title: clip(&choice.title, MAX_ROW_TITLE),
                            description: choice.description.as_deref().map(|text| clip(text, MAX_ROW_DESCRIPTION)),
                        })
                        .collect(),
                }]),
            }
        };
        let kind = if action.buttons.is_some() { "button" } else { "list" };
        SendMessageRequest {
            messaging_product: "whatsapp".to_owned(),
            recipient_type: "individual".to_owned(),
            to: to.to_owned(),
            kind: "interactive".to_owned(),
            context: None,
            text: None,
            template: None,
            interactive: Some(Interactive {
                kind: kind.to_owned(),
                body: Some(InteractiveBody { text: clip(body, MAX_INTERACTIVE_BODY) }),
                action,
            }),
        }
    }
}

/// Meta's limits on interactive messages (OpenAPI `InteractiveObject`).
pub const MAX_BUTTONS: usize = 3;
pub const MAX_BUTTON_TITLE: usize = 20;
pub const MAX_LIST_ROWS: usize = 10;
pub const MAX_ROW_TITLE: usize = 24;
pub const MAX_ROW_DESCRIPTION: usize = 72;
pub const MAX_LIST_BUTTON: usize = 20;
pub const MAX_INTERACTIVE_BODY: usize = 1024;
/// A reply button's or list row's id.
pub const MAX_CHOICE_ID: usize = 200;

/// One choice of an interactive message: the id a reply carries back, the
/// title shown, and (lists only) a description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
}

/// `text` cut to `max` characters, the last one `…` when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(max.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

/// `interactive` of a send: `button` (reply buttons) or `list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interactive {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<InteractiveBody>,
    pub action: InteractiveAction,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InteractiveBody {
    pub text: String,
}

/// Either `buttons` (reply buttons) or `button` + `sections` (a list).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InteractiveAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buttons: Option<Vec<ReplyButton>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sections: Option<Vec<ListSection>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplyButton {
    #[serde(rename = "type")]
    pub kind: String,
    pub reply: ReplyButtonContent,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplyButtonContent {
    pub id: String,
    pub title: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub rows: Vec<ListRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListRow {
    pub id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
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
