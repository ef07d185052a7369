//! The co-pilot's built-in engine (`actors::copilot`, PROTOCOL §11,
//! docs/copilot.md), measured per customer message: how long one
//! `step` takes — reading the message against the current question, scoring
//! it, choosing what to say next, and at a hand-over building the summary —
//! over many simulated conversations of the complete example flow
//! (`config/examples/copilot.toml`: budget buttons, a city list, timeframe
//! buttons, a number).
//!
//! The conversations are simulated first, with the engine's own machine
//! deciding each next state, so every timed call sees a state the engine
//! would have stored: taps on reply buttons and list rows, option titles
//! typed as text, numbers inside sentences, chatter that answers nothing
//! (asked again; twice hands over), and people asking for a person. The
//! timing then replays the recorded (state, message) pairs: the engine's
//! cost only, no generation in the timed span.
//!
//! A package of its own, like `bench/routing/`: it calls the actors crate
//! directly, which the load harness (`bench/`, public interfaces only)
//! never reaches into.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use actors::copilot::{self, Context, CopilotSpec, End, FlowSpec, Input, QuestionKind, QuestionSpec};
use actors::settings::DispositionSpec;
use hdrhistogram::Histogram;
use protocol::model::{Source, SourceKind};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use storage::CopilotState;

/// The configuration the bench reads its flow from: the documented example.
pub const EXAMPLE: &str = include_str!("../../../config/examples/copilot.toml");

/// A team's co-pilot and disposition schema, from a configuration file's
/// first team that has a `[teams.copilot]`.
pub struct Team {
    pub id: String,
    pub spec: CopilotSpec,
    pub schema: Vec<DispositionSpec>,
}

impl Team {
    pub fn from_toml(text: &str) -> anyhow::Result<Team> {
        let file: toml::Table = toml::from_str(text)?;
        let teams = file.get("teams").and_then(toml::Value::as_array).cloned().unwrap_or_default();
        let team = teams
            .into_iter()
            .find(|team| team.get("copilot").is_some())
            .ok_or_else(|| anyhow::anyhow!("no [[teams]] with a [teams.copilot]"))?;
        let id = team.get("id").and_then(toml::Value::as_str).unwrap_or("team").to_owned();
        let spec: CopilotSpec =
            team.get("copilot").cloned().map(toml::Value::try_into).transpose()?.unwrap_or_default();
        let schema = match team.get("dispositions").or_else(|| file.get("dispositions")) {
            Some(value) => value.clone().try_into()?,
            None => Vec::new(),
        };
        copilot::check(&spec, &schema).map_err(|(key, problem)| anyhow::anyhow!("teams.copilot.{key}: {problem}"))?;
        anyhow::ensure!(!spec.flows.is_empty(), "the co-pilot has no flow");
        Ok(Team { id, spec, schema })
    }
}

/// What a customer message is, for the breakdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A tap on a reply button (the reply's id).
    Button,
    /// A list row picked (the reply's id).
    ListRow,
    /// An option's title typed as text.
    TypedOption,
    /// A number inside a sentence (`About 4 units`), or a date.
    Number,
    /// A free-text question's answer.
    Text,
    /// Text that answers nothing (asked again).
    Chatter,
    /// One of the handoff phrases inside a sentence.
    AsksForPerson,
}

impl Kind {
    pub const ALL: [Kind; 7] =
        [Kind::Button, Kind::ListRow, Kind::TypedOption, Kind::Number, Kind::Text, Kind::Chatter, Kind::AsksForPerson];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Button => "button reply",
            Kind::ListRow => "list reply",
            Kind::TypedOption => "option typed",
            Kind::Number => "number in text",
            Kind::Text => "free-text answer",
            Kind::Chatter => "chatter (asked again)",
            Kind::AsksForPerson => "asks for a person",
        }
    }
}

/// One customer message at the state the engine had when it came.
pub struct Sample {
    pub kind: Kind,
    pub flow: usize,
    pub state: CopilotState,
    pub text: Option<String>,
    pub reply_id: Option<String>,
}

