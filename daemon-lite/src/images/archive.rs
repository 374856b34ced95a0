//! Images from archives: `docker save` tarballs (`manifest.json` + configs + layer tars, as
//! `docker load` takes them) and root filesystem tars (`docker import`). The upload is spooled
//! to a file first, since a save archive may list its manifest after its layers.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use berth_storage::layer::{self, ApplyOptions};
use serde::Deserialize;
use serde_json::{Value, json};

use super::content::{BlobWriter, Descriptor};
use super::{Image, ImageStore, Reference, chain_keys, digest_of};
use berth_storage::layer::Compression;
use std::io::Write;

/// Why an archive could not be loaded: the client's fault (400) or ours (500).
#[derive(Debug)]
pub enum ArchiveError {
    Invalid(String),
    Failed(String),
}

impl From<io::Error> for ArchiveError {
    fn from(e: io::Error) -> Self {
        ArchiveError::Failed(e.to_string())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Where each regular file of the archive starts and how long it is.
fn index(file: &mut File) -> Result<HashMap<String, (u64, u64)>, ArchiveError> {
    let mut entries = HashMap::new();
    let mut archive = tar::Archive::new(&mut *file);
    let iter = archive
        .entries()
        .map_err(|e| ArchiveError::Invalid(format!("not a tar archive: {e}")))?;
    for entry in iter {
        let entry = entry.map_err(|e| ArchiveError::Invalid(format!("bad tar entry: {e}")))?;
        if entry.header().entry_type().is_file() {
            let path = entry
                .path()
                .map_err(|e| ArchiveError::Invalid(format!("bad tar path: {e}")))?;
            let name = path.to_string_lossy().trim_start_matches("./").to_string();
            entries.insert(name, (entry.raw_file_position(), entry.size()));
        }
    }
    Ok(entries)
}

fn member<'a>(
    file: &'a mut File,
    entries: &HashMap<String, (u64, u64)>,
    name: &str,
) -> Result<io::Take<&'a mut File>, ArchiveError> {
    let (offset, size) = entries
        .get(name.trim_start_matches("./"))
        .ok_or_else(|| ArchiveError::Invalid(format!("the archive has no {name:?}")))?;
    file.seek(SeekFrom::Start(*offset))?;
    Ok(file.take(*size))
}

fn read_member(
    file: &mut File,
    entries: &HashMap<String, (u64, u64)>,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>, ArchiveError> {
    let mut bytes = Vec::new();
    member(file, entries, name)?
        .take(limit)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The images of an OCI image layout archive (`index.json`, `blobs/`), as `manifest.json`
/// entries would name them.
fn oci_layout_entries(
    file: &mut File,
    entries: &HashMap<String, (u64, u64)>,
) -> Result<Vec<ManifestEntry>, ArchiveError> {
    let blob = |d: &str| -> Result<String, ArchiveError> {
        let hex = d
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| ArchiveError::Invalid(format!("bad digest {d:?}")))?;
        Ok(format!("blobs/sha256/{hex}"))
    };
    let index = read_member(file, entries, "index.json", 16 << 20).map_err(|_| {
        ArchiveError::Invalid(
            "neither manifest.json (docker save) nor index.json (OCI layout) in the archive".into(),
        )
    })?;
    let index: Value = serde_json::from_slice(&index)
        .map_err(|e| ArchiveError::Invalid(format!("index.json: {e}")))?;
    let mut out = Vec::new();
    for m in index["manifests"].as_array().into_iter().flatten() {
        let digest = m["digest"].as_str().unwrap_or("");
        let bytes = read_member(file, entries, &blob(digest)?, 16 << 20)?;
        if digest_of(&bytes) != digest {
            return Err(ArchiveError::Invalid(format!(
                "manifest {digest}: wrong digest"
            )));
        }
        let manifest: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ArchiveError::Invalid(format!("manifest {digest}: {e}")))?;
        let name = m["annotations"]["io.containerd.image.name"]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .filter(|r| r.contains(['/', ':']))
                    .map(str::to_string)
            });
        out.push(ManifestEntry {
            config: blob(manifest["config"]["digest"].as_str().unwrap_or(""))?,
            repo_tags: name.map(|n| vec![n]),
            layers: manifest["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| blob(l["digest"].as_str().unwrap_or("")))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(out)
}

/// Loads every image of a `docker save` archive; returns what was loaded, as `docker load`
/// prints it (`Loaded image: busybox:latest` or `Loaded image ID: sha256:…`).
pub fn load(store: &ImageStore, path: &Path) -> Result<Vec<String>, ArchiveError> {
    let mut file = File::open(path)?;
    let entries = index(&mut file)?;
    let manifest: Vec<ManifestEntry> = if entries.contains_key("manifest.json") {
        let bytes = read_member(&mut file, &entries, "manifest.json", 16 << 20)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ArchiveError::Invalid(format!("manifest.json: {e}")))?
    } else {
        oci_layout_entries(&mut file, &entries)?
    };
    let mut loaded = Vec::new();
    for m in manifest {
        let config_bytes = read_member(&mut file, &entries, &m.config, 16 << 20)?;
        let config: Value = serde_json::from_slice(&config_bytes)
            .map_err(|e| ArchiveError::Invalid(format!("{}: {e}", m.config)))?;
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(str::to_string))
            .collect();
        if diff_ids.len() != m.layers.len() {
            return Err(ArchiveError::Invalid(format!(
                "{}: {} diff ids for {} layers",
                m.config,
                diff_ids.len(),
                m.layers.len()
            )));
        }
        let keys = chain_keys(&diff_ids);
        let mut size = 0;
        let mut layer_blobs = Vec::new();
        for (i, layer_path) in m.layers.iter().enumerate() {
            let (used, blob) = apply_layer(
                store,
                &keys,
                i,
                &diff_ids[i],
                &mut file,
                &entries,
                layer_path,
            )?;
            size += used;
            layer_blobs.push(blob);
        }
        store
            .content
            .write(&digest_of(&config_bytes), &config_bytes)?;
        let mut repo_tags = Vec::new();
        for t in m.repo_tags.unwrap_or_default() {
            let r = Reference::parse(&t).map_err(ArchiveError::Invalid)?;
            repo_tags.extend(r.tagged());
        }
        let image = Image {
            id: digest_of(&config_bytes),
            repo_tags: repo_tags.clone(),
            repo_digests: Vec::new(),
            config,
            layers: keys,
            size,
            layer_blobs,
        };
        if repo_tags.is_empty() {
            loaded.push(format!("Loaded image ID: {}", image.id));
        }
        for t in &repo_tags {
            loaded.push(format!("Loaded image: {t}"));
        }
        store.insert(image)?;
    }
    Ok(loaded)
}

