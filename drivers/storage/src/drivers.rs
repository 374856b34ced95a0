//! The backends: vfs (whole copies), overlay2 (one upper directory per snapshot, lowers
//! stacked), btrfs (subvolumes and snapshots). Each is opened on a root directory and used
//! through [`Snapshotter`].

use std::fs;
use std::path::{Path, PathBuf};

use crate::btrfs_ioctl;
use crate::devmapper::DeviceMapper;
use crate::error::{Context, Error, Result};
use crate::fsutil;
use crate::mount::OVERLAY_MAX_LAYERS;
use crate::snapshot::{Kind, Labels, Mount, OVERLAY_VOLATILE_LABEL, Snapshotter, Whiteouts};
use crate::store::{Backend, Store};

fn bind(source: PathBuf, read_only: bool) -> Mount {
    Mount {
        typ: "bind".into(),
        source,
        options: vec!["rbind".into(), if read_only { "ro" } else { "rw" }.into()],
    }
}

/// Drivers whose snapshots hold whole trees: an active snapshot is its own tree, a view reads
/// its parent's in place.
fn whole_tree_mounts(dir: &Path, kind: Kind, parents: &[PathBuf]) -> Vec<Mount> {
    match (kind, parents.first()) {
        (Kind::View, Some(p)) => vec![bind(p.join("fs"), true)],
        _ => vec![bind(dir.join("fs"), kind == Kind::View)],
    }
}

/// Whether the kernel knows filesystem type `name` (/proc/filesystems).
fn has_filesystem(name: &str) -> bool {
    fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some(name))
}

fn make_dir(dir: &Path) -> Result<()> {
    fs::create_dir(dir).at("mkdir", dir)
}

/// The driver named `name` (`overlay2`, `erofs`, `btrfs`, `devicemapper`, `vfs`) on `root`, with its
/// defaults: how an engine picks its driver from configuration.
pub fn open(name: &str, root: &Path) -> Result<Box<dyn Snapshotter>> {
    Ok(match name {
        "overlay2" => Box::new(Overlay::open(root)?),
        "erofs" => Box::new(Erofs::open(root)?),
        "btrfs" => Box::new(Btrfs::open(root)?),
        "devicemapper" => Box::new(DeviceMapper::open(root)?),
        "vfs" => Box::new(Vfs::open(root)?),
        other => {
            return Err(Error::Unsupported(format!(
                "unknown storage driver {other:?} (overlay2, erofs, btrfs, devicemapper, vfs)"
            )));
        }
    })
}

/// Full copies: works on any filesystem; the reference the other drivers are tested against.
pub struct Vfs;

impl Vfs {
    pub fn open(root: &Path) -> Result<impl Snapshotter + use<>> {
        Store::open(root, Vfs)
    }
}

impl Backend for Vfs {
    fn name(&self) -> &'static str {
        "vfs"
    }

    fn create(&self, dir: &Path, parent: Option<&Path>, kind: Kind) -> Result<()> {
        make_dir(dir)?;
        let result = match (parent, kind) {
            // A view reads its parent's tree in place.
            (Some(p), Kind::Active) => fsutil::copy_tree(&p.join("fs"), &dir.join("fs")),
            _ => make_dir(&dir.join("fs")),
        };
        if result.is_err() {
            let _ = fsutil::remove_tree(dir);
        }
        result
    }

    fn mounts(&self, dir: &Path, kind: Kind, parents: &[PathBuf]) -> Vec<Mount> {
        whole_tree_mounts(dir, kind, parents)
    }

    fn remove(&self, dir: &Path) -> Result<()> {
        fsutil::remove_tree(dir)
    }

    fn whiteouts(&self) -> Whiteouts {
        Whiteouts::Delete
    }
}

/// overlayfs: a snapshot is its upper directory; lowers are its ancestors' uppers.
pub struct Overlay;

impl Overlay {
    pub fn open(root: &Path) -> Result<impl Snapshotter + use<>> {
        if !has_filesystem("overlay") {
            return Err(Error::Unsupported(
                "overlay2 needs overlayfs (modprobe overlay)".into(),
            ));
        }
        Store::open(root, Overlay)
    }
}

