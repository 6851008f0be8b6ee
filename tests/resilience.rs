//! Sick MIS backends (RELIABILITY.md F1–F8, L3–L5): each fault gets its own clear answer, a
//! booking that may exist is never resent, and one sick MIS does not slow the others.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use support::fault::{Fault, FaultMis};
use support::*;

async fn gateway_for(url: String, extra: &str) -> TestGateway {
    let spec = BackendSpec::new("mis-a", url).extra(extra);
    TestGateway::start(&config_toml(&[spec], &[(SEED_LPU, "mis-a")])).await
}

async fn backend_state(gw: &TestGateway, name: &str) -> serde_json::Value {
    let v = gw.admin(Method::GET, "/admin/backends").await.json();
    v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn f1_a_refusing_mis_is_502_within_the_connect_timeout_and_nothing_reached_it() {
    let port = closed_port().await;
    let gw = gateway_for(format!("http://{port}"), "connect_timeout_ms = 1000").await;
    let started = Instant::now();
    let r = gw.book(&fresh_booking(), PORTAL).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_GATEWAY, "95020")
    );
    assert_eq!(
        r.headers["retry-after"], "1",
        "nothing was sent: retry soon"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// A gateway in front of a MIS that reads the booking and never answers, with `limits`; one
/// booking through it must get 504 `95040` no sooner than `at_least` and before `below`.
async fn hanging_mis_times_out(
    limits: &str,
    at_least: Duration,
    below: Duration,
) -> (FaultMis, TestGateway) {
    let mis = FaultMis::spawn(Fault::Hang).await;
    let gw = gateway_for(mis.url(), limits).await;
    let started = Instant::now();
    let r = gw.book(&fresh_booking(), PORTAL).await;
    let took = started.elapsed();
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "95040")
    );
    eprintln!("{limits:?}: 504 after {took:?}");
    assert!(took >= at_least && took < below, "{took:?}");
    assert_eq!(mis.count(), 1, "never resent");
    (mis, gw)
}

#[tokio::test]
async fn a_headers_timeout_shorter_than_the_timeout_ends_the_wait_for_the_answers_head() {
    // headers_timeout_ms ends the wait at 300 ms, long before timeout_ms (10 s) would.
    hanging_mis_times_out(
        "timeout_ms = 10000\nheaders_timeout_ms = 300\nconnect_timeout_ms = 200",
        Duration::from_millis(300),
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn f2_f5_a_hanging_mis_is_504_at_its_timeout_without_a_retry_and_frees_its_permit() {
    let (mis, gw) = hanging_mis_times_out(
        "timeout_ms = 500\nconnect_timeout_ms = 200\nmax_in_flight = 1",
        Duration::from_millis(500),
        Duration::from_millis(1500),
    )
    .await;
    assert_eq!(
        backend_state(&gw, "mis-a").await["in_flight"],
        0,
        "the permit was released"
    );
    // With max_in_flight = 1, a second booking is admitted (and times out) rather than shed.
    let r = gw.book(&fresh_booking(), PORTAL).await;
    assert_eq!(r.code(), "95040");
    assert_eq!(mis.count(), 2);
}

/// One booking against a MIS with `fault`: 502 95022 (outcome unknown), seen by the MIS once.
async fn outcome_unknown_once(fault: Fault) {
    let mis = FaultMis::spawn(fault).await;
    let gw = gateway_for(mis.url(), "").await;
    let r = gw.book(&fresh_booking(), PORTAL).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_GATEWAY, "95022"),
        "{fault:?}"
    );
    assert_eq!(mis.count(), 1, "{fault:?}");
}

#[tokio::test]
async fn f3_a_reset_after_the_request_is_502_outcome_unknown_and_the_mis_saw_it_once() {
    outcome_unknown_once(Fault::ResetAfterRequest).await;
}

#[tokio::test]
async fn f4_a_pooled_connection_closed_while_idle_does_not_fail_the_next_booking() {
    let mis = FaultMis::spawn(Fault::CloseAfterResponse).await;
    let gw = gateway_for(mis.url(), "").await;
    for round in 1..=5 {
        let r = gw.book(&fresh_booking(), PORTAL).await;
        assert_eq!(r.status, StatusCode::OK, "round {round}: {}", r.text());
        assert!(eventually(Duration::from_secs(2), || async { mis.closed() == round }).await);
    }
    assert_eq!(mis.count(), 5, "each booking reached the MIS exactly once");
}

