//! Connections from this node to other nodes' Admin service (read index,
//! leadership transfer) and public API (the console's forwarded writes),
//! cached per address and carrying the cluster token (and, with `[tls]`, the
//! node's certificate: the cache is rebuilt after a certificate reload).
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tonic::transport::Channel;

use crate::pb::raft::admin_client::AdminClient;
use crate::tls::NodeTls;

pub struct Peers {
    /// Channels by address, and the TLS generation they were built with.
    channels: Mutex<(u64, HashMap<String, Channel>)>,
    token: Option<String>,
    tls: Option<Arc<NodeTls>>,
}

impl Peers {
    pub fn new(token: Option<String>, tls: Option<Arc<NodeTls>>) -> Self {
        Peers { channels: Mutex::new((0, HashMap::new())), token, tls }
    }

    fn channel(&self, addr: &str) -> Result<Channel, tonic::Status> {
        let mut guard = self.channels.lock();
        let generation = self.tls.as_ref().map_or(0, |t| t.generation());
        if guard.0 != generation {
            *guard = (generation, HashMap::new());
        }
        let channels = &mut guard.1;
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = crate::tls::endpoint(addr, self.tls.as_deref())
            .map_err(|e| tonic::Status::internal(format!("bad peer address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    pub fn admin(&self, addr: &str) -> Result<AdminClient<Channel>, tonic::Status> {
        Ok(AdminClient::new(self.channel(addr)?))
    }

    /// The public API of another node (the console forwards a follower's
    /// writes to the leader through it).
    pub fn silo(&self, addr: &str) -> Result<crate::pb::silo::silo_client::SiloClient<Channel>, tonic::Status> {
        Ok(crate::pb::silo::silo_client::SiloClient::new(self.channel(addr)?))
    }

    /// Wraps `msg` with the cluster token when one is configured.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            if let Ok(v) = format!("Bearer {t}").parse() {
                r.metadata_mut().insert("authorization", v);
            }
        }
        r
    }
}
