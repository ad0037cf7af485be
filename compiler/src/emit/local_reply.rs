//! Envoy's own error replies to AI requests in the client's API shape: the HTTP connection
//! manager's `local_reply_config`, one value for both targets. The standalone target writes it
//! into each listener; the Kubernetes target patches it into the listeners Envoy Gateway
//! generates (an EnvoyPatchPolicy, see [`super::routing`]), since Envoy Gateway has no API for
//! local replies (`responseOverride` of a BackendTrafficPolicy rewrites provider answers too).

use aigw_filterconfig::{ERROR_SHAPE_KEY, METADATA_NAMESPACE, SHAPED_REPLY_PREFIX};
use serde_json::{Value, json};

use super::envoy::typed;

/// Envoy's own error replies to AI requests (timeouts, resets, no healthy upstream, bodies
/// over the buffer limit) in the client's API shape, as the extproc answers: OpenAI's, or
/// Anthropic's on the Messages API. The extproc says which in the `error_shape` metadata when a
/// request reaches an AI endpoint, so every other route's replies are left alone; its own
/// answers carry response code details starting with `aigw_` and are left alone too. A response over the buffer limit is
/// the provider's fault: 502, not Envoy's 500.
pub fn config() -> Value {
    // (status, OpenAI type, OpenAI code, Anthropic type).
    const EXACT: [(u32, &str, &str, &str); 6] = [
        (
            408,
            "invalid_request_error",
            "request_timeout",
            "timeout_error",
        ),
        (
            413,
            "invalid_request_error",
            "request_too_large",
            "request_too_large",
        ),
        (429, "rate_limit_error", "rate_limited", "rate_limit_error"),
        (502, "server_error", "bad_gateway", "internal_server_error"),
        (
            503,
            "server_error",
            "upstream_unavailable",
            "service_unavailable_error",
        ),
        (504, "server_error", "upstream_timeout", "timeout_error"),
    ];
    let status = |op: &str, code: u32| json!({"status_code_filter": {"comparison": {"op": op, "value": {"default_value": code, "runtime_key": "aigw.local_reply.status"}}}});
    let body = |anthropic: bool, kind: &str, code: &str, message: &str| {
        let format = if anthropic {
            json!({"type": "error", "error": {"type": kind, "message": message}})
        } else {
            json!({"error": {"type": kind, "code": code, "message": message}})
        };
        json!({"json_format": format, "content_type": "application/json"})
    };
    // The extproc's own answers (from either of its filters) are shaped already.
    let mut mappers = vec![json!({"filter": {"extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": typed(
            "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
            json!({"expression": format!("response.code_details.startsWith('{SHAPED_REPLY_PREFIX}')")}),
        ),
    }}})];
    for (shape, anthropic) in [("anthropic", true), ("openai", false)] {
        let ai = json!({"metadata_filter": {"matcher": {
            "filter": METADATA_NAMESPACE,
            "path": [{"key": ERROR_SHAPE_KEY}],
            "value": {"string_match": {"exact": shape}},
        }}});
        let too_large = json!({"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": typed(
                "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                json!({"expression": "response.code_details == 'response_payload_too_large'"}),
            ),
        }});
        mappers.push(json!({
            "filter": {"and_filter": {"filters": [ai, too_large]}},
            "status_code": 502,
            "body_format_override": body(
                anthropic,
                if anthropic { "internal_server_error" } else { "server_error" },
                "upstream_response_too_large",
                "the provider's answer is larger than the gateway's buffer limit",
            ),
        }));
        for (code, openai_type, openai_code, anthropic_type) in EXACT {
            mappers.push(json!({
                "filter": {"and_filter": {"filters": [ai, status("EQ", code)]}},
                "body_format_override": body(
                    anthropic,
                    if anthropic { anthropic_type } else { openai_type },
                    openai_code,
                    "%LOCAL_REPLY_BODY%",
                ),
            }));
        }
        for (low, high, openai_type, openai_code, anthropic_type) in [
            (
                400,
                499,
                "invalid_request_error",
                "invalid_request",
                "invalid_request_error",
            ),
            (
                500,
                599,
                "server_error",
                "server_error",
                "internal_server_error",
            ),
        ] {
            mappers.push(json!({
                "filter": {"and_filter": {"filters": [ai, status("GE", low), status("LE", high)]}},
                "body_format_override": body(
                    anthropic,
                    if anthropic { anthropic_type } else { openai_type },
                    openai_code,
                    "%LOCAL_REPLY_BODY%",
                ),
            }));
        }
    }
    json!({"mappers": mappers})
}
