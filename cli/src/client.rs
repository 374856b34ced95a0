//! HTTP/1.1 transport to the engine: one keep-alive connection over the unix socket for
//! ordinary requests, a fresh connection for each hijacked (upgraded) stream and for requests
//! whose answer arrives much later (`wait`), plus JSON and streaming-body helpers.

use std::io::Read;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::error::{CliError, Result};

/// The API version every request is sent with; berthd and dockerd both serve it.
pub const API_VERSION: &str = "1.41";
pub const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";

pub type RequestBody = BoxBody<Bytes, std::io::Error>;
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;
type Sender = http1::SendRequest<RequestBody>;

pub struct Client {
    host: String,
    socket: PathBuf,
    keep_alive: Option<Sender>,
}

impl Client {
    /// `host` is `unix:///path` (or a bare path); TCP endpoints are not supported.
    pub fn new(host: &str) -> Result<Client> {
        let socket = match host.strip_prefix("unix://") {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            Some(_) => return Err(CliError::Usage(format!("invalid host: {host}"))),
            None if host.starts_with('/') => PathBuf::from(host),
            None => {
                return Err(CliError::Usage(format!(
                    "unsupported host {host}: only unix:// endpoints are supported"
                )));
            }
        };
        Ok(Client {
            host: host.to_string(),
            socket,
            keep_alive: None,
        })
    }

    async fn connect(&self) -> Result<TokioIo<UnixStream>> {
        match UnixStream::connect(&self.socket).await {
            Ok(stream) => Ok(TokioIo::new(stream)),
            Err(_) => Err(CliError::Connect {
                host: self.host.clone(),
            }),
        }
    }

    async fn handshake(
        &self,
    ) -> Result<(Sender, http1::Connection<TokioIo<UnixStream>, RequestBody>)> {
        let io = self.connect().await?;
        http1::handshake(io).await.map_err(http_error)
    }

    /// The shared connection, reopened when the daemon closed it (idle timeout, or a
    /// response body dropped before its end).
    async fn keep_alive_sender(&mut self) -> Result<&mut Sender> {
        let reusable = match self.keep_alive.as_mut() {
            Some(sender) => !sender.is_closed() && sender.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            let (sender, conn) = self.handshake().await?;
            // The connection task lives as long as the runtime; errors surface on requests.
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.keep_alive = Some(sender);
        }
        match self.keep_alive.as_mut() {
            Some(sender) => Ok(sender),
            None => Err(CliError::Connect {
                host: self.host.clone(),
            }),
        }
    }

    /// Sends on the keep-alive connection; statuses >= 400 become `CliError::Daemon`.
    pub async fn send(&mut self, request: Request<RequestBody>) -> Result<Response<Incoming>> {
        let sender = self.keep_alive_sender().await?;
        let response = sender.send_request(request).await.map_err(http_error)?;
        check_status(response).await
    }

    /// Sends on a connection of its own, so the keep-alive one stays free while this
    /// response's body is pending (e.g. `wait`, whose body comes when the container exits).
    pub async fn send_detached(&self, request: Request<RequestBody>) -> Result<Response<Incoming>> {
        let (mut sender, conn) = self.handshake().await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let response = sender.send_request(request).await.map_err(http_error)?;
        check_status(response).await
    }

    /// POSTs with `Connection: Upgrade` / `Upgrade: tcp` and returns the raw stream the
    /// daemon switches to (attach, exec start).
    pub async fn hijack(&self, path: &str, body: Option<&Value>) -> Result<Upgraded> {
        let (mut sender, conn) = self.handshake().await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut builder = request_builder(Method::POST, path)
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "tcp");
        let body = match body {
            Some(value) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                json_body(value)
            }
            None => empty_body(),
        };
        let request = builder
            .body(body)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(http_error)?;
        let response = check_status(response).await?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(CliError::Http(format!(
                "expected 101 Switching Protocols from {path}, got {}",
                response.status()
            )));
        }
        let upgraded = hyper::upgrade::on(response).await.map_err(http_error)?;
        Ok(TokioIo::new(upgraded))
    }

    pub async fn get(&mut self, path: &str) -> Result<Response<Incoming>> {
        self.send(build(Method::GET, path, empty_body(), None)?)
            .await
    }

    pub async fn get_json<T: DeserializeOwned>(&mut self, path: &str) -> Result<T> {
        let response = self.get(path).await?;
        decode_json(response).await
    }

    /// POST with an optional JSON body; the response is returned unread.
    pub async fn post(&mut self, path: &str, body: Option<&Value>) -> Result<Response<Incoming>> {
        let request = match body {
            Some(value) => build(
                Method::POST,
                path,
                json_body(value),
                Some("application/json"),
            )?,
            None => build(Method::POST, path, empty_body(), None)?,
        };
        self.send(request).await
    }

    pub async fn post_json<T: DeserializeOwned>(
        &mut self,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T> {
        let response = self.post(path, body).await?;
        decode_json(response).await
    }

    /// POST whose answer does not matter beyond its status; the body is drained so the
    /// connection can be reused.
    pub async fn post_discard(&mut self, path: &str, body: Option<&Value>) -> Result<()> {
        let response = self.post(path, body).await?;
        read_body(response).await.map(|_| ())
    }

    pub async fn delete(&mut self, path: &str) -> Result<Response<Incoming>> {
        self.send(build(Method::DELETE, path, empty_body(), None)?)
            .await
    }
}

