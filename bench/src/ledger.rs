//! The fate of every scheduled message.
//!
//! A run is a sequence of phases (a throughput step, a soak, a recovery run).
//! A phase knows its rate and its start, so message `i` was scheduled at
//! `start + i / rate` without storing it. Per message it keeps one state byte
//! (acknowledged, failed, delivered) and the time of its acknowledgement, which
//! the order check needs: five bytes a message.
//!
//! Lost = acknowledged with 200 and never delivered; counted once the drain is
//! over, by a scan. Duplicated = delivered again as a live `message` event.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::workload::WebhookBuilder;

const ACKED: u8 = 1;
const FAILED: u8 = 2;
const DELIVERED: u8 = 4;

/// Acknowledgement times are kept in units of 10 µs since the phase start
/// (0 = not acknowledged): enough for phases of eleven hours.
const ACK_TIME_UNIT_NANOS: u128 = 10_000;

/// All phases of a run.
pub struct Ledger {
    builder: WebhookBuilder,
    phases: RwLock<Vec<Arc<PhaseLedger>>>,
}

impl Ledger {
    pub fn new(builder: WebhookBuilder) -> Ledger {
        Ledger { builder, phases: RwLock::new(Vec::new()) }
    }

    pub fn builder(&self) -> &WebhookBuilder {
        &self.builder
    }

    /// A new phase of `planned` messages at `rate` per second.
    pub fn new_phase(&self, label: &str, rate: f64, planned: u64) -> Arc<PhaseLedger> {
        let mut phases = self.phases.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let phase = Arc::new(PhaseLedger::new(phases.len() as u32, label, rate, planned));
        phases.push(phase.clone());
        phase
    }

    pub fn phase(&self, id: u32) -> Option<Arc<PhaseLedger>> {
        let phases = self.phases.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        phases.get(id as usize).cloned()
    }
}

/// Why a webhook was not acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendFailure {
    /// The server answered something other than 200.
    Status(u16),
    /// Connection refused, reset, or timed out.
    Transport,
    /// Not sent: the harness already had its maximum of requests in flight.
    InFlightCap,
}

impl SendFailure {
    pub fn label(self) -> String {
        match self {
            SendFailure::Status(status) => format!("http_{status}"),
            SendFailure::Transport => "transport".to_owned(),
            SendFailure::InFlightCap => "in_flight_cap".to_owned(),
        }
    }
}

/// How a message reached an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryKind {
    /// A live `message` event: seeing it twice is a duplicate.
    LiveEvent,
    /// Inside an `assigned` conversation: history may legitimately repeat
    /// (a reassigned conversation brings its messages along).
    Assigned,
    /// Inside a `snapshot` after (re)connecting: a statement of state.
    Snapshot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    First,
    Again,
}

#[derive(Default)]
pub struct PhaseCounters {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub failed: AtomicU64,
    /// Messages delivered at least once (acknowledged or not).
    pub delivered: AtomicU64,
    /// Messages both acknowledged and delivered.
    pub acked_and_delivered: AtomicU64,
    pub duplicated: AtomicU64,
    pub out_of_order: AtomicU64,
    /// Largest delay between a message's scheduled time and its dispatch, in µs:
    /// how far the harness itself fell behind.
    pub max_sender_lag_us: AtomicU64,
    /// Time of the last acknowledgement, in µs since the phase start.
    pub last_ack_us: AtomicU64,
    /// Time of the last first delivery, in µs since the phase start.
    pub last_delivery_us: AtomicU64,
}

pub struct PhaseLedger {
    pub id: u32,
    pub label: String,
    pub rate: f64,
    pub planned: u64,
    start: OnceLock<Instant>,
    state: Vec<AtomicU8>,
    acked_at: Vec<AtomicU32>,
    pub counters: PhaseCounters,
    failures: Mutex<BTreeMap<String, u64>>,
    ack_latency: Mutex<Histogram<u64>>,
    end_to_end_latency: Mutex<Histogram<u64>>,
}

/// Latency histograms hold microseconds, from 1 µs to one hour, 3 significant digits.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn micros(duration: Duration) -> u64 {
    duration.as_micros().min(u128::from(u64::MAX)) as u64
}

