//! The demo's co-pilot (docs/copilot.md): the sales team's `[teams.copilot]`
//! flow for paid (click-to-WhatsApp) leads, and the simulated ad-lead
//! customers who answer it like people.
//!
//! A lead reads what the emulator was asked to send it
//! ([`sim::emulator::Emulator::requests_since`]): it knows a question by its
//! text (or a reply button's `cp:` id), thinks for a moment, and answers as
//! its [`Persona`] would — taps a reply button or picks a list row, types a
//! title instead, writes a number or a sentence, asks for a person, gives
//! an answer that does not count, or goes quiet (the flow's
//! `handoff_after_s` then hands it over). Choosing the answer is a pure
//! function ([`answer`]) with unit tests; [`answer_leads`] is the task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::copilot::{CopilotSpec, FlowSpec, QuestionKind, QuestionSpec};
use actors::settings::DispositionSpec;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sim::emulator::Emulator;

use super::{Ctx, PHONE_NUMBER_ID, count, post_webhook, unix_seconds};

/// The fields the flow fills, added to the demo's disposition schema.
const FIELDS: &str = r#"
[[dispositions]]
key = "plan"
label = "Plan"
kind = "enum"
options = ["basic", "premium", "enterprise"]

[[dispositions]]
key = "city"
label = "City"
kind = "text"

[[dispositions]]
key = "seats"
label = "Licences"
kind = "number"

[[dispositions]]
key = "business"
label = "Business"
kind = "text"
"#;

/// The sales team's co-pilot: four questions (reply buttons, a list, a
/// number, free text), qualified at 5 points, handed over after 90 s at
/// the latest; leads that stay below the threshold are closed as not
/// qualified.
const COPILOT: &str = r#"
handoff_phrases = ["talk to a human", "talk to a person", "speak to someone", "real person", "call me"]

[[flows]]
id = "ad_leads"
sources = ["paid"]
greeting = "Hi! Thanks for clicking our festive offer. A few quick questions and an adviser will be with you."
qualify_score = 5
handoff_after_s = 90
max_unanswered = 2
unqualified = "close"
not_qualified_fields = { outcome = "not_qualified" }
handoff_message = "Thank you! An adviser will be with you in a moment."
retry_message = "Sorry, I did not get that."

[[flows.questions]]
id = "plan"
text = "Which plan are you interested in?"
field = "plan"
kind = "options"
options = [
  { id = "basic", title = "Basic", value = "basic", score = 0 },
  { id = "premium", title = "Premium", value = "premium", score = 2 },
  { id = "enterprise", title = "Enterprise", value = "enterprise", score = 3 },
]

[[flows.questions]]
id = "city"
text = "Which city are you in?"
field = "city"
kind = "options"
list_button = "Choose a city"
options = [
  { id = "mumbai", title = "Mumbai", score = 1 },
  { id = "delhi", title = "Delhi", score = 1 },
  { id = "bengaluru", title = "Bengaluru", score = 1 },
  { id = "chennai", title = "Chennai", score = 1 },
  { id = "hyderabad", title = "Hyderabad", score = 1 },
  { id = "other", title = "Other", score = 0, description = "Somewhere else" },
]

[[flows.questions]]
id = "seats"
text = "How many licences would you need?"
field = "seats"
kind = "number"
min = 1
max = 1000
score = 1

[[flows.questions]]
id = "business"
label = "Business"
text = "And what does your business do, in a few words?"
field = "business"
kind = "text"
score = 1
"#;

#[derive(serde::Deserialize)]
struct Fields {
    dispositions: Vec<DispositionSpec>,
}

/// The disposition fields the flow fills (added to the global schema).
pub fn fields() -> anyhow::Result<Vec<DispositionSpec>> {
    Ok(toml::from_str::<Fields>(FIELDS)?.dispositions)
}

/// The sales team's `[teams.copilot]`.
pub fn spec() -> anyhow::Result<CopilotSpec> {
    Ok(toml::from_str(COPILOT)?)
}

