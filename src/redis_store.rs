//! The shared idempotency store on Redis, for several gateway replicas.
//!
//! Same semantics as [`crate::idempotency::MemoryStore`]; the claim is one Lua script, so two
//! replicas never both claim a key. One key per slot, `mis-gateway:idem:<hex slot>`, holding
//! compact JSON: the body's fingerprint (hex) and either an in-flight marker or the
//! [`Outcome`] — nothing else (no bodies, no patient data).
//!
//! Redis is an aid, not a dependency: the connection is made on first use (never in
//! [`RedisStore::open`]) in a task of its own bounded by [`CONNECT_TIMEOUT`], which a call
//! waits for at most [`CONNECT_WAIT`]; every command is bounded by [`COMMAND_TIMEOUT`]; a failed
//! connect is not retried for [`RETRY_AFTER`]; a connection that stops answering is given up.
//! A refused connection costs a booking about a millisecond, a silent Redis at most
//! `CONNECT_WAIT + COMMAND_TIMEOUT`. Errors never name a key, a value or the URL.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::idempotency::{Begin, Fingerprint, Outcome, Slot, Store, StoreError};

/// Every key this store writes starts with this.
pub const KEY_PREFIX: &str = "mis-gateway:idem:";
/// The longest wait for a connection to Redis.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest a call waits for a connect in progress (the connect itself goes on).
pub const CONNECT_WAIT: Duration = Duration::from_millis(250);
/// The longest wait for one command's answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failed connect, calls fail at once for this long before the next attempt.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Claims KEYS[1] for ARGV[1] (an in-flight record) for ARGV[2] ms if nobody holds it; returns
/// "claimed", or the record that is there.
const CLAIM: &str = r#"
local held = redis.call('GET', KEYS[1])
if held then
  return held
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 'claimed'
"#;

/// Resolves KEYS[1] if it holds an outcome-unknown record: replaces the outcome by ARGV[1]
/// (JSON), or deletes the key when ARGV[1] is empty; returns 1 if it did, 0 otherwise.
const RESOLVE: &str = r#"
local held = redis.call('GET', KEYS[1])
if not held then
  return 0
end
local r = cjson.decode(held)
if r.state ~= 'done' or (r.outcome.kind ~= 'outcome_unknown' and r.outcome.kind ~= 'mis_timeout') then
  return 0
end
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1])
else
  r.outcome = cjson.decode(ARGV[1])
  redis.call('SET', KEYS[1], cjson.encode(r), 'KEEPTTL')
end
return 1
"#;

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
    InFlight,
    Done { outcome: Outcome },
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
    link: Arc<Mutex<Link>>,
    claim: redis::Script,
    resolve: redis::Script,
    ttl_ms: u64,
    claim_ttl_ms: u64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may carry a password.
        f.debug_struct("RedisStore")
            .field("ttl_ms", &self.ttl_ms)
            .field("claim_ttl_ms", &self.claim_ttl_ms)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Opens a store at `url` (`redis://host:port/db`) without blocking on I/O: the connection
    /// is made, and remade, when needed. `ttl` is how long a completed key is remembered;
    /// `claim_ttl` how long an in-flight claim may live if its owner dies.
    pub fn open(url: &str, ttl: Duration, claim_ttl: Duration) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError(format!("the Redis URL is not usable: {}", describe(&e))))?;
        Ok(RedisStore {
            client,
            link: Arc::new(Mutex::new(Link::Down { retry_at: None })),
            claim: redis::Script::new(CLAIM),
            resolve: redis::Script::new(RESOLVE),
            ttl_ms: millis(ttl),
            claim_ttl_ms: millis(claim_ttl),
        })
    }

    /// The connection. If there is none, one attempt is started in its own task (it may take
    /// up to [`CONNECT_TIMEOUT`]) and shared by every caller; a caller waits for it at most
    /// [`CONNECT_WAIT`]. No lock is held across an await.
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
                    let task = tokio::spawn(connect(self.client.clone(), self.link.clone()));
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
        tokio::time::timeout(CONNECT_WAIT, attempt)
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

    /// Runs `command` on the connection within [`COMMAND_TIMEOUT`].
    async fn run<T, F, Fut>(&self, what: &str, command: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let manager = self.connection().await?;
        match tokio::time::timeout(COMMAND_TIMEOUT, command((*manager).clone())).await {
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
        let mut key = String::with_capacity(KEY_PREFIX.len() + 64);
        key.push_str(KEY_PREFIX);
        key.push_str(&hex(slot));
        key
    }
}

fn lock(link: &Mutex<Link>) -> MutexGuard<'_, Link> {
    link.lock().unwrap_or_else(|e| e.into_inner())
}

/// One connect attempt (the only one running: attempts start only from `Down`); records its
/// result in `link`.
async fn connect(
    client: redis::Client,
    link: Arc<Mutex<Link>>,
) -> Result<Arc<ConnectionManager>, StoreError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        // One attempt per reconnect: callers fail fast and the next command tries again.
        .set_number_of_retries(0);
    let result = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    {
        Ok(Ok(manager)) => Ok(Arc::new(manager)),
        Ok(Err(e)) => Err(StoreError(format!(
            "cannot connect to Redis: {}",
            describe(&e)
        ))),
        Err(_) => Err(StoreError("cannot connect to Redis: timed out".into())),
    };
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
                state: State::InFlight,
            })?;
            let key = Self::key(&slot);
            let claim_ttl = self.claim_ttl_ms;
            let answer: String = self
                .run("claim", |mut con| async move {
                    self.claim
                        .key(key)
                        .arg(in_flight)
                        .arg(claim_ttl)
                        .invoke_async(&mut con)
                        .await
                })
                .await?;
            if answer == "claimed" {
                return Ok(Begin::Claimed);
            }
            let held: Record = serde_json::from_str(&answer)
                .map_err(|_| StoreError("a stored idempotency record is unreadable".into()))?;
            Ok(match held.state {
                _ if held.fp != fp => Begin::Mismatch,
                State::InFlight => Begin::InFlight,
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
            let key = Self::key(&slot);
            let ttl = self.ttl_ms;
            self.run("finish", |mut con| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(done)
                    .arg("PX")
                    .arg(ttl)
                    .query_async::<()>(&mut con)
                    .await
            })
            .await
        })
    }

    fn release(&self, slot: Slot) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let key = Self::key(&slot);
            self.run("release", |mut con| async move {
                redis::cmd("DEL").arg(key).query_async::<()>(&mut con).await
            })
            .await
        })
    }

    fn resolve(
        &self,
        slot: Slot,
        booked: Option<Outcome>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let outcome = match &booked {
                Some(o) => serde_json::to_string(o)
                    .map_err(|_| StoreError("an outcome cannot be encoded".into()))?,
                None => String::new(),
            };
            let key = Self::key(&slot);
            let done: i64 = self
                .run("resolve", |mut con| async move {
                    self.resolve
                        .key(key)
                        .arg(outcome)
                        .invoke_async(&mut con)
                        .await
                })
                .await?;
            Ok(done == 1)
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

fn hex(bytes: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
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
            state: State::InFlight,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            format!(r#"{{"fp":"{}","state":"in_flight"}}"#, "ab".repeat(32))
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
