//! `docker push`: each layer blob and the config unless the registry has them (HEAD), uploaded
//! whole (POST for an upload, PUT with the digest), then the manifest last. The manifest is
//! the one the image was pulled by when berth has it (so its digest survives a pull and a
//! push); otherwise a Docker schema 2 manifest (an OCI one if a layer is zstd).

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

/// Uploads one blob unless the registry has it; whether it was sent.
async fn upload(
    registry: &Registry,
    path: &str,
    d: &Daemon,
    blob: &Descriptor,
) -> Result<bool, RegistryError> {
    let exists = registry
        .request(
            Method::HEAD,
            &format!("/v2/{path}/blobs/{}", blob.digest),
            &Payload::None,
        )
        .await?;
    if exists.status() == StatusCode::OK {
        return Ok(false);
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
    let start = registry
        .request(
            Method::POST,
            &format!("/v2/{path}/blobs/uploads/"),
            &Payload::Bytes(Bytes::new(), "application/octet-stream".into()),
        )
        .await?;
    if start.status() != StatusCode::ACCEPTED {
        let status = start.status();
        let body = read_limited(start, 4096).await.unwrap_or_default();
        return Err(RegistryError::Failed(format!(
            "start an upload to {path}: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    let location = start
        .headers()
        .get("Location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| RegistryError::Failed("upload without a Location".into()))?
        .to_string();
    let location = registry.local_path(&location)?;
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = registry
        .request(
            Method::PUT,
            &format!("{location}{sep}digest={}", blob.digest),
            &Payload::File(file, blob.size),
        )
        .await?;
    if put.status() != StatusCode::CREATED {
        let status = put.status();
        let body = read_limited(put, 4096).await.unwrap_or_default();
        return Err(RegistryError::Failed(format!(
            "upload {}: {status}: {}",
            blob.digest,
            String::from_utf8_lossy(&body).trim()
        )));
    }
    Ok(true)
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
    let registry = Registry::new(&host, &d.config.insecure_registries, credentials)?;
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
    for blob in image.layer_blobs.iter().rev() {
        let id = short(&blob.digest);
        progress.status(Some(&id), "Pushing").await;
        let sent = upload(&registry, &path, d, blob).await?;
        progress
            .status(
                Some(&id),
                if sent {
                    "Pushed"
                } else {
                    "Layer already exists"
                },
            )
            .await;
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
    upload(&registry, &path, d, &config).await?;
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
