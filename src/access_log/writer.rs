//! Control side: the access log's writer thread, and the control thread's handle on it
//! ([`AccessLog`]: tags, files, start, reopen, stop). See the module above for the design.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{LogTag, Queue, Record, RouteLog, format};
use crate::config::{LogFormat, LogPath};
use crate::control::messages::RouteSpec;

/// How often the writer looks at the queues while lines flow, and once idle.
const POLL: Duration = Duration::from_millis(10);
const POLL_IDLE: Duration = Duration::from_millis(100);
/// Rounds without a line before the writer polls at [`POLL_IDLE`] (one second).
const IDLE_ROUNDS: u32 = 100;
/// A file that failed is tried again after this long (lines meanwhile are lost, and said so).
const RETRY: Duration = Duration::from_secs(1);
/// How long a stop waits for the writer to write what is queued.
const STOP_WAIT: Duration = Duration::from_secs(2);
/// Per file buffer.
const BUFFER: usize = 64 * 1024;

/// Control thread → writer.
enum Command {
    /// A new tag: lines of `route` (`None`: refused before any route) to file `sink`.
    Target {
        tag: LogTag,
        route: Option<String>,
        sink: usize,
        format: LogFormat,
    },
    /// A new file, by index.
    Sink { id: usize, path: LogPath },
    /// The files routes use now: the others are closed.
    Live(Vec<usize>),
    /// SIGUSR1: close every file; each is opened again at its next line.
    Reopen,
    /// Write what is queued, flush, end.
    Stop,
}

/// The control thread's handle: the tags and files given out, and the writer once started.
pub struct AccessLog {
    capacity: usize,
    workers: usize,
    tags: HashMap<(Option<String>, usize, LogFormat), LogTag>,
    sinks: HashMap<LogPath, usize>,
    writer: Option<Writer>,
    /// Set when the writer thread could not start (said once; every line is then dropped).
    failed: bool,
}

struct Writer {
    tx: Sender<Command>,
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl AccessLog {
    /// A handle for `workers` workers whose queues will hold `capacity` records each. Nothing
    /// runs until a route logs.
    pub fn new(workers: usize, capacity: usize) -> AccessLog {
        AccessLog {
            capacity: capacity.max(1),
            workers,
            tags: HashMap::new(),
            sinks: HashMap::new(),
            writer: None,
            failed: false,
        }
    }

    /// Gives every spec whose route logs its tags (new ones are told to the writer before
    /// this returns, so before any worker can use them), and tells the writer which files
    /// are in use. Starts the writer the first time a route logs: the workers' queues are
    /// returned then, to be handed to the workers before the generation that uses them.
    pub fn tag(&mut self, specs: &mut [RouteSpec]) -> Option<Vec<Queue>> {
        let mut queues = None;
        if self.writer.is_none() && !self.failed && specs.iter().any(|s| s.cfg.access_log.is_some())
        {
            queues = self.start();
        }
        let mut live = Vec::new();
        for spec in specs.iter_mut() {
            let Some(cfg) = spec.cfg.access_log.clone() else {
                spec.log = None;
                continue;
            };
            let sink = self.sink(&cfg.path);
            live.push(sink);
            spec.log = Some(RouteLog {
                route: self.target(Some(&spec.cfg.name), sink, cfg.format),
                unrouted: self.target(None, sink, cfg.format),
            });
        }
        if self.writer.is_some() {
            live.sort_unstable();
            live.dedup();
            self.send(Command::Live(live));
        }
        queues
    }

    /// SIGUSR1: the files are closed now and opened again at their next line.
    pub fn reopen(&self) {
        if self.writer.is_some() {
            tracing::debug!("SIGUSR1: reopening access log files");
            self.send(Command::Reopen);
        }
    }

    /// Writes what the workers queued (call after they stopped), flushes, and ends the
    /// writer; waits at most [`STOP_WAIT`] (a writer stuck on a disk is left behind).
    pub fn stop(&mut self) {
        let Some(mut w) = self.writer.take() else {
            return;
        };
        let _ = w.tx.send(Command::Stop);
        match w.done.recv_timeout(STOP_WAIT) {
            Ok(()) => {
                if let Some(t) = w.thread.take() {
                    let _ = t.join();
                }
            }
            Err(_) => tracing::warn!(
                "the access log writer did not finish in time (a file that does not take writes?); lines still queued are lost"
            ),
        }
    }

    fn start(&mut self) -> Option<Vec<Queue>> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let (senders, receivers): (Vec<Queue>, Vec<Receiver<Record>>) = (0..self.workers)
            .map(|_| crossbeam_channel::bounded(self.capacity))
            .unzip();
        let spawned = std::thread::Builder::new()
            .name("ringway-log".into())
            .spawn(move || {
                run(rx, receivers);
                let _ = done_tx.send(());
            });
        match spawned {
            Ok(thread) => {
                self.writer = Some(Writer {
                    tx,
                    done,
                    thread: Some(thread),
                });
                // Files given out before the start (none today) are told again.
                for (path, id) in &self.sinks {
                    self.send(Command::Sink {
                        id: *id,
                        path: path.clone(),
                    });
                }
                Some(senders)
            }
            Err(e) => {
                self.failed = true;
                tracing::error!(error = %e, "cannot start the access log writer; access log lines are dropped (and counted)");
                None
            }
        }
    }

