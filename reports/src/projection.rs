//! What each event of the conversation event log means for the reports.
//!
//! Definitions (docs/reports.md):
//! - **First response time**: from the customer's first message to the
//!   first message a person (an agent, manager or admin) sends; **next
//!   response time**: from a customer's message that waits (the first
//!   since a person last wrote) to the next a person sends; **resolution
//!   time**: from the first message to the close. Each counts only the
//!   conversation's team's business hours (none set: all hours), and is
//!   counted when it ends, for the person who answered (the holder, for a
//!   resolution) and the conversation's team.
//! - **Funnel**, a cohort per assignment: `assigned` when an agent is given
//!   the conversation; `contacted` when that agent then writes to the
//!   customer; `responded` when the customer writes after that; `won` when
//!   it closes in that agent's hands with an outcome in `won_values`
//!   (`closed` counts every close). Each stage counts for the agent who held
//!   the conversation at that stage, in the bucket of that agent's
//!   assignment; for a team, once per conversation while it stays in the team.
//! - **Breaches**: each `sla_breach`, for the holder and the team then.
//! - **Attribution**, a cohort per conversation, by its source (the ad's
//!   `source_id`, the referral code, or organic), in the bucket of its
//!   opening: `conversations`, `qualified` (reached an agent), `won`, and
//!   `revenue` (the won conversations' first `money` field). The same
//!   counts are kept per source and team, the team the conversation first
//!   went to (routed or assigned), for a manager limited to teams.
//!   `qualified` is reached an agent or marked qualified by the co-pilot
//!   (`copilot_qualified`), whichever comes first, once per conversation.
//! - **Co-pilot**, per source in the bucket of the opening (and per source
//!   and team, as attribution): conversations it took (`copilot_started`),
//!   qualified (`copilot_qualified`) and the time from the opening to that
//!   (wall clock), hand-overs by reason, unqualified closes by reason.

use std::collections::{BTreeSet, HashMap};

use actors::deadlines::Policies;
use actors::rules::Dispositions;
use actors::settings::Settings;
use protocol::events::{Actor, Event, EventBody};
use protocol::model::{Source, SourceKind};
use protocol::time::UnixMs;
use protocol::ws::{SlaKind, UnassignReason};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::rollup::{Bucket, BucketKey, Dim, Rollups};

/// What the projection counts. A stored projection of another version is
/// projected again from the event log at start (`engine::reports`).
/// 3: won outcomes and revenue follow the conversation's team's schema
/// (`[[teams.dispositions]]`), no longer the global one for every team.
/// 4: the co-pilot's counts per source (`copilot_*` events), and a
/// conversation the co-pilot marked qualified counts as `qualified` in
/// attribution (PROTOCOL §5) before it reaches an agent.
pub const VERSION: u32 = 4;

/// What the reports need of the configuration.
#[derive(Clone, Debug)]
pub struct ReportSettings {
    /// Teams' business hours.
    policies: Policies,
    /// What a close is worth, per the schema of the team it closed in.
    outcomes: Dispositions,
}

impl ReportSettings {
    pub fn from_settings(settings: &Settings) -> Result<ReportSettings, String> {
        let teams = settings.teams.iter().filter_map(|team| Some((team.id.as_str(), team.dispositions.as_deref()?)));
        Ok(ReportSettings {
            policies: Policies::from_settings(settings)?,
            outcomes: Dispositions::from_config(&settings.dispositions, teams),
        })
    }

    fn business_ms(&self, team: Option<&str>, from: UnixMs, to: UnixMs) -> i64 {
        if to <= from {
            return 0;
        }
        self.policies.of(team).schedule.between(from, to)
    }

    /// Whether a close in `team` is won, by that team's schema (its own, or
    /// the global one), as the close itself was checked against.
    fn is_won(&self, team: Option<&str>, fields: &Map<String, Value>) -> bool {
        self.outcomes.of(team).is_won(fields)
    }

    /// A won close's revenue: the schema's first `money` field, 0 without one.
    fn revenue(&self, team: Option<&str>, fields: &Map<String, Value>) -> f64 {
        self.outcomes.of(team).amount(fields).unwrap_or(0.0)
    }
}

/// A funnel cohort in progress: who holds the conversation (an agent, or
/// the team it is in) since when, and how far it went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cohort {
    pub id: String,
    pub since: UnixMs,
    pub contacted: bool,
    pub responded: bool,
}

impl Cohort {
    fn new(id: &str, since: UnixMs) -> Cohort {
        Cohort { id: id.to_owned(), since, contacted: false, responded: false }
    }
}

