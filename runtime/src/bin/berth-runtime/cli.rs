//! Command-line shape: runc's verbs and flags, as containerd's shim, podman/conmon and dockerd
//! pass them. Flags may come before or after the container id.

use std::path::PathBuf;

use std::ffi::OsString;

use clap::{Args, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug, PartialEq)]
#[command(
    name = "berth-runtime",
    about = "berth's OCI container runtime (runc-compatible)",
    disable_version_flag = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags that go before (or, for most, after) the verb.
#[derive(Args, Debug, PartialEq)]
pub struct GlobalArgs {
    /// Directory holding the containers' state.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Write log lines (errors always, debug with --debug) to this file.
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd for cgroups (not supported: a clear error at create).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility ("true", "false", "auto"); rootless mode is decided by
    /// the config (a user namespace).
    #[arg(long, value_name = "VALUE")]
    pub rootless: Option<String>,
    /// Print the version.
    #[arg(short = 'v', long)]
    pub version: bool,
}

impl Cli {
    /// Parses the command line. clap builds every verb's arguments before it matches one,
    /// which took ~0.3 ms here (3 % of a container start); so the verb is looked up first and
    /// only its arguments are built. Help, errors and anything unusual go through the full
    /// parser, so the definitions below stay the only source of truth.
    pub fn parse_args() -> Cli {
        let args: Vec<OsString> = std::env::args_os().collect();
        if let Some(cli) = hot_path(&args) {
            return cli;
        }
        let wants_help = args
            .iter()
            .skip(1)
            .any(|a| a == "-h" || a == "--help" || a == "help");
        if !wants_help {
            if let Some(verb) = verb_of(&args) {
                // (No help flags here: asking for help takes the full parser.)
                let root = GlobalArgs::augment_args(
                    clap::Command::new("berth-runtime")
                        .disable_version_flag(true)
                        .disable_help_flag(true)
                        .disable_help_subcommand(true),
                );
                if let Some(cmd) = Command::single(&verb, root) {
                    if let Ok(matches) = cmd.try_get_matches_from(&args) {
                        if let (Ok(global), Ok(command)) = (
                            GlobalArgs::from_arg_matches(&matches),
                            Command::from_arg_matches(&matches),
                        ) {
                            return Cli {
                                global,
                                command: Some(command),
                            };
                        }
                    }
                }
            }
        }
        Cli::parse_from(args)
    }
}

