//! berth's container datapath: the tc programs of `programs/datapath.bpf.c` (compiled by
//! clang at build time) and their loader, on aya.
//!
//! One [`Datapath`] per host: its programs go on the host end of each container's veth (tc
//! ingress: what the container sends; egress: what it is sent through the bridge), and all
//! per-container state is map entries: which network a port belongs to, each container's
//! address, each network's subnets, and per-container counters. Same-network IPv4 traffic
//! goes from one veth to the other with `bpf_redirect_peer`, skipping the bridge and the host
//! stack; traffic towards another network's containers or subnets is dropped.
//!
//! The programs attach through tcx links where the kernel has them (6.6+), which are program
//! attachments rather than tc filters: nothing grows in a rule list per container.

use std::collections::HashMap;
use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::{SchedClassifier, TcAttachType, tc};

/// The datapath's error, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("datapath: {what}: {message}")]
pub struct Error {
    pub what: String,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

fn err(what: impl Into<String>) -> impl FnOnce(&dyn std::fmt::Display) -> Error {
    let what = what.into();
    move |e| Error {
        what,
        message: e.to_string(),
    }
}

macro_rules! ctx {
    ($e:expr, $($what:tt)*) => {
        $e.map_err(|e| err(format!($($what)*))(&e))
    };
}

pub mod ports;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct EndpointValue {
    ifindex: u32,
    network: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PortValue {
    network: u32,
    pad: u32,
}

/// What a container sent and was sent, as the datapath saw it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Packets dropped for going to another network.
    pub dropped: u64,
}

// SAFETY: plain `repr(C)` integers without padding, the layouts the C program declares.
unsafe impl aya::Pod for EndpointValue {}
// SAFETY: as above.
unsafe impl aya::Pod for PortValue {}
// SAFETY: as above.
unsafe impl aya::Pod for Counters {}

const PROGRAMS: [(&str, TcAttachType); 2] = [
    ("from_container", TcAttachType::Ingress),
    ("to_container", TcAttachType::Egress),
];

/// The loaded programs and maps. Attach and detach from a thread in the host's network
/// namespace (interface names are looked up there).
pub struct Datapath {
    ebpf: aya::Ebpf,
    /// Host veth ifindex → the links made for it, and the container's address.
    ports: HashMap<u32, Port>,
    /// Where maps and links are pinned ([`Datapath::load_pinned`]).
    pin_dir: Option<PathBuf>,
}

struct Port {
    links: Vec<PortLink>,
    addresses: Vec<IpAddr>,
}

/// A program on a port: owned by this process, or pinned (it outlives the process).
enum PortLink {
    Owned(usize, aya::programs::tc::SchedClassifierLinkId),
    Pinned(aya::programs::links::PinnedLink),
}

/// An IPv4 address as the maps key it (network byte order).
fn v4_key(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// `<pin dir>/links/<ifindex>-<program>`.
fn link_pin(dir: &Path, index: u32, program: &str) -> PathBuf {
    dir.join("links").join(format!("{index}-{program}"))
}

/// Whether an interface with this index exists (in the caller's namespace).
fn ifindex_exists(index: u32) -> bool {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: a buffer of IF_NAMESIZE bytes, as the call requires.
    !unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) }.is_null()
}

fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name).map_err(|e| err(format!("interface {name:?}"))(&e))?;
    // SAFETY: a NUL-terminated string that lives across the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(err(format!("interface {name}"))(
            &std::io::Error::last_os_error(),
        ));
    }
    Ok(index)
}

fn classifier<'a>(ebpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| err(format!("program {name}"))(&"not in the object"))?;
    ctx!(program.try_into(), "program {name}")
}

/// The datapath object, loaded by `loader`, with both programs loaded into the kernel.
fn load_programs(loader: &mut aya::EbpfLoader, object: &[u8]) -> Result<aya::Ebpf> {
    let mut ebpf = ctx!(loader.load(object), "load the datapath object")?;
    for (name, _) in PROGRAMS {
        let program = classifier(&mut ebpf, name)?;
        ctx!(program.load(), "load program {name}")?;
    }
    Ok(ebpf)
}

