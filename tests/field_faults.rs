//! Never twice, never lost, where the hub really runs (RELIABILITY.md R1–R4): a replica killed
//! while its booking is at the MIS, Redis gone and back empty, a drain that expires, a MIS that
//! books and then answers 500, and a Redis with a password and TLS. Real processes: the
//! gateway binary, `redis-server`, mock MIS servers that count requests per slot.

mod support;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use mis_gateway::policy::idempotency::redis::{RedisSettings, RedisStore};
use mis_gateway::policy::idempotency::{Begin, Outcome, Store, slot_of};
use support::pki::Pki;
use support::redis::{RedisServer, ping};
use support::*;

const FP_ENV: &str = "SHARED_FP_KEY_FOR_TESTS";

type PlainClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// A client of its own, for requests whose answer may never come.
fn plain_client() -> PlainClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

fn keyed(gw: &TestGateway, body: &str, key: &str) -> Request<Full<Bytes>> {
    keyed_at(gw.url("/dir/appointments"), body, key)
}

/// Requests the MIS received, by the booking's `slot`.
fn per_slot(mis: &MockMis) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in mis.received() {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        *out.entry(v["slot"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    out
}

fn slot_in(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["slot"].as_str().unwrap().to_owned()
}

/// The ledger assertion: no slot reached the MIS twice. Prints the scenario's figures.
fn assert_at_most_once(scenario: &str, bookings: usize, mis: &MockMis) {
    let counts = per_slot(mis);
    let duplicates: usize = counts.values().map(|n| n.saturating_sub(1)).sum();
    eprintln!(
        "{scenario}: bookings {bookings}, MIS requests {}, duplicates {duplicates}",
        mis.count()
    );
    assert_eq!(duplicates, 0, "{scenario}: {counts:?}");
}

/// A config for one backend on `mis` with `[idempotency]` lines added (shared fingerprints).
fn toml_with(mis: &MockMis, backend_extra: &str, idempotency: &str) -> String {
    config_toml(
        &[BackendSpec::new("mis-a", mis.url()).extra(backend_extra)],
        &[(SEED_LPU, "mis-a")],
    )
    .replace(
        "[admin]",
        &format!("[idempotency]\nfingerprint_key_env = \"{FP_ENV}\"\n{idempotency}\n[admin]"),
    )
}

fn slow_echo(delay: Duration) -> Script {
    Arc::new(move |r: &Received| (echo_mis())(r).after(delay))
}

/// `mis-gateway serve` as its own process, on free ports.
struct Replica {
    child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Replica {
    async fn start(toml: &str) -> Replica {
        let (api, admin) = (closed_port().await, closed_port().await);
        let toml = toml
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
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
            .args(["serve", "--config"])
            .arg(&path)
            // As the in-process replicas' TestSecrets resolve them.
            .env(FP_ENV, format!("pw-{FP_ENV}"))
            .env("MIS_A_PASSWORD", "pw-MIS_A_PASSWORD")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let ready = eventually(Duration::from_secs(30), || async move {
            tokio::net::TcpStream::connect(api).await.is_ok()
        })
        .await;
        assert!(ready, "the replica listens");
        Replica {
            child,
            url: format!("http://{api}/dir/appointments"),
            _dir: dir,
        }
    }
}

#[tokio::test]
async fn r1_a_replica_killed_at_the_mis_leaves_a_claim_that_lapses_into_unknown_never_a_resend() {
    let redis = RedisServer::start().await;
    let mis = MockMis::spawn(slow_echo(Duration::from_secs(3))).await;
    let toml = toml_with(
        &mis,
        "timeout_ms = 10000",
        &format!("store = \"{}\"\nlease_ms = 1000", redis.url()),
    )
    .replace("[server]\n", "[server]\ndrain_timeout_ms = 15000\n");
    let mut a = Replica::start(&toml).await;
    let b = TestGateway::start(&toml).await;
    let body = fresh_booking();
    let slot = slot_in(&body);

    let client = plain_client();
    let first = {
        let (client, req) = (client.clone(), keyed_at(a.url.clone(), &body, "r1-key"));
        tokio::spawn(async move { client.request(req).await.is_ok() })
    };
    assert!(
        eventually(Duration::from_secs(10), || async { mis.count() == 1 }).await,
        "the booking reached the MIS"
    );
    a.child.kill().await.unwrap(); // SIGKILL
    assert!(
        !first.await.unwrap(),
        "the killed replica's client got no answer"
    );

    // Retried on the other replica until well past the lease: 409 while it may still run,
    // then outcome unknown; never sent again.
    let mut codes = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        let r = b.send(keyed(&b, &body, "r1-key")).await;
        codes.push(r.code());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        codes.iter().all(|c| c == "94090" || c == "95022"),
        "{codes:?}"
    );
    assert_eq!(codes.last().unwrap(), "95022", "{codes:?}");
    let last = b.send(keyed(&b, &body, "r1-key")).await;
    assert_eq!(
        last.headers["idempotent-replayed"], "true",
        "answered from the store"
    );
    let unknown_from = codes.iter().position(|c| c == "95022").unwrap();
    assert!(
        codes[unknown_from..].iter().all(|c| c == "95022"),
        "once lapsed, always unknown: {codes:?}"
    );
    assert_eq!(per_slot(&mis).get(&slot), Some(&1));
    assert_at_most_once("R1 replica killed", 1 + codes.len(), &mis);
    let metrics = b.admin(http::Method::GET, "/metrics").await.text();
    assert!(
        metrics.contains("mis_gateway_idempotency_lapsed_claims"),
        "the lapse is counted"
    );
}

/// Sends `body` under `key` twice in a row, then `body2` under `key2` twice at once, on `gw`;
/// returns the four codes (the message code, or "200"/"replayed").
async fn twice_in_a_row_and_at_once(
    gw: &Arc<TestGateway>,
    body: &str,
    key: &str,
    body2: &str,
    key2: &str,
) -> Vec<String> {
    let label = |r: TestResponse| match (r.status, r.headers.get("idempotent-replayed")) {
        (StatusCode::OK, Some(_)) => "replayed".to_owned(),
        (StatusCode::OK, None) => "200".to_owned(),
        (s, _) => {
            if s == StatusCode::SERVICE_UNAVAILABLE {
                assert!(r.headers.contains_key("retry-after"));
            }
            r.code()
        }
    };
    let mut out = Vec::new();
    for _ in 0..2 {
        out.push(label(gw.send(keyed(gw, body, key)).await));
    }
    let at_once: Vec<_> = (0..2)
        .map(|_| {
            let (gw, body2, key2) = (gw.clone(), body2.to_owned(), key2.to_owned());
            tokio::spawn(async move { gw.send(keyed(&gw, &body2, &key2)).await })
        })
        .collect();
    for t in at_once {
        out.push(label(t.await.unwrap()));
    }
    out
}

async fn redis_gone_and_back_empty(policy: &str) {
    let mut redis = RedisServer::start().await;
    let port = redis.port;
    let mis = MockMis::spawn(slow_echo(Duration::from_millis(200))).await;
    let toml = toml_with(
        &mis,
        "",
        &format!("store = \"{}\"\non_store_error = \"{policy}\"", redis.url()),
    );
    let a = Arc::new(TestGateway::start(&toml).await);
    let b = Arc::new(TestGateway::start(&toml).await);
    let mut bookings = 0;
    let before = fresh_booking();
    assert_eq!(
        a.send(keyed(&a, &before, "before")).await.status,
        StatusCode::OK
    );
    bookings += 1;

    redis.kill().await;
    // A key this replica finished before the outage is answered from its own memory, under
    // either policy: never sent again.
    let retry_before = a.send(keyed(&a, &before, "before")).await;
    bookings += 1;
    assert_eq!(
        retry_before.status,
        StatusCode::OK,
        "{}",
        retry_before.text()
    );
    assert!(retry_before.headers.contains_key("idempotent-replayed"));
    let (k1, k2) = (fresh_booking(), fresh_booking());
    let down = twice_in_a_row_and_at_once(&a, &k1, "down-1", &k2, "down-2").await;
    bookings += 4;
    match policy {
        "reject" => {
            assert_eq!(down, ["95030"; 4], "nothing unclaimed is sent");
            assert_eq!(mis.count(), 1);
        }
        _ => {
            assert_eq!(down[..2], ["200", "replayed"], "{down:?}");
            let metrics = a.admin(http::Method::GET, "/metrics").await.text();
            assert!(
                metrics.contains("mis_gateway_idempotency_local_claims"),
                "per-replica protection is counted"
            );
            let mut at_once = down[2..].to_vec();
            at_once.sort();
            assert!(
                at_once == ["200", "94090"] || at_once == ["200", "replayed"],
                "{down:?}"
            );
        }
    }

    // Redis back on the same address, empty.
    let redis_back = RedisServer::start_on(port)
        .await
        .expect("the port is free again");
    let (k3, k4) = (fresh_booking(), fresh_booking());
    // The outcomes kept in replica a are replayed there, and reach the new Redis.
    // What replica a kept (the outage's outcomes) reaches the new Redis in the background.
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.gateway.keys.kept_locally() == 0
        })
        .await,
        "{policy}: the kept outcomes are written"
    );
    let tries = std::sync::atomic::AtomicUsize::new(0);
    assert!(
        eventually(Duration::from_secs(10), || async {
            let r = b.send(keyed(&b, &k1, "down-1")).await;
            tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match policy {
                // Nothing was sent during the outage: this is the key's first booking.
                "reject" => r.status == StatusCode::OK,
                _ => {
                    assert!(
                        r.status == StatusCode::OK
                            || r.code() == "95030"
                            || r.headers.contains_key("idempotent-replayed")
                    );
                    r.headers.contains_key("idempotent-replayed")
                }
            }
        })
        .await,
        "{policy}: the key booked during the outage is shared again"
    );
    bookings += tries.into_inner();
    let again = twice_in_a_row_and_at_once(&b, &k3, "back-3", &k4, "back-4").await;
    bookings += 4;
    assert_eq!(again[..2], ["200", "replayed"], "{again:?}");
    // Replica a reconnects (it waits a moment after a failed connect) and replays too.
    assert!(
        eventually(Duration::from_secs(10), || async {
            let r = a.send(keyed(&a, &k1, "down-1")).await;
            assert!(r.code() == "95030" || r.headers.contains_key("idempotent-replayed"));
            r.headers.contains_key("idempotent-replayed")
        })
        .await
    );
    bookings += 1;
    // The new Redis never saw `before`: replica a, which booked it, writes it back when asked,
    // and then replica b replays it from Redis too.
    let before_slot = slot_in(&before);
    let tries = std::sync::atomic::AtomicUsize::new(0);
    assert!(
        eventually(Duration::from_secs(10), || async {
            let r = a.send(keyed(&a, &before, "before")).await;
            tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert!(
                r.headers.contains_key("idempotent-replayed"),
                "{}",
                r.text()
            );
            redis_back
                .entries()
                .await
                .iter()
                .any(|(_, v)| v.contains(&before_slot))
        })
        .await,
        "{policy}: the booking the new Redis lacked is written back"
    );
    bookings += tries.into_inner();
    let r = b.send(keyed(&b, &before, "before")).await;
    bookings += 1;
    assert!(
        r.headers.contains_key("idempotent-replayed"),
        "{}",
        r.text()
    );
    assert_eq!(per_slot(&mis).get(&before_slot), Some(&1), "booked once");
    for body in [&k1, &k2, &k3, &k4] {
        assert!(per_slot(&mis).get(&slot_in(body)).copied().unwrap_or(0) <= 1);
    }
    assert_at_most_once(
        &format!("R2 redis gone and back empty, {policy}"),
        bookings,
        &mis,
    );
}

