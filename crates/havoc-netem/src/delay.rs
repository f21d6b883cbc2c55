//! The userspace delay engine: netem's delay, jitter, correlation and reordering on NFQUEUE.
//!
//! This kernel has no in-kernel delay primitive (no netem, fq, etf; see KERNEL.md), so matching
//! packets are sent by an iptables rule to an nfnetlink queue and held by a dedicated thread
//! until their due time, then accepted. The thread blocks in `ppoll(2)` on the queue socket and an
//! eventfd (for stop), with the timeout set to the next due time; there is no sleep-poll loop.
//!
//! Where packets are held matters: holding them on the sender's OUTPUT hook starves TCP (TSQ
//! keeps the held skbs charged to the socket), so both directions are implemented on a
//! *receive* path (mangle PREROUTING, see [`crate::iptables`]):
//! - [`Direction::Ingress`]: packets arriving at the target, held in the target netns.
//! - [`Direction::EgressAtPeer`]: packets the target sends, held where they arrive, in the peer
//!   netns that the caller names. This gives exact one-way semantics without touching the
//!   target's TCP stack.
//!
//! Crash safety: the rule uses `--queue-bypass`, so when the process dies and the socket closes,
//! new packets pass undelayed (packets held at that moment are dropped by the kernel, and TCP
//! retransmits them). The chain stays and is found by [`crate::iptables::leftovers`].
//!
//! Fail-open is counted: a packet that matches the rules while the kernel queue
//! ([`DelayConfig::queue_maxlen`]) or the socket buffer is full, or while no reader is bound, is
//! accepted undelayed and the kernel counts it nowhere. [`DelayStats::bypassed`] is therefore the
//! rules' own packet counters minus what entered the queue: exact after [`DelayEngine::stop`]
//! (read between removing the jumps and the chain), a lower bound while running.
//!
//! # What a held packet looks like to measuring tools
//!
//! The receive timestamp (`skb->tstamp`) is taken when the packet arrives at the device, before
//! PREROUTING holds it, and the engine's verdict does not change it. Measured with
//! `cargo run -p havoc-netem --example timestamps` (50 ms held on the receive path of the
//! namespace the tool runs in): `ping` (which reads `SO_TIMESTAMP`) 0.03 ms, i.e. no delay;
//! `ping -U` (user-space clock) 50.2 ms; a UDP echo timed by the application 50.2 ms; `tcpdump`
//! on either end of the veth 0.02 ms between request and reply (it taps before netfilter). So a
//! `to` delay is invisible to a plain `ping` towards the target from its peer, and a `from` delay
//! to a plain `ping` run inside the target; applications, TCP and `ping -U` see it in full. A fix
//! would set a mark in the verdict and have a `cgroup_skb/ingress` program zero `skb->tstamp` of
//! marked packets (the socket then stamps at `recvmsg`), at the cost of borrowing a mark bit that
//! policy routing may use; not done.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use havoc_sys::netns::{NetNs, NetNsError};
use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use rustix::io::Errno;

use crate::iptables::{self, Cidr, Family, Installed, IptablesError};
use crate::model::{Decision, Model};
use crate::nfqueue::{Event, NfqError, QueueSocket, NF_ACCEPT};

/// First queue number tried when the configuration does not name one.
pub const AUTO_QUEUE_BASE: u16 = 18_000;
/// How many queue numbers are tried from [`AUTO_QUEUE_BASE`].
pub const AUTO_QUEUE_SPAN: u16 = 1_000;

/// Errors of the delay engine.
#[derive(Debug, thiserror::Error)]
pub enum DelayError {
    #[error("invalid delay configuration: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("failed to run in the network namespace")]
    Netns(#[source] NetNsError),
    #[error("failed to set up the NFQUEUE socket")]
    Queue(#[source] NfqError),
    #[error("no free NFQUEUE number in {first}..{last}")]
    NoFreeQueue { first: u16, last: u16 },
    #[error("failed to install or remove the iptables rules")]
    Iptables(#[source] IptablesError),
    #[error("failed to create the stop eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("failed to spawn the delay thread")]
    Spawn(#[source] std::io::Error),
    #[error("the delay thread panicked")]
    WorkerPanicked,
}

/// Layer-4 protocol to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    /// ICMP for IPv4, ICMPv6 for IPv6.
    Icmp,
}

/// Which ports to match, from the target's point of view. Ports need TCP or UDP; with no
/// protocol set, rules are made for both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PortMatch {
    #[default]
    Any,
    /// The target's own ports (a server's listening port).
    Local(Vec<u16>),
    /// The remote end's ports (the port of a server the target talks to).
    Remote(Vec<u16>),
    /// Either end's port.
    Either(Vec<u16>),
}

/// Which packets are delayed. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct PacketFilter {
    /// Interface the packets arrive on (`-i`). For [`Direction::Ingress`] a device of the target;
    /// for [`Direction::EgressAtPeer`] a device of the peer.
    pub device: Option<String>,
    /// Addresses of the remote end (from the target's point of view). One family only restricts
    /// the rules to that family.
    pub remote_cidrs: Vec<Cidr>,
    pub protocol: Option<Protocol>,
    pub ports: PortMatch,
}

/// Which packets, relative to the target, are delayed.
#[derive(Debug, Clone, Default)]
pub enum Direction {
    /// Packets arriving at the target: held in the target's mangle PREROUTING.
    #[default]
    Ingress,
    /// Packets the target sends: held in the mangle PREROUTING of `peer`, the namespace they
    /// arrive in (the other end of a veth, a router, the host side of a pod). `target_cidrs`
    /// are the target's addresses, so only its packets are delayed there (empty = all packets
    /// arriving at the peer).
    EgressAtPeer {
        peer: NetNs,
        target_cidrs: Vec<Cidr>,
    },
}

/// netem-style reordering: a reordered packet is sent at once instead of delayed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reorder {
    /// Probability (0..=100) that a packet eligible by `gap` is reordered.
    pub percent: f64,
    /// Correlation (0..=100) of successive reorder decisions.
    pub correlation: f64,
    /// Only after `gap - 1` delayed packets is a packet eligible; 0 is treated as 1 (as tc does).
    pub gap: u32,
}

