//! Where the cgroup hierarchies are mounted on this host, read from /proc/self/mountinfo and
//! /proc/self/cgroup. One `Layout` covers all three modes: v1 (controllers on per-controller
//! hierarchies), hybrid (v1 controllers plus a cgroup2 mount, often /sys/fs/cgroup/unified, that
//! may hold some controllers too) and unified (pure v2).

use std::path::{Path, PathBuf};

use crate::error::{Context, Result};

/// A v1 hierarchy: one mount carrying one or more subsystems (or a named hierarchy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub mountpoint: PathBuf,
    /// The mount's root inside the hierarchy ("/" unless this process sees a sub-tree).
    pub root: PathBuf,
    /// e.g. `["cpu", "cpuacct"]` or `["name=systemd"]`.
    pub subsystems: Vec<String>,
    /// This process's own cgroup in the hierarchy (for relative cgroupsPath).
    pub own_path: PathBuf,
}

/// The cgroup2 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnifiedHierarchy {
    pub mountpoint: PathBuf,
    pub root: PathBuf,
    /// Controllers available at the mount root (`cgroup.controllers`).
    pub controllers: Vec<String>,
    pub own_path: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Only v1 hierarchies.
    Legacy,
    /// v1 hierarchies and a cgroup2 mount beside them.
    Hybrid,
    /// Only cgroup2.
    Unified,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub v1: Vec<V1Hierarchy>,
    pub unified: Option<UnifiedHierarchy>,
}

impl Layout {
    pub fn detect() -> Result<Layout> {
        let mountinfo = crate::sys::read_pseudo_to_string("/proc/self/mountinfo")
            .at("read", "/proc/self/mountinfo")?;
        let own = crate::sys::read_pseudo_to_string("/proc/self/cgroup")
            .at("read", "/proc/self/cgroup")?;
        let mut layout = Layout::parse(&mountinfo, &own);
        if let Some(u) = &mut layout.unified {
            let file = u.mountpoint.join("cgroup.controllers");
            let text = crate::sys::read_pseudo_to_string(&file).at("read", &file)?;
            u.controllers = text.split_whitespace().map(str::to_string).collect();
        }
        Ok(layout)
    }

    /// Parses the two proc files; `controllers` of the unified hierarchy is left empty.
    pub fn parse(mountinfo: &str, own_cgroups: &str) -> Layout {
        let mut layout = Layout::default();
        for line in mountinfo.lines() {
            let Some(m) = MountLine::parse(line) else {
                continue;
            };
            match m.fstype {
                "cgroup" => {
                    let subsystems: Vec<String> = m
                        .super_options
                        .split(',')
                        .filter(|o| is_subsystem_option(o))
                        .map(str::to_string)
                        .collect();
                    if subsystems.is_empty() || layout.v1.iter().any(|h| h.subsystems == subsystems)
                    {
                        continue;
                    }
                    let own_path = own_v1_path(own_cgroups, &subsystems);
                    layout.v1.push(V1Hierarchy {
                        mountpoint: m.mountpoint,
                        root: m.root,
                        subsystems,
                        own_path,
                    });
                }
                "cgroup2" if layout.unified.is_none() => {
                    let own_path = own_cgroups
                        .lines()
                        .find_map(|l| l.strip_prefix("0::"))
                        .map(PathBuf::from)
                        .unwrap_or_else(|| PathBuf::from("/"));
                    layout.unified = Some(UnifiedHierarchy {
                        mountpoint: m.mountpoint,
                        root: m.root,
                        controllers: Vec::new(),
                        own_path,
                    });
                }
                _ => {}
            }
        }
        layout
    }

    pub fn mode(&self) -> Mode {
        match (self.v1.is_empty(), self.unified.is_some()) {
            (true, _) => Mode::Unified,
            (false, true) => Mode::Hybrid,
            (false, false) => Mode::Legacy,
        }
    }

    /// The v1 hierarchy carrying `subsystem`, if any.
    pub fn v1_hierarchy(&self, subsystem: &str) -> Option<&V1Hierarchy> {
        self.v1
            .iter()
            .find(|h| h.subsystems.iter().any(|s| s == subsystem))
    }

    /// Whether `controller` is driven through the cgroup2 hierarchy here: it is not on v1 and
    /// the cgroup2 root offers it.
    pub fn on_unified(&self, controller: &str) -> bool {
        self.v1_hierarchy(controller).is_none()
            && self
                .unified
                .as_ref()
                .is_some_and(|u| u.controllers.iter().any(|c| c == controller))
    }
}

