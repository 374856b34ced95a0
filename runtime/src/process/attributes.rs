//! Process attributes the kernel keeps across execve, from runtime-spec 1.1/1.2: I/O priority,
//! scheduling policy, NUMA memory policy, execution domain (personality) and CPU affinity.

use std::io;

use oci_spec::runtime::{
    ExecCPUAffinity, IOPriorityClass, LinuxMemoryPolicy, LinuxPersonality, LinuxPersonalityDomain,
    LinuxSchedulerFlag, LinuxSchedulerPolicy, MemoryPolicyFlagType, MemoryPolicyModeType, Process,
    Scheduler,
};

use rustix::thread::CpuSet;

use crate::error::{Context, Error, Result};

fn check(r: libc::c_long, what: impl FnOnce() -> String) -> Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error()).op(what)
    } else {
        Ok(())
    }
}

/// `process.ioPriority`: ioprio_set for this process.
pub(crate) fn io_priority(process: &Process) -> Result<()> {
    let Some(p) = process.io_priority() else {
        return Ok(());
    };
    let class: i64 = match p.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    if !(0..=7).contains(&p.priority()) {
        return Err(Error::config(
            "config.json",
            "process.ioPriority.priority",
            "must be 0..7",
        ));
    }
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    let value = (class << 13) | p.priority();
    // SAFETY: ioprio_set with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
    check(r, || {
        format!(
            "ioprio_set(class {:?}, priority {})",
            p.class(),
            p.priority()
        )
    })
}

/// `process.scheduler`: sched_setattr for this process.
pub(crate) fn scheduler(process: &Process) -> Result<()> {
    let Some(s) = process.scheduler() else {
        return Ok(());
    };
    #[repr(C)]
    #[derive(Default)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: policy(s),
        flags: s.flags().iter().flatten().fold(0, |acc, f| acc | flag(*f)),
        nice: s.nice().unwrap_or(0),
        priority: s.priority().unwrap_or(0) as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
    };
    // SAFETY: sched_setattr reads a valid struct of the size it states.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    check(r, || format!("sched_setattr({:?})", s.policy()))
}

fn policy(s: &Scheduler) -> u32 {
    match s.policy() {
        LinuxSchedulerPolicy::SchedOther => 0,
        LinuxSchedulerPolicy::SchedFifo => 1,
        LinuxSchedulerPolicy::SchedRr => 2,
        LinuxSchedulerPolicy::SchedBatch => 3,
        LinuxSchedulerPolicy::SchedIso => 4,
        LinuxSchedulerPolicy::SchedIdle => 5,
        LinuxSchedulerPolicy::SchedDeadline => 6,
    }
}

fn flag(f: LinuxSchedulerFlag) -> u64 {
    match f {
        LinuxSchedulerFlag::SchedResetOnFork => 0x01,
        LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
        LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
        LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
        LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
        LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
        LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
    }
}

/// `linux.memoryPolicy`: set_mempolicy for this process.
pub(crate) fn memory_policy(policy: Option<&LinuxMemoryPolicy>) -> Result<()> {
    let Some(p) = policy else { return Ok(()) };
    let mode: i32 = match p.mode() {
        MemoryPolicyModeType::MpolDefault => 0,
        MemoryPolicyModeType::MpolPreferred => 1,
        MemoryPolicyModeType::MpolBind => 2,
        MemoryPolicyModeType::MpolInterleave => 3,
        MemoryPolicyModeType::MpolLocal => 4,
        MemoryPolicyModeType::MpolPreferredMany => 5,
        MemoryPolicyModeType::MpolWeightedInterleave => 6,
    };
    let flags = p.flags().iter().flatten().fold(0, |acc, f| {
        acc | match f {
            MemoryPolicyFlagType::MpolFStaticNodes => 1 << 15,
            MemoryPolicyFlagType::MpolFRelativeNodes => 1 << 14,
            MemoryPolicyFlagType::MpolFNumaBalancing => 1 << 13,
        }
    });
    let nodes = match p.nodes().as_deref() {
        Some(list) if !list.is_empty() => parse_list(list).ok_or_else(|| {
            Error::config(
                "config.json",
                "linux.memoryPolicy.nodes",
                format!("{list:?} is not a node list"),
            )
        })?,
        _ => Vec::new(),
    };
    let mut mask = [0u64; 16];
    for n in &nodes {
        if *n >= 1024 {
            return Err(Error::config(
                "config.json",
                "linux.memoryPolicy.nodes",
                format!("node {n} out of range"),
            ));
        }
        mask[*n / 64] |= 1 << (n % 64);
    }
    let (ptr, maxnode) = if nodes.is_empty() {
        (std::ptr::null(), 0)
    } else {
        (mask.as_ptr(), 1024 + 1)
    };
    // SAFETY: the node mask covers `maxnode - 1` bits and outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_set_mempolicy,
            mode | flags,
            ptr,
            maxnode as libc::c_ulong,
        )
    };
    check(r, || {
        format!("set_mempolicy({:?}, nodes {nodes:?})", p.mode())
    })
}

/// `linux.personality`: the execution domain.
pub(crate) fn personality(p: Option<&LinuxPersonality>) -> Result<()> {
    let Some(p) = p else { return Ok(()) };
    if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(Error::config(
            "config.json",
            "linux.personality.flags",
            "no personality flags are defined by the runtime-spec",
        ));
    }
    let domain: libc::c_ulong = match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    // SAFETY: personality with an integer argument.
    let r = unsafe { libc::personality(domain) };
    check(r as libc::c_long, || {
        format!("personality({:?})", p.domain())
    })
}

/// `process.execCPUAffinity`: `initial` is the affinity before the process joins the
/// container's cgroup, `final` the one it runs the program with. Parsed before either applies,
/// so a bad list is reported by `create`.
pub(crate) fn cpu_set(a: Option<&ExecCPUAffinity>, initial: bool) -> Result<Option<CpuSet>> {
    let Some(a) = a else { return Ok(None) };
    let list = if initial {
        a.initial()
    } else {
        a.cpu_affinity_final()
    };
    let Some(list) = list.as_deref().filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let field = if initial {
        "process.execCPUAffinity.initial"
    } else {
        "process.execCPUAffinity.final"
    };
    let cpus = parse_list(list).ok_or_else(|| {
        Error::config("config.json", field, format!("{list:?} is not a CPU list"))
    })?;
    let mut set = CpuSet::new();
    for c in cpus {
        if c >= CpuSet::MAX_CPU {
            return Err(Error::config(
                "config.json",
                field,
                format!("CPU {c} out of range"),
            ));
        }
        set.set(c);
    }
    Ok(Some(set))
}

/// Pins `pid` (None: this thread) to `set`.
pub(crate) fn set_cpu_affinity(pid: Option<libc::pid_t>, set: &CpuSet) -> Result<()> {
    let target = pid.and_then(rustix::process::Pid::from_raw);
    rustix::thread::sched_setaffinity(target, set).op(|| match pid {
        Some(p) => format!("sched_setaffinity(pid {p}, execCPUAffinity)"),
        None => "sched_setaffinity(execCPUAffinity.final)".to_string(),
    })
}

/// "0-3,5,7-8" as a list of numbers.
pub(crate) fn parse_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 4096 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::parse_list;

    #[test]
    fn lists() {
        assert_eq!(parse_list("0-3,5"), Some(vec![0, 1, 2, 3, 5]));
        assert_eq!(parse_list("7"), Some(vec![7]));
        assert_eq!(parse_list("3-1"), None);
        assert_eq!(parse_list("x"), None);
    }
}
