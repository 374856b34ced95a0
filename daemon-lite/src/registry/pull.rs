//! `docker pull`: manifest (an index or manifest list picks this platform), config, then the
//! layers: downloaded several at once and resumably ([`super::download`]), each applied bottom
//! up by the storage driver while its bytes arrive, its digest checked over every byte and its
//! diff id against the config. Layers already present (same chain) are not fetched. The image
//! is recorded only once every layer is committed: a pull cut short (error, registry gone,
//! daemon killed) leaves no image; the layers it committed and the bytes it downloaded are
//! reused by the next attempt.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use super::client::{Credentials, Registry, RegistryError, read_limited};
use super::download::{Arrival, BlobRequest, download};
use crate::daemon::Daemon;
use crate::images::content::Descriptor;
use crate::images::{Image, Reference, chain_keys, digest_of};

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Progress as Docker's JSON lines, to the client.
#[derive(Clone)]
pub struct Progress {
    tx: mpsc::Sender<Bytes>,
}

impl Progress {
    pub fn new(tx: mpsc::Sender<Bytes>) -> Progress {
        Progress { tx }
    }

    pub async fn send(&self, v: Value) {
        let mut b = serde_json::to_vec(&v).unwrap_or_default();
        b.push(b'\n');
        let _ = self.tx.send(Bytes::from(b)).await;
    }

    pub async fn status(&self, id: Option<&str>, status: &str) {
        let mut v = json!({"status": status});
        if let Some(id) = id {
            v["id"] = json!(id);
            v["progressDetail"] = json!({});
        }
        self.send(v).await;
    }
}

pub(super) fn short(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

fn check_digest(what: &str, bytes: &[u8], expected: &str) -> Result<(), RegistryError> {
    let actual = digest_of(bytes);
    if actual != expected {
        return Err(RegistryError::Failed(format!(
            "{what}: content is {actual}, expected {expected}"
        )));
    }
    Ok(())
}

/// Pulls `reference` (familiar form) and records the image; returns it.
pub async fn pull(
    d: &Arc<Daemon>,
    reference: &Reference,
    credentials: Option<Credentials>,
    progress: &Progress,
) -> Result<Image, RegistryError> {
    let (host, path) = super::locate(reference);
    let wanted = reference
        .digest
        .clone()
        .or_else(|| reference.tag.clone())
        .unwrap_or_else(|| "latest".into());
    progress
        .status(
            reference.tag.as_deref().or(Some(&wanted)),
            &format!("Pulling from {path}"),
        )
        .await;
    // Docker Hub's mirrors first (anonymously: Hub credentials stay with Hub), then the
    // registry itself.
    let mut found = None;
    for endpoint in super::endpoints(&host, &d.config.registries) {
        let attempt = async {
            let credentials = if endpoint.mirror {
                None
            } else {
                credentials.clone()
            };
            let registry =
                Registry::connect(&endpoint.host, &d.config.registries, credentials).await?;
            let manifest = resolve_manifest(&registry, &path, &wanted, reference).await?;
            Ok::<_, RegistryError>((registry, manifest))
        };
        match attempt.await {
            Ok(ok) => {
                found = Some(ok);
                break;
            }
            Err(e) if endpoint.mirror => {
                tracing::info!("mirror {} for {path}: {e}; trying the next", endpoint.host);
            }
            Err(e) => return Err(e),
        }
    }
    let Some((registry, (manifest, manifest_bytes))) = found else {
        return Err(RegistryError::Failed(format!("no registry for {host}")));
    };
    let registry = Arc::new(registry);
    let manifest_digest = reference
        .digest
        .clone()
        .unwrap_or_else(|| digest_of(&manifest_bytes));
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| RegistryError::Failed("the manifest names no config".into()))?
        .to_string();
    let config_bytes = read_limited(
        registry
            .get(&format!("/v2/{path}/blobs/{config_digest}"), "")
            .await?,
        16 << 20,
    )
    .await?;
    check_digest("image config", &config_bytes, &config_digest)?;
    let content = &d.images.content;
    content
        .write(&config_digest, &config_bytes)
        .and_then(|()| content.write(&digest_of(&manifest_bytes), &manifest_bytes))
        .map_err(|e| RegistryError::Failed(format!("store the manifest and config: {e}")))?;
    let config: Value = serde_json::from_slice(&config_bytes)
        .map_err(|e| RegistryError::Failed(format!("image config: {e}")))?;
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let layers: Vec<(String, u64)> = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["digest"].as_str().unwrap_or("").to_string(),
                l["size"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let layer_blobs: Vec<Descriptor> = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| serde_json::from_value(l.clone()).ok())
        .collect();
    if layers.len() != diff_ids.len() {
        return Err(RegistryError::Failed(format!(
            "the manifest has {} layers, its config {} diff ids",
            layers.len(),
            diff_ids.len()
        )));
    }
    let keys = chain_keys(&diff_ids);
    let size = fetch_layers(d, registry, &path, &layers, &diff_ids, &keys, progress).await?;
    let image = Image {
        id: digest_of(&config_bytes),
        repo_tags: reference.tagged().into_iter().collect(),
        repo_digests: vec![format!("{}@{manifest_digest}", reference.repository)],
        config,
        layers: keys,
        size,
        layer_blobs,
    };
    d.images
        .insert(image.clone())
        .map_err(|e| RegistryError::Failed(format!("record the image: {e}")))?;
    progress
        .status(None, &format!("Digest: {manifest_digest}"))
        .await;
    let name = reference
        .tagged()
        .unwrap_or_else(|| format!("{}@{manifest_digest}", reference.repository));
    progress
        .status(None, &format!("Status: Downloaded newer image for {name}"))
        .await;
    Ok(image)
}

