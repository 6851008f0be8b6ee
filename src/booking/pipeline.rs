//! The booking pipeline: one request from headers to the normalized answer.
//!
//! Phases, in order, each one able to end the request with a [`GatewayError`]:
//! 1. on the connection's task: route the path → authenticate → check the idempotency key's
//!    syntax, media type and size → read the body;
//! 2. polled by the connection's task too, but run to the end on a task of its own if the client
//!    goes away (`run_to_end`: a booking that reached the MIS is always recorded, logged and
//!    remembered under its key): parse and
//!    validate → authorize the LPU → pick the backend → claim the idempotency key or the
//!    double-submit slot → admit through the backend's guard → forward → normalize → remember.
//!
//! [`Gateway::handle`] never fails: every error becomes a response, and one access-log event
//! records each request with technical identifiers only.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tracing::Instrument;
use uuid::Uuid;

use crate::booking;
use crate::booking::normalize;
use crate::booking::run_to_end::run_to_end;
use crate::config::{Integrator, On5xx};
use crate::edge::body::{check_content_type, declared_length, drain, read_body};
use crate::error::{GatewayError, RequestId};
use crate::live::{Generation, Live};
use crate::policy::auth::{AuthFailure, Authenticator};
use crate::policy::guard::is_mis_failure;
use crate::policy::idempotency::keyed::{Claim, Keys, Start};
use crate::policy::idempotency::{self, Begin, InFlight, InFlightGuard, Outcome, Store};
use crate::policy::rate::{self, LocalBuckets};
use crate::policy::shared_limits::SharedLimits;
use crate::telemetry::TRACEPARENT;
use crate::telemetry::request::{Ids, Record, log_access, record, request_trace};
use crate::upstream::Upstream;

pub const APPOINTMENTS_PATH: &str = "/dir/appointments";
const IDEMPOTENCY_KEY: &str = "idempotency-key";
const IDEMPOTENT_REPLAYED: http::HeaderName = http::HeaderName::from_static("idempotent-replayed");

/// Shared state of the booking listener.
pub struct Gateway {
    pub live: Arc<Live>,
    pub auth: Authenticator,
    pub store: Arc<dyn Store>,
    /// The store behind this replica's own ledger (see `crate::policy::idempotency::keyed`).
    pub keys: Keys,
    /// Ends bookings still at their MIS when the drain deadline passes.
    pub expiry: crate::edge::drain::Expiry,
    /// The booking journal, when `[journal]` is configured (read at start).
    pub journal: Option<Arc<crate::journal::Journal>>,
    in_flight: Arc<InFlight>,
    fingerprint_key: Vec<u8>,
    /// Token buckets of integrators with a `rate_per_second`, in this process.
    buckets: LocalBuckets,
    /// With a Redis store: the rate budgets and failed-login counters of every replica.
    shared_limits: Option<Arc<SharedLimits>>,
    /// Appointments whose cancellation is at their MIS (one at a time each), under
    /// `cancel_owner`.
    pub(super) cancels: Arc<InFlight>,
    pub(super) cancel_owner: Arc<str>,
}

/// A successful answer or a replay, with the headers that go with it.
pub(super) struct Answer {
    pub(super) body: Vec<u8>,
    pub(super) replayed: bool,
}

