//! Stage 7, write: rendered objects out to standard output or to a folder.
//!
//! A folder gets one file per object, `<kind>-<namespace>-<name>.yaml`, plus a
//! `kustomization.yaml` listing them in canonical order. Writing is all or nothing: every file
//! is written to a temporary name first and renamed into place only when all were written.
//! Files that the previous build produced (listed in the old `kustomization.yaml`) and this one
//! does not are removed; anything else in the folder is left alone. Unchanged files are not
//! rewritten.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::render::{self, Rendered};

/// Name of the kustomization file.
pub const KUSTOMIZATION: &str = "kustomization.yaml";

/// Errors writing the output.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A file or folder could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Two objects map to the same file name.
    #[error("two objects would be written to {0}")]
    Collision(String),
}

/// The file name of an object.
pub fn file_name(object: &Rendered) -> String {
    let kind = object.kind.to_ascii_lowercase();
    let namespace = object.namespace.to_ascii_lowercase();
    let name = object.name.to_ascii_lowercase();
    if namespace.is_empty() {
        format!("{kind}-{name}.yaml")
    } else {
        format!("{kind}-{namespace}-{name}.yaml")
    }
}

/// The folder's files, `(name, content)`, kustomization last.
pub fn files(objects: &[Rendered]) -> Result<Vec<(String, String)>, WriteError> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for object in objects {
        let name = file_name(object);
        if !names.insert(name.clone()) {
            return Err(WriteError::Collision(name));
        }
        out.push((name, object.text.clone()));
    }
    let resources: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    let kustomization = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
    });
    out.push((KUSTOMIZATION.to_string(), render::yaml(&kustomization)));
    Ok(out)
}

/// Files listed by the `kustomization.yaml` in `dir`, if any.
pub fn previous_files(dir: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(dir.join(KUSTOMIZATION)) else {
        return Vec::new();
    };
    let Ok(value) = serde_saphyr::from_str::<Value>(&text) else {
        return Vec::new();
    };
    value
        .get("resources")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .filter(|n| is_plain_file_name(n))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.contains('\\') && name != "." && name != ".."
}

/// Writes the files into `dir`, all or nothing, and removes files of the previous build.
pub fn write_dir(dir: &Path, files: &[(String, String)]) -> Result<(), WriteError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let previous = previous_files(dir);
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let cleanup = |staged: &[(PathBuf, PathBuf)]| {
        for (tmp, _) in staged {
            let _ = std::fs::remove_file(tmp);
        }
    };
    for (name, content) in files {
        let target = dir.join(name);
        if std::fs::read_to_string(&target).is_ok_and(|existing| existing == *content) {
            continue;
        }
        let tmp = dir.join(format!(".{name}.aigw-tmp"));
        if let Err(err) = std::fs::write(&tmp, content) {
            cleanup(&staged);
            return Err(io(&tmp)(err));
        }
        staged.push((tmp, target));
    }
    for (tmp, target) in &staged {
        if let Err(err) = std::fs::rename(tmp, target) {
            cleanup(&staged);
            return Err(io(target)(err));
        }
    }
    let current: BTreeSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for old in previous {
        if !current.contains(old.as_str()) {
            let path = dir.join(&old);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(io(&path)(err)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(name: &str) -> Rendered {
        Rendered::new(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns"}}),
            true,
        )
    }

    #[test]
    fn writes_listed_files_and_removes_stale_ones_only() {
        let dir = std::env::temp_dir().join(format!("aigw-write-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_dir(&dir, &files(&[cm("a"), cm("b")]).unwrap()).unwrap();
        std::fs::write(dir.join("README.md"), "keep me").unwrap();
        assert!(dir.join("configmap-ns-b.yaml").exists());
        write_dir(&dir, &files(&[cm("a")]).unwrap()).unwrap();
        assert!(dir.join("configmap-ns-a.yaml").exists());
        assert!(!dir.join("configmap-ns-b.yaml").exists());
        assert!(dir.join("README.md").exists());
        assert_eq!(previous_files(&dir), vec!["configmap-ns-a.yaml"]);
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains("aigw-tmp"))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kustomization_lists_files_in_order() {
        let written = files(&[cm("a"), cm("b")]).unwrap();
        assert_eq!(
            written.last().unwrap().1,
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- configmap-ns-a.yaml\n- configmap-ns-b.yaml\n"
        );
    }
}
