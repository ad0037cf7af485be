//! AWS Bedrock, four client APIs:
//!
//! - OpenAI chat completions ([`OpenAiChat`]): requests to `Converse` / `ConverseStream`,
//!   Converse responses and event streams back to OpenAI `chat.completion` objects and
//!   `chat.completion.chunk` events, and Bedrock errors to the OpenAI error shape.
//! - OpenAI embeddings ([`OpenAiEmbeddings`]): requests to `InvokeModel` for Amazon Titan Text
//!   Embeddings (v1 / G1 and v2) and Cohere Embed (v3 and v4), their answers back to an OpenAI
//!   embedding list, errors to the OpenAI error shape.
//! - The Anthropic Messages API ([`AnthropicMessages`]): requests to `Converse` /
//!   `ConverseStream`, Converse responses to Anthropic `message` objects, ConverseStream event
//!   streams to Anthropic server-sent events, and errors to the Anthropic error shape.
//! - Anthropic token counting ([`CountTokens`]): requests to `CountTokens` with Converse input
//!   built by the same mapping, `{"inputTokens": n}` back as `{"input_tokens": n}`, errors to
//!   the Anthropic error shape.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use base64::Engine as _;

use super::anthropic::error_type_for;
use super::eventstream::{Decoder, Message};
use super::{
    PassThrough, RequestContext, ResponseContext, SSE_DONE, StreamTranslator, TranslateError,
    Translated, Translator, UpstreamRequest, data_url, finish_reason, invalid, number_field,
    path_escape, sse_event, unsupported,
};
use crate::time::unix_now;
use crate::usage::TokenUsage;

/// OpenAI chat completions served by Bedrock `Converse` / `ConverseStream`.
#[derive(Debug, Clone, Copy)]
pub struct OpenAiChat;

impl Translator for OpenAiChat {
    fn request(
        &mut self,
        body: &Value,
        ctx: &RequestContext<'_>,
    ) -> Result<UpstreamRequest, TranslateError> {
        chat_request(body, ctx.model)
    }

    fn response(
        &self,
        body: &[u8],
        ctx: &ResponseContext<'_>,
    ) -> Result<Translated, TranslateError> {
        let (body, usage) = chat_response(body, ctx.model, ctx.header("x-amzn-requestid"))?;
        Ok(ctx.translated(body, usage))
    }

    fn error(&self, status: u16, body: &[u8], ctx: &ResponseContext<'_>) -> Vec<u8> {
        error_response(status, ctx.header("x-amzn-errortype"), body)
    }

    fn stream(&self, ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(ChatStream::new(ctx.model, ctx.header("x-amzn-requestid")))
    }
}

#[cfg(test)]
mod tests;

/// Text of a `content` that must be text: a string or an array of `text` parts.
fn text_of(content: &Value, role: &str) -> Result<Vec<String>, TranslateError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => part
                    .get("text")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("{role} text part without text"))),
                other => Err(unsupported(format!(
                    "content part {} in a {role} message is not supported by AWS Bedrock",
                    other.unwrap_or("without type")
                ))),
            })
            .collect(),
        _ => Err(invalid(format!(
            "{role} message content must be a string or an array"
        ))),
    }
}

/// `data:image/png;base64,...` -> a Converse image block.
fn image_block(url: &str) -> Result<Value, TranslateError> {
    if !url.starts_with("data:") {
        return Err(unsupported(
            "AWS Bedrock accepts images only as base64 data URLs, not remote URLs",
        ));
    }
    let Some((mime, data)) = data_url(url) else {
        return Err(if url.contains(',') {
            unsupported("image data URLs must be base64-encoded")
        } else {
            invalid("malformed image data URL")
        });
    };
    let Some(format) = image_format(mime) else {
        return Err(unsupported(format!(
            "image type {} is not supported by AWS Bedrock (png, jpeg, gif, webp)",
            mime.to_ascii_lowercase()
        )));
    };
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

/// The Converse image `format` of a media type; `None` for types Bedrock does not take.
fn image_format(media_type: &str) -> Option<&'static str> {
    match media_type.to_ascii_lowercase().as_str() {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

/// Converse content blocks of a user or assistant message's `content`.
fn content_blocks(content: &Value, role: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"text": s})]),
        Value::Array(parts) => {
            let mut blocks = Vec::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = part
                            .get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid("text part without text"))?;
                        blocks.push(json!({"text": text}));
                    }
                    Some("image_url") => {
                        let url = part
                            .pointer("/image_url/url")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid("image_url part without url"))?;
                        blocks.push(image_block(url)?);
                    }
                    Some("input_audio") => {
                        return Err(unsupported("audio input is not supported by AWS Bedrock"));
                    }
                    Some("refusal") => {
                        if let Some(text) = part.get("refusal").and_then(Value::as_str) {
                            blocks.push(json!({"text": text}));
                        }
                    }
                    other => {
                        return Err(unsupported(format!(
                            "content part {} in a {role} message is not supported by AWS Bedrock",
                            other.unwrap_or("without type")
                        )));
                    }
                }
                if part.get("cache_control").is_some_and(Value::is_object) {
                    blocks.push(json!({"cachePoint": {"type": "default"}}));
                }
            }
            Ok(blocks)
        }
        _ => Err(invalid(format!(
            "{role} message content must be a string or an array"
        ))),
    }
}

fn tool_use_blocks(calls: &Value) -> Result<Vec<Value>, TranslateError> {
    let Some(calls) = calls.as_array() else {
        return Ok(Vec::new());
    };
    calls
        .iter()
        .map(|call| {
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool call without id"))?;
            let name = call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool call without function name"))?;
            let arguments = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or("");
            let input = if arguments.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str::<Value>(arguments).map_err(|err| {
                    invalid(format!("tool call {id} arguments are not JSON: {err}"))
                })?
            };
            Ok(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}))
        })
        .collect()
}

/// Appends blocks as a turn of `role`, merging with the previous turn of the same role.
fn push_turn(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = messages.last_mut()
        && last.get("role").and_then(Value::as_str) == Some(role)
        && let Some(content) = last.get_mut("content").and_then(Value::as_array_mut)
    {
        content.extend(blocks);
        return;
    }
    messages.push(json!({"role": role, "content": blocks}));
}

fn tool_config(request: &Value) -> Result<Option<Value>, TranslateError> {
    let Some(tools) = request.get("tools").and_then(Value::as_array) else {
        return Ok(None);
    };
    if tools.is_empty() {
        return Ok(None);
    }
    let choice = match request.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "none" => return Ok(None),
            "auto" => Some(json!({"auto": {}})),
            "required" => Some(json!({"any": {}})),
            other => return Err(unsupported(format!("tool_choice {other} is not supported"))),
        },
        Some(choice @ Value::Object(_)) => {
            let name = choice
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| unsupported("tool_choice must name a function"))?;
            Some(json!({"tool": {"name": name}}))
        }
        Some(_) => return Err(invalid("tool_choice must be a string or an object")),
    };
    let specs = tools
        .iter()
        .map(|tool| {
            let kind = tool
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("function");
            if kind != "function" {
                return Err(unsupported(format!(
                    "tool type {kind} is not supported by AWS Bedrock"
                )));
            }
            let function = tool
                .get("function")
                .ok_or_else(|| invalid("tool without function"))?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool function without name"))?;
            let mut spec = Map::new();
            spec.insert("name".into(), json!(name));
            if let Some(description) = function.get("description").and_then(Value::as_str) {
                spec.insert("description".into(), json!(description));
            }
            let schema = function
                .get("parameters")
                .filter(|p| p.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            spec.insert("inputSchema".into(), json!({"json": schema}));
            Ok(json!({"toolSpec": spec}))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = Map::new();
    config.insert("tools".into(), Value::Array(specs));
    if let Some(choice) = choice {
        config.insert("toolChoice".into(), choice);
    }
    Ok(Some(Value::Object(config)))
}

fn inference_config(fields: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    let mut config = Map::new();
    let max = fields
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| fields.get("max_tokens").filter(|v| !v.is_null()));
    if let Some(max) = max {
        let max = max
            .as_u64()
            .ok_or_else(|| invalid("max_tokens must be a positive integer"))?;
        config.insert("maxTokens".into(), json!(max));
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        number_field(fields, from, to, &mut config)?;
    }
    match fields.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(stops)) => {
            if stops.iter().any(|s| !s.is_string()) {
                return Err(invalid("stop must be a string or an array of strings"));
            }
            config.insert("stopSequences".into(), Value::Array(stops.clone()));
        }
        Some(_) => return Err(invalid("stop must be a string or an array of strings")),
    }
    Ok((!config.is_empty()).then_some(Value::Object(config)))
}

