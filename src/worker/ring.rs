//! Control of a worker's start-up (cold): builds the worker's monoio runtime on io_uring with the
//! setup flags that make task work cheap, falling back flag by flag on older kernels.
//!
//! Why the flags matter: a completion for a socket op is finished by "task work" that the
//! kernel queues on the ring's thread. Without flags, a packet arriving from another CPU
//! queues it under a spinlock and interrupts the worker (a reschedule IPI) to run it; under
//! load that lock and those interrupts cost ~17 % of a worker's CPU (perf, scenario A).
//! `IORING_SETUP_DEFER_TASKRUN` (Linux 6.1, needs `SINGLE_ISSUER`) queues it on a lock-free
//! list and runs it only when the worker waits for completions, in one batch, with no
//! interrupt; `COOP_TASKRUN` (5.19) at least drops the interrupt. A worker is the only thread
//! that ever submits to its ring, which is what `SINGLE_ISSUER` promises.

use monoio::time::TimeDriver;
use monoio::{IoUringDriver, Runtime, RuntimeBuilder};

/// io_uring setup variants, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskRun {
    /// DEFER_TASKRUN + SINGLE_ISSUER (Linux 6.1+).
    Deferred,
    /// COOP_TASKRUN + TASKRUN_FLAG (Linux 5.19+).
    Cooperative,
    /// No setup flags (any kernel with io_uring).
    Plain,
}

impl TaskRun {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskRun::Deferred => "deferred",
            TaskRun::Cooperative => "cooperative",
            TaskRun::Plain => "plain",
        }
    }

    fn builder(self) -> io_uring::Builder {
        let mut b = io_uring::IoUring::builder();
        match self {
            TaskRun::Deferred => {
                b.setup_single_issuer().setup_defer_taskrun();
            }
            TaskRun::Cooperative => {
                b.setup_coop_taskrun().setup_taskrun_flag();
            }
            TaskRun::Plain => {}
        }
        b
    }
}

/// Builds an io_uring runtime with `entries` submission entries and a timer, using the best
/// setup the kernel accepts. The error is the one of the plain setup: when even that fails,
/// io_uring itself is unavailable.
///
/// `busy_poll`: the worker will spin on the ring (`worker::busy`), which only sees completions
/// if task work runs on any kernel entry: `DEFER_TASKRUN` posts them only for a waiting
/// `io_uring_enter`, so it is left out.
pub fn build(
    entries: u32,
    busy_poll: bool,
) -> std::io::Result<(Runtime<TimeDriver<IoUringDriver>>, TaskRun)> {
    let mut last = None;
    let modes: &[TaskRun] = if busy_poll {
        &[TaskRun::Cooperative, TaskRun::Plain]
    } else {
        &[TaskRun::Deferred, TaskRun::Cooperative, TaskRun::Plain]
    };
    for &mode in modes {
        match RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(entries)
            .uring_builder(mode.builder())
            .enable_timer()
            .build()
        {
            Ok(rt) => return Ok((rt, mode)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no io_uring setup was tried")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_runs_a_timer_on_this_kernel() {
        let (mut rt, mode) = match build(256, false) {
            Ok(x) => x,
            // io_uring refused here (a sandbox): nothing of ours to test.
            Err(e) => return eprintln!("io_uring unavailable: {e}"),
        };
        let slept = rt.block_on(async {
            let t = std::time::Instant::now();
            monoio::time::sleep(std::time::Duration::from_millis(5)).await;
            t.elapsed()
        });
        assert!(slept >= std::time::Duration::from_millis(5), "{mode:?}");
    }
}
