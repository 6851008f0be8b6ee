//! The shared idempotency store on Redis, for several gateway replicas.
//!
//! Same semantics as [`crate::policy::idempotency::MemoryStore`]; the claim is one Lua script, so two
//! replicas never both claim a key. One key per slot, `mis-gateway:idem:<hex slot>`, holding
//! compact JSON: the body's fingerprint (hex) and either an in-flight marker or the
//! [`Outcome`] — nothing else (no bodies, no patient data).
//!
//! A claim carries its replica's owner id and a lease, a second key (`<key>:lease`) that expires
//! unless the booking renews it: an in-flight record without its lease is a lapsed claim.
//!
//! The connection is made on first use (never in [`RedisStore::open`]) by [`connect`] (TLS,
//! AUTH, timeouts from [`RedisSettings`]) in a task of its own, which a call waits for at most
//! the command timeout; every command is bounded by it; a failed connect is not retried for
//! [`RETRY_AFTER`]; a connection that stops answering is given up. Errors never name a key, a
//! value, the URL or a password.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::policy::idempotency::{Begin, Fingerprint, Outcome, Slot, Store, StoreError};
use crate::wire::hex::hex;

/// Every key this store writes starts with this.
pub const KEY_PREFIX: &str = "mis-gateway:idem:";
/// Set (without a TTL) by the first replica that finds it absent: a Redis that lost it lost its
/// keys too, and the journal puts them back.
pub const FILLED_MARK: &str = "mis-gateway:idem-filled";
/// A claim's lease is its key with this suffix.
pub const LEASE_SUFFIX: &str = ":lease";
/// The longest wait for a connection to Redis.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest wait for one command's answer, and for a connect in progress (the connect
/// itself goes on).
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failed connect, calls fail at once for this long before the next attempt.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Claims KEYS[1] for ARGV[1] (an in-flight record) for ARGV[2] ms if nobody holds it, with
/// the lease KEYS[2] = owner ARGV[3] for ARGV[4] ms; returns "claimed", the record that is
/// there, or "lapsed:" and the record when it is an in-flight claim without its lease.
const CLAIM: &str = r#"
local held = redis.call('GET', KEYS[1])
if held then
  if string.find(held, '"state":"in_flight"', 1, true) and redis.call('EXISTS', KEYS[2]) == 0 then
    return 'lapsed:' .. held
  end
  return held
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return 'claimed'
"#;

/// Extends the lease KEYS[2] to ARGV[2] ms if KEYS[1] is still in flight for owner ARGV[1].
const RENEW: &str = r#"
local held = redis.call('GET', KEYS[1])
if held and string.find(held, '"state":"in_flight"', 1, true)
   and string.find(held, '"owner":"' .. ARGV[1] .. '"', 1, true) then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// Records the outcome ARGV[1] for ARGV[2] ms and drops the lease.
const FINISH: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"#;

/// Deletes KEYS[1] and its lease if it is an in-flight claim of owner ARGV[1].
const RELEASE: &str = r#"
local held = redis.call('GET', KEYS[1])
if held and string.find(held, '"state":"in_flight"', 1, true)
   and string.find(held, '"owner":"' .. ARGV[1] .. '"', 1, true) then
  redis.call('DEL', KEYS[1], KEYS[2])
end
return 1
"#;

/// If KEYS[1] is unknown (an unknown outcome, or an in-flight claim without its lease): with
/// ARGV[1] empty deletes it, else records the outcome ARGV[1] under the same fingerprint and
/// expiry. Returns 1 if it did.
const RESOLVE: &str = r#"
local held = redis.call('GET', KEYS[1])
if not held then
  if ARGV[1] == '' then
    return 1
  end
  if ARGV[2] == '' then
    return 0
  end
  redis.call('SET', KEYS[1], '{"fp":"' .. ARGV[2] .. '","state":"done","outcome":' .. ARGV[1] .. '}', 'PX', ARGV[3])
  return 1
