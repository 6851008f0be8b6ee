//! mis-gateway: books patients into clinic MIS schedules on behalf of integrators.
//!
//! Module map (see ARCHITECTURE.md for the life of a booking):
//! - [`config`]: routes.toml → validated, immutable [`config::Config`]; serde types stay inside.
//! - [`live`]: the current config generation, swapped atomically on reload.
//! - [`auth`]: integrator Basic auth, Argon2id, positive-result cache.
//! - [`json`], [`booking`]: the strict request parser and the seed's request schema.
//! - [`gateway`]: the booking pipeline, request in, response out, never an `Err`.
//! - [`guard`]: per-backend concurrency cap and circuit breaker.
//! - [`idempotency`]: Idempotency-Key store (a trait; in memory by default), double-submit guard.
//! - [`redis_store`]: the idempotency store shared by replicas.
//! - [`journal`]: one record per booking (no patient data) in SQLite or PostgreSQL; reconcile.
//! - [`upstream`]: the only outbound I/O, one pooled client per MIS ([`mis_pool`]; HTTP/1.1 by
//!   [`mis_h1`]).
//! - [`normalize`]: pure functions from a MIS answer to an Appointment or an error.
//! - [`error`]: the one table of statuses and `Message_code`s.
//! - [`server`]: TCP listeners, HTTP/1.1 + HTTP/2, drain on shutdown.
//! - [`reload`], [`admin`]: live reload of routes.toml; the admin listener (health, config, reload).
//! - [`app`]: wires the above together for `serve`, tests and the demo.
//! - [`mock_mis`], [`demo`]: an in-process MIS of this family, for the demo and the tests.
//! - [`telemetry`], [`metrics`]: logs, OpenTelemetry traces (OTLP), Prometheus metrics;
//!   [`log_format`], [`log_writer`]: the log line and its buffered sink.

pub mod admin;
pub mod app;
pub mod auth;
pub mod booking;
pub mod config;
pub mod demo;
pub mod drain;
pub mod error;
pub mod gateway;
pub mod guard;
pub mod idempotency;
pub mod journal;
pub mod json;
pub mod live;
pub mod log_format;
pub mod log_writer;
pub mod metrics;
pub mod mis_h1;
pub mod mis_pool;
pub mod mock_mis;
pub mod normalize;
pub mod redis_store;
pub mod reload;
pub mod run_to_end;
pub mod server;
pub mod telemetry;
pub mod upstream;
pub mod workers;
