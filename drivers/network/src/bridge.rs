//! bridge: a Linux bridge per network holding the gateway addresses, and per container a veth
//! pair whose container end is made directly inside the container's namespace (no move),
//! named as asked, with the container's addresses and its default route via the gateway.

use std::net::IpAddr;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};

use berth_bpf::Datapath;

use crate::driver::{
    Endpoint, EndpointRequest, Network, NetworkDriver, NetworkSpec, Prepared, allocate_addresses,
    check_ifname, configure_inside, configure_link, delete_links, loopback_up, tag,
};
use crate::error::{Error, Result, io_err};
use crate::ipam::{Ipam, SubnetRequest};
use crate::netlink::Rtnl;

/// Docker's option naming the bridge.
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

pub struct Bridge {
    ipam: Arc<Ipam>,
    datapath: Option<Arc<Mutex<Datapath>>>,
}

impl Bridge {
    /// Plain Linux bridging: containers reach each other through the bridge.
    pub fn new(ipam: Arc<Ipam>) -> Bridge {
        Bridge {
            ipam,
            datapath: None,
        }
    }

    /// With berth's BPF datapath on every container port: same-network traffic skips the
    /// bridge, other networks are unreachable, and each container is counted.
    pub fn with_datapath(ipam: Arc<Ipam>, datapath: Arc<Mutex<Datapath>>) -> Bridge {
        Bridge {
            ipam,
            datapath: Some(datapath),
        }
    }

    fn datapath<T>(
        &self,
        f: impl FnOnce(&mut Datapath) -> berth_bpf::Result<T>,
    ) -> Result<Option<T>> {
        let Some(dp) = &self.datapath else {
            return Ok(None);
        };
        let mut dp = dp
            .lock()
            .map_err(|_| Error::Invalid("the datapath lock is poisoned".into()))?;
        f(&mut dp)
            .map(Some)
            .map_err(|e| Error::io("datapath", std::io::Error::other(e.to_string())))
    }
}

/// The container side's name in a prepared namespace (a container's first network is `eth0`,
/// so a join rarely renames it).
const PREPARED_IFNAME: &str = "eth0";

impl Bridge {
    /// `network`'s bridge: its name and index here.
    fn bridge_of(host: &Rtnl, network: &Network) -> Result<(String, u32)> {
        let bridge = network
            .interface
            .as_deref()
            .ok_or_else(|| Error::Invalid(format!("network {} has no bridge", network.name)))?;
        let index = host
            .link_index(bridge)
            .map_err(io_err(format!("find {bridge}")))?
            .ok_or_else(|| Error::NotFound(format!("bridge {bridge}")))?;
        Ok((bridge.to_string(), index))
    }

    /// A veth `host_ifname` on the bridge `bridge_index`, up, its peer `ifname` made directly
    /// in `netns`.
    fn add_port(
        host: &Rtnl,
        bridge: (&str, u32),
        host_ifname: &str,
        netns: BorrowedFd<'_>,
        ifname: &str,
    ) -> Result<()> {
        host.create_veth(host_ifname, ifname, netns)
            .map_err(io_err(format!(
                "create veth {host_ifname} with {ifname} in the container"
            )))?;
        let index = host
            .link_index(host_ifname)
            .map_err(io_err(format!("find {host_ifname}")))?
            .ok_or_else(|| Error::NotFound(host_ifname.to_string()))?;
        host.set_controller(index, bridge.1)
            .map_err(io_err(format!("attach {host_ifname} to {}", bridge.0)))?;
        host.set_up(index)
            .map_err(io_err(format!("set {host_ifname} up")))
    }

    /// Puts a subnet of network `number` in the datapath's maps (without a datapath, nothing).
    fn add_subnet(&self, subnet: ipnet::IpNet, number: u32) -> Result<()> {
        match subnet {
            ipnet::IpNet::V4(v4) => {
                self.datapath(|dp| dp.add_subnet(v4.network(), v4.prefix_len(), number))
            }
            ipnet::IpNet::V6(v6) => {
                self.datapath(|dp| dp.add_subnet6(v6.network(), v6.prefix_len(), number))
            }
        }
        .map(drop)
    }

    fn remove_subnet(&self, subnet: ipnet::IpNet) -> Result<()> {
        match subnet {
            ipnet::IpNet::V4(v4) => {
                self.datapath(|dp| dp.remove_subnet(v4.network(), v4.prefix_len()))
            }
            ipnet::IpNet::V6(v6) => {
                self.datapath(|dp| dp.remove_subnet6(v6.network(), v6.prefix_len()))
            }
        }
        .map(drop)
    }

    /// Undoes a failed join: the port, the addresses.
    fn undo_join(&self, host: &Rtnl, network: &Network, endpoint_id: &str, host_ifname: &str) {
        self.remove_port(host, host_ifname);
        let _ = self.ipam.release(&network.id, endpoint_id);
    }

