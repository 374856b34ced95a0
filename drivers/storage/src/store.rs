//! The bookkeeping every driver shares (keys, parents, kinds, records, crash cleanup), around a
//! `Backend` that only knows how to make, mount and remove one snapshot's directory.
//!
//! Layout of a root: `metadata.json` (the records), `snapshots/<id>/` (one per snapshot; the
//! tree is in `fs/`, overlay adds `work/`). A directory is made before its record is saved
//! and its record removed before the directory (renamed to `removing-<id>` first), so a crash
//! leaves at worst a directory without a record, which `cleanup` removes.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Context, Error, Result};
use crate::metadata::{MetaStore, Record, now};
use crate::snapshot::{
    ApplyTarget, Changes, EXTRACT_PREFIX, Info, Kind, Labels, Mount, SIZE_LIMIT_LABEL, Snapshotter,
    Usage, Whiteouts,
};

/// What differs between drivers.
pub(crate) trait Backend: Send + Sync {
    fn name(&self) -> &'static str;

    /// Makes the snapshot directory `dir` (absent so far) with its tree in `dir/fs`: empty, or
    /// holding what `parent` (a committed snapshot's directory) holds where the driver keeps
    /// whole trees.
    fn create(&self, dir: &Path, parent: Option<&Path>, kind: Kind) -> Result<()>;

    /// Driver-specific labels of a new snapshot (made by `create` just before).
    fn configure(&self, _dir: &Path, _labels: &Labels) -> Result<()> {
        Ok(())
    }

    /// Called before a snapshot's mounts are handed out again.
    fn before_mount(&self, _dir: &Path) -> Result<()> {
        Ok(())
    }

    /// Whether a snapshot can no longer be trusted (`cleanup` removes it).
    fn is_stale(&self, _dir: &Path) -> bool {
        false
    }

    /// Caps the space snapshot `dir` may use (label [`SIZE_LIMIT_LABEL`]).
    fn limit_size(&self, _dir: &Path, _bytes: u64) -> Result<()> {
        Err(Error::Unsupported(format!(
            "{}: size limits ({SIZE_LIMIT_LABEL}) need the btrfs driver",
            self.name()
        )))
    }

    /// Mounts of snapshot `dir`; `parents` are the directories of its ancestors, nearest first.
    fn mounts(&self, dir: &Path, kind: Kind, parents: &[PathBuf]) -> Vec<Mount>;

    /// Makes the trees of these snapshots readable where they need more than a directory
    /// (the `erofs` driver mounts its layer images), before mounts name them.
    fn ready(&self, _dirs: &[PathBuf]) -> Result<()> {
        Ok(())
    }

    /// Where a fresh snapshot's layer goes as an image rather than as files, if the driver
    /// keeps layers as images.
    fn image_target(&self, _dir: &Path) -> Option<PathBuf> {
        None
    }

    /// Makes the tree immutable where the driver can.
    fn commit(&self, _dir: &Path) -> Result<()> {
        Ok(())
    }

    /// Removes a snapshot directory entirely.
    fn remove(&self, dir: &Path) -> Result<()>;

    fn whiteouts(&self) -> Whiteouts;

    /// Where snapshot `dir`'s tree is.
    fn tree(&self, dir: &Path) -> PathBuf {
        dir.join("fs")
    }

    /// How many ancestors a snapshot may have (overlay's stacking limit), if bounded.
    fn max_parents(&self) -> Option<usize> {
        None
    }

    fn changes(&self, dir: &Path, parent: Option<&Path>) -> Result<Changes> {
        Ok(match self.whiteouts() {
            Whiteouts::Overlay => Changes::Upper(self.tree(dir)),
            Whiteouts::Delete => Changes::Compare {
                lower: parent.map(|p| self.tree(p)),
                upper: self.tree(dir),
            },
        })
    }

    fn usage(&self, dir: &Path) -> Result<Usage> {
        crate::fsutil::disk_usage(&self.tree(dir))
    }
}

/// A driver root: the records plus a backend.
pub(crate) struct Store<B: Backend> {
    root: PathBuf,
    meta: MetaStore,
    pub(crate) backend: B,
}

