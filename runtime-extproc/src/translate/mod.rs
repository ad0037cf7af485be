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

/// A request the endpoint does not accept (answered 400).
pub(crate) fn invalid(message: impl Into<String>) -> TranslateError {
    TranslateError::Invalid(message.into())
}

/// A request the backend cannot express (answered 422).
pub(crate) fn unsupported(message: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported(message.into())
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
    fn sse_format() {
        assert_eq!(
            sse_event(&serde_json::json!({"a": 1})),
            b"data: {\"a\":1}\n\n".to_vec()
        );
    }
}