end
local unknown = string.find(held, '"kind":"outcome_unknown"', 1, true)
  or string.find(held, '"kind":"mis_timeout"', 1, true)
  or (string.find(held, '"state":"in_flight"', 1, true) and redis.call('EXISTS', KEYS[2]) == 0)
if not unknown then
  return 0
end
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
local fp = string.match(held, '"fp":"(%x+)"')
redis.call('SET', KEYS[1], '{"fp":"' .. fp .. '","state":"done","outcome":' .. ARGV[1] .. '}', 'KEEPTTL')
redis.call('DEL', KEYS[2])
return 1
"#;

/// Where and how to reach Redis: the one place connections are set up (the idempotency store,
/// and any other shared state on the same Redis).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port/db` or `rediss://host:port/db` (TLS).
    pub url: String,
    /// ACL user (Redis 6+); none: the default user.
    pub username: Option<String>,
    /// AUTH password, read from the environment or a file (never from routes.toml).
    pub password: Option<String>,
    /// PEM roots to trust for `rediss://` instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

impl RedisSettings {
    /// Settings for `url` with the default timeouts and no credentials.
    pub fn new(url: impl Into<String>) -> RedisSettings {
        RedisSettings {
            url: url.into(),
            username: None,
            password: None,
            ca_pem: None,
            connect_timeout: CONNECT_TIMEOUT,
            command_timeout: COMMAND_TIMEOUT,
        }
    }

    /// The client for these settings (no I/O).
    pub fn client(&self) -> Result<redis::Client, StoreError> {
        use redis::IntoConnectionInfo;
        let bad = |e: redis::RedisError| {
            StoreError(format!("the Redis URL is not usable: {}", describe(&e)))
        };
        let mut info = self.url.as_str().into_connection_info().map_err(bad)?;
        let mut redis_info = info.redis_settings().clone();
        if let Some(user) = &self.username {
            redis_info = redis_info.set_username(user);
        }
        if let Some(password) = &self.password {
            redis_info = redis_info.set_password(password);
        }
        info = info.set_redis_settings(redis_info);
        let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        if tls {
            // rustls picks the process's provider: ring, as everywhere in this tree.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        match (&self.ca_pem, tls) {
            (Some(pem), true) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            )
            .map_err(bad),
            _ => redis::Client::open(info).map_err(bad),
        }
    }
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the URL (it may carry a password) nor the password.
        f.debug_struct("RedisSettings")
            .field("tls", &self.url.starts_with("rediss://"))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_pem.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

/// Connects to Redis as `settings` say, within their connect timeout; the manager reconnects
/// by itself after a dropped connection, bounded by the same timeouts.
pub async fn connect(settings: &RedisSettings) -> Result<ConnectionManager, StoreError> {
    connect_client(settings.client()?, settings).await
}

async fn connect_client(
    client: redis::Client,
    settings: &RedisSettings,
) -> Result<ConnectionManager, StoreError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.command_timeout))
        // One attempt per reconnect: callers fail fast and the next command tries again.
        .set_number_of_retries(0);
    match tokio::time::timeout(
        settings.connect_timeout,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    {
        Ok(Ok(manager)) => Ok(manager),
        Ok(Err(e)) => Err(StoreError(format!(
            "cannot connect to Redis: {}",
            describe(&e)
        ))),
        Err(_) => Err(StoreError("cannot connect to Redis: timed out".into())),
    }
}

/// What one key holds.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The fingerprint of the key's first body, hex.
    fp: String,
    #[serde(flatten)]
    state: State,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum State {
    /// Claimed by the replica `owner` (its store's random id, hex).
    InFlight {
        #[serde(default)]
        owner: String,
    },
    Done {
        outcome: Outcome,
    },
}

type Connecting = Shared<BoxFuture<'static, Result<Arc<ConnectionManager>, StoreError>>>;