/// Configuration of one [`DelayEngine`].
#[derive(Debug, Clone)]
pub struct DelayConfig {
    /// Names the chain `HAVOC-<tag>` and the comment `havoc:<tag>`; 1..=22 of `[A-Za-z0-9_.-]`.
    /// `None` makes one from the pid and a counter.
    pub tag: Option<String>,
    /// NFQUEUE number; `None` picks one that is neither bound nor referenced by a rule.
    pub queue: Option<u16>,
    pub delay: Duration,
    /// Uniform jitter: the delay is drawn from `[delay - jitter, delay + jitter)` (netem's
    /// default without a distribution table).
    pub jitter: Duration,
    /// Correlation of successive delays, 0..=100 percent (netem semantics).
    pub correlation: f64,
    pub reorder: Option<Reorder>,
    pub filter: PacketFilter,
    pub direction: Direction,
    /// Seed of the random decisions; the same seed gives the same decision sequence.
    pub seed: u64,
    /// Packets the kernel may hold for the queue (`NFQA_CFG_QUEUE_MAXLEN`).
    pub queue_maxlen: u32,
    /// When the queue or socket buffer is full, accept packets instead of dropping them. The
    /// kernel then does not count them in `queue_dropped`/`user_dropped`.
    pub fail_open: bool,
    /// Receive buffer of the netlink socket (`SO_RCVBUFFORCE`).
    pub socket_buffer: usize,
}

impl Default for DelayConfig {
    fn default() -> Self {
        Self {
            tag: None,
            queue: None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            correlation: 0.0,
            reorder: None,
            filter: PacketFilter::default(),
            direction: Direction::Ingress,
            seed: 0,
            queue_maxlen: 1 << 16,
            fail_open: true,
            socket_buffer: 64 << 20,
        }
    }
}

fn check_percent(field: &'static str, v: f64) -> Result<(), DelayError> {
    if (0.0..=100.0).contains(&v) {
        Ok(())
    } else {
        Err(DelayError::InvalidConfig {
            field,
            reason: format!("{v} is not a percentage 0..=100"),
        })
    }
}

