//! The one place where the gateway decides an error's HTTP status, `Message_code` and text.
//!
//! Every error a client can see is a [`GatewayError`]; [`GatewayError::into_response`] renders it
//! in the ExceptionResponse shape that integrators of this MIS family already parse
//! (`{"Code", "Message", "Message_code"}`), plus the request id. Texts never carry request or MIS
//! body values: they may be patient data.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

/// One validation problem: where (a JSON path such as `direction.lpuToGuid`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    pub path: String,
    pub reason: &'static str,
}

/// An answer from the MIS in its own ExceptionResponse shape, passed on to the integrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MisRejection {
    pub status: StatusCode,
    pub message: String,
    pub code: String,
}

/// Every condition the gateway answers with something other than an Appointment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("the request body is not valid JSON")]
    MalformedJson { detail: String },
    #[error("the booking failed validation")]
    Invalid { problems: Vec<FieldProblem> },
    #[error("authentication required")]
    Unauthenticated,
    #[error("too many failed authentication attempts")]
    AuthThrottled { retry_after_secs: u64 },
    #[error("the integrator may not book into this LPU")]
    ForbiddenLpu,
    #[error("no such resource")]
    NotFound,
    #[error("no MIS is configured for this LPU")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the request body was not received in time")]
    BodyTimeout,
    #[error("the request body is larger than the limit")]
    PayloadTooLarge { limit: usize },
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("the MIS could not be reached; the booking was not sent")]
    MisUnreachable,
    #[error("the MIS answer could not be understood")]
    MisBadAnswer,
    #[error("the TLS handshake with the MIS failed")]
    MisTls,
    #[error("the MIS refused the gateway's credentials")]
    MisRejectedGateway,
    #[error("the connection to the MIS broke after the booking was sent; outcome unknown")]
    OutcomeUnknown,
    #[error("the MIS did not answer in time after the booking was sent; outcome unknown")]
    MisTimeout,
    #[error("the MIS rejected the booking")]
    Mis(MisRejection),
    #[error("the integrator's request rate limit is exceeded")]
    RateLimited { retry_after_secs: u64 },
    #[error("the Idempotency-Key header is malformed")]
    BadIdempotencyKey,
    #[error("an HTTP/1.1 request without exactly one Host header")]
    BadHost,
    #[error("more than one Authorization header")]
    DuplicateAuthorization,
    #[error("the request head could not be parsed")]
    BadRequestHead,
    #[error("the request target is too long")]
    UriTooLong,
    #[error("the request head has too many or too large header fields")]
    HeadersTooLarge,
    #[error("a request with this Idempotency-Key is still in flight")]
    IdempotencyInFlight,
    #[error("the same referral and slot are being booked by an earlier request")]
    DuplicateInFlight,
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyMismatch,
    #[error("the gateway or the MIS is at capacity")]
    Overloaded { retry_after_secs: u64 },
    #[error("the MIS is failing; bookings to it are paused")]
    BreakerOpen { retry_after_secs: u64 },
    #[error("internal error")]
    Internal,
}

/// Static facts of one error kind: the row of the README's error table.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: &'static str,
}

