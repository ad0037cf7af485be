use super::*;
use crate::translate::bedrock::test_support::{assert_fixture_request, assert_refused};
use crate::translate::eventstream::encode;
use crate::translate::path_escape;

/// The JSON fixtures directly under `tests/fixtures/bedrock` whose names start with `prefix`.
fn fixtures(prefix: &str) -> Vec<(String, Value)> {
    crate::translate::bedrock::test_support::fixtures("", prefix)
}

#[test]
fn request_fixtures() {
    let cases = fixtures("request_");
    assert!(cases.len() >= 10, "found {}", cases.len());
    for (name, case) in cases {
        let model = case["model"].as_str().unwrap();
        let stream = case["openai"]["stream"] == true;
        let upstream =
            chat_request(&case["openai"], model, stream).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_fixture_request(&name, &upstream, &case);
    }
}

#[test]
fn response_fixtures() {
    let cases = fixtures("response_");
    assert!(cases.len() >= 3);
    for (name, case) in cases {
        let body = case["bedrock"].to_string();
        let (out, usage) = chat_response(
            body.as_bytes(),
            case["model"].as_str().unwrap(),
            case["request_id"].as_str(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut out: Value = serde_json::from_slice(&out).unwrap();
        assert!(out["created"].as_u64().unwrap() > 0, "{name}");
        out.as_object_mut().unwrap().remove("created");
        assert_eq!(out, case["openai"], "{name}");
        assert_eq!(
            usage,
            crate::translate::bedrock::test_support::usage_of(&case["usage"]),
            "{name}"
        );
    }
}

#[test]
fn response_without_request_id_gets_an_id() {
    let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"stopReason":"end_turn"}"#;
    let (out, usage) = chat_response(body, "m", None).unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert!(out["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(out.get("usage").is_none());
    assert_eq!(usage, TokenUsage::default());
    assert!(matches!(
        chat_response(b"nope", "m", None),
        Err(TranslateError::Upstream(_))
    ));
    assert!(matches!(
        chat_response(b"{}", "m", None),
        Err(TranslateError::Upstream(_))
    ));
}

#[test]
fn unsupported_requests() {
    let cases = [
        json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}),
        json!({"messages": [{"role": "user", "content": "hi"}], "logprobs": true}),
        json!({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}),
        json!({"messages": [{"role": "user", "content": "hi"}], "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}),
        json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}]}),
        json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}),
    ];
    assert_refused(TranslateError::Unsupported, cases, |case| {
        chat_request(case, "m", false)
    });
}

#[test]
fn invalid_requests() {
    let cases = [
        json!([]),
        json!({"model": "m"}),
        json!({"messages": [{"content": "hi"}]}),
        json!({"messages": [{"role": "wizard", "content": "hi"}]}),
        json!({"messages": [{"role": "tool", "content": "x"}]}),
        json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{oops"}}]}]}),
        json!({"messages": [{"role": "user", "content": "hi"}], "stop": 3}),
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}),
    ];
    assert_refused(TranslateError::Invalid, cases, |case| {
        chat_request(case, "m", false)
    });
}

#[test]
fn cache_control_adds_a_cache_point() {
    let request = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "long document", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "question"}
    ]}], "stop": "END"});
    let upstream = chat_request(&request, "m", false).unwrap();
    let body: Value = serde_json::from_slice(&upstream.body).unwrap();
    assert_eq!(
        body["messages"][0]["content"],
        json!([{"text": "long document"}, {"cachePoint": {"type": "default"}}, {"text": "question"}])
    );
    assert_eq!(body["inferenceConfig"], json!({"stopSequences": ["END"]}));
}

