//! Published ports (`-p [ip:][hostport[-end]:]containerport[/udp]`, `-P`). A connection made
//! on the host to a published port is sent to the container by berth-bpf's cgroup programs
//! (no proxy process, no NAT rule, `127.0.0.1:PORT` included); each host port is reserved with
//! a bound, never-listening socket, so no other program takes it meanwhile and two
//! containers cannot publish the same one ("port is already allocated", as Docker says).
//! Traffic arriving from outside is forwarded by berth's nftables table (one map element per
//! port, see berth-network's `nat`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use std::sync::Arc;

use berth_bpf::ports::{Binding, Protocol, PublishedPorts};
use berth_network::nat::{Nat, PortForward};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One port to publish, as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRequest {
    pub container_port: u16,
    pub udp: bool,
    pub host_ip: Option<Ipv4Addr>,
    /// Host ports to choose from (`(0, 0)`: any free one).
    pub host_ports: (u16, u16),
}

/// A port published for a running container (kept in its record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub container_port: u16,
    pub udp: bool,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
}

impl Published {
    /// `80/tcp`, the key Docker's API uses.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.container_port,
            if self.udp { "udp" } else { "tcp" }
        )
    }
}

fn parse_port_key(key: &str) -> Result<(u16, bool), String> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let udp = match proto {
        "tcp" => false,
        "udp" => true,
        other => {
            return Err(format!(
                "{key}: protocol {other:?} is not supported (tcp, udp)"
            ));
        }
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid container port {port:?} in {key:?}"))?;
    Ok((port, udp))
}

fn parse_host_ports(s: &str) -> Result<(u16, u16), String> {
    if s.is_empty() || s == "0" {
        return Ok((0, 0));
    }
    let one = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid host port {s:?}"))
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if a > b {
                return Err(format!("invalid host port range {s:?}"));
            }
            Ok((a, b))
        }
        None => {
            let p = one(s)?;
            Ok((p, p))
        }
    }
}

/// The ports `HostConfig.PortBindings` asks for, plus every `Config.ExposedPorts` one with
/// `PublishAllPorts` (`-P`, on random host ports).
pub fn requests(config: &Value, host_config: &Value) -> Result<Vec<PortRequest>, String> {
    let mut out = Vec::new();
    if let Some(bindings) = host_config["PortBindings"].as_object() {
        for (key, list) in bindings {
            let (container_port, udp) = parse_port_key(key)?;
            for b in list.as_array().into_iter().flatten() {
                let host_ip = match b["HostIp"].as_str().unwrap_or("") {
                    "" | "0.0.0.0" => None,
                    ip => Some(ip.parse::<Ipv4Addr>().map_err(|_| {
                        format!("invalid host IP {ip:?} for {key} (IPv4 only for now)")
                    })?),
                };
                out.push(PortRequest {
                    container_port,
                    udp,
                    host_ip,
                    host_ports: parse_host_ports(b["HostPort"].as_str().unwrap_or(""))?,
                });
            }
        }
    }
    if host_config["PublishAllPorts"].as_bool() == Some(true) {
        for key in config["ExposedPorts"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            let (container_port, udp) = parse_port_key(key)?;
            if !out
                .iter()
                .any(|r| r.container_port == container_port && r.udp == udp)
            {
                out.push(PortRequest {
                    container_port,
                    udp,
                    host_ip: None,
                    host_ports: (0, 0),
                });
            }
        }
    }
    Ok(out)
}

/// A bound socket on `ip:port` (`port` 0: one the kernel picks), never listening.
fn reserve(udp: bool, ip: Option<Ipv4Addr>, port: u16) -> std::io::Result<(OwnedFd, u16)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, bind, getsockname, socket_with};
    let kind = if udp {
        SocketType::DGRAM
    } else {
        SocketType::STREAM
    };
    // Close-on-exec: a monitor started meanwhile must not hold the port after berthd is gone.
    let fd = socket_with(AddressFamily::INET, kind, SocketFlags::CLOEXEC, None)?;
    let addr = SocketAddrV4::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port);
    bind(&fd, &addr)?;
    let bound = SocketAddrV4::try_from(getsockname(&fd)?).map_or(port, |a| a.port());
    Ok((fd, bound))
}

type Reservation = (Ipv4Addr, Vec<(Published, OwnedFd)>);

pub struct Ports {
    bpf: Option<Mutex<PublishedPorts>>,
    /// Published ports for traffic from outside (prerouting DNAT).
    nat: Option<Arc<Nat>>,
    /// Why ports cannot be published here, if they cannot.
    pub unavailable: Option<String>,
    /// Container id → its address and its reservations.
    reserved: Mutex<BTreeMap<String, Reservation>>,
}

