//! OpenAI chat completion requests as Gemini `generateContent` requests: contents, parts,
//! tools, tool choice and the generation config.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::PLACEHOLDER_SIGNATURE;
use super::schema::gemini_schema;
use crate::translate::{
    TranslateError, UpstreamRequest, data_url, explicit_max_tokens, function_call, invalid,
    number_field, openai_stop, path_escape, required_str, unsupported,
};

/// Translates an OpenAI chat completion request into a Gemini `generateContent` request for
/// `model`, or `streamGenerateContent?alt=sse` when `stream` is set.
pub fn chat_request(
    request: &Value,
    model: &str,
    stream: bool,
) -> Result<UpstreamRequest, TranslateError> {
    let Some(fields) = request.as_object() else {
        return Err(invalid("the request body must be a JSON object"));
    };
    reject_unsupported(fields)?;
    let (system, contents) = contents(fields.get("messages"), model)?;

    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let tools = tools(fields)?;
    let has_functions = tools
        .iter()
        .any(|t| t.get("functionDeclarations").is_some());
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    if has_functions && let Some(config) = tool_config(fields)? {
        body.insert("toolConfig".into(), config);
    }
    let config = generation_config(fields)?;
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    match fields.get("safetySettings") {
        None | Some(Value::Null) => {}
        Some(settings @ Value::Array(_)) => {
            body.insert("safetySettings".into(), settings.clone());
        }
        Some(_) => return Err(invalid("safetySettings must be a list")),
    }

    let method = if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    Ok(UpstreamRequest {
        path: format!("publishers/google/models/{}:{method}", path_escape(model)),
        body: Value::Object(body).to_string().into_bytes(),
        headers: vec![("content-type".into(), "application/json".into())],
    })
}

/// Rejects request fields Gemini has no equivalent for.
pub(super) fn reject_unsupported(fields: &Map<String, Value>) -> Result<(), TranslateError> {
    let audio_out = fields.get("audio").is_some_and(|v| !v.is_null());
    let other_modalities = fields
        .get("modalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|v| v.as_str() != Some("text")));
    if audio_out || other_modalities {
        return Err(unsupported(
            "chat completions from Gemini are text only: audio or image output is not supported",
        ));
    }
    if fields
        .get("logit_bias")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty())
    {
        return Err(unsupported("Gemini has no logit_bias"));
    }
    if fields.get("functions").is_some_and(|v| !v.is_null())
        || fields.get("function_call").is_some_and(|v| !v.is_null())
    {
        return Err(unsupported(
            "the deprecated functions and function_call fields are not supported; use tools",
        ));
    }
    Ok(())
}

/// Splits OpenAI messages into the system instruction parts and Gemini contents.
pub(super) fn contents(
    messages: Option<&Value>,
    model: &str,
) -> Result<(Vec<Value>, Vec<Value>), TranslateError> {
    let Some(list) = messages.and_then(Value::as_array) else {
        return Err(invalid("messages must be a list"));
    };
    let gemini3 = model.to_ascii_lowercase().contains("gemini-3");
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Tool call id -> function name, from the assistant messages seen so far.
    let mut call_names: HashMap<String, String> = HashMap::new();
    for message in list {
        let role = required_str(message.get("role"), "every message needs a role")?;
        let content = message.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                for text in texts(content, role)? {
                    system.push(json!({ "text": text }));
                }
            }
            "user" => push_content(&mut contents, "user", user_parts(content)?),
            "assistant" => {
                let mut parts: Vec<Value> = texts(content, role)?
                    .into_iter()
                    .map(|text| json!({ "text": text }))
                    .collect();
                match message.get("tool_calls") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(calls)) => {
                        for (n, call) in calls.iter().enumerate() {
                            let (id, name, mut part) = function_call_part(call)?;
                            if n == 0 && gemini3 && part.get("thoughtSignature").is_none() {
                                part["thoughtSignature"] = json!(PLACEHOLDER_SIGNATURE);
                            }
                            call_names.insert(id, name);
                            parts.push(part);
                        }
                    }
                    Some(_) => return Err(invalid("tool_calls must be a list")),
                }
                push_content(&mut contents, "model", parts);
            }
            "tool" => {
                let id = required_str(
                    message.get("tool_call_id"),
                    "a tool message needs tool_call_id",
                )?;
                let name = call_names
                    .get(id)
                    .cloned()
                    .or_else(|| {
                        message
                            .get("name")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .ok_or_else(|| {
                        invalid(format!(
                            "tool message {id:?} answers no tool call of an earlier assistant message"
                        ))
                    })?;
                let output = texts(content, role)?.concat();
                push_content(
                    &mut contents,
                    "user",
                    vec![
                        json!({"functionResponse": {"name": name, "response": {"output": output}}}),
                    ],
                );
            }
            "function" => {
                return Err(unsupported(
                    "function messages are not supported; use tool messages",
                ));
            }
            other => return Err(invalid(format!("unknown message role {other:?}"))),
        }
    }
    Ok((system, contents))
}

