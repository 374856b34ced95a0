//! `create`: from a bundle to an init process waiting before the user program, with the state
//! recorded. The parent side; the child side is `process::init`.
//!
//! Sequence: validate → state dir → cgroup (made and limited before the process exists; its v1
//! `tasks` files opened) → exec FIFO → clone into the new namespaces and the cgroup2 directory
//! → (the child moves itself into the v1 directories) → id maps → `Continue` → (the child
//! mounts its rootfs meanwhile) any cgroup membership left to do, oom_score_adj, state.json →
//! `InCgroup` → the child finishes → `Ready` → pid file.
//! Any failure undoes all of it: no process, mount, cgroup or state directory is left behind.

use std::fs;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIdMapping, Spec};
use rustix::fs::{Mode, OFlags};

use super::Container;
use crate::bundle::{self, Bundle};
use crate::cgroups::{Cgroup, Layout, Part};
use crate::error::{Context, Error, Result};
use crate::hooks::{self, HookPoint};
use crate::namespaces::{NamespaceKind, NamespacePlan, NamespaceSwitch};
use crate::process::attributes;
use crate::process::channel::{Channel, Message};
use crate::process::init::{self, InitArgs, Release, V1Join};
use crate::process::wait;
use crate::state::{CREATING, EXEC_FIFO, Record, now_rfc3339, process_stat, write_atomic};
use crate::sys::{self, Forked};
use crate::{Runtime, terminal, trace};

#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root (for roots on ramfs).
    pub no_pivot: bool,
    /// Keep the caller's session keyring instead of a new one per container.
    pub no_new_keyring: bool,
    /// Pass descriptors 3 .. 3+N on to the container process.
    pub preserve_fds: u32,
    /// `--systemd-cgroup`: not supported; asking for it is an error, not a silent fallback.
    pub systemd_cgroup: bool,
}

/// A container created for `run`: its init waits on the sync channel rather than the FIFO, so
/// starting it costs one message.
pub struct Created {
    pub container: Container,
    chan: Channel,
    pub pidfd: Option<OwnedFd>,
    /// With `process.terminal` and no console socket: the pty master, for the caller to serve.
    pub pty_master: Option<OwnedFd>,
}

impl Created {
    /// Releases the init and returns once the user program is running (the exec closed the
    /// sync socket) or failed to start.
    pub fn start(self) -> Result<(Container, Option<OwnedFd>, Option<OwnedFd>)> {
        self.chan
            .send(&Message::Start)
            .op(|| "release the container init".to_string())?;
        match self.chan.recv() {
            Ok(None) => {
                trace::mark("run: user program exec'd");
                self.container.after_start();
                Ok((self.container, self.pidfd, self.pty_master))
            }
            Ok(Some(Message::Failed(text))) => Err(Error::Child(text)),
            Ok(Some(other)) => Err(Error::Child(format!(
                "unexpected message {other:?} at start"
            ))),
            Err(e) => Err(e).op(|| "wait for the container to start".to_string()),
        }
    }
}

impl Runtime {
    /// `create`: the init waits for `start` on the exec FIFO; the caller may exit.
    pub fn create(&self, id: &str, opts: &CreateOptions) -> Result<Container> {
        create(self, id, opts, Launch::Create).map(|c| c.container)
    }

    /// `run`'s first half: created, waiting to be started by `Created::start`. With
    /// `serve_terminal`, a terminal without a console socket hands the pty master back in
    /// `Created::pty_master` (the caller stays attached and proxies it).
    pub fn create_for_run(
        &self,
        id: &str,
        opts: &CreateOptions,
        serve_terminal: bool,
    ) -> Result<Created> {
        create(self, id, opts, Launch::Run { serve_terminal })
    }
}

/// Everything `create` made so far, removed again unless `disarm`ed.
struct Undo {
    dir: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    children: Vec<(libc::pid_t, Option<OwnedFd>)>,
}

