//! The SQL tables: DataFusion table providers over the state machine's
//! records, read through one point-in-time view per statement.
//!
//! | table | rows from | key ranges used |
//! |---|---|---|
//! | `jobs` | `J` (+ `P` when `payload` is selected) | see `pushdown.rs` |
//! | `tasks` | `Q` (ready and time-gated attempts, floating-limit refreshes) | whole table; filters applied after |
//! | `queues` | `H` holders and `W` waiters | the tenant's range when `tenant = …` |
//! | `tenant_counts` | `N` counters | the tenant's range when `tenant = …` |
//! | `queue_counts` | `C` queue states | the tenant's range when `tenant = …` |
//!
//! Column names and types follow Silo's guide "Querying Jobs"; README's
//! compatibility table lists where our model differs. Every scan streams
//! batches of [`BATCH_ROWS`] rows, each read on a blocking thread, so memory
//! stays bounded by the batch, not the table, and a LIMIT stops the reads.
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int64Builder, MapBuilder, RecordBatch, StringBuilder, UInt32Builder, UInt8Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};

use super::pushdown::{self, Strategy};
use crate::state_machine::job::QueueState;
use crate::state_machine::limits::WaiterRecord;
use crate::state_machine::{Job, JobKey, JobStatus, QueueKind, QueuedTask, Tables, View};
use crate::storage::codec::decode_or_die;
use crate::storage::keys;
use crate::storage::kv::Kv;

/// Rows per batch a scan produces (and per blocking read).
pub const BATCH_ROWS: usize = 1024;
/// A `jobs` batch closes early once its payload and metadata text reach this
/// many bytes (payloads are up to 16 MiB each; Arrow string offsets are i32).
pub const BATCH_BYTES: usize = 8 << 20;
/// Entries read at a time while `payload` is selected (bounds one read's bytes).
const PAYLOAD_READ: usize = 4;

/// What every table of one statement reads: one consistent view, one shard,
/// and the caller's tenant scope.
pub struct Source<K> {
    pub kv: Arc<K>,
    pub shard: u32,
    /// The shard's UUID (the `shard_id` column).
    pub shard_id: String,
    /// Some(t): the statement sees only tenant `t`'s rows (a tenant's query).
    pub tenant: Option<String>,
    /// Wall-clock time of the statement (Waiting vs Scheduled), ms.
    pub now_ms: i64,
}

impl<K> Clone for Source<K> {
    fn clone(&self) -> Self {
        Source {
            kv: self.kv.clone(),
            shard: self.shard,
            shard_id: self.shard_id.clone(),
            tenant: self.tenant.clone(),
            now_ms: self.now_ms,
        }
    }
}

impl<K: Kv + Send + Sync + 'static> Source<K> {
    /// The tenants a scan covers: the scope's, intersected with those named
    /// in SQL; None = every tenant of the shard (one range over all of them).
    fn tenants(&self, named: Option<Vec<String>>) -> Option<Vec<String>> {
        match (&self.tenant, named) {
            (Some(t), None) => Some(vec![t.clone()]),
            (Some(t), Some(named)) => Some(named.into_iter().filter(|n| n == t).take(1).collect()),
            (None, named) => named.map(|mut n| {
                n.sort();
                n.dedup();
                n
            }),
        }
    }

    /// Every tenant with at least one job on the shard (from the `N` counters).
    fn known_tenants(&self) -> Vec<String> {
        let prefix = keys::shard_prefixed(keys::TENANT_COUNT, self.shard);
        let mut out = BTreeSet::new();
        let mut from = prefix.clone();
        loop {
            let page = self.kv.scan_from_n(&prefix, &from, BATCH_ROWS);
            let Some((last, _)) = page.last() else { break };
            from = next_key(last);
            out.extend(page.iter().filter_map(|(k, _)| keys::parse_tenant_count(k)).map(|(t, _)| t));
        }
        out.into_iter().collect()
    }

    /// Key ranges (prefixes) of `tag` for the tenants a scan covers, each
    /// extended by `suffix(prefix)`; one shard-wide range when unrestricted
    /// and `per_tenant` is false.
    fn ranges(&self, tag: u8, named: Option<Vec<String>>, per_tenant: bool) -> Vec<Vec<u8>> {
        match self.tenants(named) {
            Some(ts) => ts.iter().map(|t| keys::tenant_prefixed(tag, self.shard, t)).collect(),
            None if per_tenant => {
                self.known_tenants().iter().map(|t| keys::tenant_prefixed(tag, self.shard, t)).collect()
            }
            None => vec![keys::shard_prefixed(tag, self.shard)],
        }
    }

    fn tenant_list(&self, named: Option<Vec<String>>) -> Vec<String> {
        self.tenants(named).unwrap_or_else(|| self.known_tenants())
    }
}