impl PhaseLedger {
    fn new(id: u32, label: &str, rate: f64, planned: u64) -> PhaseLedger {
        PhaseLedger {
            id,
            label: label.to_owned(),
            rate,
            planned,
            start: OnceLock::new(),
            state: (0..planned).map(|_| AtomicU8::new(0)).collect(),
            acked_at: (0..planned).map(|_| AtomicU32::new(0)).collect(),
            counters: PhaseCounters::default(),
            failures: Mutex::new(BTreeMap::new()),
            ack_latency: Mutex::new(new_latency_histogram()),
            end_to_end_latency: Mutex::new(new_latency_histogram()),
        }
    }

    /// Fixes the phase's start; message `i` is due at `start + i / rate`.
    pub fn begin(&self, start: Instant) {
        let _ = self.start.set(start);
    }

    pub fn start(&self) -> Option<Instant> {
        self.start.get().copied()
    }

    pub fn scheduled_at(&self, index: u64) -> Instant {
        let start = self.start.get().copied().unwrap_or_else(Instant::now);
        start + Duration::from_secs_f64(index as f64 / self.rate)
    }

    fn since_start(&self, at: Instant) -> Duration {
        self.start.get().map_or(Duration::ZERO, |start| at.saturating_duration_since(*start))
    }

    /// Message `index` was due and handled at `dispatched_at` (sent, or
    /// dropped at the in-flight cap): how late was the harness?
    pub fn record_dispatch(&self, index: u64, dispatched_at: Instant) {
        let lag = micros(dispatched_at.saturating_duration_since(self.scheduled_at(index)));
        self.counters.max_sender_lag_us.fetch_max(lag, Ordering::Relaxed);
    }

