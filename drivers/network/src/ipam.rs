//! Address management: the subnets of each network and the addresses handed out in them.
//!
//! One JSON file per network under the IPAM directory, replaced atomically (temp, fsync,
//! rename, fsync dir) under an exclusive `flock` of the directory's lock file before a call
//! returns: an address that was handed out is on disk, so a daemon killed at any point never
//! hands it out twice. Addresses are keyed by owner (an endpoint id), so asking again for the
//! same owner (a retry after a crash) returns the same address.
//!
//! Subnets come from the request, or from a default pool (Docker's: 172.17–31.0.0/16, then
//! 192.168.0.0/16 in /20s; IPv6 /64s of a ULA /48), skipping every subnet routed on the host
//! and every subnet another network holds. Addresses are handed out in order after the last
//! one given (as Docker does), so a released address is not reused at once while peers may
//! still have it in their neighbour caches.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a network asks for in one address family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubnetRequest {
    /// The subnet; `None` picks one from the default pool of `family`.
    pub subnet: Option<IpNet>,
    /// The gateway; `None` is the subnet's first address.
    pub gateway: Option<IpAddr>,
    /// Addresses for endpoints come from this part of the subnet only.
    pub ip_range: Option<IpNet>,
    /// For a `None` subnet: IPv6 rather than IPv4.
    pub ipv6: bool,
}

/// A subnet of a network, as allocated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub subnet: IpNet,
    pub gateway: IpAddr,
    #[serde(default)]
    pub ip_range: Option<IpNet>,
    /// Owner → address.
    #[serde(default)]
    allocated: BTreeMap<String, IpAddr>,
    /// The last address handed out; the next search starts after it.
    #[serde(default)]
    last: Option<IpAddr>,
}

impl Subnet {
    pub fn is_ipv6(&self) -> bool {
        matches!(self.subnet, IpNet::V6(_))
    }

