//! Debian's dockerd (docker.io) on temporary roots and a socket, for compatibility tests: it
//! runs with `--bridge=none --iptables=false --ip6tables=false`, so it touches no host network
//! and no firewall rule; its containers go below a cgroup parent of its own (not the host's
//! `/docker`); dropping it stops it (and the containerd it started) and unmounts and removes
//! what it left, that parent included.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{CONTAINERD_RUN_DIRS, DOCKERD_RUN_DIRS, PeerDirs};
use crate::test_daemon::Run;

pub struct TestDockerd {
    dir: tempfile::TempDir,
    child: Child,
    /// Dropped after `Drop::drop` has stopped dockerd.
    _run_dirs: PeerDirs,
}

impl TestDockerd {
    pub fn start() -> TestDockerd {
        let run_dirs = PeerDirs::new(&[DOCKERD_RUN_DIRS, CONTAINERD_RUN_DIRS].concat());
        let dir = tempfile::Builder::new()
            .prefix("dk")
            .tempdir_in("/tmp")
            .expect("temporary directory");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).expect("log");
        let p = |name: &str| dir.path().join(name).display().to_string();
        let cgroup_parent = cgroup_parent_of(dir.path());
        let child = Command::new("dockerd")
            .args([
                "--data-root",
                &p("root"),
                "--exec-root",
                &p("run"),
                "--pidfile",
                &p("dockerd.pid"),
            ])
            .args(["-H", &format!("unix://{}", p("d.sock"))])
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            // cgroupfs: a systemd driver would refuse a path as the parent.
            .args(["--exec-opt", "native.cgroupdriver=cgroupfs"])
            .args(["--cgroup-parent", &cgroup_parent])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("dockerd (Debian package docker.io)");
        let d = TestDockerd {
            dir,
            child,
            _run_dirs: run_dirs,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if d.docker(&["version"]).code == 0 {
                return d;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dockerd did not answer in 60 s:\n{}", d.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    pub fn docker(&self, args: &[&str]) -> Run {
        let out = Command::new("docker")
            .args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.path().join("d.sock").display()),
            )
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .stdin(Stdio::null())
            .output()
            .expect("docker CLI");
        Run::from(out)
    }
}

impl Drop for TestDockerd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::harness::unmount_under(self.dir.path());
        crate::harness::remove_cgroup_parent(&cgroup_parent_of(self.dir.path()));
    }
}

/// The cgroup parent of the dockerd whose directory is `dir`: unique as the directory is.
fn cgroup_parent_of(dir: &std::path::Path) -> String {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    format!("/berth-test-{}", name.unwrap_or_default())
}
