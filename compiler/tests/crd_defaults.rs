//! `compiler/src/validate/crd_defaults.json` is derived from the upstream CRDs: for each served
//! version of each Gateway API (standard channel, then the experimental one for kinds only it
//! has) and Envoy Gateway kind, the `openAPIV3Schema` pruned to the paths that lead to a
//! `default`. This test fails when the table no longer matches the CRDs in `AIGW_CRDS_DIR`;
//! `UPDATE_CRD_DEFAULTS=1 cargo test -p aigw --test crd_defaults` rewrites it.
//!
//! Also here: every Gateway API and Envoy Gateway object a golden case passes through already
//! carries every default the API server would add (so Argo CD sees no drift).

#![allow(
    clippy::unwrap_used,
    reason = "test harness: a failed read is a failed test"
)]

#[path = "support/crd_schema.rs"]
mod crd_schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

fn table_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/validate/crd_defaults.json")
}

/// The schema with only what leads to a default: `default`, and `properties`, `items` or
/// `additionalProperties` holding one. Junctors (`allOf`, `oneOf`, ...) are left out: structural
/// schemas may not carry defaults there.
fn prune(schema: &Value) -> Option<Value> {
    let mut out = Map::new();
    if let Some(default) = schema.get("default") {
        out.insert("default".into(), default.clone());
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        let kept: Map<String, Value> = properties
            .iter()
            .filter_map(|(name, property)| Some((name.clone(), prune(property)?)))
            .collect();
        if !kept.is_empty() {
            out.insert("properties".into(), Value::Object(kept));
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = schema.get(key).filter(|c| c.is_object()).and_then(prune) {
            out.insert(key.into(), child);
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

fn table(dir: &Path) -> BTreeMap<String, Value> {
    let mut table = BTreeMap::new();
    for folder in [
        "gateway-api/standard",
        "envoy-gateway",
        "gateway-api/experimental",
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(folder))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for document in text.split("\n---") {
                let Ok(crd) = serde_saphyr::from_str::<Value>(document) else {
                    continue;
                };
                if crd["kind"] != "CustomResourceDefinition" {
                    continue;
                }
                let group = crd["spec"]["group"].as_str().unwrap();
                let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
                for version in crd["spec"]["versions"].as_array().unwrap() {
                    if version["served"] != true {
                        continue;
                    }
                    let name = version["name"].as_str().unwrap();
                    let key = format!("{group}/{name}/{kind}");
                    // The standard channel first; the experimental one only adds kinds.
                    if table.contains_key(&key) {
                        continue;
                    }
                    // `status` belongs to the controller; Argo CD and aigw leave it out.
                    let mut schema = version["schema"]["openAPIV3Schema"].clone();
                    if let Some(properties) =
                        schema.get_mut("properties").and_then(Value::as_object_mut)
                    {
                        properties.remove("status");
                    }
                    if let Some(pruned) = prune(&schema) {
                        table.insert(key, pruned);
                    }
                }
            }
        }
    }
    table
}

#[test]
fn the_defaults_table_matches_the_upstream_crds() {
    let Some(dir) = crd_schema::crds_dir_or_skip("check") else {
        return;
    };
    let mut text = serde_json::to_string_pretty(&table(&dir)).unwrap();
    text.push('\n');
    if std::env::var("UPDATE_CRD_DEFAULTS").is_ok_and(|v| v == "1") {
        std::fs::write(table_path(), &text).unwrap();
        return;
    }
    let current = std::fs::read_to_string(table_path()).unwrap();
    assert!(
        current == text,
        "compiler/src/validate/crd_defaults.json is stale; run UPDATE_CRD_DEFAULTS=1 cargo test -p aigw --test crd_defaults"
    );
}

#[test]
fn objects_passed_through_carry_every_default_the_api_server_adds() {
    let Some(dir) = crd_schema::crds_dir_or_skip("check") else {
        return;
    };
    let validator = crd_schema::CrdValidator::from_dir(&dir).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../golden");
    let mut checked = 0;
    let mut drift = Vec::new();
    for case in std::fs::read_dir(&root).unwrap().filter_map(Result::ok) {
        let expected = case.path().join("expected");
        let Ok(files) = std::fs::read_dir(&expected) else {
            continue;
        };
        for file in files.filter_map(Result::ok) {
            let Ok(text) = std::fs::read_to_string(file.path()) else {
                continue;
            };
            let Ok(object) = serde_saphyr::from_str::<Value>(&text) else {
                continue;
            };
            let api_version = object["apiVersion"].as_str().unwrap_or_default();
            let group = api_version.split('/').next().unwrap_or_default();
            if !matches!(group, "gateway.networking.k8s.io" | "gateway.envoyproxy.io") {
                continue;
            }
            checked += 1;
            let mut defaulted = validator.defaulted(&object).unwrap();
            if let Some(fields) = defaulted.as_object_mut() {
                fields.remove("status");
            }
            if defaulted != object {
                drift.push(format!("{}", file.path().display()));
            }
        }
    }
    assert!(checked > 50, "only {checked} objects checked");
    assert!(
        drift.is_empty(),
        "objects the API server would add defaults to (Argo CD drift):\n{}",
        drift.join("\n")
    );
}
