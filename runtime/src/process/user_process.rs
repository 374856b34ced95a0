//! The last steps before the user program runs, shared by a container's init and by `exec`:
//! terminal, limits, identity, capabilities, working directory, descriptors, then execve.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Linux, Process};
use rustix::fs::{Mode, OFlags};

use super::channel::{Channel, Message};
use super::{attributes, identity, rlimits};
use crate::capabilities::{CapSets, last_cap};
use crate::error::{Context, Error, Result};
use crate::seccomp::SeccompProgram;
use crate::{sys, terminal};

/// Used when the process's environment has no PATH (the same default as runc and Docker).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Who receives the pty master.
pub(crate) enum ConsoleTarget<'a> {
    /// `--console-socket`: containerd, conmon.
    Socket(&'a OwnedFd),
    /// The runtime's own foreground `run`/`exec`, over the sync channel.
    Parent(&'a Channel),
}

/// Opens the pty inside the container, hands the master out and makes the slave the
/// controlling terminal and stdio. With `bind_console`, also binds it onto /dev/console.
pub(crate) fn setup_terminal(
    process: &Process,
    to: ConsoleTarget<'_>,
    bind_console: bool,
) -> Result<()> {
    let pty = terminal::open_pty()?;
    if let Some(size) = process.console_size() {
        let rows = u16::try_from(size.height()).unwrap_or(u16::MAX);
        let cols = u16::try_from(size.width()).unwrap_or(u16::MAX);
        terminal::set_size(pty.master.as_fd(), rows, cols).op(|| "set console size".to_string())?;
    }
    if bind_console {
        crate::rootfs::mount_console(&pty.slave_path)?;
    }
    match to {
        ConsoleTarget::Socket(sock) => {
            terminal::send_fd(sock.as_fd(), pty.master.as_fd(), &pty.slave_path)?
        }
        ConsoleTarget::Parent(chan) => chan
            .send_with_fd(&Message::PtyMaster, Some(pty.master.as_fd()))
            .op(|| "send the pty master to the runtime".to_string())?,
    }
    drop(pty.master);
    terminal::make_controlling(&pty.slave)
}

/// Gives the container process default signal handling: the runtime blocks signals to forward
/// them, and Rust ignores SIGPIPE; neither may leak into the container (dispositions set to
/// ignore survive execve).
pub(crate) fn reset_signals() {
    /// The kernel's `struct sigaction` (x86-64/aarch64 layout): default handler, no flags.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: 0, // SIG_DFL
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let empty: u64 = 0;
    // SAFETY: raw rt_sigprocmask/rt_sigaction with valid pointers to 8-byte sets. Raw calls on
    // purpose: glibc refuses to touch its internal signals 32 and 33, which a caller may have
    // left ignored and which would otherwise stay ignored in the container.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            8,
        );
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8,
                );
            }
        }
    }
}

/// Starts a new session (the container's processes must not share the caller's terminal).
pub(crate) fn new_session() -> Result<()> {
    // SAFETY: setsid takes no arguments.
    if unsafe { libc::setsid() } < 0 {
        let e = io::Error::last_os_error();
        // EPERM: already a session leader (an exec'd process reusing its session).
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(e).op(|| "setsid".to_string());
        }
    }
    Ok(())
}

/// The program to execve: opened (and checked) before the last privileges are dropped, then
/// executed through that descriptor, so what was checked is what runs.
pub(crate) struct Launch {
    program: OwnedFd,
    name: String,
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// A seccomp filter still to load, right before exec (with no_new_privs).
    seccomp: Option<SeccompProgram>,
    /// The notification listener of a filter already loaded: the caller hands it on.
    pub seccomp_listener: Option<OwnedFd>,
    /// `execCPUAffinity.final`: set last, once the process is in its cgroup.
    final_cpus: Option<rustix::thread::CpuSet>,
}

impl Launch {
    /// Replaces the process image. Returns only on failure.
    pub fn exec(self) -> Error {
        if let Some(cpus) = &self.final_cpus {
            if let Err(e) = attributes::set_cpu_affinity(None, cpus) {
                return e;
            }
        }
        if let Some(filter) = &self.seccomp {
            if let Err(e) = filter.load() {
                return e;
            }
        }
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.envp.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        // SAFETY: argv and envp are NUL-terminated strings in null-terminated arrays that live
        // until execveat returns (it only returns on failure); the descriptor is open.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                self.program.as_raw_fd(),
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        Error::sys(format!("exec {:?}", self.name), io::Error::last_os_error())
    }
}

fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(s)
        .map_err(|_| Error::config("config.json", what, format!("{s:?} holds a NUL byte")))
}

