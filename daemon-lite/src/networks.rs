//! Networks as the daemon keeps them: the predefined `none`, `host` and `bridge` (the default
//! network, its Linux bridge made on first use) and user-defined bridge and macvlan networks,
//! backed by berth-network's drivers and IPAM. A record per network under
//! `<root>/networks`; a container's endpoints live in its own record.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_network::ipam::{Ipam, SubnetRequest};
use berth_network::{
    Bridge, Endpoint, EndpointRequest, Macvlan, Network, NetworkDriver, NetworkSpec, Prepared,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::error::{ApiError, ApiResult};
use crate::api::fields::Fields;
use crate::records;
use berth_network::nat::Nat;

/// One network.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    /// `bridge`, `macvlan`, `null` or `host`.
    pub driver: String,
    pub created: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub enable_ipv6: bool,
    /// The IPAM configuration asked for, as the API gave it.
    #[serde(default)]
    pub ipam_config: Vec<Value>,
    /// What the driver made (none yet for the default bridge before its first container).
    #[serde(default)]
    pub made: Option<Network>,
    #[serde(default)]
    pub predefined: bool,
}

/// A container's place on a network, kept in the container's record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network_id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `--ip`/`--ip6` asked for.
    #[serde(default)]
    pub static_ips: Vec<IpAddr>,
    /// Set while the container runs.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
}

/// Readies network namespaces for one bridge network ahead of the containers that will take
/// them (a veth on the bridge with the datapath's programs: see `netns::Pool`).
#[derive(Clone)]
pub struct Warmer {
    bridge: Arc<Bridge>,
    network: Network,
}

impl Warmer {
    pub fn network_id(&self) -> &str {
        &self.network.id
    }

    pub fn prepare(&self, netns: BorrowedFd<'_>, key: &str) -> berth_network::Result<Prepared> {
        self.bridge
            .prepare(&self.network, netns, key)?
            .ok_or_else(|| berth_network::Error::Invalid("nothing to prepare".into()))
    }

    /// Lets go of a prepared namespace that is going away unused.
    pub fn discard(&self, prepared: Prepared) {
        self.bridge.discard(prepared)
    }
}

pub struct Networks {
    dir: PathBuf,
    records: Mutex<BTreeMap<String, NetworkRecord>>,
    bridge: Arc<Bridge>,
    macvlan: Macvlan,
    /// The default network's bridge (Docker's docker0; `--bridge`).
    bridge_name: String,
    /// Why the BPF datapath is off, if it is.
    pub datapath_warning: Option<String>,
    /// Outbound NAT (bridge networks' subnets masqueraded), when nftables works here.
    nat: Option<Arc<Nat>>,
}

fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