impl Backend for Overlay {
    fn name(&self) -> &'static str {
        "overlay2"
    }

    fn create(&self, dir: &Path, _parent: Option<&Path>, kind: Kind) -> Result<()> {
        make_dir(dir)?;
        make_dir(&dir.join("fs"))?;
        if kind == Kind::Active {
            make_dir(&dir.join("work"))?;
        }
        Ok(())
    }

    fn configure(&self, dir: &Path, labels: &Labels) -> Result<()> {
        match labels.get(OVERLAY_VOLATILE_LABEL).map(String::as_str) {
            None | Some("false") => Ok(()),
            Some("true") => {
                let marker = dir.join(VOLATILE_MARKER);
                fs::write(&marker, boot_id()?).at("write", &marker)
            }
            Some(other) => Err(Error::Unsupported(format!(
                "{OVERLAY_VOLATILE_LABEL} is true or false, not {other:?}"
            ))),
        }
    }

    fn before_mount(&self, dir: &Path) -> Result<()> {
        let Some(boot) = volatile_boot(dir) else {
            return Ok(());
        };
        if boot != boot_id()? {
            return Err(Error::Invalid {
                key: dir.display().to_string(),
                reason: "a volatile snapshot from an earlier boot: its upper may be torn; \
                         remove it (cleanup does)"
                    .into(),
            });
        }
        // Same boot: the page cache held every write, so the upper is whole. overlayfs marks a
        // volatile workdir and refuses it until the mark is removed.
        let mark = dir.join("work/work/incompat/volatile");
        if mark.exists() {
            fsutil::remove_tree(&mark)?;
        }
        Ok(())
    }

    fn is_stale(&self, dir: &Path) -> bool {
        volatile_boot(dir).is_some_and(|b| boot_id().is_ok_and(|now| now != b))
    }

    fn mounts(&self, dir: &Path, kind: Kind, parents: &[PathBuf]) -> Vec<Mount> {
        let volatile = volatile_boot(dir).is_some();
        let lowers = || {
            parents
                .iter()
                .map(|p| p.join("fs").to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(":")
        };
        match (kind, parents.len()) {
            (Kind::Active, 0) => vec![bind(dir.join("fs"), false)],
            (Kind::View, 0) => vec![bind(dir.join("fs"), true)],
            (Kind::View, 1) => vec![bind(parents[0].join("fs"), true)],
            (Kind::View, _) => vec![Mount {
                typ: "overlay".into(),
                source: "overlay".into(),
                options: vec![format!("lowerdir={}", lowers()), "ro".into()],
            }],
            _ => vec![Mount {
                typ: "overlay".into(),
                source: "overlay".into(),
                options: vec![
                    format!("lowerdir={}", lowers()),
                    format!("upperdir={}", dir.join("fs").display()),
                    format!("workdir={}", dir.join("work").display()),
                    // No inode index: layers are shared between many overlays, and the index
                    // would tie each lower to the first upper that copied it up.
                    "index=off".into(),
                ]
                .into_iter()
                .chain(volatile.then(|| "volatile".to_string()))
                .collect(),
            }],
        }
    }

    fn remove(&self, dir: &Path) -> Result<()> {
        fsutil::remove_tree(dir)
    }

    fn whiteouts(&self) -> Whiteouts {
        Whiteouts::Overlay
    }

    fn max_parents(&self) -> Option<usize> {
        Some(OVERLAY_MAX_LAYERS)
    }
}

/// overlayfs over EROFS layers: a layer applied into a fresh snapshot becomes one EROFS image
/// that indexes the layer's own tar (`layer.erofs`; no file is created per entry), mounted
/// read-only (file-backed, no loop device) on the snapshot's tree and stacked as an overlay
/// lower like overlay2's directories. Containers' uppers, and layers committed from them, are
/// overlay2's directories. Mounts are remade on demand (after a reboot, in another mount
/// namespace) before any mount spec names them.
pub struct Erofs;

impl Erofs {
    pub fn open(root: &Path) -> Result<impl Snapshotter + use<>> {
        for (fs_name, hint) in [("overlay", "modprobe overlay"), ("erofs", "modprobe erofs")] {
            if !has_filesystem(fs_name) {
                return Err(Error::Unsupported(format!(
                    "the erofs driver needs {fs_name} ({hint})"
                )));
            }
        }
        fs::create_dir_all(root).at("create", root)?;
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        if rustix::fs::statfs(root).is_ok_and(|s| s.f_type == TMPFS_MAGIC) {
            return Err(Error::Unsupported(format!(
                "the erofs driver needs its root on a disk filesystem (ext4, xfs, btrfs): the \
                 kernel does not mount EROFS images from tmpfs ({})",
                root.display()
            )));
        }
        let store = Store::open(root, Erofs)?;
        probe(root).map_err(|e| {
            Error::Unsupported(format!(
                "the erofs driver needs file-backed EROFS mounts with xattrs (Linux 6.12, \
                 CONFIG_EROFS_FS_BACKED_BY_FILE, CONFIG_EROFS_FS_XATTR): {e}"
            ))
        })?;
        Ok(store)
    }
}

