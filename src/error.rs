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
    MethodNotAllowed {
        /// The methods the path takes (the `Allow` header).
        allow: &'static str,
    },
    #[error("no appointment with this guid is known to the hub")]
    AppointmentUnknown,
    #[error("a cancellation of this appointment is still in flight")]
    CancelInFlight,
    #[error("the clinic's MIS does not accept cancellations through the hub")]
    CancelUnsupported,
    #[error("the hub keeps no booking journal")]
    NoJournal,
    #[error("the MIS that made this booking is no longer configured")]
    BackendGone,
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

/// What an integrator may do after an answer: the last column of the README's error table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The request itself is wrong or not allowed: sent again unchanged it gets the same answer.
    FixFirst,
    /// Nothing was booked: send it again (after `Retry-After` when given), with the same key.
    SameKey,
    /// The booking may exist: only the same `Idempotency-Key` is safe (the gateway answers for
    /// it), or ask the clinic; a new key may book the slot twice. A cancellation is idempotent
    /// (HTTP's DELETE): sent again, it cancels at most once.
    OnlySameKey,
}

impl Retry {
    /// The README's wording.
    pub const fn text(self) -> &'static str {
        match self {
            Retry::FixFirst => "fix first",
            Retry::SameKey => "yes, same key",
            Retry::OnlySameKey => "same key only; a cancel: yes",
        }
    }
}

/// Static facts of one error kind: the row of the README's error table.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: &'static str,
    pub retry: Retry,
}

/// One list makes the [`Condition`] enum, its rows and [`TABLE`], so a condition cannot lack a
/// row nor a row its condition.
macro_rules! conditions {
    ($($name:ident => $status:literal, $code:literal, $retry:ident, $message:literal;)*) => {
        /// Every condition the gateway answers itself (a MIS's own rejection is not one).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Condition { $($name),* }

        impl Condition {
            pub const ALL: &'static [Condition] = &[$(Condition::$name),*];

            /// The table row's name: the condition's.
            pub const fn name(self) -> &'static str {
                match self { $(Condition::$name => stringify!($name)),* }
            }

            pub const fn kind(self) -> ErrorKind {
                match self { $(Condition::$name => kind($status, $code, Retry::$retry, $message)),* }
            }
        }

        /// The error table, as published in README.md. A test keeps the two in step.
        pub const TABLE: &[(&str, ErrorKind)] =
            &[$((stringify!($name), kind($status, $code, Retry::$retry, $message))),*];
    };
}

