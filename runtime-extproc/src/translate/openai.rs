//! The Anthropic Messages API (`/anthropic/v1/messages`) served by OpenAI-compatible chat
//! completions backends ([`AnthropicMessages`]): Messages requests to chat completion
//! requests, `chat.completion` objects back to Anthropic messages, OpenAI
//! `chat.completion.chunk` streams to Anthropic server-sent events, and OpenAI errors to the
//! Anthropic error shape.
//!
//! What OpenAI cannot express is answered 422: Anthropic server tools (web search, code
//! execution, ...), MCP servers, containers, and content blocks OpenAI has no part for
//! (documents other than base64 PDF or plain text, images in tool results, server tool
//! results). Hints without an OpenAI equivalent are dropped: `top_k`, `thinking` (OpenAI
//! reasoning models reason on their own and other models reject `reasoning_effort`), earlier
//! `thinking` blocks, `cache_control` (OpenAI caches on its own), `is_error` on tool results
//! and `service_tier`.

use serde_json::{Map, Value, json};

use super::anthropic::{error_type_for, messages_error, messages_sse_event, server_tool_type};
use super::sse::{SseEvents, SseReader};
use super::{
    RequestContext, RequestResult, ResponseContext, ResponseResult, StreamTranslator,
    TranslateError, Translated, Translator, UpstreamRequest, body_fields, function_spec, invalid,
    number_field, required_str, string_list, unsupported,
};
use crate::usage::TokenUsage;

/// Anthropic Messages requests served by an OpenAI-compatible `/chat/completions` backend.
#[derive(Debug, Clone)]
pub struct AnthropicMessages {
    path: String,
}

impl AnthropicMessages {
    /// The translator for a backend whose API lives under `prefix` (`v1` gives
    /// `/v1/chat/completions`; empty gives `/chat/completions`).
    pub fn new(prefix: String) -> Self {
        let prefix = prefix.trim_matches('/');
        let path = if prefix.is_empty() {
            "/chat/completions".to_string()
        } else {
            format!("/{prefix}/chat/completions")
        };
        AnthropicMessages { path }
    }
}

impl Translator for AnthropicMessages {
    fn request(&mut self, body: &Value, ctx: &RequestContext<'_>) -> RequestResult {
        let body = messages_request(body, ctx.model)?;
        Ok(UpstreamRequest {
            path: self.path.clone(),
            body: body.to_string().into_bytes(),
            headers: Vec::new(),
        })
    }

    fn response(&self, body: &[u8], ctx: &ResponseContext<'_>) -> ResponseResult {
        messages_response(body, ctx.model)
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        messages_error(status, body)
    }

    fn stream(&self, ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(MessagesStream::new(ctx.model))
    }
}

/// Translates an Anthropic Messages request into an OpenAI chat completion request for
/// `model`.
pub fn messages_request(request: &Value, model: &str) -> Result<Value, TranslateError> {
    let fields = body_fields(
        request,
        &[("model", Value::is_string, "model must be a string")],
    )?;
    let Some(turns) = fields.get("messages").and_then(Value::as_array) else {
        return Err(invalid("messages must be a list"));
    };
    for name in ["mcp_servers", "container"] {
        if fields.get(name).is_some_and(|v| !v.is_null()) {
            return Err(unsupported(format!(
                "{name} cannot be served by an OpenAI backend"
            )));
        }
    }

    let mut messages = Vec::new();
    if let Some(system) = system_text(fields.get("system"))? {
        messages.push(json!({"role": "system", "content": system}));
    }
    for turn in turns {
        let role = required_str(turn.get("role"), "every message needs a role")?;
        let content = turn.get("content").unwrap_or(&Value::Null);
        match role {
            "user" => user_messages(content, &mut messages)?,
            "assistant" => {
                if let Some(message) = assistant_message(content)? {
                    messages.push(message);
                }
            }
            other => return Err(invalid(format!("unknown message role {other:?}"))),
        }
    }

    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages));
    if let Some(max) = fields.get("max_tokens").filter(|v| !v.is_null()) {
        let max = max
            .as_u64()
            .ok_or_else(|| invalid("max_tokens must be a non-negative integer"))?;
        body.insert("max_completion_tokens".into(), json!(max));
    }
    for name in ["temperature", "top_p"] {
        number_field(fields, name, name, &mut body)?;
    }
    let stops = fields.get("stop_sequences");
    if let Some(stops) = string_list(stops, "stop_sequences must be a list of strings")? {
        body.insert("stop".into(), stops);
    }
    let tools = tools(fields.get("tools"))?;
    let has_tools = !tools.is_empty();
    if has_tools {
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = fields.get("tool_choice").filter(|v| !v.is_null()) {
        let (choice, parallel_off) = tool_choice(choice)?;
        // OpenAI refuses tool_choice and parallel_tool_calls without tools.
        if has_tools {
            body.insert("tool_choice".into(), choice);
            if parallel_off {
                body.insert("parallel_tool_calls".into(), json!(false));
            }
        }
    }
    if let Some(user) = request.pointer("/metadata/user_id").and_then(Value::as_str) {
        body.insert("user".into(), json!(user));
    }
    if fields.get("stream").and_then(Value::as_bool) == Some(true) {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(body))
}

