//! hyper's own HTTP/1 refusals (a request head it cannot parse: 400, 414, 431) in the error
//! shape with `X-Request-Id`: hyper answers those itself with an empty body, so the
//! connection's writes are watched and such an answer is replaced before it reaches the socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{GatewayError, RequestId};

/// A connection's byte stream whose writes of hyper's bare refusals are replaced (see the
/// module). Every other write passes through untouched after a ten-byte comparison.
pub struct Refusals<S> {
    inner: S,
    /// A replacement being written: its bytes, how many went out, and the length of the
    /// write it stands for (reported to hyper once all of it is out).
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<S> Refusals<S> {
    pub fn new(inner: S) -> Self {
        Refusals {
            inner,
            pending: None,
        }
    }
}

/// The error hyper's automatic answer with `status` stands for.
fn error_for(status: &[u8]) -> Option<GatewayError> {
    match status {
        b"400" => Some(GatewayError::BadRequestHead),
        b"414" => Some(GatewayError::UriTooLong),
        b"431" => Some(GatewayError::HeadersTooLarge),
        _ => None,
    }
}

/// If `buf` is hyper's own refusal (a 400, 414 or 431 head with no body and no request id:
/// every answer of the gateway carries one), the answer to send instead.
fn replacement(buf: &[u8]) -> Option<Vec<u8>> {
    if buf.len() < 12 || !(buf.starts_with(b"HTTP/1.1 4") || buf.starts_with(b"HTTP/1.0 4")) {
        return None;
    }
    let error = error_for(&buf[9..12])?;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = buf[..end].to_ascii_lowercase();
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    if has(b"\r\nx-request-id:") || !has(b"\r\ncontent-length: 0") || buf.len() != end + 4 {
        return None;
    }
    let id = RequestId::new();
    tracing::info!(
        target: "access",
        request_id = id.as_str(),
        status = std::str::from_utf8(&buf[9..12]).unwrap_or_default(),
        code = &*error.code(),
        "refused by the HTTP layer"
    );
    Some(render(error.into_response(&id, None)))
}

/// An answer as HTTP/1.1 bytes, closing the connection (as hyper does after such a refusal).
pub fn render(resp: Response<Full<Bytes>>) -> Vec<u8> {
    use futures_util::FutureExt;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .now_or_never()
        .and_then(Result::ok)
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(&body);
    out
}

impl<S: AsyncWrite + Unpin> Refusals<S> {
    /// Writes what is left of a replacement; `Ready(Ok(n))`: all of it is out, `n` the length
    /// of the write it replaced.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<usize>>> {
        while let Some((bytes, sent, _)) = &mut self.pending {
            if *sent == bytes.len() {
                let claimed = self.pending.take().map(|(_, _, c)| c);
                return Poll::Ready(Ok(claimed));
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        Poll::Ready(Ok(None))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Refusals<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Refusals<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        if me.pending.is_none() {
            match replacement(buf) {
                Some(bytes) => me.pending = Some((bytes, 0, buf.len())),
                None => return Pin::new(&mut me.inner).poll_write(cx, buf),
            }
        }
        // hyper writes the same bytes again after `Pending`: the replacement goes on.
        match ready!(me.poll_pending(cx))? {
            Some(claimed) => Poll::Ready(Ok(claimed)),
            None => Pin::new(&mut me.inner).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A replacement interrupted by `Pending` is finished before anything else.
        if self.pending.is_some() {
            ready!(self.poll_pending(cx))?;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_some() {
            ready!(self.poll_pending(cx))?;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bare_refusals_are_replaced() {
        let bare =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(replacement(bare).unwrap()).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{out}"
        );
        assert!(out.contains("x-request-id: "), "{out}");
        assert!(out.contains("\"Message_code\":\"94310\""), "{out}");
        let ours = b"HTTP/1.1 400 Bad Request\r\nx-request-id: r\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(ours).is_none());
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert!(replacement(with_body).is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
