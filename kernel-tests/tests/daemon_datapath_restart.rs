//! The BPF datapath belongs to the host, not to berthd's process: its maps and tc links are
//! pinned, so a berthd killed and started again keeps networks apart (Docker's isolation) and
//! keeps established connections flowing, and the new daemon cleans up after containers that
//! leave afterwards.

use std::time::Duration;

use berth_kernel_tests::test_daemon::TestDaemon;

fn lines_in(d: &TestDaemon, container: &str) -> usize {
    d.docker_ok(&["exec", container, "wc", "-l", "/tmp/replies"])
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_datapath_outlives_a_daemon_restart() {
    let mut d = TestDaemon::start();
    d.load_busybox();
    d.docker_ok(&["network", "create", "front"]);
    d.docker_ok(&["network", "create", "back"]);
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "front",
        "busybox",
        "sh",
        "-c",
        "nc -ll -p 80 -e hostname & exec nc -ll -p 81 -e cat",
    ]);
    let ip = d
        .docker_ok(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.front.IPAddress}}",
            "srv",
        ])
        .trim()
        .to_string();
    // One connection kept open: a line every 0.1 s, the echoes kept in a file.
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "--network",
        "front",
        "busybox",
        "sh",
        "-c",
        &format!("while true; do echo ping; sleep 0.1; done | nc {ip} 81 > /tmp/replies"),
    ]);
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "stranger",
        "--network",
        "back",
        "busybox",
        "sleep",
        "600",
    ]);
    let probe = |d: &TestDaemon, from_network: &str| {
        d.docker(&[
            "run",
            "--rm",
            "--network",
            from_network,
            "busybox",
            "nc",
            "-w",
            "2",
            &ip,
            "80",
        ])
        .stdout
        .trim()
        .to_string()
    };
    let srv_host = d
        .docker_ok(&["inspect", "-f", "{{.Config.Hostname}}", "srv"])
        .trim()
        .to_string();
    d.eventually("the echo connection is up", || lines_in(&d, "talker") > 3);
    assert_eq!(probe(&d, "front"), srv_host);
    assert_eq!(probe(&d, "back"), "", "another network reached the server");
    let stranger = d.docker(&["exec", "stranger", "nc", "-w", "2", &ip, "80"]);
    assert!(stranger.stdout.trim().is_empty(), "{stranger:?}");

    d.kill9();
    std::thread::sleep(Duration::from_millis(500));
    d.restart();

    // The connection went on through the outage and goes on now.
    let after = lines_in(&d, "talker");
    std::thread::sleep(Duration::from_millis(800));
    assert!(lines_in(&d, "talker") > after, "the connection stopped");
    // Still apart, still together.
    let stranger = d.docker(&["exec", "stranger", "nc", "-w", "2", &ip, "80"]);
    assert!(
        stranger.stdout.trim().is_empty(),
        "isolation lost with the restart: {stranger:?}"
    );
    assert_eq!(probe(&d, "back"), "");
    assert_eq!(probe(&d, "front"), srv_host);

    // The new daemon takes the old containers' ports off when they go.
    d.docker_ok(&["rm", "-f", "srv", "talker", "stranger"]);
    assert_eq!(
        berth_bpf::Datapath::pinned_entries(&d.bpf_pin_dir().join("datapath")).unwrap(),
        0,
        "datapath entries left after the containers went"
    );
}

#[test]
fn bridges_lost_with_a_reboot_are_made_again_at_start() {
    let mut d = TestDaemon::start();
    d.load_busybox();
    let bridge = format!("{}r", d.bridge);
    d.docker_ok(&[
        "network",
        "create",
        "-o",
        &format!("com.docker.network.bridge.name={bridge}"),
        "kept",
    ]);
    d.docker_ok(&["run", "--rm", "--network", "kept", "busybox", "true"]);
    // As a reboot would: the daemon gone, and its bridges with it.
    d.kill9();
    for link in [bridge.as_str(), d.bridge.as_str()] {
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", link])
            .stderr(std::process::Stdio::null())
            .status();
    }
    d.restart();
    let out = d.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "kept",
        "busybox",
        "echo",
        "back",
    ]);
    assert_eq!(out, "back\n");
    let out = d.docker_ok(&["run", "--rm", "busybox", "echo", "default too"]);
    assert_eq!(out, "default too\n");
}