    /// The addresses handed out, by owner.
    pub fn allocated(&self) -> &BTreeMap<String, IpAddr> {
        &self.allocated
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct NetworkRecord {
    subnets: Vec<Subnet>,
}

/// The IPAM store of a daemon (or a test): a directory.
pub struct Ipam {
    dir: PathBuf,
}

/// The lock held while a network's record is read, changed and written.
struct Locked {
    _lock: File,
}

impl Ipam {
    pub fn open(dir: &Path) -> Result<Ipam> {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        Ok(Ipam {
            dir: dir.to_path_buf(),
        })
    }

    fn lock(&self) -> Result<Locked> {
        let path = self.dir.join(".lock");
        let file =
            File::create(&path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io(format!("lock {}", path.display()), e.into()))?;
        Ok(Locked { _lock: file })
    }

    fn path(&self, network: &str) -> Result<PathBuf> {
        if network.is_empty()
            || network.len() > 128
            || !network
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || network.starts_with('.')
        {
            return Err(Error::Invalid(format!(
                "network id {network:?}: 1 to 128 of [A-Za-z0-9_.-], not starting with '.'"
            )));
        }
        Ok(self.dir.join(format!("{network}.json")))
    }

    fn read(&self, network: &str) -> Result<Option<NetworkRecord>> {
        let path = self.path(network)?;
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::Invalid(format!("{}: not an IPAM record: {e}", path.display()))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    fn write(&self, network: &str, record: &NetworkRecord, _locked: &Locked) -> Result<()> {
        let path = self.path(network)?;
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::Invalid(format!("encode the IPAM record: {e}")))?;
        write_atomic(&path, &bytes)
    }

    /// Every subnet some network holds.
    fn all_subnets(&self) -> Result<Vec<IpNet>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("read {}", self.dir.display()), e))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(network) = name.strip_suffix(".json") {
                if let Some(r) = self.read(network)? {
                    out.extend(r.subnets.iter().map(|s| s.subnet));
                }
            }
        }
        Ok(out)
    }

    /// Makes the subnets of `network` (one per request), none overlapping a subnet in
    /// `routed` (the host's routes) or held by another network.
    pub fn create(
        &self,
        network: &str,
        requests: &[SubnetRequest],
        routed: &[IpNet],
    ) -> Result<Vec<Subnet>> {
        let locked = self.lock()?;
        if self.read(network)?.is_some() {
            return Err(Error::Exists(format!(
                "network {network:?} has subnets already"
            )));
        }
        let mut taken = self.all_subnets()?;
        let mut subnets = Vec::new();
        for req in requests {
            let subnet = match req.subnet {
                Some(s) => {
                    let s = s.trunc();
                    if let Some(t) = taken.iter().find(|t| overlaps(t, &s)) {
                        return Err(Error::Conflict(format!(
                            "subnet {s} overlaps {t}, which another network has"
                        )));
                    }
                    s
                }
                None => default_subnet(req.ipv6, routed, &taken)?,
            };
            if subnet.prefix_len() + 1 >= subnet.max_prefix_len() {
                return Err(Error::Invalid(format!(
                    "subnet {subnet} has no room for a gateway and an endpoint"
                )));
            }
            let gateway = match req.gateway {
                Some(g) if !subnet.contains(&g) => {
                    return Err(Error::Invalid(format!(
                        "gateway {g} is not in subnet {subnet}"
                    )));
                }
                Some(g) => g,
                None => nth(&subnet, 1).ok_or_else(|| {
                    Error::Invalid(format!("subnet {subnet} has no first address"))
                })?,
            };
            if let Some(r) = req.ip_range {
                if !(subnet.contains(&r.network()) && subnet.contains(&r.broadcast())) {
                    return Err(Error::Invalid(format!(
                        "ip-range {r} is not inside subnet {subnet}"
                    )));
                }
            }
            taken.push(subnet);
            subnets.push(Subnet {
                subnet,
                gateway,
                ip_range: req.ip_range,
                allocated: BTreeMap::new(),
                last: None,
            });
        }
        let record = NetworkRecord { subnets };
        self.write(network, &record, &locked)?;
        Ok(record.subnets)
    }

    pub fn subnets(&self, network: &str) -> Result<Vec<Subnet>> {
        Ok(self
            .read(network)?
            .ok_or_else(|| Error::NotFound(format!("network {network:?}")))?
            .subnets)
    }

    /// An address for `owner` in each of the network's subnets (`fixed`: the owner's static
    /// addresses, which must be inside a subnet and free). The same owner asking again gets
    /// the same addresses.
    pub fn allocate(&self, network: &str, owner: &str, fixed: &[IpAddr]) -> Result<Vec<IpAddr>> {
        let locked = self.lock()?;
        let mut record = self
            .read(network)?
            .ok_or_else(|| Error::NotFound(format!("network {network:?}")))?;
        for ip in fixed {
            if !record.subnets.iter().any(|s| s.subnet.contains(ip)) {
                return Err(Error::Invalid(format!(
                    "address {ip} is in none of network {network:?}'s subnets"
                )));
            }
        }
        let mut given = Vec::new();
        for s in &mut record.subnets {
            if let Some(ip) = s.allocated.get(owner) {
                given.push(*ip);
                continue;
            }
            let dynamic = !fixed.iter().any(|ip| s.subnet.contains(ip));
            let ip = match fixed.iter().find(|ip| s.subnet.contains(*ip)) {
                Some(ip) => {
                    if *ip == s.gateway || !usable(&s.subnet, *ip) {
                        return Err(Error::Invalid(format!(
                            "address {ip} is the gateway, network or broadcast address of {}",
                            s.subnet
                        )));
                    }
                    if let Some((other, _)) = s.allocated.iter().find(|(_, a)| *a == ip) {
                        return Err(Error::Conflict(format!("address {ip} is taken by {other}")));
                    }
                    *ip
                }
                None => next_free(s).ok_or_else(|| {
                    Error::Exhausted(format!(
                        "network {network:?}: no address left in {}",
                        s.ip_range.unwrap_or(s.subnet)
                    ))
                })?,
            };
            s.allocated.insert(owner.to_string(), ip);
            // Static addresses leave the search where it was.
            if dynamic {
                s.last = Some(ip);
            }
            given.push(ip);
        }
        self.write(network, &record, &locked)?;
        Ok(given)
    }

    /// Gives `owner`'s addresses back (nothing to give back is fine).
    pub fn release(&self, network: &str, owner: &str) -> Result<()> {
        let locked = self.lock()?;
        let Some(mut record) = self.read(network)? else {
            return Ok(());
        };
        let mut changed = false;
        for s in &mut record.subnets {
            changed |= s.allocated.remove(owner).is_some();
        }
        if changed {
            self.write(network, &record, &locked)?;
        }
        Ok(())
    }

    /// Forgets the network (its endpoints must be gone: addresses still handed out refuse it).
    pub fn delete(&self, network: &str) -> Result<()> {
        let _locked = self.lock()?;
        let Some(record) = self.read(network)? else {
            return Ok(());
        };
        let owners: Vec<&String> = record
            .subnets
            .iter()
            .flat_map(|s| s.allocated.keys())
            .collect();
        if !owners.is_empty() {
            return Err(Error::Conflict(format!(
                "network {network:?} still has endpoints: {owners:?}"
            )));
        }
        let path = self.path(network)?;
        fs::remove_file(&path).map_err(|e| Error::io(format!("remove {}", path.display()), e))
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The `n`th address of a subnet.
fn nth(net: &IpNet, n: u128) -> Option<IpAddr> {
    match net {
        IpNet::V4(v4) => {
            let base = u32::from(v4.network()) as u128;
            let a = base.checked_add(n)?;
            (a <= u32::from(v4.broadcast()) as u128).then(|| IpAddr::V4(Ipv4Addr::from(a as u32)))
        }
        IpNet::V6(v6) => {
            let base = u128::from(v6.network());
            let a = base.checked_add(n)?;
            (a <= u128::from(v6.broadcast())).then(|| IpAddr::V6(Ipv6Addr::from(a)))
        }
    }
}

fn as_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Neither the subnet's network address nor (IPv4) its broadcast address.
fn usable(subnet: &IpNet, ip: IpAddr) -> bool {
    if ip == subnet.network() {
        return false;
    }
    !(ip.is_ipv4() && subnet.prefix_len() < 31 && ip == subnet.broadcast())
}

/// The next free address after the last one handed out, wrapping around once.
fn next_free(s: &Subnet) -> Option<IpAddr> {
    let range = s.ip_range.unwrap_or(s.subnet);
    let first = as_u128(range.network());
    let last = as_u128(range.broadcast());
    let size = last - first + 1;
    let start = s
        .last
        .filter(|l| range.contains(l))
        .map(|l| as_u128(l) - first + 1)
        .unwrap_or(0);
    let taken: std::collections::HashSet<IpAddr> = s.allocated.values().copied().collect();
    // Every miss is a distinct taken or reserved address (network, broadcast, gateway), so a
    // free one turns up within that many steps if there is one: no walk over a whole /8.
    let steps = size.min(taken.len() as u128 + 4);
    (0..steps)
        .filter_map(|k| nth(&range, (start + k) % size))
        .find(|ip| usable(&s.subnet, *ip) && *ip != s.gateway && !taken.contains(ip))
}

/// Docker's default address pools: 172.17.0.0/16 … 172.31.0.0/16, then 192.168.0.0/16 cut into
/// /20s; IPv6: /64s of a ULA /48.
fn default_candidates(ipv6: bool) -> Box<dyn Iterator<Item = IpNet>> {
    if ipv6 {
        let base = u128::from(Ipv6Addr::new(0xfd62, 0xb3e7, 0x4a1c, 0, 0, 0, 0, 0));
        Box::new((0u128..65536).filter_map(move |i| {
            Ipv6Net::new(Ipv6Addr::from(base + (i << 64)), 64)
                .ok()
                .map(IpNet::V6)
        }))
    } else {
        let b172 = (17u8..=31).filter_map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).ok());
        let b192 =
            (0u8..16).filter_map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).ok());
        Box::new(b172.chain(b192).map(IpNet::V4))
    }
}

