//! Compiles the datapath's C programs with clang (`-target bpf`) into OUT_DIR. clang and the
//! libbpf headers come from Debian (`clang`, `libbpf-dev`); the test command installs them.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let clang = env::var("BERTH_CLANG").unwrap_or_else(|_| "clang".into());
    // The asm/ headers linux/ includes live under the multiarch directory.
    let multiarch = format!(
        "/usr/include/{}-linux-gnu",
        env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into())
    );
    // (object, source, extra flags)
    for (name, source, defines) in [
        ("datapath", "datapath", ""),
        ("datapath-pinned", "datapath", "-DBERTH_PINNED"),
        ("ports", "ports", ""),
    ] {
        let src = format!("programs/{source}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-c", &src])
            .args(defines.split_whitespace())
            .arg(format!("-I{multiarch}"))
            .arg("-o")
            .arg(out.join(format!("{name}.o")))
            .status()
            .unwrap_or_else(|e| {
                panic!("{clang}: {e}: the BPF programs need clang and libbpf-dev (apt-get install clang libbpf-dev)")
            });
        assert!(status.success(), "{clang} failed on {src}");
    }
}
