//! Pure functions that turn whatever a MIS answered into the seed's Appointment or an error.
//!
//! MIS answers are untrusted input: parsed strictly, checked field by field, re-serialized in
//! one fixed shape. Nothing from a MIS body is copied to the client raw, and a 2xx that is not
//! a valid Appointment is never passed through.

use std::borrow::Cow;

use http::StatusCode;
use jiff::tz::TimeZone;

use crate::booking::parse_guid;
use crate::error::{GatewayError, MisRejection};
use crate::wire::json::{Node, Parser, write_json_str};

/// Booking sources of this MIS family, in their canonical spelling.
pub const SOURCES: &[&str] = &[
    "Internet",
    "Infomat",
    "CallCenter",
    "Doctor",
    "DoctorOtherLPU",
    "Registry",
];

/// The appointment's own fields, normalized. `direction` is rendered separately: it comes from
/// the MIS when it sent one, otherwise from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    pub guid: uuid::Uuid,
    pub number: String,
    pub slot: uuid::Uuid,
    pub source: String,
    pub create_time: String,
}

/// What the request contributes to normalizing its answer.
pub struct Context<'a> {
    pub slot: uuid::Uuid,
    pub timezone: &'a TimeZone,
}

/// A successful answer: the fields, and the MIS's own `direction` if it sent one, as compact
/// JSON text (what [`Node::to_json`] writes for it).
#[derive(Debug)]
pub struct Normalized {
    pub fields: Fields,
    pub mis_direction: Option<Vec<u8>>,
}

/// Normalizes a complete MIS answer (status and body already capped in size).
pub fn answer(status: StatusCode, body: &[u8], ctx: &Context) -> Result<Normalized, GatewayError> {
    if status.is_success() {
        // The MIS said it booked: an unusable body means the booking may exist.
        return appointment(body, ctx).ok_or(GatewayError::OutcomeUnknown);
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(GatewayError::MisRejectedGateway);
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(GatewayError::Overloaded {
            retry_after_secs: 1,
        });
    }
    // Business rejections of this MIS family come as 400 (and 409/422 from some); other 4xx
    // (404, 405, 413, 415...) say the gateway and the MIS disagree on the protocol — not the
    // integrator's mistake, so not passed on under a status that would blame the request.
    let business = matches!(status.as_u16(), 400 | 409 | 422);
    if business || status.is_server_error() {
        return Err(rejection(status, body).map_or(GatewayError::MisBadAnswer, GatewayError::Mis));
    }
    Err(GatewayError::MisBadAnswer)
}

/// A MIS's answer to a cancellation: any 2xx is done (this family answers an
/// ExceptionResponse with `Message_code` 2000, others 204); its own rejection (400/409/422, or
/// 404 for an appointment it does not know) is passed on; a 5xx after it read the request is
/// an unknown outcome unless the backend rolls back on 5xx (`five_xx_unknown` false).
pub fn cancellation(
    status: StatusCode,
    body: &[u8],
    five_xx_unknown: bool,
) -> Result<(), GatewayError> {
    if status.is_success() {
        return Ok(());
    }
    if status.is_server_error() && five_xx_unknown {
        return Err(GatewayError::OutcomeUnknown);
    }
    match status.as_u16() {
        401 | 403 => Err(GatewayError::MisRejectedGateway),
        429 => Err(GatewayError::Overloaded {
            retry_after_secs: 1,
        }),
        400 | 404 | 409 | 422 | 500..=599 => {
            Err(rejection(status, body).map_or(GatewayError::MisBadAnswer, GatewayError::Mis))
        }
        _ => Err(GatewayError::MisBadAnswer),
    }
}

/// The Appointment JSON in the seed's field order.
pub fn render(fields: &Fields, direction: &Node) -> Vec<u8> {
    render_json(fields, &direction.to_json())
}

/// As [`render`], with `direction` already serialized (a JSON object). Byte for byte what
/// `serde_json` writes for these fields in this order.
pub fn render_json(fields: &Fields, direction: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        160 + fields.number.len()
            + fields.source.len()
            + fields.create_time.len()
            + direction.len(),
    );
    let mut guid = uuid::Uuid::encode_buffer();
    out.extend_from_slice(b"{\"guid\":\"");
    out.extend_from_slice(fields.guid.hyphenated().encode_lower(&mut guid).as_bytes());
    out.extend_from_slice(b"\",\"number\":");
    write_json_str(&fields.number, &mut out);
    out.extend_from_slice(b",\"slot\":\"");
    out.extend_from_slice(fields.slot.hyphenated().encode_lower(&mut guid).as_bytes());
    out.extend_from_slice(b"\",\"source\":");
    write_json_str(&fields.source, &mut out);
    out.extend_from_slice(b",\"createTime\":");
    write_json_str(&fields.create_time, &mut out);
    // The seed's field order, direction last.
    out.extend_from_slice(b",\"direction\":");
    out.extend_from_slice(direction);
    out.push(b'}');
    out
}

