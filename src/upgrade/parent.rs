//! Control side, old process: starting the new binary, handing it the sockets, and waiting
//! for its verdict on a thread of its own (the control thread goes on serving meanwhile).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::wire::{Channel, MAX_FDS, MovedSession, ToNew, ToOld};

/// The admin API's sockets (copies), as the new process gets them.
#[derive(Debug)]
pub struct AdminFds {
    pub tcp: OwnedFd,
    pub tcp_addr: SocketAddr,
    pub unix: Option<(PathBuf, OwnedFd)>,
}

/// What an upgrade starts from.
#[derive(Debug)]
pub struct Spec {
    pub binary: PathBuf,
    /// The configuration file this process runs with (`None`: the embedded default).
    pub config: Option<PathBuf>,
    /// Copies of every listening socket, by bound address, in worker order.
    pub listeners: Vec<(SocketAddr, Vec<OwnedFd>)>,
    pub admin: AdminFds,
    pub token: String,
    /// Where each route listens (route, bound address per configured one).
    pub bound: Vec<(String, Vec<SocketAddr>)>,
    /// How long the new binary gets to report ready.
    pub deadline: Duration,
}

/// What the new binary said, or why there is no new binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Ready {
        pid: u32,
        /// Addresses it took over, with how many of each one's sockets (in worker order).
        adopted: Vec<(SocketAddr, usize)>,
        routes: Vec<String>,
    },
    /// It was killed (if it still ran) and reaped; nothing of it is left.
    Failed(String),
    /// After `Ready`: a session could not be sent (the new process stopped reading or
    /// exited). Sessions not yet taken should stay here.
    Broken,
}

/// What the control thread passes on once the new process is ready.
#[derive(Debug)]
pub enum Outgoing {
    Session {
        session: MovedSession,
        client: OwnedFd,
        backend: OwnedFd,
    },
    /// No more sessions: the channel is closed.
    Done,
}

/// A started upgrade.
#[derive(Debug)]
pub struct Handle {
    pub events: Receiver<Event>,
    pub out: Sender<Outgoing>,
    /// Set to give up: a child that has not reported is killed (even one that just did).
    pub cancel: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Handle {
    /// Waits (up to `limit`) for the thread to end: every session queued is sent by then.
    pub fn finish(self, limit: Duration) {
        let until = Instant::now() + limit;
        while !self.thread.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        } else {
            tracing::error!("the upgrade thread did not finish sending sessions in time");
        }
    }
}

/// How long one session send may wait for the new process to make room.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts a thread that runs `spec.binary run [-c FILE]` with the channel inherited, hands
/// it the sockets and waits for its report (a binary that cannot be started is a `Failed`
/// event). Errors: the thread could not be started.
pub fn start(spec: Spec) -> Result<Handle, String> {
    let (events_tx, events) = crossbeam_channel::bounded(4);
    let (out, out_rx) = crossbeam_channel::unbounded();
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = cancel.clone();
    let thread = std::thread::Builder::new()
        .name("ringway-upgrade".into())
        .spawn(move || match spawn_child(&spec) {
            Ok((child, chan)) => talk(child, chan, spec, &events_tx, out_rx, &stop),
            Err(why) => {
                let _ = events_tx.send(Event::Failed(why));
            }
        })
        .map_err(|e| format!("cannot start the upgrade thread: {e}"))?;
    Ok(Handle {
        events,
        out,
        cancel,
        thread,
    })
}

fn spawn_child(spec: &Spec) -> Result<(Child, Channel), String> {
    let (ours, theirs) =
        Channel::pair().map_err(|e| format!("cannot create the hand-over channel: {e}"))?;
    let fd = theirs.as_fd().as_raw_fd();
    let mut cmd = Command::new(&spec.binary);
    cmd.arg("run");
    if let Some(file) = &spec.config {
        cmd.arg("-c").arg(file);
    }
    cmd.env(super::FD_ENV, fd.to_string()).stdin(Stdio::null());
    crate::net::sys::keep_across_exec(&mut cmd, fd);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", spec.binary.display()))?;
    tracing::info!(binary = %spec.binary.display(), pid = child.id(), "upgrade: new binary started; waiting for it to report ready");
    Ok((child, ours))
}

