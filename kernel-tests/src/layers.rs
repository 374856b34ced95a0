//! Layer tarballs built in tests: ordinary ones, and hostile ones (raw names with `..`, links
//! out of the layer, oversized headers) that a well-behaved tar writer would refuse to make.

use std::io::Write;

use sha2::{Digest, Sha256};

/// A layer tar being built, entry by entry, with exact control over each header.
pub struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
    mtime: u64,
}

impl Default for LayerTar {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerTar {
    pub fn new() -> LayerTar {
        LayerTar {
            builder: tar::Builder::new(Vec::new()),
            mtime: 1_700_000_000,
        }
    }

    /// Any entry: the name and link bytes go into the header as given (up to 100 bytes each),
    /// PAX records before it when `pax` is not empty.
    #[allow(clippy::too_many_arguments)]
    pub fn raw(
        &mut self,
        typ: tar::EntryType,
        name: &[u8],
        link: &[u8],
        data: &[u8],
        mode: u32,
        owner: (u64, u64),
        pax: &[(&str, &[u8])],
    ) -> &mut Self {
        if !pax.is_empty() {
            let mut records = Vec::new();
            for (k, v) in pax {
                let body = k.len() + v.len() + 3;
                let mut len = body + 1;
                while len != body + len.to_string().len() {
                    len = body + len.to_string().len();
                }
                records.extend_from_slice(format!("{len} {k}=").as_bytes());
                records.extend_from_slice(v);
                records.push(b'\n');
            }
            let mut x = tar::Header::new_ustar();
            x.set_entry_type(tar::EntryType::XHeader);
            x.set_size(records.len() as u64);
            x.set_mode(0o644);
            set_field(&mut x.as_old_mut().name, b"PaxHeaders/x");
            x.set_cksum();
            self.builder.append(&x, records.as_slice()).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(typ);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(self.mtime);
        h.set_size(data.len() as u64);
        set_field(&mut h.as_old_mut().name, name);
        set_field(&mut h.as_old_mut().linkname, link);
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.raw(
            tar::EntryType::Directory,
            path.as_bytes(),
            b"",
            b"",
            0o755,
            (0, 0),
            &[],
        )
    }

    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.raw(
            tar::EntryType::Regular,
            path.as_bytes(),
            b"",
            data,
            0o644,
            (0, 0),
            &[],
        )
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(
            tar::EntryType::Symlink,
            path.as_bytes(),
            target.as_bytes(),
            b"",
            0o777,
            (0, 0),
            &[],
        )
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(
            tar::EntryType::Link,
            path.as_bytes(),
            target.as_bytes(),
            b"",
            0o644,
            (0, 0),
            &[],
        )
    }

    /// A character or block device node.
    pub fn device(&mut self, typ: tar::EntryType, path: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(typ);
        h.set_mode(0o660);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        h.set_size(0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        set_field(&mut h.as_old_mut().name, path.as_bytes());
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    /// A header claiming `size` bytes of extension data, followed by nothing.
    pub fn oversized_extension(&mut self, typ: tar::EntryType, size: u64) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(typ);
        h.set_size(size);
        h.set_mode(0o644);
        set_field(&mut h.as_old_mut().name, b"././@LongLink");
        h.set_cksum();
        self.builder.get_mut().extend_from_slice(h.as_bytes());
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

fn set_field(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// `sha256:<hex>`.
pub fn sha256(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}
