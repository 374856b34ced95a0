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

/// Runs `run` with a host directory leaked to the runtime as descriptor 7, the way a careless
/// caller (or CVE-2024-21626's leaked cgroup fd) would. Returns (exit code, stdout, stderr).
fn run_with_leaked_dir(
    rt: &Runtime,
    id: &str,
    bundle: &Bundle,
    leaked: &Path,
) -> (i32, String, String) {
    let dir = rt.prepare(id, bundle);
    let host_dir = fs::File::open(leaked).unwrap();
    let raw = host_dir.as_raw_fd();
    let mut cmd = rt.command(&["run".as_ref(), "-b".as_ref(), dir.as_os_str(), id.as_ref()]);
    // SAFETY: only dup2 between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    let host = tempfile::tempdir().unwrap();
    let bundle = Bundle::busybox(&["/proc/self/fd/7/../../../../bin/sh", "-c", "echo escaped"]);
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
