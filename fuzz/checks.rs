//! The properties the fuzz targets check, written once and shared.
//!
//! Included with `#[path]` by every target in `fuzz/fuzz_targets/` and by `tests/fuzz_corpus.rs`,
//! which replays the committed corpora through the same functions in `cargo nextest run`. Each
//! check takes arbitrary bytes and panics when a property does not hold.
//!
//! Only `mis-gateway`, `serde_json`, `jiff`, `http`, `uuid` and `tokio` may be used here: they are
//! dependencies of both the fuzz crate and the root crate's tests.
#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::{Pin, pin};
use std::sync::LazyLock;
use std::task::{Context as TaskContext, Poll, Waker};

use http::StatusCode;
use jiff::tz::TimeZone;
use mis_gateway::booking::normalize::{self, Context, Normalized};
use mis_gateway::booking::{self, Field, Kind};
use mis_gateway::config::{Config, Secrets};
use mis_gateway::error::GatewayError;
use mis_gateway::upstream::h1::{BodyError, Conn};
use mis_gateway::wire::json::Node;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Inputs holding this marker are also checked for echoes of their own bytes in error texts.
pub const MARKER: &[u8] = b"CANARY";

/// The slot every `normalize` input is checked against (the seed request's).
pub const SLOT: &str = "766998fb-1915-4d54-a3f3-934f60125aac";
/// The backend zone every `normalize` input is read in.
pub const ZONE: &str = "Asia/Novosibirsk";

static SEED: &str = include_str!("../tests/data/seed_request.json");

/// `direction` of the seed request: what an Appointment carries when the MIS sends none.
static SEED_DIRECTION: LazyLock<Node<'static>> = LazyLock::new(|| {
    Node::parse(SEED.as_bytes())
        .expect("the seed request parses")
        .get("direction")
        .expect("the seed request has a direction")
        .clone()
});

static TZ: LazyLock<TimeZone> = LazyLock::new(|| TimeZone::get(ZONE).expect("known zone"));

/// Every JSON path the request schema names: the only paths a problem may carry besides `$`.
static SCHEMA_PATHS: LazyLock<Vec<String>> = LazyLock::new(|| {
    fn walk(fields: &[Field], prefix: &str, out: &mut Vec<String>) {
        for f in fields {
            let path = match prefix {
                "" => f.name.to_owned(),
                p => format!("{p}.{}", f.name),
            };
            if let Kind::Obj(sub) = f.kind {
                walk(sub, &path, out);
            }
            out.push(path);
        }
    }
    let mut out = Vec::new();
    walk(booking::REQUEST, "", &mut out);
    out
});

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Panics if `text` holds a run of 8 or more bytes copied from `input` that covers a
/// [`MARKER`] occurrence, i.e. if it holds the marker at all (every such run contains it, and no
/// fixed text does).
///
/// Runs are anchored on the marker because the error vocabulary (field names such as
/// `lpuToGuid`, reasons such as "is required") legitimately coincides with input bytes, and a
/// fuzzer finds such coincidences. Elsewhere [`request`] bounds echoes structurally: paths must
/// be schema paths, `MalformedJson` details may hold only words and numbers (no quotes or JSON
/// punctuation), and reasons are `&'static str`.
pub fn assert_no_echo(input: &[u8], text: &str, what: &str) {
    if contains(input, MARKER) {
        assert!(
            !contains(text.as_bytes(), MARKER),
            "{what} echoes the input: {text:?}"
        );
    }
}

/// `MalformedJson` details are built from a category and a position only:
/// `Problem: <sentence of ASCII words> (line L, column C).`
fn check_detail(detail: &str) {
    let shape = detail
        .strip_prefix("Problem: ")
        .and_then(|d| d.strip_suffix(")."))
        .and_then(|d| d.rsplit_once(" (line "))
        .and_then(|(sentence, pos)| {
            let (line, column) = pos.split_once(", column ")?;
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            (digits(line) && digits(column)).then_some(sentence)
        });
    match shape {
        Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ') => {}
        _ => panic!("malformed MalformedJson detail: {detail:?}"),
    }
}

