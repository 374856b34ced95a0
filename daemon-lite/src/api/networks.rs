//! The `/networks` routes: list, inspect, create, remove, prune, and connect/disconnect of a
//! container, in place when it runs.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::body::{self, Body};
use super::containers::find as find_container;
use super::error::{ApiError, ApiResult};
use super::fields::Fields;
use super::query::Query;
use crate::containers::Status;
use crate::daemon::Daemon;
use crate::networks::{Attachment, NetworkRecord};

fn find(d: &Daemon, key: &str) -> ApiResult<NetworkRecord> {
    d.networks
        .find(key)
        .ok_or_else(|| ApiError::not_found(format!("network {key} not found")))
}

/// Docker's description of a container's endpoint.
pub fn endpoint_settings(network: &str, a: &Attachment) -> Value {
    let ep = a.endpoint.as_ref();
    let v4 = ep.and_then(|e| e.addresses.iter().find(|(ip, _)| ip.is_ipv4()));
    let v6 = ep.and_then(|e| e.addresses.iter().find(|(ip, _)| ip.is_ipv6()));
    let gw = |v6: bool| {
        ep.and_then(|e| e.gateways.iter().find(|g| g.is_ipv6() == v6))
            .map(|g| g.to_string())
            .unwrap_or_default()
    };
    json!({
        "IPAMConfig": null,
        "Links": null,
        "Aliases": a.aliases,
        "NetworkID": a.network_id,
        "EndpointID": ep.map(|e| e.id.clone()).unwrap_or_default(),
        "Gateway": gw(false),
        "IPAddress": v4.map(|(ip, _)| ip.to_string()).unwrap_or_default(),
        "IPPrefixLen": v4.map_or(0, |(_, p)| *p),
        "IPv6Gateway": gw(true),
        "GlobalIPv6Address": v6.map(|(ip, _)| ip.to_string()).unwrap_or_default(),
        "GlobalIPv6PrefixLen": v6.map_or(0, |(_, p)| *p),
        "MacAddress": "",
        "DriverOpts": null,
        "NetworkName": network,
    })
}

fn describe(d: &Daemon, r: &NetworkRecord) -> Value {
    let mut containers = serde_json::Map::new();
    for h in d.containers.all() {
        let rec = h.snapshot();
        if let Some(a) = rec.networks.get(&r.name).filter(|a| a.endpoint.is_some()) {
            let e = endpoint_settings(&r.name, a);
            let with_prefix = |ip: &Value, len: &Value| {
                ip.as_str()
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("{s}/{len}"))
                    .unwrap_or_default()
            };
            containers.insert(
                rec.id.clone(),
                json!({
                    "Name": rec.name,
                    "EndpointID": e["EndpointID"],
                    "MacAddress": "",
                    "IPv4Address": with_prefix(&e["IPAddress"], &e["IPPrefixLen"]),
                    "IPv6Address": with_prefix(&e["GlobalIPv6Address"], &e["GlobalIPv6PrefixLen"]),
                }),
            );
        }
    }
    let config: Vec<Value> = match &r.made {
        Some(m) => m
            .subnets
            .iter()
            .map(|s| {
                let mut c =
                    json!({"Subnet": s.subnet.to_string(), "Gateway": s.gateway.to_string()});
                if let Some(range) = s.ip_range {
                    c["IPRange"] = json!(range.to_string());
                }
                c
            })
            .collect(),
        None => r.ipam_config.clone(),
    };
    json!({
        "Name": r.name,
        "Id": r.id,
        "Created": r.created,
        "Scope": "local",
        "Driver": r.driver,
        "EnableIPv6": r.enable_ipv6,
        "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        "Internal": r.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": r.options,
        "Labels": r.labels,
    })
}

pub fn list(d: &Arc<Daemon>, q: &Query) -> ApiResult<Response<Body>> {
    let filters = q.filters()?;
    let rows: Vec<Value> = d
        .networks
        .list()
        .iter()
        .filter(|r| {
            filters.iter().all(|(k, wanted)| {
                wanted.is_empty()
                    || wanted.iter().any(|w| match k.as_str() {
                        "name" => r.name.contains(w.as_str()),
                        "id" => r.id.starts_with(w.as_str()),
                        "driver" => r.driver == *w,
                        "type" => (w == "builtin") == r.predefined,
                        "label" => match w.split_once('=') {
                            Some((lk, lv)) => r.labels.get(lk).is_some_and(|x| x == lv),
                            None => r.labels.contains_key(w),
                        },
                        _ => true,
                    })
            })
        })
        .map(|r| describe(d, r))
        .collect();
    Ok(body::ok_json(&Value::Array(rows)))
}

pub fn inspect(d: &Arc<Daemon>, key: &str) -> ApiResult<Response<Body>> {
    Ok(body::ok_json(&describe(d, &find(d, key)?)))
}

pub async fn create(d: &Arc<Daemon>, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let b = body::read_json(req.into_body(), 1 << 20).await?;
    let d2 = d.clone();
    let r = tokio::task::spawn_blocking(move || d2.networks.create(&b))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let gateways = crate::dns::gateways(&r);
    if !gateways.is_empty() {
        d.dns.serve(d, &r.id, &gateways).await;
    }
    d.events.publish(
        "network",
        "create",
        &r.id,
        BTreeMap::from([
            ("name".into(), r.name.clone()),
            ("type".into(), r.driver.clone()),
        ]),
    );
    Ok(body::json(
        StatusCode::CREATED,
        &json!({"Id": r.id, "Warning": ""}),
    ))
}

