//! The fixtures themselves: the busybox bundle runs, and the OCI layout is valid for real
//! clients (umoci unpacks it to the same files).

use std::process::Command;

use berth_kernel_tests::fixtures;

#[test]
fn oci_layout_digests_match() {
    fixtures::verify_oci_layout(&fixtures::busybox().oci_layout).unwrap();
}

#[test]
fn umoci_unpacks_the_layout() {
    let f = fixtures::busybox();
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("bundle");
    let status = Command::new("umoci")
        .args(["raw", "unpack", "--image"])
        .arg(format!("{}:latest", f.oci_layout.display()))
        .arg(&bundle)
        .status()
        .expect("umoci (apt package umoci) is installed by the test command");
    assert!(status.success());
    let unpacked = std::fs::read(bundle.join("bin/busybox")).unwrap();
    let original = std::fs::read(f.rootfs.join("bin/busybox")).unwrap();
    assert_eq!(unpacked, original);
    assert_eq!(
        std::fs::read_link(bundle.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
}

#[test]
fn building_again_is_a_no_op() {
    let f = fixtures::busybox();
    let before = std::fs::metadata(f.oci_layout.join("index.json"))
        .unwrap()
        .modified()
        .unwrap();
    fixtures::build(&f.dir).unwrap();
    let after = std::fs::metadata(f.oci_layout.join("index.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);
}
