//! What the OpenAI chat and Anthropic Messages translators share about `Converse`: the
//! request body and its path, tool specs, the sampling part of `inferenceConfig`, usage, stop
//! reasons, response ids, and the decoding of `ConverseStream` event streams.

use serde_json::{Map, Value, json};

use super::model_request;
use crate::translate::eventstream::{Decoder, Failure, FrameEvents, Message};
use crate::translate::{StreamTranslator, TranslateError, UpstreamRequest, invalid, number_field};
use crate::usage::TokenUsage;

/// The fields of a `Converse` request body, each left out when `None` (`system` also when
/// empty).
#[derive(Debug, Default)]
pub(super) struct ConverseRequest {
    /// `messages`: the turns, roles alternating.
    pub(super) messages: Vec<Value>,
    /// `system`: text (and cache point) blocks.
    pub(super) system: Vec<Value>,
    /// `inferenceConfig`.
    pub(super) inference_config: Option<Value>,
    /// `toolConfig`.
    pub(super) tool_config: Option<Value>,
    /// `additionalModelRequestFields`.
    pub(super) additional_fields: Option<Value>,
}

impl ConverseRequest {
    /// The request body, as Converse names its fields.
    pub(super) fn into_body(self) -> Map<String, Value> {
        let mut body = Map::new();
        body.insert("messages".into(), Value::Array(self.messages));
        if !self.system.is_empty() {
            body.insert("system".into(), Value::Array(self.system));
        }
        let optional = [
            ("inferenceConfig", self.inference_config),
            ("toolConfig", self.tool_config),
            ("additionalModelRequestFields", self.additional_fields),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                body.insert(name.into(), value);
            }
        }
        body
    }

    /// The `Converse` request for `model`, or `ConverseStream` when `stream`.
    pub(super) fn into_upstream(self, model: &str, stream: bool) -> UpstreamRequest {
        let action = if stream {
            "converse-stream"
        } else {
            "converse"
        };
        model_request(model, action, &Value::Object(self.into_body()))
    }
}

/// The fields of a client request (a JSON object) and its `messages` (an array), once
/// `reject` found nothing in them that Converse cannot express.
pub(super) fn client_messages(
    request: &Value,
    reject: fn(&Map<String, Value>) -> Result<(), TranslateError>,
) -> Result<(&Map<String, Value>, &[Value]), TranslateError> {
    let Some(fields) = request.as_object() else {
        return Err(invalid("the request body must be a JSON object"));
    };
    reject(fields)?;
    let messages = fields
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages must be an array"))?;
    Ok((fields, messages))
}

