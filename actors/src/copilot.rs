//! The co-pilot's built-in engine (PROTOCOL §11, docs/copilot.md), pure:
//! a team's `[teams.copilot]` flows, the checks the configuration goes
//! through, and the state machine that walks a conversation through a flow.
//!
//! The machine reads the flow, the conversation's [`CopilotState`] (stored
//! on its record, so a start resumes it at the same question), one input —
//! the customer's message (its text or an interactive reply's id), or the
//! co-pilot's deadline — and what it needs to know of the world
//! ([`Context`]: the time, when the team opens if it is closed, the
//! conversation's source, whether the free entry window is open). It
//! returns a [`Step`]: the state after it, what to say (one message per
//! step: a text, reply buttons or a list, or the nurture templates), the
//! answers and fields it took, whether the lead just qualified, and how it
//! ends when it does (hand over, or close). `decide.rs` turns a step into
//! records, events and effects; nothing here touches a store or a clock.
//!
//! The model hook ([`CopilotModel`]) may interpret free text the built-in
//! rules could not; whatever it returns goes through [`check_interpretation`]
//! first, and the built-in result stands on any refusal.

use std::future::Future;
use std::pin::Pin;

use protocol::graph::Choice;
use protocol::model::{Source, SourceKind};
use protocol::time::UnixMs;
use protocol::ws::TemplateRequest;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use storage::CopilotState;

use crate::settings::{DispositionSpec, FieldKind};

/// `[teams.copilot]`: a team's co-pilot.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CopilotSpec {
    /// `[[teams.copilot.flows]]`, in order: a new conversation takes the
    /// first whose `sources` match it; none matching, people take it.
    #[serde(default)]
    pub flows: Vec<FlowSpec>,
    /// What a customer writes to ask for a person (compared as whole
    /// phrases, ignoring case, accents and punctuation).
    #[serde(default = "default_handoff_phrases")]
    pub handoff_phrases: Vec<String>,
    /// What a hand-over does while the team is closed (its `hours`).
    #[serde(default)]
    pub office_hours: OfficeHours,
    /// Said when a hand-over waits for the team to open
    /// (`office_hours = "wait"`); `{opens}` is replaced by the opening time
    /// in the team's time zone.
    #[serde(default = "default_closed_message")]
    pub closed_message: String,
}

fn default_handoff_phrases() -> Vec<String> {
    [
        "talk to a human",
        "talk to a person",
        "talk to someone",
        "talk to an agent",
        "speak to a human",
        "speak to a person",
        "speak to someone",
        "speak to an agent",
        "real person",
        "human please",
        "customer care",
        "representative",
        "call me",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn default_closed_message() -> String {
    "Thank you! Our team is away right now; a person will write to you when we open ({opens}).".to_owned()
}

/// `office_hours`: `queue` (hand over at once; the team's queue keeps it
/// until someone takes it) or `wait` (keep the conversation with the
/// co-pilot, say when the team opens, hand over then).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OfficeHours {
    #[default]
    Queue,
    Wait,
}

/// What happens to a lead that answered every question without reaching
/// `qualify_score`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unqualified {
    /// Hand it to people all the same (reason `completed`, not qualified).
    #[default]
    Handoff,
    /// Close it with `not_qualified_fields`.
    Close,
    /// Send `nurture_templates` (only inside the free entry window), then
    /// close it as `close` does.
    Nurture,
}

/// `[[teams.copilot.flows]]`: one qualification flow.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    pub id: String,
    /// Which new conversations take it: `paid`, `organic`, `referral`,
    /// `ad:{source_id}` (one ad), `ref:{code}` (one referral code). Empty:
    /// every conversation.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Said before the first question, in the same message.
    #[serde(default)]
    pub greeting: Option<String>,
    pub questions: Vec<QuestionSpec>,
    /// The score that makes the lead qualified: it is handed over the moment
    /// its answers reach it.
    pub qualify_score: i64,
    /// Hand over when the flow has run this long without ending.
    #[serde(default)]
    pub handoff_after_s: Option<u64>,
    /// Invalid answers to one question (each re-asks it) before handing over.
    #[serde(default = "default_max_unanswered")]
    pub max_unanswered: u32,
    #[serde(default)]
    pub unqualified: Unqualified,
    /// The fields a closed unqualified lead gets (its outcome): with the
    /// answers, they must hold every `required_on_close` field.
    #[serde(default)]
    pub not_qualified_fields: Map<String, Value>,
    /// `unqualified = "nurture"`: the templates sent before closing.
    #[serde(default)]
    pub nurture_templates: Vec<TemplateRequest>,
    /// Said when handing over (none: nothing is said).
    #[serde(default)]
    pub handoff_message: Option<String>,
    /// Said before a question asked again after an invalid answer.
    #[serde(default = "default_retry_message")]
    pub retry_message: String,
}

