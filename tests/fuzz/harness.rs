//! Runs one target: replays its corpus, then checks generated inputs, for a fixed number of
//! cases (a plain `cargo test`) or until `RINGWAY_FUZZ_SECONDS` have passed.
//!
//! A failure is a panic in the target, a check that took longer than [`SLOW`], or a hang
//! (the watchdog aborts the process after [`HANG`]). proptest shrinks a failing input; the
//! smallest one is written to `<target dir>/tmp/fuzz-crashes/` and named in the panic, ready
//! to be copied into the corpus.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use crate::alloc;
use crate::mutate;

/// Longest one input may take.
pub const SLOW: Duration = Duration::from_secs(1);
/// A check still running after this is a hang: the process stops.
const HANG: Duration = Duration::from_secs(20);
/// Generated cases per target in a plain `cargo test`.
const PLAIN_CASES: u32 = 300;
/// Cases per batch in a timed run (the deadline is checked between batches).
const TIMED_BATCH: u32 = 2_000;

/// One fuzz target.
pub struct Target {
    /// Its name: the test's name and its corpus folder `tests/fuzz/corpus/<name>/`.
    pub name: &'static str,
    /// Byte strings worth inserting (keywords, signatures, separators).
    pub words: &'static [&'static [u8]],
    /// Seeds made by code (besides the corpus files), e.g. encoded headers.
    pub extra_seeds: fn() -> Vec<Vec<u8>>,
    /// Well-formed documents to mix in (the configuration targets), besides bytes.
    pub structured: Option<fn() -> proptest::strategy::BoxedStrategy<Vec<u8>>>,
    /// Checks one input: panics (or returns an error) on a bug; else names the outcome
    /// (`"done"`, `"invalid"`, ...), counted to show how deep the inputs reach.
    pub check: fn(&[u8]) -> Result<&'static str, String>,
}

/// Where failing inputs go.
pub fn crash_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes")
}

/// The corpus files of `name`, sorted, with their paths.
fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// What the watchdog watches: when the current check began (ms since `base`, 0 = idle).
struct Watch {
    base: Instant,
    started_ms: AtomicU64,
    input: Mutex<Vec<u8>>,
    done: AtomicBool,
}

/// Marks a check as running for the watchdog, until dropped (also by a panic).
struct Running<'a>(&'a Watch);

impl<'a> Running<'a> {
    fn new(watch: &'a Watch, started: Instant) -> Self {
        let ms = (started - watch.base).as_millis() as u64 + 1;
        watch.started_ms.store(ms, Ordering::Relaxed);
        Running(watch)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.started_ms.store(0, Ordering::Relaxed);
    }
}

