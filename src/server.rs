//! Listeners: accept TCP connections and serve HTTP/1.1 and HTTP/2 on them, with a drain on
//! shutdown. Both the booking listener and the admin listener run through [`serve`].
//!
//! The per-connection stack, outermost first:
//! 1. hyper's connection with a timer installed, so `header_read_timeout` really fires
//!    (slowloris); header count and size capped.
//! 2. `CatchPanicLayer`: a bug in a handler becomes a 500 in the error shape, not a dropped
//!    connection (and nothing of the request is echoed).
//! 3. The handler, whose error type is `Infallible`: every failure is already a response.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::GatewayError;

/// Connection-level limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub max_headers: usize,
    /// Cap on the bytes of a request head hyper buffers (HTTP/1) or the header list (HTTP/2).
    pub max_header_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_read_timeout: Duration::from_secs(10),
            max_headers: 64,
            max_header_bytes: 16 * 1024,
        }
    }
}

/// Anything that turns a request into a response without failing.
pub trait Handler: Send + Sync + 'static {
    fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send;
}

/// Serves `handler` on `listener` until `shutdown` resolves, then stops accepting and gives the
/// open connections `drain` to finish their requests before closing them.
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
    let graceful = GracefulShutdown::new();
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
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let handler = handler.clone();
        tokio::spawn(async move {
            let builder = builder(limits);
            let conn = builder.serve_connection(TokioIo::new(stream), service(handler));
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "drain deadline passed with connections still open; closing them"
        );
    }
}

/// The handler wrapped in the tower layers every request passes.
fn service<H: Handler>(
    handler: Arc<H>,
) -> TowerToHyperService<
    impl tower::Service<
        Request<Incoming>,
        Response = Response<
            impl http_body::Body<
                Data = Bytes,
                Error = impl Into<Box<dyn std::error::Error + Send + Sync>>,
            > + Send
            + 'static,
        >,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + 'static,
> {
    let service = ServiceBuilder::new()
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                tracing::error!("a request handler panicked");
                let id = uuid::Uuid::now_v7().hyphenated().to_string();
                GatewayError::Internal.into_response(&id, None)
            },
        ))
        .service_fn(move |req: Request<Incoming>| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler.call(req).await) }
        });
    TowerToHyperService::new(service)
}

fn builder(limits: ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
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
