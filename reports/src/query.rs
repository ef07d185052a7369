//! The three reports of PROTOCOL §5 (and the co-pilot's, §11) over a range, as rows of JSON (and
//! CSV with the same field names, nested ones joined with `.`).

use std::collections::{HashMap, HashSet};

use protocol::time::UnixMs;
use serde_json::{Map, Value, json};

use crate::DAY_MS;
use crate::rollup::{Bucket, Cover, Dim, DimKind, Rollups, Sketch, sources_of_teams};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    Agent,
    Team,
}

impl GroupBy {
    fn name(self) -> &'static str {
        match self {
            GroupBy::Agent => "agent",
            GroupBy::Team => "team",
        }
    }

    fn kind(self) -> DimKind {
        match self {
            GroupBy::Agent => DimKind::Agent,
            GroupBy::Team => DimKind::Team,
        }
    }

    fn select<'a>(self) -> impl Fn(&'a Dim) -> Option<&'a str> {
        move |dim| match (self, dim) {
            (GroupBy::Agent, Dim::Agent { id }) | (GroupBy::Team, Dim::Team { id }) => Some(id.as_str()),
            _ => None,
        }
    }
}

/// A report's range as asked (`to` exclusive), in unix ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub from: UnixMs,
    pub to: UnixMs,
}

/// A report: the range it covers (the asked one taken out to whole hours)
/// and its rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub from: UnixMs,
    pub to: UnixMs,
    pub rows: Vec<Value>,
}

fn day_label(day: i64) -> String {
    protocol::time::format_rfc3339(day * DAY_MS).chars().take(10).collect()
}

fn times(sketch: &Sketch) -> Value {
    let round = |value: Option<f64>| value.map(|seconds| (seconds * 10.0).round() / 10.0);
    json!({
        "count": sketch.count(),
        "p50_s": round(sketch.quantile(0.5)),
        "p90_s": round(sketch.quantile(0.9)),
        "mean_s": round(sketch.mean()),
    })
}

fn ratio(part: u64, whole: u64) -> Value {
    if whole == 0 { Value::Null } else { json!(((part as f64 / whole as f64) * 10_000.0).round() / 10_000.0) }
}

fn row_head(key: &str, id: &str, day: Option<i64>) -> Map<String, Value> {
    let mut row = Map::new();
    row.insert(key.to_owned(), json!(id));
    if let Some(day) = day {
        row.insert("day".to_owned(), json!(day_label(day)));
    }
    row
}

fn report(cover: Cover, rows: Vec<Value>) -> Report {
    let (from, to) = cover.range();
    Report { from, to, rows }
}

/// `GET /api/v1/reports/sla`: per group, first/next/resolution times and breaches by kind.
pub fn sla(rollups: &Rollups, range: Range, group_by: GroupBy, by_day: bool) -> Report {
    let cover = Cover::of(range.from, range.to);
    let merged = rollups.merged(&cover, &group_by.kind().spans(), by_day, true, group_by.select());
    let rows = merged
        .into_iter()
        .map(|((id, day), bucket)| {
            let mut row = row_head(group_by.name(), id, day);
            row.insert("frt".into(), times(&bucket.first_response));
            row.insert("nrt".into(), times(&bucket.next_response));
            row.insert("trt".into(), times(&bucket.resolution));
            let counts = &bucket.counts;
            row.insert(
                "breaches".into(),
                json!({
                    "first_response": counts.breaches_first_response,
                    "next_response": counts.breaches_next_response,
                    "resolution": counts.breaches_resolution,
                }),
            );
            Value::Object(row)
        })
        .collect();
    report(cover, rows)
}

/// `GET /api/v1/reports/funnel`: per group, assigned → contacted →
/// responded → closed (won), and each stage's conversion from the one before.
pub fn funnel(rollups: &Rollups, range: Range, group_by: GroupBy, by_day: bool) -> Report {
    let cover = Cover::of(range.from, range.to);
    let merged = rollups.merged(&cover, &group_by.kind().spans(), by_day, false, group_by.select());
    let rows = merged
        .into_iter()
        .filter(|(_, bucket)| bucket.counts.assigned > 0)
        .map(|((id, day), bucket)| {
            let counts = &bucket.counts;
            let mut row = row_head(group_by.name(), id, day);
            row.insert("assigned".into(), json!(counts.assigned));
            row.insert("contacted".into(), json!(counts.contacted));
            row.insert("responded".into(), json!(counts.responded));
            row.insert("closed".into(), json!(counts.won));
            row.insert(
                "conversion".into(),
                json!({
                    "contacted": ratio(counts.contacted, counts.assigned),
                    "responded": ratio(counts.responded, counts.contacted),
                    "closed": ratio(counts.won, counts.responded),
                }),
            );
            Value::Object(row)
        })
        .collect();
    report(cover, rows)
}

