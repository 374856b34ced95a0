//! berth's root integration tests share this library: the fixtures (built from Debian packages
//! and cached under target/fixtures) and a harness that drives the real binaries.
//!
//! The tests need root and the kernel features they exercise. They fail loudly when something
//! is missing; none skips itself.

pub mod fixtures;
pub mod harness;
pub mod layers;
pub mod net_probe;
pub mod scratch_fs;
pub mod storage;
pub mod test_daemon;
pub mod test_dockerd;
pub mod test_netns;
pub mod test_registry;
pub mod test_user;
pub mod vm;
