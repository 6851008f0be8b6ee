//! Whatever a MIS answers becomes the seed's Appointment or one clear error.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::*;

async fn book_against(reply: Reply, extra: &str) -> (TestResponse, MockMis) {
    let mis = MockMis::spawn(always(reply)).await;
    let gw = TestGateway::in_front_of(&mis, extra).await;
    let r = gw.book(SEED, PORTAL).await;
    (r, mis)
}

fn appointment(fields: serde_json::Value) -> Reply {
    Reply::json(200, fields.to_string())
}

#[tokio::test]
async fn numeric_numbers_upper_case_guids_and_missing_fields_are_normalized() {
    let (r, _) = book_against(
        appointment(serde_json::json!({
            "guid": "EE5AE221-DDC8-40CF-A61B-4E7926A2501C",
            "number": 17,
            "slot": SEED_SLOT.to_uppercase(),
            "createTime": "2023-04-05 14:00:00.000",
            "extra": "dropped"
        })),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let a = r.json();
    let text = r.text();
    let at: Vec<usize> = [
        "\"guid\"",
        "\"number\"",
        "\"slot\"",
        "\"source\"",
        "\"createTime\"",
        "\"direction\"",
    ]
    .iter()
    .map(|k| {
        text.find(k)
            .unwrap_or_else(|| panic!("{k} missing in {text}"))
    })
    .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "fields in the seed's order: {text}"
    );
    assert_eq!(
        a.as_object().unwrap().len(),
        6,
        "nothing else from the MIS: {text}"
    );
    assert_eq!(a["guid"], "ee5ae221-ddc8-40cf-a61b-4e7926a2501c");
    assert_eq!(a["number"], "17");
    assert_eq!(a["slot"], SEED_SLOT);
    assert_eq!(a["source"], "Internet");
    assert_eq!(a["createTime"], "2023-04-05T14:00:00+03:00");
}

#[tokio::test]
async fn local_times_are_read_in_each_backends_zone() {
    for (tz, want) in [
        ("Europe/Kaliningrad", "2023-04-05T14:00:00+02:00"),
        ("Asia/Yekaterinburg", "2023-04-05T14:00:00+05:00"),
        ("Asia/Vladivostok", "2023-04-05T14:00:00+10:00"),
        ("Asia/Kamchatka", "2023-04-05T14:00:00+12:00"),
    ] {
        let mis = MockMis::spawn(always(appointment(serde_json::json!({
            "guid": "ee5ae221-ddc8-40cf-a61b-4e7926a2501c", "number": "01",
            "slot": SEED_SLOT, "createTime": "2023-04-05T14:00:00"
        }))))
        .await;
        let spec = BackendSpec::new("mis-a", mis.url()).tz(tz);
        let gw = TestGateway::start(&config_toml(&[spec], &[(SEED_LPU, "mis-a")])).await;
        let r = gw.book(SEED, PORTAL).await;
        assert_eq!(r.json()["createTime"], want, "{tz}");
    }
}

#[tokio::test]
async fn the_mis_direction_and_source_are_kept_when_given() {
    let direction =
        serde_json::json!({"guid": "2d793f84-26c9-496d-bd64-745095eb1f80", "number": "from-mis"});
    let (r, _) = book_against(
        appointment(serde_json::json!({
            "guid": "ee5ae221-ddc8-40cf-a61b-4e7926a2501c", "number": "01", "slot": SEED_SLOT,
            "source": "callcenter", "createTime": "2019-07-23T12:50:00+03:00", "direction": direction
        })),
        "",
    )
    .await;
    let a = r.json();
    assert_eq!(a["source"], "CallCenter");
    assert_eq!(a["direction"], direction);
    assert_eq!(a["createTime"], "2019-07-23T12:50:00+03:00");
}

