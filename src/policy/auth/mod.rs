//! HTTP Basic authentication of integrators (RFC 7617) with Argon2id and a positive-result cache.
//!
//! The hot path is one HMAC and one look-up in the calling thread's own small cache: a verified
//! `Authorization` header is cached under HMAC-SHA256(process key, header) — never the header
//! itself — in a shared cache, and for [`LOCAL_FOR`] in the thread's. Concurrent requests with the
//! same uncached header share one verification (moka coalesces them), so a cache expiry under
//! load costs one Argon2 run, not one per request in flight. Verification runs on the fixed
//! `hasher` pool, never on the async workers. An unknown login is verified against a dummy
//! hash of the same cost, so it takes as long as a wrong password.

pub(crate) mod hasher;
pub(crate) mod throttle;

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use base64::Engine;
use hmac::{KeyInit, Mac};
use moka::future::Cache;

use crate::config::{Config, Integrator};
use hasher::{Busy, Hasher, Source};
use throttle::{Limits, Settle};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A verified header is trusted while idle for less than this. Safe to keep long: every hit is
/// checked against the integrator's *current* hash, so a changed password or a removed login
/// takes effect with the next config generation regardless of the cache.
pub const CACHE_IDLE: Duration = Duration::from_secs(15 * 60);
const CACHE_CAPACITY: u64 = 10_000;
/// A header the shared cache vouched for is taken from the thread's own cache for this long,
/// then looked up in the shared one again (which keeps its idle time from running out while the
/// header is in use). Every hit, from either, is checked against the request's generation.
pub const LOCAL_FOR: Duration = Duration::from_secs(10);
/// Headers a thread keeps at most (one per integrator in use, usually a handful); when full,
/// the expired ones go, then all of them.
const LOCAL_CAPACITY: usize = 64;
/// Verifications waiting for a hashing thread before new ones are refused with 503.
const HASH_QUEUE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No header, another scheme, bad base64, no colon, not UTF-8, too long.
    Malformed,
    /// Unknown login or wrong password (indistinguishable to the client).
    Rejected,
    /// Too many verifications queued: retry shortly.
    Busy,
    /// Too many recent failures from this address or for this login: retry after this long.
    Throttled { retry_after_secs: u64 },
}

/// What a cache entry remembers: who, and which hash the password was checked against.
#[derive(Clone)]
struct Verified {
    login: Arc<str>,
    password_hash: Arc<str>,
}

impl Verified {
    /// The integrator this verification stands for in `config` (rights always come from the
    /// request's generation); `None` when it was verified against a hash `config` no longer
    /// has, so the header must be verified afresh.
    fn in_generation(&self, config: &Config) -> Option<Result<Arc<Integrator>, AuthFailure>> {
        match config.integrators.get(&self.login) {
            Some(i) if i.password_hash == self.password_hash => Some(Ok(i.clone())),
            Some(_) => None,
            None => Some(Err(AuthFailure::Rejected)),
        }
    }
}

/// One thread's recent verifications: (authenticator, fingerprint, what was verified, when
/// the shared cache vouched for it). Searched linearly: it holds a handful of entries.
type Local = Vec<(u64, [u8; 32], Verified, Instant)>;

thread_local! {
    static LOCAL: RefCell<Local> = const { RefCell::new(Vec::new()) };
}

/// Tells the authenticators of one process apart in the threads' caches (tests run many).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

pub struct Authenticator {
    id: u64,
    /// HMAC-SHA256 keyed with a random process key, its key blocks already absorbed: each
    /// fingerprint clones it instead of hashing the key again (two SHA-256 blocks saved).
    mac: HmacSha256,
    cache: Cache<[u8; 32], Verified>,
    hasher: Hasher,
    dummy_hash: Arc<str>,
    throttle: throttle::Throttle,
}

impl Authenticator {
    pub fn new() -> Self {
        Self::with_shared(None)
    }

