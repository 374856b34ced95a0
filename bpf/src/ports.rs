//! Published ports for connections made on the host: the cgroup socket-address programs of
//! `programs/ports.bpf.c` on the root of the cgroup v2 hierarchy, and their maps.
//!
//! The programs are attached with `BPF_PROG_ATTACH` (multi), which ties them to the cgroup
//! rather than to a file descriptor, and they and their maps are pinned under a bpffs
//! directory: a berthd that exits (or is killed) leaves published ports working, and the next
//! one finds the pins, attaches nothing new and edits the same maps. [`remove_pinned`] takes
//! everything off again.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use aya::programs::CgroupSockAddr;
use aya::programs::cgroup_sock_addr::CgroupSockAddrAttachType;

use crate::{Error, Result, err};

/// Programs, their kernel attach types (`enum bpf_attach_type`) and aya's names for them.
const PROGRAMS: [(&str, u32, CgroupSockAddrAttachType); 4] = [
    ("connect4", 10, CgroupSockAddrAttachType::Connect4),
    ("sendmsg4", 14, CgroupSockAddrAttachType::UDPSendMsg4),
    ("recvmsg4", 19, CgroupSockAddrAttachType::UDPRecvMsg4),
    ("getpeername4", 29, CgroupSockAddrAttachType::GetPeerName4),
];

const MAPS: [&str; 4] = [
    "PUBLISHED",
    "PUBLISHED_REVERSE",
    "HOST_ADDRESSES",
    "HOST_NETNS",
];

const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn number(self) -> u8 {
        match self {
            Protocol::Tcp => libc::IPPROTO_TCP as u8,
            Protocol::Udp => libc::IPPROTO_UDP as u8,
        }
    }
}

/// One published port: `host_ip:host_port/protocol` (no `host_ip`: every host address) to
/// `container_ip:container_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub protocol: Protocol,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PublishedKey {
    host_ip: u32,
    host_port: u16,
    protocol: u8,
    pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Target {
    ip: u32,
    port: u16,
    pad: u16,
}

// SAFETY: `repr(C)` integers laid out without implicit padding, as the C program declares.
unsafe impl aya::Pod for PublishedKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Target {}

fn ip_key(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

impl Binding {
    fn key(&self) -> PublishedKey {
        PublishedKey {
            host_ip: self.host_ip.map_or(0, ip_key),
            host_port: self.host_port.to_be(),
            protocol: self.protocol.number(),
            pad: 0,
        }
    }

    fn target(&self) -> Target {
        Target {
            ip: ip_key(self.container_ip),
            port: self.container_port.to_be(),
            pad: 0,
        }
    }

    /// The container side, for replies.
    fn reverse_key(&self) -> PublishedKey {
        PublishedKey {
            host_ip: ip_key(self.container_ip),
            host_port: self.container_port.to_be(),
            protocol: self.protocol.number(),
            pad: 0,
        }
    }

    /// What replies show: the binding's address, or loopback for every-address bindings.
    fn reverse_target(&self) -> Target {
        Target {
            ip: ip_key(self.host_ip.unwrap_or(Ipv4Addr::LOCALHOST)),
            port: self.host_port.to_be(),
            pad: 0,
        }
    }
}

/// The programs, attached, and their maps.
pub struct PublishedPorts {
    ebpf: aya::Ebpf,
}

/// `bpf(BPF_PROG_ATTACH | BPF_PROG_DETACH)` of `program` on `cgroup`.
fn prog_attach(
    cmd: libc::c_long,
    cgroup: i32,
    program: i32,
    attach_type: u32,
) -> std::io::Result<()> {
    #[repr(C)]
    struct AttachAttr {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
        replace_bpf_fd: u32,
    }
    let attr = AttachAttr {
        target_fd: cgroup as u32,
        attach_bpf_fd: program as u32,
        attach_type,
        attach_flags: if cmd == BPF_PROG_ATTACH {
            BPF_F_ALLOW_MULTI
        } else {
            0
        },
        replace_bpf_fd: 0,
    };
    // SAFETY: the attribute struct is the prefix of `union bpf_attr` these commands read, and
    // its size is passed, so the kernel reads no further.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &attr as *const AttachAttr,
            std::mem::size_of::<AttachAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The current network namespace's cookie (what `bpf_get_netns_cookie` gives its sockets).
fn netns_cookie() -> std::io::Result<u64> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: an 8-byte buffer and its length, for a socket that lives across the call.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

impl PublishedPorts {
    /// Loads the programs with their maps pinned in `pin_dir` (a bpffs directory; maps there
    /// already are reused) and attaches them to `cgroup2_root` unless an earlier berthd did.
    /// Call from the host's network namespace.
    pub fn open(pin_dir: &Path, cgroup2_root: &Path) -> Result<PublishedPorts> {
        std::fs::create_dir_all(pin_dir)
            .map_err(|e| err(format!("mkdir {}", pin_dir.display()))(&e))?;
        let mut ebpf = ctx!(
            aya::EbpfLoader::new()
                .map_pin_path(pin_dir)
                .load(aya::include_bytes_aligned!(concat!(
                    env!("OUT_DIR"),
                    "/ports.o"
                ))),
            "load the published-ports object"
        )?;
        let attached = pin_dir.join(PROGRAMS[0].0).exists();
        if !attached {
            let cgroup = std::fs::File::open(cgroup2_root)
                .map_err(|e| err(format!("open {}", cgroup2_root.display()))(&e))?;
            for (name, kind, _) in PROGRAMS {
                let program: &mut CgroupSockAddr = ctx!(
                    ebpf.program_mut(name)
                        .ok_or_else(|| "not in the object".to_string())
                        .and_then(|p| p
                            .try_into()
                            .map_err(|e: aya::programs::ProgramError| { e.to_string() })),
                    "program {name}"
                )?;
                ctx!(program.load(), "load program {name}")?;
                let fd = ctx!(program.fd(), "program {name}")?;
                ctx!(
                    prog_attach(
                        BPF_PROG_ATTACH,
                        cgroup.as_raw_fd(),
                        fd.as_fd().as_raw_fd(),
                        kind
                    ),
                    "attach {name} to {}",
                    cgroup2_root.display()
                )?;
                ctx!(program.pin(pin_dir.join(name)), "pin {name}")?;
            }
        }
        let mut ports = PublishedPorts { ebpf };
        let cookie = ctx!(netns_cookie(), "the host network namespace's cookie")?;
        let mut netns: Array<&mut MapData, u64> = ports.map_as("HOST_NETNS")?;
        ctx!(netns.set(0, cookie, 0), "HOST_NETNS")?;
        Ok(ports)
    }

    fn map_as<'a, T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>>(
        &'a mut self,
        name: &str,
    ) -> Result<T> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| err(format!("map {name}"))(&"not in the object"))?;
        ctx!(T::try_from(map), "map {name}")
    }

    /// Sends host connections to `binding`'s host address and port to the container.
    pub fn publish(&mut self, binding: &Binding) -> Result<()> {
        let mut published: BpfHashMap<&mut MapData, PublishedKey, Target> =
            self.map_as("PUBLISHED")?;
        ctx!(
            published.insert(binding.key(), binding.target(), 0),
            "PUBLISHED[{}]",
            binding.host_port
        )?;
        let mut reverse: BpfHashMap<&mut MapData, PublishedKey, Target> =
            self.map_as("PUBLISHED_REVERSE")?;
        ctx!(
            reverse.insert(binding.reverse_key(), binding.reverse_target(), 0),
            "PUBLISHED_REVERSE[{}]",
            binding.container_ip
        )
    }

    pub fn unpublish(&mut self, binding: &Binding) -> Result<()> {
        let mut published: BpfHashMap<&mut MapData, PublishedKey, Target> =
            self.map_as("PUBLISHED")?;
        let _ = published.remove(&binding.key());
        let mut reverse: BpfHashMap<&mut MapData, PublishedKey, Target> =
            self.map_as("PUBLISHED_REVERSE")?;
        let _ = reverse.remove(&binding.reverse_key());
        Ok(())
    }

    /// The host's own addresses (besides 127.0.0.0/8) that published ports answer on.
    pub fn set_host_addresses(&mut self, addresses: &[Ipv4Addr]) -> Result<()> {
        let mut map: BpfHashMap<&mut MapData, u32, u8> = self.map_as("HOST_ADDRESSES")?;
        let old: Vec<u32> = map.keys().filter_map(|k| k.ok()).collect();
        for k in old {
            let _ = map.remove(&k);
        }
        for a in addresses {
            ctx!(map.insert(ip_key(*a), 1, 0), "HOST_ADDRESSES[{a}]")?;
        }
        Ok(())
    }

    /// How many ports are published (for tests and `info`).
    pub fn count(&mut self) -> Result<usize> {
        let map: BpfHashMap<&mut MapData, PublishedKey, Target> = self.map_as("PUBLISHED")?;
        Ok(map.keys().count())
    }
}

