//! The container's filesystem, checked from inside: pivot_root, read-only root, every mount
//! type a Docker container gets, bind options, propagation, devices, masked and read-only paths.

use std::fs;
use std::os::unix::fs::symlink;

use berth_kernel_tests::harness::{Bundle, Runtime, mount_has_option, private_rootfs, unique};
use serde_json::json;

fn add_mount(bundle: Bundle, m: serde_json::Value) -> Bundle {
    bundle.edit(move |s| s["mounts"].as_array_mut().unwrap().push(m))
}

#[test]
fn the_rootfs_is_root_and_read_only() {
    let rt = Runtime::new();
    let out = rt.run_ok(
        &unique("rootro"),
        &Bundle::sh("cat /proc/self/mountinfo | head -1; touch /x 2>&1; ls /; test -e /run/berth-runtime && echo LEAK; echo done"),
    );
    let first = out.lines().next().unwrap();
    let fields: Vec<&str> = first.split(' ').collect();
    assert_eq!(fields[4], "/", "the root mount comes first: {first}");
    assert!(
        fields[5].split(',').any(|o| o == "ro"),
        "root is read-only: {first}"
    );
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("bin\n"), "the busybox rootfs is /: {out}");
    assert!(!out.contains("LEAK"), "host paths visible: {out}");
}

#[test]
fn old_root_is_gone_after_pivot() {
    let rt = Runtime::new();
    let out = rt.run_ok(
        &unique("pivot"),
        &Bundle::sh("wc -l < /proc/self/mountinfo; grep -c ' - ext4 ' /proc/self/mountinfo"),
    );
    let lines: Vec<usize> = out.lines().map(|l| l.trim().parse().unwrap()).collect();
    // Root, /proc, /dev(+pts, shm, mqueue), /sys, cgroup tmpfs and hierarchies, masks and
    // read-only paths: well under the host's count, and only the rootfs from the host's disk.
    let host = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    assert!(lines[0] < host + 40, "{out}");
    assert_eq!(
        lines[1], 1,
        "only the rootfs comes from the host's filesystem: {out}"
    );
}

#[test]
fn no_pivot_moves_the_root_instead() {
    // The two ways differ only in what stays below the container's root (the old root,
    // reachable to a process that escapes a chroot), so the runtime's debug log says which
    // one it took; the container runs either way.
    let rt = Runtime::new();
    let log_dir = tempfile::tempdir().unwrap();
    let run = |no_pivot: bool| {
        let id = unique("nopivot");
        let bundle = Bundle::sh("ls /bin/busybox; head -1 /proc/self/mountinfo");
        let dir = rt.prepare(&id, &bundle);
        let log = log_dir.path().join(&id);
        let mut args = vec![
            "--debug".as_ref(),
            "--log".as_ref(),
            log.as_os_str(),
            "run".as_ref(),
        ];
        if no_pivot {
            args.push("--no-pivot".as_ref());
        }
        args.extend(["-b".as_ref(), dir.as_os_str(), id.as_ref()]);
        let out = rt.ok(&args);
        assert!(out.starts_with("/bin/busybox\n"), "{out}");
        let root = out.lines().nth(1).unwrap_or_default();
        assert_eq!(root.split(' ').nth(4), Some("/"), "{out}");
        fs::read_to_string(&log).unwrap()
    };
    let moved = run(true);
    assert!(
        moved.contains("moved onto / and chrooted (no pivot_root)")
            && !moved.contains("pivot_root, old root detached"),
        "{moved}"
    );
    let pivoted = run(false);
    assert!(
        pivoted.contains("pivot_root, old root detached") && !pivoted.contains("chrooted"),
        "{pivoted}"
    );
}

#[test]
fn docker_mounts_are_there_with_their_options() {
    let rt = Runtime::new();
    let info = rt.run_ok(&unique("mounts"), &Bundle::sh("cat /proc/self/mountinfo"));
    for (mp, fstype) in [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
        ("/sys/fs/cgroup", "tmpfs"),
    ] {
        let line = info
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(mp))
            .unwrap_or_else(|| panic!("{mp} not mounted:\n{info}"));
        assert!(
            line.contains(&format!(" - {fstype} ")),
            "{mp} is not {fstype}: {line}"
        );
    }
    assert!(mount_has_option(&info, "/dev", "nosuid"));
    assert!(mount_has_option(&info, "/dev/shm", "noexec"));
    assert!(mount_has_option(&info, "/dev/shm", "nodev"));
    assert!(mount_has_option(&info, "/sys", "ro"));
    assert!(mount_has_option(&info, "/sys/fs/cgroup", "ro"));
    assert!(info.contains("size=65536k"), "tmpfs size option: {info}");
}

