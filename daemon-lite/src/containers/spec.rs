//! The OCI runtime spec of a container, made as dockerd makes it: from the image config, the
//! create request's `Config` and `HostConfig`, with Docker's defaults (capabilities, seccomp,
//! masked and read-only paths, mounts).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::api::fields::Fields;
use crate::seccomp_profile;

/// Docker's default capability set (the runtime keeps the list).
pub use berth_runtime::spec_template::DOCKER_DEFAULT_CAPS as DEFAULT_CAPS;

/// Docker's masked paths: runc's defaults (the runtime's template) and `/proc/interrupts`.
pub fn masked_paths() -> Vec<&'static str> {
    let mut paths = berth_runtime::spec_template::MASKED_PATHS.to_vec();
    paths.push("/proc/interrupts");
    paths
}

/// Docker's read-only paths are runc's.
pub use berth_runtime::spec_template::READONLY_PATHS;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the spec is made from.
pub struct Inputs<'a> {
    pub id: &'a str,
    /// The image config's `config` (Env, Cmd, Entrypoint, WorkingDir, User …).
    pub image: &'a Value,
    pub config: &'a Value,
    pub host_config: &'a Value,
    /// The mounted root filesystem (for user and group names).
    pub rootfs: &'a Path,
    /// Where `hosts`, `hostname` and `resolv.conf` were written.
    pub etc_dir: &'a Path,
    /// Mounts resolved from Binds, Mounts, Tmpfs and volumes: (destination, OCI mount).
    pub mounts: Vec<(String, Value)>,
    pub cgroup_v2: bool,
    /// The daemon's cgroup parent, for containers that do not name their own.
    pub cgroup_parent: &'a str,
}

/// A request the spec cannot be made from: the client's mistake (400).
#[derive(Debug)]
pub struct Invalid(pub String);

