//! DNS over TCP: the listener the redirect ([`crate::redirect`]) sends the target's connections
//! to port 53. Each connection carries length-prefixed DNS messages (RFC 1035 4.2.2), possibly
//! several at once (pipelining, RFC 7766 6.2.1). Each is decided by the shared [`DnsRules`]:
//!
//! - passed: forwarded, byte for byte, on one upstream connection per client connection to the
//!   address the client meant, opened when the client's is accepted (as the client did) and
//!   marked so the redirect skips it; if it cannot be made, the client's connection is closed at
//!   the first query to pass (answered ones are answered all the same);
//! - held (`delay`): forwarded after the hold, without holding back the queries behind it;
//! - answered: the forged answer is written on the client connection, after `delay` if any.
//!
//! Answers from the server and from Havoc share the client connection whole message by whole
//! message (one write each, under a lock), in the order they are ready (RFC 7766 7: a client
//! matches them by id). No queue between tasks: each message is written by the task that has it.
//!
//! Ends: the client closing its side half-closes the upstream connection once every held query
//! was forwarded (the server then answers what it has and closes); the server closing (or being
//! unreachable) closes the client connection once Havoc's own pending answers are written.

use std::net::SocketAddrV4;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::{JoinHandle, JoinSet};

use super::{DnsCounters, DnsRules, Fate, Transport};
use crate::redirect::{accept_redirected, connect_marked, MARK};

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

type Writer = Arc<tokio::sync::Mutex<OwnedWriteHalf>>;

/// Serves one client connection to `dst`.
async fn serve_conn(
    stream: tokio::net::TcpStream,
    dst: SocketAddrV4,
    rules: Arc<Mutex<DnsRules>>,
    counters: Arc<DnsCounters>,
) {
    let (mut from_client, client_w) = stream.into_split();
    let client_w: Writer = Arc::new(tokio::sync::Mutex::new(client_w));
    // The client connected to the server: so does Havoc, at once (the server sees the same
    // connections, and the first passed query does not wait for a handshake).
    let mut connecting = Some(tokio::spawn(connect_marked(dst, MARK)));
    let mut server_w: Option<Writer> = None;
    let mut relay: Option<JoinHandle<()>> = None;
    let mut held = JoinSet::new();
    loop {
        let msg = match relay.as_mut() {
            Some(r) => tokio::select! {
                m = read_frame(&mut from_client) => m,
                // The server closed (or the client cannot be written to): so does this
                // connection, once Havoc's own pending answers are out.
                _ = r => {
                    relay = None;
                    break;
                }
            },
            None => read_frame(&mut from_client).await,
        };
        let Ok(Some(msg)) = msg else {
            break; // the client closed its side (or the connection broke)
        };
        let fate = rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .decide(&msg, Transport::Tcp);
        let (hold, msg, to_server) = match fate {
            Fate::Pass => (Duration::ZERO, msg, true),
            Fate::PassAfter(hold) => (hold, msg, true),
            Fate::Answer { dns, after } => (after, dns, false),
        };
        let w = if to_server {
            if server_w.is_none() {
                let stream = match connecting.take() {
                    Some(c) => c.await.map_err(std::io::Error::other).and_then(|r| r),
                    None => Err(std::io::Error::other("no connection")),
                };
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        counters.tcp_upstream_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(error = %e, %dst, "DNS-over-TCP: cannot reach the server");
                        break;
                    }
                };
                let (from_server, w) = stream.into_split();
                server_w = Some(Arc::new(tokio::sync::Mutex::new(w)));
                relay = Some(tokio::spawn(relay_answers(from_server, client_w.clone())));
            }
            server_w.clone().expect("connected above")
        } else {
            client_w.clone()
        };
        if hold.is_zero() {
            if write_frame(&w, &msg).await.is_err() {
                if to_server {
                    counters.tcp_upstream_errors.fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
        } else {
            held.spawn(after(hold, msg, w, counters.clone()));
        }
    }
    // Held messages go out first; then the server gets end of stream, answers what it has and
    // closes; then the client does.
    while held.join_next().await.is_some() {}
    if let Some(w) = server_w {
        let _ = w.lock().await.shutdown().await;
    }
    if let Some(r) = relay {
        let _ = r.await;
    }
    let _ = client_w.lock().await.shutdown().await;
}

/// Writes `msg` to `w` after `hold`, counting the measured hold.
async fn after(hold: Duration, msg: Vec<u8>, w: Writer, c: Arc<DnsCounters>) {
    let t = Instant::now();
    tokio::time::sleep(hold).await;
    c.tcp_held.fetch_add(1, Ordering::Relaxed);
    c.tcp_hold_ns
        .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let _ = write_frame(&w, &msg).await;
}

/// Copies the server's messages to the client, whole, until either side ends.
async fn relay_answers(mut from_server: OwnedReadHalf, client_w: Writer) {
    while let Ok(Some(m)) = read_frame(&mut from_server).await {
        if write_frame(&client_w, &m).await.is_err() {
            return;
        }
    }
}

/// Writes one message, framed, in one write (whole, even when several tasks share `w`).
async fn write_frame(w: &Writer, m: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(m.len() + 2);
    frame_into(&mut buf, m);
    w.lock().await.write_all(&buf).await
}

fn frame_into(buf: &mut Vec<u8>, m: &[u8]) {
    // A DNS message over TCP is at most 65,535 bytes; longer ones are never built here.
    let len = u16::try_from(m.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&m[..usize::from(len)]);
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