#[tokio::test]
async fn f6_a_truncated_answer_is_502_never_a_partial_2xx_and_a_sliced_one_is_fine() {
    outcome_unknown_once(Fault::Truncate).await;

    let mis = FaultMis::spawn(Fault::Slice(3)).await;
    let gw = gateway_for(mis.url(), "").await;
    let r = gw.book(&fresh_booking(), PORTAL).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn f6_chunked_and_close_delimited_answers_are_read_and_only_complete_ones_keep_the_connection()
 {
    // Chunked (after an interim 100): each answer ends within the stream, so one connection
    // carries every booking. Delimited by the close: read to the end, and each booking needs
    // a new connection.
    for (fault, connections) in [(Fault::Chunked, 1), (Fault::UntilClose, 3)] {
        let mis = FaultMis::spawn(fault).await;
        let gw = gateway_for(mis.url(), "").await;
        for round in 1..=3 {
            let booking = fresh_booking();
            let r = gw.book(&booking, PORTAL).await;
            assert_eq!(r.status, StatusCode::OK, "{fault:?} {round}: {}", r.text());
            let sent: serde_json::Value = serde_json::from_str(&booking).unwrap();
            assert_eq!(r.json()["slot"], sent["slot"], "{fault:?} {round}");
        }
        assert_eq!(
            (mis.count(), mis.connections()),
            (3, connections),
            "{fault:?}"
        );
    }
}

#[tokio::test]
async fn f8_a_streak_of_5xx_opens_the_breaker_then_a_probe_closes_it_and_others_are_unaffected() {
    let healthy = Arc::new(AtomicBool::new(false));
    let flaky = {
        let healthy = healthy.clone();
        MockMis::spawn(Arc::new(move |r: &Received| {
            if healthy.load(Ordering::SeqCst) {
                (echo_mis())(r)
            } else {
                Reply::exception(500, "MIS down", "5000")
            }
        }))
        .await
    };
    let other = MockMis::spawn(echo_mis()).await;
    let toml = config_toml(
        &[
            BackendSpec::new("mis-a", flaky.url())
                // A MIS that rolls back on 5xx: its own 500 is passed on.
                .extra("breaker_failures = 3\nbreaker_cooldown_ms = 400\non_5xx = \"retry\""),
            BackendSpec::new("mis-b", other.url()),
        ],
        &[(SEED_LPU, "mis-a"), (OTHER_LPU, "mis-b")],
    );
    let gw = TestGateway::start(&toml).await;
    for _ in 0..3 {
        assert_eq!(
            gw.book(&fresh_booking(), PORTAL).await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    let r = gw.book(&fresh_booking(), PORTAL).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "95031")
    );
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(
        flaky.count(),
        3,
        "an open breaker fails fast without calling the MIS"
    );
    assert_eq!(backend_state(&gw, "mis-a").await["state"], "open");

    let to_other = || {
        seed_with(|v| {
            v["direction"]["lpuToGuid"] = OTHER_LPU.into();
            v["slot"] = uuid::Uuid::new_v4().to_string().into();
        })
    };
    assert_eq!(
        gw.book(&to_other(), PORTAL).await.status,
        StatusCode::OK,
        "another MIS is unaffected"
    );

    healthy.store(true, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(3), || async {
            gw.book(&fresh_booking(), PORTAL).await.status == StatusCode::OK
        })
        .await,
        "after the cool-down a probe goes through and closes the breaker"
    );
    assert_eq!(backend_state(&gw, "mis-a").await["state"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_one_hanging_mis_sheds_its_excess_and_does_not_slow_another() {
    let sick = FaultMis::spawn(Fault::Hang).await;
    let well = MockMis::spawn(echo_mis()).await;
    let toml = config_toml(
        &[
            BackendSpec::new("mis-sick", sick.url()).extra("timeout_ms = 3000\nmax_in_flight = 4"),
            BackendSpec::new("mis-well", well.url()),
        ],
        &[(SEED_LPU, "mis-sick"), (OTHER_LPU, "mis-well")],
    );
    let gw = Arc::new(TestGateway::start(&toml).await);
    let to_well = || {
        seed_with(|v| {
            v["direction"]["lpuToGuid"] = OTHER_LPU.into();
            v["slot"] = uuid::Uuid::new_v4().to_string().into();
        })
    };
    async fn median_latency(gw: &TestGateway, bodies: Vec<String>) -> Duration {
        let mut t = Vec::new();
        for b in bodies {
            let s = Instant::now();
            assert_eq!(gw.book(&b, PORTAL).await.status, StatusCode::OK);
            t.push(s.elapsed());
        }
        t.sort();
        t[t.len() / 2]
    }
    let baseline = median_latency(&gw, (0..20).map(|_| to_well()).collect()).await;

    let sick_tasks: Vec<_> = (0..8)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let r = gw.book(&fresh_booking(), PORTAL).await;
                (r.status, r.code(), Instant::now())
            })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(3), || async { sick.count() == 4 }).await,
        "4 admitted to the sick MIS"
    );
    let during = median_latency(&gw, (0..20).map(|_| to_well()).collect()).await;
    let well_done = Instant::now();

    let mut shed = 0;
    let mut timed_out = 0;
    for t in sick_tasks {
        let (status, code, done) = t.await.unwrap();
        match code.as_str() {
            "95030" => shed += 1,
            "95040" => {
                timed_out += 1;
                assert!(
                    done > well_done,
                    "the healthy MIS's bookings finished first"
                );
            }
            other => panic!("unexpected {status} {other}"),
        }
    }
    eprintln!(
        "L4: healthy median {baseline:?} before, {during:?} while 4 bookings hang on another MIS; {shed} shed, {timed_out} timed out"
    );
    assert_eq!((shed, timed_out), (4, 4));
    assert!(
        during < baseline * 5 + Duration::from_millis(20),
        "{during:?} vs {baseline:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_a_burst_above_capacity_is_shed_fast_with_retry_after_and_recovers() {
    let mis = MockMis::spawn(Arc::new(|r: &Received| {
        (echo_mis())(r).after(Duration::from_millis(300))
    }))
    .await;
    let gw = Arc::new(gateway_for(mis.url(), "max_in_flight = 4").await);
    assert_eq!(
        gw.book(&fresh_booking(), PORTAL).await.status,
        StatusCode::OK
    ); // warm auth cache
    let started = Instant::now();
    let mut booked = 0;
    let mut shed = Vec::new();
    for (r, took) in gw.book_at_once_timed(100).await {
        match r.status {
            StatusCode::OK => booked += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(r.code(), "95030");
                assert!(r.headers.contains_key("retry-after"));
                shed.push(took);
            }
            other => panic!("unexpected {other}"),
        }
    }
    shed.sort();
    let median_shed = shed.get(shed.len() / 2).copied().unwrap_or_default();
    eprintln!(
        "L3: 100 at once, max_in_flight 4: {booked} booked, {} shed, median shed answer {median_shed:?}, burst over in {:?}",
        shed.len(),
        started.elapsed()
    );
    assert!(booked >= 4 && !shed.is_empty());
    assert!(
        median_shed < Duration::from_millis(300),
        "shed answers do not wait for the MIS: {median_shed:?}"
    );
    assert_eq!(
        mis.count(),
        booked + 1,
        "shed bookings never reached the MIS"
    );
    assert_eq!(
        gw.book(&fresh_booking(), PORTAL).await.status,
        StatusCode::OK,
        "recovered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l5_max_connections_caps_what_is_on_the_wire_and_the_rest_wait_for_a_connection() {
    // A MIS that never answers holds every connection it gets: only max_connections bookings
    // reach it; the other admitted ones wait connect_timeout for a connection, then get the
    // safe 503 (never sent), long before the two on the wire time out.
    let mis = FaultMis::spawn(Fault::Hang).await;
    let gw = Arc::new(
        gateway_for(
            mis.url(),
            "timeout_ms = 3000\nconnect_timeout_ms = 300\nmax_in_flight = 8\nmax_connections = 2",
        )
        .await,
    );
    let mut codes = Vec::new();
    for (r, took) in gw.book_at_once_timed(6).await {
        let code = r.code();
        if code == "95030" {
            assert!(
                r.headers.contains_key("retry-after"),
                "the wait ends with Retry-After"
            );
            assert!(took < Duration::from_millis(2500), "{took:?}");
        }
        codes.push(code);
    }
    codes.sort();
    assert_eq!(
        codes,
        ["95030", "95030", "95030", "95030", "95040", "95040"],
        "two on the wire time out (outcome unknown), four never sent"
    );
    assert_eq!(mis.count(), 2, "only two bookings reached the MIS");
    assert_eq!(mis.connections(), 2, "on two connections");
    let state = backend_state(&gw, "mis-a").await;
    assert_eq!(
        (
            state["max_connections"].as_u64(),
            state["connections_busy"].as_u64()
        ),
        (Some(2), Some(0))
    );

    // A MIS that answers: bookings beyond the cap queue for a connection and all get booked.
    let mis = MockMis::spawn(Arc::new(|r: &Received| {
        (echo_mis())(r).after(Duration::from_millis(50))
    }))
    .await;
    let gw = Arc::new(gateway_for(mis.url(), "max_in_flight = 16\nmax_connections = 2").await);
    let started = Instant::now();
    assert_eq!(gw.book_at_once(10).await, [StatusCode::OK; 10]);
    eprintln!(
        "L5: 10 bookings at once through max_connections = 2 to a 50 ms MIS: all booked in {:?}",
        started.elapsed()
    );
    assert_eq!(mis.count(), 10);
}
