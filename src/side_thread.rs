//! Control side: a tokio current-thread runtime on a thread of its own, fed over an unbounded
//! channel, for the control thread's slow helpers (health checks, name resolution): never a
//! worker, never the control thread's message loop. Dropping the handle closes the channel,
//! which ends the thread's loop (its tasks are dropped with the runtime), and joins it.

use std::future::Future;
use std::thread::JoinHandle;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// The control thread's handle on one such thread.
pub struct SideThread<T> {
    tx: UnboundedSender<T>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> SideThread<T> {
    /// Starts thread `name`, which runs `run` (given the channel's receiving end) to its end.
    pub fn spawn<F, Fut>(name: &str, run: F) -> std::io::Result<SideThread<T>>
    where
        F: FnOnce(UnboundedReceiver<T>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (tx, rx) = unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || runtime.block_on(run(rx)))?;
        Ok(SideThread {
            tx,
            thread: Some(thread),
        })
    }

    pub fn send(&self, message: T) {
        // The thread ends only when this handle is dropped.
        let _ = self.tx.send(message);
    }
}

impl<T> Drop for SideThread<T> {
    fn drop(&mut self) {
        let (tx, _) = unbounded_channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_and_dropping_the_handle_ends_the_thread() {
        let (seen_tx, seen) = std::sync::mpsc::channel();
        let t = SideThread::spawn("ringway-test", move |mut rx| async move {
            while let Some(n) = rx.recv().await {
                let _ = seen_tx.send(n);
            }
            let _ = seen_tx.send(0u32);
        })
        .unwrap();
        t.send(7);
        assert_eq!(seen.recv().unwrap(), 7);
        drop(t); // joins: the loop saw the channel close
        assert_eq!(seen.try_recv(), Ok(0));
    }
}
