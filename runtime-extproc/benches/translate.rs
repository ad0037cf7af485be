//! Translation benchmark: the time the extproc spends translating one request, one buffered
//! response and one streamed chunk, for each (client API, provider) pair it translates.
//!
//! Inputs are typical: a chat request with a system prompt, three turns and one tool (about
//! 1.3 KiB), a buffered answer with usage, and a stream of 200 text deltas in the provider's
//! own framing (server-sent events, or AWS event-stream frames), fed one provider event at a
//! time as Envoy delivers them. Each figure is the median of 7 timed runs.
//!
//! Run: `cargo bench -p aigw-extproc --bench translate` (release build).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark binary")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use aigw_extproc::endpoint::Endpoint;
use aigw_extproc::testing::event_frame;
use aigw_extproc::translate::{self, RequestContext, ResponseContext};
use aigw_filterconfig::{ApiSchema, BackendSchema};
use base64::Engine as _;
use serde_json::{Value, json};

const DELTAS: usize = 200;
const RUNS: usize = 7;

fn schema(name: ApiSchema, version: Option<&str>) -> BackendSchema {
    BackendSchema {
        name,
        version: version.map(str::to_string),
        prefix: None,
    }
}

fn chat_request() -> Value {
    json!({
        "model": "bench-model",
        "messages": [
            {"role": "system", "content": "You are a concise assistant for an online bookshop. Answer in two sentences at most and never invent prices."},
            {"role": "user", "content": "Do you have the second volume of the history of Rome we talked about, and how long would delivery to Lyon take?"},
            {"role": "assistant", "content": "Let me check the stock for you.", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "stock", "arguments": "{\"isbn\":\"9780140449303\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"in_stock\": 3, \"warehouse\": \"Paris\", \"delivery_days\": {\"FR\": 2, \"EU\": 4}}"},
        ],
        "tools": [{"type": "function", "function": {"name": "stock", "description": "Stock level and delivery estimate of a book by ISBN", "parameters": {"type": "object", "properties": {"isbn": {"type": "string", "description": "ISBN-13"}}, "required": ["isbn"]}}}],
        "temperature": 0.3,
        "max_tokens": 256,
    })
}

fn messages_request() -> Value {
    json!({
        "model": "bench-model",
        "max_tokens": 256,
        "system": "You are a concise assistant for an online bookshop. Answer in two sentences at most and never invent prices.",
        "messages": [
            {"role": "user", "content": "Do you have the second volume of the history of Rome we talked about, and how long would delivery to Lyon take?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me check the stock for you."}, {"type": "tool_use", "id": "toolu_1", "name": "stock", "input": {"isbn": "9780140449303"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "{\"in_stock\": 3, \"warehouse\": \"Paris\", \"delivery_days\": {\"FR\": 2, \"EU\": 4}}"}]},
        ],
        "tools": [{"name": "stock", "description": "Stock level and delivery estimate of a book by ISBN", "input_schema": {"type": "object", "properties": {"isbn": {"type": "string", "description": "ISBN-13"}}, "required": ["isbn"]}}],
        "temperature": 0.3,
    })
}

const ANSWER: &str = "Yes, we have three copies of the second volume in our Paris warehouse; delivery to Lyon takes about two days.";

fn anthropic_events() -> Vec<Value> {
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "bench-model", "content": [], "stop_reason": null, "usage": {"input_tokens": 310, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ];
    for i in 0..DELTAS {
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": format!("tok{i} ")}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 200}}));
    events.push(json!({"type": "message_stop"}));
    events
}

fn sse(events: &[Value], named: bool) -> Vec<Vec<u8>> {
    events
        .iter()
        .map(|e| {
            let name = e["type"].as_str().filter(|_| named);
            match name {
                Some(name) => format!("event: {name}\ndata: {e}\n\n").into_bytes(),
                None => format!("data: {e}\n\n").into_bytes(),
            }
        })
        .collect()
}

fn converse_frames() -> Vec<Vec<u8>> {
    let mut frames = vec![event_frame("messageStart", br#"{"role":"assistant"}"#)];
    for i in 0..DELTAS {
        frames.push(event_frame(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": format!("tok{i} ")}})
                .to_string()
                .as_bytes(),
        ));
    }
    frames.push(event_frame(
        "contentBlockStop",
        br#"{"contentBlockIndex":0}"#,
    ));
    frames.push(event_frame("messageStop", br#"{"stopReason":"end_turn"}"#));
    frames.push(event_frame(
        "metadata",
        br#"{"usage":{"inputTokens":310,"outputTokens":200,"totalTokens":510},"metrics":{"latencyMs":900}}"#,
    ));
    frames
}

fn bedrock_anthropic_frames() -> Vec<Vec<u8>> {
    anthropic_events()
        .iter()
        .map(|e| {
            let bytes = base64::engine::general_purpose::STANDARD.encode(e.to_string());
            event_frame("chunk", json!({"bytes": bytes}).to_string().as_bytes())
        })
        .collect()
}

fn gemini_events() -> Vec<Vec<u8>> {
    let mut events: Vec<Value> = (0..DELTAS)
        .map(|i| json!({"candidates": [{"content": {"role": "model", "parts": [{"text": format!("tok{i} ")}]}}], "modelVersion": "gemini-2.5-flash"}))
        .collect();
    events.push(json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 310, "candidatesTokenCount": 200, "totalTokenCount": 510}}));
    sse(&events, false)
}

fn openai_events() -> Vec<Vec<u8>> {
    let mut events = vec![
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "bench-model", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
    ];
    for i in 0..DELTAS {
        events.push(json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "bench-model", "choices": [{"index": 0, "delta": {"content": format!("tok{i} ")}, "finish_reason": null}]}));
    }
    events.push(json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "bench-model", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
    events.push(json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "bench-model", "choices": [], "usage": {"prompt_tokens": 310, "completion_tokens": 200, "total_tokens": 510}}));
    let mut out = sse(&events, false);
    out.push(b"data: [DONE]\n\n".to_vec());
    out
}

