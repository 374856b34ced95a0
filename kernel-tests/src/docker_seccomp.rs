//! Docker's seccomp profile format (with `includes`/`excludes` on capabilities, architectures
//! and kernel versions) turned into the plain OCI `linux.seccomp` a runtime takes, the way
//! dockerd does it for a container with a given capability set. (berthd will need the same;
//! the tests use it to run Docker's very profile.)

use serde_json::{Value, json};

/// Docker's architecture names for this machine.
fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn kernel_at_least(min: &str) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let parse = |s: &str| -> Vec<u32> {
        s.split(['.', '-'])
            .take(2)
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    parse(&release) >= parse(min)
}

/// The OCI profile Docker would give a container holding `caps` (names like "CAP_SYS_ADMIN").
pub fn to_oci(docker: &Value, caps: &[&str]) -> Value {
    let arch = native_arch();
    let has_cap = |list: &Value| {
        list.as_array()
            .into_iter()
            .flatten()
            .any(|c| caps.contains(&c.as_str().unwrap_or("")))
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
    let mut out = json!({"defaultAction": docker["defaultAction"], "architectures": architectures, "syscalls": syscalls});
    if !docker["defaultErrnoRet"].is_null() {
        out["defaultErrnoRet"] = docker["defaultErrnoRet"].clone();
    }
    out
}

/// Docker's default profile, from the project's shared reference copy.
pub fn default_profile() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/ref/docker-default-seccomp.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("Docker's profile is JSON")
}
