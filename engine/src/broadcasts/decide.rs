//! Broadcasts, pure (PROTOCOL §10, docs/broadcasts.md): what a request
//! says ([`parse_request`]), who it reaches ([`resolve_audience`]), what
//! Meta's answer to one send means ([`classify`]), how fast sends may go
//! ([`Pacer`]) and how long to wait after Meta throttled ([`throttle_wait_ms`]).
//! The task in `mod.rs` loads, decides with these, commits, then acts.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use protocol::graph::SendMessageResponse;
use protocol::time::{UnixMs, parse_rfc3339};
use protocol::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use storage::AudienceConversation;

/// The most recipients one broadcast may have: Meta's messaging limits
/// top out at 10,000 unique users a day below the two largest tiers, and a
/// broadcast's recipients are held in memory while it runs.
pub const MAX_AUDIENCE: usize = 10_000;
/// Sends of one broadcast waiting for Meta's answer at a time.
pub const MAX_IN_FLIGHT: usize = 32;
/// Meta's template names: lowercase letters, digits and underscores.
const MAX_TEMPLATE_NAME: usize = 512;
/// A body parameter's length we accept (Meta's own limit depends on the
/// template's text; the whole body may have 1,024 characters).
const MAX_PARAM_CHARS: usize = 1024;
const MAX_PARAMS: usize = 100;
const MAX_NAME_CHARS: usize = 200;
const DAY_MS: i64 = 86_400_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BroadcastState {
    /// Recipients are pending or in flight.
    Sending,
    /// Meta answered that the number reached its messaging or spam limit:
    /// pending recipients wait for `POST …/resume`.
    PausedLimit,
    /// Every recipient has its outcome.
    Completed,
    /// Meta refused the template itself (every send would fail alike).
    Stopped,
}

impl BroadcastState {
    pub fn label(self) -> &'static str {
        match self {
            BroadcastState::Sending => "sending",
            BroadcastState::PausedLimit => "paused_limit",
            BroadcastState::Completed => "completed",
            BroadcastState::Stopped => "stopped",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientState {
    Pending,
    /// Recorded before the request to Meta; after a crash it becomes
    /// `Unknown`, never sent again.
    Sending,
    Sent,
    Failed,
    /// Opted out (at creation, or when its turn came).
    Skipped,
    /// The engine stopped (or the connection failed) while Meta had the
    /// request: it may have gone out; not sent again.
    Unknown,
}

impl RecipientState {
    pub fn label(self) -> &'static str {
        match self {
            RecipientState::Pending => "pending",
            RecipientState::Sending => "sending",
            RecipientState::Sent => "sent",
            RecipientState::Failed => "failed",
            RecipientState::Skipped => "skipped",
            RecipientState::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    pub name: String,
    pub language: String,
    #[serde(default)]
    pub params: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudienceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_to: Option<String>,
}

/// `POST /api/v1/broadcasts`'s body.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub name: String,
    pub template: TemplateSpec,
    pub audience: AudienceSpec,
    /// The business number to send from (Switchboard's addition); by
    /// default each recipient's latest conversation's, else the first
    /// `[[numbers]]`.
    #[serde(default)]
    pub phone_number_id: Option<String>,
}

/// The audience's filters, checked and with times as unix ms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filters {
    pub contacts: Option<Vec<String>>,
    pub outcome: Option<String>,
    pub team: Option<String>,
    /// Inclusive.
    pub closed_from: Option<UnixMs>,
    /// Exclusive.
    pub closed_to: Option<UnixMs>,
}

impl Filters {
    fn on_conversations(&self) -> bool {
        self.outcome.is_some() || self.team.is_some() || self.closed_from.is_some() || self.closed_to.is_some()
    }

