//! The shared idempotency store on a real Redis: every test starts its own `redis-server`
//! (Debian package `redis-server`) on a free loopback port and kills it when done.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use mis_gateway::app::App;
use mis_gateway::policy::idempotency::redis::{KEY_PREFIX, RedisStore};
use mis_gateway::policy::idempotency::{Begin, Outcome, Store, slot_of};
use support::redis::RedisServer;
use support::*;

fn store(url: &str, ttl: Duration, claim_ttl: Duration) -> Arc<RedisStore> {
    Arc::new(RedisStore::open(url, ttl, claim_ttl).unwrap())
}

/// A config for one backend whose replicas fingerprint bodies alike; `idempotency` is added to
/// the `[idempotency]` section.
fn shared_config_toml(mis: &MockMis, idempotency: &str) -> String {
    config_toml(
        &[BackendSpec::new("mis-a", mis.url())],
        &[(SEED_LPU, "mis-a")],
    )
    .replace(
        "[admin]",
        &format!(
            "[idempotency]\nfingerprint_key_env = \"SHARED_FP_KEY_FOR_TESTS\"\n{idempotency}\n[admin]"
        ),
    )
}

/// A gateway replica over `store`.
async fn replica(toml: &str, store: Arc<RedisStore>) -> TestGateway {
    TestGateway::start_app(App::with_store(parse_config(toml), store), false).await
}

/// Two replicas sharing the Redis at `url`, as `Gateway::with_store` would get it.
async fn replicas(toml: &str, url: &str) -> (TestGateway, TestGateway) {
    let ttl = parse_config(toml).idempotency.ttl;
    let claim_ttl = Duration::from_secs(30);
    (
        replica(toml, store(url, ttl, claim_ttl)).await,
        replica(toml, store(url, ttl, claim_ttl)).await,
    )
}