fn default_max_unanswered() -> u32 {
    2
}

fn default_retry_message() -> String {
    "Sorry, I did not get that.".to_owned()
}

/// One question of a flow.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionSpec {
    /// Letters, digits, `_` and `-`.
    pub id: String,
    pub text: String,
    /// The disposition field the answer fills.
    pub field: String,
    /// How the summary names the answer (default: the field's label, else its key).
    #[serde(default)]
    pub label: Option<String>,
    pub kind: QuestionKind,
    /// `options`: the choices (≤ 3 as reply buttons, else a list of ≤ 10).
    #[serde(default)]
    pub options: Vec<OptionSpec>,
    /// `number`: the bounds of a valid answer.
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// `text`: a regular expression a valid answer matches.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Points a valid answer adds (`options`: each option's own `score`).
    #[serde(default)]
    pub score: i64,
    /// The list's button (more than 3 options).
    #[serde(default = "default_list_button")]
    pub list_button: String,
}

fn default_list_button() -> String {
    "Choose".to_owned()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuestionKind {
    #[default]
    Options,
    Number,
    Date,
    Text,
}

/// One choice of an `options` question.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OptionSpec {
    pub id: String,
    pub title: String,
    /// What the field takes (default: the title).
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub score: i64,
    /// A list row's description.
    #[serde(default)]
    pub description: Option<String>,
}

impl OptionSpec {
    fn value(&self) -> Value {
        self.value.clone().unwrap_or_else(|| Value::String(self.title.clone()))
    }
}

// ---------------------------------------------------------------------------
// Configuration checks
// ---------------------------------------------------------------------------

/// Checks a team's co-pilot against its disposition schema. The error's key
/// is relative to `[teams.copilot]` (`flows[0].questions[1].field`).
pub fn check(spec: &CopilotSpec, schema: &[DispositionSpec]) -> Result<(), (String, String)> {
    let fail = |key: String, problem: String| Err((key, problem));
    if spec.handoff_phrases.iter().any(|phrase| normalize(phrase).is_empty()) {
        return fail("handoff_phrases".into(), "a phrase must hold a letter or a digit".into());
    }
    let mut flow_ids = std::collections::HashSet::new();
    for (index, flow) in spec.flows.iter().enumerate() {
        let key = |name: &str| format!("flows[{index}].{name}");
        if !is_id(&flow.id) {
            return fail(key("id"), "must be letters, digits, `_` or `-`".into());
        }
        if !flow_ids.insert(flow.id.as_str()) {
            return fail(key("id"), format!("flow {:?} is defined twice", flow.id));
        }
        for source in &flow.sources {
            let known = matches!(source.as_str(), "paid" | "organic" | "referral")
                || source.strip_prefix("ad:").is_some_and(|id| !id.is_empty())
                || source.strip_prefix("ref:").is_some_and(|code| !code.is_empty());
            if !known {
                return fail(
                    key("sources"),
                    format!("{source:?} is not `paid`, `organic`, `referral`, `ad:{{source_id}}` or `ref:{{code}}`"),
                );
            }
        }
        if flow.questions.is_empty() {
            return fail(key("questions"), "a flow needs at least one question".into());
        }
        if flow.max_unanswered == 0 {
            return fail(key("max_unanswered"), "must be at least 1".into());
        }
        if flow.handoff_after_s == Some(0) {
            return fail(key("handoff_after_s"), "must be greater than 0 (or left out)".into());
        }
        let mut question_ids = std::collections::HashSet::new();
        for (number, question) in flow.questions.iter().enumerate() {
            let key = |name: &str| format!("flows[{index}].questions[{number}].{name}");
            if !is_id(&question.id) {
                return fail(key("id"), "must be letters, digits, `_` or `-`".into());
            }
            if !question_ids.insert(question.id.as_str()) {
                return fail(key("id"), format!("question {:?} is asked twice", question.id));
            }
            if question.text.trim().is_empty() {
                return fail(key("text"), "must not be empty".into());
            }
            if question.text.chars().count() > protocol::graph::MAX_INTERACTIVE_BODY {
                return fail(key("text"), "must be at most 1024 characters (WhatsApp's limit)".into());
            }
            check_question(question, schema).map_err(|(name, problem)| (key(&name), problem))?;
        }
        if flow.unqualified != Unqualified::Handoff {
            let mut set: Vec<&str> = flow.questions.iter().map(|question| question.field.as_str()).collect();
            set.extend(flow.not_qualified_fields.keys().map(String::as_str));
            if let Some(missing) =
                schema.iter().find(|spec| spec.required_on_close && !set.contains(&spec.key.as_str()))
            {
                return fail(
                    key("not_qualified_fields"),
                    format!(
                        "closing an unqualified lead needs the required field {:?}: set it here or ask for it",
                        missing.key
                    ),
                );
            }
            if let Err(error) = crate::rules::validate_fields(schema, &flow.not_qualified_fields) {
                return fail(key("not_qualified_fields"), error.message);
            }
        }
        if flow.unqualified == Unqualified::Nurture && flow.nurture_templates.is_empty() {
            return fail(key("nurture_templates"), "`unqualified = \"nurture\"` needs at least one template".into());
        }
        if let Some(bad) = flow
            .nurture_templates
            .iter()
            .position(|template| template.name.trim().is_empty() || template.language.trim().is_empty())
        {
            return fail(
                key(&format!("nurture_templates[{bad}]")),
                "needs the template's `name` and `language`".into(),
            );
        }
    }
    Ok(())
}

