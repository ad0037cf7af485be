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
mod test_support;

pub use chat::OpenAiChat;
pub use count_tokens::CountTokens;
pub use embeddings::OpenAiEmbeddings;
pub use messages::AnthropicMessages;