fn keyed(gw: &TestGateway, body: &str, key: &str) -> Request<Full<Bytes>> {
    Request::post(gw.url("/dir/appointments"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, basic(PORTAL.0, PORTAL.1))
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

const MINUTE: Duration = Duration::from_secs(60);

// ---- the store itself, against the real server ----

#[tokio::test]
async fn the_claim_script_claims_reports_in_flight_mismatch_done_and_release() {
    let redis = RedisServer::start().await;
    let s = store(&redis.url(), MINUTE, MINUTE);
    let slot = slot_of("portal", b"k1");
    assert_eq!(s.begin(slot, [1; 32]).await.unwrap(), Begin::Claimed);
    assert_eq!(s.begin(slot, [1; 32]).await.unwrap(), Begin::InFlight);
    assert_eq!(s.begin(slot, [2; 32]).await.unwrap(), Begin::Mismatch);
    let outcome = Outcome::Booked {
        guid: "5f0c0d6e-1c1a-4c55-9d1e-1f6a2e3b4c5d".into(),
        number: "1".into(),
        slot: SEED_SLOT.into(),
        source: "mis".into(),
        create_time: "2023-04-05T14:00:00".into(),
    };
    s.finish(slot, [1; 32], outcome.clone()).await.unwrap();
    assert_eq!(
        s.begin(slot, [1; 32]).await.unwrap(),
        Begin::Done(outcome.clone())
    );
    assert_eq!(s.begin(slot, [2; 32]).await.unwrap(), Begin::Mismatch);
    // Another replica's store sees the same.
    let other = store(&redis.url(), MINUTE, MINUTE);
    assert_eq!(
        other.begin(slot, [1; 32]).await.unwrap(),
        Begin::Done(outcome)
    );
    // A release gives up only its own in-flight claim, never an outcome.
    s.release(slot).await.unwrap();
    assert!(matches!(
        other.begin(slot, [1; 32]).await.unwrap(),
        Begin::Done(_)
    ));
    // Keys are scoped: another slot is independent; releasing an absent key is fine.
    let elsewhere = slot_of("callcentre", b"k1");
    assert_eq!(s.begin(elsewhere, [1; 32]).await.unwrap(), Begin::Claimed);
    other.release(elsewhere).await.unwrap();
    assert_eq!(
        other.begin(elsewhere, [1; 32]).await.unwrap(),
        Begin::InFlight
    );
    s.release(elsewhere).await.unwrap();
    assert_eq!(
        other.begin(elsewhere, [1; 32]).await.unwrap(),
        Begin::Claimed
    );
    s.release(slot_of("portal", b"never")).await.unwrap();
}

#[tokio::test]
async fn an_unrenewed_claim_lapses_into_unknown_and_resolve_settles_it() {
    let redis = RedisServer::start().await;
    let lease = Duration::from_millis(600);
    let s = store(&redis.url(), Duration::from_secs(60), lease);
    let other = store(&redis.url(), Duration::from_secs(60), lease);
    let con = redis.connection().await;
    let slot = slot_of("portal", b"dead-owner");
    assert_eq!(s.begin(slot, [1; 32]).await.unwrap(), Begin::Claimed);
    let key = format!(
        "{KEY_PREFIX}{}",
        slot.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let pttl = |k: String| {
        let mut con = con.clone();
        async move {
            ::redis::cmd("PTTL")
                .arg(k)
                .query_async::<i64>(&mut con)
                .await
                .unwrap()
        }
    };
    // The claim is kept as long as an outcome would be; only its lease is short.
    assert!((59_000..=60_000).contains(&pttl(key.clone()).await));
    assert!((1..=600).contains(&pttl(format!("{key}:lease")).await));
    assert!(!other.renew(slot).await.unwrap(), "only the owner renews");
    assert!(s.renew(slot).await.unwrap());
    assert_eq!(s.begin(slot, [1; 32]).await.unwrap(), Begin::InFlight);
    assert!(
        !s.resolve(slot, Some([1; 32]), None).await.unwrap(),
        "a live claim is not unknown"
    );
    // Its owner stops renewing (killed): the claim lapses, and stays evidence.
    assert!(
        eventually(Duration::from_secs(5), || async {
            other.begin(slot, [1; 32]).await.unwrap() == Begin::Lapsed
        })
        .await
    );
    assert_eq!(other.begin(slot, [2; 32]).await.unwrap(), Begin::Mismatch);
    // A journal found the booking: the lapsed claim becomes that booking.
    let booked = Outcome::Booked {
        guid: "2d793f84-26c9-496d-bd64-745095eb1f80".into(),
        number: "N-1".into(),
        slot: "766998fb-1915-4d54-a3f3-934f60125aac".into(),
        source: "mis".into(),
        create_time: "2026-12-06T10:00:00+03:00".into(),
    };
    assert!(
        other
            .resolve(slot, Some([1; 32]), Some(booked.clone()))
            .await
            .unwrap()
    );
    assert_eq!(
        s.begin(slot, [1; 32]).await.unwrap(),
        Begin::Done(booked.clone())
    );
    assert!(
        !other.resolve(slot, Some([1; 32]), None).await.unwrap(),
        "a booked key is not unknown"
    );
    assert!(
        (59_000..=60_000).contains(&pttl(key.clone()).await),
        "TTL kept"
    );

    // An unknown outcome released by the journal (nothing was booked): sent again.
    let unknown = slot_of("portal", b"unknown");
    assert_eq!(s.begin(unknown, [1; 32]).await.unwrap(), Begin::Claimed);
    s.finish(unknown, [1; 32], Outcome::MisTimeout)
        .await
        .unwrap();
    assert!(other.resolve(unknown, Some([1; 32]), None).await.unwrap());
    assert_eq!(other.begin(unknown, [1; 32]).await.unwrap(), Begin::Claimed);
    // A key Redis lost (TTL passed, restarted empty): "not booked" holds already; "booked"
    // without the body's fingerprint cannot be made again; with it, it is.
    let lost = slot_of("portal", b"none");
    assert!(s.resolve(lost, None, None).await.unwrap());
    assert!(!s.resolve(lost, None, Some(booked.clone())).await.unwrap());
    assert!(
        s.resolve(lost, Some([5; 32]), Some(booked.clone()))
            .await
            .unwrap()
    );
    assert_eq!(
        other.begin(lost, [5; 32]).await.unwrap(),
        Begin::Done(booked.clone())
    );
    let lost_key = format!(
        "{KEY_PREFIX}{}",
        lost.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    assert!(
        (59_000..=60_000).contains(&pttl(lost_key).await),
        "a full TTL"
    );
    // Restoring from a journal never overwrites what Redis holds, and fills what it lost.
    s.restore(lost, [5; 32], Outcome::OutcomeUnknown)
        .await
        .unwrap();
    assert_eq!(
        other.begin(lost, [5; 32]).await.unwrap(),
        Begin::Done(booked)
    );
    let gone = slot_of("portal", b"gone");
    s.restore(gone, [6; 32], Outcome::OutcomeUnknown)
        .await
        .unwrap();
    assert_eq!(
        other.begin(gone, [6; 32]).await.unwrap(),
        Begin::Done(Outcome::OutcomeUnknown)
    );
    // A release by another owner leaves the claim alone.
    s.release(unknown).await.unwrap();
    assert_eq!(s.begin(unknown, [1; 32]).await.unwrap(), Begin::InFlight);
    drop(con);
}

#[tokio::test]
async fn concurrent_claims_across_replicas_have_exactly_one_winner() {
    let redis = RedisServer::start().await;
    let stores = [
        store(&redis.url(), MINUTE, MINUTE),
        store(&redis.url(), MINUTE, MINUTE),
    ];
    for round in 0..20u8 {
        let slot = slot_of("portal", &[round]);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = stores[i % 2].clone();
                tokio::spawn(async move { s.begin(slot, [7; 32]).await.unwrap() })
            })
            .collect();
        let mut claimed = 0;
        for t in tasks {
            match t.await.unwrap() {
                Begin::Claimed => claimed += 1,
                Begin::InFlight => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(claimed, 1, "round {round}");
    }
}

#[tokio::test]
async fn a_dead_redis_fails_calls_fast_without_naming_keys_and_is_reconnected() {
    let mut redis = RedisServer::start().await;
    let port = redis.port;
    let s = store(&redis.url(), MINUTE, MINUTE);
    let slot = slot_of("portal", b"k");
    let hex: String = slot.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(s.begin(slot, [1; 32]).await.unwrap(), Begin::Claimed);
    redis.kill().await;
    for _ in 0..5 {
        let started = Instant::now();
        let e = s.begin(slot, [1; 32]).await.unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(300), "{took:?}");
        assert!(!e.0.contains(&hex) && !e.0.contains("idem"), "{e}");
        assert!(s.finish(slot, [1; 32], Outcome::MisTimeout).await.is_err());
        assert!(s.release(slot).await.is_err());
    }
    let _redis = RedisServer::start_on(port)
        .await
        .expect("the port is free again");
    assert!(
        eventually(Duration::from_secs(5), || async {
            matches!(s.begin(slot, [1; 32]).await, Ok(Begin::Claimed))
        })
        .await
    );
}

#[tokio::test]
async fn a_silent_redis_costs_a_call_at_most_a_quarter_second_then_fails_fast() {
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let s = store(&format!("redis://{addr}/0"), MINUTE, MINUTE);
    let slot = slot_of("portal", b"k");
    let mut calls = Vec::new();
    // The connect gives up after 1 s; calls meanwhile wait for it at most 250 ms.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let started = Instant::now();
        assert!(s.begin(slot, [1; 32]).await.is_err());
        calls.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "silent Redis: {} calls, slowest {:?}",
        calls.len(),
        calls.iter().max()
    );
    assert!(
        calls.iter().all(|t| *t < Duration::from_millis(400)),
        "{calls:?}"
    );
    assert!(
        calls.last().unwrap() < &Duration::from_millis(50),
        "after the failed connect, calls fail at once: {calls:?}"
    );
    held.abort();
}

#[tokio::test]
async fn a_redis_that_stops_answering_is_given_up_and_reconnected() {
    let redis = RedisServer::start().await;
    let s = store(&redis.url(), MINUTE, MINUTE);
    let slot = slot_of("portal", b"k");
    assert_eq!(s.begin(slot, [1; 32]).await.unwrap(), Begin::Claimed);
    // The server stops answering every client (new ones included) for 1.5 s.
    let _: () = ::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    let paused = Instant::now();
    let mut slowest = Duration::ZERO;
    while paused.elapsed() < Duration::from_millis(1000) {
        let started = Instant::now();
        assert!(s.begin(slot, [1; 32]).await.is_err());
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("paused Redis: slowest call {slowest:?}");
    assert!(slowest < Duration::from_millis(700), "{slowest:?}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            matches!(s.begin(slot, [1; 32]).await, Ok(Begin::InFlight))
        })
        .await
    );
}

// ---- through real gateways ----

#[tokio::test]
async fn a_key_completed_on_one_replica_replays_on_another() {
    let redis = RedisServer::start().await;
    let mis = MockMis::spawn(echo_mis()).await;
    let (gw1, gw2) = replicas(&shared_config_toml(&mis, ""), &redis.url()).await;
    let body = fresh_booking();
    let first = gw1.send(keyed(&gw1, &body, "k")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert!(!first.headers.contains_key("idempotent-replayed"));
    let again = gw2.send(keyed(&gw2, &body, "k")).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.json(), first.json());
    assert_eq!(mis.count(), 1);
}

#[tokio::test]
async fn replicas_built_from_config_share_the_store_the_config_names() {
    let redis = RedisServer::start().await;
    let mis = MockMis::spawn(echo_mis()).await;
    let toml = shared_config_toml(&mis, &format!("store = \"{}\"\n", redis.url()));
    let gw1 = TestGateway::start(&toml).await;
    let gw2 = TestGateway::start(&toml).await;
    let body = fresh_booking();
    let first = gw1.send(keyed(&gw1, &body, "from-config")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let again = gw2.send(keyed(&gw2, &body, "from-config")).await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.json(), first.json());
    assert_eq!(mis.count(), 1);
    // One key of the store (beside it, the shared limits' counters: tests/shared_limits.rs).
    let entries = redis.entries().await;
    let keys = entries.iter().filter(|(k, _)| k.starts_with(KEY_PREFIX));
    assert_eq!(keys.count(), 1, "{entries:?}");
}

#[tokio::test]
async fn a_key_in_flight_on_one_replica_is_409_on_another() {
    let redis = RedisServer::start().await;
    let mis = MockMis::spawn(Arc::new(|r: &Received| {
        (echo_mis())(r).after(Duration::from_millis(600))
    }))
    .await;
    let (gw1, gw2) = replicas(&shared_config_toml(&mis, ""), &redis.url()).await;
    let gw1 = Arc::new(gw1);
    let body = fresh_booking();
    let first = {
        let (gw1, body) = (gw1.clone(), body.clone());
        tokio::spawn(async move { gw1.send(keyed(&gw1, &body, "slow")).await.status })
    };
    assert!(eventually(Duration::from_secs(5), || async { mis.count() == 1 }).await);
    let r = gw2.send(keyed(&gw2, &body, "slow")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::CONFLICT, "94090")
    );
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    let r = gw2.send(keyed(&gw2, &body, "slow")).await;
    assert_eq!(r.headers["idempotent-replayed"], "true");
    assert_eq!(mis.count(), 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_on_another_replica_is_422() {
    let redis = RedisServer::start().await;
    let mis = MockMis::spawn(echo_mis()).await;
    let (gw1, gw2) = replicas(&shared_config_toml(&mis, ""), &redis.url()).await;
    let r = gw1.send(keyed(&gw1, &fresh_booking(), "reused")).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = gw2.send(keyed(&gw2, &fresh_booking(), "reused")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "94220")
    );
    assert_eq!(mis.count(), 1);
}

#[tokio::test]
async fn an_expired_key_books_anew_on_any_replica() {
    let redis = RedisServer::start().await;
    let mis = MockMis::spawn(echo_mis()).await;
    let (gw1, gw2) = replicas(&shared_config_toml(&mis, "ttl_seconds = 1\n"), &redis.url()).await;
    let body = fresh_booking();
    assert_eq!(
        gw1.send(keyed(&gw1, &body, "key-ttl")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        gw2.send(keyed(&gw2, &body, "key-ttl")).await.headers["idempotent-replayed"],
        "true"
    );
    assert!(
        eventually(Duration::from_secs(4), || async {
            gw2.send(keyed(&gw2, &body, "key-ttl")).await;
            mis.count() == 2
        })
        .await
    );
    let r = gw1.send(keyed(&gw1, &body, "key-ttl")).await;
    assert_eq!(r.headers["idempotent-replayed"], "true");
    assert_eq!(mis.count(), 2);
}

/// Books with a fresh key and body; asserts a quick 200 that reached the MIS.
async fn books_quickly(gw: &TestGateway, mis: &MockMis, key: &str) -> Duration {
    let before = mis.count();
    let started = Instant::now();
    let r = gw.send(keyed(gw, &fresh_booking(), key)).await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(!r.headers.contains_key("idempotent-replayed"));
    assert_eq!(mis.count(), before + 1, "the MIS was called");
    assert!(took < Duration::from_millis(500), "booking took {took:?}");
    took
}

/// Sends a fresh keyed booking; asserts a quick 503 95030 with Retry-After that was not sent.
async fn refused_quickly(gw: &TestGateway, mis: &MockMis, key: &str) -> Duration {
    let before = mis.count();
    let started = Instant::now();
    let r = gw.send(keyed(gw, &fresh_booking(), key)).await;
    let took = started.elapsed();
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "95030"),
        "{}",
        r.text()
    );
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(mis.count(), before, "not sent");
    assert!(took < Duration::from_millis(500), "refusal took {took:?}");
    took
}

