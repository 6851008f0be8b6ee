//! Resolutions tell the truth (RELIABILITY M4): a 200 from `POST /admin/journal/{id}/resolve`
//! means a same-key retry now gets what the resolution says, after a restart, after the key's
//! TTL, after Redis came back empty, and when two operators answer the same record at once.
//! Ledgers are the MIS's own per-slot counts.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use support::journal::*;
use support::redis::RedisServer;
use support::*;

fn sqlite_journal(dir: &std::path::Path) -> String {
    format!("path = \"{}\"", dir.join("journal.db").display())
}

/// The sweep's gateway with a journal in `dir` and `idempotency` as that section's body; the
/// resetting MIS's breaker stays closed through the many lost answers these tests make.
fn toml(mis: &SweepMis, dir: &std::path::Path, idempotency: &str) -> String {
    let toml = sweep_toml(mis, &sqlite_journal(dir)).replacen(
        "name = \"mis-resets\"\n",
        "name = \"mis-resets\"\nbreaker_failures = 1000\n",
        1,
    );
    assert!(toml.contains("breaker_failures = 1000"), "{toml}");
    format!("{toml}\n[idempotency]\n{idempotency}\n")
}

/// `n` keyed bookings whose answers the MIS loses (it resets after reading each): their keys,
/// bodies and request ids.
async fn unknowns(gw: &TestGateway, tag: &str, n: usize) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let (body, key) = (canary_booking(LPU_RESETS), format!("{tag}-{i}"));
        let r = gw
            .send(post(gw, &body, PORTAL, Some(&key), "application/json"))
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_GATEWAY, "95022"),
            "{}",
            r.text()
        );
        let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
        out.push((key, body, id));
    }
    out
}

async fn retry(gw: &TestGateway, key: &str, body: &str) -> TestResponse {
    gw.send(post(gw, body, PORTAL, Some(key), "application/json"))
        .await
}

async fn resolve(gw: &TestGateway, id: &str, booked: Option<(&str, &str)>) -> TestResponse {
    let body = match booked {
        Some((guid, number)) => json!({"booked": true, "guid": guid, "number": number}),
        None => json!({"booked": false}),
    };
    admin(
        gw,
        Method::POST,
        &format!("/admin/journal/{id}/resolve"),
        Some(body),
    )
    .await
}

