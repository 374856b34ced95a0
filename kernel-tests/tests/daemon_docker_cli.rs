//! berthd driven by the real Docker CLI (`docker`, client only, on the PATH): what a Docker
//! user types must work against berthd as it does against dockerd.

use std::time::Duration;

use berth_kernel_tests::test_daemon::TestDaemon;

fn daemon() -> TestDaemon {
    let d = TestDaemon::start();
    d.load_busybox();
    d
}

#[test]
fn run_prints_both_streams_and_exits_with_the_containers_code() {
    let d = daemon();
    let r = d.docker(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.stdout, "out\n");
    assert_eq!(r.stderr, "err\n");
    assert_eq!(d.docker_ok(&["ps", "-aq"]), "", "--rm left the container");
    // The environment, hostname and user Docker gives a container.
    let env = d.docker_ok(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "--hostname",
        "h1",
        "busybox",
        "sh",
        "-c",
        "echo $A $(hostname) $(id -u); cat /etc/hostname",
    ]);
    assert_eq!(env, "1 h1 0\nh1\n");
}

#[test]
fn a_missing_command_or_image_fails_as_with_dockerd() {
    let d = daemon();
    let r = d.docker(&["run", "--rm", "busybox", "no-such-command"]);
    assert_eq!(r.code, 127, "{r:?}");
    assert!(
        r.stderr.contains("executable file not found"),
        "{}",
        r.stderr
    );
    let r = d.docker(&["run", "--rm", "busybox", "/etc/passwd"]);
    assert_eq!(r.code, 126, "{r:?}");
    let r = d.docker(&["run", "--rm", "nosuchimage"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("Unable to find image 'nosuchimage:latest' locally"),
        "{}",
        r.stderr
    );
    // The pull that follows goes nowhere: the test daemon blocks Docker Hub.
    assert!(r.stderr.contains("is blocked"), "{}", r.stderr);
    assert_eq!(d.docker_ok(&["ps", "-aq"]), "");
}

#[test]
fn detached_container_logs_follow_stop_and_remove() {
    let d = daemon();
    let id = d.docker_ok(&[
        "run", "-d", "--name", "ticker", "busybox", "sh", "-c",
        "trap 'echo bye; exit 0' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64);
    d.eventually("three ticks in the log", || {
        d.docker_ok(&["logs", "ticker"]).lines().count() >= 3
    });
    let ps = d.docker_ok(&["ps"]);
    let mut lines = ps.lines();
    let header = lines.next().unwrap();
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row = lines.next().expect("a row");
    assert!(
        row.starts_with(&id[..12]) && row.contains("Up ") && row.ends_with("ticker"),
        "{row}"
    );
    let tail = d.docker_ok(&["logs", "--tail", "1", "-t", "ticker"]);
    assert_eq!(tail.lines().count(), 1);
    assert!(tail.contains("Z tick "), "{tail}");
    let inspect = d.docker_ok(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.Running}} {{.Name}} {{.Config.Image}}",
        "ticker",
    ]);
    assert_eq!(inspect.trim(), "running true /ticker busybox");

    // `logs -f` follows until the container stops.
    let follower = {
        let host = d.host();
        std::thread::spawn(move || {
            std::process::Command::new("docker")
                .args(["logs", "-f", "ticker"])
                .env("DOCKER_HOST", host)
                .output()
                .expect("docker logs -f")
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    d.docker_ok(&["stop", "-t", "5", "ticker"]);
    let followed = follower.join().unwrap();
    let text = String::from_utf8_lossy(&followed.stdout);
    assert!(
        text.ends_with("bye\n"),
        "logs -f ended with {:?}",
        text.lines().last()
    );
    assert_eq!(
        d.docker_ok(&[
            "inspect",
            "-f",
            "{{.State.ExitCode}} {{.State.Status}}",
            "ticker"
        ])
        .trim(),
        "0 exited"
    );
    let r = d.docker(&["rm", "ticker"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        d.docker(&["inspect", "ticker"]).stderr.contains("No such"),
        "removed"
    );
}

#[test]
fn removing_a_running_container_needs_force_and_names_are_unique() {
    let d = daemon();
    d.docker_ok(&["run", "-d", "--name", "busy", "busybox", "sleep", "1000"]);
    let r = d.docker(&["rm", "busy"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("cannot remove a running container"),
        "{}",
        r.stderr
    );
    let r = d.docker(&["run", "-d", "--name", "busy", "busybox", "true"]);
    assert!(r.stderr.contains("is already in use"), "{}", r.stderr);
    let r = d.docker(&["kill", "busy"]);
    assert_eq!(r.code, 0, "{r:?}");
    d.eventually("killed", || {
        d.docker_ok(&["inspect", "-f", "{{.State.Status}}", "busy"])
            .trim()
            == "exited"
    });
    assert_eq!(
        d.docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", "busy"])
            .trim(),
        "137"
    );
    d.docker_ok(&["start", "busy"]);
    d.docker_ok(&["rm", "-f", "busy"]);
    assert_eq!(d.docker_ok(&["ps", "-aq"]), "");
}

#[test]
fn exec_runs_in_the_container_with_stdin_and_exit_codes() {
    let d = daemon();
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "host1",
        "--hostname",
        "inside",
        "busybox",
        "sleep",
        "1000",
    ]);
    let r = d.docker(&["exec", "host1", "sh", "-c", "hostname; exit 4"]);
    assert_eq!((r.code, r.stdout.as_str()), (4, "inside\n"), "{r:?}");
    let r = d.docker_stdin(&["exec", "-i", "host1", "cat"], b"through stdin\n");
    assert_eq!(r.stdout, "through stdin\n", "{r:?}");
    let r = d.docker(&["exec", "host1", "no-such"]);
    assert_eq!(r.code, 127, "{r:?}");
    d.docker_ok(&[
        "exec",
        "-d",
        "host1",
        "sh",
        "-c",
        "echo detached > /tmp/mark",
    ]);
    d.eventually("the detached exec ran", || {
        d.docker(&["exec", "host1", "cat", "/tmp/mark"]).stdout == "detached\n"
    });
    let top = d.docker_ok(&["top", "host1"]);
    assert!(top.contains("sleep 1000"), "{top}");
}

#[test]
fn interactive_tty_under_a_pty() {
    let d = daemon();
    // `script` gives the CLI a terminal; what is typed reaches the container's shell.
    let out = std::process::Command::new("script")
        .args([
            "-qec",
            "docker run -it --rm busybox sh -c 'tty; read line; echo got $line; exit 7'",
            "/dev/null",
        ])
        .env("DOCKER_HOST", d.host())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            std::thread::sleep(Duration::from_millis(1500));
            c.stdin.take().unwrap().write_all(b"hello\n")?;
            c.wait_with_output()
        })
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("got hello"), "{text}");
    assert_eq!(out.status.code(), Some(7), "{text}");
}