/// The smallest key after `k`.
fn next_key(k: &[u8]) -> Vec<u8> {
    let mut n = k.to_vec();
    n.push(0);
    n
}

/// Reads key ranges in order, a page at a time, remembering where it stopped.
struct RangeReader {
    ranges: Vec<Vec<u8>>,
    at: usize,
    from: Vec<u8>,
}

impl RangeReader {
    fn new(ranges: Vec<Vec<u8>>) -> Self {
        let from = ranges.first().cloned().unwrap_or_default();
        RangeReader { ranges, at: 0, from }
    }

    /// Up to `n` next entries (fewer only at the end of the last range).
    fn next_page<K: Kv>(&mut self, kv: &K, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        while out.len() < n && self.at < self.ranges.len() {
            let prefix = &self.ranges[self.at];
            let page = kv.scan_from_n(prefix, &self.from, n - out.len());
            let short = page.len() < n - out.len();
            if let Some((last, _)) = page.last() {
                self.from = next_key(last);
            }
            out.extend(page);
            if short {
                self.at += 1;
                self.from = self.ranges.get(self.at).cloned().unwrap_or_default();
            }
        }
        out
    }
}

/// One page producer: called on a blocking thread until it returns None.
type Pager = Box<dyn FnMut() -> Result<Option<RecordBatch>> + Send>;

/// A [`PartitionStream`] that makes a fresh pager per execution.
struct Paged {
    schema: SchemaRef,
    /// What the scan reads (EXPLAIN shows it).
    label: String,
    make: Box<dyn Fn() -> Pager + Send + Sync>,
}

impl fmt::Debug for Paged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.label)
    }
}

impl PartitionStream for Paged {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let pager = (self.make)();
        let pages = futures::stream::unfold(Some(pager), |pager| async move {
            let mut pager = pager?;
            let step = tokio::task::spawn_blocking(move || (pager(), pager)).await;
            match step {
                Ok((Ok(Some(batch)), pager)) => Some((Ok(batch), Some(pager))),
                Ok((Ok(None), _)) => None,
                Ok((Err(e), _)) => Some((Err(e), None)),
                Err(e) => Some((Err(DataFusionError::External(Box::new(e))), None)),
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), pages))
    }
}

/// A streaming plan over `paged`, projected, with `limit` applied.
fn plan(
    schema: SchemaRef,
    label: String,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
    make: Box<dyn Fn() -> Pager + Send + Sync>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let part: Arc<dyn PartitionStream> = Arc::new(Paged { schema: schema.clone(), label, make });
    Ok(Arc::new(StreamingTableExec::try_new(schema, vec![part], projection, Vec::new(), false, limit)?))
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn metadata_type() -> DataType {
    let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    use datafusion::arrow::array::Array;
    b.finish().data_type().clone()
}

fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// `Inexact` (the scan narrows, DataFusion still filters) for the conjuncts
/// a scan can use, `Unsupported` for the rest.
fn pushdown_where(filters: &[&Expr], usable: impl Fn(&Expr) -> bool) -> Vec<TableProviderFilterPushDown> {
    filters
        .iter()
        .map(
            |f| if usable(f) { TableProviderFilterPushDown::Inexact } else { TableProviderFilterPushDown::Unsupported },
        )
        .collect()
}

/// Which columns a projection reads (all when None).
fn wants(projection: Option<&Vec<usize>>, column: usize) -> bool {
    projection.is_none_or(|p| p.contains(&column))
}

/// `status_kind` as Silo names it: Scheduled splits into Waiting (due) and
/// Scheduled (in the future).
pub fn status_kind(job: &Job, now_ms: i64) -> &'static str {
    match (&job.status, &job.pending) {
        (JobStatus::Scheduled, Some(p)) if p.start_at_ms <= now_ms => "Waiting",
        (status, _) => status.name(),
    }
}

