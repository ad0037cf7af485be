//! OpenAI chat completion requests as Anthropic Messages requests: system and turns, content
//! blocks, tools and tool choice, thinking, and the platform's path and version.

use serde_json::{Map, Value, json};

use super::{
    ANTHROPIC_VERSION, AWS_DEFAULT_VERSION, AnthropicTarget, DEFAULT_MAX_TOKENS,
    GCP_DEFAULT_VERSION, MIN_THINKING_BUDGET, version_or,
};
use crate::translate::{
    TranslateError, UpstreamRequest, asks_logprobs, asks_several_choices, body_fields, data_url,
    explicit_max_tokens, function_call, function_spec, invalid, number_field, openai_stop,
    required_str, unsupported,
};

/// Translates an OpenAI chat completion request into an Anthropic Messages request for
/// `target`; `model` is the model to ask for (after any override).
pub fn chat_request(
    request: &Value,
    model: &str,
    target: &AnthropicTarget,
) -> Result<UpstreamRequest, TranslateError> {
    let fields = body_fields(request, &[])?;
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
    if let Some(stops) = openai_stop(fields.get("stop"))? {
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

/// The upstream path of a Messages request to `target`, with the body fields that target
/// wants (`model` and `stream`, or `anthropic_version`).
pub(super) fn target_path(
    target: &AnthropicTarget,
    model: &str,
    stream: bool,
    body: &mut Map<String, Value>,
) -> String {
    match target {
        AnthropicTarget::Anthropic { .. } => {
            body.insert("model".into(), json!(model));
            if stream {
                body.insert("stream".into(), json!(true));
            }
        }
        AnthropicTarget::GcpAnthropic { version } => {
            let version = version_or(version, GCP_DEFAULT_VERSION);
            body.insert("anthropic_version".into(), json!(version));
            if stream {
                body.insert("stream".into(), json!(true));
            }
        }
        AnthropicTarget::AwsAnthropic { version } => {
            let version = version_or(version, AWS_DEFAULT_VERSION);
            body.insert("anthropic_version".into(), json!(version));
        }
    }
    target.messages_path(model, stream)
}

/// Rejects request fields the Messages API has no equivalent for.
pub(super) fn check_unsupported(fields: &Map<String, Value>) -> Result<(), TranslateError> {
    if asks_several_choices(fields) {
        return Err(unsupported(
            "Anthropic returns one choice per request: n must be 1",
        ));
    }
    if asks_logprobs(fields) {
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
pub(super) fn thinking(
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
pub(super) fn messages(
    messages: Option<&Value>,
) -> Result<(Option<Value>, Vec<Value>), TranslateError> {
    let Some(list) = messages.and_then(Value::as_array) else {
        return Err(invalid("messages must be a list"));
    };
    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<Value> = Vec::new();
    // Whether the last turn is a user turn that holds tool results.
    let mut open_results = false;
    for message in list {
        let role = required_str(message.get("role"), "every message needs a role")?;
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
                let id = required_str(
                    message.get("tool_call_id"),
                    "a tool message needs tool_call_id",
                )?;
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
pub(super) fn simplify(blocks: Vec<Value>, original: &Value) -> Value {
    match original {
        Value::String(text) if blocks.len() == 1 => json!(text),
        _ => Value::Array(blocks),
    }
}

pub(super) fn append_to_last(turns: &mut [Value], blocks: Vec<Value>) {
    if let Some(list) = turns
        .last_mut()
        .and_then(|t| t.get_mut("content"))
        .and_then(Value::as_array_mut)
    {
        list.extend(blocks);
    }
}

pub(super) fn with_cache_control(mut block: Value, part: &Value) -> Value {
    if let Some(cache) = part.get("cache_control") {
        block["cache_control"] = cache.clone();
    }
    block
}

/// Text-only content (system, assistant, tool): a string or `text` parts.
pub(super) fn text_blocks(content: &Value, role: &str) -> Result<Vec<Value>, TranslateError> {
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
                    let text = required_str(part.get(key), "a text part needs text")?;
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
pub(super) fn user_blocks(content: &Value) -> Result<Vec<Value>, TranslateError> {
    let Value::Array(parts) = content else {
        return text_blocks(content, "user");
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for part in parts {
        let block = match part.get("type").and_then(Value::as_str) {
            Some("text") => text_blocks(&Value::Array(vec![part.clone()]), "user")?.remove(0),
            Some("image_url") => {
                let url = required_str(
                    part.pointer("/image_url/url"),
                    "an image_url part needs image_url.url",
                )?;
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

pub(super) fn image_source(url: &str) -> Result<Value, TranslateError> {
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

pub(super) fn tool_use(call: &Value) -> Result<Value, TranslateError> {
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

pub(super) fn tools(tools: Option<&Value>) -> Result<Option<Value>, TranslateError> {
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
        let name = required_str(function.get("name"), "a function tool needs a name")?;
        let schema = function.get("parameters");
        let entry = function_spec(name, "input_schema", schema, function.get("description"));
        out.push(with_cache_control(entry, tool));
    }
    Ok(Some(Value::Array(out)))
}

pub(super) fn tool_choice(fields: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
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