impl Datapath {
    /// Loads the programs into the kernel (nothing is attached yet).
    pub fn load() -> Result<Datapath> {
        let ebpf = load_programs(
            &mut aya::EbpfLoader::new(),
            aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/datapath.o")),
        )?;
        Ok(Datapath {
            ebpf,
            ports: HashMap::new(),
            pin_dir: None,
        })
    }

    /// Loads the programs with their maps pinned in `dir` (a bpffs directory; maps there
    /// already are reused with their entries) and adopts the ports an earlier process left
    /// pinned: a restarted daemon keeps the running datapath, isolation and counters included.
    /// Ports whose interface is gone are cleaned up.
    pub fn load_pinned(dir: &Path) -> Result<Datapath> {
        let links = dir.join("links");
        ctx!(std::fs::create_dir_all(&links), "mkdir {}", links.display())?;
        let ebpf = load_programs(
            aya::EbpfLoader::new().map_pin_path(dir),
            aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/datapath-pinned.o")),
        )?;
        let mut dp = Datapath {
            ebpf,
            ports: HashMap::new(),
            pin_dir: Some(dir.to_path_buf()),
        };
        let mut found: HashMap<u32, Vec<aya::programs::links::PinnedLink>> = HashMap::new();
        for entry in ctx!(std::fs::read_dir(&links), "read {}", links.display())?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(index) = name.split('-').next().and_then(|i| i.parse::<u32>().ok()) else {
                continue;
            };
            match aya::programs::links::PinnedLink::from_pin(entry.path()) {
                Ok(link) if ifindex_exists(index) => found.entry(index).or_default().push(link),
                Ok(link) => {
                    let _ = link.unpin();
                }
                Err(_) => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        // Entries of ports that are gone go; each adopted port's addresses are kept for its
        // clean-up later.
        let adopted = |index: u32| found.contains_key(&index);
        let mut addresses: HashMap<u32, Vec<IpAddr>> = HashMap::new();
        for (ip, index) in
            dp.prune::<u32, EndpointValue>("ENDPOINTS", |_, v| v.ifindex, &adopted)?
        {
            let ip = IpAddr::V4(Ipv4Addr::from(ip.to_ne_bytes()));
            addresses.entry(index).or_default().push(ip);
        }
        for (ip, index) in
            dp.prune::<[u8; 16], EndpointValue>("ENDPOINTS6", |_, v| v.ifindex, &adopted)?
        {
            addresses
                .entry(index)
                .or_default()
                .push(IpAddr::V6(Ipv6Addr::from(ip)));
        }
        dp.prune::<u32, PortValue>("PORTS", |k, _| *k, &adopted)?;
        dp.prune::<u32, Counters>("COUNTERS", |k, _| *k, &adopted)?;
        for (index, links) in found {
            dp.ports.insert(
                index,
                Port {
                    links: links.into_iter().map(PortLink::Pinned).collect(),
                    addresses: addresses.remove(&index).unwrap_or_default(),
                },
            );
        }
        Ok(dp)
    }

    /// Removes the entries of map `name` whose port (`port_of`) is neither adopted nor still
    /// there; the adopted ones' keys and ports.
    fn prune<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &str,
        port_of: impl Fn(&K, &V) -> u32,
        adopted: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<(K, u32)>> {
        let mut kept = Vec::new();
        let mut gone = Vec::new();
        for (k, v) in self.map::<K, V>(name)?.iter().flatten() {
            let port = port_of(&k, &v);
            if adopted(port) {
                kept.push((k, port));
            } else if !ifindex_exists(port) {
                gone.push(k);
            }
        }
        let mut map = self.map::<K, V>(name)?;
        for k in gone {
            let _ = map.remove(&k);
        }
        Ok(kept)
    }

    fn map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &str,
    ) -> Result<BpfHashMap<&mut MapData, K, V>> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| err(format!("map {name}"))(&"not in the object"))?;
        ctx!(BpfHashMap::try_from(map), "map {name}")
    }

    /// Puts the datapath on the host end `host_ifname` of a container's veth, on network
    /// `network`, the container having `addresses` (IPv4 and IPv6).
    pub fn attach(&mut self, host_ifname: &str, network: u32, addresses: &[IpAddr]) -> Result<()> {
        let index = ifindex(host_ifname)?;
        // The clsact qdisc holds tc programs where tcx is missing; present already is fine.
        if let Err(e) = tc::qdisc_add_clsact(host_ifname) {
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(err(format!("clsact on {host_ifname}"))(&e));
            }
        }
        // A port this process (or an earlier one) has already: made again from scratch.
        if self.ports.contains_key(&index) {
            self.detach_index(index)?;
        }
        let mut port = Port {
            links: Vec::new(),
            addresses: addresses.to_vec(),
        };
        let pin_dir = self.pin_dir.clone();
        let attached = (|| {
            for (i, (name, kind)) in PROGRAMS.iter().enumerate() {
                let program = classifier(&mut self.ebpf, name)?;
                let link = ctx!(
                    program.attach(host_ifname, *kind),
                    "attach {name} to {host_ifname}"
                )?;
                match &pin_dir {
                    None => port.links.push(PortLink::Owned(i, link)),
                    Some(dir) => {
                        let owned = ctx!(program.take_link(link), "link of {name}")?;
                        let fd: aya::programs::links::FdLink =
                            ctx!(owned.try_into(), "link of {name} on {host_ifname}")?;
                        let path = link_pin(dir, index, name);
                        let _ = std::fs::remove_file(&path);
                        let pinned = ctx!(fd.pin(&path), "pin {}", path.display())?;
                        port.links.push(PortLink::Pinned(pinned));
                    }
                }
            }
            let mut ports = self.map::<u32, PortValue>("PORTS")?;
            ctx!(
                ports.insert(index, PortValue { network, pad: 0 }, 0),
                "PORTS[{host_ifname}]"
            )?;
            let mut counters = self.map::<u32, Counters>("COUNTERS")?;
            ctx!(
                counters.insert(index, Counters::default(), 0),
                "COUNTERS[{host_ifname}]"
            )?;
            let value = EndpointValue {
                ifindex: index,
                network,
            };
            for ip in addresses {
                match ip {
                    IpAddr::V4(v4) => {
                        let mut endpoints = self.map::<u32, EndpointValue>("ENDPOINTS")?;
                        ctx!(endpoints.insert(v4_key(*v4), value, 0), "ENDPOINTS[{ip}]")?;
                    }
                    IpAddr::V6(v6) => {
                        let mut endpoints = self.map::<[u8; 16], EndpointValue>("ENDPOINTS6")?;
                        ctx!(endpoints.insert(v6.octets(), value, 0), "ENDPOINTS6[{ip}]")?;
                    }
                }
            }
            Ok(())
        })();
        self.ports.insert(index, port);
        if let Err(e) = attached {
            let _ = self.detach_index(index);
            return Err(e);
        }
        Ok(())
    }

    /// Takes the datapath off a port (by name; a port whose veth is gone already is fine).
    pub fn detach(&mut self, host_ifname: &str) -> Result<()> {
        match ifindex(host_ifname) {
            Ok(index) => self.detach_index(index),
            // The veth went with its namespace: forget what was recorded for it.
            Err(_) => {
                let gone: Vec<u32> = self
                    .ports
                    .keys()
                    .copied()
                    .filter(|i| {
                        let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
                        // SAFETY: a buffer of IF_NAMESIZE bytes, as the call requires.
                        unsafe { libc::if_indextoname(*i, buf.as_mut_ptr()) }.is_null()
                    })
                    .collect();
                for i in gone {
                    self.detach_index(i)?;
                }
                Ok(())
            }
        }
    }

    fn detach_index(&mut self, index: u32) -> Result<()> {
        let Some(port) = self.ports.remove(&index) else {
            return Ok(());
        };
        for link in port.links {
            match link {
                PortLink::Owned(i, link) => {
                    let name = PROGRAMS[i].0;
                    if let Ok(program) = classifier(&mut self.ebpf, name) {
                        // Gone with its interface already is fine.
                        let _ = program.detach(link);
                    }
                }
                // Unpinned and closed: the kernel takes the program off.
                PortLink::Pinned(link) => {
                    let _ = link.unpin();
                }
            }
        }
        let mut ports = self.map::<u32, PortValue>("PORTS")?;
        let _ = ports.remove(&index);
        let mut counters = self.map::<u32, Counters>("COUNTERS")?;
        let _ = counters.remove(&index);
        for ip in port.addresses {
            match ip {
                IpAddr::V4(v4) => {
                    let _ = self
                        .map::<u32, EndpointValue>("ENDPOINTS")?
                        .remove(&v4_key(v4));
                }
                IpAddr::V6(v6) => {
                    let _ = self
                        .map::<[u8; 16], EndpointValue>("ENDPOINTS6")?
                        .remove(&v6.octets());
                }
            }
        }
        Ok(())
    }

    /// How many ports, endpoints and counters a pinned datapath in `dir` holds (what is left
    /// after its containers went should be nothing).
    pub fn pinned_entries(dir: &Path) -> Result<usize> {
        let open = |name: &str| -> Result<aya::maps::Map> {
            let data = ctx!(MapData::from_pin(dir.join(name)), "pinned map {name}")?;
            Ok(aya::maps::Map::HashMap(data))
        };
        let endpoints = open("ENDPOINTS")?;
        let ports = open("PORTS")?;
        let counters = open("COUNTERS")?;
        let n = ctx!(
            BpfHashMap::<_, u32, EndpointValue>::try_from(&endpoints),
            "ENDPOINTS"
        )?
        .keys()
        .count()
            + ctx!(BpfHashMap::<_, u32, PortValue>::try_from(&ports), "PORTS")?
                .keys()
                .count()
            + ctx!(
                BpfHashMap::<_, u32, Counters>::try_from(&counters),
                "COUNTERS"
            )?
            .keys()
            .count();
        Ok(n)
    }

    /// The counters of a port.
    pub fn counters(&mut self, host_ifname: &str) -> Result<Counters> {
        let index = ifindex(host_ifname)?;
        let counters = self.map::<u32, Counters>("COUNTERS")?;
        ctx!(counters.get(&index, 0), "COUNTERS[{host_ifname}]")
    }

    fn subnets(&mut self) -> Result<LpmTrie<&mut MapData, u32, u32>> {
        let map = self
            .ebpf
            .map_mut("SUBNETS")
            .ok_or_else(|| err("map SUBNETS")(&"not in the object"))?;
        ctx!(LpmTrie::try_from(map), "map SUBNETS")
    }

    /// Records an IPv4 subnet of network `network` (traffic to it from other networks drops).
    pub fn add_subnet(&mut self, addr: Ipv4Addr, prefix: u8, network: u32) -> Result<()> {
        let key = Key::new(prefix.into(), v4_key(addr));
        ctx!(
            self.subnets()?.insert(&key, network, 0),
            "SUBNETS[{addr}/{prefix}]"
        )
    }

    /// Records an IPv6 subnet of network `network`.
    pub fn add_subnet6(&mut self, addr: Ipv6Addr, prefix: u8, network: u32) -> Result<()> {
        let key = Key::new(prefix.into(), addr.octets());
        let map = self
            .ebpf
            .map_mut("SUBNETS6")
            .ok_or_else(|| err("map SUBNETS6")(&"not in the object"))?;
        let mut trie: LpmTrie<&mut MapData, [u8; 16], u32> =
            ctx!(LpmTrie::try_from(map), "map SUBNETS6")?;
        ctx!(trie.insert(&key, network, 0), "SUBNETS6[{addr}/{prefix}]")
    }

    pub fn remove_subnet6(&mut self, addr: Ipv6Addr, prefix: u8) -> Result<()> {
        let key = Key::new(prefix.into(), addr.octets());
        let map = self
            .ebpf
            .map_mut("SUBNETS6")
            .ok_or_else(|| err("map SUBNETS6")(&"not in the object"))?;
        let mut trie: LpmTrie<&mut MapData, [u8; 16], u32> =
            ctx!(LpmTrie::try_from(map), "map SUBNETS6")?;
        match trie.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(err(format!("SUBNETS6[{addr}/{prefix}]"))(&e)),
        }
    }

    pub fn remove_subnet(&mut self, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let key = Key::new(prefix.into(), u32::from_ne_bytes(addr.octets()));
        match self.subnets()?.remove(&key) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(err(format!("SUBNETS[{addr}/{prefix}]"))(&e)),
        }
    }
}
