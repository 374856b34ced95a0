//! The `/containers` routes.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::body::{self, Body};
use super::error::{ApiError, ApiResult};
use super::fields::Fields;
use super::query::Query;
use crate::containers::lifecycle::{self, WaitCondition};
use crate::containers::{Handle, Record, Status, ZERO_TIME, spec};
use crate::daemon::Daemon;
use crate::monitor::Request as MonitorRequest;

/// The largest create body accepted (a seccomp profile inline is the big part).
const MAX_CREATE_BODY: usize = 4 << 20;

pub fn find(d: &Daemon, id: &str) -> ApiResult<Arc<Handle>> {
    d.containers
        .find(id)
        .ok_or_else(|| ApiError::no_such_container(id))
}

fn unix_seconds(rfc3339: &str) -> i64 {
    humantime::parse_rfc3339_weak(rfc3339.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(rfc3339))
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

/// "Up 3 seconds", "Exited (0) 5 minutes ago", "Created": `docker ps`'s STATUS column.
pub fn human_status(r: &Record) -> String {
    let ago = |t: &str| {
        let then = unix_seconds(t);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        human_duration((now - then).max(0) as u64)
    };
    match r.state.status {
        Status::Running => format!("Up {}", ago(&r.state.started_at)),
        Status::Paused => format!("Up {} (Paused)", ago(&r.state.started_at)),
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            r.state.exit_code,
            ago(&r.state.finished_at)
        ),
        Status::Exited if r.state.finished_at != ZERO_TIME => format!(
            "Exited ({}) {} ago",
            r.state.exit_code,
            ago(&r.state.finished_at)
        ),
        Status::Removing => "Removal In Progress".into(),
        Status::Dead => "Dead".into(),
        _ => "Created".into(),
    }
}

/// Docker's go-units HumanDuration.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".into(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 7200 => "About an hour".into(),
        s if s < 48 * 3600 => format!("{} hours", s / 3600),
        s if s < 7 * 24 * 3600 * 2 => format!("{} days", s / 86400),
        s if s < 30 * 24 * 3600 * 3 => format!("{} weeks", s / (7 * 86400)),
        s if s < 365 * 24 * 3600 * 2 => format!("{} months", s / (30 * 86400)),
        s => format!("{} years", s / (365 * 86400)),
    }
}

fn command_line(r: &Record, d: &Daemon) -> Vec<String> {
    let image = d.images.resolve(&r.image_id);
    let empty = Value::Null;
    let image_config = image.as_ref().map_or(&empty, |i| i.runtime_config());
    spec::command(image_config, &r.config)
}

/// `NetworkSettings.Networks` of a container: its networks by name.
fn network_settings(r: &Record) -> Value {
    let mut out = serde_json::Map::new();
    for (name, a) in &r.networks {
        out.insert(name.clone(), super::networks::endpoint_settings(name, a));
    }
    match r.host_config.opt_str("NetworkMode") {
        Some(mode @ ("host" | "none")) if out.is_empty() => {
            out.insert(mode.to_string(), json!({"NetworkID": "", "IPAddress": ""}));
        }
        _ => {}
    }
    Value::Object(out)
}

/// `NetworkSettings.Ports` (what `docker port` prints): each exposed or published port, with
/// the host ports it got while the container runs (`null` for one not published).
fn port_map(r: &Record) -> Value {
    let mut map = serde_json::Map::new();
    let exposed = r.config["ExposedPorts"].as_object().into_iter().flatten();
    let bound = r.host_config["PortBindings"]
        .as_object()
        .into_iter()
        .flatten();
    for (key, _) in exposed.chain(bound) {
        let key = if key.contains('/') {
            key.clone()
        } else {
            format!("{key}/tcp")
        };
        map.entry(key).or_insert(Value::Null);
    }
    for p in &r.published {
        let binding = json!({
            "HostIp": p.host_ip.map_or("0.0.0.0".to_string(), |ip| ip.to_string()),
            "HostPort": p.host_port.to_string(),
        });
        match map.entry(p.key()).or_insert(Value::Null) {
            Value::Array(list) => list.push(binding),
            slot => *slot = json!([binding]),
        }
    }
    Value::Object(map)
}

