use super::embeddings::*;
use super::request::*;
use super::response::*;
use super::schema::*;
use super::stream::*;
use super::*;
use crate::translate::{SSE_DONE, TranslateError, UpstreamRequest};
use crate::usage::TokenUsage;
use serde_json::{Value, json};

use crate::translate::sse::MAX_PENDING;

fn fixture_text(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/gemini/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn fixture(name: &str) -> Value {
    let text = fixture_text(&format!("{name}.json"));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{name}: {err}"))
}

fn body(request: &UpstreamRequest) -> Value {
    serde_json::from_slice(&request.body).expect("translated body is JSON")
}

fn request_ctx(model: &str, stream: bool) -> RequestContext<'_> {
    RequestContext {
        model,
        stream,
        headers: &[],
    }
}

fn response_ctx(model: &str) -> ResponseContext<'_> {
    ResponseContext {
        model,
        headers: &[],
    }
}

fn usage(
    input: Option<u64>,
    cached: Option<u64>,
    output: Option<u64>,
    total: Option<u64>,
    reasoning: Option<u64>,
) -> TokenUsage {
    TokenUsage {
        input,
        cached_input: cached,
        cache_creation_input: None,
        output,
        total,
        reasoning,
    }
}

#[test]
fn request_fixtures() {
    let cases = [
        (
            "chat_plain",
            false,
            "publishers/google/models/gemini-2.5-flash:generateContent",
        ),
        (
            "chat_system_multi_turn",
            false,
            "publishers/google/models/gemini-2.0-flash-001:generateContent",
        ),
        (
            "chat_media",
            false,
            "publishers/google/models/gemini-2.5-pro:generateContent",
        ),
        (
            "chat_tools",
            false,
            "publishers/google/models/gemini-2.5-flash:generateContent",
        ),
        (
            "chat_tool_results",
            false,
            "publishers/google/models/gemini-2.5-flash:generateContent",
        ),
        (
            "chat_params",
            true,
            "publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
        ),
        (
            "chat_json_effort",
            false,
            "publishers/google/models/gemini-2.5-flash:generateContent",
        ),
        (
            "chat_thinking_search",
            false,
            "publishers/google/models/gemini-2.5-pro:generateContent",
        ),
        (
            "chat_gemini3_signature",
            false,
            "publishers/google/models/gemini-3-pro-preview:generateContent",
        ),
    ];
    for (case, stream, path) in cases {
        let input = fixture(&format!("{case}.openai"));
        let expected = fixture(&format!("{case}.gemini"));
        let model = input["model"].as_str().expect("fixture names a model");
        let translated = OpenAiChat
            .request(&input, &request_ctx(model, stream))
            .unwrap_or_else(|err| panic!("{case}: {err}"));
        assert_eq!(body(&translated), expected, "{case}");
        assert_eq!(translated.path, path, "{case}");
        assert_eq!(
            translated.headers,
            vec![("content-type".to_string(), "application/json".to_string())]
        );
    }
}

#[test]
fn model_is_escaped_in_the_path() {
    let input = json!({"messages": [{"role": "user", "content": "hi"}]});
    let translated = chat_request(&input, "tuned/model 1", false).expect("translates");
    assert_eq!(
        translated.path,
        "publishers/google/models/tuned%2Fmodel%201:generateContent"
    );
}

