//! Pulling images from registries (OCI distribution API): the client in [`client`], the pull
//! itself in [`pull`].

pub mod client;
pub mod download;
pub mod pull;
pub mod push;
pub mod tls;

use crate::images::Reference;
use client::RegistryOptions;

/// Where Docker Hub's API is (`docker.io` is its name in references).
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// The host serving `host`'s API (Docker Hub's is not `docker.io`).
pub fn api_host(host: &str) -> &str {
    if host == "docker.io" {
        DOCKER_HUB_API
    } else {
        host
    }
}

/// The registry host a `docker login` server address names (`https://index.docker.io/v1/`
/// → `docker.io`, `https://host:5000` → `host:5000`).
pub fn login_host(server: &str) -> String {
    let server = server.trim();
    let bare = server
        .split_once("://")
        .map_or(server, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or("");
    match bare {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        other => other.to_string(),
    }
}

/// One place to pull from.
pub struct Endpoint {
    pub host: String,
    pub mirror: bool,
}

/// The places to pull `host`'s images from, in order: for Docker Hub its mirrors, then Hub.
pub fn endpoints(host: &str, options: &RegistryOptions) -> Vec<Endpoint> {
    if host != "docker.io" {
        return vec![Endpoint {
            host: host.to_string(),
            mirror: false,
        }];
    }
    let mut all: Vec<Endpoint> = options
        .mirrors
        .iter()
        .map(|m| Endpoint {
            host: m.clone(),
            mirror: true,
        })
        .collect();
    all.push(Endpoint {
        host: api_host(host).into(),
        mirror: false,
    });
    all
}

/// The registry host and the repository path on it for a familiar reference
/// (`busybox` → `docker.io`, `library/busybox`; `127.0.0.1:5000/a/b` → that host, `a/b`).
pub fn locate(r: &Reference) -> (String, String) {
    let repo = &r.repository;
    if let Some((first, rest)) = repo.split_once('/') {
        if first.contains(['.', ':']) || first == "localhost" {
            return (first.to_string(), rest.to_string());
        }
        return ("docker.io".into(), repo.clone());
    }
    ("docker.io".into(), format!("library/{repo}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_locate_their_registry() {
        let l = |s: &str| locate(&Reference::parse(s).unwrap());
        assert_eq!(l("busybox"), ("docker.io".into(), "library/busybox".into()));
        assert_eq!(l("user/app:1"), ("docker.io".into(), "user/app".into()));
        assert_eq!(
            l("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000".into(), "a/b".into())
        );
        assert_eq!(l("localhost/x"), ("localhost".into(), "x".into()));
    }

    #[test]
    fn login_server_addresses() {
        assert_eq!(login_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(login_host(""), "docker.io");
        assert_eq!(login_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(
            login_host("https://reg.example:5000/v2/"),
            "reg.example:5000"
        );
    }

    #[test]
    fn docker_hub_is_pulled_through_its_mirrors_first() {
        let options = RegistryOptions {
            mirrors: vec!["http://127.0.0.1:5001".into()],
            ..Default::default()
        };
        let hosts = |h: &str| -> Vec<(String, bool)> {
            endpoints(h, &options)
                .into_iter()
                .map(|e| (e.host, e.mirror))
                .collect()
        };
        assert_eq!(
            hosts("docker.io"),
            vec![
                ("http://127.0.0.1:5001".to_string(), true),
                ("registry-1.docker.io".to_string(), false)
            ]
        );
        assert_eq!(hosts("quay.io"), vec![("quay.io".to_string(), false)]);
    }
}
