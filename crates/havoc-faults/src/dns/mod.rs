//! `DNSChaos`: the target's DNS queries for matching names are answered by Havoc (SERVFAIL or a
//! random address) or held, in the target's own network namespace; every other query goes to the
//! server the target addressed, unchanged. resolv.conf is never edited. One decision code
//! ([`DnsRules`]) serves both transports, with one random stream and one set of counters.
//!
//! UDP ([`havoc_netem::intercept`]): `-p udp --dport 53` packets the namespace sends go through
//! an NFQUEUE (`--queue-bypass`) in mangle OUTPUT. Havoc parses each query with hickory-proto: a
//! non-matching one is accepted at once; a hit one is either held and then accepted (`delay`),
//! or dropped and answered from the server's address through a raw socket (`error`, `random`,
//! optionally `delay` late). Dropping and answering was chosen over rewriting the query into an
//! answer in place: a rewritten packet keeps the query's conntrack entry and route, and leaves
//! the namespace's OUTPUT path with swapped addresses, while an answer sent from a raw socket is
//! an ordinary arriving datagram.
//!
//! TCP ([`tcp`], on [`crate::redirect`] like HTTPChaos): an owned nftables table redirects the
//! connections the namespace opens to port 53 (any address) to a listener Havoc runs there. Each
//! length-prefixed message is decided by the same rules: hit queries are answered on the
//! connection (after `delay` if any), the rest are forwarded unchanged to the original server
//! over one marked upstream connection per client connection, so pipelined queries stay on one
//! connection and answers may come back out of order (RFC 7766 allows it; ids match them).
//!
//! Fail-open: if Havoc dies, the kernel bypasses the queue at once (new UDP queries pass
//! unfaulted; a query held at that instant is lost and retried by its client), and deletes the
//! owned table with its `nft` session (new TCP connections go straight to the server; those
//! open through Havoc end). The chain is journaled ([`UndoAction::RemoveDelayRules`]) so the
//! watchdog and `havoc recover` remove it; the `nft` helper is journaled too.
//!
//! Not intercepted: DNS over TCP to IPv6 servers (the redirect is IPv4 only); the report says so.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use havoc_netem::intercept::{Decision, Handler, InterceptConfig, Interceptor, Verdict};
use havoc_spec::dns::{DNSChaos, DnsAction, RANDOM_TTL};
use havoc_sys::netns::NetNs;
use havoc_sys::nft::OwnedTable;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::redirect::{redirect_table, NetnsServer, Traffic};
use crate::{Context, Effect, Fault, FaultError, Injection, Target, UndoAction};

pub mod tcp;

/// Distinguishes the faults of one process in chain tags.
static NEXT_FAULT: AtomicU64 = AtomicU64::new(0);

pub struct DnsFault {
    spec: DNSChaos,
    id: u64,
}

impl DnsFault {
    pub fn new(spec: DNSChaos) -> Self {
        DnsFault {
            spec,
            id: NEXT_FAULT.fetch_add(1, Ordering::Relaxed) % 100,
        }
    }

    /// The namespace of a target: a netns, or the netns of a live process.
    fn netns_of(&self, target: &Target) -> Result<PathBuf, FaultError> {
        match target {
            Target::Netns { path, .. } => Ok(path.clone()),
            Target::Process { .. } => {
                let (pid, _) = target.live_process("DNSChaos needs a process or a netns")?;
                Ok(crate::procinfo::netns_path(pid))
            }
        }
    }

    /// The chain tag for a namespace: this process, this fault, the namespace's inode (22
    /// characters at most, the same before and after injecting so the journal names it).
    fn tag(&self, netns: &std::path::Path) -> String {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(netns).map(|m| m.ino()).unwrap_or(0);
        format!("dns{}f{}n{:08x}", std::process::id(), self.id, ino as u32)
    }
}

