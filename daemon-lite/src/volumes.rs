//! Local named volumes: a directory `<root>/volumes/<name>/_data` and a record beside it, made
//! on first use as Docker does; anonymous volumes get a 64-hex name.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::records;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub created: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub anonymous: bool,
}

pub struct Volumes {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl Volumes {
    pub fn open(dir: &Path) -> std::io::Result<Volumes> {
        fs::create_dir_all(dir).map_err(|e| records::at(e, "mkdir", dir))?;
        Ok(Volumes {
            dir: dir.to_path_buf(),
            lock: Mutex::new(()),
        })
    }

    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    /// Docker's rule for volume names.
    pub fn check_name(name: &str) -> Result<(), String> {
        let ok = name.len() >= 2
            && name.len() <= 255
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
            ))
        }
    }

    /// The volume `name`, made if missing; a fresh anonymous volume for `None`.
    pub fn get_or_create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> std::io::Result<Volume> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let (name, anonymous) = match name {
            Some(n) => {
                Self::check_name(n)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                (n.to_string(), false)
            }
            None => (crate::names::new_id()?, true),
        };
        if let Some(v) = self.read(&name) {
            return Ok(v);
        }
        let data = self.data_dir(&name);
        fs::create_dir_all(&data).map_err(|e| records::at(e, "mkdir", &data))?;
        let volume = Volume {
            name: name.clone(),
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            labels,
            anonymous,
        };
        records::write_json(&self.dir.join(&name).join("volume.json"), &volume)?;
        Ok(volume)
    }

    pub fn read(&self, name: &str) -> Option<Volume> {
        Self::check_name(name).ok()?;
        records::read_json(&self.dir.join(name).join("volume.json")).ok()
    }

    pub fn list(&self) -> Vec<Volume> {
        let mut out: Vec<Volume> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| self.read(&e.file_name().to_string_lossy()))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Removes the volume and its data (the caller checked it is not in use).
    pub fn remove(&self, name: &str) -> std::io::Result<bool> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.read(name).is_none() {
            return Ok(false);
        }
        let dir = self.dir.join(name);
        // The record goes first: a crash midway leaves no volume that looks whole.
        fs::remove_file(dir.join("volume.json")).map_err(|e| records::at(e, "remove", &dir))?;
        fs::remove_dir_all(&dir).map_err(|e| records::at(e, "remove", &dir))?;
        Ok(true)
    }

    /// Bytes a volume's data uses.
    pub fn size(&self, name: &str) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(meta) = fs::symlink_metadata(p) else {
                return 0;
            };
            if meta.is_dir() {
                fs::read_dir(p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| walk(&e.path()))
                    .sum()
            } else {
                meta.len()
            }
        }
        walk(&self.data_dir(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_made_on_first_use_and_removed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let v = Volumes::open(dir.path()).unwrap();
        let a = v.get_or_create(Some("data"), BTreeMap::new()).unwrap();
        fs::write(v.data_dir("data").join("f"), b"x").unwrap();
        let again = v.get_or_create(Some("data"), BTreeMap::new()).unwrap();
        assert_eq!(a.created, again.created);
        assert_eq!(v.size("data"), 1);
        let anon = v.get_or_create(None, BTreeMap::new()).unwrap();
        assert!(anon.anonymous && anon.name.len() == 64);
        assert_eq!(v.list().len(), 2);
        assert!(v.remove("data").unwrap());
        assert!(!v.remove("data").unwrap());
        assert!(v.get_or_create(Some("../x"), BTreeMap::new()).is_err());
        assert!(v.read("../..").is_none());
    }
}
