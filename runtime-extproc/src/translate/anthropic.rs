//! OpenAI chat completions to and from the Anthropic Messages API, as served by Anthropic
//! itself, by GCP Vertex AI (`rawPredict`) and by AWS Bedrock (`invoke`): the request body and
//! path, the buffered response, the server-sent event stream, and error bodies.
//!
//! Also the Anthropic Messages API itself (`/anthropic/v1/messages`) passed to those backends
//! ([`Messages`]): the client's body with the platform's path and version fields, responses
//! and Anthropic event streams forwarded unchanged while read for usage, Bedrock's binary event
//! stream unwrapped into Anthropic events, and errors in the Anthropic error shape.
//!
//! And Anthropic's token counting (`/anthropic/v1/messages/count_tokens`) on those backends
//! ([`CountTokens`]): Anthropic's own endpoint, Vertex AI's `count-tokens` virtual model and
//! Bedrock `CountTokens` with the InvokeModel body, answered as `{"input_tokens": n}`.
//!
//! Anthropic reports no creation time, so translated responses carry `"created": 0` rather than
//! a time the provider never stated; the completion `id` is the Anthropic message id.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::eventstream::{Decoder, Message};
use super::sse::{SseReader, event_text};
use super::{
    RequestContext, ResponseContext, SSE_DONE, StreamTranslator, TranslateError, Translated,
    Translator, UpstreamRequest, data_url, finish_reason, function_call, invalid, number_field,
    path_escape, sse_event, unsupported,
};
use crate::usage::TokenUsage;

/// `anthropic-version` header sent to Anthropic's own API.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// `anthropic_version` body field for GCP Vertex AI when none is configured.
pub const GCP_DEFAULT_VERSION: &str = "vertex-2023-10-16";
/// `anthropic_version` body field for AWS Bedrock when none is configured.
pub const AWS_DEFAULT_VERSION: &str = "bedrock-2023-05-31";
/// `max_tokens` when the client sets none (Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// The smallest thinking budget Anthropic accepts.
const MIN_THINKING_BUDGET: u64 = 1024;

/// Where the Anthropic Messages request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnthropicTarget {
    /// Anthropic's API: `/<prefix>/messages` (prefix `v1` when empty).
    Anthropic {
        /// Path prefix, with or without slashes.
        prefix: String,
    },
    /// Claude on GCP Vertex AI: `publishers/anthropic/models/<model>:rawPredict`, relative to
    /// the project and location the GCP credentials add.
    GcpAnthropic {
        /// `anthropic_version` body field (`vertex-2023-10-16` when empty).
        version: String,
    },
    /// Claude on AWS Bedrock: `/model/<model>/invoke`.
    AwsAnthropic {
        /// `anthropic_version` body field (`bedrock-2023-05-31` when empty).
        version: String,
    },
}

/// Translates an OpenAI chat completion request into an Anthropic Messages request for
/// `target`; `model` is the model to ask for (after any override).
pub fn chat_request(
    request: &Value,
    model: &str,
    target: &AnthropicTarget,
) -> Result<UpstreamRequest, TranslateError> {
    let Some(fields) = request.as_object() else {
        return Err(invalid("the body must be a JSON object"));
    };
    check_unsupported(fields)?;
    let stream = fields
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let mut body = Map::new();
    let (system, messages) = messages(fields.get("messages"))?;
    if let Some(system) = system {
        body.insert("system".into(), system);
    }
    body.insert("messages".into(), Value::Array(messages));

    let explicit_max = explicit_max_tokens(fields)?;
    let mut max_tokens = explicit_max.unwrap_or(DEFAULT_MAX_TOKENS);
    if let Some(thinking) = thinking(fields, explicit_max, &mut max_tokens)? {
        body.insert("thinking".into(), thinking);
    }
    body.insert("max_tokens".into(), json!(max_tokens));

    for name in ["temperature", "top_p", "top_k"] {
        number_field(fields, name, name, &mut body)?;
    }
    if let Some(stops) = stop_sequences(fields.get("stop"))? {
        body.insert("stop_sequences".into(), stops);
    }
    if let Some(tools) = tools(fields.get("tools"))? {
        body.insert("tools".into(), tools);
    }
    if let Some(choice) = tool_choice(fields)? {
        body.insert("tool_choice".into(), choice);
    }
    if let Some(user) = fields.get("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({ "user_id": user }));
    }

    let path = target_path(target, model, stream, &mut body);
    let headers = match target {
        AnthropicTarget::Anthropic { .. } => {
            vec![(
                "anthropic-version".to_string(),
                ANTHROPIC_VERSION.to_string(),
            )]
        }
        _ => Vec::new(),
    };
    Ok(UpstreamRequest {
        path,
        body: Value::Object(body).to_string().into_bytes(),
        headers,
    })
}

/// `max_completion_tokens`, else `max_tokens`, when the request sets one.
fn explicit_max_tokens(fields: &Map<String, Value>) -> Result<Option<u64>, TranslateError> {
    match fields
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| fields.get("max_tokens").filter(|v| !v.is_null()))
    {
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid("max_tokens must be a non-negative integer")),
        None => Ok(None),
    }
}

