//! macvlan: containers get a macvlan of a host link (the `parent` option), made directly in
//! their namespace, in mode bridge (default), private, vepa or passthru. A `parent` such as
//! `eth1.10` that does not exist is made as an 802.1q sub-interface (VLAN 10 of `eth1`) and
//! removed with the network.

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use netlink_packet_route::link::MacVlanMode;

use crate::driver::{
    Endpoint, EndpointRequest, Network, NetworkDriver, NetworkSpec, allocate_addresses,
    check_ifname, configure_inside, delete_links,
};
use crate::error::{Error, Result, io_err};
use crate::ipam::{Ipam, SubnetRequest};
use crate::netlink::Rtnl;

pub const PARENT_OPTION: &str = "parent";
pub const MODE_OPTION: &str = "macvlan_mode";

pub struct Macvlan {
    ipam: Arc<Ipam>,
}

impl Macvlan {
    pub fn new(ipam: Arc<Ipam>) -> Macvlan {
        Macvlan { ipam }
    }
}

fn mode(network: &Network) -> Result<MacVlanMode> {
    Ok(match network.options.get(MODE_OPTION).map(String::as_str) {
        None | Some("bridge") => MacVlanMode::Bridge,
        Some("private") => MacVlanMode::Private,
        Some("vepa") => MacVlanMode::Vepa,
        Some("passthru") => MacVlanMode::Passthrough,
        Some(other) => {
            return Err(Error::Invalid(format!(
                "{MODE_OPTION} {other:?}: bridge, private, vepa or passthru"
            )));
        }
    })
}

/// `eth1.10` → (`eth1`, 10).
fn vlan_of(parent: &str) -> Option<(&str, u16)> {
    let (base, id) = parent.rsplit_once('.')?;
    let id: u16 = id.parse().ok()?;
    (!base.is_empty() && (1..=4094).contains(&id)).then_some((base, id))
}

impl NetworkDriver for Macvlan {
    fn name(&self) -> &'static str {
        "macvlan"
    }

    fn create(&self, spec: &NetworkSpec) -> Result<Network> {
        let parent =
            spec.options.get(PARENT_OPTION).cloned().ok_or_else(|| {
                Error::Invalid("macvlan needs the option parent=<host link>".into())
            })?;
        check_ifname(&parent)?;
        let mut network = Network {
            id: spec.id.clone(),
            name: spec.name.clone(),
            driver: self.name().into(),
            options: spec.options.clone(),
            interface: Some(parent.clone()),
            created_links: Vec::new(),
            subnets: Vec::new(),
        };
        mode(&network)?;
        let host = Rtnl::open().map_err(io_err("rtnetlink"))?;
        if host
            .link_index(&parent)
            .map_err(io_err(format!("find {parent}")))?
            .is_none()
        {
            let (base, id) = vlan_of(&parent)
                .ok_or_else(|| Error::NotFound(format!("macvlan parent {parent}")))?;
            let base_index = host
                .link_index(base)
                .map_err(io_err(format!("find {base}")))?
                .ok_or_else(|| Error::NotFound(format!("macvlan parent {base} (of {parent})")))?;
            host.create_vlan(&parent, base_index, id).map_err(|e| {
                let hint = if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    " (the kernel has no 802.1q support: modprobe 8021q)"
                } else {
                    ""
                };
                Error::io(format!("create VLAN {id} of {base} as {parent}{hint}"), e)
            })?;
            network.created_links.push(parent.clone());
            let index = host
                .link_index(&parent)
                .map_err(io_err(format!("find {parent}")))?
                .ok_or_else(|| Error::NotFound(parent.clone()))?;
            host.set_up(index)
                .map_err(io_err(format!("set {parent} up")))?;
        }
        // The subnet is the parent's network; no route of the host's is in the way.
        let requests = if spec.subnets.is_empty() {
            vec![SubnetRequest::default()]
        } else {
            spec.subnets.clone()
        };
        match self.ipam.create(&spec.id, &requests, &[]) {
            Ok(subnets) => network.subnets = subnets,
            Err(e) => {
                for link in &network.created_links {
                    if let Ok(Some(i)) = host.link_index(link) {
                        let _ = host.delete_link(i);
                    }
                }
                return Err(e);
            }
        }
        Ok(network)
    }

    fn delete(&self, network: &Network) -> Result<()> {
        self.ipam.delete(&network.id)?;
        let host = Rtnl::open().map_err(io_err("rtnetlink"))?;
        delete_links(&host, &network.created_links)
    }

    fn join(&self, network: &Network, req: &EndpointRequest<'_>) -> Result<Endpoint> {
        check_ifname(req.ifname)?;
        let parent = network
            .interface
            .as_deref()
            .ok_or_else(|| Error::Invalid(format!("network {} has no parent", network.name)))?;
        let mode = mode(network)?;
        let (addresses, gateways) = allocate_addresses(&self.ipam, network, req)?;
        let joined = (|| {
            let host = Rtnl::open().map_err(io_err("rtnetlink"))?;
            let parent_index = host
                .link_index(parent)
                .map_err(io_err(format!("find {parent}")))?
                .ok_or_else(|| Error::NotFound(format!("macvlan parent {parent}")))?;
            host.create_macvlan(req.ifname, parent_index, mode, req.netns)
                .map_err(io_err(format!(
                    "create a macvlan of {parent} as {} in the container",
                    req.ifname
                )))?;
            configure_inside(req.netns, req.ifname, &addresses, &gateways)
        })();
        if let Err(e) = joined {
            if let Ok(inside) = Rtnl::open_in(req.netns) {
                if let Ok(Some(i)) = inside.link_index(req.ifname) {
                    let _ = inside.delete_link(i);
                }
            }
            let _ = self.ipam.release(&network.id, req.id);
            return Err(e);
        }
        Ok(Endpoint {
            id: req.id.to_string(),
            ifname: req.ifname.to_string(),
            host_ifname: None,
            addresses,
            gateways,
        })
    }

    fn leave(
        &self,
        network: &Network,
        endpoint: &Endpoint,
        netns: Option<BorrowedFd<'_>>,
    ) -> Result<()> {
        if let Some(ns) = netns {
            let inside = Rtnl::open_in(ns).map_err(io_err("rtnetlink in the container"))?;
            if let Some(i) = inside
                .link_index(&endpoint.ifname)
                .map_err(io_err(format!("find {}", endpoint.ifname)))?
            {
                inside.delete_link(i).map_err(io_err(format!(
                    "delete {} in the container",
                    endpoint.ifname
                )))?;
            }
        }
        self.ipam.release(&network.id, &endpoint.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_parents() {
        assert_eq!(vlan_of("eth1.10"), Some(("eth1", 10)));
        assert_eq!(vlan_of("veth-a.4094"), Some(("veth-a", 4094)));
        assert_eq!(vlan_of("eth1"), None);
        assert_eq!(vlan_of("eth1.0"), None);
        assert_eq!(vlan_of("eth1.4095"), None);
        assert_eq!(vlan_of(".10"), None);
    }
}
