//! The booking journal on a real PostgreSQL (started by the test): two gateways write one
//! journal at once, a restart keeps every record, every row holds no canary, and the password
//! from password_env / password_file is what lets the gateway in.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use support::journal::*;
use support::postgres::Postgres;
use support::*;

/// `TestSecrets` resolves `password_env = "PGPW"` to this.
const PASSWORD: &str = "pw-PGPW";

async fn booked_ids(gw: Arc<TestGateway>, n: usize) -> Vec<String> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let r = gw
                    .send(post(
                        &gw,
                        &canary_booking(LPU_BOOKS),
                        PORTAL,
                        None,
                        "application/json",
                    ))
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text());
                r.headers["x-request-id"].to_str().unwrap().to_owned()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_postgres_journal_and_no_row_holds_patient_data() {
    let pg = Postgres::start();
    pg.create_db("gateway", PASSWORD, "journal").await;
    let dir = tempfile::tempdir().unwrap();
    let pwfile = dir.path().join("journal-password");
    std::fs::write(&pwfile, format!("{PASSWORD}\n")).unwrap();
    let url = pg.url("gateway", "journal");
    let mis = SweepMis::spawn().await;
    let by_env = sweep_toml(&mis, &format!("url = \"{url}\"\npassword_env = \"PGPW\""));
    let by_file = sweep_toml(
        &mis,
        &format!("url = \"{url}\"\npassword_file = \"{}\"", pwfile.display()),
    );
    let one = Arc::new(TestGateway::start(&by_env).await);
    let two = Arc::new(TestGateway::start(&by_file).await);

    // Both replicas book at once; both migrate the empty database on their first write.
    let (a, b) = tokio::join!(booked_ids(one.clone(), 40), booked_ids(two.clone(), 40));
    let sent = sweep(&one, "pg").await;

    // Booked records are durable before their answers: every one is there at once.
    let db = pg.connect("postgres", "pg-test-superuser", "journal").await;
    let ids: Vec<String> = db
        .query("SELECT request_id FROM journal", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for id in a.iter().chain(&b) {
        assert!(
            ids.contains(id),
            "{id} answered 200 before its record was committed"
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            all_records(&one).await.len() == 80 + sent.len()
        })
        .await
    );
    // Each replica reads what the other wrote.
    let seen_by_two = all_records(&two).await;
    assert_eq!(seen_by_two.len(), 80 + sent.len());
    assert_journaled(&seen_by_two, &sent);
    let per_integrator: i64 = db
        .query_one("SELECT COUNT(DISTINCT request_id) FROM journal", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(per_integrator, 80 + sent.len() as i64);
    let migrations: i64 = db
        .query_one("SELECT COUNT(*) FROM journal_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(migrations, 4, "each schema version was applied once");

    // Every row of every table in the journal's database, as text: no canary.
    let tables: Vec<String> = db
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.contains(&"journal".to_owned()));
    let mut text = String::new();
    for t in &tables {
        for row in db
            .query(&format!("SELECT row_to_json(t)::text FROM {t} t"), &[])
            .await
            .unwrap()
        {
            text.push_str(row.get::<_, &str>(0));
            text.push('\n');
        }
    }
    assert!(text.contains(&sent[0].request_id));
    assert_eq!(canaries_in(text.as_bytes()), Vec::<&str>::new());

    // Resolving on one replica is seen by the other.
    let unknown = sent.iter().find(|s| s.outcome == "unknown").unwrap();
    let r = admin(
        &two,
        Method::POST,
        &format!("/admin/journal/{}/resolve", unknown.request_id),
        Some(serde_json::json!({"booked": false})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = admin(
        &one,
        Method::GET,
        &format!("/admin/journal/{}", unknown.request_id),
        None,
    )
    .await;
    assert_eq!(r.json()["resolution"]["booked"], false);

    // Restart: every record is still there.
    Arc::try_unwrap(one).ok().unwrap().shutdown().await;
    Arc::try_unwrap(two).ok().unwrap().shutdown().await;
    let three = TestGateway::start(&by_env).await;
    let after = all_records(&three).await;
    assert_eq!(after.len(), 80 + sent.len());
    assert_journaled(&after, &sent);
    three.shutdown().await;
}

#[tokio::test]
async fn the_journal_logs_in_with_the_configured_password_only() {
    let pg = Postgres::start();
    pg.create_db("gateway", PASSWORD, "journal").await;
    let mis = SweepMis::spawn().await;
    let url = pg.url("gateway", "journal");
    let wrong = TestGateway::start(&sweep_toml(
        &mis,
        &format!("url = \"{url}\"\npassword_env = \"NOT_THE_PASSWORD\""),
    ))
    .await;
    // The journal cannot be read or written: the booking is refused unsent (its attempt
    // cannot be made durable), and nothing says the password.
    let r = wrong
        .send(post(
            &wrong,
            &canary_booking(LPU_BOOKS),
            PORTAL,
            None,
            "application/json",
        ))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "95030".into())
    );
    assert_eq!(mis.books.count(), 0);
    let list = admin(&wrong, Method::GET, "/admin/journal", None).await;
    assert_eq!(list.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!list.text().contains("NOT_THE_PASSWORD"));
    wrong.shutdown().await;

    let right = TestGateway::start(&sweep_toml(
        &mis,
        &format!("url = \"{url}\"\npassword_env = \"PGPW\""),
    ))
    .await;
    let r = right
        .send(post(
            &right,
            &canary_booking(LPU_BOOKS),
            PORTAL,
            None,
            "application/json",
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let list = admin(&right, Method::GET, "/admin/journal", None).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text());
    assert_eq!(list.json()["records"].as_array().unwrap().len(), 1);
    right.shutdown().await;
}

/// RELIABILITY M3 on PostgreSQL: the whole server stopped (SIGSTOP) for 6 s under load. No
/// booking is answered 200 without its record once it is back; bookings that cannot be
/// journaled meanwhile are refused unsent (503 `95030`) within the attempt's bound, and the admin
/// API answers 503 within a second instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m3_a_stopped_postgres_refuses_bookings_unsent_and_loses_no_booked_record() {
    let pg = Postgres::start();
    pg.create_db("gateway", PASSWORD, "journal").await;
    let mis = SweepMis::spawn().await;
    let url = pg.url("gateway", "journal");
    let gw = Arc::new(
        TestGateway::start(&sweep_toml(
            &mis,
            &format!("url = \"{url}\"\npassword_env = \"PGPW\""),
        ))
        .await,
    );
    // Warm: the writer and the reader have their connections.
    assert_eq!(booked_ids(gw.clone(), 4).await.len(), 4);
    assert_eq!(
        admin(&gw, Method::GET, "/admin/journal", None).await.status,
        StatusCode::OK
    );

    pg.signal_all("STOP");
    let stopped_at = std::time::Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (gw, stop) = (gw.clone(), stop.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let key = (c % 2 == 0).then(|| format!("m3pg-{c}-{i}"));
                    let t = std::time::Instant::now();
                    let r = gw
                        .send(post(
                            &gw,
                            &canary_booking(LPU_BOOKS),
                            PORTAL,
                            key.as_deref(),
                            "application/json",
                        ))
                        .await;
                    let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
                    got.push((r.status, r.code(), id, t.elapsed()));
                    i += 1;
                }
                got
            })
        })
        .collect();
    // The admin API while the database hangs: a prompt 503, never a hung page.
    let t = std::time::Instant::now();
    let list = admin(&gw, Method::GET, "/admin/journal", None).await;
    let took = t.elapsed();
    assert_eq!(
        list.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        list.text()
    );
    // Its bound is one second; 1.5 s more is the margin for a loaded 2-core machine.
    assert!(took < Duration::from_millis(2500), "the read took {took:?}");
    // Readiness turns false once a commit outlasts the attempt's bound (1 s).
    assert!(
        eventually(Duration::from_secs(4), || async {
            gw.admin(Method::GET, "/readyz").await.status == StatusCode::SERVICE_UNAVAILABLE
        })
        .await,
        "a hung journal takes the replica out of rotation"
    );
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(stopped_at.elapsed())).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    pg.signal_all("CONT");
    let mut answers = Vec::new();
    for c in clients {
        answers.extend(c.await.unwrap());
    }
    let refused = answers
        .iter()
        .filter(|a| a.0 == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert!(
        refused > 0,
        "a stopped journal refuses bookings: {answers:?}"
    );
    for (status, code, _, took) in &answers {
        match *status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(code, "95030");
                // The attempt's bound is one second; 1.5 s of margin on a loaded machine.
                assert!(
                    *took < Duration::from_millis(2500),
                    "refused after {took:?}"
                );
            }
            other => panic!("{other}: {code}"),
        }
    }
    let sent = mis.books.count();

    // Back: every 200 has its booked record, every refusal its not_sent one; the MIS saw only
    // what was answered 200 (and the warm-up).
    let ok: Vec<&String> = answers
        .iter()
        .filter(|a| a.0 == StatusCode::OK)
        .map(|a| &a.2)
        .collect();
    assert_eq!(sent, 4 + ok.len(), "nothing refused reached the MIS");
    assert!(
        eventually(Duration::from_secs(30), || async {
            let r = admin(&gw, Method::GET, "/admin/journal?limit=1000", None).await;
            if r.status != StatusCode::OK {
                return false;
            }
            let records = r.json()["records"].as_array().unwrap().clone();
            answers.iter().all(|(status, _, id, _)| {
                let want = if *status == StatusCode::OK {
                    "booked"
                } else {
                    "not_sent"
                };
                records
                    .iter()
                    .any(|r| r["requestId"] == id.as_str() && r["outcome"] == want)
            })
        })
        .await,
        "every answer of the stop has its record once PostgreSQL is back"
    );
    Arc::try_unwrap(gw).ok().unwrap().shutdown().await;
}