/// One question against the schema: `(key inside the question, problem)`.
fn check_question(question: &QuestionSpec, schema: &[DispositionSpec]) -> Result<(), (String, String)> {
    let fail = |name: &str, problem: String| Err((name.to_owned(), problem));
    let Some(field) = schema.iter().find(|spec| spec.key == question.field) else {
        return fail("field", format!("{:?} is not a disposition field of this team", question.field));
    };
    let fits = match question.kind {
        QuestionKind::Options => matches!(field.kind, FieldKind::Enum | FieldKind::Text),
        QuestionKind::Number => matches!(field.kind, FieldKind::Number | FieldKind::Money),
        QuestionKind::Date => field.kind == FieldKind::Date,
        QuestionKind::Text => field.kind == FieldKind::Text,
    };
    if !fits {
        return fail(
            "kind",
            format!("a {:?} question cannot fill the {} field {:?}", question.kind, field.kind.name(), field.key),
        );
    }
    if question.kind != QuestionKind::Options && !question.options.is_empty() {
        return fail("options", "only an `options` question has options".into());
    }
    match question.kind {
        QuestionKind::Options => {
            if question.options.is_empty() {
                return fail("options", "an `options` question needs at least one option".into());
            }
            if question.options.len() > protocol::graph::MAX_LIST_ROWS {
                return fail("options", "at most 10 options (WhatsApp's list holds 10 rows)".into());
            }
            let mut ids = std::collections::HashSet::new();
            for (number, option) in question.options.iter().enumerate() {
                let key = |name: &str| format!("options[{number}].{name}");
                if !is_id(&option.id) {
                    return fail(&key("id"), "must be letters, digits, `_` or `-`".into());
                }
                if !ids.insert(option.id.as_str()) {
                    return fail(&key("id"), format!("option {:?} is offered twice", option.id));
                }
                if choice_id(&question.id, &option.id).len() > protocol::graph::MAX_CHOICE_ID {
                    return fail(&key("id"), "the question's and the option's ids are too long together".into());
                }
                if option.title.trim().is_empty() {
                    return fail(&key("title"), "must not be empty".into());
                }
                let limit = if question.options.len() <= protocol::graph::MAX_BUTTONS {
                    protocol::graph::MAX_BUTTON_TITLE
                } else {
                    protocol::graph::MAX_ROW_TITLE
                };
                if option.title.chars().count() > limit {
                    return fail(&key("title"), format!("must be at most {limit} characters (WhatsApp's limit here)"));
                }
                let mut value = Map::new();
                value.insert(field.key.clone(), option.value());
                if let Err(error) = crate::rules::validate_fields(std::slice::from_ref(field), &value) {
                    return fail(&key("value"), error.message);
                }
            }
        }
        QuestionKind::Number => {
            if let (Some(min), Some(max)) = (question.min, question.max)
                && min > max
            {
                return fail("max", format!("{max} is below `min` ({min})"));
            }
        }
        QuestionKind::Date => {}
        QuestionKind::Text => {
            if let Some(pattern) = &question.pattern
                && let Err(error) = regex::Regex::new(pattern)
            {
                return fail("pattern", format!("not a regular expression: {error}"));
            }
        }
    }
    Ok(())
}

