//! A device-mapper thin pool and its thin devices, through the `devicemapper` crate's ioctls:
//! the pool on a data and a metadata device (sparse loop files unless real block devices are
//! configured), thin devices made with `create_thin`/`create_snap` messages, activated and
//! deactivated by table, deleted with `delete`. A thin id the kernel cannot delete yet (its
//! device is still open somewhere) is written down and deleted later.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use devicemapper::{
    DM, DevId, Device, DmError, DmFlags, DmName, DmNameBuf, DmOptions, ThinPoolStatus,
    ThinPoolStatusSummary, errors,
};
use loopdev::{LoopControl, LoopDevice};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

const SECTOR: u64 = 512;
/// Idle devices kept for reuse (each is a few kernel objects, no memory to speak of).
const MAX_IDLE_DEVICES: usize = 8;
/// Thin ids are 24 bits wide.
pub(crate) const MAX_THIN_ID: u64 = (1 << 24) - 1;

/// How the pool is made. Names follow Docker's `dm.*` storage options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceMapperConfig {
    /// `dm.basesize`: the size every container and layer filesystem has (thin: it costs only
    /// what is written).
    pub base_size: u64,
    /// `dm.loopdatasize`: the sparse data file's size when no data device is given.
    pub loop_data_size: u64,
    /// `dm.loopmetadatasize`: the sparse metadata file's size.
    pub loop_metadata_size: u64,
    /// `dm.datadev`: a block device for the pool's data instead of a loop file.
    pub data_device: Option<PathBuf>,
    /// `dm.metadatadev`: a block device for the pool's metadata.
    pub metadata_device: Option<PathBuf>,
    /// `dm.blocksize`: the pool's allocation (and copy-on-write) unit.
    pub block_size: u64,
    /// `dm.min_free_space`: new snapshots are refused below this share of free data or
    /// metadata space, so running containers keep room to write.
    pub min_free_percent: u64,
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

impl Default for DeviceMapperConfig {
    fn default() -> Self {
        DeviceMapperConfig {
            base_size: 10 * GIB,
            loop_data_size: 100 * GIB,
            loop_metadata_size: 2 * GIB,
            data_device: None,
            metadata_device: None,
            block_size: 64 * KIB,
            min_free_percent: 10,
        }
    }
}

impl DeviceMapperConfig {
    /// Reads Docker-style `dm.key=value` storage options over the defaults.
    pub fn from_options<S: AsRef<str>>(options: &[S]) -> Result<DeviceMapperConfig> {
        let mut c = DeviceMapperConfig::default();
        for option in options {
            let option = option.as_ref();
            let bad = |why: &str| Error::Unsupported(format!("devicemapper: {option:?}: {why}"));
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| bad("expected dm.key=value"))?;
            match key.trim().to_ascii_lowercase().as_str() {
                "dm.basesize" => c.base_size = parse_size(value).ok_or_else(|| bad("a size"))?,
                "dm.loopdatasize" => {
                    c.loop_data_size = parse_size(value).ok_or_else(|| bad("a size"))?
                }
                "dm.loopmetadatasize" => {
                    c.loop_metadata_size = parse_size(value).ok_or_else(|| bad("a size"))?
                }
                "dm.blocksize" => c.block_size = parse_size(value).ok_or_else(|| bad("a size"))?,
                "dm.datadev" => c.data_device = Some(PathBuf::from(value)),
                "dm.metadatadev" => c.metadata_device = Some(PathBuf::from(value)),
                "dm.min_free_space" => {
                    c.min_free_percent = value
                        .trim_end_matches('%')
                        .parse()
                        .ok()
                        .filter(|p| *p < 100)
                        .ok_or_else(|| bad("a percentage below 100"))?
                }
                _ => return Err(bad("unknown option")),
            }
        }
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<()> {
        let bad = |why: String| Err(Error::Unsupported(format!("devicemapper: {why}")));
        // The kernel's bounds: 64 KiB to 1 GiB, in multiples of 64 KiB.
        if self.block_size < 64 * KIB
            || self.block_size > GIB
            || !self.block_size.is_multiple_of(64 * KIB)
        {
            return bad(format!(
                "dm.blocksize {} is not a multiple of 64 KiB between 64 KiB and 1 GiB",
                self.block_size
            ));
        }
        if self.base_size < 16 * MIB || !self.base_size.is_multiple_of(SECTOR) {
            return bad(format!(
                "dm.basesize {} is under 16 MiB or not whole sectors",
                self.base_size
            ));
        }
        if self.data_device.is_some() != self.metadata_device.is_some() {
            return bad("dm.datadev and dm.metadatadev are given together".into());
        }
        Ok(())
    }
}

