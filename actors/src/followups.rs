//! Promise-to-pay follow-ups (PROTOCOL §10, docs/followups.md), the pure
//! part: when a promise is due (its date at the field's `followup_at` in
//! the team's time zone), what a change of fields, a close or a payment
//! does to the schedule, who is told when it comes due, and the reminder
//! template's parameters. The engine's follow-ups consumer
//! (`engine::followups`) keeps the schedule and its cursor; the
//! conversation actor commits the firing (`followup` frames, the
//! template's send intent and the `followup_due` event, one batch). No
//! clock, no IO: unit tests call these directly.

use chrono::{NaiveDate, NaiveTime, TimeZone};
use chrono_tz::Tz;
use protocol::events::FieldChange;
use protocol::model::Role;
use protocol::time::UnixMs;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::rules::Promise;
use crate::settings::{AgentSpec, DispositionSpec, FieldKind, TeamSpec};

/// `HH:MM`, 24-hour, e.g. `10:00`.
pub fn time_of_day(text: &str) -> Option<NaiveTime> {
    let shape_ok = text.len() == 5 && text.as_bytes()[2] == b':';
    if !shape_ok {
        return None;
    }
    NaiveTime::parse_from_str(text, "%H:%M").ok()
}

/// A team's time zone: its `[teams.hours]` one, else UTC.
pub fn zone_of(team: Option<&TeamSpec>) -> Tz {
    team.and_then(|team| team.hours.as_ref()).and_then(|hours| hours.timezone.parse().ok()).unwrap_or(chrono_tz::UTC)
}

/// When a promise for `date` is followed up: `at` local time in `zone`.
/// A time a spring-forward gap skips is taken as the first valid minute
/// after it; one a fall-back repeats, as its first occurrence.
pub fn due_at(date: NaiveDate, at: NaiveTime, zone: Tz) -> UnixMs {
    let local = date.and_time(at);
    let mut probe = local;
    // A DST gap is at most a few hours; look forward minute by minute.
    for _ in 0..(24 * 60) {
        if let Some(instant) = zone.from_local_datetime(&probe).earliest() {
            return instant.timestamp_millis();
        }
        probe += chrono::Duration::minutes(1);
    }
    chrono::Utc.from_utc_datetime(&local).timestamp_millis()
}

/// The placeholders a `followup_template`'s params may hold.
pub const PLACEHOLDERS: [&str; 5] = ["amount", "date", "contact.name", "contact.wa_id", "conversation_id"];

/// The placeholders in `param`, `{name}` each, or what is wrong.
fn placeholders(param: &str) -> Result<Vec<&str>, String> {
    let mut found = Vec::new();
    let mut rest = param;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| format!("{param:?} opens a `{{` it does not close"))?;
        found.push(&after[..close]);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("{param:?} closes a `}}` it did not open"));
    }
    Ok(found)
}

