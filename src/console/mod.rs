//! The operators' console: `/console/` on the admin listener, server-rendered by the binary
//! (no separate service, nothing loaded from elsewhere). Operators sign in with the identities
//! of `[[operators]]` (Argon2id, throttled like integrators); a session lives server-side.
//! Viewers see every page; operators also resolve `unknown` records and reload the
//! configuration. Every state change is a POST carrying the session's CSRF token; every
//! response carries a strict Content-Security-Policy, `X-Frame-Options: DENY` and `no-store`.
//! Every operator action is kept in the audit (`audit`).
//!
//! Pages: the overview (per backend: breaker, in flight, bookings and failures per minute and
//! latency over the last hour from the gateway's own counters, unresolved unknowns; the live
//! generation; per integrator: requests, refusals, 429s), bookings (the journal's filters and a
//! search by request id, slot, referral, appointment or trace id), one record with its timeline,
//! reconcile (unresolved unknowns oldest first, resolved behind a confirmation), the
//! configuration (no secrets; route lookup; reload) and the audit.

pub mod audit;
pub mod history;
pub mod page;
pub mod session;

use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};

use crate::config::{Operator, Role};
use crate::edge::reload::{Outcome, Reloader};
use crate::journal::admin::{parse_filter, valid_number};
use crate::journal::{Answer, Journal, Kind, ResolveError, Row};
use crate::live::Live;
use crate::policy::auth::throttle::{Limits, Settle, Throttle};
use audit::{Action, AuditLog};
use history::History;
use page::{Viewer, esc, layout, url};
use session::{Session, Sessions};

/// A form body's cap: a note of 500 characters escaped, and the rest.
const MAX_FORM: usize = 16 * 1024;
/// Sign-ins waiting for the console's Argon2 thread at most; past it, 503.
const SIGN_IN_QUEUE: usize = 16;
/// Records a listing page shows.
const PAGE: u32 = 50;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub struct Console {
    live: Arc<Live>,
    journal: Option<Arc<Journal>>,
    reloader: Option<Arc<Reloader>>,
    pub audit: Arc<AuditLog>,
    pub history: Arc<History>,
    sessions: Sessions,
    throttle: Throttle,
    /// Keys the sign-in form's token (the form has no session yet).
    form_key: [u8; 32],
    dummy_hash: Arc<str>,
    /// Verifies sign-in passwords (see `sign_in`).
    hasher: crate::policy::auth::hasher::Hasher,
}

/// A signed-in operator and what the live configuration lets them do.
struct Who {
    session: Session,
    role: Role,
}

impl Who {
    fn viewer(&self) -> Viewer<'_> {
        Viewer {
            login: &self.session.login,
            role: self.role.as_str(),
            csrf: &self.session.csrf,
        }
    }

    fn may_act(&self) -> bool {
        self.role == Role::Operator
    }
}

/// A request as the console reads it.
struct Asked {
    method: Method,
    path: String,
    query: String,
    headers: http::HeaderMap,
    form: Vec<(String, String)>,
    peer: IpAddr,
    /// Only `main` is wanted (the refresh script).
    fragment: bool,
}

impl Asked {
    fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn param(&self, name: &str) -> Option<String> {
        parse_form(&self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty())
    }
}

impl Console {
    pub fn new(
        live: Arc<Live>,
        journal: Option<Arc<Journal>>,
        reloader: Option<Arc<Reloader>>,
        audit: Arc<AuditLog>,
    ) -> Console {
        let mut form_key = [0u8; 32];
        getrandom::fill(&mut form_key).expect("the OS random source is available");
        Console {
            live,
            journal,
            reloader,
            audit,
            history: Arc::default(),
            sessions: Sessions::default(),
            throttle: Throttle::default(),
            form_key,
            dummy_hash: crate::policy::auth::dummy_hash().into(),
            hasher: crate::policy::auth::hasher::Hasher::new(1, SIGN_IN_QUEUE),
        }
    }

