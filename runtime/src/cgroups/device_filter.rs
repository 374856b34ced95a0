//! cgroup2 has no `devices` controller: device access is decided by a BPF_PROG_TYPE_CGROUP_DEVICE
//! program attached to the cgroup. This module compiles the device rules into such a program
//! (a handful of instructions per rule, emitted directly: no compiler, no object file at run
//! time) and loads and attaches it with the bpf(2) system call.
//!
//! The program reads `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`,
//! where `access_type` is `(access << 16) | type`, and walks the rules from the last to the first:
//! the first rule that matches decides, as the last matching write does in the v1 controller.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::devices::{ACCESS_ALL, DeviceKind, DeviceRule, default_allows};
use crate::error::{Context, Error, Result};

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const LDX_MEM_W: u8 = 0x61;
const ALU64_MOV_X: u8 = 0xbf;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const JMP_JNE_K: u8 = 0x55;
const JMP_EXIT: u8 = 0x95;

const BPF_DEVCG_DEV_BLOCK: i32 = 1;
const BPF_DEVCG_DEV_CHAR: i32 = 2;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// A compiled device filter, ready to load.
#[derive(Clone, Debug)]
pub struct DeviceFilter {
    insns: Vec<Insn>,
}

impl DeviceFilter {
    pub fn compile(rules: &[DeviceRule]) -> DeviceFilter {
        // r2 = access, r3 = type, r4 = major, r5 = minor.
        let mut insns = vec![
            insn(LDX_MEM_W, 2, 1, 0, 0),
            insn(ALU64_MOV_X, 3, 2, 0, 0),
            insn(ALU64_AND_K, 3, 0, 0, 0xffff),
            insn(ALU64_RSH_K, 2, 0, 0, 16),
            insn(LDX_MEM_W, 4, 1, 4, 0),
            insn(LDX_MEM_W, 5, 1, 8, 0),
        ];
        for rule in rules.iter().rev() {
            if rule.is_catch_all() {
                // Nothing before a catch-all can ever decide.
                insns.extend(verdict(rule.allow));
                return DeviceFilter { insns };
            }
            insns.extend(rule_block(rule));
        }
        insns.extend(verdict(default_allows(rules)));
        DeviceFilter { insns }
    }

    pub fn instructions(&self) -> &[Insn] {
        &self.insns
    }

    /// Loads the program into the kernel; the verifier's log is part of the error if it refuses.
    pub fn load(&self) -> Result<LoadedDeviceFilter> {
        let license = c"Apache-2.0";
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: self.insns.len() as u32,
            insns: self.insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            ..Default::default()
        };
        attr.prog_name[..13].copy_from_slice(b"berth_devices");
        match bpf(BPF_PROG_LOAD, &mut attr) {
            // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
            Ok(fd) => Ok(LoadedDeviceFilter {
                fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            }),
            Err(e) => {
                // Ask again with a log buffer: the verifier says why.
                let mut log = vec![0u8; 64 * 1024];
                attr.log_level = 1;
                attr.log_size = log.len() as u32;
                attr.log_buf = log.as_mut_ptr() as u64;
                let _ = bpf(BPF_PROG_LOAD, &mut attr);
                let end = log.iter().position(|&b| b == 0).unwrap_or(0);
                let text = String::from_utf8_lossy(&log[..end]);
                Err(Error::sys(
                    format!("bpf: load device filter (verifier: {})", text.trim()),
                    e,
                ))
            }
        }
    }
}

/// A device filter program loaded in the kernel.
#[derive(Debug)]
pub struct LoadedDeviceFilter {
    fd: OwnedFd,
}

impl LoadedDeviceFilter {
    /// Attaches the program to the cgroup2 directory `dir` (alongside any others: the kernel
    /// allows an access only if every attached program does).
    pub fn attach(&self, dir: &Path) -> Result<()> {
        let cgroup = std::fs::File::open(dir).at("bpf: open cgroup", dir)?;
        let mut attr = ProgAttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: self.fd.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            attach_flags: BPF_F_ALLOW_MULTI,
            replace_bpf_fd: 0,
        };
        bpf(BPF_PROG_ATTACH, &mut attr)
            .map(drop)
            .op(|| format!("bpf: attach device filter to {}", dir.display()))
    }
}

/// Ids of the device programs attached to the cgroup2 directory `dir`.
pub(crate) fn attached(dir: &Path) -> Result<Vec<u32>> {
    #[repr(C)]
    #[derive(Default)]
    struct QueryAttr {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
    }
    let cgroup = std::fs::File::open(dir).at("bpf: open cgroup", dir)?;
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)
        .op(|| format!("bpf: query device programs of {}", dir.display()))?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

/// Detaches the program with `id` from the cgroup2 directory `dir`.
pub(crate) fn detach(dir: &Path, id: u32) -> Result<()> {
    #[repr(C)]
    #[derive(Default)]
    struct GetFdAttr {
        prog_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut get = GetFdAttr {
        prog_id: id,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut get).op(|| format!("bpf: open program {id}"))?;
    // SAFETY: BPF_PROG_GET_FD_BY_ID returned a fresh descriptor nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let cgroup = std::fs::File::open(dir).at("bpf: open cgroup", dir)?;
    let mut attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: 0,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_DETACH, &mut attr)
        .map(drop)
        .op(|| format!("bpf: detach program {id} from {}", dir.display()))
}

