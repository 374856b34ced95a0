//! `linux.seccomp`: the runtime compiles the profile with libseccomp into a classic BPF program
//! (Docker's default profile takes a few milliseconds to compile, so the program is cached
//! under the state root, keyed by the profile's content); the container process loads it with
//! seccomp(2) as late as it can: right before exec with no_new_privs, otherwise while it still
//! holds CAP_SYS_ADMIN. With `SCMP_ACT_NOTIFY` rules the filter is loaded with a listener, whose
//! descriptor goes to `listenerPath` (SCM_RIGHTS) along with the container's state.

use std::fs;
use std::io::{Read, Seek};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use sha2::{Digest, Sha256};

use crate::error::{Context, Error, Result};

const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
const FLAG_TSYNC: u32 = 1;
const FLAG_LOG: u32 = 2;
const FLAG_SPEC_ALLOW: u32 = 4;
const FLAG_NEW_LISTENER: u32 = 8;
const FLAG_WAIT_KILLABLE_RECV: u32 = 32;

/// Changes whenever `compile_bpf` would produce a different program for the same profile, so
/// cached programs from an older build are not reused.
const COMPILER: &str = "berth-seccomp/2 optimize=2";

/// A compiled filter, ready for seccomp(2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeccompProgram {
    /// `struct sock_filter` instructions, 8 bytes each.
    pub instructions: Vec<u8>,
    /// SECCOMP_FILTER_FLAG_* for seccomp(2).
    pub flags: u32,
    /// Where the notification listener goes (with SCMP_ACT_NOTIFY rules).
    pub listener_path: Option<PathBuf>,
    pub listener_metadata: Option<String>,
}

impl SeccompProgram {
    pub fn wants_listener(&self) -> bool {
        self.flags & FLAG_NEW_LISTENER != 0
    }

    /// Installs the filter on the calling process; returns the notification listener if the
    /// program has one.
    pub(crate) fn load(&self) -> Result<Option<OwnedFd>> {
        #[repr(C)]
        struct SockFprog {
            len: libc::c_ushort,
            filter: *const u8,
        }
        let prog = SockFprog {
            len: (self.instructions.len() / 8) as libc::c_ushort,
            filter: self.instructions.as_ptr(),
        };
        // SAFETY: `prog` points at `len` sock_filter instructions that outlive the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const SockFprog,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error())
                .op(|| format!("seccomp(SET_MODE_FILTER, flags {:#x})", self.flags));
        }
        // SAFETY: with NEW_LISTENER the call returned a fresh descriptor nothing else owns.
        Ok(self
            .wants_listener()
            .then(|| unsafe { OwnedFd::from_raw_fd(r as i32) }))
    }
}

/// Hands a notification listener to the profile's `listenerPath` (a unix socket), with the
/// container process state as the runtime-spec describes it (`fds: ["seccompFd"]`).
pub(crate) fn send_listener(
    program: &SeccompProgram,
    listener: &OwnedFd,
    pid: i32,
    state: serde_json::Value,
) -> Result<()> {
    let Some(path) = &program.listener_path else {
        return Err(field("linux.seccomp.listenerPath", "missing"));
    };
    let doc = serde_json::json!({
        "ociVersion": crate::OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": program.listener_metadata.clone().unwrap_or_default(),
        "state": state,
    });
    let sock = crate::terminal::connect_console_socket(path)?;
    let payload = serde_json::to_vec(&doc).map_err(|e| Error::sys("encode seccomp state", e))?;
    crate::terminal::send_bytes_with_fd(sock.as_fd(), &payload, listener.as_fd())
        .op(|| format!("send the seccomp listener to {}", path.display()))
}

