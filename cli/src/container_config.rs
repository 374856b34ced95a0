//! The flags of `run` and `create` and their mapping to the JSON body of
//! `POST /containers/create` (container config + HostConfig + NetworkingConfig).

use std::path::Path;

use clap::{ArgAction, Args};
use serde_json::{Map, Value, json};

use crate::units::parse_ram_size;

/// Flags shared by `run` and `create`, named as in the docker CLI.
#[derive(Args, Debug, Clone, Default)]
pub struct ContainerOptions {
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Attach to STDIN, STDOUT or STDERR
    #[arg(short = 'a', long = "attach", value_name = "STREAM")]
    pub attach: Vec<String>,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<String>,
    /// Bind mount a volume
    #[arg(short = 'v', long = "volume", value_name = "[SRC:]DST[:OPTS]")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount to the container
    #[arg(long = "mount", value_name = "type=…,source=…,target=…")]
    pub mount: Vec<String>,
    /// Mount a tmpfs directory
    #[arg(long = "tmpfs", value_name = "DST[:OPTS]")]
    pub tmpfs: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Container NIS domain name
    #[arg(long)]
    pub domainname: Option<String>,
    /// Set meta data on a container
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Connect a container to a network
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    /// Add network-scoped alias for the container
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_alias: Vec<String>,
    /// IPv4 address (e.g., 172.30.100.104)
    #[arg(long)]
    pub ip: Option<String>,
    /// Publish a container's port(s) to the host
    #[arg(short = 'p', long = "publish", value_name = "[IP:][HOST:]PORT[/PROTO]")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port or a range of ports
    #[arg(long)]
    pub expose: Vec<String>,
    /// Memory limit
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: '-1' to enable unlimited swap
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<String>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares")]
    pub cpu_shares: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Optional parent cgroup for the container
    #[arg(long = "cgroup-parent")]
    pub cgroup_parent: Option<String>,
    /// Ulimit options
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub ulimit: Vec<String>,
    /// Add Linux capabilities
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Give extended privileges to this container
    #[arg(long)]
    pub privileged: bool,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Security Options
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Restart policy to apply when a container exits
    #[arg(long)]
    pub restart: Option<String>,
    /// Logging driver for the container
    #[arg(long = "log-driver")]
    pub log_driver: Option<String>,
    /// Log driver options
    #[arg(long = "log-opt")]
    pub log_opt: Vec<String>,
    /// Set custom DNS servers
    #[arg(long)]
    pub dns: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Add a host device to the container
    #[arg(long)]
    pub device: Vec<String>,
    /// Run an init inside the container
    #[arg(long)]
    pub init: bool,
    /// Size of /dev/shm
    #[arg(long = "shm-size")]
    pub shm_size: Option<String>,
    /// Signal to stop the container
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<i64>,
    /// IPC mode to use
    #[arg(long)]
    pub ipc: Option<String>,
    /// PID namespace to use
    #[arg(long)]
    pub pid: Option<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// Pull image before running ("always", "missing", "never")
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Print help
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// The image to create the container from
    pub image: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// What the mapping needs from the outside world; a seam so tests need no environment.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    fn read_file(&self, path: &str) -> std::io::Result<String>;
    fn current_dir(&self) -> std::path::PathBuf;
}

pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn read_file(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn current_dir(&self) -> std::path::PathBuf {
        std::env::current_dir().unwrap_or_else(|_| "/".into())
    }
}

impl ContainerOptions {
    /// True when the container's stdin is attached (`-i` or `-a stdin`).
    pub fn attach_stdin(&self) -> bool {
        self.interactive || self.attach.iter().any(|s| s.eq_ignore_ascii_case("stdin"))
    }

