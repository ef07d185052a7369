//! The `conversations` scenario: many stored conversations, some of them
//! active, then a restart on the same data.
//!
//! 1. Populate: `stored` distinct customers each send a first message, packed
//!    `per_payload` to a webhook (Meta allows several `messages` and
//!    `contacts` in one `value`), with `concurrency` webhooks in flight. This is
//!    closed loop on purpose: it fills the store as fast as the engine accepts,
//!    it does not measure latency under a schedule. No agent is connected, so
//!    every conversation stays OPEN and waits in the team's queue: 1M open
//!    conversations is harsher than 1M stored with 100k active.
//! 2. Passivation: wait (bounded) for the engine's live conversation actors
//!    to fall, so the next step measures the active set and not the populate.
//! 3. Active: `active` of those customers, spread over the whole range, send a
//!    second message; the engine's RSS and live actors are read once applied.
//! 4. Restart: SIGTERM (or SIGKILL with `hard_kill`), start again on the same
//!    data directory; spawn → `/readyz` 200, and the RSS right after.
//!
//! Everything is read through public interfaces: webhooks, `/readyz`, the
//! engine's public `/metrics` (counters `conversations_opened_total` and
//! `messages_total{direction="in"}`, gauges `conversation_actors` and
//! `queue_depth`), and `/proc` of the process the harness started.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine_process::{EngineProcess, sample_process};
use crate::ledger::new_latency_histogram;
use crate::metrics::LatencySummary;
use crate::report::{ConversationsResult, mib};
use crate::scenarios::read_metric;
use crate::workload::{DISPLAY_PHONE_NUMBER, PHONE_NUMBER_ID, WABA_ID, WebhookBuilder};

const OPENED: &str = "switchboard_conversations_opened_total";
const MESSAGES_IN: &str = "switchboard_messages_total{direction=\"in\"}";
const ACTORS: &str = "switchboard_conversation_actors";
const MAX_ATTEMPTS: u32 = 8;

#[derive(Clone, Debug)]
pub struct ConversationsPlan {
    pub stored: u64,
    pub active: u64,
    pub per_payload: usize,
    pub concurrency: usize,
    /// How long to wait for the engine to apply what it acknowledged.
    pub apply_timeout: Duration,
    /// How long to wait for the populate's actors to passivate.
    pub passivation_wait: Duration,
    pub hard_kill: bool,
    pub ready_timeout: Duration,
    /// How long to wait after ready for the team queue to be whole again.
    pub queue_rebuild_wait: Duration,
    pub progress: bool,
    /// The redb file, to report its size.
    pub store_file: PathBuf,
    pub app_secret: String,
    pub seed: u64,
}

/// The wamid of customer `customer`'s message `seq` in run `tag`.
fn wamid(tag: &str, customer: u64, seq: u32) -> String {
    format!("wamid.conv.{tag}.{customer}.{seq}")
}

/// One webhook carrying message `seq` of each customer in `customers`.
pub fn batch_body(tag: &str, customers: &[u64], seq: u32, timestamp_s: u64) -> Vec<u8> {
    let mut contacts = String::with_capacity(customers.len() * 64);
    let mut messages = String::with_capacity(customers.len() * 160);
    for (position, &customer) in customers.iter().enumerate() {
        let wa_id = WebhookBuilder::customer_wa_id(customer as u32);
        if position > 0 {
            contacts.push(',');
            messages.push(',');
        }
        let _ = write!(contacts, r#"{{"profile":{{"name":"Customer {customer}"}},"wa_id":"{wa_id}"}}"#);
        let _ = write!(
            messages,
            r#"{{"from":"{wa_id}","id":"{}","timestamp":"{timestamp_s}","type":"text","text":{{"body":"Hello, message {seq} from customer {customer}"}}}}"#,
            wamid(tag, customer, seq)
        );
    }
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"{WABA_ID}","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"{DISPLAY_PHONE_NUMBER}","phone_number_id":"{PHONE_NUMBER_ID}"}},"contacts":[{contacts}],"messages":[{messages}]}}}}]}}]}}"#
    )
    .into_bytes()
}

/// `count` customers spread evenly over `0..stored` (distinct while count ≤ stored).
pub fn spread(stored: u64, count: u64) -> impl Iterator<Item = u64> {
    let count = count.min(stored);
    (0..count).map(move |index| (index as u128 * stored as u128 / count.max(1) as u128) as u64)
}

#[derive(Default)]
struct SendTally {
    acked_messages: AtomicU64,
    retries: AtomicU64,
    failed_payloads: AtomicU64,
}