#[tokio::test]
async fn with_redis_unreachable_keyed_bookings_are_refused_quickly_and_keyless_ones_go_through() {
    let mis = MockMis::spawn(echo_mis()).await;
    let addr = closed_port().await;
    let (gw, _) = replicas(&shared_config_toml(&mis, ""), &format!("redis://{addr}/0")).await;
    for i in 0..5 {
        refused_quickly(&gw, &mis, &format!("down-{i}")).await;
    }
    // A booking without a key needs no store.
    assert_eq!(
        gw.book(&fresh_booking(), PORTAL).await.status,
        StatusCode::OK
    );
    assert_eq!(mis.count(), 1);
}

#[tokio::test]
async fn when_redis_dies_keyed_bookings_wait_for_it_and_protection_returns_with_it() {
    let mut redis = RedisServer::start().await;
    let port = redis.port;
    let mis = MockMis::spawn(echo_mis()).await;
    let (gw1, gw2) = replicas(&shared_config_toml(&mis, ""), &redis.url()).await;
    books_quickly(&gw1, &mis, "before").await;
    let r = gw2.send(keyed(&gw2, &fresh_booking(), "before")).await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "shared store works"
    );

    redis.kill().await;
    let mut slowest = Duration::ZERO;
    for i in 0..6 {
        slowest = slowest.max(refused_quickly(&gw1, &mis, &format!("dead-{i}")).await);
        slowest = slowest.max(refused_quickly(&gw2, &mis, &format!("dead-{i}")).await);
    }
    eprintln!("slowest refusal with Redis dead: {slowest:?}");

    // Redis comes back on the same address: the replicas reconnect and share keys again.
    let _redis = RedisServer::start_on(port)
        .await
        .expect("the port is free again");
    let body = fresh_booking();
    let mut n = 0;
    assert!(
        eventually(Duration::from_secs(10), || {
            n += 1;
            let key = format!("back-{n}");
            let (gw1, gw2, body) = (&gw1, &gw2, &body);
            async move {
                let first = gw1.send(keyed(gw1, body, &key)).await;
                if first.status != StatusCode::OK {
                    assert_eq!(first.code(), "95030", "not reconnected yet");
                    return false;
                }
                gw2.send(keyed(gw2, body, &key))
                    .await
                    .headers
                    .get("idempotent-replayed")
                    == Some(&http::HeaderValue::from_static("true"))
            }
        })
        .await,
        "duplicate protection did not come back"
    );
}

