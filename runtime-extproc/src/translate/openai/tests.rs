use super::*;
use crate::translate::test_support::{
    assert_bad_answers, fixture_json, fixture_text, request_ctx, response_ctx,
};
use serde_json::{Value, json};

const MODEL: &str = "gpt-4.1";

fn text(name: &str) -> String {
    fixture_text(&format!("messages/{name}"))
}

fn fixture(name: &str) -> Value {
    fixture_json(&format!("messages/{name}"))
}

fn ctx(stream: bool) -> RequestContext<'static> {
    request_ctx(MODEL, stream, &[])
}

fn translate(request: &Value) -> Result<Value, TranslateError> {
    let out = AnthropicMessages::new("v1".into()).request(request, &ctx(false))?;
    assert_eq!(out.path, "/v1/chat/completions");
    assert!(out.headers.is_empty());
    Ok(serde_json::from_slice(&out.body).expect("translated body is JSON"))
}

#[test]
fn request_fixtures() {
    for case in ["request_basic", "request_tools", "request_multimodal"] {
        let input = fixture(&format!("{case}.messages.json"));
        let expected = fixture(&format!("{case}.openai.json"));
        let translated = translate(&input).unwrap_or_else(|err| panic!("{case}: {err}"));
        assert_eq!(translated, expected, "{case}");
    }
}

#[test]
fn paths_follow_the_prefix() {
    let input = fixture("request_basic.messages.json");
    for (prefix, expected) in [
        ("v1", "/v1/chat/completions"),
        ("/openai/v1/", "/openai/v1/chat/completions"),
        ("", "/chat/completions"),
        ("/", "/chat/completions"),
    ] {
        let out = AnthropicMessages::new(prefix.into())
            .request(&input, &ctx(false))
            .expect("translates");
        assert_eq!(out.path, expected, "{prefix:?}");
    }
}

#[test]
fn tool_choice_variants() {
    let base = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "hi"}],
    });
    for (choice, expected, parallel) in [
        (json!({"type": "auto"}), json!("auto"), None),
        (
            json!({"type": "auto", "disable_parallel_tool_use": true}),
            json!("auto"),
            Some(false),
        ),
        (json!({"type": "any"}), json!("required"), None),
        (json!({"type": "none"}), json!("none"), None),
        (
            json!({"type": "tool", "name": "f"}),
            json!({"type": "function", "function": {"name": "f"}}),
            None,
        ),
    ] {
        let mut request = base.clone();
        request["tool_choice"] = choice.clone();
        let out = translate(&request).expect("translates");
        assert_eq!(out["tool_choice"], expected, "{choice}");
        assert_eq!(
            out.get("parallel_tool_calls").and_then(Value::as_bool),
            parallel,
            "{choice}"
        );
    }
    // Without tools OpenAI refuses tool_choice: it is left out.
    let mut request = base.clone();
    request.as_object_mut().expect("object").remove("tools");
    request["tool_choice"] = json!({"type": "any", "disable_parallel_tool_use": true});
    let out = translate(&request).expect("translates");
    assert!(out.get("tool_choice").is_none() && out.get("tools").is_none());
    assert!(out.get("parallel_tool_calls").is_none());
    // A tool without input_schema gets an empty object schema; "custom" is a client tool.
    let mut request = base;
    request["tools"] = json!([{"type": "custom", "name": "g", "description": "d"}]);
    let out = translate(&request).expect("translates");
    assert_eq!(
        out["tools"],
        json!([{"type": "function", "function": {"name": "g", "description": "d", "parameters": {"type": "object", "properties": {}}}}])
    );
}

fn unsupported_reason(request: &Value) -> String {
    match translate(request) {
        Err(TranslateError::Unsupported(reason)) => reason,
        other => panic!("expected Unsupported for {request}, got {other:?}"),
    }
}

