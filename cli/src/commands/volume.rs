//! `volume ls|create|rm|inspect|prune`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{Client, Query};
use crate::commands::container::prune_report;
use crate::commands::{confirm, filters_json, for_each_name, inspect_each, print_out, segment};
use crate::container_config::parse_labels;
use crate::error::Result;
use crate::format::ListFormat;

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// List volumes
    #[command(alias = "list")]
    Ls(VolumeLsArgs),
    /// Create a volume
    Create(VolumeCreateArgs),
    /// Remove one or more volumes
    #[command(alias = "remove")]
    Rm(VolumeRmArgs),
    /// Display detailed information on one or more volumes
    Inspect(VolumeInspectArgs),
    /// Remove unused local volumes
    Prune(VolumePruneArgs),
}

#[derive(Args, Debug)]
pub struct VolumeLsArgs {
    /// Only display volume names
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Provide filter values (e.g. "dangling=true")
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct VolumeCreateArgs {
    /// Specify volume driver name
    #[arg(short = 'd', long, default_value = "local")]
    pub driver: String,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt")]
    pub opt: Vec<String>,
    /// Set metadata for a volume
    #[arg(long)]
    pub label: Vec<String>,
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct VolumeRmArgs {
    /// Force the removal of one or more volumes
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct VolumeInspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct VolumePruneArgs {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Provide filter values (e.g. "label=<label>")
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

const VOLUME_TABLE: &str = "table {{.Driver}}\t{{.Name}}";

pub async fn volume_command(client: &mut Client, command: VolumeCommand) -> Result<i32> {
    match command {
        VolumeCommand::Ls(args) => {
            let path = Query::new("/volumes")
                .opt("filters", filters_json(&args.filter)?)
                .build();
            let list: Value = client.get_json(&path).await?;
            let mut volumes = list["Volumes"].as_array().cloned().unwrap_or_default();
            volumes.sort_by(|a, b| a["Name"].as_str().cmp(&b["Name"].as_str()));
            let rows: Vec<Value> = volumes.iter().map(volume_row).collect();
            let format = if args.quiet {
                Some("{{.Name}}")
            } else {
                args.format.as_deref()
            };
            let headers = [
                ("Name", "VOLUME NAME"),
                ("Driver", "DRIVER"),
                ("Scope", "SCOPE"),
                ("Mountpoint", "MOUNTPOINT"),
                ("Labels", "LABELS"),
            ];
            print_out(&ListFormat::parse(format, VOLUME_TABLE)?.render(&rows, &headers)?)?;
            Ok(0)
        }
        VolumeCommand::Create(args) => {
            let body = json!({
                "Name": args.name.clone().unwrap_or_default(),
                "Driver": args.driver,
                "DriverOpts": parse_labels(&args.opt),
                "Labels": parse_labels(&args.label),
            });
            let created: Value = client.post_json("/volumes/create", Some(&body)).await?;
            print_out(&format!(
                "{}\n",
                created["Name"].as_str().unwrap_or_default()
            ))?;
            Ok(0)
        }
        VolumeCommand::Rm(args) => {
            let force = args.force;
            for_each_name(client, &args.names, async |client, name| {
                let path = Query::new(&format!("/volumes/{}", segment(name)))
                    .flag("force", force)
                    .build();
                let response = client.delete(&path).await?;
                crate::client::read_body(response).await?;
                Ok(Some(name.to_string()))
            })
            .await
        }
        VolumeCommand::Inspect(args) => {
            inspect_each(
                client,
                &args.names,
                args.format.as_deref(),
                "volume",
                |name| format!("/volumes/{}", segment(name)),
            )
            .await
        }
        VolumeCommand::Prune(args) => {
            let warning = if args.all {
                "WARNING! This will remove all local volumes not used by at least one container."
            } else {
                "WARNING! This will remove anonymous local volumes not used by at least one container."
            };
            if !args.force && !confirm(&format!("{warning}\nAre you sure you want to continue?")) {
                return Ok(0);
            }
            let mut filters = args.filter.clone();
            if args.all {
                filters.push("all=true".into());
            }
            let path = Query::new("/volumes/prune")
                .opt("filters", filters_json(&filters)?)
                .build();
            let report: Value = client.post_json(&path, None).await?;
            print_out(&prune_report(
                "Deleted Volumes:",
                &report["VolumesDeleted"],
                &report["SpaceReclaimed"],
            ))?;
            Ok(0)
        }
    }
}

fn volume_row(volume: &Value) -> Value {
    let labels = volume["Labels"]
        .as_object()
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "Name": volume["Name"],
        "Driver": volume["Driver"],
        "Scope": volume["Scope"],
        "Mountpoint": volume["Mountpoint"],
        "Labels": labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_table() {
        let rows = vec![volume_row(
            &json!({"Name": "data", "Driver": "local", "Labels": {"a": "b"}}),
        )];
        let out = ListFormat::parse(None, VOLUME_TABLE)
            .expect("valid")
            .render(&rows, &[("Name", "VOLUME NAME"), ("Driver", "DRIVER")])
            .expect("renders");
        assert_eq!(out, "DRIVER    VOLUME NAME\nlocal     data\n");
        assert_eq!(rows[0]["Labels"], "a=b");
    }
}
