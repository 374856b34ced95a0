//! berthd driven by berth's own CLI (`berth`), which talks HTTP only.

use berth_kernel_tests::test_daemon::TestDaemon;

fn ok(d: &TestDaemon, args: &[&str]) -> String {
    let r = d.berth(args);
    assert_eq!(
        r.code,
        0,
        "berth {args:?}: {r:?}\n--- berthd log ---\n{}",
        d.log()
    );
    r.stdout
}

#[test]
fn the_berth_cli_runs_lists_logs_execs_and_removes() {
    let d = TestDaemon::start();
    let archive = berth_kernel_tests::fixtures::busybox()
        .docker_archive
        .display()
        .to_string();
    assert!(ok(&d, &["load", "-i", &archive]).contains("busybox:latest"));
    let r = d.berth(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 5",
    ]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (5, "out\n", "err\n"),
        "{r:?}"
    );
    let r = d.berth_stdin(
        &["run", "--rm", "-i", "busybox", "tr", "a-z", "A-Z"],
        b"shout\n",
    );
    assert_eq!(r.stdout, "SHOUT\n", "{r:?}");
    let id = ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-e",
            "GREETING=hello",
            "busybox",
            "sh",
            "-c",
            "echo $GREETING; sleep 1000",
        ],
    );
    assert_eq!(id.trim().len(), 64);
    let ps = ok(&d, &["ps"]);
    assert!(
        ps.lines().next().unwrap().starts_with("CONTAINER ID"),
        "{ps}"
    );
    assert!(
        ps.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with(&id[..12]) && l.ends_with("web")),
        "{ps}"
    );
    assert_eq!(ok(&d, &["ps", "-q", "--no-trunc"]).trim(), id.trim());
    assert_eq!(
        ok(&d, &["ps", "--format", "{{.Names}} {{.Image}}"]).trim(),
        "web busybox"
    );
    d.eventually("the greeting in the log", || {
        ok(&d, &["logs", "web"]) == "hello\n"
    });
    let r = d.berth(&[
        "exec",
        "web",
        "sh",
        "-c",
        "echo $GREETING from exec; exit 3",
    ]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (3, "hello from exec\n"),
        "{r:?}"
    );
    assert_eq!(
        ok(&d, &["inspect", "-f", "{{.State.Status}}", "web"]).trim(),
        "running"
    );
    let r = d.berth(&["rm", "web"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("Error response from daemon"), "{r:?}");
    ok(&d, &["stop", "-t", "0", "web"]);
    assert_eq!(
        ok(&d, &["inspect", "-f", "{{.State.ExitCode}}", "web"]).trim(),
        "137"
    );
    ok(&d, &["rm", "web"]);
    assert_eq!(ok(&d, &["ps", "-aq"]), "");
    let r = d.berth(&["run", "--rm", "busybox", "no-such-command"]);
    assert_eq!(r.code, 127, "{r:?}");
    let images = ok(&d, &["images"]);
    assert!(
        images
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("busybox")),
        "{images}"
    );
    assert!(ok(&d, &["version"]).contains("API version:      1.47"));
    ok(&d, &["volume", "create", "v1"]);
    assert_eq!(
        ok(
            &d,
            &["volume", "inspect", "-f", "{{.Name}} {{.Driver}}", "v1"]
        )
        .trim(),
        "v1 local"
    );
    assert_eq!(
        ok(&d, &["network", "inspect", "-f", "{{.Driver}}", "bridge"]).trim(),
        "bridge"
    );
    let r = d.berth(&["volume", "inspect", "v1", "nope"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("Error: No such volume: nope") && r.stdout.contains("\"Name\": \"v1\""),
        "{r:?}"
    );
}

#[test]
fn the_berth_cli_says_when_no_daemon_answers() {
    let r = std::process::Command::new(berth_kernel_tests::harness::workspace_binary("berth"))
        .args(["-H", "unix:///nonexistent/berth.sock", "ps"])
        .output()
        .unwrap();
    assert_ne!(r.status.code(), Some(0));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("Cannot connect to the berth daemon at unix:///nonexistent/berth.sock"),
        "{err}"
    );
}
