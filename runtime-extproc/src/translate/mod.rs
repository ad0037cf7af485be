//! Translation between the client's API (OpenAI chat completions today) and each backend
//! schema: one module per provider, pure functions from request to request, response to
//! response and stream chunk to stream chunks, with their tests beside them.
//!
//! A translator never does I/O and never sees credentials: the processor adds those after
//! translation. A request a backend cannot express is a [`TranslateError::Unsupported`], which
//! the client receives as 422 with the reason.

use crate::usage::TokenUsage;

// Provider modules (one line each, in alphabetical order).
pub mod anthropic;
pub mod bedrock;
pub mod eventstream;

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
    fn finish_reasons() {
        assert_eq!(finish_reason("end_turn"), "stop");
        assert_eq!(finish_reason("max_tokens"), "length");
        assert_eq!(finish_reason("tool_use"), "tool_calls");
        assert_eq!(finish_reason("guardrail_intervened"), "content_filter");
    }

    #[test]
    fn sse_format() {
        assert_eq!(
            sse_event(&serde_json::json!({"a": 1})),
            b"data: {\"a\":1}\n\n".to_vec()
        );
    }
}
