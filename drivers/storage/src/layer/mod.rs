//! Layers: applying an OCI/Docker layer stream to a snapshot (`apply`), and producing the layer
//! of a snapshot's changes (`diff`). Both sit beside the [`Snapshotter`] trait and work for
//! every driver through [`ApplyTarget`] and [`Changes`].
//!
//! [`Snapshotter`]: crate::Snapshotter
//! [`ApplyTarget`]: crate::ApplyTarget
//! [`Changes`]: crate::Changes

mod apply;
mod diff;
mod erofs;
mod reader;

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::mpsc;

pub use apply::{ApplyOptions, DevicePolicy};
pub use diff::diff;
pub(crate) use erofs::probe_image;
pub use reader::{Compression, EntryKind, MAX_EXTENSION, MAX_PATH, normalize};

use crate::error::{Context, Error, Result};
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
/// directory of `target`, or, when the target asks for an image, indexes it into a new EROFS
/// image there (the tar itself is the image's data; see `erofs.rs`). Reads the stream to its
/// end, so the digest covers every byte; a digest mismatch is an error after the fact, so
/// apply into a snapshot you can throw away (see [`apply_layer`]).
///
/// Reading, hashing and decompressing run on a thread of their own, feeding the thread that
/// creates the files: the two overlap (on two cores a gzip layer applies in about the time the
/// file creation alone takes).
pub fn apply(
    target: &ApplyTarget,
    input: impl Read + Send,
    opts: &ApplyOptions,
) -> Result<Applied> {
    if let Some(image) = &target.image {
        return apply_image(image, input, opts);
    }
    let mut writer = apply::Writer::open(&target.dir, target.whiteouts, opts)?;
    let streamed = stream(input, None, |meta, data| writer.entry(meta, data))?;
    writer.finish()?;
    streamed.applied(opts)
}

/// The layer as an EROFS image at `image` (made here; removed again on an error).
fn apply_image(image: &Path, input: impl Read + Send, opts: &ApplyOptions) -> Result<Applied> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(image)
        .at("create", image)?;
    let mut index = erofs::IndexBuilder::new(opts);
    let result = stream(input, Some(&file), |meta, data| {
        index.entry(meta, data.raw_file_position())
    })
    .and_then(|streamed| {
        // The digest first: a blob other than the one asked for is not indexed at all.
        let tar_len = streamed.tar_len;
        let applied = streamed.applied(opts)?;
        index.finish(&file, tar_len)?;
        Ok(applied)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(image);
    }
    result
}

/// What reading a whole layer stream gave.
struct Streamed {
    compression: Compression,
    digest: String,
    diff_id: String,
    entries: u64,
    /// Bytes of the uncompressed tar.
    tar_len: u64,
}

impl Streamed {
    /// The result, once the blob's digest is the one expected.
    fn applied(self, opts: &ApplyOptions) -> Result<Applied> {
        if let Some(expected) = &opts.digest {
            if expected != &self.digest {
                return Err(Error::Digest {
                    expected: expected.clone(),
                    actual: self.digest,
                });
            }
        }
        Ok(Applied {
            digest: self.digest,
            diff_id: self.diff_id,
            compression: self.compression,
            entries: self.entries,
        })
    }
}

