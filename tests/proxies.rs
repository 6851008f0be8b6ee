//! The gateway behind a real HAProxy (RELIABILITY.md S3): the client address comes from the
//! PROXY v2 header or X-Forwarded-For of a trusted balancer, and is the one allow-listed,
//! throttled and logged; the same headers forged by an untrusted peer are ignored or refused.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::clients::{Haproxy, book_from, book_from_with, connect_from, lo, try_send_from};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Only HAProxy's own address (its connections come from 127.0.0.1) is trusted; the portal
/// may log in from 127.0.0.2 only.
async fn gateway(proxy_protocol: bool) -> (TestGateway, MockMis) {
    let mis = MockMis::spawn(echo_mis()).await;
    let toml = config_toml(
        &[BackendSpec::new("mis-a", mis.url())],
        &[(SEED_LPU, "mis-a")],
    )
    .replacen(
        "[server]\n",
        &format!(
            "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\nproxy_protocol = {proxy_protocol}\nheader_read_timeout_ms = 500\n"
        ),
        1,
    )
    .replacen(
        "lpus = [\"*\"]\n",
        "lpus = [\"*\"]\nallow_from = [\"127.0.0.2/32\"]\n",
        1,
    );
    (TestGateway::start(&toml).await, mis)
}

/// Through `proxy`: the portal books from .2 only; ten guesses for the call centre from .3
/// throttle .3, not the balancer, so the call centre's right password from .2 still books.
async fn the_client_behind_the_balancer_is_the_one_judged(proxy: &Haproxy, gw: &TestGateway) {
    let via = proxy.addr;
    let r = book_from(lo(2), via, &fresh_booking(), PORTAL).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = book_from(lo(3), via, &fresh_booking(), PORTAL).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "allow_from saw .3");
    for _ in 0..10 {
        let r = book_from(lo(3), via, &fresh_booking(), ("callcentre", "guess")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = book_from(lo(3), via, &fresh_booking(), ("callcentre", "guess")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let before = gw.gateway.auth.verifications();
    let r = book_from(lo(2), via, &fresh_booking(), CALLCENTRE).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(gw.gateway.auth.verifications(), before + 1, "a cold login");
}

/// Reads until the gateway closes (bounded); what it sent.
async fn read_to_close(s: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn raw_booking(who: (&str, &str)) -> String {
    let body = fresh_booking();
    format!(
        "POST /dir/appointments HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\nauthorization: {}\r\ncontent-length: {}\r\n\r\n{body}",
        basic(who.0, who.1),
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_with_send_proxy_v2_the_proxy_header_names_the_client() {
    let (gw, mis) = gateway(true).await;
    let proxy = Haproxy::start(gw.addr, "tcp", "send-proxy-v2", "").await;
    the_client_behind_the_balancer_is_the_one_judged(&proxy, &gw).await;
    assert_eq!(mis.count(), 2);

    // An untrusted peer that forges a PROXY header (v1 or v2) is refused: closed, unanswered.
    let v2 = {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        h.extend_from_slice(&[127, 0, 0, 2, 127, 0, 0, 1, 0x13, 0x88, 0, 80]);
        h
    };
    let v1 = b"PROXY TCP4 127.0.0.2 127.0.0.1 5000 80\r\n".to_vec();
    for forged in [v1, v2] {
        let mut s = connect_from(lo(3), gw.addr).await;
        let mut bytes = forged;
        bytes.extend_from_slice(raw_booking(PORTAL).as_bytes());
        // The gateway may close (and reset) before all of it is written.
        let _ = s.write_all(&bytes).await;
        assert_eq!(
            read_to_close(&mut s).await,
            "",
            "no answer to a forged PROXY header"
        );
    }
    // Without a header an untrusted peer is served as itself.
    let r = book_from(lo(3), gw.addr, &fresh_booking(), PORTAL).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = book_from(lo(3), gw.addr, &fresh_booking(), ("callcentre", "guess")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "still .3's window");
    // A trusted peer that sends no header is refused, and one that sends nothing is closed at
    // the header timeout: the PROXY header's read is bounded too.
    assert!(
        try_send_from(
            lo(1),
            gw.addr,
            booking_request(gw.url("/dir/appointments"), SEED, PORTAL)
        )
        .await
        .is_none()
    );
    let mut silent = connect_from(lo(1), gw.addr).await;
    let started = Instant::now();
    assert_eq!(read_to_close(&mut silent).await, "");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(mis.count(), 2, "nothing forged reached the MIS");

    // An ordinary untrusted client whose first segment only begins like a PROXY header (a lone
    // `P`, a CRLF before the request line as RFC 9112 allows) is served, not reset (issue 28,
    // item 6). Its answer is .3's 401: the point is that it gets one.
    for (first, rest) in [
        ("P".to_owned(), raw_booking(PORTAL)[1..].to_owned()),
        ("\r\n".to_owned(), raw_booking(PORTAL)),
    ] {
        let mut s = connect_from(lo(3), gw.addr).await;
        s.write_all(first.as_bytes()).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(rest.as_bytes()).await.unwrap();
        let answer = read_to_close(&mut s).await;
        assert!(
            answer.starts_with("HTTP/1.1 4"),
            "{first:?} first: {answer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_with_forwardfor_the_rightmost_untrusted_address_is_the_client() {
    use mis_gateway::telemetry::{Captured, Export, LogFormat, Telemetry};
    let logs = Captured::default();
    let _telemetry = Telemetry::init_with(LogFormat::Json, logs.clone(), Export::Off);
    let (gw, mis) = gateway(false).await;
    let proxy = Haproxy::start(gw.addr, "http", "", "  option forwardfor").await;
    the_client_behind_the_balancer_is_the_one_judged(&proxy, &gw).await;

    // A client's own X-Forwarded-For is kept by HAProxy and appended to: the rightmost entry
    // (HAProxy's word) decides, so .3 claiming .2 is still .3.
    let forged = [("x-forwarded-for", "127.0.0.2")];
    let r = book_from_with(lo(3), proxy.addr, &fresh_booking(), PORTAL, &forged).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // From an untrusted peer directly, the header is ignored.
    let r = book_from_with(lo(3), gw.addr, &fresh_booking(), PORTAL, &forged).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(mis.count(), 2);

    // The access log names the client, never the balancer.
    assert!(
        eventually(Duration::from_secs(5), || async {
            logs.text().contains("\"client\":\"127.0.0.3\"")
        })
        .await
    );
    let text = logs.text();
    let access: Vec<&str> = text.lines().filter(|l| l.contains("\"booking\"")).collect();
    assert!(access.len() >= 15, "{}", access.len());
    assert!(
        access
            .iter()
            .all(|l| l.contains("\"client\":\"127.0.0.2\"")
                || l.contains("\"client\":\"127.0.0.3\"")),
        "{text}"
    );
}

#[tokio::test]
async fn a_trusted_peer_may_send_proxy_v1_and_a_local_v2_header_keeps_its_own_address() {
    let (gw, mis) = gateway(true).await;
    let send = |header: Vec<u8>| {
        let addr = gw.addr;
        async move {
            let mut s = connect_from(lo(1), addr).await;
            let mut bytes = header;
            bytes.extend_from_slice(raw_booking(PORTAL).as_bytes());
            s.write_all(&bytes).await.unwrap();
            let mut out = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut out))
                .await
                .unwrap()
                .unwrap();
            String::from_utf8_lossy(&out[..n]).into_owned()
        }
    };
    // v1 from the trusted 127.0.0.1 naming .2: the portal's allowed address.
    let r = send(b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 80\r\n".to_vec()).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // v2 LOCAL (a balancer's health check): the peer itself, which allow_from does not list.
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    let r = send(local).await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    assert_eq!(mis.count(), 1);
}
