//! Container ids and names, as Docker makes and checks them.

use std::io::Read;

/// A new 64-hex-digit id from the kernel's random source.
pub fn new_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The 12-digit short form shown in tables and used as the default hostname.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, an optional leading `/` dropped.
pub fn check_name(name: &str) -> Result<&str, String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let mut chars = bare.chars();
    let ok = bare.len() >= 2
        && bare.len() <= 253
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(bare)
    } else {
        Err(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        ))
    }
}

const LEFT: [&str; 24] = [
    "agile", "bold", "brave", "calm", "clever", "crisp", "eager", "fair", "fond", "gentle",
    "happy", "keen", "kind", "lucid", "merry", "nimble", "proud", "quick", "quiet", "steady",
    "swift", "tidy", "vivid", "wise",
];
const RIGHT: [&str; 24] = [
    "anchor",
    "barge",
    "beacon",
    "buoy",
    "cargo",
    "channel",
    "dock",
    "ferry",
    "harbor",
    "helm",
    "hull",
    "jetty",
    "keel",
    "lighthouse",
    "mast",
    "mooring",
    "pier",
    "quay",
    "rudder",
    "sail",
    "schooner",
    "skiff",
    "tide",
    "wharf",
];

/// A readable name for a container created without one (`adjective_noun`, from the id's bits);
/// the caller adds a digit on a clash.
pub fn generated(id: &str, attempt: u32) -> String {
    let n = u64::from_str_radix(&id[..id.len().min(8)], 16).unwrap_or(0);
    let base = format!(
        "{}_{}",
        LEFT[(n % 24) as usize],
        RIGHT[((n / 24) % 24) as usize]
    );
    if attempt == 0 {
        base
    } else {
        format!("{base}{attempt}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_digits_and_differ() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(short(&a).len(), 12);
    }

    #[test]
    fn names_follow_dockers_rule() {
        assert_eq!(check_name("/web-1").unwrap(), "web-1");
        assert_eq!(check_name("a.b_c").unwrap(), "a.b_c");
        for bad in ["", "a", "-x", "../etc", "a/b", "a b", "x\u{0}y", "ünï"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let g = generated("0123456789ab", 0);
        assert!(check_name(&g).is_ok());
        assert_eq!(generated("0123456789ab", 2), format!("{g}2"));
    }
}
