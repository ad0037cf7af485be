use super::response::*;
use super::*;
use crate::translate::UpstreamRequest;
use crate::translate::test_support::{
    assert_bad_answers, body_json, fixture_json, fixture_text, headers, request_ctx, response_ctx,
};
use base64::Engine as _;
use serde_json::{Value, json};

const MODEL: &str = "claude-sonnet-4-5";

fn fixture(name: &str) -> Value {
    fixture_json(&format!("anthropic/{name}.json"))
}

fn anthropic() -> AnthropicTarget {
    AnthropicTarget::Anthropic {
        prefix: String::new(),
    }
}

fn gcp(version: &str) -> AnthropicTarget {
    AnthropicTarget::GcpAnthropic {
        version: version.into(),
    }
}

fn aws(version: &str) -> AnthropicTarget {
    AnthropicTarget::AwsAnthropic {
        version: version.into(),
    }
}

#[test]
fn request_fixtures() {
    for case in [
        "request_plain",
        "request_system",
        "request_system_blocks",
        "request_multi_turn",
        "request_image",
        "request_tools",
        "request_tool_results",
        "request_params",
        "request_reasoning_effort",
        "request_thinking",
    ] {
        let input = fixture(&format!("{case}.openai"));
        let expected = fixture(&format!("{case}.anthropic"));
        let translated =
            chat_request(&input, MODEL, &anthropic()).unwrap_or_else(|err| panic!("{case}: {err}"));
        assert_eq!(body_json(&translated), expected, "{case}");
        assert_eq!(translated.path, "/v1/messages", "{case}");
        assert_eq!(
            translated.headers,
            vec![("anthropic-version".to_string(), "2023-06-01".to_string())]
        );
    }
}

#[test]
fn response_fixtures() {
    for case in ["response_text", "response_tool_use", "response_thinking"] {
        let input = fixture(&format!("{case}.anthropic"));
        let expected = fixture(&format!("{case}.openai"));
        let (bytes, usage) = chat_response(input.to_string().as_bytes(), MODEL)
            .unwrap_or_else(|err| panic!("{case}: {err}"));
        let translated: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(translated, expected, "{case}");
        assert_eq!(usage, TokenUsage::from_openai(&expected["usage"]), "{case}");
    }
}

#[test]
fn response_usage_counts_cache() {
    let input = fixture("response_tool_use.anthropic");
    let (_, usage) = chat_response(input.to_string().as_bytes(), MODEL).expect("translates");
    assert_eq!(
        usage,
        TokenUsage {
            input: Some(2400),
            cached_input: Some(300),
            cache_creation_input: Some(2000),
            output: Some(50),
            total: Some(2450),
            reasoning: None,
        }
    );
}

#[test]
fn response_without_model_uses_the_requested_one() {
    let (bytes, _) = chat_response(
        br#"{"id":"msg_1","type":"message","role":"assistant","content":[],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":0}}"#,
        MODEL,
    )
    .expect("translates");
    let value: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(value["model"], MODEL);
    assert_eq!(value["choices"][0]["message"]["content"], Value::Null);
    assert!(matches!(
        chat_response(b"not json", MODEL),
        Err(TranslateError::Upstream(_))
    ));
}

#[test]
fn prefix_is_trimmed() {
    let input = fixture("request_plain.openai");
    let target = AnthropicTarget::Anthropic {
        prefix: "/anthropic/v1/".into(),
    };
    let translated = chat_request(&input, MODEL, &target).expect("translates");
    assert_eq!(translated.path, "/anthropic/v1/messages");
}

#[test]
fn gcp_target() {
    let mut input = fixture("request_plain.openai");
    let target = gcp("");
    let translated = chat_request(&input, "claude-sonnet-4@20250514", &target).expect("ok");
    assert_eq!(
        translated.path,
        "publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"
    );
    assert!(translated.headers.is_empty());
    let mut expected = fixture("request_plain.anthropic");
    expected.as_object_mut().expect("object").remove("model");
    expected["anthropic_version"] = json!("vertex-2023-10-16");
    assert_eq!(body_json(&translated), expected);

    input["stream"] = json!(true);
    let target = gcp("vertex-2099-01-01");
    let translated = chat_request(&input, "claude-sonnet-4@20250514", &target).expect("ok");
    assert_eq!(
        translated.path,
        "publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict"
    );
    expected["stream"] = json!(true);
    expected["anthropic_version"] = json!("vertex-2099-01-01");
    assert_eq!(body_json(&translated), expected);
}

#[test]
fn aws_target() {
    let mut input = fixture("request_plain.openai");
    input["stream"] = json!(true);
    let target = aws("");
    let model = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-7-sonnet-20250219-v1:0";
    let translated = chat_request(&input, model, &target).expect("ok");
    assert_eq!(
        translated.path,
        "/model/arn:aws:bedrock:us-east-1:123456789012:inference-profile%2Fus.anthropic.claude-3-7-sonnet-20250219-v1:0/invoke-with-response-stream"
    );
    let mut expected = fixture("request_plain.anthropic");
    expected.as_object_mut().expect("object").remove("model");
    expected["anthropic_version"] = json!("bedrock-2023-05-31");
    assert_eq!(body_json(&translated), expected);

    input["stream"] = json!(false);
    let translated =
        chat_request(&input, "anthropic.claude-3-haiku-20240307-v1:0", &target).expect("ok");
    assert_eq!(
        translated.path,
        "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke"
    );
}

