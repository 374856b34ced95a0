//! `docker cp` and `docker export`: `HEAD`/`GET`/`PUT /containers/{id}/archive` and
//! `GET /containers/{id}/export`.
//!
//! Paths are resolved with the container's root as `/` (openat2 RESOLVE_IN_ROOT), so no
//! symlink in the container leads outside it. A running container is seen through
//! `/proc/PID/root` (its volumes included) and frozen while it is read or written, so it
//! cannot swap a directory for a symlink halfway (CVE-2018-15664); a stopped one has its
//! writable layer mounted for the copy.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde_json::json;

use super::body::{self, Body};
use super::containers::find;
use super::error::{ApiError, ApiResult};
use super::query::Query;
use crate::containers::{Handle, Status};
use crate::daemon::Daemon;

/// The container's filesystem for the length of one request.
struct Rootfs<'a> {
    d: &'a Daemon,
    id: String,
    root: OwnedFd,
    /// Frozen (running container), to thaw when done.
    frozen: bool,
    /// Mounted for the request (stopped container), to unmount when done.
    mounted: Option<PathBuf>,
}

impl<'a> Rootfs<'a> {
    fn open(d: &'a Daemon, h: &Handle, freeze: bool) -> ApiResult<Rootfs<'a>> {
        let record = h.snapshot();
        let open_dir = |p: &Path| {
            rustix::fs::open(
                p,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| ApiError::internal(format!("open {}: {e}", p.display())))
        };
        if record.state.status == Status::Running {
            let root = open_dir(Path::new(&format!("/proc/{}/root", record.state.pid)))?;
            let mut frozen = false;
            if freeze {
                if let Ok(c) = d.runtime.load(&h.id) {
                    frozen = c.pause().is_ok();
                }
            }
            return Ok(Rootfs {
                d,
                id: h.id.clone(),
                root,
                frozen,
                mounted: None,
            });
        }
        let target = d.config.bundle_dir(&h.id).join("copy-rootfs");
        std::fs::create_dir_all(&target)?;
        let mounts = d.images.snapshotter.mounts(&record.snapshot)?;
        berth_storage::mount::mount(&mounts, &target)?;
        let root = open_dir(&target)?;
        Ok(Rootfs {
            d,
            id: h.id.clone(),
            root,
            frozen: false,
            mounted: Some(target),
        })
    }

    /// `path` inside the container, resolved there; `None` if it does not exist.
    fn resolve(&self, path: &str, follow_last: bool) -> ApiResult<Option<OwnedFd>> {
        let mut flags = OFlags::PATH | OFlags::CLOEXEC;
        if !follow_last {
            flags |= OFlags::NOFOLLOW;
        }
        match rustix::fs::openat2(
            &self.root,
            path.trim_start_matches('/'),
            flags,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => Ok(None),
            Err(e) => Err(ApiError::bad_request(format!("{path}: {e}"))),
        }
    }
}

impl Drop for Rootfs<'_> {
    fn drop(&mut self) {
        if self.frozen {
            if let Ok(c) = self.d.runtime.load(&self.id) {
                let _ = c.resume();
            }
        }
        if let Some(m) = self.mounted.take() {
            let _ = berth_storage::mount::unmount(&m);
            let _ = std::fs::remove_dir(&m);
        }
    }
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The target of the symlink `fd` (O_PATH | O_NOFOLLOW) is: readlinkat with an empty path.
fn link_target(fd: &OwnedFd) -> std::io::Result<PathBuf> {
    let target = rustix::fs::readlinkat(fd, "", Vec::new())?;
    Ok(PathBuf::from(
        <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(target.into_bytes()),
    ))
}

/// Docker's path stat: name, size, Go's FileMode bits, mtime, link target.
fn path_stat(fd: &OwnedFd, path: &str) -> ApiResult<String> {
    let st = rustix::fs::fstat(fd).map_err(|e| ApiError::internal(format!("stat {path}: {e}")))?;
    let ft = st.st_mode & libc::S_IFMT;
    let mut mode = (st.st_mode & 0o777) as u64;
    let mut link = String::new();
    match ft {
        libc::S_IFDIR => mode |= 1 << 31,
        libc::S_IFLNK => {
            mode |= 1 << 27;
            link = link_target(fd)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
        }
        _ => {}
    }
    let name = Path::new(path)
        .file_name()
        .map_or("/".into(), |n| n.to_string_lossy().into_owned());
    let mtime = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(st.st_mtime.max(0) as u64),
    )
    .to_string();
    let json =
        json!({"name": name, "size": st.st_size, "mode": mode, "mtime": mtime, "linkTarget": link});
    Ok(base64::engine::general_purpose::STANDARD.encode(json.to_string()))
}

