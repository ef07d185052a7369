//! The rollups: per group and per UTC hour and UTC day, the counts of the
//! three reports and the quantile sketches of the response times.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use protocol::time::UnixMs;
use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

use crate::{DAY_MS, HOUR_MS};

/// What a bucket is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Dim {
    Agent {
        id: String,
    },
    Team {
        id: String,
    },
    /// `kind` is `paid`, `organic` or `referral`; `id` the ad's
    /// `source_id` or the referral code (empty for organic, or when
    /// unknown).
    Source {
        kind: String,
        id: String,
    },
    /// The same source, counted for the team the conversation first went
    /// to (for a manager limited to teams). The team comes first: a team's
    /// sources are one range of a period's buckets.
    SourceTeam {
        team: String,
        kind: String,
        id: String,
    },
}

/// The kinds of group, in the order of `Dim`'s variants (and so of the
/// buckets of one period in `Rollups`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DimKind {
    Agent,
    Team,
    Source,
    SourceTeam,
}

impl DimKind {
    /// The lowest key of this kind (ids compare after the empty string).
    fn lowest(self) -> Dim {
        match self {
            DimKind::Agent => Dim::Agent { id: String::new() },
            DimKind::Team => Dim::Team { id: String::new() },
            DimKind::Source => Dim::Source { kind: String::new(), id: String::new() },
            DimKind::SourceTeam => Dim::SourceTeam { kind: String::new(), id: String::new(), team: String::new() },
        }
    }

    fn next(self) -> Option<DimKind> {
        match self {
            DimKind::Agent => Some(DimKind::Team),
            DimKind::Team => Some(DimKind::Source),
            DimKind::Source => Some(DimKind::SourceTeam),
            DimKind::SourceTeam => None,
        }
    }

    /// Every group of this kind.
    pub fn spans(self) -> Vec<Span> {
        vec![Span { low: self.lowest(), high: self.next().map(DimKind::lowest) }]
    }
}

/// A range of a period's buckets a merge reads: from `low`, up to `high`
/// (excluded; `None`: to the period's end).
#[derive(Clone, Debug)]
pub struct Span {
    low: Dim,
    high: Option<Dim>,
}

/// The sources counted for these teams (`Dim::SourceTeam`).
pub fn sources_of_teams<'t>(teams: impl IntoIterator<Item = &'t String>) -> Vec<Span> {
    teams
        .into_iter()
        .map(|team| {
            let low = Dim::SourceTeam { team: team.clone(), kind: String::new(), id: String::new() };
            // Every id with this team sorts before the team followed by NUL.
            let high = Dim::SourceTeam { team: format!("{team}\0"), kind: String::new(), id: String::new() };
            Span { low, high: Some(high) }
        })
        .collect()
}

impl Dim {
    pub fn agent(id: &str) -> Dim {
        Dim::Agent { id: id.to_owned() }
    }

    pub fn team(id: &str) -> Dim {
        Dim::Team { id: id.to_owned() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Hour,
    Day,
}

/// A bucket's place: its level, its period (hours or days since the
/// epoch, UTC) and its group. Ordered by level and period first, so the
/// buckets of a stretch of time, every group's, are one range.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BucketKey {
    pub level: Level,
    pub period: i64,
    pub dim: Dim,
}

/// The counts of a bucket. Funnel counts are kept in the bucket of the
/// assignment they follow (a cohort); attribution counts in the bucket of
/// the conversation's opening; the others when they happen.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub assigned: u64,
    pub contacted: u64,
    pub responded: u64,
    /// Closed with an outcome in `won_values`.
    pub won: u64,
    /// Closed, whatever the outcome.
    pub closed: u64,
    pub breaches_first_response: u64,
    pub breaches_next_response: u64,
    pub breaches_resolution: u64,
    /// Attribution: conversations opened, qualified (reached an agent or
    /// marked qualified by the co-pilot), revenue of the won.
    pub conversations: u64,
    pub qualified: u64,
    pub revenue: f64,
    /// The co-pilot (docs/copilot.md), per source in the bucket of the
    /// conversation's opening: conversations it took, qualified, handed
    /// over and closed unqualified by reason.
    #[serde(default)]
    pub copilot: CopilotCounts,
}

