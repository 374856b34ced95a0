//! `exec`: runs another process inside a running container. The parent side: it opens the
//! init's namespaces, points its own pid_for_children at the container's pid namespace (so one
//! fork lands inside, no intermediate process), forks, puts the child into the container's
//! cgroup, and waits until the program is exec'd.

use std::fs;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::linux::fs::MetadataExt;
use std::path::PathBuf;

use oci_spec::runtime::Process;

use super::Container;
use super::create::write_pid_file;
use crate::bundle::validate_process;
use crate::error::{Context, Error, Result};
use crate::namespaces::NamespaceKind;
use crate::namespaces::NamespaceSwitch;
use crate::process::attributes;
use crate::process::channel::{Channel, Message};
use crate::process::exec::{ExecArgs, exec_child};
use crate::process::wait;
use crate::state::Status;
use crate::sys::{self, Forked};
use crate::terminal;

#[derive(Clone, Debug)]
pub struct ExecOptions {
    pub process: Process,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: u32,
    /// A terminal without a console socket: hand the pty master back to the caller.
    pub console_to_caller: bool,
}

/// A process started by `exec`.
pub struct ExecProcess {
    pub pid: libc::pid_t,
    pub pidfd: Option<OwnedFd>,
    pub pty_master: Option<OwnedFd>,
}

/// The container's pid namespace (if not ours) and its other namespaces to enter, in order.
type ContainerNamespaces = (Option<OwnedFd>, Vec<(NamespaceKind, OwnedFd)>);

impl Container {
    /// Starts `opts.process` in the container and returns once it has exec'd.
    pub fn exec(&self, opts: &ExecOptions) -> Result<ExecProcess> {
        let status = self.status();
        if status != Status::Running && status != Status::Created {
            return Err(Error::WrongStatus {
                id: self.id().to_string(),
                status,
                action: "exec",
            });
        }
        crate::ensure_single_threaded()?;
        validate_process(&opts.process, "process")?;
        let terminal_wanted = opts.process.terminal() == Some(true);
        if terminal_wanted && opts.console_socket.is_none() && !opts.console_to_caller {
            return Err(Error::config(
                "process",
                "terminal",
                "a terminal needs --console-socket when the runtime does not stay attached",
            ));
        }

        let (pid_ns, namespaces) = self.open_namespaces()?;
        let spec = self.record.spec()?;
        // The container's filter binds what is exec'd into it too (as with runc).
        let seccomp = spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .map(|profile| crate::seccomp::compile_cached(profile, &self.seccomp_cache()))
            .transpose()?;
        let console = opts
            .console_socket
            .as_deref()
            .map(terminal::connect_console_socket)
            .transpose()?;
        let (parent_chan, child_chan) = Channel::pair().op(|| "socketpair".to_string())?;
        let initial_cpus = attributes::cpu_set(opts.process.exec_cpu_affinity().as_ref(), true)?;
        // As the init (see create): born in the cgroup2 directory, moved into the v1 ones by
        // itself, both without the kernel's global lock; with `execCPUAffinity.initial` it
        // starts outside and we move it.
        let cgroup = &self.record.cgroup;
        let (cgroup_tasks, unified) = if initial_cpus.is_none() {
            (cgroup.v1_task_files()?, cgroup.unified_dir_fd()?)
        } else {
            (Vec::new(), None)
        };
        let args = ExecArgs {
            process: &opts.process,
            linux: spec.linux().as_ref(),
            namespaces,
            console_socket: console.as_ref(),
            console_to_parent: opts.console_to_caller && terminal_wanted,
            preserve_fds: opts.preserve_fds as RawFd,
            runtime_exe: crate::process::user_process::runtime_exe()?,
            seccomp: seccomp.as_ref(),
            cgroup_tasks: &cgroup_tasks,
        };

        let switch = pid_ns
            .as_ref()
            .map(|fd| NamespaceSwitch::enter(fd, crate::namespaces::NamespaceKind::Pid))
            .transpose()?;
        // SAFETY: the runtime is single-threaded when it forks (documented on Runtime).
        let mut forked = unsafe { sys::fork_into(0, unified.as_ref().map(|fd| fd.as_fd())) };
        let born_in_unified = unified.is_some() && forked.is_ok();
        let refused = |e: &std::io::Error| {
            e.raw_os_error() == Some(libc::EBUSY) || sys::lacks_clone_into_cgroup(e)
        };
        if unified.is_some() && matches!(&forked, Err(e) if refused(e)) {
            // Processes may not join a cgroup2 directory whose children hold controllers
            // (systemd inside), and old kernels cannot clone into one: born outside, and
            // moved beside the init below.
            // SAFETY: as above.
            forked = unsafe { sys::fork_into(0, None) };
        }
        if matches!(forked, Ok(Forked::Child)) {
            drop(parent_chan);
            exec_child(&args, &child_chan);
        }
        drop(switch);
        let Forked::Parent { pid, pidfd } = forked.op(|| "fork for exec".to_string())? else {
            unreachable!("exec_child never returns")
        };
        drop(child_chan);

        let result = initial_cpus
            .map_or(Ok(()), |cpus| {
                attributes::set_cpu_affinity(Some(pid), &cpus)
            })
            .and_then(|()| {
                self.record.cgroup.add_process_beside(
                    pid,
                    self.pid(),
                    born_in_unified,
                    !cgroup_tasks.is_empty(),
                )
            })
            .and_then(|()| self.finish_exec(pid, &parent_chan, opts, seccomp.as_ref()));
        match result {
            Ok(pty_master) => Ok(ExecProcess {
                pid,
                pidfd,
                pty_master,
            }),
            Err(e) => {
                wait::kill_and_reap(pid, pidfd.as_ref());
                Err(e)
            }
        }
    }

