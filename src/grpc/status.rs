//! The one place that turns errors into gRPC statuses (SEMANTICS §12,
//! DECISIONS #1–#3, #17). Messages are part of the contract: the client matches
//! `shard not found`, `lease not found` and `lease owner mismatch`.
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::raft::{NodeId, NodeInfo, ProposeError};
use crate::state_machine::read::HeartbeatError;
use crate::state_machine::Rejection;

pub const OWNER_ADDR_HEADER: &str = "x-silo-shard-owner-addr";
pub const OWNER_NODE_HEADER: &str = "x-silo-shard-owner-node";

pub fn rejection(r: &Rejection) -> Status {
    let message = r.to_string();
    let code = match r {
        Rejection::JobNotFound | Rejection::LeaseNotFound => Code::NotFound,
        Rejection::JobAlreadyExists { .. } => Code::AlreadyExists,
        Rejection::Unstorable { .. } | Rejection::InvalidImport { .. } => Code::InvalidArgument,
        Rejection::AlreadyCancelled
        | Rejection::AlreadyTerminal
        | Rejection::CannotRestart { .. }
        | Rejection::CannotExpedite { .. }
        | Rejection::CannotLease { .. }
        | Rejection::CannotReimport { .. } => Code::FailedPrecondition,
        Rejection::DeleteInProgress { .. } | Rejection::ShardsAlreadyInitialised | Rejection::NestedBatch => {
            Code::Internal
        }
    };
    Status::new(code, message)
}

pub fn heartbeat(e: HeartbeatError) -> Status {
    match e {
        HeartbeatError::LeaseNotFound => Status::not_found("lease not found"),
        HeartbeatError::OwnerMismatch => Status::failed_precondition("lease owner mismatch"),
    }
}

pub fn propose(e: ProposeError) -> Status {
    match e {
        ProposeError::NotLeader { leader } => not_leader(leader),
        ProposeError::Fatal(m) => Status::unavailable(format!("node is not serving: {m}")),
        ProposeError::Unknown(m) => Status::unavailable(format!(
            "outcome unknown: {m}; it may still take effect. Retry: an enqueue with a caller-chosen id \
                 then answers ALREADY_EXISTS if the first try landed, a report `lease not found`"
        )),
        ProposeError::Other(m) => Status::internal(m),
    }
}

/// A shard-scoped call reached a node that does not lead: redirect to the
/// leader when known, else ask the client to back off.
pub fn not_leader(leader: Option<(NodeId, NodeInfo)>) -> Status {
    match leader {
        Some((id, info)) => shard_not_found(Some((id, &info.grpc_addr))),
        None => Status::unavailable("no leader is known for this shard (election in progress); retry shortly"),
    }
}

pub fn shard_not_found(owner: Option<(NodeId, &str)>) -> Status {
    let mut status = Status::not_found("shard not found");
    if let Some((id, addr)) = owner {
        let md = status.metadata_mut();
        if let Ok(v) = MetadataValue::try_from(addr) {
            md.insert(OWNER_ADDR_HEADER, v);
        }
        if let Ok(v) = MetadataValue::try_from(id.to_string()) {
            md.insert(OWNER_NODE_HEADER, v);
        }
    }
    status
}

/// SEMANTICS §14 rows for Query/QueryArrow.
pub fn query(e: &crate::query::QueryError) -> Status {
    use crate::query::QueryError as E;
    match e {
        E::Sql(m) => Status::invalid_argument(format!("SQL error: {m}")),
        E::Parameter(m) => Status::invalid_argument(format!("SQL parameter error: {m}")),
        E::Busy { limit } => Status::resource_exhausted(format!(
            "too many SQL statements in flight on this node (query.max_concurrent = {limit}); retry later"
        )),
        E::TooLarge { limit } => Status::resource_exhausted(format!(
            "query result exceeds {limit} bytes (query.max_result_bytes); add a LIMIT or select fewer columns"
        )),
        E::Memory(m) => Status::resource_exhausted(format!("query needs more memory than query.memory_mb allows: {m}")),
        E::Internal(m) => Status::internal(m.clone()),
        E::Timeout { ms } => {
            Status::deadline_exceeded(format!("query ran longer than {ms} ms (query.statement_timeout_ms)"))
        }
    }
}

pub fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message.into())
}

pub fn unimplemented(rpc: &str, why: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not supported by this server: {why}"))
}

/// The gRPC method name for a snake_case RPC name (`get_job_result` →
/// `GetJobResult`), the `method` label of Silo's gRPC metrics.
pub fn method_name(rpc: &str) -> String {
    rpc.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// The canonical name of a status code (`OK`, `NOT_FOUND`, ...), the
/// `status` label of Silo's gRPC metrics.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
