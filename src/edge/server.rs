//! Listeners: accept TCP connections and serve HTTP/1.1 and HTTP/2 on them, with a drain on
//! shutdown. Both the booking listener and the admin listener run through [`serve`].
//!
//! The per-connection stack, outermost first:
//! 0. one deadline from accept to the first request head, whatever the protocol (a PROXY
//!    header, a TLS handshake, an HTTP/2 preface and SETTINGS all count against it), and a
//!    connection with no request in flight for the header timeout is closed (HTTP/1.1 and
//!    HTTP/2 alike: a silent HTTP/2 or TLS session cannot hold a place under the cap);
//!    with `proxy_protocol`, a trusted balancer's PROXY header (within that deadline),
//!    then the client's address for every request (`crate::edge::client_addr`); the byte stream
//!    wrapped so hyper's own refusals go out in the error shape (`crate::edge::http_refusals`).
//! 1. hyper's connection with a timer installed, so `header_read_timeout` really fires
//!    (slowloris); header count and size capped.
//! 2. `catch_unwind` around each request's handler (`service`): a bug in a handler becomes
//!    a 500 in the error shape, not a dropped connection (and nothing of the request is echoed).
//! 3. The handler, whose error type is `Infallible`: every failure is already a response.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::edge::client_addr::Proxies;
use crate::edge::drain::{Drain, Watcher};
use crate::edge::http_refusals::Refusals;
use crate::edge::workers::Workers;
use crate::error::GatewayError;

/// Connection-level limits of one listener.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub max_headers: usize,
    /// Cap on the bytes of a request head hyper buffers (HTTP/1) or the header list (HTTP/2).
    pub max_header_bytes: usize,
    /// Open connections at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Open connections from one client address (an IPv6 client: its /64) at once; balancers
    /// in `proxies` are not counted. More are refused like connections over the cap.
    pub max_connections_per_client: usize,
    /// Threads that serve the connections, each with its own single-threaded runtime (see
    /// [`crate::edge::workers`]); 0: the connections are served on the caller's runtime.
    pub workers: usize,
    /// Where the worker threads run ([`crate::edge::workers::Placement`]).
    pub placement: crate::edge::workers::Placement,
    /// The balancers whose word on the client's address is taken.
    pub proxies: Arc<Proxies>,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_read_timeout: Duration::from_secs(10),
            max_headers: 64,
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            max_connections_per_client: 2_500,
            workers: 0,
            placement: crate::edge::workers::Placement::default(),
            proxies: Arc::default(),
        }
    }
}

/// The TLS settings a new connection uses, read when it is accepted (so a reload that
/// rotates certificates applies to every later connection). `None`: plain TCP.
pub type TlsSource = Arc<dyn Fn() -> Option<Arc<rustls::ServerConfig>> + Send + Sync>;

/// Anything that turns a request into a response without failing.
pub trait Handler: Send + Sync + 'static {
    /// `peer`: the client's address. (An argument, not a request extension: inserting one
    /// costs every request two allocations.)
    fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send;

    /// The drain began (before connections are told to finish).
    fn drain_started(&self) {}

    /// The drain deadline passed with connections open; true if their requests will now
    /// answer (the drain then waits up to [`EXPIRY_GRACE`] for those answers to go out).
    fn drain_expired(&self) -> bool {
        false
    }
}

/// How long answers cut by a drain's deadline get to be recorded and written.
pub const EXPIRY_GRACE: Duration = Duration::from_secs(3);

/// Serves `handler` on `listener` over plain TCP until `shutdown` resolves (see [`serve_tls`]).
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: ConnLimits,
    shutdown: F,
    drain: Duration,
) where
    H: Handler,
    F: Future<Output = ()>,
{
    serve_tls(listener, handler, limits, None, shutdown, drain).await
}

