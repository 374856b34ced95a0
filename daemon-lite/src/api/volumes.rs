//! The `/volumes` routes: local volumes.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::body::{self, Body};
use super::error::{ApiError, ApiResult};
use super::fields::Fields;
use super::query::Query;
use crate::daemon::Daemon;
use crate::volumes::Volume;

/// Containers whose mounts use the volume.
fn users(d: &Daemon, name: &str) -> Vec<String> {
    d.containers
        .all()
        .iter()
        .filter(|h| {
            h.record()
                .mount_points
                .iter()
                .any(|m| m["Type"] == "volume" && m["Name"] == name)
                || h.record()
                    .host_config
                    .list("Binds")
                    .iter()
                    .any(|b| b.split(':').next() == Some(name))
        })
        .map(|h| h.id.clone())
        .collect()
}

pub fn describe(d: &Daemon, v: &Volume, usage: bool) -> Value {
    let mut out = json!({
        "Name": v.name,
        "Driver": "local",
        "Mountpoint": d.volumes.data_dir(&v.name),
        "CreatedAt": v.created,
        "Labels": v.labels,
        "Scope": "local",
        "Options": {},
    });
    if usage {
        out["UsageData"] =
            json!({"Size": d.volumes.size(&v.name), "RefCount": users(d, &v.name).len()});
    }
    out
}

pub fn list(d: &Arc<Daemon>, q: &Query) -> ApiResult<Response<Body>> {
    let filters = q.filters()?;
    let rows: Vec<Value> = d
        .volumes
        .list()
        .iter()
        .filter(|v| {
            filters.iter().all(|(k, wanted)| {
                wanted.is_empty()
                    || wanted.iter().any(|w| match k.as_str() {
                        "name" => v.name.contains(w.as_str()),
                        "dangling" => (w == "true" || w == "1") == users(d, &v.name).is_empty(),
                        "label" => match w.split_once('=') {
                            Some((lk, lv)) => v.labels.get(lk).is_some_and(|x| x == lv),
                            None => v.labels.contains_key(w),
                        },
                        _ => true,
                    })
            })
        })
        .map(|v| describe(d, v, false))
        .collect();
    Ok(body::ok_json(&json!({"Volumes": rows, "Warnings": []})))
}

pub async fn create(d: &Arc<Daemon>, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let body = body::read_json(req.into_body(), 1 << 20).await?;
    let driver = body.opt_str("Driver").unwrap_or("local");
    if driver != "local" {
        return Err(ApiError::not_found(format!(
            "plugin \"{driver}\" not found"
        )));
    }
    let labels = body.map("Labels").into_iter().collect();
    let name = body.opt_str("Name");
    if let Some(n) = name {
        crate::volumes::Volumes::check_name(n).map_err(ApiError::bad_request)?;
    }
    let v = d.volumes.get_or_create(name, labels)?;
    d.events.publish(
        "volume",
        "create",
        &v.name,
        [("driver".to_string(), "local".to_string())].into(),
    );
    Ok(body::json(StatusCode::CREATED, &describe(d, &v, false)))
}

pub fn inspect(d: &Arc<Daemon>, name: &str) -> ApiResult<Response<Body>> {
    let v = d
        .volumes
        .read(name)
        .ok_or_else(|| ApiError::not_found(format!("get {name}: no such volume")))?;
    Ok(body::ok_json(&describe(d, &v, false)))
}

pub fn remove(d: &Arc<Daemon>, name: &str, q: &Query) -> ApiResult<Response<Body>> {
    if d.volumes.read(name).is_none() {
        if q.flag("force") {
            return Ok(body::status(StatusCode::NO_CONTENT));
        }
        return Err(ApiError::not_found(format!("get {name}: no such volume")));
    }
    let using = users(d, name);
    if !using.is_empty() {
        return Err(ApiError::conflict(format!(
            "remove {name}: volume is in use - [{}]",
            using.join(", ")
        )));
    }
    d.volumes.remove(name)?;
    d.events
        .publish("volume", "destroy", name, Default::default());
    Ok(body::status(StatusCode::NO_CONTENT))
}

pub fn prune(d: &Arc<Daemon>, q: &Query) -> ApiResult<Response<Body>> {
    let filters = q.filters()?;
    let all = filters
        .get("all")
        .is_some_and(|v| v.iter().any(|x| x == "true" || x == "1"));
    let mut deleted = Vec::new();
    let mut reclaimed = 0;
    for v in d.volumes.list() {
        // Docker prunes anonymous volumes only, unless all=true.
        if (!all && !v.anonymous) || !users(d, &v.name).is_empty() {
            continue;
        }
        reclaimed += d.volumes.size(&v.name);
        if d.volumes.remove(&v.name)? {
            deleted.push(v.name);
        }
    }
    Ok(body::ok_json(
        &json!({"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}),
    ))
}
