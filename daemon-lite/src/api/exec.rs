//! The exec routes: create, start (hijacked unless detached), inspect, resize.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::body::{self, Body};
use super::containers::find;
use super::error::{ApiError, ApiResult};
use super::fields::Fields;
use super::logs::content_type;
use super::query::Query;
use crate::daemon::Daemon;
use crate::execs::{self, Exec};
use crate::monitor::{AttachStreams, Request as MonitorRequest};

fn find_exec(d: &Daemon, id: &str) -> ApiResult<Arc<Exec>> {
    d.execs
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))
}

pub async fn create(
    d: &Arc<Daemon>,
    id: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    let config = body::read_json(req.into_body(), 1 << 20).await?;
    let exec_id = execs::create(d, &h, config)?;
    Ok(body::json(StatusCode::CREATED, &json!({"Id": exec_id})))
}

pub fn inspect(d: &Arc<Daemon>, id: &str) -> ApiResult<Response<Body>> {
    Ok(body::ok_json(&find_exec(d, id)?.inspect()))
}

pub async fn start(d: &Arc<Daemon>, id: &str, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let exec = find_exec(d, id)?;
    let upgrade = req.headers().contains_key(hyper::header::UPGRADE);
    let (parts, incoming) = req.into_parts();
    let options = body::read_json(incoming, 1 << 16).await?;
    let detach = options.bool("Detach");
    let size = options
        .get("ConsoleSize")
        .and_then(|s| s.as_array())
        .and_then(|s| {
            Some((
                u16::try_from(s.first()?.as_u64()?).ok()?,
                u16::try_from(s.get(1)?.as_u64()?).ok()?,
            ))
        })
        .filter(|(h, w)| *h > 0 && *w > 0);
    let tty = exec.config.bool("Tty");
    if detach {
        execs::start(d, &exec, None, size).await?;
        return Ok(body::status(StatusCode::OK));
    }
    if !upgrade {
        return Err(ApiError::bad_request(
            "exec start needs an upgraded connection (Connection: Upgrade, Upgrade: tcp) or Detach",
        ));
    }
    let streams = AttachStreams {
        stdin: exec.config.bool("AttachStdin"),
        stdout: exec.config.bool("AttachStdout"),
        stderr: exec.config.bool("AttachStderr"),
    };
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let mut line = serde_json::to_vec(&MonitorRequest::Attach(streams))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    line.push(b'\n');
    (&ours).write_all(&line)?;
    ours.set_nonblocking(true)?;
    let req = Request::from_parts(parts, ());
    let d = d.clone();
    // As dockerd: the connection is upgraded first; a process that cannot be started is
    // reported in the stream, and its exit code (126/127) through inspect.
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let (mut client_r, mut client_w) = tokio::io::split(TokioIo::new(upgraded));
        if let Err(e) = execs::start(&d, &exec, Some(OwnedFd::from(theirs)), size).await {
            let text = format!("{}\r\n", e.message);
            let mut bytes = Vec::new();
            if !tty {
                bytes.extend_from_slice(&[1, 0, 0, 0]);
                bytes.extend_from_slice(&(text.len() as u32).to_be_bytes());
            }
            bytes.extend_from_slice(text.as_bytes());
            let _ = client_w.write_all(&bytes).await;
            let _ = client_w.shutdown().await;
            return;
        }
        let Ok(monitor) = tokio::net::UnixStream::from_std(ours) else {
            return;
        };
        let (mut monitor_r, mut monitor_w) = monitor.into_split();
        let input = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_r, &mut monitor_w).await;
            let _ = monitor_w.shutdown().await;
        });
        let _ = tokio::io::copy(&mut monitor_r, &mut client_w).await;
        input.abort();
        // The exit code must be readable once the stream ends (the CLI asks right away).
        exec.wait().await;
        let _ = client_w.shutdown().await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("Content-Type", content_type(tty))
        .header("Connection", "Upgrade")
        .header("Upgrade", "tcp")
        .body(body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

pub async fn resize(d: &Arc<Daemon>, id: &str, q: &Query) -> ApiResult<Response<Body>> {
    let exec = find_exec(d, id)?;
    let dim = |k: &str| -> ApiResult<u16> {
        let v = q.int(k)?.unwrap_or(0);
        u16::try_from(v).map_err(|_| ApiError::bad_request(format!("invalid {k}: {v}")))
    };
    let (height, width) = (dim("h")?, dim("w")?);
    let socket = d
        .config
        .exec_root
        .join("m")
        .join(format!("x{}", crate::names::short(&exec.id)));
    let mut stream = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| ApiError::conflict(format!("exec {} is not running ({e})", exec.id)))?;
    let mut line = serde_json::to_vec(&MonitorRequest::Resize { height, width })
        .map_err(|e| ApiError::internal(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    Ok(body::status(StatusCode::OK))
}
