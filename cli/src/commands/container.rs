//! Container commands other than the stdio sessions: lifecycle verbs, `ps`, `logs`,
//! `wait`, `top`, `stats`, `rename`, `cp`, `export`, `port`, `container prune`.

use std::collections::HashMap;
use std::io::Write;

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{Value, json};

use crate::client::{Client, Query, build, decode_json, next_chunk, reader_body};
use crate::commands::{
    confirm, copy_body_to, filters_json, for_each_name, output_target, print_out, segment,
};
use crate::error::{CliError, Result};
use crate::format::{ListFormat, ellipsis, short_id, tabwrite};
use crate::stream::process_sink;
use crate::units::{
    StateSummary, bytes_size, human_size_precision, now_unix, parse_timestamp_arg, status_text,
    time_ago,
};

#[derive(Args, Debug)]
pub struct ContainersArg {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time", alias = "timeout")]
    pub time: Option<i64>,
    /// Signal to send to the container
    #[arg(short = 's', long)]
    pub signal: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short = 'v', long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only display container IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template ('table', 'table TEMPLATE', 'json', 'TEMPLATE')
    #[arg(long)]
    pub format: Option<String>,
    /// Display total file sizes
    #[arg(short = 's', long)]
    pub size: bool,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long, default_value_t = -1, allow_hyphen_values = true)]
    pub last: i64,
    /// Show the latest created container (includes all states)
    #[arg(short = 'l', long)]
    pub latest: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show logs since timestamp or relative (e.g. 42m)
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp or relative (e.g. 42m)
    #[arg(long)]
    pub until: Option<String>,
    /// Show timestamps
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Show extra details provided to logs
    #[arg(long)]
    pub details: bool,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    pub container: String,
    /// ps options
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long = "no-stream")]
    pub no_stream: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information)
    #[arg(short = 'a', long)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Suppress progress output during copy
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// CONTAINER:SRC_PATH, local path, or - (tar on stdin)
    pub source: String,
    /// CONTAINER:DEST_PATH, local path, or - (tar on stdout)
    pub destination: String,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct PortArgs {
    pub container: String,
    /// PRIVATE_PORT[/PROTO]
    pub port: Option<String>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// List containers
    #[command(alias = "ps", alias = "list")]
    Ls(PsArgs),
    /// Remove all stopped containers
    Prune(PruneArgs),
    /// Display detailed information on one or more containers
    Inspect(crate::commands::system::InspectArgs),
}

pub async fn container_command(client: &mut Client, command: ContainerCommand) -> Result<i32> {
    match command {
        ContainerCommand::Ls(args) => ps(client, args).await,
        ContainerCommand::Prune(args) => prune(client, args).await,
        ContainerCommand::Inspect(mut args) => {
            args.kind = Some("container".into());
            crate::commands::system::inspect(client, args).await
        }
    }
}

pub async fn stop(client: &mut Client, args: StopArgs, verb: &str) -> Result<i32> {
    let time = args.time;
    let signal = args.signal.clone();
    for_each_name(client, &args.containers, async |client, name| {
        let path = Query::new(&format!("/containers/{}/{verb}", segment(name)))
            .opt("t", time.map(|t| t.to_string()))
            .opt("signal", signal.as_deref())
            .build();
        client.post_discard(&path, None).await?;
        Ok(Some(name.to_string()))
    })
    .await
}

pub async fn kill(client: &mut Client, args: KillArgs) -> Result<i32> {
    let signal = args.signal.clone();
    for_each_name(client, &args.containers, async |client, name| {
        let path = Query::new(&format!("/containers/{}/kill", segment(name)))
            .param("signal", &signal)
            .build();
        client.post_discard(&path, None).await?;
        Ok(Some(name.to_string()))
    })
    .await
}

pub async fn simple_action(client: &mut Client, args: ContainersArg, verb: &str) -> Result<i32> {
    for_each_name(client, &args.containers, async |client, name| {
        client
            .post_discard(&format!("/containers/{}/{verb}", segment(name)), None)
            .await?;
        Ok(Some(name.to_string()))
    })
    .await
}