/// The connection, made when first needed and remade after it is given up.
enum Link {
    /// No connection; the next call connects, unless it is before `retry_at`.
    Down { retry_at: Option<Instant> },
    /// A connect in progress, shared by every caller that needs it.
    Connecting(Connecting),
    /// A connection (the manager reconnects by itself after a dropped connection).
    Up(Arc<ConnectionManager>),
}

pub struct RedisStore {
    client: redis::Client,
    settings: Arc<RedisSettings>,
    link: Arc<Mutex<Link>>,
    scripts: Scripts,
    /// This store's claims are marked with it; only it renews or releases them.
    owner: String,
    ttl_ms: u64,
    lease: Duration,
}

struct Scripts {
    claim: redis::Script,
    renew: redis::Script,
    finish: redis::Script,
    release: redis::Script,
    resolve: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may carry a password.
        f.debug_struct("RedisStore")
            .field("ttl_ms", &self.ttl_ms)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Opens a store at `url` (`redis://host:port/db`) with default settings (see
    /// [`RedisStore::with_settings`]).
    pub fn open(url: &str, ttl: Duration, lease: Duration) -> Result<RedisStore, StoreError> {
        Self::with_settings(RedisSettings::new(url), ttl, lease)
    }

    /// Opens a store without blocking on I/O: the connection is made, and remade, when needed.
    /// `ttl` is how long a key is remembered; `lease` how long a claim lives unrenewed.
    pub fn with_settings(
        settings: RedisSettings,
        ttl: Duration,
        lease: Duration,
    ) -> Result<RedisStore, StoreError> {
        let client = settings.client()?;
        let mut owner = [0u8; 32];
        getrandom::fill(&mut owner[..8]).expect("the OS random source is available");
        Ok(RedisStore {
            client,
            settings: Arc::new(settings),
            link: Arc::new(Mutex::new(Link::Down { retry_at: None })),
            scripts: Scripts {
                claim: redis::Script::new(CLAIM),
                renew: redis::Script::new(RENEW),
                finish: redis::Script::new(FINISH),
                release: redis::Script::new(RELEASE),
                resolve: redis::Script::new(RESOLVE),
            },
            owner: hex(&owner)[..16].to_owned(),
            ttl_ms: millis(ttl),
            lease,
        })
    }

    /// The connection. If there is none, one attempt is started in its own task (it may take
    /// up to the connect timeout) and shared by every caller; a caller waits for it at most the
    /// command timeout. No lock is held across an await.
    async fn connection(&self) -> Result<Arc<ConnectionManager>, StoreError> {
        let attempt = {
            let mut link = lock(&self.link);
            match &*link {
                Link::Up(manager) => return Ok(manager.clone()),
                Link::Connecting(attempt) => attempt.clone(),
                Link::Down { retry_at: Some(at) } if Instant::now() < *at => {
                    return Err(StoreError(
                        "not connected to Redis (the last attempt failed; retrying shortly)".into(),
                    ));
                }
                Link::Down { .. } => {
                    let task = tokio::spawn(connect_link(
                        self.client.clone(),
                        self.settings.clone(),
                        self.link.clone(),
                    ));
                    let attempt = async move {
                        task.await.unwrap_or_else(|_| {
                            Err(StoreError("the Redis connect task failed".into()))
                        })
                    }
                    .boxed()
                    .shared();
                    *link = Link::Connecting(attempt.clone());
                    attempt
                }
            }
        };
        tokio::time::timeout(self.settings.command_timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(StoreError("still connecting to Redis".into())))
    }

    /// Gives up `manager` (it stopped answering): the next call connects afresh. The manager
    /// only reconnects by itself after a dropped connection, not a silent one.
    fn discard(&self, manager: &Arc<ConnectionManager>) {
        let mut link = lock(&self.link);
        if matches!(&*link, Link::Up(current) if Arc::ptr_eq(current, manager)) {
            *link = Link::Down { retry_at: None };
        }
    }

    /// Runs `command` on the connection within the command timeout (also for
    /// [`crate::policy::shared_limits`], which shares this connection).
    pub(crate) async fn run<T, F, Fut>(&self, what: &str, command: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let manager = self.connection().await?;
        let limit = self.settings.command_timeout;
        match tokio::time::timeout(limit, command((*manager).clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_timeout() {
                    self.discard(&manager);
                }
                Err(StoreError(format!("Redis {what} failed: {}", describe(&e))))
            }
            Err(_) => {
                self.discard(&manager);
                Err(StoreError(format!("Redis {what} timed out")))
            }
        }
    }

    fn key(slot: &Slot) -> String {
        let mut key = String::with_capacity(KEY_PREFIX.len() + 64 + LEASE_SUFFIX.len());
        key.push_str(KEY_PREFIX);
        key.push_str(&hex(slot));
        key
    }

    /// The key of a slot's lease.
    fn lease_key(slot: &Slot) -> String {
        let mut key = Self::key(slot);
        key.push_str(LEASE_SUFFIX);
        key
    }

    /// Runs one of the store's scripts on a slot's two keys with `args`.
    async fn script<T: redis::FromRedisValue>(
        &self,
        what: &str,
        script: &redis::Script,
        slot: &Slot,
        args: &[&str],
    ) -> Result<T, StoreError> {
        let (key, lease) = (Self::key(slot), Self::lease_key(slot));
        self.run(what, |mut con| async move {
            let mut call = script.key(key);
            call.key(lease);
            for a in args {
                call.arg(*a);
            }
            call.invoke_async(&mut con).await
        })
        .await
    }
}

fn lock(link: &Mutex<Link>) -> MutexGuard<'_, Link> {
    link.lock().unwrap_or_else(|e| e.into_inner())
}

