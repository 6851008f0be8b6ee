//! The booking journal on SQLite: every outcome recorded without patient data (raw db and WAL
//! bytes searched), records kept across a restart, the resolve loop through the idempotency
//! store with per-slot MIS counts, the admin API's refusals, the gauge, the CLI, and a
//! journal that cannot be written leaving every answer as it was.

mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use support::journal::*;
use support::*;

fn sqlite_journal(dir: &std::path::Path) -> String {
    format!("path = \"{}\"", dir.join("journal.db").display())
}

fn raw_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal.db"))
        // SQLite removes the -wal and -shm files when the last connection closes: one listed
        // a moment ago may be gone (its pages are in the db file then).
        .filter_map(|e| {
            let bytes = match std::fs::read(e.path()) {
                Ok(bytes) => bytes,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
                Err(err) => panic!("{}: {err}", e.path().display()),
            };
            Some((e.file_name().to_string_lossy().into_owned(), bytes))
        })
        .collect()
}

#[tokio::test]
async fn every_outcome_is_journaled_without_patient_data_and_a_restart_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let mis = SweepMis::spawn().await;
    let toml = sweep_toml(&mis, &sqlite_journal(dir.path()));
    let gw = TestGateway::start(&toml).await;
    let sent = sweep(&gw, "one").await;
    assert_eq!(sent.len(), 9);

    // Booked and unknown records are durable before their answers: no waiting needed.
    let records = all_records(&gw).await;
    for s in sent
        .iter()
        .filter(|s| matches!(s.outcome, "booked" | "unknown"))
    {
        assert!(
            records
                .iter()
                .any(|r| r["requestId"] == s.request_id.as_str()),
            "{s:?} was answered before its record was written"
        );
    }
    // The rest follow within moments.
    assert!(
        eventually(Duration::from_secs(5), || async {
            all_records(&gw).await.len() == sent.len()
        })
        .await
    );
    let records = all_records(&gw).await;
    assert_journaled(&records, &sent);
    let booked = records.iter().find(|r| r["outcome"] == "booked").unwrap();
    assert!(booked["appointment"]["guid"].is_string());
    assert_eq!(booked["appointment"]["number"], "1");
    assert_eq!(booked["backend"], "mis-books");
    assert_eq!(booked["integrator"], "portal");
    assert_eq!(booked["lpu"], LPU_BOOKS);
    assert_eq!(
        booked["directionGuid"],
        "2d793f84-26c9-496d-bd64-745095eb1f80"
    );
    assert!(booked["keyHash"].as_str().is_some_and(|h| h.len() == 64));
    let rejected = records.iter().find(|r| r["outcome"] == "rejected").unwrap();
    assert_eq!(
        (
            rejected["misStatus"].clone(),
            rejected["messageCode"].clone()
        ),
        (json!(409), json!("4002"))
    );
    let unknown = records.iter().find(|r| r["outcome"] == "unknown").unwrap();
    assert_eq!(unknown["messageCode"], "95022");
    assert!(unknown["resolution"].is_null());

    // The files as they are on disk while the gateway runs (the WAL holds the recent pages).
    let running = raw_files(dir.path());
    assert!(
        running.iter().any(|(name, _)| name == "journal.db-wal"),
        "the journal runs in WAL mode: {:?}",
        running.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert!(running.iter().map(|(_, b)| b.len()).sum::<usize>() > 0);
    for (name, bytes) in &running {
        assert_eq!(canaries_in(bytes), Vec::<&str>::new(), "in {name}");
    }
    // The record's own identifiers are there, so the search looked at the right bytes.
    assert!(
        running
            .iter()
            .any(|(_, b)| b.windows(36).any(|w| w == sent[0].request_id.as_bytes()))
    );

    gw.shutdown().await;
    for (name, bytes) in raw_files(dir.path()) {
        assert_eq!(canaries_in(&bytes), Vec::<&str>::new(), "in {name}");
    }

    // A new process on the same file: every record is there, and new ones join them.
    let gw = TestGateway::start(&toml).await;
    let again = all_records(&gw).await;
    assert_journaled(&again, &sent);
    let more = sweep(&gw, "two").await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            all_records(&gw).await.len() == sent.len() + more.len()
        })
        .await
    );
    assert_journaled(&all_records(&gw).await, &more);
    let unknown_only = admin(&gw, Method::GET, "/admin/journal?outcome=unknown", None).await;
    assert_eq!(unknown_only.json()["records"].as_array().unwrap().len(), 2);
    let by_backend = admin(
        &gw,
        Method::GET,
        "/admin/journal?backend=mis-rejects&integrator=portal",
        None,
    )
    .await;
    assert_eq!(by_backend.json()["records"].as_array().unwrap().len(), 2);
    let future = admin(
        &gw,
        Method::GET,
        "/admin/journal?since=2999-01-01T00:00:00Z",
        None,
    )
    .await;
    assert_eq!(future.json()["records"], json!([]));
    gw.shutdown().await;
    for (name, bytes) in raw_files(dir.path()) {
        assert_eq!(canaries_in(&bytes), Vec::<&str>::new(), "in {name}");
    }
}