/// The `Ports` of a `/containers/json` row.
fn port_summary(r: &Record) -> Value {
    r.published
        .iter()
        .map(|p| {
            json!({
                "IP": p.host_ip.map_or("0.0.0.0".to_string(), |ip| ip.to_string()),
                "PrivatePort": p.container_port,
                "PublicPort": p.host_port,
                "Type": if p.udp { "udp" } else { "tcp" },
            })
        })
        .collect()
}

/// One row of `/containers/json`.
pub fn summary(d: &Daemon, r: &Record, size: bool) -> Value {
    let args = command_line(r, d);
    let network_mode = r.host_config.opt_str("NetworkMode").unwrap_or("default");
    let mut v = json!({
        "Id": r.id,
        "Names": [format!("/{}", r.name)],
        "Image": r.image,
        "ImageID": r.image_id,
        "Command": args.join(" "),
        "Created": unix_seconds(&r.created),
        "Ports": port_summary(r),
        "Labels": r.config.get("Labels").filter(|l| l.is_object()).cloned().unwrap_or(json!({})),
        "State": r.state.status.as_str(),
        "Status": human_status(r),
        "HostConfig": {"NetworkMode": network_mode},
        "NetworkSettings": {"Networks": network_settings(r)},
        "Mounts": r.mount_points,
    });
    if size {
        let rw = d
            .images
            .snapshotter
            .usage(&r.snapshot)
            .map_or(0, |u| u.size);
        let base = d.images.resolve(&r.image_id).map_or(0, |i| i.size);
        v["SizeRw"] = json!(rw);
        v["SizeRootFs"] = json!(rw + base);
    }
    v
}

fn matches_filters(r: &Record, filters: &std::collections::BTreeMap<String, Vec<String>>) -> bool {
    filters.iter().all(|(key, wanted)| {
        wanted.is_empty()
            || wanted.iter().any(|w| match key.as_str() {
                "id" => r.id.starts_with(w.as_str()),
                "name" => r.name.contains(w.as_str()),
                "status" => r.state.status.as_str() == w,
                "exited" => r.state.status == Status::Exited && w.parse() == Ok(r.state.exit_code),
                "ancestor" => r.image == *w || r.image_id.contains(w.as_str()),
                "label" => {
                    let labels = r.config.map("Labels");
                    match w.split_once('=') {
                        Some((k, v)) => labels.iter().any(|(lk, lv)| lk == k && lv == v),
                        None => labels.iter().any(|(lk, _)| lk == w),
                    }
                }
                "network" => r.host_config.opt_str("NetworkMode").unwrap_or("default") == w,
                _ => true,
            })
    })
}

pub fn list(d: &Arc<Daemon>, q: &Query) -> ApiResult<Response<Body>> {
    let all = q.flag("all");
    let filters = q.filters()?;
    let limit = q.int("limit")?.filter(|&n| n > 0);
    let size = q.flag("size");
    let mut rows = Vec::new();
    for h in d.containers.all() {
        let r = h.snapshot();
        let running = matches!(
            r.state.status,
            Status::Running | Status::Paused | Status::Restarting
        );
        if !all && limit.is_none() && !running && !filters.contains_key("status") {
            continue;
        }
        if !matches_filters(&r, &filters) {
            continue;
        }
        rows.push(summary(d, &r, size));
        if limit.is_some_and(|l| rows.len() as i64 >= l) {
            break;
        }
    }
    Ok(body::ok_json(&Value::Array(rows)))
}

