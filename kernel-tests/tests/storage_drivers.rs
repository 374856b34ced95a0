//! The snapshotter contract on every driver (keys, parents, kinds, errors, walk order, usage,
//! crash cleanup; the drivers are `berth_kernel_tests::storage`'s), overlay's depth (128 and
//! 500 layers mount, 501 is a clear error), btrfs's read-only commits and erofs's layer images.

use std::fs;
use std::path::Path;

use berth_kernel_tests::scratch_fs::ScratchFs;
use berth_kernel_tests::storage;
use berth_storage::{Btrfs, EXTRACT_PREFIX, Error, Kind, Labels, Overlay, Snapshotter, mount};

fn with_each_driver(f: impl Fn(&dyn Snapshotter, &Path)) {
    for d in storage::drivers() {
        f(d.snapshotter.as_ref(), &d.root);
    }
}

/// A committed layer holding `files` (name → content), on `parent`.
fn layer(s: &dyn Snapshotter, name: &str, parent: Option<&str>, files: &[(&str, &str)]) {
    let key = format!("{EXTRACT_PREFIX}{name}");
    s.prepare(&key, parent, Labels::new()).unwrap();
    let dir = s.apply_target(&key).unwrap().dir;
    for (f, content) in files {
        fs::write(dir.join(f), content).unwrap();
    }
    s.commit(name, &key, Labels::new()).unwrap();
}

