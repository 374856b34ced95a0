//! Terminals for `process.terminal`: the pty is opened inside the container (its own devpts),
//! the master goes to whoever holds the console (containerd, podman's conmon: over
//! `--console-socket` with SCM_RIGHTS; or the runtime's own foreground `run`), the slave becomes
//! the process's stdio and controlling terminal.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use rustix::pty::OpenptFlags;

use crate::error::{Context, Result};

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub slave_path: PathBuf,
}

/// Opens a new pty from /dev/ptmx of the current mount namespace.
pub fn open_pty() -> Result<Pty> {
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .at("open", "/dev/ptmx")?;
    rustix::pty::unlockpt(&master).at("unlockpt", "/dev/ptmx")?;
    let name = rustix::pty::ptsname(&master, Vec::new()).at("ptsname", "/dev/ptmx")?;
    let slave_path = PathBuf::from(name.to_string_lossy().into_owned());
    // The peer straight from the master (TIOCGPTPEER): reopening the slave by path would trust
    // a /dev the container can change.
    const TIOCGPTPEER: libc::c_ulong = 0x5441;
    // SAFETY: the ioctl returns a new descriptor for the master's peer, or -1.
    let fd = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            TIOCGPTPEER as _,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error()).at("open the pty peer of", &slave_path);
    }
    // SAFETY: the ioctl returned a fresh descriptor nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(Pty {
        master,
        slave,
        slave_path,
    })
}

/// Sets the window size of a terminal.
pub fn set_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(fd, ws).map_err(Into::into)
}

pub fn get_size(fd: BorrowedFd<'_>) -> io::Result<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(fd)?;
    Ok((ws.ws_row, ws.ws_col))
}

/// Sends `fd` over a connected unix socket with SCM_RIGHTS, the name as payload (what runc
/// sends and containerd's and conmon's receivers expect).
pub fn send_fd(socket: BorrowedFd<'_>, fd: BorrowedFd<'_>, name: &Path) -> Result<()> {
    send_bytes_with_fd(socket, name.as_os_str().as_encoded_bytes(), fd)
        .op(|| "send the pty master over the console socket".to_string())
}

/// One message: `payload` and, with SCM_RIGHTS, `fd`.
pub(crate) fn send_bytes_with_fd(
    socket: BorrowedFd<'_>,
    payload: &[u8],
    fd: BorrowedFd<'_>,
) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(payload)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .map(drop)
    .map_err(Into::into)
}

/// Makes `slave` the calling process's stdin/stdout/stderr and controlling terminal. The caller
/// must already lead a session (setsid).
pub fn make_controlling(slave: &OwnedFd) -> Result<()> {
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors; `slave` stays open and owned.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(io::Error::last_os_error()).op(|| format!("dup2 pty onto fd {target}"));
        }
    }
    // SAFETY: TIOCSCTTY with argument 0 only adopts the terminal on fd 0.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::last_os_error()).op(|| "set controlling terminal".to_string());
    }
    Ok(())
}

/// Puts a terminal into raw mode and restores the old settings when dropped (foreground
/// `run -t` / `exec -t` on the user's own terminal).
pub struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: rustix::termios::Termios,
}

impl<'a> RawMode<'a> {
    pub fn enter(fd: BorrowedFd<'a>) -> io::Result<RawMode<'a>> {
        let saved = rustix::termios::tcgetattr(fd)?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &raw)?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ =
            rustix::termios::tcsetattr(self.fd, rustix::termios::OptionalActions::Now, &self.saved);
    }
}

pub fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    rustix::termios::isatty(fd)
}

/// Connects to the console socket a caller named with `--console-socket`.
pub fn connect_console_socket(path: &Path) -> Result<OwnedFd> {
    let sock = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .at("socket for console", path)?;
    let addr = rustix::net::SocketAddrUnix::new(path).at("console socket address", path)?;
    rustix::net::connect(&sock, &addr).at("connect to console socket", path)?;
    Ok(sock)
}