pub async fn rm(client: &mut Client, args: RmArgs) -> Result<i32> {
    let (force, volumes) = (args.force, args.volumes);
    for_each_name(client, &args.containers, async |client, name| {
        let path = Query::new(&format!("/containers/{}", segment(name)))
            .flag("force", force)
            .flag("v", volumes)
            .build();
        let response = client.delete(&path).await?;
        crate::client::read_body(response).await?;
        Ok(Some(name.to_string()))
    })
    .await
}

const PS_TABLE: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";
const PS_HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("Status", "STATUS"),
    ("Names", "NAMES"),
    ("Size", "SIZE"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("State", "STATE"),
    ("LocalVolumes", "LOCAL VOLUMES"),
];

pub async fn ps(client: &mut Client, args: PsArgs) -> Result<i32> {
    let limit = if args.latest { 1 } else { args.last };
    let path = Query::new("/containers/json")
        .flag("all", args.all)
        .flag("size", args.size)
        .opt("limit", (limit > 0).then(|| limit.to_string()))
        .opt("filters", filters_json(&args.filter)?)
        .build();
    let containers: Vec<Value> = client.get_json(&path).await?;
    let format = if args.quiet {
        "{{.ID}}".to_string()
    } else {
        match &args.format {
            Some(format) => format.clone(),
            None if args.size => format!("{PS_TABLE}\t{{{{.Size}}}}"),
            None => PS_TABLE.to_string(),
        }
    };
    let rows: Vec<Value> = containers
        .iter()
        .map(|c| ps_row(c, !args.no_trunc, now_unix()))
        .collect();
    let list = ListFormat::parse(Some(&format), PS_TABLE)?;
    print_out(&list.render(&rows, PS_HEADERS)?)?;
    Ok(0)
}

