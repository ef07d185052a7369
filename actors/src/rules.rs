//! Pure business decisions on the configured dispositions: field
//! validation, Force-Action, and what a close is worth (won, its money
//! field) per team's schema ([`Dispositions`], which the reports, the CRMs
//! and the Conversions API read alike). (What the contract itself decides, a
//! conversation's source, the windows and the shown message, is
//! `protocol::rules`.) No runtime, no IO: unit tests call these directly.

use std::collections::BTreeMap;

use protocol::{ApiError, ErrorCode};
use serde_json::{Map, Value, json};

use crate::settings::{DispositionSpec, FieldKind};

/// Checks the fields a client sets against a disposition schema (the
/// conversation's team's, [`crate::settings::Schemas::of`]): unknown keys
/// and values of the wrong kind are `invalid_field`. `null` clears a field.
pub fn validate_fields(specs: &[DispositionSpec], fields: &Map<String, Value>) -> Result<(), ApiError> {
    for (key, value) in fields {
        let Some(spec) = specs.iter().find(|spec| &spec.key == key) else {
            return Err(invalid_field(key, format!("`{key}` is not a configured disposition field")));
        };
        if value.is_null() {
            continue;
        }
        let ok = match spec.kind {
            FieldKind::Enum => value.as_str().is_some_and(|text| spec.options.iter().any(|option| option == text)),
            FieldKind::Text => value.is_string(),
            FieldKind::Number => value.is_number(),
            FieldKind::Money => value.is_number() || value.as_str().is_some_and(|text| text.parse::<f64>().is_ok()),
            FieldKind::Date => value.as_str().is_some_and(is_date),
            FieldKind::Promise => {
                if let Err(problem) = Promise::parse(value) {
                    return Err(invalid_field(key, format!("`{key}` must be a promise: {problem}")));
                }
                true
            }
        };
        if !ok {
            let expected = match spec.kind {
                FieldKind::Enum => format!("one of {}", spec.options.join(", ")),
                FieldKind::Text => "a string".to_owned(),
                FieldKind::Number => "a number".to_owned(),
                FieldKind::Money => "an amount (number)".to_owned(),
                FieldKind::Date => "a date (YYYY-MM-DD)".to_owned(),
                FieldKind::Promise => unreachable!("a promise says what is wrong above"),
            };
            return Err(invalid_field(key, format!("`{key}` must be {expected}, got {value}")));
        }
    }
    Ok(())
}

fn invalid_field(key: &str, message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidField, message).with_detail(json!({ "field": key }))
}

/// A promise to pay, the value of a `promise` field (PROTOCOL §10).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Promise {
    /// The promised day, `YYYY-MM-DD`.
    pub date: String,
    /// The promised amount, more than 0.
    pub amount: f64,
}

impl Promise {
    /// Reads `{date: "YYYY-MM-DD", amount: number}` (nothing else); the
    /// error says what is wrong, for a person.
    pub fn parse(value: &Value) -> Result<Promise, String> {
        let Some(object) = value.as_object() else {
            return Err(format!("give {{\"date\": \"YYYY-MM-DD\", \"amount\": number}}, not {value}"));
        };
        if let Some(other) = object.keys().find(|key| *key != "date" && *key != "amount") {
            return Err(format!("{other:?} is not part of a promise; give only `date` and `amount`"));
        }
        let date = match object.get("date") {
            Some(Value::String(date)) if is_date(date) => date.clone(),
            Some(other) => return Err(format!("`date` must be a day as YYYY-MM-DD, not {other}")),
            None => return Err("`date` is missing (the promised day, YYYY-MM-DD)".to_owned()),
        };
        let amount = match object.get("amount") {
            Some(Value::Number(number)) => number.as_f64().filter(|amount| amount.is_finite() && *amount > 0.0),
            Some(other) => return Err(format!("`amount` must be a number greater than 0, not {other}")),
            None => return Err("`amount` is missing (the promised amount, a number)".to_owned()),
        };
        let Some(amount) = amount else {
            return Err(format!("`amount` must be greater than 0, not {}", object["amount"]));
        };
        Ok(Promise { date, amount })
    }

    /// The day, parsed (checked by [`Promise::parse`]).
    pub fn day(&self) -> Option<chrono::NaiveDate> {
        chrono::NaiveDate::parse_from_str(&self.date, "%Y-%m-%d").ok()
    }

    pub fn to_json(&self) -> Value {
        json!({"date": self.date, "amount": self.amount})
    }
}

/// `YYYY-MM-DD`, exactly those digits, and a day that exists (no 2026-02-31).
fn is_date(text: &str) -> bool {
    let shape_ok = text.len() == 10
        && text.bytes().enumerate().all(|(index, byte)| match index {
            4 | 7 => byte == b'-',
            _ => byte.is_ascii_digit(),
        });
    shape_ok && chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
}