fn verdict(allow: bool) -> [Insn; 2] {
    [
        insn(ALU64_MOV_K, 0, 0, 0, allow as i32),
        insn(JMP_EXIT, 0, 0, 0, 0),
    ]
}

/// The checks for one rule; each failed check jumps past the block to the next rule.
fn rule_block(rule: &DeviceRule) -> Vec<Insn> {
    let mut block = Vec::with_capacity(8);
    let mut jumps = Vec::new();
    match rule.kind {
        DeviceKind::All => {}
        DeviceKind::Char => {
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, 3, 0, 0, BPF_DEVCG_DEV_CHAR));
        }
        DeviceKind::Block => {
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, 3, 0, 0, BPF_DEVCG_DEV_BLOCK));
        }
    }
    if rule.access != ACCESS_ALL {
        // Any requested bit the rule does not grant means the rule does not apply.
        block.push(insn(ALU64_MOV_X, 6, 2, 0, 0));
        block.push(insn(
            ALU64_AND_K,
            6,
            0,
            0,
            i32::from(!rule.access & ACCESS_ALL),
        ));
        jumps.push(block.len());
        block.push(insn(JMP_JNE_K, 6, 0, 0, 0));
    }
    for (reg, value) in [(4u8, rule.major), (5u8, rule.minor)] {
        if let Some(v) = value {
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, reg, 0, 0, v as i32));
        }
    }
    block.extend(verdict(rule.allow));
    let len = block.len();
    for j in jumps {
        block[j].off = (len - j - 1) as i16;
    }
    block
}

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// The bpf(2) system call with a typed attribute block; returns the call's non-negative result.
fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised #[repr(C)] prefix of `union bpf_attr` whose size
    // is passed along; the pointers inside it (instructions, license, log) outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::devices::{ACCESS_MKNOD, ACCESS_READ, ACCESS_WRITE, decide};

    /// A tiny interpreter for the instructions this module emits, to check the program against
    /// the reference semantics in `devices::decide` without a kernel.
    fn run(prog: &[Insn], kind: DeviceKind, major: u32, minor: u32, access: u8) -> bool {
        let ty = match kind {
            DeviceKind::Char => 2u64,
            DeviceKind::Block => 1,
            DeviceKind::All => unreachable!(),
        };
        let ctx = [
            (u64::from(access) << 16) | ty,
            u64::from(major),
            u64::from(minor),
        ];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = ctx[(i.off / 4) as usize],
                ALU64_MOV_X => r[dst] = r[src],
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                ALU64_AND_K => r[dst] &= i.imm as i64 as u64,
                ALU64_RSH_K => r[dst] >>= i.imm,
                JMP_JNE_K => {
                    if r[dst] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                JMP_EXIT => return r[0] != 0,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn program_agrees_with_reference_semantics() {
        let deny_all = DeviceRule {
            allow: false,
            kind: DeviceKind::All,
            major: None,
            minor: None,
            access: ACCESS_ALL,
        };
        let extra = [
            DeviceRule {
                allow: true,
                kind: DeviceKind::Char,
                major: Some(10),
                minor: Some(200),
                access: ACCESS_READ,
            },
            DeviceRule {
                allow: false,
                kind: DeviceKind::Char,
                major: Some(1),
                minor: Some(9),
                access: ACCESS_WRITE,
            },
            DeviceRule {
                allow: true,
                kind: DeviceKind::Block,
                major: Some(8),
                minor: None,
                access: ACCESS_READ | ACCESS_WRITE,
            },
        ];
        let mut rulesets = vec![vec![], vec![deny_all]];
        let mut with_defaults = vec![deny_all];
        with_defaults.extend_from_slice(&DEFAULT_FOR_TEST);
        with_defaults.extend_from_slice(&extra);
        rulesets.push(with_defaults);
        let mut allow_all_then_deny = vec![DeviceRule {
            allow: true,
            ..deny_all
        }];
        allow_all_then_deny.extend_from_slice(&extra);
        rulesets.push(allow_all_then_deny);

        for rules in &rulesets {
            let prog = DeviceFilter::compile(rules);
            for kind in [DeviceKind::Char, DeviceKind::Block] {
                for (major, minor) in [
                    (1, 3),
                    (1, 9),
                    (1, 1),
                    (5, 2),
                    (136, 7),
                    (10, 200),
                    (8, 0),
                    (8, 1),
                ] {
                    for access in 1..=ACCESS_ALL {
                        assert_eq!(
                            run(prog.instructions(), kind, major, minor, access),
                            decide(rules, kind, major.into(), minor.into(), access),
                            "{kind:?} {major}:{minor} access {access} rules {rules:?}"
                        );
                    }
                }
            }
        }
    }

    const DEFAULT_FOR_TEST: [DeviceRule; 2] = [
        DeviceRule {
            allow: true,
            kind: DeviceKind::Char,
            major: Some(1),
            minor: Some(3),
            access: ACCESS_ALL,
        },
        DeviceRule {
            allow: true,
            kind: DeviceKind::Char,
            major: None,
            minor: None,
            access: ACCESS_MKNOD,
        },
    ];
}
