//! The devicemapper driver, in the VM harness (this host's kernel has no device-mapper).
//! `runs_in_the_vm` boots Debian's kernel with dm-thin-pool, loop and ext4, and runs inside:
//! the snapshotter contract and the layer tests of `storage_drivers` and `storage_layers` with
//! `BERTH_TEST_STORAGE_DRIVERS=devicemapper`, then the `#[ignore]` tests below (a real image
//! layer and a container on it, 100 create/delete cycles, a full pool, a restart).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_kernel_tests::{fixtures, storage, vm};
use berth_storage::layer::{self, ApplyOptions};
use berth_storage::{
    DeviceMapper, DeviceMapperConfig, EXTRACT_PREFIX, Error, Labels, Snapshotter, mount,
};

const CONTRACT_TESTS: [&str; 2] = [
    "the_snapshotter_contract",
    "cleanup_removes_what_a_crash_left",
];
const LAYER_TESTS: [&str; 5] = [
    "a_layer_arrives_intact_in_every_compression_and_driver",
    "whiteouts_and_opaque_directories_hide_lower_files",
    "bad_layers_fail_and_leave_nothing",
    "hostile_layers_never_write_outside_the_snapshot",
    "a_containers_changes_become_a_layer_on_every_driver",
];
const DM_TESTS: [&str; 6] = [
    "an_image_layer_and_a_container_on_it",
    "a_pool_on_block_devices_given_by_configuration",
    "a_busy_device_goes_when_its_last_user_does",
    "a_hundred_create_delete_cycles_leak_nothing",
    "a_full_pool_is_a_clear_error_and_recovers",
    "a_restart_keeps_snapshots_and_removes_what_a_crash_left",
];

