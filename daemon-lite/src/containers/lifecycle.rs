//! The container verbs: create, start (through a monitor process), stop, kill, restart,
//! remove, wait, and what happens when a container exits (restart policies, `--rm`). Also the
//! reconciliation at daemon start: containers whose monitors outlived the old daemon are
//! watched again, those that exited meanwhile are finished, and leftovers are cleaned.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::StatusCode;
use serde_json::{Value, json};

use super::spec::{self, Invalid};
use super::{Handle, InsertError, MonitorProcess, Record, State, Status};
use crate::api::error::{ApiError, ApiResult};
use crate::api::fields::Fields;
use crate::daemon::Daemon;
use crate::json_log::Rotation;
use crate::monitor::{self, Exit, Report};
use crate::networks::Attachment;
use crate::{names, netns, records};

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> ApiError {
        ApiError::bad_request(e.0)
    }
}

fn now() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

/// Attributes of a container's events: its name, image and labels.
pub fn event_attributes(record: &Record) -> BTreeMap<String, String> {
    let mut a: BTreeMap<String, String> = record.config.map("Labels").into_iter().collect();
    a.insert("name".into(), record.name.clone());
    a.insert("image".into(), record.image.clone());
    a
}

fn publish(d: &Daemon, h: &Handle, action: &str, extra: &[(&str, String)]) {
    let mut attrs = event_attributes(&h.record());
    for (k, v) in extra {
        attrs.insert((*k).into(), v.clone());
    }
    d.events.publish("container", action, &h.id, attrs);
}

/// The networks a new container joins: its `NetworkMode` (`default` is the `bridge`
/// network; `none` and `host` join none) and `NetworkingConfig.EndpointsConfig` (aliases,
/// static addresses), keyed by network name.
fn attachments(
    d: &Daemon,
    host_config: &Value,
    networking: &Value,
) -> ApiResult<BTreeMap<String, Attachment>> {
    let mode = host_config.opt_str("NetworkMode").unwrap_or("default");
    if mode.starts_with("container:") {
        return Err(ApiError::bad_request(format!(
            "network mode {mode:?} is not supported by berthd yet"
        )));
    }
    let mut out = BTreeMap::new();
    let mut add = |name: &str, config: &Value| -> ApiResult<()> {
        let r = d
            .networks
            .find(name)
            .ok_or_else(|| ApiError::not_found(format!("network {name} not found")))?;
        if matches!(r.driver.as_str(), "null" | "host") {
            return Ok(());
        }
        let mut static_ips: Vec<std::net::IpAddr> = Vec::new();
        for key in ["IPv4Address", "IPv6Address"] {
            if let Some(ip) = config["IPAMConfig"].opt_str(key) {
                static_ips.push(
                    ip.parse()
                        .map_err(|_| ApiError::bad_request(format!("invalid address {ip:?}")))?,
                );
            }
        }
        let entry = out.entry(r.name.clone()).or_insert_with(|| Attachment {
            network_id: r.id.clone(),
            ..Default::default()
        });
        entry.aliases.extend(config.list("Aliases"));
        entry.static_ips.extend(static_ips);
        Ok(())
    };
    let primary = if mode == "default" { "bridge" } else { mode };
    let endpoints = networking["EndpointsConfig"].map_values_owned();
    let primary_config = endpoints
        .iter()
        .find(|(n, _)| n == primary || (mode == "default" && n == "default"))
        .map(|(_, c)| c.clone())
        .unwrap_or(Value::Null);
    add(primary, &primary_config)?;
    for (name, config) in &endpoints {
        if name != primary && !(mode == "default" && name == "default") {
            add(name, config)?;
        }
    }
    Ok(out)
}

/// json-file (the default) or none; rotation from `max-size` and `max-file`.
fn log_settings(host_config: &Value) -> ApiResult<Option<Rotation>> {
    let log = &host_config["LogConfig"];
    match log.opt_str("Type").unwrap_or("json-file") {
        "json-file" | "local" => {}
        "none" => return Ok(None),
        other => {
            return Err(ApiError::bad_request(format!(
                "failed to create logger: logger: no log driver named '{other}' is registered"
            )));
        }
    }
    let opts: BTreeMap<String, String> = log.map("Config").into_iter().collect();
    let max_size = match opts.get("max-size") {
        Some(s) => {
            parse_size(s).ok_or_else(|| ApiError::bad_request(format!("invalid max-size {s:?}")))?
        }
        None => 0,
    };
    let max_files = match opts.get("max-file") {
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| ApiError::bad_request(format!("invalid max-file {s:?}")))?,
        None => 1,
    };
    Ok(Some(Rotation {
        max_size,
        max_files,
    }))
}

/// `10m`, `1g`, `512k`, `100` (bytes), as Docker's units.RAMInBytes reads them.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (digits, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: f64 = digits.trim().parse().ok()?;
    (n >= 0.0).then_some((n * mult as f64) as u64)
}

