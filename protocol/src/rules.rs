//! What the contract (PROTOCOL.md) itself decides, as pure functions: a
//! conversation's source (§2), the service and free entry windows, the
//! message clients see for an inbound item, and how a Meta error maps to a
//! protocol error. The engine and the bench's baseline both decide with
//! these.

use serde_json::{Map, Value, json};

use crate::model::{Direction, Message, Source, SourceKind};
use crate::time::UnixMs;
use crate::webhook::InboundMessage;
use crate::{ApiError, ErrorCode};

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
        author: None,
    }
}

/// Whether a free-form message may be sent now.
pub fn service_window_open(service_until: Option<UnixMs>, now: UnixMs) -> bool {
    service_until.is_some_and(|until| now < until)
}

/// Maps a Meta error code carried by a failed status or a send to a protocol error.
pub fn meta_error(code: i64, message: Option<&str>) -> ApiError {
    let text = message.unwrap_or("WhatsApp refused the message");
    if code == crate::graph::codes::RE_ENGAGEMENT {
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