/// One connect attempt (the only one running: attempts start only from `Down`); records its
/// result in `link`.
async fn connect_link(
    client: redis::Client,
    settings: Arc<RedisSettings>,
    link: Arc<Mutex<Link>>,
) -> Result<Arc<ConnectionManager>, StoreError> {
    let result = connect_client(client, &settings).await.map(Arc::new);
    *lock(&link) = match &result {
        Ok(manager) => Link::Up(manager.clone()),
        Err(_) => Link::Down {
            retry_at: Some(Instant::now() + RETRY_AFTER),
        },
    };
    result
}

impl Store for RedisStore {
    fn begin(
        &self,
        slot: Slot,
        fingerprint: Fingerprint,
    ) -> BoxFuture<'_, Result<Begin, StoreError>> {
        Box::pin(async move {
            let fp = hex(&fingerprint);
            let in_flight = encode(&Record {
                fp: fp.clone(),
                state: State::InFlight {
                    owner: self.owner.clone(),
                },
            })?;
            let (ttl, lease) = (self.ttl_ms.to_string(), millis(self.lease).to_string());
            let answer: String = self
                .script(
                    "claim",
                    &self.scripts.claim,
                    &slot,
                    &[&in_flight, &ttl, &self.owner, &lease],
                )
                .await?;
            if answer == "claimed" {
                return Ok(Begin::Claimed);
            }
            let (lapsed, answer) = match answer.strip_prefix("lapsed:") {
                Some(rest) => (true, rest),
                None => (false, answer.as_str()),
            };
            let held: Record = serde_json::from_str(answer)
                .map_err(|_| StoreError("a stored idempotency record is unreadable".into()))?;
            Ok(match held.state {
                _ if held.fp != fp => Begin::Mismatch,
                State::InFlight { .. } if lapsed => Begin::Lapsed,
                State::InFlight { .. } => Begin::InFlight,
                State::Done { outcome } => Begin::Done(outcome),
            })
        })
    }

    fn finish(
        &self,
        slot: Slot,
        fingerprint: Fingerprint,
        outcome: Outcome,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let done = encode(&Record {
                fp: hex(&fingerprint),
                state: State::Done { outcome },
            })?;
            let ttl = self.ttl_ms.to_string();
            self.script::<()>("finish", &self.scripts.finish, &slot, &[&done, &ttl])
                .await
        })
    }

    fn release(&self, slot: Slot) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.script::<()>("release", &self.scripts.release, &slot, &[&self.owner])
                .await
        })
    }

    fn renew(&self, slot: Slot) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let lease = millis(self.lease).to_string();
            let renewed: i64 = self
                .script("renew", &self.scripts.renew, &slot, &[&self.owner, &lease])
                .await?;
            Ok(renewed == 1)
        })
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    fn resolve(
        &self,
        slot: Slot,
        fingerprint: Option<Fingerprint>,
        booked: Option<Outcome>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let outcome = match &booked {
                Some(o) => serde_json::to_string(o)
                    .map_err(|_| StoreError("an outcome cannot be encoded".into()))?,
                None => String::new(),
            };
            let fp = fingerprint.map(|f| hex(&f)).unwrap_or_default();
            let ttl = self.ttl_ms.to_string();
            let done: i64 = self
                .script(
                    "resolve",
                    &self.scripts.resolve,
                    &slot,
                    &[&outcome, &fp, &ttl],
                )
                .await?;
            Ok(done == 1)
        })
    }

    fn came_back_empty(&self) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let set: Option<String> = self
                .run("mark", |mut con| async move {
                    redis::cmd("SET")
                        .arg(FILLED_MARK)
                        .arg("1")
                        .arg("NX")
                        .query_async(&mut con)
                        .await
                })
                .await?;
            Ok(set.is_some())
        })
    }

    fn restore(
        &self,
        slot: Slot,
        fingerprint: Fingerprint,
        outcome: Outcome,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let value = encode(&Record {
                fp: hex(&fingerprint),
                state: State::Done { outcome },
            })?;
            let key = Self::key(&slot);
            let ttl = self.ttl_ms;
            self.run("restore", |mut con| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async::<Option<String>>(&mut con)
                    .await
            })
            .await
            .map(|_| ())
        })
    }
}

