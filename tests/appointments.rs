//! A booking's life after the booking: `GET` and `DELETE /dir/appointments/{guid}`, routed by
//! the journal to the MIS that made the booking. Asserted on what integrators see and on what
//! the mock MIS servers counted: book → look up → cancel → look up → cancel again (the MIS not
//! asked) → the slot books again; another integrator's clinic and unknown guids answer 404 and
//! reach no MIS; a lost answer is `unknown` and resolvable; a MIS's refusal passes through;
//! `cancel = false` is 501; without a journal both verbs are 501. On SQLite and PostgreSQL.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};
use support::journal::{ADMIN_TOKEN_ENV, admin, read_request};
use support::postgres::Postgres;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Clinics of these tests, each routed to a backend that cancels one way.
const LPU_RESETS: &str = "00000000-0000-4000-8000-0000000000a3";
const LPU_REFUSES: &str = "00000000-0000-4000-8000-0000000000a4";
const LPU_NO_CANCEL: &str = "00000000-0000-4000-8000-0000000000a5";

/// A MIS that books every POST and resets the connection after reading each DELETE (the
/// gateway cannot know whether it cancelled).
struct ResetOnCancel {
    addr: std::net::SocketAddr,
    deletes: Arc<AtomicUsize>,
}

impl ResetOnCancel {
    async fn spawn() -> ResetOnCancel {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let deletes = Arc::new(AtomicUsize::new(0));
        let counted = deletes.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some((head, body)) = read_request(&mut stream, &mut buf).await else {
                            return;
                        };
                        let body: Value = serde_json::from_slice(&body).unwrap_or_default();
                        if head.starts_with("delete ") {
                            counted.fetch_add(1, Ordering::SeqCst);
                            let _ = stream.set_zero_linger();
                            return;
                        }
                        let answer = json!({
                            "guid": uuid::Uuid::new_v4().to_string(),
                            "number": "31",
                            "slot": body["slot"],
                            "createTime": "2023-04-05T14:00:00",
                        })
                        .to_string();
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        if stream.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        ResetOnCancel { addr, deletes }
    }
}

/// A MIS that books every POST and refuses every DELETE: 404 (it knows no such appointment)
/// for `reason=error_in_slot`, else 400 "the visit already took place".
fn refusing_mis() -> Script {
    let book = echo_mis();
    Arc::new(move |r: &Received| {
        if r.method != Method::DELETE {
            return book(r);
        }
        if r.query.as_deref() == Some("reason=error_in_slot") {
            Reply::exception(404, "No such appointment", "4041")
        } else {
            Reply::exception(400, "The visit already took place", "4050")
        }
    })
}

struct Setup {
    gw: TestGateway,
    clinic: MockMis,
    resets: ResetOnCancel,
    refuses: MockMis,
    no_cancel: MockMis,
}

/// A gateway with an admin token, `journal` as its `[journal]` body (none: no journal), and
/// four backends: a clinic that books and cancels (SEED_LPU, OTHER_LPU), one that resets on
/// cancel, one that refuses cancels, one configured `cancel = false`.
async fn setup(journal: Option<&str>) -> Setup {
    let clinic = clinic_mis("MIS_CLINIC_PASSWORD", "Asia/Novosibirsk").await;
    let resets = ResetOnCancel::spawn().await;
    let refuses = MockMis::spawn(refusing_mis()).await;
    let no_cancel = MockMis::spawn(echo_mis()).await;
    let mut toml = config_toml(
        &[
            BackendSpec::new("mis-clinic", clinic.url()).tz("Asia/Novosibirsk"),
            BackendSpec::new("mis-resets", format!("http://{}", resets.addr)),
            BackendSpec::new("mis-refuses", refuses.url()),
            BackendSpec::new("mis-no-cancel", no_cancel.url()).extra("cancel = false"),
        ],
        &[
            (SEED_LPU, "mis-clinic"),
            (OTHER_LPU, "mis-clinic"),
            (LPU_RESETS, "mis-resets"),
            (LPU_REFUSES, "mis-refuses"),
            (LPU_NO_CANCEL, "mis-no-cancel"),
        ],
    );
    toml = toml.replacen(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"{ADMIN_TOKEN_ENV}\"\n"),
        1,
    );
    if let Some(j) = journal {
        toml.push_str(&format!("\n[journal]\n{j}\n"));
    }
    Setup {
        gw: TestGateway::start(&toml).await,
        clinic,
        resets,
        refuses,
        no_cancel,
    }
}

