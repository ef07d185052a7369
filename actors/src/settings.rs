//! The business configuration the actors run on: teams, agents, SLA targets and
//! disposition fields. The engine reads it from TOML (§1 of the contract).

use protocol::model::Role;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TeamSpec {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub assignment: Strategy,
    /// Targets that replace `[sla]` for this team's conversations.
    #[serde(default)]
    pub sla: Option<SlaOverride>,
    /// When set, this team's SLA clocks run only inside these hours.
    #[serde(default)]
    pub hours: Option<crate::hours::HoursSpec>,
    /// The cities this team serves (routing's `to_city_team`, `city_in_text`).
    #[serde(default)]
    pub cities: Vec<String>,
    /// The dealer this team is (routing's `to_dealer_team`).
    #[serde(default)]
    pub dealer: Option<String>,
    /// Partner teams, in order, that take this team's waiting conversations
    /// when it passes `overflow_queue` or `overflow_wait_s`.
    #[serde(default)]
    pub overflow_to: Vec<String>,
    /// Spill when this many conversations wait.
    #[serde(default)]
    pub overflow_queue: Option<u32>,
    /// Spill when the oldest has waited this long.
    #[serde(default)]
    pub overflow_wait_s: Option<u64>,
    /// Sent to the customer, once, when a conversation opens outside the
    /// team's hours (`{ name, language, params? }`).
    #[serde(default)]
    pub closed_template: Option<protocol::ws::TemplateRequest>,
    /// `[[teams.dispositions]]`: this team's own disposition schema, which
    /// replaces the global `[[dispositions]]` for its conversations (`None`:
    /// the global one applies).
    #[serde(default)]
    pub dispositions: Option<Vec<DispositionSpec>>,
    /// `[teams.copilot]`: the co-pilot's flows for this team's new
    /// conversations (PROTOCOL §11, docs/copilot.md).
    #[serde(default)]
    pub copilot: Option<Box<crate::copilot::CopilotSpec>>,
}

/// Per-team SLA targets; unset keys keep the global `[sla]` value.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlaOverride {
    pub first_response_s: Option<u64>,
    pub next_response_s: Option<u64>,
    pub resolution_s: Option<u64>,
    pub reassign_after_s: Option<u64>,
}

