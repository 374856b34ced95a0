//! Test fixtures, built from Debian packages (no other network), cached under
//! `target/fixtures/`:
//! - `busybox/rootfs`: a root filesystem made of Debian's busybox-static (one static binary and a
//!   symlink per applet) plus /etc/passwd and /etc/group;
//! - `busybox/config.json`: an OCI bundle around that rootfs (the README's first container);
//! - `busybox-oci/`: the same rootfs as an OCI image layout (one gzip layer), for the image
//!   and registry tests;
//! - `minbase/`, `debian-image/`: a Debian minbase tree (debootstrap) as one layer, and a
//!   three-layer image on it (`docker save` format) for the registry tests.
//!
//! Building is idempotent and safe to race: a file lock serializes builders, and each piece is
//! assembled in a temporary directory and renamed into place only when complete.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// Bump when the layout of a fixture changes, so caches are rebuilt.
const FIXTURE_VERSION: &str = "1";

pub struct Fixtures {
    pub dir: PathBuf,
    /// The busybox bundle: `config.json` and `rootfs/`.
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// OCI image layout of the busybox rootfs, tagged `latest`.
    pub oci_layout: PathBuf,
    /// The same image as `docker save` writes it (`busybox:latest`), for `docker load`.
    pub docker_archive: PathBuf,
}

impl Fixtures {
    /// The OCI image's (only) layer: its digest and its blob.
    pub fn layer(&self) -> io::Result<(String, PathBuf)> {
        let blob = |digest: &str| {
            self.oci_layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"))
        };
        let json = |path: PathBuf| -> io::Result<serde_json::Value> {
            Ok(serde_json::from_slice(&fs::read(path)?)?)
        };
        let index = json(self.oci_layout.join("index.json"))?;
        let manifest = json(blob(
            index["manifests"][0]["digest"].as_str().unwrap_or_default(),
        ))?;
        let digest = manifest["layers"][0]["digest"]
            .as_str()
            .ok_or_else(|| err("the busybox image's manifest has no layer"))?
            .to_string();
        let path = blob(&digest);
        Ok((digest, path))
    }
}

/// The workspace's target directory (honours CARGO_TARGET_DIR).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("kernel-tests sits in the workspace")
        .join("target")
}

/// The fixtures, built on first use in this process.
pub fn busybox() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        build(&target_dir().join("fixtures"))
            .unwrap_or_else(|e| panic!("building test fixtures: {e}"))
    })
}

pub(crate) fn err(what: impl Into<String>) -> io::Error {
    io::Error::other(what.into())
}

/// Runs `cmd`; its stdout, or an error with its stderr.
pub(crate) fn run(cmd: &mut Command) -> io::Result<Vec<u8>> {
    let out = cmd.output().map_err(|e| err(format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// `docker save`'s format of the busybox image: `manifest.json` naming the config and layer
/// blobs, which are copied from the OCI layout.
fn make_docker_archive(f: &Fixtures) -> io::Result<()> {
    let blob = |digest: &str| {
        f.oci_layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(f.oci_layout.join("index.json"))?)?;
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| err("the busybox OCI index has no manifest"))?;
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(blob(manifest_digest))?)?;
    let config = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| err("the busybox manifest has no config"))?;
    let layers: Vec<&str> = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["digest"].as_str())
        .collect();
    let name = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let save_manifest = serde_json::json!([{
        "Config": name(config),
        "RepoTags": ["busybox:latest"],
        "Layers": layers.iter().map(|l| name(l)).collect::<Vec<_>>(),
    }]);
    let tmp = f.docker_archive.with_extension("tmp");
    let mut builder = tar::Builder::new(fs::File::create(&tmp)?);
    let bytes = serde_json::to_vec(&save_manifest)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "manifest.json", &bytes[..])?;
    for d in std::iter::once(config).chain(layers.iter().copied()) {
        builder.append_path_with_name(blob(d), name(d))?;
    }
    builder.into_inner()?.sync_all()?;
    fs::rename(&tmp, &f.docker_archive)
}

