//! `berth-layer`: layer apply and diff from the command line, for tests that need a process to
//! kill mid-apply and for whole-command benchmarks beside `tar -x` and `umoci`.
//!
//!   berth-layer apply DRIVER ROOT NAME [PARENT] < LAYER     (prints the digest and diff_id)
//!   berth-layer cleanup DRIVER ROOT
//!
//! DRIVER is vfs, overlay2 or btrfs.

use std::io::Write;
use std::path::Path;

use berth_storage::Labels;
use berth_storage::layer::{self, ApplyOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["apply", driver, root, name, rest @ ..] if rest.len() <= 1 => {
            berth_storage::open(driver, Path::new(root)).and_then(|s| {
                let stdin = std::io::stdin();
                let applied = layer::apply_layer(
                    s.as_ref(),
                    name,
                    rest.first().copied(),
                    stdin,
                    &ApplyOptions::default(),
                    Labels::new(),
                )?;
                let _ = writeln!(std::io::stdout(), "{} {}", applied.digest, applied.diff_id);
                Ok(())
            })
        }
        ["cleanup", driver, root] => {
            berth_storage::open(driver, Path::new(root)).and_then(|s| s.cleanup())
        }
        _ => {
            eprintln!(
                "usage: berth-layer apply DRIVER ROOT NAME [PARENT] < LAYER | cleanup DRIVER ROOT"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("berth-layer: {e}");
        std::process::exit(1);
    }
}
