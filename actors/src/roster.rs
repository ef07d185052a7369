//! The agent pool in force (PROTOCOL §7 `/api/v1/admin/agents`), pure: who
//! the active agents are and which token is whose, what a `POST`, `PATCH`
//! or `DELETE` body says and changes, what is stored, and the
//! `configuration_changed` event of each change. No store, no clock, no
//! randomness: `System::{add_agent, change_agent, rotate_token,
//! deactivate_agent}` (`pool.rs`) generate nothing here, commit what these
//! return and apply it to the actors.
//!
//! The configuration file's `[[agents]]` are the initial pool. What the API
//! changed is stored as the `agents` section of the store's `settings`
//! table ([`StoredPool`]): one entry per agent the API touched, in the
//! order it first touched them — the agent's whole record (its token as a
//! SHA-256 digest, never the token) and, for one deactivated, when, by whom
//! and who took its contacts. At start the pool is the file's agents, each
//! replaced by its stored entry when there is one (removed when that entry
//! is deactivated), then the stored agents the file does not have: once the
//! API changed an agent, its record wins over the file's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use protocol::events::{Actor, Event};
use protocol::model::Role;
use protocol::time::UnixMs;
use protocol::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::hours::HoursSpec;
use crate::messages::Principal;
use crate::settings::{AgentSpec, TeamSpec};

/// The name of the pool's section in the store's `settings` table and in
/// the `configuration_changed` event.
pub const AGENTS: &str = "agents";

/// Longest agent id the API takes (ids name agents in paths and logs).
pub const MAX_ID_CHARS: usize = 64;

/// The fields a `POST` may give (a `PATCH` all but `id`, plus `rotate_token`).
pub const FIELDS: [&str; 8] = ["id", "name", "role", "teams", "capacity", "city", "shift", "manages"];

/// An agent's record as the store keeps it: an [`AgentSpec`] whose token
/// is its SHA-256 digest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredAgent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub role: Role,
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manages: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<HoursSpec>,
    pub token_sha256: String,
    /// The configuration's default for the co-pilot's agent assist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copilot: Option<bool>,
}

/// When and by whom an agent was deactivated, and who took its contacts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deactivation {
    /// RFC 3339, as every time the API shows.
    #[serde(with = "protocol::time::rfc3339")]
    pub at: UnixMs,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
}

/// One agent the API touched: its last record, and its deactivation when
/// it is deactivated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolEntry {
    pub id: String,
    pub agent: StoredAgent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated: Option<Deactivation>,
}

/// The stored `agents` section.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredPool {
    pub agents: Vec<PoolEntry>,
}

impl StoredAgent {
    fn of(spec: &AgentSpec) -> StoredAgent {
        StoredAgent {
            name: spec.name.clone(),
            role: spec.role,
            teams: spec.teams.clone(),
            capacity: spec.capacity,
            city: spec.city.clone(),
            manages: spec.manages.clone(),
            shift: spec.shift.clone(),
            token_sha256: spec.token_hash().unwrap_or_default(),
            copilot: spec.copilot,
        }
    }

    fn spec(&self, id: &str) -> AgentSpec {
        AgentSpec {
            id: id.to_owned(),
            name: self.name.clone(),
            role: self.role,
            token: None,
            token_sha256: Some(self.token_sha256.clone()),
            teams: self.teams.clone(),
            capacity: self.capacity,
            city: self.city.clone(),
            manages: self.manages.clone(),
            shift: self.shift.clone(),
            copilot: self.copilot,
        }
    }
}

/// An agent as `GET /api/v1/admin/agents` shows it (never its token).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub teams: Vec<String>,
    /// The capacity in force (the role's default when none was set).
    pub capacity: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<HoursSpec>,
    #[serde(default)]
    pub manages: Vec<String>,
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated: Option<Deactivation>,
    /// Whether the co-pilot's agent assist is on (docs/copilot.md "Agent
    /// assist"): the stored choice, else the configuration's default.
    #[serde(default)]
    pub copilot: bool,
}

impl AgentView {
    pub fn of(spec: &AgentSpec, deactivated: Option<&Deactivation>) -> AgentView {
        AgentView {
            id: spec.id.clone(),
            name: spec.display_name().to_owned(),
            role: spec.role,
            teams: spec.teams.clone(),
            capacity: spec.effective_capacity(),
            city: spec.city.clone(),
            shift: spec.shift.clone(),
            manages: spec.manages.clone(),
            active: deactivated.is_none(),
            deactivated: deactivated.cloned(),
            copilot: spec.copilot.unwrap_or(false),
        }
    }
}

