//! The layer of a snapshot's changes, as a tar stream: for commit, build and push. Deletions
//! become `.wh.` files, an opaque overlay directory `.wh..wh..opq`; owners, modes, times (to
//! the nanosecond, in PAX records), xattrs and hardlinks are kept, so applying the result
//! gives the same tree back. Entries come in a fixed order (sorted by name), so the same
//! changes give the same bytes.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Context, Result};
use crate::fsutil::xattrs;
use crate::snapshot::Changes;

/// Writes the layer of `changes` to `out`; returns the number of entries.
pub fn diff(changes: &Changes, out: impl Write) -> Result<u64> {
    let mut w = LayerWriter {
        builder: tar::Builder::new(out),
        links: HashMap::new(),
        entries: 0,
    };
    match changes {
        Changes::Upper(upper) => w.upper_dir(upper, Path::new(""))?,
        Changes::Compare { lower, upper } => {
            let root_changed = match lower {
                None => true,
                Some(l) => !same_meta(&lstat(l)?, l, &lstat(upper)?, upper)?,
            };
            if root_changed {
                w.emit(upper, Path::new("."))?;
            }
            w.compare_dir(lower.as_deref(), upper, Path::new(""))?;
        }
    }
    w.builder
        .into_inner()
        .and_then(|mut o| o.flush())
        .op(|| "finish the layer".to_string())?;
    Ok(w.entries)
}

fn lstat(p: &Path) -> Result<fs::Metadata> {
    fs::symlink_metadata(p).at("stat", p)
}