fn is_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The id of an option's reply button or list row: `cp:{question}:{option}`,
/// so a tap on an earlier question's button is not read as an answer to
/// the current one.
pub fn choice_id(question: &str, option: &str) -> String {
    format!("cp:{question}:{option}")
}

// ---------------------------------------------------------------------------
// Choosing a flow
// ---------------------------------------------------------------------------

/// The flow a new conversation from `source` takes: the first whose
/// `sources` match (none: every conversation).
pub fn select_flow<'a>(spec: &'a CopilotSpec, source: &Source) -> Option<&'a FlowSpec> {
    spec.flows
        .iter()
        .find(|flow| flow.sources.is_empty() || flow.sources.iter().any(|wanted| source_matches(wanted, source)))
}

fn source_matches(wanted: &str, source: &Source) -> bool {
    match wanted {
        "paid" => source.kind == SourceKind::Paid,
        "organic" => source.kind == SourceKind::Organic,
        "referral" => source.kind == SourceKind::Referral,
        _ => {
            if let Some(ad) = wanted.strip_prefix("ad:") {
                return source.kind == SourceKind::Paid && source.source_id.as_deref() == Some(ad);
            }
            if let Some(code) = wanted.strip_prefix("ref:") {
                return source.code.as_deref() == Some(code);
            }
            false
        }
    }
}

// ---------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------

/// What the machine knows of the world for one step.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub now: UnixMs,
    /// When the team opens next, while it is closed (`None`: open now).
    pub opens_at: Option<UnixMs>,
    /// The opening time as the customer reads it (the team's time zone),
    /// for `closed_message`.
    pub opens_label: Option<&'a str>,
    pub source: &'a Source,
    /// Whether the 72-hour free entry window is open (nurture templates are
    /// sent only then).
    pub free_entry_open: bool,
    /// The team's disposition schema (labels for the summary).
    pub schema: &'a [DispositionSpec],
}

/// One input of the machine.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// The customer wrote: its text (a reply's title included) and, for a
    /// reply button or list row, the reply's id; `model` is the model
    /// hook's checked reading of the text ([`check_interpretation`]), used
    /// only where the built-in rules find no answer.
    Message { text: Option<&'a str>, reply_id: Option<&'a str>, model: Option<&'a ModelInput> },
    /// The co-pilot's deadline (`clocks.copilot_at`) came due.
    Deadline,
}

/// What the co-pilot says in a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Say {
    Text(String),
    /// Reply buttons (≤ 3) or a list.
    Choices {
        body: String,
        choices: Vec<Choice>,
        list_button: String,
    },
    Template(TemplateRequest),
}

/// A valid answer taken in a step.
#[derive(Clone, Debug, PartialEq)]
pub struct Answered {
    pub question: String,
    pub field: String,
    pub value: Value,
    /// The lead's score after it.
    pub score: i64,
}

/// How the co-pilot ends.
#[derive(Clone, Debug, PartialEq)]
pub enum End {
    /// To people: `reason` (`qualified`, `asked_for_person`, `timeout`,
    /// `unanswered`, `completed`) and the summary the agent reads.
    Handoff { reason: String, summary: String, qualified: bool },
    /// Closed as not qualified: `reason` (`not_qualified`, `nurtured`) and
    /// the outcome fields.
    Close { reason: String, fields: Map<String, Value> },
}

/// What one input did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    pub state: CopilotState,
    pub say: Vec<Say>,
    pub answered: Vec<Answered>,
    /// Fields the answers set (in order).
    pub fields: Map<String, Value>,
    /// The lead qualified in this step, with this score.
    pub qualified: Option<i64>,
    pub end: Option<End>,
    /// The co-pilot's next deadline (`None`: none).
    pub deadline: Option<UnixMs>,
    /// The input changed nothing (a stale deadline, a message while a
    /// hand-over waits for the team to open).
    pub ignored: bool,
}

/// Starts `flow` on a new conversation of `team`: the greeting with the
/// first question, and the `handoff_after_s` deadline.
pub fn start(flow: &FlowSpec, team: &str, context: &Context<'_>) -> Step {
    let state = CopilotState {
        flow: flow.id.clone(),
        team: team.to_owned(),
        started_at: context.now,
        ..CopilotState::default()
    };
    let deadline = timeout_of(flow, &state);
    let mut say = ask(flow, 0, flow.greeting.as_deref());
    if say.is_empty() {
        say.push(Say::Text(flow.greeting.clone().unwrap_or_default()));
    }
    Step { state, say, deadline, ..Step::default() }
}