/// Builds a request for `path` (which starts with `/` and excludes the version prefix).
pub fn build(
    method: Method,
    path: &str,
    body: RequestBody,
    content_type: Option<&str>,
) -> Result<Request<RequestBody>> {
    let mut builder = request_builder(method, path);
    if let Some(content_type) = content_type {
        builder = builder.header(CONTENT_TYPE, content_type);
    }
    builder
        .body(body)
        .map_err(|e| CliError::Usage(format!("invalid request {path}: {e}")))
}

fn request_builder(method: Method, path: &str) -> hyper::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("/v{API_VERSION}{path}"))
        // HTTP/1.1 requires a Host; over a unix socket any name does.
        .header(HOST, "berth")
        .header(
            "User-Agent",
            concat!("berth-cli/", env!("CARGO_PKG_VERSION")),
        )
}

fn http_error(err: hyper::Error) -> CliError {
    CliError::Http(err.to_string())
}

/// Turns a >= 400 answer into `CliError::Daemon` with the daemon's `message`.
async fn check_status(response: Response<Incoming>) -> Result<Response<Incoming>> {
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return Ok(response);
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Err(daemon_error(status.as_u16(), &body))
}

/// The daemon's error body is `{"message": "…"}`; anything else is shown as text.
pub fn daemon_error(status: u16, body: &[u8]) -> CliError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body).trim().to_string();
            if text.is_empty() {
                StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("unknown error")
                    .to_string()
            } else {
                text
            }
        });
    CliError::Daemon { status, message }
}

pub async fn read_body(response: Response<Incoming>) -> Result<Bytes> {
    response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(http_error)
}

pub async fn decode_json<T: DeserializeOwned>(response: Response<Incoming>) -> Result<T> {
    let bytes = read_body(response).await?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// The next data chunk of a streamed body, or `None` at its end.
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(err)) => return Err(http_error(err)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

pub fn empty_body() -> RequestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn bytes_body(bytes: impl Into<Bytes>) -> RequestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn json_body(value: &Value) -> RequestBody {
    bytes_body(value.to_string())
}

/// A request body fed from a blocking reader (a file, stdin) by a helper thread, sent
/// chunked so large archives are never held in memory.
pub fn reader_body(mut reader: impl Read + Send + 'static) -> RequestBody {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        break;
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    let _ = tx.blocking_send(Err(err));
                    break;
                }
            }
        }
    });
    ChannelBody { rx }.boxed()
}

struct ChannelBody {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|chunk| chunk.map(Frame::data)))
    }
}

/// Builds `path?k=v&…` with percent-encoded values.
pub struct Query {
    text: String,
    has_params: bool,
}

impl Query {
    pub fn new(path: &str) -> Query {
        Query {
            text: path.to_string(),
            has_params: false,
        }
    }

    pub fn param(mut self, key: &str, value: impl AsRef<str>) -> Query {
        self.text.push(if self.has_params { '&' } else { '?' });
        self.has_params = true;
        self.text.push_str(key);
        self.text.push('=');
        self.text.push_str(&percent_encode(value.as_ref()));
        self
    }

    pub fn opt(self, key: &str, value: Option<impl AsRef<str>>) -> Query {
        match value {
            Some(value) => self.param(key, value),
            None => self,
        }
    }

    /// Adds `key=1` only when `on`, as the docker CLI does for boolean flags.
    pub fn flag(self, key: &str, on: bool) -> Query {
        if on { self.param(key, "1") } else { self }
    }

    pub fn build(self) -> String {
        self.text
    }
}

/// Percent-encodes one path segment or query value (everything but RFC 3986 unreserved).
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encodes_values_and_skips_false_flags() {
        let path = Query::new("/containers/json")
            .flag("all", true)
            .flag("size", false)
            .param("filters", r#"{"name":["a b"]}"#)
            .build();
        assert_eq!(
            path,
            "/containers/json?all=1&filters=%7B%22name%22%3A%5B%22a%20b%22%5D%7D"
        );
    }

    #[test]
    fn host_parsing() {
        assert!(Client::new("unix:///run/berth/berth.sock").is_ok());
        assert!(Client::new("/tmp/x.sock").is_ok());
        assert!(matches!(
            Client::new("tcp://1.2.3.4:2375"),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(Client::new("unix://"), Err(CliError::Usage(_))));
    }

    #[test]
    fn daemon_error_body_mapping() {
        let err = daemon_error(409, br#"{"message":"conflict: name in use"}"#);
        assert_eq!(
            err.to_string(),
            "Error response from daemon: conflict: name in use"
        );
        let err = daemon_error(404, b"page not found\n");
        assert_eq!(
            err.to_string(),
            "Error response from daemon: page not found"
        );
        let err = daemon_error(500, b"");
        assert_eq!(
            err.to_string(),
            "Error response from daemon: Internal Server Error"
        );
        assert!(matches!(
            daemon_error(404, b"{}"),
            CliError::Daemon { status: 404, .. }
        ));
    }

    #[tokio::test]
    async fn unreachable_socket_is_a_connect_error() {
        let mut client = Client::new("unix:///nonexistent/berth-test.sock").expect("valid host");
        let err = client.get("/_ping").await.expect_err("no daemon there");
        assert!(matches!(err, CliError::Connect { .. }));
    }
}
