//! OpenAI chat completions served by Bedrock `Converse` / `ConverseStream`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::{converse_response, output_content};
use crate::time::unix_now;
use crate::translate::eventstream::{Decoder, FrameEvents, Message};
use crate::translate::{
    RequestContext, ResponseContext, SSE_DONE, StreamTranslator, TranslateError, Translated,
    Translator, UpstreamRequest, data_url, finish_reason, function_call, invalid, number_field,
    path_escape, sse_event, unsupported, usage_chunk,
};
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
pub(super) fn image_format(media_type: &str) -> Option<&'static str> {
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
            let (id, name, input) = function_call(call)?;
            Ok(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}))
        })
        .collect()
}

/// Appends blocks as a turn of `role`, merging with the previous turn of the same role.
pub(super) fn push_turn(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    crate::translate::merge_turn(messages, role, "content", blocks);
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

pub(super) fn number(value: &Value, key: &str) -> Option<u64> {
    value.get(key).and_then(Value::as_u64)
}

/// Converse `usage` -> token usage, counting cache reads and writes as input.
pub(super) fn converse_usage(usage: &Value) -> TokenUsage {
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
    let response = converse_response(body)?;
    let content = output_content(&response);
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
        out["usage"] = usage.to_openai();
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
pub(super) fn error_message(body: &[u8]) -> (bool, String) {
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
        if let Some(failure) = message.failure() {
            let kind = failure.kind.unwrap_or("AWSBedrockBackendError");
            return Ok(sse_event(&json!({
                "error": {"message": failure.message, "type": kind, "code": null}
            })));
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
                    usage_chunk(&self.id, self.created, &self.model, &self.usage)
                }
                None => Vec::new(),
            },
            // contentBlockStop and unknown events carry nothing the client needs.
            _ => Vec::new(),
        })
    }
}

impl FrameEvents for ChatStream {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    fn on_message(&mut self, message: &Message, out: &mut Vec<u8>) -> Result<(), TranslateError> {
        out.extend(self.event(message)?);
        Ok(())
    }
}

impl StreamTranslator for ChatStream {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        self.feed_frames(chunk)
    }

    fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        self.decoder.finish()?;
        Ok(SSE_DONE.to_vec())
    }

    fn usage(&self) -> TokenUsage {
        self.usage
    }

    fn model(&self) -> Option<String> {
        Some(self.model.clone())
    }
}
