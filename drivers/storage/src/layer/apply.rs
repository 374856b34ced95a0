//! Writing a layer into a snapshot directory. Every entry is created relative to a directory
//! descriptor resolved inside the snapshot (openat2 with RESOLVE_IN_ROOT), with `*at` calls on
//! the last component that never follow it: `..`, absolute symlinks, a symlinked parent (even
//! one swapped during extraction) and hardlink targets all stay inside the snapshot.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::reader::{EntryKind, EntryMeta};
use crate::error::{Error, Result};
use crate::snapshot::Whiteouts;

/// What to do with device nodes in a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevicePolicy {
    /// Make them (needs CAP_MKNOD).
    Create,
    /// Leave them out, with a warning (what rootless engines do).
    Skip,
    /// Fail the layer.
    Refuse,
}

/// How to apply a layer.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// The blob's digest (`sha256:<hex>`), checked over every byte read.
    pub digest: Option<String>,
    pub devices: DevicePolicy,
    /// Keep the entries' owners (needs CAP_CHOWN; off for an unprivileged caller).
    pub same_owner: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        let root = rustix::process::geteuid().is_root();
        ApplyOptions {
            digest: None,
            devices: if root {
                DevicePolicy::Create
            } else {
                DevicePolicy::Skip
            },
            same_owner: root,
        }
    }
}

impl ApplyOptions {
    /// Whether a device node of the layer is made: `Ok(false)` when the policy leaves it out
    /// (with a warning), an error when it refuses the layer.
    pub(crate) fn admits_device(&self, path: &Path) -> io::Result<bool> {
        match self.devices {
            DevicePolicy::Create => Ok(true),
            DevicePolicy::Skip => {
                log::warn!("layer: device node {} left out", path.display());
                Ok(false)
            }
            DevicePolicy::Refuse => Err(io::Error::other(
                "device nodes are not allowed in this layer",
            )),
        }
    }
}

pub(super) const WHITEOUT_PREFIX: &str = ".wh.";
pub(super) const OPAQUE: &str = ".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

pub(crate) struct Writer<'o> {
    root: OwnedFd,
    whiteouts: Whiteouts,
    opts: &'o ApplyOptions,
    /// Paths this layer wrote (an opaque directory keeps them).
    written: HashSet<PathBuf>,
    /// Directories whose times are set last (adding entries changes them).
    dir_times: Vec<(PathBuf, i64, u32)>,
}

