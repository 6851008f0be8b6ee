//! The client's address behind trusted proxies: from the PROXY protocol header (v1 or v2) a
//! trusted balancer sends first, or else from the `X-Forwarded-For` it appends. From any other
//! peer both are ignored (a PROXY header refused): nobody picks the address they are judged by.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::HeaderMap;
use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// How often an untrusted peer's first bytes are looked at again while they could still be
/// either a PROXY header or a request.
const PEEK_AGAIN: Duration = Duration::from_millis(10);
/// The longest v1 header (the spec's 107 bytes) and the largest v2 header this reads (its
/// addresses and a few TLVs; HAProxy's are far smaller).
const V1_MAX: usize = 107;
const V2_MAX: usize = 16 + 1024;

/// `[server] trusted_proxies` and `proxy_protocol`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    pub trusted: Vec<IpNet>,
    /// Trusted peers send a PROXY header first on every connection.
    pub proxy_protocol: bool,
}

/// Why a connection was closed before HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a PROXY protocol header from a peer that is not a trusted proxy")]
    UntrustedProxyHeader,
    #[error("the connection did not start with a valid PROXY protocol header, or closed")]
    BadProxyHeader,
    #[error("the PROXY protocol header was not received in time")]
    Timeout,
}

impl Proxies {
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request from `peer` (the TCP peer, or the address a trusted peer's
    /// PROXY header named): without the PROXY protocol, a trusted peer's `X-Forwarded-For`
    /// read from the right, skipping trusted hops; the first address that is not trusted is
    /// the client. An entry that is not an address ends the walk at the hop that added it.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.proxy_protocol || self.trusted.is_empty() || !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(text) = value.to_str() else {
                return client;
            };
            for item in text.rsplit(',') {
                let Some(ip) = parse_forwarded(item.trim()) else {
                    return client;
                };
                if !self.trusts(ip) {
                    return ip;
                }
                client = ip;
            }
        }
        client
    }

    /// Before HTTP (and TLS) on a new connection from `peer`: with the PROXY protocol on, a
    /// trusted peer's header is read (within `timeout`) and its source is the client; another
    /// peer that starts with one is refused. Reads exactly the header, nothing after it.
    pub async fn accept(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<SocketAddr, Refused> {
        if !self.proxy_protocol {
            return Ok(peer);
        }
        if !self.trusts(peer.ip()) {
            // Six bytes tell a PROXY header from a request: fewer that begin like one (a lone
            // `P`, a CRLF before the request line, which RFC 9112 allows) are waited on, not
            // taken for a forged header.
            let deadline = tokio::time::Instant::now() + timeout;
            let mut first = [0u8; 6];
            loop {
                let n = match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
                    Ok(Ok(n)) if n > 0 => n,
                    // Closed, or silent for the whole header timeout: nothing to serve.
                    Ok(_) => return Err(Refused::BadProxyHeader),
                    Err(_) => return Err(Refused::Timeout),
                };
                let seen = &first[..n];
                let like_proxy = b"PROXY "[..n] == *seen || V2_SIGNATURE[..n] == *seen;
                if !like_proxy {
                    return Ok(peer);
                }
                if n == first.len() {
                    return Err(Refused::UntrustedProxyHeader);
                }
                // `peek` returns at once while the bytes seen are there: wait for more.
                if tokio::time::timeout_at(deadline, tokio::time::sleep(PEEK_AGAIN))
                    .await
                    .is_err()
                {
                    return Err(Refused::Timeout);
                }
            }
        }
        match tokio::time::timeout(timeout, read_header(stream)).await {
            Err(_) => Err(Refused::Timeout),
            Ok(Err(())) => Err(Refused::BadProxyHeader),
            Ok(Ok(None)) => Ok(peer),
            Ok(Ok(Some(source))) => Ok(source),
        }
    }
}

/// An `X-Forwarded-For` entry: an address, `v4:port` or `[v6]:port`.
fn parse_forwarded(item: &str) -> Option<IpAddr> {
    if let Ok(ip) = item.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    item.parse::<SocketAddr>()
        .ok()
        .map(|s| s.ip().to_canonical())
}

/// Reads one PROXY header; `None` for one that names no client (v2 LOCAL, v1 UNKNOWN: the
/// balancer's own health checks).
async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ()> {
    let mut buf = vec![0u8; 16];
    stream.read_exact(&mut buf[..6]).await.map_err(|_| ())?;
    if &buf[..6] == b"PROXY " {
        // v1: a text line; read byte by byte so nothing of the request after it is taken.
        buf.truncate(6);
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(());
            }
            buf.push(stream.read_u8().await.map_err(|_| ())?);
        }
        let text = std::str::from_utf8(&buf).map_err(|_| ())?;
        let header = ppp::v1::Header::try_from(text).map_err(|_| ())?;
        return Ok(match header.addresses {
            ppp::v1::Addresses::Tcp4(a) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            ppp::v1::Addresses::Tcp6(a) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            ppp::v1::Addresses::Unknown => None,
        });
    }
    if buf[..6] != V2_SIGNATURE[..6] {
        return Err(());
    }
    stream.read_exact(&mut buf[6..16]).await.map_err(|_| ())?;
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if 16 + len > V2_MAX {
        return Err(());
    }
    buf.resize(16 + len, 0);
    stream.read_exact(&mut buf[16..]).await.map_err(|_| ())?;
    let header = ppp::v2::Header::try_from(&buf[..]).map_err(|_| ())?;
    if header.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(trusted: &[&str]) -> Proxies {
        Proxies {
            trusted: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            proxy_protocol: false,
        }
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_forwarded_address_and_only_behind_a_trusted_peer() {
        let p = proxies(&["10.0.0.0/8", "127.0.0.1/32"]);
        let lb: IpAddr = "10.0.0.5".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // A forged left part does not matter: the rightmost untrusted entry is the client.
        let h = xff(&["6.6.6.6, 203.0.113.7", "10.0.0.9"]);
        assert_eq!(p.client(lb, &h), ip("203.0.113.7"));
        assert_eq!(
            p.client(lb, &xff(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
        assert_eq!(
            p.client(lb, &xff(&["198.51.100.1:5000"])),
            ip("198.51.100.1")
        );
        // Garbage ends the walk at the hop that added it; all-trusted gives the leftmost.
        assert_eq!(p.client(lb, &xff(&["junk, 10.0.0.7"])), ip("10.0.0.7"));
        assert_eq!(p.client(lb, &xff(&["10.0.0.8"])), ip("10.0.0.8"));
        assert_eq!(p.client(lb, &HeaderMap::new()), lb);
        // From an untrusted peer, or with the PROXY protocol, the header is ignored.
        let stranger = ip("192.0.2.1");
        assert_eq!(p.client(stranger, &h), stranger);
        let pp = Proxies {
            proxy_protocol: true,
            ..p.clone()
        };
        assert_eq!(pp.client(lb, &h), lb);
        // IPv4-mapped IPv6 peers are their IPv4 address.
        assert_eq!(p.client(ip("::ffff:10.0.0.5"), &h), ip("203.0.113.7"));
        assert_eq!(proxies(&[]).client(lb, &h), lb);
    }
}
