//! Where a conversation goes (contract §7), decided by one pure function:
//! [`route`]`(facts, table) -> Routing`. It is called when a conversation
//! opens, when it is transferred, reassigned for idleness, routed again
//! after its agent went offline, and at start-up re-queueing: the
//! [`Trigger`] in the facts says which. Inside the chosen team the team
//! actor picks the agent (`team::pick_member`); the agent actor grants the
//! slot. Nothing here reads a clock, the store or an actor.
//!
//! At open, rules are tried in configuration order and the first whose
//! every condition holds wins; no match → the number's `default_team`, else
//! the first team. A contact's owner (set through §8, or under
//! `owner_policy = "last_closer"` the agent who closed its latest
//! conversation) is offered the conversation first unless the matching rule
//! says `owner_first = false`, and it waits `owner_wait_s` for a busy or
//! offline owner before it goes to the team. docs/routing.md has the
//! reference.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use protocol::model::{Route, RouteReason, Source, SourceKind};
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::settings::{AgentSpec, TeamSpec};

/// `[routing]`: the rules and the owner policy.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSpec {
    #[serde(default)]
    pub owner_policy: OwnerPolicy,
    /// How long a conversation no rule matched waits for the contact's busy
    /// or offline owner before it goes to the team (a matching rule's
    /// `owner_wait_s` replaces it). 0: the owner only when it can take it now.
    #[serde(default)]
    pub owner_wait_s: u64,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// Who a contact's owner is when §8 has not set one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerPolicy {
    /// The agent who closed the contact's latest conversation (route reason
    /// `returning`).
    #[default]
    LastCloser,
    /// Only an owner set through the contacts API.
    Manual,
}

/// `[[numbers]]`: one of several WhatsApp numbers of the deployment.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NumberSpec {
    pub phone_number_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_team: Option<String>,
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// `[[routing.rules]]`: conditions (all must hold; none = always) and one action.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Stable id, shown in `Route` and the audit log.
    pub id: String,
    /// Only conversations on this number (`phone_number_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// Any of these words or phrases, case-insensitive, as whole words of
    /// the first message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text_any: Vec<String>,
    /// RE2 syntax (the `regex` crate: no look-around, linear time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_regex: Option<String>,
    /// A button or list reply id of the first message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interactive_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceKind>,
    /// Ad ids (`referral.source_id`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ids: Vec<String>,
    /// Referral codes, case-insensitive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referral_codes: Vec<String>,
    /// Equality on the contact's attributes: `city`, `region`, `dealer`,
    /// `owner` or a free-form attribute; strings compare case-insensitively.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub contact: BTreeMap<String, Value>,
    /// A city some team serves, named in the text, sets `contact.city` first.
    #[serde(default, skip_serializing_if = "is_false")]
    pub city_in_text: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_agent: Option<String>,
    /// To the team serving `contact.city` (the rule does not match when none does).
    #[serde(default, skip_serializing_if = "is_false")]
    pub to_city_team: bool,
    /// To the team of `contact.dealer` (the rule does not match when none is).
    #[serde(default, skip_serializing_if = "is_false")]
    pub to_dealer_team: bool,
    /// A contact with an owner goes to the owner.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub owner_first: bool,
    /// How long to wait for a busy or offline owner (or `to_agent`), then the team.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub owner_wait_s: u64,
}

/// A routing configuration that cannot be used: which rule, which field, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingError {
    /// `routing.rules[i]` (with its id when it has one), `numbers[i]`, `teams[i]`…
    pub place: String,
    pub field: String,
    pub problem: String,
}

impl fmt::Display for RoutingError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}.{}: {}", self.place, self.field, self.problem)
    }
}

impl std::error::Error for RoutingError {}

/// What routing knows of a contact (§8).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContactFacts {
    pub city: Option<String>,
    pub region: Option<String>,
    pub dealer: Option<String>,
    pub owner: Option<String>,
    pub attributes: Map<String, Value>,
}

impl ContactFacts {
    fn attribute(&self, key: &str) -> Option<Value> {
        let named = |value: &Option<String>| value.clone().map(Value::String);
        match key {
            "city" => named(&self.city),
            "region" => named(&self.region),
            "dealer" => named(&self.dealer),
            "owner" => named(&self.owner),
            other => self.attributes.get(other).cloned(),
        }
    }
}

/// Why routing is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A conversation opened: rules, owner, default team.
    Open,
    /// A user sent it to a team (`to_team`) or an agent (its slot already held).
    Transfer { to_team: Option<String>, to_agent: Option<String> },
    /// Its agent did not answer in time: the same team, someone else.
    Idle { team: Option<String>, from_agent: String },
    /// Its agent went offline or left: the same team.
    Offline { team: Option<String>, from_agent: String },
    /// Its team's queue passed its bound: a partner team.
    Overflow { from_team: String, to_team: String },
    /// The engine started with it waiting: its team.
    Restart { team: Option<String>, route: Route },
}

/// Everything [`route`] looks at.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    pub trigger: Trigger,
    pub phone_number_id: &'a str,
    /// The first message's text.
    pub text: Option<&'a str>,
    /// The first message's button or list reply id.
    pub interactive_id: Option<&'a str>,
    pub source: &'a Source,
    pub contact: &'a ContactFacts,
    /// The agent who closed the contact's latest conversation on this number.
    pub last_closer: Option<&'a str>,
}

