//! `berth-compare`: container start time of berth-runtime beside crun, runc (and youki when
//! installed), on the same bundles, interleaved, as whole commands.
//!
//! Scenarios (each runtime runs the same config: /bin/true in busybox; pid, mount, ipc, uts,
//! network namespaces; a cgroup with memory and pids limits):
//! - `run`: `RUNTIME run` of /bin/true, wall and CPU time (user + sys of the runtime and the
//!   container, all reaped here);
//! - `lifecycle`: what containerd's shim does: `create --pid-file`, `start`, wait for the init
//!   to exit, `delete`;
//! - `concurrent`: N `run`s launched at once on 2 cores, total wall time (and N floors at once);
//! - `floor`: `unshare -m -p -n -i -u -f chroot ROOTFS /bin/true`.
//!
//! Rounds go through the runtimes in an order shuffled per round (the same orders every time),
//! and every runtime runs from a copy in `OUT/bin` (see [`installed_copy`]).
//!
//! `--docker-profile` adds Docker's capabilities and default seccomp profile to every bundle,
//! as Docker and containerd run containers.
//!
//! The harness runs in a private mount namespace. On a hybrid cgroup host it unmounts the
//! cgroup2 mount there, so crun (which refuses hybrid hosts) can run, and every runtime sees
//! the same pure-v1 layout. It is a child subreaper, so containers whose runtime exited are
//! reaped (and their CPU time counted) here.
//!
//! Writes `OUT/compare.json`, `OUT/compare.md` and `OUT/compare-run.svg` (the comparison script
//! turns it into PNG).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_benches::plot;
use serde_json::json;

struct Options {
    runs: usize,
    concurrency: usize,
    rounds: usize,
    out: PathBuf,
    runtimes: Vec<String>,
    /// Docker's capabilities and default seccomp profile in every bundle.
    docker_profile: bool,
}

fn parse_args() -> Options {
    let mut o = Options {
        runs: 30,
        concurrency: 100,
        rounds: 5,
        out: berth_kernel_tests::fixtures::target_dir().join("bench"),
        runtimes: vec!["berth".into(), "crun".into(), "runc".into()],
        docker_profile: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--runs" => o.runs = value().parse().unwrap_or_else(|_| usage("--runs N")),
            "--concurrency" => {
                o.concurrency = value().parse().unwrap_or_else(|_| usage("--concurrency N"))
            }
            "--rounds" => o.rounds = value().parse().unwrap_or_else(|_| usage("--rounds N")),
            "--out" => o.out = PathBuf::from(value()),
            "--runtimes" => o.runtimes = value().split(',').map(str::to_string).collect(),
            "--docker-profile" => o.docker_profile = true,
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    o
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("berth-compare: {msg}");
    }
    eprintln!(
        "usage: berth-compare [--runs N] [--concurrency N] [--rounds N] [--out DIR] [--runtimes berth,crun,runc,youki] [--docker-profile]"
    );
    std::process::exit(2)
}

/// How to call one runtime.
struct Runtime {
    name: String,
    binary: PathBuf,
    root: PathBuf,
}

impl Runtime {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.root).args(args);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }
}

/// Wall time and CPU time (user + sys) of one measured operation.
#[derive(Clone, Copy, Debug)]
struct Sample {
    wall: Duration,
    cpu: Duration,
}

fn tv(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000)
}

/// Runs a command and waits for it with wait4, returning its wall time and CPU time
/// (including everything it reaped). (wait4, not Child::wait: the rusage is the point.)
#[allow(clippy::zombie_processes)]
fn measure(mut cmd: Command, what: &str) -> Sample {
    let start = Instant::now();
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let (status, cpu) = wait_rusage(child.id() as libc::pid_t);
    let wall = start.elapsed();
    if !status_ok(status) {
        let mut err = String::new();
        if let Some(mut e) = child.stderr {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        panic!("{what} failed (status {status:#x}): {err}");
    }
    Sample { wall, cpu }
}

fn status_ok(status: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

fn wait_rusage(pid: libc::pid_t) -> (i32, Duration) {
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 writes into locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            return (status, tv(ru.ru_utime) + tv(ru.ru_stime));
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            panic!("wait4({pid}): {}", std::io::Error::last_os_error());
        }
    }
}

