//! AWS Bedrock, four client APIs:
//!
//! - OpenAI chat completions ([`OpenAiChat`]): requests to `Converse` / `ConverseStream`,
//!   Converse responses and event streams back to OpenAI `chat.completion` objects and
//!   `chat.completion.chunk` events, and Bedrock errors to the OpenAI error shape.
//! - OpenAI embeddings ([`OpenAiEmbeddings`]): requests to `InvokeModel` for Amazon Titan Text
//!   Embeddings (v1 / G1 and v2) and Cohere Embed (v3 and v4), their answers back to an OpenAI
//!   embedding list, errors to the OpenAI error shape.
//! - The Anthropic Messages API ([`AnthropicMessages`]): requests to `Converse` /
//!   `ConverseStream`, Converse responses to Anthropic `message` objects, ConverseStream event
//!   streams to Anthropic server-sent events, and errors to the Anthropic error shape.
//! - Anthropic token counting ([`CountTokens`]): requests to `CountTokens` with Converse input
//!   built by the same mapping, `{"inputTokens": n}` back as `{"input_tokens": n}`, errors to
//!   the Anthropic error shape.

mod chat;
mod converse;
mod count_tokens;
mod embeddings;
mod messages;
#[cfg(test)]
pub(super) mod test_support;
#[cfg(test)]
mod tests;

pub use chat::OpenAiChat;
pub use count_tokens::CountTokens;
pub use embeddings::OpenAiEmbeddings;
pub use messages::AnthropicMessages;

use serde_json::{Value, json};

use crate::translate::{UpstreamRequest, path_escape};

/// A request to `/model/<model>/<action>` with a JSON body, as every Bedrock API takes.
fn model_request(model: &str, action: &str, body: &Value) -> UpstreamRequest {
    UpstreamRequest {
        path: format!("/model/{}/{action}", path_escape(model)),
        body: body.to_string().into_bytes(),
        headers: vec![("content-type".into(), "application/json".into())],
    }
}

/// Translates a Bedrock error response (`{"message": ...}` with `x-amzn-errortype`) into the
/// OpenAI error shape, keeping the status as `code`.
fn error_response(status: u16, error_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let (is_json, message) = error_message(body);
    let kind = error_type
        .filter(|_| is_json)
        .map(|t| t.split(':').next().unwrap_or(t).trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "AWSBedrockBackendError".to_string());
    json!({"error": {"message": message, "type": kind, "code": status.to_string()}})
        .to_string()
        .into_bytes()
}

/// The message of a Bedrock error body, and whether the body was a JSON object: its
/// `message` (or `Message`), the object itself when it has neither, the raw text otherwise.
fn error_message(body: &[u8]) -> (bool, String) {
    match serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
    {
        Some(value) => {
            let message = value
                .get("message")
                .or_else(|| value.get("Message"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            (true, message)
        }
        None => (false, String::from_utf8_lossy(body).into_owned()),
    }
}
