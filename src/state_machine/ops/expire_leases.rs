//! ExpireLeases: the leader's reaper ends leases whose deadline passed
//! (SEMANTICS §6.4, DECISIONS #8).
//!
//! For each lease still present: if its job has a cancellation record the
//! attempt ends exactly like a reported `cancelled`; otherwise like a reported
//! failure with code `WORKER_CRASHED` and a MessagePack string describing the
//! expiry, so the retry policy applies. Leases already gone (reported in the
//! meantime) are skipped: the report won the race. An expired refresh lease
//! only clears the floating limit's refresh flag (no backoff).
use crate::storage::kv::Kv;

use super::super::command::{ExpiredLease, Outcome};
use super::super::job::LeaseKind;
use super::super::outcome::{ApplyResult, Output};
use super::super::tx::{Tables, Tx};
use super::report_outcome::finish_attempt;

pub const WORKER_CRASHED: &str = "WORKER_CRASHED";

pub fn apply<K: Kv>(tx: &mut Tx<'_, K>, leases: &[ExpiredLease]) -> ApplyResult {
    for expired in leases {
        let Some(lease) = tx.lease(&expired.task_id) else { continue };
        if let LeaseKind::Refresh { key } = &lease.kind {
            tx.delete_lease(&lease.task_id);
            if let Some(mut st) = tx.floating_state(lease.job.shard, &lease.job.tenant, key) {
                if st.refresh_task.as_deref() == Some(lease.task_id.as_str()) {
                    st.refresh_task = None;
                    tx.put_floating_state(lease.job.shard, &lease.job.tenant, key, &st);
                }
            }
            continue;
        }
        let cancelled = tx.job(&lease.job).is_some_and(|j| j.cancelled_at_ms.is_some());
        let outcome = if cancelled {
            Outcome::Cancelled
        } else {
            let message =
                format!("lease expired at {} (now {}), worker={}", expired.deadline_ms, tx.now_ms, lease.worker_id);
            Outcome::Failure { code: WORKER_CRASHED.into(), data: msgpack_str(&message) }
        };
        // A vanished job only means there is nothing left to move.
        let _ = finish_attempt(tx, &lease, &outcome);
    }
    Ok(Output::Done)
}

/// MessagePack encoding of a UTF-8 string (fixstr / str8 / str16 / str32).
pub fn msgpack_str(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let len = bytes.len();
    let mut out = Vec::with_capacity(len + 5);
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len <= u8::MAX as usize {
        out.extend_from_slice(&[0xd9, len as u8]);
    } else if len <= u16::MAX as usize {
        out.push(0xda);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::msgpack_str;

    #[test]
    fn msgpack_string_headers() {
        assert_eq!(msgpack_str("ab"), vec![0xa2, b'a', b'b']);
        assert_eq!(&msgpack_str(&"x".repeat(40))[..2], &[0xd9, 40]);
        assert_eq!(&msgpack_str(&"x".repeat(300))[..3], &[0xda, 0x01, 0x2c]);
    }
}
