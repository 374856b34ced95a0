//! Defences, each attacked from a config or an image: leaked host directories (CVE-2024-21626),
//! the runtime's own binary run inside (CVE-2019-5736), cgroup paths that leave their
//! hierarchy, deny-by-default devices, the record's permissions.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;

use berth_kernel_tests::harness::{Bundle, Runtime, private_rootfs, unique};
use serde_json::json;

/// Runs `cmd` with `leaked` open as its descriptor 7, the way a careless caller (or
/// CVE-2024-21626's leaked cgroup fd) would. Returns (exit code, stdout, stderr).
fn output_with_fd7(mut cmd: std::process::Command, leaked: &Path) -> (i32, String, String) {
    let file = fs::File::open(leaked).unwrap();
    let raw = file.as_raw_fd();
    // SAFETY: only dup2 and fcntl (async-signal-safe) between fork and exec; `file` outlives
    // the spawn.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec: clear it when the file is fd 7 already.
            let r = if raw == 7 {
                libc::fcntl(7, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 7)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    drop(file);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `run` of container `id` with a host directory leaked as descriptor 7.
fn run_with_leaked_dir(
    rt: &Runtime,
    id: &str,
    bundle: &Bundle,
    leaked: &Path,
) -> (i32, String, String) {
    let dir = rt.prepare(id, bundle);
    let cmd = rt.command(&["run".as_ref(), "-b".as_ref(), dir.as_os_str(), id.as_ref()]);
    output_with_fd7(cmd, leaked)
}

#[test]
fn cve_2024_21626_cwd_through_a_leaked_directory() {
    let rt = Runtime::new();
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("secret"), "host secret").unwrap();
    let bundle = Bundle::sh("cat secret ../*/secret 2>&1; pwd")
        .edit(|s| s["process"]["cwd"] = "/proc/self/fd/7".into());
    let (code, out, err) = run_with_leaked_dir(&rt, &unique("cwdleak"), &bundle, host.path());
    assert_ne!(code, 0, "the container ran with a host cwd: {out}");
    assert!(!out.contains("host secret"), "{out}");
    assert!(err.contains("process.cwd"), "{err}");
}

#[test]
fn cve_2024_21626_program_through_a_leaked_directory() {
    let rt = Runtime::new();
    // A static program in the leaked host directory, reached through `..` as in the CVE's
    // exploit: it would run, since nothing it needs is missing from the container.
    let host = tempfile::tempdir().unwrap();
    let name = host.path().file_name().unwrap().to_str().unwrap();
    fs::copy(
        berth_kernel_tests::fixtures::busybox()
            .rootfs
            .join("bin/busybox"),
        host.path().join("sh"),
    )
    .unwrap();
    let program = format!("/proc/self/fd/7/../{name}/sh");
    let bundle = Bundle::busybox(&[&program, "-c", "echo escaped"]);
    let (code, out, err) = run_with_leaked_dir(&rt, &unique("exeleak"), &bundle, host.path());
    assert_ne!(code, 0);
    assert!(!out.contains("escaped"), "{out}");
    assert!(err.contains("/proc/self/fd/7"), "{err}");
}

#[test]
fn no_descriptor_of_the_caller_or_the_runtime_reaches_the_container() {
    let rt = Runtime::new();
    let host = tempfile::tempdir().unwrap();
    let bundle = Bundle::sh("ls /proc/self/fd | wc -l; readlink /proc/self/fd/7 || echo closed");
    let (code, out, err) = run_with_leaked_dir(&rt, &unique("nofd"), &bundle, host.path());
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].trim(),
        "4",
        "0, 1, 2 and ls's own directory: {out}"
    );
    assert_eq!(lines[1], "closed", "{out}");
}

