//! The booking pipeline: one request from headers to the normalized answer.
//!
//! Phases, in order, each one able to end the request with a [`GatewayError`]:
//! route the path → authenticate → check media type and size → read the body → parse and
//! validate → authorize the LPU → pick the backend → forward → normalize. [`Gateway::handle`]
//! never fails: every error becomes a response here, and one access-log event records the
//! outcome with technical identifiers only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use uuid::Uuid;

use crate::auth::{AuthFailure, Authenticator};
use crate::booking;
use crate::error::GatewayError;
use crate::live::{Generation, Live};
use crate::normalize;

pub const APPOINTMENTS_PATH: &str = "/dir/appointments";

/// Shared state of the booking listener.
pub struct Gateway {
    pub live: Arc<Live>,
    pub auth: Authenticator,
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
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Gateway {
    pub fn new(live: Arc<Live>) -> Gateway {
        Gateway {
            live,
            auth: Authenticator::new(),
        }
    }

    /// Serves one request. Never returns an error: failures are rendered as responses.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let request_id = Uuid::now_v7().hyphenated().to_string();
        let generation = self.live.load();
        let mut rec = Record::default();
        let result = self.book(req, &generation, &request_id, &mut rec).await;
        let response = match result {
            Ok(body) => {
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=utf-8"),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                if let Ok(v) = HeaderValue::from_str(&request_id) {
                    h.insert("x-request-id", v);
                }
                resp
            }
            Err(e) => {
                rec.code = Some(e.status_and_code().1.to_owned());
                e.into_response(&request_id)
            }
        };
        log_access(
            &request_id,
            &rec,
            &response,
            started.elapsed(),
            generation.number,
        );
        response
    }

    async fn book<B>(
        &self,
        req: Request<B>,
        generation: &Generation,
        request_id: &str,
        rec: &mut Record,
    ) -> Result<Vec<u8>, GatewayError>
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
        let config = &generation.config;
        let integrator = self
            .auth
            .authenticate(
                config,
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

        check_content_type(req.headers())?;
        let limit = config.server.max_body_bytes;
        if declared_length(req.headers()).is_some_and(|n| n > limit as u64) {
            return Err(GatewayError::PayloadTooLarge { limit });
        }
        let body = read_body(req.into_body(), limit, config.server.body_read_timeout).await?;

        let root = booking::parse(&body)?;
        let booking = booking::validate(&root)?;
        rec.lpu = Some(booking.lpu_to);
        rec.slot = Some(booking.slot);
        if !integrator.lpus.allows(&booking.lpu_to) {
            return Err(GatewayError::ForbiddenLpu);
        }
        let idx = config.route(&booking.lpu_to).ok_or(GatewayError::NoRoute)?;
        let upstream = generation
            .upstreams
            .get(idx)
            .ok_or(GatewayError::Internal)?;
        rec.backend = Some(upstream.backend.name.clone());

        let mis_started = Instant::now();
        let answer = upstream.book(body.clone(), request_id).await;
        rec.mis_time = Some(mis_started.elapsed());
        let answer = answer?;
        rec.mis_status = Some(answer.status.as_u16());
        let ctx = normalize::Context {
            slot: booking.slot,
            direction: booking.direction,
            timezone: &upstream.backend.timezone,
        };
        let normalized = normalize::answer(answer.status, &answer.body, &ctx)?;
        rec.appointment = Some(normalized.appointment_guid);
        Ok(normalized.body)
    }
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

fn log_access(
    request_id: &str,
    rec: &Record,
    resp: &Response<Full<Bytes>>,
    took: Duration,
    generation: u64,
) {
    let status = resp.status();
    let code = rec.code.as_deref();
    let level_is_error = status == StatusCode::BAD_GATEWAY
        || status == StatusCode::GATEWAY_TIMEOUT
        || status.is_server_error();
    macro_rules! event {
        ($lvl:expr) => {
            tracing::event!(
                target: "access",
                $lvl,
                request_id,
                integrator = rec.integrator.as_deref(),
                lpu = rec.lpu.map(|u| u.to_string()),
                slot = rec.slot.map(|u| u.to_string()),
                backend = rec.backend.as_deref(),
                appointment = rec.appointment.map(|u| u.to_string()),
                status = status.as_u16(),
                code,
                mis_status = rec.mis_status,
                mis_ms = rec.mis_time.map(|d| d.as_secs_f64() * 1e3),
                total_ms = took.as_secs_f64() * 1e3,
                generation,
                "booking"
            )
        };
    }
    if level_is_error {
        event!(tracing::Level::WARN);
    } else {
        event!(tracing::Level::INFO);
    }
}