/// An ad as configured (`[[campaigns]]`): its name and, when known, what
/// it cost.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Campaign {
    pub name: String,
    pub spend: Option<Spend>,
}

/// What an ad cost over its flight `[from, to)`, taken as spread evenly
/// over it: a range sees the part of the amount that falls inside it.
#[derive(Clone, Debug, PartialEq)]
pub struct Spend {
    pub amount: f64,
    pub currency: String,
    pub from: UnixMs,
    pub to: UnixMs,
}

impl Spend {
    /// The part of the amount spent in `[from, to)`.
    pub fn within(&self, from: UnixMs, to: UnixMs) -> f64 {
        let overlap = (to.min(self.to) - from.max(self.from)).max(0);
        let flight = (self.to - self.from).max(1);
        self.amount * overlap as f64 / flight as f64
    }
}

fn cents(amount: f64) -> f64 {
    (amount * 100.0).round() / 100.0
}

/// `GET /api/v1/reports/attribution`: per source kind and ad / referral
/// code, conversations opened in the range, qualified, won, revenue; for a
/// configured ad its name and, with its spend, the spend in the range and
/// the cost per closed (won) deal. An ad with spend in the range and no
/// conversation still gets a row (without `group_by=day`): money spent for
/// nothing is what that report is for.
///
/// `teams`: for a manager limited to teams, only conversations that first
/// went to one of them count, and an ad's spend (not kept per team) is not
/// shown.
pub fn attribution(
    rollups: &Rollups,
    range: Range,
    by_day: bool,
    campaigns: &HashMap<String, Campaign>,
    teams: Option<&HashSet<String>>,
) -> Report {
    let cover = Cover::of(range.from, range.to);
    let (covered_from, covered_to) = cover.range();
    let merged = by_source(rollups, &cover, by_day, false, teams);
    let campaigns = match teams {
        None => campaigns,
        Some(_) => &campaigns
            .iter()
            .map(|(id, campaign)| (id.clone(), Campaign { name: campaign.name.clone(), spend: None }))
            .collect(),
    };
    let mut seen_ads = std::collections::HashSet::new();
    let mut rows: Vec<Value> = merged
        .into_iter()
        .map(|(((kind, id), day), bucket): (((&str, &str), Option<i64>), Bucket)| {
            let counts = &bucket.counts;
            let mut row = source_row(kind, id, day);
            if kind == "paid" {
                seen_ads.insert(id.to_owned());
            }
            row.insert("conversations".into(), json!(counts.conversations));
            row.insert("qualified".into(), json!(counts.qualified));
            row.insert("closed".into(), json!(counts.won));
            row.insert("revenue".into(), json!(cents(counts.revenue)));
            if kind == "paid"
                && let Some(campaign) = campaigns.get(id)
            {
                let (from, to) = match day {
                    Some(day) => (covered_from.max(day * DAY_MS), covered_to.min((day + 1) * DAY_MS)),
                    None => (covered_from, covered_to),
                };
                add_campaign(&mut row, campaign, from, to, counts.won);
            }
            Value::Object(row)
        })
        .collect();
    if !by_day {
        let mut idle: Vec<(&String, &Campaign)> = campaigns
            .iter()
            .filter(|(id, campaign)| {
                !seen_ads.contains(*id)
                    && campaign.spend.as_ref().is_some_and(|spend| spend.within(covered_from, covered_to) > 0.0)
            })
            .collect();
        idle.sort_by(|a, b| a.0.cmp(b.0));
        for (id, campaign) in idle {
            let mut row = Map::new();
            row.insert("source".into(), json!("paid"));
            row.insert("source_id".into(), json!(id));
            for field in ["conversations", "qualified", "closed"] {
                row.insert(field.into(), json!(0));
            }
            row.insert("revenue".into(), json!(0.0));
            add_campaign(&mut row, campaign, covered_from, covered_to, 0);
            rows.push(Value::Object(row));
        }
    }
    report(cover, rows)
}

