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