/// A retry after "booked" replays that appointment without the MIS; after "not booked" it is
/// sent once and then replays what the MIS answered.
async fn assert_retry_follows(
    gw: &TestGateway,
    mis: &SweepMis,
    key: &str,
    body: &str,
    booked: Option<&str>,
) {
    let slot = slot_of(body);
    let r = retry(gw, key, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    match booked {
        Some(guid) => {
            assert_eq!(r.headers["idempotent-replayed"], "true");
            assert_eq!(r.json()["guid"], guid);
            assert_eq!(mis.resets.count(&slot), 1, "never sent again");
        }
        None => {
            assert!(!r.headers.contains_key("idempotent-replayed"));
            assert_eq!(mis.resets.count(&slot), 2, "the retry was sent, once");
            let again = retry(gw, key, body).await;
            assert_eq!(again.headers["idempotent-replayed"], "true");
            assert_eq!(mis.resets.count(&slot), 2);
        }
    }
}

#[tokio::test]
async fn m4_after_a_restart_an_unknown_stays_unknown_and_its_resolution_reaches_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mis = SweepMis::spawn().await;
    let toml = toml(&mis, dir.path(), "");
    let gw = TestGateway::start(&toml).await;
    let lost = unknowns(&gw, "restart", 2).await;
    gw.shutdown().await;

    // A new process, the default memory store rebuilt from the journal.
    let gw = TestGateway::start(&toml).await;
    for (key, body, _) in &lost {
        let r = retry(&gw, key, body).await;
        assert_eq!(r.code(), "95022", "still unknown after the restart");
        assert_eq!(mis.resets.count(&slot_of(body)), 1, "not sent again");
    }
    let guid = "6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b";
    let r = resolve(&gw, &lost[0].2, Some((guid, "R-1"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_retry_follows(&gw, &mis, &lost[0].0, &lost[0].1, Some(guid)).await;
    let r = resolve(&gw, &lost[1].2, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_retry_follows(&gw, &mis, &lost[1].0, &lost[1].1, None).await;
    gw.shutdown().await;

    // And the resolutions outlive the next restart too.
    let gw = TestGateway::start(&toml).await;
    let r = retry(&gw, &lost[0].0, &lost[0].1).await;
    assert_eq!(
        (r.status, r.json()["guid"].clone()),
        (StatusCode::OK, json!(guid))
    );
    let r = retry(&gw, &lost[1].0, &lost[1].1).await;
    assert_eq!(r.headers["idempotent-replayed"], "true");
    assert_eq!(mis.resets.count(&slot_of(&lost[0].1)), 1);
    assert_eq!(mis.resets.count(&slot_of(&lost[1].1)), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn m4_after_the_keys_ttl_a_resolution_makes_the_key_again() {
    let dir = tempfile::tempdir().unwrap();
    let mis = SweepMis::spawn().await;
    let toml = toml(&mis, dir.path(), "ttl_seconds = 1");
    let gw = TestGateway::start(&toml).await;
    let lost = unknowns(&gw, "ttl", 1).await;
    // The key's TTL is what is waited for here: nothing else can tell it passed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let guid = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let r = resolve(&gw, &lost[0].2, Some((guid, "T-1"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_retry_follows(&gw, &mis, &lost[0].0, &lost[0].1, Some(guid)).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn m4_two_resolutions_at_once_one_wins_and_the_key_says_what_the_journal_says() {
    let dir = tempfile::tempdir().unwrap();
    let mis = SweepMis::spawn().await;
    let gw = Arc::new(TestGateway::start(&toml(&mis, dir.path(), "")).await);
    let lost = unknowns(&gw, "race", 30).await;
    let guid = "7b6a5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d";
    let mut races = Vec::new();
    for (i, (_, _, id)) in lost.iter().enumerate() {
        let (a, b, id) = (gw.clone(), gw.clone(), id.clone());
        let id2 = id.clone();
        let yes = tokio::spawn(async move { resolve(&a, &id, Some((guid, "X-1"))).await.status });
        let no = tokio::spawn(async move { resolve(&b, &id2, None).await.status });
        races.push((i, yes, no));
    }
    for (i, yes, no) in races {
        let (yes, no) = (yes.await.unwrap(), no.await.unwrap());
        let mut got = [yes, no];
        got.sort();
        assert_eq!(
            got,
            [StatusCode::OK, StatusCode::CONFLICT],
            "pair {i}: one decides, the other changes nothing"
        );
        let (key, body, id) = &lost[i];
        let record = admin(&gw, Method::GET, &format!("/admin/journal/{id}"), None).await;
        let booked = record.json()["resolution"]["booked"].as_bool().unwrap();
        assert_eq!(
            booked,
            yes == StatusCode::OK,
            "pair {i}: the winner is on record"
        );
        assert_retry_follows(&gw, &mis, key, body, booked.then_some(guid)).await;
    }
    Arc::try_unwrap(gw).ok().unwrap().shutdown().await;
}

#[tokio::test]
async fn m4_with_redis_back_empty_unknown_keys_come_back_from_the_journal_and_resolve_truthfully() {
    let mut redis = RedisServer::start().await;
    let port = redis.port;
    let dir = tempfile::tempdir().unwrap();
    let mis = SweepMis::spawn().await;
    let toml = toml(
        &mis,
        dir.path(),
        &format!(
            "store = \"{}\"\nfingerprint_key_env = \"RESOLVE_FP_KEY\"",
            redis.url()
        ),
    );
    let gw = TestGateway::start(&toml).await;
    let lost = unknowns(&gw, "redis", 3).await;

    // While Redis is down, a resolution says the store is the cause and changes nothing.
    redis.kill().await;
    let r = resolve(&gw, &lost[0].2, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().contains("idempotency store"), "{}", r.text());
    let record = admin(
        &gw,
        Method::GET,
        &format!("/admin/journal/{}", lost[0].2),
        None,
    )
    .await;
    assert!(
        record.json()["resolution"].is_null(),
        "taken back: {}",
        record.text()
    );

    // Back on the same address with nothing in it: the journal puts the unknown keys back.
    let redis = RedisServer::start_on(port)
        .await
        .expect("the port is free again");
    assert!(
        eventually(Duration::from_secs(15), || async {
            redis.entries().await.len() >= lost.len()
        })
        .await,
        "the journal refilled Redis: {:?}",
        redis.entries().await
    );
    for (key, body, _) in &lost {
        let r = retry(&gw, key, body).await;
        assert_eq!(r.code(), "95022", "unknown, not sent again: {}", r.text());
        assert_eq!(mis.resets.count(&slot_of(body)), 1);
    }
    let guid = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
    let r = resolve(&gw, &lost[0].2, Some((guid, "B-1"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_retry_follows(&gw, &mis, &lost[0].0, &lost[0].1, Some(guid)).await;
    let r = resolve(&gw, &lost[1].2, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_retry_follows(&gw, &mis, &lost[1].0, &lost[1].1, None).await;
    gw.shutdown().await;
}
