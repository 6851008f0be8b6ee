//! Safe retries (RELIABILITY.md B7): a booking is never made twice and never lost silently.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use support::fault::{Fault, FaultMis};
use support::*;

fn keyed(gw: &TestGateway, body: &str, who: (&str, &str), key: &str) -> Request<Full<Bytes>> {
    Request::post(gw.url("/dir/appointments"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, basic(who.0, who.1))
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

fn slow_echo(delay_ms: u64) -> Script {
    Arc::new(move |r: &Received| (echo_mis())(r).after(Duration::from_millis(delay_ms)))
}

#[tokio::test]
async fn a_completed_key_replays_the_stored_answer_without_calling_the_mis() {
    let mis = MockMis::spawn(echo_mis()).await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    let body = fresh_booking();
    let first = gw.send(keyed(&gw, &body, PORTAL, "key-1")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(!first.headers.contains_key("idempotent-replayed"));
    let again = gw.send(keyed(&gw, &body, PORTAL, "key-1")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.json(), first.json());
    assert_ne!(again.headers["x-request-id"], first.headers["x-request-id"]);
    assert_eq!(mis.count(), 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_and_a_malformed_key_400() {
    let mis = MockMis::spawn(echo_mis()).await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    assert_eq!(
        gw.send(keyed(&gw, &fresh_booking(), PORTAL, "key-2"))
            .await
            .status,
        StatusCode::OK
    );
    let r = gw.send(keyed(&gw, &fresh_booking(), PORTAL, "key-2")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "94220")
    );
    for bad in ["x".repeat(256), "has space".into(), String::new()] {
        let r = gw.send(keyed(&gw, &fresh_booking(), PORTAL, &bad)).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "94002"),
            "{bad:?}"
        );
    }
    assert_eq!(
        gw.send(keyed(&gw, &fresh_booking(), PORTAL, &"x".repeat(255)))
            .await
            .status,
        StatusCode::OK
    );
    // Two keys: refused, not the first taken (a retry with the other order would book again).
    let mut two = keyed(&gw, &fresh_booking(), PORTAL, "key-a");
    two.headers_mut()
        .append("idempotency-key", http::HeaderValue::from_static("key-b"));
    let r = gw.send(two).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "94002")
    );
    assert_eq!(mis.count(), 2);
}

#[tokio::test]
async fn the_same_key_while_the_first_is_in_flight_is_409() {
    let mis = MockMis::spawn(slow_echo(600)).await;
    let gw = Arc::new(TestGateway::in_front_of(&mis, "").await);
    let body = fresh_booking();
    let first = {
        let (gw, body) = (gw.clone(), body.clone());
        tokio::spawn(async move { gw.send(keyed(&gw, &body, PORTAL, "key-3")).await.status })
    };
    assert!(eventually(Duration::from_secs(5), || async { mis.count() == 1 }).await);
    let r = gw.send(keyed(&gw, &body, PORTAL, "key-3")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::CONFLICT, "94090")
    );
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(mis.count(), 1);
}

#[tokio::test]
async fn keys_are_scoped_per_integrator() {
    let mis = MockMis::spawn(echo_mis()).await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    let body = fresh_booking();
    assert_eq!(
        gw.send(keyed(&gw, &body, PORTAL, "shared")).await.status,
        StatusCode::OK
    );
    let r = gw.send(keyed(&gw, &body, CALLCENTRE, "shared")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        !r.headers.contains_key("idempotent-replayed"),
        "no replay across integrators"
    );
    assert_eq!(mis.count(), 2);
}

#[tokio::test]
async fn an_expired_key_books_anew() {
    let mis = MockMis::spawn(echo_mis()).await;
    let spec = BackendSpec::new("mis-a", mis.url());
    let toml = config_toml(&[spec], &[(SEED_LPU, "mis-a")])
        .replace("[admin]", "[idempotency]\nttl_seconds = 1\n\n[admin]");
    let gw = TestGateway::start(&toml).await;
    let body = fresh_booking();
    assert_eq!(
        gw.send(keyed(&gw, &body, PORTAL, "key-ttl")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        gw.send(keyed(&gw, &body, PORTAL, "key-ttl")).await.headers["idempotent-replayed"],
        "true"
    );
    assert!(
        eventually(Duration::from_secs(4), || async {
            gw.send(keyed(&gw, &body, PORTAL, "key-ttl")).await;
            mis.count() == 2
        })
        .await
    );
}

#[tokio::test]
async fn an_outcome_unknown_is_remembered_and_never_resent_blindly() {
    let mis = FaultMis::spawn(Fault::Hang).await;
    let spec =
        BackendSpec::new("mis-a", mis.url()).extra("timeout_ms = 300\nconnect_timeout_ms = 100");
    let gw = TestGateway::start(&config_toml(&[spec], &[(SEED_LPU, "mis-a")])).await;
    let body = fresh_booking();
    let r = gw.send(keyed(&gw, &body, PORTAL, "key-unknown")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "95040")
    );
    let again = gw.send(keyed(&gw, &body, PORTAL, "key-unknown")).await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "95040")
    );
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(mis.count(), 1);

    let reset = FaultMis::spawn(Fault::ResetAfterRequest).await;
    let spec = BackendSpec::new("mis-a", reset.url());
    let gw = TestGateway::start(&config_toml(&[spec], &[(SEED_LPU, "mis-a")])).await;
    assert_eq!(
        gw.send(keyed(&gw, &body, PORTAL, "k")).await.code(),
        "95022"
    );
    assert_eq!(
        gw.send(keyed(&gw, &body, PORTAL, "k")).await.code(),
        "95022"
    );
    assert_eq!(reset.count(), 1);
}