/// The media type of a layer blob as it was read.
pub fn layer_media_type(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
        Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// Copies what is read into a content-store blob.
pub struct Tee<R> {
    pub inner: R,
    pub blob: BlobWriter,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.blob.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Applies layer `i` unless its chain is already there, keeping its blob; the bytes it uses
/// and the blob's descriptor.
fn apply_layer(
    store: &ImageStore,
    keys: &[String],
    i: usize,
    diff_id: &str,
    file: &mut File,
    entries: &HashMap<String, (u64, u64)>,
    layer_path: &str,
) -> Result<(u64, Descriptor), ArchiveError> {
    let snapshotter = store.snapshotter.as_ref();
    let mut head = [0u8; 4];
    let _ = member(file, entries, layer_path)?.read(&mut head)?;
    let mut tee = Tee {
        inner: member(file, entries, layer_path)?,
        blob: store.content.writer()?,
    };
    let (digest, media_type) = if snapshotter.stat(&keys[i]).is_err() {
        let parent = if i == 0 {
            None
        } else {
            Some(keys[i - 1].as_str())
        };
        let applied = layer::apply_layer(
            snapshotter,
            &keys[i],
            parent,
            &mut tee,
            &ApplyOptions::default(),
            Default::default(),
        )
        .map_err(|e| ArchiveError::Invalid(format!("layer {layer_path}: {e}")))?;
        if applied.diff_id != diff_id {
            let _ = snapshotter.remove(&keys[i]);
            return Err(ArchiveError::Invalid(format!(
                "layer {layer_path}: content is {} but the config says {diff_id}",
                applied.diff_id
            )));
        }
        (applied.digest, layer_media_type(applied.compression))
    } else {
        // The layer is there already: only its blob is kept (the archive's bytes).
        io::copy(&mut tee, &mut io::sink())?;
        let compression = match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
            _ => Compression::None,
        };
        (String::new(), layer_media_type(compression))
    };
    let size = tee.blob.size();
    let digest = if digest.is_empty() {
        tee.blob.commit_computed(&store.content)?
    } else {
        tee.blob.commit(&store.content, &digest)?;
        digest
    };
    let usage = snapshotter.usage(&keys[i]).map(|u| u.size).unwrap_or(0);
    Ok((
        usage,
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
        },
    ))
}