impl Fault for DnsFault {
    fn check(&self, target: &Target) -> Result<(), FaultError> {
        let path = self.netns_of(target)?;
        if !path.exists() {
            return Err(FaultError::TargetGone {
                target: target.label(),
            });
        }
        Ok(())
    }

    fn undo_plan(&self, target: &Target) -> Vec<UndoAction> {
        match self.netns_of(target) {
            Ok(netns) => vec![UndoAction::RemoveDelayRules {
                tag: self.tag(&netns),
                netns,
            }],
            Err(_) => Vec::new(),
        }
    }

    fn inject(&self, target: &Target, ctx: &Context) -> Result<Box<dyn Injection>, FaultError> {
        let path = self.netns_of(target)?;
        let label = target.label();
        let netns = NetNs::from_path(&path);
        let counters = Arc::new(DnsCounters::default());
        let rules = Arc::new(Mutex::new(DnsRules::new(
            self.spec.clone(),
            ctx.seed,
            Arc::clone(&counters),
        )));
        let handler = DnsHandler::new(Arc::clone(&rules));
        let matches = vec![["-p", "udp", "--dport", "53"].map(String::from).to_vec()];
        let cfg = InterceptConfig::new(self.tag(&path), matches);
        let interceptor = Interceptor::start(&netns, cfg, Box::new(handler)).map_err(|e| {
            FaultError::Other(format!(
                "failed to intercept DNS in {label}: {}",
                error_chain(&e)
            ))
        })?;
        // TCP: the listener first, then the redirect to it (dropping either on an error undoes it).
        let (tcp_rules, tcp_counters) = (Arc::clone(&rules), Arc::clone(&counters));
        let server = NetnsServer::start(&path, "havoc-dns-tcp", move |listener, stop| {
            tcp::serve(listener, tcp_rules, tcp_counters, stop)
        })
        .map_err(|e| FaultError::Io {
            action: "start the DNS-over-TCP interceptor in".into(),
            target: label.clone(),
            source: e,
        })?;
        let name = format!("havoc_dns_{}_{}", std::process::id(), self.id);
        let table = redirect_table(&path, &name, 53, Traffic::FromLocalClients, server.port())
            .map_err(|e| {
                FaultError::Other(format!(
                    "failed to add the DNS-over-TCP redirect in {label}: {}",
                    error_chain(&e)
                ))
            })?;
        let helper =
            crate::procinfo::ProcInfo::read(table.pid() as i32).map(|p| UndoAction::KillHelper {
                pid: p.pid,
                start_time: p.start_time,
            });
        Ok(Box::new(DnsInjection {
            interceptor: Some(interceptor),
            table: Some(table),
            server: Some(server),
            helper,
            target: label,
            counters,
            since: Instant::now(),
            requested: self.spec.clone(),
            ended: None,
            tcp_lost: None,
        }))
    }

    fn requested(&self) -> String {
        self.spec.summary()
    }
}

/// The transport a query came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What was counted for the queries of one transport.
#[derive(Debug, Default)]
pub struct QueryCounts {
    pub seen: AtomicU64,
    pub matched: AtomicU64,
    pub answered_error: AtomicU64,
    pub answered_random: AtomicU64,
    pub delayed: AtomicU64,
    /// Queries passed unchanged (not matching, or not hit by `percent`).
    pub passed: AtomicU64,
    /// Messages to port 53 that were not a DNS query Havoc could read (passed unchanged).
    pub unreadable: AtomicU64,
}

/// What the rules and the interceptors counted (shared with the injection for the report).
#[derive(Debug, Default)]
pub struct DnsCounters {
    pub udp: QueryCounts,
    pub tcp: QueryCounts,
    /// TCP connections to port 53 taken by the redirect.
    pub tcp_connections: AtomicU64,
    /// TCP connections to the original server that could not be made or broke.
    pub tcp_upstream_errors: AtomicU64,
    /// TCP messages held, and their measured holds in nanoseconds.
    pub tcp_held: AtomicU64,
    pub tcp_hold_ns: AtomicU64,
}

