//! `/admin/journal`: list, show and resolve records. Bad input is a 422 naming the field;
//! errors are `{"error": text}` (plus `"field"` on 422), never echoing what was sent.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};
use uuid::Uuid;

use super::record::{Filter, Kind, Operation, cursor_of, parse_cursor};
use super::{Answer, Journal, ResolveError};
use crate::edge::admin::json_response;
use crate::live::Live;

pub const PREFIX: &str = "/admin/journal";
/// Room for a 500-character note however it is escaped (`\uXXXX` surrogate pairs take 12
/// bytes a character) beside the other fields.
const MAX_BODY: usize = 16 * 1024;
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
/// The longest note and appointment number an operator may record.
pub const MAX_NOTE: usize = 500;
pub const MAX_NUMBER: usize = 64;

pub async fn handle<B>(
    journal: Option<&Arc<Journal>>,
    _live: &Live,
    req: Request<B>,
) -> Response<Full<Bytes>>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(journal) = journal else {
        return error(StatusCode::NOT_FOUND, "no [journal] is configured");
    };
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let rest = path[PREFIX.len()..].trim_start_matches('/');
    let method = req.method().clone();
    match (method, rest.split_once('/')) {
        (Method::GET, None) if rest.is_empty() => list(journal, query.as_deref()).await,
        (Method::GET, None) => match request_id(rest) {
            Ok(id) => show(journal, &id).await,
            Err(r) => *r,
        },
        (Method::POST, Some((id, "resolve"))) => {
            let id = match request_id(id) {
                Ok(id) => id,
                Err(r) => return *r,
            };
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return invalid(
                        "body",
                        &format!("must be a JSON object of at most {MAX_BODY} bytes"),
                    );
                }
            };
            let (answer, note) = match parse_resolution(&body) {
                Ok(r) => r,
                Err((field, reason)) => return invalid(field, reason),
            };
            match journal.resolve(&id, answer, note, "admin").await {
                Ok(row) => json_response(StatusCode::OK, row.to_json()),
                Err(e) => resolve_error(e),
            }
        }
        (_, Some((_, "resolve"))) | (_, None) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

fn request_id(s: &str) -> Result<String, Box<Response<Full<Bytes>>>> {
    Uuid::try_parse(s)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| Box::new(invalid("requestId", "must be a request id (a UUID)")))
}

async fn show(journal: &Journal, id: &str) -> Response<Full<Bytes>> {
    match journal.get(id).await {
        Ok(Some(row)) => json_response(StatusCode::OK, row.to_json()),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "no journal record has this request id",
        ),
        Err(e) => unavailable(&e),
    }
}

async fn list(journal: &Journal, query: Option<&str>) -> Response<Full<Bytes>> {
    let filter = match parse_filter(query.unwrap_or("")) {
        Ok(f) => f,
        Err((field, reason)) => return invalid(field, reason),
    };
    // One more than asked tells whether there is a next page.
    let mut probe = filter.clone();
    probe.limit = filter.limit + 1;
    match journal.list(&probe).await {
        Ok(mut rows) => {
            let next = if rows.len() > filter.limit as usize {
                rows.truncate(filter.limit as usize);
                rows.last().map(cursor_of)
            } else {
                None
            };
            let records: Vec<Value> = rows.iter().map(|r| r.to_json()).collect();
            json_response(StatusCode::OK, json!({"records": records, "next": next}))
        }
        Err(e) => unavailable(&e),
    }
}