/// `docker import`: one layer from a root filesystem tar (gzip or zstd too), an image config
/// made from `changes` (Dockerfile instructions: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL,
/// EXPOSE, VOLUME, STOPSIGNAL). Returns the image id.
pub fn import(
    store: &ImageStore,
    path: &Path,
    tag: Option<String>,
    changes: &[String],
    message: &str,
) -> Result<String, ArchiveError> {
    let mut runtime_config = json!({});
    for change in changes {
        apply_change(&mut runtime_config, change).map_err(ArchiveError::Invalid)?;
    }
    let key = format!("layer-import-{}", crate::names::new_id()?);
    let mut tee = Tee {
        inner: File::open(path)?,
        blob: store.content.writer()?,
    };
    let applied = layer::apply_layer(
        store.snapshotter.as_ref(),
        &key,
        None,
        &mut tee,
        &ApplyOptions::default(),
        Default::default(),
    )
    .map_err(|e| ArchiveError::Invalid(format!("import: {e}")))?;
    let blob = Descriptor {
        media_type: layer_media_type(applied.compression).into(),
        digest: applied.digest.clone(),
        size: tee.blob.size(),
    };
    tee.blob.commit(&store.content, &applied.digest)?;
    let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let config = json!({
        "architecture": crate::platform::architecture(),
        "os": "linux",
        "created": now,
        "comment": message,
        "config": runtime_config,
        "rootfs": {"type": "layers", "diff_ids": [applied.diff_id]},
        "history": [{"created": now, "comment": message, "created_by": "berth import"}],
    });
    let bytes = serde_json::to_vec(&config).map_err(|e| ArchiveError::Failed(e.to_string()))?;
    store.content.write(&digest_of(&bytes), &bytes)?;
    let size = store.snapshotter.usage(&key).map(|u| u.size).unwrap_or(0);
    let image = Image {
        id: digest_of(&bytes),
        repo_tags: tag.into_iter().collect(),
        repo_digests: Vec::new(),
        config,
        layers: vec![key],
        size,
        layer_blobs: vec![blob],
    };
    let id = image.id.clone();
    store.insert(image)?;
    Ok(id)
}

/// Applies one Dockerfile-style instruction to an image's runtime config.
pub fn apply_change(config: &mut Value, change: &str) -> Result<(), String> {
    let change = change.trim();
    let (word, rest) = change
        .split_once(char::is_whitespace)
        .map(|(w, r)| (w, r.trim()))
        .unwrap_or((change, ""));
    let list = |shell: bool| -> Value {
        match serde_json::from_str::<Vec<String>>(rest) {
            Ok(v) => json!(v),
            Err(_) if shell => json!(["/bin/sh", "-c", rest]),
            Err(_) => json!(rest.split_whitespace().collect::<Vec<_>>()),
        }
    };
    match word.to_ascii_uppercase().as_str() {
        "CMD" => config["Cmd"] = list(true),
        "ENTRYPOINT" => config["Entrypoint"] = list(true),
        "WORKDIR" => config["WorkingDir"] = json!(rest),
        "USER" => config["User"] = json!(rest),
        "STOPSIGNAL" => config["StopSignal"] = json!(rest),
        "ENV" => {
            let (k, v) = rest
                .split_once(['=', ' '])
                .ok_or_else(|| format!("ENV needs KEY=VALUE: {change:?}"))?;
            let mut env: Vec<Value> = config["Env"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| !e.as_str().is_some_and(|s| s.starts_with(&format!("{k}="))))
                .collect();
            env.push(json!(format!("{k}={}", v.trim())));
            config["Env"] = json!(env);
        }
        "LABEL" => {
            let (k, v) = rest
                .split_once('=')
                .ok_or_else(|| format!("LABEL needs KEY=VALUE: {change:?}"))?;
            if !config["Labels"].is_object() {
                config["Labels"] = json!({});
            }
            config["Labels"][k.trim()] = json!(v.trim().trim_matches('"'));
        }
        "EXPOSE" | "VOLUME" => {
            let field = if word.eq_ignore_ascii_case("EXPOSE") {
                "ExposedPorts"
            } else {
                "Volumes"
            };
            if !config[field].is_object() {
                config[field] = json!({});
            }
            for item in list(false).as_array().into_iter().flatten() {
                let mut name = item.as_str().unwrap_or("").to_string();
                if field == "ExposedPorts" && !name.contains('/') {
                    name.push_str("/tcp");
                }
                config[field][name] = json!({});
            }
        }
        other => return Err(format!("{other} is not a change import can apply")),
    }
    Ok(())
}

