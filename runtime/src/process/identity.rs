//! Switching to `process.user`: supplementary groups, gid, uid. Raw system calls on purpose:
//! they change only the calling thread, and the container process has only one; the
//! capabilities survive the uid change through PR_SET_KEEPCAPS and are set right after.

use std::io;

use oci_spec::runtime::User;

use crate::error::{Context, Result};

fn check(r: libc::c_long, what: impl FnOnce() -> String) -> Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error()).op(what)
    } else {
        Ok(())
    }
}

/// `set_groups`: false where /proc/PID/setgroups says "deny" (a user namespace mapped by an
/// unprivileged user), in which case the supplementary groups cannot change.
pub(crate) fn switch_to(user: &User, set_groups: bool) -> Result<()> {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    if set_groups {
        let groups: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
        // SAFETY: the pointer and length describe `groups`.
        let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
        check(r, || format!("setgroups({groups:?})"))?;
    }
    let (uid, gid) = (user.uid(), user.gid());
    // SAFETY: setresgid/setresuid take plain integers.
    let r = unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) };
    check(r, || format!("setresgid({gid})"))?;
    // SAFETY: as above.
    let r = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
    check(r, || format!("setresuid({uid})"))?;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    rearm_after_credential_change();
    Ok(())
}

/// A credential change resets the parent-death signal and re-derives dumpability (from
/// fs.suid_dumpable): set both again, the process still runs the runtime's code.
pub(crate) fn rearm_after_credential_change() {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
}
