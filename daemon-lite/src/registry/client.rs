//! A client of the OCI distribution API (`/v2/…`) over HTTP/1.1: manifests and blobs, with
//! Basic and Bearer token authentication as registries ask for it (`WWW-Authenticate`).
//!
//! Plain HTTP only, and therefore only to registries on the loopback network (127.0.0.0/8,
//! ::1, `localhost`) or named with `--insecure-registry`: any other registry is refused before
//! a connection is made, with a message saying TLS is not in this client yet.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Credentials for one registry (from `X-Registry-Auth`).
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    /// Decodes Docker's `X-Registry-Auth` header (base64url JSON `{username, password}`);
    /// `None` for an empty or anonymous one.
    pub fn from_header(value: &str) -> Option<Credentials> {
        let value = value.trim();
        let bytes = base64::engine::general_purpose::URL_SAFE
            .decode(value)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(value))
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let username = v["username"].as_str().unwrap_or("").to_string();
        let password = v["password"].as_str().unwrap_or("").to_string();
        (!username.is_empty()).then_some(Credentials { username, password })
    }
}

#[derive(Debug)]
pub enum RegistryError {
    /// Not found (manifest unknown, blob unknown).
    NotFound(String),
    Unauthorized(String),
    /// Refused before connecting (TLS needed), or anything else the client gets wrong.
    Refused(String),
    /// The connection failed or broke: worth another attempt.
    Transport(String),
    Failed(String),
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryError::NotFound(m)
            | RegistryError::Unauthorized(m)
            | RegistryError::Refused(m)
            | RegistryError::Transport(m)
            | RegistryError::Failed(m) => f.write_str(m),
        }
    }
}

/// One registry host (`host[:port]`).
pub struct Registry {
    host: String,
    address: SocketAddr,
    credentials: Option<Credentials>,
    /// `Authorization` header value that worked last.
    authorization: Mutex<Option<String>>,
}

/// Whether `host` (without port) is on the loopback network.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn split_host(host: &str) -> (&str, u16) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            let port = tail
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(80);
            return (h, port);
        }
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, p.parse().unwrap_or(80)),
        _ => (host, 80),
    }
}

