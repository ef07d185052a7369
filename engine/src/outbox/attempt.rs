//! What every connector's HTTP attempt shares: sending a request and
//! classifying what came back into an [`AttemptOutcome`] — a 2xx is
//! delivered; any other status (a redirect is never followed), a timeout
//! or a closed connection is a failure, with the `Retry-After` of the
//! answer (RFC 9110 §10.2.3: delay-seconds or an HTTP-date, the date read
//! against the outbox's clock).

use std::time::{Duration, UNIX_EPOCH};

use protocol::time::UnixMs;

use super::decide::AttemptOutcome;

/// The most of a failed answer's body kept in `last_error` (a CRM's
/// error explains a 4xx; the rest is cut).
pub const ERROR_BODY_CHARS: usize = 300;

/// How long `Retry-After` asks to wait, seen at `now`: a number of seconds,
/// or an HTTP date (IMF-fixdate, or the obsolete RFC 850 and asctime forms
/// RFC 9110 asks recipients to accept) minus `now` (a date already past is
/// no wait). Anything else is ignored: the backoff applies.
pub fn retry_after(value: &str, now: UnixMs) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    let date_ms = date.duration_since(UNIX_EPOCH).ok()?.as_millis().min(i64::MAX as u128) as i64;
    Some(Duration::from_millis(date_ms.saturating_sub(now).max(0) as u64))
}

/// What a status that is not 2xx is, with its `Retry-After` and, when the
/// caller kept it, the start of the answer's body (a CRM's reason).
pub fn failure_of(status: u16, retry_after_header: Option<&str>, now: UnixMs, body: Option<&str>) -> AttemptOutcome {
    let retry_after = retry_after_header.and_then(|value| retry_after(value, now));
    let error = match body.map(str::trim).filter(|body| !body.is_empty()) {
        Some(body) => {
            let cut: String = body.chars().take(ERROR_BODY_CHARS).collect();
            let more = if cut.len() < body.len() { "…" } else { "" };
            format!("HTTP {status}: {cut}{more}")
        }
        None => format!("HTTP {status}"),
    };
    AttemptOutcome::Failed { error, retry_after }
}

/// A transport failure, without the URL (which may carry a token).
pub fn transport_failure(error: &reqwest::Error) -> AttemptOutcome {
    let error = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection refused or unreachable"
    } else {
        "connection closed before an answer"
    };
    AttemptOutcome::Failed { error: error.to_owned(), retry_after: None }
}

/// The HTTP client of a connector: bounded by `timeout`, redirects never
/// followed (a 3xx is a failure, so a moved endpoint is seen).
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| format!("cannot build the HTTP client: {error}"))
}

/// An answer: its status and body, or the failure it is.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends `request`; a 2xx is `Ok` with the answer, anything else the
/// failure it is. `keep_error_body`: a failed answer's body goes into the
/// error (the named CRMs explain their 4xx there; a webhook receiver's
/// body is not shown).
pub async fn send(
    request: reqwest::RequestBuilder,
    now: UnixMs,
    keep_error_body: bool,
) -> Result<Answer, AttemptOutcome> {
    let response = request.send().await.map_err(|error| transport_failure(&error))?;
    let status = response.status();
    let retry_after =
        response.headers().get(reqwest::header::RETRY_AFTER).and_then(|value| value.to_str().ok()).map(str::to_owned);
    // The body is read (bounded by the timeout) so the connection can be
    // used again.
    let read = response.bytes().await;
    if status.is_success() {
        let body = match read {
            Ok(bytes) => bytes.to_vec(),
            Err(error) => {
                // A 2xx whose body broke off is still the receiver's yes.
                tracing::debug!(%error, "a connector's answer body broke off after a 2xx");
                Vec::new()
            }
        };
        return Ok(Answer { status: status.as_u16(), body });
    }
    let text = read.ok().filter(|_| keep_error_body).map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    Err(failure_of(status.as_u16(), retry_after.as_deref(), now, text.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2015-10-21T07:28:00Z.
    const DATE_MS: UnixMs = 1_445_412_480_000;

    #[test]
    fn retry_after_is_seconds_or_an_http_date_against_the_clock() {
        let check = |value: &str, now: UnixMs, expected: Option<u64>| {
            assert_eq!(retry_after(value, now), expected.map(Duration::from_millis), "{value:?} at {now}");
        };
        check(" 7 ", DATE_MS, Some(7_000));
        check("0", DATE_MS, Some(0));
        check("Wed, 21 Oct 2015 07:28:00 GMT", DATE_MS - 30_000, Some(30_000));
        check("Wed, 21 Oct 2015 07:28:00 GMT", DATE_MS - 1_500, Some(1_500));
        check("Wednesday, 21-Oct-15 07:28:00 GMT", DATE_MS - 2_000, Some(2_000));
        check("Wed Oct 21 07:28:00 2015", DATE_MS - 3_000, Some(3_000));
        check("Wed, 21 Oct 2015 07:28:00 GMT", DATE_MS + 60_000, Some(0));
        check("-5", DATE_MS, None);
        check("soon", DATE_MS, None);
        check("2015-10-21T07:28:00Z", DATE_MS, None);
    }

    #[test]
    fn failures_carry_retry_after_and_the_start_of_a_kept_body() {
        assert_eq!(
            failure_of(429, Some("7"), 0, None),
            AttemptOutcome::Failed { error: "HTTP 429".into(), retry_after: Some(Duration::from_secs(7)) }
        );
        assert_eq!(
            failure_of(503, Some("Wed, 21 Oct 2015 07:28:00 GMT"), DATE_MS - 90_000, None),
            AttemptOutcome::Failed { error: "HTTP 503".into(), retry_after: Some(Duration::from_secs(90)) }
        );
        assert_eq!(
            failure_of(400, None, 0, Some(" {\"message\":\"Property values were not valid\"} ")),
            AttemptOutcome::Failed {
                error: "HTTP 400: {\"message\":\"Property values were not valid\"}".into(),
                retry_after: None
            }
        );
        let AttemptOutcome::Failed { error, .. } = failure_of(400, None, 0, Some(&"x".repeat(1000))) else {
            unreachable!()
        };
        assert_eq!(error.chars().count(), "HTTP 400: ".len() + ERROR_BODY_CHARS + 1, "cut, with an ellipsis");
        assert_eq!(
            failure_of(500, None, 0, Some("  ")),
            AttemptOutcome::Failed { error: "HTTP 500".into(), retry_after: None }
        );
    }
}
