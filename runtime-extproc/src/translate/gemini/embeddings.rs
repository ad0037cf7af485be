//! OpenAI embedding requests as Vertex AI `embedContent` (Gemini embedding models) or
//! `predict` (text embedding models) requests, and their answers back.

use serde_json::{Map, Value, json};

use crate::translate::{TranslateError, UpstreamRequest, invalid, path_escape, unsupported};
use crate::usage::TokenUsage;

/// Whether `model` is served by `embedContent` (the Gemini embedding family) rather than
/// `predict`.
pub fn uses_embed_content(model: &str) -> bool {
    let name = model.rsplit('/').next().unwrap_or(model);
    name.to_ascii_lowercase().starts_with("gemini-embedding")
}

/// The texts of an embeddings `input`.
pub(super) fn embedding_inputs(input: Option<&Value>) -> Result<Vec<String>, TranslateError> {
    match input {
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) if items.is_empty() => Err(invalid("input must not be empty")),
        Some(Value::Array(items)) => {
            if items.iter().all(Value::is_string) {
                Ok(items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect())
            } else if items.iter().all(|i| i.is_number() || i.is_array()) {
                Err(unsupported(
                    "Vertex AI embeds text, not token arrays: send the input as strings",
                ))
            } else {
                Err(invalid(
                    "input must be a string or a list of strings or token arrays",
                ))
            }
        }
        Some(_) => Err(invalid(
            "input must be a string or a list of strings or token arrays",
        )),
        None => Err(invalid("input is required")),
    }
}

/// Translates an OpenAI embeddings request for `model` into a Vertex AI `embedContent`
/// (Gemini embedding models, one input) or `predict` request. Besides `dimensions`, the
/// extension fields `task_type`, `title` and `auto_truncate` are passed on.
pub fn embeddings_request(request: &Value, model: &str) -> Result<UpstreamRequest, TranslateError> {
    let Some(fields) = request.as_object() else {
        return Err(invalid("the request body must be a JSON object"));
    };
    let inputs = embedding_inputs(fields.get("input"))?;
    match fields.get("encoding_format").filter(|v| !v.is_null()) {
        None => {}
        Some(Value::String(format)) if format == "float" => {}
        Some(Value::String(format)) if format == "base64" => {
            return Err(unsupported(
                "encoding_format base64 is not supported for Vertex AI embeddings; use float",
            ));
        }
        Some(other) => {
            return Err(invalid(format!(
                "encoding_format {other} is not one of float, base64"
            )));
        }
    }
    let dimensions = match fields.get("dimensions").filter(|v| !v.is_null()) {
        None => None,
        Some(value) => Some(
            value
                .as_u64()
                .filter(|d| *d > 0)
                .ok_or_else(|| invalid("dimensions must be a positive integer"))?,
        ),
    };
    let string_field = |name: &str| -> Result<Option<String>, TranslateError> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("{name} must be a string"))),
        }
    };
    let task_type = string_field("task_type")?;
    let title = string_field("title")?;
    let auto_truncate = match fields.get("auto_truncate") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(invalid("auto_truncate must be a boolean")),
    };

    let mut body = Map::new();
    let method = if uses_embed_content(model) {
        let [text] = inputs.as_slice() else {
            return Err(unsupported(format!(
                "{model} embeds one input per request; send one string"
            )));
        };
        body.insert("content".into(), json!({"parts": [{"text": text}]}));
        if let Some(dimensions) = dimensions {
            body.insert("outputDimensionality".into(), json!(dimensions));
        }
        if let Some(task_type) = task_type {
            body.insert("taskType".into(), json!(task_type));
        }
        if let Some(title) = title {
            body.insert("title".into(), json!(title));
        }
        if let Some(auto_truncate) = auto_truncate {
            body.insert("autoTruncate".into(), json!(auto_truncate));
        }
        "embedContent"
    } else {
        let instances: Vec<Value> = inputs
            .iter()
            .map(|text| {
                let mut instance = json!({ "content": text });
                if let Some(task_type) = &task_type {
                    instance["task_type"] = json!(task_type);
                }
                if let Some(title) = &title {
                    instance["title"] = json!(title);
                }
                instance
            })
            .collect();
        body.insert("instances".into(), Value::Array(instances));
        let mut parameters = Map::new();
        if let Some(dimensions) = dimensions {
            parameters.insert("outputDimensionality".into(), json!(dimensions));
        }
        if let Some(auto_truncate) = auto_truncate {
            parameters.insert("autoTruncate".into(), json!(auto_truncate));
        }
        if !parameters.is_empty() {
            body.insert("parameters".into(), Value::Object(parameters));
        }
        "predict"
    };
    Ok(UpstreamRequest {
        path: format!("publishers/google/models/{}:{method}", path_escape(model)),
        body: Value::Object(body).to_string().into_bytes(),
        headers: vec![("content-type".into(), "application/json".into())],
    })
}

pub(super) fn embedding_values(values: Option<&Value>) -> Result<Value, TranslateError> {
    match values {
        Some(Value::Array(list)) if list.iter().all(Value::is_number) => {
            Ok(Value::Array(list.clone()))
        }
        _ => Err(TranslateError::Upstream(
            "Vertex AI embedding has no list of values".into(),
        )),
    }
}

/// A token count Vertex may write as an integer or a float.
pub(super) fn token_count(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// Translates a Vertex AI `predict` or `embedContent` response into an OpenAI embeddings
/// list; `model` is the requested model.
pub fn embeddings_response(
    body: &[u8],
    model: &str,
) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let response: Value = serde_json::from_slice(body).map_err(|err| {
        TranslateError::Upstream(format!("Vertex AI embeddings response is not JSON: {err}"))
    })?;
    let mut data = Vec::new();
    let (tokens, total) = if let Some(predictions) = response.get("predictions") {
        let predictions = predictions.as_array().ok_or_else(|| {
            TranslateError::Upstream("Vertex AI predictions is not a list".into())
        })?;
        let mut tokens: Option<u64> = None;
        for (index, prediction) in predictions.iter().enumerate() {
            let embeddings = prediction.get("embeddings").unwrap_or(&Value::Null);
            let values = embedding_values(embeddings.get("values"))?;
            data.push(json!({"object": "embedding", "index": index, "embedding": values}));
            if let Some(n) = token_count(embeddings.pointer("/statistics/token_count")) {
                tokens = Some(tokens.unwrap_or(0).saturating_add(n));
            }
        }
        (tokens, tokens)
    } else if let Some(embedding) = response.get("embedding") {
        let values = embedding_values(embedding.get("values"))?;
        data.push(json!({"object": "embedding", "index": 0, "embedding": values}));
        let meta = response.get("usageMetadata").unwrap_or(&Value::Null);
        let tokens = token_count(meta.get("promptTokenCount"));
        (tokens, token_count(meta.get("totalTokenCount")).or(tokens))
    } else {
        return Err(TranslateError::Upstream(
            "Vertex AI embeddings response has neither predictions nor embedding".into(),
        ));
    };
    let usage = TokenUsage {
        input: tokens,
        total,
        ..TokenUsage::default()
    };
    let out = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens.unwrap_or(0), "total_tokens": total.unwrap_or(0)},
    });
    Ok((out.to_string().into_bytes(), usage))
}