fn additional_fields(request: &Value) -> Option<Value> {
    let mut fields = Map::new();
    if let Some(thinking) = request.get("thinking").filter(|t| t.is_object()) {
        fields.insert("thinking".into(), thinking.clone());
    }
    if let Some(effort) = request.get("reasoning_effort").and_then(Value::as_str)
        && effort != "none"
    {
        fields.insert(
            "reasoningConfig".into(),
            json!({"type": "enabled", "maxReasoningEffort": effort}),
        );
    }
    (!fields.is_empty()).then_some(Value::Object(fields))
}

fn reject_unsupported(request: &Value) -> Result<(), TranslateError> {
    if request
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Err(unsupported(
            "AWS Bedrock returns one choice: n > 1 is not supported",
        ));
    }
    if request.get("logprobs").and_then(Value::as_bool) == Some(true)
        || request.get("top_logprobs").is_some_and(|v| !v.is_null())
    {
        return Err(unsupported("logprobs are not supported by AWS Bedrock"));
    }
    let audio_out = request.get("audio").is_some_and(|v| !v.is_null())
        || request
            .get("modalities")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|v| v == "audio"));
    if audio_out {
        return Err(unsupported("audio output is not supported by AWS Bedrock"));
    }
    Ok(())
}

/// Translates an OpenAI chat completion request into a Bedrock `Converse` (or, with
/// `stream: true`, `ConverseStream`) request for `model`.
pub fn chat_request(request: &Value, model: &str) -> Result<UpstreamRequest, TranslateError> {
    let Some(fields) = request.as_object() else {
        return Err(invalid("the request body must be a JSON object"));
    };
    reject_unsupported(request)?;
    let input = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages must be an array"))?;
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for message in input {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("message without role"))?;
        let content = message.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                for text in text_of(content, role)? {
                    system.push(json!({"text": text}));
                }
            }
            "user" => push_turn(&mut messages, "user", content_blocks(content, role)?),
            "assistant" => {
                let mut blocks = content_blocks(content, role)?;
                blocks.extend(tool_use_blocks(
                    message.get("tool_calls").unwrap_or(&Value::Null),
                )?);
                push_turn(&mut messages, "assistant", blocks);
            }
            "tool" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("tool message without tool_call_id"))?;
                let texts = text_of(content, role)?;
                let result: Vec<Value> = texts.into_iter().map(|t| json!({"text": t})).collect();
                push_turn(
                    &mut messages,
                    "user",
                    vec![json!({"toolResult": {"toolUseId": id, "content": result}})],
                );
            }
            "function" => return Err(unsupported("function messages are not supported; use tool")),
            other => return Err(invalid(format!("unknown message role {other}"))),
        }
    }
    let mut body = Map::new();
    body.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    if let Some(config) = inference_config(fields)? {
        body.insert("inferenceConfig".into(), config);
    }
    if let Some(config) = tool_config(request)? {
        body.insert("toolConfig".into(), config);
    }
    if let Some(fields) = additional_fields(request) {
        body.insert("additionalModelRequestFields".into(), fields);
    }
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let path = format!(
        "/model/{}/{}",
        path_escape(model),
        if stream {
            "converse-stream"
        } else {
            "converse"
        }
    );
    Ok(UpstreamRequest {
        path,
        body: Value::Object(body).to_string().into_bytes(),
        headers: vec![("content-type".into(), "application/json".into())],
    })
}

fn number(value: &Value, key: &str) -> Option<u64> {
    value.get(key).and_then(Value::as_u64)
}

/// Converse `usage` -> token usage, counting cache reads and writes as input.
fn converse_usage(usage: &Value) -> TokenUsage {
    let cache_read = number(usage, "cacheReadInputTokens");
    let cache_write = number(usage, "cacheWriteInputTokens");
    let input = number(usage, "inputTokens").map(|i| {
        i.saturating_add(cache_read.unwrap_or(0))
            .saturating_add(cache_write.unwrap_or(0))
    });
    let output = number(usage, "outputTokens");
    let total = match (input, output) {
        (Some(i), Some(o)) => Some(i.saturating_add(o)),
        _ => number(usage, "totalTokens"),
    };
    TokenUsage {
        input,
        cached_input: cache_read,
        cache_creation_input: cache_write,
        output,
        total,
        reasoning: None,
    }
}

fn openai_usage(usage: &TokenUsage) -> Value {
    let mut out = json!({
        "prompt_tokens": usage.input.unwrap_or(0),
        "completion_tokens": usage.output.unwrap_or(0),
        "total_tokens": usage.total.unwrap_or(0),
    });
    if usage.cached_input.is_some() || usage.cache_creation_input.is_some() {
        out["prompt_tokens_details"] = json!({
            "cached_tokens": usage.cached_input.unwrap_or(0),
            "cache_creation_tokens": usage.cache_creation_input.unwrap_or(0),
        });
    }
    out
}

fn response_id(request_id: Option<&str>) -> String {
    match request_id {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!("chatcmpl-{:016x}", fastrand::u64(..)),
    }
}

/// Translates a buffered `Converse` response into an OpenAI `chat.completion`; `model` is the
/// request model (Bedrock does not report one) and `request_id` the `x-amzn-requestid`.
pub fn chat_response(
    body: &[u8],
    model: &str,
    request_id: Option<&str>,
) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let response: Value = serde_json::from_slice(body)
        .map_err(|err| TranslateError::Upstream(format!("Converse response is not JSON: {err}")))?;
    let content = response
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            TranslateError::Upstream("Converse response without output.message".into())
        })?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in content {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(tool) = block.get("toolUse") {
            tool_calls.push(json!({
                "id": tool.get("toolUseId").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": tool.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": tool.get("input").unwrap_or(&json!({})).to_string(),
                },
            }));
        } else if let Some(r) = block
            .pointer("/reasoningContent/reasoningText/text")
            .and_then(Value::as_str)
        {
            reasoning.push_str(r);
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) },
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    let stop = response
        .get("stopReason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn");
    let usage = response
        .get("usage")
        .filter(|u| u.is_object())
        .map(converse_usage)
        .unwrap_or_default();
    let mut out = json!({
        "id": response_id(request_id),
        "object": "chat.completion",
        "created": unix_now(),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(stop)}],
    });
    if response.get("usage").is_some_and(Value::is_object) {
        out["usage"] = openai_usage(&usage);
    }
    Ok((out.to_string().into_bytes(), usage))
}

