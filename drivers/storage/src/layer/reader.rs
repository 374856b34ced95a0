//! Reading a layer stream: the digest of the bytes as stored, decompression by magic number
//! (gzip, zstd, or none), and tar entries parsed with their extensions (PAX records, GNU long
//! names) under size limits. The tar crate is used in raw mode as a header parser only: its own
//! extension handling reads a long name of any size into memory.

use std::io::{self, BufRead, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Largest PAX or GNU long-name extension accepted (real ones are a few hundred bytes).
pub const MAX_EXTENSION: u64 = 1 << 20;
/// Longest path accepted (PATH_MAX).
pub const MAX_PATH: usize = 4096;

/// Hashes everything read through it.
pub(crate) struct DigestReader<R> {
    inner: R,
    hasher: Option<Sha256>,
}

impl<R: Read> DigestReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_hashing(inner, true)
    }

    /// A pass-through without `hash` (when another reader already hashes the same bytes).
    pub fn with_hashing(inner: R, hash: bool) -> Self {
        DigestReader {
            inner,
            hasher: hash.then(Sha256::new),
        }
    }

    /// `sha256:<hex>` of what was read.
    pub fn digest(&self) -> String {
        let d = self.hasher.clone().unwrap_or_default().finalize();
        let mut s = String::with_capacity(7 + 64);
        s.push_str("sha256:");
        for b in d {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// The compression of a layer blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Recognizes the compression from the first bytes and returns the decompressed stream.
pub(crate) fn decompress<'a, R: BufRead + 'a>(
    mut input: R,
) -> Result<(Compression, Box<dyn Read + 'a>)> {
    let head = input
        .fill_buf()
        .map_err(|e| Error::Layer(format!("read: {e}")))?;
    let compression = if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    };
    let reader: Box<dyn Read + 'a> = match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| Error::Layer(format!("zstd: {e}")))?,
        ),
        Compression::None => Box::new(input),
    };
    Ok((compression, reader))
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink(PathBuf),
    /// A hardlink to another path of the layer (relative to the root, normalized).
    Hardlink(PathBuf),
    CharDevice(u32, u32),
    BlockDevice(u32, u32),
    Fifo,
}

/// One entry, its extensions applied and its path normalized.
#[derive(Clone, Debug)]
pub struct EntryMeta {
    /// Relative to the layer root, no `..`, never empty (the root itself is `.`).
    pub path: PathBuf,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub size: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Pending extensions for the next entry.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    pax: Vec<(String, Vec<u8>)>,
}

/// Iterates the entries of a tar stream: `next` gives the metadata and a reader of the data.
pub(crate) struct TarEntries<'a, R: Read> {
    entries: tar::Entries<'a, R>,
    global: Vec<(String, Vec<u8>)>,
}

impl<'a, R: Read> TarEntries<'a, R> {
    pub fn new(archive: &'a mut tar::Archive<R>) -> Result<Self> {
        let entries = archive
            .entries()
            .map_err(|e| Error::Layer(format!("tar: {e}")))?
            .raw(true);
        Ok(TarEntries {
            entries,
            global: Vec::new(),
        })
    }