#[test]
fn response_fixtures() {
    let cases = [
        (
            "response_text",
            usage(Some(9), Some(4), Some(12), Some(21), None),
        ),
        (
            "response_tool_calls",
            usage(Some(50), None, Some(50), Some(100), Some(30)),
        ),
        (
            "response_candidates",
            usage(Some(5), None, Some(1), Some(6), None),
        ),
        (
            "response_blocked",
            usage(Some(7), None, None, Some(7), None),
        ),
    ];
    for (case, expected_usage) in cases {
        let input = fixture(&format!("{case}.gemini"));
        let expected = fixture(&format!("{case}.openai"));
        let translated = OpenAiChat
            .response(
                input.to_string().as_bytes(),
                &response_ctx("gemini-2.0-flash"),
            )
            .unwrap_or_else(|err| panic!("{case}: {err}"));
        let mut out: Value = serde_json::from_slice(&translated.body).expect("JSON");
        if expected.get("id").is_none() {
            let id = out["id"].as_str().expect("an id is generated");
            assert!(id.starts_with("chatcmpl-"), "{case}: {id}");
            out.as_object_mut().expect("object").remove("id");
        }
        assert_eq!(out, expected, "{case}");
        assert_eq!(translated.usage, expected_usage, "{case}");
        assert_eq!(translated.model.as_deref(), Some("gemini-2.0-flash"));
        // The usage in the body reads back as the usage reported.
        let (read_back, _) = crate::usage::from_body(&translated.body);
        assert_eq!(read_back.input, expected_usage.input, "{case}");
        assert_eq!(read_back.total, expected_usage.total, "{case}");
        assert_eq!(read_back.reasoning, expected_usage.reasoning, "{case}");
        assert_eq!(
            read_back.cached_input, expected_usage.cached_input,
            "{case}"
        );
    }
}

#[test]
fn response_without_usage_or_time() {
    let body = br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"hi"}]}}]}"#;
    let (out, reported) = chat_response(body, "m").expect("translates");
    let out: Value = serde_json::from_slice(&out).expect("JSON");
    assert!(out.get("usage").is_none());
    assert_eq!(out["created"], 0);
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(reported, TokenUsage::default());
}

