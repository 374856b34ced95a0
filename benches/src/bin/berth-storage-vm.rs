//! devicemapper beside overlay2 and btrfs, in the VM harness (this host's kernel has no
//! device-mapper): the busybox image's layer is applied into each driver, then a container
//! rootfs is prepared and mounted, and removed, `--runs` times, the drivers interleaved. TCG
//! makes every figure slow, so the table gives medians and ratios to overlay2 from the same
//! run. Writes `target/bench/storage-vm.{md,json}`.
//!
//! `berth-storage-vm [--runs N] [--console]` on the host (`--console` shows the guest's
//! output); the guest runs this binary with `--guest`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_kernel_tests::{fixtures, storage, vm};
use berth_storage::layer::{self, ApplyOptions};
use berth_storage::{Btrfs, DeviceMapper, Labels, Overlay, Snapshotter, mount};
use serde_json::json;

fn fail(msg: &str) -> ! {
    eprintln!("berth-storage-vm: {msg}");
    std::process::exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().unwrap_or_else(|_| fail("--runs takes a number")))
        .unwrap_or(30usize);
    if args.iter().any(|a| a == "--guest") {
        guest(runs);
    } else {
        host(runs);
    }
}

fn host(runs: usize) {
    let me = std::env::current_exe().expect("own path");
    let kernel = vm::kernel().unwrap_or_else(|e| fail(&format!("Debian kernel: {e}")));
    let mut initramfs = vm::Initramfs::new();
    for bin in [
        me.as_path(),
        Path::new("/usr/sbin/mkfs.ext4"),
        Path::new("/usr/sbin/mkfs.btrfs"),
    ] {
        initramfs
            .binary(bin)
            .unwrap_or_else(|e| fail(&format!("{}: {e}", bin.display())));
    }
    initramfs
        .busybox_fixtures()
        .unwrap_or_else(|e| fail(&format!("fixtures: {e}")));
    let command = format!(
        "dmesg -n 1; cd /tmp && {} --guest --runs {runs} 2>&1 || {{ dmesg | tail -20; exit 1; }}\n",
        me.display()
    );
    let modules: Vec<&str> = vm::DEVICE_MAPPER_MODULES
        .iter()
        .copied()
        .chain(["ext4", "btrfs", "overlay"])
        .collect();
    let run = vm::run_in_vm(
        &kernel,
        initramfs,
        &modules,
        &command,
        Duration::from_secs(3600),
    )
    .unwrap_or_else(|e| fail(&format!("VM: {e}")));
    let json_line = run
        .console
        .lines()
        .find_map(|l| l.trim().strip_prefix("BERTH-STORAGE-JSON "))
        .map(str::to_string);
    let (Some(0), Some(json_line)) = (run.status, json_line) else {
        eprintln!("{}", run.console);
        fail(&format!("the guest run failed ({:?})", run.status));
    };
    if std::env::args().any(|a| a == "--console") {
        eprintln!("{}", run.console);
    }
    let result: serde_json::Value =
        serde_json::from_str(&json_line).unwrap_or_else(|e| fail(&format!("guest JSON: {e}")));
    let out = fixtures::target_dir().join("bench");
    fs::create_dir_all(&out).expect("target/bench");
    let mut md = format!(
        "# Storage drivers in qemu (TCG, Debian kernel {}), {runs} runs each, interleaved\n\n\
         Container rootfs of the busybox image: `prepare` + mount, and `remove` (after unmount).\n\
         Medians; ratios are to overlay2 in the same run.\n\n\
         | driver | prepare+mount (ms) | × overlay2 | remove (ms) | × overlay2 |\n\
         |---|---:|---:|---:|---:|\n",
        kernel.version
    );
    let base = &result["overlay2"];
    for d in ["overlay2", "btrfs", "devicemapper"] {
        let r = &result[d];
        let ratio = |k: &str| r[k].as_f64().unwrap_or(0.0) / base[k].as_f64().unwrap_or(1.0);
        md.push_str(&format!(
            "| {d} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            r["prepare_ms"].as_f64().unwrap_or(0.0),
            ratio("prepare_ms"),
            r["remove_ms"].as_f64().unwrap_or(0.0),
            ratio("remove_ms"),
        ));
    }
    fs::write(out.join("storage-vm.md"), &md).expect("write markdown");
    fs::write(
        out.join("storage-vm.json"),
        serde_json::to_vec_pretty(&result).unwrap_or_default(),
    )
    .expect("write json");
    print!("{md}");
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| fail(&format!("{cmd:?}: {e}")));
    if !out.status.success() {
        fail(&format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn guest(runs: usize) {
    let work = PathBuf::from("/tmp/storage-bench");
    fs::create_dir_all(&work).expect("work dir");
    // btrfs on a loop file, as a host without a btrfs disk would have it.
    let image = work.join("btrfs.img");
    fs::File::create(&image)
        .and_then(|f| f.set_len(1 << 30))
        .expect("btrfs image");
    run(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&image));
    let btrfs_mnt = work.join("btrfs");
    fs::create_dir_all(&btrfs_mnt).expect("btrfs mountpoint");
    run(Command::new("mount")
        .args(["-o", "loop", "-t", "btrfs"])
        .arg(&image)
        .arg(&btrfs_mnt));
    let drivers: Vec<Box<dyn Snapshotter>> = vec![
        Box::new(Overlay::open(&work.join("overlay2")).unwrap_or_else(|e| fail(&e.to_string()))),
        Box::new(Btrfs::open(&btrfs_mnt.join("root")).unwrap_or_else(|e| fail(&e.to_string()))),
        Box::new(
            DeviceMapper::open_with(&work.join("devicemapper"), &storage::devicemapper_config())
                .unwrap_or_else(|e| fail(&e.to_string())),
        ),
    ];
    let (digest, blob) = fixtures::busybox()
        .layer()
        .unwrap_or_else(|e| fail(&format!("busybox layer: {e}")));
    let opts = ApplyOptions {
        digest: Some(digest.clone()),
        ..Default::default()
    };
    for s in &drivers {
        let file = fs::File::open(&blob).unwrap_or_else(|e| fail(&e.to_string()));
        layer::apply_layer(s.as_ref(), &digest, None, file, &opts, Labels::new())
            .unwrap_or_else(|e| fail(&format!("{}: apply: {e}", s.driver())));
    }
    let target = work.join("rootfs");
    fs::create_dir_all(&target).expect("target");
    let mut prepare = vec![Vec::new(); drivers.len()];
    let mut remove = vec![Vec::new(); drivers.len()];
    for i in 0..runs {
        for (d, s) in drivers.iter().enumerate() {
            let key = format!("ctr{i}");
            let start = Instant::now();
            let mounts = s
                .prepare(&key, Some(&digest), Labels::new())
                .unwrap_or_else(|e| fail(&format!("{}: prepare: {e}", s.driver())));
            mount::mount(&mounts, &target).unwrap_or_else(|e| fail(&e.to_string()));
            prepare[d].push(start.elapsed());
            mount::unmount(&target).unwrap_or_else(|e| fail(&e.to_string()));
            let start = Instant::now();
            s.remove(&key)
                .unwrap_or_else(|e| fail(&format!("{}: remove: {e}", s.driver())));
            remove[d].push(start.elapsed());
        }
    }
    let mut result = serde_json::Map::new();
    for (d, s) in drivers.iter().enumerate() {
        result.insert(
            s.driver().to_string(),
            json!({
                "prepare_ms": median(prepare[d].clone()),
                "remove_ms": median(remove[d].clone()),
                "runs": runs,
            }),
        );
    }
    for s in &drivers {
        let _ = s.remove(&digest);
    }
    drop(drivers);
    let _ = Command::new("umount").arg(&btrfs_mnt).status();
    println!("BERTH-STORAGE-JSON {}", serde_json::Value::Object(result));
}
