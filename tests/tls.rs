//! TLS on both sides: the integrator listener (HTTP/1.1 and HTTP/2 by ALPN, certificates
//! rotated by reload) and https backends with their own CA and client certificates (mTLS).

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version, header};
use http_body_util::{BodyExt, Full};
use support::pki::{Pki, tls_routes};
use support::*;

fn client(
    pki: &Pki,
    h2: bool,
) -> hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
> {
    let tls = trusting(pki);
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let connector = if h2 {
        b.enable_http2().build()
    } else {
        b.enable_http1().build()
    };
    let mut builder =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    builder.http2_only(h2);
    builder.build(connector)
}

/// A TLS client configuration that trusts `pki`'s CA only.
fn trusting(pki: &Pki) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(pki.roots())
        .with_no_client_auth()
}

fn booking(url: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, basic(PORTAL.0, PORTAL.1))
        .body(Full::new(Bytes::from(fresh_booking())))
        .unwrap()
}

/// The DER of the certificate the server at `port` presents.
async fn presented_cert(pki: &Pki, port: u16) -> Vec<u8> {
    let tls = trusting(pki);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn the_listener_serves_https_over_http1_and_http2_and_rotates_its_certificate_on_reload() {
    let pki = Pki::new("hub test CA");
    let dir = tempfile::tempdir().unwrap();
    let mis = MockMis::spawn(echo_mis()).await;
    let path = support::pki::tls_routes(&pki, dir.path(), mis.url(), "");
    let gw = TestGateway::start_file(&path).await;
    let url = format!("https://localhost:{}/dir/appointments", gw.addr.port());

    for h2 in [false, true] {
        let r = client(&pki, h2)
            .request(booking(&url))
            .await
            .expect("an https booking");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.version(),
            if h2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            }
        );
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["guid"].is_string());
    }
    // Plain HTTP on the TLS port does not get a booking.
    assert!(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Full<Bytes>>()
            .request(booking(&format!(
                "http://127.0.0.1:{}/dir/appointments",
                gw.addr.port()
            )))
            .await
            .is_err()
    );

    let before = presented_cert(&pki, gw.addr.port()).await;
    let next = pki.leaf(&["localhost", "127.0.0.1"]);
    next.write(dir.path(), "server");
    let r = gw.admin(Method::POST, "/admin/reload").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        eventually(std::time::Duration::from_secs(2), || async {
            presented_cert(&pki, gw.addr.port()).await != before
        })
        .await,
        "new connections present the rotated certificate"
    );
    assert_eq!(
        client(&pki, false)
            .request(booking(&url))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_https_backend_with_its_own_ca_and_client_certificate_books() {
    let mis_pki = Pki::new("clinic CA");
    let hub_pki = Pki::new("hub client CA");
    let dir = tempfile::tempdir().unwrap();
    let server_leaf = mis_pki.leaf(&["localhost", "127.0.0.1"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mis = MockMis::start_tls(
        listener,
        echo_mis(),
        Some(Pki::server_config(&server_leaf, Some(&hub_pki))),
    );
    std::fs::write(dir.path().join("clinic-ca.pem"), mis_pki.ca_pem()).unwrap();
    let (cert, key) = hub_pki.leaf(&["mis-gateway"]).write(dir.path(), "client");
    let ca = dir.path().join("clinic-ca.pem");
    let url = format!("https://localhost:{port}");

    let with = |extra: String| {
        let spec = BackendSpec::new("mis-a", url.clone()).extra(Box::leak(extra.into_boxed_str()));
        config_toml(&[spec], &[(SEED_LPU, "mis-a")])
    };
    let mtls = format!(
        "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
        ca.display(),
        cert.display(),
        key.display()
    );
    let gw = TestGateway::start(&with(mtls)).await;
    let r = gw.book(&fresh_booking(), PORTAL).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(mis.count(), 1);
    let got = &mis.received()[0];
    assert_eq!(
        got.version,
        http::Version::HTTP_11,
        "no ALPN offered: HTTP/1.1"
    );
    assert_eq!(
        got.headers.get(http::header::HOST).unwrap(),
        &format!("localhost:{port}"),
        "origin-form request with its Host"
    );

    // Without the client certificate the clinic refuses the handshake; trusting only the
    // system roots, the clinic's certificate is not accepted. Either way: a clear 502, not sent.
    for tls in [format!("ca_file = \"{}\"", ca.display()), String::new()] {
        let gw = TestGateway::start(&with(tls.clone())).await;
        let r = gw.book(&fresh_booking(), PORTAL).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_GATEWAY, "95023"),
            "{tls:?}: {}",
            r.text()
        );
    }
    assert_eq!(
        mis.count(),
        1,
        "no booking reached the MIS without a good handshake"
    );
}

#[test]
fn tls_settings_are_validated() {
    let toml = config_toml(
        &[BackendSpec::new("mis-a", "http://127.0.0.1:9".into())
            .extra("ca_file = \"/nonexistent.pem\"")],
        &[(SEED_LPU, "mis-a")],
    );
    let p = config_problems(&toml);
    assert!(
        p.iter()
            .any(|p| p.message.contains("https:// backends only")),
        "{p:?}"
    );
    let toml = config_toml(
        &[BackendSpec::new("mis-a", "http://127.0.0.1:9".into())],
        &[(SEED_LPU, "mis-a")],
    )
    .replace(
        "[admin]",
        "[server.tls]\ncert = \"/nonexistent.crt\"\nkey = \"/nonexistent.key\"\n\n[admin]",
    );
    let p = config_problems(&toml);
    assert!(p.iter().any(|p| p.location == "server.tls.cert"), "{p:?}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.crt"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("bad.key"), "not a key").unwrap();
    let toml = toml.replace(
        "/nonexistent",
        &dir.path().join("bad").display().to_string(),
    );
    let p = config_problems(&toml);
    assert!(
        p.iter()
            .any(|p| p.location == "server.tls" && p.message.contains("cert")),
        "{p:?}"
    );
}

#[tokio::test]
async fn an_https_backend_that_offers_http2_is_booked_over_http2() {
    let mis_pki = Pki::new("clinic CA");
    let dir = tempfile::tempdir().unwrap();
    let leaf = mis_pki.leaf(&["localhost", "127.0.0.1"]);
    let mut server = (*Pki::server_config(&leaf, None)).clone();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mis = MockMis::start_tls(listener, echo_mis(), Some(Arc::new(server)));
    let ca = dir.path().join("clinic-ca.pem");
    std::fs::write(&ca, mis_pki.ca_pem()).unwrap();
    let spec = BackendSpec::new("mis-a", format!("https://localhost:{port}")).extra(Box::leak(
        format!("ca_file = \"{}\"", ca.display()).into_boxed_str(),
    ));
    let gw = TestGateway::start(&config_toml(&[spec], &[(SEED_LPU, "mis-a")])).await;
    for _ in 0..3 {
        let r = gw.book(&fresh_booking(), PORTAL).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let got = mis.received();
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_eq!(r.version, http::Version::HTTP_2);
        assert_eq!(r.path, "/dir/appointments");
    }
}

/// Issue 28, item 1, over TLS: a session that completes its handshake (ALPN h2 or http/1.1) and
/// then sends nothing is closed at the header timeout counted from accept; and a connection
/// over the cap is closed without a plaintext answer (which a TLS client reads as garbage).
#[tokio::test]
async fn a_silent_tls_session_is_closed_and_over_the_cap_tls_gets_a_plain_close() {
    use tokio::io::AsyncReadExt;
    let pki = Pki::new("hub test CA");
    let dir = tempfile::tempdir().unwrap();
    let mis = MockMis::spawn(echo_mis()).await;
    let path = support::pki::tls_routes(
        &pki,
        dir.path(),
        mis.url(),
        "header_read_timeout_ms = 500\nmax_connections = 2\n",
    );
    let gw = TestGateway::start_file(&path).await;
    // A place frees a moment after the server closed its connection: a handshake refused
    // for that is tried again.
    let handshake = |alpn: &'static [u8]| {
        let mut tls = trusting(&pki);
        tls.alpn_protocols = vec![alpn.to_vec()];
        let tls = Arc::new(tls);
        async move {
            for _ in 0..50 {
                let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
                let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                if let Ok(s) = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                {
                    return s;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("the handshake completes");
        }
    };
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let mut s = handshake(alpn).await;
        let started = std::time::Instant::now();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .expect("the silent session is closed");
        let took = started.elapsed();
        // 500 ms from accept; 1.5 s of margin for a loaded 2-core machine.
        assert!(
            took < std::time::Duration::from_millis(2000),
            "{}: closed after {took:?}",
            String::from_utf8_lossy(alpn)
        );
    }

    // Two places, both held by sessions: the third connection is closed without a byte.
    let _a = handshake(b"http/1.1").await;
    let _b = handshake(b"http/1.1").await;
    let mut third = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        third.read_to_end(&mut got),
    )
    .await
    .expect("closed");
    assert!(
        got.is_empty(),
        "no plaintext on a TLS listener: {:?}",
        String::from_utf8_lossy(&got)
    );
    gw.shutdown().await;
}

