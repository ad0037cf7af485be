//! Translation between the client's API (OpenAI, or Anthropic Messages and token counting on
//! `/anthropic/v1/messages[/count_tokens]`) and each backend schema: one module per provider,
//! pure functions from request to request, response to response and stream chunk to stream
//! chunks, with their tests beside them. [`select`] picks the [`Translator`] of an (endpoint,
//! backend schema) pair; `None` means the backend speaks the client's API and bytes pass
//! through.
//!
//! A translator never does I/O and never sees credentials: the processor adds those after
//! translation. A request a backend cannot express is a [`TranslateError::Unsupported`], which
//! the client receives as 422 with the reason.

use aigw_filterconfig::{ApiSchema, BackendSchema};
use serde_json::{Map, Value, json};

use crate::endpoint::Endpoint;
use crate::usage::TokenUsage;

// Provider modules (one line each, in alphabetical order).
pub mod anthropic;
pub mod bedrock;
pub mod cohere;
pub mod eventstream;
pub mod gemini;
pub mod multipart;
pub mod openai;
pub(crate) mod sse;
#[cfg(test)]
pub(crate) mod test_support;

/// Why a request or response could not be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The backend cannot express this request (answered 422).
    #[error("{0}")]
    Unsupported(String),
    /// The request body is not what the endpoint accepts (answered 400).
    #[error("invalid request body: {0}")]
    Invalid(String),
    /// The provider answered something that is not its documented format (answered 502).
    #[error("unexpected response from the provider: {0}")]
    Upstream(String),
}

/// The request to send upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRequest {
    /// `:path`, including any query string.
    pub path: String,
    /// The body.
    pub body: Vec<u8>,
    /// Headers to set (lower-case names), besides credentials.
    pub headers: Vec<(String, String)>,
}

/// What a translator may need to know about the request besides its body. Its `Debug` shows
/// header names, not values (client credentials).
#[derive(Clone, Copy)]
pub struct RequestContext<'a> {
    /// The model to ask the backend for (after any override).
    pub model: &'a str,
    /// The client asked for a streamed response.
    pub stream: bool,
    /// The client's request headers (lower-case names).
    pub headers: &'a [(String, String)],
}

/// What a translator may need to know when the response comes back.
#[derive(Debug, Clone, Copy)]
pub struct ResponseContext<'a> {
    /// The model the backend was asked for.
    pub model: &'a str,
    /// The provider's response headers (lower-case names), e.g. `x-amzn-requestid`.
    pub headers: &'a [(String, String)],
}

impl ResponseContext<'_> {
    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(self.headers, name)
    }
}

/// The value of the header `name` (lower-case) in `headers`.
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl std::fmt::Debug for RequestContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("RequestContext")
            .field("model", &self.model)
            .field("stream", &self.stream)
            .field("headers", &names)
            .finish()
    }
}

impl ResponseContext<'_> {
    /// A translated response reporting the requested model (for providers whose answers
    /// name none).
    pub fn translated(&self, body: Vec<u8>, usage: TokenUsage) -> Translated {
        Translated {
            body,
            usage,
            model: Some(self.model.to_string()),
        }
    }
}

impl RequestContext<'_> {
    /// A request header.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(self.headers, name)
    }
}

/// A buffered response translated for the client, with the usage and model it reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The body for the client.
    pub body: Vec<u8>,
    /// Token usage the provider reported.
    pub usage: TokenUsage,
    /// The model the provider reported, if any.
    pub model: Option<String>,
}

/// What [`Translator::request`] returns: the request to send upstream, or why there is none.
pub type RequestResult = Result<UpstreamRequest, TranslateError>;

/// What [`Translator::response`] returns: the response for the client, or why there is none.
pub type ResponseResult = Result<Translated, TranslateError>;