    /// Takes a port away: the datapath's programs and entries, the veth (and its peer).
    fn remove_port(&self, host: &Rtnl, host_ifname: &str) {
        let _ = self.datapath(|dp| dp.detach(host_ifname));
        if let Ok(Some(i)) = host.link_index(host_ifname) {
            let _ = host.delete_link(i);
        }
    }
}

/// The datapath's number for a network (its maps' network field).
pub(crate) fn network_number(id: &str) -> u32 {
    u32::from_str_radix(&tag(&[id])[..8], 16).unwrap_or(1)
}

impl Bridge {
    /// Makes `network`'s bridge again if it is gone (a reboot takes every bridge; the network's
    /// subnets are kept in IPAM): the link, its gateway addresses, the datapath's subnets.
    /// Whether it had to.
    pub fn restore(&self, network: &Network) -> Result<bool> {
        let Some(bridge) = network.interface.as_deref() else {
            return Ok(false);
        };
        let host = Rtnl::open().map_err(io_err("rtnetlink"))?;
        if host
            .link_index(bridge)
            .map_err(io_err(format!("find {bridge}")))?
            .is_some()
        {
            return Ok(false);
        }
        host.create_bridge(bridge)
            .map_err(io_err(format!("create bridge {bridge}")))?;
        let index = host
            .link_index(bridge)
            .map_err(io_err(format!("find {bridge}")))?
            .ok_or_else(|| Error::NotFound(bridge.to_string()))?;
        let number = network_number(&network.id);
        for s in &network.subnets {
            host.add_address(index, s.gateway, s.subnet.prefix_len())
                .map_err(io_err(format!("add {} to {bridge}", s.gateway)))?;
            self.add_subnet(s.subnet, number)?;
        }
        host.set_up(index)
            .map_err(io_err(format!("set {bridge} up")))?;
        Ok(true)
    }
}