struct Case {
    name: &'static str,
    schema: BackendSchema,
    endpoint: Endpoint,
    request: Value,
    response: Vec<u8>,
    stream: Vec<Vec<u8>>,
}

fn cases() -> Vec<Case> {
    let anthropic_response = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "bench-model", "content": [{"type": "text", "text": ANSWER}], "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 310, "output_tokens": 28}}).to_string().into_bytes();
    let converse_response = json!({"output": {"message": {"role": "assistant", "content": [{"text": ANSWER}]}}, "stopReason": "end_turn", "usage": {"inputTokens": 310, "outputTokens": 28, "totalTokens": 338}, "metrics": {"latencyMs": 900}}).to_string().into_bytes();
    let gemini_response = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ANSWER}]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 310, "candidatesTokenCount": 28, "totalTokenCount": 338}, "modelVersion": "gemini-2.5-flash"}).to_string().into_bytes();
    let openai_response = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "bench-model", "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 310, "completion_tokens": 28, "total_tokens": 338}}).to_string().into_bytes();
    vec![
        Case {
            name: "chat → Anthropic",
            schema: schema(ApiSchema::Anthropic, None),
            endpoint: Endpoint::ChatCompletions,
            request: chat_request(),
            response: anthropic_response.clone(),
            stream: sse(&anthropic_events(), true),
        },
        Case {
            name: "chat → GCP Anthropic",
            schema: schema(ApiSchema::GCPAnthropic, Some("vertex-2023-10-16")),
            endpoint: Endpoint::ChatCompletions,
            request: chat_request(),
            response: anthropic_response.clone(),
            stream: sse(&anthropic_events(), true),
        },
        Case {
            name: "chat → AWS Anthropic",
            schema: schema(ApiSchema::AWSAnthropic, None),
            endpoint: Endpoint::ChatCompletions,
            request: chat_request(),
            response: anthropic_response.clone(),
            stream: bedrock_anthropic_frames(),
        },
        Case {
            name: "chat → Bedrock Converse",
            schema: schema(ApiSchema::AWSBedrock, None),
            endpoint: Endpoint::ChatCompletions,
            request: chat_request(),
            response: converse_response.clone(),
            stream: converse_frames(),
        },
        Case {
            name: "chat → Vertex Gemini",
            schema: schema(ApiSchema::GCPVertexAI, None),
            endpoint: Endpoint::ChatCompletions,
            request: chat_request(),
            response: gemini_response,
            stream: gemini_events(),
        },
        Case {
            name: "messages → Anthropic (pass-through)",
            schema: schema(ApiSchema::Anthropic, None),
            endpoint: Endpoint::Messages,
            request: messages_request(),
            response: anthropic_response.clone(),
            stream: sse(&anthropic_events(), true),
        },
        Case {
            name: "messages → AWS Anthropic",
            schema: schema(ApiSchema::AWSAnthropic, None),
            endpoint: Endpoint::Messages,
            request: messages_request(),
            response: anthropic_response,
            stream: bedrock_anthropic_frames(),
        },
        Case {
            name: "messages → Bedrock Converse",
            schema: schema(ApiSchema::AWSBedrock, None),
            endpoint: Endpoint::Messages,
            request: messages_request(),
            response: converse_response,
            stream: converse_frames(),
        },
        Case {
            name: "messages → OpenAI",
            schema: schema(ApiSchema::OpenAI, None),
            endpoint: Endpoint::Messages,
            request: messages_request(),
            response: openai_response,
            stream: openai_events(),
        },
    ]
}

/// Median over [`RUNS`] runs of the time per call of `f`, each run `iterations` calls.
fn median_per_call(iterations: usize, mut f: impl FnMut()) -> Duration {
    let mut runs: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            start.elapsed() / iterations as u32
        })
        .collect();
    runs.sort();
    runs[RUNS / 2]
}

fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn main() {
    let headers: Vec<(String, String)> = vec![("x-amzn-requestid".into(), "req-1".into())];
    println!("| translation | request (µs) | buffered response (µs) | streamed chunk (µs) |");
    println!("|---|---:|---:|---:|");
    for case in cases() {
        let request_ctx = RequestContext {
            model: "bench-model",
            stream: false,
            headers: &[],
        };
        let response_ctx = ResponseContext {
            model: "bench-model",
            headers: &headers,
        };
        let mut translator = translate::select(&case.schema, case.endpoint)
            .unwrap()
            .expect("a translated pair");
        // Correctness guard: the inputs must translate.
        translator.request(&case.request, &request_ctx).unwrap();
        translator.response(&case.response, &response_ctx).unwrap();
        let request = median_per_call(2_000, || {
            black_box(
                translator
                    .request(black_box(&case.request), &request_ctx)
                    .unwrap(),
            );
        });
        let response = median_per_call(2_000, || {
            black_box(
                translator
                    .response(black_box(&case.response), &response_ctx)
                    .unwrap(),
            );
        });
        let chunks = case.stream.len();
        let stream = median_per_call(50, || {
            let mut stream = translator.stream(&response_ctx);
            let mut bytes = 0;
            for chunk in &case.stream {
                bytes += stream.feed(black_box(chunk)).unwrap().len();
            }
            bytes += stream.finish().unwrap().len();
            assert!(bytes > 0);
            black_box(bytes);
        }) / chunks as u32;
        println!(
            "| {} | {} | {} | {} |",
            case.name,
            micros(request),
            micros(response),
            micros(stream)
        );
    }
}
