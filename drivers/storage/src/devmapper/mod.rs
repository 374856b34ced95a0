//! devicemapper: every snapshot is a thin device in one thin pool, a copy-on-write snapshot of
//! its parent's device (of an empty ext4 base device for a snapshot without parent). Active
//! snapshots and views have their device active and its filesystem mounted at `<dir>/fs`; the
//! tree is `<dir>/fs/rootfs` (so ext4's `lost+found` stays out of images). Committing
//! unmounts and deactivates the device: a layer costs no device until something reads it.
//!
//! The thin id of a snapshot is its store id (the directory's name), so the directory always
//! exists before the pool knows the id and is removed after the id is deleted: a crash leaves
//! at worst a directory without a record, and removing it deletes the id. The filesystem is
//! made once, on the base device; snapshots only copy its metadata blocks when written.

mod pool;

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::mount::{MountFlags, UnmountFlags};

pub use pool::{DeviceMapperConfig, PoolSpace, pool_status};
use pool::{MAX_THIN_ID, ThinPool};

use crate::error::{Context, Error, Result};
use crate::fsutil;
use crate::snapshot::{Changes, Kind, Mount, Snapshotter, Usage, Whiteouts};
use crate::store::{Backend, Store};

/// The thin id of the base device every tree starts from; snapshot ids start at 1.
const BASE_ID: u64 = 0;
/// Marks the base device as made and formatted.
const BASE_READY: &str = "base-ready";
/// A committed snapshot's usage, measured once (its tree no longer changes).
const USAGE_FILE: &str = "usage.json";

pub struct DeviceMapper {
    pool: ThinPool,
    snapshots: PathBuf,
}

impl DeviceMapper {
    /// The driver on `root` with the default pool (sparse loop files under `root`).
    pub fn open(root: &Path) -> Result<impl Snapshotter + use<>> {
        DeviceMapper::open_with(root, &DeviceMapperConfig::default())
    }

    /// The driver on `root` with the pool `config` describes. One process owns a root.
    pub fn open_with(root: &Path, config: &DeviceMapperConfig) -> Result<impl Snapshotter + use<>> {
        fs::create_dir_all(root).at("create", root)?;
        let state = root.join("devicemapper");
        let pool = ThinPool::open(root, &state, config)?;
        let backend = DeviceMapper {
            pool,
            snapshots: root.join("snapshots"),
        };
        backend.make_base(&state)?;
        backend.reconcile();
        Store::open(root, backend)
    }

    /// Makes the base device and its empty filesystem, once per pool.
    fn make_base(&self, state: &Path) -> Result<()> {
        let ready = state.join(BASE_READY);
        if ready.exists() {
            return Ok(());
        }
        self.pool.deactivate(BASE_ID)?;
        if let Err(e) = self.pool.create_thin(BASE_ID) {
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
            // A crash while making it left the id behind: start again.
            self.pool.delete(BASE_ID)?;
            self.pool.create_thin(BASE_ID)?;
        }
        let node = self.pool.activate(BASE_ID)?;
        let made = (|| {
            // Unwritten thin blocks read as zeroes, so nothing needs initialising up front.
            run(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .args(["-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1"])
                .arg(&node))?;
            let mnt = state.join("base-mnt");
            fs::create_dir_all(&mnt).at("create", &mnt)?;
            mount_ext4(&node, &mnt, false)?;
            let tree = mnt.join("rootfs");
            let made = fs::create_dir(&tree).at("mkdir", &tree);
            unmount(&mnt)?;
            made
        })();
        self.pool.deactivate(BASE_ID)?;
        made?;
        fs::write(&ready, b"").at("write", &ready)
    }

    /// After a crash or an earlier owner: devices of snapshots that no longer exist are
    /// deactivated and their ids deleted. (Snapshot directories without a record are the
    /// store's `cleanup`, which removes them through this backend.)
    fn reconcile(&self) {
        for id in self.pool.active_ids().unwrap_or_default() {
            if id == BASE_ID || self.find_dir(id).is_some() {
                continue;
            }
            log::info!("devicemapper: removing thin device {id}, which no snapshot has");
            let _ = self.pool.deactivate(id).and_then(|()| self.pool.delete(id));
        }
    }

    fn find_dir(&self, id: u64) -> Option<PathBuf> {
        [id.to_string(), format!("removing-{id}")]
            .iter()
            .map(|n| self.snapshots.join(n))
            .find(|p| p.exists())
    }

    /// Activates snapshot `dir`'s device and mounts its filesystem at `<dir>/fs` unless it is
    /// mounted already.
    fn ensure_mounted(&self, dir: &Path, read_only: bool) -> Result<()> {
        let mountpoint = dir.join("fs");
        if is_mountpoint(&mountpoint) {
            return Ok(());
        }
        let node = self.pool.activate(thin_id(dir)?)?;
        mount_ext4(&node, &mountpoint, read_only)
    }

    fn release(&self, dir: &Path) -> Result<()> {
        let mountpoint = dir.join("fs");
        if is_mountpoint(&mountpoint) {
            unmount(&mountpoint)?;
        }
        self.pool.deactivate(thin_id(dir)?)
    }
}

impl Drop for DeviceMapper {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(&self.snapshots) {
            for e in entries.filter_map(|e| e.ok()) {
                let mountpoint = e.path().join("fs");
                if is_mountpoint(&mountpoint) {
                    if let Err(e) = unmount(&mountpoint) {
                        log::warn!("{e}");
                    }
                }
            }
        }
        self.pool.shutdown();
    }
}