/// What the co-pilot did with the conversations of a source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CopilotCounts {
    /// `copilot_started`: conversations the co-pilot took.
    pub started: u64,
    /// `copilot_qualified`.
    pub qualified: u64,
    /// `copilot_handoff` by reason.
    pub handoff_qualified: u64,
    pub handoff_asked_for_person: u64,
    pub handoff_timeout: u64,
    pub handoff_unanswered: u64,
    pub handoff_completed: u64,
    /// `copilot_closed` by reason.
    pub closed_not_qualified: u64,
    pub closed_nurtured: u64,
}

impl CopilotCounts {
    fn merge(&mut self, other: &CopilotCounts) {
        self.started += other.started;
        self.qualified += other.qualified;
        self.handoff_qualified += other.handoff_qualified;
        self.handoff_asked_for_person += other.handoff_asked_for_person;
        self.handoff_timeout += other.handoff_timeout;
        self.handoff_unanswered += other.handoff_unanswered;
        self.handoff_completed += other.handoff_completed;
        self.closed_not_qualified += other.closed_not_qualified;
        self.closed_nurtured += other.closed_nurtured;
    }

    /// The counter of a hand-over's reason (`None`: a reason this build
    /// does not know).
    pub fn handoff(&mut self, reason: &str) -> Option<&mut u64> {
        Some(match reason {
            "qualified" => &mut self.handoff_qualified,
            "asked_for_person" => &mut self.handoff_asked_for_person,
            "timeout" => &mut self.handoff_timeout,
            "unanswered" => &mut self.handoff_unanswered,
            "completed" => &mut self.handoff_completed,
            _ => return None,
        })
    }

    /// The counter of an unqualified close's reason.
    pub fn closed(&mut self, reason: &str) -> Option<&mut u64> {
        Some(match reason {
            "not_qualified" => &mut self.closed_not_qualified,
            "nurtured" => &mut self.closed_nurtured,
            _ => return None,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == CopilotCounts::default()
    }
}

impl Counts {
    fn merge(&mut self, other: &Counts) {
        self.assigned += other.assigned;
        self.contacted += other.contacted;
        self.responded += other.responded;
        self.won += other.won;
        self.closed += other.closed;
        self.breaches_first_response += other.breaches_first_response;
        self.breaches_next_response += other.breaches_next_response;
        self.breaches_resolution += other.breaches_resolution;
        self.conversations += other.conversations;
        self.qualified += other.qualified;
        self.revenue += other.revenue;
        self.copilot.merge(&other.copilot);
    }
}

/// Durations in seconds, mergeable: the values themselves while there are
/// few (an agent's hour holds a handful; exact quantiles, a few bytes),
/// then a quantile sketch (DDSketch, 2 % relative accuracy, about a
/// kilobyte whatever the count).
#[derive(Clone, Default, Serialize, Deserialize)]
pub enum Sketch {
    #[default]
    Empty,
    Values(Vec<f32>),
    Sketch(Box<DDSketch>),
}

/// The sketches' relative accuracy: a quantile is within 2 % of the value
/// of its rank.
pub const RELATIVE_ACCURACY: f64 = 0.02;

/// Past this many values a bucket keeps a sketch instead: an agent's hour
/// keeps its values, its day (dozens) a sketch, so a month's report merges
/// sketches bin by bin instead of adding thousands of values one by one.
const MAX_VALUES: usize = 32;

impl fmt::Debug for Sketch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Sketch({} values)", self.count())
    }
}

impl PartialEq for Sketch {
    fn eq(&self, other: &Sketch) -> bool {
        self.count() == other.count()
            && self.sum() == other.sum()
            && [0.5, 0.9].iter().all(|&q| self.quantile(q) == other.quantile(q))
    }
}

fn sketch_config() -> Config {
    // 2 % relative error (half the bins of 1 %, so merges cost half: a
    // month's report by agent merges tens of thousands of sketches); 1 ms
    // is the smallest duration told apart from 0.
    Config::new(RELATIVE_ACCURACY, 2048, 0.001)
}

