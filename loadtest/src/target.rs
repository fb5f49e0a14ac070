//! Where the load goes: URLs resolved once, and the source address each
//! client socket binds to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;

use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("bad URL `{0}`: {1}")]
    Url(String, &'static str),
    #[error("cannot resolve `{0}`: {1}")]
    Resolve(String, std::io::Error),
    #[error("`{0}` resolves to {1}, not a loopback address (pass --allow-non-loopback to allow)")]
    NotLoopback(String, IpAddr),
}

/// One server endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given, for reports.
    pub url: String,
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Path of the WebSocket endpoint (`/ws` unless the URL names one).
    pub ws_path: String,
    /// Base path of the HTTP API (empty unless the URL has a non-`/ws` path prefix).
    pub http_base: String,
}

impl Target {
    /// Parse `http://`, `ws://` (plain only: TLS belongs to Nginx, not this test).
    pub fn parse(url: &str, allow_non_loopback: bool) -> Result<Target, TargetError> {
        let rest = ["http://", "ws://"]
            .iter()
            .find_map(|p| url.strip_prefix(p))
            .ok_or_else(|| TargetError::Url(url.into(), "expected http:// or ws://"))?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if hostport.is_empty() {
            return Err(TargetError::Url(url.into(), "no host"));
        }
        let with_port = if hostport
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !hostport.ends_with(']')
        {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| TargetError::Resolve(url.into(), e))?
            .next()
            .ok_or_else(|| TargetError::Url(url.into(), "resolves to nothing"))?;
        if !allow_non_loopback && !addr.ip().is_loopback() {
            return Err(TargetError::NotLoopback(url.into(), addr.ip()));
        }
        let path = path.trim_end_matches('/');
        let (ws_path, http_base) = match path.strip_suffix("/ws") {
            Some(base) => (path.to_string(), base.to_string()),
            None => (format!("{path}/ws"), path.to_string()),
        };
        Ok(Target {
            url: url.to_string(),
            addr,
            host: hostport.to_string(),
            ws_path,
            http_base,
        })
    }
}

/// Source addresses to spread sockets over: 127.0.0.1 … 127.0.0.N.
pub fn source_ips(n: u8, targets: &[Target]) -> Vec<Ipv4Addr> {
    let all_v4_loopback = targets
        .iter()
        .all(|t| matches!(t.addr.ip(), IpAddr::V4(ip) if ip.is_loopback()));
    if n <= 1 || !all_v4_loopback {
        return Vec::new();
    }
    (1..=n).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect()
}

/// Linux: let connect() pick the port for a bound address, so one source
/// address can use the same port towards different destinations.
const IP_BIND_ADDRESS_NO_PORT: libc::c_int = 24;

/// Open a TCP connection to `addr`, from `source` when given.
pub async fn tcp_connect(addr: SocketAddr, source: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on the socket we own with a pointer to a live c_int.
        // Failure only means ports are reserved at bind time; still correct.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes() {
        let t = Target::parse("http://127.0.0.1:8080", false).unwrap();
        assert_eq!(t.ws_path, "/ws");
        assert_eq!(t.http_base, "");
        assert_eq!(t.host, "127.0.0.1:8080");
        let t = Target::parse("ws://127.0.0.1:9000/ws", false).unwrap();
        assert_eq!(t.ws_path, "/ws");
        assert_eq!(t.http_base, "");
        assert_eq!(t.addr.port(), 9000);
        let t = Target::parse("http://localhost:81/io/", false).unwrap();
        assert_eq!(t.ws_path, "/io/ws");
        assert_eq!(t.http_base, "/io");
    }

    #[test]
    fn refuses_other_machines_by_default() {
        assert!(matches!(
            Target::parse("http://10.1.2.3:80", false),
            Err(TargetError::NotLoopback(..))
        ));
        assert!(Target::parse("https://127.0.0.1", false).is_err());
    }

    #[test]
    fn source_ips_only_for_ipv4_loopback() {
        let t = vec![Target::parse("http://127.0.0.1:1", false).unwrap()];
        assert_eq!(source_ips(3, &t).len(), 3);
        assert!(source_ips(1, &t).is_empty());
    }
}
