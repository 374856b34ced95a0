//! `network ls|create|rm|inspect|connect|disconnect|prune`.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use crate::client::{Client, Query};
use crate::commands::container::prune_report;
use crate::commands::{confirm, filters_json, for_each_name, inspect_each, print_out, segment};
use crate::container_config::parse_labels;
use crate::error::{CliError, Result};
use crate::format::{ListFormat, short_id};

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// List networks
    #[command(alias = "list")]
    Ls(NetworkLsArgs),
    /// Create a network
    Create(NetworkCreateArgs),
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm(NamesArgs),
    /// Display detailed information on one or more networks
    Inspect(NetworkInspectArgs),
    /// Connect a container to a network
    Connect(ConnectArgs),
    /// Disconnect a container from a network
    Disconnect(DisconnectArgs),
    /// Remove all unused networks
    Prune(crate::commands::container::PruneArgs),
}

#[derive(Args, Debug)]
pub struct NetworkLsArgs {
    /// Only display network IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Do not truncate the output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Provide filter values (e.g. "driver=bridge")
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct NetworkCreateArgs {
    /// Driver to manage the Network
    #[arg(short = 'd', long, default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR format that represents a network segment
    #[arg(long)]
    pub subnet: Vec<String>,
    /// IPv4 or IPv6 Gateway for the master subnet
    #[arg(long)]
    pub gateway: Vec<String>,
    /// Allocate container ip from a sub-range
    #[arg(long = "ip-range")]
    pub ip_range: Vec<String>,
    /// Restrict external access to the network
    #[arg(long)]
    pub internal: bool,
    /// Enable manual container attachment
    #[arg(long)]
    pub attachable: bool,
    /// Enable IPv6 networking
    #[arg(long)]
    pub ipv6: bool,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt")]
    pub opt: Vec<String>,
    /// Set metadata on a network
    #[arg(long)]
    pub label: Vec<String>,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NetworkInspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Add network-scoped alias for the container
    #[arg(long)]
    pub alias: Vec<String>,
    /// IPv4 address (e.g., "172.30.100.104")
    #[arg(long)]
    pub ip: Option<String>,
    pub network: String,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct DisconnectArgs {
    /// Force the container to disconnect from a network
    #[arg(short = 'f', long)]
    pub force: bool,
    pub network: String,
    pub container: String,
}

pub async fn network_command(client: &mut Client, command: NetworkCommand) -> Result<i32> {
    match command {
        NetworkCommand::Ls(args) => ls(client, args).await,
        NetworkCommand::Create(args) => create(client, args).await,
        NetworkCommand::Rm(args) => {
            for_each_name(client, &args.names, async |client, name| {
                let response = client
                    .delete(&format!("/networks/{}", segment(name)))
                    .await?;
                crate::client::read_body(response).await?;
                Ok(Some(name.to_string()))
            })
            .await
        }
        NetworkCommand::Inspect(args) => {
            inspect_each(
                client,
                &args.names,
                args.format.as_deref(),
                "network",
                |name| format!("/networks/{}", segment(name)),
            )
            .await
        }
        NetworkCommand::Connect(args) => {
            let mut endpoint = Map::new();
            if !args.alias.is_empty() {
                endpoint.insert("Aliases".into(), json!(args.alias));
            }
            if let Some(ip) = &args.ip {
                endpoint.insert("IPAMConfig".into(), json!({"IPv4Address": ip}));
            }
            let body = json!({"Container": args.container, "EndpointConfig": endpoint});
            client
                .post_discard(
                    &format!("/networks/{}/connect", segment(&args.network)),
                    Some(&body),
                )
                .await?;
            Ok(0)
        }
        NetworkCommand::Disconnect(args) => {
            let body = json!({"Container": args.container, "Force": args.force});
            client
                .post_discard(
                    &format!("/networks/{}/disconnect", segment(&args.network)),
                    Some(&body),
                )
                .await?;
            Ok(0)
        }
        NetworkCommand::Prune(args) => {
            if !args.force
                && !confirm(
                    "WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue?",
                )
            {
                return Ok(0);
            }
            let path = Query::new("/networks/prune")
                .opt("filters", filters_json(&args.filter)?)
                .build();
            let report: Value = client.post_json(&path, None).await?;
            let deleted = report["NetworksDeleted"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !deleted.is_empty() {
                let text = prune_report("Deleted Networks:", &Value::Array(deleted), &Value::Null);
                // Networks free no disk space; docker prints only the names.
                let names_only = text
                    .split("\nTotal reclaimed space")
                    .next()
                    .unwrap_or_default()
                    .trim_end();
                print_out(&format!("{names_only}\n"))?;
            }
            Ok(0)
        }
    }
}

const NETWORK_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}";

async fn ls(client: &mut Client, args: NetworkLsArgs) -> Result<i32> {
    let path = Query::new("/networks")
        .opt("filters", filters_json(&args.filter)?)
        .build();
    let mut networks: Vec<Value> = client.get_json(&path).await?;
    networks.sort_by(|a, b| a["Name"].as_str().cmp(&b["Name"].as_str()));
    let rows: Vec<Value> = networks
        .iter()
        .map(|n| network_row(n, !args.no_trunc))
        .collect();
    let format = if args.quiet {
        Some("{{.ID}}")
    } else {
        args.format.as_deref()
    };
    let headers = [
        ("ID", "NETWORK ID"),
        ("Name", "NAME"),
        ("Driver", "DRIVER"),
        ("Scope", "SCOPE"),
        ("IPv6", "IPV6"),
        ("Internal", "INTERNAL"),
        ("CreatedAt", "CREATED AT"),
    ];
    print_out(&ListFormat::parse(format, NETWORK_TABLE)?.render(&rows, &headers)?)?;
    Ok(0)
}

fn network_row(network: &Value, truncate: bool) -> Value {
    let id = network["Id"].as_str().unwrap_or_default();
    let labels = network["Labels"]
        .as_object()
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "ID": if truncate { short_id(id) } else { id.to_string() },
        "Name": network["Name"],
        "Driver": network["Driver"],
        "Scope": network["Scope"],
        "IPv6": network["EnableIPv6"].as_bool().unwrap_or(false).to_string(),
        "Internal": network["Internal"].as_bool().unwrap_or(false).to_string(),
        "Labels": labels,
        "CreatedAt": network["Created"],
    })
}

