//! mis-gateway: books patients into clinic MIS schedules on behalf of integrators.
//!
//! The rooms (ARCHITECTURE.md follows a booking through them):
//! - [`app`]: the composition root; builds stores, telemetry and listeners for `serve`, the demo
//!   and the tests.
//! - [`edge`]: what faces the network: listeners, drain, admin, reload, worker threads.
//! - [`booking`]: the booking itself: schema and check, the pipeline, normalization.
//! - [`policy`]: who may book and how much: auth, per-backend guard, idempotency.
//! - [`upstream`]: the only outbound I/O, one pooled client per MIS.
//! - [`telemetry`]: traces, metrics, the access log and its writer.
//! - [`journal`]: the gateway's memory: one record per booking (no patient data) in SQLite or
//!   PostgreSQL, queried and reconciled through the admin listener.
//! - [`console`]: the operators' console on the admin listener: sessions, pages, the audit.
//! - [`wire`]: the strict JSON reader and writer.
//! - [`config`], [`live`]: routes.toml validated into a `Config`; the live generation.
//! - [`error`]: the one table of statuses and `Message_code`s.
//! - [`demo`]: the demo and its in-process mock MIS.

pub mod app;
pub mod booking;
pub mod config;
pub mod console;
pub mod demo;
pub mod edge;
pub mod error;
pub mod journal;
pub mod live;
pub mod policy;
pub mod telemetry;
pub mod upstream;
pub mod wire;
