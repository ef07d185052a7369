//! Everything the model answers is checked here before anyone acts on it:
//! pure functions of the request, the answer and the [`Guard`], so every
//! refusal is a unit test. Any violation refuses the whole answer (a model
//! that invented a field is not trusted with the rest of it either): the
//! caller falls back to the built-in engine.
//!
//! - fields: only the flow's; an `options` field only one of its values, a
//!   number a finite number within `min`/`max`, a date a real day
//!   `YYYY-MM-DD`, text within bounds and matching the question's pattern;
//! - the action: one of the request's `allowed_actions`;
//! - a reply, summary or draft: not empty, not over its length, and nothing
//!   that looks like configuration: the key, the canary, the request's
//!   nonce, the model's name, a run of eight words of the fixed prompt
//!   text, a link to a host outside `allowed_link_hosts`.

use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::LlmError;
use super::schema::flow_fields;
use super::types::{Action, AnswerKind, FieldValue, Question, TurnRequest};

/// A run of this many words of the fixed prompt text in an answer is a leak.
const LEAK_RUN_WORDS: usize = 8;

/// What answers are checked against.
#[derive(Clone)]
pub struct Guard {
    pub max_reply_chars: usize,
    pub max_summary_chars: usize,
    /// Strings no answer may contain (the key, the canary, the model's name).
    secrets: Vec<String>,
    allowed_link_hosts: Vec<String>,
    /// Every run of [`LEAK_RUN_WORDS`] words of the fixed prompt text, normalized.
    prompt_runs: HashSet<String>,
}

/// Never prints the secrets.
impl std::fmt::Debug for Guard {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Guard")
            .field("max_reply_chars", &self.max_reply_chars)
            .field("max_summary_chars", &self.max_summary_chars)
            .field("secrets", &self.secrets.len())
            .field("allowed_link_hosts", &self.allowed_link_hosts)
            .finish_non_exhaustive()
    }
}

/// Lowercase words of letters and digits.
fn words(text: &str) -> Vec<String> {
    text.split(|character: char| !character.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl Guard {
    /// `secrets`: strings no answer may contain (empty ones and ones
    /// shorter than 4 characters are ignored: they would refuse ordinary
    /// words); `fixed_texts`: the prompt text no answer may quote.
    pub fn new(
        max_reply_chars: usize,
        max_summary_chars: usize,
        secrets: Vec<String>,
        allowed_link_hosts: Vec<String>,
        fixed_texts: &[&str],
    ) -> Guard {
        let mut prompt_runs = HashSet::new();
        for text in fixed_texts {
            let words = words(text);
            for run in words.windows(LEAK_RUN_WORDS) {
                prompt_runs.insert(run.join(" "));
            }
        }
        Guard {
            max_reply_chars,
            max_summary_chars,
            secrets: secrets.into_iter().filter(|secret| secret.trim().chars().count() >= 4).collect(),
            allowed_link_hosts: allowed_link_hosts.into_iter().map(|host| host.to_lowercase()).collect(),
            prompt_runs,
        }
    }

    fn link_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_lowercase();
        self.allowed_link_hosts.iter().any(|allowed| host == *allowed || host.ends_with(&format!(".{allowed}")))
    }

    /// A reply, summary or draft: `Ok(trimmed text)` or why it is refused.
    /// `nonce`: the request's marker tag, which no answer may echo.
    pub fn check_text(&self, text: &str, max_chars: usize, nonce: &str) -> Result<String, LlmError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(LlmError::SchemaViolation("the text is empty".to_owned()));
        }
        let length = text.chars().count();
        if length > max_chars {
            return Err(LlmError::SchemaViolation(format!("the text has {length} characters, over {max_chars}")));
        }
        self.check_leaks(text, nonce, true)?;
        Ok(text.to_owned())
    }

    /// Configuration in `text`; links too when `links` (a field's value is
    /// not sent to the customer, so it may hold an e-mail address or a site).
    fn check_leaks(&self, text: &str, nonce: &str, links: bool) -> Result<(), LlmError> {
        let lowered = text.to_lowercase();
        if self
            .secrets
            .iter()
            .map(String::as_str)
            .chain((nonce.chars().count() >= 4).then_some(nonce))
            .any(|secret| lowered.contains(&secret.to_lowercase()))
        {
            return Err(LlmError::Refused("the text contains configuration (a key, a marker or the model's name)"));
        }
        if words(text).windows(LEAK_RUN_WORDS).any(|run| self.prompt_runs.contains(&run.join(" "))) {
            return Err(LlmError::Refused("the text quotes the system prompt"));
        }
        if links && link_hosts(text).iter().any(|host| !self.link_allowed(host)) {
            return Err(LlmError::Refused("the text links to a host outside copilot.model.allowed_link_hosts"));
        }
        if text.contains("BEGIN CUSTOMER DATA") || text.contains("END CUSTOMER DATA") {
            return Err(LlmError::Refused("the text contains the data markers"));
        }
        Ok(())
    }
}

static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:[a-z][a-z0-9+.-]*://|www\.)([^\s/?#:@]+@)?([^\s/?#:]+)").expect("a valid pattern")
});
/// A bare domain: labels, then a common top-level domain.
static BARE_DOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b((?:[a-z0-9-]+\.)+(?:com|net|org|io|ai|co|in|info|biz|xyz|app|dev|me|ly|link|site|online|shop|store|top|club|ru|cn|tk|gg|to|us|uk|de))\b",
    )
    .expect("a valid pattern")
});