    /// An authenticator whose failed-login counters are also kept in `shared` (Redis), so
    /// every replica sees every replica's failures.
    pub fn with_shared(shared: Option<Arc<crate::policy::shared_limits::SharedLimits>>) -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source is available");
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Authenticator {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            mac: HmacSha256::new_from_slice(&key).expect("HMAC takes any key length"),
            cache: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_idle(CACHE_IDLE)
                .build(),
            hasher: Hasher::new(threads, HASH_QUEUE),
            dummy_hash: dummy_hash().into(),
            throttle: throttle::Throttle::new(shared),
        }
    }

    /// Checks an `Authorization` header against the integrators of `config`.
    ///
    /// Rights are always read from `config`, the generation the request runs under; the caches
    /// only say "this header's password matched this hash". `now`: when the request arrived,
    /// for the thread cache's [`LOCAL_FOR`].
    pub async fn authenticate(
        &self,
        config: &Config,
        header: Option<&[u8]>,
        peer: Option<std::net::IpAddr>,
        now: Instant,
    ) -> Result<Arc<Integrator>, AuthFailure> {
        let header = header.ok_or(AuthFailure::Malformed)?;
        if header.len() > 1024 {
            return Err(AuthFailure::Malformed);
        }
        let key = self.fingerprint(header);
        // The steady state, without an await: the thread's own cache vouches for the header and
        // this generation still has its hash.
        if let Some(rights) = self.local(&key, now).and_then(|v| v.in_generation(config)) {
            crate::telemetry::metrics::get().count_auth_lookup(true);
            return rights.and_then(|i| from_allowed(i, peer));
        }
        // Everything else is boxed: the shared cache's look-up and its coalescing loader are
        // futures several times the size of this one, which every request's future would
        // otherwise carry, and move.
        Box::pin(self.shared(config, header, key, peer, now)).await
    }

    /// The shared cache, then (on a miss, or a hash this generation no longer has) the
    /// verification.
    async fn shared(
        &self,
        config: &Config,
        header: &[u8],
        key: [u8; 32],
        peer: Option<std::net::IpAddr>,
        now: Instant,
    ) -> Result<Arc<Integrator>, AuthFailure> {
        let cached = self.cache.get(&key).await;
        crate::telemetry::metrics::get().count_auth_lookup(cached.is_some());
        let result = match cached.map(|v| v.in_generation(config)) {
            Some(Some(rights)) => {
                // Vouched for by the cache (at most every LOCAL_FOR per thread and header):
                // the integrator is using the login from here, so its standing lasts.
                if let Ok(i) = &rights {
                    self.throttle
                        .renew_standing(peer.map(client_group), &i.login);
                }
                rights
            }
            _ => self.verify_throttled(config, header, key, peer).await,
        }
        .and_then(|i| from_allowed(i, peer));
        // Whatever vouched for it, an integrator granted now was checked against its hash in
        // this generation: that is what the thread's cache remembers.
        if let Ok(i) = &result {
            let verified = Verified {
                login: i.login.clone(),
                password_hash: i.password_hash.clone(),
            };
            self.remember_locally(key, verified, now);
        }
        result
    }

    /// A header the shared cache does not vouch for: refused at once if its login may not
    /// be used from `peer` (no hashing, nothing counted), else verified within the throttle.
    async fn verify_throttled(
        &self,
        config: &Config,
        header: &[u8],
        key: [u8; 32],
        peer: Option<std::net::IpAddr>,
    ) -> Result<Arc<Integrator>, AuthFailure> {
        let login = decode_basic(header).map(|(l, _)| l);
        if let Some(i) = login.as_deref().and_then(|l| config.integrators.get(l))
            && !i.allows_from(peer)
        {
            return Err(AuthFailure::Rejected);
        }
        self.check(config, header, key, peer).await
    }

    /// What this thread's cache holds for `key`, if the shared cache vouched for it less than
    /// [`LOCAL_FOR`] before `now`.
    fn local(&self, key: &[u8; 32], now: Instant) -> Option<Verified> {
        LOCAL.with_borrow(|local| {
            local
                .iter()
                .find(|(id, k, _, _)| *id == self.id && k == key)
                .filter(|(.., at)| now.saturating_duration_since(*at) < LOCAL_FOR)
                .map(|(_, _, v, _)| v.clone())
        })
    }

    fn remember_locally(&self, key: [u8; 32], verified: Verified, now: Instant) {
        LOCAL.with_borrow_mut(|local| {
            local.retain(|(id, k, _, at)| {
                !(*id == self.id && *k == key) && now.saturating_duration_since(*at) < LOCAL_FOR
            });
            if local.len() >= LOCAL_CAPACITY {
                local.clear();
            }
            local.push((self.id, key, verified, now));
        });
    }

    async fn check(
        &self,
        config: &Config,
        header: &[u8],
        key: [u8; 32],
        peer: Option<std::net::IpAddr>,
    ) -> Result<Arc<Integrator>, AuthFailure> {
        for _ in 0..2 {
            let verified = self
                .cache
                .try_get_with(key, self.verify(config, header, peer))
                .await
                .map_err(|e| *e)?;
            match verified.in_generation(config) {
                Some(rights) => return rights,
                None => self.cache.invalidate(&key).await,
            }
        }
        Err(AuthFailure::Rejected)
    }

    /// One verification (concurrent requests with the same header share it), reserved in
    /// the throttle first and settled with its result; queued for hashing as `peer`'s.
    async fn verify(
        &self,
        config: &Config,
        header: &[u8],
        peer: Option<std::net::IpAddr>,
    ) -> Result<Verified, AuthFailure> {
        // Counters and the hashing queue's turns go by client: an IPv6 host has a /64.
        let peer = peer.map(client_group);
        let decoded = decode_basic(header);
        let s = &config.server;
        let limits = Limits {
            per_ip: s.auth_failures_per_ip,
            per_login_address: s.auth_failures_per_login,
            per_login: s.auth_guesses_per_login,
        };
        let attempt = self
            .throttle
            .begin(peer, decoded.as_ref().map(|(l, _)| l.as_str()), limits)
            .await
            .map_err(|wait| AuthFailure::Throttled {
                retry_after_secs: wait.as_secs().max(1),
            })?;
        let Some((login, password)) = decoded else {
            self.throttle.settle(attempt, Settle::Failure);
            return Err(AuthFailure::Malformed);
        };
        let integrator = config.integrators.get(login.as_str());
        let hash = integrator.map_or_else(|| self.dummy_hash.clone(), |i| i.password_hash.clone());
        let source = Source {
            addr: peer,
            standing: attempt.standing,
        };
        let ok = match self
            .hasher
            .verify(source, password.into_bytes(), hash.clone())
            .await
        {
            Ok(ok) => ok,
            Err(Busy) => {
                self.throttle.settle(attempt, Settle::Busy);
                return Err(AuthFailure::Busy);
            }
        };
        match integrator {
            Some(i) if ok => {
                self.throttle.settle(attempt, Settle::Success);
                Ok(Verified {
                    login: i.login.clone(),
                    password_hash: hash,
                })
            }
            _ => {
                self.throttle.settle(attempt, Settle::Failure);
                Err(AuthFailure::Rejected)
            }
        }
    }

    /// Argon2 verifications run so far (each is a cache miss that reached the hashing pool).
    pub fn verifications(&self) -> u64 {
        self.hasher.runs()
    }

    fn fingerprint(&self, header: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(header);
        mac.finalize().into_bytes().into()
    }
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new()
    }
}

