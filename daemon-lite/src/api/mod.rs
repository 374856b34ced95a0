//! The Docker Engine API over a unix socket: HTTP/1.1 with keep-alive and upgrades (attach),
//! the `/v1.NN` prefixes the Docker CLI sends, errors as `{"message": …}`.
//!
//! Routing is one `match` on (method, path segments): the API is a flat table of ~50 routes,
//! and hijacked connections need hyper's upgrades directly anyway.

pub mod archive;
pub mod attach;
pub mod body;
pub mod containers;
pub mod error;
pub mod exec;
pub mod fields;
pub mod images;
pub mod logs;
pub mod networks;
pub mod query;
pub mod system;
pub mod volumes;

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use crate::daemon::Daemon;
use body::Body;
use error::{ApiError, ApiResult};
use query::Query;

/// The API version berthd speaks, and the oldest it accepts.
pub const API_VERSION: &str = "1.47";
pub const MIN_API_VERSION: &str = "1.24";

/// Serves connections until the listener fails.
pub async fn serve(d: Arc<Daemon>, listener: UnixListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let d = d.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(d.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!("connection: {e}");
            }
        });
    }
}

fn version_number(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Splits off `/v1.NN`; a version above ours is refused as dockerd does.
pub fn strip_version(path: &str) -> ApiResult<&str> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok(path);
    };
    let (version, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(asked) = version_number(version) else {
        return Ok(path);
    };
    let ours = version_number(API_VERSION).unwrap_or((1, 47));
    let min = version_number(MIN_API_VERSION).unwrap_or((1, 24));
    if asked > ours {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if asked < min {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    Ok(&path[path.len() - tail.len() - 1..])
}

async fn handle(d: Arc<Daemon>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut response = match route(&d, req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::error!("{method} {path}: {}", e.message);
            } else {
                tracing::debug!("{method} {path}: {} {}", e.status, e.message);
            }
            body::json(e.status, &serde_json::json!({"message": e.message}))
        }
    };
    let headers = response.headers_mut();
    headers.insert(
        "Api-Version",
        hyper::header::HeaderValue::from_static(API_VERSION),
    );
    headers.insert("Server", hyper::header::HeaderValue::from_static("berthd"));
    headers.insert("Ostype", hyper::header::HeaderValue::from_static("linux"));
    Ok(response)
}

