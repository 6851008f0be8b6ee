//! HTTP/1.1 to a MIS, over one connection, for the one exchange the gateway makes: a `POST`
//! with a body in memory, and an answer read in full within a size cap.
//!
//! This is the client half of HTTP/1.1 that exchange needs, on `httparse` (hyper's own parser),
//! in the style of Pingora's HTTP/1 client. It runs inside the booking's own future: no
//! connection task, no channel between the booking and its connection, no `HeaderMap` built for
//! an answer of which the gateway reads three headers. HTTP/2 backends keep hyper's client
//! (see `crate::upstream::pool`).
//!
//! What it holds to (RFC 9112):
//! - the answer's framing: no body for 1xx, 204 and 304; `Transfer-Encoding` ending in
//!   `chunked` is decoded (extensions ignored, trailers read and dropped); any other
//!   `Transfer-Encoding`, or neither header, is a body read to the connection's end;
//!   `Content-Length` must be decimal digits, and equal where repeated;
//! - interim answers (1xx but 101) are skipped; `101` and malformed heads are errors;
//! - a connection is kept only when the answer was HTTP/1.1 without `Connection: close`, its
//!   length was known, and nothing followed it;
//! - whether any byte of a request left this process is known exactly ([`Failure`]): the pool
//!   tries a request on another connection only when none did.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Most header fields an answer's head may have (hyper's default limit too).
const MAX_HEADERS: usize = 100;
/// Largest answer head (status line and header fields), and largest trailer section.
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// What the read buffer grows by when it runs short (at least).
const READ_CHUNK: usize = 8 * 1024;

/// Why a request got no answer head.
#[derive(Debug)]
pub enum Failure {
    /// Not a byte of the request was accepted by the connection: the MIS cannot have it.
    Unsent(io::Error),
    /// Some or all of the request was written: the MIS may have acted on it.
    Sent(io::Error),
}

/// Why an answer's body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Longer than the cap.
    TooLarge,
    /// Cut short, or framed wrongly.
    Broken(io::Error),
}

/// How the body of an answer is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// An answer's head: what the gateway needs of it.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    framing: Framing,
    keep_alive: bool,
}

impl Head {
    /// The body's length when the head states it (`Content-Length`, or a status without body).
    pub fn declared_length(&self) -> Option<u64> {
        match self.framing {
            Framing::Empty => Some(0),
            Framing::Length(n) => Some(n),
            Framing::Chunked | Framing::UntilClose => None,
        }
    }
}

/// The part of every booking to one MIS that does not change: request line, `Host` and media
/// types. Built once per pool.
pub fn request_prefix(target: &str, host: Option<&str>) -> Vec<u8> {
    let mut p = request_line("POST", target, host);
    p.extend_from_slice(b"content-type: application/json\r\naccept: application/json\r\n");
    p
}

/// The start of a request without a body (a cancellation's `DELETE`): request line, `Host`,
/// `Accept`.
pub fn bodyless_prefix(method: &str, target: &str, host: Option<&str>) -> Vec<u8> {
    let mut p = request_line(method, target, host);
    p.extend_from_slice(b"accept: application/json\r\n");
    p
}

fn request_line(method: &str, target: &str, host: Option<&str>) -> Vec<u8> {
    let mut p = Vec::with_capacity(128);
    p.extend_from_slice(method.as_bytes());
    p.push(b' ');
    p.extend_from_slice(target.as_bytes());
    p.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(host) = host {
        p.extend_from_slice(b"host: ");
        p.extend_from_slice(host.as_bytes());
        p.extend_from_slice(b"\r\n");
    }
    p
}

