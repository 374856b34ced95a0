//! Builds the test fixtures (idempotent): `berth-fixtures [DIR]`, default target/fixtures.

use std::path::PathBuf;

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| berth_kernel_tests::fixtures::target_dir().join("fixtures"));
    match berth_kernel_tests::fixtures::build(&dir) {
        Ok(f) => {
            println!("busybox bundle:   {}", f.bundle.display());
            println!("busybox rootfs:   {}", f.rootfs.display());
            println!("busybox OCI image: {}", f.oci_layout.display());
        }
        Err(e) => {
            eprintln!("berth-fixtures: {e}");
            std::process::exit(1);
        }
    }
}
