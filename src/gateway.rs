//! The booking pipeline: one request from headers to the normalized answer.
//!
//! Phases, in order, each one able to end the request with a [`GatewayError`]:
//! 1. on the connection's task: route the path → authenticate → check the idempotency key's
//!    syntax, media type and size → read the body;
//! 2. on a task of its own, which runs to the end even if the client goes away (a booking that
//!    reached the MIS is always recorded, logged and remembered under its key): parse and
//!    validate → authorize the LPU → pick the backend → claim the idempotency key or the
//!    double-submit slot → admit through the backend's guard → forward → normalize → remember.
//!
//! [`Gateway::handle`] never fails: every error becomes a response, and one access-log event
//! records each request with technical identifiers only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use uuid::Uuid;

use crate::auth::{AuthFailure, Authenticator};
use crate::booking;
use crate::config::{Integrator, StoreKind};
use crate::error::GatewayError;
use crate::guard::is_mis_failure;
use crate::idempotency::{self, Begin, InFlight, MemoryStore, Outcome, Store};
use crate::live::{Generation, Live};
use crate::normalize;

pub const APPOINTMENTS_PATH: &str = "/dir/appointments";
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Shared state of the booking listener.
pub struct Gateway {
    pub live: Arc<Live>,
    pub auth: Authenticator,
    pub store: Arc<dyn Store>,
    in_flight: Arc<InFlight>,
    fingerprint_key: Vec<u8>,
}