impl DnsCounters {
    pub fn of(&self, t: Transport) -> &QueryCounts {
        match t {
            Transport::Udp => &self.udp,
            Transport::Tcp => &self.tcp,
        }
    }
}

/// What happens to one DNS query, whatever its transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// It goes to its server unchanged, now.
    Pass,
    /// It goes to its server unchanged after this hold.
    PassAfter(Duration),
    /// Havoc answers it with this DNS message (no transport framing), after `after`.
    Answer { dns: Vec<u8>, after: Duration },
}

/// The fault's rules: decides each query's fate and counts it. One per injection, shared by
/// both transports (behind a mutex: a decision takes a few microseconds).
pub struct DnsRules {
    spec: DNSChaos,
    rng: ChaCha8Rng,
    counters: Arc<DnsCounters>,
}

impl DnsRules {
    pub fn new(spec: DNSChaos, seed: u64, counters: Arc<DnsCounters>) -> Self {
        DnsRules {
            spec,
            rng: ChaCha8Rng::seed_from_u64(seed),
            counters,
        }
    }

    /// The fate of the DNS message `dns` (no transport framing) sent over `transport`; anything
    /// that is not a query Havoc can read passes.
    pub fn decide(&mut self, dns: &[u8], transport: Transport) -> Fate {
        let c = self.counters.of(transport);
        let query = match Message::from_vec(dns) {
            Ok(m) if m.metadata.message_type == MessageType::Query && !m.queries.is_empty() => m,
            _ => {
                c.unreadable.fetch_add(1, Ordering::Relaxed);
                return Fate::Pass;
            }
        };
        c.seen.fetch_add(1, Ordering::Relaxed);
        let q = &query.queries[0];
        if !self.spec.matches(&q.name().to_ascii()) {
            c.passed.fetch_add(1, Ordering::Relaxed);
            return Fate::Pass;
        }
        c.matched.fetch_add(1, Ordering::Relaxed);
        let pct = self.spec.percent.0;
        if pct < 100.0 && self.rng.random_range(0.0..100.0) >= pct {
            c.passed.fetch_add(1, Ordering::Relaxed);
            return Fate::Pass;
        }
        let delay = self.spec.delay.map(|d| d.0).unwrap_or(Duration::ZERO);
        let action = self.spec.action;
        match action {
            DnsAction::Delay => {
                c.delayed.fetch_add(1, Ordering::Relaxed);
                return Fate::PassAfter(delay);
            }
            DnsAction::Error => c.answered_error.fetch_add(1, Ordering::Relaxed),
            DnsAction::Random => c.answered_random.fetch_add(1, Ordering::Relaxed),
        };
        if !delay.is_zero() {
            c.delayed.fetch_add(1, Ordering::Relaxed);
        }
        Fate::Answer {
            dns: forge_answer(&query, action, &mut self.rng),
            after: delay,
        }
    }
}

/// The UDP side: decides each queued datagram with the shared [`DnsRules`].
pub struct DnsHandler {
    rules: Arc<Mutex<DnsRules>>,
}

impl DnsHandler {
    pub fn new(rules: Arc<Mutex<DnsRules>>) -> Self {
        DnsHandler { rules }
    }

    fn decide(&mut self, packet: &[u8], whole: bool) -> Decision {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let Some(udp) = whole.then(|| UdpDatagram::parse(packet)).flatten() else {
            rules
                .counters
                .udp
                .unreadable
                .fetch_add(1, Ordering::Relaxed);
            return Decision::Now(Verdict::Accept);
        };
        match rules.decide(udp.payload, Transport::Udp) {
            Fate::Pass => Decision::Now(Verdict::Accept),
            Fate::PassAfter(d) => Decision::Hold(d, Verdict::Accept),
            Fate::Answer { dns, after } => match answer_packet(&udp, &dns) {
                // Could not build an answer (cannot happen for a parsed query): let it pass.
                None => Decision::Now(Verdict::Accept),
                Some(p) if after.is_zero() => Decision::Now(Verdict::Answer(p)),
                Some(p) => Decision::Hold(after, Verdict::Answer(p)),
            },
        }
    }
}