impl SlaOverride {
    pub fn apply(&self, global: &SlaSpec) -> SlaSpec {
        SlaSpec {
            first_response_s: self.first_response_s.unwrap_or(global.first_response_s),
            next_response_s: self.next_response_s.unwrap_or(global.next_response_s),
            resolution_s: self.resolution_s.unwrap_or(global.resolution_s),
            reassign_after_s: self.reassign_after_s.unwrap_or(global.reassign_after_s),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    RoundRobin,
    LeastLoaded,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_role")]
    pub role: Role,
    /// Plain token; prefer `token_sha256`.
    #[serde(default, skip_serializing)]
    pub token: Option<String>,
    #[serde(default, skip_serializing)]
    pub token_sha256: Option<String>,
    #[serde(default)]
    pub teams: Vec<String>,
    /// Most open conversations at once; 0 = never assigned. Defaults to 20 for
    /// agents and 0 for managers and admins.
    #[serde(default)]
    pub capacity: Option<u32>,
    #[serde(default)]
    pub city: Option<String>,
    /// For a manager: the teams whose conversations (and audit trail) it
    /// sees; empty = every team.
    #[serde(default)]
    pub manages: Vec<String>,
    /// The agent's working hours (the form of `[teams.hours]`): outside
    /// them it is given nothing new (contract §7). None: always.
    #[serde(default)]
    pub shift: Option<crate::hours::HoursSpec>,
    /// The co-pilot's agent assist at first (docs/copilot.md "Agent
    /// assist"): on with `true`. Once the agent (or a manager) turns it on
    /// or off, the stored choice applies. None: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copilot: Option<bool>,
}

fn default_role() -> Role {
    Role::Agent
}

impl AgentSpec {
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    pub fn effective_capacity(&self) -> u32 {
        self.capacity.unwrap_or(if self.role == Role::Agent { 20 } else { 0 })
    }

    /// The lowercase hex SHA-256 of the agent's token.
    pub fn token_hash(&self) -> Option<String> {
        use sha2::Digest;
        if let Some(hash) = &self.token_sha256 {
            return Some(hash.to_ascii_lowercase());
        }
        self.token.as_ref().map(|token| hex::encode(sha2::Sha256::digest(token.as_bytes())))
    }
}

impl std::fmt::Display for AgentSpec {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.id)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlaSpec {
    #[serde(default = "default_frt")]
    pub first_response_s: u64,
    #[serde(default = "default_nrt")]
    pub next_response_s: u64,
    #[serde(default = "default_trt")]
    pub resolution_s: u64,
    #[serde(default = "default_reassign")]
    pub reassign_after_s: u64,
}

fn default_frt() -> u64 {
    300
}
fn default_nrt() -> u64 {
    600
}
fn default_trt() -> u64 {
    86_400
}
fn default_reassign() -> u64 {
    600
}

impl Default for SlaSpec {
    fn default() -> Self {
        SlaSpec {
            first_response_s: default_frt(),
            next_response_s: default_nrt(),
            resolution_s: default_trt(),
            reassign_after_s: default_reassign(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    Enum,
    Text,
    Number,
    Date,
    Money,
    /// A promise to pay: `{date: "YYYY-MM-DD", amount: number}` (PROTOCOL
    /// §10); schedules a follow-up when the field says how.
    Promise,
}

impl FieldKind {
    /// The kind's name in the configuration and in `GET /api/v1/dispositions`.
    pub fn name(self) -> &'static str {
        match self {
            FieldKind::Enum => "enum",
            FieldKind::Text => "text",
            FieldKind::Number => "number",
            FieldKind::Date => "date",
            FieldKind::Money => "money",
            FieldKind::Promise => "promise",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DispositionSpec {
    pub key: String,
    #[serde(default)]
    pub label: Option<String>,
    pub kind: FieldKind,
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default)]
    pub required_on_close: bool,
    #[serde(default)]
    pub won_values: Vec<String>,
    /// A `promise` field's follow-up (docs/followups.md): the local time
    /// (`HH:MM`, the team's time zone) on the promised date when it is due.
    #[serde(default)]
    pub followup_at: Option<String>,
    /// The template sent to the customer when a follow-up is due; its
    /// `params` may hold placeholders (`{amount}`, `{date}`,
    /// `{contact.name}`, `{contact.wa_id}`, `{attributes.KEY}`,
    /// `{conversation_id}`).
    #[serde(default)]
    pub followup_template: Option<protocol::ws::TemplateRequest>,
    /// The field (an enum of the same schema) whose value in `paid_values`
    /// records a payment, which cancels the follow-up.
    #[serde(default)]
    pub paid_field: Option<String>,
    #[serde(default)]
    pub paid_values: Vec<String>,
}

impl DispositionSpec {
    /// A field of `kind` with nothing else set (tests and examples).
    pub fn new(key: &str, kind: FieldKind) -> DispositionSpec {
        DispositionSpec {
            key: key.to_owned(),
            label: None,
            kind,
            options: Vec::new(),
            required_on_close: false,
            won_values: Vec::new(),
            followup_at: None,
            followup_template: None,
            paid_field: None,
            paid_values: Vec::new(),
        }
    }
}

/// The disposition schemas in force: the global `[[dispositions]]` and the
/// teams' own. A conversation's current team decides which applies.
#[derive(Clone, Copy, Debug)]
pub struct Schemas<'a> {
    pub global: &'a [DispositionSpec],
    pub teams: &'a [TeamSpec],
}

impl<'a> Schemas<'a> {
    /// The schema of `team`'s conversations: its own when it has one, else
    /// the global one (also for a conversation without a team).
    pub fn of(&self, team: Option<&str>) -> &'a [DispositionSpec] {
        team.and_then(|team| self.teams.iter().find(|spec| spec.id == team))
            .and_then(|spec| spec.dispositions.as_deref())
            .unwrap_or(self.global)
    }
}

/// Everything the actor system needs to run.
#[derive(Clone, Debug)]
pub struct Settings {
    pub teams: Vec<TeamSpec>,
    pub agents: Vec<AgentSpec>,
    pub sla: SlaSpec,
    pub dispositions: Vec<DispositionSpec>,
    /// How long an agent whose last session closed keeps its conversations.
    pub presence_grace_ms: i64,
    /// How long a conversation actor stays in memory without an event.
    pub passivate_after_ms: i64,
    /// How often the housekeeping tick runs (passivation sweep, grace periods).
    pub tick_ms: u64,
    /// Bound of each WebSocket session's outgoing queue; past it the session is dropped.
    pub session_queue: usize,
    /// `[routing]`: rules and the owner policy.
    pub routing: crate::routing::RoutingSpec,
    /// `[[numbers]]`: the deployment's WhatsApp numbers and their default teams.
    pub numbers: Vec<crate::routing::NumberSpec>,
    /// The words that opt a customer out of (and back into) broadcasts.
    pub contact_words: ContactWords,
}

/// `[contacts]`: a customer whose whole text message, trimmed, is one of
/// `opt_out` (compared case-insensitively) is opted out; one of `opt_in`
/// opts them back in (PROTOCOL §8).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContactWords {
    #[serde(default = "default_opt_out_words", rename = "opt_out_words")]
    pub opt_out: Vec<String>,
    #[serde(default = "default_opt_in_words", rename = "opt_in_words")]
    pub opt_in: Vec<String>,
}

fn default_opt_out_words() -> Vec<String> {
    vec!["STOP".to_owned()]
}

fn default_opt_in_words() -> Vec<String> {
    vec!["START".to_owned()]
}

impl Default for ContactWords {
    fn default() -> Self {
        ContactWords { opt_out: default_opt_out_words(), opt_in: default_opt_in_words() }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            teams: Vec::new(),
            agents: Vec::new(),
            sla: SlaSpec::default(),
            dispositions: Vec::new(),
            presence_grace_ms: 60_000,
            passivate_after_ms: 300_000,
            tick_ms: 1_000,
            session_queue: 4_096,
            routing: Default::default(),
            numbers: Vec::new(),
            contact_words: ContactWords::default(),
        }
    }
}

impl Settings {
    /// The disposition schemas (global and per team).
    pub fn schemas(&self) -> Schemas<'_> {
        Schemas { global: &self.dispositions, teams: &self.teams }
    }

    /// The routing configuration, checked and compiled.
    pub fn routing_table(&self) -> Result<crate::routing::RoutingTable, crate::routing::RoutingError> {
        crate::routing::RoutingTable::new(self.routing.clone(), &self.teams, &self.agents, &self.numbers)
    }
}