/// The listing's query string; the error names the parameter.
pub fn parse_filter(query: &str) -> Result<Filter, (&'static str, &'static str)> {
    let mut f = Filter {
        limit: DEFAULT_LIMIT,
        ..Filter::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).ok_or(("query", "is not valid percent-encoded UTF-8"))?;
        match k {
            "outcome" => {
                f.outcome = Some(Kind::parse(&v).ok_or((
                    "outcome",
                    "must be booked, rejected, not_sent, unknown, replayed or cancelled",
                ))?)
            }
            "operation" => {
                f.operation =
                    Some(Operation::parse(&v).ok_or(("operation", "must be book or cancel"))?)
            }
            "status" => {
                f.status = Some(
                    v.parse()
                        .ok()
                        .filter(|n| (100..=599).contains(n))
                        .ok_or(("status", "must be an HTTP status from 100 to 599"))?,
                )
            }
            "code" => {
                f.code = Some(
                    Some(v)
                        .filter(|c| {
                            !c.is_empty()
                                && c.len() <= 16
                                && c.bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                        })
                        .ok_or((
                            "code",
                            "must be a Message_code of 1 to 16 letters and digits",
                        ))?,
                )
            }
            "unresolved" => {
                f.unresolved = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(("unresolved", "must be true or false")),
                }
            }
            "backend" => {
                f.backend = Some(name(v).ok_or(("backend", "must be 1 to 200 characters"))?)
            }
            "integrator" => {
                f.integrator = Some(name(v).ok_or(("integrator", "must be 1 to 200 characters"))?)
            }
            "since" => f.since_us = Some(time(&v).ok_or(("since", "must be an RFC 3339 time"))?),
            "until" => f.until_us = Some(time(&v).ok_or(("until", "must be an RFC 3339 time"))?),
            "limit" => {
                f.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or(("limit", "must be a whole number from 1 to 1000"))?
            }
            "cursor" => {
                f.before = Some(
                    parse_cursor(&v)
                        .ok_or(("cursor", "must be the \"next\" value of an earlier page"))?,
                )
            }
            _ => {
                return Err((
                    "query",
                    "unknown parameter (expected outcome, operation, status, code, unresolved, backend, integrator, since, until, limit, cursor)",
                ));
            }
        }
    }
    Ok(f)
}

fn name(v: String) -> Option<String> {
    (!v.is_empty() && v.chars().count() <= 200 && !v.chars().any(char::is_control)).then_some(v)
}