#[tokio::test]
async fn a_mis_rejection_is_replayed_but_a_booking_that_was_never_sent_may_be_retried() {
    let mis = MockMis::spawn(always(Reply::exception(400, "Slot expired", "4003"))).await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    let body = fresh_booking();
    // The MIS's text goes to the integrator once; a replay carries the gateway's own text.
    for message in [
        "Slot expired",
        mis_gateway::booking::pipeline::REPLAYED_REJECTION,
    ] {
        let r = gw.send(keyed(&gw, &body, PORTAL, "key-rejected")).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "4003")
        );
        assert_eq!(r.json()["Message"], message, "{}", r.text());
    }
    assert_eq!(mis.count(), 1);

    // Nothing listens: 502 "not sent"; once the MIS is up, the same key books.
    let addr = closed_port().await;
    let spec = BackendSpec::new("mis-a", format!("http://{addr}"));
    let gw = TestGateway::start(&config_toml(&[spec], &[(SEED_LPU, "mis-a")])).await;
    assert_eq!(
        gw.send(keyed(&gw, &body, PORTAL, "key-unsent"))
            .await
            .code(),
        "95020"
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("the freed port is still free");
    let mis = MockMis::start(listener, echo_mis());
    assert_eq!(
        gw.send(keyed(&gw, &body, PORTAL, "key-unsent"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(mis.count(), 1);
}

#[tokio::test]
async fn without_a_key_a_double_submit_in_flight_is_409() {
    let mis = MockMis::spawn(slow_echo(600)).await;
    let gw = Arc::new(TestGateway::in_front_of(&mis, "").await);
    let body = fresh_booking();
    let first = {
        let (gw, body) = (gw.clone(), body.clone());
        tokio::spawn(async move { gw.book(&body, PORTAL).await.status })
    };
    assert!(eventually(Duration::from_secs(5), || async { mis.count() == 1 }).await);
    let r = gw.book(&body, PORTAL).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::CONFLICT, "94091")
    );
    // Another integrator, or another slot, is not a double submit.
    assert_eq!(gw.book(&body, CALLCENTRE).await.status, StatusCode::OK);
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(mis.count(), 2);
}

#[tokio::test]
async fn a_client_that_goes_away_mid_booking_finds_its_booking_under_its_key() {
    let mis = MockMis::spawn(slow_echo(500)).await;
    let gw = Arc::new(TestGateway::in_front_of(&mis, "").await);
    let body = fresh_booking();
    let impatient = {
        let (gw, body) = (gw.clone(), body.clone());
        tokio::spawn(async move { gw.send(keyed(&gw, &body, PORTAL, "key-gone")).await })
    };
    assert!(eventually(Duration::from_secs(5), || async { mis.count() == 1 }).await);
    impatient.abort();
    // The booking completes on the gateway's side; a retry with the key gets it.
    assert!(
        eventually(Duration::from_secs(5), || async {
            let r = gw.send(keyed(&gw, &body, PORTAL, "key-gone")).await;
            r.status == StatusCode::OK
        })
        .await
    );
    let r = gw.send(keyed(&gw, &body, PORTAL, "key-gone")).await;
    assert_eq!(r.headers["idempotent-replayed"], "true");
    assert_eq!(mis.count(), 1, "booked once");
}

#[tokio::test]
async fn the_in_memory_store_has_no_lease_to_renew_or_lapse() {
    let mis = MockMis::spawn(slow_echo(300)).await;
    let gw = Arc::new(TestGateway::in_front_of(&mis, "").await);
    let store = &gw.gateway.store;
    assert_eq!(
        store.lease(),
        mis_gateway::policy::idempotency::NO_LEASE,
        "its claims die with the process: a booking sets no renewal timer"
    );
    assert!(store.in_process());
    let body = fresh_booking();
    let first = {
        let (gw, body) = (gw.clone(), body.clone());
        tokio::spawn(async move { gw.send(keyed(&gw, &body, PORTAL, "no-lease")).await.status })
    };
    assert!(eventually(Duration::from_secs(5), || async { mis.count() == 1 }).await);
    let r = gw.send(keyed(&gw, &body, PORTAL, "no-lease")).await;
    assert_eq!(r.code(), "94090");
    assert_eq!(first.await.unwrap(), StatusCode::OK);
}
