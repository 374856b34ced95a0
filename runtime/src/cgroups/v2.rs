//! Resource limits on the cgroup2 hierarchy. On a hybrid host only the controllers that live on
//! cgroup2 are written here (`controllers`); the rest went to v1.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxRdma, LinuxResources};

use super::device_filter::DeviceFilter;
use super::devices::DeviceRule;
use super::{read_file, write_file};
use crate::error::{Context, Error, Result};

/// Creates `dir` and its parents below `mountpoint`, enabling `controllers` in each ancestor's
/// `cgroup.subtree_control` so the leaf can use them.
pub(super) fn make_dir(
    dir: &Path,
    mountpoint: &Path,
    controllers: &[String],
    made: &mut Vec<std::path::PathBuf>,
) -> Result<()> {
    let rel = dir.strip_prefix(mountpoint).unwrap_or(Path::new(""));
    let mut cur = mountpoint.to_path_buf();
    for comp in rel.components() {
        enable_controllers(&cur, controllers)?;
        cur.push(comp);
        match fs::create_dir(&cur) {
            Ok(()) => made.push(cur.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).at("cgroup: mkdir", &cur),
        }
    }
    Ok(())
}

fn enable_controllers(dir: &Path, controllers: &[String]) -> Result<()> {
    if controllers.is_empty() {
        return Ok(());
    }
    let enabled = read_file(dir, "cgroup.subtree_control")?;
    let not_enabled: Vec<&String> = controllers
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == c.as_str()))
        .collect();
    // Usually all are, below a parent made before: then what is available is not asked.
    if not_enabled.is_empty() {
        return Ok(());
    }
    let available = read_file(dir, "cgroup.controllers")?;
    let missing: Vec<String> = not_enabled
        .into_iter()
        .filter(|c| available.split_whitespace().any(|a| a == c.as_str()))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write_file(dir, "cgroup.subtree_control", &missing.join(" "))
}

pub(super) fn apply(
    dir: &Path,
    r: &LinuxResources,
    controllers: &[String],
    devices_on_v1: bool,
) -> Result<()> {
    let has = |c: &str| controllers.iter().any(|x| x == c);
    if has("memory") {
        memory(dir, r)?;
    }
    if has("cpu") {
        cpu(dir, r)?;
    }
    if has("cpuset") {
        cpuset(dir, r)?;
    }
    if has("pids") {
        if let Some(p) = r.pids() {
            let value = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            write_file(dir, "pids.max", &value)?;
        }
    }
    if has("io") {
        io(dir, r)?;
    }
    if has("hugetlb") {
        for h in r.hugepage_limits().iter().flatten() {
            let value = if h.limit() < 0 {
                "max".to_string()
            } else {
                h.limit().to_string()
            };
            write_file(dir, &format!("hugetlb.{}.max", h.page_size()), &value)?;
        }
    }
    if has("rdma") {
        for (device, limits) in r.rdma().iter().flatten() {
            write_file(dir, "rdma.max", &rdma_line(device, limits))?;
        }
    }
    if let Some(unified) = r.unified() {
        write_unified(dir, unified, controllers)?;
    }
    if !devices_on_v1 {
        if let Some(rules) = r.devices() {
            let program = DeviceFilter::compile(&DeviceRule::effective(rules)?).load()?;
            // The new program goes on before the old ones come off: never a moment unfiltered.
            let old = super::device_filter::attached(dir)?;
            program.attach(dir)?;
            for id in old {
                super::device_filter::detach(dir, id)?;
            }
        }
    }
    Ok(())
}

