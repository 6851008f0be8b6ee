//! routes.toml: parsed, fully validated, and turned into an immutable [`Config`].
//!
//! Loading never stops at the first mistake: every problem is collected with its location
//! (`backends[1].url`, `routes."…"`) so ops fix a file in one pass. The same function serves
//! `serve`, `check` and every reload, so a file that `check` accepts is a file that loads.
//! Secrets are resolved here (environment or file) and only ever held as ready-made
//! `Authorization` header values marked sensitive.

pub mod diff;
mod journal;
mod raw;
pub mod tls;

pub use journal::{JournalSettings, JournalStore, OnJournalError};

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::{HeaderValue, Uri};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::booking::parse_guid;

/// One thing wrong with a file, and where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub location: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Where backend secrets come from. The process environment and the file system in production;
/// tests and the demo hand in their own.
pub trait Secrets: Send + Sync {
    fn env(&self, name: &str) -> Option<String>;
    fn file(&self, path: &Path) -> std::io::Result<String>;
    /// False for [`NoSecrets`]: validation then checks secrets' names and files' places only.
    fn resolves(&self) -> bool {
        true
    }
}

/// Resolves nothing: `check --no-secrets` validates a file where the secrets are not at hand
/// (a CI pipeline). A config loaded with it carries placeholder credentials and no TLS
/// material, so it is for checking and diffing only, never for serving.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSecrets;

impl Secrets for NoSecrets {
    fn env(&self, _: &str) -> Option<String> {
        None
    }
    fn file(&self, _: &Path) -> std::io::Result<String> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
    fn resolves(&self) -> bool {
        false
    }
}

/// What [`NoSecrets`] puts where a secret would be.
/// Where a password comes from: `password_env` or `password_file`.
pub(crate) enum Secret<'a> {
    Env(&'a str),
    File(&'a str),
}

const UNRESOLVED: &str = "unresolved";

/// The real environment and file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemSecrets;

impl Secrets for SystemSecrets {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// The validated, immutable configuration: one generation of routes.toml.
#[derive(Debug)]
pub struct Config {
    pub server: ServerSettings,
    pub admin: AdminSettings,
    pub idempotency: IdempotencySettings,
    /// `[journal]`, when the booking journal is on.
    pub journal: Option<JournalSettings>,
    /// By login.
    pub integrators: HashMap<Arc<str>, Arc<Integrator>>,
    /// The console's people (`[[operators]]`), by login.
    pub operators: HashMap<Arc<str>, Arc<Operator>>,
    pub backends: Vec<Arc<Backend>>,
    /// `lpuToGuid` → index into `backends`.
    pub routes: HashMap<Uuid, usize>,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    /// Things that load but look like mistakes (e.g. a backend no route uses).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    /// Open connections from one client address (an IPv6 client: its /64); trusted balancers
    /// are not counted. Default: a quarter of `max_connections`, at least 100 (or all).
    pub max_connections_per_client: usize,
    /// Failed authentications in a minute before 429: per client address, per (login,
    /// address), and per login from addresses without standing (`crate::policy::auth::throttle`).
    pub auth_failures_per_ip: u32,
    pub auth_failures_per_login: u32,
    pub auth_guesses_per_login: u32,
    /// `trusted_proxies`, `proxy_protocol`: where the client's address comes from.
    pub proxies: crate::edge::client_addr::Proxies,
    /// `[server.tls]`: the listener serves HTTPS (HTTP/2 and HTTP/1.1 by ALPN).
    pub tls: Option<ServerTls>,
}

/// The listener's certificate, read with the config (a reload rotates it).
#[derive(Clone)]
pub struct ServerTls {
    /// SHA-256 over the certificate and key files.
    pub id: String,
    pub config: Arc<rustls::ServerConfig>,
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for ServerTls {}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// When set, admin requests other than health checks need `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// A trace's page in the hub's tracing UI, `{traceId}` replaced (the console links to it).
    pub trace_url: Option<String>,
    /// `[admin.tls]`: the admin listener (and so the console) serves HTTPS.
    pub tls: Option<ServerTls>,
}

/// What an operator may do in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Sees every page.
    Viewer,
    /// Also resolves unknown records and reloads the configuration.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// A person of the hub who signs in to the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub login: Arc<str>,
    /// The Argon2id PHC string.
    pub password_hash: Arc<str>,
    pub role: Role,
}

/// An integrator's request budget: a token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per second, in thousandths (so the type stays `Eq`).
    pub per_second_milli: u64,
    pub burst: u32,
}

/// `[idempotency]`: how long keys are remembered, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencySettings {
    pub ttl: Duration,
    pub max_keys: u64,
    pub store: StoreKind,
    /// Key of the body fingerprint's HMAC. Random per process unless given (a shared store
    /// needs every replica to use the same one).
    pub fingerprint_key: Option<String>,
    /// What a keyed booking does when the store cannot claim its key.
    pub on_store_error: OnStoreError,
    /// How long a claim lives unrenewed (a booking renews it while it runs).
    pub lease: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    /// `redis://` or `rediss://`, with credentials and timeouts.
    Redis(crate::policy::idempotency::redis::RedisSettings),
}

/// `[idempotency] on_store_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStoreError {
    /// Not sent: 503 with Retry-After.
    #[default]
    Reject,
    /// Claimed in this replica only: no duplicate within the replica, none prevented across.
    Local,
}

/// `on_5xx` of a backend: what a MIS 5xx answer to a keyed booking is remembered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum On5xx {
    /// The MIS may have booked before failing: a same-key retry gets "outcome unknown".
    #[default]
    Unknown,
    /// The MIS rolls back on 5xx: the key is released and a retry is sent.
    Retry,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrator {
    pub login: Arc<str>,
    /// The Argon2id PHC string.
    pub password_hash: Arc<str>,
    pub lpus: LpuRights,
    /// Optional request rate limit.
    pub rate: Option<RateLimit>,
    /// Client addresses it may authenticate from; empty: any.
    pub allow_from: Vec<ipnet::IpNet>,
}

