//! The operator RPCs of `silo.v1.Silo` (issue #14): CpuProfile, FlushShard,
//! CompactShard, GetShardStorageInfo and DumpTasks, and the reasons the
//! shard-placement RPCs do not apply to a Raft store.
//!
//! Storage is one RocksDB per node holding every shard (a shard is a range of
//! the tenant-hash space, not a database), so Flush, Compact and StorageInfo
//! act on this node's whole store; the `shard` field must still name a shard
//! of the map (INVALID_ARGUMENT / NOT_FOUND otherwise), as with every other
//! shard-scoped call. They run on any node (each has its own store), one heavy
//! operation at a time per node (RESOURCE_EXHAUSTED while one runs).
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tonic::Status;

use crate::broker::Broker;
use crate::pb::silo as pb;
use crate::storage::keys;
use crate::webui::data::{LeaseRow, TaskRow};

/// Longest CpuProfile, seconds (the Silo default is 30).
pub const PROFILE_SECONDS_MAX: u32 = 300;
/// Default and highest sampling frequency, Hz.
pub const PROFILE_HZ_DEFAULT: u32 = 99;
pub const PROFILE_HZ_MAX: u32 = 1000;
/// Ready tasks listed per task group in a DumpTasks dump.
pub const DUMP_NEXT_TASKS: usize = 20;
/// Task groups detailed in a dump (the deepest first; the rest are counted
/// in `task_count` only).
pub const DUMP_GROUPS_MAX: usize = 100;
/// Running leases listed per task group in a DumpTasks dump.
pub const DUMP_LEASES: usize = 20;

/// One heavy diagnostic at a time on a node (a profile, a compaction).
static BUSY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

fn busy(what: &str) -> Status {
    Status::resource_exhausted(format!("another {what} or profile is running on this node; retry when it is done"))
}

/// CpuProfile: samples this process's CPU for `duration_seconds` (1 to
/// [`PROFILE_SECONDS_MAX`]; 0 means 30) at `frequency` Hz (1 to
/// [`PROFILE_HZ_MAX`]; 0 means [`PROFILE_HZ_DEFAULT`]) and returns the
/// profile in pprof's protobuf format (`go tool pprof`, speedscope, ...).
pub async fn cpu_profile(r: pb::CpuProfileRequest) -> Result<pb::CpuProfileResponse, Status> {
    let seconds = if r.duration_seconds == 0 { 30 } else { r.duration_seconds };
    if seconds > PROFILE_SECONDS_MAX {
        return Err(Status::invalid_argument(format!(
            "duration_seconds must be between 1 and {PROFILE_SECONDS_MAX}, got {seconds}"
        )));
    }
    let hz = if r.frequency == 0 { PROFILE_HZ_DEFAULT } else { r.frequency };
    if hz > PROFILE_HZ_MAX {
        return Err(Status::invalid_argument(format!("frequency must be between 1 and {PROFILE_HZ_MAX} Hz, got {hz}")));
    }
    let _slot = BUSY.try_acquire().map_err(|_| busy("compaction"))?;
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(hz as i32)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| Status::internal(format!("cannot start the profiler: {e}")))?;
    tokio::time::sleep(Duration::from_secs(seconds as u64)).await;
    let report = guard.report().build().map_err(|e| Status::internal(format!("profile report: {e}")))?;
    let samples: u64 = report.data.values().map(|&n| n as u64).sum();
    let profile = report.pprof().map_err(|e| Status::internal(format!("pprof encoding: {e}")))?;
    let mut profile_data = Vec::new();
    pprof::protos::Message::encode(&profile, &mut profile_data)
        .map_err(|e| Status::internal(format!("pprof encoding: {e}")))?;
    Ok(pb::CpuProfileResponse { profile_data, duration_seconds: seconds, samples })
}

