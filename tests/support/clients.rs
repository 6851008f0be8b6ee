//! Clients from chosen loopback addresses (all of 127.0.0.0/8 is loopback: 127.0.0.2, .3 …
//! act as distinct clients), and a throwaway HAProxy in front of a gateway.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use super::{TestResponse, basic, booking_request};

/// `127.0.0.<last>`.
pub fn lo(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A connection to `to` from `from` (port chosen by the kernel).
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends `req` on a new connection from `from` (a Host header added if it has none); `None`
/// when the connection is closed without an answer.
pub async fn try_send_from(
    from: IpAddr,
    to: SocketAddr,
    mut req: Request<Full<Bytes>>,
) -> Option<TestResponse> {
    if !req.headers().contains_key(header::HOST) {
        req.headers_mut()
            .insert(header::HOST, to.to_string().parse().unwrap());
    }
    let stream = connect_from(from, to).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let resp = send.send_request(req).await.ok()?;
    Some(TestResponse::read(resp).await)
}

pub async fn send_from(from: IpAddr, to: SocketAddr, req: Request<Full<Bytes>>) -> TestResponse {
    try_send_from(from, to, req)
        .await
        .expect("the gateway answers")
}

/// A booking of `body` as `who` from `from` to the gateway (or proxy) at `to`.
pub async fn book_from(
    from: IpAddr,
    to: SocketAddr,
    body: &str,
    who: (&str, &str),
) -> TestResponse {
    let req = booking_request(format!("http://{to}/dir/appointments"), body, who);
    send_from(from, to, req).await
}

/// As [`book_from`], with extra headers (e.g. a forged `X-Forwarded-For`).
pub async fn book_from_with(
    from: IpAddr,
    to: SocketAddr,
    body: &str,
    who: (&str, &str),
    extra: &[(&str, &str)],
) -> TestResponse {
    let mut req = Request::post(format!("http://{to}/dir/appointments"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, basic(who.0, who.1));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    send_from(
        from,
        to,
        req.body(Full::new(Bytes::from(body.to_owned()))).unwrap(),
    )
    .await
}

/// A throwaway `haproxy` (Debian package `haproxy`) in the foreground on a free loopback
/// port, killed on drop.
pub struct Haproxy {
    _child: tokio::process::Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// HAProxy in front of `gateway`: `mode` is `tcp` or `http`, `server_options` what the
    /// server line adds (`send-proxy-v2`), `backend_options` lines for the backend
    /// (`option forwardfor`).
    pub async fn start(
        gateway: SocketAddr,
        mode: &str,
        server_options: &str,
        backend_options: &str,
    ) -> Haproxy {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let dir = tempfile::tempdir().unwrap();
            let cfg = format!(
                "global\n  maxconn 200\ndefaults\n  mode {mode}\n  timeout connect 2s\n  timeout client 20s\n  timeout server 20s\n\
                 frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
                 backend be\n{backend_options}\n  server gw {gateway} {server_options}\n"
            );
            let path = dir.path().join("haproxy.cfg");
            std::fs::write(&path, cfg).unwrap();
            let mut child = tokio::process::Command::new("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("haproxy is on PATH (Debian package `haproxy`)");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return Haproxy {
                        _child: child,
                        addr,
                        _dir: dir,
                    };
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "haproxy did not listen"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        panic!("haproxy did not start on a free port");
    }
}
