//! `berth-runtime run` of /bin/true from a prepared bundle (pid, mount, ipc, uts, network
//! namespaces; memory and pids limits), the whole command as a user or engine runs it.
//! Run `cargo build --release -p berth-runtime` first: this measures that binary.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use criterion::{Criterion, criterion_group, criterion_main};

/// The release berth-runtime beside this bench (target/<triple>/release), or $BERTH_RUNTIME.
fn runtime_binary() -> PathBuf {
    berth_kernel_tests::harness::runtime_binary()
}

fn run_true(c: &mut Criterion) {
    let bin = runtime_binary();
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    let cgroup = format!("/berth-bench-{}/start", std::process::id());
    berth_benches::write_start_bundle(&bundle, &cgroup).unwrap();
    let root = work.path().join("state");
    c.bench_function("runtime run /bin/true", |b| {
        b.iter(|| {
            let status = Command::new(&bin)
                .arg("--root")
                .arg(&root)
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg("bench")
                .stdin(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        })
    });
    // Remove the cgroup parent the runs left in each hierarchy.
    for m in berth_kernel_tests::harness::cgroup_mounts() {
        let _ =
            std::fs::remove_dir(m.join(cgroup.trim_start_matches('/').split('/').next().unwrap()));
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = run_true
}
criterion_main!(benches);