/// One (client API, backend schema) pair: how requests go out and responses come back.
///
/// An implementation writes `request`, `response` and `error`; `stream` has a default for
/// endpoints that never stream.
pub trait Translator: Send + Sync + std::fmt::Debug {
    /// Translates the client's request body.
    fn request(&mut self, body: &Value, ctx: &RequestContext<'_>) -> RequestResult;
    /// Translates a successful (2xx) buffered response.
    fn response(&self, body: &[u8], ctx: &ResponseContext<'_>) -> ResponseResult;
    /// Translates an error response (status >= 300) into the client API's error shape.
    fn error(&self, status: u16, body: &[u8], ctx: &ResponseContext<'_>) -> Vec<u8>;
    /// A translator for a streamed successful response. The default, for endpoints that never
    /// stream (embeddings, rerank, token counting), passes the bytes on unchanged with no
    /// usage read ([`PassThrough`]), should a provider stream anyway.
    fn stream(&self, _ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(PassThrough)
    }
}

/// The translator for requests to `endpoint` served by a backend speaking `schema`; `None`
/// when the backend speaks the client's API (bytes pass through), an error when the pair
/// cannot be served.
pub fn select(
    schema: &BackendSchema,
    endpoint: Endpoint,
) -> Result<Option<Box<dyn Translator>>, TranslateError> {
    use anthropic::{AnthropicTarget, OpenAiChat};
    let anthropic_target = || match schema.name {
        ApiSchema::GCPAnthropic => AnthropicTarget::GcpAnthropic {
            version: schema.version.clone().unwrap_or_default(),
        },
        ApiSchema::AWSAnthropic => AnthropicTarget::AwsAnthropic {
            version: schema.version.clone().unwrap_or_default(),
        },
        _ => AnthropicTarget::Anthropic {
            prefix: schema.prefix.clone().unwrap_or_else(|| "v1".into()),
        },
    };
    let cannot = || {
        unsupported(format!(
            "a {} backend cannot serve {}",
            schema.name.as_str(),
            endpoint.path()
        ))
    };
    // What OpenAI-compatible servers take as it comes (vLLM's tokenizer exists only on
    // OpenAI-compatible servers, not on Azure).
    let passes = endpoint.openai_compatible() && endpoint != Endpoint::Tokenize;
    // One arm per schema, so that a new schema does not compile until it says what it serves.
    Ok(match schema.name {
        ApiSchema::OpenAI => match endpoint {
            Endpoint::Tokenize => None,
            _ if passes => None,
            Endpoint::Messages => Some(Box::new(openai::AnthropicMessages::new(
                schema.prefix.clone().unwrap_or_else(|| "v1".into()),
            ))),
            _ => return Err(cannot()),
        },
        ApiSchema::AzureOpenAI => match endpoint {
            _ if passes => None,
            _ => return Err(cannot()),
        },
        ApiSchema::Cohere => match endpoint {
            Endpoint::Rerank => Some(Box::new(cohere::Rerank::new(schema.version.as_deref()))),
            _ => return Err(cannot()),
        },
        ApiSchema::Anthropic | ApiSchema::GCPAnthropic | ApiSchema::AWSAnthropic => {
            match endpoint {
                Endpoint::ChatCompletions => Some(Box::new(OpenAiChat(anthropic_target()))),
                Endpoint::Messages => Some(Box::new(anthropic::Messages(anthropic_target()))),
                Endpoint::MessagesCountTokens => {
                    Some(Box::new(anthropic::CountTokens(anthropic_target())))
                }
                _ => return Err(cannot()),
            }
        }
        ApiSchema::AWSBedrock => match endpoint {
            Endpoint::ChatCompletions => Some(Box::new(bedrock::OpenAiChat)),
            Endpoint::Embeddings => {
                Some(Box::new(Base64Embeddings::new(bedrock::OpenAiEmbeddings)))
            }
            Endpoint::Messages => Some(Box::new(bedrock::AnthropicMessages)),
            Endpoint::MessagesCountTokens => Some(Box::new(bedrock::CountTokens)),
            _ => return Err(cannot()),
        },
        ApiSchema::GCPVertexAI => match endpoint {
            Endpoint::ChatCompletions => Some(Box::new(gemini::OpenAiChat)),
            Endpoint::Embeddings => Some(Box::new(Base64Embeddings::new(gemini::OpenAiEmbeddings))),
            _ => return Err(cannot()),
        },
    })
}

/// OpenAI's `encoding_format: "base64"` (what the OpenAI SDKs ask for by default) for a
/// provider that only answers floats: the provider is asked for floats and each embedding is
/// sent back as base64 of its little-endian `f32` values.
#[derive(Debug)]
pub struct Base64Embeddings<T> {
    inner: T,
    base64: bool,
}

impl<T> Base64Embeddings<T> {
    /// Wraps an embeddings translator.
    pub fn new(inner: T) -> Self {
        Base64Embeddings {
            inner,
            base64: false,
        }
    }
}

/// Base64 of the little-endian `f32` values of `vector` (the OpenAI base64 embedding format).
pub fn base64_embedding(vector: &[Value]) -> Option<String> {
    use base64::Engine as _;
    let mut bytes = Vec::with_capacity(vector.len() * 4);
    for value in vector {
        bytes.extend_from_slice(&(value.as_f64()? as f32).to_le_bytes());
    }
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

impl<T: Translator> Translator for Base64Embeddings<T> {
    fn request(&mut self, body: &Value, ctx: &RequestContext<'_>) -> RequestResult {
        if body.get("encoding_format").and_then(Value::as_str) == Some("base64") {
            self.base64 = true;
            let mut floats = body.clone();
            if let Some(fields) = floats.as_object_mut() {
                fields.remove("encoding_format");
            }
            return self.inner.request(&floats, ctx);
        }
        self.inner.request(body, ctx)
    }

    fn response(&self, body: &[u8], ctx: &ResponseContext<'_>) -> ResponseResult {
        let mut translated = self.inner.response(body, ctx)?;
        if !self.base64 {
            return Ok(translated);
        }
        let mut value: Value = serde_json::from_slice(&translated.body)
            .map_err(|err| TranslateError::Upstream(format!("embeddings are not JSON: {err}")))?;
        if let Some(items) = value.get_mut("data").and_then(Value::as_array_mut) {
            for item in items {
                let encoded = item
                    .get("embedding")
                    .and_then(Value::as_array)
                    .and_then(|v| base64_embedding(v));
                if let Some(encoded) = encoded {
                    item["embedding"] = Value::String(encoded);
                }
            }
        }
        translated.body = value.to_string().into_bytes();
        Ok(translated)
    }

    fn error(&self, status: u16, body: &[u8], ctx: &ResponseContext<'_>) -> Vec<u8> {
        self.inner.error(status, body, ctx)
    }

    fn stream(&self, ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        self.inner.stream(ctx)
    }
}

/// A streamed response translated as it arrives: every complete event is turned into client
/// bytes at once; an incomplete one waits for the next chunk.
pub trait StreamTranslator: Send {
    /// Consumes a chunk; returns the bytes to send to the client now.
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError>;
    /// The end of the stream; returns the last bytes (for example `data: [DONE]`).
    fn finish(&mut self) -> Result<Vec<u8>, TranslateError>;
    /// Token usage seen so far.
    fn usage(&self) -> TokenUsage;
    /// The model the provider reported, if any.
    fn model(&self) -> Option<String> {
        None
    }
}

/// The client bytes for the provider events a chunk completed, each translated by `translate`
/// in order: what the readers of each stream framing (server-sent events, AWS event stream)
/// share.
pub(crate) fn translate_each<E>(
    events: Vec<E>,
    mut translate: impl FnMut(&E, &mut Vec<u8>) -> Result<(), TranslateError>,
) -> Result<Vec<u8>, TranslateError> {
    let mut out = Vec::new();
    for event in &events {
        translate(event, &mut out)?;
    }
    Ok(out)
}

/// A stream passed to the client unchanged, with no usage read from it: for endpoints that
/// never stream (embeddings, rerank), should a provider stream anyway.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough;

impl StreamTranslator for PassThrough {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        Ok(chunk.to_vec())
    }

    fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        Ok(Vec::new())
    }

    fn usage(&self) -> TokenUsage {
        TokenUsage::default()
    }
}

/// A request the endpoint does not accept (answered 400).
pub(crate) fn invalid(message: impl Into<String>) -> TranslateError {
    TranslateError::Invalid(message.into())
}

/// A request the backend cannot express (answered 422).
pub(crate) fn unsupported(message: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported(message.into())
}

/// Copies the numeric request field `from` into `out` as `to`; absent or `null` copies
/// nothing, anything but a number is refused.
pub(crate) fn number_field(
    fields: &Map<String, Value>,
    from: &str,
    to: &str,
    out: &mut Map<String, Value>,
) -> Result<(), TranslateError> {
    if let Some(value) = fields.get(from).filter(|v| !v.is_null()) {
        if !value.is_number() {
            return Err(invalid(format!("{from} must be a number")));
        }
        out.insert(to.into(), value.clone());
    }
    Ok(())
}

/// OpenAI `max_completion_tokens`, else `max_tokens`, when the request sets one.
pub(crate) fn explicit_max_tokens(
    fields: &Map<String, Value>,
) -> Result<Option<u64>, TranslateError> {
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

/// OpenAI `stop` (a string or a list of strings) as a list of stop sequences; `None` when
/// there is none.
pub(crate) fn openai_stop(stop: Option<&Value>) -> Result<Option<Value>, TranslateError> {
    match stop {
        Some(Value::String(stop)) => Ok(Some(json!([stop]))),
        other => string_list(other, "stop must be a string or a list of strings"),
    }
}

/// A request field that is a list of strings (Anthropic `stop_sequences`); `None` when it is
/// absent, `null` or empty; anything else is refused with `message` (400).
pub(crate) fn string_list(
    list: Option<&Value>,
    message: &str,
) -> Result<Option<Value>, TranslateError> {
    match list {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Ok((!items.is_empty()).then(|| Value::Array(items.clone())))
        }
        Some(_) => Err(invalid(message)),
    }
}

/// Whether an OpenAI chat request asks for more than one choice (`n` > 1).
pub(crate) fn asks_several_choices(fields: &Map<String, Value>) -> bool {
    fields
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
}

/// Whether an OpenAI chat request asks for log probabilities (`logprobs` or `top_logprobs`).
pub(crate) fn asks_logprobs(fields: &Map<String, Value>) -> bool {
    fields.get("logprobs").and_then(Value::as_bool) == Some(true)
        || fields.get("top_logprobs").is_some_and(|v| !v.is_null())
}

/// The last chunk of an OpenAI chat stream translated from another API: no choices, the
/// stream's usage (what `stream_options.include_usage` asks of OpenAI).
pub(crate) fn usage_chunk(id: &str, created: u64, model: &str, usage: &TokenUsage) -> Vec<u8> {
    sse_event(&json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage.to_openai(),
    }))
}

