//! Staying attached to a container process (`run` and `exec` without --detach): signals the
//! runtime receives are forwarded to it, its pty (if any) is proxied to our stdio, and its exit
//! status becomes ours. One thread, one poll loop.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

use berth_runtime::terminal::{self, RawMode};
use berth_runtime::{ExitStatus, wait};
use rustix::event::{PollFd, PollFlags};

/// Signals that are delivered to us synchronously by faults: never block or forward them.
const SYNCHRONOUS: [i32; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
];

/// The forwardable signals, blocked and read from a signalfd.
pub struct Signals {
    fd: OwnedFd,
}

impl Signals {
    /// Blocks every forwardable signal. Call before the container process is started so none
    /// is lost; the container's own mask is reset by the runtime.
    pub fn block() -> io::Result<Signals> {
        // SAFETY: local sigset manipulation, then sigprocmask/signalfd on it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut set);
            for s in SYNCHRONOUS {
                libc::sigdelset(&mut set, s);
            }
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Signals {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    fn pending(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        while let Ok(n) = rustix::io::read(&self.fd, &mut info) {
            if n != info.len() {
                break;
            }
            // ssi_signo is the first u32 of signalfd_siginfo.
            out.push(u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32);
        }
        out
    }
}

/// Waits for `pid` (our child) to exit, forwarding signals and, with `pty`, proxying the
/// terminal. Returns its exit status.
pub fn attach(pid: libc::pid_t, signals: &Signals, pty: Option<OwnedFd>) -> ExitStatus {
    let stdin = io::stdin();
    let stdin_fd = stdin.as_fd();
    let _raw = match &pty {
        Some(master) if terminal::is_terminal(stdin_fd) => {
            if let Ok((rows, cols)) = terminal::get_size(stdin_fd) {
                let _ = terminal::set_size(master.as_fd(), rows, cols);
            }
            RawMode::enter(stdin_fd).ok()
        }
        _ => None,
    };
    let mut stdin_open = pty.is_some();
    let mut master_open = pty.is_some();
    let mut exited: Option<ExitStatus> = None;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        if let Some(status) = exited {
            if !master_open {
                return status;
            }
            // Drain what the container wrote before it exited, then stop.
            if let Some(m) = &pty {
                drain(m.as_fd(), &mut buf);
            }
            return status;
        }
        let mut fds = vec![PollFd::new(&signals.fd, PollFlags::IN)];
        if let (Some(m), true) = (&pty, master_open) {
            fds.push(PollFd::new(m, PollFlags::IN));
        }
        if let (Some(_), true) = (&pty, stdin_open) {
            fds.push(PollFd::from_borrowed_fd(stdin_fd, PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return wait::reap(pid),
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);

        if ready[0] {
            for sig in signals.pending() {
                match sig {
                    libc::SIGCHLD => {
                        if let Some(status) = reap_if_exited(pid) {
                            exited = Some(status);
                        }
                    }
                    libc::SIGWINCH => {
                        if let Some(m) = &pty {
                            if let Ok((rows, cols)) = terminal::get_size(stdin_fd) {
                                let _ = terminal::set_size(m.as_fd(), rows, cols);
                            }
                        }
                    }
                    other => {
                        let _ = wait::signal(pid, None, other);
                    }
                }
            }
        }
        let mut i = 1;
        if let (Some(m), true) = (&pty, master_open) {
            if ready[i] && !copy(m.as_fd(), io::stdout().as_fd(), &mut buf) {
                master_open = false;
            }
            i += 1;
        }
        if let (Some(m), true) = (&pty, stdin_open) {
            if ready[i] && !copy(stdin_fd, m.as_fd(), &mut buf) {
                stdin_open = false;
            }
        }
    }
}

fn reap_if_exited(pid: libc::pid_t) -> Option<ExitStatus> {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG writes into a local.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (r == pid).then(|| ExitStatus::from_wait_status(status))
}

/// Copies one chunk; false at end-of-file or on error (EIO: the pty's other side is closed).
fn copy(from: BorrowedFd<'_>, to: BorrowedFd<'_>, buf: &mut [u8]) -> bool {
    match rustix::io::read(from, &mut *buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => write_all(to, &buf[..n]).is_ok(),
    }
}

fn write_all(to: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(to, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn drain(master: BorrowedFd<'_>, buf: &mut [u8]) {
    let _ = rustix::fs::fcntl_setfl(master, rustix::fs::OFlags::NONBLOCK);
    while copy(master, io::stdout().as_fd(), buf) {}
    let _ = io::stdout().flush();
}