fn unsupported_reason(request: Value) -> String {
    match chat_request(&request, MODEL, &anthropic()) {
        Err(TranslateError::Unsupported(reason)) => reason,
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn unsupported_requests() {
    let base = fixture("request_plain.openai");
    let with = |key: &str, value: Value| {
        let mut request = base.clone();
        request[key] = value;
        request
    };
    assert!(unsupported_reason(with("n", json!(2))).contains("n must be 1"));
    assert!(unsupported_reason(with("logprobs", json!(true))).contains("logprobs"));
    assert!(unsupported_reason(with("top_logprobs", json!(3))).contains("logprobs"));
    assert!(unsupported_reason(with("presence_penalty", json!(0.5))).contains("presence_penalty"));
    assert!(unsupported_reason(with("modalities", json!(["text", "audio"]))).contains("text"));
    assert!(
        unsupported_reason(with("response_format", json!({"type": "json_object"})))
            .contains("json_object")
    );
    let audio = with(
        "messages",
        json!([{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
        ]}]),
    );
    assert!(unsupported_reason(audio).contains("input_audio"));
    let tiff = with(
        "messages",
        json!([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}
        ]}]),
    );
    assert!(unsupported_reason(tiff).contains("image/tiff"));
    let effort = with("reasoning_effort", json!("high"));
    let mut effort = effort;
    effort["max_tokens"] = json!(500);
    assert!(unsupported_reason(effort).contains("thinking tokens"));
    // n = 1 and zero penalties are fine.
    let mut fine = with("n", json!(1));
    fine["frequency_penalty"] = json!(0);
    assert!(chat_request(&fine, MODEL, &anthropic()).is_ok());
}

#[test]
fn invalid_requests() {
    let bad = [
        json!({"model": "m"}),
        json!({"model": "m", "messages": [{"content": "no role"}]}),
        json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
        json!({"model": "m", "messages": [{"role": "assistant", "content": null, "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
        ]}]}),
        json!({"model": "m", "stop": 3, "messages": []}),
        json!({"model": "m", "tool_choice": "sometimes", "messages": []}),
    ];
    for request in bad {
        assert!(
            matches!(
                chat_request(&request, MODEL, &anthropic()),
                Err(TranslateError::Invalid(_))
            ),
            "{request}"
        );
    }
}

#[test]
fn reasoning_effort_fits_under_explicit_max_tokens() {
    let request = json!({"model": "m", "reasoning_effort": "high", "max_tokens": 5000,
        "messages": [{"role": "user", "content": "hi"}]});
    let translated = chat_request(&request, MODEL, &anthropic()).expect("ok");
    let value = body_json(&translated);
    assert_eq!(value["max_tokens"], 5000);
    assert_eq!(
        value["thinking"],
        json!({"type": "enabled", "budget_tokens": 4999})
    );
}

#[test]
fn error_bodies() {
    let translated = error_response(
        529,
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&translated).expect("JSON"),
        json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": "529"}})
    );
    let translated = error_response(429, b"slow down");
    assert_eq!(
        serde_json::from_slice::<Value>(&translated).expect("JSON"),
        json!({"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": "429"}})
    );
}

/// A stream as Anthropic documents it: text, then a tool call whose input arrives in pieces,
/// with pings, multi-byte characters and CRLF line ends on some events.
const STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":10,\"cache_read_input_tokens\":20,\"output_tokens\":2},\"content\":[],\"stop_reason\":null}}\n\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"The user wants weather.\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCgIYAhIM\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\r\n",
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n\r\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay, let's check \"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"the weather — São Paulo ☀\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"São Paulo\\\"}\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

#[derive(Debug, Default, PartialEq)]
struct Collected {
    role: Option<String>,
    text: String,
    reasoning: String,
    tool_id: Option<String>,
    tool_name: Option<String>,
    arguments: String,
    finish: Option<String>,
    usage: Option<Value>,
    done: bool,
    errors: Vec<Value>,
}

fn collect(output: &[u8]) -> Collected {
    let text = std::str::from_utf8(output).expect("UTF-8 output");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let mut collected = Collected::default();
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        let data = event.strip_prefix("data: ").expect("data event");
        if data == "[DONE]" {
            collected.done = true;
            continue;
        }
        let value: Value = serde_json::from_str(data).expect("JSON event");
        if value.get("error").is_some() {
            collected.errors.push(value);
            continue;
        }
        assert_eq!(value["object"], "chat.completion.chunk");
        assert_eq!(value["id"], "msg_014p7gG3wDgGV9EUtLvnow3U");
        assert_eq!(value["model"], "claude-sonnet-4-5-20250929");
        if let Some(usage) = value.get("usage") {
            assert_eq!(value["choices"], json!([]));
            collected.usage = Some(usage.clone());
            continue;
        }
        let choice = &value["choices"][0];
        let delta = &choice["delta"];
        if let Some(role) = delta["role"].as_str() {
            collected.role = Some(role.to_string());
        }
        collected
            .text
            .push_str(delta["content"].as_str().unwrap_or(""));
        collected
            .reasoning
            .push_str(delta["reasoning_content"].as_str().unwrap_or(""));
        if let Some(call) = delta["tool_calls"].get(0) {
            assert_eq!(call["index"], 0);
            if let Some(id) = call["id"].as_str() {
                collected.tool_id = Some(id.to_string());
            }
            if let Some(name) = call["function"]["name"].as_str() {
                collected.tool_name = Some(name.to_string());
            }
            collected
                .arguments
                .push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(finish) = choice["finish_reason"].as_str() {
            collected.finish = Some(finish.to_string());
        }
    }
    collected
}