#[tokio::test]
async fn a_resolved_unknown_replays_its_booking_or_lets_the_retry_reach_the_mis_once() {
    let dir = tempfile::tempdir().unwrap();
    let mis = SweepMis::spawn().await;
    let gw = TestGateway::start(&sweep_toml(&mis, &sqlite_journal(dir.path()))).await;

    // Two bookings whose answers are lost: the MIS reset after reading each.
    let first = canary_booking(LPU_RESETS);
    let second = canary_booking(LPU_RESETS);
    let mut ids = Vec::new();
    for (body, key) in [(&first, "loop-1"), (&second, "loop-2")] {
        let r = gw
            .send(post(&gw, body, PORTAL, Some(key), "application/json"))
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_GATEWAY, "95022")
        );
        ids.push(r.headers["x-request-id"].to_str().unwrap().to_owned());
    }
    // Until resolved, a retry replays "unknown" without reaching the MIS.
    let r = gw
        .send(post(
            &gw,
            &first,
            PORTAL,
            Some("loop-1"),
            "application/json",
        ))
        .await;
    assert_eq!(r.code(), "95022");
    assert_eq!(mis.resets.count(&slot_of(&first)), 1);

    let open = admin(
        &gw,
        Method::GET,
        "/admin/journal?outcome=unknown&unresolved=true",
        None,
    )
    .await;
    assert_eq!(open.json()["records"].as_array().unwrap().len(), 2);

    // The clinic says the first was booked.
    let guid = "6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b";
    let resolved = admin(
        &gw,
        Method::POST,
        &format!("/admin/journal/{}/resolve", ids[0]),
        Some(json!({"booked": true, "guid": guid, "number": "A-17", "note": "ticket OPS-1"})),
    )
    .await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.text());
    let rec = resolved.json();
    assert_eq!(rec["requestId"], ids[0].as_str());
    assert_eq!(rec["resolution"]["booked"], true);
    assert_eq!(rec["resolution"]["guid"], guid);
    assert_eq!(rec["resolution"]["number"], "A-17");
    assert_eq!(rec["resolution"]["via"], "admin");

    let replay = gw
        .send(post(
            &gw,
            &first,
            PORTAL,
            Some("loop-1"),
            "application/json",
        ))
        .await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.text());
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    let a = replay.json();
    assert_eq!(a["guid"], guid);
    assert_eq!(a["number"], "A-17");
    assert_eq!(a["slot"], slot_of(&first).as_str());
    assert_eq!(a["source"], "Internet");
    // The resolution's time, in the clinic's zone (UTC+5).
    let created: jiff::Timestamp = a["createTime"].as_str().unwrap().parse().unwrap();
    let resolved_at: jiff::Timestamp = rec["resolution"]["time"].as_str().unwrap().parse().unwrap();
    assert!((created.as_second() - resolved_at.as_second()).abs() <= 1);
    assert!(a["createTime"].as_str().unwrap().ends_with("+05:00"));
    let sent: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(a["direction"], sent["direction"]);
    assert_eq!(
        mis.resets.count(&slot_of(&first)),
        1,
        "the MIS was not called again"
    );

    // A resolved record cannot be resolved again.
    let twice = admin(
        &gw,
        Method::POST,
        &format!("/admin/journal/{}/resolve", ids[0]),
        Some(json!({"booked": false})),
    )
    .await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert!(twice.json()["error"].is_string());

    // The gauge counts the one still open, by backend.
    let metrics = gw.admin(Method::GET, "/metrics").await.text();
    assert!(
        metrics.contains("mis_gateway_journal_unknown_unresolved{backend=\"mis-resets\"} 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("journal"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The clinic has no booking for the second: the key is released, the retry is sent once.
    let released = admin(
        &gw,
        Method::POST,
        &format!("/admin/journal/{}/resolve", ids[1]),
        Some(json!({"booked": false})),
    )
    .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.text());
    assert_eq!(released.json()["resolution"]["booked"], false);
    let retry = gw
        .send(post(
            &gw,
            &second,
            PORTAL,
            Some("loop-2"),
            "application/json",
        ))
        .await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text());
    assert!(!retry.headers.contains_key("idempotent-replayed"));
    assert_eq!(
        mis.resets.count(&slot_of(&second)),
        2,
        "the first attempt and one retry"
    );
    let again = gw
        .send(post(
            &gw,
            &second,
            PORTAL,
            Some("loop-2"),
            "application/json",
        ))
        .await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(mis.resets.count(&slot_of(&second)), 2);

    let metrics = gw.admin(Method::GET, "/metrics").await.text();
    assert!(!metrics.contains("mis_gateway_journal_unknown_unresolved{backend=\"mis-resets\"} 1"));
    gw.shutdown().await;
}