fn path_of(q: &Query) -> ApiResult<String> {
    q.get("path")
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request("the path parameter is required"))
}

/// `HEAD /containers/{id}/archive`.
pub async fn stat(d: &Arc<Daemon>, id: &str, q: &Query) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    let path = path_of(q)?;
    let d2 = d.clone();
    let header = tokio::task::spawn_blocking(move || -> ApiResult<String> {
        let rootfs = Rootfs::open(&d2, &h, false)?;
        let fd = rootfs.resolve(&path, false)?.ok_or_else(|| {
            ApiError::not_found(format!(
                "Could not find the file {path} in container {}",
                h.id
            ))
        })?;
        path_stat(&fd, &path)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Response::builder()
        .header("X-Docker-Container-Path-Stat", header)
        .body(body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// `GET /containers/{id}/archive`: a tar of the path, named by its last component.
pub async fn get(d: &Arc<Daemon>, id: &str, q: &Query) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    let path = path_of(q)?;
    let (tx, body) = body::channel(8);
    let (stat_tx, stat_rx) = tokio::sync::oneshot::channel();
    let d2 = d.clone();
    tokio::task::spawn_blocking(move || {
        let opened = Rootfs::open(&d2, &h, true).and_then(|rootfs| {
            let follow = path.ends_with('/') || path.ends_with("/.");
            let fd = rootfs.resolve(&path, follow)?.ok_or_else(|| {
                ApiError::not_found(format!(
                    "Could not find the file {path} in container {}",
                    h.id
                ))
            })?;
            Ok((rootfs, fd))
        });
        let (rootfs, fd) = match opened.and_then(|(r, fd)| Ok((path_stat(&fd, &path)?, r, fd))) {
            Ok((stat, r, fd)) => {
                let _ = stat_tx.send(Ok(stat));
                (r, fd)
            }
            Err(e) => {
                let _ = stat_tx.send(Err(e));
                return;
            }
        };
        let name = Path::new(path.trim_end_matches("/.").trim_end_matches('/'))
            .file_name()
            .map_or_else(|| ".".into(), |n| n.to_os_string());
        let mut builder = tar::Builder::new(ChannelWriter { tx });
        builder.follow_symlinks(false);
        if append_resolved(&mut builder, &fd, Path::new(&name)).is_ok() {
            let _ = builder.finish();
        }
        drop(rootfs);
    });
    let stat = stat_rx
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Response::builder()
        .header("Content-Type", "application/x-tar")
        .header("X-Docker-Container-Path-Stat", stat)
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Archives what `fd` (an O_PATH descriptor from the resolution) is, under `name`. Its
/// `/proc/self/fd` path is a magic link, so the kind comes from fstat, a directory is walked
/// below it (trailing slash) and a file is read through it; links inside are kept as links.
fn append_resolved(
    builder: &mut tar::Builder<ChannelWriter>,
    fd: &OwnedFd,
    name: &Path,
) -> std::io::Result<()> {
    let st = rustix::fs::fstat(fd)?;
    let source = fd_path(fd);
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            let mut dir = source.into_os_string();
            dir.push("/");
            builder.append_dir_all(name, PathBuf::from(dir))
        }
        libc::S_IFREG => {
            let mut file = File::open(&source)?;
            builder.append_file(name, &mut file)
        }
        libc::S_IFLNK => {
            let target = link_target(fd)?;
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder.append_link(&mut header, name, target)
        }
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "only directories, files and symbolic links are copied",
        )),
    }
}

