//! One request's telemetry: its ids and trace context, the server span and its fields, the
//! metrics and the access-log event written when it ends. Technical identifiers only.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::booking::appointment::APPOINTMENT_PREFIX;
use crate::booking::pipeline::APPOINTMENTS_PATH;

/// The route of one appointment, as spans name it.
const APPOINTMENT_ROUTE: &str = "/dir/appointments/{guid}";
use crate::error::RequestId;
use crate::policy::idempotency;
use crate::telemetry::TRACEPARENT;

/// What the access log says about one request. Only technical identifiers: never a body,
/// a name, a header value or a query string.
#[derive(Default)]
pub(crate) struct Record {
    /// The client's address (behind trusted proxies, the one they named).
    pub(crate) client: Option<std::net::IpAddr>,
    pub(crate) integrator: Option<Arc<str>>,
    pub(crate) lpu: Option<Uuid>,
    pub(crate) slot: Option<Uuid>,
    pub(crate) backend: Option<Arc<str>>,
    pub(crate) appointment: Option<Uuid>,
    pub(crate) mis_status: Option<u16>,
    pub(crate) mis_time: Option<Duration>,
    pub(crate) code: Option<std::borrow::Cow<'static, str>>,
    /// The answer says the booking may exist (`GatewayError::outcome_unknown`).
    pub(crate) unknown: bool,
    pub(crate) replayed: bool,
    /// The key's claim lapsed: the replica that sent the booking died before recording it.
    pub(crate) lapsed: bool,
    /// For the journal: the referral and the key's store slot.
    pub(crate) direction: Option<Uuid>,
    pub(crate) key: Option<idempotency::Slot>,
    /// The appointment's number (moved from the answer's fields, not copied).
    pub(crate) number: Option<String>,
    /// `book`, `lookup` or `cancel`: a metrics label and an access-log field.
    pub(crate) operation: &'static str,
}

/// The request id and, when tracing gave one, this request's own `traceparent` (its server
/// span), sent to the MIS when no client span is made for the call.
pub(crate) struct Ids {
    pub(crate) request_id: RequestId,
    pub(crate) traceparent: Option<HeaderValue>,
    /// The integrator's `tracestate`, sent on with the trace it belongs to.
    pub(crate) tracestate: Option<HeaderValue>,
}

impl Ids {
    /// The W3C trace id (32 hex digits), for error bodies and logs.
    pub(crate) fn trace_id(&self) -> Option<&str> {
        crate::telemetry::trace_id(self.traceparent.as_ref()?)
    }
}

/// The server span of one request, named by route (never by raw path), child of the
/// integrator's `traceparent` when it sent one.
pub(crate) fn server_span<B>(req: &Request<B>, request_id: &str) -> tracing::Span {
    let path = req.uri().path();
    let one = path.starts_with(APPOINTMENT_PREFIX);
    let (name, route) = match req.method().as_str() {
        "POST" if path == APPOINTMENTS_PATH => ("POST /dir/appointments", APPOINTMENTS_PATH),
        "GET" if one => ("GET /dir/appointments/{guid}", APPOINTMENT_ROUTE),
        "DELETE" if one => ("DELETE /dir/appointments/{guid}", APPOINTMENT_ROUTE),
        _ => ("HTTP", ""),
    };
    let span = tracing::info_span!(
        "request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %req.method(),
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        request_id,
        integrator = tracing::field::Empty,
        lpu = tracing::field::Empty,
        backend = tracing::field::Empty,
        slot = tracing::field::Empty,
        appointment = tracing::field::Empty,
        message_code = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let _ = span.set_parent(parent_context(req.headers()));
    span
}

/// The request's server span and its own `traceparent` (what the MIS gets when no client
/// span is made; the trace id is cut from it).
///
/// Without an exporter a span would only carry the trace context, so none is made: the
/// context is derived here as the SDK would (the integrator's trace, or a new one; a new span
/// id), sparing each request the span's creation, its enters and exits on every poll and
/// its closing in the subscriber and the OpenTelemetry layer.
pub(crate) fn request_trace<B>(
    req: &Request<B>,
    request_id: &str,
) -> (tracing::Span, Option<HeaderValue>, Option<HeaderValue>) {
    use crate::telemetry::{traceparent, tracestate};
    if !crate::telemetry::exporting() {
        let sc = crate::telemetry::child_of(&parent_context(req.headers()));
        return (tracing::Span::none(), traceparent(&sc), tracestate(&sc));
    }
    let span = server_span(req, request_id);
    let sc = span.context().span().span_context().clone();
    (span, traceparent(&sc), tracestate(&sc))
}

/// The integrator's trace context from `traceparent` (an empty context without one).
pub(crate) fn parent_context(headers: &HeaderMap) -> opentelemetry::Context {
    // Most integrators send none: skip the propagator's look-ups and its context.
    if !headers.contains_key(TRACEPARENT) {
        return opentelemetry::Context::new();
    }
    TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers))
}

