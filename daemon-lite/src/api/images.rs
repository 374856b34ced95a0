//! The `/images` routes berthd serves so far: list, inspect, history, tag, remove, prune,
//! `load` (docker save archives) and `create` with `fromSrc` (import). Pulling from a
//! registry (`fromImage`) answers with an error in the progress stream until the registry
//! client lands.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::body::{self, Body};
use super::error::{ApiError, ApiResult};
use super::query::Query;
use crate::containers::Status;
use crate::daemon::Daemon;
use crate::images::archive::{self, ArchiveError};
use crate::images::{Image, Reference};
use crate::registry::client::Credentials;
use crate::registry::pull::{self, Progress};

fn created_seconds(i: &Image) -> i64 {
    humantime::parse_rfc3339_weak(i.created().trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(i.created()))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

fn containers_using(d: &Daemon, id: &str) -> usize {
    d.containers
        .all()
        .iter()
        .filter(|h| h.record().image_id == id)
        .count()
}

pub fn summary(d: &Daemon, i: &Image) -> Value {
    json!({
        "Id": i.id,
        "ParentId": "",
        "RepoTags": i.repo_tags,
        "RepoDigests": i.repo_digests,
        "Created": created_seconds(i),
        "Size": i.size,
        "SharedSize": -1,
        "VirtualSize": i.size,
        "Labels": i.runtime_config().get("Labels").filter(|l| l.is_object()).cloned().unwrap_or(json!({})),
        "Containers": containers_using(d, &i.id),
    })
}

pub fn list(d: &Arc<Daemon>, q: &Query) -> ApiResult<Response<Body>> {
    let filters = q.filters()?;
    let rows: Vec<Value> = d
        .images
        .list()
        .iter()
        .filter(|i| {
            filters.iter().all(|(k, wanted)| {
                wanted.is_empty()
                    || wanted.iter().any(|w| match k.as_str() {
                        "dangling" => (w == "true") == i.repo_tags.is_empty(),
                        "reference" => i
                            .repo_tags
                            .iter()
                            .any(|t| t == w || t.split(':').next() == Some(w.as_str())),
                        _ => true,
                    })
            })
        })
        .map(|i| summary(d, i))
        .collect();
    Ok(body::ok_json(&Value::Array(rows)))
}

fn find(d: &Daemon, name: &str) -> ApiResult<Image> {
    d.images
        .resolve(name)
        .ok_or_else(|| ApiError::no_such_image(name))
}

pub fn inspect(d: &Arc<Daemon>, name: &str) -> ApiResult<Response<Body>> {
    let i = find(d, name)?;
    Ok(body::ok_json(&json!({
        "Id": i.id,
        "RepoTags": i.repo_tags,
        "RepoDigests": i.repo_digests,
        "Parent": "",
        "Comment": i.config["comment"].as_str().unwrap_or(""),
        "Created": i.created(),
        "Config": i.runtime_config(),
        "Architecture": i.config["architecture"],
        "Os": i.config["os"],
        "Size": i.size,
        "VirtualSize": i.size,
        "GraphDriver": {"Name": d.images.snapshotter.driver(), "Data": {}},
        "RootFS": {"Type": "layers", "Layers": i.diff_ids()},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    })))
}

pub fn history(d: &Arc<Daemon>, name: &str) -> ApiResult<Response<Body>> {
    let i = find(d, name)?;
    let mut rows: Vec<Value> = i.config["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            json!({
                "Id": "<missing>",
                "Created": h["created"].as_str().and_then(|c| humantime::parse_rfc3339_weak(c.trim_end_matches('Z')).ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs()),
                "CreatedBy": h["created_by"].as_str().unwrap_or(""),
                "Tags": null,
                "Size": 0,
                "Comment": h["comment"].as_str().unwrap_or(""),
            })
        })
        .collect();
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top["Id"] = json!(i.id);
        top["Tags"] = json!(i.repo_tags);
        top["Size"] = json!(i.size);
    }
    Ok(body::ok_json(&Value::Array(rows)))
}

pub fn tag(d: &Arc<Daemon>, name: &str, q: &Query) -> ApiResult<Response<Body>> {
    let i = find(d, name)?;
    let repo = q.get("repo").unwrap_or("");
    let reference = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_string(),
    };
    let r = Reference::parse(&reference).map_err(ApiError::bad_request)?;
    let tagged = r
        .tagged()
        .ok_or_else(|| ApiError::bad_request("refusing to create a tag with a digest reference"))?;
    d.images.tag(&i.id, tagged)?;
    d.events.publish(
        "image",
        "tag",
        &i.id,
        [("name".to_string(), reference)].into(),
    );
    Ok(body::status(StatusCode::CREATED))
}

