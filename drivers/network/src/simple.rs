//! none (loopback only, up) and host (the host's namespace itself: nothing to make).

use std::os::fd::BorrowedFd;

use crate::driver::{Endpoint, EndpointRequest, Network, NetworkDriver, NetworkSpec};
use crate::error::{Error, Result, io_err};
use crate::netlink::Rtnl;

fn network(spec: &NetworkSpec, driver: &str) -> Result<Network> {
    if !spec.subnets.is_empty() {
        return Err(Error::Invalid(format!(
            "the {driver} network has no subnets of its own"
        )));
    }
    Ok(Network {
        id: spec.id.clone(),
        name: spec.name.clone(),
        driver: driver.into(),
        options: spec.options.clone(),
        interface: None,
        created_links: Vec::new(),
        subnets: Vec::new(),
    })
}

fn endpoint(req: &EndpointRequest<'_>) -> Endpoint {
    Endpoint {
        id: req.id.to_string(),
        ifname: String::new(),
        host_ifname: None,
        addresses: Vec::new(),
        gateways: Vec::new(),
    }
}

/// Only loopback, up.
pub struct NoneDriver;

impl NetworkDriver for NoneDriver {
    fn name(&self) -> &'static str {
        "null"
    }

    fn create(&self, spec: &NetworkSpec) -> Result<Network> {
        network(spec, self.name())
    }

    fn delete(&self, _network: &Network) -> Result<()> {
        Ok(())
    }

    fn join(&self, _network: &Network, req: &EndpointRequest<'_>) -> Result<Endpoint> {
        let inside = Rtnl::open_in(req.netns).map_err(io_err("rtnetlink in the container"))?;
        let lo = inside
            .link_index("lo")
            .map_err(io_err("find lo in the container"))?
            .ok_or_else(|| Error::NotFound("lo in the container".into()))?;
        inside
            .set_up(lo)
            .map_err(io_err("set lo up in the container"))?;
        Ok(endpoint(req))
    }

    fn leave(&self, _: &Network, _: &Endpoint, _: Option<BorrowedFd<'_>>) -> Result<()> {
        Ok(())
    }
}

/// The host's namespace: the container shares it, so there is nothing to make; joining checks
/// that the namespace given is the host's.
pub struct HostDriver;

impl NetworkDriver for HostDriver {
    fn name(&self) -> &'static str {
        "host"
    }

    fn create(&self, spec: &NetworkSpec) -> Result<Network> {
        network(spec, self.name())
    }

    fn delete(&self, _network: &Network) -> Result<()> {
        Ok(())
    }

    fn join(&self, _network: &Network, req: &EndpointRequest<'_>) -> Result<Endpoint> {
        let theirs =
            rustix::fs::fstat(req.netns).map_err(|e| Error::io("stat the namespace", e.into()))?;
        let ours = rustix::fs::stat("/proc/thread-self/ns/net")
            .map_err(|e| Error::io("stat the host namespace", e.into()))?;
        if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino) {
            return Err(Error::Invalid(
                "a container on the host network runs in the host's network namespace".into(),
            ));
        }
        Ok(endpoint(req))
    }

    fn leave(&self, _: &Network, _: &Endpoint, _: Option<BorrowedFd<'_>>) -> Result<()> {
        Ok(())
    }
}