fn timeout_of(flow: &FlowSpec, state: &CopilotState) -> Option<UnixMs> {
    flow.handoff_after_s.map(|seconds| state.started_at.saturating_add(seconds as i64 * 1000))
}

/// Question `index` of `flow`, with `before` in front of it.
fn ask(flow: &FlowSpec, index: usize, before: Option<&str>) -> Vec<Say> {
    let Some(question) = flow.questions.get(index) else { return Vec::new() };
    let body = match before.filter(|text| !text.trim().is_empty()) {
        Some(before) => format!("{before}\n\n{}", question.text),
        None => question.text.clone(),
    };
    let say = match question.kind {
        QuestionKind::Options => Say::Choices {
            body,
            choices: question
                .options
                .iter()
                .map(|option| Choice {
                    id: choice_id(&question.id, &option.id),
                    title: option.title.clone(),
                    description: option.description.clone(),
                })
                .collect(),
            list_button: question.list_button.clone(),
        },
        _ => Say::Text(body),
    };
    vec![say]
}

/// Takes one input on a conversation the co-pilot has (`state`, not ended).
pub fn step(
    spec: &CopilotSpec,
    flow: &FlowSpec,
    state: &CopilotState,
    input: Input<'_>,
    context: &Context<'_>,
) -> Step {
    let mut step = Step { state: state.clone(), deadline: current_deadline(flow, state, context), ..Step::default() };
    if state.ended.is_some() {
        step.ignored = true;
        return step;
    }
    match input {
        Input::Deadline => {
            match state.waiting.clone() {
                // The team opened (or the flow's time ran out while it waited).
                Some(reason) if context.opens_at.is_none() => hand_over(spec, flow, &mut step, &reason, context),
                Some(_) => step.ignored = true,
                None if timeout_of(flow, state).is_some_and(|due| due <= context.now) => {
                    hand_over(spec, flow, &mut step, "timeout", context)
                }
                None => step.ignored = true,
            }
            step
        }
        Input::Message { text, reply_id, model } => {
            if state.waiting.is_some() {
                step.ignored = true; // the agent will read it
                return step;
            }
            if text.is_some_and(|text| asks_for_person(&spec.handoff_phrases, text)) {
                hand_over(spec, flow, &mut step, "asked_for_person", context);
                return step;
            }
            let index = state.question as usize;
            let Some(question) = flow.questions.get(index) else {
                step.ignored = true;
                return step;
            };
            let built_in = interpret(question, text, reply_id);
            let answer = match (built_in, model) {
                (Some(answer), _) => Some(answer),
                (None, Some(ModelInput::Handoff)) => {
                    hand_over(spec, flow, &mut step, "asked_for_person", context);
                    return step;
                }
                (None, Some(ModelInput::Reply(id))) => interpret(question, None, Some(id)),
                (None, Some(ModelInput::Text(text))) => interpret(question, Some(text), None),
                (None, Some(ModelInput::AskAgain) | None) => None,
            };
            match answer {
                Some((value, points)) => take_answer(spec, flow, &mut step, question, value, points, context),
                None => {
                    step.state.unanswered += 1;
                    if step.state.unanswered >= flow.max_unanswered {
                        hand_over(spec, flow, &mut step, "unanswered", context);
                    } else {
                        step.say = ask(flow, index, Some(&flow.retry_message));
                    }
                }
            }
            step
        }
    }
}

/// The deadline `state` has armed: the team's opening while a hand-over
/// waits, else the flow's timeout.
fn current_deadline(flow: &FlowSpec, state: &CopilotState, context: &Context<'_>) -> Option<UnixMs> {
    if state.ended.is_some() {
        return None;
    }
    match &state.waiting {
        Some(_) => context.opens_at.or(Some(context.now)),
        None => timeout_of(flow, state),
    }
}

