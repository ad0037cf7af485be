use super::*;
use std::collections::BTreeMap;
use std::sync::Arc;

use aigw_filterconfig::{
    ApiSchema, ERROR_SHAPE_KEY, METADATA_NAMESPACE, MODEL_HEADER, SELECTED_BACKEND_HEADER,
};
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, Metadata};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    CommonResponse, HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse, body_mutation,
    processing_request, processing_response,
};
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use serde_json::{Value, json};

use crate::config::{Backend, RuntimeConfig, Secret};
use crate::endpoint::Endpoint;
use crate::metrics::Metrics;
use crate::redact::scrub;

use super::metadata::*;
use super::request::*;
use crate::auth::{Auth, BackendCredential};
use crate::config::{Cost, Matcher, Route, Rule};
use aigw_filterconfig as fc;
use envoy_types::pb::envoy::config::core::v3::HeaderMap;

fn backend(name: &str, override_model: Option<&str>) -> Arc<Backend> {
    Arc::new(Backend {
        spec: fc::Backend {
            name: format!("ns/{name}/route/ns/r/rule/0/ref/0"),
            service_backend: format!("ns/{name}"),
            schema: fc::BackendSchema {
                name: ApiSchema::OpenAI,
                version: None,
                prefix: Some("v1".into()),
            },
            model_name_override: override_model.map(str::to_string),
            upstream_host: None,
            auth: None,
            header_mutation: Some(fc::HeaderMutation {
                set: vec![fc::HeaderValue {
                    name: "x-team".into(),
                    value: "ml".into(),
                }],
                remove: vec!["x-drop".into()],
            }),
            body_mutation: None,
        },
        auth: Some(BackendCredential {
            auth: Auth::Header {
                name: "authorization",
                prefix: "Bearer ",
                value: Secret::new("sk-secret"),
            },
            override_from: None,
        }),
    })
}

fn config(costs: bool) -> Arc<RuntimeConfig> {
    let route = Route {
        name: "ns/r".into(),
        hostnames: vec![],
        rules: vec![Rule {
            cluster: None,
            authority: None,
            matches: vec![vec![(
                "x-ai-eg-model".into(),
                Matcher::Exact("gpt-4o".into()),
            )]],
            backends: vec![(backend("openai", Some("gpt-4o-2024")), 1, 0)],
        }],
        costs: if costs {
            vec![Cost {
                key: "tokens".into(),
                kind: fc::CostType::TotalToken,
                program: None,
                service_backend: None,
                model: None,
            }]
        } else {
            vec![]
        },
        models: vec![fc::Model {
            id: "gpt-4o".into(),
            owned_by: "me".into(),
            created: 1_735_689_600,
        }],
    };
    Arc::new(RuntimeConfig {
        max_request_body_bytes: 1024,
        routes: vec![route],
        global_costs: vec![],
        files: vec![],
        has_costs: costs,
        known_models: Default::default(),
        index: Default::default(),
        localities: Default::default(),
    })
}