    /// The body of `POST /containers/create`. `detach` is `run -d`: nothing is attached.
    pub fn create_body(
        &self,
        detach: bool,
        auto_remove: bool,
        env: &dyn Environment,
    ) -> Result<Value, String> {
        let mut config = Map::new();
        let mut host = Map::new();

        let (attach_stdin, attach_stdout, attach_stderr) = if detach {
            if !self.attach.is_empty() {
                return Err("Conflicting options: -a and -d".into());
            }
            (false, false, false)
        } else if self.attach.is_empty() {
            (self.interactive, true, true)
        } else {
            let has = |name: &str| self.attach.iter().any(|s| s.eq_ignore_ascii_case(name));
            for stream in &self.attach {
                if !["stdin", "stdout", "stderr"].contains(&stream.to_ascii_lowercase().as_str()) {
                    return Err(format!(
                        "invalid argument \"{stream}\" for \"-a, --attach\" flag: valid streams are STDIN, STDOUT and STDERR"
                    ));
                }
            }
            (
                has("stdin") || self.interactive,
                has("stdout"),
                has("stderr"),
            )
        };

        if let Some(hostname) = &self.hostname {
            config.insert("Hostname".into(), json!(hostname));
        }
        if let Some(domainname) = &self.domainname {
            config.insert("Domainname".into(), json!(domainname));
        }
        if let Some(user) = &self.user {
            config.insert("User".into(), json!(user));
        }
        config.insert("AttachStdin".into(), json!(attach_stdin));
        config.insert("AttachStdout".into(), json!(attach_stdout));
        config.insert("AttachStderr".into(), json!(attach_stderr));
        config.insert("Tty".into(), json!(self.tty));
        config.insert("OpenStdin".into(), json!(self.interactive));
        config.insert("StdinOnce".into(), json!(self.interactive && attach_stdin));

        let environment = self.environment(env)?;
        if !environment.is_empty() {
            config.insert("Env".into(), json!(environment));
        }
        if !self.command.is_empty() {
            config.insert("Cmd".into(), json!(self.command));
        }
        config.insert("Image".into(), json!(self.image));
        if let Some(workdir) = &self.workdir {
            config.insert("WorkingDir".into(), json!(workdir));
        }
        if let Some(entrypoint) = &self.entrypoint {
            // An empty --entrypoint resets the image's entrypoint.
            config.insert("Entrypoint".into(), json!([entrypoint]));
        }
        let labels = parse_labels(&self.label);
        if !labels.is_empty() {
            config.insert("Labels".into(), Value::Object(labels));
        }
        if let Some(signal) = &self.stop_signal {
            config.insert("StopSignal".into(), json!(signal));
        }
        if let Some(timeout) = self.stop_timeout {
            config.insert("StopTimeout".into(), json!(timeout));
        }

        // Volumes: `SRC:DST[:OPTS]` binds; a lone `DST` is an anonymous volume.
        let mut binds = Vec::new();
        let mut anonymous = Map::new();
        for spec in &self.volume {
            match split_volume(spec) {
                Some((source, rest)) => {
                    let source = if source.starts_with('.') || source.starts_with('~') {
                        absolute(source, &env.current_dir())
                    } else {
                        source.to_string()
                    };
                    binds.push(format!("{source}:{rest}"));
                }
                None => {
                    anonymous.insert(spec.clone(), json!({}));
                }
            }
        }
        if !anonymous.is_empty() {
            config.insert("Volumes".into(), Value::Object(anonymous));
        }
        if !binds.is_empty() {
            host.insert("Binds".into(), json!(binds));
        }
        let mounts = self
            .mount
            .iter()
            .map(|m| parse_mount(m))
            .collect::<Result<Vec<_>, _>>()?;
        if !mounts.is_empty() {
            host.insert("Mounts".into(), json!(mounts));
        }
        if !self.tmpfs.is_empty() {
            let mut tmpfs = Map::new();
            for spec in &self.tmpfs {
                let (target, options) = spec.split_once(':').unwrap_or((spec, ""));
                tmpfs.insert(target.to_string(), json!(options));
            }
            host.insert("Tmpfs".into(), Value::Object(tmpfs));
        }

        // Ports.
        let mut exposed = Map::new();
        let mut bindings = Map::new();
        for spec in &self.publish {
            for mapping in parse_port_spec(spec)? {
                let key = format!("{}/{}", mapping.container_port, mapping.protocol);
                exposed.insert(key.clone(), json!({}));
                let entry = bindings.entry(key).or_insert_with(|| json!([]));
                if let Value::Array(list) = entry {
                    list.push(json!({"HostIp": mapping.host_ip, "HostPort": mapping.host_port}));
                }
            }
        }
        for spec in &self.expose {
            let (ports, protocol) = spec.split_once('/').unwrap_or((spec, "tcp"));
            let (start, end) = parse_port_range(ports)?;
            for port in start..=end {
                exposed.insert(format!("{port}/{protocol}"), json!({}));
            }
        }
        if !exposed.is_empty() {
            config.insert("ExposedPorts".into(), Value::Object(exposed));
        }
        if !bindings.is_empty() {
            host.insert("PortBindings".into(), Value::Object(bindings));
        }
        if self.publish_all {
            host.insert("PublishAllPorts".into(), json!(true));
        }

        // Networking.
        if let Some(network) = &self.network {
            host.insert("NetworkMode".into(), json!(network));
            let user_network = !matches!(network.as_str(), "default" | "bridge" | "host" | "none")
                && !network.starts_with("container:");
            if user_network && (!self.network_alias.is_empty() || self.ip.is_some()) {
                let mut endpoint = Map::new();
                if !self.network_alias.is_empty() {
                    endpoint.insert("Aliases".into(), json!(self.network_alias));
                }
                if let Some(ip) = &self.ip {
                    endpoint.insert("IPAMConfig".into(), json!({"IPv4Address": ip}));
                }
                let mut endpoints = Map::new();
                endpoints.insert(network.clone(), Value::Object(endpoint));
                let networking = json!({"EndpointsConfig": Value::Object(endpoints)});
                return self.finish(config, host, auto_remove, Some(networking), env);
            }
        }
        self.finish(config, host, auto_remove, None, env)
    }

