//! `mis-gateway demo` run as a separate process, the way a newcomer runs it: the shipped
//! routes.toml with its fixed demo ports moved to free ones.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// A running demo: the process, and what it printed up to its curl.
pub struct DemoProcess {
    pub child: Child,
    /// Everything printed up to and including the curl's line.
    pub printed: String,
    /// The booking URL of the printed curl.
    pub url: String,
    /// Its standard output, held open: the demo prints more after its curl, and a closed pipe
    /// would end it.
    stdout: Lines<BufReader<ChildStdout>>,
    _dir: tempfile::TempDir,
}

impl DemoProcess {
    /// Starts `mis-gateway demo` with `args` after the config and `envs` set, and waits (at
    /// most 30 s) for its curl.
    pub async fn start(args: &[&str], envs: &[(&str, &str)]) -> DemoProcess {
        let shipped =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/routes.toml")).unwrap();
        let mut config = shipped;
        // Four distinct free ports: all bound at once, then released (one bound and released
        // after another may come back the same).
        let held: Vec<std::net::TcpListener> = (0..4)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<String> = held
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        drop(held);
        for (fixed, port) in [
            "127.0.0.1:8080",
            "127.0.0.1:9090",
            "127.0.0.1:9101",
            "127.0.0.1:9102",
        ]
        .into_iter()
        .zip(&ports)
        {
            assert!(config.contains(fixed), "{fixed}");
            config = config.replace(fixed, port);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        std::fs::write(&path, config).unwrap();

        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
            .args(["demo", "--config"])
            .arg(&path)
            .args(args)
            .envs(envs.iter().copied())
            .env_remove("MIS_NORTH_PASSWORD")
            .env_remove("MIS_CENTRAL_PASSWORD")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("demo.log")).unwrap(),
            ))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = String::new();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                printed.push_str(&line);
                printed.push('\n');
                if let Some(at) = line.find("http://") {
                    return line[at..].trim().to_owned();
                }
            }
            panic!(
                "the demo ended without printing a curl:\n{printed}\n{}",
                std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default()
            );
        })
        .await
        .expect("the demo prints its curl");
        DemoProcess {
            child,
            printed,
            url,
            stdout: lines,
            _dir: dir,
        }
    }

    /// The body file the printed curl sends.
    pub fn body(&self) -> String {
        let file = self
            .printed
            .split_whitespace()
            .find_map(|w| w.strip_prefix('@'))
            .expect("the curl names its body file");
        std::fs::read_to_string(file).unwrap()
    }

    /// The next printed line that contains `needle` (30 s at most).
    pub async fn line_with(&mut self, needle: &str) -> String {
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = self.stdout.next_line().await.unwrap() {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("the demo printed no line with {needle}");
        })
        .await
        .expect("the demo prints it")
    }

    /// Sends `method` to `url` as the demo's integrator; the answer's status and body.
    pub async fn call(&self, method: http::Method, url: &str) -> (http::StatusCode, bytes::Bytes) {
        use http_body_util::BodyExt;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let req = http::Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", super::basic("portal", "portal-demo"))
            .body(http_body_util::Full::default())
            .unwrap();
        let r = client.request(req).await.unwrap();
        let status = r.status();
        (status, r.into_body().collect().await.unwrap().to_bytes())
    }

    /// Posts the printed curl's booking once; the answer's status and body.
    pub async fn book(&self) -> (http::StatusCode, bytes::Bytes) {
        use http_body_util::BodyExt;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let req = http::Request::post(self.url.as_str())
            .header("content-type", "application/json")
            .header("authorization", super::basic("portal", "portal-demo"))
            .body(http_body_util::Full::new(bytes::Bytes::from(self.body())))
            .unwrap();
        let r = client.request(req).await.unwrap();
        let status = r.status();
        (status, r.into_body().collect().await.unwrap().to_bytes())
    }
}