#[tokio::test]
async fn redis_holds_only_fingerprints_and_outcomes() {
    let redis = RedisServer::start().await;
    let mis = MockMis::spawn(echo_mis()).await;
    let (gw, _) = replicas(&shared_config_toml(&mis, ""), &redis.url()).await;
    let body = fresh_booking();
    for secret in ["1234567812345678", "71234569898", "A01.0", "567812"] {
        assert!(body.contains(secret), "the seed carries {secret}");
    }
    let r = gw.send(keyed(&gw, &body, "private-key-value")).await;
    assert_eq!(r.status, StatusCode::OK);

    let entries = redis.entries().await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let (key, value) = &entries[0];
    assert!(key.starts_with(KEY_PREFIX), "{key}");
    assert!(!key.contains("private-key-value") && !key.contains("portal"));
    for secret in [
        "1234567812345678",
        "71234569898",
        "A01.0",
        "567812",
        "14555-9984",
        "2d793f84-26c9-496d-bd64-745095eb1f80",
        "private-key-value",
    ] {
        assert!(!value.contains(secret), "{secret} stored: {value}");
    }
    let v: serde_json::Value = serde_json::from_str(value).unwrap();
    let mut fields: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    fields.sort();
    assert_eq!(fields, ["fp", "outcome", "state"], "{value}");
    assert_eq!(v["state"], "done");
    assert_eq!(v["fp"].as_str().unwrap().len(), 64);
    assert_eq!(v["outcome"]["kind"], "booked");
    assert_eq!(v["outcome"]["guid"], r.json()["guid"], "{}", r.text());
}