/// OpenAI `stop` (a string or a list of strings) as Anthropic `stop_sequences`; `None` when
/// there is none.
fn stop_sequences(stop: Option<&Value>) -> Result<Option<Value>, TranslateError> {
    match stop {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(stop)) => Ok(Some(json!([stop]))),
        Some(Value::Array(stops)) => {
            if stops.iter().any(|s| !s.is_string()) {
                return Err(invalid("stop must be a string or a list of strings"));
            }
            Ok((!stops.is_empty()).then(|| Value::Array(stops.clone())))
        }
        Some(_) => Err(invalid("stop must be a string or a list of strings")),
    }
}

/// The upstream path of a Messages request to `target`, with the body fields that target
/// wants (`model` and `stream`, or `anthropic_version`).
fn target_path(
    target: &AnthropicTarget,
    model: &str,
    stream: bool,
    body: &mut Map<String, Value>,
) -> String {
    match target {
        AnthropicTarget::Anthropic { prefix } => {
            body.insert("model".into(), json!(model));
            if stream {
                body.insert("stream".into(), json!(true));
            }
            let prefix = prefix.trim_matches('/');
            let prefix = if prefix.is_empty() { "v1" } else { prefix };
            format!("/{prefix}/messages")
        }
        AnthropicTarget::GcpAnthropic { version } => {
            let version = if version.is_empty() {
                GCP_DEFAULT_VERSION
            } else {
                version
            };
            body.insert("anthropic_version".into(), json!(version));
            if stream {
                body.insert("stream".into(), json!(true));
            }
            let method = if stream {
                "streamRawPredict"
            } else {
                "rawPredict"
            };
            format!(
                "publishers/anthropic/models/{}:{method}",
                path_escape(model)
            )
        }
        AnthropicTarget::AwsAnthropic { version } => {
            let version = if version.is_empty() {
                AWS_DEFAULT_VERSION
            } else {
                version
            };
            body.insert("anthropic_version".into(), json!(version));
            let action = if stream {
                "invoke-with-response-stream"
            } else {
                "invoke"
            };
            format!("/model/{}/{action}", path_escape(model))
        }
    }
}

/// Rejects request fields the Messages API has no equivalent for.
fn check_unsupported(fields: &Map<String, Value>) -> Result<(), TranslateError> {
    if fields
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Err(unsupported(
            "Anthropic returns one choice per request: n must be 1",
        ));
    }
    if fields.get("logprobs").and_then(Value::as_bool) == Some(true)
        || fields.get("top_logprobs").is_some_and(|v| !v.is_null())
    {
        return Err(unsupported("Anthropic does not return logprobs"));
    }
    if fields.get("audio").is_some_and(|v| !v.is_null())
        || fields
            .get("modalities")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|v| v.as_str() != Some("text")))
    {
        return Err(unsupported("Anthropic only answers with text"));
    }
    for name in ["presence_penalty", "frequency_penalty"] {
        if fields
            .get(name)
            .and_then(Value::as_f64)
            .is_some_and(|v| v != 0.0)
        {
            return Err(unsupported(format!("Anthropic has no {name}")));
        }
    }
    if fields
        .get("logit_bias")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty())
    {
        return Err(unsupported("Anthropic has no logit_bias"));
    }
    if let Some(kind) = fields
        .get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
        && kind != "text"
    {
        return Err(unsupported(format!(
            "response_format {kind:?} cannot be expressed for Anthropic"
        )));
    }
    Ok(())
}

/// The `thinking` field: the extension field as given, else one derived from
/// `reasoning_effort`. A derived budget fits under an explicit `max_tokens`; a defaulted
/// `max_tokens` grows to leave room for the answer.
fn thinking(
    fields: &Map<String, Value>,
    explicit_max: Option<u64>,
    max_tokens: &mut u64,
) -> Result<Option<Value>, TranslateError> {
    if let Some(thinking) = fields.get("thinking").filter(|v| !v.is_null()) {
        if !thinking.is_object() {
            return Err(invalid("thinking must be an object"));
        }
        if explicit_max.is_none()
            && let Some(budget) = thinking.get("budget_tokens").and_then(Value::as_u64)
            && budget >= *max_tokens
        {
            *max_tokens = budget.saturating_add(DEFAULT_MAX_TOKENS);
        }
        return Ok(Some(thinking.clone()));
    }
    let Some(effort) = fields.get("reasoning_effort").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let mut budget = match effort.as_str() {
        Some("none") => return Ok(None),
        Some("minimal") | Some("low") => MIN_THINKING_BUDGET,
        Some("medium") => 4096,
        Some("high") => 16384,
        _ => {
            return Err(invalid(format!(
                "reasoning_effort {effort} is not one of none, minimal, low, medium, high"
            )));
        }
    };
    match explicit_max {
        Some(max) if budget >= max => {
            budget = max.saturating_sub(1);
            if budget < MIN_THINKING_BUDGET {
                return Err(unsupported(format!(
                    "Anthropic needs at least {MIN_THINKING_BUDGET} thinking tokens below max_tokens ({max})"
                )));
            }
        }
        Some(_) => {}
        None => *max_tokens = budget + DEFAULT_MAX_TOKENS,
    }
    Ok(Some(json!({"type": "enabled", "budget_tokens": budget})))
}