#[tokio::test]
async fn r2_redis_gone_then_back_empty_under_reject_sends_nothing_unclaimed() {
    redis_gone_and_back_empty("reject").await;
}

#[tokio::test]
async fn r2_redis_gone_then_back_empty_under_local_sends_each_key_once_per_replica() {
    redis_gone_and_back_empty("local").await;
}

#[tokio::test]
async fn r3_a_drain_that_expires_answers_504_95040_and_records_the_key() {
    let redis = RedisServer::start().await;
    let mis = MockMis::spawn(slow_echo(Duration::from_secs(5))).await;
    let toml = toml_with(
        &mis,
        "timeout_ms = 10000",
        &format!("store = \"{}\"", redis.url()),
    )
    .replace("[server]\n", "[server]\ndrain_timeout_ms = 300\n");
    let problems_free = parse_config(&toml);
    assert!(
        problems_free
            .warnings
            .iter()
            .any(|w| w.contains("drain_timeout_ms is shorter")),
        "check warns: {:?}",
        problems_free.warnings
    );
    let mut a = TestGateway::start(&toml).await;
    let b = TestGateway::start(&toml).await;
    let url = a.url("/dir/appointments");
    let bodies: Vec<String> = (0..3).map(|_| fresh_booking()).collect();
    let client = plain_client();
    let sent: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let req = keyed_at(url.clone(), body, &format!("drain-{i}"));
            let client = client.clone();
            tokio::spawn(async move {
                let resp = client
                    .request(req)
                    .await
                    .expect("an answer, not a bare close");
                TestResponse::read(resp).await
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(10), || async { mis.count() == 3 }).await);
    a.begin_shutdown();
    for t in sent {
        let r = tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .expect("answered at the drain deadline, long before the MIS")
            .unwrap();
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::GATEWAY_TIMEOUT, "95040")
        );
    }
    a.shutdown().await;
    // The keys are recorded in the store: a retry on the other replica is not sent.
    for (i, body) in bodies.iter().enumerate() {
        let r = b.send(keyed(&b, body, &format!("drain-{i}"))).await;
        assert_eq!(r.code(), "95040");
        assert_eq!(r.headers["idempotent-replayed"], "true");
    }
    assert_at_most_once("R3 drain expired", 6, &mis);
    assert_eq!(mis.count(), 3);
}

