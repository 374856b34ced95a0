//! The `cgroup` mount inside the container (/sys/fs/cgroup), shaped like the host's: one cgroup2
//! mount on a unified host; on v1 and hybrid hosts a tmpfs holding one mount per hierarchy
//! (plus `unified` on hybrid). With its own cgroup namespace the container gets fresh cgroupfs
//! mounts rooted at its cgroup; without one, binds of its own cgroup directories.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use super::mounts::{MountContext, bind};
use super::options::MountOptions;
use super::resolve::Leaf;
use crate::error::{Context, Error, Result};
use crate::sys::{self, MOUNT_ATTR_RDONLY, MountAttr};

pub(crate) fn mount_cgroupfs(
    ctx: &MountContext<'_>,
    dest: &Path,
    opts: &MountOptions,
) -> Result<()> {
    let flags = opts.flags | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let target = ctx.root.create(dest, Leaf::Dir)?;
    if ctx.cgroup.dirs.is_empty() {
        // A rootless container without a cgroup of its own: the host's hierarchies, read-only
        // (nothing this user could not read on the host anyway).
        let mut o = opts.clone();
        o.bind = true;
        o.recursive_bind = true;
        o.recursive.attr_set |= crate::sys::MOUNT_ATTR_RDONLY
            | crate::sys::MOUNT_ATTR_NOSUID
            | crate::sys::MOUNT_ATTR_NODEV
            | crate::sys::MOUNT_ATTR_NOEXEC;
        return super::mounts::bind(Path::new("/sys/fs/cgroup"), &target, &o);
    }
    let has_v1 = ctx.cgroup.dirs.iter().any(|d| !d.unified);
    if !has_v1 {
        let dir = ctx.cgroup.unified_dir().ok_or_else(|| {
            Error::Unsupported("no cgroup hierarchy is mounted on the host".into())
        })?;
        return mount_one(ctx, &target, &dir.path, true, &[], flags);
    }

    sys::mount(
        Some(c"tmpfs"),
        &sys::fd_path(target.as_fd()),
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(c"mode=755"),
    )
    .op(|| "mount tmpfs for the cgroup hierarchies".to_string())?;
    let top = ctx.root.lookup(dest, false).at("resolve in rootfs", dest)?;
    for d in &ctx.cgroup.dirs {
        let Some(name) = d.mountpoint.file_name() else {
            continue;
        };
        let sub = mount_point(&top, name, &dest.join(name))?;
        mount_one(ctx, &sub, &d.path, d.unified, &d.subsystems, flags)?;
        // Co-mounted controllers ("cpu,cpuacct") are reachable under each name, as on hosts.
        let name = name.to_string_lossy();
        if name.contains(',') {
            for alias in name.split(',') {
                match rustix::fs::symlinkat(name.as_ref(), &top, alias) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e).op(|| format!("symlink {alias} -> {name}")),
                }
            }
        }
    }
    if opts.flags & libc::MS_RDONLY != 0 {
        let ro = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY,
            ..Default::default()
        };
        if let Err(e) = sys::mount_setattr(top.as_fd(), false, &ro) {
            if e.raw_os_error() != Some(libc::ENOSYS) {
                return Err(e).op(|| "make the cgroup tmpfs read-only".to_string());
            }
            sys::mount(
                None,
                &sys::fd_path(top.as_fd()),
                None,
                libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC,
                Some(c"mode=755"),
            )
            .op(|| "remount the cgroup tmpfs read-only".to_string())?;
        }
    }
    Ok(())
}

/// The directory `name` on the tmpfs just mounted at `top`, made and opened relative to it: a
/// fresh tmpfs in the container's own mount namespace holds nothing a path could be turned
/// aside by, so the rootfs-wide resolution (two `openat2` and a check per name) is not needed.
fn mount_point(top: &OwnedFd, name: &OsStr, dest: &Path) -> Result<OwnedFd> {
    match rustix::fs::mkdirat(top, name, Mode::from_bits_truncate(0o755)) {
        // Two hierarchies mounted under the same name elsewhere on the host: the later one is
        // mounted over the earlier one, as the resolving path did.
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e).at("create in rootfs", dest),
    }
    rustix::fs::openat(
        top,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("resolve in rootfs", dest)
}

fn mount_one(
    ctx: &MountContext<'_>,
    target: &OwnedFd,
    host_dir: &Path,
    unified: bool,
    subsystems: &[String],
    flags: libc::c_ulong,
) -> Result<()> {
    if ctx.cgroup_ns {
        let (fstype, data) = if unified {
            (c"cgroup2", None)
        } else {
            (
                c"cgroup",
                Some(std::ffi::CString::new(subsystems.join(",")).unwrap_or_default()),
            )
        };
        sys::mount(
            Some(fstype),
            &sys::fd_path(target.as_fd()),
            Some(fstype),
            flags,
            data.as_deref(),
        )
        .op(|| {
            format!(
                "mount {} {}",
                fstype.to_string_lossy(),
                subsystems.join(",")
            )
        })
    } else {
        let opts = MountOptions {
            flags,
            bind: true,
            recursive_bind: true,
            ..Default::default()
        };
        bind(host_dir, target, &opts)
    }
}
