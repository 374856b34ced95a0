//! An OCI bundle: config.json plus the root filesystem it names. Everything that can be checked
//! before a process exists is checked here, with the JSON path of the offending field.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Process, Spec};

use crate::error::{Context, Error, Result};
use crate::namespaces::{NamespaceKind, NamespacePlan};

pub struct Bundle {
    /// Absolute, canonical bundle directory.
    pub dir: PathBuf,
    pub spec: Spec,
    /// Absolute, canonical rootfs.
    pub rootfs: PathBuf,
}

impl Bundle {
    pub fn load(dir: &Path) -> Result<Bundle> {
        let dir = fs::canonicalize(dir).at("bundle", dir)?;
        let spec = load_spec(&dir.join("config.json"))?;
        let root = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| Error::config("config.json", "root.path", "is missing"))?;
        let rootfs_path = if root.is_absolute() {
            root
        } else {
            dir.join(root)
        };
        let rootfs = fs::canonicalize(&rootfs_path).map_err(|e| {
            Error::config(
                "config.json",
                "root.path",
                format!("{}: {e}", rootfs_path.display()),
            )
        })?;
        if !rootfs.is_dir() {
            return Err(Error::config(
                "config.json",
                "root.path",
                format!("{} is not a directory", rootfs.display()),
            ));
        }
        Ok(Bundle { dir, spec, rootfs })
    }
}

/// Parses a config.json; a parse error names the JSON path (`linux.namespaces[2].type`).
pub fn load_spec(path: &Path) -> Result<Spec> {
    let bytes = fs::read(path).at("read", path)?;
    parse_json(&bytes, &path.display().to_string())
}

pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], file: &str) -> Result<T> {
    // Plain serde first: tracking the path wraps every value (more work, and more code to
    // fault in at every start) and is needed only to name the field of an error.
    let plain = match T::deserialize(&mut serde_json::Deserializer::from_slice(bytes)) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let (field, message) = match serde_path_to_error::deserialize::<_, T>(de) {
        Err(e) => (e.path().to_string(), e.into_inner().to_string()),
        // The same bytes parse the same way; should they not, the plain error stands.
        Ok(_) => (".".to_string(), plain.to_string()),
    };
    let field = if field == "." {
        "(document)".to_string()
    } else {
        field
    };
    Err(Error::config(file, field, message))
}

/// Checks a process definition (the container's, or one given to `exec`).
pub(crate) fn validate_process(p: &Process, file: &str) -> Result<()> {
    if p.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::config(file, "process.args", "must name a program"));
    }
    if !p.cwd().is_absolute() {
        return Err(Error::config(
            file,
            "process.cwd",
            format!("{:?} is not absolute", p.cwd()),
        ));
    }
    for (i, e) in p.env().iter().flatten().enumerate() {
        if !e.contains('=') {
            return Err(Error::config(
                file,
                format!("process.env[{i}]"),
                format!("{e:?} is not NAME=value"),
            ));
        }
    }
    Ok(())
}

/// Checks a config the way `create` does, without creating anything (for tools and benches).
pub fn check(spec: &Spec) -> Result<()> {
    validate(spec, &NamespacePlan::from_spec(spec)?)
}

/// Checks what `create` relies on; `plan` is the namespace plan already built from `spec`.
pub(crate) fn validate(spec: &Spec, plan: &NamespacePlan) -> Result<()> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::config("config.json", "process", "is missing"))?;
    validate_process(process, "config.json")?;
    let linux = spec.linux().as_ref().ok_or_else(|| {
        Error::config(
            "config.json",
            "linux",
            "is missing (this is a Linux runtime)",
        )
    })?;

    let maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if plan.creates(NamespaceKind::User) {
        for (field, m) in [
            ("linux.uidMappings", linux.uid_mappings()),
            ("linux.gidMappings", linux.gid_mappings()),
        ] {
            if m.as_ref().is_none_or(|m| m.is_empty()) {
                return Err(Error::config(
                    "config.json",
                    field,
                    "a new user namespace needs id mappings",
                ));
            }
        }
    } else if maps {
        return Err(Error::config(
            "config.json",
            "linux.uidMappings",
            "id mappings need a new user namespace in linux.namespaces",
        ));
    }

    let has_name = spec.hostname().as_ref().is_some_and(|h| !h.is_empty())
        || spec.domainname().as_ref().is_some_and(|d| !d.is_empty());
    if has_name && !plan.has(NamespaceKind::Uts) {
        return Err(Error::config(
            "config.json",
            "hostname",
            "setting a hostname or domainname needs a uts namespace",
        ));
    }
    if linux.time_offsets().as_ref().is_some_and(|t| !t.is_empty())
        && !plan.creates(NamespaceKind::Time)
    {
        return Err(Error::config(
            "config.json",
            "linux.timeOffsets",
            "clock offsets need a new time namespace",
        ));
    }
    if let Some(sysctl) = linux.sysctl() {
        for key in sysctl.keys() {
            check_sysctl(key, plan)?;
        }
    }

    // The rootfs is set up in a mount namespace other than the host's: a new one, or one
    // joined by path (whose processes then see the container's mounts and root, as with
    // runc); without either it could only be a chroot in the host's, which root inside can
    // leave.
    if !plan.creates(NamespaceKind::Mount) && plan.joins(NamespaceKind::Mount).is_none() {
        return Err(Error::config(
            "config.json",
            "linux.namespaces",
            "a container needs a mount namespace of its own (type \"mount\", new or by path)",
        ));
    }
    refuse_unimplemented(linux, process)?;
    crate::net_devices::validate(linux, plan)?;
    crate::rootfs::validate(spec)?;
    if let Some(rules) = linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().as_ref())
    {
        crate::cgroups::DeviceRule::from_spec(rules)?;
    }
    Ok(())
}

