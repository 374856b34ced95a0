//! Container to container TCP on one bridge network, the plain Linux bridge vs berth's
//! datapath (bpf_redirect_peer between the veths), same run: throughput, and one-byte round
//! trips (with loopback inside one namespace as the floor). Docker's own setup (the bridge
//! with br_netfilter and iptables) is not measured here: loading br_netfilter changes every
//! bridge on the host.
//!
//! Joining a container to a bridge network: berth's bridge driver (one process, rtnetlink:
//! veth made with its peer already in the container's namespace, bridge port, addresses, up,
//! default route) beside the same steps as `ip` commands (what shell-based setups and many CNI
//! scripts do), in the same run. Everything happens in a network namespace made here; the
//! container namespaces are made and dropped outside the timed part. Needs root.

use std::os::fd::AsFd;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_kernel_tests::test_netns::TestNetns;
use berth_network::ipam::{Ipam, SubnetRequest};
use berth_network::{Bridge, EndpointRequest, NetworkDriver, NetworkSpec};
use criterion::{Criterion, criterion_group, criterion_main};

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?}");
}

fn join(c: &mut Criterion) {
    let host = TestNetns::create();
    let dir = tempfile::tempdir().unwrap();
    let bridge = Bridge::new(Arc::new(Ipam::open(dir.path()).unwrap()));
    let spec = NetworkSpec {
        id: "bench".into(),
        name: "bench".into(),
        subnets: vec![SubnetRequest {
            subnet: Some("10.210.0.0/16".parse().unwrap()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let network = host.inside(|| bridge.create(&spec)).unwrap();
    let br = network.interface.clone().unwrap();
    let mut g = c.benchmark_group("network/join bridge");
    g.sample_size(30);
    let mut n = 0u64;
    g.bench_function("berth (rtnetlink)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let container = TestNetns::create();
                let file = container.file();
                let id = format!("e{n}");
                let (took, endpoint) = host.inside(|| {
                    let start = Instant::now();
                    let e = bridge
                        .join(
                            &network,
                            &EndpointRequest {
                                id: &id,
                                netns: file.as_fd(),
                                ifname: "eth0",
                                static_ips: &[],
                                default_route: true,
                            },
                        )
                        .unwrap();
                    (start.elapsed(), e)
                });
                total += took;
                // As when a container is removed: its namespace takes the veth along.
                host.inside(|| bridge.leave(&network, &endpoint, None))
                    .unwrap();
            }
            total
        })
    });
    g.bench_function("ip commands", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let container = TestNetns::create();
                let (h, c) = (host.name.as_str(), container.name.as_str());
                let veth = format!("vb{n}");
                let addr = format!("10.210.{}.{}/16", (n / 250) % 250, n % 250 + 2);
                let start = Instant::now();
                ip(&[
                    "-n", h, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                    c,
                ]);
                ip(&["-n", h, "link", "set", &veth, "master", &br, "up"]);
                ip(&["-n", c, "addr", "add", &addr, "dev", "eth0"]);
                ip(&["-n", c, "link", "set", "eth0", "up"]);
                ip(&["-n", c, "link", "set", "lo", "up"]);
                ip(&["-n", c, "route", "add", "default", "via", "10.210.0.1"]);
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// A long-lived TCP connection from container a to container b on one network, through the
/// plain bridge or through berth's datapath; each iteration pushes 64 MiB through it.
fn throughput(c: &mut Criterion) {
    const CHUNK: usize = 1 << 20;
    const PER_ITER: usize = 64;
    let mut g = c.benchmark_group("network/tcp a->b 64 MiB");
    g.sample_size(10);
    g.throughput(criterion::Throughput::Bytes((CHUNK * PER_ITER) as u64));
    for datapath in [false, true] {
        let p = pair(datapath, "10.213.0.0/24");
        let (a, b) = (&p.a, &p.b);
        let to = std::net::SocketAddr::new(p.server, 7301);
        let listener = b.inside(|| std::net::TcpListener::bind(to)).unwrap();
        let sink = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            std::io::copy(&mut s, &mut std::io::sink()).unwrap()
        });
        let mut stream = a.inside(|| std::net::TcpStream::connect(to)).unwrap();
        let buf = vec![7u8; CHUNK];
        let name = if datapath {
            "berth datapath (redirect_peer)"
        } else {
            "linux bridge"
        };
        g.bench_function(name, |bench| {
            bench.iter(|| {
                use std::io::Write;
                for _ in 0..PER_ITER {
                    stream.write_all(&buf).unwrap();
                }
            })
        });
        drop(stream);
        sink.join().unwrap();
    }
    g.finish();
}

