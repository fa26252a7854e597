//! The console's writes: cancel, restart, expedite and delete a job. Each is
//! the `silo.v1.Silo` method of the same name, called in process (the same
//! validation, tenancy rule and Raft proposal as a client's call). A follower
//! answers a write with the leader's address (SEMANTICS §2.3); the console
//! then sends the same request to the leader over gRPC, with the cluster
//! token, and the page says it did. The outcome comes back to the job page
//! as a notice or as the API's error, word for word.
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tonic::Status;

use super::pages::{encode, find_job, job_link, status_text};
use super::{Console, Shared};
use crate::grpc::status::{OWNER_ADDR_HEADER, OWNER_NODE_HEADER};
use crate::pb::silo as pb;
use crate::pb::silo::silo_server::Silo;

#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    tenant: String,
}

#[derive(Clone, Copy)]
enum Action {
    Cancel,
    Restart,
    Expedite,
    Delete,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "cancel" => Action::Cancel,
            "restart" => Action::Restart,
            "expedite" => Action::Expedite,
            "delete" => Action::Delete,
            _ => return None,
        })
    }

    fn done(self) -> &'static str {
        match self {
            Action::Cancel => "Cancelled",
            Action::Restart => "Restarted",
            Action::Expedite => "Expedited",
            Action::Delete => "Deleted",
        }
    }
}

/// The request every action sends (the four messages share their fields).
struct Target {
    shard: String,
    id: String,
    tenant: Option<String>,
}

/// Calls the action on this node's service.
async fn local(console: &Console, action: Action, t: &Target) -> Result<(), Status> {
    let (shard, id, tenant) = (t.shard.clone(), t.id.clone(), t.tenant.clone());
    let silo = &console.silo;
    match action {
        Action::Cancel => {
            silo.cancel_job(tonic::Request::new(pb::CancelJobRequest { shard, id, tenant })).await.map(drop)
        }
        Action::Restart => {
            silo.restart_job(tonic::Request::new(pb::RestartJobRequest { shard, id, tenant })).await.map(drop)
        }
        Action::Expedite => {
            silo.expedite_job(tonic::Request::new(pb::ExpediteJobRequest { shard, id, tenant })).await.map(drop)
        }
        Action::Delete => {
            silo.delete_job(tonic::Request::new(pb::DeleteJobRequest { shard, id, tenant })).await.map(drop)
        }
    }
}

/// Sends the action to the leader at `addr`.
async fn forward(console: &Console, addr: &str, action: Action, t: &Target) -> Result<(), Status> {
    let mut client = console.peers.silo(addr)?;
    let (shard, id, tenant) = (t.shard.clone(), t.id.clone(), t.tenant.clone());
    let peers = &console.peers;
    match action {
        Action::Cancel => client.cancel_job(peers.request(pb::CancelJobRequest { shard, id, tenant })).await.map(drop),
        Action::Restart => {
            client.restart_job(peers.request(pb::RestartJobRequest { shard, id, tenant })).await.map(drop)
        }
        Action::Expedite => {
            client.expedite_job(peers.request(pb::ExpediteJobRequest { shard, id, tenant })).await.map(drop)
        }
        Action::Delete => client.delete_job(peers.request(pb::DeleteJobRequest { shard, id, tenant })).await.map(drop),
    }
}

/// The leader a follower's refusal names, as (node id, address).
fn named_leader(s: &Status) -> Option<(String, String)> {
    let addr = s.metadata().get(OWNER_ADDR_HEADER)?.to_str().ok()?.to_string();
    let node = s.metadata().get(OWNER_NODE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("?").to_string();
    Some((node, addr))
}

pub async fn job_action(
    State(console): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    form: axum::Form<ActionForm>,
) -> Response {
    let back = job_link(&id, &form.tenant);
    let sep = if back.contains('?') { '&' } else { '?' };
    let Some(action) = Action::parse(&action) else {
        let msg = format!("unknown action {action:?}: use cancel, restart, expedite or delete");
        return Redirect::to(&format!("{back}{sep}error={}", encode(&msg))).into_response();
    };
    // The shard the job lives on (GetJob answers on any node).
    let shard = match find_job(&console, &id, &form.tenant).await {
        Ok((_, shard)) => shard,
        Err(e) => return Redirect::to(&format!("{back}{sep}error={}", encode(&status_text(&e)))).into_response(),
    };
    let target = Target { shard, id: id.clone(), tenant: Some(form.tenant.clone()).filter(|t| !t.is_empty()) };
    let mut via = String::new();
    let mut result = local(&console, action, &target).await;
    if let Err(e) = &result {
        if let Some((node, addr)) = named_leader(e) {
            via = format!(" (this node is a follower: sent to the leader, node {node} at {addr})");
            result = forward(&console, &addr, action, &target).await;
        }
    }
    match (result, action) {
        (Ok(()), Action::Delete) => {
            let notice = format!("{} job {id}{via}", action.done());
            Redirect::to(&format!("/jobs?notice={}", encode(&notice))).into_response()
        }
        (Ok(()), _) => {
            let notice = format!("{}{via}", action.done());
            Redirect::to(&format!("{back}{sep}notice={}", encode(&notice))).into_response()
        }
        (Err(e), _) => {
            let error = format!("{}{via}", status_text(&e));
            Redirect::to(&format!("{back}{sep}error={}", encode(&error))).into_response()
        }
    }
}