#[test]
fn cgroup_mount_shows_the_containers_hierarchies() {
    let rt = Runtime::new();
    let out = rt.run_ok(
        &unique("cgmount"),
        &Bundle::sh("ls /sys/fs/cgroup; cat /sys/fs/cgroup/memory/memory.limit_in_bytes; (touch /sys/fs/cgroup/memory/x) 2>&1; true"),
    );
    for h in [
        "memory", "cpu", "pids", "devices", "freezer", "systemd", "unified",
    ] {
        assert!(out.lines().any(|l| l == h), "{h} missing: {out}");
    }
    assert!(out.contains("Read-only file system"), "{out}");
}

#[test]
fn bind_mounts_with_flags() {
    let rt = Runtime::new();
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("file"), "from host\n").unwrap();
    fs::write(host.path().join("single"), "single file\n").unwrap();
    let bundle = add_mount(
        add_mount(
            add_mount(
                Bundle::sh(
                    "cat /mnt/ro/file; touch /mnt/ro/new 2>&1; echo hi > /mnt/rw/new && echo wrote; cat /mnt/single.txt; cat /proc/self/mountinfo",
                ),
                json!({"destination": "/mnt/ro", "type": "bind", "source": host.path(), "options": ["rbind", "ro", "nosuid", "nodev", "noexec", "rprivate"]}),
            ),
            json!({"destination": "/mnt/rw", "type": "bind", "source": host.path(), "options": ["bind", "rw"]}),
        ),
        json!({"destination": "/mnt/single.txt", "type": "bind", "source": host.path().join("single"), "options": ["bind", "ro"]}),
    );
    let out = rt.run_ok(&unique("bind"), &bundle);
    assert!(out.starts_with("from host\n"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("wrote"), "{out}");
    assert!(out.contains("single file"), "{out}");
    assert_eq!(fs::read_to_string(host.path().join("new")).unwrap(), "hi\n");
    for opt in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(
            mount_has_option(&out, "/mnt/ro", opt),
            "/mnt/ro lacks {opt}:\n{out}"
        );
    }
    assert!(mount_has_option(&out, "/mnt/rw", "rw"));
    assert!(mount_has_option(&out, "/mnt/single.txt", "ro"));
    // rprivate: no "master:" or "shared:" tag on that mount.
    let line = out
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/mnt/ro"))
        .unwrap();
    assert!(
        !line.contains("shared:") && !line.contains("master:"),
        "{line}"
    );
}

/// A directory of the test's own made a shared mount (a bind of itself), as a host's mounts
/// are under systemd; unmounted, with what is below it, on drop.
struct SharedMount(tempfile::TempDir);

impl SharedMount {
    fn new(dir: tempfile::TempDir) -> SharedMount {
        use rustix::mount::{MountPropagationFlags, mount_bind, mount_change};
        mount_bind(dir.path(), dir.path()).unwrap();
        let shared = SharedMount(dir);
        mount_change(shared.path(), MountPropagationFlags::SHARED).unwrap();
        shared
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        berth_kernel_tests::harness::unmount_under(self.0.path());
    }
}

/// Runs `bundle` with a script that prints the mountinfo line of `inside`, then waits up to
/// `wait_tenths` tenths of a second for `inside/sub/ready` while the test mounts a tmpfs on
/// the host at `host_sub` (what `inside/sub` is made from) and writes that file there.
/// Returns the mountinfo line and whether the file was seen.
fn propagation_seen_inside(
    rt: &Runtime,
    bundle: Bundle,
    inside: &str,
    host_sub: &std::path::Path,
    wait_tenths: u32,
) -> (String, bool) {
    let script = format!(
        "grep ' {inside} ' /proc/self/mountinfo; touch /tmp/up; i=0; \
         while [ ! -e {inside}/sub/ready ] && [ $i -lt {wait_tenths} ]; do sleep 0.1; i=$((i+1)); done; \
         cat {inside}/sub/ready 2>/dev/null || echo not-propagated"
    );
    let bundle = add_mount(
        bundle.edit(|s| s["process"]["args"] = json!(["sh", "-c", script])),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}),
    );
    let id = unique("prop");
    fs::create_dir_all(host_sub).unwrap();
    let out = std::thread::scope(|scope| {
        let run = scope.spawn(|| rt.run_ok(&id, &bundle));
        // Once the container's program runs (its /tmp/up exists), mount on the host.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let state = rt.output(&["state", &id]);
            let pid = serde_json::from_slice::<serde_json::Value>(&state.stdout)
                .ok()
                .and_then(|v| v["pid"].as_u64())
                .unwrap_or(0);
            if pid > 0 && std::path::Path::new(&format!("/proc/{pid}/root/tmp/up")).exists() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "container {id} never ran"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        rustix::mount::mount(
            "tmpfs",
            host_sub,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            c"size=1m",
        )
        .unwrap();
        fs::write(host_sub.join("ready"), "propagated\n").unwrap();
        let out = run.join().unwrap();
        rustix::mount::unmount(host_sub, rustix::mount::UnmountFlags::DETACH).unwrap();
        out
    });
    let line = out.lines().next().unwrap_or_default().to_string();
    (
        line,
        out.contains("propagated") && !out.contains("not-propagated"),
    )
}

