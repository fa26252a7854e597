//! Jepsen-style testing of the silo job queue, in Rust.
//!
//! Jepsen's vocabulary throughout: a *DB* lifecycle (real `silo serve` nodes,
//! each in its own network namespace), *clients* that run operations against
//! nodes, a seeded *generator* that decides which operation each client runs
//! next, *nemeses* that inject faults, an operation *history* (invoke / ok /
//! fail / info), and *checkers* that decide whether the history is valid.
//!
//! Pure and unit-tested: [`history`] (the format), [`checker`] (one verdict
//! per property), [`edn`] (export for Jepsen's own tools), [`report`] (summary
//! and HTML). The runtime needs root and real processes: [`net`] (namespaces
//! and iptables), [`db`] (the nodes), [`client`] (connections and the history
//! recorder), [`workload`] (processes and generator), [`nemesis`] (faults),
//! [`heal`] (the final liveness checker). The `jepsen` binary (`src/main.rs`)
//! runs one test; `tests/known_faults.rs` replays faults found by hand.
pub mod checker;
pub mod client;
pub mod db;
pub mod edn;
pub mod heal;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod report;
pub mod workload;
