//! Test support: the real gateway built from a TOML string on 127.0.0.1:0, mock MIS servers that
//! record what they receive, and a small HTTP client. Loopback only; no fixed ports.
#![allow(dead_code, unused_imports)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mis_gateway::app::App;
use mis_gateway::config::{Config, Secrets};
use mis_gateway::live::Live;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod clients;
pub mod demo;
pub mod fault;
pub mod journal;
pub mod otlp;
pub mod pki;
pub mod postgres;
pub mod redis;
pub mod webdriver;

pub use mis_gateway::demo::mock_mis::{MockMis, Received, Reply, Script, clinic};

pub const SEED: &str = include_str!("../data/seed_request.json");
pub const SEED_LPU: &str = "1dadf64c-f34a-4023-98a6-3e7b7be4f243";
pub const SEED_SLOT: &str = "766998fb-1915-4d54-a3f3-934f60125aac";
/// A second clinic, routed to another MIS in multi-backend tests.
pub const OTHER_LPU: &str = "b3e0d5a7-8c21-4f6e-9d3a-5e7c1a2b4f60";
/// A clinic no route names.
pub const UNROUTED_LPU: &str = "0e8a4f3c-5d6b-4a7e-8f90-1a2b3c4d5e6f";

/// Argon2id (OWASP parameters) of "portal-pw" and "callcentre-pw".
pub const PORTAL_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$B4KIKqS05OPYgQ3Y/WLCjw$23o8pBpSH3TCCYqVfRkzmvN5y2xi6TMtD7dFDw5W1UI";
pub const CALLCENTRE_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$QLb/eQsfSJb0A4bbfHQoCg$hUOzMOCtRQN360O5UUoY8OVzQBfdnqcj46IPahU6KZk";
pub const PORTAL: (&str, &str) = ("portal", "portal-pw");
pub const CALLCENTRE: (&str, &str) = ("callcentre", "callcentre-pw");

/// Every `password_env` NAME resolves to `pw-NAME`; files are read from disk.
pub struct TestSecrets;

impl Secrets for TestSecrets {
    fn env(&self, name: &str) -> Option<String> {
        (!name.starts_with("UNSET")).then(|| format!("pw-{name}"))
    }
    fn file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// `Basic base64(login:password)`.
pub fn basic(login: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"))
    )
}

/// What the gateway sends to a backend whose login is `gateway` and password env is `env`.
pub fn backend_auth(env: &str) -> String {
    basic("gateway", &format!("pw-{env}"))
}

/// One `[[backends]]` entry; `extra` is appended verbatim (e.g. `timeout_ms = 300`).
pub struct BackendSpec<'a> {
    pub name: &'a str,
    pub url: String,
    pub tz: &'a str,
    pub extra: &'a str,
}

impl<'a> BackendSpec<'a> {
    pub fn new(name: &'a str, url: String) -> Self {
        BackendSpec {
            name,
            url,
            tz: "Europe/Moscow",
            extra: "",
        }
    }
    pub fn tz(mut self, tz: &'a str) -> Self {
        self.tz = tz;
        self
    }
    pub fn extra(mut self, extra: &'a str) -> Self {
        self.extra = extra;
        self
    }
    /// The password env name this spec uses.
    pub fn env(&self) -> String {
        format!(
            "{}_PASSWORD",
            self.name.to_ascii_uppercase().replace('-', "_")
        )
    }
}

/// A routes.toml with the two test integrators (portal: all LPUs; callcentre: SEED_LPU only).
pub fn config_toml(backends: &[BackendSpec], routes: &[(&str, &str)]) -> String {
    let mut s = format!(
        r#"[server]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[[integrators]]
login = "portal"
password_hash = "{PORTAL_HASH}"
lpus = ["*"]

[[integrators]]
login = "callcentre"
password_hash = "{CALLCENTRE_HASH}"
lpus = ["{SEED_LPU}"]
"#
    );
    for b in backends {
        s.push_str(&format!(
            "\n[[backends]]\nname = \"{}\"\nurl = \"{}\"\nlogin = \"gateway\"\npassword_env = \"{}\"\ntimezone = \"{}\"\n{}\n",
            b.name,
            b.url,
            b.env(),
            b.tz,
            b.extra
        ));
    }
    s.push_str("\n[routes]\n");
    for (lpu, name) in routes {
        s.push_str(&format!("\"{lpu}\" = \"{name}\"\n"));
    }
    s
}

/// The problems a config that must be refused is refused with.
pub fn config_problems(toml: &str) -> Vec<mis_gateway::config::Problem> {
    match Config::from_bytes(toml.as_bytes(), Path::new("."), &TestSecrets) {
        Ok(_) => panic!("expected problems in:\n{toml}"),
        Err(p) => p,
    }
}

pub fn parse_config(toml: &str) -> Config {
    match Config::from_bytes(toml.as_bytes(), Path::new("."), &TestSecrets) {
        Ok(c) => c,
        Err(p) => panic!("test config is invalid: {p:?}\n{toml}"),
    }
}

