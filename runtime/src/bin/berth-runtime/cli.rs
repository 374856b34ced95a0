//! Command-line shape: runc's verbs and flags, as containerd's shim, podman/conmon and dockerd
//! pass them. Flags may come before or after the container id.

use std::path::PathBuf;

use std::ffi::OsString;

use clap::{Args, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
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
#[derive(Args, Debug)]
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

#[derive(Args, Debug)]
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

#[derive(Args, Debug)]
pub struct IdArg {
    pub id: String,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container's state after it exits.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    pub id: String,
    pub signal: Option<String>,
    /// Signal every process of the container.
    #[arg(short, long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    pub id: String,
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    pub id: String,
    /// Arguments for ps(1) (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Args, Debug)]
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
        #[derive(Subcommand, Debug)]
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

#[derive(Args, Debug)]
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

#[derive(Args, Debug)]
pub struct NoArgs {}

#[derive(Args, Debug)]
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
#[derive(Args, Debug)]
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