#[test]
fn what_openai_cannot_express_is_unsupported() {
    let base = json!({"model": "claude-sonnet-4-5", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    let with = |key: &str, value: Value| {
        let mut request = base.clone();
        request[key] = value;
        request
    };
    let user = |content: Value| with("messages", json!([{"role": "user", "content": content}]));
    let cases = [
        (
            with(
                "tools",
                json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]),
            ),
            "web_search_20250305",
        ),
        (
            with(
                "mcp_servers",
                json!([{"type": "url", "url": "https://example.com/sse", "name": "x"}]),
            ),
            "mcp_servers",
        ),
        (
            with("container", json!("container_011CPR5CNjB747bTd36fQLFk")),
            "container",
        ),
        (
            user(
                json!([{"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}]),
            ),
            "documents",
        ),
        (
            user(json!([{"type": "image", "source": {"type": "file", "file_id": "file_011"}}])),
            "file image",
        ),
        (
            user(
                json!([{"type": "tool_result", "tool_use_id": "t", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]}]),
            ),
            "tool_result",
        ),
        (
            with(
                "messages",
                json!([{"role": "assistant", "content": [
                    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}}
                ]}]),
            ),
            "server_tool_use",
        ),
    ];
    for (request, needle) in cases {
        let reason = unsupported_reason(&request);
        assert!(reason.contains(needle), "{reason} should mention {needle}");
    }
}

#[test]
fn malformed_requests_are_invalid() {
    let bad = [
        json!("not an object"),
        json!({"max_tokens": 10, "messages": []}),
        json!({"model": "m", "max_tokens": 10}),
        json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}),
        json!({"model": "m", "messages": [{"content": "no role"}]}),
        json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
        json!({"model": "m", "messages": [{"role": "user", "content": [{"text": "no type"}]}]}),
        json!({"model": "m", "max_tokens": -1, "messages": []}),
        json!({"model": "m", "stop_sequences": "END", "messages": []}),
        json!({"model": "m", "temperature": "hot", "messages": []}),
        json!({"model": "m", "tool_choice": {"type": "sometimes"}, "messages": []}),
        json!({"model": "m", "system": [{"type": "image"}], "messages": []}),
        json!({"model": "m", "tools": [{"input_schema": {}}], "messages": []}),
    ];
    for request in bad {
        assert!(
            matches!(translate(&request), Err(TranslateError::Invalid(_))),
            "{request}"
        );
    }
}

#[test]
fn response_fixtures() {
    let translator = AnthropicMessages::new("v1".into());
    for case in ["response_text", "response_tool_calls"] {
        let input = text(&format!("{case}.openai.json"));
        let expected = fixture(&format!("{case}.anthropic.json"));
        let translated = translator
            .response(input.as_bytes(), &response_ctx("requested-model"))
            .unwrap_or_else(|err| panic!("{case}: {err}"));
        let body: Value = serde_json::from_slice(&translated.body).expect("JSON");
        assert_eq!(body, expected, "{case}");
        let openai = fixture(&format!("{case}.openai.json"));
        assert_eq!(
            translated.usage,
            TokenUsage::from_openai(&openai["usage"]),
            "{case}"
        );
        assert_eq!(
            translated.model,
            openai["model"].as_str().map(str::to_string)
        );
    }
    let usage = translator
        .response(
            text("response_tool_calls.openai.json").as_bytes(),
            &response_ctx("requested-model"),
        )
        .expect("translates")
        .usage;
    assert_eq!(
        usage,
        TokenUsage {
            input: Some(1082),
            cached_input: Some(1024),
            cache_creation_input: None,
            output: Some(17),
            total: Some(1099),
            reasoning: Some(0),
        }
    );
}

fn answer(choice: Value) -> Value {
    let body = json!({"id": "chatcmpl-1", "object": "chat.completion", "choices": [choice]});
    let translated = AnthropicMessages::new("v1".into())
        .response(
            body.to_string().as_bytes(),
            &response_ctx("requested-model"),
        )
        .expect("translates");
    assert_eq!(translated.model.as_deref(), Some("requested-model"));
    serde_json::from_slice(&translated.body).expect("JSON")
}

