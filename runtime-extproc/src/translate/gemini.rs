//! GCP Vertex AI Gemini: OpenAI chat completion requests to `generateContent` /
//! `streamGenerateContent?alt=sse` requests, Gemini responses and server-sent event streams
//! back to OpenAI `chat.completion` objects and `chat.completion.chunk` events, OpenAI
//! embedding requests to `embedContent` (Gemini embedding models) or `predict` (text embedding
//! models) and back, and Google error bodies to the OpenAI error shape.
//!
//! Request paths are relative (`publishers/google/models/<model>:<method>`): the GCP
//! credentials prefix them with `/v1/projects/<project>/locations/<region>/`.
//!
//! Function parameter and response JSON schemas are sent as the OpenAPI subset every Gemini
//! model on Vertex AI accepts (`parameters` / `responseSchema`): upper-case types, `nullable`
//! instead of `null` types, local `$ref`s inlined, keywords Gemini does not know dropped.
//!
//! Thought signatures of function calls travel to the client as
//! `tool_calls[].extra_content.google.thought_signature` and back again; for Gemini 3 models,
//! which reject function calls without one, a call the client sends without a signature gets
//! Google's documented placeholder.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::sse::{SseReader, event_text};
use super::{
    PassThrough, RequestContext, ResponseContext, SSE_DONE, StreamTranslator, TranslateError,
    Translated, Translator, UpstreamRequest, data_url, finish_reason, function_call, invalid,
    number_field, path_escape, sse_event, unsupported,
};
use crate::time::rfc3339_unix_seconds;
use crate::usage::TokenUsage;

/// How deep a JSON schema may nest (after inlining `$ref`s) before it is refused.
const MAX_SCHEMA_DEPTH: usize = 32;
/// How much the definitions a schema's `$ref`s inline may add up to, as a multiple of the
/// schema's own size: `$ref`s to definitions that hold several `$ref`s each would otherwise
/// grow exponentially with the nesting depth.
const MAX_SCHEMA_GROWTH: usize = 32;
/// Error `type` when Google's body names no status.
const BACKEND_ERROR: &str = "GCPVertexAIBackendError";
/// The thought signature Google documents for function calls Gemini did not produce.
const PLACEHOLDER_SIGNATURE: &str = "skip_thought_signature_validator";

/// OpenAI chat completions served by Gemini `generateContent` / `streamGenerateContent`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAiChat;

impl Translator for OpenAiChat {
    fn request(
        &mut self,
        body: &Value,
        ctx: &RequestContext<'_>,
    ) -> Result<UpstreamRequest, TranslateError> {
        chat_request(body, ctx.model, ctx.stream)
    }

    fn response(
        &self,
        body: &[u8],
        ctx: &ResponseContext<'_>,
    ) -> Result<Translated, TranslateError> {
        let (body, usage) = chat_response(body, ctx.model)?;
        Ok(ctx.translated(body, usage))
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        error_response(status, body)
    }

    fn stream(&self, ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(ChatStream::new(ctx.model))
    }
}

/// OpenAI embeddings served by Vertex AI: `embedContent` for the Gemini embedding models
/// (`gemini-embedding*`), `predict` for the others (`text-embedding-*`,
/// `text-multilingual-embedding-*`, ...).
#[derive(Debug, Clone, Copy, Default)]
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
        let (body, usage) = embeddings_response(body, ctx.model)?;
        Ok(ctx.translated(body, usage))
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        error_response(status, body)
    }

    fn stream(&self, _ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(PassThrough)
    }
}

#[cfg(test)]
mod tests;

// ---------------------------------------------------------------------------------------------
// Chat completion requests
// ---------------------------------------------------------------------------------------------

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
fn reject_unsupported(fields: &Map<String, Value>) -> Result<(), TranslateError> {
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
fn contents(
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
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("every message needs a role"))?;
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
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("a tool message needs tool_call_id"))?;
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
fn push_content(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = contents.last_mut()
        && last.get("role").and_then(Value::as_str) == Some(role)
        && let Some(existing) = last.get_mut("parts").and_then(Value::as_array_mut)
    {
        existing.extend(parts);
        return;
    }
    contents.push(json!({ "role": role, "parts": parts }));
}