/// Renders a payload for the `payload` column: MessagePack (what Silo's
/// clients send) as JSON text; otherwise UTF-8 text as is; otherwise NULL.
pub fn payload_text(bytes: &[u8]) -> Option<String> {
    let mut cursor = std::io::Cursor::new(bytes);
    let mut de = rmp_serde::Deserializer::new(&mut cursor);
    if let Ok(v) = <serde_json::Value as serde::Deserialize>::deserialize(&mut de) {
        if cursor.position() as usize == bytes.len() {
            return Some(v.to_string());
        }
    }
    std::str::from_utf8(bytes).ok().map(str::to_string)
}

// ---------------------------------------------------------------- jobs

/// The `jobs` table.
pub struct JobsTable<K> {
    pub source: Source<K>,
    schema: SchemaRef,
}

impl<K> fmt::Debug for JobsTable<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("jobs")
    }
}

const JOBS_PAYLOAD: usize = 5;
const JOBS_METADATA: usize = 11;

impl<K: Kv + Send + Sync + 'static> JobsTable<K> {
    pub fn new(source: Source<K>) -> Self {
        let schema = Arc::new(Schema::new(vec![
            utf8("shard_id", false),
            utf8("tenant", false),
            utf8("id", false),
            Field::new("priority", DataType::UInt8, false),
            Field::new("enqueue_time_ms", DataType::Int64, false),
            utf8("payload", true),
            utf8("status_kind", true),
            Field::new("status_changed_at_ms", DataType::Int64, true),
            utf8("task_group", false),
            Field::new("current_attempt", DataType::UInt32, true),
            Field::new("next_attempt_starts_after_ms", DataType::Int64, true),
            Field::new("metadata", metadata_type(), true),
        ]));
        JobsTable { source, schema }
    }

    /// Key ranges and how to get a job key out of each entry, for `filters`.
    fn reader(&self, filters: &pushdown::JobFilters) -> (Vec<Vec<u8>>, IndexKind) {
        let s = &self.source;
        let tenants = filters.tenants.clone();
        match &filters.strategy {
            Strategy::Ids(ids) => {
                let mut keys = Vec::new();
                for t in s.tenant_list(tenants) {
                    for id in ids {
                        keys.push(keys::job(&JobKey { shard: s.shard, tenant: t.clone(), id: id.clone() }));
                    }
                }
                keys.sort();
                keys.dedup();
                (keys, IndexKind::Job)
            }
            Strategy::MetadataExact { key, value } => (
                s.tenant_list(tenants)
                    .iter()
                    .map(|t| keys::metadata_index_prefix(s.shard, t, key, value, true))
                    .collect(),
                IndexKind::Metadata,
            ),
            Strategy::MetadataPrefix { key, prefix } => (
                s.tenant_list(tenants)
                    .iter()
                    .map(|t| keys::metadata_index_prefix(s.shard, t, key, prefix, false))
                    .collect(),
                IndexKind::Metadata,
            ),
            Strategy::Status(statuses) => {
                let mut ranges = Vec::new();
                for t in s.tenant_list(tenants) {
                    for st in statuses {
                        ranges.push(keys::status_index_prefix(s.shard, &t, *st));
                    }
                }
                (ranges, IndexKind::Status)
            }
            Strategy::TaskGroups(groups) => {
                let mut ranges = Vec::new();
                for t in s.tenant_list(tenants) {
                    for g in groups {
                        ranges.push(keys::group_index_prefix(s.shard, &t, g));
                    }
                }
                (ranges, IndexKind::Group)
            }
            Strategy::FullScan => (s.ranges(keys::JOB, tenants, false), IndexKind::Job),
        }
    }
}

/// How a scanned entry leads to a job.
#[derive(Debug, Clone, Copy)]
enum IndexKind {
    /// The entry is the job record (`J`); for id lookups the "ranges" are
    /// whole keys.
    Job,
    Status,
    Group,
    Metadata,
}