pub async fn create(
    d: &Arc<Daemon>,
    q: &Query,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let body = body::read_json(req.into_body(), MAX_CREATE_BODY).await?;
    let id = lifecycle::create(d, q.get("name"), body).await?;
    Ok(body::json(
        StatusCode::CREATED,
        &json!({"Id": id, "Warnings": []}),
    ))
}

pub fn inspect(d: &Arc<Daemon>, id: &str) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    let r = h.snapshot();
    let args = command_line(&r, d);
    let bundle = d.config.bundle_dir(&r.id);
    let s = &r.state;
    let bridge = r
        .networks
        .get("bridge")
        .map(|a| super::networks::endpoint_settings("bridge", a))
        .unwrap_or(json!({"IPAddress": "", "IPPrefixLen": 0, "Gateway": ""}));
    let mut config = r.config.clone();
    let image = d.images.resolve(&r.image_id);
    if let (Some(obj), Some(image)) = (config.as_object_mut(), &image) {
        // Docker's inspect shows the effective values, the image's where the container has none.
        let ic = image.runtime_config();
        for key in ["Cmd", "Entrypoint", "WorkingDir", "User"] {
            if obj.get(key).is_none_or(Value::is_null) {
                if let Some(v) = ic.get(key) {
                    obj.insert(key.into(), v.clone());
                }
            }
        }
        obj.insert(
            "Env".into(),
            json!(spec::environment(
                ic,
                &r.config,
                &spec::hostname(&r.id, &r.config)
            )),
        );
        obj.insert("Hostname".into(), json!(spec::hostname(&r.id, &r.config)));
    }
    Ok(body::ok_json(&json!({
        "Id": r.id,
        "Created": r.created,
        "Path": args.first().cloned().unwrap_or_default(),
        "Args": args.get(1..).unwrap_or(&[]),
        "State": {
            "Status": s.status.as_str(),
            "Running": matches!(s.status, Status::Running | Status::Paused),
            "Paused": s.status == Status::Paused,
            "Restarting": s.status == Status::Restarting,
            "OOMKilled": s.oom_killed,
            "Dead": s.status == Status::Dead,
            "Pid": s.pid,
            "ExitCode": s.exit_code,
            "Error": s.error,
            "StartedAt": s.started_at,
            "FinishedAt": s.finished_at,
        },
        "Image": r.image_id,
        "ResolvConfPath": bundle.join("resolv.conf"),
        "HostnamePath": bundle.join("hostname"),
        "HostsPath": bundle.join("hosts"),
        "LogPath": r.log_path.clone().map(|p| p.display().to_string()).unwrap_or_default(),
        "Name": format!("/{}", r.name),
        "RestartCount": r.restart_count,
        "Driver": d.images.snapshotter.driver(),
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": r.host_config,
        "GraphDriver": {"Name": d.images.snapshotter.driver(), "Data": {}},
        "Mounts": r.mount_points,
        "Config": config,
        "NetworkSettings": {
            "Bridge": "", "SandboxID": "", "SandboxKey": if s.status == Status::Running { bundle.join("netns").display().to_string() } else { String::new() },
            "Ports": port_map(&r),
            "IPAddress": bridge["IPAddress"].clone(),
            "IPPrefixLen": bridge["IPPrefixLen"].clone(),
            "Gateway": bridge["Gateway"].clone(),
            "Networks": network_settings(&r),
        },
    })))
}

pub async fn start(d: &Arc<Daemon>, id: &str) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    Ok(if lifecycle::start(d, &h).await? {
        body::status(StatusCode::NO_CONTENT)
    } else {
        body::status(StatusCode::NOT_MODIFIED)
    })
}

pub async fn stop(d: &Arc<Daemon>, id: &str, q: &Query) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    Ok(
        if lifecycle::stop(d, &h, q.get("signal"), q.int("t")?).await? {
            body::status(StatusCode::NO_CONTENT)
        } else {
            body::status(StatusCode::NOT_MODIFIED)
        },
    )
}

