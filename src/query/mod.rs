//! SQL over the job state (Silo's `Query` / `QueryArrow`, issue #12), with
//! Apache DataFusion as the engine: this module owns the statement's life —
//! admission (a bounded number in flight), read-only planning, positional bind
//! parameters, a memory pool shared by all statements (no spilling to disk),
//! a statement timeout and a cap on the result size. `tables.rs` maps our
//! records to Silo's tables; `pushdown.rs` picks the index a `jobs` scan
//! reads; `encode.rs` turns results into MessagePack rows or Arrow IPC.
//!
//! The engine reads whatever [`Kv`] it is given; the gRPC edge hands it a
//! RocksDB snapshot taken after the read barrier (linearizable by default),
//! so a statement sees one consistent state.
pub mod encode;
pub mod pushdown;
pub mod tables;

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::{DataFusionError, ParamValues, ScalarValue};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::storage::kv::Kv;
use tables::Source;

/// `[query]` settings. Defaults follow SEMANTICS §15 (8 statements, 5 s,
/// 64 MiB) plus a memory pool for sorts, joins and aggregations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Statements running at once on this node; more are refused
    /// (RESOURCE_EXHAUSTED).
    pub max_concurrent: usize,
    /// Wall-clock limit of one statement, ms (DEADLINE_EXCEEDED).
    pub statement_timeout_ms: u64,
    /// Largest result one statement may return, bytes of Arrow data
    /// (RESOURCE_EXHAUSTED).
    pub max_result_bytes: usize,
    /// Memory all running statements may hold in operators (sorts, hash
    /// tables), MiB; a statement that needs more fails (RESOURCE_EXHAUSTED).
    pub memory_mb: usize,
    /// Threads of the runtime statements execute on: a runtime of their own,
    /// so a CPU-heavy statement never delays Raft heartbeats or the broker.
    pub threads: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            max_concurrent: 8,
            statement_timeout_ms: 5_000,
            max_result_bytes: 64 << 20,
            memory_mb: 256,
            threads: 2,
        }
    }
}

impl QueryConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrent == 0 {
            return Err("query.max_concurrent must be at least 1".into());
        }
        if self.statement_timeout_ms == 0 {
            return Err("query.statement_timeout_ms must be at least 1".into());
        }
        if !(1..=64).contains(&self.threads) {
            return Err(format!("query.threads must be between 1 and 64, got {}", self.threads));
        }
        if self.max_result_bytes == 0 || self.memory_mb == 0 {
            return Err("query.max_result_bytes and query.memory_mb must be positive".into());
        }
        Ok(())
    }
}

/// Why a statement produced no result. The gRPC edge maps each to a status
/// (`grpc::status::query`).
#[derive(Debug, Clone, PartialEq)]
pub enum QueryError {
    /// Parse, plan or execution error in the SQL (INVALID_ARGUMENT, `SQL error: …`).
    Sql(String),
    /// Bind parameters do not fit the statement (INVALID_ARGUMENT, `SQL parameter error: …`).
    Parameter(String),
    /// Too many statements in flight (RESOURCE_EXHAUSTED).
    Busy { limit: usize },
    /// The result exceeds `max_result_bytes` (RESOURCE_EXHAUSTED).
    TooLarge { limit: usize },
    /// The statement needed more operator memory than the pool has (RESOURCE_EXHAUSTED).
    Memory(String),
    /// The statement ran longer than `statement_timeout_ms` (DEADLINE_EXCEEDED).
    Timeout { ms: u64 },
    /// The engine failed (a panic in an operator): INTERNAL; the node goes on.
    Internal(String),
}

/// How a statement's result is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One MessagePack map per row (`Query`).
    Rows,
    /// One self-contained Arrow IPC stream per batch (`QueryArrow`).
    ArrowIpc,
}

/// A finished statement, already encoded (encoding happens inside the
/// statement: under its timeout, its slot and the result cap).
pub struct QueryOutput {
    /// (name, Arrow type as text) per column.
    pub columns: Vec<(String, String)>,
    /// MessagePack rows or IPC messages, per the requested [`Format`].
    pub parts: Vec<Vec<u8>>,
    pub row_count: usize,
}

/// Name of the query runtime's threads (worker and blocking).
const QUERY_THREAD: &str = "silo-query";

/// True on a thread of the query runtime, where a panic fails one statement
/// (the process-wide panic hook stops the node anywhere else).
pub fn on_query_thread() -> bool {
    std::thread::current().name() == Some(QUERY_THREAD)
}

/// Runs SQL statements under this node's limits. One per node.
pub struct QueryEngine {
    config: QueryConfig,
    /// One per statement in flight. A statement keeps its permit until its
    /// task has really ended: a timed-out statement is aborted, but CPU-bound
    /// operators (a cross join) only stop at their next yield point, and until
    /// then they still count against `max_concurrent`.
    permits: Arc<tokio::sync::Semaphore>,
    /// DataFusion's memory pool and (disabled) spill directory, shared.
    env: Arc<RuntimeEnv>,
    /// The threads statements run on (`query.threads`).
    threads: Option<tokio::runtime::Runtime>,
}