impl Networks {
    pub fn open(
        dir: &Path,
        bridge_name: &str,
        nat: Option<Arc<Nat>>,
        datapath_pins: &Path,
    ) -> std::io::Result<Networks> {
        fs::create_dir_all(dir.join("ipam")).map_err(|e| records::at(e, "mkdir", dir))?;
        let ipam = Arc::new(
            Ipam::open(&dir.join("ipam")).map_err(|e| std::io::Error::other(e.to_string()))?,
        );
        // The datapath keeps networks apart (Docker's isolation) and skips the bridge between
        // containers of one network; without BPF, plain bridging still works. Pinned on a
        // bpffs, it outlives berthd (and is adopted by the next one); elsewhere it does not.
        let pinnable =
            fs::create_dir_all(datapath_pins).is_ok() && berth_bpf::ports::is_bpffs(datapath_pins);
        let loaded = if pinnable {
            berth_bpf::Datapath::load_pinned(datapath_pins)
        } else {
            berth_bpf::Datapath::load()
        };
        let (bridge, datapath_warning) = match loaded {
            Ok(dp) => (
                Bridge::with_datapath(ipam.clone(), Arc::new(Mutex::new(dp))),
                None,
            ),
            Err(e) => {
                let w = format!(
                    "the BPF datapath is off ({e}): networks are not isolated from each other"
                );
                tracing::warn!("{w}");
                (Bridge::new(ipam.clone()), Some(w))
            }
        };
        let mut map = BTreeMap::new();
        for entry in fs::read_dir(dir)
            .map_err(|e| records::at(e, "read", dir))?
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                match records::read_json::<NetworkRecord>(&path) {
                    Ok(r) => {
                        map.insert(r.id.clone(), r);
                    }
                    Err(e) => tracing::error!("skipping network record: {e}"),
                }
            }
        }
        let networks = Networks {
            dir: dir.to_path_buf(),
            records: Mutex::new(map),
            bridge: Arc::new(bridge),
            macvlan: Macvlan::new(ipam),
            bridge_name: bridge_name.to_string(),
            datapath_warning,
            nat,
        };
        for r in networks.list() {
            // A reboot takes the bridges: make them again as they were.
            if let (true, Some(m)) = (r.driver == "bridge", &r.made) {
                match networks.bridge.restore(m) {
                    Ok(true) => tracing::info!("network {}: bridge made again", r.name),
                    Ok(false) => {}
                    Err(e) => tracing::warn!("network {}: bridge: {e}", r.name),
                }
            }
            // The table's elements outlive berthd; put back any a lost table misses.
            networks.masquerade(&r, true);
        }
        for (name, driver) in [("none", "null"), ("host", "host"), ("bridge", "bridge")] {
            if networks.find(name).is_none() {
                let mut options = BTreeMap::new();
                if name == "bridge" {
                    options.insert(
                        berth_network::BRIDGE_NAME_OPTION.to_string(),
                        bridge_name.to_string(),
                    );
                }
                networks.save(NetworkRecord {
                    id: crate::names::new_id()?,
                    name: name.into(),
                    driver: driver.into(),
                    created: now(),
                    labels: BTreeMap::new(),
                    options,
                    internal: false,
                    enable_ipv6: false,
                    ipam_config: Vec::new(),
                    made: None,
                    predefined: true,
                })?;
            }
        }
        Ok(networks)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, NetworkRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, r: NetworkRecord) -> std::io::Result<()> {
        records::write_json(&self.dir.join(format!("{}.json", r.id)), &r)?;
        self.lock().insert(r.id.clone(), r);
        Ok(())
    }

    pub fn list(&self) -> Vec<NetworkRecord> {
        self.lock().values().cloned().collect()
    }

    /// By name, full id or unique id prefix.
    pub fn find(&self, key: &str) -> Option<NetworkRecord> {
        let records = self.lock();
        if let Some(r) = records.get(key) {
            return Some(r.clone());
        }
        if let Some(r) = records.values().find(|r| r.name == key) {
            return Some(r.clone());
        }
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let mut found = records.values().filter(|r| r.id.starts_with(key));
        match (found.next(), found.next()) {
            (Some(one), None) => Some(one.clone()),
            _ => None,
        }
    }

    fn driver(&self, name: &str) -> Option<&dyn NetworkDriver> {
        match name {
            "bridge" => Some(self.bridge.as_ref()),
            "macvlan" => Some(&self.macvlan),
            "null" => Some(&berth_network::NoneDriver),
            "host" => Some(&berth_network::HostDriver),
            _ => None,
        }
    }

    /// `POST /networks/create`.
    pub fn create(&self, body: &Value) -> ApiResult<NetworkRecord> {
        let name = body
            .opt_str("Name")
            .ok_or_else(|| ApiError::bad_request("a network needs a name"))?;
        crate::names::check_name(name).map_err(|_| {
            ApiError::bad_request(format!(
                "invalid network name {name:?}: [a-zA-Z0-9][a-zA-Z0-9_.-]+"
            ))
        })?;
        if let Some(other) = self.find(name).filter(|r| r.name == name) {
            return Err(ApiError::conflict(format!(
                "network with name {name} already exists ({})",
                other.id
            )));
        }
        let driver = body.opt_str("Driver").unwrap_or("bridge");
        if !matches!(driver, "bridge" | "macvlan") {
            return Err(ApiError::not_found(format!(
                "plugin \"{driver}\" not found"
            )));
        }
        let mut subnets = Vec::new();
        let ipam_config: Vec<Value> = body["IPAM"]
            .objects("Config")
            .into_iter()
            .cloned()
            .collect();
        for c in &ipam_config {
            let parse_net = |k: &str| -> ApiResult<Option<ipnet::IpNet>> {
                c.opt_str(k)
                    .map(|s| {
                        s.parse()
                            .map_err(|_| ApiError::bad_request(format!("invalid {k} {s:?}")))
                    })
                    .transpose()
            };
            let gateway = c
                .opt_str("Gateway")
                .map(|s| {
                    s.parse::<IpAddr>()
                        .map_err(|_| ApiError::bad_request(format!("invalid gateway {s:?}")))
                })
                .transpose()?;
            let subnet = parse_net("Subnet")?;
            subnets.push(SubnetRequest {
                ipv6: subnet.is_some_and(|s| matches!(s, ipnet::IpNet::V6(_))),
                subnet,
                gateway,
                ip_range: parse_net("IPRange")?,
            });
        }
        let enable_ipv6 = body.bool("EnableIPv6");
        if enable_ipv6 && !subnets.iter().any(|s| s.ipv6) {
            if subnets.is_empty() {
                subnets.push(SubnetRequest::default());
            }
            subnets.push(SubnetRequest {
                ipv6: true,
                ..Default::default()
            });
        }
        let options: BTreeMap<String, String> = body.map("Options").into_iter().collect();
        let id = crate::names::new_id()?;
        let spec = NetworkSpec {
            id: id.clone(),
            name: name.to_string(),
            options: options.clone(),
            subnets,
        };
        let made = self
            .driver(driver)
            .ok_or_else(|| ApiError::not_found(format!("plugin \"{driver}\" not found")))?
            .create(&spec)
            .map_err(|e| ApiError::bad_request(format!("create network {name}: {e}")))?;
        let record = NetworkRecord {
            id,
            name: name.to_string(),
            driver: driver.to_string(),
            created: now(),
            labels: body.map("Labels").into_iter().collect(),
            options,
            internal: body.bool("Internal"),
            enable_ipv6,
            ipam_config,
            made: Some(made),
            predefined: false,
        };
        if let Err(e) = self.save(record.clone()) {
            if let (Some(d), Some(m)) = (self.driver(driver), &record.made) {
                let _ = d.delete(m);
            }
            return Err(e.into());
        }
        self.masquerade(&record, true);
        Ok(record)
    }

    /// Masquerades (or stops masquerading) what a bridge network's IPv4 subnets send out;
    /// internal networks have no way out.
    fn masquerade(&self, r: &NetworkRecord, on: bool) {
        let (Some(nat), Some(made)) = (&self.nat, &r.made) else {
            return;
        };
        if r.driver != "bridge" || r.internal {
            return;
        }
        for s in &made.subnets {
            if let ipnet::IpNet::V4(v4) = s.subnet {
                let done = if on {
                    nat.add_subnet(v4)
                } else {
                    nat.remove_subnet(v4)
                };
                if let Err(e) = done {
                    tracing::warn!("network {}: outbound NAT for {v4}: {e}", r.name);
                }
            }
        }
    }

    /// Removes a user-defined network (the caller checked no container is on it).
    pub fn remove(&self, r: &NetworkRecord) -> ApiResult<()> {
        if r.predefined {
            return Err(ApiError::new(
                hyper::StatusCode::FORBIDDEN,
                format!("{} is a pre-defined network and cannot be removed", r.name),
            ));
        }
        self.masquerade(r, false);
        if let (Some(d), Some(m)) = (self.driver(&r.driver), &r.made) {
            d.delete(m)
                .map_err(|e| ApiError::internal(format!("remove network {}: {e}", r.name)))?;
        }
        let path = self.dir.join(format!("{}.json", r.id));
        fs::remove_file(&path).map_err(|e| records::at(e, "remove", &path))?;
        self.lock().remove(&r.id);
        Ok(())
    }

    /// The driver's network, made now for the default bridge's first container.
    fn made(&self, id: &str) -> ApiResult<(NetworkRecord, Network)> {
        let r = self
            .find(id)
            .ok_or_else(|| ApiError::not_found(format!("network {id} not found")))?;
        if let Some(m) = &r.made {
            return Ok((r.clone(), m.clone()));
        }
        let spec = NetworkSpec {
            id: r.id.clone(),
            name: r.name.clone(),
            options: r.options.clone(),
            subnets: Vec::new(),
        };
        let driver = self.driver(&r.driver).ok_or_else(|| {
            ApiError::internal(format!("network {}: no driver {}", r.name, r.driver))
        })?;
        let made = driver.create(&spec).map_err(|e| match e {
            // berthd never takes over a link it did not make: say how to go on.
            berth_network::Error::Exists(_) => ApiError::conflict(format!(
                "the default network's bridge {0} exists already (left by another berthd, or not berth's): remove it (ip link delete {0}) or start berthd with --bridge NAME",
                self.bridge_name
            )),
            e => ApiError::internal(format!(
                "create network {} ({}): {e}",
                r.name, self.bridge_name
            )),
        })?;
        let mut updated = r.clone();
        updated.made = Some(made.clone());
        self.save(updated.clone())?;
        self.masquerade(&updated, true);
        Ok((updated, made))
    }

    /// Connects the container whose namespace is `netns` as `ifname`; in a namespace a
    /// [`Warmer`] readied for this network, with what it `prepared` there.
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &self,
        network_id: &str,
        endpoint_id: &str,
        netns: BorrowedFd<'_>,
        ifname: &str,
        static_ips: &[IpAddr],
        default_route: bool,
        prepared: Option<Prepared>,
    ) -> ApiResult<Endpoint> {
        let found = self.made(network_id).and_then(|(r, made)| {
            let driver = self.driver(&r.driver).ok_or_else(|| {
                ApiError::internal(format!("network {}: no driver {}", r.name, r.driver))
            })?;
            Ok((r, made, driver))
        });
        let (r, made, driver) = match found {
            Ok(found) => found,
            Err(e) => {
                self.discard(prepared);
                return Err(e);
            }
        };
        let request = EndpointRequest {
            id: endpoint_id,
            netns,
            ifname,
            static_ips,
            default_route: default_route && !r.internal,
        };
        match prepared {
            Some(p) => driver.join_prepared(&made, p, &request),
            None => driver.join(&made, &request),
        }
        .map_err(|e| ApiError::bad_request(format!("join network {}: {e}", r.name)))
    }

    /// Lets go of what was prepared (if anything) in a namespace that goes away unused.
    pub fn discard(&self, prepared: Option<Prepared>) {
        if let Some(p) = prepared {
            self.bridge.discard(p)
        }
    }

    /// What readies namespaces for the default network ahead of its containers, once its
    /// bridge exists (it is made at the first container's start).
    pub fn default_warmer(&self) -> Option<Warmer> {
        let r = self.find("bridge")?;
        let network = r.made.filter(|_| r.driver == "bridge")?;
        Some(Warmer {
            bridge: self.bridge.clone(),
            network,
        })
    }

    /// Disconnects; `netns` when the namespace lives on (connect/disconnect in place).
    pub fn leave(&self, network_id: &str, endpoint: &Endpoint, netns: Option<BorrowedFd<'_>>) {
        let Some(r) = self.find(network_id) else {
            return;
        };
        if let (Some(driver), Some(made)) = (self.driver(&r.driver), &r.made) {
            if let Err(e) = driver.leave(made, endpoint, netns) {
                tracing::warn!("leave network {}: {e}", r.name);
            }
        }
    }
}