    /// The next entry with its data reader, or `None` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<(EntryMeta, tar::Entry<'a, R>)>> {
        let mut pending = Pending::default();
        loop {
            let Some(entry) = self.entries.next() else {
                if pending.path.is_some() || pending.link.is_some() || !pending.pax.is_empty() {
                    return Err(Error::Layer(
                        "the archive ends after an extension header".into(),
                    ));
                }
                return Ok(None);
            };
            let mut entry = entry.map_err(|e| Error::Layer(format!("tar: {e}")))?;
            let header = entry.header();
            let typ = header.entry_type();
            let size = header
                .size()
                .map_err(|e| Error::Layer(format!("tar header size: {e}")))?;
            let extension = typ.is_gnu_longname()
                || typ.is_gnu_longlink()
                || typ.is_pax_local_extensions()
                || typ.is_pax_global_extensions();
            if extension {
                if size > MAX_EXTENSION {
                    return Err(Error::Layer(format!(
                        "a {} header of {size} bytes (at most {MAX_EXTENSION})",
                        if typ.is_gnu_longname() || typ.is_gnu_longlink() {
                            "GNU long name"
                        } else {
                            "PAX"
                        }
                    )));
                }
                let mut data = Vec::with_capacity(size as usize);
                entry
                    .read_to_end(&mut data)
                    .map_err(|e| Error::Layer(format!("tar extension: {e}")))?;
                if typ.is_gnu_longname() {
                    pending.path = Some(trim_nul(data));
                } else if typ.is_gnu_longlink() {
                    pending.link = Some(trim_nul(data));
                } else if typ.is_pax_local_extensions() {
                    pending.pax.extend(parse_pax(&data)?);
                } else {
                    self.global = parse_pax(&data)?;
                }
                continue;
            }
            let meta = self.meta(&entry, pending)?;
            return Ok(Some((meta, entry)));
        }
    }

    fn meta(&self, entry: &tar::Entry<'a, R>, pending: Pending) -> Result<EntryMeta> {
        let h = entry.header();
        let bad = |what: &str, e: io::Error| Error::Layer(format!("tar header {what}: {e}"));
        let pax = |key: &str| -> Option<&[u8]> {
            pending
                .pax
                .iter()
                .rev()
                .chain(self.global.iter().rev())
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_slice())
        };
        let raw_path = pax("path")
            .map(<[u8]>::to_vec)
            .or(pending.path.clone())
            .unwrap_or_else(|| h.path_bytes().into_owned());
        let path = normalize(&raw_path)?;
        let link = || -> Result<Vec<u8>> {
            Ok(pax("linkpath")
                .map(<[u8]>::to_vec)
                .or(pending.link.clone())
                .or_else(|| h.link_name_bytes().map(|l| l.into_owned()))
                .unwrap_or_default())
        };
        let size = h.size().map_err(|e| bad("size", e))?;
        if let Some(pax_size) = pax("size") {
            if parse_num(pax_size) != Some(size) {
                return Err(Error::Layer(format!(
                    "{}: a PAX size different from the header's is not supported",
                    path.display()
                )));
            }
        }
        let typ = h.entry_type();
        // Some writers leave the device fields of a device entry blank: that is 0.
        let blank = |f: &[u8]| f.iter().all(|&b| b == 0 || b == b' ');
        let device = || -> Result<(u32, u32)> {
            let ustar = h.as_ustar();
            let major = match h.device_major() {
                Ok(v) => v.unwrap_or(0),
                Err(_) if ustar.is_some_and(|u| blank(&u.dev_major)) => 0,
                Err(e) => return Err(bad("device", e)),
            };
            let minor = match h.device_minor() {
                Ok(v) => v.unwrap_or(0),
                Err(_) if ustar.is_some_and(|u| blank(&u.dev_minor)) => 0,
                Err(e) => return Err(bad("device", e)),
            };
            Ok((major, minor))
        };
        let kind = match typ {
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            // Old tars mark directories with a trailing slash on a regular entry.
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => {
                let target = link()?;
                if target.is_empty() || target.len() > MAX_PATH || target.contains(&0) {
                    return Err(Error::Layer(format!(
                        "{}: bad symlink target",
                        path.display()
                    )));
                }
                EntryKind::Symlink(PathBuf::from(std::ffi::OsStr::from_bytes_compat(&target)))
            }
            tar::EntryType::Link => EntryKind::Hardlink(normalize(&link()?)?),
            tar::EntryType::Char => {
                let (a, b) = device()?;
                EntryKind::CharDevice(a, b)
            }
            tar::EntryType::Block => {
                let (a, b) = device()?;
                EntryKind::BlockDevice(a, b)
            }
            tar::EntryType::Fifo => EntryKind::Fifo,
            other => {
                return Err(Error::Layer(format!(
                    "{}: unsupported tar entry type {:?}",
                    path.display(),
                    other
                )));
            }
        };
        let kind = if kind == EntryKind::File && raw_path.ends_with(b"/") {
            EntryKind::Dir
        } else {
            kind
        };
        let (mtime, mtime_nsec) = match pax("mtime").and_then(parse_time) {
            Some(t) => t,
            None => (h.mtime().map_err(|e| bad("mtime", e))? as i64, 0),
        };
        let uid = match pax("uid") {
            Some(v) => parse_num(v).ok_or_else(|| Error::Layer("bad PAX uid".into()))?,
            None => h.uid().map_err(|e| bad("uid", e))?,
        };
        let gid = match pax("gid") {
            Some(v) => parse_num(v).ok_or_else(|| Error::Layer("bad PAX gid".into()))?,
            None => h.gid().map_err(|e| bad("gid", e))?,
        };
        let xattrs = pending
            .pax
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("SCHILY.xattr.")
                    .map(|name| (name.to_string(), v.clone()))
            })
            .collect();
        Ok(EntryMeta {
            path,
            kind,
            mode: h.mode().map_err(|e| bad("mode", e))? & 0o7777,
            uid,
            gid,
            mtime,
            mtime_nsec,
            size,
            xattrs,
        })
    }
}

trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// A path of the archive made relative to the layer root: leading `/` and `./` dropped,
/// `.` components removed; `..`, NUL and over-long paths refused.
pub fn normalize(raw: &[u8]) -> Result<PathBuf> {
    if raw.contains(&0) || raw.len() > MAX_PATH {
        return Err(Error::Layer(format!(
            "entry path {:?} is malformed",
            String::from_utf8_lossy(&raw[..raw.len().min(64)])
        )));
    }
    let p = Path::new(std::ffi::OsStr::from_bytes_compat(raw));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(Error::Layer(format!(
                    "entry {:?} climbs out of the layer with \"..\"",
                    p.display()
                )));
            }
            Component::Prefix(_) => unreachable!("no prefixes on unix"),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    Ok(out)
}

/// PAX records: "<len> <key>=<value>\n".
fn parse_pax(mut data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let bad = || Error::Layer("malformed PAX header".into());
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let space = data.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let key = String::from_utf8(record[..eq].to_vec()).map_err(|_| bad())?;
        out.push((key, record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

fn parse_num(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// A PAX time: seconds with an optional fraction.
fn parse_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0u32;
    for (i, c) in frac.chars().take(9).enumerate() {
        nanos += c.to_digit(10)? * 10u32.pow(8 - i as u32);
    }
    Some((secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_or_refused() {
        assert_eq!(normalize(b"./a/b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(
            normalize(b"/etc/passwd").unwrap(),
            PathBuf::from("etc/passwd")
        );
        assert_eq!(normalize(b"./").unwrap(), PathBuf::from("."));
        assert_eq!(normalize(b"a/./b/").unwrap(), PathBuf::from("a/b"));
        assert!(normalize(b"../x").is_err());
        assert!(normalize(b"a/../../x").is_err());
        assert!(normalize(b"a\0b").is_err());
    }

    #[test]
    fn pax_records_and_times() {
        let data = b"30 mtime=1700000000.123456789\n18 path=some/path\n";
        let recs = parse_pax(data).unwrap();
        assert_eq!(recs[0].0, "mtime");
        assert_eq!(parse_time(&recs[0].1), Some((1_700_000_000, 123_456_789)));
        assert_eq!(recs[1], ("path".into(), b"some/path".to_vec()));
        assert!(parse_pax(b"99 path=x\n").is_err());
        assert_eq!(parse_time(b"5.5"), Some((5, 500_000_000)));
    }
}
