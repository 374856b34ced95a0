//! The image store: image records (config, layer chain, tags) over the storage driver's
//! committed snapshots, one snapshot per layer chain so images share their common layers.
//! Images arrive by `load` (a `docker save` archive) or `import` (a root filesystem tar); the
//! registry client comes with the image issue.

pub mod archive;
pub mod content;
pub mod reference;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use berth_storage::Snapshotter;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::records;
pub use reference::Reference;

/// One image.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:` + the digest of the config as stored.
    pub id: String,
    pub repo_tags: Vec<String>,
    /// `repository@sha256:…` of the manifests it was pulled by.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// The image config (OCI / Docker schema2 shape).
    pub config: Value,
    /// The snapshot of each layer's chain, bottom first; the last is the container's parent.
    pub layers: Vec<String>,
    /// Bytes the image's layers use on disk.
    pub size: u64,
    /// The layer blobs as they arrived (in the content store), bottom first: what push and
    /// save send.
    #[serde(default)]
    pub layer_blobs: Vec<content::Descriptor>,
}

impl Image {
    pub fn top_layer(&self) -> Option<&str> {
        self.layers.last().map(String::as_str)
    }

    /// `Config` of the image config (Env, Cmd, Entrypoint …), `{}` when absent.
    pub fn runtime_config(&self) -> &Value {
        static EMPTY: Value = Value::Null;
        self.config.get("config").unwrap_or(&EMPTY)
    }

    pub fn created(&self) -> &str {
        self.config["created"].as_str().unwrap_or("")
    }

    pub fn diff_ids(&self) -> Vec<String> {
        self.config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(str::to_string))
            .collect()
    }
}

/// The snapshot name of a layer chain: `layer-<hex>` of its chain id (OCI image spec: the
/// first layer's diff id, then sha256 of "parent-chain child-diff-id").
pub fn chain_keys(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Option<String> = None;
    let mut keys = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match &chain {
            None => d.clone(),
            Some(parent) => format!(
                "sha256:{:x}",
                Sha256::digest(format!("{parent} {d}").as_bytes())
            ),
        };
        keys.push(format!(
            "layer-{}",
            next.strip_prefix("sha256:").unwrap_or(&next)
        ));
        chain = Some(next);
    }
    keys
}

pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// The images of one daemon root.
pub struct ImageStore {
    dir: PathBuf,
    pub content: std::sync::Arc<content::ContentStore>,
    pub snapshotter: Arc<dyn Snapshotter>,
    images: RwLock<BTreeMap<String, Image>>,
}