    /// Resources, security, restart and logging: the rest of HostConfig.
    fn finish(
        &self,
        mut config: Map<String, Value>,
        mut host: Map<String, Value>,
        auto_remove: bool,
        networking: Option<Value>,
        env: &dyn Environment,
    ) -> Result<Value, String> {
        if let Some(memory) = &self.memory {
            host.insert("Memory".into(), json!(parse_ram_size(memory)?));
        }
        if let Some(swap) = &self.memory_swap {
            let bytes = if swap == "-1" {
                -1
            } else {
                parse_ram_size(swap)?
            };
            host.insert("MemorySwap".into(), json!(bytes));
        }
        if let Some(cpus) = &self.cpus {
            host.insert("NanoCpus".into(), json!(parse_nano_cpus(cpus)?));
        }
        if let Some(shares) = self.cpu_shares {
            host.insert("CpuShares".into(), json!(shares));
        }
        if let Some(cpuset) = &self.cpuset_cpus {
            host.insert("CpusetCpus".into(), json!(cpuset));
        }
        if let Some(limit) = self.pids_limit {
            host.insert("PidsLimit".into(), json!(limit));
        }
        if let Some(parent) = &self.cgroup_parent {
            host.insert("CgroupParent".into(), json!(parent));
        }
        if let Some(shm) = &self.shm_size {
            host.insert("ShmSize".into(), json!(parse_ram_size(shm)?));
        }
        let ulimits = self
            .ulimit
            .iter()
            .map(|u| parse_ulimit(u))
            .collect::<Result<Vec<_>, _>>()?;
        if !ulimits.is_empty() {
            host.insert("Ulimits".into(), json!(ulimits));
        }
        if !self.cap_add.is_empty() {
            host.insert("CapAdd".into(), json!(self.cap_add));
        }
        if !self.cap_drop.is_empty() {
            host.insert("CapDrop".into(), json!(self.cap_drop));
        }
        if self.privileged {
            host.insert("Privileged".into(), json!(true));
        }
        if self.read_only {
            host.insert("ReadonlyRootfs".into(), json!(true));
        }
        if !self.security_opt.is_empty() {
            let options = self
                .security_opt
                .iter()
                .map(|o| security_opt(o, env))
                .collect::<Result<Vec<_>, _>>()?;
            host.insert("SecurityOpt".into(), json!(options));
        }
        let restart = match &self.restart {
            Some(policy) => parse_restart_policy(policy)?,
            None => json!({"Name": "no", "MaximumRetryCount": 0}),
        };
        if auto_remove && restart["Name"] != "no" && restart["Name"] != "" {
            return Err("Conflicting options: --restart and --rm".into());
        }
        host.insert("RestartPolicy".into(), restart);
        host.insert("AutoRemove".into(), json!(auto_remove));
        if self.log_driver.is_some() || !self.log_opt.is_empty() {
            let mut log_config = Map::new();
            for option in &self.log_opt {
                let (key, value) = option
                    .split_once('=')
                    .ok_or_else(|| format!("invalid log opt '{option}': must be key=value"))?;
                log_config.insert(key.to_string(), json!(value));
            }
            host.insert(
                "LogConfig".into(),
                json!({"Type": self.log_driver.clone().unwrap_or_default(), "Config": log_config}),
            );
        }
        if !self.dns.is_empty() {
            host.insert("Dns".into(), json!(self.dns));
        }
        if !self.add_host.is_empty() {
            host.insert("ExtraHosts".into(), json!(self.add_host));
        }
        if !self.device.is_empty() {
            let devices: Vec<Value> = self.device.iter().map(|d| parse_device(d)).collect();
            host.insert("Devices".into(), json!(devices));
        }
        if self.init {
            host.insert("Init".into(), json!(true));
        }
        if let Some(ipc) = &self.ipc {
            host.insert("IpcMode".into(), json!(ipc));
        }
        if let Some(pid) = &self.pid {
            host.insert("PidMode".into(), json!(pid));
        }
        config.insert("HostConfig".into(), Value::Object(host));
        if let Some(networking) = networking {
            config.insert("NetworkingConfig".into(), networking);
        }
        Ok(Value::Object(config))
    }