impl Handler for DnsHandler {
    fn packet(&mut self, packet: &[u8], whole: bool) -> Decision {
        self.decide(packet, whole)
    }
}

/// The DNS answer Chaos Mesh's chaos DNS server gives: SERVFAIL for `error`; for `random`, one
/// random address with TTL 10 and the authoritative flag for `A` and `AAAA`, SERVFAIL for any
/// other type. The question, id, opcode and RD/CD flags are copied from the query.
pub fn forge_answer(query: &Message, action: DnsAction, rng: &mut impl Rng) -> Vec<u8> {
    let mut m = Message::response(query.metadata.id, query.metadata.op_code);
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.checking_disabled = query.metadata.checking_disabled;
    m.metadata.recursion_available = true;
    m.queries = query.queries.clone();
    if query.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.edns = Some(e);
    }
    let q = &query.queries[0];
    let rdata = match (action, q.query_type()) {
        (DnsAction::Random, RecordType::A) => {
            Some(RData::A(A(Ipv4Addr::from(rng.random::<u32>()))))
        }
        (DnsAction::Random, RecordType::AAAA) => {
            Some(RData::AAAA(AAAA(Ipv6Addr::from(rng.random::<u128>()))))
        }
        _ => None,
    };
    match rdata {
        Some(r) if query.metadata.op_code == OpCode::Query => {
            m.metadata.authoritative = true;
            m.answers
                .push(Record::from_rdata(q.name().clone(), RANDOM_TTL, r));
        }
        _ => m.metadata.response_code = ResponseCode::ServFail,
    }
    m.to_vec().unwrap_or_else(|_| {
        let mut e = Message::error_msg(
            query.metadata.id,
            query.metadata.op_code,
            ResponseCode::ServFail,
        );
        e.queries = query.queries.clone();
        e.to_vec().unwrap_or_default()
    })
}

/// The addressing of a UDP datagram (IPv4 or IPv6 without extension headers) and its payload.
#[derive(Debug)]
pub struct UdpDatagram<'a> {
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    sport: u16,
    dport: u16,
    payload: &'a [u8],
}

impl<'a> UdpDatagram<'a> {
    pub fn parse(p: &'a [u8]) -> Option<Self> {
        let (src, dst, l4): (std::net::IpAddr, std::net::IpAddr, &[u8]) = match p.first()? >> 4 {
            4 => {
                let ihl = ((p[0] & 0x0f) as usize) * 4;
                let frag = u16::from_be_bytes([*p.get(6)?, *p.get(7)?]);
                if p.len() < ihl || ihl < 20 || p[9] != 17 || frag & 0x3fff != 0 {
                    return None;
                }
                let total = (u16::from_be_bytes([p[2], p[3]]) as usize).min(p.len());
                (
                    Ipv4Addr::new(p[12], p[13], p[14], p[15]).into(),
                    Ipv4Addr::new(p[16], p[17], p[18], p[19]).into(),
                    p.get(ihl..total)?,
                )
            }
            6 => {
                if p.len() < 40 || p[6] != 17 {
                    return None;
                }
                let plen = u16::from_be_bytes([p[4], p[5]]) as usize;
                let s: [u8; 16] = p[8..24].try_into().ok()?;
                let d: [u8; 16] = p[24..40].try_into().ok()?;
                (
                    Ipv6Addr::from(s).into(),
                    Ipv6Addr::from(d).into(),
                    p.get(40..(40 + plen).min(p.len()))?,
                )
            }
            _ => return None,
        };
        if l4.len() < 8 {
            return None;
        }
        let ulen = (u16::from_be_bytes([l4[4], l4[5]]) as usize).clamp(8, l4.len());
        Some(UdpDatagram {
            src,
            dst,
            sport: u16::from_be_bytes([l4[0], l4[1]]),
            dport: u16::from_be_bytes([l4[2], l4[3]]),
            payload: &l4[8..ulen],
        })
    }
}

