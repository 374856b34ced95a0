//! Thin, checked wrappers for the system calls the runtime makes that `rustix` does not cover in
//! the shape needed here (mount flags passed through as the config spells them, the new mount
//! API's attribute calls, clone3, keyrings). Each returns `io::Error` from errno; callers add
//! context.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

/// Reads a file of the proc, sys or cgroup filesystems whole. `fs::read` asks for the size
/// first (these report 0) and then reads in steps growing from 32 bytes, each step a system
/// call for which the kernel formats the file again up to where the read starts (six reads
/// for /proc/PID/stat, eleven for a mountinfo). With room up front and no size asked for (see
/// [`PlainReader`]) it is one read and the end-of-file.
pub fn read_pseudo_file(path: &std::path::Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(PSEUDO_FILE_ROOM);
    PlainReader(std::fs::File::open(path)?).read_to_end(&mut buf)?;
    Ok(buf)
}

/// [`read_pseudo_file`] as text.
pub fn read_pseudo_to_string(path: impl AsRef<std::path::Path>) -> io::Result<String> {
    String::from_utf8(read_pseudo_file(path.as_ref())?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A file read through `read` alone: `File`'s own `read_to_end` first asks for its size and
/// position (statx and lseek), two system calls that tell nothing about a pseudo file.
struct PlainReader(std::fs::File);

impl std::io::Read for PlainReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// Enough for the proc and cgroup files the runtime reads (a mountinfo grows past it).
const PSEUDO_FILE_ROOM: usize = 4096;

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn opt_ptr(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(ptr::null(), CStr::as_ptr)
}

/// The magic-link path of a descriptor: mount(2) and friends follow it to the exact object the
/// descriptor holds, so a path checked once cannot be swapped for a symlink afterwards.
pub fn fd_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    // SAFETY: every pointer is a valid NUL-terminated string or null, as mount(2) allows.
    let r = unsafe {
        libc::mount(
            opt_ptr(source),
            target.as_ptr(),
            opt_ptr(fstype),
            flags,
            opt_ptr(data).cast(),
        )
    };
    check(r as libc::c_long).map(drop)
}

pub fn umount2(target: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `target` is a valid C string.
    check(unsafe { libc::umount2(target.as_ptr(), flags) } as libc::c_long).map(drop)
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR__ATIME: u64 = 0x70;
pub const MOUNT_ATTR_RELATIME: u64 = 0x0;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

/// `struct mount_attr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

impl MountAttr {
    pub fn is_empty(&self) -> bool {
        self.attr_set == 0 && self.attr_clr == 0 && self.propagation == 0
    }
}

/// mount_setattr(2) on the mount `fd` refers to (AT_EMPTY_PATH), optionally recursively.
pub fn mount_setattr(fd: BorrowedFd<'_>, recursive: bool, attr: &MountAttr) -> io::Result<()> {
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `attr` is a valid `struct mount_attr` and its size is passed; the path is "".
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(r).map(drop)
}

pub const OPEN_TREE_CLONE: libc::c_uint = 1;

/// open_tree(2): a detached copy of the mount tree at `path` (followed as mount(2) would).
pub fn open_tree(path: &CStr, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `path` is a valid C string; the call returns a new descriptor or -1.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) })?;
    // SAFETY: open_tree returned a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// Attaches the detached mount `from` on top of the object `to` refers to.
pub fn move_mount(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: both descriptors are live; empty paths with the *_EMPTY_PATH flags name them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            c"".as_ptr(),
            to.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    check(r).map(drop)
}

pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: both are valid C strings.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
        .map(drop)
}

/// Marks every descriptor from `first` up close-on-exec, so nothing of the runtime's leaks into
/// the container (CVE-2024-21626), whatever the runtime's caller left open.
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes descriptor flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    match check(r) {
        Ok(_) => Ok(()),
        Err(e)
            if e.raw_os_error() == Some(libc::ENOSYS) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            cloexec_from_proc(first)
        }
        Err(e) => Err(e),
    }
}

/// Kernels before 5.11 lack CLOSE_RANGE_CLOEXEC: walk /proc/self/fd instead.
fn cloexec_from_proc(first: RawFd) -> io::Result<()> {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a possibly stale number is harmless (EBADF is ignored).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Gives the process a fresh session keyring, so containers do not share the host's keys.
pub fn join_session_keyring(name: &CStr) -> io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with a valid C string name.
    check(unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) })
        .map(drop)
}