fn time(v: &str) -> Option<i64> {
    if let Ok(t) = v.parse::<jiff::Timestamp>() {
        return Some(t.as_microsecond());
    }
    // A valid RFC 3339 time past the range a timestamp holds (`9999-12-31T23:59:59Z`) is
    // that range's end: no record is that old or that new.
    let civil: jiff::civil::DateTime = v.get(..19)?.parse().ok()?;
    let rest = v.get(19..)?;
    let rest = match rest.strip_prefix('.') {
        Some(r) => r.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    let offset = rest == "Z"
        || rest == "z"
        || (rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':'
            && rest
                .bytes()
                .enumerate()
                .all(|(i, b)| matches!(i, 0 | 3) || b.is_ascii_digit()));
    if !offset {
        return None;
    }
    Some(if civil.year() > 0 {
        jiff::Timestamp::MAX.as_microsecond()
    } else {
        jiff::Timestamp::MIN.as_microsecond()
    })
}

fn percent_decode(s: &str) -> Option<String> {
    // Every `%` must start an escape of two hex digits: the crate passes a malformed one
    // through as text, and `u8::from_str_radix` (used before) took `%+f` for one.
    let b = s.as_bytes();
    let escapes_ok = b.iter().enumerate().all(|(i, &c)| {
        c != b'%'
            || (b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if !escapes_ok {
        return None;
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// A parsed resolution: what the clinic said, and the note.
pub type Parsed = (Answer, Option<String>);

/// `{"booked": true, "guid", "number"}` or `{"booked": false}` (a booking's record),
/// `{"cancelled": true|false}` (a cancellation's), each with an optional `note`.
pub fn parse_resolution(body: &[u8]) -> Result<Parsed, (&'static str, &'static str)> {
    // As for bookings, a key twice is refused, not "the last wins".
    let tree =
        crate::wire::json::Node::parse(body).map_err(|_| ("body", "must be a JSON object"))?;
    if tree.duplicate_keys().next().is_some() {
        return Err(("body", "must not name a field twice"));
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| ("body", "must be a JSON object"))?;
    let obj = v.as_object().ok_or(("body", "must be a JSON object"))?;
    for k in obj.keys() {
        if !matches!(
            k.as_str(),
            "booked" | "cancelled" | "guid" | "number" | "note"
        ) {
            return Err((
                "body",
                "unknown field (expected booked, cancelled, guid, number, note)",
            ));
        }
    }
    if obj.contains_key("cancelled") && obj.contains_key("booked") {
        return Err(("cancelled", "must not come with booked"));
    }
    let note = note_of(obj)?;
    if let Some(c) = obj.get("cancelled") {
        let cancelled = c.as_bool().ok_or(("cancelled", "must be true or false"))?;
        if obj.contains_key("guid") || obj.contains_key("number") {
            return Err(("guid", "must be absent with cancelled"));
        }
        let answer = if cancelled {
            Answer::Cancelled
        } else {
            Answer::NotCancelled
        };
        return Ok((answer, note));
    }
    let booked = obj
        .get("booked")
        .ok_or(("booked", "is required"))?
        .as_bool()
        .ok_or(("booked", "must be true or false"))?;
    if !booked {
        if obj.contains_key("guid") || obj.contains_key("number") {
            return Err(("guid", "must be absent when booked is false"));
        }
        return Ok((Answer::NotBooked, note));
    }
    let guid = match obj.get("guid") {
        None => return Err(("guid", "is required when booked is true")),
        Some(g) => g
            .as_str()
            .and_then(crate::booking::parse_guid)
            .ok_or(("guid", "must be a GUID"))?,
    };
    let number = match obj.get("number") {
        None => return Err(("number", "is required when booked is true")),
        Some(Value::String(n)) if valid_number(n) => n.clone(),
        Some(Value::Number(n)) if n.is_u64() => n.to_string(),
        Some(_) => return Err(("number", "must be 1 to 64 visible characters")),
    };
    Ok((Answer::Booked(guid, number), note))
}

fn note_of(
    obj: &serde_json::Map<String, Value>,
) -> Result<Option<String>, (&'static str, &'static str)> {
    match obj.get("note") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => check_note(s).map(Some).map_err(|r| ("note", r)),
        Some(_) => Err(("note", "must be technical text of 1 to 500 characters")),
    }
}

/// A resolution's note: technical text an operator types (a ticket reference, who was
/// called). The journal keeps no patient data, so what looks like a phone, polis or document
/// number (six digits or more in a row, spaces and brackets between them ignored, so a date or
/// a ticket number passes) or an e-mail address is refused rather than kept.
pub fn check_note(s: &str) -> Result<String, &'static str> {
    if s.is_empty() || s.chars().count() > MAX_NOTE || s.chars().any(char::is_control) {
        return Err("must be technical text of 1 to 500 characters");
    }
    let mut run = 0;
    for c in s.chars() {
        if c.is_ascii_digit() {
            run += 1;
            if run >= 6 {
                return Err(
                    "must not hold what looks like a phone, polis or document number (six digits or more): notes are technical, never patient data",
                );
            }
        } else if !matches!(c, ' ' | '(' | ')' | '+') {
            run = 0;
        }
    }
    if s.contains('@') {
        return Err("must not hold an e-mail address: notes are technical, never patient data");
    }
    Ok(s.to_owned())
}

pub fn valid_number(n: &str) -> bool {
    !n.is_empty() && n.len() <= MAX_NUMBER && n.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The zone of the record's backend (the replayed `createTime` is rendered in it).
fn resolve_error(e: ResolveError) -> Response<Full<Bytes>> {
    match e {
        ResolveError::NotFound => error(
            StatusCode::NOT_FOUND,
            "no journal record has this request id",
        ),
        ResolveError::Conflict(why) => error(StatusCode::CONFLICT, why),
        ResolveError::Unavailable(e) => unavailable(&e),
        ResolveError::StoreUnavailable(e) => {
            tracing::error!(error = %e, "journal: a resolution's idempotency key could not be written");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the idempotency store is unavailable; nothing was changed, retry",
            )
        }
    }
}

fn unavailable(e: &str) -> Response<Full<Bytes>> {
    tracing::error!(error = %e, "journal query failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the journal database is unavailable; retry",
    )
}

fn error(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    json_response(status, json!({"error": text}))
}

fn invalid(field: &str, reason: &str) -> Response<Full<Bytes>> {
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"error": format!("{field} {reason}"), "field": field, "reason": reason}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_name_the_parameter_they_refuse() {
        assert_eq!(parse_filter("outcome=lost").unwrap_err().0, "outcome");
        assert_eq!(parse_filter("limit=0").unwrap_err().0, "limit");
        assert_eq!(parse_filter("since=yesterday").unwrap_err().0, "since");
        // A sign is not a hex digit (issue 29): `%+f` is no escape.
        assert_eq!(parse_filter("integrator=a%+f").unwrap_err().0, "query");
        assert_eq!(parse_filter("integrator=a%2").unwrap_err().0, "query");
        assert_eq!(
            parse_filter("integrator=call%2Dcentre")
                .unwrap()
                .integrator
                .as_deref(),
            Some("call-centre")
        );
        // RFC 3339 allows times a timestamp cannot hold: they are its range's ends.
        let far =
            parse_filter("since=9999-12-31T23%3A59%3A59Z&until=9999-12-31T23%3A59%3A59%2B03%3A00")
                .unwrap();
        assert_eq!(far.since_us, Some(jiff::Timestamp::MAX.as_microsecond()));
        assert_eq!(far.until_us, Some(jiff::Timestamp::MAX.as_microsecond()));
        assert_eq!(
            parse_filter("since=9999-12-31T23%3A59%3A59").unwrap_err().0,
            "since",
            "an offset is required"
        );
        assert_eq!(parse_filter("cursor=abc").unwrap_err().0, "cursor");
        assert_eq!(parse_filter("colour=red").unwrap_err().0, "query");
        let f = parse_filter("outcome=unknown&since=2026-01-01T00%3A00%3A00Z&limit=5").unwrap();
        assert_eq!(f.outcome, Some(Kind::Unknown));
        assert_eq!(f.limit, 5);
        assert!(f.since_us.is_some());
    }

    #[test]
    fn resolutions_name_the_field_they_refuse() {
        let field = |b: &str| parse_resolution(b.as_bytes()).unwrap_err().0;
        assert_eq!(field("{}"), "booked");
        assert_eq!(
            parse_resolution(br#"{"booked": true, "booked": false}"#).unwrap_err(),
            ("body", "must not name a field twice")
        );
        // A 500-character note written as \u escapes fits the body's cap.
        let escaped: String = std::iter::repeat_n("\\u0416", 500).collect();
        let body = format!(r#"{{"booked": false, "note": "{escaped}"}}"#);
        assert!(body.len() > 2500 && body.len() < MAX_BODY);
        assert_eq!(
            parse_resolution(body.as_bytes())
                .unwrap()
                .1
                .unwrap()
                .chars()
                .count(),
            500
        );
        assert_eq!(field(r#"{"booked": "yes"}"#), "booked");
        assert_eq!(field(r#"{"booked": true, "number": "1"}"#), "guid");
        assert_eq!(
            field(r#"{"booked": true, "guid": "nope", "number": "1"}"#),
            "guid"
        );
        assert_eq!(
            field(r#"{"booked": true, "guid": "0e8a4f3c-5d6b-4a7e-8f90-1a2b3c4d5e6f"}"#),
            "number"
        );
        assert_eq!(field(r#"{"booked": false, "note": ""}"#), "note");
        for looks_personal in [
            r#"{"booked": false, "note": "called +7 (999) 000 11 22"}"#,
            r#"{"booked": false, "note": "polis 9876543210123456"}"#,
            r#"{"booked": false, "note": "mail ivanov@example.ru"}"#,
        ] {
            assert_eq!(field(looks_personal), "note", "{looks_personal}");
        }
        assert!(
            parse_resolution(br#"{"booked": false, "note": "ticket INC-4411, 2026-12-07"}"#)
                .is_ok()
        );
        assert_eq!(field("[1]"), "body");
        let ok = parse_resolution(
            br#"{"booked": true, "guid": "0e8a4f3c-5d6b-4a7e-8f90-1a2b3c4d5e6f", "number": 42}"#,
        )
        .unwrap();
        assert!(matches!(ok.0, Answer::Booked(_, ref n) if n == "42"));
        assert_eq!(
            parse_resolution(br#"{"booked": false, "note": "called the clinic"}"#).unwrap(),
            (Answer::NotBooked, Some("called the clinic".into()))
        );
        assert_eq!(
            parse_resolution(br#"{"cancelled": true}"#).unwrap(),
            (Answer::Cancelled, None)
        );
        assert_eq!(field(r#"{"cancelled": "no"}"#), "cancelled");
        assert_eq!(field(r#"{"cancelled": true, "booked": true}"#), "cancelled");
        assert_eq!(
            field(r#"{"cancelled": true, "guid": "0e8a4f3c-5d6b-4a7e-8f90-1a2b3c4d5e6f"}"#),
            "guid"
        );
        assert_eq!(
            parse_filter("operation=cancel").unwrap().operation,
            Some(Operation::Cancel)
        );
        assert_eq!(parse_filter("operation=refund").unwrap_err().0, "operation");
    }
}
