//! The only outbound I/O: per MIS backend, a connection pool (`crate::upstream::pool`) for each
//! worker thread.
//!
//! Failures are classified by what the MIS may have seen, because that decides whether a booking
//! can be retried: a connect error means nothing was sent ([`GatewayError::MisUnreachable`]);
//! anything after the request was handed to a connection means the booking may exist
//! ([`GatewayError::OutcomeUnknown`], [`GatewayError::MisTimeout`]). The only retries are the
//! pool's resend of a request whose idle connection turned out dead before a byte was written,
//! and one fresh connection after a refused connect.

pub mod h1;
pub(crate) mod pool;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::Semaphore;
use tokio::time::timeout;

use opentelemetry::trace::TraceContextExt;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{Backend, On5xx};
use crate::error::GatewayError;
use crate::policy::guard::Guard;
use crate::upstream::h1::BodyError;
use crate::upstream::pool::{Outgoing, Pool, SendError, Target};

/// A MIS answer read in full, within the backend's size cap.
#[derive(Debug)]
pub struct MisAnswer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// A backend and its connection pools. Pools live as long as the `Upstream`; a reload that keeps
/// a backend's URL keeps its `Upstream` (see [`Upstream::reusable_for`]).
pub struct Upstream {
    pub backend: Arc<Backend>,
    /// Concurrency cap and breaker; shared with the generations that keep this pool.
    pub guard: Arc<Guard>,
    connector: HttpsConnector<HttpConnector>,
    /// One pool per worker thread (slot [`crate::edge::workers::index`], modulo the length; slot 0
    /// serves threads that are not workers), made on first use. A MIS socket is registered with
    /// the runtime that opened it (and an HTTP/2 connection's task runs there): a booking that
    /// used another thread's connection would be woken through that thread.
    pools: Arc<[OnceLock<Arc<Pool>>]>,
    /// One permit per connection in use at once (`max_connections`), shared by the worker
    /// pools: a booking holds one from before its request is handed to a pool until its answer
    /// is read, so no more than that many connections carry bookings to a MIS, however many
    /// are admitted (each worker may keep up to as many idle).
    connections: Arc<Semaphore>,
}

