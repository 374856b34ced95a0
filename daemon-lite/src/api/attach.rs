//! `POST /containers/{id}/attach`: the connection is upgraded (101, `Upgrade: tcp`) and
//! spliced to the container's monitor, which sends Docker's stream format itself. Attaching
//! before `start` (as `docker run` does) queues the connection for the monitor to be born
//! with, so no early output is lost and stdin typed before the start is kept.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::body::{self, Body};
use super::containers::{find, tell_monitor};
use super::error::{ApiError, ApiResult};
use super::fields::Fields;
use super::logs::{Shape, content_type};
use super::query::Query;
use crate::containers::Status;
use crate::daemon::Daemon;
use crate::json_log;
use crate::monitor::{AttachStreams, Request as MonitorRequest};

pub async fn attach(
    d: &Arc<Daemon>,
    id: &str,
    q: &Query,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    let streams = AttachStreams {
        stdin: q.flag("stdin"),
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr"),
    };
    let record = h.snapshot();
    let tty = record.config.bool("Tty");
    if !req.headers().contains_key(hyper::header::UPGRADE) {
        return Err(ApiError::bad_request(
            "attach needs an upgraded connection (Connection: Upgrade, Upgrade: tcp)",
        ));
    }
    // The monitor side is connected (or queued) before the 101 goes out, so a start that
    // follows the upgrade finds it.
    let monitor = if q.flag("stream") {
        match record.state.status {
            Status::Running | Status::Paused => {
                Some(tell_monitor(d, &h, &MonitorRequest::Attach(streams)).await?)
            }
            Status::Removing | Status::Dead => {
                return Err(ApiError::conflict(format!(
                    "container {} is being removed",
                    h.id
                )));
            }
            _ => {
                let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
                let mut line = serde_json::to_vec(&MonitorRequest::Attach(streams))
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                line.push(b'\n');
                (&ours).write_all(&line)?;
                ours.set_nonblocking(true)?;
                h.add_pending_attach(OwnedFd::from(theirs));
                Some(tokio::net::UnixStream::from_std(ours)?)
            }
        }
    } else {
        None
    };
    let replay = if q.flag("logs") {
        record.log_path.clone().map(|p| {
            let shape = Shape {
                stdout: streams.stdout,
                stderr: streams.stderr,
                tty,
                timestamps: false,
                since: None,
                until: None,
            };
            let max_files =
                crate::containers::lifecycle::log_rotation(&record.host_config).max_files;
            json_log::read_all(&p, max_files)
                .unwrap_or_default()
                .iter()
                .filter(|e| match e.stream {
                    json_log::Stream::Stdout => streams.stdout,
                    json_log::Stream::Stderr => streams.stderr,
                })
                .flat_map(|e| shape.encode(e).to_vec())
                .collect::<Vec<u8>>()
        })
    } else {
        None
    };
    let id = h.id.clone();
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("attach {id}: upgrade: {e}");
                return;
            }
        };
        let io = TokioIo::new(upgraded);
        let (mut client_r, mut client_w) = tokio::io::split(io);
        if let Some(bytes) = replay {
            if client_w.write_all(&bytes).await.is_err() {
                return;
            }
        }
        if let Some(monitor) = monitor {
            let (mut monitor_r, mut monitor_w) = monitor.into_split();
            let stdin = streams.stdin;
            let input = tokio::spawn(async move {
                if stdin {
                    let _ = tokio::io::copy(&mut client_r, &mut monitor_w).await;
                } else {
                    let _ = tokio::io::copy(&mut client_r, &mut tokio::io::sink()).await;
                }
                // Half-close: the monitor sees this client's stdin end.
                let _ = monitor_w.shutdown().await;
            });
            let _ = tokio::io::copy(&mut monitor_r, &mut client_w).await;
            input.abort();
        }
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
