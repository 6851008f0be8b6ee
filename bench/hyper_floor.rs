//! The floor of the HTTP stack the gateway is built on, for `bench/floor.sh`: the least a
//! hyper/tokio proxy does to pass one booking to its MIS, and nothing the gateway adds.
//!
//! Per request it reads the head and the whole body, replaces `Authorization` with the MIS's
//! credentials, sends the body over a kept-alive HTTP/1.1 connection from a per-thread idle
//! list, reads the whole answer and returns it. Built as the gateway is built: one
//! current-thread runtime per worker thread, mimalloc, hyper's HTTP/1 server and client
//! connections with the gateway's settings (`writev(false)`, header read timeout on a tokio
//! timer). No authentication, validation, routing, normalization, idempotency, log or metric.
//!
//! What the gateway costs above this is what its own code costs; what this costs is the price
//! of hyper and tokio on the same machine, which the gateway pays too.
//!
//!   hyper_floor LISTEN MIS_ADDR MIS_AUTHORIZATION [THREADS]
//!   e.g. hyper_floor 127.0.0.1:18080 127.0.0.1:19201 'Basic Z2F0ZXdheTpiZW5jaC1zZWNyZXQ=' 2

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper_util::rt::{TokioIo, TokioTimer};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What every connection of one worker thread shares.
struct Worker {
    mis: SocketAddr,
    authorization: HeaderValue,
    idle: RefCell<Vec<client::SendRequest<Full<Bytes>>>>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: hyper_floor LISTEN MIS_ADDR MIS_AUTHORIZATION [THREADS]");
        std::process::exit(2);
    }
    let listen: SocketAddr = args[1].parse().expect("LISTEN is host:port");
    let mis: SocketAddr = args[2].parse().expect("MIS_ADDR is host:port");
    let authorization =
        HeaderValue::from_str(&args[3]).expect("MIS_AUTHORIZATION is a header value");
    let threads: usize = args
        .get(4)
        .map_or(2, |t| t.parse().expect("THREADS is a number"));

    // One listener per thread on the same port (SO_REUSEPORT): the kernel spreads connections.
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let authorization = authorization.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, serve(listen, mis, authorization));
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

async fn serve(listen: SocketAddr, mis: SocketAddr, authorization: HeaderValue) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_reuseport(true).expect("SO_REUSEPORT");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(listen).expect("bind LISTEN");
    let listener = socket.listen(4096).expect("listen");
    let worker = Rc::new(Worker {
        mis,
        authorization,
        idle: RefCell::new(Vec::new()),
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let worker = worker.clone();
        tokio::task::spawn_local(async move {
            let service = hyper::service::service_fn(move |req| {
                let worker = worker.clone();
                async move { Ok::<_, Infallible>(forward(&worker, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .writev(false)
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(worker: &Worker, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let mut out = Request::new(Full::new(body));
    *out.method_mut() = http::Method::POST;
    *out.uri_mut() = http::Uri::from_static("/dir/appointments");
    let h = out.headers_mut();
    h.insert(header::HOST, HeaderValue::from_static("mis"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::AUTHORIZATION, worker.authorization.clone());

    let idle = worker.idle.borrow_mut().pop();
    let mut sender = match idle {
        Some(s) if !s.is_closed() => s,
        _ => match connect(worker.mis).await {
            Some(s) => s,
            None => return status(StatusCode::BAD_GATEWAY),
        },
    };
    if sender.ready().await.is_err() {
        return status(StatusCode::BAD_GATEWAY);
    }
    let Ok(resp) = sender.send_request(out).await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let code = resp.status();
    let Ok(answer) = resp.into_body().collect().await.map(|b| b.to_bytes()) else {
        return status(StatusCode::BAD_GATEWAY);
    };
    worker.idle.borrow_mut().push(sender);
    let mut r = Response::new(Full::new(answer));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn connect(mis: SocketAddr) -> Option<client::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(mis).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = client::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::task::spawn_local(conn);
    Some(sender)
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}
