//! Pure business decisions: a conversation's source, the service window,
//! disposition field validation, the message shown for an inbound item.
//! No runtime, no IO: unit tests call these directly.

use protocol::model::{Direction, Message, Source, SourceKind};
use protocol::time::UnixMs;
use protocol::webhook::InboundMessage;
use protocol::{ApiError, ErrorCode};
use serde_json::{Map, Value, json};

use crate::settings::{DispositionSpec, FieldKind};

pub const SERVICE_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
pub const FREE_ENTRY_WINDOW_MS: i64 = 72 * 60 * 60 * 1000;

/// Source of a conversation, from its first message (contract §2).
pub fn source_of(message: &InboundMessage) -> Source {
    if let Some(referral) = &message.referral {
        return Source {
            kind: SourceKind::Paid,
            source_type: referral.source_type.clone(),
            source_id: referral.source_id.clone(),
            ctwa_clid: referral.ctwa_clid.clone(),
            headline: referral.headline.clone(),
            code: None,
        };
    }
    if let Some(code) = message.text.as_ref().and_then(|text| referral_code(&text.body)) {
        return Source { code: Some(code), kind: SourceKind::Referral, ..Source::organic() };
    }
    Source::organic()
}

/// The first `ref:CODE` in `text`, `CODE` = `[A-Za-z0-9_-]+`, case-sensitive.
pub fn referral_code(text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(position) = rest.find("ref:") {
        let after = &rest[position + 4..];
        let code: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
        if !code.is_empty() {
            return Some(code);
        }
        rest = after;
    }
    None
}

/// The Message clients see for an inbound WhatsApp message.
pub fn inbound_message(message: &InboundMessage, received_at: UnixMs) -> Message {
    let media = message.media().map(|media| {
        let mut object = Map::new();
        for (key, value) in [
            ("id", &media.id),
            ("mime_type", &media.mime_type),
            ("caption", &media.caption),
            ("filename", &media.filename),
        ] {
            if let Some(value) = value {
                object.insert(key.to_owned(), Value::String(value.clone()));
            }
        }
        Value::Object(object)
    });
    Message {
        id: message.id.clone(),
        direction: Direction::In,
        kind: message.kind.clone(),
        text: message.display_text(),
        media,
        at: message.timestamp_ms().unwrap_or(received_at),
        status: None,
        free: None,
        error: None,
    }
}

/// Whether a free-form message may be sent now.
pub fn service_window_open(service_until: Option<UnixMs>, now: UnixMs) -> bool {
    service_until.is_some_and(|until| now < until)
}

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

/// Maps a Meta error code carried by a failed status or a send to a protocol error.
pub fn meta_error(code: i64, message: Option<&str>) -> ApiError {
    let text = message.unwrap_or("WhatsApp refused the message");
    if code == protocol::graph::codes::RE_ENGAGEMENT {
        return ApiError::new(
            ErrorCode::WindowClosed,
            "more than 24 hours have passed since the customer's last message; send a template instead",
        )
        .with_detail(json!({ "meta_code": code }));
    }
    ApiError::new(ErrorCode::UpstreamError, format!("WhatsApp refused the message: {text}"))
        .with_detail(json!({ "meta_code": code }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(json_text: &str) -> InboundMessage {
        serde_json::from_str(json_text).unwrap()
    }

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

    #[test]
    fn referral_codes() {
        for (text, expected) in [
            ("hi ref:SUMMER_24 there", Some("SUMMER_24")),
            ("ref:a-b ref:c", Some("a-b")),
            ("ref: nothing", None),
            ("REF:UPPER", None),
            ("ref:!x ref:ok", Some("ok")),
            ("plain", None),
        ] {
            assert_eq!(referral_code(text).as_deref(), expected, "{text}");
        }
    }

    #[test]
    fn sources() {
        let paid = inbound(
            r#"{"id":"w1","from":"1","timestamp":"1","type":"text","text":{"body":"ref:X"},
            "referral":{"source_id":"ad1","source_type":"ad","ctwa_clid":"clid","headline":"H"}}"#,
        );
        let source = source_of(&paid);
        assert_eq!(source.kind, SourceKind::Paid);
        assert_eq!(source.ctwa_clid.as_deref(), Some("clid"));
        let referral = inbound(r#"{"id":"w1","from":"1","timestamp":"1","type":"text","text":{"body":"ref:X"}}"#);
        assert_eq!(source_of(&referral).code.as_deref(), Some("X"));
        let organic = inbound(r#"{"id":"w1","from":"1","timestamp":"1","type":"image","image":{"id":"m"}}"#);
        assert_eq!(source_of(&organic).kind, SourceKind::Organic);
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

    #[test]
    fn window_edges() {
        let until = 1_000 + SERVICE_WINDOW_MS;
        assert!(service_window_open(Some(until), until - 1));
        assert!(!service_window_open(Some(until), until));
        assert!(!service_window_open(None, 0));
    }

    #[test]
    fn meta_errors_map_to_protocol_errors() {
        assert_eq!(meta_error(131047, None).code, ErrorCode::WindowClosed);
        let other = meta_error(131026, Some("undeliverable"));
        assert_eq!(other.code, ErrorCode::UpstreamError);
        assert_eq!(other.detail.unwrap()["meta_code"], 131026);
    }
}