#[test]
fn the_snapshotter_contract() {
    with_each_driver(|s, _| {
        let d = s.driver();
        layer(s, "base", None, &[("a", "1")]);
        layer(s, "mid", Some("base"), &[("b", "2")]);
        // Keys are unique, parents must exist and be committed.
        assert!(
            matches!(
                s.prepare("base", None, Labels::new()),
                Err(Error::Exists(_))
            ),
            "{d}"
        );
        assert!(
            matches!(
                s.prepare("x", Some("nope"), Labels::new()),
                Err(Error::NotFound(_))
            ),
            "{d}"
        );
        s.prepare("ctr", Some("mid"), Labels::new()).unwrap();
        assert!(
            s.prepare("y", Some("ctr"), Labels::new()).is_err(),
            "{d}: parent not committed"
        );
        assert!(
            s.commit("z", "base", Labels::new()).is_err(),
            "{d}: commit of a committed one"
        );
        // A parent with children stays.
        assert!(s.remove("mid").is_err(), "{d}");

        // The container sees both layers and writes its own.
        let root = tempfile::tempdir().unwrap();
        mount::mount(&s.mounts("ctr").unwrap(), root.path()).unwrap();
        assert_eq!(
            fs::read_to_string(root.path().join("a")).unwrap(),
            "1",
            "{d}"
        );
        assert_eq!(
            fs::read_to_string(root.path().join("b")).unwrap(),
            "2",
            "{d}"
        );
        fs::write(root.path().join("c"), vec![0u8; 64 * 1024]).unwrap();
        mount::unmount(root.path()).unwrap();
        let usage = s.usage("ctr").unwrap();
        assert!(
            usage.size >= 64 * 1024 && usage.inodes >= 2,
            "{d}: {usage:?}"
        );

        // Labels and kinds come back; walk gives parents first.
        let mut labels = Labels::new();
        labels.insert("containerd.io/gc.root".into(), "x".into());
        s.commit("top", "ctr", labels.clone()).unwrap();
        let info = s.stat("top").unwrap();
        assert_eq!(
            (info.kind, info.parent.as_deref(), info.labels),
            (Kind::Committed, Some("mid"), labels)
        );
        let mut order = Vec::new();
        s.walk(&mut |i| {
            order.push(i.key.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(order, ["base", "mid", "top"], "{d}");

        // A view is read-only.
        let view = tempfile::tempdir().unwrap();
        mount::mount(
            &s.view("v", Some("top"), Labels::new()).unwrap(),
            view.path(),
        )
        .unwrap();
        assert!(view.path().join("c").exists(), "{d}");
        let e = fs::write(view.path().join("d"), "x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{d}");
        mount::unmount(view.path()).unwrap();

        for k in ["v", "top", "mid", "base"] {
            s.remove(k).unwrap();
        }
        assert!(matches!(s.stat("base"), Err(Error::NotFound(_))));
    });
}

#[test]
fn cleanup_removes_what_a_crash_left() {
    with_each_driver(|s, root| {
        layer(s, "base", None, &[("a", "1")]);
        // An apply that never finished, and a directory no record names.
        s.prepare(
            &format!("{EXTRACT_PREFIX}half"),
            Some("base"),
            Labels::new(),
        )
        .unwrap();
        fs::create_dir(root.join("snapshots/999")).unwrap();
        fs::write(root.join("snapshots/999/junk"), "x").unwrap();
        s.cleanup().unwrap();
        let mut keys = Vec::new();
        s.walk(&mut |i| {
            keys.push(i.key.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(keys, ["base"], "{}", s.driver());
        let dirs = fs::read_dir(root.join("snapshots")).unwrap().count();
        assert_eq!(dirs, 1, "{}", s.driver());
    });
}

#[test]
fn overlay_mounts_128_and_500_layers_and_refuses_501() {
    let root = tempfile::tempdir().unwrap();
    let s = Overlay::open(root.path()).unwrap();
    let mut parent: Option<String> = None;
    for i in 0..501 {
        let name = format!("l{i}");
        let content = i.to_string();
        let file = format!("f{i}");
        layer(
            &s,
            &name,
            parent.as_deref(),
            &[(file.as_str(), content.as_str())],
        );
        parent = Some(name);
        if i + 1 == 128 || i + 1 == 500 {
            let c = tempfile::tempdir().unwrap();
            let key = format!("ctr{}", i + 1);
            mount::mount(
                &s.prepare(&key, parent.as_deref(), Labels::new()).unwrap(),
                c.path(),
            )
            .unwrap_or_else(|e| panic!("{} layers: {e}", i + 1));
            assert_eq!(fs::read_to_string(c.path().join("f0")).unwrap(), "0");
            assert_eq!(
                fs::read_to_string(c.path().join(format!("f{i}"))).unwrap(),
                i.to_string()
            );
            mount::unmount(c.path()).unwrap();
        }
    }
    // 501 layers below a container: refused when it is prepared, with the limit in the error.
    let e = s
        .prepare("ctr501", Some("l500"), Labels::new())
        .unwrap_err();
    assert!(e.to_string().contains("at most 500 layers"), "{e}");
}

#[test]
fn btrfs_commits_are_read_only_subvolumes() {
    let fs = ScratchFs::btrfs(256);
    let s = Btrfs::open(&fs.path().join("root")).unwrap();
    layer(&s, "base", None, &[("a", "1")]);
    let dir = fs.path().join("root/snapshots");
    let base_dir = fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("fs");
    let e = fs::write(base_dir.join("b"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    // A child is a writable snapshot sharing the parent's extents.
    s.prepare("ctr", Some("base"), Labels::new()).unwrap();
    let ctr = s.apply_target("ctr").unwrap().dir;
    assert_eq!(fs::read_to_string(ctr.join("a")).unwrap(), "1");
    fs::write(ctr.join("b"), "2").unwrap();
    s.remove("ctr").unwrap();
    s.remove("base").unwrap();
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn drivers_refuse_filesystems_they_cannot_use() {
    let not_btrfs = tempfile::tempdir().unwrap();
    let e = Btrfs::open(not_btrfs.path()).err().expect("btrfs on ext4");
    assert!(e.to_string().contains("is not on btrfs"), "{e}");
    // EROFS images are mounted from files on disk filesystems only.
    let tmpfs = ScratchFs::tmpfs(1024);
    let e = berth_storage::Erofs::open(&tmpfs.path().join("erofs"))
        .err()
        .expect("erofs on tmpfs");
    assert!(e.to_string().contains("disk filesystem"), "{e}");
}

#[test]
fn size_limits_are_btrfs_qgroups_and_refused_elsewhere() {
    let fs = ScratchFs::btrfs(256);
    let s = Btrfs::open(&fs.path().join("root")).unwrap();
    layer(&s, "base", None, &[("a", "1")]);
    let mut labels = Labels::new();
    labels.insert(
        berth_storage::SIZE_LIMIT_LABEL.into(),
        (8u64 << 20).to_string(),
    );
    s.prepare("ctr", Some("base"), labels.clone()).unwrap();
    let dir = s.apply_target("ctr").unwrap().dir;
    fs::write(dir.join("small"), vec![1u8; 1 << 20]).unwrap();
    let big = (|| {
        use std::io::Write;
        let mut f = fs::File::create(dir.join("big"))?;
        for _ in 0..32 {
            f.write_all(&[2u8; 1 << 20])?;
        }
        f.sync_all()
    })();
    let e = big.expect_err("32 MiB into an 8 MiB limit");
    assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}");
    s.remove("ctr").unwrap();

    let root = tempfile::tempdir().unwrap();
    let o = Overlay::open(root.path()).unwrap();
    let e = o.prepare("ctr", None, labels).unwrap_err();
    assert!(e.to_string().contains("need the btrfs driver"), "{e}");
    assert!(o.stat("ctr").is_err(), "a refused snapshot has no record");
}

#[test]
fn volatile_overlay_snapshots_survive_remounts_but_not_reboots() {
    let root = tempfile::tempdir().unwrap();
    let s = Overlay::open(root.path()).unwrap();
    layer(&s, "base", None, &[("a", "1")]);
    let mut labels = Labels::new();
    labels.insert(berth_storage::OVERLAY_VOLATILE_LABEL.into(), "true".into());
    let mounts = s.prepare("ctr", Some("base"), labels).unwrap();
    assert!(
        mounts[0].options.iter().any(|o| o == "volatile"),
        "{mounts:?}"
    );
    let c = tempfile::tempdir().unwrap();
    for round in 0..2 {
        // The second mount finds overlayfs's volatile mark from the first and clears it.
        mount::mount(&s.mounts("ctr").unwrap(), c.path())
            .unwrap_or_else(|e| panic!("mount {round}: {e}"));
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = info
            .lines()
            .find(|l| l.contains(&*c.path().to_string_lossy()))
            .unwrap();
        assert!(line.contains("volatile"), "{line}");
        fs::write(c.path().join(format!("w{round}")), "x").unwrap();
        mount::unmount(c.path()).unwrap();
    }
    // As if the host rebooted: the snapshot is refused, and cleanup removes it.
    let marker = fs::read_dir(root.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path().join("volatile-boot"))
        .find(|p| p.exists())
        .unwrap();
    fs::write(&marker, "an-earlier-boot").unwrap();
    let e = s.mounts("ctr").unwrap_err();
    assert!(e.to_string().contains("earlier boot"), "{e}");
    s.cleanup().unwrap();
    assert!(s.stat("ctr").is_err());
    assert!(s.stat("base").is_ok());
    // Only true or false.
    let mut bad = Labels::new();
    bad.insert(berth_storage::OVERLAY_VOLATILE_LABEL.into(), "yes".into());
    assert!(s.prepare("ctr2", Some("base"), bad).is_err());
    assert!(s.stat("ctr2").is_err());
}

#[test]
fn erofs_layers_are_images_mounted_again_on_demand() {
    use berth_kernel_tests::harness::mounts_under;
    use berth_kernel_tests::layers::LayerTar;
    use berth_storage::layer::{self, ApplyOptions};
    let d = storage::open("erofs");
    let s = d.snapshotter.as_ref();
    let apply = |name: &str, parent: Option<&str>, tar: LayerTar| {
        layer::apply_layer(
            s,
            name,
            parent,
            &tar.finish()[..],
            &ApplyOptions::default(),
            Labels::new(),
        )
        .unwrap();
    };
    let mut base = LayerTar::new();
    base.dir("etc/")
        .file("etc/hosts", b"127.0.0.1 localhost\n")
        .file("etc/gone", b"hidden above\n")
        .dir("var/")
        .file("var/old", b"below an opaque directory\n")
        .symlink("bin", "usr/bin")
        .dir("usr/")
        .dir("usr/bin/")
        .file("usr/bin/tool", b"#!/bin/sh\n")
        .hardlink("usr/bin/tool-again", "usr/bin/tool");
    apply("base", None, base);
    let mut top = LayerTar::new();
    top.file("etc/.wh.gone", b"")
        .dir("var/")
        .file("var/.wh..wh..opq", b"")
        .file("var/new", b"above\n")
        .file("etc/motd", b"hello\n");
    apply("top", Some("base"), top);

    // Each applied layer is one image, mounted; its snapshot holds nothing else.
    let mounted = mounts_under(&d.root, "erofs");
    assert_eq!(mounted.len(), 2, "{mounted:?}");
    let images: Vec<_> = fs::read_dir(d.root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("layer.erofs").is_file())
        .collect();
    assert_eq!(images.len(), 2);
    for dir in &images {
        let names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "{names:?}: layer.erofs and its mount point only"
        );
    }

    let check = |mounts: Vec<berth_storage::Mount>| {
        let target = tempfile::tempdir().unwrap();
        mount::mount(&mounts, target.path()).unwrap();
        let t = target.path();
        let read = |p: &str| fs::read_to_string(t.join(p)).ok();
        assert_eq!(read("etc/hosts").as_deref(), Some("127.0.0.1 localhost\n"));
        assert_eq!(read("etc/motd").as_deref(), Some("hello\n"));
        assert_eq!(read("etc/gone"), None, "the whiteout hides it");
        assert_eq!(read("var/old"), None, "the opaque directory hides it");
        assert_eq!(read("var/new").as_deref(), Some("above\n"));
        assert_eq!(read("bin/tool").as_deref(), Some("#!/bin/sh\n"));
        let a = fs::metadata(t.join("usr/bin/tool")).unwrap();
        let b = fs::metadata(t.join("usr/bin/tool-again")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "one inode, two names");
        // The container writes above the images.
        fs::write(t.join("etc/hosts"), "changed\n").unwrap();
        mount::unmount(t).unwrap();
    };
    check(s.prepare("ctr", Some("top"), Labels::new()).unwrap());

    // A reboot (or a daemon in another mount namespace): the images are not mounted, and the
    // mounts of a snapshot bring them back.
    for m in mounts_under(&d.root, "erofs") {
        rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH).unwrap();
    }
    assert!(mounts_under(&d.root, "erofs").is_empty());
    let reopened = berth_storage::Erofs::open(&d.root).unwrap();
    let mounts = reopened.mounts("ctr").unwrap();
    assert_eq!(mounts_under(&d.root, "erofs").len(), 2);
    let target = tempfile::tempdir().unwrap();
    mount::mount(&mounts, target.path()).unwrap();
    assert_eq!(
        fs::read_to_string(target.path().join("etc/hosts")).unwrap(),
        "changed\n",
        "the container's upper kept its write"
    );
    mount::unmount(target.path()).unwrap();

    // Removing the layers unmounts them.
    for key in ["ctr", "top", "base"] {
        reopened.remove(key).unwrap();
    }
    assert!(mounts_under(&d.root, "erofs").is_empty());
    assert_eq!(fs::read_dir(d.root.join("snapshots")).unwrap().count(), 0);
}
