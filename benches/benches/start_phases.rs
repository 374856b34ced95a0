//! One criterion bench per phase of a container start, so a regression shows up where it is.
//!
//! In-process phases (no container): reading and checking the config, finding the cgroup
//! hierarchies, making and removing a container's cgroups, compiling the cgroup2 device
//! filter. Phases inside a real start are timed from `berth-runtime run` itself: with
//! `BERTH_RUNTIME_TRACE` set, the runtime and the init print monotonic marks, and each bench
//! reports the time between two of them.
//! Run `cargo build --release -p berth-runtime` first.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_runtime::cgroups::{Cgroup, DeviceFilter, DeviceRule, Layout};
use criterion::{Criterion, criterion_group, criterion_main};

fn in_process(c: &mut Criterion) {
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    berth_benches::write_start_bundle(&bundle, "/berth-bench-phases/x").unwrap();

    c.bench_function("phase/config load and check", |b| {
        b.iter(|| {
            let bundle = berth_runtime::bundle::Bundle::load(&bundle).unwrap();
            berth_runtime::bundle::check(&bundle.spec).unwrap();
        })
    });
    c.bench_function("phase/cgroup layout", |b| {
        b.iter(|| Layout::detect().unwrap())
    });
    let layout = Layout::detect().unwrap();
    let parent = format!("berth-bench-phases-{}", std::process::id());
    let path = PathBuf::from(format!("/{parent}/c"));
    let spec = berth_runtime::bundle::load_spec(&bundle.join("config.json")).unwrap();
    let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
    c.bench_function("phase/cgroup create and remove", |b| {
        b.iter(|| {
            let cg = Cgroup::plan(&layout, &path);
            cg.create(resources.as_ref()).unwrap();
            cg.remove().unwrap();
        })
    });
    for h in &layout.v1 {
        let _ = std::fs::remove_dir(h.mountpoint.join(&parent));
    }
    if let Some(u) = &layout.unified {
        let _ = std::fs::remove_dir(u.mountpoint.join(&parent));
    }
    let rules = DeviceRule::effective(&[]).unwrap();
    c.bench_function("phase/device filter compile", |b| {
        b.iter(|| DeviceFilter::compile(&rules))
    });
}

/// The marks of one traced `run`: (label, monotonic ns).
fn traced_run(bin: &Path, root: &Path, bundle: &Path) -> Vec<(String, u128)> {
    let out = Command::new(bin)
        .arg("--root")
        .arg(root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg("phases")
        .env("BERTH_RUNTIME_TRACE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, ' ');
            (f.next()? == "berth-trace").then_some(())?;
            let _pid = f.next()?;
            let ns = f.next()?.parse().ok()?;
            Some((f.next()?.to_string(), ns))
        })
        .collect()
}

/// Phases of a real start: from one mark to another.
const PHASES: [(&str, &str, &str); 9] = [
    ("startup and argument parsing", "cli: main", "create: begin"),
    // As root on v1 and hybrid hosts only the cgroup2 directory is made before the clone;
    // the v1 ones follow, while the init mounts.
    ("config and cgroup", "create: begin", "create: cgroup made"),
    (
        "clone into namespaces",
        "create: cgroup made",
        "create: cloned",
    ),
    (
        "v1 cgroups beside the init's mounts",
        "create: cloned",
        "create: v1 cgroups made",
    ),
    (
        "rootfs mounts",
        "init: namespaces done",
        "init: rootfs mounted",
    ),
    ("pivot_root", "init: rootfs mounted", "init: pivoted"),
    (
        "masks, identity, program",
        "init: pivoted",
        "init: process prepared",
    ),
    (
        "program run and exit",
        "init: exec",
        "run: container exited",
    ),
    ("delete", "run: container exited", "delete: done"),
];

fn in_container(c: &mut Criterion) {
    let bin = berth_benches::runtime_binary().unwrap_or_else(|e| panic!("{e}"));
    let work = tempfile::tempdir_in("/run").unwrap();
    let bundle = work.path().join("bundle");
    let cgroup = format!("/berth-bench-phases-{}/run", std::process::id());
    berth_benches::write_start_bundle(&bundle, &cgroup).unwrap();
    let root = work.path().join("state");
    // Some phases belong to one start path (the v1 cgroups made after the clone: root on a
    // v1 or hybrid host); a phase this host's path lacks is reported and left out.
    let probe = traced_run(&bin, &root, &bundle);
    let marked = |label: &str| probe.iter().any(|(l, _)| l == label);
    for (name, from, to) in PHASES {
        if !marked(from) || !marked(to) {
            eprintln!("phase/{name}: not on this host's start path ({from:?} .. {to:?}); left out");
            continue;
        }
        c.bench_function(&format!("phase/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let marks = traced_run(&bin, &root, &bundle);
                    let at = |label: &str| {
                        marks
                            .iter()
                            .find(|(l, _)| l == label)
                            .map(|(_, ns)| *ns)
                            .unwrap_or_else(|| panic!("no mark {label:?}"))
                    };
                    total += Duration::from_nanos((at(to) - at(from)) as u64);
                }
                total
            })
        });
    }
    for m in berth_kernel_tests::harness::cgroup_mounts() {
        let _ =
            std::fs::remove_dir(m.join(cgroup.trim_start_matches('/').split('/').next().unwrap()));
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = in_process, in_container
}
criterion_main!(benches);