/// `create`: checks everything that can be checked before start, then records the container
/// and prepares its writable layer.
pub async fn create(d: &Arc<Daemon>, name: Option<&str>, mut body: Value) -> ApiResult<String> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let mut host_config = body["HostConfig"].take();
    if !host_config.is_object() {
        host_config = json!({});
    }
    let networking = body["NetworkingConfig"].take();
    if let Some(obj) = body.as_object_mut() {
        obj.remove("HostConfig");
        obj.remove("NetworkingConfig");
    }
    let config = body;
    let image_name = config
        .opt_str("Image")
        .ok_or_else(|| ApiError::bad_request("no image given (Config.Image is empty)"))?
        .to_string();
    let image = d
        .images
        .resolve(&image_name)
        .ok_or_else(|| ApiError::no_such_image(&image_name))?;
    let id = names::new_id()?;
    let chosen = match name.filter(|n| !n.is_empty()) {
        Some(n) => Some(
            names::check_name(n)
                .map_err(ApiError::bad_request)?
                .to_string(),
        ),
        None => None,
    };
    if let Some(n) = &chosen {
        if let Some(other) = d.containers.find(n).filter(|h| h.name() == *n) {
            return Err(ApiError::conflict(format!(
                "Conflict. The container name \"/{n}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                other.id
            )));
        }
    }
    let networks = attachments(d, &host_config, &networking)?;
    let ports = crate::ports::requests(&config, &host_config).map_err(ApiError::bad_request)?;
    if !ports.is_empty() {
        if let Some(why) = &d.ports.unavailable {
            return Err(ApiError::bad_request(format!(
                "cannot publish ports: {why}"
            )));
        }
    }
    spec::validate(image.runtime_config(), &config, &host_config)?;
    let rotation = log_settings(&host_config)?;
    let restart = &host_config["RestartPolicy"];
    let policy = restart.opt_str("Name").unwrap_or("no");
    if !matches!(policy, "no" | "always" | "unless-stopped" | "on-failure") {
        return Err(ApiError::bad_request(format!(
            "invalid restart policy '{policy}'"
        )));
    }
    if host_config.bool("AutoRemove") && policy != "no" {
        return Err(ApiError::conflict(
            "Conflicting options: cannot specify both --restart and --rm",
        ));
    }

    let snapshot = format!("container-{id}");
    let parent = image.top_layer().map(str::to_string);
    let mut record = Record {
        id: id.clone(),
        name: chosen.clone().unwrap_or_else(|| names::generated(&id, 0)),
        created: now(),
        image: image_name,
        image_id: image.id.clone(),
        config,
        host_config,
        snapshot: snapshot.clone(),
        log_path: rotation.map(|_| {
            d.config
                .root
                .join("containers")
                .join(&id)
                .join(format!("{id}-json.log"))
        }),
        state: State::default(),
        restart_count: 0,
        mount_points: Vec::new(),
        manually_stopped: false,
        networks,
        published: Vec::new(),
    };
    let snapshotter = d.images.snapshotter.clone();
    let key = snapshot.clone();
    tokio::task::spawn_blocking(move || {
        snapshotter.prepare(&key, parent.as_deref(), Default::default())
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    // A generated name that is taken (by another container, or by a concurrent create) gets
    // a number; a name the client chose is a conflict.
    let mut attempt = 0;
    let handle = loop {
        let wanted = record.name.clone();
        match d.containers.insert(record.clone()) {
            Ok(h) => break h,
            Err(InsertError::NameInUse(_)) if chosen.is_none() && attempt < 1000 => {
                attempt += 1;
                record.name = names::generated(&id, attempt);
            }
            Err(e) => {
                let _ = d.images.snapshotter.remove(&snapshot);
                return Err(match e {
                    InsertError::NameInUse(other) => ApiError::conflict(format!(
                        "Conflict. The container name \"/{wanted}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
                    )),
                    InsertError::Io(e) => e.into(),
                });
            }
        }
    };
    publish(d, &handle, "create", &[]);
    Ok(id)
}

/// What spawning a monitor gave.
struct Spawned {
    monitor: MonitorProcess,
    report: Report,
    mount_points: Vec<Value>,
    /// The container's networks with their endpoints (joined at this start).
    networks: BTreeMap<String, Attachment>,
    published: Vec<crate::ports::Published>,
}

/// `start`. Returns false when the container was already running (Docker's 304).
pub async fn start(d: &Arc<Daemon>, h: &Arc<Handle>) -> ApiResult<bool> {
    let op = h.op.lock().await;
    let result = start_locked(d, h).await;
    drop(op);
    if result.is_err() && h.record().host_config.bool("AutoRemove") {
        // As dockerd: a `--rm` container that could not start is removed (which also ends a
        // `wait condition=removed`).
        if let Err(e) = remove(d, h, true, true).await {
            tracing::error!(
                "container {}: --rm after a failed start: {}",
                h.id,
                e.message
            );
        }
    }
    result
}

async fn start_locked(d: &Arc<Daemon>, h: &Arc<Handle>) -> ApiResult<bool> {
    match h.status() {
        Status::Running | Status::Paused => return Ok(false),
        Status::Removing | Status::Dead => {
            return Err(ApiError::conflict(format!(
                "container {} is marked for removal and cannot be started",
                h.id
            )));
        }
        _ => {}
    }
    let record = h.snapshot();
    let attached = h.take_pending_attach();
    let d2 = d.clone();
    let spawned = tokio::task::spawn_blocking(move || spawn(&d2, &record, attached))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    match spawned.report {
        Report::Running { pid } => {
            h.update(|r| {
                r.state.status = Status::Running;
                r.state.pid = pid;
                r.state.started_at = now();
                r.state.error.clear();
                r.state.oom_killed = false;
                r.state.monitor = Some(spawned.monitor);
                r.mount_points = spawned.mount_points;
                r.networks = spawned.networks;
                r.published = spawned.published;
                r.manually_stopped = false;
            })?;
            h.notify(|l| l.running = true);
            publish(d, h, "start", &[]);
            spawn_watch(d.clone(), h.clone(), spawned.monitor);
            Ok(true)
        }
        Report::Failed(text) => {
            // The monitor exits on its own after a failed start: reap it, then clean up.
            let d2 = d.clone();
            let id = h.id.clone();
            let pid = spawned.monitor.pid;
            let joined = spawned.networks;
            tokio::task::spawn_blocking(move || {
                berth_runtime::wait::reap(pid);
                release_resources(&d2, &id, &joined)
            })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
            // Docker's wording (the CLI reads it to choose its exit code), not Rust's.
            let text = text
                .replace("Permission denied (os error 13)", "permission denied")
                .replace(
                    "No such file or directory (os error 2)",
                    "no such file or directory",
                );
            let code = start_failure_code(&text);
            let message = format!(
                "failed to create task for container: OCI runtime create failed: {text}: unknown"
            );
            h.update(|r| {
                r.state.exit_code = code;
                r.state.error = message.clone();
                r.state.monitor = None;
            })?;
            Err(ApiError::bad_request(message))
        }
    }
}

/// The exit code Docker gives a container whose process could not be started (the CLI reads
/// the same phrases).
fn start_failure_code(text: &str) -> i32 {
    let lower = text.to_ascii_lowercase();
    if lower.contains("executable file not found") || lower.contains("no such file or directory") {
        127
    } else if lower.contains("permission denied") || lower.contains("exec format error") {
        126
    } else {
        128
    }
}

/// Everything a start does outside the async runtime: mount the rootfs, make the network
/// namespace and the name files, write the spec, spawn the monitor and read its report.
fn spawn(d: &Daemon, record: &Record, attached: Vec<OwnedFd>) -> ApiResult<Spawned> {
    let bundle = d.config.bundle_dir(&record.id);
    let result = spawn_in(d, record, &bundle, attached);
    // After a failed report the caller cleans up once the monitor is reaped.
    if result.is_err() {
        release_resources(d, &record.id, &BTreeMap::new());
    }
    result
}

fn spawn_in(
    d: &Daemon,
    record: &Record,
    bundle: &Path,
    attached: Vec<OwnedFd>,
) -> ApiResult<Spawned> {
    let mut phases = Phases::new();
    let image = d
        .images
        .resolve(&record.image_id)
        .ok_or_else(|| ApiError::no_such_image(&record.image_id))?;
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| records::at(e, "mkdir", &rootfs))?;
    let _ = berth_storage::mount::unmount(&rootfs);
    let mounts = d.images.snapshotter.mounts(&record.snapshot)?;
    berth_storage::mount::mount(&mounts, &rootfs)?;

    phases.mark("rootfs");
    let hostname = spec::hostname(&record.id, &record.config);
    let host_network = record.host_config.opt_str("NetworkMode") == Some("host");
    let netns_path = bundle.join("netns");
    let order = if host_network {
        Vec::new()
    } else {
        network_order(record)
    };
    let mut prepared = None;
    if !host_network {
        netns::remove(&netns_path);
        let primary = order
            .first()
            .and_then(|name| record.networks.get(name))
            .map(|a| a.network_id.as_str());
        match d.netns_pool.take(primary) {
            Some(taken) => {
                if let Err(e) = std::os::unix::fs::symlink(&taken.path, &netns_path) {
                    d.networks.discard(taken.prepared);
                    netns::remove(&taken.path);
                    return Err(records::at(e, "link", &netns_path).into());
                }
                prepared = taken.prepared;
            }
            None => {
                netns::create(&netns_path)?;
                netns::loopback_up(&netns_path)
                    .map_err(|e| ApiError::internal(format!("container {}: {e}", record.id)))?;
            }
        }
    }
    let networks = join_networks(d, record, &netns_path, &order, prepared);
    if !host_network {
        // After the join: the default network's bridge exists from its first container on.
        d.netns_pool.refill(d.networks.default_warmer());
    }
    let networks = networks?;
    let published = publish_ports(d, record, &networks, host_network).inspect_err(|_| {
        leave_networks(d, &networks);
    })?;
    phases.mark("netns");
    let etc_hostname = if host_network {
        crate::platform::hostname()
    } else {
        hostname.clone()
    };
    let names = berth_network::etc_files::ContainerNames {
        hostname: etc_hostname,
        domainname: record.config.opt_str("Domainname").map(str::to_string),
        addresses: networks
            .values()
            .filter_map(|a| a.endpoint.as_ref())
            .flat_map(|e| e.addresses.iter().map(|(ip, _)| *ip))
            .collect(),
        aliases: networks.values().flat_map(|a| a.aliases.clone()).collect(),
        ..Default::default()
    };
    let mut dns = berth_network::etc_files::DnsSettings {
        nameservers: record
            .host_config
            .list("Dns")
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid DNS server {s:?}")))
            })
            .collect::<ApiResult<_>>()?,
        search: record.host_config.list("DnsSearch"),
        options: record.host_config.list("DnsOptions"),
    };
    // On a user-defined network the network's resolver answers (container names first), as
    // Docker's 127.0.0.11 does; `--dns` servers given by hand are used as they are.
    if dns.nameservers.is_empty() && !host_network {
        if let Some(gateway) = resolver_of(d, record, &networks) {
            dns.nameservers = vec![gateway];
            if dns.options.is_empty() {
                dns.options = vec!["ndots:0".into()];
            }
        }
    }
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    berth_network::etc_files::write(bundle, &names, &host_resolv, &dns)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;

    phases.mark("name files");
    let mut volume = |name: Option<&str>| -> std::io::Result<(String, PathBuf)> {
        let v = d.volumes.get_or_create(name, BTreeMap::new())?;
        Ok((v.name.clone(), d.volumes.data_dir(&v.name)))
    };
    let (mounts, mount_points) = spec::user_mounts(
        &record.host_config,
        &record.config,
        image.runtime_config(),
        &mut volume,
        true,
    )?;
    let mut oci = spec::build(&spec::Inputs {
        id: &record.id,
        image: image.runtime_config(),
        config: &record.config,
        host_config: &record.host_config,
        rootfs: &rootfs,
        etc_dir: bundle,
        mounts,
        cgroup_v2: crate::platform::cgroup_version() == "2",
        cgroup_parent: &d.config.cgroup_parent,
    })?;
    if !host_network {
        if let Some(list) = oci["linux"]["namespaces"].as_array_mut() {
            for ns in list.iter_mut() {
                if ns["type"] == "network" {
                    ns["path"] = json!(netns_path);
                }
            }
        }
    }
    // Runtime state under the exec root (tmpfs, gone at reboot): written, not fsynced.
    write_plain(&bundle.join("config.json"), &oci)?;
    phases.mark("spec");

    let monitor_config = monitor::Config {
        id: record.id.clone(),
        runtime_root: d.config.runtime_root(),
        bundle: bundle.to_path_buf(),
        log_path: record.log_path.clone(),
        log_rotation: log_settings(&record.host_config)?.unwrap_or_default(),
        tty: record.config.bool("Tty"),
        open_stdin: record.config.bool("OpenStdin"),
        stdin_once: record.config.bool("StdinOnce"),
        exec: None,
        console_size: console_size(&record.host_config),
        attached: attached.len() as u32,
    };
    write_plain(&bundle.join(monitor::CONFIG_FILE), &monitor_config)?;
    let _ = std::fs::remove_file(bundle.join(monitor::EXIT_FILE));
    if let Some(log) = &record.log_path {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|e| records::at(e, "mkdir", dir))?;
        }
    }

    let (monitor, report) =
        launch_monitor(d, bundle, &d.config.monitor_socket(&record.id), attached)?;
    phases.mark("monitor and runtime");
    tracing::debug!("container {}: started in {}", record.id, phases);
    Ok(Spawned {
        monitor,
        report,
        mount_points,
        networks,
        published,
    })
}