/// Two containers on one network (through the bridge or the datapath): the namespaces, the
/// bridge and the server's address, kept alive while the bench runs.
struct Pair {
    _host: TestNetns,
    a: TestNetns,
    b: TestNetns,
    _dir: tempfile::TempDir,
    server: std::net::IpAddr,
}

fn pair(datapath: bool, subnet: &str) -> Pair {
    let host = TestNetns::create();
    let (a, b) = (TestNetns::create(), TestNetns::create());
    let dir = tempfile::tempdir().unwrap();
    let ipam = Arc::new(Ipam::open(dir.path()).unwrap());
    let bridge = if datapath {
        let dp = host.inside(berth_bpf::Datapath::load).unwrap();
        Bridge::with_datapath(ipam, Arc::new(std::sync::Mutex::new(dp)))
    } else {
        Bridge::new(ipam)
    };
    let spec = NetworkSpec {
        id: "rr".into(),
        name: "rr".into(),
        subnets: vec![SubnetRequest {
            subnet: Some(subnet.parse().unwrap()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let network = host.inside(|| bridge.create(&spec)).unwrap();
    let mut server = None;
    for (id, ns) in [("a", &a), ("b", &b)] {
        let e = berth_kernel_tests::net_probe::join(&host, &bridge, &network, id, ns).unwrap();
        server = Some(e.addresses[0].0);
    }
    Pair {
        _host: host,
        a,
        b,
        _dir: dir,
        server: server.unwrap(),
    }
}

/// One-byte request, one-byte answer, on one TCP connection (TCP_NODELAY).
fn round_trip(c: &mut Criterion) {
    use std::io::{Read, Write};
    let mut g = c.benchmark_group("network/tcp round trip 1 byte");
    g.sample_size(30);
    for (name, kind) in [
        ("linux bridge", 0),
        ("berth datapath (redirect_peer)", 1),
        ("loopback, one namespace (floor)", 2),
    ] {
        let p = pair(kind == 1, "10.214.0.0/24");
        let (server_ns, client_ns, addr) = if kind == 2 {
            p.a.ip(&["link", "set", "lo", "up"]);
            (
                &p.a,
                &p.a,
                std::net::SocketAddr::from(([127, 0, 0, 1], 7401)),
            )
        } else {
            (&p.b, &p.a, std::net::SocketAddr::new(p.server, 7401))
        };
        let listener = server_ns
            .inside(|| std::net::TcpListener::bind(addr))
            .unwrap();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_nodelay(true).unwrap();
            let mut byte = [0u8; 1];
            while s.read_exact(&mut byte).is_ok() {
                if s.write_all(&byte).is_err() {
                    break;
                }
            }
        });
        let mut stream = client_ns
            .inside(|| std::net::TcpStream::connect(addr))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let mut byte = [1u8; 1];
        g.bench_function(name, |bench| {
            bench.iter(|| {
                stream.write_all(&byte).unwrap();
                stream.read_exact(&mut byte).unwrap();
            })
        });
        drop(stream);
        echo.join().unwrap();
    }
    g.finish();
}

criterion_group!(benches, join, throughput, round_trip);
criterion_main!(benches);