/// An agent to offer the conversation to before the team.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentChoice {
    pub agent_id: String,
    /// How long the conversation waits for this agent when it cannot take
    /// it now (0: not at all), before it goes to the team.
    pub wait_ms: i64,
    /// The route of an assignment to this agent.
    pub route: Route,
}

/// Where a conversation goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    /// Why it goes to `team` (and the route of an assignment there).
    pub route: Route,
    /// The team whose queue it waits in (`None`: no team is configured).
    pub team: Option<String>,
    /// Offered first, before the team.
    pub agent: Option<AgentChoice>,
    /// Never this agent.
    pub exclude_agent: Option<String>,
    /// A city named in the text (`city_in_text`): the contact's city becomes it.
    pub contact_city: Option<String>,
}

struct Rule {
    spec: RuleSpec,
    /// `text_any`, as ids in [`Phrases`].
    phrases: Vec<usize>,
    regex: Option<Regex>,
}

/// Every phrase routing looks for in a first message (the rules' `text_any`
/// and the teams' cities), each once, indexed by its first word: a message
/// is scanned once, word by word, whatever the number of rules
/// ([`Phrases::found_in`]), and a rule's `text_any` is then a look-up.
#[derive(Default)]
struct Phrases {
    /// Lowercase words of each phrase, by id.
    words: Vec<Vec<String>>,
    /// First word → ids of the phrases starting with it.
    starts: HashMap<String, Vec<usize>>,
    ids: HashMap<Vec<String>, usize>,
}

impl Phrases {
    /// The id of `phrase` (lowercase words), added when new.
    fn id(&mut self, phrase: Vec<String>) -> usize {
        if let Some(&id) = self.ids.get(&phrase) {
            return id;
        }
        let id = self.words.len();
        self.starts.entry(phrase[0].clone()).or_default().push(id);
        self.ids.insert(phrase.clone(), id);
        self.words.push(phrase);
        id
    }

    /// Which phrases occur in `text` (words) as consecutive whole words, by id.
    fn found_in(&self, text: &[String]) -> Vec<bool> {
        let mut found = vec![false; self.words.len()];
        for (at, word) in text.iter().enumerate() {
            for &id in self.starts.get(word).map(Vec::as_slice).unwrap_or_default() {
                if text[at..].starts_with(&self.words[id]) {
                    found[id] = true;
                }
            }
        }
        found
    }
}

/// The routing configuration, checked and compiled: rules, numbers, the
/// teams' cities and dealers. Built once per configuration (start, `PUT
/// /api/v1/admin/routing`) and shared.
pub struct RoutingTable {
    spec: RoutingSpec,
    rules: Vec<Rule>,
    first_team: Option<String>,
    team_ids: Vec<String>,
    number_teams: HashMap<String, String>,
    /// (its phrase id, the city as configured, its team), in team then city
    /// order: the first team serving a city serves it.
    cities: Vec<(usize, String, String)>,
    phrases: Phrases,
    dealers: HashMap<String, String>,
    agent_teams: HashMap<String, Vec<String>>,
}

impl fmt::Debug for RoutingTable {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("RoutingTable").field("spec", &self.spec).finish_non_exhaustive()
    }
}

/// Longest accepted `text_regex`, and the compiled size bound: a rule is
/// configuration, not a way to make routing slow.
const MAX_REGEX_LEN: usize = 1_000;
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Longest `owner_wait_s` (a day).
const MAX_OWNER_WAIT_S: u64 = 86_400;

/// Lowercase words of a text: runs of letters and digits.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()).map(str::to_lowercase).collect()
}

/// Equality of a rule's value with a contact's: strings case-insensitively.
fn same_value(rule: &Value, contact: &Value) -> bool {
    match (rule, contact) {
        (Value::String(rule), Value::String(contact)) => rule.trim().eq_ignore_ascii_case(contact.trim()),
        (Value::Number(rule), Value::String(contact)) | (Value::String(contact), Value::Number(rule)) => {
            contact.trim() == rule.to_string()
        }
        _ => rule == contact,
    }
}