#[test]
fn broken_responses_are_upstream_errors() {
    for body in [&b"not json"[..], b"[1]", br#"{"candidates": 3}"#] {
        assert!(
            matches!(chat_response(body, "m"), Err(TranslateError::Upstream(_))),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn unsupported_requests() {
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        json!({"messages": user, "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}),
        json!({"messages": user, "audio": {"voice": "alloy", "format": "wav"}}),
        json!({"messages": user, "logit_bias": {"50256": -100}}),
        json!({"messages": user, "functions": [{"name": "f"}]}),
        json!({"messages": [{"role": "function", "name": "f", "content": "x"}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "x"}}]}]}),
        json!({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]}),
        json!({"messages": user, "tools": [{"type": "custom", "custom": {"name": "c"}}]}),
        json!({"messages": user, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}),
        json!({"messages": user, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "custom", "custom": {"name": "c"}}}),
        json!({"messages": user, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}}),
        json!({"messages": user, "response_format": {"type": "grammar", "grammar": "x"}}),
        json!({"messages": user, "response_format": {"type": "json_schema", "json_schema": {"schema": {"$ref": "https://example.com/schema.json"}}}}),
        json!({"messages": user, "response_format": {"type": "json_schema", "json_schema": {"schema": {"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}}, "$ref": "#/$defs/N"}}}}),
        json!({"messages": user, "response_format": {"type": "json_schema", "json_schema": {"schema": {"allOf": [{"type": "object"}, {"type": "object"}]}}}}),
        json!({"messages": user, "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "array", "items": [{"type": "string"}]}}}}),
        json!({"messages": user, "response_format": {"type": "json_schema", "json_schema": {"schema": {"const": 3}}}}),
    ];
    for case in cases {
        let result = chat_request(&case, "gemini-2.5-flash", false);
        assert!(
            matches!(result, Err(TranslateError::Unsupported(_))),
            "{case}: {result:?}"
        );
    }
}

#[test]
fn invalid_requests() {
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        json!([]),
        json!({}),
        json!({"messages": "hi"}),
        json!({"messages": [{"content": "hi"}]}),
        json!({"messages": [{"role": "wizard", "content": "hi"}]}),
        json!({"messages": [{"role": "user", "content": 3}]}),
        json!({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}]}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,AAAA"}}]}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
        json!({"messages": [{"role": "tool", "tool_call_id": "nobody", "content": "x"}]}),
        json!({"messages": [{"role": "tool", "content": "x"}]}),
        json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{broken"}}]}]}),
        json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
        json!({"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]}),
        json!({"messages": user, "temperature": "hot"}),
        json!({"messages": user, "max_tokens": -1}),
        json!({"messages": user, "stop": 5}),
        json!({"messages": user, "stop": ["a", 1]}),
        json!({"messages": user, "n": 0}),
        json!({"messages": user, "seed": 1.5}),
        json!({"messages": user, "top_logprobs": 2}),
        json!({"messages": user, "reasoning_effort": "extreme"}),
        json!({"messages": user, "thinking": {"type": "sometimes"}}),
        json!({"messages": user, "thinking": {"type": "enabled", "budget_tokens": "lots"}}),
        json!({"messages": user, "thinking": true}),
        json!({"messages": user, "safetySettings": {"category": "x"}}),
        json!({"messages": user, "tools": {"type": "function"}}),
        json!({"messages": user, "tools": [{"type": "function", "function": {"description": "no name"}}]}),
        json!({"messages": user, "tools": [{"type": "function", "function": {"name": "f", "parameters": "object"}}]}),
        json!({"messages": user, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "dict"}}}]}),
        json!({"messages": user, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": 1}),
        json!({"messages": user, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
        json!({"messages": user, "response_format": {"type": "json_schema", "json_schema": {"schema": {"$ref": "#/$defs/Missing"}}}}),
    ];
    for case in cases {
        let result = chat_request(&case, "gemini-2.5-flash", false);
        assert!(
            matches!(result, Err(TranslateError::Invalid(_))),
            "{case}: {result:?}"
        );
    }
}

#[test]
fn tool_choice_without_functions_is_dropped() {
    let input = json!({
        "messages": [{"role": "user", "content": "hi"}],
        "tool_choice": "required",
    });
    let translated = chat_request(&input, "m", false).expect("translates");
    assert_eq!(
        body(&translated),
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    );
}

#[test]
fn thinking_variants() {
    let config = |extra: Value| {
        let mut input = json!({"messages": [{"role": "user", "content": "hi"}]});
        for (key, value) in extra.as_object().expect("object") {
            input[key] = value.clone();
        }
        body(&chat_request(&input, "m", false).expect("translates"))["generationConfig"]
            ["thinkingConfig"]
            .clone()
    };
    assert_eq!(
        config(json!({"thinking": {"type": "disabled"}})),
        json!({"thinkingBudget": 0})
    );
    assert_eq!(
        config(json!({"thinking": {"type": "enabled"}})),
        json!({"thinkingBudget": -1, "includeThoughts": true})
    );
    assert_eq!(
        config(
            json!({"thinking": {"type": "enabled", "budget_tokens": 512, "include_thoughts": false}})
        ),
        json!({"thinkingBudget": 512, "includeThoughts": false})
    );
    assert_eq!(
        config(json!({"reasoning_effort": "minimal"})),
        json!({"thinkingBudget": 1024, "includeThoughts": true})
    );
    assert_eq!(
        config(json!({"reasoning_effort": "high"})),
        json!({"thinkingBudget": 24576, "includeThoughts": true})
    );
    assert_eq!(config(json!({"temperature": 1})), Value::Null);
}

#[test]
fn error_bodies() {
    let ctx = response_ctx("gemini-2.5-flash");
    let google = br#"{"error":{"code":400,"message":"Request contains an invalid argument.","status":"INVALID_ARGUMENT"}}"#;
    let out: Value = serde_json::from_slice(&OpenAiChat.error(400, google, &ctx)).expect("JSON");
    assert_eq!(
        out,
        json!({"error": {"message": "Request contains an invalid argument.", "type": "INVALID_ARGUMENT", "param": null, "code": "400"}})
    );

    let listed = br#"[{"error":{"code":429,"message":"Resource exhausted.","status":"RESOURCE_EXHAUSTED"}}]"#;
    let out: Value = serde_json::from_slice(&OpenAiChat.error(429, listed, &ctx)).expect("JSON");
    assert_eq!(out["error"]["type"], "RESOURCE_EXHAUSTED");
    assert_eq!(out["error"]["message"], "Resource exhausted.");
    assert_eq!(out["error"]["code"], "429");

    let text = b"upstream connect error or disconnect/reset before headers";
    let out: Value =
        serde_json::from_slice(&OpenAiEmbeddings.error(503, text, &ctx)).expect("JSON");
    assert_eq!(
        out,
        json!({"error": {"message": "upstream connect error or disconnect/reset before headers", "type": "GCPVertexAIBackendError", "param": null, "code": "503"}})
    );

    let no_status = br#"{"error":{"code":404,"message":"Publisher model not found."}}"#;
    let out: Value = serde_json::from_slice(&error_response(404, no_status)).expect("JSON");
    assert_eq!(out["error"]["type"], "GCPVertexAIBackendError");
    assert_eq!(out["error"]["message"], "Publisher model not found.");
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

/// The `data:` payloads of an OpenAI event stream, checking its framing.
fn events(stream: &str) -> Vec<Value> {
    assert!(stream.ends_with("\n\n"), "stream ends with a blank line");
    stream
        .split_terminator("\n\n")
        .map(|event| {
            let data = event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"));
            assert!(!data.contains('\n'), "one line per event: {event:?}");
            if data == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(data).unwrap_or_else(|err| panic!("{data}: {err}"))
            }
        })
        .collect()
}

fn run_stream(input: &[u8], chunk: usize) -> (Vec<u8>, TokenUsage) {
    let mut stream = OpenAiChat.stream(&response_ctx("gemini-2.5-flash"));
    let mut out = Vec::new();
    for piece in input.chunks(chunk) {
        out.extend(stream.feed(piece).expect("feeds"));
    }
    out.extend(stream.finish().expect("finishes"));
    assert_eq!(stream.model().as_deref(), Some("gemini-2.5-flash"));
    (out, stream.usage())
}

#[test]
fn stream_fixture_byte_by_byte_and_whole() {
    let input = fixture_text("stream_text_tools.gemini.sse");
    let expected = fixture_text("stream_text_tools.openai.sse");
    let (whole, whole_usage) = run_stream(input.as_bytes(), input.len());
    let (bytewise, bytewise_usage) = run_stream(input.as_bytes(), 1);
    assert_eq!(bytewise, whole, "byte-by-byte and whole feeding agree");
    let whole = String::from_utf8(whole).expect("UTF-8");
    assert_eq!(events(&whole), events(&expected));
    assert!(whole.ends_with("data: [DONE]\n\n"));
    let expected_usage = usage(Some(8), Some(2), Some(15), Some(23), Some(5));
    assert_eq!(whole_usage, expected_usage);
    assert_eq!(bytewise_usage, expected_usage);
    // Every split point gives the same bytes.
    for split in [7, 64, 333, 1000] {
        let (out, _) = run_stream(input.as_bytes(), split);
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            whole,
            "split {split}"
        );
    }
}

#[test]
fn stream_events_are_sent_as_soon_as_complete() {
    let mut stream = ChatStream::new("m");
    let event = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}],\"responseId\":\"r\"}";
    assert!(stream.feed(event.as_bytes()).expect("feeds").is_empty());
    assert!(stream.feed(b"\r\n").expect("feeds").is_empty());
    let out = stream.feed(b"\r\n").expect("feeds");
    let out = String::from_utf8(out).expect("UTF-8");
    assert_eq!(
        events(&out),
        vec![
            json!({"id": "r", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "logprobs": null, "finish_reason": null}]})
        ]
    );
    // No usage was reported: no usage chunk.
    assert_eq!(stream.finish().expect("finishes"), SSE_DONE.to_vec());
    assert_eq!(stream.usage(), TokenUsage::default());
}

#[test]
fn stream_without_trailing_blank_line_is_flushed_on_finish() {
    let mut stream = ChatStream::new("m");
    let event = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]},\"finishReason\":\"MAX_TOKENS\"}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":1,\"totalTokenCount\":4},\"responseId\":\"r\"}";
    assert!(stream.feed(event.as_bytes()).expect("feeds").is_empty());
    let out = String::from_utf8(stream.finish().expect("finishes")).expect("UTF-8");
    let chunks = events(&out);
    assert_eq!(chunks.len(), 3, "{out}");
    assert_eq!(chunks[0]["choices"][0]["finish_reason"], "length");
    assert_eq!(
        chunks[1]["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4})
    );
    assert_eq!(chunks[2], json!("[DONE]"));
    assert_eq!(stream.usage(), usage(Some(3), None, Some(1), Some(4), None));
    assert!(stream.finish().expect("finishes twice").is_empty());
}