pub fn remove(d: &Arc<Daemon>, name: &str, q: &Query) -> ApiResult<Response<Body>> {
    let i = find(d, name)?;
    let force = q.flag("force");
    let mut report = Vec::new();
    // A tag named: untag it; the image goes when no tag is left (and nothing uses it).
    let named_tag = Reference::parse(name)
        .ok()
        .and_then(|r| r.tagged())
        .filter(|t| i.repo_tags.contains(t));
    if let Some(t) = &named_tag {
        if i.repo_tags.len() > 1 || (!force && containers_using(d, &i.id) > 0) {
            d.images.untag(&i.id, t)?;
            report.push(json!({"Untagged": t}));
            d.events.publish(
                "image",
                "untag",
                &i.id,
                [("name".to_string(), t.clone())].into(),
            );
            return Ok(body::ok_json(&Value::Array(report)));
        }
    } else if i.repo_tags.len() > 1 && !force {
        return Err(ApiError::conflict(format!(
            "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
            crate::names::short(i.id.trim_start_matches("sha256:"))
        )));
    }
    let users: Vec<String> = d
        .containers
        .all()
        .iter()
        .filter(|h| h.record().image_id == i.id)
        .map(|h| (h.id.clone(), h.status()))
        .filter(|(_, s)| !force || *s == Status::Running)
        .map(|(id, _)| id)
        .collect();
    if let Some(user) = users.first() {
        return Err(ApiError::conflict(format!(
            "conflict: unable to delete {} (cannot be forced) - image is being used by container {}",
            crate::names::short(i.id.trim_start_matches("sha256:")),
            crate::names::short(user)
        )));
    }
    for t in &i.repo_tags {
        report.push(json!({"Untagged": t}));
    }
    let layers = d.images.delete(&i.id)?;
    report.push(json!({"Deleted": i.id}));
    for l in layers {
        report.push(json!({"Deleted": l}));
    }
    d.events
        .publish("image", "delete", &i.id, Default::default());
    Ok(body::ok_json(&Value::Array(report)))
}

pub fn prune(d: &Arc<Daemon>, q: &Query) -> ApiResult<Response<Body>> {
    let filters = q.filters()?;
    let all = filters
        .get("dangling")
        .is_some_and(|v| v.iter().any(|x| x == "false" || x == "0"));
    let mut deleted = Vec::new();
    let mut reclaimed = 0;
    for i in d.images.list() {
        if (!all && !i.repo_tags.is_empty()) || containers_using(d, &i.id) > 0 {
            continue;
        }
        reclaimed += i.size;
        d.images.delete(&i.id)?;
        deleted.push(json!({"Deleted": i.id}));
    }
    // Downloads a failed pull kept for its retry.
    reclaimed += d.images.content.clear_ingests();
    Ok(body::ok_json(
        &json!({"ImagesDeleted": deleted, "SpaceReclaimed": reclaimed}),
    ))
}

fn progress_line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn stream_response(lines: Vec<Value>) -> Response<Body> {
    let body: Vec<u8> = lines
        .iter()
        .flat_map(|l| progress_line(l).to_vec())
        .collect();
    Response::builder()
        .header("Content-Type", "application/json")
        .body(body::full(body))
        .unwrap_or_else(|_| Response::new(body::empty()))
}

fn error_line(message: &str) -> Value {
    json!({"errorDetail": {"message": message}, "error": message})
}

/// `POST /images/create`: `fromSrc=-` imports the request body; `fromImage` pulls, streaming
/// Docker's progress lines (an error is the stream's last line, as with dockerd).
pub async fn create(
    d: &Arc<Daemon>,
    q: &Query,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    if let Some(src) = q.get("fromSrc") {
        if src != "-" {
            return Err(ApiError::bad_request(
                "berthd imports from the request body only (fromSrc=-)",
            ));
        }
        let tag = match q.get("repo").filter(|r| !r.is_empty()) {
            Some(repo) => {
                let reference = match q.get("tag").filter(|t| !t.is_empty()) {
                    Some(t) => format!("{repo}:{t}"),
                    None => repo.to_string(),
                };
                Some(
                    Reference::parse(&reference)
                        .map_err(ApiError::bad_request)?
                        .tagged()
                        .ok_or_else(|| ApiError::bad_request("import needs a tag, not a digest"))?,
                )
            }
            None => None,
        };
        let changes: Vec<String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|p| p.strip_prefix("changes="))
            .map(|c| {
                Query::parse(Some(&format!("c={c}")))
                    .get("c")
                    .unwrap_or("")
                    .to_string()
            })
            .filter(|c| !c.is_empty())
            .collect();
        let message = q.get("message").unwrap_or("").to_string();
        let path = d.images.scratch_file()?;
        let spooled = body::spool(req.into_body(), &path).await;
        let result = match spooled {
            Ok(_) => {
                let d2 = d.clone();
                let p2 = path.clone();
                tokio::task::spawn_blocking(move || {
                    archive::import(&d2.images, &p2, tag, &changes, &message)
                })
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
            }
            Err(e) => Err(ArchiveError::Invalid(e.message)),
        };
        let _ = std::fs::remove_file(&path);
        return match result {
            Ok(id) => {
                d.events.publish("image", "import", &id, Default::default());
                Ok(stream_response(vec![json!({"status": id})]))
            }
            Err(ArchiveError::Invalid(m)) => Err(ApiError::bad_request(m)),
            Err(ArchiveError::Failed(m)) => Err(ApiError::internal(m)),
        };
    }
    let image = q.get("fromImage").unwrap_or("");
    if image.is_empty() {
        return Err(ApiError::bad_request("fromImage or fromSrc is required"));
    }
    let reference = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) if !t.starts_with("sha256:") => format!("{image}:{t}"),
        Some(t) => format!("{image}@{t}"),
        None => image.to_string(),
    };
    let r = Reference::parse(&reference).map_err(ApiError::bad_request)?;
    let credentials = req
        .headers()
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
        .and_then(Credentials::from_header);
    let (tx, body) = body::channel(64);
    let d = d.clone();
    tokio::spawn(async move {
        let progress = Progress::new(tx);
        match pull::pull(&d, &r, credentials, &progress).await {
            Ok(image) => {
                let name = r.tagged().unwrap_or_else(|| r.repository.clone());
                d.events.publish(
                    "image",
                    "pull",
                    &name,
                    [("name".to_string(), image.id)].into(),
                );
            }
            Err(e) => progress.send(error_line(&e.to_string())).await,
        }
    });
    Ok(Response::builder()
        .header("Content-Type", "application/json")
        .body(body)
        .unwrap_or_else(|_| Response::new(body::empty())))
}