impl IndexKind {
    fn job_key(self, shard: u32, k: &[u8]) -> Option<JobKey> {
        let (tenant, id) = match self {
            IndexKind::Job => return keys::parse_job_key(k),
            IndexKind::Status => keys::parse_status_index(k).map(|(t, _, _, id)| (t, id))?,
            IndexKind::Group => keys::parse_group_index(k).map(|(t, _, id)| (t, id))?,
            IndexKind::Metadata => keys::parse_metadata_index(k).map(|(t, _, _, id)| (t, id))?,
        };
        Some(JobKey { shard, tenant, id })
    }
}

#[async_trait::async_trait]
impl<K: Kv + Send + Sync + 'static> TableProvider for JobsTable<K> {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(pushdown_where(filters, pushdown::is_indexable))
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let analyzed = pushdown::analyze(filters);
        let (ranges, kind) = self.reader(&analyzed);
        let label = format!("jobs: {} over {} key range(s)", analyzed.strategy.name(), ranges.len());
        let source = self.source.clone();
        let schema = self.schema.clone();
        let with_payload = wants(projection, JOBS_PAYLOAD);
        let with_metadata = wants(projection, JOBS_METADATA);
        let point_reads = matches!(analyzed.strategy, Strategy::Ids(_));
        let make = move || -> Pager {
            let source = source.clone();
            let schema = schema.clone();
            let mut reader = RangeReader::new(ranges.clone());
            let mut points = ranges.clone().into_iter();
            let read_size = if with_payload { PAYLOAD_READ } else { BATCH_ROWS };
            Box::new(move || {
                let view = View(&*source.kv);
                let mut rows = JobRows::new(with_payload, with_metadata);
                // Fill one batch; entries that lead to no job (a key of an id
                // that does not exist) never end the scan early.
                let mut exhausted = false;
                while !exhausted && rows.len < BATCH_ROWS && rows.bytes < BATCH_BYTES {
                    if point_reads {
                        match points.next() {
                            None => exhausted = true,
                            Some(k) => {
                                if let Some(bytes) = source.kv.get(&k) {
                                    rows.push(&source, &view, &decode_or_die("job", &bytes));
                                }
                            }
                        }
                        continue;
                    }
                    let want = read_size.min(BATCH_ROWS - rows.len);
                    let page = reader.next_page(&*source.kv, want);
                    exhausted = page.len() < want;
                    for (k, v) in page {
                        let job: Option<Job> = match kind {
                            IndexKind::Job => Some(decode_or_die("job", &v)),
                            _ => kind.job_key(source.shard, &k).and_then(|jk| view.job(&jk)),
                        };
                        if let Some(job) = job {
                            rows.push(&source, &view, &job);
                        }
                    }
                }
                if rows.len == 0 {
                    return Ok(None);
                }
                rows.finish(&schema).map(Some)
            })
        };
        plan(self.schema.clone(), label, projection, limit, Box::new(make))
    }
}

struct JobRows {
    len: usize,
    /// Payload and metadata text bytes so far.
    bytes: usize,
    with_payload: bool,
    with_metadata: bool,
    shard_id: StringBuilder,
    tenant: StringBuilder,
    id: StringBuilder,
    priority: UInt8Builder,
    enqueue_time_ms: Int64Builder,
    payload: StringBuilder,
    status_kind: StringBuilder,
    status_changed_at_ms: Int64Builder,
    task_group: StringBuilder,
    current_attempt: UInt32Builder,
    next_attempt_starts_after_ms: Int64Builder,
    metadata: MapBuilder<StringBuilder, StringBuilder>,
}

impl JobRows {
    fn new(with_payload: bool, with_metadata: bool) -> Self {
        JobRows {
            len: 0,
            bytes: 0,
            with_payload,
            with_metadata,
            shard_id: StringBuilder::new(),
            tenant: StringBuilder::new(),
            id: StringBuilder::new(),
            priority: UInt8Builder::new(),
            enqueue_time_ms: Int64Builder::new(),
            payload: StringBuilder::new(),
            status_kind: StringBuilder::new(),
            status_changed_at_ms: Int64Builder::new(),
            task_group: StringBuilder::new(),
            current_attempt: UInt32Builder::new(),
            next_attempt_starts_after_ms: Int64Builder::new(),
            metadata: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
        }
    }