#[test]
fn rootfs_propagation_defaults_to_rslave_and_private_cuts_the_host_off() {
    let rt = Runtime::new();
    // A rootfs that is a shared mount on the host: the container's / is its slave by default
    // (rslave), so a mount made on the host later appears inside; private: it does not.
    let rootfs = SharedMount::new(private_rootfs(
        &["sh", "grep", "touch", "sleep", "cat"],
        &["tmp", "sub"],
    ));
    let bundle = || {
        Bundle::sh("true").edit(|s| {
            s["root"]["path"] = json!(rootfs.path());
            s["root"]["readonly"] = json!(false);
        })
    };
    let sub = rootfs.path().join("sub");
    let (line, seen) = propagation_seen_inside(&rt, bundle(), "/", &sub, 100);
    assert!(
        line.contains("master:") && !line.contains("shared:"),
        "{line}"
    );
    assert!(
        seen,
        "a host mount below the rootfs did not reach the container: {line}"
    );
    let private = bundle().edit(|s| s["linux"]["rootfsPropagation"] = "private".into());
    let (line, seen) = propagation_seen_inside(&rt, private, "/", &sub, 20);
    assert!(
        !line.contains("master:") && !line.contains("shared:"),
        "{line}"
    );
    assert!(!seen, "{line}");
}

#[test]
fn bind_propagation_options_take_effect() {
    let rt = Runtime::new();
    let host = SharedMount::new(tempfile::tempdir().unwrap());
    let bind = |options: serde_json::Value| {
        add_mount(
            Bundle::sh("true"),
            json!({"destination": "/mnt/vol", "type": "bind", "source": host.path(), "options": options}),
        )
    };
    let sub = host.path().join("sub");
    // rslave: receives from the host, sends nothing back.
    let (line, seen) =
        propagation_seen_inside(&rt, bind(json!(["rbind", "rslave"])), "/mnt/vol", &sub, 100);
    assert!(
        line.contains("master:") && !line.contains("shared:"),
        "{line}"
    );
    assert!(seen, "{line}");
    // rprivate (Docker's default for binds): cut off.
    let (line, seen) = propagation_seen_inside(
        &rt,
        bind(json!(["rbind", "rprivate"])),
        "/mnt/vol",
        &sub,
        20,
    );
    assert!(
        !line.contains("master:") && !line.contains("shared:"),
        "{line}"
    );
    assert!(!seen, "{line}");
    // rshared: in a peer group with the host's mount, both ways.
    let (line, seen) = propagation_seen_inside(
        &rt,
        bind(json!(["rbind", "rshared"])),
        "/mnt/vol",
        &sub,
        100,
    );
    assert!(line.contains("shared:"), "{line}");
    assert!(seen, "{line}");
}

#[test]
fn tmpfs_options_and_tmpcopyup() {
    let rt = Runtime::new();
    let bundle = add_mount(
        add_mount(
            Bundle::sh(
                "grep ' /mnt/t ' /proc/self/mountinfo; stat -c %a /mnt/t; ls /etc/passwd && echo copied",
            ),
            json!({"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=1m", "mode=1777"]}),
        ),
        json!({"destination": "/etc", "type": "tmpfs", "source": "tmpfs", "options": ["tmpcopyup"]}),
    );
    let out = rt.run_ok(&unique("tmpfs"), &bundle);
    assert!(out.contains("size=1024k"), "{out}");
    assert!(out.contains("1777"), "{out}");
    assert!(
        out.contains("copied"),
        "tmpcopyup kept the image's /etc: {out}"
    );
}