/// Detaches the programs an earlier [`PublishedPorts::open`] attached and pinned in `pin_dir`
/// and removes the pins (programs and maps). Nothing pinned there is fine.
pub fn remove_pinned(pin_dir: &Path, cgroup2_root: &Path) -> Result<()> {
    let cgroup = std::fs::File::open(cgroup2_root)
        .map_err(|e| err(format!("open {}", cgroup2_root.display()))(&e))?;
    for (name, kind, attach_type) in PROGRAMS {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let program = ctx!(
            CgroupSockAddr::from_pin(&path, attach_type),
            "pinned {name}"
        )?;
        let fd = ctx!(program.fd(), "program {name}")?;
        match prog_attach(
            BPF_PROG_DETACH,
            cgroup.as_raw_fd(),
            fd.as_fd().as_raw_fd(),
            kind,
        ) {
            Ok(()) => {}
            // Not attached there (any more).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(err(format!("detach {name}"))(&e)),
        }
        std::fs::remove_file(&path).map_err(|e| err(format!("unpin {}", path.display()))(&e))?;
    }
    for name in MAPS {
        let path: PathBuf = pin_dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path)
                .map_err(|e| err(format!("unpin {}", path.display()))(&e))?;
        }
    }
    Ok(())
}

/// Whether `dir` is on a bpffs.
pub fn is_bpffs(dir: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    fs_type(dir).is_some_and(|t| t == BPF_FS_MAGIC)
}

fn fs_type(dir: &Path) -> Option<i64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: a zeroed statfs buffer and a NUL-terminated path, both alive across the call.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        (libc::statfs(c.as_ptr(), &mut s) == 0).then_some(s.f_type as i64)
    }
}

/// Mounts a bpffs on `dir` (made if missing) unless one is there.
pub fn ensure_bpffs(dir: &Path) -> Result<()> {
    if is_bpffs(dir) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| err(format!("mkdir {}", dir.display()))(&e))?;
    let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|e| err(format!("{}", dir.display()))(&e))?;
    // SAFETY: NUL-terminated strings alive across the call; no data argument.
    let r = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(Error {
            what: format!("mount a bpffs on {}", dir.display()),
            message: std::io::Error::last_os_error().to_string(),
        });
    }
    Ok(())
}