/// Where the cgroup v2 hierarchy's root is mounted: `/sys/fs/cgroup` (pure v2), the hybrid
/// layout's `/sys/fs/cgroup/unified`, or wherever mountinfo shows one.
pub fn cgroup2_root() -> Option<PathBuf> {
    let unified = berth_runtime::cgroups::Layout::detect().ok()?.unified?;
    is_cgroup2(&unified.mountpoint).then_some(unified.mountpoint)
}

/// The cgroup v2 hierarchy's root; on a host that mounts only v1 hierarchies, berthd mounts it
/// at `fallback` (the kernel always has it, and its root holds every process no one moved, as
/// on a hybrid host): published ports work on pure cgroup v1 too.
fn cgroup2_root_or_mount(fallback: &Path) -> Result<PathBuf, String> {
    let layout = berth_runtime::cgroups::Layout::detect()
        .map_err(|e| format!("read this host's cgroup mounts: {e}"))?;
    if let Some(unified) = layout.unified {
        return Ok(unified.mountpoint);
    }
    std::fs::create_dir_all(fallback).map_err(|e| format!("mkdir {}: {e}", fallback.display()))?;
    use rustix::mount::{MountFlags, mount};
    mount(
        "cgroup2",
        fallback,
        "cgroup2",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .map_err(|e| {
        format!(
            "this host mounts no cgroup v2 hierarchy, and mounting one on {} failed: {e}",
            fallback.display()
        )
    })?;
    tracing::info!(
        "no cgroup v2 hierarchy was mounted: mounted one on {} for published ports",
        fallback.display()
    );
    Ok(fallback.to_path_buf())
}

fn is_cgroup2(p: &Path) -> bool {
    rustix::fs::statfs(p).is_ok_and(|s| s.f_type == 0x6367_7270) // CGROUP2_SUPER_MAGIC
}

impl Ports {
    /// The programs from `pin_dir` (on a bpffs), attached to the cgroup v2 root (mounted on
    /// `cgroup2_fallback` where the host has none mounted) unless they are already; without
    /// them ports cannot be published, which is said when one is asked.
    pub fn open(pin_dir: &Path, nat: Option<Arc<Nat>>, cgroup2_fallback: &Path) -> Ports {
        let opened = (|| {
            let root = cgroup2_root_or_mount(cgroup2_fallback)?;
            let mut ports = PublishedPorts::open(pin_dir, &root).map_err(|e| e.to_string())?;
            let _ = ports.set_host_addresses(&host_addresses());
            Ok::<_, String>(ports)
        })();
        match opened {
            Ok(p) => Ports {
                bpf: Some(Mutex::new(p)),
                nat,
                unavailable: None,
                reserved: Default::default(),
            },
            Err(e) => {
                tracing::warn!("published ports are off: {e}");
                Ports {
                    bpf: None,
                    nat,
                    unavailable: Some(e),
                    reserved: Default::default(),
                }
            }
        }
    }

    fn bindings(published: &Published, container_ip: Ipv4Addr) -> Binding {
        Binding {
            protocol: if published.udp {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            host_ip: published.host_ip,
            host_port: published.host_port,
            container_ip,
            container_port: published.container_port,
        }
    }

    /// Reserves host ports for `requests` and sends them to `container_ip`; all or nothing.
    pub fn publish(
        &self,
        id: &str,
        container_ip: Ipv4Addr,
        requests: &[PortRequest],
    ) -> Result<Vec<Published>, String> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let Some(bpf) = &self.bpf else {
            return Err(format!(
                "cannot publish ports: {}",
                self.unavailable.as_deref().unwrap_or("unavailable")
            ));
        };
        let mut held = Vec::new();
        for r in requests {
            let (first, last) = r.host_ports;
            let mut reserved = Err(std::io::Error::from(std::io::ErrorKind::AddrInUse));
            for port in first..=last {
                reserved = reserve(r.udp, r.host_ip, port);
                if reserved.is_ok() {
                    break;
                }
            }
            match reserved {
                Ok((fd, host_port)) => held.push((
                    Published {
                        container_port: r.container_port,
                        udp: r.udp,
                        host_ip: r.host_ip,
                        host_port,
                    },
                    fd,
                )),
                Err(e) => {
                    let ip = r.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
                    let ports = if first == last {
                        first.to_string()
                    } else {
                        format!("{first}-{last}")
                    };
                    return Err(if e.kind() == std::io::ErrorKind::AddrInUse {
                        format!("Bind for {ip}:{ports} failed: port is already allocated")
                    } else {
                        format!("Bind for {ip}:{ports} failed: {e}")
                    });
                }
            }
        }
        let mut maps = bpf.lock().unwrap_or_else(|p| p.into_inner());
        // Networks made since (their gateways) are host addresses too: a connection to one
        // of them on a published port goes to the container as well.
        let _ = maps.set_host_addresses(&host_addresses());
        for (i, (p, _)) in held.iter().enumerate() {
            if let Err(e) = maps.publish(&Self::bindings(p, container_ip)) {
                for (p, _) in &held[..i] {
                    let _ = maps.unpublish(&Self::bindings(p, container_ip));
                }
                return Err(e.to_string());
            }
        }
        drop(maps);
        let list: Vec<Published> = held.iter().map(|(p, _)| p.clone()).collect();
        if let Some(nat) = &self.nat {
            if let Err(e) = nat.publish(&forwards(&list, container_ip)) {
                tracing::warn!("container {id}: ports from outside this host: {e}");
            }
        }
        self.reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), (container_ip, held));
        Ok(list)
    }

    /// Takes a container's ports back (it stopped); nothing published is fine.
    pub fn release(&self, id: &str) {
        let held = self
            .reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let (Some((ip, held)), Some(bpf)) = (held, &self.bpf) else {
            return;
        };
        let mut maps = bpf.lock().unwrap_or_else(|p| p.into_inner());
        for (p, _socket) in &held {
            let _ = maps.unpublish(&Self::bindings(p, ip));
        }
        drop(maps);
        if let Some(nat) = &self.nat {
            let list: Vec<Published> = held.iter().map(|(p, _)| p.clone()).collect();
            let _ = nat.unpublish(&forwards(&list, ip));
        }
    }

    /// A restarted berthd takes the reservations of running containers again (the map
    /// entries lived on in the pinned maps).
    pub fn restore(&self, id: &str, container_ip: Ipv4Addr, published: &[Published]) {
        let mut held = Vec::new();
        for p in published {
            match reserve(p.udp, p.host_ip, p.host_port) {
                Ok((fd, _)) => held.push((p.clone(), fd)),
                Err(e) => tracing::warn!(
                    "container {id}: host port {} taken meanwhile: {e}",
                    p.host_port
                ),
            }
        }
        self.reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), (container_ip, held));
    }
}

