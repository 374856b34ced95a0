//! Running the real `berth-runtime` binary against the fixtures, with its own state root and its
//! own cgroup parent per test, and removing all of it afterwards (even when the test fails).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::fixtures;

/// The runtime binary next to the test executable (target/<profile>/berth-runtime), or
/// $BERTH_RUNTIME.
pub fn runtime_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_RUNTIME") {
        return PathBuf::from(p);
    }
    workspace_binary("berth-runtime")
}

/// A binary of the workspace built beside the test executable (target/<profile>/NAME).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: cargo build --workspace --bins",
        bin.display()
    );
    bin
}

/// Runs `cmd` with empty stdin, its output captured through files rather than pipes: `create`,
/// `run -d` and `exec -d` leave a process holding the stdio they were given, and a pipe would
/// never see end-of-file.
pub fn output_through_files(mut cmd: Command) -> Output {
    let out = tempfile::tempfile().expect("tempfile");
    let err = tempfile::tempfile().expect("tempfile");
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .status()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let read = |mut f: fs::File| {
        use std::io::{Read, Seek};
        let mut v = Vec::new();
        f.rewind()
            .and_then(|_| f.read_to_end(&mut v))
            .expect("read output");
        v
    };
    Output {
        status,
        stdout: read(out),
        stderr: read(err),
    }
}

/// A TCP port free on 127.0.0.1 just now (the kernel's pick), never one this process was
/// given before: two tests running at once must not both start a server on the same port (the
/// second server fails to bind while the first one answers its readiness check).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on 127.0.0.1");
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A name no other test (or test run) uses at the same time.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Every hierarchy directory of the host (v1 mounts and the cgroup2 mount).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let mountpoint = pre.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mountpoint))
        })
        .collect()
}

/// A state root and a cgroup parent of its own; containers, their cgroups and the root are
/// removed on drop.
pub struct Runtime {
    root: tempfile::TempDir,
    bin: PathBuf,
    /// Parent cgroup (relative to each hierarchy root) for this runtime's containers.
    pub cgroup_parent: String,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    pub fn new() -> Runtime {
        Runtime {
            root: tempfile::Builder::new()
                .prefix("berth-state-")
                .tempdir()
                .expect("tempdir"),
            bin: runtime_binary(),
            cgroup_parent: unique("berth-test"),
        }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// `berth-runtime --root ROOT args…`, stdio not redirected yet.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.root.path()).args(args);
        c
    }