/// The error table, as published in README.md. A test keeps the two in step.
#[rustfmt::skip]
pub const TABLE: &[(&str, ErrorKind)] = &[
    ("Invalid",              kind(400, "94000", "The booking failed validation; see errors.")),
    ("MalformedJson",        kind(400, "94001", "The request body is not valid JSON.")),
    ("BadIdempotencyKey",    kind(400, "94002", "The Idempotency-Key header must be 1 to 255 visible ASCII characters.")),
    ("BadHost",              kind(400, "94003", "An HTTP/1.1 request needs exactly one Host header.")),
    ("DuplicateAuthorization", kind(400, "94004", "The request carries more than one Authorization header; send exactly one.")),
    ("BadRequestHead",       kind(400, "94005", "The request head could not be parsed (request line, header syntax or conflicting framing headers such as two Content-Length values).")),
    ("Unauthenticated",      kind(401, "94010", "Authentication required: HTTP Basic with a valid integrator login and password.")),
    ("ForbiddenLpu",         kind(403, "94030", "This integrator may not book into the LPU named by direction.lpuToGuid.")),
    ("NotFound",             kind(404, "94040", "No such resource: the API is POST /dir/appointments.")),
    ("NoRoute",              kind(404, "94041", "No MIS is configured for the LPU named by direction.lpuToGuid.")),
    ("MethodNotAllowed",     kind(405, "94050", "Method not allowed: use POST.")),
    ("BodyTimeout",          kind(408, "94080", "The request body was not received in time.")),
    ("IdempotencyInFlight",  kind(409, "94090", "A request with this Idempotency-Key is still being processed; retry later with the same key.")),
    ("DuplicateInFlight",    kind(409, "94091", "The same referral is being booked into the same slot by an earlier request that has not finished; wait for its answer.")),
    ("PayloadTooLarge",      kind(413, "94130", "The request body is larger than the limit.")),
    ("UriTooLong",           kind(414, "94140", "The request target is too long.")),
    ("UnsupportedMediaType", kind(415, "94150", "Content-Type must be application/json.")),
    ("IdempotencyMismatch",  kind(422, "94220", "This Idempotency-Key was already used with a different request body; use a new key for a new booking.")),
    ("AuthThrottled",        kind(429, "94290", "Too many failed authentication attempts; retry after the delay in Retry-After.")),
    ("RateLimited",          kind(429, "94291", "This integrator's request rate limit is exceeded; retry after the delay in Retry-After.")),
    ("HeadersTooLarge",      kind(431, "94310", "The request head has too many or too large header fields.")),
    ("Internal",             kind(500, "95000", "Internal gateway error; the booking was not sent.")),
    ("MisUnreachable",       kind(502, "95020", "The MIS could not be reached; the booking was not sent and may be retried.")),
    ("MisBadAnswer",         kind(502, "95021", "The MIS answered with an error the gateway could not understand; the booking was most likely not made.")),
    ("OutcomeUnknown",       kind(502, "95022", "The booking reached the MIS but its answer was lost or unusable; the booking may exist. Do not resend blindly.")),
    ("MisTls",               kind(502, "95023", "The TLS handshake with the MIS failed (its certificate was not trusted, or it refused the gateway's); the booking was not sent. The hub's operators must fix the backend's TLS settings.")),
    ("MisRejectedGateway",   kind(502, "95024", "The MIS refused the gateway's own credentials; the booking was not made. The hub's operators must fix the backend secret.")),
    ("Overloaded",           kind(503, "95030", "The gateway or this MIS is at capacity; the booking was not sent. Retry after the delay in Retry-After.")),
    ("BreakerOpen",          kind(503, "95031", "This MIS is failing and bookings to it are paused; the booking was not sent. Retry after the delay in Retry-After.")),
    ("MisTimeout",           kind(504, "95040", "The MIS did not answer in time after the booking was sent; the booking may exist. Do not resend blindly.")),
];

const fn kind(status: u16, code: &'static str, message: &'static str) -> ErrorKind {
    let status = match StatusCode::from_u16(status) {
        Ok(s) => s,
        Err(_) => panic!("invalid status in the error table"),
    };
    ErrorKind {
        status,
        code,
        message,
    }
}