pub async fn restart(d: &Arc<Daemon>, id: &str, q: &Query) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    lifecycle::restart(d, &h, q.get("signal"), q.int("t")?).await?;
    Ok(body::status(StatusCode::NO_CONTENT))
}

pub async fn kill(d: &Arc<Daemon>, id: &str, q: &Query) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    lifecycle::kill(d, &h, q.get("signal")).await?;
    Ok(body::status(StatusCode::NO_CONTENT))
}

/// `wait`: the headers at once, the body when the condition is met.
pub fn wait(d: &Arc<Daemon>, id: &str, q: &Query) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    let condition = match q.get("condition").unwrap_or("") {
        "" | "not-running" => WaitCondition::NotRunning,
        "next-exit" => WaitCondition::NextExit,
        "removed" => WaitCondition::Removed,
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid condition: {other:?}"
            )));
        }
    };
    let (tx, body) = body::channel(1);
    tokio::spawn(async move {
        let code = lifecycle::wait(&h, condition).await;
        let error = h.record().state.error.clone();
        let error = if error.is_empty() {
            Value::Null
        } else {
            json!({"Message": error})
        };
        let mut bytes =
            serde_json::to_vec(&json!({"StatusCode": code, "Error": error})).unwrap_or_default();
        bytes.push(b'\n');
        let _ = tx.send(Bytes::from(bytes)).await;
    });
    Ok(Response::builder()
        .header("Content-Type", "application/json")
        .body(body)
        .unwrap_or_else(|_| Response::new(body::empty())))
}

pub fn rename(d: &Arc<Daemon>, id: &str, q: &Query) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    let name = q.get("name").unwrap_or("");
    let name = crate::names::check_name(name).map_err(ApiError::bad_request)?;
    let old = h.name();
    match d.containers.rename(&h, name) {
        Ok(()) => {}
        Err(crate::containers::InsertError::NameInUse(other)) => {
            return Err(ApiError::conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
            )));
        }
        Err(crate::containers::InsertError::Io(e)) => return Err(e.into()),
    }
    let mut attrs = lifecycle::event_attributes(&h.record());
    attrs.insert("oldName".into(), format!("/{old}"));
    d.events.publish("container", "rename", &h.id, attrs);
    Ok(body::status(StatusCode::NO_CONTENT))
}

/// Sends a request line to the container's monitor.
pub async fn tell_monitor(
    d: &Daemon,
    h: &Handle,
    request: &MonitorRequest,
) -> ApiResult<tokio::net::UnixStream> {
    let socket = d.config.monitor_socket(&h.id);
    let mut stream = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| ApiError::conflict(format!("container {} is not running ({e})", h.id)))?;
    let mut line = serde_json::to_vec(request).map_err(|e| ApiError::internal(e.to_string()))?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .await
        .map_err(|e| ApiError::internal(format!("container {}: monitor: {e}", h.id)))?;
    Ok(stream)
}

pub async fn resize(d: &Arc<Daemon>, id: &str, q: &Query) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    let dim = |k: &str| -> ApiResult<u16> {
        let v = q.int(k)?.unwrap_or(0);
        u16::try_from(v).map_err(|_| ApiError::bad_request(format!("invalid {k}: {v}")))
    };
    let (height, width) = (dim("h")?, dim("w")?);
    if h.status() != Status::Running {
        return Err(ApiError::conflict(format!(
            "cannot resize container {}: it is not running",
            h.id
        )));
    }
    tell_monitor(d, &h, &MonitorRequest::Resize { height, width }).await?;
    Ok(body::status(StatusCode::OK))
}

