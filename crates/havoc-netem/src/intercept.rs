//! A packet interceptor on NFQUEUE: the packets a namespace's processes send that match some
//! iptables rules are shown, whole, to a [`Handler`], which lets each pass, drops it, holds it,
//! or answers it in their place (DNS chaos answers a query itself).
//!
//! Layout: a tagged `HAVOC-<tag>` chain in mangle OUTPUT of the namespace (see
//! [`crate::iptables`]) with `-j NFQUEUE --queue-bypass` rules. Fail-open by construction: when
//! the process holding the queue dies, its socket closes, the queue is unbound and the kernel lets
//! every new packet pass (`--queue-bypass`); only packets held at that moment are lost (a client
//! retries them). The chain itself stays until a journal replay or sweep removes it, passing
//! everything meanwhile.
//!
//! An answer is an IP packet the handler builds (addresses and ports swapped, so it comes from
//! the server the query was for); it is sent through a raw socket (`IPPROTO_RAW`, header
//! included) opened in the namespace, and the query is dropped. Holding a packet on OUTPUT is fine
//! for the datagrams this is meant for (KERNEL.md row 3a: it starves TCP, which is not held here).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use havoc_sys::netns::{NetNs, NetNsError};
use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{
    ipproto, sendto, socket_with, AddressFamily, SendFlags, SocketFlags, SocketType,
};

use crate::iptables::{self, Family, Hook, Installed, IptablesError};
use crate::nfqueue::{NfqError, QueueSocket, NF_ACCEPT};

/// `NF_DROP`.
const NF_DROP: u32 = 0;

/// Errors of the interceptor.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error("invalid interceptor configuration: {0}")]
    InvalidConfig(String),
    #[error("failed to run in the network namespace")]
    Netns(#[source] NetNsError),
    #[error("failed to set up the NFQUEUE socket")]
    Queue(#[source] NfqError),
    #[error("no free NFQUEUE number")]
    NoFreeQueue,
    #[error("failed to open the raw socket that sends answers")]
    RawSocket(#[source] std::io::Error),
    #[error("failed to install or remove the iptables rules")]
    Iptables(#[source] IptablesError),
    #[error("failed to create the stop eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("failed to spawn the interceptor thread")]
    Spawn(#[source] std::io::Error),
    #[error("the interceptor thread panicked")]
    WorkerPanicked,
}

/// What happens to one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It goes on unchanged.
    Accept,
    /// It is dropped.
    Drop,
    /// It is dropped and this IP packet (IPv4 or IPv6, header included) is sent in its place.
    Answer(Vec<u8>),
}

/// A [`Verdict`] now or after a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Now(Verdict),
    Hold(Duration, Verdict),
}

/// Decides the fate of intercepted packets; runs on the interceptor's thread.
pub trait Handler: Send + 'static {
    /// `packet` starts at the IP header; `whole` is false when the kernel copied only part of it.
    fn packet(&mut self, packet: &[u8], whole: bool) -> Decision;
}

/// Configuration of one [`Interceptor`].
#[derive(Debug, Clone)]
pub struct InterceptConfig {
    /// Names the chain `HAVOC-<tag>`; 1..=22 of `[A-Za-z0-9_.-]`.
    pub tag: String,
    /// One iptables rule per entry (match fragments such as `-p udp --dport 53`), installed for
    /// each family of `families`; the NFQUEUE target is appended.
    pub matches: Vec<Vec<String>>,
    pub families: Vec<Family>,
    /// Bytes of each packet copied to the handler.
    pub copy_range: u32,
    pub queue_maxlen: u32,
    pub socket_buffer: usize,
}

impl InterceptConfig {
    pub fn new(tag: impl Into<String>, matches: Vec<Vec<String>>) -> Self {
        Self {
            tag: tag.into(),
            matches,
            families: vec![Family::V4, Family::V6],
            copy_range: 4096,
            queue_maxlen: 4096,
            socket_buffer: 8 << 20,
        }
    }
}

/// Counters of an [`Interceptor`].
#[derive(Debug, Clone, Default)]
pub struct InterceptStats {
    /// Packets received from the queue.
    pub seen: u64,
    pub accepted: u64,
    pub dropped: u64,
    /// Answers sent in place of a packet.
    pub answered: u64,
    /// Answers the raw socket refused (the packet was dropped all the same).
    pub answer_errors: u64,
    /// Packets held right now.
    pub held: u64,
    /// Held packets released, and the mean measured hold.
    pub released: u64,
    pub mean_hold: Option<Duration>,
    /// Packets given a verdict at once, and the mean time from reading them to sending the
    /// verdict (the interceptor's own userspace cost; the kernel's queueing is not included).
    pub immediate: u64,
    pub mean_immediate: Option<Duration>,
}

#[derive(Debug, Default)]
struct Counters {
    seen: AtomicU64,
    accepted: AtomicU64,
    dropped: AtomicU64,
    answered: AtomicU64,
    answer_errors: AtomicU64,
    held: AtomicU64,
    released: AtomicU64,
    hold_ns: AtomicU64,
    immediate: AtomicU64,
    immediate_ns: AtomicU64,
}

/// A running interceptor; [`stop`](Self::stop) (or drop) removes its rules and carries out the
/// verdicts of held packets at once.
pub struct Interceptor {
    netns: NetNs,
    tag: String,
    queue: u16,
    installed: Vec<Installed>,
    counters: Arc<Counters>,
    wake: Arc<OwnedFd>,
    worker: Option<JoinHandle<()>>,
    owner: Option<havoc_sys::share::Share>,
    stopped: bool,
    effect_ended: Option<Instant>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("netns", &self.netns.path())
            .field("tag", &self.tag)
            .field("queue", &self.queue)
            .finish()
    }
}