/// Splits OpenAI messages into the Anthropic `system` field and turns.
fn messages(messages: Option<&Value>) -> Result<(Option<Value>, Vec<Value>), TranslateError> {
    let Some(list) = messages.and_then(Value::as_array) else {
        return Err(invalid("messages must be a list"));
    };
    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<Value> = Vec::new();
    // Whether the last turn is a user turn that holds tool results.
    let mut open_results = false;
    for message in list {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("every message needs a role"))?;
        let content = message.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                system.extend(text_blocks(content, role)?);
                continue;
            }
            "user" => {
                let blocks = user_blocks(content)?;
                if open_results {
                    append_to_last(&mut turns, blocks);
                } else {
                    turns.push(json!({"role": "user", "content": simplify(blocks, content)}));
                }
            }
            "assistant" => {
                let mut blocks = if content.is_null() {
                    Vec::new()
                } else {
                    text_blocks(content, role)?
                };
                if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
                    // Anthropic rejects empty text blocks, which clients send beside tool calls.
                    blocks.retain(|b| b.get("text").and_then(Value::as_str) != Some(""));
                    for call in calls {
                        blocks.push(tool_use(call)?);
                    }
                }
                let has_calls = message
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .is_some_and(|c| !c.is_empty());
                let content = if has_calls {
                    Value::Array(blocks)
                } else {
                    simplify(blocks, content)
                };
                turns.push(json!({"role": "assistant", "content": content}));
            }
            "tool" | "function" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("a tool message needs tool_call_id"))?;
                let mut result = json!({"type": "tool_result", "tool_use_id": id});
                let blocks = text_blocks(content, role)?;
                result["content"] = match content {
                    Value::String(text) => json!(text),
                    _ => Value::Array(blocks),
                };
                if open_results {
                    append_to_last(&mut turns, vec![result]);
                } else {
                    turns.push(json!({"role": "user", "content": [result]}));
                }
                open_results = true;
                continue;
            }
            other => return Err(invalid(format!("unknown message role {other:?}"))),
        }
        open_results = false;
    }
    let system = match system.as_slice() {
        [] => None,
        [only] if only.get("cache_control").is_none() => only.get("text").cloned(),
        _ => Some(Value::Array(system)),
    };
    Ok((system, turns))
}

/// A plain string stays a string; anything else is a list of blocks.
fn simplify(blocks: Vec<Value>, original: &Value) -> Value {
    match original {
        Value::String(text) if blocks.len() == 1 => json!(text),
        _ => Value::Array(blocks),
    }
}

fn append_to_last(turns: &mut [Value], blocks: Vec<Value>) {
    if let Some(list) = turns
        .last_mut()
        .and_then(|t| t.get_mut("content"))
        .and_then(Value::as_array_mut)
    {
        list.extend(blocks);
    }
}

fn with_cache_control(mut block: Value, part: &Value) -> Value {
    if let Some(cache) = part.get("cache_control") {
        block["cache_control"] = cache.clone();
    }
    block
}

/// Text-only content (system, assistant, tool): a string or `text` parts.
fn text_blocks(content: &Value, role: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        Value::String(text) => Ok(vec![json!({"type": "text", "text": text})]),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") | Some("refusal") => {
                    let key = if part.get("text").is_some() {
                        "text"
                    } else {
                        "refusal"
                    };
                    let text = part
                        .get(key)
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid("a text part needs text"))?;
                    Ok(with_cache_control(
                        json!({"type": "text", "text": text}),
                        part,
                    ))
                }
                Some(other) => Err(unsupported(format!(
                    "{other} content in a {role} message cannot be sent to Anthropic"
                ))),
                None => Err(invalid("every content part needs a type")),
            })
            .collect(),
        _ => Err(invalid(format!(
            "{role} message content must be a string or a list of parts"
        ))),
    }
}

