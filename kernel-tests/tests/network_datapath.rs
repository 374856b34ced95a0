//! berth's BPF datapath on the bridge driver, over real namespaces made by the tests (the
//! "host" is a namespace too). Same-network traffic must go by bpf_redirect_peer, other
//! networks must be unreachable even where the host would route between them, and the
//! counters must see the bytes.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use berth_bpf::Datapath;
use berth_kernel_tests::net_probe::{self, tcp_echo};
use berth_kernel_tests::test_netns::TestNetns;
use berth_network::ipam::{Ipam, SubnetRequest};
use berth_network::{Bridge, Endpoint, Network, NetworkDriver, NetworkSpec};

fn spec(id: &str, subnet: &str) -> NetworkSpec {
    NetworkSpec {
        id: id.into(),
        name: id.into(),
        subnets: vec![SubnetRequest {
            subnet: Some(subnet.parse().unwrap()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn join(host: &TestNetns, bridge: &Bridge, network: &Network, id: &str, c: &TestNetns) -> Endpoint {
    net_probe::join(host, bridge, network, id, c).unwrap()
}

fn datapath(host: &TestNetns) -> Arc<Mutex<Datapath>> {
    Arc::new(Mutex::new(host.inside(Datapath::load).unwrap()))
}

fn mac(ns: &TestNetns) -> String {
    let out = ns.ip(&["-o", "link", "show", "eth0"]);
    out.split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string()
}

fn ip_of(e: &Endpoint) -> IpAddr {
    e.addresses[0].0
}

#[test]
fn same_network_traffic_skips_the_bridge_and_is_counted() {
    let host = TestNetns::create();
    let (a, b) = (TestNetns::create(), TestNetns::create());
    let dir = tempfile::tempdir().unwrap();
    let dp = datapath(&host);
    let bridge = Bridge::with_datapath(Arc::new(Ipam::open(dir.path()).unwrap()), Arc::clone(&dp));
    let network = host
        .inside(|| bridge.create(&spec("dp1", "10.211.0.0/24")))
        .unwrap();
    let ea = join(&host, &bridge, &network, "a", &a);
    let eb = join(&host, &bridge, &network, "b", &b);
    let (va, vb) = (
        ea.host_ifname.clone().unwrap(),
        eb.host_ifname.clone().unwrap(),
    );
    // The bridge may not forward between the two ports at all, ARP included: only the
    // datapath can carry a's packets to b. Neighbours are static so no ARP is needed.
    host.ip(&[
        "link",
        "set",
        "dev",
        &va,
        "type",
        "bridge_slave",
        "isolated",
        "on",
    ]);
    host.ip(&[
        "link",
        "set",
        "dev",
        &vb,
        "type",
        "bridge_slave",
        "isolated",
        "on",
    ]);
    a.ip(&[
        "neigh",
        "add",
        &ip_of(&eb).to_string(),
        "lladdr",
        &mac(&b),
        "dev",
        "eth0",
    ]);
    b.ip(&[
        "neigh",
        "add",
        &ip_of(&ea).to_string(),
        "lladdr",
        &mac(&a),
        "dev",
        "eth0",
    ]);
    tcp_echo(&b, &a, SocketAddr::new(ip_of(&eb), 7101)).unwrap();

    let before = host.inside(|| dp.lock().unwrap().counters(&va)).unwrap();
    // 1 MiB one way: the counters see at least that much.
    let payload = 1 << 20;
    let listener = b
        .inside(|| std::net::TcpListener::bind((ip_of(&eb), 7102)))
        .unwrap();
    let sink = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        std::io::copy(&mut s, &mut std::io::sink()).unwrap()
    });
    a.inside(|| {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect((ip_of(&eb), 7102)).unwrap();
        s.write_all(&vec![7u8; payload]).unwrap();
    });
    assert_eq!(sink.join().unwrap(), payload as u64);
    let (ca, cb) = host.inside(|| {
        let mut dp = dp.lock().unwrap();
        (dp.counters(&va).unwrap(), dp.counters(&vb).unwrap())
    });
    assert!(
        ca.tx_bytes - before.tx_bytes >= payload as u64,
        "{before:?} -> {ca:?}"
    );
    assert!(cb.rx_bytes >= payload as u64, "{cb:?}");
    assert_eq!(ca.dropped, 0);

    for (e, c) in [(&ea, &a), (&eb, &b)] {
        host.inside(|| bridge.leave(&network, e, Some(c.file().as_fd())))
            .unwrap();
    }
    host.inside(|| bridge.delete(&network)).unwrap();
    assert!(
        host.inside(|| dp.lock().unwrap().counters(&va)).is_err(),
        "the port is gone"
    );
}

/// Waits until `ns` has no tentative IPv6 address (duplicate address detection done).
fn dad_done(ns: &TestNetns) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ns
        .ip(&["-6", "addr", "show", "tentative"])
        .trim()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "IPv6 addresses stay tentative"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn same_network_ipv6_goes_by_the_datapath_too() {
    let host = TestNetns::create();
    let (a, b) = (TestNetns::create(), TestNetns::create());
    let dir = tempfile::tempdir().unwrap();
    let dp = datapath(&host);
    let bridge = Bridge::with_datapath(Arc::new(Ipam::open(dir.path()).unwrap()), Arc::clone(&dp));
    let mut dual = spec("dp6", "10.213.0.0/24");
    dual.subnets.push(SubnetRequest {
        subnet: Some("fd00:213::/64".parse().unwrap()),
        ..Default::default()
    });
    let network = host.inside(|| bridge.create(&dual)).unwrap();
    let ea = join(&host, &bridge, &network, "a", &a);
    let eb = join(&host, &bridge, &network, "b", &b);
    let v6 = |e: &Endpoint| {
        e.addresses
            .iter()
            .find(|(ip, _)| ip.is_ipv6())
            .map(|(ip, _)| *ip)
            .expect("an IPv6 address")
    };
    let (va, vb) = (
        ea.host_ifname.clone().unwrap(),
        eb.host_ifname.clone().unwrap(),
    );
    // Only the datapath can carry a's packets to b (neighbour discovery included, hence the
    // static neighbours).
    for v in [&va, &vb] {
        host.ip(&[
            "link",
            "set",
            "dev",
            v,
            "type",
            "bridge_slave",
            "isolated",
            "on",
        ]);
    }
    a.ip(&[
        "-6",
        "neigh",
        "add",
        &v6(&eb).to_string(),
        "lladdr",
        &mac(&b),
        "dev",
        "eth0",
    ]);
    b.ip(&[
        "-6",
        "neigh",
        "add",
        &v6(&ea).to_string(),
        "lladdr",
        &mac(&a),
        "dev",
        "eth0",
    ]);
    dad_done(&a);
    dad_done(&b);
    let before = host.inside(|| dp.lock().unwrap().counters(&vb)).unwrap();
    tcp_echo(&b, &a, SocketAddr::new(v6(&eb), 7201)).unwrap();
    let after = host.inside(|| dp.lock().unwrap().counters(&vb)).unwrap();
    assert!(
        after.rx_packets > before.rx_packets,
        "{before:?} -> {after:?}"
    );

    for (e, c) in [(&ea, &a), (&eb, &b)] {
        host.inside(|| bridge.leave(&network, e, Some(c.file().as_fd())))
            .unwrap();
    }
    host.inside(|| bridge.delete(&network)).unwrap();
}

#[test]
fn other_networks_are_unreachable_even_where_the_host_routes() {
    let host = TestNetns::create();
    // As on a real host: its own addresses answer it over loopback.
    host.ip(&["link", "set", "lo", "up"]);
    let forward = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &host.name,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .status()
        .unwrap();
    assert!(forward.success());
    let (a, b) = (TestNetns::create(), TestNetns::create());
    let dir = tempfile::tempdir().unwrap();
    let ipam = Arc::new(Ipam::open(dir.path()).unwrap());

    // Plain bridges: the host routes between the two networks.
    let plain = Bridge::new(Arc::clone(&ipam));
    let n1 = host
        .inside(|| plain.create(&spec("p1", "10.212.1.0/24")))
        .unwrap();
    let n2 = host
        .inside(|| plain.create(&spec("p2", "10.212.2.0/24")))
        .unwrap();
    let ea = join(&host, &plain, &n1, "a", &a);
    let eb = join(&host, &plain, &n2, "b", &b);
    tcp_echo(&b, &a, SocketAddr::new(ip_of(&eb), 7201)).expect("routed without the datapath");
    host.inside(|| plain.leave(&n1, &ea, Some(a.file().as_fd())))
        .unwrap();
    host.inside(|| plain.leave(&n2, &eb, Some(b.file().as_fd())))
        .unwrap();
    host.inside(|| plain.delete(&n1)).unwrap();
    host.inside(|| plain.delete(&n2)).unwrap();

    // With the datapath: dropped at a's port, and counted as dropped.
    let dp = datapath(&host);
    let bridge = Bridge::with_datapath(Arc::clone(&ipam), Arc::clone(&dp));
    let n1 = host
        .inside(|| bridge.create(&spec("d1", "10.212.1.0/24")))
        .unwrap();
    let n2 = host
        .inside(|| bridge.create(&spec("d2", "10.212.2.0/24")))
        .unwrap();
    let ea = join(&host, &bridge, &n1, "a", &a);
    let eb = join(&host, &bridge, &n2, "b", &b);
    let blocked = tcp_echo(&b, &a, SocketAddr::new(ip_of(&eb), 7202));
    assert!(blocked.is_err(), "a reached another network");
    // Also the other network's gateway.
    let gw = SocketAddr::new("10.212.2.1".parse().unwrap(), 7203);
    assert!(
        tcp_echo(&host, &a, gw).is_err(),
        "a reached another network's gateway"
    );
    let va = ea.host_ifname.clone().unwrap();
    let ca = host.inside(|| dp.lock().unwrap().counters(&va)).unwrap();
    assert!(ca.dropped > 0, "{ca:?}");
    // Its own gateway still answers (the way out of the host).
    tcp_echo(
        &host,
        &a,
        SocketAddr::new("10.212.1.1".parse().unwrap(), 7204),
    )
    .unwrap();
    host.inside(|| bridge.leave(&n1, &ea, None)).unwrap();
    host.inside(|| bridge.leave(&n2, &eb, None)).unwrap();
}