fn default_subnet(ipv6: bool, routed: &[IpNet], taken: &[IpNet]) -> Result<IpNet> {
    default_candidates(ipv6)
        .find(|c| {
            !routed
                .iter()
                .chain(taken)
                // A default route is not a subnet in use.
                .filter(|r| r.prefix_len() > 0)
                .any(|r| overlaps(r, c))
        })
        .ok_or_else(|| {
            Error::Exhausted(
                "every subnet of the default pools is routed on this host or taken; give one"
                    .into(),
            )
        })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let err = |op: &str, p: &Path, e: io::Error| Error::io(format!("{op} {}", p.display()), e);
    let mut f = File::create(&tmp).map_err(|e| err("create", &tmp, e))?;
    f.write_all(bytes).map_err(|e| err("write", &tmp, e))?;
    f.sync_all().map_err(|e| err("sync", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| err("rename", path, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err("sync", dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn v4() -> SubnetRequest {
        SubnetRequest::default()
    }

    #[test]
    fn default_subnets_skip_routed_and_taken_ones() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path()).unwrap();
        let routed = [net("0.0.0.0/0"), net("172.17.5.0/24"), net("172.18.0.0/15")];
        let a = ipam.create("a", &[v4()], &routed).unwrap();
        assert_eq!(a[0].subnet, net("172.20.0.0/16"));
        assert_eq!(a[0].gateway, ip("172.20.0.1"));
        let b = ipam.create("b", &[v4()], &routed).unwrap();
        assert_eq!(b[0].subnet, net("172.21.0.0/16"));
        // A subnet given that overlaps another network's is refused.
        let e = ipam
            .create(
                "c",
                &[SubnetRequest {
                    subnet: Some(net("172.21.3.0/24")),
                    ..v4()
                }],
                &routed,
            )
            .unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        assert!(ipam.subnets("c").is_err(), "nothing recorded");
        let v6 = ipam
            .create("d", &[SubnetRequest { ipv6: true, ..v4() }], &routed)
            .unwrap();
        assert_eq!(v6[0].subnet.prefix_len(), 64);
        assert!(v6[0].is_ipv6());
    }

    #[test]
    fn addresses_are_handed_out_once_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path()).unwrap();
        ipam.create(
            "n",
            &[
                SubnetRequest {
                    subnet: Some(net("10.9.0.0/29")),
                    ..v4()
                },
                SubnetRequest {
                    subnet: Some(net("fd00:9::/120")),
                    ipv6: true,
                    ..v4()
                },
            ],
            &[],
        )
        .unwrap();
        let a = ipam.allocate("n", "a", &[]).unwrap();
        assert_eq!(a, [ip("10.9.0.2"), ip("fd00:9::2")]);
        // The same owner again (a retry): the same addresses.
        assert_eq!(ipam.allocate("n", "a", &[]).unwrap(), a);
        let b = ipam.allocate("n", "b", &[]).unwrap();
        assert_eq!(b[0], ip("10.9.0.3"));
        // Released addresses are not reused at once.
        ipam.release("n", "a").unwrap();
        assert_eq!(ipam.allocate("n", "c", &[]).unwrap()[0], ip("10.9.0.4"));
        // A static address: inside, free, not the gateway.
        assert_eq!(
            ipam.allocate("n", "d", &[ip("10.9.0.6")]).unwrap()[0],
            ip("10.9.0.6")
        );
        for (owner, bad) in [
            ("e", "10.9.0.6"),
            ("f", "10.9.0.1"),
            ("g", "10.9.1.1"),
            ("h", "10.9.0.7"),
        ] {
            assert!(ipam.allocate("n", owner, &[ip(bad)]).is_err(), "{bad}");
        }
        // 10.9.0.0/29: .2 .. .6 usable; .2 (released) and .5 left.
        assert_eq!(ipam.allocate("n", "i", &[]).unwrap()[0], ip("10.9.0.5"));
        assert_eq!(ipam.allocate("n", "j", &[]).unwrap()[0], ip("10.9.0.2"));
        let e = ipam.allocate("n", "k", &[]).unwrap_err();
        assert!(matches!(e, Error::Exhausted(_)), "{e}");
        // Deleting needs every endpoint gone.
        assert!(ipam.delete("n").is_err());
        for o in ["b", "c", "d", "i", "j"] {
            ipam.release("n", o).unwrap();
        }
        ipam.delete("n").unwrap();
        assert!(ipam.subnets("n").is_err());
    }

    #[test]
    fn ip_ranges_and_gateways_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path()).unwrap();
        let bad_gw = SubnetRequest {
            subnet: Some(net("10.8.0.0/24")),
            gateway: Some(ip("10.9.0.1")),
            ..v4()
        };
        assert!(ipam.create("x", &[bad_gw], &[]).is_err());
        let ranged = SubnetRequest {
            subnet: Some(net("10.8.0.0/24")),
            gateway: Some(ip("10.8.0.254")),
            ip_range: Some(net("10.8.0.128/25")),
            ..v4()
        };
        ipam.create("x", &[ranged], &[]).unwrap();
        assert_eq!(ipam.allocate("x", "a", &[]).unwrap()[0], ip("10.8.0.128"));
        for name in ["", "../x", ".hidden", "a/b"] {
            assert!(ipam.create(name, &[v4()], &[]).is_err(), "{name:?}");
        }
    }

    #[test]
    fn allocations_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ipam = Ipam::open(dir.path()).unwrap();
            ipam.create("n", &[v4()], &[]).unwrap();
            ipam.allocate("n", "a", &[]).unwrap();
        }
        let ipam = Ipam::open(dir.path()).unwrap();
        let b = ipam.allocate("n", "b", &[]).unwrap();
        assert_eq!(b[0], ip("172.17.0.3"));
        assert_eq!(ipam.subnets("n").unwrap()[0].allocated().len(), 2);
    }
}