impl GatewayError {
    /// The table row name of this error (the enum variant's name).
    pub fn name(&self) -> &'static str {
        match self {
            Self::MalformedJson { .. } => "MalformedJson",
            Self::Invalid { .. } => "Invalid",
            Self::Unauthenticated => "Unauthenticated",
            Self::AuthThrottled { .. } => "AuthThrottled",
            Self::ForbiddenLpu => "ForbiddenLpu",
            Self::NotFound => "NotFound",
            Self::NoRoute => "NoRoute",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::BodyTimeout => "BodyTimeout",
            Self::PayloadTooLarge { .. } => "PayloadTooLarge",
            Self::UnsupportedMediaType => "UnsupportedMediaType",
            Self::MisUnreachable => "MisUnreachable",
            Self::MisBadAnswer => "MisBadAnswer",
            Self::MisTls => "MisTls",
            Self::MisRejectedGateway => "MisRejectedGateway",
            Self::OutcomeUnknown => "OutcomeUnknown",
            Self::MisTimeout => "MisTimeout",
            Self::Mis(_) => "Mis",
            Self::RateLimited { .. } => "RateLimited",
            Self::BadIdempotencyKey => "BadIdempotencyKey",
            Self::BadHost => "BadHost",
            Self::DuplicateAuthorization => "DuplicateAuthorization",
            Self::BadRequestHead => "BadRequestHead",
            Self::UriTooLong => "UriTooLong",
            Self::HeadersTooLarge => "HeadersTooLarge",
            Self::IdempotencyInFlight => "IdempotencyInFlight",
            Self::DuplicateInFlight => "DuplicateInFlight",
            Self::IdempotencyMismatch => "IdempotencyMismatch",
            Self::Overloaded { .. } => "Overloaded",
            Self::BreakerOpen { .. } => "BreakerOpen",
            Self::Internal => "Internal",
        }
    }

    /// Status and `Message_code` of this error, as the client sees them.
    /// The message code alone, borrowed from the table unless the MIS chose it.
    pub fn code(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Mis(r) => r.code.clone().into(),
            other => lookup(other.name()).code.into(),
        }
    }

    pub fn status_and_code(&self) -> (StatusCode, &str) {
        match self {
            Self::Mis(r) => (r.status, r.code.as_str()),
            other => {
                let k = lookup(other.name());
                (k.status, k.code)
            }
        }
    }

    /// Renders the error body and headers. `request_id` goes into the body and `X-Request-Id`;
    /// `trace_id`, when the request is traced, into the body next to it.
    pub fn into_response(
        self,
        request_id: &RequestId,
        trace_id: Option<&str>,
    ) -> Response<Full<Bytes>> {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(rename = "Code")]
            code: u16,
            #[serde(rename = "Message")]
            message: &'a str,
            #[serde(rename = "Message_code")]
            message_code: &'a str,
            #[serde(rename = "requestId")]
            request_id: &'a str,
            #[serde(rename = "traceId", skip_serializing_if = "Option::is_none")]
            trace_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            errors: Option<&'a [FieldProblem]>,
        }
        let (status, code) = self.status_and_code();
        let (message, errors): (String, Option<&[FieldProblem]>) = match &self {
            Self::Mis(r) => (r.message.clone(), None),
            Self::MalformedJson { detail } => (
                format!("{} {}", lookup("MalformedJson").message, detail),
                None,
            ),
            Self::Invalid { problems } => (lookup("Invalid").message.to_owned(), Some(problems)),
            Self::PayloadTooLarge { limit } => (
                format!(
                    "{} The limit is {limit} bytes.",
                    lookup("PayloadTooLarge").message
                ),
                None,
            ),
            other => (lookup(other.name()).message.to_owned(), None),
        };
        let body = Body {
            code: status.as_u16(),
            message: &message,
            message_code: code,
            request_id: request_id.as_str(),
            trace_id,
            errors,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = json_answer(bytes, request_id);
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        match &self {
            Self::Unauthenticated => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Basic realm="mis-gateway", charset="UTF-8""#),
                );
            }
            Self::MethodNotAllowed => {
                h.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            Self::RateLimited { retry_after_secs }
            | Self::AuthThrottled { retry_after_secs }
            | Self::Overloaded { retry_after_secs }
            | Self::BreakerOpen { retry_after_secs } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        resp
    }
}