impl Integrator {
    pub fn allows_from(&self, client: Option<std::net::IpAddr>) -> bool {
        self.allow_from.is_empty()
            || client.is_some_and(|ip| self.allow_from.iter().any(|n| n.contains(&ip)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LpuRights {
    All,
    Only(HashSet<Uuid>),
}

impl LpuRights {
    pub fn allows(&self, lpu: &Uuid) -> bool {
        match self {
            LpuRights::All => true,
            LpuRights::Only(set) => set.contains(lpu),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Backend {
    pub name: Arc<str>,
    /// The URL as written (no credentials can be in it: validation refuses userinfo).
    pub url: String,
    /// `{url}/dir/appointments`.
    pub appointments_uri: Uri,
    pub login: String,
    /// `Basic base64(login:password)`, marked sensitive.
    pub authorization: HeaderValue,
    pub timezone_name: String,
    pub timezone: jiff::tz::TimeZone,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Until the MIS's response headers arrive (at most `timeout`).
    pub headers_timeout: Duration,
    pub max_response_bytes: usize,
    pub limits: BackendLimits,
    /// Own trust (`ca_file`) or client certificate (`client_cert`, `client_key`) for https.
    pub tls: Option<tls::ClientTls>,
    pub on_5xx: On5xx,
    /// Whether the MIS takes `DELETE {url}/dir/appointments/{guid}` (`cancel = false`: a
    /// cancel is answered 501 without calling it).
    pub cancel: bool,
}

/// Isolation settings of one backend (see `upstream::guard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendLimits {
    /// Bookings in flight to this MIS at once; more are shed with 503 at once.
    pub max_in_flight: usize,
    /// Open connections to this MIS at once (at most `max_in_flight`). Admitted bookings beyond
    /// it wait, up to `connect_timeout`, for a connection to come free.
    pub max_connections: usize,
    /// Consecutive failures (connect errors, timeouts, 5xx) that open the breaker.
    pub breaker_failures: u32,
    /// How long an open breaker fails fast before letting one probe through.
    pub breaker_cooldown: Duration,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("login", &self.login)
            .field("authorization", &"<redacted>")
            .field("timezone", &self.timezone_name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads and validates the file at `path`; relative `password_file`s are read from its folder.
    pub fn load(path: &Path, secrets: &dyn Secrets) -> Result<Config, Vec<Problem>> {
        let bytes = read(path).map_err(|p| vec![p])?;
        Self::from_file_bytes(&bytes, path, secrets)
    }

    /// Validates the bytes of the file at `path` (already read): as [`Config::from_bytes`], and
    /// a file without `[journal]` gets the default journal beside it.
    pub fn from_file_bytes(
        bytes: &[u8],
        path: &Path,
        secrets: &dyn Secrets,
    ) -> Result<Config, Vec<Problem>> {
        Self::parse(bytes, &base_dir(path), secrets, true)
    }

    /// Validates a config's bytes that come from no file (tests, embedding): no `[journal]`
    /// section means no journal. `base` is the folder relative paths are read from.
    pub fn from_bytes(
        bytes: &[u8],
        base: &Path,
        secrets: &dyn Secrets,
    ) -> Result<Config, Vec<Problem>> {
        Self::parse(bytes, base, secrets, false)
    }

    fn parse(
        bytes: &[u8],
        base: &Path,
        secrets: &dyn Secrets,
        from_file: bool,
    ) -> Result<Config, Vec<Problem>> {
        let sha256 = sha256_hex(bytes);
        let text = std::str::from_utf8(bytes).map_err(|e| {
            vec![Problem {
                location: format!("byte {}", e.valid_up_to()),
                message: "the file is not UTF-8".into(),
            }]
        })?;
        let table: toml::Table = toml::from_str(text).map_err(|e| vec![toml_problem(text, &e)])?;
        let mut v = Validator {
            problems: Vec::new(),
            warnings: Vec::new(),
            base: base.to_path_buf(),
            from_file,
            secrets,
        };
        let config = v.config(table, sha256);
        if v.problems.is_empty() {
            Ok(config)
        } else {
            Err(v.problems)
        }
    }

    /// The backend `lpu` routes to, if any.
    pub fn route(&self, lpu: &Uuid) -> Option<usize> {
        self.routes.get(lpu).copied()
    }

    pub fn backend(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| &*b.name == name)
    }
}

/// Reads the config file; the problem names the file (and its absolute path when given a
/// relative one) and says what is wrong in words.
pub fn read(path: &Path) -> Result<Vec<u8>, Problem> {
    std::fs::read(path).map_err(|e| {
        let shown = path.display().to_string();
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let location = if absolute == path {
            shown
        } else {
            format!("{shown} ({})", absolute.display())
        };
        Problem {
            location,
            message: io_reason(&e),
        }
    })
}

/// The folder relative paths in the file at `path` are read from, absolute, so that messages
/// name the file that was really looked for.
pub fn base_dir(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    absolute.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Why a file could not be read, in words rather than an `io::ErrorKind`'s debug name.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "the file does not exist".into(),
        std::io::ErrorKind::PermissionDenied => {
            "permission denied: the gateway's user cannot read it".into()
        }
        std::io::ErrorKind::IsADirectory => "is a folder, not a file".into(),
        _ => format!("cannot read the file: {e}"),
    }
}

/// SHA-256 of `bytes` in lowercase hex: how the admin view and logs name a file's version.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::wire::hex::hex(&Sha256::digest(bytes))
}

/// A TOML syntax error as `line L, column C: message`, without echoing the file's text.
fn toml_problem(text: &str, e: &toml::de::Error) -> Problem {
    let location = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}")
        }
        None => "file".into(),
    };
    Problem {
        location,
        message: e.message().trim().to_owned(),
    }
}

struct Validator<'s> {
    problems: Vec<Problem>,
    warnings: Vec<String>,
    base: PathBuf,
    /// Read from a file: no `[journal]` section means `journal.db` beside it.
    from_file: bool,
    secrets: &'s dyn Secrets,
}