/// The pool in force: the active agents in order (the file's, then those
/// added through the API), the deactivated ones (for the list), and the
/// principal of each token digest.
#[derive(Clone, Debug, Default)]
pub struct Roster {
    file: Arc<Vec<AgentSpec>>,
    stored: StoredPool,
    agents: Vec<AgentSpec>,
    deactivated: Vec<(AgentSpec, Deactivation)>,
    index: HashMap<String, usize>,
    principals: HashMap<String, Principal>,
}

fn invalid_field(field: &str, message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidField, message).with_detail(json!({ "field": field }))
}

/// Checks one agent's record against the teams: what the configuration
/// file's `[[agents]]` and the API share. `Err((field, problem))`.
pub fn check_spec(spec: &AgentSpec, teams: &[TeamSpec]) -> Result<(), (&'static str, String)> {
    if spec.id.trim().is_empty() {
        return Err(("id", "must not be empty".to_owned()));
    }
    if spec.id.starts_with('@') {
        return Err(("id", "must not start with `@` (kept for the system's own sends)".to_owned()));
    }
    let team_exists = |id: &String| teams.iter().any(|team| &team.id == id);
    for (field, named) in [("teams", &spec.teams), ("manages", &spec.manages)] {
        if let Some(team) = named.iter().find(|team| !team_exists(team)) {
            return Err((field, format!("no team {team:?} is defined in [[teams]]")));
        }
        let distinct: HashSet<&String> = named.iter().collect();
        if distinct.len() < named.len() {
            return Err((field, "names a team twice".to_owned()));
        }
    }
    if let Some(shift) = &spec.shift {
        crate::hours::Schedule::parse(shift).map_err(|problem| ("shift", problem))?;
    }
    Ok(())
}

impl Roster {
    /// The pool of a start: the file's agents with the stored section
    /// applied. A stored section that cannot be read, or an entry that no
    /// longer fits the teams (a team removed from the file), is left out
    /// and named in the returned warnings; the start goes on.
    pub fn new(file: &[AgentSpec], stored: Option<&[u8]>, teams: &[TeamSpec]) -> (Roster, Vec<String>) {
        let mut warnings = Vec::new();
        let mut pool = match stored.map(serde_json::from_slice::<StoredPool>) {
            None => StoredPool::default(),
            Some(Ok(pool)) => pool,
            Some(Err(error)) => {
                warnings.push(format!(
                    "the agent pool set through the admin API cannot be read ({error}); \
                     starting with the file's [[agents]]"
                ));
                StoredPool::default()
            }
        };
        // A stored record that no longer fits (a team removed from the
        // file) is repaired, not dropped: falling back to the file's record
        // would bring back a token rotated away or an agent deactivated.
        for entry in pool.agents.iter_mut().filter(|entry| entry.deactivated.is_none()) {
            while let Err((field, problem)) = check_spec(&entry.agent.spec(&entry.id), teams) {
                warnings.push(format!(
                    "agent {:?} as set through the admin API no longer fits the configuration \
                     ({field}: {problem}); starting without what does not fit",
                    entry.id
                ));
                let agent = &mut entry.agent;
                match field {
                    "teams" | "manages" => {
                        let named = if field == "teams" { &mut agent.teams } else { &mut agent.manages };
                        let mut seen = HashSet::new();
                        named.retain(|team| teams.iter().any(|known| &known.id == team) && seen.insert(team.clone()));
                    }
                    "shift" => agent.shift = None,
                    _ => break,
                }
            }
        }
        (Roster::build(Arc::new(file.to_vec()), pool), warnings)
    }

    fn build(file: Arc<Vec<AgentSpec>>, stored: StoredPool) -> Roster {
        let entries: HashMap<&str, &PoolEntry> = stored.agents.iter().map(|entry| (entry.id.as_str(), entry)).collect();
        let mut agents = Vec::new();
        let mut deactivated = Vec::new();
        let in_file: HashSet<&str> = file.iter().map(|spec| spec.id.as_str()).collect();
        let file_order = file.iter().map(|spec| entries.get(spec.id.as_str()).copied().ok_or(spec));
        let added = stored.agents.iter().filter(|entry| !in_file.contains(entry.id.as_str())).map(Ok);
        for place in file_order.chain(added) {
            match place {
                Err(spec) => agents.push(spec.clone()),
                Ok(PoolEntry { id, agent, deactivated: None }) => agents.push(agent.spec(id)),
                Ok(PoolEntry { id, agent, deactivated: Some(deactivation) }) => {
                    deactivated.push((agent.spec(id), deactivation.clone()));
                }
            }
        }
        let index = agents.iter().enumerate().map(|(at, spec)| (spec.id.clone(), at)).collect();
        let principals = agents
            .iter()
            .filter_map(|spec| Some((spec.token_hash()?, Principal { agent_id: spec.id.clone(), role: spec.role })))
            .collect();
        Roster { file, stored, agents, deactivated, index, principals }
    }

