//! The admin listener: health, readiness, the live configuration, reloads. Separate from the
//! booking listener, outside integrator auth and routing, loopback by default.
//!
//! Nothing here shows a secret: no password hashes, no backend credentials, no token.
//! When `[admin] token_env` is set, everything but `/healthz` and `/readyz` needs
//! `Authorization: Bearer <token>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::booking::parse_guid;
use crate::config::LpuRights;
use crate::edge::reload::{Outcome, Reloader};
use crate::edge::server::Handler;
use crate::live::Live;

/// The integrator API's contract (OpenAPI 3.1), served as is.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

pub struct Admin {
    pub live: Arc<Live>,
    pub reloader: Option<Arc<Reloader>>,
    /// Set when shutdown starts: readiness turns false at once.
    pub draining: Arc<AtomicBool>,
    /// The booking journal behind `/admin/journal` (none when `[journal]` is not configured).
    pub journal: Option<Arc<crate::journal::Journal>>,
    /// The operators' console under `/console/`.
    pub console: Arc<crate::console::Console>,
    /// Where operator actions are kept: the console's, and the admin token's (`token`).
    pub audit: Arc<crate::console::audit::AuditLog>,
}

impl Handler for Admin {
    async fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: std::net::SocketAddr,
    ) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        // The console has its own sign-in and sessions; the admin token does not open it.
        if path == "/console" || path.starts_with("/console/") {
            // Over TLS the session cookie is `Secure`.
            let secure = self.live.load().config.admin.tls.is_some();
            return self.console.handle(req, peer.ip(), secure).await;
        }
        // The journal's routes read a query and a body; everything else needs neither.
        if path.starts_with(crate::journal::admin::PREFIX) {
            if !self.authorized(req.headers()) {
                return unauthorized();
            }
            let resolve = (req.method() == Method::POST && path.ends_with("/resolve")).then(|| {
                path.trim_start_matches(crate::journal::admin::PREFIX)
                    .trim_matches('/')
                    .trim_end_matches("/resolve")
                    .to_owned()
            });
            let resp = crate::journal::admin::handle(self.journal.as_ref(), &self.live, req).await;
            if let Some(target) = resolve {
                self.audit_token("resolve", Some(&target), peer, &resp)
                    .await;
            }
            return resp;
        }
        if path == "/admin/audit" {
            if !self.authorized(req.headers()) {
                return unauthorized();
            }
            return self.audit_view(req.uri().query()).await;
        }
        let reload = req.method() == Method::POST && path == "/admin/reload";
        let resp = self
            .route(req.method(), req.uri().path(), req.headers())
            .await;
        if reload {
            self.audit_token("reload", None, peer, &resp).await;
        }
        resp
    }
}

impl Admin {
    /// An action through the admin API (the token), as the audit keeps it.
    async fn audit_token(
        &self,
        action: &'static str,
        target: Option<&str>,
        peer: std::net::SocketAddr,
        resp: &Response<Full<Bytes>>,
    ) {
        let status = resp.status();
        self.audit
            .record(crate::console::audit::Action {
                who: "token",
                via: "admin-api",
                action,
                target,
                address: Some(peer.ip()),
                outcome: if status.is_success() { "ok" } else { "failed" },
                detail: Some(format!("HTTP {}", status.as_u16())),
            })
            .await;
    }