/// Serves `handler` on `listener`, over TLS when `tls` yields a config, until `shutdown`
/// resolves; then stops accepting and gives open connections `drain` to finish their requests.
pub async fn serve_tls<H, F>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: ConnLimits,
    tls: Option<TlsSource>,
    shutdown: F,
    drain: Duration,
) where
    H: Handler,
    F: Future<Output = ()>,
{
    let connections = Drain::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = Arc::new(PerClient::new(limits.max_connections_per_client));
    let workers = match limits.workers {
        0 => None,
        n => match Workers::start(n, limits.placement) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "worker threads failed to start; serving on the main runtime");
                None
            }
        },
    };
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::time::Instant::now();
        let _ = stream.set_nodelay(true);
        let tls_config = tls.as_ref().and_then(|t| t());
        let client_slot = if limits.proxies.trusts(peer.ip()) {
            Some(None)
        } else {
            per_client.enter(peer.ip()).map(Some)
        };
        let (Ok(slot), Some(client_slot)) = (slots.clone().try_acquire_owned(), client_slot) else {
            tokio::spawn(refuse(stream, tls_config.is_some()));
            continue;
        };
        let conn = Conn {
            peer,
            accepted,
            handler: handler.clone(),
            limits: limits.clone(),
            tls: tls_config,
            watcher: connections.watcher(),
            _slot: slot,
            _client_slot: client_slot,
        };
        match &workers {
            None => {
                tokio::spawn(conn.serve(stream));
            }
            // The socket moves to the worker's reactor: out of this runtime's as a std
            // socket (still non-blocking), into the worker's on its first poll there.
            Some(w) => match stream.into_std() {
                Ok(stream) => {
                    w.serve(async move {
                        match tokio::net::TcpStream::from_std(stream) {
                            Ok(stream) => conn.serve(stream).await,
                            Err(e) => tracing::warn!(error = %e, "a connection could not move to its worker"),
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "a connection could not move to its worker"),
            },
        }
    }
    drop(listener);
    handler.drain_started();
    if tokio::time::timeout(drain, connections.shutdown())
        .await
        .is_err()
    {
        let answering = handler.drain_expired();
        let closed = answering
            && tokio::time::timeout(EXPIRY_GRACE, connections.shutdown())
                .await
                .is_ok();
        if !closed {
            tracing::warn!(
                ?drain,
                "drain deadline passed with connections still open; closing them"
            );
        } else {
            tracing::warn!(
                ?drain,
                "drain deadline passed: requests still running were answered as cut short"
            );
        }
    }
    if let Some(w) = workers {
        w.stop().await;
    }
}

/// One accepted connection and what serving it needs.
struct Conn<H> {
    peer: SocketAddr,
    /// When it was accepted: the first request head is due `header_read_timeout` after.
    accepted: tokio::time::Instant,
    handler: Arc<H>,
    limits: ConnLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    watcher: Watcher,
    /// Its place under `max_connections`, given back when the connection ends.
    _slot: tokio::sync::OwnedSemaphorePermit,
    /// Its place under its client's `max_connections_per_client` (none: a trusted balancer).
    _client_slot: Option<ClientSlot>,
}

impl<H: Handler> Conn<H> {
    /// Serves the connection until the client closes it, it times out or the drain ends it.
    async fn serve(self, mut stream: tokio::net::TcpStream) {
        let Conn {
            peer,
            accepted,
            handler,
            limits,
            tls,
            watcher,
            _slot,
            _client_slot,
        } = self;
        let builder = builder(&limits);
        let deadline = accepted + limits.header_read_timeout;
        let activity = Arc::new(Activity::new());
        // A balancer's PROXY header precedes everything, the TLS handshake included.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let peer = match limits.proxies.accept(&mut stream, peer, left).await {
            Ok(client) => client,
            Err(e) => {
                tracing::info!(%peer, error = %e, "connection refused before HTTP");
                return;
            }
        };
        let proxies = limits.proxies.clone();
        let idle = limits.header_read_timeout;
        let result = match tls {
            None => {
                // hyper's header timer starts with the first byte: a client that connects
                // and sends nothing would hold the connection forever without this wait.
                let mut first = [0u8; 1];
                match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return,
                }
                let conn = watcher.watch(builder.serve_connection(
                    TokioIo::new(Refusals::new(stream)),
                    service(handler, peer, proxies, activity.clone()),
                ));
                until_idle(conn, &activity, deadline, idle, peer).await
            }
            Some(config) => {
                let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                match tokio::time::timeout_at(deadline, accept).await {
                    Ok(Ok(tls)) => {
                        let conn = watcher.watch(builder.serve_connection(
                            TokioIo::new(Refusals::new(tls)),
                            service(handler, peer, proxies, activity.clone()),
                        ));
                        until_idle(conn, &activity, deadline, idle, peer).await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// What a connection does, for the idle watch: requests in flight, whether one ever came, and
/// when the last one ended.
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    seen: std::sync::atomic::AtomicBool,
    /// Milliseconds after `base` when the last request ended.
    last_ms: std::sync::atomic::AtomicU64,
    base: tokio::time::Instant,
}

/// Held while a request is served; ends it on drop.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: Default::default(),
            seen: Default::default(),
            last_ms: Default::default(),
            base: tokio::time::Instant::now(),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        use std::sync::atomic::Ordering;
        self.seen.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        let a = &self.0;
        a.last_ms
            .store(a.base.elapsed().as_millis() as u64, Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `conn` until it ends, or until it holds its place without use: no first request by
/// `deadline`, or no request in flight for `idle` (an HTTP/2 session kept open with pings or a
/// zero window, a silent TLS session). Such a connection is closed, not drained: nothing of it
/// is in flight.
async fn until_idle<F, T>(
    conn: F,
    activity: &Activity,
    deadline: tokio::time::Instant,
    idle: Duration,
    peer: SocketAddr,
) -> Result<(), T>
where
    F: Future<Output = Result<(), T>>,
{
    use std::sync::atomic::Ordering;
    let watch = async {
        loop {
            let now = tokio::time::Instant::now();
            let due = if !activity.seen.load(Ordering::Relaxed) {
                deadline
            } else if activity.in_flight.load(Ordering::Relaxed) > 0 {
                now + idle
            } else {
                activity.base
                    + Duration::from_millis(activity.last_ms.load(Ordering::Relaxed))
                    + idle
            };
            if due <= now {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    };
    tokio::select! {
        r = conn => r,
        () = watch => {
            tracing::debug!(%peer, "connection closed: no request within the header timeout");
            Ok(())
        }
    }
}

/// Open connections per client, counted as the login throttle counts clients
/// ([`crate::policy::auth::client_group`]: an IPv6 client by its /64, one host has many).
struct PerClient {
    max: usize,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// A connection's place under its client's cap.
struct ClientSlot {
    owner: Arc<PerClient>,
    key: std::net::IpAddr,
}

impl PerClient {
    fn new(max: usize) -> PerClient {
        PerClient {
            max: max.max(1),
            open: Default::default(),
        }
    }

    fn enter(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<ClientSlot> {
        let key = crate::policy::auth::client_group(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            owner: self.clone(),
            key,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Over a connection cap: a short 503 in the error shape instead of a silent reset, then close.
/// A TLS listener closes without a word: a plaintext answer on a TLS socket is garbage to its
/// client, and a handshake only to refuse would spend the CPU the cap protects.
async fn refuse(mut stream: tokio::net::TcpStream, tls: bool) {
    use tokio::io::AsyncWriteExt;
    if tls {
        let _ = stream.shutdown().await;
        return;
    }
    let busy = crate::edge::http_refusals::render(
        GatewayError::Overloaded {
            retry_after_secs: 1,
        }
        .into_response(&crate::error::RequestId::new(), None),
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&busy).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The handler as hyper's service. Each request's future is created and polled under
/// `catch_unwind`: a bug in a handler becomes a 500 in the error shape, logged without anything
/// of the request, and the connection goes on. (What tower-http's `CatchPanicLayer` does, with
/// none of the tower adapter's layers around every request's future.)
fn service<H: Handler>(
    handler: Arc<H>,
    peer: SocketAddr,
    proxies: Arc<Proxies>,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
> + 'static {
    use futures_util::FutureExt;
    use futures_util::future::{Either, ready};
    use std::panic::{AssertUnwindSafe, catch_unwind};
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        let busy = activity.begin();
        // Behind a trusted proxy (without the PROXY protocol) the client is in X-Forwarded-For.
        let client = proxies.client(peer.ip(), req.headers());
        let from = if client == peer.ip() {
            peer
        } else {
            SocketAddr::new(client, 0)
        };
        match catch_unwind(AssertUnwindSafe(|| handler.call(req, from))) {
            Ok(answer) => {
                Either::Left(AssertUnwindSafe(answer).catch_unwind().map(move |answer| {
                    drop(busy);
                    Ok::<_, Infallible>(answer.unwrap_or_else(|_| panicked()))
                }))
            }
            Err(_) => Either::Right(ready(Ok(panicked()))),
        }
    })
}

/// The answer to a request whose handler panicked.
fn panicked() -> Response<Full<Bytes>> {
    tracing::error!("a request handler panicked");
    GatewayError::Internal.into_response(&crate::error::RequestId::new(), None)
}

fn builder(limits: &ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // writev(false): an answer (headers and a body of a few hundred bytes) is copied into one
    // buffer and goes out in one send(2); writev(2) costs more in the kernel than the copy.
    builder
        .http1()
        .writev(false)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(128);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// Panics while making its future (`/call`), while it is polled (`/poll`), or answers 200.
    struct Fragile;

    impl Handler for Fragile {
        fn call(
            self: Arc<Self>,
            req: Request<Incoming>,
            _peer: SocketAddr,
        ) -> impl Future<Output = Response<Full<Bytes>>> + Send {
            let path = req.uri().path().to_owned();
            if path == "/call" {
                panic!("a bug while making the future");
            }
            async move {
                tokio::task::yield_now().await;
                if path == "/poll" {
                    panic!("a bug while polled");
                }
                Response::new(Full::new(Bytes::from_static(b"fine")))
            }
        }
    }

    /// `/slow` answers once the test lets it (saying when it has begun); anything else at once.
    struct Gated {
        begun: tokio::sync::mpsc::UnboundedSender<()>,
        gate: Arc<tokio::sync::Semaphore>,
    }

    impl Handler for Gated {
        async fn call(
            self: Arc<Self>,
            req: Request<Incoming>,
            _peer: SocketAddr,
        ) -> Response<Full<Bytes>> {
            if req.uri().path() == "/slow" {
                let _ = self.begun.send(());
                let _ = self.gate.acquire().await;
            }
            Response::new(Full::new(Bytes::from_static(b"done")))
        }
    }

    async fn connect(
        addr: SocketAddr,
    ) -> (
        hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        tokio::task::JoinHandle<hyper::Result<()>>,
    ) {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        (send, tokio::spawn(conn))
    }

    fn get(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
        Request::get(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    #[tokio::test]
    async fn a_drain_closes_idle_connections_at_once_and_busy_ones_after_their_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (begun_tx, mut begun) = tokio::sync::mpsc::unbounded_channel();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let handler = Arc::new(Gated {
            begun: begun_tx,
            gate: gate.clone(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // Deadlines far beyond the bound below (an idle connection is also closed when the
        // header read timeout passes): the connections must end by the drain itself.
        let server = tokio::spawn(serve(
            listener,
            handler,
            ConnLimits {
                header_read_timeout: Duration::from_secs(600),
                ..ConnLimits::default()
            },
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(600),
        ));
        let bound = Duration::from_secs(20);

        // One connection idle after an answer, one with a request in flight.
        let (mut idle, idle_conn) = connect(addr).await;
        assert_eq!(
            idle.send_request(get(addr, "/fast"))
                .await
                .unwrap()
                .status(),
            200
        );
        let (mut busy, busy_conn) = connect(addr).await;
        let in_flight = tokio::spawn(async move { busy.send_request(get(addr, "/slow")).await });
        begun.recv().await.unwrap();

        let _ = stop.send(());
        // The idle connection is closed by the server without a request.
        tokio::time::timeout(bound, idle_conn)
            .await
            .expect("the idle connection is closed by the drain")
            .unwrap()
            .unwrap();
        assert!(!server.is_finished(), "a request is still in flight");
        // The request in flight is answered, then its connection closes and serving ends.
        gate.add_permits(1);
        let answer = tokio::time::timeout(bound, in_flight)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(answer.status(), 200);
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "done");
        tokio::time::timeout(bound, busy_conn)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        tokio::time::timeout(bound, server)
            .await
            .expect("serving ends once the last connection closed")
            .unwrap();
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_the_error_shape_and_the_connection_goes_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Arc::new(Fragile),
            ConnLimits::default(),
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(1),
        ));
        let (mut send, _conn) = connect(addr).await;
        // All three on the one connection: a panic does not cost the client its connection.
        for (path, status, body) in [
            ("/poll", 500, None),
            ("/call", 500, None),
            ("/ok", 200, Some("fine")),
        ] {
            send.ready().await.unwrap();
            let resp = send.send_request(get(addr, path)).await.unwrap();
            assert_eq!(resp.status(), status, "{path}");
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            match body {
                Some(text) => assert_eq!(bytes, text),
                None => {
                    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    assert_eq!(v["Code"], 500, "{path}: {v}");
                    assert_eq!(v["Message_code"], "95000", "{path}: {v}");
                    assert!(v["requestId"].is_string(), "{path}: {v}");
                }
            }
        }
        let _ = stop.send(());
        server.await.unwrap();
    }
}
