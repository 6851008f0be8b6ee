//! `mis-gateway demo` as a newcomer runs it: the printed curl books the seed's example.

mod support;

use std::process::Stdio;
use std::time::Duration;

use http::StatusCode;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn the_demo_prints_a_curl_that_books_the_seed_example() {
    // The shipped routes.toml with its fixed demo ports moved to free ones.
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/routes.toml")).unwrap();
    let mut config = shipped.clone();
    for fixed in [
        "127.0.0.1:8080",
        "127.0.0.1:9090",
        "127.0.0.1:9101",
        "127.0.0.1:9102",
    ] {
        assert!(config.contains(fixed), "{fixed}");
        config = config.replace(fixed, &closed_port().await.to_string());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, config).unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .args(["demo", "--config"])
        .arg(&path)
        .env_remove("MIS_NORTH_PASSWORD")
        .env_remove("MIS_CENTRAL_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
        panic!("the demo ended without printing a curl:\n{printed}");
    })
    .await
    .expect("the demo prints its curl");
    assert!(
        printed.contains("curl -sS -u portal:portal-demo"),
        "{printed}"
    );
    let body_file = printed
        .split_whitespace()
        .find_map(|w| w.strip_prefix('@'))
        .expect("the curl names its body file");
    let body = std::fs::read_to_string(body_file).unwrap();
    assert_eq!(body, SEED);

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let book = || {
        http::Request::post(url.as_str())
            .header("content-type", "application/json")
            .header("authorization", basic("portal", "portal-demo"))
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
            .unwrap()
    };
    use http_body_util::BodyExt;
    let r = client.request(book()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let a: serde_json::Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(a["slot"], SEED_SLOT);
    assert!(
        a["createTime"].as_str().unwrap().ends_with("+07:00"),
        "mis-north is in Novosibirsk: {a}"
    );

    let again = client.request(book()).await.unwrap();
    assert_eq!(
        again.status(),
        StatusCode::BAD_REQUEST,
        "the demo MIS refuses a taken slot"
    );
    child.kill().await.unwrap();
}
