//! cgroup limits on this host's hybrid layout (v1 controllers, hugetlb on cgroup2), read back
//! from inside the container and enforced; the v2 device filter on the cgroup2 hierarchy; the
//! cleanup on delete. Pure v2 runs in the VM harness.

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_kernel_tests::harness::{Bundle, Runtime, unique};
use berth_runtime::cgroups::{DeviceFilter, DeviceRule, Layout, Mode};
use serde_json::json;

fn with_resources(bundle: Bundle, resources: serde_json::Value) -> Bundle {
    bundle.edit(move |s| {
        let r = s["linux"]["resources"].as_object_mut().unwrap();
        for (k, v) in resources.as_object().unwrap() {
            r.insert(k.clone(), v.clone());
        }
    })
}

#[test]
fn this_host_is_hybrid() {
    // The tests below are written for this layout; the VM harness covers pure v2.
    let layout = Layout::detect().unwrap();
    assert_eq!(layout.mode(), Mode::Hybrid, "{layout:?}");
}

#[test]
fn memory_limits_are_set_and_enforced() {
    let rt = Runtime::new();
    let bundle = with_resources(
        Bundle::sh(
            "cd /sys/fs/cgroup/memory; cat memory.limit_in_bytes memory.soft_limit_in_bytes memory.memsw.limit_in_bytes memory.swappiness",
        ),
        json!({"memory": {"limit": 67108864, "reservation": 33554432, "swap": 67108864, "swappiness": 10}}),
    );
    assert_eq!(
        rt.run_ok(&unique("mem"), &bundle),
        "67108864\n33554432\n67108864\n10\n"
    );

    // 64 MiB in one buffer does not fit under a 32 MiB limit (no swap): the kernel kills it.
    let bundle = with_resources(
        Bundle::sh("dd if=/dev/zero of=/dev/null bs=64M count=1"),
        json!({"memory": {"limit": 33554432, "swap": 33554432}}),
    );
    let (code, _, err) = rt.run(&unique("oom"), &bundle);
    assert_eq!(code, 128 + libc::SIGKILL, "{err}");
}

#[test]
fn cpu_and_cpuset() {
    let rt = Runtime::new();
    let bundle = with_resources(
        Bundle::sh(
            "cat /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_period_us /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpuset/cpuset.cpus; grep Cpus_allowed_list /proc/self/status",
        ),
        json!({"cpu": {"shares": 512, "quota": 50000, "period": 200000, "cpus": "0", "mems": "0"}}),
    );
    let out = rt.run_ok(&unique("cpu"), &bundle);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..4], ["512", "200000", "50000", "0"]);
    assert!(lines[4].ends_with("\t0"), "{out}");
}

#[test]
fn pids_limit_is_enforced() {
    let rt = Runtime::new();
    let bundle = with_resources(
        Bundle::sh(
            "cat /sys/fs/cgroup/pids/pids.max; for i in 1 2 3 4 5 6 7 8; do sleep 5 & done 2>&1; wait",
        ),
        json!({"pids": {"limit": 4}}),
    );
    let (_, out, _) = rt.run(&unique("pids"), &bundle);
    assert!(out.starts_with("4\n"), "{out}");
    assert!(
        out.contains("can't fork") || out.contains("Resource temporarily unavailable"),
        "{out}"
    );
}

#[test]
fn blkio_throttle_and_weight() {
    let rt = Runtime::new();
    let dev = fs::metadata("/dev/vda").map(|m| {
        use std::os::unix::fs::MetadataExt;
        (libc::major(m.rdev()), libc::minor(m.rdev()))
    });
    let (major, minor) = dev.expect("this host's disk is /dev/vda");
    let bundle = with_resources(
        Bundle::sh(
            "cat /sys/fs/cgroup/blkio/blkio.throttle.read_bps_device /sys/fs/cgroup/blkio/blkio.throttle.write_iops_device",
        ),
        json!({"blockIO": {
            "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
            "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}]
        }}),
    );
    assert_eq!(
        rt.run_ok(&unique("blkio"), &bundle),
        format!("{major}:{minor} 1048576\n{major}:{minor} 100\n")
    );

    // CFQ's blkio.weight is gone from current kernels; BFQ's weight file takes the value.
    let bundle = with_resources(
        Bundle::sh("cat /sys/fs/cgroup/blkio/blkio.bfq.weight"),
        json!({"blockIO": {"weight": 500}}),
    );
    assert_eq!(
        rt.run_ok(&unique("blkw"), &bundle)
            .split_whitespace()
            .last(),
        Some("500")
    );
}

#[test]
fn hugetlb_limit_lands_on_cgroup2_in_hybrid_mode() {
    let rt = Runtime::new();
    let bundle = with_resources(
        Bundle::sh("cat /sys/fs/cgroup/unified/hugetlb.2MB.max"),
        json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]}),
    );
    assert_eq!(rt.run_ok(&unique("huge"), &bundle), "4194304\n");
}

