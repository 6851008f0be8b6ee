//! The admin listener, `check --against`, and the binary's SIGTERM drain.

mod support;

use std::process::Stdio;
use std::time::Duration;

use http::{Method, StatusCode};
use support::*;

#[tokio::test]
async fn the_config_view_shows_the_live_generation_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    let mis = MockMis::spawn(echo_mis()).await;
    let toml = config_toml(
        &[BackendSpec::new("mis-a", mis.url())],
        &[(SEED_LPU, "mis-a"), (OTHER_LPU, "mis-a")],
    );
    std::fs::write(&path, &toml).unwrap();
    let gw = TestGateway::start_file(&path).await;

    let r = gw.admin(Method::GET, "/admin/config").await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["generation"], 1);
    assert_eq!(
        v["sha256"],
        mis_gateway::config::sha256_hex(toml.as_bytes())
    );
    assert_eq!(v["counts"]["routes"], 2);
    assert_eq!(v["backends"][0]["routes"], 2);
    assert_eq!(v["integrators"][0]["login"], "callcentre");
    assert_eq!(v["integrators"][0]["lpus"], 1);
    assert_eq!(v["integrators"][1]["lpus"], "*");
    assert!(v["last_rejected"].is_null());
    let text = r.text();
    for secret in [
        PORTAL_HASH,
        CALLCENTRE_HASH,
        "pw-MIS_A_PASSWORD",
        &backend_auth("MIS_A_PASSWORD"),
        "argon2",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into {text}");
    }

    assert_eq!(
        gw.admin(Method::GET, "/healthz").await.status,
        StatusCode::OK
    );
    let r = gw
        .admin(
            Method::GET,
            &format!("/admin/routes/{}", SEED_LPU.to_uppercase()),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["backend"].as_str()),
        (StatusCode::OK, Some("mis-a"))
    );
    let r = gw
        .admin(Method::GET, &format!("/admin/routes/{UNROUTED_LPU}"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        gw.admin(Method::GET, "/admin/routes/nope").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        gw.admin(Method::GET, "/admin/nothing").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        gw.admin(Method::GET, "/admin/reload").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );

    // A rejected reload is answered 422 with its problems, and kept for the view.
    std::fs::write(&path, toml.replace("Europe/Moscow", "Mars/Olympus")).unwrap();
    let r = gw.admin(Method::POST, "/admin/reload").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.json()["outcome"], "rejected");
    assert_eq!(r.json()["problems"][0]["location"], "backends[0].timezone");
    let v = gw.admin(Method::GET, "/admin/config").await.json();
    assert_eq!(
        v["last_rejected"]["problems"][0]["location"],
        "backends[0].timezone"
    );
    assert_eq!(
        v["sha256"],
        mis_gateway::config::sha256_hex(toml.as_bytes()),
        "the last good file stays"
    );
}

