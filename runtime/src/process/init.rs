//! The container's init, from the clone to execve: the child side of `create`.
//!
//! The process is a fork of the runtime (no re-exec of the runtime binary: nothing of the
//! runtime's executable is ever mapped by a process the container could see after this one
//! execs, and it is non-dumpable until then, which is the CVE-2019-5736 defence). Order:
//!   wait for the parent (id maps, cgroup) → become root of the user namespace → join
//!   namespaces → cgroup/time namespaces → hostname → rootfs → sysctl → terminal → masked and
//!   read-only paths → user process setup → report ready → wait to be released → execve.

use std::cell::Cell;
use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use oci_spec::runtime::{Process, Spec};
use rustix::fs::{Mode, OFlags};

use super::channel::{Channel, Message};
use super::user_process::{self, ConsoleTarget};
use crate::cgroups::Cgroup;
use crate::error::{Context, Error, Result};
use crate::hooks::{self, HookPoint};
use crate::namespaces::{self, NamespaceKind, NamespacePlan};
use crate::rootfs::{self, RootfsSetup};
use crate::state::EXEC_FIFO;
use crate::sys::{self, Forked};
use crate::trace;

/// How the init learns it may exec the user program.
pub(crate) enum Release<'a> {
    /// `create`: reopen the exec FIFO (held as O_PATH) for writing; `start` opens the other end.
    Fifo(&'a OwnedFd),
    /// `run`: a `Start` message on the sync channel.
    Channel,
}

/// How the init gets into the container's v1 cgroups.
pub(crate) enum V1Join<'a> {
    /// The runtime moves it by pid (or there are no v1 hierarchies).
    ByRuntime,
    /// It moves itself through these `tasks` files, first thing.
    Now(&'a [(std::path::PathBuf, OwnedFd)]),
    /// It moves itself through the `tasks` files the runtime sends (`JoinCgroups`) once it
    /// has made the v1 directories, which it does while the init sets up its mounts; the init
    /// takes them at its cgroup mount or, without one, right after its mounts.
    AtGate,
}

pub(crate) struct InitArgs<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    pub process: &'a Process,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub plan: &'a NamespacePlan,
    pub cgroup: &'a Cgroup,
    /// How the init gets into its v1 cgroups.
    pub v1_join: V1Join<'a>,
    pub console_socket: Option<&'a OwnedFd>,
    /// Foreground `run` with a terminal: the master goes back over the channel.
    pub console_to_parent: bool,
    pub release: Release<'a>,
    /// The runtime's executable, which the container may not run (CVE-2019-5736).
    pub runtime_exe: user_process::RuntimeExe,
    pub seccomp: Option<&'a crate::seccomp::SeccompProgram>,
    pub preserve_fds: RawFd,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
}