/// Translates a Bedrock error response (`{"message": ...}` with `x-amzn-errortype`) into the
/// OpenAI error shape, keeping the status as `code`.
pub fn error_response(status: u16, error_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let (is_json, message) = error_message(body);
    let kind = error_type
        .filter(|_| is_json)
        .map(|t| t.split(':').next().unwrap_or(t).trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "AWSBedrockBackendError".to_string());
    json!({"error": {"message": message, "type": kind, "code": status.to_string()}})
        .to_string()
        .into_bytes()
}

/// The message of a Bedrock error body, and whether the body was a JSON object: its
/// `message` (or `Message`), the object itself when it has neither, the raw text otherwise.
fn error_message(body: &[u8]) -> (bool, String) {
    match serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
    {
        Some(value) => {
            let message = value
                .get("message")
                .or_else(|| value.get("Message"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            (true, message)
        }
        None => (false, String::from_utf8_lossy(body).into_owned()),
    }
}

/// Translates a `ConverseStream` event stream into OpenAI `chat.completion.chunk` events.
#[derive(Debug)]
pub struct ChatStream {
    decoder: Decoder,
    model: String,
    id: String,
    created: u64,
    usage: TokenUsage,
    /// Converse content block index -> OpenAI tool call index.
    tools: HashMap<u64, u64>,
}

impl ChatStream {
    /// A translator for a stream answering a request for `model`; `request_id` is the
    /// `x-amzn-requestid` response header, used as the completion id.
    pub fn new(model: &str, request_id: Option<&str>) -> Self {
        ChatStream {
            decoder: Decoder::new(),
            model: model.to_string(),
            id: response_id(request_id),
            created: unix_now(),
            usage: TokenUsage::default(),
            tools: HashMap::new(),
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Vec<u8> {
        sse_event(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }))
    }

    fn tool_index(&mut self, block: u64) -> u64 {
        let next = self.tools.len() as u64;
        *self.tools.entry(block).or_insert(next)
    }

    fn event(&mut self, message: &Message) -> Result<Vec<u8>, TranslateError> {
        match message.message_type() {
            Some("exception") | Some("error") => {
                let payload = serde_json::from_slice::<Value>(&message.payload).ok();
                let text = payload
                    .as_ref()
                    .and_then(|p| p.get("message").or_else(|| p.get("Message")))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| message.header(":error-message").map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&message.payload).into_owned());
                let kind = message
                    .exception_type()
                    .or_else(|| message.header(":error-code"))
                    .unwrap_or("AWSBedrockBackendError");
                return Ok(sse_event(&json!({
                    "error": {"message": text, "type": kind, "code": null}
                })));
            }
            _ => {}
        }
        let Some(kind) = message.event_type() else {
            return Ok(Vec::new());
        };
        let payload: Value = serde_json::from_slice(&message.payload).map_err(|err| {
            TranslateError::Upstream(format!("{kind} event payload is not JSON: {err}"))
        })?;
        let block = payload
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Ok(match kind {
            "messageStart" => {
                let role = payload
                    .get("role")
                    .and_then(Value::as_str)
                    .unwrap_or("assistant");
                self.chunk(json!({"role": role, "content": ""}), None)
            }
            "contentBlockStart" => match payload.pointer("/start/toolUse") {
                Some(tool) => {
                    let index = self.tool_index(block);
                    self.chunk(
                        json!({"tool_calls": [{
                            "index": index,
                            "id": tool.get("toolUseId").cloned().unwrap_or(Value::Null),
                            "type": "function",
                            "function": {
                                "name": tool.get("name").cloned().unwrap_or(Value::Null),
                                "arguments": "",
                            },
                        }]}),
                        None,
                    )
                }
                None => Vec::new(),
            },
            "contentBlockDelta" => {
                let delta = payload.get("delta").unwrap_or(&Value::Null);
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    self.chunk(json!({"content": text}), None)
                } else if let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str)
                {
                    let index = self.tool_index(block);
                    self.chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": input}}]}),
                        None,
                    )
                } else if let Some(text) = delta
                    .pointer("/reasoningContent/text")
                    .and_then(Value::as_str)
                {
                    self.chunk(json!({"reasoning_content": text}), None)
                } else {
                    Vec::new()
                }
            }
            "messageStop" => {
                let stop = payload
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn");
                self.chunk(json!({}), Some(finish_reason(stop)))
            }
            "metadata" => match payload.get("usage").filter(|u| u.is_object()) {
                Some(usage) => {
                    self.usage = converse_usage(usage);
                    sse_event(&json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": openai_usage(&self.usage),
                    }))
                }
                None => Vec::new(),
            },
            // contentBlockStop and unknown events carry nothing the client needs.
            _ => Vec::new(),
        })
    }
}

impl StreamTranslator for ChatStream {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        let mut out = Vec::new();
        for message in self.decoder.feed(chunk)? {
            out.extend(self.event(&message)?);
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        if self.decoder.has_pending() {
            return Err(TranslateError::Upstream(
                "the event stream ended inside a frame".into(),
            ));
        }
        Ok(SSE_DONE.to_vec())
    }

    fn usage(&self) -> TokenUsage {
        self.usage
    }

    fn model(&self) -> Option<String> {
        Some(self.model.clone())
    }
}

// OpenAI embeddings served by Bedrock `InvokeModel`.

/// The most texts Cohere Embed takes in one call.
const COHERE_MAX_TEXTS: usize = 96;

/// OpenAI `/v1/embeddings` served by Bedrock `InvokeModel` (`/model/<model>/invoke`) for
/// Amazon Titan Text Embeddings (`amazon.titan-embed-text-v1`, `amazon.titan-embed-g1-text-*`,
/// `amazon.titan-embed-text-v2*`) and Cohere Embed (`cohere.embed-*`). The family is read from
/// the model id, which may carry a region prefix (`us.`), a version suffix (`:0`) or an ARN.
///
/// - Titan takes one text: a list of several strings is answered 422. `dimensions` goes to
///   Titan v2 (256, 512 or 1024; v1 takes none); `normalize` keeps Bedrock's default (true).
/// - Cohere takes up to 96 texts with `input_type` `search_document`, or the request's
///   `input_type` extension field. `dimensions` becomes `output_dimension` on Embed v4 and is
///   answered 422 on earlier versions.
/// - Token-id inputs are answered 422. `encoding_format: base64` reaches this translator only
///   through [`super::Base64Embeddings`], which asks for floats and encodes the answer.
/// - Usage comes from Titan's `inputTextTokenCount`, else from the
///   `x-amzn-bedrock-input-token-count` response header. When neither is present the body
///   carries zero counts (the OpenAI shape requires `usage`) but no usage is reported for
///   metrics and costs.
#[derive(Debug, Clone, Copy)]
pub struct OpenAiEmbeddings;

impl Translator for OpenAiEmbeddings {
    fn request(
        &mut self,
        body: &Value,
        ctx: &RequestContext<'_>,
    ) -> Result<UpstreamRequest, TranslateError> {
        embeddings_request(body, ctx.model)
    }

    fn response(
        &self,
        body: &[u8],
        ctx: &ResponseContext<'_>,
    ) -> Result<Translated, TranslateError> {
        let (body, usage) = embeddings_response(
            body,
            ctx.model,
            ctx.header("x-amzn-bedrock-input-token-count"),
        )?;
        Ok(ctx.translated(body, usage))
    }

    fn error(&self, status: u16, body: &[u8], ctx: &ResponseContext<'_>) -> Vec<u8> {
        error_response(status, ctx.header("x-amzn-errortype"), body)
    }