#[tokio::test]
async fn the_admin_journal_needs_the_token_and_names_what_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let mis = SweepMis::spawn().await;
    let gw = TestGateway::start(&sweep_toml(&mis, &sqlite_journal(dir.path()))).await;
    let booked = gw
        .send(post(
            &gw,
            &canary_booking(LPU_BOOKS),
            PORTAL,
            None,
            "application/json",
        ))
        .await;
    assert_eq!(booked.status, StatusCode::OK);
    let id = booked.headers["x-request-id"].to_str().unwrap().to_owned();

    for path in ["/admin/journal", &format!("/admin/journal/{id}")] {
        assert_eq!(
            gw.admin(Method::GET, path).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let shown = admin(&gw, Method::GET, &format!("/admin/journal/{id}"), None).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.json()["outcome"], "booked");

    let missing = uuid::Uuid::now_v7();
    let r = admin(&gw, Method::GET, &format!("/admin/journal/{missing}"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["error"].is_string());
    let r = admin(
        &gw,
        Method::POST,
        &format!("/admin/journal/{missing}/resolve"),
        Some(json!({"booked": false})),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // A booked record is not unknown.
    let r = admin(
        &gw,
        Method::POST,
        &format!("/admin/journal/{id}/resolve"),
        Some(json!({"booked": false})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    let cases = [
        (json!({}), "booked"),
        (json!({"booked": true, "number": "1"}), "guid"),
        (
            json!({"booked": true, "guid": "CanaryNameQx", "number": "1"}),
            "guid",
        ),
        (
            json!({"booked": true, "guid": "6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b"}),
            "number",
        ),
        (json!({"booked": false, "note": "a\nb"}), "note"),
        (json!({"booked": false, "patient": "x"}), "body"),
    ];
    for (body, field) in cases {
        let r = admin(
            &gw,
            Method::POST,
            &format!("/admin/journal/{id}/resolve"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(r.json()["field"], field, "{body}");
        assert!(!r.text().contains("CanaryNameQx"));
    }
    for (query, field) in [
        ("outcome=lost", "outcome"),
        ("limit=5000", "limit"),
        ("since=yesterday", "since"),
        ("until=CanaryNameQx", "until"),
        ("cursor=nope", "cursor"),
        ("colour=red", "query"),
    ] {
        let r = admin(&gw, Method::GET, &format!("/admin/journal?{query}"), None).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(r.json()["field"], field, "{query}");
        assert!(!r.text().contains("CanaryNameQx"));
    }
    let r = admin(&gw, Method::GET, "/admin/journal/not-an-id", None).await;
    assert_eq!(
        (r.status, r.json()["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("requestId"))
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn by_default_a_journal_that_cannot_be_written_refuses_bookings_unsent_and_records_the_refusals()
 {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-yet");
    let mis = SweepMis::spawn().await;
    let gw = TestGateway::start(&sweep_toml(&mis, &sqlite_journal(&missing))).await;
    let ready = gw.admin(Method::GET, "/readyz").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.text()
    );
    assert!(ready.text().contains("journal"), "{}", ready.text());

    // Nothing reaches the MIS without a durable attempt: keyed and keyless bookings are
    // refused unsent, and say when to come back.
    let mut refused = Vec::new();
    for key in [Some("refused-key"), None] {
        let body = canary_booking(LPU_BOOKS);
        let r = gw
            .send(post(&gw, &body, PORTAL, key, "application/json"))
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "95030".into())
        );
        assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
        assert_eq!(mis.books.count(), 0, "not sent");
        refused.push(r.headers["x-request-id"].to_str().unwrap().to_owned());
    }

    // Once the database can be written, bookings go through, and the refusals are on record.
    std::fs::create_dir(&missing).unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            gw.admin(Method::GET, "/readyz").await.status == StatusCode::OK
        })
        .await
    );
    let body = canary_booking(LPU_BOOKS);
    let r = gw
        .send(post(
            &gw,
            &body,
            PORTAL,
            Some("refused-key"),
            "application/json",
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(mis.books.count(), 1);
    assert!(
        eventually(Duration::from_secs(10), || async {
            let records = all_records(&gw).await;
            refused.iter().all(|id| {
                records.iter().any(|r| {
                    r["requestId"] == id.as_str()
                        && r["outcome"] == "not_sent"
                        && r["messageCode"] == "95030"
                })
            })
        })
        .await
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn with_on_error_book_a_journal_that_cannot_be_written_leaves_every_answer_as_it_was_and_catches_up()
 {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-yet");
    let mis = SweepMis::spawn().await;
    let journal = format!("{}\non_error = \"book\"", sqlite_journal(&missing));
    let gw = TestGateway::start(&sweep_toml(&mis, &journal)).await;
    let errors_before = journal_write_errors(&gw).await;

    // The folder does not exist: every write fails, every answer is what it would be.
    let sent = sweep(&gw, "down").await;
    assert_eq!(sent.len(), 9);
    assert!(journal_write_errors(&gw).await > errors_before);
    let r = admin(&gw, Method::GET, "/admin/journal", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // The journal is never a reason to resend: an unknown booking's retry is replayed, and
    // its slot reached the MIS once.
    let lost = canary_booking(LPU_RESETS);
    for _ in 0..2 {
        let r = gw
            .send(post(
                &gw,
                &lost,
                PORTAL,
                Some("down-key"),
                "application/json",
            ))
            .await;
        assert_eq!(r.code(), "95022");
    }
    assert_eq!(mis.resets.count(&slot_of(&lost)), 1);

    // Once it can be written, the kept records arrive.
    std::fs::create_dir(&missing).unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            let r = admin(&gw, Method::GET, "/admin/journal?limit=100", None).await;
            r.status == StatusCode::OK
                && r.json()["records"].as_array().unwrap().len() == sent.len() + 2
        })
        .await
    );
    assert_journaled(&all_records(&gw).await, &sent);
    gw.shutdown().await;
}

async fn journal_write_errors(gw: &TestGateway) -> u64 {
    let text = gw.admin(Method::GET, "/metrics").await.text();
    text.lines()
        .find(|l| l.starts_with("mis_gateway_journal_write_errors"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test]
async fn the_ops_cli_lists_shows_resolves_and_exports_through_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let mis = SweepMis::spawn().await;
    let gw = TestGateway::start(&sweep_toml(&mis, &sqlite_journal(dir.path()))).await;
    let sent = sweep(&gw, "cli").await;
    let unknown = sent.iter().find(|s| s.outcome == "unknown").unwrap();
    let routes = dir.path().join("routes.toml");
    std::fs::write(
        &routes,
        format!(
            "[admin]\nlisten = \"{}\"\ntoken_env = \"CLI_TOKEN\"\n",
            gw.admin_addr
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let routes = routes.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
                .arg("journal")
                .arg("--config")
                .arg(&routes)
                .args(&args)
                .env("CLI_TOKEN", admin_token())
                .output()
                .await
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            all_records(&gw).await.len() == sent.len()
        })
        .await
    );

    let (ok, out, err) = cli(&[
        "list",
        "--outcome",
        "unknown",
        "--backend",
        "mis-resets",
        "--since",
        "2h",
    ])
    .await;
    assert!(ok, "{err}");
    assert!(out.contains(&unknown.request_id), "{out}");
    assert_eq!(out.lines().count(), 2, "a header and the one record: {out}");

    let (ok, out, err) = cli(&["show", &unknown.request_id]).await;
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["outcome"], "unknown");

    let (ok, _, err) = cli(&["resolve", &unknown.request_id, "--number", "5"]).await;
    assert!(!ok, "--number without --booked is refused: {err}");
    let (ok, out, err) = cli(&[
        "resolve",
        &unknown.request_id,
        "--not-booked",
        "--note",
        "OPS-2",
    ])
    .await;
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["resolution"]["booked"], false);
    assert_eq!(r["resolution"]["note"], "OPS-2");
    let (ok, _, err) = cli(&["resolve", &unknown.request_id, "--not-booked"]).await;
    assert!(!ok);
    assert!(err.contains("409"), "{err}");

    let (ok, out, err) = cli(&["export", "--format", "jsonl", "--since", "1d"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), sent.len());
    for line in out.lines() {
        let _: serde_json::Value = serde_json::from_str(line).unwrap();
    }
    let (ok, out, err) = cli(&["export", "--format", "csv"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), sent.len() + 1);
    assert!(out.starts_with("requestId,time,integrator,"));
    assert_eq!(canaries_in(out.as_bytes()), Vec::<&str>::new());

    // Without the token the admin listener refuses, and the CLI says so.
    std::fs::write(
        &routes,
        format!("[admin]\nlisten = \"{}\"\n", gw.admin_addr),
    )
    .unwrap();
    let (ok, _, err) = cli(&["list"]).await;
    assert!(!ok);
    assert!(err.contains("401"), "{err}");
    gw.shutdown().await;
}

#[test]
fn the_journal_section_is_validated_with_locations() {
    let toml = |journal: &str| {
        format!(
            "{}\n[journal]\n{journal}\n",
            config_toml(
                &[BackendSpec::new("mis-a", "http://127.0.0.1:9".into())],
                &[(SEED_LPU, "mis-a")]
            )
        )
    };
    let base = std::path::Path::new("/etc/mis-gateway");
    let c = mis_gateway::config::Config::from_bytes(
        toml("path = \"journal.db\"").as_bytes(),
        base,
        &TestSecrets,
    )
    .unwrap();
    let j = c.journal.unwrap();
    assert_eq!(j.retention, Duration::from_secs(90 * 86_400));
    assert_eq!(
        j.store,
        mis_gateway::config::JournalStore::Sqlite(base.join("journal.db"))
    );
    let at = |journal: &str| -> Vec<String> {
        config_problems(&toml(journal))
            .into_iter()
            .map(|p| p.location)
            .collect()
    };
    assert_eq!(
        at("path = \"j.db\"\nurl = \"postgres://u@h/d\""),
        ["journal"]
    );
    assert_eq!(
        at("retention_days = 0\npath = \"j.db\""),
        ["journal.retention_days"]
    );
    assert_eq!(at("path = \"j.db\"\nsize = 1"), ["journal"]);
    assert_eq!(at("url = \"mysql://u@h/d\""), ["journal.url"]);
    assert_eq!(
        at("url = \"postgres://u@h/d\"\nsynchronous = \"normal\""),
        ["journal.synchronous"]
    );
    assert_eq!(
        at("path = \"j.db\"\nsynchronous = \"off\""),
        ["journal.synchronous"]
    );
    assert_eq!(at("url = \"postgres://u:secret@h/d\""), ["journal.url"]);
    assert!(
        !format!(
            "{:?}",
            config_problems(&toml("url = \"postgres://u:secret@h/d\""))
        )
        .contains("secret")
    );
    assert_eq!(
        at("url = \"postgres://u@h/d\"\npassword_file = \"/nonexistent/pw\""),
        ["journal.password_file"]
    );
    let c = mis_gateway::config::Config::from_bytes(
        toml("url = \"postgres://gw@127.0.0.1:5432/journal\"\npassword_env = \"PGPW\"\nretention_days = 7").as_bytes(),
        base,
        &TestSecrets,
    )
    .unwrap();
    let j = c.journal.unwrap();
    assert_eq!(j.retention, Duration::from_secs(7 * 86_400));
    assert!(
        !format!("{j:?}").contains("pw-PGPW"),
        "the password never shows in Debug"
    );
    let mis_gateway::config::JournalStore::Postgres(pg) = j.store else {
        panic!("a PostgreSQL journal");
    };
    assert_eq!(pg.get_password(), Some(&b"pw-PGPW"[..]));
}

/// On by default: a file without `[journal]` has `journal.db` beside it; `enabled = false` is the
/// explicit opt-out, and `check` says what it costs; `on_error` takes `refuse` (the default) or
/// `book`. A config that comes from no file (embedding) has no journal unless it names one.
#[test]
fn the_journal_is_on_by_default_beside_the_file_and_off_only_when_said() {
    use mis_gateway::config::{Config, JournalStore, OnJournalError};
    let body = config_toml(
        &[BackendSpec::new("mis-a", "http://127.0.0.1:9".into())],
        &[(SEED_LPU, "mis-a")],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.toml");
    let c = Config::from_file_bytes(body.as_bytes(), &file, &TestSecrets).unwrap();
    let j = c.journal.expect("on by default");
    assert_eq!(j.store, JournalStore::Sqlite(dir.path().join("journal.db")));
    assert_eq!(j.on_error, OnJournalError::Refuse);
    assert!(j.fsync, "synchronous = full by default");
    assert!(
        Config::from_bytes(body.as_bytes(), dir.path(), &TestSecrets)
            .unwrap()
            .journal
            .is_none()
    );

    let off = format!("{body}\n[journal]\nenabled = false\n");
    let c = Config::from_file_bytes(off.as_bytes(), &file, &TestSecrets).unwrap();
    assert!(c.journal.is_none());
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("journal is off") && w.contains("forgets")),
        "{:?}",
        c.warnings
    );
    let book = format!("{body}\n[journal]\non_error = \"book\"\n");
    let c = Config::from_file_bytes(book.as_bytes(), &file, &TestSecrets).unwrap();
    assert_eq!(c.journal.unwrap().on_error, OnJournalError::Book);
    let bad = format!("{body}\n[journal]\non_error = \"drop\"\npath = \"j.db\"\n");
    let problems = Config::from_file_bytes(bad.as_bytes(), &file, &TestSecrets).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].location, "journal.on_error");

    // `mis-gateway check` prints the warning.
    std::fs::write(&file, &off).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
        .args(["check", "--no-secrets", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("warning: the booking journal is off"),
        "{text}"
    );
}
