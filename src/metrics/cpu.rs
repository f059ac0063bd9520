//! Control side (plus one call per worker at start): a worker thread's own CPU time.
//!
//! A worker learns its Linux thread id once, when its metrics are created on its thread
//! ([`current_tid`]), and sends it with every snapshot. The control thread reads that
//! thread's `utime + stime` from `/proc/self/task/TID/stat` when the snapshot arrives
//! ([`thread_cpu_seconds`]), so the hot path measures nothing and makes no syscall for it.
//! Reading on arrival (not at scrape time) also means a thread that has ended is never read
//! again, so a reused tid cannot be mistaken for a worker.

use std::io;

/// `USER_HZ`, the unit of the tick counts in `/proc/*/stat`. The kernel converts its own
/// `HZ` into it; it is 100 on every architecture ringway builds for (x86_64, aarch64).
/// (`sysconf(_SC_CLK_TCK)` reports the same constant; calling it would need `unsafe`.)
const USER_HZ: f64 = 100.0;

/// The calling thread's Linux thread id, from the `/proc/thread-self` link
/// (`PID/task/TID`, Linux 3.17+): no raw syscall needed. `None` without `/proc`.
pub fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// CPU time (user + system) of thread `tid` of this process so far, in seconds.
pub fn thread_cpu_seconds(tid: u32) -> io::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))?;
    stat_ticks(&text)
        .map(|ticks| ticks as f64 / USER_HZ)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected stat format"))
}

/// `utime + stime` (fields 14 and 15, clock ticks) of a `/proc/.../stat` line.
fn stat_ticks(stat: &str) -> Option<u64> {
    // Field 2 (comm) is in parentheses and may itself hold spaces and ')': count the fields
    // after the last ')'. The first of those is field 3 (state).
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_ascii_whitespace();
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime.saturating_add(stime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn stat_fields_after_an_odd_comm() {
        let line = "4242 (ringway-w0) x) R 1 2 3 4 5 6 7 8 9 10 123 45 0 0 20 0 1 0 99 0 0";
        assert_eq!(stat_ticks(line), Some(168));
        assert_eq!(stat_ticks("4242 (short) R 1 2"), None);
        assert_eq!(stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn this_threads_cpu_time_is_read_and_grows() {
        let tid = current_tid().expect("/proc/thread-self");
        let start = thread_cpu_seconds(tid).expect("read own stat");
        // Burn CPU until a tick is counted (bounded, so a broken reading fails the test
        // instead of hanging it).
        let until = Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        loop {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
            }
            let now = thread_cpu_seconds(tid).expect("read own stat");
            assert!(now >= start, "CPU time went down: {start} -> {now}");
            if now > start {
                break;
            }
            assert!(Instant::now() < until, "no CPU tick counted in 20 s ({x})");
        }
        // Another thread's id is not this one's.
        let other = std::thread::spawn(current_tid).join().unwrap();
        assert_ne!(other, Some(tid));
    }
}
