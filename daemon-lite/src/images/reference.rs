//! Image references as Docker reads them, kept in the short ("familiar") form Docker shows:
//! `busybox` → `busybox:latest`, `docker.io/library/busybox` → `busybox:latest`,
//! `127.0.0.1:5000/a/b:t` stays, `name@sha256:…` keeps its digest.

/// A parsed reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The repository, familiar form (`busybox`, `user/app`, `127.0.0.1:5000/a/b`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `s`; a reference with neither tag nor digest gets `latest`.
    pub fn parse(s: &str) -> Result<Reference, String> {
        let invalid = || format!("invalid reference format: {s:?}");
        if s.is_empty() || s.len() > 4096 || s.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid());
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let hex = d.strip_prefix("sha256:").ok_or_else(invalid)?;
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(invalid());
                }
                (r, Some(d.to_ascii_lowercase()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that comes after the last '/' (a registry port is not).
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(invalid());
            }
        }
        let repository = familiar(name).ok_or_else(invalid)?;
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            repository,
            tag,
            digest,
        })
    }

    /// `repository:tag`, what `RepoTags` lists (none for a digest-only reference).
    pub fn tagged(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|t| format!("{}:{t}", self.repository))
    }
}

/// The familiar form of a repository name, or `None` if it is not a valid name.
fn familiar(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = name.split('/').collect();
    let has_registry =
        parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost");
    let first_path = usize::from(has_registry);
    for p in &parts[first_path..] {
        let ok = !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            && p.starts_with(|c: char| c.is_ascii_alphanumeric())
            && p.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            return None;
        }
    }
    if has_registry {
        let registry = parts[0];
        let well_formed = registry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            && registry.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '[')
            && !registry.contains("..");
        if !well_formed {
            return None;
        }
        if registry == "docker.io" || registry == "index.docker.io" {
            parts.remove(0);
            if parts.len() == 2 && parts[0] == "library" {
                parts.remove(0);
            }
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged(s: &str) -> String {
        Reference::parse(s).unwrap().tagged().unwrap()
    }

    #[test]
    fn docker_shortens_as_it_shows() {
        assert_eq!(tagged("busybox"), "busybox:latest");
        assert_eq!(tagged("docker.io/library/busybox:1.36"), "busybox:1.36");
        assert_eq!(tagged("docker.io/user/app"), "user/app:latest");
        assert_eq!(tagged("127.0.0.1:5000/a/b:t"), "127.0.0.1:5000/a/b:t");
        assert_eq!(tagged("localhost/x"), "localhost/x:latest");
        let d = format!("busybox@sha256:{}", "a".repeat(64));
        let r = Reference::parse(&d).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.unwrap(), format!("sha256:{}", "a".repeat(64)));
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "",
            "Busybox",
            "a b",
            "busybox:",
            "busybox:-x",
            "a//b",
            "busybox@sha256:12",
            "../x",
            "x/",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?}");
        }
    }
}
