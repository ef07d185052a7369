//! The language model (`copilot_llm`, `[copilot.model]`) behind the
//! co-pilot's model hook (`actors::copilot::CopilotModel`) and behind the
//! agent assist's drafter (`suggestions_draft::Drafter`).
//!
//! The two sides were built to their own types; this module only maps one
//! onto the other (pure functions, unit-tested) and turns every failure of
//! the client into the hook's "the built-in engine answers". Both sides
//! check what the model says: the client against the flow's schema, leaks
//! and links (`copilot_llm::check`), the co-pilot again against the
//! question (`actors::copilot::check_interpretation`).

use std::collections::BTreeMap;
use std::sync::Arc;

use actors::copilot::{
    Action, BoxFuture, CopilotModel, InterpretRequest, Interpretation, ModelError, QuestionKind, Summary,
    SummaryRequest,
};
use protocol::model::Direction;
use serde_json::{Map, Value};

use crate::copilot_llm::{self as llm, LlmClient};
use crate::suggestions_draft::{DraftInput, Drafted, Drafter};

/// An option value as the model sees it (the options' values are strings
/// or numbers in the configuration).
fn value_text(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

/// The model's turn for one question of the co-pilot's.
pub fn turn_request(request: &InterpretRequest) -> llm::TurnRequest {
    let options = request
        .allowed_values
        .iter()
        .map(|value| {
            let text = value_text(value);
            llm::AnswerOption { id: text.clone(), title: text.clone(), value: text }
        })
        .collect();
    let kind = match request.kind {
        QuestionKind::Options => llm::AnswerKind::Options,
        QuestionKind::Number => llm::AnswerKind::Number,
        QuestionKind::Date => llm::AnswerKind::Date,
        QuestionKind::Text => llm::AnswerKind::Text,
    };
    let mut allowed_actions = Vec::new();
    for action in &request.allowed_actions {
        let mapped = match action {
            Action::Answer | Action::AskAgain => llm::Action::AskNext,
            Action::Handoff => llm::Action::Handoff,
        };
        if !allowed_actions.contains(&mapped) {
            allowed_actions.push(mapped);
        }
    }
    llm::TurnRequest {
        conversation_id: request.conversation_id.clone(),
        flow_id: request.flow.clone(),
        questions: vec![llm::Question {
            id: request.question.clone(),
            text: request.question_text.clone(),
            field: request.field.clone(),
            kind,
            options,
            pattern: request.pattern.clone(),
            min: request.min,
            max: request.max,
        }],
        current_question: Some(request.question.clone()),
        fields_so_far: BTreeMap::new(),
        transcript: vec![llm::Line { author: llm::Author::Customer, text: request.text.clone() }],
        allowed_actions,
        tokens_used: u32::try_from(request.tokens_used).unwrap_or(u32::MAX),
    }
}

/// What the model's turn means to the co-pilot: a hand-over, an answer to
/// the question (its field filled), or nothing understood (ask again).
/// Only the question's field is kept; the co-pilot checks the value.
pub fn interpretation(request: &InterpretRequest, result: llm::TurnResult) -> Interpretation {
    let tokens = call_tokens(result.tokens_used, request.tokens_used);
    if result.action == llm::Action::Handoff {
        return Interpretation { action: Action::Handoff, fields: Map::new(), tokens };
    }
    match result.fields.get(&request.field) {
        Some(value) if !value.is_null() => Interpretation {
            action: Action::Answer,
            fields: Map::from_iter([(request.field.clone(), value.clone())]),
            tokens,
        },
        _ => Interpretation { action: Action::AskAgain, fields: Map::new(), tokens },
    }
}

/// The model's summary request from the co-pilot's (its transcript lines
/// are `customer: …` / `copilot: …`).
pub fn summary_request(request: &SummaryRequest) -> llm::SummaryRequest {
    let transcript = request
        .transcript
        .iter()
        .map(|line| match line.split_once(": ") {
            Some(("customer", text)) => llm::Line { author: llm::Author::Customer, text: text.to_owned() },
            Some(("copilot", text)) => llm::Line { author: llm::Author::Copilot, text: text.to_owned() },
            _ => llm::Line { author: llm::Author::Customer, text: line.clone() },
        })
        .collect();
    llm::SummaryRequest {
        conversation_id: request.conversation_id.clone(),
        flow_id: String::new(),
        questions: Vec::new(),
        fields: request.fields.iter().map(|(key, value)| (key.clone(), value.clone())).collect(),
        transcript,
        reason: request.reason.clone(),
        tokens_used: u32::try_from(request.tokens_used).unwrap_or(u32::MAX),
    }
}

/// The tokens a call itself used: the client answers with the
/// conversation's total after it, `before` was the total before.
fn call_tokens(total_after: u32, before: u64) -> u64 {
    u64::from(total_after).saturating_sub(before)
}

/// A failed call of the client as the hook's error, with the tokens the
/// call itself used.
fn model_error(failure: llm::LlmFailure, tokens_before: u64) -> ModelError {
    ModelError { message: failure.error.to_string(), tokens: call_tokens(failure.tokens_used, tokens_before) }
}

/// The co-pilot's model hook on the client.
pub struct LlmModel {
    client: Arc<LlmClient>,
}

impl LlmModel {
    pub fn new(client: Arc<LlmClient>) -> LlmModel {
        LlmModel { client }
    }
}

impl CopilotModel for LlmModel {
    fn interpret(&self, request: InterpretRequest) -> BoxFuture<Result<Interpretation, ModelError>> {
        let client = self.client.clone();
        Box::pin(async move {
            let turn = turn_request(&request);
            match client.turn(&turn).await {
                Ok(result) => Ok(interpretation(&request, result)),
                Err(failure) => Err(model_error(failure, request.tokens_used)),
            }
        })
    }

    fn summarize(&self, request: SummaryRequest) -> BoxFuture<Result<Summary, ModelError>> {
        let client = self.client.clone();
        Box::pin(async move {
            match client.summary(&summary_request(&request)).await {
                Ok(generated) => Ok(Summary {
                    text: generated.text,
                    tokens: call_tokens(generated.tokens_used, request.tokens_used),
                }),
                Err(failure) => Err(model_error(failure, request.tokens_used)),
            }
        })
    }
}

/// The model's draft request for an agent's suggestion.
pub fn draft_request(input: &DraftInput) -> llm::DraftRequest {
    let transcript = input
        .history
        .iter()
        .filter_map(|message| {
            let author = match (message.direction, message.author.as_deref()) {
                (Direction::In, _) => llm::Author::Customer,
                (Direction::Out, Some("copilot")) => llm::Author::Copilot,
                (Direction::Out, _) => llm::Author::Agent,
            };
            Some(llm::Line { author, text: message.text.clone()? })
        })
        .collect();
    llm::DraftRequest {
        conversation_id: input.conversation_id.clone(),
        transcript,
        fields: input.fields.iter().map(|(key, value)| (key.clone(), value.clone())).collect(),
        tokens_used: u32::try_from(input.tokens_used).unwrap_or(u32::MAX),
    }
}

/// Agent assist with a model: the configured replies first (they say
/// exactly what the team wants said); when none matches, the model drafts;
/// when it fails, no suggestion. What the model's call used counts against
/// the conversation's budget either way.
pub struct LlmDrafter {
    pub rules: Arc<dyn Drafter>,
    pub client: Arc<LlmClient>,
}

impl Drafter for LlmDrafter {
    fn draft(&self, input: DraftInput) -> BoxFuture<Drafted> {
        let rules = self.rules.clone();
        let client = self.client.clone();
        Box::pin(async move {
            let request = draft_request(&input);
            let before = input.tokens_used;
            let ruled = rules.draft(input).await;
            if ruled.text.is_some() {
                return ruled;
            }
            match client.draft(&request).await {
                Ok(generated) => {
                    Drafted { text: Some(generated.text), tokens: call_tokens(generated.tokens_used, before) }
                }
                Err(failure) => Drafted { text: None, tokens: call_tokens(failure.tokens_used, before) },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn budget_question() -> InterpretRequest {
        InterpretRequest {
            conversation_id: "cv1".into(),
            flow: "ads".into(),
            question: "budget".into(),
            question_text: "What is your budget?".into(),
            field: "budget".into(),
            allowed_values: vec![json!("under_10l"), json!("10_20l")],
            kind: QuestionKind::Options,
            min: None,
            max: None,
            pattern: None,
            allowed_actions: vec![Action::Answer, Action::AskAgain, Action::Handoff],
            text: "around 15 lakh".into(),
            tokens_used: 100,
        }
    }

    #[test]
    fn a_question_becomes_a_one_question_turn_with_its_values_and_actions() {
        let turn = turn_request(&budget_question());
        assert_eq!(turn.questions.len(), 1);
        let question = &turn.questions[0];
        assert_eq!((question.kind, question.field.as_str()), (llm::AnswerKind::Options, "budget"));
        let values: Vec<&str> = question.options.iter().map(|option| option.value.as_str()).collect();
        assert_eq!(values, ["under_10l", "10_20l"]);
        assert_eq!(turn.allowed_actions, [llm::Action::AskNext, llm::Action::Handoff]);
        assert_eq!(turn.current_question.as_deref(), Some("budget"));
        assert_eq!(turn.transcript, [llm::Line { author: llm::Author::Customer, text: "around 15 lakh".into() }]);
        assert_eq!(turn.tokens_used, 100);
    }

    #[test]
    fn the_models_turn_becomes_an_answer_a_reask_or_a_handoff_with_this_calls_tokens() {
        let request = budget_question();
        let result =
            |fields: BTreeMap<String, Value>, action| llm::TurnResult { fields, action, reply: None, tokens_used: 160 };
        let answered = interpretation(
            &request,
            result(BTreeMap::from([("budget".to_owned(), json!("10_20l"))]), llm::Action::AskNext),
        );
        assert_eq!(answered.action, Action::Answer);
        assert_eq!(answered.fields, Map::from_iter([("budget".to_owned(), json!("10_20l"))]));
        assert_eq!(answered.tokens, 60, "the call's own tokens, not the conversation's total");
        let unsure = interpretation(&request, result(BTreeMap::new(), llm::Action::AskNext));
        assert_eq!((unsure.action, unsure.fields.len()), (Action::AskAgain, 0));
        let person = interpretation(
            &request,
            result(BTreeMap::from([("budget".to_owned(), json!("10_20l"))]), llm::Action::Handoff),
        );
        assert_eq!((person.action, person.fields.len()), (Action::Handoff, 0));
    }

    #[test]
    fn a_summarys_transcript_keeps_who_said_what() {
        let request = SummaryRequest {
            conversation_id: "cv1".into(),
            reason: "qualified".into(),
            built_in: "Paid lead.".into(),
            fields: Map::from_iter([("budget".to_owned(), json!("10_20l"))]),
            transcript: vec!["copilot: What is your budget?".into(), "customer: 15 lakh".into()],
            tokens_used: 300,
        };
        let summary = summary_request(&request);
        assert_eq!(summary.transcript[0].author, llm::Author::Copilot);
        assert_eq!(summary.transcript[1], llm::Line { author: llm::Author::Customer, text: "15 lakh".into() });
        assert_eq!(summary.reason, "qualified");
        assert_eq!(summary.fields.get("budget"), Some(&json!("10_20l")));
        assert_eq!(summary.tokens_used, 300, "the conversation's tokens so far: the budget is checked against them");
    }
}