impl Drop for QueryEngine {
    fn drop(&mut self) {
        // Dropping a runtime from async code would panic; let it wind down.
        if let Some(rt) = self.threads.take() {
            rt.shutdown_background();
        }
    }
}

impl QueryEngine {
    pub fn new(config: QueryConfig) -> Self {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(config.memory_mb << 20));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .build_arc()
            .expect("a runtime without disk spilling always builds");
        let threads = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .max_blocking_threads(config.max_concurrent.max(2))
            .thread_name(QUERY_THREAD)
            .enable_all()
            .build()
            .expect("the query runtime starts");
        QueryEngine {
            permits: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent)),
            config,
            env: runtime,
            threads: Some(threads),
        }
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// Runs one read-only statement over `source` with positional parameters
    /// (`$1` is `params[0]`).
    pub async fn run<K: Kv + Send + Sync + 'static>(
        &self,
        source: Source<K>,
        sql: &str,
        params: Vec<ScalarValue>,
        format: Format,
    ) -> Result<QueryOutput, QueryError> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| QueryError::Busy { limit: self.config.max_concurrent })?;
        let ms = self.config.statement_timeout_ms;
        let threads = self.threads.as_ref().expect("the runtime lives as long as the engine");
        let statement =
            execute(self.env.clone(), self.config.max_result_bytes, source, sql.to_string(), params, format);
        let task = threads.spawn(async move {
            let result = statement.await;
            drop(permit);
            result
        });
        let abort = task.abort_handle();
        match tokio::time::timeout(Duration::from_millis(ms), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(QueryError::Internal(format!("the statement failed: {join}"))),
            Err(_) => {
                abort.abort();
                Err(QueryError::Timeout { ms })
            }
        }
    }
}

/// Plans and runs one statement to completion on the query runtime.
async fn execute<K: Kv + Send + Sync + 'static>(
    env: Arc<RuntimeEnv>,
    max_result_bytes: usize,
    source: Source<K>,
    sql: String,
    params: Vec<ScalarValue>,
    format: Format,
) -> Result<QueryOutput, QueryError> {
    let ctx = session(env, source).map_err(sql_error)?;
    let read_only = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let mut df = ctx.sql_with_options(&sql, read_only).await.map_err(sql_error)?;
    if !params.is_empty() {
        df = df
            .with_param_values(ParamValues::List(params.into_iter().map(Into::into).collect()))
            .map_err(|e| QueryError::Parameter(clean(&e)))?;
    }
    let mut stream = df.execute_stream().await.map_err(sql_error)?;
    let schema = stream.schema();
    let too_large = QueryError::TooLarge { limit: max_result_bytes };
    let mut budget = max_result_bytes;
    let mut out = QueryOutput { columns: encode::columns(&schema), parts: Vec::new(), row_count: 0 };
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(sql_error)?;
        out.row_count += batch.num_rows();
        match format {
            Format::Rows => {
                encode::msgpack_rows(&schema, &batch, &mut budget, &mut out.parts).map_err(|_| too_large.clone())?
            }
            Format::ArrowIpc => {
                // The in-memory size bounds what encoding may allocate.
                if batch.get_array_memory_size() > budget.saturating_mul(2) {
                    return Err(too_large);
                }
                let ipc = encode::ipc_stream(&schema, Some(&batch)).map_err(|e| QueryError::Internal(e.to_string()))?;
                budget = budget.checked_sub(ipc.len()).ok_or_else(|| too_large.clone())?;
                out.parts.push(ipc);
            }
        }
    }
    if format == Format::ArrowIpc && out.parts.is_empty() {
        // A schema-only stream, so a client still learns the columns.
        out.parts.push(encode::ipc_stream(&schema, None).map_err(|e| QueryError::Internal(e.to_string()))?);
    }
    Ok(out)
}

/// A session with our tables registered over `source`.
fn session<K: Kv + Send + Sync + 'static>(
    env: Arc<RuntimeEnv>,
    source: Source<K>,
) -> datafusion::common::Result<SessionContext> {
    let config = SessionConfig::new()
        .with_target_partitions(2)
        .with_batch_size(tables::BATCH_ROWS)
        .with_information_schema(false);
    let ctx = SessionContext::new_with_config_rt(config, env);
    ctx.register_table("jobs", Arc::new(tables::JobsTable::new(source.clone())))?;
    ctx.register_table("tasks", Arc::new(tables::tasks_table(source.clone())))?;
    ctx.register_table("queues", Arc::new(tables::queues_table(source.clone())))?;
    ctx.register_table("tenant_counts", Arc::new(tables::tenant_counts_table(source.clone())))?;
    ctx.register_table("queue_counts", Arc::new(tables::queue_counts_table(source)))?;
    Ok(ctx)
}

fn sql_error(e: DataFusionError) -> QueryError {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(m) => QueryError::Memory(m.clone()),
        // `$n` without a value bound to it is a parameter problem.
        _ if clean(&e).contains("Placeholder") => QueryError::Parameter(clean(&e)),
        _ => QueryError::Sql(clean(&e)),
    }
}

/// DataFusion's message without its internal backtrace noise.
fn clean(e: &DataFusionError) -> String {
    e.to_string().trim().to_string()
}

#[cfg(test)]
mod tests;