/// The command a container runs: entrypoint then cmd, the container's overriding the image's
/// (an entrypoint given at create drops the image's cmd, as Docker does).
pub fn command(image: &Value, config: &Value) -> Vec<String> {
    let own_entrypoint = config.opt_list("Entrypoint");
    let entrypoint = own_entrypoint
        .clone()
        .or_else(|| image.opt_list("Entrypoint"))
        .unwrap_or_default();
    let cmd = match config.opt_list("Cmd") {
        Some(c) => c,
        None if own_entrypoint.is_some() => Vec::new(),
        None => image.opt_list("Cmd").unwrap_or_default(),
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// Image env, then the container's (a key given again replaces the earlier value).
pub fn environment(image: &Value, config: &Value, hostname: &str) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |entry: String| {
        let key = entry.split('=').next().unwrap_or("").to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(entry);
    };
    set(DEFAULT_PATH.to_string());
    set(format!("HOSTNAME={hostname}"));
    if config.bool("Tty") {
        set("TERM=xterm".to_string());
    }
    for e in image.list("Env").into_iter().chain(config.list("Env")) {
        // `-e NAME` without a value means "unset" to Docker when NAME is not in the client's env.
        if e.contains('=') {
            set(e);
        }
    }
    env
}

pub fn hostname(id: &str, config: &Value) -> String {
    config
        .opt_str("Hostname")
        .map(str::to_string)
        .unwrap_or_else(|| crate::names::short(id).to_string())
}

/// The capabilities a container gets: Docker's set, `CapAdd`, minus `CapDrop` (`ALL` works
/// in both), or every capability when privileged.
pub fn capabilities(host_config: &Value) -> Result<Vec<String>, Invalid> {
    let known: Vec<String> = (0..=berth_runtime::capabilities::last_cap())
        .filter_map(berth_runtime::capabilities::name)
        .collect();
    // "Every capability" is every one the daemon itself may hand out: inside a VM or container
    // whose bounding set lacks some, asking for them would fail the start.
    let bounding = own_bounding_set();
    let all: Vec<String> = (0..=berth_runtime::capabilities::last_cap())
        .filter(|n| bounding & (1u64 << n) != 0)
        .filter_map(berth_runtime::capabilities::name)
        .collect();
    if host_config.bool("Privileged") {
        return Ok(all);
    }
    let normalize = |c: &str| -> Result<String, Invalid> {
        let upper = c.trim().to_ascii_uppercase();
        if upper == "ALL" {
            return Ok(upper);
        }
        let name = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        if known.contains(&name) {
            Ok(name)
        } else {
            Err(Invalid(format!("unknown capability: {c:?}")))
        }
    };
    let add = host_config
        .list("CapAdd")
        .iter()
        .map(|c| normalize(c))
        .collect::<Result<Vec<_>, _>>()?;
    let drop = host_config
        .list("CapDrop")
        .iter()
        .map(|c| normalize(c))
        .collect::<Result<Vec<_>, _>>()?;
    let mut caps: Vec<String> = if add.iter().any(|c| c == "ALL") {
        all.clone()
    } else {
        DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
    };
    if drop.iter().any(|c| c == "ALL") {
        caps.clear();
    }
    for c in add.into_iter().filter(|c| c != "ALL") {
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    caps.retain(|c| !drop.contains(c) || add_wins(host_config, c));
    Ok(caps)
}

/// The capability bounding set of this process (CapBnd of /proc/self/status).
fn own_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// `--cap-drop ALL --cap-add X` keeps X.
fn add_wins(host_config: &Value, cap: &str) -> bool {
    host_config.list("CapAdd").iter().any(|a| {
        let a = a.to_ascii_uppercase();
        a == cap || format!("CAP_{a}") == cap
    })
}

/// What `SecurityOpt` asks for.
#[derive(Debug, Default, PartialEq)]
pub struct SecurityOpts {
    pub no_new_privileges: bool,
    /// `None`: the default profile; `Some(Null)`: unconfined; else a profile in Docker's format.
    pub seccomp: Option<Value>,
}

pub fn security_opts(host_config: &Value) -> Result<SecurityOpts, Invalid> {
    let mut out = SecurityOpts::default();
    for opt in host_config.list("SecurityOpt") {
        let (key, value) = opt
            .split_once(['=', ':'])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .unwrap_or((opt.clone(), "true".into()));
        match key.as_str() {
            "no-new-privileges" => {
                out.no_new_privileges = value
                    .parse()
                    .map_err(|_| Invalid(format!("invalid no-new-privileges value {value:?}")))?
            }
            "seccomp" if value == "unconfined" => out.seccomp = Some(Value::Null),
            "seccomp" => {
                let profile: Value = serde_json::from_str(&value)
                    .map_err(|e| Invalid(format!("seccomp profile: {e}")))?;
                out.seccomp = Some(profile);
            }
            "apparmor" | "label" => {}
            other => return Err(Invalid(format!("unknown security option {other:?}"))),
        }
    }
    Ok(out)
}

/// Every check `create` can make before the container's rootfs exists, so a client's mistake
/// is a 400 at create rather than a failed start.
pub fn validate(image: &Value, config: &Value, host_config: &Value) -> Result<(), Invalid> {
    if command(image, config).is_empty() {
        return Err(Invalid("no command specified".into()));
    }
    capabilities(host_config)?;
    security_opts(host_config)?;
    ulimits(host_config)?;
    resources(host_config)?;
    own_cgroup_parent(host_config)?;
    if let Some(dir) = config.opt_str("WorkingDir") {
        if !dir.starts_with('/') {
            return Err(Invalid(format!(
                "the working directory '{dir}' is invalid, it needs to be an absolute path"
            )));
        }
    }
    let mut dry_run = |name: Option<&str>| -> std::io::Result<(String, PathBuf)> {
        if let Some(n) = name {
            crate::volumes::Volumes::check_name(n)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        }
        Ok((name.unwrap_or("").to_string(), PathBuf::new()))
    };
    user_mounts(host_config, config, image, &mut dry_run, false)?;
    Ok(())
}

/// A cgroup parent as the daemon and `HostConfig.CgroupParent` take it: a path in the cgroup
/// hierarchies, made absolute: a relative one is taken from the root (Docker puts it below
/// the daemon's own cgroup; berthd's own cgroup is no place for containers). `..` and `.` are
/// refused (the container's cgroup must stay below what it names), and so is a systemd slice
/// (`name.slice`, `:`): berth drives cgroupfs.
pub fn cgroup_parent(value: &str) -> Result<String, Invalid> {
    let refuse = |why: &str| Err(Invalid(format!("cgroup parent {value:?}: {why}")));
    if value.is_empty() {
        return refuse("empty");
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return refuse("holds a control or space character");
    }
    if value.contains(':') || value.trim_end_matches('/').ends_with(".slice") {
        return refuse("a systemd slice; berth drives cgroupfs, give a path such as /berth");
    }
    if value.split('/').any(|c| c == ".." || c == ".") {
        return refuse("`.` and `..` are not allowed");
    }
    let path = value.trim_matches('/');
    Ok(format!("/{path}"))
}

/// The container's own `HostConfig.CgroupParent`, if it names one (empty: the daemon's).
fn own_cgroup_parent(host_config: &Value) -> Result<Option<String>, Invalid> {
    host_config
        .opt_str("CgroupParent")
        .filter(|p| !p.is_empty())
        .map(cgroup_parent)
        .transpose()
}

/// Builds the spec.
pub fn build(inputs: &Inputs) -> Result<Value, Invalid> {
    let Inputs {
        id,
        image,
        config,
        host_config,
        rootfs,
        etc_dir,
        ..
    } = inputs;
    let args = command(image, config);
    if args.is_empty() {
        return Err(Invalid("no command specified".into()));
    }
    let hostname = hostname(id, config);
    let privileged = host_config.bool("Privileged");
    let caps = capabilities(host_config)?;
    let security = security_opts(host_config)?;
    let user_spec = config
        .opt_str("User")
        .or_else(|| image.opt_str("User"))
        .unwrap_or("");
    let user = resolve_user(rootfs, user_spec, &host_config.list("GroupAdd"))?;
    let cwd = config
        .opt_str("WorkingDir")
        .or_else(|| image.opt_str("WorkingDir"))
        .unwrap_or("/");
    if !cwd.starts_with('/') {
        return Err(Invalid(format!(
            "the working directory '{cwd}' is invalid, it needs to be an absolute path"
        )));
    }

    let mut process = json!({
        "terminal": config.bool("Tty"),
        "user": user,
        "args": args,
        "env": environment(image, config, &hostname),
        "cwd": cwd,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps,
        },
        "noNewPrivileges": security.no_new_privileges,
    });
    let rlimits = ulimits(host_config)?;
    if !rlimits.is_empty() {
        process["rlimits"] = json!(rlimits);
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if inputs.cgroup_v2 {
        namespaces.push(json!({"type": "cgroup"}));
    }
    match host_config.opt_str("NetworkMode").unwrap_or("default") {
        "host" => {}
        _ => namespaces.push(json!({"type": "network"})),
    }

    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": format!(
            "{}/{id}",
            own_cgroup_parent(host_config)?
                .as_deref()
                .unwrap_or(inputs.cgroup_parent)
                .trim_end_matches('/')
        ),
        "resources": resources(host_config)?,
    });
    if !privileged {
        linux["maskedPaths"] = json!(masked_paths());
        linux["readonlyPaths"] = json!(READONLY_PATHS);
        let profile = match security.seccomp {
            None => Some(seccomp_profile::default_for(&caps)),
            Some(Value::Null) => None,
            Some(custom) => Some(seccomp_profile::to_oci(&custom, &caps)),
        };
        if let Some(p) = profile {
            linux["seccomp"] = p;
        }
    }

    Ok(json!({
        "ociVersion": berth_runtime::OCI_VERSION,
        "process": process,
        "root": {"path": rootfs, "readonly": host_config.bool("ReadonlyRootfs")},
        "hostname": hostname,
        "mounts": mounts(inputs, privileged, etc_dir),
        "linux": linux,
    }))
}