/// Runs in the forked child; never returns. Failures are reported over `chan` and end the
/// process with status 1.
pub(crate) fn container_init(args: &InitArgs<'_>, chan: &Channel) -> ! {
    let outcome = catch_unwind(AssertUnwindSafe(|| run(args, chan)));
    let text = match outcome {
        Ok(Ok(never)) => match never {},
        Ok(Err(e)) => e.to_string(),
        Err(panic) => format!(
            "container init panicked: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        ),
    };
    if chan.send(&Message::Failed(text.clone())).is_err() {
        // The parent is gone (released through the FIFO): stderr is all that is left.
        eprintln!("berth-runtime: container {}: {text}", args.id);
    }
    sys::exit_now(if text.contains("executable file not found") {
        127
    } else {
        1
    })
}

fn run(args: &InitArgs<'_>, chan: &Channel) -> Result<Infallible> {
    user_process::reset_signals();
    guard_against_parent_death();
    if let V1Join::Now(files) = args.v1_join {
        crate::cgroups::join_v1_self(files)?;
        trace::mark("init: moved itself into its v1 cgroups");
    }
    // Non-dumpable: other processes (the container's own, once it has any) cannot open
    // /proc/<this>/exe or ptrace us while we still run the runtime's code. But a non-dumpable
    // process's /proc files belong to root, and an unprivileged runtime writes our id maps
    // through them: then we wait until the maps are written (nothing else runs in our new
    // namespaces before that).
    let maps_from_unprivileged_parent =
        args.plan.creates(NamespaceKind::User) && !rustix::process::geteuid().is_root();
    if !maps_from_unprivileged_parent {
        non_dumpable();
    }
    // Exact modes for everything made during setup; the process's own umask comes last.
    rustix::process::umask(Mode::empty());

    if args.plan.needs_intermediate() {
        become_init_through_intermediate(args, chan)?;
    }
    // The state for the hooks the init runs itself comes first, when there are any.
    let hook_state = if hooks::any(
        args.spec,
        &[HookPoint::CreateContainer, HookPoint::StartContainer],
    ) {
        match chan.recv() {
            Ok(Some(Message::State(json))) => serde_json::from_str(&json).unwrap_or_default(),
            other => {
                return Err(Error::Child(format!(
                    "expected the container state, got {other:?}"
                )));
            }
        }
    } else {
        serde_json::Value::Null
    };
    // Idmapped mounts (made by the runtime, which is privileged over their filesystems) come
    // before the go-ahead.
    let mut idmapped = Vec::new();
    loop {
        match chan.recv_with_fd() {
            Ok(Some((Message::Continue, _))) => break,
            Ok(Some((Message::IdmappedMount(index), Some(tree)))) => {
                idmapped.push((index as usize, tree));
            }
            Ok(Some((Message::Failed(text), _))) => return Err(Error::Child(text)),
            other => {
                return Err(Error::Child(format!(
                    "expected Continue, got {:?}",
                    other.map(|o| o.map(|(m, _)| m))
                )));
            }
        }
    }
    trace::mark("init: continue");
    if maps_from_unprivileged_parent {
        non_dumpable();
    }

    let plan = args.plan;
    if plan.creates(NamespaceKind::User) {
        become_namespace_root()?;
    }
    if !plan.needs_intermediate() {
        join_namespaces(plan, |k| k != NamespaceKind::Pid)?;
    }
    let gate = CgroupGate {
        chan,
        cgroup: args.cgroup,
        join_v1: Cell::new(matches!(args.v1_join, V1Join::AtGate)),
        new_namespace: plan.creates(NamespaceKind::Cgroup),
        passed: Cell::new(false),
    };
    if plan.creates(NamespaceKind::Time) {
        enter_new_time_namespace(args.spec)?;
    }
    set_names(args.spec)?;

    let setup = RootfsSetup {
        spec: args.spec,
        rootfs: args.rootfs,
        bundle: args.bundle,
        cgroup: args.cgroup,
        cgroup_ns: plan.has(NamespaceKind::Cgroup),
        net_ns: plan.has(NamespaceKind::Network),
        user_ns: plan.has(NamespaceKind::User),
        no_pivot: args.no_pivot,
        idmapped: &idmapped,
        enter_cgroup: &|| gate.pass(),
    };
    trace::mark("init: namespaces done");
    rootfs::prepare(&setup)?;
    trace::mark("init: rootfs mounted");
    // Into the v1 cgroups the runtime made meanwhile before anything else runs (hooks, the
    // limits and policies `prepare` sets), if the cgroup mount did not take it there already.
    gate.join_v1()?;
    // In the container's namespaces, host paths still visible (before pivot_root).
    hooks::run(args.spec, HookPoint::CreateContainer, &hook_state)?;
    rootfs::enter(&setup)?;
    trace::mark("init: pivoted");
    write_sysctls(args.spec)?;

    user_process::new_session()?;
    if args.process.terminal() == Some(true) {
        let to = match (args.console_socket, args.console_to_parent) {
            (Some(sock), _) => ConsoleTarget::Socket(sock),
            (None, true) => ConsoleTarget::Parent(chan),
            (None, false) => {
                return Err(Error::Child(
                    "process.terminal is set but no --console-socket was given".into(),
                ));
            }
        };
        user_process::setup_terminal(args.process, to, true)?;
    }
    rootfs::finalize(&setup)?;
    trace::mark("init: masked and read-only paths done");
    if !args.no_new_keyring {
        join_keyring(args.id)?;
    }
    // A new cgroup namespace must be made while the init still holds CAP_SYS_ADMIN.
    if gate.new_namespace {
        gate.pass()?;
    }
    let set_groups = !plan.has(NamespaceKind::User) || setgroups_allowed();
    let mut launch = user_process::prepare(
        args.process,
        args.spec.linux().as_ref(),
        args.preserve_fds,
        set_groups,
        args.runtime_exe,
        args.seccomp,
    )?;
    if let Some(listener) = launch.seccomp_listener.take() {
        chan.send_with_fd(&Message::SeccompListener, Some(listener.as_fd()))
            .op(|| "hand the seccomp listener to the runtime".to_string())?;
    }
    trace::mark("init: process prepared");

    // In its cgroup before it may run anything of the user's: waited for as late as possible,
    // so the runtime's cgroup writes overlap all of the setup above.
    gate.pass()?;
    // The runtime may exit from now on (`create`, `run -d`): the init must outlive it. Should
    // it die before releasing us, the channel reads end-of-file and we stop there.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    chan.send(&Message::Ready)
        .op(|| "report ready".to_string())?;
    // The FIFO's write end stays open until exec closes it (close-on-exec): `start` reads
    // end-of-file only once the user program runs, after the startContainer hooks.
    let _fifo_writer = match args.release {
        Release::Fifo(dir) => Some(wait_on_fifo(dir)?),
        Release::Channel => {
            chan.expect(&Message::Start).map_err(Error::Child)?;
            None
        }
    };
    if !hook_state.is_null() {
        let mut state = hook_state.clone();
        state["status"] = "created".into();
        hooks::run(args.spec, HookPoint::StartContainer, &state)?;
    }
    trace::mark("init: exec");
    Err(launch.exec())
}

/// The point after which the init must be in its cgroup: before its cgroup namespace is made
/// (the namespace is rooted where the process is) and, at the latest, before exec. The init
/// is there from its first step (born in the cgroup2 directory, moved itself into the v1 ones)
/// unless the runtime had to move it, which it does while the init mounts; either way the
/// runtime says `InCgroup` once membership, net devices and oom_score_adj are done. With
/// [`V1Join::AtGate`] the v1 `tasks` files come first, and the init moves itself here (or
/// earlier, right after its mounts, when the config has no cgroup mount).
struct CgroupGate<'a> {
    chan: &'a Channel,
    cgroup: &'a Cgroup,
    /// The v1 `tasks` files are still to come ([`V1Join::AtGate`]).
    join_v1: Cell<bool>,
    new_namespace: bool,
    passed: Cell<bool>,
}

