//! Fixture readers, contexts and assertions shared by the Bedrock translators' tests.

use serde_json::Value;

use crate::translate::{
    RequestContext, ResponseContext, TranslateError, Translator, UpstreamRequest,
};
use crate::usage::TokenUsage;

/// The request `translator` sends for the client's `body` to `model`, no client headers.
pub(crate) fn request_for(
    mut translator: impl Translator,
    body: &Value,
    model: &str,
    stream: bool,
) -> Result<UpstreamRequest, TranslateError> {
    let ctx = RequestContext {
        model,
        stream,
        headers: &[],
    };
    translator.request(body, &ctx)
}

/// The response context of an answer to a request for `model` with response `headers`.
pub(crate) fn response_ctx<'a>(
    model: &'a str,
    headers: &'a [(String, String)],
) -> ResponseContext<'a> {
    ResponseContext { model, headers }
}

/// Owned header pairs.
pub(crate) fn header_pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// Asserts that `translator` sends what each request fixture under `dir` expects
/// ([`assert_fixture_request`]) for the client body under `client`, to the fixture's `model`,
/// streaming when the fixture's `stream` is true; there are at least `at_least` fixtures.
pub(crate) fn assert_request_fixtures(
    translator: impl Translator + Copy,
    dir: &str,
    client: &str,
    at_least: usize,
) {
    let cases = fixtures(dir, "request_");
    assert!(cases.len() >= at_least, "found {}", cases.len());
    for (name, case) in cases {
        let model = case["model"].as_str().unwrap();
        let stream = case["stream"].as_bool().unwrap_or(false);
        let upstream = request_for(translator, &case[client], model, stream)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_fixture_request(&name, &upstream, &case);
    }
}

/// Asserts that `upstream` is what request fixture `name` expects: its `path` and its JSON
/// body `bedrock`, sent as JSON.
pub(crate) fn assert_fixture_request(name: &str, upstream: &UpstreamRequest, case: &Value) {
    assert_eq!(upstream.path, case["path"].as_str().unwrap(), "{name}");
    let body: Value = serde_json::from_slice(&upstream.body).unwrap();
    assert_eq!(body, case["bedrock"], "{name}");
    assert_eq!(
        upstream.headers,
        header_pairs(&[("content-type", "application/json")]),
        "{name}"
    );
}

/// Asserts that `translator` answers response fixture `name` as it expects: the Bedrock
/// answer `bedrock` (to a request for `model`, with response `headers`) becomes the body under
/// `client`, with the fixture's `usage` and model.
pub(crate) fn assert_fixture_response(
    translator: &impl Translator,
    name: &str,
    case: &Value,
    client: &str,
    headers: &[(String, String)],
) {
    let model = case["model"].as_str().unwrap();
    let body = case["bedrock"].to_string();
    let translated = translator
        .response(body.as_bytes(), &response_ctx(model, headers))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let out: Value = serde_json::from_slice(&translated.body).unwrap();
    assert_eq!(out, case[client], "{name}");
    assert_eq!(translated.usage, usage_of(&case["usage"]), "{name}");
    assert_eq!(translated.model.as_deref(), Some(model), "{name}");
}

/// Asserts that `translate` refuses every case with an error of the kind `expected` makes
/// (`TranslateError::Invalid`, `TranslateError::Unsupported`, ...).
pub(crate) fn assert_refused<T: std::fmt::Debug>(
    expected: fn(String) -> TranslateError,
    cases: impl IntoIterator<Item = T>,
    translate: impl Fn(&T) -> Result<UpstreamRequest, TranslateError>,
) {
    let expected = std::mem::discriminant(&expected(String::new()));
    for case in cases {
        let result = translate(&case);
        assert!(
            result
                .as_ref()
                .is_err_and(|err| std::mem::discriminant(err) == expected),
            "{case:?}: {result:?}"
        );
    }
}

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
