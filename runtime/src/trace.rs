//! Start-path timing marks, off unless `BERTH_RUNTIME_TRACE` is set: each mark writes
//! `berth-trace <pid> <monotonic ns> <label>` to stderr. Parent and child use the same clock,
//! so their lines merge into one timeline ("Where the start time goes" in ARCHITECTURE.md was
//! measured this way). Disabled, a mark costs one relaxed atomic load.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let on = std::env::var_os("BERTH_RUNTIME_TRACE").is_some();
            STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
            on
        }
    }
}

/// Records that the start path reached `label`.
pub fn mark(label: &str) {
    if !enabled() {
        return;
    }
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let ns = now.tv_sec as u128 * 1_000_000_000 + now.tv_nsec as u128;
    let line = format!("berth-trace {} {ns} {label}\n", std::process::id());
    let _ = std::io::stderr().write_all(line.as_bytes());
}