impl<B: Backend> Store<B> {
    pub fn open(root: &Path, backend: B) -> Result<Store<B>> {
        let snapshots = root.join("snapshots");
        fs::create_dir_all(&snapshots).at("create", &snapshots)?;
        Ok(Store {
            root: root.to_path_buf(),
            meta: MetaStore::open(root)?,
            backend,
        })
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        check_key(key)?;
        let mut locked = self.meta.lock()?;
        if locked.records.snapshots.contains_key(key) {
            return Err(Error::Exists(key.to_string()));
        }
        let parent_dir = match parent {
            Some(p) => {
                let r = locked.records.get(p)?;
                if r.kind != Kind::Committed {
                    return Err(Error::Invalid {
                        key: key.to_string(),
                        reason: format!("parent {p:?} is not committed"),
                    });
                }
                let ancestors = locked.records.chain(p)?.len();
                if let Some(max) = self.backend.max_parents().filter(|&m| ancestors > m) {
                    return Err(Error::Unsupported(format!(
                        "{}: a snapshot may have at most {max} layers below it; \
                         {key:?} would have {ancestors}",
                        self.backend.name()
                    )));
                }
                Some(self.dir(r.id))
            }
            None => None,
        };
        let id = locked.records.next_id.max(1);
        locked.records.next_id = id + 1;
        let dir = self.dir(id);
        // A directory of that id left by a crash (no record names it) is stale.
        if dir.exists() {
            self.backend.remove(&dir)?;
        }
        let size_limit = labels
            .get(SIZE_LIMIT_LABEL)
            .map(|v| {
                v.parse::<u64>().map_err(|_| Error::Invalid {
                    key: key.to_string(),
                    reason: format!("{SIZE_LIMIT_LABEL} {v:?} is not a number of bytes"),
                })
            })
            .transpose()?;
        self.backend.create(&dir, parent_dir.as_deref(), kind)?;
        if let Err(e) = self.backend.configure(&dir, &labels) {
            let _ = self.backend.remove(&dir);
            return Err(e);
        }
        if let Some(bytes) = size_limit {
            if let Err(e) = self.backend.limit_size(&dir, bytes) {
                let _ = self.backend.remove(&dir);
                return Err(e);
            }
        }
        locked.records.snapshots.insert(
            key.to_string(),
            Record {
                id,
                parent: parent.map(str::to_string),
                kind,
                created: now(),
                labels,
            },
        );
        if let Err(e) = locked.save() {
            let _ = self.backend.remove(&dir);
            return Err(e);
        }
        self.mounts_in(&locked.records, key)
    }

    fn mounts_in(&self, records: &crate::metadata::Records, key: &str) -> Result<Vec<Mount>> {
        let chain = records.chain(key)?;
        let (_, me) = chain[0];
        if me.kind == Kind::Committed {
            return Err(Error::Invalid {
                key: key.to_string(),
                reason: "a committed snapshot has no mounts of its own; view it".into(),
            });
        }
        let parents: Vec<PathBuf> = chain[1..].iter().map(|(_, r)| self.dir(r.id)).collect();
        let dir = self.dir(me.id);
        self.backend.before_mount(&dir)?;
        self.backend.ready(&parents)?;
        Ok(self.backend.mounts(&dir, me.kind, &parents))
    }

    fn remove_locked(&self, locked: &mut crate::metadata::Locked<'_>, key: &str) -> Result<()> {
        let id = locked.records.get(key)?.id;
        if locked.records.has_children(key) {
            return Err(Error::Invalid {
                key: key.to_string(),
                reason: "other snapshots have it as parent".into(),
            });
        }
        let dir = self.dir(id);
        let doomed = self.root.join("snapshots").join(format!("removing-{id}"));
        if dir.exists() {
            fs::rename(&dir, &doomed).at("rename", &dir)?;
        }
        let record = locked.records.snapshots.remove(key);
        if let Err(e) = locked.save() {
            if e.raw_os_error() != Some(libc::ENOSPC) {
                if let Some(r) = record {
                    locked.records.snapshots.insert(key.to_string(), r);
                }
                let _ = fs::rename(&doomed, &dir);
                return Err(e);
            }
            // The disk is full: free the snapshot's space first, then the record has room.
            // (A crash in between leaves a record without a directory; `cleanup` drops it.)
            self.backend.remove(&doomed)?;
            return locked.save();
        }
        if doomed.exists() {
            self.backend.remove(&doomed)?;
        }
        Ok(())
    }
}

