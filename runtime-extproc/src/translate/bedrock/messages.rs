//! The Anthropic Messages API served by Bedrock `Converse` / `ConverseStream`.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use base64::Engine as _;

use super::converse::{
    ConverseEvents, ConverseRequest, ConverseStream, client_messages, converse_response,
    converse_usage, image_format, number, output_content, push_turn, response_id, sampling_config,
    start_role, stop_reason, tool_config, tool_spec, usage_object,
};
use super::error_message;
use crate::translate::anthropic::error_type_for;
use crate::translate::eventstream::Failure;
use crate::translate::{
    RequestContext, RequestResult, ResponseContext, ResponseResult, StreamTranslator,
    TranslateError, Translator, UpstreamRequest, invalid, number_field, unsupported,
};
use crate::usage::TokenUsage;

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
    fn request(&mut self, body: &Value, ctx: &RequestContext<'_>) -> RequestResult {
        messages_request(body, ctx.model, ctx.stream)
    }

    fn response(&self, body: &[u8], ctx: &ResponseContext<'_>) -> ResponseResult {
        let (body, usage) = messages_response(body, ctx.model, ctx.header("x-amzn-requestid"))?;
        Ok(ctx.translated(body, usage))
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        messages_error(status, body)
    }

    fn stream(&self, ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(messages_stream(ctx.model, ctx.header("x-amzn-requestid")))
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

/// Anthropic `system` (a string or text blocks) -> Converse `system` blocks.
fn messages_system(system: Option<&Value>) -> Result<Vec<Value>, TranslateError> {
    match system {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) if text.is_empty() => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![json!({"text": text})]),
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
            Ok(out)
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
        specs.push(tool_spec(
            required_str(tool, "name", "tool")?,
            tool.get("description").and_then(Value::as_str),
            tool.get("input_schema"),
        ));
        if has_cache_control(tool) {
            specs.push(cache_point());
        }
    }
    Ok(Some(tool_config(specs, choice)))
}

/// `max_tokens`, `temperature`, `top_p`, `stop_sequences` -> Converse `inferenceConfig`.
fn messages_inference_config(fields: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    let mut config = sampling_config(fields, fields.get("max_tokens").filter(|v| !v.is_null()))?;
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
    Ok(messages_converse(request)?.into_upstream(model, stream))
}

/// The Converse request fields of an Anthropic Messages request.
pub(super) fn messages_converse(request: &Value) -> Result<ConverseRequest, TranslateError> {
    let (fields, input) = client_messages(request, reject_messages_fields)?;
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
    Ok(ConverseRequest {
        messages,
        system: messages_system(fields.get("system"))?,
        inference_config: messages_inference_config(fields)?,
        tool_config: messages_tool_config(fields, tool_blocks)?,
        additional_fields: messages_additional_fields(fields)?,
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

/// Converse `usage` as an Anthropic `usage` object ([`TokenUsage::to_anthropic`]), with the
/// cache counts Converse did not report as 0, as Bedrock's own Anthropic answers carry them.
fn anthropic_usage(usage: &Value) -> Value {
    let mut out = converse_usage(usage).to_anthropic();
    if let Some(fields) = out.as_object_mut() {
        for key in ["cache_read_input_tokens", "cache_creation_input_tokens"] {
            fields.entry(key).or_insert(json!(0));
        }
    }
    out
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
    let response = converse_response(body)?;
    let content = output_content(&response);
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
    let stop = stop_reason(&response);
    let usage_json = usage_object(&response).unwrap_or(&Value::Null);
    let usage = if usage_json.is_object() {
        converse_usage(usage_json)
    } else {
        TokenUsage::default()
    };
    let out = json!({
        "id": response_id(request_id, "msg_"),
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
pub(super) fn messages_error(status: u16, body: &[u8]) -> Vec<u8> {
    let (_, message) = error_message(body);
    json!({"type": "error", "error": {"type": error_type_for(status), "message": message}})
        .to_string()
        .into_bytes()
}

/// One Anthropic server-sent event.
fn anthropic_event(kind: &str, data: &Value) -> Vec<u8> {
    format!("event: {kind}\ndata: {data}\n\n").into_bytes()
}

/// Translates a `ConverseStream` event stream into Anthropic server-sent events. Converse
/// reports usage in its last (`metadata`) event, after `messageStop`, so `message_delta`
/// (stop reason and usage) and `message_stop` are sent when `metadata` arrives, or at the end
/// of the stream when it never does.
fn messages_stream(model: &str, request_id: Option<&str>) -> ConverseStream<MessagesEvents> {
    ConverseStream::of(MessagesEvents {
        model: model.to_string(),
        id: response_id(request_id, "msg_"),
        usage: TokenUsage::default(),
        usage_json: None,
        started: false,
        open: Vec::new(),
        stop: None,
        ended: false,
    })
}

/// `ConverseStream` events as Anthropic server-sent events.
#[derive(Debug)]
struct MessagesEvents {
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

impl MessagesEvents {
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
    fn end_message(&mut self, out: &mut Vec<u8>) {
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
}

impl ConverseEvents for MessagesEvents {
    fn failure(&mut self, failure: &Failure<'_>) -> Vec<u8> {
        anthropic_event(
            "error",
            &json!({"type": "error", "error": {
                "type": error_type_for(failure.status()),
                "message": failure.message,
            }}),
        )
    }

    fn event(&mut self, kind: &str, payload: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        let index = number(payload, "contentBlockIndex").unwrap_or(0);
        if kind == "messageStart" {
            self.start(start_role(payload), &mut out);
            return out;
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
                let reason = anthropic_stop_reason(stop_reason(payload));
                self.stop = Some((reason, stop_sequence(payload)));
                if self.usage_json.is_some() {
                    self.end_message(&mut out);
                }
            }
            "metadata" => {
                let usage = usage_object(payload).cloned().unwrap_or_else(|| json!({}));
                self.usage = converse_usage(&usage);
                self.usage_json = Some(usage);
                self.end_message(&mut out);
            }
            _ => {}
        }
        out
    }

    fn end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.end_message(&mut out);
        out
    }

    fn usage(&self) -> TokenUsage {
        self.usage
    }

    fn model(&self) -> &str {
        &self.model
    }
}

#[cfg(test)]
mod tests;
