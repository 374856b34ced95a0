//! Pulling images from registries (OCI distribution API): the client in [`client`], the pull
//! itself in [`pull`].

pub mod client;
pub mod download;
pub mod pull;
pub mod push;

use crate::images::Reference;

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
}