#[test]
fn named_and_anonymous_volumes() {
    let d = daemon();
    d.docker_ok(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(
        d.docker_ok(&[
            "run",
            "--rm",
            "-v",
            "data:/data:ro",
            "busybox",
            "cat",
            "/data/f"
        ]),
        "kept\n"
    );
    let r = d.docker(&[
        "run",
        "--rm",
        "-v",
        "data:/data:ro",
        "busybox",
        "sh",
        "-c",
        "echo x > /data/g",
    ]);
    assert_ne!(r.code, 0, "a read-only volume was written");
    assert!(
        d.docker_ok(&["volume", "ls", "-q"])
            .lines()
            .any(|l| l == "data")
    );
    let mountpoint = d.docker_ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "data"]);
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(mountpoint.trim()).join("f")).unwrap(),
        "kept\n"
    );
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "-v",
        "data:/data",
        "busybox",
        "sleep",
        "100",
    ]);
    let r = d.docker(&["volume", "rm", "data"]);
    assert!(r.stderr.contains("volume is in use"), "{r:?}");
    d.docker_ok(&["rm", "-f", "user"]);
    d.docker_ok(&["volume", "rm", "data"]);
    // tmpfs and bind mounts.
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("hello"), "from the host\n").unwrap();
    let bind = format!("{}:/h:ro", host_dir.path().display());
    assert_eq!(
        d.docker_ok(&["run", "--rm", "-v", &bind, "busybox", "cat", "/h/hello"]),
        "from the host\n"
    );
    let mounts = d.docker_ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/scratch:size=1m",
        "busybox",
        "grep",
        " /scratch ",
        "/proc/mounts",
    ]);
    assert!(mounts.starts_with("tmpfs /scratch tmpfs"), "{mounts}");
}

