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
//! The programs attach as tc filters over netlink on a clsact qdisc, one per direction and
//! port: that costs ~0.2 ms a program, where a tcx link (6.6+) waits for an RCU grace period
//! (~14 ms here, measured), and the filters belong to the interface, so a pinned datapath's
//! ports outlive the process with nothing pinned but the maps. The filter list of a port
//! never grows: every container is its own port, with the same two programs.

use std::collections::HashMap;
use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::tc::{NlOptions, SchedClassifierLinkId, TcAttachOptions};
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
    /// Host veth ifindex → the filters this process still owns there, and the container's
    /// addresses.
    ports: HashMap<u32, Port>,
    /// Where the maps are pinned ([`Datapath::load_pinned`]).
    pin_dir: Option<PathBuf>,
}

struct Port {
    /// The programs' filters while this process owns them (an unpinned datapath's, and a
    /// prepared port's); empty once they belong to the interface.
    links: Vec<(usize, SchedClassifierLinkId)>,
    addresses: Vec<IpAddr>,
    /// Made ahead by [`Datapath::prepare`]: programs on, nothing in the maps yet.
    prepared: bool,
}

/// An IPv4 address as the maps key it (network byte order).
fn v4_key(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// The name of the interface with this index, if there is one (in the caller's namespace).
fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: a buffer of IF_NAMESIZE bytes, as the call requires.
    if unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) }.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Whether an interface with this index exists (in the caller's namespace).
fn ifindex_exists(index: u32) -> bool {
    ifname(index).is_some()
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
    /// (their filters stayed on their interfaces): a restarted daemon keeps the running
    /// datapath, isolation and counters included. Entries of ports that are gone are removed.
    pub fn load_pinned(dir: &Path) -> Result<Datapath> {
        ctx!(std::fs::create_dir_all(dir), "mkdir {}", dir.display())?;
        let ebpf = load_programs(
            aya::EbpfLoader::new().map_pin_path(dir),
            aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/datapath-pinned.o")),
        )?;
        let mut dp = Datapath {
            ebpf,
            ports: HashMap::new(),
            pin_dir: Some(dir.to_path_buf()),
        };
        let found: std::collections::HashSet<u32> = dp
            .map::<u32, PortValue>("PORTS")?
            .keys()
            .flatten()
            .filter(|i| ifindex_exists(*i))
            .collect();
        let adopted = |index: u32| found.contains(&index);
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
        for index in &found {
            dp.ports.insert(
                *index,
                Port {
                    links: Vec::new(),
                    addresses: addresses.remove(index).unwrap_or_default(),
                    prepared: false,
                },
            );
        }
        dp.replace_pinned_links(&found)?;
        Ok(dp)
    }

    /// An earlier berth pinned each port's tcx links under `<dir>/links`: the adopted ports
    /// get the filters instead, then the old links are unpinned (which takes them off).
    fn replace_pinned_links(&mut self, adopted: &std::collections::HashSet<u32>) -> Result<()> {
        let Some(old) = self.pin_dir.as_ref().map(|d| d.join("links")) else {
            return Ok(());
        };
        let Ok(entries) = std::fs::read_dir(&old) else {
            return Ok(());
        };
        for index in adopted {
            if let Some(name) = ifname(*index) {
                let links = self.attach_programs(&name)?;
                let (kept, handed_over) = self.hand_over(links);
                if let Some(port) = self.ports.get_mut(index) {
                    port.links = kept;
                }
                handed_over?;
            }
        }
        for entry in entries.flatten() {
            match aya::programs::links::PinnedLink::from_pin(entry.path()) {
                Ok(link) => drop(link.unpin()),
                Err(_) => drop(std::fs::remove_file(entry.path())),
            }
        }
        let _ = std::fs::remove_dir(&old);
        Ok(())
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

    /// Puts the programs on the host end `host_ifname` of a veth made ahead of its container
    /// (a warm pool's): the slower part of [`Datapath::attach`], which then only fills the
    /// maps. The filters stay this process's until then (taken off by [`Datapath::detach`] or
    /// when the datapath is dropped); after a crash they stay on the interface until the
    /// next daemon drops the pool's namespaces, and the veth with them.
    pub fn prepare(&mut self, host_ifname: &str) -> Result<()> {
        let index = ifindex(host_ifname)?;
        if self.ports.contains_key(&index) {
            self.detach_index(index)?;
        }
        let links = self.attach_programs(host_ifname)?;
        self.ports.insert(
            index,
            Port {
                links,
                addresses: Vec::new(),
                prepared: true,
            },
        );
        Ok(())
    }

    /// Puts the datapath on the host end `host_ifname` of a container's veth, on network
    /// `network`, the container having `addresses` (IPv4 and IPv6).
    pub fn attach(&mut self, host_ifname: &str, network: u32, addresses: &[IpAddr]) -> Result<()> {
        let index = ifindex(host_ifname)?;
        let links = match self.ports.remove(&index) {
            Some(port) if port.prepared => port.links,
            other => {
                // A port this process (or an earlier one) has already: made again from scratch.
                if let Some(port) = other {
                    self.ports.insert(index, port);
                    self.detach_index(index)?;
                }
                self.attach_programs(host_ifname)?
            }
        };
        let (links, handed_over) = self.hand_over(links);
        self.ports.insert(
            index,
            Port {
                links,
                addresses: addresses.to_vec(),
                prepared: false,
            },
        );
        let filled = handed_over.and_then(|()| {
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
        });
        if let Err(e) = filled {
            let _ = self.detach_index(index);
            return Err(e);
        }
        Ok(())
    }

    /// Attaches both programs to `host_ifname` (tc filters over netlink); this process owns
    /// them.
    fn attach_programs(
        &mut self,
        host_ifname: &str,
    ) -> Result<Vec<(usize, SchedClassifierLinkId)>> {
        if let Err(e) = tc::qdisc_add_clsact(host_ifname) {
            // Present already is fine.
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(err(format!("clsact on {host_ifname}"))(&e));
            }
        }
        let mut links = Vec::new();
        for (i, (name, kind)) in PROGRAMS.iter().enumerate() {
            let program = classifier(&mut self.ebpf, name)?;
            let options = TcAttachOptions::Netlink(NlOptions::default());
            match ctx!(
                program.attach_with_options(host_ifname, *kind, options),
                "attach {name} to {host_ifname}"
            ) {
                Ok(link) => links.push((i, link)),
                Err(e) => {
                    self.drop_links(links);
                    return Err(e);
                }
            }
        }
        Ok(links)
    }

    /// Where the datapath is pinned, gives a port's filters to its interface: they stay when
    /// this process goes (a restarted daemon adopts the port through the pinned maps). An
    /// unpinned datapath keeps them, and they go with it.
    /// A link that cannot be handed over stays owned (returned) with the error: the caller
    /// detaches the port, which takes every filter of it off.
    fn hand_over(
        &mut self,
        links: Vec<(usize, SchedClassifierLinkId)>,
    ) -> (Vec<(usize, SchedClassifierLinkId)>, Result<()>) {
        if self.pin_dir.is_none() {
            return (links, Ok(()));
        }
        let mut kept = Vec::new();
        let mut outcome = Ok(());
        for (i, id) in links {
            let name = PROGRAMS[i].0;
            match classifier(&mut self.ebpf, name) {
                Ok(program) => match ctx!(program.take_link(id), "hand over the {name} filter") {
                    // Dropping the link would delete the filter; it is the interface's now.
                    Ok(link) => std::mem::forget(link),
                    Err(e) => outcome = Err(e),
                },
                Err(e) => {
                    kept.push((i, id));
                    outcome = Err(e);
                }
            }
        }
        (kept, outcome)
    }

    /// Takes this process's filters off their port.
    fn drop_links(&mut self, links: Vec<(usize, SchedClassifierLinkId)>) {
        for (i, id) in links {
            if let Ok(program) = classifier(&mut self.ebpf, PROGRAMS[i].0) {
                // Gone with its interface already is fine.
                let _ = program.detach(id);
            }
        }
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
                    .filter(|i| !ifindex_exists(*i))
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
        self.drop_links(port.links);
        // Filters handed to the interface (or left by an earlier process): by program name.
        // An interface that went took them along; none left is fine.
        let mut outcome = Ok(());
        if let Some(name) = ifname(index) {
            for (program, kind) in PROGRAMS {
                match tc::qdisc_detach_program(&name, kind, program) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
                    Err(e) => outcome = Err(err(format!("take {program} off {name}"))(&e)),
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
        outcome
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

    /// The LPM trie of subnets `name` (`SUBNETS`, keyed by IPv4 address; `SUBNETS6`, IPv6).
    fn trie<K: aya::Pod>(&mut self, name: &str) -> Result<LpmTrie<&mut MapData, K, u32>> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| err(format!("map {name}"))(&"not in the object"))?;
        ctx!(LpmTrie::try_from(map), "map {name}")
    }

    /// Records an IPv4 subnet of network `network` (traffic to it from other networks drops).
    pub fn add_subnet(&mut self, addr: Ipv4Addr, prefix: u8, network: u32) -> Result<()> {
        let key = Key::new(prefix.into(), v4_key(addr));
        ctx!(
            self.trie::<u32>("SUBNETS")?.insert(&key, network, 0),
            "SUBNETS[{addr}/{prefix}]"
        )
    }

    /// Records an IPv6 subnet of network `network`.
    pub fn add_subnet6(&mut self, addr: Ipv6Addr, prefix: u8, network: u32) -> Result<()> {
        let key = Key::new(prefix.into(), addr.octets());
        ctx!(
            self.trie::<[u8; 16]>("SUBNETS6")?.insert(&key, network, 0),
            "SUBNETS6[{addr}/{prefix}]"
        )
    }

    pub fn remove_subnet6(&mut self, addr: Ipv6Addr, prefix: u8) -> Result<()> {
        let key = Key::new(prefix.into(), addr.octets());
        gone_is_fine(
            self.trie::<[u8; 16]>("SUBNETS6")?.remove(&key),
            &format!("SUBNETS6[{addr}/{prefix}]"),
        )
    }

    pub fn remove_subnet(&mut self, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let key = Key::new(prefix.into(), v4_key(addr));
        gone_is_fine(
            self.trie::<u32>("SUBNETS")?.remove(&key),
            &format!("SUBNETS[{addr}/{prefix}]"),
        )
    }
}

/// A removal whose key was not there is done.
fn gone_is_fine(removed: std::result::Result<(), aya::maps::MapError>, what: &str) -> Result<()> {
    match removed {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(err(what)(&e)),
    }
}