/// Docker's default mounts, the name files, then the user's (which replace a default at the
/// same destination).
fn mounts(inputs: &Inputs, privileged: bool, etc_dir: &Path) -> Vec<Value> {
    let sys_opts = if privileged {
        json!(["nosuid", "noexec", "nodev", "rw"])
    } else {
        json!(["nosuid", "noexec", "nodev", "ro"])
    };
    let shm_size = inputs.host_config.u64("ShmSize").unwrap_or(64 << 20);
    let mut list: Vec<(String, Value)> = vec![
        (
            "/proc".into(),
            json!({"type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        ),
        (
            "/dev".into(),
            json!({"type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        ),
        (
            "/dev/pts".into(),
            json!({"type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        ),
        (
            "/sys".into(),
            json!({"type": "sysfs", "source": "sysfs", "options": sys_opts}),
        ),
        (
            "/sys/fs/cgroup".into(),
            json!({"type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]}),
        ),
        (
            "/dev/mqueue".into(),
            json!({"type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        ),
        (
            "/dev/shm".into(),
            json!({"type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={shm_size}")]}),
        ),
    ];
    for name in ["resolv.conf", "hostname", "hosts"] {
        list.push((
            format!("/etc/{name}"),
            json!({"type": "bind", "source": etc_dir.join(name), "options": ["rbind", "rprivate"]}),
        ));
    }
    for (dest, m) in &inputs.mounts {
        list.retain(|(d, _)| d != dest);
        list.push((dest.clone(), m.clone()));
    }
    list.into_iter()
        .map(|(dest, mut m)| {
            m["destination"] = json!(dest);
            m
        })
        .collect()
}

fn resources(host_config: &Value) -> Result<Value, Invalid> {
    let mut r = json!({});
    if let Some(m) = host_config.u64("Memory").filter(|&m| m > 0) {
        if m < 6 << 20 {
            return Err(Invalid("Minimum memory limit allowed is 6MB".to_string()));
        }
        r["memory"] = json!({"limit": m});
        if let Some(s) = host_config.i64("MemorySwap").filter(|&s| s != 0) {
            r["memory"]["swap"] = json!(s);
        }
    }
    let mut cpu = json!({});
    if let Some(n) = host_config.u64("NanoCpus").filter(|&n| n > 0) {
        let cpus = crate::platform::cpus() as u64;
        if n > cpus * 1_000_000_000 {
            return Err(Invalid(format!(
                "range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available"
            )));
        }
        cpu["period"] = json!(100_000);
        cpu["quota"] = json!(n / 10_000);
    }
    if let Some(s) = host_config.u64("CpuShares").filter(|&s| s > 0) {
        cpu["shares"] = json!(s);
    }
    if let Some(s) = host_config.opt_str("CpusetCpus") {
        cpu["cpus"] = json!(s);
    }
    if cpu.as_object().is_some_and(|o| !o.is_empty()) {
        r["cpu"] = cpu;
    }
    if let Some(p) = host_config.i64("PidsLimit").filter(|&p| p != 0) {
        r["pids"] = json!({"limit": p});
    }
    if host_config.bool("Privileged") {
        r["devices"] = json!([{"allow": true, "access": "rwm"}]);
    } else {
        r["devices"] = json!([{"allow": false, "access": "rwm"}]);
    }
    Ok(r)
}

fn ulimits(host_config: &Value) -> Result<Vec<Value>, Invalid> {
    let mut out = Vec::new();
    for u in host_config.objects("Ulimits") {
        let name = u.opt_str("Name").unwrap_or("");
        let known = [
            "core",
            "cpu",
            "data",
            "fsize",
            "locks",
            "memlock",
            "msgqueue",
            "nice",
            "nofile",
            "nproc",
            "rss",
            "rtprio",
            "rttime",
            "sigpending",
            "stack",
            "as",
        ];
        if !known.contains(&name) {
            return Err(Invalid(format!("invalid ulimit type: {name:?}")));
        }
        let soft = u.i64("Soft").unwrap_or(0);
        let hard = u.i64("Hard").unwrap_or(soft);
        if soft > hard {
            return Err(Invalid(format!(
                "ulimit {name}: soft limit {soft} is above the hard limit {hard}"
            )));
        }
        out.push(json!({"type": format!("RLIMIT_{}", name.to_ascii_uppercase()), "soft": soft, "hard": hard}));
    }
    Ok(out)
}

/// `User` (`name`, `uid`, `name:group`, `uid:gid`) to numeric ids through the container's own
/// /etc/passwd and /etc/group, read inside the rootfs (symlinks cannot lead out of it).
pub fn resolve_user(rootfs: &Path, user: &str, group_add: &[String]) -> Result<Value, Invalid> {
    let passwd = read_in_root(rootfs, "etc/passwd");
    let groups = read_in_root(rootfs, "etc/group");
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let mut uid = 0u32;
    let mut gid = 0u32;
    let mut name = None;
    if !user_part.is_empty() {
        let entry = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && (f[0] == user_part || f[2] == user_part));
        match (entry, user_part.parse::<u32>()) {
            (Some(f), _) => {
                uid = f[2].parse().unwrap_or(0);
                gid = f[3].parse().unwrap_or(0);
                name = Some(f[0].to_string());
            }
            (None, Ok(n)) => uid = n,
            (None, Err(_)) => {
                return Err(Invalid(format!(
                    "unable to find user {user_part}: no matching entries in passwd file"
                )));
            }
        }
    }
    let find_group = |g: &str| -> Result<u32, Invalid> {
        let found = groups
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && (f[0] == g || f[2] == g))
            .and_then(|f| f[2].parse().ok());
        match (found, g.parse::<u32>()) {
            (Some(n), _) | (None, Ok(n)) => Ok(n),
            (None, Err(_)) => Err(Invalid(format!(
                "unable to find group {g}: no matching entries in group file"
            ))),
        }
    };
    if let Some(g) = group_part {
        gid = find_group(g)?;
    }
    let mut additional: Vec<u32> = Vec::new();
    if let Some(name) = &name {
        for f in groups.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(n) = f[2].parse::<u32>() {
                    if n != gid && !additional.contains(&n) {
                        additional.push(n);
                    }
                }
            }
        }
    }
    for g in group_add {
        let n = find_group(g)?;
        if !additional.contains(&n) {
            additional.push(n);
        }
    }
    let mut user = json!({"uid": uid, "gid": gid});
    if !additional.is_empty() {
        user["additionalGids"] = json!(additional);
    }
    Ok(user)
}

/// A small file of the container's rootfs, resolved with the rootfs as `/`; empty if absent.
fn read_in_root(rootfs: &Path, rel: &str) -> String {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let Ok(root) = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return String::new();
    };
    let Ok(fd) = rustix::fs::openat2(
        &root,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) else {
        return String::new();
    };
    let fd: OwnedFd = fd;
    let mut text = String::new();
    let _ = File::from(fd).take(4 << 20).read_to_string(&mut text);
    text
}

/// Gives the (name, data directory) of a named volume, or of a new anonymous one for `None`.
pub type VolumeSource<'a> = dyn FnMut(Option<&str>) -> std::io::Result<(String, PathBuf)> + 'a;

/// OCI mounts by destination, and Docker's `Mounts` entries describing them.
pub type UserMounts = (Vec<(String, Value)>, Vec<Value>);

/// Parses `Binds` (`src:dst[:opts]`), `Mounts` and `Tmpfs` into OCI mounts. Named volume
/// sources go through `volume` (which creates a volume on first use); returns the mounts and
/// the mount points (destination → source description) Docker reports in `Mounts`.
pub fn user_mounts(
    host_config: &Value,
    config: &Value,
    image: &Value,
    volume: &mut VolumeSource<'_>,
    create_missing_sources: bool,
) -> Result<UserMounts, Invalid> {
    let mut mounts: Vec<(String, Value)> = Vec::new();
    let mut points: Vec<Value> = Vec::new();
    let check_dest = |d: &str| -> Result<String, Invalid> {
        if !d.starts_with('/') || d.split('/').any(|c| c == "..") {
            return Err(Invalid(format!(
                "invalid mount config: mount path must be absolute: {d:?}"
            )));
        }
        if d == "/" {
            return Err(Invalid(
                "invalid mount config: the destination cannot be /".into(),
            ));
        }
        Ok(d.trim_end_matches('/').to_string())
    };
    let mut add_volume = |name: Option<&str>,
                          dest: String,
                          ro: bool,
                          mounts: &mut Vec<(String, Value)>,
                          points: &mut Vec<Value>|
     -> Result<(), Invalid> {
        let (name, path) = volume(name).map_err(|e| Invalid(format!("volume: {e}")))?;
        let opt = if ro { "ro" } else { "rw" };
        mounts.push((
            dest.clone(),
            json!({"type": "bind", "source": path, "options": ["rbind", opt]}),
        ));
        points.push(
            json!({"Type": "volume", "Name": name, "Source": path, "Destination": dest,
                           "Driver": "local", "Mode": "", "RW": !ro, "Propagation": ""}),
        );
        Ok(())
    };
    for bind in host_config.list("Binds") {
        let parts: Vec<&str> = bind.split(':').collect();
        let (src, dst, opts) = match parts.as_slice() {
            [s, d] => (*s, *d, ""),
            [s, d, o] => (*s, *d, *o),
            _ => return Err(Invalid(format!("invalid volume specification: '{bind}'"))),
        };
        let dest = check_dest(dst)?;
        let ro = opts.split(',').any(|o| o == "ro");
        if src.starts_with('/') {
            let source = Path::new(src);
            if create_missing_sources && !source.exists() {
                std::fs::create_dir_all(source)
                    .map_err(|e| Invalid(format!("bind source {src}: {e}")))?;
            }
            let mut options = vec!["rbind".to_string(), if ro { "ro" } else { "rw" }.into()];
            for o in opts.split(',') {
                if matches!(
                    o,
                    "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate"
                ) {
                    options.push(o.to_string());
                }
            }
            mounts.push((
                dest.clone(),
                json!({"type": "bind", "source": src, "options": options}),
            ));
            points.push(
                json!({"Type": "bind", "Source": src, "Destination": dest, "Mode": opts,
                               "RW": !ro, "Propagation": "rprivate"}),
            );
        } else {
            add_volume(Some(src), dest, ro, &mut mounts, &mut points)?;
        }
    }
    for m in host_config.objects("Mounts") {
        let typ = m.opt_str("Type").unwrap_or("volume");
        let dest = check_dest(m.opt_str("Target").unwrap_or(""))?;
        let ro = m.bool("ReadOnly");
        match typ {
            "bind" => {
                let src = m.opt_str("Source").unwrap_or("");
                if !Path::new(src).is_absolute() || !Path::new(src).exists() {
                    return Err(Invalid(format!(
                        "invalid mount config for type \"bind\": bind source path does not exist: {src}"
                    )));
                }
                let opt = if ro { "ro" } else { "rw" };
                mounts.push((
                    dest.clone(),
                    json!({"type": "bind", "source": src, "options": ["rbind", opt]}),
                ));
                points.push(
                    json!({"Type": "bind", "Source": src, "Destination": dest, "Mode": "",
                                   "RW": !ro, "Propagation": "rprivate"}),
                );
            }
            "volume" => add_volume(m.opt_str("Source"), dest, ro, &mut mounts, &mut points)?,
            "tmpfs" => {
                let mut options = vec!["nosuid".to_string(), "nodev".into(), "noexec".into()];
                let t = &m["TmpfsOptions"];
                if let Some(size) = t.u64("SizeBytes").filter(|&s| s > 0) {
                    options.push(format!("size={size}"));
                }
                if let Some(mode) = t.u64("Mode").filter(|&m| m > 0) {
                    options.push(format!("mode={mode:o}"));
                }
                if ro {
                    options.push("ro".into());
                }
                mounts.push((
                    dest.clone(),
                    json!({"type": "tmpfs", "source": "tmpfs", "options": options}),
                ));
                points.push(
                    json!({"Type": "tmpfs", "Source": "", "Destination": dest, "Mode": "",
                                   "RW": !ro, "Propagation": ""}),
                );
            }
            other => return Err(Invalid(format!("invalid mount type {other:?}"))),
        }
    }
    for (dest, opts) in host_config.map("Tmpfs") {
        let dest = check_dest(&dest)?;
        let mut options = vec!["nosuid".to_string(), "nodev".into(), "noexec".into()];
        options.extend(
            opts.split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string),
        );
        mounts.push((
            dest.clone(),
            json!({"type": "tmpfs", "source": "tmpfs", "options": options}),
        ));
        points.push(
            json!({"Type": "tmpfs", "Source": "", "Destination": dest, "Mode": "",
                           "RW": true, "Propagation": ""}),
        );
    }
    // Anonymous volumes for the declared volumes nothing else is mounted on.
    let declared: BTreeMap<String, Value> = image
        .map_values("Volumes")
        .into_iter()
        .chain(config.map_values("Volumes"))
        .collect();
    for dest in declared.keys() {
        let dest = check_dest(dest)?;
        if !mounts.iter().any(|(d, _)| *d == dest) {
            add_volume(None, dest, false, &mut mounts, &mut points)?;
        }
    }
    Ok((mounts, points))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_follows_dockers_override_rules() {
        let image = json!({"Entrypoint": ["/init"], "Cmd": ["serve"]});
        assert_eq!(command(&image, &json!({})), ["/init", "serve"]);
        assert_eq!(command(&image, &json!({"Cmd": ["x"]})), ["/init", "x"]);
        assert_eq!(command(&image, &json!({"Entrypoint": ["sh"]})), ["sh"]);
        assert_eq!(
            command(&image, &json!({"Entrypoint": null, "Cmd": null})),
            ["/init", "serve"]
        );
        assert_eq!(
            command(&json!({}), &json!({"Entrypoint": [], "Cmd": []})),
            Vec::<String>::new()
        );
    }

    #[test]
    fn env_merges_image_then_container() {
        let env = environment(
            &json!({"Env": ["PATH=/img", "A=1"]}),
            &json!({"Env": ["A=2", "B=3", "UNSET"], "Tty": true}),
            "h",
        );
        assert_eq!(env, ["HOSTNAME=h", "TERM=xterm", "PATH=/img", "A=2", "B=3"]);
    }

    #[test]
    fn capabilities_add_drop_and_all() {
        let caps = capabilities(&json!({"CapAdd": ["NET_ADMIN"], "CapDrop": ["chown"]})).unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(caps.len(), 14);
        let only = capabilities(&json!({"CapDrop": ["ALL"], "CapAdd": ["CAP_KILL"]})).unwrap();
        assert_eq!(only, ["CAP_KILL"]);
        assert!(capabilities(&json!({"CapAdd": ["CAP_FLY"]})).is_err());
        let privileged = capabilities(&json!({"Privileged": true})).unwrap();
        assert!(privileged.len() > 30 && privileged.contains(&"CAP_SYS_ADMIN".to_string()));
        assert_eq!(
            privileged.len() as u32,
            own_bounding_set().count_ones().min(privileged.len() as u32)
        );
    }

    #[test]
    fn cgroup_parents_are_absolute_paths_below_the_root() {
        assert_eq!(cgroup_parent("/berth").unwrap(), "/berth");
        assert_eq!(cgroup_parent("tenant/a/").unwrap(), "/tenant/a");
        assert_eq!(cgroup_parent("/").unwrap(), "/");
        for bad in [
            "../escape",
            "/a/../../b",
            "./a",
            "user.slice",
            "a:b:c",
            "a\0b",
            "x.slice/",
            "a\nb",
            "",
        ] {
            let err = cgroup_parent(bad).unwrap_err().0;
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        let rootfs = tempfile::tempdir().unwrap();
        let inputs = |host_config: &Value| {
            build(&Inputs {
                id: "c1",
                image: &json!({"Cmd": ["true"]}),
                config: &json!({}),
                host_config,
                rootfs: rootfs.path(),
                etc_dir: rootfs.path(),
                mounts: Vec::new(),
                cgroup_v2: false,
                cgroup_parent: "/berth",
            })
        };
        let path = |v: Value| v["linux"]["cgroupsPath"].as_str().unwrap().to_string();
        assert_eq!(path(inputs(&json!({})).unwrap()), "/berth/c1");
        assert_eq!(
            path(inputs(&json!({"CgroupParent": "tenant"})).unwrap()),
            "/tenant/c1"
        );
        assert_eq!(path(inputs(&json!({"CgroupParent": "/"})).unwrap()), "/c1");
        let err = inputs(&json!({"CgroupParent": "../../x"})).unwrap_err().0;
        assert!(err.contains("not allowed"), "{err}");
    }

    #[test]
    fn security_options() {
        let s = security_opts(&json!({"SecurityOpt": ["no-new-privileges", "seccomp=unconfined"]}))
            .unwrap();
        assert!(s.no_new_privileges);
        assert_eq!(s.seccomp, Some(Value::Null));
        assert!(security_opts(&json!({"SecurityOpt": ["bogus=1"]})).is_err());
        assert!(security_opts(&json!({"SecurityOpt": ["seccomp={"]})).is_err());
    }

    #[test]
    fn users_resolve_inside_the_rootfs() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            root.path().join("etc/group"),
            "root:x:0:\napp:x:1001:\nextra:x:2000:app\n",
        )
        .unwrap();
        assert_eq!(
            resolve_user(root.path(), "", &[]).unwrap(),
            json!({"uid": 0, "gid": 0})
        );
        assert_eq!(
            resolve_user(root.path(), "app", &[]).unwrap(),
            json!({"uid": 1000, "gid": 1001, "additionalGids": [2000]})
        );
        assert_eq!(
            resolve_user(root.path(), "5:extra", &[]).unwrap(),
            json!({"uid": 5, "gid": 2000})
        );
        assert!(resolve_user(root.path(), "nobody", &[]).is_err());
        // A symlinked passwd cannot lead out of the rootfs.
        std::fs::remove_file(root.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("etc/passwd")).unwrap();
        assert!(resolve_user(root.path(), "app", &[]).is_err());
    }

    #[test]
    fn binds_volumes_and_tmpfs() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("host");
        std::fs::create_dir(&src).unwrap();
        let mut made = Vec::new();
        let vols = dir.path().to_path_buf();
        let mut volume = |name: Option<&str>| {
            let name = name.map(str::to_string).unwrap_or_else(|| "anon".into());
            made.push(name.clone());
            Ok((name.clone(), vols.join(&name)))
        };
        let hc = json!({
            "Binds": [format!("{}:/data:ro", src.display()), "named:/v"],
            "Tmpfs": {"/run": "size=1m"},
            "Mounts": [{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 4096}}]
        });
        let (mounts, points) = user_mounts(
            &hc,
            &json!({"Volumes": {"/anon": {}}}),
            &json!({}),
            &mut volume,
            true,
        )
        .unwrap();
        let dests: Vec<&str> = mounts.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(dests, ["/data", "/v", "/t", "/run", "/anon"]);
        assert_eq!(mounts[0].1["options"], json!(["rbind", "ro"]));
        assert_eq!(points.len(), 5);
        assert_eq!(made, ["named", "anon"]);
        let mut never = |_: Option<&str>| -> std::io::Result<(String, PathBuf)> { unreachable!() };
        for bad in [
            json!({"Binds": ["/x:relative"]}),
            json!({"Binds": ["/x:/a/../b"]}),
            json!({"Binds": ["a:b:c:d"]}),
        ] {
            assert!(user_mounts(&bad, &json!({}), &json!({}), &mut never, false).is_err());
        }
    }
}
