//! A published port, measured end to end. Static, so it runs inside a busybox container as
//! the server (bind-mounted), and on the host (or in a test namespace) as the client.
//!
//!   berth-port-bench serve PORT
//!   berth-port-bench client HOST PORT [--stream-mib N] [--round-trips N] [--connections N]
//!   berth-port-bench dns SERVER:PORT NAME [--queries N]   (A queries, one after the other)
//!   berth-port-bench unpin DIR    (detach and unpin a berthd's published-port programs)
//!
//! The client prints one JSON line: stream throughput (MiB/s, one connection sending N MiB
//! that the server discards and acknowledges), request/response latency (median and p99 µs of
//! N one-byte round trips on one connection), and connections per second (N connect, one
//! round trip, close, one after the other).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn serve(port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    for conn in listener.incoming() {
        let Ok(mut c) = conn else { continue };
        std::thread::spawn(move || {
            let _ = c.set_nodelay(true);
            let mut mode = [0u8; 1];
            if c.read_exact(&mut mode).is_err() {
                return;
            }
            match mode[0] {
                // Stream: discard until the client half-closes, then say how much came.
                b's' => {
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut total: u64 = 0;
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                    }
                    let _ = c.write_all(&total.to_le_bytes());
                }
                // Echo one byte at a time (round trips; a connection test sends one).
                _ => {
                    let mut b = [0u8; 1];
                    while c.read_exact(&mut b).is_ok() {
                        if c.write_all(&b).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn client(
    host: &str,
    port: u16,
    mib: u64,
    round_trips: usize,
    connections: usize,
) -> std::io::Result<()> {
    let addr = (host, port);
    // Stream.
    let mut c = TcpStream::connect(addr)?;
    c.write_all(b"s")?;
    let chunk = vec![0x5au8; 256 * 1024];
    let total = mib * 1024 * 1024;
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min((total - sent) as usize);
        c.write_all(&chunk[..n])?;
        sent += n as u64;
    }
    c.shutdown(std::net::Shutdown::Write)?;
    let mut ack = [0u8; 8];
    c.read_exact(&mut ack)?;
    let stream_s = start.elapsed().as_secs_f64();
    if u64::from_le_bytes(ack) != total {
        return Err(std::io::Error::other("the server counted another total"));
    }

    // Round trips.
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    c.write_all(b"e")?;
    let mut times = Vec::with_capacity(round_trips);
    let mut b = [0u8; 1];
    for _ in 0..round_trips {
        let t = Instant::now();
        c.write_all(b"x")?;
        c.read_exact(&mut b)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(c);
    times.sort_by(f64::total_cmp);

    // Connections.
    let start = Instant::now();
    for _ in 0..connections {
        let mut c = TcpStream::connect(addr)?;
        c.set_nodelay(true)?;
        c.write_all(b"ex")?;
        c.read_exact(&mut b)?;
    }
    let conn_s = start.elapsed().as_secs_f64();

    println!(
        "{{\"stream_mib_s\": {:.1}, \"rr_median_us\": {:.1}, \"rr_p99_us\": {:.1}, \"connections_s\": {:.0}}}",
        mib as f64 / stream_s,
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        connections as f64 / conn_s
    );
    Ok(())
}

/// One A query for `name` with id `id`, by hand (header, question).
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    q
}

/// Median and p99 latency (µs) of `n` queries, and how many answered with an address.
fn dns(server: &str, name: &str, n: usize) -> std::io::Result<()> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(server)?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut times = Vec::with_capacity(n);
    let mut answered = 0;
    let mut buf = [0u8; 1500];
    for i in 0..n {
        let q = dns_query(i as u16, name);
        let t = Instant::now();
        sock.send(&q)?;
        let got = sock.recv(&mut buf)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        // ANCOUNT > 0 and the id matches.
        if got >= 12 && buf[..2] == q[..2] && u16::from_be_bytes([buf[6], buf[7]]) > 0 {
            answered += 1;
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"dns_median_us\": {:.1}, \"dns_p99_us\": {:.1}, \"answered\": {answered}, \"queries\": {n}}}",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let result = match args.get(1).map(String::as_str) {
        Some("serve") => match args.get(2).and_then(|p| p.parse().ok()) {
            Some(port) => serve(port),
            None => Err(std::io::Error::other("usage: serve PORT")),
        },
        Some("dns") => match (args.get(2), args.get(3)) {
            (Some(server), Some(name)) => dns(server, name, flag("--queries", 5000) as usize),
            _ => Err(std::io::Error::other(
                "usage: dns SERVER:PORT NAME [--queries N]",
            )),
        },
        Some("unpin") => match (args.get(2), berth_daemon::ports::cgroup2_root()) {
            (Some(dir), Some(root)) => {
                berth_bpf::ports::remove_pinned(std::path::Path::new(dir), &root)
                    .map_err(std::io::Error::other)
            }
            _ => Err(std::io::Error::other(
                "usage: unpin DIR (on a host with cgroup v2)",
            )),
        },
        Some("client") => match (args.get(2), args.get(3).and_then(|p| p.parse().ok())) {
            (Some(host), Some(port)) => {
                // Wait for the server (a container that just started).
                let deadline = Instant::now() + Duration::from_secs(10);
                while TcpStream::connect((host.as_str(), port)).is_err()
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                client(
                    host,
                    port,
                    flag("--stream-mib", 1024),
                    flag("--round-trips", 10000) as usize,
                    flag("--connections", 2000) as usize,
                )
            }
            _ => Err(std::io::Error::other("usage: client HOST PORT [...]")),
        },
        _ => Err(std::io::Error::other(
            "usage: berth-port-bench serve PORT | client HOST PORT [--stream-mib N] [--round-trips N] [--connections N]",
        )),
    };
    if let Err(e) = result {
        eprintln!("berth-port-bench: {e}");
        std::process::exit(1);
    }
}
