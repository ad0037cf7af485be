//! Fixture readers shared by the Bedrock translators' tests.

use serde_json::Value;

use crate::usage::TokenUsage;

/// The JSON fixtures under `tests/fixtures/bedrock/<dir>` whose names start with `prefix`,
/// sorted by name.
pub(crate) fn fixtures(dir: &str, prefix: &str) -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bedrock")
        .join(dir);
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".json"))
        })
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.display().to_string(), value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Fixture `usage` (`{"input": n, ...}`) as token usage.
pub(crate) fn usage_of(value: &Value) -> TokenUsage {
    let get = |key: &str| value.get(key).and_then(Value::as_u64);
    TokenUsage {
        input: get("input"),
        cached_input: get("cached_input"),
        cache_creation_input: get("cache_creation_input"),
        output: get("output"),
        total: get("total"),
        reasoning: get("reasoning"),
    }
}

/// Fixture `headers` (`[[name, value], ...]`).
pub(crate) fn headers_of(value: &Value) -> Vec<(String, String)> {
    value
        .as_array()
        .map(|pairs| {
            pairs
                .iter()
                .map(|pair| {
                    (
                        pair[0].as_str().unwrap().to_string(),
                        pair[1].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