/// The non-empty texts of a text-only `content` (system, developer, assistant, tool): a
/// string or `text` (and `refusal`) parts.
fn texts(content: &Value, role: &str) -> Result<Vec<String>, TranslateError> {
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
fn user_parts(content: &Value) -> Result<Vec<Value>, TranslateError> {
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
                let text = part
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("a text part needs text"))?;
                if !text.is_empty() {
                    out.push(json!({ "text": text }));
                }
            }
            Some("image_url") => {
                let url = part
                    .pointer("/image_url/url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("an image_url part needs image_url.url"))?;
                out.push(media_part(url, "image/jpeg")?);
            }
            Some("input_audio") => {
                let data = part
                    .pointer("/input_audio/data")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("an input_audio part needs input_audio.data"))?;
                let format = part
                    .pointer("/input_audio/format")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("an input_audio part needs input_audio.format"))?;
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
fn media_part(url: &str, fallback: &str) -> Result<Value, TranslateError> {
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
fn mime_from_extension(url: &str) -> Option<&'static str> {
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
fn function_call_part(call: &Value) -> Result<(String, String, Value), TranslateError> {
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
fn tools(fields: &Map<String, Value>) -> Result<Vec<Value>, TranslateError> {
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

fn function_declaration(function: &Value) -> Result<Value, TranslateError> {
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("a function tool needs a name"))?;
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
fn tool_config(fields: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
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
                let name = choice
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("a function tool_choice needs function.name"))?;
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
fn generation_config(fields: &Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    let mut config = Map::new();
    number_field(fields, "temperature", "temperature", &mut config)?;
    number_field(fields, "top_p", "topP", &mut config)?;
    number_field(fields, "top_k", "topK", &mut config)?;
    number_field(fields, "presence_penalty", "presencePenalty", &mut config)?;
    number_field(fields, "frequency_penalty", "frequencyPenalty", &mut config)?;
    if let Some(max) = fields
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| fields.get("max_tokens").filter(|v| !v.is_null()))
    {
        let max = max
            .as_u64()
            .ok_or_else(|| invalid("max_tokens must be a non-negative integer"))?;
        config.insert("maxOutputTokens".into(), json!(max));
    }
    match fields.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(stop)) => {
            config.insert("stopSequences".into(), json!([stop]));
        }
        Some(Value::Array(stops)) => {
            if stops.iter().any(|s| !s.is_string()) {
                return Err(invalid("stop must be a string or a list of strings"));
            }
            if !stops.is_empty() {
                config.insert("stopSequences".into(), Value::Array(stops.clone()));
            }
        }
        Some(_) => return Err(invalid("stop must be a string or a list of strings")),
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

fn logprobs_config(
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

fn response_format(
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
fn thinking_config(fields: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
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

// ---------------------------------------------------------------------------------------------
// JSON schema -> Gemini schema
// ---------------------------------------------------------------------------------------------

/// Converts a JSON schema into the OpenAPI subset Gemini accepts as `parameters` and
/// `responseSchema`.
pub fn gemini_schema(schema: &Value) -> Result<Value, TranslateError> {
    let empty = Map::new();
    let root = schema.as_object().unwrap_or(&empty);
    let defs = root
        .get("$defs")
        .or_else(|| root.get("definitions"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut budget = json_size(schema).saturating_mul(MAX_SCHEMA_GROWTH);
    convert_schema(schema, defs, 0, &mut budget)
}

/// About the length of `value` written as JSON.
fn json_size(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len().saturating_add(2),
        Value::Array(items) => items.iter().fold(2, |size, item| {
            size.saturating_add(json_size(item)).saturating_add(1)
        }),
        Value::Object(map) => map.iter().fold(2, |size, (key, item)| {
            size.saturating_add(key.len())
                .saturating_add(json_size(item))
                .saturating_add(4)
        }),
        _ => 4,
    }
}

fn gemini_type(name: &str) -> Result<&'static str, TranslateError> {
    Ok(match name {
        "string" => "STRING",
        "number" => "NUMBER",
        "integer" => "INTEGER",
        "boolean" => "BOOLEAN",
        "array" => "ARRAY",
        "object" => "OBJECT",
        "null" => "NULL",
        other => return Err(invalid(format!("unknown JSON schema type {other:?}"))),
    })
}

/// Copies the keys of `from` into `into` where `into` has none.
fn merge_missing(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (key, value) in from {
        into.entry(key).or_insert(value);
    }
}

fn convert_schema(
    schema: &Value,
    defs: &Map<String, Value>,
    depth: usize,
    budget: &mut usize,
) -> Result<Value, TranslateError> {
    if depth > MAX_SCHEMA_DEPTH {
        return Err(unsupported(
            "the JSON schema nests too deeply (or its $refs are recursive) for Gemini",
        ));
    }
    let source = match schema {
        Value::Object(map) => map,
        // `true` accepts anything; Gemini has no such schema, an empty one comes closest.
        Value::Bool(true) => return Ok(json!({})),
        _ => return Err(invalid("a JSON schema must be an object")),
    };
    let mut out = Map::new();

    if let Some(reference) = source.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/$defs/")
            .or_else(|| reference.strip_prefix("#/definitions/"))
            .ok_or_else(|| {
                unsupported(format!(
                    "JSON schema $ref {reference:?} cannot be sent to Gemini"
                ))
            })?;
        let target = defs
            .get(name)
            .ok_or_else(|| invalid(format!("JSON schema $ref {reference:?} names nothing")))?;
        *budget = budget
            .checked_sub(json_size(target))
            .ok_or_else(|| unsupported("the JSON schema's $refs inline too much for Gemini"))?;
        if let Value::Object(resolved) = convert_schema(target, defs, depth + 1, budget)? {
            out = resolved;
        }
    }
    if let Some(Value::Array(all)) = source.get("allOf") {
        if all.len() != 1 {
            return Err(unsupported(
                "JSON schema allOf with several schemas cannot be sent to Gemini",
            ));
        }
        if let Some(Value::Object(inner)) = all
            .first()
            .map(|s| convert_schema(s, defs, depth + 1, budget))
            .transpose()?
        {
            merge_missing(&mut out, inner);
        }
    }

    let mut nullable = false;
    match source.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => {
            let kind = gemini_type(name)?;
            if kind == "NULL" {
                nullable = true;
            } else {
                out.insert("type".into(), json!(kind));
            }
        }
        Some(Value::Array(names)) => {
            let mut kinds = Vec::new();
            for name in names {
                let name = name
                    .as_str()
                    .ok_or_else(|| invalid("JSON schema types must be strings"))?;
                match gemini_type(name)? {
                    "NULL" => nullable = true,
                    kind => kinds.push(kind),
                }
            }
            match kinds.as_slice() {
                [] => {}
                [only] => {
                    out.insert("type".into(), json!(only));
                }
                several => {
                    let any: Vec<Value> = several.iter().map(|k| json!({"type": k})).collect();
                    out.insert("anyOf".into(), Value::Array(any));
                }
            }
        }
        Some(_) => return Err(invalid("JSON schema type must be a string or a list")),
    }

    for key in ["anyOf", "oneOf"] {
        let Some(list) = source.get(key) else {
            continue;
        };
        let list = list
            .as_array()
            .ok_or_else(|| invalid(format!("JSON schema {key} must be a list")))?;
        let mut options = Vec::new();
        for option in list {
            if option.get("type").and_then(Value::as_str) == Some("null")
                && option.as_object().is_some_and(|o| o.len() == 1)
            {
                nullable = true;
                continue;
            }
            options.push(convert_schema(option, defs, depth + 1, budget)?);
        }
        match options.len() {
            0 => {}
            1 => {
                if let Some(Value::Object(only)) = options.pop() {
                    merge_missing(&mut out, only);
                }
            }
            _ => {
                out.insert("anyOf".into(), Value::Array(options));
            }
        }
    }

    if let Some(value) = source.get("const") {
        match value {
            Value::String(_) => {
                out.insert("enum".into(), json!([value]));
                out.entry("type").or_insert(json!("STRING"));
            }
            _ => return Err(unsupported("Gemini schemas allow only string constants")),
        }
    }
    if let Some(Value::Array(values)) = source.get("enum") {
        let strings: Vec<Value> = values.iter().filter(|v| !v.is_null()).cloned().collect();
        if values.iter().any(Value::is_null) {
            nullable = true;
        }
        // Gemini enumerates strings only; other enumerations are left unconstrained.
        if !strings.is_empty() && strings.iter().all(Value::is_string) {
            out.insert("enum".into(), Value::Array(strings));
            out.entry("type").or_insert(json!("STRING"));
        }
    }

    if let Some(properties) = source.get("properties") {
        let properties = properties
            .as_object()
            .ok_or_else(|| invalid("JSON schema properties must be an object"))?;
        let mut converted = Map::new();
        for (name, property) in properties {
            converted.insert(
                name.clone(),
                convert_schema(property, defs, depth + 1, budget)?,
            );
        }
        if let Some(Value::Array(required)) = source.get("required") {
            let required: Vec<Value> = required
                .iter()
                .filter(|r| r.as_str().is_some_and(|r| converted.contains_key(r)))
                .cloned()
                .collect();
            if !required.is_empty() {
                out.insert("required".into(), Value::Array(required));
            }
        }
        if !converted.is_empty() {
            out.insert("properties".into(), Value::Object(converted));
        }
    }
    if let Some(items) = source.get("items") {
        if items.is_array() {
            return Err(unsupported("tuple JSON schemas cannot be sent to Gemini"));
        }
        out.insert(
            "items".into(),
            convert_schema(items, defs, depth + 1, budget)?,
        );
    }

    for key in [
        "title",
        "description",
        "default",
        "example",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "pattern",
        "propertyOrdering",
    ] {
        if let Some(value) = source.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    if let Some(format) = source.get("format").and_then(Value::as_str) {
        let allowed = match out.get("type").and_then(Value::as_str) {
            Some("STRING") => ["date-time", "enum"].contains(&format),
            Some("NUMBER") => ["float", "double"].contains(&format),
            Some("INTEGER") => ["int32", "int64"].contains(&format),
            _ => false,
        };
        if allowed {
            out.insert("format".into(), json!(format));
        }
    }
    if nullable || source.get("nullable").and_then(Value::as_bool) == Some(true) {
        out.insert("nullable".into(), json!(true));
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------------
// Chat completion responses
// ---------------------------------------------------------------------------------------------

fn count(value: &Value, key: &str) -> Option<u64> {
    value.get(key).and_then(Value::as_u64)
}

/// Whether a `usageMetadata` carries any token count (early stream events carry none).
fn has_counts(meta: &Value) -> bool {
    [
        "promptTokenCount",
        "candidatesTokenCount",
        "thoughtsTokenCount",
        "totalTokenCount",
        "cachedContentTokenCount",
    ]
    .iter()
    .any(|key| count(meta, key).is_some())
}

/// Gemini `usageMetadata` -> token usage; thinking tokens count as output.
fn usage_from(meta: &Value) -> TokenUsage {
    let candidates = count(meta, "candidatesTokenCount");
    let thoughts = count(meta, "thoughtsTokenCount");
    let output = match (candidates, thoughts) {
        (None, None) => None,
        (c, t) => Some(c.unwrap_or(0).saturating_add(t.unwrap_or(0))),
    };
    TokenUsage {
        input: count(meta, "promptTokenCount"),
        cached_input: count(meta, "cachedContentTokenCount"),
        cache_creation_input: None,
        output,
        total: count(meta, "totalTokenCount"),
        reasoning: thoughts,
    }
}

/// The OpenAI `finish_reason` of a Gemini `finishReason`; `None` while a stream goes on.
fn map_finish(reason: Option<&str>, has_calls: bool) -> Option<&'static str> {
    let reason = reason.filter(|r| !r.is_empty() && *r != "FINISH_REASON_UNSPECIFIED")?;
    Some(match reason {
        "STOP" if has_calls => "tool_calls",
        "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "MODEL_ARMOR" => "content_filter",
        other => finish_reason(other),
    })
}

/// A Vertex `logprobsResult` as an OpenAI choice `logprobs` object.
fn openai_logprobs(result: &Value) -> Value {
    let entry = |candidate: &Value| {
        let token = candidate.get("token").and_then(Value::as_str).unwrap_or("");
        json!({
            "token": token,
            "logprob": candidate.get("logProbability").and_then(Value::as_f64).unwrap_or(0.0),
            "bytes": token.as_bytes(),
        })
    };
    let empty = Vec::new();
    let chosen = result
        .get("chosenCandidates")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let top = result
        .get("topCandidates")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let content: Vec<Value> = chosen
        .iter()
        .enumerate()
        .map(|(i, candidate)| {
            let mut item = entry(candidate);
            let alternatives: Vec<Value> = top
                .get(i)
                .and_then(|t| t.get("candidates"))
                .and_then(Value::as_array)
                .map(|list| list.iter().map(entry).collect())
                .unwrap_or_default();
            item["top_logprobs"] = Value::Array(alternatives);
            item
        })
        .collect();
    json!({ "content": content, "refusal": null })
}

/// The id of a completion: Gemini's `responseId`, else a random one.
fn completion_id(response: &Value) -> String {
    match response.get("responseId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!("chatcmpl-{:016x}", fastrand::u64(..)),
    }
}

/// The id of a tool call Gemini gave none: unique per completion, choice and call.
fn tool_call_id(completion: &str, choice: u64, call: usize) -> String {
    format!("call_{completion}_{choice}_{call}")
}

/// An OpenAI tool call from a `functionCall` part.
fn tool_call(part: &Value, call: &Value, id: String) -> Value {
    let name = call.get("name").cloned().unwrap_or(Value::Null);
    let arguments = call.get("args").cloned().unwrap_or_else(|| json!({}));
    let mut out = json!({
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": arguments.to_string()},
    });
    if let Some(signature) = part.get("thoughtSignature").and_then(Value::as_str) {
        out["extra_content"] = json!({"google": {"thought_signature": signature}});
    }
    out
}

/// Answer text, thought text and function calls of a candidate's parts.
#[derive(Default)]
struct PartsText {
    text: Option<String>,
    reasoning: Option<String>,
    /// (the part, its `functionCall`).
    calls: Vec<(Value, Value)>,
}

fn split_parts(candidate: &Value) -> PartsText {
    let mut out = PartsText::default();
    let Some(parts) = candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
    else {
        return out;
    };
    for part in parts {
        if let Some(call) = part.get("functionCall") {
            out.calls.push((part.clone(), call.clone()));
        } else if let Some(text) = part.get("text").and_then(Value::as_str) {
            let target = if part.get("thought").and_then(Value::as_bool) == Some(true) {
                &mut out.reasoning
            } else {
                &mut out.text
            };
            target.get_or_insert_with(String::new).push_str(text);
        }
    }
    out
}

fn created(response: &Value) -> u64 {
    response
        .get("createTime")
        .and_then(Value::as_str)
        .and_then(rfc3339_unix_seconds)
        .unwrap_or(0)
}

/// Translates a buffered Gemini `GenerateContentResponse` into an OpenAI `chat.completion`;
/// `model` is the requested model.
pub fn chat_response(body: &[u8], model: &str) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let response: Value = serde_json::from_slice(body)
        .map_err(|err| TranslateError::Upstream(format!("Gemini response is not JSON: {err}")))?;
    if !response.is_object() {
        return Err(TranslateError::Upstream(
            "Gemini response is not a JSON object".into(),
        ));
    }
    let id = completion_id(&response);
    let candidates = match response.get("candidates") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(TranslateError::Upstream(
                "Gemini candidates is not a list".into(),
            ));
        }
    };
    let mut choices = Vec::with_capacity(candidates.len());
    for (position, candidate) in candidates.iter().enumerate() {
        let index = count(candidate, "index").unwrap_or(position as u64);
        let parts = split_parts(candidate);
        let calls: Vec<Value> = parts
            .calls
            .iter()
            .enumerate()
            .map(|(n, (part, call))| {
                let id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| tool_call_id(&id, index, n));
                tool_call(part, call, id)
            })
            .collect();
        let mut message = json!({
            "role": "assistant",
            "content": parts.text.map(Value::String).unwrap_or(Value::Null),
        });
        if let Some(reasoning) = parts.reasoning {
            message["reasoning_content"] = json!(reasoning);
        }
        let has_calls = !calls.is_empty();
        if has_calls {
            message["tool_calls"] = Value::Array(calls);
        }
        let reason = candidate.get("finishReason").and_then(Value::as_str);
        choices.push(json!({
            "index": index,
            "message": message,
            "logprobs": candidate.get("logprobsResult").map(openai_logprobs),
            "finish_reason": map_finish(reason, has_calls).unwrap_or(if has_calls { "tool_calls" } else { "stop" }),
        }));
    }
    if choices.is_empty() && response.pointer("/promptFeedback/blockReason").is_some() {
        choices.push(json!({
            "index": 0,
            "message": {"role": "assistant", "content": null},
            "logprobs": null,
            "finish_reason": "content_filter",
        }));
    }
    let meta = response.get("usageMetadata").filter(|m| m.is_object());
    let usage = meta.map(usage_from).unwrap_or_default();
    let mut out = json!({
        "id": id,
        "object": "chat.completion",
        "created": created(&response),
        "model": model,
        "choices": choices,
    });
    if meta.is_some() {
        out["usage"] = usage.to_openai();
    }
    Ok((out.to_string().into_bytes(), usage))
}

/// Translates a Google error answer (status `status`), `{"error": {"code", "message",
/// "status"}}` or plain text, into the OpenAI error shape.
pub fn error_response(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    // Some Vertex methods wrap the error in a one-element list.
    let error = parsed.as_ref().and_then(|v| {
        v.get("error")
            .or_else(|| v.get(0).and_then(|e| e.get("error")))
    });
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let kind = error
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(BACKEND_ERROR);
    json!({"error": {"message": message, "type": kind, "param": null, "code": status.to_string()}})
        .to_string()
        .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

/// What a stream has sent for one candidate.
#[derive(Debug, Default, Clone, Copy)]
struct ChoiceState {
    /// The first delta (carrying the role) went out.
    started: bool,
    /// Tool calls sent so far.
    calls: usize,
}

/// Translates a Gemini `streamGenerateContent?alt=sse` event stream into OpenAI
/// `chat.completion.chunk` events: one chunk per Gemini event, then a usage chunk (when the
/// stream reported usage) and `data: [DONE]` at the end.
#[derive(Debug, Default)]
pub struct ChatStream {
    model: String,
    reader: SseReader,
    id: Option<String>,
    created: u64,
    usage: TokenUsage,
    usage_seen: bool,
    choices: HashMap<u64, ChoiceState>,
    finished: bool,
}

impl ChatStream {
    /// A stream answering a request for `model`.
    pub fn new(model: &str) -> ChatStream {
        ChatStream {
            model: model.to_string(),
            ..ChatStream::default()
        }
    }

    fn id(&mut self) -> String {
        self.id
            .get_or_insert_with(|| format!("chatcmpl-{:016x}", fastrand::u64(..)))
            .clone()
    }

    fn chunk(&mut self, choices: Vec<Value>) -> Vec<u8> {
        let id = self.id();
        sse_event(&json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }))
    }

    /// Translates the data of one complete server-sent event; comments and the other fields
    /// (`event:`, `id:`, `retry:`) carry nothing for the client.
    fn data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), TranslateError> {
        let data = std::str::from_utf8(data)
            .map_err(|_| TranslateError::Upstream("Gemini event data is not UTF-8".into()))?;
        let Some(data) = event_text(data) else {
            return Ok(());
        };
        if data.trim() == "[DONE]" {
            return Ok(());
        }
        let event: Value = serde_json::from_str(data).map_err(|err| {
            TranslateError::Upstream(format!("Gemini event data is not JSON: {err}"))
        })?;
        out.extend(self.event(&event));
        Ok(())
    }

    /// Translates one decoded Gemini stream event (the JSON of its `data:`).
    pub fn event(&mut self, event: &Value) -> Vec<u8> {
        let event = match event {
            // A stream may frame a response as a one-element list.
            Value::Array(list) if list.len() == 1 => &list[0],
            other => other,
        };
        if let Some(error) = event.get("error").filter(|e| e.is_object()) {
            let code = error.get("code").and_then(Value::as_u64);
            return sse_event(&json!({"error": {
                "message": error.get("message").and_then(Value::as_str).unwrap_or("stream error"),
                "type": error.get("status").and_then(Value::as_str).unwrap_or(BACKEND_ERROR),
                "param": null,
                "code": code.map(|c| c.to_string()),
            }}));
        }
        if self.id.is_none() {
            self.id = Some(completion_id(event));
            self.created = created(event);
        }
        if let Some(meta) = event.get("usageMetadata").filter(|m| has_counts(m)) {
            self.usage = usage_from(meta);
            self.usage_seen = true;
        }
        let id = self.id();
        let mut choices = Vec::new();
        let candidates = event.get("candidates").and_then(Value::as_array);
        for (position, candidate) in candidates.into_iter().flatten().enumerate() {
            let index = count(candidate, "index").unwrap_or(position as u64);
            let mut state = self.choices.get(&index).copied().unwrap_or_default();
            let mut delta = Map::new();
            if !state.started {
                delta.insert("role".into(), json!("assistant"));
                state.started = true;
            }
            let parts = split_parts(candidate);
            if let Some(text) = parts.text {
                delta.insert("content".into(), json!(text));
            }
            if let Some(reasoning) = parts.reasoning {
                delta.insert("reasoning_content".into(), json!(reasoning));
            }
            if !parts.calls.is_empty() {
                let mut calls = Vec::with_capacity(parts.calls.len());
                for (part, call) in &parts.calls {
                    let call_id = call
                        .get("id")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| tool_call_id(&id, index, state.calls));
                    let mut entry = tool_call(part, call, call_id);
                    entry["index"] = json!(state.calls);
                    state.calls += 1;
                    calls.push(entry);
                }
                delta.insert("tool_calls".into(), Value::Array(calls));
            }
            let reason = candidate.get("finishReason").and_then(Value::as_str);
            choices.push(json!({
                "index": index,
                "delta": delta,
                "logprobs": candidate.get("logprobsResult").map(openai_logprobs),
                "finish_reason": map_finish(reason, state.calls > 0),
            }));
            self.choices.insert(index, state);
        }
        if choices.is_empty() && event.pointer("/promptFeedback/blockReason").is_some() {
            let mut state = self.choices.get(&0).copied().unwrap_or_default();
            let delta = if state.started {
                json!({})
            } else {
                json!({"role": "assistant"})
            };
            state.started = true;
            self.choices.insert(0, state);
            choices.push(json!({
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": "content_filter",
            }));
        }
        if choices.is_empty() {
            return Vec::new();
        }
        self.chunk(choices)
    }
}

