//! Terminals: the pty master handed over `--console-socket` (what containerd and conmon do),
//! a foreground `run -t` on the user's own terminal, and `exec --tty`.

use std::io::{IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use berth_kernel_tests::harness::{Bundle, Runtime, unique};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

/// A console socket like containerd's: accepts one connection and receives one descriptor.
struct ConsoleSocket {
    path: PathBuf,
    _dir: tempfile::TempDir,
    listener: UnixListener,
}

impl ConsoleSocket {
    fn new() -> ConsoleSocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path).unwrap();
        ConsoleSocket {
            path,
            _dir: dir,
            listener,
        }
    }

    /// Waits for the runtime to connect and send the pty master; returns it and the name sent.
    fn receive(self) -> thread::JoinHandle<(OwnedFd, String)> {
        let this = self;
        thread::spawn(move || {
            // All of `this` (the socket's directory too) lives until the descriptor arrives.
            let this = this;
            let (conn, _) = this.listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let n = rustix::net::recvmsg(
                &conn,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::empty(),
            )
            .unwrap()
            .bytes;
            let fd = control
                .drain()
                .find_map(|m| match m {
                    RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
                    _ => None,
                })
                .expect("a descriptor");
            (fd, String::from_utf8_lossy(&buf[..n]).into_owned())
        })
    }
}

/// Reads from a pty master until `want` shows up (or 10 s pass).
fn read_until(master: &OwnedFd, want: &str) -> String {
    rustix::fs::fcntl_setfl(master, rustix::fs::OFlags::NONBLOCK).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match rustix::io::read(master, &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&out).contains(want) {
                    break;
                }
            }
            Err(rustix::io::Errno::AGAIN) => thread::sleep(Duration::from_millis(10)),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn terminal(bundle: Bundle) -> Bundle {
    bundle.edit(|s| {
        s["process"]["terminal"] = true.into();
        s["process"]["consoleSize"] = serde_json::json!({"height": 40, "width": 100});
    })
}

#[test]
fn console_socket_receives_the_pty_master() {
    let rt = Runtime::new();
    let id = unique("console");
    let socket = ConsoleSocket::new();
    let path = socket.path.clone();
    let received = socket.receive();
    let bundle = terminal(Bundle::sh(
        "tty; stty size; ls -l /dev/console | cut -c1; echo done-$((6*7))",
    ));
    let dir = rt.prepare(&id, &bundle);
    rt.ok(&[
        "create".as_ref(),
        "--console-socket".as_ref(),
        path.as_os_str(),
        "--bundle".as_ref(),
        dir.as_os_str(),
        id.as_ref(),
    ]);
    let (master, name) = received.join().unwrap();
    assert!(
        name.starts_with("/dev/pts/"),
        "name sent with the descriptor: {name:?}"
    );
    rt.ok(&["start", &id]);
    let out = read_until(&master, "done-42");
    assert!(out.contains("/dev/pts/0"), "stdio is the pty: {out:?}");
    assert!(out.contains("40 100"), "console size applied: {out:?}");
    assert!(
        out.contains("\nc") || out.contains("c\r"),
        "/dev/console is the pty (a char device): {out:?}"
    );
    assert!(out.contains("done-42\r\n"), "{out:?}");
}

#[test]
fn a_terminal_without_a_console_socket_is_refused_for_create() {
    let rt = Runtime::new();
    let id = unique("noconsole");
    let bundle = terminal(Bundle::sh("true"));
    let dir = rt.prepare(&id, &bundle);
    let err = rt.fails(&[
        "create".as_ref(),
        "--bundle".as_ref(),
        dir.as_os_str(),
        id.as_ref(),
    ]);
    assert!(
        err.contains("process.terminal") && err.contains("--console-socket"),
        "{err}"
    );
    assert!(!rt.root().join(&id).exists());
}

#[test]
fn foreground_run_proxies_the_users_terminal() {
    let rt = Runtime::new();
    let id = unique("fgtty");
    // The test plays the user's terminal: a pty whose slave is the runtime's stdio.
    let user_master =
        rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY)
            .unwrap();
    rustix::pty::unlockpt(&user_master).unwrap();
    let slave_name = rustix::pty::ptsname(&user_master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(slave_name.to_str().unwrap())
        .unwrap();
    rustix::termios::tcsetwinsize(
        &slave,
        rustix::termios::Winsize {
            ws_row: 33,
            ws_col: 77,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .unwrap();
    let bundle = Bundle::sh("read line; echo \"got:$line\"; stty size; exit 3")
        .edit(|s| s["process"]["terminal"] = true.into());
    let dir = rt.prepare(&id, &bundle);
    let mut child = rt
        .command(&["run".as_ref(), "-b".as_ref(), dir.as_os_str(), id.as_ref()])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut writer = std::fs::File::from(user_master.as_fd().try_clone_to_owned().unwrap());
    thread::sleep(Duration::from_millis(200));
    writer.write_all(b"hello\r").unwrap();
    let out = read_until(&user_master, "33 77");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "{out:?}");
    assert!(out.contains("got:hello"), "{out:?}");
    assert!(
        out.contains("33 77"),
        "window size copied from the user's terminal: {out:?}"
    );
    let mut rest = String::new();
    let _ = std::fs::File::from(user_master).read_to_string(&mut rest);
}

#[test]
fn exec_with_a_tty_over_a_console_socket() {
    let rt = Runtime::new();
    let id = unique("exectty");
    let bundle = Bundle::sh("sleep 100");
    rt.create(&id, &bundle);
    rt.ok(&["start", &id]);
    let socket = ConsoleSocket::new();
    let path = socket.path.clone();
    let received = socket.receive();
    rt.ok(&[
        "exec".as_ref(),
        "-d".as_ref(),
        "-t".as_ref(),
        "--console-socket".as_ref(),
        path.as_os_str(),
        id.as_ref(),
        "sh".as_ref(),
        "-c".as_ref(),
        "tty; echo exec-done".as_ref(),
    ]);
    let (master, _) = received.join().unwrap();
    let out = read_until(&master, "exec-done");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("exec-done"), "{out:?}");
}
