//! Resolving paths inside the container's root filesystem before pivot_root, when a symlink in
//! the image could otherwise point the runtime at the host (`/etc -> /`, CVE-2021-30465 style
//! races). Every lookup goes through openat2(RESOLVE_IN_ROOT), which treats the rootfs as `/`
//! for absolute symlinks and `..`; missing components are created with *at calls relative to
//! descriptors already resolved inside the root.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::error::{Context, Error, Result};

/// Longest chain of symlinks followed while creating a path (the kernel's own limit).
const MAX_SYMLINKS: usize = 40;

/// What to make at the end of the path if it is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    Dir,
    File,
}

/// The container's root, held open.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    pub fn open(path: &Path) -> Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at("open rootfs", path)?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing path inside the root as O_PATH. With `no_symlinks`, a symlink anywhere
    /// on the path is an error (for /proc and /sys, which must be real directories).
    pub fn lookup(&self, path: &Path, no_symlinks: bool) -> io::Result<OwnedFd> {
        let mut how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        if no_symlinks {
            how |= ResolveFlags::NO_SYMLINKS;
        }
        let rel = relative(path);
        let rel: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &rel
        };
        openat2_retry(&self.fd, rel, OFlags::PATH | OFlags::CLOEXEC, how).map_err(io::Error::from)
    }

    /// Resolves `path` inside the root, creating what is missing (directories along the way,
    /// then `leaf`). A dangling symlink on the way is followed, inside the root, and its target
    /// created. Absolute symlinks mean what they mean inside the container (`/var/run -> /run`);
    /// a path that climbs out of the rootfs through `..` is refused.
    pub fn create(&self, path: &Path, leaf: Leaf) -> Result<OwnedFd> {
        // Fast path: everything exists and nothing points outside.
        let rel = relative(path);
        let rel_or_dot: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &rel
        };
        match openat2_retry(
            &self.fd,
            rel_or_dot,
            OFlags::PATH | OFlags::CLOEXEC,
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => return self.check_leaf(fd, leaf, &rel),
            Err(rustix::io::Errno::NOENT) => {
                if let Some(fd) = self.create_missing_tail(&rel, leaf)? {
                    return Ok(fd);
                }
                self.check_containment(path)?
            }
            Err(rustix::io::Errno::XDEV) => self.check_containment(path)?,
            Err(e) => return Err(e).at("resolve in rootfs", self.path.join(&rel)),
        }
        let mut todo: VecDeque<OsString> = components(path);
        let mut done = PathBuf::new();
        let mut links = 0;
        while let Some(comp) = todo.pop_front() {
            let candidate = done.join(&comp);
            match self.lookup(&candidate, false) {
                Ok(_) => {
                    done = candidate;
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e).at("resolve in rootfs", self.path.join(&candidate)),
            }
            let parent = self
                .lookup(&done, false)
                .at("resolve in rootfs", self.path.join(&done))?;
            match make_entry(&parent, &comp, todo.is_empty() && leaf == Leaf::File) {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) => {
                    // Something is there yet did not resolve: a dangling symlink. Follow it.
                    // (If it is no symlink, someone raced us creating it: resolve it below.)
                    if let Ok(target) =
                        rustix::fs::readlinkat(&parent, comp.as_os_str(), Vec::new())
                    {
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(Error::Path {
                                op: "resolve in rootfs",
                                path: self.path.join(path.strip_prefix("/").unwrap_or(path)),
                                source: io::Error::from_raw_os_error(libc::ELOOP),
                            });
                        }
                        let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                        let mut next = components(&target);
                        next.extend(todo.drain(..));
                        todo = next;
                        if target.is_absolute() {
                            done = PathBuf::new();
                        }
                        continue;
                    }
                }
                Err(e) => return Err(e).at("create in rootfs", self.path.join(&candidate)),
            }
            done = candidate;
        }
        let fd = self
            .lookup(&done, false)
            .at("resolve in rootfs", self.path.join(&done))?;
        self.check_leaf(fd, leaf, &done)
    }

    /// The common case of [`Root::create`]: only the end of the path is missing (a mount point
    /// in a tmpfs just mounted, a directory the image lacks). The deepest ancestor that exists
    /// is resolved beneath the root (no symlink on the way leaves it, none is absolute), and the
    /// missing components are made relative to it and opened without following (a relative
    /// symlink among the existing ancestors is followed, beneath the root). `None` hands
    /// anything else to the general walk: `..` in the path, a symlink where a component was
    /// to be made (a dangling one is followed there), an ancestor that does not resolve beneath
    /// the root (an absolute symlink, one that climbs out).
    fn create_missing_tail(&self, rel: &Path, leaf: Leaf) -> Result<Option<OwnedFd>> {
        let mut comps = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => comps.push(n),
                Component::CurDir => {}
                _ => return Ok(None),
            }
        }
        if comps.is_empty() {
            return Ok(None);
        }
        let beneath = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        // The leaf is missing (or the lookup would have succeeded): look from its parent up.
        let mut existing = comps.len() - 1;
        let mut parent = loop {
            let ancestor: PathBuf = comps[..existing].iter().collect();
            let ancestor = if existing == 0 {
                PathBuf::from(".")
            } else {
                ancestor
            };
            match openat2_retry(&self.fd, &ancestor, dir_flags, beneath) {
                Ok(fd) => break fd,
                Err(rustix::io::Errno::NOENT) if existing > 0 => existing -= 1,
                Err(_) => return Ok(None),
            }
        };
        let mut done: PathBuf = comps[..existing].iter().collect();
        for (i, comp) in comps.iter().enumerate().skip(existing) {
            done.push(comp);
            let last = i + 1 == comps.len();
            let file = last && leaf == Leaf::File;
            match make_entry(&parent, comp, file) {
                // EXIST: raced, or a dangling symlink; the open below tells which.
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e).at("create in rootfs", self.path.join(&done)),
            }
            let flags = if file {
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC
            } else {
                dir_flags | OFlags::NOFOLLOW
            };
            parent = match rustix::fs::openat(&parent, *comp, flags, Mode::empty()) {
                Ok(fd) => fd,
                // A symlink where a directory was made: the general walk follows it.
                Err(rustix::io::Errno::NOTDIR) | Err(rustix::io::Errno::LOOP) => return Ok(None),
                Err(e) => return Err(e).at("resolve in rootfs", self.path.join(&done)),
            };
            if file
                && rustix::fs::fstat(&parent).is_ok_and(|st| {
                    rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
                })
            {
                return Ok(None);
            }
        }
        self.check_leaf(parent, leaf, rel).map(Some)
    }

    fn check_leaf(&self, fd: OwnedFd, leaf: Leaf, rel: &Path) -> Result<OwnedFd> {
        let is_dir = rustix::fs::fstat(&fd).is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
        });
        if leaf == Leaf::Dir && !is_dir {
            return Err(Error::Path {
                op: "mount destination in rootfs",
                path: self.path.join(rel),
                source: io::Error::from_raw_os_error(libc::ENOTDIR),
            });
        }
        Ok(fd)
    }

    /// Walks `path` as the kernel would inside the container and fails if `..` (in the path or
    /// in a relative symlink on it) climbs above the rootfs. It only classifies: resolution is
    /// always done by openat2(RESOLVE_IN_ROOT), so a race here cannot lead anywhere outside.
    fn check_containment(&self, path: &Path) -> Result<()> {
        let escape = || Error::Path {
            op: "refusing a destination that leads out of the rootfs through a symlink or ..",
            path: path.to_path_buf(),
            source: io::Error::from_raw_os_error(libc::EXDEV),
        };
        let mut todo: VecDeque<OsString> = components(path);
        let mut stack: Vec<OsString> = Vec::new();
        let mut links = 0;
        while let Some(comp) = todo.pop_front() {
            if comp == ".." {
                stack.pop().ok_or_else(escape)?;
                continue;
            }
            let mut here: PathBuf = stack.iter().collect();
            here.push(&comp);
            match rustix::fs::readlinkat(&self.fd, &here, Vec::new()) {
                Ok(target) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(escape());
                    }
                    let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                    if target.is_absolute() {
                        stack.clear();
                    }
                    let mut next = components(&target);
                    next.extend(todo.drain(..));
                    todo = next;
                }
                // Not a symlink, or not there yet (it will be created as a directory).
                Err(_) => stack.push(comp),
            }
        }
        Ok(())
    }

    /// The host path a resolved descriptor points at.
    #[cfg(test)]
    pub fn describe(&self, fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(fd)
        ))
        .unwrap_or_else(|_| self.path.clone())
    }
}