impl StreamTranslator for ChatStream {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        let events = self
            .reader
            .feed(chunk)
            .map_err(|_| TranslateError::Upstream("a Gemini stream event exceeds 16 MiB".into()))?;
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
        if self.usage_seen {
            let id = self.id();
            out.extend(sse_event(&json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
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
        Some(self.model.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Embeddings
// ---------------------------------------------------------------------------------------------

/// Whether `model` is served by `embedContent` (the Gemini embedding family) rather than
/// `predict`.
pub fn uses_embed_content(model: &str) -> bool {
    let name = model.rsplit('/').next().unwrap_or(model);
    name.to_ascii_lowercase().starts_with("gemini-embedding")
}

/// The texts of an embeddings `input`.
fn embedding_inputs(input: Option<&Value>) -> Result<Vec<String>, TranslateError> {
    match input {
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) if items.is_empty() => Err(invalid("input must not be empty")),
        Some(Value::Array(items)) => {
            if items.iter().all(Value::is_string) {
                Ok(items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect())
            } else if items.iter().all(|i| i.is_number() || i.is_array()) {
                Err(unsupported(
                    "Vertex AI embeds text, not token arrays: send the input as strings",
                ))
            } else {
                Err(invalid(
                    "input must be a string or a list of strings or token arrays",
                ))
            }
        }
        Some(_) => Err(invalid(
            "input must be a string or a list of strings or token arrays",
        )),
        None => Err(invalid("input is required")),
    }
}

/// Translates an OpenAI embeddings request for `model` into a Vertex AI `embedContent`
/// (Gemini embedding models, one input) or `predict` request. Besides `dimensions`, the
/// extension fields `task_type`, `title` and `auto_truncate` are passed on.
pub fn embeddings_request(request: &Value, model: &str) -> Result<UpstreamRequest, TranslateError> {
    let Some(fields) = request.as_object() else {
        return Err(invalid("the request body must be a JSON object"));
    };
    let inputs = embedding_inputs(fields.get("input"))?;
    match fields.get("encoding_format").filter(|v| !v.is_null()) {
        None => {}
        Some(Value::String(format)) if format == "float" => {}
        Some(Value::String(format)) if format == "base64" => {
            return Err(unsupported(
                "encoding_format base64 is not supported for Vertex AI embeddings; use float",
            ));
        }
        Some(other) => {
            return Err(invalid(format!(
                "encoding_format {other} is not one of float, base64"
            )));
        }
    }
    let dimensions = match fields.get("dimensions").filter(|v| !v.is_null()) {
        None => None,
        Some(value) => Some(
            value
                .as_u64()
                .filter(|d| *d > 0)
                .ok_or_else(|| invalid("dimensions must be a positive integer"))?,
        ),
    };
    let string_field = |name: &str| -> Result<Option<String>, TranslateError> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("{name} must be a string"))),
        }
    };
    let task_type = string_field("task_type")?;
    let title = string_field("title")?;
    let auto_truncate = match fields.get("auto_truncate") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(invalid("auto_truncate must be a boolean")),
    };

    let mut body = Map::new();
    let method = if uses_embed_content(model) {
        let [text] = inputs.as_slice() else {
            return Err(unsupported(format!(
                "{model} embeds one input per request; send one string"
            )));
        };
        body.insert("content".into(), json!({"parts": [{"text": text}]}));
        if let Some(dimensions) = dimensions {
            body.insert("outputDimensionality".into(), json!(dimensions));
        }
        if let Some(task_type) = task_type {
            body.insert("taskType".into(), json!(task_type));
        }
        if let Some(title) = title {
            body.insert("title".into(), json!(title));
        }
        if let Some(auto_truncate) = auto_truncate {
            body.insert("autoTruncate".into(), json!(auto_truncate));
        }
        "embedContent"
    } else {
        let instances: Vec<Value> = inputs
            .iter()
            .map(|text| {
                let mut instance = json!({ "content": text });
                if let Some(task_type) = &task_type {
                    instance["task_type"] = json!(task_type);
                }
                if let Some(title) = &title {
                    instance["title"] = json!(title);
                }
                instance
            })
            .collect();
        body.insert("instances".into(), Value::Array(instances));
        let mut parameters = Map::new();
        if let Some(dimensions) = dimensions {
            parameters.insert("outputDimensionality".into(), json!(dimensions));
        }
        if let Some(auto_truncate) = auto_truncate {
            parameters.insert("autoTruncate".into(), json!(auto_truncate));
        }
        if !parameters.is_empty() {
            body.insert("parameters".into(), Value::Object(parameters));
        }
        "predict"
    };
    Ok(UpstreamRequest {
        path: format!("publishers/google/models/{}:{method}", path_escape(model)),
        body: Value::Object(body).to_string().into_bytes(),
        headers: vec![("content-type".into(), "application/json".into())],
    })
}