/// A `[journal]` body: SQLite in `dir`.
fn sqlite_in(dir: &std::path::Path) -> String {
    format!("path = \"{}\"", dir.join("journal.db").display())
}

fn booking_into(lpu: &str) -> String {
    seed_with(|v| {
        v["direction"]["lpuToGuid"] = lpu.into();
        v["slot"] = uuid::Uuid::new_v4().to_string().into();
    })
}

/// `method` of `/dir/appointments/{guid}{query}` as `who`.
async fn call(
    gw: &TestGateway,
    method: Method,
    guid: &str,
    query: &str,
    who: (&str, &str),
) -> TestResponse {
    let req = Request::builder()
        .method(method)
        .uri(gw.url(&format!("/dir/appointments/{guid}{query}")))
        .header(header::AUTHORIZATION, basic(who.0, who.1))
        .body(Full::new(Bytes::new()))
        .unwrap();
    gw.send(req).await
}

/// Books `body` as the portal: the appointment and the request id.
async fn book(gw: &TestGateway, body: &str) -> (Value, String) {
    let r = gw.book(body, PORTAL).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    (r.json(), id)
}

fn deletes(mis: &MockMis) -> Vec<Received> {
    mis.received()
        .into_iter()
        .filter(|r| r.method == Method::DELETE)
        .collect()
}

