//! A process exec'd into a running container: the child side. It enters the container's
//! namespaces (the pid namespace was entered by the parent for this fork), then shares the
//! init's last steps (`user_process`).

use std::convert::Infallible;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use oci_spec::runtime::Process;

use super::channel::{Channel, Message};
use super::user_process::{self, ConsoleTarget};
use crate::error::{Context, Error, Result};
use crate::namespaces::{self, NamespaceKind};
use crate::sys;

pub(crate) struct ExecArgs<'a> {
    pub process: &'a Process,
    /// The container's `linux` section: its personality and memory policy apply here too.
    pub linux: Option<&'a oci_spec::runtime::Linux>,
    /// Namespaces of the container to enter, user first.
    pub namespaces: Vec<(NamespaceKind, OwnedFd)>,
    pub console_socket: Option<&'a OwnedFd>,
    pub console_to_parent: bool,
    pub preserve_fds: RawFd,
    pub runtime_exe: user_process::RuntimeExe,
    pub seccomp: Option<&'a crate::seccomp::SeccompProgram>,
    /// The v1 `tasks` files the process moves itself through, first thing (empty: the runtime
    /// moves it).
    pub cgroup_tasks: &'a [(std::path::PathBuf, OwnedFd)],
}

pub(crate) fn exec_child(args: &ExecArgs<'_>, chan: &Channel) -> ! {
    let outcome = catch_unwind(AssertUnwindSafe(|| run(args, chan)));
    let text = match outcome {
        Ok(Ok(never)) => match never {},
        Ok(Err(e)) => e.to_string(),
        Err(_) => "exec: the process setup panicked".to_string(),
    };
    let _ = chan.send(&Message::Failed(text.clone()));
    sys::exit_now(if text.contains("executable file not found") {
        127
    } else {
        1
    })
}

fn run(args: &ExecArgs<'_>, chan: &Channel) -> Result<Infallible> {
    // SAFETY: prctl with integer arguments; see process::init for why each is set.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    crate::cgroups::join_v1_self(args.cgroup_tasks)?;
    user_process::reset_signals();
    chan.expect(&Message::Continue).map_err(Error::Child)?;
    for (kind, fd) in &args.namespaces {
        namespaces::enter(
            fd,
            *kind,
            &PathBuf::from(format!("container {} namespace", kind.proc_name())),
        )?;
    }
    let in_userns = args
        .namespaces
        .iter()
        .any(|(k, _)| *k == NamespaceKind::User);
    if args.process.terminal() == Some(true) {
        user_process::new_session()?;
        let to = match (args.console_socket, args.console_to_parent) {
            (Some(sock), _) => ConsoleTarget::Socket(sock),
            (None, true) => ConsoleTarget::Parent(chan),
            (None, false) => {
                return Err(Error::Child(
                    "exec: a terminal needs --console-socket when detached".into(),
                ));
            }
        };
        user_process::setup_terminal(args.process, to, false)?;
    }
    let set_groups = !in_userns
        || crate::sys::read_pseudo_to_string("/proc/self/setgroups")
            .map_or(true, |s| s.trim() == "allow");
    let mut launch = user_process::prepare(
        args.process,
        args.linux,
        args.preserve_fds,
        set_groups,
        args.runtime_exe,
        args.seccomp,
    )?;
    if let Some(listener) = launch.seccomp_listener.take() {
        chan.send_with_fd(&Message::SeccompListener, Some(listener.as_fd()))
            .op(|| "hand the seccomp listener to the runtime".to_string())?;
    }
    // SAFETY: prctl with integer arguments. From here the caller's exit must not kill us.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    chan.send(&Message::Ready)
        .op(|| "report ready".to_string())?;
    Err(launch.exec())
}