/// The resolver of the container's first network, when that network has one (a user-defined
/// bridge network: its gateway).
fn resolver_of(
    d: &Daemon,
    record: &Record,
    networks: &BTreeMap<String, Attachment>,
) -> Option<std::net::IpAddr> {
    let mode = record
        .host_config
        .opt_str("NetworkMode")
        .unwrap_or("default");
    let primary = if mode == "default" { "bridge" } else { mode };
    let a = networks.get(primary).or_else(|| networks.values().next())?;
    let network = d.networks.find(&a.network_id)?;
    crate::dns::gateways(&network)
        .into_iter()
        .find(|g| g.is_ipv4())
}

/// The IPv4 address of the container on the network of its `NetworkMode` (its first), where
/// its published ports go.
fn primary_ipv4(
    host_config: &Value,
    networks: &BTreeMap<String, Attachment>,
) -> Option<std::net::Ipv4Addr> {
    let mode = host_config.opt_str("NetworkMode").unwrap_or("default");
    let primary = if mode == "default" { "bridge" } else { mode };
    networks
        .get(primary)
        .or_else(|| networks.values().next())
        .and_then(|a| a.endpoint.as_ref())?
        .addresses
        .iter()
        .find_map(|(ip, _)| match ip {
            std::net::IpAddr::V4(v4) => Some(*v4),
            _ => None,
        })
}

