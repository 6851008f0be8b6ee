//! The operators' console in a real headless Chromium (Debian's `chromium` through
//! `chromedriver`) against the real binary: sign-in, a viewer's limits (no resolve action, a
//! forged POST refused), an operator finding a booking by its slot, opening it and resolving
//! an unknown behind a confirmation, after which a same-key retry replays the resolution; the
//! audit of each step; CSRF; markup in a note and in a backend name shown as text; nothing
//! loaded from anywhere but the gateway; sign-in throttling. Screenshots of each page go to
//! `target/console-screenshots/`.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use support::journal::{ADMIN_TOKEN_ENV, FirstResetMis, admin_token};
use support::webdriver::Browser;
use support::*;

const LPU_RESETS: &str = "00000000-0000-4000-8000-0000000000c3";
const XSS: &str = "<script>alert(1)</script>";
const OPS: (&str, &str) = ("ops", "ops-password-1");
const WATCHER: (&str, &str) = ("watcher", "watcher-password-1");
/// Failed sign-ins per (login, address) in a minute before 429, as the config sets it.
const FAILURES: u32 = 3;

type Http = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

struct Node {
    _child: tokio::process::Child,
    api: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    http: Http,
    config: std::path::PathBuf,
}

impl Node {
    async fn start(dir: &Path, toml: &str) -> Node {
        const ANY: &str = "listen = \"127.0.0.1:0\"";
        let (api, admin) = (closed_port().await, closed_port().await);
        let toml = toml
            .replacen(ANY, &format!("listen = \"{api}\""), 1)
            .replacen(ANY, &format!("listen = \"{admin}\""), 1);
        let config = dir.join("routes.toml");
        std::fs::write(&config, toml).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("MIS_RESETS_PASSWORD", "pw-MIS_RESETS_PASSWORD")
            .env("MIS_XSS_PASSWORD", "pw-MIS_XSS_PASSWORD")
            .env(ADMIN_TOKEN_ENV, admin_token())
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("gateway.log")).unwrap(),
            ))
            .kill_on_drop(true)
            .spawn()
            .expect("the gateway binary starts");
        let http: Http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let up = eventually(Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(api).await.is_ok()
                && tokio::net::TcpStream::connect(admin).await.is_ok()
        })
        .await;
        assert!(
            up,
            "the gateway listens: {}",
            std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default()
        );
        Node {
            _child: child,
            api,
            admin,
            http,
            config,
        }
    }

    fn console(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> (StatusCode, http::HeaderMap, Bytes) {
        let r = self.http.request(req).await.expect("the gateway answers");
        let (parts, body) = r.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }
}

fn toml(resets: &FirstResetMis, xss_mis: &MockMis) -> String {
    let ops_hash = mis_gateway::policy::auth::hash_password(OPS.1).unwrap();
    let watcher_hash = mis_gateway::policy::auth::hash_password(WATCHER.1).unwrap();
    let mut t = config_toml(
        &[
            BackendSpec::new("mis-resets", resets.url()),
            BackendSpec::new("mis-xss", xss_mis.url()),
        ],
        &[(LPU_RESETS, "mis-resets"), (SEED_LPU, "mis-xss")],
    );
    // Backend names cannot hold markup (the config refuses them); an integrator's login can.
    t = t.replacen(
        "[[integrators]]",
        &format!("[[integrators]]\nlogin = \"{XSS}\"\npassword_hash = \"{PORTAL_HASH}\"\nlpus = [\"*\"]\n\n[[integrators]]"),
        1,
    );
    t = t.replacen(
        "[server]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[server]\nlisten = \"127.0.0.1:0\"\nauth_failures_per_login = {FAILURES}\n"),
        1,
    );
    t = t.replacen(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"{ADMIN_TOKEN_ENV}\"\ntrace_url = \"https://tempo.example/trace/{{traceId}}\"\n"
        ),
        1,
    );
    t.push_str(&format!(
        "\n[[operators]]\nlogin = \"{}\"\npassword_hash = \"{ops_hash}\"\nrole = \"operator\"\n\n[[operators]]\nlogin = \"{}\"\npassword_hash = \"{watcher_hash}\"\nrole = \"viewer\"\n",
        OPS.0, WATCHER.0
    ));
    t
}