#[test]
fn unified_keys_for_cgroup2_controllers_only() {
    let rt = Runtime::new();
    let bundle = with_resources(
        Bundle::sh("cat /sys/fs/cgroup/unified/hugetlb.1GB.max"),
        json!({"unified": {"hugetlb.1GB.max": "0"}}),
    );
    assert_eq!(rt.run_ok(&unique("unified"), &bundle), "0\n");
    let bundle = with_resources(
        Bundle::sh("true"),
        json!({"unified": {"memory.high": "1000000"}}),
    );
    let (code, _, err) = rt.run(&unique("unified-bad"), &bundle);
    assert_ne!(code, 0);
    assert!(
        err.contains("memory controller is not available on cgroup2"),
        "{err}"
    );
}

#[test]
fn device_rules_on_v1_are_enforced() {
    let rt = Runtime::new();
    // The node exists (linux.devices) but the cgroup denies it: opening fails.
    let bundle = Bundle::sh("cat /sys/fs/cgroup/devices/devices.list; (head -c1 /dev/kmsg-copy) 2>&1; (echo x > /dev/null) && echo null-ok").edit(|s| {
        s["linux"]["devices"] = json!([{"path": "/dev/kmsg-copy", "type": "c", "major": 1, "minor": 11, "fileMode": 420}]);
    });
    let out = rt.run_ok(&unique("devices"), &bundle);
    assert!(out.contains("c 1:3 rwm"), "{out}");
    assert!(!out.contains("a *:* rwm"), "deny-all applied first: {out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("null-ok"), "{out}");
}

/// A cgroup2 directory of our own, removed on drop.
struct UnifiedCgroup(PathBuf);

impl Drop for UnifiedCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

#[test]
fn device_filter_bpf_program_is_enforced_on_cgroup2() {
    // cgroup2 has no devices controller: access is decided by the BPF program the runtime
    // generates. The program works on any cgroup2 hierarchy, this hybrid host's included.
    let layout = Layout::detect().unwrap();
    let unified = layout.unified.as_ref().expect("a cgroup2 mount");
    let dir = UnifiedCgroup(unified.mountpoint.join(unique("berth-devfilter")));
    fs::create_dir(&dir.0).unwrap();
    let spec_rules: Vec<oci_rule::Rule> = vec![oci_rule::deny_all()];
    let rules = DeviceRule::effective(&spec_rules).unwrap();
    DeviceFilter::compile(&rules)
        .load()
        .unwrap()
        .attach(&dir.0)
        .unwrap();

    let procs = dir.0.join("cgroup.procs");
    let probe = |path: &str, inside: bool| -> bool {
        let procs = procs.clone();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("exec 3<{path}")]);
        if inside {
            // SAFETY: only open/write between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    // Join the cgroup before exec, so the probe runs under the filter.
                    fs::OpenOptions::new()
                        .write(true)
                        .open(&procs)?
                        .write_all(b"0")
                });
            }
        }
        cmd.status().unwrap().success()
    };
    assert!(
        probe("/dev/kmsg", false),
        "precondition: /dev/kmsg opens outside the cgroup"
    );
    assert!(probe("/dev/null", true), "/dev/null is always allowed");
    assert!(probe("/dev/zero", true));
    assert!(
        !probe("/dev/kmsg", true),
        "/dev/kmsg (1:11) is not in the allow list"
    );
}

/// Builds OCI device cgroup rules for the test without spelling the builder at each use.
mod oci_rule {
    pub type Rule = oci_spec::runtime::LinuxDeviceCgroup;
    pub fn deny_all() -> Rule {
        serde_json::from_value(serde_json::json!({"allow": false, "access": "rwm"})).unwrap()
    }
}

#[test]
fn relative_cgroups_path_is_under_the_runtimes_own_cgroup() {
    let rt = Runtime::new();
    let id = unique("relcg");
    let relative = format!("{}/c", unique("berth-rel"));
    let bundle = Bundle::sh("sleep 100").edit(|s| s["linux"]["cgroupsPath"] = json!(relative));
    rt.create(&id, &bundle);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let memory_path = |text: &str| {
        text.lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
            .unwrap()
    };
    let theirs = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(
        memory_path(&theirs),
        format!("{}/{relative}", memory_path(&own).trim_end_matches('/'))
    );
    let planned =
        berth_runtime::cgroups::Cgroup::plan(&Layout::detect().unwrap(), Path::new(&relative));
    rt.ok(&["delete", "--force", &id]);
    for d in &planned.dirs {
        assert!(!d.path.exists(), "{} left behind", d.path.display());
        let _ = fs::remove_dir(d.path.parent().unwrap());
    }
}

/// The cgroup path of `pid` in the hierarchy of `dir`, from /proc/PID/cgroup.
fn cgroup_of(pid: i64, dir: &berth_runtime::cgroups::CgroupDir) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let subsystems = dir.subsystems.join(",");
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let this = if dir.unified {
            controllers.is_empty()
        } else {
            controllers == subsystems
        };
        this.then(|| path.to_string())
    })
}