impl Sample {
    pub fn input(&self) -> Input<'_> {
        Input::Message { text: self.text.as_deref(), reply_id: self.reply_id.as_deref(), model: None }
    }
}

/// The simulated conversations: every message, and how each conversation ended.
pub struct Simulated {
    pub samples: Vec<Sample>,
    pub conversations: usize,
    /// `handoff:{reason}` or `close:{reason}` → conversations.
    pub ends: BTreeMap<String, usize>,
}

/// The fixed world of the bench: a paid lead from an ad, the team open.
pub struct World {
    pub source: Source,
    pub now: i64,
}

impl Default for World {
    fn default() -> Self {
        World {
            source: Source {
                kind: SourceKind::Paid,
                source_type: Some("ad".into()),
                source_id: Some("120200000000001".into()),
                ctwa_clid: Some("clid".into()),
                headline: Some("Spring offer".into()),
                code: None,
            },
            now: 1_795_514_400_000,
        }
    }
}

impl World {
    pub fn context<'a>(&'a self, team: &'a Team) -> Context<'a> {
        Context {
            now: self.now,
            opens_at: None,
            opens_label: None,
            source: &self.source,
            free_entry_open: true,
            schema: &team.schema,
        }
    }
}

const CHATTER: &[&str] = &[
    "I saw your ad yesterday, what is the price of the two bedroom one near the station?",
    "hmm",
    "Is parking included? And is there a club house",
    "Let me check with my wife and get back",
    "ok",
];

const ASKS: &[&str] = &[
    "Can I talk to a human please",
    "I would rather speak to someone, call me",
    "real person please, this is taking long",
];

/// Simulates `conversations` paid leads through `team`'s first flow
/// (seeded): each message's kind is drawn per message (5 % ask for a
/// person, 12 % chatter, else an answer: a tap three times in four, else
/// the option's title typed), until the machine hands over or closes.
pub fn simulate(team: &Team, world: &World, conversations: usize, seed: u64) -> Simulated {
    let mut rng = StdRng::seed_from_u64(seed);
    let flow = &team.spec.flows[0];
    let context = world.context(team);
    let mut samples = Vec::new();
    let mut ends = BTreeMap::new();
    for _ in 0..conversations {
        let mut state = copilot::start(flow, &team.id, &context).state;
        // A lead that wants the big budget more often than not.
        let keen = rng.random_bool(0.6);
        for _ in 0..(flow.questions.len() * 3 + 2) {
            let Some(question) = flow.questions.get(state.question as usize) else { break };
            let (kind, text, reply_id) = message(question, keen, &mut rng);
            let sample = Sample { kind, flow: 0, state: state.clone(), text, reply_id };
            let step = copilot::step(&team.spec, flow, &state, sample.input(), &context);
            samples.push(sample);
            state = step.state;
            match step.end {
                Some(End::Handoff { reason, .. }) => {
                    *ends.entry(format!("handoff:{reason}")).or_insert(0) += 1;
                    break;
                }
                Some(End::Close { reason, .. }) => {
                    *ends.entry(format!("close:{reason}")).or_insert(0) += 1;
                    break;
                }
                None => {}
            }
        }
    }
    Simulated { samples, conversations, ends }
}