/// What phase 2 needs, owned, so it can outlive the client's connection.
struct Booking {
    generation: Arc<Generation>,
    integrator: Arc<Integrator>,
    body: Bytes,
    key: Option<idempotency::Slot>,
    traceparent: Option<HeaderValue>,
    /// HTTP/2: the request runs on a stream task a drain does not wake (see `drain::Expiry`).
    http2: bool,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl crate::edge::server::Handler for Gateway {
    // `handle`'s own future, not one wrapping it: every booking's future is moved whole a few
    // times on its way into hyper, and a wrapper would add its size to each move.
    fn call(
        self: Arc<Self>,
        req: http::Request<hyper::body::Incoming>,
        peer: std::net::SocketAddr,
    ) -> impl Future<Output = http::Response<http_body_util::Full<bytes::Bytes>>> + Send {
        self.handle(req, Some(peer.ip()))
    }

    fn drain_started(&self) {
        self.expiry.begin();
    }

    fn drain_expired(&self) -> bool {
        self.expiry.expire();
        true
    }
}

/// What a gateway is built from besides the live config: the composition root
/// ([`crate::app`]) makes each of them.
pub struct Parts {
    pub store: Arc<dyn Store>,
    /// Key of the body fingerprint's HMAC (the same on every replica of a shared store).
    pub fingerprint_key: Vec<u8>,
    /// With a Redis store: rate budgets and failed-login counters shared by replicas.
    pub shared_limits: Option<Arc<SharedLimits>>,
    pub journal: Option<Arc<crate::journal::Journal>>,
}

impl Gateway {
    pub fn from_parts(live: Arc<Live>, parts: Parts) -> Gateway {
        let config = live.load().config.clone();
        let keys = Keys::new(
            parts.store.clone(),
            config.idempotency.on_store_error,
            config.idempotency.ttl,
            config.idempotency.max_keys,
        );
        Gateway {
            live,
            auth: Authenticator::with_shared(parts.shared_limits.clone()),
            journal: parts.journal,
            store: parts.store,
            keys,
            expiry: crate::edge::drain::Expiry::default(),
            in_flight: Arc::default(),
            fingerprint_key: parts.fingerprint_key,
            buckets: Default::default(),
            shared_limits: parts.shared_limits,
            cancels: Arc::default(),
            cancel_owner: Arc::from(""),
        }
    }

    /// Serves one request from `peer` (the client's address, for failed-login throttling).
    /// Never returns an error: failures are rendered as responses.
    pub async fn handle<B>(
        self: Arc<Self>,
        req: Request<B>,
        peer: Option<std::net::IpAddr>,
    ) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let request_id = RequestId::new();
        let (span, traceparent, tracestate) = request_trace(&req, request_id.as_str());
        let ids = Ids {
            request_id,
            traceparent,
            tracestate,
        };
        let generation = self.live.load();
        let mut rec = Record {
            client: peer,
            operation: "book",
            ..Record::default()
        };
        if let Some(rest) = req
            .uri()
            .path()
            .strip_prefix(super::appointment::APPOINTMENT_PREFIX)
        {
            let rest = rest.to_owned();
            return self
                .appointment(req, rest, peer, generation, ids, span, rec, started)
                .await;
        }
        let booking = match self.receive(req, peer, generation, &mut rec, started).await {
            Ok(b) => b,
            Err(e) => {
                let journal = self.journal.as_deref();
                let (response, entry) =
                    span.in_scope(|| finish(Err(e), &ids, rec, started, journal, None));
                if let (Some(j), Some(entry)) = (journal, entry) {
                    j.submit(entry, None).await;
                }
                return response;
            }
        };
        // Phase 2 runs to its end: dropping this future (client gone) moves it to a task.
        let me = self;
        let phase2 = run_to_end(
            async move {
                let mut memo = Memo::default();
                let result = me.process(booking, &ids, &mut rec, &mut memo).await;
                let journal = me.journal.as_deref();
                let (response, entry) =
                    finish(result, &ids, rec, started, journal, Some(&mut memo));
                if let (Some(j), Some(entry)) = (journal, entry) {
                    // A booked or unknown answer goes out once its outcome is on disk (its
                    // attempt is already), or the wait's bound passed.
                    if let Some(d) = j.submit(entry, memo.ticket.take()).await {
                        d.wait().await;
                    }
                }
                response
            }
            .instrument(span),
        );
        // Phase 2 only ends early through a bug (a panic); it may have sent the booking already,
        // so the honest answer is "outcome unknown", never "not sent".
        phase2
            .await
            .unwrap_or_else(|_| GatewayError::OutcomeUnknown.into_response(&RequestId::new(), None))
    }