impl CgroupGate<'_> {
    fn pass(&self) -> Result<()> {
        if self.passed.replace(true) {
            return Ok(());
        }
        self.join_v1()?;
        self.chan.expect(&Message::InCgroup).map_err(Error::Child)?;
        trace::mark("init: in cgroup");
        if self.new_namespace {
            namespaces::unshare(libc::CLONE_NEWCGROUP)?;
        }
        Ok(())
    }

    /// Moves the init into its v1 directories once the runtime sends their `tasks` files; a
    /// no-op when there is nothing to wait for (or it was done).
    fn join_v1(&self) -> Result<()> {
        if !self.join_v1.replace(false) {
            return Ok(());
        }
        let fds = match self.chan.recv_with_fds() {
            Ok(Some((Message::JoinCgroups, fds))) => fds,
            Ok(Some((Message::Failed(text), _))) => return Err(Error::Child(text)),
            other => {
                return Err(Error::Child(format!(
                    "expected JoinCgroups, got {:?}",
                    other.map(|o| o.map(|(m, _)| m))
                )));
            }
        };
        let paths: Vec<_> = self
            .cgroup
            .dirs
            .iter()
            .filter(|d| !d.unified)
            .map(|d| d.path.join("tasks"))
            .collect();
        if fds.len() != paths.len() {
            return Err(Error::Child(format!(
                "got {} cgroup tasks files for {} v1 hierarchies",
                fds.len(),
                paths.len()
            )));
        }
        let files: Vec<_> = paths.into_iter().zip(fds).collect();
        crate::cgroups::join_v1_self(&files)?;
        trace::mark("init: moved itself into its v1 cgroups");
        Ok(())
    }
}

/// Dies with the runtime while setting up, so a killed `create` leaves no half-built container.
/// (Had the runtime died before this prctl, the sync channel reads end-of-file and the setup
/// stops there; getppid cannot tell, it reads 0 in a new pid namespace.)
fn guard_against_parent_death() {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
}

/// After the parent wrote the id maps, take uid/gid 0 of the new user namespace, so files the
/// setup creates belong to the container's root.
fn become_namespace_root() -> Result<()> {
    // SAFETY: setresgid/setresuid with integers.
    let r = unsafe { libc::syscall(libc::SYS_setresgid, 0, 0, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error())
            .op(|| "setresgid(0) in the user namespace".to_string());
    }
    // SAFETY: as above.
    let r = unsafe { libc::syscall(libc::SYS_setresuid, 0, 0, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error())
            .op(|| "setresuid(0) in the user namespace".to_string());
    }
    super::identity::rearm_after_credential_change();
    Ok(())
}

/// Enters the joined namespaces that `which` selects, the user namespace first (the others may
/// belong to it).
fn join_namespaces(plan: &NamespacePlan, which: impl Fn(NamespaceKind) -> bool) -> Result<()> {
    let mut joins: Vec<_> = plan.join.iter().filter(|j| which(j.kind)).collect();
    joins.sort_by_key(|j| j.kind != NamespaceKind::User);
    for j in joins {
        namespaces::enter(&j.fd, j.kind, &j.path)?;
    }
    Ok(())
}

