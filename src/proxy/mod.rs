//! The data path (hot side): route table, sessions, connect, and the relay (copy and splice,
//! adaptive) with its per-worker pools.

pub mod balance;
pub mod connect;
pub mod door;
pub mod eject;
pub mod fds;
pub mod flow;
pub mod peek;
pub mod pool;
pub mod pulse;
pub mod relay;
pub mod session;
#[cfg(feature = "perf-check-slowdown")]
pub mod slowdown;
pub mod sources;
pub mod table;
pub mod warn;
