//! The strict text forms every other module shares: lowercase hex of a fixed
//! length, and RFC 3339 UTC timestamps with milliseconds.
//!
//! Strict on purpose. `hex::decode` accepts upper case too, so `"AB"` and
//! `"ab"` would decode to the same byte and a changed letter case in an export
//! would go unnoticed; a verifier that must fail on any changed byte accepts
//! exactly one spelling of each value.

use thiserror::Error;

/// A SHA-256 digest: an entry hash, a Merkle leaf or node hash, a root.
pub type Hash = [u8; 32];

/// The length of a [`Hash`] in lowercase hex.
pub const HASH_HEX_LEN: usize = 64;

/// Why a string is not the lowercase hex that was expected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HexError {
    #[error("expected {expected} lowercase hex characters, found {found} characters")]
    WrongLength { expected: usize, found: usize },
    #[error("character {position} is not lowercase hex (0-9, a-f)")]
    NotLowercaseHex { position: usize },
}

/// Decodes exactly `2 * N` lowercase hex characters into `N` bytes.
pub fn decode_lower_hex<const N: usize>(text: &str) -> Result<[u8; N], HexError> {
    let text_bytes = text.as_bytes();
    if text_bytes.len() != 2 * N {
        return Err(HexError::WrongLength { expected: 2 * N, found: text.chars().count() });
    }
    let mut decoded = [0u8; N];
    for (byte_index, pair) in text_bytes.chunks_exact(2).enumerate() {
        let high = lower_hex_value(pair[0]).ok_or(HexError::NotLowercaseHex { position: 2 * byte_index })?;
        let low = lower_hex_value(pair[1]).ok_or(HexError::NotLowercaseHex { position: 2 * byte_index + 1 })?;
        decoded[byte_index] = (high << 4) | low;
    }
    Ok(decoded)
}

/// Decodes a 64-character lowercase hex hash.
pub fn decode_hash(text: &str) -> Result<Hash, HexError> {
    decode_lower_hex::<32>(text)
}

