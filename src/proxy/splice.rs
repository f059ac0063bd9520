//! Hot side: the zero-copy relay: socket → pipe → socket with splice(2).
//!
//! io_uring's own splice op cannot wait for data without parking a kernel io-wq thread per
//! pending splice (2 per idle connection). Instead each direction waits for readiness
//! through the ring (a poll op, no thread), then splices without blocking. A pipe is taken
//! from the worker's pool only while bytes are in flight, so idle connections hold none.
//! Readiness is asked with `relaxed = false`, which the epoll driver needs for I/O done
//! outside monoio (on io_uring it is always a poll op).
//! Semantics (half-close, resets) are those of [`super::relay`].

use std::cell::Cell;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use super::pool::PipePool;
use super::relay::{Fail, RelayEnd, Side, Tally, arm_reset, both, with_idle_timeout};
use crate::net::sys;

/// The splice relay. Both streams must be non-blocking; they are closed when it returns.
pub async fn spliced(
    client: TcpStream,
    backend: TcpStream,
    pipes: &PipePool,
    tally: &Tally<'_>,
    idle: Option<Duration>,
    activity: &Cell<Instant>,
) -> RelayEnd {
    let relay = pin!(both(
        direction(
            &client,
            &backend,
            pipes,
            Side::Client,
            Side::Backend,
            tally.to_backend,
            tally,
        ),
        direction(
            &backend,
            &client,
            pipes,
            Side::Backend,
            Side::Client,
            tally.to_client,
            tally,
        ),
    ));
    let end = with_idle_timeout(relay, idle, activity).await;
    if matches!(end, RelayEnd::Failed(_)) {
        arm_reset(client.as_raw_fd(), backend.as_raw_fd());
    }
    end
}

async fn direction(
    from: &TcpStream,
    to: &TcpStream,
    pipes: &PipePool,
    from_side: Side,
    to_side: Side,
    counter: &Cell<u64>,
    tally: &Tally<'_>,
) -> Result<(), Fail> {
    let (from_fd, to_fd) = (from.as_raw_fd(), to.as_raw_fd());
    // Try at once: on a new session the client's first bytes are usually already there.
    let mut ready = true;
    loop {
        if !ready {
            from.readable(false)
                .await
                .map_err(|_| Fail::Peer(from_side))?;
        }
        let mut pipe = pipes.take().map_err(|_| Fail::Local)?;
        let n = match pipe.fill_from(from_fd) {
            Ok(0) => {
                pipes.put(pipe);
                let _ = sys::shutdown(to_fd, libc::SHUT_WR);
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                pipes.put(pipe);
                ready = false;
                continue;
            }
            Err(_) => {
                pipes.put(pipe);
                return Err(Fail::Peer(from_side));
            }
        };
        // A full pipe means more is probably waiting: go again before polling.
        ready = n == pipe.capacity();
        tally.moved(counter, n);
        while pipe.pending() > 0 {
            match pipe.drain_to(to_fd) {
                Ok(0) => return Err(Fail::Peer(to_side)),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    to.writable(false).await.map_err(|_| Fail::Peer(to_side))?;
                }
                // The pipe still holds bytes: dropping it closes it (never reused).
                Err(_) => return Err(Fail::Peer(to_side)),
            }
        }
        pipes.put(pipe);
    }
}