fn users(d: &Daemon, r: &NetworkRecord) -> Vec<String> {
    d.containers
        .all()
        .iter()
        .filter(|h| {
            h.record()
                .networks
                .get(&r.name)
                .is_some_and(|a| a.network_id == r.id)
        })
        .map(|h| h.id.clone())
        .collect()
}

pub async fn remove(d: &Arc<Daemon>, key: &str) -> ApiResult<Response<Body>> {
    let r = find(d, key)?;
    let using = users(d, &r);
    if !r.predefined && !using.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "error while removing network: network {} id {} has active endpoints",
                r.name, r.id
            ),
        ));
    }
    let d2 = d.clone();
    let r2 = r.clone();
    d.dns.stop(&r.id);
    tokio::task::spawn_blocking(move || d2.networks.remove(&r2))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    d.events.publish(
        "network",
        "destroy",
        &r.id,
        BTreeMap::from([("name".into(), r.name.clone())]),
    );
    Ok(body::status(StatusCode::NO_CONTENT))
}

pub async fn prune(d: &Arc<Daemon>) -> ApiResult<Response<Body>> {
    let mut deleted = Vec::new();
    for r in d.networks.list() {
        if r.predefined || !users(d, &r).is_empty() {
            continue;
        }
        let d2 = d.clone();
        let r2 = r.clone();
        d.dns.stop(&r.id);
        if tokio::task::spawn_blocking(move || d2.networks.remove(&r2))
            .await
            .is_ok_and(|x| x.is_ok())
        {
            deleted.push(r.name);
        }
    }
    Ok(body::ok_json(&json!({"NetworksDeleted": deleted})))
}

/// What connect and disconnect name: the network, the request body, the container.
async fn endpoint_request(
    d: &Daemon,
    key: &str,
    req: Request<Incoming>,
) -> ApiResult<(NetworkRecord, Value, Arc<crate::containers::Handle>)> {
    let r = find(d, key)?;
    let b = body::read_json(req.into_body(), 1 << 20).await?;
    let container = b
        .opt_str("Container")
        .ok_or_else(|| ApiError::bad_request("Container is required"))?;
    let h = find_container(d, container)?;
    Ok((r, b, h))
}

/// `connect`: recorded for the next start, and joined now if the container runs.
pub async fn connect(
    d: &Arc<Daemon>,
    key: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (r, b, h) = endpoint_request(d, key, req).await?;
    if matches!(r.driver.as_str(), "null" | "host") {
        return Err(ApiError::bad_request(format!(
            "container cannot be connected to network {}",
            r.name
        )));
    }
    let _op = h.op.lock().await;
    let record = h.snapshot();
    if record.networks.contains_key(&r.name) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "endpoint with name {} already exists in network {}",
                record.name, r.name
            ),
        ));
    }
    if matches!(
        record.host_config.opt_str("NetworkMode"),
        Some("host" | "none")
    ) {
        return Err(ApiError::bad_request(
            "container sharing the host's network or without one cannot be connected",
        ));
    }
    let config = &b["EndpointConfig"];
    let mut attachment = Attachment {
        network_id: r.id.clone(),
        aliases: config.list("Aliases"),
        static_ips: Vec::new(),
        endpoint: None,
    };
    for k in ["IPv4Address", "IPv6Address"] {
        if let Some(ip) = config["IPAMConfig"].opt_str(k) {
            attachment.static_ips.push(
                ip.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid address {ip:?}")))?,
            );
        }
    }
    if record.state.status == Status::Running {
        let ns = crate::netns::open(&d.config.bundle_dir(&h.id).join("netns"))?;
        let ifname = format!("eth{}", record.networks.len());
        let d2 = d.clone();
        let (id, ips, nid) = (h.id.clone(), attachment.static_ips.clone(), r.id.clone());
        let endpoint = tokio::task::spawn_blocking(move || {
            d2.networks
                .join(&nid, &id, ns.as_fd(), &ifname, &ips, false, None)
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
        attachment.endpoint = Some(endpoint);
    }
    h.update(|rec| {
        rec.networks.insert(r.name.clone(), attachment);
    })?;
    d.events.publish(
        "network",
        "connect",
        &r.id,
        BTreeMap::from([
            ("container".into(), h.id.clone()),
            ("name".into(), r.name.clone()),
        ]),
    );
    Ok(body::status(StatusCode::OK))
}

pub async fn disconnect(
    d: &Arc<Daemon>,
    key: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (r, _, h) = endpoint_request(d, key, req).await?;
    let _op = h.op.lock().await;
    let record = h.snapshot();
    let Some(a) = record.networks.get(&r.name).cloned() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("container {} is not connected to network {}", h.id, r.name),
        ));
    };
    if let Some(ep) = a.endpoint.clone() {
        let ns = crate::netns::open(&d.config.bundle_dir(&h.id).join("netns"))?;
        let d2 = d.clone();
        let nid = r.id.clone();
        tokio::task::spawn_blocking(move || d2.networks.leave(&nid, &ep, Some(ns.as_fd())))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    h.update(|rec| {
        rec.networks.remove(&r.name);
    })?;
    d.events.publish(
        "network",
        "disconnect",
        &r.id,
        BTreeMap::from([
            ("container".into(), h.id.clone()),
            ("name".into(), r.name.clone()),
        ]),
    );
    Ok(body::status(StatusCode::OK))
}
