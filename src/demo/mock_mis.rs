//! An in-process MIS of this API family: the demo's backends and the tests' recording upstreams.
//!
//! A [`MockMis`] records every request it receives (method, path, headers, body) and answers
//! what its [`Script`] says. [`clinic`] is the script of a well-behaved MIS: it checks the
//! gateway's credentials, refuses a slot booked twice, and answers like the real family does
//! (local time without offset, numeric ticket number, no `source` or `direction`); it cancels
//! what it booked (`DELETE /dir/appointments/{guid}`), after which the slot can be booked again.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::edge::server::{self, ConnLimits, Handler};

/// One request as the MIS received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    /// HTTP/1.1 or HTTP/2, as the connection negotiated.
    pub version: http::Version,
    pub path: String,
    /// The query string, if any (a cancellation's `reason`).
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What the MIS answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
    /// Wait this long before answering (a slow MIS).
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: body.into(),
            delay: None,
        }
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = Some(delay);
        self
    }

    /// An ExceptionResponse of this MIS family.
    pub fn exception(status: u16, message: &str, code: &str) -> Reply {
        let body = serde_json::json!({"Code": status, "Message": message, "Message_code": code});
        Reply::json(status, body.to_string())
    }
}

/// Decides the answer to each request.
pub type Script = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

struct MockHandler {
    script: Script,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Handler for MockHandler {
    async fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        _peer: std::net::SocketAddr,
    ) -> Response<Full<Bytes>> {
        {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let received = Received {
                method: parts.method,
                version: parts.version,
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().map(str::to_owned),
                headers: parts.headers,
                body,
            };
            let reply = (self.script)(&received);
            self.received
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(received);
            if let Some(d) = reply.delay {
                tokio::time::sleep(d).await;
            }
            let mut resp = Response::new(Full::new(reply.body));
            *resp.status_mut() = reply.status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            resp
        }
    }
}

/// A running mock MIS. Stops when dropped.
pub struct MockMis {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    _stop: oneshot::Sender<()>,
}

impl MockMis {
    /// Serves `script` on `listener` (bind `127.0.0.1:0` in tests).
    pub fn start(listener: TcpListener, script: Script) -> MockMis {
        Self::start_tls(listener, script, None)
    }

    /// Serves `script` over TLS with `tls` (a MIS on https, possibly requiring client certs).
    pub fn start_tls(
        listener: TcpListener,
        script: Script,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> MockMis {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(MockHandler {
            script,
            received: received.clone(),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let tls = tls.map(|config| -> server::TlsSource { Arc::new(move || Some(config.clone())) });
        tokio::spawn(server::serve_tls(
            listener,
            handler,
            ConnLimits::default(),
            tls,
            async move {
                let _ = stopped.await;
            },
            Duration::ZERO,
        ));
        MockMis {
            addr,
            received,
            _stop: stop,
        }
    }

    /// Binds `127.0.0.1:0` and serves `script`.
    pub async fn spawn(script: Script) -> MockMis {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        MockMis::start(listener, script)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn count(&self) -> usize {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// A well-behaved MIS in time zone `tz` that accepts only `expected_authorization`.
pub fn clinic(expected_authorization: String, tz: jiff::tz::TimeZone) -> Script {
    let booked = Mutex::new(HashSet::<String>::new());
    // Appointment guid (lowercase) → its slot, while booked.
    let appointments = Mutex::new(HashMap::<String, String>::new());
    let tickets = AtomicU64::new(1);
    Arc::new(move |req: &Received| {
        let cancel = req
            .path
            .strip_prefix("/dir/appointments/")
            .filter(|_| req.method == Method::DELETE);
        if cancel.is_none() && (req.method != Method::POST || req.path != "/dir/appointments") {
            return Reply::exception(404, "Not found", "4040");
        }
        let authorized = req
            .headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == expected_authorization.as_bytes());
        if !authorized {
            return Reply::exception(403, "Authorization failed", "5403");
        }
        if let Some(guid) = cancel {
            let slot = appointments
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&guid.to_ascii_lowercase());
            return match slot {
                Some(slot) => {
                    booked
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&slot);
                    Reply::exception(200, "The appointment is cancelled", "2000")
                }
                None => Reply::exception(404, "No such appointment", "4041"),
            };
        }
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&req.body) else {
            return Reply::exception(400, "Request body is not valid", "4000");
        };
        let Some(slot) = body["slot"].as_str().map(str::to_ascii_lowercase) else {
            return Reply::exception(400, "Slot is required", "4001");
        };
        if !booked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slot.clone())
        {
            return Reply::exception(400, "The slot is already taken", "4002");
        }
        let now = jiff::Timestamp::now()
            .to_zoned_datetime(tz.clone())
            .datetime();
        let guid = uuid::Uuid::new_v4().hyphenated().to_string();
        appointments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(guid.clone(), slot.clone());
        let answer = serde_json::json!({
            "guid": guid.to_uppercase(),
            "number": tickets.fetch_add(1, Ordering::Relaxed),
            "slot": slot,
            "createTime": now.strftime("%Y-%m-%d %H:%M:%S.000").to_string(),
        });
        Reply::json(200, answer.to_string())
    })
}
