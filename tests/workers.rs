//! Thread-per-core serving: client connections are spread over the worker threads, and each
//! worker books over MIS connections of its own, reused from one booking to the next.

mod support;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use mis_gateway::app::App;
use support::demo::DemoProcess;
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
    let mut req = booking_request(gw.url("/dir/appointments"), &fresh_booking(), PORTAL);
    // A bare client connection adds no Host, which HTTP/1.1 requires (400 94003 without).
    req.headers_mut()
        .insert(http::header::HOST, gw.addr.to_string().parse().unwrap());
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

/// More workers than CPUs (issue 29): each still books over MIS connections of its own. Sized
/// by the CPU count, the pools made workers 1 and 4 of five on two CPUs share one.
#[tokio::test]
async fn more_workers_than_cpus_still_each_have_their_own_mis_connections() {
    let workers = mis_gateway::edge::workers::default_count() + 3;
    let mis = FaultMis::spawn(Fault::Slice(1 << 16)).await;
    let spec = BackendSpec::new("mis-a", mis.url());
    let mut app = App::new(parse_config(&config_toml(&[spec], &[(SEED_LPU, "mis-a")])));
    app.workers = workers;
    let gw = TestGateway::start_app(app, false).await;
    // One client connection per worker (each new one goes to the least loaded worker).
    let mut clients = Vec::new();
    for _ in 0..workers {
        clients.push(client_connection(&gw).await);
    }
    for _ in 0..2 {
        for c in &mut clients {
            assert_eq!(book_on(c, &gw).await, StatusCode::OK);
        }
    }
    assert_eq!(mis.count(), 2 * workers);
    assert_eq!(
        mis.connections(),
        workers,
        "one MIS connection per worker, none shared"
    );
    gw.shutdown().await;
}

/// The worker threads of process `pid` and the CPUs each may run on (`Cpus_allowed_list`), by
/// name.
fn worker_cpus(pid: u32) -> Vec<(String, Vec<usize>)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap();
        let name = name.trim();
        if !name.starts_with("worker-") {
            continue;
        }
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim();
        let cpus = list
            .split(',')
            .flat_map(|r| match r.split_once('-') {
                Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<_>>(),
                None => vec![r.parse().unwrap()],
            })
            .collect();
        found.push((name.to_owned(), cpus));
    }
    found.sort();
    found
}

#[tokio::test]
async fn pin_workers_holds_each_worker_thread_of_the_process_to_a_cpu_of_its_own() {
    let mask = mis_gateway::edge::workers::allowed_cpus().unwrap();
    let workers = |cpus: [Vec<usize>; 2]| {
        vec![
            ("worker-1".to_owned(), cpus[0].clone()),
            ("worker-2".to_owned(), cpus[1].clone()),
        ]
    };

    let whole = [mask.clone(), mask.clone()];
    // Unpinned by default and with the variable off: any CPU of the mask. Pinned (through the environment, as a unit file would set it): one CPU
    // each, the mask's first and second (its first again on a one-CPU machine).
    let pinned = [vec![mask[0]], vec![mask[1 % mask.len()]]];
    for (env, expected) in [
        (&[][..], whole.clone()),
        (&[("MIS_GATEWAY_PIN_WORKERS", "0")][..], whole),
        (&[("MIS_GATEWAY_PIN_WORKERS", "1")][..], pinned),
    ] {
        let mut demo = DemoProcess::start(&["--worker-threads", "2"], env).await;
        assert_eq!(
            demo.book().await.0,
            StatusCode::OK,
            "{env:?}: a worker served it"
        );
        assert_eq!(
            worker_cpus(demo.child.id().unwrap()),
            workers(expected),
            "{env:?}"
        );
        demo.child.kill().await.unwrap();
    }
}

/// Per-worker state is sized for at most 256 workers: more are refused at the command line.
#[test]
fn more_than_256_worker_threads_are_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .args([
            "serve",
            "--worker-threads",
            "257",
            "--config",
            "/nonexistent/routes.toml",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--worker-threads") && err.contains("257"),
        "{err}"
    );
}
