//! Other engines running containers on berth-runtime, each with a private daemon (own state,
//! own socket, no networking changes): containerd 1.6 through its runc shim (`--runc-binary`),
//! podman (`--runtime`), dockerd (`--add-runtime`). The images come from the busybox fixture.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use berth_kernel_tests::fixtures;
use berth_kernel_tests::harness::{
    CONTAINERD_RUN_DIRS, DOCKERD_RUN_DIRS, PeerDirs, cgroup_mounts, runtime_binary, unique,
};

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what} did not come up");
        sleep(Duration::from_millis(50));
    }
}

/// Cgroup parents an engine creates (`/default`, `/docker`, …): removed afterwards unless they
/// were there before.
struct CgroupParents(Vec<PathBuf>);

impl CgroupParents {
    fn new(names: &[&str]) -> CgroupParents {
        let fresh = cgroup_mounts()
            .into_iter()
            .flat_map(|m| names.iter().map(move |n| m.join(n)))
            .filter(|p| !p.exists())
            .collect();
        CgroupParents(fresh)
    }
}

impl Drop for CgroupParents {
    fn drop(&mut self) {
        for p in &self.0 {
            if let Ok(children) = fs::read_dir(p) {
                for c in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = fs::remove_dir(c.path());
                }
            }
            let _ = fs::remove_dir(p);
        }
    }
}

/// Unmounts whatever is still mounted below `dir` (an engine's data root), deepest first.
fn unmount_below(dir: &Path) {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mps: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|mp| Path::new(mp).starts_with(dir))
        .collect();
    mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mp in mps {
        let _ = Command::new("umount").arg("-l").arg(&mp).status();
    }
}

/// A daemon process, stopped with SIGTERM (then SIGKILL) and its directory removed on drop.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill with integer arguments, to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        unmount_below(self.dir.path());
    }
}

