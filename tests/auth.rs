//! Integrator authentication under load and change: coalesced verification, hashing off the
//! async workers, unknown users as slow as wrong passwords, password changes effective at once.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_new_header_share_one_verification() {
    let mis = MockMis::spawn(echo_mis()).await;
    let gw = Arc::new(TestGateway::in_front_of(&mis, "").await);
    let before = gw.gateway.auth.verifications();
    assert!(
        gw.book_at_once(40)
            .await
            .iter()
            .all(|s| *s == StatusCode::OK)
    );
    assert_eq!(
        gw.gateway.auth.verifications() - before,
        1,
        "one Argon2 run for 40 requests"
    );
    // Later requests are cache hits.
    assert_eq!(
        gw.book(&fresh_booking(), PORTAL).await.status,
        StatusCode::OK
    );
    assert_eq!(gw.gateway.auth.verifications() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_integrator_is_served_while_cold_logins_queue_for_hashing() {
    let mis = MockMis::spawn(echo_mis()).await;
    // 12 integrators with their own passwords, never seen before.
    let cold: Vec<(String, String)> = (0..12)
        .map(|i| (format!("cold-{i}"), format!("pw-{i}")))
        .collect();
    let mut toml = config_toml(
        &[BackendSpec::new("mis-a", mis.url())],
        &[(SEED_LPU, "mis-a")],
    );
    let extra: String = cold
        .iter()
        .map(|(login, pw)| {
            let hash = mis_gateway::policy::auth::hash_password(pw).unwrap();
            format!("\n[[integrators]]\nlogin = \"{login}\"\npassword_hash = \"{hash}\"\nlpus = [\"*\"]\n")
        })
        .collect();
    toml = toml.replace("\n[[backends]]", &format!("{extra}\n[[backends]]"));
    let gw = Arc::new(TestGateway::start(&toml).await);
    assert_eq!(
        gw.book(&fresh_booking(), PORTAL).await.status,
        StatusCode::OK,
        "portal is warm"
    );

    let cold_tasks: Vec<_> = cold
        .into_iter()
        .map(|(login, pw)| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let r = gw.book(&fresh_booking(), (&login, &pw)).await;
                (r.status, Instant::now())
            })
        })
        .collect();
    // Wait until the hashing pool is busy with them, then book as the warm integrator.
    let auth = &gw.gateway.auth;
    let base = auth.verifications();
    assert!(
        eventually(Duration::from_secs(5), || async {
            auth.verifications() > base
        })
        .await
    );
    let warm = gw.book(&fresh_booking(), PORTAL).await;
    let warm_done = Instant::now();
    assert_eq!(warm.status, StatusCode::OK);
    let mut last_cold = warm_done;
    for t in cold_tasks {
        let (status, done) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        last_cold = last_cold.max(done);
    }
    assert!(
        warm_done < last_cold,
        "the warm booking did not wait for the cold logins' hashing"
    );
}

#[tokio::test]
async fn an_unknown_login_costs_about_as_much_as_a_wrong_password() {
    let mis = MockMis::spawn(echo_mis()).await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    async fn median(gw: &TestGateway, who: (&str, &str)) -> Duration {
        let mut times = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            assert_eq!(gw.book(SEED, who).await.status, StatusCode::UNAUTHORIZED);
            times.push(t.elapsed());
        }
        times.sort();
        times[3]
    }
    let wrong = median(&gw, ("portal", "wrong")).await;
    let unknown = median(&gw, ("nobody", "wrong")).await;
    let ratio = unknown.as_secs_f64() / wrong.as_secs_f64();
    eprintln!("median 401: wrong password {wrong:?}, unknown login {unknown:?}, ratio {ratio:.2}");
    assert!(
        (0.5..2.0).contains(&ratio),
        "unknown {unknown:?} vs wrong {wrong:?}"
    );
    assert!(
        wrong > Duration::from_millis(2),
        "a wrong password really ran Argon2: {wrong:?}"
    );
}

#[tokio::test]
async fn a_changed_password_takes_effect_with_the_next_generation_despite_the_cache() {
    let mis = MockMis::spawn(echo_mis()).await;
    let spec = || BackendSpec::new("mis-a", mis.url());
    let gw = TestGateway::start(&config_toml(&[spec()], &[(SEED_LPU, "mis-a")])).await;
    assert_eq!(
        gw.book(&fresh_booking(), PORTAL).await.status,
        StatusCode::OK
    );
    let new_hash = mis_gateway::policy::auth::hash_password("new-portal-pw").unwrap();
    let toml = config_toml(&[spec()], &[(SEED_LPU, "mis-a")]).replace(PORTAL_HASH, &new_hash);
    gw.live.install(parse_config(&toml));
    assert_eq!(
        gw.book(&fresh_booking(), PORTAL).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        gw.book(&fresh_booking(), ("portal", "new-portal-pw"))
            .await
            .status,
        StatusCode::OK
    );
}