/// The required-on-close fields still unset in `fields`, in configuration order.
pub fn missing_on_close(specs: &[DispositionSpec], fields: &Map<String, Value>) -> Vec<String> {
    specs
        .iter()
        .filter(|spec| spec.required_on_close)
        .filter(|spec| match fields.get(&spec.key) {
            None | Some(Value::Null) => true,
            Some(Value::String(text)) => text.trim().is_empty(),
            Some(_) => false,
        })
        .map(|spec| spec.key.clone())
        .collect()
}

pub fn disposition_required(missing: Vec<String>) -> ApiError {
    ApiError::new(
        ErrorCode::DispositionRequired,
        format!("set {} before closing this conversation", missing.join(", ")),
    )
    .with_detail(json!({ "missing": missing }))
}

/// What one disposition schema says a closed conversation is worth: which
/// values of which fields are won, and the first `money` field (the
/// reports' revenue, the CRMs' deal amount, the Conversions API's value).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Disposition {
    pub won: Vec<(String, Vec<String>)>,
    pub money: Option<String>,
}

/// Every schema's [`Disposition`]: the global one and each team's own. A
/// conversation is read with its team's (`of`), as Force-Action checks it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dispositions {
    pub global: Disposition,
    pub teams: BTreeMap<String, Disposition>,
}

impl Dispositions {
    /// From the configuration: `[[dispositions]]` and each team's
    /// `[[teams.dispositions]]`.
    pub fn from_config<'a>(
        global: &[DispositionSpec],
        teams: impl IntoIterator<Item = (&'a str, &'a [DispositionSpec])>,
    ) -> Dispositions {
        Dispositions {
            global: Disposition::from_schema(global),
            teams: teams
                .into_iter()
                .map(|(team, schema)| (team.to_owned(), Disposition::from_schema(schema)))
                .collect(),
        }
    }

    /// The schema a conversation of `team` is closed with: the team's own,
    /// else the global one.
    pub fn of(&self, team: Option<&str>) -> &Disposition {
        team.and_then(|team| self.teams.get(team)).unwrap_or(&self.global)
    }
}

impl Disposition {
    /// The won values and the first `money` field of one schema.
    pub fn from_schema(schema: &[DispositionSpec]) -> Disposition {
        Disposition {
            won: schema
                .iter()
                .filter(|field| !field.won_values.is_empty())
                .map(|field| (field.key.clone(), field.won_values.clone()))
                .collect(),
            money: schema.iter().find(|field| field.kind == FieldKind::Money).map(|field| field.key.clone()),
        }
    }

    /// Whether `fields` hold a won value of a field that has them.
    pub fn is_won(&self, fields: &Map<String, Value>) -> bool {
        self.won.iter().any(|(key, values)| {
            fields.get(key).and_then(Value::as_str).is_some_and(|value| values.iter().any(|won| won == value))
        })
    }

