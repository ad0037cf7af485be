//! The Anthropic token-counting API served by Bedrock `CountTokens`.

use serde_json::{Map, Value, json};

use super::messages::{messages_error, messages_request};
use crate::translate::{
    PassThrough, RequestContext, ResponseContext, StreamTranslator, TranslateError, Translated,
    Translator, UpstreamRequest, invalid, path_escape,
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

/// The Converse request fields `CountTokens` takes.
const COUNT_TOKENS_CONVERSE_FIELDS: [&str; 4] = [
    "messages",
    "system",
    "toolConfig",
    "additionalModelRequestFields",
];

impl Translator for CountTokens {
    fn request(
        &mut self,
        body: &Value,
        ctx: &RequestContext<'_>,
    ) -> Result<UpstreamRequest, TranslateError> {
        crate::translate::anthropic::count_tokens_fields(body, ctx)?;
        let converse = messages_request(body, ctx.model, false)?;
        let mut converse: Map<String, Value> = serde_json::from_slice(&converse.body)
            .map_err(|err| invalid(format!("the Converse request is not JSON: {err}")))?;
        let mut input = Map::new();
        for name in COUNT_TOKENS_CONVERSE_FIELDS {
            if let Some(value) = converse.remove(name) {
                input.insert(name.into(), value);
            }
        }
        let model = crate::translate::anthropic::bedrock_count_tokens_model(ctx.model);
        Ok(UpstreamRequest {
            path: format!("/model/{}/count-tokens", path_escape(model)),
            body: json!({"input": {"converse": input}})
                .to_string()
                .into_bytes(),
            headers: vec![("content-type".into(), "application/json".into())],
        })
    }

    fn response(
        &self,
        body: &[u8],
        ctx: &ResponseContext<'_>,
    ) -> Result<Translated, TranslateError> {
        let (body, usage) = crate::translate::anthropic::bedrock_count_tokens_response(body)?;
        Ok(ctx.translated(body, usage))
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        messages_error(status, body)
    }

    fn stream(&self, _ctx: &ResponseContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(PassThrough)
    }
}

#[cfg(test)]
mod tests;
