//! OCI hooks at each point, in order, in the right namespaces, with the state on stdin.

use std::fs;
use std::time::{Duration, Instant};

use berth_kernel_tests::harness::{Bundle, Runtime, unique};
use serde_json::json;

/// A hook that records its point, the state it got and its mount namespace under `dir`.
fn recorder(point: &str, dir: &str) -> serde_json::Value {
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("cat > {dir}/{point}.json; readlink /proc/self/ns/mnt > {dir}/{point}.mnt; echo {point} >> {dir}/order")],
        "env": ["PATH=/bin:/usr/bin"],
        "timeout": 10
    })
}

fn read_json(dir: &std::path::Path, point: &str) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join(format!("{point}.json"))).unwrap()).unwrap()
}

#[test]
fn every_hook_point_runs_in_order_and_place() {
    let rt = Runtime::new();
    let log = tempfile::tempdir().unwrap();
    let host = log.path().to_str().unwrap().to_string();
    let id = unique("hooks");
    let bundle = Bundle::sh("echo running > /hooklog/program; sleep 100").edit(|s| {
        s["mounts"].as_array_mut().unwrap().push(json!({"destination": "/hooklog", "type": "bind", "source": host, "options": ["rbind", "rw"]}));
        s["hooks"] = json!({
            "prestart": [recorder("prestart", &host)],
            "createRuntime": [recorder("createRuntime", &host)],
            "createContainer": [recorder("createContainer", &host)],
            "startContainer": [recorder("startContainer", "/hooklog")],
            "poststart": [recorder("poststart", &host)],
            "poststop": [recorder("poststop", &host)]
        });
    });
    rt.create(&id, &bundle);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let host_mnt = fs::read_link("/proc/self/ns/mnt")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let container_mnt = fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .unwrap()
        .to_string_lossy()
        .into_owned();

    let created = read_json(log.path(), "createRuntime");
    assert_eq!(created["id"], id.as_str());
    assert_eq!(created["status"], "creating");
    assert_eq!(created["pid"], pid);
    assert_eq!(read_json(log.path(), "prestart")["pid"], pid);
    let mnt = |p: &str| {
        fs::read_to_string(log.path().join(format!("{p}.mnt")))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(
        mnt("createRuntime"),
        host_mnt,
        "createRuntime runs in the runtime's namespace"
    );
    assert_eq!(
        mnt("createContainer"),
        container_mnt,
        "createContainer runs in the container's"
    );
    assert!(
        !log.path().join("startContainer.json").exists(),
        "startContainer waits for start"
    );

    rt.ok(&["start", &id]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.path().join("program").exists() {
        assert!(Instant::now() < deadline, "program did not run");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(mnt("startContainer"), container_mnt);
    assert_eq!(read_json(log.path(), "poststart")["status"], "running");

    rt.ok(&["delete", "--force", &id]);
    assert_eq!(read_json(log.path(), "poststop")["status"], "stopped");
    let order = fs::read_to_string(log.path().join("order")).unwrap();
    assert_eq!(
        order.lines().collect::<Vec<_>>(),
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ]
    );
}

#[test]
fn a_failing_create_hook_fails_create_and_leaves_nothing() {
    let rt = Runtime::new();
    let id = unique("hookfail");
    let bundle = Bundle::sh("true").edit(|s| {
        s["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo cannot set up the network >&2; exit 7"]}]});
    });
    let dir = rt.prepare(&id, &bundle);
    let err = rt.fails(&[
        "create".as_ref(),
        "--bundle".as_ref(),
        dir.as_os_str(),
        id.as_ref(),
    ]);
    assert!(
        err.contains("hooks.createRuntime[0]") && err.contains("cannot set up the network"),
        "{err}"
    );
    assert!(!rt.root().join(&id).exists());
    assert!(rt.leftover_cgroups().is_empty());
}

#[test]
fn a_failing_poststop_hook_is_only_a_warning() {
    let rt = Runtime::new();
    let id = unique("poststop");
    let bundle =
        Bundle::sh("true").edit(|s| s["hooks"] = json!({"poststop": [{"path": "/bin/false"}]}));
    let (code, _, err) = rt.run(&id, &bundle);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("hooks.poststop[0]"), "{err}");
    assert!(!rt.root().join(&id).exists());
}