/// The body of `POST /networks/create`.
pub fn create_body(args: &NetworkCreateArgs) -> Result<Value> {
    if args.gateway.len() > args.subnet.len() || args.ip_range.len() > args.subnet.len() {
        return Err(CliError::Usage(
            "every --gateway and --ip-range needs a matching --subnet".into(),
        ));
    }
    let configs: Vec<Value> = args
        .subnet
        .iter()
        .enumerate()
        .map(|(i, subnet)| {
            let mut config = Map::new();
            config.insert("Subnet".into(), json!(subnet));
            if let Some(gateway) = args.gateway.get(i) {
                config.insert("Gateway".into(), json!(gateway));
            }
            if let Some(range) = args.ip_range.get(i) {
                config.insert("IPRange".into(), json!(range));
            }
            Value::Object(config)
        })
        .collect();
    Ok(json!({
        "Name": args.name,
        "Driver": args.driver,
        "Internal": args.internal,
        "Attachable": args.attachable,
        "EnableIPv6": args.ipv6,
        "Options": parse_labels(&args.opt),
        "Labels": parse_labels(&args.label),
        "IPAM": {"Driver": "default", "Config": configs},
    }))
}

async fn create(client: &mut Client, args: NetworkCreateArgs) -> Result<i32> {
    let body = create_body(&args)?;
    let created: Value = client.post_json("/networks/create", Some(&body)).await?;
    if let Some(warning) = created["Warning"].as_str().filter(|w| !w.is_empty()) {
        crate::commands::print_err(&format!("WARNING: {warning}\n"));
    }
    print_out(&format!("{}\n", created["Id"].as_str().unwrap_or_default()))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        args: NetworkCreateArgs,
    }

    #[test]
    fn create_body_maps_ipam() {
        let harness = Harness::try_parse_from([
            "create",
            "--subnet",
            "10.9.0.0/24",
            "--gateway",
            "10.9.0.1",
            "--internal",
            "-o",
            "mtu=1400",
            "--label",
            "a=b",
            "net1",
        ])
        .expect("parses");
        let body = create_body(&harness.args).expect("valid");
        assert_eq!(body["Name"], "net1");
        assert_eq!(body["Driver"], "bridge");
        assert_eq!(body["Internal"], true);
        assert_eq!(body["Options"], json!({"mtu": "1400"}));
        assert_eq!(
            body["IPAM"]["Config"],
            json!([{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1"}])
        );
        let bad =
            Harness::try_parse_from(["create", "--gateway", "10.9.0.1", "net1"]).expect("parses");
        assert!(create_body(&bad.args).is_err());
    }

    #[test]
    fn network_rows() {
        let row = network_row(
            &json!({"Id": "0123456789abcdef", "Name": "bridge", "Driver": "bridge", "Scope": "local"}),
            true,
        );
        let out = ListFormat::parse(None, NETWORK_TABLE)
            .expect("valid")
            .render(
                &[row],
                &[
                    ("ID", "NETWORK ID"),
                    ("Name", "NAME"),
                    ("Driver", "DRIVER"),
                    ("Scope", "SCOPE"),
                ],
            )
            .expect("renders");
        assert_eq!(
            out,
            "NETWORK ID     NAME      DRIVER    SCOPE\n0123456789ab   bridge    bridge    local\n"
        );
    }
}
