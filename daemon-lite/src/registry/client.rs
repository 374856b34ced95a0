//! A client of the OCI distribution API (`/v2/…`) over HTTP/1.1: manifests and blobs, with
//! Basic and Bearer token authentication as registries ask for it (`WWW-Authenticate`).
//!
//! TLS (verified against the system's roots and certs.d, see [`super::tls`]) for every
//! registry, except insecure ones (loopback by address or `localhost`, or named with
//! `--insecure-registry`): those are tried over TLS without verification and, when they do not
//! speak TLS, reached over plain HTTP, as dockerd does. A name is judged as written, never by
//! what it resolves to. Redirects to another host (a CDN) are followed without credentials.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

/// How berthd reaches registries (its flags).
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Registries reached without certificate checks, or over plain HTTP when they have no
    /// TLS, besides the loopback ones (`--insecure-registry host[:port]`).
    pub insecure: Vec<String>,
    /// Per-registry CAs and client certificates, as Docker's /etc/docker/certs.d.
    pub certs_dir: PathBuf,
    /// Mirrors of Docker Hub (`--registry-mirror URL`), tried in order before it.
    pub mirrors: Vec<String>,
    /// Registries never contacted (`--block-registry`, as podman's `blocked = true`); `*`
    /// blocks every one but the loopback and insecure ones (a host without outside access).
    pub blocked: Vec<String>,
}

impl RegistryOptions {
    pub const DEFAULT_CERTS_DIR: &'static str = "/etc/berth/certs.d";
}

/// How long to wait for a registry to accept a connection (and finish a TLS handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

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

/// How requests travel.
#[derive(Clone)]
enum Transport {
    Http,
    Https {
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    },
}

/// A connection, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// One registry host (`host[:port]`).
pub struct Registry {
    host: String,
    address: SocketAddr,
    transport: Transport,
    options: RegistryOptions,
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

/// `name` and the port if one is given (`[::1]:5000`, `host:5000`, `host`).
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            return (h, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
            (h, p.parse().ok())
        }
        _ => (host, None),
    }
}

/// Splits `https://host[:port]/path?q` into the scheme (if given), the host and the path.
fn split_url(url: &str) -> (Option<&str>, &str, &str) {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, rest)) => (Some(s), rest),
        None => (None, url),
    };
    match rest.find('/') {
        Some(i) => (scheme, &rest[..i], &rest[i..]),
        None => (scheme, rest, "/"),
    }
}

/// The address of `name` (an IP literal, `localhost`, or a name for the system resolver).
async fn resolve(name: &str, port: u16) -> Result<SocketAddr, RegistryError> {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if name == "localhost" {
        return Ok(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port));
    }
    tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| RegistryError::Transport(format!("resolve {name}: {e}")))?
        .next()
        .ok_or_else(|| RegistryError::Transport(format!("resolve {name}: no address")))
}

/// Whether `host` is blocked (`docker.io` blocks Docker Hub's API host too).
pub fn is_blocked(host: &str, options: &RegistryOptions) -> bool {
    let (name, _) = split_host(host);
    options.blocked.iter().any(|b| {
        b == host
            || b == name
            || (b == "*" && !is_insecure(host, options))
            || (b == "docker.io" && name == super::api_host("docker.io"))
    })
}

/// Whether `host` may be reached without a verified certificate.
pub fn is_insecure(host: &str, options: &RegistryOptions) -> bool {
    let (name, _) = split_host(host);
    is_loopback(name) || options.insecure.iter().any(|i| i == host || i == name)
}