    /// The pool after `entry` replaced the stored entry of its agent (or
    /// joined the stored ones).
    fn with(&self, entry: PoolEntry) -> Roster {
        let mut stored = self.stored.clone();
        match stored.agents.iter_mut().find(|stored| stored.id == entry.id) {
            Some(stored) => *stored = entry,
            None => stored.agents.push(entry),
        }
        Roster::build(self.file.clone(), stored)
    }

    /// The active agents, managers and admins, in pool order.
    pub fn agents(&self) -> &[AgentSpec] {
        &self.agents
    }

    pub fn get(&self, id: &str) -> Option<&AgentSpec> {
        self.index.get(id).map(|&at| &self.agents[at])
    }

    /// When and by whom a deactivated agent left (`None`: active or unknown).
    pub fn deactivation(&self, id: &str) -> Option<&Deactivation> {
        self.deactivated.iter().find(|(spec, _)| spec.id == id).map(|(_, deactivation)| deactivation)
    }

    pub fn is_active(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Who a token is, by its lowercase hex SHA-256 digest.
    pub fn principal_of_digest(&self, digest: &str) -> Option<&Principal> {
        self.principals.get(digest)
    }

    /// A team's members, in pool order.
    pub fn members_of(&self, team: &str) -> Vec<String> {
        self.agents.iter().filter(|spec| spec.teams.iter().any(|id| id == team)).map(|spec| spec.id.clone()).collect()
    }

    /// Every agent, active ones first, as the admin API shows them.
    pub fn views(&self) -> Vec<AgentView> {
        let active = self.agents.iter().map(|spec| AgentView::of(spec, None));
        active
            .chain(self.deactivated.iter().map(|(spec, deactivation)| AgentView::of(spec, Some(deactivation))))
            .collect()
    }

    /// What the store keeps (`None`: the API never changed the pool).
    pub fn stored_form(&self) -> Option<Vec<u8>> {
        if self.stored.agents.is_empty() {
            return None;
        }
        serde_json::to_vec(&self.stored).ok()
    }

    fn active_admins(&self) -> usize {
        self.agents.iter().filter(|spec| spec.role == Role::Admin).count()
    }

    fn active(&self, id: &str) -> Result<&AgentSpec, ApiError> {
        self.get(id).ok_or_else(|| ApiError::not_found(format!("no active agent {id}")))
    }

    /// `POST`: a new agent (or one deactivated before, back) whose token
    /// has `token_sha256` as its digest.
    pub fn add(
        &self,
        fields: AgentFields,
        token_sha256: String,
        teams: &[TeamSpec],
    ) -> Result<(Roster, AgentSpec), ApiError> {
        let Some(id) = fields.id.clone() else {
            return Err(invalid_field("id", "`id` is required: the new agent's id".to_owned()));
        };
        let id_ok = !id.is_empty()
            && id.chars().count() <= MAX_ID_CHARS
            && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !id_ok || id.starts_with(['.', '-']) {
            return Err(invalid_field(
                "id",
                format!(
                    "`id` must be 1 to {MAX_ID_CHARS} letters, digits, `.`, `_` or `-`, not starting with `.` or `-`"
                ),
            ));
        }
        if self.is_active(&id) {
            return Err(invalid_field("id", format!("an active agent already has id {id:?}")));
        }
        if self.principals.contains_key(&token_sha256) {
            return Err(ApiError::bad_request("that token is another agent's; ask for another"));
        }
        let mut spec = AgentSpec {
            id: id.clone(),
            name: None,
            role: Role::Agent,
            token: None,
            token_sha256: Some(token_sha256),
            teams: Vec::new(),
            capacity: None,
            city: None,
            manages: Vec::new(),
            shift: None,
            copilot: None,
        };
        fields.apply_to(&mut spec);
        check(&spec, teams)?;
        let roster = self.with(PoolEntry { id, agent: StoredAgent::of(&spec), deactivated: None });
        Ok((roster, spec))
    }

    /// `PATCH` of fields: the agent before and after.
    pub fn change(
        &self,
        id: &str,
        fields: AgentFields,
        teams: &[TeamSpec],
    ) -> Result<(Roster, AgentSpec, AgentSpec), ApiError> {
        let before = self.active(id)?.clone();
        let mut after = before.clone();
        fields.apply_to(&mut after);
        check(&after, teams)?;
        if before.role == Role::Admin && after.role != Role::Admin && self.active_admins() == 1 {
            return Err(invalid_field("role", format!("{id} is the last admin; make another agent admin first")));
        }
        let roster = self.with(PoolEntry { id: id.to_owned(), agent: StoredAgent::of(&after), deactivated: None });
        Ok((roster, before, after))
    }

    /// `PATCH {rotate_token: true}`: the agent's token is now the one whose
    /// digest is `token_sha256`; the old one is nobody's. The agent after.
    pub fn rotate(&self, id: &str, token_sha256: String) -> Result<(Roster, AgentSpec), ApiError> {
        let mut spec = self.active(id)?.clone();
        if self.principals.contains_key(&token_sha256) {
            return Err(ApiError::bad_request("that token is another agent's; ask for another"));
        }
        spec.token = None;
        spec.token_sha256 = Some(token_sha256);
        let roster = self.with(PoolEntry { id: id.to_owned(), agent: StoredAgent::of(&spec), deactivated: None });
        Ok((roster, spec))
    }

    /// `DELETE`: the agent leaves the pool (its record is kept, shown as
    /// deactivated); its contacts go to `successor`, an active agent.
    pub fn deactivate(
        &self,
        id: &str,
        successor: Option<&str>,
        by: &str,
        at: UnixMs,
    ) -> Result<(Roster, AgentSpec), ApiError> {
        let spec = self.active(id)?.clone();
        if let Some(successor) = successor {
            if successor == id {
                return Err(invalid_field("successor", "an agent cannot succeed itself".to_owned()));
            }
            if !self.is_active(successor) {
                return Err(invalid_field(
                    "successor",
                    format!("`successor` must be an active agent; {successor:?} is not"),
                ));
            }
        }
        if spec.role == Role::Admin && self.active_admins() == 1 {
            return Err(ApiError::bad_request(format!("{id} is the last admin; make another agent admin first")));
        }
        let deactivation = Deactivation { at, by: by.to_owned(), successor: successor.map(str::to_owned) };
        let entry = PoolEntry { id: id.to_owned(), agent: StoredAgent::of(&spec), deactivated: Some(deactivation) };
        Ok((self.with(entry), spec))
    }
}

fn check(spec: &AgentSpec, teams: &[TeamSpec]) -> Result<(), ApiError> {
    check_spec(spec, teams).map_err(|(field, problem)| invalid_field(field, format!("`{field}` {problem}")))
}

/// A validated `POST` or `PATCH` body. For `name`, `capacity`, `city` and
/// `shift`: `None` leaves it, `Some(None)` clears it (back to the default).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentFields {
    pub id: Option<String>,
    pub name: Option<Option<String>>,
    pub role: Option<Role>,
    pub teams: Option<Vec<String>>,
    pub capacity: Option<Option<u32>>,
    pub city: Option<Option<String>>,
    pub shift: Option<Option<HoursSpec>>,
    pub manages: Option<Vec<String>>,
}

