//! The btrfs ioctls the btrfs driver uses (linux/btrfs.h): subvolume create, snapshot, delete,
//! read-only flag. No btrfs-progs at run time.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Context, Error, Result};

pub(crate) const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;

const BTRFS_IOCTL_MAGIC: u32 = 0x94;
const BTRFS_PATH_NAME_MAX: usize = 4087;
const BTRFS_SUBVOL_NAME_MAX: usize = 4039;
const BTRFS_SUBVOL_RDONLY: u64 = 1 << 1;

/// struct btrfs_ioctl_vol_args
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; BTRFS_PATH_NAME_MAX + 1],
}

/// struct btrfs_ioctl_vol_args_v2 (the union member used here is `unused[4]`).
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; BTRFS_SUBVOL_NAME_MAX + 1],
}

const fn iow(nr: u32, size: usize) -> libc::c_ulong {
    // _IOC(_IOC_WRITE, type, nr, size)
    ((1u32 << 30) | ((size as u32) << 16) | (BTRFS_IOCTL_MAGIC << 8) | nr) as libc::c_ulong
}

const fn ior(nr: u32, size: usize) -> libc::c_ulong {
    ((2u32 << 30) | ((size as u32) << 16) | (BTRFS_IOCTL_MAGIC << 8) | nr) as libc::c_ulong
}

/// struct btrfs_ioctl_ino_lookup_args
#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

/// struct btrfs_ioctl_quota_ctl_args
#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

/// struct btrfs_ioctl_qgroup_limit_args
#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

const fn iowr(nr: u32, size: usize) -> libc::c_ulong {
    ((3u32 << 30) | ((size as u32) << 16) | (BTRFS_IOCTL_MAGIC << 8) | nr) as libc::c_ulong
}

const INO_LOOKUP: libc::c_ulong = iowr(18, std::mem::size_of::<InoLookupArgs>());
const QUOTA_CTL: libc::c_ulong = iowr(40, std::mem::size_of::<QuotaCtlArgs>());
// Declared _IOR in linux/btrfs.h, though the kernel reads it.
const QGROUP_LIMIT: libc::c_ulong = ior(43, std::mem::size_of::<QgroupLimitArgs>());
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;
const BTRFS_QUOTA_CTL_ENABLE: u64 = 1;
const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1;

const SNAP_DESTROY: libc::c_ulong = iow(15, std::mem::size_of::<VolArgs>());
const SUBVOL_CREATE: libc::c_ulong = iow(14, std::mem::size_of::<VolArgs>());
const SNAP_CREATE_V2: libc::c_ulong = iow(23, std::mem::size_of::<VolArgsV2>());
const SUBVOL_GETFLAGS: libc::c_ulong = ior(25, std::mem::size_of::<u64>());
const SUBVOL_SETFLAGS: libc::c_ulong = iow(26, std::mem::size_of::<u64>());

