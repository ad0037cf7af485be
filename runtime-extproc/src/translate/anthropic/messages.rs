//! The Anthropic Messages API passed to an Anthropic-family backend: the request for the
//! platform, errors in the Anthropic shape, Anthropic SSE events written, and the streams read
//! for usage (Anthropic's events, Bedrock's binary event stream unwrapped).

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::response::{error_type_for, usage_from};
use super::{
    AWS_DEFAULT_VERSION, AnthropicTarget, required_gcp_version, version_header, version_or,
};
use crate::translate::eventstream::{Decoder, FrameEvents, Message};
use crate::translate::sse::SseReader;
use crate::translate::{
    RequestContext, Required, StreamTranslator, TranslateError, UpstreamRequest, body_fields,
};
use crate::usage::TokenUsage;

/// A Messages API request for `target`: the client's body with the model from `ctx`, plus
/// what the platform needs (`anthropic_version`, `anthropic_beta`, no `model` in the body for
/// GCP and AWS, no `stream` for AWS, whose path says it).
pub fn messages_request(
    body: &Value,
    ctx: &RequestContext<'_>,
    target: &AnthropicTarget,
) -> Result<UpstreamRequest, TranslateError> {
    let mut fields = messages_fields(body)?.clone();
    let model = ctx.model;
    let mut headers = Vec::new();
    match target {
        AnthropicTarget::Anthropic { .. } => {
            fields.insert("model".into(), json!(model));
            headers.push(version_header(ctx));
        }
        AnthropicTarget::GcpAnthropic { version } => {
            let version = required_gcp_version(version)?;
            fields.remove("model");
            fields.insert("anthropic_version".into(), json!(version));
        }
        AnthropicTarget::AwsAnthropic { version } => {
            fields.remove("model");
            fields.remove("stream");
            let version = version_or(version, AWS_DEFAULT_VERSION);
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
        }
    };
    Ok(UpstreamRequest {
        path: target.messages_path(model, ctx.stream),
        body: Value::Object(fields).to_string().into_bytes(),
        headers,
    })
}

/// What a Messages request must hold.
const MESSAGES_FIELDS: [Required; 2] = [
    ("model", Value::is_string, "model must be a string"),
    ("messages", Value::is_array, "messages must be a list"),
];

/// The fields of a Messages request: a JSON object with a string `model` and a `messages`
/// list.
pub(super) fn messages_fields(body: &Value) -> Result<&Map<String, Value>, TranslateError> {
    body_fields(body, &MESSAGES_FIELDS)
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
pub(super) fn anthropic_error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// Formats one Anthropic server-sent event: `event: <type>` (when the JSON has a `type`) and
/// `data: <json>`. `json` must be one line.
pub(super) fn anthropic_sse(kind: Option<&str>, json: &[u8]) -> Vec<u8> {
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
pub(super) struct EventUsage {
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

impl FrameEvents for BedrockMessagesStream {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    fn on_message(&mut self, message: &Message, out: &mut Vec<u8>) -> Result<(), TranslateError> {
        self.frame(message, out)
    }
}

impl StreamTranslator for BedrockMessagesStream {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        self.feed_frames(chunk)
    }

    fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        self.decoder.finish()?;
        Ok(Vec::new())
    }

    fn usage(&self) -> TokenUsage {
        self.seen.usage
    }

    fn model(&self) -> Option<String> {
        self.seen.model.clone()
    }
}
