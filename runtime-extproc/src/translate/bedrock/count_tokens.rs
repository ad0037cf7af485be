//! The Anthropic token-counting API served by Bedrock `CountTokens`.

use serde_json::{Value, json};

use super::converse::ConverseRequest;
use super::messages::{messages_converse, messages_error};
use super::model_request;
use crate::translate::{
    RequestContext, RequestResult, ResponseContext, ResponseResult, Translator,
};

// The Anthropic token-counting API served by Bedrock `CountTokens` with Converse input.

/// The Anthropic token-counting API (`/anthropic/v1/messages/count_tokens`) served by Bedrock
/// `CountTokens` (`/model/<model>/count-tokens`) with Converse input:
/// `{"input":{"converse":{"messages", "system", "toolConfig", "additionalModelRequestFields"}}}`
/// built by the same mapping as [`AnthropicMessages`], so a count matches what the Messages API
/// sends through Converse; `inferenceConfig`, which `CountTokens` does not take, is left out.
/// The model loses any cross-region inference prefix
/// ([`crate::translate::anthropic::bedrock_count_tokens_model`]): `CountTokens` takes foundation models.
///
/// Bedrock's `{"inputTokens": n}` goes back as `{"input_tokens": n}`, reported as input usage
/// (as upstream does; nothing is generated). Counting never streams: `stream: true` is refused
/// (400). Errors come back in the Anthropic error shape.
#[derive(Debug, Clone, Copy)]
pub struct CountTokens;

impl Translator for CountTokens {
    fn request(&mut self, body: &Value, ctx: &RequestContext<'_>) -> RequestResult {
        crate::translate::anthropic::count_tokens_fields(body, ctx)?;
        let converse = ConverseRequest {
            // Not taken by `CountTokens`.
            inference_config: None,
            ..messages_converse(body)?
        };
        let model = crate::translate::anthropic::bedrock_count_tokens_model(ctx.model);
        let input = json!({"input": {"converse": converse.into_body()}});
        Ok(model_request(model, "count-tokens", &input))
    }

    fn response(&self, body: &[u8], ctx: &ResponseContext<'_>) -> ResponseResult {
        let (body, usage) = crate::translate::anthropic::bedrock_count_tokens_response(body)?;
        Ok(ctx.translated(body, usage))
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        messages_error(status, body)
    }
}

#[cfg(test)]
mod tests;
