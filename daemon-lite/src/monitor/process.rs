//! The monitor process itself: start the container through the runtime library, then one poll
//! loop (no threads, no async runtime: it must stay a few hundred KiB per container) until the
//! container has exited and its output is drained.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use berth_runtime::{CreateOptions, ExecOptions, ExitStatus, Runtime, wait};
use rustix::event::{PollFd, PollFlags};

use super::{
    AttachStreams, CONFIG_FILE, Config, EXIT_FILE, Exit, FIRST_ATTACHED_FD, LISTEN_FD, REPORT_FD,
    Report, Request,
};
use crate::json_log::{self, Stream};

/// How long a client may stall a write before it is dropped (the container never waits on it).
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long output is still drained after the container's init exited (processes outside its
/// pid namespace could hold the pipes forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Runs the monitor for the container whose state directory is `state_dir`; the process exit
/// code (0 once the container ran and its exit was recorded).
pub fn main(state_dir: &Path) -> i32 {
    // SAFETY: the daemon hands the monitor these descriptors (see the module docs); nothing else
    // in this process owns them.
    let report = unsafe { File::from_raw_fd(REPORT_FD) };
    let _ = set_cloexec(REPORT_FD);
    // A client gone away must not kill the monitor.
    // SAFETY: ignoring SIGPIPE changes no memory; writes then fail with EPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    match run(state_dir, report) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth-monitor {}: {e}", state_dir.display());
            1
        }
    }
}