fn sorted_names(dir: &Path) -> Result<Vec<OsString>> {
    let mut names: Vec<OsString> = fs::read_dir(dir)
        .at("read", dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .at("read", dir)?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Whether two nodes are the same as far as a layer is concerned.
fn same_meta(a: &fs::Metadata, a_path: &Path, b: &fs::Metadata, b_path: &Path) -> Result<bool> {
    let ta = a.file_type();
    let tb = b.file_type();
    let same_type = ta.is_dir() == tb.is_dir()
        && ta.is_file() == tb.is_file()
        && ta.is_symlink() == tb.is_symlink()
        && ta.is_char_device() == tb.is_char_device()
        && ta.is_block_device() == tb.is_block_device()
        && ta.is_fifo() == tb.is_fifo();
    if !same_type
        || a.mode() != b.mode()
        || a.uid() != b.uid()
        || a.gid() != b.gid()
        || a.mtime() != b.mtime()
        || a.mtime_nsec() != b.mtime_nsec()
        || (!ta.is_dir() && a.size() != b.size())
        || a.rdev() != b.rdev()
    {
        return Ok(false);
    }
    if ta.is_symlink() && fs::read_link(a_path).ok() != fs::read_link(b_path).ok() {
        return Ok(false);
    }
    Ok(xattrs(a_path)? == xattrs(b_path)?)
}

struct LayerWriter<W: Write> {
    builder: tar::Builder<W>,
    /// (dev, ino) of a multiply-linked file → the first path it was written under.
    links: HashMap<(u64, u64), PathBuf>,
    entries: u64,
}

impl<W: Write> LayerWriter<W> {
    /// overlay2's upper directory: everything in it is a change.
    fn upper_dir(&mut self, abs: &Path, rel: &Path) -> Result<()> {
        for name in sorted_names(abs)? {
            let a = abs.join(&name);
            let r = rel.join(&name);
            let meta = lstat(&a)?;
            if meta.file_type().is_char_device() && meta.rdev() == 0 {
                self.whiteout(&r, &meta)?;
                continue;
            }
            self.emit(&a, &r)?;
            if meta.is_dir() {
                let opaque = xattrs(&a)?
                    .iter()
                    .any(|(k, v)| k == "trusted.overlay.opaque" && v == b"y");
                if opaque {
                    self.marker(&r.join(".wh..wh..opq"), &meta)?;
                }
                self.upper_dir(&a, &r)?;
            }
        }
        Ok(())
    }

    /// Whole trees (vfs, btrfs): what differs from the parent's tree.
    fn compare_dir(&mut self, lower: Option<&Path>, upper: &Path, rel: &Path) -> Result<()> {
        let upper_names = sorted_names(upper)?;
        let lower_names = match lower {
            Some(l) => sorted_names(l)?,
            None => Vec::new(),
        };
        // Deletions first, so a reader sees them before what replaces them.
        for name in &lower_names {
            if !upper_names.contains(name) {
                let meta = lstat(&lower.expect("names came from it").join(name))?;
                self.whiteout(&rel.join(name), &meta)?;
            }
        }
        for name in &upper_names {
            let u = upper.join(name);
            let r = rel.join(name);
            let um = lstat(&u)?;
            let l = lower.map(|l| l.join(name));
            let lm = match &l {
                Some(l) if lower_names.contains(name) => Some(lstat(l)?),
                _ => None,
            };
            let changed = match &lm {
                Some(lm) => !same_meta(lm, l.as_deref().expect("set with lm"), &um, &u)?,
                None => true,
            };
            if changed {
                self.emit(&u, &r)?;
            }
            if um.is_dir() {
                let lower_dir = match (&lm, &l) {
                    (Some(lm), Some(l)) if lm.is_dir() => Some(l.as_path()),
                    _ => None,
                };
                self.compare_dir(lower_dir, &u, &r)?;
            }
        }
        Ok(())
    }

    fn whiteout(&mut self, rel: &Path, meta: &fs::Metadata) -> Result<()> {
        let name = rel.file_name().unwrap_or_default();
        let mut wh = OsString::from(".wh.");
        wh.push(name);
        let path = rel.parent().unwrap_or(Path::new("")).join(wh);
        self.marker(&path, meta)
    }

    /// An empty regular file standing for a whiteout or an opaque directory.
    fn marker(&mut self, rel: &Path, meta: &fs::Metadata) -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h.set_mtime(meta.mtime().max(0) as u64);
        self.append(h, rel, None, Vec::new(), io::empty())
    }

    /// One node of the tree as an entry.
    fn emit(&mut self, abs: &Path, rel: &Path) -> Result<()> {
        let meta = lstat(abs)?;
        let ft = meta.file_type();
        let mut h = tar::Header::new_ustar();
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(meta.uid() as u64);
        h.set_gid(meta.gid() as u64);
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(0);
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if meta.mtime_nsec() != 0 {
            pax.push((
                "mtime".into(),
                format!("{}.{:09}", meta.mtime(), meta.mtime_nsec()).into_bytes(),
            ));
        }
        for (name, value) in xattrs(abs)? {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("trusted.overlay.") {
                continue;
            }
            pax.push((format!("SCHILY.xattr.{name}"), value));
        }
        if !ft.is_dir() && meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                h.set_entry_type(tar::EntryType::Link);
                let first = first.clone();
                return self.append(h, rel, Some(first.as_os_str().as_bytes()), pax, io::empty());
            }
            self.links
                .insert((meta.dev(), meta.ino()), rel.to_path_buf());
        }
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            self.append(h, rel, None, pax, io::empty())
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            let target = fs::read_link(abs).at("readlink", abs)?;
            self.append(
                h,
                rel,
                Some(target.as_os_str().as_bytes()),
                pax,
                io::empty(),
            )
        } else if ft.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.size());
            let f = fs::File::open(abs).at("open", abs)?;
            self.append(h, rel, None, pax, f)
        } else if ft.is_char_device() || ft.is_block_device() {
            h.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            let dev = meta.rdev();
            h.set_device_major(rustix::fs::major(dev))
                .op(|| "device".into())?;
            h.set_device_minor(rustix::fs::minor(dev))
                .op(|| "device".into())?;
            self.append(h, rel, None, pax, io::empty())
        } else if ft.is_fifo() {
            h.set_entry_type(tar::EntryType::Fifo);
            self.append(h, rel, None, pax, io::empty())
        } else {
            // Sockets are not part of a layer.
            Ok(())
        }
    }

    /// Writes the header (path and link in PAX records when they do not fit), then the data.
    fn append(
        &mut self,
        mut h: tar::Header,
        rel: &Path,
        link: Option<&[u8]>,
        mut pax: Vec<(String, Vec<u8>)>,
        data: impl io::Read,
    ) -> Result<()> {
        let mut path = rel.as_os_str().as_bytes().to_vec();
        if h.entry_type() == tar::EntryType::Directory && path != b"." {
            path.push(b'/');
        } else if path == b"." {
            path = b"./".to_vec();
        }
        if path.len() > 100 {
            pax.push(("path".into(), path.clone()));
            path.truncate(100);
        }
        set_field(&mut h.as_old_mut().name, &path);
        if let Some(link) = link {
            let mut l = link.to_vec();
            if l.len() > 100 {
                pax.push(("linkpath".into(), l.clone()));
                l.truncate(100);
            }
            set_field(&mut h.as_old_mut().linkname, &l);
        }
        if !pax.is_empty() {
            let records = pax_records(&pax);
            let mut x = tar::Header::new_ustar();
            x.set_entry_type(tar::EntryType::XHeader);
            x.set_mode(0o644);
            x.set_size(records.len() as u64);
            let mut name = b"PaxHeaders/".to_vec();
            name.extend_from_slice(&path[..path.len().min(80)]);
            set_field(&mut x.as_old_mut().name, &name);
            x.set_cksum();
            self.builder
                .append(&x, records.as_slice())
                .op(|| format!("write the layer entry {}", rel.display()))?;
        }
        h.set_cksum();
        self.builder
            .append(&h, data)
            .op(|| format!("write the layer entry {}", rel.display()))?;
        self.entries += 1;
        Ok(())
    }
}

fn set_field(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// PAX records: each "<len> <key>=<value>\n", where len counts itself.
fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let body = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_lengths_count_themselves() {
        let r = pax_records(&[("path".into(), vec![b'a'; 95])]);
        let text = String::from_utf8(r.clone()).unwrap();
        let len: usize = text.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(len, r.len());
        let r = pax_records(&[("k".into(), b"v".to_vec())]);
        assert_eq!(r, b"6 k=v\n");
    }
}