/// Mounts a tiny image whose root is opaque and reads that back: without file-backed mounts
/// every commit would fail, and without xattrs deleted files would come back in containers.
fn probe(root: &Path) -> Result<()> {
    let image = root.join(".probe.erofs");
    let target = root.join(".probe");
    let clear = || {
        if erofs_mounted(&target) {
            let _ = rustix::mount::unmount(&target, rustix::mount::UnmountFlags::DETACH);
        }
        let _ = fs::remove_dir(&target);
        let _ = fs::remove_file(&image);
    };
    clear();
    let result = (|| {
        let file = fs::File::create_new(&image).at("create", &image)?;
        crate::layer::probe_image(&file)?;
        drop(file);
        make_dir(&target)?;
        mount_image(&image, &target)?;
        let mut value = [0u8; 8];
        let n = rustix::fs::getxattr(&target, "trusted.overlay.opaque", &mut value)
            .at("getxattr trusted.overlay.opaque", &target)?;
        if &value[..n] != b"y" {
            return Err(Error::Unsupported(
                "the probe image's xattr reads back wrong".into(),
            ));
        }
        Ok(())
    })();
    clear();
    result
}

/// A layer's image in its snapshot directory.
const LAYER_IMAGE: &str = "layer.erofs";
const EROFS_SUPER_MAGIC: i64 = 0xE0F5_E1E2;

fn erofs_mounted(tree: &Path) -> bool {
    rustix::fs::statfs(tree).is_ok_and(|s| s.f_type == EROFS_SUPER_MAGIC)
}

/// Mounts snapshot `dir`'s image on its tree, if it has one that is not mounted yet. Checked
/// and mounted under a lock on the image: two containers starting at once (threads, or
/// processes sharing the root) must not stack two mounts.
fn mount_layer_image(dir: &Path) -> Result<()> {
    let image = dir.join(LAYER_IMAGE);
    let tree = dir.join("fs");
    if erofs_mounted(&tree) {
        return Ok(());
    }
    let file = match fs::File::open(&image) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).at("open", &image),
    };
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).at("flock", &image)?;
    if erofs_mounted(&tree) {
        return Ok(());
    }
    mount_image(&image, &tree)
}

/// An EROFS image file mounted read-only at `target` (file-backed: no loop device).
fn mount_image(image: &Path, target: &Path) -> Result<()> {
    rustix::mount::mount(
        image,
        target,
        "erofs",
        rustix::mount::MountFlags::RDONLY,
        c"",
    )
    .at("mount (erofs)", image)
}