/// `10G`, `512m`, `64KiB`, `1048576`.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let mult = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => KIB,
        "m" => MIB,
        "g" => GIB,
        "t" => 1024 * GIB,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// What the pool was made with; later opens use it, whatever the configuration says now,
/// since every existing device has these sizes.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
struct PoolLayout {
    base_size: u64,
    block_size: u64,
}

/// Space in the pool, from its status line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSpace {
    pub data_used: u64,
    pub data_total: u64,
    pub metadata_used: u64,
    pub metadata_total: u64,
    /// The kernel has run out of data space and fails writes that need a new block.
    pub out_of_data_space: bool,
    /// The kernel put the pool in read-only mode (metadata trouble).
    pub read_only: bool,
}

fn percent_free(used: u64, total: u64) -> u64 {
    (total.saturating_sub(used) * 100)
        .checked_div(total)
        .unwrap_or(0)
}

pub(crate) struct ThinPool {
    dm: DM,
    /// `berth-<dev>-<inode>` of the driver root: unique per root on the host.
    prefix: String,
    pool: DmNameBuf,
    device: Device,
    layout: PoolLayout,
    min_free_percent: u64,
    state: PathBuf,
    /// Held for the pool's lifetime: one process owns a pool at a time.
    _lock: File,
}

/// The devicemapper crate's error with berth's context, keeping the errno where there is one.
fn dm_error(op: impl Into<String>) -> impl FnOnce(DmError) -> Error {
    let op = op.into();
    move |e| {
        let source = match &e {
            DmError::Core(errors::Error::Ioctl(_, _, _, errno)) => {
                io::Error::from_raw_os_error(**errno as i32)
            }
            other => io::Error::other(other.to_string()),
        };
        Error::Sys {
            op: format!("devicemapper: {op}"),
            source,
        }
    }
}

fn name(s: String) -> Result<DmNameBuf> {
    DmNameBuf::new(s.clone()).map_err(dm_error(format!("device name {s:?}")))
}

fn name_ref(s: &str) -> Result<&DmName> {
    DmName::new(s).map_err(dm_error(format!("device name {s:?}")))
}

impl ThinPool {
    /// Opens (making on first use) the pool of driver root `root`, with its state in `state`.
    pub fn open(root: &Path, state: &Path, config: &DeviceMapperConfig) -> Result<ThinPool> {
        config.check()?;
        fs::create_dir_all(state).at("create", state)?;
        let lock_path = state.join("lock");
        let lock = File::create(&lock_path).at("create", &lock_path)?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| {
                Error::Unsupported(format!(
                    "devicemapper: {} is in use by another process ({e})",
                    root.display()
                ))
            },
        )?;
        let dm = DM::new().map_err(|e| {
            Error::Unsupported(format!(
                "devicemapper: no device-mapper on this host ({e}); \
                 it needs /dev/mapper/control and the dm-thin-pool module"
            ))
        })?;
        let targets = dm.list_versions().map_err(dm_error("list targets"))?;
        if !targets.iter().any(|(t, ..)| t == "thin-pool") {
            return Err(Error::Unsupported(
                "devicemapper: the kernel has no thin-pool target (modprobe dm-thin-pool)".into(),
            ));
        }
        let meta = fs::metadata(root).at("stat", root)?;
        let prefix = format!("berth-{:x}-{}", meta.dev(), meta.ino());
        let layout_path = state.join("layout.json");
        let layout = match fs::read(&layout_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Sys {
                op: format!("devicemapper: read {}", layout_path.display()),
                source: io::Error::other(e),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => PoolLayout {
                base_size: config.base_size,
                block_size: config.block_size,
            },
            Err(e) => return Err(e).at("read", &layout_path),
        };
        let pool_name = name(format!("{prefix}-pool"))?;
        let device = match dm.device_info(&DevId::Name(&pool_name)) {
            Ok(info) => {
                // Left active by an earlier process (or removal deferred): take it over.
                let _ = dm.target_msg(&DevId::Name(&pool_name), None, "@cancel_deferred_remove");
                info.device()
            }
            Err(_) => Self::activate_pool(&dm, &pool_name, state, config, &layout)?,
        };
        crate::fsutil::write_atomic(
            &layout_path,
            &serde_json::to_vec(&layout).unwrap_or_default(),
        )?;
        let pool = ThinPool {
            dm,
            prefix,
            pool: pool_name,
            device,
            layout,
            min_free_percent: config.min_free_percent,
            state: state.to_path_buf(),
            _lock: lock,
        };
        pool.retry_deferred_deletes();
        Ok(pool)
    }