/// User content: text, images and PDF files.
fn user_blocks(content: &Value) -> Result<Vec<Value>, TranslateError> {
    let Value::Array(parts) = content else {
        return text_blocks(content, "user");
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for part in parts {
        let block = match part.get("type").and_then(Value::as_str) {
            Some("text") => text_blocks(&Value::Array(vec![part.clone()]), "user")?.remove(0),
            Some("image_url") => {
                let url = part
                    .pointer("/image_url/url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("an image_url part needs image_url.url"))?;
                with_cache_control(json!({"type": "image", "source": image_source(url)?}), part)
            }
            Some("file") => {
                let data = part
                    .pointer("/file/file_data")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        unsupported(
                            "only file parts with inline file_data can be sent to Anthropic",
                        )
                    })?;
                let (media_type, data) = data_url(data)
                    .ok_or_else(|| invalid("file_data must be a base64 data: URL"))?;
                if media_type != "application/pdf" {
                    return Err(unsupported(format!(
                        "Anthropic documents must be PDF, not {media_type}"
                    )));
                }
                with_cache_control(
                    json!({"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}),
                    part,
                )
            }
            Some(other) => {
                return Err(unsupported(format!(
                    "{other} content cannot be sent to Anthropic"
                )));
            }
            None => return Err(invalid("every content part needs a type")),
        };
        blocks.push(block);
    }
    Ok(blocks)
}

fn image_source(url: &str) -> Result<Value, TranslateError> {
    if url.starts_with("data:") {
        let (media_type, data) =
            data_url(url).ok_or_else(|| invalid("an image data: URL must be base64"))?;
        if !matches!(
            media_type,
            "image/jpeg" | "image/png" | "image/gif" | "image/webp"
        ) {
            return Err(unsupported(format!(
                "Anthropic accepts JPEG, PNG, GIF and WebP images, not {media_type}"
            )));
        }
        Ok(json!({"type": "base64", "media_type": media_type, "data": data}))
    } else if url.starts_with("https://") || url.starts_with("http://") {
        Ok(json!({"type": "url", "url": url}))
    } else {
        Err(invalid("image_url.url must be a data: or http(s) URL"))
    }
}

fn tool_use(call: &Value) -> Result<Value, TranslateError> {
    if call
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("function")
        != "function"
    {
        return Err(unsupported(
            "only function tool calls can be sent to Anthropic",
        ));
    }
    let (id, name, input) = function_call(call)?;
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

fn tools(tools: Option<&Value>) -> Result<Option<Value>, TranslateError> {
    let Some(list) = tools.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let list = list
        .as_array()
        .ok_or_else(|| invalid("tools must be a list"))?;
    if list.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(list.len());
    for tool in list {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(unsupported("only function tools can be sent to Anthropic"));
        }
        let function = tool
            .get("function")
            .ok_or_else(|| invalid("a function tool needs function"))?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("a function tool needs a name"))?;
        let mut entry = json!({
            "name": name,
            "input_schema": function
                .get("parameters")
                .filter(|p| !p.is_null())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
        if let Some(description) = function.get("description").and_then(Value::as_str) {
            entry["description"] = json!(description);
        }
        out.push(with_cache_control(entry, tool));
    }
    Ok(Some(Value::Array(out)))
}

fn tool_choice(fields: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    let parallel_off = fields.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false);
    let mut choice = match fields.get("tool_choice") {
        None | Some(Value::Null) => {
            if parallel_off && fields.get("tools").is_some_and(|t| !t.is_null()) {
                json!({"type": "auto"})
            } else {
                return Ok(None);
            }
        }
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => return Ok(Some(json!({"type": "none"}))),
            "required" => json!({"type": "any"}),
            other => return Err(invalid(format!("unknown tool_choice {other:?}"))),
        },
        Some(choice @ Value::Object(_)) => {
            let name = choice
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    unsupported("only function tool_choice objects can be sent to Anthropic")
                })?;
            json!({"type": "tool", "name": name})
        }
        Some(_) => return Err(invalid("tool_choice must be a string or an object")),
    };
    if parallel_off {
        choice["disable_parallel_tool_use"] = json!(true);
    }
    Ok(Some(choice))
}

/// Anthropic `usage` as OpenAI `usage` and [`TokenUsage`]: prompt tokens include cache reads
/// and cache writes.
fn usage_from(usage: &Value, fallback: &TokenUsage) -> TokenUsage {
    let read = |name: &str| usage.get(name).and_then(Value::as_u64);
    let input_only = read("input_tokens").or(fallback_input_only(fallback));
    let cached_input = read("cache_read_input_tokens").or(fallback.cached_input);
    let cache_creation_input =
        read("cache_creation_input_tokens").or(fallback.cache_creation_input);
    let output = read("output_tokens").or(fallback.output);
    let input = match (input_only, cached_input, cache_creation_input) {
        (None, None, None) => None,
        (a, b, c) => Some(
            a.unwrap_or(0)
                .saturating_add(b.unwrap_or(0))
                .saturating_add(c.unwrap_or(0)),
        ),
    };
    let total = match (input, output) {
        (None, None) => None,
        (i, o) => Some(i.unwrap_or(0).saturating_add(o.unwrap_or(0))),
    };
    TokenUsage {
        input,
        cached_input,
        cache_creation_input,
        output,
        total,
        reasoning: None,
    }
}

