//! Without an OTLP exporter (the default), bookings still carry trace context: the MIS gets the
//! integrator's trace, error bodies and the access log name it. Span fields are not recorded
//! then (nothing would read them), so this guards what must survive that shortcut.
//! One test per binary: telemetry is process-global.

mod support;

use mis_gateway::telemetry::{Captured, Export, LogFormat, Telemetry};
use support::*;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_export_the_trace_context_still_reaches_the_mis_the_answer_and_the_log() {
    let logs = Captured::default();
    let _telemetry = Telemetry::init_with(LogFormat::Json, logs.clone(), Export::Off);
    assert!(!mis_gateway::telemetry::exporting());

    let mis = MockMis::spawn(echo_mis()).await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    let traced = drive_traced(&gw, &mis, TRACE_ID, PARENT_ID).await;
    assert_ne!(
        traced.mis_parent, PARENT_ID,
        "the gateway's own span is the MIS's parent"
    );
    let own = traced.own_trace;

    let text = logs.text();
    let access: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect();
    assert_eq!(access.len(), 3, "one access line per request");
    assert_eq!(access[0]["trace_id"], TRACE_ID);
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[2]["trace_id"], own.as_str());
    tracestate_needs_its_traceparent(&gw, &mis).await;
}
