//! Control side: `runtime.watch_config = true` — reload by itself when the configuration file
//! changes, as `ringway reload` would.
//!
//! `notify` watches the file's directory, not the file: editors save by renaming a new file
//! over the old one, and configuration managers swap a symlink (Kubernetes' `..data`), both
//! of which a watch on the file itself loses. Each event reaches the control thread, which
//! reloads once [`QUIET`] has passed without another (debounce), and compares the text with
//! the one it read last, so a touch, an editor's swap file or another file in the directory
//! is no reload. A half-written file fails validation like any bad file (the running
//! configuration stays), and the write that completes it triggers the next reload. notify's
//! own thread is the only one this adds.

use std::path::Path;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::Control;

/// Quiet time after the last change before reloading.
pub(super) const QUIET: Duration = Duration::from_millis(300);

/// A running watcher; dropping it stops watching.
pub(super) struct ConfigWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl ConfigWatcher {
    /// Watches `file`'s directory; each event sends `()` to `events`.
    pub(super) fn spawn(
        file: &Path,
        events: crossbeam_channel::Sender<()>,
    ) -> notify::Result<ConfigWatcher> {
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.is_ok() {
                let _ = events.try_send(());
            }
        })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(ConfigWatcher { _watcher: watcher })
    }
}

impl Control {
    /// Starts or stops the watcher to match `runtime.watch_config`.
    pub(super) fn sync_watcher(&mut self) {
        let want = self.config.runtime.watch_config;
        match (&self.source, want, self.watcher.is_some()) {
            (Some(path), true, false) => match ConfigWatcher::spawn(path, self.watch_tx.clone()) {
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
                self.watch_due = None;
                tracing::info!("no longer watching the configuration file");
            }
            _ => {}
        }
    }
}
