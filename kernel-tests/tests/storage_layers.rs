//! Layer apply and diff on every driver: what a layer carries arrives intact, whiteouts work,
//! bad and hostile layers fail cleanly and never write outside the snapshot, and
//! apply(diff(x)) gives x back.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_kernel_tests::layers::{LayerTar, gzip, sha256, zstd};
use berth_kernel_tests::scratch_fs::ScratchFs;
use berth_kernel_tests::storage;
use berth_storage::layer::{self, ApplyOptions, DevicePolicy};
use berth_storage::{Changes, Error, Labels, Snapshotter, Vfs, mount};

fn drivers() -> Vec<storage::TestDriver> {
    storage::drivers()
}

/// The snapshot `key` (a committed layer or an active one) mounted read-only for a look.
struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    fn view(s: &dyn Snapshotter, layer: &str) -> Mounted {
        let key = format!("view-{layer}-{}", std::process::id());
        let mounts = s.view(&key, Some(layer), Labels::new()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        mount::mount(&mounts, dir.path()).unwrap();
        // The view's record can go right away: the mount holds the tree.
        s.remove(&key).unwrap();
        Mounted { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = mount::unmount(self.dir.path());
    }
}

fn no_snapshots(s: &dyn Snapshotter) -> Vec<String> {
    let mut keys = Vec::new();
    s.walk(&mut |i| {
        keys.push(i.key.clone());
        Ok(())
    })
    .unwrap();
    keys
}

fn everything_layer() -> Vec<u8> {
    let mut t = LayerTar::new();
    t.dir("etc/")
        .raw(
            tar::EntryType::Regular,
            b"etc/app.conf",
            b"",
            b"conf",
            0o640,
            (1000, 1001),
            &[
                ("SCHILY.xattr.user.origin", b"layer"),
                ("mtime", b"1700000000.25"),
            ],
        )
        .raw(
            tar::EntryType::Regular,
            b"bin/setuid",
            b"",
            b"\x7fELF",
            0o4755,
            (0, 0),
            &[],
        )
        .hardlink("bin/again", "bin/setuid")
        .symlink("etc/link", "/etc/app.conf")
        .device(tar::EntryType::Char, "dev/null2", 1, 3)
        .raw(
            tar::EntryType::Fifo,
            b"run/fifo",
            b"",
            b"",
            0o600,
            (0, 0),
            &[],
        );
    // A name longer than the header holds, through a PAX path record.
    let long = format!("deep/{}/file", "d".repeat(150));
    t.raw(
        tar::EntryType::Regular,
        b"deep/short",
        b"",
        b"long",
        0o644,
        (0, 0),
        &[("path", long.as_bytes())],
    );
    t.finish()
}

#[test]
fn a_layer_arrives_intact_in_every_compression_and_driver() {
    let tar = everything_layer();
    for d in drivers() {
        let s = d.snapshotter.as_ref();
        for (name, blob) in [
            ("plain", tar.clone()),
            ("gzip", gzip(&tar)),
            ("zstd", zstd(&tar)),
        ] {
            let opts = ApplyOptions {
                digest: Some(sha256(&blob)),
                ..Default::default()
            };
            let applied = layer::apply_layer(s, name, None, blob.as_slice(), &opts, Labels::new())
                .unwrap_or_else(|e| panic!("{} {name}: {e}", s.driver()));
            assert_eq!(applied.diff_id, sha256(&tar), "{name}");
            let m = Mounted::view(s, name);
            let p = m.path();
            let conf = fs::symlink_metadata(p.join("etc/app.conf")).unwrap();
            assert_eq!(fs::read(p.join("etc/app.conf")).unwrap(), b"conf");
            assert_eq!(
                (conf.uid(), conf.gid(), conf.mode() & 0o7777),
                (1000, 1001, 0o640)
            );
            assert_eq!(
                (conf.mtime(), conf.mtime_nsec()),
                (1_700_000_000, 250_000_000)
            );
            let mut value = [0u8; 16];
            let n =
                rustix::fs::lgetxattr(p.join("etc/app.conf"), "user.origin", &mut value).unwrap();
            assert_eq!(&value[..n], b"layer");
            let setuid = fs::symlink_metadata(p.join("bin/setuid")).unwrap();
            assert_eq!(setuid.mode() & 0o7777, 0o4755, "{}", s.driver());
            let again = fs::symlink_metadata(p.join("bin/again")).unwrap();
            assert_eq!(again.ino(), setuid.ino(), "hardlink kept");
            assert_eq!(
                fs::read_link(p.join("etc/link")).unwrap(),
                PathBuf::from("/etc/app.conf")
            );
            assert!(
                fs::symlink_metadata(p.join("dev/null2"))
                    .unwrap()
                    .file_type()
                    .is_char_device()
            );
            assert!(
                fs::symlink_metadata(p.join("run/fifo"))
                    .unwrap()
                    .file_type()
                    .is_fifo()
            );
            let long = format!("deep/{}/file", "d".repeat(150));
            assert_eq!(fs::read(p.join(long)).unwrap(), b"long");
        }
    }
}

#[test]
fn whiteouts_and_opaque_directories_hide_lower_files() {
    let mut base = LayerTar::new();
    base.file("a/x", b"x")
        .file("a/y", b"y")
        .file("b/old", b"o")
        .file("c/z", b"z");
    let base = base.finish();
    let mut top = LayerTar::new();
    top.file("a/.wh.x", b"")
        .dir("b/")
        .file("b/.wh..wh..opq", b"")
        .file("b/new", b"n")
        .file(".wh.c", b"");
    let top = top.finish();
    for d in drivers() {
        let s = d.snapshotter.as_ref();
        let opts = ApplyOptions::default();
        layer::apply_layer(s, "base", None, base.as_slice(), &opts, Labels::new()).unwrap();
        layer::apply_layer(s, "top", Some("base"), top.as_slice(), &opts, Labels::new()).unwrap();
        let m = Mounted::view(s, "top");
        let names = |dir: &str| {
            let mut v: Vec<String> = fs::read_dir(m.path().join(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names("a"), ["y"], "{}", s.driver());
        assert_eq!(names("b"), ["new"], "{}", s.driver());
        assert!(!m.path().join("c").exists(), "{}", s.driver());
        // A container on top sees the same.
        let c = tempfile::tempdir().unwrap();
        mount::mount(
            &s.prepare("ctr", Some("top"), Labels::new()).unwrap(),
            c.path(),
        )
        .unwrap();
        assert_eq!(fs::read(c.path().join("b/new")).unwrap(), b"n");
        assert!(!c.path().join("a/x").exists());
        mount::unmount(c.path()).unwrap();
    }
}

#[test]
fn bad_layers_fail_and_leave_nothing() {
    let good = gzip(&everything_layer());
    let mut truncated = LayerTar::new();
    truncated.file("big", &[7u8; 100_000]);
    let truncated = truncated.finish()[..50_000].to_vec();
    let mut corrupt = good.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    // A whiteout whose name is longer than any file name can be (PAX path).
    let long_name = format!(".wh.{}", "x".repeat(600));
    let mut long_whiteout = LayerTar::new();
    long_whiteout.raw(
        tar::EntryType::Regular,
        b"placeholder",
        b"",
        b"",
        0o644,
        (0, 0),
        &[("path", long_name.as_bytes())],
    );
    let long_whiteout = long_whiteout.finish();
    for d in drivers() {
        let s = d.snapshotter.as_ref();
        let cases: Vec<(&str, Vec<u8>, ApplyOptions)> = vec![
            (
                "digest",
                good.clone(),
                ApplyOptions {
                    digest: Some(sha256(b"something else")),
                    ..Default::default()
                },
            ),
            ("truncated", truncated.clone(), ApplyOptions::default()),
            ("corrupt", corrupt.clone(), ApplyOptions::default()),
            (
                "long whiteout",
                long_whiteout.clone(),
                ApplyOptions::default(),
            ),
        ];
        for (what, blob, opts) in cases {
            let e = layer::apply_layer(s, "l", None, blob.as_slice(), &opts, Labels::new())
                .expect_err(what);
            match what {
                "digest" => assert!(matches!(e, Error::Digest { .. }), "{e}"),
                _ => assert!(matches!(e, Error::Layer(_)), "{what}: {e}"),
            }
            assert!(
                no_snapshots(s).is_empty(),
                "{what} left {:?}",
                no_snapshots(s)
            );
        }
    }
}

#[test]
fn a_full_disk_is_an_error_and_leaves_nothing() {
    // A 1 MiB tmpfs for vfs; a small ext4 for erofs (the kernel mounts its images from disk
    // filesystems only), filled first.
    let tmpfs = ScratchFs::tmpfs(1024);
    let ext4 = ScratchFs::ext4(16);
    let drivers: Vec<(&str, &Path, Box<dyn Snapshotter>)> = vec![
        (
            "vfs",
            tmpfs.path(),
            Box::new(Vfs::open(&tmpfs.path().join("vfs")).unwrap()),
        ),
        (
            "erofs",
            ext4.path(),
            Box::new(berth_storage::Erofs::open(&ext4.path().join("erofs")).unwrap()),
        ),
    ];
    for (name, fs, s) in &drivers {
        let mut t = LayerTar::new();
        t.file("huge", &vec![1u8; 32 << 20]);
        let e = layer::apply_layer(
            s.as_ref(),
            "l",
            None,
            t.finish().as_slice(),
            &ApplyOptions::default(),
            Labels::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("No space left"), "{name}: {e}");
        assert!(no_snapshots(s.as_ref()).is_empty());
        let left: Vec<_> = fs::read_dir(fs.join(name).join("snapshots"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{name}: {left:?}");
    }
}

/// A host directory that must stay empty, and a layer attacking it.
fn attack(build: impl FnOnce(&mut LayerTar, &Path)) -> (tempfile::TempDir, Vec<u8>) {
    let host = tempfile::tempdir().unwrap();
    let mut t = LayerTar::new();
    build(&mut t, host.path());
    (host, t.finish())
}

fn host_untouched(host: &Path) {
    let left: Vec<_> = fs::read_dir(host).unwrap().collect();
    assert!(
        left.is_empty(),
        "the layer wrote outside the snapshot: {left:?}"
    );
}

#[test]
fn hostile_layers_never_write_outside_the_snapshot() {
    for d in drivers() {
        let s = d.snapshotter.as_ref();
        let opts = ApplyOptions::default();
        let apply =
            |name: &str, tar: &[u8]| layer::apply_layer(s, name, None, tar, &opts, Labels::new());

        // `..` in a name is refused outright.
        let (host, tar) = attack(|t, host| {
            let name = format!("../../../../../../..{}/evil", host.display());
            t.file(&name, b"x");
        });
        let e = apply("dotdot", &tar).unwrap_err();
        assert!(e.to_string().contains("climbs out"), "{e}");
        host_untouched(host.path());

        // An absolute name is inside the snapshot.
        let (host, tar) = attack(|t, host| {
            t.file(&format!("{}/abs", host.display()), b"x");
        });
        apply("absolute", &tar).unwrap();
        host_untouched(host.path());

        // A symlink to the host directory, then a file written through it (absolute and
        // relative targets).
        let (host, tar) = attack(|t, host| {
            t.symlink("link", &host.display().to_string())
                .file("link/through", b"x")
                .symlink("rel", &format!("../../../../../../..{}", host.display()))
                .file("rel/through", b"x");
        });
        apply("through-symlink", &tar).unwrap();
        host_untouched(host.path());

        // Hardlinks to files outside the layer.
        let secret = tempfile::NamedTempFile::new().unwrap();
        let links_before = fs::metadata(secret.path()).unwrap().nlink();
        let mut t = LayerTar::new();
        t.hardlink("h", &secret.path().display().to_string());
        let e = apply("hardlink-abs", &t.finish()).unwrap_err();
        assert!(e.to_string().contains("not in the layer"), "{e}");
        let mut t = LayerTar::new();
        t.symlink(
            "dir",
            &secret.path().parent().unwrap().display().to_string(),
        )
        .hardlink(
            "h",
            &format!(
                "dir/{}",
                secret.path().file_name().unwrap().to_string_lossy()
            ),
        );
        let e = apply("hardlink-via-symlink", &t.finish()).unwrap_err();
        assert!(e.to_string().contains("not in the layer"), "{e}");
        let mut t = LayerTar::new();
        t.hardlink("h", "../../../../etc/passwd");
        let e = apply("hardlink-dotdot", &t.finish()).unwrap_err();
        assert!(e.to_string().contains("climbs out"), "{e}");
        assert_eq!(fs::metadata(secret.path()).unwrap().nlink(), links_before);

        // Oversized extension headers are refused before anything is read into memory.
        for typ in [tar::EntryType::GNULongName, tar::EntryType::XHeader] {
            let mut t = LayerTar::new();
            t.oversized_extension(typ, 1 << 40);
            let e = apply("oversized", &t.finish()).unwrap_err();
            assert!(
                e.to_string().contains("header of 1099511627776 bytes"),
                "{e}"
            );
        }
        assert!(
            no_snapshots(s)
                .iter()
                .all(|k| k == "absolute" || k == "through-symlink")
        );
    }
}

#[test]
fn device_nodes_follow_the_policy() {
    let mut t = LayerTar::new();
    t.device(tar::EntryType::Block, "dev/sda", 8, 0)
        .file("ok", b"1");
    let tar = t.finish();
    let root = tempfile::tempdir().unwrap();
    let s = Vfs::open(root.path()).unwrap();
    let skip = ApplyOptions {
        devices: DevicePolicy::Skip,
        ..Default::default()
    };
    layer::apply_layer(&s, "skipped", None, tar.as_slice(), &skip, Labels::new()).unwrap();
    let m = Mounted::view(&s, "skipped");
    assert!(m.path().join("ok").exists());
    assert!(
        !m.path().join("dev/sda").exists(),
        "an unprivileged apply made a device node"
    );
    let refuse = ApplyOptions {
        devices: DevicePolicy::Refuse,
        ..Default::default()
    };
    let e = layer::apply_layer(&s, "refused", None, tar.as_slice(), &refuse, Labels::new())
        .unwrap_err();
    assert!(
        e.to_string().contains("device nodes are not allowed"),
        "{e}"
    );
}

#[test]
fn a_parent_swapped_for_a_symlink_during_extraction_stays_inside() {
    let host = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let s = Vfs::open(root.path()).unwrap();
    s.prepare("target", None, Labels::new()).unwrap();
    let dir = s.apply_target("target").unwrap().dir;
    std::os::unix::fs::symlink(host.path(), dir.join("evil")).unwrap();
    fs::create_dir(dir.join("d")).unwrap();
    let mut t = LayerTar::new();
    t.dir("d/");
    for i in 0..10000 {
        t.file(&format!("d/f{i}"), b"x");
    }
    let tar = t.finish();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racer = {
        let stop = stop.clone();
        let dir = dir.clone();
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    dir.join("d"),
                    rustix::fs::CWD,
                    dir.join("evil"),
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .is_ok()
                {
                    swaps += 1;
                }
            }
            swaps
        })
    };
    let target = s.apply_target("target").unwrap();
    let result = layer::apply(&target, tar.as_slice(), &ApplyOptions::default());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = racer.join().unwrap();
    assert!(swaps > 50, "the racer barely ran ({swaps})");
    // Failing is a safe outcome too; writing into the host directory is not.
    if let Err(e) = result {
        eprintln!("apply under the race: {e}");
    }
    host_untouched(host.path());
}

#[test]
fn a_containers_changes_become_a_layer_on_every_driver() {
    let mut base = LayerTar::new();
    base.file("keep", b"k")
        .file("gone", b"g")
        .file("dir/a", b"a")
        .file("dir/b", b"b")
        .file("edit", b"1");
    let base = base.finish();
    for d in drivers() {
        let s = d.snapshotter.as_ref();
        let name = s.driver();
        layer::apply_layer(
            s,
            "base",
            None,
            base.as_slice(),
            &ApplyOptions::default(),
            Labels::new(),
        )
        .unwrap();
        let c = tempfile::tempdir().unwrap();
        mount::mount(
            &s.prepare("ctr", Some("base"), Labels::new()).unwrap(),
            c.path(),
        )
        .unwrap();
        fs::remove_file(c.path().join("gone")).unwrap();
        fs::remove_dir_all(c.path().join("dir")).unwrap();
        fs::create_dir(c.path().join("dir")).unwrap();
        fs::write(c.path().join("dir/c"), b"c").unwrap();
        fs::write(c.path().join("edit"), b"2").unwrap();
        fs::write(c.path().join("new"), b"n").unwrap();

        let mut tar = Vec::new();
        layer::diff(&s.changes("ctr").unwrap(), &mut tar).unwrap();
        // Applied on the same base with vfs, the result is what the container saw.
        let vroot = tempfile::tempdir().unwrap();
        let v = Vfs::open(vroot.path()).unwrap();
        layer::apply_layer(
            &v,
            "base",
            None,
            base.as_slice(),
            &ApplyOptions::default(),
            Labels::new(),
        )
        .unwrap();
        layer::apply_layer(
            &v,
            "committed",
            Some("base"),
            tar.as_slice(),
            &ApplyOptions::default(),
            Labels::new(),
        )
        .unwrap();
        let m = Mounted::view(&v, "committed");
        assert_eq!(tree(m.path()), tree(c.path()), "{name}");
        mount::unmount(c.path()).unwrap();
    }
}

/// A comparable picture of a tree: every path with its type, mode, owner, mtime, content or
/// link target, xattrs and hardlink group.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut inodes = std::collections::HashMap::new();
    fn walk(
        root: &Path,
        rel: &Path,
        out: &mut Vec<String>,
        inodes: &mut std::collections::HashMap<u64, String>,
    ) {
        let abs = root.join(rel);
        let m = fs::symlink_metadata(&abs).unwrap();
        let ft = m.file_type();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("symlink {}", fs::read_link(&abs).unwrap().display())
        } else if ft.is_file() {
            format!("file {:?}", fs::read(&abs).unwrap())
        } else {
            format!("node {:o} {}", m.mode() & 0o170000, m.rdev())
        };
        let mut xattrs = Vec::new();
        let mut names = vec![0u8; 4096];
        if let Ok(n) = rustix::fs::llistxattr(&abs, &mut names) {
            for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
                let name = String::from_utf8_lossy(name).into_owned();
                if name.starts_with("trusted.overlay.") {
                    continue;
                }
                let mut v = vec![0u8; 4096];
                let len = rustix::fs::lgetxattr(&abs, name.as_str(), &mut v).unwrap();
                xattrs.push(format!("{name}={:?}", &v[..len]));
            }
        }
        xattrs.sort();
        let link = if !ft.is_dir() && m.nlink() > 1 {
            inodes
                .entry(m.ino())
                .or_insert_with(|| rel.display().to_string())
                .clone()
        } else {
            String::new()
        };
        // Directory times change with their contents on the way; symlink modes are fixed.
        let mtime = if ft.is_dir() {
            (0, 0)
        } else {
            (m.mtime(), m.mtime_nsec())
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            m.mode() & 0o7777
        };
        out.push(format!(
            "{} {what} mode={mode:o} owner={}:{} mtime={mtime:?} xattrs={xattrs:?} link={link}",
            rel.display(),
            m.uid(),
            m.gid()
        ));
        if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&abs)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                walk(root, &rel.join(n), out, inodes);
            }
        }
    }
    walk(root, Path::new(""), &mut out, &mut inodes);
    out
}

