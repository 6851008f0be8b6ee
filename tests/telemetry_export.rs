//! Traces exported over OTLP to a real receiver, propagated to the MIS, named in error bodies,
//! and RED metrics on the admin listener. One test per binary: telemetry is process-global.

mod support;

use std::time::Duration;

use http::Method;
use mis_gateway::telemetry::{Captured, Export, LogFormat, Telemetry};
use support::otlp::OtlpReceiver;
use support::*;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_is_one_trace_across_gateway_and_mis_and_is_counted() {
    let receiver = OtlpReceiver::spawn(false).await;
    let logs = Captured::default();
    let telemetry = Telemetry::init_with(
        LogFormat::Json,
        logs.clone(),
        Export::To(receiver.traces_url()),
    );

    let mis = MockMis::spawn(echo_mis()).await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    // The MIS sees the same trace; error bodies carry the trace id next to the request id.
    let Traced {
        appointment,
        mis_parent,
        ..
    } = drive_traced(&gw, &mis, TRACE_ID, PARENT_ID).await;

    let t = std::sync::Arc::new(telemetry);
    let flushed = {
        let t = t.clone();
        tokio::task::spawn_blocking(move || t.flush())
    };
    flushed.await.unwrap();
    let ok = eventually(Duration::from_secs(10), || async {
        receiver.spans().iter().any(|s| s.kind == 3)
            && receiver.spans().iter().filter(|s| s.kind == 2).count() >= 3
    })
    .await;
    assert!(ok, "spans exported: {:#?}", receiver.spans());
    let spans = receiver.spans();
    let server = spans
        .iter()
        .find(|s| s.kind == 2 && s.attributes.get("appointment") == Some(&appointment))
        .expect("the booking's server span");
    assert_eq!(server.name, "POST /dir/appointments");
    assert_eq!(server.trace_id, TRACE_ID);
    assert_eq!(server.parent_span_id, PARENT_ID);
    assert_eq!(server.service, "mis-gateway");
    for (k, v) in [
        ("http.request.method", "POST"),
        ("http.route", "/dir/appointments"),
        ("http.response.status_code", "200"),
        ("integrator", "portal"),
        ("lpu", SEED_LPU),
        ("backend", "mis-a"),
        ("outcome", "booked"),
    ] {
        assert_eq!(
            server.attributes.get(k).map(String::as_str),
            Some(v),
            "{k} in {:?}",
            server.attributes
        );
    }
    assert!(server.attributes.contains_key("slot") && server.attributes.contains_key("request_id"));
    let client = spans.iter().find(|s| s.kind == 3).unwrap();
    assert_eq!(client.trace_id, TRACE_ID);
    assert_eq!(
        client.parent_span_id, server.span_id,
        "the MIS call is a child of the request"
    );
    assert_eq!(client.name, "POST");
    assert_eq!(client.attributes["backend"], "mis-a");
    assert_eq!(client.attributes["server.address"], "127.0.0.1");
    assert_eq!(client.attributes["http.response.status_code"], "200");
    assert_eq!(
        mis_parent, client.span_id,
        "traceparent sent to the MIS names the client span"
    );
    let invalid = spans
        .iter()
        .find(|s| {
            s.kind == 2 && s.attributes.get("message_code").map(String::as_str) == Some("94000")
        })
        .unwrap();
    assert_eq!(invalid.attributes["http.response.status_code"], "400");

    // One JSON access-log line per request, with the trace id.
    let access: Vec<serde_json::Value> = logs
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect();
    assert_eq!(access.len(), 3, "{}", logs.text());
    assert_eq!(access[0]["trace_id"], TRACE_ID);
    assert_eq!(access[0]["appointment"], appointment.as_str());
    assert_eq!(access[0]["status"], 200);

    // RED metrics per backend on the admin listener.
    let m = gw.admin(Method::GET, "/metrics").await.text();
    for needle in [
        r#"mis_gateway_requests_total{backend="mis-a",code="ok",integrator="portal",operation="book",status_class="2xx"} 1"#,
        r#"mis_gateway_requests_total{backend="none",code="94000",integrator="portal",operation="book",status_class="4xx"} 2"#,
        r#"mis_gateway_mis_duration_seconds_count{backend="mis-a",operation="book"} 1"#,
        r#"mis_gateway_request_duration_seconds_bucket{backend="mis-a",operation="book",le="+Inf"} 1"#,
        r#"mis_gateway_backend_breaker_state{backend="mis-a"} 0"#,
        r#"mis_gateway_backend_in_flight{backend="mis-a"} 0"#,
        r#"mis_gateway_auth_cache_total{result="miss"} 1"#,
        r#"mis_gateway_config_generation 1"#,
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    tracestate_needs_its_traceparent(&gw, &mis).await;
    a_cancel_is_one_trace_too(&receiver, &t).await;
}

/// A cancellation: a server span named by its route, a client `DELETE` span as its child, and
/// the `cancel` operation on the metrics.
async fn a_cancel_is_one_trace_too(receiver: &OtlpReceiver, t: &std::sync::Arc<Telemetry>) {
    const CANCEL_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4737";
    let mis = MockMis::spawn(cancelling_mis(cancelled_reply())).await;
    let dir = tempfile::tempdir().unwrap();
    let mut toml = config_toml(
        &[BackendSpec::new("mis-c", mis.url())],
        &[(SEED_LPU, "mis-c")],
    );
    toml.push_str(&format!(
        "\n[journal]\npath = \"{}\"\n",
        dir.path().join("journal.db").display()
    ));
    let gw = TestGateway::start(&toml).await;
    let booked = gw.book(&fresh_booking(), PORTAL).await;
    let guid = booked.json()["guid"].as_str().unwrap().to_owned();
    let req = http::Request::delete(gw.url(&format!("/dir/appointments/{guid}")))
        .header(http::header::AUTHORIZATION, basic(PORTAL.0, PORTAL.1))
        .header("traceparent", format!("00-{CANCEL_TRACE}-{PARENT_ID}-01"))
        .body(http_body_util::Full::default())
        .unwrap();
    let r = gw.send(req).await;
    assert_eq!(r.status, http::StatusCode::OK, "{}", r.text());
    let flushed = {
        let t = t.clone();
        tokio::task::spawn_blocking(move || t.flush())
    };
    flushed.await.unwrap();
    let both = eventually(Duration::from_secs(10), || async {
        receiver
            .spans()
            .iter()
            .filter(|s| s.trace_id == CANCEL_TRACE)
            .count()
            >= 2
    })
    .await;
    assert!(both, "spans exported: {:#?}", receiver.spans());
    let spans: Vec<_> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == CANCEL_TRACE)
        .collect();
    let server = spans.iter().find(|s| s.kind == 2).expect("a server span");
    assert_eq!(server.name, "DELETE /dir/appointments/{guid}");
    for (k, v) in [
        ("http.request.method", "DELETE"),
        ("http.route", "/dir/appointments/{guid}"),
        ("http.response.status_code", "200"),
        ("integrator", "portal"),
        ("backend", "mis-c"),
        ("appointment", guid.as_str()),
        ("outcome", "cancelled"),
    ] {
        assert_eq!(
            server.attributes.get(k).map(String::as_str),
            Some(v),
            "{k} in {:?}",
            server.attributes
        );
    }
    let client = spans.iter().find(|s| s.kind == 3).expect("a client span");
    assert_eq!(client.name, "DELETE");
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(client.attributes["http.request.method"], "DELETE");
    let sent = mis
        .received()
        .into_iter()
        .find(|r| r.method == Method::DELETE)
        .unwrap();
    assert!(
        sent.headers["traceparent"]
            .to_str()
            .unwrap()
            .contains(&client.span_id),
        "the MIS's parent is the client span"
    );
    let m = gw.admin(Method::GET, "/metrics").await.text();
    let needle = r#"mis_gateway_requests_total{backend="mis-c",code="ok",integrator="portal",operation="cancel",status_class="2xx"} 1"#;
    assert!(m.contains(needle), "missing {needle} in\n{m}");
}