impl Registry {
    /// A client for `host`; refused (before any traffic) unless it may be reached over plain
    /// HTTP.
    pub fn new(
        host: &str,
        insecure: &[String],
        credentials: Option<Credentials>,
    ) -> Result<Registry, RegistryError> {
        let (name, port) = split_host(host);
        let allowed = is_loopback(name) || insecure.iter().any(|i| i == host || i == name);
        if !allowed {
            return Err(RegistryError::Refused(format!(
                "{host}: berthd's registry client speaks plain HTTP only (TLS is not there yet), so it reaches registries on 127.0.0.0/8, ::1, localhost or named with --insecure-registry"
            )));
        }
        let ip: IpAddr = if name == "localhost" {
            IpAddr::from([127, 0, 0, 1])
        } else {
            name.parse().map_err(|_| {
                RegistryError::Refused(format!(
                    "{host}: an insecure registry must be given by address"
                ))
            })?
        };
        Ok(Registry {
            host: host.to_string(),
            address: SocketAddr::new(ip, port),
            credentials,
            authorization: Mutex::new(None),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    async fn send(
        &self,
        uri: &str,
        headers: &[(&str, String)],
        authorization: Option<&str>,
    ) -> Result<Response<Incoming>, RegistryError> {
        self.send_with(Method::GET, uri, headers, authorization, &Payload::None)
            .await
    }

    async fn send_with(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, String)],
        authorization: Option<&str>,
        payload: &Payload,
    ) -> Result<Response<Incoming>, RegistryError> {
        let stream = tokio::net::TcpStream::connect(self.address)
            .await
            .map_err(|e| RegistryError::Transport(format!("connect to {}: {e}", self.host)))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| RegistryError::Transport(format!("{}: {e}", self.host)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        // A chunk of an upload says where it goes.
        let chunk = method == Method::PATCH;
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("Host", &self.host)
            .header("User-Agent", concat!("berthd/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        if let Some(a) = authorization {
            req = req.header("Authorization", a);
        }
        let body: BoxBody<Bytes, std::io::Error> = match payload {
            Payload::None => Empty::<Bytes>::new().map_err(|e| match e {}).boxed(),
            Payload::Bytes(bytes, content_type) => {
                req = req
                    .header("Content-Type", content_type.as_str())
                    .header("Content-Length", bytes.len());
                Full::new(bytes.clone()).map_err(|e| match e {}).boxed()
            }
            Payload::File { path, offset, len } => {
                use tokio::io::AsyncSeekExt;
                let mut file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| RegistryError::Failed(format!("{}: {e}", path.display())))?;
                file.seek(std::io::SeekFrom::Start(*offset))
                    .await
                    .map_err(|e| RegistryError::Failed(format!("{}: {e}", path.display())))?;
                req = req
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Length", *len);
                if chunk && *len > 0 {
                    req = req.header("Content-Range", format!("{offset}-{}", offset + len - 1));
                }
                FileBody {
                    file,
                    remaining: *len,
                    buf: vec![0; 256 * 1024],
                }
                .boxed()
            }
        };
        let req = req
            .body(body)
            .map_err(|e| RegistryError::Failed(e.to_string()))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| RegistryError::Transport(format!("{}{uri}: {e}", self.host)))
    }

    /// GET `path` (under `/v2/`), authenticating when the registry asks and following
    /// redirects within the same registry.
    pub async fn get(&self, path: &str, accept: &str) -> Result<Response<Incoming>, RegistryError> {
        let headers = if accept.is_empty() {
            vec![]
        } else {
            vec![("Accept", accept.to_string())]
        };
        self.get_with(path, &headers).await
    }

    /// [`Registry::get`] with more request headers (`Range`).
    pub async fn get_with(
        &self,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<Response<Incoming>, RegistryError> {
        let mut uri = path.to_string();
        for _ in 0..5 {
            let auth = self
                .authorization
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let mut resp = self.send(&uri, headers, auth.as_deref()).await?;
            if resp.status() == StatusCode::UNAUTHORIZED {
                let challenge = resp
                    .headers()
                    .get("WWW-Authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let authorization = self.authenticate(&challenge).await?;
                *self.authorization.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(authorization.clone());
                resp = self.send(&uri, headers, Some(&authorization)).await?;
                if resp.status() == StatusCode::UNAUTHORIZED {
                    return Err(RegistryError::Unauthorized(format!(
                        "{}: unauthorized: authentication required",
                        self.host
                    )));
                }
            }
            match resp.status() {
                s if s.is_success() => return Ok(resp),
                s if s.is_redirection() => {
                    let location = resp
                        .headers()
                        .get("Location")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    // Only redirects inside this registry: a redirect elsewhere would send
                    // traffic (and credentials) to a host nobody named.
                    let local = location
                        .strip_prefix(&format!("http://{}", self.host))
                        .map(str::to_string)
                        .or_else(|| location.starts_with('/').then(|| location.clone()));
                    match local {
                        Some(l) => uri = l,
                        None => {
                            return Err(RegistryError::Refused(format!(
                                "{}: redirect to {location} is outside the registry",
                                self.host
                            )));
                        }
                    }
                }
                StatusCode::NOT_FOUND => {
                    return Err(RegistryError::NotFound(format!(
                        "{}{uri}: not found",
                        self.host
                    )));
                }
                s => {
                    let body = read_limited(resp, 4096).await.unwrap_or_default();
                    return Err(RegistryError::Failed(format!(
                        "{}{uri}: {s}: {}",
                        self.host,
                        String::from_utf8_lossy(&body).trim()
                    )));
                }
            }
        }
        Err(RegistryError::Failed(format!(
            "{}{path}: too many redirects",
            self.host
        )))
    }

    /// Any request, authenticating when the registry asks (no redirects followed).
    pub async fn request(
        &self,
        method: Method,
        uri: &str,
        payload: &Payload,
    ) -> Result<Response<Incoming>, RegistryError> {
        let auth = self
            .authorization
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let resp = self
            .send_with(method.clone(), uri, &[], auth.as_deref(), payload)
            .await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get("WWW-Authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let authorization = self.authenticate(&challenge).await?;
        *self.authorization.lock().unwrap_or_else(|p| p.into_inner()) = Some(authorization.clone());
        let resp = self
            .send_with(method, uri, &[], Some(&authorization), payload)
            .await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(RegistryError::Unauthorized(format!(
                "{}: unauthorized: authentication required",
                self.host
            )));
        }
        Ok(resp)
    }

    /// A `Location` the registry answered, as a path on this registry.
    pub fn local_path(&self, location: &str) -> Result<String, RegistryError> {
        if location.starts_with('/') {
            return Ok(location.to_string());
        }
        location
            .strip_prefix(&format!("http://{}", self.host))
            .map(str::to_string)
            .ok_or_else(|| {
                RegistryError::Refused(format!(
                    "{}: location {location} is outside the registry",
                    self.host
                ))
            })
    }

    /// An `Authorization` value answering a `WWW-Authenticate` challenge.
    async fn authenticate(&self, challenge: &str) -> Result<String, RegistryError> {
        let basic = self.credentials.as_ref().map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password))
            )
        });
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return basic.ok_or_else(|| {
                RegistryError::Unauthorized(format!(
                    "{}: unauthorized: authentication required",
                    self.host
                ))
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(RegistryError::Unauthorized(format!(
                "{}: unsupported authentication {scheme:?}",
                self.host
            )));
        }
        let param = |name: &str| -> Option<String> {
            params.split(',').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_string())
            })
        };
        let realm = param("realm")
            .ok_or_else(|| RegistryError::Unauthorized("bearer challenge without realm".into()))?;
        let rest = realm.strip_prefix("http://").ok_or_else(|| {
            RegistryError::Refused(format!("token service {realm}: plain HTTP only"))
        })?;
        let (token_host, token_path) = rest
            .split_once('/')
            .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
        let token_registry = Registry::new(token_host, &[], None)?;
        let mut query = Vec::new();
        for key in ["service", "scope"] {
            if let Some(v) = param(key) {
                query.push(format!("{key}={}", v.replace(' ', "%20")));
            }
        }
        let uri = if query.is_empty() {
            token_path
        } else {
            format!("{token_path}?{}", query.join("&"))
        };
        let resp = token_registry
            .send(
                &uri,
                &[("Accept", "application/json".to_string())],
                basic.as_deref(),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(RegistryError::Unauthorized(format!(
                "{}: token service answered {}",
                self.host,
                resp.status()
            )));
        }
        let body = read_limited(resp, 1 << 20).await?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::Failed(format!("token service: {e}")))?;
        let token = v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .ok_or_else(|| RegistryError::Failed("token service: no token".into()))?;
        Ok(format!("Bearer {token}"))
    }
}