#[test]
fn stream_multiple_candidates_and_blocked_prompt() {
    let mut stream = ChatStream::new("m");
    let out = stream
        .feed(b"data: {\"candidates\":[{\"index\":0,\"content\":{\"parts\":[{\"text\":\"a\"}]}},{\"index\":1,\"content\":{\"parts\":[{\"text\":\"b\"}]},\"finishReason\":\"SAFETY\"}]}\n\ndata: {\"candidates\":[{\"index\":0,\"content\":{\"parts\":[{\"text\":\"c\"}]},\"finishReason\":\"STOP\"}]}\n\n")
        .expect("feeds");
    let out = String::from_utf8(out).expect("UTF-8");
    let chunks = events(&out);
    assert_eq!(chunks.len(), 2);
    assert_eq!(
        chunks[0]["choices"][1]["delta"],
        json!({"role": "assistant", "content": "b"})
    );
    assert_eq!(chunks[0]["choices"][1]["finish_reason"], "content_filter");
    assert_eq!(chunks[1]["choices"][0]["delta"], json!({"content": "c"}));
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "stop");
    // Every chunk of a stream has the same id.
    assert_eq!(chunks[0]["id"], chunks[1]["id"]);
    assert!(
        chunks[0]["id"]
            .as_str()
            .expect("id")
            .starts_with("chatcmpl-")
    );

    let mut blocked = ChatStream::new("m");
    let out = blocked
        .feed(b"data: {\"promptFeedback\":{\"blockReason\":\"SAFETY\"},\"usageMetadata\":{\"promptTokenCount\":4,\"totalTokenCount\":4},\"responseId\":\"x\"}\n\n")
        .expect("feeds");
    let out = String::from_utf8(out).expect("UTF-8");
    assert_eq!(
        events(&out)[0]["choices"],
        json!([{"index": 0, "delta": {"role": "assistant"}, "logprobs": null, "finish_reason": "content_filter"}])
    );
}

