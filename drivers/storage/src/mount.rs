//! Mounting what a snapshotter returns. overlay goes through the new mount API (fsopen +
//! fsconfig, one `lowerdir+` per layer, Linux 6.8) so the number of layers is not bounded by a
//! page of mount options; older kernels get mount(2) with the joined options, which caps depth
//! at what fits in a page (an error says so).

use std::path::Path;

use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use crate::error::{Context, Error, Result};
use crate::snapshot::Mount;

/// overlayfs stacks at most this many lower layers (the kernel's OVL_MAX_STACK).
pub const OVERLAY_MAX_LAYERS: usize = 500;

/// Mounts `mounts` on `target`, in order.
pub fn mount(mounts: &[Mount], target: &Path) -> Result<()> {
    for m in mounts {
        match m.typ.as_str() {
            "bind" => bind(m, target)?,
            "overlay" => overlay(m, target)?,
            other => {
                return Err(Error::Unsupported(format!(
                    "mount type {other:?} is not one this crate makes"
                )));
            }
        }
    }
    Ok(())
}

/// Detaches whatever is mounted on `target`.
pub fn unmount(target: &Path) -> Result<()> {
    rustix::mount::unmount(target, UnmountFlags::DETACH).at("umount", target)
}

fn bind(m: &Mount, target: &Path) -> Result<()> {
    let recursive = m.options.iter().any(|o| o == "rbind");
    if recursive {
        rustix::mount::mount_bind_recursive(&m.source, target)
    } else {
        rustix::mount::mount_bind(&m.source, target)
    }
    .at("bind mount onto", target)?;
    if m.options.iter().any(|o| o == "ro") {
        rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
            .at("remount read-only", target)?;
    }
    Ok(())
}

fn overlay(m: &Mount, target: &Path) -> Result<()> {
    let lowers = m
        .options
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
        .map(|l| l.split(':').count())
        .unwrap_or(0);
    if lowers > OVERLAY_MAX_LAYERS {
        return Err(Error::Unsupported(format!(
            "overlay stacks at most {OVERLAY_MAX_LAYERS} layers; this mount has {lowers}"
        )));
    }
    match overlay_new_api(m, target) {
        Ok(()) => Ok(()),
        // No fsopen, or no `lowerdir+` (before 6.8): the classic way. Before 6.5 overlayfs
        // takes fsconfig keys as legacy options and refuses `lowerdir+` only at create, so
        // any EINVAL falls back; a mistake of the caller's fails the classic call the same way.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) => {
            overlay_classic(m, target)
        }
        Err(e) => Err(e),
    }
}

fn overlay_new_api(m: &Mount, target: &Path) -> Result<()> {
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .op(|| "fsopen overlay".to_string())?;
    let mut read_only = false;
    for opt in &m.options {
        if let Some(lowers) = opt.strip_prefix("lowerdir=") {
            for lower in lowers.split(':') {
                rustix::mount::fsconfig_set_string(&fs, "lowerdir+", lower)
                    .op(|| format!("fsconfig lowerdir+ {lower}"))?;
            }
        } else if opt == "ro" {
            read_only = true;
        } else if let Some((key, value)) = opt.split_once('=') {
            rustix::mount::fsconfig_set_string(&fs, key, value)
                .op(|| format!("fsconfig {key}={value}"))?;
        } else {
            rustix::mount::fsconfig_set_flag(&fs, opt.as_str()).op(|| format!("fsconfig {opt}"))?;
        }
    }
    rustix::mount::fsconfig_create(&fs).op(|| format!("mount overlay on {}", target.display()))?;
    let attrs = if read_only {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .op(|| format!("mount overlay on {}", target.display()))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .op(|| format!("mount overlay on {}", target.display()))
}

fn overlay_classic(m: &Mount, target: &Path) -> Result<()> {
    let mut flags = MountFlags::empty();
    let data: Vec<&str> = m
        .options
        .iter()
        .map(String::as_str)
        .filter(|o| {
            if *o == "ro" {
                flags |= MountFlags::RDONLY;
                false
            } else {
                true
            }
        })
        .collect();
    let data = data.join(",");
    // SAFETY: sysconf takes no pointers.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    if data.len() >= page {
        return Err(Error::Unsupported(format!(
            "overlay options take {} bytes, more than a page ({page}); this kernel lacks \
             `lowerdir+` (Linux 6.8), which has no such limit",
            data.len()
        )));
    }
    let data = std::ffi::CString::new(data)
        .map_err(|_| Error::Unsupported("NUL in overlay options".into()))?;
    rustix::mount::mount("overlay", target, "overlay", flags, Some(data.as_c_str()))
        .at("mount overlay on", target)
}
