//! Nobody outside can turn the throttle or the hashing pool against an integrator
//! (RELIABILITY.md S1, S2): guesses from other addresses never refuse its right password,
//! guesses against one login stay bounded, a hashing flood does not starve a cold login, and
//! `allow_from` refuses other addresses without hashing.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::clients::{book_from, lo};
use support::*;

async fn gateway(server_extra: &str, integrators: &str) -> (TestGateway, MockMis) {
    let mis = MockMis::spawn(echo_mis()).await;
    let toml = toml(&mis, server_extra, integrators);
    (TestGateway::start(&toml).await, mis)
}

fn toml(mis: &MockMis, server_extra: &str, integrators: &str) -> String {
    config_toml(
        &[BackendSpec::new("mis-a", mis.url())],
        &[(SEED_LPU, "mis-a")],
    )
    .replacen("[server]\n", &format!("[server]\n{server_extra}"), 1)
    .replace("\n[[backends]]", &format!("{integrators}\n[[backends]]"))
}

fn integrator(login: &str, password: &str, extra: &str) -> String {
    let hash = mis_gateway::policy::auth::hash_password(password).unwrap();
    format!(
        "\n[[integrators]]\nlogin = \"{login}\"\npassword_hash = \"{hash}\"\nlpus = [\"*\"]\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_wrong_passwords_from_one_address_do_not_lock_out_the_right_one_from_another() {
    // The reproduction, with the shipped limits.
    let (gw, mis) = gateway("", "").await;
    for _ in 0..10 {
        let r = book_from(lo(2), gw.addr, &fresh_booking(), ("portal", "guess")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = book_from(lo(2), gw.addr, &fresh_booking(), ("portal", "guess")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "94290")
    );
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=60).contains(&wait),
        "the window's rest, not a fresh minute: {wait}"
    );
    // The portal is not in the auth cache: its right password is verified now, from .3.
    let before = gw.gateway.auth.verifications();
    let r = book_from(lo(3), gw.addr, &fresh_booking(), PORTAL).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(gw.gateway.auth.verifications(), before + 1, "a cold login");
    // .2 stays throttled for that login; .2's other logins are its own business.
    let r = book_from(lo(2), gw.addr, &fresh_booking(), ("portal", "guess")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        book_from(lo(2), gw.addr, &fresh_booking(), CALLCENTRE)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(mis.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_against_one_login_from_many_addresses_stay_bounded_and_its_own_address_gets_in() {
    let (gw, _mis) = gateway("auth_guesses_per_login = 5\n", "").await;
    // The portal's own address has logged in before.
    assert_eq!(
        book_from(lo(3), gw.addr, &fresh_booking(), PORTAL)
            .await
            .status,
        StatusCode::OK
    );
    let before = gw.gateway.auth.verifications();
    let mut statuses = Vec::new();
    for i in 1..=12u8 {
        let from = std::net::IpAddr::from([127, 0, 1, i]);
        statuses.push(
            book_from(from, gw.addr, &fresh_booking(), ("portal", "guess"))
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 401, 429, 429, 429, 429, 429, 429, 429]
    );
    assert_eq!(
        gw.gateway.auth.verifications() - before,
        5,
        "guesses beyond the login's limit never reach Argon2"
    );
    // A new hash of the same password (a rotation elsewhere in the file) makes the portal
    // cold again: from its own address it is verified and books despite the attack.
    let text = config_toml(
        &[BackendSpec::new("mis-a", _mis.url())],
        &[(SEED_LPU, "mis-a")],
    )
    .replacen("[server]\n", "[server]\nauth_guesses_per_login = 5\n", 1)
    .replace(
        PORTAL_HASH,
        &mis_gateway::policy::auth::hash_password(PORTAL.1).unwrap(),
    );
    gw.live.install(parse_config(&text));
    // The price of the bound: while the window lasts, an address the portal has not logged
    // in from is refused before hashing (allow_from would refuse the guessers instead).
    let r = book_from(lo(4), gw.addr, &fresh_booking(), PORTAL).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = book_from(lo(3), gw.addr, &fresh_booking(), PORTAL).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Verified again, the header is served from the cache, from any address.
    let r = book_from(lo(4), gw.addr, &fresh_booking(), PORTAL).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hashing_flood_from_many_addresses_neither_starves_a_cold_login_nor_goes_unpunished() {
    let cold = integrator("clinic-portal", "cold-pw", "");
    let (gw, mis) = gateway("auth_failures_per_ip = 2\n", &cold).await;
    // The portal has booked from .4 before; then its hash is rotated (same password), so
    // during the flood both the portal at .4 and clinic-portal at .3 are cold logins.
    assert_eq!(
        book_from(lo(4), gw.addr, &fresh_booking(), PORTAL)
            .await
            .status,
        StatusCode::OK
    );
    let rotated = toml(&mis, "auth_failures_per_ip = 2\n", &cold).replace(
        PORTAL_HASH,
        &mis_gateway::policy::auth::hash_password(PORTAL.1).unwrap(),
    );
    gw.live.install(parse_config(&rotated));
    let gw = Arc::new(gw);
    // 400 concurrent wrong logins from 200 addresses (the 300, and enough to
    // overflow the 256-job queue), each with a login of its own (the per-login limit would
    // stop one login's flood before it hashed).
    let flood: Vec<_> = (0..400u32)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let from = std::net::IpAddr::from([127, 0, 2, (i % 200) as u8 + 1]);
                let who = (format!("nobody-{i}"), "guess".to_owned());
                book_from(from, gw.addr, SEED, (&who.0, &who.1))
                    .await
                    .status
            })
        })
        .collect();
    let auth = &gw.gateway.auth;
    assert!(
        eventually(Duration::from_secs(10), || async {
            auth.verifications() >= 4
        })
        .await,
        "the flood is hashing"
    );
    let timed = |from, who: (&'static str, &'static str)| {
        let gw = gw.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = book_from(from, gw.addr, &fresh_booking(), who).await;
            (r, started.elapsed())
        })
    };
    let new_address = timed(lo(3), ("clinic-portal", "cold-pw"));
    let known_address = timed(lo(4), PORTAL);
    let (honest, took) = new_address.await.unwrap();
    let (known, known_took) = known_address.await.unwrap();
    assert_eq!(honest.status, StatusCode::OK, "{}", honest.text());
    assert_eq!(known.status, StatusCode::OK, "{}", known.text());
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for t in flood {
        *by_status.entry(t.await.unwrap().as_u16()).or_default() += 1;
    }
    eprintln!(
        "S2: under a flood of 400 from 200 addresses ({by_status:?}) a cold login took {took:?} \
         from a new address, {known_took:?} from an address with standing"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
    let busy = by_status.get(&503).copied().unwrap_or(0);
    assert!(
        busy > 0,
        "400 at once overflow the 256-job queue: {by_status:?}"
    );
    // Each capacity refusal counted against its flooder: with 2 failures per address per
    // minute, every flooding address is now throttled before any hashing.
    let before = auth.verifications();
    let mut throttled = 0;
    for i in 1..=200u8 {
        let r = book_from(
            std::net::IpAddr::from([127, 0, 2, i]),
            gw.addr,
            SEED,
            ("nobody", "x"),
        )
        .await;
        throttled += usize::from(r.status == StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(throttled, 200, "busy refusals count like failures");
    assert_eq!(auth.verifications(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_from_refuses_other_addresses_without_hashing_or_counting_against_the_integrator() {
    let (gw, mis) = gateway(
        "auth_failures_per_login = 2\nauth_guesses_per_login = 2\n",
        &integrator(
            "hub-portal",
            "hub-pw",
            "allow_from = [\"127.0.0.2/32\", \"127.0.1.0/24\"]\n",
        ),
    )
    .await;
    let before = gw.gateway.auth.verifications();
    for _ in 0..5 {
        for who in [("hub-portal", "hub-pw"), ("hub-portal", "guess")] {
            let r = book_from(lo(3), gw.addr, &fresh_booking(), who).await;
            assert_eq!(
                (r.status, r.code().as_str()),
                (StatusCode::UNAUTHORIZED, "94010")
            );
            assert!(r.headers.contains_key("www-authenticate"));
        }
    }
    assert_eq!(
        gw.gateway.auth.verifications(),
        before,
        "no hashing for other addresses"
    );
    // Nothing was counted against the login: its own addresses book at once.
    for from in [lo(2), std::net::IpAddr::from([127, 0, 1, 77])] {
        let r = book_from(from, gw.addr, &fresh_booking(), ("hub-portal", "hub-pw")).await;
        assert_eq!(r.status, StatusCode::OK, "{from}: {}", r.text());
    }
    // A header verified (and cached) for an allowed address is still refused elsewhere.
    let r = book_from(lo(3), gw.addr, &fresh_booking(), ("hub-portal", "hub-pw")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(mis.count(), 2);
}

#[test]
fn allow_from_and_trusted_proxies_are_validated_with_their_place() {
    let base = config_toml(&[], &[]);
    let toml = base
        .replacen(
            "[server]\n",
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"nonsense\"]\nproxy_protocol = true\n",
            1,
        )
        .replacen(
            "lpus = [\"*\"]\n",
            "lpus = [\"*\"]\nallow_from = [\"300.1.1.1\"]\n",
            1,
        );
    let problems: Vec<String> = config_problems(&toml)
        .iter()
        .map(|p| p.location.clone())
        .collect();
    assert!(
        problems.contains(&"server.trusted_proxies[1]".to_owned()),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"integrators[0].allow_from[0]".to_owned()),
        "{problems:?}"
    );
    let toml = base.replacen("[server]\n", "[server]\nproxy_protocol = true\n", 1);
    let problems = config_problems(&toml);
    assert!(
        problems
            .iter()
            .any(|p| p.location == "server.proxy_protocol"),
        "{problems:?}"
    );
    let toml = base.replacen("lpus = [\"*\"]\n", "lpus = [\"*\"]\nallow_from = []\n", 1);
    let problems = config_problems(&toml);
    assert!(
        problems
            .iter()
            .any(|p| p.location == "integrators[0].allow_from"),
        "{problems:?}"
    );
}
