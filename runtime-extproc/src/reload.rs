//! The configuration in force, swapped atomically when the config file or a credential file it
//! names changes (including Kubernetes' symlink swap of ConfigMap and Secret volumes). A change
//! is noticed through inotify within milliseconds, with a slow poll as a safety net; a new
//! configuration that does not load leaves the old one serving, and is logged and counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use sha2_free::fingerprint;

use crate::config::{self, LoadError, RuntimeConfig};
use crate::metrics::{Metrics, ReloadLabels};

/// The configuration in force.
pub struct ConfigStore {
    path: PathBuf,
    current: ArcSwap<RuntimeConfig>,
    fingerprint: std::sync::Mutex<u64>,
}

impl ConfigStore {
    /// Loads the configuration at `path`.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let loaded = config::load(path)?;
        let print = fingerprint(&loaded.files);
        Ok(ConfigStore {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(loaded),
            fingerprint: std::sync::Mutex::new(print),
        })
    }

    /// A cheap snapshot of the configuration in force.
    pub fn current(&self) -> Arc<RuntimeConfig> {
        self.current.load_full()
    }

    /// Reloads when any file changed; returns whether a new configuration is in force.
    pub fn reload_if_changed(&self, metrics: &Metrics) -> bool {
        let files = self.current.load().files.clone();
        let print = fingerprint(&files);
        let mut last = self.fingerprint.lock().unwrap_or_else(|p| p.into_inner());
        if print == *last {
            return false;
        }
        match config::load(&self.path) {
            Ok(loaded) => {
                *last = fingerprint(&loaded.files);
                self.current.store(Arc::new(loaded));
                metrics
                    .reloads
                    .get_or_create(&ReloadLabels { result: "success" })
                    .inc();
                tracing::info!(config = %self.path.display(), "configuration reloaded");
                true
            }
            Err(err) => {
                // Do not retry the same broken content on every tick.
                *last = print;
                metrics
                    .reloads
                    .get_or_create(&ReloadLabels { result: "failure" })
                    .inc();
                tracing::error!(config = %self.path.display(), error = %err, "new configuration rejected; the previous one keeps serving");
                false
            }
        }
    }

    /// Folders whose changes can affect the configuration.
    fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .current
            .load()
            .files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .map(|d| {
                if d.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    d
                }
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

/// Watches the configuration's files until the process ends.
pub async fn watch(store: Arc<ConfigStore>, metrics: Arc<Metrics>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = match notify::recommended_watcher(
        move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = tx.send(());
            }
        },
    ) {
        Ok(watcher) => Some(watcher),
        Err(err) => {
            tracing::warn!(error = %err, "file notifications unavailable; polling the configuration every 5 s");
            None
        }
    };
    let mut watched: Vec<PathBuf> = Vec::new();
    let mut rewatch = |watcher: &mut Option<notify::RecommendedWatcher>, store: &ConfigStore| {
        let Some(watcher) = watcher.as_mut() else {
            return;
        };
        let dirs = store.watched_dirs();
        if dirs == watched {
            return;
        }
        for dir in &watched {
            let _ = watcher.unwatch(dir);
        }
        for dir in &dirs {
            if let Err(err) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %err, "cannot watch folder");
            }
        }
        watched = dirs;
    };
    rewatch(&mut watcher, &store);
    let mut poll = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            event = rx.recv() => {
                if event.is_none() {
                    break;
                }
                // Settle: an atomic swap is several events in a row.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while rx.try_recv().is_ok() {}
            }
            _ = poll.tick() => {}
        }
        if store.reload_if_changed(&metrics) {
            rewatch(&mut watcher, &store);
        }
    }
}

/// A content fingerprint of files (missing files count as empty).
mod sha2_free {
    use std::hash::{DefaultHasher, Hash, Hasher};
    use std::path::PathBuf;

    pub fn fingerprint(files: &[PathBuf]) -> u64 {
        let mut hasher = DefaultHasher::new();
        for file in files {
            file.hash(&mut hasher);
            std::fs::read(file).unwrap_or_default().hash(&mut hasher);
        }
        hasher.finish()
    }
}
