//! Managing running containers: pause/resume, update, events (stats and OOM), features.

use std::process::Stdio;
use std::thread::sleep;
use std::time::{Duration, Instant};

use berth_kernel_tests::harness::{Bundle, Runtime, unique};
use serde_json::{Value, json};

fn wait_status(rt: &Runtime, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.state(id)["status"] != want {
        assert!(Instant::now() < deadline, "{id} never became {want}");
        sleep(Duration::from_millis(10));
    }
}

fn started(rt: &Runtime, id: &str, bundle: &Bundle) {
    rt.create(id, bundle);
    rt.ok(&["start", id]);
    wait_status(rt, id, "running");
}

#[test]
fn pause_freezes_and_resume_thaws() {
    let rt = Runtime::new();
    let id = unique("pause");
    started(
        &rt,
        &id,
        &Bundle::sh("i=0; while true; do i=$((i+1)); echo $i > /dev/shm/n; sleep 0.01; done"),
    );
    let read = || {
        rt.ok(&["exec", &id, "cat", "/dev/shm/n"])
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    rt.ok(&["pause", &id]);
    assert_eq!(rt.state(&id)["status"], "paused");
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    // Read through the init's root from the host: exec into a frozen container is refused.
    let frozen = || std::fs::read_to_string(format!("/proc/{pid}/root/dev/shm/n")).unwrap();
    let before = frozen();
    sleep(Duration::from_millis(150));
    assert_eq!(frozen(), before, "no progress while paused");
    let err = rt.fails(&["exec", &id, "true"]);
    assert!(err.contains("paused"), "{err}");
    let err = rt.fails(&["pause", &id]);
    assert!(err.contains("paused"), "{err}");
    rt.ok(&["resume", &id]);
    assert_eq!(rt.state(&id)["status"], "running");
    let a = read();
    sleep(Duration::from_millis(100));
    assert!(read() > a, "counting again after resume");
    rt.ok(&["pause", &id]);
    // A paused container can still be killed and deleted.
    rt.ok(&["delete", "--force", &id]);
}

#[test]
fn update_with_flags_and_a_resources_document() {
    let rt = Runtime::new();
    let id = unique("update");
    started(&rt, &id, &Bundle::sh("sleep 100"));
    let read = |f: &str| rt.ok(&["exec", &id, "cat", f]).trim().to_string();
    rt.ok(&[
        "update",
        "--memory",
        "64m",
        "--memory-swap",
        "128m",
        "--pids-limit",
        "42",
        "--cpu-shares",
        "256",
        &id,
    ]);
    assert_eq!(
        read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        "67108864"
    );
    assert_eq!(
        read("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"),
        "134217728"
    );
    assert_eq!(read("/sys/fs/cgroup/pids/pids.max"), "42");
    assert_eq!(read("/sys/fs/cgroup/cpu/cpu.shares"), "256");

    // containerd's way: the document on stdin. Raising memory above memory+swap's old value
    // needs the writes in the other order; the runtime finds it.
    let mut child = rt
        .command(&["update", "--resources", "-", &id])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json!({"memory": {"limit": 268435456, "swap": 536870912}, "cpu": {"quota": 20000, "period": 100000}}).to_string().as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        "268435456"
    );
    assert_eq!(read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), "20000");
    assert_eq!(
        read("/sys/fs/cgroup/pids/pids.max"),
        "42",
        "untouched by the second update"
    );
    // The record follows.
    let state_file = rt.root().join(&id).join("state.json");
    let record: Value = serde_json::from_slice(&std::fs::read(state_file).unwrap()).unwrap();
    assert_eq!(
        record["spec"]["linux"]["resources"]["memory"]["limit"],
        268435456
    );
    let err = rt.fails(&["update", "--memory", "lots", &id]);
    assert!(err.contains("--memory"), "{err}");
}

#[test]
fn events_stats_and_oom() {
    let rt = Runtime::new();
    let id = unique("events");
    let bundle = Bundle::sh("sleep 0.5; dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 100")
        .edit(|s| {
            s["linux"]["resources"]["memory"] = json!({"limit": 33554432, "swap": 33554432});
            s["linux"]["resources"]["pids"] = json!({"limit": 20});
        });
    rt.create(&id, &bundle);
    let stats: Value = serde_json::from_str(rt.ok(&["events", "--stats", &id]).trim()).unwrap();
    assert_eq!(stats["type"], "stats");
    assert_eq!(stats["data"]["memory"]["usage"]["limit"], 33554432);
    assert_eq!(stats["data"]["pids"]["limit"], 20);
    assert!(stats["data"]["pids"]["current"].as_u64().unwrap() >= 1);
    assert!(stats["data"]["cpu"]["usage"]["total"].as_u64().is_some());

    let out = tempfile::NamedTempFile::new().unwrap();
    let mut watcher = rt
        .command(&["events", "--interval", "200ms", &id])
        .stdout(out.reopen().unwrap())
        .spawn()
        .unwrap();
    rt.ok(&["start", &id]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(out.path()).unwrap();
        if text.contains("\"oom\"") || Instant::now() > deadline {
            break text;
        }
        sleep(Duration::from_millis(50));
    };
    rt.ok(&["kill", &id, "KILL"]);
    assert!(
        watcher.wait().unwrap().success(),
        "events ends with the container"
    );
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "oom" && e["id"] == id.as_str()),
        "{text}"
    );
    assert!(
        events.iter().filter(|e| e["type"] == "stats").count() >= 2,
        "{text}"
    );
}

#[test]
fn features_describe_this_build() {
    let rt = Runtime::new();
    let f: Value = serde_json::from_str(&rt.ok(&["features"])).unwrap();
    assert_eq!(f["ociVersionMax"], berth_runtime::OCI_VERSION);
    assert_eq!(f["linux"]["seccomp"]["enabled"], true);
    assert!(f["hooks"].as_array().unwrap().len() == 6);
    let caps = f["linux"]["capabilities"].as_array().unwrap();
    assert!(caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
    assert!(
        f["mountOptions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "rro")
    );
    assert!(
        f["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "time")
    );
}
