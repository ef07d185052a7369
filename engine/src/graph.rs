//! The Graph API client: `POST {graph_base_url}/{phone_number_id}/messages`
//! with the Bearer token, Meta's errors mapped to protocol errors, and
//! throttling retried with backoff for up to 10 s (never sooner than a
//! `Retry-After` Meta gives), then answered `rate_limited`. The retry loop
//! is `backon`'s, on the engine's one schedule (`crate::backoff`), which the
//! outbox shares.
//!
//! The access token goes to `graph_base_url` and nowhere else: redirects are
//! never followed (a 3xx is `upstream_error`, not Meta's acceptance), and the
//! URL is built segment by segment from a phone number id that must be Meta's
//! id form (digits), never by pasting strings.

use std::time::Duration;

use actors::shared::{BoxFuture, Outbound};
use backon::Retryable;
use protocol::graph::{GraphErrorEnvelope, SendMessageRequest, SendMessageResponse, codes};
use protocol::{ApiError, ErrorCode};
use serde_json::json;

use crate::backoff::Schedule;

pub struct GraphClient {
    http: reqwest::Client,
    base_url: reqwest::Url,
    access_token: String,
    retry_budget: Duration,
}

impl GraphClient {
    /// A client for `base_url` (`whatsapp.graph_base_url`, an http(s) URL that
    /// can be a base: the configuration checks it).
    pub fn new(base_url: &str, access_token: &str) -> Result<GraphClient, String> {
        let base_url = parse_base_url(base_url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(64)
            // A redirect would carry the Bearer token to wherever it points,
            // and its target's 200 would be taken for Meta's.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
        Ok(GraphClient { http, base_url, access_token: access_token.to_owned(), retry_budget: Duration::from_secs(10) })
    }

    /// `{base}/{phone_number_id}/messages`, or `bad_request` when the id is
    /// not Meta's form (webhooks are checked too; this guards stored data).
    fn messages_url(&self, phone_number_id: &str) -> Result<reqwest::Url, ApiError> {
        if !protocol::webhook::is_phone_number_id(phone_number_id) {
            return Err(ApiError::bad_request(format!(
                "the conversation's phone number id {phone_number_id:?} is not Meta's (digits only)"
            )));
        }
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .map_err(|()| ApiError::new(ErrorCode::UpstreamError, "whatsapp.graph_base_url cannot be a base URL"))?
            .pop_if_empty()
            .push(phone_number_id)
            .push("messages");
        Ok(url)
    }

    pub async fn send_message(
        &self,
        phone_number_id: &str,
        request: &SendMessageRequest,
    ) -> Result<SendMessageResponse, ApiError> {
        let url = self.messages_url(phone_number_id)?;
        let started = tokio::time::Instant::now();
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let attempt = || async {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.attempt(&url, request).await
        };
        // Throttling is retried on the engine's one schedule
        // (`crate::backoff`, backon's loop): 400 ms doubling, never sooner
        // than Meta's `Retry-After`, while the next wait still ends within
        // the retry budget.
        let retried = attempt
            .retry(GRAPH_SCHEDULE.builder())
            .sleep(tokio::time::sleep)
            .when(|failure: &Failure| failure.throttled.is_some())
            .adjust(|failure: &Failure, backoff: Option<Duration>| {
                let backoff = backoff?;
                let wait = failure.throttled.flatten().map_or(backoff, |after| after.max(backoff));
                (started.elapsed() + wait <= self.retry_budget).then_some(wait)
            })
            .await;
        retried.map_err(|failure| match failure.throttled {
            Some(_) => {
                let attempts = attempts.load(std::sync::atomic::Ordering::Relaxed);
                failure.error.with_detail(json!({ "meta_code": failure.meta_code, "attempts": attempts }))
            }
            None => failure.error,
        })
    }

    /// One request to the Graph API.
    async fn attempt(&self, url: &reqwest::Url, request: &SendMessageRequest) -> Result<SendMessageResponse, Failure> {
        let refused = |error: ApiError| Failure { error, throttled: None, meta_code: None };
        let sent = self.http.post(url.clone()).bearer_auth(&self.access_token).json(request).send().await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                metrics::counter!(crate::metrics::GRAPH_REQUESTS_TOTAL, "outcome" => "transport_error").increment(1);
                // Not retried: the request may have reached Meta, and a
                // second attempt could send the customer the message twice.
                return Err(refused(ApiError::new(
                    ErrorCode::UpstreamError,
                    format!("could not reach the WhatsApp Cloud API: {}", without_url(&error)),
                )));
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            metrics::counter!(crate::metrics::GRAPH_REQUESTS_TOTAL, "outcome" => "ok").increment(1);
            return serde_json::from_slice(&body).map_err(|error| {
                refused(ApiError::new(
                    ErrorCode::UpstreamError,
                    format!("the WhatsApp Cloud API answered 200 with an unexpected body: {error}"),
                ))
            });
        }
        if status.is_redirection() {
            metrics::counter!(crate::metrics::GRAPH_REQUESTS_TOTAL, "outcome" => "error").increment(1);
            return Err(refused(ApiError::new(
                ErrorCode::UpstreamError,
                format!(
                    "the WhatsApp Cloud API answered a redirect (HTTP {}); redirects are not followed, \
                     so the access token stays with whatsapp.graph_base_url: check that URL",
                    status.as_u16()
                ),
            )));
        }
        let envelope: Option<GraphErrorEnvelope> = serde_json::from_slice(&body).ok();
        let code = envelope.as_ref().map(|envelope| envelope.error.code);
        let throttled = status.as_u16() == 429 || code.is_some_and(codes::is_throttling);
        if throttled {
            metrics::counter!(crate::metrics::GRAPH_REQUESTS_TOTAL, "outcome" => "throttled").increment(1);
            return Err(Failure {
                error: ApiError::new(
                    ErrorCode::RateLimited,
                    "WhatsApp is throttling messages to this number or customer; try again in a little while",
                ),
                throttled: Some(retry_after),
                meta_code: code,
            });
        }
        metrics::counter!(crate::metrics::GRAPH_REQUESTS_TOTAL, "outcome" => "error").increment(1);
        Err(refused(match envelope {
            Some(envelope) => {
                let error = envelope.error;
                let details = error.error_data.as_ref().and_then(|data| data.details.clone());
                let mut mapped =
                    protocol::rules::meta_error(error.code, Some(details.as_deref().unwrap_or(&error.message)));
                mapped.detail = Some(json!({
                    "meta_code": error.code,
                    "meta_subcode": error.error_subcode,
                    "fbtrace_id": error.fbtrace_id,
                }));
                mapped
            }
            None => ApiError::new(
                ErrorCode::UpstreamError,
                format!("the WhatsApp Cloud API answered HTTP {} without an error body", status.as_u16()),
            ),
        }))
    }
}

