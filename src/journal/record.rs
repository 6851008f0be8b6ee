//! One journal record: the technical facts of one authenticated booking request. No patient
//! data: identifiers, codes, statuses and durations only; the idempotency key only as keyed hashes.

use std::sync::Arc;

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use crate::policy::idempotency::{Fingerprint, Outcome, Slot};

/// What became of a booking request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Booked,
    /// The MIS answered with an error of its own.
    Rejected,
    /// The gateway answered without sending the booking.
    NotSent,
    /// The booking reached the MIS and its answer was lost (`95022`, `95040`).
    Unknown,
    /// Answered from the idempotency store (a booking) or the journal (a cancellation of an
    /// appointment already cancelled).
    Replayed,
    /// The MIS cancelled the appointment.
    Cancelled,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Booked,
        Kind::Rejected,
        Kind::NotSent,
        Kind::Unknown,
        Kind::Replayed,
        Kind::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Booked => "booked",
            Kind::Rejected => "rejected",
            Kind::NotSent => "not_sent",
            Kind::Unknown => "unknown",
            Kind::Replayed => "replayed",
            Kind::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Outcomes whose record is durable before the answer goes out: a booking may exist, or
    /// a cancellation a retry must be answered from.
    pub fn must_be_durable(self) -> bool {
        matches!(self, Kind::Booked | Kind::Unknown | Kind::Cancelled)
    }
}

/// What a record is of: `POST /dir/appointments` or `DELETE /dir/appointments/{guid}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Operation {
    #[default]
    Book,
    Cancel,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Book => "book",
            Operation::Cancel => "cancel",
        }
    }

    pub fn parse(s: &str) -> Option<Operation> {
        [Operation::Book, Operation::Cancel]
            .into_iter()
            .find(|o| o.as_str() == s)
    }

    /// The column's value: NULL for a booking (every record written before cancellations
    /// existed is one, and a booking's insert binds one value less).
    pub fn column(self) -> Option<&'static str> {
        match self {
            Operation::Book => None,
            Operation::Cancel => Some("cancel"),
        }
    }
}

/// A cancellation's ties: the appointment, the booking record it cancels, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelOf {
    pub appointment: Uuid,
    /// The booking's record (its request id).
    pub booking: Uuid,
    /// One of `booking::appointment::REASONS`.
    pub reason: &'static str,
}

/// The idempotency key, never as itself: `hash` (HMAC of its store slot) lets records of one
/// key be found together; `seal` (the slot XOR an HMAC of the request id) lets a resolution
/// reach the store entry. Both need the gateway's fingerprint key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef {
    pub hash: [u8; 32],
    pub seal: [u8; 32],
}

impl KeyRef {
    pub fn new(secret: &[u8], slot: &Slot, request_id: &Uuid) -> KeyRef {
        let hash = mac(secret, b"journal-key", slot);
        let pad = mac(secret, b"journal-seal", request_id.as_bytes());
        let mut seal = [0u8; 32];
        for i in 0..32 {
            seal[i] = slot[i] ^ pad[i];
        }
        KeyRef { hash, seal }
    }

    /// The store slot sealed in `seal` for `request_id`.
    pub fn unseal(secret: &[u8], seal: &[u8; 32], request_id: &Uuid) -> Slot {
        let pad = mac(secret, b"journal-seal", request_id.as_bytes());
        let mut slot = [0u8; 32];
        for i in 0..32 {
            slot[i] = seal[i] ^ pad[i];
        }
        slot
    }
}

fn mac(secret: &[u8], domain: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = hmac::Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(domain);
    m.update(data);
    m.finalize().into_bytes().into()
}