/// The real gateway on 127.0.0.1:0.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    pub gateway: Arc<mis_gateway::booking::pipeline::Gateway>,
    pub reloader: Option<Arc<mis_gateway::edge::reload::Reloader>>,
    pub live: Arc<Live>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl TestGateway {
    pub async fn start(toml: &str) -> TestGateway {
        Self::start_config(parse_config(toml)).await
    }

    pub async fn start_config(config: Config) -> TestGateway {
        Self::start_app(App::new(config), false).await
    }

    /// A gateway that loads, watches and reloads the file at `path`.
    pub async fn start_file(path: &Path) -> TestGateway {
        let app = App::from_file(path.to_path_buf(), Arc::new(TestSecrets))
            .expect("the test file is valid");
        Self::start_app(app, true).await
    }

    pub async fn start_app(app: App, watch: bool) -> TestGateway {
        let live = app.live.clone();
        let draining = app.draining.clone();
        let gateway = app.gateway.clone();
        let reloader = app.reloader.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            app.run(listener, Some(admin), shutdown, watch).await;
        });
        TestGateway {
            addr,
            admin_addr,
            draining,
            gateway,
            reloader,
            live,
            stop: Some(stop),
            task: Some(task),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// A single-backend gateway in front of `mis`, routing SEED_LPU and OTHER_LPU to it.
    pub async fn in_front_of(mis: &MockMis, extra: &str) -> TestGateway {
        let spec = BackendSpec::new("mis-a", mis.url()).extra(extra);
        Self::start(&config_toml(
            &[spec],
            &[(SEED_LPU, "mis-a"), (OTHER_LPU, "mis-a")],
        ))
        .await
    }

    /// GET or POST on the admin listener.
    pub async fn admin(&self, method: http::Method, path: &str) -> TestResponse {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.admin_addr))
            .body(Full::default())
            .unwrap();
        self.send(req).await
    }

    /// Sends the stop signal without waiting (the drain runs in the background).
    pub fn begin_shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs `body` as JSON to /dir/appointments with Basic credentials.
    pub async fn book(&self, body: &str, who: (&str, &str)) -> TestResponse {
        self.send(booking_request(self.url("/dir/appointments"), body, who))
            .await
    }

    /// A booking by the portal that carries a W3C `traceparent` (sampled).
    pub fn traced(&self, body: String, trace_id: &str, parent_id: &str) -> Request<Full<Bytes>> {
        Request::post(self.url("/dir/appointments"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, basic(PORTAL.0, PORTAL.1))
            .header("traceparent", format!("00-{trace_id}-{parent_id}-01"))
            .header("tracestate", TRACESTATE)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }

    /// `n` distinct bookings by the portal sent at once; their statuses in order.
    pub async fn book_at_once(self: &Arc<Self>, n: usize) -> Vec<StatusCode> {
        let answers = self.book_at_once_timed(n).await;
        answers.into_iter().map(|(r, _)| r.status).collect()
    }

    /// As [`TestGateway::book_at_once`]: each answer with how long it took.
    pub async fn book_at_once_timed(
        self: &Arc<Self>,
        n: usize,
    ) -> Vec<(TestResponse, std::time::Duration)> {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let gw = self.clone();
                tokio::spawn(async move {
                    let t = std::time::Instant::now();
                    let r = gw.book(&fresh_booking(), PORTAL).await;
                    (r, t.elapsed())
                })
            })
            .collect();
        let mut answers = Vec::with_capacity(n);
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        answers
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> TestResponse {
        self.try_send(req).await.expect("the gateway answers")
    }

    /// As [`TestGateway::send`], with a failed exchange (e.g. a connection the gateway refused
    /// with its early 503 before the request went out) as `None`.
    pub async fn try_send(&self, req: Request<Full<Bytes>>) -> Option<TestResponse> {
        Some(TestResponse::read(self.client.request(req).await.ok()?).await)
    }

    /// Sends a request whose body is streamed in `chunks` (chunked transfer encoding).
    pub async fn send_streaming<S>(&self, req: http::request::Builder, chunks: S) -> TestResponse
    where
        S: futures_util::Stream<Item = Result<http_body::Frame<Bytes>, std::io::Error>>
            + Send
            + Unpin
            + 'static,
    {
        let client =
            Client::builder(TokioExecutor::new()).build_http::<http_body_util::StreamBody<S>>();
        let resp = client
            .request(req.body(http_body_util::StreamBody::new(chunks)).unwrap())
            .await
            .expect("the gateway answers");
        TestResponse::read(resp).await
    }

    /// Stops accepting, drains, and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    /// Reads a whole response.
    pub async fn read(resp: http::Response<hyper::body::Incoming>) -> TestResponse {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    /// `Message_code` of an error body.
    pub fn code(&self) -> String {
        self.json()["Message_code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The seed's booking with `edit` applied.
pub fn seed_with(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(SEED).unwrap();
    edit(&mut v);
    v.to_string()
}

/// A MIS that answers every request with `reply`.
pub fn always(reply: Reply) -> Script {
    Arc::new(move |_| reply.clone())
}

/// A mock MIS that books like a real clinic in `tz` and expects `backend_auth(env)`.
pub async fn clinic_mis(env: &str, tz: &str) -> MockMis {
    MockMis::spawn(clinic(
        backend_auth(env),
        jiff::tz::TimeZone::get(tz).unwrap(),
    ))
    .await
}

/// A loopback address nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

pub fn headers_map(h: &HeaderMap) -> HashMap<String, String> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or("<bin>").to_owned(),
            )
        })
        .collect()
}

