//! Console sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` when the
//! console is reached over TLS), kept server-side with its operator's login, its CSRF token, an
//! idle and an absolute expiry. Sign-out ends it here, not only in the browser; a sign-in makes
//! a new id. Rights are read from the live configuration on every request: an operator removed
//! or made a viewer by a reload loses them at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "mis_console";
/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after its sign-in, however active.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most (the oldest go first): signing in again and again cannot fill memory.
const MAX_SESSIONS: usize = 10_000;

/// A signed-in operator, as a request sees it.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub login: Arc<str>,
    /// Sent with every form; a state change without it is refused.
    pub csrf: String,
}

struct Held {
    login: Arc<str>,
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

#[derive(Default)]
pub struct Sessions {
    held: Mutex<HashMap<String, Held>>,
}

/// 32 random bytes, hex.
fn token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source is available");
    crate::wire::hex::hex(&b)
}

impl Sessions {
    /// A new session for `login` (a fresh id: one a browser held before is never reused).
    pub fn start(&self, login: Arc<str>) -> Session {
        let now = Instant::now();
        let (id, csrf) = (token(), token());
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|_, h| alive(h, now));
        if held.len() >= MAX_SESSIONS
            && let Some(oldest) = held
                .iter()
                .min_by_key(|(_, h)| h.created)
                .map(|(k, _)| k.clone())
        {
            held.remove(&oldest);
        }
        held.insert(
            id.clone(),
            Held {
                login: login.clone(),
                csrf: csrf.clone(),
                created: now,
                last_seen: now,
            },
        );
        Session { id, login, csrf }
    }

    /// The live session `id` names, its idle time renewed.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let h = held.get_mut(id)?;
        if !alive(h, now) {
            held.remove(id);
            return None;
        }
        h.last_seen = now;
        Some(Session {
            id: id.to_owned(),
            login: h.login.clone(),
            csrf: h.csrf.clone(),
        })
    }

    pub fn end(&self, id: &str) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

fn alive(h: &Held, now: Instant) -> bool {
    now.duration_since(h.last_seen) < IDLE && now.duration_since(h.created) < ABSOLUTE
}

impl Session {
    /// Whether `given` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, given: &str) -> bool {
        given.len() == self.csrf.len() && bool::from(given.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

/// The session id in a `Cookie` header, if any.
pub fn cookie_id(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value for `id` (`None`: one that ends it in the browser).
pub fn set_cookie(id: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => format!(
            "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            ABSOLUTE.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_id_until_it_ends() {
        let s = Sessions::default();
        let a = s.start("ops".into());
        let b = s.start("ops".into());
        assert_ne!(a.id, b.id, "a new id at every sign-in");
        assert_ne!(a.csrf, b.csrf);
        assert_eq!(&*s.get(&a.id).unwrap().login, "ops");
        assert!(s.get(&a.id).unwrap().csrf_matches(&a.csrf));
        assert!(!s.get(&a.id).unwrap().csrf_matches(&b.csrf));
        assert!(!s.get(&a.id).unwrap().csrf_matches(""));
        s.end(&a.id);
        assert!(s.get(&a.id).is_none());
        assert!(s.get(&b.id).is_some());
    }

    #[test]
    fn only_a_well_formed_cookie_names_a_session() {
        let id = "a".repeat(64);
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("x=1; {COOKIE}={id}").parse().unwrap(),
        );
        assert_eq!(cookie_id(&h), Some(id));
        h.insert(
            http::header::COOKIE,
            format!("{COOKIE}=<script>").parse().unwrap(),
        );
        assert_eq!(cookie_id(&h), None);
    }
}
