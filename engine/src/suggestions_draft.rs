//! What the co-pilot's agent assist drafts (docs/copilot.md "Agent
//! assist"): the `[assist]` configuration, its replies compiled once, and
//! [`draft`], the pure decision of which reply a customer's message gets.
//!
//! [`Drafter`] is the seam the suggestions consumer calls: the built-in
//! [`RulesDrafter`] (configured replies, no network) is the default; a
//! language-model drafter can take its place without the consumer changing.
//! A drafter answers `None` when it has nothing worth suggesting.

use std::sync::Arc;

use actors::shared::BoxFuture;
use serde::Deserialize;
use serde_json::{Map, Value};

/// `[assist]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistConfig {
    /// `[[assist.replies]]`, tried in order: the first that matches is the draft.
    #[serde(default)]
    pub replies: Vec<ReplySpec>,
    /// The draft when no reply matches; none: no suggestion then.
    #[serde(default)]
    pub default_reply: Option<String>,
    /// A customer message older than this when the consumer takes it in
    /// (after a stop, say) gets no suggestion: nobody wants drafts for
    /// what was answered long ago.
    #[serde(default = "default_max_age_s")]
    pub max_age_s: u64,
}

fn default_max_age_s() -> u64 {
    300
}

impl Default for AssistConfig {
    fn default() -> Self {
        AssistConfig { replies: Vec::new(), default_reply: None, max_age_s: default_max_age_s() }
    }
}

/// One `[[assist.replies]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplySpec {
    /// Phrases or keywords, any of which (case-insensitive, whole words)
    /// in the customer's text makes this reply match.
    #[serde(default, rename = "match")]
    pub phrases: Vec<String>,
    /// Or (also) a regular expression (RE2 syntax; `(?i)` for any case).
    #[serde(default)]
    pub regex: Option<String>,
    /// The draft, with `{contact.name}`, `{agent.name}`, `{field.<key>}`.
    pub text: String,
    /// Only for conversations of these teams; empty: every team.
    #[serde(default)]
    pub teams: Vec<String>,
}

/// One piece of a reply's text.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    ContactName,
    AgentName,
    Field(String),
}

/// A reply's text, its placeholders found once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    /// `text` with its placeholders; any other `{…}` (or a `{` left open)
    /// is refused, with a sentence saying what is allowed.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| format!("a `{{` is not closed in {text:?}"))?;
            let name = after[..close].trim();
            pieces.push(match name {
                "contact.name" => Piece::ContactName,
                "agent.name" => Piece::AgentName,
                _ => match name.strip_prefix("field.") {
                    Some(key) if !key.is_empty() => Piece::Field(key.to_owned()),
                    _ => {
                        return Err(format!(
                            "unknown placeholder {{{name}}}: use {{contact.name}}, {{agent.name}} or {{field.<key>}}"
                        ));
                    }
                },
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        Ok(Template(pieces))
    }

    /// The text filled in; `None` when a placeholder has no value (a half
    /// filled draft is worse than none).
    fn fill(&self, input: &DraftInput) -> Option<String> {
        let mut text = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Literal(literal) => text.push_str(literal),
                Piece::ContactName => text.push_str(input.contact_name.as_deref().filter(|name| !name.is_empty())?),
                Piece::AgentName => text.push_str(&input.agent_name),
                Piece::Field(key) => match input.fields.get(key)? {
                    Value::Null => return None,
                    Value::String(value) => text.push_str(value),
                    other => text.push_str(&other.to_string()),
                },
            }
        }
        Some(text)
    }
}

/// A configured reply, compiled.
#[derive(Clone, Debug)]
struct Reply {
    /// Lowercase, single-spaced.
    phrases: Vec<String>,
    regex: Option<regex::Regex>,
    template: Template,
    teams: Vec<String>,
}

/// `[assist]`, compiled: what [`draft`] decides with.
#[derive(Clone, Debug, Default)]
pub struct Assist {
    replies: Vec<Reply>,
    default_reply: Option<Template>,
}

/// What a draft is made from: the customer's message and its conversation.
#[derive(Clone, Debug, Default)]
pub struct DraftInput {
    pub conversation_id: String,
    pub text: String,
    pub team: Option<String>,
    /// The contact's name (as a user set it, else its WhatsApp profile's).
    pub contact_name: Option<String>,
    /// The holding agent's display name.
    pub agent_name: String,
    pub fields: Map<String, Value>,
    /// The conversation's last messages (up to [`HISTORY`]), oldest first,
    /// the one answered last: context for a drafter that reads it (the
    /// configured replies look at `text` only).
    pub history: Vec<protocol::model::Message>,
    /// Tokens a language model already used for the conversation (the
    /// co-pilot's and earlier drafts'): a model drafter's budget is
    /// checked against it.
    pub tokens_used: u64,
}

