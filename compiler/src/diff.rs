//! `aigw diff`: compares a build with a rendered folder, file by file, as a unified diff.

use std::collections::BTreeMap;
use std::path::Path;

use similar::TextDiff;

use crate::write;

/// The unified diff between the files a build produces and the folder `dir`; empty when equal.
/// Only files the build produces or the folder's `kustomization.yaml` lists are compared.
pub fn diff(files: &[(String, String)], dir: &Path) -> String {
    let mut old: BTreeMap<String, String> = BTreeMap::new();
    for name in write::previous_files(dir)
        .into_iter()
        .chain([write::KUSTOMIZATION.to_string()])
    {
        if let Ok(text) = std::fs::read_to_string(dir.join(&name)) {
            old.insert(name, text);
        }
    }
    let new: BTreeMap<&str, &str> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .collect();
    let names: std::collections::BTreeSet<&str> = old
        .keys()
        .map(String::as_str)
        .chain(new.keys().copied())
        .collect();
    let mut out = String::new();
    for name in names {
        let before = old.get(name).map(String::as_str).unwrap_or_default();
        let after = new.get(name).copied().unwrap_or_default();
        if before == after {
            continue;
        }
        let display = dir.join(name).display().to_string();
        let (from, to) = match (old.contains_key(name), new.contains_key(name)) {
            (false, _) => ("/dev/null".to_string(), display.clone()),
            (_, false) => (display.clone(), "/dev/null".to_string()),
            _ => (display.clone(), display),
        };
        out.push_str(
            &TextDiff::from_lines(before, after)
                .unified_diff()
                .context_radius(3)
                .header(&from, &to)
                .to_string(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_changed_added_and_removed_files() {
        let dir = std::env::temp_dir().join(format!("aigw-diff-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = vec![
            ("a.yaml".to_string(), "x: 1\n".to_string()),
            ("gone.yaml".to_string(), "y: 1\n".to_string()),
        ];
        let mut with_k = first.clone();
        with_k.push((
            write::KUSTOMIZATION.into(),
            "resources:\n- a.yaml\n- gone.yaml\n".into(),
        ));
        write::write_dir(&dir, &with_k).unwrap();
        assert_eq!(diff(&with_k, &dir), "");
        let second = vec![
            ("a.yaml".to_string(), "x: 2\n".to_string()),
            (write::KUSTOMIZATION.into(), "resources:\n- a.yaml\n".into()),
        ];
        let text = diff(&second, &dir);
        assert!(text.contains("-x: 1\n+x: 2"), "{text}");
        assert!(text.contains("+++ /dev/null"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
