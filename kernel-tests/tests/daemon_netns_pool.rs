//! The warm pool: berthd keeps network namespaces ready with a veth already on the default
//! network's bridge (the datapath's programs on it), so a container's join is its address,
//! its route and map entries. A container that takes one talks like any other, keeps Docker's
//! isolation, and leaves nothing behind; waiting namespaces go when berthd stops or is killed.

use std::collections::BTreeSet;

use berth_kernel_tests::net_probe::bridge_ports as ports;
use berth_kernel_tests::test_daemon::TestDaemon;

/// Ports waiting in the pool (their container side not up yet).
fn waiting(bridge: &str) -> BTreeSet<String> {
    ports(bridge)
        .into_iter()
        .filter(|(_, up)| !up)
        .map(|(name, _)| name)
        .collect()
}

/// The datapath's map entries (ports, counters, addresses).
fn datapath_entries(d: &TestDaemon) -> usize {
    berth_bpf::Datapath::pinned_entries(&d.bpf_pin_dir().join("datapath")).unwrap()
}

fn has_programs(port: &str) -> bool {
    berth_kernel_tests::net_probe::tc_programs(port) == ["from_container", "to_container"]
}

#[test]
fn containers_take_prepared_namespaces_and_leave_nothing() {
    let mut d = TestDaemon::start_with_flags(None, &["--netns-pool", "3"]);
    d.load_busybox();
    // The default network's bridge is made by its first container; the pool readies
    // namespaces on it from then on.
    d.docker_ok(&["run", "--rm", "busybox", "true"]);
    d.eventually("three namespaces ready on the default bridge", || {
        waiting(&d.bridge).len() == 3
    });
    let before = waiting(&d.bridge);
    // Waiting ports have the programs on, and nothing in the maps yet.
    for port in &before {
        assert!(has_programs(port), "{port}");
    }
    assert_eq!(datapath_entries(&d), 0);

    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "busybox",
        "sh",
        "-c",
        "exec nc -ll -p 80 -e hostname",
    ]);
    let ip = d
        .docker_ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "srv"])
        .trim()
        .to_string();
    assert!(ip.starts_with(|c: char| c.is_ascii_digit()), "{ip:?}");
    // The server's veth is one that waited in the pool, now up and in the maps.
    let taken: Vec<String> = ports(&d.bridge)
        .into_iter()
        .filter(|(name, up)| *up && before.contains(name))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(taken.len(), 1, "{:?} vs {before:?}", ports(&d.bridge));
    assert!(has_programs(&taken[0]));
    assert_eq!(
        datapath_entries(&d),
        3,
        "the server's port, counters and address"
    );

    // Inside: eth0 with the address, the default route via the gateway, loopback up.
    let eth0 = d.docker_ok(&["exec", "srv", "ip", "addr", "show", "eth0"]);
    assert!(eth0.contains(&format!("inet {ip}/")), "{eth0}");
    let lo = d.docker_ok(&["exec", "srv", "ip", "addr", "show", "lo"]);
    assert!(
        lo.contains("inet 127.0.0.1/8") && lo.contains(",UP"),
        "{lo}"
    );
    let routes = d.docker_ok(&["exec", "srv", "ip", "route"]);
    assert!(routes.starts_with("default via "), "{routes}");

    // Another pooled container reaches it (through the datapath), by address.
    let hostname = d.docker_ok(&["inspect", "-f", "{{.Config.Hostname}}", "srv"]);
    let r = d.docker(&["run", "--rm", "busybox", "nc", "-w", "2", &ip, "80"]);
    assert_eq!(r.stdout.trim(), hostname.trim(), "{r:?}");
    // A container on another network does not (Docker's isolation).
    d.docker_ok(&["network", "create", "other"]);
    let r = d.docker(&[
        "run",
        "--rm",
        "--network",
        "other",
        "busybox",
        "nc",
        "-w",
        "1",
        &ip,
        "80",
    ]);
    assert_ne!(r.stdout.trim(), hostname.trim(), "{r:?}");
    d.docker_ok(&["network", "rm", "other"]);

    // Removed: its port goes, and so do its pins; the pool is full again.
    d.docker_ok(&["rm", "-f", "srv"]);
    d.eventually("the server's port leaves the bridge", || {
        ports(&d.bridge).iter().all(|(_, up)| !up)
    });
    assert_eq!(datapath_entries(&d), 0);
    d.eventually("the pool is full again", || waiting(&d.bridge).len() == 3);

    // A killed berthd's waiting namespaces are dropped by the next one (their veths, and the
    // programs on them, with them).
    let old = waiting(&d.bridge);
    d.restart();
    d.docker_ok(&["run", "--rm", "busybox", "true"]);
    d.eventually("the old daemon's waiting ports are gone", || {
        waiting(&d.bridge).is_disjoint(&old)
    });
    d.eventually("the new daemon's pool is full", || {
        waiting(&d.bridge).len() == 3
    });
    assert_eq!(datapath_entries(&d), 0);
}

#[test]
fn the_pool_goes_with_the_daemon() {
    let mut d = TestDaemon::start_with_flags(None, &["--netns-pool", "2"]);
    d.load_busybox();
    d.docker_ok(&["run", "--rm", "busybox", "true"]);
    d.eventually("two namespaces ready", || waiting(&d.bridge).len() == 2);
    let exec_root = d.exec_root();
    // A clean stop drops what waits: the namespaces' files, their veths.
    d.stop();
    d.eventually("no port left on the bridge", || ports(&d.bridge).is_empty());
    let left: Vec<_> = std::fs::read_dir(exec_root.join("netns"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
