//! DNS over TCP: the listener the redirect ([`crate::redirect`]) sends the target's connections
//! to port 53. Each connection carries length-prefixed DNS messages (RFC 1035 4.2.2), possibly
//! several at once (pipelining, RFC 7766 6.2.1). Each is decided by the shared [`DnsRules`]:
//!
//! - passed: forwarded, byte for byte, on one upstream connection per client connection to the
//!   address the client meant, opened at the first passed query (a connection whose queries are
//!   all answered by Havoc never reaches the server) and marked so the redirect skips it;
//! - held (`delay`): forwarded after the hold, without holding back the queries behind it;
//! - answered: the forged answer is written on the client connection, after `delay` if any.
//!
//! Answers from the server and from Havoc share the client connection whole message by whole
//! message, in the order they are ready (RFC 7766 7: a client matches them by id).
//!
//! Ends: the client closing its side half-closes the upstream connection once every held query
//! was forwarded (the server then answers what it has and closes); the server closing (or being
//! unreachable) closes the client connection once Havoc's own pending answers are written.

use std::net::SocketAddrV4;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{DnsCounters, DnsRules, Fate, Transport};
use crate::redirect::{accept_redirected, connect_marked, MARK};

/// Messages queued towards one side of a connection before the reader waits.
const QUEUE: usize = 64;

/// Accepts redirected connections until `stop` fires; each is served on its own task.
pub async fn serve(
    listener: tokio::net::TcpListener,
    rules: Arc<Mutex<DnsRules>>,
    counters: Arc<DnsCounters>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    while let Some((stream, dst)) = accept_redirected(&listener, &mut stop).await {
        counters.tcp_connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve_conn(stream, dst, rules.clone(), counters.clone()));
    }
}

/// Serves one client connection to `dst`.
async fn serve_conn(
    stream: tokio::net::TcpStream,
    dst: SocketAddrV4,
    rules: Arc<Mutex<DnsRules>>,
    counters: Arc<DnsCounters>,
) {
    let (mut from_client, client_w) = stream.into_split();
    let (to_client, client_rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let (to_server, server_rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let writer = tokio::spawn(write_frames(client_w, client_rx));
    let upstream = tokio::spawn(upstream(
        dst,
        server_rx,
        to_client.clone(),
        counters.clone(),
    ));
    loop {
        let msg = tokio::select! {
            m = read_frame(&mut from_client) => m,
            // The server closed, or could not be reached: so does this connection.
            _ = to_server.closed() => break,
        };
        let Ok(Some(msg)) = msg else {
            break; // the client closed its side (or the connection broke)
        };
        let fate = rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .decide(&msg, Transport::Tcp);
        match fate {
            Fate::Pass => {
                if to_server.send(msg).await.is_err() {
                    break;
                }
            }
            Fate::PassAfter(hold) => {
                tokio::spawn(after(hold, msg, to_server.clone(), counters.clone()));
            }
            Fate::Answer { dns, after: hold } if hold.is_zero() => {
                if to_client.send(dns).await.is_err() {
                    break;
                }
            }
            Fate::Answer { dns, after: hold } => {
                tokio::spawn(after(hold, dns, to_client.clone(), counters.clone()));
            }
        }
    }
    // Each side ends once every sender towards it (held messages included) is gone.
    drop((to_server, to_client));
    let _ = upstream.await;
    let _ = writer.await;
}

/// Sends `msg` to `to` after `hold`, counting the measured hold.
async fn after(hold: Duration, msg: Vec<u8>, to: mpsc::Sender<Vec<u8>>, c: Arc<DnsCounters>) {
    let t = Instant::now();
    tokio::time::sleep(hold).await;
    c.tcp_held.fetch_add(1, Ordering::Relaxed);
    c.tcp_hold_ns
        .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let _ = to.send(msg).await;
}

/// The connection to the original server: opened at the first message, closed (half) when no
/// message can come any more; what the server sends goes to the client.
async fn upstream(
    dst: SocketAddrV4,
    mut rx: mpsc::Receiver<Vec<u8>>,
    to_client: mpsc::Sender<Vec<u8>>,
    counters: Arc<DnsCounters>,
) {
    let Some(first) = rx.recv().await else {
        return; // nothing was passed: the server is never contacted
    };
    let stream = match connect_marked(dst, MARK).await {
        Ok(s) => s,
        Err(e) => {
            counters.tcp_upstream_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, %dst, "DNS-over-TCP: cannot reach the server");
            return;
        }
    };
    let (mut from_server, mut server_w) = stream.into_split();
    let mut relay = tokio::spawn(async move {
        while let Ok(Some(m)) = read_frame(&mut from_server).await {
            if to_client.send(m).await.is_err() {
                break;
            }
        }
    });
    let mut next = Some(first);
    while let Some(m) = next {
        if write_frame(&mut server_w, &m).await.is_err() {
            counters.tcp_upstream_errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
        next = tokio::select! {
            m = rx.recv() => m,
            // The server closed its side: stop taking queries (the client sees the close).
            _ = &mut relay => return,
        };
    }
    let _ = server_w.shutdown().await;
    drop(rx);
    let _ = relay.await;
}

/// Writes each message, framed, as it comes; shuts the write side down when none can come.
async fn write_frames<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut buf = Vec::new();
    while let Some(m) = rx.recv().await {
        buf.clear();
        frame_into(&mut buf, &m);
        // Whatever else is ready goes in the same write.
        while let Ok(m) = rx.try_recv() {
            frame_into(&mut buf, &m);
        }
        if w.write_all(&buf).await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

fn frame_into(buf: &mut Vec<u8>, m: &[u8]) {
    // A DNS message over TCP is at most 65,535 bytes; longer ones are never built here.
    let len = u16::try_from(m.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&m[..usize::from(len)]);
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, m: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(m.len() + 2);
    frame_into(&mut buf, m);
    w.write_all(&buf).await
}

/// The next length-prefixed message, or `None` at a clean end of stream.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut m = vec![0u8; usize::from(u16::from_be_bytes(len))];
    r.read_exact(&mut m).await?;
    Ok(Some(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_eof_is_clean() {
        let mut buf = Vec::new();
        frame_into(&mut buf, b"abc");
        frame_into(&mut buf, b"");
        frame_into(&mut buf, &[7u8; 300]);
        assert_eq!(&buf[..5], &[0, 3, b'a', b'b', b'c']);
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).await.unwrap(), Some(b"abc".to_vec()));
        assert_eq!(read_frame(&mut r).await.unwrap(), Some(Vec::new()));
        assert_eq!(read_frame(&mut r).await.unwrap(), Some(vec![7u8; 300]));
        assert_eq!(read_frame(&mut r).await.unwrap(), None);
        // A message cut short is an error, not a clean end.
        let mut cut = &buf[..4];
        assert!(read_frame(&mut cut).await.is_err());
    }
}
