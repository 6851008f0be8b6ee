//! Wires config, gateway and listeners together: load → validate → build → bind → run.
//! `main` and the tests both come through here, so tests run the real stack on port 0.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::live::Live;
use crate::server::{self, ConnLimits, Handler};

impl Handler for Gateway {
    async fn call(
        self: Arc<Self>,
        req: http::Request<hyper::body::Incoming>,
    ) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        self.handle(req).await
    }
}

/// A gateway built from a validated config, ready to serve.
pub struct App {
    pub live: Arc<Live>,
    pub gateway: Arc<Gateway>,
}

impl App {
    pub fn new(config: Config) -> App {
        let live = Arc::new(Live::new(config));
        App {
            gateway: Arc::new(Gateway::new(live.clone())),
            live,
        }
    }

    /// Serves bookings on `api` until `shutdown` resolves, then drains for the configured time.
    pub async fn serve(&self, api: TcpListener, shutdown: impl Future<Output = ()>) {
        let config = self.live.load().config.clone();
        let limits = ConnLimits {
            header_read_timeout: config.server.header_read_timeout,
            ..ConnLimits::default()
        };
        server::serve(
            api,
            self.gateway.clone(),
            limits,
            shutdown,
            config.server.drain_timeout,
        )
        .await;
    }
}