fn run(state_dir: &Path, mut report: File) -> io::Result<()> {
    let config: Config = std::fs::read(state_dir.join(CONFIG_FILE))
        .and_then(|b| serde_json::from_slice(&b).map_err(io::Error::other))
        .map_err(|e| with_context(e, "read the monitor config"))?;
    let listener = adopt_listener()?;
    let mut clients = Vec::new();
    for i in 0..config.attached as RawFd {
        let _ = set_cloexec(FIRST_ATTACHED_FD + i);
        // SAFETY: handed over by the daemon, owned by nobody else here.
        let stream = unsafe { UnixStream::from_raw_fd(FIRST_ATTACHED_FD + i) };
        if let Some(client) = Client::greet(stream)? {
            clients.push(client);
        }
    }
    let mut log = match &config.log_path {
        Some(p) => Some(
            json_log::Writer::open(p, config.log_rotation)
                .map_err(|e| with_context(e, &format!("open the log {}", p.display())))?,
        ),
        None => None,
    };

    let started = match start(&config) {
        Ok(s) => s,
        Err(text) => {
            let _ = report.write_all(Report::Failed(text).encode().as_bytes());
            return Ok(());
        }
    };
    let _ = report.write_all(Report::Running { pid: started.pid }.encode().as_bytes());
    drop(report);
    // Starting the container (spec parsing, the seccomp filter's compilation) used about a
    // megabyte of heap that is free now; give it back, as this process idles for the
    // container's whole life and its memory is the per-container cost of the engine.
    // SAFETY: malloc_trim only releases free memory at the heap's top and in free chunks.
    unsafe { libc::malloc_trim(0) };

    let Started {
        pid,
        pidfd,
        mut sources,
        mut stdin,
        pty,
        container,
    } = started;
    let mut status: Option<ExitStatus> = None;
    let mut exited_at: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if status.is_some()
            && (sources.is_empty() || exited_at.is_some_and(|t| t.elapsed() > DRAIN_AFTER_EXIT))
        {
            break;
        }
        let mut fds = Vec::with_capacity(sources.len() + clients.len() + 2);
        for s in &sources {
            fds.push(PollFd::new(&s.fd, PollFlags::IN));
        }
        let pidfd_slot = match (&pidfd, status) {
            (Some(p), None) => {
                fds.push(PollFd::new(p, PollFlags::IN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        fds.push(PollFd::new(&listener, PollFlags::IN));
        let listener_slot = fds.len() - 1;
        let client_base = fds.len();
        for c in &clients {
            let flags = if c.reading {
                PollFlags::IN
            } else {
                PollFlags::empty()
            };
            fds.push(PollFd::new(&c.stream, flags));
        }
        let timeout = if status.is_some() || pidfd.is_none() {
            // Without a pidfd the exit is polled for; after it, the drain has a deadline.
            Some(rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            })
        } else {
            None
        };
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(with_context(e.into(), "poll")),
        }
        let ready: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
        drop(fds);

        // Output first, so nothing the container wrote before exiting is lost.
        let mut done = Vec::new();
        for (i, source) in sources.iter().enumerate() {
            if ready[i].is_empty() {
                continue;
            }
            match rustix::io::read(&source.fd, &mut buf) {
                Ok(0) => done.push(i),
                Ok(n) => {
                    if let Some(log) = log.as_mut() {
                        if let Err(e) = log.write(source.stream, &buf[..n]) {
                            eprintln!("berth-monitor {}: log: {e}", config.id);
                        }
                    }
                    clients.retain_mut(|c| c.send(source.stream, &buf[..n], config.tty));
                }
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                // EIO: a pty whose last slave closed.
                Err(_) => done.push(i),
            }
        }
        for i in done.into_iter().rev() {
            sources.remove(i);
        }

        let exit_seen = match pidfd_slot {
            Some(slot) => !ready[slot].is_empty(),
            None => status.is_none() && !alive(pid),
        };
        if exit_seen {
            status = Some(wait::reap(pid));
            exited_at = Some(Instant::now());
            // The container's stdin has no reader any more.
            stdin = None;
        }

        if !ready[listener_slot].is_empty() {
            if let Ok((stream, _)) = listener.accept() {
                match Client::greet(stream) {
                    Ok(Some(client)) => clients.push(client),
                    Ok(None) => {}
                    Err(_) => {}
                }
            }
            while let Some(size) = take_resize(&mut clients) {
                if let Some(pty) = &pty {
                    let _ = rustix::termios::tcsetwinsize(pty, size);
                }
            }
        }

        let mut gone = Vec::new();
        for (k, client) in clients.iter_mut().enumerate() {
            let flags = ready[client_base + k];
            if flags.is_empty() || !client.reading {
                continue;
            }
            match client.stream.read(&mut buf) {
                Ok(0) => {
                    client.reading = false;
                    if client.streams.stdin && config.stdin_once {
                        stdin = None;
                    }
                    if !client.streams.stdout && !client.streams.stderr {
                        gone.push(k);
                    }
                }
                Ok(n) => {
                    if client.streams.stdin {
                        if let Some(fd) = &stdin {
                            if write_all_fd(fd, &buf[..n]).is_err() {
                                stdin = None;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => gone.push(k),
            }
        }
        for k in gone.into_iter().rev() {
            clients.remove(k);
        }
    }

    if let Some(log) = log.as_mut() {
        if let Err(e) = log.flush() {
            eprintln!("berth-monitor {}: log: {e}", config.id);
        }
    }
    // A container is deleted from the runtime once its init is gone; an exec'd process leaves
    // its container alone.
    let mut oom_killed = false;
    if let Some(container) = container {
        oom_killed = container.oom_kills() > 0;
        if let Err(e) = container.delete(true) {
            eprintln!("berth-monitor {}: delete: {e}", config.id);
        }
    }
    let exit = Exit {
        exit_code: status.unwrap_or(ExitStatus::Unknown).code(),
        finished_at: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
        oom_killed,
        error: None,
    };
    write_exit(state_dir, &exit)?;
    // Clients see the end of the stream once the exit is on disk: a `wait` that follows an
    // attach always finds it.
    drop(clients);
    Ok(())
}

/// A running container as the loop needs it.
struct Started {
    pid: i32,
    pidfd: Option<OwnedFd>,
    sources: Vec<Source>,
    stdin: Option<OwnedFd>,
    pty: Option<OwnedFd>,
    /// The container, when this monitor runs its init (not an exec'd process).
    container: Option<berth_runtime::Container>,
}

struct Source {
    fd: OwnedFd,
    stream: Stream,
}

/// Creates and starts the container with its stdio on pipes (or a pty) this process keeps.
fn start(config: &Config) -> Result<Started, String> {
    let rt = Runtime::new(&config.runtime_root);
    let opts = CreateOptions {
        bundle: config.bundle.clone(),
        ..Default::default()
    };
    let devnull = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("open /dev/null: {e}"))?;
    let mut sources = Vec::new();
    let mut stdin = None;
    let process: Option<oci_spec::runtime::Process> = match &config.exec {
        Some(p) => Some(
            serde_json::from_value(p.clone()).map_err(|e| format!("the exec'd process: {e}"))?,
        ),
        None => None,
    };
    let launch = |rt: &Runtime| -> Result<Launched, String> {
        match &process {
            None => {
                let created = rt
                    .create_for_run(&config.id, &opts, config.tty)
                    .map_err(|e| e.to_string())?;
                // The size is set before the program runs, so its first look is right.
                if let (Some(master), Some(size)) = (&created.pty_master, config.console_size) {
                    let _ = rustix::termios::tcsetwinsize(master, winsize(size));
                }
                let id = created.container.id().to_string();
                match created.start() {
                    Ok((container, pidfd, pty)) => Ok(Launched {
                        pid: container.pid(),
                        pidfd,
                        pty,
                        container: Some(container),
                    }),
                    Err(e) => {
                        if let Ok(c) = rt.load(&id) {
                            let _ = c.delete(true);
                        }
                        Err(e.to_string())
                    }
                }
            }
            Some(process) => {
                let container = rt.load(&config.id).map_err(|e| e.to_string())?;
                let exec = container
                    .exec(&ExecOptions {
                        process: process.clone(),
                        pid_file: None,
                        console_socket: None,
                        preserve_fds: 0,
                        console_to_caller: config.tty,
                    })
                    .map_err(|e| e.to_string())?;
                if let (Some(master), Some(size)) = (&exec.pty_master, config.console_size) {
                    let _ = rustix::termios::tcsetwinsize(master, winsize(size));
                }
                Ok(Launched {
                    pid: exec.pid,
                    pidfd: exec.pidfd,
                    pty: exec.pty_master,
                    container: None,
                })
            }
        }
    };
    let launched = if config.tty {
        launch(&rt)
    } else {
        let pipe = || rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC);
        let (out_r, out_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
        let (err_r, err_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
        let stdin_r = if config.open_stdin {
            let (r, w) = pipe().map_err(|e| format!("pipe: {e}"))?;
            stdin = Some(w);
            r
        } else {
            devnull.try_clone().map_err(|e| e.to_string())?.into()
        };
        // The process inherits 0, 1 and 2 across the runtime's fork.
        for (fd, target) in [(&stdin_r, 0), (&out_w, 1), (&err_w, 2)] {
            dup_onto(fd.as_raw_fd(), target).map_err(|e| format!("dup2: {e}"))?;
        }
        let launched = launch(&rt);
        // Only the process holds the other ends now, so its exit ends the streams.
        for target in 0..=2 {
            let _ = dup_onto(devnull.as_raw_fd(), target);
        }
        sources.push(Source {
            fd: out_r,
            stream: Stream::Stdout,
        });
        sources.push(Source {
            fd: err_r,
            stream: Stream::Stderr,
        });
        launched
    };
    let Launched {
        pid,
        pidfd,
        pty,
        container,
    } = launched?;
    let mut pty_fd = None;
    if let Some(master) = pty {
        if config.open_stdin {
            stdin = master.try_clone().ok();
        }
        pty_fd = master.try_clone().ok();
        sources.push(Source {
            fd: master,
            stream: Stream::Stdout,
        });
    }
    Ok(Started {
        pid,
        pidfd,
        sources,
        stdin,
        pty: pty_fd,
        container,
    })
}

/// What the runtime gave back for the started process.
struct Launched {
    pid: i32,
    pidfd: Option<OwnedFd>,
    pty: Option<OwnedFd>,
    container: Option<berth_runtime::Container>,
}

fn winsize((rows, cols): (u16, u16)) -> rustix::termios::Winsize {
    rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// One attached connection.
struct Client {
    stream: UnixStream,
    streams: AttachStreams,
    /// Still reading from it (stdin, or to notice it closing).
    reading: bool,
    resize: Option<rustix::termios::Winsize>,
}

impl Client {
    /// Reads the connection's request line. `None` for a request that is not an attach or was
    /// malformed (the connection is closed).
    fn greet(stream: UnixStream) -> io::Result<Option<Client>> {
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.len() < 4096 {
            match (&stream).read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break,
                Ok(1) => line.push(byte[0]),
                _ => return Ok(None),
            }
        }
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT))?;
        match serde_json::from_slice::<Request>(&line) {
            Ok(Request::Attach(streams)) => Ok(Some(Client {
                stream,
                streams,
                reading: true,
                resize: None,
            })),
            Ok(Request::Resize { height, width }) => Ok(Some(Client {
                stream,
                streams: AttachStreams {
                    stdin: false,
                    stdout: false,
                    stderr: false,
                },
                reading: false,
                resize: Some(rustix::termios::Winsize {
                    ws_row: height,
                    ws_col: width,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                }),
            })),
            Err(_) => Ok(None),
        }
    }

    /// Sends output; false when the client is gone (or stalled) and must be dropped.
    fn send(&mut self, stream: Stream, data: &[u8], tty: bool) -> bool {
        let wanted = match stream {
            Stream::Stdout => self.streams.stdout,
            Stream::Stderr => self.streams.stderr,
        };
        if !wanted {
            return true;
        }
        if tty {
            return self.stream.write_all(data).is_ok();
        }
        let mut header = [0u8; 8];
        header[0] = stream.frame_byte();
        header[4..].copy_from_slice(&(data.len() as u32).to_be_bytes());
        self.stream.write_all(&header).is_ok() && self.stream.write_all(data).is_ok()
    }
}

/// Takes one pending resize request (and drops its connection).
fn take_resize(clients: &mut Vec<Client>) -> Option<rustix::termios::Winsize> {
    let k = clients.iter().position(|c| c.resize.is_some())?;
    clients.remove(k).resize
}

fn adopt_listener() -> io::Result<UnixListener> {
    set_cloexec(LISTEN_FD)?;
    // SAFETY: the daemon hands over a listening socket at this number (see the module docs).
    let listener = unsafe { UnixListener::from_raw_fd(LISTEN_FD) };
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD on a descriptor number; fails with EBADF if it is not open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// dup2 that also works when `fd == target` (dup2 would then leave close-on-exec set).
fn dup_onto(fd: RawFd, target: RawFd) -> io::Result<()> {
    if fd == target {
        // SAFETY: F_SETFD on an open descriptor.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(());
    }
    // SAFETY: dup2 between descriptor numbers; the target is replaced atomically.
    if unsafe { libc::dup2(fd, target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn write_all_fd(fd: &OwnedFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd.as_fd(), data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Whether our child `pid` is still running (used only where pidfds are missing).
fn alive(pid: i32) -> bool {
    let mut info: libc::siginfo_t = unsafe_zeroed_siginfo();
    // SAFETY: waitid with WNOWAIT only inspects; `info` is a local the kernel fills.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid is valid to read once waitid returned 0 (zero when nothing exited).
    r == 0 && unsafe { info.si_pid() } == 0
}

fn unsafe_zeroed_siginfo() -> libc::siginfo_t {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn write_exit(state_dir: &Path, exit: &Exit) -> io::Result<()> {
    let bytes = serde_json::to_vec(exit).map_err(io::Error::other)?;
    crate::records::write_atomic(&state_dir.join(EXIT_FILE), &bytes)
}

fn with_context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}