async fn journal_record(gw: &TestGateway, request_id: &str) -> Value {
    let r = admin(
        gw,
        Method::GET,
        &format!("/admin/journal/{request_id}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

/// The whole life at the clinic MIS, and what the journal, the metrics and the MIS saw.
async fn an_appointment_is_looked_up_cancelled_once_and_its_slot_books_again(s: &Setup) {
    let gw = &s.gw;
    let body = booking_into(OTHER_LPU);
    let (booked, booking_id) = book(gw, &body).await;
    let guid = booked["guid"].as_str().unwrap().to_owned();

    // Looked up in any letter case: the Appointment as booked, and its state.
    let found = call(gw, Method::GET, &guid.to_uppercase(), "", PORTAL).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.text());
    let f = found.json();
    for field in ["guid", "number", "slot", "source", "createTime"] {
        assert_eq!(f[field], booked[field], "{field}: {f} vs {booked}");
    }
    assert_eq!(f["direction"], Value::Null, "the hub keeps no referral");
    assert_eq!(f["status"], "booked");
    assert!(f.get("cancelTime").is_none(), "{f}");

    let cancel = call(gw, Method::DELETE, &guid, "?reason=mo_decline", PORTAL).await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.text());
    let c = cancel.json();
    assert_eq!(c["status"], "cancelled");
    assert_eq!(c["cancelReason"], "mo_decline");
    assert_eq!(c["guid"], booked["guid"]);
    assert!(
        c["cancelTime"].as_str().unwrap().ends_with("+07:00"),
        "in the clinic's zone: {c}"
    );
    let cancel_id = cancel.headers["x-request-id"].to_str().unwrap().to_owned();

    // The MIS that made it got the DELETE with its own credentials, the request id and a trace.
    let sent = deletes(&s.clinic);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, format!("/dir/appointments/{guid}"));
    assert_eq!(sent[0].query.as_deref(), Some("reason=mo_decline"));
    let h = headers_map(&sent[0].headers);
    assert_eq!(h["authorization"], backend_auth("MIS_CLINIC_PASSWORD"));
    assert_eq!(h["x-request-id"], cancel_id);
    assert!(h.contains_key("traceparent"), "{h:?}");

    let found = call(gw, Method::GET, &guid, "", PORTAL).await.json();
    assert_eq!(found["status"], "cancelled");
    assert_eq!(found["cancelReason"], "mo_decline");
    assert_eq!(found["cancelTime"], c["cancelTime"]);

    // Again: answered from the journal, the MIS not asked.
    let again = call(gw, Method::DELETE, &guid, "", PORTAL).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(again.json()["status"], "cancelled");
    assert_eq!(again.json()["cancelReason"], "mo_decline");
    assert_eq!(deletes(&s.clinic).len(), 1);

    // The slot is free at the clinic: the same booking is made again.
    let (rebooked, _) = book(gw, &body).await;
    assert_ne!(rebooked["guid"], booked["guid"]);

    // The journal: who cancelled, why, linked both ways.
    let b = journal_record(gw, &booking_id).await;
    assert_eq!(b["operation"], "book");
    assert_eq!(b["cancelled"]["by"], "portal");
    assert_eq!(b["cancelled"]["reason"], "mo_decline");
    assert_eq!(b["cancelled"]["requestId"], cancel_id.as_str());
    let r = journal_record(gw, &cancel_id).await;
    assert_eq!(r["operation"], "cancel");
    assert_eq!(r["outcome"], "cancelled");
    assert_eq!(r["integrator"], "portal");
    assert_eq!(r["cancelReason"], "mo_decline");
    assert_eq!(r["bookingRequestId"], booking_id.as_str());
    assert_eq!(r["appointment"]["guid"], guid.as_str());
    assert_eq!(r["backend"], "mis-clinic");
    // The second cancel's record (answered from the journal: nothing to wait for) follows
    // within moments.
    let both = eventually(std::time::Duration::from_secs(10), || async {
        admin(gw, Method::GET, "/admin/journal?operation=cancel", None)
            .await
            .json()["records"]
            .as_array()
            .is_some_and(|r| r.len() == 2)
    })
    .await;
    assert!(both, "both cancels are recorded");
    let listed = admin(gw, Method::GET, "/admin/journal?operation=cancel", None)
        .await
        .json();
    let outcomes: Vec<&str> = listed["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["replayed", "cancelled"], "{listed}");

    let metrics = gw.admin(Method::GET, "/metrics").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mis_gateway_requests_total{")
                && l.contains(r#"backend="mis-clinic""#)
                && l.contains(r#"operation="cancel""#)
                && l.contains(r#"status_class="2xx""#)),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_appointment_is_looked_up_and_cancelled_once_through_the_sqlite_journal() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(Some(&sqlite_in(dir.path()))).await;
    an_appointment_is_looked_up_cancelled_once_and_its_slot_books_again(&s).await;
}

#[tokio::test]
async fn another_integrators_clinic_and_unknown_guids_are_404_and_reach_no_mis() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(Some(&sqlite_in(dir.path()))).await;
    let gw = &s.gw;
    // Booked by the portal into a clinic the call centre may not book into.
    let (booked, _) = book(gw, &booking_into(OTHER_LPU)).await;
    let guid = booked["guid"].as_str().unwrap();
    let unknown = uuid::Uuid::new_v4().to_string();
    for (guid, who) in [(guid, CALLCENTRE), (unknown.as_str(), PORTAL)] {
        for method in [Method::GET, Method::DELETE] {
            let r = call(gw, method.clone(), guid, "", who).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {}", r.text());
            assert_eq!(r.code(), "94042");
        }
    }
    assert!(deletes(&s.clinic).is_empty(), "no MIS was asked");
    // The portal still may.
    assert_eq!(
        call(gw, Method::GET, guid, "", PORTAL).await.status,
        StatusCode::OK
    );

    // The path's guid and the reason are checked, named, never echoed.
    let r = call(gw, Method::GET, "CanaryPathQx", "", PORTAL).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "94000");
    assert_eq!(r.json()["errors"][0]["path"], "path.guid");
    assert!(!r.text().contains("CanaryPathQx"));
    let r = call(gw, Method::DELETE, guid, "?reason=CanaryReasonQx", PORTAL).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["errors"][0]["path"], "query.reason");
    assert!(!r.text().contains("CanaryReasonQx"));
    let r = call(gw, Method::DELETE, guid, "?reasn=mo_decline", PORTAL).await;
    assert_eq!(r.json()["errors"][0]["path"], "query");
    // Unauthenticated, and a method the path does not take.
    let r = call(gw, Method::GET, guid, "", ("portal", "wrong")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = call(gw, Method::PUT, guid, "", PORTAL).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers[header::ALLOW], "GET, DELETE");
    let r = call(gw, Method::GET, &format!("{guid}/x"), "", PORTAL).await;
    assert_eq!(r.code(), "94040");
    assert!(deletes(&s.clinic).is_empty(), "no MIS was asked");
}

/// A lost answer to a cancel: `unknown`, then resolved as the clinic said.
async fn a_lost_cancel_answer_is_unknown_and_resolvable(s: &Setup) {
    let gw = &s.gw;
    let (booked, booking_id) = book(gw, &booking_into(LPU_RESETS)).await;
    let guid = booked["guid"].as_str().unwrap();
    let r = call(gw, Method::DELETE, guid, "?reason=error_in_slot", PORTAL).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.code(), "95022");
    let cancel_id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(s.resets.deletes.load(Ordering::SeqCst), 1);
    let rec = journal_record(gw, &cancel_id).await;
    assert_eq!(rec["operation"], "cancel");
    assert_eq!(rec["outcome"], "unknown");
    assert_eq!(rec["bookingRequestId"], booking_id.as_str());
    let unresolved = admin(gw, Method::GET, "/admin/journal?unresolved=true", None)
        .await
        .json();
    assert!(
        unresolved["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["requestId"] == cancel_id.as_str()),
        "{unresolved}"
    );
    // Still booked as far as the hub knows.
    assert_eq!(
        call(gw, Method::GET, guid, "", PORTAL).await.json()["status"],
        "booked"
    );

    // A booking's answer does not fit a cancellation's record.
    let wrong = admin(
        gw,
        Method::POST,
        &format!("/admin/journal/{cancel_id}/resolve"),
        Some(json!({"booked": false})),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::CONFLICT, "{}", wrong.text());
    let resolved = admin(
        gw,
        Method::POST,
        &format!("/admin/journal/{cancel_id}/resolve"),
        Some(json!({"cancelled": true, "note": "clinic confirmed, ticket 4411"})),
    )
    .await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.text());
    assert_eq!(resolved.json()["resolution"]["cancelled"], true);
    let found = call(gw, Method::GET, guid, "", PORTAL).await.json();
    assert_eq!(found["status"], "cancelled");
    assert_eq!(found["cancelReason"], "error_in_slot");
    // A retry is answered from the journal now.
    let again = call(gw, Method::DELETE, guid, "", PORTAL).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(s.resets.deletes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_lost_cancel_answer_is_unknown_and_resolvable_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(Some(&sqlite_in(dir.path()))).await;
    a_lost_cancel_answer_is_unknown_and_resolvable(&s).await;
    the_admin_tokens_resolution_is_in_the_audit(&s).await;
}

/// The audit is kept in the journal's database: the admin token's resolutions are there as
/// `token`, with the record they resolved.
async fn the_admin_tokens_resolution_is_in_the_audit(s: &Setup) {
    let audit = admin(&s.gw, Method::GET, "/admin/audit?limit=50", None).await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.text());
    let entries = audit.json()["entries"].as_array().unwrap().clone();
    let resolves: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "resolve" && e["who"] == "token")
        .collect();
    // One refused (a booking's answer to a cancellation), one done.
    assert_eq!(resolves.len(), 2, "{entries:#?}");
    assert!(resolves.iter().any(|e| e["outcome"] == "ok"));
    assert!(resolves.iter().any(|e| e["outcome"] == "failed"));
    assert!(
        resolves
            .iter()
            .all(|e| e["via"] == "admin-api" && e["target"].is_string())
    );
}

