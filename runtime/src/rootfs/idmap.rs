//! Idmapped bind mounts: `idmap` / `ridmap` in a mount's options, optionally with the mount's
//! own `uidMappings` / `gidMappings`.
//!
//! The runtime makes them, in the host's namespaces: setting MOUNT_ATTR_IDMAP needs privilege
//! over the source's filesystem, which a process in the container's user namespace does not
//! have. Each becomes a detached mount (open_tree + mount_setattr) carrying the entry's flags
//! too, and rides to the container init over the sync channel; the init only attaches it.
//! Without mappings of its own, a mount takes the container's user namespace.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};

use super::mounts::cstring;
use super::options::MountOptions;
use crate::error::{Context, Error, Result};
use crate::sys::{self, Forked, MountAttr};

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// A mount's own (uidMappings, gidMappings).
type Mappings = (Vec<LinuxIdMapping>, Vec<LinuxIdMapping>);

/// One idmapped mount to make, checked against the config before anything is created.
#[derive(Debug)]
pub(crate) struct IdmappedMount {
    /// Index in `mounts[]`.
    pub index: usize,
    source: PathBuf,
    opts: MountOptions,
    /// The mount's own mappings; `None` means the container's user namespace.
    mappings: Option<Mappings>,
}

/// The idmapped mounts the config asks for. `has_user_ns`: the container gets (or joins) a
/// user namespace, which a mount without mappings of its own takes.
pub(crate) fn requested(
    spec: &Spec,
    bundle: &Path,
    has_user_ns: bool,
) -> Result<Vec<IdmappedMount>> {
    let mut out = Vec::new();
    for (index, m) in spec.mounts().iter().flatten().enumerate() {
        let uid = nonempty(m.uid_mappings());
        let gid = nonempty(m.gid_mappings());
        let raw = m.options().as_deref().unwrap_or_default();
        // On every start: look for the two words before parsing anything (the init parses
        // each entry's options anyway).
        if uid.is_none() && gid.is_none() && !raw.iter().any(|o| o == "idmap" || o == "ridmap") {
            continue;
        }
        let opts = MountOptions::parse(raw);
        let field = |f: &str| format!("mounts[{index}].{f}");
        let is_bind = opts.bind || m.typ().as_deref() == Some("bind");
        if !is_bind {
            return Err(Error::config(
                "config.json",
                field("options"),
                "idmapped mounts are supported for bind mounts only",
            ));
        }
        let mappings = match (uid, gid) {
            (Some(u), Some(g)) => Some((u.clone(), g.clone())),
            (None, None) if has_user_ns => None,
            (None, None) => {
                return Err(Error::config(
                    "config.json",
                    field("options"),
                    "idmap without uidMappings/gidMappings takes the container's user namespace, \
                     and this container has none",
                ));
            }
            _ => {
                return Err(Error::config(
                    "config.json",
                    field("uidMappings"),
                    "uidMappings and gidMappings go together",
                ));
            }
        };
        if let Some((u, g)) = &mappings {
            check_mappings(u, &field("uidMappings"))?;
            check_mappings(g, &field("gidMappings"))?;
        }
        out.push(IdmappedMount {
            index,
            source: source(m, bundle, index)?,
            opts,
            mappings,
        });
    }
    Ok(out)
}

fn nonempty(v: &Option<Vec<LinuxIdMapping>>) -> Option<&Vec<LinuxIdMapping>> {
    v.as_ref().filter(|v| !v.is_empty())
}

fn check_mappings(maps: &[LinuxIdMapping], field: &str) -> Result<()> {
    // The kernel's limit for an id map without the extended form is 340 lines; 5 was the
    // historical one. Zero-sized ranges are rejected by the kernel with a bare EINVAL.
    if maps.len() > 340 || maps.iter().any(|m| m.size() == 0) {
        return Err(Error::config(
            "config.json",
            field,
            "needs 1 to 340 ranges, none of size 0",
        ));
    }
    Ok(())
}

fn source(m: &Mount, bundle: &Path, index: usize) -> Result<PathBuf> {
    let src = m.source().as_ref().ok_or_else(|| {
        Error::config(
            "config.json",
            format!("mounts[{index}].source"),
            "a bind mount needs a source",
        )
    })?;
    Ok(if src.is_absolute() {
        src.clone()
    } else {
        bundle.join(src)
    })
}

