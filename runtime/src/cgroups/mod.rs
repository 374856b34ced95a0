//! A container's cgroup, whichever mode the host runs: v1, hybrid or unified (v2).
//!
//! `Cgroup::create` makes the container's directory in every hierarchy (the process joins all of
//! them, as runc does, so `ps`, `kill --all` and `pause` see every process) and writes the
//! resource limits; each controller's limits go to the hierarchy that carries it here. On a
//! hybrid host (this project's CI) memory, cpu, pids … are v1 while `hugetlb` lives on the
//! cgroup2 mount: both are handled, nothing is refused.

mod device_filter;
mod devices;
mod layout;
mod stats;
mod v1;
mod v2;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

pub use device_filter::DeviceFilter;
pub use devices::DeviceRule;
pub(crate) use layout::MountLine;
pub use layout::{Layout, Mode, UnifiedHierarchy, V1Hierarchy};
pub use stats::{
    Blkio, BlkioEntry, Cpu, CpuUsage, Hugetlb, Memory, MemoryEntry, Pids, Stats, Throttling,
};

/// The container's directory in one hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDir {
    pub path: PathBuf,
    /// Subsystems of a v1 hierarchy; empty for the cgroup2 hierarchy.
    #[serde(default)]
    pub subsystems: Vec<String>,
    /// The directory is on the cgroup2 hierarchy.
    pub unified: bool,
    /// Path of the directory inside its hierarchy (what /proc/PID/cgroup shows).
    pub hierarchy_path: PathBuf,
    /// Where the hierarchy is mounted on the host.
    pub mountpoint: PathBuf,
}

impl CgroupDir {
    /// Whether a process is in this directory already: born in it (cgroup2) or moved itself
    /// (v1).
    fn skipped(&self, born_in_unified: bool, moved_itself_v1: bool) -> bool {
        if self.unified {
            born_in_unified
        } else {
            moved_itself_v1
        }
    }

    fn has(&self, subsystem: &str) -> bool {
        self.subsystems.iter().any(|s| s == subsystem)
    }
}

/// A container's cgroup across all hierarchies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    pub dirs: Vec<CgroupDir>,
    /// Controllers the cgroup2 directory drives (all on pure v2; the leftovers on hybrid).
    #[serde(default)]
    pub unified_controllers: Vec<String>,
}

/// Which of a cgroup's directories an operation covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    All,
    /// The cgroup2 directory (all of it on a pure v2 host).
    Unified,
    /// The v1 hierarchies' directories.
    V1,
}

impl Part {
    fn holds(self, d: &CgroupDir) -> bool {
        match self {
            Part::All => true,
            Part::Unified => d.unified,
            Part::V1 => !d.unified,
        }
    }
}

/// Checks a `linux.cgroupsPath`: it must name a cgroup below a hierarchy's root, never the
/// root itself, and never climb with `..` (which would leave the cgroup filesystem).
pub fn validate_path(path: &Path) -> Result<()> {
    use std::path::Component;
    let field = "linux.cgroupsPath";
    let mut normal = 0;
    for c in path.components() {
        match c {
            Component::Normal(_) => normal += 1,
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::config(
                    "config.json",
                    field,
                    format!("{path:?} climbs with \"..\""),
                ));
            }
        }
    }
    if normal == 0 {
        return Err(Error::config(
            "config.json",
            field,
            format!("{path:?} names a hierarchy's root"),
        ));
    }
    Ok(())
}

impl Cgroup {
    /// Works out the container's directories for `cgroups_path` without touching anything.
    pub fn plan(layout: &Layout, cgroups_path: &Path) -> Cgroup {
        let mut dirs = Vec::with_capacity(layout.v1.len() + 1);
        for h in &layout.v1 {
            let path = layout::dir_in_hierarchy(&h.mountpoint, &h.root, &h.own_path, cgroups_path);
            dirs.push(CgroupDir {
                hierarchy_path: hierarchy_path(&h.mountpoint, &h.root, &path),
                path,
                subsystems: h.subsystems.clone(),
                unified: false,
                mountpoint: h.mountpoint.clone(),
            });
        }
        let mut unified_controllers = Vec::new();
        if let Some(u) = &layout.unified {
            let path = layout::dir_in_hierarchy(&u.mountpoint, &u.root, &u.own_path, cgroups_path);
            unified_controllers = u
                .controllers
                .iter()
                .filter(|c| layout.on_unified(c))
                .cloned()
                .collect();
            dirs.push(CgroupDir {
                hierarchy_path: hierarchy_path(&u.mountpoint, &u.root, &path),
                path,
                subsystems: Vec::new(),
                unified: true,
                mountpoint: u.mountpoint.clone(),
            });
        }
        Cgroup {
            dirs,
            unified_controllers,
        }
    }