impl DelayConfig {
    /// Checks the configuration without touching the system.
    pub fn validate(&self) -> Result<(), DelayError> {
        if let Some(tag) = &self.tag {
            if !iptables::valid_tag(tag) {
                return Err(DelayError::InvalidConfig {
                    field: "tag",
                    reason: format!(
                        "{tag:?} must be 1..={} characters of [A-Za-z0-9_.-]",
                        iptables::MAX_TAG_LEN
                    ),
                });
            }
        }
        check_percent("correlation", self.correlation)?;
        if let Some(r) = &self.reorder {
            check_percent("reorder.percent", r.percent)?;
            check_percent("reorder.correlation", r.correlation)?;
            if self.delay.is_zero() && self.jitter.is_zero() {
                return Err(DelayError::InvalidConfig {
                    field: "reorder",
                    reason: "reordering needs a delay (as in netem): packets that are not \
                             reordered must be held for something to overtake them"
                        .into(),
                });
            }
        }
        if self.jitter > self.delay {
            tracing::debug!("jitter exceeds delay: samples below zero are clamped to zero");
        }
        if self.queue_maxlen == 0 {
            return Err(DelayError::InvalidConfig {
                field: "queue_maxlen",
                reason: "must be at least 1".into(),
            });
        }
        if let Some(dev) = &self.filter.device {
            if dev.is_empty() || dev.len() > 15 || dev.contains(char::is_whitespace) {
                return Err(DelayError::InvalidConfig {
                    field: "filter.device",
                    reason: format!("{dev:?} is not an interface name"),
                });
            }
        }
        match &self.filter.ports {
            PortMatch::Any => {}
            PortMatch::Local(p) | PortMatch::Remote(p) | PortMatch::Either(p) => {
                if p.is_empty() {
                    return Err(DelayError::InvalidConfig {
                        field: "filter.ports",
                        reason: "an empty port list matches nothing; use PortMatch::Any".into(),
                    });
                }
                if self.filter.protocol == Some(Protocol::Icmp) {
                    return Err(DelayError::InvalidConfig {
                        field: "filter.ports",
                        reason: "ports need protocol tcp or udp, not icmp".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Address families the rules are installed for.
    fn families(&self) -> Vec<Family> {
        let mut cidrs: Vec<&Cidr> = self.filter.remote_cidrs.iter().collect();
        if let Direction::EgressAtPeer { target_cidrs, .. } = &self.direction {
            cidrs.extend(target_cidrs.iter());
        }
        if cidrs.is_empty() {
            return vec![Family::V4, Family::V6];
        }
        let mut fams = Vec::new();
        for f in [Family::V4, Family::V6] {
            if cidrs.iter().any(|c| c.family() == f) {
                fams.push(f);
            }
        }
        fams
    }

    /// The rules of the chain for `family` (argv fragments after `-A CHAIN`).
    pub(crate) fn rules(&self, family: Family, queue: u16) -> Vec<Vec<String>> {
        let egress = matches!(self.direction, Direction::EgressAtPeer { .. });
        let fam_cidrs = |v: &[Cidr]| -> Vec<Option<String>> {
            let c: Vec<Option<String>> = v
                .iter()
                .filter(|c| c.family() == family)
                .map(|c| Some(c.to_string()))
                .collect();
            if c.is_empty() {
                vec![None]
            } else {
                c
            }
        };
        // Remote end of the target: the source of arriving packets, or (at the peer) the
        // destination of the target's packets.
        let remotes = fam_cidrs(&self.filter.remote_cidrs);
        let targets = match &self.direction {
            Direction::EgressAtPeer { target_cidrs, .. } => fam_cidrs(target_cidrs),
            Direction::Ingress => vec![None],
        };
        let (local_port_flag, remote_port_flag) = if egress {
            ("--sports", "--dports")
        } else {
            ("--dports", "--sports")
        };
        let (port_flag, ports): (Option<&str>, &[u16]) = match &self.filter.ports {
            PortMatch::Any => (None, &[]),
            PortMatch::Local(p) => (Some(local_port_flag), p),
            PortMatch::Remote(p) => (Some(remote_port_flag), p),
            PortMatch::Either(p) => (Some("--ports"), p),
        };
        let protos: Vec<Option<&str>> = match (self.filter.protocol, port_flag) {
            (Some(Protocol::Tcp), _) => vec![Some("tcp")],
            (Some(Protocol::Udp), _) => vec![Some("udp")],
            (Some(Protocol::Icmp), _) => {
                vec![Some(if family == Family::V4 {
                    "icmp"
                } else {
                    "ipv6-icmp"
                })]
            }
            (None, Some(_)) => vec![Some("tcp"), Some("udp")],
            (None, None) => vec![None],
        };
        // multiport takes at most 15 ports per rule.
        let port_chunks: Vec<Option<String>> = if port_flag.is_some() {
            ports
                .chunks(15)
                .map(|c| Some(c.iter().map(u16::to_string).collect::<Vec<_>>().join(",")))
                .collect()
        } else {
            vec![None]
        };
        let mut rules = Vec::new();
        for remote in &remotes {
            for target in &targets {
                for proto in &protos {
                    for chunk in &port_chunks {
                        let mut r: Vec<String> = Vec::new();
                        if let Some(dev) = &self.filter.device {
                            r.extend(["-i".into(), dev.clone()]);
                        }
                        if let Some(remote) = remote {
                            r.extend([if egress { "-d" } else { "-s" }.into(), remote.clone()]);
                        }
                        if let Some(target) = target {
                            r.extend(["-s".into(), target.clone()]);
                        }
                        if let Some(p) = proto {
                            r.extend(["-p".into(), p.to_string()]);
                        }
                        if let (Some(flag), Some(list)) = (port_flag, chunk) {
                            r.extend(["-m".into(), "multiport".into(), flag.into(), list.clone()]);
                        }
                        r.extend([
                            "-j".into(),
                            "NFQUEUE".into(),
                            "--queue-num".into(),
                            queue.to_string(),
                            "--queue-bypass".into(),
                        ]);
                        rules.push(r);
                    }
                }
            }
        }
        rules
    }
}

/// Counters shared between the engine and its thread.
#[derive(Debug, Default)]
struct Counters {
    seen: AtomicU64,
    delayed: AtomicU64,
    reordered: AtomicU64,
    released: AtomicU64,
    held: AtomicU64,
    /// Measured hold times of released packets.
    holds: Mutex<HoldStats>,
    overruns: AtomicU64,
    verdict_errors: AtomicU64,
    send_errors: AtomicU64,
    verdict_messages: AtomicU64,
    verdict_sends: AtomicU64,
}

/// Running mean and variance of hold times (Welford), in nanoseconds.
#[derive(Debug, Default, Clone, Copy)]
struct HoldStats {
    n: u64,
    mean: f64,
    m2: f64,
}

impl HoldStats {
    fn add(&mut self, ns: f64) {
        self.n += 1;
        let d = ns - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (ns - self.mean);
    }

    fn mean(&self) -> Option<Duration> {
        (self.n > 0).then(|| Duration::from_nanos(self.mean.max(0.0) as u64))
    }

    fn stddev(&self) -> Option<Duration> {
        (self.n > 1).then(|| Duration::from_nanos((self.m2 / (self.n - 1) as f64).sqrt() as u64))
    }
}

/// What the kernel did with the packets our rules matched, apart from what the engine received.
#[derive(Debug, Default, Clone, Copy)]
struct Accounting {
    /// Packets counted by the NFQUEUE rules (iptables counters), when last read.
    rule_packets: Option<u64>,
    /// Packets that passed without entering the engine (fail-open on a full queue or socket,
    /// `--queue-bypass` with no reader). Final after [`DelayEngine::stop`], an estimate (never
    /// above the truth) before.
    bypassed: u64,
    /// Packets the kernel dropped for us (only without fail-open).
    kernel_dropped: u64,
    /// The numbers above are final.
    last: bool,
}

/// Kernel-side counters of one queue, from `/proc/net/netfilter/nfnetlink_queue`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueProcStats {
    /// Packets currently waiting for a verdict in the kernel.
    pub queue_total: u64,
    /// Dropped because the queue was full (only without fail-open).
    pub queue_dropped: u64,
    /// Dropped because the socket buffer was full (only without fail-open).
    pub user_dropped: u64,
    /// Last packet id the kernel assigned.
    pub id_sequence: u64,
}

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Default)]
pub struct DelayStats {
    /// Packets received from the queue.
    pub seen: u64,
    /// Packets held for a non-zero time.
    pub delayed: u64,
    /// Packets sent at once by the reorder rule.
    pub reordered: u64,
    /// Packets accepted so far (all verdicts).
    pub released: u64,
    /// Packets held right now.
    pub held: u64,
    /// Mean time between receiving a delayed packet and sending its verdict (measured).
    pub mean_added_delay: Option<Duration>,
    /// Sample standard deviation of that time. For netem's uniform jitter `J` (no correlation)
    /// it is `J / sqrt(3)`, so `sqrt(3) × stddev` estimates the jitter achieved.
    pub added_delay_stddev: Option<Duration>,
    /// Packets the NFQUEUE rules matched (iptables rule counters): what the engine received, what
    /// bypassed it and what the kernel dropped. `None` until read.
    pub rule_packets: Option<u64>,
    /// Packets that matched the rules but passed *undelayed*, without ever reaching the engine:
    /// fail-open when the kernel queue (`queue_maxlen`) or the socket buffer was full, or
    /// `--queue-bypass` while no reader was bound. The kernel counts these nowhere; this is
    /// `rule_packets - seen - kernel_dropped`. Exact after [`DelayEngine::stop`]; while running,
    /// an estimate from the last [`DelayEngine::refresh_counters`] that never exceeds the truth.
    pub bypassed: u64,
    /// Packets the kernel dropped because the queue or socket was full (only without fail-open).
    pub kernel_dropped: u64,
    /// `ENOBUFS` on the socket: the kernel could not deliver queued packets to us.
    pub socket_overruns: u64,
    /// Verdicts the kernel rejected (unknown packet id).
    pub verdict_errors: u64,
    /// Verdict messages sent and the `send(2)` calls that carried them (batching ratio).
    pub verdict_messages: u64,
    pub verdict_sends: u64,
    /// The kernel's view of the queue, if it could be read.
    pub queue: Option<QueueProcStats>,
}

/// A running delay engine. [`stop`](Self::stop) (or drop) removes its rules and releases held
/// packets.
pub struct DelayEngine {
    rules_netns: NetNs,
    tag: String,
    queue: u16,
    installed: Vec<Installed>,
    counters: Arc<Counters>,
    wake: Arc<OwnedFd>,
    worker: Option<JoinHandle<()>>,
    accounting: Mutex<Accounting>,
    stopped: bool,
    /// Held while the rules are ours: a journal-less sweep leaves them alone meanwhile.
    owner: Option<havoc_sys::share::Share>,
    /// When stopping removed the jumps: no packet was delayed after that.
    effect_ended: Option<std::time::Instant>,
}

impl std::fmt::Debug for DelayEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayEngine")
            .field("netns", &self.rules_netns.path())
            .field("tag", &self.tag)
            .field("queue", &self.queue)
            .field("stopped", &self.stopped)
            .finish()
    }
}

static NEXT_TAG: AtomicU64 = AtomicU64::new(0);

impl DelayEngine {
    /// Starts delaying packets of `netns` (the target) as `cfg` says.
    pub fn start(netns: &NetNs, cfg: DelayConfig) -> Result<DelayEngine, DelayError> {
        cfg.validate()?;
        let tag = cfg.tag.clone().unwrap_or_else(|| {
            format!(
                "d{}x{}",
                std::process::id(),
                NEXT_TAG.fetch_add(1, Ordering::Relaxed)
            )
        });
        let rules_netns = match &cfg.direction {
            Direction::Ingress => netns.clone(),
            Direction::EgressAtPeer { peer, .. } => peer.clone(),
        };

        let (sock, queue) = open_queue(&rules_netns, &cfg)?;
        tracing::debug!(
            queue,
            rcvbuf = sock.recv_buffer_size(),
            tag,
            "nfqueue bound"
        );

        let wake = Arc::new(
            eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
                .map_err(|e| DelayError::EventFd(e.into()))?,
        );
        let counters = Arc::new(Counters::default());
        let model = Model::new(
            cfg.seed,
            cfg.delay,
            cfg.jitter,
            cfg.correlation,
            cfg.reorder.map(|r| (r.percent, r.correlation, r.gap)),
        );
        let mut worker = Worker {
            sock,
            wake: Arc::clone(&wake),
            model,
            counters: Arc::clone(&counters),
            held: BinaryHeap::new(),
            held_seqs: BTreeSet::new(),
            next_seq: 0,
            max_id: None,
            release: Vec::new(),
            draining: false,
        };
        let handle = std::thread::Builder::new()
            .name(format!("havoc-delay-{queue}"))
            .spawn(move || worker.run())
            .map_err(DelayError::Spawn)?;

        let mut engine = DelayEngine {
            rules_netns,
            tag,
            queue,
            installed: Vec::new(),
            counters,
            wake,
            worker: Some(handle),
            accounting: Mutex::new(Accounting::default()),
            stopped: false,
            owner: None,
            effect_ended: None,
        };
        match havoc_sys::share::Share::take(std::path::Path::new(crate::OWNERS_DIR), &engine.tag) {
            Ok(s) => engine.owner = Some(s),
            Err(e) => {
                tracing::warn!(error = %e, tag = %engine.tag, "cannot take the owner lock of the delay rules: a concurrent `havoc recover` may remove them")
            }
        }
        for family in cfg.families() {
            let rules = cfg.rules(family, queue);
            match iptables::install(&engine.rules_netns, family, &engine.tag, &rules) {
                Ok(inst) => engine.installed.push(inst),
                Err(e) => {
                    if let Err(stop_err) = engine.stop() {
                        tracing::warn!(error = %stop_err, "cleanup after a failed start failed");
                    }
                    return Err(DelayError::Iptables(e));
                }
            }
        }
        tracing::info!(tag = %engine.tag, queue, "delay engine started");
        Ok(engine)
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// When [`stop`](Self::stop) removed the jumps to the queue, ending the delay (the packets
    /// still held are released at once after it).
    pub fn effect_ended_at(&self) -> Option<std::time::Instant> {
        self.effect_ended
    }

    /// Leaves the rules in place as a crash would: the owner lock goes (the kernel drops it
    /// when a holder dies) and nothing is removed. For crash tests of sweeps and replays.
    #[doc(hidden)]
    pub fn abandon(mut self) {
        drop(self.owner.take());
        std::mem::forget(self);
    }

    pub fn queue_num(&self) -> u16 {
        self.queue
    }

    /// The namespace that holds the rules and the queue (the target, or the peer for
    /// [`Direction::EgressAtPeer`]).
    pub fn rules_netns(&self) -> &NetNs {
        &self.rules_netns
    }

    /// Reads the NFQUEUE rules' packet counters and the kernel's queue counters, and updates the
    /// bypass estimate [`stats`](Self::stats) reports (it runs `iptables`, so call it about once
    /// a second, not per packet). Order matters: the rule counters first, then everything that
    /// entered the queue (pending `queue_total` + verdicts sent), so a packet counted by the rule
    /// is never missed on the other side and the estimate never exceeds the truth.
    pub fn refresh_counters(&self) {
        if self.stopped {
            return;
        }
        let mut n = 0u64;
        for inst in &self.installed {
            match iptables::chain_packets(&self.rules_netns, inst.family, &self.tag) {
                Some(p) => n += p,
                None => return,
            }
        }
        let Some(q) = queue_proc_stats(&self.rules_netns, self.queue) else {
            return;
        };
        let entered = q.queue_total + self.counters.released.load(Ordering::Relaxed);
        let dropped = q.queue_dropped + q.user_dropped;
        let mut a = self.accounting.lock().unwrap_or_else(|p| p.into_inner());
        if a.last {
            return;
        }
        a.rule_packets = Some(n);
        a.kernel_dropped = dropped;
        a.bypassed = n.saturating_sub(dropped).saturating_sub(entered);
    }

    /// Current counters, including the kernel's view of the queue.
    pub fn stats(&self) -> DelayStats {
        let c = &self.counters;
        let holds = *c.holds.lock().unwrap_or_else(|p| p.into_inner());
        let acc = *self.accounting.lock().unwrap_or_else(|p| p.into_inner());
        DelayStats {
            seen: c.seen.load(Ordering::Relaxed),
            delayed: c.delayed.load(Ordering::Relaxed),
            reordered: c.reordered.load(Ordering::Relaxed),
            released: c.released.load(Ordering::Relaxed),
            held: c.held.load(Ordering::Relaxed),
            mean_added_delay: holds.mean(),
            added_delay_stddev: holds.stddev(),
            rule_packets: acc.rule_packets,
            bypassed: acc.bypassed,
            kernel_dropped: acc.kernel_dropped,
            socket_overruns: c.overruns.load(Ordering::Relaxed),
            verdict_errors: c.verdict_errors.load(Ordering::Relaxed),
            verdict_messages: c.verdict_messages.load(Ordering::Relaxed),
            verdict_sends: c.verdict_sends.load(Ordering::Relaxed),
            queue: if self.stopped {
                None
            } else {
                queue_proc_stats(&self.rules_netns, self.queue)
            },
        }
    }

    /// Removes the rules, accepts every held packet and unbinds the queue. Idempotent; the first
    /// error is returned after every step was tried.
    pub fn stop(&mut self) -> Result<(), DelayError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let mut first_err = None;
        // Rules first, so no new packet enters the queue while it drains. The rule counters are
        // read between removing the jumps and removing the chains: final.
        let installed = std::mem::take(&mut self.installed);
        let (rule_packets, jumps_gone, result) =
            iptables::uninstall(&self.rules_netns, &installed, &self.tag);
        self.effect_ended = Some(jumps_gone);
        if let Err(e) = result {
            first_err.get_or_insert(DelayError::Iptables(e));
        }
        drop(self.owner.take().and_then(havoc_sys::share::Share::release));
        // The kernel's drop counters, before the worker unbinds the queue.
        let dropped = queue_proc_stats(&self.rules_netns, self.queue)
            .map(|q| q.queue_dropped + q.user_dropped);
        if rustix::io::write(self.wake.as_fd(), &1u64.to_ne_bytes()).is_err() {
            tracing::warn!("could not signal the delay thread");
        }
        if let Some(h) = self.worker.take() {
            if h.join().is_err() {
                first_err.get_or_insert(DelayError::WorkerPanicked);
            }
        }
        // Every packet that entered the queue has now been read by the worker (it drains the
        // socket before unbinding), so what the rules counted beyond that passed undelayed.
        let seen = self.counters.seen.load(Ordering::Relaxed);
        {
            let mut a = self.accounting.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = rule_packets {
                let dropped = dropped.unwrap_or(a.kernel_dropped);
                a.rule_packets = Some(n);
                a.kernel_dropped = dropped;
                a.bypassed = n.saturating_sub(seen).saturating_sub(dropped);
            }
            a.last = true;
        }
        let stats = self.stats();
        tracing::info!(
            tag = %self.tag,
            seen,
            delayed = stats.delayed,
            bypassed = stats.bypassed,
            rule_packets = ?stats.rule_packets,
            "delay engine stopped"
        );
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for DelayEngine {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, tag = %self.tag, "stopping the delay engine on drop failed");
        }
    }
}

