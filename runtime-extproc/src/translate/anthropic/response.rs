//! Anthropic Messages responses and event streams as OpenAI `chat.completion` objects and
//! `chat.completion.chunk` events; Anthropic errors in the OpenAI error shape.

use serde_json::{Value, json};

use crate::translate::sse::{SseEvents, SseReader, event_text};
use crate::translate::{
    StreamTranslator, TranslateError, error_message, finish_reason, openai_error, sse_event,
    tool_call_arguments, tool_call_start, usage_chunk,
};
use crate::usage::{TokenUsage, reported_sum};

/// Anthropic `usage` as OpenAI `usage` and [`TokenUsage`]: prompt tokens include cache reads
/// and cache writes.
pub(super) fn usage_from(usage: &Value, fallback: &TokenUsage) -> TokenUsage {
    let read = |name: &str| usage.get(name).and_then(Value::as_u64);
    let input_only = read("input_tokens").or(fallback_input_only(fallback));
    let cached_input = read("cache_read_input_tokens").or(fallback.cached_input);
    let cache_creation_input =
        read("cache_creation_input_tokens").or(fallback.cache_creation_input);
    let output = read("output_tokens").or(fallback.output);
    let input = reported_sum(&[input_only, cached_input, cache_creation_input]);
    TokenUsage {
        input,
        cached_input,
        cache_creation_input,
        output,
        total: reported_sum(&[input, output]),
        reasoning: None,
    }
}

/// The uncached input of an earlier reading (its total minus the cache counts).
pub(super) fn fallback_input_only(fallback: &TokenUsage) -> Option<u64> {
    fallback.input.map(|total| {
        total
            .saturating_sub(fallback.cached_input.unwrap_or(0))
            .saturating_sub(fallback.cache_creation_input.unwrap_or(0))
    })
}

/// Translates a buffered Anthropic message into an OpenAI `chat.completion`; `model` is the
/// requested model, used when the provider does not name one.
pub fn chat_response(body: &[u8], model: &str) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let message: Value = serde_json::from_slice(body)
        .map_err(|err| TranslateError::Upstream(format!("Anthropic message is not JSON: {err}")))?;
    let content = message
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::Upstream("Anthropic message has no content list".into()))?;
    let mut text = String::new();
    let mut has_text = false;
    let mut reasoning = String::new();
    let mut has_reasoning = false;
    let mut calls = Vec::new();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                has_text = true;
                text.push_str(block.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            Some("thinking") => {
                has_reasoning = true;
                reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or(""));
            }
            Some("tool_use") => {
                let arguments = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": block.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {
                        "name": block.get("name").cloned().unwrap_or(Value::Null),
                        "arguments": arguments.to_string(),
                    },
                }));
            }
            _ => {}
        }
    }
    let mut reply = json!({
        "role": "assistant",
        "content": if has_text { json!(text) } else { Value::Null },
    });
    if !calls.is_empty() {
        reply["tool_calls"] = Value::Array(calls);
    }
    if has_reasoning {
        reply["reasoning_content"] = json!(reasoning);
    }
    let usage = usage_from(
        message.get("usage").unwrap_or(&Value::Null),
        &TokenUsage::default(),
    );
    let stop = message
        .get("stop_reason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn");
    let out = json!({
        "id": message.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": 0,
        "model": message.get("model").and_then(Value::as_str).unwrap_or(model),
        "choices": [{"index": 0, "message": reply, "finish_reason": finish_reason(stop)}],
        "usage": usage.to_openai(),
    });
    Ok((out.to_string().into_bytes(), usage))
}

/// The HTTP status an Anthropic error type stands for, for non-JSON bodies the reverse.
/// Anthropic's error `type` for an HTTP status.
pub fn error_type_for(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 => "timeout_error",
        413 => "request_too_large",
        422 => "invalid_request_error",
        429 => "rate_limit_error",
        503 => "service_unavailable_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "internal_server_error",
    }
}

/// Translates an Anthropic error answer (status `status`) into the OpenAI error shape.
pub fn error_response(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let kind = error
        .and_then(|e| e.get("type").or_else(|| e.get("status")))
        .and_then(Value::as_str)
        .unwrap_or_else(|| error_type_for(status));
    openai_error(status, &error_message(error, body), kind)
}

