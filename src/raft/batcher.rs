//! Group commit at the proposal layer: every proposal that arrives while
//! earlier ones are in flight joins one `Op::Batch` log entry, so one append,
//! one fsync, one replication round and one apply pass serve many requests.
//! Each op in a batch is applied exactly as if it had its own entry, in order,
//! and gets its own result. Under no load a proposal goes alone at once.
//!
//! No batch waits for ever. openraft answers a proposal when its entry is
//! applied, or with ForwardToLeader when the entry is truncated as a
//! conflict; but an entry of a deposed leader that is replaced by a snapshot
//! install is never answered at all. With a bounded number of batches in
//! flight, one such wait would stall every later proposal on this node, even
//! after it leads again. So each batch waits only while this node still leads
//! in the term it proposed in and still hears from a quorum (check-quorum,
//! see `QuorumContact`), and at most `proposal_timeout`; then its callers
//! get [`ProposeError::Unknown`] (the entry may still commit) and the slot is
//! freed.
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::types::{NodeId, Raft};
use super::QuorumContact;

/// The leader's quorum contact and how old a last ack may be.
type Quorum = (Arc<QuorumContact>, Duration);
use super::ProposeError;
use crate::state_machine::{ApplyResult, Command, Op, Output};

type Reply = oneshot::Sender<Result<ApplyResult, ProposeError>>;

/// How often a waiting batch checks its leader's quorum contact.
const QUORUM_POLL: Duration = Duration::from_millis(100);

/// Most ops in one log entry.
pub const BATCH_OPS_MAX: usize = 512;
/// Most payload bytes in one log entry (a single larger op still goes alone).
pub const BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<(Op, Reply)>,
}

fn op_bytes(op: &Op) -> usize {
    match op {
        Op::Enqueue(new) => new.payload.len() + 256,
        Op::ReportOutcome { outcome: crate::state_machine::Outcome::Success { result }, .. } => result.len() + 128,
        Op::ReportOutcome { outcome: crate::state_machine::Outcome::Failure { data, .. }, .. } => data.len() + 128,
        _ => 128,
    }
}

impl Batcher {
    /// `in_flight`: batches proposed but not yet applied, at most. One is best
    /// on a low-latency network (each batch grows while the previous commits);
    /// more can help when a replication round trip is long.
    pub(super) fn start(
        raft: Raft,
        id: NodeId,
        in_flight: usize,
        proposal_timeout: Duration,
        quorum: Quorum,
    ) -> Batcher {
        let in_flight = in_flight.max(1);
        let (tx, mut rx) = mpsc::channel::<(Op, Reply)>(BATCH_OPS_MAX * in_flight * 4);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(in_flight));
            let mut carry: Option<(Op, Reply)> = None;
            loop {
                let first = match carry.take() {
                    Some(x) => x,
                    None => match rx.recv().await {
                        Some(x) => x,
                        None => return,
                    },
                };
                // Waiting for a free slot first lets proposals pile up into the batch.
                let Ok(permit) = slots.clone().acquire_owned().await else { return };
                let mut bytes = op_bytes(&first.0);
                let mut batch = vec![first];
                while batch.len() < BATCH_OPS_MAX {
                    match rx.try_recv() {
                        Ok(next) => {
                            bytes += op_bytes(&next.0);
                            if bytes > BATCH_BYTES_MAX {
                                carry = Some(next);
                                break;
                            }
                            batch.push(next);
                        }
                        Err(_) => break,
                    }
                }
                let raft = raft.clone();
                let quorum = quorum.clone();
                tokio::spawn(async move {
                    write(&raft, id, proposal_timeout, &quorum, batch).await;
                    drop(permit);
                });
            }
        });
        Batcher { tx }
    }

    pub async fn propose(&self, op: Op) -> Result<ApplyResult, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send((op, reply)).await.map_err(|_| ProposeError::Fatal("proposal queue closed".into()))?;
        rx.await.map_err(|_| ProposeError::Fatal("proposal dropped".into()))?
    }
}

/// The term in which this node leads now, if it does.
fn leading_term(raft: &Raft, id: NodeId) -> Option<u64> {
    let m = raft.metrics();
    let m = m.borrow();
    (m.state == ServerState::Leader && m.current_leader == Some(id)).then_some(m.current_term)
}

/// Proposes `command` and waits for its applied result while this node leads
/// in the term it proposed in and hears from a quorum, for at most `timeout`.
async fn commit(
    raft: &Raft,
    id: NodeId,
    timeout: Duration,
    quorum: &Quorum,
    command: Command,
) -> Result<ApplyResult, ProposeError> {
    let Some(term) = leading_term(raft, id) else {
        // Not leading: openraft answers at once with ForwardToLeader, unless
        // this node won an election meanwhile; bounded either way.
        return match tokio::time::timeout(timeout, raft.client_write(command)).await {
            Ok(r) => super::write_result(r),
            Err(_) => Err(ProposeError::Unknown(format!("not committed within {} ms", timeout.as_millis()))),
        };
    };
    let mut watch = raft.metrics();
    let (contact, max_age) = (quorum.0.clone(), quorum.1);
    let deposed = async move {
        let stepped_down = watch
            .wait_for(|m| !(m.state == ServerState::Leader && m.current_leader == Some(id) && m.current_term == term));
        let cut_off = async {
            while !contact.lost(term, max_age) {
                tokio::time::sleep(QUORUM_POLL).await;
            }
        };
        tokio::select! {
            _ = stepped_down => {}
            _ = cut_off => {}
        }
    };
    tokio::select! {
        r = raft.client_write(command) => super::write_result(r),
        _ = deposed => {
            metrics::counter!("silo_proposals_abandoned_total", "why" => "deposed").increment(1);
            Err(ProposeError::Unknown(format!(
                "this node stopped leading term {term}, or lost contact with its quorum, before the proposal committed"
            )))
        }
        _ = tokio::time::sleep(timeout) => {
            metrics::counter!("silo_proposals_abandoned_total", "why" => "timeout").increment(1);
            Err(ProposeError::Unknown(format!("not committed within {} ms", timeout.as_millis())))
        }
    }
}

async fn write(raft: &Raft, id: NodeId, timeout: Duration, quorum: &Quorum, mut batch: Vec<(Op, Reply)>) {
    metrics::histogram!("silo_batch_ops").record(batch.len() as f64);
    let now_ms = crate::wall_clock_ms();
    if batch.len() == 1 {
        let (op, reply) = batch.pop().expect("one");
        let _ = reply.send(commit(raft, id, timeout, quorum, Command { now_ms, op }).await);
        return;
    }
    let (ops, replies): (Vec<Op>, Vec<Reply>) = batch.into_iter().unzip();
    match commit(raft, id, timeout, quorum, Command { now_ms, op: Op::Batch(ops) }).await {
        Ok(Ok(Output::Batch(results))) if results.len() == replies.len() => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Ok(other) => {
            let e = ProposeError::Other(format!("unexpected batch result: {other:?}"));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
