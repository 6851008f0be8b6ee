//! Logs and traces. Events and spans carry technical identifiers only — request and trace ids,
//! integrator login, LPU, backend, slot and appointment GUIDs, status and code, durations —
//! never a body, a name, a header value or a query string.
//!
//! Traces go out over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, http:// or https:// (the system's roots, or
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`); the spec's variables win over the defaults here (see
//! [`ExportSettings`]). Spans are batched on a bounded
//! queue by the SDK's own thread: a collector that is down or slow drops spans, never slows a
//! booking. Without an endpoint no spans are made, but every request still gets a W3C trace
//! context (the integrator's trace, or a new one; see [`child_of`]) for error bodies, logs and
//! the `traceparent` sent to the MIS.

pub(crate) mod log_format;
pub(crate) mod log_writer;
pub(crate) mod metrics;
pub mod request;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The W3C trace context header's name.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// The W3C vendor trace state, forwarded with `traceparent` as it came.
pub const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// The W3C `tracestate` header of `sc`: the integrator's entries when its `traceparent` was
/// valid (the propagator drops a malformed list), `None` when there are none.
pub fn tracestate(sc: &opentelemetry::trace::SpanContext) -> Option<http::HeaderValue> {
    let state = sc.trace_state().header();
    if state.is_empty() {
        return None;
    }
    http::HeaderValue::from_str(&state).ok()
}

/// The trace id (32 hex digits) in a `traceparent` value [`traceparent`] wrote: cut from the
/// header, not formatted a second time.
pub fn trace_id(traceparent: &http::HeaderValue) -> Option<&str> {
    // `00-<trace id>-<span id>-<flags>`.
    traceparent.to_str().ok()?.get(3..35)
}

/// The W3C `traceparent` header of `sc` (`00-<trace id>-<span id>-<flags>`), or `None` when
/// the context is not valid. Written straight into a buffer (the propagator's injector
/// formats into a `String` and a header map per call), and shared: a clone of the value only
/// counts a reference.
pub fn traceparent(sc: &opentelemetry::trace::SpanContext) -> Option<http::HeaderValue> {
    if !sc.is_valid() {
        return None;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 52];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        for b in bytes {
            out[at] = HEX[usize::from(b >> 4)];
            out[at + 1] = HEX[usize::from(b & 15)];
            at += 2;
        }
    };
    put(&[0]);
    put(&sc.trace_id().to_bytes());
    put(&sc.span_id().to_bytes());
    put(&[sc.trace_flags().to_u8()]);
    // 00 trace-id span-id flags: dashes after the 2nd, 34th and 51st characters.
    let mut header = [b'-'; 55];
    header[..2].copy_from_slice(&out[..2]);
    header[3..35].copy_from_slice(&out[2..34]);
    header[36..52].copy_from_slice(&out[34..50]);
    header[53..55].copy_from_slice(&out[50..52]);
    http::HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(header)).ok()
}

/// A new span context under `parent`'s span, as the SDK's tracer makes one with its default
/// parent-based sampler: the parent's trace id, flags and trace state when it has a valid span
/// context, else a new sampled trace; always a new span id.
pub fn child_of(parent: &opentelemetry::Context) -> opentelemetry::trace::SpanContext {
    use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    let ids = RandomIdGenerator::default();
    let p = parent.span().span_context().clone();
    let (trace_id, flags, state) = if p.is_valid() {
        (p.trace_id(), p.trace_flags(), p.trace_state().clone())
    } else {
        (
            ids.new_trace_id(),
            TraceFlags::SAMPLED,
            TraceState::default(),
        )
    };
    SpanContext::new(trace_id, ids.new_span_id(), flags, false, state)
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Spans waiting for export before new ones are dropped.
const SPAN_QUEUE: usize = 4096;
/// How long one export may take before it is abandoned, unless `OTEL_EXPORTER_OTLP_TIMEOUT`
/// says otherwise (the spec's default).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The installed telemetry; flush it before the process exits.
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    /// Flushes buffered log lines when dropped.
    log_guard: Option<crate::telemetry::log_writer::FlushGuard>,
}

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans are being exported (per-call client spans are only worth their cost then).
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

impl Telemetry {
    /// Installs logging to stderr and, if configured, trace export. Must run inside the tokio
    /// runtime that will carry the exports.
    pub fn init(format: LogFormat) -> Telemetry {
        use std::io::IsTerminal;
        let export = if otlp_configured() {
            Export::FromEnv
        } else {
            Export::Off
        };
        // Lines are buffered and written by a thread of their own every 50 ms: a request
        // never waits on stderr nor wakes a thread to log (see `log_writer`).
        let (writer, guard) = crate::telemetry::log_writer::spawn(std::io::stderr());
        let mut t = Self::install(format, writer, export, std::io::stderr().is_terminal());
        t.log_guard = Some(guard);
        t
    }

    /// As [`Telemetry::init`], with logs written to `writer` and export forced on or off.
    pub fn init_with<W>(format: LogFormat, writer: W, export: Export) -> Telemetry
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        Self::install(format, writer, export, false)
    }

    fn install<W>(format: LogFormat, writer: W, export: Export, ansi: bool) -> Telemetry
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        // The log layer sees events only: every event that matters carries its own fields, and
        // formatting span fields for each request would cost more than the access line itself.
        let filter = EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info"))
            .and(tracing_subscriber::filter::filter_fn(|meta| {
                // Nothing of rustls's own log, at any RUST_LOG: its messages quote what a client
                // sent before authenticating (an illegal SNI verbatim). The gateway logs a
                // failed handshake itself, without the client's bytes.
                meta.is_event() && !meta.target().starts_with("rustls")
            }));
        let line = match format {
            LogFormat::Json => crate::telemetry::log_format::LineFormat::json(),
            LogFormat::Text => crate::telemetry::log_format::LineFormat::text(ansi),
        };
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .event_format(line);
        let mut builder = SdkTracerProvider::builder().with_resource(resource());
        let exporting = export != Export::Off;
        if exporting {
            match exporter(&export) {
                Ok(exporter) => {
                    let config = BatchConfigBuilder::default()
                        .with_max_queue_size(SPAN_QUEUE)
                        .build();
                    builder = builder.with_span_processor(
                        BatchSpanProcessor::builder(exporter)
                            .with_batch_config(config)
                            .build(),
                    );
                }
                Err(e) => eprintln!("mis-gateway: trace export disabled: {e}"),
            }
        }
        let provider = builder.build();
        let tracer = provider.tracer("mis-gateway");
        // The trace layer sees the gateway's own spans whatever RUST_LOG says: turning logs
        // down must not turn tracing off.
        // Per poll of an instrumented future the layer would otherwise read the clock twice
        // (busy/idle times) and attach the span's context to a thread-local stack; nothing
        // here reads the active OpenTelemetry context (parents come from the span tree, the
        // MIS's traceparent from the span itself), and the MIS time has its own client span.
        let otel = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_context_activation(false)
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_filter(Targets::new().with_target("mis_gateway", tracing::Level::INFO));
        let _ = tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .with(otel)
            .try_init();
        EXPORTING.store(exporting, std::sync::atomic::Ordering::Relaxed);
        Telemetry {
            tracer_provider: exporting.then_some(provider),
            log_guard: None,
        }
    }

    /// Exports what is queued (used by tests and at shutdown). Blocks: call off the runtime.
    pub fn flush(&self) {
        if let Some(p) = &self.tracer_provider {
            let _ = p.force_flush();
        }
    }

    /// Flushes and stops the exporter. Blocks: call off the runtime.
    pub fn shutdown(self) {
        if let Some(p) = self.tracer_provider {
            let _ = p.shutdown();
        }
    }
}

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
}

/// The resource the spans carry: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` as the SDK
/// reads them; `mis-gateway` and this build's version only where they name none.
fn resource() -> opentelemetry_sdk::Resource {
    let attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    let named = |key: &str| {
        attributes
            .split(',')
            .any(|kv| kv.split_once('=').is_some_and(|(k, _)| k.trim() == key))
    };
    let mut builder = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_ok_and(|s| !s.is_empty()) || named("service.name") {
        // The detectors already read it.
    } else {
        builder = builder.with_service_name("mis-gateway");
    }
    if !named("service.version") {
        builder = builder.with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ));
    }
    builder.build()
}