/// A record as the gateway writes it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub request_id: Uuid,
    /// When the request arrived, microseconds since the Unix epoch.
    pub time_us: i64,
    pub integrator: Arc<str>,
    pub lpu: Option<Uuid>,
    pub backend: Option<Arc<str>>,
    pub slot: Option<Uuid>,
    pub direction: Option<Uuid>,
    pub key: Option<KeyRef>,
    pub outcome: Kind,
    /// The appointment's guid and number (booked and replayed bookings, cancellations).
    pub appointment: Option<(Uuid, String)>,
    /// The appointment's `source` and `createTime` as the booking's answer gave them (a
    /// lookup by guid answers them again).
    pub made: Option<(String, String)>,
    pub operation: Operation,
    /// A cancellation's ties (with `operation` cancel).
    pub cancel: Option<CancelOf>,
    /// What the client got.
    pub status: u16,
    pub message_code: Option<std::borrow::Cow<'static, str>>,
    pub mis_status: Option<u16>,
    pub total_us: i64,
    pub mis_us: Option<i64>,
    /// W3C trace id, 32 hex digits.
    pub trace_id: Option<[u8; 32]>,
    /// What a same-key retry replays (keyed bookings that reached the MIS): after a restart the
    /// key store is rebuilt from it. Technical fields only, as the idempotency store keeps them.
    pub key_outcome: Option<Outcome>,
}

/// The write-ahead record of a booking about to be sent: committed before the MIS sees it, so
/// a gateway that dies while the booking is there leaves a trace that becomes `unknown`.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub request_id: Uuid,
    pub time_us: i64,
    pub integrator: Arc<str>,
    pub lpu: Uuid,
    pub backend: Arc<str>,
    pub slot: Uuid,
    pub direction: Uuid,
    pub key: Option<KeyRef>,
    /// The keyed body fingerprint (HMAC under the gateway's key): a retry after a restart is
    /// matched against it.
    pub fingerprint: Option<Fingerprint>,
    /// A cancellation's attempt: what it cancels (a booking's: none).
    pub cancel: Option<CancelOf>,
}

/// What the writer thread commits: attempts and outcomes share its transactions.
// Each item travels boxed whole (in its `Job`): boxing the larger variant would add an
// allocation per outcome and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Item {
    Attempt(Attempt),
    Outcome(Entry),
}

/// Why a record is `unknown` without an answer having been given: its attempt outlived the
/// process that sent it.
pub const ORPHAN_REASON: &str = "the gateway stopped while the booking was at the MIS";
/// The same, of a cancellation.
pub const ORPHAN_CANCEL_REASON: &str = "the gateway stopped while the cancellation was at the MIS";

/// A key rebuilt from the journal: its store slot, the body's fingerprint and what a retry gets
/// (`None`: a resolution released it, the retry is sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownKey {
    pub slot: Slot,
    pub fingerprint: Fingerprint,
    pub outcome: Option<Outcome>,
}

/// An operator's answer to an `unknown` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub time_us: i64,
    /// The clinic has it: the booking was made (a booking's record), or the appointment was
    /// cancelled (a cancellation's).
    pub booked: bool,
    pub guid: Option<Uuid>,
    pub number: Option<String>,
    /// Technical text only (a ticket reference, who was called).
    pub note: Option<String>,
    /// `admin` or `cli`.
    pub via: String,
}

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub request_id: String,
    pub time_us: i64,
    pub integrator: String,
    pub lpu: Option<String>,
    pub backend: Option<String>,
    pub slot: Option<String>,
    pub direction: Option<String>,
    pub key_hash: Option<String>,
    pub key_seal: Option<String>,
    pub outcome: String,
    pub appointment_guid: Option<String>,
    pub appointment_number: Option<String>,
    pub status: i64,
    pub message_code: Option<String>,
    pub mis_status: Option<i64>,
    pub total_us: i64,
    pub mis_us: Option<i64>,
    pub trace_id: Option<String>,
    pub resolution: Option<Resolution>,
    /// Set on records the gateway wrote for an attempt it found without an outcome.
    pub reason: Option<String>,
    /// `book` or `cancel`.
    pub operation: String,
    pub appointment_source: Option<String>,
    pub appointment_created: Option<String>,
    /// A cancellation's reason; on a booking's record, the reason it was cancelled with.
    pub cancel_reason: Option<String>,
    /// A booking's record: when a cancellation of it succeeded, and who asked.
    pub cancelled_us: Option<i64>,
    pub cancelled_by: Option<String>,
    /// A cancellation's booking record, or a cancelled booking's cancellation record.
    pub linked_request_id: Option<String>,
}

