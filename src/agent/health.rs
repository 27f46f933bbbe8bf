//! The session health checks behind the agent's `probe`: whether a session's container runs, then its
//! declared check — an HTTP GET from the node to the container's own address, or a command run in the
//! container — each bounded by its timeout. Every outcome, failures included, becomes a
//! [`HealthResult`] for people to read; nothing here fails the probe as a whole.
//!
//! The HTTP client is deliberately tiny: a check needs only the status code, and a full client would
//! follow redirects, pool connections and read bodies, none of which a probe wants.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::agent::containers::Containers;
use crate::protocol::{HealthCheckSpec, HealthProbe, HealthResult};
use crate::state::snapshot::ContainerState;

/// How much of a response is read looking for the status line; a server that sends more without one
/// is not speaking HTTP/1.
pub const MAX_HEAD: usize = 8 * 1024;

/// Why an HTTP check got no status code. The messages are the detail people see.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "refusing health path {0:?}: it must start with `/` and hold only visible ASCII (no spaces or line breaks)"
    )]
    BadPath(String),
    #[error("connection refused")]
    Refused,
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("the exchange failed: {0}")]
    Io(std::io::Error),
    #[error("the connection closed before a complete status line")]
    Closed,
    #[error("no status line in the first {} KiB of the response", MAX_HEAD / 1024)]
    TooLong,
    #[error("not an HTTP/1 response: {0:?}")]
    Malformed(String),
}

/// Runs one check and reports it; the whole of it, container lookup included, is bounded by the
/// probe's timeout.
pub async fn check<E: Containers>(engine: &E, cluster: &str, probe: &HealthProbe) -> HealthResult {
    let limit = Duration::from_millis(probe.timeout_ms);
    let (healthy, detail) = match tokio::time::timeout(limit, run(engine, cluster, probe)).await {
        Ok(outcome) => outcome,
        Err(_) => (false, format!("timed out after {}", human(limit))),
    };
    HealthResult { session: probe.session.clone(), healthy, detail }
}

async fn run<E: Containers>(engine: &E, cluster: &str, probe: &HealthProbe) -> (bool, String) {
    let (state, exit_code, ip) = match engine.session_state(cluster, &probe.session).await {
        Ok(Some(found)) => found,
        Ok(None) => return (false, "container missing".into()),
        Err(e) => return (false, e.to_string()),
    };
    if state != ContainerState::Running {
        return (false, not_running(state, exit_code));
    }
    match &probe.check {
        HealthCheckSpec::Http { port, path } => {
            let Some(ip) = ip else { return (false, "no address".into()) };
            let Ok(ip) = ip.parse::<IpAddr>() else {
                return (false, format!("the container's address {ip:?} is not an IP address"));
            };
            match http_status(SocketAddr::new(ip, *port), path).await {
                Ok(status) => ((200..400).contains(&status), format!("HTTP {status}")),
                Err(e) => (false, e.to_string()),
            }
        }
        HealthCheckSpec::Exec { argv } => match engine.exec(cluster, &probe.session, argv).await {
            Ok(code) => (code == 0, format!("exit {code}")),
            Err(e) => (false, e.to_string()),
        },
    }
}

fn not_running(state: ContainerState, exit_code: Option<i64>) -> String {
    let word = state.as_str();
    match exit_code {
        Some(code) => format!("container not running ({word}, code {code})"),
        None => format!("container not running ({word})"),
    }
}

/// A timeout as people write it: `2s`, `500ms`, `1.5s`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        let text = format!("{}.{:03}", ms / 1000, ms % 1000);
        format!("{}s", text.trim_end_matches('0'))
    }
}

/// Whether `path` may become a request target as is. It comes from a validated lab, but the request
/// is built from it byte for byte, so a CR, LF or space here would let it write a different request.
pub fn check_path(path: &str) -> Result<(), HttpError> {
    if path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(HttpError::BadPath(path.to_string()))
    }
}

/// GETs `path` from `addr` and returns the response's status code, reading no more than the status
/// line (at most [`MAX_HEAD`] bytes). No redirect is followed: a 3xx already says the server answers.
pub async fn http_status(addr: SocketAddr, path: &str) -> Result<u16, HttpError> {
    check_path(path)?;
    let mut stream = TcpStream::connect(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => HttpError::Refused,
        _ => HttpError::Connect(e),
    })?;
    // `SocketAddr` brackets an IPv6 address, as the Host header wants.
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: bai-probe\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(HttpError::Io)?;
    let mut head = vec![0; MAX_HEAD];
    let mut len = 0;
    loop {
        let n = stream.read(&mut head[len..]).await.map_err(HttpError::Io)?;
        if n == 0 {
            return Err(HttpError::Closed);
        }
        len += n;
        if let Some(status) = parse_status_line(&head[..len])? {
            return Ok(status);
        }
        if len == MAX_HEAD {
            return Err(HttpError::TooLong);
        }
    }
}