/// The system prompt (a string or text blocks) as one string; `None` when empty.
fn system_text(system: Option<&Value>) -> Result<Option<String>, TranslateError> {
    let text = match system {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for block in blocks {
                if block.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(invalid("system blocks must be text blocks"));
                }
                parts.push(text_of(block)?);
            }
            parts.join("\n")
        }
        Some(_) => return Err(invalid("system must be a string or a list of text blocks")),
    };
    Ok((!text.is_empty()).then_some(text))
}

fn text_of(block: &Value) -> Result<String, TranslateError> {
    required_str(block.get("text"), "a text block needs text").map(str::to_string)
}

fn block_type(block: &Value) -> Result<&str, TranslateError> {
    required_str(block.get("type"), "every content block needs a type")
}

/// An image block as an OpenAI `image_url` part.
fn image_part(block: &Value) -> Result<Value, TranslateError> {
    let source = block
        .get("source")
        .ok_or_else(|| invalid("an image block needs a source"))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media_type =
                required_str(source.get("media_type"), "a base64 image needs media_type")?;
            let data = required_str(source.get("data"), "a base64 image needs data")?;
            format!("data:{media_type};base64,{data}")
        }
        Some("url") => required_str(source.get("url"), "a url image needs url")?.to_string(),
        Some(other) => {
            return Err(unsupported(format!(
                "{other} image sources cannot be sent to an OpenAI backend"
            )));
        }
        None => return Err(invalid("an image source needs a type")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A document block: a base64 PDF as an OpenAI `file` part, plain text as a text part.
fn document_part(block: &Value) -> Result<Value, TranslateError> {
    let source = block
        .get("source")
        .ok_or_else(|| invalid("a document block needs a source"))?;
    let kind = source.get("type").and_then(Value::as_str).unwrap_or("");
    let media_type = source
        .get("media_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let data = source.get("data").and_then(Value::as_str);
    match (kind, media_type, data) {
        ("base64", "application/pdf", Some(data)) => {
            let filename = block
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("document.pdf");
            Ok(json!({"type": "file", "file": {
                "filename": filename,
                "file_data": format!("data:application/pdf;base64,{data}"),
            }}))
        }
        ("text", _, Some(text)) => Ok(json!({"type": "text", "text": text})),
        _ => Err(unsupported(format!(
            "{kind} {media_type} documents cannot be sent to an OpenAI backend (base64 PDF and \
             plain text can)"
        ))),
    }
}

/// A `tool_result` block as an OpenAI `tool` message (text blocks joined by newlines).
fn tool_message(block: &Value) -> Result<Value, TranslateError> {
    let id = required_str(
        block.get("tool_use_id"),
        "a tool_result block needs tool_use_id",
    )?;
    let content = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => {
            let mut texts = Vec::with_capacity(items.len());
            for item in items {
                match block_type(item)? {
                    "text" => texts.push(text_of(item)?),
                    other => {
                        return Err(unsupported(format!(
                            "{other} content in a tool_result cannot be sent to an OpenAI backend"
                        )));
                    }
                }
            }
            texts.join("\n")
        }
        Some(_) => return Err(invalid("tool_result content must be a string or a list")),
    };
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

/// A user turn: its tool results first, as `tool` messages (OpenAI wants them right after
/// the assistant's tool calls), then the rest as one user message.
fn user_messages(content: &Value, messages: &mut Vec<Value>) -> Result<(), TranslateError> {
    let blocks = match content {
        Value::String(text) => {
            messages.push(json!({"role": "user", "content": text}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => return Err(invalid("message content must be a string or a list")),
    };
    let mut parts = Vec::new();
    for block in blocks {
        match block_type(block)? {
            "tool_result" => messages.push(tool_message(block)?),
            "text" => parts.push(json!({"type": "text", "text": text_of(block)?})),
            "image" => parts.push(image_part(block)?),
            "document" => parts.push(document_part(block)?),
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(unsupported(format!(
                    "{other} blocks cannot be sent to an OpenAI backend"
                )));
            }
        }
    }
    if !parts.is_empty() {
        let content = match parts.as_slice() {
            [only] if only.get("type").and_then(Value::as_str) == Some("text") => {
                only.get("text").cloned().unwrap_or(Value::Null)
            }
            _ => Value::Array(parts),
        };
        messages.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

/// An assistant turn: text blocks joined (Anthropic splits one answer into several around
/// citations), `tool_use` blocks as tool calls, thinking dropped. `None` when nothing is left.
fn assistant_message(content: &Value) -> Result<Option<Value>, TranslateError> {
    let blocks = match content {
        Value::String(text) => return Ok(Some(json!({"role": "assistant", "content": text}))),
        Value::Array(blocks) => blocks,
        _ => return Err(invalid("message content must be a string or a list")),
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block_type(block)? {
            "text" => text.push_str(&text_of(block)?),
            "tool_use" => {
                let id = required_str(block.get("id"), "a tool_use block needs an id")?;
                let name = required_str(block.get("name"), "a tool_use block needs a name")?;
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(unsupported(format!(
                    "{other} blocks cannot be sent to an OpenAI backend"
                )));
            }
        }
    }
    if calls.is_empty() && text.is_empty() {
        return Ok(None);
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() { Value::Null } else { json!(text) },
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    Ok(Some(message))
}

/// Client tools as OpenAI function tools; Anthropic server tools are refused.
fn tools(tools: Option<&Value>) -> Result<Vec<Value>, TranslateError> {
    let list = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("tools must be a list")),
    };
    let mut out = Vec::with_capacity(list.len());
    for tool in list {
        if let Some(other) = server_tool_type(tool) {
            return Err(unsupported(format!(
                "the Anthropic server tool {other} cannot be served by an OpenAI backend"
            )));
        }
        let name = required_str(tool.get("name"), "a tool needs a name")?;
        let schema = tool.get("input_schema");
        let function = function_spec(name, "parameters", schema, tool.get("description"));
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}

/// `tool_choice` and whether parallel tool calls are off.
fn tool_choice(choice: &Value) -> Result<(Value, bool), TranslateError> {
    let parallel_off = choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        == Some(true);
    let mapped = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = required_str(choice.get("name"), "a tool tool_choice needs a name")?;
            json!({"type": "function", "function": {"name": name}})
        }
        Some(other) => return Err(invalid(format!("unknown tool_choice type {other:?}"))),
        None => return Err(invalid("tool_choice needs a type")),
    };
    Ok((mapped, parallel_off))
}

/// Anthropic `stop_reason` for an OpenAI `finish_reason`.
fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// The text of OpenAI message content: a string, or the text of its parts.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Reasoning text some OpenAI-compatible servers return (`reasoning_content`, `reasoning`).
fn reasoning_text(message: &Value) -> Option<&str> {
    message
        .get("reasoning_content")
        .or_else(|| message.get("reasoning"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
}

/// A string stop reason some servers (vLLM) add to a choice: the stop sequence that matched.
fn matched_stop(choice: &Value) -> Option<String> {
    choice
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Translates a buffered OpenAI `chat.completion` into an Anthropic message; `model` is the
/// requested model, used when the provider does not name one.
pub fn messages_response(body: &[u8], model: &str) -> Result<Translated, TranslateError> {
    let completion: Value = serde_json::from_slice(body).map_err(|err| {
        TranslateError::Upstream(format!("OpenAI chat completion is not JSON: {err}"))
    })?;
    let choices = completion
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::Upstream("OpenAI chat completion has no choices".into()))?;
    let mut content = Vec::new();
    let mut stop = "end_turn";
    let mut stop_sequence = Value::Null;
    if let Some(choice) = choices.first() {
        let message = choice.get("message").unwrap_or(&Value::Null);
        if let Some(reasoning) = reasoning_text(message) {
            content.push(json!({"type": "thinking", "thinking": reasoning, "signature": ""}));
        }
        let text = content_text(message.get("content"));
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        let refusal = message.get("refusal").and_then(Value::as_str).unwrap_or("");
        if !refusal.is_empty() {
            content.push(json!({"type": "text", "text": refusal}));
        }
        for call in tool_calls(message) {
            let arguments = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or("");
            // Arguments cut short (finish_reason "length") are not JSON: the input is empty.
            let input = serde_json::from_str::<Value>(arguments)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            content.push(json!({
                "type": "tool_use",
                "id": call.get("id").and_then(Value::as_str).unwrap_or(""),
                "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or(""),
                "input": input,
            }));
        }
        let finish = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .unwrap_or("stop");
        stop = stop_reason(finish);
        if !refusal.is_empty() {
            stop = "refusal";
        } else if finish == "stop"
            && let Some(sequence) = matched_stop(choice)
        {
            stop = "stop_sequence";
            stop_sequence = json!(sequence);
        }
    }
    let (usage, reported) = crate::usage::from_value(&completion);
    let model = reported
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| model.to_string());
    let message = json!({
        "id": completion.get("id").and_then(Value::as_str).unwrap_or(""),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": stop_sequence,
        "usage": usage.to_anthropic(),
    });
    Ok(Translated {
        body: message.to_string().into_bytes(),
        usage,
        model: Some(model),
    })
}

/// The tool calls of an OpenAI message or stream delta; none when it has no list of them.
fn tool_calls(message: &Value) -> impl Iterator<Item = &Value> {
    message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The content block being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(u64),
    Thinking(u64),
    Tool(u64),
}

impl Open {
    fn index(self) -> u64 {
        match self {
            Open::Text(i) | Open::Thinking(i) | Open::Tool(i) => i,
        }
    }
}

/// A tool call of the stream: its OpenAI index and id, and its Anthropic block index.
#[derive(Debug, Clone)]
struct ToolSlot {
    key: u64,
    id: Option<String>,
    block: u64,
}

/// Translates an OpenAI `chat.completion.chunk` stream into Anthropic server-sent events as
/// chunks arrive: `message_start` on the first chunk (input tokens 0, OpenAI reports usage
/// last), one content block per text, reasoning or tool call run, `message_delta` with the
/// stop reason and usage once both are known (or at `[DONE]`), then `message_stop`. A stream
/// that ends with neither a finish reason nor `[DONE]` ends with an `error` event. OpenAI
/// streams tool calls one after the other; arguments for a call whose block was already
/// closed are still sent, as a delta on that call's block index.
#[derive(Debug, Default)]
pub struct MessagesStream {
    requested_model: String,
    reader: SseReader,
    id: Option<String>,
    model: Option<String>,
    started: bool,
    open: Option<Open>,
    next_block: u64,
    tools: Vec<ToolSlot>,
    stop: Option<&'static str>,
    stop_sequence: Option<String>,
    refused: bool,
    usage: TokenUsage,
    usage_seen: bool,
    done: bool,
    stopped: bool,
}

impl MessagesStream {
    /// A stream for a request that asked for `model`.
    pub fn new(model: &str) -> Self {
        MessagesStream {
            requested_model: model.to_string(),
            ..MessagesStream::default()
        }
    }

    fn start(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = chunk.get("id").and_then(Value::as_str).map(str::to_string);
        out.extend(messages_sse_event(&json!({
            "type": "message_start",
            "message": {
                "id": self.id.as_deref().unwrap_or(""),
                "type": "message",
                "role": "assistant",
                "model": self.model.as_deref().unwrap_or(&self.requested_model),
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        })));
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some(open) = self.open.take() {
            out.extend(messages_sse_event(
                &json!({"type": "content_block_stop", "index": open.index()}),
            ));
        }
    }

    /// Opens a block unless `wanted` (given the index it would get) is already open.
    fn open(&mut self, wanted: fn(u64) -> Open, block: Value, out: &mut Vec<u8>) -> u64 {
        if let Some(open) = self.open
            && open == wanted(open.index())
        {
            return open.index();
        }
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some(wanted(index));
        out.extend(messages_sse_event(&json!({
            "type": "content_block_start",
            "index": index,
            "content_block": block,
        })));
        index
    }

    fn delta(out: &mut Vec<u8>, index: u64, delta: Value) {
        out.extend(messages_sse_event(&json!({
            "type": "content_block_delta",
            "index": index,
            "delta": delta,
        })));
    }

    fn tool_call(&mut self, call: &Value, out: &mut Vec<u8>) {
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|i| !i.is_empty());
        let known = match call.get("index").and_then(Value::as_u64) {
            Some(key) => self.tools.iter().position(|t| t.key == key),
            None => match id {
                Some(id) => self.tools.iter().position(|t| t.id.as_deref() == Some(id)),
                // No index and no id: the call being streamed.
                None => self.tools.len().checked_sub(1),
            },
        };
        let block = match known {
            Some(slot) => self.tools[slot].block,
            None => {
                let key = call
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(self.tools.len() as u64);
                let name = call
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                // A new call always gets its own block, even right after another call.
                self.close(out);
                let block = self.open(
                    Open::Tool,
                    json!({"type": "tool_use", "id": id.unwrap_or(""), "name": name, "input": {}}),
                    out,
                );
                self.tools.push(ToolSlot {
                    key,
                    id: id.map(str::to_string),
                    block,
                });
                block
            }
        };
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !arguments.is_empty() {
            Self::delta(
                out,
                block,
                json!({"type": "input_json_delta", "partial_json": arguments}),
            );
        }
    }

    fn chunk(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        if self.stopped {
            if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
                self.usage = TokenUsage::from_openai(usage);
            }
            return;
        }
        if self.model.is_none() {
            self.model = chunk
                .get("model")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(str::to_string);
        }
        if let Some(error) = chunk.get("error") {
            self.close(out);
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| error.to_string());
            let status = error
                .get("code")
                .and_then(|c| {
                    c.as_u64()
                        .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
                })
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            out.extend(messages_sse_event(&json!({
                "type": "error",
                "error": {"type": error_type_for(status), "message": message},
            })));
            self.stopped = true;
            return;
        }
        self.start(chunk, out);
        if let Some(choice) = chunk.pointer("/choices/0") {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if let Some(reasoning) = reasoning_text(delta) {
                let index = self.open(
                    Open::Thinking,
                    json!({"type": "thinking", "thinking": ""}),
                    out,
                );
                Self::delta(
                    out,
                    index,
                    json!({"type": "thinking_delta", "thinking": reasoning}),
                );
            }
            let mut text = content_text(delta.get("content"));
            if let Some(refusal) = delta
                .get("refusal")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            {
                self.refused = true;
                text.push_str(refusal);
            }
            if !text.is_empty() {
                let index = self.open(Open::Text, json!({"type": "text", "text": ""}), out);
                Self::delta(out, index, json!({"type": "text_delta", "text": text}));
            }
            for call in tool_calls(delta) {
                self.tool_call(call, out);
            }
            if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
                self.close(out);
                self.stop = Some(if self.refused {
                    "refusal"
                } else {
                    stop_reason(finish)
                });
                if finish == "stop" && !self.refused {
                    self.stop_sequence = matched_stop(choice);
                    if self.stop_sequence.is_some() {
                        self.stop = Some("stop_sequence");
                    }
                }
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = TokenUsage::from_openai(usage);
            self.usage_seen = true;
        }
        if self.stop.is_some() && self.usage_seen {
            self.end(out);
        }
    }

    /// `message_delta` and `message_stop`, once.
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.stopped || !self.started {
            return;
        }
        self.stopped = true;
        self.close(out);
        let usage = if self.usage_seen {
            self.usage.to_anthropic()
        } else {
            json!({"output_tokens": 0})
        };
        out.extend(messages_sse_event(&json!({
            "type": "message_delta",
            "delta": {
                "stop_reason": self.stop.unwrap_or("end_turn"),
                "stop_sequence": self.stop_sequence,
            },
            "usage": usage,
        })));
        out.extend(messages_sse_event(&json!({"type": "message_stop"})));
    }
}

impl SseEvents for MessagesStream {
    fn reader(&mut self) -> &mut SseReader {
        &mut self.reader
    }

    fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), TranslateError> {
        if data.trim_ascii() == b"[DONE]" {
            self.done = true;
            self.end(out);
            return Ok(());
        }
        let chunk: Value = serde_json::from_slice(data).map_err(|err| {
            TranslateError::Upstream(format!("OpenAI stream event is not JSON: {err}"))
        })?;
        self.chunk(&chunk, out);
        Ok(())
    }
}

impl StreamTranslator for MessagesStream {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        self.feed_events(chunk)
    }

    fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        let mut out = Vec::new();
        self.finish_events(&mut out)?;
        if self.started && !self.stopped {
            if self.stop.is_some() || self.done {
                self.end(&mut out);
            } else {
                // Neither a finish reason nor [DONE]: the answer was cut short.
                self.close(&mut out);
                self.stopped = true;
                out.extend(messages_sse_event(&json!({
                    "type": "error",
                    "error": {
                        "type": error_type_for(502),
                        "message": "the provider's stream ended before the answer was complete",
                    },
                })));
            }
        }
        Ok(out)
    }

    fn usage(&self) -> TokenUsage {
        self.usage
    }

    fn model(&self) -> Option<String> {
        self.model.clone()
    }
}

#[cfg(test)]
mod tests;
