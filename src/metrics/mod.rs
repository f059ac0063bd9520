//! Metrics: worker-local counters and histograms (hot side, `local`), the snapshots workers
//! send and the control thread's merged store (`snapshot`), and rendering (`render`).

pub mod local;
pub mod names;
pub mod render;
pub mod snapshot;
