//! Storage drivers: `prepare` + mount of a container's rootfs on a 5-layer and a 100-layer
//! image, per driver (erofs: overlay over EROFS layer images); and apply of a Debian minbase layer (debootstrap, cached by
//! `berth-fixtures --minbase`) per driver and compression, beside `tar -x` of the same bytes,
//! all as whole commands (`berth-layer apply …` vs `tar -x …`) in the same run.
//! Needs root; btrfs runs on a loop filesystem made here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_kernel_tests::layers::LayerTar;
use berth_kernel_tests::scratch_fs::ScratchFs;
use berth_storage::{Btrfs, Erofs, Labels, Overlay, Snapshotter, Vfs, layer, mount};
use criterion::{Criterion, criterion_group, criterion_main};

/// A chain of `n` committed layers, each with a few small files, applied as layers are (so
/// the erofs driver's are images).
fn image(s: &dyn Snapshotter, n: usize) -> String {
    let mut parent: Option<String> = None;
    for i in 0..n {
        let name = format!("img{n}-l{i}");
        let mut tar = LayerTar::new();
        tar.dir("usr/")
            .dir("usr/lib/")
            .dir(&format!("usr/lib/l{i}/"));
        for f in 0..4 {
            tar.file(&format!("usr/lib/l{i}/f{f}"), &[i as u8; 512]);
        }
        layer::apply_layer(
            s,
            &name,
            parent.as_deref(),
            &tar.finish()[..],
            &layer::ApplyOptions::default(),
            Labels::new(),
        )
        .unwrap();
        parent = Some(name);
    }
    parent.unwrap()
}

fn prepare_and_mount(c: &mut Criterion) {
    let btrfs_fs = ScratchFs::btrfs(1024);
    let roots = [
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ];
    let drivers: Vec<Box<dyn Snapshotter>> = vec![
        Box::new(Overlay::open(roots[0].path()).unwrap()),
        Box::new(Erofs::open(roots[2].path()).unwrap()),
        Box::new(Btrfs::open(&btrfs_fs.path().join("root")).unwrap()),
        Box::new(Vfs::open(roots[1].path()).unwrap()),
    ];
    let target = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("storage/prepare+mount");
    g.sample_size(30);
    for s in &drivers {
        for layers in [5usize, 100] {
            let top = image(s.as_ref(), layers);
            let mut n = 0u64;
            g.bench_function(format!("{} {layers} layers", s.driver()), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        n += 1;
                        let key = format!("ctr{n}");
                        let start = Instant::now();
                        let mounts = s.prepare(&key, Some(&top), Labels::new()).unwrap();
                        mount::mount(&mounts, target.path()).unwrap();
                        total += start.elapsed();
                        mount::unmount(target.path()).unwrap();
                        s.remove(&key).unwrap();
                    }
                    total
                })
            });
        }
    }
    g.finish();
    drop(drivers);
    // The erofs driver keeps its layers mounted.
    berth_kernel_tests::harness::unmount_under(roots[2].path());
}

fn run(cmd: &mut Command) {
    let out = cmd.stderr(Stdio::piped()).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn apply_minbase(c: &mut Criterion) {
    let layer = berth_kernel_tests::fixtures::minbase_layer().expect("minbase layer");
    let tool = berth_kernel_tests::harness::workspace_binary("berth-layer");
    let btrfs_fs = ScratchFs::btrfs(2048);
    let roots = [
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ];
    let drivers: Vec<(&str, PathBuf)> = vec![
        ("overlay2", roots[0].path().to_path_buf()),
        ("erofs", roots[2].path().to_path_buf()),
        ("btrfs", btrfs_fs.path().join("root")),
        ("vfs", roots[1].path().to_path_buf()),
    ];
    let scratch = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("storage/apply minbase");
    g.sample_size(10);
    for (compression, file, tar_flag) in [
        ("tar", &layer.tar, None),
        ("gzip", &layer.gzip, Some("-z")),
        ("zstd", &layer.zstd, Some("--zstd")),
    ] {
        let mut n = 0u64;
        for (driver, root) in &drivers {
            g.bench_function(format!("berth {driver} {compression}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        n += 1;
                        let name = format!("minbase{n}");
                        let input = std::fs::File::open(file).unwrap();
                        let start = Instant::now();
                        run(Command::new(&tool)
                            .args(["apply", driver])
                            .arg(root)
                            .arg(&name)
                            .stdin(input)
                            .stdout(Stdio::null()));
                        total += start.elapsed();
                        berth_storage::open(driver, root)
                            .unwrap()
                            .remove(&name)
                            .unwrap();
                    }
                    total
                })
            });
        }
        // The peer: GNU tar extracting the same bytes into an empty directory on the same
        // filesystem as overlay2's root (what Docker's graph drivers did with a tar stream).
        g.bench_function(format!("tar -x {compression}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let dir = scratch.path().join(format!("x{i}"));
                    std::fs::create_dir(&dir).unwrap();
                    let mut cmd = Command::new("tar");
                    cmd.args([
                        "--numeric-owner",
                        "--xattrs",
                        "--xattrs-include=*",
                        "-p",
                        "-x",
                    ]);
                    if let Some(flag) = tar_flag {
                        cmd.arg(flag);
                    }
                    cmd.arg("-f").arg(file).arg("-C").arg(&dir);
                    let start = Instant::now();
                    run(&mut cmd);
                    total += start.elapsed();
                    std::fs::remove_dir_all(&dir).unwrap();
                }
                total
            })
        });
    }
    g.finish();
}

fn minbase_available() -> bool {
    Path::new("/usr/sbin/debootstrap").exists()
}

fn storage(c: &mut Criterion) {
    prepare_and_mount(c);
    assert!(
        minbase_available(),
        "the apply bench needs debootstrap (apt-get install debootstrap)"
    );
    apply_minbase(c);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = storage
}
criterion_main!(benches);