    /// Serves one request under `/console`. `secure`: the listener is TLS (the cookie is
    /// `Secure`).
    pub async fn handle<B>(
        &self,
        req: Request<B>,
        peer: IpAddr,
        secure: bool,
    ) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        match (&parts.method, path.as_str()) {
            (&Method::GET, "/console/static/console.css") => {
                return asset(page::CSS, "text/css; charset=utf-8");
            }
            (&Method::GET, "/console/static/console.js") => {
                return asset(page::JS, "text/javascript; charset=utf-8");
            }
            (&Method::GET, "/console") => return redirect("/console/", None),
            _ => {}
        }
        let form = if parts.method == Method::POST {
            match Limited::new(body, MAX_FORM).collect().await {
                Ok(b) => parse_form(&String::from_utf8_lossy(&b.to_bytes())),
                Err(_) => {
                    return html(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        layout(
                            "Too large",
                            "",
                            None,
                            false,
                            "<p class=\"error\">The form is too large.</p>",
                        ),
                    );
                }
            }
        } else {
            Vec::new()
        };
        let asked = Asked {
            fragment: parts.headers.contains_key("x-console-fragment"),
            method: parts.method,
            query: parts.uri.query().unwrap_or_default().to_owned(),
            path,
            headers: parts.headers,
            form,
            peer,
        };
        match (&asked.method, asked.path.as_str()) {
            (&Method::GET, "/console/login") => return self.login_form(None, StatusCode::OK),
            (&Method::POST, "/console/login") => return self.sign_in(&asked, secure).await,
            _ => {}
        }
        let Some(who) = self.who(&asked.headers) else {
            return redirect("/console/login", None);
        };
        if asked.method == Method::POST {
            // Every state change carries the session's token: a page of another site cannot
            // make a signed-in browser act.
            if !asked
                .field("csrf")
                .is_some_and(|t| who.session.csrf_matches(t))
            {
                return self
                    .refuse(&who, &asked, "the form's CSRF token is missing or wrong")
                    .await;
            }
        }
        let p = asked.path.as_str();
        match (&asked.method, p) {
            (&Method::POST, "/console/logout") => self.sign_out(&who, &asked, secure).await,
            (&Method::GET, "/console/") => self.overview(&who, &asked).await,
            (&Method::GET, "/console/bookings") => self.bookings(&who, &asked).await,
            (&Method::GET, _) if p.starts_with("/console/bookings/") => {
                self.record(&who, &asked, &p["/console/bookings/".len()..])
                    .await
            }
            (&Method::GET, "/console/reconcile") => self.reconcile(&who, &asked).await,
            (&Method::GET, _) if p.starts_with("/console/reconcile/") => {
                self.resolve_form(&who, &asked, &p["/console/reconcile/".len()..], None)
                    .await
            }
            (&Method::POST, _) if p.starts_with("/console/reconcile/") => {
                let rest = &p["/console/reconcile/".len()..];
                if !who.may_act() {
                    return self
                        .refuse(&who, &asked, "viewers may not resolve records")
                        .await;
                }
                match rest.strip_suffix("/confirm") {
                    Some(id) => self.resolve(&who, &asked, id).await,
                    None => self.confirm(&who, &asked, rest).await,
                }
            }
            (&Method::GET, "/console/config") => self.config(&who, &asked, None),
            (&Method::POST, "/console/reload") => {
                if !who.may_act() {
                    return self.refuse(&who, &asked, "viewers may not reload").await;
                }
                self.reload(&who, &asked).await
            }
            (&Method::GET, "/console/audit") => self.audit_page(&who, &asked).await,
            _ => html(
                StatusCode::NOT_FOUND,
                layout(
                    "Not found",
                    "",
                    Some(&who.viewer()),
                    false,
                    "<p class=\"error\">No such page.</p>",
                ),
            ),
        }
    }

    /// The session the cookie names, while its operator is still configured.
    fn who(&self, headers: &http::HeaderMap) -> Option<Who> {
        let session = self.sessions.get(&session::cookie_id(headers)?)?;
        let config = self.live.load().config.clone();
        let role = config.operators.get(&*session.login)?.role;
        Some(Who { session, role })
    }

    /// Keeps one action of the console's.
    async fn note(
        &self,
        who: &str,
        asked: &Asked,
        action: &'static str,
        target: Option<&str>,
        outcome: &'static str,
        detail: Option<String>,
    ) {
        self.audit
            .record(Action {
                who,
                via: "console",
                action,
                target,
                address: Some(asked.peer),
                outcome,
                detail,
            })
            .await;
    }

    async fn refuse(&self, who: &Who, asked: &Asked, why: &'static str) -> Response<Full<Bytes>> {
        self.note(
            &who.session.login,
            asked,
            action_of(&asked.path),
            None,
            "refused",
            Some(why.into()),
        )
        .await;
        html(
            StatusCode::FORBIDDEN,
            layout(
                "Forbidden",
                "",
                Some(&who.viewer()),
                false,
                &format!("<h1>Forbidden</h1><p class=\"error\">{}</p>", esc(why)),
            ),
        )
    }

    // --- signing in and out ---------------------------------------------------------------

    /// A token for the sign-in form, valid for an hour: `expiry.hmac`.
    fn form_token(&self) -> String {
        let expiry = crate::journal::record::now_us() / 1_000_000 + 3600;
        format!("{expiry}.{}", self.form_mac(expiry))
    }

    fn form_mac(&self, expiry: i64) -> String {
        use hmac::{KeyInit, Mac};
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.form_key)
            .expect("HMAC takes any key length");
        m.update(b"console-sign-in");
        m.update(&expiry.to_be_bytes());
        crate::wire::hex::hex(&m.finalize().into_bytes())
    }

    fn form_token_valid(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        let Some((expiry, mac)) = token.split_once('.') else {
            return false;
        };
        let Ok(expiry) = expiry.parse::<i64>() else {
            return false;
        };
        let want = self.form_mac(expiry);
        expiry >= crate::journal::record::now_us() / 1_000_000
            && mac.len() == want.len()
            && bool::from(mac.as_bytes().ct_eq(want.as_bytes()))
    }

    fn login_form(&self, error: Option<&str>, status: StatusCode) -> Response<Full<Bytes>> {
        let mut body = String::from("<div class=\"login card\"><h1>Sign in</h1>");
        if let Some(e) = error {
            let _ = write!(
                body,
                "<p class=\"error\" id=\"sign-in-error\">{}</p>",
                esc(e)
            );
        }
        let configured = !self.live.load().config.operators.is_empty();
        if !configured {
            body.push_str("<p class=\"notice\">No operators are configured: add <code>[[operators]]</code> to routes.toml (passwords from <code>mis-gateway hash-password</code>).</p>");
        }
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/console/login\">\
             <input type=\"hidden\" name=\"form\" value=\"{}\">\
             <label>Login <input name=\"login\" id=\"login\" autocomplete=\"username\" required></label>\
             <label>Password <input name=\"password\" id=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\" id=\"sign-in\">Sign in</button></form></div>",
            esc(&self.form_token())
        );
        html(status, layout("Sign in", "", None, false, &body))
    }

    async fn sign_in(&self, asked: &Asked, secure: bool) -> Response<Full<Bytes>> {
        if !asked
            .field("form")
            .is_some_and(|t| self.form_token_valid(t))
        {
            return self.login_form(
                Some("The sign-in form expired or did not come from this console; try again."),
                StatusCode::FORBIDDEN,
            );
        }
        let login = asked.field("login").unwrap_or_default().to_owned();
        let password = asked.field("password").unwrap_or_default().to_owned();
        let config = self.live.load().config.clone();
        let operator: Option<Arc<Operator>> = config.operators.get(login.as_str()).cloned();
        // Audited under the login only when it is an operator's: a mistyped login may be
        // someone's password.
        let who = operator
            .as_ref()
            .map_or("(unknown login)", |o| &*o.login)
            .to_owned();
        let limits = Limits {
            per_ip: config.server.auth_failures_per_ip,
            per_login_address: config.server.auth_failures_per_login,
            per_login: config.server.auth_guesses_per_login,
        };
        let attempt = match self
            .throttle
            .begin(Some(asked.peer), Some(&login), limits)
            .await
        {
            Ok(a) => a,
            Err(retry) => {
                self.note(
                    &who,
                    asked,
                    "sign-in-failed",
                    None,
                    "refused",
                    Some("throttled".into()),
                )
                .await;
                let mut r = self.login_form(
                    Some(&format!(
                        "Too many failed sign-ins: try again in {} s.",
                        retry.as_secs().max(1)
                    )),
                    StatusCode::TOO_MANY_REQUESTS,
                );
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry.as_secs().max(1)),
                );
                return r;
            }
        };
        let hash = operator
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |o| o.password_hash.clone());
        // Argon2 on the console's own fixed pool (one thread, its memory reused, a bounded queue
        // taken per address), at full cost for an unknown login too: sign-in attempts cannot
        // start an Argon2 run (and its 19 MiB) each.
        let source = crate::policy::auth::hasher::Source {
            addr: Some(asked.peer),
            standing: attempt.standing,
        };
        let verified = match self
            .hasher
            .verify(source, password.into_bytes(), hash)
            .await
        {
            Ok(v) => v,
            Err(crate::policy::auth::hasher::Busy) => {
                self.throttle.settle(attempt, Settle::Busy);
                return self.login_form(
                    Some("Sign-ins are busy: try again in a moment."),
                    StatusCode::SERVICE_UNAVAILABLE,
                );
            }
        };
        match (verified, operator) {
            (true, Some(op)) => {
                self.throttle.settle(attempt, Settle::Success);
                // A fresh session (and id) at every sign-in; one the browser held ends.
                if let Some(old) = session::cookie_id(&asked.headers) {
                    self.sessions.end(&old);
                }
                let s = self.sessions.start(op.login.clone());
                self.note(
                    &op.login,
                    asked,
                    "sign-in",
                    None,
                    "ok",
                    Some(format!("role {}", op.role.as_str())),
                )
                .await;
                redirect("/console/", Some(&session::set_cookie(Some(&s.id), secure)))
            }
            _ => {
                self.throttle.settle(attempt, Settle::Failure);
                self.note(
                    &who,
                    asked,
                    "sign-in-failed",
                    None,
                    "refused",
                    Some("wrong login or password".into()),
                )
                .await;
                self.login_form(Some("Wrong login or password."), StatusCode::UNAUTHORIZED)
            }
        }
    }

    async fn sign_out(&self, who: &Who, asked: &Asked, secure: bool) -> Response<Full<Bytes>> {
        self.sessions.end(&who.session.id);
        self.note(&who.session.login, asked, "sign-out", None, "ok", None)
            .await;
        redirect("/console/login", Some(&session::set_cookie(None, secure)))
    }

    // --- the overview ----------------------------------------------------------------------

    async fn overview(&self, who: &Who, asked: &Asked) -> Response<Full<Bytes>> {
        let g = self.live.load();
        let unresolved = match &self.journal {
            Some(j) => j.summary().await.ok(),
            None => None,
        };
        let series = self.history.series();
        let mut body = String::from("<h1>Overview</h1>");
        let _ = write!(
            body,
            "<p>Configuration generation <strong id=\"generation\">{}</strong>, loaded {} \
             (<span class=\"mono\">sha256 {}</span>).",
            g.number,
            esc(&g.loaded_at.to_string()),
            esc(&g.config.sha256[..g.config.sha256.len().min(16)])
        );
        match self.live.last_rejected() {
            Some(r) => {
                let _ = write!(
                    body,
                    " <span class=\"bad\">Last reload rejected at {} ({} problems): see <a href=\"/console/config\">Configuration</a>.</span>",
                    esc(&r.at),
                    r.problems.len()
                );
            }
            None => body.push_str(" <span class=\"ok\">No reload was rejected.</span>"),
        }
        body.push_str("</p><h2>Backends</h2><div class=\"grid\">");
        for u in &g.upstreams {
            let name = &*u.backend.name;
            let snap = u.guard.snapshot();
            let s = series
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            let state_class = if snap.state == "closed" { "ok" } else { "bad" };
            let _ = write!(
                body,
                "<div class=\"card backend\" data-backend=\"{0}\"><h2>{0}</h2>\
                 <p>Breaker <strong class=\"{state_class}\">{1}</strong> · in flight {2} \
                 (of {3}) · connections busy {4}</p>",
                esc(name),
                esc(snap.state),
                snap.in_flight,
                u.backend.limits.max_in_flight,
                u.connections_busy()
            );
            let last = |v: &[f64]| v.last().copied().unwrap_or(0.0);
            let _ = write!(
                body,
                "<p>Last minute: {} booked, {} failed, p50 {} ms, p99 {} ms</p>",
                page::fmt_num(last(&s.booked)),
                page::fmt_num(last(&s.failed)),
                page::fmt_num(last(&s.p50_ms)),
                page::fmt_num(last(&s.p99_ms)),
            );
            body.push_str(&page::bars(
                &s.booked,
                "Bookings per minute, last hour",
                "/min",
            ));
            body.push_str(&page::bars(&s.failed, "Failures (5xx) per minute", "/min"));
            body.push_str(&page::bars(&s.p99_ms, "p99 gateway time per minute", "ms"));
            match &s.last_failure {
                Some((ago, codes)) => {
                    let _ = write!(
                        body,
                        "<p>Last failure within the minute ending {} ago: <span class=\"bad\">{}</span></p>",
                        ago_text(*ago),
                        esc(&codes.join(", "))
                    );
                }
                None => body.push_str("<p class=\"muted\">No failure in the last hour.</p>"),
            }
            match unresolved
                .as_ref()
                .and_then(|u| u.iter().find(|x| x.backend == name))
            {
                Some(x) => {
                    let age = Duration::from_micros(
                        (crate::journal::record::now_us() - x.oldest_us).max(0) as u64,
                    );
                    let _ = write!(
                        body,
                        "<p><a href=\"/console/reconcile\" class=\"warn\">{} unresolved unknown</a>, the oldest {} old</p>",
                        x.unresolved,
                        ago_text(age)
                    );
                }
                None if unresolved.is_some() => {
                    body.push_str("<p class=\"ok\">No unresolved unknown.</p>")
                }
                None => body.push_str("<p class=\"muted\">No journal: unknowns are not kept.</p>"),
            }
            body.push_str("</div>");
        }
        body.push_str("</div><h2>Integrators</h2><table><tr><th>login</th><th>requests</th><th>refused (4xx)</th><th>429</th></tr>");
        let totals = crate::telemetry::metrics::get().totals();
        let mut logins: Vec<&Arc<str>> = g.config.integrators.keys().collect();
        logins.sort();
        for login in logins {
            let t = totals
                .integrators
                .get(&**login)
                .cloned()
                .unwrap_or_default();
            let _ = write!(
                body,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(login),
                t.requests,
                t.refused,
                t.limited
            );
        }
        body.push_str("</table><p class=\"muted\">Counts since the gateway started; charts from its own counters, one point a minute.</p>");
        self.page(who, asked, "Overview", "/console/", true, body)
    }

    // --- bookings --------------------------------------------------------------------------

    async fn bookings(&self, who: &Who, asked: &Asked) -> Response<Full<Bytes>> {
        let Some(journal) = &self.journal else {
            return self.no_journal(who, asked, "Bookings", "/console/bookings");
        };
        let g = self.live.load();
        let mut body = String::from("<h1>Bookings</h1>");
        // The filter form: the admin API's parameters, so its checks name the field.
        let known = [
            "outcome",
            "operation",
            "backend",
            "integrator",
            "since",
            "until",
            "status",
            "code",
            "cursor",
        ];
        let mut query: Vec<String> = Vec::new();
        for k in known {
            if let Some(v) = asked.param(k) {
                query.push(format!("{k}={}", url(&v)));
            }
        }
        let q = asked.param("q");
        body.push_str("<form class=\"filters\" method=\"get\" action=\"/console/bookings\">");
        let _ = write!(
            body,
            "<label>Search <input name=\"q\" id=\"q\" size=\"40\" value=\"{}\" placeholder=\"request id, slot, referral, appointment or trace id\"></label>",
            esc(q.as_deref().unwrap_or_default())
        );
        let select = |body: &mut String, name: &str, options: &[&str]| {
            let current = asked.param(name).unwrap_or_default();
            let _ = write!(
                body,
                "<label>{name} <select name=\"{name}\"><option value=\"\">any</option>"
            );
            for o in options {
                let sel = if *o == current { " selected" } else { "" };
                let _ = write!(body, "<option{sel}>{}</option>", esc(o));
            }
            body.push_str("</select></label>");
        };
        let outcomes: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        select(&mut body, "outcome", &outcomes);
        select(&mut body, "operation", &["book", "cancel"]);
        let backends: Vec<&str> = g.config.backends.iter().map(|b| &*b.name).collect();
        select(&mut body, "backend", &backends);
        let mut integrators: Vec<&str> = g.config.integrators.keys().map(|k| &**k).collect();
        integrators.sort();
        select(&mut body, "integrator", &integrators);
        for (name, hint) in [
            ("since", "RFC 3339"),
            ("until", "RFC 3339"),
            ("status", "e.g. 502"),
            ("code", "e.g. 95022"),
        ] {
            let _ = write!(
                body,
                "<label>{name} <input name=\"{name}\" size=\"12\" placeholder=\"{hint}\" value=\"{}\"></label>",
                esc(&asked.param(name).unwrap_or_default())
            );
        }
        body.push_str("<button type=\"submit\" id=\"find\">Find</button></form>");

        let rows = if let Some(term) = &q {
            let term = term.trim().to_ascii_lowercase();
            let valid = crate::booking::parse_guid(&term).is_some()
                || (term.len() == 32 && term.bytes().all(|b| b.is_ascii_hexdigit()));
            if !valid {
                let _ = write!(
                    body,
                    "<p class=\"error\">The search takes a request id, a slot, a referral or an appointment GUID, or a 32-digit trace id.</p>"
                );
                return self.page(who, asked, "Bookings", "/console/bookings", false, body);
            }
            let term =
                crate::booking::parse_guid(&term).map_or(term, |g| g.hyphenated().to_string());
            journal.search(&term).await.map(|r| (r, None))
        } else {
            match parse_filter(&query.join("&")) {
                Err((field, reason)) => {
                    let _ = write!(
                        body,
                        "<p class=\"error\">{}: {}</p>",
                        esc(field),
                        esc(reason)
                    );
                    return self.page(who, asked, "Bookings", "/console/bookings", false, body);
                }
                Ok(mut f) => {
                    f.limit = PAGE + 1;
                    journal.list(&f).await.map(|mut rows| {
                        let next = (rows.len() > PAGE as usize).then(|| {
                            rows.truncate(PAGE as usize);
                            rows.last().map(crate::journal::record::cursor_of)
                        });
                        (rows, next.flatten())
                    })
                }
            }
        };
        match rows {
            Err(e) => {
                let _ = write!(
                    body,
                    "<p class=\"error\">The journal did not answer: {}</p>",
                    esc(&e)
                );
            }
            Ok((rows, next)) => {
                records_table(&mut body, &rows);
                if let Some(c) = next {
                    let mut more: Vec<String> = query
                        .into_iter()
                        .filter(|p| !p.starts_with("cursor="))
                        .collect();
                    more.push(format!("cursor={}", url(&c)));
                    let _ = write!(
                        body,
                        "<p><a href=\"/console/bookings?{}\" id=\"older\">Older records</a></p>",
                        esc(&more.join("&"))
                    );
                }
            }
        }
        self.page(who, asked, "Bookings", "/console/bookings", false, body)
    }

    async fn record(&self, who: &Who, asked: &Asked, id: &str) -> Response<Full<Bytes>> {
        let Some(journal) = &self.journal else {
            return self.no_journal(who, asked, "Record", "/console/bookings");
        };
        let Some(id) = crate::booking::parse_guid(id).map(|u| u.hyphenated().to_string()) else {
            return self.not_found(who, "No such record.");
        };
        let row = match journal.get(&id).await {
            Ok(Some(r)) => r,
            Ok(None) => return self.not_found(who, "No such record."),
            Err(e) => return self.unavailable(who, &e),
        };
        let mut body = format!(
            "<h1>Record <span class=\"mono\">{}</span></h1>",
            esc(&row.request_id)
        );
        let cfg = self.live.load().config.clone();
        let trace = match (&row.trace_id, &cfg.admin.trace_url) {
            (Some(t), Some(u)) => format!(
                "<a href=\"{}\" rel=\"noreferrer\" id=\"trace-link\">{}</a>",
                esc(&u.replace("{traceId}", t)),
                esc(t)
            ),
            (Some(t), None) => format!("<span class=\"mono\">{}</span>", esc(t)),
            _ => "—".into(),
        };
        body.push_str("<table class=\"record\">");
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
        for (k, v) in [
            ("operation", row.operation.clone()),
            ("outcome", row.outcome.clone()),
            ("status", row.status.to_string()),
            ("Message_code", opt(&row.message_code)),
            ("integrator", row.integrator.clone()),
            ("LPU", opt(&row.lpu)),
            ("backend", opt(&row.backend)),
            ("slot", opt(&row.slot)),
            ("referral (direction guid)", opt(&row.direction)),
            ("appointment", opt(&row.appointment_guid)),
            ("number", opt(&row.appointment_number)),
            ("Idempotency-Key (hash)", opt(&row.key_hash)),
            (
                "MIS status",
                row.mis_status.map_or("—".into(), |s| s.to_string()),
            ),
            ("reason", opt(&row.reason)),
        ] {
            let _ = write!(body, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
        }
        let _ = write!(body, "<tr><th>trace</th><td>{trace}</td></tr></table>");
        body.push_str("<h2>Timeline</h2><table><tr><th>when</th><th>what</th></tr>");
        let mut line = |at: i64, what: String| {
            let _ = write!(
                body,
                "<tr><td class=\"mono\">{}</td><td>{what}</td></tr>",
                esc(&crate::journal::record::rfc3339(at))
            );
        };
        line(
            row.time_us,
            "received; the attempt written ahead when it was sent".into(),
        );
        line(
            row.time_us + row.total_us,
            format!(
                "answered {} ({}), after {} ms{}",
                row.status,
                esc(&row.outcome),
                page::fmt_num(row.total_us as f64 / 1e3),
                row.mis_us.map_or(String::new(), |m| format!(
                    ", {} ms at the MIS",
                    page::fmt_num(m as f64 / 1e3)
                ))
            ),
        );
        if let Some(r) = &row.resolution {
            let what = if row.operation == "cancel" {
                if r.booked {
                    "the clinic cancelled it"
                } else {
                    "the clinic did not cancel it"
                }
                .to_owned()
            } else if r.booked {
                format!(
                    "the clinic has the booking: {} number {}",
                    esc(&r.guid.map(|g| g.to_string()).unwrap_or_default()),
                    esc(r.number.as_deref().unwrap_or_default())
                )
            } else {
                "the clinic has no such booking".into()
            };
            line(
                r.time_us,
                format!(
                    "resolved via {}: {what}{}",
                    esc(&r.via),
                    r.note.as_deref().map_or(String::new(), |n| format!(
                        " — note: <q class=\"note\">{}</q>",
                        esc(n)
                    ))
                ),
            );
        }
        if let Some(at) = row.cancelled_us {
            line(
                at,
                format!(
                    "cancelled by {} ({}){}",
                    esc(row.cancelled_by.as_deref().unwrap_or("an operator")),
                    esc(row.cancel_reason.as_deref().unwrap_or_default()),
                    row.linked_request_id
                        .as_deref()
                        .map_or(String::new(), |l| format!(
                            ": <a href=\"/console/bookings/{0}\">{0}</a>",
                            esc(l)
                        ))
                ),
            );
        }
        body.push_str("</table>");
        if row.operation == "cancel"
            && let Some(b) = &row.linked_request_id
        {
            let _ = write!(
                body,
                "<p>Cancels the booking <a href=\"/console/bookings/{0}\">{0}</a> ({1}).</p>",
                esc(b),
                esc(row.cancel_reason.as_deref().unwrap_or_default())
            );
        }
        if row.open_unknown() {
            if who.may_act() {
                let _ = write!(
                    body,
                    "<p><a href=\"/console/reconcile/{}\" id=\"resolve-link\">Resolve with what the clinic said…</a></p>",
                    esc(&row.request_id)
                );
            } else {
                body.push_str("<p class=\"muted\">Unresolved: an operator resolves it.</p>");
            }
        }
        self.page(who, asked, "Record", "/console/bookings", false, body)
    }

    // --- reconcile -------------------------------------------------------------------------

    async fn reconcile(&self, who: &Who, asked: &Asked) -> Response<Full<Bytes>> {
        let Some(journal) = &self.journal else {
            return self.no_journal(who, asked, "Reconcile", "/console/reconcile");
        };
        let filter = crate::journal::Filter {
            unresolved: true,
            limit: 1000,
            ..Default::default()
        };
        let mut rows = match journal.list(&filter).await {
            Ok(r) => r,
            Err(e) => return self.unavailable(who, &e),
        };
        rows.sort_by(|a, b| (a.time_us, &a.request_id).cmp(&(b.time_us, &b.request_id)));
        let mut body = String::from(
            "<h1>Reconcile</h1><p>Bookings and cancellations whose outcome is unknown: the request reached the clinic's MIS and its answer was lost. Ask the clinic, then record what it said; a same-key retry then gets that answer.</p>",
        );
        if rows.is_empty() {
            body.push_str("<p class=\"ok\" id=\"nothing-to-reconcile\">Nothing to reconcile.</p>");
        }
        let mut backends: Vec<String> = rows
            .iter()
            .map(|r| r.backend.clone().unwrap_or_default())
            .collect();
        backends.sort();
        backends.dedup();
        let now = crate::journal::record::now_us();
        for b in backends {
            let mine: Vec<&Row> = rows
                .iter()
                .filter(|r| r.backend.as_deref().unwrap_or_default() == b)
                .collect();
            let _ = write!(
                body,
                "<h2>{} — {} unresolved</h2><table><tr><th>since</th><th>age</th><th>request</th><th>operation</th><th>integrator</th><th>slot</th><th>key</th><th></th></tr>",
                esc(&b),
                mine.len()
            );
            for r in mine {
                let age = Duration::from_micros((now - r.time_us).max(0) as u64);
                let action = if who.may_act() {
                    format!(
                        "<a href=\"/console/reconcile/{0}\" class=\"resolve\">Resolve…</a>",
                        esc(&r.request_id)
                    )
                } else {
                    String::new()
                };
                let id = esc(&r.request_id);
                let _ = write!(
                    body,
                    "<tr><td class=\"mono\">{}</td><td>{}</td><td><a href=\"/console/bookings/{id}\" class=\"mono\">{id}</a></td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{action}</td></tr>",
                    esc(&crate::journal::record::rfc3339(r.time_us)),
                    ago_text(age),
                    esc(&r.operation),
                    esc(&r.integrator),
                    esc(r.slot.as_deref().unwrap_or_default()),
                    if r.key_hash.is_some() { "yes" } else { "no" },
                );
            }
            body.push_str("</table>");
        }
        self.page(who, asked, "Reconcile", "/console/reconcile", true, body)
    }

    /// The form that records what the clinic said (`error`: a refused earlier try).
    async fn resolve_form(
        &self,
        who: &Who,
        asked: &Asked,
        id: &str,
        error: Option<&str>,
    ) -> Response<Full<Bytes>> {
        let row = match self.open_row(who, id).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        let mut body = format!(
            "<h1>Resolve <span class=\"mono\">{}</span></h1>",
            esc(&row.request_id)
        );
        if let Some(e) = error {
            let _ = write!(
                body,
                "<p class=\"error\" id=\"resolve-error\">{}</p>",
                esc(e)
            );
        }
        let _ = write!(
            body,
            "<p>{} by <strong>{}</strong> at {} to <strong>{}</strong>, slot <span class=\"mono\">{}</span>: the MIS's answer was lost ({}).</p>",
            if row.operation == "cancel" {
                "A cancellation"
            } else {
                "A booking"
            },
            esc(&row.integrator),
            esc(&crate::journal::record::rfc3339(row.time_us)),
            esc(row.backend.as_deref().unwrap_or_default()),
            esc(row.slot.as_deref().unwrap_or_default()),
            esc(row.reason.as_deref().unwrap_or("95022/95040"))
        );
        if !who.may_act() {
            body.push_str("<p class=\"muted\">Viewers see; an operator resolves.</p>");
            return self.page(who, asked, "Resolve", "/console/reconcile", false, body);
        }
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/console/reconcile/{}\" class=\"card\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            esc(&row.request_id),
            esc(&who.session.csrf)
        );
        if row.operation == "cancel" {
            body.push_str(
                "<p><label><input type=\"radio\" name=\"answer\" value=\"cancelled\" id=\"answer-cancelled\" required> The clinic cancelled the appointment</label></p>\
                 <p><label><input type=\"radio\" name=\"answer\" value=\"not_cancelled\" id=\"answer-not-cancelled\"> The clinic still has the appointment</label></p>",
            );
        } else {
            body.push_str(
                "<p><label><input type=\"radio\" name=\"answer\" value=\"booked\" id=\"answer-booked\" required> The clinic has the booking:</label> \
                 guid <input name=\"guid\" id=\"guid\" size=\"38\"> number <input name=\"number\" id=\"number\" size=\"10\"></p>\
                 <p><label><input type=\"radio\" name=\"answer\" value=\"not_booked\" id=\"answer-not-booked\"> The clinic has no such booking</label></p>",
            );
        }
        body.push_str(
            "<p><label>Note (technical only: a ticket reference, who was called; never patient data) <input name=\"note\" id=\"note\" size=\"60\" maxlength=\"500\"></label></p>\
             <button type=\"submit\" id=\"resolve-next\">Next: confirm</button></form>",
        );
        self.page(who, asked, "Resolve", "/console/reconcile", false, body)
    }

    /// The answer checked and shown back with what it will change, behind a confirmation.
    async fn confirm(&self, who: &Who, asked: &Asked, id: &str) -> Response<Full<Bytes>> {
        let row = match self.open_row(who, id).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        let (answer, note) = match answer_of(asked, &row) {
            Ok(a) => a,
            Err(e) => return self.resolve_form(who, asked, id, Some(&e)).await,
        };
        let mut body = format!(
            "<h1>Confirm <span class=\"mono\">{}</span></h1><p class=\"notice\" id=\"consequence\">{}</p>",
            esc(&row.request_id),
            esc(&consequence(&row, &answer))
        );
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/console/reconcile/{}/confirm\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            esc(&row.request_id),
            esc(&who.session.csrf)
        );
        for k in ["answer", "guid", "number", "note"] {
            if let Some(v) = asked.field(k) {
                let _ = write!(
                    body,
                    "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                    esc(v)
                );
            }
        }
        if let Some(n) = &note {
            let _ = write!(body, "<p>Note: <q class=\"note\">{}</q></p>", esc(n));
        }
        let _ = write!(
            body,
            "<button type=\"submit\" id=\"resolve-confirm\">Record it</button> \
             <a href=\"/console/reconcile/{}\">Back</a></form>",
            esc(&row.request_id)
        );
        self.page(who, asked, "Confirm", "/console/reconcile", false, body)
    }

    async fn resolve(&self, who: &Who, asked: &Asked, id: &str) -> Response<Full<Bytes>> {
        let Some(journal) = &self.journal else {
            return self.no_journal(who, asked, "Resolve", "/console/reconcile");
        };
        let row = match self.open_row(who, id).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        let (answer, note) = match answer_of(asked, &row) {
            Ok(a) => a,
            Err(e) => return self.resolve_form(who, asked, id, Some(&e)).await,
        };
        let consequence = consequence(&row, &answer);
        let result = journal
            .resolve(&row.request_id, answer.clone(), note, "console")
            .await;
        let (outcome, detail) = match &result {
            Ok(_) => ("ok", answer_text(&answer)),
            Err(e) => ("failed", resolve_error_text(e)),
        };
        self.note(
            &who.session.login,
            asked,
            "resolve",
            Some(&row.request_id),
            outcome,
            Some(detail.clone()),
        )
        .await;
        let body = match result {
            Ok(_) => format!(
                "<h1>Resolved</h1><p class=\"notice\" id=\"resolved\">Recorded: {}. {}</p><p><a href=\"/console/bookings/{2}\">The record</a> · <a href=\"/console/reconcile\">Back to reconcile</a></p>",
                esc(&detail),
                esc(&consequence),
                esc(&row.request_id)
            ),
            Err(_) => format!(
                "<h1>Not resolved</h1><p class=\"error\" id=\"resolve-error\">{}</p><p><a href=\"/console/reconcile\">Back to reconcile</a></p>",
                esc(&detail)
            ),
        };
        self.page(who, asked, "Resolve", "/console/reconcile", false, body)
    }

    /// An `unknown` record nobody resolved yet, or the page that says why not.
    async fn open_row(&self, who: &Who, id: &str) -> Result<Row, Response<Full<Bytes>>> {
        let Some(journal) = &self.journal else {
            return Err(self.not_found(who, "This gateway keeps no journal."));
        };
        let Some(id) = crate::booking::parse_guid(id).map(|u| u.hyphenated().to_string()) else {
            return Err(self.not_found(who, "No such record."));
        };
        match journal.get(&id).await {
            Ok(Some(r)) if r.open_unknown() => Ok(r),
            Ok(Some(_)) => Err(html(
                StatusCode::CONFLICT,
                layout(
                    "Resolved",
                    "/console/reconcile",
                    Some(&who.viewer()),
                    false,
                    &format!(
                        "<p class=\"error\" id=\"resolve-error\">This record is not an unresolved unknown. <a href=\"/console/bookings/{0}\">See it</a>.</p>",
                        esc(&id)
                    ),
                ),
            )),
            Ok(None) => Err(self.not_found(who, "No such record.")),
            Err(e) => Err(self.unavailable(who, &e)),
        }
    }

    // --- configuration ---------------------------------------------------------------------

    fn config(&self, who: &Who, asked: &Asked, notice: Option<String>) -> Response<Full<Bytes>> {
        let g = self.live.load();
        let c = &g.config;
        let mut body = String::from("<h1>Configuration</h1>");
        if let Some(n) = notice {
            body.push_str(&n);
        }
        let _ = write!(
            body,
            "<p>Generation <strong id=\"generation\">{}</strong>, loaded {}, file {} (<span class=\"mono\">sha256 {}</span>).</p>",
            g.number,
            esc(&g.loaded_at.to_string()),
            esc(&self
                .reloader
                .as_ref()
                .map_or("(not from a file)".into(), |r| r
                    .path()
                    .display()
                    .to_string())),
            esc(&c.sha256)
        );
        if who.may_act() && self.reloader.is_some() {
            let _ = write!(
                body,
                "<form method=\"post\" action=\"/console/reload\" data-confirm=\"Reload the configuration from its file now?\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\" id=\"reload\">Reload now</button></form>",
                esc(&who.session.csrf)
            );
        }
        if c.warnings.is_empty() {
            body.push_str("<p class=\"ok\">No warnings.</p>");
        } else {
            body.push_str("<h2>Warnings</h2><ul>");
            for w in &c.warnings {
                let _ = write!(body, "<li class=\"warn\">{}</li>", esc(w));
            }
            body.push_str("</ul>");
        }
        match self.live.last_rejected() {
            Some(r) => {
                let _ = write!(
                    body,
                    "<h2>Last rejected reload</h2><p class=\"bad\">At {} ({}): the last good generation stayed.</p><ul id=\"rejected\">",
                    esc(&r.at),
                    esc(r.sha256.as_deref().unwrap_or("unreadable file"))
                );
                for p in &r.problems {
                    let _ = write!(
                        body,
                        "<li><span class=\"mono\">{}</span>: {}</li>",
                        esc(&p.location),
                        esc(&p.message)
                    );
                }
                body.push_str("</ul>");
            }
            None => body.push_str("<p class=\"muted\">No reload was rejected.</p>"),
        }
        body.push_str("<h2>Route lookup</h2><form class=\"filters\" method=\"get\" action=\"/console/config\"><label>LPU GUID <input name=\"lpu\" id=\"lpu\" size=\"38\"></label><button type=\"submit\" id=\"lookup\">Look up</button></form>");
        if let Some(lpu) = asked.param("lpu") {
            match crate::booking::parse_guid(lpu.trim()) {
                None => body.push_str("<p class=\"error\">Not a GUID.</p>"),
                Some(guid) => match c.route(&guid) {
                    Some(i) => {
                        let _ = write!(
                            body,
                            "<p id=\"route\">{} → <strong>{}</strong></p>",
                            esc(&guid.to_string()),
                            esc(&c.backends[i].name)
                        );
                    }
                    None => {
                        let _ = write!(
                            body,
                            "<p id=\"route\" class=\"warn\">{}: no route (bookings get 404 94041).</p>",
                            esc(&guid.to_string())
                        );
                    }
                },
            }
        }
        body.push_str("<h2>Backends</h2><table><tr><th>name</th><th>url</th><th>zone</th><th>timeout</th><th>in flight max</th><th>connections max</th><th>cancel</th><th>on 5xx</th><th>routes</th></tr>");
        for (i, b) in c.backends.iter().enumerate() {
            let routes = c.routes.values().filter(|&&x| x == i).count();
            let _ = write!(
                body,
                "<tr class=\"backend-row\"><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td class=\"num\">{} ms</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{:?}</td><td class=\"num\">{}</td></tr>",
                esc(&b.name),
                esc(&b.url),
                esc(&b.timezone_name),
                b.timeout.as_millis(),
                b.limits.max_in_flight,
                b.limits.max_connections,
                if b.cancel { "yes" } else { "no" },
                b.on_5xx,
                routes
            );
        }
        body.push_str(
            "</table><h2>Integrators</h2><table><tr><th>login</th><th>LPUs</th><th>rate</th></tr>",
        );
        let mut integrators: Vec<_> = c.integrators.values().collect();
        integrators.sort_by(|a, b| a.login.cmp(&b.login));
        for i in integrators {
            let lpus = match &i.lpus {
                crate::config::LpuRights::All => "all".to_owned(),
                crate::config::LpuRights::Only(set) => {
                    let mut l: Vec<String> = set.iter().map(|g| g.to_string()).collect();
                    l.sort();
                    l.join(", ")
                }
            };
            let _ = write!(
                body,
                "<tr><td>{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                esc(&i.login),
                esc(&lpus),
                i.rate.map_or("—".into(), |r| format!(
                    "{}/s, burst {}",
                    page::fmt_num(r.per_second_milli as f64 / 1000.0),
                    r.burst
                ))
            );
        }
        body.push_str("</table><h2>Operators</h2><table><tr><th>login</th><th>role</th></tr>");
        let mut ops: Vec<_> = c.operators.values().collect();
        ops.sort_by(|a, b| a.login.cmp(&b.login));
        for o in ops {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(&o.login),
                o.role.as_str()
            );
        }
        body.push_str("</table>");
        self.page(who, asked, "Configuration", "/console/config", false, body)
    }

    async fn reload(&self, who: &Who, asked: &Asked) -> Response<Full<Bytes>> {
        let Some(r) = &self.reloader else {
            return self.config(
                who,
                asked,
                Some("<p class=\"error\">This gateway was not started from a file.</p>".into()),
            );
        };
        let outcome = r.reload("console").await;
        let (status, notice) = match &outcome {
            Outcome::Applied { generation, .. } => {
                ("ok", format!("Reloaded: generation {generation} is live."))
            }
            Outcome::Unchanged { generation } => (
                "ok",
                format!("The file is unchanged: generation {generation} stays."),
            ),
            Outcome::Rejected { problems, .. } => (
                "failed",
                format!(
                    "Rejected ({} problems): the last good generation stays.",
                    problems.len()
                ),
            ),
        };
        self.note(
            &who.session.login,
            asked,
            "reload",
            None,
            status,
            Some(notice.clone()),
        )
        .await;
        let class = if status == "ok" { "notice" } else { "error" };
        self.config(
            who,
            asked,
            Some(format!(
                "<p class=\"{class}\" id=\"reload-result\">{}</p>",
                esc(&notice)
            )),
        )
    }

    // --- the audit -------------------------------------------------------------------------

    async fn audit_page(&self, who: &Who, asked: &Asked) -> Response<Full<Bytes>> {
        let before = asked.param("before");
        let entries = match self.audit.list(before.as_deref(), PAGE + 1).await {
            Ok(e) => e,
            Err(e) => return self.unavailable(who, &e),
        };
        let mut body = String::from(
            "<h1>Audit</h1><p>Every operator action: sign-ins (and failed ones), sign-outs, resolutions, reloads, by the console or the admin token.</p><table id=\"audit\"><tr><th>when</th><th>who</th><th>via</th><th>action</th><th>target</th><th>from</th><th>outcome</th><th>detail</th></tr>",
        );
        for e in entries.iter().take(PAGE as usize) {
            let _ = write!(
                body,
                "<tr class=\"audit-entry\"><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                esc(&crate::journal::record::rfc3339(e.time_us)),
                esc(&e.who),
                esc(&e.via),
                esc(&e.action),
                esc(e.target.as_deref().unwrap_or_default()),
                esc(e.address.as_deref().unwrap_or_default()),
                if e.outcome == "ok" { "ok" } else { "bad" },
                esc(&e.outcome),
                esc(e.detail.as_deref().unwrap_or_default())
            );
        }
        body.push_str("</table>");
        if entries.len() > PAGE as usize
            && let Some(last) = entries.get(PAGE as usize - 1)
        {
            let _ = write!(
                body,
                "<p><a href=\"/console/audit?before={}\">Older entries</a></p>",
                url(&last.id)
            );
        }
        self.page(who, asked, "Audit", "/console/audit", true, body)
    }

    // --- shared ----------------------------------------------------------------------------

    fn page(
        &self,
        who: &Who,
        asked: &Asked,
        title: &str,
        here: &str,
        refresh: bool,
        body: String,
    ) -> Response<Full<Bytes>> {
        if asked.fragment {
            return html(StatusCode::OK, format!("<main>{body}</main>"));
        }
        html(
            StatusCode::OK,
            layout(title, here, Some(&who.viewer()), refresh, &body),
        )
    }

    fn no_journal(
        &self,
        who: &Who,
        asked: &Asked,
        title: &str,
        here: &str,
    ) -> Response<Full<Bytes>> {
        self.page(
            who,
            asked,
            title,
            here,
            false,
            "<p class=\"notice\">This gateway keeps no booking journal (<code>[journal] enabled = false</code>): there are no records to show.</p>".into(),
        )
    }

    fn not_found(&self, who: &Who, what: &str) -> Response<Full<Bytes>> {
        html(
            StatusCode::NOT_FOUND,
            layout(
                "Not found",
                "",
                Some(&who.viewer()),
                false,
                &format!("<p class=\"error\">{}</p>", esc(what)),
            ),
        )
    }

    fn unavailable(&self, who: &Who, e: &str) -> Response<Full<Bytes>> {
        html(
            StatusCode::SERVICE_UNAVAILABLE,
            layout(
                "Unavailable",
                "",
                Some(&who.viewer()),
                false,
                &format!(
                    "<p class=\"error\">The journal did not answer: {}</p>",
                    esc(e)
                ),
            ),
        )
    }
}