    fn push<K: Kv>(&mut self, source: &Source<K>, view: &View<'_, K>, job: &Job) {
        self.len += 1;
        self.shard_id.append_value(&source.shard_id);
        self.tenant.append_value(&job.key.tenant);
        self.id.append_value(&job.key.id);
        self.priority.append_value(job.priority.min(u8::MAX as u32) as u8);
        self.enqueue_time_ms.append_value(job.enqueue_time_ms);
        if self.with_payload {
            let text = payload_text(&view.payload(&job.key));
            self.bytes += text.as_ref().map_or(0, String::len);
            self.payload.append_option(text);
        } else {
            self.payload.append_null();
        }
        self.status_kind.append_value(status_kind(job, source.now_ms));
        self.status_changed_at_ms.append_value(job.status_changed_at_ms);
        self.task_group.append_value(&job.task_group);
        let pending = job.pending.as_ref().filter(|_| job.status == JobStatus::Scheduled);
        self.current_attempt.append_option(pending.map(|p| p.attempt_number));
        self.next_attempt_starts_after_ms.append_option(pending.map(|p| p.start_at_ms));
        if self.with_metadata {
            for (k, v) in &job.metadata {
                self.bytes += k.len() + v.len();
                self.metadata.keys().append_value(k);
                self.metadata.values().append_value(v);
            }
        }
        self.metadata.append(self.with_metadata).expect("keys and values are appended in pairs");
    }

    fn finish(mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        batch(
            schema,
            vec![
                Arc::new(self.shard_id.finish()),
                Arc::new(self.tenant.finish()),
                Arc::new(self.id.finish()),
                Arc::new(self.priority.finish()),
                Arc::new(self.enqueue_time_ms.finish()),
                Arc::new(self.payload.finish()),
                Arc::new(self.status_kind.finish()),
                Arc::new(self.status_changed_at_ms.finish()),
                Arc::new(self.task_group.finish()),
                Arc::new(self.current_attempt.finish()),
                Arc::new(self.next_attempt_starts_after_ms.finish()),
                Arc::new(self.metadata.finish()),
            ],
        )
    }
}

// ------------------------------------------------- tables over one key range

/// Turns one page of `(key, value)` entries into columns.
type RowsFn<K> = dyn Fn(&Source<K>, &[(Vec<u8>, Vec<u8>)]) -> Vec<ArrayRef> + Send + Sync;

/// A table whose rows are the entries of one key table, optionally narrowed
/// to the tenants named by `tenant = …`.
pub struct KeyTable<K> {
    name: &'static str,
    source: Source<K>,
    schema: SchemaRef,
    tags: Vec<u8>,
    /// Whether the tenant is the first key component (tenant filters narrow ranges).
    tenant_keyed: bool,
    rows: Arc<RowsFn<K>>,
}

impl<K> fmt::Debug for KeyTable<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

fn is_tenant_filter(e: &Expr) -> bool {
    pushdown::analyze(std::slice::from_ref(e)).tenants.is_some()
}

#[async_trait::async_trait]
impl<K: Kv + Send + Sync + 'static> TableProvider for KeyTable<K> {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(pushdown_where(filters, |f| self.tenant_keyed && is_tenant_filter(f)))
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let named = if self.tenant_keyed { pushdown::analyze(filters).tenants } else { None };
        let mut ranges = Vec::new();
        for &tag in &self.tags {
            if self.tenant_keyed {
                ranges.extend(self.source.ranges(tag, named.clone(), false));
            } else {
                ranges.push(keys::table(tag));
            }
        }
        let label = format!("{}: {} key range(s)", self.name, ranges.len());
        let (source, schema, rows) = (self.source.clone(), self.schema.clone(), self.rows.clone());
        let make = move || -> Pager {
            let (source, schema, rows) = (source.clone(), schema.clone(), rows.clone());
            let mut reader = RangeReader::new(ranges.clone());
            Box::new(move || {
                let page = reader.next_page(&*source.kv, BATCH_ROWS);
                if page.is_empty() {
                    return Ok(None);
                }
                batch(&schema, rows(&source, &page)).map(Some)
            })
        };
        plan(self.schema.clone(), label, projection, limit, Box::new(make))
    }
}