/// Feeds a response body from a blocking writer.
pub struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
}

impl ChannelWriter {
    pub fn new(tx: tokio::sync::mpsc::Sender<Bytes>) -> ChannelWriter {
        ChannelWriter { tx }
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
            })?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `PUT /containers/{id}/archive`: extracts the tar body into the directory `path`.
pub async fn put(
    d: &Arc<Daemon>,
    id: &str,
    q: &Query,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    let path = path_of(q)?;
    let spool = d.images.scratch_file()?;
    let spooled = body::spool(req.into_body(), &spool).await;
    let d2 = d.clone();
    let spool2 = spool.clone();
    let result = match spooled {
        Ok(_) => tokio::task::spawn_blocking(move || -> ApiResult<()> {
            if h.snapshot().state.status == Status::Running
                && h.snapshot()
                    .host_config
                    .get("ReadonlyRootfs")
                    .and_then(|v| v.as_bool())
                    == Some(true)
            {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "container rootfs is marked read-only",
                ));
            }
            let rootfs = Rootfs::open(&d2, &h, true)?;
            let dir = rootfs.resolve(&path, true)?.ok_or_else(|| {
                ApiError::not_found(format!(
                    "Could not find the file {path} in container {}",
                    h.id
                ))
            })?;
            let st = rustix::fs::fstat(&dir).map_err(|e| ApiError::internal(e.to_string()))?;
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                return Err(ApiError::bad_request(format!(
                    "extraction point is not a directory: {path}"
                )));
            }
            let target = berth_storage::ApplyTarget {
                dir: fd_path(&dir),
                whiteouts: berth_storage::Whiteouts::Delete,
                image: None,
            };
            let input = File::open(&spool2)?;
            berth_storage::layer::apply(
                &target,
                input,
                &berth_storage::layer::ApplyOptions::default(),
            )
            .map_err(|e| ApiError::bad_request(format!("extract into {path}: {e}")))?;
            drop(rootfs);
            Ok(())
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?,
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&spool);
    result?;
    Ok(body::status(StatusCode::OK))
}

/// `GET /containers/{id}/export`: the container's filesystem (its image layers and its own
/// changes, without volumes) as one tar.
pub async fn export(d: &Arc<Daemon>, id: &str) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    let (tx, body) = body::channel(8);
    let d2 = d.clone();
    let record = h.snapshot();
    tokio::task::spawn_blocking(move || {
        // A running container's rootfs is mounted already (a second overlay mount on the
        // same upper directory would be refused); a stopped one is mounted for the export.
        if record.state.status == Status::Running {
            let mut builder = tar::Builder::new(ChannelWriter { tx });
            builder.follow_symlinks(false);
            let rootfs = d2.config.bundle_dir(&record.id).join("rootfs");
            if builder.append_dir_all(".", &rootfs).is_ok() {
                let _ = builder.finish();
            }
            return;
        }
        let target = d2.config.bundle_dir(&record.id).join("export-rootfs");
        let mounted = std::fs::create_dir_all(&target).is_ok()
            && d2
                .images
                .snapshotter
                .mounts(&record.snapshot)
                .and_then(|m| berth_storage::mount::mount(&m, &target))
                .is_ok();
        if mounted {
            let mut builder = tar::Builder::new(ChannelWriter { tx });
            builder.follow_symlinks(false);
            if builder.append_dir_all(".", &target).is_ok() {
                let _ = builder.finish();
            }
            drop(builder);
            let _ = berth_storage::mount::unmount(&target);
        }
        let _ = std::fs::remove_dir(&target);
    });
    Response::builder()
        .header("Content-Type", "application/x-tar")
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}
