//! `berth-monitor <state dir>`: holds one container's stdio and exit status (see
//! `berth_daemon::monitor`). Started by berthd only.

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: berth-monitor <container state dir> (started by berthd)");
        std::process::exit(2);
    };
    std::process::exit(berth_daemon::monitor::process::main(std::path::Path::new(
        &dir,
    )));
}