fn sketch_of(values: &[f32]) -> Box<DDSketch> {
    let mut sketch = Box::new(DDSketch::new(sketch_config()));
    for value in values {
        sketch.add(f64::from(*value));
    }
    sketch
}

impl Sketch {
    pub fn add(&mut self, seconds: f64) {
        let seconds = seconds.max(0.0);
        match self {
            Sketch::Empty => *self = Sketch::Values(vec![seconds as f32]),
            Sketch::Values(values) if values.len() < MAX_VALUES => values.push(seconds as f32),
            Sketch::Values(values) => {
                let mut sketch = sketch_of(values);
                sketch.add(seconds);
                *self = Sketch::Sketch(sketch);
            }
            Sketch::Sketch(sketch) => sketch.add(seconds),
        }
    }

    pub fn merge(&mut self, other: &Sketch) {
        match (&mut *self, other) {
            (_, Sketch::Empty) => {}
            (Sketch::Empty, other) => *self = other.clone(),
            (Sketch::Values(mine), Sketch::Values(theirs)) if mine.len() + theirs.len() <= MAX_VALUES => {
                mine.extend_from_slice(theirs);
            }
            (Sketch::Values(mine), Sketch::Values(theirs)) => {
                let mut sketch = sketch_of(mine);
                for value in theirs {
                    sketch.add(f64::from(*value));
                }
                *self = Sketch::Sketch(sketch);
            }
            (Sketch::Values(mine), Sketch::Sketch(theirs)) => {
                let mut sketch = theirs.clone();
                for value in mine.iter() {
                    sketch.add(f64::from(*value));
                }
                *self = Sketch::Sketch(sketch);
            }
            (Sketch::Sketch(mine), Sketch::Values(theirs)) => {
                for value in theirs {
                    mine.add(f64::from(*value));
                }
            }
            // Same configuration on both sides: merging cannot fail.
            (Sketch::Sketch(mine), Sketch::Sketch(theirs)) => {
                let _ = mine.merge(theirs);
            }
        }
    }

    pub fn count(&self) -> u64 {
        match self {
            Sketch::Empty => 0,
            Sketch::Values(values) => values.len() as u64,
            Sketch::Sketch(sketch) => sketch.count() as u64,
        }
    }

    pub fn sum(&self) -> f64 {
        match self {
            Sketch::Empty => 0.0,
            Sketch::Values(values) => values.iter().map(|value| f64::from(*value)).sum(),
            Sketch::Sketch(sketch) => sketch.sum().unwrap_or(0.0),
        }
    }

    /// The `q` quantile (the value of rank `q × (n − 1)`, rounded down;
    /// within 2 % once a sketch), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        match self {
            Sketch::Empty => None,
            Sketch::Values(values) => {
                let mut sorted = values.clone();
                sorted.sort_by(f32::total_cmp);
                let rank = (q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64).floor() as usize;
                sorted.get(rank).map(|value| f64::from(*value))
            }
            Sketch::Sketch(sketch) => sketch.quantile(q).ok().flatten(),
        }
    }

    pub fn mean(&self) -> Option<f64> {
        let count = self.count();
        (count > 0).then(|| self.sum() / count as f64)
    }
}

/// A bucket: counts, and first, next and total (resolution) response
/// times, and (a source's) the co-pilot's time to qualification.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub counts: Counts,
    pub first_response: Sketch,
    pub next_response: Sketch,
    pub resolution: Sketch,
    /// From the opening to `copilot_qualified`, in the opening's bucket.
    #[serde(default)]
    pub time_to_qualification: Sketch,
}

impl Bucket {
    pub fn merge(&mut self, other: &Bucket) {
        self.counts.merge(&other.counts);
        self.first_response.merge(&other.first_response);
        self.next_response.merge(&other.next_response);
        self.resolution.merge(&other.resolution);
        self.time_to_qualification.merge(&other.time_to_qualification);
    }
}

/// Every bucket, and which changed since the last [`Rollups::take_dirty`].
#[derive(Default)]
pub struct Rollups {
    buckets: BTreeMap<BucketKey, Bucket>,
    dirty: BTreeSet<BucketKey>,
}