/// Device and inode of the runtime's own executable; the container may never exec it.
pub(crate) type RuntimeExe = (u64, u64);

pub(crate) fn runtime_exe() -> Result<RuntimeExe> {
    let st = rustix::fs::stat("/proc/self/exe").at("stat", "/proc/self/exe")?;
    Ok((st.st_dev, st.st_ino))
}

/// Applies limits, identity, capabilities and the rest of `process`, and opens the program.
/// `preserve_fds` descriptors after stdio stay open for the program; every other one is
/// closed at exec, and none that is a directory survives even until then.
pub(crate) fn prepare(
    process: &Process,
    linux: Option<&Linux>,
    preserve_fds: RawFd,
    set_groups: bool,
    runtime: RuntimeExe,
    seccomp: Option<&SeccompProgram>,
) -> Result<Launch> {
    let args = process.args().as_deref().unwrap_or_default();
    let argv = args
        .iter()
        .map(|a| cstring(a, "process.args"))
        .collect::<Result<Vec<_>>>()?;
    let env = process.env().as_deref().unwrap_or_default();
    let envp = env
        .iter()
        .map(|e| cstring(e, "process.env"))
        .collect::<Result<Vec<_>>>()?;
    let program = args
        .first()
        .ok_or_else(|| Error::config("config.json", "process.args", "is empty"))?;

    // CVE-2024-21626: a descriptor of a host directory, reachable as /proc/self/fd/N, would
    // let a working directory or program path lead out of the container. None may be open
    // while paths from the config are used.
    close_directories_from(3 + preserve_fds)?;
    if let Some(limits) = process.rlimits() {
        rlimits::apply(limits)?;
    }
    // While the capabilities to raise them (CAP_SYS_NICE) are still held.
    attributes::scheduler(process)?;
    attributes::io_priority(process)?;
    attributes::memory_policy(linux.and_then(|l| l.memory_policy().as_ref()))?;
    attributes::personality(linux.and_then(|l| l.personality().as_ref()))?;
    let final_cpus = attributes::cpu_set(process.exec_cpu_affinity().as_ref(), false)?;
    apparmor(process.apparmor_profile().as_deref())?;
    let last = last_cap();
    let caps = CapSets::from_spec(process.capabilities().as_ref(), last);
    caps.apply_bounding(last)?;
    let nnp = process.no_new_privileges() == Some(true);
    let mut seccomp_listener = None;
    let mut seccomp_at_exec = None;
    if let Some(filter) = seccomp {
        if !nnp {
            // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while held.
            seccomp_listener = filter.load()?;
        } else if !filter.wants_listener() {
            seccomp_at_exec = Some(filter.clone());
        }
    }
    identity::switch_to(process.user(), set_groups)?;
    caps.apply_process_sets()?;
    let cwd = process.cwd();
    rustix::process::chdir(cwd).at("chdir to process.cwd", cwd)?;
    let real_cwd = rustix::process::getcwd(Vec::new()).at("getcwd", cwd)?;
    if !real_cwd.to_bytes().starts_with(b"/") {
        return Err(Error::Child(format!(
            "process.cwd {} is outside the container ({})",
            cwd.display(),
            real_cwd.to_string_lossy()
        )));
    }
    if let Some(mask) = process.user().umask() {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask & 0o777));
    } else {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    }
    if process.no_new_privileges() == Some(true) {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            return Err(io::Error::last_os_error()).op(|| "set no_new_privs".to_string());
        }
    }
    let path = find_program(program, env)?;
    let program_fd = open_program(&path, runtime)?;
    if let Some(filter) = seccomp.filter(|f| nnp && f.wants_listener()) {
        // The listener must reach the runtime before the process is released.
        seccomp_listener = filter.load()?;
    }
    keep_only_stdio_and(preserve_fds)?;
    Ok(Launch {
        program: program_fd,
        name: program.clone(),
        argv,
        envp,
        seccomp: seccomp_at_exec,
        seccomp_listener,
        final_cpus,
    })
}

/// Opens the program (and, for a `#!` script, checks its interpreter) and refuses the runtime's
/// own executable: run inside the container, it would hand the container a way to overwrite
/// the host's binary through /proc/self/exe (CVE-2019-5736).
fn open_program(path: &Path, runtime: RuntimeExe) -> Result<OwnedFd> {
    let fd = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::Child(format!("exec: {:?}: {}", path, io::Error::from(e))))?;
    refuse_runtime(&fd, path, runtime)?;
    // A script runs its interpreter: check that too, and let the interpreter read the script
    // through /dev/fd/N (execveat of a close-on-exec descriptor cannot run a script).
    if let Some(interpreter) = shebang(&fd) {
        if let Ok(ifd) =
            rustix::fs::open(&interpreter, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        {
            refuse_runtime(&ifd, &interpreter, runtime)?;
        }
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty()).at("fcntl", path)?;
    }
    Ok(fd)
}