#[test]
fn security_defaults_match_dockers() {
    let d = daemon();
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(d.socket()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let status = d.docker_ok(&["run", "--rm", "busybox", "cat", "/proc/self/status"]);
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    // Docker's 14 default capabilities.
    assert_eq!(field("CapBnd:"), "00000000a80425fb");
    assert_eq!(field("Seccomp:"), "2");
    assert_eq!(field("NoNewPrivs:"), "0");
    let nnp = d.docker_ok(&[
        "run",
        "--rm",
        "--security-opt",
        "no-new-privileges",
        "--cap-drop",
        "ALL",
        "busybox",
        "cat",
        "/proc/self/status",
    ]);
    assert!(
        nnp.contains("NoNewPrivs:\t1") && nnp.contains("CapBnd:\t0000000000000000"),
        "{nnp}"
    );
    // Masked and read-only paths, and Docker's seccomp profile at work.
    assert_eq!(
        d.docker_ok(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "wc -c < /proc/timer_list"
        ])
        .trim(),
        "0"
    );
    assert_eq!(
        d.docker_ok(&["run", "--rm", "busybox", "ls", "/proc/acpi"]),
        ""
    );
    let r = d.docker(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo 1 > /proc/sys/kernel/domainname",
    ]);
    assert_ne!(r.code, 0);
    let r = d.docker(&[
        "run", "--rm", "busybox", "mount", "-t", "tmpfs", "t", "/mnt",
    ]);
    assert_ne!(r.code, 0, "mount worked without CAP_SYS_ADMIN: {r:?}");
    let r = d.docker(&[
        "run",
        "--rm",
        "--privileged",
        "busybox",
        "mount",
        "-t",
        "tmpfs",
        "t",
        "/mnt",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    // Resource limits land in the container's cgroup.
    let limit = d.docker_ok(&["run", "--rm", "-m", "64m", "--pids-limit", "50", "busybox", "sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max"]);
    assert_eq!(limit, format!("{}\n50\n", 64 << 20));
}

#[test]
fn a_kill_9_of_berthd_keeps_containers_their_logs_and_exit_codes() {
    let mut d = daemon();
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "survivor",
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done",
    ]);
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "quitter",
        "busybox",
        "sh",
        "-c",
        "sleep 1; echo done; exit 9",
    ]);
    d.eventually("output", || {
        d.docker_ok(&["logs", "survivor"]).lines().count() > 3
    });
    d.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    d.restart();
    assert_eq!(
        d.docker_ok(&["inspect", "-f", "{{.State.Status}}", "survivor"])
            .trim(),
        "running"
    );
    d.eventually("quitter's exit recorded", || {
        d.docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            "quitter",
        ])
        .trim()
            == "exited 9"
    });
    assert_eq!(d.docker_ok(&["logs", "quitter"]), "done\n");
    d.docker_ok(&["stop", "-t", "1", "survivor"]);
    let logs = d.docker_ok(&["logs", "survivor"]);
    let numbers: Vec<u64> = logs
        .lines()
        .map(|l| l.trim_start_matches("line ").parse().unwrap())
        .collect();
    assert!(numbers.len() > 30, "{} lines", numbers.len());
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap in the log across the daemon restart"
    );
}

#[test]
fn restart_policies_and_auto_remove() {
    let d = daemon();
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    d.eventually("two restarts then exited", || {
        d.docker_ok(&[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.State.Status}}",
            "flaky",
        ])
        .trim()
            == "2 exited"
    });
    assert_eq!(d.docker_ok(&["logs", "flaky"]), "run\nrun\nrun\n");
    d.docker_ok(&["run", "-d", "--name", "gone", "--rm", "busybox", "true"]);
    d.eventually("--rm removed the container", || {
        d.docker(&["inspect", "gone"]).code != 0
    });
}

