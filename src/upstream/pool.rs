//! The MIS connections of one worker thread: a small idle list and one reaper task that closes
//! connections idle for [`IDLE_TIMEOUT`]. HTTP/1.1 connections are [`crate::upstream::h1`]'s, driven
//! by the booking that uses them; HTTP/2 ones (when TLS negotiates it) are hyper's.
//!
//! Each worker thread has its own [`Pool`] per backend (see [`crate::upstream`]), so the list is
//! only ever locked by its own thread.
//!
//! Safety of retries: a request goes to an idle HTTP/1.1 connection only if the connection is
//! still open as far as this thread knows, and is tried on another connection only if not a
//! byte of it was accepted by the first (the MIS had closed it). An idle HTTP/2 connection
//! hands a request back on the same terms (hyper's `try_send_request`). Anything else is
//! [`SendError::Sent`]: the MIS may have the booking.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tower::ServiceExt;

use crate::error::X_REQUEST_ID;
use crate::telemetry::{TRACEPARENT, TRACESTATE};
use crate::upstream::h1::{self, BodyError, Failure, Head};

type Body = Full<Bytes>;
/// An HTTP/1.1 connection, plain or TLS, with tokio's I/O traits.
type H1 = h1::Conn<TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>>;

/// Idle connections older than this are closed instead of reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no answer.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, TLS handshake): nothing was sent.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The request was written, at least in part: the MIS may have acted on it.
    Sent(std::io::Error),
}

/// A request other than the pool's booking `POST`: a cancellation's `DELETE` of one
/// appointment.
pub struct Target {
    /// Absolute (for HTTP/2).
    pub uri: Uri,
    pub method: Method,
    /// Its HTTP/1.1 start (see `h1::bodyless_prefix`).
    pub h1_prefix: Vec<u8>,
}

impl Target {
    /// `method` of `uri` (absolute), without a body.
    pub fn bodyless(method: Method, uri: Uri) -> Target {
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let h1_prefix =
            h1::bodyless_prefix(method.as_str(), target, uri.authority().map(|a| a.as_str()));
        Target {
            uri,
            method,
            h1_prefix,
        }
    }
}

/// One request, as every connection kind needs it.
pub struct Outgoing<'a> {
    /// A booking's body (empty for a request without one).
    pub body: &'a Bytes,
    /// `None`: the booking `POST` the pool is made for.
    pub target: Option<&'a Target>,
    pub authorization: &'a HeaderValue,
    pub request_id: &'a HeaderValue,
    pub traceparent: Option<&'a HeaderValue>,
    pub tracestate: Option<&'a HeaderValue>,
}

enum Conn {
    /// Boxed: a TLS connection's state is large, and the list moves connections in and out.
    H1(Box<H1>),
    H2(http2::SendRequest<Body>),
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// An answer whose head has been read; its body is read with [`Answer::read_body`].
pub enum Answer {
    H1(Box<H1>, Head),
    H2(Response<Incoming>),
}

/// Connections to one MIS for one worker thread.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// Where requests go: absolute (to connect, and for HTTP/2) ...
    uri: Uri,
    /// ... and the fixed start of an HTTP/1.1 request to it (request line, `Host`, media
    /// types), worked out once, not per request.
    h1_prefix: Vec<u8>,
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
}

impl Answer {
    pub fn status(&self) -> StatusCode {
        match self {
            Answer::H1(_, head) => head.status,
            Answer::H2(resp) => resp.status(),
        }
    }

    /// The body's length, when the head states it.
    pub fn declared_length(&self) -> Option<u64> {
        match self {
            Answer::H1(_, head) => head.declared_length(),
            Answer::H2(resp) => resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok()),
        }
    }

    /// The whole body, at most `limit` bytes, and the HTTP/1.1 connection if it can carry
    /// another request (give it to [`Pool::release`]).
    pub async fn read_body(self, limit: usize) -> Result<(Bytes, Option<Box<H1>>), BodyError> {
        match self {
            Answer::H1(mut conn, head) => {
                let body = conn.read_body(&head, limit).await?;
                Ok((body, conn.reusable(&head).then_some(conn)))
            }
            Answer::H2(resp) => match Limited::new(resp.into_body(), limit).collect().await {
                Ok(collected) => Ok((collected.to_bytes(), None)),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
                Err(e) => Err(BodyError::Broken(std::io::Error::other(e))),
            },
        }
    }
}

impl Pool {
    /// A pool for requests to `uri` (absolute).
    pub fn new(connector: HttpsConnector<HttpConnector>, uri: Uri, max_idle: usize) -> Pool {
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let h1_prefix = h1::request_prefix(target, uri.authority().map(|a| a.as_str()));
        Pool {
            connector,
            uri,
            h1_prefix,
            idle: Mutex::default(),
            max_idle,
        }
    }