/// The integrator, if it may authenticate from `peer` (its `allow_from`).
fn from_allowed(
    i: Arc<Integrator>,
    peer: Option<std::net::IpAddr>,
) -> Result<Arc<Integrator>, AuthFailure> {
    if i.allows_from(peer) {
        Ok(i)
    } else {
        Err(AuthFailure::Rejected)
    }
}

/// Splits `Basic base64(login:password)`; the scheme name is case-insensitive (RFC 7617).
pub fn decode_basic(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_matches(' '))
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (login, password) = decoded.split_once(':')?;
    Some((login.to_owned(), password.to_owned()))
}

/// An Argon2id PHC string with OWASP's recommended parameters (m=19456 KiB, t=2, p=1).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    let hash: PasswordHash = argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(hash.to_string())
}

/// A PHC string with the default Argon2id parameters, a random salt and a random output: an
/// unknown login is verified against it at full cost and always fails. Made without running
/// Argon2, so start-up neither waits for a hash nor touches its 19 MiB.
pub(crate) fn dummy_hash() -> String {
    use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
    let (mut salt, mut output) = ([0u8; 16], [0u8; 32]);
    getrandom::fill(&mut salt).expect("the OS random source is available");
    getrandom::fill(&mut output).expect("the OS random source is available");
    let p = argon2::Params::default();
    format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        p.m_cost(),
        p.t_cost(),
        p.p_cost(),
        B64.encode(salt),
        B64.encode(output)
    )
}

