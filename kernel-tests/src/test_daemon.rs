//! A berthd on a temporary root, exec root and socket, for end-to-end tests that drive it with
//! the real Docker CLI and with berth's own. Dropping it removes every container it made,
//! stops it, and unmounts and deletes what it left. It may reach loopback registries only
//! (`--block-registry '*'`): a test that names an image berthd lacks never goes to Docker Hub,
//! and its networks' resolver answers container names only (`--dns-upstream none`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures;
use crate::harness::workspace_binary;

pub struct TestDaemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub storage_driver: String,
    /// The default network's bridge, unique per test daemon (removed on drop).
    pub bridge: String,
    /// More berthd flags.
    flags: Vec<String>,
    /// The network namespace berthd runs in (the host's if `None`).
    netns: Option<String>,
    /// berthd runs in a mount namespace without the cgroup2 mounts: a pure cgroup v1 host.
    cgroup_v1_only: bool,
}

/// A finished CLI command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl TestDaemon {
    /// Starts a daemon with the default storage driver.
    pub fn start() -> TestDaemon {
        Self::start_with(None)
    }

    pub fn start_with(storage_driver: Option<&str>) -> TestDaemon {
        Self::start_with_flags(storage_driver, &[])
    }

    /// A daemon inside `netns` (which has no way out, so no registry is blocked), for
    /// registries that must not be on loopback addresses.
    pub fn start_in(netns: &crate::test_netns::TestNetns, flags: &[&str]) -> TestDaemon {
        let mut d = Self::new(None, flags);
        d.netns = Some(netns.name.clone());
        d.spawn();
        d
    }

    /// A daemon that sees the host as pure cgroup v1: it runs in a mount namespace of its own
    /// where this hybrid host's cgroup2 mounts are unmounted. Its bpffs is mounted here first,
    /// so its pins stay reachable (and removable) from the test.
    pub fn start_on_cgroup_v1(flags: &[&str]) -> TestDaemon {
        let mut d = Self::new(None, flags);
        assert!(
            !cgroup2_mounts().is_empty() && !cgroup2_mounts().contains(&"/sys/fs/cgroup".into()),
            "a cgroup v1 view needs a hybrid host (v1 controllers plus a cgroup2 mount)"
        );
        let bpffs = d.dir.path().join("bpf");
        std::fs::create_dir_all(&bpffs).expect("mkdir bpf");
        rustix::mount::mount(
            "bpf",
            &bpffs,
            "bpf",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .expect("mount a bpffs");
        d.cgroup_v1_only = true;
        d.spawn();
        d
    }

    /// With more berthd flags (`--registry-mirror URL`, …).
    pub fn start_with_flags(storage_driver: Option<&str>, flags: &[&str]) -> TestDaemon {
        let mut d = Self::new(storage_driver, flags);
        d.spawn();
        d
    }

    fn new(storage_driver: Option<&str>, flags: &[&str]) -> TestDaemon {
        // Socket paths must fit in 108 bytes: a short directory under /tmp.
        let dir = tempfile::Builder::new()
            .prefix("bd")
            .tempdir_in("/tmp")
            .expect("temporary directory");
        // bt<pid><n>: unique on the host, at most 15 bytes.
        let bridge = crate::harness::unique("bt").replace('-', "");
        TestDaemon {
            dir,
            child: None,
            storage_driver: storage_driver.unwrap_or("").to_string(),
            bridge,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            netns: None,
            cgroup_v1_only: false,
        }
    }

    /// The clients' config directory (`DOCKER_CONFIG`, where logins are kept).
    pub fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    /// Where the daemon pins its datapath and published-port programs (`datapath/`,
    /// `ports/`; on a bpffs of its own, which berthd mounts on the parent directory and the
    /// drop unmounts).
    pub fn bpf_pin_dir(&self) -> PathBuf {
        self.dir.path().join("bpf").join("berth")
    }

    /// The daemon's certs.d (empty unless a test puts a registry's CA there).
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn exec_root(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("d.sock")
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("berthd.log"))
            .expect("daemon log");
        let mut cmd = Command::new(workspace_binary("berthd"));
        cmd.arg("--root")
            .arg(self.root())
            .arg("--exec-root")
            .arg(self.exec_root())
            .arg("-H")
            .arg(self.host())
            .arg("--debug")
            .arg("--bridge")
            .arg(&self.bridge)
            .arg("--registry-certs-dir")
            .arg(self.certs_dir())
            .arg("--bpf-pin-dir")
            .arg(self.bpf_pin_dir())
            .arg("--nft-table")
            .arg(&self.bridge)
            .arg("--cgroup-parent")
            .arg(self.cgroup_parent())
            .args(["--dns-upstream", "none"])
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if !self.storage_driver.is_empty() {
            cmd.arg("--storage-driver").arg(&self.storage_driver);
        }
        let _ns = match &self.netns {
            Some(name) => Some(crate::test_netns::enter_on_spawn(name, &mut cmd)),
            None => {
                cmd.args(["--block-registry", "*"]);
                None
            }
        };
        if self.cgroup_v1_only {
            hide_cgroup2(&mut cmd);
        }
        let child = cmd.spawn().expect("spawn berthd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = self.request("GET", "/_ping", None) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("berthd exited ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("berthd did not answer /_ping in 20 s:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    /// `kill -9` of the daemon (its containers and monitors live on).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the daemon as an operator would (SIGTERM), waiting for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Starts the daemon again on the same root.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// One raw HTTP/1.1 request; (status, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> std::io::Result<(u16, String)> {
        self.raw(&format!(
            "{method} {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.map_or(0, <[u8]>::len)
        ), body.unwrap_or(b""))
    }

    /// Sends `head` and `body` as they are (for malformed requests) and reads the answer.
    pub fn raw(&self, head: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
        let mut s = UnixStream::connect(self.socket())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(head.as_bytes())?;
        // A server refusing a body (too large) answers and closes before reading it all.
        if let Err(e) = s.write_all(body) {
            if e.kind() != std::io::ErrorKind::BrokenPipe
                && e.kind() != std::io::ErrorKind::ConnectionReset
            {
                return Err(e);
            }
        }
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        Ok((status, body))
    }

    fn cli(&self, program: &Path, args: &[&str], stdin: Option<&[u8]>) -> Run {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.docker_config())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let data = data.to_vec();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            });
        }
        Run::from(child.wait_with_output().expect("wait for the CLI"))
    }

    /// The Docker CLI (`docker` on the PATH) against this daemon.
    pub fn docker(&self, args: &[&str]) -> Run {
        self.cli(Path::new("docker"), args, None)
    }

    pub fn docker_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        self.cli(Path::new("docker"), args, Some(stdin))
    }

    /// berth's CLI against this daemon.
    pub fn berth(&self, args: &[&str]) -> Run {
        self.cli(&workspace_binary("berth"), args, None)
    }

    pub fn berth_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        self.cli(&workspace_binary("berth"), args, Some(stdin))
    }

    /// `docker …`, which must succeed; its stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let r = self.docker(args);
        assert_eq!(
            r.code,
            0,
            "docker {args:?}: {r:?}\n--- berthd log ---\n{}",
            self.log()
        );
        r.stdout
    }

    /// Loads the busybox fixture as `busybox:latest`.
    pub fn load_busybox(&self) {
        let archive = &fixtures::busybox().docker_archive;
        let out = self.docker_ok(&["load", "-i", &archive.display().to_string()]);
        assert!(out.contains("busybox:latest"), "{out}");
    }

    /// Waits until `cond` holds (at most 20 s).
    pub fn eventually(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{what}: not within 20 s\n--- berthd log ---\n{}",
            self.log()
        );
    }
}