/// Publishes the container's `-p` ports on the address of its first network (none with the
/// host's network, where the container's ports are the host's, as Docker does).
fn publish_ports(
    d: &Daemon,
    record: &Record,
    networks: &BTreeMap<String, Attachment>,
    host_network: bool,
) -> ApiResult<Vec<crate::ports::Published>> {
    let requests = crate::ports::requests(&record.config, &record.host_config)
        .map_err(ApiError::bad_request)?;
    if requests.is_empty() || host_network {
        return Ok(Vec::new());
    }
    let Some(ip) = primary_ipv4(&record.host_config, networks) else {
        // `--network none`: nothing to send the ports to.
        return Ok(Vec::new());
    };
    d.ports
        .publish(&record.id, ip, &requests)
        .map_err(|e| ApiError::internal(format!("container {}: {e}", record.id)))
}

/// The container's networks in the order they are joined: the one of its `NetworkMode` first
/// (it gives the default route).
fn network_order(record: &Record) -> Vec<String> {
    let mode = record
        .host_config
        .opt_str("NetworkMode")
        .unwrap_or("default");
    let primary = if mode == "default" { "bridge" } else { mode };
    let mut order: Vec<String> = record.networks.keys().cloned().collect();
    order.sort_by_key(|n| n != primary);
    order
}

