//! The Graph API sink: plays Meta's `POST /{version}/{phone_number_id}/messages`
//! for whatever the server sends, answers Meta's success body at once, and
//! counts. It keeps nothing per request, so it never grows under load.
//!
//! With status webhooks on, it also plays Meta's callbacks: for each accepted
//! send it posts signed `sent` and `delivered` statuses back to the server
//! (best effort, counted, never retried), which puts statuses in the mix.
//!
//! It is the load harness's Meta, beside the [`crate::emulator`] the demo and
//! the tests use: the emulator validates, records every send, injects failures
//! and retries its status posts, which at bench rates would cost the harness
//! CPU and memory the server under test should have. Both answer with Meta's
//! bodies and sign status webhooks with [`crate::webhook::signed_post`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

#[derive(Default)]
pub struct SinkCounters {
    /// Sends answered with success.
    pub sends: AtomicU64,
    /// Requests that were not a send body.
    pub bad_requests: AtomicU64,
    pub status_webhooks_acked: AtomicU64,
    pub status_webhooks_failed: AtomicU64,
    /// Status callbacks skipped because too many were waiting.
    pub status_webhooks_skipped: AtomicU64,
}

/// Where status callbacks go, once the server's address is known.
#[derive(Clone)]
pub struct StatusCallbacks {
    pub webhook_url: String,
    pub app_secret: String,
}

struct SinkState {
    counters: Arc<SinkCounters>,
    next_wamid: AtomicU64,
    statuses: Option<mpsc::Sender<PendingStatus>>,
}

struct PendingStatus {
    wamid: String,
    recipient: String,
    phone_number_id: String,
}

pub struct GraphSink {
    pub addr: SocketAddr,
    pub counters: Arc<SinkCounters>,
    callbacks: Option<watch::Sender<Option<StatusCallbacks>>>,
    stop: watch::Sender<bool>,
}

#[derive(Deserialize)]
struct SendBody {
    #[serde(default)]
    to: Option<String>,
}

const MAX_WAITING_STATUSES: usize = 10_000;
const MAX_STATUS_REQUESTS_IN_FLIGHT: usize = 256;