/// A conversation being handled, as the reports follow it (kept until it
/// closes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub opened_at: UnixMs,
    pub source: Dim,
    pub team: Option<String>,
    pub agent: Option<Cohort>,
    pub team_cohort: Option<Cohort>,
    pub qualified: bool,
    /// The customer's oldest message no person has answered yet.
    pub waiting_since: Option<UnixMs>,
    pub first_response_done: bool,
    /// The team it first went to: its attribution per team counts there.
    #[serde(default)]
    pub first_team: Option<String>,
}

impl Conversation {
    fn opened(at: UnixMs, source: Dim) -> Conversation {
        Conversation {
            opened_at: at,
            source,
            team: None,
            agent: None,
            team_cohort: None,
            qualified: false,
            waiting_since: None,
            first_response_done: false,
            first_team: None,
        }
    }

    /// Its source counted for the team it first went to.
    fn source_team(&self) -> Option<Dim> {
        let (Dim::Source { kind, id }, Some(team)) = (&self.source, &self.first_team) else { return None };
        Some(Dim::SourceTeam { team: team.clone(), kind: kind.clone(), id: id.clone() })
    }

    /// Its source, and its source counted for the team it first went to.
    fn source_dims(&self) -> Vec<Dim> {
        std::iter::once(self.source.clone()).chain(self.source_team()).collect()
    }

    /// Reached an agent or marked qualified by the co-pilot, whichever
    /// comes first: counted once, in the bucket of its opening.
    fn qualify(&mut self, rollups: &mut Rollups) {
        if self.qualified {
            return;
        }
        self.qualified = true;
        for dim in self.source_dims() {
            rollups.add(&dim, self.opened_at, |bucket| bucket.counts.qualified += 1);
        }
    }

    /// Notes the team it is now in; the first one it went to starts its
    /// attribution there.
    fn entered(&mut self, team: Option<String>, rollups: &mut Rollups) {
        if team.is_some() {
            self.team = team;
        }
        if self.first_team.is_none() && self.team.is_some() {
            self.first_team = self.team.clone();
            if let Some(dim) = self.source_team() {
                rollups.add(&dim, self.opened_at, |bucket| bucket.counts.conversations += 1);
            }
        }
    }
}

fn source_dim(source: &Source) -> Dim {
    let (kind, id) = match source.kind {
        SourceKind::Paid => ("paid", source.source_id.clone()),
        SourceKind::Referral => ("referral", source.code.clone().or_else(|| source.source_id.clone())),
        SourceKind::Organic => ("organic", None),
    };
    Dim::Source { kind: kind.to_owned(), id: id.unwrap_or_default() }
}

/// The projection: the conversations being handled and the rollups, and
/// which of them changed since the last [`Projection::take_changes`].
pub struct Projection {
    settings: ReportSettings,
    conversations: HashMap<String, Conversation>,
    pub rollups: Rollups,
    changed: BTreeSet<String>,
}

/// What changed: buckets as they are now; conversations as they are now,
/// or `None` when closed (forgotten).
pub struct Changes {
    pub buckets: Vec<(BucketKey, Bucket)>,
    pub conversations: Vec<(String, Option<Conversation>)>,
}

impl Projection {
    pub fn new(settings: ReportSettings) -> Projection {
        Projection { settings, conversations: HashMap::new(), rollups: Rollups::default(), changed: BTreeSet::new() }
    }

    /// A stored conversation, read back at start.
    pub fn load_conversation(&mut self, id: String, conversation: Conversation) {
        self.conversations.insert(id, conversation);
    }

    pub fn open_conversations(&self) -> usize {
        self.conversations.len()
    }

    pub fn take_changes(&mut self) -> Changes {
        let changed = std::mem::take(&mut self.changed);
        Changes {
            buckets: self.rollups.take_dirty(),
            conversations: changed
                .into_iter()
                .map(|id| {
                    let now = self.conversations.get(&id).cloned();
                    (id, now)
                })
                .collect(),
        }
    }

