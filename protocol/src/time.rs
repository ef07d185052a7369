//! Time as clients see it: RFC 3339 UTC with milliseconds, stored as unix ms.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the unix epoch, UTC. Every stored time and deadline uses it.
pub type UnixMs = i64;

/// Formats unix milliseconds as `2026-11-24T10:00:00.000Z`.
pub fn format_rfc3339(ms: UnixMs) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(at) => at.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => "invalid".to_owned(),
    }
}

/// Parses an RFC 3339 string (any offset) into unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<UnixMs> {
    DateTime::parse_from_rfc3339(text).ok().map(|at| at.timestamp_millis())
}

/// Serde helpers for `UnixMs` fields shown to clients as RFC 3339 strings.
pub mod rfc3339 {
    use super::{UnixMs, format_rfc3339, parse_rfc3339};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(ms: &UnixMs, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_rfc3339(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<UnixMs, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_rfc3339(&text).ok_or_else(|| D::Error::custom(format!("not an RFC 3339 time: {text}")))
    }

    /// The same for `Option<UnixMs>`, shown as `null` when absent.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(ms: &Option<UnixMs>, serializer: S) -> Result<S::Ok, S::Error> {
            match ms {
                Some(ms) => serializer.serialize_str(&format_rfc3339(*ms)),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<UnixMs>, D::Error> {
            let text = Option::<String>::deserialize(deserializer)?;
            text.map(|text| {
                parse_rfc3339(&text).ok_or_else(|| D::Error::custom(format!("not an RFC 3339 time: {text}")))
            })
            .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ms: UnixMs, expected: &str) {
        assert_eq!(format_rfc3339(ms), expected);
        assert_eq!(parse_rfc3339(expected), Some(ms));
    }

    #[test]
    fn formats_with_milliseconds_in_utc() {
        check(0, "1970-01-01T00:00:00.000Z");
        check(1_795_514_400_000, "2026-11-24T10:00:00.000Z");
        check(1_795_514_400_123, "2026-11-24T10:00:00.123Z");
    }

    #[test]
    fn parses_offsets() {
        assert_eq!(parse_rfc3339("2026-11-24T15:30:00+05:30"), Some(1_795_514_400_000));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2026-02-31T10:00:00Z"), None);
    }

    #[test]
    fn before_the_epoch_and_out_of_range() {
        check(-1, "1969-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339(i64::MAX), "invalid");
    }
}