#[test]
fn images_load_import_tag_and_remove() {
    let d = daemon();
    let images = d.docker_ok(&["images"]);
    assert!(
        images
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("busybox ") && l.contains("latest")),
        "{images}"
    );
    d.docker_ok(&["tag", "busybox", "127.0.0.1:5000/team/box:v1"]);
    assert!(
        d.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .contains("127.0.0.1:5000/team/box:v1")
    );
    let rootfs = &berth_kernel_tests::fixtures::busybox().rootfs;
    let tar = std::process::Command::new("tar")
        .args(["-C", &rootfs.display().to_string(), "-c", "."])
        .output()
        .unwrap()
        .stdout;
    let r = d.docker_stdin(
        &[
            "import",
            "-c",
            "CMD [\"echo\", \"imported\"]",
            "-",
            "mine:1",
        ],
        &tar,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(d.docker_ok(&["run", "--rm", "mine:1"]), "imported\n");
    d.docker_ok(&["run", "-d", "--name", "user", "mine:1", "sleep", "100"]);
    let r = d.docker(&["rmi", "mine:1"]);
    assert!(
        r.stderr.contains("is being used by") || r.stdout.contains("Untagged"),
        "{r:?}"
    );
    d.docker_ok(&["rm", "-f", "user"]);
    d.docker_ok(&["rmi", "127.0.0.1:5000/team/box:v1"]);
    assert!(
        d.docker(&["run", "--rm", "busybox", "true"]).code == 0,
        "untagging one name kept the image"
    );
}

#[test]
fn system_info_version_events_and_stats() {
    let d = daemon();
    let info = d.docker_ok(&[
        "info",
        "--format",
        "{{.Driver}} {{.CgroupVersion}} {{.Images}} {{.OSType}}",
    ]);
    let fields: Vec<&str> = info.split_whitespace().collect();
    assert!(["overlay2", "vfs", "btrfs"].contains(&fields[0]), "{info}");
    assert_eq!(fields[2..], ["1", "linux"]);
    let version = d.docker_ok(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(version.trim(), "1.47");
    d.docker_ok(&["run", "-d", "--name", "st", "busybox", "sleep", "100"]);
    let stats = d.docker_ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}}",
        "st",
    ]);
    assert_eq!(stats.trim(), "st 1");
    // Docker's name rule: at least two characters.
    assert!(
        d.docker(&["create", "--name", "s", "busybox"])
            .stderr
            .contains("Invalid container name")
    );
    let out = d.docker_ok(&[
        "events",
        "--since",
        "1970-01-01T00:00:00Z",
        "--until",
        &format!(
            "{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 1
        ),
        "--filter",
        "container=st",
        "--format",
        "{{.Action}}",
    ]);
    assert_eq!(
        out.lines().take(2).collect::<Vec<_>>(),
        ["create", "start"],
        "{out}"
    );
}

