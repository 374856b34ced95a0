//! Names on user-defined networks: containers resolve each other by name, network alias and
//! short id through the network's resolver (on its gateway), connect by name, and do not see
//! containers of other networks or containers that stopped.

use berth_kernel_tests::test_daemon::TestDaemon;

fn resolved(out: &str) -> Vec<String> {
    // busybox nslookup: the server first ("Address: GW:53"), then "Address: IP" per answer.
    out.lines()
        .skip_while(|l| !l.starts_with("Name:"))
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .collect()
}

#[test]
fn containers_on_a_user_network_find_each_other_by_name() {
    let d = TestDaemon::start();
    d.load_busybox();
    d.docker_ok(&["network", "create", "app"]);
    d.docker_ok(&["network", "create", "other"]);
    let id = d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "app",
        "--network-alias",
        "database",
        "busybox",
        "nc",
        "-ll",
        "-p",
        "80",
        "-e",
        "hostname",
    ]);
    let id = id.trim();
    let ip = d
        .docker_ok(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.app.IPAddress}}",
            "db",
        ])
        .trim()
        .to_string();
    let gateway = d
        .docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            "app",
        ])
        .trim()
        .to_string();

    let resolv = d.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "app",
        "busybox",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(
        resolv.contains(&format!("nameserver {gateway}")),
        "{resolv}"
    );
    for name in ["db", "DB", "database", &id[..12]] {
        let r = d.docker(&[
            "run",
            "--rm",
            "--network",
            "app",
            "busybox",
            "nslookup",
            name,
        ]);
        assert!(
            resolved(&r.stdout).contains(&ip),
            "{name}: {r:?} (expected {ip})"
        );
    }
    // By name over TCP: the server answers with its hostname (the short id).
    let out = d.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "app",
        "busybox",
        "nc",
        "db",
        "80",
    ]);
    assert_eq!(out.trim(), &id[..12]);

    // Another network does not see it; neither does anyone once it stopped.
    let r = d.docker(&[
        "run",
        "--rm",
        "--network",
        "other",
        "busybox",
        "nslookup",
        "db",
    ]);
    assert!(!resolved(&r.stdout).contains(&ip), "{r:?}");
    d.docker_ok(&["stop", "-t", "1", "db"]);
    let r = d.docker(&[
        "run",
        "--rm",
        "--network",
        "app",
        "busybox",
        "nslookup",
        "db",
    ]);
    assert!(
        resolved(&r.stdout).is_empty(),
        "a stopped container resolves: {r:?}"
    );

    // The default bridge has no resolver, as with Docker: the host's settings.
    let resolv = d.docker_ok(&["run", "--rm", "busybox", "cat", "/etc/resolv.conf"]);
    assert!(
        !resolv.contains(&format!("nameserver {gateway}")),
        "{resolv}"
    );
}
