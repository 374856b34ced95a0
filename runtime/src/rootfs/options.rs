//! OCI mount options (fstab words) split into what each system call needs: mount(2) flags,
//! propagation changes, recursive attributes for mount_setattr(2) (`rro`, `rnosuid` …), and the
//! filesystem-specific data string.

use crate::sys::{
    MOUNT_ATTR__ATIME, MOUNT_ATTR_NOATIME, MOUNT_ATTR_NODEV, MOUNT_ATTR_NODIRATIME,
    MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NOSYMFOLLOW, MOUNT_ATTR_RDONLY,
    MOUNT_ATTR_RELATIME, MOUNT_ATTR_STRICTATIME, MountAttr,
};

/// MS_NOSYMFOLLOW (Linux 5.10); not in every libc yet.
const MS_NOSYMFOLLOW: libc::c_ulong = 256;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for mount(2) (MS_RDONLY, MS_NOSUID …), without MS_BIND/MS_REC.
    pub flags: libc::c_ulong,
    /// Flags the options explicitly clear (`rw`, `suid` …): matters when remounting.
    pub cleared: libc::c_ulong,
    pub bind: bool,
    /// `rbind`: the bind takes the submounts along.
    pub recursive_bind: bool,
    /// Propagation changes in order (MS_PRIVATE, MS_SLAVE|MS_REC …).
    pub propagation: Vec<libc::c_ulong>,
    /// `r*` options: attributes applied to the whole tree with mount_setattr(AT_RECURSIVE).
    pub recursive: MountAttr,
    /// `idmap` / `ridmap`: an idmapped mount (the second, recursive).
    pub idmap: Option<bool>,
    /// runc's `tmpcopyup`: fill a fresh tmpfs with what the image had at that path.
    pub tmpcopyup: bool,
    /// Everything else, passed to the filesystem (`mode=755`, `size=65536k`, `newinstance` …).
    pub data: Vec<String>,
}