impl<'o> Writer<'o> {
    pub fn open(dir: &Path, whiteouts: Whiteouts, opts: &'o ApplyOptions) -> Result<Writer<'o>> {
        let root = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::Path {
            op: "open",
            path: dir.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Writer {
            root,
            whiteouts,
            opts,
            written: HashSet::new(),
            dir_times: Vec::new(),
        })
    }

    /// Writes one entry; `data` is its content (regular files).
    pub fn entry(&mut self, meta: &EntryMeta, data: &mut dyn Read) -> Result<()> {
        self.write(meta, data)
            .map_err(|e| Error::Layer(format!("entry {}: {e}", meta.path.display())))
    }

    /// Sets the directories' times, deepest first.
    pub fn finish(mut self) -> Result<()> {
        let mut dirs = std::mem::take(&mut self.dir_times);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
        for (path, secs, nsec) in dirs {
            let set = if path == Path::new(".") {
                set_times_at(&self.root, OsStr::new("."), secs, nsec)
            } else {
                self.parent_of(&path, false)
                    .and_then(|(parent, name)| set_times_at(&parent, &name, secs, nsec))
            };
            set.map_err(|e| Error::Layer(format!("entry {}: times: {e}", path.display())))?;
        }
        Ok(())
    }

    fn write(&mut self, meta: &EntryMeta, data: &mut dyn Read) -> io::Result<()> {
        let name = meta.path.file_name().map(OsStr::to_os_string);
        if let Some(n) = name.as_ref().and_then(|n| n.to_str()) {
            if let Some(hidden) = n.strip_prefix(WHITEOUT_PREFIX) {
                return self.whiteout(&meta.path, n, hidden);
            }
        }
        if meta.path == Path::new(".") {
            // The layer's root: its metadata applies to the snapshot's root.
            if meta.kind != EntryKind::Dir {
                return Err(io::Error::other("the layer root is not a directory"));
            }
            let fd = self.open_dir_rw(Path::new("."))?;
            self.set_meta_fd(&fd, meta)?;
            self.dir_times
                .push((meta.path.clone(), meta.mtime, meta.mtime_nsec));
            return Ok(());
        }
        let (parent, name) = self.parent_of(&meta.path, true)?;
        match &meta.kind {
            EntryKind::Dir => {
                let is_dir =
                    matches!(stat_at(&parent, &name)?, Some(t) if t == FileType::Directory);
                if !is_dir {
                    remove_at(&parent, &name)?;
                    rustix::fs::mkdirat(&parent, name.as_os_str(), Mode::from_raw_mode(0o700))?;
                }
                let fd = rustix::fs::openat(
                    &parent,
                    name.as_os_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                self.set_meta_fd(&fd, meta)?;
                self.dir_times
                    .push((meta.path.clone(), meta.mtime, meta.mtime_nsec));
            }
            EntryKind::File => {
                remove_at(&parent, &name)?;
                let fd = rustix::fs::openat(
                    &parent,
                    name.as_os_str(),
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                let mut file = std::fs::File::from(fd);
                let copied = io::copy(&mut data.take(meta.size), &mut file)?;
                if copied != meta.size {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the archive ends inside the file ({copied} of {} bytes)",
                            meta.size
                        ),
                    ));
                }
                let fd = OwnedFd::from(file);
                self.set_meta_fd(&fd, meta)?;
                set_times_fd(&fd, meta.mtime, meta.mtime_nsec)?;
            }
            EntryKind::Symlink(target) => {
                remove_at(&parent, &name)?;
                rustix::fs::symlinkat(target.as_os_str(), &parent, name.as_os_str())?;
                if self.opts.same_owner {
                    chown_at(&parent, &name, meta)?;
                }
                set_times_at(&parent, &name, meta.mtime, meta.mtime_nsec)?;
            }
            EntryKind::Hardlink(target) => {
                let (tparent, tname) = self.parent_of(target, false).map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        io::Error::other(format!(
                            "hardlink target {} is not in the layer",
                            target.display()
                        ))
                    } else {
                        io::Error::new(
                            e.kind(),
                            format!("hardlink target {}: {e}", target.display()),
                        )
                    }
                })?;
                match stat_at(&tparent, &tname)? {
                    None => {
                        return Err(io::Error::other(format!(
                            "hardlink target {} is not in the layer",
                            target.display()
                        )));
                    }
                    Some(FileType::Directory) => {
                        return Err(io::Error::other(format!(
                            "hardlink target {} is a directory",
                            target.display()
                        )));
                    }
                    Some(_) => {}
                }
                if target != &meta.path {
                    remove_at(&parent, &name)?;
                    rustix::fs::linkat(
                        &tparent,
                        tname.as_os_str(),
                        &parent,
                        name.as_os_str(),
                        AtFlags::empty(),
                    )?;
                }
            }
            EntryKind::CharDevice(major, minor) | EntryKind::BlockDevice(major, minor) => {
                if !self.opts.admits_device(&meta.path)? {
                    return Ok(());
                }
                let kind = if matches!(meta.kind, EntryKind::CharDevice(..)) {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                remove_at(&parent, &name)?;
                rustix::fs::mknodat(
                    &parent,
                    name.as_os_str(),
                    kind,
                    Mode::from_raw_mode(meta.mode),
                    rustix::fs::makedev(*major, *minor),
                )?;
                self.set_meta_at(&parent, &name, meta)?;
            }
            EntryKind::Fifo => {
                remove_at(&parent, &name)?;
                rustix::fs::mknodat(
                    &parent,
                    name.as_os_str(),
                    FileType::Fifo,
                    Mode::from_raw_mode(meta.mode),
                    0,
                )?;
                self.set_meta_at(&parent, &name, meta)?;
            }
        }
        if self.whiteouts == Whiteouts::Delete {
            self.written.insert(meta.path.clone());
        }
        Ok(())
    }

    fn whiteout(&mut self, path: &Path, name: &str, hidden: &str) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new(""));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if name == OPAQUE {
            match self.whiteouts {
                Whiteouts::Overlay => {
                    let fd = self.open_dir_rw(dir)?;
                    rustix::fs::fsetxattr(
                        &fd,
                        OVERLAY_OPAQUE_XATTR,
                        b"y",
                        rustix::fs::XattrFlags::empty(),
                    )?;
                }
                Whiteouts::Delete => {
                    let fd = self.open_dir_rw(dir)?;
                    let mut doomed = Vec::new();
                    for entry in rustix::fs::Dir::read_from(&fd)? {
                        let entry = entry?;
                        let n = OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string();
                        if n == "." || n == ".." {
                            continue;
                        }
                        let child = if dir == Path::new(".") {
                            PathBuf::from(&n)
                        } else {
                            dir.join(&n)
                        };
                        if !self.written.contains(&child) {
                            doomed.push(n);
                        }
                    }
                    for n in doomed {
                        remove_at(&fd, &n)?;
                    }
                }
            }
            return Ok(());
        }
        if hidden.starts_with(WHITEOUT_PREFIX)
            || hidden.is_empty()
            || hidden == "."
            || hidden == ".."
        {
            // aufs bookkeeping (.wh..wh.plnk …): nothing to do.
            return Ok(());
        }
        let target = if dir == Path::new(".") {
            PathBuf::from(hidden)
        } else {
            dir.join(hidden)
        };
        let (parent, leaf) = self.parent_of(&target, true)?;
        remove_at(&parent, &leaf)?;
        if self.whiteouts == Whiteouts::Overlay {
            rustix::fs::mknodat(
                &parent,
                leaf.as_os_str(),
                FileType::CharacterDevice,
                Mode::empty(),
                0,
            )?;
        }
        Ok(())
    }

    /// The directory holding `path` (made if missing, when `create`) and the last component.
    fn parent_of(&self, path: &Path, create: bool) -> io::Result<(OwnedFd, OsString)> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::other("no file name"))?
            .to_os_string();
        let parent = path.parent().unwrap_or(Path::new(""));
        let fd = self.resolve_dir(parent, create)?;
        Ok((fd, name))
    }

    /// A directory of the snapshot, resolved inside it; missing ones made (mode 0755) when
    /// `create`, as tar archives may leave parents out.
    fn resolve_dir(&self, rel: &Path, create: bool) -> io::Result<OwnedFd> {
        self.resolve_dir_depth(rel, create, 0)
    }

    fn resolve_dir_depth(&self, rel: &Path, create: bool, depth: u32) -> io::Result<OwnedFd> {
        let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let rel_or_dot = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        match openat2_in(&self.root, rel_or_dot, flags, Mode::empty(), how) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) if create => {}
            Err(e) => return Err(e.into()),
        }
        let mut dir = openat2_in(&self.root, ".", flags, Mode::empty(), how)?;
        let mut done = PathBuf::new();
        for comp in rel.components() {
            done.push(comp);
            match openat2_in(&self.root, &done, flags, Mode::empty(), how) {
                Ok(fd) => dir = fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&dir, comp.as_os_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) => dir = openat2_in(&self.root, &done, flags, Mode::empty(), how)?,
                        Err(Errno::EXIST) => {
                            // A dangling symlink: make its target, inside the snapshot, as a
                            // directory (what `lib -> /usr/lib` before `lib/x` needs).
                            let target =
                                rustix::fs::readlinkat(&dir, comp.as_os_str(), Vec::new())?;
                            if depth >= 40 {
                                return Err(Errno::LOOP.into());
                            }
                            let target = Path::new(OsStr::from_bytes(target.to_bytes()));
                            let base = done.parent().unwrap_or(Path::new(""));
                            let joined = if target.is_absolute() {
                                target.to_path_buf()
                            } else {
                                base.join(target)
                            };
                            let inside = clamp(&joined);
                            dir = self.resolve_dir_depth(&inside, true, depth + 1)?;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(dir)
    }

    /// A directory opened for reading (xattrs, listing), resolved inside the snapshot.
    fn open_dir_rw(&self, rel: &Path) -> io::Result<OwnedFd> {
        let dir = self.resolve_dir(rel, true)?;
        Ok(rustix::fs::openat(
            &dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// Owner, mode and xattrs on an open file or directory.
    fn set_meta_fd(&self, fd: &OwnedFd, meta: &EntryMeta) -> io::Result<()> {
        if self.opts.same_owner {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(id(meta.uid)?)),
                Some(rustix::fs::Gid::from_raw(id(meta.gid)?)),
            )?;
        }
        for (name, value) in &meta.xattrs {
            if name.starts_with("trusted.overlay.") {
                // overlayfs's own bookkeeping: a layer must not forge it (redirects, opaque).
                continue;
            }
            rustix::fs::fsetxattr(fd, name.as_str(), value, rustix::fs::XattrFlags::empty())?;
        }
        // After chown, which clears the set-id bits.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))?;
        Ok(())
    }

    /// Owner and mode of a node that cannot be opened for writing (devices, FIFOs).
    fn set_meta_at(&self, parent: &OwnedFd, name: &OsStr, meta: &EntryMeta) -> io::Result<()> {
        if self.opts.same_owner {
            chown_at(parent, name, meta)?;
        }
        rustix::fs::chmodat(
            parent,
            name,
            Mode::from_raw_mode(meta.mode),
            AtFlags::empty(),
        )?;
        set_times_at(parent, name, meta.mtime, meta.mtime_nsec)
    }
}

/// openat2, again while the kernel reports a concurrent rename or mount (EAGAIN: resolving
/// `..` under RESOLVE_IN_ROOT gives up rather than risk a wrong answer; the man page says to
/// retry).
fn openat2_in(
    root: &OwnedFd,
    path: impl AsRef<Path>,
    flags: OFlags,
    mode: Mode,
    how: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let path = path.as_ref();
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(root, path, flags, mode, how) {
            Err(Errno::AGAIN) if tries < 1000 => tries += 1,
            other => return other,
        }
    }
}