#[test]
fn stream_split_at_every_offset() {
    let bytes = STREAM.as_bytes();
    let mut reference: Option<Collected> = None;
    // Every phase of a few chunk sizes, then every cut into two pieces.
    let mut splits: Vec<(usize, usize)> = Vec::new();
    for size in [1, 2, 3, 7, 64] {
        splits.extend((0..size).map(|first| (first, size)));
    }
    splits.extend((0..=bytes.len()).map(|cut| (cut, bytes.len())));
    for (first, size) in splits {
        {
            let mut stream = ChatStream::new(MODEL);
            let mut output = stream.feed(&bytes[..first]).expect("feeds");
            for chunk in bytes[first..].chunks(size) {
                output.extend(stream.feed(chunk).expect("feeds"));
            }
            output.extend(stream.finish().expect("finishes"));
            let collected = collect(&output);
            assert_eq!(
                stream.usage(),
                TokenUsage {
                    input: Some(502),
                    cached_input: Some(20),
                    cache_creation_input: Some(10),
                    output: Some(89),
                    total: Some(591),
                    reasoning: None,
                },
                "size {size} first {first}"
            );
            assert_eq!(
                stream.model().as_deref(),
                Some("claude-sonnet-4-5-20250929")
            );
            match &reference {
                Some(reference) => assert_eq!(&collected, reference, "size {size} first {first}"),
                None => reference = Some(collected),
            }
        }
    }
    let collected = reference.expect("ran");
    assert_eq!(collected.role.as_deref(), Some("assistant"));
    assert_eq!(
        collected.text,
        "Okay, let's check the weather — São Paulo ☀"
    );
    assert_eq!(collected.reasoning, "The user wants weather.");
    assert_eq!(
        collected.tool_id.as_deref(),
        Some("toolu_01T1x1fJ34qAmk2tNTrN7Up6")
    );
    assert_eq!(collected.tool_name.as_deref(), Some("get_weather"));
    assert_eq!(
        serde_json::from_str::<Value>(&collected.arguments).expect("arguments are JSON"),
        json!({"location": "São Paulo"})
    );
    assert_eq!(collected.finish.as_deref(), Some("tool_calls"));
    assert_eq!(
        collected.usage,
        Some(json!({
            "prompt_tokens": 502,
            "completion_tokens": 89,
            "total_tokens": 591,
            "prompt_tokens_details": {"cached_tokens": 20, "cache_creation_tokens": 10}
        }))
    );
    assert!(collected.done);
    assert!(collected.errors.is_empty());
}

#[test]
fn stream_events_are_sent_as_soon_as_complete() {
    let mut stream = ChatStream::new(MODEL);
    let end = STREAM.find("event: ping").expect("ping");
    let out = stream.feed(&STREAM.as_bytes()[..end - 1]).expect("feeds");
    assert!(out.is_empty(), "the blank line has not arrived yet");
    let out = stream.feed(b"\n").expect("feeds");
    assert!(
        std::str::from_utf8(&out)
            .expect("UTF-8")
            .contains("\"role\":\"assistant\"")
    );
    assert_eq!(stream.usage().input, Some(502));
    assert_eq!(stream.usage().output, Some(2));
}

#[test]
fn stream_error_event() {
    let mut stream = ChatStream::new(MODEL);
    let mut out = stream
        .feed(
            STREAM
                .split("event: ping")
                .next()
                .expect("start")
                .as_bytes(),
        )
        .expect("feeds");
    out.extend(
        stream
            .feed(b"event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n")
            .expect("feeds"),
    );
    out.extend(stream.finish().expect("finishes"));
    let collected = collect(&out);
    assert_eq!(
        collected.errors,
        vec![
            json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": null}})
        ]
    );
    assert!(collected.done);
    // A stream that is not JSON is the provider's fault.
    let mut stream = ChatStream::new(MODEL);
    assert!(matches!(
        stream.feed(b"data: {broken\n\n"),
        Err(TranslateError::Upstream(_))
    ));
}

#[test]
fn stream_without_trailing_blank_line_is_flushed_on_finish() {
    let mut stream = ChatStream::new(MODEL);
    let trimmed = STREAM.trim_end();
    let mut out = stream.feed(trimmed.as_bytes()).expect("feeds");
    out.extend(stream.finish().expect("finishes"));
    assert_eq!(collect(&out).finish.as_deref(), Some("tool_calls"));
    assert_eq!(stream.finish().expect("finishes twice"), Vec::<u8>::new());
}

// ---- The Messages API passed to Anthropic-family backends ----

fn messages_text(name: &str) -> String {
    fixture_text(&format!("messages/{name}"))
}

fn messages_fixture(name: &str) -> Value {
    fixture_json(&format!("messages/{name}"))
}

/// What [`Messages`] for `target` sends for `input` asked for `model`, streamed or not, with
/// the `client` headers.
fn messages_upstream(
    target: AnthropicTarget,
    input: &Value,
    model: &str,
    stream: bool,
    client: &[(&str, &str)],
) -> UpstreamRequest {
    Messages(target)
        .request(input, &request_ctx(model, stream, &headers(client)))
        .expect("translates")
}

