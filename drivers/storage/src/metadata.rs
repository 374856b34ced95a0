//! The snapshot records of one driver root: one JSON document, replaced atomically (temp file,
//! fsync, rename, fsync of the directory) under an exclusive lock, so a crash leaves either the
//! old records or the new ones, and several processes may share a root.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::snapshot::{Info, Kind, Labels};

/// One snapshot's record; `id` names its directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub id: u64,
    pub parent: Option<String>,
    pub kind: Kind,
    pub created: u64,
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Records {
    pub next_id: u64,
    pub snapshots: BTreeMap<String, Record>,
}

impl Records {
    pub fn get(&self, key: &str) -> Result<&Record> {
        self.snapshots
            .get(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))
    }

    pub fn info(&self, key: &str) -> Result<Info> {
        let r = self.get(key)?;
        Ok(Info {
            key: key.to_string(),
            parent: r.parent.clone(),
            kind: r.kind,
            created: r.created,
            labels: r.labels.clone(),
        })
    }

    /// The chain from `key` up to the base layer: `key` first.
    pub fn chain<'a>(&'a self, key: &'a str) -> Result<Vec<(&'a str, &'a Record)>> {
        let mut out = Vec::new();
        let mut next = Some(key);
        while let Some(k) = next {
            let r = self.get(k)?;
            out.push((k, r));
            if out.len() > self.snapshots.len() {
                return Err(Error::Invalid {
                    key: key.to_string(),
                    reason: "its parents form a cycle".into(),
                });
            }
            next = r.parent.as_deref();
        }
        Ok(out)
    }

    pub fn has_children(&self, key: &str) -> bool {
        self.snapshots
            .values()
            .any(|r| r.parent.as_deref() == Some(key))
    }
}

/// The records file of a root, and its lock.
pub(crate) struct MetaStore {
    path: PathBuf,
    lock_path: PathBuf,
}

/// Held while records are read and rewritten.
pub(crate) struct Locked<'a> {
    store: &'a MetaStore,
    _lock: OwnedFd,
    pub records: Records,
}

impl MetaStore {
    pub fn open(root: &Path) -> Result<MetaStore> {
        fs::create_dir_all(root).at("create", root)?;
        Ok(MetaStore {
            path: root.join("metadata.json"),
            lock_path: root.join("metadata.lock"),
        })
    }

    /// Reads the records under the lock; `Locked::save` writes them back.
    pub fn lock(&self) -> Result<Locked<'_>> {
        let lock: OwnedFd = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .at("open", &self.lock_path)?
            .into();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .at("lock", &self.lock_path)?;
        let records = self.read()?;
        Ok(Locked {
            store: self,
            _lock: lock,
            records,
        })
    }

    /// The records as last saved (no lock: a consistent, possibly stale, view).
    pub fn read(&self) -> Result<Records> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Invalid {
                key: String::new(),
                reason: format!("{}: {e}", self.path.display()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Records::default()),
            Err(e) => Err(e).at("read", &self.path),
        }
    }
}

impl Locked<'_> {
    pub fn save(&self) -> Result<()> {
        let bytes = serde_json::to_vec(&self.records).map_err(|e| Error::Sys {
            op: "encode snapshot records".into(),
            source: e.into(),
        })?;
        crate::fsutil::write_atomic(&self.store.path, &bytes)
    }
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