    fn environment(&self, env: &dyn Environment) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for file in &self.env_file {
            let text = env
                .read_file(file)
                .map_err(|e| format!("open {file}: {e}"))?;
            for line in text.lines() {
                let line = line.trim_start();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                push_env(&mut out, line, env);
            }
        }
        for entry in &self.env {
            push_env(&mut out, entry, env);
        }
        Ok(out)
    }
}

/// `KEY=VALUE` as is; a bare `KEY` takes the local value, or is left out when unset.
fn push_env(out: &mut Vec<String>, entry: &str, env: &dyn Environment) {
    if entry.contains('=') {
        out.push(entry.to_string());
    } else if let Some(value) = env.var(entry) {
        out.push(format!("{entry}={value}"));
    }
}

pub fn parse_labels(labels: &[String]) -> Map<String, Value> {
    labels
        .iter()
        .map(|label| {
            let (key, value) = label.split_once('=').unwrap_or((label, ""));
            (key.to_string(), json!(value))
        })
        .collect()
}

/// `SRC:DST[:OPTS]` → (SRC, "DST[:OPTS]"); `None` for an anonymous `DST`.
fn split_volume(spec: &str) -> Option<(&str, &str)> {
    let (source, rest) = spec.split_once(':')?;
    if source.is_empty() || rest.is_empty() {
        return None;
    }
    Some((source, rest))
}