fn embedding_values(values: Option<&Value>) -> Result<Value, TranslateError> {
    match values {
        Some(Value::Array(list)) if list.iter().all(Value::is_number) => {
            Ok(Value::Array(list.clone()))
        }
        _ => Err(TranslateError::Upstream(
            "Vertex AI embedding has no list of values".into(),
        )),
    }
}

/// A token count Vertex may write as an integer or a float.
fn token_count(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// Translates a Vertex AI `predict` or `embedContent` response into an OpenAI embeddings
/// list; `model` is the requested model.
pub fn embeddings_response(
    body: &[u8],
    model: &str,
) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let response: Value = serde_json::from_slice(body).map_err(|err| {
        TranslateError::Upstream(format!("Vertex AI embeddings response is not JSON: {err}"))
    })?;
    let mut data = Vec::new();
    let (tokens, total) = if let Some(predictions) = response.get("predictions") {
        let predictions = predictions.as_array().ok_or_else(|| {
            TranslateError::Upstream("Vertex AI predictions is not a list".into())
        })?;
        let mut tokens: Option<u64> = None;
        for (index, prediction) in predictions.iter().enumerate() {
            let embeddings = prediction.get("embeddings").unwrap_or(&Value::Null);
            let values = embedding_values(embeddings.get("values"))?;
            data.push(json!({"object": "embedding", "index": index, "embedding": values}));
            if let Some(n) = token_count(embeddings.pointer("/statistics/token_count")) {
                tokens = Some(tokens.unwrap_or(0).saturating_add(n));
            }
        }
        (tokens, tokens)
    } else if let Some(embedding) = response.get("embedding") {
        let values = embedding_values(embedding.get("values"))?;
        data.push(json!({"object": "embedding", "index": 0, "embedding": values}));
        let meta = response.get("usageMetadata").unwrap_or(&Value::Null);
        let tokens = token_count(meta.get("promptTokenCount"));
        (tokens, token_count(meta.get("totalTokenCount")).or(tokens))
    } else {
        return Err(TranslateError::Upstream(
            "Vertex AI embeddings response has neither predictions nor embedding".into(),
        ));
    };
    let usage = TokenUsage {
        input: tokens,
        total,
        ..TokenUsage::default()
    };
    let out = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens.unwrap_or(0), "total_tokens": total.unwrap_or(0)},
    });
    Ok((out.to_string().into_bytes(), usage))
}
