//! `update`: new resource limits for a running container.

use oci_spec::runtime::LinuxResources;

use super::Container;
use crate::error::{Error, Result};
use crate::state::Status;

impl Container {
    /// Writes the limits `resources` sets (others stay as they are) and records them, so
    /// `state` and later `exec`s see the container as it now is.
    pub fn update(&mut self, resources: &LinuxResources) -> Result<()> {
        let status = self.status();
        if status == Status::Stopped {
            return Err(Error::WrongStatus {
                id: self.id().to_string(),
                status,
                action: "update",
            });
        }
        let mut spec = self.record.spec()?;
        self.record.cgroup.apply(resources)?;
        let mut linux = spec.linux().clone().unwrap_or_default();
        let mut merged = linux.resources().clone().unwrap_or_default();
        merge(&mut merged, resources);
        linux.set_resources(Some(merged));
        spec.set_linux(Some(linux));
        self.record.set_spec(&spec)?;
        self.record.save(&self.dir)
    }
}

/// Every part `new` sets replaces the one in `into`.
fn merge(into: &mut LinuxResources, new: &LinuxResources) {
    if new.memory().is_some() {
        into.set_memory(*new.memory());
    }
    if new.cpu().is_some() {
        into.set_cpu(new.cpu().clone());
    }
    if new.pids().is_some() {
        into.set_pids(*new.pids());
    }
    if new.block_io().is_some() {
        into.set_block_io(new.block_io().clone());
    }
    if new.hugepage_limits().is_some() {
        into.set_hugepage_limits(new.hugepage_limits().clone());
    }
    if new.network().is_some() {
        into.set_network(new.network().clone());
    }
    if new.rdma().is_some() {
        into.set_rdma(new.rdma().clone());
    }
    if new.unified().is_some() {
        into.set_unified(new.unified().clone());
    }
    if new.devices().is_some() {
        into.set_devices(new.devices().clone());
    }
}
