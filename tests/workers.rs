//! Thread-per-core serving: client connections are spread over the worker threads, and each
//! worker books over MIS connections of its own, reused from one booking to the next.

mod support;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use mis_gateway::app::App;
use support::fault::{Fault, FaultMis};
use support::*;

/// One keep-alive client connection of its own to the gateway.
async fn client_connection(gw: &TestGateway) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn book_on(send: &mut SendRequest<Full<Bytes>>, gw: &TestGateway) -> StatusCode {
    send.ready().await.unwrap();
    let req = booking_request(gw.url("/dir/appointments"), &fresh_booking(), PORTAL);
    let resp = send.send_request(req).await.unwrap();
    TestResponse::read(resp).await.status
}

#[tokio::test]
async fn each_worker_books_over_its_own_reused_mis_connection() {
    // A keep-alive MIS that counts the connections it accepts.
    let mis = FaultMis::spawn(Fault::Slice(1 << 16)).await;
    let spec = BackendSpec::new("mis-a", mis.url());
    let mut app = App::new(parse_config(&config_toml(&[spec], &[(SEED_LPU, "mis-a")])));
    app.workers = 2;
    let gw = TestGateway::start_app(app, false).await;

    // Two client connections open at once: the second goes to the worker without one.
    let mut a = client_connection(&gw).await;
    let mut b = client_connection(&gw).await;
    for _ in 0..3 {
        assert_eq!(book_on(&mut a, &gw).await, StatusCode::OK);
        assert_eq!(book_on(&mut b, &gw).await, StatusCode::OK);
    }
    assert_eq!(mis.count(), 6);
    // A shared pool would have carried these sequential bookings over one connection; one
    // connection per booking would be six.
    assert_eq!(
        mis.connections(),
        2,
        "one MIS connection per worker, reused by its later bookings"
    );
    gw.shutdown().await;
}