/// Appends parts as a content of `role`, merged into the previous content of the same role.
pub(super) fn push_content(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    crate::translate::merge_turn(contents, role, "parts", parts);
}

/// The non-empty texts of a text-only `content` (system, developer, assistant, tool): a
/// string or `text` (and `refusal`) parts.
pub(super) fn texts(content: &Value, role: &str) -> Result<Vec<String>, TranslateError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(text) if text.is_empty() => Ok(Vec::new()),
        Value::String(text) => Ok(vec![text.clone()]),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for part in parts {
                let key = match part.get("type").and_then(Value::as_str) {
                    Some("text") => "text",
                    Some("refusal") if role == "assistant" => "refusal",
                    Some(other) => {
                        return Err(unsupported(format!(
                            "{other} content in a {role} message cannot be sent to Gemini"
                        )));
                    }
                    None => return Err(invalid("every content part needs a type")),
                };
                let text = part
                    .get(key)
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("a {key} part needs {key}")))?;
                if !text.is_empty() {
                    out.push(text.to_string());
                }
            }
            Ok(out)
        }
        _ => Err(invalid(format!(
            "{role} message content must be a string or a list of parts"
        ))),
    }
}

/// User content: text, images, audio and inline files.
pub(super) fn user_parts(content: &Value) -> Result<Vec<Value>, TranslateError> {
    let Value::Array(parts) = content else {
        return Ok(texts(content, "user")?
            .into_iter()
            .map(|text| json!({ "text": text }))
            .collect());
    };
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = required_str(part.get("text"), "a text part needs text")?;
                if !text.is_empty() {
                    out.push(json!({ "text": text }));
                }
            }
            Some("image_url") => {
                let url = required_str(
                    part.pointer("/image_url/url"),
                    "an image_url part needs image_url.url",
                )?;
                out.push(media_part(url, "image/jpeg")?);
            }
            Some("input_audio") => {
                let data = required_str(
                    part.pointer("/input_audio/data"),
                    "an input_audio part needs input_audio.data",
                )?;
                let format = required_str(
                    part.pointer("/input_audio/format"),
                    "an input_audio part needs input_audio.format",
                )?;
                let mime = match format {
                    "mp3" => "audio/mp3".to_string(),
                    other => format!("audio/{other}"),
                };
                out.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
            }
            Some("file") => {
                let Some(data) = part.pointer("/file/file_data").and_then(Value::as_str) else {
                    return Err(unsupported(
                        "only file parts with inline file_data can be sent to Gemini",
                    ));
                };
                let (mime, data) = data_url(data)
                    .ok_or_else(|| invalid("file_data must be a base64 data: URL"))?;
                out.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
            }
            Some(other) => {
                return Err(unsupported(format!(
                    "{other} content cannot be sent to Gemini"
                )));
            }
            None => return Err(invalid("every content part needs a type")),
        }
    }
    Ok(out)
}

/// A data: URL as inline data; an http(s) or Cloud Storage URL as file data, its media type
/// guessed from the extension (`fallback` when unknown).
pub(super) fn media_part(url: &str, fallback: &str) -> Result<Value, TranslateError> {
    if url.starts_with("data:") {
        let (mime, data) =
            data_url(url).ok_or_else(|| invalid("a data: URL must be base64-encoded"))?;
        return Ok(json!({"inlineData": {"mimeType": mime, "data": data}}));
    }
    if url.starts_with("https://") || url.starts_with("http://") || url.starts_with("gs://") {
        let mime = mime_from_extension(url).unwrap_or(fallback);
        return Ok(json!({"fileData": {"mimeType": mime, "fileUri": url}}));
    }
    Err(invalid("a media URL must be a data:, http(s) or gs:// URL"))
}

/// The media type of a URL's file extension, for the types Gemini reads.
pub(super) fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or(path);
    let (_, extension) = name.rsplit_once('.')?;
    Some(match extension.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "aac" => "audio/aac",
        "ogg" => "audio/ogg",
        "m4a" => "audio/m4a",
        "mp4" => "video/mp4",
        "mpeg" | "mpg" => "video/mpeg",
        "mov" => "video/mov",
        "avi" => "video/avi",
        "webm" => "video/webm",
        "wmv" => "video/wmv",
        "flv" => "video/x-flv",
        "3gp" => "video/3gpp",
        _ => return None,
    })
}