fn max_or(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

fn memory(dir: &Path, r: &LinuxResources) -> Result<()> {
    let Some(m) = r.memory() else { return Ok(()) };
    if let Some(v) = m.limit() {
        write_file(dir, "memory.max", &max_or(v))?;
    }
    if let Some(v) = m.reservation() {
        write_file(dir, "memory.low", &max_or(v))?;
    }
    if let Some(swap) = m.swap() {
        write_file(dir, "memory.swap.max", &swap_max(swap, m.limit())?)?;
    }
    if let Some(v) = m.swappiness() {
        log::warn!(
            "linux.resources.memory.swappiness={v} is ignored: cgroup v2 has no per-cgroup swappiness"
        );
    }
    if m.disable_oom_killer() == Some(true) {
        return Err(Error::Unsupported(
            "linux.resources.memory.disableOOMKiller: cgroup v2 cannot disable the OOM killer"
                .into(),
        ));
    }
    Ok(())
}

/// OCI's `swap` is memory+swap (v1 semantics); cgroup2's memory.swap.max is swap alone.
fn swap_max(swap: i64, limit: Option<i64>) -> Result<String> {
    if swap < 0 {
        return Ok("max".into());
    }
    let field = "linux.resources.memory.swap";
    match limit {
        Some(l) if l > 0 => {
            if swap < l {
                Err(Error::config(
                    "config.json",
                    field,
                    format!("memory+swap {swap} is below the memory limit {l}"),
                ))
            } else {
                Ok((swap - l).to_string())
            }
        }
        _ => Err(Error::config(
            "config.json",
            field,
            "a swap limit needs a memory limit",
        )),
    }
}

/// cpu.shares (2..262144, default 1024) to cpu.weight (1..10000, default 100).
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// blkio weight (10..1000) to io.weight (1..10000).
pub(crate) fn blkio_to_io_weight(w: u16) -> u64 {
    let w = u64::from(w.clamp(10, 1000));
    1 + ((w - 10) * 9999) / 990
}

fn cpu(dir: &Path, r: &LinuxResources) -> Result<()> {
    let Some(c) = r.cpu() else { return Ok(()) };
    if let Some(s) = c.shares().filter(|&s| s != 0) {
        write_file(dir, "cpu.weight", &shares_to_weight(s).to_string())?;
    }
    match (c.quota(), c.period()) {
        (None, None) => {}
        (Some(q), None) => write_file(dir, "cpu.max", &max_or(q))?,
        (q, Some(p)) => write_file(dir, "cpu.max", &format!("{} {p}", max_or(q.unwrap_or(-1))))?,
    }
    if let Some(b) = c.burst() {
        write_file(dir, "cpu.max.burst", &b.to_string())?;
    }
    if let Some(i) = c.idle() {
        write_file(dir, "cpu.idle", &i.to_string())?;
    }
    if c.realtime_runtime().is_some() || c.realtime_period().is_some() {
        return Err(Error::Unsupported(
            "linux.resources.cpu.realtimeRuntime/realtimePeriod: not available on cgroup v2".into(),
        ));
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

fn io(dir: &Path, r: &LinuxResources) -> Result<()> {
    let Some(b) = r.block_io() else { return Ok(()) };
    // BFQ keeps the blkio scale; the generic io.weight has its own.
    let bfq = dir.join("io.bfq.weight").exists();
    if let Some(w) = b.weight() {
        if bfq {
            write_file(dir, "io.bfq.weight", &w.to_string())?;
        } else {
            write_file(
                dir,
                "io.weight",
                &format!("default {}", blkio_to_io_weight(w)),
            )?;
        }
    }
    for d in b.weight_device().iter().flatten() {
        if let Some(w) = d.weight().filter(|&w| w != 0) {
            let (file, value) = if bfq {
                ("io.bfq.weight", u64::from(w))
            } else {
                ("io.weight", blkio_to_io_weight(w))
            };
            write_file(dir, file, &format!("{}:{} {value}", d.major(), d.minor()))?;
        }
    }
    let throttles = [
        ("rbps", b.throttle_read_bps_device()),
        ("wbps", b.throttle_write_bps_device()),
        ("riops", b.throttle_read_iops_device()),
        ("wiops", b.throttle_write_iops_device()),
    ];
    for (key, list) in throttles {
        for d in list.iter().flatten() {
            let rate = if d.rate() == 0 {
                "max".to_string()
            } else {
                d.rate().to_string()
            };
            write_file(
                dir,
                "io.max",
                &format!("{}:{} {key}={rate}", d.major(), d.minor()),
            )?;
        }
    }
    Ok(())
}

pub(super) fn rdma_line(device: &str, l: &LinuxRdma) -> String {
    let mut line = device.to_string();
    if let Some(h) = l.hca_handles() {
        line.push_str(&format!(" hca_handle={h}"));
    }
    if let Some(o) = l.hca_objects() {
        line.push_str(&format!(" hca_object={o}"));
    }
    line
}

/// `linux.resources.unified`: raw cgroup2 files. Keys are checked so a config cannot write
/// outside the container's directory or into a v1-bound controller's files.
fn write_unified(
    dir: &Path,
    unified: &HashMap<String, String>,
    controllers: &[String],
) -> Result<()> {
    for (key, value) in unified {
        let field = format!("linux.resources.unified[{key:?}]");
        if key.is_empty() || key.contains('/') || key.starts_with('.') {
            return Err(Error::config(
                "config.json",
                field,
                "not a cgroup file name",
            ));
        }
        let controller = key.split('.').next().unwrap_or_default();
        if controller != "cgroup" && !controllers.iter().any(|c| c == controller) {
            return Err(Error::config(
                "config.json",
                field,
                format!("the {controller} controller is not available on cgroup2 here"),
            ));
        }
        write_file(dir, key, value)?;
    }
    Ok(())
}

pub(super) fn set_frozen(dir: &Path, frozen: bool) -> Result<()> {
    write_file(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if read_file(dir, "cgroup.events")?.lines().any(|l| l == want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::sys(
                format!("cgroup: {} did not report {want}", dir.display()),
                io::Error::from_raw_os_error(libc::ETIMEDOUT),
            ));
        }
        sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
        assert_eq!(blkio_to_io_weight(500), 4950);
    }

    #[test]
    fn swap_is_converted_and_checked() {
        assert_eq!(swap_max(-1, Some(100)).unwrap(), "max");
        assert_eq!(swap_max(300, Some(100)).unwrap(), "200");
        assert!(swap_max(50, Some(100)).is_err());
        assert!(swap_max(50, None).is_err());
    }

    #[test]
    fn unified_keys_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = vec!["memory".to_string()];
        let mut m = HashMap::new();
        m.insert("../escape".to_string(), "1".to_string());
        assert!(write_unified(dir.path(), &m, &ctl).is_err());
        let mut m = HashMap::new();
        m.insert("cpu.max".to_string(), "1".to_string());
        let err = write_unified(dir.path(), &m, &ctl).unwrap_err().to_string();
        assert!(err.contains("cpu controller"), "{err}");
        let mut m = HashMap::new();
        m.insert("memory.high".to_string(), "4096".to_string());
        write_unified(dir.path(), &m, &ctl).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("memory.high")).unwrap(),
            "4096"
        );
    }
}