/// A quarter of the connections for one client, but never fewer than 100 (or all, under 100):
/// one busy integrator behind one address keeps its pool.
fn default_per_client(max_connections: u64) -> u64 {
    (max_connections / 4).max(max_connections.min(100))
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
const DEFAULT_MAX_BODY: u64 = 64 * 1024;
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
const DEFAULT_MAX_RESPONSE: u64 = 1024 * 1024;

impl Validator<'_> {
    fn problem(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            location: location.into(),
            message: message.into(),
        });
    }

    fn typed<T: serde::de::DeserializeOwned>(
        &mut self,
        location: &str,
        value: toml::Value,
    ) -> Option<T> {
        match value.try_into::<T>() {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(location, e.message().trim().to_owned());
                None
            }
        }
    }

    fn config(&mut self, mut table: toml::Table, sha256: String) -> Config {
        let server = table.remove("server");
        let admin = table.remove("admin");
        let idempotency = table.remove("idempotency");
        let journal = table.remove("journal");
        let integrators = table.remove("integrators");
        let operators = table.remove("operators");
        let backends = table.remove("backends");
        let routes = table.remove("routes");
        for key in table.keys() {
            self.problem(
                key.clone(),
                "unknown section (expected server, admin, idempotency, journal, integrators, operators, backends, routes)",
            );
        }
        let server = self.server(server);
        let admin = self.admin(admin);
        let idempotency = self.idempotency(idempotency);
        let journal = self.journal(journal, self.from_file);
        let integrators = self.integrators(integrators);
        let operators = self.operators(operators);
        if !operators.is_empty() && !admin.listen.ip().is_loopback() && admin.tls.is_none() {
            self.warnings.push("operators are configured and admin.listen is not a loopback address, without [admin.tls]: the console's passwords and session cookies cross the network unencrypted".into());
        }
        let (backends, declared) = self.backends(backends);
        let routes = self.routes(routes, &backends, &declared);
        for b in &backends {
            let idx = backends.iter().position(|x| x.name == b.name);
            if !routes.values().any(|i| Some(*i) == idx) {
                self.warnings
                    .push(format!("backends \"{}\": no route uses it", b.name));
            }
        }
        for b in backends.iter().filter(|b| server.drain_timeout < b.timeout) {
            self.warnings.push(format!(
                "server.drain_timeout_ms is shorter than backends \"{}\".timeout_ms: bookings still at that MIS when the drain ends get 504 95040 (outcome unknown)",
                b.name
            ));
        }
        if admin.listen == server.listen && server.listen.port() != 0 {
            self.problem("admin.listen", "must differ from server.listen");
        }
        Config {
            server,
            admin,
            idempotency,
            journal,
            integrators,
            operators,
            backends,
            routes,
            sha256,
            warnings: std::mem::take(&mut self.warnings),
        }
    }

    fn ms(&mut self, location: &str, v: Option<u64>, default: u64, range: (u64, u64)) -> Duration {
        let ms = v.unwrap_or(default);
        if ms < range.0 || ms > range.1 {
            self.problem(
                location,
                format!("must be between {} and {} milliseconds", range.0, range.1),
            );
        }
        Duration::from_millis(ms)
    }

    /// A whole number within `range` (inclusive), `default` when absent; `None` (and a problem
    /// at `location`) when out of range.
    fn count(
        &mut self,
        location: &str,
        v: Option<u64>,
        default: u64,
        range: (u64, u64),
    ) -> Option<u64> {
        let n = v.unwrap_or(default);
        if (range.0..=range.1).contains(&n) {
            Some(n)
        } else {
            self.problem(
                location,
                format!("must be between {} and {}", range.0, range.1),
            );
            None
        }
    }

    fn addr(&mut self, location: &str, v: Option<&str>, default: &str) -> SocketAddr {
        let text = v.unwrap_or(default);
        text.parse().unwrap_or_else(|_| {
            self.problem(
                location,
                "must be an IP address and port, e.g. 127.0.0.1:8080",
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn server(&mut self, v: Option<toml::Value>) -> ServerSettings {
        let raw: raw::Server = match v {
            Some(v) => self.typed("server", v).unwrap_or_default(),
            None => raw::Server::default(),
        };
        let listen = self.addr("server.listen", raw.listen.as_deref(), DEFAULT_LISTEN);
        let body = self
            .count(
                "server.max_body_bytes",
                raw.max_body_bytes,
                DEFAULT_MAX_BODY,
                (1024, 16 * 1024 * 1024),
            )
            .unwrap_or(DEFAULT_MAX_BODY);
        let max_connections = self
            .count(
                "server.max_connections",
                raw.max_connections,
                10_000,
                (1, 1_000_000),
            )
            .unwrap_or(10_000) as usize;
        ServerSettings {
            listen,
            max_body_bytes: body as usize,
            header_read_timeout: self.ms(
                "server.header_read_timeout_ms",
                raw.header_read_timeout_ms,
                10_000,
                (100, 120_000),
            ),
            body_read_timeout: self.ms(
                "server.body_read_timeout_ms",
                raw.body_read_timeout_ms,
                10_000,
                (100, 120_000),
            ),
            drain_timeout: self.ms(
                "server.drain_timeout_ms",
                raw.drain_timeout_ms,
                30_000,
                (0, 600_000),
            ),
            max_connections,
            max_connections_per_client: self
                .count(
                    "server.max_connections_per_client",
                    raw.max_connections_per_client,
                    default_per_client(max_connections as u64),
                    (1, 1_000_000),
                )
                .unwrap_or(default_per_client(max_connections as u64))
                as usize,
            auth_failures_per_ip: raw.auth_failures_per_ip.unwrap_or(50).max(1),
            auth_failures_per_login: raw.auth_failures_per_login.unwrap_or(10).max(1),
            auth_guesses_per_login: raw.auth_guesses_per_login.unwrap_or(30).max(1),
            proxies: self.proxies(&raw),
            tls: raw
                .tls
                .as_ref()
                .and_then(|t| self.listener_tls("server.tls", t)),
        }
    }

    fn proxies(&mut self, raw: &raw::Server) -> crate::edge::client_addr::Proxies {
        let trusted = self.cidrs("server.trusted_proxies", raw.trusted_proxies.as_deref());
        let proxy_protocol = raw.proxy_protocol.unwrap_or(false);
        if proxy_protocol && trusted.is_empty() {
            self.problem(
                "server.proxy_protocol",
                "needs server.trusted_proxies: the balancers that send the PROXY header",
            );
        }
        crate::edge::client_addr::Proxies {
            trusted,
            proxy_protocol,
        }
    }

    /// A list of CIDRs (`10.0.0.0/8`) or single addresses; an empty list is a problem (it
    /// would mean "nobody" where leaving the key out means "no restriction").
    fn cidrs(&mut self, location: &str, v: Option<&[String]>) -> Vec<ipnet::IpNet> {
        let Some(items) = v else {
            return Vec::new();
        };
        if items.is_empty() {
            self.problem(
                location,
                "is empty: list CIDRs such as \"10.0.0.0/8\", or leave it out",
            );
        }
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let text = item.trim();
            match text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            {
                Ok(net) => out.push(net.trunc()),
                Err(_) => self.problem(
                    format!("{location}[{i}]"),
                    "must be an address or a CIDR such as 10.0.0.0/8 or 2001:db8::/32",
                ),
            }
        }
        out
    }

    /// Reads a PEM file named in the config (relative to its folder) through the secrets source.
    fn pem(&mut self, location: &str, file: &str) -> Option<Vec<u8>> {
        let path = self.file_path(location, file)?;
        match self.secrets.file(&path) {
            Ok(text) => Some(text.into_bytes()),
            Err(e) => {
                self.problem(
                    location,
                    format!("cannot read {}: {}", path.display(), io_reason(&e)),
                );
                None
            }
        }
    }

    /// A file named in the config, resolved against its folder; `None` (with a problem when
    /// the name is empty) when it is not to be read: also for every file under [`NoSecrets`].
    fn file_path(&mut self, location: &str, file: &str) -> Option<PathBuf> {
        if file.is_empty() {
            self.problem(location, "is empty: name a file");
            return None;
        }
        self.secrets.resolves().then(|| self.base.join(file))
    }

    /// An environment variable named in the config: its value, or `None` with a problem.
    /// Under [`NoSecrets`] only the name is checked and the value is a placeholder.
    fn env_secret(&mut self, location: &str, name: &str) -> Option<String> {
        // What an environment can hold (Kubernetes allows '-' and '.'), not only what a shell
        // can set: a wrong name is a typo, not a portability question.
        let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b'=');
        if !valid {
            self.problem(
                location,
                "must be an environment variable name: visible ASCII characters other than '='",
            );
            return None;
        }
        if !self.secrets.resolves() {
            return Some(UNRESOLVED.to_owned());
        }
        self.secrets.env(name)
    }

    /// `[server.tls]` or `[admin.tls]` (`loc`): a certificate and its key, read now (a reload
    /// reads them again).
    fn listener_tls(&mut self, loc: &str, t: &raw::Tls) -> Option<ServerTls> {
        let cert = self.pem(&format!("{loc}.cert"), &t.cert);
        let key = self.pem(&format!("{loc}.key"), &t.key);
        let (cert, key) = (cert?, key?);
        match tls::server(&cert, &key) {
            Ok(config) => {
                let mut id = Sha256::new();
                id.update(&cert);
                id.update(&key);
                Some(ServerTls {
                    id: crate::wire::hex::hex(&id.finalize()),
                    config,
                })
            }
            Err(e) => {
                self.problem(loc, e);
                None
            }
        }
    }

    fn backend_tls(&mut self, loc: &str, raw: &raw::Backend) -> Option<Option<tls::ClientTls>> {
        if raw.ca_file.is_none() && raw.client_cert.is_none() && raw.client_key.is_none() {
            return Some(None);
        }
        if !raw.url.starts_with("https://") {
            self.problem(
                loc,
                "ca_file, client_cert and client_key apply to https:// backends only",
            );
            return None;
        }
        let before = self.problems.len();
        let ca = raw
            .ca_file
            .as_ref()
            .map(|f| self.pem(&format!("{loc}.ca_file"), f));
        let client = match (&raw.client_cert, &raw.client_key) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((
                self.pem(&format!("{loc}.client_cert"), c),
                self.pem(&format!("{loc}.client_key"), k),
            )),
            _ => {
                self.problem(loc, "client_cert and client_key go together");
                return None;
            }
        };
        if self.problems.len() != before {
            return None;
        }
        if !self.secrets.resolves() {
            return Some(None);
        }
        let ca = match ca {
            Some(pem) => Some(pem?),
            None => None,
        };
        let client = match client {
            Some((c, k)) => Some((c?, k?)),
            None => None,
        };
        match tls::client(
            ca.as_deref(),
            client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
            tls::system_roots(),
        ) {
            Ok(t) => Some(Some(t)),
            Err(e) => {
                self.problem(loc, e);
                None
            }
        }
    }

    fn admin(&mut self, v: Option<toml::Value>) -> AdminSettings {
        #[derive(Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            listen: Option<String>,
            token_env: Option<String>,
            trace_url: Option<String>,
            tls: Option<raw::Tls>,
        }
        let raw: Raw = match v {
            Some(v) => self.typed("admin", v).unwrap_or_default(),
            None => Raw::default(),
        };
        let listen = self.addr("admin.listen", raw.listen.as_deref(), DEFAULT_ADMIN_LISTEN);
        let token = raw.token_env.as_deref().and_then(|name| {
            match self.env_secret("admin.token_env", name) {
                Some(t) if !self.secrets.resolves() => Some(t),
                Some(t) if t.len() >= 16 => Some(t),
                _ if self.problems.iter().any(|p| p.location == "admin.token_env") => None,
                _ => {
                    self.problem("admin.token_env", format!("environment variable {name} must be set to a token of at least 16 characters"));
                    None
                }
            }
        });
        if !listen.ip().is_loopback() && raw.token_env.is_none() {
            self.warnings.push("admin.listen is not a loopback address and no admin.token_env is set: anyone who reaches it can read the config view and trigger reloads".into());
        }
        let trace_url = raw.trace_url.filter(|u| {
            let ok = (u.starts_with("https://") || u.starts_with("http://"))
                && u.contains("{traceId}")
                && !u
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '"' | '<' | '>'));
            if !ok {
                self.problem(
                    "admin.trace_url",
                    "must be an http(s) URL containing {traceId}, without spaces or quotes",
                );
            }
            ok
        });
        let tls = raw
            .tls
            .as_ref()
            .and_then(|t| self.listener_tls("admin.tls", t));
        AdminSettings {
            listen,
            token,
            trace_url,
            tls,
        }
    }

    fn operators(&mut self, v: Option<toml::Value>) -> HashMap<Arc<str>, Arc<Operator>> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            login: String,
            password_hash: String,
            role: String,
        }
        let mut out = HashMap::new();
        for (i, item) in self.array("operators", v).into_iter().enumerate() {
            let loc = format!("operators[{i}]");
            let Some(raw) = self.typed::<Raw>(&loc, item) else {
                continue;
            };
            self.check_login(&loc, &raw.login);
            if let Err(reason) = check_argon2id(&raw.password_hash) {
                self.problem(format!("{loc}.password_hash"), reason);
            }
            let role = match raw.role.as_str() {
                "viewer" => Role::Viewer,
                "operator" => Role::Operator,
                _ => {
                    self.problem(format!("{loc}.role"), "must be \"viewer\" or \"operator\"");
                    Role::Viewer
                }
            };
            let login: Arc<str> = raw.login.into();
            let operator = Arc::new(Operator {
                login: login.clone(),
                password_hash: raw.password_hash.into(),
                role,
            });
            if out.insert(login, operator).is_some() {
                self.problem(format!("{loc}.login"), "duplicates an earlier operator");
            }
        }
        out
    }

    /// A Basic login (RFC 7617): non-empty, no ':' and no control characters.
    fn check_login(&mut self, loc: &str, login: &str) {
        if login.is_empty() || login.contains(':') || login.chars().any(char::is_control) {
            self.problem(
                format!("{loc}.login"),
                "must be non-empty, without ':' or control characters (RFC 7617)",
            );
        }
    }

    fn idempotency(&mut self, v: Option<toml::Value>) -> IdempotencySettings {
        let raw: raw::Idempotency = match v {
            Some(v) => self.typed("idempotency", v).unwrap_or_default(),
            None => raw::Idempotency::default(),
        };
        let ttl = raw.ttl_seconds.unwrap_or(86_400);
        if !(1..=7 * 86_400).contains(&ttl) {
            self.problem(
                "idempotency.ttl_seconds",
                "must be between 1 and 604800 (7 days)",
            );
        }
        let max_keys = self
            .count(
                "idempotency.max_keys",
                raw.max_keys,
                200_000,
                (100, 100_000_000),
            )
            .unwrap_or(200_000);
        let on_store_error = match raw.on_store_error.as_deref() {
            None | Some("reject") => OnStoreError::Reject,
            Some("local") => OnStoreError::Local,
            Some(_) => {
                self.problem(
                    "idempotency.on_store_error",
                    "must be \"reject\" or \"local\"",
                );
                OnStoreError::Reject
            }
        };
        let lease = self.ms("idempotency.lease_ms", raw.lease_ms, 10_000, (500, 600_000));
        let connect_timeout = self.ms(
            "idempotency.connect_timeout_ms",
            raw.connect_timeout_ms,
            1_000,
            (10, 60_000),
        );
        let command_timeout = self.ms(
            "idempotency.command_timeout_ms",
            raw.command_timeout_ms,
            250,
            (10, 60_000),
        );
        if command_timeout * 2 >= lease {
            self.problem(
                "idempotency.lease_ms",
                "must be more than twice command_timeout_ms (a renewal must arrive in time)",
            );
        }
        let store = match raw.store.as_deref() {
            None | Some("memory") => StoreKind::Memory,
            Some(url)
                if ["redis://", "rediss://"]
                    .iter()
                    .any(|p| url.starts_with(p) && url.len() > p.len()) =>
            {
                if url.contains('@') {
                    self.problem(
                        "idempotency.store",
                        "must not contain credentials: use username with password_env or password_file",
                    );
                }
                StoreKind::Redis(crate::policy::idempotency::redis::RedisSettings {
                    url: url.to_owned(),
                    username: raw.username.clone(),
                    password: self.redis_password(&raw),
                    ca_pem: self.redis_ca(&raw, url),
                    connect_timeout,
                    command_timeout,
                })
            }
            Some(_) => {
                self.problem(
                    "idempotency.store",
                    "must be \"memory\" or a redis://host:port/db or rediss://host:port/db URL",
                );
                StoreKind::Memory
            }
        };
        if matches!(store, StoreKind::Memory) {
            for (key, set) in [
                ("username", raw.username.is_some()),
                ("password_env", raw.password_env.is_some()),
                ("password_file", raw.password_file.is_some()),
                ("ca_file", raw.ca_file.is_some()),
            ] {
                if set {
                    self.problem(
                        format!("idempotency.{key}"),
                        "applies only to a Redis store (store = \"redis://...\")",
                    );
                }
            }
        }
        let location = "idempotency.fingerprint_key_env";
        let fingerprint_key = raw.fingerprint_key_env.as_deref().and_then(|name| {
            match self.env_secret(location, name) {
                Some(k) if !self.secrets.resolves() => Some(k),
                Some(k) if k.len() >= 16 => Some(k),
                _ if self.problems.iter().any(|p| p.location == location) => None,
                _ => {
                    self.problem(
                        location,
                        format!(
                            "environment variable {name} must be set to at least 16 characters"
                        ),
                    );
                    None
                }
            }
        });
        if matches!(store, StoreKind::Redis(_))
            && fingerprint_key.is_none()
            && !self
                .problems
                .iter()
                .any(|p| p.location.starts_with("idempotency"))
        {
            self.problem(
                "idempotency.fingerprint_key_env",
                "is required with a shared store: every replica must fingerprint bodies alike",
            );
        }
        IdempotencySettings {
            ttl: Duration::from_secs(ttl),
            max_keys,
            store,
            fingerprint_key,
            on_store_error,
            lease,
        }
    }

    /// The Redis AUTH password: from the environment or a file, never from routes.toml.
    fn redis_password(&mut self, raw: &raw::Idempotency) -> Option<String> {
        match (&raw.password_env, &raw.password_file) {
            (None, None) => None,
            (Some(_), Some(_)) => {
                self.problem(
                    "idempotency",
                    "takes at most one of password_env or password_file",
                );
                None
            }
            (Some(name), None) => self.password("idempotency", Secret::Env(name), "Redis"),
            (None, Some(file)) => self.password("idempotency", Secret::File(file), "Redis"),
        }
    }

    /// The PEM roots of `ca_file`, which only a `rediss://` store uses.
    fn redis_ca(&mut self, raw: &raw::Idempotency, url: &str) -> Option<Vec<u8>> {
        let file = raw.ca_file.as_ref()?;
        if !url.starts_with("rediss://") {
            self.problem("idempotency.ca_file", "needs a rediss:// store (TLS)");
            return None;
        }
        let path = self.file_path("idempotency.ca_file", file)?;
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(e) => {
                self.problem(
                    "idempotency.ca_file",
                    format!("cannot read {}: {}", path.display(), io_reason(&e)),
                );
                return None;
            }
        };
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem).count();
        if certs == 0 {
            self.problem(
                "idempotency.ca_file",
                format!("{} holds no PEM certificate", path.display()),
            );
            return None;
        }
        Some(pem)
    }

    fn integrators(&mut self, v: Option<toml::Value>) -> HashMap<Arc<str>, Arc<Integrator>> {
        let mut out = HashMap::new();
        let items = self.array("integrators", v);
        for (i, item) in items.into_iter().enumerate() {
            let loc = format!("integrators[{i}]");
            let Some(raw) = self.typed::<raw::Integrator>(&loc, item) else {
                continue;
            };
            self.check_login(&loc, &raw.login);
            if let Err(reason) = check_argon2id(&raw.password_hash) {
                self.problem(format!("{loc}.password_hash"), reason);
            }
            let lpus = if raw.lpus.iter().any(|l| l == "*") {
                if raw.lpus.len() > 1 {
                    self.problem(
                        format!("{loc}.lpus"),
                        "\"*\" (all LPUs) must be the only entry",
                    );
                }
                LpuRights::All
            } else {
                if raw.lpus.is_empty() {
                    self.problem(
                        format!("{loc}.lpus"),
                        "is empty: list LPU GUIDs or \"*\"; remove the integrator to suspend it",
                    );
                }
                let mut set = HashSet::new();
                for (j, l) in raw.lpus.iter().enumerate() {
                    match parse_guid(l) {
                        Some(g) if !set.insert(g) => {
                            self.problem(format!("{loc}.lpus[{j}]"), "duplicates an earlier entry")
                        }
                        Some(_) => {}
                        None => self.problem(format!("{loc}.lpus[{j}]"), "must be a GUID or \"*\""),
                    }
                }
                LpuRights::Only(set)
            };
            let rate = match (raw.rate_per_second, raw.burst) {
                (None, None) => None,
                (Some(r), b) if r >= 0.001 && r.is_finite() && r <= 100_000.0 => Some(RateLimit {
                    per_second_milli: (r * 1000.0).round() as u64,
                    burst: b.unwrap_or(r.ceil() as u32).max(1),
                }),
                (None, Some(_)) => {
                    self.problem(format!("{loc}.burst"), "goes with rate_per_second");
                    None
                }
                _ => {
                    self.problem(
                        format!("{loc}.rate_per_second"),
                        "must be a number from 0.001 to 100000",
                    );
                    None
                }
            };
            let allow_from = self.cidrs(&format!("{loc}.allow_from"), raw.allow_from.as_deref());
            let login: Arc<str> = raw.login.into();
            let integrator = Arc::new(Integrator {
                login: login.clone(),
                password_hash: raw.password_hash.into(),
                lpus,
                rate,
                allow_from,
            });
            if out.insert(login, integrator).is_some() {
                self.problem(
                    format!("{loc}.login"),
                    "duplicates an earlier integrator's login",
                );
            }
        }
        out
    }

    fn array(&mut self, name: &str, v: Option<toml::Value>) -> Vec<toml::Value> {
        match v {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items,
            Some(_) => {
                self.problem(name, format!("must be an array of tables ([[{name}]])"));
                Vec::new()
            }
        }
    }

    /// The valid backends, and the names of all declared ones (valid or not), so that a route to
    /// a backend with its own problem is not reported a second time as dangling.
    fn backends(&mut self, v: Option<toml::Value>) -> (Vec<Arc<Backend>>, Vec<String>) {
        let mut out: Vec<Arc<Backend>> = Vec::new();
        let mut declared = Vec::new();
        let items = self.array("backends", v);
        if items.is_empty() {
            self.problem("backends", "at least one [[backends]] entry is needed");
        }
        for (i, item) in items.into_iter().enumerate() {
            let loc = format!("backends[{i}]");
            if let Some(name) = item.get("name").and_then(toml::Value::as_str) {
                declared.push(name.to_owned());
            }
            let Some(raw) = self.typed::<raw::Backend>(&loc, item) else {
                continue;
            };
            if let Some(b) = self.backend(&loc, raw) {
                if out.iter().any(|o| o.name == b.name) {
                    self.problem(
                        format!("{loc}.name"),
                        "duplicates an earlier backend's name",
                    );
                }
                out.push(Arc::new(b));
            }
        }
        (out, declared)
    }

    fn backend(&mut self, loc: &str, raw: raw::Backend) -> Option<Backend> {
        let before = self.problems.len();
        let name_ok = !raw.name.is_empty()
            && raw.name.len() <= 64
            && raw
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !name_ok {
            self.problem(
                format!("{loc}.name"),
                "must be 1-64 characters of a-z, 0-9, '-' or '_'",
            );
        }
        let appointments_uri = self.backend_url(loc, &raw.url);
        self.check_login(loc, &raw.login);
        let password = self.backend_password(loc, &raw);
        let timezone = jiff::tz::TimeZone::get(&raw.timezone)
            .map_err(|_| {
                self.problem(
                    format!("{loc}.timezone"),
                    "is not a known IANA time zone (e.g. Europe/Moscow)",
                )
            })
            .ok();
        let timeout = self.ms(
            &format!("{loc}.timeout_ms"),
            raw.timeout_ms,
            DEFAULT_TIMEOUT_MS,
            (100, 300_000),
        );
        let connect_default = DEFAULT_CONNECT_TIMEOUT_MS.min(timeout.as_millis() as u64 / 2);
        let connect_timeout = self.ms(
            &format!("{loc}.connect_timeout_ms"),
            raw.connect_timeout_ms,
            connect_default,
            (10, 60_000),
        );
        if connect_timeout >= timeout {
            self.problem(
                format!("{loc}.connect_timeout_ms"),
                "must be shorter than timeout_ms",
            );
        }
        let headers_timeout = self.ms(
            &format!("{loc}.headers_timeout_ms"),
            raw.headers_timeout_ms,
            timeout.as_millis() as u64,
            (100, 300_000),
        );
        if headers_timeout > timeout {
            self.problem(
                format!("{loc}.headers_timeout_ms"),
                "must not exceed timeout_ms",
            );
        }
        let max_response = self.count(
            &format!("{loc}.max_response_bytes"),
            raw.max_response_bytes,
            DEFAULT_MAX_RESPONSE,
            (1024, 16 * 1024 * 1024),
        );
        let max_in_flight = self.count(
            &format!("{loc}.max_in_flight"),
            raw.max_in_flight,
            64,
            (1, 100_000),
        );
        // Unset, it follows max_in_flight (64 when that one is wrong: no second problem).
        let max_connections = self.count(
            &format!("{loc}.max_connections"),
            raw.max_connections,
            max_in_flight.unwrap_or(64),
            (1, 100_000),
        );
        if let (Some(c), Some(f)) = (max_connections, max_in_flight)
            && c > f
        {
            self.problem(
                format!("{loc}.max_connections"),
                "must not exceed max_in_flight (a connection carries one booking at a time)",
            );
        }
        let breaker_failures = self.count(
            &format!("{loc}.breaker_failures"),
            raw.breaker_failures,
            5,
            (1, 1000),
        );
        let tls = self.backend_tls(loc, &raw);
        let on_5xx = match raw.on_5xx.as_deref() {
            None | Some("unknown") => On5xx::Unknown,
            Some("retry") => On5xx::Retry,
            Some(_) => {
                self.problem(format!("{loc}.on_5xx"), "must be \"unknown\" or \"retry\"");
                On5xx::Unknown
            }
        };
        let breaker_cooldown = self.ms(
            &format!("{loc}.breaker_cooldown_ms"),
            raw.breaker_cooldown_ms,
            10_000,
            (100, 600_000),
        );
        if self.problems.len() != before {
            return None;
        }
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", raw.login, password?));
        let mut authorization = HeaderValue::from_str(&format!("Basic {credentials}")).ok()?;
        authorization.set_sensitive(true);
        Some(Backend {
            name: raw.name.into(),
            url: raw.url,
            appointments_uri: appointments_uri?,
            login: raw.login,
            authorization,
            timezone_name: raw.timezone,
            timezone: timezone?,
            timeout,
            connect_timeout,
            headers_timeout,
            max_response_bytes: max_response? as usize,
            limits: BackendLimits {
                max_in_flight: max_in_flight? as usize,
                max_connections: max_connections? as usize,
                breaker_failures: breaker_failures? as u32,
                breaker_cooldown,
            },
            tls: tls?,
            on_5xx,
            cancel: raw.cancel.unwrap_or(true),
        })
    }

    fn backend_url(&mut self, loc: &str, url: &str) -> Option<Uri> {
        let loc = format!("{loc}.url");
        let Ok(uri) = url.parse::<Uri>() else {
            self.problem(loc, "is not a valid URL");
            return None;
        };
        let reason = match (uri.scheme_str(), uri.authority()) {
            (Some("http" | "https"), Some(a)) if a.as_str().contains('@') => {
                "must not contain credentials: use login with password_env or password_file"
            }
            (Some("http" | "https"), Some(a)) if a.host().is_empty() => "has no host",
            (Some("http" | "https"), Some(_)) if uri.query().is_some() => {
                "must not have a query string"
            }
            (Some("http" | "https"), Some(_)) => {
                let path = uri.path().trim_end_matches('/');
                return format!(
                    "{}://{}{path}/dir/appointments",
                    uri.scheme_str()?,
                    uri.authority()?
                )
                .parse()
                .map_err(|_| self.problem(loc, "is not a valid URL"))
                .ok();
            }
            _ => "must be an absolute http:// or https:// URL",
        };
        self.problem(loc, reason);
        None
    }

    fn backend_password(&mut self, loc: &str, raw: &raw::Backend) -> Option<String> {
        match (&raw.password_env, &raw.password_file) {
            (Some(_), Some(_)) | (None, None) => {
                self.problem(loc, "needs exactly one of password_env or password_file");
                None
            }
            (Some(name), None) => self.password(loc, Secret::Env(name), "backend"),
            (None, Some(file)) => self.password(loc, Secret::File(file), "backend"),
        }
    }

    /// The password `secret` names, for `loc`'s `password_env` or `password_file`: the value
    /// (a placeholder under [`NoSecrets`]), or `None` with a problem. `what` names it in that.
    pub(crate) fn password(&mut self, loc: &str, secret: Secret<'_>, what: &str) -> Option<String> {
        let password = match secret {
            Secret::Env(name) => {
                let location = format!("{loc}.password_env");
                let before = self.problems.len();
                match self.env_secret(&location, name) {
                    Some(p) => p,
                    None if self.problems.len() != before => return None,
                    None => {
                        self.problem(location, format!("environment variable {name} is not set"));
                        return None;
                    }
                }
            }
            Secret::File(file) => {
                let location = format!("{loc}.password_file");
                let before = self.problems.len();
                let Some(path) = self.file_path(&location, file) else {
                    return (self.problems.len() == before).then(|| UNRESOLVED.to_owned());
                };
                match self.secrets.file(&path) {
                    // A secret file conventionally ends with a newline that is not part of it.
                    Ok(p) => p
                        .strip_suffix('\n')
                        .map(|p| p.strip_suffix('\r').unwrap_or(p))
                        .unwrap_or(&p)
                        .to_owned(),
                    Err(e) => {
                        self.problem(
                            location,
                            format!("cannot read {}: {}", path.display(), io_reason(&e)),
                        );
                        return None;
                    }
                }
            }
        };
        if password.is_empty() || password.chars().any(char::is_control) {
            self.problem(
                loc,
                format!("the {what} password is empty or has control characters"),
            );
            return None;
        }
        Some(password)
    }

    fn routes(
        &mut self,
        v: Option<toml::Value>,
        backends: &[Arc<Backend>],
        declared: &[String],
    ) -> HashMap<Uuid, usize> {
        let table = match v {
            None => toml::Table::new(),
            Some(toml::Value::Table(t)) => t,
            Some(_) => {
                self.problem(
                    "routes",
                    "must be a table of \"LPU GUID\" = \"backend name\"",
                );
                return HashMap::new();
            }
        };
        let mut out = HashMap::with_capacity(table.len());
        for (key, value) in table {
            let loc = format!("routes.\"{key}\"");
            let Some(lpu) = parse_guid(&key) else {
                self.problem(loc, "the key must be an LPU GUID");
                continue;
            };
            let Some(name) = value.as_str() else {
                self.problem(loc, "the value must be a backend name (a string)");
                continue;
            };
            let Some(idx) = backends.iter().position(|b| &*b.name == name) else {
                if !declared.iter().any(|d| d == name) {
                    self.problem(
                        loc,
                        format!("names backend \"{name}\", which is not defined in [[backends]]"),
                    );
                }
                continue;
            };
            if out.insert(lpu, idx).is_some() {
                self.problem(loc, "duplicates another route for the same LPU (GUIDs are compared ignoring letter case)");
            }
        }
        out
    }
}

/// Accepts Argon2id PHC strings with at least OWASP's minimum cost (m=19456 KiB, t=2, p=1).
fn check_argon2id(phc: &str) -> Result<(), &'static str> {
    let hash = argon2::password_hash::phc::PasswordHash::new(phc)
        .map_err(|_| "must be an Argon2id PHC string from `mis-gateway hash-password`")?;
    if hash.algorithm.as_str() != "argon2id" {
        return Err("must use argon2id");
    }
    let params = argon2::Params::try_from(&hash).map_err(|_| "has invalid Argon2 parameters")?;
    if params.m_cost() < 19_456 || params.t_cost() < 2 {
        return Err(
            "is weaker than the OWASP minimum (m=19456, t=2, p=1): hash it again with `mis-gateway hash-password`",
        );
    }
    Ok(())
}
