//! An appointment after its booking: `GET` and `DELETE /dir/appointments/{guid}`, routed by the
//! journal (the integrator holds only the guid; the journal knows which MIS made it).
//!
//! The same edge as bookings (one Host, authentication, the rate budget, the error shape, the
//! access log, metrics by operation). An appointment outside the integrator's LPUs answers as
//! one the hub never saw (404 `94042`): it must not learn that the guid exists. A cancellation
//! is written ahead like a booking, sent to the MIS that made the booking with that MIS's
//! credentials, and recorded (a record of its own, linked to the booking's, which is marked
//! cancelled in the same transaction). A second cancellation of a cancelled appointment is
//! answered from the journal.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use tracing::Instrument;
use uuid::Uuid;

use super::normalize;
use super::pipeline::{Answer, BoxError, Gateway, Memo, finish, journal_id};
use crate::config::Integrator;
use crate::error::{FieldProblem, GatewayError, RequestId};
use crate::journal::{CancelOf, Row};
use crate::live::Generation;
use crate::policy::guard::is_mis_failure;
use crate::telemetry::request::{Ids, Record};
use crate::wire::json::write_json_str;

/// The path of one appointment, before its guid.
pub const APPOINTMENT_PREFIX: &str = "/dir/appointments/";
/// The methods an appointment's path takes.
const ALLOW: &str = "GET, DELETE";

/// Why a cancellation is asked for: the federal registry's `RefuseSlot` reasons.
pub const REASONS: [&str; 4] = [
    "patient_decline",
    "mo_decline",
    "error_in_slot",
    "other_reasons",
];
/// The reason of a cancellation that names none.
pub const DEFAULT_REASON: &str = "patient_decline";

/// What is asked of an appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Lookup,
    Cancel { reason: &'static str },
}

