//! Journal tests' helpers: canary bookings, a MIS that resets the first request of each slot
//! (and books the ones after), a gateway whose backends produce every journal outcome, and
//! a sweep that sends canaries through all of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// Values that must never reach the journal: patient and doctor fields, the MIS's message
/// text, passwords, the idempotency keys themselves.
pub const CANARIES: &[&str] = &[
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
    "CanaryMisMessageQx",
    "CanaryKeyQx",
    "portal-pw",
    "callcentre-pw",
];

/// The admin token the journal tests' config names (`TestSecrets` makes `pw-NAME`).
pub const ADMIN_TOKEN_ENV: &str = "JOURNAL_ADMIN_TOKEN_ENV";

pub fn admin_token() -> String {
    format!("pw-{ADMIN_TOKEN_ENV}")
}

/// The seed booking with a canary in every patient field, into `lpu` and a fresh slot.
pub fn canary_booking(lpu: &str) -> String {
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
        v["direction"]["lpuToGuid"] = lpu.into();
        v["slot"] = uuid::Uuid::new_v4().to_string().into();
    })
}

pub fn slot_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["slot"].as_str().unwrap().to_owned()
}

/// A MIS that reads each booking whole, then resets the connection if it is the first
/// request for that slot (the gateway answers `95022`), and books every later one.
pub struct FirstResetMis {
    pub addr: std::net::SocketAddr,
    per_slot: Arc<Mutex<HashMap<String, usize>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl FirstResetMis {
    pub async fn spawn() -> FirstResetMis {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let per_slot: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counts = per_slot.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, counts.clone()));
            }
        });
        FirstResetMis {
            addr,
            per_slot,
            _task: task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests this MIS read for `slot`.
    pub fn count(&self, slot: &str) -> usize {
        self.per_slot
            .lock()
            .unwrap()
            .get(slot)
            .copied()
            .unwrap_or(0)
    }
}

/// Reads one HTTP/1.1 request from `stream` (`buf` keeps what was read past it): its head,
/// lower-cased, and its body (by `Content-Length`); `None` when the connection ends first.
pub async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Some((head, body))
}