/// The stretch of time a report covers, decomposed: whole UTC days in the
/// middle, hours at the ends. `to` is exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cover {
    pub hours_before: (i64, i64),
    pub days: (i64, i64),
    pub hours_after: (i64, i64),
}

impl Cover {
    /// `from`/`to` taken out to whole hours.
    pub fn of(from: UnixMs, to: UnixMs) -> Cover {
        let from_h = from.div_euclid(HOUR_MS);
        let to_h = (to + HOUR_MS - 1).div_euclid(HOUR_MS).max(from_h);
        let hours_per_day = DAY_MS / HOUR_MS;
        let first_day = (from_h + hours_per_day - 1).div_euclid(hours_per_day);
        let end_day = to_h.div_euclid(hours_per_day);
        if first_day >= end_day {
            return Cover { hours_before: (from_h, to_h), days: (0, 0), hours_after: (0, 0) };
        }
        Cover {
            hours_before: (from_h, first_day * hours_per_day),
            days: (first_day, end_day),
            hours_after: (end_day * hours_per_day, to_h),
        }
    }

    /// The range covered, in milliseconds.
    pub fn range(&self) -> (UnixMs, UnixMs) {
        let hours_per_day = DAY_MS / HOUR_MS;
        let from = if self.hours_before.0 < self.hours_before.1 || self.days.0 == self.days.1 {
            self.hours_before.0 * HOUR_MS
        } else {
            self.days.0 * DAY_MS
        };
        let to = if self.days.0 == self.days.1 {
            self.hours_before.1 * HOUR_MS
        } else if self.hours_after.0 < self.hours_after.1 {
            self.hours_after.1 * HOUR_MS
        } else {
            self.days.1 * hours_per_day * HOUR_MS
        };
        (from, to)
    }
}

impl Rollups {
    /// Applies `change` to `dim`'s hour and day buckets of `at`.
    pub fn add(&mut self, dim: &Dim, at: UnixMs, change: impl Fn(&mut Bucket)) {
        for (level, period) in [(Level::Hour, at.div_euclid(HOUR_MS)), (Level::Day, at.div_euclid(DAY_MS))] {
            let key = BucketKey { level, period, dim: dim.clone() };
            change(self.buckets.entry(key.clone()).or_default());
            self.dirty.insert(key);
        }
    }

    /// A stored bucket, read back at start.
    pub fn load(&mut self, key: BucketKey, bucket: Bucket) {
        self.buckets.insert(key, bucket);
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The buckets changed since the last call, as they are now.
    pub fn take_dirty(&mut self) -> Vec<(BucketKey, Bucket)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty.into_iter().filter_map(|key| Some((key.clone(), self.buckets.get(&key)?.clone()))).collect()
    }