impl Backend for Erofs {
    fn name(&self) -> &'static str {
        "erofs"
    }

    fn create(&self, dir: &Path, parent: Option<&Path>, kind: Kind) -> Result<()> {
        Overlay.create(dir, parent, kind)
    }

    fn configure(&self, dir: &Path, labels: &Labels) -> Result<()> {
        Overlay.configure(dir, labels)
    }

    fn before_mount(&self, dir: &Path) -> Result<()> {
        Overlay.before_mount(dir)
    }

    fn is_stale(&self, dir: &Path) -> bool {
        Overlay.is_stale(dir)
    }

    fn ready(&self, dirs: &[PathBuf]) -> Result<()> {
        dirs.iter().try_for_each(|d| mount_layer_image(d))
    }

    fn image_target(&self, dir: &Path) -> Option<PathBuf> {
        // Only a fresh snapshot: what is already in its upper would be lost under the image.
        let empty = fs::read_dir(dir.join("fs")).is_ok_and(|mut d| d.next().is_none());
        let image = dir.join(LAYER_IMAGE);
        (empty && !image.exists()).then_some(image)
    }

    fn mounts(&self, dir: &Path, kind: Kind, parents: &[PathBuf]) -> Vec<Mount> {
        Overlay.mounts(dir, kind, parents)
    }

    fn commit(&self, dir: &Path) -> Result<()> {
        if dir.join(LAYER_IMAGE).exists() {
            // The image is mounted over the tree: anything written there would be hidden.
            let tree = dir.join("fs");
            if !erofs_mounted(&tree) && fs::read_dir(&tree).at("read", &tree)?.next().is_some() {
                return Err(Error::Invalid {
                    key: dir.display().to_string(),
                    reason: "a snapshot holding a layer image has files of its own too".into(),
                });
            }
            let work = dir.join("work");
            if work.exists() {
                fsutil::remove_tree(&work)?;
            }
            mount_layer_image(dir)?;
        }
        Ok(())
    }

    fn remove(&self, dir: &Path) -> Result<()> {
        let tree = dir.join("fs");
        // Detached: an overlay still using it (a container's) keeps it until it goes. Again
        // while one is there (mounts stacked by an older berth or by hand).
        for _ in 0..16 {
            if !erofs_mounted(&tree) {
                break;
            }
            rustix::mount::unmount(&tree, rustix::mount::UnmountFlags::DETACH)
                .at("unmount", &tree)?;
        }
        fsutil::remove_tree(dir)
    }

    fn whiteouts(&self) -> Whiteouts {
        Whiteouts::Overlay
    }

    fn max_parents(&self) -> Option<usize> {
        Some(OVERLAY_MAX_LAYERS)
    }

    fn usage(&self, dir: &Path) -> Result<crate::snapshot::Usage> {
        let image = dir.join(LAYER_IMAGE);
        match fs::metadata(&image) {
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                Ok(crate::snapshot::Usage {
                    size: m.blocks() * 512,
                    inodes: 1,
                })
            }
            Err(_) => fsutil::disk_usage(&dir.join("fs")),
        }
    }
}

/// Marks an overlay snapshot mounted `volatile`; holds the boot id it belongs to.
const VOLATILE_MARKER: &str = "volatile-boot";

fn boot_id() -> Result<String> {
    let path = "/proc/sys/kernel/random/boot_id";
    Ok(fs::read_to_string(path)
        .at("read", path)?
        .trim()
        .to_string())
}

fn volatile_boot(dir: &Path) -> Option<String> {
    fs::read_to_string(dir.join(VOLATILE_MARKER))
        .ok()
        .map(|s| s.trim().to_string())
}

/// btrfs: a snapshot's tree is a subvolume; a child is a snapshot of its parent's subvolume
/// (copy-on-write, constant time); committing makes the subvolume read-only.
pub struct Btrfs;

impl Btrfs {
    pub fn open(root: &Path) -> Result<impl Snapshotter + use<>> {
        fs::create_dir_all(root).at("create", root)?;
        let st = rustix::fs::statfs(root).at("statfs", root)?;
        if st.f_type as i64 != btrfs_ioctl::BTRFS_SUPER_MAGIC {
            return Err(Error::Unsupported(format!(
                "{} is not on btrfs",
                root.display()
            )));
        }
        Store::open(root, Btrfs)
    }
}

impl Backend for Btrfs {
    fn name(&self) -> &'static str {
        "btrfs"
    }

    fn create(&self, dir: &Path, parent: Option<&Path>, kind: Kind) -> Result<()> {
        make_dir(dir)?;
        let result = match (parent, kind) {
            (Some(p), Kind::Active) => btrfs_ioctl::snapshot(&p.join("fs"), dir, "fs", false),
            _ => btrfs_ioctl::create_subvolume(dir, "fs"),
        };
        if result.is_err() {
            let _ = fs::remove_dir(dir);
        }
        result
    }

    fn mounts(&self, dir: &Path, kind: Kind, parents: &[PathBuf]) -> Vec<Mount> {
        whole_tree_mounts(dir, kind, parents)
    }

    fn commit(&self, dir: &Path) -> Result<()> {
        btrfs_ioctl::set_read_only(&dir.join("fs"), true)
    }

    fn limit_size(&self, dir: &Path, bytes: u64) -> Result<()> {
        btrfs_ioctl::limit_size(&dir.join("fs"), bytes)
    }

    fn remove(&self, dir: &Path) -> Result<()> {
        let fs_dir = dir.join("fs");
        if fs_dir.exists() {
            btrfs_ioctl::delete_subvolume(dir, "fs")?;
        }
        fsutil::remove_tree(dir)
    }

    fn whiteouts(&self) -> Whiteouts {
        Whiteouts::Delete
    }
}