/// The uncached input of an earlier reading (its total minus the cache counts).
fn fallback_input_only(fallback: &TokenUsage) -> Option<u64> {
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
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let kind = error
        .and_then(|e| e.get("type").or_else(|| e.get("status")))
        .and_then(Value::as_str)
        .unwrap_or_else(|| error_type_for(status));
    json!({"error": {"message": message, "type": kind, "param": null, "code": status.to_string()}})
        .to_string()
        .into_bytes()
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
    tool_blocks: Vec<(u64, usize)>,
    finished: bool,
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

    /// Translates the data of one complete server-sent event.
    fn data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), TranslateError> {
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
                        let index = self.tool_blocks.len();
                        let block_index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                        self.tool_blocks.push((block_index, index));
                        self.chunk(
                            json!({"tool_calls": [{
                                "index": index,
                                "id": block.get("id").cloned().unwrap_or(Value::Null),
                                "type": "function",
                                "function": {
                                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                                    "arguments": "",
                                },
                            }]}),
                            None,
                        )
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
                        self.chunk(
                            json!({"tool_calls": [{
                                "index": index,
                                "function": {"arguments": text("partial_json")},
                            }]}),
                            None,
                        )
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

impl StreamTranslator for ChatStream {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        let events = self.reader.feed(chunk).map_err(|_| {
            TranslateError::Upstream("an Anthropic stream event exceeds 16 MiB".into())
        })?;
        let mut out = Vec::new();
        for data in events {
            self.data(&data, &mut out)?;
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        let mut out = Vec::new();
        if self.finished {
            return Ok(out);
        }
        self.finished = true;
        for data in self.reader.finish() {
            self.data(&data, &mut out)?;
        }
        if self.started {
            out.extend(sse_event(&json!({
                "id": self.id.as_deref().unwrap_or(""),
                "object": "chat.completion.chunk",
                "created": 0,
                "model": self.model.as_deref().unwrap_or(&self.requested_model),
                "choices": [],
                "usage": self.usage.to_openai(),
            })));
        }
        out.extend_from_slice(SSE_DONE);
        Ok(out)
    }

    fn usage(&self) -> TokenUsage {
        self.usage
    }

    fn model(&self) -> Option<String> {
        self.model.clone()
    }
}

/// OpenAI chat completions served by an Anthropic Messages backend (Anthropic, GCP Vertex AI
/// or AWS Bedrock).
#[derive(Debug, Clone)]
pub struct OpenAiChat {
    target: AnthropicTarget,
}

impl OpenAiChat {
    /// The translator for `target`.
    pub fn new(target: AnthropicTarget) -> Self {
        OpenAiChat { target }
    }
}

impl Translator for OpenAiChat {
    fn request(
        &mut self,
        body: &Value,
        ctx: &RequestContext<'_>,
    ) -> Result<UpstreamRequest, TranslateError> {
        chat_request(body, ctx.model, &self.target)
    }

    fn response(
        &self,
        body: &[u8],
        ctx: &ResponseContext<'_>,
    ) -> Result<Translated, TranslateError> {
        let (body, usage) = chat_response(body, ctx.model)?;
        let model = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("model").and_then(Value::as_str).map(str::to_string));
        Ok(Translated { body, usage, model })
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        error_response(status, body)
    }

    fn stream(&self, ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        match self.target {
            // Bedrock wraps each Anthropic event in an event-stream frame.
            AnthropicTarget::AwsAnthropic { .. } => Box::new(Chained {
                first: BedrockMessagesStream::default(),
                second: ChatStream::new(ctx.model),
            }),
            _ => Box::new(ChatStream::new(ctx.model)),
        }
    }
}

/// Two stream translators in a row: the output of `first` is the input of `second`; usage and
/// model are what `second` saw.
#[derive(Debug)]
struct Chained<A, B> {
    first: A,
    second: B,
}

impl<A: StreamTranslator, B: StreamTranslator> StreamTranslator for Chained<A, B> {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        let middle = self.first.feed(chunk)?;
        if middle.is_empty() {
            return Ok(Vec::new());
        }
        self.second.feed(&middle)
    }

    fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        let middle = self.first.finish()?;
        let mut out = self.second.feed(&middle)?;
        out.extend(self.second.finish()?);
        Ok(out)
    }

    fn usage(&self) -> TokenUsage {
        self.second.usage()
    }

    fn model(&self) -> Option<String> {
        self.second.model()
    }
}

/// The Anthropic Messages API (`/anthropic/v1/messages`) passed to an Anthropic-family backend
/// (Anthropic, GCP Vertex AI or AWS Bedrock): the body keeps the client's fields, only the
/// model, path and version fields change; responses pass through and are read for usage.
#[derive(Debug, Clone)]
pub struct Messages {
    target: AnthropicTarget,
}

impl Messages {
    /// The translator for `target`.
    pub fn new(target: AnthropicTarget) -> Self {
        Messages { target }
    }
}

impl Translator for Messages {
    fn request(
        &mut self,
        body: &Value,
        ctx: &RequestContext<'_>,
    ) -> Result<UpstreamRequest, TranslateError> {
        messages_request(body, ctx, &self.target)
    }

    fn response(
        &self,
        body: &[u8],
        ctx: &ResponseContext<'_>,
    ) -> Result<Translated, TranslateError> {
        // Passed on as it is, but a Messages answer is a JSON object: anything else is a fault.
        let Some(parsed) = serde_json::from_slice::<Value>(body)
            .ok()
            .filter(Value::is_object)
        else {
            return Err(TranslateError::Upstream(
                "the provider's answer is not a JSON object".to_string(),
            ));
        };
        let usage = parsed
            .get("usage")
            .filter(|u| u.is_object())
            .map(|u| usage_from(u, &TokenUsage::default()))
            .unwrap_or_default();
        let model = parsed
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(ctx.model)
            .to_string();
        Ok(Translated {
            body: body.to_vec(),
            usage,
            model: Some(model),
        })
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        messages_error(status, body)
    }

    fn stream(&self, _ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        match self.target {
            AnthropicTarget::AwsAnthropic { .. } => Box::new(BedrockMessagesStream::default()),
            _ => Box::new(MessagesPassThrough::default()),
        }
    }
}