#[tokio::test]
async fn r3_over_http2_too_a_drain_that_expires_answers_504_95040() {
    let pki = Pki::new("hub test CA");
    let dir = tempfile::tempdir().unwrap();
    pki.leaf(&["localhost", "127.0.0.1"])
        .write(dir.path(), "server");
    let mis = MockMis::spawn(slow_echo(Duration::from_secs(5))).await;
    let toml = toml_with(&mis, "timeout_ms = 10000", "")
        .replace("[server]\n", "[server]\ndrain_timeout_ms = 300\n")
        .replace(
            "[admin]",
            "[server.tls]\ncert = \"server.crt\"\nkey = \"server.key\"\n\n[admin]",
        );
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, &toml).unwrap();
    let mut gw = TestGateway::start_file(&path).await;
    let url = format!("https://localhost:{}/dir/appointments", gw.addr.port());
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(pki.roots())
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .build();
    let mut builder =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    builder.http2_only(true);
    let client = builder.build::<_, Full<Bytes>>(connector);
    let body = fresh_booking();
    let sent = tokio::spawn(async move {
        let resp = client
            .request(keyed_at(url, &body, "h2-drain"))
            .await
            .expect("an answer, not a bare close");
        assert_eq!(resp.version(), http::Version::HTTP_2);
        TestResponse::read(resp).await
    });
    assert!(eventually(Duration::from_secs(10), || async { mis.count() == 1 }).await);
    gw.begin_shutdown();
    let r = tokio::time::timeout(Duration::from_secs(4), sent)
        .await
        .expect("answered at the drain deadline")
        .unwrap();
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "95040")
    );
    gw.shutdown().await;
}