#[test]
fn response_stop_reasons() {
    let message = json!({"role": "assistant", "content": "x"});
    for (finish, stop) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ] {
        let out = answer(json!({"index": 0, "message": message, "finish_reason": finish}));
        assert_eq!(out["stop_reason"], stop, "{finish}");
        assert_eq!(out["stop_sequence"], Value::Null);
        assert_eq!(out["model"], "requested-model");
        assert_eq!(out["usage"], json!({"input_tokens": 0, "output_tokens": 0}));
    }
    // A server that names the stop sequence that matched (vLLM).
    let out = answer(
        json!({"index": 0, "message": message, "finish_reason": "stop", "stop_reason": "END"}),
    );
    assert_eq!(out["stop_reason"], "stop_sequence");
    assert_eq!(out["stop_sequence"], "END");
    // A refusal is text with the refusal stop reason.
    let out = answer(json!({"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}}));
    assert_eq!(
        out["content"],
        json!([{"type": "text", "text": "I can't help with that."}])
    );
    assert_eq!(out["stop_reason"], "refusal");
    // Nothing said: no blocks.
    let out = answer(json!({"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": ""}}));
    assert_eq!(out["content"], json!([]));
}

#[test]
fn response_that_is_not_a_completion_is_upstream_error() {
    let translator = AnthropicMessages::new("v1".into());
    assert_bad_answers(
        &translator,
        "requested-model",
        &[b"not json", br#"{"id":"x"}"#],
    );
}

#[test]
fn errors_have_the_anthropic_shape() {
    let translator = AnthropicMessages::new("v1".into());
    let error = |status: u16, body: &str| -> Value {
        serde_json::from_slice(&translator.error(
            status,
            body.as_bytes(),
            &response_ctx("requested-model"),
        ))
        .expect("JSON")
    };
    assert_eq!(
        error(
            429,
            r#"{"error":{"message":"Rate limit reached for gpt-4.1 in organization org-x on tokens per min (TPM).","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#
        ),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached for gpt-4.1 in organization org-x on tokens per min (TPM)."}})
    );
    assert_eq!(
        error(
            401,
            r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#
        ),
        json!({"type": "error", "error": {"type": "authentication_error", "message": "Incorrect API key provided."}})
    );
    assert_eq!(
        error(502, "<html>Bad Gateway</html>"),
        json!({"type": "error", "error": {"type": "internal_server_error", "message": "<html>Bad Gateway</html>"}})
    );
}

/// Compares two Anthropic event streams event by event: the same `event:` names and the same
/// `data:` JSON, in the same framing.
fn assert_same_events(actual: &str, expected: &str, what: &str) {
    assert!(actual.ends_with("\n\n"), "{what}: {actual}");
    let split = |text: &str| -> Vec<(String, Value)> {
        text.split_terminator("\n\n")
            .map(|event| {
                let (name, data) = event.split_once('\n').expect("two lines");
                let name = name.strip_prefix("event: ").expect("event line");
                let data = data.strip_prefix("data: ").expect("data line");
                assert!(!data.contains('\n'), "{what}: one data line");
                let data: Value = serde_json::from_str(data).expect("data is JSON");
                assert_eq!(data["type"], name, "{what}: event name matches type");
                (name.to_string(), data)
            })
            .collect()
    };
    let (actual, expected) = (split(actual), split(expected));
    for (index, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert_eq!(a, e, "{what}: event {index}");
    }
    assert_eq!(actual.len(), expected.len(), "{what}: event count");
}

fn run(input: &[u8], size: usize) -> (String, MessagesStream) {
    let mut stream = MessagesStream::new("requested-model");
    let mut out = Vec::new();
    for chunk in input.chunks(size) {
        out.extend(stream.feed(chunk).expect("feeds"));
    }
    out.extend(stream.finish().expect("finishes"));
    (String::from_utf8(out).expect("UTF-8"), stream)
}

#[test]
fn stream_fixtures_split_anywhere() {
    for (case, usage) in [
        (
            "stream_text",
            TokenUsage {
                input: Some(9),
                cached_input: Some(0),
                cache_creation_input: None,
                output: Some(12),
                total: Some(21),
                reasoning: Some(0),
            },
        ),
        (
            "stream_tools",
            TokenUsage {
                input: Some(120),
                cached_input: Some(64),
                cache_creation_input: None,
                output: Some(48),
                total: Some(168),
                reasoning: Some(20),
            },
        ),
    ] {
        let input = text(&format!("{case}.openai.sse"));
        let expected = text(&format!("{case}.anthropic.sse"));
        let (whole, stream) = run(input.as_bytes(), input.len());
        assert_same_events(&whole, &expected, case);
        assert_eq!(stream.usage(), usage, "{case}");
        assert!(stream.model().is_some());
        for size in [1, 2, 3, 7, 64] {
            let (out, stream) = run(input.as_bytes(), size);
            assert_eq!(out, whole, "{case} in pieces of {size}");
            assert_eq!(stream.usage(), usage, "{case} in pieces of {size}");
        }
    }
}

#[test]
fn stream_events_are_sent_as_soon_as_complete() {
    let input = text("stream_text.openai.sse");
    let first_end = input.find("\n\n").expect("first event") + 1;
    let mut stream = MessagesStream::new("requested-model");
    assert!(
        stream
            .feed(&input.as_bytes()[..first_end])
            .expect("feeds")
            .is_empty()
    );
    let out = feed_text(&mut stream, b"\n");
    assert!(out.starts_with("event: message_start\n"), "{out}");
    // The finish reason closes the block; the message ends once usage arrives.
    let rest = &input[first_end + 1..];
    let usage_at = rest.find("\"choices\":[],").expect("usage chunk");
    let usage_at = rest[..usage_at].rfind("data: ").expect("usage event");
    let out = feed_text(&mut stream, &rest.as_bytes()[..usage_at]);
    assert_eq!(
        events(&out).last(),
        Some(&json!({"type": "content_block_stop", "index": 0})),
        "{out}"
    );
    let out = feed_text(&mut stream, &rest.as_bytes()[usage_at..]);
    assert!(out.contains("event: message_delta") && out.contains("event: message_stop"));
    assert_eq!(stream.finish().expect("finishes"), Vec::<u8>::new());
}

fn chunk(choices: Value, usage: Value) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": choices, "usage": usage})
    )
}

