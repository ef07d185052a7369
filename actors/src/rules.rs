//! Pure business decisions on the configured dispositions: field
//! validation and Force-Action. (What the contract itself decides, a
//! conversation's source, the windows and the shown message, is
//! `protocol::rules`.) No runtime, no IO: unit tests call these directly.

use protocol::{ApiError, ErrorCode};
use serde_json::{Map, Value, json};

use crate::settings::{DispositionSpec, FieldKind};

/// Checks the fields a client sets against the configured dispositions:
/// unknown keys and values of the wrong kind are `invalid_field`.
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
        };
        if !ok {
            let expected = match spec.kind {
                FieldKind::Enum => format!("one of {}", spec.options.join(", ")),
                FieldKind::Text => "a string".to_owned(),
                FieldKind::Number => "a number".to_owned(),
                FieldKind::Money => "an amount (number)".to_owned(),
                FieldKind::Date => "a date (YYYY-MM-DD)".to_owned(),
            };
            return Err(invalid_field(key, format!("`{key}` must be {expected}, got {value}")));
        }
    }
    Ok(())
}

fn invalid_field(key: &str, message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidField, message).with_detail(json!({ "field": key }))
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
            },
            DispositionSpec {
                key: "amount".into(),
                label: None,
                kind: FieldKind::Money,
                options: vec![],
                required_on_close: false,
                won_values: vec![],
            },
            DispositionSpec {
                key: "due".into(),
                label: None,
                kind: FieldKind::Date,
                options: vec![],
                required_on_close: false,
                won_values: vec![],
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
    fn missing_required_fields() {
        assert_eq!(missing_on_close(&specs(), json!({}).as_object().unwrap()), vec!["outcome"]);
        assert_eq!(missing_on_close(&specs(), json!({"outcome": " "}).as_object().unwrap()), vec!["outcome"]);
        assert!(missing_on_close(&specs(), json!({"outcome": "follow_up"}).as_object().unwrap()).is_empty());
    }
}
