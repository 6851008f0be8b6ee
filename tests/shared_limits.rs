//! Limits shared by replicas through a real `redis-server` (RELIABILITY.md S4): two gateway
//! replicas with `store = "redis://…"` share each integrator's rate budget and the failed-login
//! counters; with the memory store each replica has its own (as README says).

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::clients::{book_from, lo};
use support::redis::RedisServer;
use support::*;

/// Replicas' config: `server` and `integrator` lines added, and the store.
fn toml(mis: &MockMis, store: &str, server: &str, integrator: &str) -> String {
    config_toml(
        &[BackendSpec::new("mis-a", mis.url())],
        &[(SEED_LPU, "mis-a")],
    )
    .replace(
        "[admin]",
        &format!(
            "[idempotency]\nfingerprint_key_env = \"SHARED_FP_KEY_FOR_TESTS\"\nstore = \"{store}\"\n\n[admin]"
        ),
    )
    .replacen("[server]\n", &format!("[server]\n{server}"), 1)
    .replacen("lpus = [\"*\"]\n", &format!("lpus = [\"*\"]\n{integrator}"), 1)
}

async fn two(toml: &str) -> (TestGateway, TestGateway) {
    (
        TestGateway::start(toml).await,
        TestGateway::start(toml).await,
    )
}

/// Commands Redis has run for scripts so far.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_rate_budget_through_redis_and_not_through_memory() {
    let redis = RedisServer::start().await;
    let mis = MockMis::spawn(echo_mis()).await;
    let budget = "rate_per_second = 0.1\nburst = 4\n";
    let (a, b) = two(&toml(&mis, &redis.url(), "", budget)).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let gw = if i % 2 == 0 { &a } else { &b };
        statuses.push(gw.book(&fresh_booking(), PORTAL).await.status.as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 429, 429, 429, 429],
        "one budget of 4"
    );
    let r = b.book(&fresh_booking(), PORTAL).await;
    assert_eq!(r.code(), "94291");
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=10).contains(&wait),
        "a token every ten seconds: {wait}"
    );
    assert_eq!(
        mis.count(),
        4,
        "only bookings within the budget reached the MIS"
    );
    // Another integrator has its own budget.
    assert_eq!(
        a.book(&fresh_booking(), CALLCENTRE).await.status,
        StatusCode::OK
    );

    // The memory store: each replica its own budget (README: "per process").
    let mis = MockMis::spawn(echo_mis()).await;
    let (a, b) = two(&toml(&mis, "memory", "", budget)
        .replace("fingerprint_key_env = \"SHARED_FP_KEY_FOR_TESTS\"\n", ""))
    .await;
    let mut ok = 0;
    for i in 0..10 {
        let gw = if i % 2 == 0 { &a } else { &b };
        ok += usize::from(gw.book(&fresh_booking(), PORTAL).await.status == StatusCode::OK);
    }
    assert_eq!(ok, 8, "4 per replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_failed_login_counters_and_standing_through_redis() {
    let redis = RedisServer::start().await;
    let mis = MockMis::spawn(echo_mis()).await;
    let limits = "auth_failures_per_login = 3\nauth_guesses_per_login = 5\n";
    let (a, b) = two(&toml(&mis, &redis.url(), limits, "")).await;
    // .3 is the portal's own address: it logs in on replica a.
    assert_eq!(
        book_from(lo(3), a.addr, &fresh_booking(), PORTAL)
            .await
            .status,
        StatusCode::OK
    );
    // Guesses from .2 alternate between the replicas: three in all, not three on each.
    let mut statuses = Vec::new();
    for i in 0..5 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let r = book_from(lo(2), gw.addr, &fresh_booking(), ("portal", "guess")).await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    // From many addresses: two more guesses exhaust the login's 5 across both replicas.
    let mut statuses = Vec::new();
    for i in 1..=4u8 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let from = std::net::IpAddr::from([127, 0, 1, i]);
        statuses.push(
            book_from(from, gw.addr, &fresh_booking(), ("portal", "guess"))
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(statuses, [401, 401, 429, 429]);
    // Replica b has never verified the portal: its right password from .3 is checked there,
    // and .3's standing, earned on a, lets it through the exhausted login budget.
    let before = b.gateway.auth.verifications();
    let r = book_from(lo(3), b.addr, &fresh_booking(), PORTAL).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(b.gateway.auth.verifications(), before + 1);
    assert_eq!(mis.count(), 2);
    // Redis holds counters and standing under hashed logins: no login, no password.
    let mut con = redis.connection().await;
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(
        keys.iter().all(|k| k.starts_with("mis-gateway:")),
        "{keys:?}"
    );
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("portal") || k.contains("guess")),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_under_the_budget_spend_a_local_lease_instead_of_a_redis_round_trip() {
    let redis = RedisServer::start().await;
    let mis = MockMis::spawn(echo_mis()).await;
    let budget = "rate_per_second = 1000\nburst = 2000\n";
    let shared = TestGateway::start(&toml(&mis, &redis.url(), "", budget)).await;
    let local = TestGateway::start(
        &toml(&mis, "memory", "", budget)
            .replace("fingerprint_key_env = \"SHARED_FP_KEY_FOR_TESTS\"\n", ""),
    )
    .await;
    async fn median(gw: &TestGateway, n: usize) -> Duration {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            assert_eq!(
                gw.book(&fresh_booking(), PORTAL).await.status,
                StatusCode::OK
            );
            times.push(t.elapsed());
        }
        times.sort();
        times[n / 2]
    }
    // Warm both (the first booking verifies the password).
    median(&shared, 5).await;
    median(&local, 5).await;
    let calls_before = script_calls(&redis).await;
    let with_redis = median(&shared, 300).await;
    let calls = script_calls(&redis).await - calls_before;
    let memory = median(&local, 300).await;
    // A budget of 5 a second leases one token at a time: every booking waits on Redis.
    let slow = TestGateway::start(&toml(
        &mis,
        &redis.url(),
        "",
        "rate_per_second = 5\nburst = 10000\n",
    ))
    .await;
    median(&slow, 5).await;
    let calls_before = script_calls(&redis).await;
    let round_trip = median(&slow, 300).await;
    let slow_calls = script_calls(&redis).await - calls_before;
    eprintln!(
        "S4: 300 bookings under a shared budget took {calls} Redis round trips (leases of 100); \
         median booking {with_redis:?} with the shared budget, {memory:?} with the memory store, \
         {round_trip:?} when every booking takes its token from Redis ({slow_calls} round trips)"
    );
    assert!(
        slow_calls >= 300,
        "one lease of one token per booking: {slow_calls}"
    );
    assert!(calls <= 10, "{calls} round trips for 300 bookings");
    assert!(calls >= 1, "the budget really is in Redis");
}