/// A path made relative to the snapshot root, `..` stopping at the root (as the kernel does
/// for RESOLVE_IN_ROOT).
fn clamp(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

pub(super) fn id(v: u64) -> io::Result<u32> {
    u32::try_from(v).map_err(|_| io::Error::other(format!("owner id {v} is out of range")))
}

fn chown_at(parent: &OwnedFd, name: &OsStr, meta: &EntryMeta) -> io::Result<()> {
    rustix::fs::chownat(
        parent,
        name,
        Some(rustix::fs::Uid::from_raw(id(meta.uid)?)),
        Some(rustix::fs::Gid::from_raw(id(meta.gid)?)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

fn timestamps(secs: i64, nsec: u32) -> rustix::fs::Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: nsec as _,
    };
    rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn set_times_fd(fd: &OwnedFd, secs: i64, nsec: u32) -> io::Result<()> {
    Ok(rustix::fs::futimens(fd, &timestamps(secs, nsec))?)
}

fn set_times_at(parent: &OwnedFd, name: &OsStr, secs: i64, nsec: u32) -> io::Result<()> {
    Ok(rustix::fs::utimensat(
        parent,
        name,
        &timestamps(secs, nsec),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// The type of `name` in `parent`, not following a symlink; `None` if absent.
fn stat_at(parent: &OwnedFd, name: &OsStr) -> io::Result<Option<FileType>> {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` from `parent` if present, a directory with all it holds (never following a
/// symlink out of it).
fn remove_at(parent: &OwnedFd, name: &OsStr) -> io::Result<()> {
    match stat_at(parent, name)? {
        None => Ok(()),
        Some(FileType::Directory) => {
            let dir = rustix::fs::openat(
                parent,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let mut children = Vec::new();
            for entry in rustix::fs::Dir::read_from(&dir)? {
                let entry = entry?;
                let n = entry.file_name().to_bytes();
                if n != b"." && n != b".." {
                    children.push(OsStr::from_bytes(n).to_os_string());
                }
            }
            for child in children {
                remove_at(&dir, &child)?;
            }
            Ok(rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?)
        }
        Some(_) => Ok(rustix::fs::unlinkat(parent, name, AtFlags::empty())?),
    }
}
