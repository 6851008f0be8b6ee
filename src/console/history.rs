//! The last hour of the gateway's own counters, for the overview's charts: a snapshot of the
//! metrics' `Totals` every minute (61 kept); a chart's points are the differences between
//! neighbours, the last one the minute so far. Nothing on the booking path: the counters are the
//! metrics' own, read once a minute.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::telemetry::metrics::{BackendTotals, Totals};

/// How often a snapshot is taken.
pub const EVERY: Duration = Duration::from_secs(60);
/// Snapshots kept: an hour of minutes and the one before it.
const KEEP: usize = 61;

#[derive(Default)]
pub struct History {
    snapshots: Mutex<VecDeque<(Instant, Totals)>>,
}

/// One backend's last hour, a point per minute, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub booked: Vec<f64>,
    pub failed: Vec<f64>,
    /// Gateway time of bookings in each minute, in milliseconds (0: none that minute).
    pub p50_ms: Vec<f64>,
    pub p99_ms: Vec<f64>,
    /// The most recent minute with a 5xx: how long ago it ended, and its codes.
    pub last_failure: Option<(Duration, Vec<String>)>,
}

impl History {
    pub fn sample(&self) {
        let now = (Instant::now(), crate::telemetry::metrics::get().totals());
        let mut s = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() >= KEEP {
            s.pop_front();
        }
        s.push_back(now);
    }

    /// Samples now and then every [`EVERY`], for as long as the task runs.
    pub async fn run(self: std::sync::Arc<Self>) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample();
        }
    }

    /// Every backend's series: the snapshots, then the counters as they stand now.
    pub fn series(&self) -> Vec<(String, Series)> {
        let mut points: Vec<(Instant, Totals)> = self
            .snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        points.push((Instant::now(), crate::telemetry::metrics::get().totals()));
        let mut names: Vec<String> = points
            .iter()
            .flat_map(|(_, t)| t.backends.keys().cloned())
            .filter(|b| b != "none")
            .collect();
        names.sort();
        names.dedup();
        let empty = BackendTotals::default();
        names
            .into_iter()
            .map(|name| {
                let mut s = Series::default();
                for pair in points.windows(2) {
                    let (t0, a) = (&pair[0].0, pair[0].1.backends.get(&name).unwrap_or(&empty));
                    let (t1, b) = (&pair[1].0, pair[1].1.backends.get(&name).unwrap_or(&empty));
                    s.booked.push(b.booked.saturating_sub(a.booked) as f64);
                    let failed = b.failed.saturating_sub(a.failed);
                    s.failed.push(failed as f64);
                    if failed > 0 {
                        let codes = b
                            .failures_by_code
                            .iter()
                            .filter(|(c, n)| **n > a.failures_by_code.get(*c).copied().unwrap_or(0))
                            .map(|(c, _)| c.clone())
                            .collect();
                        // Somewhere in the minute that ended at `t1`.
                        let _ = t0;
                        s.last_failure = Some((t1.elapsed(), codes));
                    }
                    let (p50, p99) = quantiles(a, b);
                    s.p50_ms.push(p50);
                    s.p99_ms.push(p99);
                }
                (name, s)
            })
            .collect()
    }
}

/// The 50th and 99th percentile (ms) of the bookings counted between `a` and `b`: the upper
/// bound of the bucket each falls in (0 when there were none).
fn quantiles(a: &BackendTotals, b: &BackendTotals) -> (f64, f64) {
    let n = b.latency_count.saturating_sub(a.latency_count);
    if n == 0 {
        return (0.0, 0.0);
    }
    let at = |q: f64| {
        let rank = (q * n as f64).ceil().max(1.0) as u64;
        for (i, (bound, cum)) in b.latency.iter().enumerate() {
            let before = a.latency.get(i).map_or(0, |x| x.1);
            if cum.saturating_sub(before) >= rank && bound.is_finite() {
                return bound * 1e3;
            }
        }
        // Beyond the last finite bucket: at least that.
        b.latency
            .iter()
            .rev()
            .find(|(x, _)| x.is_finite())
            .map_or(0.0, |(x, _)| x * 1e3)
    };
    (at(0.5), at(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets_counted_between_two_snapshots() {
        let mk = |counts: [u64; 3]| BackendTotals {
            latency: vec![
                (0.001, counts[0]),
                (0.01, counts[1]),
                (f64::INFINITY, counts[2]),
            ],
            latency_count: counts[2],
            ..BackendTotals::default()
        };
        // 100 before; then 98 more under 1 ms and 2 under 10 ms.
        let (a, b) = (mk([50, 90, 100]), mk([148, 190, 200]));
        assert_eq!(quantiles(&a, &b), (1.0, 10.0));
        assert_eq!(quantiles(&a, &a), (0.0, 0.0));
    }
}