/// `POST /images/{name}/push`: the JSON-lines progress stream, an error as its last line.
pub fn push(
    d: &Arc<Daemon>,
    name: &str,
    q: &Query,
    req: &Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let reference = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{name}:{t}"),
        None => name.to_string(),
    };
    let r = Reference::parse(&reference).map_err(ApiError::bad_request)?;
    let image = find(d, &reference)?;
    let credentials = req
        .headers()
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
        .and_then(Credentials::from_header);
    let (tx, body) = body::channel(64);
    let d = d.clone();
    tokio::spawn(async move {
        let progress = Progress::new(tx);
        match crate::registry::push::push(&d, &image, &r, credentials, &progress).await {
            Ok(_) => d
                .events
                .publish("image", "push", &reference, Default::default()),
            Err(e) => progress.send(error_line(&e.to_string())).await,
        }
    });
    Ok(Response::builder()
        .header("Content-Type", "application/json")
        .body(body)
        .unwrap_or_else(|_| Response::new(body::empty())))
}

/// `GET /images/get?names=…` (repeatable): `docker save`.
pub fn save(d: &Arc<Daemon>, raw_query: Option<&str>) -> ApiResult<Response<Body>> {
    let mut images = Vec::new();
    for pair in raw_query.unwrap_or("").split('&') {
        let Some(value) = pair.strip_prefix("names=") else {
            continue;
        };
        let name = Query::parse(Some(&format!("n={value}")))
            .get("n")
            .unwrap_or("")
            .to_string();
        let image = find(d, &name)?;
        let tag = Reference::parse(&name)
            .ok()
            .and_then(|r| r.tagged())
            .filter(|t| image.repo_tags.contains(t));
        images.push((image, tag));
    }
    if images.is_empty() {
        return Err(ApiError::bad_request("no image named (names=…)"));
    }
    let (tx, body) = body::channel(8);
    let d = d.clone();
    tokio::task::spawn_blocking(move || {
        let out = crate::api::archive::ChannelWriter::new(tx);
        if let Err(e) = archive::save(&d.images, &images, out) {
            tracing::error!(
                "save: {}",
                match e {
                    ArchiveError::Invalid(m) | ArchiveError::Failed(m) => m,
                }
            );
        }
    });
    Ok(Response::builder()
        .header("Content-Type", "application/x-tar")
        .body(body)
        .unwrap_or_else(|_| Response::new(body::empty())))
}

/// `POST /images/load`: a `docker save` archive in the body.
pub async fn load(d: &Arc<Daemon>, q: &Query, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let quiet = q.flag("quiet");
    let path = d.images.scratch_file()?;
    let spooled = body::spool(req.into_body(), &path).await;
    let result = match spooled {
        Ok(_) => {
            let d2 = d.clone();
            let p2 = path.clone();
            tokio::task::spawn_blocking(move || archive::load(&d2.images, &p2))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
        }
        Err(e) => Err(ArchiveError::Invalid(e.message)),
    };
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(lines) => {
            for l in &lines {
                d.events.publish(
                    "image",
                    "load",
                    l.rsplit(' ').next().unwrap_or(""),
                    Default::default(),
                );
            }
            let _ = quiet;
            Ok(stream_response(
                lines
                    .iter()
                    .map(|l| json!({"stream": format!("{l}\n")}))
                    .collect(),
            ))
        }
        Err(ArchiveError::Invalid(m)) => Ok(stream_response(vec![error_line(&m)])),
        Err(ArchiveError::Failed(m)) => Err(ApiError::internal(m)),
    }
}
