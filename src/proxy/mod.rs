//! The data path (hot side): route table, sessions, connect, and the two relays (splice and
//! buffered) with their per-worker pools.

pub mod connect;
pub mod pool;
pub mod relay;
pub mod session;
#[cfg(feature = "perf-check-slowdown")]
pub mod slowdown;
pub mod splice;
pub mod table;
