//! A minimal nfnetlink_queue client, spoken directly over an `AF_NETLINK` socket.
//!
//! Why not the `nfq` crate: it hides its socket (no fd to poll on, no way to raise the receive
//! buffer, which KERNEL.md shows is mandatory), always copies payloads and sends one verdict per
//! syscall. The delay engine needs none of the payload (iptables already matched the packet), so
//! this client asks for metadata only (`NFQNL_COPY_META`), keeps GSO super-packets whole
//! (`NFQA_CFG_F_GSO`), queues verdicts into one buffer that is sent with a single `send(2)`, and
//! uses `NFQNL_MSG_VERDICT_BATCH` where a whole prefix of the kernel's queue can be accepted at once.
//!
//! The socket is created by the caller on a thread inside the target network namespace; the queue
//! it binds belongs to that namespace for the socket's whole life.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    bind, netlink, recv, send, socket_with, sockopt, AddressFamily, RecvFlags, SendFlags,
    SocketFlags, SocketType,
};

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;

const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_META: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CAP_LEN: u16 = 13;

const NFQA_CFG_F_FAIL_OPEN: u32 = 1 << 0;
const NFQA_CFG_F_GSO: u32 = 1 << 2;

/// `NF_ACCEPT`: the packet continues through the stack.
pub(crate) const NF_ACCEPT: u32 = 1;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// Errors of the nfnetlink_queue client.
#[derive(Debug, thiserror::Error)]
pub enum NfqError {
    #[error("failed to create the NETLINK_NETFILTER socket")]
    Socket(#[source] std::io::Error),
    #[error("failed to bind the NETLINK_NETFILTER socket")]
    BindSocket(#[source] std::io::Error),
    #[error("failed to send a configuration message for queue {queue}")]
    SendConfig {
        queue: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel refused to bind queue {queue} (another process may own it)")]
    BindQueue {
        queue: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("no acknowledgement from the kernel for queue {queue} configuration")]
    NoAck { queue: u16 },
}

/// What one received netlink message was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A queued packet with its id.
    Packet(u32),
    /// An error acknowledgement (`errno` is positive; 0 is a plain ACK).
    Ack(i32),
}

/// A netlink socket bound to one nfnetlink queue.
pub(crate) struct QueueSocket {
    fd: OwnedFd,
    queue: u16,
    seq: u32,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// Messages currently in `tx`.
    pending: usize,
}

impl QueueSocket {
    /// Opens a non-blocking netfilter netlink socket in the calling thread's network namespace,
    /// with a receive buffer of `rcvbuf` bytes (`SO_RCVBUFFORCE`, falling back to `SO_RCVBUF`).
    pub(crate) fn open(rcvbuf: usize) -> Result<Self, NfqError> {
        let fd = socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(netlink::NETFILTER),
        )
        .map_err(|e| NfqError::Socket(e.into()))?;
        if let Err(e) = sockopt::set_socket_recv_buffer_size_force(&fd, rcvbuf) {
            tracing::warn!(error = %e, "SO_RCVBUFFORCE failed; falling back to SO_RCVBUF");
            let _ = sockopt::set_socket_recv_buffer_size(&fd, rcvbuf);
        }
        bind(&fd, &netlink::SocketAddrNetlink::new(0, 0))
            .map_err(|e| NfqError::BindSocket(e.into()))?;
        Ok(Self {
            fd,
            queue: 0,
            seq: 1,
            rx: vec![0u8; 1 << 16],
            tx: Vec::with_capacity(1 << 16),
            pending: 0,
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The receive buffer size the kernel granted (it reports twice the requested value).
    pub(crate) fn recv_buffer_size(&self) -> usize {
        sockopt::socket_recv_buffer_size(&self.fd).unwrap_or(0)
    }

    /// Binds `queue`: metadata-only copies, GSO packets kept whole, at most `maxlen` packets held
    /// in the kernel, and with `fail_open` packets beyond that (or beyond the socket buffer) are
    /// accepted instead of dropped.
    pub(crate) fn bind_queue(
        &mut self,
        queue: u16,
        maxlen: u32,
        fail_open: bool,
    ) -> Result<(), NfqError> {
        self.bind_queue_with(queue, maxlen, fail_open, None)
    }

    /// Like [`bind_queue`](Self::bind_queue), but with `copy` = `Some(range)` the kernel copies
    /// up to `range` bytes of each packet (from its network header) to us, for
    /// [`recv_packets`](Self::recv_packets).
    pub(crate) fn bind_queue_with(
        &mut self,
        queue: u16,
        maxlen: u32,
        fail_open: bool,
        copy: Option<u32>,
    ) -> Result<(), NfqError> {
        self.queue = queue;
        let mut flags = NFQA_CFG_F_GSO;
        if fail_open {
            flags |= NFQA_CFG_F_FAIL_OPEN;
        }
        let mut msg = Vec::with_capacity(96);
        let seq = self.next_seq();
        let start = begin_msg(
            &mut msg,
            NFQNL_MSG_CONFIG,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            queue,
        );
        put_attr(&mut msg, NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0]);
        let mut params = [0u8; 5];
        params[..4].copy_from_slice(&copy.unwrap_or(0xffff).to_be_bytes());
        params[4] = if copy.is_some() {
            NFQNL_COPY_PACKET
        } else {
            NFQNL_COPY_META
        };
        put_attr(&mut msg, NFQA_CFG_PARAMS, &params);
        put_attr(&mut msg, NFQA_CFG_QUEUE_MAXLEN, &maxlen.to_be_bytes());
        put_attr(
            &mut msg,
            NFQA_CFG_MASK,
            &(NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN).to_be_bytes(),
        );
        put_attr(&mut msg, NFQA_CFG_FLAGS, &flags.to_be_bytes());
        end_msg(&mut msg, start);
        send(&self.fd, &msg, SendFlags::empty()).map_err(|e| NfqError::SendConfig {
            queue,
            source: e.into(),
        })?;
        self.wait_ack(seq)
    }

    /// Unbinds the queue. Packets the kernel still holds for it are dropped by the kernel, so
    /// accept them first.
    pub(crate) fn unbind_queue(&mut self) -> Result<(), NfqError> {
        let queue = self.queue;
        let mut msg = Vec::with_capacity(32);
        let seq = self.next_seq();
        let start = begin_msg(
            &mut msg,
            NFQNL_MSG_CONFIG,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            queue,
        );
        put_attr(&mut msg, NFQA_CFG_CMD, &[NFQNL_CFG_CMD_UNBIND, 0, 0, 0]);
        end_msg(&mut msg, start);
        send(&self.fd, &msg, SendFlags::empty()).map_err(|e| NfqError::SendConfig {
            queue,
            source: e.into(),
        })?;
        self.wait_ack(seq)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Waits (bounded: 2 s) for the ACK of message `seq`, ignoring queued packets (there are none
    /// before the iptables rule exists; during unbind they were all accepted already).
    fn wait_ack(&mut self, seq: u32) -> Result<(), NfqError> {
        let queue = self.queue;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match recv(&self.fd, &mut self.rx[..], RecvFlags::empty()) {
                Ok((n, _)) => {
                    let mut result = None;
                    for_each_msg(&self.rx[..n], |hdr_seq, ev| {
                        if let Event::Ack(errno) = ev {
                            if hdr_seq == seq {
                                result = Some(errno);
                            }
                        }
                    });
                    match result {
                        Some(0) => return Ok(()),
                        Some(errno) => {
                            return Err(NfqError::BindQueue {
                                queue,
                                source: std::io::Error::from_raw_os_error(errno),
                            })
                        }
                        None => {}
                    }
                }
                Err(Errno::WOULDBLOCK) | Err(Errno::INTR) | Err(Errno::NOBUFS) => {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        return Err(NfqError::NoAck { queue });
                    }
                    let left = deadline - now;
                    let ts = rustix::time::Timespec {
                        tv_sec: left.as_secs() as i64,
                        tv_nsec: left.subsec_nanos() as i64,
                    };
                    let mut fds = [rustix::event::PollFd::new(
                        &self.fd,
                        rustix::event::PollFlags::IN,
                    )];
                    let _ = rustix::event::poll(&mut fds, Some(&ts));
                }
                Err(e) => {
                    return Err(NfqError::BindQueue {
                        queue,
                        source: e.into(),
                    })
                }
            }
        }
    }

    /// Receives one datagram without blocking and calls `f` for each message in it.
    /// `Ok(false)` means nothing was waiting.
    pub(crate) fn recv_events(&mut self, mut f: impl FnMut(Event)) -> Result<bool, Errno> {
        match recv(&self.fd, &mut self.rx[..], RecvFlags::empty()) {
            Ok((n, _)) => {
                for_each_msg(&self.rx[..n], |_, ev| f(ev));
                Ok(true)
            }
            Err(Errno::WOULDBLOCK) | Err(Errno::INTR) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Receives one datagram without blocking and calls `f(id, payload, whole)` for each queued
    /// packet in it (`payload` is empty without a copying bind; `whole` is false when the kernel
    /// cut the copy short). `Ok(false)` means nothing was waiting.
    pub(crate) fn recv_packets(
        &mut self,
        mut f: impl FnMut(u32, &[u8], bool),
    ) -> Result<bool, Errno> {
        match recv(&self.fd, &mut self.rx[..], RecvFlags::empty()) {
            Ok((n, _)) => {
                for_each_packet(&self.rx[..n.min(self.rx.len())], &mut f);
                Ok(true)
            }
            Err(Errno::WOULDBLOCK) | Err(Errno::INTR) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Queues a verdict for one packet (sent by [`flush`](Self::flush)).
    pub(crate) fn push_verdict(&mut self, id: u32, verdict: u32) {
        self.push(NFQNL_MSG_VERDICT, id, verdict);
    }

    /// Queues a verdict for every packet of the kernel's queue up to and including `id`.
    pub(crate) fn push_batch_verdict(&mut self, id: u32, verdict: u32) {
        self.push(NFQNL_MSG_VERDICT_BATCH, id, verdict);
    }

    fn push(&mut self, msg_type: u16, id: u32, verdict: u32) {
        let seq = self.next_seq();
        let start = begin_msg(&mut self.tx, msg_type, NLM_F_REQUEST, seq, self.queue);
        let mut hdr = [0u8; 8];
        hdr[..4].copy_from_slice(&verdict.to_be_bytes());
        hdr[4..].copy_from_slice(&id.to_be_bytes());
        put_attr(&mut self.tx, NFQA_VERDICT_HDR, &hdr);
        end_msg(&mut self.tx, start);
        self.pending += 1;
        if self.tx.len() > 60_000 {
            let _ = self.flush();
        }
    }

    /// Sends every queued verdict with one `send(2)`; returns how many messages were sent.
    pub(crate) fn flush(&mut self) -> Result<usize, Errno> {
        if self.tx.is_empty() {
            return Ok(0);
        }
        let n = self.pending;
        let r = loop {
            match send(&self.fd, &self.tx, SendFlags::empty()) {
                Err(Errno::INTR) => continue,
                Err(Errno::WOULDBLOCK) => {
                    let mut fds = [rustix::event::PollFd::new(
                        &self.fd,
                        rustix::event::PollFlags::OUT,
                    )];
                    let ts = rustix::time::Timespec {
                        tv_sec: 0,
                        tv_nsec: 10_000_000,
                    };
                    let _ = rustix::event::poll(&mut fds, Some(&ts));
                    continue;
                }
                other => break other,
            }
        };
        self.tx.clear();
        self.pending = 0;
        r.map(|_| n)
    }
}

fn begin_msg(buf: &mut Vec<u8>, msg: u16, flags: u16, seq: u32, queue: u16) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by end_msg
    buf.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
                                                // nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id = queue number (big endian).
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&queue.to_be_bytes());
    start
}

fn end_msg(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + (align4(len) - len), 0);
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2)
        .map(|s| u16::from_ne_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

/// Walks the netlink messages of one datagram: `f(seq, event)` for packets and acks.
fn for_each_msg(mut buf: &[u8], mut f: impl FnMut(u32, Event)) {
    while buf.len() >= NLMSG_HDRLEN {
        let (Some(len), Some(kind), Some(seq)) = (u32_at(buf, 0), u16_at(buf, 4), u32_at(buf, 8))
        else {
            return;
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return;
        }
        let body = &buf[NLMSG_HDRLEN..len];
        if kind == NLMSG_ERROR {
            if let Some(err) = u32_at(body, 0) {
                f(seq, Event::Ack(-(err as i32)));
            }
        } else if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
            if let Some(id) = packet_id(body) {
                f(seq, Event::Packet(id));
            }
        }
        let next = align4(len).min(buf.len());
        buf = &buf[next..];
    }
}

/// Walks the queued packets of one datagram: `f(id, payload, whole)`.
fn for_each_packet(mut buf: &[u8], f: &mut impl FnMut(u32, &[u8], bool)) {
    while buf.len() >= NLMSG_HDRLEN {
        let (Some(len), Some(kind)) = (u32_at(buf, 0), u16_at(buf, 4)) else {
            return;
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return;
        }
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
            let body = &buf[NLMSG_HDRLEN..len];
            if let Some(id) = packet_id(body) {
                let (payload, whole) = packet_payload(body);
                f(id, payload, whole);
            }
        }
        let next = align4(len).min(buf.len());
        buf = &buf[next..];
    }
}

/// The `NFQA_PAYLOAD` of a packet message and whether it is whole (no `NFQA_CAP_LEN`).
fn packet_payload(body: &[u8]) -> (&[u8], bool) {
    let mut payload: &[u8] = &[];
    let mut whole = true;
    let mut attrs = body.get(NFGENMSG_LEN..).unwrap_or(&[]);
    while attrs.len() >= 4 {
        let (Some(len), Some(kind)) = (u16_at(attrs, 0), u16_at(attrs, 2)) else {
            break;
        };
        let len = len as usize;
        if len < 4 || len > attrs.len() {
            break;
        }
        match kind & 0x3fff {
            NFQA_PAYLOAD => payload = &attrs[4..len],
            NFQA_CAP_LEN => whole = false,
            _ => {}
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    (payload, whole)
}

fn packet_id(body: &[u8]) -> Option<u32> {
    let mut attrs = body.get(NFGENMSG_LEN..)?;
    while attrs.len() >= 4 {
        let len = u16_at(attrs, 0)? as usize;
        let kind = u16_at(attrs, 2)? & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == NFQA_PACKET_HDR {
            let p = attrs.get(4..8)?;
            return Some(u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_message_layout_matches_the_kernel_abi() {
        let mut buf = Vec::new();
        let start = begin_msg(&mut buf, NFQNL_MSG_VERDICT, NLM_F_REQUEST, 7, 0x0102);
        put_attr(&mut buf, NFQA_VERDICT_HDR, &[0, 0, 0, 1, 0, 0, 0, 42]);
        end_msg(&mut buf, start);
        assert_eq!(buf.len(), 32);
        assert_eq!(u32_at(&buf, 0), Some(32));
        assert_eq!(u16_at(&buf, 4), Some(0x0301));
        assert_eq!(&buf[16..20], &[0, 0, 1, 2]);
        assert_eq!(u16_at(&buf, 20), Some(12));
        assert_eq!(u16_at(&buf, 22), Some(NFQA_VERDICT_HDR));
    }

    #[test]
    fn parses_packet_ids_and_acks() {
        let mut buf = Vec::new();
        let start = begin_msg(&mut buf, NFQNL_MSG_PACKET, 0, 0, 0);
        put_attr(&mut buf, NFQA_PACKET_HDR, &[0, 0, 1, 0, 8, 0, 0]);
        end_msg(&mut buf, start);
        let start = buf.len();
        buf.extend_from_slice(&36u32.to_ne_bytes());
        buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        buf.extend_from_slice(&0u16.to_ne_bytes());
        buf.extend_from_slice(&9u32.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&(-16i32).to_ne_bytes());
        buf.resize(start + 36, 0);
        let mut seen = Vec::new();
        for_each_msg(&buf, |seq, ev| seen.push((seq, ev)));
        assert_eq!(seen, vec![(0, Event::Packet(256)), (9, Event::Ack(16))]);
    }

    #[test]
    fn parses_packet_payloads() {
        let mut buf = Vec::new();
        let start = begin_msg(&mut buf, NFQNL_MSG_PACKET, 0, 0, 0);
        put_attr(&mut buf, NFQA_PACKET_HDR, &[0, 0, 0, 5, 8, 0, 0]);
        put_attr(&mut buf, NFQA_PAYLOAD, &[0x45, 1, 2]);
        end_msg(&mut buf, start);
        let start = begin_msg(&mut buf, NFQNL_MSG_PACKET, 0, 0, 0);
        put_attr(&mut buf, NFQA_PACKET_HDR, &[0, 0, 0, 6, 8, 0, 0]);
        put_attr(&mut buf, NFQA_PAYLOAD, &[0x45]);
        put_attr(&mut buf, NFQA_CAP_LEN, &[0, 0, 5, 0]);
        end_msg(&mut buf, start);
        let mut seen = Vec::new();
        for_each_packet(&buf, &mut |id, p: &[u8], whole| {
            seen.push((id, p.to_vec(), whole))
        });
        assert_eq!(
            seen,
            vec![(5, vec![0x45, 1, 2], true), (6, vec![0x45], false)]
        );
    }

    #[test]
    fn config_params_attribute_is_padded() {
        let mut buf = Vec::new();
        put_attr(
            &mut buf,
            NFQA_CFG_PARAMS,
            &[0, 0, 0xff, 0xff, NFQNL_COPY_META],
        );
        assert_eq!(buf.len(), 12);
        assert_eq!(u16_at(&buf, 0), Some(9));
    }
}
