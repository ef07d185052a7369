//! The `outbox` scenario (issue #14): how fast the engine's outbox delivers
//! to a connector, measured at a local receiver.
//!
//! The engine runs with one `webhook` connector subscribed to every event
//! type, pointed at [`HookReceiver`], which checks each request's Standard
//! Webhooks signature, records it and answers 204. Two phases:
//!
//! 1. **Backlog drain.** The receiver holds every request unanswered (its
//!    gate is closed) while the usual load runs, so the outbox takes the
//!    deliveries in and keeps them pending (only `max_in_flight` attempts
//!    wait at the receiver). Once the backlog is still, the gate opens and
//!    the harness times the drain: deliveries per second and the engine's
//!    CPU per delivery.
//! 2. **Live.** The same load with the gate open: each delivery's latency
//!    from its event's time (the body's `timestamp`) to its arrival.
//!
//! Throughout, the receiver counts what must stay 0: bad signatures, a
//! delivery accepted twice, and a conversation's deliveries arriving out of
//! their log order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::watch;

use crate::engine_process::sample_process;
use crate::metrics::LatencySummary;
use crate::scenarios::{LoadRun, read_metric};

/// The connector's id in the engine's configuration.
pub const CONNECTOR_ID: &str = "bench";
/// Its signing key: 26 bytes, `whsec_` + base64.
pub const SECRET: &str = "whsec_YmVuY2gtb3V0Ym94LXNpZ25pbmcta2V5ISE=";

/// The `[[connectors]]` (and `[outbox]`) the engine runs with. Attempts
/// waiting at a closed gate must not time out, so the timeout is long.
pub fn connector_toml(url: &str, max_in_flight: usize) -> String {
    format!(
        "[[connectors]]\nid = \"{CONNECTOR_ID}\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n\
         events = [\"conversation.assigned\", \"conversation.fields_changed\", \"conversation.closed\"]\n\
         max_attempts = 100\nmax_in_flight = {max_in_flight}\ntimeout_ms = 600000\n"
    )
}

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    /// Per conversation: the log seq of the last delivery accepted.
    last_seq: HashMap<String, u64>,
    /// Delivery ids accepted.
    ids: std::collections::HashSet<String>,
    /// When the last one arrived.
    last_arrival: Option<Instant>,
}

struct ReceiverState {
    key: Vec<u8>,
    gate: watch::Receiver<bool>,
    accepted: AtomicU64,
    bad_signatures: AtomicU64,
    duplicates: AtomicU64,
    out_of_order: AtomicU64,
    malformed: AtomicU64,
    seen: Mutex<Seen>,
    /// Event time → arrival, in µs; taken only while `recording`.
    latency: Mutex<Histogram<u64>>,
    recording: std::sync::atomic::AtomicBool,
}

/// A connector's endpoint on this machine.
pub struct HookReceiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
    gate: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Counters that must stay 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReceiverFaults {
    pub bad_signatures: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub malformed: u64,
}

