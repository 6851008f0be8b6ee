//! Failed-login throttling without lockout, in fixed one-minute windows: failures are counted
//! per client address, per (login, address) and per login across addresses. Only the last
//! refuses an address that has logged in as that login within [`STANDING`], so a guesser
//! elsewhere never refuses an integrator's right password from its own address.
//!
//! A verification *reserves* its place in the counters before Argon2 runs and gives it back
//! if the password was right (or the pool had no room, for the login's counters), so however
//! many guesses arrive at once, no more than the limits ever reach the hashing pool. With a
//! shared store ([`SharedLimits`]) the counters are also kept in Redis, for every replica.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::policy::shared_limits::SharedLimits;

/// The throttle's window: a counter starts with its first failure and ends a minute later.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long a successful login from an address exempts that address from the login's
/// across-address limit.
pub const STANDING: Duration = Duration::from_secs(24 * 3600);
/// How often a cached login renews its standing (locally and in the shared store).
pub const RENEW_EVERY: Duration = Duration::from_secs(3600);

/// Failures allowed in a window before 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_ip: u32,
    /// Per (login, client address).
    pub per_login_address: u32,
    /// Per login, from addresses without standing for it.
    pub per_login: u32,
}

/// SHA-256 of a login (a mistyped login may be someone's password: it is never kept).
pub type LoginDigest = [u8; 32];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Who {
    Ip(IpAddr),
    Pair(LoginDigest, IpAddr),
    Login(LoginDigest),
}

struct Count {
    since: Instant,
    n: AtomicU32,
}

/// What a verification the throttle let through has reserved.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    ip: Option<IpAddr>,
    login: Option<LoginDigest>,
    /// The address has standing for the login (so the login's counter was not touched).
    pub standing: bool,
    /// Reserved in the shared counters too; `shared_login`: the login's among them.
    shared: bool,
    shared_login: bool,
}

/// How a verification ended, for [`Throttle::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Right password: reservations given back, the pair's failures forgotten, standing given.
    Success,
    /// Wrong password, unknown login or a malformed header: the reservations stay, as failures.
    Failure,
    /// The hashing pool had no room: counts against the address only.
    Busy,
}

