//! `docker pull`: manifest (an index or manifest list picks this platform), config, then each
//! layer streamed from the registry into the storage driver's layer apply, its digest checked
//! over every byte as it arrives and its diff id against the config. Layers already present
//! (same chain) are not fetched. The image is recorded only once every layer is committed: a
//! pull cut short (error, registry gone, daemon killed) leaves no image, and the layers it did
//! commit are reused by the next attempt.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::client::{Credentials, Registry, RegistryError, read_limited};
use crate::daemon::Daemon;
use crate::images::content::Descriptor;
use crate::images::{Image, Reference, chain_keys, digest_of};

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Progress as Docker's JSON lines, to the client.
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

fn short(digest: &str) -> String {
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
    let registry = Registry::new(&host, &d.config.insecure_registries, credentials)?;
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

    let (mut manifest, mut manifest_bytes) = fetch_manifest(&registry, &path, &wanted).await?;
    if let Some(d) = &reference.digest {
        check_digest("manifest", &manifest_bytes, d)?;
    }
    if manifest["manifests"].is_array() {
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
        let (m, bytes) = fetch_manifest(&registry, &path, &chosen).await?;
        check_digest("manifest", &bytes, &chosen)?;
        manifest = m;
        manifest_bytes = bytes;
    }
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
    let snapshotter = d.images.snapshotter.clone();
    for (digest, _) in &layers {
        progress
            .status(Some(&short(digest)), "Pulling fs layer")
            .await;
    }
    let mut size = 0;
    for (i, (digest, total)) in layers.iter().enumerate() {
        let id = short(digest);
        if snapshotter.stat(&keys[i]).is_ok() && content.has(digest) {
            progress.status(Some(&id), "Already exists").await;
        } else {
            fetch_layer(
                d,
                &registry,
                &path,
                digest,
                *total,
                &diff_ids[i],
                &keys,
                i,
                progress,
            )
            .await?;
            progress.status(Some(&id), "Pull complete").await;
        }
        size += snapshotter.usage(&keys[i]).map(|u| u.size).unwrap_or(0);
    }
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

/// Streams one layer blob into a scratch snapshot, checked and committed as `keys[i]`.
#[allow(clippy::too_many_arguments)]
async fn fetch_layer(
    d: &Arc<Daemon>,
    registry: &Registry,
    path: &str,
    digest: &str,
    total: u64,
    diff_id: &str,
    keys: &[String],
    i: usize,
    progress: &Progress,
) -> Result<(), RegistryError> {
    let id = short(digest);
    let resp = registry
        .get(&format!("/v2/{path}/blobs/{digest}"), "")
        .await?;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(32);
    let snapshotter = d.images.snapshotter.clone();
    let key = keys[i].clone();
    let parent = (i > 0).then(|| keys[i - 1].clone());
    let opts = berth_storage::layer::ApplyOptions {
        digest: Some(digest.to_string()),
        ..Default::default()
    };
    let blob = d
        .images
        .content
        .writer()
        .map_err(|e| RegistryError::Failed(format!("content store: {e}")))?;
    let d2 = d.clone();
    let blob_digest = digest.to_string();
    let apply = tokio::task::spawn_blocking(move || {
        let mut tee = crate::images::archive::Tee {
            inner: ChannelReader {
                rx,
                chunk: Bytes::new(),
            },
            blob,
        };
        // A layer present already (its blob was missing) is only stored, not applied again.
        let applied = if snapshotter.stat(&key).is_ok() {
            std::io::copy(&mut tee, &mut std::io::sink())
                .map(|_| None)
                .map_err(|e| berth_storage::Error::Unsupported(e.to_string()))
        } else {
            berth_storage::layer::apply_layer(
                snapshotter.as_ref(),
                &key,
                parent.as_deref(),
                &mut tee,
                &opts,
                Default::default(),
            )
            .map(Some)
        }?;
        tee.blob
            .commit(&d2.images.content, &blob_digest)
            .map_err(|e| berth_storage::Error::Unsupported(format!("store the blob: {e}")))?;
        Ok::<_, berth_storage::Error>(applied)
    });
    let mut body = resp.into_body();
    let mut current = 0u64;
    let mut last_report = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    current += data.len() as u64;
                    if tx.send(Ok(data)).await.is_err() {
                        break; // apply stopped (it reports why)
                    }
                    if current - last_report >= 512 * 1024 || current == total {
                        last_report = current;
                        progress
                            .send(json!({"status": "Downloading", "id": id,
                                         "progressDetail": {"current": current, "total": total}}))
                            .await;
                    }
                }
            }
            Err(e) => {
                let _ = tx
                    .send(Err(std::io::Error::other(format!(
                        "download of {digest} cut short: {e}"
                    ))))
                    .await;
                break;
            }
        }
    }
    drop(tx);
    progress.status(Some(&id), "Extracting").await;
    let applied = apply
        .await
        .map_err(|e| RegistryError::Failed(e.to_string()))?
        .map_err(|e| RegistryError::Failed(format!("layer {digest}: {e}")))?;
    let Some(applied) = applied else {
        return Ok(());
    };
    if applied.diff_id != diff_id {
        let _ = d.images.snapshotter.remove(&keys[i]);
        return Err(RegistryError::Failed(format!(
            "layer {digest}: its content is {} but the image config says {diff_id}",
            applied.diff_id
        )));
    }
    Ok(())
}

/// The blocking side of the download: what the async side received, in order.
struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}
