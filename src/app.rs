//! Wires config, gateway and listeners together: load → validate → build → bind → run.
//! `main` and the tests both come through here, so tests run the real stack on port 0.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::booking::pipeline::Gateway;
use crate::config::{Config, Problem, Secrets};
use crate::edge::admin::Admin;
use crate::edge::reload::Reloader;
use crate::edge::server::{self, ConnLimits, Handler};
use crate::live::Live;
use crate::policy::idempotency::Store;

impl Handler for Gateway {
    // `handle`'s own future, not one wrapping it: every booking's future is moved whole a few
    // times on its way into hyper, and a wrapper would add its size to each move.
    fn call(
        self: Arc<Self>,
        req: http::Request<hyper::body::Incoming>,
        peer: std::net::SocketAddr,
    ) -> impl Future<Output = http::Response<http_body_util::Full<bytes::Bytes>>> + Send {
        self.handle(req, Some(peer.ip()))
    }

    fn drain_started(&self) {
        self.expiry.begin();
    }

    fn drain_expired(&self) -> bool {
        self.expiry.expire();
        true
    }
}

/// A gateway built from a validated config, ready to serve.
pub struct App {
    pub live: Arc<Live>,
    pub gateway: Arc<Gateway>,
    pub admin: Arc<Admin>,
    pub reloader: Option<Arc<Reloader>>,
    pub draining: Arc<AtomicBool>,
    /// Threads serving the booking listener (see [`crate::edge::workers`]); default one per CPU.
    pub workers: usize,
    /// Where the worker threads run (see [`crate::edge::workers::Placement`]).
    pub placement: crate::edge::workers::Placement,
}

impl App {
    /// An app whose config does not come from a file (tests, embedding): no reloads.
    pub fn new(config: Config) -> App {
        Self::build(config, None)
    }

    /// Loads `path` with `secrets`; the app reloads from the same path and secrets.
    pub fn from_file(path: PathBuf, secrets: Arc<dyn Secrets>) -> Result<App, Vec<Problem>> {
        let config = Config::load(&path, &*secrets)?;
        Ok(Self::build(config, Some((path, secrets))))
    }

    /// An app with a given idempotency store (tests of a shared store; embedding).
    pub fn with_store(config: Config, store: Arc<dyn Store>) -> App {
        let mut app = Self::build(config, None);
        app.gateway = Arc::new(Gateway::with_store(app.live.clone(), store));
        app.admin = Arc::new(Admin {
            live: app.live.clone(),
            reloader: None,
            draining: app.draining.clone(),
            journal: app.gateway.journal.clone(),
        });
        app
    }

    fn build(config: Config, source: Option<(PathBuf, Arc<dyn Secrets>)>) -> App {
        let live = Arc::new(Live::new(config));
        crate::telemetry::metrics::get().observe(&live);
        let reloader =
            source.map(|(path, secrets)| Arc::new(Reloader::new(path, live.clone(), secrets)));
        let draining = Arc::new(AtomicBool::new(false));
        let gateway = Arc::new(Gateway::new(live.clone()));
        App {
            admin: Arc::new(Admin {
                live: live.clone(),
                reloader: reloader.clone(),
                draining: draining.clone(),
                journal: gateway.journal.clone(),
            }),
            gateway,
            live,
            reloader,
            draining,
            workers: crate::edge::workers::default_count(),
            placement: crate::edge::workers::Placement::default(),
        }
    }

    /// Serves bookings on `api` until `shutdown` resolves, then drains (see [`App::run`]).
    pub async fn serve(&self, api: TcpListener, shutdown: impl Future<Output = ()>) {
        self.run(api, None, shutdown, false).await
    }

    /// Serves bookings on `api` and the admin API on `admin`, reloading on file changes and
    /// SIGHUP when `watch` is set. On `shutdown`: readiness turns false at once, `api` stops
    /// accepting, in-flight bookings get the configured drain time, then the admin listener
    /// stops too.
    pub async fn run(
        &self,
        api: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
        watch: bool,
    ) {
        let watchers = match (&self.reloader, watch) {
            (Some(r), true) => r.spawn_watchers(),
            _ => Vec::new(),
        };
        if watch {
            // Bound, and SIGHUP handled: systemd may now consider the start done.
            crate::edge::notify::ready(self.live.load().number);
        }
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_task = admin.map(|listener| {
            tokio::spawn(server::serve(
                listener,
                self.admin.clone(),
                ConnLimits::default(),
                async move {
                    let _ = admin_stopped.await;
                },
                Duration::from_secs(1),
            ))
        });
        let maintain = self
            .gateway
            .journal
            .clone()
            .map(|j| tokio::spawn(j.maintain()));
        let config = self.live.load().config.clone();
        let limits = ConnLimits {
            header_read_timeout: config.server.header_read_timeout,
            max_connections: config.server.max_connections,
            workers: self.workers,
            placement: self.placement,
            proxies: Arc::new(config.server.proxies.clone()),
            ..ConnLimits::default()
        };
        // Each new connection reads the live generation's certificate: a reload rotates it.
        let live = self.live.clone();
        let tls: server::TlsSource = Arc::new(move || {
            live.load()
                .config
                .server
                .tls
                .as_ref()
                .map(|t| t.config.clone())
        });
        let draining = self.draining.clone();
        let shutdown = async move {
            shutdown.await;
            draining.store(true, Ordering::SeqCst);
        };
        server::serve_tls(
            api,
            self.gateway.clone(),
            limits,
            Some(tls),
            shutdown,
            config.server.drain_timeout,
        )
        .await;
        let _ = stop_admin.send(());
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        for w in watchers {
            w.abort();
        }
        if let Some(m) = maintain {
            m.abort();
        }
        // Records of the drained bookings reach the database before `run` returns.
        if let Some(j) = &self.gateway.journal {
            j.flush().await;
        }
    }
}