/// `pause` / `unpause`: freeze or thaw the container's cgroup.
pub async fn pause(d: &Arc<Daemon>, id: &str, freeze: bool) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    let _op = h.op.lock().await;
    let status = h.status();
    match (freeze, status) {
        (true, Status::Running) | (false, Status::Paused) => {}
        (true, Status::Paused) => {
            return Err(ApiError::conflict(format!(
                "Container {} is already paused",
                h.id
            )));
        }
        (false, _) => {
            return Err(ApiError::conflict(format!(
                "Container {} is not paused",
                h.id
            )));
        }
        (true, _) => {
            return Err(ApiError::conflict(format!(
                "Container {} is not running",
                h.id
            )));
        }
    }
    let c = d
        .runtime
        .load(&h.id)
        .map_err(|e| ApiError::conflict(format!("container {}: {e}", h.id)))?;
    if freeze { c.pause() } else { c.resume() }
        .map_err(|e| ApiError::internal(format!("container {}: {e}", h.id)))?;
    h.update(|r| {
        r.state.status = if freeze {
            Status::Paused
        } else {
            Status::Running
        }
    })?;
    let action = if freeze { "pause" } else { "unpause" };
    d.events.publish(
        "container",
        action,
        &h.id,
        lifecycle::event_attributes(&h.record()),
    );
    Ok(body::status(StatusCode::NO_CONTENT))
}

pub async fn remove(d: &Arc<Daemon>, id: &str, q: &Query) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    lifecycle::remove(d, &h, q.flag("force"), q.flag("v")).await?;
    Ok(body::status(StatusCode::NO_CONTENT))
}

pub async fn prune(d: &Arc<Daemon>, q: &Query) -> ApiResult<Response<Body>> {
    let filters = q.filters()?;
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for h in d.containers.all() {
        let r = h.snapshot();
        if !matches!(
            r.state.status,
            Status::Exited | Status::Created | Status::Dead
        ) || !matches_filters(
            &r,
            &filters
                .iter()
                .filter(|(k, _)| *k == "label")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ) {
            continue;
        }
        reclaimed += d
            .images
            .snapshotter
            .usage(&r.snapshot)
            .map_or(0, |u| u.size);
        if lifecycle::remove(d, &h, false, false).await.is_ok() {
            deleted.push(r.id);
        }
    }
    Ok(body::ok_json(
        &json!({"ContainersDeleted": deleted, "SpaceReclaimed": reclaimed}),
    ))
}

/// `top`: `ps` over the host, its rows narrowed to the container's processes (as dockerd).
pub async fn top(d: &Arc<Daemon>, id: &str, q: &Query) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    if h.status() != Status::Running {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            h.id
        )));
    }
    let pids = d
        .runtime
        .load(&h.id)
        .and_then(|c| c.processes())
        .map_err(|e| ApiError::internal(format!("container {}: {e}", h.id)))?;
    let args: Vec<String> = q
        .get("ps_args")
        .filter(|a| !a.is_empty())
        .unwrap_or("-ef")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let out = run_ps(args).await?;
    let mut lines = out.lines();
    let header = lines.next().unwrap_or("");
    let titles: Vec<&str> = header.split_whitespace().collect();
    let pid_col = titles
        .iter()
        .position(|t| *t == "PID")
        .ok_or_else(|| ApiError::bad_request("Couldn't find PID field in ps output"))?;
    let mut processes = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < titles.len() {
            continue;
        }
        let Ok(pid) = fields[pid_col].parse::<i32>() else {
            continue;
        };
        if pids.contains(&pid) {
            let mut row: Vec<String> = fields[..titles.len() - 1]
                .iter()
                .map(|s| s.to_string())
                .collect();
            row.push(fields[titles.len() - 1..].join(" "));
            processes.push(row);
        }
    }
    Ok(body::ok_json(
        &json!({"Titles": titles, "Processes": processes}),
    ))
}