conditions! {
    Invalid              => 400, "94000", FixFirst, "The booking failed validation; see errors.";
    MalformedJson        => 400, "94001", FixFirst, "The request body is not valid JSON.";
    BadIdempotencyKey    => 400, "94002", FixFirst, "The Idempotency-Key header must appear at most once, with 1 to 255 visible ASCII characters.";
    BadHost              => 400, "94003", FixFirst, "An HTTP/1.1 request needs exactly one Host header, a host with an optional port.";
    DuplicateAuthorization => 400, "94004", FixFirst, "The request carries more than one Authorization header; send exactly one.";
    BadRequestHead       => 400, "94005", FixFirst, "The request head could not be parsed (request line, header syntax or conflicting framing headers such as two Content-Length values).";
    Unauthenticated      => 401, "94010", FixFirst, "Authentication required: HTTP Basic with a valid integrator login and password.";
    ForbiddenLpu         => 403, "94030", FixFirst, "This integrator may not book into the LPU named by direction.lpuToGuid.";
    NotFound             => 404, "94040", FixFirst, "No such resource: the API is POST /dir/appointments, GET and DELETE /dir/appointments/{guid}.";
    NoRoute              => 404, "94041", FixFirst, "No MIS is configured for the LPU named by direction.lpuToGuid.";
    AppointmentUnknown   => 404, "94042", FixFirst, "No appointment with this guid is known to the hub (only bookings made through it with its journal on, in an LPU this integrator may book into, are).";
    MethodNotAllowed     => 405, "94050", FixFirst, "Method not allowed: POST /dir/appointments, GET or DELETE /dir/appointments/{guid}.";
    BodyTimeout          => 408, "94080", SameKey, "The request body was not received in time.";
    IdempotencyInFlight  => 409, "94090", SameKey, "A request with this Idempotency-Key is still being processed; retry later with the same key.";
    DuplicateInFlight    => 409, "94091", SameKey, "The same referral is being booked into the same slot by an earlier request that has not finished; wait for its answer.";
    CancelInFlight       => 409, "94092", SameKey, "A cancellation of this appointment is still being processed; wait for its answer.";
    PayloadTooLarge      => 413, "94130", FixFirst, "The request body is larger than the limit.";
    UriTooLong           => 414, "94140", FixFirst, "The request target is too long.";
    UnsupportedMediaType => 415, "94150", FixFirst, "Content-Type must be application/json.";
    IdempotencyMismatch  => 422, "94220", FixFirst, "This Idempotency-Key was already used with a different request body; use a new key for a new booking.";
    AuthThrottled        => 429, "94290", SameKey, "Too many failed authentication attempts; retry after the delay in Retry-After.";
    RateLimited          => 429, "94291", SameKey, "This integrator's request rate limit is exceeded; retry after the delay in Retry-After.";
    HeadersTooLarge      => 431, "94310", FixFirst, "The request head has too many or too large header fields.";
    Internal             => 500, "95000", SameKey, "Internal gateway error; the booking was not sent.";
    CancelUnsupported    => 501, "95010", FixFirst, "This clinic's MIS does not accept cancellations through the hub; contact the clinic.";
    NoJournal            => 501, "95011", FixFirst, "This hub keeps no booking journal, so it cannot look up or cancel appointments; contact the clinic.";
    MisUnreachable       => 502, "95020", SameKey, "The MIS could not be reached; the booking was not sent. Retry after the delay in Retry-After.";
    MisBadAnswer         => 502, "95021", SameKey, "The MIS answered with an error the gateway could not understand; the booking was most likely not made.";
    OutcomeUnknown       => 502, "95022", OnlySameKey, "The request reached the MIS but its answer was lost or unusable; the booking (or cancellation) may have been made. Do not resend a booking blindly.";
    MisTls               => 502, "95023", SameKey, "The TLS handshake with the MIS failed (its certificate was not trusted, or it refused the gateway's); the booking was not sent. The hub's operators must fix the backend's TLS settings.";
    MisRejectedGateway   => 502, "95024", SameKey, "The MIS refused the gateway's own credentials; the booking was not made. The hub's operators must fix the backend secret.";
    BackendGone          => 502, "95025", SameKey, "The MIS that made this booking is no longer configured at the hub; the cancellation was not sent. The hub's operators must restore the backend.";
    Overloaded           => 503, "95030", SameKey, "The gateway or this MIS is at capacity, or the idempotency store or the booking journal is unavailable; the booking was not sent. Retry after the delay in Retry-After.";
    BreakerOpen          => 503, "95031", SameKey, "This MIS is failing and bookings to it are paused; the booking was not sent. Retry after the delay in Retry-After.";
    MisTimeout           => 504, "95040", OnlySameKey, "The MIS did not answer in time after the request was sent; the booking (or cancellation) may have been made. Do not resend a booking blindly.";
}

/// The integrator API's operations, each with the conditions that can answer it (the
/// contract, `docs/openapi.json`, documents exactly those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /dir/appointments`
    Book,
    /// `GET /dir/appointments/{guid}`
    Lookup,
    /// `DELETE /dir/appointments/{guid}`
    Cancel,
}

impl Condition {
    /// Whether this condition can be the answer to `api`.
    pub const fn answers(self, api: Api) -> bool {
        use Condition as C;
        let (book, lookup, cancel) = match self {
            // The edge, before any operation is known, and the gateway's own failures.
            C::BadHost
            | C::DuplicateAuthorization
            | C::BadRequestHead
            | C::Unauthenticated
            | C::NotFound
            | C::MethodNotAllowed
            | C::UriTooLong
            | C::AuthThrottled
            | C::RateLimited
            | C::HeadersTooLarge
            | C::Internal
            | C::Overloaded
            | C::Invalid => (true, true, true),
            // A booking's body, key and route.
            C::MalformedJson
            | C::BadIdempotencyKey
            | C::ForbiddenLpu
            | C::NoRoute
            | C::BodyTimeout
            | C::IdempotencyInFlight
            | C::DuplicateInFlight
            | C::PayloadTooLarge
            | C::UnsupportedMediaType
            | C::IdempotencyMismatch => (true, false, false),
            // Found through the journal.
            C::AppointmentUnknown | C::NoJournal => (false, true, true),
            C::CancelInFlight | C::CancelUnsupported | C::BackendGone => (false, false, true),
            // The MIS's side.
            C::MisUnreachable
            | C::MisBadAnswer
            | C::OutcomeUnknown
            | C::MisTls
            | C::MisRejectedGateway
            | C::BreakerOpen
            | C::MisTimeout => (true, false, true),
        };
        match api {
            Api::Book => book,
            Api::Lookup => lookup,
            Api::Cancel => cancel,
        }
    }
}