pub struct Throttle {
    counts: moka::sync::Cache<Who, Arc<Count>>,
    /// Pairs with standing, and when it was last given or renewed.
    standing: moka::sync::Cache<(LoginDigest, IpAddr), Instant>,
    shared: Option<Arc<SharedLimits>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Throttle {
    pub fn new(shared: Option<Arc<SharedLimits>>) -> Throttle {
        Throttle {
            counts: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(WINDOW)
                .build(),
            standing: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(STANDING)
                .build(),
            shared,
        }
    }

    /// Reserves a verification for `ip` and `login`, or says how long until it may be tried.
    /// The local counters decide first (no Redis for a client already over its limit here);
    /// then, with a shared store, the replicas' common counters.
    pub async fn begin(
        &self,
        ip: Option<IpAddr>,
        login: Option<&str>,
        limits: Limits,
    ) -> Result<Attempt, Duration> {
        let login = login.map(digest);
        let mut standing =
            matches!((login, ip), (Some(l), Some(ip)) if self.standing.contains_key(&(l, ip)));
        let keys = keys(ip, login, standing, limits);
        self.reserve(&keys)?;
        let (mut shared, mut shared_login) = (false, false);
        if let (Some(s), Some(ip)) = (&self.shared, ip) {
            match s.begin_login(ip, login, limits).await {
                Ok(Ok(remote_standing)) => {
                    shared = true;
                    shared_login = login.is_some() && !remote_standing;
                    if remote_standing && !standing {
                        // Standing earned on another replica: the local login counter is not
                        // this address's to carry.
                        standing = true;
                        if let Some(l) = login {
                            self.give_back(&[Some((Who::Login(l), 0))]);
                        }
                    }
                }
                Ok(Err(retry)) => {
                    self.give_back(&keys);
                    return Err(retry);
                }
                // Redis unavailable: the local counters alone decide.
                Err(()) => {}
            }
        }
        Ok(Attempt {
            ip,
            login,
            standing,
            shared,
            shared_login,
        })
    }

    /// Records how the attempt ended.
    pub fn settle(&self, attempt: Attempt, how: Settle) {
        let Attempt {
            ip,
            login,
            standing,
            ..
        } = attempt;
        let login_key = login.filter(|_| !standing).map(|l| (Who::Login(l), 0));
        let pair = login.zip(ip).map(|(l, ip)| (Who::Pair(l, ip), 0));
        match how {
            Settle::Failure => {}
            Settle::Busy => self.give_back(&[pair, login_key]),
            Settle::Success => {
                self.give_back(&[ip.map(|ip| (Who::Ip(ip), 0)), login_key]);
                if let Some((who, _)) = pair {
                    self.counts.invalidate(&who);
                }
                if let Some(k) = login.zip(ip) {
                    self.standing.insert(k, Instant::now());
                }
            }
        }
        if attempt.shared
            && how != Settle::Failure
            && let (Some(s), Some(ip)) = (&self.shared, ip)
        {
            s.settle_login(ip, login, attempt.shared_login, how);
        }
    }

    /// `login` authenticated from `ip` without a verification (a cached header): its standing
    /// is renewed, here at most every [`RENEW_EVERY`] per pair and on the replicas' shared store
    /// with it, so standing lasts while the integrator books, not 24 h after its first login.
    pub fn renew_standing(&self, ip: Option<IpAddr>, login: &str) {
        let Some(ip) = ip else { return };
        let key = (digest(login), ip);
        let now = Instant::now();
        if self
            .standing
            .get(&key)
            .is_some_and(|at| now.saturating_duration_since(at) < RENEW_EVERY)
        {
            return;
        }
        self.standing.insert(key, now);
        if let Some(s) = &self.shared {
            s.refresh_standing(ip, key.0);
        }
    }

    /// Takes one from each counter; if any is over its limit, gives them all back and says
    /// when the fullest window ends.
    fn reserve(&self, keys: &[Option<(Who, u32)>; 3]) -> Result<(), Duration> {
        let now = Instant::now();
        let mut wait = None::<Duration>;
        for (who, limit) in keys.iter().flatten() {
            let count = self.counts.get_with(*who, || {
                Arc::new(Count {
                    since: now,
                    n: AtomicU32::new(0),
                })
            });
            if count.n.fetch_add(1, Ordering::Relaxed) >= *limit {
                let left = WINDOW.saturating_sub(now.saturating_duration_since(count.since));
                wait = Some(wait.map_or(left, |w| w.max(left)));
            }
        }
        match wait {
            None => Ok(()),
            Some(w) => {
                self.give_back(keys);
                Err(w.max(Duration::from_secs(1)))
            }
        }
    }

    fn give_back(&self, keys: &[Option<(Who, u32)>]) {
        for (who, _) in keys.iter().flatten() {
            if let Some(c) = self.counts.get(who) {
                let _ =
                    c.n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
        }
    }
}

/// The counters an attempt takes from, with their limits.
fn keys(
    ip: Option<IpAddr>,
    login: Option<LoginDigest>,
    standing: bool,
    limits: Limits,
) -> [Option<(Who, u32)>; 3] {
    [
        ip.map(|ip| (Who::Ip(ip), limits.per_ip)),
        login
            .zip(ip)
            .map(|(l, ip)| (Who::Pair(l, ip), limits.per_login_address)),
        login
            .filter(|_| !standing)
            .map(|l| (Who::Login(l), limits.per_login)),
    ]
}

pub fn digest(login: &str) -> LoginDigest {
    use sha2::Digest;
    sha2::Sha256::digest(login.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        per_ip: 5,
        per_login_address: 3,
        per_login: 4,
    };

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    async fn fail(t: &Throttle, from: Option<IpAddr>, login: &str) -> Result<(), Duration> {
        let a = t.begin(from, Some(login), LIMITS).await?;
        t.settle(a, Settle::Failure);
        Ok(())
    }

    #[tokio::test]
    async fn guesses_are_limited_per_pair_per_address_and_per_login_but_standing_still_logs_in() {
        let t = Throttle::default();
        // .9 has logged in as portal before: it has standing.
        let a = t.begin(ip(9), Some("portal"), LIMITS).await.unwrap();
        t.settle(a, Settle::Success);
        for _ in 0..3 {
            fail(&t, ip(2), "portal").await.unwrap();
        }
        let wait = fail(&t, ip(2), "portal").await.unwrap_err();
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(5));
        // Another login from .2 is still allowed (the address has failures left).
        fail(&t, ip(2), "other").await.unwrap();
        // From .3 portal may still be tried once: the login's own limit (4) then holds for
        // addresses without standing, but not for .9.
        fail(&t, ip(3), "portal").await.unwrap();
        assert!(fail(&t, ip(4), "portal").await.is_err());
        let a = t.begin(ip(9), Some("portal"), LIMITS).await.unwrap();
        assert!(a.standing);
        t.settle(a, Settle::Success);
        // A right password gives its reservations back; a busy pool counts against the address.
        for _ in 0..10 {
            let a = t.begin(ip(5), Some("x"), LIMITS).await.unwrap();
            t.settle(a, Settle::Success);
        }
        for _ in 0..5 {
            let a = t.begin(ip(6), Some(&format!("l{}", 0)), LIMITS).await;
            t.settle(a.unwrap(), Settle::Busy);
        }
        assert!(t.begin(ip(6), Some("fresh"), LIMITS).await.is_err());
    }

    /// Issue 28, item 3: a login the cache vouches for renews its standing from that address,
    /// so an integrator that books all day keeps it past the first login's 24 h.
    #[tokio::test]
    async fn a_cached_login_renews_its_standing() {
        let t = Throttle::default();
        let a = t.begin(ip(7), Some("portal"), LIMITS).await.unwrap();
        assert!(!a.standing);
        t.settle(a, Settle::Failure);
        t.renew_standing(ip(7), "portal");
        let a = t.begin(ip(7), Some("portal"), LIMITS).await.unwrap();
        assert!(a.standing, "renewed by the cached login");
        t.settle(a, Settle::Success);
        // Renewal is rate-limited per pair; the entry's time says when it was last renewed.
        let at = t.standing.get(&(digest("portal"), ip(7).unwrap())).unwrap();
        t.renew_standing(ip(7), "portal");
        assert_eq!(
            t.standing.get(&(digest("portal"), ip(7).unwrap())),
            Some(at)
        );
    }
}
