//! B9: distinctive canary values in every patient and doctor field travel through success and
//! every error path; none of them — nor any password or backend secret — may appear in logs,
//! exported spans, the metrics page or an error body. One test per binary: telemetry is global.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Full;
use mis_gateway::telemetry::{Captured, Export, LogFormat, Telemetry};
use support::fault::{Fault, FaultMis};
use support::otlp::OtlpReceiver;
use support::*;

const CANARIES: &[&str] = &[
    "CanaryFamilyQx",
    "CanaryNameQx",
    "CanaryPatronymicQx",
    "79990001122",
    "CanaryAddressQx",
    "9876543210123456",
    "CanSerQx",
    "CanaryDoc778899",
    "Cn77Qx",
    "CanaryDiagnosisQx",
    "Z99.8",
    "CanaryReasonQx",
    "CanaryDoctorQx",
    "CanaryDirNumberQx",
];

fn canary_booking() -> String {
    seed_with(|v| {
        let p = &mut v["patient"];
        p["family"] = "CanaryFamilyQx".into();
        p["name"] = "CanaryNameQx".into();
        p["patronymic"] = "CanaryPatronymicQx".into();
        p["phone"] = "79990001122".into();
        p["address"] = "CanaryAddressQx".into();
        p["polis"]["number"] = "9876543210123456".into();
        p["polis"]["series"] = "CanSerQx".into();
        p["identityDocument"]["number"] = "CanaryDoc778899".into();
        p["identityDocument"]["series"] = "Cn77Qx".into();
        v["docSender"]["family"] = "CanaryDoctorQx".into();
        v["direction"]["reason"] = "CanaryReasonQx".into();
        v["direction"]["number"] = "CanaryDirNumberQx".into();
        v["direction"]["diagnosis"]["code"] = "Z99.8".into();
        v["direction"]["diagnosis"]["name"] = "CanaryDiagnosisQx".into();
        v["slot"] = uuid::Uuid::new_v4().to_string().into();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_canary_reaches_logs_spans_metrics_or_error_bodies() {
    let receiver = OtlpReceiver::spawn(false).await;
    let logs = Captured::default();
    let telemetry = Arc::new(Telemetry::init_with(
        LogFormat::Json,
        logs.clone(),
        Export::To(receiver.traces_url()),
    ));

    let ok_mis = MockMis::spawn(echo_mis()).await;
    let reject_mis = MockMis::spawn(always(Reply::exception(
        400,
        "The slot is already taken",
        "4002",
    )))
    .await;
    let hang_mis = FaultMis::spawn(Fault::Hang).await;
    let reset_mis = FaultMis::spawn(Fault::ResetAfterRequest).await;
    let down = closed_port().await;
    let lpu = |i: u32| format!("00000000-0000-4000-8000-00000000000{i}");
    let toml = config_toml(
        &[
            BackendSpec::new("mis-ok", ok_mis.url()),
            BackendSpec::new("mis-reject", reject_mis.url()),
            BackendSpec::new("mis-hang", hang_mis.url())
                .extra("timeout_ms = 300\nconnect_timeout_ms = 100"),
            BackendSpec::new("mis-reset", reset_mis.url()),
            BackendSpec::new("mis-down", format!("http://{down}")),
        ],
        &[
            (SEED_LPU, "mis-ok"),
            (&lpu(1), "mis-reject"),
            (&lpu(2), "mis-hang"),
            (&lpu(3), "mis-reset"),
            (&lpu(4), "mis-down"),
            (OTHER_LPU, "mis-ok"),
        ],
    );
    let gw = TestGateway::start(&toml).await;
    let to = |lpu: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&canary_booking()).unwrap();
        v["direction"]["lpuToGuid"] = lpu.into();
        v.to_string()
    };
    let post = |body: String, who: (&str, &str), key: Option<&str>, ct: &str| {
        let mut r = Request::post(gw.url("/dir/appointments"))
            .header(header::CONTENT_TYPE, ct)
            .header(header::AUTHORIZATION, basic(who.0, who.1));
        if let Some(k) = key {
            r = r.header("idempotency-key", k);
        }
        r.body(Full::new(Bytes::from(body))).unwrap()
    };

    let mut error_bodies = Vec::new();
    let mut statuses = Vec::new();
    let cases: Vec<Request<Full<Bytes>>> = vec![
        post(to(SEED_LPU), PORTAL, None, "application/json"), // 200
        post(to(&lpu(1)), PORTAL, None, "application/json"),  // 400 from the MIS
        post(to(&lpu(2)), PORTAL, None, "application/json"),  // 504
        post(to(&lpu(3)), PORTAL, None, "application/json"),  // 502 outcome unknown
        post(to(&lpu(4)), PORTAL, None, "application/json"),  // 502 unreachable
        post(to(UNROUTED_LPU), PORTAL, None, "application/json"), // 404
        post(to(OTHER_LPU), CALLCENTRE, None, "application/json"), // 403
        post(to(SEED_LPU), ("portal", "wrong"), None, "application/json"), // 401
        post(to(SEED_LPU), PORTAL, None, "text/plain"),       // 415
        post(
            to(SEED_LPU).replace("\"slot\"", "\"slot\": 5, \"x\""),
            PORTAL,
            None,
            "application/json",
        ), // 400 validation
        post(
            to(SEED_LPU).replace("CanaryFamilyQx\"", "CanaryFamilyQx"),
            PORTAL,
            None,
            "application/json",
        ), // 400 syntax
        post(
            format!("{}{}", to(SEED_LPU), " ".repeat(70_000)),
            PORTAL,
            None,
            "application/json",
        ), // 413
        post(
            to(SEED_LPU),
            PORTAL,
            Some("canary-key-1"),
            "application/json",
        ), // 200, then replay
        post(
            to(SEED_LPU),
            PORTAL,
            Some("canary-key-1"),
            "application/json",
        ), // 422 (new slot)
    ];
    for req in cases {
        let r = gw.send(req).await;
        statuses.push(r.status.as_u16());
        if !r.status.is_success() {
            error_bodies.push(r.text());
        }
    }
    statuses.sort();
    statuses.dedup();
    assert_eq!(
        statuses,
        [200, 400, 401, 403, 404, 413, 415, 422, 502, 504],
        "every path was driven"
    );
    // Before authentication too: a TLS client's SNI carrying patient data (an illegal name,
    // which rustls's own log would quote) reaches no log.
    let pki = support::pki::Pki::new("hub test CA");
    let dir = tempfile::tempdir().unwrap();
    let path = support::pki::tls_routes(&pki, dir.path(), ok_mis.url(), "");
    let tls_gw = TestGateway::start_file(&path).await;
    for _ in 0..3 {
        sni_hello(
            tls_gw.addr,
            "CanaryFamilyQx CanaryNameQx polis 9876543210123456",
        )
        .await;
    }
    tls_gw.shutdown().await;

    let metrics = gw.admin(Method::GET, "/metrics").await.text();
    let flushed = {
        let t = telemetry.clone();
        tokio::task::spawn_blocking(move || t.flush())
    };
    flushed.await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            receiver.spans().len() >= 14
        })
        .await
    );

    let spans = String::from_utf8_lossy(&receiver.raw()).into_owned();
    let logs = logs.text();
    assert!(
        logs.lines()
            .filter(|l| l.contains("\"target\":\"access\""))
            .count()
            >= 14,
        "{logs}"
    );
    let secrets = [
        "portal-pw".to_owned(),
        basic(PORTAL.0, PORTAL.1),
        "pw-MIS_OK_PASSWORD".to_owned(),
        backend_auth("MIS_OK_PASSWORD"),
        "canary-key-1".to_owned(),
    ];
    for (what, text) in [
        ("logs", &logs),
        ("spans", &spans),
        ("metrics", &metrics),
        ("error bodies", &error_bodies.join("\n")),
    ] {
        for c in CANARIES
            .iter()
            .copied()
            .chain(secrets.iter().map(String::as_str))
        {
            assert!(!text.contains(c), "{c} found in {what}");
        }
    }
    assert!(
        spans.contains("mis-ok") && logs.contains("mis-reject"),
        "the sinks did receive technical data"
    );
}

/// Sends a TLS 1.3 ClientHello whose server_name extension holds `name` (not a valid DNS name)
/// and reads until the server closes or answers: what an attacker's raw client would do.
async fn sni_hello(addr: std::net::SocketAddr, name: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let name = name.as_bytes();
    let mut ext = Vec::new();
    // server_name: one host_name entry.
    let entry_len = 3 + name.len();
    ext.extend_from_slice(&[0x00, 0x00]);
    ext.extend_from_slice(&((entry_len + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(entry_len as u16).to_be_bytes());
    ext.push(0x00);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    // supported_versions: TLS 1.3; supported_groups: x25519; signature_algorithms: rsa_pss_rsae_sha256.
    ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d]);
    ext.extend_from_slice(&[0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x08, 0x04]);
    // key_share: an x25519 share (its bytes need not be a real key to be parsed).
    ext.extend_from_slice(&[0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]);
    ext.extend_from_slice(&[9u8; 32]);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(&record).await.unwrap();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
}
