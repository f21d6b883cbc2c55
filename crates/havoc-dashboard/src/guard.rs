//! Refusal of cross-site and rebound requests.
//!
//! - Every request must carry a `Host` the dashboard answers to (127.0.0.1, localhost, [::1] or
//!   the listen address, with its port, plus `--allow-host` names): a page on another site that
//!   makes its own name resolve to 127.0.0.1 (DNS rebinding) gets 403 and never sees the token.
//! - Every request that is not GET or HEAD must carry `X-Havoc-CSRF` equal to the token embedded
//!   in the page (random per process), and its `Origin`, when the browser sends one, must be
//!   this very origin. A form or `fetch` from another site cannot set the header without a CORS
//!   preflight, which is never granted.
//! - Every response forbids framing (no clickjacking of Halt) and loading from anywhere else.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::App;

/// The `Host` values the dashboard answers to.
#[derive(Debug, Clone)]
pub struct Hosts {
    addr: SocketAddr,
    allowed: Vec<String>,
}

impl Hosts {
    pub fn new(addr: SocketAddr, extra: &[String]) -> Hosts {
        let port = addr.port();
        let mut allowed = vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
            addr.to_string(),
        ];
        for h in extra {
            let h = h.to_ascii_lowercase();
            if h.contains(':') && !h.ends_with(']') {
                allowed.push(h);
            } else {
                allowed.push(format!("{h}:{port}"));
            }
        }
        Hosts { addr, allowed }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed.contains(&host)
    }
}

fn refuse(why: String) -> Response {
    tracing::warn!(reason = %why, "refused a request");
    (
        StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({ "error": why })),
    )
        .into_response()
}

/// Constant-time comparison of the token (its length is public).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware: checks Host on every request, and token and Origin on state-changing ones.
pub async fn check(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !app.guard.allows(host) {
        return refuse(format!(
            "Host {host:?} is not one this dashboard answers to (start it with --allow-host to add one)"
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let token = headers
            .get(crate::CSRF_HEADER)
            .map(|t| t.as_bytes())
            .unwrap_or_default();
        if !same(token, app.token.as_bytes()) {
            return refuse(format!(
                "{} {} without the page's {} token: state-changing requests come only from the dashboard's own page",
                req.method(),
                req.uri().path(),
                crate::CSRF_HEADER
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let expected = format!("http://{host}");
            if origin.as_bytes() != expected.as_bytes() {
                return refuse(format!(
                    "Origin {:?} is not this dashboard ({expected})",
                    String::from_utf8_lossy(origin.as_bytes())
                ));
            }
        }
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    // Nothing but our own assets (the report page's inline CSS and SVG included), and no framing
    // by another page (a Halt button under someone else's click).
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// The Content-Security-Policy of every response.
pub const CSP: &str =
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
