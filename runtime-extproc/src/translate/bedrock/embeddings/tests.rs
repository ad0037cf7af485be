//! OpenAI embeddings served by Bedrock `InvokeModel` (Titan Text Embeddings, Cohere Embed).

use super::*;
use crate::translate::bedrock::test_support::{fixtures, headers_of, usage_of};

fn request(body: &Value, model: &str) -> Result<UpstreamRequest, TranslateError> {
    let ctx = RequestContext {
        model,
        stream: false,
        headers: &[],
    };
    OpenAiEmbeddings.request(body, &ctx)
}

#[test]
fn request_fixtures() {
    let cases = fixtures("embeddings", "request_");
    assert!(cases.len() >= 7, "found {}", cases.len());
    for (name, case) in cases {
        let upstream = request(&case["openai"], case["model"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(upstream.path, case["path"].as_str().unwrap(), "{name}");
        let body: Value = serde_json::from_slice(&upstream.body).unwrap();
        assert_eq!(body, case["bedrock"], "{name}");
        assert_eq!(
            upstream.headers,
            vec![("content-type".to_string(), "application/json".to_string())]
        );
    }
}

#[test]
fn response_fixtures() {
    let cases = fixtures("embeddings", "response_");
    assert!(cases.len() >= 4, "found {}", cases.len());
    for (name, case) in cases {
        let headers = headers_of(&case["headers"]);
        let model = case["model"].as_str().unwrap();
        let ctx = ResponseContext {
            model,
            headers: &headers,
        };
        let body = case["bedrock"].to_string();
        let translated = OpenAiEmbeddings
            .response(body.as_bytes(), &ctx)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let out: Value = serde_json::from_slice(&translated.body).unwrap();
        assert_eq!(out, case["openai"], "{name}");
        assert_eq!(translated.usage, usage_of(&case["usage"]), "{name}");
        assert_eq!(translated.model.as_deref(), Some(model), "{name}");
    }
}

#[test]
fn titan_token_count_wins_over_the_header() {
    let headers = vec![(
        "x-amzn-bedrock-input-token-count".to_string(),
        "99".to_string(),
    )];
    let ctx = ResponseContext {
        model: "amazon.titan-embed-text-v2:0",
        headers: &headers,
    };
    let translated = OpenAiEmbeddings
        .response(br#"{"embedding":[0.5],"inputTextTokenCount":4}"#, &ctx)
        .unwrap();
    assert_eq!(translated.usage.input, Some(4));
    assert_eq!(translated.usage.total, Some(4));
    assert_eq!(translated.usage.output, None);
}

#[test]
fn model_families() {
    let cases = [
        ("amazon.titan-embed-text-v2:0", Some(EmbedFamily::TitanV2)),
        (
            "eu.amazon.titan-embed-text-v2:0",
            Some(EmbedFamily::TitanV2),
        ),
        ("amazon.titan-embed-text-v1", Some(EmbedFamily::TitanV1)),
        (
            "amazon.titan-embed-text-v1:2:8k",
            Some(EmbedFamily::TitanV1),
        ),
        ("amazon.titan-embed-g1-text-02", Some(EmbedFamily::TitanV1)),
        ("cohere.embed-english-v3", Some(EmbedFamily::Cohere)),
        (
            "apac.cohere.embed-multilingual-v3",
            Some(EmbedFamily::Cohere),
        ),
        ("global.cohere.embed-v4:0", Some(EmbedFamily::CohereV4)),
        (
            "arn:aws:bedrock:us-west-2::foundation-model/cohere.embed-v4:0",
            Some(EmbedFamily::CohereV4),
        ),
        ("amazon.titan-embed-image-v1", None),
        ("amazon.nova-2-multimodal-embeddings-v1:0", None),
        ("anthropic.claude-3-haiku-20240307-v1:0", None),
        ("titan-embed-text-v2", None),
        ("", None),
    ];
    for (model, family) in cases {
        assert_eq!(embed_family(model), family, "{model}");
    }
}

#[test]
fn unsupported_requests() {
    let many: Vec<String> = (0..97).map(|i| format!("text {i}")).collect();
    let cases = [
        (
            "amazon.titan-embed-text-v2:0",
            json!({"input": ["one", "two"]}),
        ),
        ("amazon.titan-embed-text-v2:0", json!({"input": [1, 2, 3]})),
        ("cohere.embed-english-v3", json!({"input": [[1, 2], [3]]})),
        (
            "amazon.titan-embed-text-v2:0",
            json!({"input": "x", "encoding_format": "base64"}),
        ),
        (
            "amazon.titan-embed-text-v2:0",
            json!({"input": "x", "dimensions": 300}),
        ),
        (
            "amazon.titan-embed-text-v1",
            json!({"input": "x", "dimensions": 1024}),
        ),
        (
            "amazon.titan-embed-g1-text-02",
            json!({"input": "x", "dimensions": 512}),
        ),
        (
            "cohere.embed-english-v3",
            json!({"input": "x", "dimensions": 1024}),
        ),
        (
            "cohere.embed-v4:0",
            json!({"input": "x", "dimensions": 768}),
        ),
        ("cohere.embed-english-v3", json!({"input": many})),
        ("amazon.titan-embed-image-v1", json!({"input": "x"})),
        ("text-embedding-3-small", json!({"input": "x"})),
    ];
    for (model, case) in cases {
        assert!(
            matches!(request(&case, model), Err(TranslateError::Unsupported(_))),
            "{model} {case}"
        );
    }
    let Err(TranslateError::Unsupported(message)) =
        request(&json!({"input": "x"}), "meta.llama3-8b-instruct-v1:0")
    else {
        panic!("expected 422");
    };
    assert!(message.contains("Titan") && message.contains("cohere.embed"));
    let Err(TranslateError::Unsupported(message)) = request(
        &json!({"input": ["a", "b", "c"]}),
        "amazon.titan-embed-text-v2:0",
    ) else {
        panic!("expected 422");
    };
    assert!(message.contains("one text"), "{message}");
}

#[test]
fn ninety_six_cohere_texts_pass() {
    let texts: Vec<String> = (0..96).map(|i| format!("text {i}")).collect();
    let upstream = request(&json!({"input": texts}), "cohere.embed-english-v3").unwrap();
    let body: Value = serde_json::from_slice(&upstream.body).unwrap();
    assert_eq!(body["texts"].as_array().unwrap().len(), 96);
}

#[test]
fn invalid_requests() {
    let cases = [
        json!([]),
        json!({"model": "m"}),
        json!({"input": null}),
        json!({"input": []}),
        json!({"input": 42}),
        json!({"input": ["a", 1]}),
        json!({"input": [[]]}),
        json!({"input": "x", "encoding_format": "binary"}),
        json!({"input": "x", "dimensions": "many"}),
        json!({"input": "x", "input_type": 3}),
    ];
    for case in cases {
        assert!(
            matches!(
                request(&case, "cohere.embed-english-v3"),
                Err(TranslateError::Invalid(_))
            ),
            "{case}"
        );
    }
}

#[test]
fn malformed_answers_are_upstream_errors() {
    let ctx = ResponseContext {
        model: "amazon.titan-embed-text-v2:0",
        headers: &[],
    };
    for body in [
        &b"not json"[..],
        br#"{}"#,
        br#"{"embeddings": {"int8": [[1, 2]]}}"#,
        br#"{"embeddings": [0.1, 0.2]}"#,
        br#"{"embeddings": "x"}"#,
    ] {
        assert!(
            matches!(
                OpenAiEmbeddings.response(body, &ctx),
                Err(TranslateError::Upstream(_))
            ),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn errors_keep_the_openai_shape() {
    let headers = vec![(
        "x-amzn-errortype".to_string(),
        "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/".to_string(),
    )];
    let ctx = ResponseContext {
        model: "amazon.titan-embed-text-v2:0",
        headers: &headers,
    };
    let out: Value = serde_json::from_slice(&OpenAiEmbeddings.error(
        400,
        br#"{"message":"Malformed input request: expected maxLength: 50000, actual: 52000, please reformat your input and try again."}"#,
        &ctx,
    ))
    .unwrap();
    assert_eq!(
        out,
        json!({"error": {
            "message": "Malformed input request: expected maxLength: 50000, actual: 52000, please reformat your input and try again.",
            "type": "ValidationException",
            "code": "400",
        }})
    );
}

#[test]
fn streams_pass_through() {
    let ctx = ResponseContext {
        model: "cohere.embed-english-v3",
        headers: &[],
    };
    let mut stream = OpenAiEmbeddings.stream(&ctx);
    assert_eq!(stream.feed(b"abc").unwrap(), b"abc");
    assert_eq!(stream.feed(b"").unwrap(), b"");
    assert_eq!(stream.finish().unwrap(), b"");
    assert_eq!(stream.usage(), TokenUsage::default());
    assert_eq!(stream.model(), None);
}