    /// Phase 1: everything up to a complete body from an authenticated integrator.
    async fn receive<B>(
        &self,
        req: Request<B>,
        peer: Option<std::net::IpAddr>,
        generation: Arc<Generation>,
        rec: &mut Record,
        started: Instant,
    ) -> Result<Booking, GatewayError>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        check_host(&req)?;
        if req.uri().path() != APPOINTMENTS_PATH {
            return Err(GatewayError::NotFound);
        }
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed { allow: "POST" });
        }
        let config = generation.config.clone();
        let integrator = self
            .admit(req.headers(), peer, &config, rec, started)
            .await?;
        // Two keys are refused, not the first taken: a retry that sent them in the other order
        // would be another booking.
        let mut keys = req.headers().get_all(IDEMPOTENCY_KEY).iter();
        let key = match (keys.next(), keys.next()) {
            (None, _) => None,
            (Some(k), None) if idempotency::valid_key(k.as_bytes()) => {
                Some(idempotency::slot_of(&integrator.login, k.as_bytes()))
            }
            _ => return Err(GatewayError::BadIdempotencyKey),
        };
        rec.key = key;
        check_content_type(req.headers())?;
        let limit = config.server.max_body_bytes;
        let declared = declared_length(req.headers());
        if declared.is_some_and(|n| n > limit as u64) {
            // A client that waits for `100 Continue` has sent nothing yet: answer at once.
            let expects_continue = req
                .headers()
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            if !expects_continue {
                drain(req.into_body(), config.server.body_read_timeout).await;
            }
            return Err(GatewayError::PayloadTooLarge { limit });
        }
        let traceparent = req.headers().get(TRACEPARENT).cloned();
        let http2 = req.version() == http::Version::HTTP_2;
        let body = read_body(
            req.into_body(),
            limit,
            declared.unwrap_or(0) as usize,
            config.server.body_read_timeout,
        )
        .await?;
        Ok(Booking {
            generation,
            integrator,
            body,
            key,
            traceparent,
            http2,
        })
    }

    /// Who asks: exactly one `Authorization`, a known integrator with the right password, not
    /// throttled, within its rate budget (the replicas' shared bucket, or this process's own
    /// when Redis cannot answer).
    pub(super) async fn admit(
        &self,
        headers: &http::HeaderMap,
        peer: Option<std::net::IpAddr>,
        config: &crate::config::Config,
        rec: &mut Record,
        started: Instant,
    ) -> Result<Arc<Integrator>, GatewayError> {
        let mut authorizations = headers.get_all(header::AUTHORIZATION).iter();
        let authorization = authorizations.next();
        if authorizations.next().is_some() {
            return Err(GatewayError::DuplicateAuthorization);
        }
        let integrator = self
            .auth
            .authenticate(
                config,
                authorization.map(HeaderValue::as_bytes),
                peer,
                started,
            )
            .await
            .map_err(|e| match e {
                AuthFailure::Busy => GatewayError::Overloaded {
                    retry_after_secs: 1,
                },
                AuthFailure::Throttled { retry_after_secs } => {
                    GatewayError::AuthThrottled { retry_after_secs }
                }
                AuthFailure::Malformed | AuthFailure::Rejected => GatewayError::Unauthenticated,
            })?;
        rate::check(&self.buckets, self.shared_limits.as_ref(), &integrator).await?;
        rec.integrator = Some(integrator.login.clone());
        Ok(integrator)
    }

    /// Phase 2: validate, route, claim, forward, normalize, remember.
    async fn process(
        &self,
        b: Booking,
        ids: &Ids,
        rec: &mut Record,
        memo: &mut Memo,
    ) -> Result<Answer, GatewayError> {
        let request_id = ids.request_id.as_str();
        let (valid, upstream) = self.route(&b, rec)?;
        let protection = match self.protect(&b, &valid, request_id, rec).await? {
            Protect::Go(p) => p,
            Protect::Answered(answer) => return answer,
        };
        if self.journal.is_some() {
            match self
                .write_ahead(&b, &valid, upstream, ids, &protection, memo)
                .await
            {
                Ok(ticket) => memo.ticket = Some(ticket),
                Err(()) => {
                    // Not sent: the key is given up, so its retry is sent.
                    if let Protection::Key(claim) = protection {
                        self.keys.finish(claim, None, request_id).await;
                    }
                    return Err(GatewayError::Overloaded {
                        retry_after_secs: 1,
                    });
                }
            }
        }
        let booking = self.forward(&b, ids, &valid, upstream, rec);
        let result = match &protection {
            Protection::Key(claim) => self.keys.renewing(claim, booking).await,
            Protection::Keyless { .. } => booking.await,
        };
        if let Protection::Key(claim) = protection {
            let remembered = remembered(&result);
            if self.journal.is_some() {
                memo.key_outcome = remembered.clone();
            }
            self.keys.finish(claim, remembered, request_id).await;
        }
        if result.as_ref().is_err_and(GatewayError::outcome_unknown) {
            tracing::warn!(
                request_id,
                lpu = %valid.lpu_to,
                slot = %valid.slot,
                backend = %upstream.backend.name,
                "booking outcome unknown: the request reached the MIS and its answer was lost"
            );
        }
        let (body, fields) = result?;
        rec.appointment = Some(fields.guid);
        rec.number = Some(fields.number);
        memo.made = Some((fields.source, fields.create_time));
        Ok(Answer {
            body,
            replayed: false,
        })
    }

    /// The booking's attempt, durable in the journal before the MIS sees the booking.
    async fn write_ahead(
        &self,
        b: &Booking,
        valid: &booking::Checked,
        upstream: &Upstream,
        ids: &Ids,
        protection: &Protection,
        memo: &mut Memo,
    ) -> Result<crate::journal::Ticket, ()> {
        let Some(journal) = self.journal.as_deref() else {
            return Ok(crate::journal::Ticket::default());
        };
        let request_id = journal_id(ids);
        let (key, fingerprint) = match protection {
            Protection::Key(claim) => (
                Some(crate::journal::KeyRef::new(
                    journal.secret(),
                    &claim.slot,
                    &request_id,
                )),
                Some(claim.fingerprint),
            ),
            Protection::Keyless { .. } => (None, None),
        };
        memo.key = key;
        journal
            .attempt(crate::journal::Attempt {
                request_id,
                time_us: crate::journal::record::now_us(),
                integrator: b.integrator.login.clone(),
                lpu: valid.lpu_to,
                backend: upstream.backend.name.clone(),
                slot: valid.slot,
                direction: valid.direction_guid,
                key,
                fingerprint,
                cancel: None,
            })
            .await
    }

    /// Checks the body, authorizes its LPU for the integrator and finds the LPU's MIS.
    fn route<'g>(
        &self,
        b: &'g Booking,
        rec: &mut Record,
    ) -> Result<(booking::Checked, &'g Upstream), GatewayError> {
        // One pass over the body checks it and finds its GUIDs, building no tree: a booking
        // waiting on its MIS holds its body (forwarded as received) and three GUIDs. The
        // request's `direction` is taken from the body again in the rare case it is echoed (a
        // MIS answer without one, a replay).
        let valid = booking::check(&b.body)?;
        rec.lpu = Some(valid.lpu_to);
        rec.slot = Some(valid.slot);
        rec.direction = Some(valid.direction_guid);
        if !b.integrator.lpus.allows(&valid.lpu_to) {
            return Err(GatewayError::ForbiddenLpu);
        }
        let idx = b
            .generation
            .config
            .route(&valid.lpu_to)
            .ok_or(GatewayError::NoRoute)?;
        let upstream = b
            .generation
            .upstreams
            .get(idx)
            .ok_or(GatewayError::Internal)?;
        rec.backend = Some(upstream.backend.name.clone());
        Ok((valid, upstream))
    }

    /// Duplicate protection: the key's claim, or the (integrator, referral, slot) in flight.
    /// A key already decided answers here, without the MIS.
    async fn protect(
        &self,
        b: &Booking,
        valid: &booking::Checked,
        request_id: &str,
        rec: &mut Record,
    ) -> Result<Protect, GatewayError> {
        let Some(slot) = b.key else {
            return self
                .in_flight
                .try_enter(&b.integrator.login, &valid.direction_guid, &valid.slot)
                .map(|guard| Protect::Go(Protection::Keyless { _held: guard }))
                .ok_or(GatewayError::DuplicateInFlight);
        };
        // The body's fingerprint is only needed (and only computed) with a key.
        let fingerprint = idempotency::fingerprint(&self.fingerprint_key, &b.body);
        match self.keys.begin(slot, fingerprint, request_id).await {
            Start::Claimed(claim) => Ok(Protect::Go(Protection::Key(claim))),
            Start::Answer(Begin::Claimed | Begin::InFlight) => {
                Err(GatewayError::IdempotencyInFlight)
            }
            Start::Answer(Begin::Mismatch) => Err(GatewayError::IdempotencyMismatch),
            Start::Answer(Begin::Lapsed) => {
                // An answer from the store, not the MIS: counted as a replay (and in the
                // lapsed-claims counter), not as another lost answer. The replica that sent it
                // died before its record: this one is the journal's trace of that booking.
                rec.replayed = true;
                rec.lapsed = true;
                Err(GatewayError::OutcomeUnknown)
            }
            Start::Answer(Begin::Done(outcome)) => {
                rec.replayed = true;
                Ok(Protect::Answered(replay(outcome, &b.body)))
            }
            Start::Rejected => Err(GatewayError::Overloaded {
                retry_after_secs: 1,
            }),
        }
    }

    /// Admits the booking through the backend's guard, sends it and normalizes the answer.
    async fn forward(
        &self,
        b: &Booking,
        ids: &Ids,
        valid: &booking::Checked,
        upstream: &Upstream,
        rec: &mut Record,
    ) -> Result<(Vec<u8>, normalize::Fields), GatewayError> {
        let permit = upstream.guard.admit(upstream.backend.limits)?;
        let mis_started = Instant::now();
        // Cut at the drain's deadline: the client then reads 504 and the key is recorded.
        let answer = self
            .expiry
            .cut(
                upstream.book(
                    &b.body,
                    ids.request_id.header(),
                    ids.traceparent.as_ref().or(b.traceparent.as_ref()),
                    ids.tracestate.as_ref(),
                ),
                b.http2,
            )
            .await
            .unwrap_or(Err(GatewayError::MisTimeout));
        rec.mis_time = Some(mis_started.elapsed());
        let normalized = answer.and_then(|answer| {
            rec.mis_status = Some(answer.status.as_u16());
            // A MIS 5xx after it read the whole booking is no proof that nothing was booked:
            // unless the backend rolls back on 5xx, the answer says so at once, and the key
            // (if any) is remembered as outcome unknown.
            if answer.status.is_server_error() && upstream.backend.on_5xx == On5xx::Unknown {
                return Err(GatewayError::OutcomeUnknown);
            }
            let ctx = normalize::Context {
                slot: valid.slot,
                timezone: &upstream.backend.timezone,
            };
            let n = normalize::answer(answer.status, &answer.body, &ctx)?;
            let direction = match n.mis_direction {
                Some(own) => own,
                None => direction_of(&b.body)?,
            };
            Ok((normalize::render_json(&n.fields, &direction), n.fields))
        });
        permit.record(!normalized.as_ref().is_err_and(is_mis_failure));
        normalized
    }
}