/// What a request carries.
pub enum Payload {
    None,
    Bytes(Bytes, String),
    /// `len` bytes of a file from `offset` (a blob, or a chunk of one), streamed.
    File {
        path: std::path::PathBuf,
        offset: u64,
        len: u64,
    },
}

/// A file as a request body, read as it is sent.
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: Vec<u8>,
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        use tokio::io::AsyncRead;
        let this = &mut *self;
        if this.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let want = this.buf.len().min(this.remaining as usize);
        let mut read = tokio::io::ReadBuf::new(&mut this.buf[..want]);
        match std::pin::Pin::new(&mut this.file).poll_read(cx, &mut read) {
            std::task::Poll::Ready(Ok(())) if read.filled().is_empty() => {
                std::task::Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file is shorter than its descriptor says",
                ))))
            }
            std::task::Poll::Ready(Ok(())) => {
                this.remaining -= read.filled().len() as u64;
                std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::copy_from_slice(
                    read.filled(),
                )))))
            }
            std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Some(Err(e))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

/// A response body, at most `limit` bytes.
pub async fn read_limited(
    resp: Response<Incoming>,
    limit: usize,
) -> Result<Vec<u8>, RegistryError> {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| RegistryError::Failed(format!("read: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(RegistryError::Failed(format!(
                    "response larger than {limit} bytes"
                )));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_or_named_insecure_registries() {
        assert!(Registry::new("127.0.0.1:5000", &[], None).is_ok());
        assert!(Registry::new("localhost:5000", &[], None).is_ok());
        assert!(Registry::new("[::1]:5000", &[], None).is_ok());
        assert!(matches!(
            Registry::new("docker.io", &[], None),
            Err(RegistryError::Refused(_))
        ));
        assert!(matches!(
            Registry::new("10.0.0.5:5000", &[], None),
            Err(RegistryError::Refused(_))
        ));
        assert!(Registry::new("10.0.0.5:5000", &["10.0.0.5:5000".into()], None).is_ok());
    }

    #[test]
    fn registry_auth_headers() {
        let h =
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"username":"u","password":"p"}"#);
        let c = Credentials::from_header(&h).unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        assert!(Credentials::from_header("e30=").is_none());
        assert!(Credentials::from_header("!!").is_none());
    }
}
