//! The signed-webhook client: posts a body to a webhook URL the way Meta does,
//! with `X-Hub-Signature-256: sha256=<HMAC-SHA256(app secret, raw body)>`.
//!
//! [`signed_post`] builds the request and leaves sending to the caller, so a
//! load generator can spawn it, a demo can count it and the emulator can retry
//! it; [`post_signed`] sends one and reads the answer, for tests.

use serde_json::Value;

/// The engine's webhook path (contract §2).
pub const WEBHOOK_PATH: &str = "/webhooks/whatsapp";
/// The header Meta signs webhooks with.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// `{base_url}/webhooks/whatsapp`.
pub fn webhook_url(base_url: &str) -> String {
    format!("{}{WEBHOOK_PATH}", base_url.trim_end_matches('/'))
}

/// A JSON `POST` of `body` to `url`, signed with `app_secret`; not sent yet.
///
/// The body is signed as given (raw bytes), never re-serialised.
pub fn signed_post<B>(client: &reqwest::Client, url: &str, app_secret: &[u8], body: B) -> reqwest::RequestBuilder
where
    B: AsRef<[u8]> + Into<reqwest::Body>,
{
    let signature = protocol::signature::sign(app_secret, body.as_ref());
    client
        .post(url)
        .header(SIGNATURE_HEADER, signature)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
}

/// Posts a signed webhook to `{base_url}/webhooks/whatsapp`; returns the HTTP
/// status and the answer (JSON, or the text as a JSON string).
pub async fn post_signed(
    client: &reqwest::Client,
    base_url: &str,
    app_secret: &str,
    body: &[u8],
) -> Result<(u16, Value), reqwest::Error> {
    let response = signed_post(client, &webhook_url(base_url), app_secret.as_bytes(), body.to_vec()).send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_url_joins_without_double_slashes() {
        assert_eq!(webhook_url("http://127.0.0.1:8080"), "http://127.0.0.1:8080/webhooks/whatsapp");
        assert_eq!(webhook_url("http://127.0.0.1:8080/"), "http://127.0.0.1:8080/webhooks/whatsapp");
    }

    #[test]
    fn signed_post_signs_the_raw_body() {
        let client = reqwest::Client::new();
        let body = br#"{"object":"whatsapp_business_account"}"#.to_vec();
        let request = signed_post(&client, "http://127.0.0.1:1/webhooks/whatsapp", b"app-secret", body.clone())
            .build()
            .expect("a valid request");
        let header = request.headers()[SIGNATURE_HEADER].to_str().unwrap();
        assert!(protocol::signature::verify(b"app-secret", Some(header), &body));
        assert_eq!(request.headers()["content-type"], "application/json");
        assert_eq!(request.body().and_then(reqwest::Body::as_bytes), Some(body.as_slice()));
    }
}
