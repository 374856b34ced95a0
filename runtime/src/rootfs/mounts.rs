//! Mounting one `mounts[]` entry of the config into the rootfs. Destinations are resolved inside
//! the root first (`resolve`), then mounted through the descriptor: binds with the new mount API
//! (open_tree, mount_setattr, move_mount: flags are set before the mount becomes visible and no
//! path is looked up twice), filesystems with mount(2) on /proc/self/fd/N.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;

use super::options::MountOptions;
use super::resolve::{Leaf, Root};
use crate::cgroups::Cgroup;
use crate::error::{Context, Error, Result};
use crate::sys::{
    self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, MountAttr,
};

/// What mounting needs to know about the container beyond the entry itself.
pub(crate) struct MountContext<'a> {
    pub enter_cgroup: &'a dyn Fn() -> Result<()>,
    pub root: &'a Root,
    pub bundle: &'a Path,
    pub cgroup: &'a Cgroup,
    /// The container has its own cgroup namespace: cgroupfs can be mounted fresh.
    pub cgroup_ns: bool,
    /// The container has its own network namespace.
    pub net_ns: bool,
    /// The container has its own user namespace.
    pub user_ns: bool,
    /// Idmapped mounts made by the runtime (`idmap`), detached, by index in `mounts[]`.
    pub idmapped: &'a [(usize, OwnedFd)],
}

pub(crate) fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Path {
        op: "path",
        path: p.to_path_buf(),
        source: io::Error::from_raw_os_error(libc::EINVAL),
    })
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Mounts `m` (entry `index` of `mounts`).
pub(crate) fn mount_entry(ctx: &MountContext<'_>, index: usize, m: &Mount) -> Result<()> {
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("");
    let describe = || {
        format!(
            "mounts[{index}] ({} on {})",
            if typ.is_empty() { "bind" } else { typ },
            m.destination().display()
        )
    };
    let idmapped = ctx.idmapped.iter().find(|(i, _)| *i == index);
    let result = if let Some((_, tree)) = idmapped {
        attach_idmapped(ctx, m, tree, &opts)
    } else if opts.bind || typ == "bind" {
        bind_entry(ctx, m, &opts)
    } else if typ == "cgroup" || typ == "cgroup2" {
        (ctx.enter_cgroup)()
            .and_then(|()| super::cgroupfs::mount_cgroupfs(ctx, m.destination(), &opts))
    } else {
        filesystem_entry(ctx, m, typ, &opts)
    };
    result.map_err(|e| Error::Child(format!("{}: {e}", describe())))
}

fn source_path(ctx: &MountContext<'_>, m: &Mount) -> Result<PathBuf> {
    let src = m.source().as_ref().ok_or_else(|| {
        Error::config(
            "config.json",
            "mounts[].source",
            "a bind mount needs a source",
        )
    })?;
    Ok(if src.is_absolute() {
        src.clone()
    } else {
        ctx.bundle.join(src)
    })
}

fn bind_entry(ctx: &MountContext<'_>, m: &Mount, opts: &MountOptions) -> Result<()> {
    let src = source_path(ctx, m)?;
    let meta = fs::metadata(&src).at("bind source", &src)?;
    let leaf = if meta.is_dir() { Leaf::Dir } else { Leaf::File };
    let target = ctx.root.create(m.destination(), leaf)?;
    bind(&src, &target, opts)
}

/// Attaches an idmapped mount the runtime made (flags already set) at the destination.
fn attach_idmapped(
    ctx: &MountContext<'_>,
    m: &Mount,
    tree: &OwnedFd,
    opts: &MountOptions,
) -> Result<()> {
    let st = rustix::fs::fstat(tree).op(|| "stat the idmapped mount".to_string())?;
    let is_dir = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
    let leaf = if is_dir { Leaf::Dir } else { Leaf::File };
    let target = ctx.root.create(m.destination(), leaf)?;
    sys::move_mount(tree.as_fd(), target.as_fd())
        .op(|| "move_mount the idmapped mount".to_string())?;
    propagate(tree, &opts.propagation)
}

/// Binds the host path `src` onto the resolved `target`, with the options' flags, recursive
/// attributes and propagation.
pub(crate) fn bind(src: &Path, target: &OwnedFd, opts: &MountOptions) -> Result<()> {
    let src_c = cstring(src)?;
    let tree = sys::open_tree(&src_c, opts.recursive_bind).at("open_tree", src)?;
    // Flags go on while the copy is still detached, so it is never visible without them;
    // kernels before 5.12 (no mount_setattr) get a classic remount once it is attached.
    let flags_set = !opts.needs_remount() || set_attr(&tree, false, &opts.as_mount_attr())?;
    if !opts.recursive.is_empty() && !set_attr(&tree, true, &opts.recursive)? {
        return Err(Error::Unsupported(
            "recursive mount attributes (rro, rnosuid …) need Linux 5.12 (mount_setattr)".into(),
        ));
    }
    sys::move_mount(tree.as_fd(), target.as_fd()).at("move_mount onto", src)?;
    if !flags_set {
        remount_classic(&tree, opts.flags)?;
    }
    propagate(&tree, &opts.propagation)
}

/// mount_setattr; `Ok(false)` where the kernel has no such call.
fn set_attr(fd: &OwnedFd, recursive: bool, attr: &MountAttr) -> Result<bool> {
    match sys::mount_setattr(fd.as_fd(), recursive, attr) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Ok(false),
        Err(e) => Err(e).op(|| format!("mount_setattr {attr:?}")),
    }
}