#[test]
fn stream_errors() {
    let mut stream = ChatStream::new("m");
    let out = stream
        .feed(b"data: {\"error\":{\"code\":429,\"message\":\"Quota exceeded.\",\"status\":\"RESOURCE_EXHAUSTED\"}}\n\n")
        .expect("feeds");
    assert_eq!(
        events(&String::from_utf8(out).expect("UTF-8")),
        vec![
            json!({"error": {"message": "Quota exceeded.", "type": "RESOURCE_EXHAUSTED", "param": null, "code": "429"}})
        ]
    );

    let mut broken = ChatStream::new("m");
    assert!(matches!(
        broken.feed(b"data: {broken\n\n"),
        Err(TranslateError::Upstream(_))
    ));

    let mut huge = ChatStream::new("m");
    let mut chunk = b"data: \"".to_vec();
    chunk.resize(MAX_PENDING / 2 + 1, b'a');
    assert!(huge.feed(&chunk).is_ok());
    assert!(matches!(
        huge.feed(&chunk),
        Err(TranslateError::Upstream(_))
    ));

    // The limit also holds for an event spread over many data lines.
    let mut lines = ChatStream::new("m");
    let line = format!("data: {}\n", "a".repeat(1024 * 1024));
    let mut result = Ok(Vec::new());
    for _ in 0..17 {
        result = lines.feed(line.as_bytes());
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(TranslateError::Upstream(_))));
}