/// The `tasks` table: the queue index (`Q`). Silo's variant types:
/// RunAttempt (leasable attempt), RequestTicket / CheckRateLimit (an attempt
/// waiting for a time before walking its concurrency or rate limits),
/// RefreshFloatingLimit. Concurrency requesters parked on a queue are rows of
/// `queues`, not here. Extra column: `task_id`.
pub fn tasks_table<K: Kv + Send + Sync + 'static>(source: Source<K>) -> KeyTable<K> {
    let schema = Arc::new(Schema::new(vec![
        utf8("shard_id", false),
        utf8("tenant", false),
        utf8("task_group", false),
        Field::new("start_time_ms", DataType::Int64, false),
        Field::new("priority", DataType::UInt8, false),
        utf8("job_id", false),
        Field::new("attempt", DataType::UInt32, false),
        utf8("variant_type", false),
        utf8("task_id", false),
    ]));
    let rows = move |s: &Source<K>, page: &[(Vec<u8>, Vec<u8>)]| -> Vec<ArrayRef> {
        let view = View(&*s.kv);
        let tasks: Vec<QueuedTask> = page
            .iter()
            .map(|(_, v)| decode_or_die::<QueuedTask>("queued task", v))
            .filter(|t| t.job.shard == s.shard && s.tenant.as_ref().is_none_or(|x| *x == t.job.tenant))
            .collect();
        let variant = |t: &QueuedTask| match &t.kind {
            QueueKind::Attempt => "RunAttempt",
            QueueKind::Refresh { .. } => "RefreshFloatingLimit",
            QueueKind::Gate => {
                let rate = view.job(&t.job).and_then(|j| {
                    let stage = j.pending.as_ref()?.limit_stage as usize;
                    j.limits.get(stage).map(|l| matches!(l, crate::state_machine::Limit::RateLimit(_)))
                });
                if rate == Some(true) {
                    "CheckRateLimit"
                } else {
                    "RequestTicket"
                }
            }
        };
        vec![
            strings(tasks.iter().map(|_| s.shard_id.as_str())),
            strings(tasks.iter().map(|t| t.job.tenant.as_str())),
            strings(tasks.iter().map(|t| t.task_group.as_str())),
            Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(tasks.iter().map(|t| t.start_at_ms))),
            Arc::new(datafusion::arrow::array::UInt8Array::from_iter_values(
                tasks.iter().map(|t| t.priority.min(255) as u8),
            )),
            strings(tasks.iter().map(|t| t.job.id.as_str())),
            Arc::new(datafusion::arrow::array::UInt32Array::from_iter_values(tasks.iter().map(|t| t.attempt_number))),
            strings(tasks.iter().map(variant)),
            strings(tasks.iter().map(|t| t.task_id.as_str())),
        ]
    };
    KeyTable { name: "tasks", source, schema, tags: vec![keys::QUEUED], tenant_keyed: false, rows: Arc::new(rows) }
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(datafusion::arrow::array::StringArray::from_iter_values(values))
}

