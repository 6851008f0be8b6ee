//! An in-process OTLP/HTTP trace receiver: decodes the protobuf export and keeps the spans.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use mis_gateway::edge::server::{self, ConnLimits, Handler};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use tokio::net::TcpListener;

/// One exported span, flattened for assertions.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    /// 2 = server, 3 = client (OTLP SpanKind).
    pub kind: i32,
    pub attributes: HashMap<String, String>,
    pub service: String,
}

struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    /// Raw bytes of every export, to search for canaries.
    raw: Arc<Mutex<Vec<u8>>>,
    /// The Content-Type of every export, in order.
    content_types: Arc<Mutex<Vec<String>>>,
    hang: bool,
}

impl Handler for Receiver {
    async fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        _peer: std::net::SocketAddr,
    ) -> Response<Full<Bytes>> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        self.content_types.lock().unwrap().push(content_type);
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        self.raw.lock().unwrap().extend_from_slice(&body);
        if let Ok(export) = ExportTraceServiceRequest::decode(body) {
            let mut spans = self.spans.lock().unwrap();
            for rs in export.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref().and_then(|v| v.value.as_ref()).map(text))
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for s in ss.spans {
                        spans.push(Span {
                            trace_id: hex(&s.trace_id),
                            span_id: hex(&s.span_id),
                            parent_span_id: hex(&s.parent_span_id),
                            name: s.name,
                            kind: s.kind,
                            attributes: s
                                .attributes
                                .into_iter()
                                .filter_map(|kv| Some((kv.key, text(kv.value?.value.as_ref()?))))
                                .collect(),
                            service: service.clone(),
                        });
                    }
                }
            }
        }
        let mut r = Response::new(Full::default());
        *r.status_mut() = StatusCode::OK;
        r.headers_mut()
            .insert("content-type", "application/x-protobuf".parse().unwrap());
        r
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    pub addr: std::net::SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    raw: Arc<Mutex<Vec<u8>>>,
    content_types: Arc<Mutex<Vec<String>>>,
    scheme: &'static str,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl OtlpReceiver {
    /// `hang`: accept exports and never answer (a stuck collector).
    pub async fn spawn(hang: bool) -> OtlpReceiver {
        Self::spawn_with(hang, None).await
    }

    /// A receiver behind TLS with `tls` (an https:// collector).
    pub async fn spawn_tls(tls: Arc<rustls::ServerConfig>) -> OtlpReceiver {
        Self::spawn_with(false, Some(tls)).await
    }

    async fn spawn_with(hang: bool, tls: Option<Arc<rustls::ServerConfig>>) -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let content_types = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(Receiver {
            spans: spans.clone(),
            raw: raw.clone(),
            content_types: content_types.clone(),
            hang,
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let tls: Option<server::TlsSource> = tls.map(|t| {
            let source: server::TlsSource = Arc::new(move || Some(t.clone()));
            source
        });
        tokio::spawn(server::serve_tls(
            listener,
            handler,
            ConnLimits::default(),
            tls,
            async move {
                let _ = stopped.await;
            },
            std::time::Duration::ZERO,
        ));
        OtlpReceiver {
            addr,
            spans,
            raw,
            content_types,
            scheme,
            _stop: stop,
        }
    }

    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.base_url())
    }

    /// `http://` or `https://` and the address, as OTEL_EXPORTER_OTLP_ENDPOINT takes it.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn content_types(&self) -> Vec<String> {
        self.content_types.lock().unwrap().clone()
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    pub fn raw(&self) -> Vec<u8> {
        self.raw.lock().unwrap().clone()
    }
}
