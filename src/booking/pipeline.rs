//! The booking pipeline: one request from headers to the normalized answer.
//!
//! Phases, in order, each one able to end the request with a [`GatewayError`]:
//! 1. on the connection's task: route the path → authenticate → check the idempotency key's
//!    syntax, media type and size → read the body;
//! 2. polled by the connection's task too, but run to the end on a task of its own if the client
//!    goes away ([`run_to_end`]: a booking that reached the MIS is always recorded, logged and
//!    remembered under its key): parse and
//!    validate → authorize the LPU → pick the backend → claim the idempotency key or the
//!    double-submit slot → admit through the backend's guard → forward → normalize → remember.
//!
//! [`Gateway::handle`] never fails: every error becomes a response, and one access-log event
//! records each request with technical identifiers only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::booking;
use crate::booking::normalize;
use crate::booking::run_to_end::run_to_end;
use crate::config::{Integrator, On5xx, StoreKind};
use crate::error::{GatewayError, RequestId};
use crate::live::{Generation, Live};
use crate::policy::auth::{AuthFailure, Authenticator};
use crate::policy::guard::is_mis_failure;
use crate::policy::idempotency::keyed::{Keys, Start};
use crate::policy::idempotency::redis::RedisStore;
use crate::policy::idempotency::{self, Begin, InFlight, MemoryStore, Outcome, Store};
use crate::policy::shared_limits::SharedLimits;
use crate::telemetry::TRACEPARENT;

pub const APPOINTMENTS_PATH: &str = "/dir/appointments";
const IDEMPOTENCY_KEY: &str = "idempotency-key";
const IDEMPOTENT_REPLAYED: http::HeaderName = http::HeaderName::from_static("idempotent-replayed");

/// Shared state of the booking listener.
pub struct Gateway {
    pub live: Arc<Live>,
    pub auth: Authenticator,
    pub store: Arc<dyn Store>,
    /// The store behind this replica's own ledger (see [`crate::policy::idempotency::keyed`]).
    pub keys: Keys,
    /// Ends bookings still at their MIS when the drain deadline passes.
    pub expiry: crate::edge::drain::Expiry,
    /// The booking journal, when `[journal]` is configured (read at start).
    pub journal: Option<Arc<crate::journal::Journal>>,
    in_flight: Arc<InFlight>,
    fingerprint_key: Vec<u8>,
    /// Token buckets of integrators with a `rate_per_second`.
    buckets: std::sync::Mutex<std::collections::HashMap<Arc<str>, Bucket>>,
    /// With a Redis store: the rate budgets and failed-login counters of every replica.
    shared_limits: Option<Arc<SharedLimits>>,
}

/// A token bucket: `tokens` left as of `at`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What the access log says about one request. Only technical identifiers: never a body,
/// a name, a header value or a query string.
#[derive(Default)]
struct Record {
    /// The client's address (behind trusted proxies, the one they named).
    client: Option<std::net::IpAddr>,
    integrator: Option<Arc<str>>,
    lpu: Option<Uuid>,
    slot: Option<Uuid>,
    backend: Option<Arc<str>>,
    appointment: Option<Uuid>,
    mis_status: Option<u16>,
    mis_time: Option<Duration>,
    code: Option<std::borrow::Cow<'static, str>>,
    /// The answer says the booking may exist (`GatewayError::outcome_unknown`).
    unknown: bool,
    replayed: bool,
    /// For the journal: the referral and the key's store slot.
    direction: Option<Uuid>,
    key: Option<idempotency::Slot>,
    /// The appointment's number (moved from the answer's fields, not copied).
    number: Option<String>,
}

/// A successful answer or a replay, with the headers that go with it.
struct Answer {
    body: Vec<u8>,
    replayed: bool,
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

impl Gateway {
    /// A gateway over `live`, with the idempotency store the initial config names.
    pub fn new(live: Arc<Live>) -> Gateway {
        let config = live.load().config.clone();
        let settings = &config.idempotency;
        let memory = || MemoryStore::new(settings.ttl, settings.max_keys);
        let store: Arc<dyn Store> = match &settings.store {
            StoreKind::Memory => Arc::new(memory()),
            StoreKind::Redis(redis) => {
                match RedisStore::with_settings(redis.clone(), settings.ttl, settings.lease) {
                    Ok(store) => Arc::new(store),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot use the Redis idempotency store; keys are kept in this process only");
                        Arc::new(memory())
                    }
                }
            }
        };
        Self::with_store(live, store)
    }