/// An assistant tool call as a `functionCall` part, with its id and function name.
pub(super) fn function_call_part(call: &Value) -> Result<(String, String, Value), TranslateError> {
    let kind = call
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("function");
    if kind != "function" {
        return Err(unsupported(format!(
            "{kind} tool calls cannot be sent to Gemini"
        )));
    }
    let (id, name, args) = function_call(call)?;
    if !args.is_object() {
        return Err(invalid(format!(
            "tool call {id} arguments must be a JSON object"
        )));
    }
    let mut part = json!({"functionCall": {"name": name, "args": args}});
    if let Some(signature) = call
        .pointer("/extra_content/google/thought_signature")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        part["thoughtSignature"] = json!(signature);
    }
    Ok((id.to_string(), name.to_string(), part))
}

/// Gemini `tools`: one tool holding every function declaration, then Google Search when asked
/// for (a `google_search` tool or `web_search_options`).
pub(super) fn tools(fields: &Map<String, Value>) -> Result<Vec<Value>, TranslateError> {
    let list = match fields.get("tools") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("tools must be a list")),
    };
    let mut declarations = Vec::new();
    let mut search: Option<Value> = None;
    for tool in list {
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {
                let function = tool
                    .get("function")
                    .ok_or_else(|| invalid("a function tool needs function"))?;
                declarations.push(function_declaration(function)?);
            }
            Some("google_search") => {
                search = Some(
                    tool.get("google_search")
                        .filter(|v| v.is_object())
                        .cloned()
                        .unwrap_or_else(|| json!({})),
                );
            }
            Some(other) => {
                return Err(unsupported(format!(
                    "{other} tools cannot be sent to Gemini"
                )));
            }
            None => return Err(invalid("every tool needs a type")),
        }
    }
    if search.is_none()
        && fields
            .get("web_search_options")
            .is_some_and(Value::is_object)
    {
        search = Some(json!({}));
    }
    let mut out = Vec::new();
    if !declarations.is_empty() {
        out.push(json!({ "functionDeclarations": declarations }));
    }
    if let Some(search) = search {
        out.push(json!({ "googleSearch": search }));
    }
    Ok(out)
}

pub(super) fn function_declaration(function: &Value) -> Result<Value, TranslateError> {
    let name = required_str(function.get("name"), "a function tool needs a name")?;
    let mut declaration = json!({ "name": name });
    if let Some(description) = function.get("description").and_then(Value::as_str) {
        declaration["description"] = json!(description);
    }
    match function.get("parameters") {
        None | Some(Value::Null) => {}
        Some(parameters @ Value::Object(_)) => {
            let schema = gemini_schema(parameters)?;
            // Gemini refuses an object without properties: a function without parameters
            // simply has none.
            let has_properties = schema
                .get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| !p.is_empty());
            if has_properties || schema.get("type").and_then(Value::as_str) != Some("OBJECT") {
                declaration["parameters"] = schema;
            }
        }
        Some(_) => {
            return Err(invalid(format!(
                "the parameters of function {name} must be a JSON schema object"
            )));
        }
    }
    Ok(declaration)
}

