//! Figures computed from raw measurements: latency percentiles, fairness of
//! assignment, and the slope of a series (memory over time).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Percentiles of a latency histogram kept in microseconds, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl LatencySummary {
    pub fn from_micros(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let millis = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count: histogram.len(),
            p50_ms: millis(histogram.value_at_quantile(0.50)),
            p99_ms: millis(histogram.value_at_quantile(0.99)),
            p999_ms: millis(histogram.value_at_quantile(0.999)),
            max_ms: millis(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
        }
    }
}

/// How evenly new conversations were spread over the agents.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fairness {
    pub agents: usize,
    pub total: u64,
    pub min: u64,
    pub max: u64,
    pub mean: f64,
    pub stddev: f64,
    /// Standard deviation over mean (0 = perfectly even).
    pub coefficient_of_variation: f64,
}

impl Fairness {
    pub fn of(assignments_per_agent: &[u64]) -> Fairness {
        if assignments_per_agent.is_empty() {
            return Fairness::default();
        }
        let agents = assignments_per_agent.len();
        let total: u64 = assignments_per_agent.iter().sum();
        let mean = total as f64 / agents as f64;
        let variance =
            assignments_per_agent.iter().map(|&count| (count as f64 - mean).powi(2)).sum::<f64>() / agents as f64;
        let stddev = variance.sqrt();
        Fairness {
            agents,
            total,
            min: assignments_per_agent.iter().copied().min().unwrap_or(0),
            max: assignments_per_agent.iter().copied().max().unwrap_or(0),
            mean,
            stddev,
            coefficient_of_variation: if mean > 0.0 { stddev / mean } else { 0.0 },
        }
    }
}

/// Least-squares slope of `y` over `x`; `None` with fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let count = points.len() as f64;
    let mean_x = points.iter().map(|(x, _)| x).sum::<f64>() / count;
    let mean_y = points.iter().map(|(_, y)| y).sum::<f64>() / count;
    let covariance: f64 = points.iter().map(|(x, y)| (x - mean_x) * (y - mean_y)).sum();
    let variance: f64 = points.iter().map(|(x, _)| (x - mean_x).powi(2)).sum();
    if variance == 0.0 { None } else { Some(covariance / variance) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary_in_milliseconds() {
        let mut histogram = crate::ledger::new_latency_histogram();
        for micros in 1..=1000u64 {
            histogram.record(micros * 10).expect("in range");
        }
        let summary = LatencySummary::from_micros(&histogram);
        assert_eq!(summary.count, 1000);
        assert!((summary.p50_ms - 5.0).abs() < 0.05, "{summary:?}");
        assert!((summary.max_ms - 10.0).abs() < 0.05, "{summary:?}");
        assert_eq!(LatencySummary::from_micros(&crate::ledger::new_latency_histogram()), LatencySummary::default());
    }

    #[test]
    fn fairness_of_even_and_uneven_spreads() {
        let even = Fairness::of(&[5, 5, 5, 5]);
        assert_eq!((even.min, even.max, even.total), (5, 5, 20));
        assert_eq!(even.stddev, 0.0);
        let uneven = Fairness::of(&[0, 10]);
        assert_eq!(uneven.stddev, 5.0);
        assert_eq!(uneven.coefficient_of_variation, 1.0);
    }

    #[test]
    fn slope_of_a_line() {
        let points: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 * x as f64 + 1.0)).collect();
        assert!((slope(&points).expect("a slope") - 3.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 1.0)]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }
}