mod round_trip {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Node {
        File(Vec<u8>, u32, (u32, u32), i64, u32, Option<Vec<u8>>),
        Dir(u32),
        Symlink(String),
        Hardlink(usize),
        Fifo(u32),
    }

    fn node() -> impl Strategy<Value = Node> {
        prop_oneof![
            4 => (
                proptest::collection::vec(any::<u8>(), 0..2048),
                prop_oneof![Just(0o644u32), Just(0o755), Just(0o600), Just(0o4755), Just(0o1777)],
                (0u32..3000, 0u32..3000),
                0i64..2_000_000_000,
                0u32..1_000_000_000,
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            )
                .prop_map(|(d, m, o, s, ns, x)| Node::File(d, m, o, s, ns, x)),
            2 => prop_oneof![Just(0o755u32), Just(0o700), Just(0o1777)].prop_map(Node::Dir),
            1 => "[a-z/.]{1,40}".prop_map(Node::Symlink),
            1 => (0usize..64).prop_map(Node::Hardlink),
            1 => prop_oneof![Just(0o600u32), Just(0o644)].prop_map(Node::Fifo),
        ]
    }

    /// Builds the tree: node i lives in one of the directories made so far.
    fn build(root: &Path, nodes: &[Node]) {
        let mut dirs = vec![PathBuf::new()];
        let mut files: Vec<PathBuf> = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let rel = dirs[i % dirs.len()].join(format!("n{i}"));
            let abs = root.join(&rel);
            match n {
                Node::File(data, mode, (uid, gid), secs, nsec, xattr) => {
                    fs::write(&abs, data).unwrap();
                    if let Some(x) = xattr {
                        rustix::fs::lsetxattr(&abs, "user.t", x, rustix::fs::XattrFlags::empty())
                            .unwrap();
                    }
                    std::os::unix::fs::lchown(&abs, Some(*uid), Some(*gid)).unwrap();
                    rustix::fs::chmod(&abs, rustix::fs::Mode::from_raw_mode(*mode)).unwrap();
                    let t = rustix::fs::Timespec {
                        tv_sec: *secs,
                        tv_nsec: *nsec as _,
                    };
                    rustix::fs::utimensat(
                        rustix::fs::CWD,
                        &abs,
                        &rustix::fs::Timestamps {
                            last_access: t,
                            last_modification: t,
                        },
                        rustix::fs::AtFlags::empty(),
                    )
                    .unwrap();
                    files.push(rel);
                }
                Node::Dir(mode) => {
                    fs::create_dir(&abs).unwrap();
                    rustix::fs::chmod(&abs, rustix::fs::Mode::from_raw_mode(*mode)).unwrap();
                    dirs.push(rel);
                }
                Node::Symlink(target) => std::os::unix::fs::symlink(target, &abs).unwrap(),
                Node::Hardlink(k) => {
                    if !files.is_empty() {
                        fs::hard_link(root.join(&files[k % files.len()]), &abs).unwrap();
                    }
                }
                Node::Fifo(mode) => {
                    rustix::fs::mknodat(
                        rustix::fs::CWD,
                        &abs,
                        rustix::fs::FileType::Fifo,
                        rustix::fs::Mode::from_raw_mode(*mode),
                        0,
                    )
                    .unwrap();
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn apply_of_diff_gives_the_tree_back(nodes in proptest::collection::vec(node(), 1..40)) {
            let root = tempfile::tempdir().unwrap();
            let s = Vfs::open(root.path()).unwrap();
            s.prepare("x", None, Labels::new()).unwrap();
            let x = s.apply_target("x").unwrap().dir;
            build(&x, &nodes);
            let mut tar = Vec::new();
            layer::diff(&Changes::Compare { lower: None, upper: x.clone() }, &mut tar).unwrap();
            layer::apply_layer(&s, "y", None, tar.as_slice(), &ApplyOptions::default(), Labels::new()).unwrap();
            let m = Mounted::view(&s, "y");
            prop_assert_eq!(tree(&x), tree(m.path()));
            // And the layer of the copy is the same bytes.
            let mut again = Vec::new();
            layer::diff(&Changes::Compare { lower: None, upper: m.path().to_path_buf() }, &mut again).unwrap();
            prop_assert!(again == tar, "diff is not deterministic");
        }
    }
}

#[test]
fn a_process_killed_mid_apply_leaves_nothing_after_cleanup() {
    let bin = berth_kernel_tests::harness::workspace_binary("berth-layer");
    let root = tempfile::tempdir().unwrap();
    let mut t = LayerTar::new();
    for i in 0..200 {
        t.file(&format!("f{i}"), &vec![i as u8; 64 * 1024]);
    }
    let tar = t.finish();
    let mut child = std::process::Command::new(&bin)
        .args(["apply", "vfs"])
        .arg(root.path())
        .arg("layer")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Half the layer, then the process dies while waiting for the rest.
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write as _;
    stdin.write_all(&tar[..tar.len() / 2]).unwrap();
    stdin.flush().unwrap();
    let scratch_exists = || {
        fs::read_to_string(root.path().join("metadata.json"))
            .is_ok_and(|m| m.contains(berth_storage::EXTRACT_PREFIX))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !scratch_exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the apply never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);

    let s = Vfs::open(root.path()).unwrap();
    assert!(
        !no_snapshots(&s).is_empty(),
        "the killed apply left its scratch snapshot"
    );
    s.cleanup().unwrap();
    assert!(no_snapshots(&s).is_empty());
    assert_eq!(
        fs::read_dir(root.path().join("snapshots")).unwrap().count(),
        0
    );
    // And the layer applies afterwards.
    layer::apply_layer(
        &s,
        "layer",
        None,
        tar.as_slice(),
        &ApplyOptions::default(),
        Labels::new(),
    )
    .unwrap();
}