impl Undo {
    fn disarm(mut self) {
        self.dir = None;
        self.cgroup = None;
        self.children.clear();
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        for (pid, pidfd) in self.children.drain(..) {
            wait::kill_and_reap(pid, pidfd.as_ref());
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.remove();
        }
        if let Some(dir) = self.dir.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// How the init will be released.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Launch {
    /// Through the exec FIFO, by a later `start`.
    Create,
    /// Through the sync channel, by `Created::start`.
    Run { serve_terminal: bool },
}

fn create(rt: &Runtime, id: &str, opts: &CreateOptions, launch: Launch) -> Result<Created> {
    let for_run = launch != Launch::Create;
    let serve_terminal = launch
        == Launch::Run {
            serve_terminal: true,
        };
    crate::validate_id(id)?;
    crate::ensure_single_threaded()?;
    trace::mark("create: begin");
    let bundle = Bundle::load(&opts.bundle)?;
    let spec = &bundle.spec;
    let plan = NamespacePlan::from_spec(spec)?;
    bundle::validate(spec, &plan)?;
    trace::mark("create: config loaded and checked");
    let process = spec.process().as_ref().expect("validated");
    let terminal = process.terminal() == Some(true);
    if terminal && opts.console_socket.is_none() && !serve_terminal {
        return Err(Error::config(
            "config.json",
            "process.terminal",
            "a terminal needs --console-socket when the runtime does not stay attached",
        ));
    }
    if opts.systemd_cgroup {
        return Err(Error::Unsupported(
            "--systemd-cgroup: berth-runtime drives cgroupfs directly; configure the caller for cgroupfs".into(),
        ));
    }

    // The directory reserves the id; the `creating` marker, written before the cgroup is made,
    // holds the cgroup plan (what `delete --force` of a killed create removes).
    let dir = rt.make_container_dir(id)?;
    let mut undo = Undo {
        dir: Some(dir.clone()),
        cgroup: None,
        children: Vec::new(),
    };

    let linux = spec.linux().as_ref().expect("validated");
    let cgroups_path = linux
        .cgroups_path()
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/berth/{id}")));
    if cgroups_path.to_string_lossy().contains(':') && !cgroups_path.is_absolute() {
        return Err(Error::config(
            "config.json",
            "linux.cgroupsPath",
            format!("{cgroups_path:?} is a systemd slice path; berth-runtime drives cgroupfs"),
        ));
    }
    let layout = Layout::detect()?;
    trace::mark("create: cgroup layout read");
    crate::cgroups::validate_path(&cgroups_path)?;
    let mut cgroup = Cgroup::plan(&layout, &cgroups_path);
    let write_plan = |cgroup: &Cgroup| {
        let bytes = serde_json::to_vec(cgroup).map_err(|e| Error::sys("encode cgroup plan", e))?;
        fs::write(dir.join(CREATING), bytes).at("write", dir.join(CREATING))
    };
    write_plan(&cgroup)?;
    // `execCPUAffinity.initial` is the affinity *before* the cgroup: then the init is born
    // outside it and moved by us, as are inits whose prestart/createRuntime hooks must see them
    // in their cgroup before they run on, and those behind an intermediate process.
    let initial_cpus = attributes::cpu_set(process.exec_cpu_affinity().as_ref(), true)?;
    let runtime_hooks = hooks::any(spec, &[HookPoint::Prestart, HookPoint::CreateRuntime]);
    let init_hooks = hooks::any(
        spec,
        &[HookPoint::CreateContainer, HookPoint::StartContainer],
    );
    let born_in_cgroup = !plan.needs_intermediate() && initial_cpus.is_none();
    // Otherwise the init moves itself into its v1 cgroups, avoiding the kernel's global lock
    // (`join_v1_self`); the cgroup2 part it is born in (CLONE_INTO_CGROUP). As root, the v1
    // directories (a dozen hierarchies: most of the cgroup work) are made after the clone,
    // while the init sets up its mounts; it moves itself in once they are done, before
    // anything else runs. (Unprivileged, a refused cgroup changes what the init mounts: that
    // is settled before the clone; hooks see the init in its cgroups from its start.)
    let v1_after_clone = born_in_cgroup
        && !runtime_hooks
        && !init_hooks
        && rustix::process::geteuid().is_root()
        && cgroup.has_v1();
    let before_clone = if v1_after_clone {
        Part::Unified
    } else {
        Part::All
    };
    match cgroup.create_part(linux.resources().as_ref(), before_clone) {
        // Only what was made is undone (a busy v1 directory found later is not ours).
        Ok(()) => undo.cgroup = Some(cgroup.part(before_clone)),
        // Rootless without a delegated cgroup: a container that asks for no limits runs
        // without a cgroup of its own (as with runc); one that asks for limits cannot.
        Err(e) if rootless_denied(&e) => {
            if linux
                .resources()
                .as_ref()
                .is_some_and(crate::cgroups::asks_for_limits)
            {
                return Err(Error::config(
                    "config.json",
                    "linux.resources",
                    format!(
                        "limits need a cgroup this user may write (delegate one, or run as root): {e}"
                    ),
                ));
            }
            log::debug!("rootless: no cgroup for {id} ({e})");
            cgroup = Cgroup::default();
            write_plan(&cgroup)?;
        }
        Err(e) => return Err(e),
    }
    trace::mark("create: cgroup made");

    // The init holds the FIFO itself (O_PATH), never a directory of the host: it reopens it
    // through /proc/self/fd when released.
    let fifo = if for_run {
        None
    } else {
        make_exec_fifo(&dir, spec)?;
        let path = dir.join(EXEC_FIFO);
        Some(
            rustix::fs::open(&path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
                .at("open", &path)?,
        )
    };
    let idmapped =
        crate::rootfs::idmap::requested(spec, &bundle.dir, plan.has(NamespaceKind::User))?;
    let runtime_exe = crate::process::user_process::runtime_exe()?;
    let seccomp = linux
        .seccomp()
        .as_ref()
        .map(|profile| crate::seccomp::compile_cached(profile, &rt.seccomp_cache()))
        .transpose()?;
    trace::mark("create: seccomp ready");
    let console = opts
        .console_socket
        .as_deref()
        .map(terminal::connect_console_socket)
        .transpose()?;
    let (parent_chan, child_chan) = Channel::pair().op(|| "socketpair".to_string())?;

    let cgroup_tasks = if born_in_cgroup && !runtime_hooks && !v1_after_clone {
        cgroup.v1_task_files()?
    } else {
        Vec::new()
    };
    let args = InitArgs {
        id,
        spec,
        process,
        rootfs: &bundle.rootfs,
        bundle: &bundle.dir,
        plan: &plan,
        cgroup: &cgroup,
        v1_join: if v1_after_clone {
            V1Join::AtGate
        } else if cgroup_tasks.is_empty() {
            V1Join::ByRuntime
        } else {
            V1Join::Now(&cgroup_tasks)
        },
        console_socket: console.as_ref(),
        console_to_parent: serve_terminal && terminal && console.is_none(),
        runtime_exe,
        seccomp: seccomp.as_ref(),
        release: if for_run {
            Release::Channel
        } else {
            Release::Fifo(fifo.as_ref().expect("made for create"))
        },
        preserve_fds: opts.preserve_fds as RawFd,
        no_pivot: opts.no_pivot,
        no_new_keyring: opts.no_new_keyring,
    };

    let joined_pid = (!plan.needs_intermediate())
        .then(|| plan.joins(NamespaceKind::Pid))
        .flatten();
    let pid_ns = joined_pid
        .map(|j| NamespaceSwitch::enter(&j.fd, NamespaceKind::Pid))
        .transpose()?;
    let flags = if plan.needs_intermediate() {
        0
    } else {
        plan.clone_flags()
    };
    // SAFETY: the runtime is single-threaded when it creates containers (documented on Runtime).
    // The cgroup2 part is entered at birth (CLONE_INTO_CGROUP): no migration, which on a pure
    // v2 host removes the cgroup write from the start path altogether.
    let unified = if born_in_cgroup {
        cgroup.unified_dir_fd()?
    } else {
        None
    };
    let mut forked = unsafe { sys::fork_into(flags, unified.as_ref().map(|fd| fd.as_fd())) };
    let mut born_in_unified = unified.is_some();
    if born_in_unified && matches!(&forked, Err(e) if sys::lacks_clone_into_cgroup(e)) {
        born_in_unified = false;
        // SAFETY: as above.
        forked = unsafe { sys::fork_into(flags, None) };
    }
    if matches!(forked, Ok(Forked::Child)) {
        drop(parent_chan);
        init::container_init(&args, &child_chan);
    }
    drop(pid_ns);
    let Forked::Parent {
        pid: first_pid,
        pidfd: first_pidfd,
    } = forked.op(|| format!("clone({})", crate::namespaces::describe_flags(flags)))?
    else {
        unreachable!("the child never returns from container_init")
    };
    drop(child_chan);
    trace::mark("create: cloned");
    undo.children.push((first_pid, first_pidfd));

    let init_pid = if plan.needs_intermediate() {
        let pid = follow_intermediate(&parent_chan, first_pid, spec)?;
        // The intermediate exits once it has forked the init.
        wait::reap(first_pid);
        undo.children.clear();
        let pidfd = wait::pidfd_open(pid);
        undo.children.push((pid, pidfd));
        pid
    } else {
        if plan.creates(NamespaceKind::User) {
            write_id_maps(first_pid, spec)?;
        }
        first_pid
    };

    if let Some(cpus) = &initial_cpus {
        attributes::set_cpu_affinity(Some(init_pid), cpus)?;
    }
    // Once the init runs on its own, its failure report explains more than the error we would
    // see (a write into a vanished cgroup member, a broken pipe).
    let explain = |e: Error| match parent_chan.try_recv() {
        Some(Message::Failed(text)) => Error::Child(text),
        _ => e,
    };
    // Unless hooks need the container's state or idmapped mounts must reach the init first,
    // it has nothing more to wait for before its mounts: let it go on now (its critical path)
    // and build the record meanwhile.
    let go_on_now = !runtime_hooks && !init_hooks && idmapped.is_empty();
    let go_on = || {
        parent_chan
            .send(&Message::Continue)
            .op(|| "sync with the container init".to_string())
    };
    if go_on_now {
        go_on().map_err(explain)?;
    }
    let stat = process_stat(init_pid)
        .ok_or_else(|| Error::Child("the container init vanished right after the clone".into()))?;
    let record = Record {
        id: id.to_string(),
        pid: init_pid,
        init_start_time: stat.start_time,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: now_rfc3339(),
        owner_uid: rustix::process::geteuid().as_raw(),
        annotations: spec
            .annotations()
            .as_ref()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        cgroup: cgroup.clone(),
        namespaces: plan.kinds(),
        owns_pid_namespace: plan.creates(NamespaceKind::Pid),
        spec: crate::state::encode_spec(spec)?,
        late_hooks: Some(crate::state::has_late_hooks(spec)),
    };
    // Moving a device waits for RCU grace periods (tens of ms): it overlaps the init's mounts,
    // and the init waits for `InCgroup`, sent after it, before it execs.
    let move_net_devices = || {
        if linux.net_devices().as_ref().is_none_or(|d| d.is_empty()) {
            return Ok(());
        }
        // A joined namespace is entered by the init only after `Continue`: use the config's.
        let netns = match plan.joins(NamespaceKind::Network) {
            Some(joined) => joined
                .fd
                .try_clone()
                .op(|| "dup the network namespace".to_string())?,
            None => {
                let path = format!("/proc/{init_pid}/ns/net");
                OwnedFd::from(fs::File::open(&path).at("open", &path)?)
            }
        };
        crate::net_devices::move_into(linux, &netns)
    };
    let join_cgroup = || {
        move_net_devices()?;
        let moved_itself_v1 = v1_after_clone || !cgroup_tasks.is_empty();
        cgroup.add_process(init_pid, born_in_unified, moved_itself_v1)?;
        if let Some(adj) = process.oom_score_adj() {
            let path = format!("/proc/{init_pid}/oom_score_adj");
            fs::write(&path, adj.to_string()).op(|| format!("write {adj} to {path}"))?;
        }
        trace::mark("create: init in its cgroup");
        Ok::<(), Error>(())
    };

    // prestart and createRuntime hooks see the namespaces and the cgroup before the init goes
    // on; the init's own hooks (createContainer, startContainer) need the state it cannot know
    // (its host pid).
    let creating = || {
        let mut state = serde_json::to_value(
            Container {
                dir: dir.clone(),
                record: record.clone(),
            }
            .oci_state(),
        )
        .map_err(|e| Error::sys("encode state", e))?;
        state["status"] = "creating".into();
        state["pid"] = init_pid.into();
        Ok::<_, Error>(state)
    };
    if runtime_hooks {
        join_cgroup()?;
        let state = creating()?;
        hooks::run(spec, HookPoint::Prestart, &state)?;
        hooks::run(spec, HookPoint::CreateRuntime, &state)?;
    }
    if init_hooks {
        parent_chan
            .send(&Message::State(creating()?.to_string()))
            .op(|| "sync with the container init".to_string())?;
    }

    if !idmapped.is_empty() {
        let container_userns = if plan.has(NamespaceKind::User) {
            let path = format!("/proc/{init_pid}/ns/user");
            Some(OwnedFd::from(fs::File::open(&path).at("open", &path)?))
        } else {
            None
        };
        for (index, tree) in crate::rootfs::idmap::make(&idmapped, container_userns.as_ref())? {
            parent_chan
                .send_with_fd(&Message::IdmappedMount(index as u32), Some(tree.as_fd()))
                .op(|| "hand an idmapped mount to the container init".to_string())?;
        }
    }
    // Let the init build its mounts while we move it into its cgroup where it did not move
    // itself (a pid written to cgroup.procs may wait for an RCU grace period: milliseconds) and
    // write the record.
    if !go_on_now {
        go_on()?;
    }
    if v1_after_clone {
        cgroup
            .create_part(linux.resources().as_ref(), Part::V1)
            .map_err(explain)?;
        undo.cgroup = Some(cgroup.clone());
        let files = cgroup.v1_task_files()?;
        let fds: Vec<_> = files.iter().map(|(_, fd)| fd.as_fd()).collect();
        parent_chan
            .send_with_fds(&Message::JoinCgroups, &fds)
            .op(|| "hand the cgroup tasks files to the container init".to_string())
            .map_err(explain)?;
        trace::mark("create: v1 cgroups made");
    }
    if !runtime_hooks {
        join_cgroup().map_err(explain)?;
    }
    // The state is written while the init finishes its setup (state files may be on a
    // journaling filesystem: a tenth of a millisecond or more), unless the init runs hooks,
    // which may ask for it.
    let write_state = || {
        record.save(&dir)?;
        trace::mark("create: state written");
        Ok::<(), Error>(())
    };
    if init_hooks {
        write_state()?;
    }
    parent_chan
        .send(&Message::InCgroup)
        .op(|| "sync with the container init".to_string())
        .map_err(explain)?;
    if !init_hooks {
        write_state()?;
    }

    let mut pty_master = None;
    loop {
        match parent_chan.recv_with_fd() {
            Ok(Some((Message::Ready, _))) => break,
            Ok(Some((Message::PtyMaster, fd))) => pty_master = fd,
            Ok(Some((Message::SeccompListener, Some(fd)))) => {
                let program = seccomp.as_ref().expect("a listener comes from a filter");
                let view = Container {
                    dir: dir.clone(),
                    record: record.clone(),
                };
                let mut state = serde_json::to_value(view.oci_state())
                    .map_err(|e| Error::sys("encode state", e))?;
                state["status"] = "creating".into();
                crate::seccomp::send_listener(program, &fd, init_pid, state)?;
            }
            Ok(Some((Message::Failed(text), _))) => return Err(Error::Child(text)),
            Ok(Some((other, _))) => {
                return Err(Error::Child(format!(
                    "unexpected message {other:?} from the container init"
                )));
            }
            Ok(None) => {
                let status = wait::reap(init_pid);
                return Err(Error::Child(format!(
                    "the container init exited during setup ({status})"
                )));
            }
            Err(e) => return Err(e).op(|| "read from the container init".to_string()),
        }
    }
    fs::remove_file(dir.join(CREATING)).at("remove", dir.join(CREATING))?;
    trace::mark("create: init ready");
    log::debug!(
        "container {}: created, init pid {init_pid}, bundle {}",
        record.id,
        record.bundle.display()
    );
    if let Some(path) = &opts.pid_file {
        write_pid_file(path, init_pid)?;
    }

    let pidfd = undo.children.pop().and_then(|(_, fd)| fd);
    undo.disarm();
    Ok(Created {
        container: Container { dir, record },
        chan: parent_chan,
        pidfd,
        pty_master,
    })
}

/// A cgroup write refused because the runtime runs unprivileged.
fn rootless_denied(e: &Error) -> bool {
    !rustix::process::geteuid().is_root()
        && matches!(
            e.raw_os_error(),
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
        )
}

/// The FIFO `start` opens. Writable by everyone, like runc's: the init opens it after it has
/// switched to the container's user.
fn make_exec_fifo(dir: &Path, spec: &Spec) -> Result<()> {
    let path = dir.join(EXEC_FIFO);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o622),
        0,
    )
    .at("mkfifo", &path)?;
    rustix::fs::chmod(&path, Mode::from_raw_mode(0o622)).at("chmod", &path)?;
    // Inside a user namespace, the container's root owns it.
    let linux = spec.linux().as_ref();
    let host = |maps: Option<&Vec<LinuxIdMapping>>| {
        maps.and_then(|m| {
            m.iter()
                .find(|m| m.container_id() == 0)
                .map(|m| m.host_id())
        })
    };
    let uid = host(linux.and_then(|l| l.uid_mappings().as_ref()));
    let gid = host(linux.and_then(|l| l.gid_mappings().as_ref()));
    if uid.is_some() || gid.is_some() {
        rustix::fs::chown(
            &path,
            uid.map(rustix::fs::Uid::from_raw),
            gid.map(rustix::fs::Gid::from_raw),
        )
        .at("chown", &path)?;
    }
    Ok(())
}

