//! Filesystems made for one test: btrfs or ext4 on a loop file, a size-limited tmpfs. Unmounted (and
//! the loop device released) when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted scratch filesystem.
pub struct ScratchFs {
    dir: tempfile::TempDir,
    image: Option<PathBuf>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl ScratchFs {
    /// btrfs on a sparse loop file of `mib` MiB (mkfs.btrfs wants at least 114).
    pub fn btrfs(mib: u64) -> ScratchFs {
        Self::on_loop_file("btrfs", &["-q", "-f"], mib)
    }

    /// ext4 on a sparse loop file of `mib` MiB: a small disk filesystem (the kernel mounts
    /// EROFS images from files on one, not from tmpfs).
    pub fn ext4(mib: u64) -> ScratchFs {
        Self::on_loop_file("ext4", &["-q", "-F"], mib)
    }

    fn on_loop_file(fstype: &str, mkfs_args: &[&str], mib: u64) -> ScratchFs {
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-{fstype}-"))
            .tempdir()
            .expect("tempdir");
        let image = dir.path().with_extension("img");
        let f = std::fs::File::create(&image).expect("create image");
        f.set_len(mib << 20).expect("size image");
        run(Command::new(format!("mkfs.{fstype}"))
            .args(mkfs_args)
            .arg(&image));
        // mount -o loop sets the loop device to clear itself on unmount.
        run(Command::new("mount")
            .args(["-o", "loop", "-t", fstype])
            .arg(&image)
            .arg(dir.path()));
        ScratchFs {
            dir,
            image: Some(image),
        }
    }

    /// A tmpfs of `kib` KiB, for running out of space on purpose.
    pub fn tmpfs(kib: u64) -> ScratchFs {
        let dir = tempfile::Builder::new()
            .prefix("berth-tmpfs-")
            .tempdir()
            .expect("tempdir");
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "berth-test"])
            .arg(dir.path()));
        ScratchFs { dir, image: None }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
        if let Some(image) = &self.image {
            let _ = std::fs::remove_file(image);
        }
    }
}
