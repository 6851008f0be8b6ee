//! `mis-gateway healthcheck`, the distroless image's HEALTHCHECK: it asks the admin listener's
//! `/readyz` and exits 0 only on a 200.

mod support;

use std::sync::atomic::Ordering;

use support::*;

async fn healthcheck(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .arg("healthcheck")
        .args(args)
        .env_remove("MIS_GATEWAY_HEALTHCHECK_ADDR")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn healthy_while_ready_unhealthy_while_draining_or_unreachable() {
    let mis = clinic_mis("MIS_A_PASSWORD", "Europe/Moscow").await;
    let gw = TestGateway::in_front_of(&mis, "").await;
    let admin = gw.admin_addr.to_string();

    let (ok, stdout, _) = healthcheck(&["--addr", &admin]).await;
    assert!(ok, "ready: exit 0");
    assert_eq!(stdout.trim(), format!("http://{admin}/readyz: 200"));

    // 0.0.0.0 (what a container's admin.listen says) is probed on loopback.
    let any = admin.replace("127.0.0.1", "0.0.0.0");
    assert!(healthcheck(&["--addr", &any]).await.0);

    // Draining: /readyz answers 503, and the check fails saying so.
    gw.draining.store(true, Ordering::SeqCst);
    let (ok, _, stderr) = healthcheck(&["--addr", &admin]).await;
    assert!(!ok, "draining: exit 1");
    assert!(stderr.contains("/readyz: 503"), "{stderr}");
    gw.draining.store(false, Ordering::SeqCst);

    // Nothing listening: the message names the address.
    let closed = closed_port().await.to_string();
    let (ok, _, stderr) = healthcheck(&["--addr", &closed, "--timeout-ms", "2000"]).await;
    assert!(!ok);
    assert!(stderr.contains(&closed), "{stderr}");
    gw.shutdown().await;
}