/// `GET /api/v1/reports/copilot`: per source kind and ad / referral code
/// (as attribution, conversations by the bucket of their opening), what
/// the co-pilot did: the conversations it took, how many it qualified and
/// how long that took from the opening, its hand-overs and its unqualified
/// closes by reason. Only sources the co-pilot took a conversation of (or
/// did anything with) get a row; a configured ad carries its `campaign`
/// name. `teams`: for a manager limited to teams, only the conversations
/// that first went to one of them.
pub fn copilot(
    rollups: &Rollups,
    range: Range,
    by_day: bool,
    campaigns: &HashMap<String, Campaign>,
    teams: Option<&HashSet<String>>,
) -> Report {
    let cover = Cover::of(range.from, range.to);
    let merged = by_source(rollups, &cover, by_day, true, teams);
    let rows = merged
        .into_iter()
        .filter(|(_, bucket)| !bucket.counts.copilot.is_empty())
        .map(|(((kind, id), day), bucket): (((&str, &str), Option<i64>), Bucket)| {
            let counts = &bucket.counts.copilot;
            let mut row = source_row(kind, id, day);
            if kind == "paid"
                && let Some(campaign) = campaigns.get(id)
            {
                row.insert("campaign".into(), json!(campaign.name));
            }
            row.insert("conversations".into(), json!(counts.started));
            row.insert("qualified".into(), json!(counts.qualified));
            row.insert("qualified_rate".into(), ratio(counts.qualified, counts.started));
            row.insert("time_to_qualification".into(), times(&bucket.time_to_qualification));
            row.insert(
                "handoffs".into(),
                json!({
                    "qualified": counts.handoff_qualified,
                    "asked_for_person": counts.handoff_asked_for_person,
                    "timeout": counts.handoff_timeout,
                    "unanswered": counts.handoff_unanswered,
                    "completed": counts.handoff_completed,
                }),
            );
            row.insert(
                "closed_unqualified".into(),
                json!({
                    "not_qualified": counts.closed_not_qualified,
                    "nurtured": counts.closed_nurtured,
                }),
            );
            Value::Object(row)
        })
        .collect();
    report(cover, rows)
}

/// Buckets per (source kind, ad `source_id` / referral code) and day.
type BySource<'r> = std::collections::BTreeMap<((&'r str, &'r str), Option<i64>), Bucket>;

/// The buckets of conversations opened in `cover`, merged per source kind
/// and ad / referral code (and day when `by_day`; durations with `times`);
/// for a manager limited to `teams`, only those that first went to one of
/// them. Attribution and the co-pilot's report read the same cohorts.
fn by_source<'r>(
    rollups: &'r Rollups,
    cover: &Cover,
    by_day: bool,
    times: bool,
    teams: Option<&HashSet<String>>,
) -> BySource<'r> {
    let spans = match teams {
        None => DimKind::Source.spans(),
        Some(teams) => sources_of_teams(teams),
    };
    rollups.merged(cover, &spans, by_day, times, |dim| match dim {
        Dim::Source { kind, id } | Dim::SourceTeam { kind, id, .. } => Some((kind.as_str(), id.as_str())),
        _ => None,
    })
}

/// A source's row as it starts: `source`, `day` (by day), and the ad's
/// `source_id` or the referral's `code`.
fn source_row(kind: &str, id: &str, day: Option<i64>) -> Map<String, Value> {
    let mut row = Map::new();
    row.insert("source".into(), json!(kind));
    if let Some(day) = day {
        row.insert("day".into(), json!(day_label(day)));
    }
    match kind {
        "paid" => {
            row.insert("source_id".into(), json!(id));
        }
        "referral" => {
            row.insert("code".into(), json!(id));
        }
        _ => {}
    }
    row
}

/// A configured ad's name and, with its spend, `spend` (in `[from, to)`),
/// `currency` and `cost_per_closed` (null without a won deal).
fn add_campaign(row: &mut Map<String, Value>, campaign: &Campaign, from: UnixMs, to: UnixMs, won: u64) {
    row.insert("campaign".into(), json!(campaign.name));
    if let Some(spend) = &campaign.spend {
        let amount = spend.within(from, to);
        row.insert("spend".into(), json!(cents(amount)));
        row.insert("currency".into(), json!(spend.currency));
        let cost = if won == 0 { Value::Null } else { json!(cents(amount / won as f64)) };
        row.insert("cost_per_closed".into(), cost);
    }
}

/// The rows as CSV: one column per field (nested objects' fields joined
/// with `.`), `lead` first (the group and the day), then the others in
/// name order.
pub fn to_csv(rows: &[Value], lead: &[&str]) -> String {
    fn flatten(prefix: &str, value: &Value, into: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    flatten(&name, value, into);
                }
            }
            Value::Null => into.push((prefix.to_owned(), String::new())),
            Value::String(text) => into.push((prefix.to_owned(), text.clone())),
            other => into.push((prefix.to_owned(), other.to_string())),
        }
    }
    let flat: Vec<Vec<(String, String)>> = rows
        .iter()
        .map(|row| {
            let mut fields = Vec::new();
            flatten("", row, &mut fields);
            fields
        })
        .collect();
    let mut header: Vec<String> = lead.iter().map(|name| (*name).to_owned()).collect();
    for fields in &flat {
        for (name, _) in fields {
            if !header.contains(name) {
                header.push(name.clone());
            }
        }
    }
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record(&header);
    for fields in &flat {
        let values: HashMap<&str, &str> = fields.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
        let _ = writer.write_record(header.iter().map(|name| values.get(name.as_str()).copied().unwrap_or("")));
    }
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
}