    /// Creates the directories (parents too) and applies `resources`. On error, whatever was
    /// created is removed again. A cgroup that already holds processes is refused: the
    /// container would share it, and `kill --all` or `delete` would reach the others.
    pub fn create(&self, resources: Option<&LinuxResources>) -> Result<()> {
        self.create_part(resources, Part::All)
    }

    /// [`Cgroup::create`] for the directories of `part` only, so the v1 ones can be made while
    /// the init already sets up its mounts. Limits a part cannot serve are checked against
    /// the whole cgroup either way.
    pub fn create_part(&self, resources: Option<&LinuxResources>, part: Part) -> Result<()> {
        let dirs = || self.dirs.iter().filter(move |d| part.holds(d));
        // Before anything is written (making a cgroup2 directory enables controllers in its
        // parents): a refused cgroup changes nothing on the host.
        for d in dirs() {
            if let Ok(procs) = crate::sys::read_pseudo_to_string(d.path.join("cgroup.procs")) {
                if !procs.trim().is_empty() {
                    return Err(Error::config(
                        "config.json",
                        "linux.cgroupsPath",
                        format!("{} already holds processes", d.path.display()),
                    ));
                }
            }
        }
        let mut made = Vec::new();
        let result = self.make_dirs(dirs(), &mut made).and_then(|()| {
            crate::trace::mark("cgroup: directories made");
            // Device rules are written even when the config has none: access is deny-by-default.
            let mut r = resources.cloned().unwrap_or_default();
            if r.devices().is_none() {
                r.set_devices(Some(Vec::new()));
            }
            self.apply_part(&r, part)
        });
        if result.is_err() {
            // Only what this call made: a cgroup that existed before is not ours to remove.
            for dir in made.iter().rev() {
                let _ = fs::remove_dir(dir);
            }
        }
        result
    }

    /// The directories of `part` alone.
    pub fn part(&self, part: Part) -> Cgroup {
        Cgroup {
            dirs: self
                .dirs
                .iter()
                .filter(|d| part.holds(d))
                .cloned()
                .collect(),
            unified_controllers: self.unified_controllers.clone(),
        }
    }

    /// Whether the cgroup has directories in v1 hierarchies.
    pub fn has_v1(&self) -> bool {
        self.dirs.iter().any(|d| !d.unified)
    }