/// Builds whatever is missing under `dir`.
pub fn build(dir: &Path) -> io::Result<Fixtures> {
    fs::create_dir_all(dir)?;
    let lock = fs::File::create(dir.join(".lock"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;

    let fixtures = Fixtures {
        dir: dir.to_path_buf(),
        bundle: dir.join("busybox"),
        rootfs: dir.join("busybox/rootfs"),
        oci_layout: dir.join("busybox-oci"),
        docker_archive: dir.join("busybox-docker.tar"),
    };
    let stamp = |p: &Path| p.join(format!(".berth-fixture-v{FIXTURE_VERSION}"));
    if !stamp(&fixtures.bundle).exists() {
        let busybox = fetch_busybox(dir)?;
        assemble(&fixtures.bundle, |tmp| make_bundle(tmp, &busybox))?;
        fs::write(stamp(&fixtures.bundle), b"")?;
    }
    if !stamp(&fixtures.oci_layout).exists() {
        assemble(&fixtures.oci_layout, |tmp| {
            make_oci_layout(tmp, &fixtures.rootfs)
        })?;
        fs::write(stamp(&fixtures.oci_layout), b"")?;
    }
    if !fixtures.docker_archive.exists() {
        make_docker_archive(&fixtures)?;
    }
    Ok(fixtures)
}

/// Builds into a sibling temporary directory and renames it over `dest`.
fn assemble(dest: &Path, make: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let tmp = dest.with_extension("building");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    make(&tmp)?;
    let _ = fs::remove_dir_all(dest);
    fs::rename(&tmp, dest)
}

/// Downloads Debian's busybox-static .deb (apt's cache and lists, nothing else) and unpacks the
/// binary.
fn fetch_busybox(dir: &Path) -> io::Result<PathBuf> {
    let debs = dir.join("debs");
    fs::create_dir_all(&debs)?;
    let have_deb = |d: &Path| -> io::Result<Option<PathBuf>> {
        Ok(fs::read_dir(d)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("busybox-static_"))
            }))
    };
    let deb = match have_deb(&debs)? {
        Some(d) => d,
        None => {
            run(Command::new("apt-get")
                .args(["download", "-q", "busybox-static"])
                .current_dir(&debs))?;
            have_deb(&debs)?.ok_or_else(|| err("apt-get download busybox-static left no .deb"))?
        }
    };
    let unpacked = dir.join("debs/busybox-static");
    let binary = unpacked.join("bin/busybox");
    if !binary.exists() {
        let _ = fs::remove_dir_all(&unpacked);
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    }
    Ok(binary)
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";
const GROUP: &str = "root:x:0:
daemon:x:1:
tty:x:5:
users:x:100:user
user:x:1000:
nogroup:x:65534:
";