    fn send(&self, c: Command) {
        if let Some(w) = &self.writer {
            let _ = w.tx.send(c);
        }
    }

    fn sink(&mut self, path: &LogPath) -> usize {
        if let Some(id) = self.sinks.get(path) {
            return *id;
        }
        let id = self.sinks.len();
        self.sinks.insert(path.clone(), id);
        self.send(Command::Sink {
            id,
            path: path.clone(),
        });
        id
    }

    fn target(&mut self, route: Option<&str>, sink: usize, format: LogFormat) -> LogTag {
        let key = (route.map(str::to_string), sink, format);
        if let Some(t) = self.tags.get(&key) {
            return *t;
        }
        let tag = LogTag(u32::try_from(self.tags.len()).unwrap_or(u32::MAX));
        self.tags.insert(key, tag);
        self.send(Command::Target {
            tag,
            route: route.map(str::to_string),
            sink,
            format,
        });
        tag
    }
}

/// Where one tag's lines go.
struct Target {
    route: Option<String>,
    sink: usize,
    format: LogFormat,
}

/// One file (or stdout), opened at its first line after a start, a reopen or a failure.
struct Sink {
    path: LogPath,
    out: Option<BufWriter<Box<dyn Write + Send>>>,
    /// Wrote since the last flush.
    dirty: bool,
    /// After a failure: not before then.
    retry_at: Option<Instant>,
    /// Lines lost since the last failure was logged.
    lost: u64,
}

impl Sink {
    fn new(path: LogPath) -> Sink {
        Sink {
            path,
            out: None,
            dirty: false,
            retry_at: None,
            lost: 0,
        }
    }

    fn open(path: &LogPath) -> io::Result<Box<dyn Write + Send>> {
        let out: Box<dyn Write + Send> = match path {
            LogPath::Stdout => Box::new(io::stdout()),
            LogPath::File(p) => Box::new(open_append(p)?),
        };
        Ok(out)
    }