    /// A gateway with a given idempotency store (a shared one for several replicas).
    pub fn with_store(live: Arc<Live>, store: Arc<dyn Store>) -> Gateway {
        let config = live.load().config.clone();
        let fingerprint_key = match &config.idempotency.fingerprint_key {
            Some(k) => k.as_bytes().to_vec(),
            None => {
                let mut k = vec![0u8; 32];
                getrandom::fill(&mut k).expect("the OS random source is available");
                k
            }
        };
        let keys = Keys::new(
            store.clone(),
            config.idempotency.on_store_error,
            config.idempotency.ttl,
            config.idempotency.max_keys,
        );
        // With a shared store, the limits are shared too (the same Redis, its own connection).
        let shared_limits = match &config.idempotency.store {
            StoreKind::Memory => None,
            StoreKind::Redis(redis) => match SharedLimits::open(redis) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!(error = %e, "cannot share limits through Redis; they are kept per process");
                    None
                }
            },
        };
        let journal = config.journal.as_ref().and_then(|settings| {
            crate::journal::Journal::open(settings, fingerprint_key.clone(), store.clone())
                .map_err(|e| tracing::error!(error = %e, "cannot start the booking journal; bookings go on without it"))
                .ok()
        });
        Gateway {
            live,
            auth: Authenticator::with_shared(shared_limits.clone()),
            journal,
            store,
            keys,
            expiry: crate::edge::drain::Expiry::default(),
            in_flight: Arc::default(),
            fingerprint_key,
            buckets: Default::default(),
            shared_limits,
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
            ..Record::default()
        };
        let booking = match self.receive(req, peer, generation, &mut rec, started).await {
            Ok(b) => b,
            Err(e) => {
                let journal = self.journal.as_deref();
                return span.in_scope(|| finish(Err(e), &ids, rec, started, journal).0);
            }
        };
        // Phase 2 runs to its end: dropping this future (client gone) moves it to a task.
        let me = self;
        let phase2 = run_to_end(
            async move {
                let result = me.process(booking, &ids, &mut rec).await;
                let (response, durable) = finish(result, &ids, rec, started, me.journal.as_deref());
                // A booked or unknown answer goes out once its journal record is on disk.
                if let Some(d) = durable {
                    d.wait().await;
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
        // RFC 9112 3.2: an HTTP/1.1 request has exactly one Host (HTTP/2 has :authority).
        if req.version() == http::Version::HTTP_11 {
            let mut hosts = req.headers().get_all(header::HOST).iter();
            if hosts.next().is_none() || hosts.next().is_some() {
                return Err(GatewayError::BadHost);
            }
        }
        if req.uri().path() != APPOINTMENTS_PATH {
            return Err(GatewayError::NotFound);
        }
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let mut authorizations = req.headers().get_all(header::AUTHORIZATION).iter();
        let authorization = authorizations.next();
        if authorizations.next().is_some() {
            return Err(GatewayError::DuplicateAuthorization);
        }
        let config = generation.config.clone();
        let integrator = self
            .auth
            .authenticate(
                &config,
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
        match (&self.shared_limits, integrator.rate) {
            (Some(shared), Some(limit)) => {
                // The lease answers without a wait; only an empty one asks Redis.
                if shared.from_lease(&integrator, limit).is_none() {
                    Box::pin(self.check_shared_rate(shared, &integrator, limit)).await?;
                }
            }
            _ => self.check_rate(&integrator)?,
        }
        rec.integrator = Some(integrator.login.clone());
        let key = match req.headers().get(IDEMPOTENCY_KEY) {
            None => None,
            Some(k) if idempotency::valid_key(k.as_bytes()) => {
                Some(idempotency::slot_of(&integrator.login, k.as_bytes()))
            }
            Some(_) => return Err(GatewayError::BadIdempotencyKey),
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

    /// The integrator's budget in the replicas' shared bucket; this process's own when Redis
    /// cannot answer.
    async fn check_shared_rate(
        &self,
        shared: &Arc<SharedLimits>,
        integrator: &Integrator,
        limit: crate::config::RateLimit,
    ) -> Result<(), GatewayError> {
        match shared.take(integrator, limit).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(wait)) => Err(GatewayError::RateLimited {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            }),
            Err(()) => self.check_rate(integrator),
        }
    }

    /// The integrator's request budget in this process, if it has one.
    fn check_rate(&self, integrator: &Integrator) -> Result<(), GatewayError> {
        let Some(limit) = integrator.rate else {
            return Ok(());
        };
        let rate = limit.per_second_milli as f64 / 1000.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(integrator.login.clone()).or_insert(Bucket {
            tokens: f64::from(limit.burst),
            at: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(f64::from(limit.burst));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(GatewayError::RateLimited {
                retry_after_secs: ((1.0 - b.tokens) / rate).ceil().max(1.0) as u64,
            })
        }
    }

    /// Phase 2: validate, route, claim, forward, normalize, remember.
    async fn process(
        &self,
        b: Booking,
        ids: &Ids,
        rec: &mut Record,
    ) -> Result<Answer, GatewayError> {
        let request_id = ids.request_id.as_str();
        // One pass over the body checks it and finds its GUIDs, building no tree: a booking
        // waiting on its MIS holds its body (~1 KiB, forwarded as received) and three GUIDs.
        // The request's `direction` is taken from the body again in the rare case it is echoed
        // (a MIS answer without one, a replay).
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

        // Duplicate protection: an explicit key, or the (integrator, referral, slot) in flight.
        // The body's fingerprint is only needed (and only computed) with a key.
        let fingerprint = match b.key {
            Some(_) => idempotency::fingerprint(&self.fingerprint_key, &b.body),
            None => [0; 32],
        };
        let _in_flight;
        let mut claimed = None;
        match b.key {
            Some(slot) => match self.keys.begin(slot, fingerprint, request_id).await {
                Start::Claimed(claim) => claimed = Some(claim),
                Start::Answer(Begin::Claimed | Begin::InFlight) => {
                    return Err(GatewayError::IdempotencyInFlight);
                }
                Start::Answer(Begin::Mismatch) => {
                    return Err(GatewayError::IdempotencyMismatch);
                }
                Start::Answer(Begin::Lapsed) => {
                    // An answer from the store, not the MIS: counted as a replay (and in the
                    // lapsed-claims counter), not as another lost answer.
                    rec.replayed = true;
                    return Err(GatewayError::OutcomeUnknown);
                }
                Start::Answer(Begin::Done(outcome)) => {
                    rec.replayed = true;
                    return replay(outcome, &b.body);
                }
                Start::Rejected => {
                    return Err(GatewayError::Overloaded {
                        retry_after_secs: 1,
                    });
                }
            },
            None => {
                _in_flight = self
                    .in_flight
                    .try_enter(&b.integrator.login, &valid.direction_guid, &valid.slot)
                    .ok_or(GatewayError::DuplicateInFlight)?;
            }
        }

        let booking = async {
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
        };
        let result = match &claimed {
            Some(claim) => self.keys.renewing(claim, booking).await,
            None => booking.await,
        };

        if let Some(claim) = claimed {
            let remembered = match &result {
                Ok((_, fields)) => Some(Outcome::Booked {
                    guid: fields.guid.hyphenated().to_string(),
                    number: fields.number.clone(),
                    slot: fields.slot.hyphenated().to_string(),
                    source: fields.source.clone(),
                    create_time: fields.create_time.clone(),
                }),
                Err(e) => remembered_error(e).or_else(|| {
                    // A MIS 5xx after it read the booking is no proof that nothing was booked.
                    let failed_after_reading = rec.mis_status.is_some_and(|s| s >= 500);
                    (failed_after_reading && upstream.backend.on_5xx == On5xx::Unknown)
                        .then_some(Outcome::OutcomeUnknown)
                }),
            };
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
        Ok(Answer {
            body,
            replayed: false,
        })
    }
}

/// Outcomes worth replaying: the MIS decided (a 4xx rejection) or may have booked. Everything
/// else (nothing sent, the MIS failing with 5xx or refusing the gateway) may be retried.
fn remembered_error(e: &GatewayError) -> Option<Outcome> {
    match e {
        GatewayError::Mis(r) if r.status.is_client_error() => Some(Outcome::MisRejected {
            status: r.status.as_u16(),
            code: r.code.clone(),
            message: r.message.clone(),
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
        Outcome::MisRejected {
            status,
            code,
            message,
        } => Err(GatewayError::Mis(crate::error::MisRejection {
            status: StatusCode::from_u16(status).map_err(|_| GatewayError::Internal)?,
            message,
            code,
        })),
        Outcome::OutcomeUnknown => Err(GatewayError::OutcomeUnknown),
        Outcome::MisTimeout => Err(GatewayError::MisTimeout),
    }
}

/// Renders the result, records it on the span and in the metrics, writes the access log, and
/// hands the journal its record (booked and unknown ones come back to be awaited).
fn finish(
    result: Result<Answer, GatewayError>,
    ids: &Ids,
    mut rec: Record,
    started: Instant,
    journal: Option<&crate::journal::Journal>,
) -> (Response<Full<Bytes>>, Option<crate::journal::Durable>) {
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
    let durable = match (journal, &rec.integrator) {
        (Some(j), Some(_)) => j.submit(journal_entry(j, ids, rec, outcome, &response, took)),
        _ => None,
    };
    (response, durable)
}

/// The journal's name for what became of the request.
fn journal_outcome(result: &Result<Answer, GatewayError>, rec: &Record) -> crate::journal::Kind {
    use crate::journal::Kind;
    match result {
        _ if rec.replayed => Kind::Replayed,
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
) -> crate::journal::Entry {
    let request_id = Uuid::try_parse(ids.request_id.as_str()).unwrap_or_else(|_| Uuid::now_v7());
    let total_us = took.as_micros() as i64;
    let trace_id = ids
        .trace_id()
        .and_then(|t| <[u8; 32]>::try_from(t.as_bytes()).ok());
    crate::journal::Entry {
        request_id,
        time_us: crate::journal::record::now_us() - total_us,
        key: rec
            .key
            .map(|slot| crate::journal::KeyRef::new(journal.secret(), &slot, &request_id)),
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
    }
}

/// The request id and, when tracing gave one, this request's own `traceparent` (its server
/// span), sent to the MIS when no client span is made for the call.
struct Ids {
    request_id: RequestId,
    traceparent: Option<HeaderValue>,
    /// The integrator's `tracestate`, sent on with the trace it belongs to.
    tracestate: Option<HeaderValue>,
}

impl Ids {
    /// The W3C trace id (32 hex digits), for error bodies and logs.
    fn trace_id(&self) -> Option<&str> {
        crate::telemetry::trace_id(self.traceparent.as_ref()?)
    }
}

/// The server span of one request, named by route (never by raw path), child of the
/// integrator's `traceparent` when it sent one.
fn server_span<B>(req: &Request<B>, request_id: &str) -> tracing::Span {
    let routed = req.uri().path() == APPOINTMENTS_PATH;
    let name = if routed {
        "POST /dir/appointments"
    } else {
        "HTTP"
    };
    let span = tracing::info_span!(
        "request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %req.method(),
        http.route = if routed { APPOINTMENTS_PATH } else { "" },
        http.response.status_code = tracing::field::Empty,
        request_id,
        integrator = tracing::field::Empty,
        lpu = tracing::field::Empty,
        backend = tracing::field::Empty,
        slot = tracing::field::Empty,
        appointment = tracing::field::Empty,
        message_code = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let _ = span.set_parent(parent_context(req.headers()));
    span
}

/// The request's server span and its own `traceparent` (what the MIS gets when no client
/// span is made; the trace id is cut from it).
///
/// Without an exporter a span would only carry the trace context, so none is made: the
/// context is derived here as the SDK would (the integrator's trace, or a new one; a new span
/// id), sparing each request the span's creation, its enters and exits on every poll and
/// its closing in the subscriber and the OpenTelemetry layer.
fn request_trace<B>(
    req: &Request<B>,
    request_id: &str,
) -> (tracing::Span, Option<HeaderValue>, Option<HeaderValue>) {
    use crate::telemetry::{traceparent, tracestate};
    if !crate::telemetry::exporting() {
        let sc = crate::telemetry::child_of(&parent_context(req.headers()));
        return (tracing::Span::none(), traceparent(&sc), tracestate(&sc));
    }
    let span = server_span(req, request_id);
    let sc = span.context().span().span_context().clone();
    (span, traceparent(&sc), tracestate(&sc))
}

/// The integrator's trace context from `traceparent` (an empty context without one).
fn parent_context(headers: &HeaderMap) -> opentelemetry::Context {
    // Most integrators send none: skip the propagator's look-ups and its context.
    if !headers.contains_key(TRACEPARENT) {
        return opentelemetry::Context::new();
    }
    TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers))
}

/// Span fields and metrics of a finished request.
fn record(rec: &Record, status: StatusCode, took: Duration) {
    let outcome = match (status.as_u16(), rec.replayed) {
        (_, true) => "replayed",
        (200..=299, _) => "booked",
        (_, false) if rec.unknown => "outcome_unknown",
        (400..=499, _) if rec.mis_status.is_some() => "rejected_by_mis",
        (400..=499, _) => "refused",
        _ => "failed",
    };
    // Span fields only reach an exporter: without one, recording them is wasted work.
    if crate::telemetry::exporting() {
        record_span(rec, status, outcome);
    }

    let m = crate::telemetry::metrics::get();
    m.record_request(
        crate::telemetry::metrics::RequestLabels {
            integrator: rec.integrator.as_ref(),
            backend: rec.backend.as_ref(),
            class: crate::telemetry::metrics::status_class(status.as_u16()),
            code: rec.code.as_ref(),
        },
        took,
        rec.mis_time,
    );
    // Replays and lost answers are rare: their counters stay unbound.
    let unknown = outcome == "outcome_unknown" && !rec.replayed;
    if rec.replayed || unknown {
        let by_backend = crate::telemetry::metrics::by_backend(rec.backend.as_ref());
        if rec.replayed {
            m.replays.add(1, &by_backend);
        } else {
            m.outcome_unknown.add(1, &by_backend);
        }
    }
}

fn record_span(rec: &Record, status: StatusCode, outcome: &'static str) {
    let span = tracing::Span::current();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    if let Some(i) = &rec.integrator {
        span.record("integrator", &**i);
    }
    if let Some(l) = rec.lpu {
        span.record("lpu", tracing::field::display(l));
    }
    if let Some(b) = &rec.backend {
        span.record("backend", &**b);
    }
    if let Some(s) = rec.slot {
        span.record("slot", tracing::field::display(s));
    }
    if let Some(a) = rec.appointment {
        span.record("appointment", tracing::field::display(a));
    }
    if let Some(c) = &rec.code {
        span.record("message_code", &**c);
    }
    span.record("outcome", outcome);
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn check_content_type(headers: &HeaderMap) -> Result<(), GatewayError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if ok {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType)
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads the whole body within `limit` bytes and `timeout` into a buffer of its own (`expected`
/// bytes reserved): the frames hyper hands over may be views into the connection's 8 to 16 KiB
/// read buffer, which a booking would otherwise pin for its whole MIS exchange.
async fn read_body<B>(
    body: B,
    limit: usize,
    expected: usize,
    timeout: Duration,
) -> Result<Bytes, GatewayError>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    let read = async {
        let mut buf = bytes::BytesMut::with_capacity(expected.min(limit));
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err(GatewayError::MalformedJson {
                    detail: "Problem: the body could not be read to its end.".into(),
                });
            };
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(GatewayError::PayloadTooLarge { limit });
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    let result = match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(GatewayError::BodyTimeout),
        Ok(r) => r,
    };
    if matches!(result, Err(GatewayError::PayloadTooLarge { .. })) {
        drain(body, timeout).await;
    }
    result
}

/// Past the size limit, what the client is still sending is read and dropped (up to
/// [`DRAIN_MAX`] bytes, within `timeout` and [`DRAIN_TIME`]) before the 413 goes out. A server that answers and
/// closes with unread data in its socket resets the connection, and the client may then see
/// the reset instead of the answer.
async fn drain<B>(body: B, timeout: Duration)
where
    B: http_body::Body<Data = Bytes> + Send,
{
    let mut body = std::pin::pin!(body);
    let _ = tokio::time::timeout(timeout.min(DRAIN_TIME), async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > DRAIN_MAX {
                break;
            }
        }
    })
    .await;
}

/// How much of an oversized body is read and dropped so its sender gets the 413, and for how
/// long at most.
const DRAIN_MAX: usize = 1 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

fn log_access(ids: &Ids, rec: &Record, resp: &Response<Full<Bytes>>, took: Duration) {
    let status = resp.status();
    let request_id = ids.request_id.as_str();
    let trace_id = ids.trace_id();
    macro_rules! event {
        ($lvl:expr) => {
            tracing::event!(
                target: "access",
                $lvl,
                request_id,
                trace_id,
                client = rec.client.map(tracing::field::display),
                integrator = rec.integrator.as_deref(),
                lpu = rec.lpu.map(tracing::field::display),
                slot = rec.slot.map(tracing::field::display),
                backend = rec.backend.as_deref(),
                appointment = rec.appointment.map(tracing::field::display),
                status = status.as_u16(),
                code = rec.code.as_deref(),
                replayed = rec.replayed,
                mis_status = rec.mis_status,
                mis_ms = rec.mis_time.map(|d| d.as_secs_f64() * 1e3),
                total_ms = took.as_secs_f64() * 1e3,
                "booking"
            )
        };
    }
    if status.is_server_error() {
        event!(tracing::Level::WARN);
    } else {
        event!(tracing::Level::INFO);
    }
}