/// Makes each requested mount as a detached tree. `container_userns` is the container's user
/// namespace (for mounts without mappings of their own).
pub(crate) fn make(
    requested: &[IdmappedMount],
    container_userns: Option<&OwnedFd>,
) -> Result<Vec<(usize, OwnedFd)>> {
    let mut made = Vec::with_capacity(requested.len());
    // Mounts with the same mappings share one namespace.
    let mut namespaces: Vec<(&Mappings, OwnedFd)> = Vec::new();
    for r in requested {
        let describe = || {
            format!(
                "mounts[{}] (idmapped bind of {})",
                r.index,
                r.source.display()
            )
        };
        let userns = match &r.mappings {
            None => container_userns.ok_or_else(|| {
                Error::Child(format!("{}: no container user namespace", describe()))
            })?,
            Some(maps) => {
                let at = match namespaces.iter().position(|(m, _)| *m == maps) {
                    Some(at) => at,
                    None => {
                        let ns = mapping_namespace(&maps.0, &maps.1)
                            .op(|| format!("{}: user namespace for its mappings", describe()))?;
                        namespaces.push((maps, ns));
                        namespaces.len() - 1
                    }
                };
                &namespaces[at].1
            }
        };
        let tree = idmapped_tree(&r.source, &r.opts, userns)
            .map_err(|e| Error::Child(format!("{}: {e}", describe())))?;
        made.push((r.index, tree));
    }
    Ok(made)
}

/// A detached copy of `source` idmapped through `userns`, with the entry's flags set.
fn idmapped_tree(source: &Path, opts: &MountOptions, userns: &OwnedFd) -> Result<OwnedFd> {
    let tree = sys::open_tree(&cstring(source)?, opts.recursive_bind).at("open_tree", source)?;
    let idmap = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        userns_fd: std::os::fd::AsRawFd::as_raw_fd(userns) as u64,
        ..Default::default()
    };
    let recursive_idmap = opts.idmap == Some(true);
    sys::mount_setattr(tree.as_fd(), recursive_idmap, &idmap).map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(libc::EINVAL) => {
                " (the filesystem may not support idmapped mounts, or a submount is already idmapped)"
            }
            Some(libc::ENOSYS) => " (idmapped mounts need Linux 5.12)",
            _ => "",
        };
        Error::Child(format!("mount_setattr(MOUNT_ATTR_IDMAP): {e}{hint}"))
    })?;
    let flags = opts.as_mount_attr();
    if !flags.is_empty() {
        sys::mount_setattr(tree.as_fd(), false, &flags)
            .op(|| format!("mount_setattr {flags:?}"))?;
    }
    if !opts.recursive.is_empty() {
        sys::mount_setattr(tree.as_fd(), true, &opts.recursive)
            .op(|| format!("mount_setattr {:?}", opts.recursive))?;
    }
    Ok(tree)
}

/// A user namespace holding just these mappings, owned by a short-lived child that is gone
/// again before this returns; the descriptor keeps the namespace.
fn mapping_namespace(uid: &[LinuxIdMapping], gid: &[LinuxIdMapping]) -> io::Result<OwnedFd> {
    // SAFETY: the runtime is single-threaded when it creates containers (documented on
    // Runtime); the child only waits to be killed.
    match unsafe { sys::fork_into(libc::CLONE_NEWUSER, None) }? {
        Forked::Child => {
            // SAFETY: prctl and pause take no pointers; the child never returns.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                loop {
                    libc::pause();
                }
            }
        }
        Forked::Parent { pid, pidfd } => {
            let result = (|| {
                let format = |maps: &[LinuxIdMapping]| {
                    maps.iter()
                        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
                        .collect::<String>()
                };
                std::fs::write(format!("/proc/{pid}/uid_map"), format(uid))?;
                std::fs::write(format!("/proc/{pid}/gid_map"), format(gid))?;
                Ok(std::fs::File::open(format!("/proc/{pid}/ns/user"))?.into())
            })();
            crate::process::wait::kill_and_reap(pid, pidfd.as_ref());
            result
        }
    }
}
