//! Stage 7, write: rendered objects out to standard output or to a folder.
//!
//! A folder gets one file per object, `<kind>-<namespace>-<name>.yaml`, plus a
//! `kustomization.yaml` listing them in canonical order. Writing is all or nothing: every file
//! is written to a temporary name first and renamed into place only when all were written.
//! Files that the previous build produced (listed in the old `kustomization.yaml`) and this one
//! does not are removed; anything else in the folder is left alone. Unchanged files are not
//! rewritten.
//!
//! A standalone (`--target envoy`) build is a tree of files rather than one file per object:
//! [`write_tree`] writes it with the same guarantees, keeping the list of what it wrote in
//! [`MANIFEST`] (the role `kustomization.yaml` plays for the Kubernetes folder).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::render::{self, Rendered};

/// Name of the kustomization file.
pub const KUSTOMIZATION: &str = "kustomization.yaml";

/// First line of the kustomization file of aigw's folder output: a folder holding it is aigw's
/// own output, which reading input skips (`aigw build .` over a repository that commits its
/// rendered folder next to the custom resources).
pub const OUTPUT_MARKER: &str =
    "# Written by aigw build; aigw skips this folder when it reads input.";

/// Whether `dir` holds aigw's own output: a folder written by `aigw build -o` (its
/// kustomization starts with [`OUTPUT_MARKER`]) or by `aigw build --target envoy` ([`MANIFEST`]).
pub fn is_output_dir(dir: &Path) -> bool {
    if dir.join(MANIFEST).is_file() {
        return true;
    }
    std::fs::read_to_string(dir.join(KUSTOMIZATION))
        .is_ok_and(|text| text.lines().next() == Some(OUTPUT_MARKER))
}

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

/// Longest file name most file systems take (bytes).
pub const FILE_NAME_MAX: usize = 255;

/// `stem` + `extension` within [`FILE_NAME_MAX`] bytes: a long stem keeps its start and gains a
/// hash of the whole, so the name stays deterministic and distinct.
pub fn bounded_file_name(stem: &str, extension: &str) -> String {
    if stem.len() + extension.len() <= FILE_NAME_MAX {
        return format!("{stem}{extension}");
    }
    let max = FILE_NAME_MAX - extension.len();
    let mut keep = max - 9;
    while !stem.is_char_boundary(keep) {
        keep -= 1;
    }
    let digest = crate::plan::hex(&Sha256::digest(stem.as_bytes()));
    format!("{}-{}{extension}", &stem[..keep], &digest[..8])
}

/// The file name of an object: `<kind>-<namespace>-<name>.yaml`, bounded in length.
pub fn file_name(object: &Rendered) -> String {
    let kind = object.kind.to_ascii_lowercase();
    let namespace = object.namespace.to_ascii_lowercase();
    let name = object.name.to_ascii_lowercase();
    let stem = if namespace.is_empty() {
        format!("{kind}-{name}")
    } else {
        format!("{kind}-{namespace}-{name}")
    };
    bounded_file_name(&stem, ".yaml")
}

/// The temporary name a file is written under before it is renamed into place: short, so any
/// file name that fits fits here too.
fn temporary_name(name: &str) -> String {
    let digest = crate::plan::hex(&Sha256::digest(name.as_bytes()));
    format!(".aigw-tmp-{}", &digest[..16])
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
    out.push((
        KUSTOMIZATION.to_string(),
        format!("{OUTPUT_MARKER}\n{}", render::yaml(&kustomization)),
    ));
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
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let previous = previous_files(dir);
    put_in_place(files, |(name, content)| {
        let target = dir.join(name);
        if std::fs::read_to_string(&target).is_ok_and(|existing| existing == *content) {
            return Ok(None);
        }
        let tmp = dir.join(temporary_name(name));
        std::fs::write(&tmp, content).map_err(io_error(&tmp))?;
        Ok(Some((tmp, target)))
    })?;
    let current: BTreeSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for old in previous {
        if !current.contains(old.as_str()) {
            remove_if_present(&dir.join(&old))?;
        }
    }
    Ok(())
}

/// The error of an I/O operation on `path`.
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError {
    let path = path.to_path_buf();
    move |source| WriteError::Io { path, source }
}