impl RoutingTable {
    /// Checks `spec` against the teams, agents and numbers and compiles it.
    /// The first problem is named with its rule and field.
    pub fn new(
        spec: RoutingSpec,
        teams: &[TeamSpec],
        agents: &[AgentSpec],
        numbers: &[NumberSpec],
    ) -> Result<RoutingTable, RoutingError> {
        let team_exists = |id: &str| teams.iter().any(|team| team.id == id);
        let mut number_teams = HashMap::new();
        for (index, number) in numbers.iter().enumerate() {
            let place = format!("numbers[{index}]");
            let error =
                |field: &str, problem: String| RoutingError { place: place.clone(), field: field.into(), problem };
            if number.phone_number_id.is_empty() || !number.phone_number_id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(error("phone_number_id", "must be Meta's phone number id, digits only".into()));
            }
            if numbers[..index].iter().any(|other| other.phone_number_id == number.phone_number_id) {
                return Err(error("phone_number_id", format!("{} is listed twice", number.phone_number_id)));
            }
            if let Some(team) = &number.default_team {
                if !team_exists(team) {
                    return Err(error("default_team", format!("no team has id {team:?}")));
                }
                number_teams.insert(number.phone_number_id.clone(), team.clone());
            }
        }
        let mut cities = Vec::new();
        let mut phrases_seen = Phrases::default();
        let mut dealers = HashMap::new();
        for (index, team) in teams.iter().enumerate() {
            for city in &team.cities {
                let city_words = words(city);
                if city_words.is_empty() {
                    return Err(RoutingError {
                        place: format!("teams[{index}] ({})", team.id),
                        field: "cities".into(),
                        problem: format!("{city:?} is not a city name"),
                    });
                }
                cities.push((phrases_seen.id(city_words), city.trim().to_owned(), team.id.clone()));
            }
            let place = || format!("teams[{index}] ({})", team.id);
            for partner in &team.overflow_to {
                if partner == &team.id || !teams.iter().any(|other| &other.id == partner) {
                    return Err(RoutingError {
                        place: place(),
                        field: "overflow_to".into(),
                        problem: format!("{partner:?} is not another team"),
                    });
                }
            }
            let bounds = (team.overflow_queue, team.overflow_wait_s);
            if !team.overflow_to.is_empty() && bounds == (None, None) {
                return Err(RoutingError {
                    place: place(),
                    field: "overflow_to".into(),
                    problem: "say when to spill: overflow_queue, overflow_wait_s or both".into(),
                });
            }
            if team.overflow_queue == Some(0) || team.overflow_wait_s == Some(0) {
                let field = if team.overflow_queue == Some(0) { "overflow_queue" } else { "overflow_wait_s" };
                return Err(RoutingError { place: place(), field: field.into(), problem: "must be at least 1".into() });
            }
            if let Some(dealer) = &team.dealer
                && let Some(other) = dealers.insert(dealer.to_lowercase(), team.id.clone())
            {
                return Err(RoutingError {
                    place: format!("teams[{index}] ({})", team.id),
                    field: "dealer".into(),
                    problem: format!("dealer {dealer:?} is already team {other:?}'s"),
                });
            }
        }
        let mut rules = Vec::with_capacity(spec.rules.len());
        for (index, rule) in spec.rules.iter().enumerate() {
            let place = if rule.id.is_empty() {
                format!("routing.rules[{index}]")
            } else {
                format!("routing.rules[{index}] ({})", rule.id)
            };
            let error =
                |field: &str, problem: String| RoutingError { place: place.clone(), field: field.into(), problem };
            if rule.id.trim().is_empty() {
                return Err(error("id", "every rule needs an id (it is shown in routes and the audit log)".into()));
            }
            if spec.rules[..index].iter().any(|other| other.id == rule.id) {
                return Err(error("id", format!("another rule already has id {:?}", rule.id)));
            }
            let actions = [rule.to_team.is_some(), rule.to_agent.is_some(), rule.to_city_team, rule.to_dealer_team];
            if actions.iter().filter(|set| **set).count() != 1 {
                return Err(error(
                    "to_team",
                    "give exactly one of to_team, to_agent, to_city_team = true, to_dealer_team = true".into(),
                ));
            }
            if let Some(team) = &rule.to_team
                && !team_exists(team)
            {
                return Err(error("to_team", format!("no team has id {team:?}")));
            }
            if let Some(agent) = &rule.to_agent {
                match agents.iter().find(|spec| &spec.id == agent) {
                    None => return Err(error("to_agent", format!("no agent has id {agent:?}"))),
                    Some(spec) if spec.teams.is_empty() => {
                        return Err(error("to_agent", format!("agent {agent:?} is in no team to fall back to")));
                    }
                    Some(_) => {}
                }
            }
            if rule.to_city_team && cities.is_empty() {
                return Err(error("to_city_team", "no team lists `cities`".into()));
            }
            if rule.city_in_text && cities.is_empty() {
                return Err(error("city_in_text", "no team lists `cities`".into()));
            }
            if rule.to_dealer_team && dealers.is_empty() {
                return Err(error("to_dealer_team", "no team has a `dealer`".into()));
            }
            if let Some(number) = &rule.number {
                if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(error("number", "must be a phone_number_id, digits only".into()));
                }
                if !numbers.is_empty() && !numbers.iter().any(|spec| &spec.phone_number_id == number) {
                    return Err(error("number", format!("{number} is not one of [[numbers]]")));
                }
            }
            let mut phrases = Vec::with_capacity(rule.text_any.len());
            for phrase in &rule.text_any {
                let phrase_words = words(phrase);
                if phrase_words.is_empty() {
                    return Err(error("text_any", format!("{phrase:?} has no word to look for")));
                }
                phrases.push(phrases_seen.id(phrase_words));
            }
            let regex = match &rule.text_regex {
                None => None,
                Some(pattern) if pattern.len() > MAX_REGEX_LEN => {
                    return Err(error("text_regex", format!("longer than {MAX_REGEX_LEN} characters")));
                }
                Some(pattern) => {
                    Some(RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build().map_err(|problem| {
                        error("text_regex", format!("not a valid RE2-style expression: {problem}"))
                    })?)
                }
            };
            for (field, values) in [
                ("interactive_ids", &rule.interactive_ids),
                ("source_ids", &rule.source_ids),
                ("referral_codes", &rule.referral_codes),
            ] {
                if values.iter().any(|value| value.trim().is_empty()) {
                    return Err(error(field, "has an empty value".into()));
                }
            }
            for (key, value) in &rule.contact {
                if key.trim().is_empty() {
                    return Err(error("contact", "has an empty attribute name".into()));
                }
                if matches!(value, Value::Array(_) | Value::Object(_) | Value::Null) {
                    return Err(error(&format!("contact.{key}"), "must be a string, number or boolean".into()));
                }
            }
            if rule.owner_wait_s > MAX_OWNER_WAIT_S {
                return Err(error("owner_wait_s", format!("at most {MAX_OWNER_WAIT_S} (a day)")));
            }
            rules.push(Rule { spec: rule.clone(), phrases, regex });
        }
        if spec.owner_wait_s > MAX_OWNER_WAIT_S {
            return Err(RoutingError {
                place: "routing".into(),
                field: "owner_wait_s".into(),
                problem: format!("at most {MAX_OWNER_WAIT_S} (a day)"),
            });
        }
        let agent_teams = agents.iter().map(|agent| (agent.id.clone(), agent.teams.clone())).collect();
        Ok(RoutingTable {
            spec,
            rules,
            first_team: teams.first().map(|team| team.id.clone()),
            team_ids: teams.iter().map(|team| team.id.clone()).collect(),
            number_teams,
            cities,
            phrases: phrases_seen,
            dealers,
            agent_teams,
        })
    }

    /// Whether routing a new conversation may set its contact's city (a rule
    /// has `city_in_text`): the contact is then updated with the decision.
    pub fn may_set_contact_city(&self) -> bool {
        self.rules.iter().any(|rule| rule.spec.city_in_text)
    }

    /// The configuration this table was built from (`GET /api/v1/admin/routing`).
    pub fn spec(&self) -> &RoutingSpec {
        &self.spec
    }

    /// The team of a conversation on `phone_number_id` that no rule placed.
    pub fn default_team(&self, phone_number_id: &str) -> Option<&str> {
        self.number_teams.get(phone_number_id).or(self.first_team.as_ref()).map(String::as_str)
    }

    /// Routing for a conversation that is not new (`trigger` is not
    /// [`Trigger::Open`]: nothing of its first message matters).
    pub fn again(&self, trigger: Trigger, phone_number_id: &str) -> Routing {
        let source = Source::organic();
        let contact = ContactFacts::default();
        let facts = Facts {
            trigger,
            phone_number_id,
            text: None,
            interactive_id: None,
            source: &source,
            contact: &contact,
            last_closer: None,
        };
        route(&facts, self)
    }

    fn is_team(&self, team: &str) -> bool {
        self.team_ids.iter().any(|id| id == team)
    }

    /// The first city some team serves named in the text (`found`: the
    /// phrases it holds), with its team.
    fn city_named_in(&self, found: &[bool]) -> Option<(&str, &str)> {
        self.cities.iter().find(|(id, _, _)| found[*id]).map(|(_, city, team)| (city.as_str(), team.as_str()))
    }

    fn team_serving(&self, city: &str) -> Option<&str> {
        let city_words = words(city);
        let id = self.phrases.ids.get(&city_words)?;
        self.cities.iter().find(|(city_id, _, _)| city_id == id).map(|(_, _, team)| team.as_str())
    }
}

