//! systemd's notify protocol as `Type=notify` sees it: the binary, run with `NOTIFY_SOCKET` set
//! to a datagram socket the test owns, says READY=1, then RELOADING=1 / READY=1 with a STATUS
//! line around each SIGHUP reload.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;
use tokio::net::UnixDatagram;

/// The datagrams received until one satisfies `done` (at most 30 s), all of them in order.
async fn until(sock: &UnixDatagram, seen: &mut Vec<String>, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no matching notification within 30 s; got {seen:#?}"))
            .unwrap();
        let msg = String::from_utf8(buf[..n].to_vec()).unwrap();
        seen.push(msg.clone());
        if done(&msg) {
            return;
        }
    }
}

fn lines(msg: &str) -> Vec<&str> {
    msg.lines().collect()
}

fn sighup(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP {pid}");
}

/// The message before the last one: the RELOADING=1 of the reload whose READY=1 came last
/// (reloads run one at a time, each sending RELOADING then READY).
fn assert_reloading_before_last(seen: &[String]) {
    let before = &seen[seen.len() - 2];
    let l = lines(before);
    assert_eq!(l[0], "RELOADING=1", "{seen:#?}");
    let usec = l[1]
        .strip_prefix("MONOTONIC_USEC=")
        .expect("MONOTONIC_USEC");
    assert!(usec.parse::<u64>().unwrap() > 0, "{before}");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn ready_then_reloading_ready_and_status_on_each_sighup_reload() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir(&conf_dir).unwrap();
    let config = conf_dir.join("routes.toml");
    let mis = closed_port().await;
    let spec = BackendSpec::new("mis-a", format!("http://{mis}"));
    let good = config_toml(&[spec], &[(SEED_LPU, "mis-a")]);
    write(&config, &good);

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .args(["serve", "--worker-threads", "1", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("MIS_A_PASSWORD", "pw")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut seen = Vec::new();

    until(&sock, &mut seen, |m| m.starts_with("READY=1\n")).await;
    assert_eq!(
        lines(seen.last().unwrap()),
        ["READY=1", "STATUS=generation 1 live"]
    );

    // Nothing changed: the reload says so, and generation 1 stays.
    sighup(pid);
    until(&sock, &mut seen, |m| m.contains("reload (sighup)")).await;
    assert_eq!(
        lines(seen.last().unwrap()),
        [
            "READY=1",
            "STATUS=generation 1 live; reload (sighup) unchanged"
        ]
    );
    assert_reloading_before_last(&seen);

    // A changed, valid file (the watcher may apply it first; SIGHUP then finds it unchanged).
    write(
        &config,
        &good.replace("timezone = \"Europe/Moscow\"", "timezone = \"Asia/Omsk\""),
    );
    until(&sock, &mut seen, |m| {
        m.contains("generation 2 live (sha256 ")
    })
    .await;
    assert!(seen.last().unwrap().starts_with("READY=1\n"));
    assert_reloading_before_last(&seen);

    // A broken file: rejected, with the first problem's place, and generation 2 stays live.
    write(
        &config,
        &good.replace("[routes]", "[routes]\nnot_a_uuid = \"mis-a\""),
    );
    sighup(pid);
    until(&sock, &mut seen, |m| m.contains("reload (sighup) rejected")).await;
    let last = lines(seen.last().unwrap());
    assert_eq!(last[0], "READY=1");
    assert!(
        last[1].starts_with(
            "STATUS=generation 2 live; reload (sighup) rejected: 1 problem(s), first: "
        ),
        "{last:?}"
    );
    assert!(last[1].contains("not_a_uuid"), "{last:?}");
    assert_reloading_before_last(&seen);

    // SIGTERM: STOPPING=1 as the drain starts.
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    until(&sock, &mut seen, |m| m.starts_with("STOPPING=1\n")).await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the gateway exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}