    fn activate_pool(
        dm: &DM,
        pool: &DmName,
        state: &Path,
        config: &DeviceMapperConfig,
        layout: &PoolLayout,
    ) -> Result<Device> {
        // The loop devices stay attached only while something holds them open (autoclear):
        // these handles until the pool's table holds them, then the pool.
        let mut held: Vec<LoopDevice> = Vec::new();
        let (data, metadata) = match (&config.data_device, &config.metadata_device) {
            (Some(data), Some(metadata)) => {
                let devices = (block_device(data)?, block_device(metadata)?);
                check_metadata_device(metadata)?;
                devices
            }
            _ => {
                let data_file = state.join("data");
                let metadata_file = state.join("metadata");
                sparse_file(&data_file, config.loop_data_size)?;
                sparse_file(&metadata_file, config.loop_metadata_size)?;
                let (data_loop, data_bytes) = attach_loop(&data_file)?;
                let (metadata_loop, metadata_bytes) = attach_loop(&metadata_file)?;
                let devices = (
                    (loop_number(&data_loop)?, data_bytes),
                    (loop_number(&metadata_loop)?, metadata_bytes),
                );
                held.push(data_loop);
                held.push(metadata_loop);
                devices
            }
        };
        let ((data_dev, data_bytes), (metadata_dev, _)) = (data, metadata);
        let block_sectors = layout.block_size / SECTOR;
        let data_sectors = data_bytes / SECTOR / block_sectors * block_sectors;
        if data_sectors == 0 {
            return Err(Error::Unsupported(format!(
                "devicemapper: the data device is smaller than one {} byte block",
                layout.block_size
            )));
        }
        let low_water = data_sectors / block_sectors * config.min_free_percent / 100;
        // Writes that need space the pool has not got fail at once (rather than hang).
        let params =
            format!("{metadata_dev} {data_dev} {block_sectors} {low_water} 1 error_if_no_space");
        let device = load(dm, pool, "thin-pool", data_sectors, &params)?;
        drop(held);
        Ok(device)
    }

    fn thin_name(&self, id: u64) -> Result<DmNameBuf> {
        name(format!("{}-{id}", self.prefix))
    }

    fn message(&self, msg: &str) -> Result<()> {
        self.dm
            .target_msg(&DevId::Name(&self.pool), None, msg)
            .map(drop)
            .map_err(dm_error(format!("pool {}: {msg}", &*self.pool)))
    }

    pub fn create_thin(&self, id: u64) -> Result<()> {
        self.message(&format!("create_thin {id}"))
    }

    /// A snapshot `id` of thin device `origin`, suspending the origin while it is taken if it
    /// is active (the kernel requires a quiet origin).
    pub fn create_snap(&self, id: u64, origin: u64) -> Result<()> {
        let origin_name = self.thin_name(origin)?;
        let active = self.dm.device_info(&DevId::Name(&origin_name)).is_ok();
        if active {
            self.dm
                .device_suspend(
                    &DevId::Name(&origin_name),
                    DmOptions::default().set_flags(DmFlags::DM_SUSPEND),
                )
                .map_err(dm_error(format!("suspend {}", &*origin_name)))?;
        }
        let msg = format!("create_snap {id} {origin}");
        let mut result = self.message(&msg);
        if result.as_ref().err().and_then(Error::raw_os_error) == Some(libc::EEXIST) {
            // The pool holds an id no snapshot directory claims (berth's records were lost):
            // the id is free to reuse.
            log::warn!("devicemapper: thin id {id} was left in the pool; deleting it");
            result = self.delete(id).and_then(|()| self.message(&msg));
        }
        if active {
            let resumed = self
                .dm
                .device_suspend(&DevId::Name(&origin_name), DmOptions::default())
                .map(drop)
                .map_err(dm_error(format!("resume {}", &*origin_name)));
            result = result.and(resumed);
        }
        result
    }