/// RFC 9112 3.2: an HTTP/1.1 request has exactly one Host (HTTP/2 has :authority).
pub(super) fn check_host<B>(req: &Request<B>) -> Result<(), GatewayError> {
    if req.version() == http::Version::HTTP_11 {
        let mut hosts = req.headers().get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (Some(host), None) if valid_host(host.as_bytes()) => {}
            _ => return Err(GatewayError::BadHost),
        }
    }
    Ok(())
}

/// RFC 9112 3.2 / RFC 3986: `Host` is `uri-host [ ":" port ]`: no user info, path, query or
/// fragment, and a port that is a port.
fn valid_host(host: &[u8]) -> bool {
    let Ok(authority) = http::uri::Authority::try_from(host) else {
        return false;
    };
    let text = authority.as_str();
    // The port follows the last ':' outside an IPv6 literal's brackets.
    let port = text
        .rfind(':')
        .filter(|&i| !text[i..].contains(']'))
        .map(|i| &text[i + 1..]);
    !text.contains('@')
        && !authority.host().is_empty()
        && port.is_none_or(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
        })
}

/// What phase 2 leaves for the request's journal record.
#[derive(Default)]
pub(super) struct Memo {
    /// The place its attempt reserved for its outcome.
    pub(super) ticket: Option<crate::journal::Ticket>,
    /// The key's journal form, made once for the attempt (two HMACs) and reused by the outcome.
    key: Option<crate::journal::KeyRef>,
    /// What a same-key retry replays (keyed bookings that reached the MIS).
    key_outcome: Option<Outcome>,
    /// The appointment's `source` and `createTime` (a booking the MIS made).
    made: Option<(String, String)>,
    /// A cancellation's ties.
    pub(super) cancel: Option<crate::journal::CancelOf>,
}