    /// Closes the idle connections older than [`IDLE_TIMEOUT`], or closed by the MIS, every
    /// third of it, for as long as `pool` lives. Runs on the calling runtime (the pool's
    /// worker).
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
                    .retain_mut(|i| {
                        i.since.elapsed() <= IDLE_TIMEOUT
                            && match &mut i.conn {
                                Conn::H1(c) => c.is_open(),
                                Conn::H2(s) => !s.is_closed(),
                            }
                    });
            }
        });
    }

    fn take_idle(&self) -> Option<Idle> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn put_idle(&self, conn: Conn, since: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(Idle { conn, since });
        }
    }

    /// An HTTP/1.1 connection read to the end goes back to the idle list, idle since `since`
    /// (the exchange's start will do: a clock read saved, the reaper at most that much early).
    pub fn release(&self, conn: Box<H1>, since: Instant) {
        self.put_idle(Conn::H1(conn), since);
    }

    /// Sends `out` on an idle connection, or on a new one, and reads the answer's head.
    /// `now`: the time of the call, for the idle limit.
    pub async fn send(&self, out: &Outgoing<'_>, now: Instant) -> Result<Answer, SendError> {
        // The most recently used first: the likeliest to be alive.
        while let Some(idle) = self.take_idle() {
            if now.saturating_duration_since(idle.since) > IDLE_TIMEOUT {
                continue;
            }
            match idle.conn {
                Conn::H1(mut conn) => {
                    if !conn.is_open() {
                        continue;
                    }
                    match self.exchange_h1(&mut conn, out).await {
                        Ok(head) => return Ok(Answer::H1(conn, head)),
                        // Closed by the MIS before a byte was taken: the next one.
                        Err(Failure::Unsent(_)) => continue,
                        Err(Failure::Sent(e)) => return Err(SendError::Sent(e)),
                    }
                }
                // Boxed, as HTTP/2 to a MIS is the rare case.
                Conn::H2(s) => {
                    if let Some(sent) = Box::pin(self.send_h2(s, out)).await? {
                        return Ok(sent);
                    }
                }
            }
        }
        // Boxed: connecting (DNS, TCP, TLS, the HTTP/2 handshake) is a future of many
        // kilobytes that every exchange would otherwise carry, and move, unused.
        Box::pin(self.send_fresh(out)).await
    }

    /// The request written, the answer's head read.
    async fn exchange_h1(&self, conn: &mut H1, out: &Outgoing<'_>) -> Result<Head, Failure> {
        // The names the HTTP/2 request uses too; named locals, as `X_REQUEST_ID.as_str()` would
        // borrow a temporary dropped before the request is written.
        let (request_id, traceparent, tracestate) = (X_REQUEST_ID, TRACEPARENT, TRACESTATE);
        let mut fields: [(&str, &[u8]); 4] = [
            (header::AUTHORIZATION.as_str(), out.authorization.as_bytes()),
            (request_id.as_str(), out.request_id.as_bytes()),
            ("", b""),
            ("", b""),
        ];
        let mut n = 2;
        // `tracestate` only with the `traceparent` whose trace it describes.
        if let Some(tp) = out.traceparent {
            fields[n] = (traceparent.as_str(), tp.as_bytes());
            n += 1;
            if let Some(ts) = out.tracestate {
                fields[n] = (tracestate.as_str(), ts.as_bytes());
                n += 1;
            }
        }
        let prefix = out.target.map_or(&self.h1_prefix[..], |t| &t.h1_prefix[..]);
        conn.send(prefix, &fields[..n], out.body).await?;
        conn.read_head().await.map_err(Failure::Sent)
    }

    /// `out` on an idle HTTP/2 connection; `None` if the connection turned out unusable before
    /// any of it was sent.
    async fn send_h2(
        &self,
        mut s: http2::SendRequest<Body>,
        out: &Outgoing<'_>,
    ) -> Result<Option<Answer>, SendError> {
        if s.is_closed() || s.ready().await.is_err() {
            return Ok(None);
        }
        // Multiplexed: the connection stays available to others meanwhile.
        self.put_idle(Conn::H2(s.clone()), Instant::now());
        match s.try_send_request(self.h2_request(out)).await {
            Ok(resp) => Ok(Some(Answer::H2(resp))),
            Err(mut e) => match e.take_message() {
                Some(_) => Ok(None),
                None => Err(SendError::Sent(std::io::Error::other(e.into_error()))),
            },
        }
    }

    async fn send_fresh(&self, out: &Outgoing<'_>) -> Result<Answer, SendError> {
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
            self.put_idle(Conn::H2(s.clone()), Instant::now());
            let resp = s
                .send_request(self.h2_request(out))
                .await
                .map_err(|e| SendError::Sent(std::io::Error::other(e)))?;
            Ok(Answer::H2(resp))
        } else {
            let mut conn = Box::new(h1::Conn::new(TokioIo::new(stream)));
            match self.exchange_h1(&mut conn, out).await {
                Ok(head) => Ok(Answer::H1(conn, head)),
                // A new connection that took nothing: as good as not made.
                Err(Failure::Unsent(e)) => Err(SendError::Connect(e.into())),
                Err(Failure::Sent(e)) => Err(SendError::Sent(e)),
            }
        }
    }

    /// The request as hyper's HTTP/2 client takes it.
    fn h2_request(&self, out: &Outgoing<'_>) -> Request<Body> {
        let mut req = Request::new(Full::new(out.body.clone()));
        let headers = match out.target {
            Some(t) => {
                *req.method_mut() = t.method.clone();
                *req.uri_mut() = t.uri.clone();
                req.headers_mut()
            }
            None => {
                *req.method_mut() = Method::POST;
                *req.uri_mut() = self.uri.clone();
                let headers = req.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                headers
            }
        };
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(header::AUTHORIZATION, out.authorization.clone());
        headers.insert(X_REQUEST_ID, out.request_id.clone());
        if let Some(tp) = out.traceparent {
            headers.insert(TRACEPARENT, tp.clone());
            if let Some(ts) = out.tracestate {
                headers.insert(TRACESTATE, ts.clone());
            }
        }
        req
    }
}