    /// Every bucket in `cover` within `spans` (see [`DimKind::spans`],
    /// [`sources_of_teams`]) whose group `select` keeps, merged per (group,
    /// day when `by_day`). `select` maps a bucket's dim to the group it
    /// counts for (or `None` to leave it out); it may borrow from the dim.
    /// Without `times`, only the counts are merged (the funnel and
    /// attribution need no durations). Only the buckets within the spans are
    /// read: a period's buckets are ordered by kind and group.
    pub fn merged<'a, G: Ord + std::hash::Hash>(
        &'a self,
        cover: &Cover,
        spans: &[Span],
        by_day: bool,
        times: bool,
        select: impl Fn(&'a Dim) -> Option<G>,
    ) -> BTreeMap<(G, Option<i64>), Bucket> {
        // Gathered by hash (a group's buckets arrive period by period, all
        // groups interleaved), ordered once at the end.
        let mut merged: std::collections::HashMap<(G, Option<i64>), Bucket> = std::collections::HashMap::new();
        let hours_per_day = DAY_MS / HOUR_MS;
        let stretches = [(Level::Hour, cover.hours_before), (Level::Day, cover.days), (Level::Hour, cover.hours_after)];
        for (level, (start, end)) in stretches {
            if start >= end {
                continue;
            }
            for (period, span) in (start..end).flat_map(|period| spans.iter().map(move |span| (period, span))) {
                let low = BucketKey { level, period, dim: span.low.clone() };
                let high = match &span.high {
                    Some(high) => BucketKey { level, period, dim: high.clone() },
                    None => BucketKey { level, period: period + 1, dim: DimKind::Agent.lowest() },
                };
                for (key, bucket) in self.buckets.range(low..high) {
                    let Some(group) = select(&key.dim) else { continue };
                    let day = by_day.then(|| match level {
                        Level::Day => key.period,
                        Level::Hour => key.period.div_euclid(hours_per_day),
                    });
                    let into = merged.entry((group, day)).or_default();
                    if times {
                        into.merge(bucket);
                    } else {
                        into.counts.merge(&bucket.counts);
                    }
                }
            }
        }
        merged.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixMs = 1_796_083_200_000; // 2026-12-01 00:00 UTC

    #[test]
    fn a_range_is_whole_days_in_the_middle_and_hours_at_the_ends() {
        let cover = Cover::of(T0 + 22 * HOUR_MS + 5, T0 + 3 * DAY_MS + 2 * HOUR_MS - 1);
        let day0 = T0 / DAY_MS;
        let hour0 = T0 / HOUR_MS;
        assert_eq!(cover.hours_before, (hour0 + 22, hour0 + 24));
        assert_eq!(cover.days, (day0 + 1, day0 + 3));
        assert_eq!(cover.hours_after, (hour0 + 72, hour0 + 74));
        assert_eq!(cover.range(), (T0 + 22 * HOUR_MS, T0 + 3 * DAY_MS + 2 * HOUR_MS));
        let short = Cover::of(T0 + HOUR_MS, T0 + 3 * HOUR_MS);
        assert_eq!((short.hours_before, short.days), ((hour0 + 1, hour0 + 3), (0, 0)));
        assert_eq!(short.range(), (T0 + HOUR_MS, T0 + 3 * HOUR_MS));
        let days = Cover::of(T0, T0 + 2 * DAY_MS);
        assert_eq!((days.hours_before.0 == days.hours_before.1, days.days), (true, (day0, day0 + 2)));
        assert_eq!(days.range(), (T0, T0 + 2 * DAY_MS));
    }

    #[test]
    fn a_merge_reads_only_the_buckets_of_its_kind() {
        let mut rollups = Rollups::default();
        let dims = [
            Dim::agent("asha"),
            Dim::team("sales"),
            Dim::Source { kind: "paid".into(), id: "ad-1".into() },
            Dim::SourceTeam { team: "sales".into(), kind: "paid".into(), id: "ad-1".into() },
        ];
        // Two hours of every kind, and the hour after the range.
        for hour in 0..3 {
            for dim in &dims {
                rollups.add(dim, T0 + hour * HOUR_MS, |bucket| bucket.counts.assigned += 1);
            }
        }
        let cover = Cover::of(T0, T0 + 2 * HOUR_MS);
        for (kind, dim) in [DimKind::Agent, DimKind::Team, DimKind::Source, DimKind::SourceTeam].into_iter().zip(&dims)
        {
            let merged = rollups.merged(&cover, &kind.spans(), false, false, |dim| Some(dim.clone()));
            let found: Vec<(&Dim, u64)> =
                merged.iter().map(|((dim, _), bucket)| (dim, bucket.counts.assigned)).collect();
            assert_eq!(found, [(dim, 2)], "{kind:?}");
        }
        // A team's sources, not those of a team whose id it begins.
        let team = |team: &str| Dim::SourceTeam { team: team.into(), kind: "paid".into(), id: "ad-1".into() };
        for other in ["sale", "sales2", "salesteam"] {
            rollups.add(&team(other), T0, |bucket| bucket.counts.assigned += 1);
        }
        let sales = rollups.merged(&cover, &sources_of_teams(&["sales".to_owned()]), false, false, Some);
        assert_eq!(sales.keys().map(|(dim, _)| *dim).collect::<Vec<_>>(), [&team("sales")]);
        let two = sources_of_teams(&["sale".to_owned(), "salesteam".to_owned()]);
        let found = rollups.merged(&cover, &two, false, false, Some);
        assert_eq!(found.keys().map(|(dim, _)| *dim).collect::<Vec<_>>(), [&team("sale"), &team("salesteam")]);
    }

    #[test]
    fn merged_buckets_count_each_value_once_whatever_the_range() {
        let mut rollups = Rollups::default();
        let asha = Dim::agent("asha");
        // One value an hour for three days.
        for hour in 0..72 {
            rollups.add(&asha, T0 + hour * HOUR_MS + 60_000, |bucket| {
                bucket.counts.assigned += 1;
                bucket.first_response.add((hour + 1) as f64);
            });
        }
        let select = |dim: &Dim| match dim {
            Dim::Agent { id } => Some(id.clone()),
            _ => None,
        };
        let merged = |rollups: &Rollups, cover: &Cover, by_day: bool| {
            rollups.merged(cover, &DimKind::Agent.spans(), by_day, true, select)
        };
        for (from, to, expected) in [
            (T0, T0 + 3 * DAY_MS, 72),
            (T0 + 5 * HOUR_MS, T0 + 2 * DAY_MS + 7 * HOUR_MS, 50),
            (T0 + 5 * HOUR_MS, T0 + 6 * HOUR_MS, 1),
            (T0 - DAY_MS, T0, 0),
        ] {
            let merged = merged(&rollups, &Cover::of(from, to), false);
            let bucket = merged.get(&("asha".to_owned(), None));
            assert_eq!(bucket.map_or(0, |bucket| bucket.counts.assigned), expected, "{from}..{to}");
            assert_eq!(bucket.map_or(0, |bucket| bucket.first_response.count()), expected);
        }
        let all = merged(&rollups, &Cover::of(T0, T0 + 3 * DAY_MS), false);
        let sketch = &all[&("asha".to_owned(), None)].first_response;
        let p50 = sketch.quantile(0.5).unwrap();
        assert!((p50 - 36.0).abs() <= 36.0 * 0.021, "72 values: a sketch, within 2 %: {p50}");
        assert_eq!(sketch.mean(), Some(36.5));
        let by_day = merged(&rollups, &Cover::of(T0 + 12 * HOUR_MS, T0 + 3 * DAY_MS), true);
        let days: Vec<u64> = by_day.values().map(|bucket| bucket.counts.assigned).collect();
        assert_eq!(days, [12, 24, 24], "the first day from noon, by day");
        assert_eq!(rollups.take_dirty().len(), 72 + 3);
        assert!(rollups.take_dirty().is_empty());
    }

    #[test]
    fn many_values_become_a_sketch_within_two_percent() {
        let mut few = Sketch::default();
        let mut many = Sketch::default();
        for value in 1..=30 {
            few.add(f64::from(value));
        }
        for value in 31..=1000 {
            many.add(f64::from(value));
        }
        assert!(matches!(few, Sketch::Values(_)) && matches!(many, Sketch::Sketch(_)));
        let mut all = few.clone();
        all.merge(&many);
        assert_eq!((all.count(), all.sum()), (1000, 500_500.0));
        for (q, exact) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0)] {
            let got = all.quantile(q).unwrap();
            assert!((got - exact).abs() <= exact * 0.021, "q{q}: {got} against {exact}");
        }
        let mut other_way = many.clone();
        other_way.merge(&few);
        assert_eq!(other_way.count(), 1000);
        let mut small = Sketch::default();
        small.add(3.0);
        small.merge(&few);
        assert_eq!((small.count(), small.quantile(0.0)), (31, Some(1.0)));
    }

    #[test]
    fn a_bucket_survives_being_stored() {
        let mut bucket = Bucket::default();
        bucket.counts.revenue = 12.5;
        bucket.resolution.add(3600.0);
        for value in 0..200 {
            bucket.first_response.add(f64::from(value));
        }
        let bytes = rmp_serde::to_vec_named(&bucket).unwrap();
        let back: Bucket = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, bucket);
    }
}