impl Backend for DeviceMapper {
    fn name(&self) -> &'static str {
        "devicemapper"
    }

    fn tree(&self, dir: &Path) -> PathBuf {
        dir.join("fs/rootfs")
    }

    fn create(&self, dir: &Path, parent: Option<&Path>, kind: Kind) -> Result<()> {
        let id = thin_id(dir)?;
        let what = match kind {
            Kind::View => "a view",
            _ => "a snapshot",
        };
        self.pool.check_space(what)?;
        let origin = parent.map(thin_id).transpose()?.unwrap_or(BASE_ID);
        // The directory first: it claims the id (see the module comment).
        fs::create_dir(dir).at("mkdir", dir)?;
        let made = fs::create_dir(dir.join("fs"))
            .at("mkdir", dir.join("fs"))
            .and_then(|()| self.pool.create_snap(id, origin))
            .and_then(|()| self.ensure_mounted(dir, false));
        if made.is_err() {
            let _ = self.remove(dir);
        }
        made
    }

    fn before_mount(&self, dir: &Path) -> Result<()> {
        self.ensure_mounted(dir, false)
    }

    fn mounts(&self, dir: &Path, kind: Kind, _parents: &[PathBuf]) -> Vec<Mount> {
        // A view is its own thin snapshot: reading it never touches the parent's blocks.
        vec![Mount {
            typ: "bind".into(),
            source: self.tree(dir),
            options: vec![
                "rbind".into(),
                if kind == Kind::View { "ro" } else { "rw" }.into(),
            ],
        }]
    }

    fn commit(&self, dir: &Path) -> Result<()> {
        self.ensure_mounted(dir, false)?;
        let usage = fsutil::disk_usage(&self.tree(dir))?;
        let path = dir.join(USAGE_FILE);
        let bytes = serde_json::to_vec(&usage).map_err(|e| Error::Sys {
            op: "devicemapper: encode usage".into(),
            source: io::Error::other(e),
        })?;
        fs::write(&path, bytes).at("write", &path)?;
        self.release(dir)
    }

    fn remove(&self, dir: &Path) -> Result<()> {
        let mountpoint = dir.join("fs");
        if is_mountpoint(&mountpoint) {
            if let Err(e) = unmount(&mountpoint) {
                // Busy (a container's bind mount keeps it open): detach it now; the device
                // goes when its last user does, and its id is deleted then.
                log::info!("{e}; detaching lazily");
                rustix::mount::unmount(&mountpoint, UnmountFlags::DETACH)
                    .at("umount -l", &mountpoint)?;
            }
        }
        if let Ok(id) = thin_id(dir) {
            self.pool.deactivate(id)?;
            self.pool.delete(id)?;
        }
        self.pool.retry_deferred_deletes();
        fsutil::remove_tree(dir)
    }

    fn whiteouts(&self) -> Whiteouts {
        Whiteouts::Delete
    }

    fn changes(&self, dir: &Path, parent: Option<&Path>) -> Result<Changes> {
        self.ensure_mounted(dir, false)?;
        // A committed parent is read in place, mounted read-only, until it is removed.
        if let Some(p) = parent {
            self.ensure_mounted(p, true)?;
        }
        Ok(Changes::Compare {
            lower: parent.map(|p| self.tree(p)),
            upper: self.tree(dir),
        })
    }

    fn usage(&self, dir: &Path) -> Result<Usage> {
        let path = dir.join(USAGE_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Sys {
                op: format!("devicemapper: read {}", path.display()),
                source: io::Error::other(e),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.ensure_mounted(dir, false)?;
                fsutil::disk_usage(&self.tree(dir))
            }
            Err(e) => Err(e).at("read", &path),
        }
    }
}

/// A snapshot directory's thin id: its name (`<id>`, or `removing-<id>` while removed).
fn thin_id(dir: &Path) -> Result<u64> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let id: u64 = name
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::Invalid {
            key: dir.display().to_string(),
            reason: "not a snapshot directory".into(),
        })?;
    if id == BASE_ID || id > MAX_THIN_ID {
        return Err(Error::Unsupported(format!(
            "devicemapper: snapshot id {id} is outside the pool's thin ids (1 to {MAX_THIN_ID})"
        )));
    }
    Ok(id)
}

fn is_mountpoint(path: &Path) -> bool {
    match (fs::metadata(path), path.parent().map(fs::metadata)) {
        (Ok(me), Some(Ok(parent))) => me.dev() != parent.dev(),
        _ => false,
    }
}

fn mount_ext4(node: &Path, target: &Path, read_only: bool) -> Result<()> {
    let (flags, data) = if read_only {
        // A committed layer was unmounted cleanly: no journal to replay, nothing to write.
        (MountFlags::RDONLY, c"noload")
    } else {
        // The inode tables of a thin device read as zeroes already: no background zeroing.
        (MountFlags::empty(), c"noinit_itable")
    };
    rustix::mount::mount(node, target, "ext4", flags, data).map_err(|e| Error::Sys {
        op: format!(
            "devicemapper: mount {} (ext4) at {}",
            node.display(),
            target.display()
        ),
        source: e.into(),
    })
}

fn unmount(target: &Path) -> Result<()> {
    rustix::mount::unmount(target, UnmountFlags::empty()).at("umount", target)
}

fn run(cmd: &mut Command) -> Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| Error::Sys {
        op: format!("devicemapper: run {program} (e2fsprogs)"),
        source: e,
    })?;
    if !out.status.success() {
        return Err(Error::Sys {
            op: format!("devicemapper: {program}"),
            source: io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        });
    }
    Ok(())
}