/// Joins the container's networks in `order`, the first in what the pool `prepared` for it,
/// if anything; on an error, what was joined is left again.
fn join_networks(
    d: &Daemon,
    record: &Record,
    netns_path: &Path,
    order: &[String],
    mut prepared: Option<berth_network::Prepared>,
) -> ApiResult<BTreeMap<String, Attachment>> {
    let mut joined = record.networks.clone();
    if order.is_empty() {
        d.networks.discard(prepared);
        return Ok(joined);
    }
    let ns = match netns::open(netns_path) {
        Ok(ns) => ns,
        Err(e) => {
            d.networks.discard(prepared);
            return Err(e.into());
        }
    };
    use std::os::fd::AsFd;
    for (i, name) in order.iter().enumerate() {
        let attachment = joined.get(name).cloned().unwrap_or_default();
        let result = d.networks.join(
            &attachment.network_id,
            &record.id,
            ns.as_fd(),
            &format!("eth{i}"),
            &attachment.static_ips,
            i == 0,
            prepared.take(),
        );
        match result {
            Ok(endpoint) => {
                if let Some(a) = joined.get_mut(name) {
                    a.endpoint = Some(endpoint);
                }
            }
            Err(e) => {
                leave_networks(d, &joined);
                return Err(e);
            }
        }
    }
    Ok(joined)
}

/// Leaves every joined network; the namespace goes away next, taking the links with it.
fn leave_networks(d: &Daemon, networks: &BTreeMap<String, Attachment>) {
    for a in networks.values() {
        if let Some(ep) = &a.endpoint {
            d.networks.leave(&a.network_id, ep, None);
        }
    }
}

/// Where a start spent its time, for the debug log.
struct Phases {
    last: std::time::Instant,
    spent: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            last: std::time::Instant::now(),
            spent: Vec::new(),
        }
    }

    fn mark(&mut self, what: &'static str) {
        let now = std::time::Instant::now();
        self.spent.push((what, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (what, t)) in self.spent.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{what} {:.2} ms", t.as_secs_f64() * 1e3)?;
        }
        Ok(())
    }
}

/// A JSON file for the runtime or the monitor: replaced by rename, without fsync (the exec
/// root is runtime state, gone at reboot; nothing there must survive a power cut).
pub(crate) fn write_plain(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, &bytes).map_err(|e| records::at(e, "write", Path::new(&tmp)))?;
    std::fs::rename(&tmp, path).map_err(|e| records::at(e, "rename", path))
}

