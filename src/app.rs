//! Wires config, gateway and listeners together: load → validate → build → bind → run.
//! `main` and the tests both come through here, so tests run the real stack on port 0.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::booking::pipeline::{Gateway, Parts};
use crate::config::{Config, Problem, Secrets, StoreKind};
use crate::edge::admin::Admin;
use crate::edge::reload::Reloader;
use crate::edge::server::{self, ConnLimits};
use crate::journal::Journal;
use crate::live::Live;
use crate::policy::idempotency::redis::RedisStore;
use crate::policy::idempotency::{MemoryStore, Store};
use crate::policy::shared_limits::SharedLimits;

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
        Self::build_with(config, None, Some(store))
    }

    fn build(config: Config, source: Option<(PathBuf, Arc<dyn Secrets>)>) -> App {
        Self::build_with(config, source, None)
    }

    fn build_with(
        config: Config,
        source: Option<(PathBuf, Arc<dyn Secrets>)>,
        store: Option<Arc<dyn Store>>,
    ) -> App {
        let store = store.unwrap_or_else(|| idempotency_store(&config));
        // The journal first: without a configured key, the fingerprint key is the journal's own,
        // so keys rebuilt from it after a restart match their retries.
        let journal = journal(&config, &store);
        let fingerprint_key = match &journal {
            Some(j) => j.secret().to_vec(),
            None => fingerprint_key(&config),
        };
        let parts = Parts {
            shared_limits: shared_limits(&config),
            journal,
            store,
            fingerprint_key,
        };
        let live = Arc::new(Live::new(config));
        crate::telemetry::metrics::get().observe(&live);
        let reloader =
            source.map(|(path, secrets)| Arc::new(Reloader::new(path, live.clone(), secrets)));
        let draining = Arc::new(AtomicBool::new(false));
        let gateway = Arc::new(Gateway::from_parts(live.clone(), parts));
        let audit = Arc::new(crate::console::audit::AuditLog::new(
            gateway.journal.clone(),
        ));
        let console = Arc::new(crate::console::Console::new(
            live.clone(),
            gateway.journal.clone(),
            reloader.clone(),
            audit.clone(),
        ));
        App {
            admin: Arc::new(Admin {
                live: live.clone(),
                reloader: reloader.clone(),
                draining: draining.clone(),
                journal: gateway.journal.clone(),
                console,
                audit,
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
        // `[admin.tls]` read per connection: a reload rotates its certificate.
        let live = self.live.clone();
        let admin_tls: server::TlsSource = Arc::new(move || {
            live.load()
                .config
                .admin
                .tls
                .as_ref()
                .map(|t| t.config.clone())
        });
        let admin_task = admin.map(|listener| {
            tokio::spawn(server::serve_tls(
                listener,
                self.admin.clone(),
                ConnLimits::default(),
                Some(admin_tls),
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
        // The console's charts: the counters once a minute.
        let history = tokio::spawn(self.admin.console.history.clone().run());
        let config = self.live.load().config.clone();
        let limits = ConnLimits {
            header_read_timeout: config.server.header_read_timeout,
            max_connections: config.server.max_connections,
            max_connections_per_client: config.server.max_connections_per_client,
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
        history.abort();
        // Records of the drained bookings reach the database before `run` returns.
        if let Some(j) = &self.gateway.journal {
            j.flush().await;
        }
    }
}

/// The idempotency store the config names; a Redis store that cannot be set up leaves keys to
/// this process, and says so.
fn idempotency_store(config: &Config) -> Arc<dyn Store> {
    let settings = &config.idempotency;
    let memory = || MemoryStore::new(settings.ttl, settings.max_keys);
    match &settings.store {
        StoreKind::Memory => Arc::new(memory()),
        StoreKind::Redis(redis) => {
            match RedisStore::with_settings(redis.clone(), settings.ttl, settings.lease) {
                Ok(store) => Arc::new(store),
                Err(e) => {
                    tracing::error!(error = %e, "cannot use the Redis idempotency store; keys are kept in this process only");
                    Arc::new(memory())
                }
            }
        }
    }
}

/// The body fingerprint's HMAC key: the configured one (every replica of a shared store needs
/// the same), else random for this process.
fn fingerprint_key(config: &Config) -> Vec<u8> {
    match &config.idempotency.fingerprint_key {
        Some(k) => k.as_bytes().to_vec(),
        None => {
            let mut k = vec![0u8; 32];
            getrandom::fill(&mut k).expect("the OS random source is available");
            k
        }
    }
}

/// With a shared store, the limits are shared too (the same Redis, its own connection).
fn shared_limits(config: &Config) -> Option<Arc<SharedLimits>> {
    match &config.idempotency.store {
        StoreKind::Memory => None,
        StoreKind::Redis(redis) => match SharedLimits::open(redis) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(error = %e, "cannot share limits through Redis; they are kept per process");
                None
            }
        },
    }
}

/// The journal the config names (on by default for a config read from a file). A writer
/// thread that cannot be started is the one failure left: the gateway then cannot keep its
/// promises, and says so at ERROR.
fn journal(config: &Config, store: &Arc<dyn Store>) -> Option<Arc<Journal>> {
    let settings = config.journal.as_ref()?;
    let timezones = config
        .backends
        .iter()
        .map(|b| (b.name.to_string(), b.timezone.clone()))
        .collect();
    Journal::open(crate::journal::Opening {
        settings,
        secret: config
            .idempotency
            .fingerprint_key
            .as_ref()
            .map(|k| k.as_bytes().to_vec()),
        store: store.clone(),
        ttl: config.idempotency.ttl,
        timezones,
    })
    .map_err(|e| tracing::error!(error = %e, "cannot start the booking journal; bookings go on without it"))
    .ok()
}