/// Stages each item with `stage` (a temporary file beside its target, or `None` when the target
/// is current), then renames them all into place. On a failure the temporary files not yet
/// renamed are removed.
fn put_in_place<T>(
    items: &[T],
    mut stage: impl FnMut(&T) -> Result<Option<(PathBuf, PathBuf)>, WriteError>,
) -> Result<(), WriteError> {
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let cleanup = |staged: &[(PathBuf, PathBuf)]| {
        for (tmp, _) in staged {
            let _ = std::fs::remove_file(tmp);
        }
    };
    for item in items {
        match stage(item) {
            Ok(Some(pair)) => staged.push(pair),
            Ok(None) => {}
            Err(err) => {
                cleanup(&staged);
                return Err(err);
            }
        }
    }
    for (tmp, target) in &staged {
        if let Err(err) = std::fs::rename(tmp, target) {
            cleanup(&staged);
            return Err(io_error(target)(err));
        }
    }
    Ok(())
}

/// Removes a file of the previous build; one already gone is fine.
fn remove_if_present(path: &Path) -> Result<(), WriteError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error(path)(err)),
    }
}

/// Name of the file listing what a standalone build wrote, one relative path per line.
pub const MANIFEST: &str = ".aigw-files";

/// One file of a folder tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the folder, `/`-separated, without `.` or `..` parts.
    pub path: String,
    /// Content.
    pub bytes: Vec<u8>,
    /// Readable by its owner only (mode 0600; its folder 0700): credentials.
    pub private: bool,
}

impl FileEntry {
    /// A file readable as usual.
    pub fn public(path: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        FileEntry {
            path: path.into(),
            bytes: bytes.into(),
            private: false,
        }
    }

    /// A file readable by its owner only: a credential.
    pub fn private(path: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        FileEntry {
            private: true,
            ..FileEntry::public(path, bytes)
        }
    }
}

fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// The tree's files with the [`MANIFEST`] added (it lists the others, sorted).
pub fn tree_files(mut files: Vec<FileEntry>) -> Result<Vec<FileEntry>, WriteError> {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    for pair in files.windows(2) {
        if pair[0].path == pair[1].path {
            return Err(WriteError::Collision(pair[0].path.clone()));
        }
    }
    let mut manifest = String::new();
    for file in &files {
        if file.path == MANIFEST || !is_relative_path(&file.path) {
            return Err(WriteError::Collision(file.path.clone()));
        }
        manifest.push_str(&file.path);
        manifest.push('\n');
    }
    files.push(FileEntry::public(MANIFEST, manifest));
    Ok(files)
}

/// Files listed by the [`MANIFEST`] in `dir`, if any.
pub fn previous_tree_files(dir: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(dir.join(MANIFEST)) else {
        return Vec::new();
    };
    text.lines()
        .filter(|line| is_relative_path(line) && *line != MANIFEST)
        .map(str::to_string)
        .collect()
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn is_private(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 == 0)
}

#[cfg(not(unix))]
fn is_private(_path: &Path) -> bool {
    true
}

/// Writes `file` under a temporary name next to `target`; returns that name.
fn stage(dir: &Path, target: &Path, file: &FileEntry) -> Result<PathBuf, WriteError> {
    let parent = target.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    if file.private {
        restrict(parent, 0o700).map_err(io_error(parent))?;
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = parent.join(temporary_name(&name));
    let _ = std::fs::remove_file(&tmp);
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    if file.private {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    let written = open.open(&tmp).and_then(|mut out| {
        use std::io::Write;
        out.write_all(&file.bytes)?;
        out.sync_all()
    });
    if let Err(err) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(&tmp)(err));
    }
    Ok(tmp)
}

