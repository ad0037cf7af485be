//! OpenAI embeddings served by Bedrock `InvokeModel`.

use serde_json::{Map, Value, json};

use super::{error_response, model_request};
use crate::translate::{
    RequestContext, RequestResult, ResponseContext, ResponseResult, TranslateError, Translator,
    UpstreamRequest, invalid, unsupported,
};
use crate::usage::TokenUsage;

// OpenAI embeddings served by Bedrock `InvokeModel`.

/// The most texts Cohere Embed takes in one call.
const COHERE_MAX_TEXTS: usize = 96;

/// OpenAI `/v1/embeddings` served by Bedrock `InvokeModel` (`/model/<model>/invoke`) for
/// Amazon Titan Text Embeddings (`amazon.titan-embed-text-v1`, `amazon.titan-embed-g1-text-*`,
/// `amazon.titan-embed-text-v2*`) and Cohere Embed (`cohere.embed-*`). The family is read from
/// the model id, which may carry a region prefix (`us.`), a version suffix (`:0`) or an ARN.
///
/// - Titan takes one text: a list of several strings is answered 422. `dimensions` goes to
///   Titan v2 (256, 512 or 1024; v1 takes none); `normalize` keeps Bedrock's default (true).
/// - Cohere takes up to 96 texts with `input_type` `search_document`, or the request's
///   `input_type` extension field. `dimensions` becomes `output_dimension` on Embed v4 and is
///   answered 422 on earlier versions.
/// - Token-id inputs are answered 422. `encoding_format: base64` reaches this translator only
///   through [`crate::translate::Base64Embeddings`], which asks for floats and encodes the answer.
/// - Usage comes from Titan's `inputTextTokenCount`, else from the
///   `x-amzn-bedrock-input-token-count` response header. When neither is present the body
///   carries zero counts (the OpenAI shape requires `usage`) but no usage is reported for
///   metrics and costs.
#[derive(Debug, Clone, Copy)]
pub struct OpenAiEmbeddings;

impl Translator for OpenAiEmbeddings {
    fn request(&mut self, body: &Value, ctx: &RequestContext<'_>) -> RequestResult {
        embeddings_request(body, ctx.model)
    }

    fn response(&self, body: &[u8], ctx: &ResponseContext<'_>) -> ResponseResult {
        let (body, usage) = embeddings_response(
            body,
            ctx.model,
            ctx.header("x-amzn-bedrock-input-token-count"),
        )?;
        Ok(ctx.translated(body, usage))
    }

    fn error(&self, status: u16, body: &[u8], ctx: &ResponseContext<'_>) -> Vec<u8> {
        error_response(status, ctx.header("x-amzn-errortype"), body)
    }
}

/// Bedrock embedding model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmbedFamily {
    /// Titan Text Embeddings v1 / G1: `inputText` only.
    TitanV1,
    /// Titan Text Embeddings v2: `inputText` and `dimensions`.
    TitanV2,
    /// Cohere Embed before v4: `texts` and `input_type`.
    Cohere,
    /// Cohere Embed v4: as before, plus `output_dimension`.
    CohereV4,
}

/// How an embedding family takes `dimensions`.
#[derive(Debug)]
struct Dimensions {
    /// The request field.
    field: &'static str,
    /// The sizes the family has.
    sizes: &'static [u64],
    /// Those sizes, in words.
    offered: &'static str,
}

impl EmbedFamily {
    /// How the family takes `dimensions`, or why it takes none.
    fn dimensions(self) -> Result<Dimensions, &'static str> {
        match self {
            EmbedFamily::TitanV1 => Err("Amazon Titan Text Embeddings v1 does not take dimensions"),
            EmbedFamily::TitanV2 => Ok(Dimensions {
                field: "dimensions",
                sizes: &[256, 512, 1024],
                offered: "Amazon Titan Text Embeddings v2 has 256, 512 or 1024 dimensions",
            }),
            EmbedFamily::Cohere => {
                Err("dimensions are only supported by Cohere Embed v4 among Cohere models")
            }
            EmbedFamily::CohereV4 => Ok(Dimensions {
                field: "output_dimension",
                sizes: &[256, 512, 1024, 1536],
                offered: "Cohere Embed v4 has 256, 512, 1024 or 1536 dimensions",
            }),
        }
    }
}

/// The family of a model id such as `amazon.titan-embed-text-v2:0`,
/// `us.cohere.embed-v4:0` or a foundation-model ARN.
fn embed_family(model: &str) -> Option<EmbedFamily> {
    let id = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    let id = if id.starts_with("amazon.") || id.starts_with("cohere.") {
        id.as_str()
    } else {
        // A cross-region inference profile: `us.`, `eu.`, `apac.`, `global.` ...
        id.split_once('.').map_or("", |(_, rest)| rest)
    };
    if id.starts_with("amazon.titan-embed-text-v2") {
        Some(EmbedFamily::TitanV2)
    } else if id.starts_with("amazon.titan-embed-text-v1")
        || id.starts_with("amazon.titan-embed-g1-text")
    {
        Some(EmbedFamily::TitanV1)
    } else if id.starts_with("cohere.embed-v4") {
        Some(EmbedFamily::CohereV4)
    } else if id.starts_with("cohere.embed-") {
        Some(EmbedFamily::Cohere)
    } else {
        None
    }
}

