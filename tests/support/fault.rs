//! A MIS that misbehaves at the TCP level, for the faults an HTTP mock cannot produce:
//! hanging, resetting after the request, truncating or slicing its answer, closing pooled
//! connections while idle. It counts the requests it read in full.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Read the request, never answer, keep the connection open.
    Hang,
    /// Read the request, then reset the connection (RST).
    ResetAfterRequest,
    /// Answer 200 with a Content-Length larger than what is sent, then close.
    Truncate,
    /// Answer a valid appointment a few bytes at a time.
    Slice(usize),
    /// Answer a valid appointment (keep-alive), then close the idle connection.
    CloseAfterResponse,
    /// Answer `100 Continue`, then a valid appointment in chunks (with a chunk extension and a
    /// trailer), keep-alive.
    Chunked,
    /// Answer a valid appointment without a length, delimited by closing the connection.
    UntilClose,
}

pub struct FaultMis {
    pub addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    _tasks: JoinSet<()>,
}

impl FaultMis {
    pub async fn spawn(fault: Fault) -> FaultMis {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (r, c, a) = (requests.clone(), closed.clone(), accepted.clone());
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve(stream, fault, r.clone(), c.clone()));
            }
        });
        FaultMis {
            addr,
            requests,
            closed,
            accepted,
            _tasks: tasks,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests read in full so far.
    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections this MIS closed after answering.
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: TcpStream,
    fault: Fault,
    requests: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let Some(body) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        requests.fetch_add(1, Ordering::SeqCst);
        match fault {
            Fault::Hang => {
                // Keep the socket open until the client gives up.
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Fault::ResetAfterRequest => {
                let _ = stream.set_zero_linger();
                return;
            }
            Fault::Truncate => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n";
                let _ = stream
                    .write_all(format!("{head}{{\"guid\":\"ee5a").as_bytes())
                    .await;
                let _ = stream.shutdown().await;
                return;
            }
            Fault::Slice(n) => {
                let resp = appointment_response(&body);
                for chunk in resp.as_bytes().chunks(n.max(1)) {
                    if stream.write_all(chunk).await.is_err() || stream.flush().await.is_err() {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
            }
            Fault::Chunked => {
                let resp = appointment_response(&body);
                let (_, json) = resp.split_once("\r\n\r\n").unwrap();
                let (a, b) = json.split_at(json.len() / 2);
                let answer = format!(
                    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\
                     content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
                     {:x};part=1\r\n{a}\r\n{:X}\r\n{b}\r\n0\r\nx-checksum: none\r\n\r\n",
                    a.len(),
                    b.len()
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
            Fault::UntilClose => {
                let resp = appointment_response(&body);
                let (_, json) = resp.split_once("\r\n\r\n").unwrap();
                let answer =
                    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{json}");
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
                closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Fault::CloseAfterResponse => {
                let _ = stream
                    .write_all(appointment_response(&body).as_bytes())
                    .await;
                let _ = stream.shutdown().await;
                closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// Reads one request (headers, then Content-Length bytes); returns its body.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Some(body)
}

fn appointment_response(request_body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(request_body).unwrap_or_default();
    let body = serde_json::json!({
        "guid": uuid::Uuid::new_v4().to_string(),
        "number": "7",
        "slot": v["slot"],
        "createTime": "2023-04-05T14:00:00",
    })
    .to_string();
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}