    /// Makes the directories, recording each one it created (parents included) in `made`.
    fn make_dirs<'a>(
        &self,
        dirs: impl Iterator<Item = &'a CgroupDir>,
        made: &mut Vec<PathBuf>,
    ) -> Result<()> {
        for d in dirs {
            if d.unified {
                v2::make_dir(&d.path, &d.mountpoint, &self.unified_controllers, made)?;
            } else {
                mkdir_parents(&d.path, &d.mountpoint, &mut |created| {
                    made.push(created.to_path_buf());
                    if d.has("cpuset") {
                        v1::inherit_cpuset(created)
                    } else {
                        Ok(())
                    }
                })?;
            }
        }
        Ok(())
    }

    /// Writes the limits `resources` sets into each controller's hierarchy; what it leaves out
    /// is left as it is (so `update` can change one limit). Device rules are replaced when
    /// present.
    pub fn apply(&self, resources: &LinuxResources) -> Result<()> {
        self.apply_part(resources, Part::All)
    }

    fn apply_part(&self, resources: &LinuxResources, part: Part) -> Result<()> {
        let normalized = zero_means_unset(resources);
        let resources = &normalized;
        self.check_unserved(resources)?;
        for d in self.dirs.iter().filter(|d| part.holds(d)) {
            if d.unified {
                v2::apply(
                    &d.path,
                    resources,
                    &self.unified_controllers,
                    self.v1_devices(),
                )?;
            } else {
                v1::apply(d, resources)?;
            }
        }
        Ok(())
    }

    fn v1_devices(&self) -> bool {
        self.dirs.iter().any(|d| d.has("devices"))
    }

    fn serves(&self, controller: &str) -> bool {
        self.dirs.iter().any(|d| d.has(controller))
            || self.unified_controllers.iter().any(|c| c == controller)
    }

    /// A limit asked for on a controller this host does not have is an error, not a silent
    /// no-op: the user would believe the container is limited when it is not.
    fn check_unserved(&self, r: &LinuxResources) -> Result<()> {
        let wanted = [
            ("memory", r.memory().is_some()),
            ("cpu", r.cpu().as_ref().is_some_and(v1::cpu_wants_cpu)),
            ("cpuset", r.cpu().as_ref().is_some_and(v1::cpu_wants_cpuset)),
            ("pids", r.pids().is_some()),
            ("blkio", r.block_io().is_some() && !self.serves("io")),
            (
                "hugetlb",
                r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
            ),
            ("rdma", r.rdma().as_ref().is_some_and(|m| !m.is_empty())),
            (
                "net_cls",
                r.network().as_ref().is_some_and(|n| n.class_id().is_some()),
            ),
            (
                "net_prio",
                r.network()
                    .as_ref()
                    .is_some_and(|n| n.priorities().as_ref().is_some_and(|p| !p.is_empty())),
            ),
        ];
        for (controller, asked) in wanted {
            if asked && !self.serves(controller) {
                return Err(Error::Unsupported(format!(
                    "linux.resources asks for the {controller} controller, which this host does not mount"
                )));
            }
        }
        if r.unified().as_ref().is_some_and(|u| !u.is_empty()) && self.unified_dir().is_none() {
            return Err(Error::Unsupported(
                "linux.resources.unified needs cgroup2, which this host does not mount".into(),
            ));
        }
        Ok(())
    }

    /// Moves `pid` into the container's directory in every hierarchy but the cgroup2 one with
    /// `born_in_unified` (the process was cloned into it) and the v1 ones with `moved_itself_v1`
    /// (it went through [`Cgroup::v1_task_files`]).
    pub fn add_process(
        &self,
        pid: i32,
        born_in_unified: bool,
        moved_itself_v1: bool,
    ) -> Result<()> {
        let value = pid.to_string();
        for d in self
            .dirs
            .iter()
            .filter(|d| !d.skipped(born_in_unified, moved_itself_v1))
        {
            write_file(&d.path, "cgroup.procs", &value)?;
        }
        Ok(())
    }

    /// The container's cgroup2 directory, opened for a child to be cloned into
    /// (`CLONE_INTO_CGROUP`), where there is one.
    pub fn unified_dir_fd(&self) -> Result<Option<std::os::fd::OwnedFd>> {
        use rustix::fs::{Mode, OFlags, open};
        self.unified_dir()
            .map(|d| {
                open(
                    &d.path,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io::Error::from)
                .at("open", &d.path)
            })
            .transpose()
    }

    /// The `tasks` files of the container's v1 directories, opened for writing by the caller,
    /// for a single-threaded child to move itself with ([`join_v1_self`]): permission is
    /// checked with the opener's credentials, so the child may be in a user namespace by then.
    pub fn v1_task_files(&self) -> Result<Vec<(PathBuf, std::os::fd::OwnedFd)>> {
        self.dirs
            .iter()
            .filter(|d| !d.unified)
            .map(|d| {
                let path = d.path.join("tasks");
                let file = fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .at("cgroup: open", &path)?;
                Ok((path, std::os::fd::OwnedFd::from(file)))
            })
            .collect()
    }

    /// Moves `pid` in beside the container's init. On cgroup2 a container that made cgroups
    /// below its own (systemd inside) may not have processes at the top ("no internal
    /// processes"): there the process joins the init's own cgroup instead. Skipped as in
    /// [`Cgroup::add_process`].
    pub fn add_process_beside(
        &self,
        pid: i32,
        init: i32,
        born_in_unified: bool,
        moved_itself_v1: bool,
    ) -> Result<()> {
        let value = pid.to_string();
        for d in self
            .dirs
            .iter()
            .filter(|d| !d.skipped(born_in_unified, moved_itself_v1))
        {
            match fs::write(d.path.join("cgroup.procs"), &value) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && d.unified => {
                    let own = crate::sys::read_pseudo_to_string(format!("/proc/{init}/cgroup"))
                        .op(|| format!("read the cgroup of pid {init}"))?;
                    let path = own
                        .lines()
                        .find_map(|l| l.strip_prefix("0::"))
                        .unwrap_or("/");
                    let dir = d.mountpoint.join(path.trim_start_matches('/'));
                    write_file(&dir, "cgroup.procs", &value)?;
                }
                Err(e) => {
                    return Err(e).op(|| {
                        format!(
                            "cgroup: write {value:?} to {}",
                            d.path.join("cgroup.procs").display()
                        )
                    });
                }
            }
        }
        Ok(())
    }

    /// Every pid in the container's cgroup, nested cgroups included.
    pub fn pids(&self) -> Result<Vec<i32>> {
        // Any one hierarchy holds all the container's processes; prefer one that exists.
        let Some(dir) = self.dirs.iter().find(|d| d.path.exists()) else {
            return Ok(Vec::new());
        };
        let mut pids = Vec::new();
        collect_pids(&dir.path, &mut pids)?;
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Removes the container's directories (nested ones first). Directories that are already
    /// gone are fine; a cgroup that stays busy is an error after about a second of retries
    /// (processes that were just killed leave the cgroup asynchronously).
    pub fn remove(&self) -> Result<()> {
        let mut first_err = None;
        for d in &self.dirs {
            if let Err(e) = remove_tree(&d.path) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    pub fn is_frozen(&self) -> bool {
        if let Some(d) = self.dirs.iter().find(|d| d.has("freezer")) {
            return crate::sys::read_pseudo_to_string(d.path.join("freezer.state"))
                .is_ok_and(|s| s.trim() == "FROZEN");
        }
        self.unified_dir().is_some_and(|d| {
            crate::sys::read_pseudo_to_string(d.path.join("cgroup.freeze"))
                .is_ok_and(|s| s.trim() == "1")
        })
    }

    /// Freezes (`true`) or thaws every process of the container and waits until the kernel
    /// reports the new state.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        if let Some(d) = self.dirs.iter().find(|d| d.has("freezer")) {
            return v1::set_frozen(&d.path, frozen);
        }
        if let Some(d) = self.dirs.iter().find(|d| d.unified) {
            return v2::set_frozen(&d.path, frozen);
        }
        Err(Error::Unsupported(
            "no freezer: the host mounts neither the v1 freezer nor cgroup2".into(),
        ))
    }

    /// The directory for a v1 subsystem, or the cgroup2 directory if it serves it.
    pub fn dir_for(&self, controller: &str) -> Option<&CgroupDir> {
        self.dirs.iter().find(|d| d.has(controller)).or_else(|| {
            self.dirs
                .iter()
                .find(|d| d.unified && self.unified_controllers.iter().any(|c| c == controller))
        })
    }

    pub fn unified_dir(&self) -> Option<&CgroupDir> {
        self.dirs.iter().find(|d| d.unified)
    }
}

