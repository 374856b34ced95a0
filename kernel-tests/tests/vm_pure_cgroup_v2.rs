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

#[test]
fn runs_in_the_vm() {
    let kernel = vm::kernel().expect("Debian kernel package");
    let me = vm::test_binary("vm_pure_cgroup_v2").expect("this test's binary");
    let mut initramfs = vm::Initramfs::new();
    initramfs.binary(&me).unwrap();
    initramfs
        .file(&runtime_binary(), &runtime_binary())
        .unwrap();
    initramfs.busybox_fixtures().unwrap();
    let command = format!(
        "cd /tmp && {} --ignored --test-threads=1 2>&1\n",
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
    assert_eq!(
        run.status,
        Some(0),
        "the guest's tests failed (console above)"
    );
    assert!(
        run.console.contains("test result: ok"),
        "no test summary from the guest"
    );
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