/// Translates an Anthropic event stream into OpenAI `chat.completion.chunk` events.
#[derive(Debug, Default)]
pub struct ChatStream {
    requested_model: String,
    reader: SseReader,
    id: Option<String>,
    model: Option<String>,
    usage: TokenUsage,
    started: bool,
    /// Anthropic block index to OpenAI tool call index.
    tool_blocks: Vec<(u64, u64)>,
}

impl ChatStream {
    /// A stream for a request that asked for `model`.
    pub fn new(model: &str) -> ChatStream {
        ChatStream {
            requested_model: model.to_string(),
            ..ChatStream::default()
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Vec<u8> {
        sse_event(&json!({
            "id": self.id.as_deref().unwrap_or(""),
            "object": "chat.completion.chunk",
            "created": 0,
            "model": self.model.as_deref().unwrap_or(&self.requested_model),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }))
    }

    /// Translates one decoded Anthropic stream event (the JSON of its `data:`).
    pub fn event(&mut self, event: &Value) -> Vec<u8> {
        match event.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let message = event.get("message").unwrap_or(&Value::Null);
                self.id = message
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                self.model = message
                    .get("model")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if let Some(usage) = message.get("usage") {
                    self.usage = usage_from(usage, &self.usage);
                }
                self.started = true;
                self.chunk(json!({"role": "assistant", "content": ""}), None)
            }
            Some("content_block_start") => {
                let block = event.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let index = self.tool_blocks.len() as u64;
                        let block_index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                        self.tool_blocks.push((block_index, index));
                        let start = tool_call_start(index, block.get("id"), block.get("name"));
                        self.chunk(start, None)
                    }
                    Some("text") => match block.get("text").and_then(Value::as_str) {
                        Some(text) if !text.is_empty() => {
                            self.chunk(json!({"content": text}), None)
                        }
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                }
            }
            Some("content_block_delta") => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                let text = |key: &str| delta.get(key).and_then(Value::as_str).unwrap_or("");
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => self.chunk(json!({"content": text("text")}), None),
                    Some("thinking_delta") => {
                        self.chunk(json!({"reasoning_content": text("thinking")}), None)
                    }
                    Some("input_json_delta") => {
                        let block_index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let Some(index) = self
                            .tool_blocks
                            .iter()
                            .find(|(b, _)| *b == block_index)
                            .map(|(_, i)| *i)
                        else {
                            return Vec::new();
                        };
                        self.chunk(tool_call_arguments(index, text("partial_json")), None)
                    }
                    _ => Vec::new(),
                }
            }
            Some("message_delta") => {
                if let Some(usage) = event.get("usage") {
                    self.usage = usage_from(usage, &self.usage);
                }
                match event.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    Some(reason) => self.chunk(json!({}), Some(finish_reason(reason))),
                    None => Vec::new(),
                }
            }
            Some("error") => {
                let error = event.get("error").unwrap_or(&Value::Null);
                sse_event(&json!({"error": {
                    "message": error.get("message").and_then(Value::as_str).unwrap_or("stream error"),
                    "type": error.get("type").and_then(Value::as_str).unwrap_or("api_error"),
                    "param": null,
                    "code": null,
                }}))
            }
            // message_stop, content_block_stop, ping and event types added later.
            _ => Vec::new(),
        }
    }
}

impl SseEvents for ChatStream {
    fn reader(&mut self) -> &mut SseReader {
        &mut self.reader
    }

    /// Translates the data of one complete server-sent event.
    fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), TranslateError> {
        let data = std::str::from_utf8(data)
            .map_err(|_| TranslateError::Upstream("event data is not UTF-8".into()))?;
        let Some(data) = event_text(data) else {
            return Ok(());
        };
        let event: Value = serde_json::from_str(data)
            .map_err(|err| TranslateError::Upstream(format!("event data is not JSON: {err}")))?;
        out.extend(self.event(&event));
        Ok(())
    }
}

impl StreamTranslator for ChatStream {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        self.feed_events(chunk)
    }

    fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        self.finish_chat(|stream| {
            stream.started.then(|| {
                usage_chunk(
                    stream.id.as_deref().unwrap_or(""),
                    0,
                    stream.model.as_deref().unwrap_or(&stream.requested_model),
                    &stream.usage,
                )
            })
        })
    }

    fn usage(&self) -> TokenUsage {
        self.usage
    }

    fn model(&self) -> Option<String> {
        self.model.clone()
    }
}