/// Whether `resources` sets any limit (device rules aside: without a cgroup they cannot be
/// enforced, but in a user namespace no device node can be made either).
pub fn asks_for_limits(r: &LinuxResources) -> bool {
    let r = zero_means_unset(r);
    fn set<T: Default + PartialEq>(v: &Option<T>) -> bool {
        v.as_ref().is_some_and(|v| *v != T::default())
    }
    set(r.memory())
        || set(r.cpu())
        || set(r.pids())
        || set(r.block_io())
        || r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())
        || set(r.network())
        || r.rdma().as_ref().is_some_and(|m| !m.is_empty())
        || r.unified().as_ref().is_some_and(|m| !m.is_empty())
}

/// Docker and containerd send 0 for limits they do not set (`"weight": 0`, `"shares": 0`,
/// `"limit": 0`); runc reads 0 as "leave it", and the kernel refuses some of those zeros
/// (blkio weights are 10..1000). Same here.
fn zero_means_unset(r: &LinuxResources) -> LinuxResources {
    let mut r = r.clone();
    let nz_i = |v: Option<i64>| v.filter(|&x| x != 0);
    let nz_u = |v: Option<u64>| v.filter(|&x| x != 0);
    if let Some(mut m) = *r.memory() {
        m.set_limit(nz_i(m.limit()));
        m.set_reservation(nz_i(m.reservation()));
        m.set_swap(nz_i(m.swap()));
        m.set_kernel(nz_i(m.kernel()));
        m.set_kernel_tcp(nz_i(m.kernel_tcp()));
        r.set_memory(Some(m));
    }
    if let Some(mut c) = r.cpu().clone() {
        c.set_shares(nz_u(c.shares()));
        c.set_quota(nz_i(c.quota()));
        c.set_period(nz_u(c.period()));
        c.set_burst(nz_u(c.burst()));
        c.set_realtime_runtime(nz_i(c.realtime_runtime()));
        c.set_realtime_period(nz_u(c.realtime_period()));
        c.set_cpus(c.cpus().clone().filter(|s| !s.is_empty()));
        c.set_mems(c.mems().clone().filter(|s| !s.is_empty()));
        r.set_cpu(Some(c));
    }
    if r.pids().is_some_and(|p| p.limit() == 0) {
        r.set_pids(None);
    }
    if let Some(mut b) = r.block_io().clone() {
        b.set_weight(b.weight().filter(|&w| w != 0));
        b.set_leaf_weight(b.leaf_weight().filter(|&w| w != 0));
        if let Some(devices) = b.weight_device().clone() {
            // (The writers skip a zero weight of an entry whose leaf weight is set.)
            let kept: Vec<_> = devices
                .into_iter()
                .filter(|d| d.weight().unwrap_or(0) != 0 || d.leaf_weight().unwrap_or(0) != 0)
                .collect();
            b.set_weight_device(Some(kept));
        }
        r.set_block_io(Some(b));
    }
    r
}