fn talk(
    mut child: Child,
    chan: Channel,
    spec: Spec,
    events: &Sender<Event>,
    out: Receiver<Outgoing>,
    cancel: &AtomicBool,
) {
    let deadline = Instant::now() + spec.deadline;
    let limit = spec.deadline;
    let verdict = chan
        .set_send_timeout(spec.deadline)
        .map_err(channel_error)
        .and_then(|()| send_sockets(&chan, spec))
        .and_then(|()| wait_ready(&chan, deadline, cancel));
    let ready = match verdict {
        Ok(_) if cancel.load(Ordering::SeqCst) => Err(CANCELLED.to_string()),
        other => other,
    };
    let ready = match ready {
        Ok(ready) => ready,
        Err(why) => {
            let why = finish(&mut child, why, limit);
            let _ = events.send(Event::Failed(why));
            return;
        }
    };
    let _ = events.send(ready);
    let _ = chan.set_send_timeout(SEND_TIMEOUT);
    let mut lost = 0u64;
    for msg in out {
        match msg {
            Outgoing::Session {
                session,
                client,
                backend,
            } => {
                if lost > 0 {
                    // The channel failed: what was already queued cannot go either.
                    super::wire::reset(client);
                    super::wire::reset(backend);
                    lost += 1;
                    continue;
                }
                let fds = [client.as_fd(), backend.as_fd()];
                if let Err(e) = chan.send(&ToNew::Session(session), &fds) {
                    lost += 1;
                    tracing::error!(error = %e, "cannot hand a session to the new process; it is reset, and the sessions not yet taken stay here");
                    let _ = events.send(Event::Broken);
                    super::wire::reset(client);
                    super::wire::reset(backend);
                }
            }
            Outgoing::Done => {
                let _ = chan.send(&ToNew::Done, &[]);
                break;
            }
        }
    }
    if lost > 0 {
        tracing::error!(sessions = lost, "sessions lost in the hand-over");
    }
    // The child is not waited for: it outlives this process.
}

const CANCELLED: &str = "cancelled: this process is stopping";

fn send_sockets(chan: &Channel, spec: Spec) -> Result<(), String> {
    let failed = |e: io::Error| match channel_error(e) {
        exited if exited == "exited" => exited,
        other => format!("cannot hand the sockets to the new process: {other}"),
    };
    for (addr, fds) in &spec.listeners {
        for chunk in fds.chunks(MAX_FDS) {
            let borrowed: Vec<_> = chunk.iter().map(|f| f.as_fd()).collect();
            chan.send(&ToNew::Listeners { addr: *addr }, &borrowed)
                .map_err(failed)?;
        }
    }
    let admin = &spec.admin;
    let mut fds = vec![admin.tcp.as_fd()];
    if let Some((_, unix)) = &admin.unix {
        fds.push(unix.as_fd());
    }
    chan.send(
        &ToNew::Admin {
            tcp: admin.tcp_addr,
            unix: admin.unix.as_ref().map(|(p, _)| p.clone()),
        },
        &fds,
    )
    .map_err(failed)?;
    chan.send(
        &ToNew::Start {
            token: spec.token.clone(),
            parent: std::process::id(),
            bound: spec.bound.clone(),
        },
        &[],
    )
    .map_err(failed)
}

fn wait_ready(chan: &Channel, deadline: Instant, cancel: &AtomicBool) -> Result<Event, String> {
    loop {
        if cancel.load(Ordering::SeqCst) {
            return Err(CANCELLED.into());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(String::new());
        }
        // Looks at `cancel` every 100 ms.
        chan.set_timeout(Some(left.min(Duration::from_millis(100))))
            .map_err(channel_error)?;
        match chan.recv::<ToOld>() {
            Ok(Some((
                ToOld::Ready {
                    pid,
                    adopted,
                    routes,
                },
                _,
            ))) => {
                return Ok(Event::Ready {
                    pid,
                    adopted,
                    routes,
                });
            }
            Ok(Some((ToOld::Failed { message }, _))) => return Err(message),
            // EOF: it exited (or closed the channel) without a report.
            Ok(None) => return Err("exited".into()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(channel_error(e)),
        }
    }
}

/// A failure of the channel: the child's end is gone when it exited with our messages
/// unread (a reset) or closed it.
fn channel_error(e: io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNRESET | libc::EPIPE) => "exited".into(),
        _ => format!("hand-over channel: {e}"),
    }
}

/// The new binary failed: makes sure it is gone (killed if it still runs) and reaped, and
/// says why in one line.
fn finish(child: &mut Child, why: String, limit: Duration) -> String {
    // A process that reported a failure exits next; give it a moment to do so by itself
    // (none for one that did not report in time, or when cancelled).
    let wait = if why.is_empty() || why == CANCELLED {
        0
    } else {
        2
    };
    let grace = Instant::now() + Duration::from_secs(wait);
    let mut status = None;
    while Instant::now() < grace {
        match child.try_wait() {
            Ok(Some(s)) => {
                status = Some(s);
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break,
        }
    }
    let killed = status.is_none();
    if killed {
        let _ = child.kill();
        status = child.wait().ok();
    }
    let status = status.map_or("an unknown status".into(), |s| s.to_string());
    match why.as_str() {
        "" => format!(
            "the new binary did not report ready within {}s; it was killed",
            limit.as_secs_f64()
        ),
        "exited" if killed => {
            "the new binary closed the hand-over channel without a report; it was killed".into()
        }
        "exited" => format!("the new binary exited before reporting ready ({status})"),
        message if killed => format!("{message} (the new binary was killed)"),
        message => format!("{message} (the new binary {status})"),
    }
}
