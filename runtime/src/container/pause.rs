//! `pause` and `resume`: freeze and thaw every process of the container.

use super::Container;
use crate::error::{Error, Result};
use crate::state::Status;

impl Container {
    pub fn pause(&self) -> Result<()> {
        let status = self.status();
        if status != Status::Running && status != Status::Created {
            return Err(Error::WrongStatus {
                id: self.id().to_string(),
                status,
                action: "pause",
            });
        }
        self.record.cgroup.set_frozen(true)
    }

    pub fn resume(&self) -> Result<()> {
        let status = self.status();
        if status != Status::Paused {
            return Err(Error::WrongStatus {
                id: self.id().to_string(),
                status,
                action: "resume",
            });
        }
        self.record.cgroup.set_frozen(false)
    }
}