/// Appends blocks as a turn of `role`, merging with the previous turn of the same role.
pub(super) fn push_turn(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    crate::translate::merge_turn(messages, role, "content", blocks);
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

/// A Converse `toolSpec`; a `schema` that is not an object becomes an empty object schema.
pub(super) fn tool_spec(name: &str, description: Option<&str>, schema: Option<&Value>) -> Value {
    let mut spec = Map::new();
    spec.insert("name".into(), json!(name));
    if let Some(description) = description {
        spec.insert("description".into(), json!(description));
    }
    let schema = schema
        .filter(|s| s.is_object())
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    spec.insert("inputSchema".into(), json!({"json": schema}));
    json!({"toolSpec": spec})
}

/// A Converse `toolConfig` of tool specs and an optional `toolChoice`.
pub(super) fn tool_config(specs: Vec<Value>, choice: Option<Value>) -> Value {
    let mut config = Map::new();
    config.insert("tools".into(), Value::Array(specs));
    if let Some(choice) = choice {
        config.insert("toolChoice".into(), choice);
    }
    Value::Object(config)
}

/// The `maxTokens` (from `max_tokens`, the client's field value), `temperature` and `topP` of
/// a Converse `inferenceConfig`; the caller adds its stop sequences.
pub(super) fn sampling_config(
    fields: &Map<String, Value>,
    max_tokens: Option<&Value>,
) -> Result<Map<String, Value>, TranslateError> {
    let mut config = Map::new();
    if let Some(max) = max_tokens {
        let max = max
            .as_u64()
            .ok_or_else(|| invalid("max_tokens must be a positive integer"))?;
        config.insert("maxTokens".into(), json!(max));
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        number_field(fields, from, to, &mut config)?;
    }
    Ok(config)
}

/// A buffered `Converse` response, parsed: an object with `output.message.content` blocks
/// (read with [`output_content`]).
pub(super) fn converse_response(body: &[u8]) -> Result<Value, TranslateError> {
    let response: Value = serde_json::from_slice(body)
        .map_err(|err| TranslateError::Upstream(format!("Converse response is not JSON: {err}")))?;
    if !response
        .pointer("/output/message/content")
        .is_some_and(Value::is_array)
    {
        return Err(TranslateError::Upstream(
            "Converse response without output.message".into(),
        ));
    }
    Ok(response)
}

/// The content blocks of a response [`converse_response`] accepted.
pub(super) fn output_content(response: &Value) -> &[Value] {
    response
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The `usage` object of a Converse response or `metadata` event, if it has one.
pub(super) fn usage_object(value: &Value) -> Option<&Value> {
    value.get("usage").filter(|u| u.is_object())
}

/// The `stopReason` of a Converse response or `messageStop` event (`end_turn` when absent).
pub(super) fn stop_reason(value: &Value) -> &str {
    value
        .get("stopReason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn")
}

/// The role of a `messageStart` event (`assistant` when absent).
pub(super) fn start_role(payload: &Value) -> &str {
    payload
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or("assistant")
}

/// The answer's id: the `x-amzn-requestid`, else `prefix` and a random number.
pub(super) fn response_id(request_id: Option<&str>, prefix: &str) -> String {
    match request_id {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!("{prefix}{:016x}", fastrand::u64(..)),
    }
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

/// How one client API answers the events of a `ConverseStream`.
pub(super) trait ConverseEvents: Send {
    /// The client bytes for an exception the stream carries.
    fn failure(&mut self, failure: &Failure<'_>) -> Vec<u8>;
    /// The client bytes for one event, `kind` its `:event-type`.
    fn event(&mut self, kind: &str, payload: &Value) -> Vec<u8>;
    /// The client bytes that end the stream.
    fn end(&mut self) -> Vec<u8>;
    /// Token usage seen so far.
    fn usage(&self) -> TokenUsage;
    /// The model the answer is reported under.
    fn model(&self) -> &str;
}

/// A `ConverseStream` event stream decoded frame by frame, each event's JSON payload handed
/// to `events`.
#[derive(Debug)]
pub(super) struct ConverseStream<E> {
    decoder: Decoder,
    events: E,
}

impl<E: ConverseEvents> ConverseStream<E> {
    /// A stream whose events go to `events`.
    pub(super) fn of(events: E) -> Self {
        ConverseStream {
            decoder: Decoder::new(),
            events,
        }
    }
}

impl<E: ConverseEvents> FrameEvents for ConverseStream<E> {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    fn on_message(&mut self, message: &Message, out: &mut Vec<u8>) -> Result<(), TranslateError> {
        if let Some(failure) = message.failure() {
            out.extend(self.events.failure(&failure));
            return Ok(());
        }
        let Some(kind) = message.event_type() else {
            return Ok(());
        };
        let payload: Value = serde_json::from_slice(&message.payload).map_err(|err| {
            TranslateError::Upstream(format!("{kind} event payload is not JSON: {err}"))
        })?;
        out.extend(self.events.event(kind, &payload));
        Ok(())
    }
}

impl<E: ConverseEvents> StreamTranslator for ConverseStream<E> {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        self.feed_frames(chunk)
    }

    fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        self.decoder.finish()?;
        Ok(self.events.end())
    }

    fn usage(&self) -> TokenUsage {
        self.events.usage()
    }

    fn model(&self) -> Option<String> {
        Some(self.events.model().to_string())
    }
}