/// The OpenAI chat stream delta that starts tool call `index`: its id and function name, no
/// arguments yet.
pub(crate) fn tool_call_start(index: u64, id: Option<&Value>, name: Option<&Value>) -> Value {
    json!({"tool_calls": [{
        "index": index,
        "id": id.cloned().unwrap_or(Value::Null),
        "type": "function",
        "function": {
            "name": name.cloned().unwrap_or(Value::Null),
            "arguments": "",
        },
    }]})
}

/// The OpenAI chat stream delta that adds `arguments` to tool call `index`.
pub(crate) fn tool_call_arguments(index: u64, arguments: &str) -> Value {
    json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})
}

/// Appends `items` as a turn of `role` (its list under `key`: `content` for Bedrock, `parts`
/// for Gemini), merged into the previous turn when that one has the same role: both APIs
/// want roles to alternate. Nothing is added for no items.
pub(crate) fn merge_turn(turns: &mut Vec<Value>, role: &str, key: &str, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut()
        && last.get("role").and_then(Value::as_str) == Some(role)
        && let Some(existing) = last.get_mut(key).and_then(Value::as_array_mut)
    {
        existing.extend(items);
        return;
    }
    let mut turn = serde_json::Map::new();
    turn.insert("role".into(), Value::String(role.to_string()));
    turn.insert(key.to_string(), Value::Array(items));
    turns.push(Value::Object(turn));
}

