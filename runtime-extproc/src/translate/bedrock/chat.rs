//! OpenAI chat completions served by Bedrock `Converse` / `ConverseStream`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::converse::{
    ConverseEvents, ConverseRequest, ConverseStream, client_messages, converse_response,
    converse_usage, image_format, output_content, push_turn, response_id, sampling_config,
    start_role, stop_reason, tool_config, tool_spec, usage_object,
};
use super::error_response;
use crate::time::unix_now;
use crate::translate::eventstream::Failure;
use crate::translate::{
    RequestContext, RequestResult, ResponseContext, ResponseResult, SSE_DONE, StreamTranslator,
    TranslateError, Translator, UpstreamRequest, asks_logprobs, asks_several_choices, data_url,
    finish_reason, function_call, invalid, required_str, sse_event, tool_call_arguments,
    tool_call_start, unsupported, usage_chunk,
};
use crate::usage::TokenUsage;

/// OpenAI chat completions served by Bedrock `Converse` / `ConverseStream`.
#[derive(Debug, Clone, Copy)]
pub struct OpenAiChat;

impl Translator for OpenAiChat {
    fn request(&mut self, body: &Value, ctx: &RequestContext<'_>) -> RequestResult {
        chat_request(body, ctx.model, ctx.stream)
    }

    fn response(&self, body: &[u8], ctx: &ResponseContext<'_>) -> ResponseResult {
        let (body, usage) = chat_response(body, ctx.model, ctx.header("x-amzn-requestid"))?;
        Ok(ctx.translated(body, usage))
    }

    fn error(&self, status: u16, body: &[u8], ctx: &ResponseContext<'_>) -> Vec<u8> {
        error_response(status, ctx.header("x-amzn-errortype"), body)
    }

    fn stream(&self, ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(chat_stream(ctx.model, ctx.header("x-amzn-requestid")))
    }
}

#[cfg(test)]
mod tests;

/// Converse text blocks of a `content` that must be text: a string or an array of `text`
/// parts.
fn text_blocks(content: &Value, role: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"text": s})]),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => part
                    .get("text")
                    .and_then(Value::as_str)
                    .map(|text| json!({"text": text}))
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

/// An `image_url` part with a `data:image/png;base64,...` URL -> a Converse image block.
fn image_block(part: &Value) -> Result<Value, TranslateError> {
    let url = required_str(part.pointer("/image_url/url"), "image_url part without url")?;
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

/// A `tool` message (its `content`) -> a Converse `toolResult` block.
fn tool_result(message: &Value, content: &Value) -> Result<Value, TranslateError> {
    let id = required_str(
        message.get("tool_call_id"),
        "tool message without tool_call_id",
    )?;
    let result = text_blocks(content, "tool")?;
    Ok(json!({"toolResult": {"toolUseId": id, "content": result}}))
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
                        let text = required_str(part.get("text"), "text part without text")?;
                        blocks.push(json!({"text": text}));
                    }
                    Some("image_url") => blocks.push(image_block(part)?),
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

fn chat_tool_config(request: &Value) -> Result<Option<Value>, TranslateError> {
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
            let kind = tool.get("type").and_then(Value::as_str);
            if let Some(kind) = kind.filter(|kind| *kind != "function") {
                return Err(unsupported(format!(
                    "tool type {kind} is not supported by AWS Bedrock"
                )));
            }
            let function = tool
                .get("function")
                .ok_or_else(|| invalid("tool without function"))?;
            let name = required_str(function.get("name"), "tool function without name")?;
            Ok(tool_spec(
                name,
                function.get("description").and_then(Value::as_str),
                function.get("parameters"),
            ))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(tool_config(specs, choice)))
}

fn inference_config(fields: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    let max = fields
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| fields.get("max_tokens").filter(|v| !v.is_null()));
    let mut config = sampling_config(fields, max)?;
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

fn reject_unsupported(fields: &Map<String, Value>) -> Result<(), TranslateError> {
    if asks_several_choices(fields) {
        return Err(unsupported(
            "AWS Bedrock returns one choice: n > 1 is not supported",
        ));
    }
    if asks_logprobs(fields) {
        return Err(unsupported("logprobs are not supported by AWS Bedrock"));
    }
    let audio_out = fields.get("audio").is_some_and(|v| !v.is_null())
        || fields
            .get("modalities")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|v| v == "audio"));
    if audio_out {
        return Err(unsupported("audio output is not supported by AWS Bedrock"));
    }
    Ok(())
}