impl MountOptions {
    pub fn parse<S: AsRef<str>>(options: &[S]) -> MountOptions {
        let mut o = MountOptions::default();
        for opt in options {
            let opt = opt.as_ref();
            if let Some((clear, flag)) = flag_option(opt) {
                if clear {
                    o.flags &= !flag;
                    o.cleared |= flag;
                } else {
                    o.flags |= flag;
                    o.cleared &= !flag;
                }
            } else if let Some(p) = propagation_option(opt) {
                o.propagation.push(p);
            } else if recursive_option(opt, &mut o.recursive) {
            } else {
                match opt {
                    "bind" => o.bind = true,
                    "rbind" => {
                        o.bind = true;
                        o.recursive_bind = true;
                    }
                    "idmap" => o.idmap = Some(false),
                    "ridmap" => o.idmap = Some(true),
                    "tmpcopyup" => o.tmpcopyup = true,
                    "defaults" | "" => {}
                    other => o.data.push(other.to_string()),
                }
            }
        }
        o
    }

    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }

    /// The per-mount flags as mount_setattr attributes (for binds made with open_tree).
    pub fn as_mount_attr(&self) -> MountAttr {
        let mut attr = MountAttr::default();
        let map = [
            (libc::MS_RDONLY, MOUNT_ATTR_RDONLY),
            (libc::MS_NOSUID, MOUNT_ATTR_NOSUID),
            (libc::MS_NODEV, MOUNT_ATTR_NODEV),
            (libc::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
            (libc::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
            (MS_NOSYMFOLLOW, MOUNT_ATTR_NOSYMFOLLOW),
        ];
        for (ms, attr_bit) in map {
            if self.flags & ms != 0 {
                attr.attr_set |= attr_bit;
            } else if self.cleared & ms != 0 {
                attr.attr_clr |= attr_bit;
            }
        }
        let atime = if self.flags & libc::MS_NOATIME != 0 {
            Some(MOUNT_ATTR_NOATIME)
        } else if self.flags & libc::MS_STRICTATIME != 0 {
            Some(MOUNT_ATTR_STRICTATIME)
        } else if self.flags & libc::MS_RELATIME != 0 {
            Some(MOUNT_ATTR_RELATIME)
        } else {
            None
        };
        if let Some(a) = atime {
            attr.attr_clr |= MOUNT_ATTR__ATIME;
            attr.attr_set |= a;
        }
        attr
    }

    /// Flags that need a step after the bind itself (a bind ignores all but MS_REC).
    pub fn needs_remount(&self) -> bool {
        self.flags != 0 || self.cleared != 0
    }
}

/// `(clears, flag)` for the words mount(8) knows as flags.
fn flag_option(opt: &str) -> Option<(bool, libc::c_ulong)> {
    Some(match opt {
        "ro" => (false, libc::MS_RDONLY),
        "rw" => (true, libc::MS_RDONLY),
        "nosuid" => (false, libc::MS_NOSUID),
        "suid" => (true, libc::MS_NOSUID),
        "nodev" => (false, libc::MS_NODEV),
        "dev" => (true, libc::MS_NODEV),
        "noexec" => (false, libc::MS_NOEXEC),
        "exec" => (true, libc::MS_NOEXEC),
        "sync" => (false, libc::MS_SYNCHRONOUS),
        "async" => (true, libc::MS_SYNCHRONOUS),
        "dirsync" => (false, libc::MS_DIRSYNC),
        "remount" => (false, libc::MS_REMOUNT),
        "mand" => (false, libc::MS_MANDLOCK),
        "nomand" => (true, libc::MS_MANDLOCK),
        "noatime" => (false, libc::MS_NOATIME),
        "atime" => (true, libc::MS_NOATIME),
        "nodiratime" => (false, libc::MS_NODIRATIME),
        "diratime" => (true, libc::MS_NODIRATIME),
        "relatime" => (false, libc::MS_RELATIME),
        "norelatime" => (true, libc::MS_RELATIME),
        "strictatime" => (false, libc::MS_STRICTATIME),
        "nostrictatime" => (true, libc::MS_STRICTATIME),
        "lazytime" => (false, libc::MS_LAZYTIME),
        "nolazytime" => (true, libc::MS_LAZYTIME),
        "nosymfollow" => (false, MS_NOSYMFOLLOW),
        "symfollow" => (true, MS_NOSYMFOLLOW),
        _ => return None,
    })
}

fn propagation_option(opt: &str) -> Option<libc::c_ulong> {
    Some(match opt {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// The runtime-spec 1.1 recursive attributes; returns whether `opt` was one.
fn recursive_option(opt: &str, attr: &mut MountAttr) -> bool {
    let (set, bit) = match opt {
        "rro" => (true, MOUNT_ATTR_RDONLY),
        "rrw" => (false, MOUNT_ATTR_RDONLY),
        "rnosuid" => (true, MOUNT_ATTR_NOSUID),
        "rsuid" => (false, MOUNT_ATTR_NOSUID),
        "rnodev" => (true, MOUNT_ATTR_NODEV),
        "rdev" => (false, MOUNT_ATTR_NODEV),
        "rnoexec" => (true, MOUNT_ATTR_NOEXEC),
        "rexec" => (false, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (true, MOUNT_ATTR_NODIRATIME),
        "rdiratime" => (false, MOUNT_ATTR_NODIRATIME),
        "rnosymfollow" => (true, MOUNT_ATTR_NOSYMFOLLOW),
        "rsymfollow" => (false, MOUNT_ATTR_NOSYMFOLLOW),
        "rrelatime" | "rnoatime" | "rstrictatime" | "ratime" | "rnorelatime" | "rnostrictatime" => {
            // The atime mode is one field: clear it and set the chosen mode (relatime for the
            // "no…" spellings that only turn a mode off).
            attr.attr_clr |= MOUNT_ATTR__ATIME;
            attr.attr_set &= !MOUNT_ATTR__ATIME;
            attr.attr_set |= match opt {
                "rnoatime" => MOUNT_ATTR_NOATIME,
                "rstrictatime" => MOUNT_ATTR_STRICTATIME,
                _ => MOUNT_ATTR_RELATIME,
            };
            return true;
        }
        _ => return false,
    };
    if set {
        attr.attr_set |= bit;
        attr.attr_clr &= !bit;
    } else {
        attr.attr_clr |= bit;
        attr.attr_set &= !bit;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_bind_options() {
        let o = MountOptions::parse(&["rbind", "ro", "rprivate"]);
        assert!(o.bind && o.recursive_bind);
        assert_eq!(o.flags, libc::MS_RDONLY);
        assert_eq!(o.propagation, vec![libc::MS_PRIVATE | libc::MS_REC]);
        assert!(o.data.is_empty());
        assert_eq!(o.as_mount_attr().attr_set, MOUNT_ATTR_RDONLY);
    }

    #[test]
    fn fs_options_split_into_flags_and_data() {
        let o = MountOptions::parse(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(o.data_string().as_deref(), Some("mode=755,size=65536k"));
        let o = MountOptions::parse(&[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ]);
        assert_eq!(
            o.data_string().as_deref(),
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5")
        );
    }

    #[test]
    fn later_words_override_earlier() {
        let o = MountOptions::parse(&["ro", "rw"]);
        assert_eq!(o.flags & libc::MS_RDONLY, 0);
        assert_eq!(o.cleared, libc::MS_RDONLY);
        assert_eq!(o.as_mount_attr().attr_clr, MOUNT_ATTR_RDONLY);
    }

    #[test]
    fn recursive_attributes() {
        let o = MountOptions::parse(&["rbind", "rro", "rnosuid", "rnoatime"]);
        assert_eq!(
            o.recursive.attr_set,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOATIME
        );
        assert_eq!(o.recursive.attr_clr, MOUNT_ATTR__ATIME);
        assert_eq!(o.flags, 0);
        let o = MountOptions::parse(&["rro", "rrw"]);
        assert_eq!(o.recursive.attr_set, 0);
        assert_eq!(o.recursive.attr_clr, MOUNT_ATTR_RDONLY);
    }

    #[test]
    fn idmap_and_tmpcopyup() {
        assert_eq!(MountOptions::parse(&["idmap"]).idmap, Some(false));
        assert_eq!(MountOptions::parse(&["ridmap"]).idmap, Some(true));
        assert!(MountOptions::parse(&["tmpcopyup"]).tmpcopyup);
    }
}