    /// A closed conversation that matches every conversation filter.
    fn matches(&self, conversation: &AudienceConversation) -> bool {
        if conversation.status != protocol::model::ConversationStatus::Closed {
            return false;
        }
        let closed_at = conversation.closed_at.unwrap_or(conversation.opened_at);
        self.outcome
            .as_ref()
            .is_none_or(|outcome| conversation.fields.get("outcome").and_then(Value::as_str) == Some(outcome))
            && self.team.as_ref().is_none_or(|team| conversation.team.as_ref() == Some(team))
            && self.closed_from.is_none_or(|from| closed_at >= from)
            && self.closed_to.is_none_or(|to| closed_at < to)
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidField, message).with_detail(json!({ "field": field }))
}

/// A `closed_from`/`closed_to` value: RFC 3339, or a date (`2026-11-01`,
/// UTC) meaning the start of that day for `closed_from` and the end of it
/// for `closed_to` (so `closed_to = "2026-11-30"` includes the 30th).
pub fn parse_bound(field: &str, text: &str, end_of_day: bool) -> Result<UnixMs, ApiError> {
    if let Some(ms) = parse_rfc3339(text) {
        return Ok(ms);
    }
    let is_date = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
    if is_date && let Some(start) = parse_rfc3339(&format!("{text}T00:00:00.000Z")) {
        return Ok(if end_of_day { start + DAY_MS } else { start });
    }
    Err(invalid(
        &format!("audience.{field}"),
        format!("audience.{field} {text:?} is neither an RFC 3339 time (2026-11-01T00:00:00Z) nor a date (2026-11-01)"),
    ))
}

/// Meta's template name form.
fn is_template_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TEMPLATE_NAME
        && name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
}

/// A language code as Meta names them: `en`, `en_US`, `pt_BR`, `zh_CN`, `fil`.
fn is_language_code(code: &str) -> bool {
    let (language, region) = code.split_once('_').map_or((code, None), |(language, region)| (language, Some(region)));
    (2..=3).contains(&language.len())
        && language.bytes().all(|byte| byte.is_ascii_lowercase())
        && region.is_none_or(|region| {
            (2..=4).contains(&region.len()) && region.bytes().all(|byte| byte.is_ascii_alphanumeric())
        })
}

/// A WhatsApp id: digits, as Meta gives them (country code and number).
fn is_wa_id(wa_id: &str) -> bool {
    (5..=20).contains(&wa_id.len()) && wa_id.bytes().all(|byte| byte.is_ascii_digit())
}

/// Reads and checks a create request: JSON of [`CreateRequest`]'s shape
/// (an unknown or mistyped field is `invalid_field` naming its path), a
/// name, a template Meta would take (name, language code, text parameters
/// without new lines, tabs or more than four spaces in a row, as Meta
/// requires of body parameters), an audience with at least one criterion,
/// valid WhatsApp ids and times.
pub fn parse_request(body: &Value) -> Result<(CreateRequest, Filters), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a JSON object: {name, template: {name, language, params}, audience: {…}}",
        ));
    }
    let request: CreateRequest = serde_path_to_error::deserialize(body).map_err(|error| {
        let field = error.path().to_string();
        invalid(&field, format!("the broadcast is refused: {field}: {}", error.inner()))
    })?;
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid("name", format!("`name` must have 1 to {MAX_NAME_CHARS} characters")));
    }
    let template = &request.template;
    if !is_template_name(&template.name) {
        return Err(invalid(
            "template.name",
            format!(
                "template.name {:?} is not a WhatsApp template name (lowercase letters, digits and underscores, as approved in WhatsApp Manager)",
                template.name
            ),
        ));
    }
    if !is_language_code(&template.language) {
        return Err(invalid(
            "template.language",
            format!("template.language {:?} is not a language code like en, en_US or pt_BR", template.language),
        ));
    }
    if template.params.len() > MAX_PARAMS {
        return Err(invalid("template.params", format!("a template takes at most {MAX_PARAMS} parameters")));
    }
    for (index, param) in template.params.iter().enumerate() {
        let field = format!("template.params[{index}]");
        if param.trim().is_empty() {
            return Err(invalid(&field, format!("{field} is empty: Meta refuses empty parameters")));
        }
        if param.chars().count() > MAX_PARAM_CHARS {
            return Err(invalid(&field, format!("{field} is longer than {MAX_PARAM_CHARS} characters")));
        }
        if param.contains(['\n', '\t']) || param.contains("     ") {
            return Err(invalid(
                &field,
                format!(
                    "{field} has a new line, a tab or more than four spaces in a row, which Meta refuses in body parameters"
                ),
            ));
        }
    }
    if let Some(number) = &request.phone_number_id
        && !protocol::webhook::is_phone_number_id(number)
    {
        return Err(invalid("phone_number_id", format!("phone_number_id {number:?} is not Meta's (digits only)")));
    }
    let audience = &request.audience;
    let contacts = match &audience.contacts {
        None => None,
        Some(contacts) => {
            if contacts.is_empty() {
                return Err(invalid("audience.contacts", "audience.contacts is empty: name at least one WhatsApp id"));
            }
            if contacts.len() > MAX_AUDIENCE {
                return Err(invalid(
                    "audience.contacts",
                    format!("audience.contacts has {} ids; a broadcast reaches at most {MAX_AUDIENCE}", contacts.len()),
                ));
            }
            if let Some((index, bad)) = contacts.iter().enumerate().find(|(_, wa_id)| !is_wa_id(wa_id)) {
                return Err(invalid(
                    &format!("audience.contacts[{index}]"),
                    format!("audience.contacts[{index}] {bad:?} is not a WhatsApp id (digits with the country code)"),
                ));
            }
            let mut seen = BTreeSet::new();
            Some(contacts.iter().filter(|wa_id| seen.insert(wa_id.as_str())).cloned().collect())
        }
    };
    let non_empty = |field: &str, value: &Option<String>| -> Result<Option<String>, ApiError> {
        match value.as_deref().map(str::trim) {
            Some("") => Err(invalid(&format!("audience.{field}"), format!("audience.{field} is empty"))),
            other => Ok(other.map(str::to_owned)),
        }
    };
    let filters = Filters {
        contacts,
        outcome: non_empty("outcome", &audience.outcome)?,
        team: non_empty("team", &audience.team)?,
        closed_from: audience.closed_from.as_deref().map(|text| parse_bound("closed_from", text, false)).transpose()?,
        closed_to: audience.closed_to.as_deref().map(|text| parse_bound("closed_to", text, true)).transpose()?,
    };
    if filters.contacts.is_none() && !filters.on_conversations() {
        return Err(invalid(
            "audience",
            "the audience is empty: give contacts, or filters on closed conversations (outcome, team, closed_from, closed_to)",
        ));
    }
    if let (Some(from), Some(to)) = (filters.closed_from, filters.closed_to)
        && from >= to
    {
        return Err(invalid("audience.closed_to", "audience.closed_to must be after audience.closed_from"));
    }
    Ok((request, filters))
}

