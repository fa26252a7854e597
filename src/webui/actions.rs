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

use super::pages::{find_job, job_shards, link_tenant, status_text};
use super::{links, Console, Shared};
use crate::grpc::status::{OWNER_ADDR_HEADER, OWNER_NODE_HEADER};
use crate::pb::silo as pb;
use crate::pb::silo::silo_server::Silo;

/// The job an action names (the form's hidden fields).
#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    id: String,
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

/// Calls `action` on `$service` (this node's service or a gRPC client of the
/// leader), wrapping each request with `$wrap`.
macro_rules! call {
    ($service:expr, $wrap:expr, $action:expr, $t:expr) => {{
        let (shard, id, tenant) = ($t.shard.clone(), $t.id.clone(), $t.tenant.clone());
        match $action {
            Action::Cancel => $service.cancel_job($wrap(pb::CancelJobRequest { shard, id, tenant })).await.map(drop),
            Action::Restart => $service.restart_job($wrap(pb::RestartJobRequest { shard, id, tenant })).await.map(drop),
            Action::Expedite => {
                $service.expedite_job($wrap(pb::ExpediteJobRequest { shard, id, tenant })).await.map(drop)
            }
            Action::Delete => $service.delete_job($wrap(pb::DeleteJobRequest { shard, id, tenant })).await.map(drop),
        }
    }};
}

/// Calls the action on this node's service.
async fn local(console: &Console, action: Action, t: &Target) -> Result<(), Status> {
    call!(console.silo, tonic::Request::new, action, t)
}

/// Sends the action to the leader at `addr`, with the cluster token.
async fn forward(console: &Console, addr: &str, action: Action, t: &Target) -> Result<(), Status> {
    let mut client = console.peers.silo(addr)?;
    call!(client, |m| console.peers.request(m), action, t)
}

/// The leader a follower's refusal names, as (node id, address).
fn named_leader(s: &Status) -> Option<(String, String)> {
    let addr = s.metadata().get(OWNER_ADDR_HEADER)?.to_str().ok()?.to_string();
    let node = s.metadata().get(OWNER_NODE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("?").to_string();
    Some((node, addr))
}

/// `POST /job/<action>` with the job's id and tenant: runs the action and
/// returns to the job's page (or, after a delete, the search) with the
/// outcome.
pub async fn job_action(
    State(console): State<Shared>,
    Path(action): Path<String>,
    form: axum::Form<ActionForm>,
) -> Response {
    let id = form.id.clone();
    let back = links::job(&id, link_tenant(&console, &form.tenant).filter(|t| !t.is_empty()));
    let Some(action) = Action::parse(&action) else {
        let msg = format!("unknown action {action:?}: use cancel, restart, expedite or delete");
        return Redirect::to(&links::with_param(&back, "error", &msg)).into_response();
    };
    // The shard the job lives on: the only candidate, or the one whose
    // GetJob finds it (the action itself checks the job again).
    let shard = match job_shards(&console, &form.tenant).as_slice() {
        [only] => only.clone(),
        _ => match find_job(&console, &id, &form.tenant).await {
            Ok((_, shard)) => shard,
            Err(e) => return Redirect::to(&links::with_param(&back, "error", &status_text(&e))).into_response(),
        },
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
    let to = match (result, action) {
        (Ok(()), Action::Delete) => links::with_param("/jobs", "notice", &format!("{} job {id}{via}", action.done())),
        (Ok(()), _) => links::with_param(&back, "notice", &format!("{}{via}", action.done())),
        (Err(e), _) => links::with_param(&back, "error", &format!("{}{via}", status_text(&e))),
    };
    Redirect::to(&to).into_response()
}