/// Writes a tree of files (as made by [`tree_files`]) into `dir`, all or nothing, creating
/// subfolders as needed, and removes the files the previous tree listed and this one does not
/// (and the folders that leaves empty). Private files are created with mode 0600, so their
/// content is never readable by others, not even briefly.
pub fn write_tree(dir: &Path, files: &[FileEntry]) -> Result<(), WriteError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let previous = previous_tree_files(dir);
    put_in_place(files, |file| {
        let target = dir.join(&file.path);
        let unchanged = std::fs::read(&target).is_ok_and(|existing| existing == file.bytes)
            && (!file.private || is_private(&target));
        if unchanged {
            return Ok(None);
        }
        Ok(Some((stage(dir, &target, file)?, target)))
    })?;
    let current: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    for old in previous {
        if current.contains(old.as_str()) {
            continue;
        }
        let path = dir.join(&old);
        remove_if_present(&path)?;
        // Folders the old file lived in go too once empty (remove_dir fails on a non-empty one).
        let mut parent = path.parent();
        while let Some(folder) = parent {
            if folder == dir || std::fs::remove_dir(folder).is_err() {
                break;
            }
            parent = folder.parent();
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
        )
    }

    #[test]
    fn objects_with_the_longest_valid_names_are_written() {
        let dir = std::env::temp_dir().join(format!("aigw-write-long-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let long = "a".repeat(253);
        let other = format!("{}b", "a".repeat(252));
        let files = files(&[cm(&long), cm(&other)]).unwrap();
        assert!(files.iter().all(|(name, _)| name.len() <= FILE_NAME_MAX));
        assert_ne!(files[0].0, files[1].0);
        assert!(files[0].0.starts_with("configmap-ns-aaaa") && files[0].0.ends_with(".yaml"));
        write_dir(&dir, &files).unwrap();
        for (name, content) in &files {
            assert_eq!(&std::fs::read_to_string(dir.join(name)).unwrap(), content);
        }
        // The same names again: the build is deterministic.
        assert_eq!(super::files(&[cm(&long), cm(&other)]).unwrap(), files);
        let _ = std::fs::remove_dir_all(&dir);
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
            format!(
                "{OUTPUT_MARKER}\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- configmap-ns-a.yaml\n- configmap-ns-b.yaml\n"
            )
        );
    }

    #[test]
    fn output_folders_are_recognized_by_their_marker() {
        let dir = std::env::temp_dir().join(format!("aigw-write-marker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_dir(&dir, &files(&[cm("a")]).unwrap()).unwrap();
        assert!(is_output_dir(&dir));
        std::fs::write(dir.join(KUSTOMIZATION), "resources: [a.yaml]\n").unwrap();
        assert!(!is_output_dir(&dir), "a kustomization of the user's own");
        std::fs::write(dir.join(MANIFEST), "envoy.yaml\n").unwrap();
        assert!(is_output_dir(&dir), "a standalone folder");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tree_is_written_with_private_files_and_stale_ones_removed() {
        let dir = std::env::temp_dir().join(format!("aigw-tree-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = tree_files(vec![
            FileEntry::public("envoy.yaml", "a\n"),
            FileEntry::private("gateways/ns-gw/secrets/key/apiKey", "sk-1"),
            FileEntry::public("gateways/old-gw/filter-config.yaml", "x\n"),
        ])
        .unwrap();
        write_tree(&dir, &first).unwrap();
        std::fs::write(dir.join("access.log"), "keep me").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(MANIFEST)).unwrap(),
            "envoy.yaml\ngateways/ns-gw/secrets/key/apiKey\ngateways/old-gw/filter-config.yaml\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode("gateways/ns-gw/secrets/key/apiKey"), 0o600);
            assert_eq!(mode("gateways/ns-gw/secrets/key"), 0o700);
        }
        let second = tree_files(vec![
            FileEntry::public("envoy.yaml", "b\n"),
            FileEntry::private("gateways/ns-gw/secrets/key/apiKey", "sk-1"),
        ])
        .unwrap();
        write_tree(&dir, &second).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("envoy.yaml")).unwrap(),
            "b\n"
        );
        assert!(!dir.join("gateways/old-gw").exists());
        assert!(dir.join("access.log").exists());
        assert_eq!(
            previous_tree_files(&dir),
            vec!["envoy.yaml", "gateways/ns-gw/secrets/key/apiKey"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tree_paths_must_stay_inside_the_folder() {
        for bad in ["../x", "/etc/passwd", "a//b", "a/./b", MANIFEST] {
            assert!(
                tree_files(vec![FileEntry::public(bad, "")]).is_err(),
                "{bad}"
            );
        }
    }
}
