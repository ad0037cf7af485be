//! OpenAI embeddings served by Bedrock `InvokeModel` (Titan Text Embeddings, Cohere Embed).

use super::*;
use crate::translate::bedrock::test_support::{
    assert_fixture_response, assert_refused, assert_request_fixtures, fixtures, header_pairs,
    headers_of, request_for, response_ctx,
};

fn request(body: &Value, model: &str) -> Result<UpstreamRequest, TranslateError> {
    request_for(OpenAiEmbeddings, body, model, false)
}

#[test]
fn request_fixtures() {
    assert_request_fixtures(OpenAiEmbeddings, "embeddings", "openai", 7);
}

#[test]
fn response_fixtures() {
    let cases = fixtures("embeddings", "response_");
    assert!(cases.len() >= 4, "found {}", cases.len());
    for (name, case) in cases {
        let headers = headers_of(&case["headers"]);
        assert_fixture_response(&OpenAiEmbeddings, &name, &case, "openai", &headers);
    }
}

#[test]
fn titan_token_count_wins_over_the_header() {
    let headers = header_pairs(&[("x-amzn-bedrock-input-token-count", "99")]);
    let ctx = response_ctx("amazon.titan-embed-text-v2:0", &headers);
    let translated = OpenAiEmbeddings
        .response(br#"{"embedding":[0.5],"inputTextTokenCount":4}"#, &ctx)
        .unwrap();
    assert_eq!(translated.usage.input, Some(4));
    assert_eq!(translated.usage.total, Some(4));
    assert_eq!(translated.usage.output, None);
}

#[test]
fn model_families() {
    let cases: [(Option<EmbedFamily>, &[&str]); 5] = [
        (
            Some(EmbedFamily::TitanV2),
            &[
                "amazon.titan-embed-text-v2:0",
                "eu.amazon.titan-embed-text-v2:0",
            ],
        ),
        (
            Some(EmbedFamily::TitanV1),
            &[
                "amazon.titan-embed-text-v1",
                "amazon.titan-embed-text-v1:2:8k",
                "amazon.titan-embed-g1-text-02",
            ],
        ),
        (
            Some(EmbedFamily::Cohere),
            &[
                "cohere.embed-english-v3",
                "apac.cohere.embed-multilingual-v3",
            ],
        ),
        (
            Some(EmbedFamily::CohereV4),
            &[
                "global.cohere.embed-v4:0",
                "arn:aws:bedrock:us-west-2::foundation-model/cohere.embed-v4:0",
            ],
        ),
        (
            None,
            &[
                "amazon.titan-embed-image-v1",
                "amazon.nova-2-multimodal-embeddings-v1:0",
                "anthropic.claude-3-haiku-20240307-v1:0",
                "titan-embed-text-v2",
                "",
            ],
        ),
    ];
    for (family, models) in cases {
        for model in models {
            assert_eq!(embed_family(model), family, "{model}");
        }
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
    assert_refused(TranslateError::Unsupported, cases, |(model, case)| {
        request(case, model)
    });
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
    assert_refused(TranslateError::Invalid, cases, |case| {
        request(case, "cohere.embed-english-v3")
    });
}

#[test]
fn malformed_answers_are_upstream_errors() {
    let ctx = response_ctx("amazon.titan-embed-text-v2:0", &[]);
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
    let headers = header_pairs(&[(
        "x-amzn-errortype",
        "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/",
    )]);
    let ctx = response_ctx("amazon.titan-embed-text-v2:0", &headers);
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
    let ctx = response_ctx("cohere.embed-english-v3", &[]);
    let mut stream = OpenAiEmbeddings.stream(&ctx);
    assert_eq!(stream.feed(b"abc").unwrap(), b"abc");
    assert_eq!(stream.feed(b"").unwrap(), b"");
    assert_eq!(stream.finish().unwrap(), b"");
    assert_eq!(stream.usage(), TokenUsage::default());
    assert_eq!(stream.model(), None);
}
