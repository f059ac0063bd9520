//! Control side: the old process's half of a binary upgrade (`crate::upgrade`), as the
//! control thread drives it — start the new binary, wait for its report without blocking
//! anything else, then stop accepting, pass the sessions on, and leave.
//!
//! While an upgrade is under way, changes through the API are refused (409
//! `upgrade_in_progress`): the new process starts from the state file as it is now.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Control;
use super::error::ControlError;
use super::messages::{AdminReply, Answer, ToWorker};
use super::notify;
use crate::api::UpgradeDoc;
use crate::upgrade::child::Arrived;
use crate::upgrade::parent::{self, Event, Outgoing};
use crate::upgrade::wire::MovedSession;

type Reply = tokio::sync::oneshot::Sender<AdminReply>;

/// An upgrade under way.
#[derive(Debug)]
pub(super) struct Upgrading {
    handle: parent::Handle,
    binary: PathBuf,
    /// Hand over open sessions too.
    sessions: bool,
    reply: Option<Reply>,
    started: Instant,
    /// Once the new process is ready: what it took, and the workers still handing over.
    moving: Option<Moving>,
}

#[derive(Debug)]
struct Moving {
    /// When the new process reported ready.
    since: Instant,
    pid: u32,
    listeners: Vec<SocketAddr>,
    waiting: usize,
    moved: u64,
    left: u64,
}

impl Upgrading {
    pub(super) fn events(&self) -> crossbeam_channel::Receiver<Event> {
        self.handle.events.clone()
    }
}

impl Control {
    /// `POST /upgrade`, `ringway upgrade`, SIGUSR2 (no reply).
    pub(super) fn on_upgrade(
        &mut self,
        binary: Option<PathBuf>,
        timeout: Option<Duration>,
        sessions: bool,
        reply: Option<Reply>,
    ) {
        let answer = |reply: Option<Reply>, r: AdminReply| {
            if let Some(tx) = reply {
                let _ = tx.send(r);
            }
        };
        if self.upgrade.is_some() {
            return answer(reply, Err(ControlError::Upgrading));
        }
        // A change answered but not yet saved (every worker acknowledges first), or a switch
        // waiting for its health gate: the new process would start without it.
        if !self.commits.is_empty() || !self.gates.is_empty() {
            return answer(reply, Err(ControlError::ChangePending));
        }
        let Some(binary) = binary.or_else(|| self.exe.clone()) else {
            let why = "this process's own path is unknown: pass --binary".to_string();
            return answer(reply, Err(ControlError::UpgradeFailed(why)));
        };
        let spec = match self.upgrade_spec(binary.clone(), timeout) {
            Ok(spec) => spec,
            Err(why) => return answer(reply, Err(ControlError::UpgradeFailed(why))),
        };
        match parent::start(spec) {
            Ok(handle) => {
                self.upgrade = Some(Upgrading {
                    handle,
                    binary,
                    sessions,
                    reply,
                    started: Instant::now(),
                    moving: None,
                });
            }
            Err(why) => {
                self.control_metrics.upgrades_failed += 1;
                tracing::error!(reason = %why, "upgrade failed; serving on");
                answer(reply, Err(ControlError::UpgradeFailed(why)));
            }
        }
    }

    /// Copies of every listening socket and of the admin sockets, for the new process.
    fn upgrade_spec(
        &self,
        binary: PathBuf,
        timeout: Option<Duration>,
    ) -> Result<parent::Spec, String> {
        let copy = |e: std::io::Error| format!("cannot copy a socket for the new process: {e}");
        let mut listeners = Vec::new();
        for (addr, fds) in self.ports.copies() {
            let fds = fds
                .iter()
                .map(|f| f.try_clone())
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(copy)?;
            listeners.push((addr, fds));
        }
        let admin = self
            .admin_copies
            .as_ref()
            .ok_or("the admin sockets could not be kept for an upgrade (see the start-up log)")?;
        let admin = parent::AdminFds {
            tcp: admin.tcp.try_clone().map_err(copy)?,
            tcp_addr: admin.tcp_addr,
            unix: match &admin.unix {
                Some((p, fd)) => Some((p.clone(), fd.try_clone().map_err(copy)?)),
                None => None,
            },
        };
        Ok(parent::Spec {
            binary,
            config: self.source.clone(),
            listeners,
            admin,
            token: self.admin_token.clone(),
            bound: self
                .routes
                .iter()
                .map(|r| (r.cfg.name.clone(), r.bound.clone()))
                .collect(),
            deadline: timeout.unwrap_or(crate::upgrade::DEFAULT_DEADLINE),
        })
    }

