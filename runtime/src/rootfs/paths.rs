//! `linux.maskedPaths`, `linux.readonlyPaths` and `root.readonly`, applied after pivot_root, so
//! every path here already resolves inside the container.

use std::ffi::CString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use crate::error::{Context, Error, Result};
use crate::sys::{self, MOUNT_ATTR_RDONLY, MountAttr};

fn cpath(p: &str) -> Result<CString> {
    CString::new(Path::new(p).as_os_str().as_bytes()).map_err(|_| {
        Error::config(
            "config.json",
            "linux.maskedPaths",
            format!("{p:?} holds a NUL"),
        )
    })
}

/// Hides each path: directories under an empty read-only tmpfs, files under /dev/null. Paths
/// the kernel does not have are skipped.
pub(crate) fn mask(paths: &[String]) -> Result<()> {
    for p in paths {
        let meta = match std::fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).at("masked path", p),
        };
        let target = cpath(p)?;
        if meta.is_dir() {
            sys::mount(
                Some(c"tmpfs"),
                &target,
                Some(c"tmpfs"),
                libc::MS_RDONLY,
                Some(c"size=0k"),
            )
            .at("mask with tmpfs", p)?;
        } else {
            sys::mount(Some(c"/dev/null"), &target, None, libc::MS_BIND, None)
                .at("mask with /dev/null", p)?;
        }
    }
    Ok(())
}

/// Makes each path (and everything mounted below it) read-only.
pub(crate) fn make_readonly(paths: &[String]) -> Result<()> {
    for p in paths {
        let target =
            match rustix::fs::open(p.as_str(), OFlags::PATH | OFlags::CLOEXEC, Mode::empty()) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(e).at("readonly path", p),
            };
        let src = cpath(p)?;
        let tree = sys::open_tree(&src, true).at("open_tree", p)?;
        let ro = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY,
            ..Default::default()
        };
        match sys::mount_setattr(tree.as_fd(), true, &ro) {
            Ok(()) => sys::move_mount(tree.as_fd(), target.as_fd()).at("make read-only", p)?,
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                sys::mount(Some(&src), &src, None, libc::MS_BIND | libc::MS_REC, None)
                    .at("bind", p)?;
                remount_readonly(&src).at("remount read-only", p)?;
            }
            Err(e) => return Err(e).at("mount_setattr read-only", p),
        }
    }
    Ok(())
}

/// `root.readonly`: the root mount alone; /proc, /dev … keep their own flags.
pub(crate) fn readonly_root() -> Result<()> {
    let root =
        rustix::fs::open("/", OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).at("open", "/")?;
    let ro = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        ..Default::default()
    };
    match sys::mount_setattr(root.as_fd(), false, &ro) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            remount_readonly(c"/").at("remount read-only", "/")
        }
        Err(e) => Err(e).at("make read-only", "/"),
    }
}

/// Classic read-only bind remount, keeping the flags a less privileged namespace may not drop.
fn remount_readonly(path: &std::ffi::CStr) -> io::Result<()> {
    let st = rustix::fs::statvfs(path)?;
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
    for (stf, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
    ] {
        if st.f_flag.bits() & stf != 0 {
            flags |= ms;
        }
    }
    sys::mount(None, path, None, flags, None)
}