/// The audit's name of what a refused request tried.
fn action_of(path: &str) -> &'static str {
    if path.starts_with("/console/reconcile/") {
        "resolve"
    } else if path == "/console/reload" {
        "reload"
    } else if path == "/console/logout" {
        "sign-out"
    } else {
        "request"
    }
}

/// The table of records a listing shows.
fn records_table(body: &mut String, rows: &[Row]) {
    if rows.is_empty() {
        body.push_str("<p class=\"muted\" id=\"no-records\">No records.</p>");
        return;
    }
    body.push_str("<table id=\"records\"><tr><th>time</th><th>request</th><th>operation</th><th>outcome</th><th>status</th><th>code</th><th>backend</th><th>integrator</th><th>slot</th><th>appointment</th></tr>");
    for r in rows {
        let id = esc(&r.request_id);
        let appointment = r
            .appointment_guid
            .clone()
            .or_else(|| {
                r.resolution
                    .as_ref()
                    .and_then(|x| x.guid.map(|g| g.to_string()))
            })
            .unwrap_or_default();
        let _ = write!(
            body,
            "<tr class=\"record-row\"><td class=\"mono\">{}</td><td><a class=\"mono\" href=\"/console/bookings/{id}\">{id}</a></td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td></tr>",
            esc(&crate::journal::record::rfc3339(r.time_us)),
            esc(&r.operation),
            esc(&r.outcome),
            r.status,
            esc(r.message_code.as_deref().unwrap_or_default()),
            esc(r.backend.as_deref().unwrap_or_default()),
            esc(&r.integrator),
            esc(r.slot.as_deref().unwrap_or_default()),
            esc(&appointment),
        );
    }
    body.push_str("</table>");
}