/// How a simulated ad lead answers the co-pilot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persona {
    /// Wants a big plan, answers everything: qualified.
    Keen,
    /// Small, curious: answers everything, stays below the threshold (closed).
    Browsing,
    /// Answers, then asks for a person at question `at`.
    WantsPerson { at: usize },
    /// Gives an answer that does not count at question `at` first (the
    /// co-pilot asks again), then answers as a keen lead.
    Unsure { at: usize },
    /// Stops answering at question `at` (the flow's timeout hands it over).
    Silent { at: usize },
}

impl Persona {
    pub fn pick(rng: &mut StdRng, questions: usize) -> Persona {
        let at = rng.random_range(0..questions.max(1));
        match rng.random_range(0..100) {
            0..40 => Persona::Keen,
            40..62 => Persona::Browsing,
            62..80 => Persona::WantsPerson { at },
            80..93 => Persona::Unsure { at },
            _ => Persona::Silent { at },
        }
    }

    fn keen(self) -> bool {
        !matches!(self, Persona::Browsing)
    }
}

/// What the co-pilot said to a lead, as the lead reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// Question `index` of the flow (asked again after an answer that did
    /// not count: `again`).
    Question { index: usize, again: bool },
    /// The flow's hand-over message: people take it from here.
    HandedOver,
}

/// Reads one send's body: a question of `flow`, its hand-over message, or
/// nothing the co-pilot says (an agent's message, a template).
pub fn hear(flow: &FlowSpec, body: &Value) -> Option<Heard> {
    let text = body["interactive"]["body"]["text"].as_str().or_else(|| body["text"]["body"].as_str())?;
    if flow.handoff_message.as_deref() == Some(text) {
        return Some(Heard::HandedOver);
    }
    let index = flow.questions.iter().position(|question| text.ends_with(question.text.as_str()))?;
    let again = text.starts_with(flow.retry_message.as_str()) && !flow.retry_message.is_empty();
    Some(Heard::Question { index, again })
}

/// The lead's answer to question `index` of `flow` (`again`: it was asked
/// again): the inbound message's type and content, or `None` (it stays
/// quiet).
pub fn answer(flow: &FlowSpec, persona: Persona, index: usize, again: bool, rng: &mut StdRng) -> Option<Value> {
    let question = flow.questions.get(index)?;
    match persona {
        Persona::Silent { at } if index >= at => return None,
        Persona::WantsPerson { at } if index == at => {
            let text = *[
                "Can I talk to a human please?",
                "I'd rather speak to someone. Call me?",
                "Is there a real person I can chat with?",
            ]
            .choose(rng)?;
            return Some(text_message(text));
        }
        Persona::Unsure { at } if index == at && !again && question.kind != QuestionKind::Text => {
            let text = *["hmm, not sure yet", "what do you mean?", "depends"].choose(rng)?;
            return Some(text_message(text));
        }
        _ => {}
    }
    let keen = persona.keen();
    Some(match question.kind {
        QuestionKind::Options => choose(question, keen, rng),
        QuestionKind::Number => {
            let seats = if keen { rng.random_range(5..=80) } else { rng.random_range(1..=3) };
            let text = match rng.random_range(0..3) {
                0 => seats.to_string(),
                1 => format!("About {seats} licences"),
                _ => format!("we are {seats} people"),
            };
            text_message(&text)
        }
        QuestionKind::Text | QuestionKind::Date => {
            let texts: &[&str] = if keen {
                &[
                    "We run a chain of dental clinics",
                    "Logistics: 200 trucks across the south",
                    "A coaching institute with three branches",
                    "We make auto parts for two OEMs",
                ]
            } else {
                &["Just looking for now", "Small shop", "Freelancer"]
            };
            text_message(texts.choose(rng)?)
        }
    })
}