async fn sign_in(b: &Browser, node: &Node, who: (&str, &str)) {
    b.goto(&node.console("/console/login")).await;
    b.type_in("#login", who.0).await;
    b.type_in("#password", who.1).await;
    b.click_to_load("#sign-in").await;
}

async fn sign_out(b: &Browser) {
    b.click_to_load("header form button").await;
}

/// A state-changing POST from inside the signed-in page (what a forged form would send), with
/// or without the page's CSRF token; its status.
async fn post_from_page(b: &Browser, path: &str, with_token: bool, fields: Value) -> u64 {
    b.eval_async(
        "const [path, withToken, fields, done] = arguments;\
         const body = new URLSearchParams(fields);\
         if (withToken) body.set('csrf', document.querySelector('input[name=csrf]').value);\
         fetch(path, {method: 'POST', body, credentials: 'same-origin', redirect: 'manual'})\
           .then(r => done(r.status)).catch(e => done(-1));",
        json!([path, with_token, fields]),
    )
    .await
    .as_u64()
    .unwrap_or(0)
}

/// The scripts on the page: only the console's own.
async fn scripts(b: &Browser) -> Vec<String> {
    b.eval(
        "return Array.from(document.scripts).map(s => s.src || s.textContent);",
        json!([]),
    )
    .await
    .as_array()
    .unwrap()
    .iter()
    .map(|v| v.as_str().unwrap_or_default().to_owned())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_reconcile_in_a_real_browser_and_every_step_is_audited() {
    let resets = FirstResetMis::spawn().await;
    let xss_mis = MockMis::spawn(echo_mis()).await;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &toml(&resets, &xss_mis)).await;
    let origin = format!("http://{}", node.admin);

    // An unknown booking to reconcile: the MIS resets after reading it (95022).
    let body = seed_with(|v| {
        v["direction"]["lpuToGuid"] = LPU_RESETS.into();
        v["slot"] = uuid::Uuid::new_v4().to_string().into();
    });
    let slot = serde_json::from_str::<Value>(&body).unwrap()["slot"]
        .as_str()
        .unwrap()
        .to_owned();
    let booking_url = format!("http://{}/dir/appointments", node.api);
    let (status, headers, _) = node
        .send(keyed_at(booking_url.clone(), &body, "console-key-1"))
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let unknown_id = headers["x-request-id"].to_str().unwrap().to_owned();

    let b = Browser::start().await;

    // Not signed in: the sign-in page, with the console's headers.
    b.goto(&node.console("/console/")).await;
    assert!(
        b.url().await.ends_with("/console/login"),
        "{}",
        b.url().await
    );
    b.screenshot("login").await;
    let (status, h, _) = node
        .send(
            Request::get(node.console("/console/login"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h[header::CACHE_CONTROL], "no-store");

    // A viewer sees, and may not act.
    sign_in(&b, &node, WATCHER).await;
    assert!(b.url().await.ends_with("/console/"), "{}", b.url().await);
    assert!(b.has("div.backend").await);
    let cookies = b.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c.0 == "mis_console")
        .expect("a session cookie");
    assert!(session.2, "HttpOnly");
    assert_eq!(session.3, "Strict");
    b.screenshot("overview").await;
    b.goto(&node.console("/console/reconcile")).await;
    assert!(b.source().await.contains(&unknown_id));
    assert!(!b.has("a.resolve").await, "no resolve action for a viewer");
    let forged = post_from_page(
        &b,
        &format!("/console/reconcile/{unknown_id}/confirm"),
        true,
        json!({"answer": "not_booked"}),
    )
    .await;
    assert_eq!(forged, 403, "a viewer's forged POST");
    sign_out(&b).await;
    assert!(b.url().await.ends_with("/console/login"));

    // An operator finds the booking by its slot, opens it, resolves it behind a confirmation.
    sign_in(&b, &node, OPS).await;
    b.goto(&node.console("/console/bookings")).await;
    b.type_in("#q", &slot.to_uppercase()).await;
    b.click_to_load("#find").await;
    let rows = b.all("tr.record-row").await;
    assert_eq!(rows.len(), 1, "{}", b.source().await);
    b.screenshot("bookings").await;
    b.click_to_load("tr.record-row a").await;
    assert!(
        b.url()
            .await
            .ends_with(&format!("/console/bookings/{unknown_id}"))
    );
    assert!(b.source().await.contains("unknown"));
    b.screenshot("record").await;
    b.click_to_load("#resolve-link").await;
    let guid = uuid::Uuid::new_v4().to_string();
    b.click("#answer-booked").await;
    b.type_in("#guid", &guid).await;
    b.type_in("#number", "A-17").await;
    // Patient data in a note is refused, naming the field.
    b.type_in("#note", "called +7 999 000 11 22").await;
    b.click_to_load("#resolve-next").await;
    assert!(b.text("#resolve-error").await.starts_with("note:"));
    b.click("#answer-booked").await;
    b.type_in("#guid", &guid).await;
    b.type_in("#number", "A-17").await;
    b.type_in("#note", &format!("{XSS} ticket OPS-7")).await;
    b.screenshot("resolve").await;
    b.click_to_load("#resolve-next").await;
    let consequence = b.text("#consequence").await;
    assert!(
        consequence.contains("a same-key retry will get 200"),
        "{consequence}"
    );
    b.screenshot("confirm").await;
    b.click_to_load("#resolve-confirm").await;
    assert!(
        b.text("#resolved").await.contains(&guid),
        "{}",
        b.source().await
    );

    // The same-key retry replays the resolution; the MIS saw the booking once.
    let (status, headers, answer) = node
        .send(keyed_at(booking_url.clone(), &body, "console-key-1"))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(headers["idempotent-replayed"], "true");
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["guid"], guid.as_str());
    assert_eq!(answer["number"], "A-17");
    assert_eq!(resets.count(&slot), 1, "never sent again");

    // Markup in a note and in a backend name is text, never a script.
    b.goto(&node.console(&format!("/console/bookings/{unknown_id}")))
        .await;
    assert!(b.text("q.note").await.contains(XSS));
    assert_eq!(
        scripts(&b).await,
        [format!("{origin}/console/static/console.js")]
    );
    let problems = config_problems(&toml(&resets, &xss_mis).replace("\"mis-xss\"", "\"<b>x</b>\""));
    assert!(
        problems.iter().any(|p| p.location.ends_with(".name")),
        "markup in a backend name is refused: {problems:?}"
    );
    // An integrator whose login holds markup books: it shows as text everywhere.
    let r = node
        .send(booking_request(
            booking_url.clone(),
            &fresh_booking(),
            (XSS, PORTAL.1),
        ))
        .await;
    assert_eq!(r.0, StatusCode::OK);
    for page in ["/console/config", "/console/", "/console/bookings"] {
        b.goto(&node.console(page)).await;
        let texts = b
            .eval(
                "return Array.from(document.querySelectorAll('td')).map(t => t.textContent);",
                json!([]),
            )
            .await;
        assert!(
            texts.as_array().unwrap().iter().any(|t| t == XSS),
            "{page}: {}",
            b.source().await
        );
        assert_eq!(
            scripts(&b).await,
            [format!("{origin}/console/static/console.js")],
            "{page}"
        );
    }
    b.goto(&node.console("/console/config")).await;
    // Everything the page loaded came from the gateway.
    let loaded = b
        .eval(
            "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href]);",
            json!([]),
        )
        .await;
    for url in loaded.as_array().unwrap() {
        assert!(
            url.as_str().unwrap().starts_with(&origin),
            "{url} is not the gateway's"
        );
    }
    // A reload, asked for and confirmed.
    b.click("#reload").await;
    b.accept_dialog().await;
    let result = b.text("#reload-result").await;
    assert!(
        result.contains("unchanged") || result.contains("Reloaded"),
        "{result}"
    );
    b.screenshot("config").await;
    b.goto(&node.console("/console/reconcile")).await;
    assert!(b.has("#nothing-to-reconcile").await);
    b.screenshot("reconcile").await;

    // Without the CSRF token a POST is refused, even signed in as an operator.
    let no_token = post_from_page(&b, "/console/reload", false, json!({})).await;
    assert_eq!(no_token, 403);

    // The audit shows each step.
    b.goto(&node.console("/console/audit")).await;
    b.screenshot("audit").await;
    let entries = b
        .eval(
            "return Array.from(document.querySelectorAll('tr.audit-entry')).map(r => Array.from(r.cells).map(c => c.textContent));",
            json!([]),
        )
        .await;
    let entries: Vec<Vec<String>> = serde_json::from_value(entries).unwrap();
    let has = |who: &str, action: &str, outcome: &str| {
        entries
            .iter()
            .any(|e| e[1] == who && e[3] == action && e[6] == outcome && e[5] == "127.0.0.1")
    };
    for (who, action, outcome) in [
        ("watcher", "sign-in", "ok"),
        ("watcher", "resolve", "refused"),
        ("watcher", "sign-out", "ok"),
        ("ops", "sign-in", "ok"),
        ("ops", "resolve", "ok"),
        ("ops", "reload", "ok"),
        ("ops", "reload", "refused"),
    ] {
        assert!(
            has(who, action, outcome),
            "{who} {action} {outcome} in {entries:#?}"
        );
    }
    assert!(
        entries.iter().any(|e| e[4] == unknown_id),
        "the resolve names its record"
    );

    // The same audit through the admin API and the CLI.
    let (status, _, audit) = node
        .send(
            Request::get(format!("http://{}/admin/audit?limit=100", node.admin))
                .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let audit: Value = serde_json::from_slice(&audit).unwrap();
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["who"] == "ops"
                && e["action"] == "resolve"
                && e["target"] == unknown_id.as_str())
    );
    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .args(["journal", "--config"])
        .arg(&node.config)
        .args(["audit", "--limit", "100"])
        .env(ADMIN_TOKEN_ENV, admin_token())
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(
        printed
            .lines()
            .any(|l| l.contains("ops") && l.contains("resolve")),
        "{printed}"
    );

    // Wrong passwords: refused, then throttled; the audit keeps both.
    sign_out(&b).await;
    for _ in 0..FAILURES {
        sign_in(&b, &node, (OPS.0, "wrong")).await;
        assert_eq!(b.text("#sign-in-error").await, "Wrong login or password.");
    }
    sign_in(&b, &node, (OPS.0, "wrong")).await;
    assert!(
        b.text("#sign-in-error")
            .await
            .starts_with("Too many failed sign-ins"),
        "{}",
        b.source().await
    );
    b.screenshot("throttled").await;
    let (_, _, audit) = node
        .send(
            Request::get(format!("http://{}/admin/audit?limit=100", node.admin))
                .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
                .body(Full::default())
                .unwrap(),
        )
        .await;
    let audit: Value = serde_json::from_slice(&audit).unwrap();
    let failed: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "sign-in-failed" && e["who"] == "ops")
        .collect();
    assert_eq!(failed.len(), FAILURES as usize + 1, "{failed:#?}");
    assert_eq!(failed[0]["detail"], "throttled");
}