/// Runs `t` and panics on the first failure.
pub fn run(t: &Target) {
    let dir = crash_dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let oom_path = {
        let mut p = dir
            .join(format!("{}-oom.bin", t.name))
            .into_os_string()
            .into_encoded_bytes();
        p.push(0);
        p
    };

    let watch = Arc::new(Watch {
        base: Instant::now(),
        started_ms: AtomicU64::new(0),
        input: Mutex::new(Vec::new()),
        done: AtomicBool::new(false),
    });
    let dog = {
        let watch = Arc::clone(&watch);
        let name = t.name;
        let dir = dir.clone();
        std::thread::spawn(move || watchdog(name, &dir, &watch))
    };

    let outcomes: RefCell<BTreeMap<&'static str, u64>> = RefCell::new(BTreeMap::new());
    let check = |input: &[u8]| -> Result<(), String> {
        if let Ok(mut slot) = watch.input.lock() {
            slot.clear();
            slot.extend_from_slice(input);
        }
        let started = Instant::now();
        let result = {
            let _running = Running::new(&watch, started);
            let _checking = alloc::Checking::new(input, &oom_path);
            (t.check)(input)
        };
        let took = started.elapsed();
        let outcome = result?;
        *outcomes.borrow_mut().entry(outcome).or_default() += 1;
        if took > SLOW {
            return Err(format!(
                "took {} ms (limit {} ms)",
                took.as_millis(),
                SLOW.as_millis()
            ));
        }
        Ok(())
    };

    // (a) The corpus, each file as it is.
    let files = corpus(t.name);
    assert!(
        !files.is_empty(),
        "tests/fuzz/corpus/{} holds no seed",
        t.name
    );
    for (path, bytes) in &files {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(bytes)));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(why)) => panic!("{}: corpus file {}: {why}", t.name, path.display()),
            Err(_) => panic!("{}: corpus file {} panicked", t.name, path.display()),
        }
    }

    // (b) Generated inputs.
    let mut seeds: Vec<Vec<u8>> = files.into_iter().map(|(_, b)| b).collect();
    seeds.extend((t.extra_seeds)());
    let strategy = mutate::inputs(seeds, t.words, t.structured.map(|f| f()));
    let seconds = std::env::var("RINGWAY_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let seed = rng_seed(seconds.is_some());
    println!(
        "fuzz {}: RINGWAY_FUZZ_SEED={seed:016x} {}",
        t.name,
        match seconds {
            Some(s) => format!("for {s} s"),
            None => format!("{PLAIN_CASES} cases"),
        }
    );
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut total = 0u64;
    for batch in 0u64.. {
        let cases = if deadline.is_some() {
            TIMED_BATCH
        } else {
            PLAIN_CASES
        };
        let config = Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 4096,
            // A slow input is slow again at each shrinking step: stop after a minute.
            max_shrink_time: 60_000,
            // The corpus and generated inputs are the whole story; no proptest regressions
            // file is read or written.
            ..Config::default()
        };
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes(seed, batch));
        let mut runner = TestRunner::new_with_rng(config, rng);
        let outcome = runner.run(&strategy, |input| {
            check(&input).map_err(TestCaseError::fail)
        });
        total += u64::from(cases);
        if let Err(e) = outcome {
            watch.done.store(true, Ordering::Relaxed);
            let (why, input) = match e {
                TestError::Fail(why, input) => (why.to_string(), input),
                TestError::Abort(why) => panic!("{}: proptest aborted: {why}", t.name),
            };
            let path = save(&dir, t.name, &input);
            panic!(
                "{}: {why}\n  input ({} bytes) saved to {}\n  to keep it as a regression seed: cp {} tests/fuzz/corpus/{}/",
                t.name,
                input.len(),
                path.display(),
                path.display(),
                t.name
            );
        }
        match deadline {
            Some(d) if Instant::now() < d => continue,
            _ => break,
        }
    }
    watch.done.store(true, Ordering::Relaxed);
    let _ = dog.join();
    println!(
        "fuzz {}: {total} generated inputs passed; outcomes {:?}; heap now {} KiB, peak {} KiB (whole process)",
        t.name,
        outcomes.borrow(),
        alloc::live() / 1024,
        alloc::peak() / 1024
    );
}

/// The run's seed: `RINGWAY_FUZZ_SEED` (hex) when set; else fixed for a plain run (CI is
/// reproducible) and from the clock for a timed one (each run explores new inputs).
fn rng_seed(timed: bool) -> u64 {
    if let Some(s) = std::env::var("RINGWAY_FUZZ_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
    {
        return s;
    }
    if timed {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    } else {
        0x5249_4e47_5741_5900 // "RINGWAY\0"
    }
}

/// The ChaCha key of one batch of a run.
fn seed_bytes(seed: u64, batch: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..8].copy_from_slice(&seed.to_le_bytes());
    out[8..16].copy_from_slice(&batch.to_le_bytes());
    out
}

/// Writes a failing input under a name from its content; returns the path.
fn save(dir: &Path, name: &str, input: &[u8]) -> PathBuf {
    // FNV-1a: a stable name for the same input.
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("{name}-{hash:016x}.bin"));
    if let Err(e) = std::fs::write(&path, input) {
        eprintln!(
            "fuzz {name}: could not save the input to {}: {e}",
            path.display()
        );
    }
    path
}

/// Aborts the process when one check runs past [`HANG`], after saving its input: a hang
/// would otherwise stall the suite without a word.
fn watchdog(name: &str, dir: &Path, watch: &Watch) {
    while !watch.done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let started = watch.started_ms.load(Ordering::Relaxed);
        if started == 0 {
            continue;
        }
        let now = watch.base.elapsed().as_millis() as u64 + 1;
        if now.saturating_sub(started) > HANG.as_millis() as u64 {
            let input = watch.input.lock().map(|v| v.clone()).unwrap_or_default();
            let path = save(dir, name, &input);
            let _ = writeln!(
                std::io::stderr(),
                "fuzz {name}: one input has run for over {} s; saved to {}",
                HANG.as_secs(),
                path.display()
            );
            std::process::abort();
        }
    }
}