/// Reads the layer to its end on a producer thread (digest, decompression) and hands each
/// entry to `each` on this one; the uncompressed tar is also written to `copy_to` (at
/// [`erofs::TAR_OFFSET`]) when given.
fn stream<'f>(
    input: impl Read + Send,
    copy_to: Option<&'f File>,
    mut each: impl FnMut(&reader::EntryMeta, &mut tar::Entry<'_, &mut ChannelReader<'f>>) -> Result<()>,
) -> Result<Streamed> {
    let (stream_result, produced) = std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel(16);
        let producer = scope.spawn(move || produce(input, tx));
        let mut stream = ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
            copy_to,
            total: 0,
        };
        let result = (|| {
            let mut n = 0u64;
            {
                let mut archive = tar::Archive::new(&mut stream);
                let mut entries = reader::TarEntries::new(&mut archive)?;
                while let Some((meta, mut data)) = entries.next_entry()? {
                    each(&meta, &mut data)?;
                    n += 1;
                }
            }
            // The end-of-archive blocks and padding count for the digests.
            io::copy(&mut stream, &mut io::sink())
                .map_err(|e| Error::Layer(format!("read: {e}")))?;
            Ok::<(u64, u64), Error>((n, stream.total))
        })();
        // On an error the producer finds the channel closed and stops.
        drop(stream);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(Error::Layer("the layer reader thread panicked".into())));
        (result, produced)
    });
    // A read or decompression error explains a parse error better than the parse error does;
    // a producer stopped by the writer's own error has nothing to add.
    let (compression, digest, diff_id) = match (produced, stream_result.as_ref()) {
        (Ok(Some(p)), _) => p,
        (Ok(None), _) => {
            return Err(stream_result
                .err()
                .unwrap_or_else(|| Error::Layer("the layer reader stopped early".into())));
        }
        (Err(e), _) => return Err(e),
    };
    let (entries, tar_len) = stream_result?;
    Ok(Streamed {
        compression,
        digest,
        diff_id,
        entries,
        tar_len,
    })
}

const CHUNK: usize = 256 * 1024;

/// Reads, hashes and decompresses the blob, sending the tar stream in chunks. Returns the
/// compression, the blob's digest and the tar's digest (the same hash when uncompressed).
/// `Ok(None)`: the writer hung up first (it failed, and says why).
fn produce(
    input: impl Read,
    tx: mpsc::SyncSender<io::Result<Vec<u8>>>,
) -> Result<Option<(Compression, String, String)>> {
    let mut blob = reader::DigestReader::new(input);
    let fail = |tx: &mpsc::SyncSender<io::Result<Vec<u8>>>, e: Error| {
        let _ = tx.send(Err(io::Error::other(e.to_string())));
        e
    };
    let (compression, tar_stream) =
        reader::decompress(BufReader::with_capacity(CHUNK, &mut blob)).map_err(|e| fail(&tx, e))?;
    let compressed = compression != Compression::None;
    let mut tar_stream = reader::DigestReader::with_hashing(tar_stream, compressed);
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let n = match tar_stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(&tx, Error::Layer(format!("read: {e}")))),
        };
        chunk.truncate(n);
        if tx.send(Ok(chunk)).is_err() {
            return Ok(None);
        }
    }
    let diff_id = compressed.then(|| tar_stream.digest());
    drop(tar_stream);
    // Bytes after the compressed stream still count for the blob's digest.
    io::copy(&mut blob, &mut io::sink())
        .map_err(|e| fail(&tx, Error::Layer(format!("read: {e}"))))?;
    let digest = blob.digest();
    Ok(Some((
        compression,
        digest.clone(),
        diff_id.unwrap_or(digest),
    )))
}

/// The tar stream as it arrives from the producer thread (copied, chunk by chunk, into the
/// layer image when there is one).
struct ChannelReader<'f> {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    copy_to: Option<&'f File>,
    /// Bytes received so far.
    total: u64,
}

impl Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    if let Some(file) = self.copy_to {
                        use std::os::unix::fs::FileExt;
                        file.write_all_at(&chunk, erofs::TAR_OFFSET + self.total)
                            .map_err(|e| {
                                io::Error::new(e.kind(), format!("writing the layer image: {e}"))
                            })?;
                    }
                    self.total += chunk.len() as u64;
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The producer is done: end of stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Applies a layer as the committed snapshot `name` on `parent`: into a scratch snapshot
/// (`extract-…`, which `cleanup` removes after a crash) that is committed only when the whole
/// layer is in and its digest matched, and removed on any error. No half-applied layer is ever
/// visible under `name`.
pub fn apply_layer(
    snapshotter: &dyn Snapshotter,
    name: &str,
    parent: Option<&str>,
    input: impl Read + Send,
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
