//! Cohere rerank (`/cohere/v2/rerank`), served by Cohere's native API: the request goes to
//! `/<version>/rerank` (version `v2` when the backend schema names none) with the model
//! override applied, and the answer passes through unchanged while its token usage
//! (`meta.tokens`) is read for metrics and costs. Error bodies that are JSON pass through; any
//! other error text is wrapped in the OpenAI error shape.

use serde_json::Value;

use super::{
    RequestContext, RequestResult, Required, ResponseContext, ResponseResult, TranslateError,
    Translator, UpstreamRequest, body_fields, openai_error,
};
use crate::usage::{TokenUsage, reported_sum};

/// Rerank requests for a Cohere backend.
#[derive(Debug, Clone)]
pub struct Rerank {
    version: String,
}

impl Rerank {
    /// The translator for a backend whose schema version is `version` (`v2` when empty).
    pub fn new(version: Option<&str>) -> Self {
        let version = version
            .map(|v| v.trim_matches('/'))
            .filter(|v| !v.is_empty())
            .unwrap_or("v2");
        Rerank {
            version: version.to_string(),
        }
    }
}

/// Token usage of a rerank answer: `meta.tokens.input_tokens` / `output_tokens`, falling back
/// to `meta.billed_units`.
fn rerank_usage(response: &Value) -> TokenUsage {
    let meta = response.get("meta");
    let count = |name: &str| {
        meta.and_then(|m| m.pointer(&format!("/tokens/{name}")))
            .or_else(|| meta.and_then(|m| m.pointer(&format!("/billed_units/{name}"))))
            .and_then(Value::as_f64)
            .map(|n| n as u64)
    };
    let input = count("input_tokens");
    let output = count("output_tokens");
    TokenUsage {
        input,
        output,
        total: reported_sum(&[input, output]),
        ..TokenUsage::default()
    }
}

/// What a rerank request must hold.
const RERANK_FIELDS: [Required; 2] = [
    ("query", Value::is_string, "query must be a string"),
    ("documents", Value::is_array, "documents must be an array"),
];

impl Translator for Rerank {
    fn request(&mut self, body: &Value, ctx: &RequestContext<'_>) -> RequestResult {
        let fields = body_fields(body, &RERANK_FIELDS)?;
        let mut out = fields.clone();
        out.insert("model".into(), Value::String(ctx.model.to_string()));
        Ok(UpstreamRequest {
            path: format!("/{}/rerank", self.version),
            body: Value::Object(out).to_string().into_bytes(),
            headers: Vec::new(),
        })
    }

    fn response(&self, body: &[u8], ctx: &ResponseContext<'_>) -> ResponseResult {
        let response: Value = serde_json::from_slice(body).map_err(|err| {
            TranslateError::Upstream(format!("the rerank answer is not JSON: {err}"))
        })?;
        Ok(ctx.translated(body.to_vec(), rerank_usage(&response)))
    }

    fn error(&self, status: u16, body: &[u8], _ctx: &ResponseContext<'_>) -> Vec<u8> {
        if serde_json::from_slice::<Value>(body).is_ok_and(|v| v.is_object()) {
            return body.to_vec();
        }
        let text = String::from_utf8_lossy(body);
        openai_error(status, text.trim(), "CohereBackendError")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> RequestContext<'static> {
        RequestContext {
            model: "rerank-v3.5",
            stream: false,
            headers: &[],
        }
    }

    #[test]
    fn request_goes_to_the_versioned_path_with_the_model() {
        let body =
            json!({"model": "my-reranker", "query": "q", "documents": ["a", "b"], "top_n": 1});
        let out = Rerank::new(None).request(&body, &ctx()).unwrap();
        assert_eq!(out.path, "/v2/rerank");
        let sent: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            sent,
            json!({"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"], "top_n": 1})
        );
        assert_eq!(
            Rerank::new(Some("/v1/"))
                .request(&body, &ctx())
                .unwrap()
                .path,
            "/v1/rerank"
        );
    }

    #[test]
    fn malformed_requests_are_rejected() {
        let mut rerank = Rerank::new(None);
        for body in [
            json!({"documents": ["a"]}),
            json!({"query": "q"}),
            json!({"query": "q", "documents": "a"}),
            json!([1]),
        ] {
            assert!(matches!(
                rerank.request(&body, &ctx()),
                Err(TranslateError::Invalid(_))
            ));
        }
    }

    #[test]
    fn usage_comes_from_meta() {
        let answer = json!({
            "id": "07734bd2",
            "results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}, "tokens": {"input_tokens": 120, "output_tokens": 0}}
        });
        let bytes = answer.to_string().into_bytes();
        let out = Rerank::new(None)
            .response(
                &bytes,
                &ResponseContext {
                    model: "rerank-v3.5",
                    headers: &[],
                },
            )
            .unwrap();
        assert_eq!(out.body, bytes);
        assert_eq!(out.usage.input, Some(120));
        assert_eq!(out.usage.output, Some(0));
        assert_eq!(out.usage.total, Some(120));
        let bare = rerank_usage(&json!({"meta": {"billed_units": {"search_units": 1}}}));
        assert_eq!(bare, TokenUsage::default());
    }

    #[test]
    fn errors_keep_json_and_wrap_text() {
        let ctx = ResponseContext {
            model: "m",
            headers: &[],
        };
        let json_error = br#"{"message":"invalid request: documents must not be empty"}"#;
        assert_eq!(
            Rerank::new(None).error(400, json_error, &ctx),
            json_error.to_vec()
        );
        let wrapped: Value =
            serde_json::from_slice(&Rerank::new(None).error(502, b"bad gateway", &ctx)).unwrap();
        assert_eq!(wrapped["error"]["message"], "bad gateway");
        assert_eq!(wrapped["error"]["code"], "502");
    }

    #[test]
    fn absurd_usage_counts_saturate() {
        let usage = rerank_usage(
            &json!({"meta": {"tokens": {"input_tokens": 1e30, "output_tokens": 1e30}}}),
        );
        assert_eq!(usage.total, Some(u64::MAX));
    }
}
