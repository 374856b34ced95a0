//! berth's network drivers: none, host, bridge and macvlan behind one [`NetworkDriver`] trait,
//! every link, address and route made over rtnetlink (never by running `ip`), [`ipam`], the
//! crash-safe address store, [`etc_files`], a container's hosts, hostname and resolv.conf, and
//! [`nat`], outbound NAT and published ports from outside in one nftables table.
//!
//! A driver works in the network namespace of the thread that calls it (the host's, for a
//! daemon; a test namespace, for the tests); containers are network namespaces the caller
//! made, passed as descriptors.

mod bridge;
mod driver;
mod error;
pub mod etc_files;
pub mod ipam;
mod macvlan;
pub mod nat;
mod netlink;
mod simple;

pub use bridge::{BRIDGE_NAME_OPTION, Bridge};
pub use driver::{Endpoint, EndpointRequest, Network, NetworkDriver, NetworkSpec, Prepared};
pub use error::{Error, Result};
pub use macvlan::{MODE_OPTION, Macvlan, PARENT_OPTION};
pub use simple::{HostDriver, NoneDriver};