/// Spawns a monitor on the state directory `dir` (its `monitor.json` written) listening on
/// `socket`, with `attached` connections, and reads its report.
pub(crate) fn launch_monitor(
    d: &Daemon,
    dir: &Path,
    socket: &Path,
    attached: Vec<OwnedFd>,
) -> ApiResult<(MonitorProcess, Report)> {
    let _ = std::fs::remove_file(socket);
    let listener = std::os::unix::net::UnixListener::bind(socket)
        .map_err(|e| records::at(e, "bind", socket))?;
    let (report_r, report_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(std::io::Error::from)?;
    let stderr = std::fs::File::create(dir.join("monitor.log"))?;
    let mut handed: Vec<OwnedFd> = vec![report_w, OwnedFd::from(listener)];
    handed.extend(attached);
    let child = spawn_monitor(&d.config.monitor, dir, &handed, stderr)?;
    drop(handed);
    let pid = child.id() as i32;
    let start_time = process_start_time(pid).unwrap_or(0);
    let mut text = String::new();
    let _ = std::fs::File::from(report_r).read_to_string(&mut text);
    Ok((MonitorProcess { pid, start_time }, Report::decode(&text)))
}

/// `HostConfig.ConsoleSize` ([height, width]), the tty's size from the first byte on.
pub(crate) fn console_size(host_config: &Value) -> Option<(u16, u16)> {
    let size = host_config.get("ConsoleSize")?.as_array()?;
    let h = u16::try_from(size.first()?.as_u64()?).ok()?;
    let w = u16::try_from(size.get(1)?.as_u64()?).ok()?;
    (h > 0 && w > 0).then_some((h, w))
}

/// Starts `berth-monitor <bundle>` in a session of its own with `fds` at 3, 4, 5 …
fn spawn_monitor(
    program: &Path,
    bundle: &Path,
    fds: &[OwnedFd],
    stderr: std::fs::File,
) -> std::io::Result<std::process::Child> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut cmd = Command::new(program);
    cmd.arg(bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // SAFETY: between fork and exec only async-signal-safe calls (setsid, fcntl, dup2) on
    // descriptor numbers; no allocation (`raw` was made before the fork).
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            // First out of the way (a source may sit on a lower target), then into place.
            let mut high = [0 as RawFd; 64];
            for (i, &fd) in raw.iter().enumerate().take(64) {
                high[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &fd) in high.iter().enumerate().take(raw.len().min(64)) {
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| records::at(e, "spawn", program))
}

/// Start time (clock ticks since boot) of a process, from /proc/PID/stat.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

pub(crate) fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on a pid; ECHILD (not our child: a previous daemon's) is fine.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

/// Unmounts the rootfs, drops the network namespace and the monitor socket of a container
/// that is not running.
fn release_resources(d: &Daemon, id: &str, networks: &BTreeMap<String, Attachment>) {
    d.ports.release(id);
    leave_networks(d, networks);
    let bundle = d.config.bundle_dir(id);
    let rootfs = bundle.join("rootfs");
    while berth_storage::mount::unmount(&rootfs).is_ok() {}
    netns::remove(&bundle.join("netns"));
    let _ = std::fs::remove_file(d.config.monitor_socket(id));
}

/// Takes a running container's host ports again after a daemon restart.
fn restore_ports(d: &Daemon, record: &Record) {
    if record.published.is_empty() {
        return;
    }
    if let Some(ip) = primary_ipv4(&record.host_config, &record.networks) {
        d.ports.restore(&record.id, ip, &record.published);
    }
}

/// Watches the monitor in a task of its own. (Boxed: watching leads to restarts, which lead
/// to watching; the box breaks the cycle in the future's type.)
fn spawn_watch(d: Arc<Daemon>, h: Arc<Handle>, monitor: MonitorProcess) {
    let watching: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(watch(d, h, monitor));
    tokio::spawn(watching);
}

/// Waits for the monitor to exit, then finishes the container.
async fn watch(d: Arc<Daemon>, h: Arc<Handle>, monitor: MonitorProcess) {
    if let Some(pidfd) = berth_runtime::wait::pidfd_open(monitor.pid) {
        // SAFETY: the AsyncFd owns the pidfd, so it cannot be closed while registered.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        };
        match registered.map_err(|e| e.into_parts().1) {
            Ok(fd) => {
                let _ = fd.readable().await;
            }
            Err(e) => {
                tracing::error!("container {}: watch monitor: {e}", h.id);
                return;
            }
        }
    }
    reap(monitor.pid);
    let bundle = d.config.bundle_dir(&h.id);
    let exit = match Exit::read(&bundle) {
        Some(e) => e,
        None => abandon(
            &d,
            &h.id,
            "the container monitor exited without recording the exit",
        ),
    };
    finish(d, h, exit).await;
}

/// A container whose monitor is gone without a word: it is killed and deleted from the runtime
/// (nothing could hold its stdio or learn its exit any more).
fn abandon(d: &Daemon, id: &str, why: &str) -> Exit {
    tracing::warn!("container {id}: {why}");
    if let Ok(c) = d.runtime.load(id) {
        let _ = c.kill(libc::SIGKILL, true);
        if let Ok(c) = d.runtime.load(id) {
            let _ = c.delete(true);
        }
    }
    Exit {
        exit_code: 255,
        finished_at: now(),
        oom_killed: false,
        error: Some(why.to_string()),
    }
}

/// The container has exited: record it, wake waiters, then `--rm` or the restart policy.
async fn finish(d: Arc<Daemon>, h: Arc<Handle>, exit: Exit) {
    let d2 = d.clone();
    let id = h.id.clone();
    let joined = h.record().networks.clone();
    let _ = tokio::task::spawn_blocking(move || release_resources(&d2, &id, &joined)).await;
    let updated = h.update(|r| {
        for a in r.networks.values_mut() {
            a.endpoint = None;
        }
        r.published.clear();
        r.state.status = Status::Exited;
        r.state.pid = 0;
        r.state.exit_code = exit.exit_code;
        r.state.finished_at = exit.finished_at.clone();
        r.state.oom_killed = exit.oom_killed;
        r.state.error = exit.error.clone().unwrap_or_default();
        r.state.monitor = None;
    });
    if let Err(e) = updated {
        tracing::error!("container {}: record the exit: {e}", h.id);
    }
    if exit.oom_killed {
        publish(&d, &h, "oom", &[]);
    }
    publish(&d, &h, "die", &[("exitCode", exit.exit_code.to_string())]);
    h.notify(|l| {
        l.running = false;
        l.exits += 1;
        l.exit_code = exit.exit_code;
    });

    let record = h.snapshot();
    if record.host_config.bool("AutoRemove") {
        if let Err(e) = remove(&d, &h, true, true).await {
            tracing::error!("container {}: --rm: {}", h.id, e.message);
        }
        return;
    }
    let policy = &record.host_config["RestartPolicy"];
    let restart = match policy.opt_str("Name").unwrap_or("no") {
        "always" | "unless-stopped" => !record.manually_stopped,
        "on-failure" => {
            let max = policy.u64("MaximumRetryCount").unwrap_or(0);
            exit.exit_code != 0
                && !record.manually_stopped
                && (max == 0 || u64::from(record.restart_count) < max)
        }
        _ => false,
    };
    if restart {
        // Docker's back-off: 100 ms doubling, at most a minute.
        let delay = Duration::from_millis(100u64 << record.restart_count.min(9))
            .min(Duration::from_secs(60));
        let _ = h.update(|r| {
            r.restart_count += 1;
            r.state.status = Status::Restarting;
        });
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _op = h.op.lock().await;
            if h.status() != Status::Restarting {
                return;
            }
            if let Err(e) = start_locked(&d, &h).await {
                tracing::error!("container {}: restart: {}", h.id, e.message);
                let _ = h.update(|r| r.state.status = Status::Exited);
            }
        });
    }
}

/// Signal names and numbers as Docker takes them (`SIGTERM`, `TERM`, `15`): the runtime's
/// parser, which `berth-runtime kill` uses too.
pub fn parse_signal(s: &str) -> Option<i32> {
    berth_runtime::signals::parse(s).ok()
}

fn signal_of(s: Option<&str>, default: i32) -> ApiResult<i32> {
    match s.filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => {
            parse_signal(s).ok_or_else(|| ApiError::bad_request(format!("Invalid signal: {s}")))
        }
    }
}