/// A field a request body must have: its name, what its value must be (`Value::is_string`,
/// `Value::is_array`, ...) and the message (400) for a body without it.
pub(crate) type Required = (&'static str, fn(&Value) -> bool, &'static str);

/// The fields of a request body, which must be a JSON object holding every `required` field;
/// any other body is refused (400).
pub(crate) fn body_fields<'a>(
    body: &'a Value,
    required: &[Required],
) -> Result<&'a Map<String, Value>, TranslateError> {
    let fields = body
        .as_object()
        .ok_or_else(|| invalid("the body must be a JSON object"))?;
    for (name, kind, message) in required {
        if !fields.get(*name).is_some_and(kind) {
            return Err(invalid(*message));
        }
    }
    Ok(fields)
}

/// `field` as a string; a request whose field is absent or not a string is refused with
/// `message` (400).
pub(crate) fn required_str<'a>(
    field: Option<&'a Value>,
    message: &str,
) -> Result<&'a str, TranslateError> {
    field
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(message))
}

/// A function tool as another API declares it: `name`, its parameters' JSON schema under
/// `schema_key` (an object schema without properties when `schema` is absent or `null`), and
/// its description when it has one.
pub(crate) fn function_spec(
    name: &str,
    schema_key: &str,
    schema: Option<&Value>,
    description: Option<&Value>,
) -> Value {
    let schema = schema
        .filter(|s| !s.is_null())
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    let mut spec = Map::new();
    spec.insert("name".into(), json!(name));
    spec.insert(schema_key.into(), schema);
    if let Some(description) = description.and_then(Value::as_str) {
        spec.insert("description".into(), json!(description));
    }
    Value::Object(spec)
}

