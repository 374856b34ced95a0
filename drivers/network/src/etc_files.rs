//! The files a container's resolver reads: `/etc/hosts`, `/etc/hostname` and
//! `/etc/resolv.conf`, made as Docker makes them, for the engine to bind-mount into the
//! container.
//!
//! resolv.conf follows the host's unless DNS settings are given; nameservers on the host's
//! loopback (a local caching resolver such as systemd-resolved's 127.0.0.53) cannot be reached
//! from the container's own network namespace, so they are left out, and when nothing is left
//! Docker's public fallbacks are written (with a comment saying so).

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use crate::error::{Error, Result};

/// What goes into a container's name files.
#[derive(Clone, Debug, Default)]
pub struct ContainerNames {
    pub hostname: String,
    pub domainname: Option<String>,
    /// The container's addresses on its networks.
    pub addresses: Vec<IpAddr>,
    /// Network aliases of the container, written beside its hostname.
    pub aliases: Vec<String>,
    /// `--add-host name:ip` entries.
    pub extra_hosts: Vec<(String, IpAddr)>,
}

/// DNS settings given for a container (`--dns`, `--dns-search`, `--dns-option`).
#[derive(Clone, Debug, Default)]
pub struct DnsSettings {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// Docker's fallback when the host has no nameserver a container can reach.
const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} {name:?} is not a valid host name"
        )))
    }
}

/// `/etc/hostname`.
pub fn hostname(names: &ContainerNames) -> Result<String> {
    check_name("hostname", &names.hostname)?;
    Ok(format!("{}\n", names.hostname))
}

/// `/etc/hosts`: loopback names, the container's addresses with its names, extra hosts.
pub fn hosts(names: &ContainerNames) -> Result<String> {
    check_name("hostname", &names.hostname)?;
    let mut own = Vec::new();
    if let Some(domain) = names.domainname.as_deref().filter(|d| !d.is_empty()) {
        check_name("domainname", domain)?;
        own.push(format!("{}.{domain}", names.hostname));
    }
    own.push(names.hostname.clone());
    for alias in &names.aliases {
        check_name("alias", alias)?;
        if !own.contains(alias) {
            own.push(alias.clone());
        }
    }
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::\tip6-localnet\n\
         ff00::\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for (name, ip) in &names.extra_hosts {
        check_name("extra host", name)?;
        out.push_str(&format!("{ip}\t{name}\n"));
    }
    for ip in &names.addresses {
        out.push_str(&format!("{ip}\t{}\n", own.join(" ")));
    }
    Ok(out)
}

/// `/etc/resolv.conf` from the host's (`host_resolv_conf`, its text) and the settings given.
pub fn resolv_conf(host_resolv_conf: &str, settings: &DnsSettings) -> Result<String> {
    let mut nameservers: Vec<String> = Vec::new();
    let mut search: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    for line in host_resolv_conf.lines() {
        let line = line.trim();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
                    // The host's loopback is not the container's.
                    if !ip.is_loopback() {
                        nameservers.push(ip.to_string());
                    }
                }
            }
            Some("search") | Some("domain") => search = words.map(str::to_string).collect(),
            Some("options") => options = words.map(str::to_string).collect(),
            _ => {}
        }
    }
    if !settings.nameservers.is_empty() {
        nameservers = settings.nameservers.iter().map(IpAddr::to_string).collect();
    }
    if !settings.search.is_empty() {
        for s in &settings.search {
            if s != "." {
                check_name("dns search domain", s)?;
            }
        }
        search = settings
            .search
            .iter()
            .filter(|s| *s != ".")
            .cloned()
            .collect();
    }
    if !settings.options.is_empty() {
        if let Some(bad) = settings
            .options
            .iter()
            .find(|o| o.is_empty() || o.contains(char::is_whitespace))
        {
            return Err(Error::Invalid(format!(
                "dns option {bad:?} is empty or has spaces"
            )));
        }
        options = settings.options.clone();
    }
    let mut out = String::new();
    if nameservers.is_empty() {
        out.push_str(
            "# The host has no nameserver a container can reach (only loopback ones);\n\
             # these are Docker's defaults. Give --dns to choose.\n",
        );
        nameservers = FALLBACK_NAMESERVERS.iter().map(|s| s.to_string()).collect();
    }
    for ns in &nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    Ok(out)
}

/// Writes the three files into `dir` (each replaced atomically), for bind mounts.
pub fn write(
    dir: &Path,
    names: &ContainerNames,
    host_resolv_conf: &str,
    dns: &DnsSettings,
) -> Result<()> {
    let files = [
        ("hostname", hostname(names)?),
        ("hosts", hosts(names)?),
        ("resolv.conf", resolv_conf(host_resolv_conf, dns)?),
    ];
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    for (name, text) in files {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let written = fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| fs::rename(&tmp, &path));
        written.map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ContainerNames {
        ContainerNames {
            hostname: "web1".into(),
            domainname: Some("example.test".into()),
            addresses: vec!["172.18.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            aliases: vec!["web".into(), "web1".into()],
            extra_hosts: vec![("db.internal".into(), "10.1.2.3".parse().unwrap())],
        }
    }

    #[test]
    fn hosts_names_the_container_on_each_address() {
        let h = hosts(&names()).unwrap();
        assert!(h.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"));
        assert!(h.contains("10.1.2.3\tdb.internal\n"));
        assert!(
            h.contains("172.18.0.2\tweb1.example.test web1 web\n"),
            "{h}"
        );
        assert!(h.contains("fd00::2\tweb1.example.test web1 web\n"), "{h}");
        assert_eq!(hostname(&names()).unwrap(), "web1\n");
        for bad in ["", "-x", "a b", "a..b", "x/y"] {
            let n = ContainerNames {
                hostname: bad.into(),
                ..names()
            };
            assert!(hosts(&n).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resolv_conf_follows_the_host_without_its_loopback() {
        let host = "# managed\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver ::1\n\
                    search corp.test\noptions edns0 trust-ad\n";
        let r = resolv_conf(host, &DnsSettings::default()).unwrap();
        assert_eq!(
            r,
            "nameserver 192.0.2.53\nsearch corp.test\noptions edns0 trust-ad\n"
        );
        // Only a local resolver on the host: Docker's fallbacks, said so.
        let r = resolv_conf("nameserver 127.0.0.53\n", &DnsSettings::default()).unwrap();
        assert!(
            r.starts_with('#') && r.contains("nameserver 8.8.8.8\nnameserver 8.8.4.4\n"),
            "{r}"
        );
        // Settings replace what they name.
        let given = DnsSettings {
            nameservers: vec!["198.51.100.1".parse().unwrap()],
            search: vec![".".into()],
            options: vec!["ndots:2".into()],
        };
        let r = resolv_conf(host, &given).unwrap();
        assert_eq!(r, "nameserver 198.51.100.1\noptions ndots:2\n");
        let bad = DnsSettings {
            options: vec!["a b".into()],
            ..Default::default()
        };
        assert!(resolv_conf(host, &bad).is_err());
    }

    #[test]
    fn the_files_are_written_for_bind_mounts() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &names(),
            "nameserver 192.0.2.1\n",
            &DnsSettings::default(),
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("hostname")).unwrap(),
            "web1\n"
        );
        assert!(
            fs::read_to_string(dir.path().join("hosts"))
                .unwrap()
                .contains("web1")
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("resolv.conf")).unwrap(),
            "nameserver 192.0.2.1\n"
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            3,
            "no temporary files left"
        );
    }
}