/// A valid answer: recorded, scored; then qualified (hand over), the next
/// question, or the end of the flow.
fn take_answer(
    spec: &CopilotSpec,
    flow: &FlowSpec,
    step: &mut Step,
    question: &QuestionSpec,
    value: Value,
    points: i64,
    context: &Context<'_>,
) {
    let state = &mut step.state;
    state.score += points;
    state.unanswered = 0;
    state.question += 1;
    state.answers.push((question.id.clone(), value.clone()));
    step.fields.insert(question.field.clone(), value.clone());
    step.answered.push(Answered {
        question: question.id.clone(),
        field: question.field.clone(),
        value,
        score: state.score,
    });
    if !state.qualified && state.score >= flow.qualify_score {
        state.qualified = true;
        step.qualified = Some(state.score);
        hand_over(spec, flow, step, "qualified", context);
        return;
    }
    let next = state.question as usize;
    if next < flow.questions.len() {
        step.say = ask(flow, next, None);
        return;
    }
    // Every question answered, not qualified.
    match flow.unqualified {
        Unqualified::Handoff => hand_over(spec, flow, step, "completed", context),
        Unqualified::Close | Unqualified::Nurture => {
            let nurture = flow.unqualified == Unqualified::Nurture && context.free_entry_open;
            if nurture {
                step.say = flow.nurture_templates.iter().cloned().map(Say::Template).collect();
            }
            let reason = if nurture { "nurtured" } else { "not_qualified" };
            step.state.ended = Some("closed".into());
            step.deadline = None;
            step.end = Some(End::Close { reason: reason.into(), fields: flow.not_qualified_fields.clone() });
        }
    }
}

/// Hands over for `reason`, or, while the team is closed and the co-pilot
/// waits for it (`office_hours = "wait"`), says when it opens and waits.
fn hand_over(spec: &CopilotSpec, flow: &FlowSpec, step: &mut Step, reason: &str, context: &Context<'_>) {
    if let (OfficeHours::Wait, Some(opens_at)) = (spec.office_hours, context.opens_at) {
        let first_wait = step.state.waiting.is_none();
        step.state.waiting = Some(reason.to_owned());
        step.deadline = Some(opens_at);
        if first_wait {
            let opens = context.opens_label.unwrap_or("soon");
            step.say = vec![Say::Text(spec.closed_message.replace("{opens}", opens))];
        }
        return;
    }
    step.state.waiting = None;
    step.state.ended = Some("handoff".into());
    step.deadline = None;
    if let Some(message) = &flow.handoff_message {
        step.say = vec![Say::Text(message.clone())];
    }
    let summary = summary(flow, &step.state, reason, context);
    step.end = Some(End::Handoff { reason: reason.to_owned(), summary, qualified: step.state.qualified });
}

/// The built-in summary: where the lead came from, its answers, its score
/// and why it is handed over. Deterministic (the model hook may replace it).
pub fn summary(flow: &FlowSpec, state: &CopilotState, reason: &str, context: &Context<'_>) -> String {
    let source = context.source;
    let mut text = match source.kind {
        SourceKind::Paid => match (&source.headline, &source.source_id) {
            (Some(headline), _) => format!("Paid lead from ad '{headline}'."),
            (None, Some(id)) => format!("Paid lead from ad {id}."),
            (None, None) => "Paid lead from an ad.".to_owned(),
        },
        SourceKind::Referral => match &source.code {
            Some(code) => format!("Referral lead (code {code})."),
            None => "Referral lead.".to_owned(),
        },
        SourceKind::Organic => "Organic lead.".to_owned(),
    };
    let answers: Vec<String> = state
        .answers
        .iter()
        .filter_map(|(question_id, value)| {
            let question = flow.questions.iter().find(|question| &question.id == question_id)?;
            let label = question
                .label
                .clone()
                .or_else(|| {
                    context.schema.iter().find(|spec| spec.key == question.field).and_then(|spec| spec.label.clone())
                })
                .unwrap_or_else(|| question.field.clone());
            Some(format!("{label}: {}", shown_answer(question, value)))
        })
        .collect();
    if !answers.is_empty() {
        text.push(' ');
        text.push_str(&answers.join("; "));
        text.push('.');
    }
    let score = format!("score {}/{}", state.score, flow.qualify_score);
    text.push_str(&if state.qualified {
        format!(" Qualified ({score}).")
    } else {
        format!(" Not qualified ({score}).")
    });
    let why = match reason {
        "asked_for_person" => Some("Asked for a person."),
        "timeout" => Some("The flow ran out of time."),
        "unanswered" => Some("Did not answer a question."),
        "completed" => Some("Answered every question."),
        _ => None,
    };
    if let Some(why) = why {
        text.push(' ');
        text.push_str(why);
    }
    text
}

