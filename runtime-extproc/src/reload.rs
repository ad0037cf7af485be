//! The configuration in force, swapped atomically when the config file or a credential file it
//! names changes (including Kubernetes' symlink swap of ConfigMap and Secret volumes). A change
//! is noticed through inotify within milliseconds, with a slow poll as a safety net; a new
//! configuration that does not load leaves the old one serving, and is logged and counted.
//! What is watched is always what the newest configuration names: when it failed because a file
//! it names is missing (a Secret mounted after the ConfigMap), it loads once that file appears.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};

use crate::config::{self, LoadError, RuntimeConfig};
use crate::metrics::{Metrics, ReloadLabels};

/// The configuration in force.
pub struct ConfigStore {
    path: PathBuf,
    current: ArcSwap<RuntimeConfig>,
    watching: std::sync::Mutex<Watched>,
}

/// The files of the newest load attempt (the config in force, or a newer one that failed) and
/// their fingerprint when it was made.
struct Watched {
    files: Vec<PathBuf>,
    fingerprint: u64,
}

impl ConfigStore {
    /// Loads the configuration at `path`.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let loaded = config::load(path)?;
        let watched = Watched {
            fingerprint: fingerprint(&loaded.files),
            files: loaded.files.clone(),
        };
        Ok(ConfigStore {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(loaded),
            watching: std::sync::Mutex::new(watched),
        })
    }

    /// Loads the configuration at `path`, waiting up to `patience` while its parts do not
    /// match the checksums it lists (a volume still being updated when the process starts).
    pub async fn load_waiting(
        path: &Path,
        patience: std::time::Duration,
    ) -> Result<Self, LoadError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match Self::load(path) {
                Err(err @ LoadError::PartMismatch { .. })
                    if tokio::time::Instant::now() < deadline =>
                {
                    tracing::warn!(error = %err, "waiting for a consistent configuration");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                result => return result,
            }
        }
    }

    /// A cheap snapshot of the configuration in force.
    pub fn current(&self) -> Arc<RuntimeConfig> {
        self.current.load_full()
    }

    /// Reloads when any file changed; returns whether a new configuration is in force.
    pub fn reload_if_changed(&self, metrics: &Metrics) -> bool {
        let mut watching = self.watching.lock().unwrap_or_else(|p| p.into_inner());
        if fingerprint(&watching.files) == watching.fingerprint {
            return false;
        }
        let mut files = Vec::new();
        let attempt = config::load_tracking(&self.path, &mut files);
        // The same content is not tried again until one of these files changes.
        *watching = Watched {
            fingerprint: fingerprint(&files),
            files,
        };
        match attempt {
            Ok(loaded) => {
                self.current.store(Arc::new(loaded));
                metrics
                    .reloads
                    .get_or_create(&ReloadLabels { result: "success" })
                    .inc();
                tracing::info!(config = %self.path.display(), "configuration reloaded");
                true
            }
            Err(err) => {
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
        let watching = self.watching.lock().unwrap_or_else(|p| p.into_inner());
        let mut dirs: Vec<PathBuf> = watching
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
        store.reload_if_changed(&metrics);
        rewatch(&mut watcher, &store);
    }
}

/// A content fingerprint of files (missing files count as empty).
fn fingerprint(files: &[PathBuf]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(file).unwrap_or_default().hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(model: &str) -> String {
        format!(
            "apiVersion: {}\nmaxRequestBodyBytes: 100\nroutes:\n- name: ns/r\n  rules:\n  - matches: [{{headers: [{{name: x-ai-eg-model, type: Exact, value: {model}}}]}}]\n    backends: [{{backend: b, weight: 1}}]\nbackends:\n- name: b\n  serviceBackend: ns/b\n  schema: {{name: OpenAI, prefix: v1}}\n  auth: {{credential: {{type: APIKey, keyFile: key}}}}\n",
            aigw_filterconfig::API_VERSION
        )
    }

    fn first_model(store: &ConfigStore) -> String {
        match &store.current().routes[0].rules[0].matches[0][0].1 {
            crate::config::Matcher::Exact(m) => m.clone(),
            crate::config::Matcher::Regex(r) => r.to_string(),
        }
    }

    #[test]
    fn reloads_on_change_and_keeps_serving_when_the_new_config_is_bad() {
        let dir = std::env::temp_dir().join(format!("aigw-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("key"), "k1").unwrap();
        std::fs::write(dir.join("c.yaml"), config("one")).unwrap();
        let metrics = Metrics::new();
        let store = ConfigStore::load(&dir.join("c.yaml")).unwrap();
        assert!(!store.reload_if_changed(&metrics), "nothing changed");

        std::fs::write(dir.join("c.yaml"), config("two")).unwrap();
        assert!(store.reload_if_changed(&metrics));
        assert_eq!(first_model(&store), "two");

        // A broken file: the old config keeps serving, the failure is counted once.
        std::fs::write(dir.join("c.yaml"), "apiVersion: [not closed\n").unwrap();
        assert!(!store.reload_if_changed(&metrics));
        assert!(!store.reload_if_changed(&metrics));
        assert_eq!(first_model(&store), "two");
        let text = metrics.encode();
        assert!(
            text.contains("aigw_extproc_config_reloads_total{result=\"failure\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("aigw_extproc_config_reloads_total{result=\"success\"} 1"),
            "{text}"
        );

        // A rotated credential alone triggers a reload too.
        std::fs::write(dir.join("c.yaml"), config("two")).unwrap();
        assert!(store.reload_if_changed(&metrics));
        std::fs::write(dir.join("key"), "k2").unwrap();
        assert!(store.reload_if_changed(&metrics));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn sha256(text: &str) -> String {
        ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A root naming one part, and the part, for routes serving `model`.
    fn sharded(model: &str) -> (String, String) {
        let part = format!(
            "apiVersion: {}\nroutes:\n- name: ns/r\n  rules:\n  - matches: [{{headers: [{{name: x-ai-eg-model, type: Exact, value: {model}}}]}}]\n    backends: [{{backend: b, weight: 1}}]\nbackends:\n- name: b\n  serviceBackend: ns/b\n  schema: {{name: OpenAI, prefix: v1}}\n",
            aigw_filterconfig::API_VERSION
        );
        let root = format!(
            "apiVersion: {}\nmaxRequestBodyBytes: 100\nroutes: []\nbackends: []\nparts:\n- path: parts/p1.yaml\n  sha256: {}\n",
            aigw_filterconfig::API_VERSION,
            sha256(&part)
        );
        (root, part)
    }

    #[test]
    fn a_sharded_config_serves_only_when_every_part_matches() {
        let dir = std::env::temp_dir().join(format!("aigw-reload-parts-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("parts")).unwrap();
        let (root, part) = sharded("one");
        std::fs::write(dir.join("c.yaml"), &root).unwrap();
        std::fs::write(dir.join("parts/p1.yaml"), &part).unwrap();
        let metrics = Metrics::new();
        let store = ConfigStore::load(&dir.join("c.yaml")).unwrap();
        assert_eq!(first_model(&store), "one");
        assert_eq!(store.current().files.len(), 2, "the part is watched too");

        // The kubelet has written the new root but not yet the new part: the old config stays.
        let (root2, part2) = sharded("two");
        std::fs::write(dir.join("c.yaml"), &root2).unwrap();
        assert!(!store.reload_if_changed(&metrics));
        assert_eq!(first_model(&store), "one");
        // The part arrives: the new configuration is in force.
        std::fs::write(dir.join("parts/p1.yaml"), &part2).unwrap();
        assert!(store.reload_if_changed(&metrics));
        assert_eq!(first_model(&store), "two");

        // A root pointing outside its folder is refused.
        std::fs::write(
            dir.join("c.yaml"),
            root2.replace("parts/p1.yaml", "../p1.yaml"),
        )
        .unwrap();
        match ConfigStore::load(&dir.join("c.yaml")) {
            Err(LoadError::PartPath { .. }) => {}
            other => panic!("expected PartPath, got {:?}", other.err()),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_start_waits_for_a_consistent_set() {
        let dir = std::env::temp_dir().join(format!("aigw-start-parts-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("parts")).unwrap();
        let (root, part) = sharded("one");
        std::fs::write(dir.join("c.yaml"), &root).unwrap();
        std::fs::write(dir.join("parts/p1.yaml"), "stale").unwrap();
        let path = dir.join("c.yaml");
        match ConfigStore::load_waiting(&path, std::time::Duration::from_millis(200)).await {
            Err(LoadError::PartMismatch { .. }) => {}
            other => panic!("expected PartMismatch, got {:?}", other.err()),
        }
        let fix = {
            let dir = dir.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                std::fs::write(dir.join("parts/p1.yaml"), part).unwrap();
            })
        };
        let store = ConfigStore::load_waiting(&path, std::time::Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(first_model(&store), "one");
        fix.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_config_waiting_for_a_missing_file_loads_once_it_appears() {
        let dir = std::env::temp_dir().join(format!("aigw-reload-wait-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("key"), "k1").unwrap();
        std::fs::write(dir.join("c.yaml"), config("one")).unwrap();
        let metrics = Metrics::new();
        let store = ConfigStore::load(&dir.join("c.yaml")).unwrap();

        // The new config names a key file that is not there yet: rejected, old one serving.
        let waiting = config("two").replace("keyFile: key", "keyFile: later/key");
        std::fs::write(dir.join("c.yaml"), &waiting).unwrap();
        assert!(!store.reload_if_changed(&metrics));
        assert!(
            !store.reload_if_changed(&metrics),
            "not retried while nothing changed"
        );
        assert_eq!(first_model(&store), "one");
        assert!(
            store.watched_dirs().contains(&dir.join("later")),
            "the missing file's folder is watched: {:?}",
            store.watched_dirs()
        );

        // The file appears: the waiting config loads.
        std::fs::create_dir_all(dir.join("later")).unwrap();
        std::fs::write(dir.join("later/key"), "k2").unwrap();
        assert!(store.reload_if_changed(&metrics));
        assert_eq!(first_model(&store), "two");
        let text = metrics.encode();
        assert!(
            text.contains("aigw_extproc_config_reloads_total{result=\"failure\"} 1"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Lays out a folder the way the kubelet mounts a ConfigMap: data in a timestamped folder,
    /// `..data` a symlink to it, the file a symlink through `..data`. Updates swap `..data`.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn notices_a_kubernetes_volume_swap_within_a_second() {
        use std::os::unix::fs::symlink;
        let dir = std::env::temp_dir().join(format!("aigw-volume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("..v1")).unwrap();
        std::fs::write(dir.join("..v1/c.yaml"), config("one")).unwrap();
        std::fs::write(dir.join("..v1/key"), "k").unwrap();
        symlink("..v1", dir.join("..data")).unwrap();
        symlink("..data/c.yaml", dir.join("c.yaml")).unwrap();
        symlink("..data/key", dir.join("key")).unwrap();
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(ConfigStore::load(&dir.join("c.yaml")).unwrap());
        let watcher = tokio::spawn(watch(store.clone(), metrics.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;

        std::fs::create_dir_all(dir.join("..v2")).unwrap();
        std::fs::write(dir.join("..v2/c.yaml"), config("two")).unwrap();
        std::fs::write(dir.join("..v2/key"), "k").unwrap();
        symlink("..v2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        let swapped = std::time::Instant::now();
        while first_model(&store) != "two" {
            assert!(
                swapped.elapsed() < Duration::from_secs(1),
                "not reloaded within 1 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        watcher.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