/// The texts of an OpenAI embeddings `input`.
fn embedding_texts(input: Option<&Value>) -> Result<Vec<String>, TranslateError> {
    let token_ids = |item: &Value| {
        item.is_u64()
            || item
                .as_array()
                .is_some_and(|ids| !ids.is_empty() && ids.iter().all(Value::is_u64))
    };
    match input {
        None | Some(Value::Null) => Err(invalid("input is required")),
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) if items.is_empty() => Err(invalid("input must not be empty")),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Ok(items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()),
        Some(Value::Array(items)) if items.iter().all(token_ids) => Err(unsupported(
            "AWS Bedrock embedding models take text: token-id inputs are not supported",
        )),
        Some(_) => Err(invalid(
            "input must be a string, an array of strings or an array of token ids",
        )),
    }
}

/// Translates an OpenAI embeddings request into a Bedrock `InvokeModel` request for `model`.
fn embeddings_request(request: &Value, model: &str) -> Result<UpstreamRequest, TranslateError> {
    let Some(fields) = request.as_object() else {
        return Err(invalid("the request body must be a JSON object"));
    };
    let texts = embedding_texts(fields.get("input"))?;
    match fields.get("encoding_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(format)) if format == "float" => {}
        Some(Value::String(format)) if format == "base64" => {
            return Err(unsupported(
                "encoding_format base64 is not supported for AWS Bedrock embeddings; use float",
            ));
        }
        Some(_) => return Err(invalid("encoding_format must be float or base64")),
    }
    let dimensions = match fields.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .ok_or_else(|| invalid("dimensions must be a positive integer"))?,
        ),
    };
    let Some(family) = embed_family(model) else {
        return Err(unsupported(format!(
            "model {model} is not a supported AWS Bedrock embedding model: supported are \
             Amazon Titan Text Embeddings (amazon.titan-embed-text-v1, \
             amazon.titan-embed-g1-text, amazon.titan-embed-text-v2) and Cohere Embed \
             (cohere.embed-*)"
        )));
    };
    let mut body = Map::new();
    match family {
        EmbedFamily::TitanV1 | EmbedFamily::TitanV2 => {
            let [text] = texts.as_slice() else {
                return Err(unsupported(format!(
                    "Amazon Titan embeds one text per request, got {}",
                    texts.len()
                )));
            };
            body.insert("inputText".into(), json!(text));
        }
        EmbedFamily::Cohere | EmbedFamily::CohereV4 => {
            if texts.len() > COHERE_MAX_TEXTS {
                return Err(unsupported(format!(
                    "Cohere Embed takes at most {COHERE_MAX_TEXTS} texts per request, got {}",
                    texts.len()
                )));
            }
            let input_type = match fields.get("input_type") {
                None | Some(Value::Null) => "search_document",
                Some(Value::String(kind)) => kind.as_str(),
                Some(_) => return Err(invalid("input_type must be a string")),
            };
            body.insert("texts".into(), json!(texts));
            body.insert("input_type".into(), json!(input_type));
        }
    }
    if let Some(n) = dimensions {
        let dimensions = family.dimensions().map_err(unsupported)?;
        if !dimensions.sizes.contains(&n) {
            return Err(unsupported(format!("{}, not {n}", dimensions.offered)));
        }
        body.insert(dimensions.field.into(), json!(n));
    }
    Ok(model_request(model, "invoke", &Value::Object(body)))
}

/// Translates a Titan or Cohere `InvokeModel` answer into an OpenAI embedding list;
/// `token_count` is the `x-amzn-bedrock-input-token-count` response header.
fn embeddings_response(
    body: &[u8],
    model: &str,
    token_count: Option<&str>,
) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let upstream = |message: &str| TranslateError::Upstream(message.to_string());
    let response: Value = serde_json::from_slice(body)
        .map_err(|err| TranslateError::Upstream(format!("embedding answer is not JSON: {err}")))?;
    let single = response
        .get("embedding")
        .or_else(|| response.pointer("/embeddingsByType/float"))
        .filter(|v| v.is_array());
    let vectors: Vec<Value> = match (single, response.get("embeddings")) {
        // Titan: one vector.
        (Some(vector), _) => vec![vector.clone()],
        // Cohere: `embeddings_floats` answers a list, `embeddings_by_type` an object.
        (None, Some(Value::Array(list))) => list.clone(),
        (None, Some(by_type @ Value::Object(_))) => by_type
            .get("float")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| upstream("Cohere embeddings without float vectors"))?,
        _ => return Err(upstream("embedding answer without embedding or embeddings")),
    };
    if !vectors.iter().all(Value::is_array) {
        return Err(upstream("an embedding is not a list of numbers"));
    }
    let tokens = response
        .get("inputTextTokenCount")
        .and_then(Value::as_u64)
        .or_else(|| token_count.and_then(|n| n.trim().parse::<u64>().ok()));
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| json!({"object": "embedding", "index": index, "embedding": embedding}))
        .collect();
    let out = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens.unwrap_or(0), "total_tokens": tokens.unwrap_or(0)},
    });
    let usage = TokenUsage {
        input: tokens,
        total: tokens,
        ..TokenUsage::default()
    };
    Ok((out.to_string().into_bytes(), usage))
}

#[cfg(test)]
mod tests;
