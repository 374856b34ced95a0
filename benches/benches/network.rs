//! Container to container TCP on one bridge network, same run: the plain Linux bridge, the
//! bridge as Docker sets it up (br_netfilter on, so bridged packets go through iptables, with
//! dockerd's chains and rules for one network), and berth's datapath (bpf_redirect_peer
//! between the veths): throughput (with the CPU the whole machine spent per GiB, printed),
//! small datagrams (the per-packet cost, where skipping the bridge shows) and one-byte round
//! trips (with loopback inside one namespace as the floor). The bridge lives in
//! a network namespace made here, so br_netfilter's setting and the rules are that
//! namespace's alone (both are per namespace).
//!
//! Joining a container to a bridge network: berth's bridge driver (one process, rtnetlink:
//! veth made with its peer already in the container's namespace, bridge port, addresses, up,
//! default route, the datapath's programs and map entries), the same for a namespace the warm
//! pool prepared ahead (the veth on the bridge with the programs on: the join is the address,
//! the route and map entries), and the same steps as `ip` commands (what shell-based setups
//! and many CNI scripts do, without a datapath), in the same run. The container namespaces
//! are made and dropped outside the timed part. Needs root.

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
    let dp = host.inside(berth_bpf::Datapath::load).unwrap();
    let bridge = Bridge::with_datapath(
        Arc::new(Ipam::open(dir.path()).unwrap()),
        Arc::new(std::sync::Mutex::new(dp)),
    );
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
    // Each container's namespace is made (and prepared, for the warm pool's row) outside the
    // timed part; leaving it as when a container is removed: its namespace takes the veth.
    for (name, prepared_ahead) in [
        ("berth (rtnetlink, datapath)", false),
        ("berth, prepared ahead (warm pool)", true),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let container = TestNetns::create();
                    let file = container.file();
                    let id = format!("e{n}");
                    let request = EndpointRequest {
                        id: &id,
                        netns: file.as_fd(),
                        ifname: "eth0",
                        static_ips: &[],
                        default_route: true,
                    };
                    let (took, endpoint) = host.inside(|| {
                        let prepared = prepared_ahead.then(|| {
                            bridge
                                .prepare(&network, file.as_fd(), &id)
                                .unwrap()
                                .unwrap()
                        });
                        let start = Instant::now();
                        let e = match prepared {
                            Some(p) => bridge.join_prepared(&network, p, &request),
                            None => bridge.join(&network, &request),
                        }
                        .unwrap();
                        (start.elapsed(), e)
                    });
                    total += took;
                    host.inside(|| bridge.leave(&network, &endpoint, None))
                        .unwrap();
                }
                total
            })
        });
    }
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

/// How two containers on one network reach each other.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    /// The Linux bridge, br_netfilter off in its namespace.
    Bridge,
    /// Docker's: the bridge with br_netfilter on and dockerd's iptables rules for it.
    DockerIptables,
    /// berth's BPF datapath on the veths.
    Datapath,
}

const SETUPS: [(&str, Setup); 3] = [
    ("linux bridge", Setup::Bridge),
    (
        "bridge + br_netfilter + iptables (docker)",
        Setup::DockerIptables,
    ),
    ("berth datapath (redirect_peer)", Setup::Datapath),
];

/// Busy CPU time of the whole machine so far (softirq included: most of a veth's work).
fn cpu_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7];
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_micros(busy * 1_000_000 / hz)
}

/// A long-lived TCP connection from container a to container b on one network, per setup;
/// each iteration pushes 64 MiB through it. The CPU spent per GiB is printed.
fn throughput(c: &mut Criterion) {
    const CHUNK: usize = 1 << 20;
    const PER_ITER: usize = 64;
    let mut g = c.benchmark_group("network/tcp a->b 64 MiB");
    g.sample_size(10);
    g.throughput(criterion::Throughput::Bytes((CHUNK * PER_ITER) as u64));
    for (name, setup) in SETUPS {
        let p = pair(setup, "10.213.0.0/24");
        let (a, b) = (&p.a, &p.b);
        let to = std::net::SocketAddr::new(p.server, 7301);
        let listener = b.inside(|| std::net::TcpListener::bind(to)).unwrap();
        let sink = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            std::io::copy(&mut s, &mut std::io::sink()).unwrap()
        });
        let mut stream = a.inside(|| std::net::TcpStream::connect(to)).unwrap();
        let buf = vec![7u8; CHUNK];
        let mut sent = 0u64;
        let cpu_before = cpu_busy();
        g.bench_function(name, |bench| {
            bench.iter(|| {
                use std::io::Write;
                for _ in 0..PER_ITER {
                    stream.write_all(&buf).unwrap();
                }
                sent += (CHUNK * PER_ITER) as u64;
            })
        });
        let cpu = cpu_busy() - cpu_before;
        let gib = sent as f64 / (1u64 << 30) as f64;
        if sent > 0 {
            eprintln!(
                "network/tcp a->b 64 MiB/{name}: {:.3} CPU-s per GiB ({gib:.1} GiB)",
                cpu.as_secs_f64() / gib
            );
        }
        drop(stream);
        sink.join().unwrap();
    }
    g.finish();
}