/// Translates an OpenAI chat completion request into a Bedrock `Converse` request for `model`,
/// or a `ConverseStream` request when `stream` (the client's `stream: true`).
pub fn chat_request(
    request: &Value,
    model: &str,
    stream: bool,
) -> Result<UpstreamRequest, TranslateError> {
    let (fields, input) = client_messages(request, reject_unsupported)?;
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for message in input {
        let role = required_str(message.get("role"), "message without role")?;
        let content = message.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => system.extend(text_blocks(content, role)?),
            "user" => push_turn(&mut messages, "user", content_blocks(content, role)?),
            "assistant" => {
                let mut blocks = content_blocks(content, role)?;
                blocks.extend(tool_use_blocks(
                    message.get("tool_calls").unwrap_or(&Value::Null),
                )?);
                push_turn(&mut messages, "assistant", blocks);
            }
            "tool" => push_turn(&mut messages, "user", vec![tool_result(message, content)?]),
            "function" => return Err(unsupported("function messages are not supported; use tool")),
            other => return Err(invalid(format!("unknown message role {other}"))),
        }
    }
    let converse = ConverseRequest {
        messages,
        system,
        inference_config: inference_config(fields)?,
        tool_config: chat_tool_config(request)?,
        additional_fields: additional_fields(request),
    };
    Ok(converse.into_upstream(model, stream))
}

/// Translates a buffered `Converse` response into an OpenAI `chat.completion`; `model` is the
/// request model (Bedrock does not report one) and `request_id` the `x-amzn-requestid`.
pub fn chat_response(
    body: &[u8],
    model: &str,
    request_id: Option<&str>,
) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let response = converse_response(body)?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in output_content(&response) {
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
    let stop = stop_reason(&response);
    let usage_json = usage_object(&response);
    let usage = usage_json.map(converse_usage).unwrap_or_default();
    let mut out = json!({
        "id": response_id(request_id, "chatcmpl-"),
        "object": "chat.completion",
        "created": unix_now(),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(stop)}],
    });
    if usage_json.is_some() {
        out["usage"] = usage.to_openai();
    }
    Ok((out.to_string().into_bytes(), usage))
}

/// Translates a `ConverseStream` event stream into OpenAI `chat.completion.chunk` events for
/// a request for `model`; `request_id` is the `x-amzn-requestid` response header, used as the
/// completion id.
fn chat_stream(model: &str, request_id: Option<&str>) -> ConverseStream<ChatEvents> {
    ConverseStream::of(ChatEvents {
        model: model.to_string(),
        id: response_id(request_id, "chatcmpl-"),
        created: unix_now(),
        usage: TokenUsage::default(),
        tools: HashMap::new(),
    })
}

/// `ConverseStream` events as OpenAI `chat.completion.chunk` events.
#[derive(Debug)]
struct ChatEvents {
    model: String,
    id: String,
    created: u64,
    usage: TokenUsage,
    /// Converse content block index -> OpenAI tool call index.
    tools: HashMap<u64, u64>,
}

impl ChatEvents {
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
}

impl ConverseEvents for ChatEvents {
    fn failure(&mut self, failure: &Failure<'_>) -> Vec<u8> {
        let kind = failure.kind.unwrap_or("AWSBedrockBackendError");
        sse_event(&json!({
            "error": {"message": failure.message, "type": kind, "code": null}
        }))
    }

    fn event(&mut self, kind: &str, payload: &Value) -> Vec<u8> {
        let block = payload
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match kind {
            "messageStart" => self.chunk(json!({"role": start_role(payload), "content": ""}), None),
            "contentBlockStart" => match payload.pointer("/start/toolUse") {
                Some(tool) => {
                    let index = self.tool_index(block);
                    let start = tool_call_start(index, tool.get("toolUseId"), tool.get("name"));
                    self.chunk(start, None)
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
                    self.chunk(tool_call_arguments(index, input), None)
                } else if let Some(text) = delta
                    .pointer("/reasoningContent/text")
                    .and_then(Value::as_str)
                {
                    self.chunk(json!({"reasoning_content": text}), None)
                } else {
                    Vec::new()
                }
            }
            "messageStop" => self.chunk(json!({}), Some(finish_reason(stop_reason(payload)))),
            "metadata" => match usage_object(payload) {
                Some(usage) => {
                    self.usage = converse_usage(usage);
                    usage_chunk(&self.id, self.created, &self.model, &self.usage)
                }
                None => Vec::new(),
            },
            // contentBlockStop and unknown events carry nothing the client needs.
            _ => Vec::new(),
        }
    }

    fn end(&mut self) -> Vec<u8> {
        SSE_DONE.to_vec()
    }

    fn usage(&self) -> TokenUsage {
        self.usage
    }

    fn model(&self) -> &str {
        &self.model
    }
}