/// Classic bind remount of an attached mount, keeping the flags the kernel locked
/// (nosuid/nodev/noexec inherited from a more privileged namespace).
fn remount_classic(fd: &OwnedFd, flags: libc::c_ulong) -> Result<()> {
    let path = sys::fd_path(fd.as_fd());
    let locked = rustix::fs::fstatvfs(fd)
        .map(|s| {
            let f = s.f_flag;
            let mut keep = 0;
            for (st, ms) in [
                (libc::ST_NOSUID, libc::MS_NOSUID),
                (libc::ST_NODEV, libc::MS_NODEV),
                (libc::ST_NOEXEC, libc::MS_NOEXEC),
            ] {
                if f.bits() & st != 0 {
                    keep |= ms;
                }
            }
            keep
        })
        .unwrap_or(0);
    sys::mount(
        None,
        &path,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | flags | locked,
        None,
    )
    .op(|| format!("remount with flags {flags:#x}"))
}

/// Applies propagation changes to the mount `fd` refers to.
fn propagate(fd: &OwnedFd, changes: &[libc::c_ulong]) -> Result<()> {
    for &p in changes {
        let recursive = p & libc::MS_REC != 0;
        let attr = MountAttr {
            propagation: p & !libc::MS_REC,
            ..Default::default()
        };
        match sys::mount_setattr(fd.as_fd(), recursive, &attr) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                sys::mount(None, &sys::fd_path(fd.as_fd()), None, p, None)
                    .op(|| format!("set propagation {p:#x}"))?;
            }
            Err(e) => return Err(e).op(|| format!("set propagation {p:#x}")),
        }
    }
    Ok(())
}

fn filesystem_entry(
    ctx: &MountContext<'_>,
    m: &Mount,
    typ: &str,
    opts: &MountOptions,
) -> Result<()> {
    let dest = m.destination();
    // proc and sysfs on a symlink would let an image redirect them (e.g. onto /etc): refuse.
    if matches!(typ, "proc" | "sysfs") {
        match ctx.root.lookup(dest, true) {
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(Error::Path {
                    op: "refusing to mount on a symlink",
                    path: dest.to_path_buf(),
                    source: e,
                });
            }
            _ => {}
        }
    }
    let target = ctx.root.create(dest, Leaf::Dir)?;
    if typ == "sysfs" && ctx.user_ns && !ctx.net_ns {
        // A user namespace may not mount sysfs for a network namespace it does not own: bind
        // the host's, read-only all the way down (tracefs, debugfs … are submounts of it).
        let mut o = opts.clone();
        o.bind = true;
        o.recursive_bind = true;
        o.recursive.attr_set |=
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
        return bind(Path::new("/sys"), &target, &o);
    }
    let source = m
        .source()
        .as_ref()
        .map(|s| cstring(s))
        .transpose()?
        .unwrap_or_else(|| c(typ));
    let data = opts.data_string().map(|d| c(&d));
    let flags = opts.flags;
    let mounted = sys::mount(
        Some(&source),
        &sys::fd_path(target.as_fd()),
        Some(&c(typ)),
        flags,
        data.as_deref(),
    );
    match mounted {
        Ok(()) => {}
        Err(e) if typ == "mqueue" && e.raw_os_error() == Some(libc::EPERM) => {
            // A user namespace that does not own the IPC namespace may not mount mqueue.
            let mut o = opts.clone();
            o.bind = true;
            o.recursive_bind = true;
            return bind(Path::new("/dev/mqueue"), &target, &o);
        }
        Err(e) => return Err(e).op(|| format!("mount {typ}")),
    }
    let needs_more = !opts.propagation.is_empty() || !opts.recursive.is_empty() || opts.tmpcopyup;
    if needs_more {
        // The descriptor names the directory under the new mount: look the path up again to
        // reach the mount itself.
        let mounted = ctx.root.lookup(dest, false).at("resolve in rootfs", dest)?;
        if opts.tmpcopyup {
            copy_up(&target, &mounted).op(|| format!("tmpcopyup to {}", dest.display()))?;
        }
        if !opts.recursive.is_empty() && !set_attr(&mounted, true, &opts.recursive)? {
            return Err(Error::Unsupported(
                "recursive mount attributes (rro, rnosuid …) need Linux 5.12 (mount_setattr)"
                    .into(),
            ));
        }
        propagate(&mounted, &opts.propagation)?;
    }
    Ok(())
}

/// Copies what the image had under a directory into the tmpfs now mounted over it. The paths go
/// through the descriptors' magic links: `under` still reaches the covered directory.
fn copy_up(under: &OwnedFd, over: &OwnedFd) -> io::Result<()> {
    let from = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(under)
    ));
    let to = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(over)
    ));
    copy_tree(&from, &to, true)
}

fn copy_tree(from: &Path, to: &Path, top: bool) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown};
    // The top is the magic link itself: follow it; below it, copy symlinks as symlinks.
    let meta = if top {
        fs::metadata(from)?
    } else {
        fs::symlink_metadata(from)?
    };
    if !top {
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir(to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
        } else if ft.is_file() {
            fs::copy(from, to)?;
        } else {
            return Ok(());
        }
        lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    }
    if meta.is_dir() {
        if top {
            lchown(to, Some(meta.uid()), Some(meta.gid()))?;
        }
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()), false)?;
        }
    }
    Ok(())
}
