//! The interceptor: an HTTP proxy that runs inside the target's network namespace, receives the
//! connections a `redirect` rule sends it, and forwards each to the address the client meant
//! (`SO_ORIGINAL_DST`) on a connection marked so the redirect rule lets it through.
//!
//! One upstream connection per client connection, of the same HTTP version (HTTP/1.1 with
//! keep-alive, or h2c when the client spoke HTTP/2 with prior knowledge): the server sees the
//! same connection pattern as without Havoc. Requests that no rule hits are forwarded with their
//! bodies streamed; a body is buffered only when a rule rewrites it.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::rules::{set_length, Rule};
use havoc_spec::http::HttpTarget;

type Body = BoxBody<Bytes, hyper::Error>;

/// Counters of one interceptor, read by the injection's `effect`.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub seen: AtomicU64,
    pub matched: AtomicU64,
    pub hit: AtomicU64,
    pub aborted: AtomicU64,
    pub delayed: AtomicU64,
    pub delay_ns: AtomicU64,
    pub replaced: AtomicU64,
    pub patched: AtomicU64,
    pub upstream_errors: AtomicU64,
    /// The interceptor's own time for exchanges no rule hit (total minus the server's time), in
    /// nanoseconds: the most recent [`MAX_SAMPLES`].
    pub overhead_ns: Mutex<Vec<u64>>,
}

const MAX_SAMPLES: usize = 100_000;

impl Stats {
    fn sample(&self, ns: u64) {
        let mut v = self.overhead_ns.lock().expect("stats lock");
        if v.len() >= MAX_SAMPLES {
            let i = (self.seen.load(Ordering::Relaxed) as usize) % MAX_SAMPLES;
            v[i] = ns;
        } else {
            v.push(ns);
        }
    }
}

/// Why an exchange ended without a response.
#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("aborted by HTTPChaos")]
    Aborted,
    #[error("failed to reach the server at {dst}")]
    Upstream {
        dst: SocketAddrV4,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to read a body")]
    Body(#[source] hyper::Error),
}

/// An HTTP client connection of version `h2` (or HTTP/1.1) over `io`; its driver is spawned.
async fn handshake<I>(io: I, h2: bool) -> Result<Upstream, hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if h2 {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Ok(Upstream::H2(send))
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        Ok(Upstream::H1(send))
    }
}

enum Upstream {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

struct Conn {
    dst: SocketAddrV4,
    mark: u32,
    tls: Option<Arc<super::tls::Tls>>,
    /// The client's TLS server name, presented to the server in turn.
    sni: Option<String>,
    upstream: tokio::sync::Mutex<Option<Upstream>>,
}

impl Conn {
    async fn connect(&self, h2: bool) -> Result<Upstream, ProxyError> {
        let up = |e: Box<dyn std::error::Error + Send + Sync>| ProxyError::Upstream {
            dst: self.dst,
            source: e,
        };
        let stream = crate::redirect::connect_marked(self.dst, self.mark)
            .await
            .map_err(|e| up(e.into()))?;
        match &self.tls {
            None => handshake(stream, h2).await.map_err(|e| up(e.into())),
            Some(tls) => {
                // An HTTP/2 client is offered both protocols upstream: a server without h2
                // gets its exchanges as HTTP/1.1 (see `to_http1`).
                let connector = if h2 { &tls.h2 } else { &tls.h1 };
                let name = super::tls::server_name(self.sni.as_deref(), self.dst);
                let stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| up(e.into()))?;
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                handshake(stream, h2).await.map_err(|e| up(e.into()))
            }
        }
    }

    /// Sends `req` to the server on this connection's upstream, (re)connecting when needed.
    async fn forward(&self, req: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        let h2 = req.version() == Version::HTTP_2;
        let up = |e: hyper::Error| ProxyError::Upstream {
            dst: self.dst,
            source: e.into(),
        };
        let mut guard = self.upstream.lock().await;
        let usable = match guard.as_mut() {
            // Over TLS an HTTP/2 client may be served by an HTTP/1.1 upstream (ALPN fallback).
            Some(Upstream::H1(s)) => (!h2 || self.tls.is_some()) && s.ready().await.is_ok(),
            Some(Upstream::H2(s)) => h2 && s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            *guard = Some(self.connect(h2).await?);
        }
        match guard.as_mut().expect("connected above") {
            Upstream::H1(s) => {
                let req = to_http1(req);
                s.ready().await.map_err(up)?;
                // HTTP/1.1 is one exchange at a time: hold the connection until the head is in.
                s.send_request(req).await.map_err(up)
            }
            Upstream::H2(s) => {
                let mut s = s.clone();
                drop(guard);
                s.ready().await.map_err(up)?;
                s.send_request(req).await.map_err(up)
            }
        }
    }
}

/// An HTTP/2 request as HTTP/1.1: origin-form target and a Host header from the authority.
fn to_http1(mut req: Request<Body>) -> Request<Body> {
    if req.version() != Version::HTTP_2 {
        return req;
    }
    *req.version_mut() = Version::HTTP_11;
    if let Some(auth) = req.uri().authority().cloned() {
        if !req.headers().contains_key(http::header::HOST) {
            if let Ok(v) = http::HeaderValue::from_str(auth.as_str()) {
                req.headers_mut().insert(http::header::HOST, v);
            }
        }
    }
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if let Ok(u) = pq.parse() {
        *req.uri_mut() = u;
    }
    req
}

