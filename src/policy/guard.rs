//! Per-backend isolation: a concurrency cap and a circuit breaker.
//!
//! One sick MIS must not slow bookings to the others. Past `max_in_flight` a booking is shed at
//! once with 503 instead of queueing. After `breaker_failures` consecutive failures (connect
//! errors, timeouts, broken connections, 5xx, unreadable answers) the breaker opens: bookings fail
//! fast with 503 for `breaker_cooldown`, then one probe is let through (half-open); its success
//! closes the breaker, its failure opens it again. A guard belongs to a backend's pool, so it
//! survives reloads that keep the backend's URL; its limits are read from the live config.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::BackendLimits;
use crate::error::GatewayError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
pub struct Guard {
    in_flight: AtomicUsize,
    state: Mutex<State>,
    failures_total: AtomicU64,
    shed_total: AtomicU64,
    rejected_open_total: AtomicU64,
}

/// What the admin view and metrics show of a guard.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub state: &'static str,
    pub in_flight: usize,
    pub consecutive_failures: u32,
    pub failures_total: u64,
    pub shed_total: u64,
    pub rejected_open_total: u64,
    /// Milliseconds until an open breaker lets a probe through.
    pub retry_in_ms: Option<u64>,
}

/// A booking admitted to a backend. Dropping it without [`Permit::record`] counts as a failure
/// (the booking was cancelled mid-way, so its outcome is not known to be good).
#[derive(Debug)]
pub struct Permit<'g> {
    guard: &'g Guard,
    limits: BackendLimits,
    probe: bool,
    recorded: bool,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            in_flight: AtomicUsize::new(0),
            state: Mutex::new(State::Closed { failures: 0 }),
            failures_total: AtomicU64::new(0),
            shed_total: AtomicU64::new(0),
            rejected_open_total: AtomicU64::new(0),
        }
    }
}

impl Guard {
    /// Admits a booking, or says why not (503 with Retry-After) without touching the MIS.
    pub fn admit(&self, limits: BackendLimits) -> Result<Permit<'_>, GatewayError> {
        let probe = {
            let mut state = self.lock();
            match *state {
                State::Closed { .. } => false,
                State::Open { until } => {
                    let now = Instant::now();
                    if now < until {
                        self.rejected_open_total.fetch_add(1, Ordering::Relaxed);
                        return Err(GatewayError::BreakerOpen {
                            retry_after_secs: ceil_secs(until - now),
                        });
                    }
                    *state = State::HalfOpen { probing: true };
                    true
                }
                State::HalfOpen { probing: true } => {
                    self.rejected_open_total.fetch_add(1, Ordering::Relaxed);
                    return Err(GatewayError::BreakerOpen {
                        retry_after_secs: 1,
                    });
                }
                State::HalfOpen { probing: false } => {
                    *state = State::HalfOpen { probing: true };
                    true
                }
            }
        };
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= limits.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.shed_total.fetch_add(1, Ordering::Relaxed);
            if probe {
                *self.lock() = State::HalfOpen { probing: false };
            }
            return Err(GatewayError::Overloaded {
                retry_after_secs: 1,
            });
        }
        Ok(Permit {
            guard: self,
            limits,
            probe,
            recorded: false,
        })
    }

    pub fn snapshot(&self) -> Snapshot {
        let state = *self.lock();
        let (name, failures, retry_in_ms) = match state {
            State::Closed { failures } => ("closed", failures, None),
            State::Open { until } => (
                "open",
                0,
                Some(until.saturating_duration_since(Instant::now()).as_millis() as u64),
            ),
            State::HalfOpen { .. } => ("half_open", 0, None),
        };
        Snapshot {
            state: name,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            consecutive_failures: failures,
            failures_total: self.failures_total.load(Ordering::Relaxed),
            shed_total: self.shed_total.load(Ordering::Relaxed),
            rejected_open_total: self.rejected_open_total.load(Ordering::Relaxed),
            retry_in_ms,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settle(&self, ok: bool, probe: bool, limits: BackendLimits) {
        let mut state = self.lock();
        if ok {
            *state = State::Closed { failures: 0 };
            return;
        }
        self.failures_total.fetch_add(1, Ordering::Relaxed);
        let open = State::Open {
            until: Instant::now() + limits.breaker_cooldown,
        };
        *state = match *state {
            _ if probe => open,
            State::Closed { failures } if failures + 1 >= limits.breaker_failures => {
                tracing::warn!(failures = failures + 1, "circuit breaker opened");
                open
            }
            State::Closed { failures } => State::Closed {
                failures: failures + 1,
            },
            // A failure that started before the breaker opened leaves it as it is.
            other => other,
        };
    }
}

impl Permit<'_> {
    /// Records the booking's outcome: `ok` means the MIS is healthy (it answered, even with a
    /// business rejection).
    pub fn record(mut self, ok: bool) {
        self.recorded = true;
        self.guard.settle(ok, self.probe, self.limits);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.guard.in_flight.fetch_sub(1, Ordering::AcqRel);
        if !self.recorded {
            self.guard.settle(false, self.probe, self.limits);
        }
    }
}

/// Whether an outcome says the MIS itself is unhealthy.
pub fn is_mis_failure(e: &GatewayError) -> bool {
    match e {
        GatewayError::MisUnreachable
        | GatewayError::MisTimeout
        | GatewayError::OutcomeUnknown
        | GatewayError::MisBadAnswer
        | GatewayError::MisTls => true,
        GatewayError::Mis(r) => r.status.is_server_error(),
        _ => false,
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, failures: u32, cooldown_ms: u64) -> BackendLimits {
        BackendLimits {
            max_in_flight: max,
            max_connections: max,
            breaker_failures: failures,
            breaker_cooldown: Duration::from_millis(cooldown_ms),
        }
    }

    #[test]
    fn sheds_past_the_cap_and_frees_on_drop() {
        let g = Guard::default();
        let l = limits(2, 5, 1000);
        let a = g.admit(l).unwrap();
        let _b = g.admit(l).unwrap();
        assert_eq!(
            g.admit(l).unwrap_err(),
            GatewayError::Overloaded {
                retry_after_secs: 1
            }
        );
        a.record(true);
        assert!(g.admit(l).is_ok());
    }

    #[test]
    fn opens_after_consecutive_failures_then_probes_once() {
        let g = Guard::default();
        let l = limits(10, 3, 0);
        for _ in 0..2 {
            g.admit(l).unwrap().record(false);
        }
        g.admit(l).unwrap().record(true);
        assert_eq!(
            g.snapshot().consecutive_failures,
            0,
            "a success resets the streak"
        );
        for _ in 0..3 {
            g.admit(l).unwrap().record(false);
        }
        assert_eq!(g.snapshot().state, "open");
        // Cool-down of 0: the next admit is the probe; a second one meanwhile is refused.
        let probe = g.admit(l).unwrap();
        assert!(matches!(g.admit(l), Err(GatewayError::BreakerOpen { .. })));
        probe.record(false);
        assert_eq!(g.snapshot().state, "open");
        g.admit(l).unwrap().record(true);
        assert_eq!(g.snapshot().state, "closed");
    }

    #[test]
    fn an_open_breaker_says_when_to_retry() {
        let g = Guard::default();
        let l = limits(10, 1, 2500);
        g.admit(l).unwrap().record(false);
        assert_eq!(
            g.admit(l).unwrap_err(),
            GatewayError::BreakerOpen {
                retry_after_secs: 3
            }
        );
        assert_eq!(g.snapshot().rejected_open_total, 1);
    }
}
