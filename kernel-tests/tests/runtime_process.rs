//! `process`, checked from inside: args, env, cwd, user and groups, umask, the five capability
//! sets, no_new_privs, rlimits, oom_score_adj, descriptors passed on and none leaked.

use std::fs;
use std::os::fd::AsRawFd;
use std::process::Stdio;

use berth_kernel_tests::harness::{Bundle, Runtime, unique};
use serde_json::json;

fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("{name} missing in:\n{status}"))
        .trim()
}

#[test]
fn args_env_and_cwd() {
    let rt = Runtime::new();
    let bundle = Bundle::busybox(&[
        "sh",
        "-c",
        "echo \"$1|$2\"; echo $GREETING; pwd; env | grep -c ^HOST_ONLY_",
        "zero",
        "one two",
        "three",
    ])
    .edit(|s| {
        s["process"]["env"] = json!(["PATH=/bin", "GREETING=hello world"]);
        s["process"]["cwd"] = "/tmp".into();
    });
    // A variable of the runtime's own environment must not reach the container.
    let id = unique("args");
    let dir = rt.prepare(&id, &bundle);
    let out = rt
        .command(&["run".as_ref(), "-b".as_ref(), dir.as_os_str(), id.as_ref()])
        .env("HOST_ONLY_SECRET", "x")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "one two|three\nhello world\n/tmp\n0\n"
    );
}

#[test]
fn user_groups_and_umask() {
    let rt = Runtime::new();
    let bundle = Bundle::sh("id -u; id -g; id -G; umask; touch /tmp/f && echo touched; (cat /root/x) 2>&1; true").edit(|s| {
        s["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [100, 5], "umask": 63});
        s["mounts"].as_array_mut().unwrap().push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]}));
    });
    let out = rt.run_ok(&unique("user"), &bundle);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1], "1000");
    let mut groups: Vec<&str> = lines[2].split_whitespace().collect();
    groups.sort();
    assert_eq!(
        groups,
        ["100", "1000", "5"],
        "supplementary groups replaced, host's dropped: {out}"
    );
    assert_eq!(lines[3], "0077");
    assert_eq!(lines[4], "touched", "{out}");
    assert!(
        out.contains("Permission denied"),
        "an unprivileged user cannot read /root: {out}"
    );
}

#[test]
fn capability_sets_are_exact() {
    let rt = Runtime::new();
    // Docker's default set, plus an inheritable+ambient one for a non-root user.
    let docker = berth_runtime::spec_template::DOCKER_DEFAULT_CAPS;
    let bundle = Bundle::sh("grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status").edit(|s| {
        s["process"]["capabilities"] = json!({
            "bounding": docker, "effective": docker, "permitted": docker,
            "inheritable": [], "ambient": []
        });
    });
    let status = rt.run_ok(&unique("caps"), &bundle);
    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW
    // SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP = bits 0 1 3 4 5 6 7 8 10 13 18 27 29 31.
    let want = "00000000a80425fb";
    for f in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(status_field(&status, f), want, "{f}: {status}");
    }
    assert_eq!(status_field(&status, "CapInh"), "0000000000000000");
    assert_eq!(status_field(&status, "CapAmb"), "0000000000000000");

    let bundle = Bundle::sh("grep -E '^Cap(Inh|Prm|Eff|Amb)' /proc/self/status").edit(|s| {
        let nbs = ["CAP_NET_BIND_SERVICE"];
        s["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        s["process"]["capabilities"] = json!({
            "bounding": nbs, "effective": nbs, "permitted": nbs, "inheritable": nbs, "ambient": nbs
        });
    });
    let status = rt.run_ok(&unique("ambient"), &bundle);
    // After exec as uid 1000, only the ambient capability survives, in all three sets.
    for f in ["CapPrm", "CapEff", "CapAmb", "CapInh"] {
        assert_eq!(
            status_field(&status, f),
            "0000000000000400",
            "{f}: {status}"
        );
    }
}

