//! The interface every network driver implements, and what goes in and out of it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, io_err};
use crate::ipam::{Ipam, Subnet, SubnetRequest};
use crate::netlink::Rtnl;

/// What a caller asks for when it creates a network.
#[derive(Clone, Debug, Default)]
pub struct NetworkSpec {
    /// The engine's network id (IPAM's key; letters, digits, `-_.`).
    pub id: String,
    pub name: String,
    /// Driver options, Docker's names (`com.docker.network.bridge.name`, `parent`,
    /// `macvlan_mode`).
    pub options: BTreeMap<String, String>,
    /// One per address family; empty means one IPv4 subnet from the default pool.
    pub subnets: Vec<SubnetRequest>,
}

/// A network as its driver made it: what the caller keeps and hands back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub options: BTreeMap<String, String>,
    /// The host-side link the driver uses: the bridge, or the macvlan parent.
    pub interface: Option<String>,
    /// Links the driver made for the network (removed with it).
    pub created_links: Vec<String>,
    pub subnets: Vec<Subnet>,
}

/// A container joining a network.
pub struct EndpointRequest<'a> {
    /// The engine's endpoint id (unique per network; IPAM's owner key).
    pub id: &'a str,
    /// The container's network namespace.
    pub netns: BorrowedFd<'a>,
    /// The interface name inside (`eth0`).
    pub ifname: &'a str,
    /// Static addresses asked for (`--ip`, `--ip6`).
    pub static_ips: &'a [IpAddr],
    /// Whether this network gives the container its default route.
    pub default_route: bool,
}

/// A container's place on a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub ifname: String,
    /// The host side of the link (a veth), where there is one.
    pub host_ifname: Option<String>,
    /// Addresses with their prefix lengths.
    pub addresses: Vec<(IpAddr, u8)>,
    pub gateways: Vec<IpAddr>,
}

/// What a driver readied ahead in a namespace for a container yet to come
/// ([`NetworkDriver::prepare`]): kept by the caller with that namespace, then handed to
/// [`NetworkDriver::join_prepared`], or to [`NetworkDriver::discard`] when the namespace goes
/// unused.
pub struct Prepared {
    pub(crate) network_id: String,
    /// The host side of the link made ahead.
    pub(crate) host_ifname: String,
    /// The container side's name as made (renamed at the join if another is asked for).
    pub(crate) ifname: String,
    pub(crate) index_inside: u32,
    /// A netlink socket inside the namespace, so the join needs no thread to enter it.
    pub(crate) inside: Rtnl,
}

impl Prepared {
    /// The network it was readied for.
    pub fn network_id(&self) -> &str {
        &self.network_id
    }

    pub fn host_ifname(&self) -> &str {
        &self.host_ifname
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("network_id", &self.network_id)
            .field("host_ifname", &self.host_ifname)
            .field("ifname", &self.ifname)
            .finish_non_exhaustive()
    }
}

/// One interface for every driver. A driver works in the calling thread's network namespace
/// (the host's, for a daemon).
pub trait NetworkDriver: Send + Sync {
    fn name(&self) -> &'static str;

    fn create(&self, spec: &NetworkSpec) -> Result<Network>;

    /// Removes the network (its endpoints must have left).
    fn delete(&self, network: &Network) -> Result<()>;

    /// Connects the container whose namespace `request.netns` is.
    fn join(&self, network: &Network, request: &EndpointRequest<'_>) -> Result<Endpoint>;

    /// Readies the namespace `netns` to join `network` later: whatever does not depend on the
    /// container is done ahead (a bridge's veth on the bridge, up, with the datapath's programs
    /// on it), so the join itself is an address, a route and map entries. `key` tells prepared
    /// namespaces apart. `None` when the driver has nothing worth doing ahead.
    fn prepare(
        &self,
        _network: &Network,
        _netns: BorrowedFd<'_>,
        _key: &str,
    ) -> Result<Option<Prepared>> {
        Ok(None)
    }

    /// [`NetworkDriver::join`] in a namespace [`NetworkDriver::prepare`] readied
    /// (`request.netns`). On an error what was prepared is undone too.
    fn join_prepared(
        &self,
        network: &Network,
        prepared: Prepared,
        request: &EndpointRequest<'_>,
    ) -> Result<Endpoint> {
        self.discard(prepared);
        self.join(network, request)
    }

    /// Lets go of what was prepared in a namespace that is going away unused (its links go
    /// with it).
    fn discard(&self, _prepared: Prepared) {}

    /// Disconnects an endpoint. `netns` is the container's namespace when it lives on (its
    /// interface is removed); `None` when the namespace is going away, which removes the
    /// interface with it, far faster than deleting it here.
    fn leave(
        &self,
        network: &Network,
        endpoint: &Endpoint,
        netns: Option<BorrowedFd<'_>>,
    ) -> Result<()>;
}

/// IFNAMSIZ less the terminating NUL.
pub(crate) const MAX_IFNAME: usize = 15;

pub(crate) fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_IFNAME
        || name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::Invalid(format!(
            "{name:?} is not a valid interface name (1 to {MAX_IFNAME} bytes; no '/', ':' or spaces)"
        )));
    }
    Ok(())
}