/// Checks a template's params: each placeholder is one of [`PLACEHOLDERS`]
/// or `attributes.KEY` (the contact's attribute).
pub fn check_params(params: &[String]) -> Result<(), String> {
    for param in params {
        for name in placeholders(param)? {
            let attribute = name.strip_prefix("attributes.").is_some_and(|key| !key.is_empty());
            if !attribute && !PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "{{{name}}} in {param:?} is not a placeholder; use {}, or attributes.KEY",
                    PLACEHOLDERS.map(|name| format!("{{{name}}}")).join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// What a reminder's params are filled from.
#[derive(Clone, Debug, Default)]
pub struct ParamValues<'a> {
    pub promise: Option<&'a Promise>,
    pub conversation_id: &'a str,
    pub contact_wa_id: &'a str,
    pub contact_name: Option<&'a str>,
    /// The contact's attributes (PROTOCOL §8).
    pub attributes: Option<&'a Map<String, Value>>,
}

/// The params with their placeholders filled. An unknown value (no name,
/// an attribute the contact lacks) is the empty text.
pub fn render_params(params: &[String], values: &ParamValues<'_>) -> Vec<String> {
    params
        .iter()
        .map(|param| {
            let Ok(names) = placeholders(param) else { return param.clone() };
            let mut text = param.clone();
            for name in names {
                let value = match name {
                    "amount" => values.promise.map(|promise| amount_text(promise.amount)).unwrap_or_default(),
                    "date" => values.promise.map(|promise| promise.date.clone()).unwrap_or_default(),
                    "contact.name" => values.contact_name.unwrap_or_default().to_owned(),
                    "contact.wa_id" => values.contact_wa_id.to_owned(),
                    "conversation_id" => values.conversation_id.to_owned(),
                    other => other
                        .strip_prefix("attributes.")
                        .and_then(|key| values.attributes?.get(key))
                        .map(|value| match value {
                            Value::String(text) => text.clone(),
                            Value::Null => String::new(),
                            other => other.to_string(),
                        })
                        .unwrap_or_default(),
                };
                text = text.replacen(&format!("{{{name}}}"), &value, 1);
            }
            text
        })
        .collect()
}

/// An amount as a customer reads it: `2500`, `2500.5`.
fn amount_text(amount: f64) -> String {
    if amount.fract() == 0.0 && amount.abs() < 1e15 { format!("{}", amount as i64) } else { format!("{amount}") }
}

/// One scheduled follow-up, as the consumer stores it (row key
/// [`FollowupRow::key`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FollowupRow {
    pub conversation_id: String,
    /// The promise field's key.
    pub field: String,
    pub date: String,
    pub amount: f64,
    /// When it fires, unix ms.
    pub due: UnixMs,
    /// Who closed the conversation (told when nobody holds it).
    #[serde(default)]
    pub closer: Option<String>,
}

impl FollowupRow {
    pub fn key(&self) -> String {
        row_key(&self.conversation_id, &self.field)
    }

    pub fn promise(&self) -> Promise {
        Promise { date: self.date.clone(), amount: self.amount }
    }
}

/// The stored row's key: `conversation id/field` (a field key holds no `/`).
pub fn row_key(conversation_id: &str, field: &str) -> String {
    format!("{conversation_id}/{field}")
}

/// Why a follow-up will not fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// The paid field took a paid value.
    Paid,
    /// A payment was recorded through the API.
    Payment,
    /// The promise was cleared.
    Cleared,
    /// When it came due the conversation no longer held it unpaid (its
    /// team's schema lost the field, or a change is on its way).
    Stale,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Paid => "paid",
            CancelReason::Payment => "payment",
            CancelReason::Cleared => "cleared",
            CancelReason::Stale => "stale",
        }
    }
}

/// What an event does to the schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Schedule (or schedule again, a changed promise) this row.
    Schedule(FollowupRow),
    /// The row (by key) will not fire.
    Cancel { key: String, field: String, reason: CancelReason },
}

/// The promise fields of `schema` that are followed up (`followup_at` set),
/// with their time of day.
fn followed_up(schema: &[DispositionSpec]) -> impl Iterator<Item = (&DispositionSpec, NaiveTime)> {
    schema.iter().filter(|spec| spec.kind == FieldKind::Promise).filter_map(|spec| {
        let at = time_of_day(spec.followup_at.as_deref()?)?;
        Some((spec, at))
    })
}

/// Whether `fields` record a payment for the promise field `spec` (its
/// paid field holds one of its paid values).
pub fn is_paid(spec: &DispositionSpec, fields: &Map<String, Value>) -> bool {
    let Some(paid_field) = &spec.paid_field else { return false };
    fields.get(paid_field).and_then(Value::as_str).is_some_and(|value| spec.paid_values.iter().any(|v| v == value))
}

/// Whether a set of field changes may concern follow-ups in any schema
/// (so the consumer reads the conversation's team only then).
pub fn concerns_followups<'a>(
    mut schemas: impl Iterator<Item = &'a [DispositionSpec]>,
    changes: &[FieldChange],
) -> bool {
    schemas.any(|schema| {
        followed_up(schema).any(|(spec, _)| {
            changes.iter().any(|change| change.key == spec.key || Some(&change.key) == spec.paid_field.as_ref())
        })
    })
}

