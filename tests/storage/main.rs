//! Storage tier: our RocksDB log store and state-machine store pass openraft's
//! own conformance suite, plus round trips of the key layout and codec.
use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use silo::broker::Broker;
use silo::raft::log_store::LogStore;
use silo::raft::sm_store::StateMachineStore;
use silo::raft::types::{NodeId, TypeConfig};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), openraft::StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = silo::storage::rocks::open(&dir.path().join("db"), &silo::config::StorageConfig::default()).expect("open rocksdb");
        let log = LogStore::new(db.clone());
        let sm = StateMachineStore::new(db, Arc::new(Broker::new()), dir.path());
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_conformance_suite() {
    Suite::test_all(RocksBuilder).expect("conformance suite");
}

#[test]
fn codec_refuses_unknown_versions() {
    use silo::storage::codec::{decode, encode, CodecError};
    let bytes = encode(&("a".to_string(), 7u64));
    let back: (String, u64) = decode(&bytes).unwrap();
    assert_eq!(back, ("a".to_string(), 7));
    let mut newer = bytes.clone();
    newer[0] = 99;
    assert!(matches!(decode::<(String, u64)>(&newer), Err(CodecError::Version(99))));
    assert!(matches!(decode::<(String, u64)>(&[]), Err(CodecError::Empty)));
}
