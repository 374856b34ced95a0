//! `berth-runtime`: the runc-compatible command line over the berth-runtime library.

// The C `main` below replaces std's entry: every container start runs this binary two or
// three times (containerd: create, start, delete), and std's start-up work is not needed.
// glibc only: std gets argv from glibc's `.init_array` call, which other C libraries lack.
#![cfg_attr(all(not(test), target_env = "gnu"), no_main)]

mod cli;
mod foreground;
mod logger;

use std::collections::BTreeSet;
use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

use berth_runtime::{Container, CreateOptions, Error, ExecOptions, OCI_VERSION, Runtime};

use oci_spec::runtime::{Capability, Process, User};

use cli::{Cli, Command, CreateArgs, ExecArgs, ListFormat, RunArgs};
use foreground::Signals;

/// An error the CLI reports: the library's, or one about the command line itself.
enum CliError {
    Runtime(Error),
    Usage(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Runtime(e) => write!(f, "{e}"),
            CliError::Usage(m) => f.write_str(m),
        }
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::Runtime(e)
    }
}

type CliResult = Result<u8, CliError>;

/// The process entry, called by the C library with std's runtime set-up skipped: that set-up
/// reads and parses /proc/self/maps (through `pthread_getattr_np`) and maps an alternate signal
/// stack to report stack overflows by name, ~15 system calls and ~0.05 ms of CPU on every
/// invocation. What of it matters is done here: standard descriptors that are closed are
/// opened on /dev/null (so no file this process opens can become its stdout), and SIGPIPE is
/// ignored, as std does (a reader gone is an error, not a silent death; the container's
/// processes get default dispositions back before exec). A stack overflow is a plain SIGSEGV.
/// `process::exit` flushes stdout, as returning from std's `main` would. (std::env::args
/// needs nothing: glibc hands argv to std through `.init_array`.)
#[cfg(all(not(test), target_env = "gnu"))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    sanitize_standard_descriptors();
    // SAFETY: setting a disposition to SIG_IGN involves no handler code; single-threaded here.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // A panic ends the process with 101, as it would from std's `main` (it cannot unwind
    // out of this function).
    std::process::exit(i32::from(std::panic::catch_unwind(cli_main).unwrap_or(101)))
}

/// std's own entry, where the C library does not hand argv to std without it.
#[cfg(all(not(test), not(target_env = "gnu")))]
fn main() {
    std::process::exit(i32::from(cli_main()))
}

/// Opens /dev/null on any of descriptors 0, 1 and 2 that is closed (what std's entry does).
#[cfg(all(not(test), target_env = "gnu"))]
fn sanitize_standard_descriptors() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll on a local array of three pollfd; a zero timeout never blocks.
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } < 0 {
        return;
    }
    for p in fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0) {
        // SAFETY: open of a constant C string; the lowest free descriptor is the closed one,
        // as the lower ones are open (sanitized in order).
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if fd != p.fd {
            // Not even /dev/null: nothing safe to do but stop, as std does.
            std::process::abort();
        }
    }
}

/// The command line's work; its exit status.
#[cfg_attr(test, allow(dead_code))]
fn cli_main() -> u8 {
    berth_runtime::trace::mark("cli: main");
    let cli = Cli::parse_args();
    berth_runtime::trace::mark("cli: parsed");
    if cli.global.version {
        println!(
            "berth-runtime version {}\ncommit: {}\nspec: {OCI_VERSION}",
            env!("CARGO_PKG_VERSION"),
            env!("BERTH_GIT_COMMIT")
        );
        return 0;
    }
    let logger = match logger::Logger::install(
        cli.global.log.as_deref(),
        cli.global.log_format,
        cli.global.debug,
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth-runtime: open log file: {e}");
            return 1;
        }
    };
    berth_runtime::trace::mark("cli: logger");
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e}");
            if logger.writes_to_file() {
                eprintln!("berth-runtime: {e}");
            }
            1
        }
    };
    log::logger().flush();
    berth_runtime::trace::mark("cli: exit");
    code
}