/// A short stable hex tag of `parts` (link names must fit in 15 bytes).
pub(crate) fn tag(parts: &[&str]) -> String {
    // FNV-1a: stable across releases, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// An endpoint's addresses with their prefix lengths, and its gateways.
pub(crate) type Addressing = (Vec<(IpAddr, u8)>, Vec<IpAddr>);

/// Addresses for an endpoint from IPAM, with their prefix lengths, and the gateways when the
/// endpoint takes its default route from this network.
pub(crate) fn allocate_addresses(
    ipam: &Ipam,
    network: &Network,
    req: &EndpointRequest<'_>,
) -> Result<Addressing> {
    let ips = ipam.allocate(&network.id, req.id, req.static_ips)?;
    let subnets = ipam.subnets(&network.id)?;
    let addresses = ips
        .iter()
        .map(|ip| {
            let prefix = subnets
                .iter()
                .find(|s| s.subnet.contains(ip))
                .map(|s| s.subnet.prefix_len())
                .unwrap_or(if ip.is_ipv4() { 32 } else { 128 });
            (*ip, prefix)
        })
        .collect();
    let gateways = if req.default_route {
        subnets.iter().map(|s| s.gateway).collect()
    } else {
        Vec::new()
    };
    Ok((addresses, gateways))
}

/// Deletes the links a driver made for a network (gone already is fine).
pub(crate) fn delete_links(host: &Rtnl, links: &[String]) -> Result<()> {
    for link in links {
        let index = host
            .link_index(link)
            .map_err(|e| Error::io(format!("find {link}"), e))?;
        if let Some(i) = index {
            host.delete_link(i)
                .map_err(|e| Error::io(format!("delete {link}"), e))?;
        }
    }
    Ok(())
}

/// The container side: addresses, up, loopback up, default routes.
pub(crate) fn configure_inside(
    netns: BorrowedFd<'_>,
    ifname: &str,
    addresses: &[(IpAddr, u8)],
    gateways: &[IpAddr],
) -> Result<()> {
    let inside = Rtnl::open_in(netns).map_err(io_err("rtnetlink in the container"))?;
    let index = inside
        .link_index(ifname)
        .map_err(io_err(format!("find {ifname} in the container")))?
        .ok_or_else(|| Error::NotFound(format!("{ifname} in the container")))?;
    loopback_up(&inside)?;
    configure_link(&inside, index, ifname, addresses, gateways)
}

pub(crate) fn loopback_up(inside: &Rtnl) -> Result<()> {
    if let Some(lo) = inside.link_index("lo").map_err(io_err("find lo"))? {
        inside.set_up(lo).map_err(io_err("set lo up"))?;
    }
    Ok(())
}

/// The container's interface `index` (`ifname`): addresses, up, default routes.
pub(crate) fn configure_link(
    inside: &Rtnl,
    index: u32,
    ifname: &str,
    addresses: &[(IpAddr, u8)],
    gateways: &[IpAddr],
) -> Result<()> {
    for (ip, prefix) in addresses {
        inside
            .add_address(index, *ip, *prefix)
            .map_err(io_err(format!(
                "add {ip}/{prefix} to {ifname} in the container"
            )))?;
    }
    inside
        .set_up(index)
        .map_err(io_err(format!("set {ifname} up in the container")))?;
    for gw in gateways {
        match inside.add_default_route(*gw) {
            Ok(()) => {}
            // Another network gave the default route of this family already.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(Error::io(format!("default route via {gw}"), e)),
        }
    }
    Ok(())
}