    /// Runs a command with empty stdin and captured output (`output_through_files`).
    pub fn output<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        output_through_files(self.command(args))
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(&self, args: &[S]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "berth-runtime {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail; returns its stderr.
    pub fn fails<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(&self, args: &[S]) -> String {
        let out = self.output(args);
        assert!(
            !out.status.success(),
            "berth-runtime {args:?} succeeded but should have failed:\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Writes the bundle's config for container `id` (placing it in this runtime's cgroup
    /// parent) and returns the bundle directory.
    pub fn prepare(&self, id: &str, bundle: &Bundle) -> PathBuf {
        let mut spec = bundle.spec.clone();
        if spec["linux"]["cgroupsPath"].is_null() {
            spec["linux"]["cgroupsPath"] = json!(format!("/{}/{id}", self.cgroup_parent));
        }
        fs::write(
            bundle.dir.path().join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .expect("write config.json");
        bundle.dir.path().to_path_buf()
    }

    /// `run` in the foreground; returns (exit code, stdout, stderr).
    pub fn run(&self, id: &str, bundle: &Bundle) -> (i32, String, String) {
        let dir = self.prepare(id, bundle);
        let out = self.output(&[
            "run".as_ref(),
            "--bundle".as_ref(),
            dir.as_os_str(),
            id.as_ref(),
        ]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `run` that must exit 0; returns stdout.
    pub fn run_ok(&self, id: &str, bundle: &Bundle) -> String {
        let (code, out, err) = self.run(id, bundle);
        assert_eq!(
            code, 0,
            "container {id} exited {code}\nstdout: {out}\nstderr: {err}"
        );
        out
    }

    /// `create` (the init waits); the bundle is prepared first.
    pub fn create(&self, id: &str, bundle: &Bundle) {
        let dir = self.prepare(id, bundle);
        self.ok(&[
            "create".as_ref(),
            "--bundle".as_ref(),
            dir.as_os_str(),
            id.as_ref(),
        ]);
    }

    /// The `state` document.
    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state is JSON")
    }

    /// Host directories of this runtime's cgroup parent that still exist.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        cgroup_mounts()
            .into_iter()
            .map(|m| m.join(&self.cgroup_parent))
            .filter(|p| p.exists())
            .filter(|p| {
                fs::read_dir(p)
                    .map(|d| d.filter_map(Result::ok).any(|e| e.path().is_dir()))
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(self.root.path()) {
            for e in entries.filter_map(Result::ok) {
                let id = e.file_name();
                let _ = self
                    .command(&["delete".as_ref(), "--force".as_ref(), id.as_os_str()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        remove_cgroup_parent(&self.cgroup_parent);
    }
}

/// Directories a peer engine makes at paths it does not let us choose (containerd 1.6's shim
/// sockets in /run/containerd/s, dockerd's /run/docker/plugins): those missing when the guard
/// is made are removed again, in the order given, when it drops, if they are empty then (a
/// test running beside may still use one; it stays).
pub struct PeerDirs(Vec<PathBuf>);

impl PeerDirs {
    pub fn new(paths: &[&str]) -> PeerDirs {
        PeerDirs(
            paths
                .iter()
                .map(PathBuf::from)
                .filter(|p| !p.exists())
                .collect(),
        )
    }
}

impl Drop for PeerDirs {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// What containerd 1.6 and its runc shim make under /run whatever their configuration says.
pub const CONTAINERD_RUN_DIRS: &[&str] = &["/run/containerd/s", "/run/containerd"];
/// What dockerd makes under /run besides its exec root.
pub const DOCKERD_RUN_DIRS: &[&str] = &["/run/docker/plugins", "/run/docker"];

/// Removes the cgroup parent `name` (relative to each hierarchy's root) and the empty cgroups
/// below it from every hierarchy; busy ones stay.
pub fn remove_cgroup_parent(name: &str) {
    assert!(
        !name.trim_matches('/').is_empty(),
        "remove_cgroup_parent of a hierarchy root"
    );
    for mount in cgroup_mounts() {
        let parent = mount.join(name.trim_start_matches('/'));
        if let Ok(children) = fs::read_dir(&parent) {
            for c in children
                .filter_map(Result::ok)
                .filter(|c| c.path().is_dir())
            {
                let _ = fs::remove_dir(c.path());
            }
        }
        let _ = fs::remove_dir(&parent);
    }
}

/// A bundle directory whose config runs the busybox fixture rootfs (shared, read-only).
pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub spec: Value,
}

impl Bundle {
    /// The default config (runc's shape, Docker's masked paths), no terminal, running `args`.
    pub fn busybox(args: &[&str]) -> Bundle {
        let rootfs = &fixtures::busybox().rootfs;
        let mut spec = berth_runtime::spec_template::default_spec(false, 0, 0);
        spec["process"]["terminal"] = false.into();
        spec["process"]["args"] = json!(args);
        spec["root"]["path"] = json!(rootfs);
        Bundle {
            dir: tempfile::Builder::new()
                .prefix("berth-bundle-")
                .tempdir()
                .expect("tempdir"),
            spec,
        }
    }

    /// `sh -c SCRIPT`.
    pub fn sh(script: &str) -> Bundle {
        Bundle::busybox(&["sh", "-c", script])
    }

    pub fn edit(mut self, f: impl FnOnce(&mut Value)) -> Bundle {
        f(&mut self.spec);
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A writable root filesystem of its own for a test that changes it: the busybox binary, the
/// given applets as links to it, and empty /proc, /sys and /dev (plus `dirs`).
pub fn private_rootfs(applets: &[&str], dirs: &[&str]) -> tempfile::TempDir {
    let rootfs = tempfile::Builder::new()
        .prefix("berth-rootfs-")
        .tempdir()
        .expect("tempdir");
    for d in ["proc", "sys", "dev", "bin"].iter().chain(dirs) {
        fs::create_dir_all(rootfs.path().join(d)).expect("mkdir in rootfs");
    }
    fs::copy(
        fixtures::busybox().rootfs.join("bin/busybox"),
        rootfs.path().join("bin/busybox"),
    )
    .expect("copy busybox");
    for applet in applets {
        std::os::unix::fs::symlink("busybox", rootfs.path().join("bin").join(applet))
            .expect("applet link");
    }
    rootfs
}

/// Whether a line of the container's /proc/self/mountinfo for `mountpoint` carries `option`.
pub fn mount_has_option(mountinfo: &str, mountpoint: &str, option: &str) -> bool {
    mountinfo.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 5 && f[4] == mountpoint && f[5].split(',').any(|o| o == option)
    })
}

/// Mount points below `dir` of filesystems of type `fstype`.
pub fn mounts_under(dir: &Path, fstype: &str) -> Vec<String> {
    let tag = format!(" - {fstype} ");
    let base = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&tag))
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&base))
        .map(str::to_string)
        .collect()
}

/// Unmounts (lazily, deepest first) everything mounted under `dir`: what a daemon under test
/// left when it was stopped or a test failed midway.
pub fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let base = dir.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&base))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH);
    }
}