#[test]
fn cp_export_and_pause() {
    let d = daemon();
    d.docker_ok(&[
        "run", "-d", "--name", "files", "busybox", "sh", "-c",
        "mkdir -p /data/sub && echo hi > /data/sub/f && ln -s /etc/passwd /data/link && ln -s / /data/escape && sleep 1000",
    ]);
    d.eventually("files made", || {
        d.docker(&["exec", "files", "test", "-L", "/data/escape"])
            .code
            == 0
    });
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");
    d.docker_ok(&["cp", "files:/data", &dest.display().to_string()]);
    assert_eq!(std::fs::read_to_string(dest.join("sub/f")).unwrap(), "hi\n");
    assert_eq!(
        std::fs::read_link(dest.join("link")).unwrap(),
        std::path::Path::new("/etc/passwd")
    );
    // Into the container, through a symlink to `/` in it: lands inside the container.
    let src = out.path().join("payload");
    std::fs::write(&src, "inside\n").unwrap();
    d.docker_ok(&["cp", &src.display().to_string(), "files:/data/escape/tmp/"]);
    assert_eq!(
        d.docker_ok(&["exec", "files", "cat", "/tmp/payload"]),
        "inside\n"
    );
    assert!(
        !std::path::Path::new("/tmp/payload").exists()
            || std::fs::read_to_string("/tmp/payload").unwrap() != "inside\n"
    );
    let r = d.docker(&["cp", "files:/no/such", out.path().to_str().unwrap()]);
    assert!(r.stderr.contains("Could not find the file"), "{r:?}");
    // pause freezes, unpause thaws.
    d.docker_ok(&["pause", "files"]);
    assert_eq!(
        d.docker_ok(&["inspect", "-f", "{{.State.Status}}", "files"])
            .trim(),
        "paused"
    );
    d.docker_ok(&["unpause", "files"]);
    assert_eq!(
        d.docker_ok(&["exec", "files", "echo", "thawed"]),
        "thawed\n"
    );
    // export of a running and of a stopped container: the whole filesystem, as one tar.
    for _ in 0..2 {
        let tar = out.path().join("export.tar");
        d.docker_ok(&["export", "-o", &tar.display().to_string(), "files"]);
        let list = std::process::Command::new("tar")
            .arg("-tf")
            .arg(&tar)
            .output()
            .unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(list.lines().any(|l| l == "bin/busybox"), "{list}");
        assert!(list.lines().any(|l| l == "tmp/payload"), "{list}");
        d.docker_ok(&["stop", "-t", "0", "files"]);
    }
    d.docker_ok(&[
        "cp",
        "files:/tmp/payload",
        &out.path().join("back").display().to_string(),
    ]);
    assert_eq!(
        std::fs::read_to_string(out.path().join("back")).unwrap(),
        "inside\n"
    );
}

#[test]
fn bridge_networks_connect_containers_by_address() {
    let d = daemon();
    // The default network: each container gets an address on the daemon's bridge.
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "busybox",
        "sh",
        "-c",
        "while true; do echo pong | nc -l -p 7000; done",
    ]);
    let ip = d.docker_ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.bridge.IPAddress}}",
        "srv",
    ]);
    let ip = ip.trim().to_string();
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{ip:?}");
    d.eventually("the server listens", || {
        d.docker(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            &format!("echo ping | nc -w 2 {ip} 7000"),
        ])
        .stdout
            == "pong\n"
    });
    let hosts = d.docker_ok(&["exec", "srv", "cat", "/etc/hosts"]);
    assert!(hosts.contains(&ip), "{hosts}");
    // A user-defined network with a subnet of our choosing, and connect/disconnect in place.
    d.docker_ok(&["network", "create", "--subnet", "10.201.7.0/24", "backend"]);
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "backend",
        "--ip",
        "10.201.7.50",
        "busybox",
        "sh",
        "-c",
        "while true; do echo db | nc -l -p 5432; done",
    ]);
    assert_eq!(
        d.docker_ok(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.backend.IPAddress}}",
            "db"
        ])
        .trim(),
        "10.201.7.50"
    );
    let ls = d.docker_ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    for want in ["bridge bridge", "host host", "none null", "backend bridge"] {
        assert!(ls.lines().any(|l| l == want), "{want}: {ls}");
    }
    d.docker_ok(&["network", "connect", "backend", "srv"]);
    d.eventually("srv reaches db over the new network", || {
        d.docker(&[
            "exec",
            "srv",
            "sh",
            "-c",
            "echo q | nc -w 2 10.201.7.50 5432",
        ])
        .stdout
            == "db\n"
    });
    let members = d.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .Containers}}{{.Name}} {{end}}",
        "backend",
    ]);
    assert!(
        members.contains("db") && members.contains("srv"),
        "{members}"
    );
    d.docker_ok(&["network", "disconnect", "backend", "srv"]);
    let r = d.docker(&[
        "exec",
        "srv",
        "sh",
        "-c",
        "echo q | nc -w 1 10.201.7.50 5432",
    ]);
    assert_ne!(r.stdout, "db\n", "still connected after disconnect");
    let r = d.docker(&["network", "rm", "backend"]);
    assert!(r.stderr.contains("active endpoints"), "{r:?}");
    assert!(
        d.docker(&["network", "rm", "bridge"])
            .stderr
            .contains("pre-defined")
    );
    // A published port on the default network (daemon_ports.rs tests them in depth).
    let r = d.docker(&["run", "--rm", "-p", "127.0.0.1::80", "busybox", "true"]);
    assert_eq!(r.code, 0, "{r:?}");
    d.docker_ok(&["rm", "-f", "db", "srv"]);
    d.docker_ok(&["network", "rm", "backend"]);
    // Nothing of the containers left on the host: no container's veth on the bridge (the
    // kernel removes a namespace's veths a little after the namespace goes). What stays is
    // the warm pool's, whose container side is not up yet (no carrier).
    d.eventually("no container's port left on the default bridge", || {
        berth_kernel_tests::net_probe::bridge_ports(&d.bridge)
            .iter()
            .all(|(_, carrier)| !carrier)
    });
}

