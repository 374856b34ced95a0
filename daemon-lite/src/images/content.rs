//! The content store: blobs (manifests, configs, layers as they were pulled, loaded or
//! imported) under `blobs/sha256/<hex>`, each verified against its digest before it becomes
//! visible (written to a temporary file, renamed into place). `push` and `save` send these
//! very bytes, so digests survive a round trip.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::records;

/// A blob as a manifest names it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

pub struct ContentStore {
    dir: PathBuf,
    /// Downloads in progress or cut short, `ingest/<hex>`: kept so the next attempt resumes.
    ingest_dir: PathBuf,
    /// One writer per ingest at a time (two pulls sharing a layer take turns; the second
    /// finds the blob there).
    ingest_locks: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn hex_of(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
    .then_some(hex)
}

impl ContentStore {
    pub fn open(dir: &Path) -> io::Result<ContentStore> {
        let ingest_dir = dir.join("ingest");
        fs::create_dir_all(&ingest_dir).map_err(|e| records::at(e, "mkdir", &ingest_dir))?;
        let dir = dir.join("sha256");
        fs::create_dir_all(&dir).map_err(|e| records::at(e, "mkdir", &dir))?;
        for entry in fs::read_dir(&dir)?.flatten() {
            // Writes a crash cut short.
            if entry.file_name().to_string_lossy().ends_with(".partial") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(ContentStore {
            dir,
            ingest_dir,
            ingest_locks: Default::default(),
        })
    }

    /// The blob's file, if the digest is well formed (never a path outside the store).
    pub fn path(&self, digest: &str) -> Option<PathBuf> {
        hex_of(digest).map(|h| self.dir.join(h))
    }

    pub fn has(&self, digest: &str) -> bool {
        self.path(digest).is_some_and(|p| p.exists())
    }

    pub fn read(&self, digest: &str) -> io::Result<Vec<u8>> {
        let p = self
            .path(digest)
            .ok_or_else(|| io::Error::other(format!("bad digest {digest:?}")))?;
        fs::read(&p).map_err(|e| records::at(e, "read", &p))
    }

    /// Stores `bytes`, which must hash to `digest`.
    pub fn write(&self, digest: &str, bytes: &[u8]) -> io::Result<()> {
        let mut w = self.writer()?;
        w.write_all(bytes)?;
        w.commit(self, digest)
    }

    pub fn writer(&self) -> io::Result<BlobWriter> {
        let tmp = self
            .dir
            .join(format!("{}.partial", crate::names::new_id()?));
        let file = File::create(&tmp).map_err(|e| records::at(e, "create", &tmp))?;
        Ok(BlobWriter {
            file,
            tmp,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// The lock to hold while writing the ingest of `digest`.
    pub fn ingest_lock(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.ingest_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(digest.to_string()).or_default().clone()
    }

    /// Opens the download of `digest` where the last attempt left it (hashing what is there),
    /// or a new one. The caller holds [`ContentStore::ingest_lock`].
    pub fn ingest(&self, digest: &str) -> io::Result<Ingest> {
        let hex =
            hex_of(digest).ok_or_else(|| io::Error::other(format!("bad digest {digest:?}")))?;
        let path = self.ingest_dir.join(hex);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| records::at(e, "open", &path))?;
        let mut hasher = Sha256::new();
        let size = io::copy(&mut file, &mut hasher).map_err(|e| records::at(e, "read", &path))?;
        Ok(Ingest {
            file,
            path,
            hasher,
            size,
        })
    }

    /// Drops every download left by an earlier attempt and not going on (prune); the bytes
    /// freed.
    pub fn clear_ingests(&self) -> u64 {
        let mut freed = 0;
        for entry in fs::read_dir(&self.ingest_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let busy = self
                .ingest_locks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&format!("sha256:{name}"))
                .is_some_and(|l| l.try_lock().is_err());
            if !busy {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                if fs::remove_file(entry.path()).is_ok() {
                    freed += size;
                }
            }
        }
        freed
    }

    /// Removes blobs no one names any more.
    pub fn retain(&self, keep: &std::collections::HashSet<String>) {
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&format!("sha256:{name}")) && !name.ends_with(".partial") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Makes the file at `tmp` the blob `digest` if what was written hashes to it (durable
/// first); otherwise removes it.
fn publish(
    hasher: Sha256,
    file: &File,
    tmp: &Path,
    store: &ContentStore,
    digest: &str,
) -> io::Result<()> {
    let actual = format!("sha256:{:x}", hasher.finalize());
    let target = store
        .path(digest)
        .ok_or_else(|| io::Error::other(format!("bad digest {digest:?}")))?;
    if actual != digest {
        let _ = fs::remove_file(tmp);
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("blob is {actual}, expected {digest}"),
        ));
    }
    file.sync_all().map_err(|e| records::at(e, "fsync", tmp))?;
    fs::rename(tmp, &target).map_err(|e| records::at(e, "rename", &target))
}

/// A blob being written; visible only once `commit` found its digest right.
pub struct BlobWriter {
    file: File,
    tmp: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Checks the digest, makes the blob durable and visible.
    pub fn commit(mut self, store: &ContentStore, digest: &str) -> io::Result<()> {
        let hasher = std::mem::take(&mut self.hasher);
        let published = publish(hasher, &self.file, &self.tmp, store, digest);
        if published.is_ok() {
            self.tmp = PathBuf::new(); // renamed: nothing for Drop to remove
        }
        published
    }

    /// The digest of what was written (for blobs whose digest is learnt by writing them).
    pub fn commit_computed(mut self, store: &ContentStore) -> io::Result<String> {
        let digest = format!("sha256:{:x}", self.hasher.clone().finalize());
        self.file.sync_all()?;
        let target = store
            .path(&digest)
            .ok_or_else(|| io::Error::other("digest"))?;
        fs::rename(&self.tmp, &target).map_err(|e| records::at(e, "rename", &target))?;
        self.tmp = PathBuf::new();
        Ok(digest)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A blob being downloaded: appended to across attempts, visible as a blob only once
/// [`Ingest::commit`] found its digest right.
pub struct Ingest {
    file: File,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl Ingest {
    /// The bytes already there (where a resumed download starts).
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file
            .write_all(buf)
            .map_err(|e| records::at(e, "write", &self.path))?;
        self.hasher.update(buf);
        self.size += buf.len() as u64;
        Ok(())
    }

    /// Checks the digest, makes the blob durable and visible. A wrong digest drops the
    /// ingest, so the next attempt starts over.
    pub fn commit(self, store: &ContentStore, digest: &str) -> io::Result<()> {
        publish(self.hasher, &self.file, &self.path, store, digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_before_they_are_visible() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let digest = format!("sha256:{:x}", Sha256::digest(b"hello"));
        store.write(&digest, b"hello").unwrap();
        assert_eq!(store.read(&digest).unwrap(), b"hello");
        let wrong = format!("sha256:{:x}", Sha256::digest(b"other"));
        assert!(store.write(&wrong, b"hello").is_err());
        assert!(!store.has(&wrong));
        assert!(store.path("sha256:../../etc/passwd").is_none());
        assert!(store.path("md5:abc").is_none());
        assert_eq!(
            fs::read_dir(dir.path().join("sha256")).unwrap().count(),
            1,
            "no partial left"
        );
    }

    #[test]
    fn an_ingest_resumes_where_it_was_cut_and_is_checked_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let digest = format!("sha256:{:x}", Sha256::digest(b"hello world"));
        let mut first = store.ingest(&digest).unwrap();
        first.append(b"hello").unwrap();
        drop(first); // cut short
        assert!(!store.has(&digest));
        let mut second = store.ingest(&digest).unwrap();
        assert_eq!(second.size(), 5);
        second.append(b" world").unwrap();
        second.commit(&store, &digest).unwrap();
        assert_eq!(store.read(&digest).unwrap(), b"hello world");

        let wrong = format!("sha256:{:x}", Sha256::digest(b"other"));
        let mut bad = store.ingest(&wrong).unwrap();
        bad.append(b"not it").unwrap();
        assert!(bad.commit(&store, &wrong).is_err());
        assert!(!store.has(&wrong));
        assert_eq!(
            store.ingest(&wrong).unwrap().size(),
            0,
            "a wrong ingest starts over"
        );
    }
}
