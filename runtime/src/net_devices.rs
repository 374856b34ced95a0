//! `linux.netDevices`: network interfaces of the runtime's namespace moved into the container's
//! network namespace, renamed on the way, keeping their addresses and their up state.
//!
//! The runtime does it over rtnetlink while the init sets up its mounts: one RTM_NEWLINK with
//! IFLA_NET_NS_FD and IFLA_IFNAME moves and renames atomically (no moment with a clashing name
//! in the container), then the addresses the kernel dropped on the move are added again from
//! inside the namespace. When the container's namespace goes away, the kernel returns physical
//! devices to the initial namespace and destroys virtual ones (veth, macvlan).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use oci_spec::runtime::{Linux, LinuxNetDevice};

use crate::error::{Context, Error, Result};
use crate::namespaces::{NamespaceKind, NamespacePlan};

/// IFNAMSIZ less the terminating NUL.
const MAX_NAME: usize = 15;

/// Checks `linux.netDevices` before anything exists: valid names on both sides, no two devices
/// with the same name in the container, and a network namespace other than the runtime's.
pub(crate) fn validate(linux: &Linux, plan: &NamespacePlan) -> Result<()> {
    let Some(devices) = linux.net_devices().as_ref().filter(|d| !d.is_empty()) else {
        return Ok(());
    };
    if !plan.has(NamespaceKind::Network) {
        return Err(Error::config(
            "config.json",
            "linux.netDevices",
            "moving devices needs a network namespace of the container's own",
        ));
    }
    let mut inside: Vec<&str> = Vec::new();
    for (host, device) in sorted(devices) {
        let field = format!("linux.netDevices.{host}");
        check_name(host).map_err(|why| Error::config("config.json", &field, why))?;
        let name = container_name(host, device);
        check_name(name)
            .map_err(|why| Error::config("config.json", format!("{field}.name"), why))?;
        if inside.contains(&name) {
            return Err(Error::config(
                "config.json",
                format!("{field}.name"),
                format!("{name:?} is already taken by another device"),
            ));
        }
        inside.push(name);
    }
    Ok(())
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{name:?} is not a valid interface name (1 to {MAX_NAME} bytes; no '/', ':' or spaces)"
        ));
    }
    Ok(())
}

fn container_name<'a>(host: &'a str, device: &'a LinuxNetDevice) -> &'a str {
    device
        .name()
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(host)
}

fn sorted(devices: &HashMap<String, LinuxNetDevice>) -> Vec<(&str, &LinuxNetDevice)> {
    let mut v: Vec<_> = devices.iter().map(|(k, d)| (k.as_str(), d)).collect();
    v.sort_by_key(|(k, _)| *k);
    v
}

/// Moves every device of `linux.netDevices` into the network namespace `netns`.
pub(crate) fn move_into(linux: &Linux, netns: &OwnedFd) -> Result<()> {
    let Some(devices) = linux.net_devices().as_ref().filter(|d| !d.is_empty()) else {
        return Ok(());
    };
    let host = Rtnl::open().op(|| "open rtnetlink".to_string())?;
    let mut moved = Vec::new();
    for (name, device) in sorted(devices) {
        let what = || format!("linux.netDevices: {name}");
        let link = host.link_by_name(name).op(what)?;
        let addresses = host.addresses(link.header.index).op(what)?;
        let new_name = container_name(name, device);
        let mut msg = LinkMessage::default();
        msg.header.index = link.header.index;
        msg.attributes
            .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
        msg.attributes
            .push(LinkAttribute::IfName(new_name.to_string()));
        host.ack(RouteNetlinkMessage::SetLink(msg), 0)
            .op(|| format!("{}: move into the container as {new_name}", what()))?;
        moved.push((
            new_name,
            link.header.flags.contains(LinkFlags::Up),
            addresses,
        ));
    }
    // The rest happens inside: a netlink socket talks to the namespace it was made in.
    let _inside = crate::namespaces::NamespaceSwitch::enter(netns, NamespaceKind::Network)?;
    let rtnl = Rtnl::open().op(|| "open rtnetlink in the container's namespace".to_string())?;
    for (name, up, addresses) in moved {
        let what = || format!("linux.netDevices: {name} in the container");
        let index = rtnl.link_by_name(name).op(what)?.header.index;
        for mut addr in addresses {
            addr.header.index = index;
            relabel(&mut addr, name);
            rtnl.ack(
                RouteNetlinkMessage::NewAddress(addr),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .op(|| format!("{}: restore its addresses", what()))?;
        }
        if up {
            let mut msg = LinkMessage::default();
            msg.header.index = index;
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
            rtnl.ack(RouteNetlinkMessage::SetLink(msg), 0)
                .op(|| format!("{}: set up", what()))?;
        }
    }
    Ok(())
}

/// A route netlink socket used one request at a time.
struct Rtnl {
    socket: Socket,
    sequence: std::cell::Cell<u32>,
}

impl Rtnl {
    fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl {
            socket,
            sequence: std::cell::Cell::new(0),
        })
    }

    /// Sends one request and collects the replies (a dump's messages; nothing for an ACK).
    fn request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.sequence.get().wrapping_add(1);
        self.sequence.set(seq);
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = NLM_F_REQUEST | flags;
        packet.header.sequence_number = seq;
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        let mut rx = vec![0u8; 64 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut rx[..], 0)?;
            let mut offset = 0;
            while offset < n {
                let reply: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&rx[offset..n])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == seq {
                    match reply.payload {
                        NetlinkPayload::Done(_) => return Ok(replies),
                        NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                        NetlinkPayload::Error(_) => return Ok(replies),
                        NetlinkPayload::InnerMessage(m) => {
                            replies.push(m);
                            if !dump {
                                return Ok(replies);
                            }
                        }
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }

    fn ack(&self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.request(msg, NLM_F_ACK | flags).map(drop)
    }

    fn link_by_name(&self, name: &str) -> io::Result<LinkMessage> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        let replies = self
            .request(RouteNetlinkMessage::GetLink(msg), 0)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ENODEV) {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("no network device {name:?}"),
                    )
                } else {
                    e
                }
            })?;
        replies
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no network device {name:?}"),
                )
            })
    }

    /// The addresses of link `index`, ready to be added again (kernel-managed ones such as
    /// IPv6 link-local come back on their own).
    fn addresses(&self, index: u32) -> io::Result<Vec<AddressMessage>> {
        let replies = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => Some(a),
                _ => None,
            })
            .filter(|a| !is_link_local_v6(a))
            .map(|mut a| {
                // Lifetimes and counters are the kernel's to report, not ours to set.
                a.attributes
                    .retain(|at| !matches!(at, AddressAttribute::CacheInfo(_)));
                a
            })
            .collect())
    }
}

/// IPv4 labels carry the device name (`eth0`, `eth0:1`): the old one goes with the move.
fn relabel(addr: &mut AddressMessage, new_name: &str) {
    for at in &mut addr.attributes {
        if let AddressAttribute::Label(label) = at {
            let suffix = label
                .find(':')
                .map(|i| label[i..].to_string())
                .unwrap_or_default();
            let mut relabelled = format!("{new_name}{suffix}");
            relabelled.truncate(MAX_NAME);
            *label = relabelled;
        }
    }
}

fn is_link_local_v6(a: &AddressMessage) -> bool {
    a.attributes.iter().any(|at| match at {
        AddressAttribute::Address(std::net::IpAddr::V6(v6)) => v6.segments()[0] & 0xffc0 == 0xfe80,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(check_name("eth0").is_ok());
        assert!(check_name("a23456789012345").is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a234567890123456"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