/// The exporter's settings from the spec's variables, the traces-specific one first
/// (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, then `OTEL_EXPORTER_OTLP_TIMEOUT`, …). The endpoint and
/// headers are read by the exporter itself.
#[derive(Debug, PartialEq)]
pub struct ExportSettings {
    pub timeout: Duration,
    pub protocol: opentelemetry_otlp::Protocol,
    /// PEM roots to trust instead of the system's.
    pub certificate: Option<std::path::PathBuf>,
    /// PEM client certificate and key, for a collector that wants mTLS.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl ExportSettings {
    /// From `var` (the process environment, or a test's map).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<ExportSettings, String> {
        let get = |name: &str| {
            let traces = format!("OTEL_EXPORTER_OTLP_TRACES_{name}");
            let generic = format!("OTEL_EXPORTER_OTLP_{name}");
            [traces, generic]
                .into_iter()
                .find_map(|v| var(&v).filter(|s| !s.trim().is_empty()).map(|s| (v, s)))
        };
        let timeout = match get("TIMEOUT") {
            None => EXPORT_TIMEOUT,
            Some((v, ms)) => Duration::from_millis(
                ms.trim()
                    .parse()
                    .map_err(|_| format!("{v}={ms}: not a whole number of milliseconds"))?,
            ),
        };
        let protocol = match get("PROTOCOL") {
            None => opentelemetry_otlp::Protocol::HttpBinary,
            Some((v, p)) => match p.trim() {
                "http/protobuf" => opentelemetry_otlp::Protocol::HttpBinary,
                "http/json" => opentelemetry_otlp::Protocol::HttpJson,
                other => {
                    return Err(format!(
                        "{v}={other}: this build exports over HTTP only (http/protobuf or http/json)"
                    ));
                }
            },
        };
        let certificate = get("CERTIFICATE").map(|(_, p)| p.into());
        let client = match (get("CLIENT_CERTIFICATE"), get("CLIENT_KEY")) {
            (Some((_, c)), Some((_, k))) => Some((c.into(), k.into())),
            (None, None) => None,
            (Some((v, _)), None) | (None, Some((v, _))) => {
                return Err(format!(
                    "{v} is set without its pair (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and _CLIENT_KEY go together)"
                ));
            }
        };
        Ok(ExportSettings {
            timeout,
            protocol,
            certificate,
            client,
        })
    }

    /// The TLS client for an https:// collector.
    fn tls(&self) -> Result<rustls::ClientConfig, String> {
        let read = |path: &std::path::Path, what: &str| {
            std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
        };
        let ca = match &self.certificate {
            Some(p) => Some(read(p, "OTEL_EXPORTER_OTLP_CERTIFICATE")?),
            None => None,
        };
        let client = match &self.client {
            Some((c, k)) => Some((
                read(c, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")?,
                read(k, "OTEL_EXPORTER_OTLP_CLIENT_KEY")?,
            )),
            None => None,
        };
        let tls = crate::config::tls::client(
            ca.as_deref(),
            client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
            crate::config::tls::system_roots(),
        )
        .map_err(|e| {
            let e = e.replace("ca_file", "OTEL_EXPORTER_OTLP_CERTIFICATE");
            e.replace("client_cert", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")
                .replace("client_key", "OTEL_EXPORTER_OTLP_CLIENT_KEY")
        })?;
        Ok((*tls.config).clone())
    }
}

/// Where spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    Off,
    /// The endpoint named by the standard OTEL_EXPORTER_OTLP_* variables.
    FromEnv,
    /// This traces endpoint (a full URL such as `http://127.0.0.1:4318/v1/traces`).
    To(String),
}

