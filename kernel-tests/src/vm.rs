//! The VM harness: runs test binaries under Debian's `linux-image-amd64` kernel in qemu, for
//! what this host's kernel cannot show (pure cgroup v2 here; device-mapper). The kernel package
//! is downloaded with apt and unpacked under `target/vm/` (never installed); an initramfs is
//! built per run from busybox-static, the kernel modules asked for (with their dependencies),
//! and the host files the guest command needs, at the same absolute paths. The guest mounts
//! cgroup2 only, runs the command, prints its exit status on the serial console and powers off.
//! qemu uses KVM where it works and TCG otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::{self, err, run, target_dir};

/// A kernel unpacked from Debian's package.
pub struct Kernel {
    pub version: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<version>`.
    pub modules: PathBuf,
}

/// Debian's current `linux-image-amd64` kernel, downloaded and unpacked once.
pub fn kernel() -> io::Result<Kernel> {
    let dir = target_dir().join("vm");
    fs::create_dir_all(&dir)?;
    let lock = fs::File::create(dir.join(".lock"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    let deps = String::from_utf8_lossy(&run(
        Command::new("apt-cache").args(["depends", "linux-image-amd64"])
    )?)
    .into_owned();
    let package = deps
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
        .map(|v| format!("linux-image-{v}"))
        .ok_or_else(|| err("apt-cache knows no linux-image-amd64 (apt-get update?)"))?;
    let version = package.trim_start_matches("linux-image-").to_string();
    let unpacked = dir.join(&package);
    let kernel = Kernel {
        vmlinuz: unpacked.join(format!("boot/vmlinuz-{version}")),
        modules: unpacked.join(format!("lib/modules/{version}")),
        version,
    };
    if unpacked.join(".done").exists() {
        return Ok(kernel);
    }
    let debs = dir.join("debs");
    fs::create_dir_all(&debs)?;
    // apt's sandbox user cannot write to target/: download as root, quietly.
    run(Command::new("apt-get")
        .args(["download", "-o", "APT::Sandbox::User=root", &package])
        .current_dir(&debs))?;
    let deb = fs::read_dir(&debs)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .ok_or_else(|| err(format!("{package}: no .deb after apt-get download")))?;
    let _ = fs::remove_dir_all(&unpacked);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    fs::write(unpacked.join(".done"), b"")?;
    Ok(kernel)
}

/// Modules for device-mapper thin pools on loop devices. crc32c_generic is libcrc32c's soft
/// dependency (a crypto algorithm looked up by name, so not in its `depends=`).
pub const DEVICE_MAPPER_MODULES: [&str; 3] = ["crc32c_generic", "dm-thin-pool", "loop"];

/// The `depends=` of a module, read from its `.modinfo` strings.
fn module_depends(ko: &Path) -> io::Result<Vec<String>> {
    let bytes = fs::read(ko)?;
    let needle = b"\0depends=";
    let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) else {
        return Ok(Vec::new());
    };
    let rest = &bytes[at + needle.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    Ok(String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

/// The modules `names` and everything they depend on, dependencies first (insmod order).
pub fn module_closure(kernel: &Kernel, names: &[&str]) -> io::Result<Vec<PathBuf>> {
    let mut index: BTreeMap<String, PathBuf> = BTreeMap::new();
    fn walk(dir: &Path, index: &mut BTreeMap<String, PathBuf>) -> io::Result<()> {
        for e in fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, index)?;
            } else if let Some(n) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                index.insert(n.replace('-', "_"), p);
            }
        }
        Ok(())
    }
    walk(&kernel.modules.join("kernel"), &mut index)?;
    let builtin = fs::read_to_string(kernel.modules.join("modules.builtin")).unwrap_or_default();
    let is_builtin = |n: &str| {
        builtin.lines().any(|l| {
            l.rsplit('/')
                .next()
                .and_then(|f| f.strip_suffix(".ko"))
                .is_some_and(|f| f.replace('-', "_") == n)
        })
    };
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        n: &str,
        index: &BTreeMap<String, PathBuf>,
        is_builtin: &dyn Fn(&str) -> bool,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<PathBuf>,
    ) -> io::Result<()> {
        let n = n.replace('-', "_");
        if !seen.insert(n.clone()) || is_builtin(&n) {
            return Ok(());
        }
        let ko = index
            .get(&n)
            .ok_or_else(|| err(format!("kernel module {n} not found")))?;
        for d in module_depends(ko)? {
            visit(&d, index, is_builtin, seen, order)?;
        }
        order.push(ko.clone());
        Ok(())
    }
    for n in names {
        visit(n, &index, &is_builtin, &mut seen, &mut order)?;
    }
    Ok(order)
}

/// An initramfs being assembled: guest path → what goes there.
#[derive(Default)]
pub struct Initramfs {
    entries: BTreeMap<PathBuf, Entry>,
}

enum Entry {
    Dir,
    File(PathBuf, u32),
    Bytes(Vec<u8>, u32),
    Symlink(PathBuf),
}

impl Initramfs {
    pub fn new() -> Initramfs {
        let mut i = Initramfs::default();
        for d in [
            "bin",
            "sbin",
            "proc",
            "sys",
            "dev",
            "tmp",
            "run",
            "etc",
            "lib/modules",
        ] {
            i.dir(Path::new("/").join(d));
        }
        i
    }

    fn dir(&mut self, p: impl Into<PathBuf>) {
        let p: PathBuf = p.into();
        for a in p.ancestors() {
            if a != Path::new("/") && !a.as_os_str().is_empty() {
                self.entries.entry(a.to_path_buf()).or_insert(Entry::Dir);
            }
        }
    }

    fn parent_dirs(&mut self, p: &Path) {
        if let Some(parent) = p.parent() {
            self.dir(parent.to_path_buf());
        }
    }

    pub fn bytes(&mut self, guest: &str, data: &[u8], mode: u32) {
        let p = PathBuf::from(guest);
        self.parent_dirs(&p);
        self.entries.insert(p, Entry::Bytes(data.to_vec(), mode));
    }

    /// A host file at `guest` (symlinks followed).
    pub fn file(&mut self, host: &Path, guest: &Path) -> io::Result<()> {
        let mode = fs::metadata(host)?.mode() & 0o7777;
        self.parent_dirs(guest);
        self.entries
            .insert(guest.to_path_buf(), Entry::File(host.to_path_buf(), mode));
        Ok(())
    }

    /// An executable at its own path, with the shared libraries `ldd` names.
    pub fn binary(&mut self, host: &Path) -> io::Result<()> {
        self.file(host, host)?;
        let out = Command::new("ldd").arg(host).output()?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let lib = line
                .split("=>")
                .nth(1)
                .unwrap_or(line)
                .split_whitespace()
                .next()
                .unwrap_or("");
            if lib.starts_with('/') {
                let path = Path::new(lib);
                self.file(&fs::canonicalize(path)?, path)?;
            }
        }
        Ok(())
    }

    /// The busybox fixtures as built, stamps included, at the paths the tests know (without
    /// the stamps the guest would try to rebuild them).
    pub fn busybox_fixtures(&mut self) -> io::Result<()> {
        let f = fixtures::busybox();
        self.tree(&f.bundle)?;
        self.tree(&f.oci_layout)
    }

    /// A host directory tree at its own path (symlinks kept as symlinks).
    pub fn tree(&mut self, host: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(host)?;
        if meta.file_type().is_symlink() {
            self.parent_dirs(host);
            self.entries
                .insert(host.to_path_buf(), Entry::Symlink(fs::read_link(host)?));
        } else if meta.is_dir() {
            self.dir(host.to_path_buf());
            for e in fs::read_dir(host)? {
                self.tree(&e?.path())?;
            }
        } else if meta.is_file() {
            self.file(host, host)?;
        }
        Ok(())
    }

    /// Writes a newc cpio archive.
    pub fn write(&self, out: &Path) -> io::Result<()> {
        let mut w = io::BufWriter::new(fs::File::create(out)?);
        let mut ino = 1u32;
        let mut header = |w: &mut dyn Write,
                          name: &[u8],
                          mode: u32,
                          size: usize|
         -> io::Result<()> {
            ino += 1;
            write!(
                w,
                "070701{ino:08X}{mode:08X}{:08X}{:08X}{:08X}{:08X}{size:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
                0,
                0,
                1,
                0,
                0,
                0,
                0,
                0,
                name.len() + 1,
                0
            )?;
            w.write_all(name)?;
            w.write_all(&[0])?;
            let pad = (4 - (110 + name.len() + 1) % 4) % 4;
            w.write_all(&[0u8; 3][..pad])
        };
        let pad_data = |w: &mut dyn Write, len: usize| w.write_all(&[0u8; 3][..(4 - len % 4) % 4]);
        for (path, entry) in &self.entries {
            let name = path.strip_prefix("/").unwrap_or(path);
            let name = name.as_os_str().as_encoded_bytes();
            match entry {
                Entry::Dir => header(&mut w, name, 0o040755, 0)?,
                Entry::File(host, mode) => {
                    let data = fs::read(host)?;
                    header(&mut w, name, 0o100000 | mode, data.len())?;
                    w.write_all(&data)?;
                    pad_data(&mut w, data.len())?;
                }
                Entry::Bytes(data, mode) => {
                    header(&mut w, name, 0o100000 | mode, data.len())?;
                    w.write_all(data)?;
                    pad_data(&mut w, data.len())?;
                }
                Entry::Symlink(target) => {
                    let t = target.as_os_str().as_encoded_bytes();
                    header(&mut w, name, 0o120777, t.len())?;
                    w.write_all(t)?;
                    pad_data(&mut w, t.len())?;
                }
            }
        }
        header(&mut w, b"TRAILER!!!", 0, 0)?;
        w.flush()
    }
}

/// What a guest run printed and how its command exited.
pub struct VmRun {
    /// The command's exit status; `None` if the guest never reported one (crash, timeout).
    pub status: Option<i32>,
    /// The serial console, all of it.
    pub console: String,
    pub took: Duration,
}

const INIT: &str = r#"#!/bin/busybox sh
# /berth-early, when the initramfs has one, runs first, from the initramfs itself (what a host
# without a root filesystem looks like), with /proc, /sys, /dev, cgroup2 and /tmp mounted for
# it and unmounted after.
if [ ! -e /.switched ] && [ -e /berth-early ]; then
  for d in /proc /sys /dev /tmp; do /bin/busybox mkdir -p $d; done
  /bin/busybox mount -t proc proc /proc
  /bin/busybox mount -t sysfs sysfs /sys
  /bin/busybox mount -t devtmpfs devtmpfs /dev
  /bin/busybox mount -t cgroup2 cgroup2 /sys/fs/cgroup
  /bin/busybox mount -t tmpfs tmpfs /tmp
  echo BERTH-EARLY-BEGIN
  BERTH_IN_VM=1 /bin/busybox sh /berth-early
  echo "BERTH-EARLY-EXIT $?"
  for d in /tmp /sys/fs/cgroup /dev /sys /proc; do /bin/busybox umount -l $d; done
fi
# The initramfs cannot be pivot_root'ed away from, which runtimes do: move to a tmpfs first.
if [ ! -e /.switched ]; then
  /bin/busybox mkdir -p /newroot
  /bin/busybox mount -t tmpfs -o size=90% tmpfs /newroot
  for d in /*; do
    case "$d" in /proc|/sys|/dev|/newroot) ;; *) /bin/busybox cp -a "$d" /newroot/ ;; esac
  done
  /bin/busybox mkdir -p /newroot/proc /newroot/sys /newroot/dev
  /bin/busybox touch /newroot/.switched
  exec /bin/busybox switch_root /newroot /init
fi
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t mqueue mqueue /dev/mqueue
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# Pure cgroup v2, every controller delegated below the root.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
done
for m in $(cat /modules.order); do insmod "$m" || echo "insmod $m failed"; done
hostname berth-vm
echo BERTH-VM-BEGIN
BERTH_IN_VM=1 sh /berth-command
echo "BERTH-VM-EXIT $?"
sync
poweroff -f
"#;

/// Boots `kernel` with an initramfs holding `files` and the given modules, runs `command`
/// (a shell script) and returns its status and the console.
pub fn run_in_vm(
    kernel: &Kernel,
    mut initramfs: Initramfs,
    modules: &[&str],
    command: &str,
    timeout: Duration,
) -> io::Result<VmRun> {
    let busybox = fixtures::busybox().rootfs.join("bin/busybox");
    initramfs.file(&busybox, Path::new("/bin/busybox"))?;
    initramfs.bytes("/init", INIT.as_bytes(), 0o755);
    initramfs.bytes("/berth-command", command.as_bytes(), 0o755);
    initramfs.bytes("/etc/passwd", b"root:x:0:0:root:/:/bin/sh\n", 0o644);
    initramfs.bytes("/etc/group", b"root:x:0:\n", 0o644);
    let mut order = String::new();
    for (i, ko) in module_closure(kernel, modules)?.iter().enumerate() {
        let guest = format!(
            "/lib/modules/{i:03}-{}",
            ko.file_name().unwrap_or_default().to_string_lossy()
        );
        initramfs.file(ko, Path::new(&guest))?;
        order.push_str(&guest);
        order.push('\n');
    }
    initramfs.bytes("/modules.order", order.as_bytes(), 0o644);
    let work = tempfile::Builder::new().prefix("berth-vm-").tempdir()?;
    let image = work.path().join("initramfs.cpio");
    initramfs.write(&image)?;

    // KVM where it runs guests; where /dev/kvm exists but cannot (as on this project's CI),
    // qemu fails at once and TCG takes over.
    let kvm = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let accels: &[&str] = if kvm { &["kvm", "tcg"] } else { &["tcg"] };
    let mut last = None;
    for accel in accels {
        let attempt = boot(
            kernel,
            &image,
            &work.path().join(format!("console-{accel}.log")),
            accel,
            timeout,
        )?;
        let failed_at_once = attempt.status_unknown && attempt.console_empty;
        last = Some(attempt);
        if !failed_at_once {
            break;
        }
    }
    let attempt = last.expect("at least one accelerator");
    let (console, took) = (attempt.console, attempt.took);
    if attempt.timed_out {
        return Ok(VmRun {
            status: None,
            console: format!("{console}\n[berth-vm: timed out after {timeout:?}]"),
            took,
        });
    }
    let code = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("BERTH-VM-EXIT "))
        .and_then(|c| c.trim().parse().ok());
    Ok(VmRun {
        status: code,
        console,
        took,
    })
}

struct Attempt {
    console: String,
    console_empty: bool,
    status_unknown: bool,
    timed_out: bool,
    took: Duration,
}

fn boot(
    kernel: &Kernel,
    image: &Path,
    console: &Path,
    accel: &str,
    timeout: Duration,
) -> io::Result<Attempt> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-nographic", "-no-reboot", "-m", "3072", "-smp", "2"])
        .args(["-serial", &format!("file:{}", console.display())])
        .args(["-monitor", "none"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(image)
        .args(["-append", "console=ttyS0 panic=-1 quiet rdinit=/init"])
        .args(["-accel", accel])
        .args(["-cpu", if accel == "kvm" { "host" } else { "max" }]);
    let start = Instant::now();
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            err(format!(
                "qemu-system-x86_64: {e} (apt-get install qemu-system-x86)"
            ))
        })?;
    let mut timed_out = false;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = start.elapsed();
    let mut qemu_err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut qemu_err);
    }
    let mut text = String::from_utf8_lossy(&fs::read(console).unwrap_or_default()).into_owned();
    let console_empty = text.trim().is_empty();
    if !qemu_err.trim().is_empty() {
        text.push_str(&format!("\n[qemu -accel {accel}: {}]", qemu_err.trim()));
    }
    let status_unknown = !text.contains("BERTH-VM-EXIT");
    Ok(Attempt {
        console: text,
        console_empty,
        status_unknown,
        timed_out,
        took,
    })
}

/// The newest build of test target `name` (target/<triple>/<profile>/deps/<name>-<hash>)
/// beside the running test.
pub fn test_binary(name: &str) -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let deps = exe
        .parent()
        .ok_or_else(|| err("test executable has no directory"))?;
    let prefix = format!("{name}-");
    fs::read_dir(deps)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.strip_prefix(&prefix)
                    .is_some_and(|h| h.len() == 16 && !h.contains('.'))
            }) && fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
        })
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .ok_or_else(|| err(format!("no built test binary {name} in {}", deps.display())))
}
