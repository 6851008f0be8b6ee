//! The gateway's memory survives what kills the gateway (RELIABILITY.md M1–M3, M5): the real
//! binary, started from a routes.toml with no `[journal]` section (so the SQLite journal is
//! `journal.db` beside it) and the default memory key store, killed with SIGKILL under keyed
//! load and restarted on the same folder, starved of the journal's write lock by another
//! connection, and robbed of its journal files while it runs. Mock MIS servers in this process
//! count every request per slot; the journal is read through the admin API.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use support::journal::{ADMIN_TOKEN_ENV, admin_token};
use support::*;

/// Concurrent clients of the kill test.
const CLIENTS: usize = 16;
/// Kills of the kill test (then one last restart).
const ROUNDS: usize = 3;
/// At most this many bookings per round: the kill, not the budget, normally ends a round.
const PER_ROUND: usize = 1200;
/// How long one request may take before the client gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the test holds the journal's write lock.
const HOLD: Duration = Duration::from_millis(4500);
/// Refusals when the journal cannot take an attempt come at the gateway's bound (~2 s), well
/// before the lock is released.
const REFUSED_WITHIN: Duration = Duration::from_secs(4);

/// The MIS answers a valid booking after 0–30 ms, so most kills land while bookings are there.
/// Every key is unique; after three kills and a last restart on the same journal, every slot
/// the MIS saw has a journal record, every 200 a client got has its booked record, and every
/// key retried once with its body reaches the MIS at most once in all: completed keys replay
/// their appointment, keys lost with the process replay or answer `95022`, keys the MIS never
/// saw are sent now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m1_m2_kill_9_under_keyed_load_leaves_no_booking_unrecorded_and_no_key_sent_twice() {
    let started = Instant::now();
    let mis = MockMis::spawn(jittered_echo(Duration::from_millis(30))).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = node_toml(&mis, "");
    let db = dir.path().join("journal.db");
    let mut ledger: Vec<Booking> = Vec::new();

    for round in 0..ROUNDS {
        let mut node = Node::start(dir.path(), &toml, Stdio::null()).await;
        assert!(
            eventually(Duration::from_secs(10), || async { db.exists() }).await,
            "no [journal] section: the journal is journal.db beside routes.toml"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let budget = Arc::new(AtomicUsize::new(PER_ROUND));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                tokio::spawn(keyed_load(
                    node.http.clone(),
                    node.booking_url(),
                    format!("m1-r{round}-c{c}"),
                    stop.clone(),
                    budget.clone(),
                ))
            })
            .collect();
        // Load runs for a while (not a synchronisation: any moment will do), then SIGKILL.
        let run_for = Duration::from_millis(300 + random_below(500));
        tokio::time::sleep(run_for).await;
        stop.store(true, Ordering::SeqCst);
        node.kill().await;
        let before = ledger.len();
        for c in clients {
            ledger.extend(c.await.unwrap());
        }
        let round_ledger = &ledger[before..];
        eprintln!(
            "M1 round {round}: killed after {run_for:?}, {} bookings sent, {} answered",
            round_ledger.len(),
            round_ledger.iter().filter(|b| b.answer.is_some()).count()
        );
    }

    // The last restart, on the same folder and journal.
    let node = Node::start(dir.path(), &toml, Stdio::null()).await;
    let seen_before = mis_slots(&mis);
    let lost_at_mis = ledger
        .iter()
        .filter(|b| b.answer.is_none() && seen_before.contains_key(&b.slot))
        .count();
    assert!(
        lost_at_mis > 0,
        "the kills landed while bookings were at the MIS (else this test proves nothing)"
    );
    // (a) every slot the MIS saw is journaled; (b) every 200 has its booked record.
    let gaps = settled_gaps(&node, &seen_before, &ledger, false, Duration::from_secs(20)).await;
    assert_none("M1 after the last restart", &gaps);

    // (c) every key retried once, with its own body.
    let records = node.records().await.expect("the journal lists");
    let booked_guid: HashMap<String, String> = records
        .iter()
        .filter(|r| r["outcome"] == "booked")
        .filter_map(|r| {
            Some((
                record_slot(r)?,
                r["appointment"]["guid"].as_str()?.to_ascii_lowercase(),
            ))
        })
        .collect();
    let retries = retry_every_key(&node, &ledger).await;
    let seen_after = mis_slots(&mis);
    let mut problems = Vec::new();
    for (b, retry) in ledger.iter().zip(&retries) {
        let key = b.key.as_deref().unwrap_or_default();
        let before = seen_before.get(&b.slot).copied().unwrap_or(0);
        let after = seen_after.get(&b.slot).copied().unwrap_or(0);
        if after > 1 {
            problems.push(format!(
                "key {key}: slot {} reached the MIS {after} times",
                b.slot
            ));
        }
        let Some(r) = retry else {
            problems.push(format!("key {key}: the retry got no answer"));
            continue;
        };
        match b.answer.as_ref().filter(|a| a.status == StatusCode::OK) {
            Some(first) => {
                if !(r.status == StatusCode::OK && r.replayed && r.guid == first.guid) {
                    problems.push(format!(
                        "key {key}: answered 200 {:?} before the restart, its retry got {r:?}",
                        first.guid
                    ));
                }
            }
            None => {
                let fine = if r.status == StatusCode::OK && r.replayed {
                    before == 1 && r.guid.is_some() && booked_guid.get(&b.slot) == r.guid.as_ref()
                } else if r.status == StatusCode::OK {
                    before == 0 && after == 1
                } else {
                    r.code == "95022" && after == before
                };
                if !fine {
                    problems.push(format!(
                        "key {key}: first answer {:?}, MIS saw its slot {before} time(s) before the \
                         retry and {after} after; the retry got {r:?}",
                        b.answer
                    ));
                }
            }
        }
    }
    assert_none("M2 same-key retries after the restart", &problems);
    let duplicates: Vec<String> = seen_after
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(slot, n)| format!("slot {slot} reached the MIS {n} times"))
        .collect();
    assert_none("M2 at most once per slot", &duplicates);

    // The retries' own records, and the slots sent just now, are journaled too.
    let retried: Vec<Booking> = ledger
        .iter()
        .zip(&retries)
        .map(|(b, r)| Booking {
            answer: r.clone(),
            ..b.clone()
        })
        .collect();
    let gaps = settled_gaps(&node, &seen_after, &retried, true, Duration::from_secs(20)).await;
    assert_none("M1 after the retries", &gaps);
    eprintln!(
        "M1/M2: {} keyed bookings over {ROUNDS} kills, {} answered, {lost_at_mis} lost at the MIS \
         by a kill, MIS requests {}, duplicates 0, {:?}",
        ledger.len(),
        ledger.iter().filter(|b| b.answer.is_some()).count(),
        mis.count(),
        started.elapsed()
    );
}

