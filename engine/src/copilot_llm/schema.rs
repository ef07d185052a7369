//! The JSON schemas sent as `response_format` (strict structured outputs):
//! built from the flow, so the model can only fill the flow's fields (an
//! `options` field only with one of its values) and choose among the
//! allowed actions. Strict mode wants every property required and no
//! others: a field the customer did not answer is `null`.
//!
//! The server enforcing the schema is a help, not a guarantee (a local
//! server may ignore it): [`super::check`] checks every answer again.

use serde_json::{Value, json};

use super::types::{Action, AnswerKind, Question};

/// The pattern of a `date` answer (the check parses it as a real day).
pub const DATE_PATTERN: &str = r"^\d{4}-\d{2}-\d{2}$";

/// The questions' fields, each once, in the flow's order (a field two
/// questions fill takes the first's kind).
pub fn flow_fields(questions: &[Question]) -> Vec<&Question> {
    let mut seen = std::collections::HashSet::new();
    questions.iter().filter(|question| seen.insert(question.field.as_str())).collect()
}

fn field_schema(question: &Question, max_text_chars: usize) -> Value {
    match question.kind {
        AnswerKind::Options => {
            let mut values: Vec<Value> = question.options.iter().map(|option| json!(option.value)).collect();
            values.push(Value::Null);
            json!({"type": ["string", "null"], "enum": values})
        }
        AnswerKind::Number => {
            let mut schema = json!({"type": ["number", "null"]});
            if let Some(min) = question.min {
                schema["minimum"] = json!(min);
            }
            if let Some(max) = question.max {
                schema["maximum"] = json!(max);
            }
            schema
        }
        AnswerKind::Date => json!({"type": ["string", "null"], "pattern": DATE_PATTERN}),
        AnswerKind::Text => {
            let mut schema = json!({"type": ["string", "null"], "maxLength": max_text_chars});
            if let Some(pattern) = &question.pattern {
                schema["pattern"] = json!(pattern);
            }
            schema
        }
    }
}

/// `{fields: {…flow's fields…}, action: one of allowed, reply: string | null}`.
pub fn turn_schema(questions: &[Question], allowed: &[Action], max_reply_chars: usize) -> Value {
    let fields = flow_fields(questions);
    let mut properties = serde_json::Map::new();
    for question in &fields {
        properties.insert(question.field.clone(), field_schema(question, max_reply_chars));
    }
    let required: Vec<&str> = fields.iter().map(|question| question.field.as_str()).collect();
    let actions: Vec<&str> = allowed.iter().map(|action| action.as_str()).collect();
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["fields", "action", "reply"],
        "properties": {
            "fields": {
                "type": "object",
                "additionalProperties": false,
                "required": required,
                "properties": properties,
            },
            "action": {"type": "string", "enum": actions},
            "reply": {"type": ["string", "null"], "maxLength": max_reply_chars},
        },
    })
}

/// `{text: string}` (a summary or a draft).
pub fn text_schema(max_chars: usize) -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["text"],
        "properties": {"text": {"type": "string", "maxLength": max_chars}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copilot_llm::types::AnswerOption;

    #[test]
    fn the_schema_holds_the_flows_fields_enums_and_allowed_actions_only() {
        let questions = vec![
            Question {
                id: "q1".into(),
                text: "Budget?".into(),
                field: "budget".into(),
                kind: AnswerKind::Options,
                options: vec![
                    AnswerOption { id: "lo".into(), title: "Under 1L".into(), value: "low".into() },
                    AnswerOption { id: "hi".into(), title: "Over 1L".into(), value: "high".into() },
                ],
                pattern: None,
                min: None,
                max: None,
            },
            Question {
                id: "q2".into(),
                text: "Seats?".into(),
                field: "seats".into(),
                kind: AnswerKind::Number,
                options: vec![],
                pattern: None,
                min: Some(1.0),
                max: Some(500.0),
            },
        ];
        let schema = turn_schema(&questions, &[Action::AskNext, Action::Handoff], 500);
        let fields = &schema["properties"]["fields"];
        assert_eq!(fields["additionalProperties"], json!(false));
        assert_eq!(fields["required"], json!(["budget", "seats"]));
        assert_eq!(fields["properties"]["budget"]["enum"], json!(["low", "high", null]));
        assert_eq!(fields["properties"]["seats"]["maximum"], json!(500.0));
        assert_eq!(schema["properties"]["action"]["enum"], json!(["ask_next", "handoff"]));
        assert_eq!(schema["additionalProperties"], json!(false));
    }
}
