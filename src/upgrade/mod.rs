//! Control side: replacing the running binary without losing a connection.
//!
//! The old process ([`parent`]) starts the new binary with the same configuration file and
//! a hand-over channel ([`wire`]) inherited as `RINGWAY_UPGRADE_FD`. Over it go every
//! listening socket (one per worker per address), the admin API's sockets and the admin
//! token. The new process ([`child`]) validates its configuration and starts as usual, but
//! takes the inherited sockets where it would bind the same address, and reports `Ready`
//! (or `Failed`, with why). Only then does the old process stop accepting: it closes its
//! copies, the sockets themselves stay open in the new process, so no queued connection is
//! reset and no SYN refused. Then established sessions move: each worker pauses its
//! sessions' reading, and every session with nothing in flight either way goes over with its
//! two sockets and its route, backend and counters, and goes on in the new process. What
//! cannot reach such a quiet point within [`HANDOVER_BOUND`] stays and drains under
//! `runtime.shutdown_grace`; the old process exits once it holds no session.
//!
//! A new binary that exits, crashes, fails its configuration or does not report within the
//! deadline changes nothing: the old process never stopped accepting, it kills and reaps the
//! child, closes its end of the channel, and answers why.

pub mod child;
pub mod parent;
pub mod wire;

use std::time::Duration;

/// The environment variable naming the inherited hand-over channel's descriptor.
pub const FD_ENV: &str = "RINGWAY_UPGRADE_FD";

/// How long a new binary gets to report ready, unless the request says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// How long workers keep trying to bring sessions to a quiet point before the rest stay
/// with the old process.
pub const HANDOVER_BOUND: Duration = Duration::from_secs(2);