/// A MIS that books every request into the slot it names (credentials not checked).
pub fn echo_mis() -> Script {
    Arc::new(|r: &Received| {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let answer = serde_json::json!({
            "guid": uuid::Uuid::new_v4().to_string(),
            "number": "1",
            "slot": v["slot"],
            "createTime": "2023-04-05T14:00:00",
        });
        Reply::json(200, answer.to_string())
    })
}

/// A MIS that books every POST (as [`echo_mis`]) and answers every DELETE with `cancel`.
pub fn cancelling_mis(cancel: Reply) -> Script {
    let book = echo_mis();
    Arc::new(move |r: &Received| {
        if r.method == http::Method::DELETE {
            cancel.clone()
        } else {
            book(r)
        }
    })
}

/// This MIS family's answer to a cancellation made.
pub fn cancelled_reply() -> Reply {
    Reply::exception(200, "Cancelled", "2000")
}

/// The seed's booking into a fresh random slot.
pub fn fresh_booking() -> String {
    seed_with(|v| v["slot"] = uuid::Uuid::new_v4().to_string().into())
}

/// Polls `probe` every 20 ms until it returns true or `within` passes; returns whether it did.
pub async fn eventually<F, Fut>(within: std::time::Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if probe().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Replaces `path` the way editors do: write a temporary file, then rename it over.
pub fn rename_save(path: &Path, content: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The vendor trace state [`TestGateway::traced`] sends (the W3C spec's example).
pub const TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

/// What [`drive_traced`] saw.
pub struct Traced {
    /// The guid of the booking made with the integrator's `traceparent`.
    pub appointment: String,
    /// The parent span id in the `traceparent` the MIS received.
    pub mis_parent: String,
    /// The trace id the gateway gave a request that came without `traceparent`.
    pub own_trace: String,
}

/// Sends a booking and a bad request with `traceparent` (`trace_id`, `parent_id`), then a bad
/// request without one, and asserts what every telemetry set-up must keep: the MIS gets the
/// integrator's trace, error bodies name it, an untraced request gets a trace of its own.
pub async fn drive_traced(
    gw: &TestGateway,
    mis: &MockMis,
    trace_id: &str,
    parent_id: &str,
) -> Traced {
    let r = gw
        .send(gw.traced(fresh_booking(), trace_id, parent_id))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let appointment = r.json()["guid"].as_str().unwrap().to_owned();
    let tp = mis.received()[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!((parts[0], parts[1]), ("00", trace_id), "{tp}");
    assert_eq!(
        mis.received()[0].headers["tracestate"],
        TRACESTATE,
        "tracestate goes on with its trace"
    );

    let bad = gw.send(gw.traced("{}".into(), trace_id, parent_id)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["traceId"], trace_id);
    let own_trace = gw.book("{}", PORTAL).await.json()["traceId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        own_trace.len(),
        32,
        "an untraced request gets a trace of its own"
    );
    assert_ne!(own_trace, trace_id);
    Traced {
        appointment,
        mis_parent: parts[2].to_owned(),
        own_trace,
    }
}

/// Two bookings with a `tracestate` but no valid `traceparent`: the MIS gets the gateway's own
/// trace and no `tracestate`, which belongs to no trace it is told of.
pub async fn tracestate_needs_its_traceparent(gw: &TestGateway, mis: &MockMis) {
    for traceparent in [None, Some("00-not-a-trace-01")] {
        let mut req = booking_request(gw.url("/dir/appointments"), &fresh_booking(), PORTAL);
        req.headers_mut()
            .insert("tracestate", http::HeaderValue::from_static(TRACESTATE));
        if let Some(tp) = traceparent {
            req.headers_mut()
                .insert("traceparent", http::HeaderValue::from_static(tp));
        }
        assert_eq!(gw.send(req).await.status, StatusCode::OK);
        let got = mis.received().last().unwrap().headers.clone();
        assert!(got.contains_key("traceparent"), "the gateway's own trace");
        assert!(!got.contains_key("tracestate"), "{traceparent:?}: {got:?}");
    }
}

/// `POST url` with a JSON `body` and `who`'s Basic credentials.
/// The portal's booking of `body` at `url` with `Idempotency-Key: key`.
pub fn keyed_at(url: String, body: &str, key: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, basic(PORTAL.0, PORTAL.1))
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

pub fn booking_request(url: String, body: &str, who: (&str, &str)) -> Request<Full<Bytes>> {
    Request::post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, basic(who.0, who.1))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}