/// The OTLP/HTTP exporter.
fn exporter(export: &Export) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let handle =
        tokio::runtime::Handle::try_current().map_err(|_| "no tokio runtime".to_string())?;
    let settings = ExportSettings::from_vars(|v| std::env::var(v).ok())?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(settings.tls()?)
        .https_or_http()
        .enable_http1()
        .build();
    let client = RuntimeClient {
        handle,
        inner: opentelemetry_http::hyper::HyperClient::new(connector, settings.timeout, None),
    };
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(settings.protocol)
        .with_timeout(settings.timeout)
        .with_http_client(client);
    if let Export::To(url) = export {
        builder = builder.with_endpoint(url.clone());
    }
    builder.build().map_err(|e| e.to_string())
}

/// The SDK exports from its own thread; hyper needs the tokio reactor. This client hands each
/// export to the application's runtime and waits for it there.
#[derive(Debug)]
struct RuntimeClient {
    handle: tokio::runtime::Handle,
    inner: opentelemetry_http::hyper::HyperClient<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    >,
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let inner = self.inner.clone();
        self.handle
            .spawn(async move { inner.send_bytes(request).await })
            .await?
    }
}

/// A log writer that keeps everything in memory (tests read it back).
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Captured {
    type Writer = Captured;
    fn make_writer(&'w self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    /// What the SDK's propagator injects for `sc`.
    fn injected(sc: &SpanContext) -> Option<String> {
        let cx = opentelemetry::Context::new().with_remote_span_context(sc.clone());
        let mut headers = http::HeaderMap::new();
        TraceContextPropagator::new()
            .inject_context(&cx, &mut opentelemetry_http::HeaderInjector(&mut headers));
        headers
            .get("traceparent")
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn the_specs_variables_win_and_the_traces_one_first() {
        use super::ExportSettings;
        use opentelemetry_otlp::Protocol;
        let from = |vars: &[(&str, &str)]| {
            let vars: std::collections::HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            ExportSettings::from_vars(|k| vars.get(k).cloned())
        };
        let none = from(&[]).unwrap();
        assert_eq!(none.timeout, std::time::Duration::from_secs(10));
        assert_eq!(none.protocol, Protocol::HttpBinary);
        assert_eq!((none.certificate, none.client), (None, None));
        let set = from(&[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "/etc/traces-ca.pem",
            ),
        ])
        .unwrap();
        assert_eq!(set.timeout, std::time::Duration::from_millis(2500));
        assert_eq!(set.protocol, Protocol::HttpJson);
        assert_eq!(set.certificate, Some("/etc/traces-ca.pem".into()));
        let traces = from(&[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700"),
        ])
        .unwrap();
        assert_eq!(traces.timeout, std::time::Duration::from_millis(700));
        for (vars, says) in [
            (
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")][..],
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TIMEOUT", "5s")][..],
                "OTEL_EXPORTER_OTLP_TIMEOUT=5s",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem")][..],
                "OTEL_EXPORTER_OTLP_CLIENT_KEY is set without",
            ),
        ] {
            let err = from(vars).unwrap_err();
            assert!(err.starts_with(says), "{err}");
        }
    }

    #[test]
    fn traceparent_is_what_the_propagator_would_inject() {
        for (trace, span, flags) in [
            (0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, 1),
            (0x0123456789abcdef0123456789abcdef, 0xfedcba9876543210, 0),
            (1, 1, 1),
            (u128::MAX, u64::MAX, 0),
        ] {
            let sc = SpanContext::new(
                TraceId::from(trace),
                SpanId::from(span),
                TraceFlags::new(flags),
                true,
                TraceState::default(),
            );
            let ours = super::traceparent(&sc).unwrap();
            assert_eq!(Some(ours.to_str().unwrap().to_owned()), injected(&sc));
            // The trace id cut from the header is the id's own 32-digit hex.
            assert_eq!(super::trace_id(&ours), Some(&*format!("{:032x}", trace)));
        }
        let invalid = SpanContext::empty_context();
        assert_eq!(super::traceparent(&invalid), None);
        assert_eq!(injected(&invalid), None);
    }

    #[test]
    fn a_child_keeps_the_parents_trace_and_flags_with_a_span_id_of_its_own() {
        for flags in [TraceFlags::SAMPLED, TraceFlags::default()] {
            let parent = SpanContext::new(
                TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736),
                SpanId::from(0x00f067aa0ba902b7),
                flags,
                true,
                TraceState::default(),
            );
            let cx = opentelemetry::Context::new().with_remote_span_context(parent.clone());
            let child = super::child_of(&cx);
            assert!(child.is_valid() && !child.is_remote());
            assert_eq!(child.trace_id(), parent.trace_id());
            assert_eq!(child.trace_flags(), flags);
            assert_ne!(child.span_id(), parent.span_id());
        }
        // No parent: a new sampled trace each time.
        let (a, b) = (
            super::child_of(&opentelemetry::Context::new()),
            super::child_of(&opentelemetry::Context::new()),
        );
        assert!(a.is_valid() && a.is_sampled());
        assert_ne!(a.trace_id(), b.trace_id());
        assert_ne!(a.span_id(), b.span_id());
    }
}

/// Log lines a test's subscriber wrote, read back as text (`with_writer(move || lines.clone())`).
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct TestLines(Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl TestLines {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("log lines are UTF-8")
    }
}

#[cfg(test)]
impl std::io::Write for TestLines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