impl AgentFields {
    fn apply_to(self, spec: &mut AgentSpec) {
        if let Some(name) = self.name {
            spec.name = name;
        }
        if let Some(role) = self.role {
            spec.role = role;
        }
        if let Some(teams) = self.teams {
            spec.teams = teams;
        }
        if let Some(capacity) = self.capacity {
            spec.capacity = capacity;
        }
        if let Some(city) = self.city {
            spec.city = city;
        }
        if let Some(shift) = self.shift {
            spec.shift = shift;
        }
        if let Some(manages) = self.manages {
            spec.manages = manages;
        }
    }

    pub fn is_empty(&self) -> bool {
        self == &AgentFields::default()
    }
}

/// What a `PATCH` asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentPatch {
    Fields(Box<AgentFields>),
    RotateToken,
}

fn team_list(field: &str, value: &Value) -> Result<Vec<String>, ApiError> {
    serde_json::from_value::<Vec<String>>(value.clone())
        .map_err(|_| invalid_field(field, format!("`{field}` must be a list of team ids")))
}

/// Reads a `POST` (`creating`) or `PATCH` body's fields. Unknown keys and
/// wrong types are refused with a sentence naming the field.
pub fn parse_fields(body: &Value, creating: bool) -> Result<AgentFields, ApiError> {
    let allowed = if creating { &FIELDS[..] } else { &FIELDS[1..] };
    let Value::Object(body) = body else {
        return Err(ApiError::bad_request(format!("the body must be a JSON object of {}", allowed.join(", "))));
    };
    let mut fields = AgentFields::default();
    for (key, value) in body {
        match key.as_str() {
            "id" if creating => match value {
                Value::String(id) => fields.id = Some(id.clone()),
                _ => return Err(invalid_field("id", "`id` must be a string".to_owned())),
            },
            "name" => fields.name = Some(crate::contacts::text_or_null("name", value)?),
            "city" => fields.city = Some(crate::contacts::text_or_null("city", value)?),
            "role" => {
                let role = serde_json::from_value(value.clone()).map_err(|_| {
                    invalid_field("role", "`role` must be \"agent\", \"manager\" or \"admin\"".to_owned())
                })?;
                fields.role = Some(role);
            }
            "teams" => fields.teams = Some(team_list("teams", value)?),
            "manages" => fields.manages = Some(team_list("manages", value)?),
            "capacity" => {
                let capacity = match value {
                    Value::Null => None,
                    value => Some(value.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
                        invalid_field(
                            "capacity",
                            "`capacity` must be a whole number from 0, or null for the role's default".to_owned(),
                        )
                    })?),
                };
                fields.capacity = Some(capacity);
            }
            "shift" => {
                let shift = match value {
                    Value::Null => None,
                    value => Some(serde_json::from_value::<HoursSpec>(value.clone()).map_err(|error| {
                        invalid_field(
                            "shift",
                            format!("`shift` must be {{timezone, week, holidays?}} or null: {error}"),
                        )
                    })?),
                };
                fields.shift = Some(shift);
            }
            other => {
                return Err(invalid_field(
                    other,
                    format!("unknown field `{other}`; the fields are {}", allowed.join(", ")),
                ));
            }
        }
    }
    Ok(fields)
}