/// The operator's answer from the form, checked as the admin API checks it.
fn answer_of(asked: &Asked, row: &Row) -> Result<(Answer, Option<String>), String> {
    let note = match asked.field("note").map(str::trim).filter(|n| !n.is_empty()) {
        None => None,
        Some(n) => {
            Some(crate::journal::admin::check_note(n).map_err(|reason| format!("note: {reason}"))?)
        }
    };
    let answer = match (row.operation.as_str(), asked.field("answer")) {
        ("cancel", Some("cancelled")) => Answer::Cancelled,
        ("cancel", Some("not_cancelled")) => Answer::NotCancelled,
        ("cancel", _) => return Err("say whether the clinic cancelled the appointment".into()),
        (_, Some("not_booked")) => Answer::NotBooked,
        (_, Some("booked")) => {
            let guid = asked
                .field("guid")
                .map(str::trim)
                .and_then(crate::booking::parse_guid)
                .ok_or("guid: must be the appointment's GUID as the clinic gives it")?;
            let number = asked
                .field("number")
                .map(str::trim)
                .filter(|n| valid_number(n))
                .ok_or("number: must be 1 to 64 visible characters")?;
            Answer::Booked(guid, number.to_owned())
        }
        _ => return Err("say whether the clinic has the booking".into()),
    };
    Ok((answer, note))
}

