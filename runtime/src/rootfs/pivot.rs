//! Making the prepared rootfs the container's `/`.

use std::path::Path;

use rustix::fs::{Mode, OFlags};

use super::mounts::cstring;
use crate::error::{Context, Result};
use crate::sys;

/// pivot_root(".", "."): the old root ends up stacked under the new one and is detached at
/// once, so no directory for it is needed inside the image. Where pivot_root is impossible
/// (the host runs from its initramfs, which cannot be unmounted) falls back to `move_root`;
/// any other refusal is an error (`--no-pivot` chooses the weaker way explicitly).
pub(crate) fn pivot_root(rootfs: &Path) -> Result<()> {
    let new_root = rustix::fs::open(
        rootfs,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("open rootfs", rootfs)?;
    let old_root = rustix::fs::open(
        "/",
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("open", "/")?;
    rustix::process::fchdir(&new_root).at("chdir", rootfs)?;
    match sys::pivot_root(c".", c".") {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && root_is_initramfs() => {
            log::warn!(
                "pivot_root is impossible from an initramfs root; moving the rootfs onto / and chrooting instead"
            );
            return move_root(rootfs);
        }
        Err(e) => return Err(e).at("pivot_root", rootfs),
    }
    // Now "." is the new root with the old one mounted on top of it: step onto the old root,
    // keep its unmount from propagating to the host, and detach it.
    rustix::process::fchdir(&old_root).at("chdir", "old root")?;
    sys::mount(None, c".", None, libc::MS_SLAVE | libc::MS_REC, None)
        .op(|| "make the old root a slave".to_string())?;
    sys::umount2(c".", libc::MNT_DETACH).op(|| "detach the old root".to_string())?;
    rustix::process::chdir("/").at("chdir", "/")?;
    log::debug!("rootfs {}: pivot_root, old root detached", rootfs.display());
    Ok(())
}

/// For a root pivot_root cannot leave (initramfs) or when asked (`--no-pivot`): move the
/// rootfs mount onto / and chroot into it. The old root stays reachable to a process that can
/// escape a chroot, which is why this is not the default.
pub(crate) fn move_root(rootfs: &Path) -> Result<()> {
    rustix::process::chdir(rootfs).at("chdir", rootfs)?;
    let src = cstring(rootfs)?;
    sys::mount(Some(&src), c"/", None, libc::MS_MOVE, None).at("move mount onto /", rootfs)?;
    rustix::process::chroot(".").at("chroot", rootfs)?;
    rustix::process::chdir("/").at("chdir", "/")?;
    log::debug!(
        "rootfs {}: moved onto / and chrooted (no pivot_root)",
        rootfs.display()
    );
    Ok(())
}

/// The host's / is the initramfs (rootfs: ramfs or tmpfs), which pivot_root cannot leave.
fn root_is_initramfs() -> bool {
    const RAMFS_MAGIC: u64 = 0x8584_58f6;
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    rustix::fs::statfs("/").is_ok_and(|s| {
        let t = s.f_type as u64;
        t == RAMFS_MAGIC || t == TMPFS_MAGIC
    })
}
