//! `X-Hub-Signature-256`: Meta's HMAC-SHA256 signature of a webhook body.
//!
//! The header is `sha256=<lowercase hex HMAC-SHA256(app secret, raw body)>`. It is
//! always computed over the raw bytes received, never over re-serialised JSON.
//!
//! Pure functions of bytes: the engine verifies with them, the simulators in
//! `sim` (Meta's emulator, the demo's customers, the bench) sign with them.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "sha256=";

fn mac(app_secret: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac
}

/// The header value Meta would send for `body`: `sha256=<lowercase hex>`.
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    let digest = mac(app_secret, body).finalize().into_bytes();
    format!("{PREFIX}{}", hex::encode(digest))
}

/// Checks an `X-Hub-Signature-256` header against `body`, in constant time.
///
/// The `sha256=` prefix is required; the hex digest may be in either case.
/// Anything missing or malformed is `false`.
pub fn verify(app_secret: &[u8], header: Option<&str>, body: &[u8]) -> bool {
    let Some(header) = header else {
        return false;
    };
    let Some(hex_digest) = header.trim().strip_prefix(PREFIX) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    if expected.len() != 32 {
        return false;
    }
    mac(app_secret, body).verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"app-secret";
    const BODY: &[u8] = br#"{"object":"whatsapp_business_account"}"#;
    // python3: hmac.new(b'app-secret', BODY, hashlib.sha256).hexdigest()
    const EXPECTED: &str = "sha256=0bf7374433906636bed1653bc7c64affb42fa5da9a39e251ab95c2e3a9c06923";

    #[test]
    fn known_vectors() {
        assert_eq!(sign(SECRET, BODY), EXPECTED);
        // python3: hmac.new(b'key', b'The quick brown fox jumps over the lazy dog', hashlib.sha256)
        assert_eq!(
            sign(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert!(verify(SECRET, Some(EXPECTED), BODY));
    }

    #[test]
    fn hex_is_case_insensitive_but_prefix_is_required() {
        let upper = format!("sha256={}", EXPECTED.trim_start_matches("sha256=").to_uppercase());
        assert!(verify(SECRET, Some(&upper), BODY));
        assert!(!verify(SECRET, Some(EXPECTED.trim_start_matches("sha256=")), BODY));
        assert!(!verify(SECRET, Some(&EXPECTED.replace("sha256=", "sha1=")), BODY));
    }

    #[test]
    fn wrong_secret() {
        assert!(!verify(b"other-secret", Some(EXPECTED), BODY));
    }

    #[test]
    fn tampered_body() {
        assert!(!verify(SECRET, Some(EXPECTED), br#"{"object":"whatsapp_business_account "}"#));
        assert!(!verify(SECRET, Some(EXPECTED), b""));
    }

    #[test]
    fn bad_hex() {
        assert!(!verify(SECRET, Some("sha256=zz"), BODY));
        assert!(!verify(SECRET, Some("sha256=abc"), BODY));
        // Valid hex, wrong length (a truncated digest must not pass).
        assert!(!verify(SECRET, Some(&EXPECTED[..EXPECTED.len() - 2]), BODY));
        assert!(!verify(SECRET, Some(&format!("{EXPECTED}00")), BODY));
    }

    #[test]
    fn empty_or_missing_header() {
        assert!(!verify(SECRET, None, BODY));
        assert!(!verify(SECRET, Some(""), BODY));
        assert!(!verify(SECRET, Some("sha256="), BODY));
    }
}