fn run(cli: Cli) -> CliResult {
    let Some(command) = cli.command else {
        return Err(CliError::Usage("no command given; see --help".into()));
    };
    let global = cli.global;
    let rt = Runtime::new(global.root.unwrap_or_else(Runtime::default_root));
    match command {
        Command::Create(args) => {
            rt.create(&args.id, &create_options(&args, global.systemd_cgroup))?;
            Ok(0)
        }
        Command::Start(a) => {
            rt.load(&a.id)?.start()?;
            Ok(0)
        }
        Command::Run(a) => run_container(&rt, &a, global.systemd_cgroup),
        Command::State(a) => {
            let state = rt.load(&a.id)?.oci_state();
            println!(
                "{}",
                serde_json::to_string_pretty(&state).unwrap_or_default()
            );
            Ok(0)
        }
        Command::Kill(a) => {
            let sig = berth_runtime::signals::parse(a.signal.as_deref().unwrap_or("SIGTERM"))
                .map_err(CliError::Usage)?;
            rt.load(&a.id)?.kill(sig, a.all)?;
            Ok(0)
        }
        Command::Delete(a) => match rt.load(&a.id) {
            Ok(c) => {
                c.delete(a.force)?;
                Ok(0)
            }
            // runc: a forced delete of what is not (or no longer) there succeeds, after removing
            // what a killed `create` may have left.
            Err(Error::NotFound(_)) if a.force => {
                rt.remove_leftovers(&a.id)?;
                Ok(0)
            }
            Err(e) => Err(e.into()),
        },
        Command::List(a) => list(&rt, a.format, a.quiet),
        Command::Exec(args) => exec(&rt, &args),
        Command::Ps(a) => ps(&rt.load(&a.id)?, a.format, &a.ps_args),
        Command::Pause(a) => {
            rt.load(&a.id)?.pause()?;
            Ok(0)
        }
        Command::Resume(a) => {
            rt.load(&a.id)?.resume()?;
            Ok(0)
        }
        Command::Spec(a) => spec(&a.bundle, a.rootless),
        Command::Update(a) => {
            let resources = update_resources(&a)?;
            rt.load(&a.id)?.update(&resources)?;
            Ok(0)
        }
        Command::Events(a) => {
            let c = rt.load(&a.id)?;
            let mut out = std::io::stdout().lock();
            if a.stats {
                let event = serde_json::json!({"type": "stats", "id": c.id(), "data": c.stats()});
                let _ = writeln!(out, "{event}");
            } else {
                c.events(a.interval, &mut out)?;
            }
            Ok(0)
        }
        Command::Features(_) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&berth_runtime::features::features())
                    .unwrap_or_default()
            );
            Ok(0)
        }
    }
}

fn create_options(a: &CreateArgs, systemd_cgroup: bool) -> CreateOptions {
    CreateOptions {
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
        systemd_cgroup,
    }
}

fn run_container(rt: &Runtime, run: &RunArgs, systemd_cgroup: bool) -> CliResult {
    let (a, detach, keep) = (&run.create, run.detach, run.keep);
    let opts = create_options(a, systemd_cgroup);
    // Blocked before the fork so no signal meant for the container is lost; the container
    // process resets its own mask.
    let signals = if detach {
        None
    } else {
        Some(Signals::block().map_err(|e| CliError::Usage(format!("block signals: {e}")))?)
    };
    let created = rt.create_for_run(&a.id, &opts, !detach)?;
    let (container, _pidfd, pty) = match created.start() {
        Ok(started) => started,
        Err(e) => {
            if let Ok(c) = rt.load(&a.id) {
                let _ = c.delete(true);
            }
            return Err(e.into());
        }
    };
    let Some(signals) = signals else { return Ok(0) };
    let status = foreground::attach(container.pid(), &signals, pty);
    berth_runtime::trace::mark("run: container exited");
    if !keep {
        container.delete(true)?;
    }
    Ok(status.code() as u8)
}

fn list(rt: &Runtime, format: ListFormat, quiet: bool) -> CliResult {
    let containers = rt.list()?;
    let mut out = std::io::stdout().lock();
    if quiet {
        for c in &containers {
            let _ = writeln!(out, "{}", c.id());
        }
        return Ok(0);
    }
    let states: Vec<_> = containers.iter().map(Container::oci_state).collect();
    match format {
        ListFormat::Json => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(&states).unwrap_or_default()
            );
        }
        ListFormat::Table => {
            let mut rows =
                vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from)];
            for s in &states {
                rows.push([
                    s.id.clone(),
                    s.pid.to_string(),
                    s.status.to_string(),
                    s.bundle.display().to_string(),
                    s.created.clone(),
                    s.owner.clone(),
                ]);
            }
            let _ = write!(out, "{}", table(&rows));
        }
    }
    Ok(0)
}

/// Columns padded like runc's tabwriter (minimum width 12, padding 3).
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [12usize; N];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len() + 3);
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}", width = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

