//! Everything that touches bytes on disk.
//!
//! - [`keys`] is the only place that knows key bytes; integers are big-endian so
//!   that RocksDB's byte order is the numeric order.
//! - [`codec`] encodes values with a leading version byte.
//! - [`kv`] is the small ordered key-value interface the pure state machine runs
//!   against, with an in-memory implementation for tests and simulation.
//! - [`rocks`] opens the node's RocksDB database and implements [`kv::Kv`] over it
//!   with a write overlay so that a batch of applied commands lands in one
//!   `WriteBatch`.
pub mod codec;
pub mod keys;
pub mod kv;
pub mod rocks;
