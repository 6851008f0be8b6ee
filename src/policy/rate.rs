//! An integrator's request budget (`rate_per_second`, `burst`): token buckets in this process,
//! or, with a Redis store, a budget shared by replicas through [`SharedLimits`] with the local
//! buckets as its fallback when Redis cannot answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::{Integrator, RateLimit};
use crate::error::GatewayError;
use crate::policy::shared_limits::SharedLimits;

/// A token bucket: `tokens` left as of `at`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// This process's buckets, one per integrator with a budget.
#[derive(Default)]
pub struct LocalBuckets(Mutex<HashMap<Arc<str>, Bucket>>);

impl LocalBuckets {
    /// Takes a token from the integrator's bucket, if it has a budget.
    pub fn take(&self, integrator: &Integrator) -> Result<(), GatewayError> {
        let Some(limit) = integrator.rate else {
            return Ok(());
        };
        let rate = limit.per_second_milli as f64 / 1000.0;
        let now = Instant::now();
        let mut buckets = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(integrator.login.clone()).or_insert(Bucket {
            tokens: f64::from(limit.burst),
            at: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(f64::from(limit.burst));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(GatewayError::RateLimited {
                retry_after_secs: ((1.0 - b.tokens) / rate).ceil().max(1.0) as u64,
            })
        }
    }
}

/// The integrator's budget: shared by replicas when `shared` is set (a token from this
/// replica's lease answers at once; only an empty lease asks Redis), else this process's.
pub async fn check(
    local: &LocalBuckets,
    shared: Option<&Arc<SharedLimits>>,
    integrator: &Integrator,
) -> Result<(), GatewayError> {
    match (shared, integrator.rate) {
        (Some(shared), Some(limit)) => {
            if shared.from_lease(integrator, limit).is_some() {
                return Ok(());
            }
            Box::pin(from_redis(local, shared, integrator, limit)).await
        }
        _ => local.take(integrator),
    }
}

async fn from_redis(
    local: &LocalBuckets,
    shared: &Arc<SharedLimits>,
    integrator: &Integrator,
    limit: RateLimit,
) -> Result<(), GatewayError> {
    match shared.take(integrator, limit).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(wait)) => Err(GatewayError::RateLimited {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        }),
        Err(()) => local.take(integrator),
    }
}