    /// The new binary reported (or failed).
    pub(super) fn on_upgrade_event(&mut self, ev: Event) {
        let Some(up) = self.upgrade.as_mut() else {
            return;
        };
        match ev {
            Event::Failed(why) => {
                self.control_metrics.upgrades_failed += 1;
                tracing::error!(reason = %why, "upgrade failed; this process serves on unchanged");
                if let Some(tx) = up.reply.take() {
                    let _ = tx.send(Err(ControlError::UpgradeFailed(why)));
                }
                self.upgrade = None;
            }
            Event::Broken => {
                // The new process stopped taking sessions: those not yet taken stay here.
                for w in &self.workers {
                    w.waker.send(ToWorker::KeepSessions);
                }
            }
            Event::Ready {
                pid,
                adopted,
                routes,
            } => {
                tracing::info!(
                    pid,
                    listeners = adopted.len(),
                    "upgrade: the new process serves; handing over"
                );
                // Nothing here may keep a socket alive from now on: an address the new
                // process did not take must close when this process retires it.
                self.ports.drop_copies();
                self.admin_copies = None;
                // systemd follows the new process from now on (`NotifyAccess=main` is enough:
                // this is still the main process when it says so).
                notify::main_pid(pid);
                if let Some(admin) = &self.admin_handle {
                    admin.stop_accepting();
                }
                let adopted = Arc::new(adopted);
                // Without session hand-over no route pauses: every session finishes here.
                let routes = Arc::new(if up.sessions { routes } else { Vec::new() });
                let mut waiting = 0;
                for w in &self.workers {
                    let sent = w.waker.send(ToWorker::Handover {
                        adopted: adopted.clone(),
                        routes: routes.clone(),
                    });
                    if sent {
                        waiting += 1;
                    }
                }
                up.moving = Some(Moving {
                    since: Instant::now(),
                    pid,
                    listeners: adopted.iter().map(|(a, _)| *a).collect(),
                    waiting,
                    moved: 0,
                    left: 0,
                });
                self.finish_upgrade_if_done();
            }
        }
    }

    /// A worker's session reached its quiet point: on to the new process.
    pub(super) fn on_moved(
        &mut self,
        session: MovedSession,
        client: std::os::fd::OwnedFd,
        backend: std::os::fd::OwnedFd,
    ) {
        match &self.upgrade {
            Some(up) => {
                let _ = up.handle.out.send(Outgoing::Session {
                    session,
                    client,
                    backend,
                });
            }
            // Cannot happen (workers hand over only during an upgrade).
            None => {
                tracing::error!("a session was handed over with no upgrade under way; reset");
                crate::upgrade::wire::reset(client);
                crate::upgrade::wire::reset(backend);
            }
        }
    }

    /// A worker has finished handing over.
    pub(super) fn on_handed_over(&mut self, moved: u64, left: usize) {
        if let Some(m) = self.upgrade.as_mut().and_then(|u| u.moving.as_mut()) {
            m.waiting = m.waiting.saturating_sub(1);
            m.moved += moved;
            m.left += left as u64;
        }
        self.finish_upgrade_if_done();
    }

    /// A worker that never reports (it would have to have died) must not hold the old
    /// process forever: past the bound and a margin, the hand-over counts as done.
    pub(super) fn expire_upgrade(&mut self) {
        let late = crate::upgrade::HANDOVER_BOUND + Duration::from_secs(5);
        if let Some(m) = self.upgrade.as_mut().and_then(|u| u.moving.as_mut())
            && m.waiting > 0
            && m.since.elapsed() > late
        {
            tracing::error!(
                workers = m.waiting,
                "workers did not finish handing over in time"
            );
            m.waiting = 0;
            self.finish_upgrade_if_done();
        }
    }

    fn finish_upgrade_if_done(&mut self) {
        let done = self
            .upgrade
            .as_ref()
            .and_then(|u| u.moving.as_ref())
            .is_some_and(|m| m.waiting == 0);
        if !done {
            return;
        }
        let Some(mut up) = self.upgrade.take() else {
            return;
        };
        let Some(m) = up.moving.take() else {
            return;
        };
        let _ = up.handle.out.send(Outgoing::Done);
        // Every session queued goes before this process can exit.
        self.upgrade_thread = Some(up.handle);
        let doc = UpgradeDoc {
            old_pid: std::process::id(),
            pid: m.pid,
            binary: up.binary.display().to_string(),
            listeners: m.listeners,
            sessions_moved: m.moved,
            sessions_left: m.left,
            took_ms: up.started.elapsed().as_millis() as u64,
        };
        tracing::info!(
            pid = m.pid,
            sessions_moved = m.moved,
            sessions_left = m.left,
            "upgrade complete; this process exits once its last session ends"
        );
        if let Some(tx) = up.reply.take() {
            let _ = tx.send(Ok(Answer::Upgrade(doc)));
        }
        self.handed_over = true;
    }

    /// At shutdown: an upgrade not yet handed over is cancelled (the child is killed, even
    /// one that reported a moment ago: this process never let go, and its workers are about
    /// to retire every listener); a finished one gets its sessions sent.
    pub(super) fn end_upgrade(&mut self) {
        if let Some(up) = self.upgrade.take() {
            up.handle
                .cancel
                .store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::warn!(
                "stopping during an upgrade: the new binary is stopped, this process stops as asked"
            );
            if let Some(tx) = up.reply {
                let _ = tx.send(Err(ControlError::ShuttingDown));
            }
            up.handle.finish(Duration::from_secs(5));
        }
        if let Some(thread) = self.upgrade_thread.take() {
            thread.finish(Duration::from_secs(30));
        }
    }

    /// New process: a session handed over by the old one goes to a worker (the one with the
    /// same index where there is one).
    pub(super) fn on_arrived(&mut self, a: Arrived) {
        let n = self.workers.len().max(1);
        if let Some(w) = self.workers.get(a.session.worker % n) {
            // A worker that is gone drops the message, and the sockets close (no worker ever
            // stops while ringway serves).
            w.waker.send(ToWorker::Adopt(Box::new(a)));
        }
    }
}