/// The id, function name and arguments of an OpenAI assistant tool call (its `type` is the
/// caller's to check). Blank arguments are `{}`; arguments that are not JSON are refused.
pub(crate) fn function_call(call: &Value) -> Result<(&str, &str, Value), TranslateError> {
    let id = required_str(call.get("id"), "a tool call needs an id")?;
    let name = required_str(
        call.pointer("/function/name"),
        "a tool call needs function.name",
    )?;
    let arguments = call
        .pointer("/function/arguments")
        .and_then(Value::as_str)
        .unwrap_or("");
    let arguments = if arguments.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(arguments)
            .map_err(|err| invalid(format!("tool call {id} arguments are not JSON: {err}")))?
    };
    Ok((id, name, arguments))
}

/// An error body in the OpenAI shape for a provider's error answer with status `status`:
/// `{"error": {"message", "type", "param": null, "code": "<status>"}}`.
pub(crate) fn openai_error(status: u16, message: &str, kind: &str) -> Vec<u8> {
    json!({"error": {"message": message, "type": kind, "param": null, "code": status.to_string()}})
        .to_string()
        .into_bytes()
}

/// The `message` of a provider's error object, else the whole error body as text.
pub(crate) fn error_message(error: Option<&Value>, body: &[u8]) -> String {
    error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// Percent-encodes one path segment as Go's `url.PathEscape` does (upstream builds provider
/// paths with it): unreserved characters and `$&+:=@` stay, `/`, `;`, `,`, `?` and the rest are
/// escaped.
pub fn path_escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~$&+=:@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `data:<media type>;base64,<data>` split into media type and data; `None` for anything else.
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((media_type, data))
}

/// Formats one OpenAI server-sent event.
pub fn sse_event(payload: &serde_json::Value) -> Vec<u8> {
    format!("data: {payload}\n\n").into_bytes()
}

/// The terminating OpenAI event.
pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