/// Sends every batch (closed loop, `concurrency` in flight), retrying a
/// refused or cut webhook (redelivery is safe: the engine deduplicates by
/// wamid, as it does for Meta's retries).
async fn send_all(
    base_url: &str,
    app_secret: &str,
    tag: &str,
    customers: Vec<u64>,
    seq: u32,
    plan: &ConversationsPlan,
    label: &str,
) -> anyhow::Result<(SendTally, LatencySummary, Duration)> {
    let client = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(plan.concurrency)
        .timeout(Duration::from_secs(60))
        .build()?;
    let url = sim::webhook::webhook_url(base_url);
    let tally = Arc::new(SendTally::default());
    let histogram = Arc::new(std::sync::Mutex::new(new_latency_histogram()));
    let bar = progress_bar(plan.progress, customers.len() as u64, label);
    let secret: Arc<[u8]> = Arc::from(app_secret.as_bytes());
    let started = Instant::now();
    let chunks: Vec<Vec<u64>> = customers.chunks(plan.per_payload.max(1)).map(<[u64]>::to_vec).collect();
    futures_util::stream::iter(chunks)
        .map(|chunk| {
            let (client, url, tally, histogram, bar, secret) =
                (client.clone(), url.clone(), tally.clone(), histogram.clone(), bar.clone(), secret.clone());
            let body = batch_body(tag, &chunk, seq, crate::load::unix_seconds());
            async move {
                for attempt in 1..=MAX_ATTEMPTS {
                    let sent = Instant::now();
                    let outcome = sim::webhook::signed_post(&client, &url, &secret, body.clone()).send().await;
                    let ok = match outcome {
                        Ok(response) => {
                            let ok = response.status().as_u16() == 200;
                            let _ = response.bytes().await;
                            ok
                        }
                        Err(_) => false,
                    };
                    if ok {
                        let micros = sent.elapsed().as_micros() as u64;
                        let _ = histogram.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).record(micros.max(1));
                        tally.acked_messages.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        bar.inc(chunk.len() as u64);
                        return;
                    }
                    if attempt < MAX_ATTEMPTS {
                        tally.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    }
                }
                tally.failed_payloads.fetch_add(1, Ordering::Relaxed);
            }
        })
        .buffer_unordered(plan.concurrency.max(1))
        .collect::<()>()
        .await;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let summary = LatencySummary::from_micros(&histogram.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    let tally = Arc::try_unwrap(tally).unwrap_or_default();
    Ok((tally, summary, elapsed))
}

