//! Layers as EROFS images that index the layer's own tar: the uncompressed tar is written into
//! the image as it arrives, and a small EROFS metadata area after it (inodes, directories,
//! symlink targets) points each regular file at its data inside the tar. Applying a layer then
//! creates no file per entry: it writes one file and a few hundred KiB of metadata, and the
//! kernel mounts the result (file-backed EROFS) as a read-only lower of an overlay.
//!
//! Image layout (block size 512, the tar's own alignment, so every file's data starts on a
//! block):
//!
//! ```text
//! 0            1024          4096                       4096 + tar        (4 KiB aligned)
//! | zeroes     | superblock  | the layer tar, byte for byte | inodes | dir blocks, symlinks |
//! ```
//!
//! The tree is built in memory with the same rules as the directory writer (`apply.rs`): later
//! entries replace earlier ones, whiteouts become overlay's 0/0 character devices and
//! `trusted.overlay.opaque`, hardlinks only to earlier entries of the layer, intermediate
//! symlinks followed inside the layer, device nodes by policy. Nothing is written outside the
//! image, so there is no path to escape through; names are checked for what EROFS can hold.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path};

use super::apply::{ApplyOptions, OPAQUE, WHITEOUT_PREFIX, id};
use super::reader::{EntryKind, EntryMeta};
use crate::error::{Error, Result};

/// Where the tar starts in the image.
pub(crate) const TAR_OFFSET: u64 = 4096;

const BLOCK_BITS: u8 = 9;
const BLOCK: u64 = 1 << BLOCK_BITS;
const SUPER_OFFSET: u64 = 1024;
const MAGIC: u32 = 0xE0F5_E1E2;
const INODE_SIZE: u64 = 64;
const DIRENT_SIZE: usize = 12;
const NAME_MAX: usize = 255;
/// PATH_MAX: a symlink target and its NUL.
const SYMLINK_MAX: usize = 4096;
/// Symlinks followed while resolving one path (the kernel's limit).
const MAX_SYMLINKS: u32 = 40;

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const S_IFIFO: u32 = 0o010000;

/// Inode `i_format`: the 64-byte (extended) form, data laid out flat from a start block.
const FORMAT_EXTENDED_FLAT_PLAIN: u16 = 1;

// xattr name indexes of the on-disk format.
const XATTR_USER: u8 = 1;
const XATTR_ACL_ACCESS: u8 = 2;
const XATTR_ACL_DEFAULT: u8 = 3;
const XATTR_TRUSTED: u8 = 4;
const XATTR_SECURITY: u8 = 6;

/// Inline xattrs of one inode, at most this many bytes on disk (Linux's own limit for the
/// whole list of one file's xattr names, and for one value).
const MAX_XATTR_BYTES: usize = 64 * 1024;
/// The index is built in memory: a layer whose index would be larger is refused (Debian's
/// minbase, 6.5k entries, needs about 1.2 MiB).
const MAX_INDEX_BYTES: usize = 1 << 30;

type NodeId = usize;
const ROOT: NodeId = 0;

/// xattrs by (name index, name without its prefix): one value per name, the last given.
type Xattrs = BTreeMap<(u8, Vec<u8>), Vec<u8>>;

#[derive(Clone, Debug)]
enum Body {
    Dir(BTreeMap<Vec<u8>, NodeId>),
    /// Data at this offset of the tar stream.
    File {
        offset: u64,
        size: u64,
    },
    Symlink(Vec<u8>),
    Special {
        /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
        kind: u32,
        rdev: u32,
    },
}

#[derive(Clone, Debug)]
struct Node {
    /// Permission bits (with set-id and sticky).
    perm: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: u32,
    xattrs: Xattrs,
    body: Body,
}

impl Node {
    fn file_type(&self) -> u32 {
        match &self.body {
            Body::Dir(_) => S_IFDIR,
            Body::File { .. } => S_IFREG,
            Body::Symlink(_) => S_IFLNK,
            Body::Special { kind, .. } => *kind,
        }
    }
}

/// Builds the EROFS index of one layer, entry by entry, then writes it after the tar.
pub(crate) struct IndexBuilder<'o> {
    nodes: Vec<Node>,
    opts: &'o ApplyOptions,
    /// Owner of what the layer does not give one (implicit parents) or when owners are not
    /// kept: the caller.
    own: (u32, u32),
    now: i64,
    /// Bytes the index holds so far (names, targets, xattrs, inodes), for [`MAX_INDEX_BYTES`].
    held: usize,
}