    fn stream(&self, _ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(PassThrough)
    }
}

/// Bedrock embedding model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmbedFamily {
    /// Titan Text Embeddings v1 / G1: `inputText` only.
    TitanV1,
    /// Titan Text Embeddings v2: `inputText` and `dimensions`.
    TitanV2,
    /// Cohere Embed before v4: `texts` and `input_type`.
    Cohere,
    /// Cohere Embed v4: as before, plus `output_dimension`.
    CohereV4,
}

/// The family of a model id such as `amazon.titan-embed-text-v2:0`,
/// `us.cohere.embed-v4:0` or a foundation-model ARN.
fn embed_family(model: &str) -> Option<EmbedFamily> {
    let id = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    let id = if id.starts_with("amazon.") || id.starts_with("cohere.") {
        id.as_str()
    } else {
        // A cross-region inference profile: `us.`, `eu.`, `apac.`, `global.` ...
        id.split_once('.').map_or("", |(_, rest)| rest)
    };
    if id.starts_with("amazon.titan-embed-text-v2") {
        Some(EmbedFamily::TitanV2)
    } else if id.starts_with("amazon.titan-embed-text-v1")
        || id.starts_with("amazon.titan-embed-g1-text")
    {
        Some(EmbedFamily::TitanV1)
    } else if id.starts_with("cohere.embed-v4") {
        Some(EmbedFamily::CohereV4)
    } else if id.starts_with("cohere.embed-") {
        Some(EmbedFamily::Cohere)
    } else {
        None
    }
}

/// The texts of an OpenAI embeddings `input`.
fn embedding_texts(input: Option<&Value>) -> Result<Vec<String>, TranslateError> {
    let token_ids = |item: &Value| {
        item.is_u64()
            || item
                .as_array()
                .is_some_and(|ids| !ids.is_empty() && ids.iter().all(Value::is_u64))
    };
    match input {
        None | Some(Value::Null) => Err(invalid("input is required")),
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) if items.is_empty() => Err(invalid("input must not be empty")),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Ok(items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()),
        Some(Value::Array(items)) if items.iter().all(token_ids) => Err(unsupported(
            "AWS Bedrock embedding models take text: token-id inputs are not supported",
        )),
        Some(_) => Err(invalid(
            "input must be a string, an array of strings or an array of token ids",
        )),
    }
}

/// Translates an OpenAI embeddings request into a Bedrock `InvokeModel` request for `model`.
fn embeddings_request(request: &Value, model: &str) -> Result<UpstreamRequest, TranslateError> {
    let Some(fields) = request.as_object() else {
        return Err(invalid("the request body must be a JSON object"));
    };
    let texts = embedding_texts(fields.get("input"))?;
    match fields.get("encoding_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(format)) if format == "float" => {}
        Some(Value::String(format)) if format == "base64" => {
            return Err(unsupported(
                "encoding_format base64 is not supported for AWS Bedrock embeddings; use float",
            ));
        }
        Some(_) => return Err(invalid("encoding_format must be float or base64")),
    }
    let dimensions = match fields.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .ok_or_else(|| invalid("dimensions must be a positive integer"))?,
        ),
    };
    let Some(family) = embed_family(model) else {
        return Err(unsupported(format!(
            "model {model} is not a supported AWS Bedrock embedding model: supported are \
             Amazon Titan Text Embeddings (amazon.titan-embed-text-v1, \
             amazon.titan-embed-g1-text, amazon.titan-embed-text-v2) and Cohere Embed \
             (cohere.embed-*)"
        )));
    };
    let mut body = Map::new();
    match family {
        EmbedFamily::TitanV1 | EmbedFamily::TitanV2 => {
            let [text] = texts.as_slice() else {
                return Err(unsupported(format!(
                    "Amazon Titan embeds one text per request, got {}",
                    texts.len()
                )));
            };
            body.insert("inputText".into(), json!(text));
            match (family, dimensions) {
                (_, None) => {}
                (EmbedFamily::TitanV2, Some(n @ (256 | 512 | 1024))) => {
                    body.insert("dimensions".into(), json!(n));
                }
                (EmbedFamily::TitanV2, Some(n)) => {
                    return Err(unsupported(format!(
                        "Amazon Titan Text Embeddings v2 has 256, 512 or 1024 dimensions, not {n}"
                    )));
                }
                (_, Some(_)) => {
                    return Err(unsupported(
                        "Amazon Titan Text Embeddings v1 does not take dimensions",
                    ));
                }
            }
        }
        EmbedFamily::Cohere | EmbedFamily::CohereV4 => {
            if texts.len() > COHERE_MAX_TEXTS {
                return Err(unsupported(format!(
                    "Cohere Embed takes at most {COHERE_MAX_TEXTS} texts per request, got {}",
                    texts.len()
                )));
            }
            let input_type = match fields.get("input_type") {
                None | Some(Value::Null) => "search_document",
                Some(Value::String(kind)) => kind.as_str(),
                Some(_) => return Err(invalid("input_type must be a string")),
            };
            body.insert("texts".into(), json!(texts));
            body.insert("input_type".into(), json!(input_type));
            match (family, dimensions) {
                (_, None) => {}
                (EmbedFamily::CohereV4, Some(n @ (256 | 512 | 1024 | 1536))) => {
                    body.insert("output_dimension".into(), json!(n));
                }
                (EmbedFamily::CohereV4, Some(n)) => {
                    return Err(unsupported(format!(
                        "Cohere Embed v4 has 256, 512, 1024 or 1536 dimensions, not {n}"
                    )));
                }
                (_, Some(_)) => {
                    return Err(unsupported(
                        "dimensions are only supported by Cohere Embed v4 among Cohere models",
                    ));
                }
            }
        }
    }
    Ok(UpstreamRequest {
        path: format!("/model/{}/invoke", path_escape(model)),
        body: Value::Object(body).to_string().into_bytes(),
        headers: vec![("content-type".into(), "application/json".into())],
    })
}

/// Translates a Titan or Cohere `InvokeModel` answer into an OpenAI embedding list;
/// `token_count` is the `x-amzn-bedrock-input-token-count` response header.
fn embeddings_response(
    body: &[u8],
    model: &str,
    token_count: Option<&str>,
) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let upstream = |message: &str| TranslateError::Upstream(message.to_string());
    let response: Value = serde_json::from_slice(body)
        .map_err(|err| TranslateError::Upstream(format!("embedding answer is not JSON: {err}")))?;
    let single = response
        .get("embedding")
        .or_else(|| response.pointer("/embeddingsByType/float"))
        .filter(|v| v.is_array());
    let vectors: Vec<Value> = match (single, response.get("embeddings")) {
        // Titan: one vector.
        (Some(vector), _) => vec![vector.clone()],
        // Cohere: `embeddings_floats` answers a list, `embeddings_by_type` an object.
        (None, Some(Value::Array(list))) => list.clone(),
        (None, Some(by_type @ Value::Object(_))) => by_type
            .get("float")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| upstream("Cohere embeddings without float vectors"))?,
        _ => return Err(upstream("embedding answer without embedding or embeddings")),
    };
    if !vectors.iter().all(Value::is_array) {
        return Err(upstream("an embedding is not a list of numbers"));
    }
    let tokens = response
        .get("inputTextTokenCount")
        .and_then(Value::as_u64)
        .or_else(|| token_count.and_then(|n| n.trim().parse::<u64>().ok()));
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| json!({"object": "embedding", "index": index, "embedding": embedding}))
        .collect();
    let out = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens.unwrap_or(0), "total_tokens": tokens.unwrap_or(0)},
    });
    let usage = TokenUsage {
        input: tokens,
        total: tokens,
        ..TokenUsage::default()
    };
    Ok((out.to_string().into_bytes(), usage))
}