impl Gateway {
    /// Serves `GET` or `DELETE` of the appointment at `rest` (the path after
    /// [`APPOINTMENT_PREFIX`]). Never fails: errors are answers.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn appointment<B>(
        self: Arc<Self>,
        req: Request<B>,
        rest: String,
        peer: Option<std::net::IpAddr>,
        generation: Arc<Generation>,
        ids: Ids,
        span: tracing::Span,
        mut rec: Record,
        started: Instant,
    ) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        let verb = match *req.method() {
            Method::GET => "lookup",
            Method::DELETE => "cancel",
            _ => "",
        };
        rec.operation = if verb.is_empty() { "lookup" } else { verb };
        let asked = self
            .receive_appointment(&req, &rest, peer, &generation, &mut rec, started)
            .await;
        // The body of a GET or DELETE means nothing here; it is not read.
        drop(req);
        let (verb, guid, integrator) = match asked {
            Ok(a) => a,
            Err(e) => return self.answer(Err(e), &ids, rec, started, &span, None).await,
        };
        let me = self.clone();
        let phase2 = super::run_to_end::run_to_end(
            async move {
                let mut memo = Memo::default();
                let result = me
                    .decide(
                        verb,
                        guid,
                        &integrator,
                        &generation,
                        &ids,
                        &mut rec,
                        &mut memo,
                    )
                    .await;
                me.answer(
                    result,
                    &ids,
                    rec,
                    started,
                    &tracing::Span::current(),
                    Some(memo),
                )
                .await
            }
            .instrument(span),
        );
        phase2
            .await
            .unwrap_or_else(|_| GatewayError::OutcomeUnknown.into_response(&RequestId::new(), None))
    }

    /// Renders the answer, and journals a cancellation's (a lookup changes nothing and leaves
    /// no record; the access log has it).
    async fn answer(
        &self,
        result: Result<Answer, GatewayError>,
        ids: &Ids,
        rec: Record,
        started: Instant,
        span: &tracing::Span,
        memo: Option<Memo>,
    ) -> Response<Full<Bytes>> {
        let journal = (rec.operation == "cancel")
            .then_some(self.journal.as_deref())
            .flatten();
        let mut memo = memo;
        let (response, entry) =
            span.in_scope(|| finish(result, ids, rec, started, journal, memo.as_mut()));
        if let (Some(j), Some(entry)) = (journal, entry) {
            // A cancelled answer goes out once its record (and its booking's mark) is on disk:
            // a retry is answered from it.
            if let Some(d) = j
                .submit(entry, memo.and_then(|mut m| m.ticket.take()))
                .await
            {
                d.wait().await;
            }
        }
        response
    }

    /// Phase 1: the method, the client, the guid and (a cancellation) its reason.
    async fn receive_appointment<B>(
        &self,
        req: &Request<B>,
        rest: &str,
        peer: Option<std::net::IpAddr>,
        generation: &Generation,
        rec: &mut Record,
        started: Instant,
    ) -> Result<(Verb, Uuid, Arc<Integrator>), GatewayError> {
        super::pipeline::check_host(req)?;
        if rest.is_empty() || rest.contains('/') {
            return Err(GatewayError::NotFound);
        }
        let cancel = match *req.method() {
            Method::GET => false,
            Method::DELETE => true,
            _ => return Err(GatewayError::MethodNotAllowed { allow: ALLOW }),
        };
        let query = req.uri().query().map(str::to_owned);
        let integrator = self
            .admit(req.headers(), peer, &generation.config, rec, started)
            .await?;
        let guid = crate::booking::parse_guid(rest).ok_or_else(|| invalid("path.guid", GUID))?;
        rec.appointment = Some(guid);
        let verb = if cancel {
            Verb::Cancel {
                reason: reason_of(query.as_deref())?,
            }
        } else {
            Verb::Lookup
        };
        Ok((verb, guid, integrator))
    }

    /// Phase 2: the journal's record of the appointment, then the answer or the cancellation.
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        verb: Verb,
        guid: Uuid,
        integrator: &Integrator,
        generation: &Generation,
        ids: &Ids,
        rec: &mut Record,
        memo: &mut Memo,
    ) -> Result<Answer, GatewayError> {
        let journal = self.journal.as_deref().ok_or(GatewayError::NoJournal)?;
        let booking = journal
            .appointment(&guid)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "journal: an appointment could not be looked up");
                GatewayError::Overloaded {
                    retry_after_secs: 1,
                }
            })?
            .ok_or(GatewayError::AppointmentUnknown)?;
        let lpu = booking.lpu.as_deref().and_then(crate::booking::parse_guid);
        // Another integrator's clinic: answered as a guid never seen.
        if !lpu.is_some_and(|l| integrator.lpus.allows(&l)) {
            return Err(GatewayError::AppointmentUnknown);
        }
        let upstream = booking.backend.as_deref().and_then(|name| {
            generation
                .upstreams
                .iter()
                .find(|u| &*u.backend.name == name)
        });
        rec.lpu = lpu;
        rec.slot = booking.slot.as_deref().and_then(crate::booking::parse_guid);
        rec.direction = booking
            .direction
            .as_deref()
            .and_then(crate::booking::parse_guid);
        rec.backend = match (upstream, &booking.backend) {
            (Some(u), _) => Some(u.backend.name.clone()),
            (None, name) => name.as_deref().map(Arc::from),
        };
        let tz = upstream.map_or(jiff::tz::TimeZone::UTC, |u| u.backend.timezone.clone());
        let view = View::of(&booking, guid, &tz)?;
        rec.number = Some(view.fields.number.clone());
        let reason = match verb {
            Verb::Lookup => return Ok(view.render()),
            Verb::Cancel { reason } => reason,
        };
        let booking_id =
            Uuid::try_parse(&booking.request_id).map_err(|_| GatewayError::Internal)?;
        memo.cancel = Some(CancelOf {
            appointment: guid,
            booking: booking_id,
            reason,
        });
        if view.cancelled.is_some() {
            // Cancelled already: the journal answers, the MIS is not asked again.
            rec.replayed = true;
            return Ok(view.render());
        }
        let upstream = upstream.ok_or(GatewayError::BackendGone)?;
        if !upstream.backend.cancel {
            return Err(GatewayError::CancelUnsupported);
        }
        let _held = self
            .cancels
            .try_enter(&self.cancel_owner, &guid, &Uuid::nil())
            .ok_or(GatewayError::CancelInFlight)?;
        let permit = upstream.guard.admit(upstream.backend.limits)?;
        let ticket = journal
            .attempt(crate::journal::Attempt {
                request_id: journal_id(ids),
                time_us: crate::journal::record::now_us(),
                integrator: rec.integrator.clone().unwrap_or_default(),
                lpu: rec.lpu.unwrap_or_default(),
                backend: upstream.backend.name.clone(),
                slot: rec.slot.unwrap_or_default(),
                direction: rec.direction.unwrap_or_default(),
                key: None,
                fingerprint: None,
                cancel: memo.cancel.clone(),
            })
            .await;
        match ticket {
            Ok(t) => memo.ticket = Some(t),
            Err(()) => {
                permit.record(true);
                return Err(GatewayError::Overloaded {
                    retry_after_secs: 1,
                });
            }
        }
        let mis_started = Instant::now();
        let answer = self
            .expiry
            .cut(
                upstream.cancel(
                    &guid,
                    reason,
                    ids.request_id.header(),
                    ids.traceparent.as_ref(),
                    ids.tracestate.as_ref(),
                ),
                false,
            )
            .await
            .unwrap_or(Err(GatewayError::MisTimeout));
        rec.mis_time = Some(mis_started.elapsed());
        let result = answer.and_then(|a| {
            rec.mis_status = Some(a.status.as_u16());
            normalize::cancellation(
                a.status,
                &a.body,
                upstream.backend.on_5xx == crate::config::On5xx::Unknown,
            )
        });
        permit.record(!result.as_ref().is_err_and(is_mis_failure));
        if result.as_ref().is_err_and(GatewayError::outcome_unknown) {
            tracing::warn!(
                request_id = ids.request_id.as_str(),
                appointment = %guid,
                backend = %upstream.backend.name,
                "cancellation outcome unknown: the request reached the MIS and its answer was lost"
            );
        }
        result?;
        let now = jiff::Timestamp::now();
        Ok(View {
            cancelled: Some((format_time(now, &tz), reason.to_owned())),
            ..view
        }
        .render())
    }
}

