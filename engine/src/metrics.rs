//! The engine's metrics: every name in one place, each described with its
//! unit and a help text. [`describe_all`] describes these and the other
//! crates' once, when the recorder is installed, so every family on
//! `/metrics` has `# HELP` and `# TYPE` (`promtool check metrics` passes).
//! [`HISTOGRAM_BUCKETS`] makes every histogram a Prometheus histogram
//! (`_bucket`, `_sum`, `_count`), which a dashboard can aggregate over any
//! range (`histogram_quantile`), rather than the exporter's default summary
//! (quantiles over its own last minute). [`all_names`] lists every metric:
//! docs/metrics.md describes each, and `engine/tests/grafana.rs` holds the
//! list, the descriptions, that document and the Grafana dashboard
//! (`config/grafana/switchboard.json`) to one another.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub const WEBHOOKS_TOTAL: &str = "switchboard_webhooks_total";
pub const WEBHOOK_INGEST_SECONDS: &str = "switchboard_webhook_ingest_seconds";
pub const GRAPH_REQUESTS_TOTAL: &str = "switchboard_graph_requests_total";
pub const WS_WRITE_TIMEOUTS_TOTAL: &str = "switchboard_ws_write_timeouts_total";
pub const AUDIT_ENTRIES_TOTAL: &str = "switchboard_audit_entries_total";
pub const REPORT_EVENTS_TOTAL: &str = "switchboard_report_events_total";
pub const REPORT_ROWS_WRITTEN_TOTAL: &str = "switchboard_report_rows_written_total";
pub const AUDIT_CHECKPOINTS_TOTAL: &str = "switchboard_audit_checkpoints_total";
pub const OUTBOX_BACKLOG: &str = "switchboard_outbox_backlog";
pub const OUTBOX_OLDEST_PENDING_SECONDS: &str = "switchboard_outbox_oldest_pending_seconds";
pub const OUTBOX_ATTEMPTS_TOTAL: &str = "switchboard_outbox_attempts_total";
pub const OUTBOX_DEAD: &str = "switchboard_outbox_dead";
pub const BROADCAST_SENDS_TOTAL: &str = "switchboard_broadcast_sends_total";
pub const BROADCASTS_IN_PROGRESS: &str = "switchboard_broadcasts_in_progress";
pub const FOLLOWUPS_SCHEDULED: &str = "switchboard_followups_scheduled";
pub const FOLLOWUPS_TOTAL: &str = "switchboard_followups_total";
pub const SUGGESTIONS_TOTAL: &str = "switchboard_suggestions_total";
pub const COPILOT_MODEL_REQUESTS_TOTAL: &str = "switchboard_copilot_model_requests_total";
pub const COPILOT_MODEL_SECONDS: &str = "switchboard_copilot_model_seconds";

/// Every name above.
pub const NAMES: &[&str] = &[
    WEBHOOKS_TOTAL,
    WEBHOOK_INGEST_SECONDS,
    GRAPH_REQUESTS_TOTAL,
    WS_WRITE_TIMEOUTS_TOTAL,
    AUDIT_ENTRIES_TOTAL,
    AUDIT_CHECKPOINTS_TOTAL,
    REPORT_EVENTS_TOTAL,
    REPORT_ROWS_WRITTEN_TOTAL,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_PENDING_SECONDS,
    OUTBOX_ATTEMPTS_TOTAL,
    OUTBOX_DEAD,
    BROADCAST_SENDS_TOTAL,
    BROADCASTS_IN_PROGRESS,
    FOLLOWUPS_SCHEDULED,
    FOLLOWUPS_TOTAL,
    SUGGESTIONS_TOTAL,
    COPILOT_MODEL_REQUESTS_TOTAL,
    COPILOT_MODEL_SECONDS,
];

/// Every metric the engine exports: the engine's, the actors' and the store's.
pub fn all_names() -> Vec<&'static str> {
    NAMES.iter().chain(actors::metrics::NAMES).chain(storage::metrics::NAMES).copied().collect()
}

/// The engine's own work (webhook ingest, a journal sync, a materializing
/// transaction): half a millisecond to ten seconds.
const WORK_SECONDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// A conversation's wait for an agent: at once (an agent had room) to a
/// day (a queue outside the team's hours waits overnight).
const WAIT_SECONDS: &[f64] =
    &[0.1, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0];
/// How many (batches sharing a sync, writes in a materializing transaction,
/// up to the lag bound of 100,000).
const SIZES: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 50000.0, 100000.0,
];