#[test]
fn default_devices_and_symlinks() {
    let rt = Runtime::new();
    let out = rt.run_ok(
        &unique("devs"),
        &Bundle::sh(
            "for d in null zero full random urandom tty; do stat -c '%n %t:%T %a' /dev/$d; done; \
             for l in fd stdin ptmx; do readlink /dev/$l; done; echo x > /dev/null && head -c 4 /dev/zero | wc -c",
        ),
    );
    for line in [
        "/dev/null 1:3 666",
        "/dev/zero 1:5 666",
        "/dev/full 1:7 666",
        "/dev/random 1:8 666",
        "/dev/urandom 1:9 666",
        "/dev/tty 5:0 666",
    ] {
        assert!(out.contains(line), "{line} missing:\n{out}");
    }
    assert!(
        out.contains("/proc/self/fd\n/proc/self/fd/0\npts/ptmx\n"),
        "{out}"
    );
    assert!(out.trim_end().ends_with('4'), "{out}");
}

#[test]
fn linux_devices_are_created_with_mode_and_owner() {
    let rt = Runtime::new();
    let bundle = Bundle::sh("stat -c '%n %t:%T %a %u:%g' /dev/fuse /dev/custom/net-tun").edit(|s| {
        s["linux"]["devices"] = json!([
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438, "uid": 0, "gid": 0},
            {"path": "/dev/custom/net-tun", "type": "c", "major": 10, "minor": 200, "fileMode": 384, "uid": 1000, "gid": 100}
        ]);
    });
    let out = rt.run_ok(&unique("lindev"), &bundle);
    assert!(out.contains("/dev/fuse a:e5 666 0:0"), "{out}");
    assert!(
        out.contains("/dev/custom/net-tun a:c8 600 1000:100"),
        "{out}"
    );
}

#[test]
fn masked_paths_read_empty_and_readonly_paths_refuse_writes() {
    let rt = Runtime::new();
    assert!(
        fs::metadata("/proc/keys").is_ok() && fs::metadata("/proc/acpi").is_ok(),
        "host lacks the probed paths"
    );
    let out = rt.run_ok(
        &unique("mask"),
        &Bundle::sh(
            "wc -c < /proc/keys; ls /proc/acpi | wc -l; ls /sys/firmware | wc -l; \
             (echo 1 > /proc/sys/kernel/ostype) 2>&1; (echo 3 > /proc/sys/vm/drop_caches) 2>&1; \
             (umount /proc/keys) 2>&1; (mount -o remount,rw /proc/sys) 2>&1; wc -c < /proc/keys",
        ),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].trim(), "0", "/proc/keys masked: {out}");
    assert_eq!(lines[1].trim(), "0", "/proc/acpi masked: {out}");
    assert_eq!(lines[2].trim(), "0", "/sys/firmware masked: {out}");
    assert!(lines[3].contains("Read-only file system"), "{out}");
    assert!(lines[4].contains("Read-only file system"), "{out}");
    // Without CAP_SYS_ADMIN neither the mask nor the read-only bind can be lifted.
    assert!(lines[5].contains("Operation not permitted"), "{out}");
    let l6 = lines[6].to_lowercase();
    assert!(
        l6.contains("not permitted") || l6.contains("permission denied"),
        "{out}"
    );
    assert_eq!(lines[7].trim(), "0", "{out}");
}

#[test]
fn sysctls_are_written_in_the_containers_namespaces() {
    let rt = Runtime::new();
    let host_forward = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let bundle =
        Bundle::sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/msgmax").edit(|s| {
            s["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.msgmax": "4096"});
        });
    assert_eq!(rt.run_ok(&unique("sysctl"), &bundle), "1\n4096\n");
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward
    );
}

#[test]
fn absolute_symlink_destination_resolves_inside_the_rootfs() {
    // Images have links like /var/run -> /run; a mount at /var/run/x lands in the rootfs's
    // /run/x, never on the host's /run.
    let rt = Runtime::new();
    let rootfs = private_rootfs(&["sh", "ls"], &["run", "var"]);
    symlink("/run", rootfs.path().join("var/run")).unwrap();
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("marker"), "").unwrap();
    let bundle = add_mount(
        Bundle::sh("ls /run/x"),
        json!({"destination": "/var/run/x", "type": "bind", "source": host.path(), "options": ["rbind", "ro"]}),
    )
    .edit(|s| s["root"]["path"] = json!(rootfs.path()));
    let out = rt.run_ok(&unique("varrun"), &bundle);
    assert_eq!(out, "marker\n");
    assert!(rootfs.path().join("run/x").is_dir());
    assert!(!std::path::Path::new("/run/x").exists());
}

