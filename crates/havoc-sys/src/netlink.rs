//! Interfaces of the current network namespace, read over rtnetlink (a link dump), so that
//! finding a fault's devices costs one netlink round trip instead of starting `ip` (4-25 ms a time,
//! and a network fault needs several). Call it on a thread that is inside the wanted namespace
//! ([`crate::netns::NetNs::run`]): the socket belongs to the namespace it is created in.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// One interface, as `ip -j link show` would describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    pub index: u32,
    /// `IFLA_LINK`: for a veth, the ifindex of its peer (in the peer's namespace).
    pub link_index: Option<u32>,
    /// `IFLA_LINK_NETNSID`: set when the peer lives in another namespace.
    pub link_netnsid: Option<i32>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    pub loopback: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("failed to {op} the rtnetlink socket")]
    Socket {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed rtnetlink reply: {0}")]
    Decode(String),
    #[error("the kernel refused the link dump: {0}")]
    Refused(std::io::Error),
}

fn sock(op: &'static str) -> impl FnOnce(std::io::Error) -> NetlinkError {
    move |source| NetlinkError::Socket { op, source }
}

/// Every interface of the calling thread's network namespace.
pub fn links() -> Result<Vec<LinkInfo>, NetlinkError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(sock("open"))?;
    socket.bind_auto().map_err(sock("bind"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(sock("connect"))?;
    let mut req = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(LinkMessage::default())),
    );
    req.header.flags = NLM_F_DUMP | NLM_F_REQUEST;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0u8; req.header.length as usize];
    req.serialize(&mut buf);
    socket.send(&buf, 0).map_err(sock("send on"))?;
    let mut out = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket
            .recv(&mut &mut rx[..], 0)
            .map_err(sock("receive on"))?;
        let mut offset = 0;
        while offset < size {
            let msg: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&rx[offset..size])
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(NetlinkError::Refused(e.to_io()));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    out.push(info(link))
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

fn info(link: LinkMessage) -> LinkInfo {
    let mut l = LinkInfo {
        name: String::new(),
        index: link.header.index,
        link_index: None,
        link_netnsid: None,
        up: link.header.flags.contains(LinkFlags::Up),
        loopback: link.header.link_layer_type == LinkLayerType::Loopback,
    };
    for a in link.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n,
            LinkAttribute::Link(i) => l.link_index = Some(i),
            LinkAttribute::LinkNetNsId(id) => l.link_netnsid = Some(id),
            _ => {}
        }
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_lists_loopback_like_ip_does() {
        let ls = links().expect("link dump");
        let lo = ls.iter().find(|l| l.name == "lo").expect("lo listed");
        assert!(lo.loopback);
        assert_eq!(lo.index, 1);
        // Same names as `ip -o link show`, in the same namespace.
        if let Ok(out) = std::process::Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            for l in &ls {
                assert!(
                    text.contains(&format!(": {}", l.name)),
                    "{} not in {text}",
                    l.name
                );
            }
            assert_eq!(text.lines().count(), ls.len());
        }
    }
}