fn absolute(path: &str, cwd: &Path) -> String {
    let joined = cwd.join(path);
    let mut parts: Vec<String> = Vec::new();
    for component in joined.components() {
        match component {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// `--mount type=bind,source=/a,target=/b,readonly` → an API `Mount`.
pub fn parse_mount(spec: &str) -> Result<Value, String> {
    let mut mount = Map::new();
    let mut kind = "volume".to_string();
    let mut bind_options = Map::new();
    let mut volume_options = Map::new();
    let mut tmpfs_options = Map::new();
    let mut labels = Map::new();
    let mut driver_options = Map::new();
    for field in spec.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key.trim().to_ascii_lowercase(), Some(value.trim())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let flag = |value: Option<&str>| -> Result<bool, String> {
            match value {
                None | Some("1") | Some("true") => Ok(true),
                Some("0") | Some("false") => Ok(false),
                Some(other) => Err(format!("invalid value for {key}: {other}")),
            }
        };
        let required = |value: Option<&str>| {
            value
                .map(str::to_string)
                .ok_or_else(|| format!("invalid field '{field}' must be a key=value pair"))
        };
        match key.as_str() {
            "type" => kind = required(value)?,
            "source" | "src" => {
                mount.insert("Source".into(), json!(required(value)?));
            }
            "target" | "destination" | "dst" => {
                mount.insert("Target".into(), json!(required(value)?));
            }
            "readonly" | "ro" => {
                mount.insert("ReadOnly".into(), json!(flag(value)?));
            }
            "consistency" => {
                mount.insert("Consistency".into(), json!(required(value)?));
            }
            "bind-propagation" => {
                bind_options.insert("Propagation".into(), json!(required(value)?));
            }
            "bind-nonrecursive" => {
                bind_options.insert("NonRecursive".into(), json!(flag(value)?));
            }
            "volume-nocopy" => {
                volume_options.insert("NoCopy".into(), json!(flag(value)?));
            }
            "volume-label" => {
                let text = required(value)?;
                let (k, v) = text.split_once('=').unwrap_or((&text, ""));
                labels.insert(k.to_string(), json!(v));
            }
            "volume-driver" => {
                volume_options.insert("DriverConfig".into(), json!({"Name": required(value)?}));
            }
            "volume-opt" => {
                let text = required(value)?;
                let (k, v) = text.split_once('=').unwrap_or((&text, ""));
                driver_options.insert(k.to_string(), json!(v));
            }
            "tmpfs-size" => {
                tmpfs_options.insert(
                    "SizeBytes".into(),
                    json!(parse_ram_size(&required(value)?)?),
                );
            }
            "tmpfs-mode" => {
                let mode = u32::from_str_radix(&required(value)?, 8)
                    .map_err(|e| format!("invalid tmpfs-mode: {e}"))?;
                tmpfs_options.insert("Mode".into(), json!(mode));
            }
            _ => return Err(format!("unexpected key '{key}' in '{field}'")),
        }
    }
    if !mount.contains_key("Target") {
        return Err("target is required".into());
    }
    if !labels.is_empty() {
        volume_options.insert("Labels".into(), Value::Object(labels));
    }
    if !driver_options.is_empty() {
        let driver = volume_options
            .entry("DriverConfig")
            .or_insert_with(|| json!({}));
        if let Value::Object(driver) = driver {
            driver.insert("Options".into(), Value::Object(driver_options));
        }
    }
    mount.insert("Type".into(), json!(kind));
    if !bind_options.is_empty() {
        mount.insert("BindOptions".into(), Value::Object(bind_options));
    }
    if !volume_options.is_empty() {
        mount.insert("VolumeOptions".into(), Value::Object(volume_options));
    }
    if !tmpfs_options.is_empty() {
        mount.insert("TmpfsOptions".into(), Value::Object(tmpfs_options));
    }
    Ok(Value::Object(mount))
}

/// One published port: container port/protocol and its host side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_ip: String,
    pub host_port: String,
    pub container_port: u16,
    pub protocol: String,
}

/// Docker's `nat.ParsePortSpec`: `[ip:][hostPort:]containerPort[/proto]`, with ranges
/// (`8000-8001:80-81`) and bracketed IPv6 addresses (`[::1]:80:80`).
pub fn parse_port_spec(spec: &str) -> Result<Vec<PortMapping>, String> {
    let (raw, protocol) = match spec.rsplit_once('/') {
        Some((raw, protocol)) => (raw, protocol.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {protocol}"));
    }
    let (ip, rest) = if let Some(stripped) = raw.strip_prefix('[') {
        let (ip, rest) = stripped
            .split_once(']')
            .ok_or_else(|| format!("invalid IP address: {raw}"))?;
        (
            ip.to_string(),
            rest.strip_prefix(':')
                .ok_or_else(|| format!("invalid port spec: {spec}"))?,
        )
    } else {
        let parts: Vec<&str> = raw.split(':').collect();
        match parts.len() {
            1 | 2 => (String::new(), raw),
            3 => (parts[0].to_string(), &raw[parts[0].len() + 1..]),
            _ => {
                // An unbracketed IPv6 address: everything before the last two fields.
                let cut =
                    raw.len() - parts[parts.len() - 1].len() - parts[parts.len() - 2].len() - 2;
                (raw[..cut].to_string(), &raw[cut + 1..])
            }
        }
    };
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("invalid IP address: {ip}"));
    }
    let (host_part, container_part) = match rest.split_once(':') {
        Some((host, container)) => (host, container),
        None => ("", rest),
    };
    if container_part.is_empty() {
        return Err(format!("no port specified: {spec}<empty>"));
    }
    let (start, end) = parse_port_range(container_part)?;
    let host_range = if host_part.is_empty() {
        None
    } else {
        Some(parse_port_range(host_part)?)
    };
    if let Some((host_start, host_end)) = host_range {
        let container_len = end - start;
        let host_len = host_end - host_start;
        if container_len != host_len && container_len != 0 {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {container_part} and {host_part}"
            ));
        }
    }
    let mut mappings = Vec::new();
    for (i, port) in (start..=end).enumerate() {
        let host_port = match host_range {
            None => String::new(),
            // One container port with a host range: the daemon picks a port in the range.
            Some((host_start, host_end)) if start == end && host_start != host_end => {
                format!("{host_start}-{host_end}")
            }
            Some((host_start, _)) => (host_start as usize + i).to_string(),
        };
        mappings.push(PortMapping {
            host_ip: ip.clone(),
            host_port,
            container_port: port,
            protocol: protocol.clone(),
        });
    }
    Ok(mappings)
}

fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let parse = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| format!("invalid port: {text}"))
    };
    let (start, end) = match text.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let port = parse(text)?;
            (port, port)
        }
    };
    if end < start {
        return Err(format!("invalid range specified for port: {text}"));
    }
    Ok((start, end))
}