/// FlushShard: writes every memtable of this node's store to disk, in one
/// atomic flush (`storage::rocks::flush_all`).
pub async fn flush(db: std::sync::Arc<rocksdb::DB>) -> Result<pb::FlushShardResponse, Status> {
    let started = Instant::now();
    tokio::task::spawn_blocking(move || {
        crate::storage::rocks::flush_all(&db).map_err(|e| Status::internal(format!("flush: {e}")))
    })
    .await
    .map_err(|e| Status::internal(format!("flush task: {e}")))??;
    Ok(pb::FlushShardResponse {
        status: format!("flushed this node's store (every shard) in {} ms", started.elapsed().as_millis()),
    })
}

/// CompactShard: a full manual compaction of this node's state (the
/// state-machine and log column families), on a blocking thread. It rewrites
/// the whole store, so it costs I/O proportional to it; one at a time.
pub async fn compact(db: std::sync::Arc<rocksdb::DB>) -> Result<pb::CompactShardResponse, Status> {
    let slot = BUSY.try_acquire().map_err(|_| busy("compaction"))?;
    let started = Instant::now();
    let before = live_bytes(&db);
    let db2 = db.clone();
    // The slot lives as long as the compaction, even if the caller gives up.
    slot.forget();
    tokio::task::spawn_blocking(move || {
        let _release = ReleaseOnDrop;
        for cf in keys::ALL_CFS {
            if let Some(h) = db2.cf_handle(cf) {
                db2.compact_range_cf(&h, None::<&[u8]>, None::<&[u8]>);
            }
        }
    })
    .await
    .map_err(|e| Status::internal(format!("compaction task: {e}")))?;
    Ok(pb::CompactShardResponse {
        status: format!(
            "compacted this node's store (every shard) in {} ms: {} → {} bytes of SST files",
            started.elapsed().as_millis(),
            before,
            live_bytes(&db)
        ),
    })
}

/// Gives back the [`BUSY`] slot a `forget`-ed permit held.
struct ReleaseOnDrop;

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        BUSY.add_permits(1);
    }
}

fn live_bytes(db: &rocksdb::DB) -> u64 {
    db.live_files().map(|files| files.iter().map(|f| f.size as u64).sum()).unwrap_or(0)
}

/// GetShardStorageInfo: this node's SST files by level (RocksDB's levels
/// are Silo's sorted runs: each level-0 file is a run of its own, each
/// deeper level one run), over every column family.
pub fn storage_info(db: &rocksdb::DB) -> Result<pb::GetShardStorageInfoResponse, Status> {
    let files = db.live_files().map_err(|e| Status::internal(format!("listing SST files: {e}")))?;
    let (mut l0_count, mut l0_size) = (0u64, 0u64);
    let mut levels: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
    for f in &files {
        if f.level == 0 {
            l0_count += 1;
            l0_size += f.size as u64;
        } else {
            let e = levels.entry(f.level).or_default();
            e.0 += 1;
            e.1 += f.size as u64;
        }
    }
    let sorted_runs: Vec<pb::SortedRunInfo> = levels
        .iter()
        .map(|(&level, &(sst_count, estimated_size))| pb::SortedRunInfo { id: level as u32, sst_count, estimated_size })
        .collect();
    Ok(pb::GetShardStorageInfoResponse {
        l0_sst_count: l0_count,
        total_l0_size: l0_size,
        sorted_run_count: l0_count + sorted_runs.len() as u64,
        total_sorted_run_size: l0_size + sorted_runs.iter().map(|r| r.estimated_size).sum::<u64>(),
        sorted_runs,
    })
}

/// One task group in a DumpTasks dump.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct GroupDump {
    pub task_group: String,
    /// Attempts due now.
    pub ready: usize,
    /// Attempts due later.
    pub scheduled: usize,
    /// Attempts waiting for a time to retry their limits.
    pub waiting: usize,
    /// Running leases (counted up to the console's lease scan bound).
    pub running: usize,
    /// The next ready tasks, in the order workers get them (at most [`DUMP_NEXT_TASKS`]).
    pub next: Vec<TaskRow>,
    /// Running leases (at most [`DUMP_LEASES`]; the deadline by this node's
    /// lease clock, the leader's being authoritative).
    pub leases: Vec<LeaseRow>,
}

