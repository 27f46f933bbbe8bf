//! `bai watch --listen`: a small read-only HTTP/1.1 endpoint over the watcher's [`FleetStatus`], for
//! people (`/`, the dashboard), Prometheus (`/metrics`), scripts (`/status`) and liveness checks (`/ping`,
//! shaped like the Backend.AI webserver's ping API so the same probes work against both).

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::dashboard;
use super::metrics::render_metrics;
use super::status::FleetStatus;

const JSON: &str = "application/json";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const PATHS: [&str; 4] = ["/", "/metrics", "/ping", "/status"];

/// How long a client may take to send a request's headers; without it a client that opens a connection
/// and sends nothing would keep its task alive for ever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may take to finish its current response once shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (typically out of file descriptors), so the loop does not spin on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves until `shutdown` resolves, then stops accepting and asks open connections to close after their
/// current response. Each connection runs in its own task, so a slow or broken client only ever costs its
/// own connection; accept errors are waited out, not returned, because the endpoint is an add-on to the
/// watcher and must not end it. The status lock is held only while a response body is rendered.
pub async fn serve(
    listener: TcpListener,
    status: Arc<Mutex<FleetStatus>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (closing_tx, closing_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let status = Arc::clone(&status);
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = respond(req.method(), req.uri().path(), &status);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            // Connection errors (a reset, garbage instead of HTTP, a header timeout) concern that client
            // alone; hyper has already answered what it could, so they are dropped here.
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = closing.wait_for(|closing| *closing) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
        });
    }
    // Dropping the listener here is what refuses new connections; the send only fails when no connection
    // task is left to hear it, which is fine.
    drop(listener);
    let _ = closing_tx.send(true);
    Ok(())
}

/// The whole routing table. Synchronous on purpose: the status lock cannot be held across an await if
/// there is none.
fn respond(method: &Method, path: &str, status: &Mutex<FleetStatus>) -> Response<Full<Bytes>> {
    if !PATHS.contains(&path) {
        let body = serde_json::json!({ "error": "not found", "paths": PATHS });
        return response(StatusCode::NOT_FOUND, JSON, body.to_string());
    }
    // hyper leaves the body out of a HEAD response itself and keeps its Content-Length, so HEAD is
    // answered exactly as GET.
    if *method != Method::GET && *method != Method::HEAD {
        let body = serde_json::json!({ "error": "method not allowed", "allow": ["GET", "HEAD"] });
        let mut response = response(StatusCode::METHOD_NOT_ALLOWED, JSON, body.to_string());
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/" => {
            // Never the page without its policy (which is ASCII, so this answer is never seen).
            let Ok(policy) = HeaderValue::from_str(&dashboard::POLICY) else {
                let body = serde_json::json!({ "error": "the dashboard's policy is not a header value" });
                return response(StatusCode::INTERNAL_SERVER_ERROR, JSON, body.to_string());
            };
            let mut response = response(StatusCode::OK, HTML, dashboard::PAGE);
            let headers = response.headers_mut();
            headers.insert(CONTENT_SECURITY_POLICY, policy);
            headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            // The page changes with bai's version: a browser asks again rather than keep an old one.
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        "/ping" => {
            let version = lock(status).version.clone();
            let body = serde_json::json!({ "version": version, "details": "Success" });
            response(StatusCode::OK, JSON, body.to_string())
        }
        "/status" => {
            let rendered = serde_json::to_string_pretty(&*lock(status));
            match rendered {
                Ok(body) => response(StatusCode::OK, JSON, body),
                Err(e) => {
                    let body = serde_json::json!({ "error": format!("cannot serialize the status: {e}") });
                    response(StatusCode::INTERNAL_SERVER_ERROR, JSON, body.to_string())
                }
            }
        }
        _ => {
            let text = render_metrics(&lock(status));
            response(StatusCode::OK, PROMETHEUS_TEXT, text)
        }
    }
}