/// `request`: any body goes through `booking::check` (what the gateway runs) without panicking,
/// with exactly the answer of the reference `booking::parse` + `booking::validate`; problems name
/// schema paths only, and no error text echoes the input.
pub fn request(data: &[u8]) {
    let checked = booking::check(data);
    let reference = booking::parse(data).and_then(|root| {
        let valid = booking::validate(&root);
        if let Ok(b) = &valid {
            let guid = |n: Option<&Node>| n.and_then(Node::as_str).and_then(booking::parse_guid);
            let direction = root.get("direction");
            assert_eq!(Some(b.slot), guid(root.get("slot")));
            assert_eq!(
                Some(b.lpu_to),
                guid(direction.and_then(|d| d.get("lpuToGuid")))
            );
            assert_eq!(
                Some(b.direction_guid),
                guid(direction.and_then(|d| d.get("guid")))
            );
            assert!(matches!(direction, Some(Node::Obj(_))));
        }
        valid
    });
    assert_eq!(
        checked, reference,
        "booking::check and parse + validate disagree"
    );
    match checked {
        Ok(_) => {}
        Err(GatewayError::MalformedJson { detail }) => {
            check_detail(&detail);
            assert_no_echo(data, &detail, "MalformedJson detail");
        }
        Err(GatewayError::Invalid { problems }) => {
            assert!(!problems.is_empty(), "Invalid without problems");
            for p in &problems {
                assert!(
                    p.path == "$" || SCHEMA_PATHS.contains(&p.path),
                    "problem path {:?} is not a schema path",
                    p.path
                );
                assert!(!p.reason.is_empty(), "empty reason at {}", p.path);
                assert_no_echo(data, &p.path, "problem path");
                assert_no_echo(data, p.reason, "problem reason");
            }
        }
        Err(other) => panic!("check returned {other:?}"),
    }
}

/// The cap `mis_h1` reads bodies under: small, so inputs reach it.
pub const H1_BODY_LIMIT: usize = 4096;

/// A MIS connection that answers with fixed bytes, `step` bytes per read, then closes; it takes
/// every write. Never pending, so one poll finishes any exchange on it.
struct Scripted<'a> {
    answer: &'a [u8],
    step: usize,
}

impl AsyncRead for Scripted<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.step.min(self.answer.len()).min(buf.remaining());
        let (now, later) = self.answer.split_at(n);
        buf.put_slice(now);
        self.answer = later;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What reading one answer gave: the status and body, or which step failed.
#[derive(Debug, PartialEq, Eq)]
enum Read {
    Answer { status: u16, body: Vec<u8> },
    NoHead,
    BodyTooLarge,
    BodyBroken,
}

fn read_answer(answer: &[u8], step: usize) -> Read {
    let exchange = async {
        let mut conn = Conn::new(Scripted { answer, step });
        let Ok(head) = conn.read_head().await else {
            return Read::NoHead;
        };
        assert!(
            !head.status.is_informational(),
            "an interim head was returned"
        );
        match conn.read_body(&head, H1_BODY_LIMIT).await {
            Ok(body) => {
                assert!(
                    body.len() <= H1_BODY_LIMIT,
                    "a body past the cap was returned"
                );
                if let Some(n) = head.declared_length() {
                    assert_eq!(body.len() as u64, n, "the body is not the declared length");
                }
                Read::Answer {
                    status: head.status.as_u16(),
                    body: body.to_vec(),
                }
            }
            Err(BodyError::TooLarge) => Read::BodyTooLarge,
            Err(BodyError::Broken(_)) => Read::BodyBroken,
        }
    };
    let mut exchange = pin!(exchange);
    match exchange
        .as_mut()
        .poll(&mut TaskContext::from_waker(Waker::noop()))
    {
        Poll::Ready(read) => read,
        Poll::Pending => panic!("a transport that is always ready left the exchange pending"),
    }
}