/// Makes `name` in `parent`, an empty file (`file`) or a directory, never through a symlink.
fn make_entry(parent: &OwnedFd, name: &OsStr, file: bool) -> rustix::io::Result<()> {
    if file {
        rustix::fs::openat(
            parent,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map(drop)
    } else {
        rustix::fs::mkdirat(parent, name, Mode::from_bits_truncate(0o755))
    }
}

/// A container path made relative to the root ("/a/b" -> "a/b").
pub fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect()
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// openat2, again while the kernel reports a concurrent rename or mount: resolving `..` under
/// RESOLVE_IN_ROOT or RESOLVE_BENEATH gives up with EAGAIN rather than risk a wrong answer,
/// and the man page says to retry.
fn openat2_retry(
    dir: &OwnedFd,
    path: &Path,
    flags: OFlags,
    how: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags, Mode::empty(), how) {
            Err(rustix::io::Errno::AGAIN) if tries < 1000 => tries += 1,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn real(root: &Root, fd: &OwnedFd) -> PathBuf {
        root.describe(fd)
    }

    #[test]
    fn creates_missing_dirs_and_files() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        let fd = root.create(Path::new("/a/b/c"), Leaf::Dir).unwrap();
        assert_eq!(real(&root, &fd), t.path().join("a/b/c"));
        let fd = root.create(Path::new("/a/f"), Leaf::File).unwrap();
        assert_eq!(real(&root, &fd), t.path().join("a/f"));
        assert!(t.path().join("a/f").is_file());
    }

    #[test]
    fn absolute_symlink_stays_inside() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), t.path().join("escape")).unwrap();
        let root = Root::open(t.path()).unwrap();
        let fd = root.create(Path::new("/escape/x"), Leaf::Dir).unwrap();
        let got = real(&root, &fd);
        assert!(got.starts_with(t.path()), "{got:?} left the root");
        assert!(!outside.path().join("x").exists());
    }

    #[test]
    fn climbing_out_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        let e = root
            .create(Path::new("/../../../etc/x"), Leaf::Dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("leads out of the rootfs"), "{e}");
        symlink("../../target", t.path().join("link")).unwrap();
        let e = root
            .create(Path::new("/link"), Leaf::Dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("leads out of the rootfs"), "{e}");
        std::fs::create_dir(t.path().join("d")).unwrap();
        symlink("../../../../etc", t.path().join("d/up")).unwrap();
        assert!(root.create(Path::new("/d/up/passwd"), Leaf::File).is_err());
        assert!(!t.path().join("etc").exists(), "nothing created");
    }

    #[test]
    fn dangling_relative_symlink_is_created_inside() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        symlink("../target", t.path().join("d/link")).unwrap();
        let root = Root::open(t.path()).unwrap();
        let fd = root.create(Path::new("/d/link"), Leaf::Dir).unwrap();
        assert_eq!(real(&root, &fd), t.path().join("target"));
    }

    #[test]
    fn relative_symlinks_inside_are_fine() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("usr/lib")).unwrap();
        symlink("usr/lib", t.path().join("lib")).unwrap();
        let root = Root::open(t.path()).unwrap();
        let fd = root.create(Path::new("/lib/modules"), Leaf::Dir).unwrap();
        assert_eq!(real(&root, &fd), t.path().join("usr/lib/modules"));
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        symlink("b", t.path().join("a")).unwrap();
        symlink("a", t.path().join("b")).unwrap();
        let root = Root::open(t.path()).unwrap();
        assert!(root.create(Path::new("/a/x"), Leaf::Dir).is_err());
    }

    #[test]
    fn no_symlinks_lookup_refuses_links() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("real")).unwrap();
        symlink("real", t.path().join("proc")).unwrap();
        let root = Root::open(t.path()).unwrap();
        assert!(root.lookup(Path::new("/proc"), false).is_ok());
        let e = root.lookup(Path::new("/proc"), true).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
    }

    #[test]
    fn dangling_symlinks_at_the_end_are_followed_inside() {
        // Only the last component is missing, and it is a dangling symlink: the fast path for a
        // missing tail must hand it to the walk that follows it inside the root.
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        symlink("/made-file", t.path().join("d/flink")).unwrap();
        symlink("/made-dir", t.path().join("d/dlink")).unwrap();
        let root = Root::open(t.path()).unwrap();
        let fd = root.create(Path::new("/d/flink"), Leaf::File).unwrap();
        assert_eq!(real(&root, &fd), t.path().join("made-file"));
        assert!(t.path().join("made-file").is_file());
        let fd = root.create(Path::new("/d/dlink/sub"), Leaf::Dir).unwrap();
        assert_eq!(real(&root, &fd), t.path().join("made-dir/sub"));
        // Relative ones resolve beneath the root, so the lookup reports them missing (ENOENT).
        symlink("../rel-file", t.path().join("d/rflink")).unwrap();
        symlink("../rel-dir", t.path().join("d/rdlink")).unwrap();
        let fd = root.create(Path::new("/d/rflink"), Leaf::File).unwrap();
        assert_eq!(real(&root, &fd), t.path().join("rel-file"));
        let fd = root.create(Path::new("/d/rdlink"), Leaf::Dir).unwrap();
        assert_eq!(real(&root, &fd), t.path().join("rel-dir"));
        assert!(t.path().join("rel-dir").is_dir());
    }

    #[test]
    fn the_missing_tail_fast_path_takes_only_plain_tails() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("sys/fs")).unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        symlink("../rel-file", t.path().join("d/rflink")).unwrap();
        symlink("../rel-dir", t.path().join("d/rdlink")).unwrap();
        symlink("../../../../..", t.path().join("d/up")).unwrap();
        symlink(outside.path(), t.path().join("d/abs")).unwrap();
        symlink("sys", t.path().join("sys-link")).unwrap();
        let root = Root::open(t.path()).unwrap();
        let tail = |p: &str, leaf| root.create_missing_tail(Path::new(p), leaf).unwrap();

        let fd = tail("sys/fs/cgroup/cpu", Leaf::Dir).expect("a plain tail");
        assert_eq!(real(&root, &fd), t.path().join("sys/fs/cgroup/cpu"));
        let fd = tail("etc/new/hosts", Leaf::File).expect("a plain tail");
        assert_eq!(real(&root, &fd), t.path().join("etc/new/hosts"));
        // A relative symlink inside the root on the way is followed beneath it.
        let fd = tail("sys-link/kernel", Leaf::Dir).expect("beneath the root");
        assert_eq!(real(&root, &fd), t.path().join("sys/kernel"));
        // Left to the general walk: a dangling symlink at the end, `..`, a symlink that climbs
        // out or is absolute on the way.
        assert!(tail("d/rflink", Leaf::File).is_none());
        assert!(tail("d/rdlink", Leaf::Dir).is_none());
        assert!(tail("d/../x", Leaf::Dir).is_none());
        assert!(tail("d/up/etc/x", Leaf::Dir).is_none());
        assert!(tail("d/abs/x", Leaf::Dir).is_none());
        // As if a symlink out of the root were swapped in after the lookup reported the path
        // missing (a race): the component is opened without following it.
        assert!(tail("d/abs", Leaf::Dir).is_none());
        assert!(tail("d/abs", Leaf::File).is_none());
        assert!(!t.path().join("rel-file").exists() && !t.path().join("x").exists());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_tail_below_existing_dirs_is_made() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("sys/fs")).unwrap();
        let root = Root::open(t.path()).unwrap();
        let fd = root
            .create(Path::new("/sys/fs/cgroup/cpu"), Leaf::Dir)
            .unwrap();
        assert_eq!(real(&root, &fd), t.path().join("sys/fs/cgroup/cpu"));
        let fd = root
            .create(Path::new("/./etc/x/hosts"), Leaf::File)
            .unwrap();
        assert_eq!(real(&root, &fd), t.path().join("etc/x/hosts"));
        assert!(t.path().join("etc/x/hosts").is_file());
        // Again: everything exists now (the lookup's fast path).
        let fd = root.create(Path::new("/etc/x/hosts"), Leaf::File).unwrap();
        assert_eq!(real(&root, &fd), t.path().join("etc/x/hosts"));
    }

    #[test]
    fn file_where_dir_wanted_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"").unwrap();
        let root = Root::open(t.path()).unwrap();
        let e = root
            .create(Path::new("/f"), Leaf::Dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Not a directory"), "{e}");
    }
}
