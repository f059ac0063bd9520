//! Hot side: per-worker pools of relay buffers and splice pipes, and the worker's copy
//! buffer.
//!
//! Each worker owns its pools (no locks). A pool hands out an object and takes it back when
//! the relay is done with it; it keeps at most `max_idle` spares so a burst does not pin
//! memory or file descriptors forever. Nothing here is held by an idle connection: the copy
//! buffer is used inside one synchronous step, a backlog buffer only while a peer cannot take
//! bytes, a pipe only while bytes are in it.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::net::sys;

/// Everything a worker's relays borrow.
#[derive(Debug)]
pub struct Pools {
    /// Backlogs: bytes read that the other side could not take yet.
    pub buffers: BufferPool,
    pub pipes: PipePool,
    /// The copy buffer: a direction reads into it and sends from it in one step with no
    /// await in between, so one buffer serves every connection of the worker.
    pub scratch: RefCell<Box<[u8]>>,
    /// Relay steps that moved bytes (watched by the busy poller, when there is one).
    pub pulse: super::pulse::Pulse,
}

impl Pools {
    pub fn new(buffer_size: usize, pipe_size: usize, max_idle: usize) -> Self {
        Pools {
            buffers: BufferPool::new(buffer_size, max_idle),
            pipes: PipePool::new(pipe_size, max_idle),
            scratch: RefCell::new(vec![0; buffer_size].into_boxed_slice()),
            pulse: super::pulse::Pulse::default(),
        }
    }

    /// Frees spares unused since the last call (about once a second).
    pub fn trim(&self) {
        self.buffers.trim();
        self.pipes.trim();
    }
}

/// Reusable relay buffers of one fixed capacity.
#[derive(Debug)]
pub struct BufferPool {
    size: usize,
    max_idle: usize,
    free: RefCell<Vec<Vec<u8>>>,
    /// Fewest spares held since the last trim: that many were not needed.
    low_water: Cell<usize>,
}

impl BufferPool {
    pub fn new(size: usize, max_idle: usize) -> Self {
        BufferPool {
            size,
            max_idle,
            free: RefCell::new(Vec::new()),
            low_water: Cell::new(0),
        }
    }

    /// An empty buffer with `size` bytes of capacity.
    pub fn take(&self) -> Vec<u8> {
        let mut free = self.free.borrow_mut();
        let buf = free.pop();
        self.low_water.set(self.low_water.get().min(free.len()));
        buf.unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// Frees the spares that went unused since the last call (called about once a second),
    /// so memory returns to the baseline when load goes away.
    pub fn trim(&self) {
        let mut free = self.free.borrow_mut();
        let keep = free.len() - self.low_water.get().min(free.len());
        free.truncate(keep);
        self.low_water.set(free.len());
    }

    /// Returns a buffer; kept if the pool has room and the buffer is the pool's size.
    pub fn put(&self, mut buf: Vec<u8>) {
        let mut free = self.free.borrow_mut();
        if free.len() < self.max_idle && buf.capacity() == self.size {
            buf.clear();
            free.push(buf);
        }
    }
}

/// A non-blocking pipe used as the in-kernel buffer of one splice direction.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
    /// Bytes spliced in and not yet spliced out.
    pending: usize,
}

impl Pipe {
    fn new(size: usize) -> io::Result<(Pipe, bool)> {
        let (read, write) = sys::pipe()?;
        let got = sys::set_pipe_size(&write, size);
        let pipe = Pipe {
            read,
            write,
            capacity: got.capacity,
            pending: 0,
        };
        Ok((pipe, got.refused))
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Splices up to the pipe's free space from socket `from` into the pipe.
    #[inline]
    pub fn fill_from(&mut self, from: RawFd) -> io::Result<usize> {
        let n = sys::splice(from, self.write.as_raw_fd(), self.capacity - self.pending)?;
        self.pending += n;
        Ok(n)
    }

    /// Splices pending bytes from the pipe into socket `to`.
    #[inline]
    pub fn drain_to(&mut self, to: RawFd) -> io::Result<usize> {
        let n = sys::splice(self.read.as_raw_fd(), to, self.pending)?;
        self.pending -= n.min(self.pending);
        Ok(n)
    }
}

/// Pipes, created on demand and kept for reuse while empty.
#[derive(Debug)]
pub struct PipePool {
    size: usize,
    max_idle: usize,
    free: RefCell<Vec<Pipe>>,
    created: Cell<u64>,
    /// Pipes whose size the kernel refused (see `net::pipe_budget`).
    refused: Cell<u64>,
    /// Fewest spares held since the last trim: that many were not needed.
    low_water: Cell<usize>,
}

impl PipePool {
    pub fn new(size: usize, max_idle: usize) -> Self {
        PipePool {
            size,
            max_idle,
            free: RefCell::new(Vec::new()),
            created: Cell::new(0),
            refused: Cell::new(0),
            low_water: Cell::new(0),
        }
    }