/// The status code of a response's first line (`HTTP/1.1 200 OK`), once the line is complete;
/// `Ok(None)` while it is not.
pub fn parse_status_line(head: &[u8]) -> Result<Option<u16>, HttpError> {
    let Some(end) = head.iter().position(|&b| b == b'\n') else { return Ok(None) };
    let line = head[..end].strip_suffix(b"\r").unwrap_or(&head[..end]);
    let malformed = || {
        let shown: String = String::from_utf8_lossy(line).chars().take(60).collect();
        HttpError::Malformed(shown)
    };
    let rest = line.strip_prefix(b"HTTP/1.").ok_or_else(malformed)?;
    let [minor, b' ', d1, d2, d3, after @ ..] = rest else { return Err(malformed()) };
    let digits = [*minor, *d1, *d2, *d3];
    // The reason phrase may be empty, and some servers drop the space before it too.
    if !digits.iter().all(u8::is_ascii_digit) || !(after.is_empty() || after[0] == b' ') {
        return Err(malformed());
    }
    Ok(Some(u16::from(d1 - b'0') * 100 + u16::from(d2 - b'0') * 10 + u16::from(d3 - b'0')))
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn status_lines_parse_once_complete() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\nDate: x\r\n").ok(), Some(Some(200)));
        assert_eq!(parse_status_line(b"HTTP/1.0 404 Not Found\n").ok(), Some(Some(404)));
        assert_eq!(parse_status_line(b"HTTP/1.1 302\r\n").ok(), Some(Some(302)));
        assert_eq!(parse_status_line(b"HTTP/1.1 503 \r\n").ok(), Some(Some(503)));
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK").ok(), Some(None), "no line end yet");
        assert_eq!(parse_status_line(b"").ok(), Some(None));
    }

    #[test]
    fn anything_but_an_http1_status_line_is_malformed() {
        for bad in [
            &b"SSH-2.0-OpenSSH_9.2\r\n"[..],
            b"HTTP/2 200\r\n",
            b"HTTP/1.1 20 OK\r\n",
            b"HTTP/1.1 2000 OK\r\n",
            b"HTTP/1.1 2x0 OK\r\n",
            b"HTTP/1.x 200 OK\r\n",
            b"\r\n",
        ] {
            let got = parse_status_line(bad);
            assert!(matches!(got, Err(HttpError::Malformed(_))), "{:?}: {got:?}", String::from_utf8_lossy(bad));
        }
        let err = parse_status_line(b"hello\xff\r\n").map(drop).unwrap_err().to_string();
        assert_eq!(err, "not an HTTP/1 response: \"hello\u{fffd}\"");
    }

    #[test]
    fn only_plain_paths_become_request_targets() {
        assert!(check_path("/healthz").is_ok());
        assert!(check_path("/a/b?c=d&e=%20").is_ok());
        for bad in ["", "healthz", "/a b", "/a\r\nHost: evil", "/a\n", "/a\tb", "/é", "/a\0"] {
            assert!(matches!(check_path(bad), Err(HttpError::BadPath(_))), "{bad:?}");
        }
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(Duration::from_millis(2000)), "2s");
        assert_eq!(human(Duration::from_millis(500)), "500ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human(Duration::from_millis(1250)), "1.25s");
        assert_eq!(human(Duration::from_millis(0)), "0ms");
        assert_eq!(human(Duration::from_secs(90)), "90s");
    }

    /// A one-shot server: answers `reply` to the first connection and hands back what it received.
    async fn serve_once(reply: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut received = Vec::new();
            let mut buf = [0; 1024];
            while !received.ends_with(b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(reply).await;
            received
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_get_sends_a_minimal_request_and_reads_the_status() {
        let (addr, server) = serve_once(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").await;
        assert_eq!(http_status(addr, "/ready?x=1").await.ok(), Some(204));
        let received = server.await.expect("server");
        let expected =
            format!("GET /ready?x=1 HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: bai-probe\r\nConnection: close\r\n\r\n");
        assert_eq!(String::from_utf8_lossy(&received), expected);
    }

    #[tokio::test]
    async fn a_get_reports_refusals_closes_and_endless_heads() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        drop(listener);
        let refused = http_status(addr, "/").await;
        assert!(matches!(refused, Err(HttpError::Refused)), "{refused:?}");
        assert_eq!(refused.map(drop).unwrap_err().to_string(), "connection refused");

        let (addr, _server) = serve_once(b"HTTP/1.1 200").await;
        let closed = http_status(addr, "/").await;
        assert!(matches!(closed, Err(HttpError::Closed)), "{closed:?}");

        let (addr, _server) = serve_once(&[b'x'; MAX_HEAD + 10]).await;
        let endless = http_status(addr, "/").await;
        assert!(matches!(endless, Err(HttpError::TooLong)), "{endless:?}");

        // Refused before a connection is even made.
        let bad = http_status(addr, "/a b").await;
        assert!(matches!(bad, Err(HttpError::BadPath(_))), "{bad:?}");
    }
}