/// An option: a keen lead takes one that scores, a browsing one one that
/// does not; tapped (a button or list row) three times in four, else typed.
fn choose(question: &QuestionSpec, keen: bool, rng: &mut StdRng) -> Value {
    let options: Vec<_> = question.options.iter().filter(|option| (option.score > 0) == keen).collect();
    let Some(option) = options.choose(rng).copied().or(question.options.first()) else {
        return text_message("ok");
    };
    if rng.random_bool(0.25) {
        return text_message(&option.title.to_lowercase());
    }
    let id = actors::copilot::choice_id(&question.id, &option.id);
    if question.options.len() <= protocol::graph::MAX_BUTTONS {
        json!({"type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": {"id": id, "title": option.title}}})
    } else {
        json!({"type": "interactive",
            "interactive": {"type": "list_reply", "list_reply": {"id": id, "title": option.title}}})
    }
}

fn text_message(text: &str) -> Value {
    json!({"type": "text", "text": {"body": text}})
}

/// An ad lead the co-pilot may be talking to.
struct Lead {
    name: &'static str,
    persona: Persona,
    /// The answer to post, and when (a person takes a moment).
    due: Option<(Instant, Value)>,
    /// When the lead last heard from or said something to the co-pilot.
    last: Instant,
    /// The last question answered was the flow's last.
    finished: bool,
}

/// The ad leads in the co-pilot's hands, shared by the customers' task
/// (which registers a lead when it clicks an ad and leaves those busy with
/// the co-pilot alone) and [`answer_leads`].
#[derive(Default)]
pub struct Leads(Mutex<HashMap<String, Lead>>);

impl Leads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lead>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A customer clicked an ad: the co-pilot will ask it questions.
    pub fn clicked(&self, wa_id: &str, name: &'static str, persona: Persona) {
        let lead = Lead { name, persona, due: None, last: Instant::now(), finished: false };
        self.lock().insert(wa_id.to_owned(), lead);
    }

    /// Whether the customer is busy with the co-pilot (it writes nothing else meanwhile).
    pub fn busy(&self, wa_id: &str) -> bool {
        self.lock().contains_key(wa_id)
    }
}

/// A lead that heard nothing from the co-pilot this long is let go (its
/// conversation did not start with the co-pilot, or the flow closed it).
const QUIET: Duration = Duration::from_secs(20);
/// A quiet lead is let go once the flow's timeout surely handed it over.
const SILENT: Duration = Duration::from_secs(120);