    /// Deletes thin id `id` from the pool (gone already is fine). A device still open
    /// somewhere is deleted later: the id is written down and retried.
    pub fn delete(&self, id: u64) -> Result<()> {
        match self.message(&format!("delete {id}")) {
            Ok(()) => Ok(()),
            // ENODATA: the pool has no such id.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                log::info!("devicemapper: thin id {id} is busy; deleting it later");
                self.defer_delete(id)
            }
            Err(e) => Err(e),
        }
    }

    fn deferred_path(&self) -> PathBuf {
        self.state.join("deferred-deletes")
    }

    fn deferred(&self) -> Vec<u64> {
        fs::read_to_string(self.deferred_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn defer_delete(&self, id: u64) -> Result<()> {
        let mut ids = self.deferred();
        if !ids.contains(&id) {
            ids.push(id);
        }
        self.write_deferred(&ids)
    }

    fn write_deferred(&self, ids: &[u64]) -> Result<()> {
        let text: String = ids.iter().map(|i| format!("{i}\n")).collect();
        crate::fsutil::write_atomic(&self.deferred_path(), text.as_bytes())
    }

    /// Deletes the ids whose devices were busy before.
    pub fn retry_deferred_deletes(&self) {
        let ids = self.deferred();
        if ids.is_empty() {
            return;
        }
        let left: Vec<u64> = ids
            .into_iter()
            .filter(|&id| {
                let gone = self.is_active(id).is_none()
                    && match self.message(&format!("delete {id}")) {
                        Ok(()) => true,
                        Err(e) => e.raw_os_error() == Some(libc::ENODATA),
                    };
                !gone
            })
            .collect();
        if let Err(e) = self.write_deferred(&left) {
            log::warn!("{e}");
        }
    }

    /// The device node of thin device `id` if it is active.
    pub fn is_active(&self, id: u64) -> Option<PathBuf> {
        let name = self.thin_name(id).ok()?;
        let info = self.dm.device_info(&DevId::Name(&name)).ok()?;
        Some(devnode(info.device()))
    }

    /// Activates thin device `id` (its table over the pool) and returns its device node. An
    /// idle device is reused when there is one: swapping a table is several times cheaper
    /// than making a block device (and removing one later).
    pub fn activate(&self, id: u64) -> Result<PathBuf> {
        let name = self.thin_name(id)?;
        if let Some(node) = self.is_active(id) {
            let _ = self
                .dm
                .target_msg(&DevId::Name(&name), None, "@cancel_deferred_remove");
            return Ok(node);
        }
        let params = format!("{} {id}", self.device);
        let table = vec![(0, self.sectors(), "thin".to_string(), params.clone())];
        if let Some(idle) = self.idle_devices().into_iter().next() {
            let idle = name_ref(&idle)?;
            self.dm
                .device_rename(idle, &DevId::Name(&name))
                .map_err(dm_error(format!("rename {idle} to {}", &*name)))?;
            return match self.swap_table(&name, &table) {
                Ok(device) => Ok(devnode(device)),
                Err(e) => {
                    let _ = self
                        .dm
                        .device_remove(&DevId::Name(&name), DmOptions::default());
                    Err(e)
                }
            };
        }
        let device = load(&self.dm, &name, "thin", self.sectors(), &params)?;
        Ok(devnode(device))
    }

    fn sectors(&self) -> u64 {
        self.layout.base_size / SECTOR
    }

    fn swap_table(&self, name: &DmName, table: &[(u64, u64, String, String)]) -> Result<Device> {
        let id = DevId::Name(name);
        self.dm
            .table_load(&id, table, DmOptions::default())
            .map_err(dm_error(format!("load {name}")))?;
        // Resuming swaps the loaded table in (suspending first).
        let info = self
            .dm
            .device_suspend(&id, DmOptions::default())
            .map_err(dm_error(format!("resume {name}")))?;
        Ok(info.device())
    }

    /// Deactivates thin device `id`. An unused device is kept idle (its table an error
    /// target, so it holds no thin id) for the next activation; one still open (a container's
    /// mount holds it) is removed by the kernel on last close.
    pub fn deactivate(&self, id: u64) -> Result<()> {
        let name = self.thin_name(id)?;
        let Ok(info) = self.dm.device_info(&DevId::Name(&name)) else {
            return Ok(());
        };
        let idle = self.idle_devices();
        if info.open_count() == 0 && idle.len() < MAX_IDLE_DEVICES {
            let error = vec![(0, self.sectors(), "error".to_string(), String::new())];
            let slot = (0..).find(|k| !idle.iter().any(|n| *n == self.idle_name(*k)));
            if let Some(slot) = slot {
                let idle_name = DmNameBuf::new(self.idle_name(slot))
                    .map_err(dm_error(format!("device name {:?}", self.idle_name(slot))))?;
                if self.swap_table(&name, &error).is_ok()
                    && self
                        .dm
                        .device_rename(&name, &DevId::Name(&idle_name))
                        .is_ok()
                {
                    return Ok(());
                }
            }
        }
        self.dm
            .device_remove(
                &DevId::Name(&name),
                DmOptions::default().set_flags(DmFlags::DM_DEFERRED_REMOVE),
            )
            .map(drop)
            .map_err(dm_error(format!("remove {}", &*name)))
    }

    fn idle_name(&self, slot: u64) -> String {
        format!("{}-idle-{slot}", self.prefix)
    }

    /// The names of this pool's idle devices.
    fn idle_devices(&self) -> Vec<String> {
        let start = format!("{}-idle-", self.prefix);
        self.dm
            .list_devices()
            .unwrap_or_default()
            .into_iter()
            .map(|(n, _, _)| n.to_string())
            .filter(|n| n.starts_with(&start))
            .collect()
    }

    /// Thin devices of this pool that are active, by id.
    pub fn active_ids(&self) -> Result<Vec<u64>> {
        let start = format!("{}-", self.prefix);
        Ok(self
            .dm
            .list_devices()
            .map_err(dm_error("list devices"))?
            .into_iter()
            .filter_map(|(n, _, _)| n.to_string().strip_prefix(&start)?.parse().ok())
            .collect())
    }

    pub fn space(&self) -> Result<PoolSpace> {
        pool_space(&self.dm, &self.pool, self.layout.block_size)
    }

    /// Refuses new devices when the pool is (nearly) out of space, with the numbers.
    pub fn check_space(&self, what: &str) -> Result<()> {
        let s = self.space()?;
        let data_free = percent_free(s.data_used, s.data_total);
        let metadata_free = percent_free(s.metadata_used, s.metadata_total);
        let problem = if s.read_only {
            Some("is read-only (metadata trouble; see the kernel log)".to_string())
        } else if s.out_of_data_space || data_free < self.min_free_percent {
            Some(format!(
                "has {} of {} data free ({data_free}%)",
                human(s.data_total.saturating_sub(s.data_used)),
                human(s.data_total)
            ))
        } else if metadata_free < self.min_free_percent {
            Some(format!(
                "has {} of {} metadata free ({metadata_free}%)",
                human(s.metadata_total.saturating_sub(s.metadata_used)),
                human(s.metadata_total)
            ))
        } else {
            None
        };
        match problem {
            None => Ok(()),
            Some(p) => Err(Error::NoSpace(format!(
                "devicemapper: cannot create {what}: thin pool {} {p}, below the \
                 {}% kept free (dm.min_free_space); remove unused containers and images \
                 or give the pool more space",
                &*self.pool, self.min_free_percent
            ))),
        }
    }

    /// Deactivates every device of the pool, then the pool; devices still open go when their
    /// last user closes them.
    pub fn shutdown(&self) {
        let deferred = DmOptions::default().set_flags(DmFlags::DM_DEFERRED_REMOVE);
        let mut names = self.idle_devices();
        for id in self.active_ids().unwrap_or_default() {
            names.extend(self.thin_name(id).map(|n| n.to_string()));
        }
        for n in names {
            if let Ok(n) = name_ref(&n) {
                if let Err(e) = self.dm.device_remove(&DevId::Name(n), deferred) {
                    log::warn!("devicemapper: remove {n}: {e}");
                }
            }
        }
        if let Err(e) = self.dm.device_remove(&DevId::Name(&self.pool), deferred) {
            log::warn!("devicemapper: remove {}: {e}", &*self.pool);
        }
    }
}

/// The space of the pool named `pool`.
fn pool_space(dm: &DM, pool: &DmName, block_size: u64) -> Result<PoolSpace> {
    let (_, lines) = dm
        // NOFLUSH: the thin-pool target would commit its metadata for a status otherwise.
        .table_status(
            &DevId::Name(pool),
            DmOptions::default().set_flags(DmFlags::DM_NOFLUSH),
        )
        .map_err(dm_error(format!("status of {pool}")))?;
    let line = lines.first().map(|l| l.3.as_str()).unwrap_or("");
    let status: ThinPoolStatus = line
        .parse()
        .map_err(dm_error(format!("status of {pool}: {line:?}")))?;
    match status {
        ThinPoolStatus::Working(w) => Ok(PoolSpace {
            data_used: *w.usage.used_data * block_size,
            data_total: *w.usage.total_data * block_size,
            // Metadata blocks are 4 KiB.
            metadata_used: *w.usage.used_meta * 4096,
            metadata_total: *w.usage.total_meta * 4096,
            out_of_data_space: w.summary == ThinPoolStatusSummary::OutOfSpace,
            read_only: w.summary == ThinPoolStatusSummary::ReadOnly,
        }),
        ThinPoolStatus::Error | ThinPoolStatus::Fail => Err(Error::Unsupported(format!(
            "devicemapper: thin pool {pool} has failed (see the kernel log; thin_check)"
        ))),
    }
}

/// Creates device `name` with a one-line table and resumes it.
fn load(dm: &DM, name: &DmName, target: &str, sectors: u64, params: &str) -> Result<Device> {
    let id = DevId::Name(name);
    dm.device_create(name, None, DmOptions::default())
        .map_err(dm_error(format!("create {name}")))?;
    let table = vec![(0, sectors, target.to_string(), params.to_string())];
    let loaded = dm
        .table_load(&id, &table, DmOptions::default())
        .map_err(dm_error(format!("load {name}: {target} {params}")))
        .and_then(|_| {
            dm.device_suspend(&id, DmOptions::default())
                .map_err(dm_error(format!("resume {name}")))
        });
    match loaded {
        Ok(info) => Ok(info.device()),
        Err(e) => {
            let _ = dm.device_remove(&id, DmOptions::default());
            Err(e)
        }
    }
}

fn devnode(d: Device) -> PathBuf {
    // devtmpfs names every device-mapper device dm-<minor>, udev or not.
    PathBuf::from(format!("/dev/dm-{}", d.minor))
}

fn human(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

fn block_device(path: &Path) -> Result<(Device, u64)> {
    let meta = fs::metadata(path).at("stat", path)?;
    if !meta.file_type().is_block_device() {
        return Err(Error::Unsupported(format!(
            "devicemapper: {} is not a block device",
            path.display()
        )));
    }
    let rdev = meta.rdev();
    let file = File::open(path).at("open", path)?;
    let mut bytes: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `bytes`.
    let r = unsafe {
        libc::ioctl(
            rustix::fd::AsRawFd::as_raw_fd(&file),
            BLKGETSIZE64,
            &mut bytes,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error()).at("BLKGETSIZE64", path);
    }
    Ok((
        Device {
            major: libc::major(rdev),
            minor: libc::minor(rdev),
        },
        bytes,
    ))
}

/// A metadata device must be empty (the kernel then formats it) or hold a thin pool's
/// metadata already (berth's, from before): anything else is someone's data, never overwritten.
fn check_metadata_device(path: &Path) -> Result<()> {
    let mut head = [0u8; 4096];
    let mut f = File::open(path).at("open", path)?;
    io::Read::read_exact(&mut f, &mut head).at("read", path)?;
    // thin_disk_superblock: csum, flags, blocknr, uuid[16], then the magic.
    let magic = u64::from_le_bytes(head[32..40].try_into().unwrap_or_default());
    if head.iter().all(|&b| b == 0) || magic == THIN_SUPERBLOCK_MAGIC {
        return Ok(());
    }
    Err(Error::Unsupported(format!(
        "devicemapper: {} holds something other than thin-pool metadata; berth only uses an \
         empty metadata device (zero its first 4 KiB if its contents may go)",
        path.display()
    )))
}

const THIN_SUPERBLOCK_MAGIC: u64 = 27_022_010;

/// `_IOR(0x12, 114, size_t)`.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

fn sparse_file(path: &Path, size: u64) -> Result<()> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .at("create", path)?;
    if f.metadata().at("stat", path)?.len() == 0 {
        f.set_len(size).at("truncate", path)?;
    }
    Ok(())
}

/// Attaches `file` to a free loop device (autoclear); returns the handle and the file's size.
fn attach_loop(file: &Path) -> Result<(LoopDevice, u64)> {
    let size = fs::metadata(file).at("stat", file)?.len();
    let control = LoopControl::open().at("open", "/dev/loop-control")?;
    let mut last = None;
    // Another process may take the free device between the lookup and the attach.
    for _ in 0..16 {
        let dev = control
            .next_free()
            .at("find a free loop device for", file)?;
        match dev.with().autoclear(true).attach(file) {
            Ok(()) => return Ok((dev, size)),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
            Err(e) => return Err(e).at("attach a loop device to", file),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EBUSY)))
        .at("attach a loop device to", file)
}