#[tokio::test]
async fn a_mis_rejection_is_stored_without_its_text_and_replayed_with_its_status_and_code() {
    // A MIS's own message may name the patient; it reaches the integrator once, never Redis.
    let text = "Slot 09:30 is taken by Ivanov Ivan Ivanovich";
    let redis = RedisServer::start().await;
    let mis = MockMis::spawn(always(Reply::exception(409, text, "4091"))).await;
    let (one, two) = replicas(&shared_config_toml(&mis, ""), &redis.url()).await;
    let body = fresh_booking();
    let first = one.send(keyed(&one, &body, "key-rejected")).await;
    assert_eq!(
        (first.status, first.code().as_str()),
        (StatusCode::CONFLICT, "4091")
    );
    assert_eq!(first.json()["Message"], text, "{}", first.text());

    let entries = redis.entries().await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let value = &entries[0].1;
    assert!(!value.contains("Ivanov"), "the MIS's text stored: {value}");
    let v: serde_json::Value = serde_json::from_str(value).unwrap();
    assert_eq!(v["outcome"]["kind"], "mis_rejected", "{value}");
    assert_eq!(v["outcome"]["code"], "4091", "{value}");

    let replay = two.send(keyed(&two, &body, "key-rejected")).await;
    assert_eq!(
        (replay.status, replay.code().as_str()),
        (StatusCode::CONFLICT, "4091")
    );
    assert_eq!(
        replay.json()["Message"],
        mis_gateway::booking::pipeline::REPLAYED_REJECTION,
        "{}",
        replay.text()
    );
    assert_eq!(mis.count(), 1, "the replay did not reach the MIS");
}