/// Small UDP datagrams from container a to container b, per setup: the cost of one packet's
/// way (a veth send runs the whole delivery, bridge or redirect, in the sender's softirq, so
/// the sender's time is the path's). The CPU spent per million packets is printed.
fn datagrams(c: &mut Criterion) {
    const PER_ITER: u64 = 1000;
    let mut g = c.benchmark_group("network/udp a->b 64-byte datagrams");
    g.sample_size(30);
    g.throughput(criterion::Throughput::Elements(PER_ITER));
    for (name, setup) in SETUPS {
        let p = pair(setup, "10.215.0.0/24");
        let to = std::net::SocketAddr::new(p.server, 7501);
        let receiver = p.b.inside(|| std::net::UdpSocket::bind(to)).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let drain = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut got = 0u64;
            // Ends a second after the last datagram.
            while receiver.recv(&mut buf).is_ok() {
                got += 1;
            }
            got
        });
        let sender =
            p.a.inside(|| {
                let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
                s.connect(to)?;
                Ok::<_, std::io::Error>(s)
            })
            .unwrap();
        let payload = [5u8; 64];
        let mut sent = 0u64;
        let cpu_before = cpu_busy();
        g.bench_function(name, |bench| {
            bench.iter(|| {
                for _ in 0..PER_ITER {
                    sender.send(&payload).unwrap();
                }
                sent += PER_ITER;
            })
        });
        let cpu = cpu_busy() - cpu_before;
        let got = drain.join().unwrap();
        if sent > 0 {
            eprintln!(
                "network/udp a->b 64-byte datagrams/{name}: {:.2} CPU-s per million packets, {:.1}% received",
                cpu.as_secs_f64() * 1e6 / sent as f64,
                got as f64 * 100.0 / sent as f64
            );
        }
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

/// `ip netns exec NS cmd args…` with `stdin`, which must succeed.
fn exec_in(ns: &TestNetns, cmd: &[&str], stdin: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(cmd)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("ip netns exec");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{cmd:?} in {}", ns.name);
}

/// dockerd's iptables rules (20.10, iptables on) for one bridge network `br` with `subnet`,
/// FORWARD's policy DROP as dockerd sets it.
fn docker_rules(br: &str, subnet: &str) -> String {
    format!(
        "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s {subnet} ! -o {br} -j MASQUERADE
-A DOCKER -i {br} -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o {br} -j DOCKER
-A FORWARD -i {br} ! -o {br} -j ACCEPT
-A FORWARD -i {br} -o {br} -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i {br} ! -o {br} -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o {br} -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
"
    )
}

fn pair(setup: Setup, subnet: &str) -> Pair {
    let host = TestNetns::create();
    // br_netfilter's switch is per namespace; a new one starts with it on.
    let netfilter = if setup == Setup::DockerIptables { 1 } else { 0 };
    for family in ["iptables", "ip6tables"] {
        exec_in(
            &host,
            &[
                "sysctl",
                "-q",
                "-w",
                &format!("net.bridge.bridge-nf-call-{family}={netfilter}"),
            ],
            "",
        );
    }
    let (a, b) = (TestNetns::create(), TestNetns::create());
    let dir = tempfile::tempdir().unwrap();
    let ipam = Arc::new(Ipam::open(dir.path()).unwrap());
    let bridge = if setup == Setup::Datapath {
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
    if setup == Setup::DockerIptables {
        let br = network.interface.as_deref().unwrap();
        exec_in(&host, &["iptables-restore"], &docker_rules(br, subnet));
    }
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
    let rows = SETUPS
        .iter()
        .map(|(name, setup)| (*name, Some(*setup)))
        .chain([("loopback, one namespace (floor)", None)]);
    for (name, setup) in rows {
        let p = pair(setup.unwrap_or(Setup::Bridge), "10.214.0.0/24");
        let (server_ns, client_ns, addr) = if setup.is_none() {
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

criterion_group!(benches, join, throughput, datagrams, round_trip);
criterion_main!(benches);