/// `--cpus 1.5` → 1_500_000_000 nano CPUs, computed from the decimal text (no float
/// rounding surprises).
pub fn parse_nano_cpus(text: &str) -> Result<i64, String> {
    let invalid = || {
        format!(
            "invalid argument \"{text}\" for \"--cpus\" flag: failed to parse {text} as a rational number"
        )
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !fraction.chars().all(|c| c.is_ascii_digit())
    {
        return Err(invalid());
    }
    if fraction.len() > 9 {
        return Err(format!("value is too precise: {text}"));
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| invalid())?
    };
    let fraction_nanos: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().map_err(|_| invalid())?
    };
    whole
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(fraction_nanos))
        .ok_or_else(invalid)
}

/// `nofile=1024:2048` → `{"Name":"nofile","Soft":1024,"Hard":2048}`.
pub fn parse_ulimit(text: &str) -> Result<Value, String> {
    let (name, limits) = text
        .split_once('=')
        .ok_or_else(|| format!("invalid ulimit argument: {text}"))?;
    let parse = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| format!("invalid ulimit value: {text}"))
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((soft, hard)) => (parse(soft)?, parse(hard)?),
        None => {
            let value = parse(limits)?;
            (value, value)
        }
    };
    if soft > hard && hard != -1 {
        return Err(format!(
            "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
        ));
    }
    Ok(json!({"Name": name, "Soft": soft, "Hard": hard}))
}

/// `no`, `always`, `unless-stopped`, `on-failure[:N]`.
pub fn parse_restart_policy(text: &str) -> Result<Value, String> {
    let (name, count) = text.split_once(':').unwrap_or((text, ""));
    match name {
        "" | "no" | "always" | "unless-stopped" if count.is_empty() => {
            Ok(json!({"Name": if name.is_empty() { "no" } else { name }, "MaximumRetryCount": 0}))
        }
        "on-failure" => {
            let count: i64 = if count.is_empty() {
                0
            } else {
                count.parse().map_err(|_| format!("invalid restart policy format: maximum retry count must be an integer: {text}"))?
            };
            Ok(json!({"Name": "on-failure", "MaximumRetryCount": count}))
        }
        "always" | "unless-stopped" | "no" => Err(format!(
            "invalid restart policy format: maximum retry count cannot be used with restart policy '{name}'"
        )),
        _ => Err(format!(
            "invalid restart policy format: unknown policy '{name}'"
        )),
    }
}

/// `/dev/sda:/dev/xvda:rwm` → an API device mapping.
fn parse_device(text: &str) -> Value {
    let parts: Vec<&str> = text.split(':').collect();
    let host = parts.first().copied().unwrap_or_default();
    let (container, permissions) = match parts.as_slice() {
        [_, p] if p.chars().all(|c| "rwm".contains(c)) => (host, *p),
        [_, c] => (*c, "rwm"),
        [_, c, p, ..] => (*c, *p),
        _ => (host, "rwm"),
    };
    json!({"PathOnHost": host, "PathInContainer": container, "CgroupPermissions": permissions})
}

