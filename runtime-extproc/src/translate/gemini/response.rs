//! Gemini `generateContent` responses as OpenAI `chat.completion` objects, and Google error
//! bodies in the OpenAI error shape.

use serde_json::{Value, json};

use super::BACKEND_ERROR;
use crate::time::rfc3339_unix_seconds;
use crate::translate::{TranslateError, finish_reason};
use crate::usage::TokenUsage;

pub(super) fn count(value: &Value, key: &str) -> Option<u64> {
    value.get(key).and_then(Value::as_u64)
}

/// Whether a `usageMetadata` carries any token count (early stream events carry none).
pub(super) fn has_counts(meta: &Value) -> bool {
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
pub(super) fn usage_from(meta: &Value) -> TokenUsage {
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
pub(super) fn map_finish(reason: Option<&str>, has_calls: bool) -> Option<&'static str> {
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
pub(super) fn openai_logprobs(result: &Value) -> Value {
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
pub(super) fn completion_id(response: &Value) -> String {
    match response.get("responseId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!("chatcmpl-{:016x}", fastrand::u64(..)),
    }
}

/// The id of a tool call Gemini gave none: unique per completion, choice and call.
pub(super) fn tool_call_id(completion: &str, choice: u64, call: usize) -> String {
    format!("call_{completion}_{choice}_{call}")
}

/// An OpenAI tool call from a `functionCall` part.
pub(super) fn tool_call(part: &Value, call: &Value, id: String) -> Value {
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
pub(super) struct PartsText {
    pub(super) text: Option<String>,
    pub(super) reasoning: Option<String>,
    /// (the part, its `functionCall`).
    pub(super) calls: Vec<(Value, Value)>,
}

pub(super) fn split_parts(candidate: &Value) -> PartsText {
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

pub(super) fn created(response: &Value) -> u64 {
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