impl<'o> IndexBuilder<'o> {
    pub fn new(opts: &'o ApplyOptions) -> Self {
        let own = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let root = Node {
            perm: 0o755,
            uid: own.0,
            gid: own.1,
            mtime: now,
            mtime_nsec: 0,
            xattrs: Xattrs::new(),
            body: Body::Dir(BTreeMap::new()),
        };
        IndexBuilder {
            nodes: vec![root],
            opts,
            own,
            now,
            held: 0,
        }
    }

    /// Adds one entry; a regular file's data is at `data_offset` of the tar stream.
    pub fn entry(&mut self, meta: &EntryMeta, data_offset: u64) -> Result<()> {
        self.add(meta, data_offset)
            .map_err(|e| Error::Layer(format!("entry {}: {e}", meta.path.display())))
    }

    fn add(&mut self, meta: &EntryMeta, data_offset: u64) -> io::Result<()> {
        let path = meta.path.as_os_str().as_bytes();
        let name = meta.path.file_name().map(OsStr::as_bytes);
        // Whiteouts are UTF-8 names, as the directory writer reads them.
        let whiteout = name
            .filter(|n| std::str::from_utf8(n).is_ok())
            .and_then(|n| n.strip_prefix(WHITEOUT_PREFIX.as_bytes()));
        if let Some(hidden) = whiteout {
            return self.whiteout(&meta.path, name.unwrap_or_default(), hidden, meta);
        }
        if path == b"." {
            if meta.kind != EntryKind::Dir {
                return Err(io::Error::other("the layer root is not a directory"));
            }
            let (perm, uid, gid, xattrs) = self.attributes(meta)?;
            self.set_xattrs(ROOT, xattrs)?;
            let root = &mut self.nodes[ROOT];
            root.perm = perm;
            (root.uid, root.gid) = (uid, gid);
            (root.mtime, root.mtime_nsec) = (meta.mtime, meta.mtime_nsec);
            return Ok(());
        }
        let (parent, leaf) = self.parent_of(&meta.path, true)?;
        let body = match &meta.kind {
            EntryKind::Dir => {
                if let Some(existing) = self.child(parent, &leaf) {
                    if matches!(self.nodes[existing].body, Body::Dir(_)) {
                        // An existing directory keeps what it holds; its metadata is updated.
                        let (perm, uid, gid, xattrs) = self.attributes(meta)?;
                        self.set_xattrs(existing, xattrs)?;
                        let node = &mut self.nodes[existing];
                        node.perm = perm;
                        (node.uid, node.gid) = (uid, gid);
                        (node.mtime, node.mtime_nsec) = (meta.mtime, meta.mtime_nsec);
                        return Ok(());
                    }
                }
                Body::Dir(BTreeMap::new())
            }
            EntryKind::File => {
                if !data_offset.is_multiple_of(BLOCK) {
                    return Err(io::Error::other(format!(
                        "file data at tar offset {data_offset} is not on a 512-byte block"
                    )));
                }
                Body::File {
                    offset: data_offset,
                    size: meta.size,
                }
            }
            EntryKind::Symlink(target) => {
                let target = target.as_os_str().as_bytes();
                // What symlink(2) takes: the target and its NUL within PATH_MAX.
                if target.len() >= SYMLINK_MAX {
                    return Err(io::Error::other(format!(
                        "a symlink target of {} bytes (at most {})",
                        target.len(),
                        SYMLINK_MAX - 1
                    )));
                }
                Body::Symlink(target.to_vec())
            }
            EntryKind::Hardlink(target) => {
                let (tparent, tleaf) = self.parent_of(target, false).map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        not_in_layer(target)
                    } else {
                        io::Error::new(
                            e.kind(),
                            format!("hardlink target {}: {e}", target.display()),
                        )
                    }
                })?;
                let Some(node) = self.child(tparent, &tleaf) else {
                    return Err(not_in_layer(target));
                };
                if matches!(self.nodes[node].body, Body::Dir(_)) {
                    return Err(io::Error::other(format!(
                        "hardlink target {} is a directory",
                        target.display()
                    )));
                }
                if target != &meta.path {
                    self.link(parent, leaf, node)?;
                }
                return Ok(());
            }
            EntryKind::CharDevice(major, minor) | EntryKind::BlockDevice(major, minor) => {
                if !self.opts.admits_device(&meta.path)? {
                    return Ok(());
                }
                let kind = if matches!(meta.kind, EntryKind::CharDevice(..)) {
                    S_IFCHR
                } else {
                    S_IFBLK
                };
                Body::Special {
                    kind,
                    rdev: encode_dev(*major, *minor),
                }
            }
            EntryKind::Fifo => Body::Special {
                kind: S_IFIFO,
                rdev: 0,
            },
        };
        let (perm, uid, gid, xattrs) = self.attributes(meta)?;
        // Symlinks are 0777 whatever the archive says, as symlink(2) makes them.
        let perm = if matches!(body, Body::Symlink(_)) {
            0o777
        } else {
            perm
        };
        let id = self.push(Node {
            perm,
            uid,
            gid,
            mtime: meta.mtime,
            mtime_nsec: meta.mtime_nsec,
            xattrs: Xattrs::new(),
            body,
        })?;
        self.set_xattrs(id, xattrs)?;
        self.link(parent, leaf, id)
    }

    /// `.wh.<name>` hides `<name>` of the layers below (a 0/0 character device, as overlayfs
    /// writes it); `.wh..wh..opq` hides everything below in its directory.
    fn whiteout(
        &mut self,
        path: &Path,
        name: &[u8],
        hidden: &[u8],
        meta: &EntryMeta,
    ) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new(""));
        if name == OPAQUE.as_bytes() {
            let dir = self.resolve_dir(dir, true)?;
            let opaque =
                Xattrs::from([((XATTR_TRUSTED, b"overlay.opaque".to_vec()), b"y".to_vec())]);
            return self.set_xattrs(dir, opaque);
        }
        if hidden.starts_with(WHITEOUT_PREFIX.as_bytes())
            || hidden.is_empty()
            || hidden == b"."
            || hidden == b".."
        {
            // aufs bookkeeping (.wh..wh.plnk …): nothing to do.
            return Ok(());
        }
        check_name(hidden)?;
        let parent = self.resolve_dir(dir, true)?;
        let id = self.push(Node {
            perm: 0,
            uid: self.own.0,
            gid: self.own.1,
            mtime: meta.mtime,
            mtime_nsec: meta.mtime_nsec,
            xattrs: Xattrs::new(),
            body: Body::Special {
                kind: S_IFCHR,
                rdev: 0,
            },
        })?;
        self.link(parent, hidden.to_vec(), id)
    }

    /// Mode, owner and xattrs of an entry as this layer keeps them.
    fn attributes(&self, meta: &EntryMeta) -> io::Result<(u32, u32, u32, Xattrs)> {
        let (uid, gid) = if self.opts.same_owner {
            (id(meta.uid)?, id(meta.gid)?)
        } else {
            self.own
        };
        let mut xattrs = Xattrs::new();
        for (name, value) in &meta.xattrs {
            if name.starts_with("trusted.overlay.") {
                // overlayfs's own bookkeeping: a layer must not forge it (redirects, opaque).
                continue;
            }
            let (index, suffix) = xattr_index(name)?;
            if value.len() > u16::MAX as usize {
                return Err(io::Error::other(format!(
                    "xattr {name}: a value of {} bytes (at most {})",
                    value.len(),
                    u16::MAX
                )));
            }
            // A name given twice: the last value, as the directory writer leaves it.
            xattrs.insert((index, suffix.to_vec()), value.clone());
        }
        Ok((meta.mode & 0o7777, uid, gid, xattrs))
    }

    fn push(&mut self, node: Node) -> io::Result<NodeId> {
        // A symlink's target takes whole blocks of the index.
        let target = match &node.body {
            Body::Symlink(t) => t.len().next_multiple_of(BLOCK as usize),
            _ => 0,
        };
        self.charge(INODE_SIZE as usize + target)?;
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// Counts `bytes` against [`MAX_INDEX_BYTES`].
    fn charge(&mut self, bytes: usize) -> io::Result<()> {
        self.held += bytes;
        if self.held > MAX_INDEX_BYTES {
            return Err(io::Error::other(format!(
                "the layer's EROFS index would be over {} MiB (use a driver that extracts it)",
                MAX_INDEX_BYTES >> 20
            )));
        }
        Ok(())
    }

    /// Sets `xattrs` on `node` (replacing values of the same names), within
    /// [`MAX_XATTR_BYTES`].
    fn set_xattrs(&mut self, node: NodeId, xattrs: Xattrs) -> io::Result<()> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let added: usize = xattrs.iter().map(|((_, n), v)| 4 + n.len() + v.len()).sum();
        self.charge(added)?;
        let into = &mut self.nodes[node].xattrs;
        into.extend(xattrs);
        if xattr_body_len(into) > MAX_XATTR_BYTES {
            return Err(io::Error::other(format!(
                "xattrs of more than {} KiB on one entry",
                MAX_XATTR_BYTES >> 10
            )));
        }
        Ok(())
    }

    fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        match &self.nodes[dir].body {
            Body::Dir(children) => children.get(name).copied(),
            _ => None,
        }
    }

    /// Puts `node` under `name` in `dir`, replacing what was there (a replaced directory goes
    /// with everything it held; nodes nothing reaches are not written).
    fn link(&mut self, dir: NodeId, name: Vec<u8>, node: NodeId) -> io::Result<()> {
        self.charge(DIRENT_SIZE + name.len())?;
        if let Body::Dir(children) = &mut self.nodes[dir].body {
            children.insert(name, node);
        }
        Ok(())
    }

    /// The directory holding `path` and the last component.
    fn parent_of(&mut self, path: &Path, create: bool) -> io::Result<(NodeId, Vec<u8>)> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::other("no file name"))?
            .as_bytes();
        check_name(name)?;
        let parent = path.parent().unwrap_or(Path::new(""));
        let dir = self.resolve_dir(parent, create)?;
        Ok((dir, name.to_vec()))
    }

    /// A directory of the layer, symlinks on the way followed inside it (`..` stops at the
    /// root, absolute targets start there, as RESOLVE_IN_ROOT does for the directory writer);
    /// missing directories made (mode 0755) when `create`, as tar archives may leave parents
    /// out (a dangling symlink's target included).
    fn resolve_dir(&mut self, rel: &Path, create: bool) -> io::Result<NodeId> {
        let mut budget = MAX_SYMLINKS;
        let chain = self.walk(vec![ROOT], rel, create, &mut budget)?;
        Ok(*chain.last().unwrap_or(&ROOT))
    }

    /// Walks `rel` from the directory at the end of `chain` (the directories from the root
    /// down to it, for `..`); returns the chain to where it ends.
    fn walk(
        &mut self,
        mut chain: Vec<NodeId>,
        rel: &Path,
        create: bool,
        budget: &mut u32,
    ) -> io::Result<Vec<NodeId>> {
        for comp in rel.components() {
            let name = match comp {
                Component::Normal(n) => n.as_bytes(),
                Component::ParentDir => {
                    if chain.len() > 1 {
                        chain.pop();
                    }
                    continue;
                }
                Component::RootDir => {
                    chain.truncate(1);
                    continue;
                }
                _ => continue,
            };
            let here = *chain.last().unwrap_or(&ROOT);
            let next = match self.child(here, name) {
                Some(id) => id,
                None if create => {
                    check_name(name)?;
                    let id = self.push(Node {
                        perm: 0o755,
                        uid: self.own.0,
                        gid: self.own.1,
                        mtime: self.now,
                        mtime_nsec: 0,
                        xattrs: Xattrs::new(),
                        body: Body::Dir(BTreeMap::new()),
                    })?;
                    self.link(here, name.to_vec(), id)?;
                    id
                }
                None => return Err(io::ErrorKind::NotFound.into()),
            };
            match &self.nodes[next].body {
                Body::Dir(_) => chain.push(next),
                Body::Symlink(target) => {
                    if *budget == 0 {
                        return Err(io::Error::other("too many levels of symbolic links"));
                    }
                    *budget -= 1;
                    let target = target.clone();
                    let start = if target.starts_with(b"/") {
                        vec![ROOT]
                    } else {
                        chain.clone()
                    };
                    chain =
                        self.walk(start, Path::new(OsStr::from_bytes(&target)), create, budget)?;
                }
                _ => return Err(io::Error::other("a path component is not a directory")),
            }
        }
        Ok(chain)
    }

    /// Writes the metadata after a tar of `tar_len` bytes (already at [`TAR_OFFSET`] of
    /// `image`) and the superblock.
    pub fn finish(self, image: &File, tar_len: u64) -> Result<()> {
        let meta_start = (TAR_OFFSET + tar_len).next_multiple_of(4096);
        let (bytes, blocks, inodes) = self
            .layout(meta_start)
            .map_err(|e| Error::Layer(format!("layer index: {e}")))?;
        let io_err = |e: io::Error| Error::Layer(format!("writing the layer image: {e}"));
        image.write_all_at(&bytes, meta_start).map_err(io_err)?;
        let mut sb = [0u8; 128];
        put32(&mut sb, 0, MAGIC);
        sb[12] = BLOCK_BITS;
        // root nid 0 (the root is the first inode), 16-bit field at 14.
        put64(&mut sb, 16, inodes);
        put32(&mut sb, 36, blocks);
        put32(&mut sb, 40, (meta_start / BLOCK) as u32);
        sb[64..80].copy_from_slice(b"berth-layer\0\0\0\0\0");
        image.write_all_at(&sb, SUPER_OFFSET).map_err(io_err)
    }

    /// The metadata area starting at byte `meta_start` of the image: inodes first (the root at
    /// nid 0), then directory blocks and symlink targets. Returns it, the image's block count
    /// and the number of inodes.
    fn layout(&self, meta_start: u64) -> io::Result<(Vec<u8>, u32, u64)> {
        // The nodes reachable from the root, each once (hardlinks), breadth first; with the
        // number of names each has, and each directory's parent.
        let mut order = vec![ROOT];
        let mut names = vec![0u32; self.nodes.len()];
        let mut parent = vec![ROOT; self.nodes.len()];
        names[ROOT] = 1;
        let mut i = 0;
        while i < order.len() {
            let dir = order[i];
            i += 1;
            if let Body::Dir(children) = &self.nodes[dir].body {
                for &c in children.values() {
                    // A node's first name is where it is first seen.
                    if names[c] == 0 {
                        parent[c] = dir;
                        order.push(c);
                    }
                    names[c] += 1;
                }
            }
        }
        // Inode slots: 32-byte aligned, an inode with its xattrs never across a block when it
        // fits in one.
        let mut nid = vec![0u64; self.nodes.len()];
        let mut records = Vec::with_capacity(order.len());
        let mut at = 0u64;
        for &id in &order {
            let xattrs = xattr_body(&self.nodes[id].xattrs)?;
            let size = INODE_SIZE + xattrs.len() as u64;
            if at % BLOCK + size > BLOCK && size <= BLOCK {
                at = at.next_multiple_of(BLOCK);
            }
            nid[id] = at / 32;
            records.push((id, at, xattrs));
            at = (at + size).next_multiple_of(32);
        }
        // Directory blocks and symlink targets after the inodes.
        let mut data = Vec::new();
        let data_start = meta_start + at.next_multiple_of(BLOCK);
        let mut start_block = vec![0u64; self.nodes.len()];
        let mut size = vec![0u64; self.nodes.len()];
        let mut subdirs = vec![0u32; self.nodes.len()];
        for &id in &order {
            let node = &self.nodes[id];
            match &node.body {
                Body::Dir(children) => {
                    let mut entries: Vec<(&[u8], u64, u8)> = Vec::with_capacity(children.len() + 2);
                    entries.push((b".", nid[id], 2));
                    entries.push((b"..", nid[parent[id]], 2));
                    for (name, &c) in children {
                        if matches!(self.nodes[c].body, Body::Dir(_)) {
                            subdirs[id] += 1;
                        }
                        entries.push((name, nid[c], dirent_type(self.nodes[c].file_type())));
                    }
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                    start_block[id] = (data_start + data.len() as u64) / BLOCK;
                    let before = data.len();
                    write_dir_blocks(&entries, &mut data)?;
                    size[id] = (data.len() - before) as u64;
                }
                Body::Symlink(target) => {
                    start_block[id] = (data_start + data.len() as u64) / BLOCK;
                    data.extend_from_slice(target);
                    data.resize((data.len() as u64).next_multiple_of(BLOCK) as usize, 0);
                    size[id] = target.len() as u64;
                }
                Body::File { offset, size: len } => {
                    start_block[id] = (TAR_OFFSET + offset) / BLOCK;
                    size[id] = *len;
                }
                Body::Special { .. } => {}
            }
        }
        let total = data_start + data.len() as u64;
        let blocks = u32::try_from(total.div_ceil(BLOCK))
            .map_err(|_| io::Error::other("the layer is over 2 TiB"))?;
        // The inodes.
        let mut out = vec![0u8; (data_start - meta_start) as usize];
        for (ino, (id, at, xattrs)) in records.iter().enumerate() {
            let node = &self.nodes[*id];
            let at = *at as usize;
            let rec = &mut out[at..at + INODE_SIZE as usize + xattrs.len()];
            put16(rec, 0, FORMAT_EXTENDED_FLAT_PLAIN);
            let icount = if xattrs.is_empty() {
                0
            } else {
                1 + (xattrs.len() - 12) / 4
            };
            put16(rec, 2, icount as u16);
            put16(rec, 4, (node.file_type() | (node.perm & 0o7777)) as u16);
            put64(rec, 8, size[*id]);
            let i_u = match &node.body {
                Body::Special { rdev, .. } => *rdev,
                _ => u32::try_from(start_block[*id])
                    .map_err(|_| io::Error::other("the layer is over 2 TiB"))?,
            };
            put32(rec, 16, i_u);
            put32(rec, 20, ino as u32 + 1);
            put32(rec, 24, node.uid);
            put32(rec, 28, node.gid);
            put64(rec, 32, node.mtime as u64);
            put32(rec, 40, node.mtime_nsec);
            let nlink = match node.body {
                Body::Dir(_) => 2 + subdirs[*id],
                _ => names[*id],
            };
            put32(rec, 44, nlink);
            rec[INODE_SIZE as usize..].copy_from_slice(xattrs);
        }
        out.extend_from_slice(&data);
        Ok((out, blocks, order.len() as u64))
    }
}