/// `docker save`: the images as one tar in both layouts docker load and OCI tools read —
/// `manifest.json` (Docker's) and `index.json` + `oci-layout` (OCI's) over the same
/// `blobs/sha256/…`, which are the blobs as berth keeps them (as pulled, loaded or imported).
pub fn save(
    store: &ImageStore,
    images: &[(Image, Option<String>)],
    out: impl io::Write,
) -> Result<(), ArchiveError> {
    let mut builder = tar::Builder::new(out);
    let mut written = std::collections::HashSet::new();
    let mut docker_manifest = Vec::new();
    let mut index = Vec::new();
    let add = |builder: &mut tar::Builder<_>, name: String, bytes: &[u8]| -> io::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, bytes)
    };
    let blob_name = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    for (image, tag) in images {
        if image.layer_blobs.len() != image.layers.len() {
            return Err(ArchiveError::Invalid(format!(
                "image {} has no layer blobs kept (loaded by an older berth); load or pull it again",
                image.id
            )));
        }
        let config = store
            .content
            .read(&image.id)
            .or_else(|_| serde_json::to_vec(&image.config).map_err(io::Error::other))?;
        if !store.content.has(&image.id) {
            // Checked against the image id as it is stored.
            store
                .content
                .write(&image.id, &config)
                .map_err(|e| ArchiveError::Failed(format!("the config of {}: {e}", image.id)))?;
        }
        let mut blobs = vec![(image.id.clone(), None)];
        blobs.extend(
            image
                .layer_blobs
                .iter()
                .map(|b| (b.digest.clone(), Some(b.size))),
        );
        for (digest, _) in &blobs {
            if written.insert(digest.clone()) {
                let path = store
                    .content
                    .path(digest)
                    .filter(|p| p.exists())
                    .ok_or_else(|| ArchiveError::Failed(format!("blob {digest} is missing")))?;
                builder.append_path_with_name(&path, blob_name(digest))?;
            }
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": image.id, "size": config.len()},
            "layers": image.layer_blobs.iter().map(|b| json!({
                "mediaType": match b.media_type.as_str() {
                    m if m.ends_with("gzip") => "application/vnd.oci.image.layer.v1.tar+gzip",
                    m if m.ends_with("zstd") => "application/vnd.oci.image.layer.v1.tar+zstd",
                    _ => "application/vnd.oci.image.layer.v1.tar",
                },
                "digest": b.digest, "size": b.size,
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|e| ArchiveError::Failed(e.to_string()))?;
        let manifest_digest = digest_of(&manifest_bytes);
        if written.insert(manifest_digest.clone()) {
            add(&mut builder, blob_name(&manifest_digest), &manifest_bytes)?;
        }
        let tags: Vec<String> = tag.iter().cloned().collect();
        let mut entry = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_bytes.len()});
        if let Some(t) = tag {
            entry["annotations"] = json!({"io.containerd.image.name": t, "org.opencontainers.image.ref.name": t.rsplit_once(':').map_or("latest", |(_, t)| t)});
        }
        index.push(entry);
        docker_manifest.push(json!({
            "Config": blob_name(&image.id),
            "RepoTags": tags,
            "Layers": image.layer_blobs.iter().map(|b| blob_name(&b.digest)).collect::<Vec<_>>(),
        }));
    }
    let docker_manifest =
        serde_json::to_vec(&docker_manifest).map_err(|e| ArchiveError::Failed(e.to_string()))?;
    add(&mut builder, "manifest.json".into(), &docker_manifest)?;
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index}))
        .map_err(|e| ArchiveError::Failed(e.to_string()))?;
    add(&mut builder, "index.json".into(), &index)?;
    add(
        &mut builder,
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    builder.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_shape_the_config_as_dockerfile_instructions_do() {
        let mut c = json!({});
        for ch in [
            "CMD [\"sh\", \"-c\", \"echo hi\"]",
            "ENTRYPOINT /bin/app --flag",
            "ENV A=1",
            "ENV A=2",
            "ENV B 3",
            "WORKDIR /srv",
            "USER 1000:1000",
            "LABEL maintainer=\"berth\"",
            "EXPOSE 80 53/udp",
            "VOLUME [\"/data\"]",
        ] {
            apply_change(&mut c, ch).unwrap();
        }
        assert_eq!(c["Cmd"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/bin/app --flag"]));
        assert_eq!(c["Env"], json!(["A=2", "B=3"]));
        assert_eq!(c["WorkingDir"], "/srv");
        assert_eq!(c["User"], "1000:1000");
        assert_eq!(c["Labels"]["maintainer"], "berth");
        assert!(c["ExposedPorts"]["80/tcp"].is_object());
        assert!(c["ExposedPorts"]["53/udp"].is_object());
        assert!(c["Volumes"]["/data"].is_object());
        assert!(apply_change(&mut c, "RUN rm -rf /").is_err());
        assert!(apply_change(&mut c, "ENV novalue").is_err());
    }
}
