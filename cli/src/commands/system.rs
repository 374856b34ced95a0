//! Engine-wide commands: `inspect`, `info`, `version`, `events`, `system df|prune`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{API_VERSION, Client, Query, next_chunk};
use crate::commands::container::prune_report;
use crate::commands::{confirm, filters_json, pretty_json, print_err, print_out, segment};
use crate::error::{CliError, Result};
use crate::format::{ListFormat, tabwrite};
use crate::template::Template;
use crate::units::{bytes_size, human_size_precision, parse_timestamp_arg};

#[derive(Args, Debug, Clone)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Return JSON for specified type (container, image, network, volume)
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Display total file sizes if the type is container
    #[arg(short = 's', long)]
    pub size: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Show all events created since timestamp
    #[arg(long)]
    pub since: Option<String>,
    /// Stream events until this timestamp
    #[arg(long)]
    pub until: Option<String>,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct DfArgs {
    /// Show detailed information on space usage
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct SystemPruneArgs {
    /// Remove all unused images not just dangling ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Prune anonymous volumes
    #[arg(long)]
    pub volumes: bool,
    /// Provide filter values (e.g. "label=<key>=<value>")
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Display system-wide information
    Info(InfoArgs),
    /// Show docker disk usage
    Df(DfArgs),
    /// Get real time events from the server
    Events(EventsArgs),
    /// Remove unused data
    Prune(SystemPruneArgs),
}

pub async fn system_command(client: &mut Client, command: SystemCommand) -> Result<i32> {
    match command {
        SystemCommand::Info(args) => info(client, args).await,
        SystemCommand::Df(args) => df(client, args).await,
        SystemCommand::Events(args) => events(client, args).await,
        SystemCommand::Prune(args) => prune(client, args).await,
    }
}

/// Finds each name as a container, image, network or volume (or only `--type`).
pub async fn inspect(client: &mut Client, args: InspectArgs) -> Result<i32> {
    let kinds: Vec<&str> = match args.kind.as_deref() {
        Some(kind @ ("container" | "image" | "network" | "volume")) => vec![kind],
        Some(other) => {
            return Err(CliError::Usage(format!(
                "\"{other}\" is not a valid value for --type"
            )));
        }
        None => vec!["container", "image", "network", "volume"],
    };
    let mut found = Vec::new();
    let mut missing = Vec::new();
    'names: for name in &args.names {
        for kind in &kinds {
            let path = match *kind {
                "container" => Query::new(&format!("/containers/{}/json", segment(name)))
                    .flag("size", args.size)
                    .build(),
                "image" => format!("/images/{}/json", segment(name)),
                "network" => format!("/networks/{}", segment(name)),
                _ => format!("/volumes/{}", segment(name)),
            };
            match client.get_json::<Value>(&path).await {
                Ok(object) => {
                    found.push(object);
                    continue 'names;
                }
                Err(err) if err.is_not_found() => {}
                Err(err) => return Err(err),
            }
        }
        let what = match args.kind.as_deref() {
            Some("container") => "container",
            Some("image") => "image",
            Some("network") => "network",
            Some("volume") => "volume",
            _ => "object",
        };
        missing.push(format!("Error: No such {what}: {name}"));
    }
    print_inspected(&found, args.format.as_deref(), &missing)
}

/// Prints inspect results (JSON array or one template line per object) then the misses.
pub fn print_inspected(found: &[Value], format: Option<&str>, missing: &[String]) -> Result<i32> {
    match format {
        None | Some("") | Some("json") => print_out(&pretty_json(&Value::Array(found.to_vec()))?)?,
        Some(format) => {
            let template = Template::parse(&format.replace("\\t", "\t").replace("\\n", "\n"))
                .map_err(CliError::Usage)?;
            let mut out = String::new();
            for object in found {
                out.push_str(&template.render(object).map_err(CliError::Usage)?);
                out.push('\n');
            }
            print_out(&out)?;
        }
    }
    for line in missing {
        print_err(&format!("{line}\n"));
    }
    Ok(if missing.is_empty() { 0 } else { 1 })
}