fn message(question: &QuestionSpec, keen: bool, rng: &mut StdRng) -> (Kind, Option<String>, Option<String>) {
    let roll: f64 = rng.random();
    if roll < 0.05 {
        return (Kind::AsksForPerson, ASKS.choose(rng).map(|text| (*text).to_owned()), None);
    }
    if roll < 0.17 {
        return (Kind::Chatter, CHATTER.choose(rng).map(|text| (*text).to_owned()), None);
    }
    match question.kind {
        QuestionKind::Options => {
            let mut options: Vec<_> = question.options.iter().collect();
            options.sort_by_key(|option| std::cmp::Reverse(option.score));
            let half = options.len().div_ceil(2);
            let pool = if keen { &options[..half] } else { &options[half.min(options.len() - 1)..] };
            let Some(option) = pool.choose(rng) else { return (Kind::Chatter, Some("ok".into()), None) };
            if rng.random_bool(0.25) {
                (Kind::TypedOption, Some(option.title.to_lowercase()), None)
            } else {
                let kind =
                    if question.options.len() <= protocol::graph::MAX_BUTTONS { Kind::Button } else { Kind::ListRow };
                // A reply carries its title as the text too (what the webhook gives).
                (kind, Some(option.title.clone()), Some(copilot::choice_id(&question.id, &option.id)))
            }
        }
        QuestionKind::Number => {
            let low = question.min.unwrap_or(1.0).max(1.0) as i64;
            let high = question.max.unwrap_or(100.0).max(low as f64) as i64;
            let n = rng.random_range(low..=high);
            let text = match rng.random_range(0..3) {
                0 => n.to_string(),
                1 => format!("About {n} units"),
                _ => format!("we need {n}, maybe more later"),
            };
            (Kind::Number, Some(text), None)
        }
        QuestionKind::Date => (Kind::Number, Some("15/08/2026".into()), None),
        QuestionKind::Text => (Kind::Text, Some("We run three clinics in Pune".into()), None),
    }
}

pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?)
}

/// The timed results.
pub struct Measured {
    pub messages: usize,
    pub messages_per_second: f64,
    pub latency_ns: Histogram<u64>,
    pub by_kind: BTreeMap<Kind, Histogram<u64>>,
    /// `start` (the greeting and first question) per conversation.
    pub start_ns: Histogram<u64>,
}

/// Warms up, then steps through `messages` samples (cycled) twice: once
/// untimed for the rate, once with `Instant` around each call.
pub fn measure(team: &Team, world: &World, samples: &[Sample], messages: usize) -> anyhow::Result<Measured> {
    anyhow::ensure!(!samples.is_empty(), "no messages to step through");
    let context = world.context(team);
    let flows = &team.spec.flows;
    let one = |sample: &Sample| copilot::step(&team.spec, &flows[sample.flow], &sample.state, sample.input(), &context);
    for index in 0..(messages / 10).max(samples.len().min(messages)) {
        black_box(one(black_box(&samples[index % samples.len()])));
    }
    let started = Instant::now();
    for index in 0..messages {
        black_box(one(black_box(&samples[index % samples.len()])));
    }
    let elapsed = started.elapsed();
    let mut latency_ns = new_histogram()?;
    let mut by_kind = BTreeMap::new();
    for index in 0..messages {
        let sample = &samples[index % samples.len()];
        let started = Instant::now();
        let step = one(black_box(sample));
        let nanos = (started.elapsed().as_nanos() as u64).max(1);
        // The step is dropped outside the timed span.
        black_box(step);
        latency_ns.record(nanos)?;
        match by_kind.entry(sample.kind) {
            std::collections::btree_map::Entry::Occupied(mut entry) => {
                let histogram: &mut Histogram<u64> = entry.get_mut();
                histogram.record(nanos)?;
            }
            std::collections::btree_map::Entry::Vacant(entry) => {
                let mut histogram = new_histogram()?;
                histogram.record(nanos)?;
                entry.insert(histogram);
            }
        }
    }
    let mut start_ns = new_histogram()?;
    for _ in 0..(messages / 10).clamp(1, 100_000) {
        let started = Instant::now();
        let step = copilot::start(&flows[0], &team.id, black_box(&context));
        let nanos = (started.elapsed().as_nanos() as u64).max(1);
        black_box(step);
        start_ns.record(nanos)?;
    }
    Ok(Measured {
        messages,
        messages_per_second: messages as f64 / elapsed.as_secs_f64(),
        latency_ns,
        by_kind,
        start_ns,
    })
}

