//! routes.toml edited live: real files, the real watcher, bookings running throughout.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use support::*;

const LIVE_WITHIN: Duration = Duration::from_secs(2);

struct Setup {
    _dir: tempfile::TempDir,
    path: PathBuf,
    a: MockMis,
    b: MockMis,
}

impl Setup {
    async fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        let s = Setup {
            path,
            a: MockMis::spawn(echo_mis()).await,
            b: MockMis::spawn(echo_mis()).await,
            _dir: dir,
        };
        std::fs::write(&s.path, s.toml("mis-a")).unwrap();
        s
    }

    /// Both backends defined; SEED_LPU routed to `target`.
    fn toml(&self, target: &str) -> String {
        config_toml(
            &[
                BackendSpec::new("mis-a", self.a.url()),
                BackendSpec::new("mis-b", self.b.url()),
            ],
            &[(SEED_LPU, target), (OTHER_LPU, "mis-a")],
        )
    }
}

async fn routed_to(gw: &TestGateway) -> String {
    let r = gw
        .admin(Method::GET, &format!("/admin/routes/{SEED_LPU}"))
        .await;
    r.json()["backend"].as_str().unwrap_or_default().to_owned()
}

async fn last_rejected_sha(gw: &TestGateway) -> Option<String> {
    let r = gw.admin(Method::GET, "/admin/config").await;
    r.json()["last_rejected"]["sha256"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn moving_an_lpu_to_another_mis_takes_effect_without_a_restart() {
    let s = Setup::new().await;
    let gw = TestGateway::start_file(&s.path).await;
    assert_eq!(
        gw.book(&fresh_booking(), PORTAL).await.status,
        StatusCode::OK
    );
    assert_eq!((s.a.count(), s.b.count()), (1, 0));

    rename_save(&s.path, &s.toml("mis-b"));
    assert!(
        eventually(LIVE_WITHIN, || async { routed_to(&gw).await == "mis-b" }).await,
        "live within 2 s"
    );
    assert_eq!(
        gw.book(&fresh_booking(), PORTAL).await.status,
        StatusCode::OK
    );
    assert_eq!((s.a.count(), s.b.count()), (1, 1));
    let view = gw.admin(Method::GET, "/admin/config").await.json();
    assert!(view["generation"].as_u64().unwrap() >= 2);
    assert_eq!(
        view["sha256"],
        mis_gateway::config::sha256_hex(s.toml("mis-b").as_bytes())
    );
}

#[tokio::test]
async fn a_rotated_password_file_is_what_the_mis_receives_after_reload() {
    let s = Setup::new().await;
    let secret = s.path.with_file_name("mis-a.secret");
    std::fs::write(&secret, "first-secret\n").unwrap();
    let toml = s.toml("mis-a").replace(
        "password_env = \"MIS_A_PASSWORD\"",
        "password_file = \"mis-a.secret\"",
    );
    std::fs::write(&s.path, &toml).unwrap();
    let gw = TestGateway::start_file(&s.path).await;
    assert_eq!(
        gw.book(&fresh_booking(), PORTAL).await.status,
        StatusCode::OK
    );

    std::fs::write(&secret, "second-secret\n").unwrap();
    let r = gw.admin(Method::POST, "/admin/reload").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let outcome = r.json()["outcome"].as_str().unwrap().to_owned();
    assert!(
        outcome == "applied" || outcome == "unchanged",
        "the watcher may have been first: {outcome}"
    );
    assert_eq!(
        gw.book(&fresh_booking(), PORTAL).await.status,
        StatusCode::OK
    );

    let seen: Vec<String> =
        s.a.received()
            .iter()
            .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
            .collect();
    assert_eq!(
        seen,
        [
            basic("gateway", "first-secret"),
            basic("gateway", "second-secret")
        ]
    );
    assert!(!r.text().contains("second-secret"));
}

/// One edit of the file: how it is written and whether it should go live.
enum Write {
    InPlace(String),
    Rename(String),
}

#[tokio::test]
async fn reloads_under_load_fail_no_booking_reject_every_bad_file_and_apply_every_good_one() {
    let s = Setup::new().await;
    let gw = Arc::new(TestGateway::start_file(&s.path).await);

    // A client books continuously while the file changes underneath.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let booker = {
        let (gw, stop, ok, failed) = (gw.clone(), stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 20_000 {
                n += 1;
                let r = gw.book(&fresh_booking(), PORTAL).await;
                if r.status == StatusCode::OK {
                    &ok
                } else {
                    &failed
                }
                .fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let good = |target: &str| s.toml(target);
    let text = good("mis-a");
    let invalid: Vec<(&str, String)> = vec![
        ("bad TOML", text.replace("[routes]", "[routes")),
        (
            "duplicate LPU",
            format!(
                "{}\"{}\" = \"mis-b\"\n",
                good("mis-b"),
                SEED_LPU.to_uppercase()
            ),
        ),
        ("dangling backend", good("mis-nowhere")),
        (
            "bad URL",
            good("mis-b").replace(&s.b.url(), "ftp://nowhere"),
        ),
        (
            "missing secret",
            good("mis-b").replace("MIS_B_PASSWORD", "UNSET_B_PASSWORD"),
        ),
        (
            "truncated",
            good("mis-b")[..good("mis-b").len() / 2].to_owned(),
        ),
    ];
    let mut expected = "mis-a";
    for (round, (what, bad)) in invalid.into_iter().enumerate() {
        // A bad file: refused, reported, and the last good routing stays.
        let write = if round % 2 == 0 {
            Write::InPlace(bad.clone())
        } else {
            Write::Rename(bad.clone())
        };
        apply(&s.path, write);
        let sha = mis_gateway::config::sha256_hex(bad.as_bytes());
        let seen = eventually(LIVE_WITHIN, || async {
            last_rejected_sha(&gw).await.as_deref() == Some(&sha)
        })
        .await;
        assert!(
            seen,
            "{what}: rejected and visible in /admin/config: {}",
            gw.admin(Method::GET, "/admin/config").await.text()
        );
        assert_eq!(
            routed_to(&gw).await,
            expected,
            "{what}: the last good file stays live"
        );

        // A good file: live within 2 s.
        expected = if expected == "mis-a" {
            "mis-b"
        } else {
            "mis-a"
        };
        let write = if round % 2 == 0 {
            Write::Rename(good(expected))
        } else {
            Write::InPlace(good(expected))
        };
        apply(&s.path, write);
        assert!(
            eventually(LIVE_WITHIN, || async { routed_to(&gw).await == expected }).await,
            "after {what}: the next good file is live within 2 s"
        );
    }
    stop.store(true, Ordering::Relaxed);
    booker.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("bookings during reloads: {ok} ok, {failed} failed");
    assert_eq!(failed, 0, "no booking failed because of a reload");
    assert!(ok > 12, "bookings ran throughout: {ok}");
    assert!(s.a.count() > 0 && s.b.count() > 0);
}

fn apply(path: &Path, write: Write) {
    match write {
        Write::InPlace(text) => std::fs::write(path, text).unwrap(),
        Write::Rename(text) => rename_save(path, &text),
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_kubernetes_style_data_symlink_swap_is_followed() {
    use std::os::unix::fs::symlink;
    let s = Setup::new().await;
    let dir = s.path.parent().unwrap().join("configmap");
    std::fs::create_dir(&dir).unwrap();
    // The kubelet's layout: routes.toml -> ..data/routes.toml, ..data -> ..<timestamp>.
    let version = |n: u32, text: &str| {
        let v = dir.join(format!("..2026_11_29_0{n}"));
        std::fs::create_dir(&v).unwrap();
        std::fs::write(v.join("routes.toml"), text).unwrap();
        v
    };
    let v1 = version(1, &s.toml("mis-a"));
    symlink(&v1, dir.join("..data")).unwrap();
    symlink(dir.join("..data/routes.toml"), dir.join("routes.toml")).unwrap();
    let gw = TestGateway::start_file(&dir.join("routes.toml")).await;
    assert_eq!(routed_to(&gw).await, "mis-a");

    let v2 = version(2, &s.toml("mis-b"));
    symlink(&v2, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();
    assert!(eventually(LIVE_WITHIN, || async { routed_to(&gw).await == "mis-b" }).await);
    assert_eq!(
        gw.book(&fresh_booking(), PORTAL).await.status,
        StatusCode::OK
    );
    assert_eq!(s.b.count(), 1);
}

#[tokio::test]
async fn on_shutdown_readiness_turns_false_and_the_booking_in_flight_completes() {
    let mis = MockMis::spawn(Arc::new(|r: &Received| {
        let reply = (echo_mis())(r);
        reply.after(Duration::from_millis(800))
    }))
    .await;
    let mut gw = TestGateway::in_front_of(&mis, "").await;
    assert_eq!(
        gw.admin(Method::GET, "/readyz").await.status,
        StatusCode::OK
    );

    let client = {
        let url = gw.url("/dir/appointments");
        tokio::spawn(async move {
            let c =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
            let req = booking_request(url, &fresh_booking(), PORTAL);
            c.request(req).await.map(|r| r.status())
        })
    };
    assert!(eventually(Duration::from_secs(5), || async { mis.count() == 1 }).await);
    gw.begin_shutdown();
    assert!(
        eventually(Duration::from_secs(1), || async {
            gw.draining.load(Ordering::SeqCst)
        })
        .await
    );
    assert_eq!(
        gw.admin(Method::GET, "/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        client
            .await
            .unwrap()
            .expect("the in-flight booking is answered"),
        StatusCode::OK
    );
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "the listener stopped accepting"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_quiet_directory_causes_no_reloads() {
    let s = Setup::new().await;
    let gw = TestGateway::start_file(&s.path).await;
    let reloader = gw.reloader.clone().unwrap();
    // The watcher's one catch-up reload, then nothing: reading the file is not a change.
    assert!(
        eventually(Duration::from_secs(2), || async {
            reloader.attempts() >= 1
        })
        .await
    );
    let settled = reloader.attempts();
    tokio::time::sleep(Duration::from_millis(1500)).await; // a quiet period, not a synchronisation
    assert_eq!(reloader.attempts(), settled, "no reload without a change");
    rename_save(&s.path, &s.toml("mis-b"));
    assert!(eventually(LIVE_WITHIN, || async { routed_to(&gw).await == "mis-b" }).await);
}

/// Appends a line to another file in the config's folder at 20 Hz from its own thread until
/// dropped: what a log, a SQLite WAL or an editor's swap file does next to routes.toml.
struct BusyNeighbour {
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BusyNeighbour {
    fn start(file: PathBuf) -> BusyNeighbour {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, writes) = (stop.clone(), writes.clone());
            std::thread::spawn(move || {
                use std::io::Write as _;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&file)
                    .unwrap();
                // Bounded: 20 Hz for at most two minutes, whatever the test does.
                for n in 0..2400 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    writeln!(f, "line {n}").unwrap();
                    f.flush().unwrap();
                    writes.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50)); // the writer's pace, not a synchronisation
                }
            })
        };
        BusyNeighbour {
            stop,
            writes,
            thread: Some(thread),
        }
    }

    fn writes(&self) -> usize {
        self.writes.load(Ordering::Relaxed)
    }
}

impl Drop for BusyNeighbour {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn file_reads(gw: &TestGateway) -> u64 {
    let view = gw.admin(Method::GET, "/admin/config").await.json();
    view["reloads"]["file_reads"]
        .as_u64()
        .unwrap_or_else(|| panic!("/admin/config shows reloads.file_reads: {view}"))
}

/// With `neighbour` busy in the folder of `path` (routed to mis-a): 5 s of its writes cause no
/// read of the config, then `change` (which routes SEED_LPU to mis-b) is live within 2 s, by
/// the admin view and by a booking that reaches mis-b, once.
async fn a_busy_folder_neither_rereads_nor_delays(
    s: &Setup,
    path: &Path,
    neighbour: &BusyNeighbour,
    change: impl FnOnce(),
) {
    let gw = TestGateway::start_file(path).await;
    // The watcher's catch-up reload is the one read expected.
    assert!(
        eventually(Duration::from_secs(2), || async {
            file_reads(&gw).await >= 1
        })
        .await
    );
    let (reads, writes) = (file_reads(&gw).await, neighbour.writes());
    tokio::time::sleep(Duration::from_secs(5)).await; // an observation window, not a synchronisation
    let written = neighbour.writes() - writes;
    assert!(written >= 25, "the neighbour kept writing: {written} lines");
    assert_eq!(
        file_reads(&gw).await - reads,
        0,
        "{written} writes to another file read the config"
    );
    assert_eq!(routed_to(&gw).await, "mis-a");

    change();
    assert!(
        eventually(LIVE_WITHIN, || async { routed_to(&gw).await == "mis-b" }).await,
        "the change is live within 2 s while the neighbour writes (file read {} times since)",
        file_reads(&gw).await - reads
    );
    let r = gw.book(&fresh_booking(), PORTAL).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        (s.a.count(), s.b.count()),
        (0, 1),
        "the booking reached mis-b once"
    );
    assert!(
        neighbour.writes() > writes + written,
        "still writing throughout"
    );
}

#[tokio::test]
async fn a_rename_save_is_live_within_2s_while_another_file_in_the_folder_is_written() {
    let s = Setup::new().await;
    let neighbour = BusyNeighbour::start(s.path.with_file_name("gateway.log"));
    a_busy_folder_neither_rereads_nor_delays(&s, &s.path, &neighbour, || {
        rename_save(&s.path, &s.toml("mis-b"))
    })
    .await;
}

#[tokio::test]
async fn an_in_place_write_is_live_within_2s_while_another_file_in_the_folder_is_written() {
    let s = Setup::new().await;
    let neighbour = BusyNeighbour::start(s.path.with_file_name("journal.db-wal"));
    a_busy_folder_neither_rereads_nor_delays(&s, &s.path, &neighbour, || {
        std::fs::write(&s.path, s.toml("mis-b")).unwrap()
    })
    .await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_data_symlink_swap_is_live_within_2s_while_another_file_in_the_folder_is_written() {
    use std::os::unix::fs::symlink;
    let s = Setup::new().await;
    let dir = s.path.parent().unwrap().join("configmap");
    std::fs::create_dir(&dir).unwrap();
    let version = |n: u32, text: &str| {
        let v = dir.join(format!("..2026_12_06_0{n}"));
        std::fs::create_dir(&v).unwrap();
        std::fs::write(v.join("routes.toml"), text).unwrap();
        v
    };
    let v1 = version(1, &s.toml("mis-a"));
    symlink(&v1, dir.join("..data")).unwrap();
    symlink(dir.join("..data/routes.toml"), dir.join("routes.toml")).unwrap();
    let neighbour = BusyNeighbour::start(dir.join(".routes.toml.swp"));
    a_busy_folder_neither_rereads_nor_delays(&s, &dir.join("routes.toml"), &neighbour, || {
        // The kubelet's swap: a new version folder, a new link renamed over ..data.
        let v2 = version(2, &s.toml("mis-b"));
        symlink(&v2, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        std::fs::remove_dir_all(&v1).unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_replaced_config_folder_is_watched_anew() {
    let s = Setup::new().await;
    let dir = s.path.parent().unwrap().join("conf");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("routes.toml");
    std::fs::write(&path, s.toml("mis-a")).unwrap();
    let gw = TestGateway::start_file(&path).await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            file_reads(&gw).await >= 1
        })
        .await
    );

    // A deployment tool's swap: the new folder is prepared aside, the old one moved away.
    let next = s.path.parent().unwrap().join("conf.next");
    std::fs::create_dir(&next).unwrap();
    std::fs::write(next.join("routes.toml"), s.toml("mis-b")).unwrap();
    std::fs::rename(&dir, s.path.parent().unwrap().join("conf.old")).unwrap();
    std::fs::rename(&next, &dir).unwrap();
    assert!(eventually(LIVE_WITHIN, || async { routed_to(&gw).await == "mis-b" }).await);

    // And the new folder is the one watched: its next edit is live too.
    rename_save(&path, &s.toml("mis-a"));
    assert!(eventually(LIVE_WITHIN, || async { routed_to(&gw).await == "mis-a" }).await);
}

#[tokio::test]
async fn every_reload_logs_its_result_a_fixed_file_clears_last_rejected_and_restarts_are_named() {
    use mis_gateway::telemetry::{Captured, Export, LogFormat, Telemetry};
    let logs = Captured::default();
    let _telemetry = Telemetry::init_with(LogFormat::Json, logs.clone(), Export::Off);
    let s = Setup::new().await;
    // No watcher: each reload below is the one POST /admin/reload asks for.
    let app = mis_gateway::app::App::from_file(s.path.clone(), Arc::new(TestSecrets)).unwrap();
    let gw = TestGateway::start_app(app, false).await;
    let reload = || async {
        let r = gw.admin(Method::POST, "/admin/reload").await;
        r.json()["outcome"].as_str().unwrap_or_default().to_owned()
    };
    // A reload logs before it answers: what it logged is there once the answer is.
    let logged = |words: &str| logs.text().lines().filter(|l| l.contains(words)).count();

    assert_eq!(reload().await, "unchanged");
    assert_eq!(
        logged("configuration unchanged"),
        1,
        "an unchanged reload is logged: {}",
        logs.text()
    );

    std::fs::write(&s.path, s.toml("mis-b").replace("[routes]", "[routes")).unwrap();
    assert_eq!(reload().await, "rejected");
    assert!(last_rejected_sha(&gw).await.is_some());

    let restart = s.toml("mis-b").replace(
        "[server]\nlisten = \"127.0.0.1:0\"\n",
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = 500\ndrain_timeout_ms = 1000\n",
    );
    std::fs::write(&s.path, &restart).unwrap();
    assert_eq!(reload().await, "applied");
    assert_eq!(routed_to(&gw).await, "mis-b");
    let view = gw.admin(Method::GET, "/admin/config").await.json();
    assert!(
        view["last_rejected"].is_null(),
        "a successful reload clears the rejection: {view}"
    );
    assert_eq!(logged("configuration reloaded"), 1, "{}", logs.text());
    assert_eq!(
        logged("reload rejected; the last good configuration stays live"),
        1
    );
    let warning = logs
        .text()
        .lines()
        .find(|l| l.contains("take effect only after a restart"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("a restart warning: {}", logs.text()));
    assert!(
        warning.contains("server.max_connections, server.drain_timeout_ms"),
        "{warning}"
    );

    // A rejection, then the live file put back as it was: unchanged, and no longer rejected.
    std::fs::write(&s.path, "[routes").unwrap();
    assert_eq!(reload().await, "rejected");
    std::fs::write(&s.path, &restart).unwrap();
    assert_eq!(reload().await, "unchanged");
    let view = gw.admin(Method::GET, "/admin/config").await.json();
    assert!(view["last_rejected"].is_null(), "{view}");
}

#[cfg(unix)]
#[tokio::test]
async fn a_config_that_links_into_another_folder_follows_edits_there_and_a_repointed_link() {
    use std::os::unix::fs::symlink;
    let s = Setup::new().await;
    let root = s.path.parent().unwrap();
    // /etc/… -> a checkout elsewhere, as configuration management links it.
    let (etc, checkout) = (root.join("etc"), root.join("checkout"));
    std::fs::create_dir(&etc).unwrap();
    std::fs::create_dir(&checkout).unwrap();
    std::fs::write(checkout.join("routes.toml"), s.toml("mis-a")).unwrap();
    let path = etc.join("routes.toml");
    symlink(checkout.join("routes.toml"), &path).unwrap();
    let gw = TestGateway::start_file(&path).await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            file_reads(&gw).await >= 1
        })
        .await
    );

    std::fs::write(checkout.join("routes.toml"), s.toml("mis-b")).unwrap();
    assert!(
        eventually(LIVE_WITHIN, || async { routed_to(&gw).await == "mis-b" }).await,
        "an edit of the file the link points to is live"
    );

    // The link re-pointed (by rename, atomically) to another file: that one is followed now.
    std::fs::write(checkout.join("routes-v2.toml"), s.toml("mis-a")).unwrap();
    symlink(checkout.join("routes-v2.toml"), etc.join("routes.toml.new")).unwrap();
    std::fs::rename(etc.join("routes.toml.new"), &path).unwrap();
    assert!(eventually(LIVE_WITHIN, || async { routed_to(&gw).await == "mis-a" }).await);
    std::fs::write(checkout.join("routes-v2.toml"), s.toml("mis-b")).unwrap();
    assert!(
        eventually(LIVE_WITHIN, || async { routed_to(&gw).await == "mis-b" }).await,
        "the new target is watched"
    );
    let r = gw.book(&fresh_booking(), PORTAL).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!((s.a.count(), s.b.count()), (0, 1));
}