/// `tool_choice` -> `toolConfig.functionCallingConfig`.
pub(super) fn tool_config(fields: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    let config = match fields.get("tool_choice") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => json!({"mode": "AUTO"}),
            "none" => json!({"mode": "NONE"}),
            "required" => json!({"mode": "ANY"}),
            other => {
                return Err(unsupported(format!(
                    "tool_choice {other:?} cannot be sent to Gemini"
                )));
            }
        },
        Some(choice @ Value::Object(_)) => match choice.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = required_str(
                    choice.pointer("/function/name"),
                    "a function tool_choice needs function.name",
                )?;
                json!({"mode": "ANY", "allowedFunctionNames": [name]})
            }
            Some("allowed_tools") => {
                let allowed = choice.get("allowed_tools").unwrap_or(&Value::Null);
                if allowed.get("mode").and_then(Value::as_str) != Some("required") {
                    return Err(unsupported(
                        "Gemini restricts the callable functions only when a call is required",
                    ));
                }
                let names = allowed
                    .get("tools")
                    .and_then(Value::as_array)
                    .ok_or_else(|| invalid("allowed_tools needs a list of tools"))?
                    .iter()
                    .map(|tool| {
                        tool.pointer("/function/name")
                            .and_then(Value::as_str)
                            .map(|name| json!(name))
                            .ok_or_else(|| {
                                unsupported("Gemini can only restrict calls to function tools")
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                json!({"mode": "ANY", "allowedFunctionNames": names})
            }
            other => {
                return Err(unsupported(format!(
                    "tool_choice of type {} cannot be sent to Gemini",
                    other.unwrap_or("(none)")
                )));
            }
        },
        Some(_) => return Err(invalid("tool_choice must be a string or an object")),
    };
    Ok(Some(json!({ "functionCallingConfig": config })))
}

/// The `generationConfig`: sampling, limits, stop sequences, output format and thinking.
pub(super) fn generation_config(
    fields: &Map<String, Value>,
) -> Result<Map<String, Value>, TranslateError> {
    let mut config = Map::new();
    number_field(fields, "temperature", "temperature", &mut config)?;
    number_field(fields, "top_p", "topP", &mut config)?;
    number_field(fields, "top_k", "topK", &mut config)?;
    number_field(fields, "presence_penalty", "presencePenalty", &mut config)?;
    number_field(fields, "frequency_penalty", "frequencyPenalty", &mut config)?;
    if let Some(max) = explicit_max_tokens(fields)? {
        config.insert("maxOutputTokens".into(), json!(max));
    }
    if let Some(stops) = openai_stop(fields.get("stop"))? {
        config.insert("stopSequences".into(), stops);
    }
    if let Some(n) = fields.get("n").filter(|v| !v.is_null()) {
        let n = n
            .as_u64()
            .filter(|n| *n >= 1)
            .ok_or_else(|| invalid("n must be a positive integer"))?;
        config.insert("candidateCount".into(), json!(n));
    }
    if let Some(seed) = fields.get("seed").filter(|v| !v.is_null()) {
        let seed = seed
            .as_i64()
            .ok_or_else(|| invalid("seed must be an integer"))?;
        config.insert("seed".into(), json!(seed));
    }
    logprobs_config(fields, &mut config)?;
    response_format(fields, &mut config)?;
    if let Some(thinking) = thinking_config(fields)? {
        config.insert("thinkingConfig".into(), thinking);
    }
    Ok(config)
}

pub(super) fn logprobs_config(
    fields: &Map<String, Value>,
    config: &mut Map<String, Value>,
) -> Result<(), TranslateError> {
    let logprobs = match fields.get("logprobs") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("logprobs must be a boolean")),
    };
    let top = match fields.get("top_logprobs") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .ok_or_else(|| invalid("top_logprobs must be a non-negative integer"))?,
        ),
    };
    if top.is_some_and(|n| n > 0) && !logprobs {
        return Err(invalid("top_logprobs requires logprobs: true"));
    }
    if logprobs {
        config.insert("responseLogprobs".into(), json!(true));
        if let Some(top) = top.filter(|n| *n > 0) {
            config.insert("logprobs".into(), json!(top));
        }
    }
    Ok(())
}

pub(super) fn response_format(
    fields: &Map<String, Value>,
    config: &mut Map<String, Value>,
) -> Result<(), TranslateError> {
    let Some(format) = fields.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some("json_object") => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        Some("json_schema") => {
            let schema = format
                .pointer("/json_schema/schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| invalid("response_format json_schema needs json_schema.schema"))?;
            config.insert("responseMimeType".into(), json!("application/json"));
            config.insert("responseSchema".into(), gemini_schema(schema)?);
        }
        Some(other) => {
            return Err(unsupported(format!(
                "response_format {other:?} cannot be sent to Gemini"
            )));
        }
        None => return Err(invalid("response_format needs a type")),
    }
    Ok(())
}

/// `thinkingConfig` from the `thinking` extension field (which wins) or `reasoning_effort`.
pub(super) fn thinking_config(
    fields: &Map<String, Value>,
) -> Result<Option<Value>, TranslateError> {
    if let Some(thinking) = fields.get("thinking").filter(|v| !v.is_null()) {
        if !thinking.is_object() {
            return Err(invalid("thinking must be an object"));
        }
        let mut config = match thinking.get("type").and_then(Value::as_str) {
            Some("enabled") => {
                let budget = match thinking.get("budget_tokens").filter(|v| !v.is_null()) {
                    // Gemini decides the budget itself.
                    None => -1,
                    Some(budget) => budget
                        .as_i64()
                        .filter(|b| *b >= -1)
                        .ok_or_else(|| invalid("thinking.budget_tokens must be an integer"))?,
                };
                json!({"thinkingBudget": budget, "includeThoughts": true})
            }
            Some("disabled") => json!({"thinkingBudget": 0}),
            _ => return Err(invalid("thinking.type must be enabled or disabled")),
        };
        if let Some(include) = thinking.get("include_thoughts").and_then(Value::as_bool) {
            config["includeThoughts"] = json!(include);
        }
        return Ok(Some(config));
    }
    let Some(effort) = fields.get("reasoning_effort").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let budget = match effort.as_str() {
        Some("none") => return Ok(Some(json!({"thinkingBudget": 0}))),
        Some("minimal") | Some("low") => 1024,
        Some("medium") => 8192,
        Some("high") => 24576,
        _ => {
            return Err(invalid(format!(
                "reasoning_effort {effort} is not one of none, minimal, low, medium, high"
            )));
        }
    };
    Ok(Some(
        json!({"thinkingBudget": budget, "includeThoughts": true}),
    ))
}
