//! Namespaces, checked from inside the container: new ones (pid, uts, ipc, net, user with id
//! maps, cgroup, time with offsets) and existing ones joined by path.

use std::fs;
use std::process::{Child, Command, Stdio};

use berth_kernel_tests::harness::{Bundle, Runtime, unique};
use serde_json::json;

fn without(bundle: Bundle, kind: &str) -> Bundle {
    let kind = kind.to_string();
    bundle.edit(move |s| {
        s["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != kind.as_str())
    })
}

fn with_ns(bundle: Bundle, ns: serde_json::Value) -> Bundle {
    bundle.edit(move |s| s["linux"]["namespaces"].as_array_mut().unwrap().push(ns))
}

fn host_ns(kind: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn new_namespaces_are_private() {
    let rt = Runtime::new();
    let out = rt.run_ok(
        &unique("ns"),
        &Bundle::sh("echo $$; for n in pid net ipc uts mnt cgroup; do readlink /proc/self/ns/$n; done; ls /sys/class/net"),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "the init is pid 1");
    for (i, kind) in ["pid", "net", "ipc", "uts", "mnt", "cgroup"]
        .into_iter()
        .enumerate()
    {
        assert_ne!(
            lines[i + 1],
            host_ns(kind),
            "{kind} namespace is the host's"
        );
    }
    assert_eq!(lines[7..], ["lo"], "a new network namespace has only lo");
}

#[test]
fn without_a_namespace_the_host_one_is_shared() {
    let rt = Runtime::new();
    let out = rt.run_ok(
        &unique("hostnet"),
        &without(Bundle::sh("readlink /proc/self/ns/net"), "network"),
    );
    assert_eq!(out.trim(), host_ns("net"));
}

#[test]
fn hostname_and_domainname() {
    let rt = Runtime::new();
    let bundle = Bundle::sh("hostname; cat /proc/sys/kernel/domainname").edit(|s| {
        s["hostname"] = "box-1".into();
        s["domainname"] = "example.test".into();
    });
    assert_eq!(rt.run_ok(&unique("uts"), &bundle), "box-1\nexample.test\n");
}

#[test]
fn ipc_namespace_isolates_shared_memory() {
    let rt = Runtime::new();
    // A sysctl of the container's IPC namespace, changed inside, invisible outside.
    let before = fs::read_to_string("/proc/sys/kernel/shmmni").unwrap();
    let bundle = Bundle::sh("cat /proc/sys/kernel/shmmni")
        .edit(|s| s["linux"]["sysctl"] = json!({"kernel.shmmni": "1234"}));
    assert_eq!(rt.run_ok(&unique("ipc"), &bundle), "1234\n");
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/shmmni").unwrap(),
        before
    );
}

#[test]
fn user_namespace_with_mappings() {
    let rt = Runtime::new();
    let bundle = with_ns(
        Bundle::sh("cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; stat -c %u /proc/self/uid_map"),
        json!({"type": "user"}),
    )
    .edit(|s| {
        s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        s["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    });
    let out = rt.run_ok(&unique("userns"), &bundle);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0", "100000", "65536"]);
    assert_eq!(lines[1], ["0", "200000", "65536"]);
    assert_eq!(lines[2], ["0"], "root inside");
    assert_eq!(lines[3], ["0"]);
    // The maps are written before the init runs anything: they belong to its root.
    assert_eq!(lines[4], ["0"], "uid_map owned by the container's root");
}

#[test]
fn user_namespace_process_is_unprivileged_on_the_host() {
    let rt = Runtime::new();
    let id = unique("userns-host");
    let bundle = with_ns(Bundle::sh("sleep 100"), json!({"type": "user"})).edit(|s| {
        s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        s["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    });
    rt.create(&id, &bundle);
    rt.ok(&["start", &id]);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some("100000"),
        "{uid_line}"
    );
}

#[test]
fn cgroup_namespace_roots_the_view_at_the_container() {
    let rt = Runtime::new();
    let out = rt.run_ok(
        &unique("cgns"),
        &Bundle::sh("grep -E '^[0-9]+:memory:' /proc/self/cgroup"),
    );
    assert_eq!(out.trim().rsplit(':').next(), Some("/"), "{out}");
    let out = rt.run_ok(
        &unique("nocgns"),
        &without(Bundle::sh("grep -E ':memory:' /proc/self/cgroup"), "cgroup"),
    );
    assert!(
        out.trim().ends_with(&format!("/{}", rt.cgroup_parent)) || out.contains(&rt.cgroup_parent),
        "{out}"
    );
}

#[test]
fn time_namespace_with_offsets() {
    let rt = Runtime::new();
    let host_uptime: f64 = fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let bundle = with_ns(
        Bundle::sh("cat /proc/uptime; readlink /proc/self/ns/time"),
        json!({"type": "time"}),
    )
    .edit(|s| {
        s["linux"]["timeOffsets"] =
            json!({"boottime": {"secs": 86400, "nanosecs": 0}, "monotonic": {"secs": -5}})
    });
    let out = rt.run_ok(&unique("timens"), &bundle);
    let uptime: f64 = out.split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        uptime - host_uptime > 86000.0,
        "boottime offset applied: {uptime} vs host {host_uptime}"
    );
    assert_ne!(out.lines().nth(1).unwrap(), host_ns("time"));
}

/// A process holding namespaces to join; killed on drop.
struct Holder(Child);

impl Holder {
    /// `unshare ARGS sleep 100`, once the `watch` namespace entry of the unshare process
    /// differs from ours (the namespaces exist).
    fn spawn(args: &[&str], watch: &str) -> Holder {
        let child = Command::new("unshare")
            .args(args)
            .args(["sleep", "100"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let holder = Holder(child);
        let ours = fs::read_link(format!("/proc/self/ns/{watch}")).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while fs::read_link(holder.ns(watch))
            .map(|l| l == ours)
            .unwrap_or(true)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "unshare did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        holder
    }

    fn ns(&self, kind: &str) -> String {
        format!("/proc/{}/ns/{kind}", self.0.id())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn joins_existing_namespaces_by_path() {
    let holder = Holder::spawn(&["--net", "--uts", "--ipc"], "ipc");
    let rt = Runtime::new();
    let mut bundle = Bundle::sh("for n in net uts ipc; do readlink /proc/self/ns/$n; done");
    for (kind, oci) in [("net", "network"), ("uts", "uts"), ("ipc", "ipc")] {
        bundle = without(bundle, oci);
        bundle = with_ns(bundle, json!({"type": oci, "path": holder.ns(kind)}));
    }
    let bundle = bundle.edit(|s| {
        s.as_object_mut()
            .unwrap()
            .remove("hostname")
            .map(drop)
            .unwrap_or(())
    });
    let out = rt.run_ok(&unique("join"), &bundle);
    let want: Vec<String> = ["net", "uts", "ipc"]
        .iter()
        .map(|k| {
            fs::read_link(holder.ns(k))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
}

#[test]
fn joins_mount_cgroup_and_time_namespaces_by_path() {
    // The holder's mount namespace is private (unshare's default): the rootfs the runtime
    // sets up inside it stays there. A time namespace is joined through the holder's
    // time_for_children (unshare itself stays in ours).
    let holder = Holder::spawn(&["--mount", "--cgroup", "--time"], "mnt");
    let rt = Runtime::new();
    let kinds = [
        ("mnt", "mount", "mnt"),
        ("cgroup", "cgroup", "cgroup"),
        ("time", "time", "time_for_children"),
    ];
    let mut bundle =
        Bundle::sh("for n in mnt cgroup time; do readlink /proc/self/ns/$n; done; ls /bin/busybox");
    for (_, oci, entry) in kinds {
        bundle = without(bundle, oci);
        bundle = with_ns(bundle, json!({"type": oci, "path": holder.ns(entry)}));
    }
    let out = rt.run_ok(&unique("joinmnt"), &bundle);
    let mut want: Vec<String> = kinds
        .iter()
        .map(|(_, _, entry)| {
            fs::read_link(holder.ns(entry))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for ((kind, _, _), w) in kinds.iter().zip(&want) {
        assert_ne!(w, &host_ns(kind), "{kind} is the host's");
    }
    want.push("/bin/busybox".into());
    assert_eq!(out.lines().collect::<Vec<_>>(), want, "{out}");
    // Nothing of the container reached the host's mount table.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("joinmnt"), "{mounts}");

    // No mount namespace at all (the host's) is refused, naming the field.
    let bundle = without(Bundle::sh("true"), "mount");
    let (code, _, err) = rt.run(&unique("nomnt"), &bundle);
    assert_ne!(code, 0);
    assert!(
        err.contains("linux.namespaces") && err.contains("mount namespace of its own"),
        "{err}"
    );
    assert!(rt.leftover_cgroups().is_empty());
}

#[test]
fn joins_an_existing_pid_namespace() {
    // unshare --fork: its child (sleep) is pid 1 of the new namespace; --kill-child takes it
    // down with the holder.
    let holder = Holder::spawn(&["--pid", "--fork", "--kill-child"], "pid_for_children");
    let rt = Runtime::new();
    let target = holder.ns("pid_for_children");
    let bundle = with_ns(
        without(Bundle::sh("readlink /proc/self/ns/pid; echo $$"), "pid"),
        json!({"type": "pid", "path": target}),
    );
    let out = rt.run_ok(&unique("joinpid"), &bundle);
    let mut lines = out.lines();
    let ns = lines.next().unwrap();
    let pid: u32 = lines.next().unwrap().parse().unwrap();
    assert_eq!(ns, fs::read_link(&target).unwrap().to_string_lossy());
    assert!(
        pid > 1,
        "joined an existing pid namespace where pid 1 is taken: {pid}"
    );
}

#[test]
fn joins_a_user_namespace_while_creating_others() {
    // The intermediate-process path: enter a user namespace by path and create new mount,
    // pid and uts namespaces owned by it.
    let holder = Holder::spawn(&["--user", "--map-root-user"], "user");
    let rt = Runtime::new();
    let bundle = with_ns(
        Bundle::sh("cat /proc/self/uid_map; readlink /proc/self/ns/user; echo $$"),
        json!({"type": "user", "path": holder.ns("user")}),
    )
    .edit(|s| {
        s["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "cgroup");
        s["linux"]["resources"] = json!(null);
        // Only uid/gid 0 is mapped: devpts cannot use gid 5 (runc's rootless spec agrees).
        for m in s["mounts"].as_array_mut().unwrap() {
            if m["type"] == "devpts" {
                m["options"] = json!([
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620"
                ]);
            }
        }
    });
    let out = rt.run_ok(&unique("joinuser"), &bundle);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "1"]
    );
    assert_eq!(
        lines[1],
        fs::read_link(holder.ns("user")).unwrap().to_string_lossy()
    );
    assert_eq!(
        lines[2], "1",
        "a new pid namespace inside the joined user namespace"
    );
}

#[test]
fn joining_a_namespace_of_the_wrong_type_is_an_error() {
    let rt = Runtime::new();
    let id = unique("wrongns");
    let bundle = with_ns(
        without(Bundle::sh("true"), "network"),
        json!({"type": "network", "path": "/proc/self/ns/uts"}),
    );
    let dir = rt.prepare(&id, &bundle);
    let err = rt.fails(&["run".as_ref(), "-b".as_ref(), dir.as_os_str(), id.as_ref()]);
    assert!(
        err.contains("linux.namespaces[") && err.contains("is not a net namespace"),
        "{err}"
    );
    assert!(!rt.root().join(&id).exists());
}
