//! Device nodes and the standard /dev symlinks inside the container. Nodes are made with mknod,
//! or bound from the host's node where mknod is not allowed (inside a user namespace).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use rustix::fs::{AtFlags, FileType, Mode};

use super::mounts::bind;
use super::options::MountOptions;
use super::resolve::{Leaf, Root};
use crate::error::{Context, Error, Result};

/// A node to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DeviceNode {
    pub path: PathBuf,
    pub file_type: FileType,
    pub major: u32,
    pub minor: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The nodes every container gets, whatever `linux.devices` says (as runc and crun do).
pub(crate) fn default_nodes() -> Vec<DeviceNode> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(path, major, minor)| DeviceNode {
        path: PathBuf::from(path),
        file_type: FileType::CharacterDevice,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// `linux.devices`, checked.
pub(crate) fn spec_nodes(devices: &[LinuxDevice]) -> Result<Vec<DeviceNode>> {
    devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let field = format!("linux.devices[{i}]");
            if !d.path().is_absolute() {
                return Err(Error::config(
                    "config.json",
                    format!("{field}.path"),
                    "must be absolute",
                ));
            }
            let file_type = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => FileType::CharacterDevice,
                LinuxDeviceType::B => FileType::BlockDevice,
                LinuxDeviceType::P => FileType::Fifo,
                LinuxDeviceType::A => {
                    return Err(Error::config(
                        "config.json",
                        format!("{field}.type"),
                        "\"a\" is a cgroup rule type, not a device type",
                    ));
                }
            };
            let num = |v: i64, what: &str| {
                u32::try_from(v).map_err(|_| {
                    Error::config(
                        "config.json",
                        format!("{field}.{what}"),
                        format!("{v} is out of range"),
                    )
                })
            };
            Ok(DeviceNode {
                path: d.path().clone(),
                file_type,
                major: num(d.major(), "major")?,
                minor: num(d.minor(), "minor")?,
                mode: d.file_mode().unwrap_or(0o666) & 0o7777,
                uid: d.uid().unwrap_or(0),
                gid: d.gid().unwrap_or(0),
            })
        })
        .collect()
}

/// Creates `nodes` inside the root; with `bind_from_host`, binds the host's node of the same
/// path instead of calling mknod.
pub(crate) fn create_nodes(root: &Root, nodes: &[DeviceNode], bind_from_host: bool) -> Result<()> {
    // Nodes mostly share /dev: its directory is resolved once, not once per node (nothing
    // else runs in the container yet that could move it).
    let mut parent = None;
    for node in nodes {
        create_node(root, node, bind_from_host, &mut parent)
            .map_err(|e| Error::Child(format!("device {}: {e}", node.path.display())))?;
    }
    Ok(())
}

/// Creates one node; `parent` keeps the last parent directory resolved, with its path.
fn create_node(
    root: &Root,
    node: &DeviceNode,
    bind_from_host: bool,
    parent: &mut Option<(PathBuf, OwnedFd)>,
) -> Result<()> {
    if bind_from_host {
        let target = root.create(&node.path, Leaf::File)?;
        let opts = MountOptions {
            bind: true,
            ..Default::default()
        };
        return bind(&node.path, &target, &opts);
    }
    let parent_path = node.path.parent().unwrap_or(Path::new("/"));
    let name = node
        .path
        .file_name()
        .ok_or_else(|| Error::config("config.json", "linux.devices[].path", "has no file name"))?;
    let parent = match parent {
        Some((path, fd)) if path == parent_path => &*fd,
        _ => {
            let fd = root.create(parent_path, Leaf::Dir)?;
            &parent.insert((parent_path.to_path_buf(), fd)).1
        }
    };
    let dev = rustix::fs::makedev(node.major, node.minor);
    let mode = Mode::from_raw_mode(node.mode);
    match rustix::fs::mknodat(parent, name, node.file_type, mode, dev) {
        Ok(()) => {}
        Err(rustix::io::Errno::EXIST) => {
            // Replace whatever the image had there (runc does the same).
            rustix::fs::unlinkat(parent, name, AtFlags::empty()).at("unlink", &node.path)?;
            rustix::fs::mknodat(parent, name, node.file_type, mode, dev).at("mknod", &node.path)?;
        }
        Err(e) => return Err(e).at("mknod", &node.path),
    }
    // mknod honours the umask; set the exact mode and owner.
    rustix::fs::chmodat(parent, name, mode, AtFlags::empty()).at("chmod", &node.path)?;
    rustix::fs::chownat(
        parent,
        name,
        Some(rustix::fs::Uid::from_raw(node.uid)),
        Some(rustix::fs::Gid::from_raw(node.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .at("chown", &node.path)?;
    Ok(())
}

/// /dev/fd, /dev/std{in,out,err}, /dev/core and, with a devpts instance, /dev/ptmx.
pub(crate) fn create_symlinks(root: &Root, ptmx: bool) -> Result<()> {
    let dev = root.create(Path::new("/dev"), Leaf::Dir)?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    if ptmx {
        // The container's ptys come from its own devpts instance, not the host's.
        match rustix::fs::unlinkat(&dev, "ptmx", AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e).at("unlink", "/dev/ptmx"),
        }
        links.push(("pts/ptmx", "ptmx"));
    }
    for (target, name) in links {
        match rustix::fs::symlinkat(target, dev.as_fd(), name) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e).op(|| format!("symlink /dev/{name} -> {target}")),
        }
    }
    Ok(())
}
