//! Outbound NAT and published ports for traffic arriving from outside, in one nftables table
//! of berth's (`ip <table>`):
//!
//! - `subnets`: the container subnets; one `masquerade` rule covers them all (traffic leaving
//!   them for anywhere but another container subnet), and one more the hairpin case: a
//!   container reaching a published port through a host address, sent back to a container
//!   (without it the answer would come straight from the other container's address);
//! - `ports_tcp`, `ports_udp` (host port → container address . port) and `ports_tcp_addr`,
//!   `ports_udp_addr` (host address . port → …): `dnat` in prerouting for packets to a local
//!   address. Connections made on the host itself never pass prerouting; berth-bpf's cgroup
//!   programs take those.
//!
//! - `forward`: when berth turned IPv4 forwarding on, only traffic from or to the container
//!   subnets is forwarded ([`Nat::install`]).
//!
//! The rules are written once; containers and networks are set and map elements only, so the
//! rule count never grows with them. Changes go through Debian's `nft` (`nft -f -`), one
//! transaction per call.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use crate::error::{Error, Result};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Whether the host forwards IPv4 (containers on a bridge reach out, and are reached from
/// outside, through the host's routing).
pub fn ip_forward() -> Result<bool> {
    let text = std::fs::read_to_string(IP_FORWARD)
        .map_err(|e| Error::Invalid(format!("{IP_FORWARD}: {e}")))?;
    Ok(text.trim() != "0")
}

/// Turns IPv4 forwarding on (dockerd does too, unless `--ip-forward=false`).
pub fn enable_ip_forward() -> Result<()> {
    std::fs::write(IP_FORWARD, "1").map_err(|e| Error::Invalid(format!("{IP_FORWARD}: {e}")))
}

/// One published port, as the table keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortForward {
    pub udp: bool,
    /// `None`: every local address.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

impl PortForward {
    fn map(&self) -> String {
        let proto = if self.udp { "udp" } else { "tcp" };
        match self.host_ip {
            Some(_) => format!("ports_{proto}_addr"),
            None => format!("ports_{proto}"),
        }
    }

    fn key(&self) -> String {
        match self.host_ip {
            Some(ip) => format!("{ip} . {}", self.host_port),
            None => self.host_port.to_string(),
        }
    }
}

pub struct Nat {
    table: String,
}

fn valid_table_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
}

impl Nat {
    /// The table `table` (created, with its rules, by [`Nat::install`]).
    pub fn new(table: &str) -> Result<Nat> {
        if !valid_table_name(table) {
            return Err(Error::Invalid(format!(
                "nftables table name {table:?}: letters, digits, '_' and '-', at most 32"
            )));
        }
        Ok(Nat {
            table: table.to_string(),
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn run(&self, script: &str) -> Result<()> {
        let failed = |e: String| Error::Invalid(format!("nftables table {}: {e}", self.table));
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("nft (Debian package nftables): {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| failed(e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| failed(e.to_string()))?;
        if !out.status.success() {
            return Err(failed(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(())
    }

    /// Creates the table, its sets and maps (kept if there), and (re)writes its rules. With
    /// `guard_forwarding` (berth turned IPv4 forwarding on itself), forwarded packets that
    /// neither come from nor go to a container subnet are dropped, so the host routes for its
    /// containers and not between its other interfaces (what dockerd's DROP policy on the
    /// FORWARD chain does; here in berth's own table).
    pub fn install(&self, guard_forwarding: bool) -> Result<()> {
        let t = &self.table;
        let guard = if guard_forwarding {
            format!(
                "add rule ip {t} forward ip saddr @subnets accept
add rule ip {t} forward ip daddr @subnets accept
add rule ip {t} forward drop
"
            )
        } else {
            String::new()
        };
        self.run(&format!(
            "add table ip {t}
add set ip {t} subnets {{ type ipv4_addr; flags interval; }}
add map ip {t} ports_tcp {{ type inet_service : ipv4_addr . inet_service; }}
add map ip {t} ports_udp {{ type inet_service : ipv4_addr . inet_service; }}
add map ip {t} ports_tcp_addr {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; }}
add map ip {t} ports_udp_addr {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; }}
add chain ip {t} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}
add chain ip {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}
add chain ip {t} forward {{ type filter hook forward priority filter; policy accept; }}
flush chain ip {t} prerouting
flush chain ip {t} postrouting
flush chain ip {t} forward
add rule ip {t} prerouting fib daddr type local dnat ip to ip daddr . tcp dport map @ports_tcp_addr
add rule ip {t} prerouting fib daddr type local dnat ip to ip daddr . udp dport map @ports_udp_addr
add rule ip {t} prerouting fib daddr type local dnat ip to tcp dport map @ports_tcp
add rule ip {t} prerouting fib daddr type local dnat ip to udp dport map @ports_udp
add rule ip {t} postrouting ip saddr @subnets ip daddr != @subnets masquerade
add rule ip {t} postrouting ct status dnat ip saddr @subnets masquerade
{guard}"
        ))
    }

    /// Masquerades what `subnet` sends out (a network was made).
    pub fn add_subnet(&self, subnet: Ipv4Net) -> Result<()> {
        self.run(&format!(
            "add element ip {} subnets {{ {subnet} }}\n",
            self.table
        ))
    }

    /// A network is gone; absent already is fine.
    pub fn remove_subnet(&self, subnet: Ipv4Net) -> Result<()> {
        match self.run(&format!(
            "delete element ip {} subnets {{ {subnet} }}\n",
            self.table
        )) {
            Err(Error::Invalid(m)) if m.contains("No such file") || m.contains("not exist") => {
                Ok(())
            }
            other => other,
        }
    }

    /// Forwards `ports` (one transaction).
    pub fn publish(&self, ports: &[PortForward]) -> Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        let mut script = String::new();
        for p in ports {
            script.push_str(&format!(
                "add element ip {} {} {{ {} : {} . {} }}\n",
                self.table,
                p.map(),
                p.key(),
                p.container_ip,
                p.container_port
            ));
        }
        self.run(&script)
    }

    /// Stops forwarding `ports`; each that is not there is skipped.
    pub fn unpublish(&self, ports: &[PortForward]) -> Result<()> {
        for p in ports {
            let _ = self.run(&format!(
                "delete element ip {} {} {{ {} }}\n",
                self.table,
                p.map(),
                p.key()
            ));
        }
        Ok(())
    }

    /// Removes the table and everything in it (an engine that goes away for good; tests).
    pub fn delete(&self) -> Result<()> {
        self.run(&format!("delete table ip {}\n", self.table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked() {
        assert!(Nat::new("berth").is_ok());
        assert!(Nat::new("bt123_4").is_ok());
        for bad in ["", "1abc", "a b", "x;flush ruleset", &"a".repeat(33)] {
            assert!(Nat::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn forwards_name_their_map_and_key() {
        let any = PortForward {
            udp: false,
            host_ip: None,
            host_port: 8080,
            container_ip: Ipv4Addr::new(172, 17, 0, 2),
            container_port: 80,
        };
        assert_eq!((any.map(), any.key()), ("ports_tcp".into(), "8080".into()));
        let one = PortForward {
            udp: true,
            host_ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
            ..any
        };
        assert_eq!(
            (one.map(), one.key()),
            ("ports_udp_addr".into(), "10.0.0.1 . 8080".into())
        );
    }
}