impl Interceptor {
    /// Starts intercepting what `cfg.matches` selects among the packets `netns` sends.
    pub fn start(
        netns: &NetNs,
        cfg: InterceptConfig,
        handler: Box<dyn Handler>,
    ) -> Result<Interceptor, InterceptError> {
        if !iptables::valid_tag(&cfg.tag) {
            return Err(InterceptError::InvalidConfig(format!(
                "tag {:?} must be 1..={} characters of [A-Za-z0-9_.-]",
                cfg.tag,
                iptables::MAX_TAG_LEN
            )));
        }
        if cfg.matches.is_empty() || cfg.families.is_empty() {
            return Err(InterceptError::InvalidConfig(
                "no rule or no address family: nothing would be intercepted".into(),
            ));
        }
        let candidates = free_queues(netns);
        let (rcvbuf, maxlen, copy) = (cfg.socket_buffer, cfg.queue_maxlen, cfg.copy_range);
        let (sock, queue, raw4, raw6) = netns
            .run(move || -> Result<_, InterceptError> {
                let mut sock = QueueSocket::open(rcvbuf).map_err(InterceptError::Queue)?;
                let mut bound = None;
                for &q in &candidates {
                    if sock.bind_queue_with(q, maxlen, true, Some(copy)).is_ok() {
                        bound = Some(q);
                        break;
                    }
                }
                let queue = bound.ok_or(InterceptError::NoFreeQueue)?;
                let raw = |fam| {
                    socket_with(
                        fam,
                        SocketType::RAW,
                        SocketFlags::CLOEXEC,
                        Some(ipproto::RAW),
                    )
                };
                let raw4 =
                    raw(AddressFamily::INET).map_err(|e| InterceptError::RawSocket(e.into()))?;
                let raw6 = raw(AddressFamily::INET6).ok();
                Ok((sock, queue, raw4, raw6))
            })
            .map_err(InterceptError::Netns)??;
        let wake = Arc::new(
            eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
                .map_err(|e| InterceptError::EventFd(e.into()))?,
        );
        let counters = Arc::new(Counters::default());
        let mut worker = Worker {
            sock,
            raw4,
            raw6,
            wake: Arc::clone(&wake),
            handler,
            counters: Arc::clone(&counters),
            held: BinaryHeap::new(),
            held_verdicts: Vec::new(),
            seq: 0,
        };
        let handle = std::thread::Builder::new()
            .name(format!("havoc-intercept-{queue}"))
            .spawn(move || worker.run())
            .map_err(InterceptError::Spawn)?;
        let mut me = Interceptor {
            netns: netns.clone(),
            tag: cfg.tag.clone(),
            queue,
            installed: Vec::new(),
            counters,
            wake,
            worker: Some(handle),
            owner: None,
            stopped: false,
            effect_ended: None,
        };
        match havoc_sys::share::Share::take(std::path::Path::new(crate::OWNERS_DIR), &me.tag) {
            Ok(s) => me.owner = Some(s),
            Err(e) => {
                tracing::warn!(error = %e, tag = %me.tag, "cannot take the owner lock of the interceptor rules")
            }
        }
        for &family in &cfg.families {
            let rules: Vec<Vec<String>> = cfg
                .matches
                .iter()
                .map(|m| {
                    let mut r = m.clone();
                    r.extend(
                        [
                            "-j",
                            "NFQUEUE",
                            "--queue-num",
                            &queue.to_string(),
                            "--queue-bypass",
                        ]
                        .map(String::from),
                    );
                    r
                })
                .collect();
            match iptables::install_at(&me.netns, family, &me.tag, Hook::Output, &rules) {
                Ok(i) => me.installed.push(i),
                Err(e) => {
                    if let Err(stop) = me.stop() {
                        tracing::warn!(error = %stop, "cleanup after a failed start failed");
                    }
                    return Err(InterceptError::Iptables(e));
                }
            }
        }
        tracing::info!(tag = %me.tag, queue, "interceptor started");
        Ok(me)
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn queue_num(&self) -> u16 {
        self.queue
    }

    /// When [`stop`](Self::stop) removed the jumps (no packet was intercepted after that).
    pub fn effect_ended_at(&self) -> Option<Instant> {
        self.effect_ended
    }

    /// Leaves everything in place as a crash would (the rules stay, the queue socket closes: the
    /// kernel bypasses the queue). For crash tests.
    #[doc(hidden)]
    pub fn abandon(mut self) {
        drop(self.owner.take());
        self.stopped = true;
        let _ = rustix::io::write(self.wake.as_fd(), &2u64.to_ne_bytes());
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
    }

    pub fn stats(&self) -> InterceptStats {
        let c = &self.counters;
        let mean = |n: u64, ns: u64| (n > 0).then(|| Duration::from_nanos(ns / n));
        let released = c.released.load(Ordering::Relaxed);
        let immediate = c.immediate.load(Ordering::Relaxed);
        InterceptStats {
            seen: c.seen.load(Ordering::Relaxed),
            accepted: c.accepted.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            answered: c.answered.load(Ordering::Relaxed),
            answer_errors: c.answer_errors.load(Ordering::Relaxed),
            held: c.held.load(Ordering::Relaxed),
            released,
            mean_hold: mean(released, c.hold_ns.load(Ordering::Relaxed)),
            immediate,
            mean_immediate: mean(immediate, c.immediate_ns.load(Ordering::Relaxed)),
        }
    }

    /// Removes the rules, then carries out the verdicts of held packets and unbinds the queue.
    /// Idempotent; the first error is returned after every step was tried.
    pub fn stop(&mut self) -> Result<(), InterceptError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let mut first_err = None;
        let installed = std::mem::take(&mut self.installed);
        let (_, jumps_gone, result) = iptables::uninstall(&self.netns, &installed, &self.tag);
        self.effect_ended = Some(jumps_gone);
        if let Err(e) = result {
            first_err.get_or_insert(InterceptError::Iptables(e));
        }
        drop(self.owner.take().and_then(havoc_sys::share::Share::release));
        if rustix::io::write(self.wake.as_fd(), &1u64.to_ne_bytes()).is_err() {
            tracing::warn!("could not signal the interceptor thread");
        }
        if let Some(h) = self.worker.take() {
            if h.join().is_err() {
                first_err.get_or_insert(InterceptError::WorkerPanicked);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Interceptor {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, tag = %self.tag, "stopping the interceptor on drop failed");
        }
    }
}

/// Queue numbers not bound and not referenced by a rule in `netns`.
fn free_queues(netns: &NetNs) -> Vec<u16> {
    let referenced = iptables::referenced_queues(netns);
    let base = 19_000u16;
    let start = (std::process::id() as u16).wrapping_mul(13) % 1000;
    (0..1000u16)
        .map(|i| base + (start + i) % 1000)
        .filter(|q| !referenced.contains(q))
        .take(16)
        .collect()
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    due: Instant,
    seq: u64,
    id: u32,
    since: Instant,
    /// Index into `held_verdicts`.
    slot: usize,
}

struct Worker {
    sock: QueueSocket,
    raw4: OwnedFd,
    raw6: Option<OwnedFd>,
    wake: Arc<OwnedFd>,
    handler: Box<dyn Handler>,
    counters: Arc<Counters>,
    held: BinaryHeap<Reverse<Held>>,
    held_verdicts: Vec<Option<Verdict>>,
    seq: u64,
}

impl Worker {
    fn run(&mut self) {
        if let Err(e) = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1)) {
            tracing::debug!(error = %e, "could not lower the timer slack");
        }
        loop {
            let now = Instant::now();
            self.release(|h| h.due <= now);
            let _ = self.sock.flush();
            let ts = self.held.peek().map(|Reverse(h)| {
                let t = h.due.saturating_duration_since(now);
                rustix::time::Timespec {
                    tv_sec: t.as_secs() as i64,
                    tv_nsec: t.subsec_nanos() as i64,
                }
            });
            let (ready, stop) = {
                let fd = self.sock.fd();
                let mut fds = [
                    PollFd::new(&fd, PollFlags::IN),
                    PollFd::new(&*self.wake, PollFlags::IN),
                ];
                match poll(&mut fds, ts.as_ref()) {
                    Ok(_) => (!fds[0].revents().is_empty(), !fds[1].revents().is_empty()),
                    Err(Errno::INTR) => (false, false),
                    Err(e) => {
                        tracing::error!(error = %e, "poll failed; stopping the interceptor");
                        (false, true)
                    }
                }
            };
            if stop {
                let mut buf = [0u8; 8];
                let abandon =
                    rustix::io::read(&*self.wake, &mut buf).is_ok() && u64::from_ne_bytes(buf) == 2;
                if abandon {
                    return;
                }
                // The rules are gone: read what is still queued, then release everything.
                while self.receive() {}
                self.release(|_| true);
                let _ = self.sock.flush();
                if let Err(e) = self.sock.unbind_queue() {
                    tracing::debug!(error = %e, "unbinding the interceptor queue failed");
                }
                return;
            }
            if ready {
                for _ in 0..64 {
                    if !self.receive() {
                        break;
                    }
                }
            }
        }
    }

    /// Reads one datagram of queued packets and decides each; false when none was waiting.
    fn receive(&mut self) -> bool {
        let t0 = Instant::now();
        let mut decided: Vec<(u32, Decision)> = Vec::new();
        let handler = &mut self.handler;
        let got = match self
            .sock
            .recv_packets(|id, payload, whole| decided.push((id, handler.packet(payload, whole))))
        {
            Ok(g) => g,
            Err(Errno::NOBUFS) => true,
            Err(e) => {
                tracing::warn!(error = %e, "reading the interceptor queue failed");
                false
            }
        };
        let mut immediate = 0u64;
        for (id, d) in decided {
            self.counters.seen.fetch_add(1, Ordering::Relaxed);
            match d {
                Decision::Now(v) => {
                    immediate += 1;
                    self.apply(id, v);
                }
                Decision::Hold(dur, v) => {
                    let slot = self.held_verdicts.len();
                    self.held_verdicts.push(Some(v));
                    self.seq += 1;
                    self.held.push(Reverse(Held {
                        due: t0 + dur,
                        seq: self.seq,
                        id,
                        since: t0,
                        slot,
                    }));
                    self.counters.held.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if immediate > 0 {
            let _ = self.sock.flush();
            let ns = t0.elapsed().as_nanos() as u64;
            self.counters
                .immediate
                .fetch_add(immediate, Ordering::Relaxed);
            self.counters
                .immediate_ns
                .fetch_add(ns * immediate, Ordering::Relaxed);
        }
        got
    }

    fn release(&mut self, due: impl Fn(&Held) -> bool) {
        let mut any = false;
        while let Some(Reverse(h)) = self.held.peek() {
            if !due(h) {
                break;
            }
            let Reverse(h) = self.held.pop().expect("peeked");
            let v = self.held_verdicts[h.slot].take().unwrap_or(Verdict::Accept);
            self.apply(h.id, v);
            self.counters.held.fetch_sub(1, Ordering::Relaxed);
            self.counters.released.fetch_add(1, Ordering::Relaxed);
            self.counters
                .hold_ns
                .fetch_add(h.since.elapsed().as_nanos() as u64, Ordering::Relaxed);
            any = true;
        }
        if self.held.is_empty() {
            self.held_verdicts.clear();
        }
        if any {
            let _ = self.sock.flush();
        }
    }

    fn apply(&mut self, id: u32, v: Verdict) {
        match v {
            Verdict::Accept => {
                self.sock.push_verdict(id, NF_ACCEPT);
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Drop => {
                self.sock.push_verdict(id, NF_DROP);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Answer(pkt) => {
                self.sock.push_verdict(id, NF_DROP);
                match self.send_answer(&pkt) {
                    Ok(()) => self.counters.answered.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        tracing::debug!(error = %e, "sending an answer failed");
                        self.counters.answer_errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }
    }

    fn send_answer(&self, pkt: &[u8]) -> Result<(), Errno> {
        match pkt.first().map(|b| b >> 4) {
            Some(4) if pkt.len() >= 20 => {
                let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
                sendto(
                    &self.raw4,
                    pkt,
                    SendFlags::empty(),
                    &SocketAddrV4::new(dst, 0),
                )
                .map(|_| ())
            }
            Some(6) if pkt.len() >= 40 => {
                let raw6 = self.raw6.as_ref().ok_or(Errno::AFNOSUPPORT)?;
                let mut d = [0u8; 16];
                d.copy_from_slice(&pkt[24..40]);
                sendto(
                    raw6,
                    pkt,
                    SendFlags::empty(),
                    &SocketAddrV6::new(Ipv6Addr::from(d), 0, 0, 0),
                )
                .map(|_| ())
            }
            _ => Err(Errno::INVAL),
        }
    }
}