/// One HTTP/1.1 connection to a MIS: its transport, what has been read of it and not yet
/// consumed, and the buffer requests are written from (both kept between exchanges).
pub struct Conn<T> {
    io: T,
    read: BytesMut,
    write: Vec<u8>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Conn<T> {
    pub fn new(io: T) -> Self {
        Conn {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
        }
    }

    /// Whether an idle connection is still open as far as this thread knows, without waiting:
    /// a connection the MIS closed, or on which it sent something unasked, is not. When nothing
    /// arrived since the last read this costs no system call (the runtime's readiness says so).
    pub fn is_open(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    /// Writes one request: `prefix` (see [`request_prefix`]), then each `(name, value)` field,
    /// `Content-Length` and `body`, in one write when the transport takes it whole. Values
    /// must be valid field values (an `http::HeaderValue`'s bytes are).
    pub async fn send(
        &mut self,
        prefix: &[u8],
        fields: &[(&str, &[u8])],
        body: &[u8],
    ) -> Result<(), Failure> {
        let w = &mut self.write;
        w.clear();
        w.extend_from_slice(prefix);
        for (name, value) in fields {
            w.extend_from_slice(name.as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(value);
            w.extend_from_slice(b"\r\n");
        }
        w.extend_from_slice(b"content-length: ");
        w.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        w.extend_from_slice(b"\r\n\r\n");
        w.extend_from_slice(body);
        let mut written = 0;
        while written < w.len() {
            match self.io.write(&w[written..]).await {
                Ok(0) => return Err(failure(written, io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) => return Err(failure(written, e)),
            }
        }
        self.io.flush().await.map_err(Failure::Sent)
    }

    /// Reads the final answer's head (interim 1xx answers are skipped).
    pub async fn read_head(&mut self) -> io::Result<Head> {
        // Where the bytes not yet looked at for an empty line start.
        let mut from = 0;
        loop {
            if (from == 0 || has_empty_line(&self.read, from))
                && let Some((head, len)) = parse_head(&self.read)?
            {
                self.read.advance(len);
                from = 0;
                if head.status.is_informational() {
                    continue;
                }
                return Ok(head);
            }
            if self.read.len() >= MAX_HEAD {
                return Err(invalid("answer head larger than 64 KiB"));
            }
            from = self.read.len();
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads the body `head` announced, up to `limit` bytes. Afterwards, [`Conn::reusable`]
    /// tells whether the connection can carry another exchange.
    pub async fn read_body(&mut self, head: &Head, limit: usize) -> Result<Bytes, BodyError> {
        match head.framing {
            Framing::Empty => Ok(Bytes::new()),
            Framing::Length(n) => {
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= limit)
                    .ok_or(BodyError::TooLarge)?;
                self.read.reserve(n.saturating_sub(self.read.len()));
                while self.read.len() < n {
                    if self.fill().await.map_err(BodyError::Broken)? == 0 {
                        return Err(BodyError::Broken(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Ok(self.read.split_to(n).freeze())
            }
            Framing::Chunked => self.read_chunked(limit).await,
            Framing::UntilClose => loop {
                if self.read.len() > limit {
                    return Err(BodyError::TooLarge);
                }
                if self.fill().await.map_err(BodyError::Broken)? == 0 {
                    return Ok(self.read.split().freeze());
                }
            },
        }
    }

    /// Whether, after [`Conn::read_body`] succeeded for `head`, another request may be sent.
    pub fn reusable(&self, head: &Head) -> bool {
        head.keep_alive && head.framing != Framing::UntilClose && self.read.is_empty()
    }

    async fn read_chunked(&mut self, limit: usize) -> Result<Bytes, BodyError> {
        let mut body = BytesMut::new();
        loop {
            let mut from = 0;
            let (line, size) = loop {
                if self.read[from..].contains(&b'\n') {
                    match httparse::parse_chunk_size(&self.read) {
                        Ok(httparse::Status::Complete(found)) => break found,
                        Ok(httparse::Status::Partial) => {}
                        Err(_) => return Err(BodyError::Broken(invalid("bad chunk size line"))),
                    }
                }
                from = self.read.len();
                self.more(MAX_CHUNK_LINE, "chunk size line").await?;
            };
            self.read.advance(line);
            if size == 0 {
                break;
            }
            let mut left = usize::try_from(size)
                .ok()
                .filter(|&s| s <= limit.saturating_sub(body.len()))
                .ok_or(BodyError::TooLarge)?;
            while left > 0 {
                if self.read.is_empty() {
                    self.more(usize::MAX, "chunk").await?;
                }
                let take = left.min(self.read.len());
                body.extend_from_slice(&self.read[..take]);
                self.read.advance(take);
                left -= take;
            }
            while self.read.len() < 2 {
                self.more(usize::MAX, "chunk").await?;
            }
            if &self.read[..2] != b"\r\n" {
                return Err(BodyError::Broken(invalid("chunk not followed by CRLF")));
            }
            self.read.advance(2);
        }
        // The trailer section, read and dropped, up to its empty line.
        let mut from = 0;
        loop {
            if from == 0 || has_empty_line(&self.read, from) {
                let mut fields = [httparse::EMPTY_HEADER; 32];
                match httparse::parse_headers(&self.read, &mut fields) {
                    Ok(httparse::Status::Complete((len, _))) => {
                        self.read.advance(len);
                        return Ok(body.freeze());
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => return Err(BodyError::Broken(invalid("bad trailer section"))),
                }
            }
            from = self.read.len();
            self.more(MAX_HEAD, "trailer section").await?;
        }
    }

    /// One more read into the buffer for a body, refusing to buffer past `cap` or to end.
    async fn more(&mut self, cap: usize, what: &str) -> Result<(), BodyError> {
        if self.read.len() >= cap {
            return Err(BodyError::Broken(invalid(&format!("{what} too long"))));
        }
        match self.fill().await {
            Ok(0) => Err(BodyError::Broken(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => Ok(()),
            Err(e) => Err(BodyError::Broken(e)),
        }
    }

    /// One read from the transport into the buffer; 0 at the connection's end.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.read.capacity() - self.read.len() < READ_CHUNK / 8 {
            // Doubling: a long body is not copied once per read.
            self.read.reserve(READ_CHUNK.max(self.read.len()));
        }
        self.io.read_buf(&mut self.read).await
    }
}

/// Whether an empty line (LF or CRLF, as httparse takes line ends) ends at or after `from`:
/// the end of a head or trailer section. After its first read, a section is parsed again only
/// when one has arrived, so an answer trickled a byte at a time is parsed twice, not once per
/// byte (and the usual answer, whole in one read, is parsed at once without this scan).
fn has_empty_line(buf: &[u8], from: usize) -> bool {
    (from..buf.len()).any(|i| {
        buf[i] == b'\n' && {
            let before = &buf[..i];
            let before = before.strip_suffix(b"\r").unwrap_or(before);
            before.is_empty() || before.ends_with(b"\n")
        }
    })
}

fn failure(written: usize, e: io::Error) -> Failure {
    if written == 0 {
        Failure::Unsent(e)
    } else {
        Failure::Sent(e)
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// The head at the start of `buf` and its length, or `None` if `buf` does not hold all of it.
fn parse_head(buf: &[u8]) -> io::Result<Option<(Head, usize)>> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut answer,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(&format!("malformed answer head: {e}"))),
    };
    let (Some(version), Some(code)) = (answer.version, answer.code) else {
        return Err(invalid("malformed answer head"));
    };
    let status = StatusCode::from_u16(code).map_err(|_| invalid("bad status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(invalid("101 Switching Protocols was not asked for"));
    }
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut close = version == 0;
    for field in answer.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            for part in field.value.split(|&b| b == b',') {
                let n = decimal(part.trim_ascii()).ok_or_else(|| invalid("bad Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(invalid("conflicting Content-Length values"));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if version == 0 {
                return Err(invalid("Transfer-Encoding in an HTTP/1.0 answer"));
            }
            // Only the last coding decides; a later field continues the list.
            if let Some(last) = field.value.rsplit(|&b| b == b',').next() {
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in field.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                }
            }
        }
    }
    let framing = if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) | (None, None) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
        }
    };
    // Both framings at once may be an attempt at response splitting: the body is read by
    // Transfer-Encoding as the RFC says, and the connection is not trusted with another.
    let keep_alive = !(close || chunked.is_some() && length.is_some());
    Ok(Some((
        Head {
            status,
            framing,
            keep_alive,
        },
        len,
    )))
}

/// `digits` as a number: ASCII decimal digits only, no sign, no overflow.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A transport that hands the reader one byte per read: every split point of an answer.
    struct Trickle(TcpStream);

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let mut one = [0u8; 1];
            let mut one_buf = ReadBuf::new(&mut one);
            let polled = Pin::new(&mut self.0).poll_read(cx, &mut one_buf);
            if let Poll::Ready(Ok(())) = polled {
                buf.put_slice(one_buf.filled());
            }
            polled
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    /// A client connection and the server's end of it, over loopback.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    /// What the server received: one request's head and its `content-length` body.
    async fn read_request<S: AsyncRead + Unpin>(server: &mut S) -> String {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            assert_eq!(
                server.read(&mut byte).await.unwrap(),
                1,
                "request cut short"
            );
            got.push(byte[0]);
        }
        let head = String::from_utf8(got).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("a content-length")
            .parse()
            .unwrap();
        let mut body = vec![0u8; len];
        server.read_exact(&mut body).await.unwrap();
        head + std::str::from_utf8(&body).unwrap()
    }

    const PREFIX_HOST: &str = "mis.example:8080";

    async fn send_booking<T: AsyncRead + AsyncWrite + Unpin>(
        conn: &mut Conn<T>,
    ) -> Result<(), Failure> {
        let prefix = request_prefix("/dir/appointments?x=1", Some(PREFIX_HOST));
        conn.send(
            &prefix,
            &[
                ("authorization", b"Basic bWlzOnB3"),
                ("x-request-id", b"r-1"),
            ],
            br#"{"a":1}"#,
        )
        .await
    }

    /// Sends a booking, answers it with `answer`, and reads the head and the body (cap `limit`).
    async fn exchange(
        answer: &'static [u8],
        limit: usize,
        close_after: bool,
    ) -> (io::Result<Head>, Option<Result<Bytes, BodyError>>, bool) {
        let (client, mut server) = pair().await;
        let mut conn = Conn::new(Trickle(client));
        send_booking(&mut conn).await.unwrap();
        read_request(&mut server).await;
        server.write_all(answer).await.unwrap();
        // Otherwise kept open while the client reads: an answer must not need the close to end.
        let _open = (!close_after).then_some(server);
        let head = conn.read_head().await;
        let Ok(h) = &head else {
            return (head, None, false);
        };
        let body = conn.read_body(h, limit).await;
        let reusable = body.is_ok() && conn.reusable(h);
        (head, Some(body), reusable)
    }

    fn body_of(r: Option<Result<Bytes, BodyError>>) -> Bytes {
        match r {
            Some(Ok(b)) => b,
            other => panic!("no body: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_booking_is_one_well_formed_post_and_a_sized_answer_keeps_the_connection() {
        let (client, mut server) = pair().await;
        let mut conn = Conn::new(client);
        for round in 0..2 {
            send_booking(&mut conn).await.unwrap();
            assert_eq!(
                read_request(&mut server).await,
                "POST /dir/appointments?x=1 HTTP/1.1\r\nhost: mis.example:8080\r\n\
                 content-type: application/json\r\naccept: application/json\r\n\
                 authorization: Basic bWlzOnB3\r\nx-request-id: r-1\r\ncontent-length: 7\r\n\r\n\
                 {\"a\":1}",
                "round {round}"
            );
            server
                .write_all(b"HTTP/1.1 201 Created\r\nServer: t\r\nContent-Length: 5\r\n\r\nhello")
                .await
                .unwrap();
            let head = conn.read_head().await.unwrap();
            assert_eq!(
                (head.status, head.declared_length()),
                (StatusCode::CREATED, Some(5))
            );
            assert_eq!(conn.read_body(&head, 100).await.unwrap(), "hello");
            assert!(conn.reusable(&head), "round {round}");
            assert!(conn.is_open(), "round {round}");
        }
    }

    #[tokio::test]
    async fn chunked_answers_are_decoded_whatever_the_reads_split_and_trailers_dropped() {
        let (head, body, reusable) = exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n\
              4;name=\"v\"\r\nWiki\r\n5\r\npedia\r\nA \r\n in chunks\r\n0\r\nX-Sum: 1\r\n\r\n",
            100,
            false,
        )
        .await;
        assert_eq!(head.unwrap().declared_length(), None);
        assert_eq!(body_of(body), "Wikipedia in chunks");
        assert!(reusable);
    }

    #[tokio::test]
    async fn interim_answers_are_skipped_and_bodyless_statuses_read_nothing() {
        let (head, body, reusable) = exchange(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
              HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            100,
            false,
        )
        .await;
        assert_eq!(head.unwrap().status, StatusCode::OK);
        assert_eq!(body_of(body), "ok");
        assert!(reusable);

        let (head, body, reusable) = exchange(b"HTTP/1.1 204 No Content\r\n\r\n", 100, false).await;
        assert_eq!(head.unwrap().declared_length(), Some(0));
        assert_eq!(body_of(body), "");
        assert!(reusable);
    }

    #[tokio::test]
    async fn a_connection_is_not_kept_after_close_http_1_0_or_a_body_read_to_the_end() {
        let cases: [(&[u8], &str); 4] = [
            (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok", "ok"),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "ok"),
            (b"HTTP/1.1 502 Bad Gateway\r\n\r\nto the end", "to the end"),
            // Both framings: the chunked one reads the body, the connection is not trusted.
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                "ok",
            ),
        ];
        for (answer, want) in cases {
            let (head, body, reusable) = exchange(answer, 100, true).await;
            head.unwrap();
            assert_eq!(body_of(body), want, "{}", String::from_utf8_lossy(answer));
            assert!(!reusable, "{}", String::from_utf8_lossy(answer));
        }
    }

    #[test]
    fn heads_with_bad_framing_or_syntax_are_refused_and_good_ones_read() {
        let refused: [&[u8]; 9] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 12a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
            b"HTTP/1.1 20x OK\r\n\r\n",
        ];
        for head in refused {
            let e = parse_head(head).map(|h| h.map(|(h, _)| h)).unwrap_err();
            assert_eq!(
                e.kind(),
                io::ErrorKind::InvalidData,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        let (head, len) = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!((head.declared_length(), len), (Some(5), 41));
        assert!(head.keep_alive);
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_section_is_parsed_only_once_its_empty_line_has_arrived() {
        let ended = ["\r\n", "\n", "a: b\r\n\r\n", "a: b\n\n", "a: b\r\n\n"];
        for buf in ended {
            assert!(has_empty_line(buf.as_bytes(), 0), "{buf:?}");
            assert!(has_empty_line(buf.as_bytes(), buf.len() - 1), "{buf:?}");
        }
        let open = ["", "a: b\r\n", "a: b\r\nc: d\r", "a: b\r\r\n", "a\n \n"];
        for buf in open {
            assert!(!has_empty_line(buf.as_bytes(), 0), "{buf:?}");
        }
        // Only the end at or after `from` counts: what was looked at before is not again.
        assert!(!has_empty_line(b"\r\nHTTP/1.1", 2));
    }

    #[tokio::test]
    async fn bodies_past_the_cap_cut_short_or_badly_chunked_are_errors() {
        // (answer, cap, whether the error is the cap rather than a broken body)
        let cases: [(&[u8], usize, bool); 7] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 4, true),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
                4,
                true,
            ),
            (b"HTTP/1.1 200 OK\r\n\r\nhello", 4, true),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", 100, false),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel",
                100,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhelXX0\r\n\r\n",
                100,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhel\r\n0\r\n\r\n",
                100,
                false,
            ),
        ];
        for (answer, limit, too_large) in cases {
            let (_, body, _) = exchange(answer, limit, true).await;
            let got = match body {
                Some(Err(BodyError::TooLarge)) => Some(true),
                Some(Err(BodyError::Broken(_))) => Some(false),
                _ => None,
            };
            assert_eq!(
                got,
                Some(too_large),
                "{}: {body:?}",
                String::from_utf8_lossy(answer)
            );
        }
    }

    #[tokio::test]
    async fn an_answer_head_past_64_kib_or_cut_short_is_an_error() {
        let (client, mut server) = pair().await;
        let mut conn = Conn::new(client);
        send_booking(&mut conn).await.unwrap();
        read_request(&mut server).await;
        let big = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let writer = tokio::spawn(async move {
            // The client stops reading at the limit; what it leaves unread is not waited for.
            let _ = server.write_all(big.as_bytes()).await;
            server
        });
        let e = conn.read_head().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        drop(writer);

        let (head, _, _) = exchange(b"HTTP/1.1 200 OK\r\nContent-", 100, true).await;
        assert_eq!(head.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    /// Polls `conn.is_open()` until it is false, letting the runtime take in socket events in
    /// between; bounded.
    async fn until_closed<T: AsyncRead + AsyncWrite + Unpin>(conn: &mut Conn<T>) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while conn.is_open() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the idle connection is seen as closed");
    }

    #[tokio::test]
    async fn an_idle_connection_closed_or_written_to_by_the_mis_is_not_open() {
        let (client, server) = pair().await;
        let mut conn = Conn::new(client);
        assert!(conn.is_open());
        drop(server);
        until_closed(&mut conn).await;

        let (client, mut server) = pair().await;
        let mut conn = Conn::new(client);
        server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        until_closed(&mut conn).await;
        assert!(!conn.is_open(), "bytes nobody asked for stay a reason");
    }

    #[tokio::test]
    async fn over_tls_session_tickets_on_an_idle_connection_leave_it_open_and_reusable() {
        use std::sync::Arc;
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let der = cert.cert.der().clone();
        let key =
            rustls_pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let ring = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(ring.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(ring)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (client, server) = pair().await;
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let (client, server) = tokio::join!(
            tokio_rustls::TlsConnector::from(Arc::new(client_config)).connect(name, client),
            tokio_rustls::TlsAcceptor::from(Arc::new(server_config)).accept(server),
        );
        let (mut conn, mut server) = (Conn::new(client.unwrap()), server.unwrap());
        // A TLS 1.3 server sends its session tickets after the handshake: records that carry
        // no data, waiting on the idle connection.
        tokio::time::timeout(Duration::from_secs(5), conn.io.get_ref().0.readable())
            .await
            .expect("the server's session tickets arrive")
            .unwrap();
        for round in 0..2 {
            assert!(conn.is_open(), "round {round}");
            send_booking(&mut conn).await.unwrap();
            read_request(&mut server).await;
            server
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            server.flush().await.unwrap();
            let head = conn.read_head().await.unwrap();
            assert_eq!(conn.read_body(&head, 10).await.unwrap(), "ok");
            assert!(conn.reusable(&head), "round {round}");
        }
    }

    #[tokio::test]
    async fn a_request_to_a_connection_the_mis_reset_is_unsent() {
        let (client, server) = pair().await;
        let mut conn = Conn::new(client);
        server.set_zero_linger().unwrap();
        drop(server);
        until_closed(&mut conn).await;
        match send_booking(&mut conn).await {
            Err(Failure::Unsent(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}
