//! Trace export to an https:// collector, configured only by the OpenTelemetry spec's
//! variables: the gateway (`mis-gateway demo`, a process of its own, as telemetry is global)
//! trusts the collector through OTEL_EXPORTER_OTLP_CERTIFICATE, and OTEL_RESOURCE_ATTRIBUTES'
//! service.name and OTEL_EXPORTER_OTLP_PROTOCOL win over the gateway's defaults.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::demo::DemoProcess;
use support::otlp::OtlpReceiver;
use support::pki::Pki;

#[tokio::test]
async fn spans_reach_an_https_collector_trusted_by_the_standard_variables() {
    let pki = Pki::new("collector CA");
    let leaf = pki.leaf(&["127.0.0.1"]);
    let receiver = OtlpReceiver::spawn_tls(Pki::server_config(&leaf, None)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("collector-ca.pem");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let ca = ca.to_str().unwrap();
    let endpoint = receiver.base_url();
    assert!(endpoint.starts_with("https://"));

    for (protocol, content_type, service) in [
        ("http/protobuf", "application/x-protobuf", "clinic-hub-gw"),
        ("http/json", "application/json", "clinic-hub-gw-json"),
    ] {
        let attributes = format!("service.name={service},deployment.environment=test");
        let before = receiver.content_types().len();
        let mut demo = DemoProcess::start(
            &["--worker-threads", "1"],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_RESOURCE_ATTRIBUTES", &attributes),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ],
        )
        .await;
        assert_eq!(demo.book().await.0, StatusCode::OK, "{protocol}");
        let exported = support::eventually(Duration::from_secs(30), || async {
            receiver.content_types().len() > before
        })
        .await;
        assert!(exported, "{protocol}: no export reached the TLS collector");
        assert_eq!(receiver.content_types()[before], content_type, "{protocol}");
        if protocol == "http/protobuf" {
            // The client span may be exported a batch before its server span (it ends first).
            support::eventually(Duration::from_secs(30), || async {
                receiver
                    .spans()
                    .iter()
                    .any(|s| s.name == "POST /dir/appointments")
            })
            .await;
            let spans = receiver.spans();
            let booking = spans
                .iter()
                .find(|s| s.name == "POST /dir/appointments")
                .unwrap_or_else(|| panic!("the booking's server span in {spans:#?}"));
            assert_eq!(booking.service, service, "OTEL_RESOURCE_ATTRIBUTES wins");
        } else {
            let raw = String::from_utf8_lossy(&receiver.raw()).into_owned();
            assert!(raw.contains(service), "the JSON export names {service}");
        }
        demo.child.kill().await.unwrap();
    }
}
