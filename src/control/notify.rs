//! Control side: systemd's readiness protocol (`Type=notify`): `READY=1` once every listener
//! is bound and every worker runs, `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1`
//! around a reload, `STOPPING=1` at shutdown. Without `$NOTIFY_SOCKET` (not under systemd)
//! each call does nothing. A failure to notify is logged, never fatal.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager ($NOTIFY_SOCKET)");
    }
}

/// Start-up is complete, or a reload has finished (successfully or not).
pub(super) fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// A reload has begun.
pub(super) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown has begun.
pub(super) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}
