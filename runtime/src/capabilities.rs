//! The five capability sets of `process.capabilities`, applied in the order the kernel allows:
//! bounding set first (needs CAP_SETPCAP, still held), then — after the uid change with
//! keep-caps — effective, permitted and inheritable in one capset(2), then the ambient set.

use std::io;

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use crate::error::{Context, Result};

/// Kernel number of a capability.
pub fn number(c: Capability) -> u32 {
    use Capability::*;
    match c {
        Chown => 0,
        DacOverride => 1,
        DacReadSearch => 2,
        Fowner => 3,
        Fsetid => 4,
        Kill => 5,
        Setgid => 6,
        Setuid => 7,
        Setpcap => 8,
        LinuxImmutable => 9,
        NetBindService => 10,
        NetBroadcast => 11,
        NetAdmin => 12,
        NetRaw => 13,
        IpcLock => 14,
        IpcOwner => 15,
        SysModule => 16,
        SysRawio => 17,
        SysChroot => 18,
        SysPtrace => 19,
        SysPacct => 20,
        SysAdmin => 21,
        SysBoot => 22,
        SysNice => 23,
        SysResource => 24,
        SysTime => 25,
        SysTtyConfig => 26,
        Mknod => 27,
        Lease => 28,
        AuditWrite => 29,
        AuditControl => 30,
        Setfcap => 31,
        MacOverride => 32,
        MacAdmin => 33,
        Syslog => 34,
        WakeAlarm => 35,
        BlockSuspend => 36,
        AuditRead => 37,
        Perfmon => 38,
        Bpf => 39,
        CheckpointRestore => 40,
    }
}

/// The config name of capability number `n` ("CAP_CHOWN" …).
pub fn name(n: u32) -> Option<String> {
    const NAMES: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    NAMES.get(n as usize).map(|s| format!("CAP_{s}"))
}

/// The highest capability this kernel knows.
pub fn last_cap() -> u32 {
    crate::sys::read_pseudo_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The five sets as bit masks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

impl CapSets {
    /// Capabilities the kernel does not know are dropped (with a warning), so a config written
    /// for a newer kernel still runs.
    pub fn from_spec(caps: Option<&LinuxCapabilities>, last: u32) -> CapSets {
        let Some(caps) = caps else {
            return CapSets::default();
        };
        let mask = |set: &Option<Capabilities>| -> u64 {
            let mut bits = 0u64;
            for &c in set.iter().flatten() {
                let n = number(c);
                if n > last {
                    log::warn!(
                        "capability {c} is unknown to this kernel (last is {last}); ignored"
                    );
                } else {
                    bits |= 1 << n;
                }
            }
            bits
        };
        CapSets {
            bounding: mask(caps.bounding()),
            effective: mask(caps.effective()),
            permitted: mask(caps.permitted()),
            inheritable: mask(caps.inheritable()),
            ambient: mask(caps.ambient()),
        }
    }

    /// Drops from the bounding set everything not in `bounding`.
    pub fn apply_bounding(&self, last: u32) -> Result<()> {
        for cap in 0..=last {
            if self.bounding & (1 << cap) == 0 {
                // SAFETY: prctl with integer arguments.
                let r =
                    unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    // EINVAL: the kernel does not know this capability; nothing to drop.
                    if e.raw_os_error() != Some(libc::EINVAL) {
                        return Err(e)
                            .op(|| format!("drop capability {cap} from the bounding set"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets effective, permitted and inheritable, then raises the ambient set.
    pub fn apply_process_sets(&self) -> Result<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        let mut header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let half = |v: u64, hi: bool| if hi { (v >> 32) as u32 } else { v as u32 };
        let data = [false, true].map(|hi| Data {
            effective: half(self.effective, hi),
            permitted: half(self.permitted, hi),
            inheritable: half(self.inheritable, hi),
        });
        // SAFETY: header and two data words are the v3 layout capset(2) expects.
        let r =
            unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
        if r < 0 {
            return Err(io::Error::last_os_error()).op(|| {
                format!(
                    "capset(effective={:#x}, permitted={:#x}, inheritable={:#x})",
                    self.effective, self.permitted, self.inheritable
                )
            });
        }
        // SAFETY: prctl with integer arguments.
        unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        for cap in 0..64u32 {
            if self.ambient & (1 << cap) == 0 {
                continue;
            }
            if self.inheritable & self.permitted & (1 << cap) == 0 {
                // The kernel raises only what is permitted and inheritable; configs (runc's
                // default among them) list ambient caps without inheritable ones. runc goes
                // on; so do we.
                log::debug!("ambient capability {cap} not raised: not permitted and inheritable");
                continue;
            }
            // SAFETY: prctl with integer arguments.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error())
                    .op(|| format!("raise ambient capability {cap}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_from_spec() {
        let caps: LinuxCapabilities = serde_json::from_str(
            r#"{"bounding":["CAP_CHOWN","CAP_KILL","CAP_NET_BIND_SERVICE"],
                "effective":["CAP_KILL"],"permitted":["CAP_KILL","CAP_CHOWN"],
                "ambient":["NET_BIND_SERVICE"]}"#,
        )
        .unwrap();
        let s = CapSets::from_spec(Some(&caps), 40);
        assert_eq!(s.bounding, 1 << 0 | 1 << 5 | 1 << 10);
        assert_eq!(s.effective, 1 << 5);
        assert_eq!(s.permitted, 1 << 0 | 1 << 5);
        assert_eq!(s.inheritable, 0);
        assert_eq!(s.ambient, 1 << 10);
    }

    #[test]
    fn caps_above_the_kernel_are_dropped() {
        let caps: LinuxCapabilities =
            serde_json::from_str(r#"{"bounding":["CAP_CHECKPOINT_RESTORE","CAP_CHOWN"]}"#).unwrap();
        assert_eq!(CapSets::from_spec(Some(&caps), 39).bounding, 1);
    }

    #[test]
    fn names_match_numbers() {
        for n in 0..=40 {
            let name = name(n).unwrap();
            let cap: Capability =
                serde_json::from_value(serde_json::Value::String(name.clone())).unwrap();
            assert_eq!(number(cap), n, "{name}");
        }
        assert!(name(41).is_none());
    }

    #[test]
    fn this_kernel_has_a_last_cap() {
        assert!(last_cap() >= 37);
    }
}