/// Compiles `profile`, or takes the program from `cache_dir` if this very profile was compiled
/// before (the cache is keyed by the profile's JSON, the libseccomp version and the machine).
pub fn compile_cached(profile: &LinuxSeccomp, cache_dir: &Path) -> Result<SeccompProgram> {
    let (flags, listener_path, listener_metadata) = load_settings(profile)?;
    let json = serde_json::to_vec(profile).map_err(|e| Error::sys("encode seccomp profile", e))?;
    let v = libseccomp::ScmpVersion::current()
        .map_err(|e| Error::Unsupported(format!("libseccomp: {e}")))?;
    let mut h = Sha256::new();
    h.update(&json);
    h.update(format!(
        "{COMPILER} {}.{}.{} {}",
        v.major,
        v.minor,
        v.micro,
        std::env::consts::ARCH
    ));
    let key: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let path = cache_dir.join(key);
    let instructions = match fs::read(&path) {
        Ok(bytes) if !bytes.is_empty() && bytes.len() % 8 == 0 => bytes,
        _ => {
            let bytes = compile_bpf(profile)?;
            if fs::create_dir_all(cache_dir).is_ok() {
                // A cache that cannot be written only costs time next start.
                let _ = crate::state::write_atomic(&path, &bytes);
            }
            bytes
        }
    };
    Ok(SeccompProgram {
        instructions,
        flags,
        listener_path,
        listener_metadata,
    })
}

/// Compiles without a cache.
pub fn compile(profile: &LinuxSeccomp) -> Result<SeccompProgram> {
    let (flags, listener_path, listener_metadata) = load_settings(profile)?;
    Ok(SeccompProgram {
        instructions: compile_bpf(profile)?,
        flags,
        listener_path,
        listener_metadata,
    })
}

fn field(name: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::config("config.json", name, reason)
}

fn load_settings(p: &LinuxSeccomp) -> Result<(u32, Option<PathBuf>, Option<String>)> {
    let mut flags = 0;
    for f in p.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => FLAG_WAIT_KILLABLE_RECV,
        };
    }
    let notify = p.default_action() == LinuxSeccompAction::ScmpActNotify
        || p.syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify);
    let listener = p.listener_path().clone();
    if notify {
        if listener.is_none() {
            return Err(field(
                "linux.seccomp.listenerPath",
                "SCMP_ACT_NOTIFY needs a listener path",
            ));
        }
        if flags & FLAG_TSYNC != 0 {
            return Err(field(
                "linux.seccomp.flags",
                "SECCOMP_FILTER_FLAG_TSYNC cannot be combined with a notification listener",
            ));
        }
        flags |= FLAG_NEW_LISTENER;
    }
    Ok((flags, listener, p.listener_metadata().clone()))
}

fn action(a: LinuxSeccompAction, errno: Option<u32>, default_errno: u32) -> ScmpAction {
    match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(errno.unwrap_or(default_errno) as i32)
        }
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(errno.unwrap_or(default_errno) as u16)
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    }
}

fn arch(a: Arch) -> Option<ScmpArch> {
    Some(match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        _ => return None,
    })
}

/// One argument condition. For SCMP_CMP_MASKED_EQ, `value` is the mask and `valueTwo` the
/// datum (as runc and libseccomp read them).
fn condition(a: &oci_spec::runtime::LinuxSeccompArg) -> ScmpArgCompare {
    let (op, datum) = match a.op() {
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(a.value()),
            a.value_two().unwrap_or(0),
        ),
        other => (simple_op(other), a.value()),
    };
    ScmpArgCompare::new(a.index() as u32, op, datum)
}

fn simple_op(o: LinuxSeccompOperator) -> ScmpCompareOp {
    match o {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // Handled by `condition`; equality is the nearest reading should it ever get here.
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::Equal,
    }
}

fn lib_err(what: String) -> impl FnOnce(libseccomp::error::SeccompError) -> Error {
    move |e| Error::Sys {
        op: what,
        source: std::io::Error::other(e.to_string()),
    }
}

