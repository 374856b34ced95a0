//! The daemon's state: its directories, stores and registries, opened once at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use berth_runtime::Runtime;

use crate::containers::Containers;
use crate::events::Events;
use crate::images::ImageStore;
use crate::records;
use crate::volumes::Volumes;

/// Where things live and how the daemon runs (berthd's flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// Persistent state: images, layers, container records and logs, volumes.
    pub root: PathBuf,
    /// Runtime state, gone at reboot: bundles, monitor sockets, the runtime's state root.
    pub exec_root: PathBuf,
    /// The API socket.
    pub socket: PathBuf,
    /// overlay2, erofs, btrfs, vfs (devicemapper needs a mount path the daemon does not take
    /// yet).
    pub storage_driver: String,
    /// The `berth-monitor` binary.
    pub monitor: PathBuf,
    /// The default network's Linux bridge (`--bridge`, Docker's docker0).
    pub bridge_name: String,
    /// Insecure registries, certs.d, Docker Hub mirrors.
    pub registries: crate::registry::client::RegistryOptions,
    /// Network namespaces kept ready for the next starts (`--netns-pool`, 0 = none).
    pub netns_pool: usize,
    /// berth's nftables table (outbound NAT, published ports from outside).
    pub nft_table: String,
    /// Turn IPv4 forwarding on if it is off (`--ip-forward`, dockerd's default too).
    pub ip_forward: bool,
    /// Where the networks' resolver sends names that are not containers.
    pub dns_upstream: crate::dns::Upstream,
    /// The cgroup containers go below, `<parent>/<id>` in every hierarchy (`--cgroup-parent`,
    /// dockerd's `/docker`); a container's `HostConfig.CgroupParent` overrides it.
    pub cgroup_parent: String,
    /// berth's directory on a bpffs (a bpffs is mounted on its parent if there is none): the
    /// datapath's and the published ports' programs, links and maps, which outlive berthd.
    pub bpf_pin_dir: PathBuf,
}

impl Config {
    pub const DEFAULT_ROOT: &'static str = "/var/lib/berth";
    pub const DEFAULT_EXEC_ROOT: &'static str = "/run/berth";
    pub const DEFAULT_SOCKET: &'static str = "/run/berth/berth.sock";
    pub const DEFAULT_BPF_PIN_DIR: &'static str = "/sys/fs/bpf/berth";
    pub const DEFAULT_NFT_TABLE: &'static str = "berth";
    pub const DEFAULT_CGROUP_PARENT: &'static str = "/berth";

    pub fn runtime_root(&self) -> PathBuf {
        self.exec_root.join("runtime")
    }

    /// A container's bundle and monitor files.
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.exec_root.join("containers").join(id)
    }

    /// A running container's monitor socket; short, as socket paths must fit in 108 bytes.
    pub fn monitor_socket(&self, id: &str) -> PathBuf {
        self.exec_root.join("m").join(crate::names::short(id))
    }
}

/// Turns IPv4 forwarding on where it is off (`--ip-forward`, on by default as dockerd's).
/// Returns whether berth is the one that turned it on in this boot (a marker in the exec root
/// holding the boot id, written before the setting so a crash between the two cannot leave
/// forwarding on unguarded): then its table forwards container traffic only.
fn ip_forward(config: &Config) -> bool {
    let marker = config.exec_root.join("ip-forward-enabled");
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().to_string())
        .unwrap_or_default();
    match berth_network::nat::ip_forward() {
        Ok(true) => {
            !boot.is_empty() && std::fs::read_to_string(&marker).is_ok_and(|m| m.trim() == boot)
        }
        Ok(false) => {
            if let Err(e) = std::fs::create_dir_all(&config.exec_root)
                .and_then(|()| std::fs::write(&marker, &boot))
            {
                tracing::warn!("{}: {e}; IPv4 forwarding left off", marker.display());
                return false;
            }
            match berth_network::nat::enable_ip_forward() {
                Ok(()) => {
                    tracing::info!(
                        "IPv4 forwarding was off: turned on (net.ipv4.ip_forward=1); forwarded \
                         traffic neither from nor to a container network is dropped (nftables \
                         table {})",
                        config.nft_table
                    );
                    true
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&marker);
                    tracing::warn!("{e}: containers on bridge networks cannot reach out");
                    false
                }
            }
        }
        Err(e) => {
            tracing::warn!("{e}: containers on bridge networks may not reach out");
            false
        }
    }
}