/// Who a broadcast reaches and from which number, in order: the explicit
/// contacts in the order given, else by WhatsApp id. With filters on
/// conversations, a contact is in when one of its closed conversations
/// matches all of them (outcome, team, closing time); with `contacts` too,
/// only those contacts (the criteria intersect). Each recipient's number is
/// `number` (the request's), else that of its latest conversation, else
/// `default_number` (the first `[[numbers]]`).
///
/// `scope` is a team-scoped manager's teams: such a manager broadcasts
/// only to an audience filtered by one of its teams (`forbidden` else).
pub fn resolve_audience(
    filters: &Filters,
    conversations: &[AudienceConversation],
    scope: Option<&[String]>,
    number: Option<&str>,
    default_number: Option<&str>,
) -> Result<Vec<(String, String)>, ApiError> {
    if let Some(teams) = scope {
        match &filters.team {
            Some(team) if teams.contains(team) => {}
            Some(team) => {
                return Err(ApiError::forbidden(format!(
                    "you manage {}: a broadcast to team {team:?}'s customers is not yours to send",
                    teams.join(", ")
                )));
            }
            None => {
                return Err(ApiError::forbidden(format!(
                    "you manage {}: filter the audience by one of your teams (audience.team)",
                    teams.join(", ")
                )));
            }
        }
    }
    // Each contact's latest conversation's number.
    let mut latest: HashMap<&str, (UnixMs, &str)> = HashMap::new();
    for conversation in conversations {
        let entry = latest.entry(conversation.contact.wa_id.as_str()).or_insert((i64::MIN, ""));
        if conversation.opened_at >= entry.0 {
            *entry = (conversation.opened_at, conversation.phone_number_id.as_str());
        }
    }
    let wa_ids: Vec<String> = if filters.on_conversations() {
        let matching: BTreeSet<&str> = conversations
            .iter()
            .filter(|conversation| filters.matches(conversation))
            .map(|conversation| conversation.contact.wa_id.as_str())
            .collect();
        match &filters.contacts {
            Some(contacts) => contacts.iter().filter(|wa_id| matching.contains(wa_id.as_str())).cloned().collect(),
            None => matching.into_iter().map(str::to_owned).collect(),
        }
    } else {
        filters.contacts.clone().unwrap_or_default()
    };
    if wa_ids.is_empty() {
        return Err(invalid("audience", "the audience is empty: no contact matches these filters"));
    }
    if wa_ids.len() > MAX_AUDIENCE {
        return Err(invalid(
            "audience",
            format!(
                "the audience has {} contacts; a broadcast reaches at most {MAX_AUDIENCE}: narrow it",
                wa_ids.len()
            ),
        ));
    }
    let mut numberless = Vec::new();
    let mut recipients = Vec::with_capacity(wa_ids.len());
    for wa_id in wa_ids {
        let from = number.or_else(|| latest.get(wa_id.as_str()).map(|(_, number)| *number)).or(default_number);
        match from {
            Some(from) => recipients.push((wa_id, from.to_owned())),
            None => numberless.push(wa_id),
        }
    }
    if !numberless.is_empty() {
        let shown: Vec<&str> = numberless.iter().take(5).map(String::as_str).collect();
        return Err(invalid(
            "phone_number_id",
            format!(
                "{} contacts ({}…) have no conversation to take the business number from and no [[numbers]] is configured: give phone_number_id",
                numberless.len(),
                shown.join(", ")
            ),
        ));
    }
    Ok(recipients)
}

