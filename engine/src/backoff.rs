//! The one retry schedule of the engine, on `backon` (a maintained retry
//! crate): exponential growth from `base` by a factor of 2 up to `cap`.
//! The Graph API client's throttling retry runs `backon`'s retry loop on it
//! (`crate::graph`); the outbox (`crate::outbox`) persists its attempts, so
//! it asks the same schedule for the delay after the nth failure and draws
//! a full jitter under it ("Exponential Backoff And Jitter", AWS
//! Architecture Blog: `random(0, min(cap, base · 2^n))`), which spreads
//! the retries of many deliveries that failed together.
//!
//! Deliberately absent: sleeping. The Graph client sleeps through
//! `backon`'s tokio sleeper; the outbox stores the next attempt's time and
//! compares it with the engine's clock, so a restart or a manual clock in
//! tests moves it.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Exponential backoff from `base`, doubling, never above `cap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub base: Duration,
    pub cap: Duration,
}

impl Schedule {
    pub fn new(base: Duration, cap: Duration) -> Schedule {
        Schedule { base, cap: cap.max(base) }
    }

    /// `backon`'s builder for this schedule, without jitter and without a
    /// bound on the number of retries (callers bound those themselves).
    pub fn builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.base)
            .with_max_delay(self.cap)
            .with_factor(2.0)
            .without_max_times()
    }

    /// The delay before retry `retry` (1 for the first retry, after the
    /// first failure): `min(cap, base · 2^(retry-1))`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let index = retry.saturating_sub(1).min(64) as usize;
        self.builder().build().nth(index).unwrap_or(self.cap).min(self.cap)
    }

    /// Full jitter under [`Schedule::ceiling`]: `fraction` (drawn in
    /// `[0, 1)` by the caller, so this stays a function) of it.
    pub fn full_jitter(&self, retry: u32, fraction: f64) -> Duration {
        self.ceiling(retry).mul_f64(fraction.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    fn close(actual: Duration, expected: Duration) -> bool {
        actual.abs_diff(expected) <= ms(1)
    }

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let schedule = Schedule::new(ms(100), ms(1000));
        let ceilings: Vec<Duration> = (1..=7).map(|retry| schedule.ceiling(retry)).collect();
        let expected = [100, 200, 400, 800, 1000, 1000, 1000].map(ms);
        for (actual, expected) in ceilings.iter().zip(expected) {
            assert!(close(*actual, expected), "{ceilings:?}");
        }
        assert!(close(schedule.ceiling(0), ms(100)), "retry 0 is read as the first");
        assert_eq!(schedule.ceiling(10_000), ms(1000), "far retries stay at the cap");
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let schedule = Schedule::new(ms(100), ms(10_000));
        assert_eq!(schedule.full_jitter(3, 0.0), Duration::ZERO);
        assert!(close(schedule.full_jitter(3, 0.5), ms(200)));
        assert!(close(schedule.full_jitter(3, 0.999_999), ms(400)));
        assert!(close(schedule.full_jitter(3, 7.0), ms(400)), "a fraction above 1 is clamped");
    }

    #[test]
    fn a_cap_below_the_base_is_the_base() {
        let schedule = Schedule::new(ms(500), ms(100));
        assert_eq!(schedule.cap, ms(500));
        assert!(close(schedule.ceiling(4), ms(500)));
    }
}
