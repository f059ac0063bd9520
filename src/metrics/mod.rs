//! Metrics: worker-local counters and histograms (hot side, `local`), the snapshots workers
//! send and the control thread's merged store (`snapshot`), each worker thread's CPU time
//! (control side, `cpu`), and rendering (`render`).

pub mod cpu;
pub mod local;
pub mod names;
pub mod render;
pub mod snapshot;