/// What guards a booking against being sent twice while it runs.
enum Protection {
    Key(Claim),
    /// Held for its drop, which lets the same referral and slot in again.
    Keyless {
        _held: InFlightGuard,
    },
}

/// Whether the booking goes on to its MIS, or its key already has the answer.
enum Protect {
    Go(Protection),
    Answered(Result<Answer, GatewayError>),
}

/// What a key remembers of its booking's result; `None` releases it (provably not sent).
fn remembered(result: &Result<(Vec<u8>, normalize::Fields), GatewayError>) -> Option<Outcome> {
    match result {
        Ok((_, fields)) => Some(Outcome::Booked {
            guid: fields.guid.hyphenated().to_string(),
            number: fields.number.clone(),
            slot: fields.slot.hyphenated().to_string(),
            source: fields.source.clone(),
            create_time: fields.create_time.clone(),
        }),
        Err(e) => remembered_error(e),
    }
}

/// The text of a replayed MIS rejection: its status and `Message_code` are the MIS's, its own
/// text was not kept.
pub const REPLAYED_REJECTION: &str = "The MIS refused this booking when it was first sent; this \
    replays its status and Message_code (the MIS's own text is not kept).";

/// Outcomes worth replaying: the MIS decided (a 4xx rejection) or may have booked. Everything
/// else (nothing sent, the MIS failing with 5xx or refusing the gateway) may be retried.
fn remembered_error(e: &GatewayError) -> Option<Outcome> {
    match e {
        GatewayError::Mis(r) if r.status.is_client_error() => Some(Outcome::MisRejected {
            status: r.status.as_u16(),
            code: r.code.clone(),
            // The MIS's own text may name the patient: stores keep technical fields only.
            message: REPLAYED_REJECTION.to_owned(),
        }),
        GatewayError::OutcomeUnknown => Some(Outcome::OutcomeUnknown),
        GatewayError::MisTimeout => Some(Outcome::MisTimeout),
        _ => None,
    }
}

