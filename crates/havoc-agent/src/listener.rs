//! The gRPC listener's defences against clients that misbehave before or outside the API: a
//! cap on open connections, TCP keepalive, a TLS handshake deadline (set on the TLS config, see
//! [`havoc_api::tls::HANDSHAKE_TIMEOUT`]), and error messages clipped to fit HTTP/2 headers.
//!
//! A connection is counted from `accept` until it closes; beyond [`ListenerLimits::max_connections`]
//! new connections are closed at once (and logged), so a flood of idle sockets cannot exhaust the
//! agent's file descriptors or memory. Unauthenticated connections hold a slot for at most the
//! handshake deadline.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::http;
use tonic::codegen::tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// Bounds of the gRPC listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Open connections at once, authenticated or not (default 256; the operator needs one or
    /// two per agent).
    pub max_connections: usize,
    /// A client must finish the TLS handshake within this (default
    /// [`havoc_api::tls::HANDSHAKE_TIMEOUT`], 5 s).
    pub handshake_timeout: Duration,
    /// Requests in flight on one connection (default 32).
    pub concurrency_per_connection: usize,
    /// TCP keepalive idle time (default 60 s): dead peers are found even when HTTP/2 is idle.
    pub tcp_keepalive: Duration,
    /// HTTP/2 PING interval; a peer that does not answer within 20 s more is dropped (default 30 s).
    pub http2_keepalive: Duration,
    /// The longest `grpc-message` sent, in bytes as encoded in the header (default 4 KiB: HTTP/2
    /// peers commonly refuse header lists over 16 KiB).
    pub max_error_message: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 256,
            handshake_timeout: havoc_api::tls::HANDSHAKE_TIMEOUT,
            concurrency_per_connection: 32,
            tcp_keepalive: Duration::from_secs(60),
            http2_keepalive: Duration::from_secs(30),
            max_error_message: 4096,
        }
    }
}

/// An accepted connection holding one of the listener's slots until it is dropped.
pub struct Capped {
    tcp: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Capped {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp.connect_info()
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Accepted connections, each with a slot; connections beyond the cap are closed on accept.
/// Accept errors (EMFILE, a connection reset before accept) pause accepting for 50 ms instead of
/// ending the server.
pub struct CappedIncoming {
    inner: TcpIncoming,
    slots: Arc<Semaphore>,
    max: usize,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl CappedIncoming {
    pub fn new(listener: tokio::net::TcpListener, limits: &ListenerLimits) -> Self {
        CappedIncoming {
            inner: TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(limits.tcp_keepalive)),
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            max: limits.max_connections,
            pause: None,
        }
    }
}

impl Stream for CappedIncoming {
    type Item = io::Result<Capped>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(p) = self.pause.as_mut() {
                ready!(p.as_mut().poll(cx));
                self.pause = None;
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(tcp)) => match self.slots.clone().try_acquire_owned() {
                    Ok(slot) => return Poll::Ready(Some(Ok(Capped { tcp, _slot: slot }))),
                    Err(_) => {
                        let peer = tcp.peer_addr().ok();
                        tracing::warn!(
                            ?peer,
                            max = self.max,
                            "connection refused: the agent already has the most connections it accepts"
                        );
                        drop(tcp);
                    }
                },
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "accepting a connection failed; pausing 50ms");
                    self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
                }
            }
        }
    }
}

/// Clips the `grpc-message` of an error response to `max` encoded bytes, at a character
/// boundary, marking the cut. tonic sends a handler's error `Status` in the response headers;
/// a longer message would be refused by the client's HTTP/2 header limit and the caller would see
/// a protocol error instead of the reason.
pub fn clip_grpc_message<B>(mut res: http::Response<B>, max: usize) -> http::Response<B> {
    let Some(v) = res.headers().get("grpc-message") else {
        return res;
    };
    if v.len() <= max {
        return res;
    }
    let bytes = v.as_bytes();
    // The value is percent-encoded UTF-8: cut before a `%XX` that continues a character
    // (0x80..=0xBF) or is itself cut, so the decoded text stays valid.
    let mut at = max.saturating_sub(64).min(bytes.len());
    loop {
        let is_escape = |i: usize| bytes.get(i) == Some(&b'%');
        if at >= 1 && is_escape(at - 1) {
            at -= 1;
        } else if at >= 2 && is_escape(at - 2) {
            at -= 2;
        } else if is_escape(at) && continues_a_char(&bytes[at..]) {
            at -= 3.min(at);
            continue;
        } else {
            break;
        }
    }
    let mut clipped = bytes[..at].to_vec();
    clipped.extend_from_slice(
        format!(
            "%E2%80%A6 (message cut at {at} of {} encoded bytes)",
            bytes.len()
        )
        .as_bytes(),
    );
    if let Ok(v) = http::HeaderValue::from_bytes(&clipped) {
        res.headers_mut().insert("grpc-message", v);
    }
    res
}

/// Whether `%XX` at the start of `s` encodes a UTF-8 continuation byte.
fn continues_a_char(s: &[u8]) -> bool {
    s.get(1..3)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| u8::from_str_radix(h, 16).ok())
        .is_some_and(|b| (0x80..=0xBF).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_message(m: &str) -> http::Response<()> {
        let mut r = http::Response::new(());
        r.headers_mut().insert(
            "grpc-message",
            http::HeaderValue::from_str(m).expect("header"),
        );
        r
    }

    fn decoded(r: &http::Response<()>) -> String {
        let v = r.headers()["grpc-message"].to_str().expect("ascii");
        let mut out = Vec::new();
        let b = v.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).expect("hex"));
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).expect("still valid UTF-8")
    }

    #[test]
    fn short_messages_are_untouched() {
        let r = clip_grpc_message(with_message("bad%20thing"), 4096);
        assert_eq!(r.headers()["grpc-message"], "bad%20thing");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        // "é" is %C3%A9: every cut point falls inside or between escapes.
        for extra in 0..6 {
            let m = format!("{}{}", "x".repeat(extra), "%C3%A9".repeat(5000));
            let r = clip_grpc_message(with_message(&m), 4096);
            let v = r.headers()["grpc-message"].len();
            assert!(v <= 4096, "{v}");
            let text = decoded(&r);
            assert!(text.contains("… (message cut at"), "{text}");
        }
    }
}