/// The verbs an engine calls for every container (`create`, `start`, `run`, `state`, `kill`,
/// `delete`) in their plain shapes, without clap: building even one verb's parser cost
/// ~0.12 ms of each invocation, and containerd's create/start/delete makes three. Anything
/// else (another verb, `-h`, an unknown or repeated flag, `--x=y` forms of short flags, a
/// value that looks like a flag, `--`, non-UTF-8) returns `None` for clap, so clap's
/// definitions stay the reference: a test checks that both agree on every command line this
/// accepts.
fn hot_path(args: &[OsString]) -> Option<Cli> {
    let mut global = GlobalArgs {
        root: None,
        log: None,
        log_format: LogFormat::Text,
        debug: false,
        systemd_cgroup: false,
        rootless: None,
        version: false,
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut verb: Option<&str> = None;
    let mut positional: Vec<&str> = Vec::new();
    let mut bundle: Option<&str> = None;
    let mut pid_file: Option<&str> = None;
    let mut console_socket: Option<&str> = None;
    let mut preserve_fds: Option<u32> = None;
    let (mut no_pivot, mut no_new_keyring, mut detach, mut keep, mut force, mut all) =
        (false, false, false, false, false, false);
    let mut iter = args.iter().skip(1).map(|a| a.to_str());
    while let Some(arg) = iter.next() {
        let arg = arg?;
        if !arg.starts_with('-') || arg == "-" {
            if verb.is_none() {
                verb = Some(arg);
            } else {
                positional.push(arg);
            }
            continue;
        }
        // `--name=value` or `--name value`; short flags only in their separate form.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v)),
            Some(_) => return None,
            None => (arg, None),
        };
        let takes_value = matches!(
            name,
            "--root"
                | "--log"
                | "--log-format"
                | "--rootless"
                | "--bundle"
                | "-b"
                | "--pid-file"
                | "--console-socket"
                | "--preserve-fds"
        );
        let value = if takes_value {
            match inline {
                Some(v) => Some(v),
                None => match iter.next() {
                    Some(Some(v)) if !v.starts_with('-') || v == "-" => Some(v),
                    _ => return None,
                },
            }
        } else if inline.is_some() {
            return None;
        } else {
            None
        };
        if value == Some("") {
            return None;
        }
        // Which verbs take the flag (globals: all; `--rootless` only before the verb).
        let flag_verbs: &[&str] = match name {
            "--root" | "--log" | "--log-format" | "--debug" | "--systemd-cgroup" => &[],
            "--rootless" if verb.is_none() => &[],
            "--bundle" | "-b" | "--pid-file" | "--console-socket" | "--preserve-fds"
            | "--no-pivot" | "--no-new-keyring" => &["create", "run"],
            "--detach" | "-d" | "--keep" => &["run"],
            "--force" | "-f" => &["delete"],
            "--all" | "-a" => &["kill"],
            _ => return None,
        };
        if !flag_verbs.is_empty() && !verb.is_some_and(|v| flag_verbs.contains(&v)) {
            return None;
        }
        // One spelling per flag, each at most once (clap refuses repeats of most).
        let canonical = match name {
            "-b" => "--bundle",
            "-d" => "--detach",
            "-f" => "--force",
            "-a" => "--all",
            n => n,
        };
        if seen.contains(&canonical) {
            return None;
        }
        seen.push(canonical);
        match canonical {
            "--root" => global.root = value.map(PathBuf::from),
            "--log" => global.log = value.map(PathBuf::from),
            "--log-format" => {
                global.log_format = match value? {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return None,
                }
            }
            "--rootless" => global.rootless = value.map(str::to_string),
            "--debug" => global.debug = true,
            "--systemd-cgroup" => global.systemd_cgroup = true,
            "--bundle" => bundle = value,
            "--pid-file" => pid_file = value,
            "--console-socket" => console_socket = value,
            "--preserve-fds" => preserve_fds = Some(value?.parse().ok()?),
            "--no-pivot" => no_pivot = true,
            "--no-new-keyring" => no_new_keyring = true,
            "--detach" => detach = true,
            "--keep" => keep = true,
            "--force" => force = true,
            "--all" => all = true,
            _ => return None,
        }
    }
    let id = |max: usize| -> Option<String> {
        (1..=max)
            .contains(&positional.len())
            .then(|| positional[0].to_string())
    };
    let create = |id: String| CreateArgs {
        id,
        bundle: PathBuf::from(bundle.unwrap_or(".")),
        pid_file: pid_file.map(PathBuf::from),
        console_socket: console_socket.map(PathBuf::from),
        no_pivot,
        no_new_keyring,
        preserve_fds: preserve_fds.unwrap_or(0),
    };
    let command = match verb? {
        "create" => Command::Create(create(id(1)?)),
        "run" => Command::Run(RunArgs {
            create: create(id(1)?),
            detach,
            keep,
        }),
        "start" => Command::Start(IdArg { id: id(1)? }),
        "state" => Command::State(IdArg { id: id(1)? }),
        "delete" => Command::Delete(DeleteArgs { id: id(1)?, force }),
        "kill" => Command::Kill(KillArgs {
            id: id(2)?,
            signal: positional.get(1).map(|s| s.to_string()),
            all,
        }),
        _ => return None,
    };
    Some(Cli {
        global,
        command: Some(command),
    })
}