/// What Meta's answer to one broadcast send means.
#[derive(Clone, Debug, PartialEq)]
pub enum SendOutcome {
    Sent {
        message_id: String,
    },
    /// This recipient failed (`error`: a stable string); the broadcast goes on.
    Failed {
        error: String,
    },
    /// No answer (the connection failed while Meta may have had it): it may
    /// have gone out, so it is never sent again.
    Unknown,
    /// Meta throttled (130429, 80007, 4, HTTP 429): not sent; the recipient
    /// is pending again and the broadcast waits.
    Throttled,
    /// The number reached its messaging or spam limit (131048, 368,
    /// 131031): not sent; the broadcast pauses with `reason`.
    Limit {
        reason: String,
    },
    /// Meta refused the template (132xxx): every send would fail alike; the
    /// broadcast stops.
    TemplateRefused {
        error: String,
    },
}

/// Maps Meta's answer ([`actors::shared::Outbound::send_once`]'s result,
/// Meta's code in `detail.meta_code`) to what the broadcast does.
pub fn classify(result: &Result<SendMessageResponse, ApiError>) -> SendOutcome {
    let error = match result {
        Ok(response) => {
            return match response.messages.first() {
                Some(message) => SendOutcome::Sent { message_id: message.id.clone() },
                None => SendOutcome::Unknown,
            };
        }
        Err(error) => error,
    };
    let meta_code = error.detail.as_ref().and_then(|detail| detail.get("meta_code")).and_then(Value::as_i64);
    match meta_code {
        None => match error.code {
            ErrorCode::RateLimited => SendOutcome::Throttled,
            // No answer from Meta, or one that is not Meta's: the request
            // may have been taken.
            ErrorCode::UpstreamError | ErrorCode::Unavailable => SendOutcome::Unknown,
            _ => SendOutcome::Failed { error: "invalid_request".to_owned() },
        },
        Some(code) => classify_meta_code(code),
    }
}

/// Meta's error code → what the broadcast does, with a stable error string.
pub fn classify_meta_code(code: i64) -> SendOutcome {
    let failed = |error: &str| SendOutcome::Failed { error: error.to_owned() };
    let limit = |reason: &str| SendOutcome::Limit { reason: reason.to_owned() };
    match code {
        130429 | 80007 | 4 => SendOutcome::Throttled,
        131048 => limit("spam_rate_limit"),
        368 => limit("temporarily_blocked"),
        131031 => limit("account_locked"),
        131056 => failed("pair_rate_limit"),
        131049 => failed("marketing_limit"),
        131050 => failed("stopped_marketing"),
        131026 => failed("undeliverable"),
        131047 => failed("re_engagement"),
        131051 => failed("unsupported_message"),
        100 | 131008 | 131009 => failed("invalid_parameter"),
        132000..=132999 => SendOutcome::TemplateRefused { error: format!("template_rejected_{code}") },
        other => failed(&format!("meta_{other}")),
    }
}

/// After `consecutive` throttled answers, the wait before the next send:
/// 1 s, doubling, at most a minute.
pub fn throttle_wait_ms(consecutive: u32) -> i64 {
    1000i64.saturating_mul(1i64 << consecutive.saturating_sub(1).min(6)).min(60_000)
}