impl GatewayError {
    /// One example of every variant but [`GatewayError::Mis`] (tests and docs use it: a variant
    /// missing from [`TABLE`] would render as 500).
    pub fn examples() -> Vec<GatewayError> {
        vec![
            GatewayError::MalformedJson {
                detail: String::new(),
            },
            GatewayError::Invalid { problems: vec![] },
            GatewayError::Unauthenticated,
            GatewayError::AuthThrottled {
                retry_after_secs: 1,
            },
            GatewayError::ForbiddenLpu,
            GatewayError::NotFound,
            GatewayError::NoRoute,
            GatewayError::MethodNotAllowed,
            GatewayError::BodyTimeout,
            GatewayError::PayloadTooLarge { limit: 1 },
            GatewayError::UnsupportedMediaType,
            GatewayError::BadIdempotencyKey,
            GatewayError::BadHost,
            GatewayError::DuplicateAuthorization,
            GatewayError::BadRequestHead,
            GatewayError::UriTooLong,
            GatewayError::HeadersTooLarge,
            GatewayError::RateLimited {
                retry_after_secs: 1,
            },
            GatewayError::IdempotencyInFlight,
            GatewayError::DuplicateInFlight,
            GatewayError::IdempotencyMismatch,
            GatewayError::MisUnreachable,
            GatewayError::MisBadAnswer,
            GatewayError::MisRejectedGateway,
            GatewayError::MisTls,
            GatewayError::OutcomeUnknown,
            GatewayError::MisTimeout,
            GatewayError::Overloaded {
                retry_after_secs: 1,
            },
            GatewayError::BreakerOpen {
                retry_after_secs: 1,
            },
            GatewayError::Internal,
        ]
    }
}

/// The request id header of every answer and of every request to a MIS. A constant: a header
/// name given as a string is parsed, and a non-standard one allocated, on every use.
pub const X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// A request's id: a new UUIDv7, hyphenated, held as the `X-Request-Id` value that the answer
/// and the request to the MIS share (one allocation; a clone only counts a reference).
pub struct RequestId(HeaderValue);

impl RequestId {
    pub fn new() -> RequestId {
        let mut text = [0u8; 36];
        uuid::Uuid::now_v7().hyphenated().encode_lower(&mut text);
        RequestId(
            HeaderValue::from_maybe_shared(Bytes::from_owner(text))
                .expect("hyphenated lowercase hex is a valid header value"),
        )
    }

    pub fn as_str(&self) -> &str {
        // Visible ASCII by construction.
        self.0.to_str().unwrap_or_default()
    }

    /// The `X-Request-Id` value.
    pub fn header(&self) -> &HeaderValue {
        &self.0
    }
}

/// An id given as a header value (tests name theirs).
impl From<HeaderValue> for RequestId {
    fn from(value: HeaderValue) -> Self {
        RequestId(value)
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

/// A JSON answer to an integrator (Appointment or error): content type, no caching, request id.
pub fn json_answer(body: Vec<u8>, request_id: &RequestId) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_REQUEST_ID, request_id.header().clone());
    resp
}

fn lookup(name: &str) -> ErrorKind {
    TABLE
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
        .unwrap_or(ErrorKind {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "95000",
            message: "Internal gateway error; the booking was not sent.",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_start_with_nine_and_the_status() {
        let mut seen = std::collections::HashSet::new();
        for (name, k) in TABLE {
            assert!(seen.insert(k.code), "duplicate code {} ({name})", k.code);
            let prefix = format!("9{}", k.status.as_u16());
            assert!(
                k.code.starts_with(&prefix),
                "{name}: {} vs {prefix}",
                k.code
            );
        }
    }

    #[test]
    fn every_variant_has_its_own_row() {
        let all = GatewayError::examples();
        assert_eq!(all.len(), TABLE.len());
        for e in all {
            assert!(
                TABLE.iter().any(|(n, _)| *n == e.name()),
                "{} has no row",
                e.name()
            );
        }
    }

    #[test]
    fn unauthenticated_carries_the_challenge() {
        let rid = RequestId::from(HeaderValue::from_static("rid"));
        let r = GatewayError::Unauthenticated.into_response(&rid, None);
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            r#"Basic realm="mis-gateway", charset="UTF-8""#
        );
        assert_eq!(r.headers()["x-request-id"], "rid");
    }
}