impl Rule {
    /// The rule's conditions against the facts (`city` is the contact's,
    /// perhaps just found in the text).
    fn matches(&self, facts: &Facts<'_>, found: &[bool], city: Option<&str>) -> bool {
        let spec = &self.spec;
        if spec.number.as_deref().is_some_and(|number| number != facts.phone_number_id) {
            return false;
        }
        if !self.phrases.is_empty() && !self.phrases.iter().any(|&id| found[id]) {
            return false;
        }
        if let Some(regex) = &self.regex
            && !facts.text.is_some_and(|text| regex.is_match(text))
        {
            return false;
        }
        if !spec.interactive_ids.is_empty()
            && !facts.interactive_id.is_some_and(|id| spec.interactive_ids.iter().any(|wanted| wanted == id))
        {
            return false;
        }
        if spec.source.is_some_and(|kind| kind != facts.source.kind) {
            return false;
        }
        if !spec.source_ids.is_empty()
            && !facts.source.source_id.as_deref().is_some_and(|id| spec.source_ids.iter().any(|wanted| wanted == id))
        {
            return false;
        }
        if !spec.referral_codes.is_empty()
            && !facts
                .source
                .code
                .as_deref()
                .is_some_and(|code| spec.referral_codes.iter().any(|wanted| wanted.eq_ignore_ascii_case(code)))
        {
            return false;
        }
        spec.contact.iter().all(|(key, wanted)| {
            let value = if key == "city" {
                city.map(|city| Value::String(city.to_owned()))
            } else {
                facts.contact.attribute(key)
            };
            value.is_some_and(|value| same_value(wanted, &value))
        })
    }
}