    /// The first `money` field's value (a number, or a number as text).
    pub fn amount(&self, fields: &Map<String, Value>) -> Option<f64> {
        match fields.get(self.money.as_ref()?)? {
            Value::Number(number) => number.as_f64(),
            Value::String(text) => text.trim().parse().ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_yyyy_mm_dd_of_a_real_day() {
        for (text, expected) in [
            ("2026-02-28", true),
            ("2028-02-29", true), // leap year
            ("2026-12-31", true),
            ("2026-02-31", false), // was accepted: day 31 of a 28-day month
            ("2026-02-29", false),
            ("2100-02-29", false), // not a leap year
            ("2026-04-31", false),
            ("2026-13-01", false),
            ("2026-00-10", false),
            ("2026-01-00", false),
            ("2026-1-01", false),
            ("26-01-01", false),
            ("2026-01-01T00:00:00Z", false),
            ("2026/01/01", false),
            ("+202-01-01", false),
            ("", false),
        ] {
            assert_eq!(is_date(text), expected, "{text:?}");
        }
    }

    fn specs() -> Vec<DispositionSpec> {
        vec![
            DispositionSpec {
                key: "outcome".into(),
                label: None,
                kind: FieldKind::Enum,
                options: vec!["closed_won".into(), "follow_up".into()],
                required_on_close: true,
                won_values: vec!["closed_won".into()],
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
            DispositionSpec {
                key: "due".into(),
                label: None,
                kind: FieldKind::Date,
                options: vec![],
                required_on_close: false,
                won_values: vec![],
                ..DispositionSpec::new("", FieldKind::Text)
            },
        ]
    }

    fn check_fields(fields: Value, expected: Result<(), &str>) {
        let result = validate_fields(&specs(), fields.as_object().unwrap());
        match (result, expected) {
            (Ok(()), Ok(())) => {}
            (Err(error), Err(field)) => {
                assert_eq!(error.code, ErrorCode::InvalidField);
                assert_eq!(error.detail.unwrap()["field"], field);
            }
            (result, expected) => panic!("{fields}: got {result:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn field_validation() {
        check_fields(json!({"outcome": "closed_won", "amount": 1200.5, "due": "2026-12-01"}), Ok(()));
        check_fields(json!({"outcome": "maybe"}), Err("outcome"));
        check_fields(json!({"amount": "lots"}), Err("amount"));
        check_fields(json!({"due": "2026-13-01"}), Err("due"));
        check_fields(json!({"colour": "red"}), Err("colour"));
    }

    #[test]
    fn promises_are_a_real_day_and_a_positive_amount() {
        let promise = |value: Value| Promise::parse(&value);
        assert_eq!(
            promise(json!({"date": "2026-12-02", "amount": 2500})),
            Ok(Promise { date: "2026-12-02".into(), amount: 2500.0 })
        );
        assert_eq!(promise(json!({"amount": 0.5, "date": "2028-02-29"})).unwrap().amount, 0.5);
        for (value, says) in [
            (json!("2026-12-02"), "give {"),
            (json!({"date": "2026-02-30", "amount": 10}), "`date` must be a day"),
            (json!({"date": 20261202, "amount": 10}), "`date` must be a day"),
            (json!({"amount": 10}), "`date` is missing"),
            (json!({"date": "2026-12-02"}), "`amount` is missing"),
            (json!({"date": "2026-12-02", "amount": "10"}), "`amount` must be a number"),
            (json!({"date": "2026-12-02", "amount": 0}), "`amount` must be greater than 0"),
            (json!({"date": "2026-12-02", "amount": -5}), "`amount` must be greater than 0"),
            (json!({"date": "2026-12-02", "amount": 10, "note": "x"}), "\"note\" is not part of a promise"),
        ] {
            let problem = promise(value.clone()).unwrap_err();
            assert!(problem.contains(says), "{value}: {problem}");
        }
    }

    #[test]
    fn a_promise_field_refuses_a_bad_promise_with_a_sentence() {
        let schema = vec![DispositionSpec::new("promise", FieldKind::Promise)];
        let fields = json!({"promise": {"date": "2026-12-02", "amount": -1}});
        let error = validate_fields(&schema, fields.as_object().unwrap()).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidField);
        assert_eq!(error.detail.unwrap()["field"], "promise");
        assert!(
            error.message.contains("`promise` must be a promise: `amount` must be greater than 0"),
            "{}",
            error.message
        );
        let fields = json!({"promise": {"date": "2026-12-02", "amount": 99.5}});
        assert!(validate_fields(&schema, fields.as_object().unwrap()).is_ok());
        let cleared = json!({"promise": null});
        assert!(validate_fields(&schema, cleared.as_object().unwrap()).is_ok());
    }

    #[test]
    fn each_team_has_its_schema_and_the_global_one_is_the_default() {
        use crate::settings::{Schemas, TeamSpec};
        let mut collections = DispositionSpec::new("ptp_status", FieldKind::Enum);
        collections.options = vec!["promised".into(), "paid".into()];
        collections.required_on_close = true;
        let mut lead_quality = DispositionSpec::new("lead_quality", FieldKind::Enum);
        lead_quality.options = vec!["hot".into(), "cold".into()];
        lead_quality.required_on_close = true;
        let teams = vec![
            TeamSpec { id: "collections".into(), dispositions: Some(vec![collections]), ..Default::default() },
            TeamSpec {
                id: "sales".into(),
                dispositions: Some(vec![lead_quality, specs()[0].clone()]),
                ..Default::default()
            },
            TeamSpec { id: "support".into(), ..Default::default() },
        ];
        let global = specs();
        let schemas = Schemas { global: &global, teams: &teams };
        let keys = |team: Option<&str>| schemas.of(team).iter().map(|spec| spec.key.as_str()).collect::<Vec<_>>();
        assert_eq!(keys(Some("collections")), ["ptp_status"]);
        assert_eq!(keys(Some("sales")), ["lead_quality", "outcome"]);
        assert_eq!(keys(Some("support")), ["outcome", "amount", "due"], "no schema of its own: the global one");
        assert_eq!(keys(None), ["outcome", "amount", "due"]);
        assert_eq!(keys(Some("gone")), ["outcome", "amount", "due"]);
        let empty = json!({});
        assert_eq!(missing_on_close(schemas.of(Some("collections")), empty.as_object().unwrap()), ["ptp_status"]);
        assert_eq!(
            missing_on_close(schemas.of(Some("sales")), empty.as_object().unwrap()),
            ["lead_quality", "outcome"]
        );
        // A field of another team's schema is not this team's.
        let other = json!({"lead_quality": "hot"});
        assert!(validate_fields(schemas.of(Some("collections")), other.as_object().unwrap()).is_err());
    }

    #[test]
    fn missing_required_fields() {
        assert_eq!(missing_on_close(&specs(), json!({}).as_object().unwrap()), vec!["outcome"]);
        assert_eq!(missing_on_close(&specs(), json!({"outcome": " "}).as_object().unwrap()), vec!["outcome"]);
        assert!(missing_on_close(&specs(), json!({"outcome": "follow_up"}).as_object().unwrap()).is_empty());
    }
}
