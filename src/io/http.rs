//! The observability endpoint: one HTTP listener (axum) serving `/status` (JSON), `/metrics`
//! (OpenMetrics text) and `/` (the dashboard, embedded in the binary).
//!
//! It runs on a thread of its own with its own single-threaded runtime, so serving clients
//! never runs on the driver's thread: the driver only publishes a snapshot on the [`Board`]
//! every [`super::status::SNAPSHOT_INTERVAL`], and every request reads the latest one.
//!
//! With a token configured, every request must carry it, as `Authorization: Bearer TOKEN` or,
//! for a browser, `?token=TOKEN` (the dashboard passes it on to its own requests).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::IoError;
use super::status::Board;

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
                    Ok(listener) => {
                        if let Err(error) = axum::serve(listener, app).await {
                            tracing::warn!(%error, "status endpoint stopped");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "status endpoint not started"),
                }
            });
        })
        .map_err(|e| IoError::new("starting the status thread", e))?;
    Ok(bound)
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
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
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

    #[test]
    fn the_dashboard_loads_nothing_from_outside() {
        for outside in ["http://", "https://", "//cdn", "<script src", "<link "] {
            assert!(!DASHBOARD.contains(outside), "the dashboard refers to {outside}");
        }
        assert!(DASHBOARD.contains("name=\"viewport\""), "the dashboard sets a phone viewport");
    }
}
