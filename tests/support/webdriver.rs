//! A headless Chromium driven through `chromedriver` (Debian's `chromium` and
//! `chromium-driver`): the W3C WebDriver calls the console's tests use, over plain HTTP to the
//! driver on loopback. The browser talks to the gateway only: it starts with no proxy and no
//! network beyond what the page asks for, and the tests check that is loopback alone.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

type Http = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a5ec-4f5c-4b47-c0f0-e7b7";

pub struct Browser {
    _driver: tokio::process::Child,
    base: String,
    session: String,
    http: Http,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session.
    pub async fn start() -> Browser {
        let port = super::closed_port().await.port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver is installed (.ci/run installs chromium-driver)");
        let http: Http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let base = format!("http://127.0.0.1:{port}");
        let mut b = Browser {
            _driver: driver,
            base,
            session: String::new(),
            http,
        };
        let up = super::eventually(Duration::from_secs(20), || async {
            b.raw(Method::GET, "/status", None)
                .await
                .is_some_and(|v| v["value"]["ready"] == true)
        })
        .await;
        assert!(up, "chromedriver answers on {}", b.base);
        let chromium = ["/usr/bin/chromium", "/usr/lib/chromium/chromium"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("/usr/bin/chromium");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1000", "--no-proxy-server", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-default-apps"
                ]
            }
        }}});
        let v = b
            .raw(Method::POST, "/session", Some(caps))
            .await
            .expect("a browser session");
        b.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        b
    }

    async fn raw(&self, method: Method, path: &str, body: Option<Value>) -> Option<Value> {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(60), self.http.request(req))
            .await
            .ok()?
            .ok()?;
        let bytes = resp.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&bytes).ok()
    }

    /// A session command; panics with the driver's error.
    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let v = self
            .raw(method, &format!("/session/{}{path}", self.session), body)
            .await
            .unwrap_or_else(|| panic!("the driver did not answer {path}"));
        if v["value"].get("error").is_some() {
            panic!("WebDriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn url(&self) -> String {
        self.cmd(Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's HTML as the browser holds it.
    pub async fn source(&self) -> String {
        self.cmd(Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Elements matching a CSS selector.
    pub async fn all(&self, css: &str) -> Vec<String> {
        self.cmd(
            Method::POST,
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            e.get(ELEMENT)
                .or_else(|| e.as_object()?.values().next())
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
    }

    /// The one element matching `css`; panics (with the page) when there is none.
    pub async fn find(&self, css: &str) -> String {
        match self.all(css).await.into_iter().next() {
            Some(e) => e,
            None => panic!("no {css} on {}:\n{}", self.url().await, self.source().await),
        }
    }

    pub async fn has(&self, css: &str) -> bool {
        !self.all(css).await.is_empty()
    }

    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd(
            Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Clicks something that loads a new page, and waits (10 s at most) until it has loaded.
    pub async fn click_to_load(&self, css: &str) {
        self.eval("window.__stale = true; return 0;", json!([]))
            .await;
        self.click(css).await;
        let loaded = super::eventually(Duration::from_secs(10), || async {
            self.raw(
                Method::POST,
                &format!("/session/{}/execute/sync", self.session),
                Some(json!({"script": "return window.__stale !== true && document.readyState === 'complete';", "args": []})),
            )
            .await
            .is_some_and(|v| v["value"] == true)
        })
        .await;
        assert!(loaded, "clicking {css} loaded a new page");
    }

    pub async fn type_in(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            Method::POST,
            &format!("/element/{e}/clear"),
            Some(json!({})),
        )
        .await;
        self.cmd(
            Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.cmd(Method::GET, &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.cmd(
            Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Runs `script` whose last argument is the callback that ends it.
    pub async fn eval_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            Method::POST,
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Accepts a `confirm()` the page opened.
    pub async fn accept_dialog(&self) {
        self.cmd(Method::POST, "/alert/accept", Some(json!({})))
            .await;
    }

    /// The browser's cookies for the current page: (name, value, httpOnly, sameSite).
    pub async fn cookies(&self) -> Vec<(String, String, bool, String)> {
        self.cmd(Method::GET, "/cookie", None)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().to_owned(),
                    c["value"].as_str().unwrap_or_default().to_owned(),
                    c["httpOnly"] == true,
                    c["sameSite"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    pub async fn delete_cookies(&self) {
        self.cmd(Method::DELETE, "/cookie", None).await;
    }

    /// A PNG of the viewport, written to `target/console-screenshots/{name}.png`.
    pub async fn screenshot(&self, name: &str) {
        use base64::Engine;
        let png = self.cmd(Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver is killed with its process handle; the browser goes with it.
    }
}