/// The send budget: at most `per_second` sends to the Graph API in any
/// second (a sliding window over the last sends' times, on the engine's
/// clock). Agents' sends are recorded as they go and never wait
/// ([`Pacer::record`]); a broadcast sends only what [`Pacer::allowance`]
/// leaves, so agents come first and the two together stay within the rate.
#[derive(Debug)]
pub struct Pacer {
    per_second: usize,
    sends: VecDeque<UnixMs>,
}

impl Pacer {
    pub fn new(per_second: u32) -> Pacer {
        let per_second = per_second.max(1) as usize;
        Pacer { per_second, sends: VecDeque::with_capacity(per_second) }
    }

    fn prune(&mut self, now: UnixMs) {
        while self.sends.front().is_some_and(|sent| now - sent >= 1000) {
            self.sends.pop_front();
        }
        while self.sends.len() > self.per_second {
            self.sends.pop_front();
        }
    }

    /// A send that goes whatever the budget (an agent's reply).
    pub fn record(&mut self, now: UnixMs) {
        self.prune(now);
        self.sends.push_back(now);
        self.prune(now);
    }

    /// How many sends may start at `now`.
    pub fn allowance(&mut self, now: UnixMs) -> usize {
        self.prune(now);
        self.per_second.saturating_sub(self.sends.len())
    }

    /// Takes one send of the budget at `now`, if there is one.
    pub fn try_take(&mut self, now: UnixMs) -> bool {
        if self.allowance(now) == 0 {
            return false;
        }
        self.sends.push_back(now);
        true
    }
}

/// A broadcast as stored (`b/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BroadcastRecord {
    pub id: String,
    pub name: String,
    pub template: TemplateSpec,
    pub audience: AudienceSpec,
    pub created_by: String,
    pub created_at: UnixMs,
    pub state: BroadcastState,
    #[serde(default)]
    pub reason: Option<String>,
    pub total: u32,
    /// The counts by recipient state, written when it completes: a
    /// completed broadcast's recipients stay in the store, not in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_counts: Option<BTreeMap<String, u64>>,
}

/// One recipient as stored (`r/{id}/{index}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecipientRecord {
    pub wa_id: String,
    pub phone_number_id: String,
    pub state: RecipientState,
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// When it was last changed (sent, failed…), on the engine's clock.
    #[serde(default)]
    pub at: Option<UnixMs>,
}

pub fn broadcast_key(id: &str) -> String {
    format!("b/{id}")
}

pub fn recipient_key(id: &str, index: usize) -> String {
    format!("r/{id}/{index:06}")
}

/// The counts of a broadcast's recipients by state (every state named).
pub fn counts<'a>(states: impl IntoIterator<Item = &'a RecipientState>) -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<String, u64> = ["pending", "sending", "sent", "failed", "skipped", "unknown"]
        .into_iter()
        .map(|state| (state.to_owned(), 0))
        .collect();
    for state in states {
        *counts.entry(state.label().to_owned()).or_default() += 1;
    }
    counts
}

