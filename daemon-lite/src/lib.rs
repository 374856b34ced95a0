//! berthd, the berth daemon: the Docker Engine API over a unix socket, backed by berth's
//! runtime (through one small monitor process per running container), storage drivers and
//! network drivers.
//!
//! ```text
//! api (hyper, unix socket) ─> containers::lifecycle ─> monitor process ─> berth_runtime
//!                          ─> images (store, archives) ─> berth_storage snapshots
//!                          ─> volumes, events

// `info` is one large JSON literal.
#![recursion_limit = "256"]
//! ```

pub mod api;
pub mod containers;
pub mod daemon;
pub mod dns;
pub mod events;
pub mod execs;
pub mod images;
pub mod json_log;
pub mod monitor;
pub mod names;
pub mod netns;
pub mod networks;
pub mod platform;
pub mod ports;
pub mod records;
pub mod registry;
pub mod seccomp_profile;
pub mod volumes;
