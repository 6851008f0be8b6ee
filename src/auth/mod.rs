//! HTTP Basic authentication of integrators (RFC 7617) with Argon2id and a positive-result cache.
//!
//! The hot path is one HMAC and one cache lookup: a verified `Authorization` header is cached
//! under HMAC-SHA256(process key, header) — never the header itself. Concurrent requests with the
//! same uncached header share one verification (moka coalesces them), so a cache expiry under
//! load costs one Argon2 run, not one per request in flight. Verification runs on the fixed
//! [`hasher`] pool, never on the async workers. An unknown login is verified against a dummy
//! hash of the same cost, so it takes as long as a wrong password.

pub mod hasher;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::phc::PasswordHash;
use base64::Engine;
use hmac::{KeyInit, Mac};
use moka::future::Cache;

use crate::config::{Config, Integrator};
use hasher::{Busy, Hasher};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A verified header is trusted while idle for less than this. Safe to keep long: every hit is
/// checked against the integrator's *current* hash, so a changed password or a removed login
/// takes effect with the next config generation regardless of the cache.
pub const CACHE_IDLE: Duration = Duration::from_secs(15 * 60);
const CACHE_CAPACITY: u64 = 10_000;
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
    /// Too many recent failures from this address or for this login.
    Throttled,
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

pub struct Authenticator {
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
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source is available");
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Authenticator {
            mac: HmacSha256::new_from_slice(&key).expect("HMAC takes any key length"),
            cache: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_idle(CACHE_IDLE)
                .build(),
            hasher: Hasher::new(threads, HASH_QUEUE),
            dummy_hash: dummy_hash().into(),
            throttle: throttle::Throttle::default(),
        }
    }

    /// Checks an `Authorization` header against the integrators of `config`.
    ///
    /// Rights are always read from `config`, the generation the request runs under; the cache
    /// only says "this header's password matched this hash".
    pub async fn authenticate(
        &self,
        config: &Config,
        header: Option<&[u8]>,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Arc<Integrator>, AuthFailure> {
        let header = header.ok_or(AuthFailure::Malformed)?;
        if header.len() > 1024 {
            return Err(AuthFailure::Malformed);
        }
        let key = self.fingerprint(header);
        let cached = self.cache.get(&key).await;
        crate::metrics::get().auth_cache.add(
            1,
            &[opentelemetry::KeyValue::new(
                "result",
                if cached.is_some() { "hit" } else { "miss" },
            )],
        );
        // The steady state: a cached header whose hash this generation still has. Everything
        // else goes through `check`, boxed: its future (the cache's coalescing loader) is
        // several times the size of this one, and every request's future would otherwise
        // carry, and move, that space.
        if let Some(verified) = cached {
            return match verified.in_generation(config) {
                Some(rights) => rights,
                None => Box::pin(self.check(config, header, key)).await,
            };
        }
        let login = decode_basic(header).map(|(l, _)| l);
        let s = &config.server;
        if self.throttle.blocked(
            peer,
            login.as_deref(),
            s.auth_failures_per_ip,
            s.auth_failures_per_login,
        ) {
            return Err(AuthFailure::Throttled);
        }
        let result = Box::pin(self.check(config, header, key)).await;
        if matches!(result, Err(AuthFailure::Rejected | AuthFailure::Malformed)) {
            self.throttle.failed(peer, login.as_deref());
        }
        result
    }

    async fn check(
        &self,
        config: &Config,
        header: &[u8],
        key: [u8; 32],
    ) -> Result<Arc<Integrator>, AuthFailure> {
        for _ in 0..2 {
            let verified = self
                .cache
                .try_get_with(key, self.verify(config, header))
                .await
                .map_err(|e| *e)?;
            match verified.in_generation(config) {
                Some(rights) => return rights,
                None => self.cache.invalidate(&key).await,
            }
        }
        Err(AuthFailure::Rejected)
    }

    async fn verify(&self, config: &Config, header: &[u8]) -> Result<Verified, AuthFailure> {
        let (login, password) = decode_basic(header).ok_or(AuthFailure::Malformed)?;
        let integrator = config.integrators.get(login.as_str());
        let hash = integrator.map_or_else(|| self.dummy_hash.clone(), |i| i.password_hash.clone());
        let ok = self
            .hasher
            .verify(password.into_bytes(), hash.clone())
            .await
            .map_err(|Busy| AuthFailure::Busy)?;
        match integrator {
            Some(i) if ok => Ok(Verified {
                login: i.login.clone(),
                password_hash: hash,
            }),
            _ => Err(AuthFailure::Rejected),
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
fn dummy_hash() -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