/// The hosts `text` links to, with or without a scheme.
fn link_hosts(text: &str) -> Vec<String> {
    let mut hosts: Vec<String> = URL
        .captures_iter(text)
        .filter_map(|captures| captures.get(2))
        .map(|host| {
            let host = host.as_str().to_lowercase();
            // `www.example.com` matched from `www.`: the host is what follows.
            host.trim_end_matches(['.', ',', ')', '!', '?', ';']).to_owned()
        })
        .collect();
    for found in BARE_DOMAIN.captures_iter(text) {
        hosts.push(found[1].to_lowercase());
    }
    hosts
}

/// A field's value checked against its question, as it will be stored.
fn check_value(question: &Question, value: &Value, max_text_chars: usize) -> Result<FieldValue, String> {
    let field = &question.field;
    match question.kind {
        AnswerKind::Options => {
            let Some(text) = value.as_str() else { return Err(format!("{field} must be one of its options")) };
            if question.options.iter().any(|option| option.value == text) {
                Ok(Value::String(text.to_owned()))
            } else {
                Err(format!("{field}: {text:?} is not one of its options"))
            }
        }
        AnswerKind::Number => {
            let Some(number) = value.as_f64().filter(|number| number.is_finite()) else {
                return Err(format!("{field} must be a number"));
            };
            if question.min.is_some_and(|min| number < min) || question.max.is_some_and(|max| number > max) {
                return Err(format!("{field}: {number} is outside its bounds"));
            }
            Ok(value.clone())
        }
        AnswerKind::Date => {
            let Some(text) = value.as_str() else { return Err(format!("{field} must be a date")) };
            let well_formed = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
            if well_formed && chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok() {
                Ok(Value::String(text.to_owned()))
            } else {
                Err(format!("{field}: {text:?} is not a day as YYYY-MM-DD"))
            }
        }
        AnswerKind::Text => {
            let Some(text) = value.as_str().map(str::trim) else { return Err(format!("{field} must be text")) };
            if text.is_empty() || text.chars().count() > max_text_chars {
                return Err(format!("{field}: empty or over {max_text_chars} characters"));
            }
            if let Some(pattern) = &question.pattern {
                let whole = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|_| format!("{field}: its pattern is not a valid regular expression"))?;
                if !whole.is_match(text) {
                    return Err(format!("{field}: {text:?} does not match its pattern"));
                }
            }
            Ok(Value::String(text.to_owned()))
        }
    }
}

/// A turn's answer that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedTurn {
    pub fields: BTreeMap<String, FieldValue>,
    pub action: Action,
    pub reply: Option<String>,
}

/// A turn's answer (`choices[0].message.content` parsed as JSON), checked:
pub fn check_turn(request: &TurnRequest, answer: &Value, guard: &Guard, nonce: &str) -> Result<CheckedTurn, LlmError> {
    let violation = |problem: String| LlmError::SchemaViolation(problem);
    let Some(object) = answer.as_object() else { return Err(violation("the answer is not an object".to_owned())) };
    if let Some(extra) = object.keys().find(|key| !matches!(key.as_str(), "fields" | "action" | "reply")) {
        return Err(violation(format!("unexpected key {extra:?}")));
    }
    let action_text = object.get("action").and_then(Value::as_str).unwrap_or_default();
    let Some(action) = Action::parse(action_text) else {
        return Err(violation(format!("{action_text:?} is not an action")));
    };
    if !request.allowed_actions.contains(&action) {
        return Err(violation(format!("the action {} is not allowed here", action.as_str())));
    }
    let questions = flow_fields(&request.questions);
    let mut fields = BTreeMap::new();
    match object.get("fields") {
        None | Some(Value::Null) => {}
        Some(Value::Object(given)) => {
            for (key, value) in given {
                let Some(question) = questions.iter().find(|question| &question.field == key) else {
                    return Err(violation(format!("{key:?} is not a field of the flow")));
                };
                if value.is_null() {
                    continue;
                }
                let checked = check_value(question, value, guard.max_reply_chars).map_err(violation)?;
                if let Value::String(text) = &checked {
                    guard.check_leaks(text, nonce, false)?;
                }
                fields.insert(key.clone(), checked);
            }
        }
        Some(_) => return Err(violation("fields is not an object".to_owned())),
    }
    let reply = match object.get("reply") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.trim().is_empty() => None,
        Some(Value::String(text)) => Some(guard.check_text(text, guard.max_reply_chars, nonce)?),
        Some(_) => return Err(violation("reply is not text".to_owned())),
    };
    Ok(CheckedTurn { fields, action, reply })
}

/// A summary's or draft's answer (`{"text": …}`), checked.
pub fn check_text_answer(answer: &Value, max_chars: usize, guard: &Guard, nonce: &str) -> Result<String, LlmError> {
    let Some(object) = answer.as_object() else {
        return Err(LlmError::SchemaViolation("the answer is not an object".to_owned()));
    };
    if let Some(extra) = object.keys().find(|key| key.as_str() != "text") {
        return Err(LlmError::SchemaViolation(format!("unexpected key {extra:?}")));
    }
    let Some(text) = object.get("text").and_then(Value::as_str) else {
        return Err(LlmError::SchemaViolation("text is missing".to_owned()));
    };
    guard.check_text(text, max_chars, nonce)
}