#[tokio::test]
async fn a_mis_refusal_passes_through_and_a_backend_without_cancel_is_501() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(Some(&sqlite_in(dir.path()))).await;
    let gw = &s.gw;
    let (booked, _) = book(gw, &booking_into(LPU_REFUSES)).await;
    let guid = booked["guid"].as_str().unwrap();
    let r = call(gw, Method::DELETE, guid, "", PORTAL).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.code(), "4050");
    assert_eq!(r.json()["Message"], "The visit already took place");
    // A rejection's record is not waited for by its answer (only booked, unknown and
    // cancelled ones are): it follows within moments.
    let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    let written = eventually(std::time::Duration::from_secs(10), || async {
        admin(gw, Method::GET, &format!("/admin/journal/{id}"), None)
            .await
            .status
            == StatusCode::OK
    })
    .await;
    assert!(written, "the rejection's record");
    let rejected = journal_record(gw, &id).await;
    assert_eq!(rejected["outcome"], "rejected");
    assert_eq!(rejected["misStatus"], 400);
    let r = call(gw, Method::DELETE, guid, "?reason=error_in_slot", PORTAL).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    assert_eq!(r.code(), "4041");
    assert_eq!(deletes(&s.refuses).len(), 2);
    assert_eq!(
        call(gw, Method::GET, guid, "", PORTAL).await.json()["status"],
        "booked"
    );

    let (booked, _) = book(gw, &booking_into(LPU_NO_CANCEL)).await;
    let guid = booked["guid"].as_str().unwrap();
    let r = call(gw, Method::DELETE, guid, "", PORTAL).await;
    assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED, "{}", r.text());
    assert_eq!(r.code(), "95010");
    assert!(deletes(&s.no_cancel).is_empty());
    // Looking it up needs no MIS.
    assert_eq!(
        call(gw, Method::GET, guid, "", PORTAL).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_second_cancel_while_the_first_is_at_the_mis_waits_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    let slow = MockMis::spawn(cancelling_mis(
        cancelled_reply().after(std::time::Duration::from_secs(2)),
    ))
    .await;
    let mut toml = config_toml(
        &[BackendSpec::new("mis-slow", slow.url())],
        &[(SEED_LPU, "mis-slow")],
    );
    toml.push_str(&format!(
        "\n[journal]\npath = \"{}\"\n",
        dir.path().join("journal.db").display()
    ));
    let gw = Arc::new(TestGateway::start(&toml).await);
    let (booked, _) = book(&gw, &booking_into(SEED_LPU)).await;
    let guid = booked["guid"].as_str().unwrap().to_owned();
    let first = tokio::spawn({
        let (gw, guid) = (gw.clone(), guid.clone());
        async move { call(&gw, Method::DELETE, &guid, "", PORTAL).await }
    });
    // The first is at the MIS (it records a request when it arrives).
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            deletes(&slow).len() == 1
        })
        .await
    );
    let second = call(&gw, Method::DELETE, &guid, "", PORTAL).await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.text());
    assert_eq!(second.code(), "94092");
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(deletes(&slow).len(), 1);
}

