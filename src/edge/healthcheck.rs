//! `mis-gateway healthcheck`: one HTTP/1.1 GET to the admin listener, for images without curl
//! (distroless) — exit 0 when the answer is 200, 1 otherwise, saying why on stderr.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Asks `http://{addr}{path}` once within `timeout` and returns the status code, or a sentence
/// naming the address and what went wrong.
pub fn probe(addr: &str, path: &str, timeout: Duration) -> Result<u16, String> {
    let deadline = Instant::now() + timeout;
    let target = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: not an address: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let io = |e: std::io::Error| format!("{target}{path}: {e}");
    stream.set_write_timeout(Some(left())).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: mis-gateway-healthcheck\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    // The status line is all that is needed; it fits in the first read or few.
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
        stream.set_read_timeout(Some(left())).map_err(io)?;
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head
        .split(|&b| b == b'\r')
        .next()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/1.") => Ok(code),
        _ => Err(format!("{target}{path}: not an HTTP answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_port_is_an_error_naming_the_address() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = probe(&port.to_string(), "/readyz", Duration::from_secs(2)).unwrap_err();
        assert!(err.contains(&port.to_string()), "{err}");
        assert!(probe("no port here", "/readyz", Duration::from_secs(2)).is_err());
    }

    #[test]
    fn a_peer_that_is_not_http_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let _ = s.read(&mut [0u8; 512]);
            s.write_all(b"SSH-2.0-OpenSSH\r\n").unwrap();
        });
        let err = probe(&addr.to_string(), "/readyz", Duration::from_secs(2)).unwrap_err();
        assert!(err.contains("not an HTTP answer"), "{err}");
        peer.join().unwrap();
    }
}