impl ImageStore {
    pub fn open(dir: &Path, snapshotter: Arc<dyn Snapshotter>) -> std::io::Result<ImageStore> {
        fs::create_dir_all(dir.join("tmp")).map_err(|e| records::at(e, "mkdir", dir))?;
        let mut images = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(|e| records::at(e, "read", dir))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                match records::read_json::<Image>(&path) {
                    Ok(image) => {
                        images.insert(image.id.clone(), image);
                    }
                    Err(e) => tracing::warn!("skipping image record: {e}"),
                }
            }
        }
        // Leftovers of loads a crash cut short.
        for entry in fs::read_dir(dir.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = fs::remove_file(entry.path());
        }
        Ok(ImageStore {
            content: std::sync::Arc::new(content::ContentStore::open(&dir.join("blobs"))?),
            dir: dir.to_path_buf(),
            snapshotter,
            images: RwLock::new(images),
        })
    }

    /// Where uploads are spooled before they are unpacked.
    pub fn scratch_file(&self) -> std::io::Result<PathBuf> {
        Ok(self
            .dir
            .join("tmp")
            .join(format!("upload-{}", crate::names::new_id()?)))
    }

    pub fn list(&self) -> Vec<Image> {
        self.read().values().cloned().collect()
    }

    pub fn count(&self) -> usize {
        self.read().len()
    }

    /// Finds an image by tag (`busybox`, `busybox:1`), by id (`sha256:…`), or by an id prefix
    /// of at least 4 hex digits (as Docker accepts short ids).
    pub fn resolve(&self, name: &str) -> Option<Image> {
        let images = self.read();
        if let Ok(r) = Reference::parse(name) {
            if let Some(tagged) = r.tagged() {
                if let Some(img) = images.values().find(|i| i.repo_tags.contains(&tagged)) {
                    return Some(img.clone());
                }
            }
            if let Some(digest) = &r.digest {
                let by_digest = format!("{}@{digest}", r.repository);
                if let Some(img) = images
                    .values()
                    .find(|i| i.repo_digests.contains(&by_digest))
                {
                    return Some(img.clone());
                }
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 4 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut found = images
                .values()
                .filter(|i| i.id["sha256:".len()..].starts_with(hex));
            if let (Some(one), None) = (found.next(), found.next()) {
                return Some(one.clone());
            }
        }
        None
    }

    /// Records `image` (merging tags with an existing record of the same id) and moves its
    /// tags off any other image, as a new image with a tag takes the tag over.
    pub fn insert(&self, mut image: Image) -> std::io::Result<()> {
        let mut images = self.write();
        if let Some(old) = images.get(&image.id) {
            for t in &old.repo_tags {
                if !image.repo_tags.contains(t) {
                    image.repo_tags.push(t.clone());
                }
            }
            for d in &old.repo_digests {
                if !image.repo_digests.contains(d) {
                    image.repo_digests.push(d.clone());
                }
            }
        }
        let mut changed = Vec::new();
        for other in images.values_mut() {
            if other.id != image.id && other.repo_tags.iter().any(|t| image.repo_tags.contains(t)) {
                other.repo_tags.retain(|t| !image.repo_tags.contains(t));
                changed.push(other.clone());
            }
        }
        self.save(&image)?;
        for other in &changed {
            self.save(other)?;
        }
        for other in changed {
            images.insert(other.id.clone(), other);
        }
        images.insert(image.id.clone(), image);
        Ok(())
    }

    /// Adds `tag` (familiar `repo:tag`) to the image `id`.
    pub fn tag(&self, id: &str, tag: String) -> std::io::Result<()> {
        let image = self.read().get(id).cloned();
        match image {
            Some(mut image) => {
                image.repo_tags = vec![tag];
                self.insert(image)
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no image {id}"),
            )),
        }
    }

    /// Removes one tag; the image stays (returns whether it still has tags).
    pub fn untag(&self, id: &str, tag: &str) -> std::io::Result<bool> {
        let mut images = self.write();
        let Some(image) = images.get_mut(id) else {
            return Ok(false);
        };
        image.repo_tags.retain(|t| t != tag);
        let left = !image.repo_tags.is_empty();
        let copy = image.clone();
        drop(images);
        self.save(&copy)?;
        Ok(left)
    }

    /// Deletes the image record and the layers no other image uses.
    pub fn delete(&self, id: &str) -> std::io::Result<Vec<String>> {
        let mut images = self.write();
        let Some(image) = images.remove(id) else {
            return Ok(Vec::new());
        };
        let path = self.record_path(id);
        fs::remove_file(&path).map_err(|e| records::at(e, "remove", &path))?;
        let in_use: std::collections::HashSet<&String> =
            images.values().flat_map(|i| i.layers.iter()).collect();
        let mut deleted = Vec::new();
        // Top down: a layer cannot go while a child snapshot still stands on it.
        for key in image.layers.iter().rev() {
            if in_use.contains(key) {
                break;
            }
            match self.snapshotter.remove(key) {
                Ok(()) => deleted.push(key.clone()),
                Err(e) => {
                    tracing::warn!("image {id}: layer {key} stays: {e}");
                    break;
                }
            }
        }
        // Blobs only this image named go too.
        let keep: std::collections::HashSet<String> = images
            .values()
            .flat_map(|i| {
                std::iter::once(i.id.clone())
                    .chain(i.layer_blobs.iter().map(|b| b.digest.clone()))
                    .chain(
                        i.repo_digests
                            .iter()
                            .filter_map(|d| d.rsplit_once('@').map(|(_, d)| d.to_string())),
                    )
            })
            .collect();
        self.content.retain(&keep);
        Ok(deleted)
    }

    fn save(&self, image: &Image) -> std::io::Result<()> {
        records::write_json(&self.record_path(&image.id), image)
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", id.strip_prefix("sha256:").unwrap_or(id)))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Image>> {
        self.images.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Image>> {
        self.images.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let keys = chain_keys(&[a.clone(), b.clone()]);
        assert_eq!(keys[0], format!("layer-{}", "a".repeat(64)));
        let second = format!("{:x}", Sha256::digest(format!("{a} {b}").as_bytes()));
        assert_eq!(keys[1], format!("layer-{second}"));
    }
}
