//! The published-ports programs on their own: a host connection to 127.0.0.1:P lands on the
//! target, TCP and UDP (replies shown from the address asked), sockets in other network
//! namespaces are left alone, the programs outlive the process that attached them (pins), and
//! removing the pins takes everything off.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;

use berth_bpf::ports::{Binding, Protocol, PublishedPorts, ensure_bpffs, remove_pinned};
use berth_kernel_tests::harness::free_port;
use berth_kernel_tests::test_netns::TestNetns;

const CGROUP2: &str = "/sys/fs/cgroup/unified";

fn cgroup2_root() -> &'static Path {
    if Path::new(CGROUP2).join("cgroup.procs").exists() {
        Path::new(CGROUP2)
    } else {
        Path::new("/sys/fs/cgroup")
    }
}

/// A bpffs of this test's own, unmounted (and the programs detached) at the end.
struct Pins {
    dir: tempfile::TempDir,
}

impl Pins {
    fn new() -> Pins {
        let dir = tempfile::tempdir().unwrap();
        ensure_bpffs(dir.path()).expect("mount a bpffs");
        Pins { dir }
    }
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("ports")
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = remove_pinned(&self.path(), cgroup2_root());
        let _ = rustix::mount::unmount(self.dir.path(), rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn host_connections_to_a_published_port_reach_the_target() {
    let pins = Pins::new();
    // The "container": listeners on another loopback address.
    let target_ip = Ipv4Addr::new(127, 0, 0, 2);
    let tcp = TcpListener::bind((target_ip, 0)).unwrap();
    let udp = UdpSocket::bind((target_ip, 0)).unwrap();
    let (tcp_port, udp_port) = (
        tcp.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
    );
    let published = free_port();
    let mut ports = PublishedPorts::open(&pins.path(), cgroup2_root()).expect("open");
    for (protocol, container_port) in [(Protocol::Tcp, tcp_port), (Protocol::Udp, udp_port)] {
        ports
            .publish(&Binding {
                protocol,
                host_ip: None,
                host_port: published,
                container_ip: target_ip,
                container_port,
            })
            .unwrap();
    }

    // TCP: connect to 127.0.0.1:published, served by the target; the peer is what was asked.
    let server = std::thread::spawn(move || {
        let (mut s, _) = tcp.accept().unwrap();
        s.write_all(b"from the target").unwrap();
    });
    let mut c = TcpStream::connect(("127.0.0.1", published)).expect("connect");
    assert_eq!(
        c.peer_addr().unwrap(),
        (Ipv4Addr::LOCALHOST, published).into()
    );
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    assert_eq!(got, "from the target");
    server.join().unwrap();

    // UDP, unconnected: the reply comes from 127.0.0.1:published as far as the client sees.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"ping", ("127.0.0.1", published)).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    udp.send_to(b"pong", from).unwrap();
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(
        (&buf[..n], from),
        (&b"pong"[..], (Ipv4Addr::LOCALHOST, published).into())
    );

    // Inside another network namespace, 127.0.0.1:published is that namespace's own.
    let ns = TestNetns::create();
    ns.ip(&["link", "set", "lo", "up"]);
    let refused = ns.inside(|| TcpStream::connect(("127.0.0.1", published)).is_err());
    assert!(refused, "a container's own loopback was redirected");

    // A second open (a restarted daemon) attaches nothing new and sees the same map.
    drop(ports);
    let mut again = PublishedPorts::open(&pins.path(), cgroup2_root()).expect("reopen");
    assert_eq!(again.count().unwrap(), 2);

    // Removed: connections go where they are addressed again.
    drop(again);
    remove_pinned(&pins.path(), cgroup2_root()).unwrap();
    assert!(
        TcpStream::connect(("127.0.0.1", published)).is_err(),
        "still redirected after removal"
    );
    assert_eq!(std::fs::read_dir(pins.path()).unwrap().count(), 0);
}
