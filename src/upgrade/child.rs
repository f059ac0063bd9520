//! Control side, new process: what an upgrade hands this process at start, its report to the
//! old process, and the sessions that arrive afterwards.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::wire::{Channel, MovedSession, ToNew, ToOld};

/// How long the old process gets to send the sockets once this one started.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin API's inherited sockets.
#[derive(Debug)]
pub struct InheritedAdmin {
    pub tcp_addr: SocketAddr,
    pub tcp: OwnedFd,
    pub unix: Option<(PathBuf, OwnedFd)>,
}

/// Everything the old process handed over at start.
#[derive(Debug)]
pub struct Inherited {
    chan: Channel,
    /// Listening sockets by bound address, in the old process's worker order.
    pub listeners: BTreeMap<SocketAddr, Vec<OwnedFd>>,
    pub admin: Option<InheritedAdmin>,
    /// The admin token in force in the old process (used when the configuration sets none).
    pub token: String,
    /// The old process.
    pub parent: u32,
    /// Where each of the old process's routes listened (route, bound address per
    /// configured one): a route listening on port 0 keeps its port.
    pub bound: Vec<(String, Vec<SocketAddr>)>,
}

/// A session handed over after the start.
#[derive(Debug)]
pub struct Arrived {
    pub session: MovedSession,
    pub client: OwnedFd,
    pub backend: OwnedFd,
}

/// The hand-over this process was started for, if any (`RINGWAY_UPGRADE_FD` is set):
/// everything the old process sends at start is received. An error: the old process could
/// not be heard. (The variable stays; a later upgrade of this process sets its own.)
pub fn from_env() -> Option<Result<Inherited, String>> {
    let value = std::env::var(super::FD_ENV).ok()?;
    Some(receive(&value))
}

fn receive(value: &str) -> Result<Inherited, String> {
    let fd: RawFd = value
        .parse()
        .ok()
        .filter(|fd| *fd > 2)
        .ok_or_else(|| format!("{}={value} is not a descriptor number", super::FD_ENV))?;
    // Before anything is opened here: only the channel is meant to be inherited.
    if let Err(e) = crate::net::sys::close_all_but(fd) {
        tracing::warn!(error = %e, "cannot close the descriptors inherited by mistake");
    }
    let fd = crate::net::sys::inherited(fd).map_err(|e| {
        format!(
            "{}={fd}: {e} (was this started by `ringway upgrade`?)",
            super::FD_ENV
        )
    })?;
    let chan = Channel::adopt(fd).map_err(|e| format!("the hand-over channel: {e}"))?;
    let heard = |e: std::io::Error| format!("the hand-over channel: {e}");
    chan.set_timeout(Some(RECEIVE_TIMEOUT)).map_err(heard)?;
    let mut listeners: BTreeMap<SocketAddr, Vec<OwnedFd>> = BTreeMap::new();
    let mut admin = None;
    loop {
        let Some((msg, fds)) = chan.recv::<ToNew>().map_err(heard)? else {
            return Err("the old process closed the hand-over channel".into());
        };
        match msg {
            ToNew::Listeners { addr } => listeners.entry(addr).or_default().extend(fds),
            ToNew::Admin { tcp, unix } => {
                let mut fds = fds.into_iter();
                let Some(tcp_fd) = fds.next() else {
                    return Err("the admin socket was not attached".into());
                };
                let unix = match (unix, fds.next()) {
                    (Some(path), Some(fd)) => Some((path, fd)),
                    _ => None,
                };
                admin = Some(InheritedAdmin {
                    tcp_addr: tcp,
                    tcp: tcp_fd,
                    unix,
                });
            }
            ToNew::Start {
                token,
                parent,
                bound,
            } => {
                chan.set_timeout(None).map_err(heard)?;
                return Ok(Inherited {
                    chan,
                    listeners,
                    admin,
                    token,
                    parent,
                    bound,
                });
            }
            ToNew::Session(_) | ToNew::Done => {
                return Err("a session came before the sockets".into());
            }
        }
    }
}

impl Inherited {
    /// Tells the old process this one cannot start (it exits next).
    pub fn fail(self, message: &str) {
        let msg = ToOld::Failed {
            message: message.trim_end().to_string(),
        };
        if let Err(e) = self.chan.send(&msg, &[]) {
            tracing::warn!(error = %e, "cannot tell the old process why this one failed");
        }
    }

    /// Tells the old process this one serves; returns the sessions it will hand over, as they
    /// arrive (the channel ends after the last one).
    pub fn ready(
        self,
        adopted: Vec<(SocketAddr, usize)>,
        routes: Vec<String>,
    ) -> std::io::Result<Receiver<Arrived>> {
        self.chan.send(
            &ToOld::Ready {
                pid: std::process::id(),
                adopted,
                routes,
            },
            &[],
        )?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let chan = self.chan;
        std::thread::Builder::new()
            .name("ringway-adopt".into())
            .spawn(move || {
                let mut count = 0u64;
                let mut buf = Vec::new();
                loop {
                    match chan.recv_with::<ToNew>(&mut buf) {
                        Ok(Some((ToNew::Session(session), fds))) => {
                            let mut fds = fds.into_iter();
                            if let (Some(client), Some(backend)) = (fds.next(), fds.next()) {
                                count += 1;
                                let _ = tx.send(Arrived {
                                    session,
                                    client,
                                    backend,
                                });
                            }
                        }
                        Ok(Some((ToNew::Done, _))) | Ok(None) => break,
                        Ok(Some((_, fds))) => fds.into_iter().for_each(super::wire::reset),
                        // Its descriptors were reset; the next session may still come.
                        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                            tracing::error!(error = %e, "a handed-over session was lost");
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "hand-over channel failed");
                            break;
                        }
                    }
                }
                tracing::info!(sessions = count, "sessions received from the old process");
            })?;
        Ok(rx)
    }
}