/// Calls of the store's scripts Redis has run since its stats were last reset.
async fn script_calls(redis: &RedisServer) -> u64 {
    let mut con = redis.connection().await;
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut con)
        .await
        .unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[tokio::test]
async fn the_lease_costs_a_quick_booking_no_round_trip_and_a_slow_one_renews() {
    let redis = RedisServer::start().await;
    let slow_slot = uuid::Uuid::new_v4().to_string();
    let slow = slow_slot.clone();
    let mis = MockMis::spawn(Arc::new(move |r: &Received| {
        let reply = (echo_mis())(r);
        if String::from_utf8_lossy(&r.body).contains(&slow) {
            reply.after(Duration::from_millis(1300))
        } else {
            reply
        }
    }))
    .await;
    let toml = shared_config_toml(
        &mis,
        &format!("store = \"{}\"\nlease_ms = 900\n", redis.url()),
    );
    let gw = TestGateway::start(&toml).await;
    books_quickly(&gw, &mis, "warm-up").await;
    let mut con = redis.connection().await;
    let () = ::redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut con)
        .await
        .unwrap();
    for i in 0..5 {
        books_quickly(&gw, &mis, &format!("quick-{i}")).await;
    }
    let quick = script_calls(&redis).await;
    eprintln!("Redis round trips for 5 quick keyed bookings: {quick}");
    assert_eq!(quick, 10, "claim and finish, nothing for the lease");

    let body = seed_with(|v| v["slot"] = slow_slot.clone().into());
    let r = gw.send(keyed(&gw, &body, "slow")).await;
    assert_eq!(r.status, StatusCode::OK);
    let renewals = script_calls(&redis).await - quick - 2;
    eprintln!("renewals of a 1.3 s booking with a 0.9 s lease: {renewals}");
    assert!((2..=8).contains(&renewals), "{renewals}");
    // Renewed, it never lapsed: another request with the key while it ran would have been 409.
    let again = gw.send(keyed(&gw, &body, "slow")).await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(mis.count(), 7);
}

#[tokio::test]
async fn a_slow_booking_keeps_its_claim_past_the_lease_on_every_replica() {
    let redis = RedisServer::start().await;
    let mis = MockMis::spawn(Arc::new(|r: &Received| {
        (echo_mis())(r).after(Duration::from_millis(2000))
    }))
    .await;
    let toml = shared_config_toml(
        &mis,
        &format!("store = \"{}\"\nlease_ms = 600\n", redis.url()),
    );
    let gw1 = Arc::new(TestGateway::start(&toml).await);
    let gw2 = TestGateway::start(&toml).await;
    let body = fresh_booking();
    let first = {
        let (gw1, body) = (gw1.clone(), body.clone());
        tokio::spawn(async move { gw1.send(keyed(&gw1, &body, "long")).await.status })
    };
    assert!(eventually(Duration::from_secs(5), || async { mis.count() == 1 }).await);
    // Three leases later the booking still runs and still holds the key.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = gw2.send(keyed(&gw2, &body, "long")).await;
    assert_eq!(r.code(), "94090", "renewed, not lapsed");
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(mis.count(), 1);
}