    /// The open writer, opening it if due.
    fn writer(&mut self) -> Option<&mut BufWriter<Box<dyn Write + Send>>> {
        if self.out.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return None;
            }
            match Self::open(&self.path) {
                Ok(f) => {
                    if self.retry_at.take().is_some() {
                        tracing::info!(path = %self.path.as_config(), lost = self.lost, "access log writable again");
                        self.lost = 0;
                    }
                    self.out = Some(BufWriter::with_capacity(BUFFER, f));
                }
                Err(e) => {
                    self.failed(&e);
                    return None;
                }
            }
        }
        self.out.as_mut()
    }

    fn failed(&mut self, e: &io::Error) {
        if self.retry_at.is_none() {
            tracing::warn!(path = %self.path.as_config(), error = %e, "cannot write the access log; lines are lost until it works again");
        }
        // The buffer's bytes go with the writer (a failed flush would fail again).
        if let Some(out) = self.out.take() {
            let (_, _) = out.into_parts();
        }
        self.retry_at = Some(Instant::now() + RETRY);
        self.dirty = false;
    }

    fn write(&mut self, target: &Target, r: &Record) {
        let route = target.route.as_deref();
        let Some(w) = self.writer() else {
            self.lost += 1;
            return;
        };
        let res = match target.format {
            LogFormat::Text => format::text(w, route, r),
            LogFormat::Json => format::json(w, route, r),
        };
        match res {
            Ok(()) => self.dirty = true,
            Err(e) => {
                self.lost += 1;
                self.failed(&e);
            }
        }
    }

    fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if let Some(Err(e)) = self.out.as_mut().map(|w| w.flush()) {
            self.failed(&e);
        }
    }

    /// Flushes and closes (opened again at the next line).
    fn close(&mut self) {
        self.flush();
        self.out = None;
    }
}

