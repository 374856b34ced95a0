//! What the runtime-spec 1.2 features cost at start: `berth-runtime run` of /bin/true with an
//! idmapped bind (the mount's own mappings, and the container's user namespace), with a veth
//! moved in through `linux.netDevices`, and rootless (an unprivileged user, newuidmap), each
//! beside the same container without the feature, in the same run.
//! Run `cargo build --release -p berth-runtime` first: this measures that binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_kernel_tests::test_netns::TestNetns;
use berth_kernel_tests::test_user::TestUser;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

/// The release berth-runtime beside this bench (target/<triple>/release), or $BERTH_RUNTIME.
fn runtime_binary() -> PathBuf {
    berth_kernel_tests::harness::runtime_binary()
}

/// A bundle running /bin/true in busybox; `edit` adds the feature.
fn bundle(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let mut spec = berth_runtime::spec_template::default_spec(false, 0, 0);
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(["/bin/true"]);
    spec["root"]["path"] = json!(berth_kernel_tests::fixtures::busybox().rootfs);
    spec["linux"]["cgroupsPath"] = json!(format!("/berth-bench-features-{}", std::process::id()));
    edit(&mut spec);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    dir.to_path_buf()
}

fn run(bin: &Path, root: &Path, bundle: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("--root")
        .arg(root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg("bench")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

fn ok(mut c: Command) {
    let out = c.stderr(Stdio::piped()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn features(c: &mut Criterion) {
    let bin = runtime_binary();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("state");
    let source = work.path().join("volume");
    std::fs::create_dir_all(&source).unwrap();
    let userns = |s: &mut Value| {
        s["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        s["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    };
    let mount = |options: Value, mappings: bool| {
        let mut m = json!({"destination": "/mnt", "type": "bind", "source": source,
                           "options": options});
        if mappings {
            m["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1000}]);
            m["gidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1000}]);
        }
        m
    };
    let plain = bundle(&work.path().join("plain"), |s| {
        s["mounts"]
            .as_array_mut()
            .unwrap()
            .push(mount(json!(["rbind"]), false));
    });
    let own_maps = bundle(&work.path().join("idmap-own"), |s| {
        s["mounts"]
            .as_array_mut()
            .unwrap()
            .push(mount(json!(["rbind", "idmap"]), true));
    });
    let plain_userns = bundle(&work.path().join("userns"), |s| {
        userns(s);
        s["mounts"]
            .as_array_mut()
            .unwrap()
            .push(mount(json!(["rbind"]), false));
    });
    let userns_idmap = bundle(&work.path().join("userns-idmap"), |s| {
        userns(s);
        s["mounts"]
            .as_array_mut()
            .unwrap()
            .push(mount(json!(["rbind", "idmap"]), false));
    });

    let mut g = c.benchmark_group("features");
    for (name, b) in [
        ("run, bind", &plain),
        ("run, idmapped bind (own mappings)", &own_maps),
        ("run, userns + bind", &plain_userns),
        ("run, userns + idmapped bind", &userns_idmap),
    ] {
        g.bench_function(name, |bench| bench.iter(|| ok(run(&bin, &root, b))));
    }

    // netDevices: a fresh veth pair per run (made outside the measurement), the runtime in a
    // network namespace of the bench's own.
    let ns = TestNetns::create();
    let base = bundle(&work.path().join("netbase"), |_| {});
    g.bench_function("run in a netns, no device", |bench| {
        bench.iter(|| {
            let mut cmd = run(&bin, &root, &base);
            let _ns = ns.enter_on_spawn(&mut cmd);
            ok(cmd)
        })
    });
    // Names of their own each time: the kernel destroys a moved veth pair asynchronously
    // once the container's namespace is gone.
    let mut n = 0u32;
    g.bench_function("run in a netns, a veth moved in", |bench| {
        bench.iter_batched(
            || {
                n += 1;
                let (dev, peer) = (format!("bnb{n}"), format!("bnp{n}"));
                ns.ip(&["link", "add", &dev, "type", "veth", "peer", "name", &peer]);
                bundle(&work.path().join("netdev"), |s| {
                    s["linux"]["netDevices"] = json!({dev: {"name": "eth1"}});
                })
            },
            |netdev| {
                let mut cmd = run(&bin, &root, &netdev);
                let _ns = ns.enter_on_spawn(&mut cmd);
                ok(cmd);
            },
            BatchSize::PerIteration,
        );
    });
    // The kernel's share: the same move and rename by `ip`, into a namespace made beforehand.
    let target = TestNetns::create();
    g.bench_function("ip link set netns (the move alone)", |bench| {
        bench.iter_batched(
            || {
                n += 1;
                let (dev, peer) = (format!("bnb{n}"), format!("bnp{n}"));
                ns.ip(&["link", "add", &dev, "type", "veth", "peer", "name", &peer]);
                dev
            },
            |dev| {
                ns.ip(&[
                    "link",
                    "set",
                    "dev",
                    &dev,
                    "netns",
                    &target.name,
                    "name",
                    &dev,
                ]);
            },
            BatchSize::PerIteration,
        );
    });
    drop(target);
    drop(ns);

    // Rootless: the same container as root and as an unprivileged user (no cgroup, a user
    // namespace mapped through newuidmap).
    let user = TestUser::create();
    let xdg = user.dir();
    let wide = |s: &mut Value| {
        s["process"]["args"] = json!(["/bin/true"]);
        user.map_subordinate_ids(s);
    };
    let rootless = user.bundle("true", wide);
    let as_root = bundle(&work.path().join("rootless-as-root"), |s| {
        *s = berth_runtime::spec_template::default_spec(true, 0, 0);
        s["process"]["terminal"] = json!(false);
        s["process"]["args"] = json!(["/bin/true"]);
        s["root"]["path"] = json!(berth_kernel_tests::fixtures::busybox().rootfs);
        s["linux"]["cgroupsPath"] = json!(format!("/berth-bench-features-{}", std::process::id()));
        s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        s["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    });
    g.bench_function("run, rootless config as root", |bench| {
        bench.iter(|| ok(run(&bin, &root, &as_root)))
    });
    let rootless_path = rootless.path().to_str().unwrap().to_string();
    g.bench_function("run, rootless as a user (newuidmap)", |bench| {
        bench.iter(|| {
            let out = user.runtime(xdg.path(), &["run", "--bundle", &rootless_path, "bench"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
    });
    g.finish();
    drop(user);

    for m in berth_kernel_tests::harness::cgroup_mounts() {
        let _ = std::fs::remove_dir(m.join(format!("berth-bench-features-{}", std::process::id())));
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = features
}
criterion_main!(benches);