/// An answer as a person reads it: an option's title, else the value.
fn shown_answer(question: &QuestionSpec, value: &Value) -> String {
    if let Some(option) = question.options.iter().find(|option| &option.value() == value) {
        return option.title.clone();
    }
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The built-in reading of an answer to `question`: its value and points.
pub fn interpret(question: &QuestionSpec, text: Option<&str>, reply_id: Option<&str>) -> Option<(Value, i64)> {
    match question.kind {
        QuestionKind::Options => {
            let chosen = reply_id
                .and_then(|id| question.options.iter().find(|option| choice_id(&question.id, &option.id) == id))
                .or_else(|| {
                    let said = normalize(text?);
                    if said.is_empty() {
                        return None;
                    }
                    question.options.iter().enumerate().find_map(|(index, option)| {
                        let value = match option.value() {
                            Value::String(text) => normalize(&text),
                            other => other.to_string(),
                        };
                        let matches = said == normalize(&option.title)
                            || said == normalize(&option.id)
                            || said == value
                            || said == (index + 1).to_string();
                        matches.then_some(option)
                    })
                })?;
            Some((chosen.value(), chosen.score))
        }
        QuestionKind::Number => {
            let number = first_number(text?)?;
            if question.min.is_some_and(|min| number < min) || question.max.is_some_and(|max| number > max) {
                return None;
            }
            let value = if number.fract() == 0.0 && number.abs() < 9e15 {
                Value::from(number as i64)
            } else {
                serde_json::Number::from_f64(number).map(Value::Number)?
            };
            Some((value, question.score))
        }
        QuestionKind::Date => Some((Value::String(parse_date(text?)?), question.score)),
        QuestionKind::Text => {
            let text = text?.trim();
            if text.is_empty() {
                return None;
            }
            if let Some(pattern) = &question.pattern {
                let regex = regex::Regex::new(pattern).ok()?;
                if !regex.is_match(text) {
                    return None;
                }
            }
            Some((Value::String(text.to_owned()), question.score))
        }
    }
}

/// The first number in `text` (`1,500`, `12.5`), if any.
fn first_number(text: &str) -> Option<f64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let negative = text[..start].ends_with('-');
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
        .filter(|c| *c != ',')
        .collect();
    let digits = digits.trim_end_matches('.');
    let number: f64 = digits.parse().ok()?;
    Some(if negative { -number } else { number })
}

/// A date as `YYYY-MM-DD`, `DD/MM/YYYY`, `DD-MM-YYYY` or `DD.MM.YYYY`.
fn parse_date(text: &str) -> Option<String> {
    let text = text.trim();
    for format in ["%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y", "%d.%m.%Y"] {
        if let Ok(date) = chrono::NaiveDate::parse_from_str(text, format) {
            return Some(date.format("%Y-%m-%d").to_string());
        }
    }
    None
}

/// `text` lowercased, without accents, punctuation as spaces, one space
/// between words.
pub fn normalize(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let folded: String = text
        .nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `text` holds one of `phrases` as whole words.
pub fn asks_for_person(phrases: &[String], text: &str) -> bool {
    let text = format!(" {} ", normalize(text));
    phrases.iter().any(|phrase| {
        let phrase = normalize(phrase);
        !phrase.is_empty() && text.contains(&format!(" {phrase} "))
    })
}

// ---------------------------------------------------------------------------
// The model hook
// ---------------------------------------------------------------------------

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the hook may do with a customer's free text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// It answers the current question (`fields` holds the value).
    Answer,
    /// It does not: ask the question again.
    AskAgain,
    /// The customer wants a person.
    Handoff,
}

/// What a model is asked to interpret: the current question and the
/// customer's text. Everything in it is the flow's own; the customer's text
/// is data, never instructions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InterpretRequest {
    pub conversation_id: String,
    pub flow: String,
    pub question: String,
    pub question_text: String,
    /// The field the answer fills and the values it may take (an options
    /// question's values; empty: any value of the field's kind).
    pub field: String,
    pub allowed_values: Vec<Value>,
    /// The question's kind and what a valid answer of it is.
    pub kind: QuestionKind,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub pattern: Option<String>,
    pub allowed_actions: Vec<Action>,
    pub text: String,
    /// Tokens the conversation has used so far (its budget is the backend's).
    pub tokens_used: u64,
}

/// A model's interpretation, checked by [`check_interpretation`] before use.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Interpretation {
    pub action: Action,
    #[serde(default)]
    pub fields: Map<String, Value>,
    /// Tokens this call used.
    #[serde(default)]
    pub tokens: u64,
}