/// Reads what the emulator sent to the ad leads and answers the co-pilot's
/// questions after a moment's thought, until aborted.
pub async fn answer_leads(ctx: Arc<Ctx>, emulator: Arc<Emulator>, flow: FlowSpec) {
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let url = sim::webhook::webhook_url(&ctx.base_url);
    let (_, mut cursor) = emulator.requests_since(usize::MAX);
    let mut interval = tokio::time::interval(Duration::from_millis(250));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent: u64 = 0;
    loop {
        interval.tick().await;
        let (requests, total) = emulator.requests_since(cursor);
        cursor = total;
        let now = Instant::now();
        let mut posts = Vec::new();
        {
            let mut leads = ctx.leads.lock();
            for request in requests {
                let body = request.body;
                let Some(lead) = body["to"].as_str().and_then(|to| leads.get_mut(to)) else { continue };
                match hear(&flow, &body) {
                    Some(Heard::Question { index, again }) => {
                        lead.last = now;
                        lead.finished = index + 1 == flow.questions.len();
                        let think = Duration::from_millis(rng.random_range(1500..=4000));
                        lead.due =
                            answer(&flow, lead.persona, index, again, &mut rng).map(|reply| (now + think, reply));
                    }
                    Some(Heard::HandedOver) => {
                        let to = body["to"].as_str().unwrap_or_default().to_owned();
                        leads.remove(&to);
                    }
                    None => {}
                }
            }
            let mut gone = Vec::new();
            for (wa_id, lead) in leads.iter_mut() {
                if let Some((at, _)) = &lead.due
                    && *at <= now
                    && let Some((_, reply)) = lead.due.take()
                {
                    lead.last = now;
                    posts.push((wa_id.clone(), lead.name, reply));
                }
                let quiet = if matches!(lead.persona, Persona::Silent { .. }) { SILENT } else { QUIET };
                if lead.due.is_none() && now.duration_since(lead.last) > quiet {
                    gone.push((wa_id.clone(), lead.finished));
                }
            }
            for (wa_id, finished) in gone {
                leads.remove(&wa_id);
                if finished {
                    // Answered everything and nobody took over: closed as not qualified.
                    ctx.closed_contacts.lock().unwrap_or_else(|p| p.into_inner()).push(wa_id);
                }
            }
        }
        for (wa_id, name, message) in posts {
            sent += 1;
            let wamid = format!("wamid.demo.{}.copilot.{sent}", ctx.run_id);
            let payload = sim::emulator::inbound_message_payload(
                PHONE_NUMBER_ID,
                &wa_id,
                name,
                &wamid,
                unix_seconds() as i64,
                message,
            );
            if post_webhook(&ctx, &url, &payload).await {
                count(&ctx.stats.copilot_answers);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> FlowSpec {
        spec().expect("the demo's flow reads").flows.remove(0)
    }

    #[test]
    fn the_demo_flow_passes_the_engines_checks() {
        let mut schema = fields().expect("fields");
        schema.push(DispositionSpec {
            options: vec!["not_qualified".into(), "closed_won".into()],
            required_on_close: true,
            ..DispositionSpec::new("outcome", actors::settings::FieldKind::Enum)
        });
        actors::copilot::check(&spec().expect("spec"), &schema).expect("valid");
    }

    #[test]
    fn a_lead_hears_questions_retries_and_the_handoff() {
        let flow = flow();
        let buttons = json!({"to": "1", "type": "interactive",
            "interactive": {"body": {"text": format!("{}\n\nWhich plan are you interested in?", flow.greeting.clone().unwrap_or_default())}}});
        assert_eq!(hear(&flow, &buttons), Some(Heard::Question { index: 0, again: false }));
        let again = json!({"text": {"body": "Sorry, I did not get that.\n\nHow many licences would you need?"}});
        assert_eq!(hear(&flow, &again), Some(Heard::Question { index: 2, again: true }));
        let bye = json!({"text": {"body": "Thank you! An adviser will be with you in a moment."}});
        assert_eq!(hear(&flow, &bye), Some(Heard::HandedOver));
        assert_eq!(hear(&flow, &json!({"text": {"body": "Namaste! How can I help?"}})), None);
    }

    /// Every persona's answers, read by the engine's own rules, do what
    /// the persona means: keen leads qualify, browsing ones do not,
    /// unsure ones are asked again, quiet ones say nothing.
    #[test]
    fn personas_answer_as_they_mean_to() {
        let flow = flow();
        let spec = spec().expect("spec");
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            for persona in [Persona::Keen, Persona::Browsing] {
                let mut score = 0;
                for (index, question) in flow.questions.iter().enumerate() {
                    let reply = answer(&flow, persona, index, false, &mut rng).expect("answers");
                    let text = reply["text"]["body"].as_str();
                    let id = reply["interactive"]["button_reply"]["id"]
                        .as_str()
                        .or(reply["interactive"]["list_reply"]["id"].as_str());
                    let (_, points) = actors::copilot::interpret(question, text, id).expect("a valid answer");
                    score += points;
                }
                assert_eq!(score >= flow.qualify_score, persona == Persona::Keen, "{persona:?}: {score}");
            }
            let unsure = answer(&flow, Persona::Unsure { at: 2 }, 2, false, &mut rng).expect("says something");
            assert!(actors::copilot::interpret(&flow.questions[2], unsure["text"]["body"].as_str(), None).is_none());
            assert!(answer(&flow, Persona::Unsure { at: 2 }, 2, true, &mut rng).is_some());
            let human = answer(&flow, Persona::WantsPerson { at: 1 }, 1, false, &mut rng).expect("asks");
            let text = human["text"]["body"].as_str().expect("text");
            assert!(actors::copilot::asks_for_person(&spec.handoff_phrases, text), "{text}");
            assert!(answer(&flow, Persona::Silent { at: 1 }, 1, false, &mut rng).is_none());
        }
    }
}
