//! Which namespaces a container gets, and how: created by the clone that makes its init, created
//! later by the init itself (cgroup and time, which must wait until the init is in its cgroup or
//! has its clock offsets), or joined by path.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceKind {
    User,
    Mount,
    Pid,
    Network,
    Ipc,
    Uts,
    Cgroup,
    Time,
}

impl NamespaceKind {
    pub const ALL: [NamespaceKind; 8] = [
        NamespaceKind::User,
        NamespaceKind::Mount,
        NamespaceKind::Pid,
        NamespaceKind::Network,
        NamespaceKind::Ipc,
        NamespaceKind::Uts,
        NamespaceKind::Cgroup,
        NamespaceKind::Time,
    ];

    pub fn clone_flag(self) -> libc::c_int {
        match self {
            NamespaceKind::User => libc::CLONE_NEWUSER,
            NamespaceKind::Mount => libc::CLONE_NEWNS,
            NamespaceKind::Pid => libc::CLONE_NEWPID,
            NamespaceKind::Network => libc::CLONE_NEWNET,
            NamespaceKind::Ipc => libc::CLONE_NEWIPC,
            NamespaceKind::Uts => libc::CLONE_NEWUTS,
            NamespaceKind::Cgroup => libc::CLONE_NEWCGROUP,
            NamespaceKind::Time => libc::CLONE_NEWTIME,
        }
    }

    /// The entry under /proc/PID/ns/.
    pub fn proc_name(self) -> &'static str {
        match self {
            NamespaceKind::User => "user",
            NamespaceKind::Mount => "mnt",
            NamespaceKind::Pid => "pid",
            NamespaceKind::Network => "net",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Uts => "uts",
            NamespaceKind::Cgroup => "cgroup",
            NamespaceKind::Time => "time",
        }
    }

    fn from_oci(t: LinuxNamespaceType) -> NamespaceKind {
        match t {
            LinuxNamespaceType::User => NamespaceKind::User,
            LinuxNamespaceType::Mount => NamespaceKind::Mount,
            LinuxNamespaceType::Pid => NamespaceKind::Pid,
            LinuxNamespaceType::Network => NamespaceKind::Network,
            LinuxNamespaceType::Ipc => NamespaceKind::Ipc,
            LinuxNamespaceType::Uts => NamespaceKind::Uts,
            LinuxNamespaceType::Cgroup => NamespaceKind::Cgroup,
            LinuxNamespaceType::Time => NamespaceKind::Time,
        }
    }
}

/// An existing namespace the container enters.
#[derive(Debug)]
pub(crate) struct JoinedNamespace {
    pub kind: NamespaceKind,
    pub fd: OwnedFd,
    pub path: PathBuf,
}

#[derive(Debug, Default)]
pub(crate) struct NamespacePlan {
    pub new: Vec<NamespaceKind>,
    pub join: Vec<JoinedNamespace>,
}

impl NamespacePlan {
    /// Reads `linux.namespaces`, opening (and type-checking) every path to join.
    pub fn from_spec(spec: &Spec) -> Result<NamespacePlan> {
        let mut plan = NamespacePlan::default();
        let list = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
        for (i, ns) in list.into_iter().flatten().enumerate() {
            let kind = NamespaceKind::from_oci(ns.typ());
            let field = format!("linux.namespaces[{i}]");
            if plan.has(kind) {
                return Err(Error::config(
                    "config.json",
                    field,
                    format!("the {} namespace is listed twice", kind.proc_name()),
                ));
            }
            match ns.path() {
                None => plan.new.push(kind),
                Some(path) => {
                    let fd = open_namespace(path, kind)
                        .map_err(|e| Error::config("config.json", format!("{field}.path"), e))?;
                    plan.join.push(JoinedNamespace {
                        kind,
                        fd,
                        path: path.clone(),
                    });
                }
            }
        }
        Ok(plan)
    }

    pub fn creates(&self, kind: NamespaceKind) -> bool {
        self.new.contains(&kind)
    }