#[cfg(test)]
mod embeddings_tests;

// The Anthropic Messages API served by Bedrock `Converse` / `ConverseStream`.

/// The longest document name Converse accepts.
const MAX_DOCUMENT_NAME: usize = 200;

/// The Anthropic Messages API (`/anthropic/v1/messages`) served by Bedrock `Converse`, or
/// `ConverseStream` when the client streams.
///
/// - `system`, text, base64 images (png, jpeg, gif, webp), base64 PDF and plain-text
///   documents, `tool_use`, `tool_result` (`is_error` becomes status `error`), `thinking` and
///   `redacted_thinking` map to their Converse blocks; `cache_control` adds a `cachePoint`
///   after the block, system block or tool. Image or document URLs, file references, document
///   citations, server tools, MCP servers, containers, `context_management` and
///   `output_format` are answered 422.
/// - `max_tokens`, `temperature`, `top_p` and `stop_sequences` go to `inferenceConfig`;
///   `top_k` and `thinking` to `additionalModelRequestFields`. `metadata`, `service_tier` and
///   `tool_choice.disable_parallel_tool_use` have no Converse equivalent and are dropped.
/// - `tool_choice` `none` drops the tools (Converse has no such choice); it is answered 422
///   when the conversation holds tool calls or results, which Converse accepts only with
///   tools defined.
/// - The answer's `id` is the `x-amzn-requestid` header and its `model` the requested model;
///   `guardrail_intervened` and `content_filtered` stop reasons become `refusal`.
#[derive(Debug, Clone, Copy)]
pub struct AnthropicMessages;

impl Translator for AnthropicMessages {
    fn request(
        &mut self,
        body: &Value,
        ctx: &RequestContext<'_>,
    ) -> Result<UpstreamRequest, TranslateError> {
        messages_request(body, ctx.model, ctx.stream)
    }

    fn response(
        &self,
        body: &[u8],
        ctx: &ResponseContext<'_>,
    ) -> Result<Translated, TranslateError> {
        let (body, usage) = messages_response(body, ctx.model, ctx.header("x-amzn-requestid"))?;
        Ok(ctx.translated(body, usage))
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        messages_error(status, body)
    }

    fn stream(&self, ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(MessagesStream::new(
            ctx.model,
            ctx.header("x-amzn-requestid"),
        ))
    }
}

fn cache_point() -> Value {
    json!({"cachePoint": {"type": "default"}})
}

fn has_cache_control(block: &Value) -> bool {
    block.get("cache_control").is_some_and(Value::is_object)
}

/// A required string field of an Anthropic block.
fn required_str<'a>(value: &'a Value, key: &str, what: &str) -> Result<&'a str, TranslateError> {
    value
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{what} without {key}")))
}

/// Rejects Anthropic request fields that Converse cannot express.
fn reject_messages_fields(fields: &Map<String, Value>) -> Result<(), TranslateError> {
    let present = |name: &str| fields.get(name).is_some_and(|v| !v.is_null());
    if fields
        .get("mcp_servers")
        .and_then(Value::as_array)
        .is_some_and(|servers| !servers.is_empty())
    {
        return Err(unsupported(
            "MCP servers are not supported by AWS Bedrock Converse",
        ));
    }
    for name in ["container", "context_management", "output_format"] {
        if present(name) {
            return Err(unsupported(format!(
                "{name} is not supported by AWS Bedrock Converse"
            )));
        }
    }
    Ok(())
}

/// Anthropic `system` (a string or text blocks) -> Converse `system`.
fn messages_system(system: Option<&Value>) -> Result<Option<Value>, TranslateError> {
    match system {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => Ok(Some(json!([{"text": text}]))),
        Some(Value::Array(blocks)) => {
            let mut out = Vec::with_capacity(blocks.len());
            for block in blocks {
                if block.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(invalid("system blocks must be text blocks"));
                }
                out.push(json!({"text": required_str(block, "text", "system text block")?}));
                if has_cache_control(block) {
                    out.push(cache_point());
                }
            }
            Ok((!out.is_empty()).then_some(Value::Array(out)))
        }
        Some(_) => Err(invalid(
            "system must be a string or an array of text blocks",
        )),
    }
}

/// An Anthropic `image` block -> a Converse image.
fn messages_image(block: &Value) -> Result<Value, TranslateError> {
    let source = block
        .get("source")
        .ok_or_else(|| invalid("image block without source"))?;
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media_type = required_str(source, "media_type", "image source")?;
            let data = required_str(source, "data", "image source")?;
            let format = image_format(media_type).ok_or_else(|| {
                unsupported(format!(
                    "image type {media_type} is not supported by AWS Bedrock (png, jpeg, gif, webp)"
                ))
            })?;
            Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
        }
        Some("url") => Err(unsupported(
            "AWS Bedrock accepts images only as base64 data, not URLs",
        )),
        Some(other) => Err(unsupported(format!(
            "image source {other} is not supported by AWS Bedrock"
        ))),
        None => Err(invalid("image source without type")),
    }
}

/// The document names given so far in one request.
#[derive(Debug, Default)]
struct DocumentNames {
    used: HashSet<String>,
    /// Per base name, the suffix last given: every lower one is taken.
    last_suffix: HashMap<String, u64>,
}

/// A Converse document name from an Anthropic document title: letters, digits, hyphens,
/// parentheses and square brackets, single spaces, unique within the request.
fn document_name(title: Option<&str>, names: &mut DocumentNames) -> String {
    let mut name = String::new();
    for c in title.unwrap_or("").chars() {
        if c.is_ascii_alphanumeric() || "-()[]".contains(c) {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with(' ') {
            name.push(' ');
        }
        if name.len() >= MAX_DOCUMENT_NAME {
            break;
        }
    }
    let base = match name.trim_end() {
        "" => "document".to_string(),
        trimmed => trimmed.to_string(),
    };
    let mut candidate = base.clone();
    // Searching from the last suffix given keeps many documents of one title linear.
    let mut n = names.last_suffix.get(&base).copied().unwrap_or(1);
    while names.used.contains(&candidate) {
        n += 1;
        candidate = format!("{base}-{n}");
    }
    names.last_suffix.insert(base, n);
    names.used.insert(candidate.clone());
    candidate
}

/// An Anthropic `document` block (base64 PDF or plain text) -> a Converse document.
fn messages_document(block: &Value, names: &mut DocumentNames) -> Result<Value, TranslateError> {
    if block.pointer("/citations/enabled").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported(
            "document citations are not supported through AWS Bedrock Converse",
        ));
    }
    let source = block
        .get("source")
        .ok_or_else(|| invalid("document block without source"))?;
    let (format, bytes) = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media_type = required_str(source, "media_type", "document source")?;
            if !media_type.eq_ignore_ascii_case("application/pdf") {
                return Err(unsupported(format!(
                    "base64 documents of type {media_type} are not supported; use application/pdf"
                )));
            }
            (
                "pdf",
                required_str(source, "data", "document source")?.to_string(),
            )
        }
        Some("text") => {
            let text = required_str(source, "data", "document source")?;
            (
                "txt",
                base64::engine::general_purpose::STANDARD.encode(text),
            )
        }
        Some(other) => {
            return Err(unsupported(format!(
                "document source {other} is not supported by AWS Bedrock; send base64 PDF or text"
            )));
        }
        None => return Err(invalid("document source without type")),
    };
    let name = document_name(block.get("title").and_then(Value::as_str), names);
    Ok(json!({"document": {"format": format, "name": name, "source": {"bytes": bytes}}}))
}

