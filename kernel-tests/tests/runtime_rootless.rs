//! Rootless: berth-runtime run by an unprivileged user. A user made for the test (removed
//! again, with its subordinate id ranges) creates containers through a user namespace: mapping
//! only its own id, or a wider range through newuidmap/newgidmap; without a delegated cgroup a
//! container without limits runs, one with limits is refused.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use berth_kernel_tests::fixtures;
use berth_kernel_tests::harness::{runtime_binary, unique};
use serde_json::{Value, json};

/// An unprivileged user with subordinate ids, deleted (ranges too) on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    /// First subordinate uid and gid (65536 of each).
    sub_uid: u32,
    sub_gid: u32,
}

impl TestUser {
    fn new() -> TestUser {
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

    /// `berth-runtime args…` as this user, with `XDG_RUNTIME_DIR` set. Output goes through
    /// files: a created container's init holds the stdio it was given.
    fn runtime(&self, xdg: &Path, args: &[&str]) -> Output {
        let out = tempfile::tempfile().unwrap();
        let err = tempfile::tempfile().unwrap();
        let status = Command::new(runtime_binary())
            .args(args)
            .uid(self.uid)
            .gid(self.gid)
            .env("XDG_RUNTIME_DIR", xdg)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap())
            .status()
            .expect("run berth-runtime");
        let read = |mut f: fs::File| {
            use std::io::{Read, Seek};
            let mut v = Vec::new();
            f.rewind().and_then(|_| f.read_to_end(&mut v)).unwrap();
            v
        };
        Output {
            status,
            stdout: read(out),
            stderr: read(err),
        }
    }

    /// A directory this user owns.
    fn dir(&self) -> tempfile::TempDir {
        let d = tempfile::Builder::new()
            .prefix("berth-rootless-")
            .tempdir()
            .unwrap();
        std::os::unix::fs::chown(d.path(), Some(self.uid), Some(self.gid)).unwrap();
        d
    }

    /// A bundle (owned by the user) with the rootless default config running `script`.
    fn bundle(&self, script: &str, edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
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

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "berth-runtime failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_unprivileged_user_runs_containers() {
    let user = TestUser::new();
    let xdg = user.dir();

    // Only its own id, mapped to root: no helper needed; setgroups is denied.
    let bundle = user.bundle(
        "id -u; cat /proc/self/uid_map /proc/self/setgroups; hostname",
        |_| {},
    );
    let out = stdout(&user.runtime(
        xdg.path(),
        &[
            "run",
            "--bundle",
            bundle.path().to_str().unwrap(),
            &unique("rl"),
        ],
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", &user.uid.to_string(), "1"],
        "{out}"
    );
    assert_eq!(lines[2], "deny", "{out}");

    // A wider mapping through newuidmap/newgidmap; the process runs as container uid 1000,
    // which is subordinate uid +999 on the host. The state lives under $XDG_RUNTIME_DIR.
    let wide = |s: &mut Value| {
        s["linux"]["uidMappings"] = json!([
            {"containerID": 0, "hostID": user.uid, "size": 1},
            {"containerID": 1, "hostID": user.sub_uid, "size": 65536}]);
        s["linux"]["gidMappings"] = json!([
            {"containerID": 0, "hostID": user.gid, "size": 1},
            {"containerID": 1, "hostID": user.sub_gid, "size": 65536}]);
        s["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [1001]});
    };
    let id = unique("rlwide");
    let bundle = user.bundle("id; sleep 100", wide);
    stdout(&user.runtime(
        xdg.path(),
        &["create", "--bundle", bundle.path().to_str().unwrap(), &id],
    ));
    // Should an assertion fail below, the container goes anyway.
    struct ForceDelete<'a>(&'a TestUser, &'a Path, &'a str);
    impl Drop for ForceDelete<'_> {
        fn drop(&mut self) {
            self.0.runtime(self.1, &["delete", "--force", self.2]);
        }
    }
    let _cleanup = ForceDelete(&user, xdg.path(), &id);
    let record = xdg
        .path()
        .join("berth-runtime")
        .join(&id)
        .join("state.json");
    assert_eq!(
        fs::metadata(&record).unwrap().uid(),
        user.uid,
        "state under $XDG_RUNTIME_DIR"
    );
    stdout(&user.runtime(xdg.path(), &["start", &id]));
    let state: Value =
        serde_json::from_str(&stdout(&user.runtime(xdg.path(), &["state", &id]))).unwrap();
    assert_eq!(state["status"], "running");
    let pid = state["pid"].as_i64().unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let host_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap();
    assert_eq!(host_uid, (user.sub_uid + 999).to_string(), "{status}");
    let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert!(
        groups.contains(&(user.sub_gid + 1000).to_string()),
        "additional gids work with newgidmap: {groups}"
    );
    let ps = stdout(&user.runtime(xdg.path(), &["ps", "--format", "json", &id]));
    assert_eq!(
        ps.trim(),
        format!("[{pid}]"),
        "without a cgroup, ps lists the init"
    );
    stdout(&user.runtime(xdg.path(), &["kill", "--all", &id, "KILL"]));
    stdout(&user.runtime(xdg.path(), &["delete", "--force", &id]));
    assert!(!xdg.path().join("berth-runtime").join(&id).exists());

    // Limits need a cgroup this user may write: refused, nothing left behind.
    let id = unique("rllimits");
    let bundle = user.bundle("true", |s| {
        s["linux"]["resources"] = json!({"pids": {"limit": 10}});
    });
    let out = user.runtime(
        xdg.path(),
        &["run", "--bundle", bundle.path().to_str().unwrap(), &id],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("linux.resources") && err.contains("delegate"),
        "{err}"
    );
    assert!(!xdg.path().join("berth-runtime").join(&id).exists());
}