/// Reads a `PATCH` body: fields to change, or `{"rotate_token": true}` alone.
pub fn parse_patch(body: &Value) -> Result<AgentPatch, ApiError> {
    if let Some(rotate) = body.get("rotate_token") {
        if rotate != &Value::Bool(true) {
            return Err(invalid_field("rotate_token", "`rotate_token` can only be true".to_owned()));
        }
        if body.as_object().is_some_and(|body| body.len() > 1) {
            return Err(ApiError::bad_request("rotate a token alone: `{\"rotate_token\": true}` with no other field"));
        }
        return Ok(AgentPatch::RotateToken);
    }
    let fields = parse_fields(body, false)?;
    if fields.is_empty() {
        return Err(ApiError::bad_request(format!(
            "say what to change: any of {}, or `rotate_token: true`",
            FIELDS[1..].join(", ")
        )));
    }
    Ok(AgentPatch::Fields(Box::new(fields)))
}

/// Reads a `DELETE` body: `{}` / empty, or `{"successor": "<agent id>"}`.
pub fn parse_successor(body: &Value) -> Result<Option<String>, ApiError> {
    let Value::Object(body) = body else {
        return Err(ApiError::bad_request("the body must be a JSON object: {\"successor\"?: \"<agent id>\"}"));
    };
    let mut successor = None;
    for (key, value) in body {
        match (key.as_str(), value) {
            ("successor", Value::Null) => {}
            ("successor", Value::String(id)) => successor = Some(id.clone()),
            ("successor", _) => return Err(invalid_field("successor", "`successor` must be an agent id".to_owned())),
            (other, _) => {
                return Err(invalid_field(other, format!("unknown field `{other}`; the only field is `successor`")));
            }
        }
    }
    Ok(successor)
}

/// What happened to the pool, for the `configuration_changed` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolAction {
    Added,
    Changed,
    TokenRotated,
    Deactivated,
}

impl PoolAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolAction::Added => "added",
            PoolAction::Changed => "changed",
            PoolAction::TokenRotated => "token_rotated",
            PoolAction::Deactivated => "deactivated",
        }
    }
}

/// The `configuration_changed` event of a pool change (section `agents`):
/// `{action, agent, before?, after?, successor?}`, the records as the API
/// shows them (no token, no digest), by the admin who made it.
pub fn pool_changed(
    action: PoolAction,
    before: Option<&AgentSpec>,
    after: Option<&AgentSpec>,
    successor: Option<&str>,
    user: &str,
    at: UnixMs,
) -> Event {
    let agent = after.or(before).map(|spec| spec.id.clone()).unwrap_or_default();
    let mut detail = json!({"action": action.as_str(), "agent": agent});
    if let Some(before) = before {
        detail["before"] = json!(AgentView::of(before, None));
    }
    if let Some(after) = after {
        detail["after"] = json!(AgentView::of(after, None));
    }
    if let Some(successor) = successor {
        detail["successor"] = json!(successor);
    }
    crate::configuration::changed(AGENTS, detail, user, at)
}

