//! A refused placement call is said once, at start, with the errno: the binary run under a
//! seccomp filter that refuses sched_setaffinity with EPERM, as a unit's SystemCallFilter=
//! would (the filter is installed by python3-seccomp, then the gateway is exec'd).

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::*;
use tokio::io::AsyncReadExt;

/// Execs argv[1..] with sched_setaffinity refused (EPERM).
const REFUSE_AFFINITY: &str = r#"
import os, sys, seccomp
f = seccomp.SyscallFilter(seccomp.ALLOW)
f.add_rule(seccomp.ERRNO(1), "sched_setaffinity")
f.load()
os.execv(sys.argv[1], sys.argv[1:])
"#;

#[tokio::test]
async fn pin_workers_under_a_filter_that_refuses_it_warns_once_with_the_errno() {
    let has_seccomp = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import seccomp"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_seccomp,
        "this test needs python3-seccomp (apt-get install python3-seccomp; .ci/run installs it)"
    );
    let mis = clinic_mis("MIS_A_PASSWORD", "Europe/Moscow").await;
    let api = closed_port().await;
    let spec = BackendSpec::new("mis-a", mis.url());
    let toml = config_toml(&[spec], &[(SEED_LPU, "mis-a")]).replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{api}\""),
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.toml");
    std::fs::write(&config, toml).unwrap();

    let mut child = tokio::process::Command::new("/usr/bin/python3")
        .args(["-c", REFUSE_AFFINITY, env!("CARGO_BIN_EXE_mis-gateway")])
        .args([
            "serve",
            "--pin-workers",
            "--worker-threads",
            "2",
            "--config",
        ])
        .arg(&config)
        .env("MIS_A_PASSWORD", "pw-MIS_A_PASSWORD")
        .env("RUST_LOG", "warn")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // A booking answered: the workers are up (they start before the first connection).
    let booked = eventually(Duration::from_secs(30), || async {
        let req = booking_request(
            format!("http://{api}/dir/appointments"),
            &fresh_booking(),
            PORTAL,
        );
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        client
            .request(req)
            .await
            .is_ok_and(|r| r.status() == http::StatusCode::OK)
    })
    .await;
    assert!(booked, "the gateway serves with its workers unpinned");
    child.start_kill().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let _ = child.wait().await;

    let refused: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("sched_setaffinity was refused"))
        .collect();
    assert_eq!(refused.len(), 1, "one warning for both workers:\n{stderr}");
    let line = refused[0];
    assert!(line.contains("errno=1"), "{line}");
    assert!(line.contains("Operation not permitted"), "{line}");
    assert!(
        line.contains("[1, 2]"),
        "names the workers left unpinned: {line}"
    );
}