/// Opens the queue socket inside `netns` and binds the configured or a free queue number.
fn open_queue(netns: &NetNs, cfg: &DelayConfig) -> Result<(QueueSocket, u16), DelayError> {
    let candidates: Vec<u16> = match cfg.queue {
        Some(q) => vec![q],
        None => {
            let bound = bound_queues(netns);
            let referenced = iptables::referenced_queues(netns);
            let start = (std::process::id() as u16).wrapping_mul(7) % AUTO_QUEUE_SPAN;
            (0..AUTO_QUEUE_SPAN)
                .map(|i| AUTO_QUEUE_BASE + (start + i) % AUTO_QUEUE_SPAN)
                .filter(|q| !bound.contains(q) && !referenced.contains(q))
                .take(16)
                .collect()
        }
    };
    let (rcvbuf, maxlen, fail_open) = (cfg.socket_buffer, cfg.queue_maxlen, cfg.fail_open);
    netns
        .run(move || {
            let mut sock = QueueSocket::open(rcvbuf).map_err(DelayError::Queue)?;
            let mut last_err = None;
            for &q in &candidates {
                match sock.bind_queue(q, maxlen, fail_open) {
                    Ok(()) => return Ok((sock, q)),
                    Err(e) => {
                        tracing::debug!(queue = q, error = %e, "queue not available");
                        last_err = Some(e);
                        // A failed bind leaves the socket usable for the next try.
                    }
                }
            }
            match (cfg.queue, last_err) {
                (Some(_), Some(e)) => Err(DelayError::Queue(e)),
                _ => Err(DelayError::NoFreeQueue {
                    first: AUTO_QUEUE_BASE,
                    last: AUTO_QUEUE_BASE + AUTO_QUEUE_SPAN,
                }),
            }
        })
        .map_err(DelayError::Netns)?
}

