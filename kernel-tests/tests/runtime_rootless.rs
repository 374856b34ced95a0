//! Rootless: berth-runtime run by an unprivileged user. A user made for the test (removed
//! again, with its subordinate id ranges) creates containers through a user namespace: mapping
//! only its own id, or a wider range through newuidmap/newgidmap; without a delegated cgroup a
//! container without limits runs, one with limits is refused.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;

use berth_kernel_tests::harness::unique;
use berth_kernel_tests::test_user::TestUser;
use serde_json::{Value, json};

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
    let user = TestUser::create();
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
        user.map_subordinate_ids(s);
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
