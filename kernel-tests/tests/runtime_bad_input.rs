//! Bad configs get a clear error naming the field, and leave nothing behind: no process, no
//! mount, no cgroup, no state directory.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use berth_kernel_tests::harness::{Bundle, Runtime, unique};
use serde_json::json;

/// Runs `create` on a config that must be refused; returns stderr after checking that nothing
/// of the container exists.
fn refused(rt: &Runtime, id: &str, write: impl FnOnce(&Path)) -> String {
    let bundle = Bundle::sh("true");
    let dir = rt.prepare(id, &bundle);
    write(&dir);
    let before = mount_points();
    let err = rt.fails(&[
        "create".as_ref(),
        "--bundle".as_ref(),
        dir.as_os_str(),
        id.as_ref(),
    ]);
    assert!(
        !rt.root().join(id).exists(),
        "state directory left behind for {id}"
    );
    assert!(
        rt.leftover_cgroups().is_empty(),
        "cgroup left behind for {id}: {:?}",
        rt.leftover_cgroups()
    );
    for entry in fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline);
            assert!(
                !text.contains(id) || entry.file_name() == "self",
                "process left behind: {text}"
            );
        }
    }
    // No test in this file mounts anything on the host, so any new mount point is a leak
    // (the bundle's, or a rootfs of the test's own elsewhere).
    let left: Vec<String> = mount_points()
        .into_iter()
        .filter(|m| !before.contains(m))
        .collect();
    assert!(left.is_empty(), "mounts left behind by {id}: {left:?}");
    err
}

fn mount_points() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    f(&mut v);
    fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn malformed_json() {
    let rt = Runtime::new();
    let err = refused(&rt, &unique("badjson"), |d| {
        fs::write(
            d.join("config.json"),
            "{\"ociVersion\": \"1.2.1\", \"process\": {",
        )
        .unwrap()
    });
    assert!(
        err.contains("config.json") && err.contains("EOF while parsing"),
        "{err}"
    );
}

#[test]
fn wrong_type_names_the_field() {
    let rt = Runtime::new();
    let err = refused(&rt, &unique("badtype"), |d| {
        edit_config(d, |s| s["process"]["user"]["uid"] = "root".into())
    });
    assert!(err.contains("process.user.uid"), "{err}");
}

#[test]
fn missing_rootfs() {
    let rt = Runtime::new();
    let err = refused(&rt, &unique("norootfs"), |d| {
        edit_config(d, |s| s["root"]["path"] = "/nonexistent/rootfs".into())
    });
    assert!(
        err.contains("root.path") && err.contains("/nonexistent/rootfs"),
        "{err}"
    );
}