/// A host directory for an idmapped bind: `root-owned` belongs to 0:0 on disk, `user-owned` to
/// 1000:1000.
fn idmap_source() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("root-owned"), "r").unwrap();
    fs::write(dir.path().join("user-owned"), "u").unwrap();
    std::os::unix::fs::chown(dir.path().join("user-owned"), Some(1000), Some(1000)).unwrap();
    dir
}

#[test]
fn idmapped_bind_with_its_own_mappings() {
    use std::os::unix::fs::MetadataExt;
    let rt = Runtime::new();
    let source = idmap_source();
    // On disk 0..1000 appear as 2000..3000 through the mount, both ways: a file the container's
    // uid 2000 makes is owned by 0 on disk.
    let bundle = add_mount(
        Bundle::sh(
            "stat -c '%n %u %g' /data/root-owned /data/user-owned; \
             ls -ln /proc/self/fd/0 >/dev/null; touch /data/made-inside && echo made",
        )
        .edit(|s| {
            s["process"]["user"] = json!({"uid": 2000, "gid": 2000});
        }),
        json!({"destination": "/data", "type": "bind", "source": source.path(),
               "options": ["rbind", "idmap"],
               "uidMappings": [{"containerID": 0, "hostID": 2000, "size": 1001}],
               "gidMappings": [{"containerID": 0, "hostID": 2000, "size": 1001}]}),
    );
    let out = rt.run_ok(&unique("idmapown"), &bundle);
    assert!(out.contains("/data/root-owned 2000 2000"), "{out}");
    assert!(out.contains("/data/user-owned 3000 3000"), "{out}");
    assert!(out.contains("made"), "{out}");
    let made = fs::metadata(source.path().join("made-inside")).unwrap();
    assert_eq!(
        (made.uid(), made.gid()),
        (0, 0),
        "written through the idmap"
    );
    // The host's view of the source is untouched.
    let host = fs::metadata(source.path().join("user-owned")).unwrap();
    assert_eq!(host.uid(), 1000);
}

#[test]
fn idmap_takes_the_containers_user_namespace() {
    let rt = Runtime::new();
    let source = idmap_source();
    // Mount points made beforehand: root of the container's namespace cannot create them in a
    // rootfs owned by the host's root.
    let rootfs = private_rootfs(&["sh", "stat", "touch"], &["plain", "mapped"]);
    let userns = |b: Bundle| {
        b.edit(|s| {
            s["root"]["path"] = json!(rootfs.path());
            s["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "user"}));
            s["linux"]["uidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            s["linux"]["gidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        })
    };
    let script = "stat -c '%n %u' /plain/root-owned /mapped/root-owned /mapped/user-owned";
    let bundle = add_mount(
        add_mount(
            userns(Bundle::sh(script)),
            json!({"destination": "/plain", "type": "bind", "source": source.path(),
                   "options": ["rbind", "ro"]}),
        ),
        json!({"destination": "/mapped", "type": "bind", "source": source.path(),
               "options": ["rbind", "ridmap", "ro"]}),
    );
    let out = rt.run_ok(&unique("idmapns"), &bundle);
    // Without the idmap, host root is no one in the container; with it, root is root.
    assert!(out.contains("/plain/root-owned 65534"), "{out}");
    assert!(out.contains("/mapped/root-owned 0"), "{out}");
    assert!(out.contains("/mapped/user-owned 1000"), "{out}");

    // The mount's flags are kept.
    let bundle = add_mount(
        userns(Bundle::sh("touch /mapped/x 2>&1; true")),
        json!({"destination": "/mapped", "type": "bind", "source": source.path(),
               "options": ["rbind", "idmap", "ro"]}),
    );
    let out = rt.run_ok(&unique("idmapro"), &bundle);
    assert!(out.contains("Read-only file system"), "{out}");
}

#[test]
fn idmap_mistakes_are_config_errors() {
    let rt = Runtime::new();
    let source = idmap_source();
    for (mount, want) in [
        // No user namespace to take the mapping from.
        (
            json!({"destination": "/d", "type": "bind", "source": source.path(),
                   "options": ["rbind", "idmap"]}),
            "has none",
        ),
        (
            json!({"destination": "/d", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"],
                   "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
                   "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}),
            "bind mounts only",
        ),
        (
            json!({"destination": "/d", "type": "bind", "source": source.path(),
                   "options": ["rbind"],
                   "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}),
            "go together",
        ),
    ] {
        let id = unique("idmapbad");
        let (code, _, err) = rt.run(&id, &add_mount(Bundle::sh("true"), mount));
        assert_ne!(code, 0);
        assert!(err.contains("mounts[") && err.contains(want), "{err}");
        assert!(!rt.root().join(&id).exists());
    }
}
