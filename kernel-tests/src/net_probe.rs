//! For the network tests and benches: a container joined to a network from a "host"
//! namespace, and traffic between namespaces (a TCP and a UDP echo).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use std::os::fd::AsFd;

use berth_network::{Endpoint, EndpointRequest, Network, NetworkDriver};

use crate::test_netns::TestNetns;

/// Joins the namespace `container` to `network` as `eth0` (default route included), the
/// driver running in `host`.
pub fn join(
    host: &TestNetns,
    driver: &dyn NetworkDriver,
    network: &Network,
    id: &str,
    container: &TestNetns,
) -> berth_network::Result<Endpoint> {
    let file = container.file();
    host.inside(|| {
        driver.join(
            network,
            &EndpointRequest {
                id,
                netns: file.as_fd(),
                ifname: "eth0",
                static_ips: &[],
                default_route: true,
            },
        )
    })
}

/// How long a peer is waited for: a blocked path fails within it instead of hanging.
const PATIENCE: Duration = Duration::from_secs(3);

/// A TCP echo across namespaces: `server` listens on `addr`, `client` connects and checks.
/// An error means the client could not get through.
pub fn tcp_echo(server: &TestNetns, client: &TestNetns, addr: SocketAddr) -> std::io::Result<()> {
    let listener = server.inside(|| TcpListener::bind(addr))?;
    listener.set_nonblocking(true)?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let deadline = Instant::now() + PATIENCE * 2;
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        };
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(PATIENCE))?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        s.write_all(&buf)
    });
    let got = client.inside(|| -> std::io::Result<[u8; 5]> {
        let mut s = TcpStream::connect_timeout(&addr, PATIENCE)?;
        s.set_read_timeout(Some(PATIENCE))?;
        s.write_all(b"hello")?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        Ok(buf)
    });
    let served = echo.join().expect("echo thread");
    let buf = got?;
    served?;
    assert_eq!(&buf, b"hello");
    Ok(())
}

pub fn udp_echo(server: &TestNetns, client: &TestNetns, addr: SocketAddr) {
    let sock = server.inside(|| UdpSocket::bind(addr)).unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        sock.send_to(&buf[..n], from).unwrap();
    });
    let got = client.inside(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(b"ping", addr).unwrap();
        let mut buf = [0u8; 16];
        let n = s.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    });
    echo.join().unwrap();
    assert_eq!(got, b"ping");
}

/// The BPF programs on interface `ifname`'s tc hooks (in the caller's namespace), by name:
/// ingress ones, then egress ones.
pub fn tc_programs(ifname: &str) -> Vec<String> {
    let mut names = Vec::new();
    for hook in ["ingress", "egress"] {
        let out = std::process::Command::new("tc")
            .args(["filter", "show", "dev", ifname, hook])
            .output()
            .expect("tc");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "filter protocol all pref 49152 bpf chain 0 handle 0x1 NAME direct-action …"
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(i) = words.iter().position(|w| *w == "handle") {
                if words.contains(&"bpf") {
                    if let Some(name) = words.get(i + 2) {
                        names.push(name.to_string());
                    }
                }
            }
        }
    }
    names
}

/// The ports of bridge `bridge` (in the caller's namespace): each link's name and whether it
/// has a carrier (a veth's carrier is its peer being up: a container's, not a waiting one's).
pub fn bridge_ports(bridge: &str) -> Vec<(String, bool)> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let name = line.split_whitespace().nth(1)?;
            let name = name.trim_end_matches(':').split('@').next()?.to_string();
            Some((name, !line.contains("NO-CARRIER")))
        })
        .collect()
}
