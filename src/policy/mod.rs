//! Who may book, and how much: integrator authentication and throttling ([`auth`]), the
//! per-backend concurrency cap and breaker (`guard`), and duplicate protection
//! ([`idempotency`]). Each answers before a booking reaches [`crate::upstream`].

pub mod auth;
pub(crate) mod guard;
pub mod idempotency;
pub(crate) mod rate;
pub(crate) mod shared_limits;