/// A count by state's name (0 when absent).
pub fn count(counts: &BTreeMap<String, u64>, state: &str) -> u64 {
    counts.get(state).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::model::{Contact, ConversationStatus};
    use serde_json::Map;

    fn conversation(wa_id: &str, team: &str, outcome: Option<&str>, closed_at: Option<UnixMs>) -> AudienceConversation {
        let mut fields = Map::new();
        if let Some(outcome) = outcome {
            fields.insert("outcome".into(), json!(outcome));
        }
        AudienceConversation {
            id: format!("c-{wa_id}-{team}"),
            contact: serde_json::from_value::<Contact>(json!({"wa_id": wa_id, "name": "x"})).unwrap(),
            phone_number_id: "111".into(),
            status: if closed_at.is_some() { ConversationStatus::Closed } else { ConversationStatus::Assigned },
            team: Some(team.into()),
            fields,
            opened_at: closed_at.unwrap_or(5) - 1,
            closed_at,
        }
    }

    fn parse(body: Value) -> Result<(CreateRequest, Filters), ApiError> {
        parse_request(&body)
    }

    fn request(audience: Value) -> Value {
        json!({"name": "n", "template": {"name": "offer_1", "language": "en_US", "params": ["A"]}, "audience": audience})
    }

    #[test]
    fn requests_are_checked_with_a_sentence_and_the_field() {
        let cases: Vec<(Value, &str)> = vec![
            (json!([]), "bad_request"),
            (
                json!({"name": "n", "template": {"name": "x", "language": "en"}, "audience": {"contacts": ["919800000001"]}, "extra": 1}),
                "extra",
            ),
            (
                json!({"name": "n", "template": {"name": "x", "language": "en", "colour": 1}, "audience": {"contacts": ["919800000001"]}}),
                "template",
            ),
            (request(json!({})), "audience"),
            (request(json!({"contacts": []})), "audience.contacts"),
            (request(json!({"contacts": ["12ab"]})), "audience.contacts[0]"),
            (request(json!({"closed_from": "yesterday"})), "audience.closed_from"),
            (request(json!({"closed_from": "2026-11-02", "closed_to": "2026-11-01"})), "audience.closed_to"),
            (request(json!({"outcome": " "})), "audience.outcome"),
            (
                json!({"name": "n", "template": {"name": "Offer!", "language": "en"}, "audience": {"team": "s"}}),
                "template.name",
            ),
            (
                json!({"name": "n", "template": {"name": "offer", "language": "english"}, "audience": {"team": "s"}}),
                "template.language",
            ),
            (
                json!({"name": "n", "template": {"name": "offer", "language": "en", "params": ["a\nb"]}, "audience": {"team": "s"}}),
                "template.params[0]",
            ),
            (json!({"name": "", "template": {"name": "offer", "language": "en"}, "audience": {"team": "s"}}), "name"),
        ];
        for (body, field) in cases {
            let error = parse(body.clone()).expect_err(&body.to_string());
            if field == "bad_request" {
                assert_eq!(error.code, ErrorCode::BadRequest);
                continue;
            }
            assert_eq!(error.code, ErrorCode::InvalidField, "{body}: {error:?}");
            let named =
                error.detail.as_ref().and_then(|detail| detail["field"].as_str()).unwrap_or_default().to_owned();
            assert!(named.starts_with(field), "{body}: field {named:?}, wanted {field:?} ({})", error.message);
            assert!(!error.message.is_empty());
        }
        let (_, filters) =
            parse(request(json!({"contacts": ["919800000001", "919800000001", "919800000002"]}))).unwrap();
        assert_eq!(filters.contacts.unwrap(), vec!["919800000001", "919800000002"], "de-duplicated, in order");
    }

    #[test]
    fn dates_cover_whole_days() {
        let from = parse_bound("closed_from", "2026-11-01", false).unwrap();
        let to = parse_bound("closed_to", "2026-11-01", true).unwrap();
        assert_eq!(to - from, DAY_MS);
        assert_eq!(parse_bound("closed_from", "2026-11-01T10:00:00Z", false).unwrap(), from + 10 * 3_600_000);
    }

    #[test]
    fn filters_intersect_on_one_closed_conversation_and_contacts() {
        let conversations = vec![
            conversation("91001", "sales", Some("closed_won"), Some(1_000)),
            conversation("91002", "sales", Some("follow_up"), Some(1_000)),
            conversation("91003", "support", Some("closed_won"), Some(1_000)),
            conversation("91004", "sales", Some("closed_won"), Some(9_000)),
            conversation("91005", "sales", None, None),
        ];
        let filters = |value: Value| parse(request(value)).unwrap().1;
        let wa_ids = |filters: &Filters| -> Vec<String> {
            resolve_audience(filters, &conversations, None, None, None)
                .unwrap()
                .into_iter()
                .map(|(wa_id, _)| wa_id)
                .collect()
        };
        assert_eq!(wa_ids(&filters(json!({"outcome": "closed_won"}))), ["91001", "91003", "91004"]);
        assert_eq!(wa_ids(&filters(json!({"outcome": "closed_won", "team": "sales"}))), ["91001", "91004"]);
        let mut window = filters(json!({"outcome": "closed_won", "team": "sales"}));
        window.closed_to = Some(5_000);
        assert_eq!(wa_ids(&window), ["91001"]);
        let both = filters(json!({"team": "sales", "contacts": ["91004", "91003", "91002"]}));
        assert_eq!(wa_ids(&both), ["91004", "91002"], "the contacts given, in their order, that match");
        let explicit = filters(json!({"contacts": ["91009"]}));
        let error = resolve_audience(&explicit, &conversations, None, None, None).unwrap_err();
        assert!(error.message.contains("phone_number_id"), "{error:?}");
        let numbered = resolve_audience(&explicit, &conversations, None, None, Some("222")).unwrap();
        assert_eq!(numbered, [("91009".to_owned(), "222".to_owned())]);
        let from_conversation =
            resolve_audience(&filters(json!({"contacts": ["91001"]})), &conversations, None, None, None);
        assert_eq!(from_conversation.unwrap(), [("91001".to_owned(), "111".to_owned())]);
        let none =
            resolve_audience(&filters(json!({"outcome": "lost"})), &conversations, None, None, None).unwrap_err();
        assert_eq!(none.code, ErrorCode::InvalidField);
    }

    #[test]
    fn a_team_scoped_manager_broadcasts_only_to_its_teams() {
        let conversations = vec![conversation("91001", "sales", Some("closed_won"), Some(1_000))];
        let scope = vec!["sales".to_owned()];
        let filters = |value: Value| parse(request(value)).unwrap().1;
        let own = resolve_audience(&filters(json!({"team": "sales"})), &conversations, Some(&scope), None, None);
        assert_eq!(own.unwrap().len(), 1);
        for other in [json!({"team": "support"}), json!({"contacts": ["91001"]})] {
            let refused = resolve_audience(&filters(other), &conversations, Some(&scope), Some("1"), None).unwrap_err();
            assert_eq!(refused.code, ErrorCode::Forbidden);
        }
    }

    #[test]
    fn meta_errors_map_to_what_the_broadcast_does() {
        let refusal = |code: i64| {
            let error = ApiError::new(ErrorCode::UpstreamError, "x").with_detail(json!({"meta_code": code}));
            classify(&Err(error))
        };
        assert_eq!(refusal(130429), SendOutcome::Throttled);
        assert_eq!(refusal(131048), SendOutcome::Limit { reason: "spam_rate_limit".into() });
        assert_eq!(refusal(368), SendOutcome::Limit { reason: "temporarily_blocked".into() });
        assert_eq!(refusal(131056), SendOutcome::Failed { error: "pair_rate_limit".into() });
        assert_eq!(refusal(131026), SendOutcome::Failed { error: "undeliverable".into() });
        assert_eq!(refusal(132001), SendOutcome::TemplateRefused { error: "template_rejected_132001".into() });
        assert_eq!(refusal(555), SendOutcome::Failed { error: "meta_555".into() });
        let lost = ApiError::new(ErrorCode::UpstreamError, "could not reach the WhatsApp Cloud API: timed out");
        assert_eq!(classify(&Err(lost)), SendOutcome::Unknown);
        assert_eq!(classify(&Err(ApiError::new(ErrorCode::RateLimited, "slow"))), SendOutcome::Throttled);
        assert_eq!(throttle_wait_ms(1), 1000);
        assert_eq!(throttle_wait_ms(3), 4000);
        assert_eq!(throttle_wait_ms(30), 60_000);
    }

    #[test]
    fn the_pacer_allows_per_second_sends_in_any_second_agents_first() {
        let mut pacer = Pacer::new(3);
        assert!(pacer.try_take(0) && pacer.try_take(0));
        pacer.record(10); // an agent's reply: goes, and counts
        assert!(!pacer.try_take(500), "three in the last second");
        assert!(pacer.try_take(1000), "the sends at 0 left the window");
        assert_eq!(pacer.allowance(1000), 1, "the agent's at 10 is still in it");
        assert_eq!(pacer.allowance(1010), 2);
        // Agents' replies beyond the budget still go; the broadcast waits.
        for at in [1500, 1501, 1502, 1503] {
            pacer.record(at);
        }
        assert_eq!(pacer.allowance(2400), 0);
        assert_eq!(pacer.allowance(2503), 3);
        // Any N+1 sends taken span at least a second.
        let mut pacer = Pacer::new(80);
        let mut taken = Vec::new();
        for now in (0..5000).step_by(7) {
            while pacer.try_take(now) {
                taken.push(now);
            }
        }
        assert!(taken.len() >= 5 * 80 - 80);
        assert!(taken.windows(81).all(|window| window[80] - window[0] >= 1000));
    }
}