#[test]
fn error_responses() {
    let out: Value = serde_json::from_slice(&error_response(
        400,
        Some("ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        br#"{"message":"Malformed input request"}"#,
    ))
    .unwrap();
    assert_eq!(
        out,
        json!({"error": {"message": "Malformed input request", "type": "ValidationException", "code": "400"}})
    );
    let out: Value = serde_json::from_slice(&error_response(
        429,
        Some("ThrottlingException"),
        br#"{"Message":"Too many requests, please wait before trying again."}"#,
    ))
    .unwrap();
    assert_eq!(out["error"]["type"], "ThrottlingException");
    assert_eq!(
        out["error"]["message"],
        "Too many requests, please wait before trying again."
    );
    assert_eq!(out["error"]["code"], "429");
    let out: Value =
        serde_json::from_slice(&error_response(503, None, b"<html>unavailable</html>")).unwrap();
    assert_eq!(
        out,
        json!({"error": {"message": "<html>unavailable</html>", "type": "AWSBedrockBackendError", "code": "503"}})
    );
}

fn event(kind: &str, payload: Value) -> Vec<u8> {
    encode(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

/// A ConverseStream answer: reasoning, text, then a tool call, as Bedrock sends it.
fn converse_stream() -> Vec<u8> {
    let mut stream = Vec::new();
    stream.extend(event(
        "messageStart",
        json!({"p": "abcd", "role": "assistant"}),
    ));
    stream.extend(event(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Need the tool."}}, "p": "ab"}),
    ));
    stream.extend(event(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "c2ln"}}}),
    ));
    stream.extend(event("contentBlockStop", json!({"contentBlockIndex": 0})));
    for piece in ["I'll look up ", "the top song ", "on WZPZ."] {
        stream.extend(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"text": piece}, "p": "abcdefgh"}),
        ));
    }
    stream.extend(event("contentBlockStop", json!({"contentBlockIndex": 1})));
    stream.extend(event(
        "contentBlockStart",
        json!({"contentBlockIndex": 2, "start": {"toolUse": {"name": "top_song", "toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"}}}),
    ));
    for piece in ["{\"sign\"", ": \"WZ", "PZ\"}"] {
        stream.extend(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 2, "delta": {"toolUse": {"input": piece}}}),
        ));
    }
    stream.extend(event("contentBlockStop", json!({"contentBlockIndex": 2})));
    stream.extend(event("messageStop", json!({"stopReason": "tool_use"})));
    stream.extend(event(
        "metadata",
        json!({"usage": {"inputTokens": 375, "outputTokens": 62, "totalTokens": 437, "cacheReadInputTokens": 20}, "metrics": {"latencyMs": 1034}}),
    ));
    stream
}

fn events(output: &[u8]) -> (Vec<Value>, bool) {
    let text = std::str::from_utf8(output).unwrap();
    let mut out = Vec::new();
    let mut done = false;
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let data = block.strip_prefix("data: ").unwrap();
        if data == "[DONE]" {
            done = true;
        } else {
            out.push(serde_json::from_str(data).unwrap());
        }
    }
    (out, done)
}