/// What handing a leaving agent's contacts over writes: each record with
/// `owner` set to `successor` (or cleared), and its `contact_updated`
/// event, by the admin.
pub fn hand_over(owned: &[storage::ContactRecord], successor: Option<&str>, by: &str, at: UnixMs) -> Vec<storage::Op> {
    let patch = crate::contacts::ContactPatch { owner: Some(successor.map(str::to_owned)), ..Default::default() };
    let mut writes = Vec::with_capacity(owned.len() * 2);
    for contact in owned {
        let Ok((after, changes)) = crate::contacts::apply_patch(Some(contact), &contact.wa_id, &patch, at) else {
            continue;
        };
        if changes.is_empty() {
            continue;
        }
        let event = crate::contacts::contact_event(&contact.wa_id, None, at, Actor::user(by), changes);
        writes.push(storage::Op::PutContact(Box::new(after)));
        writes.push(storage::Op::Event(Box::new(event)));
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::events::EventBody;

    fn teams() -> Vec<TeamSpec> {
        ["sales", "support"].into_iter().map(|id| TeamSpec { id: id.into(), ..Default::default() }).collect()
    }

    fn agent(id: &str, role: Role, teams: &[&str]) -> AgentSpec {
        AgentSpec {
            id: id.into(),
            name: None,
            role,
            token: Some(format!("{id}-token-secret")),
            token_sha256: None,
            teams: teams.iter().map(|team| team.to_string()).collect(),
            capacity: None,
            city: None,
            manages: Vec::new(),
            shift: None,
            copilot: None,
        }
    }

    fn file() -> Vec<AgentSpec> {
        vec![
            agent("asha", Role::Agent, &["sales"]),
            agent("ravi", Role::Agent, &["sales", "support"]),
            agent("root", Role::Admin, &[]),
        ]
    }

    fn digest(token: &str) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    }

    fn fields(body: Value) -> AgentFields {
        parse_fields(&body, true).expect("fields")
    }

    #[test]
    fn the_file_is_the_pool_until_the_api_changes_it() {
        let (roster, warnings) = Roster::new(&file(), None, &teams());
        assert!(warnings.is_empty());
        let ids: Vec<&str> = roster.agents().iter().map(|spec| spec.id.as_str()).collect();
        assert_eq!(ids, ["asha", "ravi", "root"]);
        assert_eq!(roster.members_of("sales"), ["asha", "ravi"]);
        assert_eq!(roster.principal_of_digest(&digest("asha-token-secret")).map(|p| p.agent_id.as_str()), Some("asha"));
        assert_eq!(roster.stored_form(), None, "nothing to store");
    }

    #[test]
    fn an_added_agent_joins_the_pool_with_its_token_and_survives_a_start() {
        let (roster, _) = Roster::new(&file(), None, &teams());
        let body = json!({"id": "meena", "name": "Meena", "teams": ["support"], "capacity": 5, "city": "Pune"});
        let (added, spec) = roster.add(fields(body), digest("meena-new"), &teams()).expect("added");
        assert_eq!((spec.capacity, spec.city.as_deref(), spec.role), (Some(5), Some("Pune"), Role::Agent));
        assert_eq!(added.members_of("support"), ["ravi", "meena"]);
        assert_eq!(added.principal_of_digest(&digest("meena-new")).map(|p| p.agent_id.as_str()), Some("meena"));
        let stored = added.stored_form().expect("stored");
        let text = String::from_utf8(stored.clone()).unwrap();
        assert!(!text.contains("meena-new"), "the token itself is never stored: {text}");
        let (again, warnings) = Roster::new(&file(), Some(&stored), &teams());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(again.get("meena"), added.get("meena"));
        assert_eq!(again.views(), added.views());
    }

    #[test]
    fn what_a_new_agent_may_not_be_is_named() {
        let (roster, _) = Roster::new(&file(), None, &teams());
        let refused = |body: Value| {
            let error = roster.add(fields(body.clone()), digest("x"), &teams()).expect_err(&body.to_string());
            (error.code, error.detail.and_then(|detail| detail["field"].as_str().map(str::to_owned)))
        };
        let field = |name: &str| (ErrorCode::InvalidField, Some(name.to_owned()));
        assert_eq!(refused(json!({"name": "No id"})), field("id"));
        assert_eq!(refused(json!({"id": "asha"})), field("id"), "taken by an active agent");
        assert_eq!(refused(json!({"id": "@system"})), field("id"));
        assert_eq!(refused(json!({"id": "has space"})), field("id"));
        assert_eq!(refused(json!({"id": "x", "teams": ["nowhere"]})), field("teams"));
        assert_eq!(refused(json!({"id": "x", "teams": ["sales", "sales"]})), field("teams"));
        assert_eq!(refused(json!({"id": "x", "manages": ["nowhere"]})), field("manages"));
        let bad_shift = json!({"id": "x", "shift": {"timezone": "Mars/Base", "week": {}}});
        assert_eq!(refused(bad_shift), field("shift"));
        let error = roster.add(fields(json!({"id": "x"})), digest("asha-token-secret"), &teams()).unwrap_err();
        assert_eq!(error.code, ErrorCode::BadRequest, "a token another agent has");
    }

    #[test]
    fn bodies_are_read_field_by_field() {
        let error = parse_fields(&json!({"id": "x", "colour": "red"}), true).unwrap_err();
        assert_eq!((error.code, error.detail.unwrap()["field"].clone()), (ErrorCode::InvalidField, json!("colour")));
        for (body, field) in [
            (json!({"capacity": -1}), "capacity"),
            (json!({"capacity": "5"}), "capacity"),
            (json!({"role": "boss"}), "role"),
            (json!({"teams": "sales"}), "teams"),
            (json!({"name": ""}), "name"),
            (json!({"shift": {"timezone": "UTC", "weeks": {}}}), "shift"),
            (json!({"id": "x"}), "id"),
        ] {
            let error = parse_fields(&body, false).expect_err(&body.to_string());
            assert_eq!(error.detail.unwrap()["field"], json!(field), "{body}");
        }
        let patch = parse_fields(&json!({"capacity": null, "city": null, "teams": []}), false).unwrap();
        assert_eq!((patch.capacity, patch.city, patch.teams), (Some(None), Some(None), Some(vec![])));
        assert_eq!(parse_patch(&json!({"rotate_token": true})).unwrap(), AgentPatch::RotateToken);
        assert_eq!(parse_patch(&json!({"rotate_token": true, "name": "x"})).unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(parse_patch(&json!({"rotate_token": false})).unwrap_err().code, ErrorCode::InvalidField);
        assert_eq!(parse_patch(&json!({})).unwrap_err().code, ErrorCode::BadRequest, "nothing to change");
        assert_eq!(parse_patch(&json!([])).unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(parse_successor(&json!({})).unwrap(), None);
        assert_eq!(parse_successor(&json!({"successor": "ravi"})).unwrap().as_deref(), Some("ravi"));
        assert_eq!(parse_successor(&json!({"successor": 3})).unwrap_err().code, ErrorCode::InvalidField);
        assert_eq!(parse_successor(&json!({"heir": "ravi"})).unwrap_err().code, ErrorCode::InvalidField);
    }

    #[test]
    fn a_change_keeps_the_token_and_a_rotation_replaces_it() {
        let (roster, _) = Roster::new(&file(), None, &teams());
        let change = parse_fields(&json!({"teams": ["support"], "capacity": 3}), false).unwrap();
        let (changed, before, after) = roster.change("asha", change, &teams()).expect("changed");
        assert_eq!(
            (before.teams.as_slice(), after.teams.as_slice()),
            (&["sales".to_owned()][..], &["support".to_owned()][..])
        );
        assert_eq!(changed.members_of("sales"), ["ravi"]);
        assert_eq!(changed.members_of("support"), ["asha", "ravi"], "pool order, the file's");
        let old = digest("asha-token-secret");
        assert!(changed.principal_of_digest(&old).is_some(), "a change keeps the token");
        let (rotated, _) = changed.rotate("asha", digest("asha-next")).expect("rotated");
        assert!(rotated.principal_of_digest(&old).is_none(), "the old token is nobody's at once");
        assert_eq!(rotated.principal_of_digest(&digest("asha-next")).map(|p| p.agent_id.as_str()), Some("asha"));
        assert_eq!(rotated.get("asha").unwrap().capacity, Some(3), "rotation keeps the record");
        let (restarted, _) = Roster::new(&file(), rotated.stored_form().as_deref(), &teams());
        assert!(restarted.principal_of_digest(&old).is_none(), "the file's token stays revoked after a start");
        assert_eq!(roster.change("nobody", AgentFields::default(), &teams()).unwrap_err().code, ErrorCode::NotFound);
    }

    #[test]
    fn a_deactivated_agent_leaves_the_pool_keeps_its_record_and_may_come_back() {
        let (roster, _) = Roster::new(&file(), None, &teams());
        assert_eq!(roster.deactivate("asha", Some("asha"), "root", 1).unwrap_err().code, ErrorCode::InvalidField);
        assert_eq!(roster.deactivate("asha", Some("nobody"), "root", 1).unwrap_err().code, ErrorCode::InvalidField);
        let (gone, spec) = roster.deactivate("asha", Some("ravi"), "root", 7).expect("deactivated");
        assert_eq!(spec.id, "asha");
        assert!(!gone.is_active("asha"));
        assert!(gone.principal_of_digest(&digest("asha-token-secret")).is_none());
        assert_eq!(gone.members_of("sales"), ["ravi"]);
        let view = gone.views().into_iter().find(|view| view.id == "asha").unwrap();
        assert_eq!(
            (view.active, view.deactivated),
            (false, Some(Deactivation { at: 7, by: "root".into(), successor: Some("ravi".into()) }))
        );
        assert_eq!(gone.deactivate("asha", None, "root", 8).unwrap_err().code, ErrorCode::NotFound);
        let (restarted, _) = Roster::new(&file(), gone.stored_form().as_deref(), &teams());
        assert!(!restarted.is_active("asha"), "still gone after a start, though the file has it");
        let (back, _) =
            restarted.add(fields(json!({"id": "asha", "teams": ["sales"]})), digest("asha-back"), &teams()).unwrap();
        assert!(back.is_active("asha"));
        assert_eq!(back.members_of("sales"), ["asha", "ravi"], "back in its file place");
    }

    #[test]
    fn the_last_admin_stays() {
        let (roster, _) = Roster::new(&file(), None, &teams());
        assert_eq!(roster.deactivate("root", None, "root", 1).unwrap_err().code, ErrorCode::BadRequest);
        let demote = parse_fields(&json!({"role": "manager"}), false).unwrap();
        assert_eq!(roster.change("root", demote.clone(), &teams()).unwrap_err().code, ErrorCode::InvalidField);
        let promote = parse_fields(&json!({"role": "admin"}), false).unwrap();
        let (two, _, _) = roster.change("ravi", promote, &teams()).unwrap();
        assert!(two.change("root", demote, &teams()).is_ok(), "another admin remains");
    }

    #[test]
    fn a_stored_record_that_no_longer_fits_is_repaired_with_a_warning() {
        let (roster, _) = Roster::new(&file(), None, &teams());
        let body = json!({"id": "meena", "teams": ["support", "sales"]});
        let (added, _) = roster.add(fields(body), digest("m"), &teams()).unwrap();
        let (rotated, _) = added.rotate("asha", digest("asha-next")).unwrap();
        let (gone, _) = rotated.deactivate("ravi", None, "root", 3).unwrap();
        let only_sales = vec![TeamSpec { id: "sales".into(), ..Default::default() }];
        let (restarted, warnings) = Roster::new(&file(), gone.stored_form().as_deref(), &only_sales);
        assert_eq!(restarted.get("meena").map(|spec| spec.teams.clone()), Some(vec!["sales".to_owned()]));
        assert!(warnings[0].contains("meena") && warnings[0].contains("teams"), "{warnings:?}");
        assert!(restarted.principal_of_digest(&digest("asha-token-secret")).is_none(), "no old token comes back");
        assert!(!restarted.is_active("ravi"), "nor a deactivated agent, though its teams are gone");
        let (unreadable, warnings) = Roster::new(&file(), Some(b"{not json"), &teams());
        assert_eq!(unreadable.agents().len(), 3);
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn contacts_pass_to_the_successor_or_lose_their_owner() {
        let mut owned = storage::ContactRecord::new("919800000001");
        owned.owner = Some("asha".into());
        owned.city = Some("Pune".into());
        let writes = hand_over(std::slice::from_ref(&owned), Some("ravi"), "root", 9);
        let [storage::Op::PutContact(after), storage::Op::Event(event)] = writes.as_slice() else {
            panic!("{writes:?}")
        };
        assert_eq!((after.owner.as_deref(), after.city.as_deref(), after.updated_at), (Some("ravi"), Some("Pune"), 9));
        let EventBody::ContactUpdated { changes } = &event.body else { panic!("{event:?}") };
        assert_eq!(
            (changes[0].key.as_str(), &changes[0].old, &changes[0].new),
            ("owner", &json!("asha"), &json!("ravi"))
        );
        assert_eq!(event.actor, Actor::user("root"));
        let writes = hand_over(&[owned], None, "root", 9);
        let [storage::Op::PutContact(after), _] = writes.as_slice() else { panic!("{writes:?}") };
        assert_eq!(after.owner, None, "no successor: the owner is cleared");
    }

    #[test]
    fn the_event_shows_the_records_without_tokens() {
        let asha = agent("asha", Role::Agent, &["sales"]);
        let event = pool_changed(PoolAction::Deactivated, Some(&asha), None, Some("ravi"), "root", 5);
        let EventBody::ConfigurationChanged { section, detail } = &event.body else { panic!() };
        assert_eq!(section, "agents");
        assert_eq!((detail["action"].as_str(), detail["agent"].as_str()), (Some("deactivated"), Some("asha")));
        assert_eq!(detail["successor"], "ravi");
        assert!(!detail.to_string().contains("token"), "{detail}");
    }
}
