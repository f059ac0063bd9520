//! Control side: `runtime.watch_config = true` — reload by itself when the configuration file
//! changes, as `ringway reload` would.
//!
//! `notify` watches the file's directory, not the file: editors save by renaming a new file
//! over the old one, and configuration managers swap a symlink (Kubernetes' `..data`), both
//! of which a watch on the file itself loses. Events are debounced (a reload only after
//! [`QUIET`] without another), and the control thread compares the text with the one it read
//! last, so a touch, an editor's swap file or another file in the directory is no reload. A
//! half-written file fails validation like any bad file (the running configuration stays),
//! and the write that completes it triggers the next reload.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::{Control, Trigger};

/// Quiet time after the last change before reloading.
const QUIET: Duration = Duration::from_millis(300);

/// A running watcher; dropping it stops watching (its thread ends with it).
pub(super) struct ConfigWatcher {
    _watcher: notify::RecommendedWatcher,
    _thread: JoinHandle<()>,
}

impl ConfigWatcher {
    pub(super) fn spawn(
        file: &Path,
        reload: crossbeam_channel::Sender<Trigger>,
    ) -> notify::Result<ConfigWatcher> {
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(tx)?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        let thread = std::thread::Builder::new()
            .name("ringway-watch".into())
            .spawn(move || debounce(&rx, &reload))
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(ConfigWatcher {
            _watcher: watcher,
            _thread: thread,
        })
    }
}

/// One reload request per burst of events; ends when the watcher is dropped.
fn debounce(
    rx: &mpsc::Receiver<notify::Result<notify::Event>>,
    reload: &crossbeam_channel::Sender<Trigger>,
) {
    while rx.recv().is_ok() {
        loop {
            match rx.recv_timeout(QUIET) {
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        if reload.send(Trigger::Watch).is_err() {
            return;
        }
    }
}

impl Control {
    /// Starts or stops the watcher to match `runtime.watch_config`.
    pub(super) fn sync_watcher(&mut self) {
        let want = self.config.runtime.watch_config;
        match (&self.source, want, self.watcher.is_some()) {
            (Some(path), true, false) => match ConfigWatcher::spawn(path, self.reload_tx.clone()) {
                Ok(w) => {
                    tracing::info!(file = %path.display(), "watching the configuration file; changes reload it");
                    self.watcher = Some(w);
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot watch the configuration file; reload with `ringway reload` or SIGHUP")
                }
            },
            (_, false, true) => {
                self.watcher = None;
                tracing::info!("no longer watching the configuration file");
            }
            _ => {}
        }
    }
}