/// A Messages API request for `target`: the client's body with the model from `ctx`, plus
/// what the platform needs (`anthropic_version`, `anthropic_beta`, no `model` in the body for
/// GCP and AWS, no `stream` for AWS, whose path says it).
pub fn messages_request(
    body: &Value,
    ctx: &RequestContext<'_>,
    target: &AnthropicTarget,
) -> Result<UpstreamRequest, TranslateError> {
    let Some(fields) = body.as_object() else {
        return Err(invalid("the body must be a JSON object"));
    };
    if !fields.get("model").is_some_and(Value::is_string) {
        return Err(invalid("model must be a string"));
    }
    if !fields.get("messages").is_some_and(Value::is_array) {
        return Err(invalid("messages must be a list"));
    }
    let mut fields = fields.clone();
    let model = ctx.model;
    let (path, headers) = match target {
        AnthropicTarget::Anthropic { prefix } => {
            fields.insert("model".into(), json!(model));
            let prefix = prefix.trim_matches('/');
            let prefix = if prefix.is_empty() { "v1" } else { prefix };
            let version = ctx
                .header("anthropic-version")
                .filter(|v| !v.trim().is_empty())
                .unwrap_or(ANTHROPIC_VERSION);
            (
                format!("/{prefix}/messages"),
                vec![("anthropic-version".to_string(), version.to_string())],
            )
        }
        AnthropicTarget::GcpAnthropic { version } => {
            if version.is_empty() {
                return Err(unsupported(
                    "the AIServiceBackend schema version must be set for GCPAnthropic: it is the \
                     anthropic_version Vertex AI requires (for example vertex-2023-10-16)",
                ));
            }
            fields.remove("model");
            fields.insert("anthropic_version".into(), json!(version));
            let method = if ctx.stream {
                "streamRawPredict"
            } else {
                "rawPredict"
            };
            (
                format!(
                    "publishers/anthropic/models/{}:{method}",
                    path_escape(model)
                ),
                Vec::new(),
            )
        }
        AnthropicTarget::AwsAnthropic { version } => {
            fields.remove("model");
            fields.remove("stream");
            let version = if version.is_empty() {
                AWS_DEFAULT_VERSION
            } else {
                version
            };
            fields.insert("anthropic_version".into(), json!(version));
            let betas: Vec<&str> = ctx
                .headers
                .iter()
                .filter(|(name, _)| name == "anthropic-beta")
                .flat_map(|(_, value)| value.split(','))
                .map(str::trim)
                .filter(|beta| !beta.is_empty())
                .collect();
            if !betas.is_empty() {
                fields.insert("anthropic_beta".into(), json!(betas));
            }
            let action = if ctx.stream {
                "invoke-with-response-stream"
            } else {
                "invoke"
            };
            (
                format!("/model/{}/{action}", path_escape(model)),
                Vec::new(),
            )
        }
    };
    Ok(UpstreamRequest {
        path,
        body: Value::Object(fields).to_string().into_bytes(),
        headers,
    })
}

/// An error answer (status `status`) in the Anthropic error shape
/// `{"type":"error","error":{"type":..,"message":..}}`: a body already in that shape is kept;
/// otherwise the type comes from the status ([`error_type_for`]) and the message from the
/// provider's `error.message`, `message` or `Message` field (OpenAI, GCP, AWS), else its text.
pub fn messages_error(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(value) = &parsed
        && value.get("type").and_then(Value::as_str) == Some("error")
        && value.pointer("/error/type").is_some_and(Value::is_string)
        && value
            .pointer("/error/message")
            .is_some_and(Value::is_string)
    {
        return body.to_vec();
    }
    // GCP wraps its errors in a one-element list.
    let value = match &parsed {
        Some(Value::Array(items)) => items.first(),
        other => other.as_ref(),
    };
    let message = value
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .or_else(|| v.get("Message"))
        })
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let message = if message.is_empty() {
        format!("the provider answered with status {status}")
    } else {
        message
    };
    anthropic_error(error_type_for(status), &message)
        .to_string()
        .into_bytes()
}

/// `{"type":"error","error":{"type":kind,"message":message}}`.
fn anthropic_error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// Formats one Anthropic server-sent event: `event: <type>` (when the JSON has a `type`) and
/// `data: <json>`. `json` must be one line.
fn anthropic_sse(kind: Option<&str>, json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 32);
    if let Some(kind) = kind {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out
}

/// One Anthropic stream event as a server-sent event.
pub fn messages_sse_event(event: &Value) -> Vec<u8> {
    anthropic_sse(
        event.get("type").and_then(Value::as_str),
        event.to_string().as_bytes(),
    )
}

/// Reads usage and model from Anthropic stream events: `message_start` sets them,
/// `message_delta` updates the counts it carries.
#[derive(Debug, Default, Clone)]
struct EventUsage {
    usage: TokenUsage,
    model: Option<String>,
}

impl EventUsage {
    fn observe(&mut self, event: &Value) {
        match event.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let message = event.get("message").unwrap_or(&Value::Null);
                if let Some(model) = message.get("model").and_then(Value::as_str) {
                    self.model = Some(model.to_string());
                }
                if let Some(usage) = message.get("usage").filter(|u| u.is_object()) {
                    self.usage = usage_from(usage, &self.usage);
                }
            }
            Some("message_delta") => {
                if let Some(usage) = event.get("usage").filter(|u| u.is_object()) {
                    self.usage = usage_from(usage, &self.usage);
                }
            }
            _ => {}
        }
    }
}

/// An Anthropic (or GCP Vertex AI) event stream forwarded byte for byte as it arrives, read on
/// the way for usage and model. Unreadable events pass through untouched.
#[derive(Debug, Default)]
pub struct MessagesPassThrough {
    reader: SseReader,
    seen: EventUsage,
}

impl MessagesPassThrough {
    fn observe(&mut self, events: Vec<Vec<u8>>) {
        for data in events {
            if let Ok(event) = serde_json::from_slice::<Value>(&data) {
                self.seen.observe(&event);
            }
        }
    }
}