pub async fn info(client: &mut Client, args: InfoArgs) -> Result<i32> {
    let info: Value = client.get_json("/info").await?;
    if let Some(format) = &args.format {
        return print_template(format, &info);
    }
    print_out(&info_text(&info))?;
    Ok(0)
}

fn print_template(format: &str, data: &Value) -> Result<i32> {
    let text = if format == "json" {
        data.to_string()
    } else {
        Template::parse(&format.replace("\\t", "\t").replace("\\n", "\n"))
            .map_err(CliError::Usage)?
            .render(data)
            .map_err(CliError::Usage)?
    };
    print_out(&format!("{text}\n"))?;
    Ok(0)
}

/// `docker info`'s human layout, client section first.
pub fn info_text(info: &Value) -> String {
    let text = |key: &str| match &info[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut out = String::new();
    out.push_str("Client:\n");
    out.push_str(&format!(" Version:    {}\n", env!("CARGO_PKG_VERSION")));
    out.push_str(" Context:    default\n");
    out.push_str(" Debug Mode: false\n\n");
    out.push_str("Server:\n");
    out.push_str(&format!(" Containers: {}\n", text("Containers")));
    out.push_str(&format!("  Running: {}\n", text("ContainersRunning")));
    out.push_str(&format!("  Paused: {}\n", text("ContainersPaused")));
    out.push_str(&format!("  Stopped: {}\n", text("ContainersStopped")));
    out.push_str(&format!(" Images: {}\n", text("Images")));
    out.push_str(&format!(" Server Version: {}\n", text("ServerVersion")));
    out.push_str(&format!(" Storage Driver: {}\n", text("Driver")));
    for pair in info["DriverStatus"].as_array().into_iter().flatten() {
        if let (Some(k), Some(v)) = (pair[0].as_str(), pair[1].as_str()) {
            out.push_str(&format!("  {k}: {v}\n"));
        }
    }
    out.push_str(&format!(" Logging Driver: {}\n", text("LoggingDriver")));
    out.push_str(&format!(" Cgroup Driver: {}\n", text("CgroupDriver")));
    out.push_str(&format!(" Cgroup Version: {}\n", text("CgroupVersion")));
    if let Some(runtimes) = info["Runtimes"].as_object() {
        out.push_str(&format!(
            " Runtimes: {}\n",
            runtimes.keys().cloned().collect::<Vec<_>>().join(" ")
        ));
    }
    out.push_str(&format!(" Default Runtime: {}\n", text("DefaultRuntime")));
    if let Some(options) = info["SecurityOptions"].as_array() {
        out.push_str(" Security Options:\n");
        for option in options.iter().filter_map(Value::as_str) {
            let name = option.strip_prefix("name=").unwrap_or(option);
            out.push_str(&format!("  {}\n", name.split(',').next().unwrap_or(name)));
        }
    }
    out.push_str(&format!(" Kernel Version: {}\n", text("KernelVersion")));
    out.push_str(&format!(" Operating System: {}\n", text("OperatingSystem")));
    out.push_str(&format!(" OSType: {}\n", text("OSType")));
    out.push_str(&format!(" Architecture: {}\n", text("Architecture")));
    out.push_str(&format!(" CPUs: {}\n", text("NCPU")));
    out.push_str(&format!(
        " Total Memory: {}\n",
        bytes_size(info["MemTotal"].as_f64().unwrap_or(0.0))
    ));
    out.push_str(&format!(" Name: {}\n", text("Name")));
    out.push_str(&format!(" ID: {}\n", text("ID")));
    out.push_str(&format!(" Docker Root Dir: {}\n", text("DockerRootDir")));
    out.push_str(&format!(
        " Debug Mode: {}\n",
        info["Debug"].as_bool().unwrap_or(false)
    ));
    out.push_str(&format!(
        " Experimental: {}\n",
        info["ExperimentalBuild"].as_bool().unwrap_or(false)
    ));
    out.push_str(&format!(
        " Live Restore Enabled: {}\n",
        info["LiveRestoreEnabled"].as_bool().unwrap_or(false)
    ));
    for warning in info["Warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        out.push_str(&format!("\n{warning}"));
    }
    if info["Warnings"].as_array().is_some_and(|w| !w.is_empty()) {
        out.push('\n');
    }
    out
}

/// docker's version template, rendered with this crate's template engine.
const VERSION_TEMPLATE: &str = "Client:
 Version:\t{{.Client.Version}}
 API version:\t{{.Client.ApiVersion}}
 OS/Arch:\t{{.Client.Os}}/{{.Client.Arch}}
 Context:\tdefault
{{- if .Server}}{{with .Server}}

Server:{{with .Platform}}{{if .Name}} {{.Name}}{{end}}{{end}}
{{- range .Components}}
 {{.Name}}:
  Version:\t{{.Version}}
{{- if eq .Name \"Engine\"}}
  API version:\t{{index .Details \"ApiVersion\"}} (minimum version {{index .Details \"MinAPIVersion\"}})
  Go version:\t{{index .Details \"GoVersion\"}}
  Git commit:\t{{index .Details \"GitCommit\"}}
  Built:\t{{index .Details \"BuildTime\"}}
  OS/Arch:\t{{index .Details \"Os\"}}/{{index .Details \"Arch\"}}
  Experimental:\t{{index .Details \"Experimental\"}}
{{- else}}{{range $key, $value := .Details}}
  {{$key}}:\t{{$value}}
{{- end}}{{end}}
{{- end}}{{end}}{{end}}
";

pub async fn version(client: &mut Client, args: VersionArgs) -> Result<i32> {
    let server = client.get_json::<Value>("/version").await;
    let client_section = json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": API_VERSION,
        "Os": std::env::consts::OS,
        "Arch": go_arch(std::env::consts::ARCH),
    });
    let (server_value, server_error) = match server {
        Ok(mut server) => {
            // Older daemons omit Components: synthesize the Engine entry from the top level.
            if server["Components"].as_array().is_none_or(|c| c.is_empty()) {
                server["Components"] = json!([{
                    "Name": "Engine",
                    "Version": server["Version"],
                    "Details": {
                        "ApiVersion": server["ApiVersion"], "MinAPIVersion": server["MinAPIVersion"],
                        "GoVersion": server["GoVersion"], "GitCommit": server["GitCommit"],
                        "BuildTime": server["BuildTime"], "Os": server["Os"], "Arch": server["Arch"],
                        "Experimental": server["Experimental"].as_bool().unwrap_or(false).to_string(),
                    }
                }]);
            }
            (server, None)
        }
        Err(err) => (Value::Null, Some(err)),
    };
    let data = json!({"Client": client_section, "Server": server_value});
    match &args.format {
        Some(format) => {
            print_template(format, &data)?;
        }
        None => {
            let text = Template::parse(VERSION_TEMPLATE)
                .map_err(CliError::Usage)?
                .render(&data)
                .map_err(CliError::Usage)?;
            print_out(&tabwrite(&text, 20, 1))?;
        }
    }
    match server_error {
        Some(err) => Err(err),
        None => Ok(0),
    }
}

fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub async fn events(client: &mut Client, args: EventsArgs) -> Result<i32> {
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
    let path = Query::new("/events")
        .opt("since", since)
        .opt("until", until)
        .opt("filters", filters_json(&args.filter)?)
        .build();
    let template = match args.format.as_deref() {
        None | Some("") => None,
        Some("json") => Some(Template::parse("{{json .}}").map_err(CliError::Usage)?),
        Some(format) => Some(Template::parse(format).map_err(CliError::Usage)?),
    };
    let response = client.get(&path).await?;
    let mut body = response.into_body();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = next_chunk(&mut body).await? {
        pending.extend_from_slice(&chunk);
        while let Some(newline) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=newline).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let event: Value = serde_json::from_slice(&line)?;
            let text = match &template {
                Some(template) => template.render(&event).map_err(CliError::Usage)?,
                None => event_line(&event),
            };
            print_out(&format!("{text}\n"))?;
        }
    }
    Ok(0)
}

/// `2024-01-02T03:04:05.123456789Z container start 0123… (image=busybox, name=web)`.
pub fn event_line(event: &Value) -> String {
    let nanos = event["timeNano"]
        .as_u64()
        .unwrap_or_else(|| event["time"].as_u64().unwrap_or(0) * 1_000_000_000);
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos);
    let kind = event["Type"].as_str().unwrap_or_default();
    let action = event["Action"]
        .as_str()
        .or(event["status"].as_str())
        .unwrap_or_default();
    let id = event
        .pointer("/Actor/ID")
        .and_then(Value::as_str)
        .or(event["id"].as_str())
        .unwrap_or_default();
    let mut line = format!(
        "{} {kind} {action} {id}",
        humantime::format_rfc3339_nanos(time)
    );
    if let Some(attributes) = event
        .pointer("/Actor/Attributes")
        .and_then(Value::as_object)
        .filter(|a| !a.is_empty())
    {
        let pairs: Vec<String> = attributes
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        line.push_str(&format!(" ({})", pairs.join(", ")));
    }
    line
}

const DF_TABLE: &str = "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}";

async fn df(client: &mut Client, args: DfArgs) -> Result<i32> {
    let usage: Value = client.get_json("/system/df").await?;
    if args.verbose && args.format.is_none() {
        print_out(&pretty_json(&usage)?)?;
        return Ok(0);
    }
    let rows = df_rows(&usage);
    let headers = [
        ("Type", "TYPE"),
        ("TotalCount", "TOTAL"),
        ("Active", "ACTIVE"),
        ("Size", "SIZE"),
        ("Reclaimable", "RECLAIMABLE"),
    ];
    print_out(&ListFormat::parse(args.format.as_deref(), DF_TABLE)?.render(&rows, &headers)?)?;
    Ok(0)
}

/// The four summary rows of `docker system df`.
pub fn df_rows(usage: &Value) -> Vec<Value> {
    let list = |key: &str| usage[key].as_array().cloned().unwrap_or_default();
    let size = |v: f64| human_size_precision(v, 3);
    let reclaimable = |part: f64, total: f64| {
        if total > 0.0 {
            format!("{} ({}%)", size(part), (part / total * 100.0) as i64)
        } else {
            size(part)
        }
    };
    let images = list("Images");
    let layers = usage["LayersSize"]
        .as_f64()
        .unwrap_or_else(|| images.iter().filter_map(|i| i["Size"].as_f64()).sum());
    let active_images: Vec<&Value> = images
        .iter()
        .filter(|i| i["Containers"].as_i64().unwrap_or(0) > 0)
        .collect();
    let used: f64 = active_images
        .iter()
        .map(|i| {
            i["Size"].as_f64().unwrap_or(0.0) - i["SharedSize"].as_f64().unwrap_or(0.0).max(0.0)
        })
        .sum();
    let containers = list("Containers");
    let container_size: f64 = containers.iter().filter_map(|c| c["SizeRw"].as_f64()).sum();
    let running: Vec<&Value> = containers
        .iter()
        .filter(|c| c["State"].as_str() == Some("running"))
        .collect();
    let running_size: f64 = running.iter().filter_map(|c| c["SizeRw"].as_f64()).sum();
    let volumes = list("Volumes");
    let volume_size: f64 = volumes
        .iter()
        .filter_map(|v| v.pointer("/UsageData/Size").and_then(Value::as_f64))
        .filter(|s| *s > 0.0)
        .sum();
    let active_volumes: Vec<&Value> = volumes
        .iter()
        .filter(|v| {
            v.pointer("/UsageData/RefCount")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0
        })
        .collect();
    let unused_volume_size: f64 = volumes
        .iter()
        .filter(|v| {
            v.pointer("/UsageData/RefCount")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0
        })
        .filter_map(|v| v.pointer("/UsageData/Size").and_then(Value::as_f64))
        .filter(|s| *s > 0.0)
        .sum();
    let cache = list("BuildCache");
    let cache_size: f64 = cache.iter().filter_map(|c| c["Size"].as_f64()).sum();
    let cache_reclaimable: f64 = cache
        .iter()
        .filter(|c| !c["InUse"].as_bool().unwrap_or(false))
        .filter_map(|c| c["Size"].as_f64())
        .sum();
    vec![
        json!({"Type": "Images", "TotalCount": images.len().to_string(), "Active": active_images.len().to_string(), "Size": size(layers), "Reclaimable": reclaimable((layers - used).max(0.0), layers)}),
        json!({"Type": "Containers", "TotalCount": containers.len().to_string(), "Active": running.len().to_string(), "Size": size(container_size), "Reclaimable": reclaimable(container_size - running_size, container_size)}),
        json!({"Type": "Local Volumes", "TotalCount": volumes.len().to_string(), "Active": active_volumes.len().to_string(), "Size": size(volume_size), "Reclaimable": reclaimable(unused_volume_size, volume_size)}),
        json!({"Type": "Build Cache", "TotalCount": cache.len().to_string(), "Active": "0", "Size": size(cache_size), "Reclaimable": size(cache_reclaimable)}),
    ]
}

async fn prune(client: &mut Client, args: SystemPruneArgs) -> Result<i32> {
    if !args.force {
        let mut warning = String::from(
            "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n",
        );
        if args.volumes {
            warning.push_str("  - all anonymous volumes not used by at least one container\n");
        }
        warning.push_str(if args.all {
            "  - all images without at least one container associated to them\n"
        } else {
            "  - all dangling images\n"
        });
        warning.push_str("  - unused build cache\n\nAre you sure you want to continue?");
        if !confirm(&warning) {
            return Ok(0);
        }
    }
    let filters = filters_json(&args.filter)?;
    let mut reclaimed = 0.0;
    let containers: Value = client
        .post_json(
            &Query::new("/containers/prune")
                .opt("filters", filters.clone())
                .build(),
            None,
        )
        .await?;
    reclaimed += containers["SpaceReclaimed"].as_f64().unwrap_or(0.0);
    let mut out = String::new();
    let mut section = |title: &str, names: &Value| {
        let names: Vec<&str> = names
            .as_array()
            .map(|n| n.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !names.is_empty() {
            out.push_str(&format!("{title}\n{}\n\n", names.join("\n")));
        }
    };
    section("Deleted Containers:", &containers["ContainersDeleted"]);
    let networks: Value = client
        .post_json(
            &Query::new("/networks/prune")
                .opt("filters", filters.clone())
                .build(),
            None,
        )
        .await?;
    section("Deleted Networks:", &networks["NetworksDeleted"]);
    if args.volumes {
        let volumes: Value = client
            .post_json(
                &Query::new("/volumes/prune")
                    .opt("filters", filters.clone())
                    .build(),
                None,
            )
            .await?;
        reclaimed += volumes["SpaceReclaimed"].as_f64().unwrap_or(0.0);
        section("Deleted Volumes:", &volumes["VolumesDeleted"]);
    }
    let mut image_filters = args.filter.clone();
    image_filters.push(format!("dangling={}", !args.all));
    let images: Value = client
        .post_json(
            &Query::new("/images/prune")
                .opt("filters", filters_json(&image_filters)?)
                .build(),
            None,
        )
        .await?;
    reclaimed += images["SpaceReclaimed"].as_f64().unwrap_or(0.0);
    let image_lines: Vec<Value> = images["ImagesDeleted"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| {
            let untagged = e["Untagged"]
                .as_str()
                .map(|t| Value::String(format!("untagged: {t}")));
            let deleted = e["Deleted"]
                .as_str()
                .map(|d| Value::String(format!("deleted: {d}")));
            untagged.into_iter().chain(deleted)
        })
        .collect();
    section("Deleted Images:", &Value::Array(image_lines));
    // Build cache is optional: a daemon without a builder answers 404.
    if let Ok(cache) = client.post_json::<Value>("/build/prune", None).await {
        reclaimed += cache["SpaceReclaimed"].as_f64().unwrap_or(0.0);
        section("Deleted build cache objects:", &cache["CachesDeleted"]);
    }
    out.push_str(&prune_report("", &Value::Null, &json!(reclaimed)));
    print_out(&out)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_layout() {
        let data = json!({
            "Client": {"Version": "0.1.0", "ApiVersion": "1.41", "Os": "linux", "Arch": "amd64"},
            "Server": {"Platform": {"Name": "berth"}, "Components": [
                {"Name": "Engine", "Version": "0.1.0", "Details": {"ApiVersion": "1.41", "MinAPIVersion": "1.24", "GoVersion": "n/a", "GitCommit": "abc", "BuildTime": "today", "Os": "linux", "Arch": "amd64", "Experimental": "false"}},
                {"Name": "runtime", "Version": "0.1.0", "Details": {"Commit": "def"}}
            ]}
        });
        let text = Template::parse(VERSION_TEMPLATE)
            .expect("parses")
            .render(&data)
            .expect("renders");
        let out = tabwrite(&text, 20, 1);
        assert_eq!(
            out,
            "Client:\n Version:           0.1.0\n API version:       1.41\n OS/Arch:           linux/amd64\n Context:           default\n\n\
             Server: berth\n Engine:\n  Version:          0.1.0\n  API version:      1.41 (minimum version 1.24)\n  Go version:       n/a\n  Git commit:       abc\n  Built:            today\n  OS/Arch:          linux/amd64\n  Experimental:     false\n runtime:\n  Version:          0.1.0\n  Commit:           def\n"
        );
    }

    #[test]
    fn event_lines() {
        let event = json!({"Type": "container", "Action": "start", "Actor": {"ID": "abc", "Attributes": {"name": "web", "image": "busybox"}}, "timeNano": 1_000_000_001u64});
        assert_eq!(
            event_line(&event),
            "1970-01-01T00:00:01.000000001Z container start abc (image=busybox, name=web)"
        );
    }

    #[test]
    fn df_summary() {
        let usage = json!({
            "LayersSize": 10_000_000,
            "Images": [{"Size": 6_000_000, "SharedSize": 0, "Containers": 1}, {"Size": 4_000_000, "SharedSize": 0, "Containers": 0}],
            "Containers": [{"SizeRw": 1000, "State": "running"}, {"SizeRw": 3000, "State": "exited"}],
            "Volumes": [{"UsageData": {"Size": 2000, "RefCount": 0}}],
            "BuildCache": []
        });
        let rows = df_rows(&usage);
        assert_eq!(rows[0]["Reclaimable"], "4MB (40%)");
        assert_eq!(rows[1]["Active"], "1");
        assert_eq!(rows[1]["Reclaimable"], "3kB (75%)");
        assert_eq!(rows[2]["Reclaimable"], "2kB (100%)");
        let table = ListFormat::parse(None, DF_TABLE)
            .expect("valid")
            .render(
                &rows,
                &[
                    ("Type", "TYPE"),
                    ("TotalCount", "TOTAL"),
                    ("Active", "ACTIVE"),
                    ("Size", "SIZE"),
                    ("Reclaimable", "RECLAIMABLE"),
                ],
            )
            .expect("renders");
        assert!(table.starts_with("TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE\nImages          2         1         10MB      4MB (40%)\n"), "{table}");
    }

    #[test]
    fn info_lists_counts() {
        let text = info_text(
            &json!({"Containers": 3, "ContainersRunning": 1, "ContainersPaused": 0, "ContainersStopped": 2, "Images": 5, "MemTotal": 2147483648u64, "Driver": "overlay2"}),
        );
        assert!(
            text.contains(" Containers: 3\n  Running: 1\n  Paused: 0\n  Stopped: 2\n Images: 5\n")
        );
        assert!(text.contains(" Total Memory: 2GiB\n"));
        assert!(text.contains(" Storage Driver: overlay2\n"));
    }
}
