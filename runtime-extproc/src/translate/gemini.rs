//! GCP Vertex AI Gemini: OpenAI chat completion requests to `generateContent` /
//! `streamGenerateContent?alt=sse` requests, Gemini responses and server-sent event streams
//! back to OpenAI `chat.completion` objects and `chat.completion.chunk` events, OpenAI
//! embedding requests to `embedContent` (Gemini embedding models) or `predict` (text embedding
//! models) and back, and Google error bodies to the OpenAI error shape.
//!
//! Request paths are relative (`publishers/google/models/<model>:<method>`): the GCP
//! credentials prefix them with `/v1/projects/<project>/locations/<region>/`.
//!
//! Function parameter and response JSON schemas are sent as the OpenAPI subset every Gemini
//! model on Vertex AI accepts (`parameters` / `responseSchema`): upper-case types, `nullable`
//! instead of `null` types, local `$ref`s inlined, keywords Gemini does not know dropped.
//!
//! Thought signatures of function calls travel to the client as
//! `tool_calls[].extra_content.google.thought_signature` and back again; for Gemini 3 models,
//! which reject function calls without one, a call the client sends without a signature gets
//! Google's documented placeholder.

use serde_json::Value;

use super::{
    RequestContext, RequestResult, ResponseContext, ResponseResult, StreamTranslator, Translator,
};

/// How deep a JSON schema may nest (after inlining `$ref`s) before it is refused.
const MAX_SCHEMA_DEPTH: usize = 32;
/// How much the definitions a schema's `$ref`s inline may add up to, as a multiple of the
/// schema's own size: `$ref`s to definitions that hold several `$ref`s each would otherwise
/// grow exponentially with the nesting depth.
const MAX_SCHEMA_GROWTH: usize = 32;
/// Error `type` when Google's body names no status.
const BACKEND_ERROR: &str = "GCPVertexAIBackendError";
/// The thought signature Google documents for function calls Gemini did not produce.
const PLACEHOLDER_SIGNATURE: &str = "skip_thought_signature_validator";

mod embeddings;
mod request;
mod response;
mod schema;
mod stream;

use self::embeddings::{embeddings_request, embeddings_response};
use self::request::chat_request;
use self::response::{chat_response, error_response};
use self::stream::ChatStream;

/// OpenAI chat completions served by Gemini `generateContent` / `streamGenerateContent`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAiChat;

impl Translator for OpenAiChat {
    fn request(&mut self, body: &Value, ctx: &RequestContext<'_>) -> RequestResult {
        chat_request(body, ctx.model, ctx.stream)
    }

    fn response(&self, body: &[u8], ctx: &ResponseContext<'_>) -> ResponseResult {
        let (body, usage) = chat_response(body, ctx.model)?;
        Ok(ctx.translated(body, usage))
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        error_response(status, body)
    }

    fn stream(&self, ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(ChatStream::new(ctx.model))
    }
}

/// OpenAI embeddings served by Vertex AI: `embedContent` for the Gemini embedding models
/// (`gemini-embedding*`), `predict` for the others (`text-embedding-*`,
/// `text-multilingual-embedding-*`, ...).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAiEmbeddings;

impl Translator for OpenAiEmbeddings {
    fn request(&mut self, body: &Value, ctx: &RequestContext<'_>) -> RequestResult {
        embeddings_request(body, ctx.model)
    }

    fn response(&self, body: &[u8], ctx: &ResponseContext<'_>) -> ResponseResult {
        let (body, usage) = embeddings_response(body, ctx.model)?;
        Ok(ctx.translated(body, usage))
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        error_response(status, body)
    }
}

#[cfg(test)]
mod tests;