impl Row {
    /// The record in the admin API's shape.
    pub fn to_json(&self) -> Value {
        let appointment = match (&self.appointment_guid, &self.appointment_number) {
            (Some(g), Some(n)) => json!({"guid": g, "number": n}),
            _ => Value::Null,
        };
        let cancel = self.operation == Operation::Cancel.as_str();
        let resolution = match &self.resolution {
            None => Value::Null,
            Some(r) if cancel => json!({
                "time": rfc3339(r.time_us),
                "cancelled": r.booked,
                "note": r.note,
                "via": r.via,
            }),
            Some(r) => json!({
                "time": rfc3339(r.time_us),
                "booked": r.booked,
                "guid": r.guid.map(|g| g.to_string()),
                "number": r.number,
                "note": r.note,
                "via": r.via,
            }),
        };
        let cancelled = match (self.cancelled_us, cancel) {
            (Some(at), false) => json!({
                "time": rfc3339(at),
                "reason": self.cancel_reason,
                "by": self.cancelled_by,
                "requestId": self.linked_request_id,
            }),
            _ => Value::Null,
        };
        json!({
            "requestId": self.request_id,
            "time": rfc3339(self.time_us),
            "integrator": self.integrator,
            "lpu": self.lpu,
            "backend": self.backend,
            "slot": self.slot,
            "directionGuid": self.direction,
            "keyHash": self.key_hash,
            "outcome": self.outcome,
            "status": self.status,
            "messageCode": self.message_code,
            "misStatus": self.mis_status,
            "durationMs": self.total_us as f64 / 1e3,
            "misDurationMs": self.mis_us.map(|u| u as f64 / 1e3),
            "traceId": self.trace_id,
            "appointment": appointment,
            "resolution": resolution,
            "reason": self.reason,
            "operation": self.operation,
            "cancelReason": if cancel { self.cancel_reason.clone() } else { None },
            "bookingRequestId": if cancel { self.linked_request_id.clone() } else { None },
            "cancelled": cancelled,
        })
    }

    /// Whether an operator may still resolve it.
    pub fn open_unknown(&self) -> bool {
        self.outcome == Kind::Unknown.as_str() && self.resolution.is_none()
    }
}

/// One operator action, as the audit keeps it: who (an operator's login, or `token` for the
/// admin token), through what, from where, what was done to what, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// A UUIDv7: its order is the time order.
    pub id: String,
    pub time_us: i64,
    pub who: String,
    /// `console` or `admin-api`.
    pub via: String,
    /// `sign-in`, `sign-in-failed`, `sign-out`, `resolve`, `reload`.
    pub action: String,
    /// What it acted on (a record's request id).
    pub target: Option<String>,
    /// The client's address.
    pub address: Option<String>,
    /// `ok`, `refused` or `failed`.
    pub outcome: String,
    /// Technical text only (the resolution's answer, the reload's result).
    pub detail: Option<String>,
}

impl AuditEntry {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "time": rfc3339(self.time_us),
            "who": self.who,
            "via": self.via,
            "action": self.action,
            "target": self.target,
            "address": self.address,
            "outcome": self.outcome,
            "detail": self.detail,
        })
    }
}

/// What a listing asks for; newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub outcome: Option<Kind>,
    pub operation: Option<Operation>,
    /// The status the client got.
    pub status: Option<u16>,
    /// The `Message_code` the client got.
    pub code: Option<String>,
    /// Only `unknown` records nobody resolved yet.
    pub unresolved: bool,
    pub backend: Option<String>,
    pub integrator: Option<String>,
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    pub limit: u32,
    /// Records strictly older than this (time, request id): the previous page's last.
    pub before: Option<(i64, String)>,
}

