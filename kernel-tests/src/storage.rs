//! The storage drivers the storage tests run against, each on a root of its own.
//!
//! `BERTH_TEST_STORAGE_DRIVERS` (comma-separated) names them; by default every driver this
//! host can run: vfs, overlay2, erofs, btrfs (on a loop filesystem) and devicemapper where the
//! kernel has device-mapper. This host has none, so `vm_devicemapper` runs the same tests with
//! `BERTH_TEST_STORAGE_DRIVERS=devicemapper` inside the VM harness.

use std::path::{Path, PathBuf};

use berth_storage::{Btrfs, DeviceMapper, DeviceMapperConfig, Erofs, Overlay, Snapshotter, Vfs};

use crate::scratch_fs::ScratchFs;

/// A driver on a root of its own; dropped before the root (field order).
pub struct TestDriver {
    pub snapshotter: Box<dyn Snapshotter>,
    pub root: PathBuf,
    _root: tempfile::TempDir,
    _fs: Option<ScratchFs>,
}

/// Whether the kernel has device-mapper with thin pools.
pub fn has_device_mapper() -> bool {
    Path::new("/dev/mapper/control").exists() && Path::new("/sys/module/dm_thin_pool").exists()
}

/// A small pool for tests: sparse files, so only what is written costs memory.
pub fn devicemapper_config() -> DeviceMapperConfig {
    DeviceMapperConfig {
        base_size: 256 << 20,
        loop_data_size: 2 << 30,
        loop_metadata_size: 64 << 20,
        ..DeviceMapperConfig::default()
    }
}

/// The drivers to test (see the module comment).
pub fn names() -> Vec<String> {
    match std::env::var("BERTH_TEST_STORAGE_DRIVERS") {
        Ok(list) => list.split(',').map(|s| s.trim().to_string()).collect(),
        Err(_) => {
            let mut all: Vec<String> = ["vfs", "overlay2", "erofs", "btrfs"]
                .map(String::from)
                .to_vec();
            if has_device_mapper() {
                all.push("devicemapper".into());
            }
            all
        }
    }
}

/// Driver `name` on a fresh root.
pub fn open(name: &str) -> TestDriver {
    let (root, fs) = match name {
        "btrfs" => {
            let fs = ScratchFs::btrfs(256);
            (tempfile::tempdir_in(fs.path()).unwrap(), Some(fs))
        }
        // Its images must be on a disk filesystem, whatever /tmp is.
        "erofs" => {
            let fs = ScratchFs::ext4(512);
            (tempfile::tempdir_in(fs.path()).unwrap(), Some(fs))
        }
        _ => (tempfile::tempdir().unwrap(), None),
    };
    let path = root.path();
    let snapshotter: Box<dyn Snapshotter> = match name {
        "vfs" => Box::new(Vfs::open(path).unwrap()),
        "overlay2" => Box::new(Overlay::open(path).unwrap()),
        "erofs" => Box::new(Erofs::open(path).unwrap()),
        "btrfs" => Box::new(Btrfs::open(path).unwrap()),
        "devicemapper" => Box::new(DeviceMapper::open_with(path, &devicemapper_config()).unwrap()),
        other => panic!("BERTH_TEST_STORAGE_DRIVERS: unknown driver {other:?}"),
    };
    TestDriver {
        snapshotter,
        root: path.to_path_buf(),
        _root: root,
        _fs: fs,
    }
}

impl Drop for TestDriver {
    fn drop(&mut self) {
        // What the driver keeps mounted below its root (erofs layers), or a failed test left.
        crate::harness::unmount_under(&self.root);
    }
}

/// Every driver to test, each on a fresh root.
pub fn drivers() -> Vec<TestDriver> {
    names().iter().map(|n| open(n)).collect()
}
