//! The processes of a container (`ps`, `kill --all`).

use super::Container;
use crate::error::Result;
use crate::state::Status;

impl Container {
    /// Host pids of every process in the container.
    pub fn processes(&self) -> Result<Vec<i32>> {
        let mut pids = self.record.cgroup.pids()?;
        // Should the host have no hierarchy at all, the init is still a process of the container.
        if pids.is_empty() && self.status() != Status::Stopped {
            pids.push(self.pid());
        }
        Ok(pids)
    }
}