/// The address a client is counted as: an IPv4 address (also written IPv4-mapped), or an IPv6
/// address's /64 (one host, or one customer's network, has every address of it).
pub fn client_group(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_and_a_mapped_ipv4_as_itself() {
        let g = |s: &str| client_group(s.parse().unwrap()).to_string();
        assert_eq!(g("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(g("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::");
        assert_ne!(g("2001:db8:1:3::1"), g("2001:db8:1:2::1"));
        assert_eq!(g("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(g("203.0.113.7"), "203.0.113.7");
    }

    /// The shipped routes.toml (the demo integrator's published password), or the same file
    /// with that integrator's hash replaced by one of `password`.
    fn shipped(password: Option<&str>) -> Config {
        use crate::demo::{DEMO_LOGIN, DemoSecrets};
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.toml");
        let base = Config::load(&path, &DemoSecrets).unwrap();
        let Some(password) = password else {
            return base;
        };
        let text = std::fs::read_to_string(&path).unwrap().replace(
            &*base.integrators[DEMO_LOGIN].password_hash,
            &hash_password(password).unwrap(),
        );
        Config::from_bytes(text.as_bytes(), path.parent().unwrap(), &DemoSecrets).unwrap()
    }

    #[tokio::test]
    async fn a_threads_cache_vouches_for_a_while_then_the_shared_one_is_asked_again() {
        use crate::demo::{DEMO_LOGIN, DEMO_PASSWORD};
        let auth = Authenticator::new();
        let c = shipped(None);
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{DEMO_LOGIN}:{DEMO_PASSWORD}"))
        );
        let header = header.as_bytes();
        let ok = |r: Result<Arc<Integrator>, AuthFailure>| r.map(|i| i.login.to_string());
        assert_eq!(
            ok(auth
                .authenticate(&c, Some(header), None, Instant::now())
                .await),
            Ok(DEMO_LOGIN.into())
        );
        assert_eq!(auth.verifications(), 1);

        // The shared cache forgets the header: this thread's cache still vouches for it.
        let key = auth.fingerprint(header);
        auth.cache.invalidate(&key).await;
        assert!(auth.local(&key, Instant::now()).is_some());
        assert_eq!(
            ok(auth
                .authenticate(&c, Some(header), None, Instant::now())
                .await),
            Ok(DEMO_LOGIN.into())
        );
        assert_eq!(auth.verifications(), 1, "served from the thread's cache");

        // A new password in the next generation: the thread's entry no longer matches a hash
        // there, so the header is verified again (and fails).
        let changed = shipped(Some("other"));
        assert_eq!(
            ok(auth
                .authenticate(&changed, Some(header), None, Instant::now())
                .await),
            Err(AuthFailure::Rejected)
        );
        assert_eq!(auth.verifications(), 2);

        // Past LOCAL_FOR the thread's cache does not answer; another authenticator's entries
        // are never its own.
        assert!(auth.local(&key, Instant::now() + LOCAL_FOR).is_none());
        assert!(Authenticator::new().local(&key, Instant::now()).is_none());
    }

    #[test]
    fn the_dummy_hash_costs_a_full_verification_and_matches_nothing() {
        let dummy = dummy_hash();
        let real = hash_password("s3cret").unwrap();
        let params = |phc: &str| {
            let h = PasswordHash::new(phc).unwrap();
            (
                h.algorithm.to_string(),
                h.version,
                argon2::Params::try_from(&h).unwrap(),
            )
        };
        assert_eq!(
            params(&dummy),
            params(&real),
            "same algorithm and cost as a real hash"
        );
        assert_ne!(dummy, dummy_hash(), "random each time");
        let mut blocks = Vec::new();
        assert!(!hasher::verify_with(&mut blocks, b"s3cret", &dummy));
        assert!(!hasher::verify_with(&mut blocks, b"", &dummy));
        assert_eq!(
            blocks.len(),
            argon2::Params::default().block_count(),
            "the verification ran Argon2 over the full memory"
        );
    }

    #[test]
    fn decodes_basic_and_refuses_the_rest() {
        let ok = format!(
            "bAsIc {}",
            base64::engine::general_purpose::STANDARD.encode("portal:pa:ss")
        );
        assert_eq!(
            decode_basic(ok.as_bytes()),
            Some(("portal".into(), "pa:ss".into()))
        );
        let no_colon = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("portal")
        );
        for bad in [
            "Bearer abc".as_bytes(),
            b"Basic !!!",
            no_colon.as_bytes(),
            b"Basic",
            b"Basic \xff\xfe",
        ] {
            assert_eq!(decode_basic(bad), None);
        }
    }

    #[test]
    fn hash_then_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let mut blocks = Vec::new();
        assert!(hasher::verify_with(&mut blocks, b"s3cret", &h));
        assert!(!hasher::verify_with(&mut blocks, b"s3cret ", &h));
        assert!(!hasher::verify_with(
            &mut blocks,
            b"s3cret",
            "$argon2id$v=19$garbage"
        ));
    }
}
