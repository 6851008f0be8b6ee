//! Live reload of routes.toml: validate fully, then swap one generation; keep the last good.
//!
//! Triggers: a change in the file's *directory* (editors save by rename; Kubernetes swaps a
//! `..data` symlink), SIGHUP, and `POST /admin/reload`. Bursts of file events are debounced.
//! Reloads are serialized; each reads the file and its secrets afresh, so a rotated
//! `password_file` is picked up even when routes.toml itself did not change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Mutex, mpsc};

use crate::config::{Config, Problem, Secrets};
use crate::live::{Live, Rejected};

/// How long the directory must be quiet before a burst of events becomes one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

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
    attempts: std::sync::atomic::AtomicU64,
}

impl Reloader {
    pub fn new(path: PathBuf, live: Arc<Live>, secrets: Arc<dyn Secrets>) -> Reloader {
        Reloader {
            path,
            live,
            secrets,
            serial: Mutex::new(()),
            attempts: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reloads attempted so far, whatever their outcome.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads, validates and, if valid and different, installs the file. `trigger` is logged.
    pub async fn reload(&self, trigger: &'static str) -> Outcome {
        let _one_at_a_time = self.serial.lock().await;
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.path.clone();
        let secrets = self.secrets.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path, &*secrets))
            .await
            .unwrap_or_else(|_| {
                Err(vec![Problem {
                    location: "reload".into(),
                    message: "validation task failed".into(),
                }])
            });
        let current = self.live.load();
        let outcome = match loaded {
            Ok(config) if same(&current.config, &config) => Outcome::Unchanged {
                generation: current.number,
            },
            Ok(config) => {
                if restart_only(&current.config) != restart_only(&config) {
                    tracing::warn!(
                        "listeners, header_read_timeout_ms, max_connections, drain_timeout_ms, [idempotency] or [journal] changed: they take effect after a restart"
                    );
                }
                let sha256 = config.sha256.clone();
                let generation = self.live.install(config);
                Outcome::Applied { generation, sha256 }
            }
            Err(problems) => {
                let sha256 = std::fs::read(&self.path)
                    .ok()
                    .map(|b| crate::config::sha256_hex(&b));
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
        crate::metrics::get()
            .reloads
            .add(1, &[opentelemetry::KeyValue::new("result", result)]);
        match &outcome {
            Outcome::Applied { generation, sha256 } => {
                tracing::info!(trigger, generation, sha256, "configuration reloaded")
            }
            Outcome::Unchanged { generation } => {
                tracing::debug!(trigger, generation, "configuration unchanged")
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
        outcome
    }

    /// Watches the file's directory and reloads after each debounced burst of events, and on
    /// SIGHUP, until the returned task is aborted. Errors setting up the watch are logged: the
    /// gateway still serves and still reloads on SIGHUP and `POST /admin/reload`.
    pub fn spawn_watchers(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        let (tx, mut rx) = mpsc::channel::<()>(1);
        // Once the watch is in place, one catch-up reload covers a change made between the
        // initial load and the watch (it is a no-op when nothing changed).
        let catch_up = tx.clone();
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Reads (our own reloads open the file) are not changes: reacting to them would
            // reload in a loop.
            if res.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
                // A full channel already holds a pending reload: dropping this event is fine.
                let _ = tx.try_send(());
            }
        });
        let watcher = watcher.and_then(|mut w| {
            use notify::Watcher;
            w.watch(&dir, notify::RecursiveMode::NonRecursive)
                .map(|()| w)
        });
        match watcher {
            Ok(w) => {
                let _ = catch_up.try_send(());
                let me = self.clone();
                tasks.push(tokio::spawn(async move {
                    let _keep_alive = w;
                    while rx.recv().await.is_some() {
                        // Debounce: wait until no event arrived for DEBOUNCE.
                        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                        me.reload("file").await;
                    }
                }));
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot watch the config directory; reload with SIGHUP or POST /admin/reload")
            }
        }
        #[cfg(unix)]
        {
            let me = self.clone();
            tasks.push(tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut hup) = signal(SignalKind::hangup()) else {
                    tracing::error!("cannot listen for SIGHUP");
                    return;
                };
                while hup.recv().await.is_some() {
                    me.reload("sighup").await;
                }
            }));
        }
        tasks
    }
}

/// The settings read once when the listeners start; a reload cannot change them.
fn restart_only(c: &Config) -> impl PartialEq + use<'_> {
    let s = &c.server;
    (
        s.listen,
        s.header_read_timeout,
        s.max_connections,
        s.drain_timeout,
        c.admin.listen,
        &c.idempotency,
        &c.journal,
    )
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