/// The `direction` object of a request body that passed validation, as JSON text.
fn direction_of(body: &[u8]) -> Result<Vec<u8>, GatewayError> {
    let root = booking::parse(body)?;
    let direction = root.get("direction").ok_or(GatewayError::Internal)?;
    Ok(direction.to_json())
}

/// The stored outcome of a key, as the first request got it (`body`: this request's, which
/// carries the same `direction`: its fingerprint matched).
fn replay(outcome: Outcome, body: &[u8]) -> Result<Answer, GatewayError> {
    match outcome {
        Outcome::Booked {
            guid,
            number,
            slot,
            source,
            create_time,
        } => {
            let fields = normalize::Fields {
                guid: Uuid::try_parse(&guid).map_err(|_| GatewayError::Internal)?,
                number,
                slot: Uuid::try_parse(&slot).map_err(|_| GatewayError::Internal)?,
                source,
                create_time,
            };
            Ok(Answer {
                body: normalize::render_json(&fields, &direction_of(body)?),
                replayed: true,
            })
        }
        // The stored text is not read: records of earlier versions hold the MIS's own.
        Outcome::MisRejected { status, code, .. } => {
            Err(GatewayError::Mis(crate::error::MisRejection {
                status: StatusCode::from_u16(status).map_err(|_| GatewayError::Internal)?,
                message: REPLAYED_REJECTION.to_owned(),
                code,
            }))
        }
        Outcome::OutcomeUnknown => Err(GatewayError::OutcomeUnknown),
        Outcome::MisTimeout => Err(GatewayError::MisTimeout),
    }
}