fn exec(rt: &Runtime, a: &ExecArgs) -> CliResult {
    let container = rt.load(&a.id)?;
    let process = exec_process(&container, a)?;
    let terminal = process.terminal() == Some(true);
    if a.detach && terminal && a.console_socket.is_none() {
        return Err(CliError::Usage(
            "cannot allocate a tty when detached without --console-socket".into(),
        ));
    }
    let opts = ExecOptions {
        process,
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        preserve_fds: a.preserve_fds,
        console_to_caller: !a.detach,
    };
    let signals = if a.detach {
        None
    } else {
        Some(Signals::block().map_err(|e| CliError::Usage(format!("block signals: {e}")))?)
    };
    let p = container.exec(&opts)?;
    let Some(signals) = signals else { return Ok(0) };
    Ok(foreground::attach(p.pid, &signals, p.pty_master).code() as u8)
}

/// The process to exec: a process.json as given, or the container's own process with the
/// command line's changes.
fn no_capabilities() -> oci_spec::runtime::LinuxCapabilities {
    let mut caps = oci_spec::runtime::LinuxCapabilities::default();
    caps.set_bounding(None);
    caps.set_effective(None);
    caps.set_inheritable(None);
    caps.set_permitted(None);
    caps.set_ambient(None);
    caps
}

fn exec_process(container: &Container, a: &ExecArgs) -> Result<Process, CliError> {
    if let Some(path) = &a.process {
        let bytes = if path == Path::new("-") {
            let mut v = Vec::new();
            std::io::stdin()
                .read_to_end(&mut v)
                .map_err(|e| CliError::Usage(format!("read process from stdin: {e}")))?;
            v
        } else {
            std::fs::read(path)
                .map_err(|e| CliError::Usage(format!("read {}: {e}", path.display())))?
        };
        return Ok(berth_runtime::bundle::parse_json(
            &bytes,
            &path.display().to_string(),
        )?);
    }
    if a.command.is_empty() {
        return Err(CliError::Usage(
            "exec needs a command (or --process)".into(),
        ));
    }
    // Never `Process::default()`: oci-spec's default grants inheritable capabilities.
    let base = container
        .record()
        .spec()?
        .process()
        .clone()
        .ok_or_else(|| {
            CliError::Usage(
                "the container's config has no process to base exec on: use --process".into(),
            )
        })?;
    let mut p = base.clone();
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    p.set_console_size(None);
    let mut env = base.env().clone().unwrap_or_default();
    for kv in &a.env {
        let name = kv.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(name));
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some(u) = &a.user {
        let mut user = User::default();
        let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
        let parse = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| CliError::Usage(format!("--user {u:?}: expected uid[:gid]")))
        };
        user.set_uid(parse(uid)?);
        user.set_gid(parse(gid)?);
        p.set_user(user);
    }
    if !a.additional_gids.is_empty() {
        p.user_mut()
            .set_additional_gids(Some(a.additional_gids.clone()));
    }
    if !a.cap.is_empty() {
        // Added to bounding, effective and permitted only: never inheritable or ambient, which
        // would let file capabilities of any program exceed the set (CVE-2022-29162). Nor
        // from oci-spec's `LinuxCapabilities::default()`, whose inheritable set is not empty.
        let mut caps = p.capabilities().clone().unwrap_or_else(no_capabilities);
        for name in &a.cap {
            let cap: Capability =
                serde_json::from_value(serde_json::Value::String(name.clone()))
                    .map_err(|_| CliError::Usage(format!("--cap {name:?}: unknown capability")))?;
            let add = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            caps.set_bounding(add(caps.bounding()));
            caps.set_effective(add(caps.effective()));
            caps.set_permitted(add(caps.permitted()));
        }
        p.set_capabilities(Some(caps));
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(profile) = &a.apparmor {
        p.set_apparmor_profile(Some(profile.clone()));
    }
    if a.process_label.as_deref().is_some_and(|l| !l.is_empty()) {
        if Path::new("/sys/fs/selinux/enforce").exists() {
            return Err(CliError::Usage(
                "--process-label: SELinux labelling is not supported by this build".into(),
            ));
        }
        log::warn!("--process-label ignored: SELinux is not enabled on this host");
    }
    Ok(p)
}

fn ps(container: &Container, format: ListFormat, ps_args: &[String]) -> CliResult {
    let pids = container.processes()?;
    if format == ListFormat::Json {
        println!("{}", serde_json::to_string(&pids).unwrap_or_default());
        return Ok(0);
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let output = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| CliError::Usage(format!("run ps: {e}")))?;
    if !output.status.success() {
        return Err(CliError::Usage(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let column = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| CliError::Usage("ps output has no PID column".into()))?;
    let wanted: BTreeSet<i32> = pids.into_iter().collect();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(column)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| wanted.contains(&p)) {
            let _ = writeln!(out, "{line}");
        }
    }
    Ok(0)
}