impl NetworkDriver for Bridge {
    fn name(&self) -> &'static str {
        "bridge"
    }

    fn create(&self, spec: &NetworkSpec) -> Result<Network> {
        let bridge = match spec.options.get(BRIDGE_NAME_OPTION) {
            Some(n) => n.clone(),
            None => format!("br-{}", &tag(&[&spec.id])[..12]),
        };
        check_ifname(&bridge)?;
        let host = Rtnl::open().map_err(io_err("rtnetlink"))?;
        let routed = host
            .routed_subnets()
            .map_err(io_err("read the host's routes"))?;
        let requests = if spec.subnets.is_empty() {
            vec![SubnetRequest::default()]
        } else {
            spec.subnets.clone()
        };
        let subnets = self.ipam.create(&spec.id, &requests, &routed)?;
        let existed = host
            .link_index(&bridge)
            .map_err(io_err(format!("find {bridge}")));
        match existed {
            Ok(None) => {}
            Ok(Some(_)) => {
                let _ = self.ipam.delete(&spec.id);
                return Err(Error::Exists(format!(
                    "a link named {bridge} exists already"
                )));
            }
            Err(e) => {
                let _ = self.ipam.delete(&spec.id);
                return Err(e);
            }
        }
        let made = (|| {
            host.create_bridge(&bridge)
                .map_err(io_err(format!("create bridge {bridge}")))?;
            let index = host
                .link_index(&bridge)
                .map_err(io_err(format!("find {bridge}")))?
                .ok_or_else(|| Error::NotFound(bridge.clone()))?;
            for s in &subnets {
                host.add_address(index, s.gateway, s.subnet.prefix_len())
                    .map_err(io_err(format!("add {} to {bridge}", s.gateway)))?;
            }
            host.set_up(index)
                .map_err(io_err(format!("set {bridge} up")))
        })();
        let made = made.and_then(|()| {
            let number = network_number(&spec.id);
            for s in &subnets {
                self.add_subnet(s.subnet, number)?;
            }
            Ok(())
        });
        if let Err(e) = made {
            // Only what this call made: the name was free before.
            if let Ok(Some(i)) = host.link_index(&bridge) {
                let _ = host.delete_link(i);
            }
            let _ = self.ipam.delete(&spec.id);
            return Err(e);
        }
        Ok(Network {
            id: spec.id.clone(),
            name: spec.name.clone(),
            driver: self.name().into(),
            options: spec.options.clone(),
            interface: Some(bridge.clone()),
            created_links: vec![bridge],
            subnets,
        })
    }

    fn delete(&self, network: &Network) -> Result<()> {
        // IPAM first: it refuses while endpoints are left, before anything is torn down.
        self.ipam.delete(&network.id)?;
        for s in &network.subnets {
            self.remove_subnet(s.subnet)?;
        }
        let host = Rtnl::open().map_err(io_err("rtnetlink"))?;
        delete_links(&host, &network.created_links)
    }

    fn join(&self, network: &Network, req: &EndpointRequest<'_>) -> Result<Endpoint> {
        check_ifname(req.ifname)?;
        let host_ifname = format!("veth{}", &tag(&[&network.id, req.id])[..11]);
        let host = Rtnl::open().map_err(io_err("rtnetlink"))?;
        let (bridge, bridge_index) = Self::bridge_of(&host, network)?;
        let (addresses, gateways) = allocate_addresses(&self.ipam, network, req)?;
        let joined = (|| {
            Self::add_port(
                &host,
                (&bridge, bridge_index),
                &host_ifname,
                req.netns,
                req.ifname,
            )?;
            let ips: Vec<IpAddr> = addresses.iter().map(|(ip, _)| *ip).collect();
            let number = network_number(&network.id);
            self.datapath(|dp| dp.attach(&host_ifname, number, &ips))?;
            configure_inside(req.netns, req.ifname, &addresses, &gateways)
        })();
        if let Err(e) = joined {
            self.undo_join(&host, network, req.id, &host_ifname);
            return Err(e);
        }
        Ok(Endpoint {
            id: req.id.to_string(),
            ifname: req.ifname.to_string(),
            host_ifname: Some(host_ifname),
            addresses,
            gateways,
        })
    }

    fn prepare(
        &self,
        network: &Network,
        netns: BorrowedFd<'_>,
        key: &str,
    ) -> Result<Option<Prepared>> {
        let host_ifname = format!("veth{}", &tag(&[&network.id, "prepared", key])[..11]);
        let host = Rtnl::open().map_err(io_err("rtnetlink"))?;
        let (bridge, bridge_index) = Self::bridge_of(&host, network)?;
        let made = (|| {
            Self::add_port(
                &host,
                (&bridge, bridge_index),
                &host_ifname,
                netns,
                PREPARED_IFNAME,
            )?;
            self.datapath(|dp| dp.prepare(&host_ifname))?;
            let inside = Rtnl::open_in(netns).map_err(io_err("rtnetlink in the namespace"))?;
            let index_inside = inside
                .link_index(PREPARED_IFNAME)
                .map_err(io_err(format!("find {PREPARED_IFNAME} in the namespace")))?
                .ok_or_else(|| Error::NotFound(format!("{PREPARED_IFNAME} in the namespace")))?;
            loopback_up(&inside)?;
            Ok(Prepared {
                network_id: network.id.clone(),
                host_ifname: host_ifname.clone(),
                ifname: PREPARED_IFNAME.into(),
                index_inside,
                inside,
            })
        })();
        if made.is_err() {
            self.remove_port(&host, &host_ifname);
        }
        made.map(Some)
    }

    fn join_prepared(
        &self,
        network: &Network,
        prepared: Prepared,
        req: &EndpointRequest<'_>,
    ) -> Result<Endpoint> {
        let host = Rtnl::open().map_err(io_err("rtnetlink"))?;
        let host_ifname = prepared.host_ifname.clone();
        let joined = (|| {
            check_ifname(req.ifname)?;
            if prepared.network_id != network.id {
                return Err(Error::Invalid(format!(
                    "{host_ifname} was prepared for network {}, not {}",
                    prepared.network_id, network.id
                )));
            }
            let (addresses, gateways) = allocate_addresses(&self.ipam, network, req)?;
            let configured = (|| {
                if req.ifname != prepared.ifname {
                    prepared
                        .inside
                        .set_name(prepared.index_inside, req.ifname)
                        .map_err(io_err(format!(
                            "rename {} to {} in the container",
                            prepared.ifname, req.ifname
                        )))?;
                }
                let ips: Vec<IpAddr> = addresses.iter().map(|(ip, _)| *ip).collect();
                let number = network_number(&network.id);
                self.datapath(|dp| dp.attach(&host_ifname, number, &ips))?;
                configure_link(
                    &prepared.inside,
                    prepared.index_inside,
                    req.ifname,
                    &addresses,
                    &gateways,
                )
            })();
            configured.map(|()| (addresses, gateways))
        })();
        match joined {
            Ok((addresses, gateways)) => Ok(Endpoint {
                id: req.id.to_string(),
                ifname: req.ifname.to_string(),
                host_ifname: Some(host_ifname),
                addresses,
                gateways,
            }),
            Err(e) => {
                // Releasing an address never allocated is a no-op.
                self.undo_join(&host, network, req.id, &host_ifname);
                Err(e)
            }
        }
    }

    fn discard(&self, prepared: Prepared) {
        let _ = self.datapath(|dp| dp.detach(&prepared.host_ifname));
    }

    fn leave(
        &self,
        network: &Network,
        endpoint: &Endpoint,
        netns: Option<BorrowedFd<'_>>,
    ) -> Result<()> {
        if let Some(name) = &endpoint.host_ifname {
            self.datapath(|dp| dp.detach(name))?;
        }
        if netns.is_some() {
            // Deleting the host end deletes the pair.
            if let Some(name) = &endpoint.host_ifname {
                let host = Rtnl::open().map_err(io_err("rtnetlink"))?;
                if let Some(i) = host
                    .link_index(name)
                    .map_err(io_err(format!("find {name}")))?
                {
                    host.delete_link(i)
                        .map_err(io_err(format!("delete {name}")))?;
                }
            }
        }
        self.ipam.release(&network.id, &endpoint.id)
    }
}
