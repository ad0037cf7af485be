//! OpenAI chat completions to and from the Anthropic Messages API, as served by Anthropic
//! itself, by GCP Vertex AI (`rawPredict`) and by AWS Bedrock (`invoke`): the request body and
//! path, the buffered response, the server-sent event stream, and error bodies.
//!
//! Also the Anthropic Messages API itself (`/anthropic/v1/messages`) passed to those backends
//! ([`Messages`]): the client's body with the platform's path and version fields, responses
//! and Anthropic event streams forwarded unchanged while read for usage, Bedrock's binary event
//! stream unwrapped into Anthropic events, and errors in the Anthropic error shape.
//!
//! And Anthropic's token counting (`/anthropic/v1/messages/count_tokens`) on those backends
//! ([`CountTokens`]): Anthropic's own endpoint, Vertex AI's `count-tokens` virtual model and
//! Bedrock `CountTokens` with the InvokeModel body, answered as `{"input_tokens": n}`.
//!
//! Anthropic reports no creation time, so translated responses carry `"created": 0` rather than
//! a time the provider never stated; the completion `id` is the Anthropic message id.

use serde_json::Value;

use super::{
    RequestContext, RequestResult, ResponseContext, ResponseResult, StreamTranslator,
    TranslateError, Translated, Translator, path_escape,
};
use crate::usage::TokenUsage;

/// `anthropic-version` header sent to Anthropic's own API.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// `anthropic_version` body field for GCP Vertex AI when none is configured.
pub const GCP_DEFAULT_VERSION: &str = "vertex-2023-10-16";
/// `anthropic_version` body field for AWS Bedrock when none is configured.
pub const AWS_DEFAULT_VERSION: &str = "bedrock-2023-05-31";
/// `max_tokens` when the client sets none (Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// The smallest thinking budget Anthropic accepts.
const MIN_THINKING_BUDGET: u64 = 1024;

mod count_tokens;
mod messages;
mod request;
mod response;

pub(super) use self::count_tokens::count_tokens_fields;
use self::count_tokens::count_tokens_request;
pub use self::count_tokens::{bedrock_count_tokens_model, bedrock_count_tokens_response};
use self::messages::{BedrockMessagesStream, MessagesPassThrough, messages_request};
pub use self::messages::{messages_error, messages_sse_event};
use self::request::chat_request;
pub use self::response::error_type_for;
use self::response::{ChatStream, chat_response, error_response, usage_from};

/// Where the Anthropic Messages request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnthropicTarget {
    /// Anthropic's API: `/<prefix>/messages` (prefix `v1` when empty).
    Anthropic {
        /// Path prefix, with or without slashes.
        prefix: String,
    },
    /// Claude on GCP Vertex AI: `publishers/anthropic/models/<model>:rawPredict`, relative to
    /// the project and location the GCP credentials add.
    GcpAnthropic {
        /// `anthropic_version` body field (`vertex-2023-10-16` when empty).
        version: String,
    },
    /// Claude on AWS Bedrock: `/model/<model>/invoke`.
    AwsAnthropic {
        /// `anthropic_version` body field (`bedrock-2023-05-31` when empty).
        version: String,
    },
}

impl AnthropicTarget {
    /// The upstream path of a Messages request for `model`, streamed or not.
    fn messages_path(&self, model: &str, stream: bool) -> String {
        match self {
            AnthropicTarget::Anthropic { prefix } => format!("/{}/messages", api_prefix(prefix)),
            AnthropicTarget::GcpAnthropic { .. } => {
                let method = if stream {
                    "streamRawPredict"
                } else {
                    "rawPredict"
                };
                format!(
                    "publishers/anthropic/models/{}:{method}",
                    path_escape(model)
                )
            }
            AnthropicTarget::AwsAnthropic { .. } => {
                let action = if stream {
                    "invoke-with-response-stream"
                } else {
                    "invoke"
                };
                format!("/model/{}/{action}", path_escape(model))
            }
        }
    }
}

/// The path prefix of Anthropic's own API: the configured one without slashes, `v1` when
/// empty.
fn api_prefix(prefix: &str) -> &str {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() { "v1" } else { prefix }
}

/// The configured `anthropic_version`, or `default` when none is.
fn version_or<'a>(version: &'a str, default: &'a str) -> &'a str {
    if version.is_empty() { default } else { version }
}

/// The configured `anthropic_version` that Vertex AI requires for requests passed in the
/// Anthropic API itself: none is refused (422).
fn required_gcp_version(version: &str) -> Result<&str, TranslateError> {
    if version.is_empty() {
        return Err(super::unsupported(
            "the AIServiceBackend schema version must be set for GCPAnthropic: it is the \
             anthropic_version Vertex AI requires (for example vertex-2023-10-16)",
        ));
    }
    Ok(version)
}

/// The `anthropic-version` header for Anthropic's own API: the client's, else
/// [`ANTHROPIC_VERSION`].
fn version_header(ctx: &RequestContext<'_>) -> (String, String) {
    let version = ctx
        .header("anthropic-version")
        .filter(|v| !v.trim().is_empty())
        .unwrap_or(ANTHROPIC_VERSION);
    ("anthropic-version".to_string(), version.to_string())
}

/// The type of an Anthropic server tool (web search, code execution, ...) in a Messages
/// request's `tools`; `None` for a client tool (no type, or `custom`).
pub(crate) fn server_tool_type(tool: &Value) -> Option<&str> {
    tool.get("type")
        .and_then(Value::as_str)
        .filter(|kind| *kind != "custom")
}

/// OpenAI chat completions served by the Anthropic Messages backend it holds (Anthropic, GCP
/// Vertex AI or AWS Bedrock).
#[derive(Debug, Clone)]
pub struct OpenAiChat(pub AnthropicTarget);