#[test]
fn messages_request_to_anthropic() {
    let input = messages_fixture("request_tools.messages.json");
    let out = messages_upstream(anthropic(), &input, "claude-opus-4-1-20250805", false, &[]);
    assert_eq!(out.path, "/v1/messages");
    assert_eq!(
        body_json(&out),
        messages_fixture("request_tools.anthropic.json")
    );
    assert_eq!(
        out.headers,
        headers(&[("anthropic-version", ANTHROPIC_VERSION)])
    );

    // The client's version is kept; the prefix loses its slashes.
    let prefixed = AnthropicTarget::Anthropic {
        prefix: "/anthropic/v1/".into(),
    };
    let client = [("anthropic-version", "2024-01-01")];
    let out = messages_upstream(prefixed, &input, "claude-opus-4-1", true, &client);
    assert_eq!(out.path, "/anthropic/v1/messages");
    assert_eq!(out.headers, headers(&client));
}

#[test]
fn messages_request_to_gcp() {
    let mut input = messages_fixture("request_tools.messages.json");
    let model = "claude-opus-4-1@20250805";
    let out = messages_upstream(gcp("vertex-2023-10-16"), &input, model, false, &[]);
    let expected = messages_fixture("request_tools.gcp.json");
    assert_sent(
        &out,
        "publishers/anthropic/models/claude-opus-4-1@20250805:rawPredict",
        &expected,
    );

    input["stream"] = json!(true);
    let out = messages_upstream(gcp("vertex-2023-10-16"), &input, model, true, &[]);
    let mut expected = expected;
    expected["stream"] = json!(true);
    assert_sent(
        &out,
        "publishers/anthropic/models/claude-opus-4-1@20250805:streamRawPredict",
        &expected,
    );
}

/// Asserts that `out` goes to `path` with `body` and no headers of its own.
fn assert_sent(out: &UpstreamRequest, path: &str, body: &Value) {
    assert_eq!(out.path, path);
    assert_eq!(&body_json(out), body, "{path}");
    assert!(out.headers.is_empty(), "{path}");
}

