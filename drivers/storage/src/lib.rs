//! berth's storage drivers behind one [`Snapshotter`] trait: overlay2, erofs (overlay over
//! EROFS layer images), btrfs, devicemapper and vfs, plus the layer code every driver shares:
//! [`layer::apply`] (an OCI/Docker layer stream into a snapshot, digest-checked, extracted so
//! that no entry can reach outside the snapshot) and [`layer::diff`] (a snapshot's changes as
//! a layer).
//!
//! An engine pulling an image and starting a container:
//!
//! ```no_run
//! use berth_storage::{Overlay, Snapshotter, layer, mount};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let snapshotter = Overlay::open("/var/lib/berth/overlay2".as_ref())?;
//! snapshotter.cleanup()?; // what a crash left behind
//! let mut parent: Option<String> = None;
//! for (digest, blob) in [("sha256:aa…", std::fs::File::open("layer0.tar.gz")?)] {
//!     let opts = layer::ApplyOptions { digest: Some(digest.into()), ..Default::default() };
//!     layer::apply_layer(&snapshotter, digest, parent.as_deref(), blob, &opts, Default::default())?;
//!     parent = Some(digest.to_string());
//! }
//! let mounts = snapshotter.prepare("container-1", parent.as_deref(), Default::default())?;
//! mount::mount(&mounts, "/run/berth/container-1/rootfs".as_ref())?;
//! // … run the container; later, `docker commit`:
//! let mut tar = Vec::new();
//! layer::diff(&snapshotter.changes("container-1")?, &mut tar)?;
//! # Ok(()) }
//! ```

mod btrfs_ioctl;
mod devmapper;
mod drivers;
mod error;
mod fsutil;
pub mod layer;
mod metadata;
pub mod mount;
mod snapshot;
mod store;

pub use devmapper::{DeviceMapper, DeviceMapperConfig, PoolSpace, pool_status};
pub use drivers::{Btrfs, Erofs, Overlay, Vfs, open};
pub use error::{Error, Result};
pub use snapshot::{
    ApplyTarget, Changes, EXTRACT_PREFIX, Info, Kind, Labels, Mount, OVERLAY_VOLATILE_LABEL,
    SIZE_LIMIT_LABEL, Snapshotter, Usage, Whiteouts,
};