/// Opens `path` for appending, creating it (mode 0640) when missing.
fn open_append(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

/// What the writer thread holds.
struct State {
    targets: Vec<Option<Target>>,
    sinks: Vec<Option<Sink>>,
}

impl State {
    /// Applies a command; true for `Stop`.
    fn apply(&mut self, c: Command) -> bool {
        match c {
            Command::Target {
                tag,
                route,
                sink,
                format,
            } => {
                let i = tag.0 as usize;
                if self.targets.len() <= i {
                    self.targets.resize_with(i + 1, || None);
                }
                self.targets[i] = Some(Target {
                    route,
                    sink,
                    format,
                });
            }
            Command::Sink { id, path } => {
                if self.sinks.len() <= id {
                    self.sinks.resize_with(id + 1, || None);
                }
                self.sinks[id] = Some(Sink::new(path));
            }
            Command::Live(ids) => {
                for (id, s) in self.sinks.iter_mut().enumerate() {
                    if let Some(s) = s.as_mut().filter(|_| !ids.contains(&id)) {
                        s.close();
                    }
                }
            }
            Command::Reopen => {
                self.sinks.iter_mut().flatten().for_each(Sink::close);
                tracing::info!("access log files reopened");
            }
            Command::Stop => return true,
        }
        false
    }

    /// Writes one record; false when its tag is not known (yet).
    fn write(&mut self, r: &Record) -> bool {
        let Some(Some(t)) = self.targets.get(r.tag.0 as usize) else {
            return false;
        };
        if let Some(Some(s)) = self.sinks.get_mut(t.sink) {
            s.write(t, r);
        }
        true
    }
}

/// The writer thread: commands, then each queue (at most a queue's length per round, so a
/// busy worker cannot starve the flush), then a flush of the files written.
fn run(rx: Receiver<Command>, queues: Vec<Receiver<Record>>) {
    let mut st = State {
        targets: Vec::new(),
        sinks: Vec::new(),
    };
    let mut idle = 0u32;
    loop {
        let wait = if idle >= IDLE_ROUNDS { POLL_IDLE } else { POLL };
        let mut stop = match rx.recv_timeout(wait) {
            Ok(c) => st.apply(c),
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        while let Ok(c) = rx.try_recv() {
            stop |= st.apply(c);
        }
        let mut lines = 0usize;
        for q in &queues {
            let bound = q.capacity().unwrap_or(usize::MAX);
            for r in q.try_iter().take(bound) {
                lines += 1;
                if !st.write(&r) {
                    // Its tag was sent before the generation that uses it: it is in the
                    // command queue by now.
                    while let Ok(c) = rx.try_recv() {
                        stop |= st.apply(c);
                    }
                    st.write(&r);
                }
            }
        }
        st.sinks.iter_mut().flatten().for_each(Sink::flush);
        idle = if lines > 0 { 0 } else { idle.saturating_add(1) };
        if stop {
            st.sinks.iter_mut().flatten().for_each(Sink::close);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::LogOutcome;
    use crate::config::Config;
    use crate::metrics::local::Outcome;
    use std::time::SystemTime;

    fn specs(toml: &str) -> Vec<RouteSpec> {
        let cfg = Config::parse(toml, "t.toml").unwrap();
        cfg.routes
            .iter()
            .enumerate()
            .map(|(i, r)| RouteSpec::configured(i as u64 + 1, r))
            .collect()
    }

    fn record(tag: LogTag, n: u64) -> Record {
        Record {
            tag,
            outcome: LogOutcome::Ended(Outcome::Clean),
            time: SystemTime::now(),
            client: "127.0.0.1:1000".parse().unwrap(),
            listen: "127.0.0.1:3000".parse().unwrap(),
            backend: None,
            to_backend: n,
            to_client: 0,
            duration_us: 0,
            connect_us: None,
        }
    }

    /// Routes sharing a file share its writer; tags are stable across generations; the
    /// writer writes what was queued before a stop; a reopen after a rename writes a new file.
    #[test]
    fn tags_files_reopen_and_stop() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        let toml = format!(
            "[[route]]\nname = \"web\"\nlisten = [\"127.0.0.1:3000\"]\nbackends = [\"127.0.0.1:8080\"]\naccess_log = \"{0}\"\n\
             [[route]]\nname = \"api\"\nlisten = [\"127.0.0.1:3001\"]\nbackends = [\"127.0.0.1:8080\"]\naccess_log = \"{0}\"\n\
             [[route]]\nname = \"quiet\"\nlisten = [\"127.0.0.1:3002\"]\nbackends = [\"127.0.0.1:8080\"]\n",
            a.display()
        );
        let mut log = AccessLog::new(2, 4);
        let mut s = specs(&toml);
        let queues = log
            .tag(&mut s)
            .expect("the writer starts with the first logging route");
        assert_eq!(queues.len(), 2);
        let (web, api) = (s[0].log.unwrap(), s[1].log.unwrap());
        assert_ne!(web.route, api.route);
        assert_eq!(
            web.unrouted, api.unrouted,
            "one file, one format: one unrouted tag"
        );
        assert!(s[2].log.is_none());
        let mut again = specs(&toml);
        assert!(log.tag(&mut again).is_none(), "started once");
        assert_eq!(again[0].log, s[0].log);

        queues[0].try_send(record(web.route, 1)).unwrap();
        queues[1].try_send(record(api.route, 2)).unwrap();
        let wait_lines = |path: &std::path::Path, n: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                if text.lines().count() >= n || Instant::now() > deadline {
                    return text;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        let text = wait_lines(&a, 2);
        assert!(text.lines().any(|l| l.contains(" web ")), "{text}");
        assert!(text.lines().any(|l| l.contains(" api ")), "{text}");

        let rotated = dir.path().join("a.log.1");
        std::fs::rename(&a, &rotated).unwrap();
        log.reopen();
        // The writer has closed the renamed file once no fd of this process points to it.
        let open_on = |path: &std::path::Path| {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .any(|target| target == path)
        };
        let real = std::fs::canonicalize(&rotated).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while open_on(&real) {
            assert!(Instant::now() < deadline, "the renamed file stays open");
            std::thread::sleep(Duration::from_millis(5));
        }
        queues[0].try_send(record(web.route, 3)).unwrap();
        let text = wait_lines(&a, 1);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap().lines().count(),
            2
        );

        // A full queue refuses at once (the worker counts the drop) instead of waiting.
        let queued = (0..100)
            .filter(|i| queues[1].try_send(record(api.route, *i)).is_ok())
            .count();
        log.stop();
        let lines = std::fs::read_to_string(&a).unwrap().lines().count();
        let sent = 1 + queued;
        assert_eq!(lines, sent, "everything queued before the stop is written");
    }
}