#[test]
fn stream_split_anywhere() {
    let stream = converse_stream();
    let mut splits: Vec<usize> = vec![1, 7, 100, stream.len()];
    splits.extend((2..40).step_by(3));
    for split in splits {
        let mut translator = chat_stream("anthropic.claude-3-haiku-20240307-v1:0", Some("req-1"));
        let mut output = Vec::new();
        for chunk in stream.chunks(split) {
            output.extend(translator.feed(chunk).unwrap());
        }
        output.extend(translator.finish().unwrap());
        let (chunks, done) = events(&output);
        assert!(done, "split {split}");
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut arguments = String::new();
        let mut finish = None;
        let mut usage_chunk = None;
        for chunk in &chunks {
            assert_eq!(chunk["id"], "req-1");
            assert_eq!(chunk["model"], "anthropic.claude-3-haiku-20240307-v1:0");
            assert_eq!(chunk["object"], "chat.completion.chunk");
            if chunk["choices"].as_array().unwrap().is_empty() {
                usage_chunk = Some(chunk["usage"].clone());
                continue;
            }
            let delta = &chunk["choices"][0]["delta"];
            text.push_str(delta["content"].as_str().unwrap_or(""));
            reasoning.push_str(delta["reasoning_content"].as_str().unwrap_or(""));
            if let Some(calls) = delta["tool_calls"].as_array() {
                assert_eq!(calls[0]["index"], 0);
                if let Some(id) = calls[0]["id"].as_str() {
                    assert_eq!(id, "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q");
                    assert_eq!(calls[0]["function"]["name"], "top_song");
                }
                arguments.push_str(calls[0]["function"]["arguments"].as_str().unwrap());
            }
            if let Some(reason) = chunk["choices"][0]["finish_reason"].as_str() {
                finish = Some(reason.to_string());
            }
        }
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(text, "I'll look up the top song on WZPZ.", "split {split}");
        assert_eq!(reasoning, "Need the tool.");
        assert_eq!(
            serde_json::from_str::<Value>(&arguments).unwrap(),
            json!({"sign": "WZPZ"})
        );
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        assert_eq!(
            usage_chunk,
            Some(
                json!({"prompt_tokens": 395, "completion_tokens": 62, "total_tokens": 457,
                "prompt_tokens_details": {"cached_tokens": 20}})
            )
        );
        assert_eq!(
            translator.usage(),
            TokenUsage {
                input: Some(395),
                cached_input: Some(20),
                cache_creation_input: None,
                output: Some(62),
                total: Some(457),
                reasoning: None
            }
        );
        assert_eq!(
            translator.model().as_deref(),
            Some("anthropic.claude-3-haiku-20240307-v1:0")
        );
    }
}

#[test]
fn stream_events_are_emitted_as_soon_as_complete() {
    let first = event("messageStart", json!({"role": "assistant"}));
    let second = event(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
    );
    let mut translator = chat_stream("m", None);
    let mut bytes = first.clone();
    bytes.extend_from_slice(&second[..5]);
    let (chunks, _) = events(&translator.feed(&bytes).unwrap());
    assert_eq!(chunks.len(), 1);
    let (chunks, _) = events(&translator.feed(&second[5..]).unwrap());
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "Hi");
    assert!(chunks[0]["id"].as_str().unwrap().starts_with("chatcmpl-"));
}

#[test]
fn stream_exception_becomes_an_error_event() {
    let mut stream = event("messageStart", json!({"role": "assistant"}));
    stream.extend(encode(
        &[
            (":exception-type", "throttlingException"),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        br#"{"message":"Too many tokens, please wait before trying again."}"#,
    ));
    let mut translator = chat_stream("m", Some("r"));
    let (chunks, _) = events(&translator.feed(&stream).unwrap());
    assert_eq!(chunks.len(), 2);
    assert_eq!(
        chunks[1],
        json!({"error": {"message": "Too many tokens, please wait before trying again.", "type": "throttlingException", "code": null}})
    );
}

#[test]
fn stream_corruption_and_truncation_are_upstream_errors() {
    let mut stream = converse_stream();
    let at = stream.len() / 2;
    stream[at] ^= 0x55;
    let mut translator = chat_stream("m", None);
    assert!(matches!(
        translator.feed(&stream),
        Err(TranslateError::Upstream(_))
    ));

    let stream = converse_stream();
    let mut translator = chat_stream("m", None);
    translator.feed(&stream[..stream.len() - 3]).unwrap();
    assert!(matches!(
        translator.finish(),
        Err(TranslateError::Upstream(_))
    ));
}

#[test]
fn model_ids_are_path_escaped() {
    assert_eq!(
        path_escape("anthropic.claude-v2:1"),
        "anthropic.claude-v2:1"
    );
    assert_eq!(path_escape("a/b c?d%"), "a%2Fb%20c%3Fd%25");
}

#[test]
fn absurd_usage_counts_saturate() {
    let usage = converse_usage(&json!({
        "inputTokens": u64::MAX,
        "cacheReadInputTokens": 3,
        "cacheWriteInputTokens": 4,
        "outputTokens": u64::MAX,
    }));
    assert_eq!(usage.input, Some(u64::MAX));
    assert_eq!(usage.total, Some(u64::MAX));
}
