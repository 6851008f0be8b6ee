//! Serde types that mirror routes.toml one to one. They never leave the `config` module:
//! validation turns them into the plain types of [`super`]. `deny_unknown_fields` makes a typo
//! an error instead of a silently ignored key.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub header_read_timeout_ms: Option<u64>,
    pub body_read_timeout_ms: Option<u64>,
    pub drain_timeout_ms: Option<u64>,
    pub max_connections: Option<u64>,
    pub max_connections_per_client: Option<u64>,
    pub auth_failures_per_ip: Option<u32>,
    pub auth_failures_per_login: Option<u32>,
    pub auth_guesses_per_login: Option<u32>,
    pub trusted_proxies: Option<Vec<String>>,
    pub proxy_protocol: Option<bool>,
    pub tls: Option<Tls>,
}

/// `[server.tls]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Integrator {
    pub login: String,
    pub password_hash: String,
    pub lpus: Vec<String>,
    pub rate_per_second: Option<f64>,
    pub burst: Option<u32>,
    pub allow_from: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    pub name: String,
    pub url: String,
    pub login: String,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub timezone: String,
    pub timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub headers_timeout_ms: Option<u64>,
    pub max_response_bytes: Option<u64>,
    pub max_in_flight: Option<u64>,
    pub max_connections: Option<u64>,
    pub breaker_failures: Option<u64>,
    pub breaker_cooldown_ms: Option<u64>,
    pub ca_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub on_5xx: Option<String>,
    pub cancel: Option<bool>,
}

/// `[idempotency]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Idempotency {
    pub ttl_seconds: Option<u64>,
    pub max_keys: Option<u64>,
    pub store: Option<String>,
    pub fingerprint_key_env: Option<String>,
    pub on_store_error: Option<String>,
    pub lease_ms: Option<u64>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub ca_file: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub command_timeout_ms: Option<u64>,
}

/// `[journal]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    pub enabled: Option<bool>,
    pub on_error: Option<String>,
    pub path: Option<String>,
    pub url: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub retention_days: Option<u64>,
    pub synchronous: Option<String>,
}