/// Writes /proc/PID/{uid_map,gid_map} for a new user namespace. Root writes them itself. An
/// unprivileged runtime may map only its own ids, one each, and only once setgroups is denied;
/// anything wider goes through the setuid helpers newuidmap/newgidmap, which check the ranges
/// against /etc/subuid and /etc/subgid.
fn write_id_maps(pid: libc::pid_t, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref().expect("validated");
    let uid = linux.uid_mappings().as_deref().unwrap_or_default();
    let gid = linux.gid_mappings().as_deref().unwrap_or_default();
    let format = |maps: &[LinuxIdMapping]| {
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    let write = |file: &str, text: &str| {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, text).op(|| format!("write {text:?} to {path}"))
    };
    let euid = rustix::process::geteuid();
    if euid.is_root() {
        write("uid_map", &format(uid))?;
        return write("gid_map", &format(gid));
    }
    let own = |maps: &[LinuxIdMapping], id: u32| {
        maps.len() == 1 && maps[0].host_id() == id && maps[0].size() == 1
    };
    if own(uid, euid.as_raw()) && own(gid, rustix::process::getegid().as_raw()) {
        write("setgroups", "deny")?;
        write("uid_map", &format(uid))?;
        return write("gid_map", &format(gid));
    }
    for (helper, maps, field) in [
        ("newuidmap", uid, "linux.uidMappings"),
        ("newgidmap", gid, "linux.gidMappings"),
    ] {
        let mut cmd = std::process::Command::new(helper);
        cmd.arg(pid.to_string());
        for m in maps {
            cmd.args([
                m.container_id().to_string(),
                m.host_id().to_string(),
                m.size().to_string(),
            ]);
        }
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| {
                Error::config(
                    "config.json",
                    field,
                    format!(
                        "mapping more than this user's own id needs {helper} (Debian package uidmap): {e}"
                    ),
                )
            })?;
        if !out.status.success() {
            return Err(Error::config(
                "config.json",
                field,
                format!(
                    "{helper} refused the mapping (are the ranges in /etc/sub{}id?): {}",
                    if helper == "newuidmap" { "u" } else { "g" },
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
    }
    Ok(())
}

/// Serves the intermediate process of a container that joins namespaces alongside a user
/// namespace; returns the init's pid.
fn follow_intermediate(
    chan: &Channel,
    intermediate: libc::pid_t,
    spec: &Spec,
) -> Result<libc::pid_t> {
    loop {
        match chan.recv() {
            Ok(Some(Message::MapUserNamespace)) => {
                write_id_maps(intermediate, spec)?;
                chan.send(&Message::Mapped)
                    .op(|| "sync with the intermediate".to_string())?;
            }
            Ok(Some(Message::InitPid(pid))) => return Ok(pid),
            Ok(Some(Message::Failed(text))) => return Err(Error::Child(text)),
            Ok(other) => {
                return Err(Error::Child(format!(
                    "unexpected {other:?} from the intermediate process"
                )));
            }
            Err(e) => return Err(e).op(|| "read from the intermediate process".to_string()),
        }
    }
}

/// Writes the pid file atomically (containerd reads it as soon as `create` returns).
pub(crate) fn write_pid_file(path: &Path, pid: libc::pid_t) -> Result<()> {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().at("getcwd", ".")?.join(path)
    };
    write_atomic(&path, pid.to_string().as_bytes())
}
