//! The Anthropic Messages API served by Bedrock `Converse` / `ConverseStream`.

use super::*;
use crate::translate::bedrock::test_support::{
    assert_fixture_response, assert_refused, assert_request_fixtures, fixtures, request_for,
    response_ctx, usage_of,
};
use crate::translate::eventstream::encode;

fn request(body: &Value, model: &str, stream: bool) -> Result<UpstreamRequest, TranslateError> {
    request_for(AnthropicMessages, body, model, stream)
}

#[test]
fn request_fixtures() {
    assert_request_fixtures(AnthropicMessages, "messages", "anthropic", 9);
}

#[test]
fn the_stream_flag_of_the_context_picks_the_action() {
    let body =
        json!({"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let model = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0";
    let escaped = "arn:aws:bedrock:us-east-1:123456789012:inference-profile%2Fus.anthropic.claude-3-haiku-20240307-v1:0";
    assert_eq!(
        request(&body, model, false).unwrap().path,
        format!("/model/{escaped}/converse")
    );
    assert_eq!(
        request(&body, model, true).unwrap().path,
        format!("/model/{escaped}/converse-stream")
    );
}

#[test]
fn response_fixtures() {
    let cases = fixtures("messages", "response_");
    assert!(cases.len() >= 6, "found {}", cases.len());
    for (name, case) in cases {
        let headers = vec![(
            "x-amzn-requestid".to_string(),
            case["request_id"].as_str().unwrap().to_string(),
        )];
        assert_fixture_response(&AnthropicMessages, &name, &case, "anthropic", &headers);
    }
}

#[test]
fn stop_reasons() {
    let cases = [
        ("end_turn", "end_turn"),
        ("tool_use", "tool_use"),
        ("max_tokens", "max_tokens"),
        ("stop_sequence", "stop_sequence"),
        ("guardrail_intervened", "refusal"),
        ("content_filtered", "refusal"),
        (
            "model_context_window_exceeded",
            "model_context_window_exceeded",
        ),
        ("something_new", "end_turn"),
    ];
    for (converse, anthropic) in cases {
        assert_eq!(anthropic_stop_reason(converse), anthropic, "{converse}");
    }
}

#[test]
fn response_without_request_id_or_usage() {
    let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"hi"},{"image":{"format":"png","source":{"bytes":"AAAA"}}}]}},"stopReason":"end_turn"}"#;
    let translated = AnthropicMessages
        .response(body, &response_ctx("m", &[]))
        .unwrap();
    let out: Value = serde_json::from_slice(&translated.body).unwrap();
    assert!(out["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(out["content"], json!([{"type": "text", "text": "hi"}]));
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0})
    );
    assert_eq!(translated.usage, TokenUsage::default());
    for body in [&b"nope"[..], b"{}", br#"{"output":{"message":{}}}"#] {
        assert!(
            matches!(
                AnthropicMessages.response(body, &response_ctx("m", &[])),
                Err(TranslateError::Upstream(_))
            ),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

/// A request with one user message of `content`.
fn user(content: Value) -> Value {
    json!({"max_tokens": 10, "messages": [{"role": "user", "content": content}]})
}

/// A request saying hi, with the fields of `extra` added.
fn with(extra: Value) -> Value {
    let mut body = json!({"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[test]
fn unsupported_requests() {
    let tool = json!({"name": "f", "input_schema": {"type": "object"}});
    let cases = [
        user(
            json!([{"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/a.jpg"}}]),
        ),
        user(json!([{"type": "image", "source": {"type": "file", "file_id": "file_011"}}])),
        user(
            json!([{"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "AAAA"}}]),
        ),
        user(
            json!([{"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}]),
        ),
        user(
            json!([{"type": "document", "source": {"type": "base64", "media_type": "text/csv", "data": "YSxi"}}]),
        ),
        user(
            json!([{"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "x"}]}}]),
        ),
        user(
            json!([{"type": "document", "citations": {"enabled": true}, "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]),
        ),
        user(
            json!([{"type": "search_result", "source": "https://example.com", "title": "t", "content": []}]),
        ),
        user(
            json!([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "search_result", "source": "s", "title": "t", "content": []}]}]),
        ),
        user(
            json!([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]),
        ),
        json!({"max_tokens": 10, "messages": [{"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}}]}]}),
        with(
            json!({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]}),
        ),
        with(json!({"tools": [{"type": "bash_20250124", "name": "bash"}]})),
        with(
            json!({"mcp_servers": [{"type": "url", "url": "https://example-server.modelcontextprotocol.io/sse", "name": "example-mcp"}]}),
        ),
        with(json!({"container": "container_123"})),
        with(json!({"context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}})),
        with(json!({"output_format": {"type": "json_schema", "schema": {"type": "object"}}})),
        json!({"max_tokens": 10, "tools": [tool], "tool_choice": {"type": "none"}, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}]}),
    ];
    assert_refused(TranslateError::Unsupported, cases, |case| {
        request(case, "anthropic.claude-3-haiku-20240307-v1:0", false)
    });
}

#[test]
fn invalid_requests() {
    let cases = [
        json!("hello"),
        json!({"max_tokens": 10}),
        json!({"max_tokens": 10, "messages": [{"content": "hi"}]}),
        json!({"max_tokens": 10, "messages": [{"role": "system", "content": "hi"}]}),
        json!({"max_tokens": 10, "messages": [{"role": "user"}]}),
        user(json!(42)),
        user(json!([{"text": "no type"}])),
        user(json!([{"type": "text"}])),
        user(json!([{"type": "image"}])),
        user(json!([{"type": "image", "source": {"type": "base64", "media_type": "image/png"}}])),
        user(
            json!([{"type": "document", "source": {"media_type": "application/pdf", "data": "x"}}]),
        ),
        user(json!([{"type": "tool_result", "content": "no id"}])),
        user(json!([{"type": "tool_result", "tool_use_id": "t", "content": 3}])),
        json!({"max_tokens": 10, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}]}),
        json!({"max_tokens": 10, "messages": [{"role": "assistant", "content": [{"type": "thinking", "signature": "s"}]}]}),
        with(json!({"system": 5})),
        with(json!({"system": [{"type": "image", "source": {}}]})),
        with(json!({"max_tokens": "lots"})),
        with(json!({"temperature": "hot"})),
        with(json!({"top_k": "many"})),
        with(json!({"stop_sequences": "END"})),
        with(json!({"stop_sequences": ["END", 1]})),
        with(json!({"thinking": "on"})),
        with(json!({"tools": {"name": "f"}})),
        with(json!({"tools": [{"input_schema": {}}]})),
        with(json!({"tools": [{"name": "f"}], "tool_choice": {"type": "sometimes"}})),
        with(json!({"tools": [{"name": "f"}], "tool_choice": {"type": "tool"}})),
        with(json!({"tools": [{"name": "f"}], "tool_choice": "auto"})),
    ];
    assert_refused(TranslateError::Invalid, cases, |case| {
        request(case, "anthropic.claude-3-haiku-20240307-v1:0", false)
    });
}

#[test]
fn document_names_follow_converse_rules() {
    let mut used = DocumentNames::default();
    // In order: each name given is taken for the ones after it.
    let cases = [
        (Some("Q3 report: final/v2"), "Q3 report final v2"),
        (Some("Q3 report -- final v2"), "Q3 report -- final v2"),
        (Some("Q3 report: final/v2"), "Q3 report final v2-2"),
        (Some("été [draft] (1)"), "t [draft] (1)"),
        (None, "document"),
        (Some("!!!"), "document-2"),
    ];
    for (title, name) in cases {
        assert_eq!(document_name(title, &mut used), name, "{title:?}");
    }
    let long = "a".repeat(500);
    assert_eq!(
        document_name(Some(&long), &mut used).len(),
        MAX_DOCUMENT_NAME
    );
}

#[test]
fn error_mapping() {
    let cases: [(u16, &[u8], Value); 6] = [
        (
            400,
            br#"{"message":"The model returned the following errors: messages: text content blocks must be non-empty"}"#,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "The model returned the following errors: messages: text content blocks must be non-empty"}}),
        ),
        (
            403,
            br#"{"Message":"User: arn:aws:iam::123456789012:user/x is not authorized to perform: bedrock:InvokeModel"}"#,
            json!({"type": "error", "error": {"type": "permission_error", "message": "User: arn:aws:iam::123456789012:user/x is not authorized to perform: bedrock:InvokeModel"}}),
        ),
        (
            404,
            br#"{"message":"Model not found."}"#,
            json!({"type": "error", "error": {"type": "not_found_error", "message": "Model not found."}}),
        ),
        (
            429,
            br#"{"message":"Too many requests, please wait before trying again."}"#,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Too many requests, please wait before trying again."}}),
        ),
        (
            503,
            b"<html>Service Unavailable</html>",
            json!({"type": "error", "error": {"type": "service_unavailable_error", "message": "<html>Service Unavailable</html>"}}),
        ),
        (
            424,
            br#"{"code":"X"}"#,
            json!({"type": "error", "error": {"type": "internal_server_error", "message": "{\"code\":\"X\"}"}}),
        ),
    ];
    let headers = vec![(
        "x-amzn-errortype".to_string(),
        "ValidationException".to_string(),
    )];
    for (status, body, expected) in cases {
        let out: Value = serde_json::from_slice(&AnthropicMessages.error(
            status,
            body,
            &response_ctx("m", &headers),
        ))
        .unwrap();
        assert_eq!(out, expected, "{status}");
    }
}

/// The frames of a stream fixture, encoded as Bedrock sends them.
fn frames(case: &Value) -> Vec<Vec<u8>> {
    case["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|frame| {
            let payload = frame["payload"].to_string();
            match frame["event"].as_str() {
                Some(event) => encode(
                    &[
                        (":event-type", event),
                        (":content-type", "application/json"),
                        (":message-type", "event"),
                    ],
                    payload.as_bytes(),
                ),
                None => encode(
                    &[
                        (":exception-type", frame["exception"].as_str().unwrap()),
                        (":content-type", "application/json"),
                        (":message-type", "exception"),
                    ],
                    payload.as_bytes(),
                ),
            }
        })
        .collect()
}

fn stream_for(case: &Value) -> (Box<dyn StreamTranslator>, String) {
    let model = case["model"].as_str().unwrap().to_string();
    let headers = vec![(
        "x-amzn-requestid".to_string(),
        case["request_id"].as_str().unwrap().to_string(),
    )];
    (
        AnthropicMessages.stream(&response_ctx(&model, &headers)),
        model,
    )
}

#[test]
fn stream_fixtures_byte_by_byte_and_whole() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bedrock/messages");
    let cases = fixtures("messages", "stream_");
    assert!(cases.len() >= 3, "found {}", cases.len());
    for (name, case) in cases {
        let expected =
            std::fs::read_to_string(dir.join(case["expected"].as_str().unwrap())).unwrap();
        let bytes: Vec<u8> = frames(&case).concat();

        let (mut whole, model) = stream_for(&case);
        let mut one_piece = whole.feed(&bytes).unwrap();
        one_piece.extend(whole.finish().unwrap());

        let (mut split, _) = stream_for(&case);
        let mut byte_by_byte = Vec::new();
        for byte in &bytes {
            byte_by_byte.extend(split.feed(std::slice::from_ref(byte)).unwrap());
        }
        byte_by_byte.extend(split.finish().unwrap());

        assert_eq!(String::from_utf8(one_piece).unwrap(), expected, "{name}");
        assert_eq!(String::from_utf8(byte_by_byte).unwrap(), expected, "{name}");
        for translator in [&whole, &split] {
            assert_eq!(translator.usage(), usage_of(&case["usage"]), "{name}");
            assert_eq!(
                translator.model().as_deref(),
                Some(model.as_str()),
                "{name}"
            );
        }
    }
}

#[test]
fn each_frame_is_translated_as_soon_as_it_is_complete() {
    let (_, case) = fixtures("messages", "stream_thinking_text_tool")
        .into_iter()
        .next()
        .unwrap();
    let frames = frames(&case);
    let (mut translator, _) = stream_for(&case);
    let mut events_per_frame = Vec::new();
    for frame in &frames {
        // All but the last byte: nothing yet.
        assert!(
            translator
                .feed(&frame[..frame.len() - 1])
                .unwrap()
                .is_empty()
        );
        let out = String::from_utf8(translator.feed(&frame[frame.len() - 1..]).unwrap()).unwrap();
        events_per_frame.push(
            out.lines()
                .filter_map(|line| line.strip_prefix("event: "))
                .map(str::to_string)
                .collect::<Vec<_>>(),
        );
    }
    assert!(translator.finish().unwrap().is_empty());
    let expected: Vec<Vec<&str>> = vec![
        vec!["message_start"],
        vec!["content_block_start", "content_block_delta"],
        vec!["content_block_delta"],
        vec!["content_block_delta"],
        vec!["content_block_stop"],
        vec!["content_block_start", "content_block_delta"],
        vec!["content_block_delta"],
        vec!["content_block_stop"],
        vec!["content_block_start"],
        vec!["content_block_delta"],
        vec!["content_block_delta"],
        vec!["content_block_stop"],
        // The stop reason waits for the usage of the metadata event.
        vec![],
        vec!["message_delta", "message_stop"],
    ];
    assert_eq!(events_per_frame, expected);
}

#[test]
fn stream_usage_counts_cache_reads_and_writes_as_input() {
    let mut stream = encode(
        &[
            (":event-type", "messageStart"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        br#"{"role":"assistant"}"#,
    );
    for (kind, payload) in [
        ("messageStop", json!({"stopReason": "end_turn"})),
        (
            "metadata",
            json!({"usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 1015, "cacheReadInputTokens": 600, "cacheWriteInputTokens": 400}}),
        ),
    ] {
        stream.extend(encode(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.to_string().as_bytes(),
        ));
    }
    let mut translator = AnthropicMessages.stream(&response_ctx("m", &[]));
    let out = String::from_utf8(translator.feed(&stream).unwrap()).unwrap();
    assert!(out.contains(r#""usage":{"cache_creation_input_tokens":400,"cache_read_input_tokens":600,"input_tokens":10,"output_tokens":5}"#), "{out}");
    assert!(out.contains(r#""id":"msg_"#), "{out}");
    assert_eq!(
        translator.usage(),
        TokenUsage {
            input: Some(1010),
            cached_input: Some(600),
            cache_creation_input: Some(400),
            output: Some(5),
            total: Some(1015),
            reasoning: None,
        }
    );
    // message_delta and message_stop are sent once.
    assert_eq!(out.matches("event: message_delta").count(), 1);
    assert!(translator.finish().unwrap().is_empty());
}

#[test]
fn stream_exceptions_map_to_anthropic_error_types() {
    let cases = [
        ("throttlingException", "rate_limit_error"),
        ("validationException", "invalid_request_error"),
        ("serviceUnavailableException", "service_unavailable_error"),
        ("internalServerException", "internal_server_error"),
        ("modelStreamErrorException", "internal_server_error"),
        ("modelTimeoutException", "timeout_error"),
        ("serviceQuotaExceededException", "rate_limit_error"),
        ("modelNotReadyException", "service_unavailable_error"),
    ];
    for (exception, kind) in cases {
        let frame = encode(
            &[
                (":exception-type", exception),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            br#"{"message":"boom"}"#,
        );
        let mut translator = AnthropicMessages.stream(&response_ctx("m", &[]));
        let out = String::from_utf8(translator.feed(&frame).unwrap()).unwrap();
        assert_eq!(
            out,
            format!(
                "event: error\ndata: {{\"error\":{{\"message\":\"boom\",\"type\":\"{kind}\"}},\"type\":\"error\"}}\n\n"
            ),
            "{exception}"
        );
    }
}

#[test]
fn stream_corruption_and_truncation_are_upstream_errors() {
    let (_, case) = fixtures("messages", "stream_thinking_text_tool")
        .into_iter()
        .next()
        .unwrap();
    let mut bytes = frames(&case).concat();
    let (mut translator, _) = stream_for(&case);
    translator.feed(&bytes[..bytes.len() - 3]).unwrap();
    assert!(matches!(
        translator.finish(),
        Err(TranslateError::Upstream(_))
    ));
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    let (mut translator, _) = stream_for(&case);
    assert!(matches!(
        translator.feed(&bytes),
        Err(TranslateError::Upstream(_))
    ));
    let bad = encode(
        &[
            (":event-type", "contentBlockDelta"),
            (":message-type", "event"),
        ],
        b"not json",
    );
    let (mut translator, _) = stream_for(&case);
    assert!(matches!(
        translator.feed(&bad),
        Err(TranslateError::Upstream(_))
    ));
}

#[test]
fn many_documents_of_one_title_are_named_in_linear_time() {
    // Each name used to be searched from `-2` up in a list: cubic in the document count, so
    // a request of a few thousand untitled documents held the processor for minutes.
    let document = json!({"type": "document", "source": {"type": "text", "data": "x"}});
    let body = json!({
        "model": "m",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": vec![document; 5000]}],
    });
    let started = std::time::Instant::now();
    let sent: Value = serde_json::from_slice(
        &request(&body, "anthropic.claude-sonnet-4-5", false)
            .expect("translates")
            .body,
    )
    .expect("JSON");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let content = sent["messages"][0]["content"].as_array().expect("content");
    assert_eq!(content[0]["document"]["name"], "document");
    assert_eq!(content[4999]["document"]["name"], "document-5000");
}