/// What recording `answer` on `row` will change, in words.
fn consequence(row: &Row, answer: &Answer) -> String {
    let keyed = row.key_hash.is_some();
    match answer {
        Answer::Booked(guid, number) if keyed => format!(
            "The clinic has the booking {guid} (number {number}): a same-key retry will get 200 with this appointment, replayed; the MIS is not asked again."
        ),
        Answer::Booked(guid, number) => format!(
            "The clinic has the booking {guid} (number {number}). The booking had no Idempotency-Key: nothing replays it, and the appointment can now be looked up and cancelled by its guid."
        ),
        Answer::NotBooked if keyed => "The clinic has no such booking: the key is released, and a same-key retry will be sent to the MIS again.".into(),
        Answer::NotBooked => "The clinic has no such booking: the integrator may book again.".into(),
        Answer::Cancelled => "The clinic cancelled the appointment: its booking shows as cancelled, and a cancel sent again is answered from the journal.".into(),
        Answer::NotCancelled => "The clinic still has the appointment: it stays booked, and a cancel sent again goes to the MIS.".into(),
    }
}

fn answer_text(answer: &Answer) -> String {
    match answer {
        Answer::Booked(guid, number) => format!("booked: {guid}, number {number}"),
        Answer::NotBooked => "not booked".into(),
        Answer::Cancelled => "cancelled".into(),
        Answer::NotCancelled => "not cancelled".into(),
    }
}

