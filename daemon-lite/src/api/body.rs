//! Response bodies: whole (JSON, text) or streamed from a channel (logs, events, wait, pull
//! progress), and request bodies read whole with a limit or spooled to a file.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Response, StatusCode};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::error::{ApiError, ApiResult};

pub type Body = BoxBody<Bytes, io::Error>;

fn infallible(e: Infallible) -> io::Error {
    match e {}
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(infallible).boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(infallible).boxed()
}

pub fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(full(bytes))
        .unwrap_or_else(|_| Response::new(empty()))
}

pub fn ok_json(value: &Value) -> Response<Body> {
    json(StatusCode::OK, value)
}

pub fn status(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = status;
    r
}

/// A body fed by the returned sender; it ends when the sender is dropped. Headers go out at
/// once, before the first chunk (the Docker CLI blocks on `wait`'s headers).
pub fn channel(capacity: usize) -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, ChannelBody { rx }.boxed())
}

struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Reads a JSON request body (at most `limit` bytes). An empty body reads as `null`.
pub async fn read_json(body: Incoming, limit: usize) -> ApiResult<Value> {
    let bytes = read_all(body, limit).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON in the request body: {e}")))
}

/// How much of a refused (too large) body is still read, so the client gets to read the
/// answer instead of a connection reset.
const DRAIN_LIMIT: usize = 64 << 20;

pub async fn read_all(mut body: Incoming, limit: usize) -> ApiResult<Bytes> {
    let mut data = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
        if let Ok(chunk) = frame.into_data() {
            seen += chunk.len();
            if seen <= limit {
                data.extend_from_slice(&chunk);
            } else if seen > limit + DRAIN_LIMIT {
                break;
            }
        }
    }
    if seen > limit {
        return Err(ApiError::bad_request(format!(
            "request body: {seen} bytes or more, above the limit of {limit}"
        )));
    }
    Ok(Bytes::from(data))
}

/// Writes the request body to `path` as it arrives (uploads may be gigabytes).
pub async fn spool(mut body: Incoming, path: &std::path::Path) -> ApiResult<u64> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ApiError::internal(format!("create {}: {e}", path.display())))?;
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            file.write_all(&data)
                .await
                .map_err(|e| ApiError::internal(format!("write {}: {e}", path.display())))?;
        }
    }
    file.flush()
        .await
        .map_err(|e| ApiError::internal(format!("write {}: {e}", path.display())))?;
    Ok(total)
}
