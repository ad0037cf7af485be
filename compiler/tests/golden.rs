//! Golden cases: `golden/<case>/input/` compiles to exactly `golden/<case>/expected/`.
//!
//! - A case that builds has its rendered folder (one file per object plus kustomization.yaml)
//!   in `expected/`, and its warnings, if any, in `expected/warnings.txt`.
//! - A case that fails has the exact diagnostics in `expected/errors.txt`.
//! - `golden/<case>/options.yaml` may set `includeSecrets`, `extprocImage`, `replicas`, and
//!   `target: envoy`: then `expected/` holds the whole standalone folder (envoy.yaml, filter
//!   configs, CA bundles, the `.aigw-files` manifest), written to disk and read back, with every
//!   Secret file replaced by `<redacted: N bytes, mode 600>` so no credential is stored here.
//!   When Envoy is available (`ENVOY_BIN` or `envoy` on `PATH`; required under `CI=true`), each
//!   such `envoy.yaml` must pass `envoy --mode validate`.
//!
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the expected files; review the diff.
//! Also checked here: the same documents in another order and another split into files give
//! the same bytes; every emitted object validates against the upstream schemas; v1alpha1 input
//! gives the same output as its v1beta1 twin.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test harness: a failed read or build is a failed test"
)]

#[path = "support/crd_schema.rs"]
mod crd_schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aigw::load::Source;
use aigw::{BuildOptions, BuildOutput, Target, write};
use serde_json::Value;

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../golden")
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_root())
        .expect("golden/ exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("input").is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "expected at least ten golden cases, found {}",
        cases.len()
    );
    cases
}

fn sources(case: &Path) -> Vec<Source> {
    let input = case.join("input");
    let mut files = Vec::new();
    collect(&input, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| Source {
            name: path.strip_prefix(case).unwrap().display().to_string(),
            text: std::fs::read_to_string(&path).unwrap(),
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

fn options(case: &Path) -> BuildOptions {
    let mut options = BuildOptions::default();
    if let Ok(text) = std::fs::read_to_string(case.join("options.yaml")) {
        let value: Value = serde_saphyr::from_str(&text).unwrap();
        if let Some(v) = value.get("includeSecrets").and_then(Value::as_bool) {
            options.include_secrets = v;
        }
        if let Some(v) = value.get("extprocImage").and_then(Value::as_str) {
            options.extproc_image = v.to_string();
        }
        if let Some(v) = value.get("replicas").and_then(Value::as_i64) {
            options.replicas = i32::try_from(v).unwrap();
        }
        match value.get("target").and_then(Value::as_str) {
            None | Some("kubernetes") => {}
            Some("envoy") => options.target = Target::Envoy,
            Some(other) => panic!("{}: unknown target {other}", case.display()),
        }
    }
    options
}

/// Every case that builds, with its output.
fn built_cases() -> Vec<(PathBuf, BuildOutput)> {
    cases()
        .into_iter()
        .filter_map(|case| {
            let built = aigw::build(&sources(&case), &options(&case)).ok()?;
            Some((case, built))
        })
        .collect()
}

fn diagnostics_text(diags: &[aigw::diag::Diagnostic]) -> String {
    diags.iter().map(|d| format!("{d}\n")).collect()
}

/// A scratch folder unique to this test process and `label`.
fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aigw-golden-{}-{label}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Every file under `dir`, by `/`-separated relative path.
fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            let path = entry.path();
            if path.is_dir() {
                walk(&path, &format!("{name}/"), out);
            } else {
                out.insert(name, path);
            }
        }
    }
}

fn mode(path: &Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        0o600
    }
}

/// The standalone folder of `built`, written to `dir` as `aigw build --target envoy` does.
fn write_standalone(built: &BuildOutput, dir: &Path) {
    let standalone = built
        .standalone
        .as_ref()
        .expect("an envoy build has a folder");
    let files = write::tree_files(standalone.files.clone()).unwrap();
    write::write_tree(dir, &files).unwrap();
}

/// The written standalone folder as stored in `expected/`: Secret files redacted.
fn read_standalone(dir: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    walk(dir, "", &mut files);
    files
        .into_iter()
        .map(|(name, path)| {
            let bytes = std::fs::read(&path).unwrap();
            let content = if name.contains("/secrets/") || mode(&path) & 0o077 == 0 {
                format!(
                    "<redacted: {} bytes, mode {:o}>\n",
                    bytes.len(),
                    mode(&path)
                )
            } else {
                String::from_utf8(bytes).unwrap()
            };
            (name, content)
        })
        .collect()
}

