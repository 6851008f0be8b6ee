//! Failed-authentication throttling: per client address and per login, in a sliding minute.
//!
//! Past the limit a client gets 429 with `Retry-After` before any Argon2 work is done, which
//! caps what a password-guessing client can cost us and learn. There is no permanent lockout:
//! counters expire a minute after the last failure. Cached valid credentials never pass
//! through here, so a guessing neighbour behind the same address does not lock out an
//! integrator whose requests are already verified.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How long failures are remembered (since the last one).
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Who {
    Ip(IpAddr),
    /// SHA-256 of the login (a mistyped login may be someone's password).
    Login([u8; 32]),
}

pub struct Throttle {
    failures: moka::sync::Cache<Who, Arc<AtomicU32>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(WINDOW)
                .build(),
        }
    }
}

impl Throttle {
    /// Whether `ip` or `login` is over its limit now.
    pub fn blocked(
        &self,
        ip: Option<IpAddr>,
        login: Option<&str>,
        per_ip: u32,
        per_login: u32,
    ) -> bool {
        let over = |who: Who, limit: u32| {
            self.failures
                .get(&who)
                .is_some_and(|n| n.load(Ordering::Relaxed) >= limit)
        };
        ip.is_some_and(|ip| over(Who::Ip(ip), per_ip))
            || login.is_some_and(|l| over(Who::Login(digest(l)), per_login))
    }

    /// Counts one failed attempt.
    pub fn failed(&self, ip: Option<IpAddr>, login: Option<&str>) {
        let bump = |who: Who| {
            self.failures
                .get_with(who, Arc::default)
                .fetch_add(1, Ordering::Relaxed);
        };
        if let Some(ip) = ip {
            bump(Who::Ip(ip));
        }
        if let Some(l) = login {
            bump(Who::Login(digest(l)));
        }
    }
}

fn digest(login: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(login.as_bytes()).into()
}
