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

use serde_json::Value;

use crate::translate::TranslateError;

/// A buffered `Converse` response, parsed: an object with `output.message.content` blocks
/// (read with [`output_content`]).
fn converse_response(body: &[u8]) -> Result<Value, TranslateError> {
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
fn output_content(response: &Value) -> &[Value] {
    response
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}