#[test]
fn unknown_namespace() {
    let rt = Runtime::new();
    let err = refused(&rt, &unique("badns"), |d| {
        edit_config(d, |s| {
            s["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "bogus"}))
        })
    });
    assert!(
        err.contains("linux.namespaces[6].type") && err.contains("bogus"),
        "{err}"
    );
}

#[test]
fn mount_onto_a_symlink_leading_out_of_the_rootfs() {
    let rt = Runtime::new();
    let id = unique("escape");
    let rootfs = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let busybox = &berth_kernel_tests::fixtures::busybox().rootfs;
    for d in ["proc", "sys", "dev", "bin", "etc"] {
        fs::create_dir_all(rootfs.path().join(d)).unwrap();
    }
    fs::copy(busybox.join("bin/busybox"), rootfs.path().join("bin/sh")).unwrap();
    // Enough ".." to climb out of any rootfs, then into a host directory.
    let climb = "../".repeat(20) + outside.path().to_str().unwrap().trim_start_matches('/');
    symlink(&climb, rootfs.path().join("etc/escape")).unwrap();
    let host = tempfile::tempdir().unwrap();
    let err = refused(&rt, &id, |d| {
        edit_config(d, |s| {
            s["root"]["path"] = json!(rootfs.path());
            s["mounts"].as_array_mut().unwrap().push(json!({
                "destination": "/etc/escape/pwned", "type": "bind", "source": host.path(), "options": ["rbind"]
            }));
        })
    });
    assert!(
        err.contains("mounts[7]") && err.contains("leads out of the rootfs"),
        "{err}"
    );
    assert!(
        !outside.path().join("pwned").exists(),
        "created something outside the rootfs"
    );
}

#[test]
fn proc_onto_a_symlink_is_refused() {
    let rt = Runtime::new();
    let rootfs = tempfile::tempdir().unwrap();
    let busybox = &berth_kernel_tests::fixtures::busybox().rootfs;
    for d in ["sys", "dev", "bin", "etc"] {
        fs::create_dir_all(rootfs.path().join(d)).unwrap();
    }
    fs::copy(busybox.join("bin/busybox"), rootfs.path().join("bin/sh")).unwrap();
    symlink("/etc", rootfs.path().join("proc")).unwrap();
    let err = refused(&rt, &unique("procsym"), |d| {
        edit_config(d, |s| s["root"]["path"] = json!(rootfs.path()))
    });
    assert!(
        err.contains("mounts[0]") && err.contains("symlink"),
        "{err}"
    );
}

#[test]
fn missing_bind_source() {
    let rt = Runtime::new();
    let err = refused(&rt, &unique("nosrc"), |d| {
        edit_config(d, |s| {
            s["mounts"].as_array_mut().unwrap().push(json!({"destination": "/mnt/x", "type": "bind", "source": "/nonexistent/src", "options": ["rbind"]}))
        })
    });
    assert!(
        err.contains("mounts[7]") && err.contains("/nonexistent/src"),
        "{err}"
    );
}

#[test]
fn process_checks() {
    let rt = Runtime::new();
    let err = refused(&rt, &unique("noargs"), |d| {
        edit_config(d, |s| s["process"]["args"] = json!([]))
    });
    assert!(err.contains("process.args"), "{err}");
    let err = refused(&rt, &unique("relcwd"), |d| {
        edit_config(d, |s| s["process"]["cwd"] = "tmp".into())
    });
    assert!(err.contains("process.cwd"), "{err}");
    let err = refused(&rt, &unique("noproc"), |d| {
        edit_config(d, |s| {
            s.as_object_mut().unwrap().remove("process");
        })
    });
    assert!(err.contains("process"), "{err}");
    let err = refused(&rt, &unique("noexe"), |d| {
        edit_config(d, |s| {
            s["process"]["args"] = json!(["/bin/no-such-program"])
        })
    });
    assert!(err.contains("no-such-program"), "{err}");
}

#[test]
fn device_and_resource_checks() {
    let rt = Runtime::new();
    let err = refused(&rt, &unique("baddev"), |d| {
        edit_config(d, |s| {
            s["linux"]["devices"] = json!([{"path": "dev/x", "type": "c", "major": 1, "minor": 3}])
        })
    });
    assert!(err.contains("linux.devices[0].path"), "{err}");
    let err = refused(&rt, &unique("badrule"), |d| {
        edit_config(d, |s| {
            s["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwx"}])
        })
    });
    assert!(err.contains("linux.resources.devices[0].access"), "{err}");
    let err = refused(&rt, &unique("badmem"), |d| {
        edit_config(d, |s| {
            s["linux"]["resources"]["memory"] = json!({"limit": 1048576, "swappiness": 200})
        })
    });
    assert!(err.contains("swappiness"), "{err}");
    let err = refused(&rt, &unique("badsysctl"), |d| {
        edit_config(d, |s| s["linux"]["sysctl"] = json!({"kernel.panic": "1"}))
    });
    assert!(
        err.contains("kernel.panic") && err.contains("host"),
        "{err}"
    );
}

#[test]
fn systemd_cgroup_is_a_clear_error() {
    let rt = Runtime::new();
    let id = unique("systemd");
    let bundle = Bundle::sh("true");
    let dir = rt.prepare(&id, &bundle);
    let err = rt.fails(&[
        "--systemd-cgroup".as_ref(),
        "create".as_ref(),
        "--bundle".as_ref(),
        dir.as_os_str(),
        id.as_ref(),
    ]);
    assert!(err.contains("--systemd-cgroup"), "{err}");
    assert!(!rt.root().join(&id).exists());
}