const fn kind(status: u16, code: &'static str, retry: Retry, message: &'static str) -> ErrorKind {
    let status = match StatusCode::from_u16(status) {
        Ok(s) => s,
        Err(_) => panic!("invalid status in the error table"),
    };
    ErrorKind {
        status,
        code,
        message,
        retry,
    }
}

impl Condition {
    /// One error of this condition (tests and docs render every row through it).
    pub fn example(self) -> GatewayError {
        match self {
            Condition::Invalid => GatewayError::Invalid { problems: vec![] },
            Condition::MalformedJson => GatewayError::MalformedJson {
                detail: String::new(),
            },
            Condition::BadIdempotencyKey => GatewayError::BadIdempotencyKey,
            Condition::BadHost => GatewayError::BadHost,
            Condition::DuplicateAuthorization => GatewayError::DuplicateAuthorization,
            Condition::BadRequestHead => GatewayError::BadRequestHead,
            Condition::UriTooLong => GatewayError::UriTooLong,
            Condition::HeadersTooLarge => GatewayError::HeadersTooLarge,
            Condition::Unauthenticated => GatewayError::Unauthenticated,
            Condition::ForbiddenLpu => GatewayError::ForbiddenLpu,
            Condition::NotFound => GatewayError::NotFound,
            Condition::NoRoute => GatewayError::NoRoute,
            Condition::MethodNotAllowed => GatewayError::MethodNotAllowed { allow: "POST" },
            Condition::AppointmentUnknown => GatewayError::AppointmentUnknown,
            Condition::CancelInFlight => GatewayError::CancelInFlight,
            Condition::CancelUnsupported => GatewayError::CancelUnsupported,
            Condition::NoJournal => GatewayError::NoJournal,
            Condition::BackendGone => GatewayError::BackendGone,
            Condition::BodyTimeout => GatewayError::BodyTimeout,
            Condition::IdempotencyInFlight => GatewayError::IdempotencyInFlight,
            Condition::DuplicateInFlight => GatewayError::DuplicateInFlight,
            Condition::PayloadTooLarge => GatewayError::PayloadTooLarge { limit: 1 },
            Condition::UnsupportedMediaType => GatewayError::UnsupportedMediaType,
            Condition::IdempotencyMismatch => GatewayError::IdempotencyMismatch,
            Condition::AuthThrottled => GatewayError::AuthThrottled {
                retry_after_secs: 1,
            },
            Condition::RateLimited => GatewayError::RateLimited {
                retry_after_secs: 1,
            },
            Condition::Internal => GatewayError::Internal,
            Condition::MisUnreachable => GatewayError::MisUnreachable,
            Condition::MisBadAnswer => GatewayError::MisBadAnswer,
            Condition::OutcomeUnknown => GatewayError::OutcomeUnknown,
            Condition::MisTls => GatewayError::MisTls,
            Condition::MisRejectedGateway => GatewayError::MisRejectedGateway,
            Condition::Overloaded => GatewayError::Overloaded {
                retry_after_secs: 1,
            },
            Condition::BreakerOpen => GatewayError::BreakerOpen {
                retry_after_secs: 1,
            },
            Condition::MisTimeout => GatewayError::MisTimeout,
        }
    }
}