impl<B: Backend> Snapshotter for Store<B> {
    fn driver(&self) -> &'static str {
        self.backend.name()
    }

    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::Active, labels)
    }

    fn view(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::View, labels)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        self.mounts_in(&self.meta.read()?, key)
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        check_key(name)?;
        let mut locked = self.meta.lock()?;
        if locked.records.snapshots.contains_key(name) {
            return Err(Error::Exists(name.to_string()));
        }
        let mut record = locked.records.get(key)?.clone();
        if record.kind != Kind::Active {
            return Err(Error::Invalid {
                key: key.to_string(),
                reason: "only an active snapshot can be committed".into(),
            });
        }
        self.backend.commit(&self.dir(record.id))?;
        record.kind = Kind::Committed;
        record.created = now();
        record.labels.extend(labels);
        locked.records.snapshots.remove(key);
        locked.records.snapshots.insert(name.to_string(), record);
        locked.save()
    }

    fn remove(&self, key: &str) -> Result<()> {
        let mut locked = self.meta.lock()?;
        self.remove_locked(&mut locked, key)
    }

    fn stat(&self, key: &str) -> Result<Info> {
        self.meta.read()?.info(key)
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let id = self.meta.read()?.get(key)?.id;
        self.backend.usage(&self.dir(id))
    }

    fn walk(&self, f: &mut dyn FnMut(&Info) -> Result<()>) -> Result<()> {
        let records = self.meta.read()?;
        // Parents first: by depth of the chain.
        let mut keys: Vec<(usize, &String)> = records
            .snapshots
            .keys()
            .map(|k| (records.chain(k).map(|c| c.len()).unwrap_or(0), k))
            .collect();
        keys.sort();
        for (_, k) in keys {
            f(&records.info(k)?)?;
        }
        Ok(())
    }

    fn cleanup(&self) -> Result<()> {
        let mut locked = self.meta.lock()?;
        // Interrupted applies and snapshots the driver no longer trusts, children first.
        loop {
            let stale: Vec<String> = locked
                .records
                .snapshots
                .iter()
                .filter(|(k, r)| {
                    (k.starts_with(EXTRACT_PREFIX) && r.kind == Kind::Active)
                        || self.backend.is_stale(&self.dir(r.id))
                })
                .filter(|(k, _)| !locked.records.has_children(k))
                .map(|(k, _)| k.clone())
                .collect();
            if stale.is_empty() {
                break;
            }
            for key in stale {
                log::info!(
                    "{}: removing {key:?}, an interrupted apply, or stale",
                    self.backend.name()
                );
                self.remove_locked(&mut locked, &key)?;
            }
        }
        // Records whose directory is gone (a crash while removing on a full disk).
        let missing: Vec<String> = locked
            .records
            .snapshots
            .iter()
            .filter(|(k, r)| !self.dir(r.id).exists() && !locked.records.has_children(k))
            .map(|(k, _)| k.clone())
            .collect();
        if !missing.is_empty() {
            for key in &missing {
                log::info!(
                    "{}: dropping {key:?}, whose directory is gone",
                    self.backend.name()
                );
                locked.records.snapshots.remove(key);
            }
            locked.save()?;
        }
        // Directories no record names.
        let known: std::collections::HashSet<String> = locked
            .records
            .snapshots
            .values()
            .map(|r| r.id.to_string())
            .collect();
        let snapshots = self.root.join("snapshots");
        for entry in fs::read_dir(&snapshots).at("read", &snapshots)? {
            let entry = entry.at("read", &snapshots)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                log::info!(
                    "{}: removing orphaned {}",
                    self.backend.name(),
                    entry.path().display()
                );
                self.backend.remove(&entry.path())?;
            }
        }
        Ok(())
    }

    fn apply_target(&self, key: &str) -> Result<ApplyTarget> {
        let records = self.meta.read()?;
        let r = records.get(key)?;
        if r.kind != Kind::Active {
            return Err(Error::Invalid {
                key: key.to_string(),
                reason: "layers are applied into active snapshots only".into(),
            });
        }
        let dir = self.dir(r.id);
        self.backend.before_mount(&dir)?;
        Ok(ApplyTarget {
            dir: self.backend.tree(&dir),
            whiteouts: self.backend.whiteouts(),
            // Images only for the scratch snapshots layers are applied into (`apply_layer`):
            // anything else may be written to as a directory too.
            image: key
                .starts_with(EXTRACT_PREFIX)
                .then(|| self.backend.image_target(&dir))
                .flatten(),
        })
    }

    fn changes(&self, key: &str) -> Result<Changes> {
        let records = self.meta.read()?;
        let chain = records.chain(key)?;
        let dirs: Vec<PathBuf> = chain.iter().take(2).map(|(_, r)| self.dir(r.id)).collect();
        self.backend.ready(&dirs)?;
        self.backend
            .changes(&dirs[0], dirs.get(1).map(PathBuf::as_path))
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.contains('\0') || key.len() > 4096 {
        return Err(Error::Invalid {
            key: key.to_string(),
            reason: "a key is 1 to 4096 bytes without NUL".into(),
        });
    }
    Ok(())
}