    /// `GET /admin/audit?limit=&before=`: operator actions, newest first.
    async fn audit_view(&self, query: Option<&str>) -> Response<Full<Bytes>> {
        let (mut limit, mut before) = (100u32, None);
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            match pair.split_once('=').unwrap_or((pair, "")) {
                ("limit", v) => match v.parse().ok().filter(|n| (1..=1000).contains(n)) {
                    Some(n) => limit = n,
                    None => {
                        return json_response(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            json!({"error": "must be a whole number from 1 to 1000", "field": "limit"}),
                        );
                    }
                },
                ("before", v) if uuid::Uuid::try_parse(v).is_ok() => before = Some(v.to_owned()),
                ("before", _) => {
                    return json_response(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({"error": "must be the id of an entry", "field": "before"}),
                    );
                }
                _ => {
                    return json_response(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({"error": "unknown parameter (expected limit, before)", "field": "query"}),
                    );
                }
            }
        }
        match self.audit.list(before.as_deref(), limit + 1).await {
            Ok(mut entries) => {
                let next = (entries.len() > limit as usize).then(|| {
                    entries.truncate(limit as usize);
                    entries.last().map(|e| e.id.clone())
                });
                let list: Vec<_> = entries.iter().map(|e| e.to_json()).collect();
                json_response(
                    StatusCode::OK,
                    json!({"entries": list, "next": next.flatten()}),
                )
            }
            Err(e) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": format!("the journal database is unavailable: {e}")}),
            ),
        }
    }

    pub async fn route(
        &self,
        method: &Method,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Response<Full<Bytes>> {
        match (method, path) {
            (&Method::GET, "/healthz") => {
                return json_response(StatusCode::OK, json!({"status": "alive"}));
            }
            (&Method::GET, "/metrics") => {
                let mut r = Response::new(Full::new(Bytes::from(
                    crate::telemetry::metrics::get().render(),
                )));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                return r;
            }
            (&Method::GET, "/openapi.json") => {
                let mut r = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return r;
            }
            (&Method::GET, "/readyz") => return self.readyz(),
            _ => {}
        }
        if !self.authorized(headers) {
            return unauthorized();
        }
        match (method, path) {
            (&Method::GET, "/admin/config") => json_response(StatusCode::OK, self.config_view()),
            (&Method::GET, "/admin/backends") => {
                json_response(StatusCode::OK, self.backends_view())
            }
            (&Method::GET, p) if p.starts_with("/admin/routes/") => {
                self.route_view(&p["/admin/routes/".len()..])
            }
            (&Method::POST, "/admin/reload") => self.reload().await,
            (_, "/healthz" | "/readyz" | "/admin/config" | "/admin/reload") => json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method not allowed"}),
            ),
            _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not found"})),
        }
    }

    fn authorized(&self, headers: &http::HeaderMap) -> bool {
        let config = self.live.load().config.clone();
        let Some(token) = &config.admin.token else {
            return true;
        };
        // Exactly one Authorization header: with two, which one a proxy checked is unknowable.
        let mut all = headers.get_all(header::AUTHORIZATION).iter();
        let given = match (all.next(), all.next()) {
            (Some(v), None) => v
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or(""),
            _ => return false,
        };
        // Digests of both compared in constant time: `ct_eq` on the raw bytes returns at once
        // when the lengths differ, which tells a guesser the token's length.
        use sha2::Digest;
        let (given, token) = (
            sha2::Sha256::digest(given.as_bytes()),
            sha2::Sha256::digest(token.as_bytes()),
        );
        bool::from(given.as_slice().ct_eq(token.as_slice()))
    }

    fn readyz(&self) -> Response<Full<Bytes>> {
        let generation = self.live.load().number;
        if self.draining.load(Ordering::SeqCst) {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"ready": false, "reason": "draining", "generation": generation}),
            )
        } else if let Some(why) = self.journal.as_ref().and_then(|j| j.not_ready()) {
            // Bookings would be refused (their attempts cannot be made durable): send them to
            // a replica that can.
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"ready": false, "reason": why, "generation": generation}),
            )
        } else {
            json_response(
                StatusCode::OK,
                json!({"ready": true, "generation": generation}),
            )
        }
    }

    fn config_view(&self) -> serde_json::Value {
        let g = self.live.load();
        let c = &g.config;
        let mut routes_per_backend = vec![0usize; c.backends.len()];
        for &i in c.routes.values() {
            routes_per_backend[i] += 1;
        }
        let mut integrators: Vec<_> = c
            .integrators
            .values()
            .map(|i| {
                let lpus = match &i.lpus {
                    LpuRights::All => json!("*"),
                    LpuRights::Only(set) => json!(set.len()),
                };
                json!({"login": &*i.login, "lpus": lpus})
            })
            .collect();
        integrators.sort_by(|a, b| a["login"].as_str().cmp(&b["login"].as_str()));
        let backends: Vec<_> = c
            .backends
            .iter()
            .zip(routes_per_backend)
            .map(|(b, routes)| {
                json!({
                    "name": &*b.name,
                    "url": b.url,
                    "login": b.login,
                    "timezone": b.timezone_name,
                    "timeout_ms": b.timeout.as_millis() as u64,
                    "connect_timeout_ms": b.connect_timeout.as_millis() as u64,
                    "max_response_bytes": b.max_response_bytes,
                    "max_in_flight": b.limits.max_in_flight,
                    "max_connections": b.limits.max_connections,
                    "breaker_failures": b.limits.breaker_failures,
                    "breaker_cooldown_ms": b.limits.breaker_cooldown.as_millis() as u64,
                    "cancel": b.cancel,
                    "routes": routes,
                })
            })
            .collect();
        json!({
            "generation": g.number,
            "sha256": c.sha256,
            "loaded_at": g.loaded_at.to_string(),
            "file": self.reloader.as_ref().map(|r| r.path().display().to_string()),
            // Reloads tried and reads of the file since start: a busy folder must not move them.
            "reloads": self.reloader.as_ref().map(|r| json!({
                "attempts": r.attempts(),
                "file_reads": r.file_reads(),
            })),
            "counts": {
                "integrators": c.integrators.len(),
                "backends": c.backends.len(),
                "routes": c.routes.len(),
            },
            "integrators": integrators,
            "backends": backends,
            "journal": c.journal.as_ref().map(|j| json!({
                "store": format!("{:?}", j.store),
                "retention_days": j.retention.as_secs() / 86_400,
            })),
            "warnings": c.warnings,
            "last_rejected": self.live.last_rejected(),
        })
    }

    fn backends_view(&self) -> serde_json::Value {
        let g = self.live.load();
        let backends: Vec<_> = g
            .upstreams
            .iter()
            .map(|u| {
                let mut v = serde_json::to_value(u.guard.snapshot()).unwrap_or_default();
                v["name"] = json!(&*u.backend.name);
                v["max_in_flight"] = json!(u.backend.limits.max_in_flight);
                v["max_connections"] = json!(u.backend.limits.max_connections);
                v["connections_busy"] = json!(u.connections_busy());
                v
            })
            .collect();
        json!({"generation": g.number, "backends": backends})
    }

    fn route_view(&self, lpu: &str) -> Response<Full<Bytes>> {
        let Some(guid) = parse_guid(lpu) else {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": "the path must end with an LPU GUID"}),
            );
        };
        let g = self.live.load();
        match g.config.route(&guid) {
            Some(i) => {
                let b = &g.config.backends[i];
                json_response(
                    StatusCode::OK,
                    json!({"lpu": guid.to_string(), "backend": &*b.name, "url": b.url, "generation": g.number}),
                )
            }
            None => json_response(
                StatusCode::NOT_FOUND,
                json!({"lpu": guid.to_string(), "backend": null, "generation": g.number}),
            ),
        }
    }

    async fn reload(&self) -> Response<Full<Bytes>> {
        let Some(r) = &self.reloader else {
            return json_response(
                StatusCode::CONFLICT,
                json!({"error": "this gateway was not started from a file"}),
            );
        };
        let outcome = r.reload("admin").await;
        let status = match outcome {
            Outcome::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::OK,
        };
        json_response(status, serde_json::to_value(&outcome).unwrap_or_default())
    }
}

fn unauthorized() -> Response<Full<Bytes>> {
    let mut r = json_response(
        StatusCode::UNAUTHORIZED,
        json!({"error": "admin token required"}),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"mis-gateway-admin\""),
    );
    r
}

pub fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