    pub fn joins(&self, kind: NamespaceKind) -> Option<&JoinedNamespace> {
        self.join.iter().find(|j| j.kind == kind)
    }

    pub fn has(&self, kind: NamespaceKind) -> bool {
        self.creates(kind) || self.joins(kind).is_some()
    }

    /// Every namespace the container does not share with the runtime.
    pub fn kinds(&self) -> Vec<NamespaceKind> {
        NamespaceKind::ALL
            .into_iter()
            .filter(|k| self.has(*k))
            .collect()
    }

    /// A user namespace together with joined namespaces needs an intermediate process: joined
    /// namespaces must be entered with the privileges of the namespace that owns them, and new
    /// ones must be created inside the container's user namespace so it owns them.
    pub fn needs_intermediate(&self) -> bool {
        let joins_other = self.join.iter().any(|j| j.kind != NamespaceKind::User);
        let creates_other = self.new.iter().any(|k| *k != NamespaceKind::User);
        (self.creates(NamespaceKind::User) && joins_other)
            || (self.joins(NamespaceKind::User).is_some() && creates_other)
    }

    /// Namespaces the cloning syscall creates directly. cgroup and time are left to the init:
    /// a cgroup namespace must be rooted at the container's cgroup, which the init joins only
    /// after the clone; a time namespace needs its offsets written before anyone enters it.
    pub fn clone_flags(&self) -> libc::c_int {
        self.new
            .iter()
            .filter(|k| !matches!(k, NamespaceKind::Cgroup | NamespaceKind::Time))
            .fold(0, |acc, k| acc | k.clone_flag())
    }
}

