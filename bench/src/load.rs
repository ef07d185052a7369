//! The open-loop webhook sender.
//!
//! Message `i` of a phase is due at `start + i / rate`. The sender wakes about
//! every millisecond, dispatches every message that is due, and never waits for
//! an answer before sending the next: each request is its own task on a pooled
//! HTTP/1.1 client. Latency is taken from the scheduled time, so if the harness
//! itself falls behind that shows as latency too; `max_sender_lag` in the report
//! says how far behind it fell. Past `max_in_flight` outstanding requests a due
//! message is not sent and is counted as failed (`in_flight_cap`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::ledger::{PhaseLedger, SendFailure};
use crate::workload::{CustomerPlanner, WebhookBuilder};

pub struct WebhookSender {
    client: reqwest::Client,
    webhook_url: String,
    app_secret: Arc<[u8]>,
    builder: WebhookBuilder,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
}

impl WebhookSender {
    pub fn new(
        base_url: &str,
        app_secret: &str,
        builder: WebhookBuilder,
        max_in_flight: usize,
    ) -> anyhow::Result<WebhookSender> {
        let client = reqwest::Client::builder()
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(max_in_flight)
            .pool_idle_timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(WebhookSender {
            client,
            webhook_url: sim::webhook::webhook_url(base_url),
            app_secret: Arc::from(app_secret.as_bytes()),
            builder,
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight,
        })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Sends every message of `phase` on its schedule; returns once the last
    /// one is dispatched (answers may still be on their way: `wait_idle`).
    pub async fn run_phase(&self, phase: &Arc<PhaseLedger>, planner: &mut CustomerPlanner) {
        let start = Instant::now();
        phase.begin(start);
        let timestamp_s = unix_seconds();
        let mut next_index: u64 = 0;
        while next_index < phase.planned {
            let now = Instant::now();
            let due = ((now.saturating_duration_since(start).as_secs_f64() * phase.rate).floor() as u64 + 1)
                .min(phase.planned);
            // Meta's timestamps have a one-second resolution: refresh once per wake-up.
            let timestamp_s = if next_index < due { unix_seconds().max(timestamp_s) } else { timestamp_s };
            while next_index < due {
                let message = planner.next_message(phase.rate);
                phase.record_dispatch(next_index, now);
                if self.in_flight.load(Ordering::Relaxed) >= self.max_in_flight {
                    phase.record_failure(Some(next_index), SendFailure::InFlightCap);
                } else {
                    let body = self.builder.body(phase.id, next_index, &message, timestamp_s);
                    self.dispatch(phase.clone(), next_index, body);
                }
                next_index += 1;
            }
            if next_index < phase.planned {
                tokio::time::sleep_until(phase.scheduled_at(next_index).into()).await;
            }
        }
    }

    fn dispatch(&self, phase: Arc<PhaseLedger>, index: u64, body: Vec<u8>) {
        let request = sim::webhook::signed_post(&self.client, &self.webhook_url, &self.app_secret, body);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        phase.record_sent();
        let in_flight = self.in_flight.clone();
        tokio::spawn(async move {
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    // Read the body so the connection goes back to the pool.
                    let _ = response.bytes().await;
                    if status == 200 {
                        phase.record_ack(index, Instant::now());
                    } else {
                        phase.record_failure(Some(index), SendFailure::Status(status));
                    }
                }
                Err(_) => phase.record_failure(Some(index), SendFailure::Transport),
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Waits until no request is in flight, or `timeout`; true when idle.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.in_flight() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0)
}