impl GraphSink {
    /// Starts the sink on `listen` (e.g. `127.0.0.1:0`). With
    /// `status_webhooks`, statuses are posted once `set_callbacks` is called.
    pub async fn start(listen: &str, status_webhooks: bool) -> anyhow::Result<GraphSink> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(SinkCounters::default());
        let (callbacks, statuses) = if status_webhooks {
            let (callbacks_tx, callbacks_rx) = watch::channel(None);
            let (statuses_tx, statuses_rx) = mpsc::channel(MAX_WAITING_STATUSES);
            tokio::spawn(post_statuses(statuses_rx, callbacks_rx, counters.clone()));
            (Some(callbacks_tx), Some(statuses_tx))
        } else {
            (None, None)
        };
        let state = Arc::new(SinkState { counters: counters.clone(), next_wamid: AtomicU64::new(1), statuses });
        let router = Router::new().route("/{version}/{phone_number_id}/messages", post(send_message)).with_state(state);
        let (stop, mut stopping) = watch::channel(false);
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopping.wait_for(|stopping| *stopping).await;
                })
                .await;
        });
        Ok(GraphSink { addr, counters, callbacks, stop })
    }

    /// The `graph_base_url` to configure a server with.
    pub fn graph_base_url(&self) -> String {
        format!("http://{}/v23.0", self.addr)
    }

    pub fn set_callbacks(&self, callbacks: StatusCallbacks) {
        if let Some(sender) = &self.callbacks {
            let _ = sender.send(Some(callbacks));
        }
    }

    pub fn sends(&self) -> u64 {
        self.counters.sends.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for GraphSink {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn send_message(
    State(state): State<Arc<SinkState>>,
    Path((_version, phone_number_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Ok(SendBody { to: Some(to) }) = serde_json::from_slice::<SendBody>(&body) else {
        state.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        let error = r#"{"error":{"message":"(#100) Invalid parameter","type":"OAuthException","code":100,"fbtrace_id":"bench-sink"}}"#;
        return (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], error).into_response();
    };
    let number = state.next_wamid.fetch_add(1, Ordering::Relaxed);
    state.counters.sends.fetch_add(1, Ordering::Relaxed);
    let wamid = format!("wamid.sink.{number}");
    let answer = format!(
        r#"{{"messaging_product":"whatsapp","contacts":[{{"input":"{to}","wa_id":"{to}"}}],"messages":[{{"id":"{wamid}"}}]}}"#
    );
    if let Some(statuses) = &state.statuses {
        let pending = PendingStatus { wamid, recipient: to, phone_number_id };
        if statuses.try_send(pending).is_err() {
            state.counters.status_webhooks_skipped.fetch_add(1, Ordering::Relaxed);
        }
    }
    ([(header::CONTENT_TYPE, "application/json")], answer).into_response()
}

/// Posts `sent` then `delivered` for each accepted send, a little after it
/// (Meta's callbacks follow the answer, never precede it).
async fn post_statuses(
    mut statuses: mpsc::Receiver<PendingStatus>,
    mut callbacks: watch::Receiver<Option<StatusCallbacks>>,
    counters: Arc<SinkCounters>,
) {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(30)).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(%error, "status callbacks are off: cannot build an HTTP client");
            return;
        }
    };
    let in_flight = Arc::new(AtomicUsize::new(0));
    let warned = Arc::new(AtomicBool::new(false));
    while let Some(pending) = statuses.recv().await {
        let Some(target) = callbacks.borrow_and_update().clone() else {
            counters.status_webhooks_skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if in_flight.load(Ordering::Relaxed) >= MAX_STATUS_REQUESTS_IN_FLIGHT {
            counters.status_webhooks_skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let client = client.clone();
        let counters = counters.clone();
        let in_flight = in_flight.clone();
        let warned = warned.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            for status in ["sent", "delivered"] {
                let body = status_body(&pending, status);
                let answer =
                    crate::webhook::signed_post(&client, &target.webhook_url, target.app_secret.as_bytes(), body)
                        .send()
                        .await;
                match answer {
                    Ok(response) if response.status().is_success() => {
                        counters.status_webhooks_acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) | Err(_) => {
                        counters.status_webhooks_failed.fetch_add(1, Ordering::Relaxed);
                        if !warned.swap(true, Ordering::Relaxed) {
                            tracing::warn!("a status webhook was not acknowledged (counted; reported once)");
                        }
                    }
                }
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

fn status_body(pending: &PendingStatus, status: &str) -> Vec<u8> {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"{waba}","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"{display}","phone_number_id":"{pnid}"}},"statuses":[{{"id":"{wamid}","status":"{status}","timestamp":"{timestamp}","recipient_id":"{to}","pricing":{{"billable":false,"pricing_model":"PMP","category":"service"}}}}]}}}}]}}]}}"#,
        waba = crate::emulator::WABA_ID,
        display = crate::emulator::DISPLAY_PHONE_NUMBER,
        pnid = pending.phone_number_id,
        wamid = pending.wamid,
        to = pending.recipient,
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_meta_success_bodies_and_counts() {
        let sink = GraphSink::start("127.0.0.1:0", false).await.expect("sink starts");
        let client = reqwest::Client::new();
        let url = format!("{}/100000000000777/messages", sink.graph_base_url());
        for expected in 1..=2 {
            let response = client
                .post(&url)
                .bearer_auth("token")
                .json(&serde_json::json!({"messaging_product":"whatsapp","to":"917000000001","type":"text","text":{"body":"hi"}}))
                .send()
                .await
                .expect("sink answers");
            assert_eq!(response.status(), 200);
            let body: protocol::graph::SendMessageResponse = response.json().await.expect("Meta's success body");
            assert_eq!(body.messages[0].id, format!("wamid.sink.{expected}"));
        }
        assert_eq!(sink.sends(), 2);
        let bad = client.post(&url).body("nope").send().await.expect("sink answers");
        assert_eq!(bad.status(), 400);
    }
}