const GUID: &str = "must be a GUID (8-4-4-4-12 hexadecimal digits)";

fn invalid(path: &str, reason: &'static str) -> GatewayError {
    GatewayError::Invalid {
        problems: vec![FieldProblem {
            path: path.to_owned(),
            reason,
        }],
    }
}

/// The cancellation's reason from the query: `reason=` one of [`REASONS`], or none (the
/// default). Anything else is refused rather than guessed: a misspelt parameter must not turn
/// into the default reason.
fn reason_of(query: Option<&str>) -> Result<&'static str, GatewayError> {
    let mut reason = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "reason" {
            return Err(invalid(
                "query",
                "unknown parameter: only reason is accepted",
            ));
        }
        if reason.is_some() {
            return Err(invalid("query.reason", "must be given at most once"));
        }
        reason = Some(REASONS.into_iter().find(|r| *r == value).ok_or_else(|| {
            invalid(
                "query.reason",
                "must be patient_decline, mo_decline, error_in_slot or other_reasons",
            )
        })?);
    }
    Ok(reason.unwrap_or(DEFAULT_REASON))
}

/// An appointment as the hub answers it: the booking's Appointment (`direction` null: the hub
/// keeps no referral), and its state.
struct View {
    fields: normalize::Fields,
    /// When it was cancelled (RFC 3339 in its MIS's zone) and why.
    cancelled: Option<(String, String)>,
}

impl View {
    fn of(row: &Row, guid: Uuid, tz: &jiff::tz::TimeZone) -> Result<View, GatewayError> {
        let at = |us: i64| {
            format_time(
                jiff::Timestamp::from_microsecond(us).unwrap_or_else(|_| jiff::Timestamp::now()),
                tz,
            )
        };
        let resolved = row.resolution.as_ref().filter(|r| r.guid == Some(guid));
        let number = match (&row.appointment_number, resolved) {
            (Some(n), _) => n.clone(),
            (None, Some(r)) => r.number.clone().unwrap_or_default(),
            (None, None) => String::new(),
        };
        // An operator's resolution made it: created then, as a same-key retry replays it.
        let create_time = match (&row.appointment_created, resolved) {
            (Some(t), _) => t.clone(),
            (None, Some(r)) => at(r.time_us),
            (None, None) => at(row.time_us),
        };
        let slot = row
            .slot
            .as_deref()
            .and_then(crate::booking::parse_guid)
            .ok_or(GatewayError::Internal)?;
        Ok(View {
            fields: normalize::Fields {
                guid,
                number,
                slot,
                source: row
                    .appointment_source
                    .clone()
                    .unwrap_or_else(|| "Internet".into()),
                create_time,
            },
            cancelled: row.cancelled_us.map(|us| {
                (
                    at(us),
                    row.cancel_reason
                        .clone()
                        .unwrap_or_else(|| DEFAULT_REASON.into()),
                )
            }),
        })
    }

    /// The Appointment in the seed's field order, then `status` (and, when cancelled,
    /// `cancelTime` and `cancelReason`).
    fn render(&self) -> Answer {
        let mut body = normalize::render_json(&self.fields, b"null");
        body.pop();
        match &self.cancelled {
            None => body.extend_from_slice(b",\"status\":\"booked\""),
            Some((time, reason)) => {
                body.extend_from_slice(b",\"status\":\"cancelled\",\"cancelTime\":");
                write_json_str(time, &mut body);
                body.extend_from_slice(b",\"cancelReason\":");
                write_json_str(reason, &mut body);
            }
        }
        body.push(b'}');
        Answer {
            body,
            replayed: false,
        }
    }
}

fn format_time(t: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> String {
    t.to_zoned_datetime(tz.clone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_the_four_or_the_default_and_nothing_else() {
        assert_eq!(reason_of(None).unwrap(), DEFAULT_REASON);
        assert_eq!(reason_of(Some("")).unwrap(), DEFAULT_REASON);
        for r in REASONS {
            assert_eq!(reason_of(Some(&format!("reason={r}"))).unwrap(), r);
        }
        let field = |q: &str| match reason_of(Some(q)) {
            Err(GatewayError::Invalid { problems }) => problems[0].path.clone(),
            other => panic!("{q}: {other:?}"),
        };
        assert_eq!(field("reason=PATIENT_DECLINE"), "query.reason");
        assert_eq!(
            field("reason=patient_decline&reason=mo_decline"),
            "query.reason"
        );
        assert_eq!(field("reasn=mo_decline"), "query");
        assert_eq!(field("reason"), "query.reason");
    }
}