/// Span fields and metrics of a finished request.
pub(crate) fn record(rec: &Record, status: StatusCode, took: Duration) {
    let outcome = match (status.as_u16(), rec.replayed) {
        (_, true) => "replayed",
        (200..=299, _) if rec.operation == "cancel" => "cancelled",
        (200..=299, _) if rec.operation == "lookup" => "found",
        (200..=299, _) => "booked",
        (_, false) if rec.unknown => "outcome_unknown",
        (400..=499, _) if rec.mis_status.is_some() => "rejected_by_mis",
        (400..=499, _) => "refused",
        _ => "failed",
    };
    // Span fields only reach an exporter: without one, recording them is wasted work.
    if crate::telemetry::exporting() {
        record_span(rec, status, outcome);
    }

    let m = crate::telemetry::metrics::get();
    m.record_request(
        crate::telemetry::metrics::RequestLabels {
            integrator: rec.integrator.as_ref(),
            backend: rec.backend.as_ref(),
            operation: rec.operation,
            class: crate::telemetry::metrics::status_class(status.as_u16()),
            code: rec.code.as_ref(),
        },
        took,
        rec.mis_time,
    );
    // Replays and lost answers are rare: their counters stay unbound.
    let unknown = outcome == "outcome_unknown" && !rec.replayed;
    if rec.replayed || unknown {
        let by_backend = crate::telemetry::metrics::by_backend(rec.backend.as_ref());
        if rec.replayed {
            m.replays.add(1, &by_backend);
        } else {
            m.outcome_unknown.add(1, &by_backend);
        }
    }
}

pub(crate) fn record_span(rec: &Record, status: StatusCode, outcome: &'static str) {
    let span = tracing::Span::current();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    if let Some(i) = &rec.integrator {
        span.record("integrator", &**i);
    }
    if let Some(l) = rec.lpu {
        span.record("lpu", tracing::field::display(l));
    }
    if let Some(b) = &rec.backend {
        span.record("backend", &**b);
    }
    if let Some(s) = rec.slot {
        span.record("slot", tracing::field::display(s));
    }
    if let Some(a) = rec.appointment {
        span.record("appointment", tracing::field::display(a));
    }
    if let Some(c) = &rec.code {
        span.record("message_code", &**c);
    }
    span.record("outcome", outcome);
}

pub(crate) fn log_access(ids: &Ids, rec: &Record, resp: &Response<Full<Bytes>>, took: Duration) {
    let status = resp.status();
    let request_id = ids.request_id.as_str();
    let trace_id = ids.trace_id();
    macro_rules! event {
        ($lvl:expr) => {
            tracing::event!(
                target: "access",
                $lvl,
                request_id,
                trace_id,
                operation = rec.operation,
                client = rec.client.map(tracing::field::display),
                integrator = rec.integrator.as_deref(),
                lpu = rec.lpu.map(tracing::field::display),
                slot = rec.slot.map(tracing::field::display),
                backend = rec.backend.as_deref(),
                appointment = rec.appointment.map(tracing::field::display),
                status = status.as_u16(),
                code = rec.code.as_deref(),
                replayed = rec.replayed,
                mis_status = rec.mis_status,
                mis_ms = rec.mis_time.map(|d| d.as_secs_f64() * 1e3),
                total_ms = took.as_secs_f64() * 1e3,
                "booking"
            )
        };
    }
    if status.is_server_error() {
        event!(tracing::Level::WARN);
    } else {
        event!(tracing::Level::INFO);
    }
}