async fn route(d: &Arc<Daemon>, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let path = strip_version(req.uri().path())?.to_string();
    let q = Query::parse(req.uri().query());
    // Segments are percent-decoded (clients escape `:` and `@` in image names).
    let decoded: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(query::decode_segment)
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let method = req.method().clone();
    use Method as M;
    match (&method, segs.as_slice()) {
        (&M::GET | &M::HEAD, ["_ping"]) => Ok(system::ping(&method)),
        (&M::GET, ["version"]) => Ok(system::version(d)),
        (&M::GET, ["info"]) => Ok(system::info(d)),
        (&M::GET, ["events"]) => system::events(d, &q),
        (&M::GET, ["system", "df"]) => Ok(system::df(d)),
        (&M::POST, ["auth"]) => system::auth(d, req).await,

        (&M::GET, ["containers", "json"]) => containers::list(d, &q),
        (&M::POST, ["containers", "create"]) => containers::create(d, &q, req).await,
        (&M::POST, ["containers", "prune"]) => containers::prune(d, &q).await,
        (&M::GET, ["containers", id, "json"]) => containers::inspect(d, id),
        (&M::POST, ["containers", id, "start"]) => containers::start(d, id).await,
        (&M::POST, ["containers", id, "stop"]) => containers::stop(d, id, &q).await,
        (&M::POST, ["containers", id, "restart"]) => containers::restart(d, id, &q).await,
        (&M::POST, ["containers", id, "kill"]) => containers::kill(d, id, &q).await,
        (&M::POST, ["containers", id, "wait"]) => containers::wait(d, id, &q),
        (&M::POST, ["containers", id, "rename"]) => containers::rename(d, id, &q),
        (&M::POST, ["containers", id, "resize"]) => containers::resize(d, id, &q).await,
        (&M::POST, ["containers", id, "attach"]) => attach::attach(d, id, &q, req).await,
        (&M::GET, ["containers", id, "logs"]) => logs::logs(d, id, &q).await,
        (&M::GET, ["containers", id, "top"]) => containers::top(d, id, &q).await,
        (&M::GET, ["containers", id, "stats"]) => containers::stats(d, id, &q),
        (&M::POST, ["containers", id, "exec"]) => exec::create(d, id, req).await,
        (&M::POST, ["exec", id, "start"]) => exec::start(d, id, req).await,
        (&M::POST, ["exec", id, "resize"]) => exec::resize(d, id, &q).await,
        (&M::GET, ["exec", id, "json"]) => exec::inspect(d, id),
        (&M::HEAD, ["containers", id, "archive"]) => archive::stat(d, id, &q).await,
        (&M::GET, ["containers", id, "archive"]) => archive::get(d, id, &q).await,
        (&M::PUT, ["containers", id, "archive"]) => archive::put(d, id, &q, req).await,
        (&M::GET, ["containers", id, "export"]) => archive::export(d, id).await,
        (&M::POST, ["containers", id, "pause"]) => containers::pause(d, id, true).await,
        (&M::POST, ["containers", id, "unpause"]) => containers::pause(d, id, false).await,
        (&M::DELETE, ["containers", id]) => containers::remove(d, id, &q).await,

        (&M::GET, ["images", "json"]) => images::list(d, &q),
        (&M::POST, ["images", "create"]) => images::create(d, &q, req).await,
        (&M::POST, ["images", "load"]) => images::load(d, &q, req).await,
        (&M::POST, ["images", "prune"]) => images::prune(d, &q),
        (&M::GET, ["images", "get"]) => images::save(d, req.uri().query()),
        (&M::GET, ["images", name @ .., "get"]) if !name.is_empty() => {
            images::save(d, Some(&format!("names={}", name.join("/"))))
        }
        (&M::DELETE, ["images", name @ ..]) if !name.is_empty() => {
            images::remove(d, &name.join("/"), &q)
        }
        (&M::GET, ["images", name @ .., "json"]) if !name.is_empty() => {
            images::inspect(d, &name.join("/"))
        }
        (&M::GET, ["images", name @ .., "history"]) if !name.is_empty() => {
            images::history(d, &name.join("/"))
        }
        (&M::POST, ["images", name @ .., "push"]) if !name.is_empty() => {
            images::push(d, &name.join("/"), &q, &req)
        }
        (&M::POST, ["images", name @ .., "tag"]) if !name.is_empty() => {
            images::tag(d, &name.join("/"), &q)
        }

        (&M::GET, ["volumes"]) => volumes::list(d, &q),
        (&M::POST, ["volumes", "create"]) => volumes::create(d, req).await,
        (&M::POST, ["volumes", "prune"]) => volumes::prune(d, &q),
        (&M::GET, ["volumes", name]) => volumes::inspect(d, name),
        (&M::DELETE, ["volumes", name]) => volumes::remove(d, name, &q),

        (&M::GET, ["networks"]) => networks::list(d, &q),
        (&M::POST, ["networks", "create"]) => networks::create(d, req).await,
        (&M::POST, ["networks", "prune"]) => networks::prune(d).await,
        (&M::GET, ["networks", name]) => networks::inspect(d, name),
        (&M::DELETE, ["networks", name]) => networks::remove(d, name).await,
        (&M::POST, ["networks", name, "connect"]) => networks::connect(d, name, req).await,
        (&M::POST, ["networks", name, "disconnect"]) => networks::disconnect(d, name, req).await,

        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("page not found: {} {path}", method),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefixes() {
        assert_eq!(
            strip_version("/v1.41/containers/json").unwrap(),
            "/containers/json"
        );
        assert_eq!(strip_version("/v1.47/_ping").unwrap(), "/_ping");
        assert_eq!(
            strip_version("/containers/json").unwrap(),
            "/containers/json"
        );
        assert_eq!(strip_version("/volumes").unwrap(), "/volumes");
        assert!(
            strip_version("/v1.99/info")
                .unwrap_err()
                .message
                .contains("too new")
        );
        assert!(
            strip_version("/v1.12/info")
                .unwrap_err()
                .message
                .contains("too old")
        );
    }
}