/// Runs `ps` off the async threads; its stdout.
async fn run_ps(args: Vec<String>) -> ApiResult<String> {
    let output =
        tokio::task::spawn_blocking(move || std::process::Command::new("ps").args(&args).output())
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::internal(format!("ps: {e}")))?;
    if !output.status.success() {
        return Err(ApiError::bad_request(format!(
            "ps: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// One stats sample in Docker's shape, from the container's cgroup.
fn stats_sample(d: &Daemon, h: &Handle, previous: &Value) -> Value {
    let read = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
    let name = format!("/{}", h.name());
    let Ok(c) = d.runtime.load(&h.id) else {
        return json!({"read": read, "name": name, "id": h.id, "pids_stats": {}, "cpu_stats": {}, "precpu_stats": {}, "memory_stats": {}, "blkio_stats": {}});
    };
    let s = serde_json::to_value(c.stats()).unwrap_or(Value::Null);
    let system_usage = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| {
            let cpu = t
                .lines()
                .next()?
                .split_whitespace()
                .skip(1)
                .take(7)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum::<u64>();
            Some(cpu * 10_000_000)
        })
        .unwrap_or(0);
    let cpus = crate::platform::cpus();
    let mem = &s["memory"];
    let cache = mem["raw"]["total_inactive_file"]
        .as_u64()
        .or_else(|| mem["raw"]["inactive_file"].as_u64())
        .unwrap_or(0);
    json!({
        "read": read,
        "preread": previous.get("read").cloned().unwrap_or(json!(ZERO_TIME)),
        "name": name,
        "id": h.id,
        "pids_stats": {"current": s["pids"]["current"], "limit": s["pids"]["limit"]},
        "cpu_stats": {
            "cpu_usage": {
                "total_usage": s["cpu"]["usage"]["total"],
                "usage_in_kernelmode": s["cpu"]["usage"]["kernel"],
                "usage_in_usermode": s["cpu"]["usage"]["user"],
            },
            "system_cpu_usage": system_usage,
            "online_cpus": cpus,
            "throttling_data": {
                "periods": s["cpu"]["throttling"]["periods"],
                "throttled_periods": s["cpu"]["throttling"]["throttledPeriods"],
                "throttled_time": s["cpu"]["throttling"]["throttledTime"],
            },
        },
        "precpu_stats": previous.get("cpu_stats").cloned().unwrap_or(json!({"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0, "online_cpus": cpus})),
        "memory_stats": {
            "usage": mem["usage"]["usage"],
            "max_usage": mem["usage"]["max"],
            "limit": match mem["usage"]["limit"].as_u64() {
                Some(l) if l > 0 && l < (1u64 << 62) => l,
                _ => crate::platform::memory(),
            },
            "failcnt": mem["usage"]["failcnt"],
            "stats": {"inactive_file": cache},
        },
        "blkio_stats": {"io_service_bytes_recursive": s["blkio"]["ioServiceBytesRecursive"]},
        "networks": {},
    })
}

/// `stats`: one sample (`stream=false`), or one a second until the client goes away.
pub fn stats(d: &Arc<Daemon>, id: &str, q: &Query) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    let stream = q.get("stream").is_none_or(|s| s == "1" || s == "true");
    let one_shot = q.flag("one-shot");
    let d = d.clone();
    let (tx, body) = body::channel(2);
    tokio::spawn(async move {
        let mut previous = Value::Null;
        if !one_shot {
            // The first sample's precpu_stats come from a sample a moment earlier, as dockerd.
            previous = stats_sample(&d, &h, &Value::Null);
            if !stream {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        loop {
            let sample = stats_sample(&d, &h, &previous);
            let mut bytes = serde_json::to_vec(&sample).unwrap_or_default();
            bytes.push(b'\n');
            if tx.send(Bytes::from(bytes)).await.is_err() || !stream {
                return;
            }
            previous = sample;
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                () = tx.closed() => return,
            }
            if h.status() != Status::Running {
                return;
            }
        }
    });
    Ok(Response::builder()
        .header("Content-Type", "application/json")
        .body(body)
        .unwrap_or_else(|_| Response::new(body::empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_docker_prints_them() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(3), "3 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3 * 3600), "3 hours");
    }
}