#[test]
fn dropped_capabilities_are_enforced() {
    let rt = Runtime::new();
    let bundle = Bundle::sh("(hostname changed) 2>&1; (mknod /tmp/n c 1 3) 2>&1; true").edit(|s| {
        let caps = ["CAP_KILL"];
        s["process"]["capabilities"] =
            json!({"bounding": caps, "effective": caps, "permitted": caps});
        s["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    });
    let out = rt.run_ok(&unique("nocaps"), &bundle);
    assert_eq!(out.matches("Operation not permitted").count(), 2, "{out}");
}

#[test]
fn no_new_privileges() {
    let rt = Runtime::new();
    let on = rt.run_ok(
        &unique("nnp"),
        &Bundle::sh("grep NoNewPrivs /proc/self/status"),
    );
    assert_eq!(status_field(&on, "NoNewPrivs"), "1");
    let off = rt.run_ok(
        &unique("nnp-off"),
        &Bundle::sh("grep NoNewPrivs /proc/self/status")
            .edit(|s| s["process"]["noNewPrivileges"] = false.into()),
    );
    assert_eq!(status_field(&off, "NoNewPrivs"), "0");
}

#[test]
fn rlimits() {
    let rt = Runtime::new();
    let bundle = Bundle::sh("ulimit -n; ulimit -Hn; ulimit -c; ulimit -Hu").edit(|s| {
        s["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "soft": 256, "hard": 512},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
            {"type": "RLIMIT_NPROC", "soft": 300, "hard": 300}
        ]);
    });
    assert_eq!(rt.run_ok(&unique("rlim"), &bundle), "256\n512\n0\n300\n");
}

#[test]
fn raising_a_hard_rlimit_without_the_capability_names_the_limit() {
    // This host's bounding set lacks CAP_SYS_RESOURCE: raising RLIMIT_NOFILE's hard limit
    // above the runtime's own must fail, and say which limit.
    let mut own = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a local struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) };
    let has_sys_resource = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap() & (1 << 24) != 0)
        .unwrap();
    let rt = Runtime::new();
    let bundle = Bundle::sh("ulimit -Hn").edit(|s| {
        s["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": own.rlim_max + 1, "hard": own.rlim_max + 1}]);
    });
    let (code, out, err) = rt.run(&unique("rlim-raise"), &bundle);
    if has_sys_resource {
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), (own.rlim_max + 1).to_string());
    } else {
        assert_ne!(code, 0);
        assert!(
            err.contains("RlimitNofile") && err.contains("Operation not permitted"),
            "{err}"
        );
    }
}

#[test]
fn a_session_keyring_per_container_unless_no_new_keyring() {
    let rt = Runtime::new();
    // /proc/keys lists the keys the reader may view, its session keyring among them; Docker
    // masks the file, this test's container does not.
    let bundle = Bundle::sh("cat /proc/keys").edit(|s| {
        let masked = s["linux"]["maskedPaths"].as_array_mut().unwrap();
        masked.retain(|p| p != "/proc/keys");
    });
    let id = unique("keyring");
    let out = rt.run_ok(&id, &bundle);
    assert!(out.contains(&format!("_ses.{id}")), "{out}");
    let id = unique("nokeyring");
    let dir = rt.prepare(&id, &bundle);
    let out = rt.ok(&[
        "run".as_ref(),
        "--no-new-keyring".as_ref(),
        "-b".as_ref(),
        dir.as_os_str(),
        id.as_ref(),
    ]);
    assert!(!out.contains(&format!("_ses.{id}")), "{out}");
}

#[test]
fn oom_score_adj() {
    let rt = Runtime::new();
    let bundle = Bundle::sh("cat /proc/self/oom_score_adj")
        .edit(|s| s["process"]["oomScoreAdj"] = 500.into());
    assert_eq!(rt.run_ok(&unique("oom"), &bundle), "500\n");
}

#[test]
fn preserved_fds_pass_and_nothing_else_leaks() {
    let rt = Runtime::new();
    let data = tempfile::NamedTempFile::new().unwrap();
    fs::write(data.path(), "via fd 3\n").unwrap();
    let extra = fs::File::open("/etc/hostname").unwrap();
    // fd 3 is the data file; another descriptor of ours sits above it and must not leak.
    let id = unique("fds");
    let bundle = Bundle::sh("cat <&3; ls /proc/self/fd | sort -n | tr '\\n' ' '");
    let dir = rt.prepare(&id, &bundle);
    let file = fs::File::open(data.path()).unwrap();
    let fd = file.as_raw_fd();
    let extra_fd = extra.as_raw_fd();
    let mut cmd = rt.command(&[
        "run".as_ref(),
        "--preserve-fds".as_ref(),
        "1".as_ref(),
        "-b".as_ref(),
        dir.as_os_str(),
        id.as_ref(),
    ]);
    // SAFETY: between fork and exec only async-signal-safe calls: dup2 and fcntl.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            // dup2 onto itself keeps close-on-exec set: when the file is fd 3 already (it can
            // be, with other tests' descriptors closed), clear the flag instead.
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The copy of `extra` stays open (no CLOEXEC) as a host fd that must not leak.
            libc::fcntl(extra_fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("via fd 3"));
    // 0 1 2 3 and ls's own directory descriptor: nothing of the runtime's or the caller's.
    let fds: Vec<u32> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(&fds[..4], &[0, 1, 2, 3], "{stdout}");
    assert!(fds.len() <= 5, "leaked descriptors: {stdout}");
    drop(extra);
}