impl GatewayError {
    /// The gateway's own condition, or `None` for a MIS's rejection passed on.
    pub fn condition(&self) -> Option<Condition> {
        Some(match self {
            Self::MalformedJson { .. } => Condition::MalformedJson,
            Self::Invalid { .. } => Condition::Invalid,
            Self::Unauthenticated => Condition::Unauthenticated,
            Self::AuthThrottled { .. } => Condition::AuthThrottled,
            Self::ForbiddenLpu => Condition::ForbiddenLpu,
            Self::NotFound => Condition::NotFound,
            Self::NoRoute => Condition::NoRoute,
            Self::MethodNotAllowed { .. } => Condition::MethodNotAllowed,
            Self::AppointmentUnknown => Condition::AppointmentUnknown,
            Self::CancelInFlight => Condition::CancelInFlight,
            Self::CancelUnsupported => Condition::CancelUnsupported,
            Self::NoJournal => Condition::NoJournal,
            Self::BackendGone => Condition::BackendGone,
            Self::BodyTimeout => Condition::BodyTimeout,
            Self::PayloadTooLarge { .. } => Condition::PayloadTooLarge,
            Self::UnsupportedMediaType => Condition::UnsupportedMediaType,
            Self::MisUnreachable => Condition::MisUnreachable,
            Self::MisBadAnswer => Condition::MisBadAnswer,
            Self::MisTls => Condition::MisTls,
            Self::MisRejectedGateway => Condition::MisRejectedGateway,
            Self::OutcomeUnknown => Condition::OutcomeUnknown,
            Self::MisTimeout => Condition::MisTimeout,
            Self::Mis(_) => return None,
            Self::RateLimited { .. } => Condition::RateLimited,
            Self::BadIdempotencyKey => Condition::BadIdempotencyKey,
            Self::BadHost => Condition::BadHost,
            Self::DuplicateAuthorization => Condition::DuplicateAuthorization,
            Self::BadRequestHead => Condition::BadRequestHead,
            Self::UriTooLong => Condition::UriTooLong,
            Self::HeadersTooLarge => Condition::HeadersTooLarge,
            Self::IdempotencyInFlight => Condition::IdempotencyInFlight,
            Self::DuplicateInFlight => Condition::DuplicateInFlight,
            Self::IdempotencyMismatch => Condition::IdempotencyMismatch,
            Self::Overloaded { .. } => Condition::Overloaded,
            Self::BreakerOpen { .. } => Condition::BreakerOpen,
            Self::Internal => Condition::Internal,
        })
    }

    /// The table row name of this error (`Mis` for a MIS's rejection).
    pub fn name(&self) -> &'static str {
        self.condition().map_or("Mis", Condition::name)
    }

    /// Whether the booking may exist although the answer says nothing of it.
    pub fn outcome_unknown(&self) -> bool {
        self.condition()
            .is_some_and(|c| c.kind().retry == Retry::OnlySameKey)
    }

    /// The message code alone, borrowed from the table unless the MIS chose it.
    pub fn code(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Mis(r) => r.code.clone().into(),
            other => other.own_kind().code.into(),
        }
    }

    /// Status and `Message_code` of this error, as the client sees them.
    pub fn status_and_code(&self) -> (StatusCode, &str) {
        match self {
            Self::Mis(r) => (r.status, r.code.as_str()),
            other => {
                let k = other.own_kind();
                (k.status, k.code)
            }
        }
    }

    /// The row of a gateway condition; a MIS's rejection has none and is never asked.
    fn own_kind(&self) -> ErrorKind {
        self.condition().unwrap_or(Condition::Internal).kind()
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
                format!("{} {}", Condition::MalformedJson.kind().message, detail),
                None,
            ),
            Self::Invalid { problems } => {
                (Condition::Invalid.kind().message.to_owned(), Some(problems))
            }
            Self::PayloadTooLarge { limit } => (
                format!(
                    "{} The limit is {limit} bytes.",
                    Condition::PayloadTooLarge.kind().message
                ),
                None,
            ),
            other => (other.own_kind().message.to_owned(), None),
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
            Self::MethodNotAllowed { allow } => {
                h.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            // Nothing was sent: a retry is safe, and a refused connection is often a restart.
            Self::MisUnreachable => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
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
    /// One error of every condition, in the table's order (tests and docs render them all).
    pub fn examples() -> Vec<GatewayError> {
        Condition::ALL.iter().map(|c| c.example()).collect()
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
        for (e, (name, _)) in all.iter().zip(TABLE) {
            assert_eq!(e.name(), *name, "{e:?} is not its row's example");
            assert_eq!(e.condition().map(Condition::name), Some(*name));
        }
    }

    #[test]
    fn only_answers_after_the_booking_was_sent_are_outcome_unknown() {
        let unknown: Vec<&str> = GatewayError::examples()
            .iter()
            .filter(|e| e.outcome_unknown())
            .map(GatewayError::name)
            .collect();
        assert_eq!(unknown, ["OutcomeUnknown", "MisTimeout"]);
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