/// Where a conversation goes, and why. Pure: the same facts and table give
/// the same answer.
pub fn route(facts: &Facts<'_>, table: &RoutingTable) -> Routing {
    let to_team = |route: Route, team: Option<String>| Routing {
        route,
        team,
        agent: None,
        exclude_agent: None,
        contact_city: None,
    };
    match &facts.trigger {
        Trigger::Open => route_new(facts, table),
        Trigger::Transfer { to_team: team, to_agent } => {
            let route = Route::because(RouteReason::Transfer);
            let mut routing = to_team(route.clone(), team.clone());
            if let Some(agent) = to_agent {
                routing.team = table.agent_teams.get(agent).and_then(|teams| teams.first()).cloned().or(routing.team);
                routing.agent = Some(AgentChoice { agent_id: agent.clone(), wait_ms: 0, route });
            }
            routing
        }
        Trigger::Idle { team, from_agent } => Routing {
            exclude_agent: Some(from_agent.clone()),
            ..to_team(Route::because(RouteReason::Idle), team.clone())
        },
        Trigger::Offline { team, from_agent: _ } => to_team(Route::because(RouteReason::Offline), team.clone()),
        Trigger::Overflow { from_team, to_team: team } => to_team(
            Route { reason: RouteReason::Overflow, rule: None, from_team: Some(from_team.clone()) },
            Some(team.clone()),
        ),
        // A team no longer configured: the number's default team.
        Trigger::Restart { team, route } => to_team(
            route.clone(),
            team.clone()
                .filter(|team| table.is_team(team))
                .or_else(|| table.default_team(facts.phone_number_id).map(str::to_owned)),
        ),
    }
}

