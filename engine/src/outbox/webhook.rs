//! The `webhook` connector (PROTOCOL §10, docs/integrations.md): `POST url`
//! with the delivery's body, signed per the Standard Webhooks
//! specification — `webhook-id` (the delivery's id, the same on every
//! attempt), `webhook-timestamp` (unix seconds of this attempt),
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
//! keyed by the base64-decoded part of `whsec_…`. A 2xx is delivered;
//! any other status, a redirect (never followed), a timeout or a closed
//! connection is a failure, with the `Retry-After` of a 429 or 503.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use protocol::time::UnixMs;
use sha2::Sha256;

use super::decide::{AttemptOutcome, Delivery};
use super::{AttemptFuture, Connector};

/// The secret's prefix (Standard Webhooks).
pub const SECRET_PREFIX: &str = "whsec_";
/// The fewest key bytes accepted (the specification asks for 24 to 64).
pub const MIN_KEY_BYTES: usize = 16;

/// The signing key of a `whsec_…` secret, or what is wrong with it (which
/// never repeats the secret).
pub fn parse_secret(secret: &str) -> Result<SigningKey, String> {
    let Some(encoded) = secret.strip_prefix(SECRET_PREFIX) else {
        return Err(format!("must start with {SECRET_PREFIX} (a Standard Webhooks secret: {SECRET_PREFIX}<base64>)"));
    };
    let key = STANDARD
        .decode(encoded.trim())
        .map_err(|_| format!("the part after {SECRET_PREFIX} must be standard base64"))?;
    if key.len() < MIN_KEY_BYTES {
        return Err(format!("the key is {} bytes; it needs at least {MIN_KEY_BYTES} (24 to 64 advised)", key.len()));
    }
    Ok(SigningKey(key))
}

/// An HMAC key; its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// One `[[connectors]]` of `kind = "webhook"`.
pub struct WebhookConnector {
    http: reqwest::Client,
    url: reqwest::Url,
    key: SigningKey,
}

impl fmt::Debug for WebhookConnector {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("WebhookConnector").field("url", &self.url.as_str()).finish_non_exhaustive()
    }
}

impl WebhookConnector {
    pub fn new(url: &str, secret: &str, timeout: Duration) -> Result<WebhookConnector, String> {
        let url = reqwest::Url::parse(url).map_err(|error| format!("url {url:?} is not a URL: {error}"))?;
        let key = parse_secret(secret)?;
        let http = super::attempt::client(timeout)?;
        Ok(WebhookConnector { http, url, key })
    }
}

impl Connector for WebhookConnector {
    fn attempt(&self, delivery: &Delivery, now: UnixMs) -> AttemptFuture {
        let timestamp = now.div_euclid(1000);
        let body = delivery.payload.clone().into_bytes();
        let signature = self.key.signature(&delivery.id, timestamp, &body);
        let request = self
            .http
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body);
        Box::pin(async move {
            match super::attempt::send(request, now, false).await {
                Ok(answer) => AttemptOutcome::Delivered { status: answer.status },
                Err(failure) => failure,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_checked_without_being_repeated() {
        let secret = format!("whsec_{}", STANDARD.encode([7u8; 24]));
        assert!(parse_secret(&secret).is_ok());
        for bad in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_c2hvcnQ="] {
            let problem = parse_secret(bad).unwrap_err();
            assert!(!problem.contains(bad), "{problem}");
        }
        assert_eq!(format!("{:?}", parse_secret(&secret).unwrap()), "SigningKey(..)");
    }

    /// The example of the Standard Webhooks specification's reference
    /// libraries (their test vectors).
    #[test]
    fn the_signature_matches_the_specifications_example() {
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = key.signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