async fn serve(mut stream: TcpStream, counts: Arc<Mutex<HashMap<String, usize>>>) {
    let mut buf = Vec::new();
    loop {
        let Some((_, body)) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let slot = body["slot"].as_str().unwrap_or_default().to_owned();
        let seen = {
            let mut c = counts.lock().unwrap();
            let n = c.entry(slot.clone()).or_default();
            *n += 1;
            *n
        };
        if seen == 1 {
            let _ = stream.set_zero_linger();
            return;
        }
        let answer = serde_json::json!({
            "guid": uuid::Uuid::new_v4().to_string(),
            "number": "77",
            "slot": slot,
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
}

/// Clinics of the sweep: each routes to a backend that answers one way.
pub const LPU_BOOKS: &str = SEED_LPU;
pub const LPU_REJECTS: &str = "00000000-0000-4000-8000-000000000001";
pub const LPU_RESETS: &str = "00000000-0000-4000-8000-000000000003";

/// The MIS servers behind [`sweep_toml`].
pub struct SweepMis {
    pub books: MockMis,
    pub rejects: MockMis,
    pub resets: FirstResetMis,
}

impl SweepMis {
    pub async fn spawn() -> SweepMis {
        SweepMis {
            books: MockMis::spawn(echo_mis()).await,
            rejects: MockMis::spawn(always(Reply::exception(
                409,
                "CanaryMisMessageQx: the slot is taken",
                "4002",
            )))
            .await,
            resets: FirstResetMis::spawn().await,
        }
    }
}

/// A config with an admin token, backends `mis-books`, `mis-rejects`, `mis-resets`, and
/// `journal` as the `[journal]` section's body.
pub fn sweep_toml(mis: &SweepMis, journal: &str) -> String {
    let mut toml = config_toml(
        &[
            BackendSpec::new("mis-books", mis.books.url()),
            BackendSpec::new("mis-rejects", mis.rejects.url()),
            BackendSpec::new("mis-resets", mis.resets.url()).tz("Asia/Yekaterinburg"),
        ],
        &[
            (LPU_BOOKS, "mis-books"),
            (OTHER_LPU, "mis-books"),
            (LPU_REJECTS, "mis-rejects"),
            (LPU_RESETS, "mis-resets"),
        ],
    );
    toml = toml.replacen(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"{ADMIN_TOKEN_ENV}\"\n"),
        1,
    );
    toml.push_str(&format!("\n[journal]\n{journal}\n"));
    toml
}

pub fn post(
    gw: &TestGateway,
    body: &str,
    who: (&str, &str),
    key: Option<&str>,
    content_type: &str,
) -> Request<Full<Bytes>> {
    let mut r = Request::post(gw.url("/dir/appointments"))
        .header(header::CONTENT_TYPE, content_type)
        .header(header::AUTHORIZATION, basic(who.0, who.1));
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    r.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

/// One request of the sweep: its id (from `X-Request-Id`) and the outcome the journal must say.
#[derive(Debug, Clone)]
pub struct Sent {
    pub request_id: String,
    pub outcome: &'static str,
    pub status: StatusCode,
}

/// A request of the sweep, the outcome its record must have (none: no record), its status.
type Case = (Request<Full<Bytes>>, Option<&'static str>, StatusCode);

/// Canary bookings through every outcome: booked, replayed, rejected, unknown, several
/// not_sent, and one unauthenticated request (which gets no record). `tag` keeps keys apart
/// between sweeps.
pub async fn sweep(gw: &TestGateway, tag: &str) -> Vec<Sent> {
    let key = |k: &str| format!("CanaryKeyQx-{tag}-{k}");
    let booked = canary_booking(LPU_BOOKS);
    let unknown = canary_booking(LPU_RESETS);
    let cases: Vec<Case> = vec![
        (
            post(gw, &booked, PORTAL, Some(&key("a")), "application/json"),
            Some("booked"),
            StatusCode::OK,
        ),
        (
            post(gw, &booked, PORTAL, Some(&key("a")), "application/json"),
            Some("replayed"),
            StatusCode::OK,
        ),
        (
            post(
                gw,
                &canary_booking(LPU_REJECTS),
                PORTAL,
                None,
                "application/json",
            ),
            Some("rejected"),
            StatusCode::CONFLICT,
        ),
        (
            post(gw, &unknown, PORTAL, Some(&key("u")), "application/json"),
            Some("unknown"),
            StatusCode::BAD_GATEWAY,
        ),
        (
            post(
                gw,
                &canary_booking(UNROUTED_LPU),
                PORTAL,
                None,
                "application/json",
            ),
            Some("not_sent"),
            StatusCode::NOT_FOUND,
        ),
        (
            post(
                gw,
                &canary_booking(OTHER_LPU),
                CALLCENTRE,
                None,
                "application/json",
            ),
            Some("not_sent"),
            StatusCode::FORBIDDEN,
        ),
        (
            post(gw, &canary_booking(LPU_BOOKS), PORTAL, None, "text/plain"),
            Some("not_sent"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            post(
                gw,
                &canary_booking(LPU_BOOKS).replace("\"slot\"", "\"slot\": 5, \"x\""),
                PORTAL,
                None,
                "application/json",
            ),
            Some("not_sent"),
            StatusCode::BAD_REQUEST,
        ),
        (
            post(gw, &booked, PORTAL, Some(&key("a")), "application/json")
                .map(|_| Full::new(Bytes::from(canary_booking(LPU_BOOKS)))),
            Some("not_sent"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            post(
                gw,
                &booked,
                ("portal", "CanaryNameQx"),
                None,
                "application/json",
            ),
            None,
            StatusCode::UNAUTHORIZED,
        ),
    ];
    let mut sent = Vec::new();
    for (req, outcome, status) in cases {
        let r = gw.send(req).await;
        assert_eq!(r.status, status, "{}", r.text());
        if let Some(outcome) = outcome {
            sent.push(Sent {
                request_id: r.headers["x-request-id"].to_str().unwrap().to_owned(),
                outcome,
                status,
            });
        }
    }
    sent
}

/// GET/POST on the admin listener with the test token.
pub async fn admin(
    gw: &TestGateway,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> TestResponse {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", gw.admin_addr))
        .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    gw.send(req).await
}

/// Every record the admin listing gives, following its cursor.
pub async fn all_records(gw: &TestGateway) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/admin/journal?limit=7".to_owned(),
            Some(c) => format!("/admin/journal?limit=7&cursor={c}"),
        };
        let page = admin(gw, Method::GET, &path, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let v = page.json();
        out.extend(v["records"].as_array().unwrap().iter().cloned());
        match v["next"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// Asserts every sent request has exactly one record with its outcome and status.
pub fn assert_journaled(records: &[serde_json::Value], sent: &[Sent]) {
    for s in sent {
        let found: Vec<_> = records
            .iter()
            .filter(|r| r["requestId"] == s.request_id.as_str())
            .collect();
        assert_eq!(found.len(), 1, "one record for {s:?}");
        assert_eq!(found[0]["outcome"], s.outcome, "{s:?}: {}", found[0]);
        assert_eq!(found[0]["status"], s.status.as_u16(), "{s:?}");
    }
}

/// Canaries found in `bytes` (raw file contents or row text).
pub fn canaries_in(bytes: &[u8]) -> Vec<&'static str> {
    CANARIES
        .iter()
        .copied()
        .filter(|c| bytes.windows(c.len()).any(|w| w == c.as_bytes()))
        .collect()
}