/// Joins a cgroupsPath onto a hierarchy: absolute paths are taken from the hierarchy root (or
/// from the sub-tree this process sees), relative ones from this process's own cgroup.
pub(crate) fn dir_in_hierarchy(
    mountpoint: &Path,
    mount_root: &Path,
    own_path: &Path,
    cgroups_path: &Path,
) -> PathBuf {
    let absolute = if cgroups_path.is_absolute() {
        cgroups_path.to_path_buf()
    } else {
        own_path.join(cgroups_path)
    };
    let inside = absolute
        .strip_prefix(mount_root)
        .or_else(|_| absolute.strip_prefix("/"))
        .unwrap_or(&absolute);
    mountpoint.join(inside)
}

fn own_v1_path(own_cgroups: &str, subsystems: &[String]) -> PathBuf {
    for line in own_cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(list), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let mut names: Vec<&str> = list.split(',').collect();
        names.sort_unstable();
        let mut want: Vec<&str> = subsystems.iter().map(String::as_str).collect();
        want.sort_unstable();
        if !list.is_empty() && names == want {
            return PathBuf::from(path);
        }
    }
    PathBuf::from("/")
}

/// Super options of a v1 cgroup mount that are not subsystem names.
fn is_subsystem_option(opt: &str) -> bool {
    !(opt.is_empty()
        || matches!(
            opt,
            "rw" | "ro"
                | "noprefix"
                | "clone_children"
                | "xattr"
                | "cpuset_v2_mode"
                | "nsdelegate"
                | "memory_localevents"
                | "memory_recursiveprot"
                | "favordynmods"
        )
        || opt.starts_with("release_agent="))
}

/// One line of /proc/PID/mountinfo, only the fields the runtime reads.
pub(crate) struct MountLine<'a> {
    pub root: PathBuf,
    pub mountpoint: PathBuf,
    pub fstype: &'a str,
    pub super_options: &'a str,
}

impl<'a> MountLine<'a> {
    pub fn parse(line: &'a str) -> Option<MountLine<'a>> {
        let (pre, post) = line.split_once(" - ")?;
        let mut pre_fields = pre.split(' ');
        let root = pre_fields.nth(3)?;
        let mountpoint = pre_fields.next()?;
        let mut post_fields = post.split(' ');
        let fstype = post_fields.next()?;
        let _source = post_fields.next()?;
        let super_options = post_fields.next().unwrap_or("");
        Some(MountLine {
            root: PathBuf::from(unescape_mountinfo(root)),
            mountpoint: PathBuf::from(unescape_mountinfo(mountpoint)),
            fstype,
            super_options,
        })
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(crate) fn unescape_mountinfo(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";
    const OWN: &str = "9:name=systemd:/\n4:memory:/process_api/x\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    #[test]
    fn parses_hybrid() {
        let l = Layout::parse(HYBRID, OWN);
        assert_eq!(l.mode(), Mode::Hybrid);
        assert_eq!(l.v1.len(), 4);
        let mem = l.v1_hierarchy("memory").unwrap();
        assert_eq!(mem.mountpoint, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(mem.own_path, Path::new("/process_api/x"));
        assert_eq!(
            l.v1_hierarchy("name=systemd").unwrap().subsystems,
            vec!["name=systemd"]
        );
        let u = l.unified.as_ref().unwrap();
        assert_eq!(u.mountpoint, Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn parses_unified_and_legacy() {
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(Layout::parse(v2, "0::/user.slice\n").mode(), Mode::Unified);
        let v1 = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let l = Layout::parse(v1, "3:cpu,cpuacct:/a\n");
        assert_eq!(l.mode(), Mode::Legacy);
        assert_eq!(l.v1[0].subsystems, vec!["cpu", "cpuacct"]);
        assert_eq!(l.v1[0].own_path, Path::new("/a"));
    }

    #[test]
    fn unified_controllers_decide_placement() {
        let mut l = Layout::parse(HYBRID, OWN);
        l.unified.as_mut().unwrap().controllers = vec!["hugetlb".into(), "memory".into()];
        assert!(l.on_unified("hugetlb"));
        assert!(!l.on_unified("memory"), "memory is bound to v1 here");
        assert!(!l.on_unified("pids"));
    }

    #[test]
    fn cgroup_dirs() {
        let mp = Path::new("/sys/fs/cgroup/memory");
        assert_eq!(
            dir_in_hierarchy(
                mp,
                Path::new("/"),
                Path::new("/own"),
                Path::new("/berth/c1")
            ),
            Path::new("/sys/fs/cgroup/memory/berth/c1")
        );
        assert_eq!(
            dir_in_hierarchy(mp, Path::new("/"), Path::new("/own"), Path::new("rel/c1")),
            Path::new("/sys/fs/cgroup/memory/own/rel/c1")
        );
        // A process that sees only a sub-tree (nested container) strips the mount root.
        assert_eq!(
            dir_in_hierarchy(
                mp,
                Path::new("/outer"),
                Path::new("/"),
                Path::new("/outer/c1")
            ),
            Path::new("/sys/fs/cgroup/memory/c1")
        );
    }

    #[test]
    fn unescapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\04"), "/end\\04");
    }
}