/// An Anthropic `tool_result` block -> a Converse `toolResult`.
fn messages_tool_result(block: &Value, names: &mut DocumentNames) -> Result<Value, TranslateError> {
    let id = required_str(block, "tool_use_id", "tool_result block")?;
    let content = match block.get("content") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => vec![json!({"text": text})],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item.get("type").and_then(Value::as_str) {
                Some("text") => Ok(json!({"text": required_str(item, "text", "text block")?})),
                Some("image") => messages_image(item),
                Some("document") => messages_document(item, names),
                other => Err(unsupported(format!(
                    "tool_result content {} is not supported by AWS Bedrock",
                    other.unwrap_or("without type")
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("tool_result content must be a string or an array")),
    };
    let mut result = json!({"toolUseId": id, "content": content});
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        result["status"] = json!("error");
    }
    Ok(json!({"toolResult": result}))
}

/// One Anthropic content block -> one Converse content block.
fn messages_block(block: &Value, names: &mut DocumentNames) -> Result<Value, TranslateError> {
    let kind = required_str(block, "type", "content block")?;
    match kind {
        "text" => Ok(json!({"text": required_str(block, "text", "text block")?})),
        "image" => messages_image(block),
        "document" => messages_document(block, names),
        "tool_use" => Ok(json!({"toolUse": {
            "toolUseId": required_str(block, "id", "tool_use block")?,
            "name": required_str(block, "name", "tool_use block")?,
            "input": block.get("input").cloned().unwrap_or_else(|| json!({})),
        }})),
        "tool_result" => messages_tool_result(block, names),
        "thinking" => {
            let mut reasoning = json!({"text": required_str(block, "thinking", "thinking block")?});
            if let Some(signature) = block.get("signature").and_then(Value::as_str) {
                reasoning["signature"] = json!(signature);
            }
            Ok(json!({"reasoningContent": {"reasoningText": reasoning}}))
        }
        "redacted_thinking" => Ok(json!({"reasoningContent": {
            "redactedContent": required_str(block, "data", "redacted_thinking block")?,
        }})),
        other => Err(unsupported(format!(
            "content block {other} is not supported by AWS Bedrock Converse"
        ))),
    }
}

/// An Anthropic message `content` (a string or blocks) -> Converse content blocks.
fn messages_content(
    content: &Value,
    names: &mut DocumentNames,
) -> Result<Vec<Value>, TranslateError> {
    match content {
        Value::String(text) if text.is_empty() => Ok(Vec::new()),
        Value::String(text) => Ok(vec![json!({"text": text})]),
        Value::Array(blocks) => {
            let mut out = Vec::with_capacity(blocks.len());
            for block in blocks {
                out.push(messages_block(block, names)?);
                if has_cache_control(block) {
                    out.push(cache_point());
                }
            }
            Ok(out)
        }
        _ => Err(invalid(
            "message content must be a string or an array of content blocks",
        )),
    }
}

/// Anthropic `tools` and `tool_choice` -> Converse `toolConfig`; `tool_blocks`: the
/// conversation holds tool calls or results.
fn messages_tool_config(
    fields: &Map<String, Value>,
    tool_blocks: bool,
) -> Result<Option<Value>, TranslateError> {
    let tools = match fields.get("tools") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(tools)) if tools.is_empty() => return Ok(None),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(invalid("tools must be an array")),
    };
    let choice = match fields.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(choice) => match choice.get("type").and_then(Value::as_str) {
            Some("auto") => Some(json!({"auto": {}})),
            Some("any") => Some(json!({"any": {}})),
            Some("tool") => {
                Some(json!({"tool": {"name": required_str(choice, "name", "tool_choice tool")?}}))
            }
            Some("none") if tool_blocks => {
                return Err(unsupported(
                    "tool_choice none cannot be expressed for AWS Bedrock Converse in a \
                     conversation with tool calls: Converse has no none choice and needs the \
                     tools defined",
                ));
            }
            Some("none") => return Ok(None),
            Some(other) => return Err(invalid(format!("unknown tool_choice type {other}"))),
            None => return Err(invalid("tool_choice must be an object with a type")),
        },
    };
    let mut specs = Vec::with_capacity(tools.len());
    for tool in tools {
        match tool.get("type").and_then(Value::as_str) {
            None | Some("custom") => {}
            Some(other) => {
                return Err(unsupported(format!(
                    "server tool {other} is not supported by AWS Bedrock Converse"
                )));
            }
        }
        let mut spec = Map::new();
        spec.insert("name".into(), json!(required_str(tool, "name", "tool")?));
        if let Some(description) = tool.get("description").and_then(Value::as_str) {
            spec.insert("description".into(), json!(description));
        }
        let schema = tool
            .get("input_schema")
            .filter(|s| s.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        spec.insert("inputSchema".into(), json!({"json": schema}));
        specs.push(json!({"toolSpec": spec}));
        if has_cache_control(tool) {
            specs.push(cache_point());
        }
    }
    let mut config = Map::new();
    config.insert("tools".into(), Value::Array(specs));
    if let Some(choice) = choice {
        config.insert("toolChoice".into(), choice);
    }
    Ok(Some(Value::Object(config)))
}

/// `max_tokens`, `temperature`, `top_p`, `stop_sequences` -> Converse `inferenceConfig`.
fn messages_inference_config(fields: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    let mut config = Map::new();
    if let Some(max) = fields.get("max_tokens").filter(|v| !v.is_null()) {
        let max = max
            .as_u64()
            .ok_or_else(|| invalid("max_tokens must be a positive integer"))?;
        config.insert("maxTokens".into(), json!(max));
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        number_field(fields, from, to, &mut config)?;
    }
    match fields.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(stops)) if stops.iter().all(Value::is_string) => {
            if !stops.is_empty() {
                config.insert("stopSequences".into(), Value::Array(stops.clone()));
            }
        }
        Some(_) => return Err(invalid("stop_sequences must be an array of strings")),
    }
    Ok((!config.is_empty()).then_some(Value::Object(config)))
}

