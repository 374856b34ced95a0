//! Registry credentials in Docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), shared with the docker CLI: `berth login` there stores what
//! `docker login` would, and either CLI's login serves both. Each pull and push sends the
//! entry of the image's registry as `X-Registry-Auth`. Credential helpers (`credsStore`) are
//! not run; their entries are skipped.

use std::path::PathBuf;

use base64::Engine;
use serde_json::{Value, json};

use crate::error::{CliError, Result};

/// The key Docker uses for Docker Hub.
pub const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// Base64 of `{}`: no credentials.
const EMPTY_AUTH: &str = "e30=";

pub fn config_path() -> PathBuf {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".docker")
        });
    dir.join("config.json")
}

/// The registry an image reference names (`busybox` → Docker Hub, `host:5000/a` → `host:5000`).
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            if first == "docker.io" || first == "index.docker.io" {
                DOCKER_HUB.into()
            } else {
                first.to_string()
            }
        }
        _ => DOCKER_HUB.into(),
    }
}

/// The `config.json` key for a server as a user types it (`docker.io` → Docker Hub's).
pub fn server_key(server: Option<&str>) -> String {
    match server.map(|s| s.trim_end_matches('/')) {
        None | Some("") | Some("docker.io") | Some("index.docker.io") => DOCKER_HUB.into(),
        Some(s) if s.starts_with("https://index.docker.io") => DOCKER_HUB.into(),
        Some(s) => s
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .to_string(),
    }
}

fn read_config() -> Result<Value> {
    let path = config_path();
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| CliError::Message(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(CliError::Message(format!("{}: {e}", path.display()))),
    }
}

/// Writes the file whole (temporary file, renamed), readable by its owner only.
fn write_config(config: &Value) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = config_path();
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Message(format!("{}: {e}", dir.display())))?;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(config).map_err(|e| CliError::Message(e.to_string()))?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| CliError::Message(format!("{}: {e}", path.display())))
}

/// The stored user and password for `key`, if any.
pub fn lookup(key: &str) -> Option<(String, String)> {
    let config = read_config().ok()?;
    let auth = config["auths"][key]["auth"].as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

pub fn store(key: &str, user: &str, password: &str) -> Result<()> {
    let mut config = read_config()?;
    if !config.is_object() {
        config = json!({});
    }
    if !config["auths"].is_object() {
        config["auths"] = json!({});
    }
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    config["auths"][key] = json!({ "auth": auth });
    write_config(&config)
}

/// Removes `key`'s entry; whether there was one.
pub fn remove(key: &str) -> Result<bool> {
    let mut config = read_config()?;
    let removed = config["auths"]
        .as_object_mut()
        .is_some_and(|auths| auths.remove(key).is_some());
    if removed {
        write_config(&config)?;
    }
    Ok(removed)
}

/// The `X-Registry-Auth` header for an image's registry (`{}` when nothing is stored).
pub fn header_for(image: &str) -> String {
    let key = registry_of(image);
    match lookup(&key) {
        Some((username, password)) => base64::engine::general_purpose::URL_SAFE.encode(
            json!({"username": username, "password": password, "serveraddress": key}).to_string(),
        ),
        None => EMPTY_AUTH.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_name_their_registry() {
        assert_eq!(registry_of("busybox"), DOCKER_HUB);
        assert_eq!(registry_of("user/app:1"), DOCKER_HUB);
        assert_eq!(registry_of("docker.io/library/busybox"), DOCKER_HUB);
        assert_eq!(registry_of("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/x"), "localhost");
        assert_eq!(server_key(None), DOCKER_HUB);
        assert_eq!(
            server_key(Some("https://reg.example:5000/")),
            "reg.example:5000"
        );
    }
}