const LOWER_HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex, the only spelling this crate writes or accepts. (By hand:
/// `hex::encode` collects one `char` at a time and showed in the profile of
/// building and verifying entries.)
pub fn encode_hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        text.push(char::from(LOWER_HEX_DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(LOWER_HEX_DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Lowercase hex of a hash into a fixed buffer: the fast chain verifier
/// compares it with stored bytes without allocating.
pub(crate) fn encode_hash_into(hash: &Hash, out: &mut [u8; HASH_HEX_LEN]) {
    const DIGITS: &[u8; 16] = LOWER_HEX_DIGITS;
    for (byte_index, byte) in hash.iter().enumerate() {
        out[2 * byte_index] = DIGITS[usize::from(byte >> 4)];
        out[2 * byte_index + 1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

fn lower_hex_value(character: u8) -> Option<u8> {
    match character {
        b'0'..=b'9' => Some(character - b'0'),
        b'a'..=b'f' => Some(character - b'a' + 10),
        _ => None,
    }
}

/// Why a string is not an RFC 3339 UTC timestamp with milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimestampError {
    #[error("expected the form 2026-11-24T10:00:00.000Z (24 characters), found {found} characters")]
    WrongLength { found: usize },
    #[error("character {position} should be {expected}")]
    UnexpectedCharacter { position: usize, expected: &'static str },
    #[error("{field} {value} is out of range")]
    OutOfRange { field: &'static str, value: u32 },
}

/// Checks the one timestamp form the contract uses: `YYYY-MM-DDTHH:MM:SS.mmmZ`
/// in UTC. Exactly one spelling is accepted (no offsets, no lower-case `t`/`z`,
/// exactly three fraction digits) so that a timestamp in a hashed entry or a
/// signed checkpoint has a single canonical text. Leap seconds (`:60`) are
/// refused: the engine formats unix milliseconds, which never hold one.
pub fn check_timestamp(text: &str) -> Result<(), TimestampError> {
    const SHAPE: &[u8; 24] = b"dddd-dd-ddTdd:dd:dd.dddZ";
    let bytes = text.as_bytes();
    if bytes.len() != SHAPE.len() {
        return Err(TimestampError::WrongLength { found: text.chars().count() });
    }
    for (position, (&actual, &wanted)) in bytes.iter().zip(SHAPE.iter()).enumerate() {
        let matches = if wanted == b'd' { actual.is_ascii_digit() } else { actual == wanted };
        if !matches {
            let expected = match wanted {
                b'd' => "a digit",
                b'-' => "'-'",
                b'T' => "'T'",
                b':' => "':'",
                b'.' => "'.'",
                _ => "'Z'",
            };
            return Err(TimestampError::UnexpectedCharacter { position, expected });
        }
    }
    let number = |range: std::ops::Range<usize>| -> u32 {
        bytes[range].iter().fold(0u32, |value, digit| value * 10 + u32::from(digit - b'0'))
    };
    let year = number(0..4);
    let month = number(5..7);
    let day = number(8..10);
    let hour = number(11..13);
    let minute = number(14..16);
    let second = number(17..19);
    if !(1..=12).contains(&month) {
        return Err(TimestampError::OutOfRange { field: "month", value: month });
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(TimestampError::OutOfRange { field: "day", value: day });
    }
    if hour > 23 {
        return Err(TimestampError::OutOfRange { field: "hour", value: hour });
    }
    if minute > 59 {
        return Err(TimestampError::OutOfRange { field: "minute", value: minute });
    }
    if second > 59 {
        return Err(TimestampError::OutOfRange { field: "second", value: second });
    }
    Ok(())
}

fn days_in_month(year: u32, month: u32) -> u32 {
    let leap_year = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    match month {
        2 if leap_year => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_every_other_spelling() {
        let bytes = [0x00, 0xab, 0xff, 0x10];
        assert_eq!(encode_hex(&bytes), "00abff10");
        assert_eq!(decode_lower_hex::<4>("00abff10"), Ok(bytes));
        assert_eq!(decode_lower_hex::<4>("00ABff10"), Err(HexError::NotLowercaseHex { position: 2 }));
        assert_eq!(decode_lower_hex::<4>("00abff1"), Err(HexError::WrongLength { expected: 8, found: 7 }));
        assert_eq!(decode_lower_hex::<4>("00abff10 "), Err(HexError::WrongLength { expected: 8, found: 9 }));
        assert_eq!(decode_lower_hex::<4>("00abff1g"), Err(HexError::NotLowercaseHex { position: 7 }));
        // Multi-byte characters are counted as characters in the message and never panic.
        assert!(decode_lower_hex::<2>("éé").is_err());
        assert!(decode_lower_hex::<1>("é").is_err());
    }

    #[test]
    fn encode_hex_matches_the_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(encode_hex(&bytes), hex::encode(&bytes));
        assert_eq!(encode_hex(&[]), "");
    }

    #[test]
    fn encode_hash_into_matches_the_hex_crate() {
        let hash: Hash = std::array::from_fn(|index| (index as u8).wrapping_mul(37));
        let mut buffer = [0u8; HASH_HEX_LEN];
        encode_hash_into(&hash, &mut buffer);
        assert_eq!(std::str::from_utf8(&buffer).unwrap(), hex::encode(hash));
    }

    #[test]
    fn timestamps_have_exactly_one_accepted_form() {
        check_timestamp("2026-11-24T10:00:00.000Z").unwrap();
        check_timestamp("2024-02-29T23:59:59.999Z").unwrap();
        check_timestamp("2000-02-29T00:00:00.000Z").unwrap();
        for refused in [
            "2026-11-24T10:00:00Z",
            "2026-11-24T10:00:00.0000Z",
            "2026-11-24T10:00:00.000+00:00",
            "2026-11-24t10:00:00.000Z",
            "2026-11-24T10:00:00.000z",
            "2026-11-24 10:00:00.000Z",
            "2026-13-24T10:00:00.000Z",
            "2026-00-24T10:00:00.000Z",
            "2025-02-29T10:00:00.000Z",
            "1900-02-29T10:00:00.000Z",
            "2026-04-31T10:00:00.000Z",
            "2026-11-24T24:00:00.000Z",
            "2026-11-24T10:60:00.000Z",
            "2026-11-24T10:00:60.000Z",
            "2026-11-2٤T10:00:00.000Z",
            "",
        ] {
            assert!(check_timestamp(refused).is_err(), "{refused} should be refused");
        }
    }
}