fn hierarchy_path(mountpoint: &Path, root: &Path, dir: &Path) -> PathBuf {
    let rel = dir.strip_prefix(mountpoint).unwrap_or(Path::new(""));
    root.join(rel)
}

/// Moves the calling process, which must be single-threaded, into the v1 directories whose
/// `tasks` files are `files`. Writing "0" to `tasks` moves the calling thread alone, and for
/// that the kernel skips its global lock (`cgroup_threadgroup_rwsem`): a pid written to
/// `cgroup.procs` takes it, and its first writer after a quiet spell waits for an RCU grace
/// period (7–20 ms measured here, against ~0.03 ms for this).
pub(crate) fn join_v1_self(files: &[(PathBuf, std::os::fd::OwnedFd)]) -> Result<()> {
    for (path, fd) in files {
        rustix::io::write(fd, b"0")
            .map_err(io::Error::from)
            .op(|| format!("cgroup: write \"0\" to {}", path.display()))?;
    }
    Ok(())
}

/// Writes one value into a cgroup file, naming the file and value on error.
pub(crate) fn write_file(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    fs::write(&path, value).op(|| format!("cgroup: write {value:?} to {}", path.display()))
}

pub(crate) fn read_file(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    crate::sys::read_pseudo_to_string(&path).at("cgroup: read", &path)
}

/// `mkdir -p` that stops at `top` (the hierarchy mount) and calls `on_created` for each level it
/// made, parents first.
fn mkdir_parents(
    dir: &Path,
    top: &Path,
    on_created: &mut dyn FnMut(&Path) -> Result<()>,
) -> Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => on_created(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && dir != top => {
            let parent = dir.parent().unwrap_or(top);
            mkdir_parents(parent, top, on_created)?;
            match fs::create_dir(dir) {
                Ok(()) => on_created(dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e).at("cgroup: mkdir", dir),
            }
        }
        Err(e) => Err(e).at("cgroup: mkdir", dir),
    }
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    let text = match crate::sys::read_pseudo_to_string(dir.join("cgroup.procs")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).at("cgroup: read", dir.join("cgroup.procs")),
    };
    out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    for entry in fs::read_dir(dir).at("cgroup: list", dir)? {
        let entry = entry.at("cgroup: list", dir)?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&entry.path(), out)?;
        }
    }
    Ok(())
}

/// rmdir, and only if the kernel says the cgroup is busy look for nested cgroups to remove first
/// (listing a v1 cgroup directory means reading dozens of entries).
fn remove_tree(dir: &Path) -> Result<()> {
    let mut delay = Duration::from_millis(1);
    let mut waited = Duration::ZERO;
    let mut children_removed = false;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && !children_removed => {
                children_removed = true;
                for entry in fs::read_dir(dir).at("cgroup: list", dir)?.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        remove_tree(&entry.path())?;
                    }
                }
            }
            // Processes that were just killed leave the cgroup asynchronously.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && waited < Duration::from_secs(1) => {
                sleep(delay);
                waited += delay;
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(e).at("cgroup: rmdir", dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroups_paths_are_checked() {
        validate_path(Path::new("/berth/c1")).unwrap();
        validate_path(Path::new("relative/c1")).unwrap();
        for bad in ["/", "", "/a/../../x", "../x", "/."] {
            assert!(validate_path(Path::new(bad)).is_err(), "{bad:?}");
        }
    }
}