#[test]
fn save_and_load_round_trip_between_daemons_and_tools() {
    let d = daemon();
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("saved.tar");
    d.docker_ok(&["save", "-o", &tar.display().to_string(), "busybox"]);
    // Both layouts: docker load reads manifest.json, OCI tools read index.json.
    let list = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for entry in ["manifest.json", "index.json", "oci-layout"] {
        assert!(list.lines().any(|l| l == entry), "{entry}: {list}");
    }
    let layout = out.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    assert!(
        std::process::Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&layout)
            .status()
            .unwrap()
            .success()
    );
    let inspect = std::process::Command::new("skopeo")
        .args(["inspect", &format!("oci:{}", layout.display())])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "skopeo reads the saved OCI layout: {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    // Another daemon loads the docker archive; and an OCI layout archive (no manifest.json).
    let d2 = TestDaemon::start();
    assert!(
        d2.docker_ok(&["load", "-i", &tar.display().to_string()])
            .contains("busybox:latest")
    );
    assert_eq!(
        d2.docker_ok(&["run", "--rm", "busybox", "echo", "loaded"]),
        "loaded\n"
    );
    let oci_tar = out.path().join("oci.tar");
    let status = std::process::Command::new("tar")
        .args([
            "-cf",
            &oci_tar.display().to_string(),
            "-C",
            &layout.display().to_string(),
            "index.json",
            "oci-layout",
            "blobs",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let d3 = TestDaemon::start();
    let loaded = d3.docker_ok(&["load", "-i", &oci_tar.display().to_string()]);
    assert!(loaded.contains("busybox:latest"), "{loaded}");
    assert_eq!(
        d3.docker_ok(&["run", "--rm", "busybox", "echo", "from OCI"]),
        "from OCI\n"
    );
}

#[test]
fn the_network_namespace_pool_is_used_and_leaves_nothing() {
    let mut d = daemon();
    let pool = d.exec_root().join("netns");
    let entries = |p: &std::path::Path| std::fs::read_dir(p).map(|r| r.count()).unwrap_or(0);
    d.eventually("the pool filled", || entries(&pool) == 4);
    let id = d.docker_ok(&["run", "-d", "busybox", "sleep", "1000"]);
    let link = d
        .exec_root()
        .join("containers")
        .join(id.trim())
        .join("netns");
    let target = std::fs::read_link(&link).expect("the container's namespace comes from the pool");
    assert!(target.starts_with(&pool), "{}", target.display());
    // Its loopback was up before it started.
    assert!(
        d.docker_ok(&["exec", id.trim(), "cat", "/sys/class/net/lo/operstate"])
            .starts_with("unknown")
    );
    // The taken one, four plain again and, now that the default bridge exists (its first
    // container made it), four prepared on it (daemon_netns_pool.rs tests those).
    d.eventually("the pool refilled", || entries(&pool) == 9);
    // A restart keeps the namespace a running container holds, drops and remakes the rest.
    d.kill9();
    d.restart();
    assert!(
        target.exists(),
        "the running container's namespace was dropped"
    );
    d.eventually("the pool refilled after the restart", || {
        entries(&pool) == 9
    });
    d.docker_ok(&["rm", "-f", id.trim()]);
    assert!(!target.exists(), "the container's namespace outlived it");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let held = mounts
        .lines()
        .filter(|l| l.contains(&pool.display().to_string()))
        .count();
    assert_eq!(held, 8, "only the ready namespaces stay bound");
}

#[test]
fn a_default_bridge_that_is_not_ours_is_left_alone_with_a_clear_error() {
    let d = daemon();
    // Another link holds the default bridge's name before its first container.
    let status = std::process::Command::new("ip")
        .args(["link", "add", &d.bridge, "type", "bridge"])
        .status()
        .unwrap();
    assert!(status.success());
    let r = d.docker(&["run", "--rm", "busybox", "true"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("exists already") && r.stderr.contains("--bridge"),
        "{r:?}"
    );
    let link = std::process::Command::new("ip")
        .args(["link", "show", &d.bridge])
        .output()
        .unwrap();
    assert!(
        link.status.success(),
        "berthd removed a link it did not make"
    );
    // (The daemon's drop removes the test's link.)
}

#[test]
fn containers_go_below_the_daemons_cgroup_parent_or_their_own() {
    // Declared before the daemon, so dropped after it: its containers are gone by then, and
    // the parent is removed even when an assertion fails.
    let own = berth_kernel_tests::harness::unique("berth-own");
    struct Cleanup<'a>(&'a str);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            berth_kernel_tests::harness::remove_cgroup_parent(self.0);
        }
    }
    let _cleanup = Cleanup(&own);
    let d = daemon();
    // The host's view of a running container's cgroups (every hierarchy).
    let cgroups_of = |name: &str| {
        let pid = d.docker_ok(&["inspect", "-f", "{{.State.Pid}}", name]);
        std::fs::read_to_string(format!("/proc/{}/cgroup", pid.trim())).unwrap()
    };
    let id = d.docker_ok(&["run", "-d", "--name", "plain", "busybox", "sleep", "100"]);
    let plain = cgroups_of("plain");
    let expected = format!("{}/{}", d.cgroup_parent(), id.trim());
    assert!(
        plain.lines().all(|l| l.ends_with(&expected)),
        "not every hierarchy below {expected}:\n{plain}"
    );

    // `docker run --cgroup-parent` (HostConfig.CgroupParent), relative: from the root.
    let id = d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "tenant",
        "--cgroup-parent",
        &own,
        "busybox",
        "sleep",
        "100",
    ]);
    let tenant = cgroups_of("tenant");
    let expected = format!("/{own}/{}", id.trim());
    assert!(
        tenant.lines().all(|l| l.ends_with(&expected)),
        "not every hierarchy below {expected}:\n{tenant}"
    );
    d.docker_ok(&["rm", "-f", "plain", "tenant"]);

    // A parent that climbs out is refused at create with the reason, and nothing is left.
    let r = d.docker(&[
        "run",
        "--rm",
        "--cgroup-parent",
        "../escape",
        "busybox",
        "true",
    ]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("not allowed"), "{r:?}");
    assert_eq!(d.docker_ok(&["ps", "-aq"]), "");
}

