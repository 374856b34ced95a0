//! Resource limits on cgroup v1 hierarchies: one function per subsystem, each writing only the
//! files for values the config sets.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxCpu, LinuxResources};

use super::devices::DeviceRule;
use super::{CgroupDir, read_file, write_file};
use crate::error::{Context, Error, Result};

pub(super) fn apply(dir: &CgroupDir, r: &LinuxResources) -> Result<()> {
    for subsystem in &dir.subsystems {
        let path = dir.path.as_path();
        match subsystem.as_str() {
            "memory" => memory(path, r)?,
            "cpu" => cpu(path, r)?,
            "cpuset" => cpuset(path, r)?,
            "pids" => pids(path, r)?,
            "blkio" => blkio(path, r)?,
            "hugetlb" => hugetlb(path, r)?,
            "devices" => devices(path, r)?,
            "net_cls" => net_cls(path, r)?,
            "net_prio" => net_prio(path, r)?,
            "rdma" => rdma(path, r)?,
            _ => {}
        }
    }
    Ok(())
}

/// A new cpuset cgroup starts with empty `cpus` and `mems`, which refuses every task: copy the
/// parent's.
pub(super) fn inherit_cpuset(dir: &Path) -> Result<()> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if read_file(dir, file)?.trim().is_empty() {
            let value = read_file(parent, file)?;
            write_file(dir, file, value.trim())?;
        }
    }
    Ok(())
}

fn limit(v: i64) -> String {
    if v < 0 { "-1".into() } else { v.to_string() }
}

fn memory(dir: &Path, r: &LinuxResources) -> Result<()> {
    let Some(m) = r.memory() else { return Ok(()) };
    let memsw = dir.join("memory.memsw.limit_in_bytes").exists();
    if let Some(l) = m.limit() {
        if let Err(e) = write_file(dir, "memory.limit_in_bytes", &limit(l)) {
            // memory+swap may never be below memory: when raising memory above the old
            // memory+swap, that one goes first.
            let Some(s) = m.swap().filter(|_| memsw) else {
                return Err(e);
            };
            write_file(dir, "memory.memsw.limit_in_bytes", &limit(s)).map_err(|_| e)?;
            write_file(dir, "memory.limit_in_bytes", &limit(l))?;
        }
    }
    if let Some(v) = m.reservation() {
        write_file(dir, "memory.soft_limit_in_bytes", &limit(v))?;
    }
    if let Some(v) = m.swap() {
        // v1's memsw is memory+swap, the same meaning as the OCI field.
        if !dir.join("memory.memsw.limit_in_bytes").exists() {
            return Err(Error::Unsupported(
                "linux.resources.memory.swap: this kernel has no swap accounting \
                 (memory.memsw.limit_in_bytes is missing)"
                    .into(),
            ));
        }
        write_file(dir, "memory.memsw.limit_in_bytes", &limit(v))?;
    }
    if let Some(v) = m.swappiness() {
        if v > 100 {
            return Err(Error::config(
                "config.json",
                "linux.resources.memory.swappiness",
                format!("{v} is above 100"),
            ));
        }
        write_file(dir, "memory.swappiness", &v.to_string())?;
    }
    if m.disable_oom_killer() == Some(true) {
        write_file(dir, "memory.oom_control", "1")?;
    }
    // kernel / kernelTCP limits were removed from the kernel; use_hierarchy is always on.
    if m.kernel().is_some() || m.kernel_tcp().is_some() {
        log::warn!(
            "linux.resources.memory.kernel and kernelTCP are ignored: the kernel removed kernel memory limits"
        );
    }
    Ok(())
}

pub(super) fn cpu_wants_cpu(c: &LinuxCpu) -> bool {
    c.shares().is_some()
        || c.quota().is_some()
        || c.period().is_some()
        || c.burst().is_some()
        || c.idle().is_some()
        || c.realtime_runtime().is_some()
        || c.realtime_period().is_some()
}

pub(super) fn cpu_wants_cpuset(c: &LinuxCpu) -> bool {
    c.cpus().as_deref().is_some_and(|s| !s.is_empty())
        || c.mems().as_deref().is_some_and(|s| !s.is_empty())
}

fn cpu(dir: &Path, r: &LinuxResources) -> Result<()> {
    let Some(c) = r.cpu() else { return Ok(()) };
    if let Some(v) = c.shares() {
        write_file(dir, "cpu.shares", &v.to_string())?;
    }
    // Period first: a quota is checked against the current period.
    if let Some(v) = c.period() {
        write_file(dir, "cpu.cfs_period_us", &v.to_string())?;
    }
    if let Some(v) = c.quota() {
        write_file(dir, "cpu.cfs_quota_us", &limit(v))?;
    }
    if let Some(v) = c.burst() {
        write_file(dir, "cpu.cfs_burst_us", &v.to_string())?;
    }
    if let Some(v) = c.idle() {
        write_file(dir, "cpu.idle", &v.to_string())?;
    }
    if let Some(v) = c.realtime_period() {
        write_file(dir, "cpu.rt_period_us", &v.to_string())?;
    }
    if let Some(v) = c.realtime_runtime() {
        write_file(dir, "cpu.rt_runtime_us", &v.to_string())?;
    }
    Ok(())
}

