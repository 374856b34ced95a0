//! `docker run -p`: a published port answers on the host's 127.0.0.1 (no proxy process), the
//! host port is reserved while the container runs, `docker port` and `docker ps` show it, a
//! second container cannot take it, and it keeps answering while berthd is killed and
//! restarted.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use berth_kernel_tests::harness::free_port;
use berth_kernel_tests::test_daemon::TestDaemon;
use berth_kernel_tests::test_netns::TestNetns;

/// What the container's server says to one connection.
fn ask(port: u16) -> std::io::Result<String> {
    let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut s = String::new();
    c.read_to_string(&mut s)?;
    Ok(s.trim().to_string())
}

fn host_port(d: &TestDaemon, container: &str, private: &str) -> Vec<(String, u16)> {
    // `docker port` fails when the port is not published (the container stopped).
    d.docker(&["port", container, private])
        .stdout
        .lines()
        .filter_map(|l| {
            let (ip, port) = l.trim().rsplit_once(':')?;
            Some((ip.to_string(), port.parse().ok()?))
        })
        .collect()
}

#[test]
fn a_published_port_answers_on_the_host() {
    let mut d = TestDaemon::start();
    d.load_busybox();
    let fixed = free_port();
    let id = d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "127.0.0.1::80",
        "-p",
        &format!("{fixed}:80"),
        "busybox",
        "nc",
        "-ll",
        "-p",
        "80",
        "-e",
        "hostname",
    ]);
    let short = &id.trim()[..12];
    let ports = host_port(&d, "web", "80/tcp");
    assert_eq!(ports.len(), 2, "{ports:?}");
    let random = ports
        .iter()
        .find(|(ip, _)| ip == "127.0.0.1")
        .map(|(_, p)| *p)
        .unwrap_or_else(|| panic!("{ports:?}"));
    assert!(ports.contains(&("0.0.0.0".to_string(), fixed)), "{ports:?}");
    d.eventually("the server answers on the random port", || {
        ask(random).is_ok_and(|s| s == short)
    });
    assert_eq!(ask(fixed).unwrap(), short);
    let ps = d.docker_ok(&["ps", "--format", "{{.Ports}}"]);
    assert!(
        ps.contains(&format!("127.0.0.1:{random}->80/tcp"))
            && ps.contains(&format!("0.0.0.0:{fixed}->80/tcp")),
        "{ps}"
    );

    // The host port is taken while the container runs: by nobody else, not even another
    // container.
    assert!(
        TcpListener::bind(("0.0.0.0", fixed)).is_err(),
        "port not reserved"
    );
    let r = d.docker(&[
        "run",
        "-d",
        "-p",
        &format!("{fixed}:80"),
        "busybox",
        "sleep",
        "5",
    ]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("port is already allocated"), "{r:?}");

    // berthd killed: the port keeps answering (the programs are pinned), and after the
    // restart the reservation is taken again.
    d.kill9();
    assert_eq!(ask(fixed).unwrap(), short, "the port died with berthd");
    d.restart();
    assert_eq!(ask(fixed).unwrap(), short);
    assert!(
        TcpListener::bind(("0.0.0.0", fixed)).is_err(),
        "port not reserved after restart"
    );

    // Stopped: the port is free again, and nothing answers.
    d.docker_ok(&["stop", "-t", "1", "web"]);
    assert!(ask(fixed).is_err(), "still answering after stop");
    let listener = TcpListener::bind(("0.0.0.0", fixed)).expect("the port was released");
    drop(listener);
    assert!(host_port(&d, "web", "80/tcp").is_empty());

    // Started again: published again.
    d.docker_ok(&["start", "web"]);
    d.eventually("the server answers again", || {
        ask(fixed).is_ok_and(|s| s == short)
    });
    d.docker_ok(&["rm", "-f", "web"]);
    let mut maps = berth_bpf::ports::PublishedPorts::open(
        &d.bpf_pin_dir().join("ports"),
        &berth_daemon::ports::cgroup2_root().unwrap(),
    )
    .unwrap();
    assert_eq!(maps.count().unwrap(), 0, "map entries left after rm");
}

#[test]
fn bad_port_specs_are_refused_at_create() {
    let d = TestDaemon::start();
    d.load_busybox();
    for spec in ["80/sctp", "70000:80", "[::1]:8080:80"] {
        let r = d.docker(&["create", "-p", spec, "busybox"]);
        assert_ne!(r.code, 0, "{spec}: {r:?}");
    }
    assert_eq!(d.docker_ok(&["ps", "-aq"]), "");
}

