//! Live reload of routes.toml: validate fully, then swap one generation; keep the last good.
//!
//! Triggers: a change of the file seen in its folder (see `crate::edge::watch`: editors save by
//! rename, Kubernetes swaps a `..data` symlink), SIGHUP, and `POST /admin/reload`.
//! Reloads are serialized; each reads the file and its secrets afresh, so a rotated
//! `password_file` is picked up even when routes.toml itself did not change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::Mutex;

use crate::config::{Config, Problem, Secrets};
use crate::live::{Live, Rejected};

pub use crate::edge::watch::DEBOUNCE;

/// What one reload did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A new generation is live.
    Applied { generation: u64, sha256: String },
    /// The file and its secrets are as they were: nothing to do.
    Unchanged { generation: u64 },
    /// The file was refused; the last good generation stays.
    Rejected {
        generation: u64,
        problems: Vec<Problem>,
    },
}

pub struct Reloader {
    path: PathBuf,
    live: Arc<Live>,
    secrets: Arc<dyn Secrets>,
    serial: Mutex<()>,
    attempts: AtomicU64,
    reads: AtomicU64,
}

impl Reloader {
    pub fn new(path: PathBuf, live: Arc<Live>, secrets: Arc<dyn Secrets>) -> Reloader {
        Reloader {
            path,
            live,
            secrets,
            serial: Mutex::new(()),
            attempts: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reloads attempted so far, whatever their outcome.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Times the config file was read so far (one per reload attempt; never for other files'
    /// events in its folder).
    pub fn file_reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Reads, validates and, if valid and different, installs the file. `trigger` is logged.
    pub async fn reload(&self, trigger: &'static str) -> Outcome {
        let _one_at_a_time = self.serial.lock().await;
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.reads.fetch_add(1, Ordering::Relaxed);
        crate::edge::notify::reloading();
        let path = self.path.clone();
        let secrets = self.secrets.clone();
        // One read: the rejected file's hash is of the bytes validated, not of a later version.
        let loaded = tokio::task::spawn_blocking(move || {
            let bytes = crate::config::read(&path).map_err(|p| (vec![p], None))?;
            Config::from_file_bytes(&bytes, &path, &*secrets)
                .map_err(|p| (p, Some(crate::config::sha256_hex(&bytes))))
        })
        .await
        .unwrap_or_else(|_| {
            Err((
                vec![Problem {
                    location: "reload".into(),
                    message: "validation task failed".into(),
                }],
                None,
            ))
        });
        let current = self.live.load();
        let outcome = match loaded {
            Ok(config) if same(&current.config, &config) => {
                // The file on disk is good again: an earlier rejection no longer describes it.
                self.live.clear_rejected();
                Outcome::Unchanged {
                    generation: current.number,
                }
            }
            Ok(config) => {
                let restart = restart_needed(&current.config, &config);
                if !restart.is_empty() {
                    tracing::warn!(
                        trigger,
                        settings = %restart.join(", "),
                        "changed settings take effect only after a restart: {}",
                        restart.join(", ")
                    );
                }
                let sha256 = config.sha256.clone();
                let generation = self.live.install(config);
                self.live.clear_rejected();
                Outcome::Applied { generation, sha256 }
            }
            Err((problems, sha256)) => {
                self.live.reject(Rejected {
                    at: jiff::Timestamp::now().to_string(),
                    sha256,
                    problems: problems.clone(),
                });
                Outcome::Rejected {
                    generation: current.number,
                    problems,
                }
            }
        };
        let result = match outcome {
            Outcome::Applied { .. } => "ok",
            Outcome::Unchanged { .. } => "unchanged",
            Outcome::Rejected { .. } => "rejected",
        };
        crate::telemetry::metrics::get()
            .reloads
            .add(1, &[opentelemetry::KeyValue::new("result", result)]);
        match &outcome {
            Outcome::Applied { generation, sha256 } => {
                tracing::info!(trigger, generation, sha256, "configuration reloaded")
            }
            Outcome::Unchanged { generation } => {
                tracing::info!(trigger, generation, "configuration unchanged")
            }
            Outcome::Rejected {
                generation,
                problems,
            } => {
                for p in problems {
                    tracing::warn!(trigger, location = %p.location, problem = %p.message, "reload rejected");
                }
                tracing::warn!(
                    trigger,
                    generation,
                    count = problems.len(),
                    "reload rejected; the last good configuration stays live"
                );
            }
        }
        crate::edge::notify::reloaded(trigger, &outcome);
        outcome
    }

    /// Watches the file (see `crate::edge::watch`) and reloads after each change of it, and on
    /// SIGHUP, until the returned tasks are aborted. Errors setting up the watch are logged:
    /// the gateway still serves and still reloads on SIGHUP and `POST /admin/reload`.
    pub fn spawn_watchers(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        match crate::edge::watch::FileWatch::start(&self.path) {
            Ok(mut watch) => {
                let me = self.clone();
                tasks.push(tokio::spawn(async move {
                    // Once the watch is in place, one catch-up reload covers a change made
                    // between the initial load and the watch (a no-op when nothing changed).
                    me.reload("file").await;
                    loop {
                        watch.changed().await;
                        me.reload("file").await;
                    }
                }));
            }
            Err(e) => {
                let dir = self.path.parent().unwrap_or(Path::new("."));
                tracing::error!(dir = %dir.display(), error = %e, "cannot watch the config directory; reload with SIGHUP or POST /admin/reload")
            }
        }
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            // Registered before returning, so a SIGHUP right after start (systemd may send one
            // as soon as READY=1 is out) reloads rather than kills the process.
            match signal(SignalKind::hangup()) {
                Ok(mut hup) => {
                    let me = self.clone();
                    tasks.push(tokio::spawn(async move {
                        while hup.recv().await.is_some() {
                            me.reload("sighup").await;
                        }
                    }));
                }
                Err(e) => tracing::error!(error = %e, "cannot listen for SIGHUP"),
            }
        }
        tasks
    }
}

/// The settings read once when the listeners start, which a reload cannot change: the names
/// of those that differ between `old` and `new`.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    let (oi, ni) = (&old.idempotency, &new.idempotency);
    [
        ("server.listen", o.listen != n.listen),
        (
            "server.header_read_timeout_ms",
            o.header_read_timeout != n.header_read_timeout,
        ),
        (
            "server.max_connections",
            o.max_connections != n.max_connections,
        ),
        (
            "server.drain_timeout_ms",
            o.drain_timeout != n.drain_timeout,
        ),
        (
            "server.trusted_proxies",
            o.proxies.trusted != n.proxies.trusted,
        ),
        (
            "server.proxy_protocol",
            o.proxies.proxy_protocol != n.proxies.proxy_protocol,
        ),
        ("admin.listen", old.admin.listen != new.admin.listen),
        ("idempotency.ttl_seconds", oi.ttl != ni.ttl),
        ("idempotency.max_keys", oi.max_keys != ni.max_keys),
        ("idempotency.store", oi.store != ni.store),
        ("idempotency.lease_ms", oi.lease != ni.lease),
        ("[journal]", old.journal != new.journal),
        (
            "idempotency.fingerprint_key_env",
            oi.fingerprint_key != ni.fingerprint_key,
        ),
    ]
    .into_iter()
    .filter_map(|(name, differs)| differs.then_some(name))
    .collect()
}

/// Same file and same resolved secrets and certificates: a reload would change nothing.
fn same(a: &Config, b: &Config) -> bool {
    a.sha256 == b.sha256
        && a.backends.len() == b.backends.len()
        && a.backends
            .iter()
            .zip(&b.backends)
            .all(|(x, y)| x.authorization == y.authorization && x.tls == y.tls)
        && a.server.tls == b.server.tls
        && a.admin.token == b.admin.token
}