fn headers(pairs: &[(&str, &str)], end_of_stream: bool) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(processing_request::Request::RequestHeaders(HttpHeaders {
            headers: Some(HeaderMap {
                headers: pairs
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: k.to_string(),
                        value: String::new(),
                        raw_value: v.as_bytes().to_vec(),
                    })
                    .collect(),
            }),
            end_of_stream,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn response_headers(pairs: &[(&str, &str)]) -> ProcessingRequest {
    let mut request = headers(pairs, false);
    if let Some(processing_request::Request::RequestHeaders(h)) = request.request.take() {
        request.request = Some(processing_request::Request::ResponseHeaders(h));
    }
    request
}

fn body(bytes: &[u8], response: bool) -> ProcessingRequest {
    let body = HttpBody {
        body: bytes.to_vec(),
        end_of_stream: true,
        ..Default::default()
    };
    ProcessingRequest {
        request: Some(if response {
            processing_request::Request::ResponseBody(body)
        } else {
            processing_request::Request::RequestBody(body)
        }),
        ..Default::default()
    }
}

fn chunk(bytes: &[u8], end: bool) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(processing_request::Request::ResponseBody(HttpBody {
            body: bytes.to_vec(),
            end_of_stream: end,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn immediate_of(response: &ProcessingResponse) -> Option<(i32, Value)> {
    match &response.response {
        Some(processing_response::Response::ImmediateResponse(r)) => Some((
            r.status.as_ref().map_or(0, |s| s.code),
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )),
        _ => None,
    }
}

fn common_of(response: &ProcessingResponse) -> &CommonResponse {
    match &response.response {
        Some(processing_response::Response::RequestBody(b))
        | Some(processing_response::Response::ResponseBody(b)) => b.response.as_ref().unwrap(),
        Some(processing_response::Response::RequestHeaders(h))
        | Some(processing_response::Response::ResponseHeaders(h)) => h.response.as_ref().unwrap(),
        other => panic!("unexpected response {other:?}"),
    }
}

fn set_headers(common: &CommonResponse) -> BTreeMap<String, String> {
    common
        .header_mutation
        .as_ref()
        .map(|m| {
            m.set_headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| {
                    (
                        h.key.clone(),
                        String::from_utf8_lossy(&h.raw_value).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn metadata(response: &ProcessingResponse) -> BTreeMap<String, PbValue> {
    let Some(outer) = &response.dynamic_metadata else {
        return BTreeMap::new();
    };
    match outer
        .fields
        .get(METADATA_NAMESPACE)
        .and_then(|v| v.kind.as_ref())
    {
        Some(Kind::StructValue(inner)) => inner.fields.clone().into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

fn chat_headers() -> ProcessingRequest {
    headers(
        &[
            (":path", "/v1/chat/completions"),
            (":method", "POST"),
            (":authority", "gw.example:8080"),
            ("x-drop", "1"),
            ("accept-encoding", "gzip, br"),
        ],
        false,
    )
}

#[test]
fn routes_translates_and_authenticates_a_chat_request() {
    let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
    let r = p.handle(chat_headers());
    assert!(immediate_of(&r).is_none());
    let r = p.handle(body(br#"{"model":"gpt-4o","messages":[]}"#, false));
    let common = common_of(&r);
    assert!(common.clear_route_cache);
    let set = set_headers(common);
    assert_eq!(set.get("x-ai-eg-model").map(String::as_str), Some("gpt-4o"));
    assert_eq!(
        set.get("x-ai-eg-selected-backend").map(String::as_str),
        Some("ns/openai/route/ns/r/rule/0/ref/0")
    );
    assert_eq!(
        set.get("authorization").map(String::as_str),
        Some("Bearer sk-secret")
    );
    assert_eq!(set.get("x-team").map(String::as_str), Some("ml"));
    assert!(
        !set.contains_key(":path"),
        "the path is already /v1/chat/completions"
    );
    assert_eq!(
        common.header_mutation.as_ref().unwrap().remove_headers,
        vec!["accept-encoding".to_string(), "x-drop".to_string()]
    );
    let Some(body_mutation::Mutation::Body(bytes)) = common
        .body_mutation
        .as_ref()
        .and_then(|m| m.mutation.clone())
    else {
        panic!("model override rewrites the body")
    };
    let sent: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(sent["model"], "gpt-4o-2024");
    assert_eq!(set.get("content-length"), Some(&bytes.len().to_string()));
    let meta = metadata(&r);
    assert_eq!(
        meta.get("model_name_override"),
        Some(&string_value("gpt-4o-2024"))
    );
}

#[test]
fn buffered_response_yields_costs_in_metadata() {
    let mut p = Processor::new(config(true), Arc::new(Metrics::new()));
    p.handle(chat_headers());
    p.handle(body(br#"{"model":"gpt-4o","messages":[]}"#, false));
    p.handle(response_headers(&[
        (":status", "200"),
        ("content-type", "application/json"),
    ]));
    let r = p.handle(body(br#"{"model":"gpt-4o-2024-08","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#, true));
    let meta = metadata(&r);
    assert_eq!(meta.get("tokens"), Some(&number_value(7.0)));
    assert_eq!(
        meta.get("response_model"),
        Some(&string_value("gpt-4o-2024-08"))
    );
    assert!(
        common_of(&r).body_mutation.is_none(),
        "successful responses pass through untouched"
    );
}

#[test]
fn streams_switch_to_streamed_mode_and_force_usage_when_costs_exist() {
    let mut p = Processor::new(config(true), Arc::new(Metrics::new()));
    p.handle(chat_headers());
    let r = p.handle(body(br#"{"model":"gpt-4o","stream":true}"#, false));
    let Some(body_mutation::Mutation::Body(bytes)) = common_of(&r)
        .body_mutation
        .as_ref()
        .and_then(|m| m.mutation.clone())
    else {
        panic!("usage must be requested")
    };
    let sent: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let r = p.handle(response_headers(&[
        (":status", "200"),
        ("content-type", "text/event-stream"),
    ]));
    assert_eq!(
        r.mode_override.as_ref().map(|m| m.response_body_mode),
        Some(BodySendMode::Streamed as i32)
    );
    let r = p.handle(chunk(
        b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[],\"us",
        false,
    ));
    assert!(r.dynamic_metadata.is_none());
    assert!(
        common_of(&r).body_mutation.is_none(),
        "chunks pass through untouched"
    );
    let r = p.handle(chunk(b"age\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\ndata: [DONE]\n\n", true));
    let meta = metadata(&r);
    assert_eq!(meta.get("tokens"), Some(&number_value(3.0)));
    assert!(meta.contains_key("token_latency_ttft"));
}

/// The openai SDK closes the connection at `[DONE]`, often before the provider's stream ends:
/// the costs must be in the metadata of the chunk that reported the usage, since Envoy charges
/// the rate limits from the metadata it has when the stream ends.
#[test]
fn a_stream_carries_its_costs_from_the_chunk_that_reports_the_usage() {
    let mut p = Processor::new(config(true), Arc::new(Metrics::new()));
    p.handle(chat_headers());
    p.handle(body(br#"{"model":"gpt-4o","stream":true}"#, false));
    p.handle(response_headers(&[
        (":status", "200"),
        ("content-type", "text/event-stream"),
    ]));
    let r = p.handle(chunk(
        b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
        false,
    ));
    assert!(r.dynamic_metadata.is_none(), "no usage yet");
    let r = p.handle(chunk(
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\ndata: [DONE]\n\n",
        false,
    ));
    assert_eq!(metadata(&r).get("tokens"), Some(&number_value(3.0)));
    // Nothing new: no metadata again; the end of the stream still reports everything.
    let r = p.handle(chunk(b"", false));
    assert!(r.dynamic_metadata.is_none());
    let r = p.handle(chunk(b"", true));
    assert_eq!(metadata(&r).get("tokens"), Some(&number_value(3.0)));
}

#[test]
fn client_mistakes_get_openai_errors() {
    let cases: Vec<(Vec<ProcessingRequest>, i32, &str)> = vec![
        (
            vec![headers(
                &[(":path", "/v2/unknown"), (":method", "POST")],
                false,
            )],
            404,
            "unsupported_path",
        ),
        (
            vec![chat_headers(), body(b"{not json", false)],
            400,
            "invalid_json",
        ),
        (
            vec![chat_headers(), body(br#"{"messages":[]}"#, false)],
            400,
            "missing_model",
        ),
        (
            vec![chat_headers(), body(br#"{"model":"nope"}"#, false)],
            404,
            "model_not_found",
        ),
        (
            vec![chat_headers(), body(&vec![b' '; 2048], false)],
            413,
            "request_too_large",
        ),
        (
            vec![headers(
                &[(":path", "/v1/chat/completions"), (":method", "GET")],
                true,
            )],
            405,
            "method_not_allowed",
        ),
    ];
    for (messages, status, code) in cases {
        let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
        let mut last = ProcessingResponse::default();
        for m in messages {
            last = p.handle(m);
        }
        let (got, body) = immediate_of(&last).unwrap_or_else(|| panic!("expected {status} {code}"));
        assert_eq!(got, status, "{code}");
        assert_eq!(body["error"]["code"], code);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

#[test]
fn models_are_listed_without_routing() {
    let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
    let r = p.handle(headers(
        &[(":path", "/v1/models"), (":method", "GET")],
        true,
    ));
    let (status, body) = immediate_of(&r).unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"object": "list", "data": [{"id": "gpt-4o", "object": "model", "created": 1_735_689_600, "owned_by": "me"}]})
    );
    let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
    let r = p.handle(headers(
        &[(":path", "/anthropic/v1/models"), (":method", "GET")],
        true,
    ));
    let (_, body) = immediate_of(&r).unwrap();
    assert_eq!(body["data"][0]["created_at"], "2025-01-01T00:00:00Z");
}

#[test]
fn upstream_errors_reach_the_client_in_the_openai_shape() {
    let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
    p.handle(chat_headers());
    p.handle(body(br#"{"model":"gpt-4o"}"#, false));
    p.handle(response_headers(&[
        (":status", "503"),
        ("content-type", "text/plain"),
    ]));
    let r = p.handle(body(b"upstream overloaded", true));
    let Some(body_mutation::Mutation::Body(bytes)) = common_of(&r)
        .body_mutation
        .as_ref()
        .and_then(|m| m.mutation.clone())
    else {
        panic!("non-JSON errors are wrapped")
    };
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(error["error"]["message"], "upstream overloaded");
    assert_eq!(error["error"]["code"], "503");
    // JSON errors pass through as the provider sent them.
    let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
    p.handle(chat_headers());
    p.handle(body(br#"{"model":"gpt-4o"}"#, false));
    p.handle(response_headers(&[(":status", "429")]));
    let r = p.handle(body(br#"{"error":{"message":"slow down"}}"#, true));
    assert!(common_of(&r).body_mutation.is_none());
}

#[test]
fn secrets_never_reach_metrics_or_debug_output() {
    let metrics = Arc::new(Metrics::new());
    let mut p = Processor::new(config(true), metrics.clone());
    p.handle(chat_headers());
    p.handle(body(br#"{"model":"gpt-4o"}"#, false));
    p.handle(response_headers(&[(":status", "200")]));
    p.handle(body(
        br#"{"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
        true,
    ));
    assert!(!metrics.encode().contains("sk-secret"));
    assert!(!format!("{:?}", p.config).contains("sk-secret"));
}

#[test]
fn azure_openai_uses_the_deployment_path_and_api_version() {
    let schema = |name, version: Option<&str>, prefix: Option<&str>| fc::BackendSchema {
        name,
        version: version.map(str::to_string),
        prefix: prefix.map(str::to_string),
    };
    assert_eq!(
        upstream_path(
            &schema(ApiSchema::AzureOpenAI, Some("2025-01-01-preview"), None),
            Endpoint::ChatCompletions,
            "gpt-4o"
        ),
        "/openai/deployments/gpt-4o/chat/completions?api-version=2025-01-01-preview"
    );
    assert_eq!(
        upstream_path(
            &schema(ApiSchema::AzureOpenAI, Some("v"), None),
            Endpoint::Embeddings,
            "emb"
        ),
        "/openai/deployments/emb/embeddings?api-version=v"
    );
    assert_eq!(
        upstream_path(
            &schema(ApiSchema::OpenAI, None, Some("/openai/v1/")),
            Endpoint::ChatCompletions,
            "m"
        ),
        "/openai/v1/chat/completions"
    );
    assert_eq!(
        upstream_path(
            &schema(ApiSchema::OpenAI, None, Some("")),
            Endpoint::Embeddings,
            "m"
        ),
        "/embeddings"
    );
}

fn anthropic_config() -> Arc<RuntimeConfig> {
    let backend = Arc::new(Backend {
        spec: fc::Backend {
            name: "ns/claude/route/ns/r/rule/0/ref/0".into(),
            service_backend: "ns/claude".into(),
            schema: fc::BackendSchema {
                name: ApiSchema::Anthropic,
                version: None,
                prefix: Some("v1".into()),
            },
            model_name_override: Some("claude-sonnet-4-5".into()),
            upstream_host: None,
            auth: None,
            header_mutation: None,
            body_mutation: None,
        },
        auth: Some(BackendCredential {
            auth: Auth::Header {
                name: "x-api-key",
                prefix: "",
                value: Secret::new("anthropic-secret"),
            },
            override_from: None,
        }),
    });
    let route = Route {
        name: "ns/r".into(),
        hostnames: vec![],
        rules: vec![Rule {
            cluster: None,
            authority: None,
            matches: vec![],
            backends: vec![(backend, 1, 0)],
        }],
        costs: vec![Cost {
            key: "tokens".into(),
            kind: fc::CostType::TotalToken,
            program: None,
            service_backend: None,
            model: None,
        }],
        models: vec![],
    };
    Arc::new(RuntimeConfig {
        max_request_body_bytes: 1 << 20,
        routes: vec![route],
        global_costs: vec![],
        files: vec![],
        has_costs: true,
        known_models: Default::default(),
        index: Default::default(),
        localities: Default::default(),
    })
}

#[test]
fn anthropic_backends_get_messages_requests_and_openai_responses() {
    let mut p = Processor::new(anthropic_config(), Arc::new(Metrics::new()));
    p.handle(headers(
        &[
            (":path", "/v1/chat/completions"),
            (":method", "POST"),
            ("authorization", "Bearer client-key"),
        ],
        false,
    ));
    let r = p.handle(body(br#"{"model":"claude","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#, false));
    let common = common_of(&r);
    assert_eq!(
        common.header_mutation.as_ref().unwrap().remove_headers,
        vec!["authorization".to_string()],
        "the client's key must not reach the provider"
    );
    let set = set_headers(common);
    assert_eq!(set.get(":path").map(String::as_str), Some("/v1/messages"));
    assert_eq!(
        set.get("x-api-key").map(String::as_str),
        Some("anthropic-secret")
    );
    assert_eq!(
        set.get("anthropic-version").map(String::as_str),
        Some("2023-06-01")
    );
    let Some(body_mutation::Mutation::Body(bytes)) = common
        .body_mutation
        .as_ref()
        .and_then(|m| m.mutation.clone())
    else {
        panic!("translated body expected")
    };
    let sent: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(sent["system"], "be brief");
    assert!(sent.get("stream_options").is_none());
    p.handle(response_headers(&[
        (":status", "200"),
        ("content-type", "application/json"),
    ]));
    let r = p.handle(body(
        br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello!"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":2}}"#,
        true,
    ));
    let Some(body_mutation::Mutation::Body(bytes)) = common_of(&r)
        .body_mutation
        .as_ref()
        .and_then(|m| m.mutation.clone())
    else {
        panic!("translated response expected")
    };
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello!");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(metadata(&r).get("tokens"), Some(&number_value(7.0)));
}

#[test]
fn anthropic_streams_are_translated_chunk_by_chunk() {
    let mut p = Processor::new(anthropic_config(), Arc::new(Metrics::new()));
    p.handle(chat_headers());
    p.handle(body(
        br#"{"model":"claude","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        false,
    ));
    let r = p.handle(response_headers(&[
        (":status", "200"),
        ("content-type", "text/event-stream"),
    ]));
    assert_eq!(
        r.mode_override.as_ref().map(|m| m.response_body_mode),
        Some(BodySendMode::Streamed as i32)
    );
    let events = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"usage\":{\"input_tokens\":4,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let (first, second) = events.as_bytes().split_at(200);
    let mut out = Vec::new();
    for (piece, end) in [(first, false), (second, true)] {
        let r = p.handle(chunk(piece, end));
        if let Some(body_mutation::Mutation::Body(bytes)) = common_of(&r)
            .body_mutation
            .as_ref()
            .and_then(|m| m.mutation.clone())
        {
            out.extend(bytes);
        }
        if end {
            assert_eq!(metadata(&r).get("tokens"), Some(&number_value(7.0)));
        }
    }
    let text = String::from_utf8(out).unwrap();
    let content: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| *l != "[DONE]")
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    assert_eq!(content, "Hello");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

/// One route, one rule, one backend of `schema` with `auth`.
fn single_backend(
    schema: ApiSchema,
    version: Option<&str>,
    upstream_host: Option<&str>,
    auth: Option<BackendCredential>,
) -> Arc<RuntimeConfig> {
    let backend = Arc::new(Backend {
        spec: fc::Backend {
            name: "ns/cloud/route/ns/r/rule/0/ref/0".into(),
            service_backend: "ns/cloud".into(),
            schema: fc::BackendSchema {
                name: schema,
                version: version.map(str::to_string),
                prefix: None,
            },
            model_name_override: None,
            upstream_host: upstream_host.map(str::to_string),
            auth: None,
            header_mutation: None,
            body_mutation: None,
        },
        auth,
    });
    one_rule(
        Rule {
            cluster: None,
            authority: None,
            matches: vec![],
            backends: vec![(backend, 1, 0)],
        },
        Default::default(),
    )
}

/// Route `ns/r` with one rule and a total-token cost; bodies up to 1 MiB.
fn one_rule(
    rule: Rule,
    localities: std::collections::HashMap<String, (usize, Arc<Backend>)>,
) -> Arc<RuntimeConfig> {
    Arc::new(RuntimeConfig {
        max_request_body_bytes: 1 << 20,
        routes: vec![Route {
            name: "ns/r".into(),
            hostnames: vec![],
            rules: vec![rule],
            costs: vec![Cost {
                key: "tokens".into(),
                kind: fc::CostType::TotalToken,
                program: None,
                service_backend: None,
                model: None,
            }],
            models: vec![],
        }],
        global_costs: vec![],
        files: vec![],
        has_costs: true,
        known_models: Default::default(),
        index: Default::default(),
        localities,
    })
}

fn body_of(response: &ProcessingResponse) -> Vec<u8> {
    match common_of(response)
        .body_mutation
        .as_ref()
        .and_then(|m| m.mutation.clone())
    {
        Some(body_mutation::Mutation::Body(bytes)) => bytes,
        other => panic!("body expected, got {other:?}"),
    }
}

fn aws_signer() -> Arc<crate::auth::aws::Signer> {
    // One folder per call: tests run in parallel.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("aigw-processor-aws-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("credentials");
    std::fs::write(
        &file,
        "[default]\naws_access_key_id = AKIDPROCESSORTEST\naws_secret_access_key = processor-secret-key\n",
    )
    .unwrap();
    Arc::new(
        crate::auth::aws::Signer::from_config("eu-west-1", Some(&file), None, None, &dir).unwrap(),
    )
}

#[test]
fn bedrock_requests_are_converse_calls_signed_for_the_upstream_host() {
    let auth = BackendCredential {
        auth: Auth::Aws(aws_signer()),
        override_from: None,
    };
    let config = single_backend(
        ApiSchema::AWSBedrock,
        None,
        Some("bedrock-runtime.us-west-2.amazonaws.com"),
        Some(auth),
    );
    let mut p = Processor::new(config, Arc::new(Metrics::new()));
    p.handle(headers(
        &[
            (":path", "/v1/chat/completions"),
            (":method", "POST"),
            (":authority", "gw.example"),
            ("authorization", "Bearer client-key"),
        ],
        false,
    ));
    let r = p.handle(body(
        br#"{"model":"anthropic.claude-3-haiku-20240307-v1:0","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        false,
    ));
    let common = common_of(&r);
    let set = set_headers(common);
    assert_eq!(
        set.get(":path").map(String::as_str),
        Some("/model/anthropic.claude-3-haiku-20240307-v1:0/converse-stream")
    );
    let authorization = set.get("authorization").unwrap();
    // The region comes from the host the request is signed for, not the configured one.
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDPROCESSORTEST/")
            && authorization.contains("/us-west-2/bedrock/aws4_request")
            && authorization.contains("SignedHeaders=host;x-amz-date,"),
        "{authorization}"
    );
    assert!(set.contains_key("x-amz-date"));
    assert!(!authorization.contains("processor-secret-key"));
    let sent: Value = serde_json::from_slice(&body_of(&r)).unwrap();
    assert_eq!(sent["messages"][0]["content"][0]["text"], "hi");

    // The binary event stream comes back as OpenAI chunks.
    let r = p.handle(response_headers(&[
        (":status", "200"),
        ("content-type", "application/vnd.amazon.eventstream"),
        ("x-amzn-requestid", "req-1"),
    ]));
    assert_eq!(
        r.mode_override.as_ref().map(|m| m.response_body_mode),
        Some(BodySendMode::Streamed as i32)
    );
    assert_eq!(
        set_headers(common_of(&r))
            .get("content-type")
            .map(String::as_str),
        Some("text/event-stream")
    );
    let frame = |event: &str, payload: &str| {
        crate::translate::eventstream::encode(
            &[
                (":event-type", event),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    };
    let mut stream = Vec::new();
    stream.extend(frame("messageStart", r#"{"role":"assistant"}"#));
    stream.extend(frame(
        "contentBlockDelta",
        r#"{"contentBlockIndex":0,"delta":{"text":"Hello"}}"#,
    ));
    stream.extend(frame("messageStop", r#"{"stopReason":"end_turn"}"#));
    stream.extend(frame(
        "metadata",
        r#"{"usage":{"inputTokens":3,"outputTokens":1,"totalTokens":4},"metrics":{"latencyMs":10}}"#,
    ));
    let (first, second) = stream.split_at(stream.len() / 2 + 3);
    let mut out = body_of(&p.handle(chunk(first, false)));
    let last = p.handle(chunk(second, true));
    out.extend(body_of(&last));
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(r#""content":"Hello""#), "{text}");
    assert!(text.contains(r#""id":"req-1""#), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(metadata(&last).get("tokens"), Some(&number_value(4.0)));
}

#[test]
fn vertex_requests_get_the_project_path_and_the_token() {
    let auth = BackendCredential {
        auth: Auth::Gcp {
            token: crate::auth::refresh::Refreshing::fixed("gcp", Secret::new("ya29.test-token")),
            project: "acme-ml".into(),
            region: "us-central1".into(),
        },
        override_from: None,
    };
    let config = single_backend(ApiSchema::GCPVertexAI, None, None, Some(auth));
    let mut p = Processor::new(config, Arc::new(Metrics::new()));
    p.handle(chat_headers());
    let r = p.handle(body(
        br#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}]}"#,
        false,
    ));
    let set = set_headers(common_of(&r));
    assert_eq!(
        set.get(":path").map(String::as_str),
        Some(
            "/v1/projects/acme-ml/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
        )
    );
    assert_eq!(
        set.get("authorization").map(String::as_str),
        Some("Bearer ya29.test-token")
    );
    p.handle(response_headers(&[
        (":status", "200"),
        ("content-type", "application/json"),
    ]));
    let r = p.handle(body(
        br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hi!"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":3,"totalTokenCount":5}}"#,
        true,
    ));
    let answer: Value = serde_json::from_slice(&body_of(&r)).unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Hi!");
    assert_eq!(answer["usage"]["total_tokens"], 5);
    assert_eq!(metadata(&r).get("tokens"), Some(&number_value(5.0)));
}

#[test]
fn vertex_without_gcp_credentials_is_a_clear_500() {
    let config = single_backend(ApiSchema::GCPVertexAI, None, None, None);
    let mut p = Processor::new(config, Arc::new(Metrics::new()));
    p.handle(chat_headers());
    let r = p.handle(body(
        br#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}]}"#,
        false,
    ));
    let (status, error) = immediate_of(&r).unwrap();
    assert_eq!(status, 500);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("GCPCredentials"),
        "{error}"
    );
}

#[test]
fn a_credential_not_yet_fetched_is_a_503_naming_it() {
    struct Never;
    impl crate::auth::refresh::Fetch for Never {
        type Output = Secret;
        fn fetch(&self) -> crate::auth::refresh::FetchFuture<'_, Secret> {
            Box::pin(async { Err("the identity provider refused the client (401)".to_string()) })
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let token = runtime.block_on(async {
        let token = crate::auth::refresh::Refreshing::start("Entra ID token", Never).unwrap();
        token.ready(std::time::Duration::from_secs(2)).await;
        token
    });
    let auth = BackendCredential {
        auth: Auth::Bearer(token),
        override_from: None,
    };
    let config = single_backend(ApiSchema::AzureOpenAI, Some("2025-01-01"), None, Some(auth));
    let mut p = Processor::new(config, Arc::new(Metrics::new()));
    p.handle(chat_headers());
    let r = p.handle(body(
        br#"{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}"#,
        false,
    ));
    let (status, error) = immediate_of(&r).unwrap();
    assert_eq!(status, 503);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("Entra ID token"), "{message}");
    assert!(message.contains("refused the client (401)"), "{message}");
}

#[test]
fn the_messages_api_answers_errors_in_the_anthropic_shape() {
    let config = single_backend(ApiSchema::Anthropic, None, None, None);
    let mut p = Processor::new(config, Arc::new(Metrics::new()));
    p.handle(headers(
        &[(":path", "/anthropic/v1/messages"), (":method", "POST")],
        false,
    ));
    let r = p.handle(body(br#"{"messages":[]}"#, false));
    let (status, error) = immediate_of(&r).unwrap();
    assert_eq!(status, 400);
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("model")
    );
}

#[test]
fn the_messages_api_reaches_bedrock_as_converse() {
    let auth = BackendCredential {
        auth: Auth::Aws(aws_signer()),
        override_from: None,
    };
    let config = single_backend(ApiSchema::AWSBedrock, None, None, Some(auth));
    let mut p = Processor::new(config, Arc::new(Metrics::new()));
    p.handle(headers(
        &[
            (":path", "/anthropic/v1/messages"),
            (":method", "POST"),
            (":authority", "127.0.0.1:10080"),
        ],
        false,
    ));
    let r = p.handle(body(
        br#"{"model":"amazon.nova-pro-v1:0","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#,
        false,
    ));
    let set = set_headers(common_of(&r));
    assert_eq!(
        set.get(":path").map(String::as_str),
        Some("/model/amazon.nova-pro-v1:0/converse")
    );
    // No Backend hostname: signed for the client's authority (which Envoy forwards) and the
    // configured region.
    assert!(set["authorization"].contains("/eu-west-1/bedrock/aws4_request"));
    p.handle(response_headers(&[
        (":status", "200"),
        ("content-type", "application/json"),
        ("x-amzn-requestid", "req-9"),
    ]));
    let r = p.handle(body(
        br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hello"}]}},"stopReason":"end_turn","usage":{"inputTokens":4,"outputTokens":2,"totalTokens":6}}"#,
        true,
    ));
    let answer: Value = serde_json::from_slice(&body_of(&r)).unwrap();
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["content"][0]["text"], "Hello");
    assert_eq!(answer["stop_reason"], "end_turn");
    assert_eq!(metadata(&r).get("tokens"), Some(&number_value(6.0)));
}

#[test]
fn a_provider_echoing_the_credential_never_shows_it_to_the_client() {
    // JSON error (passed through, scrubbed), plain-text error (wrapped, scrubbed), and a
    // translated provider's error.
    let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
    p.handle(chat_headers());
    p.handle(body(br#"{"model":"gpt-4o"}"#, false));
    p.handle(response_headers(&[(":status", "401")]));
    let r = p.handle(body(
        br#"{"error":{"message":"Incorrect API key provided: sk-secret. Check it."}}"#,
        true,
    ));
    let text = String::from_utf8(body_of(&r)).unwrap();
    assert!(!text.contains("sk-secret"), "{text}");
    assert!(text.contains("Incorrect API key provided: <redacted>. Check it."));

    let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
    p.handle(chat_headers());
    p.handle(body(br#"{"model":"gpt-4o"}"#, false));
    p.handle(response_headers(&[(":status", "403")]));
    let r = p.handle(body(b"key sk-secret is not allowed", true));
    let text = String::from_utf8(body_of(&r)).unwrap();
    assert!(!text.contains("sk-secret"), "{text}");

    let mut p = Processor::new(anthropic_config(), Arc::new(Metrics::new()));
    p.handle(chat_headers());
    p.handle(body(
        br#"{"model":"claude","messages":[{"role":"user","content":"hi"}]}"#,
        false,
    ));
    p.handle(response_headers(&[(":status", "401")]));
    let r = p.handle(body(
        br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key anthropic-secret"}}"#,
        true,
    ));
    let text = String::from_utf8(body_of(&r)).unwrap();
    assert!(!text.contains("anthropic-secret"), "{text}");
    assert!(text.contains("authentication_error"), "{text}");
}

#[test]
fn error_messages_never_repeat_the_query_string() {
    let path = "/v1/chat/completions?key=query-secret-key";
    let cases: Vec<Vec<ProcessingRequest>> = vec![
        vec![headers(&[(":path", path), (":method", "GET")], true)],
        vec![headers(
            &[
                (":path", path),
                (":method", "POST"),
                ("content-type", "multipart/form-data; boundary=x"),
            ],
            false,
        )],
        vec![
            headers(&[(":path", path), (":method", "POST")], false),
            body(b"{not json", false),
        ],
    ];
    for messages in cases {
        let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
        let mut last = ProcessingResponse::default();
        for m in messages {
            last = p.handle(m);
        }
        let (status, body) = immediate_of(&last).expect("answered by the extproc");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!((400..500).contains(&status), "{status} {message}");
        assert!(message.contains("/v1/chat/completions"), "{message}");
        assert!(!message.contains("query-secret-key"), "{message}");
    }
}

fn transcription_form(model: &str) -> (String, Vec<u8>) {
    let boundary = "aigwBoundary42";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(b"RIFF\x00\x00\r\n\xff");
    body.extend_from_slice(
        format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n--{boundary}--\r\n").as_bytes(),
    );
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn audio_uploads_are_routed_on_the_form_model_and_forwarded_byte_for_byte() {
    let config = single_backend(
        ApiSchema::AzureOpenAI,
        Some("2025-03-01-preview"),
        None,
        None,
    );
    let mut p = Processor::new(config, Arc::new(Metrics::new()));
    let (content_type, form) = transcription_form("whisper");
    p.handle(headers(
        &[
            (":path", "/v1/audio/transcriptions"),
            (":method", "POST"),
            ("content-type", &content_type),
        ],
        false,
    ));
    let r = p.handle(body(&form, false));
    let common = common_of(&r);
    let set = set_headers(common);
    assert_eq!(
        set.get(":path").map(String::as_str),
        Some("/openai/deployments/whisper/audio/transcriptions?api-version=2025-03-01-preview")
    );
    assert_eq!(set.get(MODEL_HEADER).map(String::as_str), Some("whisper"));
    // No override: the body is not touched.
    assert!(common.body_mutation.is_none());
}

#[test]
fn a_model_override_rewrites_only_the_model_field_of_the_form() {
    let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
    let (content_type, form) = transcription_form("gpt-4o");
    p.handle(headers(
        &[
            (":path", "/v1/audio/translations"),
            (":method", "POST"),
            ("content-type", &content_type),
        ],
        false,
    ));
    let r = p.handle(body(&form, false));
    let sent = body_of(&r);
    let (_, expected) = transcription_form("gpt-4o-2024");
    assert_eq!(sent, expected);
    assert_eq!(
        set_headers(common_of(&r))
            .get("content-length")
            .map(String::as_str),
        Some(expected.len().to_string().as_str())
    );
}

#[test]
fn audio_uploads_must_be_forms_and_need_a_model() {
    let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
    let r = p.handle(headers(
        &[
            (":path", "/v1/audio/transcriptions"),
            (":method", "POST"),
            ("content-type", "application/json"),
        ],
        false,
    ));
    let (status, error) = immediate_of(&r).unwrap();
    assert_eq!(status, 400);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("multipart/form-data")
    );

    let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
    let (content_type, form) = transcription_form("gpt-4o");
    let without_model =
        String::from_utf8_lossy(&form).replace("name=\"model\"", "name=\"language\"");
    p.handle(headers(
        &[
            (":path", "/v1/audio/transcriptions"),
            (":method", "POST"),
            ("content-type", &content_type),
        ],
        false,
    ));
    let r = p.handle(body(without_model.as_bytes(), false));
    let (status, error) = immediate_of(&r).unwrap();
    assert_eq!(status, 400);
    assert_eq!(error["error"]["message"], "missing required field: model");
}

#[test]
fn tokenize_goes_to_the_root_and_input_tokens_to_the_responses_path() {
    let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
    p.handle(headers(
        &[(":path", "/tokenize"), (":method", "POST")],
        false,
    ));
    let r = p.handle(body(br#"{"model":"gpt-4o","prompt":"hello"}"#, false));
    let set = set_headers(common_of(&r));
    // Routed (a backend chosen), and the path stays `/tokenize` whatever the backend's prefix.
    assert!(set.contains_key(SELECTED_BACKEND_HEADER));
    assert_eq!(set.get(":path"), None);

    let config = single_backend(
        ApiSchema::AzureOpenAI,
        Some("2025-04-01-preview"),
        None,
        None,
    );
    let mut p = Processor::new(config, Arc::new(Metrics::new()));
    p.handle(headers(
        &[(":path", "/v1/responses/input_tokens"), (":method", "POST")],
        false,
    ));
    let r = p.handle(body(br#"{"model":"gpt-4.1","input":"hello"}"#, false));
    assert_eq!(
        set_headers(common_of(&r)).get(":path").map(String::as_str),
        Some("/openai/responses/input_tokens?api-version=2025-04-01-preview")
    );
}

/// An AWS credential read from a file of its own (`tag` names it), so that tests running
/// side by side never read a credentials file another one is writing.
fn count_tokens_credential(tag: &str) -> BackendCredential {
    let dir = std::env::temp_dir().join(format!(
        "aigw-processor-count-tokens-{}-{tag}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("credentials");
    std::fs::write(
        &file,
        "[default]\naws_access_key_id = AKIDPROCESSORTEST\naws_secret_access_key = processor-secret-key\n",
    )
    .unwrap();
    let signer =
        crate::auth::aws::Signer::from_config("eu-west-1", Some(&file), None, None, &dir).unwrap();
    BackendCredential {
        auth: Auth::Aws(Arc::new(signer)),
        override_from: None,
    }
}

#[test]
fn count_tokens_reaches_bedrock_as_count_tokens_with_converse_input() {
    let config = single_backend(
        ApiSchema::AWSBedrock,
        None,
        None,
        Some(count_tokens_credential("converse")),
    );
    let metrics = Arc::new(Metrics::new());
    let mut p = Processor::new(config, metrics.clone());
    p.handle(headers(
        &[
            (":path", "/anthropic/v1/messages/count_tokens"),
            (":method", "POST"),
            (":authority", "127.0.0.1:10080"),
        ],
        false,
    ));
    let r = p.handle(body(
        br#"{"model":"us.anthropic.claude-3-5-haiku-20241022-v1:0","system":"Be brief.","messages":[{"role":"user","content":"hi"}]}"#,
        false,
    ));
    let set = set_headers(common_of(&r));
    // CountTokens takes the foundation model, not the cross-region inference profile.
    assert_eq!(
        set.get(":path").map(String::as_str),
        Some("/model/anthropic.claude-3-5-haiku-20241022-v1:0/count-tokens")
    );
    assert!(set["authorization"].contains("/eu-west-1/bedrock/aws4_request"));
    let sent = body_of(&r);
    assert_eq!(
        set.get("content-length").map(String::as_str),
        Some(sent.len().to_string().as_str())
    );
    let sent: Value = serde_json::from_slice(&sent).unwrap();
    assert_eq!(
        sent,
        json!({"input": {"converse": {
            "messages": [{"role": "user", "content": [{"text": "hi"}]}],
            "system": [{"text": "Be brief."}],
        }}})
    );
    let r = p.handle(response_headers(&[
        (":status", "200"),
        ("content-type", "application/json"),
        ("x-amzn-requestid", "req-5"),
    ]));
    assert!(r.mode_override.is_none(), "a count is never streamed");
    let r = p.handle(body(br#"{"inputTokens":12}"#, true));
    let answer: Value = serde_json::from_slice(&body_of(&r)).unwrap();
    assert_eq!(answer, json!({"input_tokens": 12}));
    // The count is input usage only: the total-token cost counts nothing.
    assert_eq!(metadata(&r).get("tokens"), Some(&number_value(0.0)));
    let text = metrics.encode();
    let usage_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("gen_ai_client_token_usage") && l.contains("count_tokens"))
        .collect();
    assert!(
        usage_lines
            .iter()
            .any(|l| l.contains("gen_ai_token_type=\"input\"")
                && l.contains("_sum")
                && l.ends_with(" 12.0")),
        "{text}"
    );
    assert!(
        !usage_lines
            .iter()
            .any(|l| l.contains("gen_ai_token_type=\"output\"")),
        "{text}"
    );
}

#[test]
fn count_tokens_errors_reach_the_client_in_the_anthropic_shape() {
    let count_headers = || {
        headers(
            &[
                (":path", "/anthropic/v1/messages/count_tokens"),
                (":method", "POST"),
                (":authority", "127.0.0.1:10080"),
            ],
            false,
        )
    };
    // Bedrock refusing the model.
    let config = single_backend(
        ApiSchema::AWSBedrock,
        None,
        None,
        Some(count_tokens_credential("refused")),
    );
    let mut p = Processor::new(config, Arc::new(Metrics::new()));
    p.handle(count_headers());
    p.handle(body(
        br#"{"model":"amazon.nova-pro-v1:0","messages":[{"role":"user","content":"hi"}]}"#,
        false,
    ));
    p.handle(response_headers(&[
        (":status", "400"),
        ("content-type", "application/json"),
        (
            "x-amzn-errortype",
            "ValidationException:http://internal.amazon.com/coral/",
        ),
    ]));
    let r = p.handle(body(
        br#"{"message":"The provided model doesn't support counting tokens."}"#,
        true,
    ));
    let error: Value = serde_json::from_slice(&body_of(&r)).unwrap();
    assert_eq!(
        error,
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "The provided model doesn't support counting tokens."}})
    );

    // A count never streams: asking for it is a client error, answered by the extproc.
    let config = single_backend(
        ApiSchema::AWSBedrock,
        None,
        None,
        Some(count_tokens_credential("stream")),
    );
    let mut p = Processor::new(config, Arc::new(Metrics::new()));
    p.handle(count_headers());
    let r = p.handle(body(
        br#"{"model":"anthropic.claude-3-5-haiku-20241022-v1:0","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        false,
    ));
    let (status, error) = immediate_of(&r).unwrap();
    assert_eq!(status, 400);
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");

    // A schema outside the Anthropic family cannot count Anthropic tokens.
    let config = single_backend(ApiSchema::GCPVertexAI, None, None, None);
    let mut p = Processor::new(config, Arc::new(Metrics::new()));
    p.handle(count_headers());
    let r = p.handle(body(
        br#"{"model":"gemini-2.5-pro","messages":[{"role":"user","content":"hi"}]}"#,
        false,
    ));
    let (status, error) = immediate_of(&r).unwrap();
    assert_eq!(status, 422);
    assert_eq!(error["type"], "error");
}

#[test]
fn a_credential_echoed_in_a_stream_is_scrubbed_from_that_chunk() {
    let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
    p.handle(chat_headers());
    p.handle(body(br#"{"model":"gpt-4o","stream":true}"#, false));
    p.handle(response_headers(&[
        (":status", "200"),
        ("content-type", "text/event-stream"),
    ]));
    let clean = p.handle(chunk(b"data: {\"choices\":[]}\n\n", false));
    assert!(
        common_of(&clean).body_mutation.is_none(),
        "chunks without a credential pass untouched"
    );
    let r = p.handle(chunk(
        b"data: {\"error\":{\"message\":\"key sk-secret revoked\"}}\n\n",
        true,
    ));
    let text = String::from_utf8(body_of(&r)).unwrap();
    assert!(!text.contains("sk-secret"), "{text}");
    assert!(text.contains("key <redacted> revoked"), "{text}");
}

#[test]
fn scrubbing_replaces_every_occurrence_of_every_value() {
    let secrets = [Secret::new("token-aaaa-1111"), Secret::new("short")];
    assert_eq!(scrub(b"nothing here", &secrets), None);
    assert_eq!(
        scrub(b"token-aaaa-1111 and token-aaaa-1111 but short", &secrets).unwrap(),
        b"<redacted> and <redacted> but short".to_vec()
    );
}

/// A config whose only rule matches models by regular expression, as `oa-.*`.
fn regex_config() -> Arc<RuntimeConfig> {
    let backend = single_backend(ApiSchema::OpenAI, None, None, None).routes[0].rules[0].backends
        [0]
    .0
    .clone();
    Arc::new(RuntimeConfig {
        max_request_body_bytes: 1 << 20,
        routes: vec![Route {
            name: "ns/r".into(),
            hostnames: vec![],
            rules: vec![Rule {
                cluster: None,
                authority: None,
                matches: vec![vec![(
                    "x-ai-eg-model".into(),
                    Matcher::Regex(regex::Regex::new("^(?:oa-.*)$").unwrap()),
                )]],
                backends: vec![(backend, 1, 0)],
            }],
            costs: vec![],
            models: vec![],
        }],
        global_costs: vec![],
        files: vec![],
        has_costs: false,
        known_models: ["oa-configured".to_string()].into(),
        index: Default::default(),
        localities: Default::default(),
    })
}

/// One whole buffered exchange; returns the last response.
fn exchange(p: &mut Processor, path: &str, request: &[u8], status: &str, answer: &[u8]) {
    p.handle(headers(&[(":path", path), (":method", "POST")], false));
    p.handle(body(request, false));
    p.handle(response_headers(&[
        (":status", status),
        ("content-type", "application/json"),
    ]));
    p.handle(body(answer, true));
}

#[test]
fn client_chosen_models_never_grow_the_metrics_without_bound() {
    let metrics = Arc::new(Metrics::new());
    let config = regex_config();
    let mut sizes = Vec::new();
    for round in 0..2 {
        for i in 0..1500 {
            // Distinct, long (the most a request may carry), echoed back by the provider.
            let model = format!("oa-{round}-{i}-{}", "x".repeat(240));
            let request = json!({"model": model, "messages": []}).to_string();
            let answer = json!({"model": model, "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).to_string();
            let mut p = Processor::new(config.clone(), metrics.clone());
            exchange(
                &mut p,
                "/v1/chat/completions",
                request.as_bytes(),
                "200",
                answer.as_bytes(),
            );
        }
        sizes.push(metrics.encode().lines().count());
    }
    // Short distinct names: the first ones are kept, the rest folded into `_other`.
    for i in 0..1500 {
        let model = format!("oa-{i}");
        let request = json!({"model": model}).to_string();
        let answer = json!({"model": model}).to_string();
        let mut p = Processor::new(config.clone(), metrics.clone());
        exchange(
            &mut p,
            "/v1/chat/completions",
            request.as_bytes(),
            "200",
            answer.as_bytes(),
        );
    }
    let text = metrics.encode();
    assert_eq!(
        sizes[0], sizes[1],
        "the second 1,500 long models added nothing"
    );
    assert!(text.len() < 4 << 20, "/metrics is {} bytes", text.len());
    assert!(
        text.contains("gen_ai_original_model=\"_other\""),
        "long names fold"
    );
    assert!(
        text.contains("gen_ai_original_model=\"oa-0\""),
        "early short names stay"
    );
    assert!(
        !text.contains("gen_ai_original_model=\"oa-1499\""),
        "later ones fold"
    );
    assert!(!text.contains(&"x".repeat(129)));
    // A configured name is always its own value.
    let mut p = Processor::new(config, metrics.clone());
    exchange(
        &mut p,
        "/v1/chat/completions",
        br#"{"model":"oa-configured"}"#,
        "200",
        br#"{"model":"oa-configured"}"#,
    );
    assert!(
        metrics
            .encode()
            .contains("gen_ai_original_model=\"oa-configured\"")
    );
}

#[test]
fn models_that_cannot_be_a_header_value_are_client_errors() {
    let long = format!(r#"{{"model":"oa-{}"}}"#, "m".repeat(70_000));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "/v1/chat/completions",
            br#"{"model":"oa-a\u0000b"}"#.to_vec(),
            "control character",
        ),
        (
            "/v1/chat/completions",
            br#"{"model":"oa-a\nb"}"#.to_vec(),
            "control character",
        ),
        ("/v1/chat/completions", long.into_bytes(), "at most 256"),
        (
            "/v1/chat/completions",
            br#"{"model":42}"#.to_vec(),
            "must be a string, not a number",
        ),
        (
            "/v1/chat/completions",
            br#"{"model":["oa-x"]}"#.to_vec(),
            "not an array",
        ),
        (
            "/anthropic/v1/messages",
            br#"{"model":true}"#.to_vec(),
            "not a boolean",
        ),
    ];
    for (path, request, expected) in cases {
        let mut p = Processor::new(regex_config(), Arc::new(Metrics::new()));
        p.handle(headers(&[(":path", path), (":method", "POST")], false));
        let r = p.handle(body(&request, false));
        let (status, error) = immediate_of(&r).unwrap_or_else(|| panic!("{expected}: no answer"));
        assert_eq!(status, 400, "{expected}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{message}");
        assert!(message.len() < 200, "the model is not echoed: {message}");
        if path.starts_with("/anthropic") {
            assert_eq!(error["type"], "error");
        } else {
            assert_eq!(error["error"]["code"], "invalid_model");
        }
    }
}

/// The 502 a processor answered, with its body, for the last message.
fn bad_gateway(r: &ProcessingResponse) -> Value {
    let (status, body) = immediate_of(r).expect("an immediate answer");
    assert_eq!(status, 502, "{body}");
    body
}

fn failures(metrics: &Metrics) -> usize {
    metrics
        .encode()
        .lines()
        .filter(|l| {
            l.starts_with("gen_ai_server_request_duration_seconds_count{")
                && l.contains("error_type=\"_OTHER\"")
        })
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn a_success_that_cannot_be_translated_is_a_502_in_the_client_shape() {
    // Chat completions to an Anthropic backend, the Messages API to an OpenAI one.
    for (schema, path, request, anthropic) in [
        (
            ApiSchema::Anthropic,
            "/v1/chat/completions",
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            false,
        ),
        (
            ApiSchema::OpenAI,
            "/anthropic/v1/messages",
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
            true,
        ),
        (
            ApiSchema::Anthropic,
            "/anthropic/v1/messages",
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
            true,
        ),
    ] {
        let metrics = Arc::new(Metrics::new());
        let mut p = Processor::new(single_backend(schema, None, None, None), metrics.clone());
        p.handle(headers(&[(":path", path), (":method", "POST")], false));
        p.handle(body(request.as_bytes(), false));
        let r = p.handle(response_headers(&[
            (":status", "200"),
            ("content-type", "application/json"),
        ]));
        assert!(immediate_of(&r).is_none());
        let error = bad_gateway(&p.handle(body(b"not json", true)));
        if anthropic {
            assert_eq!(error["type"], "error", "{error}");
            assert_eq!(error["error"]["type"], "internal_server_error", "{error}");
        } else {
            assert_eq!(error["error"]["code"], "bad_upstream_response", "{error}");
            assert_eq!(error["error"]["type"], "server_error", "{error}");
        }
        assert_eq!(failures(&metrics), 1, "{schema:?} {path}");
    }
}

#[test]
fn a_success_that_is_not_json_is_a_502_when_passed_through() {
    for answer in [&b"<html>oops</html>"[..], b"{\"truncated\": ", b"[1, 2]"] {
        let metrics = Arc::new(Metrics::new());
        let mut p = Processor::new(config(true), metrics.clone());
        p.handle(chat_headers());
        p.handle(body(br#"{"model":"gpt-4o"}"#, false));
        p.handle(response_headers(&[(":status", "200")]));
        let error = bad_gateway(&p.handle(body(answer, true)));
        assert_eq!(error["error"]["code"], "bad_upstream_response");
        assert_eq!(failures(&metrics), 1);
    }
}

#[test]
fn empty_successes_and_unstreamed_answers_to_streams_are_502s() {
    // Headers that end the response: no body to translate.
    let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
    p.handle(chat_headers());
    p.handle(body(br#"{"model":"gpt-4o"}"#, false));
    let mut end = response_headers(&[(":status", "200"), ("content-type", "application/json")]);
    if let Some(processing_request::Request::ResponseHeaders(h)) = end.request.as_mut() {
        h.end_of_stream = true;
    }
    let error = bad_gateway(&p.handle(end));
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("empty body")
    );

    // A body that is there but empty.
    let mut p = Processor::new(
        single_backend(ApiSchema::Anthropic, None, None, None),
        Arc::new(Metrics::new()),
    );
    p.handle(chat_headers());
    p.handle(body(br#"{"model":"m","messages":[]}"#, false));
    p.handle(response_headers(&[
        (":status", "200"),
        ("content-type", "application/json"),
    ]));
    bad_gateway(&p.handle(body(b"", true)));

    // A stream was asked for and JSON came back: not switched to streamed mode, a 502.
    for (schema, path) in [
        (ApiSchema::Anthropic, "/v1/chat/completions"),
        (ApiSchema::OpenAI, "/v1/chat/completions"),
        (ApiSchema::Anthropic, "/anthropic/v1/messages"),
    ] {
        let metrics = Arc::new(Metrics::new());
        let mut p = Processor::new(single_backend(schema, None, None, None), metrics.clone());
        p.handle(headers(&[(":path", path), (":method", "POST")], false));
        p.handle(body(br#"{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#, false));
        let r = p.handle(response_headers(&[
            (":status", "200"),
            ("content-type", "application/json"),
        ]));
        assert!(r.mode_override.is_none());
        let error = bad_gateway(&r);
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("event stream"), "{error}");
        assert_eq!(
            error["type"] == "error",
            path.starts_with("/anthropic"),
            "{error}"
        );
        assert_eq!(failures(&metrics), 1);
        // Whatever Envoy still sends passes through untouched.
        let r = p.handle(body(b"not json", true));
        assert!(immediate_of(&r).is_none());
        assert!(common_of(&r).body_mutation.is_none());
    }
}

#[test]
fn non_json_provider_errors_take_the_client_shape() {
    let mut p = Processor::new(
        single_backend(ApiSchema::Anthropic, None, None, None),
        Arc::new(Metrics::new()),
    );
    p.handle(headers(
        &[(":path", "/anthropic/v1/messages"), (":method", "POST")],
        false,
    ));
    p.handle(body(
        br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
        false,
    ));
    p.handle(response_headers(&[
        (":status", "504"),
        ("content-type", "text/html"),
    ]));
    let r = p.handle(body(b"<html>gateway timeout</html>", true));
    let error: Value = serde_json::from_slice(&body_of(&r)).unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["type"], "timeout_error", "{error}");
}

#[test]
fn envoy_is_told_how_to_shape_its_own_errors_and_to_leave_ours_alone() {
    let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
    let r = p.handle(chat_headers());
    assert_eq!(
        metadata(&r).get(ERROR_SHAPE_KEY),
        Some(&string_value("openai"))
    );
    let r = p.handle(body(br#"{"model":"nope"}"#, false));
    assert_eq!(immediate_of(&r).map(|(s, _)| s), Some(404));
    assert_eq!(metadata(&r).get(ERROR_SHAPE_KEY), Some(&string_value("")));

    let mut p = Processor::new(config(false), Arc::new(Metrics::new()));
    let r = p.handle(headers(
        &[(":path", "/anthropic/v1/messages"), (":method", "POST")],
        false,
    ));
    assert_eq!(
        metadata(&r).get(ERROR_SHAPE_KEY),
        Some(&string_value("anthropic"))
    );

    // A provider fault answered by the extproc keeps its costs metadata and is marked too.
    let mut p = Processor::new(config(true), Arc::new(Metrics::new()));
    p.handle(chat_headers());
    p.handle(body(br#"{"model":"gpt-4o"}"#, false));
    p.handle(response_headers(&[(":status", "200")]));
    let r = p.handle(body(b"not json", true));
    let meta = metadata(&r);
    assert_eq!(meta.get(ERROR_SHAPE_KEY), Some(&string_value("")));
    assert!(meta.contains_key("response_model"), "{meta:?}");
}

/// A rule whose backends Envoy chooses: an OpenAI primary and a Bedrock fallback, in cluster
/// `httproute/ns/r/rule/0` (localities `…/backend/0` and `…/backend/1`).
fn fallback_config() -> Arc<RuntimeConfig> {
    let primary = backend("openai", None);
    let secondary = Arc::new(Backend {
        spec: fc::Backend {
            name: "ns/bedrock/route/ns/r/rule/0/ref/1".into(),
            service_backend: "ns/bedrock".into(),
            schema: fc::BackendSchema {
                name: ApiSchema::AWSBedrock,
                version: None,
                prefix: None,
            },
            model_name_override: Some("anthropic.claude-3-haiku-20240307-v1:0".into()),
            upstream_host: Some("bedrock-runtime.us-east-1.amazonaws.com".into()),
            auth: None,
            header_mutation: None,
            body_mutation: None,
        },
        auth: Some(BackendCredential {
            auth: Auth::Aws(aws_signer()),
            override_from: None,
        }),
    });
    let cluster = "httproute/ns/r/rule/0";
    let localities = [
        (format!("{cluster}/backend/0"), (0, primary.clone())),
        (format!("{cluster}/backend/1"), (0, secondary.clone())),
    ]
    .into_iter()
    .collect();
    one_rule(
        Rule {
            cluster: Some(cluster.into()),
            authority: Some("r.ns.aigw.internal".into()),
            matches: vec![],
            backends: vec![(primary, 1, 0), (secondary, 1, 1)],
        },
        localities,
    )
}

/// `request` with the `upstream.locality` attribute Envoy sends for `region`.
fn at_locality(mut request: ProcessingRequest, region: &str) -> ProcessingRequest {
    let attributes = Struct {
        fields: [(
            "upstream.locality".to_string(),
            string_value(&format!("region: \"{region}\" ")),
        )]
        .into_iter()
        .collect(),
    };
    request
        .attributes
        .insert("envoy.filters.http.ext_proc".into(), attributes);
    request
}

const FALLBACK_CHAT: &[u8] =
    br#"{"model":"claude","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

#[test]
fn a_rule_with_a_cluster_is_only_selected_on_the_router() {
    let mut p = Processor::new(fallback_config(), Arc::new(Metrics::new()));
    p.handle(headers(
        &[
            (":path", "/v1/chat/completions"),
            (":method", "POST"),
            (":authority", "gw.example:8080"),
            ("authorization", "Bearer client-key"),
        ],
        false,
    ));
    let r = p.handle(body(FALLBACK_CHAT, false));
    let common = common_of(&r);
    assert!(common.clear_route_cache);
    assert!(
        common.body_mutation.is_none(),
        "the body is translated per attempt"
    );
    let set = set_headers(common);
    assert_eq!(
        set,
        BTreeMap::from([
            (
                "x-aigw-rule".to_string(),
                "httproute/ns/r/rule/0".to_string()
            ),
            ("x-ai-eg-model".to_string(), "claude".to_string()),
            // Envoy finds the rule by its virtual host; the client's authority goes along.
            (":authority".to_string(), "r.ns.aigw.internal".to_string()),
            (
                "x-aigw-authority".to_string(),
                "gw.example:8080".to_string()
            ),
        ])
    );
    // Every backend sends its own credential: the client's is dropped here already.
    assert_eq!(
        common.header_mutation.as_ref().unwrap().remove_headers,
        ["authorization"]
    );
    assert_eq!(metadata(&r).get("route_name"), Some(&string_value("ns/r")));
}

#[test]
fn each_attempt_is_translated_and_signed_for_the_backend_it_reached() {
    let config = fallback_config();
    let forwarded = || {
        headers(
            &[
                (":path", "/v1/chat/completions"),
                (":method", "POST"),
                (":authority", "gw.example:8080"),
                ("authorization", "Bearer client-key"),
                ("x-ai-eg-model", "claude"),
                ("x-aigw-rule", "httproute/ns/r/rule/0"),
            ],
            false,
        )
    };
    // The first attempt reaches the OpenAI primary: passed through with its key.
    let mut first = Processor::with_role(config.clone(), Arc::new(Metrics::new()), Role::Upstream);
    first.handle(at_locality(forwarded(), "httproute/ns/r/rule/0/backend/0"));
    let r = first.handle(body(FALLBACK_CHAT, false));
    let common = common_of(&r);
    let set = set_headers(common);
    assert_eq!(
        set.get("authorization").map(String::as_str),
        Some("Bearer sk-secret")
    );
    assert!(!common.clear_route_cache);
    let removed = &common.header_mutation.as_ref().unwrap().remove_headers;
    assert!(removed.contains(&"x-aigw-rule".to_string()), "{removed:?}");
    // Streams ask for usage, for the costs.
    let sent: Value = serde_json::from_slice(&body_of(&r)).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);

    // The retry reaches the Bedrock fallback: a Converse call, signed for its host.
    let mut second = Processor::with_role(config, Arc::new(Metrics::new()), Role::Upstream);
    second.handle(at_locality(forwarded(), "httproute/ns/r/rule/0/backend/1"));
    let r = second.handle(body(FALLBACK_CHAT, false));
    let set = set_headers(common_of(&r));
    assert_eq!(
        set.get(":path").map(String::as_str),
        Some("/model/anthropic.claude-3-haiku-20240307-v1:0/converse-stream")
    );
    assert_eq!(
        set.get(":authority").map(String::as_str),
        Some("bedrock-runtime.us-east-1.amazonaws.com")
    );
    assert!(
        set.get("authorization")
            .is_some_and(|a| a.contains("/us-east-1/bedrock/aws4_request")),
        "{set:?}"
    );
    let sent: Value = serde_json::from_slice(&body_of(&r)).unwrap();
    assert_eq!(sent["messages"][0]["content"][0]["text"], "hi");
}

/// The request headers after Envoy applied `response`'s header mutation to `before`.
fn mutated(before: &[(&str, &str)], response: &ProcessingResponse) -> Vec<(String, String)> {
    let mutation = common_of(response).header_mutation.clone().unwrap();
    let mut after: Vec<(String, String)> = before
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !mutation.remove_headers.contains(k))
        .collect();
    for set in mutation.set_headers {
        let header = set.header.unwrap();
        after.retain(|(k, _)| *k != header.key);
        after.push((header.key, String::from_utf8(header.raw_value).unwrap()));
    }
    after
}

#[test]
fn an_attempt_starts_from_the_request_the_router_passed_not_from_the_attempt_before_it() {
    let config = fallback_config();
    let forwarded = [
        (":path", "/v1/chat/completions"),
        (":method", "POST"),
        ("content-type", "application/json"),
        ("x-ai-eg-model", "claude"),
        ("x-aigw-rule", "httproute/ns/r/rule/0"),
        (":authority", "r.ns.aigw.internal"),
        ("x-aigw-authority", "gw.example:8080"),
        ("x-forwarded-host", "client.example, r.ns.aigw.internal"),
    ];
    // The first attempt reaches Bedrock: Converse path, its host, SigV4 headers.
    let mut first = Processor::with_role(config.clone(), Arc::new(Metrics::new()), Role::Upstream);
    first.handle(at_locality(
        headers(&forwarded, false),
        "httproute/ns/r/rule/0/backend/1",
    ));
    let r = first.handle(body(FALLBACK_CHAT, false));
    let left = mutated(&forwarded, &r);
    assert!(
        left.iter().any(|(k, _)| k.starts_with("x-amz-")),
        "{left:?}"
    );
    // Envoy gives the retry the same header map, and the metadata the first attempt wrote.
    let left: Vec<(&str, &str)> = left.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut retry = at_locality(headers(&left, false), "httproute/ns/r/rule/0/backend/0");
    retry.metadata_context = Some(Metadata {
        filter_metadata: r
            .dynamic_metadata
            .clone()
            .unwrap()
            .fields
            .into_iter()
            .map(|(ns, v)| match v.kind {
                Some(Kind::StructValue(s)) => (ns, s),
                _ => unreachable!(),
            })
            .collect(),
        ..Default::default()
    });
    let mut second = Processor::with_role(config, Arc::new(Metrics::new()), Role::Upstream);
    second.handle(retry);
    let r = second.handle(body(FALLBACK_CHAT, false));
    assert!(
        immediate_of(&r).is_none(),
        "the retry is served, not refused"
    );
    let sent = mutated(&left, &r);
    let sent: BTreeMap<String, String> = sent.into_iter().collect();
    assert_eq!(
        sent.get(":path").map(String::as_str),
        Some("/v1/chat/completions")
    );
    assert_eq!(
        sent.get("authorization").map(String::as_str),
        Some("Bearer sk-secret")
    );
    assert!(!sent.keys().any(|k| k.starts_with("x-amz-")), "{sent:?}");
    assert!(!sent.contains_key("x-aigw-rule"), "{sent:?}");
    assert!(!sent.contains_key("x-aigw-authority"), "{sent:?}");
    // The primary has no hostname of its own: the client's Host, and the client's host where
    // Envoy's host rewrite recorded the rule's virtual host.
    assert_eq!(
        sent.get(":authority").map(String::as_str),
        Some("gw.example:8080")
    );
    assert_eq!(
        sent.get("x-forwarded-host").map(String::as_str),
        Some("client.example, gw.example:8080")
    );
    assert_eq!(
        sent.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let model: Value = serde_json::from_slice(&body_of(&r)).unwrap();
    assert_eq!(model["model"], "claude");
}

#[test]
fn an_attempt_at_an_unknown_locality_is_a_clear_500() {
    let mut p = Processor::with_role(fallback_config(), Arc::new(Metrics::new()), Role::Upstream);
    p.handle(at_locality(
        chat_headers(),
        "httproute/ns/other/rule/0/backend/0",
    ));
    let r = p.handle(body(FALLBACK_CHAT, false));
    let (status, error) = immediate_of(&r).unwrap();
    assert_eq!(status, 500);
    assert_eq!(error["error"]["code"], "unknown_backend");
}

#[test]
fn the_response_is_translated_back_for_the_backend_that_answered() {
    let metrics = Arc::new(Metrics::new());
    let mut p = Processor::new(fallback_config(), metrics.clone());
    p.handle(chat_headers());
    p.handle(body(FALLBACK_CHAT, false));
    // Envoy retried on the fallback; the response names its locality.
    let r = p.handle(at_locality(
        response_headers(&[
            (":status", "200"),
            ("content-type", "application/vnd.amazon.eventstream"),
        ]),
        "httproute/ns/r/rule/0/backend/1",
    ));
    assert_eq!(
        r.mode_override.as_ref().map(|m| m.response_body_mode),
        Some(BodySendMode::Streamed as i32)
    );
    assert_eq!(
        metadata(&r).get("backend_name"),
        Some(&string_value("ns/bedrock/route/ns/r/rule/0/ref/1"))
    );
    let frame = |event: &str, payload: &str| {
        crate::translate::eventstream::encode(
            &[
                (":event-type", event),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    };
    let mut stream = frame(
        "contentBlockDelta",
        r#"{"contentBlockIndex":0,"delta":{"text":"Hello"}}"#,
    );
    stream.extend(frame("messageStop", r#"{"stopReason":"end_turn"}"#));
    stream.extend(frame(
        "metadata",
        r#"{"usage":{"inputTokens":3,"outputTokens":2,"totalTokens":5},"metrics":{"latencyMs":10}}"#,
    ));
    let last = p.handle(chunk(&stream, true));
    let text = String::from_utf8(body_of(&last)).unwrap();
    assert!(text.contains(r#""content":"Hello""#), "{text}");
    assert_eq!(metadata(&last).get("tokens"), Some(&number_value(5.0)));
    let exposition = metrics.encode();
    assert!(
        exposition.contains(r#"gen_ai_provider_name="aws.bedrock""#),
        "{exposition}"
    );
}

#[test]
fn a_reply_envoy_made_itself_is_counted_against_the_preferred_backend() {
    let mut p = Processor::new(fallback_config(), Arc::new(Metrics::new()));
    p.handle(chat_headers());
    p.handle(body(FALLBACK_CHAT, false));
    // No upstream answered (no locality): Envoy's own 503 passes as it is.
    let r = p.handle(response_headers(&[
        (":status", "503"),
        ("content-type", "text/plain"),
    ]));
    assert!(r.mode_override.is_none());
    assert_eq!(
        metadata(&r).get("backend_name"),
        Some(&string_value("ns/openai/route/ns/r/rule/0/ref/0"))
    );
}

#[test]
fn locality_attributes_are_read_from_their_text_form() {
    assert_eq!(
        locality_region("region: \"httproute/ns/r/rule/0/backend/1\" "),
        Some("httproute/ns/r/rule/0/backend/1")
    );
    assert_eq!(locality_region("region: \"a/b\" zone: \"z\""), Some("a/b"));
    assert_eq!(locality_region(""), None);
    assert_eq!(locality_region("region: \"unterminated"), None);
}
