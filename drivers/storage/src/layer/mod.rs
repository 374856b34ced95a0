//! Layers: applying an OCI/Docker layer stream to a snapshot (`apply`), and producing the layer
//! of a snapshot's changes (`diff`). Both sit beside the [`Snapshotter`] trait and work for
//! every driver through [`ApplyTarget`] and [`Changes`].
//!
//! [`Snapshotter`]: crate::Snapshotter
//! [`ApplyTarget`]: crate::ApplyTarget
//! [`Changes`]: crate::Changes

mod apply;
mod diff;
mod reader;

use std::io::{self, BufReader, Read};

pub use apply::{ApplyOptions, DevicePolicy};
pub use diff::diff;
pub use reader::{Compression, EntryKind, MAX_EXTENSION, MAX_PATH, normalize};

use crate::error::{Error, Result};
use crate::snapshot::{ApplyTarget, EXTRACT_PREFIX, Labels, Snapshotter};

/// What an applied layer was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Digest of the blob as read (compressed): the layer's digest in a manifest.
    pub digest: String,
    /// Digest of the uncompressed tar: the image config's `diff_id`.
    pub diff_id: String,
    pub compression: Compression,
    pub entries: u64,
}

/// Applies the layer stream `input` (tar; gzip or zstd recognized by magic number) to the
/// directory of `target`. Reads the stream to its end, so the digest covers every byte; a
/// digest mismatch is an error after the fact, so apply into a snapshot you can throw away
/// (see [`apply_layer`]).
pub fn apply(target: &ApplyTarget, input: impl Read, opts: &ApplyOptions) -> Result<Applied> {
    let mut blob = reader::DigestReader::new(input);
    let (compression, diff_id, entries) = {
        let (compression, tar_stream) =
            reader::decompress(BufReader::with_capacity(256 * 1024, &mut blob))?;
        let mut tar_stream = reader::DigestReader::new(tar_stream);
        let entries = {
            let mut archive = tar::Archive::new(&mut tar_stream);
            let mut entries = reader::TarEntries::new(&mut archive)?;
            let mut writer = apply::Writer::open(&target.dir, target.whiteouts, opts)?;
            let mut n = 0u64;
            while let Some((meta, mut data)) = entries.next_entry()? {
                writer.entry(&meta, &mut data)?;
                n += 1;
            }
            writer.finish()?;
            n
        };
        // The end-of-archive blocks and padding count for the digests.
        io::copy(&mut tar_stream, &mut io::sink())
            .map_err(|e| Error::Layer(format!("read: {e}")))?;
        (compression, tar_stream.digest(), entries)
    };
    io::copy(&mut blob, &mut io::sink()).map_err(|e| Error::Layer(format!("read: {e}")))?;
    let digest = blob.digest();
    if let Some(expected) = &opts.digest {
        if expected != &digest {
            return Err(Error::Digest {
                expected: expected.clone(),
                actual: digest,
            });
        }
    }
    Ok(Applied {
        digest,
        diff_id,
        compression,
        entries,
    })
}

/// Applies a layer as the committed snapshot `name` on `parent`: into a scratch snapshot
/// (`extract-…`, which `cleanup` removes after a crash) that is committed only when the whole
/// layer is in and its digest matched, and removed on any error. No half-applied layer is ever
/// visible under `name`.
pub fn apply_layer(
    snapshotter: &dyn Snapshotter,
    name: &str,
    parent: Option<&str>,
    input: impl Read,
    opts: &ApplyOptions,
    labels: Labels,
) -> Result<Applied> {
    let scratch = format!("{EXTRACT_PREFIX}{}-{name}", std::process::id());
    snapshotter.prepare(&scratch, parent, Labels::new())?;
    let result = snapshotter
        .apply_target(&scratch)
        .and_then(|target| apply(&target, input, opts))
        .and_then(|applied| {
            snapshotter.commit(name, &scratch, labels)?;
            Ok(applied)
        });
    if result.is_err() {
        let _ = snapshotter.remove(&scratch);
    }
    result
}