/// What `changes` to conversation `conversation_id` (in a team with
/// `schema` and time zone `zone`) do to its follow-ups; `rows` are its
/// scheduled ones. A new or changed promise is scheduled (again); a
/// cleared one, or its paid field set to a paid value, is cancelled (the
/// payment wins when both change at once).
pub fn on_fields_changed(
    conversation_id: &str,
    schema: &[DispositionSpec],
    zone: Tz,
    changes: &[FieldChange],
    rows: &[&FollowupRow],
) -> Vec<Step> {
    let mut steps = Vec::new();
    for (spec, at) in followed_up(schema) {
        let key = row_key(conversation_id, &spec.key);
        let existing = rows.iter().find(|row| row.field == spec.key);
        let paid = changes.iter().any(|change| {
            Some(&change.key) == spec.paid_field.as_ref()
                && change.new.as_str().is_some_and(|value| spec.paid_values.iter().any(|v| v == value))
        });
        if paid {
            if existing.is_some() {
                steps.push(Step::Cancel { key, field: spec.key.clone(), reason: CancelReason::Paid });
            }
            continue;
        }
        let Some(change) = changes.iter().find(|change| change.key == spec.key) else { continue };
        match Promise::parse(&change.new) {
            Ok(promise) => {
                let Some(day) = promise.day() else { continue };
                let due = due_at(day, at, zone);
                let unchanged = existing.is_some_and(|row| row.promise() == promise && row.due == due);
                if !unchanged {
                    steps.push(Step::Schedule(FollowupRow {
                        conversation_id: conversation_id.to_owned(),
                        field: spec.key.clone(),
                        date: promise.date,
                        amount: promise.amount,
                        due,
                        closer: existing.and_then(|row| row.closer.clone()),
                    }));
                }
            }
            Err(_) => {
                if existing.is_some() {
                    steps.push(Step::Cancel { key, field: spec.key.clone(), reason: CancelReason::Cleared });
                }
            }
        }
    }
    steps
}

/// A payment recorded through the API cancels every follow-up of the
/// conversation.
pub fn on_payment(rows: &[&FollowupRow]) -> Vec<Step> {
    rows.iter()
        .map(|row| Step::Cancel { key: row.key(), field: row.field.clone(), reason: CancelReason::Payment })
        .collect()
}

/// Whether the conversation's fields (as they are when it fires) still
/// hold `row`'s promise, unpaid: a fire that finds otherwise is stale (the
/// change that made it so is on its way to the consumer).
pub fn still_due(row: &FollowupRow, spec: Option<&DispositionSpec>, fields: &Map<String, Value>) -> bool {
    let Some(spec) = spec.filter(|spec| spec.kind == FieldKind::Promise) else { return false };
    let held = fields.get(&row.field).and_then(|value| Promise::parse(value).ok());
    held == Some(row.promise()) && !is_paid(spec, fields)
}

/// Who is told a follow-up is due: the agent holding the conversation;
/// when nobody does (it was closed, or waits in a queue), the agent who
/// closed it while still in the pool; else every active agent of its team
/// and the managers and admins who see the team.
pub fn recipients(holder: Option<&str>, closer: Option<&str>, team: Option<&str>, pool: &[AgentSpec]) -> Vec<String> {
    if let Some(holder) = holder {
        return vec![holder.to_owned()];
    }
    if let Some(closer) = closer.filter(|closer| pool.iter().any(|agent| agent.id == *closer)) {
        return vec![closer.to_owned()];
    }
    pool.iter()
        .filter(|agent| {
            let member = team.is_some_and(|team| agent.teams.iter().any(|own| own == team));
            let oversees = agent.role != Role::Agent
                && (agent.manages.is_empty() || team.is_some_and(|team| agent.manages.iter().any(|own| own == team)));
            member || oversees
        })
        .map(|agent| agent.id.clone())
        .collect()
}

/// A payment an integration records (`POST
/// /api/v1/conversations/{id}/payments`): `{amount, at?}`, the amount more
/// than 0, `at` RFC 3339 when given.
#[derive(Clone, Debug, PartialEq)]
pub struct Payment {
    pub amount: f64,
    pub at: Option<String>,
}