/// Rows of `/proc/net/netfilter/nfnetlink_queue` read from a thread inside `netns`.
fn proc_rows(netns: &NetNs) -> Vec<Vec<u64>> {
    netns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/netfilter/nfnetlink_queue"))
        .ok()
        .and_then(Result::ok)
        .map(|s| {
            s.lines()
                .map(|l| {
                    l.split_whitespace()
                        .filter_map(|t| t.parse().ok())
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn bound_queues(netns: &NetNs) -> Vec<u16> {
    proc_rows(netns)
        .iter()
        .filter_map(|r| r.first().map(|&q| q as u16))
        .collect()
}

/// The kernel's counters for `queue` in `netns`; `None` when it is not bound.
pub fn queue_proc_stats(netns: &NetNs, queue: u16) -> Option<QueueProcStats> {
    // Columns: queue, portid, queue_total, copy_mode, copy_range, queue_dropped, user_dropped,
    // id_sequence, 1.
    proc_rows(netns)
        .into_iter()
        .find(|r| r.len() >= 8 && r[0] == queue as u64)
        .map(|r| QueueProcStats {
            queue_total: r[2],
            queue_dropped: r[5],
            user_dropped: r[6],
            id_sequence: r[7],
        })
}

/// One held packet, ordered by due time, then arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    due: Instant,
    seq: u64,
    id: u32,
    arrived: Instant,
}

/// Most datagrams read per wake-up before verdicts are flushed.
const RECV_BATCH: usize = 512;

struct Worker {
    sock: QueueSocket,
    wake: Arc<OwnedFd>,
    model: Model,
    counters: Arc<Counters>,
    held: BinaryHeap<Reverse<Held>>,
    /// Arrival sequence numbers of held packets: the smallest bounds batch verdicts.
    held_seqs: BTreeSet<u64>,
    next_seq: u64,
    max_id: Option<u32>,
    /// Packets to accept at the next flush: (arrival seq, id).
    release: Vec<(u64, u32)>,
    /// Stopping: packets still arriving are accepted at once.
    draining: bool,
}

impl Worker {
    fn run(&mut self) {
        // Release times are hrtimer deadlines: the default 50 µs slack would add to every delay.
        if let Err(e) = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1)) {
            tracing::debug!(error = %e, "could not lower the timer slack");
        }
        loop {
            let now = Instant::now();
            self.release_due(now);
            self.flush();
            let timeout = self
                .held
                .peek()
                .map(|Reverse(h)| h.due.saturating_duration_since(now));
            let ts = timeout.map(|t| rustix::time::Timespec {
                tv_sec: t.as_secs() as i64,
                tv_nsec: t.subsec_nanos() as i64,
            });
            let (sock_ready, stop) = {
                let sock_fd = self.sock.fd();
                let mut fds = [
                    PollFd::new(&sock_fd, PollFlags::IN),
                    PollFd::new(&*self.wake, PollFlags::IN),
                ];
                match poll(&mut fds, ts.as_ref()) {
                    Ok(_) => (!fds[0].revents().is_empty(), !fds[1].revents().is_empty()),
                    Err(Errno::INTR) => (false, false),
                    Err(e) => {
                        tracing::error!(error = %e, "poll failed; releasing held packets");
                        (false, true)
                    }
                }
            };
            if stop {
                self.shutdown();
                return;
            }
            if sock_ready {
                self.receive();
            }
        }
    }

    /// Reads up to [`RECV_BATCH`] datagrams and decides each packet's fate; returns how many
    /// datagrams it read.
    fn receive(&mut self) -> usize {
        let mut datagrams = 0;
        for _ in 0..RECV_BATCH {
            let mut packets: [u32; 8] = [0; 8];
            let mut n = 0;
            let mut errors = 0;
            let got = self.sock.recv_events(|ev| match ev {
                Event::Packet(id) if n < packets.len() => {
                    packets[n] = id;
                    n += 1;
                }
                Event::Packet(_) => {}
                Event::Ack(0) => {}
                Event::Ack(_) => errors += 1,
            });
            if errors > 0 {
                self.counters
                    .verdict_errors
                    .fetch_add(errors, Ordering::Relaxed);
            }
            let now = Instant::now();
            for &id in &packets[..n] {
                self.on_packet(id, now);
            }
            match got {
                Ok(true) => datagrams += 1,
                Ok(false) => break,
                Err(Errno::NOBUFS) => {
                    self.counters.overruns.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "recv on the queue socket failed");
                    break;
                }
            }
        }
        datagrams
    }

    fn on_packet(&mut self, id: u32, now: Instant) {
        self.counters.seen.fetch_add(1, Ordering::Relaxed);
        if self.draining {
            // Stopping: accepted at once, neither delayed nor reordered.
            self.max_id = Some(id);
            self.release.push((self.next_seq, id));
            self.next_seq += 1;
            return;
        }
        self.max_id = Some(id);
        let seq = self.next_seq;
        self.next_seq += 1;
        match self.model.decide() {
            Decision::Reorder => {
                self.counters.reordered.fetch_add(1, Ordering::Relaxed);
                self.release.push((seq, id));
            }
            Decision::Delay(d) if d.is_zero() => self.release.push((seq, id)),
            Decision::Delay(d) => {
                self.counters.delayed.fetch_add(1, Ordering::Relaxed);
                self.counters.held.fetch_add(1, Ordering::Relaxed);
                self.held.push(Reverse(Held {
                    due: now + d,
                    seq,
                    id,
                    arrived: now,
                }));
                self.held_seqs.insert(seq);
            }
        }
    }

    fn release_due(&mut self, now: Instant) {
        while let Some(Reverse(h)) = self.held.peek().copied() {
            if h.due > now {
                break;
            }
            self.held.pop();
            self.held_seqs.remove(&h.seq);
            self.counters.held.fetch_sub(1, Ordering::Relaxed);
            let hold = now.saturating_duration_since(h.arrived).as_nanos() as f64;
            self.counters
                .holds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .add(hold);
            self.release.push((h.seq, h.id));
        }
    }

    /// Sends the verdicts of `release`: one batch verdict for the packets that precede every
    /// held packet in the kernel's queue, single verdicts for the rest, all in one `send`.
    fn flush(&mut self) {
        if self.release.is_empty() {
            return;
        }
        let min_held = self.held_seqs.first().copied().unwrap_or(u64::MAX);
        let mut batch: Option<(u64, u32)> = None;
        for &(seq, id) in &self.release {
            if seq < min_held {
                if batch.is_none_or(|(s, _)| seq > s) {
                    batch = Some((seq, id));
                }
            } else {
                self.sock.push_verdict(id, NF_ACCEPT);
            }
        }
        if let Some((_, id)) = batch {
            self.sock.push_batch_verdict(id, NF_ACCEPT);
        }
        self.counters
            .released
            .fetch_add(self.release.len() as u64, Ordering::Relaxed);
        self.release.clear();
        self.send();
    }

    fn send(&mut self) {
        match self.sock.flush() {
            Ok(0) => {}
            Ok(n) => {
                self.counters
                    .verdict_messages
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.counters.verdict_sends.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "sending verdicts failed");
            }
        }
    }

    /// Accepts everything the kernel holds for us, then unbinds. Runs after the rules are gone.
    fn shutdown(&mut self) {
        self.draining = true;
        // Read until the socket is empty (bounded): every packet the rules queued is counted as
        // seen, so the bypass count at stop is exact, and none is left for unbind to drop.
        for round in 0..1000 {
            let got = self.receive();
            if got == 0 && round > 0 {
                break;
            }
            if let Some(max) = self.max_id {
                // Every packet in the kernel's queue has an id <= max (we read them all).
                self.sock.push_batch_verdict(max, NF_ACCEPT);
                self.send();
            }
            let n = self.held.len() as u64 + self.release.len() as u64;
            self.counters.released.fetch_add(n, Ordering::Relaxed);
            self.counters.held.store(0, Ordering::Relaxed);
            self.held.clear();
            self.held_seqs.clear();
            self.release.clear();
        }
        if let Err(e) = self.sock.unbind_queue() {
            tracing::debug!(error = %e, "unbinding the queue failed (the socket closes anyway)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DelayConfig {
        DelayConfig {
            delay: Duration::from_millis(10),
            ..DelayConfig::default()
        }
    }

    #[test]
    fn default_rules_queue_everything_on_both_families() {
        let c = cfg();
        assert_eq!(c.families(), vec![Family::V4, Family::V6]);
        assert_eq!(
            c.rules(Family::V4, 7),
            vec![vec!["-j", "NFQUEUE", "--queue-num", "7", "--queue-bypass"]]
        );
    }

    #[test]
    fn filters_become_match_arguments() {
        let mut c = cfg();
        c.filter = PacketFilter {
            device: Some("eth0".into()),
            remote_cidrs: vec!["10.1.0.0/16".parse().expect("cidr")],
            protocol: None,
            ports: PortMatch::Local(vec![80, 443]),
        };
        assert_eq!(c.families(), vec![Family::V4]);
        let rules = c.rules(Family::V4, 3);
        assert_eq!(rules.len(), 2, "tcp and udp");
        assert_eq!(
            rules[0].join(" "),
            "-i eth0 -s 10.1.0.0/16 -p tcp -m multiport --dports 80,443 \
             -j NFQUEUE --queue-num 3 --queue-bypass"
        );
    }

    #[test]
    fn egress_at_peer_swaps_sides() {
        let mut c = cfg();
        c.direction = Direction::EgressAtPeer {
            peer: NetNs::named("peer"),
            target_cidrs: vec!["10.0.0.2".parse().expect("cidr")],
        };
        c.filter.protocol = Some(Protocol::Udp);
        c.filter.ports = PortMatch::Local(vec![53]);
        c.filter.remote_cidrs = vec!["10.0.0.1/32".parse().expect("cidr")];
        assert_eq!(
            c.rules(Family::V4, 1)[0].join(" "),
            "-d 10.0.0.1/32 -s 10.0.0.2/32 -p udp -m multiport --sports 53 \
             -j NFQUEUE --queue-num 1 --queue-bypass"
        );
    }

    #[test]
    fn many_ports_are_split_for_multiport() {
        let mut c = cfg();
        c.filter.protocol = Some(Protocol::Tcp);
        c.filter.ports = PortMatch::Either((1..=20).collect());
        assert_eq!(c.rules(Family::V6, 1).len(), 2);
    }

    #[test]
    fn validation_rejects_bad_values() {
        let mut c = cfg();
        c.correlation = 150.0;
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.tag = Some("bad tag".into());
        assert!(c.validate().is_err());
        let c = DelayConfig {
            reorder: Some(Reorder {
                percent: 10.0,
                correlation: 0.0,
                gap: 1,
            }),
            ..DelayConfig::default()
        };
        assert!(c.validate().is_err(), "reorder without delay");
        let mut c = cfg();
        c.filter.protocol = Some(Protocol::Icmp);
        c.filter.ports = PortMatch::Local(vec![1]);
        assert!(c.validate().is_err());
        assert!(cfg().validate().is_ok());
    }
}
