//! Whole-tree helpers: copying a tree with everything a layer carries (owners, modes, times,
//! xattrs, hardlinks, symlinks, device nodes, FIFOs), measuring one, removing one. They work
//! on trees this crate made (committed snapshots); untrusted input goes through `layer`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Context, Result};
use crate::snapshot::Usage;

/// Space and inodes used by the tree at `root` (a hardlinked file counts once).
pub(crate) fn disk_usage(root: &Path) -> Result<Usage> {
    let mut usage = Usage::default();
    let mut seen = std::collections::HashSet::new();
    walk(root, &mut |_, meta| {
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            return Ok(());
        }
        usage.inodes += 1;
        usage.size += meta.blocks() * 512;
        Ok(())
    })?;
    Ok(usage)
}

/// Calls `f` for `root` and everything below it (not following symlinks).
pub(crate) fn walk(
    root: &Path,
    f: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<()>,
) -> Result<()> {
    let meta = fs::symlink_metadata(root).at("stat", root)?;
    f(root, &meta)?;
    if meta.is_dir() {
        for entry in fs::read_dir(root).at("read", root)? {
            let entry = entry.at("read", root)?;
            walk(&entry.path(), f)?;
        }
    }
    Ok(())
}

/// Copies the tree `from` into `to` (which must not exist), keeping hardlinks within it.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let mut links = HashMap::new();
    copy_entry(from, to, &mut links)
}

fn copy_entry(
    from: &Path,
    to: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
) -> Result<()> {
    let meta = fs::symlink_metadata(from).at("stat", from)?;
    let ft = meta.file_type();
    if !ft.is_dir() && meta.nlink() > 1 {
        if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
            return fs::hard_link(first, to).at("link", to);
        }
        links.insert((meta.dev(), meta.ino()), to.to_path_buf());
    }
    if ft.is_dir() {
        fs::create_dir(to).at("mkdir", to)?;
        for entry in fs::read_dir(from).at("read", from)? {
            let entry = entry.at("read", from)?;
            copy_entry(&entry.path(), &to.join(entry.file_name()), links)?;
        }
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from).at("readlink", from)?, to)
            .at("symlink", to)?;
    } else if ft.is_file() {
        fs::copy(from, to).at("copy", to)?;
    } else {
        let kind = if ft.is_char_device() {
            rustix::fs::FileType::CharacterDevice
        } else if ft.is_block_device() {
            rustix::fs::FileType::BlockDevice
        } else if ft.is_fifo() {
            rustix::fs::FileType::Fifo
        } else {
            // Sockets do not survive a copy (nor a layer).
            return Ok(());
        };
        rustix::fs::mknodat(
            rustix::fs::CWD,
            to,
            kind,
            rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777),
            meta.rdev(),
        )
        .at("mknod", to)?;
    }
    copy_metadata(from, to, &meta)
}

/// Owner, mode, xattrs and times of `from` onto `to` (a symlink's own, not its target's).
pub(crate) fn copy_metadata(from: &Path, to: &Path, meta: &fs::Metadata) -> Result<()> {
    let symlink = meta.file_type().is_symlink();
    rustix::fs::chownat(
        rustix::fs::CWD,
        to,
        Some(rustix::fs::Uid::from_raw(meta.uid())),
        Some(rustix::fs::Gid::from_raw(meta.gid())),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .at("chown", to)?;
    for (name, value) in xattrs(from)? {
        rustix::fs::lsetxattr(
            to,
            name.as_os_str(),
            &value,
            rustix::fs::XattrFlags::empty(),
        )
        .at("setxattr", to)?;
    }
    if !symlink {
        // After chown, which clears set-id bits.
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .at("chmod", to)?;
    }
    set_times(
        to,
        meta.atime(),
        meta.atime_nsec(),
        meta.mtime(),
        meta.mtime_nsec(),
    )
}

/// Sets access and modification times without following a symlink.
pub(crate) fn set_times(
    path: &Path,
    atime: i64,
    atime_ns: i64,
    mtime: i64,
    mtime_ns: i64,
) -> Result<()> {
    let ts = |s: i64, ns: i64| rustix::fs::Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: ts(atime, atime_ns),
            last_modification: ts(mtime, mtime_ns),
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .at("utimensat", path)
}

/// Extended attributes of `path` itself (not a symlink's target).
pub(crate) fn xattrs(path: &Path) -> Result<Vec<(OsString, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e).at("listxattr", path),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = std::ffi::OsStr::from_bytes(name).to_os_string();
        let mut value = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, name.as_os_str(), &mut value) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(rustix::io::Errno::NODATA) => break usize::MAX,
                Err(e) => return Err(e).at("getxattr", path),
            }
        };
        if len != usize::MAX {
            value.truncate(len);
            out.push((name, value));
        }
    }
    out.sort();
    Ok(out)
}

/// Removes a tree that may hold read-only directories (as layers do).
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            // A directory without write permission (mode 0555 in an image) is fine for root
            // but not for an unprivileged owner: open them up, then retry.
            walk(path, &mut |p, m| {
                if m.is_dir() {
                    let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
                }
                Ok(())
            })?;
            fs::remove_dir_all(path).at("remove", path)
        }
        Err(e) => Err(e).at("remove", path),
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new content: a temporary
/// file written and fsynced, renamed over, and the directory fsynced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp_name);
    let mut f = fs::File::create(&tmp).at("create", &tmp)?;
    f.write_all(bytes).at("write", &tmp)?;
    f.sync_all().at("fsync", &tmp)?;
    fs::rename(&tmp, path).at("rename", path)?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .at("fsync", dir)
}