/// The nftables forwards of `published` (loopback-only bindings have none: nothing from
/// outside reaches 127.0.0.1).
fn forwards(published: &[Published], container_ip: Ipv4Addr) -> Vec<PortForward> {
    published
        .iter()
        .filter(|p| !p.host_ip.is_some_and(|ip| ip.is_loopback()))
        .map(|p| PortForward {
            udp: p.udp,
            host_ip: p.host_ip,
            host_port: p.host_port,
            container_ip,
            container_port: p.container_port,
        })
        .collect()
}

/// The host's IPv4 addresses outside 127.0.0.0/8 (published ports answer on them too).
fn host_addresses() -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a list we walk read-only and free once.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cur = list;
        while !cur.is_null() {
            let a = (*cur).ifa_addr;
            if !a.is_null() && i32::from((*a).sa_family) == libc::AF_INET {
                let sin = &*(a as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() {
                    out.push(ip);
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn port_requests_as_docker_sends_them() {
        let hc = json!({"PortBindings": {
            "80/tcp": [{"HostIp": "", "HostPort": "8080"}],
            "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
            "9000": [{"HostPort": "9000-9010"}],
        }, "PublishAllPorts": true});
        let config = json!({"ExposedPorts": {"80/tcp": {}, "443/tcp": {}}});
        let mut r = requests(&config, &hc).unwrap();
        r.sort_by_key(|r| r.container_port);
        assert_eq!(
            r,
            vec![
                PortRequest {
                    container_port: 53,
                    udp: true,
                    host_ip: Some(Ipv4Addr::LOCALHOST),
                    host_ports: (0, 0)
                },
                PortRequest {
                    container_port: 80,
                    udp: false,
                    host_ip: None,
                    host_ports: (8080, 8080)
                },
                PortRequest {
                    container_port: 443,
                    udp: false,
                    host_ip: None,
                    host_ports: (0, 0)
                },
                PortRequest {
                    container_port: 9000,
                    udp: false,
                    host_ip: None,
                    host_ports: (9000, 9010)
                },
            ]
        );
        for bad in [
            json!({"PortBindings": {"80/sctp": [{}]}}),
            json!({"PortBindings": {"0/tcp": [{}]}}),
            json!({"PortBindings": {"80/tcp": [{"HostPort": "70000"}]}}),
            json!({"PortBindings": {"80/tcp": [{"HostPort": "90-80"}]}}),
            json!({"PortBindings": {"80/tcp": [{"HostIp": "::1"}]}}),
        ] {
            assert!(requests(&json!({}), &bad).is_err(), "{bad}");
        }
    }
}
