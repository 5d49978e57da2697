//! The observability endpoint: one HTTP listener (axum) serving `/status` (JSON), `/metrics`
//! (OpenMetrics text) and `/` (the dashboard, embedded in the binary).
//!
//! It runs on a thread of its own with its own single-threaded runtime, so serving clients
//! never runs on the driver's thread: the driver only publishes a snapshot on the [`Board`]
//! every [`super::status::SNAPSHOT_INTERVAL`], and every request reads the latest one.
//!
//! With a token configured, every request must carry it, as `Authorization: Bearer TOKEN` (the
//! scheme in any case) or, for a browser, `?token=TOKEN` (the dashboard passes it on to its own
//! requests).
//!
//! No client can hurt forwarding through it: it serves at most [`MAX_CONNECTIONS`] at once
//! (closing the others as they are accepted, so they hold no file handle), one request per
//! connection, with the request head due within [`HEAD_TIMEOUT`], at most [`MAX_HEAD_BYTES`]
//! long, and the whole exchange within [`CONNECTION_TIMEOUT`]. Axum's own `serve` has none of
//! these limits, hence the accept loop here on hyper's connection builder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

use super::IoError;
use super::status::Board;

/// The most connections served at once. The dashboard and a scraper need a handful; more are
/// closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a new connection has to send its whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may live, request and response together (there is one request per
/// connection).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest request head read (hyper's floor is 8 KiB).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How often a failing `accept` (file handles exhausted, say) is logged, at most.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// The dashboard page: HTML, CSS and JS in one file, no external resources.
pub const DASHBOARD: &str = include_str!("dashboard.html");

#[derive(Clone)]
struct App {
    board: Board,
    role: &'static str,
    token: Option<String>,
}

/// Binds the endpoint at `address` (so a busy address fails the daemon's start) and serves it
/// on a thread of its own until the process exits, requiring `token` if one is given. Returns
/// the bound address.
///
/// # Errors
/// [`IoError`] if the address cannot be bound or the thread cannot start.
pub fn spawn(
    address: SocketAddr,
    token: Option<String>,
    board: Board,
    role: &'static str,
) -> Result<SocketAddr, IoError> {
    let what = || format!("serving status on {address}");
    let listener = std::net::TcpListener::bind(address).map_err(|e| IoError::new(what(), e))?;
    listener.set_nonblocking(true).map_err(|e| IoError::new(what(), e))?;
    let bound = listener.local_addr().map_err(|e| IoError::new(what(), e))?;
    let app = router(App { board, role, token });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| IoError::new("starting the status runtime", e))?;
    std::thread::Builder::new()
        .name("braid-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, app).await,
                    Err(error) => tracing::warn!(%error, "status endpoint not started"),
                }
            });
        })
        .map_err(|e| IoError::new("starting the status thread", e))?;
    Ok(bound)
}

/// Accepts connections for ever, each served on its own task within the limits above.
async fn serve(listener: tokio::net::TcpListener, app: Router) {
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                if warned.is_none_or(|at| at.elapsed() >= ACCEPT_WARN_EVERY) {
                    tracing::warn!(%error, "status endpoint: accepting a connection failed");
                    warned = Some(tokio::time::Instant::now());
                }
                // Out of file handles, say: the listener stays ready, so wait before trying again.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(permit);
        });
    }
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .with_state(app)
}