/// What a back-to-back pair of `Instant::now()` costs (included in every latency).
pub fn timer_overhead_ns() -> anyhow::Result<Histogram<u64>> {
    let mut histogram = new_histogram()?;
    for _ in 0..200_000 {
        let started = Instant::now();
        let nanos = started.elapsed().as_nanos() as u64;
        histogram.record(nanos.max(1))?;
    }
    Ok(histogram)
}

fn summary(histogram: &Histogram<u64>) -> Value {
    let quantile = |q: f64| histogram.value_at_quantile(q);
    json!({
        "count": histogram.len(),
        "p50_ns": quantile(0.50),
        "p90_ns": quantile(0.90),
        "p99_ns": quantile(0.99),
        "p999_ns": quantile(0.999),
        "max_ns": histogram.max(),
        "mean_ns": histogram.mean().round(),
    })
}

/// The JSON report.
pub fn report_json(simulated: &Simulated, measured: &Measured, overhead: &Histogram<u64>, flow: &FlowSpec) -> Value {
    let by_kind: serde_json::Map<String, Value> =
        measured.by_kind.iter().map(|(kind, histogram)| (kind.name().to_owned(), summary(histogram))).collect();
    json!({
        "flow": flow.id,
        "questions": flow.questions.len(),
        "conversations": simulated.conversations,
        "distinct_messages": simulated.samples.len(),
        "messages_per_conversation": simulated.samples.len() as f64 / simulated.conversations.max(1) as f64,
        "ends": simulated.ends,
        "messages": measured.messages,
        "messages_per_second": measured.messages_per_second.round(),
        "per_message": summary(&measured.latency_ns),
        "by_kind": by_kind,
        "start": summary(&measured.start_ns),
        "timer_overhead": summary(overhead),
    })
}

/// The Markdown report (what the binary prints).
pub fn report_markdown(
    simulated: &Simulated,
    measured: &Measured,
    overhead: &Histogram<u64>,
    flow: &FlowSpec,
) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    let share = |count: usize| 100.0 * count as f64 / simulated.conversations.max(1) as f64;
    let ends: Vec<String> = simulated.ends.iter().map(|(end, count)| format!("{end} {:.1} %", share(*count))).collect();
    let _ = writeln!(
        text,
        "flow `{}` ({} questions): {} simulated paid leads, {} distinct messages ({:.2} a conversation); ends: {}",
        flow.id,
        flow.questions.len(),
        simulated.conversations,
        simulated.samples.len(),
        simulated.samples.len() as f64 / simulated.conversations.max(1) as f64,
        ends.join(", "),
    );
    let _ = writeln!(
        text,
        "timer overhead (Instant pair, included below): p50 {} ns, p99 {} ns",
        overhead.value_at_quantile(0.5),
        overhead.value_at_quantile(0.99)
    );
    let _ = writeln!(text);
    let _ =
        writeln!(text, "| messages | messages/s (1 thread) | mean ns | p50 ns | p90 ns | p99 ns | p99.9 ns | max ns |");
    let _ = writeln!(text, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    let h = &measured.latency_ns;
    let _ = writeln!(
        text,
        "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
        measured.messages,
        measured.messages_per_second,
        h.mean(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    let _ = writeln!(text);
    let _ = writeln!(text, "| message | share | mean ns | p50 ns | p90 ns | p99 ns |");
    let _ = writeln!(text, "|---|---:|---:|---:|---:|---:|");
    let rows = measured.by_kind.iter().map(|(kind, histogram)| (kind.name(), histogram));
    for (name, histogram) in rows.chain(std::iter::once(("`start` (greeting + first question)", &measured.start_ns))) {
        let share = if std::ptr::eq(histogram, &measured.start_ns) {
            "-".to_owned()
        } else {
            format!("{:.1} %", 100.0 * histogram.len() as f64 / measured.messages.max(1) as f64)
        };
        let _ = writeln!(
            text,
            "| {name} | {share} | {:.0} | {} | {} | {} |",
            histogram.mean(),
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.9),
            histogram.value_at_quantile(0.99),
        );
    }
    text
}