/// A seccomp profile given as a file is sent inline, as the docker CLI does.
fn security_opt(option: &str, env: &dyn Environment) -> Result<String, String> {
    match option.split_once(['=', ':']) {
        Some(("seccomp", profile)) if profile != "unconfined" && profile != "builtin" => {
            let content = env
                .read_file(profile)
                .map_err(|e| format!("opening seccomp profile ({profile}) failed: {e}"))?;
            let compact: Value = serde_json::from_str(&content)
                .map_err(|e| format!("parsing seccomp profile ({profile}): {e}"))?;
            Ok(format!("seccomp={compact}"))
        }
        _ => Ok(option.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    struct FakeEnvironment {
        vars: HashMap<String, String>,
        files: HashMap<String, String>,
    }

    impl Environment for FakeEnvironment {
        fn var(&self, name: &str) -> Option<String> {
            self.vars.get(name).cloned()
        }
        fn read_file(&self, path: &str) -> std::io::Result<String> {
            self.files
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
        fn current_dir(&self) -> std::path::PathBuf {
            "/home/u/project".into()
        }
    }

    fn fake() -> FakeEnvironment {
        FakeEnvironment {
            vars: HashMap::from([("HOME".to_string(), "/home/u".to_string())]),
            files: HashMap::from([(
                "vars.env".to_string(),
                "# comment\nA=1\n\nHOME\nMISSING\n".to_string(),
            )]),
        }
    }

    #[derive(Parser)]
    #[command(disable_help_flag = true)]
    struct Harness {
        #[command(flatten)]
        options: ContainerOptions,
    }

    fn body(args: &[&str]) -> Value {
        let harness = Harness::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .expect("flags parse");
        harness
            .options
            .create_body(false, false, &fake())
            .expect("valid options")
    }

    #[test]
    fn image_command_and_basic_config() {
        let body = body(&[
            "-it",
            "--name",
            "web",
            "-w",
            "/srv",
            "-u",
            "1000:1000",
            "-h",
            "box",
            "busybox",
            "sh",
            "-c",
            "echo hi",
        ]);
        assert_eq!(body["Image"], "busybox");
        assert_eq!(body["Cmd"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(body["Tty"], true);
        assert_eq!(body["OpenStdin"], true);
        assert_eq!(body["AttachStdin"], true);
        assert_eq!(body["StdinOnce"], true);
        assert_eq!(body["WorkingDir"], "/srv");
        assert_eq!(body["User"], "1000:1000");
        assert_eq!(body["Hostname"], "box");
        assert!(body.get("Entrypoint").is_none());
        assert_eq!(
            body["HostConfig"]["RestartPolicy"],
            json!({"Name": "no", "MaximumRetryCount": 0})
        );
    }

    #[test]
    fn flags_after_the_image_belong_to_the_command() {
        let body = body(&["busybox", "ls", "-l", "-h"]);
        assert_eq!(body["Cmd"], json!(["ls", "-l", "-h"]));
        assert!(body.get("Hostname").is_none());
        let body = body_of(&["busybox", "-x"]);
        assert_eq!(body["Cmd"], json!(["-x"]));
    }

    fn body_of(args: &[&str]) -> Value {
        body(args)
    }

    #[test]
    fn environment_from_flags_files_and_host() {
        let body = body(&[
            "--env-file",
            "vars.env",
            "-e",
            "B=2",
            "-e",
            "HOME",
            "-e",
            "NOPE",
            "busybox",
        ]);
        assert_eq!(
            body["Env"],
            json!(["A=1", "HOME=/home/u", "B=2", "HOME=/home/u"])
        );
    }

    #[test]
    fn volumes_mounts_and_tmpfs() {
        let body = body(&[
            "-v",
            "/data:/data:ro",
            "-v",
            "named:/var/lib",
            "-v",
            "./rel:/rel",
            "-v",
            "/anon",
            "--mount",
            "type=bind,source=/a,target=/b,readonly,bind-propagation=rslave",
            "--mount",
            "type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1770",
            "--tmpfs",
            "/run:rw,size=1m",
            "busybox",
        ]);
        assert_eq!(
            body["HostConfig"]["Binds"],
            json!([
                "/data:/data:ro",
                "named:/var/lib",
                "/home/u/project/rel:/rel"
            ])
        );
        assert_eq!(body["Volumes"], json!({"/anon": {}}));
        assert_eq!(
            body["HostConfig"]["Mounts"],
            json!([
                {"Type": "bind", "Source": "/a", "Target": "/b", "ReadOnly": true, "BindOptions": {"Propagation": "rslave"}},
                {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 67108864, "Mode": 0o1770}}
            ])
        );
        assert_eq!(body["HostConfig"]["Tmpfs"], json!({"/run": "rw,size=1m"}));
    }

    #[test]
    fn ports_with_ip_protocol_and_ranges() {
        let body = body(&[
            "-p",
            "127.0.0.1:8080:80/udp",
            "-p",
            "9000-9001:90-91",
            "-p",
            "443",
            "-p",
            "[::1]:5353:53",
            "-p",
            "7000-7010:70",
            "--expose",
            "3000-3001",
            "busybox",
        ]);
        let host = &body["HostConfig"];
        assert_eq!(
            host["PortBindings"]["80/udp"],
            json!([{"HostIp": "127.0.0.1", "HostPort": "8080"}])
        );
        assert_eq!(
            host["PortBindings"]["90/tcp"],
            json!([{"HostIp": "", "HostPort": "9000"}])
        );
        assert_eq!(
            host["PortBindings"]["91/tcp"],
            json!([{"HostIp": "", "HostPort": "9001"}])
        );
        assert_eq!(
            host["PortBindings"]["443/tcp"],
            json!([{"HostIp": "", "HostPort": ""}])
        );
        assert_eq!(
            host["PortBindings"]["53/tcp"],
            json!([{"HostIp": "::1", "HostPort": "5353"}])
        );
        assert_eq!(
            host["PortBindings"]["70/tcp"],
            json!([{"HostIp": "", "HostPort": "7000-7010"}])
        );
        let exposed = body["ExposedPorts"].as_object().expect("object");
        for key in [
            "80/udp", "90/tcp", "91/tcp", "443/tcp", "53/tcp", "3000/tcp", "3001/tcp",
        ] {
            assert!(exposed.contains_key(key), "{key} exposed");
        }
        assert!(parse_port_spec("8080-8082:80-81").is_err());
        assert!(parse_port_spec("999.1.1.1:80:80").is_err());
        assert!(parse_port_spec("80/icmp").is_err());
        assert!(parse_port_spec("70000").is_err());
    }

    #[test]
    fn resources() {
        let body = body(&[
            "--cpus",
            "1.5",
            "-m",
            "256m",
            "--memory-swap",
            "-1",
            "--cpu-shares",
            "512",
            "--pids-limit",
            "100",
            "--cgroup-parent",
            "tenant/a",
            "--ulimit",
            "nofile=1024:2048",
            "--ulimit",
            "core=0",
            "busybox",
        ]);
        let host = &body["HostConfig"];
        assert_eq!(host["NanoCpus"], 1_500_000_000i64);
        assert_eq!(host["Memory"], 268_435_456i64);
        assert_eq!(host["MemorySwap"], -1);
        assert_eq!(host["CpuShares"], 512);
        assert_eq!(host["PidsLimit"], 100);
        assert_eq!(host["CgroupParent"], "tenant/a");
        assert_eq!(
            host["Ulimits"],
            json!([{"Name": "nofile", "Soft": 1024, "Hard": 2048}, {"Name": "core", "Soft": 0, "Hard": 0}])
        );
        assert_eq!(parse_nano_cpus("0.1"), Ok(100_000_000));
        assert_eq!(parse_nano_cpus("2"), Ok(2_000_000_000));
        assert!(parse_nano_cpus("abc").is_err());
        assert!(parse_nano_cpus("0.0000000001").is_err());
        assert!(parse_ulimit("nofile=10:5").is_err());
    }

    #[test]
    fn restart_policies() {
        assert_eq!(
            parse_restart_policy("on-failure:3"),
            Ok(json!({"Name": "on-failure", "MaximumRetryCount": 3}))
        );
        assert_eq!(
            parse_restart_policy("always"),
            Ok(json!({"Name": "always", "MaximumRetryCount": 0}))
        );
        assert!(parse_restart_policy("always:3").is_err());
        assert!(parse_restart_policy("sometimes").is_err());
        let harness =
            Harness::try_parse_from(["run", "--restart", "always", "busybox"]).expect("parses");
        assert_eq!(
            harness.options.create_body(false, true, &fake()),
            Err("Conflicting options: --restart and --rm".to_string())
        );
    }

    #[test]
    fn security_labels_logging_network() {
        let body = body(&[
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "ALL",
            "--privileged",
            "--read-only",
            "--security-opt",
            "no-new-privileges",
            "-l",
            "a=b",
            "-l",
            "flag",
            "--log-driver",
            "json-file",
            "--log-opt",
            "max-size=10m",
            "--network",
            "mynet",
            "--network-alias",
            "db",
            "--entrypoint",
            "",
            "busybox",
        ]);
        let host = &body["HostConfig"];
        assert_eq!(host["CapAdd"], json!(["NET_ADMIN"]));
        assert_eq!(host["CapDrop"], json!(["ALL"]));
        assert_eq!(host["Privileged"], true);
        assert_eq!(host["ReadonlyRootfs"], true);
        assert_eq!(host["SecurityOpt"], json!(["no-new-privileges"]));
        assert_eq!(body["Labels"], json!({"a": "b", "flag": ""}));
        assert_eq!(
            host["LogConfig"],
            json!({"Type": "json-file", "Config": {"max-size": "10m"}})
        );
        assert_eq!(host["NetworkMode"], "mynet");
        assert_eq!(
            body["NetworkingConfig"]["EndpointsConfig"]["mynet"]["Aliases"],
            json!(["db"])
        );
        assert_eq!(body["Entrypoint"], json!([""]));
    }

    #[test]
    fn detach_attaches_nothing() {
        let harness = Harness::try_parse_from(["run", "-i", "busybox"]).expect("parses");
        let body = harness
            .options
            .create_body(true, false, &fake())
            .expect("valid");
        assert_eq!(body["AttachStdin"], false);
        assert_eq!(body["AttachStdout"], false);
        assert_eq!(body["StdinOnce"], false);
        assert_eq!(body["OpenStdin"], true);
    }
}