pub fn parse_payment(body: &Value) -> Result<Payment, protocol::ApiError> {
    use protocol::{ApiError, ErrorCode};
    let invalid = |field: &str, message: String| {
        ApiError::new(ErrorCode::InvalidField, message).with_detail(serde_json::json!({ "field": field }))
    };
    let Some(object) = body.as_object() else {
        return Err(ApiError::bad_request("the body must be a JSON object {\"amount\": number, \"at\"?: RFC 3339}"));
    };
    if let Some(other) = object.keys().find(|key| *key != "amount" && *key != "at") {
        return Err(invalid(other, format!("{other:?} is not part of a payment; give `amount` and, if known, `at`")));
    }
    let amount = match object.get("amount") {
        Some(Value::Number(number)) => number.as_f64().filter(|amount| amount.is_finite() && *amount > 0.0),
        Some(other) => return Err(invalid("amount", format!("`amount` must be a number greater than 0, not {other}"))),
        None => return Err(invalid("amount", "`amount` is missing (the amount paid, a number)".to_owned())),
    };
    let Some(amount) = amount else {
        return Err(invalid("amount", format!("`amount` must be greater than 0, not {}", object["amount"])));
    };
    let at = match object.get("at") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if chrono::DateTime::parse_from_rfc3339(text).is_ok() => Some(text.clone()),
        Some(other) => {
            return Err(invalid("at", format!("`at` must be a time as RFC 3339 (2026-12-01T10:00:00Z), not {other}")));
        }
    };
    Ok(Payment { amount, at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn utc_ms(text: &str) -> UnixMs {
        chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
    }

    #[test]
    fn times_of_day_are_hh_mm() {
        assert_eq!(time_of_day("10:00"), NaiveTime::from_hms_opt(10, 0, 0));
        assert_eq!(time_of_day("23:59"), NaiveTime::from_hms_opt(23, 59, 0));
        for bad in ["24:00", "10", "9:00", "10:60", "10:00:00", "ten", ""] {
            assert_eq!(time_of_day(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn due_times_are_local_to_the_team_with_dst() {
        let ten = time_of_day("10:00").unwrap();
        let zone = |name: &str| name.parse::<Tz>().unwrap();
        assert_eq!(due_at(day("2026-12-02"), ten, zone("UTC")), utc_ms("2026-12-02T10:00:00Z"));
        assert_eq!(due_at(day("2026-12-02"), ten, zone("Asia/Kolkata")), utc_ms("2026-12-02T04:30:00Z"));
        // New York: EST (UTC-5) in winter, EDT (UTC-4) in summer.
        assert_eq!(due_at(day("2026-01-15"), ten, zone("America/New_York")), utc_ms("2026-01-15T15:00:00Z"));
        assert_eq!(due_at(day("2026-07-15"), ten, zone("America/New_York")), utc_ms("2026-07-15T14:00:00Z"));
        // 2026-03-08 02:30 does not exist in New York (02:00 → 03:00): 03:00 EDT.
        let half_two = time_of_day("02:30").unwrap();
        assert_eq!(due_at(day("2026-03-08"), half_two, zone("America/New_York")), utc_ms("2026-03-08T07:00:00Z"));
        // 2026-11-01 01:30 happens twice (EDT then EST): the first, EDT.
        let half_one = time_of_day("01:30").unwrap();
        assert_eq!(due_at(day("2026-11-01"), half_one, zone("America/New_York")), utc_ms("2026-11-01T05:30:00Z"));
        // A team without hours: UTC.
        assert_eq!(zone_of(None), chrono_tz::UTC);
        let team: TeamSpec = serde_json::from_value(json!({"id": "c", "hours": {
            "timezone": "Europe/Berlin", "week": {"mon": ["09:00-17:00"]}}}))
        .unwrap();
        assert_eq!(zone_of(Some(&team)), zone("Europe/Berlin"));
    }

    #[test]
    fn params_hold_known_placeholders_and_are_filled() {
        let params: Vec<String> =
            ["Hi {contact.name}", "{amount} due {date}", "https://pay.example/{attributes.account}"]
                .map(str::to_owned)
                .to_vec();
        assert_eq!(check_params(&params), Ok(()));
        assert!(check_params(&["{amount".into()]).unwrap_err().contains("does not close"));
        assert!(check_params(&["amount}".into()]).unwrap_err().contains("did not open"));
        assert!(check_params(&["{balance}".into()]).unwrap_err().contains("{balance} in \"{balance}\" is not"));
        assert!(check_params(&["{attributes.}".into()]).is_err());
        let promise = Promise { date: "2026-12-02".into(), amount: 2500.0 };
        let attributes = json!({"account": "AC-7"}).as_object().cloned().unwrap();
        let values = ParamValues {
            promise: Some(&promise),
            conversation_id: "cv1",
            contact_wa_id: "919800000001",
            contact_name: Some("Ravi"),
            attributes: Some(&attributes),
        };
        assert_eq!(render_params(&params, &values), ["Hi Ravi", "2500 due 2026-12-02", "https://pay.example/AC-7"]);
        let half = Promise { date: "2026-12-02".into(), amount: 99.5 };
        let missing = ParamValues { promise: Some(&half), contact_name: None, attributes: None, ..values };
        assert_eq!(render_params(&params, &missing), ["Hi ", "99.5 due 2026-12-02", "https://pay.example/"]);
    }

    fn schema() -> Vec<DispositionSpec> {
        let mut status = DispositionSpec::new("ptp_status", FieldKind::Enum);
        status.options = vec!["promised".into(), "paid".into(), "refused".into()];
        let mut promise = DispositionSpec::new("promise", FieldKind::Promise);
        promise.followup_at = Some("10:00".into());
        promise.paid_field = Some("ptp_status".into());
        promise.paid_values = vec!["paid".into()];
        vec![status, promise]
    }

    fn change(key: &str, old: Value, new: Value) -> FieldChange {
        FieldChange { key: key.into(), old, new }
    }

    fn row(date: &str, amount: f64) -> FollowupRow {
        FollowupRow {
            conversation_id: "cv1".into(),
            field: "promise".into(),
            date: date.into(),
            amount,
            due: due_at(day(date), time_of_day("10:00").unwrap(), chrono_tz::Asia::Kolkata),
            closer: Some("asha".into()),
        }
    }

    #[test]
    fn a_promise_schedules_a_change_reschedules_and_clearing_or_paying_cancels() {
        let zone = chrono_tz::Asia::Kolkata;
        let promise = json!({"date": "2026-12-02", "amount": 2500});
        let changes = [change("promise", Value::Null, promise.clone())];
        let steps = on_fields_changed("cv1", &schema(), zone, &changes, &[]);
        let first = FollowupRow { closer: None, ..row("2026-12-02", 2500.0) };
        assert_eq!(steps, [Step::Schedule(first.clone())]);
        assert_eq!(first.due, utc_ms("2026-12-02T04:30:00Z"));
        assert!(concerns_followups([schema().as_slice()].into_iter(), &changes));
        // The same promise again: nothing.
        let scheduled = row("2026-12-02", 2500.0);
        assert!(on_fields_changed("cv1", &schema(), zone, &changes, &[&scheduled]).is_empty());
        // A new date: scheduled again, keeping who closed it.
        let moved = [change("promise", promise.clone(), json!({"date": "2026-12-05", "amount": 2500}))];
        assert_eq!(
            on_fields_changed("cv1", &schema(), zone, &moved, &[&scheduled]),
            [Step::Schedule(row("2026-12-05", 2500.0))]
        );
        // Cleared: cancelled; cleared when nothing was scheduled: nothing.
        let cleared = [change("promise", promise.clone(), Value::Null)];
        let cancel = |reason| Step::Cancel { key: "cv1/promise".into(), field: "promise".into(), reason };
        assert_eq!(on_fields_changed("cv1", &schema(), zone, &cleared, &[&scheduled]), [cancel(CancelReason::Cleared)]);
        assert!(on_fields_changed("cv1", &schema(), zone, &cleared, &[]).is_empty());
        // Paid: cancelled, also when the promise changes in the same set.
        let paid = [change("ptp_status", json!("promised"), json!("paid"))];
        assert_eq!(on_fields_changed("cv1", &schema(), zone, &paid, &[&scheduled]), [cancel(CancelReason::Paid)]);
        let both = [moved[0].clone(), paid[0].clone()];
        assert_eq!(on_fields_changed("cv1", &schema(), zone, &both, &[&scheduled]), [cancel(CancelReason::Paid)]);
        let refused = [change("ptp_status", json!("promised"), json!("refused"))];
        assert!(on_fields_changed("cv1", &schema(), zone, &refused, &[&scheduled]).is_empty());
        // A payment through the API.
        assert_eq!(on_payment(&[&scheduled]), [cancel(CancelReason::Payment)]);
        // A field no follow-up cares about.
        let other = [change("note", Value::Null, json!("x"))];
        assert!(!concerns_followups([schema().as_slice()].into_iter(), &other));
        // A promise field without `followup_at` is not followed up.
        let mut quiet = schema();
        quiet[1].followup_at = None;
        assert!(on_fields_changed("cv1", &quiet, zone, &changes, &[]).is_empty());
    }

    #[test]
    fn a_fire_is_stale_once_the_promise_changed_or_was_paid() {
        let scheduled = row("2026-12-02", 2500.0);
        let spec = schema()[1].clone();
        let fields = |value: Value| value.as_object().cloned().unwrap();
        let holds = fields(json!({"promise": {"date": "2026-12-02", "amount": 2500}, "ptp_status": "promised"}));
        assert!(still_due(&scheduled, Some(&spec), &holds));
        let moved = fields(json!({"promise": {"date": "2026-12-03", "amount": 2500}}));
        assert!(!still_due(&scheduled, Some(&spec), &moved));
        let paid = fields(json!({"promise": {"date": "2026-12-02", "amount": 2500}, "ptp_status": "paid"}));
        assert!(!still_due(&scheduled, Some(&spec), &paid));
        assert!(!still_due(&scheduled, None, &holds), "the team's schema no longer has the field");
    }

    #[test]
    fn payments_have_an_amount_and_maybe_a_time() {
        assert_eq!(parse_payment(&json!({"amount": 2500})), Ok(Payment { amount: 2500.0, at: None }));
        assert_eq!(
            parse_payment(&json!({"amount": 1.5, "at": "2026-12-01T09:00:00+05:30"})),
            Ok(Payment { amount: 1.5, at: Some("2026-12-01T09:00:00+05:30".into()) })
        );
        for (body, field) in [
            (json!({}), "amount"),
            (json!({"amount": 0}), "amount"),
            (json!({"amount": "10"}), "amount"),
            (json!({"amount": 10, "at": "yesterday"}), "at"),
            (json!({"amount": 10, "currency": "INR"}), "currency"),
        ] {
            let error = parse_payment(&body).unwrap_err();
            assert_eq!(error.code, protocol::ErrorCode::InvalidField, "{body}");
            assert_eq!(error.detail.unwrap()["field"], field, "{body}");
        }
        assert_eq!(parse_payment(&json!([1])).unwrap_err().code, protocol::ErrorCode::BadRequest);
    }

    #[test]
    fn the_holder_is_told_else_the_closer_else_the_team() {
        let pool: Vec<AgentSpec> = serde_json::from_value(json!([
            {"id": "asha", "teams": ["collections"]},
            {"id": "ravi", "teams": ["collections"]},
            {"id": "sam", "teams": ["sales"]},
            {"id": "lead", "role": "manager", "manages": ["collections"]},
            {"id": "boss", "role": "admin"},
            {"id": "sales-lead", "role": "manager", "manages": ["sales"]},
        ]))
        .unwrap();
        assert_eq!(recipients(Some("ravi"), Some("asha"), Some("collections"), &pool), ["ravi"]);
        assert_eq!(recipients(None, Some("asha"), Some("collections"), &pool), ["asha"]);
        assert_eq!(
            recipients(None, Some("gone"), Some("collections"), &pool),
            ["asha", "ravi", "lead", "boss"],
            "a closer no longer in the pool: the team"
        );
        assert_eq!(recipients(None, None, None, &pool), ["boss"]);
    }
}