/// `top_k` and `thinking` -> Converse `additionalModelRequestFields`.
fn messages_additional_fields(
    fields: &Map<String, Value>,
) -> Result<Option<Value>, TranslateError> {
    let mut out = Map::new();
    number_field(fields, "top_k", "top_k", &mut out)?;
    if let Some(thinking) = fields.get("thinking").filter(|v| !v.is_null()) {
        if !thinking.is_object() {
            return Err(invalid("thinking must be an object"));
        }
        out.insert("thinking".into(), thinking.clone());
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

/// Translates an Anthropic Messages request into a Bedrock `Converse` request for `model`, or
/// a `ConverseStream` request when `stream`.
fn messages_request(
    request: &Value,
    model: &str,
    stream: bool,
) -> Result<UpstreamRequest, TranslateError> {
    let Some(fields) = request.as_object() else {
        return Err(invalid("the request body must be a JSON object"));
    };
    reject_messages_fields(fields)?;
    let input = fields
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages must be an array"))?;
    let mut names = DocumentNames::default();
    let mut messages = Vec::new();
    let mut tool_blocks = false;
    for message in input {
        let role = required_str(message, "role", "message")?;
        if role != "user" && role != "assistant" {
            return Err(invalid(format!("unknown message role {role}")));
        }
        let blocks = messages_content(message.get("content").unwrap_or(&Value::Null), &mut names)?;
        tool_blocks |= blocks
            .iter()
            .any(|b| b.get("toolUse").is_some() || b.get("toolResult").is_some());
        // Anthropic accepts consecutive turns of one role; Converse wants them merged.
        push_turn(&mut messages, role, blocks);
    }
    let mut body = Map::new();
    body.insert("messages".into(), Value::Array(messages));
    if let Some(system) = messages_system(fields.get("system"))? {
        body.insert("system".into(), system);
    }
    if let Some(config) = messages_inference_config(fields)? {
        body.insert("inferenceConfig".into(), config);
    }
    if let Some(config) = messages_tool_config(fields, tool_blocks)? {
        body.insert("toolConfig".into(), config);
    }
    if let Some(additional) = messages_additional_fields(fields)? {
        body.insert("additionalModelRequestFields".into(), additional);
    }
    let action = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    Ok(UpstreamRequest {
        path: format!("/model/{}/{action}", path_escape(model)),
        body: Value::Object(body).to_string().into_bytes(),
        headers: vec![("content-type".into(), "application/json".into())],
    })
}

/// A Converse stop reason as an Anthropic `stop_reason`.
fn anthropic_stop_reason(reason: &str) -> &'static str {
    match reason {
        "tool_use" => "tool_use",
        "max_tokens" => "max_tokens",
        "stop_sequence" => "stop_sequence",
        "guardrail_intervened" | "content_filtered" => "refusal",
        "model_context_window_exceeded" => "model_context_window_exceeded",
        _ => "end_turn",
    }
}

/// Converse `usage` as an Anthropic `usage` object (absent counts are 0).
fn anthropic_usage(usage: &Value) -> Value {
    let count = |key: &str| number(usage, key).unwrap_or(0);
    json!({
        "input_tokens": count("inputTokens"),
        "output_tokens": count("outputTokens"),
        "cache_read_input_tokens": count("cacheReadInputTokens"),
        "cache_creation_input_tokens": count("cacheWriteInputTokens"),
    })
}

/// The message id: the request id, else a random one.
fn message_id(request_id: Option<&str>) -> String {
    match request_id {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!("msg_{:016x}", fastrand::u64(..)),
    }
}

/// The stop sequence Bedrock reports among the additional response fields, if any.
fn stop_sequence(value: &Value) -> Value {
    value
        .pointer("/additionalModelResponseFields/stop_sequence")
        .filter(|s| s.is_string())
        .cloned()
        .unwrap_or(Value::Null)
}

/// Translates a buffered `Converse` response into an Anthropic `message`.
fn messages_response(
    body: &[u8],
    model: &str,
    request_id: Option<&str>,
) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let response: Value = serde_json::from_slice(body)
        .map_err(|err| TranslateError::Upstream(format!("Converse response is not JSON: {err}")))?;
    let content = response
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            TranslateError::Upstream("Converse response without output.message".into())
        })?;
    let mut blocks = Vec::with_capacity(content.len());
    for block in content {
        if let Some(text) = block.get("text").and_then(Value::as_str) {
            blocks.push(json!({"type": "text", "text": text}));
        } else if let Some(tool) = block.get("toolUse") {
            blocks.push(json!({
                "type": "tool_use",
                "id": tool.get("toolUseId").cloned().unwrap_or(Value::Null),
                "name": tool.get("name").cloned().unwrap_or(Value::Null),
                "input": tool.get("input").cloned().unwrap_or_else(|| json!({})),
            }));
        } else if let Some(reasoning) = block.get("reasoningContent") {
            if let Some(text) = reasoning.get("reasoningText") {
                blocks.push(json!({
                    "type": "thinking",
                    "thinking": text.get("text").and_then(Value::as_str).unwrap_or(""),
                    "signature": text.get("signature").and_then(Value::as_str).unwrap_or(""),
                }));
            } else if let Some(data) = reasoning.get("redactedContent").and_then(Value::as_str) {
                blocks.push(json!({"type": "redacted_thinking", "data": data}));
            }
        }
    }
    let stop = response
        .get("stopReason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn");
    let usage_json = response
        .get("usage")
        .filter(|u| u.is_object())
        .unwrap_or(&Value::Null);
    let usage = if usage_json.is_object() {
        converse_usage(usage_json)
    } else {
        TokenUsage::default()
    };
    let out = json!({
        "id": message_id(request_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": anthropic_stop_reason(stop),
        "stop_sequence": stop_sequence(&response),
        "usage": anthropic_usage(usage_json),
    });
    Ok((out.to_string().into_bytes(), usage))
}

/// A Bedrock error (status `status`) in the Anthropic error shape.
fn messages_error(status: u16, body: &[u8]) -> Vec<u8> {
    let (_, message) = error_message(body);
    json!({"type": "error", "error": {"type": error_type_for(status), "message": message}})
        .to_string()
        .into_bytes()
}

/// The HTTP status AWS documents for a ConverseStream exception.
fn exception_status(kind: &str) -> u16 {
    match kind.to_ascii_lowercase().as_str() {
        "validationexception" => 400,
        "accessdeniedexception" => 403,
        "resourcenotfoundexception" => 404,
        "modeltimeoutexception" => 408,
        "modelstreamerrorexception" => 424,
        "throttlingexception" => 429,
        "serviceunavailableexception" => 503,
        _ => 500,
    }
}

/// One Anthropic server-sent event.
fn anthropic_event(kind: &str, data: &Value) -> Vec<u8> {
    format!("event: {kind}\ndata: {data}\n\n").into_bytes()
}

/// Translates a `ConverseStream` event stream into Anthropic server-sent events. Converse
/// reports usage in its last (`metadata`) event, after `messageStop`, so `message_delta`
/// (stop reason and usage) and `message_stop` are sent when `metadata` arrives, or at the end
/// of the stream when it never does.
#[derive(Debug)]
struct MessagesStream {
    decoder: Decoder,
    model: String,
    id: String,
    usage: TokenUsage,
    /// The Converse `usage` of the `metadata` event.
    usage_json: Option<Value>,
    started: bool,
    /// Content blocks started and not yet stopped.
    open: Vec<u64>,
    /// Stop reason and stop sequence of `messageStop`.
    stop: Option<(&'static str, Value)>,
    ended: bool,
}

impl MessagesStream {
    fn new(model: &str, request_id: Option<&str>) -> Self {
        MessagesStream {
            decoder: Decoder::new(),
            model: model.to_string(),
            id: message_id(request_id),
            usage: TokenUsage::default(),
            usage_json: None,
            started: false,
            open: Vec::new(),
            stop: None,
            ended: false,
        }
    }

    fn start(&mut self, role: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        out.extend(anthropic_event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id,
                "type": "message",
                "role": role,
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        ));
    }

    /// Sends `content_block_start` for `index` unless already sent.
    fn open_block(&mut self, index: u64, block: Value, out: &mut Vec<u8>) {
        if self.open.contains(&index) {
            return;
        }
        self.open.push(index);
        out.extend(anthropic_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
    }

    fn delta(index: u64, delta: Value, out: &mut Vec<u8>) {
        out.extend(anthropic_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        ));
    }