/// The `queues` table: holders (`H`, timestamp = grant time) and requesters
/// (`W`, timestamp = the attempt's start time) of every concurrency queue.
/// `queue_name` is the limit key; floating limits' queues are listed too.
pub fn queues_table<K: Kv + Send + Sync + 'static>(source: Source<K>) -> KeyTable<K> {
    let schema = Arc::new(Schema::new(vec![
        utf8("shard_id", false),
        utf8("tenant", false),
        utf8("queue_name", false),
        utf8("entry_type", false),
        utf8("task_id", false),
        utf8("job_id", true),
        Field::new("priority", DataType::UInt8, true),
        Field::new("timestamp_ms", DataType::Int64, false),
    ]));
    let rows = |s: &Source<K>, page: &[(Vec<u8>, Vec<u8>)]| -> Vec<ArrayRef> {
        let mut b = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            UInt8Builder::new(),
            Int64Builder::new(),
        );
        for (k, v) in page {
            let Some(entry) = keys::parse_limit_entry(k) else { continue };
            b.0.append_value(&s.shard_id);
            b.1.append_value(&entry.tenant);
            b.2.append_value(&entry.key);
            match entry.waiter_order {
                None => {
                    b.3.append_value("holder");
                    b.4.append_value(&entry.task_id);
                    b.5.append_null();
                    b.6.append_null();
                    // Holders written before grant times were kept hold a 1-byte marker.
                    b.7.append_value(crate::storage::codec::decode::<i64>(v).unwrap_or(0));
                }
                Some((priority, start_ms, _)) => {
                    let rec: WaiterRecord = decode_or_die("waiter", v);
                    b.3.append_value("requester");
                    b.4.append_value(&rec.task_id);
                    b.5.append_value(&rec.job.id);
                    b.6.append_value(priority.min(255) as u8);
                    b.7.append_value(start_ms);
                }
            }
        }
        vec![
            Arc::new(b.0.finish()),
            Arc::new(b.1.finish()),
            Arc::new(b.2.finish()),
            Arc::new(b.3.finish()),
            Arc::new(b.4.finish()),
            Arc::new(b.5.finish()),
            Arc::new(b.6.finish()),
            Arc::new(b.7.finish()),
        ]
    };
    KeyTable {
        name: "queues",
        source,
        schema,
        tags: vec![keys::HOLDER, keys::WAITER],
        tenant_keyed: true,
        rows: Arc::new(rows),
    }
}

/// The `tenant_counts` table: sparse per-(tenant, status) job counts kept by
/// the state machine (`N`); `status_kind` uses the stored statuses (Waiting
/// jobs count as Scheduled).
pub fn tenant_counts_table<K: Kv + Send + Sync + 'static>(source: Source<K>) -> KeyTable<K> {
    let schema = Arc::new(Schema::new(vec![
        utf8("shard_id", false),
        utf8("tenant", false),
        utf8("status_kind", false),
        Field::new("cnt", DataType::Int64, false),
    ]));
    let rows = |s: &Source<K>, page: &[(Vec<u8>, Vec<u8>)]| -> Vec<ArrayRef> {
        let parsed: Vec<(String, JobStatus, i64)> = page
            .iter()
            .filter_map(|(k, v)| keys::parse_tenant_count(k).map(|(t, st)| (t, st, decode_or_die::<i64>("count", v))))
            .collect();
        vec![
            strings(parsed.iter().map(|_| s.shard_id.as_str())),
            strings(parsed.iter().map(|(t, _, _)| t.as_str())),
            strings(parsed.iter().map(|(_, st, _)| st.name())),
            Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(parsed.iter().map(|(_, _, n)| *n))),
        ]
    };
    KeyTable {
        name: "tenant_counts",
        source,
        schema,
        tags: vec![keys::TENANT_COUNT],
        tenant_keyed: true,
        rows: Arc::new(rows),
    }
}

/// The `queue_counts` table: holders and requesters per concurrency queue
/// (`C`; a queue with neither has no row).
pub fn queue_counts_table<K: Kv + Send + Sync + 'static>(source: Source<K>) -> KeyTable<K> {
    let schema = Arc::new(Schema::new(vec![
        utf8("shard_id", false),
        utf8("tenant", false),
        utf8("queue_name", false),
        Field::new("holders", DataType::Int64, false),
        Field::new("requesters", DataType::Int64, false),
    ]));
    let rows = |s: &Source<K>, page: &[(Vec<u8>, Vec<u8>)]| -> Vec<ArrayRef> {
        let parsed: Vec<(String, String, QueueState)> = page
            .iter()
            .filter_map(|(k, v)| {
                keys::parse_queue_key(k).map(|(_, t, _, key)| (t, key, decode_or_die::<QueueState>("queue", v)))
            })
            .collect();
        vec![
            strings(parsed.iter().map(|_| s.shard_id.as_str())),
            strings(parsed.iter().map(|(t, _, _)| t.as_str())),
            strings(parsed.iter().map(|(_, q, _)| q.as_str())),
            Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(
                parsed.iter().map(|(_, _, st)| i64::from(st.holders)),
            )),
            Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(
                parsed.iter().map(|(_, _, st)| i64::from(st.waiters)),
            )),
        ]
    };
    KeyTable { name: "queue_counts", source, schema, tags: vec![keys::QUEUE], tenant_keyed: true, rows: Arc::new(rows) }
}
