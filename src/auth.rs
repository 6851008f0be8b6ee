//! HTTP Basic authentication of integrators (RFC 7617) with Argon2id and a positive-result cache.
//!
//! The hot path is one HMAC and one cache lookup: a verified `Authorization` header is cached
//! under HMAC-SHA256(process key, header) — never the header itself — for a short time. A miss
//! runs Argon2 on the blocking pool behind a semaphore, so a storm of new logins cannot starve
//! the async workers. An unknown login is verified against a dummy hash with the same cost, so
//! it takes as long as a wrong password.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::PasswordVerifier;
use argon2::password_hash::phc::PasswordHash;
use base64::Engine;
use hmac::{KeyInit, Mac};
use moka::future::Cache;
use tokio::sync::Semaphore;

use crate::config::{Config, Integrator};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How long a verified header is trusted without running Argon2 again.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_CAPACITY: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No header, another scheme, bad base64, no colon, not UTF-8, too long.
    Malformed,
    /// Unknown login or wrong password (indistinguishable to the client).
    Rejected,
}

/// What a cache entry remembers: who, and which hash the password was checked against.
#[derive(Clone)]
struct Verified {
    login: Arc<str>,
    password_hash: Arc<str>,
}

pub struct Authenticator {
    key: [u8; 32],
    cache: Cache<[u8; 32], Verified>,
    hashing: Semaphore,
    dummy_hash: Arc<str>,
}

impl Authenticator {
    pub fn new() -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source is available");
        let permits = std::thread::available_parallelism().map_or(2, |n| n.get());
        Authenticator {
            key,
            cache: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(CACHE_TTL)
                .build(),
            hashing: Semaphore::new(permits),
            dummy_hash: hash_password(&random_token())
                .expect("hashing a random password")
                .into(),
        }
    }

    /// Checks an `Authorization` header against the integrators of `config`.
    ///
    /// Rights are always read from `config`, the generation the request runs under; the cache
    /// only says "this header's password matched this hash". A changed hash or a removed login
    /// therefore takes effect with the next generation without clearing anything.
    pub async fn authenticate(
        &self,
        config: &Config,
        header: Option<&[u8]>,
    ) -> Result<Arc<Integrator>, AuthFailure> {
        let header = header.ok_or(AuthFailure::Malformed)?;
        if header.len() > 1024 {
            return Err(AuthFailure::Malformed);
        }
        let cache_key = self.fingerprint(header);
        if let Some(v) = self.cache.get(&cache_key).await
            && let Some(i) = config.integrators.get(&v.login)
            && i.password_hash == v.password_hash
        {
            return Ok(i.clone());
        }
        let (login, password) = decode_basic(header).ok_or(AuthFailure::Malformed)?;
        let integrator = config.integrators.get(login.as_str()).cloned();
        let hash = integrator
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |i| i.password_hash.clone());
        let ok = {
            let _permit = self
                .hashing
                .acquire()
                .await
                .map_err(|_| AuthFailure::Rejected)?;
            tokio::task::spawn_blocking(move || verify_password(&password, &hash))
                .await
                .unwrap_or(false)
        };
        match integrator {
            Some(i) if ok => {
                let v = Verified {
                    login: i.login.clone(),
                    password_hash: i.password_hash.clone(),
                };
                self.cache.insert(cache_key, v).await;
                Ok(i)
            }
            _ => Err(AuthFailure::Rejected),
        }
    }

    fn fingerprint(&self, header: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
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

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

fn random_token() -> String {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).expect("the OS random source is available");
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3cret ", &h));
    }
}