    pub fn record_sent(&self) {
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_ack(&self, index: u64, acked_at: Instant) {
        let Some(state) = self.state.get(index as usize) else { return };
        let since_start = self.since_start(acked_at);
        let units = (since_start.as_nanos() / ACK_TIME_UNIT_NANOS + 1).min(u128::from(u32::MAX)) as u32;
        self.acked_at[index as usize].store(units, Ordering::Release);
        let previous = state.fetch_or(ACKED, Ordering::AcqRel);
        if previous & ACKED != 0 {
            return;
        }
        self.counters.acked.fetch_add(1, Ordering::Relaxed);
        if previous & DELIVERED != 0 {
            self.counters.acked_and_delivered.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.last_ack_us.fetch_max(micros(since_start), Ordering::Relaxed);
        let latency = micros(acked_at.saturating_duration_since(self.scheduled_at(index)));
        let mut histogram = self.ack_latency.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        histogram.saturating_record(latency.max(1));
    }

    pub fn record_failure(&self, index: Option<u64>, failure: SendFailure) {
        if let Some(state) = index.and_then(|index| self.state.get(index as usize)) {
            state.fetch_or(FAILED, Ordering::AcqRel);
        }
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *failures.entry(failure.label()).or_default() += 1;
    }

    /// Records that an agent received message `index` at `received_at`.
    pub fn record_delivery(&self, index: u64, received_at: Instant, kind: DeliveryKind) -> DeliveryOutcome {
        let Some(state) = self.state.get(index as usize) else { return DeliveryOutcome::Again };
        let previous = state.fetch_or(DELIVERED, Ordering::AcqRel);
        if previous & DELIVERED != 0 {
            if kind == DeliveryKind::LiveEvent {
                self.counters.duplicated.fetch_add(1, Ordering::Relaxed);
            }
            return DeliveryOutcome::Again;
        }
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        if previous & ACKED != 0 {
            self.counters.acked_and_delivered.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.last_delivery_us.fetch_max(micros(self.since_start(received_at)), Ordering::Relaxed);
        let latency = micros(received_at.saturating_duration_since(self.scheduled_at(index)));
        let mut histogram = self.end_to_end_latency.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        histogram.saturating_record(latency.max(1));
        DeliveryOutcome::First
    }

    /// Whether message `index` had been acknowledged before `instant`.
    pub fn acknowledged_before(&self, index: u64, instant: Instant) -> bool {
        let Some(units) = self.acked_at.get(index as usize).map(|cell| cell.load(Ordering::Acquire)) else {
            return false;
        };
        if units == 0 {
            return false;
        }
        let Some(start) = self.start() else { return false };
        let acked_at = start + Duration::from_nanos(u64::from(units - 1) * ACK_TIME_UNIT_NANOS as u64);
        acked_at < instant
    }

    pub fn record_out_of_order(&self) {
        self.counters.out_of_order.fetch_add(1, Ordering::Relaxed);
    }

    /// Every acknowledged message has been delivered.
    pub fn fully_delivered(&self) -> bool {
        self.counters.acked_and_delivered.load(Ordering::Acquire) >= self.counters.acked.load(Ordering::Acquire)
    }

    /// Scans the phase: (lost = acknowledged, never delivered; delivered
    /// though never acknowledged).
    pub fn scan(&self) -> (u64, u64) {
        let mut lost = 0;
        let mut delivered_not_acked = 0;
        for state in &self.state {
            let state = state.load(Ordering::Acquire);
            let acked = state & ACKED != 0;
            let delivered = state & DELIVERED != 0;
            if acked && !delivered {
                lost += 1;
            }
            if delivered && !acked {
                delivered_not_acked += 1;
            }
        }
        (lost, delivered_not_acked)
    }

    /// Indexes of lost messages (at most `limit`), for the report.
    pub fn lost_examples(&self, limit: usize) -> Vec<u64> {
        self.state
            .iter()
            .enumerate()
            .filter(|(_, state)| state.load(Ordering::Acquire) & (ACKED | DELIVERED) == ACKED)
            .take(limit)
            .map(|(index, _)| index as u64)
            .collect()
    }

    pub fn failures(&self) -> BTreeMap<String, u64> {
        self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn ack_latency(&self) -> Histogram<u64> {
        self.ack_latency.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn end_to_end_latency(&self) -> Histogram<u64> {
        self.end_to_end_latency.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_is_acknowledged_and_never_delivered() {
        let ledger = Ledger::new(WebhookBuilder::new("t"));
        let phase = ledger.new_phase("p", 100.0, 4);
        let start = Instant::now();
        phase.begin(start);
        phase.record_ack(0, start);
        phase.record_ack(1, start);
        assert_eq!(phase.record_delivery(1, start, DeliveryKind::Assigned), DeliveryOutcome::First);
        assert_eq!(phase.record_delivery(2, start, DeliveryKind::LiveEvent), DeliveryOutcome::First);
        phase.record_failure(Some(3), SendFailure::Status(503));
        assert_eq!(phase.scan(), (1, 1));
        assert_eq!(phase.lost_examples(10), vec![0]);
        assert!(!phase.fully_delivered());
        phase.record_delivery(0, start, DeliveryKind::Snapshot);
        assert!(phase.fully_delivered());
        assert_eq!(phase.failures().get("http_503"), Some(&1));
    }

    #[test]
    fn only_live_events_count_as_duplicates() {
        let ledger = Ledger::new(WebhookBuilder::new("t"));
        let phase = ledger.new_phase("p", 100.0, 1);
        phase.begin(Instant::now());
        phase.record_delivery(0, Instant::now(), DeliveryKind::LiveEvent);
        phase.record_delivery(0, Instant::now(), DeliveryKind::Snapshot);
        phase.record_delivery(0, Instant::now(), DeliveryKind::Assigned);
        assert_eq!(phase.counters.duplicated.load(Ordering::Relaxed), 0);
        phase.record_delivery(0, Instant::now(), DeliveryKind::LiveEvent);
        assert_eq!(phase.counters.duplicated.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn acknowledgement_times_order_messages() {
        let ledger = Ledger::new(WebhookBuilder::new("t"));
        let phase = ledger.new_phase("p", 1000.0, 2);
        let start = Instant::now();
        phase.begin(start);
        assert!(!phase.acknowledged_before(0, start + Duration::from_secs(1)));
        phase.record_ack(0, start + Duration::from_millis(5));
        assert!(phase.acknowledged_before(0, start + Duration::from_millis(6)));
        assert!(!phase.acknowledged_before(0, start + Duration::from_millis(4)));
    }
}