impl Registry {
    /// A client for `host` (`name[:port]`, or a URL with `https://` or `http://`): resolves it
    /// and settles how to speak to it (see the module's notes). Plain HTTP to a registry that
    /// is not insecure is refused before any traffic.
    pub async fn connect(
        host: &str,
        options: &RegistryOptions,
        credentials: Option<Credentials>,
    ) -> Result<Registry, RegistryError> {
        let (scheme, host, _) = split_url(host.trim_end_matches('/'));
        let (name, port) = split_host(host);
        if is_blocked(host, options) {
            return Err(RegistryError::Refused(format!(
                "registry {host} is blocked (--block-registry)"
            )));
        }
        let insecure = is_insecure(host, options);
        if scheme == Some("http") && !insecure {
            return Err(RegistryError::Refused(format!(
                "{host}: plain HTTP is only for loopback registries and those named with --insecure-registry"
            )));
        }
        if !matches!(scheme, None | Some("http") | Some("https")) {
            return Err(RegistryError::Refused(format!(
                "{host}: unknown scheme {scheme:?}"
            )));
        }
        let tls = |verify: bool| -> Result<Transport, RegistryError> {
            Ok(Transport::Https {
                config: super::tls::client_config(&options.certs_dir, host, verify)
                    .map_err(RegistryError::Failed)?,
                name: super::tls::server_name(name).map_err(RegistryError::Failed)?,
            })
        };
        let default_port = if scheme == Some("http") { 80 } else { 443 };
        let port = port.unwrap_or(default_port);
        let address = resolve(name, port).await?;
        let mut registry = Registry {
            host: host.to_string(),
            address,
            transport: Transport::Http,
            options: options.clone(),
            credentials,
            authorization: Mutex::new(None),
        };
        registry.transport = match scheme {
            Some("http") => Transport::Http,
            Some(_) => tls(!insecure)?,
            None if !insecure => tls(true)?,
            None => {
                // Insecure: TLS if it answers TLS, else plain HTTP.
                registry.transport = tls(false)?;
                match registry.open().await {
                    Ok(_) => registry.transport.clone(),
                    Err(RegistryError::Transport(e)) if !e.contains("connect to") => {
                        tracing::debug!("{host}: no TLS ({e}), plain HTTP");
                        Transport::Http
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(registry)
    }

    /// `http://host` or `https://host`, as this registry is spoken to.
    fn origin(&self) -> String {
        match self.transport {
            Transport::Http => format!("http://{}", self.host),
            Transport::Https { .. } => format!("https://{}", self.host),
        }
    }

    /// A new connection (TCP, then TLS when the registry speaks it).
    async fn open(&self) -> Result<Box<dyn Io>, RegistryError> {
        let connect = tokio::net::TcpStream::connect(self.address);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| RegistryError::Transport(format!("connect to {}: timed out", self.host)))?
            .map_err(|e| RegistryError::Transport(format!("connect to {}: {e}", self.host)))?;
        let _ = stream.set_nodelay(true);
        match &self.transport {
            Transport::Http => Ok(Box::new(stream)),
            Transport::Https { config, name } => {
                let handshake =
                    tokio_rustls::TlsConnector::from(config.clone()).connect(name.clone(), stream);
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
                    .await
                    .map_err(|_| {
                        RegistryError::Transport(format!("{}: TLS handshake timed out", self.host))
                    })?
                    .map_err(|e| RegistryError::Transport(format!("{}: TLS: {e}", self.host)))?;
                Ok(Box::new(tls))
            }
        }
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
        let stream = self.open().await?;
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
                    match self.local_path(&location) {
                        Ok(l) => uri = l,
                        // Another host (a CDN holding the blob): no credentials go there.
                        Err(_) => {
                            let (_, other, path) = split_url(&location);
                            if other.is_empty() || !location.contains("://") {
                                return Err(RegistryError::Failed(format!(
                                    "{}: bad redirect {location:?}",
                                    self.host
                                )));
                            }
                            let elsewhere =
                                Box::pin(Registry::connect(&location, &self.options, None)).await?;
                            return Box::pin(elsewhere.get_with(path, headers)).await;
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

    /// Checks the credentials (`docker login`): `GET /v2/`, answering the registry's
    /// challenge with them.
    pub async fn check_login(&self) -> Result<(), RegistryError> {
        let resp = self.get("/v2/", "").await?;
        let _ = read_limited(resp, 64 * 1024).await;
        Ok(())
    }

    /// A `Location` the registry answered, as a path on this registry.
    pub fn local_path(&self, location: &str) -> Result<String, RegistryError> {
        if location.starts_with('/') {
            return Ok(location.to_string());
        }
        location
            .strip_prefix(&self.origin())
            .filter(|rest| rest.starts_with('/'))
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
        let (_, _, token_path) = split_url(&realm);
        let token_registry = Box::pin(Registry::connect(&realm, &self.options, None)).await?;
        let mut query = Vec::new();
        for key in ["service", "scope"] {
            if let Some(v) = param(key) {
                query.push(format!("{key}={}", v.replace(' ', "%20")));
            }
        }
        let uri = if query.is_empty() {
            token_path.to_string()
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
    fn only_loopback_or_named_registries_are_insecure() {
        let none = RegistryOptions::default();
        assert!(is_insecure("127.0.0.1:5000", &none));
        assert!(is_insecure("127.8.9.10", &none));
        assert!(is_insecure("localhost:5000", &none));
        assert!(is_insecure("[::1]:5000", &none));
        assert!(!is_insecure("docker.io", &none));
        assert!(!is_insecure("10.0.0.5:5000", &none));
        // A name is judged as written: one resolving to 127.0.0.1 is still checked.
        assert!(!is_insecure("registry.example:5000", &none));
        let named = RegistryOptions {
            insecure: vec!["10.0.0.5:5000".into(), "build.lan".into()],
            ..Default::default()
        };
        assert!(is_insecure("10.0.0.5:5000", &named));
        assert!(is_insecure("build.lan:443", &named));
        assert!(!is_insecure("10.0.0.5:6000", &named));
    }

    #[test]
    fn hosts_and_urls_split() {
        assert_eq!(split_host("[::1]:5000"), ("::1", Some(5000)));
        assert_eq!(split_host("host:5000"), ("host", Some(5000)));
        assert_eq!(split_host("host"), ("host", None));
        assert_eq!(
            split_url("https://auth.example/token?x=1"),
            (Some("https"), "auth.example", "/token?x=1")
        );
        assert_eq!(split_url("127.0.0.1:5000"), (None, "127.0.0.1:5000", "/"));
    }

    #[test]
    fn blocked_registries() {
        let all = RegistryOptions {
            blocked: vec!["*".into()],
            ..Default::default()
        };
        assert!(is_blocked("registry-1.docker.io", &all));
        assert!(is_blocked("quay.io:443", &all));
        assert!(!is_blocked("127.0.0.1:5000", &all));
        let hub = RegistryOptions {
            blocked: vec!["docker.io".into()],
            ..Default::default()
        };
        assert!(is_blocked("registry-1.docker.io", &hub));
        assert!(!is_blocked("quay.io", &hub));
    }

    #[tokio::test]
    async fn plain_http_to_a_secure_registry_is_refused_before_any_traffic() {
        let r = Registry::connect("http://registry.example", &Default::default(), None).await;
        assert!(matches!(r, Err(RegistryError::Refused(_))));
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