/// `struct clone_args` of clone3(2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What a fork-like clone returned.
pub enum Forked {
    Child,
    Parent {
        pid: libc::pid_t,
        pidfd: Option<OwnedFd>,
    },
}

pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Whether a clone into a cgroup failed for want of `CLONE_INTO_CGROUP` (kernels before 5.7
/// refuse the larger `clone_args` or the flag), so a plain clone and a move by pid must do.
pub fn lacks_clone_into_cgroup(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::E2BIG) | Some(libc::EINVAL) | Some(libc::ENOSYS)
    )
}

/// Forks the calling process into the namespaces in `flags` (CLONE_NEW*, CLONE_PARENT) through
/// clone3, so the pidfd comes for free and a cgroup can be entered at birth. Falls back to
/// clone(2) where clone3 is missing or filtered (seccomp profiles return ENOSYS).
///
/// Unlike glibc's fork(2) this runs no atfork handlers and leaves glibc's cached thread id
/// stale in the child: the child may use the allocator, stdio and system calls, but must not
/// rely on pthread identity (glibc's raise/abort fetch the tid afresh since 2.34).
///
/// # Safety
/// The caller must be single-threaded: the child continues with a copy of one thread only, and
/// any lock another thread held stays locked forever.
pub unsafe fn fork_into(flags: libc::c_int, cgroup: Option<BorrowedFd<'_>>) -> io::Result<Forked> {
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: flags as u32 as u64 | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        // With CLONE_PARENT the child inherits the caller's exit signal, and clone3 refuses one.
        exit_signal: if flags & libc::CLONE_PARENT != 0 {
            0
        } else {
            libc::SIGCHLD as u64
        },
        ..Default::default()
    };
    if let Some(cg) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cg.as_raw_fd() as u64;
    }
    // SAFETY: args is a valid clone_args of the size passed; without CLONE_VM and with a null
    // stack the child runs on a copy of this stack, as after fork(2) (the doc above says what
    // differs), and the caller guarantees there is no other thread.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    let ret = match check(ret) {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) && cgroup.is_none() => {
            // SAFETY: as above; clone(2) with a null stack is fork(2) with namespace flags.
            return unsafe { fork_legacy(flags) };
        }
        Err(e) => return Err(e),
    };
    if ret == 0 {
        return Ok(Forked::Child);
    }
    // SAFETY: the kernel stored a fresh pidfd for us (CLONE_PIDFD).
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    Ok(Forked::Parent {
        pid: ret as libc::pid_t,
        pidfd,
    })
}

unsafe fn fork_legacy(flags: libc::c_int) -> io::Result<Forked> {
    // SAFETY: raw clone(2) on x86-64/aarch64 takes (flags, stack, parent_tid, child_tid, tls);
    // a null stack means the child shares nothing and runs on a copy of this stack.
    let ret = check(unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            ptr::null_mut::<libc::c_void>(),
            ptr::null_mut::<libc::c_void>(),
            ptr::null_mut::<libc::c_void>(),
            0 as libc::c_ulong,
        )
    })?;
    if ret == 0 {
        return Ok(Forked::Child);
    }
    let pid = ret as libc::pid_t;
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid).expect("clone returned a positive pid"),
        rustix::process::PidfdFlags::empty(),
    )
    .ok();
    Ok(Forked::Parent { pid, pidfd })
}

/// Exits the calling process at once, without running destructors or atexit handlers: what a
/// forked child must do when it is not going to exec (the parent owns those resources).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pseudo_file_is_read_whole_past_the_first_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        assert_eq!(read_pseudo_file(&path).unwrap(), content);
        std::fs::write(&path, b"").unwrap();
        assert!(read_pseudo_file(&path).unwrap().is_empty());
        // A proc file reports size 0 and is read to its end all the same.
        let status = read_pseudo_to_string("/proc/self/status").unwrap();
        assert!(
            status.starts_with("Name:") && status.contains("\nPid:"),
            "{status}"
        );
        let missing = read_pseudo_file(&dir.path().join("missing")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
