//! Fixture readers, contexts and header lists shared by the translators' tests.

use serde_json::Value;

use super::{RequestContext, ResponseContext, TranslateError, Translator, UpstreamRequest};

/// The text of `tests/fixtures/<relative>`.
pub(crate) fn fixture_text(relative: &str) -> String {
    let path = format!("{}/tests/fixtures/{relative}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// The JSON of `tests/fixtures/<relative>`.
pub(crate) fn fixture_json(relative: &str) -> Value {
    serde_json::from_str(&fixture_text(relative)).unwrap_or_else(|err| panic!("{relative}: {err}"))
}

/// The JSON body of a translated request.
pub(crate) fn body_json(request: &UpstreamRequest) -> Value {
    serde_json::from_slice(&request.body).expect("translated body is JSON")
}

/// A request context.
pub(crate) fn request_ctx<'a>(
    model: &'a str,
    stream: bool,
    headers: &'a [(String, String)],
) -> RequestContext<'a> {
    RequestContext {
        model,
        stream,
        headers,
    }
}

/// A response context without headers.
pub(crate) fn response_ctx(model: &str) -> ResponseContext<'_> {
    ResponseContext {
        model,
        headers: &[],
    }
}

/// Header pairs as a context holds them.
pub(crate) fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Asserts that `translator` refuses each of `answers` as not what the provider documents
/// ([`TranslateError::Upstream`]), for a request that asked for `model`.
pub(crate) fn assert_bad_answers(translator: &dyn Translator, model: &str, answers: &[&[u8]]) {
    for answer in answers {
        assert!(
            matches!(
                translator.response(answer, &response_ctx(model)),
                Err(TranslateError::Upstream(_))
            ),
            "{}",
            String::from_utf8_lossy(answer)
        );
    }
}
