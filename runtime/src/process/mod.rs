//! The processes the runtime forks: a container's init (`init`) and processes exec'd into a
//! running container (`exec`), their sync channel with the runtime, and the setup both share
//! before execve (`user_process`).

pub(crate) mod attributes;
pub(crate) mod channel;
pub(crate) mod exec;
pub(crate) mod identity;
pub(crate) mod init;
mod rlimits;
pub(crate) mod user_process;
pub mod wait;