#[test]
fn the_erofs_driver_runs_exports_and_removes_images() {
    use berth_kernel_tests::harness::mounts_under;
    let d = TestDaemon::start_with(Some("erofs"));
    d.load_busybox();
    assert_eq!(d.docker_ok(&["info", "-f", "{{.Driver}}"]).trim(), "erofs");
    // busybox's layer is an EROFS image, mounted below the daemon's root.
    assert_eq!(mounts_under(&d.root(), "erofs").len(), 1);
    d.docker_ok(&[
        "run",
        "--name",
        "maker",
        "busybox",
        "sh",
        "-c",
        "echo made > /made; rm /bin/true",
    ]);
    // The container's upper over the image: a new file and a deletion, in its export.
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("maker.tar");
    d.docker_ok(&["export", "-o", file.to_str().unwrap(), "maker"]);
    let listed = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&file)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listed.stdout);
    let has = |n: &str| names.lines().any(|l| l.trim_start_matches("./") == n);
    assert!(has("made") && has("bin/sh") && !has("bin/true"), "{names}");
    // The image itself is unchanged.
    assert_eq!(
        d.docker_ok(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "test -e /bin/true && echo kept"
        ]),
        "kept\n"
    );
    d.docker_ok(&["rm", "maker"]);
    d.docker_ok(&["rmi", "busybox"]);
    assert_eq!(
        mounts_under(&d.root(), "erofs").len(),
        0,
        "removed images leave no mounts"
    );
}