async fn mis_500_after_reading(on_5xx: &str) -> (Vec<String>, usize) {
    let mis = MockMis::spawn(always(Reply::exception(500, "MIS down", "5000"))).await;
    let extra = if on_5xx.is_empty() {
        String::new()
    } else {
        format!("on_5xx = \"{on_5xx}\"")
    };
    let gw = TestGateway::start(&toml_with(&mis, &extra, "")).await;
    let body = fresh_booking();
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(gw.send(keyed(&gw, &body, "five-hundred")).await.code());
    }
    (codes, mis.count())
}

#[tokio::test]
async fn r4_a_mis_500_after_reading_is_unknown_by_default_and_retried_only_when_marked() {
    let (codes, sent) = mis_500_after_reading("").await;
    // The first answer says at once what every retry says: the booking may exist.
    assert_eq!(codes, ["95022", "95022", "95022"]);
    assert_eq!(
        sent, 1,
        "under unknown a same-key retry does not reach the MIS"
    );
    eprintln!("R4 MIS 500, on_5xx = unknown: bookings 3, MIS requests {sent}, duplicates 0");
    let (codes, sent) = mis_500_after_reading("retry").await;
    assert_eq!(codes, ["5000", "5000", "5000"]);
    assert_eq!(sent, 3, "a MIS that rolls back on 5xx gets the retries");
}

/// A `redis-server` with `args` added, on a free port it reports.
async fn redis_with(args: &[String], tls: bool) -> (tokio::process::Child, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..5 {
        let port = closed_port().await.port();
        let mut cmd = tokio::process::Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        if tls {
            cmd.args(["--port", "0", "--tls-port", &port.to_string()]);
        } else {
            cmd.args(["--port", &port.to_string()]);
        }
        let mut child = cmd
            .args(args)
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let up = eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        if up && child.try_wait().unwrap().is_none() {
            return (child, port, dir);
        }
    }
    panic!("redis-server did not start");
}

