//! berthd: the berth daemon. `berthd [--root DIR] [--exec-root DIR] [-H unix:///PATH]
//! [--storage-driver NAME] [--group NAME] [--debug]`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use berth_daemon::daemon::{Config, Daemon, default_storage_driver};
use berth_daemon::registry::client::RegistryOptions;
use clap::Parser;

#[derive(Parser)]
#[command(name = "berthd", version, about = "The berth container engine daemon")]
struct Args {
    /// Persistent state (images, layers, containers, volumes).
    #[arg(long = "root", alias = "data-root", default_value = Config::DEFAULT_ROOT)]
    root: PathBuf,
    /// Runtime state (bundles, monitor sockets).
    #[arg(long = "exec-root", default_value = Config::DEFAULT_EXEC_ROOT)]
    exec_root: PathBuf,
    /// Where to listen: unix:///path (TCP needs TLS, which berthd does not offer yet).
    #[arg(short = 'H', long = "host")]
    host: Option<String>,
    /// overlay2, erofs, btrfs or vfs (default: overlay2 where the root supports it).
    #[arg(short = 's', long = "storage-driver")]
    storage_driver: Option<String>,
    /// The group that may use the socket (default: `berth` if it exists, else root only).
    #[arg(short = 'G', long = "group")]
    group: Option<String>,
    /// A registry reached without certificate checks, or over plain HTTP if it has no TLS
    /// (loopback ones always are); repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// A mirror of Docker Hub (URL), tried before it; repeatable.
    #[arg(long = "registry-mirror")]
    registry_mirrors: Vec<String>,
    /// A registry never contacted (`*`: every one but loopback and insecure ones); repeatable.
    #[arg(long = "block-registry")]
    blocked_registries: Vec<String>,
    /// Per-registry CAs and client certificates: DIR/<host[:port]>/*.crt, *.cert + *.key.
    #[arg(long = "registry-certs-dir", default_value = RegistryOptions::DEFAULT_CERTS_DIR)]
    registry_certs_dir: PathBuf,
    /// Network namespaces kept ready for the next container starts, and as many more with a
    /// veth already on the default network's bridge (0: made at each start).
    #[arg(long = "netns-pool", default_value_t = 4)]
    netns_pool: usize,
    /// Where user networks' resolver asks names that are not containers (IP[:PORT], repeatable;
    /// `none`: container names only). Default: the host's /etc/resolv.conf nameservers.
    #[arg(long = "dns-upstream")]
    dns_upstream: Vec<String>,
    /// berth's nftables table (outbound NAT, published ports from outside).
    #[arg(long = "nft-table", default_value = Config::DEFAULT_NFT_TABLE)]
    nft_table: String,
    /// Turn IPv4 forwarding on if it is off, as dockerd does (`--ip-forward=false`: leave it;
    /// containers then reach nothing beyond the host).
    #[arg(long = "ip-forward", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    ip_forward: bool,
    /// Where the published-port BPF programs are pinned (on a bpffs; survives berthd).
    #[arg(long = "bpf-pin-dir", default_value = Config::DEFAULT_BPF_PIN_DIR)]
    bpf_pin_dir: PathBuf,
    /// The cgroup containers are made below (`PARENT/ID`), unless a container names its own
    /// (`--cgroup-parent` of `run`); relative paths are taken from the root.
    #[arg(long = "cgroup-parent", default_value = Config::DEFAULT_CGROUP_PARENT)]
    cgroup_parent: String,
    /// The Linux bridge of the default network (made on first use).
    #[arg(short = 'b', long = "bridge", default_value = "berth0")]
    bridge: String,
    #[arg(short = 'D', long)]
    debug: bool,
}

fn socket_path(host: Option<&str>, exec_root: &std::path::Path) -> Result<PathBuf, String> {
    match host {
        None => Ok(
            if exec_root == std::path::Path::new(Config::DEFAULT_EXEC_ROOT) {
                PathBuf::from(Config::DEFAULT_SOCKET)
            } else {
                exec_root.join("berth.sock")
            },
        ),
        Some(h) => match h.strip_prefix("unix://") {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ if h.starts_with("tcp://") => Err(format!(
                "{h}: berthd listens on unix sockets only (a TCP listener without TLS would hand root to the network)"
            )),
            _ => Err(format!("{h}: expected unix:///path")),
        },
    }
}

/// The gid of `name` from /etc/group.
fn group_id(name: &str) -> Option<u32> {
    std::fs::read_to_string("/etc/group")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3 && f[0] == name).then(|| f[2].parse().ok())?
        })
}

fn main() {
    let args = Args::parse();
    let filter = if args.debug { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTHD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(args) {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let socket = socket_path(args.host.as_deref(), &args.exec_root)?;
    let monitor = std::env::current_exe()
        .map_err(|e| format!("find berthd's own path: {e}"))?
        .with_file_name("berth-monitor");
    if !monitor.exists() {
        return Err(format!(
            "{} is missing (it is built with berthd)",
            monitor.display()
        ));
    }
    std::fs::create_dir_all(&args.root).map_err(|e| format!("{}: {e}", args.root.display()))?;
    let storage_driver = args
        .storage_driver
        .unwrap_or_else(|| default_storage_driver(&args.root));
    let config = Config {
        root: args.root,
        exec_root: args.exec_root,
        socket: socket.clone(),
        storage_driver,
        monitor,
        bridge_name: args.bridge,
        cgroup_parent: berth_daemon::containers::spec::cgroup_parent(&args.cgroup_parent)
            .map_err(|e| format!("--cgroup-parent: {}", e.0))?,
        bpf_pin_dir: args.bpf_pin_dir,
        nft_table: args.nft_table,
        ip_forward: args.ip_forward,
        dns_upstream: berth_daemon::dns::Upstream::parse(&args.dns_upstream)?,
        registries: RegistryOptions {
            insecure: args.insecure_registries,
            certs_dir: args.registry_certs_dir,
            mirrors: args.registry_mirrors,
            blocked: args.blocked_registries,
        },
        netns_pool: args.netns_pool,
    };
    let daemon = Daemon::open(config).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("berthd")
        .build()
        .map_err(|e| format!("start the async runtime: {e}"))?;
    rt.block_on(async move {
        berth_daemon::containers::lifecycle::reconcile(&daemon);
        daemon
            .netns_pool
            .refill(daemon.networks.default_warmer());
        berth_daemon::dns::serve_networks(&daemon).await;
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket)
            .map_err(|e| format!("listen on {}: {e}", socket.display()))?;
        let gid = match &args.group {
            Some(g) => Some(group_id(g).ok_or_else(|| format!("group {g:?} does not exist"))?),
            None => group_id("berth"),
        };
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&socket, Some(0), Some(gid))
                .map_err(|e| format!("chown {}: {e}", socket.display()))?;
        }
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| format!("chmod {}: {e}", socket.display()))?;
        tracing::info!(
            "berthd {} listening on unix://{} (root {}, storage {})",
            env!("CARGO_PKG_VERSION"),
            socket.display(),
            daemon.config.root.display(),
            daemon.config.storage_driver
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| e.to_string())?;
        tokio::select! {
            r = berth_daemon::api::serve(daemon.clone(), listener) => r.map_err(|e| format!("serve: {e}"))?,
            _ = term.recv() => tracing::info!("SIGTERM: stopping; containers keep running"),
            _ = int.recv() => tracing::info!("SIGINT: stopping; containers keep running"),
        }
        let _ = std::fs::remove_file(&socket);
        daemon.netns_pool.drain();
        Ok::<(), String>(())
    })
}