/// The throttling retry's schedule: 400 ms, doubling, at most 12.8 s apart
/// (the retry budget ends it first).
const GRAPH_SCHEDULE: Schedule = Schedule { base: Duration::from_millis(400), cap: Duration::from_millis(12_800) };

/// A failed attempt: the error to answer with, and, when Meta throttled,
/// its `Retry-After` (which makes it worth retrying).
struct Failure {
    error: ApiError,
    throttled: Option<Option<Duration>>,
    meta_code: Option<i64>,
}

/// Parses `whatsapp.graph_base_url`: http(s), and a URL paths can be added to.
pub fn parse_base_url(base_url: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(base_url).map_err(|error| format!("{base_url:?} is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{base_url:?} must start with http:// or https://"));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(format!("{base_url:?} needs a host, like https://graph.facebook.com/v23.0"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{base_url:?} must not have a query or a fragment"));
    }
    Ok(url)
}

/// A short, stable description of a transport failure (no URL, no body).
fn without_url(error: &reqwest::Error) -> &'static str {
    if error.is_connect() {
        "connection refused or unreachable"
    } else if error.is_timeout() {
        "timed out"
    } else {
        "request failed"
    }
}

impl Outbound for GraphClient {
    fn send(
        &self,
        phone_number_id: String,
        request: SendMessageRequest,
    ) -> BoxFuture<Result<SendMessageResponse, ApiError>> {
        let client = GraphClient {
            http: self.http.clone(),
            base_url: self.base_url.clone(),
            access_token: self.access_token.clone(),
            retry_budget: self.retry_budget,
        };
        Box::pin(async move { client.send_message(&phone_number_id, &request).await })
    }

    fn send_once(
        &self,
        phone_number_id: String,
        request: SendMessageRequest,
    ) -> BoxFuture<Result<SendMessageResponse, ApiError>> {
        let client = GraphClient { retry_budget: Duration::ZERO, ..self.clone_client() };
        Box::pin(async move { client.send_message(&phone_number_id, &request).await })
    }
}

impl GraphClient {
    fn clone_client(&self) -> GraphClient {
        GraphClient {
            http: self.http.clone(),
            base_url: self.base_url.clone(),
            access_token: self.access_token.clone(),
            retry_budget: self.retry_budget,
        }
    }
}

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder;

    use super::*;

    /// The waits the hand-written loop this replaced made: 200 ms · 2^attempt
    /// for attempts 1 to 6, then 12.8 s.
    #[test]
    fn throttling_waits_as_before() {
        let waits: Vec<u128> = GRAPH_SCHEDULE.builder().build().take(8).map(|wait| wait.as_millis()).collect();
        let before: Vec<u128> = (1u32..=8).map(|attempt| 200u128 * (1 << attempt.min(6))).collect();
        assert_eq!(waits, before);
    }
}
