//! berth-runtime on pure cgroup v2, in the VM harness (this host is hybrid): the tests marked
//! `#[ignore]` below are written for a pure-v2 guest; `runs_in_the_vm` boots Debian's kernel,
//! runs this very test binary inside with `--ignored`, and fails if any of them fails. Run
//! directly on a hybrid host they would test nothing, so they stay ignored there.

use std::path::Path;
use std::time::Duration;

use berth_kernel_tests::harness::{Bundle, Runtime, runtime_binary, unique};
use berth_kernel_tests::vm;
use serde_json::json;

const IN_VM: &str = "runs inside the VM harness (pure cgroup v2); see runs_in_the_vm";

/// Runs from the initramfs root, before the guest moves to a tmpfs (see `runs_in_the_vm`).
const FROM_INITRAMFS: &str = "the_runtime_falls_back_from_an_initramfs_root";

#[test]
fn runs_in_the_vm() {
    let kernel = vm::kernel().expect("Debian kernel package");
    let me = vm::test_binary("vm_pure_cgroup_v2").expect("this test's binary");
    // Every guest test must pass in the guest: count them here.
    let listed = std::process::Command::new(&me)
        .args(["--ignored", "--list", "--format", "terse"])
        .output()
        .expect("list the guest tests");
    let guest_tests = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| l.ends_with(": test") && !l.contains(FROM_INITRAMFS))
        .count();
    assert!(guest_tests > 5, "{listed:?}");
    let mut initramfs = vm::Initramfs::new();
    initramfs.binary(&me).unwrap();
    initramfs
        .file(&runtime_binary(), &runtime_binary())
        .unwrap();
    initramfs.busybox_fixtures().unwrap();
    initramfs.bytes(
        "/berth-early",
        format!(
            "cd /tmp && {} --ignored --exact {FROM_INITRAMFS} --test-threads=1 2>&1\n",
            me.display()
        )
        .as_bytes(),
        0o755,
    );
    let command = format!(
        "cd /tmp && {} --ignored --skip {FROM_INITRAMFS} --test-threads=1 2>&1\n",
        me.display()
    );
    let run = vm::run_in_vm(
        &kernel,
        initramfs,
        &vm::DEVICE_MAPPER_MODULES,
        &command,
        Duration::from_secs(600),
    )
    .expect("run the VM");
    eprintln!(
        "guest ({:?}, kernel {}):\n{}",
        run.took, kernel.version, run.console
    );
    assert!(
        run.console.contains("BERTH-EARLY-EXIT 0")
            && run.console.contains("test result: ok. 1 passed"),
        "the test from the initramfs root failed (console above)"
    );
    assert_eq!(
        run.status,
        Some(0),
        "the guest's tests failed (console above)"
    );
    assert!(
        run.console
            .contains(&format!("test result: ok. {guest_tests} passed")),
        "not all {guest_tests} guest tests passed (console above)"
    );
}

#[test]
#[ignore = "runs inside the VM harness, from its initramfs; see runs_in_the_vm"]
fn the_runtime_falls_back_from_an_initramfs_root() {
    // The guest's / is still the initramfs (rootfs), which pivot_root cannot leave.
    let root = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(root.contains(" - rootfs "), "not on the initramfs: {root}");
    let rt = Runtime::new();
    let (code, out, err) = rt.run(
        &unique("initramfs"),
        &Bundle::sh("echo $$; ls /bin/busybox; cat /proc/self/cgroup"),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "1\n/bin/busybox\n0::/\n");
    assert!(
        err.contains("pivot_root is impossible from an initramfs root"),
        "{err}"
    );
    assert!(rt.leftover_cgroups().is_empty());
}

#[test]
#[ignore = "runs inside the VM harness (pure cgroup v2); see runs_in_the_vm"]
fn the_guest_is_pure_v2_with_device_mapper() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(" /sys/fs/cgroup cgroup2 ")),
        "{mounts}"
    );
    assert!(!mounts.contains(" cgroup "), "no v1 hierarchy: {mounts}");
    assert!(
        Path::new("/sys/module/dm_thin_pool").exists(),
        "dm-thin-pool loaded"
    );
    let _ = IN_VM;
}

#[test]
#[ignore = "runs inside the VM harness (pure cgroup v2); see runs_in_the_vm"]
fn limits_land_in_the_v2_files_and_are_enforced() {
    let rt = Runtime::new();
    let bundle = Bundle::sh(
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max; \
         cat /proc/self/cgroup",
    )
    .edit(|s| {
        s["linux"]["resources"] = json!({
            "memory": {"limit": 67108864},
            "pids": {"limit": 32},
            "cpu": {"quota": 50000, "period": 100000}
        });
    });
    let out = rt.run_ok(&unique("v2limits"), &bundle);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "67108864", "{out}");
    assert_eq!(lines[1], "32", "{out}");
    assert_eq!(lines[2], "50000 100000", "{out}");
    assert_eq!(
        lines[3], "0::/",
        "a cgroup namespace rooted at the container: {out}"
    );

    // The pids limit is enforced.
    let bundle = Bundle::sh("for i in $(seq 1 40); do sleep 5 & done 2>&1; wait").edit(|s| {
        s["linux"]["resources"] = json!({"pids": {"limit": 8}});
    });
    let (_, out, _) = rt.run(&unique("v2pids"), &bundle);
    assert!(
        out.contains("can't fork") || out.contains("Resource temporarily unavailable"),
        "{out}"
    );
    assert!(rt.leftover_cgroups().is_empty());
}