#[tokio::test]
async fn without_a_journal_lookups_and_cancels_are_501() {
    let s = setup(None).await;
    let (booked, _) = book(&s.gw, &booking_into(SEED_LPU)).await;
    let guid = booked["guid"].as_str().unwrap();
    for method in [Method::GET, Method::DELETE] {
        let r = call(&s.gw, method, guid, "", PORTAL).await;
        assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED, "{}", r.text());
        assert_eq!(r.code(), "95011");
    }
    assert!(deletes(&s.clinic).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appointment_is_looked_up_cancelled_and_resolved_through_a_postgres_journal() {
    let pg = Postgres::start();
    pg.create_db("gateway", "pw-PGPW", "journal").await;
    let s = setup(Some(&format!(
        "url = \"{}\"\npassword_env = \"PGPW\"",
        pg.url("gateway", "journal")
    )))
    .await;
    an_appointment_is_looked_up_cancelled_once_and_its_slot_books_again(&s).await;
    a_lost_cancel_answer_is_unknown_and_resolvable(&s).await;
    the_admin_tokens_resolution_is_in_the_audit(&s).await;
}

#[tokio::test]
async fn a_cancel_whose_backend_left_the_configuration_is_502_and_reaches_no_mis() {
    let dir = tempfile::tempdir().unwrap();
    let clinic = clinic_mis("MIS_OLD_PASSWORD", "Europe/Moscow").await;
    let toml = |name: &str| {
        let mut t = config_toml(&[BackendSpec::new(name, clinic.url())], &[(SEED_LPU, name)]);
        t.push_str(&format!("\n[journal]\n{}\n", sqlite_in(dir.path())));
        t
    };
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, toml("mis-old")).unwrap();
    let gw = TestGateway::start_file(&path).await;
    let (booked, _) = book(&gw, &booking_into(SEED_LPU)).await;
    let guid = booked["guid"].as_str().unwrap();

    // The clinic's backend is renamed: the journal's record names one that is gone.
    rename_save(&path, &toml("mis-new"));
    let reloaded = eventually(std::time::Duration::from_secs(10), || async {
        gw.live.load().number == 2
    })
    .await;
    assert!(reloaded, "the renamed backend is live");
    let r = call(&gw, Method::DELETE, guid, "", PORTAL).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.code(), "95025");
    assert!(deletes(&clinic).is_empty(), "nothing was sent");
    // The appointment is still known and still booked.
    let found = call(&gw, Method::GET, guid, "", PORTAL).await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(found.json()["status"], "booked");
}