impl StreamTranslator for MessagesPassThrough {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        // An over-long event only costs its usage reading: the bytes still pass.
        if let Ok(events) = self.reader.feed(chunk) {
            self.observe(events);
        }
        Ok(chunk.to_vec())
    }

    fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        let events = self.reader.finish();
        self.observe(events);
        Ok(Vec::new())
    }

    fn usage(&self) -> TokenUsage {
        self.seen.usage
    }

    fn model(&self) -> Option<String> {
        self.seen.model.clone()
    }
}

/// A Bedrock `invoke-with-response-stream` answer (`application/vnd.amazon.eventstream`)
/// turned into Anthropic server-sent events: every `chunk` frame carries
/// `{"bytes":"<base64 of one Anthropic event>"}`, sent on as soon as its frame is complete;
/// exception frames become an Anthropic `error` event.
#[derive(Debug, Default)]
pub struct BedrockMessagesStream {
    decoder: Decoder,
    seen: EventUsage,
}

impl BedrockMessagesStream {
    fn frame(&mut self, message: &Message, out: &mut Vec<u8>) -> Result<(), TranslateError> {
        if let Some(failure) = message.failure() {
            let kind = failure.kind.unwrap_or("internalServerException");
            let text = if failure.message.is_empty() {
                kind
            } else {
                &failure.message
            };
            out.extend(messages_sse_event(&anthropic_error(
                error_type_for(failure.status()),
                text,
            )));
            return Ok(());
        }
        // Other event types carry nothing for the client.
        if message.event_type() != Some("chunk") {
            return Ok(());
        }
        let payload: Value = serde_json::from_slice(&message.payload)
            .map_err(|err| TranslateError::Upstream(format!("Bedrock chunk is not JSON: {err}")))?;
        let encoded = payload
            .get("bytes")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::Upstream("Bedrock chunk has no bytes field".into()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|err| {
                TranslateError::Upstream(format!("Bedrock chunk bytes are not base64: {err}"))
            })?;
        let event: Value = serde_json::from_slice(&bytes).map_err(|err| {
            TranslateError::Upstream(format!("Bedrock chunk event is not JSON: {err}"))
        })?;
        self.seen.observe(&event);
        let kind = event.get("type").and_then(Value::as_str);
        // The event's own text is sent when it fits on one line; otherwise re-encoded.
        if bytes.iter().any(|b| *b == b'\n' || *b == b'\r') {
            out.extend(messages_sse_event(&event));
        } else {
            out.extend(anthropic_sse(kind, &bytes));
        }
        Ok(())
    }
}

impl StreamTranslator for BedrockMessagesStream {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        let mut out = Vec::new();
        for message in self.decoder.feed(chunk)? {
            self.frame(&message, &mut out)?;
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        if self.decoder.has_pending() {
            return Err(TranslateError::Upstream(
                "the Bedrock event stream ended inside a frame".into(),
            ));
        }
        Ok(Vec::new())
    }

    fn usage(&self) -> TokenUsage {
        self.seen.usage
    }

    fn model(&self) -> Option<String> {
        self.seen.model.clone()
    }
}

#[cfg(test)]
mod tests;

// The Anthropic token-counting API (`/anthropic/v1/messages/count_tokens`).

/// The Anthropic token-counting API (`/anthropic/v1/messages/count_tokens`) passed to an
/// Anthropic-family backend. The request is a Messages request without the `max_tokens`
/// requirement; the answer is `{"input_tokens": n}`.
///
/// - Anthropic: `/<prefix>/messages/count_tokens`, the client's body with the model, and the
///   `anthropic-version` header as for [`Messages`].
/// - GCP Vertex AI: the virtual model `count-tokens`
///   (`publishers/anthropic/models/count-tokens:rawPredict`) with the model named in the body
///   (without an `@default` or `@latest` alias, which Vertex AI does not count for) and the
///   configured `anthropic_version`, required as for [`Messages`].
/// - AWS Bedrock: `CountTokens` (`/model/<model>/count-tokens`, the model without a
///   cross-region inference prefix, see [`bedrock_count_tokens_model`]) with
///   `{"input":{"invokeModel":{"body":"<base64>"}}}`, the body being what [`Messages`] would
///   send to `InvokeModel`. InvokeModel requires `max_tokens`: when the client sets none it is
///   [`DEFAULT_MAX_TOKENS`], or that much above a larger thinking budget (it does not change
///   the count). Bedrock's `{"inputTokens": n}` goes back as `{"input_tokens": n}`.
///
/// Counting never streams: `stream: true` is refused (400). The counted tokens are reported
/// as input usage, as upstream does; nothing is generated, so there is no output or total.
/// Errors come back in the Anthropic error shape ([`messages_error`]).
#[derive(Debug, Clone)]
pub struct CountTokens {
    target: AnthropicTarget,
}

impl CountTokens {
    /// The translator for `target`.
    pub fn new(target: AnthropicTarget) -> Self {
        CountTokens { target }
    }
}

impl Translator for CountTokens {
    fn request(
        &mut self,
        body: &Value,
        ctx: &RequestContext<'_>,
    ) -> Result<UpstreamRequest, TranslateError> {
        count_tokens_request(body, ctx, &self.target)
    }

