//! `docker push`: each layer blob and the config unless the registry has them (HEAD) or can
//! mount them from another repository of the same registry the image came from (`mount=`),
//! small blobs uploaded whole (POST, then PUT with the digest), large ones in chunks (PATCH with
//! `Content-Range`, a failed chunk resent from where the registry says the upload stands),
//! then the manifest last. The manifest is the one the image was pulled by when berth has it
//! (so its digest survives a pull and a push); otherwise a Docker schema 2 manifest (an OCI one
//! if a layer is zstd).

use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::client::{Credentials, Payload, Registry, RegistryError, read_limited};
use super::pull::Progress;
use crate::daemon::Daemon;
use crate::images::content::Descriptor;
use crate::images::{Image, Reference, digest_of};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

fn short(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

/// The manifest to push and its media type.
fn manifest_for(
    d: &Daemon,
    image: &Image,
    config_size: u64,
) -> Result<(Vec<u8>, String), RegistryError> {
    for rd in &image.repo_digests {
        if let Some((_, digest)) = rd.rsplit_once('@') {
            if let Ok(bytes) = d.images.content.read(digest) {
                if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                    if v["config"]["digest"] == image.id.as_str() {
                        let media = v["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string();
                        return Ok((bytes, media));
                    }
                }
            }
        }
    }
    let oci = image
        .layer_blobs
        .iter()
        .any(|b| b.media_type.contains("oci"));
    let (media, config_media) = if oci {
        (OCI_MANIFEST, OCI_CONFIG)
    } else {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media,
        "config": {"mediaType": config_media, "size": config_size, "digest": image.id},
        "layers": image.layer_blobs,
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| RegistryError::Failed(e.to_string()))?;
    Ok((bytes, media.to_string()))
}

/// Blobs larger than this go up in chunks of this size (PATCH with `Content-Range`), so a
/// broken connection costs one chunk, not the blob.
const CHUNK: u64 = 16 << 20;

/// Attempts per chunk; each asks the registry how much it has first.
const ATTEMPTS: u32 = 3;

/// What happened to one blob.
enum Sent {
    Exists,
    Mounted(String),
    Pushed,
}

fn failure(what: &str, status: StatusCode, body: &[u8]) -> RegistryError {
    RegistryError::Failed(format!(
        "{what}: {status}: {}",
        String::from_utf8_lossy(body).trim()
    ))
}

/// Where an upload continues (`Location`, as a path on this registry).
fn next_location(
    registry: &Registry,
    resp: &hyper::Response<hyper::body::Incoming>,
) -> Result<String, RegistryError> {
    let location = resp
        .headers()
        .get("Location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| RegistryError::Failed("upload without a Location".into()))?;
    registry.local_path(location)
}

/// `POST /v2/<path>/blobs/uploads/`: a new upload session.
async fn open_upload(
    registry: &Registry,
    path: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, RegistryError> {
    registry
        .request(
            Method::POST,
            &format!("/v2/{path}/blobs/uploads/"),
            &Payload::Bytes(Bytes::new(), "application/octet-stream".into()),
        )
        .await
}

/// The error for an upload the registry would not open.
async fn upload_refused(path: &str, resp: hyper::Response<hyper::body::Incoming>) -> RegistryError {
    let status = resp.status();
    let body = read_limited(resp, 4096).await.unwrap_or_default();
    failure(&format!("start an upload to {path}"), status, &body)
}

/// Uploads one blob unless the registry has it, mounting it from another repository of the
/// same registry that has it (`mount_from`) rather than sending it again.
async fn upload(
    registry: &Registry,
    path: &str,
    d: &Daemon,
    blob: &Descriptor,
    mount_from: &[String],
    progress: &Progress,
) -> Result<Sent, RegistryError> {
    let exists = registry
        .request(
            Method::HEAD,
            &format!("/v2/{path}/blobs/{}", blob.digest),
            &Payload::None,
        )
        .await?;
    if exists.status() == StatusCode::OK {
        return Ok(Sent::Exists);
    }
    let file = d
        .images
        .content
        .path(&blob.digest)
        .filter(|p| p.exists())
        .ok_or_else(|| {
            RegistryError::Failed(format!(
                "blob {} is not in berth's content store",
                blob.digest
            ))
        })?;
    let empty = || Payload::Bytes(Bytes::new(), "application/octet-stream".into());
    let mut start = None;
    if let Some(from) = mount_from.first() {
        let resp = registry
            .request(
                Method::POST,
                &format!(
                    "/v2/{path}/blobs/uploads/?mount={}&from={from}",
                    blob.digest
                ),
                &empty(),
            )
            .await?;
        if resp.status() == StatusCode::CREATED {
            return Ok(Sent::Mounted(from.clone()));
        }
        // 202: the registry could not mount and opened an ordinary upload instead.
        start = Some(resp);
    }
    let start = match start {
        Some(resp) => resp,
        None => open_upload(registry, path).await?,
    };
    if start.status() != StatusCode::ACCEPTED {
        return Err(upload_refused(path, start).await);
    }
    let mut location = next_location(registry, &start)?;
    if blob.size > CHUNK {
        location = match upload_chunks(registry, &location, &file, blob, progress).await {
            // The registry lost the upload (distribution forgets one whose state token went
            // stale with a lost answer): once more from the start.
            Err(RegistryError::NotFound(_)) => {
                let again = open_upload(registry, path).await?;
                if again.status() != StatusCode::ACCEPTED {
                    return Err(upload_refused(path, again).await);
                }
                let location = next_location(registry, &again)?;
                upload_chunks(registry, &location, &file, blob, progress).await?
            }
            other => other?,
        };
    }
    let sep = if location.contains('?') { '&' } else { '?' };
    let body = if blob.size > CHUNK {
        empty()
    } else {
        Payload::File {
            path: file,
            offset: 0,
            len: blob.size,
        }
    };
    let put = registry
        .request(
            Method::PUT,
            &format!("{location}{sep}digest={}", blob.digest),
            &body,
        )
        .await?;
    if put.status() != StatusCode::CREATED {
        let status = put.status();
        let body = read_limited(put, 4096).await.unwrap_or_default();
        return Err(failure(&format!("upload {}", blob.digest), status, &body));
    }
    Ok(Sent::Pushed)
}

/// Sends the blob chunk by chunk; a chunk that fails is sent again from where the registry
/// says the upload stands. The location to finish the upload at.
async fn upload_chunks(
    registry: &Registry,
    location: &str,
    file: &std::path::Path,
    blob: &Descriptor,
    progress: &Progress,
) -> Result<String, RegistryError> {
    let id = short(&blob.digest);
    let mut location = location.to_string();
    let mut offset = 0;
    let mut attempt = 0;
    while offset < blob.size {
        let len = CHUNK.min(blob.size - offset);
        let sent = registry
            .request(
                Method::PATCH,
                &location,
                &Payload::File {
                    path: file.to_path_buf(),
                    offset,
                    len,
                },
            )
            .await;
        match sent {
            Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                location = next_location(registry, &resp)?;
                offset += len;
                attempt = 0;
                progress
                    .send(json!({"status": "Pushing", "id": id,
                                 "progressDetail": {"current": offset, "total": blob.size}}))
                    .await;
            }
            Ok(resp) => {
                let status = resp.status();
                let body = read_limited(resp, 4096).await.unwrap_or_default();
                return Err(failure(&format!("upload {}", blob.digest), status, &body));
            }
            Err(RegistryError::Transport(e)) if attempt + 1 < ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(250 << attempt)).await;
                progress.status(Some(&id), &format!("Retrying ({e})")).await;
                // Where the upload stands: `Range: 0-N` means N+1 bytes are there.
                let status = registry.get(&location, "").await.map_err(|e| match e {
                    RegistryError::NotFound(m) => {
                        RegistryError::NotFound(format!("upload of {}: {m}", blob.digest))
                    }
                    e => e,
                })?;
                if let Some(end) = status
                    .headers()
                    .get("Range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|r| r.split_once('-'))
                    .and_then(|(_, end)| end.parse::<u64>().ok())
                {
                    offset = end + 1;
                }
                location = next_location(registry, &status).unwrap_or(location);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(location)
}

/// Pushes `image` as `reference` (which names the repository and tag).
pub async fn push(
    d: &Arc<Daemon>,
    image: &Image,
    reference: &Reference,
    credentials: Option<Credentials>,
    progress: &Progress,
) -> Result<String, RegistryError> {
    let (host, path) = super::locate(reference);
    let registry =
        Registry::connect(super::api_host(&host), &d.config.registries, credentials).await?;
    let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
    progress
        .status(
            None,
            &format!("The push refers to repository [{}]", reference.repository),
        )
        .await;
    if image.layer_blobs.len() != image.layers.len() {
        return Err(RegistryError::Failed(format!(
            "image {} has no layer blobs kept (loaded by an older berth); load or pull it again",
            image.id
        )));
    }
    for blob in image.layer_blobs.iter().rev() {
        progress
            .status(Some(&short(&blob.digest)), "Preparing")
            .await;
    }
    // Repositories of this registry the image came from or went to: their blobs are mounted.
    let mount_from: Vec<String> = image
        .repo_digests
        .iter()
        .filter_map(|rd| rd.split_once('@'))
        .filter_map(|(repo, _)| Reference::parse(repo).ok())
        .map(|r| super::locate(&r))
        .filter(|(h, p)| *h == host && *p != path)
        .map(|(_, p)| p)
        .collect();
    for blob in image.layer_blobs.iter().rev() {
        let id = short(&blob.digest);
        progress.status(Some(&id), "Pushing").await;
        let status = match upload(&registry, &path, d, blob, &mount_from, progress).await? {
            Sent::Exists => "Layer already exists".to_string(),
            Sent::Mounted(from) => format!("Mounted from {from}"),
            Sent::Pushed => "Pushed".to_string(),
        };
        progress.status(Some(&id), &status).await;
    }
    let config_bytes = d
        .images
        .content
        .read(&image.id)
        .or_else(|_| serde_json::to_vec(&image.config).map_err(std::io::Error::other))
        .map_err(|e| RegistryError::Failed(format!("the image config: {e}")))?;
    if digest_of(&config_bytes) != image.id {
        return Err(RegistryError::Failed(format!(
            "the config of {} is not in the content store",
            image.id
        )));
    }
    let config = Descriptor {
        media_type: DOCKER_CONFIG.into(),
        digest: image.id.clone(),
        size: config_bytes.len() as u64,
    };
    upload(&registry, &path, d, &config, &mount_from, progress).await?;
    let (manifest, media_type) = manifest_for(d, image, config.size)?;
    let digest = digest_of(&manifest);
    let resp = registry
        .request(
            Method::PUT,
            &format!("/v2/{path}/manifests/{tag}"),
            &Payload::Bytes(Bytes::from(manifest.clone()), media_type),
        )
        .await?;
    if resp.status() != StatusCode::CREATED {
        let status = resp.status();
        let body = read_limited(resp, 4096).await.unwrap_or_default();
        return Err(RegistryError::Failed(format!(
            "put the manifest: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    let _ = d.images.content.write(&digest, &manifest);
    // As dockerd does: the image now also answers to `repository@digest`.
    let mut pushed = image.clone();
    pushed.repo_tags.clear();
    pushed.repo_digests = vec![format!("{}@{digest}", reference.repository)];
    if let Err(e) = d.images.insert(pushed) {
        tracing::warn!("record the digest of {}: {e}", reference.repository);
    }
    progress
        .status(
            None,
            &format!("{tag}: digest: {digest} size: {}", manifest.len()),
        )
        .await;
    progress
        .send(json!({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": manifest.len()}}))
        .await;
    Ok(digest)
}
