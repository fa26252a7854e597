//! The ordered key-value interface the state machine is written against.
//!
//! The state machine never sees RocksDB: it reads and writes through [`Kv`], so
//! the same code runs over [`MemKv`] in property tests and over the RocksDB
//! overlay in production. Implementations must return scans in key order; a
//! storage failure inside an implementation panics (the node stops rather than
//! diverging from its replicas).
use std::collections::BTreeMap;

pub trait Kv {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn delete(&mut self, key: &[u8]);
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)>;
    /// The first `n` entries whose key starts with `prefix`, in key order.
    fn scan_prefix_n(&self, prefix: &[u8], n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.scan_from_n(prefix, prefix, n)
    }
    /// The first `n` entries whose key starts with `prefix` and is ≥ `from`,
    /// in key order. Ordered indexes consumed from the front (waiters, the
    /// terminal index) start from a remembered cursor so that a scan never
    /// walks the deleted keys in front of it (issue #10).
    fn scan_from_n(&self, prefix: &[u8], from: &[u8], n: usize) -> Vec<(Vec<u8>, Vec<u8>)>;
}

/// Reads of the applied state from outside the apply path, a page at a
/// time: the broker pages its queues through it (issue #10). A page sees
/// every batch written before the call.
pub trait ReadPages: Send + Sync {
    /// The first `n` entries whose key starts with `prefix` and is ≥ `from`,
    /// in key order.
    fn page(&self, prefix: &[u8], from: &[u8], n: usize) -> Vec<(Vec<u8>, Vec<u8>)>;
}

/// No state at all (a broker that is fed only by effects, as in unit tests).
pub struct NoPages;

impl ReadPages for NoPages {
    fn page(&self, _prefix: &[u8], _from: &[u8], _n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        Vec::new()
    }
}

/// A shared in-memory store (tests that apply commands and page the broker
/// from the same state).
impl ReadPages for parking_lot::RwLock<MemKv> {
    fn page(&self, prefix: &[u8], from: &[u8], n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.read().scan_from_n(prefix, from, n)
    }
}

/// In-memory [`Kv`]: the reference implementation for tests and simulation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemKv {
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Kv for MemKv {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map.get(key).cloned()
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.map.insert(key, value);
    }
    fn delete(&mut self, key: &[u8]) {
        self.map.remove(key);
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.scan_prefix_n(prefix, usize::MAX)
    }
    fn scan_from_n(&self, prefix: &[u8], from: &[u8], n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let start = if from > prefix { from } else { prefix };
        self.map
            .range(start.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(n)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A stable 64-bit digest of every entry, in key order. Two replicas that
/// applied the same log have the same digest.
pub fn digest<'a>(entries: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> u64 {
    let mut h = Digest::default();
    for (k, v) in entries {
        h.add(k, v);
    }
    h.finish()
}

/// Incremental form of [`digest`]: add entries in key order, then finish.
pub struct Digest(xxhash_rust::xxh64::Xxh64);

impl Default for Digest {
    fn default() -> Self {
        Digest(xxhash_rust::xxh64::Xxh64::new(0))
    }
}

impl Digest {
    pub fn add(&mut self, k: &[u8], v: &[u8]) {
        self.0.update(&(k.len() as u64).to_be_bytes());
        self.0.update(k);
        self.0.update(&(v.len() as u64).to_be_bytes());
        self.0.update(v);
    }
    pub fn finish(&self) -> u64 {
        self.0.digest()
    }
}

impl MemKv {
    pub fn digest(&self) -> u64 {
        digest(self.map.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
    }
}
