//! bridge: a Linux bridge per network holding the gateway addresses, and per container a veth
//! pair whose container end is made directly inside the container's namespace (no move),
//! named as asked, with the container's addresses and its default route via the gateway.

use std::net::IpAddr;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};

use berth_bpf::Datapath;

use crate::driver::{
    Endpoint, EndpointRequest, Network, NetworkDriver, NetworkSpec, allocate_addresses,
    check_ifname, configure_inside, delete_links, tag,
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
            match s.subnet {
                ipnet::IpNet::V4(v4) => {
                    self.datapath(|dp| dp.add_subnet(v4.network(), v4.prefix_len(), number))?;
                }
                ipnet::IpNet::V6(v6) => {
                    self.datapath(|dp| dp.add_subnet6(v6.network(), v6.prefix_len(), number))?;
                }
            }
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
                let added = match s.subnet {
                    ipnet::IpNet::V4(v4) => {
                        self.datapath(|dp| dp.add_subnet(v4.network(), v4.prefix_len(), number))
                    }
                    ipnet::IpNet::V6(v6) => {
                        self.datapath(|dp| dp.add_subnet6(v6.network(), v6.prefix_len(), number))
                    }
                };
                added?;
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
            match s.subnet {
                ipnet::IpNet::V4(v4) => {
                    self.datapath(|dp| dp.remove_subnet(v4.network(), v4.prefix_len()))?
                }
                ipnet::IpNet::V6(v6) => {
                    self.datapath(|dp| dp.remove_subnet6(v6.network(), v6.prefix_len()))?
                }
            };
        }
        let host = Rtnl::open().map_err(io_err("rtnetlink"))?;
        delete_links(&host, &network.created_links)
    }

    fn join(&self, network: &Network, req: &EndpointRequest<'_>) -> Result<Endpoint> {
        check_ifname(req.ifname)?;
        let bridge = network
            .interface
            .as_deref()
            .ok_or_else(|| Error::Invalid(format!("network {} has no bridge", network.name)))?;
        let host_ifname = format!("veth{}", &tag(&[&network.id, req.id])[..11]);
        let (addresses, gateways) = allocate_addresses(&self.ipam, network, req)?;
        let host = Rtnl::open().map_err(io_err("rtnetlink"))?;
        let joined = (|| {
            let bridge_index = host
                .link_index(bridge)
                .map_err(io_err(format!("find {bridge}")))?
                .ok_or_else(|| Error::NotFound(format!("bridge {bridge}")))?;
            host.create_veth(&host_ifname, req.ifname, req.netns)
                .map_err(io_err(format!(
                    "create veth {host_ifname} with {} in the container",
                    req.ifname
                )))?;
            let index = host
                .link_index(&host_ifname)
                .map_err(io_err(format!("find {host_ifname}")))?
                .ok_or_else(|| Error::NotFound(host_ifname.clone()))?;
            host.set_controller(index, bridge_index)
                .map_err(io_err(format!("attach {host_ifname} to {bridge}")))?;
            host.set_up(index)
                .map_err(io_err(format!("set {host_ifname} up")))?;
            let ips: Vec<IpAddr> = addresses.iter().map(|(ip, _)| *ip).collect();
            let number = network_number(&network.id);
            self.datapath(|dp| dp.attach(&host_ifname, number, &ips))?;
            configure_inside(req.netns, req.ifname, &addresses, &gateways)
        })();
        if let Err(e) = joined {
            let _ = self.datapath(|dp| dp.detach(&host_ifname));
            if let Ok(Some(i)) = host.link_index(&host_ifname) {
                let _ = host.delete_link(i);
            }
            let _ = self.ipam.release(&network.id, req.id);
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