/// Where this host mounts cgroup2 hierarchies.
fn cgroup2_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, fs)| fs.starts_with("cgroup2 "))
        })
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

/// Starts `cmd` in a mount namespace of its own without the cgroup2 mounts.
fn hide_cgroup2(cmd: &mut Command) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let mounts: Vec<std::ffi::CString> = cgroup2_mounts()
        .iter()
        .map(|p| std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path"))
        .collect();
    // SAFETY: only unshare, mount and umount2 (async-signal-safe) between fork and exec, on
    // strings made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for m in &mounts {
                if libc::umount2(m.as_ptr(), libc::MNT_DETACH) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if self.child.is_none() {
            self.spawn_quietly();
        }
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq"]).stdout;
            for id in ids.split_whitespace() {
                let _ = self.docker(&["rm", "-f", "-v", id]);
            }
            let _ = self.docker(&["network", "prune", "-f"]);
        }
        self.stop();
        // The published-port programs outlive the daemon (pinned): take them off.
        if let Some(root) = berth_daemon::ports::cgroup2_root() {
            let _ = berth_bpf::ports::remove_pinned(&self.bpf_pin_dir().join("ports"), &root);
        }
        crate::harness::unmount_under(self.dir.path());
        // The cgroup parent stays after its containers, as dockerd's /docker does.
        crate::harness::remove_cgroup_parent(&self.cgroup_parent());
        // So do its nftables table (named as its bridge) and the default network's bridge
        // (as docker0 does): remove them.
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

impl TestDaemon {
    /// The cgroup this daemon's containers go below (removed on drop), named after its bridge.
    pub fn cgroup_parent(&self) -> String {
        format!("/berth-test-{}", self.bridge)
    }

    fn spawn_quietly(&mut self) {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn()));
        if caught.is_err() {
            self.child = None;
        }
    }
}