/// Docker's per-container `ps` context: the values the table and templates see.
pub fn ps_row(container: &Value, truncate: bool, now: i64) -> Value {
    let text = |key: &str| container[key].as_str().unwrap_or_default().to_string();
    let id = text("Id");
    let mut image = text("Image");
    if truncate {
        if let Some((name, _digest)) = image.split_once('@') {
            image = name.to_string();
        }
        if image.starts_with("sha256:") {
            image = short_id(&image);
        }
    }
    let command = text("Command");
    let command = if truncate {
        ellipsis(&command, 20)
    } else {
        command
    };
    let names: Vec<String> = container["Names"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(Value::as_str)
                .map(|n| n.trim_start_matches('/').to_string())
                // Legacy link names (other/alias) are hidden unless --no-trunc.
                .filter(|n| !truncate || !n.contains('/'))
                .collect()
        })
        .unwrap_or_default();
    let created = container["Created"].as_i64().unwrap_or(0);
    let mut status = text("Status");
    if status.is_empty() {
        let state = container["State"].as_str().unwrap_or_default();
        status = status_text(
            &StateSummary {
                status: state,
                exit_code: 0,
                started_at: None,
                finished_at: None,
                health: None,
            },
            now,
        );
    }
    let labels = container["Labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let mounts: Vec<String> = container["Mounts"]
        .as_array()
        .map(|mounts| {
            mounts
                .iter()
                .map(|m| {
                    let name = m["Name"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .or(m["Source"].as_str())
                        .unwrap_or_default();
                    if truncate {
                        ellipsis(name, 15)
                    } else {
                        name.to_string()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let local_volumes = container["Mounts"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| m["Driver"].as_str() == Some("local"))
                .count()
        })
        .unwrap_or(0);
    let networks: Vec<String> = container
        .pointer("/NetworkSettings/Networks")
        .and_then(Value::as_object)
        .map(|n| n.keys().cloned().collect())
        .unwrap_or_default();
    let size = match (
        container["SizeRw"].as_i64(),
        container["SizeRootFs"].as_i64(),
    ) {
        (None, None) => String::new(),
        (rw, root) => format!(
            "{} (virtual {})",
            human_size_precision(rw.unwrap_or(0) as f64, 3),
            human_size_precision(root.unwrap_or(0) as f64, 3)
        ),
    };
    json!({
        "ID": if truncate { short_id(&id) } else { id },
        "Image": image,
        "Command": format!("{command:?}"),
        "CreatedAt": go_time(created),
        "RunningFor": time_ago(created, now),
        "Ports": display_ports(container["Ports"].as_array().map(Vec::as_slice).unwrap_or_default()),
        "Status": status,
        "State": text("State"),
        "Names": names.join(","),
        "Labels": labels,
        "Mounts": mounts.join(","),
        "LocalVolumes": local_volumes.to_string(),
        "Networks": networks.join(","),
        "Size": size,
    })
}

/// Go's `time.Time.String()` in UTC: `2024-01-02 03:04:05 +0000 UTC`.
pub fn go_time(unix: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    let text = humantime::format_rfc3339_seconds(time).to_string();
    format!("{} +0000 UTC", text.trim_end_matches('Z').replace('T', " "))
}

/// Docker's `DisplayablePorts`: consecutive ports grouped into ranges, published ones as
/// `0.0.0.0:8080->80/tcp`, IPv6 hosts bracketed.
pub fn display_ports(ports: &[Value]) -> String {
    struct Port {
        ip: String,
        private: u64,
        public: u64,
        kind: String,
    }
    let mut ports: Vec<Port> = ports
        .iter()
        .map(|p| Port {
            ip: p["IP"].as_str().unwrap_or_default().to_string(),
            private: p["PrivatePort"].as_u64().unwrap_or(0),
            public: p["PublicPort"].as_u64().unwrap_or(0),
            kind: p["Type"].as_str().unwrap_or("tcp").to_string(),
        })
        .collect();
    ports.sort_by(|a, b| {
        (a.private, &a.ip, a.public, &a.kind).cmp(&(b.private, &b.ip, b.public, &b.kind))
    });
    let join_host = |ip: &str, port: &str| {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    let form_group = |key: &str, first: u64, last: u64| {
        let (ip, kind) = key.rsplit_once('/').unwrap_or(("", key));
        let mut group = first.to_string();
        if first != last {
            group = format!("{group}-{last}");
        }
        if !ip.is_empty() {
            group = format!("{}->{group}", join_host(ip, &group));
        }
        format!("{group}/{kind}")
    };
    let mut groups: HashMap<String, (u64, u64)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut result = Vec::new();
    let mut host_mappings = Vec::new();
    for port in &ports {
        let mut key = port.kind.clone();
        if !port.ip.is_empty() {
            if port.public != port.private {
                host_mappings.push(format!(
                    "{}->{}/{}",
                    join_host(&port.ip, &port.public.to_string()),
                    port.private,
                    port.kind
                ));
                continue;
            }
            key = format!("{}/{}", port.ip, port.kind);
        }
        match groups.get_mut(&key) {
            None => {
                groups.insert(key.clone(), (port.private, port.private));
                order.push(key);
            }
            Some(group) if port.private == group.1 + 1 => group.1 = port.private,
            Some(group) => {
                result.push(form_group(&key, group.0, group.1));
                *group = (port.private, port.private);
            }
        }
    }
    for key in &order {
        if let Some(&(first, last)) = groups.get(key) {
            result.push(form_group(key, first, last));
        }
    }
    result.extend(host_mappings);
    result.join(", ")
}

pub async fn logs(client: &mut Client, args: LogsArgs) -> Result<i32> {
    let info: Value = client
        .get_json(&format!("/containers/{}/json", segment(&args.container)))
        .await?;
    let tty = info
        .pointer("/Config/Tty")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let now = std::time::SystemTime::now();
    let since = args
        .since
        .as_deref()
        .map(|s| parse_timestamp_arg(s, now))
        .transpose()
        .map_err(CliError::Usage)?;
    let until = args
        .until
        .as_deref()
        .map(|s| parse_timestamp_arg(s, now))
        .transpose()
        .map_err(CliError::Usage)?;
    let path = Query::new(&format!("/containers/{}/logs", segment(&args.container)))
        .flag("stdout", true)
        .flag("stderr", true)
        .flag("follow", args.follow)
        .flag("timestamps", args.timestamps)
        .flag("details", args.details)
        .param("tail", &args.tail)
        .opt("since", since)
        .opt("until", until)
        .build();
    let response = client.get(&path).await?;
    let mut body = response.into_body();
    let mut sink = process_sink(tty);
    while let Some(chunk) = next_chunk(&mut body).await? {
        sink.write(&chunk)?;
    }
    Ok(0)
}

pub async fn wait(client: &mut Client, args: ContainersArg) -> Result<i32> {
    for_each_name(client, &args.containers, async |client, name| {
        let path = format!("/containers/{}/wait", segment(name));
        let response = client
            .send(build(
                Method::POST,
                &path,
                crate::client::empty_body(),
                None,
            )?)
            .await?;
        let status: Value = decode_json(response).await?;
        Ok(Some(status["StatusCode"].as_i64().unwrap_or(0).to_string()))
    })
    .await
}

pub async fn top(client: &mut Client, args: TopArgs) -> Result<i32> {
    let path = Query::new(&format!("/containers/{}/top", segment(&args.container)))
        .opt(
            "ps_args",
            (!args.ps_args.is_empty()).then(|| args.ps_args.join(" ")),
        )
        .build();
    let top: Value = client.get_json(&path).await?;
    print_out(&top_table(&top))?;
    Ok(0)
}

/// `docker top` output: tabwriter with minwidth 20, padding 3.
pub fn top_table(top: &Value) -> String {
    let mut text = String::new();
    let row = |cells: &Vec<Value>| {
        cells
            .iter()
            .map(|c| c.as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\t")
    };
    if let Some(titles) = top["Titles"].as_array() {
        text.push_str(&row(titles));
        text.push('\n');
    }
    for process in top["Processes"].as_array().into_iter().flatten() {
        if let Some(cells) = process.as_array() {
            text.push_str(&row(cells));
            text.push('\n');
        }
    }
    tabwrite(&text, 20, 3)
}

pub async fn rename(client: &mut Client, args: RenameArgs) -> Result<i32> {
    let path = Query::new(&format!("/containers/{}/rename", segment(&args.container)))
        .param("name", &args.new_name)
        .build();
    client.post_discard(&path, None).await?;
    Ok(0)
}

pub async fn export(client: &mut Client, args: ExportArgs) -> Result<i32> {
    let mut out = output_target(args.output.as_deref())?;
    let response = client
        .get(&format!("/containers/{}/export", segment(&args.container)))
        .await?;
    copy_body_to(&mut response.into_body(), &mut out).await?;
    Ok(0)
}

pub async fn port(client: &mut Client, args: PortArgs) -> Result<i32> {
    let info: Value = client
        .get_json(&format!("/containers/{}/json", segment(&args.container)))
        .await?;
    let wanted = args.port.as_ref().map(|p| {
        if p.contains('/') {
            p.clone()
        } else {
            format!("{p}/tcp")
        }
    });
    let mut lines = Vec::new();
    if let Some(ports) = info
        .pointer("/NetworkSettings/Ports")
        .and_then(Value::as_object)
    {
        for (port, bindings) in ports {
            if wanted.as_ref().is_some_and(|w| w != port) {
                continue;
            }
            for binding in bindings.as_array().into_iter().flatten() {
                let ip = binding["HostIp"].as_str().unwrap_or_default();
                let host_port = binding["HostPort"].as_str().unwrap_or_default();
                let address = if ip.contains(':') {
                    format!("[{ip}]:{host_port}")
                } else {
                    format!("{ip}:{host_port}")
                };
                lines.push(if wanted.is_some() {
                    address
                } else {
                    format!("{port} -> {address}")
                });
            }
        }
    }
    if lines.is_empty() {
        if let Some(port) = &args.port {
            return Err(CliError::message(format!(
                "Error: No public port '{}' published for {}",
                wanted.as_deref().unwrap_or(port),
                args.container
            )));
        }
    }
    for line in lines {
        print_out(&format!("{line}\n"))?;
    }
    Ok(0)
}

pub async fn prune(client: &mut Client, args: PruneArgs) -> Result<i32> {
    if !args.force
        && !confirm(
            "WARNING! This will remove all stopped containers.\nAre you sure you want to continue?",
        )
    {
        return Ok(0);
    }
    let path = Query::new("/containers/prune")
        .opt("filters", filters_json(&args.filter)?)
        .build();
    let report: Value = client.post_json(&path, None).await?;
    print_out(&prune_report(
        "Deleted Containers:",
        &report["ContainersDeleted"],
        &report["SpaceReclaimed"],
    ))?;
    Ok(0)
}

/// The summary docker prints after a prune.
pub fn prune_report(title: &str, deleted: &Value, reclaimed: &Value) -> String {
    let mut out = String::new();
    let names: Vec<&str> = deleted
        .as_array()
        .map(|d| d.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !names.is_empty() {
        out.push_str(title);
        out.push('\n');
        for name in names {
            out.push_str(name);
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "Total reclaimed space: {}\n",
        human_size_precision(reclaimed.as_f64().unwrap_or(0.0), 3)
    ));
    out
}

// ---- stats ----

const STATS_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";
const STATS_HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Container", "CONTAINER"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

pub async fn stats(client: &mut Client, args: StatsArgs) -> Result<i32> {
    let format = ListFormat::parse(args.format.as_deref(), STATS_TABLE)?;
    let terminal = crate::tty::stdout_is_terminal();
    loop {
        let names: Vec<String> = if args.containers.is_empty() {
            let list: Vec<Value> = client
                .get_json(&Query::new("/containers/json").flag("all", args.all).build())
                .await?;
            list.iter()
                .filter_map(|c| c["Id"].as_str().map(str::to_string))
                .collect()
        } else {
            args.containers.clone()
        };
        let mut rows = Vec::new();
        for name in &names {
            // one-shot=false with stream=false: the daemon fills precpu_stats, so CPU % is real.
            let path = Query::new(&format!("/containers/{}/stats", segment(name)))
                .param("stream", "0")
                .build();
            match client.get_json::<Value>(&path).await {
                Ok(sample) => rows.push(stats_row(&sample, name, !args.no_trunc)),
                Err(err) if !args.containers.is_empty() => return Err(err),
                // A container listed a moment ago may be gone by now.
                Err(_) => {}
            }
        }
        let table = format.render(&rows, STATS_HEADERS)?;
        if args.no_stream {
            print_out(&table)?;
            return Ok(0);
        }
        // Redraw in place like docker: clear screen, cursor home.
        print_out(&if terminal {
            format!("\x1b[2J\x1b[H{table}")
        } else {
            table
        })?;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// One row of `docker stats` from a stats sample (cgroup v1 or v2 layout).
pub fn stats_row(sample: &Value, requested: &str, truncate: bool) -> Value {
    let number = |pointer: &str| {
        sample
            .pointer(pointer)
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
    };
    let cpu_delta =
        number("/cpu_stats/cpu_usage/total_usage") - number("/precpu_stats/cpu_usage/total_usage");
    let system_delta =
        number("/cpu_stats/system_cpu_usage") - number("/precpu_stats/system_cpu_usage");
    let mut online = number("/cpu_stats/online_cpus");
    if online == 0.0 {
        online = sample
            .pointer("/cpu_stats/cpu_usage/percpu_usage")
            .and_then(Value::as_array)
            .map(|p| p.len() as f64)
            .unwrap_or(0.0);
    }
    let cpu = if cpu_delta > 0.0 && system_delta > 0.0 {
        cpu_delta / system_delta * online * 100.0
    } else {
        0.0
    };
    // Page cache is reclaimable; docker subtracts it (inactive_file on v2, total_inactive_file on v1).
    let usage = number("/memory_stats/usage");
    let cache = sample
        .pointer("/memory_stats/stats/total_inactive_file")
        .or_else(|| sample.pointer("/memory_stats/stats/inactive_file"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let memory = if cache < usage { usage - cache } else { usage };
    let limit = number("/memory_stats/limit");
    let memory_percent = if limit > 0.0 {
        memory / limit * 100.0
    } else {
        0.0
    };
    let (mut rx, mut tx) = (0.0, 0.0);
    for network in sample["networks"]
        .as_object()
        .into_iter()
        .flat_map(|n| n.values())
    {
        rx += network["rx_bytes"].as_f64().unwrap_or(0.0);
        tx += network["tx_bytes"].as_f64().unwrap_or(0.0);
    }
    let (mut read, mut write) = (0.0, 0.0);
    for entry in sample
        .pointer("/blkio_stats/io_service_bytes_recursive")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match entry["op"].as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => read += entry["value"].as_f64().unwrap_or(0.0),
            Some("write") => write += entry["value"].as_f64().unwrap_or(0.0),
            _ => {}
        }
    }
    let id = sample["id"].as_str().unwrap_or(requested);
    let name = sample["name"]
        .as_str()
        .unwrap_or(requested)
        .trim_start_matches('/');
    json!({
        "ID": if truncate { short_id(id) } else { id.to_string() },
        "Container": requested,
        "Name": name,
        "CPUPerc": format!("{cpu:.2}%"),
        "MemUsage": format!("{} / {}", bytes_size(memory), bytes_size(limit)),
        "MemPerc": format!("{memory_percent:.2}%"),
        "NetIO": format!("{} / {}", human_size_precision(rx, 3), human_size_precision(tx, 3)),
        "BlockIO": format!("{} / {}", human_size_precision(read, 3), human_size_precision(write, 3)),
        "PIDs": number("/pids_stats/current").to_string(),
    })
}

// ---- cp ----

/// `CONTAINER:PATH` → (container, path); a local path (absolute, or with no colon before
/// a slash) is `None`.
fn split_copy_path(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    let (container, path) = arg.split_once(':')?;
    if container.is_empty() || container.contains('/') {
        return None;
    }
    Some((container, path))
}

pub async fn cp(client: &mut Client, args: CpArgs) -> Result<i32> {
    match (
        split_copy_path(&args.source),
        split_copy_path(&args.destination),
    ) {
        (Some((container, path)), None) => {
            copy_from_container(client, container, path, &args.destination).await
        }
        (None, Some((container, path))) => {
            copy_to_container(client, &args.source, container, path).await
        }
        (Some(_), Some(_)) => Err(CliError::Usage(
            "copying between containers is not supported".into(),
        )),
        (None, None) => Err(CliError::Usage(
            "must specify at least one container source".into(),
        )),
    }
}

async fn copy_from_container(
    client: &mut Client,
    container: &str,
    path: &str,
    destination: &str,
) -> Result<i32> {
    let query = Query::new(&format!("/containers/{}/archive", segment(container)))
        .param("path", path)
        .build();
    let response = client.get(&query).await?;
    if destination == "-" {
        let mut out = std::io::stdout();
        copy_body_to(&mut response.into_body(), &mut out).await?;
        return Ok(0);
    }
    // The archive holds one top-level entry named after the source; extract it beside
    // the destination and rename when the destination is not an existing directory.
    let source_name = std::path::Path::new(path.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into());
    let destination_path = std::path::Path::new(destination);
    let (directory, rename_to) = if destination_path.is_dir() {
        (destination_path.to_path_buf(), None)
    } else {
        let parent = destination_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let name = destination_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        (parent.to_path_buf(), name.filter(|n| *n != source_name))
    };
    let mut command = std::process::Command::new("tar");
    command
        .arg("-x")
        .arg("-C")
        .arg(&directory)
        .arg("--no-same-owner");
    if let Some(name) = &rename_to {
        command.arg(format!(
            "--transform=s|^{}|{}|",
            sed_escape(&source_name),
            sed_replacement_escape(name)
        ));
    }
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| CliError::message(format!("cannot run tar to extract the archive: {e}")))?;
    let mut body = response.into_body();
    if let Some(stdin) = child.stdin.as_mut() {
        while let Some(chunk) = next_chunk(&mut body).await? {
            stdin.write_all(&chunk)?;
        }
    }
    drop(child.stdin.take());
    let status = child.wait()?;
    if !status.success() {
        return Err(CliError::message("extracting the archive failed"));
    }
    Ok(0)
}

async fn copy_to_container(
    client: &mut Client,
    source: &str,
    container: &str,
    path: &str,
) -> Result<i32> {
    let body = if source == "-" {
        reader_body(std::io::stdin())
    } else {
        let local = std::path::Path::new(source.trim_end_matches('/'));
        if !local.exists() {
            return Err(CliError::message(format!(
                "lstat {source}: no such file or directory"
            )));
        }
        let parent = local
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| ".".into());
        // Copying onto a path that is not an existing directory renames the entry.
        let stat = container_path_stat(client, container, path).await;
        let (target_directory, rename_to) = match stat {
            Some(stat) if stat["mode"].as_u64().is_some_and(|m| m & (1 << 31) != 0) => {
                (path.to_string(), None)
            }
            _ => {
                let trimmed = path.trim_end_matches('/');
                let (dir, base) = trimmed.rsplit_once('/').unwrap_or((".", trimmed));
                (
                    if dir.is_empty() {
                        "/".to_string()
                    } else {
                        dir.to_string()
                    },
                    Some(base.to_string()),
                )
            }
        };
        let mut command = std::process::Command::new("tar");
        command.arg("-c").arg("-C").arg(parent);
        if let Some(base) = rename_to.filter(|b| *b != name) {
            command.arg(format!(
                "--transform=s|^{}|{}|",
                sed_escape(&name),
                sed_replacement_escape(&base)
            ));
        }
        command.arg(&name);
        let child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| CliError::message(format!("cannot run tar to build the archive: {e}")))?;
        let stdout = child
            .stdout
            .ok_or_else(|| CliError::message("tar has no output"))?;
        let query = Query::new(&format!("/containers/{}/archive", segment(container)))
            .param("path", &target_directory)
            .build();
        let request = build(
            Method::PUT,
            &query,
            reader_body(stdout),
            Some("application/x-tar"),
        )?;
        client.send(request).await.map(|_| ())?;
        return Ok(0);
    };
    let query = Query::new(&format!("/containers/{}/archive", segment(container)))
        .param("path", path)
        .build();
    let request = build(Method::PUT, &query, body, Some("application/x-tar"))?;
    client.send(request).await?;
    Ok(0)
}

/// The stat the daemon returns for a container path (base64 JSON header), if it exists.
async fn container_path_stat(client: &mut Client, container: &str, path: &str) -> Option<Value> {
    let query = Query::new(&format!("/containers/{}/archive", segment(container)))
        .param("path", path)
        .build();
    let response = client
        .send(build(Method::HEAD, &query, crate::client::empty_body(), None).ok()?)
        .await
        .ok()?;
    let header = response
        .headers()
        .get("X-Docker-Container-Path-Stat")?
        .to_str()
        .ok()?
        .to_string();
    let decoded = base64_decode(&header)?;
    serde_json::from_slice(&decoded).ok()
}

/// Escapes a name for the pattern side of tar's `--transform` (a sed expression).
fn sed_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if "\\|.*[]^$&".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Escapes a name for the replacement side of `--transform`.
fn sed_replacement_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if "\\|&".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Standard base64 (with or without padding); only for the path-stat header.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_row_like_docker() {
        let container = json!({
            "Id": "0123456789abcdef0123",
            "Names": ["/web", "/other/alias"],
            "Image": "busybox@sha256:abcd",
            "Command": "sleep 1000000000000000000",
            "Created": 1000,
            "State": "running",
            "Status": "Up 3 seconds",
            "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}],
            "Labels": {"a": "b"},
            "NetworkSettings": {"Networks": {"bridge": {}}},
            "Mounts": []
        });
        let row = ps_row(&container, true, 1150);
        assert_eq!(row["ID"], "0123456789ab");
        assert_eq!(row["Names"], "web");
        assert_eq!(row["Image"], "busybox");
        assert_eq!(row["Command"], "\"sleep 1000000000000…\"");
        assert_eq!(row["RunningFor"], "2 minutes ago");
        assert_eq!(row["Ports"], "0.0.0.0:8080->80/tcp");
        assert_eq!(row["Networks"], "bridge");
        assert_eq!(row["CreatedAt"], "1970-01-01 00:16:40 +0000 UTC");
        let full = ps_row(&container, false, 1150);
        assert_eq!(full["Names"], "web,other/alias");
        assert_eq!(full["ID"], "0123456789abcdef0123");
    }

    #[test]
    fn ps_table_layout() {
        let rows = vec![ps_row(
            &json!({"Id": "aaaaaaaaaaaaaaaa", "Names": ["/a"], "Image": "busybox", "Command": "sh", "Created": 0, "Status": "Exited (0) 5 seconds ago"}),
            true,
            120,
        )];
        let out = ListFormat::parse(None, PS_TABLE)
            .expect("valid")
            .render(&rows, PS_HEADERS)
            .expect("renders");
        let expected = "CONTAINER ID   IMAGE     COMMAND   CREATED         STATUS                     PORTS     NAMES\n\
                        aaaaaaaaaaaa   busybox   \"sh\"      2 minutes ago   Exited (0) 5 seconds ago             a\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn ports_grouped_like_docker() {
        let ports = vec![
            json!({"IP": "0.0.0.0", "PrivatePort": 81, "PublicPort": 81, "Type": "tcp"}),
            json!({"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 80, "Type": "tcp"}),
            json!({"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}),
            json!({"PrivatePort": 53, "Type": "udp"}),
            json!({"PrivatePort": 443, "Type": "tcp"}),
        ];
        assert_eq!(
            display_ports(&ports),
            "53/udp, 0.0.0.0:80-81->80-81/tcp, 443/tcp, [::]:8080->80/tcp"
        );
        assert_eq!(display_ports(&[]), "");
    }

    #[test]
    fn stats_row_computes_percentages() {
        let sample = json!({
            "id": "0123456789abcdef", "name": "/web",
            "cpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000u64}, "system_cpu_usage": 20_000_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000_000u64}, "system_cpu_usage": 10_000_000_000u64},
            "memory_stats": {"usage": 3_145_728, "limit": 104_857_600, "stats": {"inactive_file": 1_048_576}},
            "networks": {"eth0": {"rx_bytes": 1500, "tx_bytes": 500}},
            "blkio_stats": {"io_service_bytes_recursive": [{"op": "read", "value": 4_000_000}, {"op": "Write", "value": 0}]},
            "pids_stats": {"current": 3}
        });
        let row = stats_row(&sample, "web", true);
        assert_eq!(row["CPUPerc"], "20.00%");
        assert_eq!(row["MemUsage"], "2MiB / 100MiB");
        assert_eq!(row["MemPerc"], "2.00%");
        assert_eq!(row["NetIO"], "1.5kB / 500B");
        assert_eq!(row["BlockIO"], "4MB / 0B");
        assert_eq!(row["PIDs"], "3");
        assert_eq!(row["Name"], "web");
        let table = ListFormat::parse(None, STATS_TABLE)
            .expect("valid")
            .render(&[row], STATS_HEADERS)
            .expect("renders");
        assert!(table.starts_with("CONTAINER ID   NAME      CPU %     MEM USAGE / LIMIT   MEM %     NET I/O        BLOCK I/O   PIDS\n"), "{table}");
    }

    #[test]
    fn top_uses_wide_columns() {
        let top =
            json!({"Titles": ["UID", "PID", "CMD"], "Processes": [["root", "1", "sleep 10"]]});
        assert_eq!(
            top_table(&top),
            format!(
                "UID{}PID{}CMD\nroot{}1{}sleep 10\n",
                " ".repeat(17),
                " ".repeat(17),
                " ".repeat(16),
                " ".repeat(19)
            )
        );
    }

    #[test]
    fn copy_paths_and_base64() {
        assert_eq!(
            split_copy_path("web:/etc/hosts"),
            Some(("web", "/etc/hosts"))
        );
        assert_eq!(split_copy_path("/tmp/a:b"), None);
        assert_eq!(split_copy_path("./x"), None);
        assert_eq!(split_copy_path("-"), None);
        assert_eq!(
            base64_decode("eyJtb2RlIjoxfQ==").as_deref(),
            Some(&b"{\"mode\":1}"[..])
        );
        assert_eq!(
            prune_report("Deleted Containers:", &json!(["a", "b"]), &json!(1_500_000)),
            "Deleted Containers:\na\nb\n\nTotal reclaimed space: 1.5MB\n"
        );
    }
}
