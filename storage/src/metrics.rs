//! The store's metrics: every name in one place, each described with its
//! unit and a help text (`describe` is called once, where the engine installs
//! its recorder; `/metrics` then carries `# HELP` for each).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub const COMMIT_SECONDS: &str = "switchboard_store_commit_seconds";
pub const COMMITS_TOTAL: &str = "switchboard_store_commits_total";
pub const COMMIT_FAILURES_TOTAL: &str = "switchboard_store_commit_failures_total";
pub const GROUP_BATCHES: &str = "switchboard_store_group_batches";
pub const MATERIALIZE_SECONDS: &str = "switchboard_store_materialize_seconds";
pub const MATERIALIZE_WRITES: &str = "switchboard_store_materialize_writes";
pub const MATERIALIZE_DISTINCT_WRITES: &str = "switchboard_store_materialize_distinct_writes";
pub const MATERIALIZE_FAILURES_TOTAL: &str = "switchboard_store_materialize_failures_total";
pub const OVERLAY_KEYS: &str = "switchboard_store_overlay_keys";
pub const LAG_WAITS_TOTAL: &str = "switchboard_store_lag_waits_total";
pub const READ_WAITS_TOTAL: &str = "switchboard_store_read_waits_total";
pub const REOPENS_TOTAL: &str = "switchboard_store_reopens_total";
pub const TABLES_FAILING: &str = "switchboard_store_tables_failing";
pub const JOURNALED_WRITES_TOTAL: &str = "switchboard_store_journaled_writes_total";
pub const JOURNALED_VALUE_BYTES_TOTAL: &str = "switchboard_store_journaled_value_bytes_total";
pub const MATERIALIZED_WRITES_TOTAL: &str = "switchboard_store_materialized_writes_total";

/// Every name above (docs/metrics.md describes each; a test holds both).
pub const NAMES: &[&str] = &[
    COMMIT_SECONDS,
    COMMITS_TOTAL,
    COMMIT_FAILURES_TOTAL,
    GROUP_BATCHES,
    MATERIALIZE_SECONDS,
    MATERIALIZE_WRITES,
    MATERIALIZE_DISTINCT_WRITES,
    MATERIALIZE_FAILURES_TOTAL,
    OVERLAY_KEYS,
    LAG_WAITS_TOTAL,
    READ_WAITS_TOTAL,
    REOPENS_TOTAL,
    TABLES_FAILING,
    JOURNALED_WRITES_TOTAL,
    JOURNALED_VALUE_BYTES_TOTAL,
    MATERIALIZED_WRITES_TOTAL,
];

/// Describes every metric above to the installed recorder.
pub fn describe() {
    describe_histogram!(COMMIT_SECONDS, Unit::Seconds, "time from a group's first batch to its journal sync");
    describe_counter!(COMMITS_TOTAL, Unit::Count, "journal entries written and synced (one per group commit)");
    describe_counter!(
        COMMIT_FAILURES_TOTAL,
        Unit::Count,
        "group commits that failed (nothing of them was acknowledged)"
    );
    describe_histogram!(GROUP_BATCHES, Unit::Count, "callers' batches sharing one journal sync");
    describe_histogram!(
        MATERIALIZE_SECONDS,
        Unit::Seconds,
        "time to apply gathered journal entries to the redb tables"
    );
    describe_histogram!(MATERIALIZE_WRITES, Unit::Count, "writes gathered for one materializing transaction");
    describe_histogram!(
        MATERIALIZE_DISTINCT_WRITES,
        Unit::Count,
        "writes applied in one materializing transaction (the last of each key)"
    );
    describe_counter!(
        MATERIALIZE_FAILURES_TOTAL,
        Unit::Count,
        "materializing transactions that failed and will be retried"
    );
    describe_gauge!(OVERLAY_KEYS, Unit::Count, "keys journaled but not yet in the tables (held in memory)");
    describe_counter!(LAG_WAITS_TOTAL, Unit::Count, "commits that waited for the tables to catch up with the journal");
    describe_counter!(READ_WAITS_TOTAL, Unit::Count, "range reads that waited for the tables to catch up");
    describe_counter!(REOPENS_TOTAL, Unit::Count, "times the database was reopened after an I/O error (a full disk)");
    describe_gauge!(
        TABLES_FAILING,
        Unit::Count,
        "1 while the tables cannot be written (a full disk): commits past the lag bound and range reads are refused"
    );
    describe_counter!(
        JOURNALED_WRITES_TOTAL,
        Unit::Count,
        "writes journaled, by table (a key written twice in a group once)"
    );
    describe_counter!(JOURNALED_VALUE_BYTES_TOTAL, Unit::Bytes, "bytes of the values journaled, by table");
    describe_counter!(
        MATERIALIZED_WRITES_TOTAL,
        Unit::Count,
        "writes applied to the redb tables, by table (the last of each key in a materializing transaction)"
    );
}
