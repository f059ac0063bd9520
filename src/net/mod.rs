//! Sockets: raw socket options and syscalls (hot side, `sys`), listener creation and the
//! pipe budget check (control side, `listener`, `pipe_budget`).

pub mod listener;
pub mod pipe_budget;
pub mod sys;