/// The image manifest `wanted` names (through an index or manifest list, this platform's).
async fn resolve_manifest(
    registry: &Registry,
    path: &str,
    wanted: &str,
    reference: &Reference,
) -> Result<(Value, Vec<u8>), RegistryError> {
    let (manifest, manifest_bytes) = fetch_manifest(registry, path, wanted).await?;
    if let Some(d) = &reference.digest {
        check_digest("manifest", &manifest_bytes, d)?;
    }
    if !manifest["manifests"].is_array() {
        return Ok((manifest, manifest_bytes));
    }
    let arch = crate::platform::architecture();
    let chosen = manifest["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
        .and_then(|m| m["digest"].as_str())
        .ok_or_else(|| {
            RegistryError::NotFound(format!(
                "no matching manifest for linux/{arch} in the manifest list entries"
            ))
        })?
        .to_string();
    let (m, bytes) = fetch_manifest(registry, path, &chosen).await?;
    check_digest("manifest", &bytes, &chosen)?;
    Ok((m, bytes))
}

async fn fetch_manifest(
    registry: &Registry,
    path: &str,
    reference: &str,
) -> Result<(Value, Vec<u8>), RegistryError> {
    let resp = match registry
        .get(&format!("/v2/{path}/manifests/{reference}"), MANIFEST_TYPES)
        .await
    {
        Err(RegistryError::NotFound(_)) => {
            return Err(RegistryError::NotFound(format!(
                "manifest for {}/{path}:{reference} not found: manifest unknown",
                registry.host()
            )));
        }
        other => other?,
    };
    let bytes = read_limited(resp, 4 << 20).await?;
    let v = serde_json::from_slice(&bytes)
        .map_err(|e| RegistryError::Failed(format!("manifest: {e}")))?;
    Ok((v, bytes))
}

/// Downloads the layers not here yet, several at once, and applies them bottom up as their
/// bytes arrive; the layers' total unpacked size.
async fn fetch_layers(
    d: &Arc<Daemon>,
    registry: Arc<Registry>,
    path: &str,
    layers: &[(String, u64)],
    diff_ids: &[String],
    keys: &[String],
    progress: &Progress,
) -> Result<u64, RegistryError> {
    let snapshotter = d.images.snapshotter.clone();
    let content = &d.images.content;
    let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_DOWNLOADS));
    let mut downloads = Downloads(Vec::new());
    for (i, (digest, size)) in layers.iter().enumerate() {
        let id = short(digest);
        if snapshotter.stat(&keys[i]).is_ok() && content.has(digest) {
            progress.status(Some(&id), "Already exists").await;
            downloads.0.push(None);
            continue;
        }
        progress.status(Some(&id), "Pulling fs layer").await;
        let arrival = Arc::new(Arrival::default());
        let task = tokio::spawn(download(
            registry.clone(),
            content.clone(),
            limit.clone(),
            BlobRequest {
                path: path.to_string(),
                digest: digest.clone(),
                size: *size,
            },
            arrival.clone(),
            progress.clone(),
        ));
        downloads.0.push(Some((arrival, task)));
    }
    let mut size = 0;
    for (i, (digest, _)) in layers.iter().enumerate() {
        if let Some((arrival, task)) = downloads.0[i].take() {
            let applied = apply_arriving(d, digest, keys, i, &arrival).await;
            // The download's own error says more than the apply's "download failed".
            let downloaded = task
                .await
                .map_err(|e| RegistryError::Failed(e.to_string()))?;
            downloaded?;
            let applied = applied?;
            if let Some(diff_id) = applied.filter(|got| *got != diff_ids[i]) {
                let _ = snapshotter.remove(&keys[i]);
                return Err(RegistryError::Failed(format!(
                    "layer {digest}: its content is {diff_id} but the image config says {}",
                    diff_ids[i]
                )));
            }
            progress.status(Some(&short(digest)), "Pull complete").await;
        }
        size += snapshotter.usage(&keys[i]).map(|u| u.size).unwrap_or(0);
    }
    Ok(size)
}

