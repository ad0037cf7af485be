//! Anthropic token counting on Anthropic, Vertex AI (`count-tokens`) and Bedrock
//! (`CountTokens`): the request and the answer as `{"input_tokens": n}`.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::messages::{messages_fields, messages_request};
use super::{
    AnthropicTarget, DEFAULT_MAX_TOKENS, api_prefix, required_gcp_version, version_header,
};
use crate::translate::{RequestContext, TranslateError, UpstreamRequest, invalid, path_escape};
use crate::usage::TokenUsage;

/// The fields of a count_tokens request: a JSON object with a string `model` and a
/// `messages` list, not asking to stream (by its body or `ctx`).
pub(in crate::translate) fn count_tokens_fields<'a>(
    body: &'a Value,
    ctx: &RequestContext<'_>,
) -> Result<&'a Map<String, Value>, TranslateError> {
    let fields = messages_fields(body)?;
    if ctx.stream || fields.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(invalid(
            "count_tokens does not stream: stream must be false or absent",
        ));
    }
    Ok(fields)
}

/// The model id Bedrock `CountTokens` takes for `model`: a foundation model, so a
/// cross-region inference profile (`us.anthropic.…`, `global.anthropic.…`, or its ARN) is
/// counted for the model it serves, as upstream does. Other ids are kept.
pub fn bedrock_count_tokens_model(model: &str) -> &str {
    match model.find("anthropic.") {
        Some(at) if at > 0 => &model[at..],
        _ => model,
    }
}

/// A Bedrock `CountTokens` answer (`{"inputTokens": n}`) as the Anthropic answer
/// `{"input_tokens": n}`, with `n` as input usage.
pub fn bedrock_count_tokens_response(body: &[u8]) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let count = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("inputTokens").and_then(Value::as_u64))
        .ok_or_else(|| {
            TranslateError::Upstream(
                "the Bedrock CountTokens answer has no inputTokens count".into(),
            )
        })?;
    let usage = TokenUsage {
        input: Some(count),
        ..TokenUsage::default()
    };
    Ok((
        json!({ "input_tokens": count }).to_string().into_bytes(),
        usage,
    ))
}

/// A count_tokens request for `target` (see [`CountTokens`]).
pub fn count_tokens_request(
    body: &Value,
    ctx: &RequestContext<'_>,
    target: &AnthropicTarget,
) -> Result<UpstreamRequest, TranslateError> {
    let mut fields = count_tokens_fields(body, ctx)?.clone();
    fields.remove("stream");
    let model = ctx.model;
    match target {
        AnthropicTarget::Anthropic { prefix } => {
            fields.insert("model".into(), json!(model));
            Ok(UpstreamRequest {
                path: format!("/{}/messages/count_tokens", api_prefix(prefix)),
                body: Value::Object(fields).to_string().into_bytes(),
                headers: vec![version_header(ctx)],
            })
        }
        AnthropicTarget::GcpAnthropic { version } => {
            let version = required_gcp_version(version)?;
            // Vertex AI counts for explicit versions only, not for the version aliases.
            let model = model
                .strip_suffix("@default")
                .or_else(|| model.strip_suffix("@latest"))
                .unwrap_or(model);
            fields.insert("model".into(), json!(model));
            fields.insert("anthropic_version".into(), json!(version));
            Ok(UpstreamRequest {
                path: "publishers/anthropic/models/count-tokens:rawPredict".into(),
                body: Value::Object(fields).to_string().into_bytes(),
                headers: Vec::new(),
            })
        }
        AnthropicTarget::AwsAnthropic { .. } => {
            if fields.get("max_tokens").is_none_or(Value::is_null) {
                let budget = fields
                    .get("thinking")
                    .and_then(|t| t.get("budget_tokens"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let max_tokens = if budget >= DEFAULT_MAX_TOKENS {
                    budget.saturating_add(DEFAULT_MAX_TOKENS)
                } else {
                    DEFAULT_MAX_TOKENS
                };
                fields.insert("max_tokens".into(), json!(max_tokens));
            }
            // The InvokeModel body Messages would send (version, betas, no model or stream).
            let invoke = RequestContext {
                stream: false,
                ..*ctx
            };
            let invoke = messages_request(&Value::Object(fields), &invoke, target)?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(&invoke.body);
            Ok(UpstreamRequest {
                path: format!(
                    "/model/{}/count-tokens",
                    path_escape(bedrock_count_tokens_model(model))
                ),
                body: json!({"input": {"invokeModel": {"body": encoded}}})
                    .to_string()
                    .into_bytes(),
                headers: vec![("content-type".into(), "application/json".into())],
            })
        }
    }
}
