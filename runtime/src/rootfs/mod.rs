//! The container's root filesystem, set up by its init inside its own mount namespace (new, or
//! joined by path): `prepare` (propagation, the rootfs as a mount point, every `mounts[]`
//! entry, /dev) runs while the host's tree is still visible, `enter` makes the rootfs `/`, and
//! `finalize` (masked and read-only paths, read-only root) runs from inside.

mod cgroupfs;
mod devices;
pub(crate) mod idmap;
mod mounts;
mod options;
mod paths;
mod pivot;
mod resolve;

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::cgroups::{Cgroup, MountLine};
use crate::error::{Context, Error, Result};
use crate::sys;

pub use options::MountOptions;
pub(crate) use resolve::Root;

/// What the rootfs setup needs besides the config.
pub(crate) struct RootfsSetup<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub cgroup: &'a Cgroup,
    pub cgroup_ns: bool,
    pub net_ns: bool,
    /// In a user namespace mknod is refused: device nodes are bound from the host.
    pub user_ns: bool,
    pub no_pivot: bool,
    /// Idmapped mounts the runtime made, detached, by index in `mounts[]`.
    pub idmapped: &'a [(usize, std::os::fd::OwnedFd)],
    /// Called before the cgroup filesystem is mounted: the init must be in its cgroup (and
    /// namespace) by then.
    pub enter_cgroup: &'a dyn Fn() -> Result<()>,
}

/// Mount propagation of "/" asked by `linux.rootfsPropagation` (default: rslave, so host mounts
/// still appear but nothing the container mounts leaks out).
fn root_propagation(spec: &Spec) -> Result<libc::c_ulong> {
    let value = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
        .unwrap_or("");
    Ok(match value {
        "" | "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        other => {
            return Err(Error::config(
                "config.json",
                "linux.rootfsPropagation",
                format!("unknown propagation {other:?}"),
            ));
        }
    })
}

/// Checks the parts of the config rootfs setup depends on, before any process exists.
pub(crate) fn validate(spec: &Spec) -> Result<()> {
    root_propagation(spec)?;
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !m.destination().is_absolute() {
            return Err(Error::config(
                "config.json",
                format!("mounts[{i}].destination"),
                format!("{} is not absolute", m.destination().display()),
            ));
        }
    }
    if let Some(devices) = spec.linux().as_ref().and_then(|l| l.devices().as_ref()) {
        devices::spec_nodes(devices)?;
    }
    Ok(())
}

pub(crate) fn prepare(s: &RootfsSetup<'_>) -> Result<()> {
    let propagation = root_propagation(s.spec)?;
    sys::mount(None, c"/", None, propagation, None).op(|| "set propagation of /".to_string())?;
    let rootfs_c = mounts::cstring(s.rootfs)?;
    // pivot_root refuses a new root whose parent mount is shared: so it is after rshared,
    // and may still be after a propagation that left the mounts below / as they were.
    if propagation & libc::MS_SHARED != 0 || propagation & libc::MS_REC == 0 {
        make_parent_private(s.rootfs)?;
    }
    // pivot_root needs the new root to be a mount point.
    sys::mount(
        Some(&rootfs_c),
        &rootfs_c,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .at("bind rootfs onto itself", s.rootfs)?;

    let root = Root::open(s.rootfs)?;
    let ctx = mounts::MountContext {
        enter_cgroup: s.enter_cgroup,
        root: &root,
        bundle: s.bundle,
        cgroup: s.cgroup,
        cgroup_ns: s.cgroup_ns,
        net_ns: s.net_ns,
        user_ns: s.user_ns,
        idmapped: s.idmapped,
    };
    let spec_mounts = s.spec.mounts().as_deref().unwrap_or_default();
    for (i, m) in spec_mounts.iter().enumerate() {
        mounts::mount_entry(&ctx, i, m)?;
    }

    // /dev bound from the host already has its nodes.
    let dev_is_bind = spec_mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || MountOptions::parse(m.options().as_deref().unwrap_or_default()).bind)
    });
    let mut nodes = if dev_is_bind {
        Vec::new()
    } else {
        devices::default_nodes()
    };
    if let Some(list) = s.spec.linux().as_ref().and_then(|l| l.devices().as_ref()) {
        let extra = devices::spec_nodes(list)?;
        nodes.retain(|n| !extra.iter().any(|e| e.path == n.path));
        nodes.extend(extra);
    }
    devices::create_nodes(&root, &nodes, s.user_ns)?;
    if !dev_is_bind {
        let ptmx = spec_mounts.iter().any(|m| {
            m.typ().as_deref() == Some("devpts") && m.destination() == Path::new("/dev/pts")
        });
        devices::create_symlinks(&root, ptmx)?;
    }
    Ok(())
}

pub(crate) fn enter(s: &RootfsSetup<'_>) -> Result<()> {
    if s.no_pivot {
        pivot::move_root(s.rootfs)
    } else {
        pivot::pivot_root(s.rootfs)
    }
}

pub(crate) fn finalize(s: &RootfsSetup<'_>) -> Result<()> {
    let linux = s.spec.linux().as_ref();
    if let Some(masked) = linux.and_then(|l| l.masked_paths().as_ref()) {
        paths::mask(masked)?;
    }
    if let Some(ro) = linux.and_then(|l| l.readonly_paths().as_ref()) {
        paths::make_readonly(ro)?;
    }
    if s.spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        paths::readonly_root()?;
    }
    Ok(())
}

/// Binds the pty slave onto /dev/console, as a container with a terminal expects.
pub(crate) fn mount_console(slave_path: &Path) -> Result<()> {
    let console = Path::new("/dev/console");
    if fs::symlink_metadata(console).is_err() {
        fs::File::create(console).at("create", console)?;
    }
    let src = mounts::cstring(slave_path)?;
    sys::mount(Some(&src), c"/dev/console", None, libc::MS_BIND, None).at("bind onto", console)
}

/// With shared propagation, pivot_root refuses a new root whose parent mount is shared: make
/// that one mount private.
fn make_parent_private(rootfs: &Path) -> Result<()> {
    let info = crate::sys::read_pseudo_to_string("/proc/self/mountinfo")
        .at("read", "/proc/self/mountinfo")?;
    let parent: Option<PathBuf> = info
        .lines()
        .filter_map(MountLine::parse)
        .map(|m| m.mountpoint)
        .filter(|mp| rootfs.starts_with(mp))
        .max_by_key(|mp| mp.as_os_str().len());
    if let Some(mp) = parent {
        let c = mounts::cstring(&mp)?;
        sys::mount(None, &c, None, libc::MS_PRIVATE, None).at("make private", &mp)?;
    }
    Ok(())
}