/// DumpTasks: task groups' counts, next ready tasks and running leases, as
/// JSON (`dump`: `{"groups": [GroupDump...]}`), and the number of queued
/// tasks of every group (`task_count`: ready + scheduled + waiting). Bounded:
/// the [`DUMP_GROUPS_MAX`] deepest groups, per group at most
/// [`DUMP_NEXT_TASKS`] tasks and [`DUMP_LEASES`] leases. It reads RocksDB:
/// call it on a blocking thread.
pub fn dump_tasks(db: &rocksdb::DB, broker: &Broker) -> Result<pb::DumpTasksResponse, Status> {
    let now = crate::wall_clock_ms();
    let mut stats = broker.group_stats(now, crate::monotonic_ms());
    let leases = crate::webui::data::leases(db, broker, None, usize::MAX);
    for name in leases.per_group.keys() {
        if !stats.iter().any(|g| &g.task_group == name) {
            stats.push(crate::broker::GroupStats::idle(name));
        }
    }
    let task_count: usize = stats.iter().map(|g| g.ready + g.future + g.gated).sum();
    stats.sort_by(|a, b| (b.ready + b.future + b.gated).cmp(&(a.ready + a.future + a.gated)));
    stats.truncate(DUMP_GROUPS_MAX);
    stats.sort_by(|a, b| a.task_group.cmp(&b.task_group));
    let groups: Vec<GroupDump> = stats
        .into_iter()
        .map(|g| {
            let next = crate::webui::data::next_tasks(db, broker, &g.task_group, DUMP_NEXT_TASKS, now);
            GroupDump {
                running: leases.per_group.get(&g.task_group).copied().unwrap_or(0),
                leases: Vec::new(),
                task_group: g.task_group,
                ready: g.ready,
                scheduled: g.future,
                waiting: g.gated,
                next,
            }
        })
        .collect();
    let mut groups = groups;
    for row in leases.rows {
        if let Some(g) = groups.iter_mut().find(|g| g.task_group == row.task_group) {
            if g.leases.len() < DUMP_LEASES {
                g.leases.push(row);
            }
        }
    }
    let dump = serde_json::json!({ "groups": groups }).to_string();
    Ok(pb::DumpTasksResponse { dump, task_count: task_count.min(u32::MAX as usize) as u32 })
}

/// Why ForceReleaseShard does not apply here (UNIMPLEMENTED with the reason).
pub fn force_release_shard() -> Status {
    super::status::unimplemented(
        "ForceReleaseShard",
        "shards are not leased to nodes here: one Raft group holds every shard and its leader serves them all, so \
         there is no shard lease to release; to move the work off a node, `silo ctl transfer-leader <id>` or stop it \
         (SIGTERM hands leadership off)",
    )
}

/// Why ConfigureShard does not apply here.
pub fn configure_shard() -> Status {
    super::status::unimplemented(
        "ConfigureShard",
        "there are no placement rings: every node replicates every shard (Raft), so a shard cannot be pinned to a \
         subset of nodes",
    )
}

/// Why RequestSplit and GetSplitStatus do not apply here.
pub fn split(rpc: &str) -> Status {
    super::status::unimplemented(
        rpc,
        "the shard map is fixed when the cluster forms (`num_shards`); shards are ranges of one replicated store, so \
         splitting one would not spread load across nodes",
    )
}

/// Why HeapProfile does not apply here.
pub fn heap_profile() -> Status {
    super::status::unimplemented(
        "HeapProfile",
        "this build uses the system allocator, which keeps no allocation profile; CpuProfile is available, and \
         silo_process_resident_memory_bytes and the RocksDB gauges show where memory goes",
    )
}
