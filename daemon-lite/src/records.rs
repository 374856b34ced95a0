//! The daemon's records on disk: one JSON file per object, replaced atomically (temp file,
//! fsync, rename, fsync of the directory), so a daemon killed mid-write leaves the old record
//! or the new one, never a torn one.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = fs::File::create(&tmp).map_err(|e| at(e, "create", &tmp))?;
    f.write_all(bytes).map_err(|e| at(e, "write", &tmp))?;
    f.sync_all().map_err(|e| at(e, "fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(|e| at(e, "rename", path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| at(e, "fsync", dir))
}

pub fn write_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &bytes)
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<T> {
    let bytes = fs::read(path).map_err(|e| at(e, "read", path))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// An I/O error that names what was done to which path.
pub fn at(e: io::Error, op: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        write_json(&path, &serde_json::json!({"a": 1})).unwrap();
        write_json(&path, &serde_json::json!({"a": 2})).unwrap();
        let v: serde_json::Value = read_json(&path).unwrap();
        assert_eq!(v["a"], 2);
        assert!(!dir.path().join("r.json.tmp").exists());
        fs::write(&path, b"{\"a\":").unwrap();
        let err = read_json::<serde_json::Value>(&path).unwrap_err();
        assert!(err.to_string().contains("r.json"), "{err}");
    }
}