fn name_bytes<const N: usize>(name: &str) -> Result<[u8; N]> {
    if name.is_empty() || name.len() >= N || name.contains(['/', '\0']) {
        return Err(Error::Unsupported(format!("bad subvolume name {name:?}")));
    }
    let mut out = [0u8; N];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

fn ioctl(fd: &fs::File, request: libc::c_ulong, arg: *mut libc::c_void) -> std::io::Result<()> {
    // SAFETY: `arg` points to the struct `request` expects, alive for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Creates the empty subvolume `dir/name`.
pub(crate) fn create_subvolume(dir: &Path, name: &str) -> Result<()> {
    let parent = fs::File::open(dir).at("open", dir)?;
    let mut args = VolArgs {
        fd: 0,
        name: name_bytes(name)?,
    };
    ioctl(&parent, SUBVOL_CREATE, (&mut args as *mut VolArgs).cast())
        .at("BTRFS_IOC_SUBVOL_CREATE", dir.join(name))
}

/// Snapshots the subvolume `source` as `dir/name`.
pub(crate) fn snapshot(source: &Path, dir: &Path, name: &str, read_only: bool) -> Result<()> {
    let src = fs::File::open(source).at("open", source)?;
    let parent = fs::File::open(dir).at("open", dir)?;
    let mut args = VolArgsV2 {
        fd: src.as_raw_fd() as i64,
        transid: 0,
        flags: if read_only { BTRFS_SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: name_bytes(name)?,
    };
    ioctl(
        &parent,
        SNAP_CREATE_V2,
        (&mut args as *mut VolArgsV2).cast(),
    )
    .at("BTRFS_IOC_SNAP_CREATE_V2", dir.join(name))
}

/// Deletes the subvolume `dir/name` (read-only or not).
pub(crate) fn delete_subvolume(dir: &Path, name: &str) -> Result<()> {
    let parent = fs::File::open(dir).at("open", dir)?;
    let mut args = VolArgs {
        fd: 0,
        name: name_bytes(name)?,
    };
    ioctl(&parent, SNAP_DESTROY, (&mut args as *mut VolArgs).cast())
        .at("BTRFS_IOC_SNAP_DESTROY", dir.join(name))
}

/// Sets or clears the read-only flag of the subvolume at `path`.
pub(crate) fn set_read_only(path: &Path, read_only: bool) -> Result<()> {
    let subvol = fs::File::open(path).at("open", path)?;
    let mut flags = 0u64;
    ioctl(&subvol, SUBVOL_GETFLAGS, (&mut flags as *mut u64).cast())
        .at("BTRFS_IOC_SUBVOL_GETFLAGS", path)?;
    if read_only {
        flags |= BTRFS_SUBVOL_RDONLY;
    } else {
        flags &= !BTRFS_SUBVOL_RDONLY;
    }
    ioctl(&subvol, SUBVOL_SETFLAGS, (&mut flags as *mut u64).cast())
        .at("BTRFS_IOC_SUBVOL_SETFLAGS", path)
}

/// The id of the subvolume at `path`.
fn subvolume_id(subvol: &fs::File, path: &Path) -> Result<u64> {
    let mut args = InoLookupArgs {
        treeid: 0,
        objectid: BTRFS_FIRST_FREE_OBJECTID,
        name: [0; 4080],
    };
    ioctl(subvol, INO_LOOKUP, (&mut args as *mut InoLookupArgs).cast())
        .at("BTRFS_IOC_INO_LOOKUP", path)?;
    Ok(args.treeid)
}

/// Limits what the subvolume at `path` may reference to `bytes` (quota enabled on the
/// filesystem first: qgroups cost on every write, so only when a limit is asked for).
pub(crate) fn limit_size(path: &Path, bytes: u64) -> Result<()> {
    let subvol = fs::File::open(path).at("open", path)?;
    let mut ctl = QuotaCtlArgs {
        cmd: BTRFS_QUOTA_CTL_ENABLE,
        status: 0,
    };
    ioctl(&subvol, QUOTA_CTL, (&mut ctl as *mut QuotaCtlArgs).cast())
        .at("BTRFS_IOC_QUOTA_CTL (enable quota)", path)?;
    let mut args = QgroupLimitArgs {
        qgroupid: subvolume_id(&subvol, path)?,
        flags: BTRFS_QGROUP_LIMIT_MAX_RFER,
        max_rfer: bytes,
        max_excl: 0,
        rsv_rfer: 0,
        rsv_excl: 0,
    };
    ioctl(
        &subvol,
        QGROUP_LIMIT,
        (&mut args as *mut QgroupLimitArgs).cast(),
    )
    .at("BTRFS_IOC_QGROUP_LIMIT", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux() {
        // From linux/btrfs.h on x86_64.
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<VolArgsV2>(), 4096);
        assert_eq!(SUBVOL_CREATE, 0x5000_940e);
        assert_eq!(SNAP_DESTROY, 0x5000_940f);
        assert_eq!(SNAP_CREATE_V2, 0x5000_9417);
        assert_eq!(SUBVOL_GETFLAGS, 0x8008_9419);
        assert_eq!(SUBVOL_SETFLAGS, 0x4008_941a);
        assert_eq!(INO_LOOKUP, 0xd000_9412);
        assert_eq!(QUOTA_CTL, 0xc010_9428);
        assert_eq!(QGROUP_LIMIT, 0x8030_942b);
    }
}