/// Shared by every connection of one interceptor.
pub struct Shared {
    pub rule: Rule,
    pub tls: Option<Arc<super::tls::Tls>>,
    pub stats: Stats,
    pub mark: u32,
}

/// Accepts until `stop` fires; each connection is served on its own task.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    while let Some((stream, dst)) = crate::redirect::accept_redirected(&listener, &mut stop).await {
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        tokio::spawn(async move {
            match shared.tls.clone() {
                None => serve_conn(stream, shared, dst, None).await,
                Some(tls) => {
                    let Ok(stream) = tls.acceptor.accept(stream).await else {
                        return;
                    };
                    let sni = stream.get_ref().1.server_name().map(str::to_string);
                    serve_conn(stream, shared, dst, sni).await
                }
            }
        });
    }
}

/// Serves one client connection (plain or TLS), HTTP/1.1 or h2c/h2.
async fn serve_conn<I>(io: I, shared: Arc<Shared>, dst: SocketAddrV4, sni: Option<String>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(Conn {
        dst,
        mark: shared.mark,
        tls: shared.tls.clone(),
        sni,
        upstream: tokio::sync::Mutex::new(None),
    });
    let svc = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        let shared = shared.clone();
        async move { exchange(&shared, &conn, req).await }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let _ = builder.serve_connection(TokioIo::new(io), svc).await;
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

async fn exchange(
    shared: &Shared,
    conn: &Conn,
    req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let start = Instant::now();
    let rule = &shared.rule;
    let stats = &shared.stats;
    stats.seen.fetch_add(1, Ordering::Relaxed);
    let req_matches = rule.matches_request(req.method(), req.uri(), req.headers());
    let request_hit = rule.target() == HttpTarget::Request && req_matches && {
        stats.matched.fetch_add(1, Ordering::Relaxed);
        rule.draw()
    };
    let req = if request_hit {
        stats.hit.fetch_add(1, Ordering::Relaxed);
        if rule.abort() {
            stats.aborted.fetch_add(1, Ordering::Relaxed);
            return Err(ProxyError::Aborted);
        }
        hold(rule, stats).await;
        let (mut parts, body) = req.into_parts();
        rule.rewrite_request(&mut parts.method, &mut parts.uri, &mut parts.headers);
        count_rewrite(rule, stats);
        let body = if rule.touches_body() {
            let bytes = body.collect().await.map_err(ProxyError::Body)?.to_bytes();
            match rule.rewrite_body(&bytes) {
                Some(b) => {
                    set_length(&mut parts.headers, b.len());
                    full(b)
                }
                None => full(bytes),
            }
        } else {
            body.boxed()
        };
        Request::from_parts(parts, body)
    } else {
        req.map(|b| b.boxed())
    };
    let up_start = Instant::now();
    let resp = conn.forward(req).await.inspect_err(|_| {
        stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
    })?;
    let up_time = up_start.elapsed();
    let response_hit = rule.target() == HttpTarget::Response
        && req_matches
        && rule.matches_response(resp.status(), resp.headers())
        && {
            stats.matched.fetch_add(1, Ordering::Relaxed);
            rule.draw()
        };
    if !response_hit {
        if !request_hit {
            let own = start.elapsed().saturating_sub(up_time);
            stats.sample(own.as_nanos() as u64);
        }
        return Ok(resp.map(|b| b.boxed()));
    }
    stats.hit.fetch_add(1, Ordering::Relaxed);
    if rule.abort() {
        stats.aborted.fetch_add(1, Ordering::Relaxed);
        return Err(ProxyError::Aborted);
    }
    hold(rule, stats).await;
    let (mut parts, body) = resp.into_parts();
    rule.rewrite_response(&mut parts.status, &mut parts.headers);
    count_rewrite(rule, stats);
    let body = if rule.touches_body() {
        let bytes = body.collect().await.map_err(ProxyError::Body)?.to_bytes();
        match rule.rewrite_body(&bytes) {
            Some(b) => {
                set_length(&mut parts.headers, b.len());
                full(b)
            }
            None => full(bytes),
        }
    } else {
        body.boxed()
    };
    Ok(Response::from_parts(parts, body))
}

async fn hold(rule: &Rule, stats: &Stats) {
    if let Some(d) = rule.delay() {
        let t = Instant::now();
        tokio::time::sleep(d).await;
        stats.delayed.fetch_add(1, Ordering::Relaxed);
        stats
            .delay_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

fn count_rewrite(rule: &Rule, stats: &Stats) {
    if rule.replaces() {
        stats.replaced.fetch_add(1, Ordering::Relaxed);
    }
    if rule.patches() {
        stats.patched.fetch_add(1, Ordering::Relaxed);
    }
}

/// The p-th percentile (0..=100) of `v` (sorted in place), in nanoseconds.
pub fn percentile(v: &mut [u64], p: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    Some(v[i.min(v.len() - 1)])
}
