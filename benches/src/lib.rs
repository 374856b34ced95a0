//! Shared pieces of berth's benchmarks: the bundles every runtime is measured on, and the plot.

pub mod plot;

use std::fs;
use std::io;
use std::path::Path;

use serde_json::json;

/// The release `berth-runtime` built beside the running benchmark (the same target directory).
pub fn runtime_binary() -> io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("berth-runtime"))
        .find(|p| p.exists())
        .ok_or_else(|| io::Error::other("berth-runtime is not built beside this benchmark: cargo build --release -p berth-runtime"))
}

/// The start-time bundle: `/bin/true` in the busybox rootfs with pid, mount, ipc, uts and
/// network namespaces and a cgroup with memory and pids limits: what an engine asks for. The
/// config is runc's own shape, so runc, crun and berth-runtime run the very same file.
pub fn write_start_bundle(dir: &Path, cgroups_path: &str) -> io::Result<()> {
    write_bundle(dir, cgroups_path, false)
}

/// The start bundle as Docker would run it: Docker's capabilities and its default seccomp
/// profile (`docker_profile`), which every Docker and containerd container gets.
pub fn write_bundle(dir: &Path, cgroups_path: &str, docker_profile: bool) -> io::Result<()> {
    let rootfs = &berth_kernel_tests::fixtures::busybox().rootfs;
    let mut spec = berth_runtime::spec_template::default_spec(false, 0, 0);
    // crun 1.8 refuses configs newer than runtime-spec 1.0.
    spec["ociVersion"] = "1.0.2".into();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = json!(["/bin/true"]);
    spec["root"]["path"] = json!(rootfs);
    spec["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}
    ]);
    spec["linux"]["cgroupsPath"] = json!(cgroups_path);
    spec["linux"]["resources"]["memory"] = json!({"limit": 268_435_456});
    spec["linux"]["resources"]["pids"] = json!({"limit": 128});
    if docker_profile {
        use berth_runtime::spec_template::DOCKER_DEFAULT_CAPS;
        let caps = DOCKER_DEFAULT_CAPS;
        spec["process"]["capabilities"] =
            json!({"bounding": caps, "effective": caps, "permitted": caps});
        spec["linux"]["seccomp"] =
            berth_daemon::seccomp_profile::default_for(&caps.map(String::from));
    }
    fs::create_dir_all(dir)?;
    fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&spec)?)
}