    /// `message_delta` and `message_stop`, once.
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let Some((reason, sequence)) = self.stop.clone() else {
            return;
        };
        self.ended = true;
        let usage = anthropic_usage(self.usage_json.as_ref().unwrap_or(&Value::Null));
        out.extend(anthropic_event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": usage,
            }),
        ));
        out.extend(anthropic_event(
            "message_stop",
            &json!({"type": "message_stop"}),
        ));
    }

    fn exception(message: &Message) -> Vec<u8> {
        let payload = serde_json::from_slice::<Value>(&message.payload).ok();
        let text = payload
            .as_ref()
            .and_then(|p| p.get("message").or_else(|| p.get("Message")))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| message.header(":error-message").map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&message.payload).into_owned());
        let kind = message
            .exception_type()
            .or_else(|| message.header(":error-code"))
            .unwrap_or("");
        anthropic_event(
            "error",
            &json!({"type": "error", "error": {
                "type": error_type_for(exception_status(kind)),
                "message": text,
            }}),
        )
    }

    fn event(&mut self, message: &Message) -> Result<Vec<u8>, TranslateError> {
        if matches!(message.message_type(), Some("exception") | Some("error")) {
            return Ok(Self::exception(message));
        }
        let mut out = Vec::new();
        let Some(kind) = message.event_type() else {
            return Ok(out);
        };
        let payload: Value = serde_json::from_slice(&message.payload).map_err(|err| {
            TranslateError::Upstream(format!("{kind} event payload is not JSON: {err}"))
        })?;
        let index = number(&payload, "contentBlockIndex").unwrap_or(0);
        if kind == "messageStart" {
            let role = payload
                .get("role")
                .and_then(Value::as_str)
                .unwrap_or("assistant");
            self.start(role, &mut out);
            return Ok(out);
        }
        if matches!(
            kind,
            "contentBlockStart" | "contentBlockDelta" | "contentBlockStop" | "messageStop"
        ) {
            self.start("assistant", &mut out);
        }
        match kind {
            // Text and reasoning blocks start with their first delta, which tells their type.
            "contentBlockStart" => {
                if let Some(tool) = payload.pointer("/start/toolUse") {
                    let block = json!({
                        "type": "tool_use",
                        "id": tool.get("toolUseId").cloned().unwrap_or(Value::Null),
                        "name": tool.get("name").cloned().unwrap_or(Value::Null),
                        "input": {},
                    });
                    self.open_block(index, block, &mut out);
                }
            }
            "contentBlockDelta" => {
                let delta = payload.get("delta").unwrap_or(&Value::Null);
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    self.open_block(index, json!({"type": "text", "text": ""}), &mut out);
                    Self::delta(index, json!({"type": "text_delta", "text": text}), &mut out);
                } else if let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str)
                {
                    Self::delta(
                        index,
                        json!({"type": "input_json_delta", "partial_json": input}),
                        &mut out,
                    );
                } else if let Some(reasoning) = delta.get("reasoningContent") {
                    if let Some(data) = reasoning.get("redactedContent").and_then(Value::as_str) {
                        self.open_block(
                            index,
                            json!({"type": "redacted_thinking", "data": data}),
                            &mut out,
                        );
                    } else {
                        self.open_block(
                            index,
                            json!({"type": "thinking", "thinking": ""}),
                            &mut out,
                        );
                        if let Some(text) = reasoning.get("text").and_then(Value::as_str) {
                            Self::delta(
                                index,
                                json!({"type": "thinking_delta", "thinking": text}),
                                &mut out,
                            );
                        }
                        if let Some(signature) = reasoning.get("signature").and_then(Value::as_str)
                        {
                            Self::delta(
                                index,
                                json!({"type": "signature_delta", "signature": signature}),
                                &mut out,
                            );
                        }
                    }
                }
            }
            "contentBlockStop" => {
                // A block that never had a delta still gets its start.
                self.open_block(index, json!({"type": "text", "text": ""}), &mut out);
                self.open.retain(|open| *open != index);
                out.extend(anthropic_event(
                    "content_block_stop",
                    &json!({"type": "content_block_stop", "index": index}),
                ));
            }
            "messageStop" => {
                let reason = payload
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn");
                self.stop = Some((anthropic_stop_reason(reason), stop_sequence(&payload)));
                if self.usage_json.is_some() {
                    self.end(&mut out);
                }
            }
            "metadata" => {
                let usage = payload
                    .get("usage")
                    .filter(|u| u.is_object())
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                self.usage = converse_usage(&usage);
                self.usage_json = Some(usage);
                self.end(&mut out);
            }
            _ => {}
        }
        Ok(out)
    }
}

impl StreamTranslator for MessagesStream {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        let mut out = Vec::new();
        for message in self.decoder.feed(chunk)? {
            out.extend(self.event(&message)?);
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        if self.decoder.has_pending() {
            return Err(TranslateError::Upstream(
                "the event stream ended inside a frame".into(),
            ));
        }
        let mut out = Vec::new();
        self.end(&mut out);
        Ok(out)
    }

    fn usage(&self) -> TokenUsage {
        self.usage
    }

    fn model(&self) -> Option<String> {
        Some(self.model.clone())
    }
}

#[cfg(test)]
mod messages_tests;

// The Anthropic token-counting API served by Bedrock `CountTokens` with Converse input.

/// The Anthropic token-counting API (`/anthropic/v1/messages/count_tokens`) served by Bedrock
/// `CountTokens` (`/model/<model>/count-tokens`) with Converse input:
/// `{"input":{"converse":{"messages", "system", "toolConfig", "additionalModelRequestFields"}}}`
/// built by the same mapping as [`AnthropicMessages`], so a count matches what the Messages API
/// sends through Converse; `inferenceConfig`, which `CountTokens` does not take, is left out.
/// The model loses any cross-region inference prefix
/// ([`super::anthropic::bedrock_count_tokens_model`]): `CountTokens` takes foundation models.
///
/// Bedrock's `{"inputTokens": n}` goes back as `{"input_tokens": n}`, reported as input usage
/// (as upstream does; nothing is generated). Counting never streams: `stream: true` is refused
/// (400). Errors come back in the Anthropic error shape.
#[derive(Debug, Clone, Copy)]
pub struct CountTokens;

/// The Converse request fields `CountTokens` takes.
const COUNT_TOKENS_CONVERSE_FIELDS: [&str; 4] = [
    "messages",
    "system",
    "toolConfig",
    "additionalModelRequestFields",
];

impl Translator for CountTokens {
    fn request(
        &mut self,
        body: &Value,
        ctx: &RequestContext<'_>,
    ) -> Result<UpstreamRequest, TranslateError> {
        super::anthropic::count_tokens_fields(body, ctx)?;
        let converse = messages_request(body, ctx.model, false)?;
        let mut converse: Map<String, Value> = serde_json::from_slice(&converse.body)
            .map_err(|err| invalid(format!("the Converse request is not JSON: {err}")))?;
        let mut input = Map::new();
        for name in COUNT_TOKENS_CONVERSE_FIELDS {
            if let Some(value) = converse.remove(name) {
                input.insert(name.into(), value);
            }
        }
        let model = super::anthropic::bedrock_count_tokens_model(ctx.model);
        Ok(UpstreamRequest {
            path: format!("/model/{}/count-tokens", path_escape(model)),
            body: json!({"input": {"converse": input}})
                .to_string()
                .into_bytes(),
            headers: vec![("content-type".into(), "application/json".into())],
        })
    }

    fn response(
        &self,
        body: &[u8],
        ctx: &ResponseContext<'_>,
    ) -> Result<Translated, TranslateError> {
        let (body, usage) = super::anthropic::bedrock_count_tokens_response(body)?;
        Ok(ctx.translated(body, usage))
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        messages_error(status, body)
    }

    fn stream(&self, _ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(PassThrough)
    }
}

#[cfg(test)]
mod count_tokens_tests;