/// Settings this build does not apply yet are refused: running without them would leave the
/// container less confined, or differently scheduled, than its config says.
fn refuse_unimplemented(linux: &oci_spec::runtime::Linux, process: &Process) -> Result<()> {
    let unsupported = |field: &str| {
        Err(Error::Unsupported(format!(
            "config.json: {field} is not implemented by this build of berth-runtime"
        )))
    };

    if linux.intel_rdt().is_some() {
        return unsupported("linux.intelRdt");
    }
    let labels = process
        .selinux_label()
        .as_ref()
        .is_some_and(|l| !l.is_empty())
        || linux.mount_label().as_ref().is_some_and(|l| !l.is_empty());
    if labels {
        if std::path::Path::new("/sys/fs/selinux/enforce").exists() {
            return unsupported("process.selinuxLabel / linux.mountLabel (SELinux)");
        }
        log::warn!(
            "SELinux labels in config.json are not applied: SELinux is not enabled on this host"
        );
    }
    Ok(())
}

/// A sysctl must live in a namespace the container has of its own, or it would change the host.
fn check_sysctl(key: &str, plan: &NamespacePlan) -> Result<()> {
    let field = format!("linux.sysctl[{key:?}]");
    if key.is_empty() || key.split(['.', '/']).any(|p| p.is_empty() || p == "..") {
        return Err(Error::config("config.json", field, "not a sysctl name"));
    }
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let needs = if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        NamespaceKind::Ipc
    } else if key.starts_with("net.") {
        NamespaceKind::Network
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        NamespaceKind::Uts
    } else {
        return Err(Error::config(
            "config.json",
            field,
            "is not namespaced: it would change the host",
        ));
    };
    if !plan.has(needs) {
        return Err(Error::config(
            "config.json",
            field,
            format!("needs the container's own {} namespace", needs.proc_name()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    const BASE: &str =
        r#""process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"rootfs"}"#;

    fn check(linux: &str) -> Result<()> {
        let s = spec(&format!("{{{BASE},{linux}}}"));
        let plan = NamespacePlan::from_spec(&s)?;
        validate(&s, &plan)
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e = parse_json::<Spec>(
            br#"{"linux":{"namespaces":[{"type":"pid"},{"type":"bogus"}]}}"#,
            "config.json",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("linux.namespaces[1].type"), "{e}");
        assert!(e.contains("bogus"), "{e}");
        let e = parse_json::<Spec>(b"{not json", "config.json")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config.json:"), "{e}");
    }

    #[test]
    fn accepts_a_plain_container() {
        check(r#""linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"uts"}]},"hostname":"x""#).unwrap();
    }

    #[test]
    fn hostname_needs_uts() {
        let e = check(r#""linux":{"namespaces":[{"type":"mount"}]},"hostname":"x""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("hostname") && e.contains("uts"), "{e}");
    }

    #[test]
    fn user_namespace_needs_maps_and_maps_need_it() {
        let e = check(r#""linux":{"namespaces":[{"type":"user"},{"type":"mount"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("linux.uidMappings"), "{e}");
        let e = check(r#""linux":{"namespaces":[{"type":"mount"}],"uidMappings":[{"containerID":0,"hostID":1000,"size":1}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("need a new user namespace"), "{e}");
    }

    #[test]
    fn host_sysctls_are_refused() {
        let e =
            check(r#""linux":{"namespaces":[{"type":"mount"}],"sysctl":{"vm.swappiness":"1"}}"#)
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("vm.swappiness") && e.contains("not namespaced"),
            "{e}"
        );
        let e = check(
            r#""linux":{"namespaces":[{"type":"mount"}],"sysctl":{"net.ipv4.ip_forward":"1"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("net namespace"), "{e}");
        check(r#""linux":{"namespaces":[{"type":"mount"},{"type":"network"}],"sysctl":{"net.ipv4.ip_forward":"1"}}"#)
            .unwrap();
    }

    #[test]
    fn mounts_need_a_mount_namespace() {
        let e = check(r#""linux":{"namespaces":[{"type":"pid"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mount namespace of its own"), "{e}");
    }

    #[test]
    fn relative_mount_destination_is_refused() {
        let e = check(r#""linux":{"namespaces":[{"type":"mount"}]},"mounts":[{"destination":"proc","type":"proc"}]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mounts[0].destination"), "{e}");
    }

    #[test]
    fn process_checks() {
        let e = check_process(r#"{"args":[],"cwd":"/"}"#);
        assert!(e.contains("process.args"), "{e}");
        let e = check_process(r#"{"args":["x"],"cwd":"rel"}"#);
        assert!(e.contains("process.cwd"), "{e}");
        let e = check_process(r#"{"args":["x"],"cwd":"/","env":["NOEQUALS"]}"#);
        assert!(e.contains("process.env[0]"), "{e}");
    }

    fn check_process(json: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
        v["user"] = serde_json::json!({"uid": 0, "gid": 0});
        let p: Process = serde_json::from_value(v).unwrap();
        validate_process(&p, "config.json").unwrap_err().to_string()
    }
}
