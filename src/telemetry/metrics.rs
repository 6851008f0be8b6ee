//! RED metrics per MIS and the gateway's own state, as OpenTelemetry instruments read out in
//! Prometheus text on the admin listener (`GET /metrics`).
//!
//! Label sets are bounded by configuration: integrator logins, backend names, status classes
//! and message codes. No GUID, no request value is ever a label.
//!
//! The instruments written on every request ([`Metrics::record_request`], the auth cache's
//! counter) are OpenTelemetry *bound* instruments: their attribute set is resolved to its data
//! point once, and each request then adds to that point directly instead of sorting, hashing and
//! looking up its attributes. Bound and unbound recordings of one attribute set land on the same
//! data point, so what `/metrics` shows is the same either way.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{
    BoundCounter, BoundHistogram, Counter, Histogram, MeterProvider as _,
};
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
    /// Held with the handles bound to it (`auth_lookups`), which record into it.
    _auth_cache: Counter<u64>,
    /// `auth_cache` bound to `result="miss"` and `result="hit"`.
    auth_lookups: [BoundCounter<u64>; 2],
    pub replays: Counter<u64>,
    pub outcome_unknown: Counter<u64>,
    pub store_errors: Counter<u64>,
    pub lapsed_claims: Counter<u64>,
    pub local_claims: Counter<u64>,
    pub unwritten_outcomes: Counter<u64>,
    /// The booking journal's write failures, drops and gauges.
    pub journal: crate::journal::JournalMetrics,
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

        let auth_cache = counter(
            "mis_gateway.auth.cache",
            "Authentication cache lookups by result",
        );
        Metrics {
            auth_lookups: ["miss", "hit"].map(|r| auth_cache.bind(&[KeyValue::new("result", r)])),
            _auth_cache: auth_cache,
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
            lapsed_claims: counter(
                "mis_gateway.idempotency.lapsed_claims",
                "Same-key requests that found a claim whose lease lapsed with no outcome (answered 95022)",
            ),
            local_claims: counter(
                "mis_gateway.idempotency.local_claims",
                "Keys claimed in this replica only because the store was unavailable (on_store_error = local)",
            ),
            unwritten_outcomes: counter(
                "mis_gateway.idempotency.unwritten_outcomes",
                "Outcomes the store could not take at once, kept in this replica and written later",
            ),
            journal: crate::journal::JournalMetrics::register(&meter),
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

    /// Counts one authentication cache look-up, a hit or a miss.
    pub fn count_auth_lookup(&self, hit: bool) {
        self.auth_lookups[usize::from(hit)].add(1);
    }

    /// Counts one answered request and records its durations (the gateway's, and the MIS's
    /// when the booking reached one), through the instruments this thread bound to its labels.
    pub fn record_request(&self, labels: RequestLabels<'_>, took: Duration, mis: Option<Duration>) {
        let record = |b: &Bound| {
            b.requests.add(1);
            b.duration.record(took.as_secs_f64());
            if let Some(t) = mis {
                b.mis_duration.record(t.as_secs_f64());
            }
        };
        BOUND.with(|cell| match cell.try_borrow_mut() {
            Ok(mut bound) => {
                if let Some(b) = bound.iter().find(|b| b.labels() == labels) {
                    return record(b);
                }
                if bound.len() >= BOUND_PER_THREAD {
                    // Label sets seen before are bound again when next used.
                    bound.clear();
                }
                let b = self.bind(&labels);
                record(&b);
                bound.push(b);
            }
            // Not reached (nothing here records while binding); unbound is still right.
            Err(_) => record(&self.bind(&labels)),
        });
    }

    fn bind(&self, labels: &RequestLabels<'_>) -> Bound {
        let integrator: opentelemetry::StringValue = match labels.integrator {
            Some(i) => i.clone().into(),
            None => "unauthenticated".into(),
        };
        let by_backend = by_backend(labels.backend);
        Bound {
            integrator: labels.integrator.cloned(),
            backend: labels.backend.cloned(),
            class: labels.class,
            code: labels.code.cloned(),
            operation: labels.operation,
            requests: self.requests.bind(&[
                KeyValue::new("integrator", integrator),
                by_backend[0].clone(),
                KeyValue::new("status_class", labels.class),
                KeyValue::new("code", labels.code.cloned().unwrap_or("ok".into())),
                KeyValue::new("operation", labels.operation),
            ]),
            duration: self.duration.bind(&[
                by_backend[0].clone(),
                KeyValue::new("operation", labels.operation),
            ]),
            mis_duration: self.mis_duration.bind(&[
                by_backend[0].clone(),
                KeyValue::new("operation", labels.operation),
            ]),
        }
    }

    /// The request counters and latency histograms as they stand, summed the way the console
    /// charts them (no Prometheus needed to read its own).
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        #[allow(deprecated)]
        for family in self.registry.gather() {
            let name = family.get_name();
            for m in family.get_metric() {
                let label = |k: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.get_name() == k)
                        .map(|l| l.get_value().to_owned())
                        .unwrap_or_default()
                };
                match name {
                    "mis_gateway_requests_total" => {
                        let n = m.get_counter().get_value() as u64;
                        let (backend, class, code) =
                            (label("backend"), label("status_class"), label("code"));
                        let b = t.backends.entry(backend).or_default();
                        if label("operation") == "book" && class == "2xx" {
                            b.booked += n;
                        }
                        if class == "5xx" {
                            b.failed += n;
                            *b.failures_by_code.entry(code.clone()).or_default() += n;
                        }
                        let i = t.integrators.entry(label("integrator")).or_default();
                        i.requests += n;
                        if class == "4xx" {
                            i.refused += n;
                        }
                        if code == "94290" || code == "94291" {
                            i.limited += n;
                        }
                    }
                    "mis_gateway_request_duration_seconds" if label("operation") == "book" => {
                        let h = m.get_histogram();
                        let b = t.backends.entry(label("backend")).or_default();
                        let buckets = h.get_bucket();
                        if b.latency.len() < buckets.len() {
                            b.latency = buckets.iter().map(|k| (k.get_upper_bound(), 0)).collect();
                        }
                        for (slot, k) in b.latency.iter_mut().zip(buckets) {
                            slot.1 += k.get_cumulative_count();
                        }
                        b.latency_count += h.get_sample_count();
                    }
                    _ => {}
                }
            }
        }
        t
    }

    /// Everything in Prometheus text exposition format.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Cumulative request counts, as [`Metrics::totals`] reads them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub backends: std::collections::BTreeMap<String, BackendTotals>,
    pub integrators: std::collections::BTreeMap<String, IntegratorTotals>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendTotals {
    /// Bookings answered 2xx.
    pub booked: u64,
    /// Answers 5xx (any operation), and by `Message_code`.
    pub failed: u64,
    pub failures_by_code: std::collections::BTreeMap<String, u64>,
    /// Bookings' gateway time: (bucket upper bound in seconds, cumulative count).
    pub latency: Vec<(f64, u64)>,
    pub latency_count: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntegratorTotals {
    pub requests: u64,
    /// Answers 4xx.
    pub refused: u64,
    /// 429 (`94290`, `94291`).
    pub limited: u64,
}

/// The labels of one answered request: the integrator (`unauthenticated` without one), the
/// backend (`none`), the operation (`book`, `lookup`, `cancel`), the status class and the
/// message code (`ok`).
#[derive(Debug, Clone, Copy)]
pub struct RequestLabels<'a> {
    pub integrator: Option<&'a Arc<str>>,
    pub backend: Option<&'a Arc<str>>,
    pub operation: &'static str,
    pub class: &'static str,
    pub code: Option<&'a Cow<'static, str>>,
}