#[test]
fn containerd_runs_and_execs_through_the_runc_shim() {
    let _cgroups = CgroupParents::new(&["default"]);
    let _run_dirs = PeerDirs::new(CONTAINERD_RUN_DIRS);
    let dir = tempfile::Builder::new()
        .prefix("berth-containerd-")
        .tempdir_in("/run")
        .unwrap();
    let sock = dir.path().join("containerd.sock");
    let config = dir.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{1}\"\n[ttrpc]\n  address = \"{1}.ttrpc\"\n",
            dir.path().display(),
            sock.display()
        ),
    )
    .unwrap();
    let child = Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .expect("containerd (Debian package containerd) is installed by the test command");
    let daemon = Daemon { child, dir };
    wait_for(&sock, "containerd");
    let ctr = |args: &[&str]| {
        Command::new("ctr")
            .arg("-a")
            .arg(&sock)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // ctr's FIFOs and the shim's runtime root default to /run/containerd: ours instead.
    let fifo_dir = daemon.dir.path().join("fifo");
    let fifo_dir = fifo_dir.to_str().unwrap();
    let runc_root = daemon.dir.path().join("runc-root");
    let runc_root = runc_root.to_str().unwrap();

    let image_tar = daemon.dir.path().join("busybox-oci.tar");
    ok(
        Command::new("tar")
            .arg("-C")
            .arg(&fixtures::busybox().oci_layout)
            .arg("-cf")
            .arg(&image_tar)
            .arg(".")
            .output()
            .unwrap(),
        "tar the OCI layout",
    );
    ok(
        ctr(&[
            "images",
            "import",
            "--base-name",
            "docker.io/library/busybox",
            image_tar.to_str().unwrap(),
        ]),
        "ctr images import",
    );

    let runtime = runtime_binary();
    let rt = runtime.to_str().unwrap();
    let id = unique("ctr");
    let out = ok(
        ctr(&[
            "run",
            "--rm",
            "--runc-binary",
            rt,
            "--runc-root",
            runc_root,
            "--fifo-dir",
            fifo_dir,
            "docker.io/library/busybox:latest",
            &id,
            "sh",
            "-c",
            "echo hello from containerd; cat /proc/1/cgroup | grep memory",
        ]),
        "ctr run --rm",
    );
    assert!(out.contains("hello from containerd"), "{out}");
    assert!(
        out.contains(&format!("/default/{id}")),
        "containerd's cgroup path: {out}"
    );

    let id = unique("ctrexec");
    ok(
        ctr(&[
            "run",
            "-d",
            "--runc-binary",
            rt,
            "--runc-root",
            runc_root,
            "--fifo-dir",
            fifo_dir,
            "docker.io/library/busybox:latest",
            &id,
            "sleep",
            "100",
        ]),
        "ctr run -d",
    );
    let out = ok(
        ctr(&[
            "task",
            "exec",
            "--fifo-dir",
            fifo_dir,
            "--exec-id",
            "e1",
            &id,
            "sh",
            "-c",
            "echo exec in $(hostname) pid $$",
        ]),
        "ctr task exec",
    );
    assert!(out.starts_with("exec in"), "{out}");
    ok(ctr(&["task", "pause", &id]), "ctr task pause");
    assert!(ok(ctr(&["task", "ls"]), "ctr task ls").contains("PAUSED"));
    ok(ctr(&["task", "resume", &id]), "ctr task resume");
    let ps = ok(ctr(&["task", "ps", &id]), "ctr task ps");
    assert!(ps.lines().count() >= 2, "{ps}");
    ok(
        ctr(&["task", "kill", "-s", "SIGKILL", &id]),
        "ctr task kill",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok(ctr(&["task", "ls"]), "ctr task ls").contains("STOPPED") {
        assert!(Instant::now() < deadline, "task did not stop");
        sleep(Duration::from_millis(50));
    }
    ok(ctr(&["task", "rm", &id]), "ctr task rm");
    ok(ctr(&["containers", "rm", &id]), "ctr containers rm");
    drop(daemon);
}

#[test]
fn podman_runs_and_execs_with_berth_as_its_runtime() {
    let _cgroups = CgroupParents::new(&["libpod_parent"]);
    let dir = tempfile::Builder::new()
        .prefix("berth-podman-")
        .tempdir_in("/run")
        .unwrap();
    let runtime = runtime_binary();
    // podman passes no --root to a runtime it does not know: this one, so the test's
    // containers stay out of the default root (/run/berth-runtime), which it would leave.
    let runtime_root = format!("root={}", dir.path().join("runtime").display());
    let podman = |args: &[&str]| {
        Command::new("podman")
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--runroot")
            .arg(dir.path().join("run"))
            .args([
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                "--runtime-flag",
                &runtime_root,
                "--runtime",
            ])
            .arg(&runtime)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("podman (Debian package podman) is installed by the test command")
    };
    let layout = format!("oci:{}:latest", fixtures::busybox().oci_layout.display());
    let image = ok(podman(&["pull", "-q", &layout]), "podman pull")
        .trim()
        .to_string();
    ok(
        podman(&["tag", &image, "localhost/busybox:latest"]),
        "podman tag",
    );
    // podman raises RLIMIT_NOFILE and RLIMIT_NPROC beyond what this host lets root raise to
    // (no CAP_SYS_RESOURCE here): ask for limits within the host's hard limits.
    let limits = [
        "--ulimit",
        "nofile=1024:4096",
        "--ulimit",
        "nproc=1024:1024",
        "--network",
        "none",
    ];
    let mut run = vec!["run", "--rm"];
    run.extend_from_slice(&limits);
    run.extend_from_slice(&[
        "localhost/busybox",
        "sh",
        "-c",
        "echo hello from podman; ulimit -n",
    ]);
    let out = ok(podman(&run), "podman run --rm");
    assert_eq!(out, "hello from podman\n1024\n");

    let name = unique("podexec");
    let mut detached = vec!["run", "-d", "--name", name.as_str()];
    detached.extend_from_slice(&limits);
    detached.extend_from_slice(&["localhost/busybox", "sleep", "100"]);
    ok(podman(&detached), "podman run -d");
    let out = ok(
        podman(&["exec", &name, "sh", "-c", "echo exec in $(hostname)"]),
        "podman exec",
    );
    assert!(out.starts_with("exec in"), "{out}");
    ok(podman(&["rm", "-f", "-t", "0", &name]), "podman rm -f");
    let _ = podman(&["system", "reset", "--force"]);
    unmount_below(dir.path());
}

#[test]
fn dockerd_runs_execs_and_stops_with_add_runtime() {
    let _cgroups = CgroupParents::new(&["docker"]);
    let _run_dirs = PeerDirs::new(&[DOCKERD_RUN_DIRS, CONTAINERD_RUN_DIRS].concat());
    let dir = tempfile::Builder::new()
        .prefix("berth-dockerd-")
        .tempdir_in("/run")
        .unwrap();
    let sock = dir.path().join("docker.sock");
    let runtime = runtime_binary();
    // No bridge, no iptables, no forwarding: the test changes nothing of the host's network.
    let child = Command::new("dockerd")
        .arg("--data-root")
        .arg(dir.path().join("root"))
        .arg("--exec-root")
        .arg(dir.path().join("exec"))
        .arg("--pidfile")
        .arg(dir.path().join("docker.pid"))
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .args([
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--ip-forward=false",
            "--ip-masq=false",
        ])
        .arg(format!("--add-runtime=berth={}", runtime.display()))
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .expect("dockerd (Debian package docker.io) is installed by the test command");
    let daemon = Daemon { child, dir };
    wait_for(&sock, "dockerd");
    let host = format!("unix://{}", sock.display());
    let docker = |args: &[&str]| {
        Command::new("docker")
            .env("DOCKER_HOST", &host)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !docker(&["version"]).status.success() {
        assert!(Instant::now() < deadline, "dockerd does not answer");
        sleep(Duration::from_millis(100));
    }

    let archive = daemon.dir.path().join("busybox.tar");
    ok(
        Command::new("skopeo")
            .arg("copy")
            .arg("-q")
            .arg(format!(
                "oci:{}:latest",
                fixtures::busybox().oci_layout.display()
            ))
            .arg(format!(
                "docker-archive:{}:busybox:latest",
                archive.display()
            ))
            .output()
            .expect("skopeo (Debian package skopeo) is installed by the test command"),
        "skopeo copy",
    );
    ok(
        docker(&["load", "-i", archive.to_str().unwrap()]),
        "docker load",
    );

    let out = ok(
        docker(&[
            "run",
            "--runtime",
            "berth",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "echo hello from dockerd; grep Seccomp: /proc/self/status",
        ]),
        "docker run --runtime berth --rm",
    );
    assert!(out.contains("hello from dockerd"), "{out}");
    assert!(
        out.contains("Seccomp:\t2"),
        "Docker's seccomp profile is loaded: {out}"
    );

    let name = unique("dockerexec");
    ok(
        docker(&[
            "run",
            "-d",
            "--runtime",
            "berth",
            "--name",
            &name,
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "trap 'exit 0' TERM; sleep 100 & wait",
        ]),
        "docker run -d",
    );
    let out = ok(
        docker(&["exec", &name, "sh", "-c", "echo exec works"]),
        "docker exec",
    );
    assert_eq!(out, "exec works\n");
    let started = Instant::now();
    ok(docker(&["stop", "-t", "10", &name]), "docker stop");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM reached the container: {:?}",
        started.elapsed()
    );
    let state = ok(
        docker(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            &name,
        ]),
        "docker inspect",
    );
    assert_eq!(state.trim(), "exited 0");
    ok(docker(&["rm", &name]), "docker rm");
    drop(daemon);
}
