//! Sockets: raw socket options and syscalls (hot side, `sys`) and listener creation (control
//! side, `listener`).

pub mod listener;
pub mod sys;
