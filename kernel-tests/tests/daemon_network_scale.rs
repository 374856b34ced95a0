//! 200 containers join a user-defined network (20 of them with a published port) and leave
//! it; afterwards nothing is left: no port on the bridge, no address in IPAM, no datapath map
//! entry, no published-port entry, no nftables element.

use berth_kernel_tests::test_daemon::TestDaemon;

const CONTAINERS: usize = 200;
const PUBLISHED: usize = 20;

fn bridge_port_names(bridge: &str) -> Vec<String> {
    berth_kernel_tests::net_probe::bridge_ports(bridge)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

fn bridge_ports(bridge: &str) -> usize {
    bridge_port_names(bridge).len()
}

fn nft_elements(table: &str) -> String {
    let mut left = String::new();
    for map in ["ports_tcp", "ports_udp", "ports_tcp_addr", "ports_udp_addr"] {
        let out = std::process::Command::new("nft")
            .args(["list", "map", "ip", table, map])
            .output()
            .expect("nft");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("elements") {
            left.push_str(&text);
        }
    }
    left
}

#[test]
fn two_hundred_containers_join_and_leave_and_leave_nothing() {
    let d = TestDaemon::start();
    d.load_busybox();
    let bridge = format!("{}n", d.bridge);
    d.docker_ok(&[
        "network",
        "create",
        "-o",
        &format!("com.docker.network.bridge.name={bridge}"),
        "crowd",
    ]);
    let mut ids = Vec::new();
    for i in 0..CONTAINERS {
        let mut args = vec!["run", "-d", "--network", "crowd"];
        if i < PUBLISHED {
            args.extend(["-p", "80"]);
        }
        args.extend(["busybox", "sleep", "600"]);
        ids.push(d.docker_ok(&args).trim().to_string());
    }
    assert_eq!(bridge_ports(&bridge), CONTAINERS);
    let pins = d.bpf_pin_dir();
    for port in bridge_port_names(&bridge) {
        assert_eq!(
            berth_kernel_tests::net_probe::tc_programs(&port),
            ["from_container", "to_container"],
            "the datapath's two programs on {port}, nothing else"
        );
    }
    assert_eq!(
        berth_bpf::Datapath::pinned_entries(&pins.join("datapath")).unwrap(),
        CONTAINERS * 3,
        "a port, its counters and one address per container"
    );
    assert!(
        nft_elements(&d.bridge).contains("elements"),
        "no published port in the table"
    );
    let running = d.docker_ok(&["ps", "-q"]).lines().count();
    assert_eq!(running, CONTAINERS);

    let mut rm = vec!["rm", "-f"];
    rm.extend(ids.iter().map(String::as_str));
    d.docker_ok(&rm);

    // The kernel tears network namespaces down (and their veths with them) in a work queue,
    // a little after the last reference goes.
    d.eventually("every veth leaves the bridge", || {
        bridge_ports(&bridge) == 0
    });
    assert_eq!(
        berth_bpf::Datapath::pinned_entries(&pins.join("datapath")).unwrap(),
        0,
        "datapath map entries left"
    );
    let mut published = berth_bpf::ports::PublishedPorts::open(
        &pins.join("ports"),
        &berth_daemon::ports::cgroup2_root().unwrap(),
    )
    .unwrap();
    assert_eq!(published.count().unwrap(), 0, "published-port entries left");
    assert_eq!(nft_elements(&d.bridge), "", "nftables elements left");
    // IPAM: every address given back, so the network goes.
    for entry in std::fs::read_dir(d.root().join("networks/ipam"))
        .unwrap()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let held: usize = v["subnets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["allocated"].as_object().map_or(0, |a| a.len()))
            .sum();
        assert_eq!(
            held,
            0,
            "addresses left in {}: {text}",
            entry.path().display()
        );
    }
    d.docker_ok(&["network", "rm", "crowd"]);
    assert!(
        !std::path::Path::new(&format!("/sys/class/net/{bridge}")).exists(),
        "the network's bridge is left"
    );
}