    fn response(
        &self,
        body: &[u8],
        ctx: &ResponseContext<'_>,
    ) -> Result<Translated, TranslateError> {
        let (body, usage) = match self.target {
            AnthropicTarget::AwsAnthropic { .. } => bedrock_count_tokens_response(body)?,
            // Anthropic's own answer: passed on as it is, read for the count.
            _ => {
                let input = serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|v| v.get("input_tokens").and_then(Value::as_u64));
                (
                    body.to_vec(),
                    TokenUsage {
                        input,
                        ..TokenUsage::default()
                    },
                )
            }
        };
        Ok(ctx.translated(body, usage))
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        messages_error(status, body)
    }

    fn stream(&self, _ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(super::PassThrough)
    }
}

/// The fields of a count_tokens request: a JSON object with a string `model` and a
/// `messages` list, not asking to stream (by its body or `ctx`).
pub(super) fn count_tokens_fields<'a>(
    body: &'a Value,
    ctx: &RequestContext<'_>,
) -> Result<&'a Map<String, Value>, TranslateError> {
    let Some(fields) = body.as_object() else {
        return Err(invalid("the body must be a JSON object"));
    };
    if !fields.get("model").is_some_and(Value::is_string) {
        return Err(invalid("model must be a string"));
    }
    if !fields.get("messages").is_some_and(Value::is_array) {
        return Err(invalid("messages must be a list"));
    }
    if ctx.stream || fields.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(invalid(
            "count_tokens does not stream: stream must be false or absent",
        ));
    }
    Ok(fields)
}

/// The model id Bedrock `CountTokens` takes for `model`: a foundation model, so a
/// cross-region inference profile (`us.anthropic.…`, `global.anthropic.…`, or its ARN) is
/// counted for the model it serves, as upstream does. Other ids are kept.
pub fn bedrock_count_tokens_model(model: &str) -> &str {
    match model.find("anthropic.") {
        Some(at) if at > 0 => &model[at..],
        _ => model,
    }
}

/// A Bedrock `CountTokens` answer (`{"inputTokens": n}`) as the Anthropic answer
/// `{"input_tokens": n}`, with `n` as input usage.
pub fn bedrock_count_tokens_response(body: &[u8]) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let count = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("inputTokens").and_then(Value::as_u64))
        .ok_or_else(|| {
            TranslateError::Upstream(
                "the Bedrock CountTokens answer has no inputTokens count".into(),
            )
        })?;
    let usage = TokenUsage {
        input: Some(count),
        ..TokenUsage::default()
    };
    Ok((
        json!({ "input_tokens": count }).to_string().into_bytes(),
        usage,
    ))
}

/// A count_tokens request for `target` (see [`CountTokens`]).
pub fn count_tokens_request(
    body: &Value,
    ctx: &RequestContext<'_>,
    target: &AnthropicTarget,
) -> Result<UpstreamRequest, TranslateError> {
    let mut fields = count_tokens_fields(body, ctx)?.clone();
    fields.remove("stream");
    let model = ctx.model;
    match target {
        AnthropicTarget::Anthropic { prefix } => {
            fields.insert("model".into(), json!(model));
            let prefix = prefix.trim_matches('/');
            let prefix = if prefix.is_empty() { "v1" } else { prefix };
            let version = ctx
                .header("anthropic-version")
                .filter(|v| !v.trim().is_empty())
                .unwrap_or(ANTHROPIC_VERSION);
            Ok(UpstreamRequest {
                path: format!("/{prefix}/messages/count_tokens"),
                body: Value::Object(fields).to_string().into_bytes(),
                headers: vec![("anthropic-version".to_string(), version.to_string())],
            })
        }
        AnthropicTarget::GcpAnthropic { version } => {
            if version.is_empty() {
                return Err(unsupported(
                    "the AIServiceBackend schema version must be set for GCPAnthropic: it is the \
                     anthropic_version Vertex AI requires (for example vertex-2023-10-16)",
                ));
            }
            // Vertex AI counts for explicit versions only, not for the version aliases.
            let model = model
                .strip_suffix("@default")
                .or_else(|| model.strip_suffix("@latest"))
                .unwrap_or(model);
            fields.insert("model".into(), json!(model));
            fields.insert("anthropic_version".into(), json!(version));
            Ok(UpstreamRequest {
                path: "publishers/anthropic/models/count-tokens:rawPredict".into(),
                body: Value::Object(fields).to_string().into_bytes(),
                headers: Vec::new(),
            })
        }
        AnthropicTarget::AwsAnthropic { .. } => {
            if fields.get("max_tokens").is_none_or(Value::is_null) {
                let budget = fields
                    .get("thinking")
                    .and_then(|t| t.get("budget_tokens"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let max_tokens = if budget >= DEFAULT_MAX_TOKENS {
                    budget.saturating_add(DEFAULT_MAX_TOKENS)
                } else {
                    DEFAULT_MAX_TOKENS
                };
                fields.insert("max_tokens".into(), json!(max_tokens));
            }
            // The InvokeModel body Messages would send (version, betas, no model or stream).
            let invoke = RequestContext {
                stream: false,
                ..*ctx
            };
            let invoke = messages_request(&Value::Object(fields), &invoke, target)?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(&invoke.body);
            Ok(UpstreamRequest {
                path: format!(
                    "/model/{}/count-tokens",
                    path_escape(bedrock_count_tokens_model(model))
                ),
                body: json!({"input": {"invokeModel": {"body": encoded}}})
                    .to_string()
                    .into_bytes(),
                headers: vec![("content-type".into(), "application/json".into())],
            })
        }
    }
}
