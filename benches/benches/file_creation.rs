//! Does io_uring batching pay off for creating a layer's files? 4096 files of 4 KiB into a
//! fresh directory: one openat/write/close per file (what `layer::apply` does) against
//! io_uring batches of 64 files, each an OPENAT into a fixed-file slot linked to a WRITE and a
//! CLOSE of that slot (three SQEs, no syscall per file). On a tmpfs (CPU only) and on /tmp.
//! The result decides whether the layer writer uses io_uring (see ARCHITECTURE.md).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use io_uring::{IoUring, opcode, squeue, types};
use rustix::fs::{Mode, OFlags};

const FILES: usize = 4096;
const BATCH: usize = 64;

fn names() -> Vec<CString> {
    (0..FILES)
        .map(|i| CString::new(format!("f{i}")).unwrap())
        .collect()
}

/// A directory removed when dropped (criterion drops a routine's output outside the timing).
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fresh_dir(base: &Path, n: &mut u64) -> (Scratch, OwnedFd) {
    *n += 1;
    let dir = base.join(format!("d{n}"));
    std::fs::create_dir(&dir).unwrap();
    let fd = rustix::fs::open(&dir, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap();
    (Scratch(dir), fd)
}

fn with_syscalls(dir: &OwnedFd, names: &[CString], data: &[u8]) {
    for name in names {
        let fd = rustix::fs::openat(
            dir,
            name.as_c_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        rustix::io::write(&fd, data).unwrap();
    }
}

fn with_io_uring(ring: &mut IoUring, dir: &OwnedFd, names: &[CString], data: &[u8]) {
    for chunk in names.chunks(BATCH) {
        {
            let mut sq = ring.submission();
            for (slot, name) in chunk.iter().enumerate() {
                let slot = slot as u32;
                let open = opcode::OpenAt::new(types::Fd(dir.as_raw_fd()), name.as_ptr())
                    .file_index(Some(
                        types::DestinationSlot::try_from_slot_target(slot).unwrap(),
                    ))
                    // No O_CLOEXEC: a direct (fixed) descriptor refuses it.
                    .flags(libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY)
                    .mode(0o644)
                    .build()
                    .flags(squeue::Flags::IO_LINK);
                let write =
                    opcode::Write::new(types::Fixed(slot), data.as_ptr(), data.len() as u32)
                        .build()
                        .flags(squeue::Flags::IO_LINK);
                let close = opcode::Close::new(types::Fixed(slot)).build();
                // SAFETY: the names and the data outlive the wait below.
                unsafe {
                    sq.push(&open).unwrap();
                    sq.push(&write).unwrap();
                    sq.push(&close).unwrap();
                }
            }
        }
        ring.submit_and_wait(chunk.len() * 3).unwrap();
        for cqe in ring.completion() {
            assert!(
                cqe.result() >= 0,
                "io_uring: {}",
                std::io::Error::from_raw_os_error(-cqe.result())
            );
        }
    }
}

fn file_creation(c: &mut Criterion) {
    let names = names();
    let data = vec![7u8; 4096];
    let tmpfs = berth_kernel_tests::scratch_fs::ScratchFs::tmpfs(64 * 1024);
    let disk = tempfile::tempdir().unwrap();
    let mut ring = IoUring::new((BATCH * 4) as u32).expect("io_uring");
    ring.submitter()
        .register_files_sparse(BATCH as u32)
        .expect("fixed file table");
    let mut g = c.benchmark_group("file creation (4096 × 4 KiB)");
    g.sample_size(20);
    let mut n = 0u64;
    for (fs_name, base) in [
        ("tmpfs", tmpfs.path().to_path_buf()),
        ("/tmp", disk.path().to_path_buf()),
    ] {
        g.bench_function(format!("{fs_name} openat+write+close"), |b| {
            b.iter_batched(
                || fresh_dir(&base, &mut n),
                |(dir, fd)| {
                    with_syscalls(&fd, &names, &data);
                    dir
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function(format!("{fs_name} io_uring batches of {BATCH}"), |b| {
            b.iter_batched(
                || fresh_dir(&base, &mut n),
                |(dir, fd)| {
                    with_io_uring(&mut ring, &fd, &names, &data);
                    dir
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, file_creation);
criterion_main!(benches);
