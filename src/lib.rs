//! ringway: a TCP (L4) proxy engine for Linux edge boxes — io_uring, thread-per-core,
//! zero-copy splice.
//!
//! ```text
//!  admin HTTP API ──▶ control thread (control/) ──▶ per worker: crossbeam + wake-up byte
//!                     owns Config, binds listeners   ApplyRoutes{generation}, Shutdown
//!                     (net/listener), merges metrics ◀── per-worker snapshots (metrics/)
//!                            │
//!        ┌───────────────────┼────────────────────┐
//!   worker 0 (core 0)   worker 1 (core 1)   …  worker N-1          (worker/)
//!   monoio io_uring runtime, own SO_REUSEPORT listener per address
//!   accept → route lookup → connect (retries) → relay: copy ⇄ splice   (proxy/)
//! ```
//!
//! Hot side (workers, no locks, no shared atomics, no blocking): `worker`, `proxy`,
//! `net::sys`, `metrics::local`, the `access_log` record and queue. Control side (plain and simple): `config`, `control`
//! (route state, switch/rollback, state file), `health` (checks on their own thread), `dns`
//! (backend names resolved on their own thread), `side_thread` (the thread both run on),
//! `admin` (HTTP API), `client` (the CLI's side of it), `net::{listener, pipe_budget}`,
//! `metrics::{snapshot, render, cpu}`, `access_log::{AccessLog, format}` (the writer thread).

#![deny(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod dns;
pub mod health;
pub mod metrics;
pub mod net;
pub mod proxy;
pub mod side_thread;
pub mod sniff;
pub mod upgrade;
pub mod worker;