fn resolve_error_text(e: &ResolveError) -> String {
    match e {
        ResolveError::NotFound => "no such record".into(),
        ResolveError::Conflict(why) => (*why).into(),
        ResolveError::Unavailable(why) => format!("the journal database is unavailable: {why}"),
        ResolveError::StoreUnavailable(why) => {
            format!("the idempotency store is unavailable; nothing was changed: {why}")
        }
    }
}

fn ago_text(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else if s < 172_800 {
        format!("{} h", s / 3600)
    } else {
        format!("{} days", s / 86_400)
    }
}

/// `application/x-www-form-urlencoded` (and query strings): `+` is a space, `%XX` a byte;
/// invalid UTF-8 is replaced, never an error (the values are checked where they are used).
fn parse_form(s: &str) -> Vec<(String, String)> {
    let decode = |v: &str| {
        percent_encoding::percent_decode_str(&v.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A console response's headers: no caching, no framing, no sniffing, nothing from elsewhere.
fn secure_headers(r: &mut Response<Full<Bytes>>) {
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn html(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(&mut r);
    r
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure_headers(&mut r);
    r
}

fn redirect(to: &'static str, cookie: Option<&str>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    secure_headers(&mut r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_plus_and_percent_and_never_fail() {
        assert_eq!(
            parse_form("a=1+2&b=%3Cx%3E&c&d=%FF"),
            vec![
                ("a".into(), "1 2".into()),
                ("b".into(), "<x>".into()),
                ("c".into(), "".into()),
                ("d".into(), "\u{FFFD}".into())
            ]
        );
    }
}