/// A chunk with the text `Hi` and no usage.
fn hi_chunk() -> String {
    chunk(
        json!([{"index": 0, "delta": {"content": "Hi"}}]),
        Value::Null,
    )
}

/// What `stream` sends the client for `bytes`, as text.
fn feed_text(stream: &mut MessagesStream, bytes: &[u8]) -> String {
    String::from_utf8(stream.feed(bytes).expect("feeds")).expect("UTF-8")
}

fn events(output: &str) -> Vec<Value> {
    output
        .split_terminator("\n\n")
        .map(|event| {
            let data = event
                .split('\n')
                .find_map(|line| line.strip_prefix("data: "))
                .expect("data line");
            serde_json::from_str(data).expect("JSON")
        })
        .collect()
}

#[test]
fn stream_with_usage_beside_the_finish_reason() {
    let input = hi_chunk()
        + &chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": "length"}]),
            json!({"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}),
        );
    let mut stream = MessagesStream::new("requested-model");
    let out = feed_text(&mut stream, input.as_bytes());
    let events = events(&out);
    let delta = &events[events.len() - 2];
    assert_eq!(
        delta,
        &json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
            "usage": {"input_tokens": 5, "output_tokens": 1}})
    );
    assert_eq!(events[events.len() - 1], json!({"type": "message_stop"}));
    // [DONE] and the end add nothing more.
    assert!(stream.feed(b"data: [DONE]\n\n").expect("feeds").is_empty());
    assert!(stream.finish().expect("finishes").is_empty());
}