/// `[admin.tls]`: the admin listener, and so the console, speaks HTTPS only; the session
/// cookie is `Secure` there.
#[tokio::test]
async fn the_console_over_admin_tls_signs_in_with_a_secure_cookie() {
    let pki = Pki::new("admin-ca");
    let dir = tempfile::tempdir().unwrap();
    let mis = MockMis::spawn(echo_mis()).await;
    let path = tls_routes(&pki, dir.path(), mis.url(), "");
    let hash = mis_gateway::policy::auth::hash_password("duty-password-1").unwrap();
    let toml = std::fs::read_to_string(&path).unwrap().replacen(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n[admin.tls]\ncert = \"server.crt\"\nkey = \"server.key\"\n\n[[operators]]\nlogin = \"duty\"\npassword_hash = \"{hash}\"\nrole = \"viewer\"\n"
        ),
        1,
    );
    std::fs::write(&path, toml).unwrap();
    let gw = TestGateway::start_file(&path).await;
    let https = client(&pki, false);
    let base = format!("https://localhost:{}", gw.admin_addr.port());

    let login = https
        .request(
            Request::get(format!("{base}/console/login"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .expect("the console over https");
    assert_eq!(login.status(), StatusCode::OK);
    let page = String::from_utf8(
        login
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let form = page
        .split("name=\"form\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the sign-in form's token");
    let signed = https
        .request(
            Request::post(format!("{base}/console/login"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(format!(
                    "form={form}&login=duty&password=duty-password-1"
                ))))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let cookie = signed.headers()[header::SET_COOKIE].to_str().unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/console"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    // Plain HTTP to the admin port gets no console.
    let plain = gw
        .try_send(
            Request::get(format!("http://{}/healthz", gw.admin_addr))
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert!(
        plain.is_none_or(|r| r.status != StatusCode::OK),
        "the admin port speaks TLS only"
    );
    let health = https
        .request(
            Request::get(format!("{base}/healthz"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}