impl HookReceiver {
    /// Listens on 127.0.0.1 with its gate closed.
    pub async fn start() -> anyhow::Result<HookReceiver> {
        let key = STANDARD.decode(SECRET.trim_start_matches("whsec_")).context("the bench's signing secret")?;
        let (gate, gate_receiver) = watch::channel(false);
        let state = Arc::new(ReceiverState {
            key,
            gate: gate_receiver,
            accepted: AtomicU64::new(0),
            bad_signatures: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            seen: Mutex::new(Seen::default()),
            latency: Mutex::new(crate::ledger::new_latency_histogram()),
            recording: std::sync::atomic::AtomicBool::new(false),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new().route("/hook", post(receive)).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(HookReceiver { addr, state, gate, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn open_gate(&self) {
        let _ = self.gate.send(true);
    }

    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }

    pub fn last_arrival(&self) -> Option<Instant> {
        lock(&self.state.seen).last_arrival
    }

    /// Starts (or stops) taking latencies, from an empty histogram.
    pub fn record_latency(&self, on: bool) {
        if on {
            lock(&self.state.latency).reset();
        }
        self.state.recording.store(on, Ordering::Relaxed);
    }

    pub fn latency(&self) -> LatencySummary {
        LatencySummary::from_micros(&lock(&self.state.latency))
    }

    pub fn faults(&self) -> ReceiverFaults {
        ReceiverFaults {
            bad_signatures: self.state.bad_signatures.load(Ordering::Relaxed),
            duplicates: self.state.duplicates.load(Ordering::Relaxed),
            out_of_order: self.state.out_of_order.load(Ordering::Relaxed),
            malformed: self.state.malformed.load(Ordering::Relaxed),
        }
    }
}

impl Drop for HookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Standard Webhooks: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
fn signed(key: &[u8], id: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return false };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    signature.split(' ').any(|candidate| candidate == expected)
}

/// The log seq in a delivery id (`{connector}-{seq}`).
fn seq_of(id: &str) -> Option<u64> {
    id.rsplit_once('-').and_then(|(_, seq)| seq.parse().ok())
}

async fn receive(State(state): State<Arc<ReceiverState>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut gate = state.gate.clone();
    if gate.wait_for(|open| *open).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let arrived = Instant::now();
    let arrived_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64);
    let (Some(id), Some(timestamp), Some(signature)) =
        (header(&headers, "webhook-id"), header(&headers, "webhook-timestamp"), header(&headers, "webhook-signature"))
    else {
        state.malformed.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    };
    if !signed(&state.key, id, timestamp, &body, signature) {
        state.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    let parsed: Option<(String, i64)> = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|value| {
        let conversation = value.pointer("/data/conversation/id")?.as_str()?.to_owned();
        let at = protocol::time::parse_rfc3339(value.get("timestamp")?.as_str()?)?;
        Some((conversation, at))
    });
    let (Some((conversation, event_ms)), Some(seq)) = (parsed, seq_of(id)) else {
        state.malformed.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    };
    {
        let mut seen = lock(&state.seen);
        if !seen.ids.insert(id.to_owned()) {
            state.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        let last = seen.last_seq.entry(conversation).or_insert(0);
        if seq < *last {
            state.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        *last = (*last).max(seq);
        seen.last_arrival = Some(arrived);
    }
    if state.recording.load(Ordering::Relaxed) {
        let micros = (arrived_ms - event_ms).max(0) as u64 * 1000;
        let _ = lock(&state.latency).record(micros.max(1));
    }
    state.accepted.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

/// What the scenario measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OutboxResult {
    /// `max_in_flight` of the connector.
    pub connector_in_flight: usize,
    pub load_rate: f64,
    pub load_duration_s: f64,
    /// Deliveries pending when the gate opened.
    pub backlog: u64,
    /// Gate open → the last of them accepted.
    pub drain_s: f64,
    pub drain_deliveries_per_s: f64,
    /// The engine's CPU time over the drain per delivery.
    pub drain_cpu_ms_per_delivery: Option<f64>,
    /// Deliveries accepted during the live phase and its settling.
    pub live_deliveries: u64,
    /// Event time → arrival at the receiver (ms resolution: the event's time
    /// in the body has milliseconds).
    pub live_latency: LatencySummary,
    /// The engine's `switchboard_outbox_dead` at the end.
    pub dead: Option<f64>,
    pub faults: ReceiverFaults,
}

/// The gauge of this connector as the engine exposes it.
fn gauge(name: &str) -> String {
    format!("{name}{{connector=\"{CONNECTOR_ID}\"}}")
}

/// Waits until the outbox's backlog is at least `at_least` and has not
/// changed for `still`; returns it.
async fn still_backlog(base_url: &str, still: Duration, timeout: Duration) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut last = (f64::NAN, Instant::now());
    loop {
        let backlog = read_metric(base_url, &gauge("switchboard_outbox_backlog")).await.unwrap_or(0.0);
        if backlog != last.0 {
            last = (backlog, Instant::now());
        } else if backlog > 0.0 && last.1.elapsed() >= still {
            return Ok(backlog as u64);
        }
        anyhow::ensure!(started.elapsed() < timeout, "the outbox's backlog did not settle (last {backlog})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the receiver has accepted at least `count` and the
/// outbox's backlog is 0.
async fn drained(receiver: &HookReceiver, base_url: &str, count: u64, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if receiver.accepted() >= count {
            let backlog = read_metric(base_url, &gauge("switchboard_outbox_backlog")).await.unwrap_or(f64::NAN);
            if backlog == 0.0 {
                return Ok(());
            }
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "the outbox's backlog did not reach 0 within {timeout:?} ({} accepted, {count} expected at least)",
            receiver.accepted()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs both phases on `run` (whose engine is configured with
/// [`connector_toml`] pointing at `receiver`, gate closed).
pub async fn run(
    run: &mut LoadRun,
    receiver: &HookReceiver,
    base_url: &str,
    pid: Option<u32>,
    rate: f64,
    duration: Duration,
    connector_in_flight: usize,
) -> anyhow::Result<OutboxResult> {
    // Agents close a conversation after its customer is quiet for
    // idle_close; the backlog is still once those closes are in too.
    let still = run.options().idle_close + Duration::from_secs(3);
    run.step("backlog", rate, duration).await;
    let backlog = still_backlog(base_url, still, Duration::from_secs(300)).await?;
    let accepted_before = receiver.accepted();
    let cpu_before = sample_process(pid).map(|sample| sample.cpu_seconds);
    let opened = Instant::now();
    receiver.open_gate();
    drained(receiver, base_url, accepted_before + backlog, Duration::from_secs(600)).await?;
    let drain = receiver.last_arrival().unwrap_or_else(Instant::now).saturating_duration_since(opened);
    let cpu_after = sample_process(pid).map(|sample| sample.cpu_seconds);
    let drain_s = drain.as_secs_f64().max(1e-3);

    receiver.record_latency(true);
    let live_before = receiver.accepted();
    run.step("live", rate, duration).await;
    // The closes of the live phase's conversations come idle_close later;
    // then the backlog goes to 0 (the gauge counts a delivery until the
    // engine has its answer, so it cannot end before the receiver has it).
    tokio::time::sleep(still).await;
    drained(receiver, base_url, live_before, Duration::from_secs(120)).await?;
    receiver.record_latency(false);

    Ok(OutboxResult {
        connector_in_flight,
        load_rate: rate,
        load_duration_s: duration.as_secs_f64(),
        backlog,
        drain_s,
        drain_deliveries_per_s: backlog as f64 / drain_s,
        drain_cpu_ms_per_delivery: match (cpu_before, cpu_after) {
            (Some(before), Some(after)) if backlog > 0 => Some((after - before) * 1000.0 / backlog as f64),
            _ => None,
        },
        live_deliveries: receiver.accepted() - live_before,
        live_latency: receiver.latency(),
        dead: read_metric(base_url, &gauge("switchboard_outbox_dead")).await,
        faults: receiver.faults(),
    })
}

/// The problems an outbox result shows (empty: it passed).
pub fn problems(result: &OutboxResult) -> Vec<String> {
    let mut problems = Vec::new();
    let faults = &result.faults;
    if faults != &ReceiverFaults::default() {
        problems.push(format!("the receiver saw {faults:?}"));
    }
    if result.dead.unwrap_or(0.0) > 0.0 {
        problems.push(format!("{} deliveries are dead", result.dead.unwrap_or(0.0)));
    }
    if result.backlog == 0 {
        problems.push("the outbox made no deliveries".to_owned());
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_and_seqs_read() {
        let key = STANDARD.decode(SECRET.trim_start_matches("whsec_")).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(b"bench-7.1700000000.{}");
        let good = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        assert!(signed(&key, "bench-7", "1700000000", b"{}", &good));
        assert!(signed(&key, "bench-7", "1700000000", b"{}", &format!("v1,AAAA {good}")));
        assert!(!signed(&key, "bench-7", "1700000001", b"{}", &good));
        assert_eq!(key.len(), 26);
        assert_eq!(seq_of("bench-42"), Some(42));
        assert_eq!(seq_of("my-crm-42"), Some(42));
        assert_eq!(seq_of("bench"), None);
    }
}