/// Reaps any orphaned container inits that ended up with us (we are a subreaper) and returns
/// the CPU time they used.
fn reap_orphans() -> Duration {
    let mut total = Duration::ZERO;
    loop {
        let mut status = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes into locals.
        let r = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut ru) };
        if r <= 0 {
            return total;
        }
        total += tv(ru.ru_utime) + tv(ru.ru_stime);
    }
}

fn private_cgroup_view() -> String {
    // SAFETY: unshare and mount on our own process; nothing else shares its mount table.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            panic!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error());
        }
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        );
    }
    let layout = berth_runtime::cgroups::Layout::detect().expect("cgroup layout");
    match layout.mode() {
        berth_runtime::cgroups::Mode::Hybrid => {
            let unified = layout.unified.expect("hybrid has cgroup2").mountpoint;
            let c = std::ffi::CString::new(unified.to_string_lossy().as_bytes()).unwrap();
            // SAFETY: umount of a path in our private mount namespace.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                panic!(
                    "umount {}: {}",
                    unified.display(),
                    std::io::Error::last_os_error()
                );
            }
            format!(
                "cgroup v1 (hybrid host; {} unmounted in the harness's mount namespace)",
                unified.display()
            )
        }
        berth_runtime::cgroups::Mode::Legacy => "cgroup v1".into(),
        berth_runtime::cgroups::Mode::Unified => "cgroup v2".into(),
    }
}