#[test]
#[ignore = "runs inside the VM harness (pure cgroup v2); see runs_in_the_vm"]
fn the_device_filter_is_a_bpf_program_on_v2() {
    let rt = Runtime::new();
    let bundle = Bundle::sh("(head -c1 /dev/kmsg-copy) 2>&1; echo end").edit(|s| {
        s["linux"]["devices"] = json!([{"path": "/dev/kmsg-copy", "type": "c", "major": 1, "minor": 11, "fileMode": 420}]);
        s["linux"]["resources"] = json!({"devices": [{"allow": false, "access": "rwm"}]});
    });
    let out = rt.run_ok(&unique("v2dev"), &bundle);
    assert!(out.contains("Operation not permitted"), "{out}");
}

#[test]
#[ignore = "runs inside the VM harness (pure cgroup v2); see runs_in_the_vm"]
fn pause_freezes_through_cgroup_freeze() {
    let rt = Runtime::new();
    let id = unique("v2pause");
    rt.create(&id, &Bundle::sh("sleep 100"));
    rt.ok(&["start", &id]);
    rt.ok(&["pause", &id]);
    assert_eq!(rt.state(&id)["status"], "paused");
    rt.ok(&["resume", &id]);
    assert_eq!(rt.state(&id)["status"], "running");
    rt.ok(&["delete", "--force", &id]);
    assert!(rt.leftover_cgroups().is_empty());
}

#[test]
#[ignore = "runs inside the VM harness (pure cgroup v2); see runs_in_the_vm"]
fn exec_is_born_in_the_containers_cgroup() {
    let rt = Runtime::new();
    let id = unique("v2exec");
    rt.create(&id, &Bundle::sh("sleep 100"));
    rt.ok(&["start", &id]);
    let own = rt.ok(&["exec", &id, "cat", "/proc/self/cgroup"]);
    let init = rt.ok(&["exec", &id, "cat", "/proc/1/cgroup"]);
    assert_eq!(own, init, "the exec'd process is beside the init");
    assert!(own.starts_with("0::"), "{own}");
    rt.ok(&["delete", "--force", &id]);
    assert!(rt.leftover_cgroups().is_empty());
}

#[test]
#[ignore = "runs inside the VM harness (pure cgroup v2); see runs_in_the_vm"]
fn every_v2_controller_gets_its_values() {
    let rt = Runtime::new();
    // An unbound loop device is a block device io.max accepts.
    let loop_dev = std::fs::read_to_string("/sys/block/loop0/dev").expect("loop0 in the guest");
    let (major, minor) = loop_dev.trim().split_once(':').unwrap();
    let (major, minor): (u64, u64) = (major.parse().unwrap(), minor.parse().unwrap());
    let bundle = Bundle::sh(
        "cd /sys/fs/cgroup; cat cpu.weight cpuset.cpus cpuset.mems memory.max memory.low \
         memory.swap.max memory.high hugetlb.2MB.max; head -1 io.weight; grep rbps io.max",
    )
    .edit(|s| {
        s["linux"]["resources"] = json!({
            "cpu": {"shares": 512, "cpus": "0", "mems": "0"},
            "memory": {"limit": 67108864, "reservation": 33554432, "swap": 134217728},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
            "blockIO": {
                "weight": 500,
                "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}]
            },
            "unified": {"memory.high": "50003968"}
        });
    });
    let out = rt.run_ok(&unique("v2all"), &bundle);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            // cpu.shares 512 on cgroup2's weight scale (1024 -> 39, like runc and crun).
            "20",
            "0",
            "0",
            "67108864",
            "33554432",
            // memory+swap 128 MiB over a 64 MiB limit: 64 MiB of swap alone.
            "67108864",
            "50003968",
            "4194304",
            "default 4950",
            &format!("{major}:{minor} rbps=1048576 wbps=max riops=max wiops=max"),
        ],
        "{out}"
    );

    // The memory limit is enforced: 64 MiB in one buffer under 32 MiB, no swap.
    let bundle = Bundle::sh("dd if=/dev/zero of=/dev/null bs=64M count=1").edit(|s| {
        s["linux"]["resources"] = json!({"memory": {"limit": 33554432, "swap": 33554432}});
    });
    let (code, _, err) = rt.run(&unique("v2oom"), &bundle);
    assert_eq!(code, 128 + 9, "{err}");
    assert!(rt.leftover_cgroups().is_empty());
}
