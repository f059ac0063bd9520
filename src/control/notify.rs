//! Control side: systemd's readiness protocol (`Type=notify`): `READY=1` once every listener
//! is bound and every worker runs, `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1`
//! around a reload, `STOPPING=1` at shutdown. Without `$NOTIFY_SOCKET` (not under systemd)
//! each call does nothing.
//!
//! The messages are `sd_notify` states (the `sd-notify` crate's types), sent on a
//! *non-blocking* datagram socket: a send on a unix datagram socket blocks once its reader
//! falls behind (about ten datagrams queued), and the control thread must never wait on the
//! service manager. A notification that would block is dropped and logged (the next one
//! says the same or newer). A failure to notify is logged, never fatal.

use std::os::unix::net::UnixDatagram;

use sd_notify::NotifyState;

/// Sends `states` to `$NOTIFY_SOCKET` without blocking.
fn send(states: &[NotifyState<'_>]) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        send_to(&path, states);
    }
}

/// Sends `states` to the notify socket at `path` without blocking.
fn send_to(path: &std::ffi::OsStr, states: &[NotifyState<'_>]) {
    let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
    let sent = (|| {
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        let bytes = path.as_encoded_bytes();
        // "@name": a socket in the abstract namespace (as systemd may pass it).
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(msg.as_bytes(), &addr)
        } else {
            sock.send_to(msg.as_bytes(), path)
        }
    })();
    match sent {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            tracing::warn!(message = %msg.trim_end(), "the service manager is not reading $NOTIFY_SOCKET; notification dropped")
        }
        Err(e) => tracing::warn!(error = %e, "cannot notify the service manager ($NOTIFY_SOCKET)"),
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

/// A new process (an upgrade's) is the service's main process from now on.
pub(super) fn main_pid(pid: u32) {
    send(&[NotifyState::MainPid(pid), NotifyState::Status("upgraded")]);
}

/// Shutdown has begun.
pub(super) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that never reads: the first notifications arrive, later ones are dropped,
    /// and the sender never blocks (this test would hang otherwise).
    #[test]
    fn a_stalled_reader_never_blocks_the_sender() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let reader = UnixDatagram::bind(&path).unwrap();
        for _ in 0..1000 {
            send_to(path.as_os_str(), &[NotifyState::Ready]);
        }
        let mut buf = [0u8; 64];
        let n = reader.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }
}