/// The IP packet that carries `dns` back from the query's server to its client (addresses and
/// ports swapped), with correct IP and UDP checksums.
pub fn answer_packet(query: &UdpDatagram<'_>, dns: &[u8]) -> Option<Vec<u8>> {
    let ulen = 8 + dns.len();
    let mut udp = Vec::with_capacity(ulen);
    udp.extend_from_slice(&query.dport.to_be_bytes());
    udp.extend_from_slice(&query.sport.to_be_bytes());
    udp.extend_from_slice(&u16::try_from(ulen).ok()?.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(dns);
    let (src, dst) = (query.dst, query.src);
    let mut pseudo = Vec::with_capacity(40);
    match (src, dst) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&(ulen as u16).to_be_bytes());
            let sum = checksum(&[&pseudo, &udp]);
            udp[6..8].copy_from_slice(&(if sum == 0 { 0xffff } else { sum }).to_be_bytes());
            let total = u16::try_from(20 + ulen).ok()?;
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&total.to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let hsum = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&hsum.to_be_bytes());
            ip.extend_from_slice(&udp);
            Some(ip)
        }
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(ulen as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
            let sum = checksum(&[&pseudo, &udp]);
            udp[6..8].copy_from_slice(&(if sum == 0 { 0xffff } else { sum }).to_be_bytes());
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&u16::try_from(ulen).ok()?.to_be_bytes());
            ip.extend_from_slice(&[17, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            ip.extend_from_slice(&udp);
            Some(ip)
        }
        _ => None,
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The Internet checksum (RFC 1071) of the concatenated parts.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

struct DnsInjection {
    interceptor: Option<Interceptor>,
    /// The TCP redirect and the listener it points at.
    table: Option<OwnedTable>,
    server: Option<NetnsServer>,
    helper: Option<UndoAction>,
    target: String,
    counters: Arc<DnsCounters>,
    since: Instant,
    requested: DNSChaos,
    ended: Option<Instant>,
    /// When the TCP redirect was found gone before recovery (its nft session ended).
    tcp_lost: Option<Instant>,
}

impl DnsInjection {
    /// Counts of both transports: (total, udp, tcp) for one field.
    fn count(&self, f: impl Fn(&QueryCounts) -> &AtomicU64) -> (u64, u64, u64) {
        let c = &self.counters;
        let (u, t) = (
            f(&c.udp).load(Ordering::Relaxed),
            f(&c.tcp).load(Ordering::Relaxed),
        );
        (u + t, u, t)
    }
}

impl Injection for DnsInjection {
    fn late_undo(&self) -> Vec<UndoAction> {
        self.helper.iter().cloned().collect()
    }

    fn in_effect_since(&self) -> Option<Instant> {
        Some(self.since)
    }

    fn in_effect_until(&self) -> Option<Instant> {
        self.ended
    }

    fn tick(&mut self) -> Result<(), FaultError> {
        // The TCP redirect lives only as long as its nft session: if that died, TCP is unfaulted.
        if self.tcp_lost.is_none() {
            if let Some(t) = self.table.as_mut() {
                if t.list().is_err() {
                    self.tcp_lost = Some(Instant::now());
                    return Err(FaultError::Other(format!(
                        "the DNS-over-TCP redirect in {} is gone (its nft session ended)",
                        self.target
                    )));
                }
            }
        }
        Ok(())
    }

    fn effect(&self) -> Effect {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (seen, udp_seen, tcp_seen) = self.count(|q| &q.seen);
        let (matched, udp_matched, tcp_matched) = self.count(|q| &q.matched);
        let (err, udp_err, tcp_err) = self.count(|q| &q.answered_error);
        let (rnd, udp_rnd, tcp_rnd) = self.count(|q| &q.answered_random);
        let (delayed, udp_delayed, tcp_delayed) = self.count(|q| &q.delayed);
        let (passed, udp_passed, tcp_passed) = self.count(|q| &q.passed);
        let (unreadable, _, _) = self.count(|q| &q.unreadable);
        let stats = self.interceptor.as_ref().map(|i| i.stats());
        let hit = err
            + rnd
            + if self.requested.action == DnsAction::Delay {
                delayed
            } else {
                0
            };
        let (udp_hit, tcp_hit) = match self.requested.action {
            DnsAction::Error => (udp_err, tcp_err),
            DnsAction::Random => (udp_rnd, tcp_rnd),
            DnsAction::Delay => (udp_delayed, tcp_delayed),
        };
        let mut summary = format!(
            "{seen} queries seen ({udp_seen} UDP, {tcp_seen} TCP over {} connection(s)), {matched} matched ({udp_matched} UDP, {tcp_matched} TCP), ",
            get(&c.tcp_connections)
        );
        match self.requested.action {
            DnsAction::Error => summary.push_str(&format!("{err} answered SERVFAIL")),
            DnsAction::Random => summary.push_str(&format!("{rnd} answered at random")),
            DnsAction::Delay => summary.push_str(&format!("{delayed} delayed")),
        }
        summary.push_str(&format!(" ({udp_hit} UDP, {tcp_hit} TCP)"));
        if matched > 0 && self.requested.percent.0 < 100.0 {
            summary.push_str(&format!(
                " ({:.1}% of matched, {}% requested)",
                100.0 * hit as f64 / matched as f64,
                self.requested.percent
            ));
        }
        let mut e = Effect::default()
            .metric("dns_queries_seen", seen as f64)
            .metric("dns_queries_matched", matched as f64)
            .metric("dns_answered_error", err as f64)
            .metric("dns_answered_random", rnd as f64)
            .metric("dns_delayed", delayed as f64)
            .metric("dns_passed", passed as f64)
            .metric("dns_unreadable_passed", unreadable as f64)
            .metric("dns_udp_queries_seen", udp_seen as f64)
            .metric("dns_udp_queries_matched", udp_matched as f64)
            .metric("dns_udp_answered_error", udp_err as f64)
            .metric("dns_udp_answered_random", udp_rnd as f64)
            .metric("dns_udp_delayed", udp_delayed as f64)
            .metric("dns_udp_passed", udp_passed as f64)
            .metric("dns_tcp_queries_seen", tcp_seen as f64)
            .metric("dns_tcp_queries_matched", tcp_matched as f64)
            .metric("dns_tcp_answered_error", tcp_err as f64)
            .metric("dns_tcp_answered_random", tcp_rnd as f64)
            .metric("dns_tcp_delayed", tcp_delayed as f64)
            .metric("dns_tcp_passed", tcp_passed as f64)
            .metric("dns_tcp_connections", get(&c.tcp_connections) as f64)
            .metric(
                "dns_tcp_upstream_errors",
                get(&c.tcp_upstream_errors) as f64,
            );
        // Mean hold over both transports: the queue's measured holds and the TCP sleeps.
        let (mut held, mut hold_ns) = (get(&c.tcp_held), get(&c.tcp_hold_ns) as f64);
        if let Some(s) = &stats {
            if let Some(h) = s.mean_hold {
                held += s.released;
                hold_ns += h.as_nanos() as f64 * s.released as f64;
            }
        }
        if held > 0 {
            let ms = hold_ns / held as f64 / 1e6;
            e = e.metric("dns_delay_mean_ms", ms);
            summary.push_str(&format!(", mean added {ms:.1} ms"));
        }
        if let Some(s) = stats {
            if let Some(m) = s.mean_immediate {
                e = e.metric("dns_interceptor_added_us", m.as_secs_f64() * 1e6);
            }
            e = e.metric("dns_answer_errors", s.answer_errors as f64);
        }
        summary.push_str(&format!(
            ", {passed} passed unchanged; DNS over TCP to IPv6 servers is not intercepted"
        ));
        if get(&c.tcp_upstream_errors) > 0 {
            summary.push_str(&format!(
                "; {} TCP connection(s) to the server failed",
                get(&c.tcp_upstream_errors)
            ));
        }
        e.summary = summary;
        e
    }

    fn recover(&mut self) -> Result<(), FaultError> {
        // The TCP redirect first: new connections go straight to the server from here on.
        let mut first_err = None;
        if let Some(t) = self.table.take() {
            if let Err(e) = t.close() {
                first_err.get_or_insert(FaultError::Other(format!(
                    "failed to remove the DNS-over-TCP redirect in {}: {}",
                    self.target,
                    error_chain(&e)
                )));
            }
            self.ended = Some(Instant::now());
        }
        if let Some(mut i) = self.interceptor.take() {
            let r = i.stop();
            let udp_end = i.effect_ended_at().unwrap_or_else(Instant::now);
            self.ended = Some(self.ended.map_or(udp_end, |t| t.max(udp_end)));
            // Keep the stats readable for the report.
            self.interceptor = Some(i);
            if let Err(e) = r {
                first_err.get_or_insert(FaultError::Other(format!(
                    "failed to stop DNS interception: {}",
                    error_chain(&e)
                )));
            }
        }
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for DnsInjection {
    fn drop(&mut self) {
        let _ = self.recover();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn query(name: &str, t: RecordType) -> Message {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.queries
            .push(Query::query(Name::from_ascii(name).unwrap(), t));
        m
    }

    #[test]
    fn answers_are_chaos_mesh_s() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let q = query("a.example.com.", RecordType::A);
        let e = Message::from_vec(&forge_answer(&q, DnsAction::Error, &mut rng)).unwrap();
        assert_eq!(e.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(e.metadata.id, q.metadata.id);
        assert_eq!(e.queries, q.queries);
        let r = Message::from_vec(&forge_answer(&q, DnsAction::Random, &mut rng)).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].ttl, RANDOM_TTL);
        assert!(matches!(r.answers[0].data, RData::A(_)));
        let q6 = query("a.example.com.", RecordType::AAAA);
        let r6 = Message::from_vec(&forge_answer(&q6, DnsAction::Random, &mut rng)).unwrap();
        assert!(matches!(r6.answers[0].data, RData::AAAA(_)));
        let mx = query("a.example.com.", RecordType::MX);
        let rmx = Message::from_vec(&forge_answer(&mx, DnsAction::Random, &mut rng)).unwrap();
        assert_eq!(rmx.metadata.response_code, ResponseCode::ServFail);
    }

    #[test]
    fn answer_packet_swaps_addressing_and_checksums_verify() {
        // A real IPv4/UDP query header: 10.0.0.1:40000 -> 10.0.0.2:53.
        let dns = query("x.test.", RecordType::A).to_vec().unwrap();
        let fake = UdpDatagram {
            src: Ipv4Addr::new(10, 0, 0, 1).into(),
            dst: Ipv4Addr::new(10, 0, 0, 2).into(),
            sport: 40000,
            dport: 53,
            payload: &dns,
        };
        let pkt = answer_packet(&fake, &dns).unwrap();
        assert_eq!(checksum(&[&pkt[..20]]), 0, "IPv4 header checksum");
        let back = UdpDatagram::parse(&pkt).unwrap();
        assert_eq!(back.src, fake.dst);
        assert_eq!(back.dst, fake.src);
        assert_eq!((back.sport, back.dport), (53, 40000));
        assert_eq!(back.payload, &dns[..]);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&[10, 0, 0, 2, 10, 0, 0, 1, 0, 17]);
        pseudo.extend_from_slice(&((8 + dns.len()) as u16).to_be_bytes());
        assert_eq!(checksum(&[&pseudo, &pkt[20..]]), 0, "UDP checksum");
    }
}