impl Translator for OpenAiChat {
    fn request(&mut self, body: &Value, ctx: &RequestContext<'_>) -> RequestResult {
        chat_request(body, ctx.model, &self.0)
    }

    fn response(&self, body: &[u8], ctx: &ResponseContext<'_>) -> ResponseResult {
        let (body, usage) = chat_response(body, ctx.model)?;
        let model = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("model").and_then(Value::as_str).map(str::to_string));
        Ok(Translated { body, usage, model })
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        error_response(status, body)
    }

    fn stream(&self, ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        match self.0 {
            // Bedrock wraps each Anthropic event in an event-stream frame.
            AnthropicTarget::AwsAnthropic { .. } => Box::new(Chained {
                first: BedrockMessagesStream::default(),
                second: ChatStream::new(ctx.model),
            }),
            _ => Box::new(ChatStream::new(ctx.model)),
        }
    }
}

/// Two stream translators in a row: the output of `first` is the input of `second`; usage and
/// model are what `second` saw.
#[derive(Debug)]
struct Chained<A, B> {
    first: A,
    second: B,
}

impl<A: StreamTranslator, B: StreamTranslator> StreamTranslator for Chained<A, B> {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        let middle = self.first.feed(chunk)?;
        if middle.is_empty() {
            return Ok(Vec::new());
        }
        self.second.feed(&middle)
    }

    fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        let middle = self.first.finish()?;
        let mut out = self.second.feed(&middle)?;
        out.extend(self.second.finish()?);
        Ok(out)
    }

    fn usage(&self) -> TokenUsage {
        self.second.usage()
    }

    fn model(&self) -> Option<String> {
        self.second.model()
    }
}

/// The Anthropic Messages API (`/anthropic/v1/messages`) passed to the Anthropic-family backend
/// it holds (Anthropic, GCP Vertex AI or AWS Bedrock): the body keeps the client's fields, only
/// the model, path and version fields change; responses pass through and are read for usage.
#[derive(Debug, Clone)]
pub struct Messages(pub AnthropicTarget);

impl Translator for Messages {
    fn request(&mut self, body: &Value, ctx: &RequestContext<'_>) -> RequestResult {
        messages_request(body, ctx, &self.0)
    }

    fn response(&self, body: &[u8], ctx: &ResponseContext<'_>) -> ResponseResult {
        // Passed on as it is, but a Messages answer is a JSON object: anything else is a fault.
        let Some(parsed) = serde_json::from_slice::<Value>(body)
            .ok()
            .filter(Value::is_object)
        else {
            return Err(TranslateError::Upstream(
                "the provider's answer is not a JSON object".to_string(),
            ));
        };
        let usage = parsed
            .get("usage")
            .filter(|u| u.is_object())
            .map(|u| usage_from(u, &TokenUsage::default()))
            .unwrap_or_default();
        let model = parsed
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(ctx.model)
            .to_string();
        Ok(Translated {
            body: body.to_vec(),
            usage,
            model: Some(model),
        })
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        messages_error(status, body)
    }

    fn stream(&self, _ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        match self.0 {
            AnthropicTarget::AwsAnthropic { .. } => Box::new(BedrockMessagesStream::default()),
            _ => Box::new(MessagesPassThrough::default()),
        }
    }
}

#[cfg(test)]
mod tests;

/// The Anthropic token-counting API (`/anthropic/v1/messages/count_tokens`) passed to the
/// Anthropic-family backend it holds. The request is a Messages request without the `max_tokens`
/// requirement; the answer is `{"input_tokens": n}`.
///
/// - Anthropic: `/<prefix>/messages/count_tokens`, the client's body with the model, and the
///   `anthropic-version` header as for [`Messages`].
/// - GCP Vertex AI: the virtual model `count-tokens`
///   (`publishers/anthropic/models/count-tokens:rawPredict`) with the model named in the body
///   (without an `@default` or `@latest` alias, which Vertex AI does not count for) and the
///   configured `anthropic_version`, required as for [`Messages`].
/// - AWS Bedrock: `CountTokens` (`/model/<model>/count-tokens`, the model without a
///   cross-region inference prefix, see [`bedrock_count_tokens_model`]) with
///   `{"input":{"invokeModel":{"body":"<base64>"}}}`, the body being what [`Messages`] would
///   send to `InvokeModel`. InvokeModel requires `max_tokens`: when the client sets none it is
///   [`DEFAULT_MAX_TOKENS`], or that much above a larger thinking budget (it does not change
///   the count). Bedrock's `{"inputTokens": n}` goes back as `{"input_tokens": n}`.
///
/// Counting never streams: `stream: true` is refused (400). The counted tokens are reported
/// as input usage, as upstream does; nothing is generated, so there is no output or total.
/// Errors come back in the Anthropic error shape ([`messages_error`]).
#[derive(Debug, Clone)]
pub struct CountTokens(pub AnthropicTarget);

impl Translator for CountTokens {
    fn request(&mut self, body: &Value, ctx: &RequestContext<'_>) -> RequestResult {
        count_tokens_request(body, ctx, &self.0)
    }

    fn response(&self, body: &[u8], ctx: &ResponseContext<'_>) -> ResponseResult {
        let (body, usage) = match self.0 {
            AnthropicTarget::AwsAnthropic { .. } => bedrock_count_tokens_response(body)?,
            // Anthropic's own answer: passed on as it is, read for the count.
            _ => {
                let input = serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|v| v.get("input_tokens").and_then(Value::as_u64));
                (
                    body.to_vec(),
                    TokenUsage {
                        input,
                        ..TokenUsage::default()
                    },
                )
            }
        };
        Ok(ctx.translated(body, usage))
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        messages_error(status, body)
    }
}
