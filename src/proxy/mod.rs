//! The data path (hot side): route table, sessions, connect, and the two relays (splice and
//! buffered) with their per-worker pools.

pub mod connect;
pub mod pool;
pub mod relay;
pub mod session;
pub mod splice;
pub mod table;