/// Maps provider stop reasons to OpenAI `finish_reason`.
pub fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "end_turn" | "stop_sequence" | "STOP" | "stop" => "stop",
        "max_tokens" | "MAX_TOKENS" | "length" | "model_context_window_exceeded" => "length",
        "tool_use" | "tool_calls" => "tool_calls",
        "content_filtered" | "guardrail_intervened" | "SAFETY" | "RECITATION" | "refusal" => {
            "content_filter"
        }
        _ => "stop",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_context_prints_no_header_value() {
        let headers = [("x-api-key".to_string(), "client-secret-key".to_string())];
        let ctx = RequestContext {
            model: "m",
            stream: false,
            headers: &headers,
        };
        let shown = format!("{ctx:?}");
        assert!(shown.contains("x-api-key"), "{shown}");
        assert!(!shown.contains("client-secret-key"), "{shown}");
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason("end_turn"), "stop");
        assert_eq!(finish_reason("max_tokens"), "length");
        assert_eq!(finish_reason("tool_use"), "tool_calls");
        assert_eq!(finish_reason("guardrail_intervened"), "content_filter");
    }

    #[test]
    fn path_segments_escape_like_go() {
        assert_eq!(
            path_escape("anthropic.claude-v2:1"),
            "anthropic.claude-v2:1"
        );
        assert_eq!(path_escape("a/b c?d%,e;f"), "a%2Fb%20c%3Fd%25%2Ce%3Bf");
    }

    #[test]
    fn data_urls() {
        assert_eq!(
            data_url("data:image/png;base64,AAAA"),
            Some(("image/png", "AAAA"))
        );
        assert_eq!(data_url("data:image/png,AAAA"), None);
        assert_eq!(data_url("https://x/y.png"), None);
    }

    #[test]
    fn base64_embeddings_are_little_endian_f32() {
        // 1.0f32 = 00 00 80 3f, -2.0f32 = 00 00 00 c0.
        assert_eq!(
            base64_embedding(&[serde_json::json!(1.0), serde_json::json!(-2)]).as_deref(),
            Some("AACAPwAAAMA=")
        );
        assert_eq!(base64_embedding(&[serde_json::json!("x")]), None);
    }

    #[test]
    fn base64_is_asked_as_floats_and_answered_encoded() {
        let schema = BackendSchema {
            name: ApiSchema::AWSBedrock,
            version: None,
            prefix: None,
        };
        let mut translator = select(&schema, Endpoint::Embeddings).unwrap().unwrap();
        let ctx = RequestContext {
            model: "amazon.titan-embed-text-v2:0",
            stream: false,
            headers: &[],
        };
        let body = serde_json::json!({"model": "m", "input": "hi", "encoding_format": "base64"});
        let upstream = translator.request(&body, &ctx).unwrap();
        let sent: Value = serde_json::from_slice(&upstream.body).unwrap();
        assert_eq!(sent, serde_json::json!({"inputText": "hi"}));
        let answer = br#"{"embedding":[1.0,-2.0],"inputTextTokenCount":1}"#;
        let out = translator
            .response(
                answer,
                &ResponseContext {
                    model: ctx.model,
                    headers: &[],
                },
            )
            .unwrap();
        let client: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(client["data"][0]["embedding"], "AACAPwAAAMA=");
        assert_eq!(out.usage.input, Some(1));
    }

    #[test]
    fn count_tokens_is_served_by_the_anthropic_family_only() {
        use base64::Engine as _;
        let body = serde_json::json!({
            "model": "claude",
            "messages": [{"role": "user", "content": "hi"}],
        });
        let ctx = RequestContext {
            model: "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            stream: false,
            headers: &[],
        };
        let sent = |name: ApiSchema, version: Option<&str>| {
            let schema = BackendSchema {
                name,
                version: version.map(str::to_string),
                prefix: None,
            };
            let mut translator = select(&schema, Endpoint::MessagesCountTokens)
                .unwrap()
                .unwrap_or_else(|| panic!("{name:?}: a translator"));
            let upstream = translator.request(&body, &ctx).unwrap();
            let sent: Value = serde_json::from_slice(&upstream.body).unwrap();
            (upstream.path, sent)
        };
        let (path, anthropic) = sent(ApiSchema::Anthropic, None);
        assert_eq!(path, "/v1/messages/count_tokens");
        assert_eq!(anthropic["model"], ctx.model);
        let (path, gcp) = sent(ApiSchema::GCPAnthropic, Some("vertex-2023-10-16"));
        assert_eq!(path, "publishers/anthropic/models/count-tokens:rawPredict");
        assert_eq!(gcp["anthropic_version"], "vertex-2023-10-16");
        let counted = "/model/anthropic.claude-3-5-haiku-20241022-v1:0/count-tokens";
        let (path, aws) = sent(ApiSchema::AWSAnthropic, None);
        assert_eq!(path, counted);
        let invoke = aws
            .pointer("/input/invokeModel/body")
            .and_then(Value::as_str)
            .unwrap();
        let invoke: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(invoke)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(invoke["anthropic_version"], "bedrock-2023-05-31");
        let (path, bedrock) = sent(ApiSchema::AWSBedrock, None);
        assert_eq!(path, counted);
        assert_eq!(
            bedrock,
            serde_json::json!({"input": {"converse": {
                "messages": [{"role": "user", "content": [{"text": "hi"}]}],
            }}})
        );
        for name in [
            ApiSchema::OpenAI,
            ApiSchema::AzureOpenAI,
            ApiSchema::GCPVertexAI,
            ApiSchema::Cohere,
        ] {
            let schema = BackendSchema {
                name,
                version: None,
                prefix: None,
            };
            assert!(
                matches!(
                    select(&schema, Endpoint::MessagesCountTokens),
                    Err(TranslateError::Unsupported(_))
                ),
                "{name:?}"
            );
        }
    }

    #[test]
    fn stop_lists() {
        let stop = |v: Value| openai_stop(Some(&v));
        assert_eq!(stop(json!("x")), Ok(Some(json!(["x"]))));
        assert_eq!(stop(json!(["a", "b"])), Ok(Some(json!(["a", "b"]))));
        assert_eq!(stop(json!([])), Ok(None));
        assert_eq!(stop(Value::Null), Ok(None));
        assert_eq!(openai_stop(None), Ok(None));
        let refused = invalid("stop must be a string or a list of strings");
        assert_eq!(stop(json!(["a", 1])), Err(refused.clone()));
        assert_eq!(stop(json!(1)), Err(refused));
        assert_eq!(
            string_list(Some(&json!("x")), "a list"),
            Err(invalid("a list"))
        );
    }

    #[test]
    fn what_a_chat_request_asks() {
        let fields = |v: Value| v.as_object().cloned().unwrap();
        assert!(asks_several_choices(&fields(json!({"n": 2}))));
        assert!(!asks_several_choices(&fields(json!({"n": 1}))));
        assert!(asks_logprobs(&fields(json!({"logprobs": true}))));
        assert!(asks_logprobs(&fields(json!({"top_logprobs": 2}))));
        assert!(!asks_logprobs(&fields(
            json!({"logprobs": false, "top_logprobs": null})
        )));
        assert_eq!(
            explicit_max_tokens(&fields(
                json!({"max_tokens": 5, "max_completion_tokens": 7})
            )),
            Ok(Some(7))
        );
        assert_eq!(
            explicit_max_tokens(&fields(json!({"max_tokens": 5}))),
            Ok(Some(5))
        );
        assert!(explicit_max_tokens(&fields(json!({"max_tokens": -1}))).is_err());
    }

    #[test]
    fn sse_format() {
        assert_eq!(
            sse_event(&serde_json::json!({"a": 1})),
            b"data: {\"a\":1}\n\n".to_vec()
        );
    }
}