/// Opens a namespace file and checks that it is a namespace of the expected kind.
fn open_namespace(path: &std::path::Path, kind: NamespaceKind) -> Result<OwnedFd, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // NS_GET_NSTYPE = _IO(0xb7, 0x3)
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: the ioctl takes no argument and only reads the descriptor's namespace type.
    let ty = unsafe { libc::ioctl(file.as_fd().as_raw_fd(), NS_GET_NSTYPE as _) };
    if ty < 0 {
        return Err(format!(
            "{} is not a namespace file ({})",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    if ty != kind.clone_flag() {
        return Err(format!(
            "{} is not a {} namespace",
            path.display(),
            kind.proc_name()
        ));
    }
    Ok(file.into())
}

/// Enters the namespace behind `fd`.
pub(crate) fn enter(fd: &OwnedFd, kind: NamespaceKind, what: &std::path::Path) -> Result<()> {
    rustix::thread::move_into_link_name_space(fd.as_fd(), Some(link_type(kind)))
        .op(|| format!("setns {} namespace {}", kind.proc_name(), what.display()))
}

fn link_type(kind: NamespaceKind) -> rustix::thread::LinkNameSpaceType {
    use rustix::thread::LinkNameSpaceType as L;
    match kind {
        NamespaceKind::User => L::User,
        NamespaceKind::Mount => L::Mount,
        NamespaceKind::Pid => L::ProcessID,
        NamespaceKind::Network => L::Network,
        NamespaceKind::Ipc => L::InterProcessCommunication,
        NamespaceKind::Uts => L::HostNameAndNISDomainName,
        NamespaceKind::Cgroup => L::ControlGroup,
        NamespaceKind::Time => L::Time,
    }
}

/// Creates new namespaces for the calling process (its children, for pid and time).
pub(crate) fn unshare(flags: libc::c_int) -> Result<()> {
    if flags == 0 {
        return Ok(());
    }
    // SAFETY: unshare only changes this process's namespace membership.
    let r = unsafe { libc::unshare(flags) };
    if r < 0 {
        return Err(Error::sys(
            format!("unshare({})", describe_flags(flags)),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

pub(crate) fn describe_flags(flags: libc::c_int) -> String {
    let names: Vec<&str> = NamespaceKind::ALL
        .into_iter()
        .filter(|k| flags & k.clone_flag() != 0)
        .map(NamespaceKind::proc_name)
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join("|")
    }
}

/// This thread in another namespace of one kind until dropped: for a pid namespace that is
/// `pid_for_children` (the next fork lands there), for a network namespace the sockets it
/// makes. Aborts the process if it cannot go back: an embedding engine must not go on with its
/// later children, or sockets, in a container's namespace (and re-entering the namespace it
/// came from cannot fail short of a kernel bug).
pub(crate) struct NamespaceSwitch {
    own: OwnedFd,
    kind: rustix::thread::LinkNameSpaceType,
}

impl NamespaceSwitch {
    pub fn enter(target: &OwnedFd, kind: NamespaceKind) -> Result<NamespaceSwitch> {
        use rustix::thread::LinkNameSpaceType;
        let (file, link) = match kind {
            NamespaceKind::Pid => ("pid", LinkNameSpaceType::ProcessID),
            NamespaceKind::Network => ("net", LinkNameSpaceType::Network),
            other => {
                return Err(Error::Unsupported(format!(
                    "switching into a {other:?} namespace"
                )));
            }
        };
        let path = format!("/proc/thread-self/ns/{file}");
        let own: OwnedFd = std::fs::File::open(&path).at("open", &path)?.into();
        rustix::thread::move_into_link_name_space(target.as_fd(), Some(link))
            .op(|| format!("setns into the container's {file} namespace"))?;
        Ok(NamespaceSwitch { own, kind: link })
    }
}

impl Drop for NamespaceSwitch {
    fn drop(&mut self) {
        if let Err(e) = rustix::thread::move_into_link_name_space(self.own.as_fd(), Some(self.kind))
        {
            eprintln!(
                "berth-runtime: cannot return to the runtime's own namespace: {}",
                std::io::Error::from(e)
            );
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn plain_container_is_one_clone() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"},{"type":"network"},
            {"type":"mount"},{"type":"cgroup"},{"type":"time"}]}}"#,
        );
        let p = NamespacePlan::from_spec(&s).unwrap();
        assert!(!p.needs_intermediate());
        assert_eq!(
            p.clone_flags(),
            libc::CLONE_NEWPID | libc::CLONE_NEWNET | libc::CLONE_NEWNS
        );
        assert_eq!(p.kinds().len(), 5);
    }

    #[test]
    fn duplicate_and_wrong_type_are_refused() {
        let s = spec(r#"{"linux":{"namespaces":[{"type":"pid"},{"type":"pid"}]}}"#);
        let e = NamespacePlan::from_spec(&s).unwrap_err().to_string();
        assert!(
            e.contains("linux.namespaces[1]") && e.contains("twice"),
            "{e}"
        );
        let s = spec(r#"{"linux":{"namespaces":[{"type":"network","path":"/proc/self/ns/uts"}]}}"#);
        let e = NamespacePlan::from_spec(&s).unwrap_err().to_string();
        assert!(
            e.contains("linux.namespaces[0].path") && e.contains("not a net"),
            "{e}"
        );
        let s = spec(r#"{"linux":{"namespaces":[{"type":"network","path":"/etc/hostname"}]}}"#);
        let e = NamespacePlan::from_spec(&s).unwrap_err().to_string();
        assert!(e.contains("not a namespace file"), "{e}");
    }

    #[test]
    fn user_namespace_with_joins_needs_intermediate() {
        let s = spec(
            r#"{"linux":{"namespaces":[{"type":"user"},{"type":"pid"},
            {"type":"network","path":"/proc/self/ns/net"}]}}"#,
        );
        assert!(NamespacePlan::from_spec(&s).unwrap().needs_intermediate());
        let s = spec(r#"{"linux":{"namespaces":[{"type":"user"},{"type":"pid"}]}}"#);
        assert!(!NamespacePlan::from_spec(&s).unwrap().needs_intermediate());
    }

    #[test]
    fn flags_are_described() {
        assert_eq!(
            describe_flags(libc::CLONE_NEWNET | libc::CLONE_NEWPID),
            "pid|net"
        );
    }
}