/// Reads an ExceptionResponse `{"Code", "Message", "Message_code"}`; the HTTP status wins over
/// `Code`. The message is kept (integrators show it) but cleaned and capped.
pub fn rejection(status: StatusCode, body: &[u8]) -> Option<MisRejection> {
    let root = Node::parse(body).ok()?;
    let message = root.get("Message")?.as_str()?;
    let code = match root.get("Message_code")? {
        Node::Str(s) => s.to_string(),
        Node::Num(n) => n.to_string(),
        _ => return None,
    };
    if code.is_empty()
        || code.len() > 16
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return None;
    }
    Some(MisRejection {
        status,
        message: clean_message(message),
        code,
    })
}

fn clean_message(m: &str) -> String {
    const MAX_CHARS: usize = 500;
    m.chars()
        .filter(|c| !c.is_control())
        .take(MAX_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The Appointment in a 2xx body, read in one pass that builds no tree: the top-level members
/// the gateway reads are taken as values, `direction` is re-serialized as it is read, the rest
/// is checked and skipped. `None` for anything [`Node::parse`] refuses, a repeated top-level
/// key, or a field that fails its check.
fn appointment(body: &[u8], ctx: &Context) -> Option<Normalized> {
    let text = std::str::from_utf8(body).ok()?;
    let mut p = Parser::new(text);
    if p.peek_value() != Some(b'{') {
        return None;
    }
    let (mut guid, mut number, mut slot, mut source, mut create_time) =
        (None, None, None, None, None);
    let mut direction = None;
    // A repeated top-level key is refused. A member taken is known to be repeated by its place
    // being filled already; the other names seen are listed (none in the usual answer, so
    // nothing is allocated).
    let mut direction_seen = false;
    let mut others: Vec<Cow<str>> = Vec::new();
    let mut more = p.open(b'}').ok()?;
    while more {
        let span = p.key().ok()?;
        let key = p.key_text(span);
        let taken = match key.as_ref() {
            "guid" => Some(&mut guid),
            "number" => Some(&mut number),
            "slot" => Some(&mut slot),
            "source" => Some(&mut source),
            "createTime" => Some(&mut create_time),
            _ => None,
        };
        match taken {
            Some(Some(_)) => return None,
            Some(value) => *value = Some(p.value().ok()?),
            None if key == "direction" => {
                if std::mem::replace(&mut direction_seen, true) {
                    return None;
                }
                match p.peek_value() {
                    Some(b'{') => {
                        let mut json = Vec::with_capacity(512);
                        p.transcode(&mut json).ok()?;
                        direction = Some(json);
                    }
                    Some(b'n') => {
                        p.value().ok()?;
                    }
                    _ => return None,
                }
            }
            None if others.contains(&key) => return None,
            None => {
                p.skip_value().ok()?;
                others.push(key);
            }
        }
        more = p.next(b'}').ok()?;
    }
    p.end().ok()?;

    let guid = parse_guid(guid?.as_str()?)?;
    let number = match number? {
        Node::Str(s) if !s.is_empty() && s.len() <= 64 => s.into_owned(),
        Node::Num(n) if n.is_u64() || n.is_i64() => n.to_string(),
        _ => return None,
    };
    let slot = match slot {
        None | Some(Node::Null) => ctx.slot,
        Some(Node::Str(s)) => parse_guid(&s)?,
        Some(_) => return None,
    };
    if slot != ctx.slot {
        // A booking into another slot than asked is not something to hand back as success.
        return None;
    }
    let source = match source {
        None | Some(Node::Null) => "Internet",
        Some(Node::Str(s)) => SOURCES.iter().find(|c| c.eq_ignore_ascii_case(&s))?,
        Some(_) => return None,
    };
    let create_time = rfc3339(create_time?.as_str()?, ctx.timezone)?;
    Some(Normalized {
        fields: Fields {
            guid,
            number,
            slot,
            source: source.to_owned(),
            create_time,
        },
        mis_direction: direction,
    })
}

/// A MIS time as RFC 3339 with the offset in force in the clinic's zone at that instant.
///
/// Times with an offset (or `Z`) name an instant already; local times without one
/// (`2023-04-05 14:00:00.000`, `2023-04-05T14:00:00`) are read in the backend's zone, taking the
/// earlier reading of a repeated hour and moving forward over a skipped one.
pub fn rfc3339(text: &str, tz: &TimeZone) -> Option<String> {
    if text.len() > 64 {
        return None;
    }
    let ts = match text.parse::<jiff::Timestamp>() {
        Ok(ts) => ts,
        Err(_) => {
            let local: jiff::civil::DateTime = text.parse().ok()?;
            tz.to_ambiguous_timestamp(local).compatible().ok()?
        }
    };
    // RFC 3339 offsets have no seconds; historical local mean times do (+05:21:10). Such an
    // instant is given in UTC rather than rounded to a different instant.
    let offset = match tz.to_offset(ts) {
        o if o.seconds() % 60 == 0 => o,
        _ => jiff::tz::Offset::UTC,
    };
    let mut out = String::with_capacity(32);
    jiff::fmt::temporal::DateTimePrinter::new()
        .print_timestamp_with_offset(&ts, offset, &mut out)
        .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    #[test]
    fn renders_the_seed_field_order_with_the_direction_last_from_a_tree_or_from_text() {
        let direction = Node::parse(br#"{"guid":"a","lpuToGuid":"b","n":[1,"\u0416"]}"#).unwrap();
        let fields = Fields {
            guid: uuid::Uuid::nil(),
            number: "0\"1".into(),
            slot: uuid::Uuid::max(),
            source: "Internet".into(),
            create_time: "2023-04-05T14:00:00+07:00".into(),
        };
        let text = serde_json::to_vec(&direction).unwrap();
        let rendered = render_json(&fields, &text);
        assert_eq!(rendered, render(&fields, &direction));
        assert_eq!(
            String::from_utf8(rendered).unwrap(),
            concat!(
                r#"{"guid":"00000000-0000-0000-0000-000000000000","number":"0\"1","#,
                r#""slot":"ffffffff-ffff-ffff-ffff-ffffffffffff","source":"Internet","#,
                r#""createTime":"2023-04-05T14:00:00+07:00","#,
                r#""direction":{"guid":"a","lpuToGuid":"b","n":[1,"Ж"]}}"#
            )
        );
    }

    #[test]
    fn naive_times_are_read_in_the_backend_zone() {
        let cases = [
            (
                "2023-04-05 14:00:00.000",
                "Asia/Novosibirsk",
                "2023-04-05T14:00:00+07:00",
            ),
            (
                "2023-04-05T14:00:00",
                "Europe/Moscow",
                "2023-04-05T14:00:00+03:00",
            ),
            (
                "2023-04-05T14:00:00",
                "Europe/Kaliningrad",
                "2023-04-05T14:00:00+02:00",
            ),
            (
                "2023-04-05T14:00:00",
                "Asia/Kamchatka",
                "2023-04-05T14:00:00+12:00",
            ),
            (
                "2023-04-05T14:00:00.250",
                "Europe/Samara",
                "2023-04-05T14:00:00.25+04:00",
            ),
            // Moscow was UTC+4 in 2012 (permanent "summer" time).
            (
                "2012-01-10T09:00:00",
                "Europe/Moscow",
                "2012-01-10T09:00:00+04:00",
            ),
        ];
        for (input, zone, want) in cases {
            assert_eq!(
                rfc3339(input, &tz(zone)).as_deref(),
                Some(want),
                "{input} in {zone}"
            );
        }
    }

    #[test]
    fn times_with_offsets_keep_their_instant() {
        let z = tz("Asia/Novosibirsk");
        assert_eq!(
            rfc3339("2019-07-23T12:50:00+03:00", &z).as_deref(),
            Some("2019-07-23T16:50:00+07:00")
        );
        assert_eq!(
            rfc3339("2019-07-23T09:50:00Z", &z).as_deref(),
            Some("2019-07-23T16:50:00+07:00")
        );
        assert_eq!(rfc3339("yesterday", &z), None);
        assert_eq!(rfc3339("2019-13-23T09:50:00", &z), None);
    }

    #[test]
    fn rejections_keep_status_and_code() {
        let r = rejection(
            StatusCode::BAD_REQUEST,
            br#"{"Code":400,"Message":"Slot\u0007 is taken","Message_code":4001}"#,
        )
        .unwrap();
        assert_eq!(
            (r.status, r.code.as_str(), r.message.as_str()),
            (StatusCode::BAD_REQUEST, "4001", "Slot is taken")
        );
        assert!(rejection(StatusCode::BAD_REQUEST, b"<html>").is_none());
    }
}