/// Another SQLite connection holds the journal's write lock for 4.5 s while 8 clients book
/// (fresh keys, same-key replays and unkeyed bookings): each booking is answered 200 within a
/// bound or refused with 503 `95030` and `Retry-After` at the gateway's own bound (never sent
/// while its attempt cannot be committed), admin reads still answer, and once the lock is
/// released every request is journaled, every 200 with its booked (or replayed) record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m3_a_held_sqlite_write_lock_refuses_or_waits_and_never_answers_200_unrecorded() {
    let mis = MockMis::spawn(echo_mis()).await;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &node_toml(&mis, ""), Stdio::null()).await;
    let db = dir.path().join("journal.db");
    let warm = exchange(
        &node.http,
        booking_request(node.booking_url(), &fresh_booking(), PORTAL),
        REQUEST_TIMEOUT,
    )
    .await
    .expect("the gateway answers");
    assert_eq!(warm.status, StatusCode::OK, "{}", warm.text());
    assert!(
        eventually(Duration::from_secs(10), || async { db.exists() }).await,
        "no [journal] section: the journal is journal.db beside routes.toml"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(AtomicUsize::new(4000));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            tokio::spawn(mixed_load(
                node.http.clone(),
                node.booking_url(),
                format!("m3-c{c}"),
                stop.clone(),
                budget.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel::<Instant>();
    let holder = std::thread::spawn({
        let db = db.clone();
        move || hold_write_lock(&db, HOLD, locked_tx)
    });
    let locked_at = locked_rx
        .await
        .expect("the test takes the journal's write lock");
    let read_started = Instant::now();
    let read = exchange(
        &node.http,
        admin_get(node.admin, "/admin/journal?limit=1"),
        Duration::from_secs(5),
    )
    .await;
    let read_took = read_started.elapsed();
    let released_at = tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut ledger = Vec::new();
    for c in clients {
        ledger.extend(c.await.unwrap());
    }
    assert!(
        read.is_some() && read_took < Duration::from_secs(2),
        "an admin read during the lock answers within a bound: {:?} after {read_took:?}",
        read.map(|r| r.status)
    );

    let mut problems = Vec::new();
    let mut refused_in_lock = 0;
    for b in &ledger {
        let Some(a) = &b.answer else {
            problems.push(format!("no answer: {b:?}"));
            continue;
        };
        let answered_at = b.sent_at + a.took;
        match (a.status, a.code.as_str()) {
            (StatusCode::OK, _) => {
                if a.took > HOLD + Duration::from_secs(3) {
                    problems.push(format!("a 200 waited {:?}: {b:?}", a.took));
                }
                // Its attempt could not have been committed: it must not have been sent.
                if !a.replayed && b.sent_at > locked_at && answered_at < released_at {
                    problems.push(format!(
                        "booked while the journal could not take its attempt: {b:?}"
                    ));
                }
            }
            (StatusCode::SERVICE_UNAVAILABLE, "95030") => {
                if !a.retry_after {
                    problems.push(format!("a 503 without Retry-After: {b:?}"));
                }
                if a.took > REFUSED_WITHIN {
                    problems.push(format!("refused only after {:?}: {b:?}", a.took));
                }
                if b.sent_at >= locked_at && b.sent_at < released_at {
                    refused_in_lock += 1;
                }
            }
            _ => problems.push(format!("neither 200 nor 503 95030: {b:?}")),
        }
    }
    assert_none("M3 answers while the journal was locked", &problems);
    assert!(
        refused_in_lock > 0,
        "bookings that cannot be journaled are refused (503 95030); {} requests, none refused",
        ledger.len()
    );

    let seen = mis_slots(&mis);
    let duplicates: Vec<String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(slot, n)| format!("slot {slot} reached the MIS {n} times"))
        .collect();
    assert_none("M3 at most once per slot", &duplicates);
    let gaps = settled_gaps(&node, &seen, &ledger, true, Duration::from_secs(30)).await;
    assert_none("M3 after the lock was released", &gaps);
    eprintln!(
        "M3: {} requests, {} answered 200, {} refused 95030 ({refused_in_lock} sent during the \
         lock), MIS requests {}, duplicates 0",
        ledger.len(),
        ledger
            .iter()
            .filter(|b| b
                .answer
                .as_ref()
                .is_some_and(|a| a.status == StatusCode::OK))
            .count(),
        ledger
            .iter()
            .filter(|b| b.answer.as_ref().is_some_and(|a| a.code == "95030"))
            .count(),
        mis.count()
    );
}

/// `journal.db`, `-wal` and `-shm` deleted under a running gateway: within seconds it logs an
/// ERROR naming the deleted or replaced journal and counts it on `/metrics`, and every booking
/// after that is in the file recreated at the same path (read back through the admin API and
/// found in the new file's own bytes).
#[tokio::test]
async fn m5_deleting_the_journal_under_a_running_gateway_is_detected_and_nothing_after_is_lost() {
    let mis = MockMis::spawn(echo_mis()).await;
    let dir = tempfile::tempdir().unwrap();
    // The log lives in a folder of its own: the gateway watches routes.toml's folder.
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("gateway.stderr");
    let stderr = std::fs::File::create(&log).unwrap();
    let node = Node::start(dir.path(), &node_toml(&mis, ""), Stdio::from(stderr)).await;
    let db = dir.path().join("journal.db");

    let before = book_unkeyed(&node, 50).await;
    assert_none("M5 before the delete", &not_booked(&before));
    assert!(
        db.exists(),
        "no [journal] section: the journal is journal.db beside routes.toml"
    );
    let gaps = settled_gaps(
        &node,
        &HashMap::new(),
        &before,
        true,
        Duration::from_secs(10),
    )
    .await;
    assert_none("M5 before the delete", &gaps);

    let deleted_at = Instant::now();
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.path().join(format!("journal.db{suffix}"));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    let logged = eventually(Duration::from_secs(10), || async {
        replaced_error_logged(&log)
    })
    .await;
    assert!(
        logged,
        "an ERROR names the deleted journal within 10 s; the log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let counted = eventually(
        Duration::from_secs(10).saturating_sub(deleted_at.elapsed()),
        || async {
            node.metric("mis_gateway_journal_file_replaced_total")
                .await
                .is_some_and(|v| v >= 1.0)
        },
    )
    .await;
    assert!(
        counted,
        "mis_gateway_journal_file_replaced_total >= 1 within 10 s of the delete"
    );

    let after = book_unkeyed(&node, 50).await;
    assert_none("M5 after the delete", &not_booked(&after));
    assert!(db.exists(), "journal.db is recreated at its path");
    let gaps = settled_gaps(
        &node,
        &HashMap::new(),
        &after,
        true,
        Duration::from_secs(15),
    )
    .await;
    assert_none("M5 bookings after the delete", &gaps);
    // In the file now at the path, not an unlinked inode the listing happens to read.
    let on_disk = journal_bytes(dir.path());
    let missing: Vec<String> = after
        .iter()
        .filter_map(|b| b.answer.as_ref())
        .filter(|a| !on_disk.contains(&a.request_id))
        .map(|a| format!("{} is not in the new journal.db or its WAL", a.request_id))
        .collect();
    assert_none("M5 records in the new file", &missing);
}

/// A keyed booking held at the MIS when the gateway is killed: after the restart its
/// write-ahead attempt is one `unknown` record (`95022`, with a reason), and a same-key retry
/// answers `95022` without reaching the MIS again.
#[tokio::test]
async fn m1_an_attempt_at_the_mis_when_killed_becomes_unknown_at_restart_and_its_retry_is_never_resent()
 {
    let mis = MockMis::spawn(slow_echo(Duration::from_secs(30))).await;
    let dir = tempfile::tempdir().unwrap();
    // A resend would be answered 504 after 3 s rather than hang the test for 30.
    let toml = node_toml(&mis, "timeout_ms = 3000");
    let mut node = Node::start(dir.path(), &toml, Stdio::null()).await;
    let body = fresh_booking();
    let slot = slot_in(&body);
    let key = "m1-held-at-the-mis";
    let first = {
        let (http, req) = (node.http.clone(), keyed_at(node.booking_url(), &body, key));
        tokio::spawn(async move {
            exchange(&http, req, REQUEST_TIMEOUT)
                .await
                .map(|r| r.status)
        })
    };
    assert!(
        eventually(Duration::from_secs(10), || async { mis.count() == 1 }).await,
        "the booking reached the MIS"
    );
    let sent_id = mis.received()[0]
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    node.kill().await;
    assert_eq!(
        first.await.unwrap(),
        None,
        "the killed gateway's client got no answer"
    );

    let node = Node::start(dir.path(), &toml, Stdio::null()).await;
    let listed = eventually(Duration::from_secs(15), || async {
        node.records()
            .await
            .is_some_and(|r| r.iter().any(|x| record_slot(x).as_deref() == Some(&*slot)))
    })
    .await;
    assert!(listed, "the attempt became a record at the restart");
    let records = node.records().await.expect("the journal lists");
    let mine: Vec<&Value> = records
        .iter()
        .filter(|r| record_slot(r).as_deref() == Some(&*slot))
        .collect();
    assert_eq!(mine.len(), 1, "one record for the slot: {mine:#?}");
    let rec = mine[0];
    assert_eq!(rec["outcome"], "unknown", "{rec}");
    assert_eq!(rec["messageCode"], "95022", "{rec}");
    assert!(
        rec["reason"].as_str().is_some_and(|s| !s.trim().is_empty()),
        "the record says why it is unknown: {rec}"
    );
    assert!(rec["keyHash"].is_string(), "a keyed booking: {rec}");
    if let Some(id) = &sent_id {
        assert_eq!(
            record_id(rec).as_deref(),
            Some(id.as_str()),
            "the record is the request the MIS got"
        );
    }

    for _ in 0..2 {
        let r = exchange(
            &node.http,
            keyed_at(node.booking_url(), &body, key),
            REQUEST_TIMEOUT,
        )
        .await
        .map(|r| Answer::of(&r, Duration::ZERO))
        .expect("the restarted gateway answers");
        assert_eq!(
            (r.status, r.code.as_str()),
            (StatusCode::BAD_GATEWAY, "95022"),
            "{r:?}"
        );
    }
    assert_eq!(mis_slots(&mis).get(&slot), Some(&1), "never sent again");
    assert_eq!(mis.count(), 1);
}

/// A cancellation held at the MIS when the gateway is killed: its write-ahead attempt becomes an
/// `unknown` cancel record at the restart (its booking still booked as far as the hub knows),
/// and an operator's `cancelled: true` then marks the booking cancelled.
#[tokio::test]
async fn m1_a_cancel_at_the_mis_when_killed_becomes_unknown_at_restart() {
    let mis = MockMis::spawn(cancelling_mis(
        cancelled_reply().after(Duration::from_secs(30)),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = node_toml(&mis, "");
    let mut node = Node::start(dir.path(), &toml, Stdio::null()).await;
    let booked = exchange(
        &node.http,
        keyed_at(node.booking_url(), &fresh_booking(), "m1-cancel"),
        REQUEST_TIMEOUT,
    )
    .await
    .expect("booked");
    assert_eq!(booked.status, StatusCode::OK);
    let booking_id = Answer::of(&booked, Duration::ZERO).request_id;
    let guid = Answer::of(&booked, Duration::ZERO).guid.expect("a guid");
    let appointment_url = format!("http://{}/dir/appointments/{guid}", node.api);
    let cancel = |url: &str, method: http::Method| {
        Request::builder()
            .method(method)
            .uri(url)
            .header(header::AUTHORIZATION, basic(PORTAL.0, PORTAL.1))
            .body(Full::default())
            .unwrap()
    };
    let first = {
        let (http, req) = (
            node.http.clone(),
            cancel(&appointment_url, http::Method::DELETE),
        );
        tokio::spawn(async move {
            exchange(&http, req, REQUEST_TIMEOUT)
                .await
                .map(|r| r.status)
        })
    };
    assert!(
        eventually(Duration::from_secs(10), || async { mis.count() == 2 }).await,
        "the cancel reached the MIS"
    );
    node.kill().await;
    assert_eq!(
        first.await.unwrap(),
        None,
        "the killed gateway answered nothing"
    );

    let node = Node::start(dir.path(), &toml, Stdio::null()).await;
    let appointment_url = format!("http://{}/dir/appointments/{guid}", node.api);
    let mut cancels = Vec::new();
    let listed = eventually(Duration::from_secs(15), || async {
        node.records().await.is_some_and(|r| {
            r.iter()
                .any(|x| x["operation"] == "cancel" && x["outcome"] == "unknown")
        })
    })
    .await;
    assert!(
        listed,
        "the cancel's attempt became a record at the restart"
    );
    for r in node.records().await.unwrap() {
        if r["operation"] == "cancel" {
            cancels.push(r);
        }
    }
    assert_eq!(cancels.len(), 1, "{cancels:#?}");
    let rec = &cancels[0];
    assert_eq!(rec["outcome"], "unknown");
    assert_eq!(rec["messageCode"], "95022");
    assert_eq!(
        rec["reason"],
        "the gateway stopped while the cancellation was at the MIS"
    );
    assert_eq!(rec["bookingRequestId"], booking_id.as_str());
    assert_eq!(rec["cancelReason"], "patient_decline");
    let looked = exchange(
        &node.http,
        cancel(&appointment_url, http::Method::GET),
        REQUEST_TIMEOUT,
    )
    .await
    .unwrap();
    let looked: Value = serde_json::from_slice(&looked.body).unwrap();
    assert_eq!(looked["status"], "booked", "nothing says it was cancelled");

    let resolve = Request::post(format!(
        "http://{}/admin/journal/{}/resolve",
        node.admin,
        rec["requestId"].as_str().unwrap()
    ))
    .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
    .body(Full::new(Bytes::from_static(br#"{"cancelled": true}"#)))
    .unwrap();
    let resolved = exchange(&node.http, resolve, REQUEST_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.text());
    let looked = exchange(
        &node.http,
        cancel(&appointment_url, http::Method::GET),
        REQUEST_TIMEOUT,
    )
    .await
    .unwrap();
    let looked: Value = serde_json::from_slice(&looked.body).unwrap();
    assert_eq!(looked["status"], "cancelled", "{looked}");
    assert_eq!(mis.count(), 2, "the cancel was not sent again");
}

// ---------------------------------------------------------------------------------------------
// Helpers

type Http = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

fn http_client() -> Http {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// `mis-gateway serve --config <dir>/routes.toml` as its own process, on fresh ports.
/// The issue's last row: answers given while a commit stalls, then `kill -9` before the
/// outcomes reach the disk. The bookings were at the MIS when the journal's write lock was
/// taken (their attempts durable), their answers went out after the durable wait's bound, and
/// the process died holding their outcomes. After the restart every 200 the clients got has its
/// record (the outcome if it made it, otherwise `unknown` from its attempt), and a same-key
/// retry never reaches the MIS again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m1_a_kill_during_a_stalled_commit_leaves_every_answered_booking_on_record() {
    let mis = MockMis::spawn(slow_echo(Duration::from_millis(1500))).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = node_toml(&mis, "");
    let mut node = Node::start(dir.path(), &toml, Stdio::null()).await;
    let db = dir.path().join("journal.db");
    let warm = exchange(
        &node.http,
        booking_request(node.booking_url(), &fresh_booking(), PORTAL),
        REQUEST_TIMEOUT,
    )
    .await
    .expect("the gateway answers");
    assert_eq!(warm.status, StatusCode::OK, "{}", warm.text());

    let bookings: Vec<(String, String)> = (0..10)
        .map(|i| (fresh_booking(), format!("stalled-{i}")))
        .collect();
    let sent: Vec<_> = bookings
        .iter()
        .map(|(body, key)| {
            let (http, req) = (node.http.clone(), keyed_at(node.booking_url(), body, key));
            tokio::spawn(async move { exchange(&http, req, REQUEST_TIMEOUT).await })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || async {
            mis.count() == 1 + bookings.len()
        })
        .await,
        "every booking reached the MIS (its attempt was durable)"
    );
    // The lock is held well past the answers' wait, and released only after the kill.
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel::<Instant>();
    let holder = std::thread::spawn({
        let db = db.clone();
        move || hold_write_lock(&db, Duration::from_secs(8), locked_tx)
    });
    locked_rx
        .await
        .expect("the test takes the journal's write lock");
    let mut answered = Vec::new();
    for t in sent {
        if let Some(r) = t.await.unwrap() {
            answered.push(r);
        }
    }
    let ok: Vec<String> = answered
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .map(|r| {
            r.headers["x-request-id"]
                .to_str()
                .unwrap()
                .to_ascii_lowercase()
        })
        .collect();
    assert!(
        !ok.is_empty(),
        "answers went out while the commit stalled: {:?}",
        answered.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    node.kill().await;
    tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();

    let node = Node::start(dir.path(), &toml, Stdio::null()).await;
    let records = node.records().await.expect("the journal lists");
    for id in &ok {
        let rec = records
            .iter()
            .find(|r| record_id(r).as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("the 200 {id} has no record after the restart"));
        assert!(
            rec["outcome"] == "booked" || rec["outcome"] == "unknown",
            "{rec}"
        );
    }
    for (body, key) in &bookings {
        let r = exchange(
            &node.http,
            keyed_at(node.booking_url(), body, key),
            REQUEST_TIMEOUT,
        )
        .await
        .expect("the restarted gateway answers");
        assert!(
            r.status == StatusCode::OK || r.code() == "95022",
            "replayed or unknown, never sent: {}",
            r.text()
        );
    }
    assert_eq!(mis.count(), 1 + bookings.len(), "no retry reached the MIS");
}

struct Node {
    child: tokio::process::Child,
    api: SocketAddr,
    admin: SocketAddr,
    /// A client of this process only (no pooled connection outlives it).
    http: Http,
}

impl Node {
    /// Writes `toml` (its two `listen = "127.0.0.1:0"` lines given free ports) to
    /// `dir/routes.toml` and starts the binary on it; returns once both listeners accept.
    async fn start(dir: &Path, toml: &str, stderr: Stdio) -> Node {
        const ANY: &str = "listen = \"127.0.0.1:0\"";
        let (api, admin) = (closed_port().await, closed_port().await);
        let toml = toml
            .replacen(ANY, &format!("listen = \"{api}\""), 1)
            .replacen(ANY, &format!("listen = \"{admin}\""), 1);
        let config = dir.join("routes.toml");
        std::fs::write(&config, toml).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mis-gateway"))
            .args(["serve", "--config"])
            .arg(&config)
            // As TestSecrets resolves them.
            .env("MIS_A_PASSWORD", "pw-MIS_A_PASSWORD")
            .env(ADMIN_TOKEN_ENV, admin_token())
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("the gateway binary starts");
        let mut node = Node {
            child,
            api,
            admin,
            http: http_client(),
        };
        let up = eventually(Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(api).await.is_ok()
                && tokio::net::TcpStream::connect(admin).await.is_ok()
        })
        .await;
        assert!(
            up,
            "the gateway listens on {api} and {admin} (exit: {:?})",
            node.child.try_wait()
        );
        node
    }

    fn booking_url(&self) -> String {
        format!("http://{}/dir/appointments", self.api)
    }

    /// SIGKILL, and waits for the process to be gone.
    async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    /// Every journal record, following the listing's cursor; `None` when a page is not a 200.
    async fn records(&self) -> Option<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                None => "/admin/journal?limit=1000".to_owned(),
                Some(c) => format!("/admin/journal?limit=1000&cursor={c}"),
            };
            let page = exchange(&self.http, admin_get(self.admin, &path), REQUEST_TIMEOUT).await?;
            if page.status != StatusCode::OK {
                return None;
            }
            let v: Value = serde_json::from_slice(&page.body).ok()?;
            out.extend(v["records"].as_array()?.iter().cloned());
            match v["next"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Some(out),
            }
        }
    }

    /// The sum of the `/metrics` samples named `name` (any labels); `None` if there are none.
    async fn metric(&self, name: &str) -> Option<f64> {
        let r = exchange(
            &self.http,
            admin_get(self.admin, "/metrics"),
            REQUEST_TIMEOUT,
        )
        .await?;
        if r.status != StatusCode::OK {
            return None;
        }
        let values: Vec<f64> = r
            .text()
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>())
    }
}

/// One backend on `mis` for SEED_LPU, an admin token, and no `[journal]` nor `[idempotency]`
/// section: the defaults under test (SQLite beside routes.toml, memory key store).
fn node_toml(mis: &MockMis, backend_extra: &str) -> String {
    let toml = config_toml(
        &[BackendSpec::new("mis-a", mis.url()).extra(backend_extra)],
        &[(SEED_LPU, "mis-a")],
    )
    .replacen(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"{ADMIN_TOKEN_ENV}\"\n"),
        1,
    );
    assert!(toml.contains("token_env") && !toml.contains("[journal]"));
    toml
}

/// What a client got.
#[derive(Debug, Clone)]
struct Answer {
    status: StatusCode,
    /// `Message_code` of an error body ("" otherwise).
    code: String,
    /// `X-Request-Id`, lower case.
    request_id: String,
    /// The appointment's guid of a 200, lower case.
    guid: Option<String>,
    replayed: bool,
    retry_after: bool,
    took: Duration,
}

impl Answer {
    fn of(r: &TestResponse, took: Duration) -> Answer {
        let json: Option<Value> = serde_json::from_slice(&r.body).ok();
        let text = |name: &str| {
            json.as_ref()
                .and_then(|v| v.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let header_text = |name: &str| {
            r.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Answer {
            status: r.status,
            code: text("Message_code").unwrap_or_default(),
            request_id: header_text("x-request-id")
                .unwrap_or_default()
                .to_ascii_lowercase(),
            guid: (r.status == StatusCode::OK)
                .then(|| text("guid"))
                .flatten()
                .map(|g| g.to_ascii_lowercase()),
            replayed: header_text("idempotent-replayed").is_some_and(|v| v == "true"),
            retry_after: r.headers.contains_key(header::RETRY_AFTER),
            took,
        }
    }
}

/// One request a client sent, and what it got (`None`: no answer, e.g. the process was killed).
#[derive(Debug, Clone)]
struct Booking {
    key: Option<String>,
    body: String,
    /// Lower case.
    slot: String,
    sent_at: Instant,
    answer: Option<Answer>,
}

/// Sends `req` and reads the whole answer; `None` on any failure or after `within`.
async fn exchange(
    http: &Http,
    req: Request<Full<Bytes>>,
    within: Duration,
) -> Option<TestResponse> {
    let exchange = async {
        let resp = http.request(req).await.ok()?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        Some(TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(within, exchange).await.ok().flatten()
}

/// Sends what `make` builds, again while the answer is 503 `95030` (not sent: the ordinary
/// client's retry), at most 25 times; the last answer.
async fn send_retrying_503(http: &Http, make: impl Fn() -> Request<Full<Bytes>>) -> Option<Answer> {
    let mut last = None;
    for _ in 0..25 {
        let sent_at = Instant::now();
        last = exchange(http, make(), REQUEST_TIMEOUT)
            .await
            .map(|r| Answer::of(&r, sent_at.elapsed()));
        match &last {
            Some(a) if a.status == StatusCode::SERVICE_UNAVAILABLE && a.code == "95030" => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ => break,
        }
    }
    last
}

fn admin_get(admin: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{admin}{path}"))
        .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
        .body(Full::default())
        .unwrap()
}

/// Takes one booking from `budget`; false when it is spent.
fn take_one(budget: &AtomicUsize) -> bool {
    budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// A client sending keyed bookings (fresh slot, unique key) one after another until `stop`.
async fn keyed_load(
    http: Http,
    url: String,
    tag: String,
    stop: Arc<AtomicBool>,
    budget: Arc<AtomicUsize>,
) -> Vec<Booking> {
    let mut out = Vec::new();
    for i in 0u32.. {
        if stop.load(Ordering::SeqCst) || !take_one(&budget) {
            break;
        }
        let body = fresh_booking();
        let key = format!("{tag}-{i}");
        let sent_at = Instant::now();
        let answer = exchange(&http, keyed_at(url.clone(), &body, &key), REQUEST_TIMEOUT)
            .await
            .map(|r| Answer::of(&r, sent_at.elapsed()));
        out.push(Booking {
            key: Some(key),
            slot: slot_in(&body),
            body,
            sent_at,
            answer,
        });
    }
    out
}

/// A client cycling through an unkeyed booking, a keyed one, and a same-key retry of that
/// keyed one, until `stop`.
async fn mixed_load(
    http: Http,
    url: String,
    tag: String,
    stop: Arc<AtomicBool>,
    budget: Arc<AtomicUsize>,
) -> Vec<Booking> {
    let mut out = Vec::new();
    let mut last_keyed: Option<(String, String)> = None;
    for i in 0u32.. {
        if stop.load(Ordering::SeqCst) || !take_one(&budget) {
            break;
        }
        let replay = if i % 3 == 2 { last_keyed.clone() } else { None };
        let (body, key) = match replay {
            Some((body, key)) => (body, Some(key)),
            None if i % 3 == 1 => {
                let (body, key) = (fresh_booking(), format!("{tag}-{i}"));
                last_keyed = Some((body.clone(), key.clone()));
                (body, Some(key))
            }
            None => (fresh_booking(), None),
        };
        let req = match &key {
            Some(k) => keyed_at(url.clone(), &body, k),
            None => booking_request(url.clone(), &body, PORTAL),
        };
        let sent_at = Instant::now();
        let answer = exchange(&http, req, REQUEST_TIMEOUT)
            .await
            .map(|r| Answer::of(&r, sent_at.elapsed()));
        out.push(Booking {
            key,
            slot: slot_in(&body),
            body,
            sent_at,
            answer,
        });
    }
    out
}

/// `n` unkeyed bookings in a row, each sent again while refused with 503 `95030`.
async fn book_unkeyed(node: &Node, n: usize) -> Vec<Booking> {
    let url = node.booking_url();
    let mut out = Vec::new();
    for _ in 0..n {
        let body = fresh_booking();
        let sent_at = Instant::now();
        let answer =
            send_retrying_503(&node.http, || booking_request(url.clone(), &body, PORTAL)).await;
        out.push(Booking {
            key: None,
            slot: slot_in(&body),
            body,
            sent_at,
            answer,
        });
    }
    out
}

/// Every keyed booking of `ledger` sent once more with its key and body, by [`CLIENTS`]
/// clients at once; the answers in `ledger`'s order.
async fn retry_every_key(node: &Node, ledger: &[Booking]) -> Vec<Option<Answer>> {
    let jobs: Vec<(usize, String, String)> = ledger
        .iter()
        .enumerate()
        .filter_map(|(i, b)| Some((i, b.key.clone()?, b.body.clone())))
        .collect();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let mine: Vec<_> = jobs
                .iter()
                .filter(|(i, ..)| i % CLIENTS == t)
                .cloned()
                .collect();
            let (http, url) = (node.http.clone(), node.booking_url());
            tokio::spawn(async move {
                let mut out = Vec::new();
                for (i, key, body) in mine {
                    let answer =
                        send_retrying_503(&http, || keyed_at(url.clone(), &body, &key)).await;
                    out.push((i, answer));
                }
                out
            })
        })
        .collect();
    let mut answers = vec![None; ledger.len()];
    for t in tasks {
        for (i, a) in t.await.unwrap() {
            answers[i] = a;
        }
    }
    answers
}

/// What the journal lacks: a record for each slot the MIS saw; for each 200 in `ledger` its
/// record by request id (`booked` with the same appointment, or `replayed`); with
/// `every_answer`, a record for each answered request.
fn journal_gaps(
    records: &[Value],
    mis_seen: &HashMap<String, usize>,
    ledger: &[Booking],
    every_answer: bool,
) -> Vec<String> {
    let slots: HashSet<String> = records.iter().filter_map(record_slot).collect();
    let by_id: HashMap<String, &Value> = records
        .iter()
        .filter_map(|r| Some((record_id(r)?, r)))
        .collect();
    let mut gaps: Vec<String> = mis_seen
        .keys()
        .filter(|slot| !slots.contains(*slot))
        .map(|slot| format!("slot {slot} reached the MIS and has no journal record"))
        .collect();
    for b in ledger {
        let Some(a) = &b.answer else { continue };
        let record = by_id.get(&a.request_id);
        match (a.status, record) {
            (StatusCode::OK, None) => gaps.push(format!("a 200 without its record: {b:?}")),
            (StatusCode::OK, Some(r)) if a.replayed && r["outcome"] != "replayed" => {
                gaps.push(format!(
                    "a replayed 200 recorded as {}: {b:?}",
                    r["outcome"]
                ));
            }
            (StatusCode::OK, Some(_)) if a.replayed => {}
            (StatusCode::OK, Some(r)) => {
                let guid = r["appointment"]["guid"]
                    .as_str()
                    .map(str::to_ascii_lowercase);
                if r["outcome"] != "booked" || guid != a.guid {
                    gaps.push(format!("a 200 whose record is {r}: {b:?}"));
                }
            }
            (_, None) if every_answer => gaps.push(format!("an answer without its record: {b:?}")),
            _ => {}
        }
    }
    gaps
}

fn record_slot(r: &Value) -> Option<String> {
    r["slot"].as_str().map(str::to_ascii_lowercase)
}

fn record_id(r: &Value) -> Option<String> {
    r["requestId"].as_str().map(str::to_ascii_lowercase)
}

/// The 200s `ledger` lacks.
fn not_booked(ledger: &[Booking]) -> Vec<String> {
    ledger
        .iter()
        .filter(|b| b.answer.as_ref().is_none_or(|a| a.status != StatusCode::OK))
        .map(|b| format!("not booked: {b:?}"))
        .collect()
}

/// Polls `probe` every 100 ms until it finds no problem or `within` passes; its last findings.
/// [`journal_gaps`] of `node`'s listing, asked again until there are none or `within` passed.
async fn settled_gaps(
    node: &Node,
    mis_seen: &HashMap<String, usize>,
    ledger: &[Booking],
    every_answer: bool,
    within: Duration,
) -> Vec<String> {
    settle(within, || async {
        match node.records().await {
            Some(records) => journal_gaps(&records, mis_seen, ledger, every_answer),
            None => vec!["the admin journal listing failed".to_owned()],
        }
    })
    .await
}

async fn settle<F, Fut>(within: Duration, mut probe: F) -> Vec<String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let problems = probe().await;
        if problems.is_empty() || tokio::time::Instant::now() >= deadline {
            return problems;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_none(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s); the first ones:\n{}",
        problems.len(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Requests the MIS received, by the booking's `slot` (lower case). A body the MIS could not
/// read whole (the gateway died while writing it) names no slot and is no booking.
fn mis_slots(mis: &MockMis) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in mis.received() {
        let Ok(v) = serde_json::from_slice::<Value>(&r.body) else {
            continue;
        };
        if let Some(slot) = v.get("slot").and_then(Value::as_str) {
            *out.entry(slot.to_ascii_lowercase()).or_default() += 1;
        }
    }
    out
}

fn slot_in(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap();
    v["slot"].as_str().unwrap().to_ascii_lowercase()
}

/// A number below `n` (n > 0), from the OS random source through uuid.
fn random_below(n: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(n)) as u64
}

/// A MIS that books every request, each after its own 0..=`max` delay.
fn jittered_echo(max: Duration) -> Script {
    let echo = echo_mis();
    let max_ms = max.as_millis() as u64;
    Arc::new(move |r: &Received| echo(r).after(Duration::from_millis(random_below(max_ms + 1))))
}

fn slow_echo(delay: Duration) -> Script {
    let echo = echo_mis();
    Arc::new(move |r: &Received| echo(r).after(delay))
}

/// Holds SQLite's write lock on `db` for `hold` from a connection of its own (as a backup
/// tool or a stray `sqlite3` shell would); sends when it has it, returns when it let go.
fn hold_write_lock(
    db: &Path,
    hold: Duration,
    locked: tokio::sync::oneshot::Sender<Instant>,
) -> Instant {
    let conn = rusqlite::Connection::open(db).expect("open the journal");
    // The gateway's writer may be mid-commit: wait for it, as any client would.
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    let _ = locked.send(Instant::now());
    std::thread::sleep(hold);
    let released = Instant::now();
    conn.execute_batch("ROLLBACK").expect("let the lock go");
    released
}

/// Whether the log has an ERROR line about the journal's file deleted or replaced.
fn replaced_error_logged(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|text| {
        text.lines().any(|line| {
            let lower = line.to_ascii_lowercase();
            line.contains("ERROR")
                && lower.contains("journal")
                && lower.contains("deleted or replaced")
        })
    })
}

/// journal.db and its WAL as text (lossy), for finding request ids in the file at the path.
fn journal_bytes(dir: &Path) -> String {
    ["journal.db", "journal.db-wal"]
        .iter()
        .filter_map(|name| std::fs::read(dir.join(name)).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}