#[cfg(test)]
mod support_matrix {
    use super::*;

    /// What each schema does with each endpoint: `-` passes through, `T` translates, `x` is
    /// refused. Pinned so that a restructuring of `select` cannot change it unnoticed.
    fn matrix() -> String {
        let mut out = String::new();
        for name in ApiSchema::ALL {
            let schema = BackendSchema {
                name,
                version: None,
                prefix: None,
            };
            out.push_str(name.as_str());
            out.push(' ');
            for endpoint in Endpoint::ALL {
                out.push(match select(&schema, endpoint) {
                    Ok(None) => '-',
                    Ok(Some(_)) => 'T',
                    Err(_) => 'x',
                });
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn each_schema_serves_what_it_served() {
        // Endpoints in `Endpoint::ALL` order: chat, completions, embeddings, responses,
        // responses input tokens, tokenize, images, speech, models, Anthropic models, messages,
        // count tokens, transcriptions, translations, rerank.
        let expected = "\
OpenAI ---------xTx--x
Cohere xxxxxxxxxxxxxxT
AWSBedrock TxTxxxxxxxTTxxx
AzureOpenAI -----x---xxx--x
GCPVertexAI TxTxxxxxxxxxxxx
GCPAnthropic TxxxxxxxxxTTxxx
Anthropic TxxxxxxxxxTTxxx
AWSAnthropic TxxxxxxxxxTTxxx
";
        assert_eq!(matrix(), expected);
    }
}
