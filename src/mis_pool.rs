//! The MIS connections of one worker thread: hyper's connection API with a small idle list and
//! one reaper task that closes connections idle for [`IDLE_TIMEOUT`].
//!
//! Each worker thread has its own [`Pool`] per backend (see [`crate::upstream`]), so the list is
//! only ever locked by its own thread. Compared with hyper-util's pooling client this spends no
//! task per request on returning a connection, keeps no boxed multi-kilobyte request future,
//! and hashes no pool key.
//!
//! Safety of retries: a request goes to an idle connection with `try_send_request`; hyper hands
//! it back only if not a byte of it was written (the connection had been closed by the MIS),
//! and only then is it tried on another connection. Anything else is returned as
//! [`SendError::Sent`]: the MIS may have the booking.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

type Body = Full<Bytes>;

/// Idle connections older than this are closed instead of reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, TLS handshake): nothing was sent.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The request was written, at least in part: the MIS may have acted on it.
    Sent(hyper::Error),
}

enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Connections to one MIS for one worker thread.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// Where requests go: absolute (to connect, and for HTTP/2) ...
    uri: Uri,
    /// ... and its HTTP/1.1 request target and `Host`, worked out once, not per request.
    origin: Uri,
    host: Option<HeaderValue>,
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
}

/// An HTTP/1.1 connection lent to one exchange; give it back with [`Pool::release`] once the
/// answer has been read in full (dropping it closes the connection).
pub struct Lease(Option<http1::SendRequest<Body>>);

impl Pool {
    /// A pool for requests to `uri` (absolute).
    pub fn new(connector: HttpsConnector<HttpConnector>, uri: Uri, max_idle: usize) -> Pool {
        let origin = uri
            .path_and_query()
            .and_then(|pq| Uri::try_from(pq.as_str()).ok())
            .unwrap_or_else(|| Uri::from_static("/"));
        let host = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        Pool {
            connector,
            uri,
            origin,
            host,
            idle: Mutex::default(),
            max_idle,
        }
    }

    /// Closes the idle connections older than [`IDLE_TIMEOUT`], every third of it, for as
    /// long as `pool` lives. Runs on the calling runtime (the pool's worker).
    pub fn reap_idle(pool: std::sync::Weak<Pool>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(IDLE_TIMEOUT / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { break };
                pool.idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|i| i.since.elapsed() <= IDLE_TIMEOUT);
            }
        });
    }

    fn take_idle(&self) -> Option<Idle> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn put_idle(&self, sender: Sender, since: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(Idle { sender, since });
        }
    }

    /// A connection read to the end goes back to the idle list, idle since `since` (the
    /// exchange's start will do: a clock read saved, the reaper at most that much early).
    pub fn release(&self, lease: Lease, since: Instant) {
        if let Some(sender) = lease.0.filter(|s| !s.is_closed()) {
            self.put_idle(Sender::H1(sender), since);
        }
    }

    /// Sends `req` (its URI the pool's, absolute) on an idle connection, or on a new one. The
    /// answer's body is still to be read. `now`: the time of the call, for the idle limit.
    pub async fn send(
        &self,
        mut req: Request<Body>,
        now: Instant,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        // The most recently used first: the likeliest to be alive.
        while let Some(idle) = self.take_idle() {
            if now.saturating_duration_since(idle.since) > IDLE_TIMEOUT {
                continue;
            }
            match idle.sender {
                Sender::H1(mut s) => {
                    if s.is_closed() || s.ready().await.is_err() {
                        continue;
                    }
                    match s.try_send_request(self.origin_form(req)).await {
                        Ok(resp) => return Ok((resp, Lease(Some(s)))),
                        Err(mut e) => match e.take_message() {
                            Some(back) => req = self.absolute_form(back),
                            None => return Err(SendError::Sent(e.into_error())),
                        },
                    }
                }
                // Boxed, as HTTP/2 to a MIS is the rare case.
                Sender::H2(s) => match Box::pin(self.send_h2(s, req)).await {
                    Ok(Ok(sent)) => return Ok(sent),
                    Ok(Err(back)) => req = back,
                    Err(e) => return Err(e),
                },
            }
        }
        // Boxed: connecting (DNS, TCP, TLS, the HTTP/2 handshake) is a future of many
        // kilobytes that every exchange would otherwise carry, and move, unused.
        Box::pin(self.send_fresh(req)).await
    }

    /// `req` on an idle HTTP/2 connection; handed back if the connection turned out unusable
    /// before any of it was sent.
    async fn send_h2(
        &self,
        mut s: http2::SendRequest<Body>,
        req: Request<Body>,
    ) -> Result<Result<(Response<Incoming>, Lease), Request<Body>>, SendError> {
        if s.is_closed() || s.ready().await.is_err() {
            return Ok(Err(req));
        }
        // Multiplexed: the connection stays available to others meanwhile.
        self.put_idle(Sender::H2(s.clone()), Instant::now());
        match s.try_send_request(req).await {
            Ok(resp) => Ok(Ok((resp, Lease(None)))),
            Err(mut e) => match e.take_message() {
                Some(back) => Ok(Err(back)),
                None => Err(SendError::Sent(e.into_error())),
            },
        }
    }

    async fn send_fresh(
        &self,
        req: Request<Body>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        let stream = self
            .connector
            .clone()
            .oneshot(self.uri.clone())
            .await
            .map_err(SendError::Connect)?;
        if stream.connected().is_negotiated_h2() {
            let (mut s, conn) = http2::handshake(TokioExecutor::new(), stream)
                .await
                .map_err(|e| SendError::Connect(e.into()))?;
            tokio::spawn(conn);
            self.put_idle(Sender::H2(s.clone()), Instant::now());
            let resp = s.send_request(req).await.map_err(SendError::Sent)?;
            Ok((resp, Lease(None)))
        } else {
            // One send(2) per request, as for the answers (see `server::builder`).
            let (mut s, conn) = http1::Builder::new()
                .writev(false)
                .handshake(stream)
                .await
                .map_err(|e| SendError::Connect(e.into()))?;
            tokio::spawn(conn);
            let resp = s
                .send_request(self.origin_form(req))
                .await
                .map_err(SendError::Sent)?;
            Ok((resp, Lease(Some(s))))
        }
    }

    /// HTTP/1.1 wants `POST /path` with a `Host` header, not the absolute URI.
    fn origin_form(&self, mut req: Request<Body>) -> Request<Body> {
        if let Some(host) = &self.host {
            req.headers_mut().insert(http::header::HOST, host.clone());
        }
        *req.uri_mut() = self.origin.clone();
        req
    }

    /// The absolute URI back (for a request handed back unsent, which may go out over HTTP/2).
    fn absolute_form(&self, mut req: Request<Body>) -> Request<Body> {
        req.headers_mut().remove(http::header::HOST);
        *req.uri_mut() = self.uri.clone();
        req
    }
}