async fn authorize(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(token) = app.token.as_deref() else { return next.run(request).await };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let query = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")).map(percent_decode));
    if [bearer, query].into_iter().flatten().any(|given| same(given.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    let mut response =
        (StatusCode::UNAUTHORIZED, "a token is required: Authorization: Bearer TOKEN, or ?token=TOKEN\n")
            .into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

async fn dashboard() -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (headers, DASHBOARD).into_response()
}

async fn status(State(app): State<App>) -> Response {
    let Some(latest) = app.board.latest() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no snapshot yet\n").into_response();
    };
    match serde_json::to_string(&*latest) {
        Ok(mut body) => {
            body.push('\n');
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            (headers, body).into_response()
        }
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

async fn metrics(State(app): State<App>) -> Response {
    let body = super::metrics::encode_board(&app.board, app.role);
    ([(header::CONTENT_TYPE, HeaderValue::from_static(super::metrics::CONTENT_TYPE))], body).into_response()
}

/// Compares in time that depends only on the lengths, so the token does not leak a byte at a time.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes `%XX` escapes (a `+` stays a `+`: tokens are not form data).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_tokens_are_percent_decoded_and_compared_whole() {
        assert_eq!(percent_decode("ab%2Bc%3d+x%"), "ab+c=+x%");
        assert!(same(b"token-123", b"token-123"));
        assert!(!same(b"token-123", b"token-124"));
        assert!(!same(b"token", b"token-123"));
    }

    /// Sends `request` on a fresh connection and returns the status line.
    fn ask(address: SocketAddr, request: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(address).expect("connecting");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("a timeout");
        stream.write_all(request.as_bytes()).expect("writing");
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        reply.lines().next().unwrap_or_default().to_owned()
    }

    /// The server's sockets on `port` that still hold a file handle: established, or closed by
    /// the client and not yet by the server (`/proc/net/tcp` states 01 and 08).
    fn server_sockets(port: u16) -> usize {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let local = format!(":{port:04X}");
        table
            .lines()
            .skip(1)
            .filter_map(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                Some((*fields.get(1)?, *fields.get(3)?))
            })
            .filter(|(address, state)| address.ends_with(&local) && matches!(*state, "01" | "08"))
            .count()
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case_and_others_are_refused() {
        let token = "t0ken-for-the-test-only";
        let address = spawn("127.0.0.1:0".parse().expect("an address"), Some(token.into()), Board::default(), "edge")
            .expect("serving");
        let get = |auth: &str| ask(address, &format!("GET /status HTTP/1.1\r\nHost: x\r\n{auth}\r\n"));
        // No snapshot has been published: an authorized request gets 503, a refused one 401.
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            assert_eq!(
                get(&format!("Authorization: {scheme} {token}\r\n")),
                "HTTP/1.1 503 Service Unavailable",
                "{scheme}"
            );
        }
        assert_eq!(get(&format!("Authorization: Basic {token}\r\n")), "HTTP/1.1 401 Unauthorized");
        assert_eq!(get("Authorization: Bearer wrong\r\n"), "HTTP/1.1 401 Unauthorized");
        assert_eq!(get(""), "HTTP/1.1 401 Unauthorized");
    }

    #[test]
    fn idle_and_half_sent_connections_are_closed_within_the_timeouts_and_hold_no_file_handles() {
        use std::io::{Read, Write};
        let address =
            spawn("127.0.0.1:0".parse().expect("an address"), None, Board::default(), "edge").expect("serving");
        let mut held = Vec::new();
        for i in 0..300 {
            let mut stream = std::net::TcpStream::connect(address).expect("connecting");
            if i % 2 == 1 {
                stream.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ").expect("writing half a request");
            }
            held.push(stream);
        }
        // Beyond MAX_CONNECTIONS each is closed on accept; the rest once their head is overdue.
        for stream in &mut held {
            stream.set_read_timeout(Some(HEAD_TIMEOUT + Duration::from_secs(3))).expect("a timeout");
            let mut rest = Vec::new();
            let closed = match stream.read_to_end(&mut rest) {
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            };
            assert!(closed, "a connection stayed open past the head timeout");
        }
        drop(held);
        assert_eq!(ask(address, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n"), "HTTP/1.1 503 Service Unavailable");
        let oversized = format!("GET /status HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert!(ask(address, &oversized).starts_with("HTTP/1.1 431"), "an oversized head is refused");
        // The server's side of every connection is closed too.
        let open = server_sockets(address.port());
        assert_eq!(open, 0, "the server still holds {open} connections");
    }

    #[test]
    fn the_dashboard_loads_nothing_from_outside() {
        for outside in ["http://", "https://", "//cdn", "<script src", "<link "] {
            assert!(!DASHBOARD.contains(outside), "the dashboard refers to {outside}");
        }
        assert!(DASHBOARD.contains("name=\"viewport\""), "the dashboard sets a phone viewport");
    }
}