/// Renders the result, records it on the span and in the metrics, writes the access log, and
/// makes the journal's record of it (for an authenticated request).
pub(super) fn finish(
    result: Result<Answer, GatewayError>,
    ids: &Ids,
    mut rec: Record,
    started: Instant,
    journal: Option<&crate::journal::Journal>,
    memo: Option<&mut Memo>,
) -> (Response<Full<Bytes>>, Option<crate::journal::Entry>) {
    let outcome = journal_outcome(&result, &rec);
    let response = match result {
        Ok(answer) => {
            let mut resp = crate::error::json_answer(answer.body, &ids.request_id);
            let h = resp.headers_mut();
            if answer.replayed {
                h.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            }
            resp
        }
        Err(e) => {
            rec.code = Some(e.code());
            rec.unknown = e.outcome_unknown();
            let mut resp = e.into_response(&ids.request_id, ids.trace_id());
            if rec.replayed {
                resp.headers_mut()
                    .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            }
            resp
        }
    };
    let took = started.elapsed();
    record(&rec, response.status(), took);
    log_access(ids, &rec, &response, took);
    let entry = match (journal, &rec.integrator) {
        (Some(j), Some(_)) => Some(journal_entry(j, ids, rec, outcome, &response, took, memo)),
        _ => None,
    };
    (response, entry)
}

/// The journal's name for what became of the request.
fn journal_outcome(result: &Result<Answer, GatewayError>, rec: &Record) -> crate::journal::Kind {
    use crate::journal::Kind;
    match result {
        _ if rec.lapsed => Kind::Unknown,
        _ if rec.replayed => Kind::Replayed,
        Ok(_) if rec.operation == "cancel" => Kind::Cancelled,
        Ok(_) => Kind::Booked,
        Err(GatewayError::OutcomeUnknown | GatewayError::MisTimeout) => Kind::Unknown,
        Err(_) if rec.mis_status.is_some() => Kind::Rejected,
        Err(_) => Kind::NotSent,
    }
}

/// The journal record of an answered request (technical fields only; see `journal::record`).
fn journal_entry(
    journal: &crate::journal::Journal,
    ids: &Ids,
    rec: Record,
    outcome: crate::journal::Kind,
    response: &Response<Full<Bytes>>,
    took: Duration,
    memo: Option<&mut Memo>,
) -> crate::journal::Entry {
    let request_id = journal_id(ids);
    let operation = rec.operation;
    let total_us = took.as_micros() as i64;
    let (made_key, key_outcome, made, cancel) = memo.map_or((None, None, None, None), |m| {
        (
            m.key.take(),
            m.key_outcome.take(),
            m.made.take(),
            m.cancel.take(),
        )
    });
    let trace_id = ids
        .trace_id()
        .and_then(|t| <[u8; 32]>::try_from(t.as_bytes()).ok());
    crate::journal::Entry {
        request_id,
        time_us: crate::journal::record::now_us() - total_us,
        // Made with the attempt when there was one; otherwise (a replay, a refusal) here.
        key: made_key.or_else(|| {
            rec.key
                .map(|slot| crate::journal::KeyRef::new(journal.secret(), &slot, &request_id))
        }),
        integrator: rec.integrator.unwrap_or_default(),
        lpu: rec.lpu,
        backend: rec.backend,
        slot: rec.slot,
        direction: rec.direction,
        outcome,
        appointment: rec.appointment.zip(rec.number),
        status: response.status().as_u16(),
        message_code: rec.code,
        mis_status: rec.mis_status,
        total_us,
        mis_us: rec.mis_time.map(|d| d.as_micros() as i64),
        trace_id,
        key_outcome,
        made,
        operation: if operation == "cancel" {
            crate::journal::Operation::Cancel
        } else {
            crate::journal::Operation::Book
        },
        cancel,
    }
}

/// The request id as the journal keys it (a UUIDv7 by construction).
pub(super) fn journal_id(ids: &Ids) -> Uuid {
    Uuid::try_parse(ids.request_id.as_str()).unwrap_or_else(|_| Uuid::now_v7())
}