    /// Applies one event of the log (in log order).
    pub fn apply(&mut self, event: &Event) {
        let Some(id) = event.conversation_id.as_deref() else { return };
        let at = event.at;
        if let EventBody::Opened { source } = &event.body {
            let source = source_dim(source);
            self.rollups.add(&source, at, |bucket| bucket.counts.conversations += 1);
            self.conversations.insert(id.to_owned(), Conversation::opened(at, source));
            self.changed.insert(id.to_owned());
            return;
        }
        // A conversation opened before the log began is followed from its
        // next message or assignment (its opening and source unknown).
        if !self.conversations.contains_key(id) {
            if !matches!(event.body, EventBody::MessageIn { .. } | EventBody::Assigned { .. }) {
                return;
            }
            let unknown = Dim::Source { kind: "organic".to_owned(), id: String::new() };
            self.conversations.insert(id.to_owned(), Conversation::opened(at, unknown));
        }
        let Some(conversation) = self.conversations.get_mut(id) else { return };
        let settings = &self.settings;
        let rollups = &mut self.rollups;
        let mut closed = false;
        match &event.body {
            EventBody::MessageIn { .. } => {
                conversation.waiting_since.get_or_insert(at);
                for (cohort, dim) in cohorts(conversation) {
                    if cohort.contacted && !cohort.responded {
                        cohort.responded = true;
                        rollups.add(&dim, cohort.since, |bucket| bucket.counts.responded += 1);
                    }
                }
            }
            EventBody::MessageOut { .. } => {
                let Actor::User { id: person } = &event.actor else { return };
                if let Some(waiting) = conversation.waiting_since.take() {
                    let seconds = settings.business_ms(conversation.team.as_deref(), waiting, at) as f64 / 1000.0;
                    let first = !conversation.first_response_done;
                    conversation.first_response_done = true;
                    let mut dims = vec![Dim::agent(person)];
                    dims.extend(conversation.team.as_deref().map(Dim::team));
                    for dim in dims {
                        rollups.add(&dim, at, |bucket| {
                            if first {
                                bucket.first_response.add(seconds);
                            } else {
                                bucket.next_response.add(seconds);
                            }
                        });
                    }
                }
                let holder_wrote = conversation.agent.as_ref().is_some_and(|cohort| &cohort.id == person);
                if holder_wrote {
                    for (cohort, dim) in cohorts(conversation) {
                        if !cohort.contacted {
                            cohort.contacted = true;
                            rollups.add(&dim, cohort.since, |bucket| bucket.counts.contacted += 1);
                        }
                    }
                }
            }
            EventBody::Routed { team_id, .. } => {
                if team_id.is_none() {
                    conversation.team = None;
                }
                conversation.entered(team_id.clone(), rollups);
            }
            EventBody::Assigned { agent_id, team_id, .. } => {
                conversation.entered(team_id.clone(), rollups);
                conversation.agent = Some(Cohort::new(agent_id, at));
                rollups.add(&Dim::agent(agent_id), at, |bucket| bucket.counts.assigned += 1);
                if let Some(team) = conversation.team.clone()
                    && conversation.team_cohort.as_ref().is_none_or(|cohort| cohort.id != team)
                {
                    conversation.team_cohort = Some(Cohort::new(&team, at));
                    rollups.add(&Dim::team(&team), at, |bucket| bucket.counts.assigned += 1);
                }
                conversation.qualify(rollups);
            }
            // The co-pilot's part (docs/copilot.md), per source in the
            // bucket of the opening.
            EventBody::CopilotStarted { team_id, .. } => {
                if !team_id.is_empty() {
                    conversation.entered(Some(team_id.clone()), rollups);
                }
                for dim in conversation.source_dims() {
                    rollups.add(&dim, conversation.opened_at, |bucket| bucket.counts.copilot.started += 1);
                }
            }
            EventBody::CopilotQualified { .. } => {
                // Wall-clock time: the co-pilot answers at any hour.
                let seconds = (at - conversation.opened_at).max(0) as f64 / 1000.0;
                for dim in conversation.source_dims() {
                    rollups.add(&dim, conversation.opened_at, |bucket| {
                        bucket.counts.copilot.qualified += 1;
                        bucket.time_to_qualification.add(seconds);
                    });
                }
                conversation.qualify(rollups);
            }
            EventBody::CopilotHandoff { reason, .. } => {
                for dim in conversation.source_dims() {
                    rollups.add(&dim, conversation.opened_at, |bucket| {
                        if let Some(count) = bucket.counts.copilot.handoff(reason) {
                            *count += 1;
                        }
                    });
                }
            }
            EventBody::CopilotClosed { reason } => {
                for dim in conversation.source_dims() {
                    rollups.add(&dim, conversation.opened_at, |bucket| {
                        if let Some(count) = bucket.counts.copilot.closed(reason) {
                            *count += 1;
                        }
                    });
                }
            }
            // A close is followed by its unassignment: the close counted the holder.
            EventBody::Unassigned { reason: UnassignReason::Closed, .. } => return,
            EventBody::Unassigned { .. } => conversation.agent = None,
            EventBody::SlaBreach { clock, .. } => {
                let mut dims: Vec<Dim> = conversation.agent.iter().map(|cohort| Dim::agent(&cohort.id)).collect();
                dims.extend(conversation.team.as_deref().map(Dim::team));
                for dim in dims {
                    rollups.add(&dim, at, |bucket| match clock {
                        SlaKind::FirstResponse => bucket.counts.breaches_first_response += 1,
                        SlaKind::NextResponse => bucket.counts.breaches_next_response += 1,
                        SlaKind::Resolution => bucket.counts.breaches_resolution += 1,
                    });
                }
            }
            EventBody::Closed { fields, .. } => {
                let won = settings.is_won(conversation.team.as_deref(), fields);
                let seconds =
                    settings.business_ms(conversation.team.as_deref(), conversation.opened_at, at) as f64 / 1000.0;
                let closer = match (&conversation.agent, &event.actor) {
                    (Some(cohort), _) => Some(cohort.id.clone()),
                    (None, Actor::User { id }) => Some(id.clone()),
                    _ => None,
                };
                let mut dims: Vec<Dim> = closer.iter().map(|id| Dim::agent(id)).collect();
                dims.extend(conversation.team.as_deref().map(Dim::team));
                for dim in dims {
                    rollups.add(&dim, at, |bucket| bucket.resolution.add(seconds));
                }
                for (cohort, dim) in cohorts(conversation) {
                    rollups.add(&dim, cohort.since, |bucket| {
                        bucket.counts.closed += 1;
                        if won {
                            bucket.counts.won += 1;
                        }
                    });
                }
                if won {
                    let revenue = settings.revenue(conversation.team.as_deref(), fields);
                    for dim in conversation.source_dims() {
                        rollups.add(&dim, conversation.opened_at, |bucket| {
                            bucket.counts.won += 1;
                            bucket.counts.revenue += revenue;
                        });
                    }
                }
                closed = true;
            }
            _ => return,
        }
        if closed {
            self.conversations.remove(id);
        }
        self.changed.insert(id.to_owned());
    }
}