#[test]
fn stream_without_usage_ends_at_done() {
    let input = hi_chunk()
        + &chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
            Value::Null,
        );
    let mut stream = MessagesStream::new("requested-model");
    let out = feed_text(&mut stream, input.as_bytes());
    assert!(!out.contains("message_delta"));
    let out = feed_text(&mut stream, b"data: [DONE]\n\n");
    assert_eq!(
        events(&out),
        vec![
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": 0}}),
            json!({"type": "message_stop"}),
        ]
    );
    assert_eq!(stream.usage(), TokenUsage::default());
    assert_eq!(stream.model().as_deref(), Some("m"));
}

#[test]
fn stream_cut_short_ends_with_an_error_event() {
    let input = hi_chunk();
    let mut stream = MessagesStream::new("requested-model");
    stream.feed(input.as_bytes()).expect("feeds");
    let out = String::from_utf8(stream.finish().expect("finishes")).expect("UTF-8");
    let events = events(&out);
    assert_eq!(events[0], json!({"type": "content_block_stop", "index": 0}));
    assert_eq!(events[1]["type"], "error");
    assert_eq!(events[1]["error"]["type"], "internal_server_error");
    assert_eq!(events.len(), 2);
}

#[test]
fn stream_error_chunk_becomes_an_error_event() {
    let input = hi_chunk()
        + "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"code\":503}}\n\n";
    let mut stream = MessagesStream::new("requested-model");
    let out = feed_text(&mut stream, input.as_bytes());
    let events = events(&out);
    assert_eq!(
        events[events.len() - 1],
        json!({"type": "error", "error": {"type": "service_unavailable_error", "message": "The server had an error"}})
    );
    assert!(stream.finish().expect("finishes").is_empty());
}

#[test]
fn stream_tool_calls_without_index() {
    // Some compatible servers leave out the index: the id tells calls apart.
    let input = chunk(
        json!([{"index": 0, "delta": {"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{}"}}]}}]),
        Value::Null,
    ) + &chunk(
        json!([{"index": 0, "delta": {"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{\"x\""}}]}}]),
        Value::Null,
    ) + &chunk(
        json!([{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": ":1}"}}]}}]),
        Value::Null,
    ) + &chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
        Value::Null,
    ) + "data: [DONE]\n\n";
    let (out, _) = run(input.as_bytes(), input.len());
    let starts: Vec<Value> = events(&out)
        .into_iter()
        .filter(|e| e["type"] == "content_block_start")
        .map(|e| {
            json!([
                e["index"],
                e["content_block"]["id"],
                e["content_block"]["name"]
            ])
        })
        .collect();
    assert_eq!(starts, vec![json!([0, "a", "f"]), json!([1, "b", "g"])]);
    let deltas: Vec<Value> = events(&out)
        .into_iter()
        .filter(|e| e["type"] == "content_block_delta")
        .map(|e| json!([e["index"], e["delta"]["partial_json"]]))
        .collect();
    assert_eq!(
        deltas,
        vec![json!([0, "{}"]), json!([1, "{\"x\""]), json!([1, ":1}"])]
    );
    assert!(out.contains("\"stop_reason\":\"tool_use\""));
}

#[test]
fn broken_streams_are_upstream_errors() {
    let mut stream = MessagesStream::new("requested-model");
    assert!(matches!(
        stream.feed(b"data: {broken\n\n"),
        Err(TranslateError::Upstream(_))
    ));
    let mut stream = MessagesStream::new("requested-model");
    let huge = vec![b'x'; 16 * 1024 * 1024 + 1];
    let mut line = b"data: ".to_vec();
    line.extend_from_slice(&huge);
    assert!(matches!(
        stream.feed(&line),
        Err(TranslateError::Upstream(_))
    ));
}