/// Every histogram with its buckets' upper bounds (the recorder renders one
/// without buckets as a summary, which the dashboard does not read).
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[
    (WEBHOOK_INGEST_SECONDS, WORK_SECONDS),
    (COPILOT_MODEL_SECONDS, WORK_SECONDS),
    (actors::metrics::ASSIGNMENT_SECONDS, WAIT_SECONDS),
    (storage::metrics::COMMIT_SECONDS, WORK_SECONDS),
    (storage::metrics::MATERIALIZE_SECONDS, WORK_SECONDS),
    (storage::metrics::GROUP_BATCHES, SIZES),
    (storage::metrics::MATERIALIZE_WRITES, SIZES),
    (storage::metrics::MATERIALIZE_DISTINCT_WRITES, SIZES),
];

/// `builder` with [`HISTOGRAM_BUCKETS`].
pub fn with_buckets(
    mut builder: metrics_exporter_prometheus::PrometheusBuilder,
) -> metrics_exporter_prometheus::PrometheusBuilder {
    for (name, buckets) in HISTOGRAM_BUCKETS {
        builder = builder
            .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full((*name).to_owned()), buckets)
            .expect("no histogram has an empty list of buckets");
    }
    builder
}

/// Describes every metric of the engine, the actors and the store.
pub fn describe_all() {
    describe_counter!(WEBHOOKS_TOTAL, Unit::Count, "webhook requests answered, by outcome");
    describe_histogram!(
        WEBHOOK_INGEST_SECONDS,
        Unit::Seconds,
        "time from a verified webhook to every item in it being durably stored"
    );
    describe_counter!(GRAPH_REQUESTS_TOTAL, Unit::Count, "requests to the WhatsApp Cloud API, by outcome");
    describe_counter!(
        WS_WRITE_TIMEOUTS_TOTAL,
        Unit::Count,
        "WebSocket sessions dropped, and their connections reset, because the client took no frame within server.ws_write_timeout_ms"
    );
    describe_counter!(AUDIT_ENTRIES_TOTAL, Unit::Count, "audit log entries appended (one per event of the event log)");
    describe_counter!(REPORT_EVENTS_TOTAL, Unit::Count, "events of the event log taken into the reports' projection");
    describe_counter!(
        REPORT_ROWS_WRITTEN_TOTAL,
        Unit::Count,
        "rows of the reports' projection written (rollup buckets and followed conversations)"
    );
    describe_counter!(AUDIT_CHECKPOINTS_TOTAL, Unit::Count, "audit checkpoints signed");
    describe_gauge!(OUTBOX_BACKLOG, Unit::Count, "outbox deliveries pending (not yet delivered or dead), by connector");
    describe_gauge!(
        OUTBOX_OLDEST_PENDING_SECONDS,
        Unit::Seconds,
        "age of the oldest pending outbox delivery, by connector (0 when none is pending)"
    );
    describe_counter!(
        OUTBOX_ATTEMPTS_TOTAL,
        Unit::Count,
        "outbox delivery attempts, by connector and outcome (delivered, http_error, timeout, connection_error)"
    );
    describe_gauge!(OUTBOX_DEAD, Unit::Count, "outbox deliveries dead-lettered and not retried, by connector");
    describe_counter!(
        BROADCAST_SENDS_TOTAL,
        Unit::Count,
        "broadcast recipients by outcome: sent, failed, skipped (opted out), unknown (no answer), throttled and limited (not sent, retried or paused)"
    );
    describe_gauge!(BROADCASTS_IN_PROGRESS, Unit::Count, "broadcasts sending (not paused, completed or stopped)");
    describe_gauge!(FOLLOWUPS_SCHEDULED, Unit::Count, "promise-to-pay follow-ups scheduled and not yet due");
    describe_counter!(
        FOLLOWUPS_TOTAL,
        Unit::Count,
        "promise-to-pay follow-ups by outcome (scheduled, fired, cancelled, stale)"
    );
    describe_counter!(
        SUGGESTIONS_TOTAL,
        Unit::Count,
        "customer messages the co-pilot's agent assist looked at, by outcome (suggested, no_match, stale)"
    );
    describe_counter!(
        COPILOT_MODEL_REQUESTS_TOTAL,
        Unit::Count,
        "co-pilot language-model requests by kind (turn, summary, draft) and outcome (ok, or why the built-in engine answered instead)"
    );
    describe_histogram!(
        COPILOT_MODEL_SECONDS,
        Unit::Seconds,
        "time of a co-pilot language-model request, from sending it to its checked answer or failure"
    );
    actors::metrics::describe();
    storage::metrics::describe();
}