#[test]
fn runs_in_the_vm() {
    let kernel = vm::kernel().expect("Debian kernel package");
    let me = vm::test_binary("vm_devicemapper").expect("this test's binary");
    let drivers = vm::test_binary("storage_drivers").expect("storage_drivers test binary");
    let layers = vm::test_binary("storage_layers").expect("storage_layers test binary");
    let mut initramfs = vm::Initramfs::new();
    for b in [&me, &drivers, &layers] {
        initramfs.binary(b).unwrap();
    }
    initramfs
        .binary(Path::new("/usr/sbin/mkfs.ext4"))
        .expect("mkfs.ext4 (apt-get install e2fsprogs)");
    if Path::new("/etc/mke2fs.conf").exists() {
        initramfs
            .file(Path::new("/etc/mke2fs.conf"), Path::new("/etc/mke2fs.conf"))
            .unwrap();
    }
    initramfs.busybox_fixtures().unwrap();
    let command = format!(
        "dmesg -n 1; cd /tmp && export BERTH_TEST_STORAGE_DRIVERS=devicemapper RUST_BACKTRACE=1\n\
         {} --test-threads=1 --exact {} 2>&1 || exit 1\n\
         {} --test-threads=1 --exact {} 2>&1 || exit 1\n\
         {} --ignored --test-threads=1 2>&1\n",
        drivers.display(),
        CONTRACT_TESTS.join(" "),
        layers.display(),
        LAYER_TESTS.join(" "),
        me.display(),
    );
    let modules: Vec<&str> = vm::DEVICE_MAPPER_MODULES
        .iter()
        .copied()
        .chain(["ext4"])
        .collect();
    let run = vm::run_in_vm(
        &kernel,
        initramfs,
        &modules,
        &command,
        Duration::from_secs(900),
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
    // Every test ran, on devicemapper, and passed: none filtered away by a typo.
    for name in CONTRACT_TESTS.iter().chain(&LAYER_TESTS).chain(&DM_TESTS) {
        assert!(
            run.console.contains(&format!("test {name} ... ok")),
            "{name} did not pass in the guest"
        );
    }
}

#[test]
fn without_device_mapper_the_driver_says_what_is_missing() {
    let root = tempfile::tempdir().unwrap();
    let opened = DeviceMapper::open_with(root.path(), &storage::devicemapper_config());
    if storage::has_device_mapper() {
        // Hosts with device-mapper (the Vagrant VM) run the driver's tests directly instead.
        assert!(opened.is_ok(), "{:?}", opened.err());
    } else {
        let e = opened.err().expect("no device-mapper on this kernel");
        assert!(
            e.to_string().contains("no device-mapper") || e.to_string().contains("thin-pool"),
            "{e}"
        );
    }
}

/// A driver on a fresh root with `config`, and the root.
fn open(config: &DeviceMapperConfig) -> (impl Snapshotter + use<>, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    (DeviceMapper::open_with(root.path(), config).unwrap(), root)
}

/// Names of the device-mapper devices the kernel has.
fn dm_devices() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir("/sys/block")
        .unwrap()
        .filter_map(|e| fs::read_to_string(e.ok()?.path().join("dm/name")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

/// The devices in use: without the idle ones the driver keeps for reuse (at most 8).
fn dm_devices_in_use() -> Vec<String> {
    let all = dm_devices();
    let idle = all.iter().filter(|n| n.contains("-idle-")).count();
    assert!(idle <= 8, "{all:?}");
    all.into_iter().filter(|n| !n.contains("-idle-")).collect()
}

#[test]
#[ignore = "runs inside the VM harness (device-mapper); see runs_in_the_vm"]
fn an_image_layer_and_a_container_on_it() {
    let before = dm_devices();
    {
        let (s, _root) = open(&storage::devicemapper_config());
        let (digest, blob) = fixtures::busybox().layer().unwrap();
        let opts = ApplyOptions {
            digest: Some(digest.clone()),
            ..Default::default()
        };
        layer::apply_layer(
            &s,
            &digest,
            None,
            fs::File::open(&blob).unwrap(),
            &opts,
            Labels::new(),
        )
        .unwrap();
        // Committed: no device held for the layer.
        assert_eq!(dm_devices_in_use().len(), before.len() + 1, "only the pool");

        let rootfs = tempfile::tempdir().unwrap();
        let mounts = s.prepare("ctr", Some(&digest), Labels::new()).unwrap();
        mount::mount(&mounts, rootfs.path()).unwrap();
        let busybox = fs::metadata(rootfs.path().join("bin/busybox")).unwrap();
        assert!(busybox.len() > 100_000);
        assert!(
            !rootfs.path().join("lost+found").exists(),
            "ext4's lost+found is not part of the tree"
        );
        fs::write(rootfs.path().join("hello"), "from the container").unwrap();
        mount::unmount(rootfs.path()).unwrap();
        assert!(s.usage("ctr").unwrap().size >= 18);
        assert!(s.usage(&digest).unwrap().size >= busybox.len());

        s.remove("ctr").unwrap();
        s.remove(&digest).unwrap();
    }
    assert_eq!(dm_devices(), before, "the pool and its devices are gone");
}

#[test]
#[ignore = "runs inside the VM harness (device-mapper); see runs_in_the_vm"]
fn a_hundred_create_delete_cycles_leak_nothing() {
    let (s, root) = open(&storage::devicemapper_config());
    let key = format!("{EXTRACT_PREFIX}base");
    s.prepare(&key, None, Labels::new()).unwrap();
    fs::write(s.apply_target(&key).unwrap().dir.join("a"), "1").unwrap();
    s.commit("base", &key, Labels::new()).unwrap();
    let devices = dm_devices_in_use();
    let used = berth_storage::pool_status(root.path()).unwrap().data_used;
    for i in 0..100 {
        let ctr = format!("ctr{i}");
        s.prepare(&ctr, Some("base"), Labels::new()).unwrap();
        let dir = s.apply_target(&ctr).unwrap().dir;
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "1");
        let mut f = fs::File::create(dir.join("b")).unwrap();
        f.write_all(&[7u8; 256 << 10]).unwrap();
        f.sync_all().unwrap();
        drop(f);
        if i % 10 == 0 {
            // Views and committed children too.
            s.view("v", Some("base"), Labels::new()).unwrap();
            s.remove("v").unwrap();
            s.commit("child", &ctr, Labels::new()).unwrap();
            s.remove("child").unwrap();
        } else {
            s.remove(&ctr).unwrap();
        }
    }
    assert_eq!(dm_devices_in_use(), devices, "no device left behind");
    let after = berth_storage::pool_status(root.path()).unwrap();
    assert_eq!(
        after.data_used, used,
        "every deleted device's blocks went back"
    );
    let dirs = fs::read_dir(root.path().join("snapshots")).unwrap().count();
    assert_eq!(dirs, 1, "only the base layer's directory");
}

#[test]
#[ignore = "runs inside the VM harness (device-mapper); see runs_in_the_vm"]
fn a_full_pool_is_a_clear_error_and_recovers() {
    let config = DeviceMapperConfig {
        loop_data_size: 64 << 20,
        ..storage::devicemapper_config()
    };
    let (s, root) = open(&config);
    s.prepare("ctr", None, Labels::new()).unwrap();
    let dir = s.apply_target("ctr").unwrap().dir;
    // 96 MiB into a 64 MiB pool: the write (or its flush) fails; nothing hangs.
    let filled = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(dir.join("big"))?;
        for _ in 0..96 {
            f.write_all(&[1u8; 1 << 20])?;
        }
        f.sync_all()
    })();
    assert!(filled.is_err(), "96 MiB fit in a 64 MiB pool");
    let space = berth_storage::pool_status(root.path()).unwrap();
    assert!(
        space.out_of_data_space || space.data_used * 10 > space.data_total * 9,
        "{space:?}"
    );
    // A new snapshot is refused with the numbers and what to do.
    let e = s.prepare("ctr2", None, Labels::new()).unwrap_err();
    assert!(matches!(e, Error::NoSpace(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("thin pool") && msg.contains("free") && msg.contains("dm.min_free_space"),
        "{msg}"
    );
    assert!(s.stat("ctr2").is_err(), "a refused snapshot has no record");
    // Removing the container gives the space back; snapshots work again.
    s.remove("ctr").unwrap();
    let space = berth_storage::pool_status(root.path()).unwrap();
    assert!(space.data_used * 2 < space.data_total, "{space:?}");
    s.prepare("ctr3", None, Labels::new()).unwrap();
    fs::write(s.apply_target("ctr3").unwrap().dir.join("x"), "y").unwrap();
    s.remove("ctr3").unwrap();
}

#[test]
#[ignore = "runs inside the VM harness (device-mapper); see runs_in_the_vm"]
fn a_restart_keeps_snapshots_and_removes_what_a_crash_left() {
    let before = dm_devices();
    let root = tempfile::tempdir().unwrap();
    let config = storage::devicemapper_config();
    {
        let s = DeviceMapper::open_with(root.path(), &config).unwrap();
        s.prepare("l", None, Labels::new()).unwrap();
        fs::write(s.apply_target("l").unwrap().dir.join("layer-file"), "1").unwrap();
        s.commit("layer", "l", Labels::new()).unwrap();
        s.prepare("ctr", Some("layer"), Labels::new()).unwrap();
        fs::write(s.apply_target("ctr").unwrap().dir.join("ctr-file"), "2").unwrap();
        // An apply that never finished.
        s.prepare(
            &format!("{EXTRACT_PREFIX}half"),
            Some("layer"),
            Labels::new(),
        )
        .unwrap();
        // One process owns a pool.
        let e = DeviceMapper::open_with(root.path(), &config).err().unwrap();
        assert!(e.to_string().contains("in use by another process"), "{e}");
    }
    // Closed: every device is gone, the data stays in the pool's files.
    assert_eq!(dm_devices(), before);
    let s = DeviceMapper::open_with(root.path(), &config).unwrap();
    s.cleanup().unwrap();
    assert!(s.stat(&format!("{EXTRACT_PREFIX}half")).is_err());
    let c = tempfile::tempdir().unwrap();
    mount::mount(&s.mounts("ctr").unwrap(), c.path()).unwrap();
    assert_eq!(
        fs::read_to_string(c.path().join("layer-file")).unwrap(),
        "1"
    );
    assert_eq!(fs::read_to_string(c.path().join("ctr-file")).unwrap(), "2");
    mount::unmount(c.path()).unwrap();
    // A snapshot directory no record names (a crash between the two) and its thin id go.
    let orphan = root.path().join("snapshots/4000");
    fs::create_dir(&orphan).unwrap();
    s.cleanup().unwrap();
    assert!(!orphan.exists());
    s.remove("ctr").unwrap();
    s.remove("layer").unwrap();
}

#[test]
#[ignore = "runs inside the VM harness (device-mapper); see runs_in_the_vm"]
fn a_busy_device_goes_when_its_last_user_does() {
    let (s, root) = open(&storage::devicemapper_config());
    let used = berth_storage::pool_status(root.path()).unwrap().data_used;
    s.prepare("ctr", None, Labels::new()).unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    mount::mount(&s.mounts("ctr").unwrap(), rootfs.path()).unwrap();
    let mut f = fs::File::create(rootfs.path().join("data")).unwrap();
    f.write_all(&[3u8; 4 << 20]).unwrap();
    f.sync_all().unwrap();
    // Removed while a container's mount still holds the filesystem: the snapshot is gone at
    // once, the device and its blocks when the mount goes.
    s.remove("ctr").unwrap();
    assert!(s.stat("ctr").is_err());
    let deferred = root.path().join("devicemapper/deferred-deletes");
    assert!(
        !fs::read_to_string(&deferred).unwrap().trim().is_empty(),
        "the busy thin id waits for deletion"
    );
    assert!(
        rootfs.path().join("data").exists(),
        "the mount keeps working"
    );
    drop(f);
    mount::unmount(rootfs.path()).unwrap();
    // The next driver operation deletes the thin id the kernel could not delete before.
    s.prepare("next", None, Labels::new()).unwrap();
    s.remove("next").unwrap();
    let after = berth_storage::pool_status(root.path()).unwrap().data_used;
    assert_eq!(
        after, used,
        "the busy device's blocks went back to the pool"
    );
    assert!(fs::read_to_string(&deferred).unwrap().trim().is_empty());
}

/// A loop device over a sparse file of `bytes`, detached on drop: a block device for the test.
struct BlockDevice {
    path: PathBuf,
    device: loopdev::LoopDevice,
    _file: tempfile::NamedTempFile,
}

impl BlockDevice {
    fn new(bytes: u64) -> BlockDevice {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(bytes).unwrap();
        let device = loopdev::LoopControl::open().unwrap().next_free().unwrap();
        device.attach_file(file.path()).unwrap();
        let path = device.path().unwrap();
        BlockDevice {
            path,
            device,
            _file: file,
        }
    }
}

impl Drop for BlockDevice {
    fn drop(&mut self) {
        let _ = self.device.detach();
    }
}

#[test]
#[ignore = "runs inside the VM harness (device-mapper); see runs_in_the_vm"]
fn a_pool_on_block_devices_given_by_configuration() {
    let data = BlockDevice::new(512 << 20);
    let metadata = BlockDevice::new(32 << 20);
    let options = [
        format!("dm.datadev={}", data.path.display()),
        format!("dm.metadatadev={}", metadata.path.display()),
        "dm.basesize=128M".to_string(),
    ];
    let config = DeviceMapperConfig::from_options(&options).unwrap();
    let root = tempfile::tempdir().unwrap();
    {
        let s = DeviceMapper::open_with(root.path(), &config).unwrap();
        s.prepare("ctr", None, Labels::new()).unwrap();
        fs::write(
            s.apply_target("ctr").unwrap().dir.join("kept"),
            "on the disk",
        )
        .unwrap();
        let space = berth_storage::pool_status(root.path()).unwrap();
        assert_eq!(
            space.data_total,
            512 << 20,
            "the whole data device: {space:?}"
        );
        assert!(
            !root.path().join("devicemapper/data").exists(),
            "no loop file"
        );
    }
    // Opened again, the pool's metadata on the device is read, not made anew.
    let s = DeviceMapper::open_with(root.path(), &config).unwrap();
    let dir = s.apply_target("ctr").unwrap().dir;
    assert_eq!(fs::read_to_string(dir.join("kept")).unwrap(), "on the disk");
    s.remove("ctr").unwrap();
    // Not a block device: refused with the path.
    let file = tempfile::NamedTempFile::new().unwrap();
    let bad = DeviceMapperConfig {
        data_device: Some(file.path().to_path_buf()),
        ..config.clone()
    };
    let other = tempfile::tempdir().unwrap();
    let e = DeviceMapper::open_with(other.path(), &bad).err().unwrap();
    assert!(e.to_string().contains("is not a block device"), "{e}");
    // A metadata device holding something else (here a filesystem) is someone's data: refused,
    // and left as it was.
    let used = BlockDevice::new(32 << 20);
    let mkfs = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&used.path)
        .status()
        .unwrap();
    assert!(mkfs.success());
    let before = fs::read(&used.path).unwrap();
    let data2 = BlockDevice::new(64 << 20);
    let foreign = DeviceMapperConfig {
        metadata_device: Some(used.path.clone()),
        data_device: Some(data2.path.clone()),
        ..config.clone()
    };
    let e = DeviceMapper::open_with(other.path(), &foreign)
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("other than thin-pool metadata"),
        "{e}"
    );
    assert!(
        fs::read(&used.path).unwrap() == before,
        "the device was written to"
    );
}