/// A veth from the host to a test namespace that plays the outside world (198.18.7.2; the
/// host end 198.18.7.1), removed with the namespace.
struct Outside {
    ns: TestNetns,
    host_end: String,
}

impl Outside {
    fn new() -> Outside {
        let ns = TestNetns::create();
        let host_end = berth_kernel_tests::harness::unique("bo").replace('-', "");
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let o = Outside { ns, host_end };
        ip(&[
            "link",
            "add",
            &o.host_end,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &o.ns.name,
        ]);
        ip(&["addr", "add", "198.18.7.1/30", "dev", &o.host_end]);
        ip(&["link", "set", &o.host_end, "up"]);
        o.ns.ip(&["addr", "add", "198.18.7.2/30", "dev", "eth0"]);
        o.ns.ip(&["link", "set", "eth0", "up"]);
        o.ns.ip(&["link", "set", "lo", "up"]);
        o
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &self.host_end])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn outside_clients_reach_published_ports_and_containers_reach_out_masqueraded() {
    let d = TestDaemon::start();
    d.load_busybox();
    let outside = Outside::new();
    let fixed = free_port();
    let id = d.docker_ok(&[
        "run",
        "-d",
        "-p",
        &format!("{fixed}:80"),
        "busybox",
        "nc",
        "-ll",
        "-p",
        "80",
        "-e",
        "hostname",
    ]);
    let short = id.trim()[..12].to_string();
    // From outside: to the host's address on that link, forwarded by berth's nftables table.
    d.eventually("the port answers from outside", || {
        outside.ns.inside(|| {
            TcpStream::connect_timeout(
                &("198.18.7.1", fixed)
                    .to_socket_addrs()
                    .unwrap()
                    .next()
                    .unwrap(),
                Duration::from_secs(2),
            )
            .and_then(|mut c| {
                c.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut s = String::new();
                c.read_to_string(&mut s)?;
                Ok(s.trim() == short)
            })
            .unwrap_or(false)
        })
    });

    // Through the host's address on the default network (its gateway): from the host (the
    // cgroup programs) and from another container (hairpin: DNAT there and back, masqueraded
    // so the answer comes back the way it went).
    let gateway = d
        .docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            "bridge",
        ])
        .trim()
        .to_string();
    let mut c = TcpStream::connect((gateway.as_str(), fixed)).expect("host to gateway:port");
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    assert_eq!(got.trim(), short);
    let r = d.docker(&[
        "run",
        "--rm",
        "busybox",
        "nc",
        "-w",
        "5",
        &gateway,
        &fixed.to_string(),
    ]);
    assert_eq!((r.code, r.stdout.trim()), (0, short.as_str()), "{r:?}");

    // Out: a container connects to a server outside; the server sees the host's address.
    let (listener, port) = outside.ns.inside(|| {
        let l = TcpListener::bind("198.18.7.2:0").unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    });
    let server = std::thread::spawn(move || {
        let (mut c, peer) = listener.accept().unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        (peer.ip().to_string(), s)
    });
    let r = d.docker(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        &format!("echo out | nc 198.18.7.2 {port}"),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let (peer, said) = server.join().unwrap();
    assert_eq!((peer.as_str(), said.as_str()), ("198.18.7.1", "out\n"));
}

/// On a host that mounts only cgroup v1 hierarchies, berthd mounts the cgroup v2 hierarchy
/// itself (the kernel always has it) and publishes ports through it as on any other host.
#[test]
fn ports_are_published_on_a_pure_cgroup_v1_host() {
    let d = TestDaemon::start_on_cgroup_v1(&[]);
    d.load_busybox();
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "v1",
        "-p",
        "127.0.0.1::80",
        "busybox",
        "nc",
        "-ll",
        "-p",
        "80",
        "-e",
        "echo",
        "on v1",
    ]);
    let ports = host_port(&d, "v1", "80/tcp");
    assert_eq!(ports.len(), 1, "{ports:?}");
    d.eventually("the published port answers", || {
        ask(ports[0].1).is_ok_and(|s| s == "on v1")
    });
    assert!(
        d.log().contains("mounted one on"),
        "berthd did not say it mounted the v2 hierarchy:\n{}",
        d.log()
    );
}
