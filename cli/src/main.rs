//! `berth`: a docker-compatible command-line client. It speaks the Docker Engine API over
//! HTTP/1.1 on a unix socket, so it drives berthd and dockerd alike.

mod client;
mod commands;
mod completion;
mod container_config;
mod credentials;
mod error;
mod format;
mod progress;
mod stream;
mod template;
mod tty;
mod units;

use clap::{CommandFactory, Parser, Subcommand};

use crate::client::{Client, DEFAULT_HOST};
use crate::commands::{container, exec, image, login, network, run, system, volume};
use crate::error::CliError;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A self-sufficient runtime for containers"
)]
#[command(subcommand_required = true, arg_required_else_help = true)]
pub struct Cli {
    /// Daemon socket to connect to (default: $DOCKER_HOST or unix:///run/berth/berth.sock)
    #[arg(short = 'H', long, global = true, value_name = "HOST")]
    host: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create and run a new container from an image
    #[command(disable_help_flag = true)]
    Run(run::RunArgs),
    /// Create a new container
    #[command(disable_help_flag = true)]
    Create(run::CreateArgs),
    /// Start one or more stopped containers
    Start(run::StartArgs),
    /// Attach local standard input, output, and error streams to a running container
    Attach(run::AttachArgs),
    /// Execute a command in a running container
    Exec(exec::ExecArgs),
    /// Stop one or more running containers
    Stop(container::StopArgs),
    /// Restart one or more containers
    Restart(container::StopArgs),
    /// Kill one or more running containers
    Kill(container::KillArgs),
    /// Remove one or more containers
    Rm(container::RmArgs),
    /// List containers
    Ps(container::PsArgs),
    /// Fetch the logs of a container
    Logs(container::LogsArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(container::ContainersArg),
    /// Return low-level information on Docker objects
    Inspect(system::InspectArgs),
    /// Display the running processes of a container
    Top(container::TopArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(container::StatsArgs),
    /// Rename a container
    Rename(container::RenameArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(container::CpArgs),
    /// Export a container's filesystem as a tar archive
    Export(container::ExportArgs),
    /// List port mappings or a specific mapping for the container
    Port(container::PortArgs),
    /// Pause all processes within one or more containers
    Pause(container::ContainersArg),
    /// Unpause all processes within one or more containers
    Unpause(container::ContainersArg),
    /// Manage containers
    #[command(subcommand)]
    Container(container::ContainerCommand),
    /// List images
    Images(image::ImagesArgs),
    /// Download an image from a registry
    Pull(image::PullArgs),
    /// Log in to a registry
    Login(login::LoginArgs),
    /// Log out from a registry
    Logout(login::LogoutArgs),
    /// Upload an image to a registry
    Push(image::PushArgs),
    /// Remove one or more images
    Rmi(image::RmiArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(image::TagArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(image::SaveArgs),
    /// Load an image from a tar archive or STDIN
    Load(image::LoadArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(image::ImportArgs),
    /// Show the history of an image
    History(image::HistoryArgs),
    /// Manage images
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Manage networks
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage volumes
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Manage the engine
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Display system-wide information
    Info(system::InfoArgs),
    /// Show the client and daemon version information
    Version(system::VersionArgs),
    /// Get real time events from the server
    Events(system::EventsArgs),
    /// Generate the autocompletion script for the specified shell
    Completion(completion::CompletionArgs),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            std::process::exit(if err.use_stderr() { 125 } else { 0 });
        }
    };
    let code = run_cli(cli);
    std::process::exit(code);
}

/// Runs the command to completion and returns the exit status; every guard (a raw
/// terminal) is dropped before this returns, so the caller may exit directly.
fn run_cli(cli: Cli) -> i32 {
    if let Command::Completion(args) = &cli.command {
        return match completion::generate(&mut Cli::command(), args.shell) {
            Ok(script) => commands::print_out(&script).map(|_| 0).unwrap_or(1),
            Err(err) => report(&err),
        };
    }
    let host = cli
        .host
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| DEFAULT_HOST.to_string());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return report(&CliError::Io(err)),
    };
    let result = runtime.block_on(async move {
        let mut client = Client::new(&host)?;
        dispatch(&mut client, cli.command).await
    });
    // Helper threads blocked reading stdin must not keep the process alive.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(err) => report(&err),
    }
}

fn report(err: &CliError) -> i32 {
    match err {
        CliError::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe => 0,
        _ => {
            commands::print_err(&format!("{err}\n"));
            err.exit_code()
        }
    }
}

async fn dispatch(client: &mut Client, command: Command) -> Result<i32, CliError> {
    match command {
        Command::Run(args) => run::run(client, args).await,
        Command::Create(args) => run::create(client, args).await,
        Command::Start(args) => run::start(client, args).await,
        Command::Attach(args) => run::attach(client, args).await,
        Command::Exec(args) => exec::exec(client, args).await,
        Command::Stop(args) => container::stop(client, args, "stop").await,
        Command::Restart(args) => container::stop(client, args, "restart").await,
        Command::Kill(args) => container::kill(client, args).await,
        Command::Rm(args) => container::rm(client, args).await,
        Command::Ps(args) => container::ps(client, args).await,
        Command::Logs(args) => container::logs(client, args).await,
        Command::Wait(args) => container::wait(client, args).await,
        Command::Inspect(args) => system::inspect(client, args).await,
        Command::Top(args) => container::top(client, args).await,
        Command::Stats(args) => container::stats(client, args).await,
        Command::Rename(args) => container::rename(client, args).await,
        Command::Cp(args) => container::cp(client, args).await,
        Command::Export(args) => container::export(client, args).await,
        Command::Port(args) => container::port(client, args).await,
        Command::Pause(args) => container::simple_action(client, args, "pause").await,
        Command::Unpause(args) => container::simple_action(client, args, "unpause").await,
        Command::Container(sub) => container::container_command(client, sub).await,
        Command::Images(args) => image::images(client, args).await,
        Command::Pull(args) => image::pull(client, args).await,
        Command::Login(args) => login::login(client, args).await,
        Command::Logout(args) => login::logout(args).await,
        Command::Push(args) => image::push(client, args).await,
        Command::Rmi(args) => image::rmi(client, args).await,
        Command::Tag(args) => image::tag(client, args).await,
        Command::Save(args) => image::save(client, args).await,
        Command::Load(args) => image::load(client, args).await,
        Command::Import(args) => image::import(client, args).await,
        Command::History(args) => image::history(client, args).await,
        Command::Image(sub) => image::image_command(client, sub).await,
        Command::Network(sub) => network::network_command(client, sub).await,
        Command::Volume(sub) => volume::volume_command(client, sub).await,
        Command::System(sub) => system::system_command(client, sub).await,
        Command::Info(args) => system::info(client, args).await,
        Command::Version(args) => system::version(client, args).await,
        Command::Events(args) => system::events(client, args).await,
        Command::Completion(_) => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_host_flag_after_subcommand() {
        let cli =
            Cli::try_parse_from(["berth", "ps", "-H", "unix:///tmp/x.sock", "-a"]).expect("parses");
        assert_eq!(cli.host.as_deref(), Some("unix:///tmp/x.sock"));
    }

    #[test]
    fn run_hostname_short_flag_is_not_help() {
        let cli = Cli::try_parse_from(["berth", "run", "-h", "box", "--rm", "busybox", "true"])
            .expect("parses");
        match cli.command {
            Command::Run(args) => {
                assert_eq!(args.options.hostname.as_deref(), Some("box"));
                assert!(args.rm);
                assert_eq!(args.options.command, ["true"]);
            }
            _ => panic!("expected run"),
        }
    }
}