/// dockerd's default `max-concurrent-downloads`.
const MAX_CONCURRENT_DOWNLOADS: usize = 3;

/// The pull's download tasks, stopped if the pull ends early (their ingests stay for the
/// next attempt).
struct Downloads(Vec<Option<(Arc<Arrival>, DownloadTask)>>);

type DownloadTask = tokio::task::JoinHandle<Result<(), RegistryError>>;

impl Drop for Downloads {
    fn drop(&mut self) {
        for (_, task) in self.0.iter().flatten() {
            task.abort();
        }
    }
}

/// Applies layer `i` from its bytes as they arrive, unless its snapshot is there already (its
/// blob was missing); the diff id it applied.
async fn apply_arriving(
    d: &Arc<Daemon>,
    digest: &str,
    keys: &[String],
    i: usize,
    arrival: &Arc<Arrival>,
) -> Result<Option<String>, RegistryError> {
    let snapshotter = d.images.snapshotter.clone();
    let key = keys[i].clone();
    let parent = (i > 0).then(|| keys[i - 1].clone());
    let opts = berth_storage::layer::ApplyOptions {
        digest: Some(digest.to_string()),
        ..Default::default()
    };
    let mut reader = arrival.reader();
    tokio::task::spawn_blocking(move || {
        if snapshotter.stat(&key).is_ok() {
            std::io::copy(&mut reader, &mut std::io::sink())
                .map(|_| None)
                .map_err(|e| e.to_string())
        } else {
            berth_storage::layer::apply_layer(
                snapshotter.as_ref(),
                &key,
                parent.as_deref(),
                &mut reader,
                &opts,
                Default::default(),
            )
            .map(|applied| Some(applied.diff_id))
            .map_err(|e| e.to_string())
        }
    })
    .await
    .map_err(|e| RegistryError::Failed(e.to_string()))?
    .map_err(|e| RegistryError::Failed(format!("layer {digest}: {e}")))
}
