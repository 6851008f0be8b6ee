//! F11: a trace collector that is stuck does not slow bookings (bounded queue, export off the
//! request path). One test per binary: telemetry is process-global.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use mis_gateway::telemetry::{Captured, Export, LogFormat, Telemetry};
use support::otlp::OtlpReceiver;
use support::*;

async fn median_booking(gw: &TestGateway, n: usize) -> Duration {
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        assert_eq!(
            gw.book(&fresh_booking(), PORTAL).await.status,
            StatusCode::OK
        );
        t.push(s.elapsed());
    }
    t.sort();
    t[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_collector_leaves_booking_latency_alone() {
    let stuck = OtlpReceiver::spawn(true).await;
    let telemetry = std::sync::Arc::new(Telemetry::init_with(
        LogFormat::Json,
        Captured::default(),
        Export::To(stuck.traces_url()),
    ));
    let mis = MockMis::spawn(echo_mis()).await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    median_booking(&gw, 20).await; // warm-up: auth cache, pools
    let before = median_booking(&gw, 100).await;

    // An export now hangs on the collector (until the exporter's own timeout).
    let flush = {
        let t = telemetry.clone();
        tokio::task::spawn_blocking(move || t.flush())
    };
    let during = median_booking(&gw, 300).await;
    eprintln!(
        "F11: median booking {before:?} with a quiet exporter, {during:?} while exports hang on the collector"
    );
    assert!(
        during < before * 3 + Duration::from_millis(5),
        "{during:?} vs {before:?}"
    );
    // The measurement only counts if the exporter really was stuck throughout it.
    assert!(
        !flush.is_finished(),
        "the export was still hanging on the collector while bookings ran"
    );
}