/// Writes to `image` (a new, empty file) the image of an empty layer whose root directory is
/// opaque: what a driver mounts once to learn that the kernel mounts such images and reads
/// their overlay xattrs.
pub(crate) fn probe_image(image: &File) -> Result<()> {
    let opts = ApplyOptions::default();
    let mut index = IndexBuilder::new(&opts);
    let opaque = Xattrs::from([((XATTR_TRUSTED, b"overlay.opaque".to_vec()), b"y".to_vec())]);
    index
        .set_xattrs(ROOT, opaque)
        .map_err(|e| Error::Layer(format!("probe image: {e}")))?;
    index.finish(image, 0)
}

/// Directory entries (sorted) packed into 512-byte blocks: the dirents of a block first, then
/// their names; the last block zero-padded.
fn write_dir_blocks(entries: &[(&[u8], u64, u8)], out: &mut Vec<u8>) -> io::Result<()> {
    let mut i = 0;
    while i < entries.len() {
        let mut used = 0;
        let mut n = 0;
        while i + n < entries.len() && used + DIRENT_SIZE + entries[i + n].0.len() <= BLOCK as usize
        {
            used += DIRENT_SIZE + entries[i + n].0.len();
            n += 1;
        }
        if n == 0 {
            // Names are checked on the way in (at most 255 bytes): never here.
            return Err(io::Error::other("a directory entry does not fit a block"));
        }
        let block_start = out.len();
        out.resize(block_start + BLOCK as usize, 0);
        let block = &mut out[block_start..];
        let mut name_off = DIRENT_SIZE * n;
        for (k, (name, nid, typ)) in entries[i..i + n].iter().enumerate() {
            let d = k * DIRENT_SIZE;
            put64(block, d, *nid);
            put16(block, d + 8, name_off as u16);
            block[d + 10] = *typ;
            block[name_off..name_off + name.len()].copy_from_slice(name);
            name_off += name.len();
        }
        i += n;
    }
    Ok(())
}

