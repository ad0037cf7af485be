//! Gemini server-sent event streams as OpenAI `chat.completion.chunk` events.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::BACKEND_ERROR;
use super::response::{
    completion_id, count, created, has_counts, map_finish, openai_logprobs, split_parts, tool_call,
    tool_call_id, usage_from,
};
use crate::translate::sse::{SseEvents, SseReader, event_text};
use crate::translate::{SSE_DONE, StreamTranslator, TranslateError, sse_event, usage_chunk};
use crate::usage::TokenUsage;

/// What a stream has sent for one candidate.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ChoiceState {
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

impl SseEvents for ChatStream {
    fn reader(&mut self) -> &mut SseReader {
        &mut self.reader
    }

    fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), TranslateError> {
        self.data(data, out)
    }
}

impl StreamTranslator for ChatStream {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        self.feed_events(chunk)
    }

    fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        let mut out = Vec::new();
        if self.finished {
            return Ok(out);
        }
        self.finished = true;
        self.finish_events(&mut out)?;
        if self.usage_seen {
            let id = self.id();
            out.extend(usage_chunk(&id, self.created, &self.model, &self.usage));
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