/// `mis_h1`: any bytes a MIS sends as its answer are read by `upstream::h1` without panicking,
/// a body never passes the cap or differs from its declared length, and how the bytes are split
/// across reads (the first input byte picks a read size, 1 to 16 bytes) changes nothing.
pub fn mis_h1(data: &[u8]) {
    let Some((&first, answer)) = data.split_first() else {
        return;
    };
    let whole = read_answer(answer, usize::MAX);
    let sliced = read_answer(answer, usize::from(first % 16) + 1);
    assert_eq!(
        whole, sliced,
        "the answer reads differently when it arrives in pieces"
    );
}

/// Answers every environment variable and every file, so validation goes as deep as it can.
pub struct AnswerAll;

impl Secrets for AnswerAll {
    fn env(&self, _name: &str) -> Option<String> {
        Some("fuzz-env-secret-0123456789".to_owned())
    }
    fn file(&self, _path: &Path) -> std::io::Result<String> {
        Ok("fuzz-file-secret\n".to_owned())
    }
}

/// `config`: any bytes give a `Config` or a non-empty list of problems, never a panic; a loaded
/// config is internally consistent.
pub fn config(data: &[u8]) {
    match Config::from_bytes(data, Path::new("/nonexistent/fuzz"), &AnswerAll) {
        Ok(c) => {
            assert_eq!(c.sha256.len(), 64);
            assert!(!c.backends.is_empty(), "a config without backends loaded");
            for (lpu, &i) in &c.routes {
                assert!(i < c.backends.len(), "route {lpu} points past the backends");
            }
            for b in &c.backends {
                assert!(b.authorization.is_sensitive());
                assert!(b.appointments_uri.path().ends_with("/dir/appointments"));
                assert!(b.connect_timeout < b.timeout && b.headers_timeout <= b.timeout);
            }
        }
        Err(problems) => assert!(!problems.is_empty(), "Err without problems"),
    }
}

/// `normalize`: any MIS body, answered with 200, 400 or 500, gives an Appointment or the error
/// the status calls for; an Appointment rendered and normalized again is a fixed point.
pub fn normalize(data: &[u8]) {
    let ctx = Context {
        slot: booking::parse_guid(SLOT).expect("valid slot"),
        timezone: &TZ,
    };
    for status in [
        StatusCode::OK,
        StatusCode::BAD_REQUEST,
        StatusCode::INTERNAL_SERVER_ERROR,
    ] {
        match normalize::answer(status, data, &ctx) {
            Ok(n) => {
                assert!(status.is_success(), "{status} normalized to an Appointment");
                assert_fixed_point(&n, &ctx);
            }
            Err(GatewayError::OutcomeUnknown) => assert!(status.is_success()),
            Err(GatewayError::MisBadAnswer) => assert!(!status.is_success()),
            Err(GatewayError::Mis(r)) => {
                assert!(!status.is_success());
                assert_eq!(r.status, status);
                assert!(r.message.chars().count() <= 500, "message not capped");
                assert!(!r.message.chars().any(char::is_control), "{:?}", r.message);
                assert_eq!(r.message.trim(), r.message);
                assert!(
                    (1..=16).contains(&r.code.len())
                        && r.code
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                    "code {:?}",
                    r.code
                );
            }
            Err(other) => panic!("{status}: unexpected {other:?}"),
        }
    }
}

/// Renders `first`, normalizes the rendering and renders again: both must agree exactly.
pub fn assert_fixed_point(first: &Normalized, ctx: &Context) {
    let seed_direction = SEED_DIRECTION.to_json();
    let direction = first.mis_direction.as_ref().unwrap_or(&seed_direction);
    let rendered = normalize::render_json(&first.fields, direction);
    let second = normalize::answer(StatusCode::OK, &rendered, ctx).unwrap_or_else(|e| {
        panic!(
            "the rendering does not normalize ({e:?}): {}",
            String::from_utf8_lossy(&rendered)
        )
    });
    assert_eq!(
        second.fields, first.fields,
        "fields changed on re-normalizing"
    );
    let again = normalize::render_json(
        &second.fields,
        second
            .mis_direction
            .as_ref()
            .expect("a rendered Appointment has a direction"),
    );
    assert_eq!(
        String::from_utf8_lossy(&again),
        String::from_utf8_lossy(&rendered),
        "rendering is not a fixed point"
    );
}