fn make_bundle(bundle: &Path, busybox: &Path) -> io::Result<()> {
    let rootfs = bundle.join("rootfs");
    for d in [
        "bin",
        "dev",
        "etc",
        "proc",
        "sys",
        "tmp",
        "root",
        "home/user",
        "mnt",
        "run",
        "var/tmp",
        "usr/bin",
    ] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(rootfs.join("root"), fs::Permissions::from_mode(0o700))?;
    rustix::fs::chown(
        rootfs.join("home/user"),
        Some(rustix::fs::Uid::from_raw(1000)),
        Some(rustix::fs::Gid::from_raw(1000)),
    )?;
    let bin = rootfs.join("bin/busybox");
    fs::copy(busybox, &bin)?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;
    let list = run(Command::new(&bin).arg("--list"))?;
    for applet in String::from_utf8_lossy(&list)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    fs::write(rootfs.join("etc/passwd"), PASSWD)?;
    fs::write(rootfs.join("etc/group"), GROUP)?;
    fs::write(rootfs.join("etc/hostname"), "berth\n")?;
    fs::write(rootfs.join("etc/hosts"), "127.0.0.1 localhost\n")?;

    let mut spec = berth_runtime::spec_template::default_spec(false, 0, 0);
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "echo \"hello from a berth container: $(hostname), pid $$, $(id)\""
    ]);
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec)?,
    )?;
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` as a content-addressed blob and returns its digest ("sha256:…").
fn put_blob(layout: &Path, bytes: &[u8]) -> io::Result<String> {
    let hex = sha256_hex(bytes);
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir)?;
    fs::File::create(dir.join(&hex))?.write_all(bytes)?;
    Ok(format!("sha256:{hex}"))
}

fn make_oci_layout(layout: &Path, rootfs: &Path) -> io::Result<()> {
    // A reproducible layer: sorted names, fixed owner and mtime, gzip without a timestamp.
    let tar = run(Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
        ])
        .arg(rootfs)
        .args(["-cf", "-", "."]))?;
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    let tar_path = layout.join("layer.tar");
    fs::write(&tar_path, &tar)?;
    let gz = run(Command::new("gzip").args(["-n", "-6", "-c"]).arg(&tar_path))?;
    fs::remove_file(&tar_path)?;
    let layer = put_blob(layout, &gz)?;

    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"]
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "berth fixtures: Debian busybox-static"}]
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = put_blob(layout, &config_bytes)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_bytes.len()
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer,
            "size": gz.len()
        }]
    });
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = put_blob(layout, &manifest_bytes)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_bytes.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": "latest"}
        }]
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(())
}

/// Checks an OCI layout's blobs against their digests (used by the fixture's own test).
pub fn verify_oci_layout(layout: &Path) -> io::Result<()> {
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
    let blob = |digest: &str| -> io::Result<Vec<u8>> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| err(format!("bad digest {digest}")))?;
        let bytes = fs::read(layout.join("blobs/sha256").join(hex))?;
        if sha256_hex(&bytes) != hex {
            return Err(err(format!("blob {digest} does not match its digest")));
        }
        Ok(bytes)
    };
    for m in index["manifests"].as_array().into_iter().flatten() {
        let manifest: serde_json::Value =
            serde_json::from_slice(&blob(m["digest"].as_str().unwrap_or_default())?)?;
        blob(manifest["config"]["digest"].as_str().unwrap_or_default())?;
        for l in manifest["layers"].as_array().into_iter().flatten() {
            blob(l["digest"].as_str().unwrap_or_default())?;
        }
    }
    Ok(())
}

/// A Debian minbase root filesystem as one layer, for the storage benchmarks and the bottom
/// of [`debian_image`] (debootstrap downloads ~40 MB from the Debian mirror, once).
pub struct MinbaseLayer {
    pub tar: PathBuf,
    pub gzip: PathBuf,
    pub zstd: PathBuf,
}

/// Builds (once, cached under target/fixtures/minbase) a `debootstrap --variant=minbase
/// bookworm` tree and its layer: uncompressed, gzip and zstd.
pub fn minbase_layer() -> io::Result<MinbaseLayer> {
    let dir = target_dir().join("fixtures");
    fs::create_dir_all(&dir)?;
    let lock = fs::File::create(dir.join(".lock-minbase"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    let out = dir.join("minbase");
    let layer = MinbaseLayer {
        tar: out.join("layer.tar"),
        gzip: out.join("layer.tar.gz"),
        zstd: out.join("layer.tar.zst"),
    };
    let stamp = out.join(format!(".berth-fixture-v{FIXTURE_VERSION}"));
    if stamp.exists() {
        return Ok(layer);
    }
    assemble(&out, |tmp| {
        let rootfs = tmp.join("rootfs");
        run(Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&rootfs)
            .arg("http://deb.debian.org/debian"))?;
        let tar_path = tmp.join("layer.tar");
        let mut tar = io::BufWriter::new(fs::File::create(&tar_path)?);
        berth_storage::layer::diff(
            &berth_storage::Changes::Compare {
                lower: None,
                upper: rootfs.clone(),
            },
            &mut tar,
        )
        .map_err(|e| err(format!("layer of the minbase tree: {e}")))?;
        tar.flush()?;
        drop(tar);
        // Debian's gzip and zstd: a debug build's own compressors take minutes on 200 MB.
        compress(&tar_path, "gzip", &tmp.join("layer.tar.gz"))?;
        compress(&tar_path, "zstd", &tmp.join("layer.tar.zst"))?;
        // The tree itself is not needed any more.
        run(Command::new("rm").arg("-rf").arg(&rootfs))?;
        Ok(())
    })?;
    fs::write(&stamp, b"")?;
    Ok(layer)
}

/// `program -c < src > dest` (gzip -n, zstd -q).
fn compress(src: &Path, program: &str, dest: &Path) -> io::Result<()> {
    let flag = if program == "gzip" { "-n" } else { "-q" };
    let status = Command::new(program)
        .args(["-c", flag])
        .stdin(fs::File::open(src)?)
        .stdout(fs::File::create(dest)?)
        .status()
        .map_err(|e| err(format!("{program}: {e}")))?;
    if !status.success() {
        return Err(err(format!("{program} of {} failed", src.display())));
    }
    Ok(())
}

/// `sha256:<hex>` of a file.
fn file_digest(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    io::copy(&mut fs::File::open(path)?, &mut hasher)?;
    Ok(format!("sha256:{:x}", hasher.finalize()))
}

/// A multi-layer Debian image as `docker save` writes it (`berth-test/debian:multi`): the
/// minbase layer (gzip), a small layer that adds `/etc/berth-layer` and deletes `/etc/motd`
/// (a whiteout), and the busybox layer on top.
pub struct DebianImage {
    pub archive: PathBuf,
    pub tag: &'static str,
    /// The layers' blob digests, bottom first.
    pub layers: Vec<String>,
}

/// Builds (once, cached under target/fixtures/debian-image) the image from
/// [`minbase_layer`] and the busybox fixture.
pub fn debian_image() -> io::Result<DebianImage> {
    let minbase = minbase_layer()?;
    let busybox = busybox();
    let dir = target_dir().join("fixtures");
    let lock = fs::File::create(dir.join(".lock-debian-image"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    let out = dir.join("debian-image");
    let archive = out.join("image.tar");
    let layers_file = out.join("layers.json");
    let stamp = out.join(format!(".berth-fixture-v{FIXTURE_VERSION}"));
    if !stamp.exists() {
        assemble(&out, |tmp| {
            // The middle layer.
            let mid_tar = tmp.join("mid.tar");
            let mut b = tar::Builder::new(fs::File::create(&mid_tar)?);
            let mut add = |path: &str, data: &[u8]| {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(1_700_000_000);
                h.set_cksum();
                b.append_data(&mut h, path, data)
            };
            add("etc/berth-layer", b"the middle layer\n")?;
            add("etc/.wh.motd", b"")?;
            b.into_inner()?.sync_all()?;
            let mid_gz = tmp.join("mid.tar.gz");
            compress(&mid_tar, "gzip", &mid_gz)?;

            let (bb_digest, bb_blob) = busybox.layer()?;
            let bb_diff = {
                let index: serde_json::Value =
                    serde_json::from_slice(&fs::read(busybox.oci_layout.join("index.json"))?)?;
                let blob = |d: &str| {
                    busybox
                        .oci_layout
                        .join("blobs/sha256")
                        .join(d.trim_start_matches("sha256:"))
                };
                let m: serde_json::Value = serde_json::from_slice(&fs::read(blob(
                    index["manifests"][0]["digest"].as_str().unwrap_or_default(),
                ))?)?;
                let c: serde_json::Value = serde_json::from_slice(&fs::read(blob(
                    m["config"]["digest"].as_str().unwrap_or_default(),
                ))?)?;
                c["rootfs"]["diff_ids"][0]
                    .as_str()
                    .ok_or_else(|| err("the busybox config has no diff id"))?
                    .to_string()
            };
            let blobs = [
                (file_digest(&minbase.gzip)?, minbase.gzip.clone()),
                (file_digest(&mid_gz)?, mid_gz.clone()),
                (bb_digest, bb_blob),
            ];
            let diff_ids = [file_digest(&minbase.tar)?, file_digest(&mid_tar)?, bb_diff];
            let config = serde_json::json!({
                "architecture": "amd64",
                "os": "linux",
                "config": {
                    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                    "Cmd": ["/bin/sh"],
                },
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                "history": [
                    {"created_by": "debootstrap --variant=minbase bookworm"},
                    {"created_by": "add /etc/berth-layer, delete /etc/motd"},
                    {"created_by": "busybox-static"},
                ],
            });
            let config_bytes = serde_json::to_vec(&config)?;
            let config_hex = format!("{:x}", Sha256::digest(&config_bytes));
            let name = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
            let manifest = serde_json::json!([{
                "Config": format!("blobs/sha256/{config_hex}"),
                "RepoTags": ["berth-test/debian:multi"],
                "Layers": blobs.iter().map(|(d, _)| name(d)).collect::<Vec<_>>(),
            }]);
            let mut builder = tar::Builder::new(fs::File::create(tmp.join("image.tar"))?);
            let mut put = |path: &str, data: &[u8]| {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                builder.append_data(&mut h, path, data)
            };
            put("manifest.json", &serde_json::to_vec(&manifest)?)?;
            put(&format!("blobs/sha256/{config_hex}"), &config_bytes)?;
            for (d, path) in &blobs {
                builder.append_path_with_name(path, name(d))?;
            }
            builder.into_inner()?.sync_all()?;
            let digests: Vec<&String> = blobs.iter().map(|(d, _)| d).collect();
            fs::write(tmp.join("layers.json"), serde_json::to_vec(&digests)?)?;
            for f in ["mid.tar", "mid.tar.gz"] {
                fs::remove_file(tmp.join(f))?;
            }
            Ok(())
        })?;
        fs::write(&stamp, b"")?;
    }
    Ok(DebianImage {
        archive,
        tag: "berth-test/debian:multi",
        layers: serde_json::from_slice(&fs::read(&layers_file)?)?,
    })
}
