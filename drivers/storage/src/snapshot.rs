//! The snapshotter interface every driver implements, in containerd's shape: snapshots named by
//! key with a parent, `prepare` (writable) and `view` (read-only) return mount specs the caller
//! mounts where it likes (inside a container's mount namespace, for instance), `commit` turns
//! an active snapshot into an immutable layer others can build on.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Free-form metadata on a snapshot (an engine's layer digest, a GC root marker …).
pub type Labels = BTreeMap<String, String>;

/// What a snapshot is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Read-only, from `view`; never committed.
    View,
    /// Writable, from `prepare`; a container's root or a layer being applied.
    Active,
    /// Immutable, from `commit`: a layer.
    Committed,
}

/// A snapshot's description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub key: String,
    pub parent: Option<String>,
    pub kind: Kind,
    /// Seconds since the epoch.
    pub created: u64,
    #[serde(default)]
    pub labels: Labels,
}

/// Space a snapshot uses by itself (not counting its parents).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub size: u64,
    pub inodes: u64,
}

/// One mount, as containerd describes it: mount `source` with `typ` and `options` at a target
/// of the caller's choice. `crate::mount::mount` does it (with the new mount API for overlay,
/// so any number of layers fits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub typ: String,
    pub source: PathBuf,
    pub options: Vec<String>,
}

/// How a driver records a deletion in an upper layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whiteouts {
    /// overlayfs: a 0/0 character device for a file, `trusted.overlay.opaque=y` on a
    /// directory whose lower contents are hidden.
    Overlay,
    /// The snapshot holds the whole tree (vfs, btrfs): a deletion deletes.
    Delete,
}

/// Where a layer is written into an active snapshot, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyTarget {
    pub dir: PathBuf,
    pub whiteouts: Whiteouts,
    /// Instead of files in `dir`: an EROFS image to make here that indexes the layer's tar
    /// (the `erofs` driver, for a fresh snapshot; whiteouts are then overlay's).
    pub image: Option<PathBuf>,
}

/// Where a snapshot's changes are read from, to produce its layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changes {
    /// The directory holds exactly the changes, with overlay whiteouts (overlay2's upper).
    Upper(PathBuf),
    /// The changes are the differences between a full tree and its parent's full tree.
    Compare {
        lower: Option<PathBuf>,
        upper: PathBuf,
    },
}

/// One interface for every storage driver.
///
/// An engine pulling an image applies each layer into `prepare(tmp, parent)`, then
/// `commit(layer, tmp)`; a container gets `prepare(container, top_layer)` and mounts what it
/// returns as its rootfs; `docker commit` is `crate::diff` of the container's snapshot.
/// Keys are the engine's; parents must be committed snapshots.
pub trait Snapshotter: Send + Sync {
    /// The driver's name (`overlay2`, `btrfs`, `vfs`).
    fn driver(&self) -> &'static str;

    /// A writable snapshot on top of `parent` (or empty).
    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>>;

    /// A read-only snapshot of `parent` (or empty).
    fn view(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>>;

    /// The mounts of an active snapshot or view, again.
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;

    /// Turns the active snapshot `key` into the committed snapshot `name`.
    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()>;

    /// Removes a snapshot that no other snapshot has as parent.
    fn remove(&self, key: &str) -> Result<()>;

    fn stat(&self, key: &str) -> Result<Info>;

    /// Space the snapshot itself uses.
    fn usage(&self, key: &str) -> Result<Usage>;

    /// Every snapshot, parents before children.
    fn walk(&self, f: &mut dyn FnMut(&Info) -> Result<()>) -> Result<()>;

    /// Removes what a crash left: directories no record names, and snapshots an interrupted
    /// layer apply left behind (keys starting with [`EXTRACT_PREFIX`]). Run it on start.
    fn cleanup(&self) -> Result<()>;

    /// Where a layer is applied into the active snapshot `key`.
    fn apply_target(&self, key: &str) -> Result<ApplyTarget>;

    /// Where the changes of snapshot `key` are read, for its layer.
    fn changes(&self, key: &str) -> Result<Changes>;
}

/// A label asking `prepare` to cap the snapshot's size, in bytes (btrfs: a qgroup limit on
/// what the subvolume references). Drivers that cannot enforce one refuse the snapshot.
pub const SIZE_LIMIT_LABEL: &str = "berth.io/size-limit";

/// A label (`true`) asking overlay2 to mount the snapshot `volatile`: no syncs to the upper
/// directory, for containers whose writes need not survive a crash of the host. Safe because
/// the driver records the boot the snapshot belongs to: after a reboot the snapshot is refused
/// and `cleanup` removes it, as overlayfs requires of a volatile upper.
pub const OVERLAY_VOLATILE_LABEL: &str = "berth.io/overlay-volatile";

/// Active snapshots a layer is being applied into carry keys with this prefix until they are
/// committed, so `cleanup` knows an interrupted apply from a container's root.
pub const EXTRACT_PREFIX: &str = "extract-";
