//! Hot side: a worker — one thread, pinned to one core, running its own monoio runtime.
//!
//! A worker owns everything it touches: its listeners (one SO_REUSEPORT socket per listen
//! address, handed over by the control thread), its route table, its pools, its metrics and
//! its session registry. It hears from the control thread through [`inbox`] and reports back
//! over a crossbeam channel; it never blocks and never takes a lock.

mod accept;
mod busy;
mod handover;
mod inbox;
mod ring;
mod sessions;
pub mod trim;

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use monoio::io::Canceller;
use monoio::net::TcpListener;

pub use inbox::Waker;
pub use sessions::{Closed, Sessions};

use crate::access_log::{Queue, Record};
use crate::config::{Driver, RuntimeConfig, SpliceMode};
use crate::control::messages::{FromWorker, ToWorker};
use crate::metrics::local::{WorkerMetrics, bump};
use crate::proxy::door::Door;
use crate::proxy::fds::FdReserve;
use crate::proxy::pool::Pools;
use crate::proxy::sources::SourceCounts;
use crate::proxy::table::RouteTable;
use crate::proxy::warn::Warnings;

/// io_uring submission queue size per worker (the completion queue is twice as large).
const RING_ENTRIES: u32 = 2048;
/// Spare backlog buffers / pipes a worker keeps for reuse.
const POOL_MAX_IDLE: usize = 256;
/// How often a worker sends its metrics to the control thread.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// A worker's state, shared by its tasks through `Rc`.
pub struct Worker {
    pub id: usize,
    pub workers: usize,
    pub splice: SpliceMode,
    pub pools: Pools,
    pub table: RefCell<Rc<RouteTable>>,
    pub metrics: WorkerMetrics,
    pub sessions: Sessions,
    /// Rate-limited warnings (connect and accept failures).
    pub warnings: Warnings,
    /// Descriptor numbers a session may not keep (see `proxy::fds`).
    pub fds: FdReserve,
    /// Open sessions per route and client source (`max_connections_per_source`).
    pub sources: SourceCounts,
    /// This worker's share of `runtime.max_connections`: client connections it holds at
    /// once (its session registry's size); `None`: no cap.
    pub max_sessions: Option<usize>,
    /// Accept loops by listen address.
    listeners: RefCell<HashMap<SocketAddr, ListenerHandle>>,
    stopping: Cell<bool>,
    /// Sessions handed to a new binary so far (`handover`).
    handed_over: Cell<u64>,
    to_control: Sender<FromWorker>,
    /// This worker's queue to the access log writer, once a route logs.
    access_log: OnceCell<Queue>,
}

/// A running accept loop, as the worker holds it.
struct ListenerHandle {
    canceller: Canceller,
    fd: RawFd,
    retire: Rc<accept::Retire>,
}

/// What a worker thread is started with.
pub struct WorkerSpec {
    pub id: usize,
    pub workers: usize,
    pub core: Option<core_affinity::CoreId>,
    pub runtime: RuntimeConfig,
    pub inbox: Receiver<ToWorker>,
    pub wake: StdUnixStream,
    pub to_control: Sender<FromWorker>,
}

/// Starts worker thread `spec.id`. It reports `Started` or `StartFailed` first.
pub fn spawn(spec: WorkerSpec) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("ringway-w{}", spec.id))
        .spawn(move || run_thread(spec))
}

fn run_thread(spec: WorkerSpec) {
    let pinned = spec
        .core
        .filter(|c| core_affinity::set_for_current(*c))
        .map(|c| c.id);
    if spec.core.is_some() && pinned.is_none() {
        tracing::warn!(
            worker = spec.id,
            "could not pin worker to its core; running unpinned"
        );
    }
    let (id, to_control) = (spec.id, spec.to_control.clone());
    let result = match spec.runtime.driver {
        Driver::IoUring => ring::build(RING_ENTRIES, spec.runtime.busy_poll.is_some())
            .map_err(|e| {
                format!(
                    "io_uring is unavailable ({e}): the kernel refused io_uring_setup \
                     (kernel.io_uring_disabled, a seccomp filter such as a container's default \
                     profile, or a kernel older than 5.6). Allow io_uring, or set \
                     runtime.driver = \"epoll\" in the configuration to run on epoll"
                )
            })
            .map(|(mut rt, mode)| {
                tracing::info!(
                    worker = id,
                    task_run = mode.as_str(),
                    "io_uring ring set up"
                );
                rt.block_on(main(spec, pinned))
            }),
        Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map_err(|e| format!("cannot start the epoll runtime: {e}"))
            .map(|mut rt| rt.block_on(main(spec, pinned))),
    };
    if let Err(error) = result {
        let _ = to_control.send(FromWorker::StartFailed { worker: id, error });
    }
}

