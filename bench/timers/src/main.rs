//! Arms N deadlines (default 1,000,000) in Switchboard's timer shards, spread
//! over a window of S seconds, then measures what they cost in memory and how
//! late they fire (p50/p99/p999/max, microseconds past due).
//!
//! `cargo run --release -p switchboard-bench-timers -- [N] [SPREAD_S]`
//!
//! A package of its own: it measures the engine's timer shards from inside
//! (`actors::timers`), which the load harness, talking to a server only
//! through its public interfaces, never reaches into.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actors::clock::Clock;
use actors::timers::{Deadline, DeadlineKind, Timers};
use hdrhistogram::Histogram;

struct WallClock;

impl Clock for WallClock {
    fn now_ms(&self) -> i64 {
        now_us() / 1000
    }
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_micros() as i64).unwrap_or(0)
}

fn rss_kib() -> u64 {
    bench::engine_process::sample_process(None).map_or(0, |sample| sample.rss_bytes / 1024)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map(|text| text.parse()).transpose()?.unwrap_or(1_000_000);
    let spread_s: i64 = args.next().map(|text| text.parse()).transpose()?.unwrap_or(20);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let lateness = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
        let fired = Arc::new(AtomicU64::new(0));
        let early = Arc::new(AtomicU64::new(0));
        let (record, counter, early_counter) = (lateness.clone(), fired.clone(), early.clone());
        let rss_before = rss_kib();
        let (timers, _tasks) = Timers::start(
            2,
            Arc::new(WallClock),
            Arc::new(move |deadline: Deadline, _fired_ms| {
                let late_us = now_us() - deadline.due * 1000;
                if late_us < 0 {
                    early_counter.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut histogram) = record.lock() {
                    let _ = histogram.record(late_us.max(1) as u64);
                }
                counter.fetch_add(1, Ordering::Relaxed);
            }),
        );
        // Due times start 2 s from now so arming finishes first; spread evenly.
        let start_ms = now_us() / 1000 + 2_000;
        let arm_started = Instant::now();
        for index in 0..count {
            let due = start_ms + (index as i64 * spread_s * 1000) / count.max(1) as i64;
            timers.arm(Deadline { due, conversation: index, kind: DeadlineKind::FirstResponseBreach });
        }
        let arm_elapsed = arm_started.elapsed();
        // Let the shards take every command in, then read memory with all armed.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_armed = rss_kib();
        let deadline = Instant::now() + Duration::from_secs(spread_s as u64 + 30);
        while fired.load(Ordering::Relaxed) < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let histogram = lateness.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
        let armed_mib = (rss_armed.saturating_sub(rss_before)) as f64 / 1024.0;
        let report = serde_json::json!({
            "deadlines": count,
            "spread_s": spread_s,
            "timer_shards": 2,
            "arm_seconds": arm_elapsed.as_secs_f64(),
            "rss_before_mib": rss_before as f64 / 1024.0,
            "rss_armed_mib": rss_armed as f64 / 1024.0,
            "memory_for_deadlines_mib": armed_mib,
            "bytes_per_deadline": (rss_armed.saturating_sub(rss_before) * 1024) as f64 / count.max(1) as f64,
            "fired": fired.load(Ordering::Relaxed),
            "fired_early": early.load(Ordering::Relaxed),
            "late_p50_ms": histogram.value_at_quantile(0.50) as f64 / 1000.0,
            "late_p99_ms": histogram.value_at_quantile(0.99) as f64 / 1000.0,
            "late_p999_ms": histogram.value_at_quantile(0.999) as f64 / 1000.0,
            "late_max_ms": histogram.max() as f64 / 1000.0,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        println!();
        println!("| deadlines | memory (MiB) | bytes/deadline | fired | late p50 | late p99 | late p99.9 | late max |");
        println!("|---|---|---|---|---|---|---|---|");
        println!(
            "| {count} | {armed_mib:.1} | {:.0} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            report["bytes_per_deadline"].as_f64().unwrap_or(0.0),
            report["fired"],
            report["late_p50_ms"].as_f64().unwrap_or(0.0),
            report["late_p99_ms"].as_f64().unwrap_or(0.0),
            report["late_p999_ms"].as_f64().unwrap_or(0.0),
            report["late_max_ms"].as_f64().unwrap_or(0.0),
        );
        if fired.load(Ordering::Relaxed) != count {
            anyhow::bail!("only {} of {count} deadlines fired", fired.load(Ordering::Relaxed));
        }
        anyhow::Ok(())
    })
}