/// What the access log says about one request. Only technical identifiers: never a body,
/// a name, a header value or a query string.
#[derive(Default)]
struct Record {
    integrator: Option<Arc<str>>,
    lpu: Option<Uuid>,
    slot: Option<Uuid>,
    backend: Option<Arc<str>>,
    appointment: Option<Uuid>,
    mis_status: Option<u16>,
    mis_time: Option<Duration>,
    code: Option<String>,
    replayed: bool,
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
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Gateway {
    /// A gateway over `live`, with the idempotency store the initial config names.
    pub fn new(live: Arc<Live>) -> Gateway {
        let config = live.load().config.clone();
        let settings = &config.idempotency;
        let store: Arc<dyn Store> = match &settings.store {
            StoreKind::Memory => Arc::new(MemoryStore::new(settings.ttl, settings.max_keys)),
            StoreKind::Redis(_) => {
                tracing::error!(
                    "idempotency.store = redis is not built into this binary; using the in-memory store"
                );
                Arc::new(MemoryStore::new(settings.ttl, settings.max_keys))
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
        Gateway {
            live,
            auth: Authenticator::new(),
            store,
            in_flight: Arc::default(),
            fingerprint_key,
        }
    }

    /// Serves one request. Never returns an error: failures are rendered as responses.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let request_id = Uuid::now_v7().hyphenated().to_string();
        let generation = self.live.load();
        let mut rec = Record::default();
        let booking = match self.receive(req, generation, &mut rec).await {
            Ok(b) => b,
            Err(e) => return finish(Err(e), &request_id, rec, started),
        };
        // Phase 2 on its own task: dropping this future (client gone) does not cancel it.
        let me = self.clone();
        let task = tokio::spawn(async move {
            let result = me.process(booking, &request_id, &mut rec).await;
            finish(result, &request_id, rec, started)
        });
        task.await.unwrap_or_else(|_| {
            let id = Uuid::now_v7().hyphenated().to_string();
            GatewayError::Internal.into_response(&id)
        })
    }

    /// Phase 1: everything up to a complete body from an authenticated integrator.
    async fn receive<B>(
        &self,
        req: Request<B>,
        generation: Arc<Generation>,
        rec: &mut Record,
    ) -> Result<Booking, GatewayError>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        if req.uri().path() != APPOINTMENTS_PATH {
            return Err(GatewayError::NotFound);
        }
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let config = generation.config.clone();
        let integrator = self
            .auth
            .authenticate(
                &config,
                req.headers()
                    .get(header::AUTHORIZATION)
                    .map(HeaderValue::as_bytes),
            )
            .await
            .map_err(|e| match e {
                AuthFailure::Busy => GatewayError::Overloaded {
                    retry_after_secs: 1,
                },
                AuthFailure::Malformed | AuthFailure::Rejected => GatewayError::Unauthenticated,
            })?;
        rec.integrator = Some(integrator.login.clone());
        let key = match req.headers().get(IDEMPOTENCY_KEY) {
            None => None,
            Some(k) if idempotency::valid_key(k.as_bytes()) => {
                Some(idempotency::slot_of(&integrator.login, k.as_bytes()))
            }
            Some(_) => return Err(GatewayError::BadIdempotencyKey),
        };
        check_content_type(req.headers())?;
        let limit = config.server.max_body_bytes;
        if declared_length(req.headers()).is_some_and(|n| n > limit as u64) {
            return Err(GatewayError::PayloadTooLarge { limit });
        }
        let traceparent = req.headers().get("traceparent").cloned();
        let body = read_body(req.into_body(), limit, config.server.body_read_timeout).await?;
        Ok(Booking {
            generation,
            integrator,
            body,
            key,
            traceparent,
        })
    }

    /// Phase 2: validate, route, claim, forward, normalize, remember.
    async fn process(
        &self,
        b: Booking,
        request_id: &str,
        rec: &mut Record,
    ) -> Result<Answer, GatewayError> {
        let root = booking::parse(&b.body)?;
        let valid = booking::validate(&root)?;
        rec.lpu = Some(valid.lpu_to);
        rec.slot = Some(valid.slot);
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
        let fingerprint = idempotency::fingerprint(&self.fingerprint_key, &b.body);
        let _in_flight;
        let mut claimed = None;
        match b.key {
            Some(slot) => match self.store.begin(slot, fingerprint).await {
                Ok(Begin::Claimed) => claimed = Some(slot),
                Ok(Begin::InFlight) => return Err(GatewayError::IdempotencyInFlight),
                Ok(Begin::Mismatch) => return Err(GatewayError::IdempotencyMismatch),
                Ok(Begin::Done(outcome)) => {
                    rec.replayed = true;
                    return replay(outcome, valid.direction);
                }
                Err(e) => {
                    tracing::error!(error = %e, request_id, "idempotency store unavailable: booking without duplicate protection");
                }
            },
            None => {
                _in_flight = self
                    .in_flight
                    .try_enter(&b.integrator.login, &valid.direction_guid, &valid.slot)
                    .ok_or(GatewayError::DuplicateInFlight)?;
            }
        }

        let result = async {
            let permit = upstream.guard.admit(upstream.backend.limits)?;
            let mis_started = Instant::now();
            let answer = upstream
                .book(b.body.clone(), request_id, b.traceparent.as_ref())
                .await;
            rec.mis_time = Some(mis_started.elapsed());
            let normalized = answer.and_then(|answer| {
                rec.mis_status = Some(answer.status.as_u16());
                let ctx = normalize::Context {
                    slot: valid.slot,
                    timezone: &upstream.backend.timezone,
                };
                let n = normalize::answer(answer.status, &answer.body, &ctx)?;
                let direction = n.mis_direction.as_ref().unwrap_or(valid.direction);
                Ok((normalize::render(&n.fields, direction), n.fields))
            });
            permit.record(!normalized.as_ref().is_err_and(is_mis_failure));
            normalized
        }
        .await;

        if let Some(slot) = claimed {
            let remembered = match &result {
                Ok((_, fields)) => Some(Outcome::Booked {
                    guid: fields.guid.hyphenated().to_string(),
                    number: fields.number.clone(),
                    slot: fields.slot.hyphenated().to_string(),
                    source: fields.source.clone(),
                    create_time: fields.create_time.clone(),
                }),
                Err(e) => remembered_error(e),
            };
            let stored = match remembered {
                Some(outcome) => self.store.finish(slot, fingerprint, outcome).await,
                None => self.store.release(slot).await,
            };
            if let Err(e) = stored {
                tracing::error!(error = %e, request_id, "idempotency store unavailable: outcome not remembered");
            }
        }
        if matches!(
            result,
            Err(GatewayError::OutcomeUnknown | GatewayError::MisTimeout)
        ) {
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

/// The stored outcome of a key, as the first request got it.
fn replay(outcome: Outcome, direction: &crate::json::Node) -> Result<Answer, GatewayError> {
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
                body: normalize::render(&fields, direction),
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

/// Renders the result and writes the access log.
fn finish(
    result: Result<Answer, GatewayError>,
    request_id: &str,
    mut rec: Record,
    started: Instant,
) -> Response<Full<Bytes>> {
    let response = match result {
        Ok(answer) => {
            let mut resp = Response::new(Full::new(Bytes::from(answer.body)));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Ok(v) = HeaderValue::from_str(request_id) {
                h.insert("x-request-id", v);
            }
            if answer.replayed {
                h.insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            resp
        }
        Err(e) => {
            rec.code = Some(e.status_and_code().1.to_owned());
            let mut resp = e.into_response(request_id);
            if rec.replayed {
                resp.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            resp
        }
    };
    log_access(request_id, &rec, &response, started.elapsed());
    response
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

/// Reads the whole body within `limit` bytes and `timeout`.
async fn read_body<B>(body: B, limit: usize, timeout: Duration) -> Result<Bytes, GatewayError>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(GatewayError::BodyTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::PayloadTooLarge { limit })
        }
        Ok(Err(_)) => Err(GatewayError::MalformedJson {
            detail: "Problem: the body could not be read to its end.".into(),
        }),
    }
}

fn log_access(request_id: &str, rec: &Record, resp: &Response<Full<Bytes>>, took: Duration) {
    let status = resp.status();
    macro_rules! event {
        ($lvl:expr) => {
            tracing::event!(
                target: "access",
                $lvl,
                request_id,
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