async fn main(spec: WorkerSpec, core: Option<usize>) {
    let worker = Rc::new(Worker {
        id: spec.id,
        workers: spec.workers,
        splice: spec.runtime.splice,
        pools: Pools::new(
            spec.runtime.buffer_size,
            spec.runtime.pipe_size,
            POOL_MAX_IDLE,
        ),
        table: RefCell::new(Rc::new(RouteTable::default())),
        metrics: WorkerMetrics::on_current_thread(),
        sessions: Sessions::default(),
        warnings: Warnings::default(),
        fds: FdReserve::from_limit(crate::net::sys::nofile_limit().ok().map(|(soft, _)| soft)),
        sources: SourceCounts::default(),
        max_sessions: spec
            .runtime
            .max_connections
            .map(|n| (n.get() as usize).div_ceil(spec.workers.max(1))),
        listeners: RefCell::new(HashMap::new()),
        stopping: Cell::new(false),
        handed_over: Cell::new(0),
        to_control: spec.to_control,
        access_log: OnceCell::new(),
    });
    let wake = match monoio::net::UnixStream::from_std(spec.wake) {
        Ok(w) => w,
        Err(e) => {
            let _ = worker.to_control.send(FromWorker::StartFailed {
                worker: worker.id,
                error: format!("cannot adopt the wake-up socket: {e}"),
            });
            return;
        }
    };
    let _ = worker.to_control.send(FromWorker::Started {
        worker: worker.id,
        core,
    });
    monoio::spawn(snapshots(worker.clone()));
    if let Some(budget) = spec.runtime.busy_poll {
        monoio::spawn(busy::spin(worker.clone(), budget));
    }
    inbox::run(worker, spec.inbox, wake).await;
}

/// Sends metrics to the control thread every [`SNAPSHOT_EVERY`]; forgets the metrics of
/// routes that are gone and hold no session; trims the pools, then hands the memory the
/// worker freed back to the OS ([`trim`]).
async fn snapshots(worker: Rc<Worker>) {
    let mut release = trim::Release::default();
    while !worker.stopping.get() {
        monoio::time::sleep(SNAPSHOT_EVERY).await;
        let table = worker.table.borrow().clone();
        worker.metrics.prune(|name| table.has(name));
        worker.send_snapshot();
        worker.pools.trim();
        worker.sessions.shrink_when_empty();
        worker.sources.shrink_when_empty();
        release.tick(worker.sessions.is_empty());
    }
}

impl Worker {
    /// True when this worker holds its share of `runtime.max_connections`: a new connection
    /// is reset at accept.
    #[inline]
    pub fn at_capacity(&self) -> bool {
        self.max_sessions
            .is_some_and(|max| self.sessions.len() >= max)
    }

    /// Offers an access log line to the writer's queue; never waits. A full queue (or none)
    /// drops it and counts it on `dropped` (the route's `access_log_dropped`).
    #[inline]
    pub fn log(&self, record: Record, dropped: &Cell<u64>) {
        let queued = self
            .access_log
            .get()
            .is_some_and(|q| q.try_send(record).is_ok());
        if !queued {
            bump(dropped, 1);
        }
    }

    /// Starts the accept loop of a listener handed over by the control thread.
    fn listen(self: &Rc<Self>, addr: SocketAddr, listener: TcpListener) {
        let canceller = Canceller::new();
        let retire = Rc::new(accept::Retire::default());
        let handle = ListenerHandle {
            fd: listener.as_raw_fd(),
            canceller,
            retire: retire.clone(),
        };
        monoio::spawn(accept::run(
            self.clone(),
            listener,
            addr,
            handle.canceller.handle(),
            retire,
        ));
        self.listeners.borrow_mut().insert(addr, handle);
    }

    /// Retires the listener of `addr` (see `accept.rs`): no new connections from now on,
    /// those under way and queued are served by `route` for [`accept::HANDSHAKE_GRACE`],
    /// then it closes. Returns what to wait on.
    fn retire(&self, addr: &SocketAddr, door: Option<Rc<Door>>) -> Option<Rc<accept::Retire>> {
        let h = self.listeners.borrow_mut().remove(addr)?;
        if h.retire.is_done() {
            // Its accept loop already ended and closed the fd (which may belong to another
            // socket by now): nothing to do.
            return None;
        }
        if let Err(e) = crate::net::sys::drop_new_connections(h.fd) {
            // Without the filter a connection may still land between the last drain and the
            // close; it is counted then.
            tracing::warn!(worker = self.id, %addr, error = %e, "cannot stop new connections before closing the listener");
        }
        h.retire.request(door);
        let canceller = h.canceller;
        monoio::spawn(async move {
            monoio::time::sleep(accept::HANDSHAKE_GRACE).await;
            canceller.cancel();
        });
        Some(h.retire)
    }

    /// An accept loop that ended removes its own entry (if it is still its own).
    fn forget_listener(&self, addr: &SocketAddr, retire: &Rc<accept::Retire>) {
        let mut map = self.listeners.borrow_mut();
        if map.get(addr).is_some_and(|h| Rc::ptr_eq(&h.retire, retire)) {
            map.remove(addr);
        }
    }

    fn send_snapshot(&self) {
        self.metrics
            .set_pipe_resizes_refused(self.pools.pipes.refused());
        let _ = self
            .to_control
            .send(FromWorker::Snapshot(self.metrics.snapshot(self.id)));
    }
}
