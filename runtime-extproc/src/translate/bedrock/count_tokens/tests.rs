//! Anthropic token counting served by Bedrock `CountTokens` with Converse input.

use super::*;
use crate::translate::bedrock::test_support::{
    assert_refused, headers_of, request_for, response_ctx, usage_of,
};
use crate::translate::{TranslateError, UpstreamRequest};
use crate::usage::TokenUsage;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/count_tokens/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn request(body: &Value, model: &str, stream: bool) -> Result<UpstreamRequest, TranslateError> {
    request_for(CountTokens, body, model, stream)
}

#[test]
fn request_fixtures() {
    for case in ["request_basic", "request_tools", "request_thinking"] {
        let input = fixture(case);
        let expected = &fixture(&format!("{case}.upstream"))["bedrock"];
        let out = request(&input, expected["model"].as_str().unwrap(), false)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(out.path, expected["path"].as_str().unwrap(), "{case}");
        assert_eq!(out.headers, headers_of(&expected["headers"]), "{case}");
        let sent: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(sent, expected["body"], "{case}");
    }
}

#[test]
fn generation_settings_are_not_sent() {
    // CountTokens takes no inferenceConfig: max_tokens, temperature and stop sequences, which
    // Converse would carry there, are left out; top_k stays with the additional fields.
    let input = json!({
        "model": "m",
        "max_tokens": 100,
        "temperature": 0.5,
        "stop_sequences": ["END"],
        "top_k": 5,
        "messages": [{"role": "user", "content": "hi"}],
    });
    let out = request(&input, "anthropic.claude-3-haiku-20240307-v1:0", false).unwrap();
    let sent: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(
        sent,
        json!({"input": {"converse": {
            "messages": [{"role": "user", "content": [{"text": "hi"}]}],
            "additionalModelRequestFields": {"top_k": 5},
        }}})
    );
}

#[test]
fn refused_requests() {
    let invalid_cases = [
        (json!({"model": "m", "messages": [], "stream": true}), false),
        (json!({"model": "m", "messages": []}), true),
        (json!({"messages": []}), false),
        (json!({"model": "m"}), false),
        (json!("text"), false),
        (
            json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}),
            false,
        ),
    ];
    assert_refused(TranslateError::Invalid, invalid_cases, |(input, stream)| {
        request(input, "anthropic.claude-3-haiku-20240307-v1:0", *stream)
    });
    // What Converse cannot express is refused as for the Messages API.
    let input = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
    ]}]});
    assert!(matches!(
        request(&input, "anthropic.claude-3-haiku-20240307-v1:0", false),
        Err(TranslateError::Unsupported(_))
    ));
}

#[test]
fn response_fixture() {
    let case = fixture("response_bedrock");
    assert_eq!(case["target"], "bedrock");
    let model = "anthropic.claude-3-haiku-20240307-v1:0";
    let out = CountTokens
        .response(
            case["provider"].to_string().as_bytes(),
            &response_ctx(model, &[]),
        )
        .unwrap();
    let answer: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(answer, case["client"]);
    assert_eq!(out.usage, usage_of(&case["usage"]));
    assert_eq!(out.usage.output, None);
    assert_eq!(out.usage.total, None);
    assert_eq!(out.model.as_deref(), Some(model));
    for body in [&b"nope"[..], b"{}", br#"{"inputTokens":1.5}"#] {
        assert!(
            matches!(
                CountTokens.response(body, &response_ctx(model, &[])),
                Err(TranslateError::Upstream(_))
            ),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn errors_have_the_anthropic_shape() {
    let ctx = response_ctx("m", &[]);
    let error = |status: u16, body: &str| -> Value {
        serde_json::from_slice(&CountTokens.error(status, body.as_bytes(), &ctx)).unwrap()
    };
    assert_eq!(
        error(
            400,
            r#"{"message":"The provided model doesn't support counting tokens."}"#
        ),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "The provided model doesn't support counting tokens."}})
    );
    assert_eq!(
        error(
            403,
            r#"{"Message":"not authorized to perform bedrock:CountTokens"}"#
        ),
        json!({"type": "error", "error": {"type": "permission_error", "message": "not authorized to perform bedrock:CountTokens"}})
    );
    assert_eq!(
        error(429, "Too many requests"),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Too many requests"}})
    );
}

#[test]
fn streams_pass_through() {
    let mut stream = CountTokens.stream(&response_ctx("m", &[]));
    assert_eq!(stream.feed(b"abc").unwrap(), b"abc");
    assert_eq!(stream.finish().unwrap(), Vec::<u8>::new());
    assert_eq!(stream.usage(), TokenUsage::default());
}
