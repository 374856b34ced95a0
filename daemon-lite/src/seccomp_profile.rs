//! Docker's default seccomp profile (`profiles/seccomp-default.json`, moby's, embedded) and its
//! format (rules with `includes`/`excludes` on capabilities, architectures and kernel versions)
//! turned into the plain OCI `linux.seccomp` the runtime takes, as dockerd does it for a
//! container holding a given capability set.

use serde_json::{Value, json};

/// Docker's default profile, as shipped by moby.
pub const DEFAULT_PROFILE: &str = include_str!("../profiles/seccomp-default.json");

/// Docker's architecture name for this machine.
fn native_arch() -> &'static str {
    crate::platform::architecture()
}

fn kernel_at_least(min: &str) -> bool {
    let parse = |s: &str| -> Vec<u32> {
        s.split(['.', '-'])
            .take(2)
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    parse(&crate::platform::kernel_version()) >= parse(min)
}

/// The OCI profile Docker would give a container holding `caps` (names like `CAP_SYS_ADMIN`),
/// from a profile in Docker's format.
pub fn to_oci(docker: &Value, caps: &[String]) -> Value {
    let arch = native_arch();
    let has_cap = |list: &Value| {
        list.as_array()
            .into_iter()
            .flatten()
            .any(|c| caps.iter().any(|have| Some(have.as_str()) == c.as_str()))
    };
    let has_arch = |list: &Value| {
        list.as_array()
            .into_iter()
            .flatten()
            .any(|a| a.as_str() == Some(arch))
    };
    let mut syscalls = Vec::new();
    for rule in docker["syscalls"].as_array().into_iter().flatten() {
        let inc = &rule["includes"];
        let exc = &rule["excludes"];
        if inc["caps"].is_array() && !has_cap(&inc["caps"]) {
            continue;
        }
        if inc["arches"].is_array() && !has_arch(&inc["arches"]) {
            continue;
        }
        if let Some(min) = inc["minKernel"].as_str() {
            if !kernel_at_least(min) {
                continue;
            }
        }
        if exc["caps"].is_array() && has_cap(&exc["caps"]) {
            continue;
        }
        if exc["arches"].is_array() && has_arch(&exc["arches"]) {
            continue;
        }
        let mut r = json!({"names": rule["names"], "action": rule["action"]});
        if !rule["args"].is_null() {
            r["args"] = rule["args"].clone();
        }
        if !rule["errnoRet"].is_null() {
            r["errnoRet"] = rule["errnoRet"].clone();
        }
        syscalls.push(r);
    }
    let seccomp_arch = match arch {
        "amd64" => "SCMP_ARCH_X86_64",
        "arm64" => "SCMP_ARCH_AARCH64",
        _ => "SCMP_ARCH_NATIVE",
    };
    let mut architectures = Vec::new();
    for m in docker["archMap"].as_array().into_iter().flatten() {
        if m["architecture"] == seccomp_arch {
            architectures.push(m["architecture"].clone());
            architectures.extend(
                m["subArchitectures"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
    }
    // A plain OCI profile (no archMap) names its architectures itself.
    if architectures.is_empty() {
        architectures = docker["architectures"]
            .as_array()
            .cloned()
            .unwrap_or_default();
    }
    let mut out = json!({
        "defaultAction": docker["defaultAction"],
        "architectures": architectures,
        "syscalls": syscalls,
    });
    if !docker["defaultErrnoRet"].is_null() {
        out["defaultErrnoRet"] = docker["defaultErrnoRet"].clone();
    }
    out
}

/// Docker's default profile for a container holding `caps`.
pub fn default_for(caps: &[String]) -> Value {
    // The embedded profile is moby's file, checked by the test below.
    let docker: Value = serde_json::from_str(DEFAULT_PROFILE).unwrap_or(Value::Null);
    to_oci(&docker, caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(profile: &Value, name: &str) -> bool {
        profile["syscalls"].as_array().unwrap().iter().any(|r| {
            r["action"] == "SCMP_ACT_ALLOW"
                && r["args"].is_null()
                && r["names"].as_array().unwrap().iter().any(|n| n == name)
        })
    }

    #[test]
    fn capabilities_open_the_syscalls_docker_ties_to_them() {
        assert!(serde_json::from_str::<Value>(DEFAULT_PROFILE).is_ok());
        let plain = default_for(&["CAP_CHOWN".into()]);
        assert_eq!(plain["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(allowed(&plain, "read"));
        assert!(!allowed(&plain, "mount"));
        assert!(!allowed(&plain, "ptrace") || kernel_at_least("4.8"));
        let admin = default_for(&["CAP_SYS_ADMIN".into()]);
        assert!(allowed(&admin, "mount"));
        assert!(
            plain["architectures"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "SCMP_ARCH_X86_64")
                || native_arch() != "amd64"
        );
    }
}
