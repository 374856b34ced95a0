//! The OCI lifecycle through the CLI, as containerd and podman drive it: create (init waits),
//! state, start, kill, delete, run, exec, ps, list, pid files, logs.

use std::fs;
use std::thread::sleep;
use std::time::{Duration, Instant};

use berth_kernel_tests::harness::{Bundle, Runtime, unique};

fn wait_for_status(rt: &Runtime, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = rt.state(id)["status"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} stayed {status}, wanted {want}"
        );
        sleep(Duration::from_millis(10));
    }
}

#[test]
fn create_waits_and_start_runs_the_program() {
    let rt = Runtime::new();
    let id = unique("life");
    let out_dir = tempfile::tempdir().unwrap();
    let bundle = Bundle::sh("echo started > /out/marker; sleep 100").edit(|s| {
        s["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/out", "type": "bind", "source": out_dir.path(), "options": ["rbind", "rw"]
        }));
    });
    let pid_file = out_dir.path().join("pid");
    let dir = rt.prepare(&id, &bundle);
    rt.ok(&[
        "create".as_ref(),
        id.as_ref(),
        "--bundle".as_ref(),
        dir.as_os_str(),
        "--pid-file".as_ref(),
        pid_file.as_os_str(),
    ]);

    let state = rt.state(&id);
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["ociVersion"], "1.2.1");
    let pid = state["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(fs::read_to_string(&pid_file).unwrap(), pid.to_string());
    assert_eq!(state["bundle"], dir.to_str().unwrap());
    // Created means the user program has not run yet.
    sleep(Duration::from_millis(50));
    assert!(
        !out_dir.path().join("marker").exists(),
        "the program ran before start"
    );

    rt.ok(&["start", &id]);
    wait_for_status(&rt, &id, "running");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !out_dir.path().join("marker").exists() {
        assert!(Instant::now() < deadline, "program did not run after start");
        sleep(Duration::from_millis(10));
    }
    let err = rt.fails(&["start", &id]);
    assert!(err.contains("running"), "{err}");

    let err = rt.fails(&["delete", &id]);
    assert!(err.contains("running"), "{err}");

    rt.ok(&["kill", &id, "KILL"]);
    wait_for_status(&rt, &id, "stopped");
    assert_eq!(rt.state(&id)["pid"], 0);
    let err = rt.fails(&["kill", &id, "TERM"]);
    assert!(err.contains("stopped"), "{err}");
    rt.ok(&["delete", &id]);
    assert!(!rt.root().join(&id).exists(), "state directory left behind");
    assert!(
        rt.leftover_cgroups().is_empty(),
        "cgroups left: {:?}",
        rt.leftover_cgroups()
    );
    let err = rt.fails(&["state", &id]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn run_returns_the_exit_code_and_cleans_up() {
    let rt = Runtime::new();
    let id = unique("exit");
    let (code, out, err) = rt.run(&id, &Bundle::sh("echo out; echo err >&2; exit 42"));
    assert_eq!(code, 42, "stderr: {err}");
    assert_eq!(out, "out\n");
    assert!(err.contains("err"), "{err}");
    assert!(!rt.root().join(&id).exists());
    assert!(rt.leftover_cgroups().is_empty());
}

#[test]
fn run_reports_death_by_signal_as_128_plus_signal() {
    // Without a pid namespace the shell is not an init, so its own signal kills it.
    let rt = Runtime::new();
    let bundle = Bundle::sh("kill -USR1 $$").edit(|s| {
        s["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "pid");
    });
    let (code, _, err) = rt.run(&unique("sig"), &bundle);
    assert_eq!(code, 128 + libc::SIGUSR1, "{err}");
}

#[test]
fn foreground_run_forwards_signals() {
    let rt = Runtime::new();
    let id = unique("fwd");
    let bundle = Bundle::sh(
        "trap 'echo got TERM; exit 42' TERM; echo ready; while true; do sleep 0.05; done",
    );
    let dir = rt.prepare(&id, &bundle);
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = rt
        .command(&[
            "run".as_ref(),
            "--bundle".as_ref(),
            dir.as_os_str(),
            id.as_ref(),
        ])
        .stdout(out.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(out.path()).unwrap().contains("ready") {
        assert!(Instant::now() < deadline, "container did not start");
        sleep(Duration::from_millis(10));
    }
    // SAFETY: kill with integer arguments, to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42));
    assert!(fs::read_to_string(out.path()).unwrap().contains("got TERM"));
}

#[test]
fn run_detach_keeps_running_and_kill_all_stops_everything() {
    let rt = Runtime::new();
    let id = unique("detach");
    let bundle = Bundle::sh("sleep 100 & sleep 100 & wait");
    let dir = rt.prepare(&id, &bundle);
    let out = rt.output(&[
        "run".as_ref(),
        "-d".as_ref(),
        "-b".as_ref(),
        dir.as_os_str(),
        id.as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_status(&rt, &id, "running");
    let deadline = Instant::now() + Duration::from_secs(5);
    let pids: Vec<i64> = loop {
        let pids: Vec<i64> =
            serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
        if pids.len() >= 3 || Instant::now() > deadline {
            break pids;
        }
        sleep(Duration::from_millis(10));
    };
    assert_eq!(pids.len(), 3, "sh and two sleeps: {pids:?}");
    let table = rt.ok(&["ps", &id]);
    assert!(table.lines().next().unwrap().contains("PID"), "{table}");
    assert_eq!(
        table
            .lines()
            .filter(|l| l.trim_end().ends_with("sleep 100"))
            .count(),
        2,
        "{table}"
    );

    rt.ok(&["kill", "--all", &id, "SIGKILL"]);
    wait_for_status(&rt, &id, "stopped");
    rt.ok(&["delete", &id]);
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie_or_gone(pid));
    }
}

fn is_zombie_or_gone(pid: i64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[test]
fn delete_force_kills_a_running_container() {
    let rt = Runtime::new();
    let id = unique("force");
    rt.create(&id, &Bundle::sh("sleep 100"));
    rt.ok(&["start", &id]);
    wait_for_status(&rt, &id, "running");
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    rt.ok(&["delete", "--force", &id]);
    assert!(is_zombie_or_gone(pid));
    assert!(rt.leftover_cgroups().is_empty());
    // Forcing the delete of a container that is gone is not an error (runc agrees).
    rt.ok(&["delete", "--force", &id]);
    let err = rt.fails(&["delete", &id]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn delete_force_after_a_killed_create_removes_its_cgroup_and_directory() {
    use std::os::unix::process::CommandExt;
    let rt = Runtime::new();
    let id = unique("killed");
    let signals = tempfile::tempdir().unwrap();
    let hook_ran = signals.path().join("hook-ran");
    // The prestart hook runs once the cgroup is made and before any record is written: the
    // create is killed while it waits, as a crash or an OOM kill would.
    let bundle = Bundle::sh("true").edit(|s| {
        s["hooks"] = serde_json::json!({"prestart": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("touch {}; sleep 30", hook_ran.display())],
            "env": ["PATH=/bin:/usr/bin"]
        }]});
    });
    let dir = rt.prepare(&id, &bundle);
    let mut create = rt
        .command(&[
            "create".as_ref(),
            "--bundle".as_ref(),
            dir.as_os_str(),
            id.as_ref(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !hook_ran.exists() {
        assert!(Instant::now() < deadline, "the prestart hook did not run");
        sleep(Duration::from_millis(10));
    }
    let state_dir = rt.root().join(&id);
    assert!(!rt.leftover_cgroups().is_empty(), "the cgroup is made");
    assert!(!state_dir.join("state.json").exists(), "no record yet");
    // What delete --force has to go by: the plan, in the creating marker.
    let plan = fs::read_to_string(state_dir.join("creating")).unwrap();
    assert!(plan.contains(&format!("/{id}")), "{plan}");
    // SAFETY: kill(2) of the process group this test started (the runtime and its hook).
    unsafe { libc::kill(-(create.id() as i32), libc::SIGKILL) };
    let _ = create.wait();

    let err = rt.fails(&["delete", &id]);
    assert!(err.contains("does not exist"), "{err}");
    rt.ok(&["delete", "--force", &id]);
    assert!(
        rt.leftover_cgroups().is_empty(),
        "cgroups left: {:?}",
        rt.leftover_cgroups()
    );
    assert!(!state_dir.exists(), "{} is left", state_dir.display());
}

#[test]
fn delete_of_a_created_container_needs_no_force() {
    let rt = Runtime::new();
    let id = unique("created");
    rt.create(&id, &Bundle::sh("true"));
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    rt.ok(&["delete", &id]);
    assert!(is_zombie_or_gone(pid));
    assert!(rt.leftover_cgroups().is_empty());
}

#[test]
fn ids_are_unique_and_checked() {
    let rt = Runtime::new();
    let id = unique("dup");
    let bundle = Bundle::sh("true");
    rt.create(&id, &bundle);
    let dir = rt.prepare(&id, &bundle);
    let err = rt.fails(&[
        "create".as_ref(),
        "--bundle".as_ref(),
        dir.as_os_str(),
        id.as_ref(),
    ]);
    assert!(err.contains("already exists"), "{err}");
    let err = rt.fails(&[
        "create".as_ref(),
        "--bundle".as_ref(),
        dir.as_os_str(),
        "../escape".as_ref(),
    ]);
    assert!(err.contains("invalid container id"), "{err}");
}

#[test]
fn exec_runs_in_the_containers_namespaces_and_cgroup() {
    let rt = Runtime::new();
    let id = unique("exec");
    rt.create(
        &id,
        &Bundle::sh("sleep 100").edit(|s| s["hostname"] = "exec-host".into()),
    );
    rt.ok(&["start", &id]);
    wait_for_status(&rt, &id, "running");
    let out = rt.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "hostname; echo $$; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "exec-host");
    assert!(
        lines[1].parse::<u32>().unwrap() > 1,
        "pid in the container's pid namespace: {out}"
    );
    // busybox sh execs a lone command: the init is sleep itself.
    assert_eq!(
        lines[2].trim(),
        "sleep 100",
        "sees the container's init: {out}"
    );
    // In the init's cgroup in every hierarchy (it moved itself into the v1 ones and was born
    // in the cgroup2 one).
    let own = rt.ok(&["exec", &id, "cat", "/proc/self/cgroup"]);
    let init = rt.ok(&["exec", &id, "cat", "/proc/1/cgroup"]);
    assert_eq!(own, init, "the exec'd process is beside the init");
    assert!(
        own.lines().count() > 1,
        "v1 hierarchies on this host: {own}"
    );

    // Flags before the id (after it come the program's arguments), env and cwd and user
    // changes, exit codes.
    let out = rt.output(&[
        "exec",
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        "-u",
        "1000:1000",
        &id,
        "sh",
        "-c",
        "echo $FOO $(pwd) $(id -u):$(id -g); exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bar /tmp 1000:1000\n");

    // A process.json, as containerd passes it.
    let proc_file = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        proc_file.path(),
        r#"{"args":["sh","-c","echo from process.json $A"],"env":["A=1","PATH=/bin"],"cwd":"/","user":{"uid":0,"gid":0}}"#,
    )
    .unwrap();
    let out = rt.ok(&[
        "exec".as_ref(),
        "--process".as_ref(),
        proc_file.path().as_os_str(),
        id.as_ref(),
    ]);
    assert_eq!(out, "from process.json 1\n");

    // Detached exec with a pid file.
    let pid_file = tempfile::NamedTempFile::new().unwrap();
    rt.ok(&[
        "exec".as_ref(),
        "-d".as_ref(),
        "--pid-file".as_ref(),
        pid_file.path().as_os_str(),
        id.as_ref(),
        "sleep".as_ref(),
        "50".as_ref(),
    ]);
    let pid: i32 = fs::read_to_string(pid_file.path())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pids: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "-f", "json", &id])).unwrap();
    assert!(pids.contains(&pid), "{pid} not in {pids:?}");
    let host_view = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let memory = host_view.lines().find(|l| l.contains(":memory:")).unwrap();
    assert!(
        memory.ends_with(&format!("/{}/{id}", rt.cgroup_parent)),
        "exec joined the cgroup: {host_view}"
    );

    let err = rt.fails(&["exec", &id, "no-such-program"]);
    assert!(err.contains("executable file not found"), "{err}");
}

#[test]
fn exec_into_a_stopped_container_is_refused() {
    let rt = Runtime::new();
    let id = unique("execstop");
    rt.create(&id, &Bundle::sh("true"));
    rt.ok(&["start", &id]);
    wait_for_status(&rt, &id, "stopped");
    let err = rt.fails(&["exec", &id, "true"]);
    assert!(err.contains("stopped"), "{err}");
}

#[test]
fn list_shows_containers() {
    let rt = Runtime::new();
    let a = unique("lista");
    let b = unique("listb");
    rt.create(&a, &Bundle::sh("true"));
    rt.create(&b, &Bundle::sh("true"));
    let table = rt.ok(&["list"]);
    let header = table.lines().next().unwrap();
    for col in ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&a) && l.contains("created") && l.contains("root")),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&rt.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    let quiet = rt.ok(&["list", "-q"]);
    assert_eq!(quiet.lines().collect::<Vec<_>>(), {
        let mut v = vec![a.as_str(), b.as_str()];
        v.sort();
        v
    });
}

#[test]
fn annotations_are_carried_into_state() {
    let rt = Runtime::new();
    let id = unique("annot");
    rt.create(
        &id,
        &Bundle::sh("true")
            .edit(|s| s["annotations"] = serde_json::json!({"org.example/key": "value"})),
    );
    assert_eq!(rt.state(&id)["annotations"]["org.example/key"], "value");
}

#[test]
fn errors_go_to_the_json_log_as_containerd_reads_it() {
    let rt = Runtime::new();
    let log = tempfile::NamedTempFile::new().unwrap();
    let out = rt.output(&[
        "--log".as_ref(),
        log.path().as_os_str(),
        "--log-format".as_ref(),
        "json".as_ref(),
        "state".as_ref(),
        "nope".as_ref(),
    ]);
    assert!(!out.status.success());
    let text = fs::read_to_string(log.path()).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert!(
        last["msg"].as_str().unwrap().contains("does not exist"),
        "{last}"
    );
    assert!(last["time"].is_string());
}

#[test]
fn debug_logs_each_step_and_only_with_debug() {
    let rt = Runtime::new();
    let log_dir = tempfile::tempdir().unwrap();
    let bundle = Bundle::sh("sleep 100");
    let steps = |debug: bool| {
        let id = unique("debuglog");
        let log = log_dir.path().join(&id);
        let dir = rt.prepare(&id, &bundle);
        let mut global: Vec<&std::ffi::OsStr> = vec![
            "--log".as_ref(),
            log.as_os_str(),
            "--log-format".as_ref(),
            "json".as_ref(),
        ];
        if debug {
            global.push("--debug".as_ref());
        }
        let with = |args: &[&std::ffi::OsStr]| {
            let mut all = global.clone();
            all.extend_from_slice(args);
            rt.ok(&all)
        };
        with(&[
            "create".as_ref(),
            id.as_ref(),
            "--bundle".as_ref(),
            dir.as_os_str(),
        ]);
        with(&["start".as_ref(), id.as_ref()]);
        with(&["kill".as_ref(), id.as_ref(), "KILL".as_ref()]);
        wait_for_status(&rt, &id, "stopped");
        with(&["delete".as_ref(), id.as_ref()]);
        let text = fs::read_to_string(&log).unwrap_or_default();
        let entries: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (id, entries)
    };
    let (id, entries) = steps(true);
    let debug: Vec<&str> = entries
        .iter()
        .filter(|e| e["level"] == "debug")
        .map(|e| e["msg"].as_str().unwrap())
        .collect();
    for step in ["created, init pid", "started", "signal 9", "deleted"] {
        assert!(
            debug.iter().any(|m| m.contains(&id) && m.contains(step)),
            "no debug entry for {step:?}: {debug:#?}"
        );
    }
    assert!(debug.iter().any(|m| m.contains("pivot_root")), "{debug:#?}");
    let (_, entries) = steps(false);
    assert!(
        entries.iter().all(|e| e["level"] != "debug"),
        "debug entries without --debug: {entries:#?}"
    );
}

#[test]
fn kill_accepts_names_and_numbers() {
    let rt = Runtime::new();
    // The shell is pid 1 of its namespace: only signals it handles (and SIGKILL) reach it.
    let bundle = Bundle::sh("trap 'exit 0' TERM INT USR1; sleep 100 & wait");
    for (n, sig) in ["TERM", "SIGINT", "9", "sigusr1"].into_iter().enumerate() {
        let id = unique(&format!("kill{n}"));
        rt.create(&id, &bundle);
        rt.ok(&["start", &id]);
        wait_for_status(&rt, &id, "running");
        rt.ok(&["kill", &id, sig]);
        wait_for_status(&rt, &id, "stopped");
    }
    let id = unique("killbad");
    rt.create(&id, &bundle);
    let err = rt.fails(&["kill", &id, "SIGNOPE"]);
    assert!(err.contains("unknown signal"), "{err}");
}

#[test]
fn spec_writes_a_config_that_runs() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    rt.ok(&["spec".as_ref(), "--bundle".as_ref(), dir.path().as_os_str()]);
    let err = rt.fails(&["spec".as_ref(), "--bundle".as_ref(), dir.path().as_os_str()]);
    assert!(err.contains("exists"), "{err}");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"], serde_json::json!(["sh"]));
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["true"]);
    spec["root"]["path"] = serde_json::json!(berth_kernel_tests::fixtures::busybox().rootfs);
    let bundle = Bundle::busybox(&["true"]).edit(|s| *s = spec);
    rt.run_ok(&unique("spec"), &bundle);
    let rootless = tempfile::tempdir().unwrap();
    rt.ok(&[
        "spec".as_ref(),
        "--rootless".as_ref(),
        "--bundle".as_ref(),
        rootless.path().as_os_str(),
    ]);
    let spec: serde_json::Value =
        serde_json::from_slice(&fs::read(rootless.path().join("config.json")).unwrap()).unwrap();
    assert!(
        spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "user")
    );
}
