//! RED metrics per MIS and the gateway's own state, as OpenTelemetry instruments read out in
//! Prometheus text on the admin listener (`GET /metrics`).
//!
//! Label sets are bounded by configuration: integrator logins, backend names, status classes
//! and message codes. No GUID, no request value is ever a label.

use std::sync::{Arc, OnceLock, RwLock, Weak};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;

use crate::live::Live;

/// Latency buckets in seconds: sub-millisecond gateway work up to MIS timeouts.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct Metrics {
    registry: prometheus::Registry,
    _provider: SdkMeterProvider,
    /// Every answered request: integrator, backend, status class, Message_code.
    pub requests: Counter<u64>,
    /// Gateway time per request, by backend.
    pub duration: Histogram<f64>,
    /// MIS time per forwarded booking, by backend.
    pub mis_duration: Histogram<f64>,
    pub reloads: Counter<u64>,
    pub auth_cache: Counter<u64>,
    pub replays: Counter<u64>,
    pub outcome_unknown: Counter<u64>,
    pub store_errors: Counter<u64>,
    /// The live configurations observed by the gauges (weak: an app that is gone drops out).
    lives: Arc<RwLock<Vec<Weak<Live>>>>,
}

/// The process's metrics, created on first use.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .expect("the Prometheus exporter builds with a fresh registry");
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("mis-gateway");
        let lives: Arc<RwLock<Vec<Weak<Live>>>> = Arc::default();
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(BUCKETS.to_vec())
                .build()
        };
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_description(description)
                .build()
        };

        let l = lives.clone();
        meter
            .u64_observable_gauge("mis_gateway.config.generation")
            .with_description("Number of the live routes.toml generation")
            .with_callback(move |obs| {
                for live in l
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .filter_map(Weak::upgrade)
                {
                    obs.observe(live.load().number, &[]);
                }
            })
            .build();
        let l = lives.clone();
        meter
            .i64_observable_gauge("mis_gateway.backend.in_flight")
            .with_description("Bookings in flight to each MIS")
            .with_callback(move |obs| {
                each_backend(&l, |name, snap| {
                    obs.observe(
                        snap.in_flight as i64,
                        &[KeyValue::new("backend", name.to_owned())],
                    )
                })
            })
            .build();
        let l = lives.clone();
        meter
            .i64_observable_gauge("mis_gateway.backend.breaker_state")
            .with_description("Circuit breaker of each MIS: 0 closed, 1 half-open, 2 open")
            .with_callback(move |obs| {
                each_backend(&l, |name, snap| {
                    let state = match snap.state {
                        "closed" => 0,
                        "half_open" => 1,
                        _ => 2,
                    };
                    obs.observe(state, &[KeyValue::new("backend", name.to_owned())]);
                })
            })
            .build();

        Metrics {
            requests: counter("mis_gateway.requests", "Answered booking requests"),
            duration: seconds(
                "mis_gateway.request.duration",
                "Time the gateway took to answer a booking request",
            ),
            mis_duration: seconds(
                "mis_gateway.mis.duration",
                "Time a MIS took to answer a forwarded booking",
            ),
            reloads: counter("mis_gateway.reloads", "Configuration reloads by result"),
            auth_cache: counter(
                "mis_gateway.auth.cache",
                "Authentication cache lookups by result",
            ),
            replays: counter(
                "mis_gateway.idempotent_replays",
                "Answers replayed from the idempotency store",
            ),
            outcome_unknown: counter(
                "mis_gateway.outcome_unknown",
                "Bookings that reached a MIS whose answer was lost",
            ),
            store_errors: counter(
                "mis_gateway.idempotency.store_errors",
                "Idempotency store failures (duplicate protection degraded)",
            ),
            registry,
            _provider: provider,
            lives,
        }
    }

    /// Lets the gauges report on `live` (its generation, backends, breakers).
    pub fn observe(&self, live: &Arc<Live>) {
        let mut lives = self.lives.write().unwrap_or_else(|e| e.into_inner());
        lives.retain(|w| w.strong_count() > 0);
        lives.push(Arc::downgrade(live));
    }

    /// Everything in Prometheus text exposition format.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Calls `f` with each live backend's name and guard state.
fn each_backend(lives: &RwLock<Vec<Weak<Live>>>, mut f: impl FnMut(&str, crate::guard::Snapshot)) {
    for live in lives
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
    {
        for u in &live.load().upstreams {
            f(&u.backend.name, u.guard.snapshot());
        }
    }
}

/// `2xx`, `4xx`, `5xx`…
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}