/// The inline xattr body of an inode: a 12-byte header, then each entry (4-byte header, name
/// suffix, value) padded to 4 bytes. Empty when there are none.
fn xattr_body(xattrs: &Xattrs) -> io::Result<Vec<u8>> {
    if xattrs.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = vec![0u8; 12];
    for ((index, name), value) in xattrs {
        let start = out.len();
        out.resize(start + 4, 0);
        out[start] = name.len() as u8;
        out[start + 1] = *index;
        put16(&mut out, start + 2, value.len() as u16);
        out.extend_from_slice(name);
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    if (out.len() - 12) / 4 + 1 > u16::MAX as usize {
        return Err(io::Error::other("too many xattrs on one entry"));
    }
    Ok(out)
}

/// The size [`xattr_body`] gives.
fn xattr_body_len(xattrs: &Xattrs) -> usize {
    if xattrs.is_empty() {
        return 0;
    }
    12 + xattrs
        .iter()
        .map(|((_, n), v)| (4 + n.len() + v.len()).next_multiple_of(4))
        .sum::<usize>()
}

/// The on-disk name index of an xattr and the rest of its name.
fn xattr_index(name: &str) -> io::Result<(u8, &[u8])> {
    let known: [(&str, u8); 5] = [
        ("system.posix_acl_access", XATTR_ACL_ACCESS),
        ("system.posix_acl_default", XATTR_ACL_DEFAULT),
        ("user.", XATTR_USER),
        ("trusted.", XATTR_TRUSTED),
        ("security.", XATTR_SECURITY),
    ];
    for (prefix, index) in known {
        if let Some(rest) = name.strip_prefix(prefix) {
            let acl = index == XATTR_ACL_ACCESS || index == XATTR_ACL_DEFAULT;
            if acl != rest.is_empty() || rest.len() > u8::MAX as usize {
                break;
            }
            return Ok((index, rest.as_bytes()));
        }
    }
    Err(io::Error::other(format!(
        "xattr {name:?} has no EROFS name index (user., trusted., security., POSIX ACLs)"
    )))
}

fn check_name(name: &[u8]) -> io::Result<()> {
    if name.is_empty() || name.len() > NAME_MAX || name.contains(&b'/') || name.contains(&0) {
        return Err(io::Error::other(format!(
            "name {:?} cannot be a directory entry",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

fn not_in_layer(target: &Path) -> io::Error {
    io::Error::other(format!(
        "hardlink target {} is not in the layer",
        target.display()
    ))
}

/// The kernel's `new_encode_dev`.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

fn dirent_type(ifmt: u32) -> u8 {
    match ifmt & S_IFMT {
        S_IFREG => 1,
        S_IFDIR => 2,
        S_IFCHR => 3,
        S_IFBLK => 4,
        S_IFIFO => 5,
        S_IFLNK => 7,
        _ => 0,
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_blocks_hold_sorted_entries_without_crossing_a_block() {
        let long = vec![b'x'; 250];
        let long2 = vec![b'y'; 250];
        let entries: Vec<(&[u8], u64, u8)> =
            vec![(b".", 0, 2), (b"..", 0, 2), (&long, 7, 1), (&long2, 9, 1)];
        let mut out = Vec::new();
        write_dir_blocks(&entries, &mut out).unwrap();
        // 12*3 + 1 + 2 + 250 = 289 fits; the second long name does not (289 + 12 + 250 > 512).
        assert_eq!(out.len(), 1024);
        assert_eq!(u16::from_le_bytes([out[8], out[9]]), 36);
        assert_eq!(&out[36..37], b".");
        assert_eq!(&out[37..39], b"..");
        assert_eq!(&out[39..289], &long[..]);
        assert!(
            out[289..512].iter().all(|&b| b == 0),
            "zero padding ends the last name"
        );
        let second = &out[512..];
        assert_eq!(u64::from_le_bytes(second[0..8].try_into().unwrap()), 9);
        assert_eq!(u16::from_le_bytes([second[8], second[9]]), 12);
        assert_eq!(&second[12..262], &long2[..]);
    }

    #[test]
    fn xattr_names_map_to_indexes_or_are_refused() {
        assert_eq!(xattr_index("user.a").unwrap(), (XATTR_USER, &b"a"[..]));
        assert_eq!(
            xattr_index("security.capability").unwrap(),
            (XATTR_SECURITY, &b"capability"[..])
        );
        assert_eq!(
            xattr_index("system.posix_acl_access").unwrap(),
            (XATTR_ACL_ACCESS, &b""[..])
        );
        assert!(xattr_index("system.other").is_err());
        assert!(xattr_index("weird").is_err());
        let xattrs = Xattrs::from([((XATTR_USER, b"ab".to_vec()), b"xyz".to_vec())]);
        let body = xattr_body(&xattrs).unwrap();
        assert_eq!(xattr_body_len(&xattrs), body.len());
        // header 12 + entry 4 + "ab" + "xyz" = 21, padded to 24.
        assert_eq!(body.len(), 24);
        assert_eq!(body[12], 2);
        assert_eq!(body[13], XATTR_USER);
    }

    #[test]
    fn device_numbers_are_encoded_as_the_kernel_decodes_them() {
        assert_eq!(encode_dev(1, 3), 0x103);
        assert_eq!(encode_dev(0, 0), 0);
        assert_eq!(
            encode_dev(259, 0x12345),
            0x45 | (259 << 8) | (0x12300 << 12)
        );
    }
}