fn spec(bundle: &Path, rootless: bool) -> CliResult {
    let path = bundle.join("config.json");
    if path.exists() {
        return Err(CliError::Usage(format!(
            "{} exists; remove it first",
            path.display()
        )));
    }
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let spec = berth_runtime::spec_template::default_spec(rootless, uid, gid);
    let text = serde_json::to_string_pretty(&spec).unwrap_or_default();
    std::fs::write(&path, text + "\n")
        .map_err(|e| CliError::Usage(format!("write {}: {e}", path.display())))?;
    Ok(0)
}

/// The resources for `update`: the --resources document, then the flags on top.
fn update_resources(a: &cli::UpdateArgs) -> Result<oci_spec::runtime::LinuxResources, CliError> {
    use oci_spec::runtime::LinuxPids;
    let mut r: oci_spec::runtime::LinuxResources = match &a.resources {
        Some(path) => {
            let bytes = if path == Path::new("-") {
                let mut v = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut v)
                    .map_err(|e| CliError::Usage(format!("read resources from stdin: {e}")))?;
                v
            } else {
                std::fs::read(path)
                    .map_err(|e| CliError::Usage(format!("read {}: {e}", path.display())))?
            };
            berth_runtime::bundle::parse_json(&bytes, &path.display().to_string())?
        }
        None => Default::default(),
    };
    let size = |flag: &str, v: &Option<String>| -> Result<Option<i64>, CliError> {
        v.as_deref()
            .map(|s| {
                parse_size(s).ok_or_else(|| {
                    CliError::Usage(format!(
                        "--{flag} {s:?}: expected bytes, optionally with k, m or g"
                    ))
                })
            })
            .transpose()
    };
    let (memory, reservation, swap) = (
        size("memory", &a.memory)?,
        size("memory-reservation", &a.memory_reservation)?,
        size("memory-swap", &a.memory_swap)?,
    );
    if memory.is_some() || reservation.is_some() || swap.is_some() {
        let mut m = (*r.memory()).unwrap_or_default();
        if memory.is_some() {
            m.set_limit(memory);
        }
        if reservation.is_some() {
            m.set_reservation(reservation);
        }
        if swap.is_some() {
            m.set_swap(swap);
        }
        r.set_memory(Some(m));
    }
    if a.kernel_memory.is_some() {
        log::warn!("--kernel-memory ignored: the kernel removed kernel memory limits");
    }
    let cpu_flags = a.cpu_shares.is_some()
        || a.cpu_quota.is_some()
        || a.cpu_period.is_some()
        || a.cpu_rt_period.is_some()
        || a.cpu_rt_runtime.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some();
    if cpu_flags {
        let mut c = r.cpu().clone().unwrap_or_default();
        if a.cpu_shares.is_some() {
            c.set_shares(a.cpu_shares);
        }
        if a.cpu_quota.is_some() {
            c.set_quota(a.cpu_quota);
        }
        if a.cpu_period.is_some() {
            c.set_period(a.cpu_period);
        }
        if a.cpu_rt_period.is_some() {
            c.set_realtime_period(a.cpu_rt_period);
        }
        if a.cpu_rt_runtime.is_some() {
            c.set_realtime_runtime(a.cpu_rt_runtime);
        }
        if a.cpuset_cpus.is_some() {
            c.set_cpus(a.cpuset_cpus.clone());
        }
        if a.cpuset_mems.is_some() {
            c.set_mems(a.cpuset_mems.clone());
        }
        r.set_cpu(Some(c));
    }
    if let Some(limit) = a.pids_limit {
        let mut p = LinuxPids::default();
        p.set_limit(limit);
        r.set_pids(Some(p));
    }
    if let Some(w) = a.blkio_weight {
        let mut b = r.block_io().clone().unwrap_or_default();
        b.set_weight(Some(w));
        r.set_block_io(Some(b));
    }
    Ok(r)
}

/// "512", "64k", "256m", "2g" (binary units), "-1".
fn parse_size(s: &str) -> Option<i64> {
    let s = s.trim();
    if s == "-1" {
        return Some(-1);
    }
    let lower = s.to_ascii_lowercase();
    let lower = lower.trim_end_matches('b');
    let (digits, shift) = match lower.chars().last()? {
        'k' => (&lower[..lower.len() - 1], 10),
        'm' => (&lower[..lower.len() - 1], 20),
        'g' => (&lower[..lower.len() - 1], 30),
        _ => (lower, 0),
    };
    digits.parse::<i64>().ok()?.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("256m"), Some(256 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1gb"), Some(1 << 30));
        assert_eq!(parse_size("-1"), Some(-1));
        assert_eq!(parse_size("lots"), None);
    }
}