#[test]
fn messages_request_to_gcp_needs_a_version() {
    let input = messages_fixture("request_tools.messages.json");
    let mut translator = Messages(gcp(""));
    let none = headers(&[]);
    match translator.request(
        &input,
        &request_ctx("claude-opus-4-1@20250805", false, &none),
    ) {
        Err(TranslateError::Unsupported(reason)) => {
            assert!(
                reason.contains("AIServiceBackend schema version"),
                "{reason}"
            )
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn messages_request_to_aws() {
    let mut input = messages_fixture("request_tools.messages.json");
    let betas = [
        ("anthropic-beta", "token-efficient-tools-2025-02-19, "),
        ("content-type", "application/json"),
        ("anthropic-beta", " interleaved-thinking-2025-05-14"),
    ];
    let model = "anthropic.claude-opus-4-1-20250805-v1:0";
    let out = messages_upstream(aws(""), &input, model, false, &betas);
    let mut expected = messages_fixture("request_tools.aws.json");
    assert_sent(
        &out,
        "/model/anthropic.claude-opus-4-1-20250805-v1:0/invoke",
        &expected,
    );

    // The stream is removed, no beta header.
    input["stream"] = json!(true);
    let profile = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-opus-4-1-20250805-v1:0";
    let out = messages_upstream(aws("bedrock-2099-01-01"), &input, profile, true, &[]);
    let object = expected.as_object_mut().expect("object");
    object.remove("anthropic_beta");
    object.insert("anthropic_version".into(), json!("bedrock-2099-01-01"));
    assert_sent(
        &out,
        "/model/arn:aws:bedrock:us-east-1:123456789012:inference-profile%2Fus.anthropic.claude-opus-4-1-20250805-v1:0/invoke-with-response-stream",
        &expected,
    );
}

#[test]
fn messages_request_without_model_or_messages_is_invalid() {
    let none = headers(&[]);
    for target in [anthropic(), gcp("vertex-2023-10-16"), aws("")] {
        let mut translator = Messages(target);
        for bad in [
            json!({"max_tokens": 10, "messages": []}),
            json!({"model": "m", "max_tokens": 10}),
            json!({"model": 7, "messages": []}),
            json!({"model": "m", "messages": "hi"}),
            json!(["not", "an", "object"]),
        ] {
            assert!(
                matches!(
                    translator.request(&bad, &request_ctx("m", false, &none)),
                    Err(TranslateError::Invalid(_))
                ),
                "{bad}"
            );
        }
    }
}

#[test]
fn messages_response_passes_through_with_usage() {
    let body = messages_text("response_message.anthropic.json");
    let translated = Messages(anthropic())
        .response(body.as_bytes(), &response_ctx("claude-sonnet-4-5"))
        .expect("passes");
    assert_eq!(translated.body, body.as_bytes());
    assert_eq!(
        translated.usage,
        TokenUsage {
            input: Some(2095 + 1500 + 100),
            cached_input: Some(1500),
            cache_creation_input: Some(100),
            output: Some(503),
            total: Some(2095 + 1500 + 100 + 503),
            reasoning: None,
        }
    );
    assert_eq!(
        translated.model.as_deref(),
        Some("claude-sonnet-4-5-20250929")
    );

    // Bedrock answers without a model: the requested one is reported.
    let mut value = messages_fixture("response_message.anthropic.json");
    value.as_object_mut().expect("object").remove("model");
    value["usage"] = json!({"input_tokens": 10, "output_tokens": 3});
    let bytes = value.to_string().into_bytes();
    let translated = Messages(aws(""))
        .response(&bytes, &response_ctx("anthropic.claude-3-haiku"))
        .expect("passes");
    assert_eq!(translated.body, bytes);
    assert_eq!(
        translated.model.as_deref(),
        Some("anthropic.claude-3-haiku")
    );
    assert_eq!(
        translated.usage,
        TokenUsage {
            input: Some(10),
            cached_input: None,
            cache_creation_input: None,
            output: Some(3),
            total: Some(13),
            reasoning: None,
        }
    );
}

#[test]
fn messages_errors_have_the_anthropic_shape() {
    let translator = Messages(anthropic());
    let ctx = response_ctx(MODEL);
    let error = |status: u16, body: &str| -> Value {
        serde_json::from_slice(&translator.error(status, body.as_bytes(), &ctx)).expect("JSON")
    };
    // Already Anthropic-shaped: kept byte for byte.
    let anthropic_body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#;
    assert_eq!(
        translator.error(529, anthropic_body.as_bytes(), &ctx),
        anthropic_body.as_bytes()
    );
    // Bedrock: {"message": ...}.
    assert_eq!(
        error(
            429,
            r#"{"message":"Too many requests, please wait before trying again."}"#
        ),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Too many requests, please wait before trying again."}})
    );
    assert_eq!(
        error(400, r#"{"Message":"Malformed input request"}"#),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "Malformed input request"}})
    );
    // GCP: a list around a Google error.
    assert_eq!(
        error(
            404,
            r#"[{"error":{"code":404,"message":"Publisher model not found.","status":"NOT_FOUND"}}]"#
        ),
        json!({"type": "error", "error": {"type": "not_found_error", "message": "Publisher model not found."}})
    );
    // Plain text and empty bodies.
    assert_eq!(
        error(503, "upstream connect error\n"),
        json!({"type": "error", "error": {"type": "service_unavailable_error", "message": "upstream connect error"}})
    );
    assert_eq!(
        error(500, ""),
        json!({"type": "error", "error": {"type": "internal_server_error", "message": "the provider answered with status 500"}})
    );
}

/// Feeds `input` to a fresh stream in pieces of `size` bytes; returns the output.
fn run_stream(
    mut stream: Box<dyn StreamTranslator>,
    input: &[u8],
    size: usize,
) -> (Vec<u8>, Box<dyn StreamTranslator>) {
    let mut out = Vec::new();
    for chunk in input.chunks(size.max(1)) {
        out.extend(stream.feed(chunk).expect("feeds"));
    }
    out.extend(stream.finish().expect("finishes"));
    (out, stream)
}

#[test]
fn messages_stream_passes_anthropic_events_through() {
    let input = messages_text("stream_anthropic.sse");
    for target in [anthropic(), gcp("vertex-2023-10-16")] {
        let translator = Messages(target);
        for size in [1, 2, 5, 64, input.len()] {
            let (out, stream) = run_stream(
                translator.stream(&response_ctx(MODEL)),
                input.as_bytes(),
                size,
            );
            assert_eq!(out, input.as_bytes(), "size {size}");
            assert_eq!(
                stream.usage(),
                TokenUsage {
                    input: Some(25 + 1000 + 2000),
                    cached_input: Some(2000),
                    cache_creation_input: Some(1000),
                    output: Some(89),
                    total: Some(3025 + 89),
                    reasoning: None,
                },
                "size {size}"
            );
            assert_eq!(
                stream.model().as_deref(),
                Some("claude-sonnet-4-5-20250929")
            );
        }
    }
}

#[test]
fn messages_stream_pass_through_reads_usage_as_it_arrives() {
    let input = messages_text("stream_anthropic.sse");
    let mut stream = Messages(anthropic()).stream(&response_ctx(MODEL));
    let end = input.find("event: content_block_start").expect("start");
    let out = stream.feed(&input.as_bytes()[..end - 1]).expect("feeds");
    assert_eq!(
        out,
        &input.as_bytes()[..end - 1],
        "bytes are never held back"
    );
    assert_eq!(stream.usage().input, None, "the event is not complete yet");
    stream.feed(b"\n").expect("feeds");
    assert_eq!(stream.usage().input, Some(3025));
    assert_eq!(stream.usage().output, Some(1));
    // A last event without its blank line is read at the end.
    let cut = input.find("event: message_stop").expect("stop") - 1;
    let mut stream = Messages(anthropic()).stream(&response_ctx(MODEL));
    stream.feed(&input.as_bytes()[..cut]).expect("feeds");
    assert_eq!(stream.usage().output, Some(1));
    assert_eq!(stream.finish().expect("finishes"), Vec::<u8>::new());
    assert_eq!(stream.usage().output, Some(89));
}

/// A Bedrock `chunk` frame around one Anthropic event.
fn bedrock_chunk(event: &str) -> Vec<u8> {
    use base64::Engine as _;
    let payload = json!({
        "bytes": base64::engine::general_purpose::STANDARD.encode(event),
        "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0",
    });
    super::super::eventstream::encode(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

fn bedrock_stream_bytes() -> Vec<u8> {
    messages_text("stream_bedrock.events.jsonl")
        .lines()
        .flat_map(bedrock_chunk)
        .collect()
}

fn aws_messages() -> Messages {
    Messages(aws(""))
}

#[test]
fn messages_stream_from_bedrock_event_stream() {
    let input = bedrock_stream_bytes();
    let expected = messages_text("stream_bedrock.expected.sse");
    let (whole, _) = run_stream(
        aws_messages().stream(&response_ctx(MODEL)),
        &input,
        input.len(),
    );
    assert_eq!(String::from_utf8(whole).expect("UTF-8"), expected);
    for size in [1, 3, 7, 100] {
        let (out, stream) = run_stream(aws_messages().stream(&response_ctx(MODEL)), &input, size);
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            expected,
            "size {size}"
        );
        assert_eq!(
            stream.usage(),
            TokenUsage {
                input: Some(25 + 300),
                cached_input: Some(300),
                cache_creation_input: Some(0),
                output: Some(15),
                total: Some(340),
                reasoning: None,
            }
        );
        assert_eq!(
            stream.model().as_deref(),
            Some("claude-3-7-sonnet-20250219")
        );
    }
}

#[test]
fn messages_stream_from_bedrock_sends_each_event_at_once() {
    let first = bedrock_chunk(r#"{"type":"ping"}"#);
    let mut stream = aws_messages().stream(&response_ctx(MODEL));
    assert!(
        stream
            .feed(&first[..first.len() - 1])
            .expect("feeds")
            .is_empty()
    );
    assert_eq!(
        stream.feed(&first[first.len() - 1..]).expect("feeds"),
        b"event: ping\ndata: {\"type\":\"ping\"}\n\n"
    );
    // An event spread over lines is sent on one.
    let out = stream
        .feed(&bedrock_chunk(
            "{\n  \"type\": \"content_block_stop\",\n  \"index\": 0\n}",
        ))
        .expect("feeds");
    assert_eq!(
        only_event(&out, "content_block_stop"),
        json!({"type": "content_block_stop", "index": 0})
    );
}

/// The data of `out`, which must be one Anthropic event of type `event`, as JSON.
fn only_event(out: &[u8], event: &str) -> Value {
    let text = std::str::from_utf8(out).expect("UTF-8");
    let data = text
        .strip_prefix(&format!("event: {event}\ndata: "))
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("one {event} event: {text}"));
    serde_json::from_str(data).expect("JSON")
}

#[test]
fn messages_stream_from_bedrock_exceptions_and_damage() {
    let exception = super::super::eventstream::encode(
        &[
            (":exception-type", "throttlingException"),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        br#"{"message":"Too many requests, please wait before trying again."}"#,
    );
    let mut stream = aws_messages().stream(&response_ctx(MODEL));
    let out = stream.feed(&exception).expect("feeds");
    assert_eq!(
        only_event(&out, "error"),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Too many requests, please wait before trying again."}})
    );

    // Every exception type maps through the one Bedrock table.
    for (exception, kind) in [
        ("modelTimeoutException", "timeout_error"),
        ("serviceQuotaExceededException", "rate_limit_error"),
        ("modelNotReadyException", "service_unavailable_error"),
        ("accessDeniedException", "permission_error"),
    ] {
        let frame = super::super::eventstream::encode(
            &[
                (":exception-type", exception),
                (":message-type", "exception"),
            ],
            br#"{"message":"boom"}"#,
        );
        let out = aws_messages()
            .stream(&response_ctx(MODEL))
            .feed(&frame)
            .expect("feeds");
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(
            text.contains(&format!(r#""type":"{kind}""#)),
            "{exception}: {text}"
        );
    }

    // A stream cut inside a frame.
    let frame = bedrock_chunk(r#"{"type":"ping"}"#);
    let mut stream = aws_messages().stream(&response_ctx(MODEL));
    stream.feed(&frame[..10]).expect("feeds");
    assert!(matches!(stream.finish(), Err(TranslateError::Upstream(_))));

    // Chunks that are not what Bedrock documents.
    for payload in [
        r#"{"bytes":"not base64!"}"#,
        r#"{"nobytes":true}"#,
        "not json",
    ] {
        let frame = super::super::eventstream::encode(
            &[(":event-type", "chunk"), (":message-type", "event")],
            payload.as_bytes(),
        );
        let mut stream = aws_messages().stream(&response_ctx(MODEL));
        assert!(
            matches!(stream.feed(&frame), Err(TranslateError::Upstream(_))),
            "{payload}"
        );
    }
}

#[test]
fn chat_stream_from_bedrock_event_stream_matches_the_sse_form() {
    // The same Anthropic events, once as Bedrock event-stream frames and once as SSE, give the
    // same OpenAI chunks and usage.
    let frames = bedrock_stream_bytes();
    let sse: Vec<u8> = messages_text("stream_bedrock.events.jsonl")
        .lines()
        .flat_map(|event| format!("data: {event}\n\n").into_bytes())
        .collect();
    let aws = OpenAiChat(aws(""));
    let direct = OpenAiChat(AnthropicTarget::Anthropic {
        prefix: "v1".into(),
    });
    let (expected, reference) = run_stream(direct.stream(&response_ctx(MODEL)), &sse, sse.len());
    let expected = String::from_utf8(expected).expect("UTF-8");
    assert!(expected.contains("chat.completion.chunk"), "{expected}");
    assert!(expected.ends_with("data: [DONE]\n\n"), "{expected}");
    for size in [1, 5, frames.len()] {
        let (out, stream) = run_stream(aws.stream(&response_ctx(MODEL)), &frames, size);
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            expected,
            "size {size}"
        );
        assert_eq!(stream.usage(), reference.usage());
        assert_eq!(stream.model(), reference.model());
    }
}

#[test]
fn absurd_numbers_saturate() {
    // A thinking budget next to u64::MAX used to overflow the defaulted max_tokens.
    let request = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "enabled", "budget_tokens": u64::MAX},
    });
    let out = chat_request(&request, MODEL, &anthropic()).expect("translates");
    assert_eq!(body_json(&out)["max_tokens"], json!(u64::MAX));
    // Counts a provider reports are added up without overflowing.
    let message = json!({
        "content": [],
        "usage": {
            "input_tokens": u64::MAX,
            "cache_read_input_tokens": 5,
            "cache_creation_input_tokens": 7,
            "output_tokens": u64::MAX,
        },
    });
    let (_, usage) = chat_response(message.to_string().as_bytes(), MODEL).expect("translates");
    assert_eq!(usage.input, Some(u64::MAX));
    assert_eq!(usage.total, Some(u64::MAX));
}

// ---- Token counting (`/anthropic/v1/messages/count_tokens`) ----

fn count_tokens_fixture(name: &str) -> Value {
    fixture_json(&format!("count_tokens/{name}.json"))
}

const COUNT_TOKENS_CASES: [&str; 3] = ["request_basic", "request_tools", "request_thinking"];

/// The target a fixture names, with the fixture's version or prefix.
fn count_tokens_target(name: &str, expected: &Value) -> AnthropicTarget {
    let text = |key: &str| expected[key].as_str().unwrap_or_default().to_string();
    match name {
        "anthropic" => AnthropicTarget::Anthropic {
            prefix: text("prefix"),
        },
        "gcp" => AnthropicTarget::GcpAnthropic {
            version: text("version"),
        },
        "aws" => AnthropicTarget::AwsAnthropic {
            version: text("version"),
        },
        other => panic!("unknown target {other}"),
    }
}

/// The base64 `invokeModel.body` of a Bedrock CountTokens request replaced by the JSON it
/// encodes.
fn decode_invoke_body(mut sent: Value) -> Value {
    let encoded = sent
        .pointer("/input/invokeModel/body")
        .and_then(Value::as_str)
        .expect("a base64 invokeModel body");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64");
    sent["input"]["invokeModel"]["body"] = serde_json::from_slice(&bytes).expect("JSON");
    sent
}

#[test]
fn count_tokens_request_fixtures() {
    for case in COUNT_TOKENS_CASES {
        let input = count_tokens_fixture(case);
        let upstream = count_tokens_fixture(&format!("{case}.upstream"));
        let client_headers =
            crate::translate::bedrock::test_support::headers_of(&upstream["client_headers"]);
        for name in ["anthropic", "gcp", "aws"] {
            let expected = &upstream[name];
            let mut translator = CountTokens(count_tokens_target(name, expected));
            let model = expected["model"].as_str().unwrap();
            let out = translator
                .request(&input, &request_ctx(model, false, &client_headers))
                .unwrap_or_else(|err| panic!("{case} {name}: {err}"));
            assert_eq!(
                out.path,
                expected["path"].as_str().unwrap(),
                "{case} {name}"
            );
            assert_eq!(
                out.headers,
                crate::translate::bedrock::test_support::headers_of(&expected["headers"]),
                "{case} {name}"
            );
            let sent = body_json(&out);
            let sent = if name == "aws" {
                assert_eq!(
                    sent.as_object().map(|o| o.len()),
                    Some(1),
                    "{case}: only input"
                );
                decode_invoke_body(sent)
            } else {
                sent
            };
            assert_eq!(sent, expected["body"], "{case} {name}");
        }
    }
}

#[test]
fn count_tokens_keeps_an_explicit_max_tokens_for_bedrock() {
    // An explicit max_tokens is kept; a null one is a missing one.
    for (version, max_tokens, expected) in [
        ("bedrock-2023-05-31", json!(10), json!(10)),
        ("", Value::Null, json!(DEFAULT_MAX_TOKENS)),
    ] {
        let input = json!({
            "model": MODEL,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hi"}],
        });
        let out = CountTokens(aws(version))
            .request(
                &input,
                &request_ctx("anthropic.claude-3-haiku-20240307-v1:0", false, &[]),
            )
            .expect("translates");
        let sent = decode_invoke_body(body_json(&out));
        assert_eq!(
            sent["input"]["invokeModel"]["body"]["max_tokens"], expected,
            "max_tokens {max_tokens}"
        );
    }
}

#[test]
fn count_tokens_models_for_bedrock() {
    for (model, counted) in [
        (
            "anthropic.claude-3-haiku-20240307-v1:0",
            "anthropic.claude-3-haiku-20240307-v1:0",
        ),
        (
            "eu.anthropic.claude-3-haiku-20240307-v1:0",
            "anthropic.claude-3-haiku-20240307-v1:0",
        ),
        (
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
            "anthropic.claude-3-haiku-20240307-v1:0",
        ),
        (
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3",
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3",
        ),
        ("amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"),
    ] {
        assert_eq!(bedrock_count_tokens_model(model), counted, "{model}");
    }
    // What remains is escaped as a path segment.
    let out = CountTokens(aws(""))
        .request(
            &count_tokens_fixture("request_basic"),
            &request_ctx(
                "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3",
                false,
                &[],
            ),
        )
        .expect("translates");
    assert_eq!(
        out.path,
        "/model/arn:aws:bedrock:us-east-1:123456789012:application-inference-profile%2Fa1b2c3/count-tokens"
    );
}

#[test]
fn count_tokens_for_gcp_needs_a_version() {
    let mut translator = CountTokens(gcp(""));
    let err = translator
        .request(
            &count_tokens_fixture("request_basic"),
            &request_ctx("claude-sonnet-4-5@20250929", false, &[]),
        )
        .expect_err("no version");
    assert!(
        matches!(&err, TranslateError::Unsupported(reason) if reason.contains("anthropic_version")),
        "{err:?}"
    );
}

#[test]
fn count_tokens_refuses_streaming_and_malformed_requests() {
    let targets = [anthropic(), gcp("vertex-2023-10-16"), aws("")];
    let cases = [
        (
            json!({"model": MODEL, "stream": true, "messages": []}),
            false,
            "stream",
        ),
        (json!({"model": MODEL, "messages": []}), true, "stream"),
        (json!({"messages": []}), false, "model"),
        (json!({"model": MODEL}), false, "messages"),
        (json!([1, 2]), false, "object"),
    ];
    for target in targets {
        for (input, stream, reason) in &cases {
            let mut translator = CountTokens(target.clone());
            let err = translator
                .request(input, &request_ctx(MODEL, *stream, &[]))
                .expect_err("refused");
            assert!(
                matches!(&err, TranslateError::Invalid(text) if text.contains(reason)),
                "{target:?} {input}: {err:?}"
            );
        }
    }
}

#[test]
fn count_tokens_response_fixtures() {
    for name in ["anthropic", "gcp", "aws"] {
        let case = count_tokens_fixture(&format!("response_{name}"));
        assert_eq!(case["target"], name);
        let translator = CountTokens(count_tokens_target(name, &json!({})));
        let provider = case["provider"].to_string();
        let out = translator
            .response(provider.as_bytes(), &response_ctx(MODEL))
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let answer: Value = serde_json::from_slice(&out.body).expect("JSON");
        assert_eq!(answer, case["client"], "{name}");
        assert_eq!(
            out.usage,
            TokenUsage {
                input: case["usage"]["input"].as_u64(),
                ..TokenUsage::default()
            },
            "{name}"
        );
        assert_eq!(out.model.as_deref(), Some(MODEL));
        if name != "aws" {
            // Anthropic's own answer passes byte for byte.
            assert_eq!(out.body, provider.as_bytes(), "{name}");
        }
    }
}

#[test]
fn count_tokens_bad_answers() {
    let aws = CountTokens(aws(""));
    assert_bad_answers(
        &aws,
        MODEL,
        &[
            b"not json",
            b"{}",
            br#"{"inputTokens":"12"}"#,
            br#"{"inputTokens":-1}"#,
            br#"{"input_tokens":12}"#,
        ],
    );
    // Anthropic's answer passes whatever it holds; no count, no usage.
    let direct = CountTokens(anthropic());
    let out = direct
        .response(br#"{"unexpected":true}"#, &response_ctx(MODEL))
        .expect("passes");
    assert_eq!(out.body, br#"{"unexpected":true}"#);
    assert_eq!(out.usage, TokenUsage::default());
}

#[test]
fn count_tokens_errors_have_the_anthropic_shape() {
    let ctx = response_ctx(MODEL);
    let error = |target: AnthropicTarget, status: u16, body: &str| -> Value {
        let translator = CountTokens(target);
        serde_json::from_slice(&translator.error(status, body.as_bytes(), &ctx)).expect("JSON")
    };
    // Anthropic: kept as it is.
    let anthropic_body =
        r#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-x"}}"#;
    assert_eq!(
        CountTokens(anthropic()).error(404, anthropic_body.as_bytes(), &ctx),
        anthropic_body.as_bytes()
    );
    // Bedrock CountTokens refusing a model.
    assert_eq!(
        error(
            aws(""),
            400,
            r#"{"message":"The provided model doesn't support counting tokens."}"#
        ),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "The provided model doesn't support counting tokens."}})
    );
    // Vertex AI: a list around a Google error.
    assert_eq!(
        error(
            gcp("vertex-2023-10-16"),
            429,
            r#"[{"error":{"code":429,"message":"Quota exceeded.","status":"RESOURCE_EXHAUSTED"}}]"#
        ),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Quota exceeded."}})
    );
}

#[test]
fn count_tokens_never_streams() {
    // Should a provider stream anyway, the bytes pass untouched and no usage is read.
    let translator = CountTokens(aws(""));
    let mut stream = translator.stream(&response_ctx(MODEL));
    assert_eq!(
        stream.feed(br#"{"inputTokens":3}"#).expect("passes"),
        br#"{"inputTokens":3}"#
    );
    assert_eq!(stream.usage(), TokenUsage::default());
}
