//! Versioned value encoding: `[VERSION][bincode body]`.
//!
//! A value written by a newer format is refused loudly instead of being
//! misread; decoding failures mean the store is corrupt and the node must stop.
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Version byte written in front of every value.
pub const VALUE_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty value")]
    Empty,
    #[error("unknown value version {0} (this build reads version {VALUE_VERSION})")]
    Version(u8),
    #[error("value body: {0}")]
    Body(#[from] bincode::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(VALUE_VERSION);
    bincode::serialize_into(&mut out, value).expect("bincode serialization into a Vec cannot fail");
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&VALUE_VERSION, body)) => Ok(bincode::deserialize(body)?),
        Some((&v, _)) => Err(CodecError::Version(v)),
    }
}

/// Decode a value read from the state-machine store. A failure means the store
/// is corrupt: stop rather than diverge from the other replicas.
pub fn decode_or_die<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> T {
    decode(bytes).unwrap_or_else(|e| panic!("corrupt {what} record in state store: {e}"))
}