fn encode(record: &Record) -> Result<String, StoreError> {
    serde_json::to_string(record)
        .map_err(|_| StoreError("an idempotency record cannot be encoded".into()))
}

/// What went wrong, without anything the error may quote (keys, values, the URL).
fn describe(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connection_refusal() {
        "connection refused".into()
    } else if e.is_connection_dropped() {
        "connection lost".into()
    } else if e.is_io_error() {
        "I/O error".into()
    } else if let Some(code) = e.code() {
        format!("server error {code}")
    } else {
        format!("{:?}", e.kind())
    }
}

/// Whole milliseconds, at least 1 (Redis refuses `PX 0`).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_does_no_io_and_rejects_bad_urls() {
        // Nothing listens there, and no runtime is needed: `open` only parses.
        assert!(
            RedisStore::open(
                "redis://127.0.0.1:1/0",
                Duration::from_secs(1),
                Duration::from_secs(1)
            )
            .is_ok()
        );
        let e = RedisStore::open(
            "rediss-nope://user:secret@host",
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(!e.0.contains("secret"), "{e}");
    }

    #[test]
    fn records_are_compact_and_keys_are_hex() {
        let r = Record {
            fp: hex(&[0xab; 32]),
            state: State::InFlight {
                owner: "0123456789abcdef".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            format!(
                r#"{{"fp":"{}","state":"in_flight","owner":"0123456789abcdef"}}"#,
                "ab".repeat(32)
            )
        );
        let r = Record {
            fp: hex(&[1; 32]),
            state: State::Done {
                outcome: Outcome::MisTimeout,
            },
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.ends_with(r#""state":"done","outcome":{"kind":"mis_timeout"}}"#));
        let back: Record = serde_json::from_str(&json).unwrap();
        assert!(matches!(
            back.state,
            State::Done {
                outcome: Outcome::MisTimeout
            }
        ));
        assert_eq!(
            RedisStore::key(&[0x0f; 32]),
            format!("mis-gateway:idem:{}", "0f".repeat(32))
        );
        assert_eq!(millis(Duration::ZERO), 1);
    }
}