/// What a case produces: file name (a relative path) → content.
fn produce(case: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match aigw::build(&sources(case), &options(case)) {
        Ok(built) if built.standalone.is_some() => {
            let label = case.file_name().unwrap().to_string_lossy().to_string();
            let dir = scratch(&label);
            write_standalone(&built, &dir);
            out = read_standalone(&dir);
            std::fs::remove_dir_all(&dir).unwrap();
            if !built.warnings.is_empty() {
                out.insert("warnings.txt".into(), diagnostics_text(&built.warnings));
            }
        }
        Ok(built) => {
            for (name, content) in write::files(&built.objects).unwrap() {
                out.insert(name, content);
            }
            if !built.warnings.is_empty() {
                out.insert("warnings.txt".into(), diagnostics_text(&built.warnings));
            }
        }
        Err(diags) => {
            out.insert("errors.txt".into(), diagnostics_text(&diags));
        }
    }
    out
}

fn read_expected(dir: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    walk(dir, "", &mut files);
    files
        .into_iter()
        .map(|(name, path)| (name, std::fs::read_to_string(path).unwrap()))
        .collect()
}

#[test]
fn golden_cases_match_byte_for_byte() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for case in cases() {
        let produced = produce(&case);
        let expected_dir = case.join("expected");
        if update {
            let _ = std::fs::remove_dir_all(&expected_dir);
            std::fs::create_dir_all(&expected_dir).unwrap();
            for (name, content) in &produced {
                let path = expected_dir.join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, content).unwrap();
            }
            continue;
        }
        let expected = read_expected(&expected_dir);
        if produced != expected {
            let names: std::collections::BTreeSet<&String> =
                produced.keys().chain(expected.keys()).collect();
            for name in names {
                let (p, e) = (produced.get(name), expected.get(name));
                if p != e {
                    let diff = similar::TextDiff::from_lines(
                        e.map(String::as_str).unwrap_or(""),
                        p.map(String::as_str).unwrap_or(""),
                    )
                    .unified_diff()
                    .header("expected", "produced")
                    .to_string();
                    failures.push(format!("{}: {name}\n{diff}", case.display()));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (run UPDATE_GOLDEN=1 cargo test --test golden and review):\n{}",
        failures.join("\n")
    );
}

/// Everything a build produces, as one text: the manifests, or the standalone files.
fn output_bytes(built: &BuildOutput) -> String {
    let mut out = built.stream();
    for file in built.standalone.iter().flat_map(|s| &s.files) {
        out.push_str(&format!(
            "--- {} (private: {})\n{}",
            file.path,
            file.private,
            String::from_utf8_lossy(&file.bytes)
        ));
    }
    out
}

/// A deterministic permutation: reversed, then rotated.
fn permute<T: Clone>(items: &[T], rotate: usize) -> Vec<T> {
    let mut out: Vec<T> = items.iter().rev().cloned().collect();
    if !out.is_empty() {
        let k = rotate % out.len();
        out.rotate_left(k);
    }
    out
}

#[test]
fn order_and_file_split_do_not_change_the_output() {
    for case in cases() {
        let options = options(&case);
        let original = sources(&case);
        let Ok(reference) = aigw::build(&original, &options) else {
            continue;
        };
        let reference = output_bytes(&reference);
        let (documents, diags) = aigw::load::parse_sources(&original);
        assert!(diags.is_empty());
        // Each document as written (a SOPS-encrypted Secret is passed through byte for byte).
        let texts: Vec<String> = documents.iter().map(|d| d.source_text()).collect();
        for rotate in [0, 1, 3] {
            let shuffled = permute(&texts, rotate);
            // One file holding every document.
            let one = vec![Source {
                name: "all.yaml".into(),
                text: shuffled.iter().map(|t| format!("---\n{t}")).collect(),
            }];
            // One file per document.
            let many: Vec<Source> = shuffled
                .iter()
                .enumerate()
                .map(|(i, t)| Source {
                    name: format!("doc-{i}.yaml"),
                    text: t.clone(),
                })
                .collect();
            for split in [one, many] {
                let built = aigw::build(&split, &options)
                    .unwrap_or_else(|d| panic!("{}: {}", case.display(), diagnostics_text(&d)));
                assert_eq!(
                    output_bytes(&built),
                    reference,
                    "{}: output depends on input order or split (rotate {rotate})",
                    case.display()
                );
            }
        }
    }
}

#[test]
fn every_emitted_object_validates_against_the_upstream_schemas() {
    let Some(dir) = crd_schema::crds_dir_or_skip("schema validation") else {
        return;
    };
    let validator = crd_schema::CrdValidator::from_dir(&dir).unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (case, built) in built_cases() {
        for rendered in &built.objects {
            checked += 1;
            // Validate what is actually written: the rendered YAML, read back.
            let object: Value = serde_saphyr::from_str(&rendered.text).unwrap();
            if aigw::validate::is_sops_encrypted(&object) {
                // Decrypted (by Flux's kustomize-controller) before it is applied.
                continue;
            }
            if let Err(errors) = validator.validate(&object) {
                failures.push(format!(
                    "{}: {} {}: {}",
                    case.display(),
                    object["kind"],
                    object["metadata"]["name"],
                    errors.join("; ")
                ));
            }
        }
        // Every AI Gateway input the compiler accepted is accepted by the upstream CRDs too.
        let (documents, _) = aigw::load::parse_sources(&sources(&case));
        for doc in documents {
            if doc.value["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("aigateway.envoyproxy.io/"))
            {
                checked += 1;
                if let Err(errors) = validator.validate(&doc.value) {
                    failures.push(format!(
                        "{}: input {}:{}: {}",
                        case.display(),
                        doc.file,
                        doc.line,
                        errors.join("; ")
                    ));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} objects checked");
    assert!(
        failures.is_empty(),
        "objects rejected by the upstream schemas:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_emitted_name_is_one_the_api_server_and_the_file_system_accept() {
    use aigw::validate::names::{self, NameRule};
    let mut failures = Vec::new();
    let mut checked = 0;
    for (case, built) in built_cases() {
        for rendered in &built.objects {
            checked += 1;
            let group = aigw::validate::split_api_version(&rendered.api_version).0;
            let what = format!("{}: {} {}", case.display(), rendered.kind, rendered.name);
            if let Err(err) = names::check(names::rule_for(group, &rendered.kind), &rendered.name) {
                failures.push(format!("{what}: {err}"));
            }
            if !rendered.namespace.is_empty()
                && let Err(err) = names::check(NameRule::Label, &rendered.namespace)
            {
                failures.push(format!("{what}: {err}"));
            }
            if write::file_name(rendered).len() > write::FILE_NAME_MAX {
                failures.push(format!("{what}: file name over 255 bytes"));
            }
            // Pod volumes are DNS labels, one name each.
            let object: Value = serde_saphyr::from_str(&rendered.text).unwrap();
            let volumes: Vec<&str> = object
                .pointer("/spec/template/spec/volumes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v["name"].as_str())
                .collect();
            let distinct: std::collections::BTreeSet<&&str> = volumes.iter().collect();
            if distinct.len() != volumes.len() {
                failures.push(format!("{what}: repeated volume names {volumes:?}"));
            }
            for volume in volumes {
                if let Err(err) = names::check(NameRule::Label, volume) {
                    failures.push(format!("{what}: volume {err}"));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} objects checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Flux's post-build substitution as it treats one object: none when the object carries
/// `kustomize.toolkit.fluxcd.io/substitute: disabled`; otherwise `${NAME}` becomes the
/// variable's value (empty when unset) and `$${` a literal `${`.
fn flux_substitute(object: &Value, vars: &BTreeMap<&str, &str>) -> Value {
    let disabled =
        object["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/substitute"] == "disabled";
    if disabled {
        return object.clone();
    }
    fn walk(value: &Value, vars: &BTreeMap<&str, &str>) -> Value {
        match value {
            Value::String(text) => {
                let mut out = String::new();
                let mut rest = text.as_str();
                while let Some(at) = rest.find('$') {
                    out.push_str(&rest[..at]);
                    let tail = &rest[at..];
                    if let Some(after) = tail.strip_prefix("$${") {
                        out.push_str("${");
                        rest = after;
                    } else if let Some(after) = tail.strip_prefix("${")
                        && let Some(end) = after.find('}')
                    {
                        out.push_str(vars.get(&after[..end]).copied().unwrap_or(""));
                        rest = &after[end + 1..];
                    } else {
                        out.push('$');
                        rest = &tail[1..];
                    }
                }
                out.push_str(rest);
                Value::String(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| walk(v, vars)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), walk(v, vars)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    walk(object, vars)
}

#[test]
fn dollar_braces_reach_the_cluster_as_written_with_and_without_flux() {
    let case = golden_root().join("flux-substitution");
    let built = aigw::build(&sources(&case), &options(&case))
        .unwrap_or_else(|d| panic!("{}", diagnostics_text(&d)));
    let vars = BTreeMap::from([
        ("USER_NAME", "flux-user"),
        ("TEMPLATE", "flux-template"),
        ("CLUSTER_NAME", "prod-eu"),
    ]);
    let mut generated = 0;
    for rendered in &built.objects {
        let object: Value = serde_saphyr::from_str(&rendered.text).unwrap();
        let through_flux = flux_substitute(&object, &vars);
        if object["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "aigw" {
            generated += 1;
            assert_eq!(
                through_flux, object,
                "{} {} changes under Flux",
                rendered.kind, rendered.name
            );
        } else if rendered.name == "settings" {
            // Passed through as the user wrote it: Flux substitutes what they meant it to.
            assert_eq!(
                object["data"]["cluster"], "${CLUSTER_NAME}",
                "{}",
                rendered.text
            );
            assert_eq!(through_flux["data"]["cluster"], "prod-eu");
        }
    }
    assert!(generated > 5);
    // As applied (kubectl, Argo CD, or Flux): the filter config holds the values as written.
    let config = built
        .objects
        .iter()
        .find(|o| o.kind == "ConfigMap" && o.name == "aigw-extproc-ai-gateway")
        .unwrap();
    assert!(
        config.text.contains("Hello ${USER_NAME}"),
        "{}",
        config.text
    );
    assert!(
        config.text.contains(r#"\"${TEMPLATE}\""#),
        "{}",
        config.text
    );
    assert!(!config.text.contains("$${"), "{}", config.text);
}

#[test]
fn v1alpha1_input_gives_the_same_output_as_v1beta1() {
    let root = golden_root();
    // Manifests are identical; only the warnings differ (v1alpha1 is deprecated).
    let mut alpha = read_expected(&root.join("v1alpha1/expected"));
    let mut beta = read_expected(&root.join("bedrock-credentials-file/expected"));
    let alpha_warnings = alpha.remove("warnings.txt").unwrap_or_default();
    beta.remove("warnings.txt");
    assert!(
        alpha_warnings.contains("aigateway.envoyproxy.io/v1alpha1 is deprecated"),
        "{alpha_warnings}"
    );
    assert!(!alpha.is_empty() && !alpha.contains_key("errors.txt"));
    assert_eq!(alpha, beta);
}

#[test]
fn secret_values_never_reach_the_output() {
    let planted = [
        "sk-planted-4c1d7e9a",
        "AKIAPLANTED7777",
        "planted/secret+access/key",
        "planted-client-secret-3b2f",
    ];
    for case in cases() {
        let sources = sources(&case);
        let input: String = sources.iter().map(|s| s.text.clone()).collect();
        let present: Vec<&str> = planted
            .iter()
            .copied()
            .filter(|p| input.contains(*p))
            .collect();
        if present.is_empty() {
            continue;
        }
        let mut options = options(&case);
        options.include_secrets = false;
        let built = aigw::build(&sources, &options)
            .unwrap_or_else(|d| panic!("{}: {}", case.display(), diagnostics_text(&d)));
        let mut everything = built.stream();
        everything.push_str(&diagnostics_text(&built.warnings));
        for (_, content) in write::files(&built.objects).unwrap() {
            everything.push_str(&content);
        }
        // The standalone target writes credentials only to private files of their own.
        for file in built.standalone.iter().flat_map(|s| &s.files) {
            if file.private {
                assert!(
                    file.path.contains("/secrets/"),
                    "{}: {}",
                    case.display(),
                    file.path
                );
            } else {
                everything.push_str(&String::from_utf8_lossy(&file.bytes));
            }
        }
        for secret in present {
            let encoded = base64_encode(secret.as_bytes());
            assert!(
                !everything.contains(secret),
                "{}: {secret} leaked",
                case.display()
            );
            assert!(
                !everything.contains(&encoded),
                "{}: base64 of {secret} leaked",
                case.display()
            );
        }
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn committed_schemas_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    for (name, text) in aigw::schemas::all() {
        let path = dir.join(&name);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "schemas/{name} is stale: run `cargo run -p aigw -- schema -o schemas` (or UPDATE_GOLDEN=1 cargo test --test golden)"
        );
    }
}

/// The Envoy binary for the validation test: `ENVOY_BIN`, else `envoy` on `PATH`; under
/// `CI=true` its absence fails the test.
fn envoy_binary() -> Option<PathBuf> {
    match aigw::run::find_envoy(None) {
        Ok(path) => Some(path),
        Err(err) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must validate the standalone output with Envoy: {err}"
            );
            eprintln!("{err}: envoy validation skipped");
            None
        }
    }
}

#[test]
fn standalone_output_passes_envoy_validation() {
    let Some(envoy) = envoy_binary() else {
        return;
    };
    let mut checked = 0;
    for case in cases() {
        let options = options(&case);
        if options.target != Target::Envoy {
            continue;
        }
        let Ok(built) = aigw::build(&sources(&case), &options) else {
            continue;
        };
        let label = format!("validate-{}", case.file_name().unwrap().to_string_lossy());
        let dir = scratch(&label);
        write_standalone(&built, &dir);
        let output = std::process::Command::new(&envoy)
            .args([
                "--mode",
                "validate",
                "-c",
                "envoy.yaml",
                "--disable-hot-restart",
            ])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: envoy --mode validate failed:\n{}{}",
            case.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::remove_dir_all(&dir).unwrap();
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} standalone cases validated");
}
