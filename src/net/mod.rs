//! Sockets: raw socket options and syscalls (hot side, `sys`), keepalive and user timeout
//! on session sockets (hot side, `keepalive`), listener creation and the pipe budget check
//! (control side, `listener`, `pipe_budget`).

pub mod keepalive;
pub mod listener;
pub mod pipe_budget;
pub mod sys;