/// The conversation's cohorts in progress with the group each counts for:
/// its holder's and its team's.
fn cohorts(conversation: &mut Conversation) -> Vec<(&mut Cohort, Dim)> {
    let mut found = Vec::new();
    if let Some(cohort) = conversation.agent.as_mut() {
        let dim = Dim::agent(&cohort.id);
        found.push((cohort, dim));
    }
    if let Some(cohort) = conversation.team_cohort.as_mut() {
        let dim = Dim::team(&cohort.id);
        found.push((cohort, dim));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{self, GroupBy, Range};
    use actors::settings::{DispositionSpec, FieldKind, TeamSpec};
    use serde_json::json;

    const T0: UnixMs = 1_796_083_200_000; // 2026-12-01 00:00 UTC, a Tuesday
    const MIN: i64 = 60_000;

    fn settings() -> ReportSettings {
        let office: actors::hours::HoursSpec = serde_json::from_value(json!({
            "timezone": "UTC", "week": {"mon": ["09:00-17:00"], "tue": ["09:00-17:00"]}
        }))
        .unwrap();
        let settings = Settings {
            teams: vec![
                TeamSpec { id: "sales".into(), ..Default::default() },
                TeamSpec { id: "office".into(), hours: Some(office), ..Default::default() },
            ],
            dispositions: vec![
                DispositionSpec {
                    key: "outcome".into(),
                    label: None,
                    kind: FieldKind::Enum,
                    options: vec!["won".into(), "lost".into()],
                    required_on_close: true,
                    won_values: vec!["won".into()],
                    ..DispositionSpec::new("", FieldKind::Text)
                },
                DispositionSpec {
                    key: "amount".into(),
                    label: None,
                    kind: FieldKind::Money,
                    options: vec![],
                    required_on_close: false,
                    won_values: vec![],
                    ..DispositionSpec::new("", FieldKind::Text)
                },
            ],
            ..Settings::default()
        };
        ReportSettings::from_settings(&settings).unwrap()
    }

    struct Script {
        projection: Projection,
    }

    impl Script {
        fn event(&mut self, conversation: &str, at: UnixMs, actor: Actor, body: EventBody) {
            let event = Event {
                at,
                conversation_id: Some(conversation.into()),
                contact: None,
                phone_number_id: None,
                actor,
                body,
            };
            self.projection.apply(&event);
        }
        fn open(&mut self, id: &str, at: UnixMs, source: Source) {
            self.event(id, at, Actor::Customer, EventBody::Opened { source });
            self.customer(id, at);
        }
        fn customer(&mut self, id: &str, at: UnixMs) {
            let body = EventBody::MessageIn { wamid: format!("w{at}"), message_type: "text".into(), text: None };
            self.event(id, at, Actor::Customer, body);
        }
        fn agent(&mut self, id: &str, at: UnixMs, agent: &str) {
            let body =
                EventBody::MessageOut { id: format!("o{at}"), message_type: "text".into(), text: None, template: None };
            self.event(id, at, Actor::user(agent), body);
        }
        fn assign(&mut self, id: &str, at: UnixMs, agent: &str, team: &str) {
            let body = EventBody::Assigned { agent_id: agent.into(), team_id: Some(team.into()), route: None };
            self.event(id, at, Actor::System, body);
        }
        fn unassign(&mut self, id: &str, at: UnixMs, agent: &str, reason: UnassignReason) {
            self.event(id, at, Actor::System, EventBody::Unassigned { agent_id: agent.into(), reason });
        }
        fn close(&mut self, id: &str, at: UnixMs, agent: &str, fields: Value) {
            let fields = fields.as_object().cloned().unwrap();
            self.event(id, at, Actor::user(agent), EventBody::Closed { fields, outcome: None });
            self.unassign(id, at, agent, UnassignReason::Closed);
        }
    }

    /// A team with a schema of its own counts won outcomes and revenue by
    /// that schema; the others by the global one.
    #[test]
    fn won_and_revenue_follow_the_teams_schema() {
        let mut result = DispositionSpec::new("result", FieldKind::Enum);
        result.options = vec!["paid".into(), "refused".into()];
        result.won_values = vec!["paid".into()];
        let office_schema = vec![result, DispositionSpec::new("collected", FieldKind::Money)];
        let mut settings = Settings {
            teams: vec![
                TeamSpec { id: "sales".into(), ..Default::default() },
                TeamSpec { id: "office".into(), dispositions: Some(office_schema), ..Default::default() },
            ],
            ..Settings::default()
        };
        let mut outcome = DispositionSpec::new("outcome", FieldKind::Enum);
        outcome.options = vec!["won".into(), "lost".into()];
        outcome.won_values = vec!["won".into()];
        settings.dispositions = vec![outcome, DispositionSpec::new("amount", FieldKind::Money)];
        let mut script = Script { projection: Projection::new(ReportSettings::from_settings(&settings).unwrap()) };
        let closes = [
            ("c1", "sales", "ad-1", json!({"outcome": "won", "amount": 5000})),
            ("c2", "office", "ad-2", json!({"result": "paid", "collected": 700, "amount": 9999})),
            // Set in sales, then transferred: office's schema decides.
            ("c3", "office", "ad-3", json!({"outcome": "won", "amount": 300})),
            ("c4", "sales", "ad-4", json!({"result": "paid", "collected": 50})),
        ];
        for (index, (id, team, ad, fields)) in closes.into_iter().enumerate() {
            let at = T0 + index as i64 * 60 * MIN;
            script.open(id, at, paid(ad));
            script.assign(id, at + MIN, "asha", team);
            script.close(id, at + 2 * MIN, "asha", fields);
        }
        let rollups = &script.projection.rollups;
        let attribution = rows(query::attribution(rollups, day(), false, &HashMap::new(), None));
        let of = |ad: &str| {
            let row = attribution.iter().find(|row| row["source_id"] == ad).cloned().unwrap();
            (row["closed"].clone(), row["revenue"].clone())
        };
        assert_eq!(of("ad-1"), (json!(1), json!(5000.0)));
        assert_eq!(of("ad-2"), (json!(1), json!(700.0)), "office's money field, not the global one");
        assert_eq!(of("ad-3"), (json!(0), json!(0.0)), "the global outcome is not office's");
        assert_eq!(of("ad-4"), (json!(0), json!(0.0)), "office's outcome is not sales'");
        let teams = rows(query::funnel(rollups, day(), GroupBy::Team, false));
        let closed = |team: &str| teams.iter().find(|row| row["team"] == team).map(|row| row["closed"].clone());
        assert_eq!((closed("sales"), closed("office")), (Some(json!(1)), Some(json!(1))));
    }

    fn paid(ad: &str) -> Source {
        Source { kind: SourceKind::Paid, source_id: Some(ad.into()), ..Source::organic() }
    }

    fn rows(report: query::Report) -> Vec<Value> {
        report.rows
    }

    fn day() -> Range {
        Range { from: T0, to: T0 + 86_400_000 }
    }

    #[test]
    fn a_scripted_day_is_counted_as_defined() {
        let mut script = Script { projection: Projection::new(settings()) };
        // c1: paid lead, asha answers after 2 min, customer answers, won for 5000.
        script.open("c1", T0 + 10 * 60 * MIN, paid("ad-1"));
        script.assign("c1", T0 + 10 * 60 * MIN + MIN, "asha", "sales");
        script.agent("c1", T0 + 10 * 60 * MIN + 2 * MIN, "asha");
        script.customer("c1", T0 + 10 * 60 * MIN + 3 * MIN);
        script.agent("c1", T0 + 10 * 60 * MIN + 7 * MIN, "asha");
        script.close("c1", T0 + 11 * 60 * MIN, "asha", json!({"outcome": "won", "amount": "5000"}));
        // c2: organic, asha is given it, never writes, goes offline; ravi takes it, writes; closed lost.
        script.open("c2", T0 + 12 * 60 * MIN, Source::organic());
        script.assign("c2", T0 + 12 * 60 * MIN, "asha", "sales");
        script.unassign("c2", T0 + 12 * 60 * MIN + 10 * MIN, "asha", UnassignReason::AgentOffline);
        script.assign("c2", T0 + 12 * 60 * MIN + 11 * MIN, "ravi", "sales");
        script.agent("c2", T0 + 12 * 60 * MIN + 20 * MIN, "ravi");
        script.event(
            "c2",
            T0 + 13 * 60 * MIN,
            Actor::System,
            EventBody::SlaBreach { clock: SlaKind::Resolution, due: 0 },
        );
        script.close("c2", T0 + 14 * 60 * MIN, "ravi", json!({"outcome": "lost"}));
        // c3: a customer writes at 08:00 to the office team (opens 09:00): 10 business minutes.
        script.open("c3", T0 + 8 * 60 * MIN, Source::organic());
        script.assign("c3", T0 + 8 * 60 * MIN, "meena", "office");
        script.agent("c3", T0 + 9 * 60 * MIN + 10 * MIN, "meena");
        // c4: the same ad, qualified, still open.
        script.open("c4", T0 + 15 * 60 * MIN, paid("ad-1"));
        script.assign("c4", T0 + 15 * 60 * MIN, "ravi", "sales");

        let rollups = &script.projection.rollups;
        let funnel = rows(query::funnel(rollups, day(), GroupBy::Agent, false));
        let pick = |rows: &[Value], key: &str, id: &str| rows.iter().find(|row| row[key] == id).cloned().unwrap();
        let asha = pick(&funnel, "agent", "asha");
        assert_eq!(
            (asha["assigned"].clone(), asha["contacted"].clone(), asha["responded"].clone(), asha["closed"].clone()),
            (json!(2), json!(1), json!(1), json!(1)),
            "{asha}"
        );
        assert_eq!(asha["conversion"]["contacted"], json!(0.5));
        let ravi = pick(&funnel, "agent", "ravi");
        assert_eq!(
            (ravi["assigned"].clone(), ravi["contacted"].clone(), ravi["responded"].clone(), ravi["closed"].clone()),
            (json!(2), json!(1), json!(0), json!(0)),
            "{ravi}"
        );
        let teams = rows(query::funnel(rollups, day(), GroupBy::Team, false));
        let sales = pick(&teams, "team", "sales");
        assert_eq!(
            (sales["assigned"].clone(), sales["contacted"].clone(), sales["closed"].clone()),
            (json!(3), json!(2), json!(1)),
            "a conversation once per team: {sales}"
        );

        let sla = rows(query::sla(rollups, day(), GroupBy::Agent, false));
        let asha = pick(&sla, "agent", "asha");
        assert_eq!((asha["frt"]["count"].clone(), asha["nrt"]["count"].clone()), (json!(1), json!(1)));
        assert!((asha["frt"]["p50_s"].as_f64().unwrap() - 120.0).abs() <= 2.4, "{asha}");
        assert!((asha["nrt"]["mean_s"].as_f64().unwrap() - 240.0).abs() < 0.01, "{asha}");
        assert!((asha["trt"]["mean_s"].as_f64().unwrap() - 3600.0).abs() < 0.01, "{asha}");
        let meena = pick(&sla, "agent", "meena");
        assert!((meena["frt"]["mean_s"].as_f64().unwrap() - 600.0).abs() < 0.01, "business hours only: {meena}");
        let ravi = pick(&sla, "agent", "ravi");
        assert_eq!(ravi["breaches"], json!({"first_response": 0, "next_response": 0, "resolution": 1}));
        assert!((ravi["frt"]["mean_s"].as_f64().unwrap() - 1200.0).abs() < 0.01, "from the customer's message: {ravi}");

        // Ad 1 cost 900 over this day and the next two; ad 9 cost 100 today and brought nothing.
        let spend = |amount: f64, days: i64| {
            Some(query::Spend { amount, currency: "INR".into(), from: T0, to: T0 + days * 86_400_000 })
        };
        let campaigns = HashMap::from([
            ("ad-1".to_owned(), query::Campaign { name: "Diwali".into(), spend: spend(900.0, 3) }),
            ("ad-9".to_owned(), query::Campaign { name: "Silent".into(), spend: spend(100.0, 1) }),
        ]);
        let attribution = rows(query::attribution(rollups, day(), false, &campaigns, None));
        let ad = pick(&attribution, "source_id", "ad-1");
        assert_eq!(
            (ad["spend"].clone(), ad["currency"].clone(), ad["cost_per_closed"].clone()),
            (json!(300.0), json!("INR"), json!(300.0)),
            "a third of the flight in the range, one deal won: {ad}"
        );
        let silent = pick(&attribution, "source_id", "ad-9");
        assert_eq!(
            (silent["conversations"].clone(), silent["spend"].clone(), silent["cost_per_closed"].clone()),
            (json!(0), json!(100.0), Value::Null),
            "spend without a conversation still shows: {silent}"
        );
        assert_eq!(
            (
                ad["source_id"].clone(),
                ad["campaign"].clone(),
                ad["conversations"].clone(),
                ad["qualified"].clone(),
                ad["closed"].clone(),
                ad["revenue"].clone()
            ),
            (json!("ad-1"), json!("Diwali"), json!(2), json!(2), json!(1), json!(5000.0))
        );
        // Limited to teams: what first went to them, without the spend (not kept per team).
        let office = rows(query::attribution(rollups, day(), false, &campaigns, Some(&["office".into()].into())));
        assert_eq!(office.len(), 1, "{office:?}");
        assert_eq!(
            (&office[0]["source"], &office[0]["conversations"], &office[0]["qualified"], &office[0]["closed"]),
            (&json!("organic"), &json!(1), &json!(1), &json!(0)),
            "c3 only"
        );
        let sales = rows(query::attribution(rollups, day(), false, &campaigns, Some(&["sales".into()].into())));
        let ad_in_sales = pick(&sales, "source_id", "ad-1");
        assert_eq!(
            (&ad_in_sales["conversations"], &ad_in_sales["closed"], &ad_in_sales["revenue"], &ad_in_sales["campaign"]),
            (&json!(2), &json!(1), &json!(5000.0), &json!("Diwali"))
        );
        assert!(ad_in_sales.get("spend").is_none() && sales.iter().all(|row| row["source_id"] != "ad-9"), "{sales:?}");
        let organic = pick(&attribution, "source", "organic");
        assert_eq!((organic["conversations"].clone(), organic["closed"].clone()), (json!(2), json!(0)));
        assert_eq!(script.projection.open_conversations(), 2, "c3 and c4 are still open");
        let csv = query::to_csv(&rows(query::sla(rollups, day(), GroupBy::Team, false)), &["team"]);
        assert!(csv.starts_with("team,breaches.first_response,breaches.next_response"), "{csv}");
        assert!(csv.contains("\nsales,0,0,1,2,660.0,"), "{csv}");
        let changes = script.projection.take_changes();
        assert!(changes.conversations.iter().any(|(id, now)| id == "c1" && now.is_none()), "closed ones are forgotten");
    }

    impl Script {
        fn copilot(&mut self, id: &str, at: UnixMs, body: EventBody) {
            self.event(id, at, Actor::Copilot, body);
        }
    }

    fn handoff(reason: &str, qualified: bool) -> EventBody {
        EventBody::CopilotHandoff {
            reason: reason.into(),
            summary: String::new(),
            fields: Map::new(),
            score: 0,
            qualified,
        }
    }

    /// The co-pilot's counts per source, in the bucket of the opening; its
    /// qualified mark counts as attribution's `qualified`, once whichever
    /// of it and the assignment comes first.
    #[test]
    fn the_copilots_part_is_counted_by_source() {
        let mut script = Script { projection: Projection::new(settings()) };
        let started = || EventBody::CopilotStarted { flow: "ads".into(), team_id: "sales".into() };
        let routed = || EventBody::Routed { team_id: Some("sales".into()), route: Value::Null };
        let at = T0 + 10 * 60 * MIN;
        // q1: ad-1, qualified 90 s after the opening, handed over, assigned.
        script.open("q1", at, paid("ad-1"));
        script.event("q1", at, Actor::System, routed());
        script.copilot("q1", at, started());
        script.copilot("q1", at + 90_000, EventBody::CopilotQualified { score: 5 });
        script.copilot("q1", at + 90_000, handoff("qualified", true));
        script.assign("q1", at + 91_000, "asha", "sales");
        // q2: ad-1, qualified after 30 min (the day's next hour), handed over.
        script.open("q2", at + 50 * MIN, paid("ad-1"));
        script.event("q2", at + 50 * MIN, Actor::System, routed());
        script.copilot("q2", at + 50 * MIN, started());
        script.copilot("q2", at + 80 * MIN, EventBody::CopilotQualified { score: 7 });
        script.copilot("q2", at + 80 * MIN, handoff("qualified", true));
        // p: ad-1, asks for a person, assigned.
        script.open("p", at + MIN, paid("ad-1"));
        script.event("p", at + MIN, Actor::System, routed());
        script.copilot("p", at + MIN, started());
        script.copilot("p", at + 2 * MIN, handoff("asked_for_person", false));
        script.assign("p", at + 3 * MIN, "ravi", "sales");
        // n: ad-2, closed not qualified; u: ad-2, nurtured; t: ad-2, timed out.
        for (id, ending) in [("n", "not_qualified"), ("u", "nurtured"), ("t", "")] {
            script.open(id, at, paid("ad-2"));
            script.event(id, at, Actor::System, routed());
            script.copilot(id, at, started());
            if ending.is_empty() {
                script.copilot(id, at + 10 * MIN, handoff("timeout", false));
            } else {
                script.copilot(id, at + 5 * MIN, EventBody::CopilotClosed { reason: ending.into() });
                script.event(id, at + 5 * MIN, Actor::Copilot, EventBody::Closed { fields: Map::new(), outcome: None });
            }
        }
        // o: organic, never the co-pilot's.
        script.open("o", at, Source::organic());
        script.assign("o", at, "asha", "sales");

        let rollups = &script.projection.rollups;
        let report = rows(query::copilot(rollups, day(), false, &HashMap::new(), None));
        assert_eq!(report.len(), 2, "no row for organic: {report:?}");
        let row = |ad: &str| report.iter().find(|row| row["source_id"] == ad).cloned().unwrap();
        let ad1 = row("ad-1");
        assert_eq!(
            (&ad1["source"], &ad1["conversations"], &ad1["qualified"], &ad1["qualified_rate"]),
            (&json!("paid"), &json!(3), &json!(2), &json!(0.6667)),
            "{ad1}"
        );
        assert_eq!(ad1["time_to_qualification"], json!({"count": 2, "p50_s": 90.0, "p90_s": 90.0, "mean_s": 945.0}));
        assert_eq!(
            ad1["handoffs"],
            json!({"qualified": 2, "asked_for_person": 1, "timeout": 0, "unanswered": 0, "completed": 0})
        );
        assert_eq!(ad1["closed_unqualified"], json!({"not_qualified": 0, "nurtured": 0}));
        let ad2 = row("ad-2");
        assert_eq!(
            (&ad2["conversations"], &ad2["qualified"], &ad2["qualified_rate"]),
            (&json!(3), &json!(0), &json!(0.0))
        );
        assert_eq!(ad2["time_to_qualification"]["count"], json!(0));
        assert_eq!(ad2["time_to_qualification"]["p50_s"], Value::Null);
        assert_eq!(ad2["handoffs"]["timeout"], json!(1));
        assert_eq!(ad2["closed_unqualified"], json!({"not_qualified": 1, "nurtured": 1}));

        // Attribution: q1 qualified once (the co-pilot, then the agent), q2
        // by the co-pilot alone, p by its assignment.
        let attribution = rows(query::attribution(rollups, day(), false, &HashMap::new(), None));
        let ad1 = attribution.iter().find(|row| row["source_id"] == "ad-1").unwrap();
        assert_eq!((&ad1["conversations"], &ad1["qualified"]), (&json!(3), &json!(3)), "{ad1}");
        let ad2 = attribution.iter().find(|row| row["source_id"] == "ad-2").unwrap();
        assert_eq!(ad2["qualified"], json!(0), "{ad2}");

        // By day, and for a manager limited to sales (and to another team).
        let by_day = rows(query::copilot(rollups, day(), true, &HashMap::new(), None));
        assert!(by_day.iter().all(|row| row["day"] == "2026-12-01"), "{by_day:?}");
        let sales = rows(query::copilot(rollups, day(), false, &HashMap::new(), Some(&["sales".into()].into())));
        assert_eq!(sales, report, "everything went to sales first");
        let office = rows(query::copilot(rollups, day(), false, &HashMap::new(), Some(&["office".into()].into())));
        assert!(office.is_empty(), "{office:?}");
        let csv = query::to_csv(&report, &["source"]);
        assert!(csv.starts_with("source,closed_unqualified.not_qualified,closed_unqualified.nurtured,"), "{csv}");
    }

    #[test]
    fn a_range_outside_the_activity_is_empty_and_days_split() {
        let mut script = Script { projection: Projection::new(settings()) };
        for day in 0..3 {
            let at = T0 + day * 86_400_000 + 10 * 60 * MIN;
            let id = format!("d{day}");
            script.open(&id, at, Source::organic());
            script.assign(&id, at, "asha", "sales");
        }
        let rollups = &script.projection.rollups;
        let before = Range { from: T0 - 86_400_000, to: T0 };
        assert!(rows(query::funnel(rollups, before, GroupBy::Agent, false)).is_empty());
        let three = Range { from: T0, to: T0 + 3 * 86_400_000 };
        let by_day = rows(query::funnel(rollups, three, GroupBy::Agent, true));
        let days: Vec<&str> = by_day.iter().filter_map(|row| row["day"].as_str()).collect();
        assert_eq!(days, ["2026-12-01", "2026-12-02", "2026-12-03"]);
    }
}
