//! `mis-gateway demo` as a newcomer runs it: the printed curl books the seed's example.

mod support;

use http::StatusCode;
use support::demo::DemoProcess;
use support::*;

#[tokio::test]
async fn the_demo_prints_a_curl_that_books_the_seed_example() {
    let mut demo = DemoProcess::start(&[], &[]).await;
    assert!(
        demo.printed.contains("curl -sS -u portal:portal-demo"),
        "{}",
        demo.printed
    );
    assert_eq!(demo.body(), SEED);

    let (status, body) = demo.book().await;
    assert_eq!(status, StatusCode::OK);
    let a: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(a["slot"], SEED_SLOT);
    assert!(
        a["createTime"].as_str().unwrap().ends_with("+07:00"),
        "mis-north is in Novosibirsk: {a}"
    );

    let (again, _) = demo.book().await;
    assert_eq!(
        again,
        StatusCode::BAD_REQUEST,
        "the demo MIS refuses a taken slot"
    );
    demo.child.kill().await.unwrap();
}

#[tokio::test]
async fn the_demo_prints_the_curls_that_look_the_booking_up_and_cancel_it() {
    let mut demo = DemoProcess::start(&[], &[]).await;
    let lookup = demo.line_with("/dir/appointments/GUID").await;
    let cancel = demo.line_with("-X DELETE").await;
    let url_of = |line: &str| {
        let at = line.find("http://").expect("a URL");
        line[at..].trim().trim_end_matches('\'').to_owned()
    };

    let (status, body) = demo.book().await;
    assert_eq!(status, StatusCode::OK);
    let booked: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let guid = booked["guid"].as_str().unwrap();

    let (status, body) = demo
        .call(http::Method::GET, &url_of(&lookup).replace("GUID", guid))
        .await;
    assert_eq!(status, StatusCode::OK);
    let found: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(found["guid"], booked["guid"]);
    assert_eq!(found["number"], booked["number"]);
    assert_eq!(found["status"], "booked");

    let (status, body) = demo
        .call(http::Method::DELETE, &url_of(&cancel).replace("GUID", guid))
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let cancelled: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["cancelReason"], "patient_decline");

    // The demo MIS freed the slot: the seed's example books again.
    let (again, _) = demo.book().await;
    assert_eq!(again, StatusCode::OK);
    demo.child.kill().await.unwrap();
}