async fn claims_through(settings: RedisSettings) -> Result<Begin, String> {
    let s = RedisStore::with_settings(settings, Duration::from_secs(60), Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let slot = slot_of("portal", b"secured");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match s.begin(slot, [1; 32]).await {
            Ok(b) => {
                s.finish(slot, [1; 32], Outcome::MisTimeout)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(b);
            }
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn a_redis_with_a_password_and_tls_is_used_by_the_store() {
    let secret = "s3cret-redis-pass";
    let (_auth, port, _d1) = redis_with(&["--requirepass".into(), secret.into()], false).await;
    assert!(!ping(port).await, "the server wants AUTH");
    let url = format!("redis://127.0.0.1:{port}/0");
    let mut settings = RedisSettings::new(&url);
    let e = claims_through(settings.clone()).await.unwrap_err();
    assert!(!e.contains(secret), "{e}");
    settings.password = Some(secret.into());
    assert_eq!(claims_through(settings.clone()).await, Ok(Begin::Claimed));
    settings.password = Some("wrong".into());
    let e = claims_through(settings).await.unwrap_err();
    assert!(!e.contains("wrong"), "{e}");

    // TLS with the test CA, and an ACL user.
    let pki = Pki::new("redis test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki
        .leaf(&["127.0.0.1", "localhost"])
        .write(dir.path(), "redis");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let arg = |p: &std::path::Path| p.display().to_string();
    let (_tls, port, _d2) = redis_with(
        &[
            "--tls-cert-file".into(),
            arg(&cert),
            "--tls-key-file".into(),
            arg(&key),
            "--tls-ca-cert-file".into(),
            arg(&ca),
            "--tls-auth-clients".into(),
            "no".into(),
            "--user".into(),
            "gateway".into(),
            "on".into(),
            ">gw-pass".into(),
            "~mis-gateway:*".into(),
            "+@all".into(),
        ],
        true,
    )
    .await;
    let mut settings = RedisSettings::new(format!("rediss://127.0.0.1:{port}/0"));
    settings.username = Some("gateway".into());
    settings.password = Some("gw-pass".into());
    let untrusted = claims_through(settings.clone()).await;
    assert!(
        untrusted.is_err(),
        "the system roots do not trust the test CA"
    );
    settings.ca_pem = Some(pki.ca_pem().into_bytes());
    assert_eq!(claims_through(settings).await, Ok(Begin::Claimed));
}

#[tokio::test]
async fn the_config_takes_redis_credentials_from_the_environment_and_never_inline() {
    let mis = MockMis::spawn(echo_mis()).await;
    let c = parse_config(&toml_with(
        &mis,
        "on_5xx = \"retry\"",
        "store = \"rediss://127.0.0.1:6380/0\"\nusername = \"gateway\"\npassword_env = \"REDIS_PW\"\non_store_error = \"local\"\nlease_ms = 5000\nconnect_timeout_ms = 500\ncommand_timeout_ms = 100",
    ));
    let mis_gateway::config::StoreKind::Redis(r) = &c.idempotency.store else {
        panic!("a Redis store")
    };
    assert_eq!(r.password.as_deref(), Some("pw-REDIS_PW"));
    assert_eq!(r.username.as_deref(), Some("gateway"));
    assert!(!format!("{r:?}").contains("pw-REDIS_PW"));
    assert_eq!(r.command_timeout, Duration::from_millis(100));
    assert_eq!(
        c.idempotency.on_store_error,
        mis_gateway::config::OnStoreError::Local
    );
    assert_eq!(c.backends[0].on_5xx, mis_gateway::config::On5xx::Retry);
    let problems = config_problems(&toml_with(
        &mis,
        "on_5xx = \"maybe\"",
        "store = \"redis://user:pw@127.0.0.1/0\"\non_store_error = \"ignore\"\nlease_ms = 400",
    ));
    let at: Vec<_> = problems.iter().map(|p| p.location.as_str()).collect();
    for loc in [
        "idempotency.store",
        "idempotency.on_store_error",
        "idempotency.lease_ms",
        "backends[0].on_5xx",
    ] {
        assert!(at.contains(&loc), "{loc} in {problems:?}");
    }
    assert!(problems.iter().all(|p| !p.message.contains("pw@")));
}