/// Sends `signal` to the container's init. Err(false) when it is not running (any more).
fn deliver(d: &Daemon, id: &str, signal: i32) -> Result<(), bool> {
    match d.runtime.load(id) {
        Ok(c) => c.kill(signal, false).map_err(|e| {
            tracing::debug!("container {id}: signal {signal}: {e}");
            false
        }),
        Err(_) => Err(false),
    }
}

/// `kill`: 409 when the container is not running.
pub async fn kill(d: &Arc<Daemon>, h: &Arc<Handle>, signal: Option<&str>) -> ApiResult<()> {
    let sig = signal_of(signal, libc::SIGKILL)?;
    let not_running = || {
        ApiError::conflict(format!(
            "Cannot kill container: {0}: Container {0} is not running",
            h.id
        ))
    };
    if h.status() != Status::Running && h.status() != Status::Paused {
        return Err(not_running());
    }
    deliver(d, &h.id, sig).map_err(|_| not_running())?;
    publish(d, h, "kill", &[("signal", sig.to_string())]);
    Ok(())
}

/// Waits until the container is not running, at most `limit`; whether it stopped.
async fn wait_stopped(h: &Handle, limit: Duration) -> bool {
    let mut rx = h.watch();
    tokio::time::timeout(limit, rx.wait_for(|l| !l.running))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// `stop`: the stop signal, then SIGKILL after the timeout. Returns false when the container
/// was not running (Docker's 304).
pub async fn stop(
    d: &Arc<Daemon>,
    h: &Arc<Handle>,
    signal: Option<&str>,
    timeout: Option<i64>,
) -> ApiResult<bool> {
    let _op = h.op.lock().await;
    stop_locked(d, h, signal, timeout).await
}

async fn stop_locked(
    d: &Arc<Daemon>,
    h: &Arc<Handle>,
    signal: Option<&str>,
    timeout: Option<i64>,
) -> ApiResult<bool> {
    let record = h.snapshot();
    if record.state.status == Status::Restarting {
        h.update(|r| {
            r.manually_stopped = true;
            r.state.status = Status::Exited;
        })?;
        return Ok(true);
    }
    if !matches!(record.state.status, Status::Running | Status::Paused) {
        return Ok(false);
    }
    h.update(|r| r.manually_stopped = true)?;
    let configured = record.config.opt_str("StopSignal").map(str::to_string);
    let sig = signal_of(signal.or(configured.as_deref()), libc::SIGTERM)?;
    let wait_secs = timeout
        .or_else(|| record.config.i64("StopTimeout"))
        .unwrap_or(10);
    if deliver(d, &h.id, sig).is_ok() {
        publish(d, h, "kill", &[("signal", sig.to_string())]);
    }
    let limit = if wait_secs < 0 {
        Duration::from_secs(u64::MAX / 4)
    } else {
        Duration::from_secs(wait_secs as u64)
    };
    if !wait_stopped(h, limit).await {
        let _ = deliver(d, &h.id, libc::SIGKILL);
        publish(d, h, "kill", &[("signal", libc::SIGKILL.to_string())]);
        if !wait_stopped(h, Duration::from_secs(30)).await {
            return Err(ApiError::internal(format!(
                "container {} did not exit 30 s after SIGKILL",
                h.id
            )));
        }
    }
    publish(d, h, "stop", &[]);
    Ok(true)
}

pub async fn restart(
    d: &Arc<Daemon>,
    h: &Arc<Handle>,
    signal: Option<&str>,
    timeout: Option<i64>,
) -> ApiResult<()> {
    let _op = h.op.lock().await;
    stop_locked(d, h, signal, timeout).await?;
    start_locked(d, h).await?;
    publish(d, h, "restart", &[]);
    Ok(())
}

/// `rm`: 409 for a running container without `force`.
pub async fn remove(d: &Arc<Daemon>, h: &Arc<Handle>, force: bool, volumes: bool) -> ApiResult<()> {
    let _op = h.op.lock().await;
    let status = h.status();
    if status == Status::Removing {
        return Err(ApiError::conflict(format!(
            "removal of container {} is already in progress",
            h.id
        )));
    }
    if matches!(
        status,
        Status::Running | Status::Paused | Status::Restarting
    ) {
        if !force {
            return Err(ApiError::conflict(format!(
                "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                h.id
            )));
        }
        h.update(|r| r.manually_stopped = true)?;
        if status != Status::Restarting {
            let _ = deliver(d, &h.id, libc::SIGKILL);
            if !wait_stopped(h, Duration::from_secs(30)).await {
                return Err(ApiError::internal(format!(
                    "could not kill running container {}, cannot remove",
                    h.id
                )));
            }
        }
    }
    h.update(|r| r.state.status = Status::Removing)?;
    let record = h.snapshot();
    let d2 = d.clone();
    let removed = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        release_resources(&d2, &record.id, &record.networks);
        if let Err(e) = d2.images.snapshotter.remove(&record.snapshot) {
            if d2.images.snapshotter.stat(&record.snapshot).is_ok() {
                return Err(std::io::Error::other(format!(
                    "remove the writable layer of {}: {e}",
                    record.id
                )));
            }
        }
        let bundle = d2.config.bundle_dir(&record.id);
        let _ = std::fs::remove_dir_all(&bundle);
        if volumes {
            for m in &record.mount_points {
                if m["Type"] == "volume" {
                    if let Some(name) = m["Name"].as_str() {
                        if d2.volumes.read(name).is_some_and(|v| v.anonymous) {
                            let _ = d2.volumes.remove(name);
                        }
                    }
                }
            }
        }
        let dir = d2.config.root.join("containers").join(&record.id);
        std::fs::remove_dir_all(&dir).map_err(|e| records::at(e, "remove", &dir))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    if let Err(e) = removed {
        let _ = h.update(|r| r.state.status = Status::Dead);
        return Err(e.into());
    }
    d.containers.remove(&h.id);
    d.execs.forget_container(&h.id);
    publish(d, h, "destroy", &[]);
    h.notify(|l| l.removed = true);
    Ok(())
}

/// `wait`'s conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitCondition {
    NotRunning,
    NextExit,
    Removed,
}

