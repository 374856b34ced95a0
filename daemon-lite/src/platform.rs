//! What this host is, in the words the Engine API uses.

/// The OCI/Go architecture name of this build (`amd64`, `arm64` …).
pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Docker's `CgroupVersion`: "2" on a pure v2 host, "1" on v1 and on hybrid hosts (v1
/// controllers plus a cgroup2 mount).
pub fn cgroup_version() -> &'static str {
    let is_cgroup2 =
        |p: &str| rustix::fs::statfs(p).is_ok_and(|s| s.f_type == libc::CGROUP2_SUPER_MAGIC);
    if is_cgroup2("/sys/fs/cgroup") {
        "2"
    } else {
        "1"
    }
}

pub fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Total memory in bytes (MemTotal of /proc/meminfo).
pub fn memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
