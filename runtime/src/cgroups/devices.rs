//! Device access rules (`linux.resources.devices`), shared by the v1 `devices` controller and
//! the v2 BPF device filter. Later rules override earlier ones, as in the v1 controller.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{Error, Result};

/// Access bits, with the values the kernel uses in `bpf_cgroup_dev_ctx`.
pub const ACCESS_MKNOD: u8 = 1;
pub const ACCESS_READ: u8 = 2;
pub const ACCESS_WRITE: u8 = 4;
pub const ACCESS_ALL: u8 = ACCESS_MKNOD | ACCESS_READ | ACCESS_WRITE;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    All,
    Char,
    Block,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DeviceKind,
    /// `None` is the wildcard `*`.
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub access: u8,
}

impl DeviceRule {
    const fn allow_char(major: i64, minor: Option<i64>) -> DeviceRule {
        DeviceRule {
            allow: true,
            kind: DeviceKind::Char,
            major: Some(major),
            minor,
            access: ACCESS_ALL,
        }
    }

    /// Converts the config's rules; `index` positions name the offending entry on error.
    pub fn from_spec(rules: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>> {
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let field = || format!("linux.resources.devices[{i}]");
                let kind = match r.typ() {
                    None | Some(LinuxDeviceType::A) => DeviceKind::All,
                    Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => DeviceKind::Char,
                    Some(LinuxDeviceType::B) => DeviceKind::Block,
                    Some(LinuxDeviceType::P) => {
                        return Err(Error::config(
                            "config.json",
                            field(),
                            "type \"p\" (fifo) is not a device cgroup type",
                        ));
                    }
                };
                let access = match r.access().as_deref() {
                    None | Some("") => ACCESS_ALL,
                    Some(s) => parse_access(s).ok_or_else(|| {
                        Error::config(
                            "config.json",
                            format!("{}.access", field()),
                            format!("{s:?} is not a combination of r, w and m"),
                        )
                    })?,
                };
                let wildcard = |v: Option<i64>| v.filter(|&n| n >= 0);
                Ok(DeviceRule {
                    allow: r.allow(),
                    kind,
                    major: wildcard(r.major()),
                    minor: wildcard(r.minor()),
                    access,
                })
            })
            .collect()
    }

    /// What a container may use: nothing by default, then the config's rules, then the devices
    /// every container may use (as runc does): it can always open /dev/null or allocate a pty.
    pub fn effective(rules: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>> {
        let mut out = vec![DeviceRule {
            allow: false,
            kind: DeviceKind::All,
            major: None,
            minor: None,
            access: ACCESS_ALL,
        }];
        out.extend(DeviceRule::from_spec(rules)?);
        out.extend_from_slice(&DEFAULT_ALLOWED);
        Ok(out)
    }

    /// The line written to `devices.allow` / `devices.deny`.
    pub fn v1_line(&self) -> String {
        let kind = match self.kind {
            DeviceKind::All => 'a',
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        };
        let num = |v: Option<i64>| v.map_or("*".to_string(), |n| n.to_string());
        let mut access = String::with_capacity(3);
        for (bit, c) in [(ACCESS_READ, 'r'), (ACCESS_WRITE, 'w'), (ACCESS_MKNOD, 'm')] {
            if self.access & bit != 0 {
                access.push(c);
            }
        }
        format!("{kind} {}:{} {access}", num(self.major), num(self.minor))
    }

    /// Whether this rule decides an access of `access` bits to a device (reference semantics
    /// for the BPF program and its tests).
    pub fn matches(&self, kind: DeviceKind, major: i64, minor: i64, access: u8) -> bool {
        (self.kind == DeviceKind::All || self.kind == kind)
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
            && access & !self.access == 0
    }

    /// Is a rule that covers every device and every access (`a *:* rwm`).
    pub fn is_catch_all(&self) -> bool {
        self.kind == DeviceKind::All
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == ACCESS_ALL
    }
}