/// Waits for the condition; the exit code it ended with.
pub async fn wait(h: &Handle, condition: WaitCondition) -> i32 {
    let mut rx = h.watch();
    let start = *rx.borrow_and_update();
    let done = |l: &super::Lifecycle| match condition {
        WaitCondition::NotRunning => !l.running,
        WaitCondition::NextExit => l.exits > start.exits || l.removed,
        WaitCondition::Removed => l.removed,
    };
    match rx.wait_for(done).await {
        Ok(l) => l.exit_code,
        // The sender went away: the container was dropped from the registry.
        Err(_) => h.record().state.exit_code,
    }
}

/// At daemon start: watch the monitors that outlived the previous daemon, finish the
/// containers that exited meanwhile, clean what no record accounts for.
pub fn reconcile(d: &Arc<Daemon>) {
    let handles = d.containers.all();
    for h in &handles {
        let record = h.snapshot();
        match record.state.status {
            Status::Running | Status::Paused => {
                let alive = record
                    .state
                    .monitor
                    .filter(|m| process_start_time(m.pid).is_some_and(|t| t == m.start_time));
                match alive {
                    Some(m) => {
                        restore_ports(d, &record);
                        spawn_watch(d.clone(), h.clone(), m)
                    }
                    None => {
                        let bundle = d.config.bundle_dir(&h.id);
                        let exit = Exit::read(&bundle).unwrap_or_else(|| {
                            abandon(
                                d,
                                &h.id,
                                "the container monitor was gone when berthd started",
                            )
                        });
                        tokio::spawn(finish(d.clone(), h.clone(), exit));
                    }
                }
            }
            Status::Restarting => {
                let _ = h.update(|r| r.state.status = Status::Exited);
                let exit = Exit {
                    exit_code: record.state.exit_code,
                    finished_at: record.state.finished_at.clone(),
                    oom_killed: record.state.oom_killed,
                    error: None,
                };
                tokio::spawn(finish(d.clone(), h.clone(), exit));
            }
            Status::Removing | Status::Dead => {
                let (d, h) = (d.clone(), h.clone());
                tokio::spawn(async move {
                    let _ = h.update(|r| r.state.status = Status::Exited);
                    if let Err(e) = remove(&d, &h, true, false).await {
                        tracing::error!("container {}: finish removal: {}", h.id, e.message);
                    }
                });
            }
            Status::Created | Status::Exited => {}
        }
    }
    // Bundles and writable layers of containers that have no record (a crash between steps).
    let known: std::collections::HashSet<String> = handles.iter().map(|h| h.id.clone()).collect();
    let bundles = d.config.exec_root.join("containers");
    for entry in std::fs::read_dir(&bundles).into_iter().flatten().flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if !known.contains(&id) {
            release_resources(d, &id, &BTreeMap::new());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let mut orphans = Vec::new();
    let _ = d.images.snapshotter.walk(&mut |info| {
        if let Some(id) = info.key.strip_prefix("container-") {
            if !known.contains(id) {
                orphans.push(info.key.clone());
            }
        }
        Ok(())
    });
    for key in orphans {
        if let Err(e) = d.images.snapshotter.remove(&key) {
            tracing::warn!("orphaned layer {key}: {e}");
        }
    }
    let _ = d.images.snapshotter.cleanup();
}

/// Status codes for verbs that do nothing on a container already in the state asked for.
pub const NOT_MODIFIED: StatusCode = StatusCode::NOT_MODIFIED;

/// The log rotation a container was created with (validated at create).
pub fn log_rotation(host_config: &Value) -> Rotation {
    log_settings(host_config).ok().flatten().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("term"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("65"), None);
        assert_eq!(parse_signal("SIGNOPE"), None);
    }

    #[test]
    fn sizes_as_docker_reads_them() {
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("2GB"), Some(2 << 30));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn start_failures_map_to_dockers_exit_codes() {
        assert_eq!(
            start_failure_code("exec: \"nope\": executable file not found in $PATH"),
            127
        );
        assert_eq!(start_failure_code("exec /x: permission denied"), 126);
        assert_eq!(start_failure_code("something else"), 128);
    }
}