impl PartialEq for RequestLabels<'_> {
    /// Integrators and backends by identity: the configuration's strings, shared by every
    /// request of a generation (a reload's equal copy binds anew to the same data point).
    fn eq(&self, other: &Self) -> bool {
        fn same(a: Option<&Arc<str>>, b: Option<&Arc<str>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
        }
        same(self.integrator, other.integrator)
            && same(self.backend, other.backend)
            && self.operation == other.operation
            && self.class == other.class
            && self.code == other.code
    }
}

/// One label set's bound instruments, and the labels (held, so a compared pointer is never
/// another string's).
struct Bound {
    integrator: Option<Arc<str>>,
    backend: Option<Arc<str>>,
    operation: &'static str,
    class: &'static str,
    code: Option<Cow<'static, str>>,
    requests: BoundCounter<u64>,
    duration: BoundHistogram<f64>,
    mis_duration: BoundHistogram<f64>,
}

impl Bound {
    fn labels(&self) -> RequestLabels<'_> {
        RequestLabels {
            integrator: self.integrator.as_ref(),
            backend: self.backend.as_ref(),
            operation: self.operation,
            class: self.class,
            code: self.code.as_ref(),
        }
    }
}

/// Label sets a thread keeps bound; one more clears them (a reload's new strings, or an
/// unusual mix of codes, bind again on their next request).
const BOUND_PER_THREAD: usize = 64;

