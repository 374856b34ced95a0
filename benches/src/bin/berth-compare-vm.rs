//! `berth-compare-vm`: berth-compare on pure cgroup v2, inside the VM harness (Debian's kernel
//! in qemu; this host is hybrid). berth-runtime, crun and runc run the same bundles there, so
//! the v2 start path (clone3 with CLONE_INTO_CGROUP) is measured beside its peers. Under TCG
//! absolute times are meaningless: read the ratios. Arguments go to berth-compare; the
//! guest's table is printed and written to target/bench/compare-v2.md.

use std::path::PathBuf;
use std::time::Duration;

use berth_kernel_tests::{fixtures, vm};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let me = std::env::current_exe().expect("own path");
    let dir = me.parent().expect("target/<triple>/release");
    let compare = dir.join("berth-compare");
    let runtime = berth_benches::runtime_binary().expect("berth-runtime built beside");
    let kernel = vm::kernel().unwrap_or_else(|e| fail(&format!("Debian kernel: {e}")));
    let mut initramfs = vm::Initramfs::new();
    for bin in [compare.clone(), runtime] {
        initramfs
            .binary(&bin)
            .unwrap_or_else(|e| fail(&format!("{}: {e}", bin.display())));
    }
    for peer in ["crun", "runc"] {
        match which(peer) {
            Some(p) => initramfs
                .binary(&p)
                .unwrap_or_else(|e| fail(&format!("{peer}: {e}"))),
            None => eprintln!("berth-compare-vm: {peer} is not installed; left out"),
        }
    }
    initramfs
        .busybox_fixtures()
        .unwrap_or_else(|e| fail(&format!("fixtures: {e}")));
    let command = format!(
        "{} --out /tmp/bench {} 2>&1 && cat /tmp/bench/compare.md\n",
        compare.display(),
        args.join(" ")
    );
    let run = vm::run_in_vm(&kernel, initramfs, &[], &command, Duration::from_secs(3600))
        .unwrap_or_else(|e| fail(&format!("VM: {e}")));
    let table: String = run
        .console
        .lines()
        .skip_while(|l| !l.starts_with("# Container start"))
        .take_while(|l| !l.starts_with("BERTH-VM-EXIT"))
        .map(|l| format!("{l}\n"))
        .collect();
    if run.status != Some(0) || table.is_empty() {
        eprintln!("{}", run.console);
        fail(&format!("the guest run failed ({:?})", run.status));
    }
    let out = fixtures::target_dir().join("bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let header = format!(
        "Pure cgroup v2, in qemu (Debian kernel {}), {:?} in all.\n\n",
        kernel.version, run.took
    );
    std::fs::write(out.join("compare-v2.md"), format!("{header}{table}")).expect("write");
    print!("{header}{table}");
}

fn which(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.exists())
}

fn fail(msg: &str) -> ! {
    eprintln!("berth-compare-vm: {msg}");
    std::process::exit(1);
}