#[cfg(test)]
/// Evaluates rules the way the kernel's v1 controller does: last matching rule wins; with no
/// match, access is allowed only if no catch-all deny came first (a fresh cgroup allows all).
pub fn decide(rules: &[DeviceRule], kind: DeviceKind, major: i64, minor: i64, access: u8) -> bool {
    for r in rules.iter().rev() {
        if r.matches(kind, major, minor, access) {
            return r.allow;
        }
    }
    default_allows(rules)
}

/// The verdict when no rule matches: decided by the last catch-all rule, allow when there is none.
pub fn default_allows(rules: &[DeviceRule]) -> bool {
    rules
        .iter()
        .rev()
        .find(|r| r.is_catch_all())
        .is_none_or(|r| r.allow)
}

fn parse_access(s: &str) -> Option<u8> {
    let mut bits = 0;
    for c in s.chars() {
        bits |= match c {
            'r' => ACCESS_READ,
            'w' => ACCESS_WRITE,
            'm' => ACCESS_MKNOD,
            _ => return None,
        };
    }
    Some(bits)
}

const DEFAULT_ALLOWED: [DeviceRule; 10] = [
    // mknod of any device node; using one still needs its own rule.
    DeviceRule {
        allow: true,
        kind: DeviceKind::Char,
        major: None,
        minor: None,
        access: ACCESS_MKNOD,
    },
    DeviceRule {
        allow: true,
        kind: DeviceKind::Block,
        major: None,
        minor: None,
        access: ACCESS_MKNOD,
    },
    DeviceRule::allow_char(1, Some(3)), // /dev/null
    DeviceRule::allow_char(1, Some(5)), // /dev/zero
    DeviceRule::allow_char(1, Some(7)), // /dev/full
    DeviceRule::allow_char(1, Some(8)), // /dev/random
    DeviceRule::allow_char(1, Some(9)), // /dev/urandom
    DeviceRule::allow_char(5, Some(0)), // /dev/tty
    DeviceRule::allow_char(5, Some(2)), // /dev/ptmx
    DeviceRule::allow_char(136, None),  // /dev/pts/*
];

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn deny_all() -> LinuxDeviceCgroup {
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap()
    }

    #[test]
    fn v1_lines() {
        let rules = DeviceRule::effective(&[deny_all()]).unwrap();
        assert_eq!(rules[0].v1_line(), "a *:* rwm");
        assert!(rules.iter().any(|r| r.v1_line() == "c 1:3 rwm"));
        assert!(rules.iter().any(|r| r.v1_line() == "c 136:* rwm"));
        assert!(rules.iter().any(|r| r.v1_line() == "b *:* m"));
    }

    #[test]
    fn last_rule_wins() {
        let rules = DeviceRule::effective(&[deny_all()]).unwrap();
        assert!(decide(
            &rules,
            DeviceKind::Char,
            1,
            3,
            ACCESS_READ | ACCESS_WRITE
        ));
        assert!(
            !decide(&rules, DeviceKind::Char, 1, 1, ACCESS_READ),
            "/dev/mem"
        );
        assert!(!decide(&rules, DeviceKind::Block, 8, 0, ACCESS_READ));
        assert!(decide(&rules, DeviceKind::Block, 8, 0, ACCESS_MKNOD));
        // A partial rule does not grant more than it names.
        let only_read = DeviceRule {
            allow: true,
            kind: DeviceKind::Char,
            major: Some(10),
            minor: Some(200),
            access: ACCESS_READ,
        };
        let mut r = rules.clone();
        r.push(only_read);
        assert!(decide(&r, DeviceKind::Char, 10, 200, ACCESS_READ));
        assert!(!decide(
            &r,
            DeviceKind::Char,
            10,
            200,
            ACCESS_READ | ACCESS_WRITE
        ));
    }

    #[test]
    fn no_catch_all_allows_by_default() {
        assert!(decide(&[], DeviceKind::Char, 1, 1, ACCESS_READ));
    }

    #[test]
    fn bad_access_names_the_field() {
        let bad = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwx")
            .build()
            .unwrap();
        let err = DeviceRule::from_spec(&[deny_all(), bad])
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux.resources.devices[1].access"), "{err}");
    }
}
