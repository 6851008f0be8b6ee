//! Limits shared by replicas through Redis: the integrators' rate budgets (tokens leased in
//! batches, so most bookings spend a local lease without a round trip) and the failed-login
//! counters of [`crate::policy::auth::throttle`] (one script per verification, which runs Argon2 anyway).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::{Integrator, RateLimit};
use crate::policy::auth::throttle::{Limits, LoginDigest, STANDING, Settle, WINDOW};
use crate::policy::idempotency::StoreError;
use crate::policy::idempotency::redis::{RedisSettings, RedisStore};
use crate::wire::hex::hex;

/// Every key these limits write starts with this.
pub const KEY_PREFIX: &str = "mis-gateway:limit:";
/// How long leased tokens may be spent: tokens a replica took but did not use are lost after
/// this, so the replicas together never burst above `burst` by more than one lease each.
pub const LEASE_FOR: Duration = Duration::from_secs(1);

/// Takes one from each counter KEYS[2..] (the login's, KEYS[4], only when the address has no
/// standing, KEYS[1]); a counter's window starts with its first failure. Over any limit
/// (ARGV[2..]): all given back, returns {0, ms left}; else {1, standing}.
const BEGIN: &str = r#"
local window = tonumber(ARGV[1])
local standing = 0
if #KEYS >= 4 and redis.call('EXISTS', KEYS[1]) == 1 then standing = 1 end
local taken = {}
local wait = 0
for i = 2, #KEYS do
  if not (i == 4 and standing == 1) then
    local n = redis.call('INCR', KEYS[i])
    if n == 1 then redis.call('PEXPIRE', KEYS[i], window) end
    taken[#taken + 1] = KEYS[i]
    if n > tonumber(ARGV[i]) then
      local left = redis.call('PTTL', KEYS[i])
      if left < 1 then left = window end
      if left > wait then wait = left end
    end
  end
end
if wait > 0 then
  for _, k in ipairs(taken) do redis.call('DECR', k) end
  return {0, wait}
end
return {1, standing}
"#;

/// Gives back one of each counter KEYS[2..] that still exists, deletes KEYS[ARGV[2]] instead,
/// and gives standing (KEYS[1]) for ARGV[1] ms when that is above 0.
const SETTLE: &str = r#"
for i = 2, #KEYS do
  if tonumber(ARGV[2]) == i then
    redis.call('DEL', KEYS[i])
  elseif redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('DECR', KEYS[i])
  end
end
if tonumber(ARGV[1]) > 0 then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 1
"#;

/// A token bucket per integrator in KEYS[1] (tokens, at: Redis's own clock in ms), refilled at
/// ARGV[1] tokens per ms up to ARGV[2]; takes up to ARGV[3]. Returns {taken, ms until one}.
const TAKE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local got = math.min(tonumber(ARGV[3]), math.floor(tokens))
tokens = tokens - got
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
local wait = 0
if got == 0 then wait = math.ceil((1 - tokens) / rate) end
return {got, wait}
"#;

/// Tokens of one integrator this replica took from the shared bucket.
struct Lease {
    tokens: u32,
    until: Instant,
    refilling: bool,
}

pub struct SharedLimits {
    redis: RedisStore,
    begin: redis::Script,
    settle: redis::Script,
    take: redis::Script,
    leases: Mutex<HashMap<Arc<str>, Lease>>,
}

impl SharedLimits {
    /// Limits in the Redis the idempotency store uses (its `settings`: TLS, AUTH, timeouts),
    /// connected when first needed by that store's own connection set-up ([`RedisStore`]).
    pub fn open(settings: &RedisSettings) -> Result<Arc<SharedLimits>, StoreError> {
        Ok(Arc::new(SharedLimits {
            redis: RedisStore::with_settings(settings.clone(), WINDOW, WINDOW)?,
            begin: redis::Script::new(BEGIN),
            settle: redis::Script::new(SETTLE),
            take: redis::Script::new(TAKE),
            leases: Mutex::default(),
        }))
    }

    fn leases(&self) -> MutexGuard<'_, HashMap<Arc<str>, Lease>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves a verification in the shared counters: `Ok(Ok(standing))`, `Ok(Err(wait))`
    /// over a limit, `Err(())` when Redis cannot answer (the caller's local counters decide).
    pub async fn begin_login(
        &self,
        ip: IpAddr,
        login: Option<LoginDigest>,
        limits: Limits,
    ) -> Result<Result<bool, Duration>, ()> {
        let keys = login_keys(ip, login);
        let answer: Result<(u64, u64), _> = self
            .redis
            .run("limit check", |mut con| async move {
                let mut call = self.begin.prepare_invoke();
                for k in &keys {
                    call.key(k);
                }
                call.arg(WINDOW.as_millis() as u64)
                    .arg(limits.per_ip)
                    .arg(limits.per_login_address)
                    .arg(limits.per_login)
                    .invoke_async(&mut con)
                    .await
            })
            .await;
        match answer {
            Ok((1, standing)) => Ok(Ok(standing == 1)),
            Ok((_, wait_ms)) => Ok(Err(
                Duration::from_millis(wait_ms).max(Duration::from_secs(1))
            )),
            Err(e) => {
                tracing::warn!(error = %e, "shared login limits unavailable; this replica's counters decide");
                Err(())
            }
        }
    }

    /// Gives back what [`SharedLimits::begin_login`] reserved, as `how` says (in the
    /// background: the answer to the client does not wait for it). `login_reserved`: the
    /// login's counter was taken from (the address had no standing).
    pub fn settle_login(
        self: &Arc<Self>,
        ip: IpAddr,
        login: Option<LoginDigest>,
        login_reserved: bool,
        how: Settle,
    ) {
        let keys = login_keys(ip, login);
        // Indices as the script sees them (1-based): 2 address, 3 pair, 4 login.
        let (give_back, delete, standing_ms): (&[usize], usize, u64) = match how {
            Settle::Failure => return,
            Settle::Busy => (&[3, 4], 0, 0),
            Settle::Success => (&[2, 4], 3, STANDING.as_millis() as u64),
        };
        let mut chosen = vec![keys[0].clone()];
        let mut delete_at = 0;
        for (i, k) in keys.iter().enumerate().skip(1) {
            let index = i + 1;
            let wanted =
                (give_back.contains(&index) && (index != 4 || login_reserved)) || index == delete;
            if wanted {
                chosen.push(k.clone());
                if index == delete {
                    delete_at = chosen.len();
                }
            }
        }
        let me = self.clone();
        tokio::spawn(async move {
            let script = &me.settle;
            let done: Result<u64, _> = me
                .redis
                .run("limit update", |mut con| async move {
                    let mut call = script.prepare_invoke();
                    for k in &chosen {
                        call.key(k);
                    }
                    call.arg(standing_ms)
                        .arg(delete_at)
                        .invoke_async(&mut con)
                        .await
                })
                .await;
            if let Err(e) = done {
                tracing::warn!(error = %e, "shared login limits not updated");
            }
        });
    }

    /// Renews `login`'s standing from `ip` for [`STANDING`] (in the background): an
    /// integrator that keeps booking keeps it on every replica, not only 24 h after its first
    /// login.
    pub fn refresh_standing(self: &Arc<Self>, ip: IpAddr, login: LoginDigest) {
        let key = login_keys(ip, Some(login)).swap_remove(0);
        let me = self.clone();
        tokio::spawn(async move {
            let ms = STANDING.as_millis() as u64;
            let done: Result<(), _> = me
                .redis
                .run("standing refresh", |mut con| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(1)
                        .arg("PX")
                        .arg(ms)
                        .query_async(&mut con)
                        .await
                })
                .await;
            if let Err(e) = done {
                tracing::warn!(error = %e, "shared standing not refreshed");
            }
        });
    }

    /// The integrator's budget from this replica's lease, without waiting: `None` when the
    /// lease is spent (then [`SharedLimits::take`]). Below half a lease, a refill is started
    /// in the background so a steady stream of bookings rarely finds it empty.
    pub fn from_lease(self: &Arc<Self>, integrator: &Integrator, limit: RateLimit) -> Option<()> {
        let now = Instant::now();
        let mut leases = self.leases();
        let lease = leases.get_mut(&integrator.login)?;
        if lease.tokens == 0 || now >= lease.until {
            return None;
        }
        lease.tokens -= 1;
        let size = lease_size(limit);
        if lease.tokens <= size / 2 && !lease.refilling {
            lease.refilling = true;
            let (me, login) = (self.clone(), integrator.login.clone());
            tokio::spawn(async move {
                let got = me.take_remote(&login, limit, size).await;
                let mut leases = me.leases();
                if let Some(lease) = leases.get_mut(&login) {
                    lease.refilling = false;
                    if let Ok((n, _)) = got
                        && n > 0
                    {
                        lease.tokens = lease.tokens.saturating_add(n).min(size * 2);
                        lease.until = Instant::now() + LEASE_FOR;
                    }
                }
            });
        }
        Some(())
    }

    /// One round trip for a new lease: `Ok(Ok(()))` a token, `Ok(Err(wait))` none left,
    /// `Err(())` when Redis cannot answer (the caller's local bucket decides).
    pub async fn take(
        &self,
        integrator: &Integrator,
        limit: RateLimit,
    ) -> Result<Result<(), Duration>, ()> {
        let size = lease_size(limit);
        match self.take_remote(&integrator.login, limit, size).await {
            Ok((0, wait)) => Ok(Err(wait)),
            Ok((n, _)) => {
                self.leases().insert(
                    integrator.login.clone(),
                    Lease {
                        tokens: n - 1,
                        until: Instant::now() + LEASE_FOR,
                        refilling: false,
                    },
                );
                Ok(Ok(()))
            }
            Err(e) => {
                tracing::warn!(error = %e, "shared rate budget unavailable; this replica's bucket decides");
                Err(())
            }
        }
    }

    async fn take_remote(
        &self,
        login: &str,
        limit: RateLimit,
        want: u32,
    ) -> Result<(u32, Duration), StoreError> {
        let key = format!("{KEY_PREFIX}rate:{login}");
        let per_ms = limit.per_second_milli as f64 / 1e6;
        let (got, wait): (u32, u64) = self
            .redis
            .run("rate budget", |mut con| async move {
                self.take
                    .key(key)
                    .arg(per_ms)
                    .arg(limit.burst)
                    .arg(want)
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        Ok((got, Duration::from_millis(wait)))
    }
}

/// Tokens leased at once: about a tenth of a second's budget, at most a tenth of the burst.
fn lease_size(limit: RateLimit) -> u32 {
    let tenth_second = (limit.per_second_milli / 10_000) as u32;
    tenth_second.min(limit.burst / 10).max(1)
}

/// standing, address, pair, login (the last three counters).
fn login_keys(ip: IpAddr, login: Option<LoginDigest>) -> Vec<String> {
    match login {
        None => vec![String::new(), format!("{KEY_PREFIX}ip:{ip}")],
        Some(l) => {
            let l = hex(&l);
            vec![
                format!("{KEY_PREFIX}standing:{l}:{ip}"),
                format!("{KEY_PREFIX}ip:{ip}"),
                format!("{KEY_PREFIX}pair:{l}:{ip}"),
                format!("{KEY_PREFIX}login:{l}"),
            ]
        }
    }
}