    fn finish_exec(
        &self,
        pid: libc::pid_t,
        chan: &Channel,
        opts: &ExecOptions,
        seccomp: Option<&crate::seccomp::SeccompProgram>,
    ) -> Result<Option<OwnedFd>> {
        chan.send(&Message::Continue)
            .op(|| "sync with the exec'd process".to_string())?;
        let mut pty_master = None;
        loop {
            match chan.recv_with_fd() {
                Ok(Some((Message::Ready, _))) => break,
                Ok(Some((Message::SeccompListener, Some(fd)))) => {
                    let program = seccomp.expect("a listener comes from a filter");
                    let state = serde_json::to_value(self.oci_state())
                        .map_err(|e| Error::sys("encode state", e))?;
                    crate::seccomp::send_listener(program, &fd, pid, state)?;
                }
                Ok(Some((Message::PtyMaster, fd))) => pty_master = fd,
                Ok(Some((Message::Failed(text), _))) => return Err(Error::Child(text)),
                Ok(Some((other, _))) => {
                    return Err(Error::Child(format!("exec: unexpected message {other:?}")));
                }
                Ok(None) => return Err(Error::Child("exec: the process died during setup".into())),
                Err(e) => return Err(e).op(|| "read from the exec'd process".to_string()),
            }
        }
        // End-of-file: exec'd. A failure report: execve itself failed.
        match chan.recv() {
            Ok(None) => {}
            Ok(Some(Message::Failed(text))) => return Err(Error::Child(text)),
            Ok(Some(other)) => {
                return Err(Error::Child(format!("exec: unexpected message {other:?}")));
            }
            Err(e) => return Err(e).op(|| "wait for exec".to_string()),
        }
        if let Some(path) = &opts.pid_file {
            write_pid_file(path, pid)?;
        }
        Ok(pty_master)
    }

    /// The container's namespaces that differ from ours: the pid namespace (entered by the
    /// parent for the fork) and the rest in the order the child must enter them.
    fn open_namespaces(&self) -> Result<ContainerNamespaces> {
        let pid = self.pid();
        let mut pid_ns = None;
        let mut others = Vec::new();
        let mut kinds = self.record.namespaces.clone();
        kinds.sort_by_key(|k| *k != NamespaceKind::User);
        for kind in kinds {
            let theirs = format!("/proc/{pid}/ns/{}", kind.proc_name());
            let ours = format!("/proc/self/ns/{}", kind.proc_name());
            let file = fs::File::open(&theirs).at("open namespace", &theirs)?;
            let same = match (file.metadata(), fs::metadata(&ours)) {
                (Ok(a), Ok(b)) => a.st_ino() == b.st_ino() && a.st_dev() == b.st_dev(),
                _ => false,
            };
            if same {
                continue;
            }
            if kind == NamespaceKind::Pid {
                pid_ns = Some(file.into());
            } else {
                others.push((kind, file.into()));
            }
        }
        // The open namespace files pin the namespaces; make sure they are still the init's.
        if self.live_pidfd().is_none() {
            return Err(Error::WrongStatus {
                id: self.id().to_string(),
                status: Status::Stopped,
                action: "exec",
            });
        }
        Ok((pid_ns, others))
    }
}