#[test]
fn process_runs_with_default_signal_dispositions() {
    // The runtime blocks signals to forward them and Rust ignores SIGPIPE: neither may leak.
    let rt = Runtime::new();
    let out = rt.run_ok(
        &unique("sigmask"),
        &Bundle::busybox(&["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]),
    );
    assert_eq!(status_field(&out, "SigBlk"), "0000000000000000");
    assert_eq!(status_field(&out, "SigIgn"), "0000000000000000");
}

#[test]
fn scheduler_io_priority_personality_and_memory_policy() {
    let rt = Runtime::new();
    // Each value differs from what the runtime itself runs with, so inheriting is not passing.
    let bundle = Bundle::sh(
        "awk '{print $19, $41}' /proc/self/stat; ionice; uname -m; head -1 /proc/self/numa_maps | cut -d' ' -f2",
    )
    .edit(|s| {
        s["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 7});
        s["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 6});
        s["linux"]["personality"] = json!({"domain": "LINUX32"});
        s["linux"]["memoryPolicy"] = json!({"mode": "MPOL_BIND", "nodes": "0"});
    });
    let out = rt.run_ok(&unique("attrs"), &bundle);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "7 3", "nice 7, policy SCHED_BATCH (3): {out}");
    assert_eq!(lines[1], "best-effort: prio 6", "{out}");
    assert_eq!(lines[2], "i686", "the LINUX32 execution domain: {out}");
    assert_eq!(lines[3], "bind:0", "{out}");
}

#[test]
fn bad_process_attributes_are_refused_by_create() {
    let rt = Runtime::new();
    for (what, edit) in [
        (
            "ioPriority",
            json!({"process": {"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 9}}}),
        ),
        (
            "execCPUAffinity",
            json!({"process": {"execCPUAffinity": {"final": "3-1"}}}),
        ),
        (
            "execCPUAffinity",
            json!({"process": {"execCPUAffinity": {"initial": "zero"}}}),
        ),
        (
            "memoryPolicy",
            json!({"linux": {"memoryPolicy": {"mode": "MPOL_BIND", "nodes": "0-x"}}}),
        ),
    ] {
        let bundle = Bundle::sh("true").edit(|s| {
            for (section, fields) in edit.as_object().unwrap() {
                for (k, v) in fields.as_object().unwrap() {
                    s[section][k] = v.clone();
                }
            }
        });
        let id = unique("badattr");
        let dir = rt.prepare(&id, &bundle);
        let err = rt.fails(&[
            "create".as_ref(),
            "-b".as_ref(),
            dir.as_os_str(),
            id.as_ref(),
        ]);
        assert!(err.contains(what), "{what}: {err}");
        assert!(
            rt.output(&["state", &id]).status.code() != Some(0),
            "{what}: nothing left behind"
        );
    }
}

#[test]
fn exec_cpu_affinity_initial_then_final() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        // Two distinct CPUs are needed to tell initial from final; this host has one.
        eprintln!("note: one CPU; initial and final are both CPU 0");
    }
    let last = (cpus - 1).to_string();
    let rt = Runtime::new();
    let id = unique("affinity");
    let out_dir = tempfile::tempdir().unwrap();
    let host = out_dir.path().to_str().unwrap().to_string();
    let bundle = Bundle::sh("grep Cpus_allowed_list /proc/self/status | cut -f2 > /out/cpus").edit(|s| {
        s["process"]["execCPUAffinity"] = json!({"initial": "0", "final": last});
        s["mounts"].as_array_mut().unwrap().push(json!({"destination": "/out", "type": "bind", "source": host, "options": ["rbind", "rw"]}));
    });
    rt.create(&id, &bundle);
    // Until start, the init runs the runtime's code with the initial affinity.
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(status_field(&status, "Cpus_allowed_list"), "0");
    rt.ok(&["start", &id]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rt.state(&id)["status"] != "stopped" {
        assert!(
            std::time::Instant::now() < deadline,
            "container did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    rt.ok(&["delete", &id]);
    let after = fs::read_to_string(out_dir.path().join("cpus")).unwrap();
    assert_eq!(
        after.trim(),
        last,
        "the program runs with the final affinity"
    );
}

#[test]
fn exec_applies_its_own_attributes_and_the_containers_domain() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let last = (cpus - 1).to_string();
    let rt = Runtime::new();
    let id = unique("execattrs");
    let bundle = Bundle::sh("sleep 100").edit(|s| {
        s["linux"]["personality"] = json!({"domain": "LINUX32"});
    });
    rt.create(&id, &bundle);
    rt.ok(&["start", &id]);
    let process = json!({
        "args": ["sh", "-c", "uname -m; grep Cpus_allowed_list /proc/self/status | cut -f2; awk '{print $41}' /proc/self/stat"],
        "env": ["PATH=/bin"],
        "cwd": "/",
        "user": {"uid": 0, "gid": 0},
        "execCPUAffinity": {"final": last},
        "scheduler": {"policy": "SCHED_IDLE"}
    });
    let proc_file = tempfile::NamedTempFile::new().unwrap();
    fs::write(proc_file.path(), process.to_string()).unwrap();
    let out = rt.ok(&[
        "exec".as_ref(),
        "--process".as_ref(),
        proc_file.path().as_os_str(),
        id.as_ref(),
    ]);
    rt.ok(&["delete", "--force", &id]);
    assert_eq!(
        out,
        format!("i686\n{last}\n5\n"),
        "LINUX32, CPU {last}, SCHED_IDLE (5)"
    );
}
