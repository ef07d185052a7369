//! Switchboard's reports (PROTOCOL §5: SLA, funnel, attribution) as
//! projections of the conversation event log, pure: no store, no clock, no
//! IO. The engine's consumer (`engine::reports`) feeds every committed
//! event to a [`Projection`] in log order, persists what it changed with
//! its cursor, and answers the report endpoints from it.
//!
//! - [`projection`]: what each event means for the reports. A conversation
//!   being handled has a small state ([`projection::Conversation`]: who
//!   holds it since when, whether the holder wrote and the customer answered,
//!   who is waiting since when) kept until it closes; each event turns into
//!   increments of the rollups.
//! - [`rollup`]: the rollups: per group (an agent, a team, a source) and per
//!   UTC hour and UTC day, counts and three mergeable quantile sketches
//!   (first, next and total response times, DDSketch). A range is answered
//!   from whole days in its middle and hours at its ends, so a 30-day report
//!   merges at most 30 + 46 buckets per group, whatever the traffic.
//! - [`query`]: the three reports over a range, by agent, team or source,
//!   optionally by day, as JSON rows or CSV.
//!
//! Time resolution is the hour: a range's ends are taken to the hour (the
//! answer says which range it covers).

pub mod projection;
pub mod query;
pub mod rollup;

pub use projection::{Projection, ReportSettings};
pub use query::{GroupBy, Range, Report};
pub use rollup::{Dim, Rollups};

/// Milliseconds in an hour and a day.
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;
