//! What the co-pilot asks the model and what it gets back: this module's
//! own types (the co-pilot's model hook adapts its flow and conversation to
//! them), plain data with serde so they can be logged without secrets and
//! compared in tests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A value of a flow's field: a string (an option's `value`, a date as
/// `YYYY-MM-DD`, free text) or a number.
pub type FieldValue = serde_json::Value;

/// The kind of answer a question takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerKind {
    /// One of `options` (its `value` fills the field).
    Options,
    /// A number within `min` and `max` when set.
    Number,
    /// A day, `YYYY-MM-DD`.
    Date,
    /// Free text matching `pattern` when set.
    Text,
}

/// One accepted answer of an `options` question.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnswerOption {
    /// The button's or row's id.
    pub id: String,
    /// What the customer sees.
    pub title: String,
    /// What fills the field.
    pub value: String,
}

/// One qualification question of the flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Question {
    pub id: String,
    /// What the co-pilot asks.
    pub text: String,
    /// The disposition field the answer fills.
    pub field: String,
    pub kind: AnswerKind,
    #[serde(default)]
    pub options: Vec<AnswerOption>,
    /// For `text`: a regular expression the whole answer must match.
    #[serde(default)]
    pub pattern: Option<String>,
    /// For `number`: the smallest accepted.
    #[serde(default)]
    pub min: Option<f64>,
    /// For `number`: the largest accepted.
    #[serde(default)]
    pub max: Option<f64>,
}

/// Who wrote a line of the conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Author {
    Customer,
    Copilot,
    Agent,
}

/// One message of the conversation, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub author: Author,
    pub text: String,
}

/// What the model may decide for the conversation; the caller lists the
/// ones the flow allows at this point in [`TurnRequest::allowed_actions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Go on with the flow: the built-in engine asks the next unanswered question.
    AskNext,
    /// Hand the conversation to a person (qualified, or the customer asks for one).
    Handoff,
    /// Not a lead (not interested, wrong number, spam): close as not qualified.
    CloseUnqualified,
    /// Interested later: nurture (the flow's templates) instead of an agent now.
    Nurture,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::AskNext => "ask_next",
            Action::Handoff => "handoff",
            Action::CloseUnqualified => "close_unqualified",
            Action::Nurture => "nurture",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        [Action::AskNext, Action::Handoff, Action::CloseUnqualified, Action::Nurture]
            .into_iter()
            .find(|action| action.as_str() == text)
    }

    /// What the system prompt says the action means.
    pub(crate) fn meaning(self) -> &'static str {
        match self {
            Action::AskNext => "continue the flow; the next unanswered question is asked for you",
            Action::Handoff => "the customer asks for a person, or every question is answered",
            Action::CloseUnqualified => "the customer is clearly not a lead (not interested, wrong number, spam)",
            Action::Nurture => "the customer is interested, but later",
        }
    }
}

/// One inbound customer message to understand.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TurnRequest {
    pub conversation_id: String,
    pub flow_id: String,
    pub questions: Vec<Question>,
    /// The question the customer was last asked, if any.
    pub current_question: Option<String>,
    /// Fields already filled (by earlier turns or the built-in engine).
    pub fields_so_far: BTreeMap<String, FieldValue>,
    /// The conversation so far, the message to understand last.
    pub transcript: Vec<Line>,
    /// What the model may choose; anything else it answers is refused.
    pub allowed_actions: Vec<Action>,
    /// Tokens this conversation has spent on the model so far (the caller
    /// keeps it with the conversation).
    pub tokens_used: u32,
}

/// What the model understood, checked: only the flow's fields, values valid
/// for their question, an allowed action, a reply within bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TurnResult {
    /// Fields the customer's words fill (field key → value); only the flow's.
    pub fields: BTreeMap<String, FieldValue>,
    pub action: Action,
    /// A short message to the customer before the flow goes on, if any.
    pub reply: Option<String>,
    /// The conversation's tokens spent, this request included.
    pub tokens_used: u32,
}

/// The handoff summary an agent reads first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryRequest {
    pub conversation_id: String,
    pub flow_id: String,
    pub questions: Vec<Question>,
    pub fields: BTreeMap<String, FieldValue>,
    pub transcript: Vec<Line>,
    /// Why the conversation is handed over (`qualified`, `asked_for_person`…).
    pub reason: String,
    pub tokens_used: u32,
}

/// A draft reply for an agent (agent assist).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DraftRequest {
    pub conversation_id: String,
    /// The conversation's recent messages, oldest first.
    pub transcript: Vec<Line>,
    pub fields: BTreeMap<String, FieldValue>,
    pub tokens_used: u32,
}

/// A summary or a draft, checked, with the conversation's tokens spent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generated {
    pub text: String,
    pub tokens_used: u32,
}