/// The storage driver a daemon uses when none is configured: overlay2 where the root's
/// filesystem can hold an overlay upper directory, vfs elsewhere.
pub fn default_storage_driver(root: &Path) -> String {
    let probe = root.join("storage").join("overlay2");
    if probe.exists() || berth_storage::Overlay::open(&probe).is_ok() {
        "overlay2".into()
    } else {
        "vfs".into()
    }
}

pub struct Daemon {
    pub config: Config,
    pub images: ImageStore,
    pub volumes: Volumes,
    pub containers: Containers,
    pub events: Events,
    pub execs: crate::execs::Execs,
    pub networks: crate::networks::Networks,
    pub ports: crate::ports::Ports,
    pub dns: crate::dns::Resolver,
    pub netns_pool: Arc<crate::netns::Pool>,
    pub runtime: Runtime,
    pub started: Instant,
    pub id: String,
}

/// The pool namespaces containers hold (their bundles link to them), kept at a restart.
fn namespaces_in_use(config: &Config) -> std::collections::HashSet<PathBuf> {
    std::fs::read_dir(config.exec_root.join("containers"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path().join("netns")).ok())
        .collect()
}

impl Daemon {
    pub fn open(config: Config) -> std::io::Result<Arc<Daemon>> {
        for dir in [
            config.root.clone(),
            config.exec_root.clone(),
            config.exec_root.join("containers"),
            config.exec_root.join("m"),
            config.runtime_root(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| records::at(e, "mkdir", &dir))?;
        }
        let storage_root = config.root.join("storage").join(&config.storage_driver);
        std::fs::create_dir_all(&storage_root)
            .map_err(|e| records::at(e, "mkdir", &storage_root))?;
        let snapshotter =
            berth_storage::open(&config.storage_driver, &storage_root).map_err(|e| {
                std::io::Error::other(format!("storage driver {}: {e}", config.storage_driver))
            })?;
        let snapshotter: Arc<dyn berth_storage::Snapshotter> = Arc::from(snapshotter);
        let id_path = config.root.join("engine-id");
        let id = match std::fs::read_to_string(&id_path) {
            Ok(id) => id.trim().to_string(),
            Err(_) => {
                let id = crate::names::new_id()?;
                records::write_atomic(&id_path, id.as_bytes())?;
                id
            }
        };
        let bpffs = config
            .bpf_pin_dir
            .parent()
            .unwrap_or(&config.bpf_pin_dir)
            .to_path_buf();
        if let Err(e) = berth_bpf::ports::ensure_bpffs(&bpffs) {
            tracing::warn!("{e}: the datapath and published ports will not outlive berthd");
        }
        let guard_forwarding = config.ip_forward && ip_forward(&config);
        let nat = match berth_network::nat::Nat::new(&config.nft_table).and_then(|n| {
            n.install(guard_forwarding)?;
            Ok(n)
        }) {
            Ok(n) => Some(Arc::new(n)),
            Err(e) => {
                tracing::warn!(
                    "no outbound NAT and no published ports from outside this host: {e}"
                );
                None
            }
        };
        Ok(Arc::new(Daemon {
            images: ImageStore::open(&config.root.join("images"), snapshotter)?,
            volumes: Volumes::open(&config.root.join("volumes"))?,
            containers: Containers::open(&config.root.join("containers"))?,
            events: Events::default(),
            execs: Default::default(),
            networks: crate::networks::Networks::open(
                &config.root.join("networks"),
                &config.bridge_name,
                nat.clone(),
                &config.bpf_pin_dir.join("datapath"),
            )?,
            ports: crate::ports::Ports::open(
                &config.bpf_pin_dir.join("ports"),
                nat,
                &config.exec_root.join("cgroup2"),
            ),
            dns: crate::dns::Resolver::new(config.dns_upstream.clone()),
            netns_pool: Arc::new(crate::netns::Pool::open(
                &config.exec_root.join("netns"),
                config.netns_pool,
                &namespaces_in_use(&config),
            )?),
            runtime: Runtime::new(config.runtime_root()),
            started: Instant::now(),
            id,
            config,
        }))
    }
}