/// What a model is asked to summarize: the built-in summary and the answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SummaryRequest {
    pub conversation_id: String,
    pub reason: String,
    pub built_in: String,
    pub fields: Map<String, Value>,
    pub transcript: Vec<String>,
    /// Tokens the conversation has used so far (its budget is the backend's).
    pub tokens_used: u64,
}

/// A model's hand-over summary and the tokens its call used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub text: String,
    pub tokens: u64,
}

/// Why a hook gave nothing usable: the caller falls back to the built-in
/// engine, which the customer never notices. `tokens`: what the failed
/// call used all the same (a server that answered with something unusable
/// still counted them), charged to the conversation's budget.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    pub message: String,
    pub tokens: u64,
}

impl ModelError {
    /// A failure that used no tokens.
    pub fn new(message: impl Into<String>) -> ModelError {
        ModelError { message: message.into(), tokens: 0 }
    }
}

/// The model hook: a language model's free-text understanding and handoff
/// summary, beside the built-in engine. Passed to `System::start` like
/// `Outbound`; the default ([`NoModel`]) has none. The conversation actor
/// bounds every call with a timeout and checks every answer
/// ([`check_interpretation`]): an error, a timeout or an answer outside the
/// flow leaves the built-in result in force. It calls the hook only after
/// the customer's message is committed (`CopilotState::pending`), so a
/// webhook's acknowledgement never waits for a model.
pub trait CopilotModel: Send + Sync + 'static {
    /// Whether the hook does anything (the actor skips the calls when not).
    fn enabled(&self) -> bool {
        true
    }

    /// Reads `request.text` against the current question.
    fn interpret(&self, request: InterpretRequest) -> BoxFuture<Result<Interpretation, ModelError>>;

    /// Writes the hand-over's summary.
    fn summarize(&self, request: SummaryRequest) -> BoxFuture<Result<Summary, ModelError>>;
}

/// No model: the built-in engine alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoModel;

impl CopilotModel for NoModel {
    fn enabled(&self) -> bool {
        false
    }

    fn interpret(&self, _request: InterpretRequest) -> BoxFuture<Result<Interpretation, ModelError>> {
        Box::pin(async { Err(ModelError::new("no model is configured")) })
    }

    fn summarize(&self, _request: SummaryRequest) -> BoxFuture<Result<Summary, ModelError>> {
        Box::pin(async { Err(ModelError::new("no model is configured")) })
    }
}

/// The request for `question` of `flow` and the customer's `text`.
pub fn interpret_request(
    conversation_id: &str,
    flow: &FlowSpec,
    question: &QuestionSpec,
    text: &str,
    tokens_used: u64,
) -> InterpretRequest {
    InterpretRequest {
        conversation_id: conversation_id.to_owned(),
        flow: flow.id.clone(),
        question: question.id.clone(),
        question_text: question.text.clone(),
        field: question.field.clone(),
        allowed_values: question.options.iter().map(OptionSpec::value).collect(),
        kind: question.kind,
        min: question.min,
        max: question.max,
        pattern: question.pattern.clone(),
        allowed_actions: vec![Action::Answer, Action::AskAgain, Action::Handoff],
        text: text.to_owned(),
        tokens_used,
    }
}

/// What a model's interpretation may make of the customer's message, as an
/// input the machine takes like any other: an answer becomes the reply of
/// the option it names (or the value as text), a hand-over the first
/// hand-over phrase. `None` when it goes outside the flow (another field,
/// a value the question does not take, anything beside the one field):
/// then the built-in result stands.
pub fn check_interpretation(question: &QuestionSpec, interpretation: &Interpretation) -> Option<ModelInput> {
    match interpretation.action {
        Action::AskAgain => interpretation.fields.is_empty().then_some(ModelInput::AskAgain),
        Action::Handoff => interpretation.fields.is_empty().then_some(ModelInput::Handoff),
        Action::Answer => {
            if interpretation.fields.len() != 1 {
                return None;
            }
            let value = interpretation.fields.get(&question.field)?;
            let as_text = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                _ => return None,
            };
            if question.kind == QuestionKind::Options {
                let option = question.options.iter().find(|option| &option.value() == value)?;
                return Some(ModelInput::Reply(choice_id(&question.id, &option.id)));
            }
            // The built-in rules must accept the value as the answer.
            interpret(question, Some(&as_text), None).map(|_| ModelInput::Text(as_text))
        }
    }
}

/// A checked interpretation, as the machine's input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelInput {
    /// An option's reply id.
    Reply(String),
    /// A value the question takes, as text.
    Text(String),
    AskAgain,
    Handoff,
}

#[cfg(test)]
mod tests;