#[tokio::test]
async fn an_admin_token_guards_everything_but_health() {
    let mis = MockMis::spawn(echo_mis()).await;
    let toml = config_toml(
        &[BackendSpec::new("mis-a", mis.url())],
        &[(SEED_LPU, "mis-a")],
    )
    .replace(
        "[admin]\n",
        "[admin]\ntoken_env = \"ADMIN_TOKEN_LONG_ENOUGH\"\n",
    );
    let gw = TestGateway::start(&toml).await;
    assert_eq!(
        gw.admin(Method::GET, "/healthz").await.status,
        StatusCode::OK
    );
    assert_eq!(
        gw.admin(Method::GET, "/readyz").await.status,
        StatusCode::OK
    );
    assert_eq!(
        gw.admin(Method::GET, "/admin/config").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        gw.admin(Method::POST, "/admin/reload").await.status,
        StatusCode::UNAUTHORIZED
    );
    let with = |token: &str| {
        http::Request::get(format!("http://{}/admin/config", gw.admin_addr))
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::default())
            .unwrap()
    };
    assert_eq!(
        gw.send(with("pw-ADMIN_TOKEN_LONG_ENOUGH")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        gw.send(with("pw-ADMIN_TOKEN_LONG_ENOUGX")).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Two Authorization headers are refused whatever their order (issue 28, item 7).
    for (first, second) in [
        ("pw-ADMIN_TOKEN_LONG_ENOUGH", "wrong"),
        ("wrong", "pw-ADMIN_TOKEN_LONG_ENOUGH"),
    ] {
        let mut req = with(first);
        req.headers_mut().append(
            "authorization",
            http::HeaderValue::from_str(&format!("Bearer {second}")).unwrap(),
        );
        assert_eq!(gw.send(req).await.status, StatusCode::UNAUTHORIZED);
    }
}

#[test]
fn check_against_prints_what_would_change() {
    let dir = tempfile::tempdir().unwrap();
    let old = config_toml(
        &[
            BackendSpec::new("mis-a", "http://127.0.0.1:9101".into()),
            BackendSpec::new("mis-b", "http://127.0.0.1:9102".into()),
        ],
        &[(SEED_LPU, "mis-a"), (OTHER_LPU, "mis-a")],
    );
    let new = config_toml(
        &[
            BackendSpec::new("mis-b", "http://127.0.0.1:9202".into()),
            BackendSpec::new("mis-c", "http://127.0.0.1:9103".into()),
        ],
        &[(SEED_LPU, "mis-b"), (UNROUTED_LPU, "mis-c")],
    )
    .replace(
        &format!("lpus = [\"{SEED_LPU}\"]"),
        &format!("lpus = [\"{OTHER_LPU}\"]"),
    );
    std::fs::write(dir.path().join("old.toml"), old).unwrap();
    std::fs::write(dir.path().join("new.toml"), new).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .args(["check", "--config", "new.toml", "--against", "old.toml"])
        .current_dir(dir.path())
        .envs([
            ("MIS_A_PASSWORD", "a"),
            ("MIS_B_PASSWORD", "b"),
            ("MIS_C_PASSWORD", "c"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        format!("route added: {UNROUTED_LPU} -> mis-c"),
        format!("route removed: {OTHER_LPU} (was mis-a)"),
        format!("route moved: {SEED_LPU}: mis-a -> mis-b"),
        "backend added: mis-c".into(),
        "backend removed: mis-a".into(),
        "backend \"mis-b\": url: \"http://127.0.0.1:9102\" -> \"http://127.0.0.1:9202\"".into(),
        format!("integrator \"callcentre\": lpus: added {OTHER_LPU}; removed {SEED_LPU}"),
    ] {
        assert!(
            text.lines().any(|l| l.trim() == line),
            "missing {line:?} in:\n{text}"
        );
    }
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_lets_the_slow_booking_in_flight_finish_then_exits_zero() {
    let mis = MockMis::spawn(std::sync::Arc::new(|r: &Received| {
        (echo_mis())(r).after(Duration::from_millis(1500))
    }))
    .await;
    let (api, admin) = (closed_port().await, closed_port().await);
    let toml = config_toml(
        &[BackendSpec::new("mis-a", mis.url())],
        &[(SEED_LPU, "mis-a")],
    )
    .replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{api}\""),
        1,
    )
    .replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{admin}\""),
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, toml).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("MIS_A_PASSWORD", "x")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let ready = eventually(Duration::from_secs(20), || {
        let c = client.clone();
        async move {
            let req = http::Request::get(format!("http://{admin}/readyz"))
                .body(Default::default())
                .unwrap();
            c.request(req)
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        }
    })
    .await;
    assert!(ready, "the gateway became ready");

    let booking = {
        let c = client.clone();
        tokio::spawn(async move {
            let req = booking_request(
                format!("http://{api}/dir/appointments"),
                &fresh_booking(),
                PORTAL,
            );
            c.request(req).await.map(|r| r.status())
        })
    };
    assert!(eventually(Duration::from_secs(10), || async { mis.count() == 1 }).await);
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(booking.await.unwrap().expect("answered"), StatusCode::OK);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}