#[tokio::test]
async fn a_2xx_that_is_not_an_appointment_is_502_outcome_unknown_and_never_echoed() {
    let bad_bodies: Vec<(&str, Vec<u8>)> = vec![
        ("html", b"<html><body>Canary-MIS OK</body></html>".to_vec()),
        ("no guid", br#"{"number":"1","slot":"766998fb-1915-4d54-a3f3-934f60125aac","createTime":"2023-04-05T14:00:00","Canary":1}"#.to_vec()),
        ("other slot", br#"{"guid":"ee5ae221-ddc8-40cf-a61b-4e7926a2501c","number":"1","slot":"00000000-0000-0000-0000-000000000000","createTime":"2023-04-05T14:00:00"}"#.to_vec()),
        ("bad time", br#"{"guid":"ee5ae221-ddc8-40cf-a61b-4e7926a2501c","number":"1","createTime":"Canary"}"#.to_vec()),
        ("unknown source", br#"{"guid":"ee5ae221-ddc8-40cf-a61b-4e7926a2501c","number":"1","source":"Canary","createTime":"2023-04-05T14:00:00"}"#.to_vec()),
        ("invalid utf-8", b"{\"guid\":\"\xff\xfe\"}".to_vec()),
        ("duplicate guid", br#"{"guid":"ee5ae221-ddc8-40cf-a61b-4e7926a2501c","guid":"ee5ae221-ddc8-40cf-a61b-4e7926a2501d","number":"1","createTime":"2023-04-05T14:00:00"}"#.to_vec()),
    ];
    for (what, body) in bad_bodies {
        let (r, mis) = book_against(Reply::json(200, body), "").await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_GATEWAY, "95022"),
            "{what}"
        );
        assert!(!r.text().contains("Canary"), "{what}: {}", r.text());
        assert_eq!(mis.count(), 1, "{what}: no retry after the MIS answered");
    }
}

#[tokio::test]
async fn a_10_mb_answer_is_cut_at_the_cap() {
    let huge = format!("{{\"guid\":\"{}\"}}", "x".repeat(10 * 1024 * 1024));
    let (r, _) = book_against(Reply::json(200, huge.clone()), "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_GATEWAY, "95022")
    );
    let (r, _) = book_against(Reply::json(500, huge.clone()), "on_5xx = \"retry\"").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_GATEWAY, "95021")
    );
    assert!(r.body.len() < 1024);
    // By default a 5xx after the MIS read the booking may hide one, whatever its body.
    let (r, _) = book_against(Reply::json(500, huge), "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_GATEWAY, "95022")
    );
    assert!(r.body.len() < 1024);
}

#[tokio::test]
async fn mis_errors_keep_their_status_and_code_or_become_502() {
    // A MIS that rolls back on 5xx (`on_5xx = "retry"`): its own 5xx is passed on.
    let rolls_back = "on_5xx = \"retry\"";
    let (r, _) = book_against(
        Reply::exception(500, "Internal MIS error", "5000"),
        rolls_back,
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "5000")
    );
    // By default the booking may exist behind any 5xx: 95022, the MIS's text not echoed.
    let (r, _) = book_against(Reply::exception(500, "Canary MIS error", "5000"), "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_GATEWAY, "95022")
    );
    assert!(!r.text().contains("Canary"));
    let (r, _) = book_against(Reply::exception(400, "Slot expired", "4003"), "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "4003")
    );
    assert_eq!(r.json()["Message"], "Slot expired");

    let (r, _) = book_against(Reply::json(503, "<html>Canary down</html>"), rolls_back).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_GATEWAY, "95021")
    );
    assert!(!r.text().contains("Canary"));
    let (r, _) = book_against(Reply::json(302, ""), "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_GATEWAY, "95021")
    );

    // The MIS refusing the gateway's own credentials is the hub's problem, not the integrator's.
    let (r, _) = book_against(Reply::exception(403, "Authorization failed", "5403"), "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_GATEWAY, "95024")
    );
}

#[tokio::test]
async fn a_refusing_mis_is_502_not_sent() {
    let port = closed_port().await;
    let spec =
        BackendSpec::new("mis-a", format!("http://{port}")).extra("connect_timeout_ms = 1000");
    let gw = TestGateway::start(&config_toml(&[spec], &[(SEED_LPU, "mis-a")])).await;
    let started = Instant::now();
    let r = gw.book(SEED, PORTAL).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_GATEWAY, "95020")
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refusal is immediate, not a timeout"
    );
}

#[tokio::test]
async fn a_mis_slower_than_its_timeout_is_504_outcome_unknown_without_a_retry() {
    let mis = MockMis::spawn(always(
        Reply::exception(400, "late", "4000").after(Duration::from_secs(5)),
    ))
    .await;
    let gw = TestGateway::in_front_of(&mis, "timeout_ms = 400\nconnect_timeout_ms = 100").await;
    let started = Instant::now();
    let r = gw.book(SEED, PORTAL).await;
    let took = started.elapsed();
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "95040")
    );
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(mis.count(), 1, "a booking that may exist is never resent");
}