/// A value a listing's query binds.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Int(i64),
}

impl Filter {
    /// The listing's SQL (newest first, `columns` selected) and the values it binds, in order;
    /// `placeholder(n)` writes the n-th (1-based) placeholder in the database's syntax.
    pub fn query(
        &self,
        columns: &str,
        placeholder: impl Fn(usize) -> String,
    ) -> (String, Vec<Param>) {
        let mut sql = format!("SELECT {columns} FROM journal WHERE 1 = 1");
        let mut params = Vec::new();
        let mut bind = |sql: &mut String, clause: &str, v: Param| {
            params.push(v);
            sql.push_str(&clause.replace('?', &placeholder(params.len())));
        };
        if let Some(k) = self.outcome {
            bind(
                &mut sql,
                " AND outcome = ?",
                Param::Text(k.as_str().to_owned()),
            );
        }
        match self.operation {
            None => {}
            Some(Operation::Book) => sql.push_str(" AND operation IS NULL"),
            Some(Operation::Cancel) => sql.push_str(" AND operation = 'cancel'"),
        }
        if self.unresolved {
            sql.push_str(" AND outcome = 'unknown' AND resolved_us IS NULL");
        }
        if let Some(st) = self.status {
            bind(&mut sql, " AND status = ?", Param::Int(i64::from(st)));
        }
        if let Some(c) = &self.code {
            bind(&mut sql, " AND message_code = ?", Param::Text(c.clone()));
        }
        if let Some(b) = &self.backend {
            bind(&mut sql, " AND backend = ?", Param::Text(b.clone()));
        }
        if let Some(i) = &self.integrator {
            bind(&mut sql, " AND integrator = ?", Param::Text(i.clone()));
        }
        if let Some(s) = self.since_us {
            bind(&mut sql, " AND time_us >= ?", Param::Int(s));
        }
        if let Some(u) = self.until_us {
            bind(&mut sql, " AND time_us < ?", Param::Int(u));
        }
        if let Some((t, id)) = &self.before {
            bind(&mut sql, " AND (time_us < ?", Param::Int(*t));
            bind(&mut sql, " OR (time_us = ?", Param::Int(*t));
            bind(&mut sql, " AND request_id < ?))", Param::Text(id.clone()));
        }
        sql.push_str(&format!(
            " ORDER BY time_us DESC, request_id DESC LIMIT {}",
            self.limit
        ));
        (sql, params)
    }
}

/// The listing cursor of a row: `<time_us>.<requestId>`.
pub fn cursor_of(row: &Row) -> String {
    format!("{}.{}", row.time_us, row.request_id)
}

pub fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (t, id) = c.split_once('.')?;
    let id = Uuid::try_parse(id).ok()?;
    Some((t.parse().ok()?, id.hyphenated().to_string()))
}

pub fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

pub fn rfc3339(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_slot_opens_only_with_its_key_and_request() {
        let slot = crate::policy::idempotency::slot_of("portal", b"key-1");
        let id = Uuid::now_v7();
        let k = KeyRef::new(b"secret-secret-secret", &slot, &id);
        assert_ne!(k.seal, slot);
        assert_eq!(KeyRef::unseal(b"secret-secret-secret", &k.seal, &id), slot);
        assert_ne!(KeyRef::unseal(b"other-secret-secret", &k.seal, &id), slot);
        assert_ne!(
            KeyRef::unseal(b"secret-secret-secret", &k.seal, &Uuid::now_v7()),
            slot
        );
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let id = Uuid::now_v7().hyphenated().to_string();
        assert_eq!(parse_cursor(&format!("17.{id}")), Some((17, id.clone())));
        assert_eq!(parse_cursor("17"), None);
        assert_eq!(parse_cursor("x.y"), None);
    }
}
