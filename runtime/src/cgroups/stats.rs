//! Resource usage of a container's cgroup, in the shape runc's `events` prints (containerd's
//! shim and `docker stats` read these fields), from v1 or v2 files alike.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::Serialize;

use super::Cgroup;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub cpu: Cpu,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hugetlb: BTreeMap<String, Hugetlb>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

/// Nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CpuUsage {
    pub total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Throttling {
    pub periods: u64,
    #[serde(rename = "throttledPeriods")]
    pub throttled_periods: u64,
    #[serde(rename = "throttledTime")]
    pub throttled_time: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Memory {
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    /// memory.stat, as the kernel names its keys.
    pub raw: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MemoryEntry {
    pub limit: u64,
    pub usage: u64,
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Pids {
    pub current: u64,
    pub limit: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Blkio {
    #[serde(
        rename = "ioServiceBytesRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioServicedRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Hugetlb {
    pub usage: u64,
    pub max: u64,
    pub failcnt: u64,
}

fn read(dir: &Path, file: &str) -> Option<String> {
    crate::sys::read_pseudo_to_string(dir.join(file)).ok()
}

fn num(dir: &Path, file: &str) -> u64 {
    read(dir, file)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// A limit file: "max" (v2) or the kernel's huge "unlimited" number (v1) both read as 0 = none.
fn limit(dir: &Path, file: &str) -> u64 {
    match read(dir, file).as_deref().map(str::trim) {
        Some("max") | None => 0,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|&n| n < (1 << 62))
            .unwrap_or(0),
    }
}

/// `key value` lines.
fn keyed(dir: &Path, file: &str) -> BTreeMap<String, u64> {
    read(dir, file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

impl Cgroup {
    /// Current usage. Controllers this host does not mount read as zeros.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        let dir = |c: &str| self.dir_for(c).map(|d| (d.path.as_path(), d.unified));
        if let Some((d, unified)) = dir("cpu") {
            let stat = keyed(d, "cpu.stat");
            s.cpu.throttling = Throttling {
                periods: stat.get("nr_periods").copied().unwrap_or(0),
                throttled_periods: stat.get("nr_throttled").copied().unwrap_or(0),
                throttled_time: stat
                    .get("throttled_time")
                    .copied()
                    .unwrap_or_else(|| stat.get("throttled_usec").copied().unwrap_or(0) * 1000),
            };
            if unified {
                s.cpu.usage.total = stat.get("usage_usec").copied().unwrap_or(0) * 1000;
                s.cpu.usage.user = stat.get("user_usec").copied().unwrap_or(0) * 1000;
                s.cpu.usage.kernel = stat.get("system_usec").copied().unwrap_or(0) * 1000;
            }
        }
        if let Some((d, _)) = dir("cpuacct") {
            s.cpu.usage.total = num(d, "cpuacct.usage");
            s.cpu.usage.percpu = read(d, "cpuacct.usage_percpu")
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            // cpuacct.stat counts USER_HZ ticks.
            let ticks = keyed(d, "cpuacct.stat");
            let hz = 1_000_000_000 / 100;
            s.cpu.usage.user = ticks.get("user").copied().unwrap_or(0) * hz;
            s.cpu.usage.kernel = ticks.get("system").copied().unwrap_or(0) * hz;
        }
        if let Some((d, unified)) = dir("memory") {
            let raw = keyed(d, "memory.stat");
            if unified {
                s.memory.usage = MemoryEntry {
                    limit: limit(d, "memory.max"),
                    usage: num(d, "memory.current"),
                    max: num(d, "memory.peak"),
                    failcnt: keyed(d, "memory.events").get("max").copied().unwrap_or(0),
                };
                s.memory.swap = MemoryEntry {
                    limit: limit(d, "memory.swap.max"),
                    usage: num(d, "memory.swap.current"),
                    ..Default::default()
                };
                s.memory.cache = raw.get("file").copied().unwrap_or(0);
            } else {
                s.memory.usage = MemoryEntry {
                    limit: limit(d, "memory.limit_in_bytes"),
                    usage: num(d, "memory.usage_in_bytes"),
                    max: num(d, "memory.max_usage_in_bytes"),
                    failcnt: num(d, "memory.failcnt"),
                };
                s.memory.swap = MemoryEntry {
                    limit: limit(d, "memory.memsw.limit_in_bytes"),
                    usage: num(d, "memory.memsw.usage_in_bytes"),
                    max: num(d, "memory.memsw.max_usage_in_bytes"),
                    failcnt: num(d, "memory.memsw.failcnt"),
                };
                s.memory.cache = raw
                    .get("total_cache")
                    .or(raw.get("cache"))
                    .copied()
                    .unwrap_or(0);
            }
            s.memory.raw = raw;
        }
        if let Some((d, _)) = dir("pids") {
            s.pids = Pids {
                current: num(d, "pids.current"),
                limit: limit(d, "pids.max"),
            };
        }
        if let Some((d, _)) = dir("blkio") {
            s.blkio.io_service_bytes_recursive =
                blkio_v1(d, "blkio.throttle.io_service_bytes_recursive");
            s.blkio.io_serviced_recursive = blkio_v1(d, "blkio.throttle.io_serviced_recursive");
        } else if let Some((d, _)) = dir("io") {
            let (bytes, ops) = io_v2(d);
            s.blkio.io_service_bytes_recursive = bytes;
            s.blkio.io_serviced_recursive = ops;
        }
        if let Some((d, unified)) = dir("hugetlb") {
            for size in hugepage_sizes() {
                let entry = if unified {
                    Hugetlb {
                        usage: num(d, &format!("hugetlb.{size}.current")),
                        max: limit(d, &format!("hugetlb.{size}.max")),
                        failcnt: keyed(d, &format!("hugetlb.{size}.events"))
                            .get("max")
                            .copied()
                            .unwrap_or(0),
                    }
                } else {
                    Hugetlb {
                        usage: num(d, &format!("hugetlb.{size}.usage_in_bytes")),
                        max: num(d, &format!("hugetlb.{size}.max_usage_in_bytes")),
                        failcnt: num(d, &format!("hugetlb.{size}.failcnt")),
                    }
                };
                s.hugetlb.insert(size, entry);
            }
        }
        s
    }
}

/// "2MB", "1GB" … from /sys/kernel/mm/hugepages.
fn hugepage_sizes() -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let kb: u64 = e
                .file_name()
                .to_str()?
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(if kb >= 1 << 20 {
                format!("{}GB", kb >> 20)
            } else if kb >= 1 << 10 {
                format!("{}MB", kb >> 10)
            } else {
                format!("{kb}KB")
            })
        })
        .collect();
    out.sort();
    out
}

fn blkio_v1(dir: &Path, file: &str) -> Vec<BlkioEntry> {
    read(dir, file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, op, value) = (f.next()?, f.next()?, f.next()?);
            let (major, minor) = dev.split_once(':')?;
            Some(BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// io.stat lines: `MAJ:MIN rbytes=… wbytes=… rios=… wios=…`.
fn io_v2(dir: &Path) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let mut bytes = Vec::new();
    let mut ops = Vec::new();
    for line in read(dir, "io.stat").unwrap_or_default().lines() {
        let mut f = line.split_whitespace();
        let Some((major, minor)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = v.parse() else { continue };
            let (list, op) = match k {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "rios" => (&mut ops, "Read"),
                "wios" => (&mut ops, "Write"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.into(),
                value,
            });
        }
    }
    (bytes, ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v2_io_stat_and_keyed_files() {
        let d = tempfile::tempdir().unwrap();
        fs::write(
            d.path().join("io.stat"),
            "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0\n",
        )
        .unwrap();
        let (b, o) = io_v2(d.path());
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].value, 8192);
        assert_eq!(o[0].op, "Read");
        fs::write(d.path().join("memory.max"), "max\n").unwrap();
        assert_eq!(limit(d.path(), "memory.max"), 0);
        fs::write(
            d.path().join("memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        assert_eq!(limit(d.path(), "memory.limit_in_bytes"), 0);
        fs::write(d.path().join("pids.max"), "64\n").unwrap();
        assert_eq!(limit(d.path(), "pids.max"), 64);
    }
}
