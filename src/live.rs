//! The live configuration: immutable generations swapped atomically.
//!
//! A request loads the current [`Generation`] once and uses it from start to end, so a reload
//! never changes routing, credentials or rights under a booking in flight. Building a generation
//! reuses the connection pools of backends whose address did not change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::{Config, Problem};
use crate::upstream::Upstream;

/// One validated routes.toml with everything built from it.
pub struct Generation {
    /// 1 for the file loaded at start, +1 for every successful reload.
    pub number: u64,
    pub config: Arc<Config>,
    /// Parallel to `config.backends`.
    pub upstreams: Vec<Arc<Upstream>>,
    pub loaded_at: jiff::Timestamp,
}

impl Generation {
    /// Builds generation `number` from `config`, keeping pools of `previous` where possible.
    pub fn build(number: u64, config: Config, previous: Option<&Generation>) -> Generation {
        let old: HashMap<&str, &Arc<Upstream>> = previous
            .map(|p| p.upstreams.iter().map(|u| (&*u.backend.name, u)).collect())
            .unwrap_or_default();
        let upstreams = config
            .backends
            .iter()
            .map(|b| match old.get(&*b.name) {
                Some(u) if u.reusable_for(b) => Arc::new(u.with_backend(b.clone())),
                _ => Arc::new(Upstream::new(b.clone())),
            })
            .collect();
        Generation {
            number,
            config: Arc::new(config),
            upstreams,
            loaded_at: jiff::Timestamp::now(),
        }
    }
}

/// A rejected reload, kept for the admin view.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rejected {
    pub at: String,
    pub sha256: Option<String>,
    pub problems: Vec<Problem>,
}

/// The current generation and the reload history ops look at.
pub struct Live {
    current: ArcSwap<Generation>,
    last_rejected: Mutex<Option<Rejected>>,
}

impl Live {
    pub fn new(config: Config) -> Live {
        Live {
            current: ArcSwap::from_pointee(Generation::build(1, config, None)),
            last_rejected: Mutex::new(None),
        }
    }

    /// The generation a new request runs under.
    pub fn load(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Swaps in a validated config as the next generation; returns its number.
    pub fn install(&self, config: Config) -> u64 {
        let prev = self.current.load_full();
        let next = Generation::build(prev.number + 1, config, Some(&prev));
        let n = next.number;
        self.current.store(Arc::new(next));
        n
    }

    pub fn reject(&self, rejected: Rejected) {
        *self.last_rejected.lock().unwrap_or_else(|e| e.into_inner()) = Some(rejected);
    }

    /// A file that validates again: the last rejection is history, no longer shown.
    pub fn clear_rejected(&self) {
        *self.last_rejected.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn last_rejected(&self) -> Option<Rejected> {
        self.last_rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