fn refuse_runtime(fd: &OwnedFd, path: &Path, runtime: RuntimeExe) -> Result<()> {
    let st = rustix::fs::fstat(fd).at("stat", path)?;
    if (st.st_dev, st.st_ino) == runtime {
        return Err(Error::Child(format!(
            "exec: {}: refusing to run the runtime's own binary inside the container",
            path.display()
        )));
    }
    Ok(())
}

/// The interpreter of a `#!` script, if the file is one (and readable).
fn shebang(fd: &OwnedFd) -> Option<PathBuf> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let file = rustix::fs::open(
        path.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut head = [0u8; 256];
    let n = rustix::io::read(&file, &mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let interpreter = line
        .split(|b| b.is_ascii_whitespace())
        .find(|w| !w.is_empty())?;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(interpreter)))
}

/// `process.apparmorProfile`, applied at exec. A host without AppArmor cannot confine: that is
/// said, not silently skipped.
fn apparmor(profile: Option<&str>) -> Result<()> {
    let Some(profile) = profile.filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    if !Path::new("/sys/kernel/security/apparmor").exists() {
        log::warn!(
            "process.apparmorProfile {profile:?} not applied: AppArmor is not enabled on this host"
        );
        return Ok(());
    }
    let value = format!("exec {profile}");
    std::fs::write("/proc/thread-self/attr/apparmor/exec", &value)
        .or_else(|_| std::fs::write("/proc/thread-self/attr/exec", &value))
        .op(|| format!("set AppArmor profile {profile:?}"))
}

/// Finds the program as execvp would, with the container's PATH, inside the container.
fn find_program(program: &str, env: &[String]) -> Result<PathBuf> {
    if program.contains('/') {
        // Checked now, so `create` reports it rather than a failed exec after `start`.
        let path = PathBuf::from(program);
        return match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(path),
            Ok(_) => Err(Error::Child(format!(
                "exec: {program:?}: not a regular file"
            ))),
            Err(e) => Err(Error::Child(format!("exec: {program:?}: {e}"))),
        };
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(program);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if meta.is_file() && rustix::fs::access(&candidate, rustix::fs::Access::EXEC_OK).is_ok() {
            return Ok(candidate);
        }
    }
    Err(Error::Child(format!(
        "exec: {program:?}: executable file not found in $PATH"
    )))
}

/// Closes every descriptor from `first` up that is a directory. Ours are sockets, FIFOs and
/// namespace files by now; a directory can only be a leak (the runtime's caller's, or a bug).
fn close_directories_from(first: RawFd) -> Result<()> {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd >= first)
            .collect(),
        // No /proc in this container: probe every possible number instead.
        Err(_) => (first..rlimit_nofile()).collect(),
    };
    for fd in fds {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes into `st`; a closed number just fails with EBADF.
        if unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0 {
            // SAFETY: fstat succeeded, so `st` is initialised.
            let mode = unsafe { st.assume_init() }.st_mode;
            if mode & libc::S_IFMT == libc::S_IFDIR {
                // SAFETY: closing a leaked descriptor nothing of ours uses.
                unsafe { libc::close(fd) };
            }
        }
    }
    Ok(())
}

fn rlimit_nofile() -> RawFd {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a local struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    rl.rlim_cur.min(65_536) as RawFd
}

/// Descriptors 0..3+preserve survive exec; everything else is marked close-on-exec.
fn keep_only_stdio_and(preserve: RawFd) -> Result<()> {
    for fd in 3..3 + preserve {
        // SAFETY: clearing FD_CLOEXEC on a descriptor the caller asked to pass on.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            return Err(io::Error::last_os_error()).op(|| format!("preserve fd {fd}"));
        }
    }
    sys::cloexec_from(3 + preserve).op(|| "close the runtime's descriptors".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path() {
        let env = vec!["PATH=/nonexistent:/usr/bin:/bin".to_string()];
        let p = find_program("sh", &env).unwrap();
        assert!(p.ends_with("sh"), "{p:?}");
        assert_eq!(
            find_program("/bin/sh", &env).unwrap(),
            PathBuf::from("/bin/sh")
        );
        assert!(
            find_program("/x/y", &env)
                .unwrap_err()
                .to_string()
                .contains("No such file")
        );
        let e = find_program("no-such-program-here", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("executable file not found in $PATH"), "{e}");
    }

    #[test]
    fn directories_are_not_programs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("prog")).unwrap();
        let env = vec![format!("PATH={}", dir.path().display())];
        assert!(find_program("prog", &env).is_err());
    }
}