#[test]
fn cve_2019_5736_runtime_binary_is_never_run_inside() {
    let rt = Runtime::new();
    let (code, _, err) = rt.run(
        &unique("selfexe"),
        &Bundle::busybox(&["/proc/self/exe", "--version"]),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("refusing to run the runtime's own binary"),
        "{err}"
    );

    // The same through a script's interpreter line.
    let rootfs = private_rootfs(&["sh"], &[]);
    fs::write(rootfs.path().join("evil"), "#!/proc/self/exe --version\n").unwrap();
    fs::set_permissions(
        rootfs.path().join("evil"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let bundle = Bundle::busybox(&["/evil"]).edit(|s| s["root"]["path"] = json!(rootfs.path()));
    let (code, out, err) = rt.run(&unique("shebang"), &bundle);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("refusing to run the runtime's own binary"),
        "{err}"
    );

    // And into a running container.
    let id = unique("execself");
    rt.create(&id, &Bundle::sh("sleep 100"));
    rt.ok(&["start", &id]);
    let err = rt.fails(&["exec", &id, "/proc/self/exe", "--version"]);
    assert!(
        err.contains("refusing to run the runtime's own binary"),
        "{err}"
    );
}

#[test]
fn cgroups_path_cannot_leave_the_hierarchy_or_share_a_busy_cgroup() {
    let rt = Runtime::new();
    for bad in ["/../../../tmp/escape", "/"] {
        let bundle = Bundle::sh("true").edit(|s| s["linux"]["cgroupsPath"] = json!(bad));
        let (code, _, err) = rt.run(&unique("cgpath"), &bundle);
        assert_ne!(code, 0);
        assert!(err.contains("linux.cgroupsPath"), "{bad}: {err}");
    }
    assert!(!Path::new("/tmp/escape").exists());

    // Our own cgroup holds this test process: a container may not move in with it.
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let memory = own
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .unwrap();
    if memory != "/" {
        let bundle = Bundle::sh("true").edit(|s| s["linux"]["cgroupsPath"] = json!(memory));
        let (code, _, err) = rt.run(&unique("cgbusy"), &bundle);
        assert_ne!(code, 0);
        assert!(err.contains("already holds processes"), "{err}");
    }
}

#[test]
fn devices_are_denied_by_default() {
    let rt = Runtime::new();
    let bundle = Bundle::sh("cat /sys/fs/cgroup/devices/devices.list; (head -c1 /dev/kmsg-copy) 2>&1; true").edit(|s| {
        s["linux"]["resources"] = json!({});
        s["linux"]["devices"] = json!([{"path": "/dev/kmsg-copy", "type": "c", "major": 1, "minor": 11, "fileMode": 420}]);
    });
    let out = rt.run_ok(&unique("devdefault"), &bundle);
    assert!(!out.contains("a *:* rwm"), "{out}");
    assert!(out.contains("c 1:3 rwm"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
}

#[test]
fn state_record_is_private() {
    let rt = Runtime::new();
    let id = unique("perm");
    rt.create(
        &id,
        &Bundle::sh("true").edit(|s| s["process"]["env"] = json!(["PATH=/bin", "SECRET=hunter2"])),
    );
    let mode = fs::metadata(rt.root().join(&id).join("state.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn unimplemented_settings_are_refused_not_ignored() {
    let rt = Runtime::new();
    // Intel RDT needs resctrl, which this build does not drive: a config asking for it must fail
    // loudly rather than run unpartitioned, and leave nothing behind.
    let bundle = Bundle::sh("true")
        .edit(|s| s["linux"]["intelRdt"] = json!({"closID": "berth", "l3CacheSchema": "L3:0=f"}));
    let id = unique("unimpl");
    let (code, _, err) = rt.run(&id, &bundle);
    assert_ne!(code, 0);
    assert!(err.contains("linux.intelRdt"), "{err}");
    assert!(
        !rt.root().join(&id).exists(),
        "a refused config left its state directory"
    );
}

/// A copy of busybox at `/fc/grep` (so it runs the grep applet) whose file capabilities have
/// every inheritable bit set and no permitted bit: it gains exactly the capabilities that are
/// in the process's inheritable set when it is executed.
fn rootfs_with_inheritable_file_caps() -> tempfile::TempDir {
    let rootfs = private_rootfs(&["sh"], &["fc"]);
    let grep = rootfs.path().join("fc/grep");
    fs::copy(rootfs.path().join("bin/busybox"), &grep).unwrap();
    // struct vfs_cap_data, revision 2, effective flag set; little-endian words:
    // magic_etc, then (permitted, inheritable) for capabilities 0–31 and 32–63.
    let mut xattr = Vec::new();
    for word in [0x0200_0001u32, 0, u32::MAX, 0, u32::MAX] {
        xattr.extend_from_slice(&word.to_le_bytes());
    }
    let path = std::ffi::CString::new(grep.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: the path and value are valid for the call; the kernel copies them.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"security.capability".as_ptr(),
            xattr.as_ptr().cast(),
            xattr.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
    rootfs
}

/// The `Cap*:` lines of a /proc/PID/status as (name, mask).
fn cap_masks(status: &str) -> Vec<(String, u64)> {
    status
        .lines()
        .filter_map(|l| {
            let (name, hex) = l.split_once(':')?;
            Some((name.to_string(), u64::from_str_radix(hex.trim(), 16).ok()?))
        })
        .collect()
}

#[test]
fn cve_2022_29162_no_inheritable_capabilities_reach_programs() {
    let rt = Runtime::new();
    let rootfs = rootfs_with_inheritable_file_caps();
    let docker = json!(berth_runtime::spec_template::DOCKER_DEFAULT_CAPS);
    let bundle = Bundle::busybox(&["/fc/grep", "^Cap", "/proc/self/status"]).edit(|s| {
        s["root"]["path"] = json!(rootfs.path());
        s["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        s["process"]["noNewPrivileges"] = json!(false);
        s["process"]["capabilities"] =
            json!({"bounding": docker, "effective": docker, "permitted": docker});
    });
    let out = rt.run_ok(&unique("fcaps"), &bundle);
    let masks = cap_masks(&out);
    assert_eq!(masks.len(), 5, "{out}");
    for (name, mask) in &masks {
        if name != "CapBnd" {
            assert_eq!(
                *mask, 0,
                "{name} of a uid-1000 program with file caps: {out}"
            );
        }
    }

    // An exec adding a capability must not make it inheritable either.
    let id = unique("fcapsexec");
    rt.create(
        &id,
        &Bundle::sh("sleep 100").edit(|s| s["root"]["path"] = json!(rootfs.path())),
    );
    rt.ok(&["start", &id]);
    let out = rt.ok(&[
        "exec",
        "--cap",
        "CAP_NET_ADMIN",
        "--user",
        "1000:1000",
        &id,
        "/fc/grep",
        "^Cap",
        "/proc/self/status",
    ]);
    let masks = cap_masks(&out);
    assert_eq!(masks.len(), 5, "{out}");
    for (name, mask) in &masks {
        if name != "CapBnd" {
            assert_eq!(*mask, 0, "{name} of an exec with --cap: {out}");
        }
    }
    rt.ok(&["delete", "--force", &id]);
}

#[test]
fn cve_2021_30465_mount_destination_swapped_for_a_symlink() {
    // The attacker controls the rootfs and keeps swapping the mount destination /mnt/dst
    // between a directory and a symlink to the host's path of the rootfs' own /escaped. A
    // runtime that checks the destination and then mounts by path follows the symlink at
    // mount time and the volume lands on /escaped; resolving in the root (and mounting on the
    // descriptor it resolved) cannot.
    let rt = Runtime::new();
    let rootfs = private_rootfs(&["sh", "ls"], &["mnt/dst", "escaped"]);
    let swap = rootfs.path().join("mnt/swap");
    std::os::unix::fs::symlink(rootfs.path().join("escaped"), &swap).unwrap();
    let volume = tempfile::tempdir().unwrap();
    fs::write(volume.path().join("marker"), "volume").unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racer = {
        let stop = stop.clone();
        let dst = rootfs.path().join("mnt/dst");
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &dst,
                    rustix::fs::CWD,
                    &swap,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .expect("renameat2(RENAME_EXCHANGE)");
                swaps += 1;
            }
            swaps
        })
    };
    let bundle = Bundle::sh("ls /escaped").edit(|s| {
        s["root"]["path"] = json!(rootfs.path());
        s["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/mnt/dst", "type": "bind", "source": volume.path(),
            "options": ["rbind", "ro"]
        }));
    });
    let mut ran = 0;
    let mut escaped = None;
    for i in 0..40 {
        // A run may fail (the destination changed under it): that is a safe outcome.
        let (code, out, err) = rt.run(&unique(&format!("swap{i}")), &bundle);
        if out.contains("marker") {
            escaped = Some(format!("{out} {err}"));
            break;
        }
        ran += i32::from(code == 0);
    }
    // The racer stops before any assertion: a failing run must not leave it renaming in the
    // rootfs while the rootfs is being removed (that left the directory behind).
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = racer.join().unwrap();
    assert_eq!(escaped, None, "the volume was mounted on /escaped");
    assert!(swaps > 1000, "the racer barely ran ({swaps} swaps)");
    assert!(
        ran > 0,
        "no container ran at all: the race test proved nothing"
    );
    assert!(!rootfs.path().join("escaped/marker").exists());
}

#[test]
fn exec_sees_no_descriptor_of_its_caller() {
    let rt = Runtime::new();
    let id = unique("execfd");
    rt.create(&id, &Bundle::sh("sleep 100"));
    rt.ok(&["start", &id]);
    let host = tempfile::NamedTempFile::new().unwrap();
    fs::write(host.path(), "host secret").unwrap();
    let cmd = rt.command(&[
        "exec",
        &id,
        "sh",
        "-c",
        "ls /proc/self/fd | wc -l; cat /proc/self/fd/7 2>/dev/null || echo closed",
    ]);
    let (code, out, err) = output_with_fd7(cmd, host.path());
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].trim(),
        "4",
        "0, 1, 2 and ls's own directory: {out}"
    );
    assert_eq!(lines[1], "closed", "{out}");
    rt.ok(&["delete", "--force", &id]);
}
