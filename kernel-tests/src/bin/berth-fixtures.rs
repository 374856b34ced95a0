//! Builds the test fixtures (idempotent): `berth-fixtures [DIR]`, default target/fixtures;
//! `berth-fixtures --minbase` builds the Debian minbase layer the storage benches apply, and
//! `berth-fixtures --debian-image` the multi-layer Debian image of the registry tests.

use std::path::PathBuf;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--minbase") {
        match berth_kernel_tests::fixtures::minbase_layer() {
            Ok(l) => println!("minbase layer: {} (+ .gz, .zst)", l.tar.display()),
            Err(e) => {
                eprintln!("berth-fixtures: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("--debian-image") {
        match berth_kernel_tests::fixtures::debian_image() {
            Ok(i) => println!("debian image ({}): {}", i.tag, i.archive.display()),
            Err(e) => {
                eprintln!("berth-fixtures: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| berth_kernel_tests::fixtures::target_dir().join("fixtures"));
    match berth_kernel_tests::fixtures::build(&dir) {
        Ok(f) => {
            println!("busybox bundle:   {}", f.bundle.display());
            println!("busybox rootfs:   {}", f.rootfs.display());
            println!("busybox OCI image: {}", f.oci_layout.display());
            println!("busybox docker archive: {}", f.docker_archive.display());
        }
        Err(e) => {
            eprintln!("berth-fixtures: {e}");
            std::process::exit(1);
        }
    }
}