/// A drafter's answer: the draft (`None`: no suggestion) and the tokens a
/// language model used for it, counted against the conversation's budget
/// even when it gave nothing usable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drafted {
    pub text: Option<String>,
    pub tokens: u64,
}

/// How many of a conversation's last messages a draft is given.
pub const HISTORY: usize = 10;

/// Lowercase, every run of whitespace one space, trimmed.
fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Whether `phrase` (normalized) is in `text` (normalized) as whole words.
fn contains_words(text: &str, phrase: &str) -> bool {
    if phrase.is_empty() {
        return false;
    }
    text.match_indices(phrase).any(|(start, _)| {
        let before = text[..start].chars().next_back();
        let after = text[start + phrase.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

impl Assist {
    /// Compiles `[assist]`; an error names the key (`replies[2].regex`)
    /// and what is wrong. `teams` are the configured team ids.
    pub fn compile(config: &AssistConfig, teams: &[&str]) -> Result<Assist, (String, String)> {
        let mut replies = Vec::new();
        for (index, spec) in config.replies.iter().enumerate() {
            let key = |field: &str| format!("assist.replies[{index}].{field}");
            let phrases: Vec<String> = spec.phrases.iter().map(|phrase| normalize(phrase)).collect();
            if phrases.iter().any(String::is_empty) {
                return Err((key("match"), "a phrase must not be empty".to_owned()));
            }
            let regex = match &spec.regex {
                Some(pattern) => Some(
                    regex::RegexBuilder::new(pattern)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|error| (key("regex"), format!("not a valid regular expression: {error}")))?,
                ),
                None => None,
            };
            if phrases.is_empty() && regex.is_none() {
                return Err((key("match"), "give phrases (`match`) or a `regex` for the reply to match".to_owned()));
            }
            if spec.text.trim().is_empty() {
                return Err((key("text"), "must not be empty".to_owned()));
            }
            let template = Template::parse(&spec.text).map_err(|problem| (key("text"), problem))?;
            if let Some(unknown) = spec.teams.iter().find(|team| !teams.contains(&team.as_str())) {
                return Err((key("teams"), format!("no team {unknown:?} is configured")));
            }
            replies.push(Reply { phrases, regex, template, teams: spec.teams.clone() });
        }
        let default_reply = match &config.default_reply {
            Some(text) if text.trim().is_empty() => {
                return Err((
                    "assist.default_reply".to_owned(),
                    "must not be empty (leave it out for none)".to_owned(),
                ));
            }
            Some(text) => Some(Template::parse(text).map_err(|problem| ("assist.default_reply".to_owned(), problem))?),
            None => None,
        };
        if config.max_age_s == 0 {
            return Err(("assist.max_age_s".to_owned(), "must be greater than 0".to_owned()));
        }
        Ok(Assist { replies, default_reply })
    }
}

/// The draft reply to `input`: the first configured reply for the
/// conversation's team whose phrases or regex match the text and whose
/// placeholders all have values, else the default reply (when it fills),
/// else none.
pub fn draft(assist: &Assist, input: &DraftInput) -> Option<String> {
    let text = normalize(&input.text);
    let matched = assist.replies.iter().filter(|reply| {
        let for_team = reply.teams.is_empty() || input.team.as_ref().is_some_and(|team| reply.teams.contains(team));
        for_team
            && (reply.phrases.iter().any(|phrase| contains_words(&text, phrase))
                || reply.regex.as_ref().is_some_and(|regex| regex.is_match(&input.text)))
    });
    matched
        .filter_map(|reply| reply.template.fill(input))
        .next()
        .or_else(|| assist.default_reply.as_ref().and_then(|template| template.fill(input)))
}

/// Makes a draft reply for a customer's message; `None`: no suggestion.
/// The suggestions consumer awaits it before it moves its cursor, so a
/// slow drafter holds suggestions back, never loses them; it must answer
/// in bounded time (a network drafter times out and answers `None`).
pub trait Drafter: Send + Sync + 'static {
    fn draft(&self, input: DraftInput) -> BoxFuture<Drafted>;
}

/// The built-in drafter: the configured replies ([`draft`]).
pub struct RulesDrafter(pub Arc<Assist>);

impl Drafter for RulesDrafter {
    fn draft(&self, input: DraftInput) -> BoxFuture<Drafted> {
        let drafted = Drafted { text: draft(&self.0, &input), tokens: 0 };
        Box::pin(async move { drafted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn assist(toml: &str) -> Assist {
        let config: AssistConfig = toml::from_str(toml).expect("valid [assist]");
        Assist::compile(&config, &["sales", "support"]).expect("compiles")
    }

    fn input(text: &str) -> DraftInput {
        DraftInput {
            conversation_id: "c1".into(),
            text: text.into(),
            team: Some("sales".into()),
            contact_name: Some("Priya".into()),
            agent_name: "Asha".into(),
            fields: json!({"model": "Aero 5", "units": 2}).as_object().cloned().unwrap_or_default(),
            history: Vec::new(),
            tokens_used: 0,
        }
    }

    const REPLIES: &str = r#"
[[replies]]
match = ["price", "how much"]
text = "Hi {contact.name}, I'm {agent.name}: the {field.model} starts at 49,999."

[[replies]]
regex = "(?i)\\bemi\\b|instal+ments?"
text = "Yes, EMI from 3 to 12 months for {field.units} units."
teams = ["sales"]

[[replies]]
match = ["refund"]
text = "Refunds take 5 days."
teams = ["support"]
"#;

    #[test]
    fn the_first_reply_that_matches_is_filled() {
        let assist = assist(REPLIES);
        let check = |text: &str, expected: Option<&str>| {
            assert_eq!(draft(&assist, &input(text)).as_deref(), expected, "for {text:?}");
        };
        check("What's the PRICE?", Some("Hi Priya, I'm Asha: the Aero 5 starts at 49,999."));
        check("how   much for it", Some("Hi Priya, I'm Asha: the Aero 5 starts at 49,999."));
        check("Is EMI possible?", Some("Yes, EMI from 3 to 12 months for 2 units."));
        check("pay in installments?", Some("Yes, EMI from 3 to 12 months for 2 units."));
        check("price and emi?", Some("Hi Priya, I'm Asha: the Aero 5 starts at 49,999."));
        check("priceless", None);
        check("a refund please", None);
        check("hello", None);
    }

    #[test]
    fn team_replies_apply_to_their_teams_only() {
        let assist = assist(REPLIES);
        let support = DraftInput { team: Some("support".into()), ..input("refund please, and EMI?") };
        assert_eq!(draft(&assist, &support).as_deref(), Some("Refunds take 5 days."));
        let teamless = DraftInput { team: None, ..input("emi?") };
        assert_eq!(draft(&assist, &teamless), None, "a team reply needs its team");
    }

    #[test]
    fn a_reply_missing_a_value_gives_way_to_the_next_or_the_default() {
        let assist = assist(&format!("default_reply = \"Thanks {{contact.name}}, one moment.\"\n{REPLIES}"));
        let no_model = DraftInput { fields: Map::new(), ..input("price?") };
        assert_eq!(draft(&assist, &no_model).as_deref(), Some("Thanks Priya, one moment."));
        assert_eq!(draft(&assist, &input("hello")).as_deref(), Some("Thanks Priya, one moment."));
        let nameless = DraftInput { contact_name: None, ..input("hello") };
        assert_eq!(draft(&assist, &nameless), None, "the default fills or nothing is suggested");
    }

    #[test]
    fn bad_replies_are_refused_with_their_key() {
        let refused = |toml: &str| {
            let config: AssistConfig = toml::from_str(toml).expect("parses");
            Assist::compile(&config, &["sales"]).unwrap_err()
        };
        assert_eq!(refused("[[replies]]\ntext = \"hi\"").0, "assist.replies[0].match");
        assert_eq!(refused("[[replies]]\nregex = \"(\"\ntext = \"hi\"").0, "assist.replies[0].regex");
        assert_eq!(refused("[[replies]]\nmatch = [\"a\"]\ntext = \"hi {contact.phone}\"").0, "assist.replies[0].text");
        assert_eq!(refused("[[replies]]\nmatch = [\"a\"]\ntext = \"hi {oops\"").0, "assist.replies[0].text");
        assert_eq!(
            refused("[[replies]]\nmatch = [\"a\"]\ntext = \"hi\"\nteams = [\"x\"]").0,
            "assist.replies[0].teams"
        );
        assert_eq!(refused("[[replies]]\nmatch = [\" \"]\ntext = \"hi\"").0, "assist.replies[0].match");
        assert_eq!(refused("max_age_s = 0").0, "assist.max_age_s");
    }

    #[test]
    fn placeholders_are_parsed() {
        assert_eq!(
            Template::parse("a {contact.name} b {field.x}").unwrap(),
            Template(vec![
                Piece::Literal("a ".into()),
                Piece::ContactName,
                Piece::Literal(" b ".into()),
                Piece::Field("x".into())
            ])
        );
        assert!(Template::parse("{field.}").is_err());
    }
}
