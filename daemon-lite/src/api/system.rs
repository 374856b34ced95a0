//! `_ping`, `version`, `info`, `events`, `system/df`, `auth` (login), and the predefined
//! networks.

use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, Response};
use serde_json::{Value, json};

use super::body::{self, Body};
use super::error::{ApiError, ApiResult};
use super::query::{Query, parse_time};
use super::{API_VERSION, MIN_API_VERSION};
use crate::containers::Status;
use crate::daemon::Daemon;
use crate::events::Filter;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn ping(method: &Method) -> Response<Body> {
    let body = if method == Method::HEAD {
        body::empty()
    } else {
        body::full("OK")
    };
    Response::builder()
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("Cache-Control", "no-cache, no-store, must-revalidate")
        .header("Builder-Version", "1")
        .header("Docker-Experimental", "false")
        .body(body)
        .unwrap_or_else(|_| Response::new(body::empty()))
}

pub fn version(_d: &Arc<Daemon>) -> Response<Body> {
    let kernel = crate::platform::kernel_version();
    body::ok_json(&json!({
        "Platform": {"Name": "berth"},
        "Components": [{"Name": "Engine", "Version": VERSION, "Details": {
            "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux",
            "Arch": crate::platform::architecture(), "KernelVersion": kernel,
        }}],
        "Version": VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": crate::platform::architecture(),
        "KernelVersion": kernel,
        "BuildTime": "",
    }))
}

pub fn info(d: &Arc<Daemon>) -> Response<Body> {
    let all = d.containers.all();
    let count = |s: &[Status]| all.iter().filter(|h| s.contains(&h.status())).count();
    let running = count(&[Status::Running, Status::Restarting]);
    let paused = count(&[Status::Paused]);
    let monitor = d.config.monitor.display().to_string();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into());
    body::ok_json(&json!({
        "ID": d.id,
        "Containers": all.len(),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": all.len() - running - paused,
        "Images": d.images.count(),
        "Driver": d.images.snapshotter.driver(),
        "DriverStatus": [["Backing Filesystem", ""]],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "macvlan", "null"], "Log": ["json-file", "none"]},
        "MemoryLimit": true,
        "SwapLimit": true,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "OomKillDisable": false,
        "IPv4Forwarding": true,
        "Debug": false,
        "NFd": std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()),
        "NGoroutines": 0,
        "SystemTime": humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": crate::platform::cgroup_version(),
        "NEventsListener": 0,
        "KernelVersion": crate::platform::kernel_version(),
        "OperatingSystem": os,
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {}, "Mirrors": []},
        "NCPU": crate::platform::cpus(),
        "MemTotal": crate::platform::memory(),
        "DockerRootDir": d.config.root,
        "Name": crate::platform::hostname(),
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": VERSION,
        "Runtimes": {"berth": {"path": monitor}},
        "DefaultRuntime": "berth",
        "Swarm": {"LocalNodeState": "inactive", "ControlAvailable": false, "NodeID": "", "NodeAddr": ""},
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "SecurityOptions": ["name=seccomp,profile=builtin", "name=no-new-privileges"],
        "Warnings": d.networks.datapath_warning.iter().collect::<Vec<_>>(),
    }))
}

/// `/events`: past events from `since`, then live ones until `until` (or for ever).
pub fn events(d: &Arc<Daemon>, q: &Query) -> ApiResult<Response<Body>> {
    let since = q
        .get("since")
        .filter(|s| !s.is_empty())
        .map(parse_time)
        .transpose()?;
    let until = q
        .get("until")
        .filter(|s| !s.is_empty())
        .map(parse_time)
        .transpose()?;
    let filter = Filter(q.filters()?);
    let (past, mut rx) = d.events.subscribe(since);
    let (tx, body) = body::channel(64);
    tokio::spawn(async move {
        let line = |e: &crate::events::Event| {
            let mut v = serde_json::to_vec(&e.to_json()).unwrap_or_default();
            v.push(b'\n');
            Bytes::from(v)
        };
        for e in past.iter().filter(|e| filter.matches(e)) {
            if until.is_some_and(|u| e.time_nano > u) || tx.send(line(e)).await.is_err() {
                return;
            }
        }
        loop {
            let next = match until {
                Some(u) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos());
                    let left = std::time::Duration::from_nanos(u.saturating_sub(now) as u64);
                    match tokio::time::timeout(left, rx.recv()).await {
                        Ok(r) => r,
                        Err(_) => return,
                    }
                }
                None => tokio::select! {
                    r = rx.recv() => r,
                    () = tx.closed() => return,
                },
            };
            match next {
                Ok(e) if filter.matches(&e) => {
                    if tx.send(line(&e)).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    Ok(Response::builder()
        .header("Content-Type", "application/json")
        .body(body)
        .unwrap_or_else(|_| Response::new(body::empty())))
}

pub fn df(d: &Arc<Daemon>) -> Response<Body> {
    let images: Vec<Value> = d
        .images
        .list()
        .iter()
        .map(|i| super::images::summary(d, i))
        .collect();
    let containers: Vec<Value> = d
        .containers
        .all()
        .iter()
        .map(|h| super::containers::summary(d, &h.snapshot(), true))
        .collect();
    let volumes: Vec<Value> = d
        .volumes
        .list()
        .iter()
        .map(|v| super::volumes::describe(d, v, true))
        .collect();
    let layers: u64 = d.images.list().iter().map(|i| i.size).sum();
    body::ok_json(&json!({
        "LayersSize": layers,
        "Images": images,
        "Containers": containers,
        "Volumes": volumes,
        "BuildCache": [],
    }))
}

/// `POST /auth` (`docker login`): checks the credentials against the registry; berthd keeps
/// nothing (the client stores them and sends them with each pull and push).
pub async fn auth(
    d: &Arc<Daemon>,
    req: hyper::Request<hyper::body::Incoming>,
) -> ApiResult<Response<Body>> {
    use crate::registry::client::{Credentials, Registry, RegistryError};
    let v = body::read_json(req.into_body(), 64 * 1024).await?;
    let field = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let (username, password) = (field("username"), field("password"));
    if username.is_empty() {
        return Err(ApiError::bad_request("a username is required"));
    }
    let host = crate::registry::login_host(&field("serveraddress"));
    let unauthorized = |m: String| ApiError::new(hyper::StatusCode::UNAUTHORIZED, m);
    let registry = Registry::connect(
        crate::registry::api_host(&host),
        &d.config.registries,
        Some(Credentials { username, password }),
    )
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    match registry.check_login().await {
        Ok(()) => Ok(body::json(
            hyper::StatusCode::OK,
            &serde_json::json!({"Status": "Login Succeeded", "IdentityToken": ""}),
        )),
        Err(RegistryError::Unauthorized(m)) => Err(unauthorized(format!(
            "login to {host}: {m} (incorrect username or password?)"
        ))),
        Err(e) => Err(ApiError::internal(format!("login to {host}: {e}"))),
    }
}