impl Upstream {
    pub fn new(backend: Arc<Backend>) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(backend.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(
                backend
                    .tls
                    .as_ref()
                    .map_or_else(|| default_tls().clone(), |t| (*t.config).clone()),
            )
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Upstream {
            connections: Arc::new(Semaphore::new(backend.limits.max_connections)),
            backend,
            guard: Arc::default(),
            connector,
            // A slot per possible worker (and one for threads that are not workers): sized by
            // the CPU count, more `--worker-threads` than CPUs made workers share a pool.
            pools: (0..=crate::edge::workers::MAX_WORKERS)
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// The calling thread's pool.
    fn pool(&self) -> &Pool {
        let slot = &self.pools[crate::edge::workers::index() % self.pools.len()];
        slot.get_or_init(|| {
            let pool = Arc::new(Pool::new(
                self.connector.clone(),
                self.backend.appointments_uri.clone(),
                self.backend.limits.max_connections,
            ));
            Pool::reap_idle(Arc::downgrade(&pool));
            pool
        })
    }

    /// Connections in use for bookings right now (at most `max_connections`).
    pub fn connections_busy(&self) -> usize {
        self.backend
            .limits
            .max_connections
            .saturating_sub(self.connections.available_permits())
    }

    /// Whether this pool can serve `next` (same address and transport settings).
    pub fn reusable_for(&self, next: &Backend) -> bool {
        self.backend.appointments_uri == next.appointments_uri
            && self.backend.connect_timeout == next.connect_timeout
            && self.backend.tls == next.tls
    }

    /// A copy of this upstream that keeps its pool but uses `next`'s settings (credentials,
    /// zone, timeouts, limits): what a reload does when a backend's URL did not change. A new
    /// `max_connections` takes effect for bookings that start after the reload.
    pub fn with_backend(&self, next: Arc<Backend>) -> Self {
        let connections = if next.limits.max_connections == self.backend.limits.max_connections {
            self.connections.clone()
        } else {
            Arc::new(Semaphore::new(next.limits.max_connections))
        };
        Upstream {
            backend: next,
            guard: self.guard.clone(),
            connector: self.connector.clone(),
            pools: self.pools.clone(),
            connections,
        }
    }

    /// POSTs a booking body to `{url}/dir/appointments` and reads the whole answer.
    ///
    /// A connection refused at once is tried once more on a fresh connection: nothing was
    /// sent, and a MIS restarting behind a balancer often accepts the next attempt. Nothing is
    /// ever resent after a connection was established.
    pub async fn book(
        &self,
        body: &Bytes,
        request_id: &HeaderValue,
        traceparent: Option<&HeaderValue>,
        tracestate: Option<&HeaderValue>,
    ) -> Result<MisAnswer, GatewayError> {
        self.call(body, None, request_id, traceparent, tracestate)
            .await
    }

    /// Sends `DELETE {url}/dir/appointments/{guid}?reason={reason}` and reads the whole
    /// answer, on the same connections and terms as a booking.
    pub async fn cancel(
        &self,
        guid: &uuid::Uuid,
        reason: &str,
        request_id: &HeaderValue,
        traceparent: Option<&HeaderValue>,
        tracestate: Option<&HeaderValue>,
    ) -> Result<MisAnswer, GatewayError> {
        let base = &self.backend.appointments_uri;
        let uri = format!(
            "{}://{}{}/{}?reason={reason}",
            base.scheme_str().unwrap_or("http"),
            base.authority().map_or("", |a| a.as_str()),
            base.path().trim_end_matches('/'),
            guid.hyphenated()
        );
        let uri = http::Uri::try_from(uri).map_err(|_| GatewayError::Internal)?;
        let target = Target::bodyless(http::Method::DELETE, uri);
        self.call(
            &Bytes::new(),
            Some(&target),
            request_id,
            traceparent,
            tracestate,
        )
        .await
    }

    /// One request to the MIS (the booking `POST`, or `target`) under its client span.
    async fn call(
        &self,
        body: &Bytes,
        target: Option<&Target>,
        request_id: &HeaderValue,
        traceparent: Option<&HeaderValue>,
        tracestate: Option<&HeaderValue>,
    ) -> Result<MisAnswer, GatewayError> {
        let b = &self.backend;
        let uri = target.map_or(&b.appointments_uri, |t| &t.uri);
        let method = target.map_or("POST", |t| t.method.as_str());
        let span = if crate::telemetry::exporting() {
            tracing::info_span!(
                "mis",
                otel.name = method,
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                http.request.method = method,
                server.address = uri.host().unwrap_or_default(),
                server.port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 }),
                url.full = %uri,
                backend = &*b.name,
                http.response.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        // The MIS sees the client span as its parent; without one, `traceparent` (the
        // request's own span, or the integrator's header when there is no trace context).
        let own = if span.is_none() {
            None
        } else {
            crate::telemetry::traceparent(&span.context().span().span_context().clone())
        };
        let traceparent = own.as_ref().or(traceparent);
        // Without an exporter the span is none: no `Instrumented` around the attempt, whose
        // future would otherwise be copied into the wrapper and then into this one's state.
        let result = if span.is_none() {
            self.attempt(body, target, request_id, traceparent, tracestate)
                .await
        } else {
            self.attempt(body, target, request_id, traceparent, tracestate)
                .instrument(span.clone())
                .await
        };
        match &result {
            Ok(a) => {
                span.record("http.response.status_code", a.status.as_u16());
                if a.status.is_server_error() {
                    span.record("otel.status_code", "error");
                }
            }
            Err(e) => {
                span.record("error.type", e.name());
                span.record("otel.status_code", "error");
            }
        }
        result
    }

    /// A connection permit, then the exchange; once more on a fresh connection if the first
    /// was refused at once.
    async fn attempt(
        &self,
        body: &Bytes,
        target: Option<&Target>,
        request_id: &HeaderValue,
        traceparent: Option<&HeaderValue>,
        tracestate: Option<&HeaderValue>,
    ) -> Result<MisAnswer, GatewayError> {
        let b = &self.backend;
        // A free connection first: nothing is sent while waiting, so running out of time here
        // is the same safe refusal as a full max_in_flight. (A permit free at once needs no
        // timer.)
        let _connection = match self.connections.try_acquire() {
            Ok(permit) => permit,
            Err(_) => match timeout(b.connect_timeout, self.connections.acquire()).await {
                Ok(Ok(permit)) => permit,
                _ => {
                    return Err(GatewayError::Overloaded {
                        retry_after_secs: 1,
                    });
                }
            },
        };
        let started = tokio::time::Instant::now();
        match self
            .exchange(body, target, request_id, traceparent, tracestate, started)
            .await
        {
            Err(GatewayError::MisUnreachable) if started.elapsed() < b.connect_timeout / 2 => {
                tracing::debug!(backend = %b.name, "connection refused; one retry on a fresh connection");
                let again = tokio::time::Instant::now();
                self.exchange(body, target, request_id, traceparent, tracestate, again)
                    .await
            }
            other => other,
        }
    }

    /// One request to the MIS and its whole answer, its time limits counted from `start`.
    async fn exchange(
        &self,
        body: &Bytes,
        target: Option<&Target>,
        request_id: &HeaderValue,
        traceparent: Option<&HeaderValue>,
        tracestate: Option<&HeaderValue>,
        start: tokio::time::Instant,
    ) -> Result<MisAnswer, GatewayError> {
        let b = &self.backend;
        let out = Outgoing {
            body,
            target,
            authorization: &b.authorization,
            request_id,
            traceparent,
            tracestate,
        };
        let limit = b.max_response_bytes;
        let pool = self.pool();
        // One timer for both limits, both counted from `start`: first the answer's headers
        // (headers_timeout, at most the timeout), then the whole answer (timeout).
        let deadline = tokio::time::sleep_until(start + b.headers_timeout.min(b.timeout));
        tokio::pin!(deadline);
        // `select!` here rather than in a helper taking the future: an async fn's argument is
        // kept in its state twice (as passed, and moved to where it is polled), and this
        // future is moved, whole, with every booking's.
        let sent = tokio::select! {
            biased;
            sent = pool.send(&out, start.into_std()) => Some(sent),
            () = deadline.as_mut() => None,
        };
        let answer = match sent {
            None => return Err(GatewayError::MisTimeout),
            Some(Err(SendError::Connect(e))) if tls_error(&*e).is_some() => {
                return Err(GatewayError::MisTls);
            }
            Some(Err(SendError::Connect(_))) => return Err(GatewayError::MisUnreachable),
            // TLS 1.3 lets the client finish its side of the handshake before the server
            // checks the client's certificate: a refusal then arrives as an alert on the
            // first read. The server never accepted the connection, so nothing was booked.
            Some(Err(SendError::Sent(e))) if is_tls_refusal(&e) => {
                return Err(GatewayError::MisTls);
            }
            Some(Err(SendError::Sent(_))) => return Err(GatewayError::OutcomeUnknown),
            Some(Ok(answer)) => answer,
        };
        let status = answer.status();
        if answer.declared_length().is_some_and(|n| n > limit as u64) {
            return Err(unreadable(status, b.on_5xx));
        }
        deadline.as_mut().reset(start + b.timeout);
        let read = tokio::select! {
            biased;
            read = answer.read_body(limit) => Some(read),
            () = deadline => None,
        };
        let body = match read {
            None => return Err(GatewayError::MisTimeout),
            Some(Ok((body, conn))) => {
                if let Some(conn) = conn {
                    pool.release(conn, start.into_std());
                }
                body
            }
            Some(Err(BodyError::TooLarge | BodyError::Broken(_))) => {
                return Err(unreadable(status, b.on_5xx));
            }
        };
        Ok(MisAnswer { status, body })
    }
}

/// The TLS client settings of backends without their own: the system's roots, ring as the
/// provider. Built once: reading the system store for each of hundreds of backends would make
/// every reload slow.
fn default_tls() -> &'static rustls::ClientConfig {
    static TLS: OnceLock<rustls::ClientConfig> = OnceLock::new();
    TLS.get_or_init(|| {
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .with_root_certificates(crate::config::tls::system_roots().clone())
        .with_no_client_auth()
    })
}

/// Whether the server refused the TLS handshake with an alert about certificates or the
/// handshake itself.
fn is_tls_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    use rustls::AlertDescription as A;
    tls_error(e).is_some_and(|t| {
        matches!(
            t,
            rustls::Error::AlertReceived(
                A::CertificateRequired
                    | A::BadCertificate
                    | A::UnsupportedCertificate
                    | A::CertificateRevoked
                    | A::CertificateExpired
                    | A::CertificateUnknown
                    | A::UnknownCA
                    | A::HandshakeFailure
                    | A::AccessDenied
            )
        )
    })
}

/// The rustls error somewhere in `e`'s chain, directly or inside an `io::Error`.
fn tls_error<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        // io::Error hides what it wraps from source(): descend into it explicitly.
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// An answer whose body cannot be read (too large, cut short, badly framed): a success may
/// still be a booking, and so may a 5xx from a MIS that does not roll back (`on_5xx`).
fn unreadable(status: StatusCode, on_5xx: On5xx) -> GatewayError {
    if status.is_success() || (status.is_server_error() && on_5xx == On5xx::Unknown) {
        GatewayError::OutcomeUnknown
    } else {
        GatewayError::MisBadAnswer
    }
}
