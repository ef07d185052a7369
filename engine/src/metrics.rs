//! The engine's metrics: every name in one place, each described with its
//! unit and a help text. [`describe_all`] describes these and the other
//! crates' once, when the recorder is installed, so every family on
//! `/metrics` has `# HELP` and `# TYPE` (`promtool check metrics` passes).

use metrics::{Unit, describe_counter, describe_histogram};

pub const WEBHOOKS_TOTAL: &str = "switchboard_webhooks_total";
pub const WEBHOOK_INGEST_SECONDS: &str = "switchboard_webhook_ingest_seconds";
pub const GRAPH_REQUESTS_TOTAL: &str = "switchboard_graph_requests_total";
pub const WS_WRITE_TIMEOUTS_TOTAL: &str = "switchboard_ws_write_timeouts_total";
pub const AUDIT_ENTRIES_TOTAL: &str = "switchboard_audit_entries_total";
pub const REPORT_EVENTS_TOTAL: &str = "switchboard_report_events_total";
pub const REPORT_ROWS_WRITTEN_TOTAL: &str = "switchboard_report_rows_written_total";
pub const AUDIT_CHECKPOINTS_TOTAL: &str = "switchboard_audit_checkpoints_total";

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
    actors::metrics::describe();
    storage::metrics::describe();
}