    /// An empty pipe.
    pub fn take(&self) -> io::Result<Pipe> {
        let mut free = self.free.borrow_mut();
        let pipe = free.pop();
        self.low_water.set(self.low_water.get().min(free.len()));
        if let Some(p) = pipe {
            return Ok(p);
        }
        self.created.set(self.created.get() + 1);
        let (pipe, refused) = Pipe::new(self.size)?;
        if refused {
            self.refused.set(self.refused.get() + 1);
        }
        Ok(pipe)
    }

    /// Closes the spares that went unused since the last call (called about once a second),
    /// so pipes (2 fds and up to `size` of kernel memory each) do not outlive a burst.
    pub fn trim(&self) {
        let mut free = self.free.borrow_mut();
        let keep = free.len() - self.low_water.get().min(free.len());
        free.truncate(keep);
        self.low_water.set(free.len());
    }

    /// Returns a pipe. A pipe that still holds bytes is closed, never reused: its bytes
    /// belong to a connection that is gone.
    pub fn put(&self, pipe: Pipe) {
        let mut free = self.free.borrow_mut();
        if pipe.pending == 0 && free.len() < self.max_idle {
            free.push(pipe);
        }
    }

    /// Pipes created since start (for tests and diagnostics).
    pub fn created(&self) -> u64 {
        self.created.get()
    }

    /// Pipes created whose size the kernel refused, since start.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }

    /// Spare pipes held now.
    pub fn idle(&self) -> usize {
        self.free.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_bounded() {
        let pool = BufferPool::new(1024, 1);
        let mut a = pool.take();
        a.extend_from_slice(b"abc");
        let b = pool.take();
        let a_ptr = a.as_ptr();
        pool.put(a);
        pool.put(b);
        let again = pool.take();
        assert_eq!(again.as_ptr(), a_ptr);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), 1024);
    }

    #[test]
    fn pipes_with_pending_bytes_are_not_reused() {
        let pool = PipePool::new(65536, 4);
        let p = pool.take().unwrap();
        assert!(p.capacity() >= 4096);
        pool.put(p);
        assert_eq!(pool.idle(), 1);
        let mut p = pool.take().unwrap();
        assert_eq!(pool.created(), 1);
        p.pending = 10;
        pool.put(p);
        assert_eq!(pool.idle(), 0);
    }

    /// A size over `fs.pipe-max-size`, asked without CAP_SYS_RESOURCE, is refused: the
    /// pipe keeps the default size and the refusal is counted (ringway_pipe_resize_refused_total).
    #[test]
    fn refused_pipe_sizes_are_counted() {
        crate::net::sys::drop_resource_caps_for_this_thread().unwrap();
        let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let pool = PipePool::new(max * 2, 4);
        let p = pool.take().unwrap();
        assert!(p.capacity() < max * 2, "capacity {}", p.capacity());
        assert_eq!(pool.refused(), 1);
        let fits = PipePool::new(65536, 4);
        fits.take().unwrap();
        assert_eq!(fits.refused(), 0);
    }

    #[test]
    fn trim_releases_spares_unused_since_the_last_trim() {
        let pool = PipePool::new(65536, 8);
        let (a, b) = (pool.take().unwrap(), pool.take().unwrap());
        pool.put(a);
        pool.put(b);
        pool.trim(); // low water was 0 before the puts: nothing was idle all along
        assert_eq!(pool.idle(), 2);
        let c = pool.take().unwrap(); // one spare used, one idle the whole interval
        pool.put(c);
        pool.trim();
        assert_eq!(pool.idle(), 1);
        pool.trim(); // a full interval without use
        assert_eq!(pool.idle(), 0);
    }
}