#[test]
fn stream_ignores_comments_and_usage_only_events() {
    let mut stream = ChatStream::new("m");
    let out = stream
        .feed(b": keep-alive\n\nevent: message\ndata: {\"usageMetadata\":{\"trafficType\":\"ON_DEMAND\"}}\n\n")
        .expect("feeds");
    assert!(out.is_empty());
    assert_eq!(stream.finish().expect("finishes"), SSE_DONE.to_vec());
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

#[test]
fn media_types_from_extensions() {
    assert_eq!(mime_from_extension("gs://b/a.JPG"), Some("image/jpeg"));
    assert_eq!(
        mime_from_extension("https://x/y/clip.mp4?sig=1#t"),
        Some("video/mp4")
    );
    assert_eq!(mime_from_extension("https://x.com/a.b/file"), None);
    assert_eq!(mime_from_extension("https://x/y.unknown"), None);
}

// ---------------------------------------------------------------------------------------------
// Embeddings
// ---------------------------------------------------------------------------------------------

#[test]
fn embeddings_request_fixtures() {
    let cases = [
        (
            "embeddings_predict",
            "publishers/google/models/text-embedding-005:predict",
        ),
        (
            "embeddings_plain",
            "publishers/google/models/text-multilingual-embedding-002:predict",
        ),
        (
            "embeddings_embed_content",
            "publishers/google/models/gemini-embedding-001:embedContent",
        ),
    ];
    for (case, path) in cases {
        let input = fixture(&format!("{case}.openai"));
        let expected = fixture(&format!("{case}.vertex"));
        let model = input["model"].as_str().expect("fixture names a model");
        let translated = OpenAiEmbeddings
            .request(&input, &request_ctx(model, false))
            .unwrap_or_else(|err| panic!("{case}: {err}"));
        assert_eq!(body(&translated), expected, "{case}");
        assert_eq!(translated.path, path, "{case}");
    }
}

#[test]
fn embeddings_response_fixtures() {
    let cases = [
        ("embeddings_response_predict", "text-embedding-005", 10),
        (
            "embeddings_response_embed_content",
            "gemini-embedding-001",
            8,
        ),
    ];
    for (case, model, tokens) in cases {
        let input = fixture(&format!("{case}.vertex"));
        let expected = fixture(&format!("{case}.openai"));
        let translated = OpenAiEmbeddings
            .response(input.to_string().as_bytes(), &response_ctx(model))
            .unwrap_or_else(|err| panic!("{case}: {err}"));
        let out: Value = serde_json::from_slice(&translated.body).expect("JSON");
        assert_eq!(out, expected, "{case}");
        assert_eq!(
            translated.usage,
            usage(Some(tokens), None, None, Some(tokens), None),
            "{case}"
        );
        assert_eq!(translated.model.as_deref(), Some(model));
    }
}

#[test]
fn embeddings_response_without_statistics() {
    let body = br#"{"predictions":[{"embeddings":{"values":[0.5]}}]}"#;
    let (out, reported) = embeddings_response(body, "text-embedding-005").expect("translates");
    let out: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(out["usage"], json!({"prompt_tokens": 0, "total_tokens": 0}));
    assert_eq!(reported, TokenUsage::default());
    for broken in [
        &b"nope"[..],
        br#"{"predictions":{}}"#,
        br#"{"predictions":[{"embeddings":{"values":"x"}}]}"#,
        br#"{"embedding":{}}"#,
        br#"{"other":1}"#,
    ] {
        assert!(
            matches!(
                embeddings_response(broken, "m"),
                Err(TranslateError::Upstream(_))
            ),
            "{}",
            String::from_utf8_lossy(broken)
        );
    }
}

#[test]
fn embeddings_unsupported_and_invalid() {
    let unsupported_cases = [
        ("text-embedding-005", json!({"input": [1, 2, 3]})),
        ("text-embedding-005", json!({"input": [[1, 2], [3]]})),
        (
            "text-embedding-005",
            json!({"input": "x", "encoding_format": "base64"}),
        ),
        ("gemini-embedding-001", json!({"input": ["a", "b"]})),
    ];
    for (model, case) in unsupported_cases {
        let result = embeddings_request(&case, model);
        assert!(
            matches!(result, Err(TranslateError::Unsupported(_))),
            "{case}: {result:?}"
        );
    }
    let invalid_cases = [
        json!("x"),
        json!({}),
        json!({"input": []}),
        json!({"input": 3}),
        json!({"input": ["a", 1]}),
        json!({"input": "x", "dimensions": 0}),
        json!({"input": "x", "encoding_format": "int8"}),
        json!({"input": "x", "task_type": 1}),
        json!({"input": "x", "auto_truncate": "yes"}),
    ];
    for case in invalid_cases {
        let result = embeddings_request(&case, "text-embedding-005");
        assert!(
            matches!(result, Err(TranslateError::Invalid(_))),
            "{case}: {result:?}"
        );
    }
}

#[test]
fn embedding_model_family() {
    assert!(uses_embed_content("gemini-embedding-001"));
    assert!(uses_embed_content(
        "publishers/google/models/Gemini-Embedding-exp"
    ));
    assert!(!uses_embed_content("text-embedding-005"));
    assert!(!uses_embed_content("text-multilingual-embedding-002"));
}

#[test]
fn embeddings_stream_passes_bytes_through() {
    let mut stream = OpenAiEmbeddings.stream(&response_ctx("m"));
    assert_eq!(stream.feed(b"abc").expect("feeds"), b"abc".to_vec());
    assert!(stream.finish().expect("finishes").is_empty());
    assert_eq!(stream.usage(), TokenUsage::default());
}

#[test]
fn absurd_usage_counts_saturate() {
    let usage = usage_from(&json!({
        "promptTokenCount": u64::MAX,
        "candidatesTokenCount": u64::MAX,
        "thoughtsTokenCount": 1,
    }));
    assert_eq!(usage.output, Some(u64::MAX));
    assert_eq!(usage.to_openai()["total_tokens"], json!(u64::MAX));
    let body = br#"{"predictions": [
        {"embeddings": {"values": [0.1], "statistics": {"token_count": 1e30}}},
        {"embeddings": {"values": [0.2], "statistics": {"token_count": 1e30}}}
    ]}"#;
    let (_, usage) = embeddings_response(body, "text-embedding-005").expect("translates");
    assert_eq!(usage.input, Some(u64::MAX));
}

#[test]
fn refs_that_multiply_are_refused_not_inlined() {
    // Each definition refers twice to the next: inlined, 15 levels make 2^15 copies of the
    // last one (and 10 references each would never finish).
    let mut defs = serde_json::Map::new();
    for level in 0..15 {
        let next = if level == 14 {
            json!({"type": "string"})
        } else {
            json!({"$ref": format!("#/$defs/d{}", level + 1)})
        };
        defs.insert(
            format!("d{level}"),
            json!({"type": "object", "properties": {"a": next, "b": next}}),
        );
    }
    let schema = json!({"$defs": defs, "$ref": "#/$defs/d0"});
    assert!(
        matches!(gemini_schema(&schema), Err(TranslateError::Unsupported(_))),
        "{schema}"
    );
    // A definition used a few times is still inlined.
    let schema = json!({
        "$defs": {"P": {"type": "object", "properties": {"x": {"type": "number"}}}},
        "type": "object",
        "properties": {"from": {"$ref": "#/$defs/P"}, "to": {"$ref": "#/$defs/P"}},
    });
    let converted = gemini_schema(&schema).expect("converts");
    assert_eq!(
        converted["properties"]["to"]["properties"]["x"]["type"],
        "NUMBER"
    );
}