thread_local! {
    static BOUND: RefCell<Vec<Bound>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with each live backend's name and guard state.
fn each_backend(
    lives: &RwLock<Vec<Weak<Live>>>,
    mut f: impl FnMut(&str, crate::policy::guard::Snapshot),
) {
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

/// The `backend` label: the backend's name (shared with the configuration), `none` without one.
pub fn by_backend(backend: Option<&Arc<str>>) -> [KeyValue; 1] {
    let name: opentelemetry::StringValue = match backend {
        Some(b) => b.clone().into(),
        None => "none".into(),
    };
    [KeyValue::new("backend", name)]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name{labels}` in `text`, if it is there.
    fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
    }

    #[test]
    fn each_label_set_counts_apart_whatever_the_thread_keeps_bound() {
        let m = get();
        let backend: Arc<str> = "mis-b".into();
        let (portal, portal_again): (Arc<str>, Arc<str>) = ("portal".into(), "portal".into());
        let code: Cow<'static, str> = "94000".into();
        let labels = |integrator, class, code| RequestLabels {
            integrator,
            backend: Some(&backend),
            operation: "book",
            class,
            code,
        };
        let ms = Duration::from_millis(1);
        m.record_request(labels(Some(&portal), "2xx", None), ms, Some(ms));
        m.record_request(labels(Some(&portal), "2xx", None), ms, Some(ms));
        // The same login from another generation's string: the same data point.
        m.record_request(labels(Some(&portal_again), "2xx", None), ms, None);
        m.record_request(labels(Some(&portal), "4xx", Some(&code)), ms, None);
        m.record_request(
            RequestLabels {
                integrator: None,
                backend: None,
                operation: "book",
                class: "4xx",
                code: Some(&code),
            },
            ms,
            None,
        );
        // More label sets than a thread keeps bound, each used twice: the first ones are bound
        // again after the cache is cleared, and none is lost.
        let many: Vec<Arc<str>> = (0..BOUND_PER_THREAD + 5)
            .map(|i| format!("login-{i}").into())
            .collect();
        for _ in 0..2 {
            for login in &many {
                m.record_request(labels(Some(login), "2xx", None), ms, None);
            }
        }
        m.count_auth_lookup(true);
        m.count_auth_lookup(true);
        m.count_auth_lookup(false);

        let text = m.render();
        let requests =
            |labels: &str| sample(&text, &format!("mis_gateway_requests_total{{{labels}}}"));
        assert_eq!(
            requests(
                r#"backend="mis-b",code="ok",integrator="portal",operation="book",status_class="2xx""#
            ),
            Some(3.0)
        );
        assert_eq!(
            requests(
                r#"backend="mis-b",code="94000",integrator="portal",operation="book",status_class="4xx""#
            ),
            Some(1.0)
        );
        assert_eq!(
            requests(
                r#"backend="none",code="94000",integrator="unauthenticated",operation="book",status_class="4xx""#
            ),
            Some(1.0)
        );
        for i in [0, BOUND_PER_THREAD - 1, BOUND_PER_THREAD + 4] {
            assert_eq!(
                requests(&format!(
                    r#"backend="mis-b",code="ok",integrator="login-{i}",operation="book",status_class="2xx""#
                )),
                Some(2.0),
                "login-{i}"
            );
        }
        let duration = |what: &str, backend: &str| {
            sample(
                &text,
                &format!("{what}_count{{backend=\"{backend}\",operation=\"book\"}}"),
            )
        };
        let total = 3.0 + 1.0 + 2.0 * (BOUND_PER_THREAD + 5) as f64;
        assert_eq!(
            duration("mis_gateway_request_duration_seconds", "mis-b"),
            Some(total)
        );
        assert_eq!(
            duration("mis_gateway_request_duration_seconds", "none"),
            Some(1.0)
        );
        // Only the two bookings that reached the MIS have a MIS time.
        assert_eq!(
            duration("mis_gateway_mis_duration_seconds", "mis-b"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, r#"mis_gateway_auth_cache_total{result="hit"}"#),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, r#"mis_gateway_auth_cache_total{result="miss"}"#),
            Some(1.0)
        );
    }
}