#[test]
fn a_created_init_is_in_its_cgroup_in_every_hierarchy() {
    // As root the v1 directories are made while the init sets up its mounts, and it moves
    // itself in before its cgroup mount or, without one, right after its mounts: by the end
    // of `create` it must be in every one of them.
    let rt = Runtime::new();
    for cgroup_mount in [true, false] {
        let id = unique("cgall");
        let path = format!("/{}/c", unique("berth-cgall"));
        let bundle = with_resources(
            Bundle::sh("sleep 100").edit(|s| {
                s["linux"]["cgroupsPath"] = json!(path);
                if !cgroup_mount {
                    s["mounts"]
                        .as_array_mut()
                        .unwrap()
                        .retain(|m| m["type"] != "cgroup" && m["type"] != "cgroup2");
                }
            }),
            json!({"memory": {"limit": 67108864}, "pids": {"limit": 64}}),
        );
        // Traced, to see that this path was taken: the runtime hands the tasks files over
        // after the clone and the init moves itself.
        let dir = rt.prepare(&id, &bundle);
        let mut create = rt.command(&[
            "create".as_ref(),
            "--bundle".as_ref(),
            dir.as_os_str(),
            id.as_ref(),
        ]);
        create.env("BERTH_RUNTIME_TRACE", "1");
        let out = berth_kernel_tests::harness::output_through_files(create);
        let trace = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{trace}");
        let at = |mark: &str| {
            trace
                .lines()
                .position(|l| l.ends_with(mark))
                .unwrap_or_else(|| panic!("no {mark:?} in {trace}"))
        };
        assert!(
            at("create: cloned") < at("create: v1 cgroups made"),
            "{trace}"
        );
        at("init: moved itself into its v1 cgroups");

        let pid = rt.state(&id)["pid"].as_i64().unwrap();
        let planned =
            berth_runtime::cgroups::Cgroup::plan(&Layout::detect().unwrap(), Path::new(&path));
        assert!(
            planned.dirs.len() > 2,
            "v1 hierarchies and cgroup2: {planned:?}"
        );
        for d in &planned.dirs {
            assert_eq!(
                cgroup_of(pid, d).as_deref(),
                Some(d.hierarchy_path.to_str().unwrap()),
                "cgroup mount {cgroup_mount}: {} ({:?})",
                d.path.display(),
                d.subsystems
            );
        }
        let memory = planned.dir_for("memory").unwrap();
        assert_eq!(
            fs::read_to_string(memory.path.join("memory.limit_in_bytes"))
                .unwrap()
                .trim(),
            "67108864"
        );
        rt.ok(&["delete", "--force", &id]);
        for d in &planned.dirs {
            assert!(!d.path.exists(), "{} left behind", d.path.display());
            let _ = fs::remove_dir(d.path.parent().unwrap());
        }
    }
}

#[test]
fn a_busy_v1_cgroup_is_refused_after_the_clone_without_leftovers() {
    // A process of someone else's sits in the memory directory the config names: the v1 part,
    // made after the clone, refuses it; the init is killed and what the runtime made is gone.
    let rt = Runtime::new();
    let id = unique("cgbusy1");
    let path = format!("/{}/c", unique("berth-cgbusy"));
    let planned =
        berth_runtime::cgroups::Cgroup::plan(&Layout::detect().unwrap(), Path::new(&path));
    let memory = planned.dir_for("memory").unwrap().path.clone();
    fs::create_dir_all(memory.join("theirs")).unwrap();
    let mut squatter = Command::new("sleep").arg("100").spawn().unwrap();
    fs::write(memory.join("cgroup.procs"), squatter.id().to_string()).unwrap();

    let bundle = Bundle::sh("true").edit(|s| s["linux"]["cgroupsPath"] = json!(path));
    let (code, _, err) = rt.run(&id, &bundle);
    assert_ne!(code, 0);
    assert!(err.contains("already holds processes"), "{err}");
    assert!(!rt.root().join(&id).exists(), "state directory left behind");
    for d in planned.dirs.iter().filter(|d| d.path != memory) {
        assert!(!d.path.exists(), "{} left behind", d.path.display());
    }
    assert_eq!(
        fs::read_to_string(memory.join("cgroup.procs"))
            .unwrap()
            .trim(),
        squatter.id().to_string(),
        "the squatter's cgroup is not ours to touch, and no init of ours is left in it"
    );
    assert!(
        memory.join("theirs").is_dir(),
        "a cgroup below the squatter's was removed"
    );

    squatter.kill().unwrap();
    squatter.wait().unwrap();
    let top = |d: &Path| d.parent().unwrap().to_path_buf();
    fs::remove_dir(memory.join("theirs")).unwrap();
    // The killed squatter leaves its cgroup asynchronously.
    for _ in 0..400 {
        if fs::remove_dir(&memory).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for d in &planned.dirs {
        let _ = fs::remove_dir(top(&d.path));
    }
}