fn cpuset(dir: &Path, r: &LinuxResources) -> Result<()> {
    let Some(c) = r.cpu() else { return Ok(()) };
    if let Some(v) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
        write_file(dir, "cpuset.cpus", v)?;
    }
    if let Some(v) = c.mems().as_deref().filter(|s| !s.is_empty()) {
        write_file(dir, "cpuset.mems", v)?;
    }
    Ok(())
}

fn pids(dir: &Path, r: &LinuxResources) -> Result<()> {
    let Some(p) = r.pids() else { return Ok(()) };
    let value = if p.limit() > 0 {
        p.limit().to_string()
    } else {
        "max".into()
    };
    write_file(dir, "pids.max", &value)
}

fn blkio(dir: &Path, r: &LinuxResources) -> Result<()> {
    let Some(b) = r.block_io() else { return Ok(()) };
    // CFQ's blkio.weight is gone from current kernels; BFQ offers blkio.bfq.weight.
    let weight_file = if dir.join("blkio.weight").exists() {
        "blkio.weight"
    } else {
        "blkio.bfq.weight"
    };
    if let Some(w) = b.weight() {
        require(dir, weight_file, "linux.resources.blockIO.weight")?;
        write_file(dir, weight_file, &w.to_string())?;
    }
    if let Some(w) = b.leaf_weight() {
        require(
            dir,
            "blkio.leaf_weight",
            "linux.resources.blockIO.leafWeight",
        )?;
        write_file(dir, "blkio.leaf_weight", &w.to_string())?;
    }
    for d in b.weight_device().iter().flatten() {
        let file = format!("{weight_file}_device");
        if let Some(w) = d.weight().filter(|&w| w != 0) {
            require(dir, &file, "linux.resources.blockIO.weightDevice")?;
            write_file(dir, &file, &format!("{}:{} {w}", d.major(), d.minor()))?;
        }
        if let Some(w) = d.leaf_weight().filter(|&w| w != 0) {
            require(
                dir,
                "blkio.leaf_weight_device",
                "linux.resources.blockIO.weightDevice",
            )?;
            write_file(
                dir,
                "blkio.leaf_weight_device",
                &format!("{}:{} {w}", d.major(), d.minor()),
            )?;
        }
    }
    let throttles = [
        (
            "blkio.throttle.read_bps_device",
            b.throttle_read_bps_device(),
        ),
        (
            "blkio.throttle.write_bps_device",
            b.throttle_write_bps_device(),
        ),
        (
            "blkio.throttle.read_iops_device",
            b.throttle_read_iops_device(),
        ),
        (
            "blkio.throttle.write_iops_device",
            b.throttle_write_iops_device(),
        ),
    ];
    for (file, list) in throttles {
        for d in list.iter().flatten() {
            write_file(
                dir,
                file,
                &format!("{}:{} {}", d.major(), d.minor(), d.rate()),
            )?;
        }
    }
    Ok(())
}

fn require(dir: &Path, file: &str, field: &str) -> Result<()> {
    if dir.join(file).exists() {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "{field}: this kernel's blkio controller has no {file}"
        )))
    }
}

fn hugetlb(dir: &Path, r: &LinuxResources) -> Result<()> {
    for h in r.hugepage_limits().iter().flatten() {
        let file = format!("hugetlb.{}.limit_in_bytes", h.page_size());
        write_file(dir, &file, &limit(h.limit()))?;
    }
    Ok(())
}

fn devices(dir: &Path, r: &LinuxResources) -> Result<()> {
    let Some(spec_rules) = r.devices() else {
        return Ok(());
    };
    // One rule per write(2), but one open per file: a dozen rules are a dozen writes.
    let mut allow = None;
    let mut deny = None;
    for rule in DeviceRule::effective(spec_rules)? {
        let (slot, file) = if rule.allow {
            (&mut allow, "devices.allow")
        } else {
            (&mut deny, "devices.deny")
        };
        let path = dir.join(file);
        if slot.is_none() {
            *slot = Some(
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .at("cgroup: open", &path)?,
            );
        }
        let line = rule.v1_line();
        if let Some(f) = slot {
            f.write_all(line.as_bytes())
                .op(|| format!("cgroup: write {line:?} to {}", path.display()))?;
        }
    }
    Ok(())
}

fn net_cls(dir: &Path, r: &LinuxResources) -> Result<()> {
    if let Some(id) = r.network().as_ref().and_then(|n| n.class_id()) {
        write_file(dir, "net_cls.classid", &id.to_string())?;
    }
    Ok(())
}

fn net_prio(dir: &Path, r: &LinuxResources) -> Result<()> {
    let prios = r.network().as_ref().and_then(|n| n.priorities().clone());
    for p in prios.iter().flatten() {
        write_file(
            dir,
            "net_prio.ifpriomap",
            &format!("{} {}", p.name(), p.priority()),
        )?;
    }
    Ok(())
}

fn rdma(dir: &Path, r: &LinuxResources) -> Result<()> {
    for (device, limits) in r.rdma().iter().flatten() {
        write_file(dir, "rdma.max", &super::v2::rdma_line(device, limits))?;
    }
    Ok(())
}

pub(super) fn set_frozen(dir: &Path, frozen: bool) -> Result<()> {
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Writing FROZEN again nudges tasks that were in the middle of a fork.
        write_file(dir, "freezer.state", want)?;
        if read_file(dir, "freezer.state")?.trim() == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::sys(
                format!("cgroup: {} did not reach {want}", dir.display()),
                std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
            ));
        }
        sleep(Duration::from_millis(1));
    }
}