fn progress_bar(visible: bool, length: u64, label: &str) -> ProgressBar {
    let bar = if visible {
        ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {elapsed} {per_sec}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
    bar
}

/// Polls a counter on `/metrics` until it reaches `target` or `timeout`;
/// returns its last value.
async fn wait_counter(base_url: &str, metric: &str, target: f64, timeout: Duration) -> Option<f64> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some(value) = read_metric(base_url, metric).await {
            last = Some(value);
            if value >= target {
                return last;
            }
        }
        if Instant::now() >= deadline {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn rss_mib(pid: u32) -> Option<f64> {
    sample_process(Some(pid)).map(|sample| mib(sample.rss_bytes))
}

/// Runs the scenario against the engine the harness started.
pub async fn run(engine: &mut EngineProcess, plan: &ConversationsPlan) -> anyhow::Result<ConversationsResult> {
    let tag = format!("{:08x}", plan.seed as u32 ^ rand::random::<u32>());
    let base_url = engine.base_url();
    let opened_before = read_metric(&base_url, OPENED).await.unwrap_or(0.0);
    let in_before = read_metric(&base_url, MESSAGES_IN).await.unwrap_or(0.0);

    // 1. Populate.
    let populate_started = Instant::now();
    let customers: Vec<u64> = (0..plan.stored).collect();
    let (tally, populate_ack_latency, _) =
        send_all(&base_url, &plan.app_secret, &tag, customers, 1, plan, "populate").await?;
    let acked = tally.acked_messages.load(Ordering::Relaxed);
    let opened = wait_counter(&base_url, OPENED, opened_before + acked as f64, plan.apply_timeout).await;
    let populate_s = populate_started.elapsed().as_secs_f64();
    let stored_opened = opened.map_or(0, |opened| (opened - opened_before).max(0.0) as u64);
    let rss_after_populate_mib = rss_mib(engine.pid);
    let actors_after_populate = read_metric(&base_url, ACTORS).await;

    // 2. Let the populate's actors passivate (bounded).
    let waiting = Instant::now();
    let floor = (plan.stored / 100) as f64;
    while waiting.elapsed() < plan.passivation_wait {
        if read_metric(&base_url, ACTORS).await.is_none_or(|actors| actors <= floor) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let passivation_wait_s = waiting.elapsed().as_secs_f64();
    let rss_before_active_mib = rss_mib(engine.pid);
    let actors_before_active = read_metric(&base_url, ACTORS).await;

    // 3. The active set: a second message from `active` customers.
    let active_started = Instant::now();
    let in_mid = read_metric(&base_url, MESSAGES_IN).await.unwrap_or(in_before);
    let active: Vec<u64> = spread(plan.stored, plan.active).collect();
    let (active_tally, _, _) = send_all(&base_url, &plan.app_secret, &tag, active, 2, plan, "active").await?;
    let active_acked = active_tally.acked_messages.load(Ordering::Relaxed);
    let applied = wait_counter(&base_url, MESSAGES_IN, in_mid + active_acked as f64, plan.apply_timeout).await;
    let active_s = active_started.elapsed().as_secs_f64();
    let active_applied = applied.map_or(0, |applied| (applied - in_mid).max(0.0) as u64);
    let rss_active_mib = rss_mib(engine.pid);
    let actors_active = read_metric(&base_url, ACTORS).await;
    let store_file_mib = std::fs::metadata(&plan.store_file).ok().map(|metadata| mib(metadata.len()));

    // 4. Stop and restart on the same data.
    let stop_ms = engine.stop(plan.hard_kill, Duration::from_secs(120)).await.as_secs_f64() * 1000.0;
    let restart_to_ready = engine.restart(plan.ready_timeout).await;
    let (restart_to_ready_ms, rss_after_ready_mib, engine_cpu_s_startup) = match &restart_to_ready {
        Ok(elapsed) => {
            let sample = sample_process(Some(engine.pid));
            (
                Some(elapsed.as_secs_f64() * 1000.0),
                sample.map(|sample| mib(sample.rss_bytes)),
                sample.map(|sample| sample.cpu_seconds),
            )
        }
        Err(error) => {
            tracing::warn!(%error, "the engine did not come back");
            (None, None, None)
        }
    };
    let (actors_after_ready, queue_depth_after_ready) = if restart_to_ready.is_ok() {
        let base_url = engine.base_url();
        (
            read_metric(&base_url, ACTORS).await,
            read_metric(&base_url, &format!("switchboard_queue_depth{{team=\"{}\"}}", crate::BENCH_TEAM)).await,
        )
    } else {
        (None, None)
    };
    restart_to_ready?;
    // Readiness does not wait for the team to take its queue back: measure that too.
    let queue_metric = format!("switchboard_queue_depth{{team=\"{}\"}}", crate::BENCH_TEAM);
    let rebuilding = Instant::now();
    let depth = wait_counter(&engine.base_url(), &queue_metric, stored_opened as f64, plan.queue_rebuild_wait).await;
    let queue_rebuilt_after_ready_ms =
        depth.filter(|depth| *depth >= stored_opened as f64).map(|_| rebuilding.elapsed().as_secs_f64() * 1000.0);

    Ok(ConversationsResult {
        stored_target: plan.stored,
        stored_opened,
        active_target: plan.active.min(plan.stored),
        active_applied,
        all_open: true,
        messages_per_payload: plan.per_payload,
        concurrency: plan.concurrency,
        populate_s,
        populate_conversations_per_s: stored_opened as f64 / populate_s.max(1e-9),
        populate_ack_latency,
        webhook_retries: tally.retries.load(Ordering::Relaxed) + active_tally.retries.load(Ordering::Relaxed),
        webhook_failures: tally.failed_payloads.load(Ordering::Relaxed)
            + active_tally.failed_payloads.load(Ordering::Relaxed),
        rss_after_populate_mib,
        actors_after_populate,
        passivation_wait_s,
        rss_before_active_mib,
        actors_before_active,
        active_s,
        rss_active_mib,
        actors_active,
        store_file_mib,
        stop_signal: if plan.hard_kill { "SIGKILL" } else { "SIGTERM" }.to_owned(),
        stop_ms,
        restart_to_ready_ms,
        rss_after_ready_mib,
        actors_after_ready,
        queue_depth_after_ready,
        queue_rebuilt_after_ready_ms,
        queue_depth_last_seen: depth,
        engine_cpu_s_startup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::webhook::WebhookPayload;

    #[test]
    fn a_batch_is_one_meta_webhook_with_one_message_per_customer() {
        let body = batch_body("t1", &[3, 4, 5], 1, 1_700_000_000);
        let payload: WebhookPayload = serde_json::from_slice(&body).expect("a Meta webhook");
        let text = String::from_utf8(body).expect("utf-8");
        assert!(text.contains(&wamid("t1", 4, 1)));
        assert_eq!(text.matches(r#""from":"#).count(), 3);
        assert_eq!(payload.entry.len(), 1);
    }

    #[test]
    fn the_active_set_is_spread_and_distinct() {
        let active: Vec<u64> = spread(1_000, 100).collect();
        assert_eq!(active.len(), 100);
        assert_eq!((active[0], active[1], active[99]), (0, 10, 990));
        let all: Vec<u64> = spread(10, 50).collect();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }
}