/// The first argument that is not a flag or a global flag's value: the verb.
fn verb_of(args: &[OsString]) -> Option<String> {
    let mut iter = args.iter().skip(1);
    while let Some(a) = iter.next() {
        let a = a.to_str()?;
        match a {
            "--root" | "--log" | "--log-format" | "--rootless" => {
                iter.next();
            }
            _ if a.starts_with('-') => {}
            verb => return Some(verb.to_string()),
        }
    }
    None
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Args, Debug, PartialEq)]
pub struct CreateArgs {
    pub id: String,
    /// The bundle directory (config.json and the rootfs).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the init's pid here.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Unix socket to receive the pty master (SCM_RIGHTS) when process.terminal is set.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root.
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not give the container a new session keyring.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass N more descriptors (3 .. 3+N) to the container.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
}

#[derive(Args, Debug, PartialEq)]
pub struct IdArg {
    pub id: String,
}

#[derive(Args, Debug, PartialEq)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container's state after it exits.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Args, Debug, PartialEq)]
pub struct KillArgs {
    pub id: String,
    pub signal: Option<String>,
    /// Signal every process of the container.
    #[arg(short, long)]
    pub all: bool,
}

#[derive(Args, Debug, PartialEq)]
pub struct DeleteArgs {
    pub id: String,
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug, PartialEq)]
pub struct ListArgs {
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug, PartialEq)]
pub struct PsArgs {
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    pub id: String,
    /// Arguments for ps(1) (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Args, Debug, PartialEq)]
pub struct SpecArgs {
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// A config for an unprivileged user (user namespace, no cgroup limits).
    #[arg(long = "rootless", id = "spec_rootless")]
    pub rootless: bool,
}

/// Declares the verbs once: the clap subcommand enum and the table `single` builds from.
macro_rules! verbs {
    ($($(#[doc = $doc:literal])* $name:literal $(| $alias:literal)? => $variant:ident($args:ty),)*) => {
        #[derive(Subcommand, Debug, PartialEq)]
        pub enum Command {
            $($(#[doc = $doc])* #[command(name = $name $(, alias = $alias)?)] $variant($args),)*
        }

        impl Command {
            /// `root` with only the verb `name` added.
            fn single(name: &str, root: clap::Command) -> Option<clap::Command> {
                match name {
                    $($name $(| $alias)? => Some(root.subcommand(
                        <$args as Args>::augment_args(clap::Command::new($name).disable_help_flag(true)),
                    )),)*
                    _ => None,
                }
            }
        }
    };
}

verbs! {
    /// Create a container; its init waits for `start`.
    "create" => Create(CreateArgs),
    /// Start a created container.
    "start" => Start(IdArg),
    /// Create and start a container; without --detach, wait for it and exit with its status.
    "run" => Run(RunArgs),
    /// Print a container's state as JSON.
    "state" => State(IdArg),
    /// Send a signal (name or number, default SIGTERM) to the container's init.
    "kill" => Kill(KillArgs),
    /// Delete a stopped container (running too, with --force).
    "delete" => Delete(DeleteArgs),
    /// List containers.
    "list" | "ls" => List(ListArgs),
    /// Run a process in a running container.
    "exec" => Exec(Box<ExecArgs>),
    /// Processes of a container (`ps` output, or pids with --format json).
    "ps" => Ps(PsArgs),
    /// Freeze every process of a container.
    "pause" => Pause(IdArg),
    /// Thaw a paused container.
    "resume" => Resume(IdArg),
    /// Write a default config.json.
    "spec" => Spec(SpecArgs),
    /// Change the resource limits of a running container.
    "update" => Update(Box<UpdateArgs>),
    /// Resource usage and OOM notifications, as JSON lines (--stats: once).
    "events" => Events(EventsArgs),
    /// What this build supports (the runtime-spec features document).
    "features" => Features(NoArgs),
}

#[derive(Args, Debug, PartialEq)]
pub struct ExecArgs {
    pub id: String,
    /// The command and its arguments (unless --process is given).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// A process.json (the `process` object of config.json), or - for stdin.
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Allocate a pty.
    #[arg(short, long)]
    pub tty: bool,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Add NAME=value to the environment (repeatable).
    #[arg(short, long)]
    pub env: Vec<String>,
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// uid[:gid]
    #[arg(short, long)]
    pub user: Option<String>,
    /// Supplementary group ids (repeatable).
    #[arg(short = 'g', long)]
    pub additional_gids: Vec<u32>,
    /// Add a capability (repeatable).
    #[arg(short, long)]
    pub cap: Vec<String>,
    #[arg(long)]
    pub no_new_privs: bool,
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// AppArmor profile for the process.
    #[arg(long)]
    pub apparmor: Option<String>,
    /// SELinux label (accepted; this build does not label processes).
    #[arg(long)]
    pub process_label: Option<String>,
}

#[derive(Args, Debug, PartialEq)]
pub struct NoArgs {}

#[derive(Args, Debug, PartialEq)]
pub struct EventsArgs {
    pub id: String,
    /// Print the current usage once and exit.
    #[arg(long)]
    pub stats: bool,
    /// Between two stats events.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
}

/// runc's update flags; sizes take k, m and g suffixes (binary).
#[derive(Args, Debug, PartialEq)]
pub struct UpdateArgs {
    pub id: String,
    /// A LinuxResources JSON document, or - for stdin (what containerd passes).
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    #[arg(long, short = 'm')]
    pub memory: Option<String>,
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap; -1 for unlimited.
    #[arg(long)]
    pub memory_swap: Option<String>,
    /// Ignored (the kernel removed kernel memory limits).
    #[arg(long)]
    pub kernel_memory: Option<String>,
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    #[arg(long)]
    pub cpu_period: Option<u64>,
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    #[arg(long)]
    pub cpu_rt_runtime: Option<i64>,
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    #[arg(long)]
    pub blkio_weight: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<OsString> {
        std::iter::once("berth-runtime")
            .chain(line.split_whitespace())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn the_hot_path_agrees_with_clap() {
        for line in [
            "create --bundle /b c1",
            "create c1 --bundle /b",
            "--root /run/x create -b /b --pid-file /p --console-socket /s c1",
            "--root=/run/x --log /l --log-format json create c1 --no-pivot --no-new-keyring --preserve-fds 2",
            "create --bundle=/b --pid-file=/p c1",
            "--debug --systemd-cgroup create c1",
            "--rootless true create c1",
            "run c1",
            "run -d --keep -b /b c1",
            "run c1 --detach --root /r",
            "start c1",
            "start c1 --root /r",
            "state c1",
            "--log-format text state c1",
            "kill c1",
            "kill c1 KILL",
            "kill --all c1 9",
            "kill c1 TERM -a",
            "delete c1",
            "delete -f c1",
            "delete --force c1 --log /l",
            "create --pid-file - c1",
        ] {
            let args = argv(line);
            let fast = hot_path(&args).unwrap_or_else(|| panic!("{line}: not taken"));
            let clap = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(fast, clap, "{line}");
        }
    }

    #[test]
    fn anything_unusual_is_left_to_clap() {
        for line in [
            "",
            "--help",
            "create --help",
            "-h",
            "--version",
            "list",
            "exec c1 true",
            "create",
            "create c1 c2",
            "create -bX c1",
            "create -b=/b c1",
            "create --bundle /a --bundle /b c1",
            "create -b /a --bundle /b c1",
            "create --bundle --pid-file c1",
            "create --unknown c1",
            "start -d c1",
            "delete --all c1",
            "kill c1 TERM extra",
            "--log-format yaml state c1",
            "state c1 --rootless true",
            "create --preserve-fds x c1",
            "create --debug=yes c1",
            "create -- c1",
            "--root= state c1",
        ] {
            assert_eq!(hot_path(&argv(line)), None, "{line}");
        }
        let empty_value: Vec<OsString> = ["berth-runtime", "create", "--bundle", "", "c1"]
            .into_iter()
            .map(OsString::from)
            .collect();
        assert_eq!(hot_path(&empty_value), None);
    }
}