fn route_new(facts: &Facts<'_>, table: &RoutingTable) -> Routing {
    let text = facts.text.map(words).unwrap_or_default();
    let found = table.phrases.found_in(&text);
    let named_city = table.city_named_in(&found);
    // The owner: set through §8, else (by policy) the last closer; one no
    // longer in the agent pool (deactivated) is nobody's to wait for.
    let in_pool = |agent: &str| table.agent_teams.contains_key(agent);
    let owner = match (facts.contact.owner.as_deref().filter(|owner| in_pool(owner)), facts.last_closer) {
        (Some(owner), _) => Some((owner, RouteReason::Owner)),
        (None, Some(closer)) if table.spec.owner_policy == OwnerPolicy::LastCloser && in_pool(closer) => {
            Some((closer, RouteReason::Returning))
        }
        _ => None,
    };
    for rule in &table.rules {
        let spec = &rule.spec;
        let found_city = spec.city_in_text.then_some(named_city).flatten();
        let city = found_city.map(|(city, _)| city).or(facts.contact.city.as_deref());
        if !rule.matches(facts, &found, city) {
            continue;
        }
        let team = if let Some(team) = &spec.to_team {
            Some(team.clone())
        } else if let Some(agent) = &spec.to_agent {
            table.agent_teams.get(agent).and_then(|teams| teams.first()).cloned()
        } else if spec.to_city_team {
            match city.and_then(|city| table.team_serving(city)) {
                Some(team) => Some(team.to_owned()),
                None => continue,
            }
        } else {
            match facts.contact.dealer.as_deref().and_then(|dealer| table.dealers.get(&dealer.to_lowercase())) {
                Some(team) => Some(team.clone()),
                None => continue,
            }
        };
        let rule_route = Route { reason: RouteReason::Rule, rule: Some(spec.id.clone()), from_team: None };
        let wait_ms = spec.owner_wait_s as i64 * 1000;
        let agent = match (owner, &spec.to_agent) {
            (Some((owner, reason)), _) if spec.owner_first => Some(AgentChoice {
                agent_id: owner.to_owned(),
                wait_ms,
                route: Route { reason, rule: Some(spec.id.clone()), from_team: None },
            }),
            (_, Some(agent)) => Some(AgentChoice { agent_id: agent.clone(), wait_ms, route: rule_route.clone() }),
            _ => None,
        };
        return Routing {
            route: rule_route,
            team,
            agent,
            exclude_agent: None,
            contact_city: found_city
                .map(|(city, _)| city.to_owned())
                .filter(|city| facts.contact.city.as_deref().is_none_or(|known| !known.eq_ignore_ascii_case(city))),
        };
    }
    Routing {
        route: Route::because(RouteReason::Default),
        team: table.default_team(facts.phone_number_id).map(str::to_owned),
        agent: owner.map(|(owner, reason)| AgentChoice {
            agent_id: owner.to_owned(),
            wait_ms: table.spec.owner_wait_s as i64 * 1000,
            route: Route::because(reason),
        }),
        exclude_agent: None,
        contact_city: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn team(id: &str, cities: &[&str], dealer: Option<&str>) -> TeamSpec {
        TeamSpec {
            id: id.into(),
            cities: cities.iter().map(|city| (*city).to_owned()).collect(),
            dealer: dealer.map(str::to_owned),
            ..Default::default()
        }
    }

    fn agent(id: &str, teams: &[&str]) -> AgentSpec {
        AgentSpec {
            id: id.into(),
            name: None,
            role: protocol::model::Role::Agent,
            token: None,
            token_sha256: None,
            teams: teams.iter().map(|team| (*team).to_owned()).collect(),
            capacity: None,
            city: None,
            manages: Vec::new(),
            shift: None,
            copilot: None,
        }
    }

    fn teams() -> Vec<TeamSpec> {
        vec![
            team("sales", &[], None),
            team("support", &[], None),
            team("pune", &["Pune", "Pimpri Chinchwad"], None),
            team("mumbai", &["Mumbai"], Some("D042")),
        ]
    }

    fn agents() -> Vec<AgentSpec> {
        vec![agent("asha", &["sales"]), agent("ravi", &["support", "sales"])]
    }

    fn numbers() -> Vec<NumberSpec> {
        vec![
            NumberSpec { phone_number_id: "111".into(), name: None, default_team: Some("sales".into()) },
            NumberSpec { phone_number_id: "222".into(), name: None, default_team: Some("support".into()) },
        ]
    }

    fn rules(toml_rules: &str) -> RoutingSpec {
        toml::from_str::<RoutingSpec>(toml_rules).unwrap()
    }

    fn table(spec: RoutingSpec) -> RoutingTable {
        RoutingTable::new(spec, &teams(), &agents(), &numbers()).unwrap()
    }

    struct Case {
        number: &'static str,
        text: Option<&'static str>,
        interactive: Option<&'static str>,
        source: Source,
        contact: ContactFacts,
        last_closer: Option<&'static str>,
    }

    impl Default for Case {
        fn default() -> Self {
            Case {
                number: "111",
                text: None,
                interactive: None,
                source: Source::organic(),
                contact: ContactFacts::default(),
                last_closer: None,
            }
        }
    }

    impl Case {
        fn text(text: &'static str) -> Case {
            Case { text: Some(text), ..Case::default() }
        }

        fn route(&self, table: &RoutingTable) -> Routing {
            let facts = Facts {
                trigger: Trigger::Open,
                phone_number_id: self.number,
                text: self.text,
                interactive_id: self.interactive,
                source: &self.source,
                contact: &self.contact,
                last_closer: self.last_closer,
            };
            route(&facts, table)
        }
    }

    fn rule_of(routing: &Routing) -> (Option<&str>, Option<&str>) {
        (routing.route.rule.as_deref(), routing.team.as_deref())
    }

    #[test]
    fn no_rule_goes_to_the_numbers_default_team_else_the_first() {
        let table = table(RoutingSpec::default());
        let first = Case::text("hi").route(&table);
        assert_eq!((first.route.reason, first.team.as_deref()), (RouteReason::Default, Some("sales")));
        let second = Case { number: "222", ..Case::text("hi") }.route(&table);
        assert_eq!(second.team.as_deref(), Some("support"));
        let unknown = Case { number: "999", ..Case::text("hi") }.route(&table);
        assert_eq!(unknown.team.as_deref(), Some("sales"), "a number not listed: the first team");
    }

    #[test]
    fn the_first_matching_rule_wins_in_configuration_order() {
        let table = table(rules(
            r#"
            [[rules]]
            id = "refunds"
            text_any = ["refund", "money back"]
            to_team = "support"
            [[rules]]
            id = "everything"
            to_team = "pune"
            "#,
        ));
        assert_eq!(rule_of(&Case::text("I want a REFUND!").route(&table)), (Some("refunds"), Some("support")));
        assert_eq!(rule_of(&Case::text("my money back please").route(&table)), (Some("refunds"), Some("support")));
        assert_eq!(rule_of(&Case::text("refunded").route(&table)), (Some("everything"), Some("pune")), "whole words");
        assert_eq!(rule_of(&Case::text("money, back").route(&table)), (Some("refunds"), Some("support")));
        assert_eq!(rule_of(&Case::default().route(&table)), (Some("everything"), Some("pune")));
    }

    #[test]
    fn each_condition_kind_must_hold() {
        let table = table(rules(
            r#"
            [[rules]]
            id = "number"
            number = "222"
            to_team = "support"
            [[rules]]
            id = "regex"
            text_regex = "(?i)order\\s*#?\\d{5}"
            to_team = "support"
            [[rules]]
            id = "menu"
            interactive_ids = ["menu_support"]
            to_team = "support"
            [[rules]]
            id = "ad"
            source = "paid"
            source_ids = ["120000000000001"]
            to_team = "pune"
            [[rules]]
            id = "other_ads"
            source = "paid"
            to_team = "mumbai"
            [[rules]]
            id = "diwali"
            referral_codes = ["DIWALI"]
            to_agent = "ravi"
            [[rules]]
            id = "vip"
            contact = { tier = "gold", visits = 3 }
            to_team = "support"
            "#,
        ));
        assert_eq!(rule_of(&Case { number: "222", ..Case::text("hi") }.route(&table)).0, Some("number"));
        assert_eq!(rule_of(&Case::text("where is Order #12345?").route(&table)).0, Some("regex"));
        assert_eq!(rule_of(&Case::text("order 1234").route(&table)).0, None);
        let menu = Case { interactive: Some("menu_support"), ..Case::default() };
        assert_eq!(rule_of(&menu.route(&table)).0, Some("menu"));
        let paid = |id: &str| Source { kind: SourceKind::Paid, source_id: Some(id.into()), ..Source::organic() };
        assert_eq!(rule_of(&Case { source: paid("120000000000001"), ..Case::default() }.route(&table)).0, Some("ad"));
        assert_eq!(
            rule_of(&Case { source: paid("120000000000009"), ..Case::default() }.route(&table)).0,
            Some("other_ads")
        );
        let referral = Source { kind: SourceKind::Referral, code: Some("diwali".into()), ..Source::organic() };
        let diwali = Case { source: referral, ..Case::default() }.route(&table);
        assert_eq!(rule_of(&diwali), (Some("diwali"), Some("support")));
        assert_eq!(diwali.agent.map(|choice| choice.agent_id).as_deref(), Some("ravi"));
        let mut gold = ContactFacts::default();
        gold.attributes.insert("tier".into(), json!("Gold"));
        gold.attributes.insert("visits".into(), json!("3"));
        assert_eq!(rule_of(&Case { contact: gold.clone(), ..Case::default() }.route(&table)).0, Some("vip"));
        gold.attributes.insert("visits".into(), json!(4));
        assert_eq!(rule_of(&Case { contact: gold, ..Case::default() }.route(&table)).0, None);
    }

    #[test]
    fn a_city_named_in_the_text_sets_the_contacts_city_and_picks_its_team() {
        let table = table(rules(
            r#"
            [[rules]]
            id = "by_city"
            city_in_text = true
            to_city_team = true
            "#,
        ));
        let pune = Case::text("Do you deliver in pimpri chinchwad?").route(&table);
        assert_eq!(rule_of(&pune), (Some("by_city"), Some("pune")));
        assert_eq!(pune.contact_city.as_deref(), Some("Pimpri Chinchwad"));
        let known =
            Case { contact: ContactFacts { city: Some("mumbai".into()), ..Default::default() }, ..Case::text("hi") };
        let routed = known.route(&table);
        assert_eq!(rule_of(&routed), (Some("by_city"), Some("mumbai")));
        assert_eq!(routed.contact_city, None, "the city was known");
        let nowhere = Case::text("hello from Delhi").route(&table);
        assert_eq!(
            (nowhere.route.reason, nowhere.team.as_deref()),
            (RouteReason::Default, Some("sales")),
            "no city team: the rule does not match"
        );
    }

    #[test]
    fn a_dealer_contact_goes_to_the_dealers_team() {
        let table = table(rules("[[rules]]\nid = \"dealer\"\nto_dealer_team = true\n"));
        let dealer =
            Case { contact: ContactFacts { dealer: Some("d042".into()), ..Default::default() }, ..Case::default() };
        assert_eq!(rule_of(&dealer.route(&table)), (Some("dealer"), Some("mumbai")));
        assert_eq!(Case::default().route(&table).route.reason, RouteReason::Default);
    }

    #[test]
    fn an_owner_comes_first_unless_the_rule_says_otherwise() {
        let table = table(rules(
            r#"
            owner_wait_s = 30
            [[rules]]
            id = "refunds"
            text_any = ["refund"]
            to_team = "support"
            owner_wait_s = 120
            [[rules]]
            id = "ads"
            source = "paid"
            to_team = "pune"
            owner_first = false
            "#,
        ));
        let owned = ContactFacts { owner: Some("asha".into()), ..Default::default() };
        let refund = Case { contact: owned.clone(), last_closer: Some("ravi"), ..Case::text("refund") }.route(&table);
        let choice = refund.agent.clone().unwrap();
        assert_eq!(
            (choice.agent_id.as_str(), choice.wait_ms, choice.route.reason),
            ("asha", 120_000, RouteReason::Owner)
        );
        assert_eq!(
            (refund.team.as_deref(), refund.route.reason),
            (Some("support"), RouteReason::Rule),
            "then the rule's team"
        );
        let paid = Source { kind: SourceKind::Paid, ..Source::organic() };
        let ad = Case { contact: owned, source: paid, ..Case::default() }.route(&table);
        assert_eq!((ad.agent, ad.team.as_deref()), (None, Some("pune")));
        let returning = Case { last_closer: Some("ravi"), ..Case::text("hi") }.route(&table);
        let choice = returning.agent.unwrap();
        assert_eq!(
            (choice.agent_id.as_str(), choice.wait_ms, choice.route.reason),
            ("ravi", 30_000, RouteReason::Returning)
        );
        let manual = RoutingTable::new(
            RoutingSpec { owner_policy: OwnerPolicy::Manual, ..RoutingSpec::default() },
            &teams(),
            &agents(),
            &numbers(),
        )
        .unwrap();
        assert_eq!(Case { last_closer: Some("ravi"), ..Case::text("hi") }.route(&manual).agent, None);
        // An owner or closer no longer in the pool (deactivated) is waited for by nobody.
        let gone = ContactFacts { owner: Some("meena".into()), ..Default::default() };
        let orphan = Case { contact: gone, last_closer: Some("meena"), ..Case::text("refund") }.route(&table);
        assert_eq!((orphan.agent, orphan.team.as_deref()), (None, Some("support")));
        let returning = Case { last_closer: Some("meena"), ..Case::text("hi") }.route(&table);
        assert_eq!(returning.agent, None);
    }

    #[test]
    fn other_triggers_keep_or_name_the_team() {
        let table = table(RoutingSpec::default());
        let source = Source::organic();
        let contact = ContactFacts::default();
        let facts = |trigger| Facts {
            trigger,
            phone_number_id: "111",
            text: Some("refund"),
            interactive_id: None,
            source: &source,
            contact: &contact,
            last_closer: Some("asha"),
        };
        let idle = route(&facts(Trigger::Idle { team: Some("support".into()), from_agent: "ravi".into() }), &table);
        assert_eq!(
            (idle.route.reason, idle.team.as_deref(), idle.exclude_agent.as_deref(), idle.agent),
            (RouteReason::Idle, Some("support"), Some("ravi"), None)
        );
        let overflow =
            route(&facts(Trigger::Overflow { from_team: "sales".into(), to_team: "support".into() }), &table);
        assert_eq!(
            overflow.route,
            Route { reason: RouteReason::Overflow, rule: None, from_team: Some("sales".into()) }
        );
        let transfer = route(&facts(Trigger::Transfer { to_team: None, to_agent: Some("ravi".into()) }), &table);
        assert_eq!(
            (transfer.team.as_deref(), transfer.agent.map(|choice| choice.agent_id)),
            (Some("support"), Some("ravi".into()))
        );
    }

    #[test]
    fn bad_rules_are_named_with_their_field() {
        let check =
            |text: &str| RoutingTable::new(rules(text), &teams(), &agents(), &numbers()).unwrap_err().to_string();
        assert_eq!(
            check("[[rules]]\nid = \"a\"\n"),
            "routing.rules[0] (a).to_team: give exactly one of to_team, to_agent, to_city_team = true, to_dealer_team = true"
        );
        assert!(check("[[rules]]\nid = \"a\"\nto_team = \"nope\"\n").contains("(a).to_team: no team has id \"nope\""));
        assert!(check("[[rules]]\nid = \"a\"\nto_agent = \"nobody\"\n").contains("(a).to_agent"));
        assert!(
            check("[[rules]]\nid = \"a\"\ntext_regex = \"(?=x)\"\nto_team = \"sales\"\n")
                .contains("(a).text_regex: not a valid")
        );
        assert!(
            check("[[rules]]\nid = \"a\"\nto_team = \"sales\"\n[[rules]]\nid = \"a\"\nto_team = \"sales\"\n")
                .contains("rules[1] (a).id: another rule")
        );
        assert!(
            check("[[rules]]\nid = \"a\"\nnumber = \"333\"\nto_team = \"sales\"\n")
                .contains("(a).number: 333 is not one of")
        );
        assert!(check("[[rules]]\nid = \"a\"\ntext_any = [\"!!\"]\nto_team = \"sales\"\n").contains("(a).text_any"));
        assert!(
            check("[[rules]]\nid = \"a\"\ncontact = { city = [\"x\"] }\nto_team = \"sales\"\n")
                .contains("(a).contact.city")
        );
        assert!(
            check("[[rules]]\nid = \"a\"\nowner_wait_s = 90000\nto_team = \"sales\"\n").contains("(a).owner_wait_s")
        );
        assert!(check("[[rules]]\nid = \"\"\nto_team = \"sales\"\n").contains("rules[0].id"));
        let bad_number = [NumberSpec { phone_number_id: "1".into(), name: None, default_team: Some("x".into()) }];
        let error = RoutingTable::new(RoutingSpec::default(), &teams(), &agents(), &bad_number).unwrap_err();
        assert_eq!(error.to_string(), "numbers[0].default_team: no team has id \"x\"");
        let mut spill = teams();
        spill[0].overflow_to = vec!["nowhere".into()];
        spill[0].overflow_queue = Some(5);
        let error = RoutingTable::new(RoutingSpec::default(), &spill, &agents(), &numbers()).unwrap_err();
        assert_eq!(error.to_string(), "teams[0] (sales).overflow_to: \"nowhere\" is not another team");
        spill[0].overflow_to = vec!["support".into()];
        spill[0].overflow_queue = None;
        let error = RoutingTable::new(RoutingSpec::default(), &spill, &agents(), &numbers()).unwrap_err();
        assert!(error.problem.starts_with("say when to spill"), "{error}");
        let mut two_dealers = teams();
        two_dealers[0].dealer = Some("D042".into());
        let error = RoutingTable::new(RoutingSpec::default(), &two_dealers, &agents(), &numbers()).unwrap_err();
        assert_eq!((error.field.as_str(), error.place.as_str()), ("dealer", "teams[3] (mumbai)"));
    }

    #[test]
    fn the_rules_serialize_back_to_what_was_configured() {
        let spec = rules(
            r#"
            [[rules]]
            id = "refunds"
            text_any = ["refund"]
            contact = { city = "Pune" }
            to_team = "support"
            owner_first = false
            "#,
        );
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json,
            json!({"owner_policy": "last_closer", "owner_wait_s": 0, "rules": [{"id": "refunds", "text_any": ["refund"], "contact": {"city": "Pune"}, "to_team": "support", "owner_first": false}]})
        );
        assert_eq!(serde_json::from_value::<RoutingSpec>(json).unwrap(), spec);
    }
}