/// A panic elsewhere while holding the lock leaves the status as it was at that point, which is still
/// worth serving: recover it rather than take the endpoint down with it.
fn lock(status: &Mutex<FleetStatus>) -> MutexGuard<'_, FleetStatus> {
    status.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Every response says what it is and forbids the browser to guess otherwise: a `/status` that carries
/// node text must never be sniffed into a page.
fn response(code: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::watch::status::{Liveness, NodeStatus};

    struct Server {
        addr: SocketAddr,
        status: Arc<Mutex<FleetStatus>>,
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<std::io::Result<()>>,
    }

    async fn start() -> Server {
        let mut fleet = FleetStatus { version: "9.9.9-test".into(), ..FleetStatus::default() };
        let node = NodeStatus { state: Liveness::Up, pings_total: 7, ..NodeStatus::default() };
        fleet.clusters.entry("lab".into()).or_default().nodes.insert("gpu1".into(), node);
        let status = Arc::new(Mutex::new(fleet));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::clone(&status), async {
            let _ = stopped.await;
        }));
        Server { addr, status, stop: Some(stop), task }
    }

    struct Reply {
        code: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
    }

    /// One request on a fresh connection, read to EOF (`Connection: close`), so the body needs no framing.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("send request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read response");
        let raw = String::from_utf8(raw).expect("UTF-8 response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
        let mut lines = head.lines();
        let status_line = lines.next().expect("a status line");
        let code = status_line.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status code");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        Reply { code, headers, body: body.to_string() }
    }

    #[tokio::test]
    async fn ping_reports_the_watchers_version() {
        let server = start().await;
        let reply = request(server.addr, "GET", "/ping").await;
        assert_eq!(reply.code, 200);
        assert_eq!(reply.header("content-type"), Some(JSON));
        let body: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON body");
        assert_eq!(body, serde_json::json!({ "version": "9.9.9-test", "details": "Success" }));
    }

    #[tokio::test]
    async fn status_serves_the_current_snapshot_as_json() {
        let server = start().await;
        let reply = request(server.addr, "GET", "/status").await;
        assert_eq!(reply.code, 200);
        assert_eq!(reply.header("content-type"), Some(JSON));
        let expected = serde_json::to_string_pretty(&*lock(&server.status)).expect("serialize");
        assert_eq!(reply.body, expected);
        // A change made by the watcher shows on the next request.
        lock(&server.status).version = "changed".into();
        let reply = request(server.addr, "GET", "/status").await;
        let body: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON body");
        assert_eq!(body["version"], "changed");
        assert_eq!(body["clusters"]["lab"]["nodes"]["gpu1"]["pings_total"], 7);
    }

    #[tokio::test]
    async fn metrics_serves_the_prometheus_text() {
        let server = start().await;
        let reply = request(server.addr, "GET", "/metrics").await;
        assert_eq!(reply.code, 200);
        assert_eq!(reply.header("content-type"), Some(PROMETHEUS_TEXT));
        assert_eq!(reply.body, render_metrics(&lock(&server.status)));
        assert!(reply.body.contains("bai_pings_total{cluster=\"lab\",node=\"gpu1\"} 7\n"), "{}", reply.body);
    }

    #[tokio::test]
    async fn the_root_serves_the_dashboard_under_a_strict_policy() {
        let server = start().await;
        for path in ["/", "/?refresh=1"] {
            let reply = request(server.addr, "GET", path).await;
            assert_eq!(reply.code, 200, "{path}");
            assert_eq!(reply.header("content-type"), Some(HTML));
            assert_eq!(reply.body, dashboard::PAGE);
            assert_eq!(reply.header("content-security-policy"), Some(dashboard::POLICY.as_str()));
            assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
            assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
        }
        let head = request(server.addr, "HEAD", "/").await;
        assert_eq!(head.code, 200);
        assert_eq!(head.header("content-type"), Some(HTML));
        assert_eq!(head.header("content-length"), Some(dashboard::PAGE.len().to_string().as_str()));
        assert_eq!(head.body, "");
        let post = request(server.addr, "POST", "/").await;
        assert_eq!(post.code, 405);
        // What the page reads is JSON that no browser may take for anything else.
        let status = request(server.addr, "GET", "/status").await;
        assert_eq!(status.header("x-content-type-options"), Some("nosniff"));
    }

    #[tokio::test]
    async fn head_answers_like_get_without_a_body() {
        let server = start().await;
        let get = request(server.addr, "GET", "/metrics").await;
        let head = request(server.addr, "HEAD", "/metrics").await;
        assert_eq!(head.code, 200);
        assert_eq!(head.header("content-type"), Some(PROMETHEUS_TEXT));
        assert_eq!(head.header("content-length"), Some(get.body.len().to_string().as_str()));
        assert_eq!(head.body, "");
    }

    #[tokio::test]
    async fn unknown_paths_get_404_listing_the_known_ones() {
        let server = start().await;
        for (method, path) in [("GET", "/index.html"), ("GET", "/metrics/"), ("GET", "/nope?x=1"), ("POST", "/nope")] {
            let reply = request(server.addr, method, path).await;
            assert_eq!(reply.code, 404, "{method} {path}");
            assert_eq!(reply.header("content-type"), Some(JSON));
            let body: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON body");
            let paths = ["/", "/metrics", "/ping", "/status"];
            assert_eq!(body, serde_json::json!({ "error": "not found", "paths": paths }));
        }
        // The query string is not part of the route.
        assert_eq!(request(server.addr, "GET", "/ping?verbose=1").await.code, 200);
    }

    #[tokio::test]
    async fn other_methods_get_405_with_allow() {
        let server = start().await;
        for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
            let reply = request(server.addr, method, "/status").await;
            assert_eq!(reply.code, 405, "{method}");
            assert_eq!(reply.header("allow"), Some("GET, HEAD"));
            assert_eq!(reply.header("content-type"), Some(JSON));
        }
    }

    #[tokio::test]
    async fn a_bad_client_does_not_stop_the_server() {
        let server = start().await;
        let mut garbage = TcpStream::connect(server.addr).await.expect("connect");
        garbage.write_all(b"\x00\x01 not http at all\r\n\r\n").await.expect("send garbage");
        let mut answer = Vec::new();
        let _ = garbage.read_to_end(&mut answer).await;
        assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 400"), "{:?}", String::from_utf8_lossy(&answer));
        // One that hangs up mid-request, and one that says nothing at all while others are served.
        let mut half = TcpStream::connect(server.addr).await.expect("connect");
        half.write_all(b"GET /metr").await.expect("send half a request");
        drop(half);
        let _silent = TcpStream::connect(server.addr).await.expect("connect");
        assert_eq!(request(server.addr, "GET", "/ping").await.code, 200);
    }

    #[tokio::test]
    async fn a_poisoned_lock_is_still_served() {
        let server = start().await;
        let status = Arc::clone(&server.status);
        let _ = std::thread::spawn(move || {
            let _guard = status.lock();
            panic!("poison the status lock");
        })
        .join();
        assert!(server.status.is_poisoned());
        assert_eq!(request(server.addr, "GET", "/ping").await.code, 200);
        assert_eq!(request(server.addr, "GET", "/metrics").await.code, 200);
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_returns() {
        let mut server = start().await;
        // An idle keep-alive connection must not hold the shutdown up.
        let mut idle = TcpStream::connect(server.addr).await.expect("connect");
        idle.write_all(b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n").await.expect("send request");
        let mut first = [0u8; 12];
        idle.read_exact(&mut first).await.expect("read the status line");
        assert_eq!(&first, b"HTTP/1.1 200");

        let _ = server.stop.take().map(|stop| stop.send(()));
        let result = tokio::time::timeout(Duration::from_secs(5), server.task).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "serve did not return cleanly: {result:?}");
        assert!(TcpStream::connect(server.addr).await.is_err(), "still accepting after shutdown");
        // The idle connection is closed rather than left open.
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the idle keep-alive connection was not closed");
    }
}
