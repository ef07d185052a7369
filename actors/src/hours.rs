//! Business hours: SLA clocks that run only inside a team's working periods.
//!
//! A [`Schedule`] is a time zone, up to several periods per weekday and a list
//! of holidays. [`Schedule::add`] answers "when will `duration` of business
//! time have passed after `start`?"; [`Schedule::between`] measures business
//! time between two instants. Both are pure and property-tested.

use std::collections::{BTreeMap, HashSet};

use chrono::{Datelike, Duration as ChronoDuration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use protocol::time::UnixMs;
use serde::{Deserialize, Serialize};

/// `[teams.hours]` in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HoursSpec {
    /// IANA time zone, e.g. `Asia/Kolkata`.
    pub timezone: String,
    /// Periods per weekday (`mon` … `sun`), each `"HH:MM-HH:MM"`; `24:00` ends a day.
    #[serde(default)]
    pub week: BTreeMap<String, Vec<String>>,
    /// Dates (`YYYY-MM-DD`, local) with no business hours.
    #[serde(default)]
    pub holidays: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Schedule {
    zone: Tz,
    /// Minutes since local midnight, [start, end), per weekday (Mon = 0).
    week: [Vec<(u32, u32)>; 7],
    holidays: HashSet<NaiveDate>,
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
/// No schedule looks further ahead than this for business time.
const HORIZON_DAYS: u32 = 4 * 366;

impl Schedule {
    /// Parses and checks a spec; the error names the part that is wrong.
    pub fn parse(spec: &HoursSpec) -> Result<Schedule, String> {
        let zone: Tz = spec.timezone.parse().map_err(|_| format!("unknown time zone {:?}", spec.timezone))?;
        let mut week: [Vec<(u32, u32)>; 7] = Default::default();
        for (day, periods) in &spec.week {
            let index = WEEKDAYS
                .iter()
                .position(|name| name == day)
                .ok_or_else(|| format!("unknown weekday {day:?}; use mon, tue, wed, thu, fri, sat, sun"))?;
            for period in periods {
                let (start, end) = parse_period(period).ok_or_else(|| {
                    format!("period {period:?} on {day} is not \"HH:MM-HH:MM\" with the start before the end")
                })?;
                week[index].push((start, end));
            }
            week[index].sort_unstable();
            if week[index].windows(2).any(|pair| pair[0].1 > pair[1].0) {
                return Err(format!("periods on {day} overlap"));
            }
        }
        if week.iter().all(Vec::is_empty) {
            return Err("no business hours on any day".to_owned());
        }
        let holidays = spec
            .holidays
            .iter()
            .map(|day| {
                NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|_| format!("holiday {day:?} is not YYYY-MM-DD"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Schedule { zone, week, holidays })
    }

    /// Every instant is business time (used when a team has no hours).
    pub fn always() -> Schedule {
        let all_day = vec![(0, 24 * 60)];
        Schedule { zone: chrono_tz::UTC, week: std::array::from_fn(|_| all_day.clone()), holidays: HashSet::new() }
    }

    /// The business periods of one local day, as UTC unix ms intervals.
    fn periods_of(&self, date: NaiveDate) -> Vec<(UnixMs, UnixMs)> {
        if self.holidays.contains(&date) {
            return Vec::new();
        }
        let weekday = date.weekday().num_days_from_monday() as usize;
        self.week[weekday]
            .iter()
            .filter_map(|&(start, end)| {
                let from = self.local_instant(date, start)?;
                let to = self.local_instant(date, end)?;
                (to > from).then_some((from, to))
            })
            .collect()
    }

    /// The UTC instant of `minutes` after local midnight of `date`. A local
    /// time skipped by a daylight-saving jump maps to the first valid instant after it.
    fn local_instant(&self, date: NaiveDate, minutes: u32) -> Option<UnixMs> {
        let base = NaiveDateTime::new(date, NaiveTime::MIN) + ChronoDuration::minutes(i64::from(minutes));
        for shift in 0..=4 {
            let candidate = base + ChronoDuration::minutes(30 * shift);
            if let Some(at) = self.zone.from_local_datetime(&candidate).earliest() {
                return Some(at.timestamp_millis());
            }
        }
        None
    }

    fn local_date(&self, at: UnixMs) -> NaiveDate {
        let utc = Utc.timestamp_millis_opt(at).single().unwrap_or_default();
        utc.with_timezone(&self.zone).date_naive()
    }

    /// When `duration_ms` of business time will have passed after `start`.
    /// With no business time ahead within the horizon, returns `UnixMs::MAX`.
    pub fn add(&self, start: UnixMs, duration_ms: i64) -> UnixMs {
        let mut remaining = duration_ms.max(0);
        let mut date = self.local_date(start).pred_opt().unwrap_or(NaiveDate::MIN);
        for _ in 0..HORIZON_DAYS {
            for (from, to) in self.periods_of(date) {
                if to <= start {
                    continue;
                }
                let begin = from.max(start);
                let available = to - begin;
                if remaining <= available {
                    return begin + remaining;
                }
                remaining -= available;
            }
            let Some(next) = date.succ_opt() else { break };
            date = next;
        }
        UnixMs::MAX
    }

    /// When the hours open next after `at`, while they are closed (`None`:
    /// open at `at`, or never open within the horizon).
    pub fn next_opening(&self, at: UnixMs) -> Option<UnixMs> {
        if self.is_open(at) {
            return None;
        }
        Some(self.add(at, 0)).filter(|opens| *opens != UnixMs::MAX)
    }

    /// `at` as a customer of this schedule reads it: `Mon 09:00` in its
    /// time zone.
    pub fn local_label(&self, at: UnixMs) -> String {
        let utc = Utc.timestamp_millis_opt(at).single().unwrap_or_default();
        utc.with_timezone(&self.zone).format("%a %H:%M").to_string()
    }

    /// Whether `at` is inside business hours.
    pub fn is_open(&self, at: UnixMs) -> bool {
        self.between(at, at.saturating_add(1)) > 0
    }

    /// Business time between `from` and `to` (0 when `to <= from`).
    pub fn between(&self, from: UnixMs, to: UnixMs) -> i64 {
        if to <= from {
            return 0;
        }
        let mut total = 0;
        let mut date = self.local_date(from).pred_opt().unwrap_or(NaiveDate::MIN);
        let last = self.local_date(to).succ_opt().unwrap_or(NaiveDate::MAX);
        while date <= last {
            for (start, end) in self.periods_of(date) {
                let overlap = end.min(to) - start.max(from);
                if overlap > 0 {
                    total += overlap;
                }
            }
            let Some(next) = date.succ_opt() else { break };
            date = next;
        }
        total
    }
}

fn parse_period(text: &str) -> Option<(u32, u32)> {
    let (start, end) = text.split_once('-')?;
    let minutes = |part: &str| -> Option<u32> {
        let (hours, minutes) = part.trim().split_once(':')?;
        let (hours, minutes): (u32, u32) = (hours.parse().ok()?, minutes.parse().ok()?);
        (minutes < 60 && (hours < 24 || (hours == 24 && minutes == 0))).then_some(hours * 60 + minutes)
    };
    let (start, end) = (minutes(start)?, minutes(end)?);
    (start < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: i64 = 3_600_000;

    fn office() -> Schedule {
        let spec = HoursSpec {
            timezone: "Asia/Kolkata".into(),
            week: ["mon", "tue", "wed", "thu", "fri"]
                .iter()
                .map(|day| (day.to_string(), vec!["09:00-13:00".to_string(), "14:00-18:00".to_string()]))
                .collect(),
            holidays: vec!["2026-12-25".into()],
        };
        Schedule::parse(&spec).unwrap()
    }

    fn at(text: &str) -> UnixMs {
        protocol::time::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn deadlines_skip_lunch_nights_weekends_and_holidays() {
        let schedule = office();
        // Tue 2026-11-24 12:30 IST + 1 h → 14:30 (lunch is not business time).
        assert_eq!(schedule.add(at("2026-11-24T12:30:00+05:30"), HOUR), at("2026-11-24T14:30:00+05:30"));
        // 17:30 + 1 h → next morning 09:30.
        assert_eq!(schedule.add(at("2026-11-24T17:30:00+05:30"), HOUR), at("2026-11-25T09:30:00+05:30"));
        // Friday 17:00 + 2 h → Monday 10:00.
        assert_eq!(schedule.add(at("2026-11-27T17:00:00+05:30"), 2 * HOUR), at("2026-11-30T10:00:00+05:30"));
        // Thu 24 Dec 17:00 + 2 h → Christmas is a holiday → Sat/Sun closed → Mon 28 Dec 10:00.
        assert_eq!(schedule.add(at("2026-12-24T17:00:00+05:30"), 2 * HOUR), at("2026-12-28T10:00:00+05:30"));
        // Starting at night: the clock starts at 09:00.
        assert_eq!(schedule.add(at("2026-11-24T03:00:00+05:30"), 0), at("2026-11-24T09:00:00+05:30"));
        // The edge: a deadline exactly at the end of a period stays there.
        assert_eq!(schedule.add(at("2026-11-24T12:00:00+05:30"), HOUR), at("2026-11-24T13:00:00+05:30"));
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        let mut spec = HoursSpec { timezone: "Mars/Olympus".into(), week: BTreeMap::new(), holidays: vec![] };
        assert!(Schedule::parse(&spec).unwrap_err().contains("time zone"));
        spec.timezone = "UTC".into();
        spec.week.insert("mon".into(), vec!["18:00-09:00".into()]);
        assert!(Schedule::parse(&spec).unwrap_err().contains("18:00-09:00"));
        spec.week.insert("mon".into(), vec!["09:00-12:00".into(), "11:00-13:00".into()]);
        assert!(Schedule::parse(&spec).unwrap_err().contains("overlap"));
        spec.week.clear();
        spec.week.insert("someday".into(), vec!["09:00-12:00".into()]);
        assert!(Schedule::parse(&spec).unwrap_err().contains("weekday"));
    }

    proptest! {
        #[test]
        fn always_open_is_wall_clock_time(start in 1_700_000_000_000i64..1_900_000_000_000, duration in 0i64..30 * 24 * HOUR) {
            let schedule = Schedule::always();
            prop_assert_eq!(schedule.add(start, duration), start + duration);
            prop_assert_eq!(schedule.between(start, start + duration), duration);
        }

        #[test]
        fn business_deadlines_round_trip(start in 1_780_000_000_000i64..1_830_000_000_000, duration in 0i64..80 * HOUR) {
            let schedule = office();
            let due = schedule.add(start, duration);
            prop_assert!(due >= start + duration, "business time never runs faster than the wall clock");
            prop_assert_eq!(schedule.between(start, due), duration);
            // Monotonic: one more millisecond of business time is never earlier.
            prop_assert!(schedule.add(start, duration + 1) > due);
            // The deadline is inside a period (or at its end), never on a holiday night.
            let local = Utc.timestamp_millis_opt(due).unwrap().with_timezone(&schedule.zone);
            let minutes = local.time().hour_minute();
            prop_assert!((9 * 60..=18 * 60).contains(&minutes), "{local}");
            prop_assert!(local.date_naive() != NaiveDate::from_ymd_opt(2026, 12, 25).unwrap() || minutes == 0);
        }
    }

    trait HourMinute {
        fn hour_minute(&self) -> u32;
    }

    impl HourMinute for NaiveTime {
        fn hour_minute(&self) -> u32 {
            use chrono::Timelike;
            self.hour() * 60 + self.minute()
        }
    }
}