fn find_binary(name: &str) -> Option<PathBuf> {
    if name == "berth" {
        return berth_benches::runtime_binary().ok();
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/root/.cargo/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

struct Stats {
    median: f64,
    p10: f64,
    p90: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p10: at(0.1),
        p90: at(0.9),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[allow(clippy::zombie_processes)] // children are reaped with wait4 for their rusage
fn main() {
    let o = parse_args();
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let cgroup_view = private_cgroup_view();
    let rootfs = berth_kernel_tests::fixtures::busybox().rootfs.clone();
    let work = PathBuf::from(format!("/run/berth-compare-{}", std::process::id()));
    fs::create_dir_all(&work).unwrap();
    let cgroup_parent = format!("berth-compare-{}", std::process::id());

    let mut runtimes = Vec::new();
    for name in &o.runtimes {
        match find_binary(name) {
            Some(binary) => runtimes.push(Runtime {
                name: name.clone(),
                binary: installed_copy(&binary, &o.out.join("bin"), name),
                root: work.join(format!("root-{name}")),
            }),
            None if name == "berth" => usage(
                "berth-runtime is not built beside berth-compare: cargo build --release -p berth-runtime",
            ),
            None => eprintln!("berth-compare: {name} is not installed; left out"),
        }
    }
    let bundle = |rt: &str, n: usize| -> PathBuf {
        let dir = work.join(format!("bundle-{rt}-{n}"));
        if !dir.exists() {
            berth_benches::write_bundle(
                &dir,
                &format!("/{cgroup_parent}/{rt}-{n}"),
                o.docker_profile,
            )
            .unwrap();
        }
        dir
    };

    let mut results: BTreeMap<&str, BTreeMap<String, Vec<Sample>>> = BTreeMap::new();
    eprintln!(
        "berth-compare: {} runs per runtime and scenario, interleaved; {cgroup_view}",
        o.runs
    );
    for round in 0..o.runs {
        // A new order each round, so no runtime keeps running right after the same one (a
        // rotation would: what ran before leaves kernel work behind, e.g. cgroups to free).
        let mut order: Vec<&Runtime> = runtimes.iter().collect();
        shuffle(&mut order, round as u64);
        let floor = floor_command(&rootfs).spawn();
        let floor_sample = {
            let start = Instant::now();
            let child = floor.expect("unshare");
            let (status, cpu) = wait_rusage(child.id() as libc::pid_t);
            assert!(status_ok(status), "floor command failed");
            Sample {
                wall: start.elapsed(),
                cpu,
            }
        };
        results
            .entry("floor")
            .or_default()
            .entry("floor".into())
            .or_default()
            .push(floor_sample);
        for rt in &order {
            let b = bundle(&rt.name, 0);
            let id = format!("cmp-{}", rt.name);
            let s = measure(
                rt.command(&["run", "--bundle", b.to_str().unwrap(), &id]),
                &format!("{} run", rt.name),
            );
            let s = Sample {
                cpu: s.cpu + reap_orphans(),
                ..s
            };
            results
                .entry("run")
                .or_default()
                .entry(rt.name.clone())
                .or_default()
                .push(s);

            // containerd's sequence.
            let pid_file = work.join(format!("pid-{}", rt.name));
            let start = Instant::now();
            let mut cpu = measure(
                rt.command(&[
                    "create",
                    "--bundle",
                    b.to_str().unwrap(),
                    "--pid-file",
                    pid_file.to_str().unwrap(),
                    &id,
                ]),
                &format!("{} create", rt.name),
            )
            .cpu;
            let init: libc::pid_t = fs::read_to_string(&pid_file)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            cpu += measure(rt.command(&["start", &id]), &format!("{} start", rt.name)).cpu;
            let (_, init_cpu) = wait_rusage(init);
            cpu += init_cpu;
            cpu += measure(rt.command(&["delete", &id]), &format!("{} delete", rt.name)).cpu;
            let s = Sample {
                wall: start.elapsed(),
                cpu: cpu + reap_orphans(),
            };
            results
                .entry("lifecycle")
                .or_default()
                .entry(rt.name.clone())
                .or_default()
                .push(s);
        }
    }

    eprintln!(
        "berth-compare: {} rounds of {} concurrent runs",
        o.rounds, o.concurrency
    );
    for round in 0..o.rounds {
        // The floor (`None`) runs concurrently too: what the same number of bare namespace
        // starts costs on this host, with no cgroup, mount or runtime work at all.
        let mut order: Vec<Option<&Runtime>> = runtimes.iter().map(Some).collect();
        order.push(None);
        shuffle(&mut order, round as u64);
        for rt in &order {
            let name = rt.map_or("floor", |rt| rt.name.as_str());
            let commands: Vec<Command> = (0..o.concurrency)
                .map(|n| match rt {
                    Some(rt) => rt.command(&[
                        "run",
                        "--bundle",
                        bundle(&rt.name, n + 1).to_str().unwrap(),
                        &format!("cmp-{}-{n}", rt.name),
                    ]),
                    None => floor_command(&rootfs),
                })
                .collect();
            let start = Instant::now();
            let children: Vec<_> = commands
                .into_iter()
                .map(|mut c| c.spawn().expect("spawn"))
                .collect();
            let mut cpu = Duration::ZERO;
            for c in children {
                let (status, c_cpu) = wait_rusage(c.id() as libc::pid_t);
                assert!(status_ok(status), "{name} concurrent run failed");
                cpu += c_cpu;
            }
            let s = Sample {
                wall: start.elapsed(),
                cpu: cpu + reap_orphans(),
            };
            results
                .entry("concurrent")
                .or_default()
                .entry(name.to_string())
                .or_default()
                .push(s);
        }
    }

    // Remove what the runs left: cgroup parents and the work directory.
    let layout = berth_runtime::cgroups::Layout::detect().expect("layout");
    let hierarchies = layout
        .v1
        .iter()
        .map(|h| h.mountpoint.clone())
        .chain(layout.unified.iter().map(|u| u.mountpoint.clone()));
    for mountpoint in hierarchies {
        let parent = mountpoint.join(&cgroup_parent);
        if let Ok(children) = fs::read_dir(&parent) {
            for c in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = fs::remove_dir(c.path());
            }
        }
        let _ = fs::remove_dir(parent);
    }
    let _ = fs::remove_dir_all(&work);

    report(&o, &results, &cgroup_view);
}

/// Every runtime runs from a copy written in one go, as a package or `cargo install` writes
/// it. A binary fresh from the linker sits in the page cache in small pieces (4 KiB folios,
/// where a file written or read in large chunks gets large ones on this kernel's ext4) and pays
/// for it at every exec: berth-runtime straight from `target/` took ~28 more page faults and
/// 0.7-0.8 ms more CPU per `run` than a copy of the same bytes on this VM (paired runs); crun
/// and runc, installed by dpkg, would have had that advantage over it. The copies go to the
/// output directory (`target/bench`: the repository's filesystem, a disk one like where
/// packages install; the work directory is in /run, tmpfs on most hosts).
fn installed_copy(binary: &Path, dir: &Path, name: &str) -> PathBuf {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let copy = dir.join(name);
    fs::copy(binary, &copy).unwrap_or_else(|e| panic!("copy {}: {e}", binary.display()));
    copy
}

/// Fisher-Yates with a fixed generator (splitmix64) seeded by the round: the same orders in
/// every run of the harness.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// The floor: the same namespaces and a chroot, nothing else (no cgroup, no mounts, no
/// runtime), so the distance to it is what a runtime adds.
fn floor_command(rootfs: &Path) -> Command {
    let mut c = Command::new("unshare");
    c.args(["-m", "-p", "-n", "-i", "-u", "-f", "chroot"])
        .arg(rootfs)
        .arg("/bin/true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn report(o: &Options, results: &BTreeMap<&str, BTreeMap<String, Vec<Sample>>>, cgroup_view: &str) {
    fs::create_dir_all(&o.out).unwrap();
    let mut json_out = serde_json::Map::new();
    let mut md = String::new();
    md.push_str(&format!(
        "# Container start, side by side\n\n{} runs per runtime (interleaved), {} rounds of {} concurrent runs; {}.\n\n",
        o.runs, o.rounds, o.concurrency, cgroup_view
    ));
    md.push_str("| scenario | runtime | wall median (ms) | p10 | p90 | CPU median (ms) | wall vs crun | CPU vs crun |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (scenario, by_rt) in results {
        let crun = by_rt.get("crun").map(|s| {
            (
                stats(s.iter().map(|x| ms(x.wall)).collect()).median,
                stats(s.iter().map(|x| ms(x.cpu)).collect()).median,
            )
        });
        let mut sc = serde_json::Map::new();
        for (rt, samples) in by_rt {
            let wall: Vec<f64> = samples.iter().map(|s| ms(s.wall)).collect();
            let cpu: Vec<f64> = samples.iter().map(|s| ms(s.cpu)).collect();
            let w = stats(wall.clone());
            let c = stats(cpu.clone());
            let ratio = |v: f64, base: Option<f64>| {
                base.map_or("—".to_string(), |b| format!("{:.2}×", v / b))
            };
            md.push_str(&format!(
                "| {scenario} | {rt} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
                w.median,
                w.p10,
                w.p90,
                c.median,
                ratio(w.median, crun.map(|x| x.0)),
                ratio(c.median, crun.map(|x| x.1)),
            ));
            sc.insert(
                rt.clone(),
                json!({"wall_ms": wall, "cpu_ms": cpu, "wall_median_ms": w.median, "cpu_median_ms": c.median}),
            );
        }
        json_out.insert(scenario.to_string(), serde_json::Value::Object(sc));
    }
    if let (Some(floor), Some(run)) = (results.get("floor"), results.get("run")) {
        let f = stats(floor["floor"].iter().map(|s| ms(s.wall)).collect()).median;
        if let Some(b) = run.get("berth") {
            let b = stats(b.iter().map(|s| ms(s.wall)).collect()).median;
            md.push_str(&format!(
                "\nberth `run` vs the unshare+chroot floor: {:.2}×\n",
                b / f
            ));
        }
    }
    if let Some(concurrent) = results.get("concurrent") {
        let median = |rt: &str| {
            concurrent
                .get(rt)
                .map(|s| stats(s.iter().map(|x| ms(x.wall)).collect()).median)
        };
        if let (Some(b), Some(f)) = (median("berth"), median("floor")) {
            md.push_str(&format!(
                "berth {} concurrent `run`s vs as many concurrent floors: {:.2}×\n",
                o.concurrency,
                b / f
            ));
        }
    }
    fs::write(
        o.out.join("compare.json"),
        serde_json::to_vec_pretty(&json_out).unwrap(),
    )
    .unwrap();
    fs::write(o.out.join("compare.md"), &md).unwrap();
    let mut series: Vec<(String, Vec<f64>)> = results
        .get("run")
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.iter().map(|s| ms(s.wall)).collect()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(f) = results.get("floor") {
        series.push((
            "floor".into(),
            f["floor"].iter().map(|s| ms(s.wall)).collect(),
        ));
    }
    match plot::latency_strip(
        &o.out.join("compare-run.svg"),
        "run /bin/true: wall time per start (ms)",
        &series,
    ) {
        Ok(()) => {}
        Err(e) => eprintln!("berth-compare: plot not written: {e}"),
    }
    print!("{md}");
    println!(
        "\nwritten: {}/compare.{{json,md}}, compare-run.svg",
        o.out.display()
    );
}
