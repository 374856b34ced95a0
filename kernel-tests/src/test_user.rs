//! An unprivileged user made for a test or bench, with subordinate id ranges; removed (ranges
//! too) when dropped.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::fixtures;
use crate::harness::{output_through_files, runtime_binary};

/// An unprivileged user with subordinate ids, deleted (ranges too) on drop.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// First subordinate uid and gid (65536 of each).
    pub sub_uid: u32,
    pub sub_gid: u32,
}

impl TestUser {
    pub fn create() -> TestUser {
        let name = format!("berthrl{}", std::process::id());
        let ok = |cmd: &mut Command| {
            let out = cmd.output().expect("run user tool");
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        ok(Command::new("useradd").args([
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            &name,
        ]));
        let mut user = TestUser {
            uid: ok(Command::new("id").args(["-u", &name])).parse().unwrap(),
            gid: ok(Command::new("id").args(["-g", &name])).parse().unwrap(),
            name,
            sub_uid: 0,
            sub_gid: 0,
        };
        // useradd gives ranges where login.defs says so; make sure there is one either way.
        if sub_range("/etc/subuid", &user.name).is_none() {
            ok(Command::new("usermod").args([
                "--add-subuids",
                "700000-765535",
                "--add-subgids",
                "700000-765535",
                &user.name,
            ]));
        }
        user.sub_uid = sub_range("/etc/subuid", &user.name).expect("subuid range");
        user.sub_gid = sub_range("/etc/subgid", &user.name).expect("subgid range");
        user
    }

    /// `berth-runtime args…` as this user, with `XDG_RUNTIME_DIR` set.
    pub fn runtime(&self, xdg: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new(runtime_binary());
        cmd.args(args)
            .uid(self.uid)
            .gid(self.gid)
            .env("XDG_RUNTIME_DIR", xdg)
            .current_dir("/");
        output_through_files(cmd)
    }

    /// Maps container root to this user and container ids 1..65536 to its subordinate ranges
    /// (a mapping only newuidmap/newgidmap may write).
    pub fn map_subordinate_ids(&self, spec: &mut Value) {
        spec["linux"]["uidMappings"] = json!([
            {"containerID": 0, "hostID": self.uid, "size": 1},
            {"containerID": 1, "hostID": self.sub_uid, "size": 65536}]);
        spec["linux"]["gidMappings"] = json!([
            {"containerID": 0, "hostID": self.gid, "size": 1},
            {"containerID": 1, "hostID": self.sub_gid, "size": 65536}]);
    }

    /// A directory this user owns.
    pub fn dir(&self) -> tempfile::TempDir {
        let d = tempfile::Builder::new()
            .prefix("berth-rootless-")
            .tempdir()
            .unwrap();
        std::os::unix::fs::chown(d.path(), Some(self.uid), Some(self.gid)).unwrap();
        d
    }

    /// A bundle (owned by the user) with the rootless default config running `script`.
    pub fn bundle(&self, script: &str, edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
        let dir = self.dir();
        let mut spec = berth_runtime::spec_template::default_spec(true, self.uid, self.gid);
        spec["process"]["terminal"] = json!(false);
        spec["process"]["args"] = json!(["sh", "-c", script]);
        spec["root"]["path"] = json!(fixtures::busybox().rootfs);
        edit(&mut spec);
        fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .unwrap();
        fs::set_permissions(
            dir.path().join("config.json"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        dir
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
        // Older userdel leaves the subordinate ranges behind.
        for file in ["/etc/subuid", "/etc/subgid"] {
            if let Ok(text) = fs::read_to_string(file) {
                let prefix = format!("{}:", self.name);
                let kept: String = text
                    .lines()
                    .filter(|l| !l.starts_with(&prefix))
                    .map(|l| format!("{l}\n"))
                    .collect();
                if kept != text {
                    let _ = fs::write(file, kept);
                }
            }
        }
    }
}

fn sub_range(file: &str, name: &str) -> Option<u32> {
    fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then(|| f.next()?.parse().ok())?
    })
}