fn loop_number(dev: &LoopDevice) -> Result<Device> {
    let op = || "loop device number".to_string();
    Ok(Device {
        major: dev.major().op(op)?,
        minor: dev.minor().op(op)?,
    })
}

/// The space of the pool a driver root uses, for `info`-style reporting, without opening the
/// driver (which one process owns).
pub fn pool_status(root: &Path) -> Result<PoolSpace> {
    let dm = DM::new().map_err(dm_error("open /dev/mapper/control"))?;
    let meta = fs::metadata(root).at("stat", root)?;
    let pool = name(format!("berth-{:x}-{}-pool", meta.dev(), meta.ino()))?;
    let layout_path = root.join("devicemapper/layout.json");
    let layout: PoolLayout = fs::read(&layout_path)
        .at("read", &layout_path)
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| Error::Sys {
                op: format!("devicemapper: read {}", layout_path.display()),
                source: io::Error::other(e),
            })
        })?;
    pool_space(&dm, &pool, layout.block_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_docker_writes_them() {
        assert_eq!(parse_size("10G"), Some(10 * GIB));
        assert_eq!(parse_size("512m"), Some(512 * MIB));
        assert_eq!(parse_size("64KiB"), Some(64 * KIB));
        assert_eq!(parse_size("64kb"), Some(64 * KIB));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("1x"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn options_override_the_defaults_and_mistakes_are_named() {
        let c = DeviceMapperConfig::from_options(&[
            "dm.basesize=20G",
            "dm.loopdatasize=1g",
            "dm.min_free_space=5%",
        ])
        .unwrap();
        assert_eq!(c.base_size, 20 * GIB);
        assert_eq!(c.loop_data_size, GIB);
        assert_eq!(c.min_free_percent, 5);
        for bad in [
            "dm.basesize=huge",
            "dm.nosuch=1",
            "basesize",
            "dm.blocksize=4k",
            "dm.min_free_space=100",
            "dm.datadev=/dev/sdb",
        ] {
            let e = DeviceMapperConfig::from_options(&[bad]).unwrap_err();
            assert!(e.to_string().contains("devicemapper"), "{bad}: {e}");
        }
    }

    #[test]
    fn free_share_rounds_down_and_survives_an_empty_pool() {
        assert_eq!(percent_free(95, 100), 5);
        assert_eq!(percent_free(0, 0), 0);
        assert_eq!(percent_free(1, 3), 66);
    }
}