/// The BPF program for `p`.
fn compile_bpf(p: &LinuxSeccomp) -> Result<Vec<u8>> {
    let default_errno = p.default_errno_ret().unwrap_or(libc::EPERM as u32);
    let default = action(p.default_action(), p.default_errno_ret(), default_errno);
    let mut ctx = ScmpFilterContext::new(default).map_err(lib_err("seccomp: new filter".into()))?;
    // no_new_privs is the runtime's decision (process.noNewPrivileges), not the filter's.
    ctx.set_ctl_nnp(false)
        .map_err(lib_err("seccomp: nnp attribute".into()))?;
    for (i, a) in p.architectures().iter().flatten().enumerate() {
        let scmp = arch(*a).ok_or_else(|| {
            field(
                format!("linux.seccomp.architectures[{i}]"),
                format!("{a:?} is not supported"),
            )
        })?;
        if !ctx.is_arch_present(scmp).unwrap_or(false) {
            ctx.add_arch(scmp)
                .map_err(lib_err(format!("seccomp: add architecture {a:?}")))?;
        }
    }
    for (i, rule) in p.syscalls().iter().flatten().enumerate() {
        let act = action(rule.action(), rule.errno_ret(), libc::EPERM as u32);
        if act == default {
            // libseccomp refuses rules that repeat the default action; they change nothing.
            continue;
        }
        let args = rule.args().clone().unwrap_or_default();
        let conds: Vec<ScmpArgCompare> = args.iter().map(condition).collect();
        // Conditions on distinct arguments are ANDed in one rule; several on the same argument
        // are alternatives (OR), one rule each (runc's reading of the spec).
        let mut indices: Vec<usize> = args.iter().map(|a| a.index()).collect();
        indices.sort_unstable();
        indices.dedup();
        let rule_sets: Vec<Vec<ScmpArgCompare>> = if indices.len() == args.len() {
            vec![conds]
        } else {
            conds.into_iter().map(|c| vec![c]).collect()
        };
        for name in rule.names() {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                // A name this libseccomp (or architecture) does not know: nothing to filter.
                log::debug!("linux.seccomp.syscalls[{i}]: unknown syscall {name:?} skipped");
                continue;
            };
            for set in &rule_sets {
                let added = if set.is_empty() {
                    ctx.add_rule(act, nr)
                } else {
                    ctx.add_rule_conditional(act, nr, set)
                };
                added.map_err(|e| {
                    field(
                        format!("linux.seccomp.syscalls[{i}] ({name})"),
                        e.to_string(),
                    )
                })?;
            }
        }
    }
    let mut out = tempfile_in_memory()?;
    ctx.export_bpf(out.as_fd())
        .map_err(lib_err("seccomp: export BPF".into()))?;
    let mut bytes = Vec::new();
    out.rewind()
        .and_then(|_| out.read_to_end(&mut bytes))
        .op(|| "seccomp: read BPF".to_string())?;
    Ok(bytes)
}

fn tempfile_in_memory() -> Result<fs::File> {
    let fd = rustix::fs::memfd_create("berth-seccomp", rustix::fs::MemfdFlags::CLOEXEC)
        .op(|| "memfd_create".to_string())?;
    Ok(fs::File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn compiles_a_small_profile() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
               "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
                           {"names":["no_such_syscall"],"action":"SCMP_ACT_KILL"},
                           {"names":["personality"],"action":"SCMP_ACT_ERRNO",
                            "args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let prog = compile(&p).unwrap();
        assert!(prog.instructions.len() >= 8 && prog.instructions.len().is_multiple_of(8));
        assert_eq!(prog.flags, 0);
    }

    #[test]
    fn notify_needs_a_listener() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        let e = compile(&p).unwrap_err().to_string();
        assert!(e.contains("listenerPath"), "{e}");
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/x.sock","flags":["SECCOMP_FILTER_FLAG_LOG"],
               "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        let prog = compile(&p).unwrap();
        assert_eq!(prog.flags, FLAG_LOG | FLAG_NEW_LISTENER);
    }

    #[test]
    fn cache_returns_the_same_program() {
        let dir = tempfile::tempdir().unwrap();
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","write","exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        let a = compile_cached(&p, dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let b = compile_cached(&p, dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, compile(&p).unwrap());
    }
}