fn non_dumpable() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// Joined namespaces plus a user namespace: this process joins and unshares, then forks the
/// real init (as a sibling, CLONE_PARENT, so the runtime stays its parent) and exits.
fn become_init_through_intermediate(args: &InitArgs<'_>, chan: &Channel) -> Result<()> {
    let plan = args.plan;
    if plan.joins(NamespaceKind::User).is_some() {
        join_namespaces(plan, |_| true)?;
    } else {
        // Join with the host's privileges, then create the user namespace and have it mapped.
        join_namespaces(plan, |k| k != NamespaceKind::User)?;
        namespaces::unshare(libc::CLONE_NEWUSER)?;
        chan.send(&Message::MapUserNamespace)
            .op(|| "ask for id maps".to_string())?;
        chan.expect(&Message::Mapped).map_err(Error::Child)?;
        non_dumpable();
        become_namespace_root()?;
    }
    let rest = plan.clone_flags() & !libc::CLONE_NEWUSER;
    namespaces::unshare(rest)?;
    // SAFETY: this process is single-threaded (a fork of the single-threaded runtime).
    match unsafe { sys::fork_into(libc::CLONE_PARENT, None) }
        .op(|| "fork the container init".to_string())?
    {
        Forked::Child => {
            // Our parent is the runtime now (CLONE_PARENT).
            guard_against_parent_death();
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
            Ok(())
        }
        Forked::Parent { pid, .. } => {
            let _ = chan.send(&Message::InitPid(pid));
            sys::exit_now(0)
        }
    }
}

/// A time namespace only takes offsets before any process is in it: unshare (which affects
/// children), write the offsets, then move this process in.
fn enter_new_time_namespace(spec: &Spec) -> Result<()> {
    namespaces::unshare(libc::CLONE_NEWTIME)?;
    let offsets = spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().as_ref());
    if let Some(offsets) = offsets {
        let mut text = String::new();
        for (clock, off) in offsets {
            let id = match clock.as_str() {
                "monotonic" => "monotonic",
                "boottime" => "boottime",
                other => {
                    return Err(Error::config(
                        "config.json",
                        format!("linux.timeOffsets.{other}"),
                        "only monotonic and boottime clocks have offsets",
                    ));
                }
            };
            text.push_str(&format!(
                "{id} {} {}\n",
                off.secs().unwrap_or(0),
                off.nanosecs().unwrap_or(0)
            ));
        }
        std::fs::write("/proc/self/timens_offsets", text)
            .at("write", "/proc/self/timens_offsets")?;
    }
    let ns = std::fs::File::open("/proc/self/ns/time_for_children")
        .at("open", "/proc/self/ns/time_for_children")?;
    namespaces::enter(
        &ns.into(),
        NamespaceKind::Time,
        Path::new("/proc/self/ns/time_for_children"),
    )
}

fn set_names(spec: &Spec) -> Result<()> {
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        rustix::system::sethostname(h.as_bytes()).op(|| format!("sethostname({h:?})"))?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        rustix::system::setdomainname(d.as_bytes()).op(|| format!("setdomainname({d:?})"))?;
    }
    Ok(())
}

/// `linux.sysctl`, written through the container's own /proc.
fn write_sysctls(spec: &Spec) -> Result<()> {
    let Some(sysctl) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else {
        return Ok(());
    };
    for (key, value) in sysctl {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value).op(|| format!("sysctl {key}={value}"))?;
    }
    Ok(())
}

fn setgroups_allowed() -> bool {
    crate::sys::read_pseudo_to_string("/proc/self/setgroups").map_or(true, |s| s.trim() == "allow")
}

fn join_keyring(id: &str) -> Result<()> {
    let name = CString::new(format!("_ses.{id}")).unwrap_or_default();
    match sys::join_session_keyring(&name) {
        Ok(()) => Ok(()),
        // No keyrings in this kernel, or a seccomp profile forbids keyctl: nothing to isolate.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => Ok(()),
        Err(e) => Err(e).op(|| "join a new session keyring".to_string()),
    }
}

/// Blocks until `start` opens the FIFO, then tells it the user program is about to run;
/// returns the write end, to be closed by the exec.
fn wait_on_fifo(fifo: &OwnedFd) -> Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let writer = rustix::fs::open(
        path.as_str(),
        OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("open the exec FIFO (the container needs /proc)", &path)?;
    rustix::io::write(&writer, b"0").at("write", EXEC_FIFO)?;
    Ok(writer)
}
